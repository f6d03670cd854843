"""HTTP API parameters as Prometheus and Thanos parse them (``web/api/v1/api.go``,
``pkg/api/query/v1.go``); every error is an :class:`ApiError` with Thanos' wording."""
from __future__ import annotations

import math
import re
import time
from datetime import datetime
from typing import Optional


from ..tsdb.labels import Matcher

__all__ = ["ApiError", "parse_time", "parse_duration", "parse_bool", "parse_limit", "parse_selector",
           "MIN_TIME_MS", "MAX_TIME_MS"]

# Prometheus' v1.MinTime / v1.MaxTime in milliseconds (the default metadata range)
MIN_TIME_MS = -9223309901257974000
MAX_TIME_MS = 9223309901257974999


class ApiError(Exception):
    """``errorType`` and message of an API error; ``status`` is Thanos' HTTP code for the type."""

    STATUS = {"bad_data": 400, "execution": 422, "canceled": 503, "timeout": 503, "internal": 500}

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type, self.message = error_type, message

    @property
    def status(self) -> int:
        return self.STATUS.get(self.error_type, 500)

    def __str__(self) -> str:
        return self.message


_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_time(s: str) -> int:
    """Milliseconds from float Unix seconds (fraction rounded to ms) or RFC3339(Nano)."""
    try:
        f = float(s)
    except ValueError:
        f = None
    if f is not None and s.strip().lower() not in ("nan", "inf", "+inf", "-inf", "infinity", "+infinity",
                                                   "-infinity"):
        sec = math.trunc(f)
        frac = round((f - sec) * 1000) / 1000
        return int(sec) * 1000 + int(round(frac * 1000))
    m = _RFC3339.match(s)
    if m:
        frac = m.group(7) or ""
        base = s[: m.start(7)] if frac else s[: m.start(8)]
        tz = m.group(8)
        tz = "+00:00" if tz in ("Z", "z") else tz
        try:
            dt = datetime.fromisoformat(base.replace("t", "T") + tz)
        except ValueError:
            dt = None
        if dt is not None:
            ns = int((frac[1:] + "000000000")[:9]) if frac else 0
            return int(dt.timestamp()) * 1000 + ns // 1_000_000
    raise ApiError("bad_data", f'cannot parse "{s}" to a valid timestamp')


_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}
_PROM_DUR = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_duration(s: str) -> int:
    """Milliseconds from float seconds or a Prometheus duration (``5m``, ``1h30m``)."""
    try:
        d = float(s)
    except ValueError:
        d = None
    if d is not None:
        ns = d * 1e9
        if not math.isfinite(ns) or abs(ns) > 2 ** 63:
            raise ApiError("bad_data", f'cannot parse "{s}" to a valid duration. It overflows int64')
        return int(ns) // 1_000_000
    m = _PROM_DUR.match(s)
    if s and s != "0" and m and any(m.groups()):
        parts = m.groups()
        ms = 0
        for val, unit in zip(parts, ("y", "w", "d", "h", "m", "s", "ms")):
            if val:
                ms += int(val) * _UNITS[unit]
        return ms
    if s == "0":
        return 0
    raise ApiError("bad_data", f'cannot parse "{s}" to a valid duration')


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_bool(s: str, name: str) -> bool:
    """Go ``strconv.ParseBool`` with Thanos' wrapping."""
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ApiError("bad_data", f"'{name}' parameter: strconv.ParseBool: parsing \"{s}\": invalid syntax")


def parse_limit(s: str) -> int:
    if not s:
        return 0
    try:
        n = int(s)
    except ValueError:
        raise ApiError("bad_data", f'cannot parse "{s}" to a valid limit') from None
    if n < 0:
        raise ApiError("bad_data", "limit must be non-negative")
    return n


def parse_selector(text: str) -> list[Matcher]:
    """A series selector (``match[]``, ``storeMatch[]``) into matchers; errors as PromQL's."""
    from ..promql.selector import SelectorError
    from ..promql.selector import parse_selector as parse

    try:
        return parse(text)
    except SelectorError as e:
        raise ApiError("bad_data", str(e)) from None


def now_ms() -> int:
    return int(time.time() * 1000)


def first(params, name: str, default: str = "") -> str:
    v = params.getall(name, None) if hasattr(params, "getall") else params.get(name)
    if not v:
        return default
    return v[0] if isinstance(v, list) else v


def optional(params, name: str) -> Optional[str]:
    v = first(params, name, "")
    return v if v != "" else None
