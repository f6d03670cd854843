"""Go's ``strconv`` number parsing as templates meet it: number literals in actions
(``ParseInt``/``ParseFloat`` with base prefixes and ``_`` separators) and ``humanize "1.5e3"``."""
from __future__ import annotations

import math
import re
from typing import Optional

from .printf import quote

_DEC_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\Z")
_HEX_RE = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+(?:\.[0-9a-fA-F]*)?|\.[0-9a-fA-F]+)[pP][+-]?\d+\Z")
_SPECIAL = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf,
            "+infinity": math.inf, "-infinity": -math.inf, "nan": math.nan}


def underscore_ok(s: str) -> bool:
    """Go's rule for ``_`` in a number: only between digits, or between a base prefix and a digit."""
    if s[:1] in ("+", "-"):
        s = s[1:]
    saw = "^"
    i = 0
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    for c in s[i:]:
        if "0" <= c <= "9" or (hexa and "a" <= c.lower() <= "f"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def parse_float(s: str) -> float:
    """``strconv.ParseFloat(s, 64)``; ValueError with Go's text."""
    special = _SPECIAL.get(s.lower())
    if special is not None:
        return special
    t = s
    if "_" in t:
        if not underscore_ok(t):
            raise ValueError(f"strconv.ParseFloat: parsing {quote(s)}: invalid syntax")
        t = t.replace("_", "")
    if _DEC_RE.match(t):
        f = float(t)
    elif _HEX_RE.match(t):
        try:
            f = float.fromhex(t)
        except OverflowError:
            f = -math.inf if t.startswith("-") else math.inf
    else:
        raise ValueError(f"strconv.ParseFloat: parsing {quote(s)}: invalid syntax")
    if math.isinf(f):
        raise ValueError(f"strconv.ParseFloat: parsing {quote(s)}: value out of range")
    return f


def parse_int(text: str) -> Optional[int]:
    """``strconv.ParseInt(text, 0, 64)`` without its range check: the value, or None when invalid."""
    s = text
    neg = False
    if s[:1] in ("+", "-"):
        neg, s = s[0] == "-", s[1:]
    if not s:
        return None
    if "_" in s:
        if not underscore_ok(s):
            return None
        s = s.replace("_", "")
    base = 10
    low = s[:2].lower()
    if low in ("0x", "0b", "0o"):
        base, s = {"0x": 16, "0b": 2, "0o": 8}[low], s[2:]
    elif len(s) > 1 and s[0] == "0":
        base, s = 8, s[1:]
    if not s or not s.isascii():
        return None
    try:
        v = int(s, base)
    except ValueError:
        return None
    return -v if neg else v
