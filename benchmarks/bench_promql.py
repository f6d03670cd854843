"""PromQL engine figures: queries over pre-loaded in-memory series (no storage decoding).

Data: ``BENCH_PROMQL_SERIES`` series (default 10 000) of a counter ``x`` in 10 ``job`` values, scraped
every 15 s for one day (5 761 samples each), and as many ``h_bucket`` series (10 ``le`` buckets per
histogram). Range queries over the whole day at 60 s step (1 441 steps); ``x[1h]`` is an instant query
at the end of the day. Each shape prints ms per query (best of ``BENCH_PROMQL_REPEAT``, default 3) and
the process' peak RSS after it, so a shape that materialises series x steps x window shows up.

Anchor (performance-anchors.md §9): Prometheus' BenchmarkRangeQuery, one core, ``sum`` over 3k series x
241 steps in 46.6 ms, about 15 M series-steps/s.
"""
from __future__ import annotations

import os
import resource
import time

import numpy as np

from pythanos.promql import Engine, MemoryQueryable

DAY = 86_400_000
SCRAPE = 15_000
STEP = 60_000
LES = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf")


def _data(n: int) -> MemoryQueryable:
    """Counters sharing one timestamp array (as a decoded block would not, but RSS stays the data's)."""
    q = MemoryQueryable()
    t = np.arange(0, DAY + 1, SCRAPE, dtype=np.int64)
    rng = np.random.default_rng(1)
    for i in range(n):
        v = np.cumsum(rng.integers(0, 10, len(t))).astype(np.float64)
        q._series[(("__name__", "x"), ("instance", f"i{i}"), ("job", f"j{i % 10}"))] = (t, v)
    for i in range(n // len(LES)):
        inc = rng.integers(0, 10, len(t))
        base = np.cumsum(inc).astype(np.float64)
        for k, le in enumerate(LES):
            v = np.floor(base * (k + 1) / len(LES))
            q._series[(("__name__", "h_bucket"), ("instance", f"i{i}"), ("job", f"j{i % 10}"), ("le", le))] = (t, v)
    return q


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


SHAPES = (
    ("range sum by (job) (rate(x[5m]))", "sum by (job) (rate(x[5m]))", "range"),
    ("range histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
     "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))", "range"),
    ("range topk(10, x)", "topk(10, x)", "range"),
    ("instant x[1h]", "x[1h]", "instant"),
)


def run():
    n = int(os.environ.get("BENCH_PROMQL_SERIES", "10000"))
    repeat = int(os.environ.get("BENCH_PROMQL_REPEAT", "3"))
    only = os.environ.get("BENCH_PROMQL_ONLY", "")
    q = _data(n)
    out = [("promql data loaded, peak RSS", round(_peak_rss_mb()), "MB")]
    e = Engine(timeout_s=None, max_samples=None)
    for name, query, kind in SHAPES:
        if only and only not in name:
            continue
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            if kind == "range":
                res = e.range(query, 0, DAY, STEP, q)
            else:
                res = e.instant(query, DAY, q)
            best = min(best, time.perf_counter() - t0)
            assert res.value
            del res
        out.append((f"promql.{name} {n} series 1d", round(best * 1000, 1), "ms"))
        out.append((f"promql.{name} peak RSS", round(_peak_rss_mb()), "MB"))
    return out


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name:78} {value:>10,} {unit}", flush=True)
