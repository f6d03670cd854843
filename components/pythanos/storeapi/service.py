"""gRPC method paths, (de)serializers and channel options of the StoreAPI / InfoAPI.

The method handlers are registered by hand with the full method paths Thanos uses (no
``*_pb2_grpc`` modules), so the paths are written once, here, and tested against Thanos.

Transport settings match Thanos (``pkg/server/grpc/grpc.go``, ``pkg/extgrpc/client.go``):

* messages up to MaxInt32 bytes both ways (grpcio's default is 4 MiB);
* a Thanos client pings every 10 s while a stream is open: our server accepts pings at any
  rate (``min_ping_interval_without_data_ms`` below 10 s, ``max_ping_strikes`` 0 = never
  GOAWAY "too_many_pings"), also without active calls;
* our client pings like Thanos' (10 s, 5 s timeout, only during calls): a Thanos server
  enforces 10 s between pings and allows none while idle.
"""
from __future__ import annotations

import logging
from typing import AsyncIterator, Callable

import grpc

from .pb import exemplars_pb2, info_pb2, rpc_pb2, rules_pb2

STORE_SERVICE = "thanos.Store"
INFO_SERVICE = "thanos.info.Info"
EXEMPLARS_SERVICE = "thanos.Exemplars"
RULES_SERVICE = "thanos.Rules"

SERIES = "/thanos.Store/Series"
LABEL_NAMES = "/thanos.Store/LabelNames"
LABEL_VALUES = "/thanos.Store/LabelValues"
STORE_INFO = "/thanos.Store/Info"  # Thanos <= v0.36 only
INFO = "/thanos.info.Info/Info"
EXEMPLARS = "/thanos.Exemplars/Exemplars"
RULES = "/thanos.Rules/Rules"

MAX_MSG_SIZE = (1 << 31) - 1  # math.MaxInt32

SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MSG_SIZE),
    ("grpc.max_receive_message_length", MAX_MSG_SIZE),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.so_reuseport", 0),
]

CLIENT_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MSG_SIZE),
    ("grpc.max_receive_message_length", MAX_MSG_SIZE),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    # fail fast and retry the connection quickly, so an endpoint that comes back is seen soon
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.enable_retries", 0),
]

# method path -> (request class, response class, server streaming)
METHODS = {
    SERIES: (rpc_pb2.SeriesRequest, rpc_pb2.SeriesResponse, True),
    LABEL_NAMES: (rpc_pb2.LabelNamesRequest, rpc_pb2.LabelNamesResponse, False),
    LABEL_VALUES: (rpc_pb2.LabelValuesRequest, rpc_pb2.LabelValuesResponse, False),
    STORE_INFO: (rpc_pb2.InfoRequest, rpc_pb2.InfoResponse, False),
    INFO: (info_pb2.InfoRequest, info_pb2.InfoResponse, False),
    EXEMPLARS: (exemplars_pb2.ExemplarsRequest, exemplars_pb2.ExemplarsResponse, True),
    RULES: (rules_pb2.RulesRequest, rules_pb2.RulesResponse, True),
}


class StreamError(Exception):
    """An error a streaming handler answers with this gRPC code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def streaming_handler(path: str, serve: Callable[[object], AsyncIterator[object]],
                      frame: Callable[[object], object],
                      unexpected: grpc.StatusCode = grpc.StatusCode.UNKNOWN) -> grpc.GenericRpcHandler:
    """A server-streaming method of :data:`METHODS` answering ``frame(item)`` for what
    ``serve(request)`` yields; a :class:`StreamError` is the call's status, anything else
    ``unexpected`` (UNKNOWN: as a Go server returning a plain error) with the trace logged."""
    req, resp, _ = METHODS[path]
    service, method = path[1:].split("/")

    async def call(request, context):
        try:
            async for item in serve(request):
                yield frame(item)
        except StreamError as e:
            await context.abort(e.code, e.message)
        except Exception as e:  # noqa: BLE001 - the caller gets a status, the log the trace
            logging.getLogger("pythanos.storeapi").error(f"{method} call failed", extra={"err": repr(e)}, exc_info=e)
            await context.abort(unexpected, f"{type(e).__name__}: {e}")

    m = grpc.unary_stream_rpc_method_handler(call, request_deserializer=req.FromString,
                                             response_serializer=resp.SerializeToString)
    return grpc.method_handlers_generic_handler(service, {method: m})


def _check_against_descriptors() -> None:
    """The hand-written paths must be the ones in our .proto files (cheap, at import)."""
    for path, (req, resp, streaming) in METHODS.items():
        service, method = path[1:].split("/")
        mod = {INFO_SERVICE: info_pb2, EXEMPLARS_SERVICE: exemplars_pb2, RULES_SERVICE: rules_pb2}.get(service, rpc_pb2)
        svc = mod.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[-1]]
        assert svc.full_name == service, (svc.full_name, service)
        m = svc.methods_by_name[method]
        assert m.input_type.full_name == req.DESCRIPTOR.full_name, path
        assert m.output_type.full_name == resp.DESCRIPTOR.full_name, path
        assert m.server_streaming == streaming, path


_check_against_descriptors()
