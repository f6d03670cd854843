"""Thanos' gRPC write API between receivers: ``/thanos.WriteableStore/RemoteWrite``.

A router forwards each endpoint its share of a remote-write request as one
``thanos.WriteRequest{timeseries = 1, tenant = 2, replica = 3}`` (``pb/write.proto``), so our
receivers and real Thanos receivers can share one hashring. Facts (Thanos v0.42
``pkg/receive/handler.go``):

* ``replica`` is 1-based on the wire: a router sends replica number n (0-based) as n + 1; 0
  means "not replicated yet", and a receiver given 0 routes the series over its own hashring
  (a replica above the replication factor is refused: InvalidArgument).
* The ``timeseries`` entries are Prometheus remote-write 1.0 ``TimeSeries`` byte for byte
  (``prometheus_copy`` differs from ``prometheus`` only in the Go type of its labels), so the
  series frames of an incoming remote-write body can be forwarded without re-encoding:
  :func:`encode_write_request` takes them as they are.
* Status codes, as Thanos' server answers and its router reads them: conflicts
  (out-of-order, duplicate, out-of-bounds samples, bad labels) AlreadyExists; not ready or
  unavailable (quorum not reached for a retryable reason) Unavailable; a bad replica number
  InvalidArgument; anything else Internal. A router counts AlreadyExists as a conflict and
  Unavailable as a peer to back off from.
* Thanos routers compress these calls with snappy by default (``--receive.grpc-compression``);
  grpcio has no snappy codec, so a receiver serves this method through
  :class:`pythanos.server.grpcfront.GrpcFront` (:func:`writeable_front`), which does. Our client
  sends uncompressed, which Thanos accepts.
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable, Iterable, Optional, Sequence, Union

import grpc

from .pb import write_pb2

log = logging.getLogger(__name__)

__all__ = [
    "WRITEABLE_SERVICE", "REMOTE_WRITE", "WriteError", "WriteConflict", "WriteUnavailable", "WriteInvalid",
    "RemoteWriteError", "encode_write_request", "frame_timeseries", "remote_write", "writeable_handler",
    "add_writeable_servicer", "writeable_front",
]

WRITEABLE_SERVICE = "thanos.WriteableStore"
REMOTE_WRITE = "/thanos.WriteableStore/RemoteWrite"

_svc = write_pb2.DESCRIPTOR.services_by_name["WriteableStore"]
assert _svc.full_name == WRITEABLE_SERVICE
assert _svc.methods_by_name["RemoteWrite"].input_type.full_name == "thanos.WriteRequest"


# --- errors a handler raises, and what a client sees ---------------------------------------

class WriteError(Exception):
    """A write that failed; the subclass decides the gRPC status (plain: Internal)."""

    code = grpc.StatusCode.INTERNAL


class WriteConflict(WriteError):
    """Out-of-order / duplicate / out-of-bounds samples or exemplars, bad label sets."""

    code = grpc.StatusCode.ALREADY_EXISTS


class WriteUnavailable(WriteError):
    """Not ready, or replication could not reach quorum for a reason that may pass."""

    code = grpc.StatusCode.UNAVAILABLE


class WriteInvalid(WriteError):
    """A replica number above the replication factor (Thanos' only InvalidArgument)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class RemoteWriteError(Exception):
    """A RemoteWrite call that failed: ``code`` (grpc.StatusCode), ``details`` (the peer's text)."""

    def __init__(self, target: str, code: Optional[grpc.StatusCode], details: str) -> None:
        self.target, self.code, self.details = target, code, details
        name = code.name if code is not None else "UNKNOWN"
        super().__init__(f"remote write to {target}: rpc error: code = {name} desc = {details}")

    @property
    def conflict(self) -> bool:
        return self.code == grpc.StatusCode.ALREADY_EXISTS

    @property
    def unavailable(self) -> bool:
        return self.code == grpc.StatusCode.UNAVAILABLE


# --- encoding -------------------------------------------------------------------------------

def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


TimeseriesLike = Union[bytes, bytearray, memoryview, Sequence[object]]


def frame_timeseries(series: Iterable[Union[bytes, object]]) -> bytes:
    """Field-1 frames (``0x0a len body``) of TimeSeries given as messages or as encoded bodies
    (a ``prometheus.TimeSeries`` or ``prometheus_copy.TimeSeries``: the same bytes)."""
    parts: list[bytes] = []
    for s in series:
        body = bytes(s) if isinstance(s, (bytes, bytearray, memoryview)) else s.SerializeToString()
        parts.append(b"\x0a" + _uvarint(len(body)) + body)
    return b"".join(parts)


def encode_write_request(timeseries: TimeseriesLike, tenant: str, replica: int) -> bytes:
    """A serialized ``thanos.WriteRequest``. ``timeseries``: bytes that are already field-1
    frames (for example the series frames sliced out of a remote-write 1.0 body, forwarded
    as they are), or a sequence of TimeSeries messages / encoded TimeSeries bodies."""
    if isinstance(timeseries, (bytes, bytearray, memoryview)):
        frames = bytes(timeseries)
    else:
        frames = frame_timeseries(timeseries)
    out = [frames]
    if tenant:
        t = tenant.encode()
        out.append(b"\x12" + _uvarint(len(t)) + t)
    if replica:
        if replica < 0:
            raise ValueError(f"replica must not be negative, got {replica}")
        out.append(b"\x18" + _uvarint(replica))
    return b"".join(out)


# --- client ---------------------------------------------------------------------------------

def _identity(b: bytes) -> bytes:
    return b


async def remote_write(channel: grpc.aio.Channel, tenant: str, replica: int, timeseries: TimeseriesLike,
                       timeout: Optional[float] = None, *, target: str = "",
                       metadata: Optional[Sequence[tuple[str, str]]] = None) -> None:
    """Send one ``RemoteWrite``: ``replica`` as it goes on the wire (0 = not replicated, else
    the 0-based replica number + 1). Raises :class:`RemoteWriteError` with the peer's status."""
    body = encode_write_request(timeseries, tenant, replica)
    call = channel.unary_unary(REMOTE_WRITE, request_serializer=_identity,
                               response_deserializer=write_pb2.WriteResponse.FromString)
    try:
        await call(body, timeout=timeout, metadata=metadata)
    except grpc.aio.AioRpcError as e:
        raise RemoteWriteError(target or "peer", e.code(), e.details() or "") from None


# --- server ---------------------------------------------------------------------------------

WriteHandler = Callable[[Union[write_pb2.WriteRequest, bytes]], Awaitable[None]]


def writeable_handler(handler: WriteHandler, *, raw: bool = False) -> grpc.GenericRpcHandler:
    """The ``thanos.WriteableStore`` service around ``handler``, for
    ``server.add_generic_rpc_handlers``. ``handler`` gets the decoded ``WriteRequest`` (or,
    with ``raw=True``, its bytes, for a decoder of our own), returns when the series are
    written, and raises :class:`WriteError` subclasses to choose the status; any other
    exception answers Internal with its text."""

    async def remote_write_rpc(request, context: grpc.aio.ServicerContext) -> bytes:
        try:
            await handler(request)
        except WriteError as e:
            await context.abort(e.code, str(e) or type(e).__name__)
        except Exception as e:  # noqa: BLE001: every failure becomes a status, never a dropped call
            log.error("remote write failed", extra={"err": repr(e)}, exc_info=e)
            await context.abort(grpc.StatusCode.INTERNAL, str(e) or type(e).__name__)
        return b""  # WriteResponse has no fields

    method = grpc.unary_unary_rpc_method_handler(
        remote_write_rpc,
        request_deserializer=None if raw else write_pb2.WriteRequest.FromString,
        response_serializer=_identity)
    return grpc.method_handlers_generic_handler(WRITEABLE_SERVICE, {"RemoteWrite": method})


def add_writeable_servicer(server: grpc.aio.Server, handler: WriteHandler, *, raw: bool = False) -> None:
    """Register :func:`writeable_handler` on a ``grpc.aio`` server (before it starts)."""
    server.add_generic_rpc_handlers((writeable_handler(handler, raw=raw),))


def writeable_front(handler: Callable[[bytes], Awaitable[None]]) -> dict[str, Callable[[bytes], Awaitable[bytes]]]:
    """RemoteWrite for a :class:`~pythanos.server.grpcfront.GrpcFront` (``Component.start(...,
    grpc_front=...)``): ``handler`` gets the request's bytes (snappy already undone) and raises
    :class:`WriteError` subclasses, whose ``code`` the front answers, as :func:`writeable_handler`."""

    async def remote_write_call(raw: bytes) -> bytes:
        await handler(raw)
        return b""  # WriteResponse has no fields

    return {REMOTE_WRITE: remote_write_call}
