"""The Go values a Prometheus template sees, as Python objects.

Go's template engine decides by a value's type and kind (truth, comparison, field access, which
``fmt`` verb applies, the type named in an error), so every value here knows its Go type name:

====================  ==========================================================
Python                Go
====================  ==========================================================
``None``              no value (an invalid ``reflect.Value``; prints ``<no value>``)
``bool int float``    ``bool``, ``int`` (64-bit), ``float64``
``str`` / ``HTML``    ``string`` / ``html/template.HTML`` (a string kind)
``complex``           ``complex128``
:class:`Uint`         ``uint8`` (a byte of a string, from ``index``)
:class:`GoMap`        ``map[string]string``, ``map[string]interface {}``
:class:`GoStruct`     the alert data struct, ``template.sample``
:class:`Ptr`          ``*template.sample``
:class:`GoSlice`      ``template.queryResult``
:class:`Iface`        a value held in an ``interface {}`` field or map element
:class:`GoTime`       ``*time.Time`` (``toTime``)
:class:`GoDuration`   ``*time.Duration`` (``toDuration``)
====================  ==========================================================
"""
from __future__ import annotations

from typing import Any, Optional

from pythanos import gofmt

INVALID, BOOL, INT, UINT, FLOAT, COMPLEX, STRING, MAP, STRUCT, PTR, SLICE, IFACE = range(12)


def wrap_int64(n: int) -> int:
    return ((n + (1 << 63)) % (1 << 64)) - (1 << 63)


class HTML(str):
    """``html/template.HTML`` (``safeHtml``): a string kind of another type."""
    __slots__ = ()


class GoErr(str):
    """An ``error`` operand of ``fmt.Errorf`` (``%w`` takes it; its text is ``Error()``)."""
    __slots__ = ()


class Uint(int):
    """``uint8``."""
    __slots__ = ()


class NamedInt(int):
    """An int of a named Go type (``parse.Pos``); prints as an int, or as ``text`` when the type
    has a ``String()`` (``time.Month``)."""

    def __new__(cls, v: int, typ: str, text: Optional[str] = None) -> "NamedInt":
        o = super().__new__(cls, v)
        o.typ, o.text = typ, text
        return o


class Stringer:
    """A Go value known here only by its ``String()`` and type name (a parse node, a
    ``reflect.Type``): what error messages format."""
    __slots__ = ("text", "typ")

    def __init__(self, text: str, typ: str) -> None:
        self.text, self.typ = text, typ


class Iface:
    """A value seen through an ``interface {}`` (struct field or map element); ``v`` None is a nil
    interface. Go unwraps it after each pipeline command; until then its type is ``interface {}``."""
    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v


class GoMap:
    __slots__ = ("d", "typ", "elem_iface")

    def __init__(self, d: dict, typ: str = "map[string]string", elem_iface: bool = False) -> None:
        self.d, self.typ, self.elem_iface = d, typ, elem_iface

    def get(self, key: str) -> Any:
        """An element, or the element type's zero value (``missingkey=zero``)."""
        if key in self.d:
            v = self.d[key]
        else:
            v = None if self.elem_iface else ""
        return Iface(v) if self.elem_iface else v

    def zero(self) -> Any:
        return Iface(None) if self.elem_iface else ""


class GoStruct:
    __slots__ = ("typ", "fields", "order", "iface_fields")

    def __init__(self, typ: str, fields: dict, iface_fields: tuple = ()) -> None:
        self.typ, self.fields, self.order, self.iface_fields = typ, fields, tuple(fields), iface_fields

    def field(self, name: str) -> Any:
        v = self.fields[name]
        return Iface(v) if name in self.iface_fields else v


class StringerStruct(GoStruct):
    """A struct with a ``String()`` method (the parser's token, in its error messages)."""
    __slots__ = ("text",)

    def __init__(self, typ: str, fields: dict, text: str) -> None:
        super().__init__(typ, fields)
        self.text = text


class Ptr:
    __slots__ = ("target", "typ")

    def __init__(self, target: Any, typ: str) -> None:
        self.target, self.typ = target, typ


class GoSlice:
    __slots__ = ("items", "typ")

    def __init__(self, items: list, typ: str) -> None:
        self.items, self.typ = items, typ


class GoDuration:
    """``*time.Duration``; nanoseconds."""
    __slots__ = ("ns",)
    typ = "*time.Duration"

    def __init__(self, ns: int) -> None:
        self.ns = wrap_int64(ns)

    def string(self) -> str:
        return gofmt.duration(self.ns)


class GoTime:
    """``*time.Time`` in UTC; nanoseconds since the epoch."""
    __slots__ = ("ns",)
    typ = "*time.Time"

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def string(self) -> str:
        """``time.Time.String()``: ``2006-01-02 15:04:05.999999999 +0000 UTC``."""
        sec, frac = divmod(self.ns, 1_000_000_000)
        date = gofmt._rfc3339_far(sec)  # YYYY-MM-DDTHH:MM:SSZ, proleptic Gregorian, UTC
        s = date[:-1].replace("T", " ")
        if frac:
            s += ("." + f"{frac:09d}").rstrip("0")
        return s + " +0000 UTC"

    def go_string(self) -> str:
        """``time.Time.GoString()``: ``time.Date(1970, time.January, 1, 0, 0, 1, 500000000, time.UTC)``."""
        sec, frac = divmod(self.ns, 1_000_000_000)
        date = gofmt._rfc3339_far(sec)[:-1]
        ymd, hms = date.split("T")
        neg = ymd.startswith("-")
        y, mo, d = (ymd[1:] if neg else ymd).split("-")
        hh, mi, ss = hms.split(":")
        year = -int(y) if neg else int(y)
        return (f"time.Date({year}, time.{_MONTH_NAMES[int(mo) - 1]}, {int(d)}, {int(hh)}, {int(mi)}, {int(ss)}, "
                f"{frac}, time.UTC)")


_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
                "November", "December")
STRUCT_ALERT = "struct { Labels map[string]string; ExternalLabels map[string]string; ExternalURL string; Value interface {} }"
SAMPLE = "template.sample"
SAMPLE_PTR = "*template.sample"
QUERY_RESULT = "template.queryResult"
MAP_SS = "map[string]string"
MAP_SA = "map[string]interface {}"


def type_name(v: Any) -> str:
    """Go's ``reflect.Type.String()`` of a value."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, Uint):
        return "uint8"
    if isinstance(v, NamedInt):
        return v.typ
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, HTML):
        return "template.HTML"
    if isinstance(v, GoErr):
        return "*errors.errorString"
    if isinstance(v, str):
        return "string"
    if isinstance(v, complex):
        return "complex128"
    if isinstance(v, Iface):
        return "interface {}"
    return v.typ


def elem_type_name(v: Any) -> str:
    """The type name of a value reached through a pointer (``*time.Duration`` -> ``time.Duration``)."""
    if isinstance(v, (GoTime, GoDuration)):
        return v.typ[1:]
    return type_name(v)


def kind(v: Any) -> int:
    if v is None:
        return INVALID
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, Uint):
        return UINT
    if isinstance(v, int):
        return INT
    if isinstance(v, float):
        return FLOAT
    if isinstance(v, str):
        return STRING
    if isinstance(v, complex):
        return COMPLEX
    if isinstance(v, Iface):
        return IFACE
    if isinstance(v, GoMap):
        return MAP
    if isinstance(v, GoStruct):
        return STRUCT
    if isinstance(v, GoSlice):
        return SLICE
    return PTR  # Ptr, GoTime, GoDuration


def deiface(v: Any) -> Any:
    """The concrete value inside an interface (Go's ``indirectInterface``)."""
    return v.v if isinstance(v, Iface) else v


def stringer(v: Any) -> Optional[str]:
    """``String()`` of a value whose type has one (``fmt.Stringer``), else None."""
    if isinstance(v, (GoTime, GoDuration)):
        return v.string()
    if isinstance(v, (Stringer, StringerStruct)):
        return v.text
    if isinstance(v, NamedInt):
        return v.text
    return None


def is_true(v: Any) -> tuple[bool, bool]:
    """Go's ``template.IsTrue``: (truth, whether the value has one)."""
    v = deiface(v)
    k = kind(v)
    if k == INVALID:
        return False, True
    if k in (BOOL, INT, UINT, FLOAT, COMPLEX):
        return v != 0, True
    if k == STRING:
        return len(v) > 0, True
    if k == MAP:
        return len(v.d) > 0, True
    if k == SLICE:
        return len(v.items) > 0, True
    if k == STRUCT:
        return True, True
    if isinstance(v, Ptr):
        return v.target is not None, True
    return True, True
