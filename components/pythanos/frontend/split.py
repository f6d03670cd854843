"""How the query frontend cuts a range query (Thanos' ``internal/cortex/querier/queryrange``).

Times are Unix milliseconds. ``align`` is the step alignment middleware; ``split_range`` the split
by interval: sub-ranges end at the last step before a multiple of the interval (counted from the
Unix epoch, UTC) and the next starts one step later, so every step of the original range is
asked for exactly once. ``pin_at_modifiers`` replaces ``@ start()`` and ``@ end()`` by the
original range's ends before splitting (each piece would otherwise see its own).
"""
from __future__ import annotations

import re

__all__ = ["align", "split_range", "next_interval_boundary", "pin_at_modifiers"]


def align(start: int, end: int, step: int) -> tuple[int, int]:
    """Start and end floored to multiples of ``step`` (Thanos' step alignment)."""
    return start // step * step, end // step * step


def next_interval_boundary(t: int, step: int, interval: int) -> int:
    """The last timestamp on ``t``'s step grid before the next multiple of ``interval``."""
    start_of_next = (t // interval + 1) * interval
    target = start_of_next - ((start_of_next - t) % step)
    if target == start_of_next:
        target -= step
    return target


def split_range(start: int, end: int, step: int, interval: int) -> list[tuple[int, int]]:
    """``[start, end]`` at ``step`` cut at multiples of ``interval`` (0: not cut)."""
    if start == end or interval <= 0:
        return [(start, end)]
    out = []
    s = start
    while s < end:
        e = next_interval_boundary(s, step, interval)
        if e + step >= end:
            e = end
        out.append((s, e))
        s = e + step
    return out


_AT = re.compile(r"@\s*(start|end)\s*\(\s*\)")


def _fmt_seconds(ms: int) -> str:
    sec, rem = divmod(ms, 1000)
    return f"{sec}" if not rem else f"{sec}.{rem:03d}".rstrip("0")


def pin_at_modifiers(query: str, start: int, end: int) -> str:
    """``query`` with ``@ start()`` / ``@ end()`` outside string literals and comments replaced by
    ``@ <seconds>`` of ``start`` / ``end``."""
    if "@" not in query:
        return query
    out = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c in "\"'`":  # a string literal: copied as is (backslash escapes except in raw strings)
            j = i + 1
            while j < n and query[j] != c:
                j += 2 if (c != "`" and query[j] == "\\") else 1
            out.append(query[i:j + 1])
            i = j + 1
            continue
        if c == "#":  # a comment runs to the end of the line
            j = query.find("\n", i)
            j = n if j < 0 else j
            out.append(query[i:j])
            i = j
            continue
        if c == "@":
            m = _AT.match(query, i)
            if m:
                out.append("@ " + _fmt_seconds(start if m.group(1) == "start" else end))
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)
