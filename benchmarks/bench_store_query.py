"""Downsampled reads end to end: ``pythanos query`` over ``pythanos store`` vs ``thanos query`` over
``thanos store``, each path its own kind, on the same bucket.

Set-up (started here, stopped by process id at the end; 127.0.0.1 only): a FILESYSTEM bucket with a
year of ``bench-blocks --profile continuous-365d-tiny`` (5 series, 15 s), compacted and downsampled by
a real ``thanos compact`` (raw, 5m and 1h blocks); our store and querier, Thanos' store and querier.

Query: ``sum by (__name__) (rate(continuous_app_metric0[5m]))`` as a range over the 30 days before
the end of the data, step 1 h, with ``--query.auto-downsampling`` on both queriers (so the 5m blocks
answer), and the same over the whole year at step 1 d. Both answers are compared first (same series
and timestamps, values within 1e-9 relative); then ``BENCH_STORE_QUERY_RUNS`` (default 5) alternating
timed HTTP GETs. Figures: median seconds of each and ``store_query.<q>.ratio_ours_over_thanos``.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sidecar import _binary, _peers_dir, _Procs, _ports  # noqa: E402

RUNS = int(os.environ.get("BENCH_STORE_QUERY_RUNS", "5"))
DAY = 86400


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=600) as r:
        return r.read()


def _stores_healthy(url: str) -> bool:
    try:
        doc = json.loads(_get(url + "/api/v1/stores"))
    except OSError:
        return False
    return any(not s.get("lastError") for g in doc.get("data", {}).values() for s in g)


def _same(a: dict, b: dict) -> bool:
    ra = {json.dumps(r["metric"], sort_keys=True): r["values"] for r in a["data"]["result"]}
    rb = {json.dumps(r["metric"], sort_keys=True): r["values"] for r in b["data"]["result"]}
    if ra.keys() != rb.keys():
        return False
    for k, va in ra.items():
        vb = rb[k]
        if [p[0] for p in va] != [p[0] for p in vb]:
            return False
        for (_, x), (_, y) in zip(va, vb):
            fx, fy = float(x), float(y)
            if x != y and not (math.isnan(fx) and math.isnan(fy)) and not math.isclose(fx, fy, rel_tol=1e-9):
                return False
    return True


def run() -> list[tuple[str, object, str]]:
    root = Path(__file__).resolve().parent.parent
    pythanos = _binary(root / ".venv" / "bin" / "pythanos", "pythanos")
    thanos = _binary(_peers_dir() / "bin" / "thanos")
    out: list[tuple[str, object, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-store-query-") as tmp:
        work = Path(tmp)
        bucket = work / "bucket"
        subprocess.run([pythanos, "tools", "bench-blocks", "--profile", "continuous-365d-tiny", "--labels",
                        'cluster="eu1"', "--max-time", "2025-03-01T00:00:00Z", "--output.dir", str(bucket)],
                       check=True, capture_output=True, timeout=900)
        objstore = f"{{type: FILESYSTEM, config: {{directory: {bucket}}}}}"
        subprocess.run([thanos, "compact", f"--data-dir={work / 'compact'}", f"--objstore.config={objstore}",
                        "--consistency-delay=0s", "--delete-delay=0s", "--http-address=127.0.0.1:0"],
                       check=True, capture_output=True, timeout=1800)
        end = max(json.loads(m.read_text())["maxTime"] for m in bucket.glob("*/meta.json")) // 1000
        procs = _Procs(work)
        try:
            urls = {}
            for who, binary in (("ours", pythanos), ("thanos", thanos)):
                sh, sg, qh, qg = _ports(4)
                st = procs.start(f"{who}-store", [binary, "store", f"--data-dir={work / (who + '-data')}",
                                                  f"--objstore.config={objstore}", f"--http-address=127.0.0.1:{sh}",
                                                  f"--grpc-address=127.0.0.1:{sg}"])
                procs.wait(st, f"http://127.0.0.1:{sh}/-/ready")
                q = procs.start(f"{who}-query", [binary, "query", f"--http-address=127.0.0.1:{qh}",
                                                 f"--grpc-address=127.0.0.1:{qg}", f"--endpoint=127.0.0.1:{sg}",
                                                 "--query.auto-downsampling"])
                url = f"http://127.0.0.1:{qh}"
                procs.wait(q, url + "/-/ready")
                deadline = time.monotonic() + 120
                while not _stores_healthy(url) and time.monotonic() < deadline:
                    time.sleep(0.2)
                urls[who] = url
            expr = "sum by (__name__) (rate(continuous_app_metric0[5m]))"
            cases = {"30d_step1h": {"query": expr, "start": end - 30 * DAY, "end": end, "step": 3600},
                     "365d_step1d": {"query": expr, "start": end - 365 * DAY, "end": end, "step": DAY}}
            for name, params in cases.items():
                path = "/api/v1/query_range?" + urllib.parse.urlencode(params)
                answers = {who: json.loads(_get(u + path)) for who, u in urls.items()}
                if not _same(answers["ours"], answers["thanos"]):
                    print(f"store_query.{name}: answers differ", file=sys.stderr)
                    out.append((f"store_query.{name}.MISMATCH", 1, "answers differ"))
                times: dict[str, list[float]] = {"ours": [], "thanos": []}
                for _ in range(RUNS):
                    for who, u in urls.items():
                        t0 = time.perf_counter()
                        _get(u + path)
                        times[who].append(time.perf_counter() - t0)
                med = {who: statistics.median(v) for who, v in times.items()}
                out += [(f"store_query.{name}.ours.seconds", med["ours"], f"s (median of {RUNS})"),
                        (f"store_query.{name}.thanos.seconds", med["thanos"], f"s (median of {RUNS})"),
                        (f"store_query.{name}.ratio_ours_over_thanos", med["ours"] / med["thanos"], "x")]
        finally:
            procs.stop()
    return out
