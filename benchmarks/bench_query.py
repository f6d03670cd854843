"""Querier latency: ``pythanos query`` vs a real ``thanos query`` over the same store.

Set-up (started here, stopped by process id at the end): ``pythanos tools bench-blocks --profile
bench-10k-1d-1metric`` (10 000 series of one metric, ``continuous_app_metric0{__blockgen_target__=
"1".."10000"}``, 24 h at 15 s in twelve 2h blocks, 57.6M samples) in a temporary TSDB dir, one
Prometheus 2.42 on it (retention 10y; min = max block duration 2h so it never compacts under the
benchmark), **our** sidecar in front of it, then our querier and a Thanos querier, both with
``--endpoint=<our sidecar>``: the store is the same, only the querier differs.

Queries, ``x`` = ``continuous_app_metric0`` (all 10k series; ``BENCH_QUERY_SELECTOR``). bench-blocks
series have no ``job`` and no histogram, so both are derived from the target label with
``label_replace`` (same cost on both sides): ``job`` / ``le`` = the target number without its last
two digits, i.e. 99 groups of 100 series (targets 1..99 get no such label: one more group, and no
bucket for ``histogram_quantile``, which skips them as Prometheus does):

* ``sum``   ``sum by (job) (label_replace(rate(x[5m]), "job", ...))``, range over the 24 h, step 60 s
* ``hq``    ``histogram_quantile(0.9, sum by (le) (label_replace(rate(x[5m]), "le", ...)))``, same range
* ``topk``  ``topk(10, x)``, same range
* ``sel1h`` ``x[1h]`` instant at the end of the data (10k series x 240 samples)

Each query: one warm-up on each querier whose answers must agree (same series, same timestamps,
values equal within 1e-6 relative, so a wrong answer is never benchmarked), then ``RUNS``
alternating timed HTTP GETs (whole response body read). Figures per query: median seconds of each
and ``query.<q>.ratio_ours_over_thanos`` (<= 1.0 is the goal); then each querier's peak RSS
(``VmHWM`` of the process after all queries).

``BENCH_QUERY_RUNS`` (default 3), ``BENCH_QUERY_SELECTOR``, ``BENCH_QUERY_STEP`` (default 60s),
``BENCH_QUERY_ONLY`` (comma-separated query names), ``BENCH_QUERY_PROFILE``, ``BENCH_QUERY_TSDB``
(reuse an existing bench-blocks dir instead of generating one; it is not removed).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sidecar import _binary, _peers_dir, _Procs, _ports  # noqa: E402

PROFILE = os.environ.get("BENCH_QUERY_PROFILE", "bench-10k-1d-1metric")
RUNS = int(os.environ.get("BENCH_QUERY_RUNS", "3"))
SELECTOR = os.environ.get("BENCH_QUERY_SELECTOR", "continuous_app_metric0")
STEP = os.environ.get("BENCH_QUERY_STEP", "60")
ONLY = [s for s in os.environ.get("BENCH_QUERY_ONLY", "").split(",") if s]
HTTP_TIMEOUT = 600

def queries(x: str) -> list[tuple[str, str, bool]]:
    """(name, PromQL, range?)"""
    job = f'label_replace(rate({x}[5m]), "job", "$1", "__blockgen_target__", "(.+)..")'
    le = f'label_replace(rate({x}[5m]), "le", "$1", "__blockgen_target__", "(.+)..")'
    return [
        ("sum", f"sum by (job) ({job})", True),
        ("hq", f"histogram_quantile(0.9, sum by (le) ({le}))", True),
        ("topk", f"topk(10, {x})", True),
        ("sel1h", f"{x}[1h]", False),
    ]


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{url[:200]}: HTTP {e.code}: {e.read()[:500]!r}") from None


def _timed(url: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    body = _get(url)
    return time.perf_counter() - t0, body


def _data_range(tsdb: Path) -> tuple[int, int]:
    mins, maxs = [], []
    for meta in tsdb.glob("*/meta.json"):
        m = json.loads(meta.read_text())
        mins.append(m["minTime"])
        maxs.append(m["maxTime"])
    return min(mins), max(maxs)


def _canon(body: bytes) -> tuple[str, dict]:
    doc = json.loads(body)
    if doc.get("status") != "success":
        raise RuntimeError(f"query failed: {body[:500]!r}")
    d = doc["data"]
    out = {}
    for s in d["result"]:
        key = tuple(sorted(s["metric"].items()))
        pts = s["values"] if "values" in s else [s["value"]]
        out[key] = ([float(t) for t, _ in pts], [float(v) for _, v in pts])
    return d["resultType"], out


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def _compare(name: str, ours: bytes, theirs: bytes) -> tuple[int, int, int]:
    """(series, points, points whose values differ): series, timestamps and values (1e-6
    relative) must all be equal, so a figure is never taken of a wrong answer."""
    (rt_o, o), (rt_t, t) = _canon(ours), _canon(theirs)
    if rt_o != rt_t:
        raise RuntimeError(f"{name}: result type ours {rt_o} thanos {rt_t}")
    if o.keys() != t.keys():
        raise RuntimeError(f"{name}: series differ: ours {len(o)} thanos {len(t)}; only ours "
                           f"{list(o.keys() - t.keys())[:3]}, only thanos {list(t.keys() - o.keys())[:3]}")
    points = bad = 0
    example = None
    for k, (ts_o, vs_o) in o.items():
        ts_t, vs_t = t[k]
        if ts_o != ts_t:
            raise RuntimeError(f"{name}: timestamps differ for {k}: ours {len(ts_o)} thanos {len(ts_t)}")
        points += len(vs_o)
        for ts, a, b in zip(ts_o, vs_o, vs_t):
            if not _close(a, b):
                bad += 1
                example = example or (k, ts, a, b)
    if bad:
        raise RuntimeError(f"{name}: {bad} of {points} values differ, e.g. {example}")
    return len(o), points, bad
def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _wait_store(url: str, probe: str, deadline: float) -> None:
    """Until the querier has discovered the store and answers with data."""
    while time.monotonic() < deadline:
        try:
            doc = json.loads(_get(url + "/api/v1/query?" + urllib.parse.urlencode({"query": probe})))
            if doc.get("status") == "success" and doc["data"]["result"]:
                return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.5)
    raise RuntimeError(f"querier at {url} never saw the store")


def run() -> list[tuple[str, float, str]]:
    prometheus = _binary("/usr/bin/prometheus", "prometheus")
    thanos = _binary(_peers_dir() / "bin" / "thanos")
    pythanos = _binary(Path(sys.executable).parent / "pythanos", "pythanos")
    work = Path(tempfile.mkdtemp(prefix="bench-query-"))
    procs = _Procs(work)
    try:
        if os.environ.get("BENCH_QUERY_TSDB"):
            tsdb = Path(os.environ["BENCH_QUERY_TSDB"])
        else:
            tsdb = work / "tsdb"
            subprocess.run([pythanos, "tools", "bench-blocks", "--profile", PROFILE, f"--output.dir={tsdb}",
                            "--log.level=warn"], check=True)
        mint, maxt = _data_range(tsdb)
        prom_port, s_grpc, s_http, o_grpc, o_http, t_grpc, t_http = _ports(7)
        cfg = work / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1h\n  external_labels:\n    cluster: bench\n    replica: '0'\n")
        prom = procs.start("prometheus", [prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={tsdb}",
                                          f"--web.listen-address=127.0.0.1:{prom_port}",
                                          "--storage.tsdb.retention.time=10y",
                                          "--storage.tsdb.min-block-duration=2h",
                                          "--storage.tsdb.max-block-duration=2h"])
        prom_url = f"http://127.0.0.1:{prom_port}"
        procs.wait(prom, prom_url + "/-/ready")
        sidecar = procs.start("pythanos-sidecar", [pythanos, "sidecar", f"--prometheus.url={prom_url}",
                                                   f"--grpc-address=127.0.0.1:{s_grpc}",
                                                   f"--http-address=127.0.0.1:{s_http}", f"--tsdb.path={tsdb}",
                                                   "--log.level=warn"])
        procs.wait(sidecar, f"http://127.0.0.1:{s_http}/-/ready")
        store = f"127.0.0.1:{s_grpc}"
        ours = procs.start("pythanos-query", [pythanos, "query",
                                              f"--endpoint={store}",
                                              f"--grpc-address=127.0.0.1:{o_grpc}",
                                              f"--http-address=127.0.0.1:{o_http}", "--log.level=warn"])
        theirs = procs.start("thanos-query", [thanos, "query", f"--endpoint={store}",
                                              f"--grpc-address=127.0.0.1:{t_grpc}",
                                              f"--http-address=127.0.0.1:{t_http}", "--log.level=warn"])
        urls = {"ours": f"http://127.0.0.1:{o_http}", "thanos": f"http://127.0.0.1:{t_http}"}
        pids = {"ours": ours.pid, "thanos": theirs.pid}
        procs.wait(ours, urls["ours"] + "/-/ready")
        procs.wait(theirs, urls["thanos"] + "/-/ready")
        probe = f"count(continuous_app_metric0 @ {(maxt - 1) / 1000:.3f})"
        deadline = time.monotonic() + 120
        for u in urls.values():
            _wait_store(u, probe, deadline)
        base_rss = {who: _status_kb(pid, "VmRSS") for who, pid in pids.items()}

        start_s, end_s = mint / 1000, (maxt - 1) / 1000
        out: list[tuple[str, float, str]] = []
        for name, q, is_range in queries(SELECTOR):
            if ONLY and name not in ONLY:
                continue
            if is_range:
                path = "/api/v1/query_range?" + urllib.parse.urlencode(
                    {"query": q, "start": f"{start_s:.3f}", "end": f"{end_s:.3f}", "step": STEP})
            else:
                path = "/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": f"{end_s:.3f}"})
            warm = {who: _get(u + path) for who, u in urls.items()}
            nseries, npoints, nbad = _compare(name, warm["ours"], warm["thanos"])
            del warm
            times: dict[str, list[float]] = {"ours": [], "thanos": []}
            for i in range(RUNS):
                order = ("ours", "thanos") if i % 2 == 0 else ("thanos", "ours")
                for who in order:
                    dt, _ = _timed(urls[who] + path)
                    times[who].append(dt)
            med = {who: statistics.median(ts) for who, ts in times.items()}
            for who in ("ours", "thanos"):
                out.append((f"query.{name}.{who}.seconds", med[who],
                            f"s (median of {RUNS}, {nseries} series out)"))
            out.append((f"query.{name}.ratio_ours_over_thanos", med["ours"] / med["thanos"],
                        "x (<= 1.0 is the goal)"))
            out.append((f"query.{name}.points_differing", nbad, f"of {npoints} points out"))
        for who, pid in pids.items():
            out.append((f"query.{who}.peak_rss_mb", _status_kb(pid, "VmHWM") / 1024,
                        f"MB (VmHWM; {base_rss[who] / 1024:.0f} MB after start-up)"))
        return out
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name:<45} {value:>12.4g} {unit}")
