"""Render PromQL results exactly as Prometheus' JSON API does (``util/jsonutil/marshal.go``)."""
from __future__ import annotations

import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Optional

import numpy as np

try:  # the C kernel writes matrix points; the Python below is the reference and the fallback
    from ._jsonfmt import point as _c_point
    from ._jsonfmt import points as _c_points
    from ._jsonfmt import series as _c_series
except ImportError:  # pragma: no cover - an unbuilt source tree
    _c_point = _c_points = _c_series = None

__all__ = ["format_float", "format_scalar_float", "format_timestamp", "result_json", "result_pieces",
           "response_json"]

_HALF_POINTS = 200_000  # results with more points are written by two threads, half each
_second_writer: Optional[ThreadPoolExecutor] = None


def _fixed(f: float) -> str:
    # shortest round-trip digits, no exponent (Go strconv 'f', -1)
    s = format(Decimal(repr(f)), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def format_float(f: float) -> str:
    """Go ``strconv.AppendFloat(f, fmt, -1, 64)`` with 'e' for |f| < 1e-6 or >= 1e21, as ``MarshalFloat``."""
    r = _repr(float(f))
    if "e" not in r and "n" not in r:
        # 1e-4 <= |f| < 1e16 (or 0): repr already is the shortest round-trip digits in fixed
        # notation, as Go's 'f' -1; only an integral value's ".0" goes
        return r[:-2] if r[-2:] == ".0" else r
    return _format_float_slow(f)


def _format_float_slow(f: float) -> str:
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    a = abs(f)
    if a < 1e-6 or a >= 1e21:
        r = repr(float(f))  # Python: '1e-07', '1.5e+21' — Go uses at least two exponent digits
        mant, _, exp = r.partition("e")
        sign = exp[0] if exp[0] in "+-" else "+"
        digits = exp.lstrip("+-")
        if len(digits) < 2:
            digits = "0" + digits
        return f"{mant}e{sign}{digits}"
    return _fixed(f)


_repr = float.__repr__


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


_JSTR_CACHE: dict = {}


def _jstr_cached(s: str) -> str:
    """:func:`_jstr` for label names and values, which repeat across series and queries."""
    r = _JSTR_CACHE.get(s)
    if r is None:
        if len(_JSTR_CACHE) > 200_000:
            _JSTR_CACHE.clear()
        r = _JSTR_CACHE[s] = _jstr(s)
    return r


def _metric(labels) -> str:
    j = _jstr_cached
    return "{" + ",".join(f"{j(k)}:{j(v)}" for k, v in labels) + "}"


def _points(ts: list, vs: list, tcache: dict) -> str:
    """``[t,"v"],...`` of one series. Timestamps are formatted once per result (series of a range
    query share the step grid); a value equal to the one before (a gauge holding still) reuses
    its string, except 0 (0 and -0 compare equal but print differently)."""
    if len(tcache) > 100_000:
        tcache.clear()
    parts = []
    app = parts.append
    pv = None
    pvs = ""
    for t, v in zip(ts, vs):
        tstr = tcache.get(t)
        if tstr is None:
            tstr = tcache[t] = format_timestamp(t)
        if v != pv or v == 0:
            r = _repr(v)
            if "e" not in r and "n" not in r:
                pvs = r[:-2] if r[-2:] == ".0" else r
            else:
                pvs = _format_float_slow(v)
            pv = v
        app(f'[{tstr},"{pvs}"]')
    return ",".join(parts)


def _i8(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def _f8(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def result_json(result) -> str:
    """The ``data`` object: ``{"resultType":..., "result":...}`` for a :class:`~pythanos.promql.engine.Result`."""
    return b"".join(result_pieces(result)).decode()


def result_pieces(result) -> list:
    """:func:`result_json` as a list of bytes-like pieces, to be written one after another.

    Big vectors and matrices are written by the C kernel straight into buffers that go to the
    socket as they are (an 80 MB answer is never copied into a str and back); above
    ``_HALF_POINTS`` points a second thread writes the second half at the same time."""
    rt = result.type
    if rt in ("vector", "matrix") and _c_series is not None:
        items = result.value
        try:
            body = _series_pieces(items, rt == "vector")
        except (TypeError, BufferError):  # not str label pairs or int64/float64 arrays: the Python writer
            body = None
        if body is not None:
            return [f'{{"resultType":"{rt}","result":['.encode(), *body, b"]}"]
    return [_result_json_py(result).encode()]


def _series_pieces(items: list, vector: bool) -> list:
    n = len(items)
    points = n if vector else sum(len(s.t) for s in items)
    if points < _HALF_POINTS or n < 2:
        return [_c_series(items, 0, n, vector)]
    # split where half of the points are, so both threads take about as long
    half, acc, mid = points // 2, 0, n // 2
    if not vector:
        for i, s in enumerate(items):
            acc += len(s.t)
            if acc >= half:
                mid = max(1, min(n - 1, i + 1))
                break
    fut = _writer().submit(_c_series, items, mid, n, vector)
    first = _c_series(items, 0, mid, vector)
    return [first, b",", fut.result()]


_writer_lock = threading.Lock()


def _writer() -> ThreadPoolExecutor:
    global _second_writer
    with _writer_lock:
        if _second_writer is None:
            _second_writer = ThreadPoolExecutor(1, thread_name_prefix="json-writer")
        return _second_writer


def _result_json_py(result) -> str:
    """The reference writer (and the one for scalars and strings)."""
    rt = result.type
    if rt == "scalar":
        t, v = result.value
        body = f"[{_go_json_float(t / 1000)},{_jstr(format_scalar_float(v))}]"
    elif rt == "string":
        t, v = result.value
        body = f"[{_go_json_float(t / 1000)},{_jstr(v)}]"
    elif rt == "vector" and _c_point is not None:
        body = "[" + ",".join(
            f'{{"metric":{_metric(s.labels)},"value":{_c_point(int(s.t), float(s.v))}}}'
            for s in result.value) + "]"
    elif rt == "vector":
        body = "[" + ",".join(
            f'{{"metric":{_metric(s.labels)},"value":[{format_timestamp(s.t)},"{format_float(s.v)}"]}}'
            for s in result.value) + "]"
    elif _c_points is not None:
        body = "[" + ",".join(
            f'{{"metric":{_metric(s.labels)},"values":[{_c_points(_i8(s.t), _f8(s.v))}]}}'
            for s in result.value) + "]"
    else:
        tcache: dict = {}
        body = "[" + ",".join(
            f'{{"metric":{_metric(s.labels)},"values":[{_points(s.t.tolist(), s.v.tolist(), tcache)}]}}'
            for s in result.value) + "]"
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
