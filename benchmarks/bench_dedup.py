#!/usr/bin/env python3
"""Replica de-duplication figures (pythanos.dedup), ns per *input* sample.

Shape: 2 replicas x ``SERIES`` series x 2 h of 15 s samples (480 samples per replica and
series), the replicas scraping at different phases with +-200 ms jitter and a 3-minute gap in
replica 0 of every tenth series (so the walk switches). Figures:

* ``dedup_penalty_per_series``: ``dedup_samples`` once per series, as the querier calls it
  (includes the per-call Python overhead, ~1 us per call);
* ``dedup_penalty_counter_per_series``: the same with ``counter=True`` (running totals +
  error adjustment);
* ``dedup_chain_per_series``: ``func="chain"``;
* ``dedup_chunks_per_series``: ``dedup_chunks`` from raw XOR chunks (responseDeduplicator
  drop, overlap split, batched decode, merge);
* ``dedup_penalty_kernel``: one series of 1M samples per replica: the C walk alone.

Best of ``REPEATS`` runs.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

try:
    from pythanos.dedup import dedup_chunks, dedup_samples
    from pythanos.tsdb.chunkenc import encode_xor
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "components"))
    from pythanos.dedup import dedup_chunks, dedup_samples
    from pythanos.tsdb.chunkenc import encode_xor

SERIES = 10_000
SAMPLES = 480  # 2 h of 15 s
REPEATS = 3
T0 = 1_700_000_000_000


def make(series: int = SERIES, n: int = SAMPLES, seed: int = 1):
    rng = np.random.default_rng(seed)
    out = []
    for s in range(series):
        reps = []
        for r, phase in enumerate((0, 7_300)):
            t = T0 + phase + np.arange(n, dtype=np.int64) * 15_000 + rng.integers(-200, 201, n)
            v = np.cumsum(rng.integers(0, 10, n)).astype(np.float64) + r
            if r == 0 and s % 10 == 0:
                keep = (t < T0 + 3_600_000) | (t >= T0 + 3_780_000)
                t, v = t[keep], v[keep]
            reps.append((t, v))
        out.append(reps)
    return out


def best(fn) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run() -> list[tuple[str, float, str]]:
    data = make()
    total = sum(len(t) for reps in data for t, _ in reps)
    figs = []

    def per_series(**kw):
        for reps in data:
            dedup_samples(reps, **kw)

    figs.append(("dedup_penalty_per_series", best(lambda: per_series()) * 1e9 / total, "ns/sample"))
    figs.append(("dedup_penalty_counter_per_series", best(lambda: per_series(counter=True)) * 1e9 / total,
                 "ns/sample"))
    figs.append(("dedup_chain_per_series", best(lambda: per_series(func="chain")) * 1e9 / total, "ns/sample"))

    chunks = []
    for reps in data:
        cs = []
        for t, v in reps:
            for i in range(0, len(t), 120):
                cs.append((int(t[i]), int(t[i:i + 120][-1]), encode_xor(t[i:i + 120], v[i:i + 120])))
        chunks.append(cs)

    def per_chunks():
        for cs in chunks:
            dedup_chunks(cs)

    figs.append(("dedup_chunks_per_series", best(per_chunks) * 1e9 / total, "ns/sample"))

    big = make(series=1, n=1_000_000)[0]
    big_total = sum(len(t) for t, _ in big)
    figs.append(("dedup_penalty_kernel", best(lambda: dedup_samples(big)) * 1e9 / big_total, "ns/sample"))
    figs.append(("dedup_penalty_counter_kernel", best(lambda: dedup_samples(big, counter=True)) * 1e9 / big_total,
                 "ns/sample"))
    figs.append(("dedup_chain_kernel", best(lambda: dedup_samples(big, func="chain")) * 1e9 / big_total,
                 "ns/sample"))
    figs.append(("dedup_input_samples", total, "samples"))
    return figs


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name:<40} {value:>12.4g} {unit}")
