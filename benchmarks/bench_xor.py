#!/usr/bin/env python3
"""XOR chunk codec figures: batched decode and encode, ns/sample, and bytes/sample.

Each shape is ``CHUNKS`` chunks of 120 samples, coded with one ``encode_xor_many`` /
``decode_xor_many`` call (the way block readers and writers use the codec). The best of
``REPEATS`` runs is reported, so the figures are per-core throughput on a quiet moment.

Shapes (timestamps in ms):

* ``constant``: 15 s interval, constant value (the best case: 2 bits/sample);
* ``gauge_steps``: 15 s interval, value constant for 240 samples then a step (thanosbench-like);
* ``counter_jitter``: 15 s +- 50 ms jitter, integer counter increments of 0..99;
* ``random``: 15 s interval, uniform random floats in [0, 1) (the worst realistic case).

Figures per shape:

* ``xor_decode_<shape>``: ``decode_xor_many`` as callers use it, into fresh numpy arrays. With
  glibc's default malloc a multi-megabyte result comes from freshly mapped pages every call,
  and on this VM a fresh 4 KiB page costs ~2-3 us to fault in: that is 16 bytes/sample of output,
  i.e. several ns/sample on top of the codec. Set ``MALLOC_TOP_PAD_`` (or ``MALLOC_TRIM_THRESHOLD_``
  + ``MALLOC_MMAP_THRESHOLD_``) in the environment to keep freed heap mapped and see it vanish.
* ``xor_decode_into_<shape>``: ``decode_xor_many_into`` into reused arrays: the codec alone.
* ``xor_encode_<shape>``: ``encode_xor_many``; ``xor_size_<shape>``: bytes/sample of the chunks.

Also: ``xor_decode_single_call`` (one ``decode_xor`` Python call per 120-sample chunk, ns/sample)
to show the per-call overhead that batching avoids.

Anchors (performance-anchors.md 4 and 6): Go decodes 7-20 ns/sample and encodes 6-28 ns/sample;
numba on this machine 3-21 ns decode / 17-257 ns encode.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

try:
    from pythanos.tsdb.chunkenc import decode_xor, decode_xor_many, decode_xor_many_into, encode_xor_many
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "components"))
    from pythanos.tsdb.chunkenc import decode_xor, decode_xor_many, decode_xor_many_into, encode_xor_many

SAMPLES_PER_CHUNK = 120
CHUNKS = 5000
REPEATS = 5
T0 = 1700000000000


def shapes(k: int = CHUNKS, n: int = SAMPLES_PER_CHUNK, seed: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    total = k * n
    regular = T0 + 15000 * np.arange(total, dtype=np.int64)
    out = {}
    out["constant"] = (regular, np.full(total, 42.0))
    steps = np.repeat(rng.integers(0, 1000, total // 240 + 1).astype(np.float64), 240)[:total]
    out["gauge_steps"] = (regular, steps)
    jitter = T0 + np.cumsum(15000 + rng.integers(-50, 51, total)).astype(np.int64)
    out["counter_jitter"] = (jitter, np.cumsum(rng.integers(0, 100, total)).astype(np.float64))
    out["random"] = (regular, rng.random(total))
    return out


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, time.perf_counter_ns() - t0)
    return best


def run(chunks: int = CHUNKS, repeats: int = REPEATS) -> list[tuple[str, float, str]]:
    n = SAMPLES_PER_CHUNK
    bounds = np.arange(0, chunks * n + 1, n, dtype=np.int64)
    total = chunks * n
    figures: list[tuple[str, float, str]] = []
    single = None
    for name, (t, v) in shapes(chunks, n).items():
        buf, offs = encode_xor_many(t, v, bounds)
        starts, lengths = offs[:-1].copy(), np.diff(offs)
        counts, t2, v2 = decode_xor_many(buf, starts, lengths)
        if not (np.array_equal(t2, t) and np.array_equal(v2.view(np.uint64), v.view(np.uint64))):
            raise AssertionError(f"{name}: round trip mismatch")
        dec = _best(lambda: decode_xor_many(buf, starts, lengths), repeats)
        t_out, v_out = np.empty_like(t), np.empty_like(v)
        dec_into = _best(lambda: decode_xor_many_into(buf, starts, lengths, t_out, v_out), repeats)
        enc = _best(lambda: encode_xor_many(t, v, bounds), repeats)
        figures.append((f"xor_decode_{name}", dec / total, "ns/sample"))
        figures.append((f"xor_decode_into_{name}", dec_into / total, "ns/sample"))
        figures.append((f"xor_encode_{name}", enc / total, "ns/sample"))
        figures.append((f"xor_size_{name}", len(buf) / total, "bytes/sample"))
        if name == "counter_jitter":
            single = [buf[offs[i]:offs[i + 1]] for i in range(min(chunks, 2000))]
    if single:
        def per_call():
            for d in single:
                decode_xor(d)
        figures.append(("xor_decode_single_call_counter_jitter", _best(per_call, repeats) / (len(single) * n), "ns/sample"))
    return figures


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name:<40} {value:8.2f} {unit}")
