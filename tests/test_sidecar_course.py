"""``pythanos sidecar`` in the course's topology, against real Prometheus 2.42 and a real Thanos querier.

* The first part of the course (../shared/seeds/001_f3438013ba810adb.txt): three Prometheus, one
  ``cluster: eu1, replica: 0`` scraping itself, two ``cluster: us1`` replicas 0 and 1 scraping
  the same targets (both us1 Prometheus), 1 s scrape interval here; each with **our** sidecar; a
  real ``thanos query --query.replica-label replica`` over our three gRPC addresses answers
  ``prometheus_tsdb_head_series`` with 3 series deduplicated and 5 without, and values (and
  ``sum(...)``) equal to each Prometheus' own answer at the same evaluation time.
* Our StoreClient reads the same series from a real ``thanos sidecar`` and from ours on one
  Prometheus: same labels, same samples, same Info.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.parse

import pytest

from peers import REGISTRY, explain_thanos_crash, free_ports, http_get
from pythanos.storeapi.pb import rpc_pb2
from pythanos.storeapi import MAX_TIME, XOR, Series, StoreClient
from pythanos.tsdb.chunkenc import decode_xor
from pythanos.tsdb.labels import Matcher

READY_TIMEOUT = 120.0  # the machine is shared with Go builds: be generous


def prom_config(cluster: str, replica: str, targets: list[int]) -> str:
    tg = ", ".join(f'"127.0.0.1:{p}"' for p in targets)
    return f"""\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
  external_labels:
    cluster: {cluster}
    replica: {replica}
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: [{tg}]
"""


def start_prometheus(prometheus_bin: str, work, port: int, config: str, name: str):
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "prometheus.yml"
    cfg.write_text(config)
    p = REGISTRY.start(name, [prometheus_bin, f"--config.file={cfg}", f"--storage.tsdb.path={work / 'data'}",
                              f"--web.listen-address=127.0.0.1:{port}"], work)
    p.url, p.port = f"http://127.0.0.1:{port}", port
    return p


def api(url: str, path: str, **params):
    qs = urllib.parse.urlencode(params, doseq=True)
    code, body = http_get(f"{url}{path}?{qs}", timeout=30)
    doc = json.loads(body)
    assert code == 200 and doc["status"] == "success", (url, path, params, code, body[:500])
    return doc["data"]


def sidecar_args(prom_url: str, grpc: int, http: int, *extra: str) -> list[str]:
    return ["sidecar", f"--prometheus.url={prom_url}", f"--grpc-address=127.0.0.1:{grpc}",
            f"--http-address=127.0.0.1:{http}", "--prometheus.get_config_interval=2s", "--grpc-grace-period=1s",
            "--http-grace-period=1s", *extra]


@pytest.fixture
def started():
    procs = []
    yield procs
    for p in reversed(procs):
        p.stop()


def test_course_topology_thanos_querier_over_our_sidecars(prometheus_bin, pythanos_factory, thanos_query_factory,
                                                          tmp_path, started):
    eu1, us1_0, us1_1 = free_ports(3)
    proms = {
        ("eu1", "0"): start_prometheus(prometheus_bin, tmp_path / "eu1", eu1, prom_config("eu1", "0", [eu1]),
                                       "prometheus-eu1"),
        ("us1", "0"): start_prometheus(prometheus_bin, tmp_path / "us1-0", us1_0,
                                       prom_config("us1", "0", [us1_0, us1_1]), "prometheus-us1-0"),
        ("us1", "1"): start_prometheus(prometheus_bin, tmp_path / "us1-1", us1_1,
                                       prom_config("us1", "1", [us1_0, us1_1]), "prometheus-us1-1"),
    }
    started.extend(proms.values())
    for p in proms.values():
        p.wait_http_ready("/-/ready", READY_TIMEOUT)

    ports = free_ports(6)
    sidecars = []
    for i, p in enumerate(proms.values()):
        g, h = ports[2 * i], ports[2 * i + 1]
        sidecars.append(pythanos_factory(sidecar_args(p.url, g, h), ready_url=f"http://127.0.0.1:{h}/-/ready",
                                         name=f"sidecar-{i}", ready_timeout=READY_TIMEOUT))
    endpoints = [f"127.0.0.1:{ports[2 * i]}" for i in range(3)]
    q = thanos_query_factory(endpoints, ready_timeout=READY_TIMEOUT)

    # every Prometheus has scraped its targets a few times
    def scraped() -> bool:
        for (cluster, _), p in proms.items():
            res = api(p.url, "/api/v1/query", query="count_over_time(prometheus_tsdb_head_series[1m])")["result"]
            if len(res) != (1 if cluster == "eu1" else 2) or min(float(r["value"][1]) for r in res) < 3:
                return False
        return True

    sidecars[0].wait_ready(scraped, READY_TIMEOUT, what="3 scrapes of every target")
    t = round(time.time() - 2, 3)

    # each Prometheus' own answers at t
    own: dict[tuple[str, str], dict[str, float]] = {}
    own_sum: dict[tuple[str, str], float] = {}
    for key, p in proms.items():
        res = api(p.url, "/api/v1/query", query="prometheus_tsdb_head_series", time=t)["result"]
        own[key] = {r["metric"]["instance"]: float(r["value"][1]) for r in res}
        own_sum[key] = float(api(p.url, "/api/v1/query", query="sum(prometheus_tsdb_head_series)",
                                 time=t)["result"][0]["value"][1])
    assert {k: len(v) for k, v in own.items()} == {("eu1", "0"): 1, ("us1", "0"): 2, ("us1", "1"): 2}

    def tq(query: str, dedup: bool):
        return api(q.url, "/api/v1/query", query=query, time=t, dedup=str(dedup).lower(),
                   partial_response="false")["result"]

    raw = tq("prometheus_tsdb_head_series", False)
    assert len(raw) == 5, raw
    for r in raw:
        m = r["metric"]
        assert float(r["value"][1]) == own[(m["cluster"], m["replica"])][m["instance"]], (m, own)
        assert m["job"] == "prometheus" and m["__name__"] == "prometheus_tsdb_head_series"

    dedup = tq("prometheus_tsdb_head_series", True)
    assert len(dedup) == 3, dedup
    assert sorted((r["metric"]["cluster"], r["metric"]["instance"]) for r in dedup) == sorted(
        [("eu1", f"127.0.0.1:{eu1}"), ("us1", f"127.0.0.1:{us1_0}"), ("us1", f"127.0.0.1:{us1_1}")])
    chosen = {}
    for r in dedup:
        m = r["metric"]
        assert "replica" not in m
        v = float(r["value"][1])
        if m["cluster"] == "eu1":
            assert v == own[("eu1", "0")][m["instance"]]
        else:  # one of the two replicas' answers
            assert v in (own[("us1", "0")][m["instance"]], own[("us1", "1")][m["instance"]]), (m, v, own)
        chosen[m["instance"]] = v

    (s_raw,) = tq("sum(prometheus_tsdb_head_series)", False)
    assert float(s_raw["value"][1]) == sum(own_sum.values())
    (s_dedup,) = tq("sum(prometheus_tsdb_head_series)", True)
    us1_options = {a + b for a, b in itertools.product(*[
        {own[("us1", "0")][inst], own[("us1", "1")][inst]} for inst in (f"127.0.0.1:{us1_0}", f"127.0.0.1:{us1_1}")])}
    assert float(s_dedup["value"][1]) in {own_sum[("eu1", "0")] + o for o in us1_options}, (s_dedup, own)

    # the querier sees our three sidecars as sidecars with their label sets
    stores = api(q.url, "/api/v1/stores")
    sc = {s["name"]: s for s in stores.get("sidecar", [])}
    assert sorted(sc) == sorted(endpoints), stores
    assert sorted(json.dumps(s["labelSets"], sort_keys=True) for s in sc.values()) == sorted(
        json.dumps([{"cluster": c, "replica": r}], sort_keys=True) for c, r in proms)
    assert all(s["maxTime"] == MAX_TIME and not s.get("lastError") for s in sc.values())
    for s in sidecars:
        assert s.alive()
        code, body = http_get(s.url.replace("/-/ready", "/metrics"))
        assert code == 200 and b"thanos_sidecar_prometheus_up 1.0" in body


def _samples(series: list[Series]) -> dict:
    out = {}
    for s in series:
        ts, vs = [], []
        for ch in s.chunks:
            assert ch.encoding == XOR
            t, v = decode_xor(ch.data)
            assert (int(t[0]), int(t[-1])) == (ch.min_time, ch.max_time)
            ts += t.tolist()
            vs += [repr(x) for x in v.tolist()]  # NaN-safe (stale markers) and exact
        out.setdefault(s.labels, []).extend(zip(ts, vs))
    return out


def test_our_sidecar_and_thanos_sidecar_return_identical_samples(prometheus_bin, pythanos_factory, thanos_bin,
                                                                 tmp_path, started):
    port, th_grpc, th_http, our_grpc, our_http = free_ports(5)
    prom = start_prometheus(prometheus_bin, tmp_path / "eu1", port,
                            prom_config("eu1", "0", [port, th_http, our_http]), "prometheus-eu1")
    started.append(prom)
    prom.wait_http_ready("/-/ready", READY_TIMEOUT)
    th = REGISTRY.start("thanos-sidecar", [
        thanos_bin, "sidecar", f"--prometheus.url={prom.url}", f"--tsdb.path={tmp_path / 'eu1' / 'data'}",
        f"--grpc-address=127.0.0.1:{th_grpc}", f"--http-address=127.0.0.1:{th_http}"], tmp_path / "thanos")
    started.append(th)
    th.url = f"http://127.0.0.1:{th_http}"
    th.wait_http_ready("/-/ready", READY_TIMEOUT)
    ours = pythanos_factory(sidecar_args(prom.url, our_grpc, our_http, f"--tsdb.path={tmp_path / 'eu1' / 'data'}"),
                            ready_url=f"http://127.0.0.1:{our_http}/-/ready", name="sidecar",
                            ready_timeout=READY_TIMEOUT)
    prom.wait_ready(lambda: float(api(prom.url, "/api/v1/query", query="min(count_over_time(up[1m]))")["result"][0]
                                  ["value"][1]) >= 10, READY_TIMEOUT, what="10 scrapes of each target")
    t_ms = (int(time.time()) - 3) * 1000  # scrapes before t_ms are all ingested

    async def read(addr: str):
        async with StoreClient(addr) as c:
            info = await c.info()
            everything = await c.series_list([Matcher.re("__name__", ".+")], t_ms - 3_600_000, t_ms)
            batched = await c.series_list([Matcher.re("__name__", ".+")], t_ms - 3_600_000, t_ms,
                                          response_batch_size=50, without_replica_labels=["replica"])
            up = await c.series_list([Matcher.eq("__name__", "up"), Matcher.eq("cluster", "eu1")], t_ms - 60_000, t_ms)
            none = await c.series_list([Matcher.eq("__name__", "up"), Matcher.eq("cluster", "us1")], t_ms - 60_000,
                                       t_ms)
            names = await c.label_names(start=t_ms - 3_600_000, end=t_ms)
            jobs = await c.label_values("job", start=t_ms - 3_600_000, end=t_ms)
            shards = []   # vertical sharding: 3 shards by __name__, 4 without instance (replica label dropped)
            for total, by, labels, norep in ((3, True, ["__name__"], []), (4, False, ["instance"], ["replica"])):
                for k in range(total):
                    got, _ = await c.series_list([Matcher.re("__name__", ".+")], t_ms - 3_600_000, t_ms,
                                                 without_replica_labels=norep, shard_info=rpc_pb2.ShardInfo(
                                                     shard_index=k, total_shards=total, by=by, labels=labels))
                    shards.append((total, [x.labels for x in got]))
            return info, everything, batched, up, none, names, jobs, shards

    async def both():
        return await read(f"127.0.0.1:{th_grpc}"), await read(f"127.0.0.1:{our_grpc}")

    try:
        theirs, mine = asyncio.run(both())
    except Exception:
        explain_thanos_crash(th)
        raise
    t_info, t_all, t_batched, t_up, t_none, t_names, t_jobs, t_shards = theirs
    o_info, o_all, o_batched, o_up, o_none, o_names, o_jobs, o_shards = mine
    # each shard holds the series Thanos' sidecar puts there (one hash), the shards partition the whole
    assert o_shards == t_shards
    for total, first_shard in ((3, 0), (4, 3)):
        parts = [set(labels) for _, labels in o_shards[first_shard:first_shard + total]]
        assert all(parts) and sum(len(x) for x in parts) == len(set().union(*parts))
    assert set().union(*(set(labels) for _, labels in o_shards[:3])) == {x.labels for x in o_all[0]}
    assert set().union(*(set(labels) for _, labels in o_shards[3:])) == {x.labels for x in o_batched[0]}

    assert (o_info.component_type, o_info.label_sets, o_info.max_time) == (
        t_info.component_type, t_info.label_sets, t_info.max_time) == ("sidecar", [(("cluster", "eu1"),
                                                                                      ("replica", "0"))], MAX_TIME)
    # min time: Prometheus' lowest timestamp, re-read every --prometheus.get_config_interval (2s here, Thanos'
    # default 30s: the Thanos sidecar may still advertise the --min-time default it read before the first sample)
    first = min(ts for series in _samples(o_all[0]).values() for ts, _ in series)
    assert t_info.min_time <= o_info.min_time <= first
    for t_res, o_res in ((t_all, o_all), (t_batched, o_batched), (t_up, o_up), (t_none, o_none)):
        assert t_res[1] == o_res[1] == []  # no warnings
        t_s, o_s = _samples(t_res[0]), _samples(o_res[0])
        assert sorted(o_s) == sorted(t_s)
        assert o_s == t_s
    assert len(_samples(o_all[0])) > 100 and not o_none[0] and len(o_up[0]) == 3
    assert [s.labels for s in o_all[0]] == sorted(s.labels for s in o_all[0])
    assert all(dict(s.labels)["replica"] == "0" for s in o_all[0])
    assert all("replica" not in dict(s.labels) for s in o_batched[0])
    assert (o_names.values, o_jobs.values) == (t_names.values, t_jobs.values)
    assert ours.alive()
