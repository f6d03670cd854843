#!/usr/bin/env python3
"""Run the benchmarks and print one line per figure: ``name  value unit``.

Usage: ``python benchmarks/run.py [FILTER ...]`` (or ``make bench BENCH_ARGS="xor"``).

Every ``benchmarks/bench_*.py`` module with a ``run() -> list[(name, value, unit)]`` is run, in name
order; a FILTER (substring of the module name, e.g. ``xor`` or ``bench_blockwrite``) selects modules.
Figures only, never assertions: a module that raises is reported on stderr and the exit code is 1,
the other modules still run.
"""
from __future__ import annotations

import importlib.util
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME_WIDTH = 48
VALUE_WIDTH = 14


def discover(filters: list[str]) -> list[Path]:
    mods = sorted(HERE.glob("bench_*.py"))
    if filters:
        mods = [m for m in mods if any(f in m.stem for f in filters)]
    return mods


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"benchmarks.{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def fmt_value(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) or (abs(v) >= 1000 and float(v).is_integer()):
        return f"{int(v):,}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def format_lines(figures: list[tuple[str, object, str]]) -> list[str]:
    """``name  value unit`` with the name column left-aligned and the value column right-aligned."""
    rows = [(str(n), fmt_value(v), str(u)) for n, v, u in figures]
    nw = max([NAME_WIDTH] + [len(n) for n, _, _ in rows])
    vw = max([VALUE_WIDTH] + [len(v) for _, v, _ in rows])
    return [f"{n:<{nw}}  {v:>{vw}} {u}".rstrip() for n, v, u in rows]


def main(argv: list[str]) -> int:
    filters = [a for a in argv if not a.startswith("-")]
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    sys.path.insert(0, str(HERE.parent))
    mods = discover(filters)
    if not mods:
        print(f"no benchmark module matches {filters!r} in {HERE}", file=sys.stderr)
        return 1
    rc = 0
    figures: list[tuple[str, object, str]] = []
    for path in mods:
        t0 = time.perf_counter()
        try:
            mod = load(path)
            got = list(mod.run())
        except Exception:
            rc = 1
            print(f"{path.stem}: failed:\n{traceback.format_exc()}", file=sys.stderr)
            continue
        figures.extend(got)
        # Progress on stderr; the figures are printed together at the end so their columns line up.
        print(f"# {path.stem}: {len(got)} figures in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    for text in format_lines(figures):
        print(text)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
