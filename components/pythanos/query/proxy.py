"""Fan-out of one selection to the active endpoints (Thanos ``pkg/store/proxy.go``) and the
series it brings back, grouped by label set.

Which endpoints are asked: those whose time range overlaps the selection, one of whose external
label sets is not contradicted by the matchers (``LabelSetsMatch``: a matcher on a label the set
does not hold never excludes), and, when ``storeMatch[]`` is given, whose address matches one of
those selector lists (against the synthetic label ``__address__``).

Each endpoint answers a Series call; its frames are taken as raw bytes and parsed by a small C
parser (``_frames``) straight into label tuples and chunk tuples (protobuf's parser and a Python
walk over its objects when the extension is not built); only labels and chunk bytes are kept: a
raw chunk as ``(min_time, max_time, encoding, data)``, a downsampled one with its aggregates as a
fifth item ``{thanos.Aggr: (encoding, data)}``. A failing endpoint (error, or silence beyond the response timeout)
becomes a warning when partial response is allowed, otherwise the selection fails naming it.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..storeapi import service as _svc
from ..storeapi.client import StoreAPIError
from ..storeapi.h2stream import H2Error
from ..storeapi.types import PARTIAL_RESPONSE_ABORT, PARTIAL_RESPONSE_WARN
from ..tsdb.aggrchunk import AGGR_ENCODING, AGGR_TYPES
from ..tsdb.aggrchunk import split as split_aggr
from ..tsdb.labels import Matcher
from .endpoints import Endpoint, EndpointSet

log = logging.getLogger(__name__)

try:
    from . import _frames
except ImportError:  # pragma: no cover - the extension is not built
    _frames = None

__all__ = ["Proxy", "Fetched", "StoreFetchError", "label_sets_match", "address_matches"]

DEFAULT_BATCH = 64  # store.DefaultResponseBatchSize: what v0.41+ queriers ask for


class StoreFetchError(Exception):
    """A store failed and partial response is off: the query fails with this message."""


@dataclass
class Fetched:
    """Series of one selection: labels -> chunks ``(min_time, max_time, encoding, data)`` in the
    order the endpoints sent them; ``sources[labels]`` counts the endpoints that sent the set."""

    series: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    nbytes: int = 0  # bytes of the Series frames received: what sizes the work that follows


def label_sets_match(matchers: Sequence[Matcher], label_sets: list) -> bool:
    if not label_sets:
        return True
    for ls in label_sets:
        d = dict(ls)
        if all(m.name not in d or m.matches(d[m.name]) for m in matchers):
            return True
    return False


def address_matches(store_matchers: Optional[list[list[Matcher]]], address: str) -> bool:
    if not store_matchers:
        return True
    d = {"__address__": address}
    return any(all(m.matches(d.get(m.name, "")) for m in ms) for ms in store_matchers)


def _describe(ep: Endpoint) -> str:
    """Thanos' wording: "receive series from Addr: ... MinTime: ... MaxTime: ..."."""
    mint, maxt = ep.time_range()
    return f"Addr: {ep.address} MinTime: {mint} MaxTime: {maxt}"


def rpc_text(e: StoreAPIError) -> str:
    """A gRPC failure as Go's status error prints: ``rpc error: code = Unavailable desc = ...``."""
    if e.code is None:
        return e.details
    name = "".join(p.capitalize() for p in e.code.name.split("_"))
    if e.code.name == "OK":
        name = "OK"
    return f"rpc error: code = {name} desc = {e.details}"


class Proxy:
    """Selections over the active endpoints of an :class:`EndpointSet`."""

    def __init__(self, endpoints: EndpointSet, *, response_timeout: float = 0.0,
                 batch_size: int = DEFAULT_BATCH) -> None:
        self.endpoints = endpoints
        self.response_timeout = response_timeout
        self.batch_size = batch_size

    def candidates(self, matchers: Sequence[Matcher], mint: int, maxt: int,
                   store_matchers: Optional[list[list[Matcher]]] = None) -> list[Endpoint]:
        out = []
        for ep in self.endpoints.active():
            if ep.info is not None and not ep.info.store:
                continue
            emin, emax = ep.time_range()
            if emin > maxt or emax < mint:
                continue
            if not label_sets_match(matchers, ep.label_sets()):
                continue
            if not address_matches(store_matchers, ep.address):
                continue
            out.append(ep)
        return out

    async def fetch(self, matchers: Sequence[Matcher], mint: int, maxt: int, *,
                    replica_labels: Sequence[str] = (), partial: bool = True, skip_chunks: bool = False,
                    store_matchers: Optional[list[list[Matcher]]] = None, timeout: Optional[float] = None,
                    max_resolution_window: int = 0, limit: int = 0, aggregates: Sequence[int] = (),
                    shard_info=None) -> Fetched:
        """One Series call to every candidate endpoint, concurrently; see the module doc.
        ``max_resolution_window``/``aggregates``: the downsampled data the stores may answer with
        (``SeriesRequest`` fields 4 and 5); ``shard_info``: the stores answer that shard's series
        only (a frontend's vertical sharding)."""
        eps = self.candidates(matchers, mint, maxt, store_matchers)
        out = Fetched()
        strategy = PARTIAL_RESPONSE_WARN if partial else PARTIAL_RESPONSE_ABORT

        nbytes = [0]
        if not eps:
            return out
        # one request for every endpoint, serialized once
        req = eps[0].client.series_request(
            matchers, mint, maxt, skip_chunks=skip_chunks, response_batch_size=self.batch_size,
            without_replica_labels=list(replica_labels), partial_response_strategy=strategy,
            max_resolution_window=max_resolution_window, aggregates=aggregates, limit=limit,
            shard_info=shard_info)
        body = req.SerializeToString()

        async def one(ep: Endpoint) -> tuple[Endpoint, list, list, Optional[str]]:
            got: list = []
            warns: list = []
            strip = set(replica_labels) if replica_labels and ep.info is not None and \
                not ep.info.supports_without_replica_labels else None
            try:
                async with asyncio.timeout(timeout or None):  # no task of its own, unlike wait_for
                    await _read(ep, req, got, warns, strip, self.response_timeout, nbytes, timeout, body)
            except asyncio.TimeoutError:
                return ep, got, warns, (f"receive series from {_describe(ep)}: rpc error: code = DeadlineExceeded "
                                        f"desc = context deadline exceeded after {timeout:g}s")
            except StoreAPIError as e:
                return ep, got, warns, f"receive series from {_describe(ep)}: {rpc_text(e)}"
            return ep, got, warns, None

        if len(eps) == 1:
            results = [await one(eps[0])]
        else:
            results = await asyncio.gather(*(one(ep) for ep in eps))
        out.nbytes = nbytes[0]
        for ep, got, warns, err in results:
            if err is not None:
                if not partial:
                    raise StoreFetchError(f"expanding series: proxy Series(): rpc error: code = Aborted desc = {err}")
                log.warning("partial response: store failed", extra={"err": err})
                out.warnings.append(err)
                continue
            if warns and not partial:
                raise StoreFetchError(f"expanding series: proxy Series(): rpc error: code = Aborted desc = {warns[0]}")
            out.warnings.extend(warns)
            series, sources = out.series, out.sources
            for lbls, chunks in got:
                have = series.get(lbls)
                if have is None:
                    series[lbls] = chunks
                    sources[lbls] = 1
                else:
                    if have is not chunks:
                        series[lbls] = have + chunks
                    sources[lbls] += 1
        return out

    async def label_names(self, matchers, start: int, end: int, *, partial: bool = True,
                          replica_labels: Sequence[str] = (), timeout: Optional[float] = None,
                          store_matchers=None) -> tuple[list[str], list[str]]:
        return await self._labels(None, matchers, start, end, partial, replica_labels, timeout, store_matchers)

    async def label_values(self, name: str, matchers, start: int, end: int, *, partial: bool = True,
                           replica_labels: Sequence[str] = (), timeout: Optional[float] = None,
                           store_matchers=None) -> tuple[list[str], list[str]]:
        return await self._labels(name, matchers, start, end, partial, replica_labels, timeout, store_matchers)

    async def _labels(self, name, matchers, start, end, partial, replica_labels, timeout, store_matchers):
        eps = self.candidates(matchers, start, end, store_matchers)
        strategy = PARTIAL_RESPONSE_WARN if partial else PARTIAL_RESPONSE_ABORT

        async def one(ep):
            try:
                if name is None:
                    coro = ep.client.label_names(matchers, start, end, without_replica_labels=list(replica_labels),
                                                 partial_response_strategy=strategy, timeout=timeout)
                else:
                    coro = ep.client.label_values(name, matchers, start, end,
                                                  without_replica_labels=list(replica_labels),
                                                  partial_response_strategy=strategy, timeout=timeout)
                return ep, await coro, None
            except StoreAPIError as e:
                return ep, None, f"receive {'label names' if name is None else 'label values'} from {_describe(ep)}: " \
                                 f"{rpc_text(e)}"

        values: set = set()
        warnings: list = []
        for ep, res, err in await asyncio.gather(*(one(ep) for ep in eps)):
            if err is not None:
                if not partial:
                    raise StoreFetchError(err)
                warnings.append(err)
                continue
            values.update(res.values)
            warnings.extend(res.warnings)
        values.discard("")
        return sorted(values), warnings


_RAW_CALLS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


_SERIES_PATH = _svc.SERIES.encode()


def _raw_series_call(client):
    """The client's Series method on its own channel, but answering raw frame bytes."""
    client._call(_svc.SERIES)  # opens the channel if needed
    ch = client._channel
    got = _RAW_CALLS.get(client)
    if got is None or got[0] is not ch:
        req, _, _ = _svc.METHODS[_svc.SERIES]
        got = (ch, ch.unary_stream(_svc.SERIES, request_serializer=req.SerializeToString,
                                   response_deserializer=None))
        _RAW_CALLS[client] = got
    return got[1]


async def _read(ep: Endpoint, req, got: list, warns: list, strip: Optional[set], response_timeout: float,
                nbytes: Optional[list] = None, timeout: Optional[float] = None, body: Optional[bytes] = None) -> None:
    """Read one endpoint's Series stream into ``got`` as (labels, [chunk tuples]); the frames'
    bytes are added to ``nbytes[0]``. ``timeout``: what is left of the query's time; the call
    carries it as its gRPC deadline, so the store stops its work then even if this process
    cannot tell it (a cancelled read cancels the call). ``body``: ``req`` serialized, when the
    caller has it."""
    if _frames is None:
        return await _read_pb(ep, req, got, warns, strip, response_timeout, timeout)
    import grpc

    client = ep.client
    lean = client.stream_channel()
    rpc_timeout = _rpc_timeout(client.timeout, timeout)
    strip_set = frozenset(strip) if strip else None
    cache: dict = {}
    parse = _frames.parse
    eof = grpc.aio.EOF
    call = None
    try:
        if lean is not None:
            start = lean.unary_stream(_SERIES_PATH, body if body is not None else req.SerializeToString(), rpc_timeout)
            try:
                call = await (asyncio.wait_for(start, response_timeout) if response_timeout else start)
            except asyncio.TimeoutError:
                raise StoreAPIError(ep.address, "/thanos.Store/Series", None,
                                    f"no response within --store.response-timeout={response_timeout:g}s") from None
        else:
            call = _raw_series_call(client)(req, timeout=rpc_timeout)
        while True:  # call.read(): one layer less per frame than the call's async iterator
            try:
                if response_timeout:
                    frame = await asyncio.wait_for(call.read(), response_timeout)
                else:
                    frame = await call.read()
            except asyncio.TimeoutError:
                raise StoreAPIError(ep.address, "/thanos.Store/Series", None,
                                    f"no response within --store.response-timeout={response_timeout:g}s") from None
            if frame is eof:
                break
            if nbytes is not None:
                nbytes[0] += len(frame)
            try:
                kind, payload = parse(frame, strip_set, cache)
            except (ValueError, UnicodeDecodeError) as e:
                raise StoreAPIError(ep.address, _svc.SERIES, None, f"decoding Series response: {e}") from None
            if kind == 4 or kind == 1:
                got.extend(payload)
            elif kind == 2:
                warns.append(payload)
    except H2Error as e:
        raise StoreAPIError(ep.address, _svc.SERIES, e.code, e.details) from None
    except grpc.aio.AioRpcError as e:
        raise client._error(_svc.SERIES, e) from None
    finally:
        if call is not None:
            call.cancel()


def _rpc_timeout(client_timeout: Optional[float], query_timeout: Optional[float]) -> Optional[float]:
    """The gRPC deadline of a Series call: the client's own bound or the query's, whichever ends first."""
    if not query_timeout:
        return client_timeout
    return min(client_timeout, query_timeout) if client_timeout else query_timeout


async def _read_pb(ep: Endpoint, req, got: list, warns: list, strip: Optional[set], response_timeout: float,
                   timeout: Optional[float] = None) -> None:
    """:func:`_read` through protobuf's parser (the extension is not built)."""
    frames = ep.client.series_frames(req, _rpc_timeout(ep.client.timeout, timeout))
    it = frames.__aiter__()
    try:
        while True:
            try:
                if response_timeout:
                    frame = await asyncio.wait_for(it.__anext__(), response_timeout)
                else:
                    frame = await it.__anext__()
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise StoreAPIError(ep.address, "/thanos.Store/Series", None,
                                    f"no response within --store.response-timeout={response_timeout:g}s") from None
            kind = frame.WhichOneof("result")
            try:
                if kind == "batch":
                    for s in frame.batch.series:
                        got.append(_series(s, strip))
                elif kind == "series":
                    got.append(_series(frame.series, strip))
            except ValueError as e:
                raise StoreAPIError(ep.address, _svc.SERIES, None, f"decoding Series response: {e}") from None
            if kind == "warning":
                warns.append(frame.warning)
    finally:
        await frames.aclose()


_AGGR_FIELDS = tuple(enumerate(AGGR_TYPES, 1))  # (thanos.Aggr, AggrChunk field name)


def _series(s, strip: Optional[set]) -> tuple:
    if strip:
        lbls = tuple((lb.name, lb.value) for lb in s.labels if lb.name not in strip)
    else:
        lbls = tuple((lb.name, lb.value) for lb in s.labels)
    out = []
    for c in s.chunks:
        t = _chunk(c)
        if t is not None:
            out.append(t)
    return lbls, out


def _chunk(c) -> Optional[tuple]:
    """One AggrChunk as ``_frames.parse`` gives it (see there): ``(min_time, max_time, encoding, data)``
    for a raw chunk, ``(..., {aggr: (encoding, data)})`` with aggregates, ``None`` without either."""
    has_raw = c.HasField("raw")
    aggrs = None
    if has_raw and c.raw.type == AGGR_ENCODING:
        aggrs = split_aggr(c.raw.data)
        has_raw = False
    for a, name in _AGGR_FIELDS:
        if c.HasField(name):
            if aggrs is None:
                aggrs = {}
            sub = getattr(c, name)
            aggrs[a] = (sub.type, sub.data)
    if aggrs is None:
        return (c.min_time, c.max_time, c.raw.type, c.raw.data) if has_raw else None
    if has_raw:
        return c.min_time, c.max_time, c.raw.type, c.raw.data, aggrs
    return c.min_time, c.max_time, 0, b"", aggrs


def now_ms() -> int:
    return int(time.time() * 1000)
