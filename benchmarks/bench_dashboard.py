"""The querier under dashboard load: many small concurrent queries, ours vs a real ``thanos query``.

Two data sets, each with both queriers started over the same stores (the store is ours; only the
querier differs):

* ``course``: the course topology of ``make quickstart`` (three Prometheus: ``cluster=eu1`` replica 0,
  ``cluster=us1`` replicas 0 and 1, each with our sidecar, scraping themselves and the sidecars).
  Scrapes run every 5 s (``BENCH_DASH_SCRAPE``) for ``BENCH_DASH_WARM`` seconds (default 150)
  before the load: the last 10 minutes then hold as many samples as 7.5 minutes of the course's
  15 s scrapes.
  Both queriers get ``--query.replica-label=replica``.
* ``bench10k``: ``bench-10k-1d-1metric`` (10 000 series of one metric, 24 h at 15 s) in one
  Prometheus with our sidecar; "now" is the end of the data.

The dashboard: six range queries over the last 10 minutes at step 15 s, replayed in turn by every
client: ``sum(rate)``, ``sum by (handler|job) (rate)``, ``histogram_quantile`` over buckets, a raw
selector, ``topk`` and ``up``/``count``. Before any load each query's answers from the two
queriers must be equal (series, timestamps, values within 1e-6 relative).

Load: Debian's ``wrk`` (one connection per client, keep-alive, as Grafana's) for
``BENCH_DASH_SECONDS`` (default 15) per level at 1, 4, 20 and 100 clients (``BENCH_DASH_CLIENTS``),
ours and Thanos alternately; then the same at 20 clients with each querier pinned to one core
(``taskset``; our querier then runs one worker, as its default follows the cores it may use).
Figures per level: requests/s, p50 and p99 latency (ms), errors (socket errors, timeouts and
non-2xx answers), and for each querier the RSS of all its processes after the load and ratio
lines ours/Thanos (throughput: >= 1.0 is the goal; p99: <= 1.0 is the goal).

``BENCH_DASH_SETS`` (comma-separated: course,bench10k), ``BENCH_DASH_WORKERS`` (our
``--query.workers``; default: ours picks), ``BENCH_DASH_TSDB`` (reuse a bench-blocks dir).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query import _compare, _data_range, _get, _wait_store  # noqa: E402
from bench_sidecar import _binary, _peers_dir, _Procs, _ports  # noqa: E402

SECONDS = int(os.environ.get("BENCH_DASH_SECONDS", "15"))
WARM = int(os.environ.get("BENCH_DASH_WARM", "150"))
SCRAPE = os.environ.get("BENCH_DASH_SCRAPE", "5s")
CLIENTS = [int(c) for c in os.environ.get("BENCH_DASH_CLIENTS", "1,4,20,100").split(",") if c]
SETS = [s for s in os.environ.get("BENCH_DASH_SETS", "course,bench10k").split(",") if s]
WORKERS = os.environ.get("BENCH_DASH_WORKERS", "")
RANGE_S = 600
STEP_S = 15

# done() prints wrk's figures as one JSON line (latencies in microseconds)
WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests":%d,"duration_us":%d,"p50":%d,"p99":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""



def wrk_script(items: list[str], request: str = 'return wrk.format("GET", item)') -> str:
    """A wrk script whose threads take ``items`` in turn, each from its own offset: ``request`` (Lua)
    turns ``item`` into the request; :data:`WRK_DONE` prints the figures."""
    return ("local items = {" + ",".join(json.dumps(x) for x in items) + "}\n"
            "local i = 0\nlocal counter = 0\n"
            'setup = function(thread) counter = counter + 1; thread:set("offset", counter) end\n'
            "init = function(args) i = tonumber(offset) or 0 end\n"
            "request = function()\n  i = i + 1\n  local item = items[(i % #items) + 1]\n"
            f"  {request}\nend\n" + WRK_DONE)


def course_queries() -> list[str]:
    r = "rate(prometheus_http_requests_total[5m])"
    return [
        f"sum({r})",
        f"sum by (handler) ({r})",
        "histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[5m])))",
        "prometheus_tsdb_head_series",
        "topk(5, rate(prometheus_tsdb_head_samples_appended_total[1m]))",
        "up",
    ]


def bench10k_queries() -> list[str]:
    x = "continuous_app_metric0"
    few = f'{x}{{__blockgen_target__=~"1.."}}'  # 100 series
    return [
        f"sum(rate({few}[5m]))",
        f'sum by (job) (label_replace(rate({few}[5m]), "job", "$1", "__blockgen_target__", "(.+)."))',
        f'histogram_quantile(0.9, sum by (le) (label_replace(rate({few}[5m]), "le", "$1", '
        f'"__blockgen_target__", "(.+).")))',
        f'{x}{{__blockgen_target__="42"}}',
        f"topk(5, {few})",
        f"count({few})",
    ]


def _paths(queries: list[str], end_s: float) -> list[str]:
    return ["/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": q, "start": f"{end_s - RANGE_S:.3f}", "end": f"{end_s:.3f}", "step": str(STEP_S)})
        for q in queries]


def _tree_rss_kb(pid: int) -> list[int]:
    """VmRSS of a process and of each of its descendants (kB), the process first."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out.append(int(line.split()[1]))
            for t in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (t / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def _wrk(wrk: str, url: str, paths: list[str], clients: int, script: Path) -> dict:
    script.write_text(wrk_script(paths))
    return wrk_result(subprocess.run(wrk_args(wrk, url, clients, SECONDS, script), capture_output=True,
                                     text=True, check=True).stdout)


def wrk_args(wrk: str, url: str, clients: int, seconds: int, script: Path) -> list[str]:
    """wrk with one keep-alive connection per client (as Grafana's), two threads at most."""
    return [wrk, f"-t{min(clients, 2)}", f"-c{clients}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), url]


def wrk_result(out: str) -> dict:
    """The figures :data:`WRK_DONE` printed, with ``rps`` and ``errors`` (socket errors, timeouts
    and non-2xx answers) added."""
    m = re.search(r"^RESULT (.*)$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no result: {out[-1000:]}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return r


def start_ours(procs: _Procs, pythanos: str, stores: list[str], extra: list[str], tag: str,
               pre: list[str] = ()) -> tuple[str, object]:
    """Our querier over ``stores`` (``--query.workers`` from BENCH_DASH_WORKERS, else its default),
    ready; its URL and process."""
    grpc, http = _ports(2)
    args = [*pre, pythanos, "query", *[f"--endpoint={s}" for s in stores], *extra, f"--grpc-address=127.0.0.1:{grpc}",
            f"--http-address=127.0.0.1:{http}", "--log.level=warn"]
    if WORKERS:
        args.append(f"--query.workers={WORKERS}")
    p = procs.start(f"pythanos-query-{tag}", args)
    url = f"http://127.0.0.1:{http}"
    procs.wait(p, url + "/-/ready")
    return url, p


def _start_queriers(procs: _Procs, pythanos: str, thanos: str, stores: list[str], extra: list[str],
                    pin: bool, tag: str) -> tuple[dict, dict]:
    t_grpc, t_http = _ports(2)
    pre = ["taskset", "-c", "0"] if pin else []
    ours_url, ours = start_ours(procs, pythanos, stores, extra, tag, pre)
    theirs = procs.start(f"thanos-query-{tag}", [*pre, thanos, "query", *[f"--endpoint={s}" for s in stores], *extra,
                                                 f"--grpc-address=127.0.0.1:{t_grpc}",
                                                 f"--http-address=127.0.0.1:{t_http}", "--log.level=warn"])
    urls = {"ours": ours_url, "thanos": f"http://127.0.0.1:{t_http}"}
    procs.wait(theirs, urls["thanos"] + "/-/ready")
    return urls, {"ours": ours, "thanos": theirs}


def _stop(p) -> None:
    import signal

    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass


def _load(out: list, wrk: str, work: Path, set_name: str, procs: _Procs, pythanos: str, thanos: str,
          stores: list[str], extra: list[str], probe: str, paths: list[str]) -> None:
    for pin, levels in ((False, CLIENTS), (True, [20])):
        tag = f"{set_name}{'-pinned' if pin else ''}"
        urls, ps = _start_queriers(procs, pythanos, thanos, stores, extra, pin, tag)
        deadline = time.monotonic() + 120
        for u in urls.values():
            _wait_store(u, probe, deadline)
        for i, path in enumerate(paths):
            _compare(f"{set_name}.q{i}", _get(urls["ours"] + path), _get(urls["thanos"] + path))
        for c in levels:
            res = {}
            order = ("ours", "thanos") if c % 2 == 0 else ("thanos", "ours")
            for who in order:
                res[who] = _wrk(wrk, urls[who], paths, c, work / "dash.lua")
            name = f"dashboard.{tag}.c{c}"
            for who in ("ours", "thanos"):
                r = res[who]
                out.append((f"{name}.{who}.rps", r["rps"],
                            f"req/s  p50 {r['p50'] / 1000:.1f} ms  p99 {r['p99'] / 1000:.1f} ms  "
                            f"errors {r['errors']}"))
            out.append((f"{name}.ratio_rps_ours_over_thanos", res["ours"]["rps"] / res["thanos"]["rps"],
                        "x (>= 1.0 is the goal)"))
            out.append((f"{name}.ratio_p99_ours_over_thanos", res["ours"]["p99"] / max(1, res["thanos"]["p99"]),
                        "x (<= 1.0 is the goal)"))
            out.append((f"{name}.errors", res["ours"]["errors"] + res["thanos"]["errors"], "ours + thanos (goal 0)"))
        for who in ("ours", "thanos"):
            rss = _tree_rss_kb(ps[who].pid)
            detail = "one process" if len(rss) == 1 else \
                f"supervisor {rss[0] / 1024:.0f} MB + {len(rss) - 1} workers of at most {max(rss[1:]) / 1024:.0f} MB"
            out.append((f"dashboard.{tag}.{who}.rss_mb", sum(rss) / 1024,
                        f"MB (all its processes after the load: {detail})"))
        for p in ps.values():
            _stop(p)


def _prometheus(procs: _Procs, prometheus: str, work: Path, name: str, cfg: str, tsdb: Path,
                port: int) -> str:
    (work / f"{name}.yml").write_text(cfg)
    p = procs.start(name, [prometheus, f"--config.file={work / f'{name}.yml'}", f"--storage.tsdb.path={tsdb}",
                           f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=10y",
                           "--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h"])
    url = f"http://127.0.0.1:{port}"
    procs.wait(p, url + "/-/ready")
    return url


def _sidecar(procs: _Procs, pythanos: str, name: str, prom_url: str, tsdb: Path) -> str:
    grpc, http = _ports(2)
    p = procs.start(name, [pythanos, "sidecar", f"--prometheus.url={prom_url}", f"--grpc-address=127.0.0.1:{grpc}",
                           f"--http-address=127.0.0.1:{http}", f"--tsdb.path={tsdb}", "--log.level=warn"])
    procs.wait(p, f"http://127.0.0.1:{http}/-/ready")
    return f"127.0.0.1:{grpc}"


def _course(out: list, wrk: str, work: Path, procs: _Procs, prometheus: str, pythanos: str, thanos: str) -> None:
    stores = course_stores(work, procs, prometheus, pythanos)
    end_s = time.time()
    _load(out, wrk, work, "course", procs, pythanos, thanos, stores, COURSE_QUERIER_FLAGS,
          "count(up)", _paths(course_queries(), end_s))


#: what both queriers get over the course topology
COURSE_QUERIER_FLAGS = ["--query.replica-label=replica"]


def course_stores(work: Path, procs: _Procs, prometheus: str, pythanos: str) -> list[str]:
    """The course topology (see the module doc), its scrapes run for ``WARM`` seconds: the gRPC
    addresses of its three sidecars."""
    servers = [("eu1", 0), ("us1", 0), ("us1", 1)]
    ports = _ports(len(servers))
    stores = []
    for i, (cluster, replica) in enumerate(servers):
        same = [p for (c, _), p in zip(servers, ports) if c == cluster]
        targets = ",".join(f"'127.0.0.1:{p}'" for p in same)
        cfg = (f"global:\n  scrape_interval: {SCRAPE}\n  external_labels:\n    cluster: {cluster}\n"
               f"    replica: '{replica}'\nscrape_configs:\n  - job_name: prometheus\n"
               f"    static_configs:\n      - targets: [{targets}]\n")
        url = _prometheus(procs, prometheus, work, f"prom-{cluster}-{replica}", cfg, work / f"tsdb-{i}", ports[i])
        stores.append(_sidecar(procs, pythanos, f"sidecar-{cluster}-{replica}", url, work / f"tsdb-{i}"))
    time.sleep(WARM)  # the scrapes accumulate the data the dashboard reads (a benchmark, not a test)
    return stores


def _bench10k(out: list, wrk: str, work: Path, procs: _Procs, prometheus: str, pythanos: str, thanos: str) -> None:
    if os.environ.get("BENCH_DASH_TSDB"):
        tsdb = Path(os.environ["BENCH_DASH_TSDB"])
    else:
        tsdb = work / "tsdb-10k"
        subprocess.run([pythanos, "tools", "bench-blocks", "--profile", "bench-10k-1d-1metric",
                        f"--output.dir={tsdb}", "--log.level=warn"], check=True)
    mint, maxt = _data_range(tsdb)
    (port,) = _ports(1)
    cfg = "global:\n  scrape_interval: 1h\n  external_labels:\n    cluster: bench\n    replica: '0'\n"
    url = _prometheus(procs, prometheus, work, "prom-10k", cfg, tsdb, port)
    store = _sidecar(procs, pythanos, "sidecar-10k", url, tsdb)
    end_s = (maxt - 1) / 1000
    _load(out, wrk, work, "bench10k", procs, pythanos, thanos, [store], [],
          f"count(continuous_app_metric0 @ {end_s:.3f})", _paths(bench10k_queries(), end_s))


def run() -> list[tuple[str, float, str]]:
    prometheus = _binary("/usr/bin/prometheus", "prometheus")
    thanos = _binary(_peers_dir() / "bin" / "thanos")
    pythanos = _binary(Path(sys.executable).parent / "pythanos", "pythanos")
    wrk = _binary("wrk", "/usr/bin/wrk")
    out: list[tuple[str, float, str]] = []
    for name, fn in (("course", _course), ("bench10k", _bench10k)):
        if name not in SETS:
            continue
        work = Path(tempfile.mkdtemp(prefix=f"bench-dash-{name}-"))
        procs = _Procs(work)
        try:
            fn(out, wrk, work, procs, prometheus, pythanos, thanos)
        finally:
            procs.stop()
            shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name:<52} {value:>10.4g} {unit}")
