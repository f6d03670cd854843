"""Render PromQL results exactly as Prometheus' JSON API does (``util/jsonutil/marshal.go``)."""
from __future__ import annotations

import json
import math
from decimal import Decimal

__all__ = ["format_float", "format_scalar_float", "format_timestamp", "result_json", "response_json"]


def _fixed(f: float) -> str:
    # shortest round-trip digits, no exponent (Go strconv 'f', -1)
    s = format(Decimal(repr(f)), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def format_float(f: float) -> str:
    """Go ``strconv.AppendFloat(f, fmt, -1, 64)`` with 'e' for |f| < 1e-6 or >= 1e21, as ``MarshalFloat``."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    a = abs(f)
    if a < 1e-6 or a >= 1e21:
        r = repr(f)  # Python: '1e-07', '1.5e+21' — Go uses at least two exponent digits
        mant, _, exp = r.partition("e")
        sign = exp[0] if exp[0] in "+-" else "+"
        digits = exp.lstrip("+-")
        if len(digits) < 2:
            digits = "0" + digits
        return f"{mant}e{sign}{digits}"
    return _fixed(f)


def format_scalar_float(f: float) -> str:
    """Scalars use ``strconv.FormatFloat(v, 'f', -1, 64)``: always fixed notation."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    return _fixed(f)


def format_timestamp(t_ms: int) -> str:
    """``jsonutil.MarshalTimestamp``: seconds, then '.' and exactly three digits if the ms part is non-zero."""
    t_ms = int(t_ms)
    sign = "-" if t_ms < 0 else ""
    a = abs(t_ms)
    s, ms = divmod(a, 1000)
    return f"{sign}{s}.{ms:03d}" if ms else f"{sign}{s}"


def _go_json_float(x: float) -> str:
    # encoding/json float64: shortest repr, 'e' outside [1e-6, 1e21)
    if x == int(x) and abs(x) < 1e21:
        return str(int(x))
    a = abs(x)
    if a < 1e-6 or a >= 1e21:
        return format_float(x)
    return _fixed(x)


def _jstr(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _metric(labels) -> str:
    return "{" + ",".join(f"{_jstr(k)}:{_jstr(v)}" for k, v in labels) + "}"


def result_json(result) -> str:
    """The ``data`` object: ``{"resultType":..., "result":...}`` for a :class:`~pythanos.promql.engine.Result`."""
    rt = result.type
    if rt == "scalar":
        t, v = result.value
        body = f"[{_go_json_float(t / 1000)},{_jstr(format_scalar_float(v))}]"
    elif rt == "string":
        t, v = result.value
        body = f"[{_go_json_float(t / 1000)},{_jstr(v)}]"
    elif rt == "vector":
        body = "[" + ",".join(
            f'{{"metric":{_metric(s.labels)},"value":[{format_timestamp(s.t)},{_jstr(format_float(s.v))}]}}'
            for s in result.value) + "]"
    else:
        parts = []
        for s in result.value:
            pts = ",".join(f"[{format_timestamp(t)},{_jstr(format_float(v))}]" for t, v in zip(s.t.tolist(), s.v.tolist()))
            parts.append(f'{{"metric":{_metric(s.labels)},"values":[{pts}]}}')
        body = "[" + ",".join(parts) + "]"
    return f'{{"resultType":"{rt}","result":{body}}}'


def response_json(result=None, error=None, warnings=None) -> str:
    """The whole API envelope for a result or a :class:`~pythanos.promql.errors.PromQLError`."""
    if error is not None:
        out = f'{{"status":"error","errorType":{_jstr(error.error_type)},"error":{_jstr(str(error))}'
    else:
        out = f'{{"status":"success","data":{result_json(result)}'
    w = warnings if warnings is not None else (getattr(result, "warnings", None) if result is not None else None)
    if w:
        out += ',"warnings":[' + ",".join(_jstr(x) for x in w) + "]"
    return out + "}"
