"""PromQL engine figures: range queries over pre-loaded in-memory series (no storage decoding).

Data: ``BENCH_PROMQL_SERIES`` series (default 10 000) in 10 ``job`` values, counters scraped every 30 s
for one day; range queries over the whole day at 30 s step (2 881 steps). Figures: total seconds per
query and series-steps/s (series x steps of the selector input per second).

Anchor (performance-anchors.md §9): Prometheus' BenchmarkRangeQuery, one core, ``sum`` over 3k series x
241 steps in 46.6 ms, about 15 M series-steps/s; numpy ``rate`` on the same shape, pre-decoded, 35 ms/core.
"""
from __future__ import annotations

import os
import time

import numpy as np

from pythanos.promql import Engine, MemoryQueryable

DAY = 86_400_000
STEP = 30_000


def _data(n):
    q = MemoryQueryable()
    t = np.arange(0, DAY + 1, STEP, dtype=np.int64)
    rng = np.random.default_rng(1)
    for i in range(n):
        v = np.cumsum(rng.integers(0, 10, len(t))).astype(np.float64)
        q._series[(("__name__", "x"), ("instance", f"i{i}"), ("job", f"j{i % 10}"))] = (t, v)
    return q


def run():
    n = int(os.environ.get("BENCH_PROMQL_SERIES", "10000"))
    q = _data(n)
    e = Engine(timeout_s=None, max_samples=None)
    steps = DAY // STEP + 1
    out = []
    for name, query in (("rate", "rate(x[5m])"), ("sum_by_job_rate", "sum by (job) (rate(x[5m]))"),
                        ("selector", "x"), ("topk", "topk(10, x)")):
        t0 = time.perf_counter()
        res = e.range(query, 0, DAY, STEP, q)
        dt = time.perf_counter() - t0
        assert res.value
        out.append((f"promql.range {name} {n}x1d@30s", round(dt, 3), "s"))
        out.append((f"promql.range {name} {n}x1d@30s", round(n * steps / dt), "series-steps/s"))
    # the anchor's shape: 3k series x 241 steps
    q3 = _data(3000) if n != 3000 else q
    t0 = time.perf_counter()
    e.range("sum(rate(x[5m]))", DAY - 240 * STEP, DAY, STEP, q3)
    dt = time.perf_counter() - t0
    out.append(("promql.range sum(rate) 3000x241 steps", round(dt * 1000, 1), "ms"))
    return out


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name:50} {value:>16,} {unit}")
