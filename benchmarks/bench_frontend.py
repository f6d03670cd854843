"""A dashboard through the query frontend: ``pythanos query-frontend`` vs a real ``thanos
query-frontend`` v0.42.4, both in front of the same querier.

Set-up (started here, stopped by process id at the end; 127.0.0.1 only): a FILESYSTEM bucket with
``bench-blocks --profile bench-10k-14d`` (10k series, 100 targets x 100 metrics, 60 s, two weeks;
``BENCH_FRONTEND_BLOCKS=DIR`` keeps/reuses it), a real ``thanos store`` and ``thanos query`` over it
(the same downstream for both frontends, so the figure is the frontends' own), each frontend with an
IN-MEMORY results cache of 512 MB and the default day split.

The dashboard: 8 range queries over the 7 days before the end of the data, step 10 min, fired at
once as a dashboard loads them. First the querier answers them once directly (so both frontends
find the store's caches equally warm), then per frontend: ``cold`` (an empty results cache: every
day piece asked downstream), then ``warm`` (the same again, from the cache), median of
``BENCH_FRONTEND_RUNS`` (default 3) loads. The two frontends' answers are compared (same series
and timestamps, values within 1e-9 relative; a difference is a ``MISMATCH`` figure): both ask the
querier for the same day pieces, whose rates may differ from a 7-day query's in the last digits.
The range ends now (a dashboard's "last 7 days"), so the newest minute is asked again every time;
``BENCH_FRONTEND_AGO=<seconds>`` ends it that long before now (all of it cacheable).
Figures: seconds until the whole dashboard has loaded, cold and warm, per frontend; peak RSS
(VmHWM); ratios ours/Thanos (goal <= 1.0) and cold/warm per frontend (goal >= 10).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sidecar import _binary, _peers_dir, _Procs, _ports  # noqa: E402
from bench_store_query import _same  # noqa: E402

RUNS = int(os.environ.get("BENCH_FRONTEND_RUNS", "3"))
DAY = 86400
STEP = 600
DASHBOARD = [
    "sum(rate(continuous_app_metric0[5m]))",
    "sum by (__blockgen_target__) (rate(continuous_app_metric1[5m]))",
    "max(continuous_app_metric2)",
    "avg(continuous_app_metric3)",
    "topk(5, continuous_app_metric4)",
    "count(continuous_app_metric5 > 100000000)",
    "quantile(0.9, continuous_app_metric6)",
    "sum(increase(continuous_app_metric7[1h]))",
]
CACHE = "{type: IN-MEMORY, config: {max_size: 512MB}}"


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=600) as r:
        return r.read()


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _load(base: str, paths: list[str]) -> tuple[float, list[bytes]]:
    """Every panel at once; seconds until the last answer is in."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(paths)) as ex:
        bodies = list(ex.map(lambda p: _get(base + p), paths))
    return time.perf_counter() - t0, bodies


def _blocks(pythanos: str, work: Path) -> Path:
    keep = os.environ.get("BENCH_FRONTEND_BLOCKS")
    bucket = Path(keep) if keep else work / "bucket"
    if not (bucket.exists() and any(bucket.glob("*/meta.json"))):
        subprocess.run([pythanos, "tools", "bench-blocks", "--profile", "bench-10k-14d", "--labels", 'cluster="eu1"',
                        "--output.dir", str(bucket)], check=True, capture_output=True, timeout=3600)
    return bucket


def run() -> list[tuple[str, object, str]]:
    root = Path(__file__).resolve().parent.parent
    pythanos = _binary(root / ".venv" / "bin" / "pythanos", "pythanos")
    thanos = _binary(_peers_dir() / "bin" / "thanos")
    out: list[tuple[str, object, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-frontend-") as tmp:
        work = Path(tmp)
        bucket = _blocks(pythanos, work)
        objstore = f"{{type: FILESYSTEM, config: {{directory: {bucket}}}}}"
        data_end = max(json.loads(m.read_text())["maxTime"] for m in bucket.glob("*/meta.json")) // 1000
        end = (min(data_end, int(time.time())) - int(os.environ.get("BENCH_FRONTEND_AGO", "0"))) // STEP * STEP
        procs = _Procs(work)
        try:
            sh, sg, qh, qg = _ports(4)
            st = procs.start("thanos-store", [thanos, "store", f"--data-dir={work / 'store'}",
                                              f"--objstore.config={objstore}", f"--http-address=127.0.0.1:{sh}",
                                              f"--grpc-address=127.0.0.1:{sg}"])
            procs.wait(st, f"http://127.0.0.1:{sh}/-/ready")
            q = procs.start("thanos-query", [thanos, "query", f"--http-address=127.0.0.1:{qh}",
                                             f"--grpc-address=127.0.0.1:{qg}", f"--endpoint=127.0.0.1:{sg}"])
            querier = f"http://127.0.0.1:{qh}"
            procs.wait(q, querier + "/-/ready")
            paths = ["/api/v1/query_range?" + urllib.parse.urlencode(
                {"query": expr, "start": end - 7 * DAY, "end": end, "step": STEP}) for expr in DASHBOARD]
            deadline = time.monotonic() + 300
            while True:  # until the store is discovered and answers
                try:
                    if json.loads(_get(querier + paths[2]))["data"]["result"]:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the querier gave no data")
                time.sleep(0.5)
            direct_s, direct = _load(querier, paths)
            out.append(("frontend.querier_direct.seconds", direct_s, "s (the dashboard straight from the querier)"))
            fronts = {}
            for who, binary in (("ours", pythanos), ("thanos", thanos)):
                (fh,) = _ports(1)
                p = procs.start(f"{who}-frontend", [binary, "query-frontend", f"--http-address=127.0.0.1:{fh}",
                                                    f"--query-frontend.downstream-url={querier}",
                                                    f"--query-range.response-cache-config={CACHE}"])
                procs.wait(p, f"http://127.0.0.1:{fh}/-/ready")
                fronts[who] = (p, f"http://127.0.0.1:{fh}")
            res: dict[str, dict[str, float]] = {}
            answers: dict[str, list[bytes]] = {}
            for who, (p, url) in fronts.items():
                cold, answers[who] = _load(url, paths)
                warm = statistics.median(_load(url, paths)[0] for _ in range(RUNS))
                res[who] = {"cold": cold, "warm": warm, "rss": _hwm_mb(p.pid)}
                out += [(f"frontend.{who}.cold.seconds", cold, "s (empty results cache)"),
                        (f"frontend.{who}.warm.seconds", warm, f"s (median of {RUNS}, from the cache)"),
                        (f"frontend.{who}.cold_over_warm", cold / warm, "x (goal >= 10)"),
                        (f"frontend.{who}.peak_rss", res[who]["rss"], "MB (VmHWM)")]
            # both frontends ask the querier for the same day pieces, so their answers must agree (a
            # piece's rate may differ in its last digits from the same step in a 7-day query)
            for i, (a, b) in enumerate(zip(answers["ours"], answers["thanos"])):
                if not _same(json.loads(a), json.loads(b)):
                    out.append((f"frontend.panel{i}.MISMATCH", 1, "our frontend's answer differs from Thanos'"))
            for k in ("cold", "warm", "rss"):
                out.append((f"frontend.ratio_{k}", res["ours"][k] / res["thanos"][k], "x ours/Thanos (goal <= 1.0)"))
        finally:
            procs.stop()
    return out
