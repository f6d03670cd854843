"""Soak: our querier under a steady dashboard load for a long time, over the course topology.

The topology and the dashboard are those of :mod:`bench_dashboard` (three Prometheus, our sidecars,
``--query.replica-label=replica``; the six dashboard range queries over the last 10 minutes at step
15 s); only our querier is started (its default ``--query.workers``, or ``BENCH_DASH_WORKERS``).
``SOAK_CLIENTS`` (default 50) keep-alive clients (Debian's ``wrk``) send the queries in turn for
``SOAK_DURATION`` (default ``10m``; ``90s``, ``1h`` ...; or ``--duration`` when run directly), each
request's window ending at the time it is sent, as a dashboard that refreshes. Every query must
answer with data before the load starts.

Figures: requests and requests/s, errors (non-2xx answers, and socket errors and timeouts; the goal
is 0), p50 and p99 latency (ms; the machine is shared, so approximate), the RSS of the querier (all
its processes) when the load starts, one minute in (after its pools and caches have filled) and at
the end, its growth in % from both (the goal is <= 10 %), and the RSS sampled every
``SOAK_SAMPLE`` seconds (default: 20 samples over the run).
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
from bench_dashboard import (COURSE_QUERIER_FLAGS, RANGE_S, STEP_S, _paths, _tree_rss_kb, course_queries,  # noqa: E402
                             course_stores, start_ours, wrk_args, wrk_result, wrk_script)
from bench_query import _get, _wait_store  # noqa: E402
from bench_sidecar import _binary, _Procs  # noqa: E402

CLIENTS = int(os.environ.get("SOAK_CLIENTS", "50"))
WARMUP_S = 60  # RSS growth is also given from this far into the load

# every request's window ends when it is sent
REQUEST = ('local t = os.time()\n  return wrk.format("GET", "/api/v1/query_range?query=" .. item .. '
           f'"&start=" .. (t - {RANGE_S}) .. "&end=" .. t .. "&step={STEP_S}")')


def parse_duration(text: str) -> int:
    """Seconds of ``10m``, ``90s``, ``1h``, ``1h30m`` or a plain number of seconds."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    parts = re.findall(r"(\d+)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"SOAK_DURATION={text!r}: expected a duration such as 10m, 90s or 1h30m")
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def _rss_mb(pid: int) -> float:
    return sum(_tree_rss_kb(pid)) / 1024


def soak(wrk: str, url: str, pid: int, seconds: int, sample_s: float, script: Path) -> tuple[dict, list]:
    """wrk for ``seconds``; the querier's RSS sampled every ``sample_s`` seconds meanwhile:
    wrk's figures and ``[(seconds into the load, RSS MB)]``, the first at 0 and the last at the end."""
    script.write_text(wrk_script([urllib.parse.quote(q, safe="") for q in course_queries()], REQUEST))
    samples = [(0.0, _rss_mb(pid))]
    t0 = time.monotonic()
    proc = subprocess.Popen(wrk_args(wrk, url, CLIENTS, seconds, script), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        while True:
            try:
                out, _ = proc.communicate(timeout=sample_s)  # the sampling interval, not a synchronisation
                break
            except subprocess.TimeoutExpired:
                samples.append((time.monotonic() - t0, _rss_mb(pid)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {out[-1000:]}")
    samples.append((time.monotonic() - t0, _rss_mb(pid)))
    return wrk_result(out), samples


def _at(samples: list, t: float) -> tuple[float, float]:
    """The first sample at or after ``t`` seconds (the last one if none is)."""
    return next((s for s in samples if s[0] >= t), samples[-1])


def figures(r: dict, samples: list, seconds: int) -> list[tuple[str, float, str]]:
    start, end = samples[0][1], samples[-1][1]
    warm_t, warm = _at(samples, min(WARMUP_S, seconds / 2))
    out = [
        ("soak.duration_s", r["duration_us"] / 1e6, f"s, {CLIENTS} clients"),
        ("soak.requests", r["requests"], f"requests ({r['rps']:.1f}/s)"),
        ("soak.errors", r["errors"], f"non-2xx {r['status']}, socket errors {r['connect'] + r['read'] + r['write']}, "
                                     f"timeouts {r['timeout']} (goal 0)"),
        ("soak.p50_ms", r["p50"] / 1000, "ms"),
        ("soak.p99_ms", r["p99"] / 1000, "ms"),
        ("soak.rss_start_mb", start, "MB (all the querier's processes, when the load starts)"),
        ("soak.rss_warm_mb", warm, f"MB ({warm_t:.0f} s into the load)"),
        ("soak.rss_end_mb", end, "MB (at the end)"),
        ("soak.rss_growth_pct", 100 * (end - start) / start, "% from the start (goal <= 10 %)"),
        ("soak.rss_growth_after_warmup_pct", 100 * (end - warm) / warm, f"% from {warm_t:.0f} s in (goal <= 10 %)"),
    ]
    out += [(f"soak.rss_mb.at_{t:05.0f}s", mb, "MB") for t, mb in samples]
    return out


def run(seconds: int | None = None) -> list[tuple[str, float, str]]:
    if seconds is None:
        seconds = parse_duration(os.environ.get("SOAK_DURATION", "10m"))
    sample_s = float(os.environ.get("SOAK_SAMPLE", "0") or 0) or max(1.0, seconds / 20)
    prometheus = _binary("/usr/bin/prometheus", "prometheus")
    pythanos = _binary(Path(sys.executable).parent / "pythanos", "pythanos")
    wrk = _binary("wrk", "/usr/bin/wrk")
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    procs = _Procs(work)
    try:
        stores = course_stores(work, procs, prometheus, pythanos)
        url, querier = start_ours(procs, pythanos, stores, COURSE_QUERIER_FLAGS, "soak")
        _wait_store(url, "count(up)", time.monotonic() + 120)
        for path in _paths(course_queries(), time.time()):
            doc = json.loads(_get(url + path))
            if doc.get("status") != "success" or not doc["data"]["result"]:
                raise RuntimeError(f"{path}: no data before the soak: {str(doc)[:300]}")
        r, samples = soak(wrk, url, querier.pid, seconds, sample_s, work / "soak.lua")
        return figures(r, samples, seconds)
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", default=os.environ.get("SOAK_DURATION", "10m"),
                    help="how long the load runs (10m, 90s, 1h30m; default SOAK_DURATION or 10m)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import format_lines

    for line in format_lines(run(parse_duration(args.duration))):
        print(line)
