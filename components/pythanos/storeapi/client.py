"""A StoreAPI client (``grpc.aio``): what a querier uses to talk to Thanos or pythanos stores.

``StoreClient("host:port")``: :meth:`~StoreClient.info` (InfoAPI, falling back to the old
``Store.Info`` when the endpoint does not implement it), :meth:`~StoreClient.series` (accepts
single ``series`` frames, ``batch`` frames, ``warning`` and ``hints`` frames),
:meth:`~StoreClient.label_names`, :meth:`~StoreClient.label_values`. Every error is a
:class:`StoreAPIError` that names the endpoint and the method and carries the gRPC code.
"""
from __future__ import annotations

from typing import AsyncIterator, Iterable, Optional, Sequence, Union

import grpc
from google.protobuf import any_pb2

from ..tsdb.labels import Matcher
from . import service as svc
from .pb import info_pb2, rpc_pb2, types_pb2
from .types import (
    MAX_TIME,
    MIN_TIME,
    PARTIAL_RESPONSE_WARN,
    LabelsResult,
    Series,
    SeriesWarning,
    StoreInfo,
    matcher_to_pb,
    series_from_pb,
)

__all__ = ["StoreClient", "StoreAPIError"]

MatcherLike = Union[Matcher, types_pb2.LabelMatcher]


class StoreAPIError(Exception):
    """A failed StoreAPI call: ``address``, ``method`` (full path), ``code`` (grpc.StatusCode)."""

    def __init__(self, address: str, method: str, code: Optional[grpc.StatusCode], details: str) -> None:
        self.address, self.method, self.code, self.details = address, method, code, details
        name = code.name if code is not None else "ERROR"
        super().__init__(f"store {address} {method}: {name}: {details}")


def _pb_matchers(ms: Iterable[MatcherLike]) -> list:
    return [m if isinstance(m, types_pb2.LabelMatcher) else matcher_to_pb(m) for m in ms]


class StoreClient:
    """One endpoint. ``timeout`` (seconds) bounds each call (a whole Series stream included)
    unless the call passes its own; ``info_timeout`` bounds Info (Thanos: 5 s)."""

    def __init__(self, address: str, *, timeout: float = 120.0, info_timeout: float = 5.0,
                 credentials: Optional[grpc.ChannelCredentials] = None,
                 options: Sequence[tuple] = ()) -> None:
        self.address = address
        self.timeout = timeout
        self.info_timeout = info_timeout
        self._credentials = credentials
        self._options = list(svc.CLIENT_OPTIONS) + list(options)
        self._channel: Optional[grpc.aio.Channel] = None
        self._calls: dict = {}

    # -- channel --
    def _call(self, path: str):
        c = self._calls.get(path)
        if c is None:
            if self._channel is None:
                if self._credentials is not None:
                    self._channel = grpc.aio.secure_channel(self.address, self._credentials, options=self._options)
                else:
                    self._channel = grpc.aio.insecure_channel(self.address, options=self._options)
            req, resp, streaming = svc.METHODS[path]
            make = self._channel.unary_stream if streaming else self._channel.unary_unary
            c = make(path, request_serializer=req.SerializeToString, response_deserializer=resp.FromString)
            self._calls[path] = c
        return c

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._calls.clear()

    async def __aenter__(self) -> "StoreClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _error(self, path: str, e: BaseException) -> StoreAPIError:
        if isinstance(e, grpc.aio.AioRpcError):
            return StoreAPIError(self.address, path, e.code(), e.details() or "")
        return StoreAPIError(self.address, path, None, f"{type(e).__name__}: {e}")

    async def _unary(self, path: str, request, timeout: Optional[float]):
        try:
            return await self._call(path)(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.aio.AioRpcError as e:
            raise self._error(path, e) from None

    # -- Info --
    async def info(self, timeout: Optional[float] = None) -> StoreInfo:
        """InfoAPI; when the endpoint answers UNIMPLEMENTED (Thanos < v0.21), ``Store.Info``."""
        t = self.info_timeout if timeout is None else timeout
        try:
            resp = await self._unary(svc.INFO, info_pb2.InfoRequest(), t)
        except StoreAPIError as e:
            if e.code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            return StoreInfo.from_store_info_pb(await self.store_info(t))
        try:
            return StoreInfo.from_info_pb(resp)
        except ValueError as e:
            raise StoreAPIError(self.address, svc.INFO, None, str(e)) from None

    async def info_raw(self, timeout: Optional[float] = None) -> info_pb2.InfoResponse:
        return await self._unary(svc.INFO, info_pb2.InfoRequest(), self.info_timeout if timeout is None else timeout)

    async def store_info(self, timeout: Optional[float] = None) -> rpc_pb2.InfoResponse:
        """The deprecated ``thanos.Store/Info`` (Thanos <= v0.36 servers, and ours)."""
        return await self._unary(svc.STORE_INFO, rpc_pb2.InfoRequest(),
                                 self.info_timeout if timeout is None else timeout)

    # -- Series --
    def series_request(self, matchers: Iterable[MatcherLike], min_time: int = MIN_TIME, max_time: int = MAX_TIME,
                       *, skip_chunks: bool = False, response_batch_size: int = 0,
                       without_replica_labels: Sequence[str] = (), limit: int = 0,
                       max_resolution_window: int = 0, aggregates: Sequence[int] = (),
                       partial_response_strategy: int = PARTIAL_RESPONSE_WARN,
                       hints: Optional[any_pb2.Any] = None,
                       query_hints: Optional[rpc_pb2.QueryHints] = None,
                       shard_info: Optional[rpc_pb2.ShardInfo] = None) -> rpc_pb2.SeriesRequest:
        r = rpc_pb2.SeriesRequest(
            min_time=min_time, max_time=max_time, matchers=_pb_matchers(matchers), skip_chunks=skip_chunks,
            response_batch_size=response_batch_size, without_replica_labels=list(without_replica_labels),
            limit=limit, max_resolution_window=max_resolution_window, aggregates=list(aggregates),
            partial_response_strategy=partial_response_strategy)
        if hints is not None:
            r.hints.CopyFrom(hints)
        if query_hints is not None:
            r.query_hints.CopyFrom(query_hints)
        if shard_info is not None:
            r.shard_info.CopyFrom(shard_info)
        return r

    async def series_frames(self, request: rpc_pb2.SeriesRequest,
                            timeout: Optional[float] = None) -> AsyncIterator[rpc_pb2.SeriesResponse]:
        """The raw ``SeriesResponse`` frames (for proxying without decoding)."""
        call = self._call(svc.SERIES)(request, timeout=self.timeout if timeout is None else timeout)
        try:
            async for frame in call:
                yield frame
        except grpc.aio.AioRpcError as e:
            raise self._error(svc.SERIES, e) from None
        finally:
            call.cancel()

    async def series(self, matchers: Iterable[MatcherLike], min_time: int = MIN_TIME, max_time: int = MAX_TIME,
                     *, timeout: Optional[float] = None, **kw) -> AsyncIterator[Union[Series, SeriesWarning, any_pb2.Any]]:
        """Yield :class:`Series` (series and batch frames flattened, in stream order),
        :class:`SeriesWarning` for warning frames and ``Any`` for hints frames. Keyword
        arguments are those of :meth:`series_request`."""
        req = self.series_request(matchers, min_time, max_time, **kw)
        async for frame in self.series_frames(req, timeout):
            kind = frame.WhichOneof("result")
            if kind == "series":
                yield series_from_pb(frame.series)
            elif kind == "batch":
                for s in frame.batch.series:
                    yield series_from_pb(s)
            elif kind == "warning":
                yield SeriesWarning(frame.warning)
            elif kind == "hints":
                yield frame.hints

    async def series_list(self, *a, **kw) -> tuple[list[Series], list[str]]:
        """All series and warnings of one Series call."""
        series, warnings = [], []
        async for item in self.series(*a, **kw):
            if isinstance(item, Series):
                series.append(item)
            elif isinstance(item, SeriesWarning):
                warnings.append(str(item))
        return series, warnings

    # -- labels --
    async def label_names(self, matchers: Iterable[MatcherLike] = (), start: int = MIN_TIME, end: int = MAX_TIME,
                          *, without_replica_labels: Sequence[str] = (), limit: int = 0,
                          partial_response_strategy: int = PARTIAL_RESPONSE_WARN,
                          hints: Optional[any_pb2.Any] = None, timeout: Optional[float] = None) -> LabelsResult:
        r = rpc_pb2.LabelNamesRequest(start=start, end=end, matchers=_pb_matchers(matchers),
                                      without_replica_labels=list(without_replica_labels), limit=limit,
                                      partial_response_strategy=partial_response_strategy)
        if hints is not None:
            r.hints.CopyFrom(hints)
        resp = await self._unary(svc.LABEL_NAMES, r, timeout)
        return LabelsResult(list(resp.names), list(resp.warnings), resp.hints if resp.HasField("hints") else None)

    async def label_values(self, label: str, matchers: Iterable[MatcherLike] = (), start: int = MIN_TIME,
                           end: int = MAX_TIME, *, without_replica_labels: Sequence[str] = (), limit: int = 0,
                           partial_response_strategy: int = PARTIAL_RESPONSE_WARN,
                           hints: Optional[any_pb2.Any] = None, timeout: Optional[float] = None) -> LabelsResult:
        r = rpc_pb2.LabelValuesRequest(label=label, start=start, end=end, matchers=_pb_matchers(matchers),
                                       without_replica_labels=list(without_replica_labels), limit=limit,
                                       partial_response_strategy=partial_response_strategy)
        if hints is not None:
            r.hints.CopyFrom(hints)
        resp = await self._unary(svc.LABEL_VALUES, r, timeout)
        return LabelsResult(list(resp.values), list(resp.warnings), resp.hints if resp.HasField("hints") else None)
