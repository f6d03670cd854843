"""Text formats the bucket tools print the way Go (and so Thanos) prints them.

* :func:`duration` - ``time.Duration.String()`` of a nanosecond count (``2h0m0s``, ``1.5ms``,
  ``-38h0m0s``, ``0s``), with Go's int64 wrap-around.
* :func:`unix_rfc3339` - ``time.Unix(s, 0).Format(time.RFC3339)`` in the local zone (``TZ``).
* :func:`thousands` - ``message.NewPrinter(language.English).Sprintf("%d", n)`` (``1,234``).
* :func:`unquote` - ``strconv.Unquote`` (double-quoted with Go escapes, back-quoted, one rune
  in single quotes).
* :func:`csv_line` - one record of ``encoding/csv``'s Writer (any one-character separator).
* :func:`table` - the ``olekukonko/tablewriter`` (v0.0.5) table Thanos' ``inspect`` renders:
  side borders, ``|`` between cells, centred header, a ``|---|`` rule, left-aligned cells.
"""
from __future__ import annotations

import datetime as _dt
import re
import unicodedata
from typing import Sequence

_NS_PER_S = 1_000_000_000


def _wrap_int64(n: int) -> int:
    return ((n + (1 << 63)) % (1 << 64)) - (1 << 63)


def _frac(v: int, prec: int) -> tuple[str, int]:
    """Go's fmtFrac: the ``prec`` low decimal digits of ``v`` as ``.ddd`` without trailing zeros."""
    digits = []
    printed = False
    for _ in range(prec):
        d = v % 10
        printed = printed or d != 0
        if printed:
            digits.append(str(d))
        v //= 10
    s = ("." + "".join(reversed(digits))) if printed else ""
    return s, v


def duration(ns: int) -> str:
    """Go's ``time.Duration(ns).String()``."""
    ns = _wrap_int64(int(ns))
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns  # |MinInt64| fits Python ints; Go's uint64 cast gives the same digits
    if u < _NS_PER_S:
        if u < 1_000:
            prec, unit = 0, "ns"
        elif u < 1_000_000:
            prec, unit = 3, "µs"
        else:
            prec, unit = 6, "ms"
        frac, u = _frac(u, prec)
        out = f"{u}{frac}{unit}"
    else:
        frac, u = _frac(u, 9)
        out = f"{u % 60}{frac}s"
        u //= 60
        if u:
            out = f"{u % 60}m" + out
            u //= 60
            if u:
                out = f"{u}h" + out
    return ("-" + out) if neg else out


def duration_ms(ms: int) -> str:
    """``time.Duration(ms * int64(time.Millisecond)).String()``."""
    return duration(int(ms) * 1_000_000)


def go_div(a: int, b: int) -> int:
    q = abs(a) // b
    return q if a >= 0 else -q


def unix_rfc3339(seconds: int) -> str:
    """``time.Unix(seconds, 0).Format(time.RFC3339)`` in the local time zone."""
    try:
        t = _dt.datetime.fromtimestamp(int(seconds), _dt.timezone.utc).astimezone()
    except (OverflowError, OSError, ValueError):
        return _rfc3339_far(int(seconds))
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.year < 1000:
        s = f"{t.year:04d}" + s[s.index("-"):]
    off = t.utcoffset() or _dt.timedelta(0)
    if not off:
        return s + "Z"
    sign = "+" if off >= _dt.timedelta(0) else "-"
    mins = abs(int(off.total_seconds())) // 60
    return f"{s}{sign}{mins // 60:02d}:{mins % 60:02d}"


def _rfc3339_far(seconds: int) -> str:
    """Times Python's datetime cannot hold (years outside 1..9999): UTC from the civil calendar."""
    days, rem = divmod(seconds, 86400)
    # Howard Hinnant's civil_from_days
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y += m <= 2
    hh, rem = divmod(rem, 3600)
    mm, ss = divmod(rem, 60)
    ys = f"{y:04d}" if y >= 0 else f"-{-y:04d}"
    return f"{ys}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}Z"


def unix_ms_rfc3339(ms: int) -> str:
    """``time.Unix(ms/1000, 0)`` (Go's truncating division) as RFC3339 in the local zone."""
    return unix_rfc3339(go_div(int(ms), 1000))


def thousands(n: int) -> str:
    """English digit grouping of an integer: ``1234567`` -> ``1,234,567``."""
    return f"{int(n):,}"


# ------------------------------------------------------------------------------------ strconv.Unquote

class UnquoteError(ValueError):
    """Go's ``strconv.ErrSyntax``: the text is not a quoted Go string."""

    def __init__(self) -> None:
        super().__init__("invalid syntax")


_SIMPLE_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unquote(s: str) -> str:
    """Go's ``strconv.Unquote``; raises :class:`UnquoteError`."""
    if len(s) < 2 or s[0] != s[-1] or s[0] not in "\"'`":
        raise UnquoteError()
    q, body = s[0], s[1:-1]
    if q == "`":
        if "`" in body:
            raise UnquoteError()
        return body.replace("\r", "")
    if "\n" in body:
        raise UnquoteError()
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == q:
            raise UnquoteError()
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(body):
            raise UnquoteError()
        e = body[i + 1]
        i += 2
        if e in _SIMPLE_ESC:
            out.append(_SIMPLE_ESC[e])
        elif e in "'\"":
            if e != q:
                raise UnquoteError()
            out.append(e)
        elif e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            h = body[i:i + n]
            if len(h) != n or not all(ch in "0123456789abcdefABCDEF" for ch in h):
                raise UnquoteError()
            v = int(h, 16)
            i += n
            if e == "x":
                if q == "'":
                    out.append(chr(v))
                else:
                    out.append(bytes([v]).decode("latin-1") if v < 0x80 else _raw_byte(v))
            else:
                if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
                    raise UnquoteError()
                out.append(chr(v))
        elif e in "01234567":
            o = body[i - 1:i + 2]
            if len(o) != 3 or not all(ch in "01234567" for ch in o):
                raise UnquoteError()
            v = int(o, 8)
            if v > 255:
                raise UnquoteError()
            i += 2
            out.append(chr(v) if (q == "'" or v < 0x80) else _raw_byte(v))
        else:
            raise UnquoteError()
    res = "".join(out)
    if q == "'" and len(res) != 1:
        raise UnquoteError()
    return _join_raw_bytes(res)


# \xHH and octal escapes above 0x7f in a double-quoted Go string are raw bytes, not code points;
# they are collected as surrogate escapes and decoded together at the end.
def _raw_byte(v: int) -> str:
    return chr(0xDC00 + v)


def _join_raw_bytes(s: str) -> str:
    if not any(0xDC80 <= ord(c) <= 0xDCFF for c in s):
        return s
    b = s.encode("utf-8", "surrogateescape")
    return b.decode("utf-8", "surrogateescape")


# ------------------------------------------------------------------------------------- encoding/csv

def _needs_quotes(field: str, sep: str) -> bool:
    if field == "":
        return False
    if field == "\\.":
        return True
    if any(c in field for c in ("\n", "\r", '"', sep)):
        return True
    first = field[0]
    return first in "\t\n\v\f\r \x85\xa0" or (ord(first) > 0xFF and first.isspace())


def csv_line(record: Sequence[str], sep: str = ",") -> str:
    """One record as Go's ``csv.Writer`` writes it (``\\n`` line ends, ``""`` inside quotes)."""
    parts = []
    for field in record:
        if _needs_quotes(field, sep):
            parts.append('"' + field.replace('"', '""') + '"')
        else:
            parts.append(field)
    return sep.join(parts) + "\n"


# ----------------------------------------------------------------------------------- tablewriter

_ANSI = re.compile(r"\x1b\[(?:[0-9]{1,3}(?:;[0-9]{1,3})*)?[m|K]")


def display_width(s: str) -> int:
    """Terminal cells of ``s`` (go-runewidth without East Asian ambiguous widening)."""
    w = 0
    for c in _ANSI.sub("", s):
        o = ord(c)
        if o < 0x20 or 0x7F <= o < 0xA0:
            continue
        if unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me", "Cf"):
            continue
        w += 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
    return w


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The table of ``tools bucket inspect`` (tablewriter with Left/Right borders only, ``|``
    centre separator, no wrapping, cells aligned left)."""
    ncol = len(header)
    hlines = [h.split("\n") for h in header]
    cells = [[str(c).split("\n") for c in row] for row in rows]
    widths = []
    for i in range(ncol):
        w = max(display_width(x) for x in hlines[i])
        for r in cells:
            if i < len(r):
                w = max(w, max(display_width(x) for x in r[i]))
        widths.append(w)

    out = []
    for x in range(max(len(h) for h in hlines)):
        line = "|"
        for i in range(ncol):
            h = hlines[i][x].upper() if x < len(hlines[i]) else ""
            gap = widths[i] - display_width(h)
            if gap > 0:
                left = gap // 2
                h = " " * left + h + " " * (gap - left)
            line += f" {h} |"
        out.append(line)
    out.append("|" + "".join("-" * (w + 2) + "|" for w in widths))
    for r in cells:
        height = max(len(c) for c in r) if r else 1
        for x in range(height):
            line = ""
            for i, c in enumerate(r):
                s = c[x] if x < len(c) else "  "
                gap = widths[i] - display_width(s)
                line += "| " + (s + " " * gap if gap > 0 else s) + " "
            out.append(line + "|")
    return "\n".join(out) + "\n"


_GO_JSON_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def go_json(value) -> str:
    """``value`` as Go's encoding/json marshals it: compact, UTF-8 kept, ``<``, ``>``, ``&`` and
    U+2028/U+2029 escaped (its HTML-safe default). Key order is the caller's: Go writes struct
    fields in declaration order and map keys sorted."""
    import json

    out = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for a, b in _GO_JSON_ESCAPES:
        out = out.replace(a, b)
    return out


_MODEL_UNITS = (("y", 365 * 86_400_000, True), ("w", 7 * 86_400_000, True), ("d", 86_400_000, True),
                ("h", 3_600_000, False), ("m", 60_000, False), ("s", 1000, False), ("ms", 1, False))


def model_duration(ms: int) -> str:
    """Prometheus' ``model.Duration.String()`` (``2d``, ``1h30m``, ``0s``): years, weeks and days
    only when they divide the whole, then hours down to milliseconds."""
    ms = int(ms)
    if ms == 0:
        return "0s"
    out = ""
    for unit, mult, exact in _MODEL_UNITS:
        if exact and ms % mult:
            continue
        if ms // mult > 0:
            out += f"{ms // mult}{unit}"
            ms -= ms // mult * mult
    return out
