"""Compactor: ``pythanos compact`` vs a real ``thanos compact`` on identical copies of one bucket.

Two jobs, each run by both compactors (one at a time, FILESYSTEM bucket, ``--consistency-delay=0s
--delete-delay=0s``), timed as the whole process (start to exit) with its peak RSS (``ru_maxrss``
of the child, from ``wait4``):

* ``compact.4x2h_100k``: four 2h blocks of 100k series (profile ``bench-100k-20h``, the four
  blocks of one 8h-aligned window plus the next block, which the planner leaves alone) into one 8h
  block, ``--downsampling.disable``: 400k series in, 100k series and 48M samples out;
* ``downsample.2w_10k``: two weeks of 10k series (profile ``bench-10k-14d``: seven 48h blocks at
  60 s, 201M samples) downsampled to 5m, ``--debug.max-compaction-level=3`` so that nothing is
  compacted first; with ``--downsample.concurrency`` 1 (both defaults) and 2.

Before timing, the outputs are compared: same block layout (time ranges, levels, resolutions,
stats) and byte-identical index and chunk files; a difference gives a ``...MISMATCH`` figure.
Figures: ``<job>.<who>.seconds``, ``<job>.<who>.peak_rss_mb`` and ``<job>.{seconds,peak_rss}.ratio_ours_over_thanos``
(<= 1.0 is the goal). Generated data is kept in ``BENCH_COMPACT_DATA`` (default: a temporary dir,
removed; generating takes about 4 min).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sidecar import _binary, _peers_dir, _ports  # noqa: E402

H = 3600 * 1000


def _gen(pythanos: str, profile: str, out: Path) -> Path:
    if not list(out.glob("*/meta.json")):
        print(f"# bench_compact: generating {profile} into {out}", file=sys.stderr, flush=True)
        subprocess.run([pythanos, "tools", "bench-blocks", "--profile", profile, "--labels", 'cluster="bench"',
                        "--max-time=2025-03-01T00:00:00Z", f"--output.dir={out}", "--log.level=warn"], check=True)
    return out


def _metas(b: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in b.glob("*/meta.json")}


def _window_8h(src: Path, dst: Path) -> Path:
    """The four 2h blocks of the newest full 8h-aligned window, plus the block after it."""
    ms = sorted(_metas(src).values(), key=lambda m: m["minTime"])
    for i, m in enumerate(ms):
        if m["minTime"] % (8 * H) == 0 and i + 4 < len(ms):
            pick = ms[i:i + 5]
    dst.mkdir(parents=True)
    for m in pick:
        shutil.copytree(src / m["ulid"], dst / m["ulid"])
    return dst


def _run(argv: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {p.returncode}:\n{err[-3000:]}")
    return dt, ru.ru_maxrss / 1024.0


def _layout(b: Path) -> list:
    out = []
    for u, m in _metas(b).items():
        h = hashlib.sha256()
        for f in ["index", *sorted(f"chunks/{c.name}" for c in (b / u / "chunks").iterdir())]:
            h.update((b / u / f).read_bytes())
        out.append((m["minTime"], m["maxTime"], m["compaction"]["level"], m["thanos"]["downsample"]["resolution"],
                    json.dumps(m["stats"], sort_keys=True), h.hexdigest()))
    return sorted(out)


def run() -> list[tuple[str, float, str]]:
    pythanos = _binary(Path(sys.executable).parent / "pythanos", "pythanos")
    thanos = _binary(_peers_dir() / "bin" / "thanos", "thanos")
    keep = os.environ.get("BENCH_COMPACT_DATA")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-compact-"))
    root.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, float, str]] = []
    try:
        jobs = []
        b100k = _gen(pythanos, "bench-100k-20h", root / "bench-100k-20h")
        w8 = root / "window-8h"
        if not w8.exists():
            _window_8h(b100k, w8)
        jobs.append(("compact.4x2h_100k", w8, ["--downsampling.disable"]))
        b14d = _gen(pythanos, "bench-10k-14d", root / "bench-10k-14d")
        for c in (1, 2):
            jobs.append((f"downsample.2w_10k.concurrency{c}", b14d,
                         ["--debug.max-compaction-level=3", f"--downsample.concurrency={c}"]))
        for name, src, extra in jobs:
            res = {}
            layouts = {}
            for who, binary in (("thanos", thanos), ("ours", pythanos)):
                work = root / "run" / who
                shutil.rmtree(work, ignore_errors=True)
                shutil.copytree(src, work / "bucket")
                port = _ports(1)[0]
                res[who] = _run([binary, "compact", f"--data-dir={work / 'data'}",
                                 "--objstore.config={type: FILESYSTEM, config: {directory: %s}}" % (work / "bucket"),
                                 "--consistency-delay=0s", "--delete-delay=0s", f"--http-address=127.0.0.1:{port}",
                                 "--log.level=warn", *extra])
                layouts[who] = _layout(work / "bucket")
                shutil.rmtree(work)
            if layouts["ours"] != layouts["thanos"]:
                figures.append((f"{name}.MISMATCH", 1, "outputs differ"))
                print(f"# bench_compact: {name}: outputs differ:\n ours {layouts['ours']}\n thanos {layouts['thanos']}",
                      file=sys.stderr)
            for who in ("ours", "thanos"):
                figures.append((f"{name}.{who}.seconds", res[who][0], "s"))
                figures.append((f"{name}.{who}.peak_rss_mb", res[who][1], "MB"))
            figures.append((f"{name}.seconds.ratio_ours_over_thanos", res["ours"][0] / res["thanos"][0], "x"))
            figures.append((f"{name}.peak_rss.ratio_ours_over_thanos", res["ours"][1] / res["thanos"][1], "x"))
    finally:
        shutil.rmtree(root / "run", ignore_errors=True)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return figures
