"""Our querier reads downsampled data as a real Thanos querier does, against real Thanos peers.

Topology (real processes on 127.0.0.1, built once per session, stopped by pid at the end):

* a FILESYSTEM bucket with a year of ``pythanos tools bench-blocks --profile continuous-365d-tiny``
  (5 gauge series, 15 s scrapes, ``cluster="eu1"``, ending at a fixed time), compacted and
  downsampled by a real ``thanos compact`` (one run: no ``--wait``): the bucket then holds raw, 5m and 1h
  blocks (the 67-day blocks at all three resolutions, the 176-hour ones at raw and 5m, the newest
  hours raw only);
* a real ``thanos store`` over that bucket;
* over the store: a real ``thanos query`` and our ``pythanos query``, the same pair again with
  ``--query.auto-downsampling``, and a real ``thanos query`` over our querier's StoreAPI (so our
  querier passes ``aggregates`` and ``max_resolution_window`` on).

Every query (rate, increase, sum, avg, min, *_over_time, plain selectors; instant and range; over
30 days and a year; ``max_source_resolution`` 0s, 5m, 1h and auto; with and without dedup) is asked
of both queriers and the answers must be the same: same result type, same series, same timestamps,
values equal bit for bit, or within 1e-9 relative where the summation order of the engines differs
(the test counts and prints how many were exact).
"""
from __future__ import annotations

import json
import math
import subprocess
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from peers import DOWNSAMPLED_MAX_TIME as MAX_TIME, REGISTRY, free_ports, http_get, start_thanos_query

READY = 180.0
REL = 1e-9
H = 3_600_000
D = 24 * H
M = '{__name__=~"continuous_app_metric.*"}'
M0 = "continuous_app_metric0"


def objstore(bucket: Path) -> str:
    return f"{{type: FILESYSTEM, config: {{directory: {bucket}}}}}"


def metas(bucket: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in bucket.glob("*/meta.json")]


class Topology:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: list = []

    def start(self, name, args):
        p = REGISTRY.start(name, args, self.base / name, session=True)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


def get(url: str, path: str, params: dict) -> tuple[int, dict]:
    code, body = http_get(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=300)
    return code, json.loads(body)


def ok(url: str, path: str, params: dict) -> dict:
    code, doc = get(url, path, params)
    assert code == 200 and doc["status"] == "success", (url, path, params, code, doc)
    return doc


def healthy_endpoints(url: str) -> int:
    code, doc = get(url, "/api/v1/stores", {})
    if code != 200:
        return 0
    return sum(1 for g in doc["data"].values() for s in g if not s.get("lastError"))


@pytest.fixture(scope="module")
def topo(tmp_path_factory, downsampled_bucket, thanos_bin, pythanos_bin):
    t = Topology(tmp_path_factory.mktemp("downsampling"))
    try:
        sh, sg = free_ports(2)
        store = t.start("thanos-store", [thanos_bin, "store", f"--data-dir={t.base / 'store-data'}",
                                         f"--objstore.config={objstore(downsampled_bucket)}",
                                         f"--http-address=127.0.0.1:{sh}", f"--grpc-address=127.0.0.1:{sg}",
                                         "--ignore-deletion-marks-delay=0s"])
        store.url = f"http://127.0.0.1:{sh}"
        store.wait_http_ready("/-/ready", READY)
        grpc = f"127.0.0.1:{sg}"
        t.ours, t.ours_auto = [], []
        for name, extra in (("query-ours", []), ("query-ours-auto", ["--query.auto-downsampling"])):
            h, g = free_ports(2)
            p = t.start(name, [pythanos_bin, "query", f"--http-address=127.0.0.1:{h}",
                               f"--grpc-address=127.0.0.1:{g}", "--query.replica-label=replica",
                               f"--endpoint={grpc}", *extra])
            p.url, p.extra["grpc"] = f"http://127.0.0.1:{h}", f"127.0.0.1:{g}"
            p.wait_http_ready("/-/ready", READY)
            p.wait_ready(lambda p=p: healthy_endpoints(p.url) >= 1, READY, what="the store healthy")
            if extra:
                t.ours_auto = p
            else:
                t.ours = p
        # our querier over our store, to compare with Thanos' querier over Thanos' store
        oh, og = free_ports(2)
        ostore = t.start("pythanos-store", [pythanos_bin, "store", f"--data-dir={t.base / 'our-store-data'}",
                                            f"--objstore.config={objstore(downsampled_bucket)}",
                                            f"--http-address=127.0.0.1:{oh}", f"--grpc-address=127.0.0.1:{og}",
                                            "--ignore-deletion-marks-delay=0s"])
        ostore.url = f"http://127.0.0.1:{oh}"
        ostore.wait_http_ready("/-/ready", READY)
        h, g = free_ports(2)
        full = t.start("query-ours-over-our-store", [pythanos_bin, "query", f"--http-address=127.0.0.1:{h}",
                                                     f"--grpc-address=127.0.0.1:{g}", "--query.replica-label=replica",
                                                     f"--endpoint=127.0.0.1:{og}"])
        full.url = f"http://127.0.0.1:{h}"
        full.wait_http_ready("/-/ready", READY)
        full.wait_ready(lambda: healthy_endpoints(full.url) >= 1, READY, what="our store healthy")
        t.full = full
        for name, eps, extra in (("thanos", [grpc], []), ("thanos_auto", [grpc], ["--query.auto-downsampling"]),
                                 ("stacked", [t.ours.extra["grpc"]], [])):
            q = start_thanos_query(thanos_bin, eps, t.base / name, extra, ready_timeout=READY)
            t.procs.append(q)
            setattr(t, name, q)
        t.end = max(m["maxTime"] for m in metas(downsampled_bucket))
        yield t
    finally:
        t.stop()


# --- the queries ---------------------------------------------------------------------------------

def exprs(w: str) -> list[str]:
    """Functions that drop the metric name take one series each (the five differ only by name)."""
    return [
        M, f"sum({M})", f"avg({M})", f"min({M})",
        f"rate({M0}[{w}])", f"increase(continuous_app_metric1[{w}])", f"sum(rate(continuous_app_metric2[{w}]))",
        f"min_over_time(continuous_app_metric3[{w}])", f"max_over_time(continuous_app_metric4[{w}])",
        f"count_over_time({M0}[{w}])", f"sum_over_time(continuous_app_metric1[{w}])",
        f"avg_over_time(continuous_app_metric2[{w}])", f"{M} > 0",
        # short ranges of functions that need two samples: the resolution drops to half the range
        "rate(continuous_app_metric3[1h])", "delta(continuous_app_metric4[20m])",
    ]


RESOLUTIONS = ["0s", "5m", "1h", "auto"]


def cases(end: int) -> list[tuple[str, str, dict]]:
    """(name, path, params) for every request."""
    out = []
    ranges = [("30d", end - 30 * D, end, "1h", "6h"), ("1y", end - 365 * D, end, "1d", "1d")]
    for rname, start, stop, step, w in ranges:
        for res in RESOLUTIONS:
            for i, q in enumerate(exprs(w)):
                p = {"query": q, "start": start / 1000, "end": stop / 1000, "step": step,
                     "max_source_resolution": res, "dedup": "true" if i % 2 else "false"}
                out.append((f"range {rname} res={res} {q}", "/api/v1/query_range", p))
    # half past an hour, the 1h data is 30 minutes old: found within the dynamic lookback delta of
    # Thanos' querier (1h once max_source_resolution exceeds 5m), not within the default 5m
    times = (("end-1h", end - H), ("end-20d", end - 20 * D), ("end-200d", end - 200 * D),
             ("end-200d+30m", end - 200 * D + 30 * 60_000))
    for tname, at in times:
        for w in ("30d", "365d"):
            for res in RESOLUTIONS:
                for i, q in enumerate(exprs(w)):
                    if w == "365d" and "[" + w not in q:
                        continue  # no range: the same as with 30d
                    p = {"query": q, "time": at / 1000, "max_source_resolution": res,
                         "dedup": "false" if i % 2 else "true"}
                    out.append((f"instant {tname} [{w}] res={res} {q}", "/api/v1/query", p))
    return out


def canon(doc: dict) -> tuple:
    d = doc["data"]
    if d["resultType"] == "vector":
        return "vector", {json.dumps(r["metric"], sort_keys=True): [tuple(r["value"])] for r in d["result"]}
    return "matrix", {json.dumps(r["metric"], sort_keys=True): [tuple(p) for p in r["values"]] for r in d["result"]}


def compare(got: dict, want: dict) -> tuple[list[str], bool]:
    """(differences, exact) of two answers."""
    g, w = canon(got), canon(want)
    if g[0] != w[0]:
        return [f"result type {g[0]} != {w[0]}"], False
    if sorted(g[1]) != sorted(w[1]):
        return [f"series {sorted(g[1])} != {sorted(w[1])}"], False
    diffs, exact = [], True
    for k, wp in w[1].items():
        gp = g[1][k]
        if [p[0] for p in gp] != [p[0] for p in wp]:
            diffs.append(f"{k}: timestamps differ ({len(gp)} vs {len(wp)} points)")
            continue
        for (t, gv), (_, wv) in zip(gp, wp):
            if gv == wv:
                continue
            exact = False
            a, b = float(gv), float(wv)
            if not (math.isnan(a) and math.isnan(b)) and not math.isclose(a, b, rel_tol=REL, abs_tol=0.0):
                diffs.append(f"{k} at {t}: ours {gv} thanos {wv}")
                break
    return diffs, exact


@pytest.fixture(scope="module")
def answers(topo):
    """Every case asked of Thanos and of us, a few at a time."""
    cs = cases(topo.end)

    def ask(c):
        name, path, params = c
        return ok(topo.thanos.url, path, params), ok(topo.ours.url, path, params), ok(topo.full.url, path, params)

    with ThreadPoolExecutor(4) as ex:
        return list(zip(cs, ex.map(ask, cs)))


def test_same_answers_as_thanos(answers):
    failures, exact, nonempty = [], 0, 0
    for (name, _, _), (want, got, _) in answers:
        diffs, ex = compare(got, want)
        if diffs:
            failures.append(f"{name}: " + "; ".join(diffs[:3]))
        exact += ex
        nonempty += bool(want["data"]["result"])
    print(f"\n{len(answers)} queries: {len(answers) - len(failures)} equal to Thanos' answer, "
          f"{exact} of them bit for bit; {nonempty} non-empty")
    assert not failures, f"{len(failures)} of {len(answers)} differ:\n" + "\n".join(failures[:30])
    assert nonempty >= len(answers) * 0.9


def test_our_querier_over_our_store_answers_as_thanos_over_thanos_store(answers):
    """The whole read path ours (``pythanos query`` over ``pythanos store``) against Thanos' whole
    path (``thanos query`` over ``thanos store``) on the same downsampled bucket."""
    failures = []
    for (name, _, _), (want, _, full) in answers:
        diffs, _ = compare(full, want)
        if diffs:
            failures.append(f"{name}: " + "; ".join(diffs[:3]))
    assert not failures, f"{len(failures)} of {len(answers)} differ:\n" + "\n".join(failures[:30])


def test_downsampled_data_is_read(answers):
    """The resolutions really differ: a count over 30 days is of samples at 0s and of 5m/1h windows
    otherwise (Thanos' COUNT aggregate read as the series), and the averages of plain selectors."""
    by = {name: got for (name, _, _), (_, got, _) in answers}

    def val(name):
        return float(by[name]["data"]["result"][0]["value"][1])

    q = f"count_over_time({M0}[30d])"
    raw = val(f"instant end-200d [30d] res=0s {q}")
    five = val(f"instant end-200d [30d] res=5m {q}")
    hour = val(f"instant end-200d [30d] res=1h {q}")
    assert raw == 30 * 24 * 240  # every 15 s sample
    assert 30 * 24 * 12 <= five < 30 * 24 * 12 * 1.05  # one per 5m window
    # one per hour (5m -> 1h cuts along the 5m chunks, so an hour can be split in two)
    assert 30 * 24 <= hour < 30 * 24 * 1.2


def test_dynamic_lookback_delta(answers):
    """At half past an hour a plain selector finds the 1h samples (30 minutes old) only because the
    lookback delta grows with max_source_resolution, as in Thanos."""
    by = {name: got for (name, _, _), (_, got, _) in answers}
    assert len(by[f"instant end-200d+30m [30d] res=1h {M}"]["data"]["result"]) == 5


def test_auto_downsampling_flag(topo):
    """``--query.auto-downsampling`` (step / 5 without max_source_resolution) as Thanos'."""
    end = topo.end
    n = 0
    for step in ("1h", "6h", "1d"):
        for q in (f"count_over_time({M0}[1d])", f"rate({M0}[1d])", M, f"max_over_time({M0}[6h])"):
            p = {"query": q, "start": (end - 60 * D) / 1000, "end": end / 1000, "step": step}
            want = ok(topo.thanos_auto.url, "/api/v1/query_range", p)
            diffs, _ = compare(ok(topo.ours_auto.url, "/api/v1/query_range", p), want)
            assert not diffs, (q, step, diffs[:3])
            n += 1
    # and the flag changes the answer: without it the count is of raw samples
    p = {"query": f"count_over_time({M0}[1d])", "start": (end - 60 * D) / 1000, "end": end / 1000, "step": "1d"}
    auto = ok(topo.ours_auto.url, "/api/v1/query_range", p)["data"]["result"][0]["values"]
    plain = ok(topo.ours.url, "/api/v1/query_range", p)["data"]["result"][0]["values"]
    assert auto != plain


def test_thanos_over_our_querier(topo):
    """A real Thanos querier over our querier's StoreAPI: aggregates and the resolution are passed on,
    so it answers as it does over the store directly."""
    end = topo.end
    for res in ("0s", "5m", "1h"):
        for q in (f"rate({M0}[1d])", f"min_over_time({M0}[6h])", f"sum_over_time({M0}[6h])", f"avg({M})",
                  f"count_over_time({M0}[1d])"):
            p = {"query": q, "start": (end - 30 * D) / 1000, "end": end / 1000, "step": "6h",
                 "max_source_resolution": res}
            want = ok(topo.thanos.url, "/api/v1/query_range", p)
            diffs, _ = compare(ok(topo.stacked.url, "/api/v1/query_range", p), want)
            assert not diffs, (q, res, diffs[:3])
