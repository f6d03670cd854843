"""Block write throughput: thanosbench-shaped data (10k gauges, 15 s, constant for 1h then a step).

Figures (one 2h block of the ``bench-10k-2h`` profile: 10 000 series x 480 samples = 4.8 M samples):

* ``blockgen.generate``: the generator alone (numpy; no writer), samples/s, median of 5 runs over one block;
* ``blockwrite.write``: ``BlockWriter.write()`` alone (chunk cutting, XOR encoding, chunk files, index,
  meta), samples/s, timed with ``time.perf_counter``; handing the series to the writer
  (``add_series``) is timed separately as ``blockwrite.add_series``;
* ``blockwrite.bytes_per_sample``: (index + chunk files) / samples; ``blockwrite.chunk_bytes_per_sample``:
  chunk files only (the XOR payload plus per-chunk headers).

``BENCH_BLOCKWRITE_PROFILE=bench-10k-1d`` runs a whole profile instead (12 blocks, 57.6 M samples).
"""
from __future__ import annotations

import os
import tempfile
import time

PROFILE = os.environ.get("BENCH_BLOCKWRITE_PROFILE", "bench-10k-2h")
MAX_TIME = 1_700_000_000_000  # fixed, so figures are comparable between runs


def _dir_size(path: str) -> tuple[int, int]:
    total = chunks = 0
    for root, _, files in os.walk(path):
        for f in files:
            n = os.path.getsize(os.path.join(root, f))
            total += n if f in ("index",) or os.path.basename(root) == "chunks" else 0
            chunks += n if os.path.basename(root) == "chunks" else 0
    return total, chunks


def run() -> list[tuple[str, float, str]]:
    from pythanos.tools import benchblocks as bb
    from pythanos.tsdb.block import BlockWriter

    profile = bb.get_profile(PROFILE)
    blocks = bb.plan(profile, MAX_TIME)
    labels = bb.series_labels(profile)
    keys = bb.series_keys(labels, {"cluster": "bench"})
    tag = f"{profile.name}"

    # The generator alone: median of 5 over the first block (it is memory-bound and fast, so one run is noisy).
    b0 = blocks[0]
    gen_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        n0 = sum(x.num_samples for x in bb.generate(profile, b0.min_time, b0.max_time,
                                                    ext_labels={"cluster": "bench"}, labels=labels, keys=keys))
        gen_times.append(time.perf_counter() - t0)
    gen_median = sorted(gen_times)[len(gen_times) // 2]

    add_s = write_s = 0.0
    samples = size = chunk_size = 0
    with tempfile.TemporaryDirectory(prefix="bench-blockwrite-") as out:
        for b in blocks:
            batches = list(bb.generate(profile, b.min_time, b.max_time, ext_labels={"cluster": "bench"},
                                       labels=labels, keys=keys))
            t1 = time.perf_counter()
            w = BlockWriter(out, style="prom3", thanos=bb._thanos_meta({"cluster": "bench"}),
                            min_time=b.min_time, max_time=b.max_time, samples_per_chunk=120)
            for batch in batches:
                for ls, row in zip(batch.labels, batch.values):
                    w.add_series(ls, batch.timestamps, row)
            t2 = time.perf_counter()
            meta = w.write()
            t3 = time.perf_counter()
            del batches, w
            add_s, write_s = add_s + (t2 - t1), write_s + (t3 - t2)
            samples += meta.stats.num_samples
            s, c = _dir_size(os.path.join(out, meta.ulid))
            size, chunk_size = size + s, chunk_size + c
    return [
        (f"blockgen.generate {tag}", n0 / gen_median, "samples/s"),
        (f"blockwrite.add_series {tag}", samples / add_s, "samples/s"),
        (f"blockwrite.write {tag}", samples / write_s, "samples/s"),
        (f"blockwrite.write {tag}", write_s * 1e9 / samples, "ns/sample"),
        (f"blockwrite.bytes_per_sample {tag}", size / samples, "B/sample"),
        (f"blockwrite.chunk_bytes_per_sample {tag}", chunk_size / samples, "B/sample"),
        (f"blockwrite.samples {tag}", samples, "samples"),
    ]
