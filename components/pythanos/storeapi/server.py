"""The StoreAPI server base: a store implements :class:`Store` once, :class:`StoreServer` does
the protocol.

What the base does for every store (as Thanos' own stores do, ``pkg/store/prometheus.go``,
``flushable.go``, ``batchable.go``):

* matchers are parsed with Prometheus semantics; a bad one is ``INVALID_ARGUMENT`` naming it;
* matchers on external labels are checked against the external label values: one that does
  not match gives an empty answer (no error); those that match are removed before the store
  sees the request (``matchesExternalLabels``);
* external labels are merged into every series and **win** over a series label of the same
  name ("we prefer external labels", ``labelpb.ExtendSortedLabels``);
* every label named in ``without_replica_labels`` is removed from the complete label set, and
  series are sorted after that removal (Thanos' resortingServer buffers and sorts too; a store
  that already yields the final order sets ``presorted = True`` and is streamed, checked);
* ``limit`` caps the number of series; ``skip_chunks`` drops chunks;
* ``shard_info`` keeps the series of the requested shard only (:mod:`.sharding`, hashed on the
  final labels);
* ``response_batch_size > 1`` sends ``batch`` frames of up to that many series, a warning
  flushes the pending batch first (``batchableServer``);
* frames are written as bytes (the Series RPC's serializer passes them as they are): label
  fields from a per-call cache of encoded pairs (or a RawSeries' ``wire`` bytes when its labels
  stay as they are), chunks from :class:`~.types.RawSeries` as the store serialized them (or
  from :class:`Series` chunk messages), ``series``/``batch`` wrappers by concatenation; byte-identical to serializing the messages. Buffered series are turned into
  their bytes as they arrive, so only the sort (linear on sorted input) and framing wait for
  the end;
* :class:`SeriesWarning` items become ``warning`` frames, ``google.protobuf.Any`` items ``hints``;
* LabelNames adds external label names (when the store has any names), LabelValues answers an
  external label itself; both drop ``without_replica_labels``, sort and de-duplicate;
* errors: :class:`StoreError` subclasses carry their status code; anything else is INTERNAL;
* InfoAPI (``thanos.info.Info/Info``) and the old ``thanos.Store/Info`` from :meth:`Store.info`.
"""
from __future__ import annotations

import abc
import logging
from typing import AsyncIterator, Iterable, Optional, Sequence, Union

import grpc
from google.protobuf import any_pb2

from . import service as svc
from .pb import rpc_pb2
from .sharding import ShardMatcher
from .types import (
    BadMatcherError,
    Labels,
    LabelNamesRequest,
    LabelsResult,
    LabelEncoder,
    LabelValuesRequest,
    RawSeries,
    Series,
    SeriesFrames,
    SeriesRequest,
    SeriesWarning,
    StoreInfo,
    matchers_from_pb,
    norm_labels,
    pb_bytes_field,
    series_payload,
)

__all__ = ["Store", "StoreServer", "StoreError", "InvalidArgument", "Unavailable", "Internal", "Aborted",
           "ResourceExhausted", "SeriesItem"]

log = logging.getLogger("pythanos.storeapi")

SeriesItem = Union[Series, RawSeries, SeriesWarning, any_pb2.Any]


class StoreError(Exception):
    """An error with a gRPC status code; raise a subclass from a store."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(StoreError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Unavailable(StoreError):
    """The backend (Prometheus, bucket) cannot be reached or the store is not ready."""

    code = grpc.StatusCode.UNAVAILABLE


class Internal(StoreError):
    code = grpc.StatusCode.INTERNAL


class Aborted(StoreError):
    code = grpc.StatusCode.ABORTED


class ResourceExhausted(StoreError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Store(abc.ABC):
    """Implement these four; :class:`StoreServer` serves them as Thanos' StoreAPI + InfoAPI.

    ``info()`` is called for every request (external labels may change at run time), so it
    should be cheap. Raise :class:`Unavailable` while not ready."""

    #: True when ``series()`` already yields series in the final order (labels merged with the
    #: external labels, replica labels removed, sorted): the base then streams without buffering.
    presorted: bool = False

    #: True when ``series()`` yields :class:`RawSeries` whose labels are already complete (external
    #: labels merged, ``without_replica_labels`` removed) and in the final order, possibly grouped
    #: in lists, or :class:`SeriesFrames` it serialized itself: the base then only checks the
    #: order, counts and frames them.
    final_labels: bool = False

    @abc.abstractmethod
    async def info(self) -> StoreInfo: ...

    @abc.abstractmethod
    def series(self, req: SeriesRequest) -> AsyncIterator[SeriesItem]:
        """Yield :class:`Series` (labels: mapping or pairs, chunks: :class:`~.types.Chunk` or
        ``(min_time, max_time, encoding, data)`` in Thanos encoding numbering) or
        :class:`~.types.RawSeries` (chunks already serialized; labels a tuple of pairs sorted by
        name, no empty value), and optionally :class:`SeriesWarning` / ``Any`` hints.
        ``req.matchers`` exclude external-label ones."""

    @abc.abstractmethod
    async def label_names(self, req: LabelNamesRequest) -> Union[LabelsResult, Sequence[str]]: ...

    @abc.abstractmethod
    async def label_values(self, req: LabelValuesRequest) -> Union[LabelsResult, Sequence[str]]: ...


def _as_result(r) -> LabelsResult:
    return r if isinstance(r, LabelsResult) else LabelsResult(list(r))


def _split_external(matchers, ext: Labels):
    """(match, remaining matchers): Thanos' matchesExternalLabels."""
    ext_d = dict(ext)
    remaining = []
    for m in matchers:
        v = ext_d.get(m.name)
        if v is None:
            remaining.append(m)
        elif not m.matches(v):
            return False, []
        # a matching matcher on an external label is dropped
    return True, remaining


class _Fail(Exception):
    def __init__(self, code: grpc.StatusCode, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _translate(e: BaseException, what: str) -> _Fail:
    if isinstance(e, _Fail):
        return e
    if isinstance(e, BadMatcherError):
        return _Fail(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    if isinstance(e, StoreError):
        return _Fail(e.code, str(e) or type(e).__name__)
    log.error("store call failed", extra={"call": what, "err": repr(e)}, exc_info=e)
    return _Fail(grpc.StatusCode.INTERNAL, f"{what}: {type(e).__name__}: {e}")


class StoreServer:
    """Serves a :class:`Store` over gRPC (``grpc.aio``).

    ``StoreServer(store).handlers()`` can be added to an existing ``grpc.aio.Server``, or
    ``await StoreServer(store).start("0.0.0.0:10901")`` runs its own server (options of
    :data:`.service.SERVER_OPTIONS`) and returns the bound port.

    ``info_api=False`` / ``store_info_api=False`` leave out ``thanos.info.Info/Info`` /
    ``thanos.Store/Info`` (to test old and new querier paths)."""

    def __init__(self, store: Store, *, info_api: bool = True, store_info_api: bool = True) -> None:
        self.store = store
        self.info_api = info_api
        self.store_info_api = store_info_api
        self.server: Optional[grpc.aio.Server] = None
        self.port: int = 0

    # -- wiring --
    def handlers(self) -> list:
        def uu(fn, path):
            req, resp, _ = svc.METHODS[path]
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.FromString, response_serializer=resp.SerializeToString)

        req, _, _ = svc.METHODS[svc.SERIES]
        store_methods = {
            # the Series handler yields SeriesResponse frames already serialized (see _Framer)
            "Series": grpc.unary_stream_rpc_method_handler(
                self._series, request_deserializer=req.FromString, response_serializer=_as_is),
            "LabelNames": uu(self._label_names, svc.LABEL_NAMES),
            "LabelValues": uu(self._label_values, svc.LABEL_VALUES),
        }
        if self.store_info_api:
            store_methods["Info"] = uu(self._store_info, svc.STORE_INFO)
        out = [grpc.method_handlers_generic_handler(svc.STORE_SERVICE, store_methods)]
        if self.info_api:
            out.append(grpc.method_handlers_generic_handler(svc.INFO_SERVICE, {"Info": uu(self._info, svc.INFO)}))
        return out

    async def start(self, address: str = "0.0.0.0:10901") -> int:
        self.server = grpc.aio.server(options=svc.SERVER_OPTIONS)
        self.server.add_generic_rpc_handlers(self.handlers())
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as e:
            raise OSError(f"gRPC server cannot listen on {address}: {e}") from None
        if not self.port:
            raise OSError(f"gRPC server cannot listen on {address}")
        await self.server.start()
        log.info("listening for StoreAPI gRPC", extra={"address": address, "port": self.port})
        return self.port

    async def stop(self, grace: Optional[float] = 5.0) -> None:
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None

    async def wait_for_termination(self) -> None:
        if self.server is not None:
            await self.server.wait_for_termination()

    # -- info --
    async def _get_info(self) -> StoreInfo:
        try:
            return await self.store.info()
        except Exception as e:  # noqa: BLE001
            f = _translate(e, "info")
            if f.code == grpc.StatusCode.INTERNAL and not isinstance(e, StoreError):
                f = _Fail(grpc.StatusCode.UNAVAILABLE, f.msg)
            raise f from None

    async def _info(self, request, context):
        try:
            return (await self._get_info()).to_info_pb()
        except _Fail as f:
            await context.abort(f.code, f.msg)

    async def _store_info(self, request, context):
        try:
            return (await self._get_info()).to_store_info_pb()
        except _Fail as f:
            await context.abort(f.code, f.msg)

    # -- series --
    async def _series(self, request: rpc_pb2.SeriesRequest, context):
        fail: Optional[_Fail] = None
        try:
            async for frame in self._series_frames(request):
                yield frame
        except _Fail as f:
            fail = f
        except Exception as e:  # noqa: BLE001
            fail = _translate(e, "series")
        if fail is not None:
            await context.abort(fail.code, fail.msg)

    async def _series_frames(self, r: rpc_pb2.SeriesRequest) -> AsyncIterator[bytes]:
        """Serialized SeriesResponse frames. Series bytes are put together from encoded labels
        and chunk bytes (byte-identical to what ``SerializeToString`` of the messages gives)."""
        matchers = matchers_from_pb(r.matchers)
        info = await self._get_info()
        ext = info.external_labels
        match, remaining = _split_external(matchers, ext)
        if not match:
            return
        remove = set(r.without_replica_labels)
        ext_kept = tuple((n, v) for n, v in ext if n not in remove)
        req = SeriesRequest(
            matchers=remaining, min_time=r.min_time, max_time=r.max_time, skip_chunks=r.skip_chunks,
            max_resolution_window=r.max_resolution_window, aggregates=list(r.aggregates),
            partial_response_strategy=r.partial_response_strategy,
            without_replica_labels=list(r.without_replica_labels), limit=r.limit,
            hints=r.hints if r.HasField("hints") else None, external_labels=ext, raw=r,
            shard=ShardMatcher.from_pb(r.shard_info) if r.HasField("shard_info") else None)
        shard = req.shard
        batch = int(r.response_batch_size)
        out = _Framer(batch)
        limit = int(r.limit)
        skip = r.skip_chunks
        ext_names = {n for n, _ in ext}
        encode_labels = LabelEncoder()

        def complete(s) -> Labels:
            lbls = s[0]  # Series, RawSeries or a (labels, chunks) pair
            if type(s) is RawSeries:
                # sorted pairs: unchanged when it holds every external pair and no label to remove
                # (Prometheus' remote read answers carry its external labels, the sidecar's too)
                if all(p in lbls for p in ext_kept) and not (remove and any(n in remove for n, _ in lbls)):
                    return lbls
            elif isinstance(lbls, tuple) and not ext_names and not remove:
                return lbls if _is_sorted_pairs(lbls) else norm_labels(lbls)
            d = dict(lbls.items() if hasattr(lbls, "items") else lbls)
            for n in remove:
                d.pop(n, None)
            d.update(ext_kept)
            return tuple(sorted((n, v) for n, v in d.items() if v != ""))

        def to_pb(lbls: Labels, s) -> bytes:
            if type(s) is RawSeries and s[2] and lbls is s[0] and (not skip or not s[1]):
                return s[2]  # the store wrote the Series with these very labels (and no chunks to skip)
            return series_payload(encode_labels(lbls), s, skip)

        source = self.store.series(req)
        try:
            if self.store.final_labels:
                prev = None
                count = 0
                async for group in source:
                    if type(group) is SeriesFrames:
                        for f in out.flush():
                            yield f
                        if prev is not None and group.count and group.first < prev:
                            raise _Fail(grpc.StatusCode.INTERNAL, f"store yielded series out of order: "
                                                                  f"{_fmt(group.first)} after {_fmt(prev)}")
                        count += group.count
                        if group.count:
                            prev = group.last
                        for f in group.frames:
                            yield f
                        continue
                    for item in (group if type(group) is list else (group,)):
                        if type(item) is not RawSeries:
                            for f in out.other(item):
                                yield f
                            continue
                        lbls = item[0]
                        if shard is not None and not shard.matches(lbls):
                            continue
                        if prev is not None and lbls <= prev:
                            if lbls < prev:
                                raise _Fail(grpc.StatusCode.INTERNAL,
                                            f"store yielded series out of order: {_fmt(lbls)} after {_fmt(prev)}")
                        else:
                            count += 1
                            if limit and count > limit:
                                break
                        prev = lbls
                        w = item[2]
                        payload = w if w and (not skip or not item[1]) else to_pb(lbls, item)
                        for f in out.series(payload):
                            yield f
                    else:
                        continue
                    break
            elif self.store.presorted:
                prev: Optional[Labels] = None
                count = 0
                async for item in source:
                    if isinstance(item, (str, any_pb2.Any)):
                        for f in out.other(item):
                            yield f
                        continue
                    lbls = complete(item)
                    if shard is not None and not shard.matches(lbls):
                        continue
                    if prev is not None and lbls < prev:
                        raise _Fail(grpc.StatusCode.INTERNAL,
                                    f"store yielded series out of order: {_fmt(lbls)} after {_fmt(prev)}")
                    if lbls != prev:
                        count += 1
                        if limit and count > limit:
                            break
                    prev = lbls
                    for f in out.series(to_pb(lbls, item)):
                        yield f
            else:
                # Buffered: the answer must be sorted after the label changes. Stores usually
                # yield the final order already (Prometheus sorts), so frames are built while
                # the store is still producing and sent as they are at the end; only when an
                # item arrives out of order does the base fall back to sort-then-frame.
                buf: list[tuple[Labels, bytes]] = []
                early = _Framer(batch)
                frames: list[bytes] = []
                ordered = True
                prev = None
                count = 0
                async for item in source:
                    if isinstance(item, (str, any_pb2.Any)):
                        for f in out.other(item):
                            yield f
                        continue
                    lbls = complete(item)
                    if shard is not None and not shard.matches(lbls):
                        continue
                    payload = to_pb(lbls, item)
                    buf.append((lbls, payload))
                    if not ordered:
                        continue
                    if prev is not None and lbls < prev:
                        ordered = False
                        frames = []
                        continue
                    if lbls != prev:
                        count += 1
                    prev = lbls
                    if not limit or count <= limit:
                        frames.extend(early.series(payload))
                if ordered:
                    frames.extend(early.flush())
                    for f in frames:
                        yield f
                    return
                buf.sort(key=_first)  # linear when nearly sorted
                prev = None
                count = 0
                for lbls, payload in buf:
                    if lbls != prev:
                        count += 1
                        if limit and count > limit:
                            break
                    prev = lbls
                    for f in out.series(payload):
                        yield f
            for f in out.flush():
                yield f
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    # -- labels --
    async def _label_names(self, r: rpc_pb2.LabelNamesRequest, context):
        try:
            matchers = matchers_from_pb(r.matchers)
            info = await self._get_info()
            ext = info.external_labels
            match, remaining = _split_external(matchers, ext)
            if not match:
                return rpc_pb2.LabelNamesResponse()
            remove = set(r.without_replica_labels)
            res = _as_result(await self.store.label_names(LabelNamesRequest(
                matchers=remaining, start=r.start, end=r.end, limit=r.limit,
                without_replica_labels=list(r.without_replica_labels),
                hints=r.hints if r.HasField("hints") else None, external_labels=ext, raw=r)))
            names = set(res.values)
            if names:
                names.update(n for n, _ in ext)
            names -= remove
            names.discard("")
            out = sorted(names)
            if r.limit > 0:
                out = out[: r.limit]
            resp = rpc_pb2.LabelNamesResponse(names=out, warnings=res.warnings)
            if res.hints is not None:
                resp.hints.CopyFrom(res.hints)
            return resp
        except Exception as e:  # noqa: BLE001
            f = _translate(e, "label names")
        await context.abort(f.code, f.msg)

    async def _label_values(self, r: rpc_pb2.LabelValuesRequest, context):
        try:
            if not r.label:
                raise _Fail(grpc.StatusCode.INVALID_ARGUMENT, "label name parameter cannot be empty")
            matchers = matchers_from_pb(r.matchers)
            if r.label in r.without_replica_labels:
                return rpc_pb2.LabelValuesResponse()
            info = await self._get_info()
            ext = info.external_labels
            match, remaining = _split_external(matchers, ext)
            if not match:
                return rpc_pb2.LabelValuesResponse()
            ext_value = dict(ext).get(r.label)
            if ext_value is not None:
                # an external label has one value; it is the answer if any series matches
                if not remaining or await self._any_series(remaining, r, ext):
                    return rpc_pb2.LabelValuesResponse(values=[ext_value])
                return rpc_pb2.LabelValuesResponse()
            res = _as_result(await self.store.label_values(LabelValuesRequest(
                label=r.label, matchers=remaining, start=r.start, end=r.end, limit=r.limit,
                without_replica_labels=list(r.without_replica_labels),
                hints=r.hints if r.HasField("hints") else None, external_labels=ext, raw=r)))
            out = sorted(set(v for v in res.values if v != ""))
            if r.limit > 0:
                out = out[: r.limit]
            resp = rpc_pb2.LabelValuesResponse(values=out, warnings=res.warnings)
            if res.hints is not None:
                resp.hints.CopyFrom(res.hints)
            return resp
        except Exception as e:  # noqa: BLE001
            f = _translate(e, "label values")
        await context.abort(f.code, f.msg)

    async def _any_series(self, matchers, r, ext) -> bool:
        source = self.store.series(SeriesRequest(matchers=matchers, min_time=r.start, max_time=r.end,
                                                 skip_chunks=True, limit=1, external_labels=ext))
        try:
            async for item in source:
                if not isinstance(item, (str, any_pb2.Any)):
                    return True
            return False
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()


class _Framer:
    """Turns series (``thanos.Series`` bytes) and other frames into serialized SeriesResponse
    frames, batching like Thanos: ``series = 1`` alone, or ``batch = 4`` holding a SeriesBatch of
    ``series = 1`` entries (protobuf concatenation, no message objects)."""

    def __init__(self, batch_size: int) -> None:
        self.size = batch_size if batch_size > 1 else 0
        self.pending: list = []

    def series(self, s: bytes) -> Iterable[bytes]:
        if not self.size:
            return (pb_bytes_field(b"\x0a", s),)
        self.pending.append(pb_bytes_field(b"\x0a", s))
        if len(self.pending) >= self.size:
            return self.flush()
        return ()

    def flush(self) -> list:
        if not self.pending:
            return []
        frame = pb_bytes_field(b"\x22", b"".join(self.pending))
        self.pending = []
        return [frame]

    def other(self, item) -> list:
        out = self.flush()
        if isinstance(item, any_pb2.Any):
            out.append(rpc_pb2.SeriesResponse(hints=item).SerializeToString())
        else:
            out.append(rpc_pb2.SeriesResponse(warning=str(item)).SerializeToString())
        return out


def _as_is(b: bytes) -> bytes:
    return b


def _first(x):
    return x[0]


def _is_sorted_pairs(lbls) -> bool:
    return all(lbls[i][0] < lbls[i + 1][0] for i in range(len(lbls) - 1)) and all(v != "" for _, v in lbls)


def _fmt(lbls: Labels) -> str:
    return "{" + ", ".join(f'{n}="{v}"' for n, v in lbls) + "}"
