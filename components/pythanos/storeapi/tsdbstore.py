"""StoreAPI over one local TSDB announced with external labels (Thanos ``pkg/store/tsdb.go``
``TSDBStore``): what the ruler serves its recorded series with.

External labels are never stored in the TSDB; :class:`~pythanos.storeapi.server.StoreServer`
checks and drops matchers on them and puts them on every answered series, from :meth:`info`.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import AsyncIterator, Callable, Optional

import grpc

from .server import InvalidArgument, Store, StoreError, Unavailable
from .types import (FLOAT_HISTOGRAM, HISTOGRAM, MAX_TIME, XOR, LabelNamesRequest, LabelsResult, LabelValuesRequest,
                    Series, SeriesRequest, StoreInfo)

__all__ = ["TSDBStore"]

#: Prometheus' chunk encodings (chunkenc: XOR 1, histogram 2, float histogram 3) -> Thanos' storepb numbers
_TO_THANOS = {1: XOR, 2: HISTOGRAM, 3: FLOAT_HISTOGRAM}
#: Thanos' samples limit counts every chunk as this many samples (pkg/store MaxSamplesPerChunk)
SAMPLES_PER_CHUNK = 120


class LimitError(StoreError):
    """``--store.limits.request-*`` exceeded: Thanos' limiter returns a plain error, which gRPC
    answers as UNKNOWN."""

    code = grpc.StatusCode.UNKNOWN


class TSDBStore(Store):
    """One TSDB (``db()`` gives it; None while it is not open) announced with ``ext_labels``.

    TSDB reads run on ``executor`` so the event loop stays free; ``ready`` gives the reason the
    store cannot answer yet (None: it can), answered as UNAVAILABLE. ``rules``: the component
    also serves the Rules API, said in its Info. ``series_limit`` / ``samples_limit``
    (``--store.limits.request-series|samples``, 0: none) fail a Series call past them, as Thanos'
    limited store server (samples counted as 120 per chunk); ``dropped(reason)`` is called then
    (``thanos_store_selects_dropped_total{reason="series"|"chunks"}``)."""

    def __init__(self, db: Callable[[], object], ext_labels: dict[str, str], *, component_type: str,
                 executor: Optional[Executor] = None, ready: Callable[[], Optional[str]] = lambda: None,
                 rules: bool = False, series_limit: int = 0, samples_limit: int = 0,
                 dropped: Callable[[str], None] = lambda reason: None) -> None:
        self.series_limit = series_limit
        self.samples_limit = samples_limit
        self.dropped = dropped
        self._db = db
        self.ext = tuple(sorted(ext_labels.items()))
        self.component_type = component_type
        self.executor = executor
        self.ready = ready
        self.rules = rules

    def _open_db(self):
        why = self.ready()
        db = self._db()
        if why is None and db is None:
            why = "TSDB not open"
        if why is not None:
            raise Unavailable(f"{self.component_type} not ready: {why}")
        return db

    async def _run(self, fn):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def info(self) -> StoreInfo:
        mint = self._open_db().min_time
        return StoreInfo(min_time=mint, max_time=MAX_TIME, external_labels=self.ext,
                         component_type=self.component_type, supports_without_replica_labels=True,
                         tsdb_infos=[(self.ext, mint, MAX_TIME)], rules=self.rules)

    async def series(self, req: SeriesRequest) -> AsyncIterator:
        db = self._open_db()
        if not req.matchers:
            raise InvalidArgument("no matchers specified (excluding external labels)")
        found = await self._run(lambda: list(db.series(req.matchers, req.min_time, req.max_time,
                                                       skip_chunks=req.skip_chunks)))
        n = samples = 0
        for labels, chunks in found:
            n += 1
            if self.series_limit and n > self.series_limit:
                self.dropped("series")
                raise LimitError(f"failed to send series: limit {self.series_limit} violated (got {n})")
            samples += len(chunks) * SAMPLES_PER_CHUNK
            if self.samples_limit and samples > self.samples_limit:
                self.dropped("chunks")
                raise LimitError(f"failed to send samples: limit {self.samples_limit} violated (got {samples})")
            yield Series(labels, [] if req.skip_chunks else [(a, z, _TO_THANOS[e], d) for a, z, e, d in chunks])

    async def label_names(self, req: LabelNamesRequest) -> LabelsResult:
        db = self._open_db()
        return LabelsResult(sorted(await self._run(lambda: db.label_names(req.matchers, req.start, req.end))))

    async def label_values(self, req: LabelValuesRequest) -> LabelsResult:
        db = self._open_db()
        return LabelsResult(sorted(await self._run(lambda: db.label_values(req.label, req.matchers, req.start,
                                                                           req.end))))
