"""pythanos.storeapi against the real thing.

* our server base, serving in-memory series (real XOR chunks) on free ports, queried by a real
  ``thanos query`` (v0.42 from the peers cache): instant/range queries, series, labels, label
  values, dedup across two replicas, ``/api/v1/stores``;
* our client against a real ``thanos sidecar`` on a real Prometheus: Info, Series with and
  without ``response_batch_size``, LabelNames, LabelValues; chunks decoded with our chunkenc and
  compared sample by sample with Prometheus' own answer;
* bad input: malformed regex -> INVALID_ARGUMENT naming the matcher (ours and Thanos'),
  unreachable endpoint -> error naming the address, bounded in time.
"""
from __future__ import annotations

import asyncio
import json
import math
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import grpc
import numpy as np
import pytest

from peers import REGISTRY, explain_thanos_crash, free_ports, http_get
from pythanos.storeapi import (
    INFO,
    LABEL_NAMES,
    LABEL_VALUES,
    MAX_TIME,
    SERIES,
    STORE_INFO,
    XOR,
    Chunk,
    InvalidArgument,
    Series,
    SeriesWarning,
    StoreAPIError,
    StoreClient,
    StoreServer,
)
from pythanos.storeapi.memstore import MemoryStore
from pythanos.storeapi.pb import hints_pb2, info_pb2, labels_pb2, rpc_pb2, types_pb2
from pythanos.tsdb.chunkenc import decode_xor, encode_xor
from pythanos.tsdb.labels import Matcher


# --- an asyncio loop in a thread: our servers and clients run there, the test drives them -------

class Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[StoreServer] = []

    def run(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def serve(self, store, **kw) -> int:
        srv = StoreServer(store, **kw)
        port = self.run(srv.start("127.0.0.1:0"))
        self.servers.append(srv)
        return port

    def close(self) -> None:
        for s in self.servers:
            self.run(s.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def aio():
    lp = Loop()
    yield lp
    lp.close()


def call(aio: Loop, address: str, fn, **client_kw):
    """Run ``await fn(client)`` with a fresh client on ``address``."""
    async def go():
        async with StoreClient(address, **client_kw) as c:
            return await fn(c)
    return aio.run(go())


# --- data --------------------------------------------------------------------------------------

BASE = 1_700_000_000_000  # ms
STEP = 15_000
N = 240  # one hour
T = BASE + np.arange(N, dtype=np.int64) * STEP
RNG = np.random.default_rng(7)
DATA = {
    ("a", "0"): np.cumsum(RNG.integers(0, 50, N)).astype(np.float64),
    ("a", "1"): RNG.normal(100, 10, N),
    ("b", "0"): np.round(RNG.random(N), 3),
}


def fixed_series():
    return [({"__name__": "pt_test_metric", "job": job, "instance": inst}, T, v) for (job, inst), v in DATA.items()]


def expect_at(v: np.ndarray, t_ms: int, lookback_ms: int = 300_000) -> float | None:
    """Prometheus' instant-vector rule: the latest sample in (t - lookback, t]."""
    i = int(np.searchsorted(T, t_ms, side="right")) - 1
    if i < 0 or T[i] <= t_ms - lookback_ms:
        return None
    return float(v[i])


# --- thanos query: start_thanos_query, explain_thanos_crash and the thanos_query_factory fixture live in
# peers.py (shared by every suite that needs a real querier) -----------------------------------------


def api(p, path: str, **params):
    qs = urllib.parse.urlencode(params, doseq=True)
    code, body = http_get(f"{p.url}{path}?{qs}", timeout=30)
    doc = json.loads(body)
    assert code == 200 and doc["status"] == "success", (path, params, code, body[:500])
    return doc


# --- 1. protocol facts -------------------------------------------------------------------------

def test_method_paths_and_field_numbers():
    """Names and numbers as in Thanos v0.42 (reference §1, §2)."""
    st = rpc_pb2.DESCRIPTOR.services_by_name["Store"]
    assert st.full_name == "thanos.Store"
    assert {m.name: (m.input_type.full_name, m.output_type.full_name, m.server_streaming)
            for m in st.methods} == {
        "Info": ("thanos.InfoRequest", "thanos.InfoResponse", False),
        "Series": ("thanos.SeriesRequest", "thanos.SeriesResponse", True),
        "LabelNames": ("thanos.LabelNamesRequest", "thanos.LabelNamesResponse", False),
        "LabelValues": ("thanos.LabelValuesRequest", "thanos.LabelValuesResponse", False),
    }
    assert info_pb2.DESCRIPTOR.services_by_name["Info"].full_name == "thanos.info.Info"
    assert (SERIES, LABEL_NAMES, LABEL_VALUES, STORE_INFO, INFO) == (
        "/thanos.Store/Series", "/thanos.Store/LabelNames", "/thanos.Store/LabelValues", "/thanos.Store/Info",
        "/thanos.info.Info/Info")

    def fields(msg):
        return {f.name: f.number for f in msg.DESCRIPTOR.fields}

    assert fields(rpc_pb2.SeriesRequest) == {
        "min_time": 1, "max_time": 2, "matchers": 3, "max_resolution_window": 4, "aggregates": 5,
        "partial_response_disabled": 6, "partial_response_strategy": 7, "skip_chunks": 8, "hints": 9, "step": 10,
        "range": 11, "query_hints": 12, "shard_info": 13, "without_replica_labels": 14, "limit": 15,
        "response_batch_size": 16}
    assert fields(rpc_pb2.SeriesResponse) == {"series": 1, "warning": 2, "hints": 3, "batch": 4}
    assert fields(types_pb2.AggrChunk) == {"min_time": 1, "max_time": 2, "raw": 3, "count": 4, "sum": 5,
                                           "min": 6, "max": 7, "counter": 8}
    assert fields(types_pb2.Chunk) == {"type": 1, "data": 2, "hash": 3}
    assert fields(rpc_pb2.LabelValuesRequest) == {
        "label": 1, "partial_response_disabled": 2, "partial_response_strategy": 3, "start": 4, "end": 5,
        "hints": 6, "matchers": 7, "without_replica_labels": 8, "limit": 9}
    assert fields(rpc_pb2.LabelNamesRequest) == {
        "partial_response_disabled": 1, "partial_response_strategy": 2, "start": 3, "end": 4, "hints": 5,
        "matchers": 6, "without_replica_labels": 7, "limit": 8}
    assert fields(info_pb2.InfoResponse) == {
        "label_sets": 1, "ComponentType": 2, "store": 3, "rules": 4, "metric_metadata": 5, "targets": 6,
        "exemplars": 7, "query": 8, "status": 9}
    assert fields(info_pb2.StoreInfo) == {"min_time": 1, "max_time": 2, "supports_sharding": 3,
                                          "supports_without_replica_labels": 5, "tsdb_infos": 6,
                                          "supports_projections": 7}
    assert fields(rpc_pb2.InfoResponse) == {"labels": 1, "min_time": 2, "max_time": 3, "storeType": 4,
                                            "label_sets": 5}
    assert dict(types_pb2.Chunk.Encoding.items()) == {"XOR": 0, "HISTOGRAM": 1, "FLOAT_HISTOGRAM": 2}
    assert dict(types_pb2.LabelMatcher.Type.items()) == {"EQ": 0, "NEQ": 1, "RE": 2, "NRE": 3}
    assert dict(rpc_pb2.Aggr.items()) == {"RAW": 0, "COUNT": 1, "SUM": 2, "MIN": 3, "MAX": 4, "COUNTER": 5}
    assert dict(rpc_pb2.StoreType.items()) == {"UNKNOWN": 0, "QUERY": 1, "RULE": 2, "SIDECAR": 3, "STORE": 4,
                                               "RECEIVE": 5, "DEBUG": 6}
    assert hints_pb2.SeriesRequestHints.DESCRIPTOR.full_name == "hintspb.SeriesRequestHints"
    # a gogoproto "nullable=false" repeated message is a plain repeated LEN field: hand-encoded bytes
    s = types_pb2.Series(labels=[labels_pb2.Label(name="a", value="b")])
    assert s.SerializeToString() == b"\x0a\x06" + b"\x0a\x01a" + b"\x12\x01b"


def test_generated_code_is_up_to_date(tmp_path):
    """The checked-in *_pb2.py are what generate.py writes (grpcio-tools is a pinned test extra)."""
    from peers import missing

    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        missing("grpcio-tools (test extra)")
    import shutil
    import subprocess
    import sys
    from importlib.metadata import version

    import pythanos.storeapi as pkg
    from pythanos.storeapi.generate import GRPCIO_TOOLS_VERSION

    if version("grpcio-tools") != GRPCIO_TOOLS_VERSION:
        missing(f"grpcio-tools {GRPCIO_TOOLS_VERSION} (found {version('grpcio-tools')})")

    src = Path(pkg.__file__).parent
    root = tmp_path / "components"
    shutil.copytree(src, root / "pythanos" / "storeapi", ignore=shutil.ignore_patterns("*_pb2.py*", "__pycache__"))
    subprocess.run([sys.executable, str(root / "pythanos" / "storeapi" / "generate.py")], check=True,
                   capture_output=True)
    for f in sorted((src / "pb").glob("*_pb2.py*")):
        assert (root / "pythanos" / "storeapi" / "pb" / f.name).read_bytes() == f.read_bytes(), f.name


# --- 2. server base + client, in process -------------------------------------------------------

class ScriptedStore(MemoryStore):
    """Yields unsorted series, a series label clashing with an external label, and a warning."""

    async def series(self, req):
        yield SeriesWarning("partial: one block unavailable")
        rows = [({"__name__": "m", "z": "1", "cluster": "internal"}, 1), ({"__name__": "m", "a": "1"}, 2),
                ({"__name__": "m", "a": "0", "replica": "x"}, 3)]
        for lbls, v in rows:
            if all(m.matches(lbls.get(m.name, "")) for m in req.matchers):
                data = encode_xor(np.array([1000 * v]), np.array([float(v)]))
                yield Series(lbls, [(1000 * v, 1000 * v, XOR, data)])


def test_server_semantics_with_our_client(aio):
    store = ScriptedStore([], external_labels={"cluster": "eu1", "replica": "r1"})
    addr = f"127.0.0.1:{aio.serve(store)}"

    async def go(c: StoreClient):
        out = {}
        out["plain"] = [x async for x in c.series([Matcher.eq("__name__", "m")], 0, 10_000)]
        out["norep"] = (await c.series_list([Matcher.eq("__name__", "m")], 0, 10_000,
                                            without_replica_labels=["replica"]))[0]
        out["contra"] = await c.series_list([Matcher.eq("cluster", "us1"), Matcher.eq("__name__", "m")], 0, 10_000)
        out["extmatch"] = await c.series_list([Matcher.re("cluster", "eu.*"), Matcher.eq("__name__", "m")], 0, 1)
        frames = [f async for f in c.series_frames(c.series_request([Matcher.eq("__name__", "m")], 0, 10_000,
                                                                    response_batch_size=2))]
        out["frames"] = [f.WhichOneof("result") for f in frames]
        out["batch_sizes"] = [len(f.batch.series) for f in frames if f.WhichOneof("result") == "batch"]
        out["limit"] = (await c.series_list([Matcher.eq("__name__", "m")], 0, 10_000, limit=1))[0]
        out["skip"] = (await c.series_list([Matcher.eq("__name__", "m")], 0, 10_000, skip_chunks=True))[0]
        return out

    out = call(aio, addr, go)
    plain = out["plain"]
    assert plain[0] == "partial: one block unavailable" and isinstance(plain[0], SeriesWarning)
    got = [s.labels for s in plain[1:]]
    # external labels win over the series' own cluster="internal"; labels sorted; series sorted
    assert got == [
        (("__name__", "m"), ("a", "0"), ("cluster", "eu1"), ("replica", "r1")),
        (("__name__", "m"), ("a", "1"), ("cluster", "eu1"), ("replica", "r1")),
        (("__name__", "m"), ("cluster", "eu1"), ("replica", "r1"), ("z", "1")),
    ]
    assert [decode_xor(s.chunks[0].data)[1].tolist() for s in plain[1:]] == [[3.0], [2.0], [1.0]]
    # without_replica_labels removes the label from series and external labels, sorting after it
    assert [s.labels for s in out["norep"]] == [
        (("__name__", "m"), ("a", "0"), ("cluster", "eu1")),
        (("__name__", "m"), ("a", "1"), ("cluster", "eu1")),
        (("__name__", "m"), ("cluster", "eu1"), ("z", "1")),
    ]
    assert out["contra"] == ([], [])  # contradicts an external label: empty, no error
    assert len(out["extmatch"][0]) == 3
    # the store never sees matchers on external labels
    assert all(m.name != "cluster" for r in store.requests for m in r.matchers)
    assert out["frames"] == ["warning", "batch", "batch"] and out["batch_sizes"] == [2, 1]
    assert len(out["limit"]) == 1
    assert all(not s.chunks for s in out["skip"]) and len(out["skip"]) == 3


def test_presorted_stores_stream_and_big_messages(aio):
    class Pre(MemoryStore):
        presorted = True

        def __init__(self, rows):
            super().__init__([])
            self.rows = rows

        async def series(self, req):
            for r in self.rows:
                yield r

    big = bytes(6 << 20)  # one 6 MiB frame: above grpcio's 4 MiB default, both ways
    good = Pre([Series({"__name__": "a"}, [Chunk(0, 1, XOR, big)]), Series({"__name__": "b"}, [])])
    bad = Pre([Series({"__name__": "b"}, []), Series({"__name__": "a"}, [])])
    g, b = f"127.0.0.1:{aio.serve(good)}", f"127.0.0.1:{aio.serve(bad)}"
    got, _ = call(aio, g, lambda c: c.series_list([Matcher.re("__name__", ".+")], 0, 1))
    assert [x.labels for x in got] == [(("__name__", "a"),), (("__name__", "b"),)]
    assert len(got[0].chunks[0].data) == len(big)
    with pytest.raises(StoreAPIError) as ei:
        call(aio, b, lambda c: c.series_list([Matcher.re("__name__", ".+")], 0, 1))
    assert ei.value.code == grpc.StatusCode.INTERNAL and "out of order" in ei.value.details


def test_labels_info_and_store_info_fallback(aio):
    store = MemoryStore(fixed_series(), external_labels={"cluster": "eu1", "replica": "0"})
    addr = f"127.0.0.1:{aio.serve(store)}"
    old_addr = f"127.0.0.1:{aio.serve(store, info_api=False)}"  # like a Thanos < v0.21 store

    async def go(c: StoreClient):
        return (await c.label_names(), await c.label_names(without_replica_labels=["replica"]),
                await c.label_values("job"), await c.label_values("cluster"),
                await c.label_values("cluster", [Matcher.eq("job", "nope")]),
                await c.label_values("replica", without_replica_labels=["replica"]),
                await c.label_values("job", [Matcher.eq("cluster", "other")]),
                await c.info(), await c.info_raw())

    names, names_norep, jobs, cluster, cluster_none, rep, contra, info, raw = call(aio, addr, go)
    assert names.values == ["__name__", "cluster", "instance", "job", "replica"]
    assert names_norep.values == ["__name__", "cluster", "instance", "job"]
    assert jobs.values == ["a", "b"] and cluster.values == ["eu1"] and cluster_none.values == []
    assert rep.values == [] and contra.values == []
    assert info.component_type == "store"
    assert (info.min_time, info.max_time) == (int(T[0]), int(T[-1]))
    assert info.label_sets == [(("cluster", "eu1"), ("replica", "0"))]
    assert raw.store.supports_without_replica_labels and not raw.store.supports_sharding

    old = call(aio, old_addr, lambda c: c.info())
    assert (old.min_time, old.max_time, old.label_sets, old.component_type) == (
        info.min_time, info.max_time, info.label_sets, "store")
    # unknown times are MinInt64 / MaxInt64
    empty = call(aio, f"127.0.0.1:{aio.serve(MemoryStore([]))}", lambda c: c.info_raw())
    assert (empty.store.min_time, empty.store.max_time) == (-(1 << 63), (1 << 63) - 1)
    assert list(empty.label_sets) == []


def test_bad_matcher_and_store_errors(aio):
    class Broken(MemoryStore):
        async def label_names(self, req):
            raise InvalidArgument("no matchers specified (excluding external labels)")

        async def label_values(self, req):
            raise RuntimeError("disk on fire")

    addr = f"127.0.0.1:{aio.serve(Broken(fixed_series(), external_labels={'cluster': 'eu1'}))}"
    bad = types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.RE, name="job", value="a(b")

    async def go(c: StoreClient):
        errs = []
        for coro in (c.series_list([Matcher.eq("__name__", "x"), bad], 0, 1), c.label_names([bad]),
                     c.label_values("job", [bad]), c.label_names(), c.label_values("job")):
            try:
                await coro
                errs.append(None)
            except StoreAPIError as e:
                errs.append(e)
        return errs

    series_err, ln_err, lv_err, store_err, internal = call(aio, addr, go)
    for e in (series_err, ln_err, lv_err):
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT and 'job=~"a(b"' in str(e) and addr in str(e)
    assert series_err.method == "/thanos.Store/Series"
    assert store_err.code == grpc.StatusCode.INVALID_ARGUMENT and "no matchers specified" in store_err.details
    assert internal.code == grpc.StatusCode.INTERNAL and "disk on fire" in internal.details


def test_unreachable_endpoint_is_a_bounded_error_naming_it(aio):
    (port,) = free_ports(1)  # nothing listens there
    addr = f"127.0.0.1:{port}"
    for fn in (lambda c: c.info(), lambda c: c.series_list([Matcher.eq("__name__", "up")]),
               lambda c: c.label_names()):
        t0 = time.monotonic()
        with pytest.raises(StoreAPIError) as ei:
            call(aio, addr, fn, timeout=3, info_timeout=3)
        assert time.monotonic() - t0 < 4
        assert addr in str(ei.value) and ei.value.code in (grpc.StatusCode.UNAVAILABLE,
                                                            grpc.StatusCode.DEADLINE_EXCEEDED)
    # a black-holed address: bounded by the timeout
    t0 = time.monotonic()
    with pytest.raises(StoreAPIError) as ei:
        call(aio, "10.255.255.1:10901", lambda c: c.info(), info_timeout=1.5)
    assert time.monotonic() - t0 < 3 and "10.255.255.1:10901" in str(ei.value)


# --- 3. a real Thanos querier on our stores ----------------------------------------------------

def test_thanos_querier_reads_our_stores(aio, thanos_query_factory):
    r0 = MemoryStore(fixed_series(), external_labels={"cluster": "eu1", "replica": "0"})
    r1 = MemoryStore(fixed_series(), external_labels={"cluster": "eu1", "replica": "1"})
    ends = [f"127.0.0.1:{aio.serve(r0)}", f"127.0.0.1:{aio.serve(r1)}"]
    q = thanos_query_factory(ends)

    # /api/v1/stores: healthy, our times and label sets
    stores = {s["name"]: s for g in api(q, "/api/v1/stores")["data"].values() for s in g}
    for e, rep in zip(ends, ("0", "1")):
        s = stores[e]
        assert not s.get("lastError")
        assert (s["minTime"], s["maxTime"]) == (int(T[0]), int(T[-1]))
        assert s["labelSets"] == [{"cluster": "eu1", "replica": rep}]

    # instant query, deduplicated (replica label gone) and not
    t_eval = int(T[100]) + 7_000
    for dedup, n in (("true", 3), ("false", 6)):
        res = api(q, "/api/v1/query", query="pt_test_metric", time=t_eval / 1000, dedup=dedup)["data"]["result"]
        assert len(res) == n, res
        for r in res:
            m = r["metric"]
            assert m["cluster"] == "eu1" and ("replica" in m) == (dedup == "false")
            assert float(r["value"][1]) == expect_at(DATA[(m["job"], m["instance"])], t_eval)
            assert r["value"][0] == t_eval / 1000

    # range query over the whole hour, deduplicated: every step equals our data
    start, end, step = int(T[0]) // 1000, int(T[-1]) // 1000 + 120, 60
    res = api(q, "/api/v1/query_range", query="pt_test_metric", start=start, end=end, step=step)["data"]["result"]
    assert len(res) == 3
    for r in res:
        v = DATA[(r["metric"]["job"], r["metric"]["instance"])]
        want = [(ts, expect_at(v, ts * 1000)) for ts in range(start, end + 1, step)]
        want = [(ts, x) for ts, x in want if x is not None]
        assert [(ts, float(x)) for ts, x in r["values"]] == want
    # a function over the chunks (decoding all samples): increase over the whole range
    res = api(q, "/api/v1/query", query='sum_over_time(pt_test_metric{job="a",instance="0"}[2h])',
              time=int(T[-1]) / 1000)["data"]["result"]
    assert math.isclose(float(res[0]["value"][1]), float(DATA[("a", "0")].sum()), rel_tol=1e-12)

    # series / labels / label values
    ser = api(q, "/api/v1/series", **{"match[]": "pt_test_metric", "start": start, "end": end})["data"]
    assert sorted(json.dumps(s, sort_keys=True) for s in ser) == sorted(
        json.dumps({"__name__": "pt_test_metric", "cluster": "eu1", "job": j, "instance": i}, sort_keys=True)
        for j, i in DATA)
    names = api(q, "/api/v1/labels", start=start, end=end)["data"]
    assert {"__name__", "cluster", "instance", "job"} <= set(names) <= {"__name__", "cluster", "instance", "job",
                                                                       "replica"}
    assert api(q, "/api/v1/label/job/values", start=start, end=end)["data"] == ["a", "b"]
    assert api(q, "/api/v1/label/cluster/values", start=start, end=end)["data"] == ["eu1"]
    # a matcher on an external label that contradicts ours: nothing
    assert api(q, "/api/v1/query", query='pt_test_metric{cluster="us1"}', time=t_eval / 1000)["data"]["result"] == []
    # a malformed regex: PromQL parsing rejects it before any store sees it (400 bad_data)
    code, body = http_get(f"{q.url}/api/v1/query?" + urllib.parse.urlencode({"query": 'pt_test_metric{job=~"a("}'}))
    assert code == 400 and json.loads(body)["errorType"] == "bad_data"
    # the querier asked with batching and without_replica_labels, and our stores answered it
    seen = [r for r in r0.requests if hasattr(r, "raw") and isinstance(r.raw, rpc_pb2.SeriesRequest)]
    assert any(r.raw.response_batch_size > 1 for r in seen)
    assert any(list(r.without_replica_labels) == ["replica"] for r in seen)


def test_thanos_querier_partial_response_warnings(aio, thanos_query_factory):
    class Warns(MemoryStore):
        async def series(self, req):
            yield SeriesWarning("block 01ABC unavailable")
            async for s in super().series(req):
                yield s

    ok = MemoryStore(fixed_series(), external_labels={"cluster": "eu1"})
    warn = Warns(fixed_series(), external_labels={"cluster": "us1"})
    q = thanos_query_factory([f"127.0.0.1:{aio.serve(ok)}", f"127.0.0.1:{aio.serve(warn)}"])
    t_eval = int(T[10]) / 1000
    doc = api(q, "/api/v1/query", query="pt_test_metric", time=t_eval, partial_response="true")
    assert len(doc["data"]["result"]) == 6
    assert any("block 01ABC unavailable" in w for w in doc.get("warnings", [])), doc.get("warnings")
    # partial response disabled: the querier's proxy turns a store warning into an error
    code, body = http_get(f"{q.url}/api/v1/query?" + urllib.parse.urlencode(
        {"query": "pt_test_metric", "time": t_eval, "partial_response": "false"}), timeout=30)
    assert code >= 400 and b"block 01ABC unavailable" in body, body[:300]


# --- 4. our client against a real Thanos sidecar on a real Prometheus -------------------------

def start_thanos_sidecar(prometheus_factory, thanos_bin: str, tmp_path: Path):
    """A real Prometheus (``cluster=eu1, replica=0``, scraping the sidecar every second) and a real
    Thanos sidecar on it, ready: (prometheus, sidecar process, the sidecar's gRPC address)."""
    sc_http, sc_grpc = free_ports(2)
    cfg = f"""\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
  external_labels: {{cluster: eu1, replica: "0"}}
scrape_configs:
  - job_name: sidecar
    static_configs: [{{targets: ["127.0.0.1:{sc_http}"]}}]
"""
    prom = prometheus_factory(config_yaml=cfg, extra_args=["--storage.tsdb.min-block-duration=2h"])
    sc = REGISTRY.start("thanos-sidecar", [
        thanos_bin, "sidecar", f"--prometheus.url={prom.url}", f"--tsdb.path={tmp_path / 'unused'}",
        f"--grpc-address=127.0.0.1:{sc_grpc}", f"--http-address=127.0.0.1:{sc_http}"], tmp_path)
    try:
        sc.url = f"http://127.0.0.1:{sc_http}"
        sc.wait_http_ready("/-/ready", 60)
    except BaseException:
        sc.stop()
        raise
    return prom, sc, f"127.0.0.1:{sc_grpc}"


def test_client_against_real_thanos_sidecar(aio, prometheus_factory, thanos_bin, tmp_path):
    prom, sc, addr = start_thanos_sidecar(prometheus_factory, thanos_bin, tmp_path)
    try:
        # a few seconds of 1 s scrapes, some of them with the sidecar up
        sc.wait_ready(lambda: len(api(prom, "/api/v1/query", query="up[1h]")["data"]["result"][0]["values"]) >= 8,
                      30, what="8 scrapes")
        t_ms = (int(time.time()) - 2) * 1000

        async def go(c: StoreClient):
            info = await c.info()
            up = [Matcher.eq("__name__", "up")]
            plain = [f async for f in c.series_frames(c.series_request(up, t_ms - 3_600_000, t_ms))]
            batched = [f async for f in c.series_frames(c.series_request(up, t_ms - 3_600_000, t_ms,
                                                                         response_batch_size=64))]
            series, warns = await c.series_list(up, t_ms - 3_600_000, t_ms, response_batch_size=64)
            many, _ = await c.series_list([Matcher.eq("job", "sidecar")], t_ms - 3_600_000, t_ms,
                                          response_batch_size=10)
            names = await c.label_names(start=t_ms - 3_600_000, end=t_ms)
            jobs = await c.label_values("job", start=t_ms - 3_600_000, end=t_ms)
            clusters = await c.label_values("cluster", start=t_ms - 3_600_000, end=t_ms)
            try:
                await c.series_list([Matcher.eq("__name__", "up"),
                                     types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.RE, name="job", value="(")],
                                    t_ms - 1000, t_ms)
                bad = None
            except StoreAPIError as e:
                bad = e
            return info, plain, batched, series, warns, many, names, jobs, clusters, bad

        try:
            info, plain, batched, series, warns, many, names, jobs, clusters, bad = call(aio, addr, go)
        except StoreAPIError:
            try:  # a sidecar that panicked on our call is on its way out: let it finish dying
                sc.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass  # still alive: not a crash, the error stands as it is
            explain_thanos_crash(sc)
            raise
        assert info.component_type == "sidecar" and info.max_time == MAX_TIME
        assert info.label_sets == [(("cluster", "eu1"), ("replica", "0"))]
        assert info.min_time <= t_ms - 5000
        assert {f.WhichOneof("result") for f in plain} == {"series"}
        assert {f.WhichOneof("result") for f in batched} == {"batch"}  # v0.42 sidecars batch when asked
        assert len(many) > 10 and [s.labels for s in many] == sorted(s.labels for s in many)
        assert names.values == sorted(set(names.values)) and {"__name__", "cluster", "instance", "job",
                                                              "replica"} <= set(names.values)
        assert jobs.values == ["sidecar"] and clusters.values == ["eu1"]
        assert bad is not None and bad.code == grpc.StatusCode.INVALID_ARGUMENT and addr in str(bad)
        assert warns == [] and len(series) == 1
        s = series[0]
        assert dict(s.labels) == {"__name__": "up", "cluster": "eu1", "replica": "0", "instance":
                                  sc.url.removeprefix("http://"), "job": "sidecar"}
        got_t, got_v = [], []
        for ch in s.chunks:
            assert ch.encoding == XOR  # Thanos numbering on the wire
            t, v = decode_xor(ch.data)
            assert (int(t[0]), int(t[-1])) == (ch.min_time, ch.max_time)
            got_t += t.tolist()
            got_v += v.tolist()
        got = [(t, v) for t, v in zip(got_t, got_v) if t_ms - 3_600_000 < t <= t_ms]
        want = api(prom, "/api/v1/query", query="up[1h]", time=t_ms / 1000)["data"]["result"][0]["values"]
        want = [(round(float(ts) * 1000), float(v)) for ts, v in want]
        assert len(want) >= 5 and got == want
    finally:
        sc.stop()
