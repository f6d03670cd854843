"""``pythanos store`` against a real ``thanos store`` (v0.42) on the same buckets.

Buckets: (a) blocks of a real Prometheus uploaded by our sidecar, (b) ``bench-blocks``
(a year of ``continuous-365d-tiny``), compacted and downsampled by (c) a real ``thanos compact``,
so (b)+(c) hold raw, 5m and 1h blocks. Every Series, LabelNames and LabelValues answer of ours must
equal Thanos' message for message (labels, chunk bytes and their hashes, aggregates), for a set of
matcher combinations, time ranges, resolutions and aggregates; a real Thanos querier over our
store must answer PromQL exactly as over Thanos' store. Then sharding, limits and faults.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import grpc
import pytest

from peers import REGISTRY, free_ports, http_get
from pythanos.storeapi.pb import rpc_pb2, types_pb2

EQ, NEQ, RE, NRE = (types_pb2.LabelMatcher.EQ, types_pb2.LabelMatcher.NEQ, types_pb2.LabelMatcher.RE,
                    types_pb2.LabelMatcher.NRE)
COUNT, SUM, MIN, MAX, COUNTER = (rpc_pb2.COUNT, rpc_pb2.SUM, rpc_pb2.MIN, rpc_pb2.MAX, rpc_pb2.COUNTER)
MAX_MSG = 256 << 20


def fs_yaml(path: Path) -> str:
    return f"{{type: FILESYSTEM, config: {{directory: {path}}}}}"


# --- processes ---------------------------------------------------------------------------------------

def start_store(binary: str, name: str, objstore: str, work: Path, extra=(), *, thanos: bool = False,
                wait_ready: bool = True):
    """Our store (``binary`` = pythanos) or Thanos' on free ports; ready once ``/-/ready`` says so."""
    http, grpc_port = free_ports(2)
    work.mkdir(parents=True, exist_ok=True)
    args = [binary, "store", f"--data-dir={work / 'data'}", f"--objstore.config={objstore}",
            f"--http-address=127.0.0.1:{http}", f"--grpc-address=127.0.0.1:{grpc_port}", *extra]
    p = REGISTRY.start(name, args, work)
    p.url, p.port = f"http://127.0.0.1:{http}", http
    p.extra["grpc"] = f"127.0.0.1:{grpc_port}"
    p.extra["data"] = work / "data"
    if wait_ready:
        p.wait_http_ready("/-/ready", 120)
    return p


def channel(addr: str) -> grpc.Channel:
    return grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", MAX_MSG)])


def series(addr: str, matchers, mint: int, maxt: int, **kw):
    """All ``series`` of a Series call (batches unpacked), or the gRPC error."""
    req = rpc_pb2.SeriesRequest(min_time=mint, max_time=maxt, **kw)
    for n, t, v in matchers:
        req.matchers.add(name=n, type=t, value=v)
    with channel(addr) as ch:
        call = ch.unary_stream("/thanos.Store/Series", request_serializer=rpc_pb2.SeriesRequest.SerializeToString,
                               response_deserializer=rpc_pb2.SeriesResponse.FromString)
        out = []
        for r in call(req, timeout=120):
            if r.HasField("series"):
                out.append(r.series)
            elif r.HasField("batch"):
                out.extend(r.batch.series)
            elif r.warning:
                out.append(("warning", r.warning))
        return out


def series_or_error(addr: str, *a, **kw):
    try:
        return series(addr, *a, **kw)
    except grpc.RpcError as e:
        return (e.code(), e.details())


def labels_call(addr: str, method: str, matchers, start: int, end: int, **kw) -> list[str]:
    req_cls = rpc_pb2.LabelNamesRequest if method == "LabelNames" else rpc_pb2.LabelValuesRequest
    resp_cls = rpc_pb2.LabelNamesResponse if method == "LabelNames" else rpc_pb2.LabelValuesResponse
    req = req_cls(start=start, end=end, **kw)
    for n, t, v in matchers:
        req.matchers.add(name=n, type=t, value=v)
    with channel(addr) as ch:
        resp = ch.unary_unary(f"/thanos.Store/{method}", request_serializer=req_cls.SerializeToString,
                              response_deserializer=resp_cls.FromString)(req, timeout=60)
    return list(resp.names if method == "LabelNames" else resp.values)


def info(addr: str):
    from pythanos.storeapi.pb import info_pb2

    with channel(addr) as ch:
        return ch.unary_unary("/thanos.info.Info/Info", request_serializer=info_pb2.InfoRequest.SerializeToString,
                              response_deserializer=info_pb2.InfoResponse.FromString)(info_pb2.InfoRequest(),
                                                                                     timeout=30)


def metric(p, name: str) -> float:
    """Sum of a metric's samples on a process' /metrics."""
    _, body = http_get(p.url + "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def metas(bucket: Path) -> dict[str, dict]:
    out = {}
    for m in bucket.glob("*/meta.json"):
        out[m.parent.name] = json.loads(m.read_text())
    return out


# --- buckets -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bench_bucket(downsampled_bucket) -> Path:
    """A year of continuous-365d-tiny compacted and downsampled by a real ``thanos compact``
    (raw, 5m and 1h blocks; shared with the querier's tests: never modified here)."""
    return downsampled_bucket


@pytest.fixture(scope="module")
def prom_bucket(tmp_path_factory, prometheus_factory_module, pythanos_bin) -> Path:
    """Blocks of a real Prometheus (5 s blocks, scraping itself) uploaded by our sidecar."""
    work = tmp_path_factory.mktemp("store-prom")
    bucket, tsdb = work / "bucket", work / "prom"
    prom = prometheus_factory_module(
        tsdb, "global:\n  scrape_interval: 200ms\n  external_labels: {cluster: p1, replica: a}\n"
              "scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['{self}']\n",
        ["--storage.tsdb.min-block-duration=5s", "--storage.tsdb.max-block-duration=5s"])
    http, grpc_port = free_ports(2)
    sc = REGISTRY.start("sidecar", [pythanos_bin, "sidecar", f"--prometheus.url={prom.url}",
                                    f"--tsdb.path={tsdb}", f"--objstore.config={fs_yaml(bucket)}",
                                    f"--http-address=127.0.0.1:{http}", f"--grpc-address=127.0.0.1:{grpc_port}"],
                        work)
    try:
        sc.url = f"http://127.0.0.1:{http}"
        sc.wait_ready(lambda: len(list(bucket.glob("*/meta.json"))) >= 4, 180, "4 blocks uploaded")
    finally:
        sc.stop()
        prom.stop()
    return bucket


@pytest.fixture(scope="module")
def prometheus_factory_module(tmp_path_factory, prometheus_bin):
    started = []

    def start(tsdb: Path, config: str, extra):
        port = free_ports(1)[0]
        tsdb.mkdir(parents=True, exist_ok=True)
        cfg = tsdb.parent / "prometheus.yml"
        cfg.write_text(config.replace("{self}", f"127.0.0.1:{port}"))
        p = REGISTRY.start("prometheus", [prometheus_bin, f"--config.file={cfg}", f"--storage.tsdb.path={tsdb}",
                                          f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle", *extra],
                           tsdb.parent)
        p.url, p.port = f"http://127.0.0.1:{port}", port
        started.append(p)
        p.wait_http_ready("/-/ready", 60)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture(scope="module")
def pair(request, tmp_path_factory, pythanos_bin, thanos_bin):
    """``pair(bucket)`` -> (ours, thanos): both stores over the same bucket, cached per bucket."""
    cache: dict = {}

    def get(bucket: Path):
        if bucket not in cache:
            w = tmp_path_factory.mktemp("pair")
            ours = start_store(pythanos_bin, "pythanos-store", fs_yaml(bucket), w / "ours")
            theirs = start_store(thanos_bin, "thanos-store", fs_yaml(bucket), w / "thanos", thanos=True)
            cache[bucket] = (ours, theirs)
        return cache[bucket]

    yield get
    for ours, theirs in cache.values():
        ours.stop()
        theirs.stop()


def span(bucket: Path) -> tuple[int, int]:
    ms = metas(bucket).values()
    return min(m["minTime"] for m in ms), max(m["maxTime"] for m in ms)


# --- equality with Thanos' store ---------------------------------------------------------------------

BENCH_MATCHERS = [
    [("__name__", EQ, "continuous_app_metric0")],
    [("__name__", RE, "continuous_app_metric.*")],
    [("__name__", RE, "continuous_app_metric[12]"), ("cluster", EQ, "eu1")],
    [("__name__", NEQ, "continuous_app_metric0"), ("__name__", RE, ".+")],
    [("cluster", EQ, "eu2")],
    [("cluster", RE, "eu.*"), ("__name__", RE, "continuous_app_metric3|continuous_app_metric4")],
    [("__blockgen_target__", RE, ".+"), ("__name__", EQ, "continuous_app_metric1")],
    [("__name__", EQ, "continuous_app_metric2"), ("nonexistent", EQ, "")],
    [("__name__", RE, "continuous_app_metric.*"), ("nonexistent", NRE, "x")],
    [("__name__", NRE, "continuous_app_metric[0-3]"), ("cluster", NEQ, "")],
    [("nonexistent", EQ, "x")],
]


def bench_ranges(bucket: Path) -> list[tuple[int, int]]:
    lo, hi = span(bucket)
    day = 86_400_000
    return [(lo, hi), (hi - 2 * 3_600_000, hi), (hi - 40 * day, hi - 10 * day),
            (lo + 17 * 60_000 + 123, lo + 3 * day + 7), (hi + day, hi + 2 * day)]


def test_series_equal_to_thanos_on_compacted_and_downsampled_blocks(bench_bucket, pair):
    ours, theirs = pair(bench_bucket)
    n = compared = 0
    for matchers in BENCH_MATCHERS:
        for mint, maxt in bench_ranges(bench_bucket):
            for res, aggrs in ((0, []), (0, [COUNT, SUM]), (300_000, [COUNT, SUM]), (3_600_000, [MAX]),
                               (3_600_000, [COUNTER]), (300_000, [MIN, MAX, COUNTER])):
                for skip in (False, True):
                    kw = dict(max_resolution_window=res, aggregates=aggrs, skip_chunks=skip)
                    a = series_or_error(ours.extra["grpc"], matchers, mint, maxt, **kw)
                    b = series_or_error(theirs.extra["grpc"], matchers, mint, maxt, **kw)
                    assert a == b, (matchers, mint, maxt, kw)
                    n += 1
                    compared += len(a) if isinstance(a, list) else 0
    assert n == len(BENCH_MATCHERS) * 5 * 6 * 2
    assert compared > 500  # the answers are not all empty


def test_shard_info_splits_series_as_thanos_store(prom_bucket, pair):
    """Vertical sharding: for each shard of a sharded Series call, our store answers exactly the series
    (and chunks) Thanos' store answers (one hash for both: replicas held by stores of either kind land in
    the same shard); the shards partition the unsharded answer."""
    ours, theirs = pair(prom_bucket)
    lo, hi = span(prom_bucket)
    matchers = [("job", EQ, "prometheus"), ("__name__", RE, "prometheus_.*")]
    whole = series(ours.extra["grpc"], matchers, lo, hi, without_replica_labels=["replica"])
    assert len(whole) > 50
    for total, by, labels in ((3, True, ["__name__"]), (2, True, ["instance", "nonexistent"]),
                              (4, False, ["__name__"])):
        parts = []
        for k in range(total):
            kw = dict(without_replica_labels=["replica"],
                      shard_info=rpc_pb2.ShardInfo(shard_index=k, total_shards=total, by=by, labels=labels))
            a = series(ours.extra["grpc"], matchers, lo, hi, **kw)
            assert a == series(theirs.extra["grpc"], matchers, lo, hi, **kw), (total, by, labels, k)
            parts.append(a)
        if labels != ["instance", "nonexistent"]:   # one instance: every series in one shard
            assert all(parts), (total, by, labels)
        assert sorted((x for p in parts for x in p), key=lambda x: x.SerializeToString()) == \
            sorted(whole, key=lambda x: x.SerializeToString())


PROM_MATCHERS = [
    [("__name__", EQ, "up")],
    [("job", EQ, "prometheus"), ("__name__", RE, "prometheus_tsdb_head_.*")],
    [("__name__", RE, "go_gc_.*"), ("instance", NEQ, "")],
    [("job", EQ, "prometheus"), ("__name__", NEQ, "")],  # __name__!="" over ~1000 names: applied to series
    [("__name__", RE, "prometheus_http_requests_total"), ("handler", RE, "/api/.*|/-/ready")],
    [("replica", EQ, "a"), ("__name__", EQ, "scrape_duration_seconds")],
    [("cluster", EQ, "p1"), ("code", NRE, "2..")],
]


def test_series_equal_to_thanos_on_prometheus_blocks(prom_bucket, pair):
    ours, theirs = pair(prom_bucket)
    lo, hi = span(prom_bucket)
    compared = 0
    for matchers in PROM_MATCHERS:
        for mint, maxt in ((lo, hi), (lo + 2500, hi - 2500), (hi - 1000, hi)):
            for extra in ({}, {"skip_chunks": True}, {"without_replica_labels": ["replica"]},
                          {"limit": 3}, {"response_batch_size": 7}):
                a = series_or_error(ours.extra["grpc"], matchers, mint, maxt, **extra)
                b = series_or_error(theirs.extra["grpc"], matchers, mint, maxt, **extra)
                assert a == b, (matchers, mint, maxt, extra)
                compared += len(a) if isinstance(a, list) else 0
    assert compared > 1000


def test_series_equal_to_thanos_on_overlapping_and_duplicated_blocks(tmp_path, pythanos_bin, thanos_bin):
    """Blocks that overlap in time (an uncompacted HA pair, a block uploaded twice, a partial
    overlap, series present in only some of them) merge as Thanos' store merges them: a series
    in several blocks is one series, identical chunks once, chunks in time order; with and
    without the replica label removed, batched or not, with a limit."""
    import numpy as np

    from pythanos.tsdb.block import BlockWriter

    bucket = tmp_path / "bucket"
    h = 3_600_000
    t0 = 1_700_000_000_000 // h * h

    def block(replica: str, mint: int, maxt: int, series: range, seed: int) -> str:
        rng = np.random.default_rng(seed)
        w = BlockWriter(bucket, thanos={"labels": {"cluster": "eu1", "replica": replica}, "source": "sidecar"},
                        min_time=mint, max_time=maxt)
        t = np.arange(mint, maxt, 15_000, dtype=np.int64)
        for i in series:
            w.add_series({"__name__": "up", "instance": f"i{i:02d}"}, t, rng.integers(0, 2, len(t)).astype(float))
        return w.write().ulid

    a = block("a", t0, t0 + 2 * h, range(0, 30), 1)
    block("b", t0, t0 + 2 * h, range(10, 40), 2)            # the HA twin, other series partly
    block("a", t0 + h, t0 + 3 * h, range(0, 40, 2), 3)      # an hour of overlap with both
    twin = a[:-4] + ("ZZZZ" if a[-4:] != "ZZZZ" else "0000")  # the first block uploaded twice
    shutil.copytree(bucket / a, bucket / twin)
    meta = json.loads((bucket / twin / "meta.json").read_text())
    meta["ulid"] = twin
    (bucket / twin / "meta.json").write_text(json.dumps(meta))
    ours = start_store(pythanos_bin, "pythanos-store", fs_yaml(bucket), tmp_path / "ours")
    theirs = start_store(thanos_bin, "thanos-store", fs_yaml(bucket), tmp_path / "thanos", thanos=True)
    try:
        compared = 0
        for matchers in ([("__name__", EQ, "up")], [("instance", RE, "i0.|i3.")], [("replica", EQ, "b")]):
            for mint, maxt in ((t0, t0 + 3 * h), (t0 + h + 60_000, t0 + 2 * h - 60_000), (t0 + 2 * h, t0 + 3 * h)):
                for extra in ({}, {"without_replica_labels": ["replica"]}, {"skip_chunks": True},
                              {"response_batch_size": 7, "without_replica_labels": ["replica"]}, {"limit": 5}):
                    a_ = series_or_error(ours.extra["grpc"], matchers, mint, maxt, **extra)
                    b_ = series_or_error(theirs.extra["grpc"], matchers, mint, maxt, **extra)
                    assert a_ == b_, (matchers, mint, maxt, extra, _first_difference(a_, b_))
                    compared += len(a_) if isinstance(a_, list) else 0
        assert compared > 500
    finally:
        ours.stop()
        theirs.stop()


def _first_difference(a, b) -> object:
    """Where two Series answers part: lengths, and the first series that differs (its labels and
    chunk time ranges and hashes on each side)."""
    if not (isinstance(a, list) and isinstance(b, list)):
        return a, b
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            def brief(s):
                if isinstance(s, tuple):
                    return s
                return ([(lb.name, lb.value) for lb in s.labels],
                        [(c.min_time, c.max_time, c.raw.hash) for c in s.chunks])
            return len(a), len(b), i, brief(x), brief(y)
    return len(a), len(b)


def hints(msg, block_matchers):
    from google.protobuf import any_pb2

    for n, t, v in block_matchers:
        msg.block_matchers.add(name=n, type=t, value=v)
    a = any_pb2.Any()
    a.Pack(msg, type_url_prefix="type.googleapis.com/")
    return a


def test_request_hints_choose_blocks_as_thanos(bench_bucket, pair):
    from pythanos.storeapi.pb import hints_pb2

    ours, theirs = pair(bench_bucket)
    lo, hi = span(bench_bucket)
    us = sorted(metas(bench_bucket))
    m = [("__name__", RE, "continuous_app_metric[01]")]
    checked = 0
    for bms in ([("__block_id", EQ, us[3])], [("__block_id", RE, f"{us[0]}|{us[-1]}|{us[7]}")],
                [("cluster", EQ, "eu1"), ("__block_id", NEQ, us[5])], [("cluster", EQ, "nope")]):
        for res in (0, 3_600_000):
            kw = dict(hints=hints(hints_pb2.SeriesRequestHints(), bms), max_resolution_window=res,
                      aggregates=[COUNT, SUM])
            a = series_or_error(ours.extra["grpc"], m, lo, hi, **kw)
            assert a == series_or_error(theirs.extra["grpc"], m, lo, hi, **kw), (bms, res)
            checked += len(a)
        for name, msg, kw in (("LabelNames", hints_pb2.LabelNamesRequestHints(), {}),
                              ("LabelValues", hints_pb2.LabelValuesRequestHints(), {"label": "__name__"})):
            h = hints(msg, bms)
            assert labels_call(ours.extra["grpc"], name, [], lo, hi, hints=h, **kw) == \
                labels_call(theirs.extra["grpc"], name, [], lo, hi, hints=h, **kw)
    assert checked > 0


def test_label_names_and_values_equal_to_thanos(bench_bucket, prom_bucket, pair):
    checked = 0
    for bucket, matcher_sets, label in ((bench_bucket, BENCH_MATCHERS, "__name__"),
                                        (prom_bucket, PROM_MATCHERS, "job")):
        ours, theirs = pair(bucket)
        lo, hi = span(bucket)
        for matchers in [[]] + matcher_sets:
            for start, end in ((lo, hi), (hi - 3000, hi), (hi + 10_000, hi + 20_000)):
                for name in ("LabelNames", "LabelValues"):
                    kw = {"label": label} if name == "LabelValues" else {}
                    a = labels_call(ours.extra["grpc"], name, matchers, start, end, **kw)
                    b = labels_call(theirs.extra["grpc"], name, matchers, start, end, **kw)
                    assert a == b, (name, matchers, start, end)
                    checked += bool(a)
    assert checked > 20


def test_info_equal_to_thanos(bench_bucket, pair):
    ours, theirs = pair(bench_bucket)
    a, b = info(ours.extra["grpc"]), info(theirs.extra["grpc"])
    assert a.ComponentType == b.ComponentType == "store"
    assert list(a.label_sets) == list(b.label_sets)
    assert (a.store.min_time, a.store.max_time) == (b.store.min_time, b.store.max_time)
    assert sorted((t.min_time, t.max_time) for t in a.store.tsdb_infos) == \
        sorted((t.min_time, t.max_time) for t in b.store.tsdb_infos)


def test_index_headers_byte_identical_to_thanos(bench_bucket, pair):
    ours, theirs = pair(bench_bucket)
    series(ours.extra["grpc"], [("__name__", RE, ".+")], *span(bench_bucket))  # every block opened
    series(theirs.extra["grpc"], [("__name__", RE, ".+")], *span(bench_bucket))
    blocks = sorted(metas(bench_bucket))
    for u in blocks:
        a = ours.extra["data"] / u / "index-header"
        b = theirs.extra["data"] / u / "index-header"
        assert a.read_bytes() == b.read_bytes(), u
    assert len(blocks) > 5


def query(q, path: str, **params) -> dict:
    url = q.url + path + "?" + urllib.parse.urlencode(params)
    code, body = http_get(url, timeout=60)
    assert code == 200, body[:500]
    return json.loads(body)


def test_real_thanos_querier_over_our_store_equals_over_thanos_store(bench_bucket, pair, thanos_query_factory):
    ours, theirs = pair(bench_bucket)
    q_ours = thanos_query_factory([ours.extra["grpc"]])
    q_theirs = thanos_query_factory([theirs.extra["grpc"]])
    lo, hi = span(bench_bucket)
    end = hi // 1000 - 3600
    day = 86400
    cases = [("/api/v1/query", {"query": "continuous_app_metric0", "time": end}),
             ("/api/v1/query", {"query": "count_over_time(continuous_app_metric0[1d])", "time": end - 8 * day}),
             ("/api/v1/query", {"query": 'count({__name__=~"continuous_app_metric.*"}) + sum(rate(continuous_app_metric4[5m]))',
                                "time": end - 100 * day}),
             ("/api/v1/query_range", {"query": "sum(rate(continuous_app_metric1[1h]))", "start": end - 30 * day,
                                      "end": end, "step": 3600, "max_source_resolution": "auto"}),
             ("/api/v1/query_range", {"query": "max_over_time(continuous_app_metric2[6h])", "start": lo // 1000,
                                      "end": end, "step": 86400, "max_source_resolution": "1h"}),
             ("/api/v1/query_range", {"query": "avg_over_time(continuous_app_metric3[30m])", "start": end - 60 * day,
                                      "end": end - 50 * day, "step": 1800, "max_source_resolution": "5m"}),
             ("/api/v1/series", {"match[]": "continuous_app_metric4", "start": lo // 1000, "end": end}),
             ("/api/v1/labels", {"start": lo // 1000, "end": end}),
             ("/api/v1/label/__name__/values", {})]
    for path, params in cases:
        a, b = query(q_ours, path, **params), query(q_theirs, path, **params)
        assert a == b, (path, params)
        assert a["data"], (path, params)


# --- sharding ----------------------------------------------------------------------------------------

def test_hashmod_shards_serve_disjoint_blocks_whose_union_is_the_whole(bench_bucket, pythanos_bin, thanos_bin,
                                                                       tmp_path, pair):
    whole, theirs = pair(bench_bucket)
    shards, thanos_shards = [], []
    for i in (0, 1):
        relabel = (f"[{{action: hashmod, source_labels: [__block_id], target_label: shard, modulus: 2}}, "
                   f"{{action: keep, source_labels: [shard], regex: '{i}'}}]")
        shards.append(start_store(pythanos_bin, f"shard{i}", fs_yaml(bench_bucket), tmp_path / f"s{i}",
                                  [f"--selector.relabel-config={relabel}"]))
        thanos_shards.append(start_store(thanos_bin, f"thanos-shard{i}", fs_yaml(bench_bucket), tmp_path / f"t{i}",
                                         [f"--selector.relabel-config={relabel}"], thanos=True))
    lo, hi = span(bench_bucket)
    try:
        blocks = []
        for ours, th in zip(shards, thanos_shards):
            # the same blocks as Thanos' own shard (hashmod is Prometheus' md5 rule)
            a = labels_call(ours.extra["grpc"], "LabelNames", [], lo, hi)
            b = labels_call(th.extra["grpc"], "LabelNames", [], lo, hi)
            assert a == b
            got = series(ours.extra["grpc"], [("__name__", RE, ".+")], lo, hi)
            assert got == series(th.extra["grpc"], [("__name__", RE, ".+")], lo, hi)
            blocks.append(metric(ours, "thanos_bucket_store_blocks_loaded"))
        assert all(n > 0 for n in blocks)
        assert sum(blocks) == metric(whole, "thanos_bucket_store_blocks_loaded")
        # the union of both shards' chunks is the whole store's answer
        whole_ans = series(whole.extra["grpc"], [("__name__", RE, ".+")], lo, hi)
        parts = [series(s.extra["grpc"], [("__name__", RE, ".+")], lo, hi) for s in shards]
        for s in whole_ans:
            lbls = [(label.name, label.value) for label in s.labels]
            chunks = set()
            for p in parts:
                for ps in p:
                    if [(label.name, label.value) for label in ps.labels] == lbls:
                        for c in ps.chunks:
                            assert c.SerializeToString() not in chunks, "a chunk served by both shards"
                            chunks.add(c.SerializeToString())
            assert chunks == {c.SerializeToString() for c in s.chunks}
    finally:
        for p in shards + thanos_shards:
            p.stop()


# --- limits ------------------------------------------------------------------------------------------

def test_limits_answer_resource_exhausted_like_thanos(bench_bucket, pythanos_bin, thanos_bin, tmp_path):
    lo, hi = span(bench_bucket)
    flags = ["--store.limits.request-series=3", "--store.limits.request-samples=12000"]
    ours = start_store(pythanos_bin, "limited", fs_yaml(bench_bucket), tmp_path / "o", flags)
    theirs = start_store(thanos_bin, "thanos-limited", fs_yaml(bench_bucket), tmp_path / "t", flags, thanos=True)
    big = min((m for m in metas(bench_bucket).values() if m["thanos"]["downsample"]["resolution"] == 0),
              key=lambda m: m["minTime"])  # a 67-day raw block: one series, thousands of chunks
    try:
        for matchers, mint, maxt, want in (
                ([("__name__", RE, "continuous_app_metric.*")], lo, hi, "exceeded series limit"),
                ([("__name__", EQ, "continuous_app_metric0")], lo, hi, "exceeded series limit"),
                ([("__name__", EQ, "continuous_app_metric0")], big["minTime"], big["minTime"] + 10 * 86_400_000,
                 "exceeded chunks limit"),
                ([("__name__", EQ, "continuous_app_metric0")], hi - 3_600_000, hi, None)):
            a = series_or_error(ours.extra["grpc"], matchers, mint, maxt)
            b = series_or_error(theirs.extra["grpc"], matchers, mint, maxt)
            if want is None:
                assert isinstance(a, list) and a == b
                continue
            assert a[0] == b[0] == grpc.StatusCode.RESOURCE_EXHAUSTED, (a, b)
            assert want in a[1] and want in b[1], (a, b)
        assert ours.alive()
        assert metric(ours, "thanos_bucket_store_queries_dropped_total") == 3
    finally:
        ours.stop()
        theirs.stop()


# --- restarts, laziness, caches ----------------------------------------------------------------------

def test_restart_reuses_index_headers_and_lazy_reader_releases(bench_bucket, pythanos_bin, tmp_path):
    lo, hi = span(bench_bucket)
    work = tmp_path / "s"
    p = start_store(pythanos_bin, "first", fs_yaml(bench_bucket), work)
    want = series(p.extra["grpc"], [("__name__", RE, ".+")], lo, hi)
    p.stop()
    headers = {h: h.stat().st_mtime_ns for h in (work / "data").glob("*/index-header")}
    assert len(headers) == len(metas(bench_bucket))
    p = start_store(pythanos_bin, "second", fs_yaml(bench_bucket), work,
                    ["--store.enable-index-header-lazy-reader", "--store.index-header-lazy-reader-idle-timeout=1s"])
    try:
        assert series(p.extra["grpc"], [("__name__", RE, ".+")], lo, hi) == want
        assert {h: h.stat().st_mtime_ns for h in headers} == headers, "index-headers rebuilt on restart"
        raw = sum(1 for m in metas(bench_bucket).values() if m["thanos"]["downsample"]["resolution"] == 0)
        p.wait_ready(lambda: metric(p, "thanos_bucket_store_indexheader_lazy_unload_total") >= raw, 60,
                     "the readers the query opened released when idle")
        assert series(p.extra["grpc"], [("__name__", RE, ".+")], lo, hi) == want
    finally:
        p.stop()


@pytest.mark.parametrize("backend", ["memcached", "redis"])
def test_index_cache_on_real_servers(backend, bench_bucket, pythanos_bin, tmp_path, request):
    if backend == "memcached":
        srv = request.getfixturevalue("memcached_server")
        cfg = f"{{type: MEMCACHED, config: {{addresses: ['{srv.address}']}}}}"
    else:
        srv = request.getfixturevalue("redis_server")
        cfg = f"{{type: REDIS, config: {{addr: '{srv.address}'}}}}"
    lo, hi = span(bench_bucket)
    m = [("__name__", RE, "continuous_app_metric[0-2]")]
    first = start_store(pythanos_bin, "cached", fs_yaml(bench_bucket), tmp_path / "a", [f"--index-cache.config={cfg}"])
    try:
        want = series(first.extra["grpc"], m, lo, hi)
        assert metric(first, "thanos_store_index_cache_items_added_total") > 0
    finally:
        first.stop()
    # a second store on a fresh data dir finds postings and series in the shared cache
    second = start_store(pythanos_bin, "cached2", fs_yaml(bench_bucket), tmp_path / "b",
                         [f"--index-cache.config={cfg}"])
    try:
        assert series(second.extra["grpc"], m, lo, hi) == want
        assert metric(second, "thanos_store_index_cache_hits_total") > 0
    finally:
        second.stop()


# --- faults ------------------------------------------------------------------------------------------

def copy_bucket(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_corrupt_index_reported_once_and_other_blocks_served(bench_bucket, pythanos_bin, tmp_path):
    bucket = copy_bucket(bench_bucket, tmp_path / "bucket")
    ms = metas(bucket)
    raw = sorted(u for u in ms if ms[u]["thanos"]["downsample"]["resolution"] == 0)
    bad = raw[len(raw) // 2]
    idx = bucket / bad / "index"
    data = bytearray(idx.read_bytes())
    data[-60:-52] = b"\xff" * 8  # inside the postings offset table / TOC: the header build fails
    idx.write_bytes(bytes(data))
    p = start_store(pythanos_bin, "corrupt", fs_yaml(bucket), tmp_path / "s", ["--sync-block-duration=1s"])
    try:
        lo, hi = span(bucket)
        p.wait_ready(lambda: metric(p, "thanos_bucket_store_block_load_failures_total") >= 1, 60, "load failure")
        got = series(p.extra["grpc"], [("__name__", RE, ".+")], lo, hi)
        assert len(got) == 5
        served = {c.min_time for s in got for c in s.chunks}
        assert not any(ms[bad]["minTime"] <= t < ms[bad]["maxTime"] for t in served)
        # retried each sync, reported once
        p.wait_ready(lambda: metric(p, "thanos_bucket_store_block_load_failures_total") >= 3, 60, "retries")
        assert p.log(2000).count(f"block={bad}") == 1, p.log(50)
        assert p.alive()
    finally:
        p.stop()


def test_block_deleted_while_served(bench_bucket, pythanos_bin, tmp_path):
    bucket = copy_bucket(bench_bucket, tmp_path / "bucket")
    ms = metas(bucket)
    victim = max(ms, key=lambda u: ms[u]["maxTime"])
    p = start_store(pythanos_bin, "deleted", fs_yaml(bucket), tmp_path / "s", ["--sync-block-duration=1s"])
    try:
        lo, hi = span(bucket)
        m = [("__name__", EQ, "continuous_app_metric0")]
        before = series(p.extra["grpc"], m, hi - 3_600_000, hi)
        assert before and before[0].chunks
        (bucket / victim / "meta.json").unlink()  # Thanos deletes meta.json first
        shutil.rmtree(bucket / victim / "chunks")
        got = series_or_error(p.extra["grpc"], m, hi - 3_600_000, hi)
        if not isinstance(got, list):  # queried before the next sync: an error naming the block
            assert got[0] in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL) and victim in got[1], got
        p.wait_ready(lambda: metric(p, "thanos_bucket_store_block_drops_total") >= 1, 30, "block dropped")
        assert series(p.extra["grpc"], m, hi - 3_600_000, hi) == []
        assert series(p.extra["grpc"], m, lo, lo + 86_400_000)
        assert p.alive()
    finally:
        p.stop()


def test_s3_outage_mid_query_then_recovery(bench_bucket, pythanos_bin, tmp_path,
                                           thanos_query_factory):
    """The S3 server is stopped while the store serves: calls fail with UNAVAILABLE naming the
    block (a querier's partial response turns it into a warning), the store keeps running, and
    answers are whole again once the same server is back."""
    from pythanos.objstore import bucket_from_config
    from pythanos.tsdb.upload import upload_block

    own = start_own_seaweedfs(tmp_path / "weed")
    bkt_yaml = (f"type: S3\nconfig:\n  bucket: stores3\n  endpoint: {own['endpoint']}\n  access_key: {own['ak']}\n"
                f"  secret_key: {own['sk']}\n  insecure: true\n  max_retries: 0\n")
    own["client"].make_bucket("stores3")
    dst = bucket_from_config(bkt_yaml, "test")
    for u in sorted(metas(bench_bucket))[:6]:
        upload_block(dst, bench_bucket / u)
    p = start_store(pythanos_bin, "s3store", bkt_yaml, tmp_path / "s",
                    ["--sync-block-duration=2s"])
    try:
        lo, hi = span(bench_bucket)
        m = [("__name__", RE, "continuous_app_metric.*")]
        want = series(p.extra["grpc"], m, lo, hi)
        assert len(want) == 5
        q = thanos_query_factory([p.extra["grpc"]])
        own["process"].stop()
        got = series_or_error(p.extra["grpc"], m, lo, hi)
        assert got[0] == grpc.StatusCode.UNAVAILABLE, got
        partial = query(q, "/api/v1/query", query="count(continuous_app_metric0)", time=hi // 1000 - 3600)
        assert partial.get("warnings"), partial
        assert p.alive()
        own["restart"]()
        p.wait_ready(lambda: series(p.extra["grpc"], m, lo, hi) == want, 120, "answers whole again")
    finally:
        p.stop()
        own["process"].stop()


def start_own_seaweedfs(work: Path) -> dict:
    """A SeaweedFS of this test alone (restartable on the same ports and data)."""
    from peers import S3_ACCESS_KEY, S3_SECRET_KEY, start_seaweedfs

    work.mkdir(parents=True, exist_ok=True)
    server = start_seaweedfs(work, REGISTRY, session=False)
    box = {"process": server.process, "endpoint": server.endpoint, "ak": S3_ACCESS_KEY, "sk": S3_SECRET_KEY,
           "client": server.client()}

    def restart() -> None:
        p = REGISTRY.start("seaweedfs-again", server.process.args, work)
        p.url = server.process.url
        box["process"] = p
        c = server.client()
        p.wait_ready(lambda: c.bucket_exists("stores3"), 120, "S3 back")

    box["restart"] = restart
    return box


def test_flags_rendered_by_the_operator_parse(pythanos_bin):
    """Every store flag the operator renders is one ``pythanos store`` accepts (the render test
    covers the rest of the components)."""
    r = subprocess.run([pythanos_bin, "store", "--help"], capture_output=True, text=True, timeout=60)
    for flag in ("--data-dir", "--objstore.config-file", "--ignore-deletion-marks-delay", "--min-time", "--max-time",
                 "--selector.relabel-config", "--index-cache-size", "--index-cache.config",
                 "--store.grpc.series-max-concurrency", "--store.limits.request-series",
                 "--store.limits.request-samples", "--chunk-pool-size", "--store.enable-index-header-lazy-reader",
                 "--web.disable", "--sync-block-duration", "--block-sync-concurrency",
                 "--block-meta-fetch-concurrency", "--store.grpc.series-sample-limit",
                 "--store.grpc.touched-series-limit"):
        assert flag in r.stdout, flag
    bad = subprocess.run([pythanos_bin, "store", "--objstore.config={type: FILESYSTEM, config: {directory: /x}}",
                          "--min-time=soon"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--min-time" in bad.stderr
    bad = subprocess.run([pythanos_bin, "store", "--objstore.config={type: FILESYSTEM, config: {directory: /x}}",
                          "--selector.relabel-config=[{action: hashmod, source_labels: [a], target_label: b}]"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "--selector.relabel-config" in bad.stderr and "modulus" in bad.stderr
