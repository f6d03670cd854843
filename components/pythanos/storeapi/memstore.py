"""An in-memory :class:`~pythanos.storeapi.Store` of fixed float series, cut into real XOR chunks.

For tests and examples (a querier's tests can serve known data through it):
``MemoryStore([({"__name__": "up", "job": "a"}, ts_ms, values), ...], external_labels={...})``.
"""
from __future__ import annotations

from typing import AsyncIterator, Iterable, Mapping, Optional, Sequence

import numpy as np

from ..tsdb.chunkenc import encode_xor
from .server import Store
from .types import (
    MAX_TIME,
    MIN_TIME,
    XOR,
    Chunk,
    LabelNamesRequest,
    Labels,
    LabelValuesRequest,
    Series,
    SeriesRequest,
    StoreInfo,
    norm_labels,
)

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    def __init__(self, series: Iterable[tuple[Mapping[str, str], Sequence[int], Sequence[float]]], *,
                 external_labels: Mapping[str, str] | Iterable[tuple[str, str]] = (),
                 component_type: str = "store", samples_per_chunk: int = 120,
                 min_time: Optional[int] = None, max_time: Optional[int] = None) -> None:
        self.external_labels = norm_labels(external_labels)
        self.component_type = component_type
        self._series: list[tuple[Labels, list[Chunk]]] = []
        lo, hi = MAX_TIME, MIN_TIME
        for lbls, t, v in series:
            t = np.asarray(t, dtype=np.int64)
            v = np.asarray(v, dtype=np.float64)
            chunks = []
            for i in range(0, len(t), samples_per_chunk):
                ct, cv = t[i:i + samples_per_chunk], v[i:i + samples_per_chunk]
                chunks.append(Chunk(int(ct[0]), int(ct[-1]), XOR, encode_xor(ct, cv)))
            if len(t):
                lo, hi = min(lo, int(t[0])), max(hi, int(t[-1]))
            self._series.append((norm_labels(lbls), chunks))
        self._series.sort(key=lambda s: s[0])
        self.min_time = lo if min_time is None else min_time
        self.max_time = hi if max_time is None else max_time
        if not self._series:
            self.min_time, self.max_time = MIN_TIME, MAX_TIME
        self.requests: list = []  # every request the store saw, for tests

    async def info(self) -> StoreInfo:
        return StoreInfo(min_time=self.min_time, max_time=self.max_time, external_labels=self.external_labels,
                         component_type=self.component_type)

    def _select(self, matchers, mint: int, maxt: int):
        for lbls, chunks in self._series:
            d = dict(lbls)
            if not all(m.matches(d.get(m.name, "")) for m in matchers):
                continue
            sel = [c for c in chunks if c.max_time >= mint and c.min_time <= maxt]
            if sel:
                yield lbls, sel

    async def series(self, req: SeriesRequest) -> AsyncIterator[Series]:
        self.requests.append(req)
        for lbls, chunks in self._select(req.matchers, req.min_time, req.max_time):
            yield Series(lbls, [] if req.skip_chunks else chunks)

    async def label_names(self, req: LabelNamesRequest):
        self.requests.append(req)
        return sorted({n for lbls, _ in self._select(req.matchers, req.start, req.end) for n, _ in lbls})

    async def label_values(self, req: LabelValuesRequest):
        self.requests.append(req)
        return sorted({dict(lbls).get(req.label, "") for lbls, _ in self._select(req.matchers, req.start, req.end)}
                      - {""})
