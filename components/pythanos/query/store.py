"""The querier as a StoreAPI endpoint, so queriers stack (Thanos' querier serves ``thanos.Store``
through its proxy with component type ``query``).

Series are passed through, not de-duplicated: the querier above removes replica labels by
asking for ``without_replica_labels`` (forwarded to every endpoint) and merges replicas itself.
A label set sent by several endpoints becomes one series whose chunks are sorted by time with
byte-identical duplicates dropped, as Thanos' proxy does.
"""
from __future__ import annotations

from typing import AsyncIterator

from ..storeapi import InvalidArgument, Store, Unavailable
from ..storeapi.types import (MAX_TIME, MIN_TIME, PARTIAL_RESPONSE_ABORT, LabelNamesRequest, LabelsResult,
                              LabelValuesRequest, Series, SeriesRequest, SeriesWarning, StoreInfo)
from .proxy import Proxy, StoreFetchError

__all__ = ["QueryStore"]


class QueryStore(Store):
    presorted = False

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    async def info(self) -> StoreInfo:
        eps = [ep for ep in self.proxy.endpoints.active() if ep.info is None or ep.info.store]
        sets: list = []
        mint, maxt = MAX_TIME, MIN_TIME
        for ep in eps:
            for ls in ep.label_sets():
                if ls not in sets:
                    sets.append(ls)
            a, b = ep.time_range()
            mint, maxt = min(mint, a), max(maxt, b)
        if not eps:
            mint, maxt = MIN_TIME, MAX_TIME
        return StoreInfo(min_time=mint, max_time=maxt, component_type="query", label_sets=sets, exemplars=(0, 0),
                         rules=True)

    async def series(self, req: SeriesRequest) -> AsyncIterator:
        if not req.matchers:
            raise InvalidArgument("no matchers specified (excluding external labels)")
        partial = req.partial_response_strategy != PARTIAL_RESPONSE_ABORT
        try:
            got = await self.proxy.fetch(req.matchers, req.min_time, req.max_time,
                                         replica_labels=req.without_replica_labels, partial=partial,
                                         skip_chunks=req.skip_chunks,
                                         max_resolution_window=req.max_resolution_window,
                                         aggregates=list(req.aggregates),
                                         shard_info=req.raw.shard_info if req.shard is not None else None)
        except StoreFetchError as e:
            raise Unavailable(str(e)) from None
        for w in got.warnings:
            yield SeriesWarning(w)
        for lbls, chunks in got.series.items():
            if got.sources.get(lbls, 1) > 1:
                chunks = _merge_chunks(chunks)
            yield Series(lbls, chunks)

    async def label_names(self, req: LabelNamesRequest) -> LabelsResult:
        vals, ws = await self._labels(None, req)
        return LabelsResult(vals, ws)

    async def label_values(self, req: LabelValuesRequest) -> LabelsResult:
        vals, ws = await self._labels(req.label, req)
        return LabelsResult(vals, ws)

    async def _labels(self, name, req):
        partial = req.partial_response_strategy != PARTIAL_RESPONSE_ABORT
        try:
            if name is None:
                return await self.proxy.label_names(req.matchers, req.start, req.end, partial=partial)
            return await self.proxy.label_values(name, req.matchers, req.start, req.end, partial=partial)
        except StoreFetchError as e:
            raise Unavailable(str(e)) from None


def _merge_chunks(chunks: list) -> list:
    seen = set()
    out = []
    for c in sorted(chunks, key=lambda c: (c[0], c[1])):
        aggrs = tuple(sorted((a, e, bytes(d)) for a, (e, d) in c[4].items())) if len(c) > 4 else ()
        key = (c[0], c[1], c[2], bytes(c[3]), aggrs)
        if key in seen:
            continue
        seen.add(key)
        out.append(c)
    return out
