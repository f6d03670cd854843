"""Prometheus 3.9.1's template functions (``template/template.go``) with their Go signatures.

Each function declares its Go parameter types so the executor checks arguments as Go's does
(``humanize`` takes ``interface {}``, ``toUpper`` a ``string``: ``toUpper $value`` is an error).
Number formatting goes through :mod:`.printf` (``%.4g``), time through Go's ``time`` printing, and
regular expressions through RE2 with Go's syntax (:mod:`pythanos.goregexp`).
"""
from __future__ import annotations

import ipaddress
import math
import unicodedata
from typing import Any, Callable, Mapping, Optional
from urllib.parse import unquote, urlsplit

from pythanos import gofmt, goregexp

from . import strconv as _sc
from . import values as V
from .exec import ANY, Func, FuncError
from .printf import can_backquote, quote, sprintf, utf8
from .exec import query_escape

_NIL_DEREF = "runtime error: invalid memory address or nil pointer dereference"
_MIN_INT64 = -(1 << 63)


def f2i64(v: float) -> int:
    """Go's ``int64(v)`` on amd64: truncation; NaN and out-of-range values give MinInt64."""
    if math.isnan(v) or math.isinf(v):
        return _MIN_INT64
    i = int(v)
    if not _MIN_INT64 <= i < (1 << 63):
        return _MIN_INT64
    return i


def _gdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _gmod(a: int, b: int) -> int:
    return a - b * _gdiv(a, b)


def parse_float(s: str) -> float:
    """``strconv.ParseFloat(s, 64)``; :class:`FuncError` with Go's text."""
    try:
        return _sc.parse_float(s)
    except ValueError as e:
        raise FuncError(str(e)) from None


def to_float(i: Any) -> float:
    """``ConvertToFloat`` of prometheus/common's template helpers."""
    if isinstance(i, bool):
        raise FuncError("can't convert bool to float")
    if isinstance(i, float):
        return i
    if type(i) is str:
        return parse_float(i)
    if isinstance(i, int) and not isinstance(i, V.Uint):
        return float(i)
    raise FuncError(f"can't convert {V.type_name(i)} to float")


def _g4(v: float) -> str:
    return sprintf("%.4g", [v])


def humanize(i: Any) -> str:
    v = to_float(i)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    if abs(v) >= 1:
        prefix = ""
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix = p
            v /= 1000
        return _g4(v) + prefix
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return _g4(v) + prefix


def humanize1024(i: Any) -> str:
    v = to_float(i)
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix = p
        v /= 1024
    return _g4(v) + prefix


def humanize_duration(i: Any) -> str:
    v = to_float(i)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if v == 0:
        return _g4(v) + "s"
    if abs(v) >= 1:
        sign = ""
        if v < 0:
            sign, v = "-", -v
        d = f2i64(v)
        seconds = _gmod(d, 60)
        minutes = _gmod(_gdiv(d, 60), 60)
        hours = _gmod(_gdiv(_gdiv(d, 60), 60), 24)
        days = _gdiv(_gdiv(_gdiv(d, 60), 60), 24)
        if days != 0:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours != 0:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes != 0:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return f"{_g4(v)}{prefix}s"


def humanize_percentage(i: Any) -> str:
    return _g4(to_float(i) * 100) + "%"


class _NaNOrInf(FuncError):
    pass


def float_to_time(v: float) -> V.GoTime:
    if math.isnan(v) or math.isinf(v):
        raise _NaNOrInf("value is NaN or Inf")
    ts = v * 1e9
    if ts > 9.223372036854775807e18 or ts < -9.223372036854775808e18:
        raise FuncError(f"{sprintf('%v', [v])} cannot be represented as a nanoseconds timestamp since it overflows int64")
    ns = f2i64(ts)
    ms = _gdiv(ns, 1_000_000)  # model.TimeFromUnixNano: milliseconds
    return V.GoTime(ms * 1_000_000)


def humanize_timestamp(i: Any) -> str:
    v = to_float(i)
    try:
        t = float_to_time(v)
    except _NaNOrInf:
        return _g4(v)
    return t.string()


def to_time(i: Any) -> V.GoTime:
    return float_to_time(to_float(i))


def to_duration(i: Any) -> V.GoDuration:
    return V.GoDuration(f2i64(to_float(i) * 1e9))


_UNITS = {"ms": (7, 1_000_000), "s": (6, 1_000_000_000), "m": (5, 60_000_000_000), "h": (4, 3_600_000_000_000),
          "d": (3, 86_400_000_000_000), "w": (2, 604_800_000_000_000), "y": (1, 31_536_000_000_000_000)}


def _parse_model_duration(s: str) -> int:
    if s == "0":
        return 0
    if s == "":
        raise FuncError("empty duration string")
    orig, dur, last = s, 0, 0
    while s:
        if not s[0].isdigit() or not s[0].isascii():
            raise FuncError(f"not a valid duration string: {quote(orig)}")
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        v = int(s[:i])
        if v >= 1 << 64:
            raise FuncError(f"not a valid duration string: {quote(orig)}")
        s = s[i:]
        i = 0
        while i < len(s) and not ("0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise FuncError(f"not a valid duration string: {quote(orig)}")
        u, s = s[:i], s[i:]
        if u not in _UNITS:
            raise FuncError(f"unknown unit {quote(u)} in duration {quote(orig)}")
        pos, mult = _UNITS[u]
        if pos <= last:
            raise FuncError(f"not a valid duration string: {quote(orig)}")
        last = pos
        if v > (1 << 63) // mult:
            raise FuncError("duration out of range")
        dur += v * mult
        if dur > (1 << 63) - 1:
            raise FuncError("duration out of range")
    return dur


def parse_duration(s: str) -> float:
    if s and s[0] == "-":
        return -_parse_model_duration(s[1:]) / 1e9
    return _parse_model_duration(s) / 1e9


def split_host_port(hp: str) -> Optional[tuple[str, str]]:
    """``net.SplitHostPort``; None on error."""
    i = hp.rfind(":")
    if i < 0:
        return None
    j = k = 0
    if hp[0] == "[":
        end = hp.find("]")
        if end < 0 or end + 1 == len(hp) or end + 1 != i:
            return None
        host = hp[1:end]
        j, k = 1, end + 1
    else:
        host = hp[:i]
        if ":" in host:
            return None
    if "[" in hp[j:] or "]" in hp[k:]:
        return None
    return host, hp[i + 1:]


def parse_ip(s: str) -> bool:
    """Whether ``net.ParseIP`` accepts ``s``."""
    if "%" in s:
        return False
    if ":" not in s:
        parts = s.split(".")
        if len(parts) != 4:
            return False
        for p in parts:
            if not p or not p.isascii() or not p.isdigit() or len(p) > 3 or int(p) > 255:
                return False
            if len(p) > 1 and p[0] == "0":
                return False
        return True
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def strip_port(hp: str) -> str:
    r = split_host_port(hp)
    return hp if r is None else r[0]


def strip_domain(hp: str) -> str:
    r = split_host_port(hp)
    host, port = (hp, "") if r is None else r
    if parse_ip(host):
        return hp
    host = host.split(".")[0]
    if port:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return host


# Unicode word-break classes as golang.org/x/text/cases collapses them: mid-word punctuation
# (MidLetter, MidNumLet, Single_Quote) and the letter-like classes; every other rune is a break
_MID = frozenset(":\u00b7\u0387\u055f\u05f4\u2027\ufe13\ufe55\uff1a.\u2018\u2019\u2024\ufe52\uff07\uff0e'")
_NOT_LETTER_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF),
                      (0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0xAC00, 0xD7AF))


def _letter_like(c: str) -> bool:
    """ALetter, Hebrew_Letter, Numeric, Extend, ExtendNumLet, Format or ZWJ (no word break)."""
    cat = unicodedata.category(c)
    if cat[0] == "M" or cat in ("Cf", "Pc", "Nd"):
        return True
    if not c.isalpha():
        return False
    o = ord(c)
    return not any(lo <= o <= hi for lo, hi in _NOT_LETTER_RANGES)


def title(s: str) -> str:
    """``cases.Title(language.AmericanEnglish, cases.NoLower)``: the first cased letter of each word
    title-cased (``1st`` -> ``1St``), the rest kept. A word ends at a rune of no letter-like
    word-break class (space, ``-``, ``,``) or at two mid-word runes in a row (``a..b``); one
    ``'`` ``.`` ``:`` keeps it going (``four.five``, ``don't``)."""
    out = []
    mid_word = prev_mid = False
    for c in s:
        is_mid = c in _MID
        if prev_mid and is_mid:
            mid_word = False
        if c.islower() or c.isupper() or c.istitle():
            out.append(c if mid_word else c.title())
            mid_word = True
        else:
            out.append(c)
            if not is_mid and not _letter_like(c):
                mid_word = False
        prev_mid = is_mid
    return "".join(out)


def _regexp_panic(pattern: str, e: goregexp.RegexpError) -> FuncError:
    q = "`" + pattern + "`" if can_backquote(pattern) else quote(pattern)
    return FuncError(f"regexp: Compile({q}): {e}")


def re_replace_all(pattern: str, repl: str, text: str) -> str:
    """``regexp.MustCompile(pattern).ReplaceAllString(text, repl)``."""
    try:
        rx = goregexp._compile(pattern, False, False)
    except goregexp.RegexpError as e:
        raise _regexp_panic(pattern, e) from None
    src = utf8(text)
    names = {}
    for name, idx in rx.NamedCapturingGroups():
        names[name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name] = idx
    out: list[bytes] = []
    last_end = 0
    pos = 0
    n = len(src)
    while pos <= n:
        spans = rx.Match(goregexp._UNANCHORED, src, pos, n)
        # RE2 may find an empty match inside a multi-byte rune; Go tries rune boundaries only
        while spans[0][0] >= 0 and spans[0][0] == spans[0][1] and spans[0][0] < n and src[spans[0][0]] & 0xC0 == 0x80:
            b = spans[0][0]
            while b < n and src[b] & 0xC0 == 0x80:
                b += 1
            spans = rx.Match(goregexp._UNANCHORED, src, b, n)
        if spans[0][0] < 0:
            break
        a0, a1 = spans[0]
        out.append(src[last_end:a0])
        if a1 > last_end or a0 == 0:
            groups = [None if s < 0 else src[s:e].decode("utf-8", "surrogateescape") for s, e in spans]
            out.append(utf8(goregexp.expand(repl, groups, names.get)))
        last_end = a1
        width = 1
        if pos < n:
            b = src[pos]
            width = 1 if b < 0x80 else 2 if b >> 5 == 6 else 3 if b >> 4 == 14 else 4 if b >> 3 == 30 else 1
        if pos + width > a1:
            pos += width
        elif pos + 1 > a1:
            pos += 1
        else:
            pos = a1
    out.append(src[last_end:])
    return b"".join(out).decode("utf-8", "surrogateescape")


def match(pattern: str, s: str) -> bool:
    """``regexp.MatchString``."""
    try:
        rx = goregexp._compile(pattern, False, True)
    except goregexp.RegexpError as e:
        raise FuncError(str(e)) from None
    b = utf8(s)
    return rx.Match(goregexp._UNANCHORED, b, 0, len(b))[0][0] >= 0


# ------------------------------------------------------------------------------------ samples

def make_sample(labels: Mapping[str, str], value: Any) -> V.Ptr:
    st = V.GoStruct(V.SAMPLE, {"Labels": V.GoMap(dict(labels)), "Value": value}, ("Value",))
    return V.Ptr(st, V.SAMPLE_PTR)


def _sample_of(s: Any) -> V.GoStruct:
    if not isinstance(s, V.Ptr) or s.target is None:
        raise FuncError(_NIL_DEREF)
    return s.target


def sort_by_label(label: str, v: V.GoSlice) -> V.GoSlice:
    v.items.sort(key=lambda p: utf8(_sample_of(p).fields["Labels"].d.get(label, "")))
    return v


QueryFn = Callable[[str, int], list]


def _first(v: V.GoSlice) -> V.Ptr:
    if v.items:
        return v.items[0]
    raise FuncError("first() called on vector with no elements")


def _args(*a: Any) -> V.GoMap:
    return V.GoMap({f"arg{i}": x for i, x in enumerate(a)}, V.MAP_SA, True)


def to_upper(s: str) -> str:
    """``strings.ToUpper``: each rune's simple mapping (``ß`` stays; Python's ``upper`` gives ``SS``)."""
    if s.isascii():
        return s.upper()
    out = []
    for c in s:
        if 0xDC80 <= ord(c) <= 0xDCFF:  # a byte that is not UTF-8: Go's strings.Map writes U+FFFD
            out.append("\ufffd")
            continue
        u = c.upper()
        if len(u) != 1:
            t = c.title()
            u = t if len(t) == 1 else c
        out.append(u)
    return "".join(out)


def to_lower(s: str) -> str:
    """``strings.ToLower``: each rune's simple mapping (``İ`` -> ``i``)."""
    if s.isascii():
        return s.lower()
    return "".join("\ufffd" if 0xDC80 <= ord(c) <= 0xDCFF else ("i" if c == "\u0130" else c)
                   if len(c.lower()) != 1 else c.lower() for c in s)


_S, _SP, _QR = "string", V.SAMPLE_PTR, V.QUERY_RESULT
_STATIC = {f.name: f for f in [
    Func("first", (_QR,), _first),
    Func("label", (_S, _SP), lambda name, s: _sample_of(s).fields["Labels"].get(name)),
    Func("value", (_SP,), lambda s: _sample_of(s).field("Value")),
    Func("strvalue", (_SP,), lambda s: _sample_of(s).fields["Labels"].get("__value__")),
    Func("args", (), _args, ANY),
    Func("reReplaceAll", (_S, _S, _S), re_replace_all),
    Func("safeHtml", (_S,), lambda s: V.HTML(s)),
    Func("match", (_S, _S), match),
    Func("title", (_S,), title),
    Func("toUpper", (_S,), to_upper),
    Func("toLower", (_S,), to_lower),
    Func("graphLink", (_S,), lambda e: f"/graph?g0.expr={query_escape(e)}&g0.tab=0"),
    Func("tableLink", (_S,), lambda e: f"/graph?g0.expr={query_escape(e)}&g0.tab=1"),
    Func("sortByLabel", (_S, _QR), sort_by_label),
    Func("stripPort", (_S,), strip_port),
    Func("stripDomain", (_S,), strip_domain),
    Func("humanize", (ANY,), humanize),
    Func("humanize1024", (ANY,), humanize1024),
    Func("humanizeDuration", (ANY,), humanize_duration),
    Func("humanizePercentage", (ANY,), humanize_percentage),
    Func("humanizeTimestamp", (ANY,), humanize_timestamp),
    Func("toTime", (ANY,), to_time),
    Func("toDuration", (ANY,), to_duration),
    Func("parseDuration", (_S,), parse_duration),
    Func("urlQueryEscape", (_S,), query_escape),
]}


def prometheus_funcs(timestamp_ms: int, external_url: Optional[str], query: Optional[QueryFn]) -> dict[str, Func]:
    """The function map ``NewTemplateExpander`` gives a template evaluated at ``timestamp_ms``: the
    fixed functions and the four bound to this evaluation (``query``, ``now``, ``pathPrefix``,
    ``externalURL``)."""

    def q(expr: str) -> V.GoSlice:
        if query is None:
            raise FuncError(_NIL_DEREF)
        try:
            vec = query(expr, timestamp_ms)
        except Exception as e:  # the query's own error, as Prometheus passes it on
            raise FuncError(str(e)) from None
        return V.GoSlice([make_sample(lb, float(val)) for lb, val in vec], V.QUERY_RESULT)

    def path_prefix() -> str:
        if external_url is None:
            raise FuncError(_NIL_DEREF)
        return unquote(urlsplit(external_url).path)  # url.URL's Path is the decoded path

    def ext_url() -> str:
        if external_url is None:
            raise FuncError(_NIL_DEREF)
        return external_url

    fs = dict(_STATIC)
    fs["query"] = Func("query", (_S,), q)
    fs["now"] = Func("now", (), lambda: timestamp_ms / 1000.0)
    fs["pathPrefix"] = Func("pathPrefix", (), path_prefix)
    fs["externalURL"] = Func("externalURL", (), ext_url)
    return fs


FUNC_NAMES = frozenset(prometheus_funcs(0, "", None)) | frozenset(
    ["and", "or", "call", "html", "index", "slice", "js", "len", "not", "print", "printf", "println",
     "urlquery", "eq", "ge", "gt", "le", "lt", "ne"])


# ------------------------------------------------------------------------------------ methods

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def _civil(ns: int) -> tuple[int, int, int, int, int, int, int, int, int]:
    """(year, month, day, hour, minute, second, nanosecond, weekday, yearday) of a UTC time."""
    sec, frac = divmod(ns, 1_000_000_000)
    days, rem = divmod(sec, 86400)
    date = gofmt._rfc3339_far(days * 86400)
    ymd = date[:-10]
    neg = ymd.startswith("-")
    y, mo, d = (ymd[1:] if neg else ymd).split("-")
    year = -int(y) if neg else int(y)
    month, day = int(mo), int(d)
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    yday = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][month - 1] + day + (1 if leap and month > 2 else 0)
    return year, month, day, rem // 3600, rem // 60 % 60, rem % 60, frac, (days + 4) % 7, yday


# layout elements, longest first where one is a prefix of another
_STD = ["January", "Jan", "Monday", "Mon", "MST", "002", "01", "02", "03", "04", "05", "06", "15", "1", "2006",
        "2", "__2", "_2", "3", "4", "5", "PM", "pm", "-07:00:00", "-070000", "-07:00", "-0700", "-07",
        "Z07:00:00", "Z070000", "Z07:00", "Z0700", "Z07"]


def _std_at(layout: str, i: int) -> tuple[str, int]:
    """Go's nextStdChunk at ``i``: (element, its length), or ("", 0) for a literal character."""
    c = layout[i]
    if c in ".,":
        j = i + 1
        if j < len(layout) and layout[j] in "09":
            while j < len(layout) and layout[j] == layout[i + 1]:
                j += 1
            if not (j < len(layout) and layout[j].isdigit()):
                return layout[i:j], j - i
        return "", 0
    if c == "_" and layout.startswith("_2006", i):
        return "", 0  # a literal _ before the year
    if c == "0" and i + 1 < len(layout) and not layout.startswith("002", i) and not "1" <= layout[i + 1] <= "6":
        return "", 0
    if c == "2" and not layout.startswith("2006", i):
        return "2", 1
    for std in _STD:
        if layout.startswith(std, i):
            if std == "Mon" and layout.startswith("Monday", i):
                return "Monday", 6
            if std in ("Jan", "Mon") and "a" <= layout[i + 3:i + 4] <= "z":
                break  # "Jant", "Mond": not an element
            return std, len(std)
    return "", 0


def time_format(ns: int, layout: str) -> str:
    """``time.Time.Format(layout)`` of a UTC time."""
    year, month, day, hour, minute, second, frac, wday, yday = _civil(ns)
    h12 = hour % 12 or 12
    out = []
    i = 0
    while i < len(layout):
        std, n = _std_at(layout, i)
        if not n:
            out.append(layout[i])
            i += 1
            continue
        i += n
        if std[0] in ".,":
            digits = f"{frac:09d}"[:len(std) - 1]
            if std[1] == "9":
                digits = digits.rstrip("0")
                out.append(std[0] + digits if digits else "")
            else:
                out.append(std[0] + digits)
            continue
        out.append({
            "January": lambda: _MONTHS[month - 1], "Jan": lambda: _MONTHS[month - 1][:3],
            "Monday": lambda: _DAYS[wday], "Mon": lambda: _DAYS[wday][:3], "MST": lambda: "UTC",
            "002": lambda: f"{yday:03d}", "__2": lambda: f"{yday:3d}", "01": lambda: f"{month:02d}",
            "02": lambda: f"{day:02d}", "03": lambda: f"{h12:02d}", "04": lambda: f"{minute:02d}",
            "05": lambda: f"{second:02d}", "06": lambda: f"{year % 100:02d}", "15": lambda: f"{hour:02d}",
            "1": lambda: str(month), "2006": lambda: (f"{year:04d}" if year >= 0 else f"-{-year:04d}"),
            "2": lambda: str(day), "_2": lambda: f"{day:2d}", "3": lambda: str(h12), "4": lambda: str(minute),
            "5": lambda: str(second), "PM": lambda: "PM" if hour >= 12 else "AM",
            "pm": lambda: "pm" if hour >= 12 else "am",
        }.get(std, lambda: "Z" if std[0] == "Z" else std.replace("07", "00").replace("-", "+"))())
    return "".join(out)


def time_method(t: V.GoTime, name: str) -> Optional[Func]:
    """The methods of ``time.Time`` templates use on ``toTime``'s result."""
    if name == "Format":
        return Func(name, ("string",), lambda layout: time_format(t.ns, layout))
    year, month, day, hour, minute, second, frac, wday, yday = _civil(t.ns)
    sec = t.ns // 1_000_000_000
    ms: dict[str, Callable[[], Any]] = {
        "Unix": lambda: sec,
        "UnixMilli": lambda: t.ns // 1_000_000,
        "UnixMicro": lambda: t.ns // 1_000,
        "UnixNano": lambda: t.ns,
        "String": t.string,
        "UTC": lambda: t,
        "IsZero": lambda: False,
        "Year": lambda: year,
        "Month": lambda: V.NamedInt(month, "time.Month", _MONTHS[month - 1]),
        "Day": lambda: day,
        "Weekday": lambda: V.NamedInt(wday, "time.Weekday", _DAYS[wday]),
        "YearDay": lambda: yday,
        "Hour": lambda: hour,
        "Minute": lambda: minute,
        "Second": lambda: second,
        "Nanosecond": lambda: frac,
    }
    fn = ms.get(name)
    return Func(name, (), fn) if fn is not None else None


def duration_method(d: V.GoDuration, name: str) -> Optional[Func]:
    ns = d.ns
    ms: dict[str, Callable[[], Any]] = {
        "Seconds": lambda: _gdiv(ns, 1_000_000_000) + (_gmod(ns, 1_000_000_000)) / 1e9,
        "Minutes": lambda: _gdiv(ns, 60_000_000_000) + (_gmod(ns, 60_000_000_000)) / 6e10,
        "Hours": lambda: _gdiv(ns, 3_600_000_000_000) + (_gmod(ns, 3_600_000_000_000)) / 3.6e12,
        "Milliseconds": lambda: _gdiv(ns, 1_000_000),
        "Microseconds": lambda: _gdiv(ns, 1_000),
        "Nanoseconds": lambda: ns,
        "String": d.string,
    }
    fn = ms.get(name)
    return Func(name, (), fn) if fn is not None else None
