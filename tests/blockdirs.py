"""Block directories of a TSDB or output dir, in time order.

Name order is not time order: ULIDs made in the same millisecond sort by their random part, so
tests that pair or concatenate blocks order them by ``meta.json``'s ``minTime``.
"""
from __future__ import annotations

import json
from pathlib import Path


def blocks_by_time(d: Path) -> list[Path]:
    """Finished blocks under ``d`` (a ``meta.json``, no ``.tmp`` suffix), oldest first."""
    out = []
    for p in d.iterdir():
        meta = p / "meta.json"
        if p.is_dir() and ".tmp" not in p.name and meta.exists():
            out.append((json.loads(meta.read_text())["minTime"], p.name, p))
    return [p for *_, p in sorted(out)]
