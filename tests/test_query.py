"""``pythanos query`` against real peers, in the course's topology.

Three real Prometheus 2.42 as in the course (``cluster=eu1, replica=0`` scraping itself;
``cluster=us1`` replicas 0 and 1 scraping both us1 servers), 1 s scrapes. In front of each: our
sidecar **and** a real ``thanos sidecar``. Queriers:

* ``ours``: our querier over our sidecars;
* ``thanos``: a real ``thanos query`` over our sidecars (the reference);
* ``ours_thanos``: our querier over the real Thanos sidecars;
* ``stacked``: a real ``thanos query`` over **our querier's** StoreAPI.

Every query is asked at the same evaluation time (a few seconds in the past, so all of its
samples are in), instant and range, with and without dedup; answers must agree with the
reference: same series, same timestamps, values within 1e-9 relative (raw samples: exactly).
Partial response, bad input and a hanging store are checked against the same Thanos querier.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
import urllib.parse

import pytest

from peers import REGISTRY, free_ports, http_get, listening, start_thanos_query

READY = 120.0

QUERIES = [
    "prometheus_tsdb_head_series",
    "sum(prometheus_tsdb_head_series)",
    "sum by (cluster) (rate(prometheus_tsdb_head_samples_appended_total[30s]))",
    'rate(prometheus_http_requests_total{handler="/metrics"}[20s])',
    'increase(prometheus_http_requests_total{handler="/metrics"}[30s])',
    'irate(prometheus_http_requests_total{handler="/metrics"}[10s])',
    "max_over_time(prometheus_tsdb_head_series[30s])",
    "count by (job, cluster) (up)",
    "topk(2, prometheus_tsdb_head_chunks)",
    "histogram_quantile(0.9, sum by (le, cluster) (rate(prometheus_http_request_duration_seconds_bucket[30s])))",
    "prometheus_tsdb_head_series / on (instance, cluster, replica) group_left prometheus_tsdb_head_chunks",
]
RAW_QUERIES = ["prometheus_tsdb_head_series[10s]", 'prometheus_http_requests_total{handler="/metrics"}[15s]']


def prom_config(cluster: str, replica: str, targets: list[int]) -> str:
    tg = ", ".join(f'"127.0.0.1:{p}"' for p in targets)
    return (f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  external_labels:\n"
            f"    cluster: {cluster}\n    replica: \"{replica}\"\n"
            f"scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: [{tg}]\n")


def get(url: str, path: str, http_timeout: float = 60.0, **params) -> tuple[int, dict]:
    qs = urllib.parse.urlencode(params, doseq=True)
    code, body = http_get(f"{url}{path}?{qs}", timeout=http_timeout)
    return code, json.loads(body)


def ok(url: str, path: str, **params) -> dict:
    code, doc = get(url, path, **params)
    assert code == 200 and doc["status"] == "success", (url, path, params, code, doc)
    return doc


class Topology:
    def __init__(self, base, prometheus_bin, thanos_bin, pythanos_bin):
        self.procs = []
        self.base = base
        self.prometheus_bin, self.thanos_bin, self.pythanos_bin = prometheus_bin, thanos_bin, pythanos_bin

    def start(self, name, args, **kw):
        p = REGISTRY.start(name, args, self.base / name, session=True, **kw)
        self.procs.append(p)
        return p

    def prometheus(self, name, port, cfg):
        work = self.base / name
        work.mkdir(parents=True, exist_ok=True)
        (work / "prometheus.yml").write_text(cfg)
        p = self.start(name, [self.prometheus_bin, f"--config.file={work / 'prometheus.yml'}",
                              f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"])
        p.url, p.port, p.extra["tsdb"] = f"http://127.0.0.1:{port}", port, work / "data"
        return p

    def _ours(self, name, args):
        """One of our components on ports the kernel picks, found in its log lines."""
        p = self.start(name, [self.pythanos_bin, *args, "--grpc-address=127.0.0.1:0", "--http-address=127.0.0.1:0"])
        at = listening(p, timeout=READY)
        p.url, p.extra["grpc"] = f"http://{at['http']}", at["grpc"]
        return p

    def our_sidecar(self, name, prom, extra=()):
        return self._ours(name, ["sidecar", f"--prometheus.url={prom.url}", "--grpc-grace-period=1s",
                                 "--http-grace-period=1s", *extra])

    def thanos_sidecar(self, name, prom):
        g, h = free_ports(2)
        p = self.start(name, [self.thanos_bin, "sidecar", f"--prometheus.url={prom.url}",
                              f"--tsdb.path={prom.extra['tsdb']}", f"--grpc-address=127.0.0.1:{g}",
                              f"--http-address=127.0.0.1:{h}"])
        p.url, p.extra["grpc"] = f"http://127.0.0.1:{h}", f"127.0.0.1:{g}"
        return p

    def our_query(self, name, endpoints, extra=()):
        return self._ours(name, ["query", "--query.replica-label=replica", *[f"--endpoint={e}" for e in endpoints],
                                 *extra])

    def thanos_query(self, name, endpoints, extra=()):
        p = start_thanos_query(self.thanos_bin, endpoints, self.base / name, list(extra), ready_timeout=READY)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


def wait_endpoints(q, n: int) -> None:
    def healthy():
        doc = ok(q.url, "/api/v1/stores")
        return sum(1 for g in doc["data"].values() for s in g if not s["lastError"]) >= n
    q.wait_ready(healthy, READY, what=f"{n} healthy endpoints")


@pytest.fixture(scope="module")
def topo(tmp_path_factory, prometheus_bin, thanos_bin, pythanos_bin):
    t = Topology(tmp_path_factory.mktemp("query-course"), prometheus_bin, thanos_bin, pythanos_bin)
    try:
        eu1, us0, us1 = free_ports(3)
        t.proms = [t.prometheus("prom-eu1", eu1, prom_config("eu1", "0", [eu1])),
                   t.prometheus("prom-us1-0", us0, prom_config("us1", "0", [us0, us1])),
                   t.prometheus("prom-us1-1", us1, prom_config("us1", "1", [us0, us1]))]
        for p in t.proms:
            p.wait_http_ready("/-/ready", READY)
        t.ours_sc = [t.our_sidecar(f"sidecar-{i}", p, ["--prometheus.get_config_interval=2s"])
                     for i, p in enumerate(t.proms)]
        t.thanos_sc = [t.thanos_sidecar(f"thanos-sidecar-{i}", p) for i, p in enumerate(t.proms)]
        for s in t.ours_sc + t.thanos_sc:
            s.wait_http_ready("/-/ready", READY)
        ours_grpc = [s.extra["grpc"] for s in t.ours_sc]
        t.ours = t.our_query("query-ours", ours_grpc)
        t.ours_thanos = t.our_query("query-ours-over-thanos", [s.extra["grpc"] for s in t.thanos_sc])
        for q in (t.ours, t.ours_thanos):
            q.wait_http_ready("/-/ready", READY)
            wait_endpoints(q, 3)
        t.thanos = t.thanos_query("thanos-query", ours_grpc)
        t.stacked = t.thanos_query("thanos-query-stacked", [t.ours.extra["grpc"]])

        def scraped():
            for p in t.proms:
                r = ok(p.url, "/api/v1/query", query="min(count_over_time(up[1m]))")["data"]["result"]
                if not r or float(r[0]["value"][1]) < 40:
                    return False
            return True
        t.proms[0].wait_ready(scraped, READY, what="40 scrapes of every target")
        yield t
    finally:
        t.stop()


def canon(doc: dict) -> tuple:
    d = doc["data"]
    rt = d["resultType"]
    if rt == "vector":
        return rt, {json.dumps(r["metric"], sort_keys=True): [(r["value"][0], r["value"][1])] for r in d["result"]}
    if rt == "matrix":
        return rt, {json.dumps(r["metric"], sort_keys=True): [tuple(p) for p in r["values"]] for r in d["result"]}
    return rt, {"": [tuple(d["result"])]}


def assert_same(got: dict, want: dict, what: str, exact: bool = False) -> None:
    g, w = canon(got), canon(want)
    assert g[0] == w[0], (what, g[0], w[0])
    assert sorted(g[1]) == sorted(w[1]), (what, "series differ", sorted(g[1]), sorted(w[1]))
    for k in w[1]:
        gp, wp = g[1][k], w[1][k]
        assert [p[0] for p in gp] == [p[0] for p in wp], (what, k, "timestamps differ", gp, wp)
        for (t, gv), (_, wv) in zip(gp, wp):
            if exact or gv == wv:
                assert gv == wv, (what, k, t, gv, wv)
                continue
            a, b = float(gv), float(wv)
            assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), \
                (what, k, t, gv, wv)


def eval_time() -> float:
    return round(time.time() - 5, 3)


@pytest.mark.parametrize("dedup", ["true", "false"])
def test_same_answers_as_thanos_querier(topo, dedup):
    t = eval_time()
    for q in QUERIES:
        want = ok(topo.thanos.url, "/api/v1/query", query=q, time=t, dedup=dedup)
        for name, qq in (("ours", topo.ours), ("ours-over-thanos-sidecars", topo.ours_thanos),
                         ("thanos-over-our-querier", topo.stacked)):
            got = ok(qq.url, "/api/v1/query", query=q, time=t, dedup=dedup)
            assert_same(got, want, f"{name} instant {q} dedup={dedup}")
        want = ok(topo.thanos.url, "/api/v1/query_range", query=q, start=t - 60, end=t, step=2, dedup=dedup)
        for name, qq in (("ours", topo.ours), ("ours-over-thanos-sidecars", topo.ours_thanos),
                         ("thanos-over-our-querier", topo.stacked)):
            got = ok(qq.url, "/api/v1/query_range", query=q, start=t - 60, end=t, step=2, dedup=dedup)
            assert_same(got, want, f"{name} range {q} dedup={dedup}")
    for q in RAW_QUERIES:
        want = ok(topo.thanos.url, "/api/v1/query", query=q, time=t, dedup=dedup)
        assert want["data"]["result"], q
        for qq in (topo.ours, topo.ours_thanos, topo.stacked):
            assert_same(ok(qq.url, "/api/v1/query", query=q, time=t, dedup=dedup), want, f"raw {q}", exact=True)


def test_dedup_behaves_as_the_course_says(topo):
    t = eval_time()
    raw = ok(topo.ours.url, "/api/v1/query", query="prometheus_tsdb_head_series", time=t, dedup="false")
    assert len(raw["data"]["result"]) == 5
    dd = ok(topo.ours.url, "/api/v1/query", query="prometheus_tsdb_head_series", time=t)
    assert len(dd["data"]["result"]) == 3
    assert all("replica" not in r["metric"] for r in dd["data"]["result"])
    # replicaLabels[] overrides the flag: a label that is not there dedups nothing
    other = ok(topo.ours.url, "/api/v1/query", query="prometheus_tsdb_head_series", time=t,
               **{"replicaLabels[]": "nonexistent"})
    assert len(other["data"]["result"]) == 5


def test_byte_identical_json_for_selectors(topo):
    """Selector answers have no arithmetic: the whole body must equal Thanos' byte for byte."""
    t = eval_time()
    for q, extra in (("prometheus_tsdb_head_series", {}), ("up", {"dedup": "false"}),
                     ("prometheus_tsdb_head_series[5s]", {})):
        _, want = http_get(f"{topo.thanos.url}/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": t, **extra}))
        _, got = http_get(f"{topo.ours.url}/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": t, **extra}))
        w, g = json.loads(want), json.loads(got)
        w["data"]["result"].sort(key=lambda r: json.dumps(r["metric"], sort_keys=True))
        g["data"]["result"].sort(key=lambda r: json.dumps(r["metric"], sort_keys=True))
        assert g == w
        # key order and formatting: the same once the (unordered) vector is put in the same order
        assert json.dumps(g, separators=(",", ":"), ensure_ascii=False) == json.dumps(w, separators=(",", ":"),
                                                                                       ensure_ascii=False)
    _, want = http_get(f"{topo.thanos.url}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": "prometheus_tsdb_head_series", "start": t - 30, "end": t, "step": 1}))
    _, got = http_get(f"{topo.ours.url}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": "prometheus_tsdb_head_series", "start": t - 30, "end": t, "step": 1}))
    assert got == want


def test_post_form_like_grafana(topo):
    """Grafana POSTs form-encoded parameters; the answer is the one GET gives."""
    import urllib.request

    t = eval_time()
    form = urllib.parse.urlencode({"query": "prometheus_tsdb_head_series", "start": t - 20, "end": t, "step": 2,
                                   "dedup": "false"}).encode()
    bodies = []
    for q in (topo.ours, topo.thanos):
        req = urllib.request.Request(q.url + "/api/v1/query_range", data=form, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            bodies.append(r.read())
    assert bodies[0] == bodies[1]
    assert len(json.loads(bodies[0])["data"]["result"]) == 5


def test_metadata_apis_match_thanos(topo):
    for path, params in (("/api/v1/labels", {}), ("/api/v1/label/job/values", {}), ("/api/v1/label/cluster/values", {}),
                         ("/api/v1/series", {"match[]": "prometheus_tsdb_head_series"}),
                         ("/api/v1/series", {"match[]": "up", "dedup": "false"}),
                         ("/api/v1/series", {"match[]": ["up", "prometheus_build_info"]})):
        want = ok(topo.thanos.url, path, **params)
        got = ok(topo.ours.url, path, **params)
        if path == "/api/v1/series":
            key = lambda m: json.dumps(m, sort_keys=True)  # noqa: E731
            assert sorted(got["data"], key=key) == sorted(want["data"], key=key), (path, params)
        else:
            # label names/values: a scrape may add a label value between the two calls; compare
            # what both know
            assert set(want["data"]) <= set(got["data"]) or set(got["data"]) <= set(want["data"]), (path, params)
            assert got["data"] == sorted(got["data"])


def test_stores_page(topo):
    doc = ok(topo.ours.url, "/api/v1/stores")
    sc = {s["name"]: s for s in doc["data"]["sidecar"]}
    assert sorted(sc) == sorted(s.extra["grpc"] for s in topo.ours_sc)
    assert sorted(json.dumps(s["labelSets"]) for s in sc.values()) == sorted(
        json.dumps([{"cluster": c, "replica": r}]) for c, r in (("eu1", "0"), ("us1", "0"), ("us1", "1")))
    for s in sc.values():
        assert s["lastError"] is None and s["lastCheck"].endswith("Z") and s["maxTime"] == 2 ** 63 - 1
    # the real querier sees our querier as a "query" endpoint with the union of label sets
    doc = ok(topo.stacked.url, "/api/v1/stores")
    (q,) = doc["data"]["query"]
    assert q["name"] == topo.ours.extra["grpc"] and len(q["labelSets"]) == 3


BAD = [
    ("/api/v1/query", {"query": "sum(rate(x[5m])"}),
    ("/api/v1/query", {"query": "foo(up)"}),
    ("/api/v1/query", {"query": "up", "time": "yesterday"}),
    ("/api/v1/query", {"query": "up", "dedup": "maybe"}),
    ("/api/v1/query", {"query": "up", "partial_response": "x"}),
    ("/api/v1/query", {"query": "up", "timeout": "soon"}),
    ("/api/v1/query_range", {"query": "up", "start": "100", "end": "50", "step": "1"}),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "100000", "step": "1"}),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "100", "step": "0"}),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "100", "step": "-5s"}),
    ("/api/v1/query_range", {"query": "up", "start": "x", "end": "100", "step": "1"}),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "100", "step": "1", "max_source_resolution": "-1s"}),
    ("/api/v1/series", {}),
    ("/api/v1/series", {"match[]": "up", "start": "10", "end": "5"}),
    ("/api/v1/query", {"query": "up", "engine": "go"}),
    ("/api/v1/query", {"query": "up", "lookback_delta": "x"}),
    ("/api/v1/query", {"query": "sum(first_over_time(up[5m]))"}),
    ("/api/v1/query", {"query": "limitk(2, up)"}),
    ("/api/v1/query", {"query": "rate(up)"}),
    ("/api/v1/query_range", {"query": "up[5m]", "start": "0", "end": "10", "step": "1"}),
    ("/api/v1/label/job/values", {"start": "z"}),
]


@pytest.mark.parametrize("path,params", BAD, ids=[f"{p}:{'&'.join(f'{k}={v}' for k, v in q.items())}" for p, q in BAD])
def test_bad_input_errors_like_thanos(topo, path, params):
    wc, want = get(topo.thanos.url, path, **params)
    gc, got = get(topo.ours.url, path, **params)
    assert want["status"] == "error"
    assert (gc, got["status"], got["errorType"]) == (wc, want["status"], want["errorType"]), (got, want)
    if "parse error" not in want["error"] or "enable" in want["error"]:
        assert got["error"] == want["error"]


def test_many_to_many_is_an_execution_error(topo):
    t = eval_time()
    q = "prometheus_tsdb_head_series + on (job) prometheus_tsdb_head_chunks"
    wc, want = get(topo.thanos.url, "/api/v1/query", query=q, time=t, dedup="false")
    gc, got = get(topo.ours.url, "/api/v1/query", query=q, time=t, dedup="false")
    assert (wc, want["errorType"]) == (422, "execution")
    assert (gc, got["errorType"]) == (422, "execution"), got
    assert "many-to-many matching not allowed" in got["error"]


# --- failing and hanging stores --------------------------------------------------------------------

@pytest.fixture
def broken_store(topo):
    """A fourth Prometheus behind our sidecar, killed once both queriers know it: the sidecar still
    answers Info (its heartbeat is 60 s) but every Series fails."""
    (port,) = free_ports(1)
    prom = topo.prometheus(f"prom-broken-{port}", port, prom_config("eu2", "0", [port]))
    prom.wait_http_ready("/-/ready", READY)
    sc = topo.our_sidecar(f"sidecar-broken-{port}", prom, ["--prometheus.get_config_interval=60s"])
    sc.wait_http_ready("/-/ready", READY)
    endpoints = [s.extra["grpc"] for s in topo.ours_sc] + [sc.extra["grpc"]]
    ours = topo.our_query(f"query-partial-{port}", endpoints)
    ours.wait_http_ready("/-/ready", READY)
    wait_endpoints(ours, 4)
    thanos = topo.thanos_query(f"thanos-query-partial-{port}", endpoints)
    prom.stop()
    yield ours, thanos
    for p in (ours, thanos, sc):
        p.stop()


def test_partial_response(broken_store):
    ours, thanos = broken_store
    t = eval_time()
    for q in (ours, thanos):
        doc = ok(q.url, "/api/v1/query", query="prometheus_tsdb_head_series", time=t, partial_response="true")
        assert len(doc["data"]["result"]) == 3, (q.name, doc)
        assert doc.get("warnings"), (q.name, doc)
    gc, got = get(ours.url, "/api/v1/query", query="prometheus_tsdb_head_series", time=t, partial_response="false")
    wc, want = get(thanos.url, "/api/v1/query", query="prometheus_tsdb_head_series", time=t, partial_response="false")
    assert want["status"] == "error"
    assert (gc, got["status"], got["errorType"]) == (wc, "error", want["errorType"]), (got, want)
    print("partial response off:", got["error"], "| thanos:", want["error"])


def test_fan_out_only_to_stores_that_can_match(broken_store, topo):
    """The broken store (cluster="eu2") is not asked when the matchers exclude its external labels
    or when storeMatch[] leaves it out: then even partial_response=false succeeds. (Sidecars
    announce no lower time bound, so time pruning is checked in test_candidates_by_time_range.)"""
    ours, thanos = broken_store
    t = eval_time()
    for q in (ours, thanos):
        doc = ok(q.url, "/api/v1/query", query='prometheus_tsdb_head_series{cluster="us1"}', time=t,
                 partial_response="false")
        assert len(doc["data"]["result"]) == 2 and not doc.get("warnings"), (q.name, doc)
    eu1 = topo.ours_sc[0].extra["grpc"]
    doc = ok(ours.url, "/api/v1/query", query="prometheus_tsdb_head_series", time=t, partial_response="false",
             **{"storeMatch[]": f'{{__address__="{eu1}"}}'})
    assert [r["metric"]["cluster"] for r in doc["data"]["result"]] == ["eu1"], doc
    code, doc = get(ours.url, "/api/v1/query", query="prometheus_tsdb_head_series", time=t, partial_response="false")
    assert code == 422 and doc["errorType"] == "execution", doc


def test_hanging_store_hits_query_timeout(topo):
    """A sidecar stopped with SIGSTOP accepts connections and never answers: the query fails with
    Prometheus' timeout error after --query.timeout while the querier keeps serving."""
    (port,) = free_ports(1)
    prom = topo.prometheus(f"prom-hang-{port}", port, prom_config("eu3", "0", [port]))
    prom.wait_http_ready("/-/ready", READY)
    sc = topo.our_sidecar(f"sidecar-hang-{port}", prom)
    sc.wait_http_ready("/-/ready", READY)
    q = topo.our_query(f"query-timeout-{port}", [s.extra["grpc"] for s in topo.ours_sc] + [sc.extra["grpc"]],
                       ["--query.timeout=3s"])
    q.wait_http_ready("/-/ready", READY)
    wait_endpoints(q, 4)
    os.killpg(sc.pid, signal.SIGSTOP)
    try:
        code, doc = get(q.url, "/api/v1/query", query="prometheus_tsdb_head_series")
        assert (code, doc["status"], doc["errorType"]) == (503, "error", "timeout"), doc
        assert http_get(q.url + "/-/healthy")[0] == 200 and q.alive()
        # the querier still answers other queries: once the Info check drops the hung endpoint,
        # queries succeed again
        def answers():
            c, d = get(q.url, "/api/v1/query", query="prometheus_tsdb_head_series")
            return c == 200 and len(d["data"]["result"]) == 3
        q.wait_ready(answers, 30, what="answers without the hung store")
    finally:
        os.killpg(sc.pid, signal.SIGCONT)
        for p in (q, sc, prom):
            p.stop()


def test_pathological_regex_does_not_freeze_the_querier(topo):
    """User regexes run on RE2, in linear time: label_replace with ``(x|x)*y`` against a
    48-character value (2^48 steps for a backtracking engine, holding the GIL) and selectors
    with such matchers are answered (or would fail with Prometheus' timeout error, within
    --query.timeout), and a plain query sent at the same time to the same single-process
    querier is answered too. The client's 60 s timeout only keeps a regression from hanging
    the suite; nothing is timed."""
    from concurrent.futures import ThreadPoolExecutor

    q = topo.our_query("query-regex", [s.extra["grpc"] for s in topo.ours_sc],
                       ["--query.timeout=10s", "--query.workers=1"])
    try:
        q.wait_http_ready("/-/ready", READY)
        wait_endpoints(q, 3)
        t = eval_time()
        long = "x" * 48
        bad = [f'label_replace(label_replace(up, "long", "{long}", "", ""), "o", "$1", "long", "(x|x)*y")',
               f'label_replace(label_replace(up, "long", "{long}", "", ""), "o", "$1", "long", "(x+x+)+")',
               '{__name__="up", job=~"(x|x)*y"}',
               'up{cluster!~"(e|e)*u1(x+x+)+"}']
        with ThreadPoolExecutor(len(bad) + 1) as pool:
            slow = [pool.submit(get, q.url, "/api/v1/query", query=b, time=t) for b in bad]
            plain = pool.submit(get, q.url, "/api/v1/query", query="up", time=t)
            pc, pdoc = plain.result()
            answers = [f.result() for f in slow]
        assert pc == 200 and pdoc["status"] == "success", pdoc
        n = len(pdoc["data"]["result"])
        assert n == 3  # deduplicated: eu1's target and us1's two
        for b, (code, doc) in zip(bad, answers):
            assert (code, doc["status"]) == (200, "success") or \
                (code, doc["status"], doc["errorType"]) == (503, "error", "timeout"), (b, code, doc)
        (c1, d1), (c2, d2), (c3, d3), (c4, d4) = answers
        assert [r["metric"].get("o") for r in d1["data"]["result"]] == [None] * n  # no match: unchanged
        assert [r["metric"]["long"] for r in d1["data"]["result"]] == [long] * n
        assert [r["metric"]["o"] for r in d2["data"]["result"]] == [long] * n  # one greedy repetition
        assert d3["data"]["result"] == []
        assert len(d4["data"]["result"]) == n
        assert http_get(q.url + "/-/healthy")[0] == 200 and q.alive()
    finally:
        q.stop()


def test_candidates_by_time_range_labels_and_address():
    from pythanos.query.discovery import Discovery
    from pythanos.query.endpoints import Endpoint, EndpointSet
    from pythanos.query.proxy import Proxy
    from pythanos.storeapi.types import StoreInfo
    from pythanos.tsdb.labels import Matcher

    es = EndpointSet(Discovery())
    for addr, labels, mint, maxt in (("a:1", {"cluster": "eu1"}, 0, 1000), ("b:1", {"cluster": "us1"}, 500, 2000),
                                     ("c:1", {}, 3000, 4000)):
        es.endpoints[addr] = Endpoint(addr, client=None, active=True,
                                      info=StoreInfo(min_time=mint, max_time=maxt, external_labels=labels))
    p = Proxy(es)
    name = Matcher("=", "__name__", "x")

    def pick(ms, a, b, store=None):
        return sorted(e.address for e in p.candidates(ms, a, b, store))
    assert pick([name], 0, 5000) == ["a:1", "b:1", "c:1"]
    assert pick([name], 1001, 2500) == ["b:1"]
    assert pick([name], 2001, 2999) == []
    assert pick([name, Matcher("=", "cluster", "eu1")], 0, 5000) == ["a:1", "c:1"]  # c has no labels
    assert pick([name, Matcher("=~", "cluster", "eu.*|us.*")], 0, 5000) == ["a:1", "b:1", "c:1"]
    assert pick([name], 0, 5000, [[Matcher("=", "__address__", "b:1")]]) == ["b:1"]
    es.endpoints["b:1"].active = False
    assert pick([name], 0, 5000) == ["a:1", "c:1"]
