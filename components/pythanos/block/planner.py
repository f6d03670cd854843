"""Which blocks to compact together (Thanos ``pkg/compact/compact.go`` grouping and
``pkg/compact/planner.go``, itself Prometheus' TSDB planner without a filesystem).

A *group* is the blocks of one stream at one resolution: equal external labels (after the
replica labels are removed) and equal ``thanos.downsample.resolution``. Within a group the
planner picks, in order:

1. every block of the first run of overlapping blocks (only compacted with vertical compaction;
   otherwise overlap is a halt, see :func:`overlaps`);
2. leaving out the block with the newest ``minTime`` (a window for late uploads), the first
   range-aligned bucket of the smallest compaction range that holds two or more blocks and
   either spans the whole range or lies entirely before that newest block; no-compact-marked
   blocks split such a bucket without opening a gap;
3. a single block spanning at least the middle range with more than 5% tombstoned series.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ..tsdb.meta import BlockMeta

__all__ = ["DEFAULT_RANGES", "Group", "group_key", "groups", "labels_hash", "overlaps", "plan", "ranges_for_level"]

HOUR_MS = 3600 * 1000
DEFAULT_RANGES = (1 * HOUR_MS, 2 * HOUR_MS, 8 * HOUR_MS, 48 * HOUR_MS, 14 * 24 * HOUR_MS)
"""Thanos' compaction levels (``cmd/thanos/compact.go``): 1h, 2h, 8h, 2d, 14d."""


def ranges_for_level(max_level: int) -> list[int]:
    """``--debug.max-compaction-level``: the ranges up to and including that level (default 4 = 14d)."""
    if not 1 <= max_level <= len(DEFAULT_RANGES) - 1:
        raise ValueError(f"--debug.max-compaction-level must be between 1 and {len(DEFAULT_RANGES) - 1}, "
                         f"not {max_level}")
    return list(DEFAULT_RANGES[:max_level + 1])


def labels_hash(labels: Mapping[str, str]) -> int:
    """Prometheus' ``labels.Hash``: xxHash64 over ``name 0xff value 0xff`` of the sorted labels."""
    from ..tsdb._series import xxh64

    b = bytearray()
    for k in sorted(labels):
        b += k.encode() + b"\xff" + labels[k].encode() + b"\xff"
    return xxh64(bytes(b))


def group_key(meta: BlockMeta) -> str:
    """Thanos' ``GroupKey``: ``<resolution>@<labels hash>`` (a local key for logs, never stored)."""
    return f"{meta.resolution}@{labels_hash(meta.labels)}"


@dataclass
class Group:
    """The blocks of one stream at one resolution, sorted by ``minTime``."""

    key: str
    labels: dict[str, str]
    resolution: int
    metas: list[BlockMeta] = field(default_factory=list)

    def ids(self) -> list[str]:
        return [m.ulid for m in self.metas]


def groups(metas: Iterable[BlockMeta]) -> list[Group]:
    """Group the synced metas; groups sorted by key, blocks by (minTime, ULID)."""
    out: dict[str, Group] = {}
    for m in metas:
        k = group_key(m)
        g = out.get(k)
        if g is None:
            g = out[k] = Group(k, dict(m.labels), m.resolution)
        g.metas.append(m)
    for g in out.values():
        g.metas.sort(key=lambda m: (m.min_time, m.ulid))
    return [out[k] for k in sorted(out)]


def overlaps(metas: Sequence[BlockMeta]) -> list[list[BlockMeta]]:
    """Sets of blocks whose time ranges overlap (Prometheus' ``OverlappingBlocks``), each set
    sorted by minTime; empty when none do. ``metas`` in any order."""
    ms = sorted(metas, key=lambda m: (m.min_time, m.ulid))
    out: list[list[BlockMeta]] = []
    cur: list[BlockMeta] = []
    cur_max = None
    for m in ms:
        if cur and m.min_time < cur_max:
            cur.append(m)
            cur_max = max(cur_max, m.max_time)
            continue
        if len(cur) > 1:
            out.append(cur)
        cur, cur_max = [m], m.max_time
    if len(cur) > 1:
        out.append(cur)
    return out


def describe_overlaps(sets: Sequence[Sequence[BlockMeta]]) -> str:
    """One line per overlap: ``[mint, maxt): <ULID> [a, b), <ULID> [c, d)``."""
    parts = []
    for s in sets:
        lo = max(m.min_time for m in s[1:]) if len(s) > 1 else s[0].min_time
        hi = min(m.max_time for m in s)
        blocks = ", ".join(f"{m.ulid} [{m.min_time}, {m.max_time})" for m in s)
        parts.append(f"[{lo}, {hi}): {blocks}")
    return "; ".join(parts)


def _select_overlapping(metas: Sequence[BlockMeta]) -> list[BlockMeta]:
    if len(metas) < 2:
        return []
    res: list[BlockMeta] = []
    gmax = metas[0].max_time
    for i in range(1, len(metas)):
        m = metas[i]
        if m.min_time < gmax:
            if not res:
                res.append(metas[i - 1])
            res.append(m)
        elif res:
            break
        gmax = max(gmax, m.max_time)
    return res


def _go_floor_align(t: int, tr: int) -> int:
    # Go's integer division truncates; the planner's alignment formula relies on it.
    if t >= 0:
        return tr * (t // tr)
    q = -((-(t - tr + 1)) // tr) if (t - tr + 1) < 0 else (t - tr + 1) // tr
    return tr * q


def _split_by_range(metas: Sequence[BlockMeta], tr: int) -> list[list[BlockMeta]]:
    out: list[list[BlockMeta]] = []
    i = 0
    while i < len(metas):
        t0 = _go_floor_align(metas[i].min_time, tr)
        if metas[i].max_time > t0 + tr:
            i += 1
            continue
        part = []
        while i < len(metas) and metas[i].max_time <= t0 + tr:
            part.append(metas[i])
            i += 1
        if part:
            out.append(part)
    return out


def _select_metas(ranges: Sequence[int], no_compact: set[str], metas: Sequence[BlockMeta]) -> list[BlockMeta]:
    if len(ranges) < 2 or not metas:
        return []
    high = metas[-1].min_time
    for tr in ranges[1:]:
        for part in _split_by_range(metas, tr):
            if any(m.compaction.failed for m in part) or len(part) < 2:
                continue
            mint, maxt = part[0].min_time, part[-1].max_time
            if maxt - mint != tr and maxt > high:
                continue
            last = 0
            for i, m in enumerate(part):
                if m.ulid not in no_compact:
                    continue
                if i - last > 1:
                    return list(part[last:i])
                last = i + 1
            if len(part) - last > 1:
                return list(part[last:])
    return []


def plan(metas_by_min_time: Sequence[BlockMeta], ranges: Sequence[int] = DEFAULT_RANGES,
         no_compact: Iterable[str] = ()) -> list[BlockMeta]:
    """The blocks of one group to compact next (empty: nothing to do); see the module docstring."""
    if not metas_by_min_time:
        return []
    nc = set(no_compact)
    eligible = [m for m in metas_by_min_time if m.ulid not in nc]
    res = _select_overlapping(eligible)
    if res:
        return res
    if metas_by_min_time[-1].ulid not in nc:
        eligible = eligible[:-1]
    res = _select_metas(ranges, nc, metas_by_min_time[:-1])
    if res:
        return res
    for m in reversed(eligible):
        if m.max_time - m.min_time < ranges[len(ranges) // 2]:
            break
        if m.stats.num_tombstones / (m.stats.num_series + 1) > 0.05:
            return [m]
    return []
