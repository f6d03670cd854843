"""Go's ``fmt`` printing (``Sprint``, ``Sprintln``, ``Sprintf``) over the template engine's values.

Templates print through ``fmt``: an action's value with ``Fprint``, ``printf`` with ``Sprintf``, and
the humanize functions with ``%.4g``. Alert annotations must come out byte for byte as Prometheus
renders them, so this follows Go's rules: floats as ``strconv`` formats them (``%v`` is the shortest
``'g'`` form with an exponent from 1e+21 or below 1e-4, ``+Inf``, ``NaN``), widths and flags as
``fmt`` applies them, and wrong verbs as ``%!d(float64=1)``.

Values are the engine's (see :mod:`.values`): Python ``bool``/``int``/``float``/``str``/``complex``,
and the wrapper classes for Go's maps, structs, pointers, slices and interfaces.
"""
from __future__ import annotations

import math
import struct
from typing import Any, Sequence

from . import values as V

__all__ = ["sprint", "sprintln", "sprintf", "format_float", "quote", "quote_rune", "GoErr"]


GoErr = V.GoErr


# ------------------------------------------------------------------------------------ strconv

def _digits(v: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of |v| and the decimal point position (``0.ddd x 10^dp``)."""
    r = repr(abs(v))
    if "e" in r:
        mant, e = r.split("e")
        exp = int(e)
    else:
        mant, exp = r, 0
    if "." in mant:
        ip, fp = mant.split(".")
    else:
        ip, fp = mant, ""
    if fp == "0":
        fp = ""
    digs = (ip + fp).lstrip("0")
    dp = len(ip) + exp
    if ip == "0" or not ip.strip("0"):
        # 0.000123 -> digits after leading zeros
        lead = len(fp) - len(fp.lstrip("0"))
        digs = fp.lstrip("0")
        dp = -lead + exp
    digs = digs.rstrip("0")
    if not digs:
        return "0", 1
    return digs, dp


def _fmt_e(neg: bool, digs: str, dp: int, prec: int, ch: str) -> str:
    out = "-" if neg else ""
    out += digs[0]
    if prec > 0:
        frac = digs[1:1 + prec]
        out += "." + frac + "0" * (prec - len(frac))
    exp = 0 if digs == "0" else dp - 1
    sign = "+" if exp >= 0 else "-"
    exp = abs(exp)
    out += ch + sign + (f"{exp:02d}")
    return out


def _fmt_f(neg: bool, digs: str, dp: int, prec: int) -> str:
    out = "-" if neg else ""
    if dp > 0:
        ip = digs[:dp] + "0" * max(0, dp - len(digs))
    else:
        ip = "0"
    out += ip
    if prec > 0:
        frac = []
        for i in range(prec):
            j = dp + i
            frac.append(digs[j] if 0 <= j < len(digs) else "0")
        out += "." + "".join(frac)
    return out


def format_float(v: float, fmt: str, prec: int) -> str:
    """``strconv.FormatFloat(v, fmt, prec, 64)`` for ``fmt`` in ``e E f g G x X b``."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if fmt in "xX":
        return _format_hex(v, prec, fmt)
    if fmt == "b":
        bits = struct.unpack("<Q", struct.pack("<d", v))[0]
        exp = (bits >> 52) & 0x7FF
        mant = bits & ((1 << 52) - 1)
        if exp == 0:
            exp = 1
        else:
            mant |= 1 << 52
        exp -= 1023 + 52
        return ("-" if v < 0 or (v == 0 and math.copysign(1, v) < 0) else "") + f"{mant}p{exp:+d}"
    neg = v < 0 or (v == 0 and math.copysign(1.0, v) < 0)
    if prec < 0:
        digs, dp = _digits(v)
        if fmt in "eE":
            return _fmt_e(neg, digs, dp, len(digs) - 1, fmt)
        if fmt == "f":
            return _fmt_f(neg, digs, dp, max(len(digs) - dp, 0))
        # 'g' shortest: the exponent form below 1e-4 and from 1e+06 on (strconv's eprec 6)
        exp = dp - 1
        if exp < -4 or exp >= 6:
            return _fmt_e(neg, digs, dp, len(digs) - 1, "e" if fmt == "g" else "E")
        return _fmt_f(neg, digs, dp, max(len(digs) - dp, 0))
    # fixed precision: Python's formatting rounds the exact binary value as Go does
    if fmt in "gG" and prec == 0:
        prec = 1
    s = format(v, f".{prec}{fmt}")
    if fmt in "gG" or fmt in "eE":
        s = s.replace("inf", "Inf")
    return s


def _format_hex(v: float, prec: int, fmt: str) -> str:
    """``%x`` of a float: ``-0x1.8p+01`` (hex mantissa, binary exponent of at least two digits)."""
    neg = v < 0 or (v == 0 and math.copysign(1.0, v) < 0)
    if v == 0:
        mant_s, exp = "0", 0
        frac = ""
    else:
        m, e = math.frexp(abs(v))  # v = m * 2**e, 0.5 <= m < 1
        m *= 2
        e -= 1
        bits = int(m * (1 << 52))  # 1.xxx in 53 bits
        frac_bits = bits & ((1 << 52) - 1)
        if prec >= 0 and prec < 13:
            shift = 52 - 4 * prec
            q, r = divmod(frac_bits | (1 << 52), 1 << shift)
            half = 1 << (shift - 1) if shift else 0
            if shift and (r > half or (r == half and q & 1)):
                q += 1
            if q >> (4 * prec) >= 2:
                q >>= 1
                e += 1
            frac_bits = q & ((1 << (4 * prec)) - 1)
            frac = f"{frac_bits:0{prec}x}" if prec else ""
        elif prec < 0:
            frac = f"{frac_bits:013x}".rstrip("0")
        else:
            frac = f"{frac_bits:013x}" + "0" * (prec - 13)
        mant_s, exp = "1", e
    if v == 0 and prec > 0:
        frac = "0" * prec
    s = ("-" if neg else "") + "0x" + mant_s + ("." + frac if frac else "") + "p" + ("+" if exp >= 0 else "-") + f"{abs(exp):02d}"
    return s.upper().replace("0X", "0X") if fmt == "X" else s


def _is_print(c: str) -> bool:
    if c == " ":
        return True
    return c.isprintable() and not c.isspace()


def quote(s: str, ascii_only: bool = False, q: str = '"') -> str:
    """``strconv.Quote`` (``QuoteToASCII`` with ``ascii_only``)."""
    out = [q]
    for c in s:
        o = ord(c)
        if c == q or c == "\\":
            out.append("\\" + c)
        elif 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x80 and _is_print(c):
            out.append(c)
        elif not ascii_only and o >= 0x80 and _is_print(c):
            out.append(c)
        elif c in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[c])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append(q)
    return "".join(out)


def quote_rune(r: int, ascii_only: bool = False) -> str:
    if r > 0x10FFFF or 0xD800 <= r <= 0xDFFF or r < 0:
        r = 0xFFFD
    c = chr(r)
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    return quote(c, ascii_only, "'")


def can_backquote(s: str) -> bool:
    for c in s:
        if c == "`" or c == "\ufeff":
            return False
        if (ord(c) < 0x20 and c != "\t") or c == "\x7f":
            return False
        if 0xDC80 <= ord(c) <= 0xDCFF:
            return False
    return True


def utf8(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


# ------------------------------------------------------------------------------------ the printer

class _Fmt:
    """One verb's flags, width and precision (Go's ``fmt.fmt``)."""
    __slots__ = ("plus", "minus", "sharp", "space", "zero", "plus_v", "sharp_v", "wid", "prec")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.plus = self.minus = self.sharp = self.space = self.zero = False
        self.plus_v = self.sharp_v = False
        self.wid: int | None = None
        self.prec: int | None = None


class _Printer:
    def __init__(self) -> None:
        self.buf: list[str] = []
        self.f = _Fmt()
        self.erroring = False

    # padding -----------------------------------------------------------------------------
    def pad(self, s: str) -> None:
        f = self.f
        if not f.wid:
            self.buf.append(s)
            return
        n = f.wid - len(s)
        if n <= 0:
            self.buf.append(s)
            return
        if f.minus:
            self.buf.append(s + " " * n)
        else:
            self.buf.append(("0" if f.zero else " ") * n + s)

    def _trunc(self, s: str) -> str:
        p = self.f.prec
        return s[:p] if p is not None else s

    # basic kinds ---------------------------------------------------------------------------
    def fmt_bool(self, v: bool, verb: str, arg: Any) -> None:
        if verb in "tv":
            self.pad("true" if v else "false")
        else:
            self.bad_verb(verb, arg)

    def fmt_integer(self, v: int, signed: bool, verb: str, arg: Any) -> None:
        f = self.f
        if verb in "vd":
            if verb == "v" and f.sharp_v and not signed:
                self._int(v, 16, "v", "0123456789abcdefx", sharp=True)
            else:
                self._int(v, 10, verb, "0123456789abcdefx")
        elif verb == "b":
            self._int(v, 2, verb, "0123456789abcdefx")
        elif verb in "oO":
            self._int(v, 8, verb, "0123456789abcdefx")
        elif verb == "x":
            self._int(v, 16, verb, "0123456789abcdefx")
        elif verb == "X":
            self._int(v, 16, verb, "0123456789ABCDEFX")
        elif verb == "c":
            self.pad(chr(v) if 0 <= v <= 0x10FFFF and not 0xD800 <= v <= 0xDFFF else "\ufffd")
        elif verb == "q":
            self.pad(quote_rune(v, f.plus))
        elif verb == "U":
            digits = max(4, f.prec or 0)
            s = f"U+{v & 0xFFFFFFFFFFFFFFFF:0{digits}X}"
            if f.sharp and 0 <= v <= 0x10FFFF and _is_print(chr(v)):
                s += " '" + chr(v) + "'"
            old = f.zero
            f.zero = False
            self.pad(s)
            f.zero = old
        else:
            self.bad_verb(verb, arg)

    def _int(self, v: int, base: int, verb: str, digits: str, sharp: bool | None = None) -> None:
        f = self.f
        sharp = f.sharp if sharp is None else sharp
        neg = v < 0
        u = -v if neg else v
        prec = 0
        if f.prec is not None:
            prec = f.prec
            if prec == 0 and u == 0:
                old = f.zero
                f.zero = False
                self.pad("")  # Go writes the width in spaces
                f.zero = old
                return
        elif f.zero and not f.minus and f.wid:
            prec = f.wid
            if neg or f.plus or f.space:
                prec -= 1
        if base == 10:
            s = str(u)
        elif base == 16:
            s = "".join(digits[int(c, 16)] for c in f"{u:x}")
        elif base == 8:
            s = f"{u:o}"
        else:
            s = f"{u:b}"
        if len(s) < prec:
            s = "0" * (prec - len(s)) + s
        if sharp:
            if base == 2:
                s = "0b" + s
            elif base == 8 and s[0] != "0":
                s = "0" + s
            elif base == 16:
                s = "0" + digits[16] + s
        if verb == "O":
            s = "0o" + s
        if neg:
            s = "-" + s
        elif f.plus:
            s = "+" + s
        elif f.space:
            s = " " + s
        old = f.zero
        f.zero = False
        self.pad(s)
        f.zero = old

    def fmt_float(self, v: float, verb: str, arg: Any) -> None:
        if verb == "v":
            self._float(v, "g", -1)
        elif verb in "bgGxX":
            self._float(v, verb, -1)
        elif verb in "feE":
            self._float(v, verb, 6)
        elif verb == "F":
            self._float(v, "f", 6)
        else:
            self.bad_verb(verb, arg)

    def _float(self, v: float, verb: str, prec: int) -> None:
        f = self.f
        if f.prec is not None:
            prec = f.prec
        num = format_float(v, verb, prec)
        if num[0] in "+-":
            sign, num = num[0], num[1:]
        else:
            sign = "+"
        if f.space and sign == "+" and not f.plus:
            sign = " "
        if num[0] in "IN":
            old = f.zero
            f.zero = False
            if num[0] == "N" and not f.space and not f.plus:
                self.pad(num)
            else:
                self.pad(sign + num)
            f.zero = old
            return
        if f.sharp and verb != "b":
            digits = 0
            if verb in "vgGx":  # not X: Go's list has only the lower-case hex verb
                digits = prec if prec != -1 else 6
            tail = ""
            body = num
            for i, c in enumerate(num):
                if c in "pP" or (c in "eE" and verb not in "xX"):
                    body, tail = num[:i], num[i:]
                    break
            has_point = "." in body
            saw_nonzero = False
            for c in body:
                if c == ".":
                    continue
                if c != "0":
                    saw_nonzero = True
                if saw_nonzero:
                    digits -= 1
            if not has_point:
                if body == "0":
                    digits -= 1
                body += "."
            if digits > 0:
                body += "0" * digits
            num = body + tail
        if f.plus or sign != "+":
            if f.zero and not f.minus and f.wid and f.wid > len(num) + 1:
                self.buf.append(sign + "0" * (f.wid - len(num) - 1) + num)
                return
            self.pad(sign + num)
            return
        self.pad(num)

    def fmt_complex(self, v: complex, verb: str, arg: Any) -> None:
        if verb in "vbgGxXfFeE":
            old = self.f.plus
            self.buf.append("(")
            self.fmt_float(v.real, verb, arg)
            self.f.plus = True
            self.fmt_float(v.imag, verb, arg)
            self.buf.append("i)")
            self.f.plus = old
        else:
            self.bad_verb(verb, arg)

    def fmt_string(self, s: str, verb: str, arg: Any) -> None:
        f = self.f
        if verb == "v":
            if f.sharp_v:
                self._q(s)
            else:
                self.pad(self._trunc(s))
        elif verb == "s":
            self.pad(self._trunc(s))
        elif verb in "xX":
            self._sx(utf8(s), "0123456789abcdefx" if verb == "x" else "0123456789ABCDEFX")
        elif verb == "q":
            self._q(s)
        else:
            self.bad_verb(verb, arg)

    def _q(self, s: str) -> None:
        f = self.f
        s = self._trunc(s)
        if f.sharp and can_backquote(s):
            self.pad("`" + s + "`")
            return
        self.pad(quote(s, f.plus))

    def _sx(self, b: bytes, digits: str) -> None:
        f = self.f
        n = len(b)
        if f.prec is not None and f.prec < n:
            n = f.prec
        if n == 0:
            if f.wid:
                self.buf.append(("0" if f.zero and not f.minus else " ") * f.wid)
            return
        parts = []
        for i in range(n):
            if f.space and i > 0:
                parts.append(" ")
            if f.sharp and (f.space or i == 0):
                parts.append("0" + digits[16])
            parts.append(digits[b[i] >> 4] + digits[b[i] & 15])
        s = "".join(parts)
        if f.wid and f.wid > len(s):
            s = s + " " * (f.wid - len(s)) if f.minus else ("0" if f.zero else " ") * (f.wid - len(s)) + s
        self.buf.append(s)

    # errors --------------------------------------------------------------------------------
    def bad_verb(self, verb: str, arg: Any) -> None:
        self.erroring = True
        self.buf.append("%!" + verb + "(")
        if arg is None:
            self.buf.append("<nil>")
        else:
            self.buf.append(V.type_name(arg) + "=")
            self.print_arg(arg, "v")
        self.buf.append(")")
        self.erroring = False

    # dispatch -------------------------------------------------------------------------------
    def print_arg(self, arg: Any, verb: str, depth: int = 0) -> None:
        if verb == "w":
            if not isinstance(arg, GoErr):
                self.bad_verb("w", V.deiface(arg))
                return
            verb = "v"
        if isinstance(arg, V.Iface):
            if depth > 0:
                if arg.v is None:
                    self.pad("<nil>")
                    return
                self.print_arg(arg.v, verb, depth + 1)
                return
            arg = arg.v
        if arg is None:
            if depth > 0 and verb != "v":
                self.bad_verb(verb, None)
                return
            if verb in "Tv":
                self.pad("<nil>")
            else:
                self.bad_verb(verb, None)
            return
        if verb == "T":
            self.pad(self._trunc(V.type_name(arg)))
            return
        if verb == "p":
            if isinstance(arg, (V.GoMap, V.GoSlice, V.Ptr, V.GoTime, V.GoDuration)):
                self._pointer(V.type_name(arg), arg, "p")
            else:
                self.bad_verb("p", arg)
            return
        if isinstance(arg, GoErr):
            if verb in "vsxXq":
                self.fmt_string(str(arg), verb, arg)
            else:
                self.buf.append(f"%!{verb}(*errors.errorString=&{{{arg}}})")
        elif isinstance(arg, bool):
            self.fmt_bool(arg, verb, arg)
        elif isinstance(arg, V.Uint):
            self.fmt_integer(int(arg), False, verb, arg)
        elif isinstance(arg, V.NamedInt) and arg.text is not None and verb in "vsxXq" and not self.f.sharp_v \
                and not self.erroring:
            self.fmt_string(arg.text, verb, arg)  # a named int with String() (time.Month)
        elif isinstance(arg, int):
            self.fmt_integer(V.wrap_int64(arg), True, verb, arg)
        elif isinstance(arg, float):
            self.fmt_float(arg, verb, arg)
        elif isinstance(arg, complex):
            self.fmt_complex(arg, verb, arg)
        elif isinstance(arg, str):
            self.fmt_string(str(arg), verb, arg)
        elif not self._methods(arg, verb):
            self.print_value(arg, verb, depth)

    def _methods(self, arg: Any, verb: str) -> bool:
        if self.erroring:
            return False
        s = V.stringer(arg)
        if s is None:
            return False
        if self.f.sharp_v:
            return False
        if verb in "vsxXq":
            self.fmt_string(s, verb, arg)
            return True
        return False

    def _go_syntax(self, v: Any, depth: int, iface: bool = False) -> None:
        """``%#v`` of a composite value: Go syntax with type names."""
        if v is None or (isinstance(v, V.Iface) and v.v is None):
            self.buf.append("interface {}(nil)" if (iface or isinstance(v, V.Iface)) else "<nil>")
            return
        if isinstance(v, V.Iface):
            v = v.v
        if isinstance(v, V.GoMap):
            self.buf.append(v.typ + "{")
            for i, k in enumerate(sorted(v.d)):
                if i:
                    self.buf.append(", ")
                self.print_arg(k, "v", depth + 1)
                self.buf.append(":")
                self._go_syntax(v.d[k], depth + 1, v.elem_iface)
            self.buf.append("}")
        elif isinstance(v, V.GoStruct):
            self.buf.append(v.typ + "{")
            for i, name in enumerate(v.order):
                if i:
                    self.buf.append(", ")
                self.buf.append(name + ":")
                self._go_syntax(v.fields[name], depth + 1, name in v.iface_fields)
            self.buf.append("}")
        elif isinstance(v, V.GoSlice):
            self.buf.append(v.typ + "{")
            for i, e in enumerate(v.items):
                if i:
                    self.buf.append(", ")
                self._go_syntax(e, depth + 1)
            self.buf.append("}")
        elif isinstance(v, V.Ptr):
            if v.target is None:
                self.buf.append(f"({v.typ})(nil)")
            elif depth == 0:
                self.buf.append("&")
                self._go_syntax(v.target, depth + 1)
            else:
                self.buf.append(f"({v.typ})(0xc{id(v.target) & 0xFFFFFFFFF:09x})")
        elif isinstance(v, V.GoTime):
            self.pad(self._trunc(v.go_string()))  # time.Time's GoString, as fmt prints a GoStringer
        elif isinstance(v, V.GoDuration):
            self.buf.append(f"({v.typ})(0x{0xC000000000 | (id(v) & 0xFFFFFFFFF):x})")
        else:
            self.print_arg(v, "v", depth + 1)

    def print_value(self, v: Any, verb: str, depth: int) -> None:
        if self.f.sharp_v and verb == "v":
            self._go_syntax(v, depth)
            return
        if depth > 0 and not isinstance(v, V.Iface) and v is not None:
            if self._methods(v, verb):
                return
        if isinstance(v, V.GoMap):
            self.buf.append("map[")
            for i, k in enumerate(sorted(v.d)):
                if i:
                    self.buf.append(" ")
                self.print_arg(k, verb, depth + 1)
                self.buf.append(":")
                self.print_arg(v.d[k], verb, depth + 1)
            self.buf.append("]")
        elif isinstance(v, V.GoStruct):
            self.buf.append("{")
            for i, name in enumerate(v.order):
                if i:
                    self.buf.append(" ")
                if self.f.plus_v:
                    self.buf.append(name + ":")
                self.print_arg(v.field(name), verb, depth + 1)
            self.buf.append("}")
        elif isinstance(v, V.GoSlice):
            self.buf.append("[")
            for i, e in enumerate(v.items):
                if i:
                    self.buf.append(" ")
                self.print_arg(e, verb, depth + 1)
            self.buf.append("]")
        elif isinstance(v, V.Ptr):
            if v.target is None:
                self.pad("<nil>")
            elif depth == 0:
                self.buf.append("&")
                self.print_value(v.target, verb, depth + 1)
            else:
                self._pointer(v.typ, v.target, verb)
        elif isinstance(v, V.GoTime) and depth == 0:
            self.buf.append("&{" + " ".join("%!" + verb + "(" + t + ")" for t in ("uint64", "int64", "*time.Location")) + "}")
        elif isinstance(v, (V.GoTime, V.GoDuration)):
            self._pointer(v.typ, v, verb)
        else:
            self.pad(str(v))

    def _pointer(self, typ: str, target: Any, verb: str) -> None:
        """Go's fmtPointer: a pointer fmt has no method for prints as its address. No one can
        reproduce Go's addresses; one of the same shape stands in."""
        addr = 0xC000000000 | (id(target) & 0xFFFFFFFFF)
        if verb in "vp":
            self._int(addr, 16, "v", "0123456789abcdefx", sharp=not self.f.sharp)
        elif verb in "bodxX":
            self.fmt_integer(addr, False, verb, target)
        else:
            self.buf.append(f"%!{verb}({typ}=")
            self._int(addr, 16, "v", "0123456789abcdefx", sharp=not self.f.sharp)
            self.buf.append(")")

    # entry points -----------------------------------------------------------------------------
    def do_printf(self, fmt: str, args: Sequence[Any]) -> None:
        end = len(fmt)
        argn = 0
        after_index = False
        reordered = False
        i = 0
        f = self.f
        while i < end:
            good_argn = True
            j = fmt.find("%", i)
            if j < 0:
                self.buf.append(fmt[i:])
                break
            if j > i:
                self.buf.append(fmt[i:j])
            i = j + 1
            f.clear()
            while i < end and fmt[i] in "#0+- ":
                c = fmt[i]
                if c == "#":
                    f.sharp = True
                elif c == "0":
                    f.zero = True
                elif c == "+":
                    f.plus = True
                elif c == "-":
                    f.minus = True
                else:
                    f.space = True
                i += 1
            # argument index
            argn, i, after_index, ok, reo = self._arg_number(argn, fmt, i, len(args))
            reordered |= reo
            good_argn &= ok
            # width
            if i < end and fmt[i] == "*":
                i += 1
                w, argn = _int_from_arg(args, argn)
                if w is None:
                    self.buf.append("%!(BADWIDTH)")
                    f.wid = None
                else:
                    f.wid = w
                    if w < 0:
                        f.wid = -w
                        f.minus = True
                        f.zero = False
                after_index = False
            else:
                k = i
                while i < end and fmt[i].isdigit() and fmt[i] in "0123456789":
                    i += 1
                f.wid = int(fmt[k:i]) if i > k and i - k <= 6 else None
                if i - k > 6:
                    f.wid = None
                if after_index and f.wid is not None:
                    good_argn = False
            # precision
            if i + 1 < end and fmt[i] == ".":
                i += 1
                if after_index:
                    good_argn = False
                argn, i, after_index, ok, reo = self._arg_number(argn, fmt, i, len(args))
                reordered |= reo
                good_argn &= ok
                if i < end and fmt[i] == "*":
                    i += 1
                    p, argn = _int_from_arg(args, argn)
                    if p is not None and p < 0:
                        p = None
                        f.prec = None
                    elif p is not None:
                        f.prec = p
                    if p is None:
                        f.prec = None
                        self.buf.append("%!(BADPREC)")
                    after_index = False
                else:
                    k = i
                    while i < end and fmt[i] in "0123456789":
                        i += 1
                    f.prec = int(fmt[k:i]) if i > k else 0
            if not after_index:
                argn, i, after_index, ok, reo = self._arg_number(argn, fmt, i, len(args))
                reordered |= reo
                good_argn &= ok
            if i >= end:
                self.buf.append("%!(NOVERB)")
                break
            verb = fmt[i]
            i += 1
            if verb == "%":
                self.buf.append("%")
            elif not good_argn:
                self.buf.append("%!" + verb + "(BADINDEX)")
            elif argn >= len(args):
                self.buf.append("%!" + verb + "(MISSING)")
            else:
                if verb in "vw":
                    f.sharp_v, f.sharp = f.sharp, False
                    f.plus_v, f.plus = f.plus, False
                self.print_arg(args[argn], verb)
                argn += 1
        if not reordered and argn < len(args):
            f.clear()
            self.buf.append("%!(EXTRA ")
            for n, a in enumerate(args[argn:]):
                if n:
                    self.buf.append(", ")
                if a is None or (isinstance(a, V.Iface) and a.v is None):
                    self.buf.append("<nil>")
                else:
                    self.buf.append(V.type_name(V.deiface(a)) + "=")
                    self.print_arg(a, "v")
            self.buf.append(")")

    def _arg_number(self, argn: int, fmt: str, i: int, nargs: int):
        """Go's argNumber: (new argn, new i, found, good, reordered)."""
        if i >= len(fmt) or fmt[i] != "[":
            return argn, i, False, True, False
        for k in range(i + 1, len(fmt)):
            if fmt[k] == "]":
                inner = fmt[i + 1:k]
                width = k - i + 1
                if inner.isdigit() and inner.isascii():
                    idx = int(inner) - 1
                    if 0 <= idx < nargs:
                        return idx, i + width, True, True, True
                    return argn, i + width, True, False, True
                return argn, i + width, False, False, True
        return argn, i + 1, False, False, True


def _int_from_arg(args: Sequence[Any], argn: int) -> tuple[int | None, int]:
    if argn >= len(args):
        return None, argn
    a = V.deiface(args[argn])
    argn += 1
    if isinstance(a, bool) or not isinstance(a, int):
        return None, argn
    if not -1_000_000 <= a <= 1_000_000:
        return None, argn
    return int(a), argn


def sprintf(fmt: str, args: Sequence[Any]) -> str:
    """``fmt.Sprintf``."""
    if "%" not in fmt and not args:
        return fmt
    p = _Printer()
    p.do_printf(fmt, args)
    return "".join(p.buf)


def _is_string(a: Any) -> bool:
    a = V.deiface(a)
    return isinstance(a, str)


def sprint(args: Sequence[Any]) -> str:
    """``fmt.Sprint``: a space between operands when neither side is a string."""
    p = _Printer()
    prev_string = False
    for n, a in enumerate(args):
        is_string = _is_string(a)
        if n > 0 and not is_string and not prev_string:
            p.buf.append(" ")
        p.f.clear()
        p.print_arg(a, "v")
        prev_string = is_string
    return "".join(p.buf)


def sprintln(args: Sequence[Any]) -> str:
    p = _Printer()
    for n, a in enumerate(args):
        if n:
            p.buf.append(" ")
        p.f.clear()
        p.print_arg(a, "v")
    p.buf.append("\n")
    return "".join(p.buf)
