"""Recording rules (Prometheus 3.9.1 ``rules/recording.go``): the query's vector renamed to the
record name with the rule's labels set over the series' own."""
from __future__ import annotations

from typing import Awaitable, Callable, Optional

from .alerting import LabelKey, OutSample

__all__ = ["RecordingRule", "ERR_DUPLICATE_RECORDING"]

ERR_DUPLICATE_RECORDING = "vector contains metrics with the same labelset after applying rule labels"

QueryFn = Callable[[str, int], Awaitable[list[tuple[dict[str, str], float]]]]


class RecordingRule:
    """One ``record:`` rule."""

    kind = "record"

    def __init__(self, name: str, expr: str, *, labels: Optional[dict[str, str]] = None, source=None) -> None:
        self.name = name
        self.expr = expr
        self.labels = dict(labels or {})
        self.source = source
        self.health = "unknown"
        self.last_error = ""
        self.evaluation_time_s = 0.0
        self.last_evaluation = 0.0

    async def eval(self, ts: int, query_offset_ns: int, query: QueryFn, limit: int = 0,
                   blocking_query=None) -> list[OutSample]:
        """Samples at the query time (ms); raises on a query error, duplicate series or ``limit``."""
        t = ts - query_offset_ns
        res = await query(self.expr, t)
        t_ms = t // 10**6
        out: list[OutSample] = []
        seen: set[LabelKey] = set()
        for lb, v in res:
            d = dict(lb)
            d["__name__"] = self.name
            d.update(self.labels)
            key = tuple(sorted((k, x) for k, x in d.items() if x != ""))  # an empty value deletes, as Go's labels.Builder
            if key in seen:
                raise RuntimeError(ERR_DUPLICATE_RECORDING)
            seen.add(key)
            out.append((key, t_ms, v))
        if limit > 0 and len(out) > limit:
            raise RuntimeError(f"exceeded limit of {limit} with {len(out)} series")
        return out
