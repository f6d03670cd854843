"""A StoreAPI client (``grpc.aio``): what a querier uses to talk to Thanos or pythanos stores.

``StoreClient("host:port")``: :meth:`~StoreClient.info` (InfoAPI, falling back to the old
``Store.Info`` when the endpoint does not implement it), :meth:`~StoreClient.series` (accepts
single ``series`` frames, ``batch`` frames, ``warning`` and ``hints`` frames),
:meth:`~StoreClient.label_names`, :meth:`~StoreClient.label_values`. Every error is a
:class:`StoreAPIError` that names the endpoint and the method and carries the gRPC code.

Transport security: ``StoreClient(addr, tls=ClientTLS(...))`` (:mod:`pythanos.tlsconfig`) dials
with TLS. Credentials are prepared by :meth:`~StoreClient.info` (the call every endpoint check
makes first): files re-read when they change (a new channel then), and for
``insecure_skip_verify`` the endpoint's certificate fetched, and fetched again after a failed
check.

Endpoint groups (Thanos' ``--endpoint-group``): ``StoreClient(name, target="dns:///host:port",
options=group_channel_options(...), members=[...])`` dials one gRPC target that grpcio's own DNS
resolver turns into several addresses, balanced by the load-balancing policy of the service
config (:data:`GROUP_SERVICE_CONFIG`: round_robin); ``name`` is what errors and statuses show.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Optional, Sequence, Union

import grpc
from google.protobuf import any_pb2

from ..tsdb.labels import Matcher
from . import service as svc
from .h2stream import H2Channel
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

if TYPE_CHECKING:
    from ..tlsconfig import ClientTLS

log = logging.getLogger(__name__)

__all__ = ["StoreClient", "StoreAPIError", "GROUP_SERVICE_CONFIG", "group_channel_options", "check_service_config"]

#: Thanos v0.42's service config for endpoint groups (``pkg/extgrpc`` EndpointGroupGRPCOpts), verbatim.
#: Its ``retryPolicy`` sits at the top level, where gRPC's schema has none (retry policies live in
#: ``methodConfig[]``): grpc-go and grpcio both ignore it, so calls are not retried, in Thanos either.
GROUP_SERVICE_CONFIG = """
{
  "loadBalancingPolicy":"round_robin",
  "retryPolicy": {
    "maxAttempts": 3,
    "initialBackoff": "0.1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": [
  	  "UNAVAILABLE"
    ]
  }
}"""


def group_channel_options(service_config: str = "", balanced: bool = True) -> list[tuple[str, Any]]:
    """Channel options of an endpoint group: the service config (Thanos' default when empty),
    none taken from DNS (Thanos: WithDisableServiceConfig), retries allowed as grpc-go allows
    them (a service config's methodConfig retryPolicy applies). ``balanced`` false: the group
    is one address as Thanos sees it (a plain ``host:port``, which Thanos hands to gRPC
    unresolved and Go's dialer connects to the first of its addresses that answers), so the
    policy is pick_first over what the name resolves to, whatever the config says."""
    text = service_config or GROUP_SERVICE_CONFIG
    if not balanced:
        doc = json.loads(text)
        doc.pop("loadBalancingConfig", None)
        doc["loadBalancingPolicy"] = "pick_first"
        text = json.dumps(doc)
    return [("grpc.service_config", text), ("grpc.service_config_disable_resolution", 1),
            ("grpc.enable_retries", 1)]


def check_service_config(text: str) -> None:
    """Raise ValueError (grpcio's own words) unless grpcio accepts ``text`` as a service config.

    grpcio validates a service config when it builds a channel's stack; a wrong one fails every
    call later. This builds a channel to an abstract Unix socket nobody listens on and makes one
    call: a refused connection means the config was accepted."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    channel = grpc.insecure_channel("unix-abstract:pythanos-service-config-check",
                                    options=[("grpc.service_config", text),
                                             ("grpc.service_config_disable_resolution", 1)])
    try:
        channel.unary_unary("/pythanos.Check/Check")(b"", timeout=10)
    except grpc.RpcError as e:
        details = (e.details() or "") if isinstance(e, grpc.Call) else str(e)
        if "Failed to create channel" in details:
            raise ValueError(details.split("':", 1)[-1].strip()) from None
    finally:
        channel.close()

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
    unless the call passes its own; ``info_timeout`` bounds Info (Thanos: 5 s). ``tls``: how to
    dial (None or not enabled: plaintext); ``credentials`` is the raw grpcio alternative.

    ``address`` names the endpoint in errors; ``target`` (default: the address) is what the
    channel dials, e.g. ``dns:///name:port`` for a group. ``members``: the addresses behind the
    target as last looked up (default: the address), whose certificates ``insecure_skip_verify``
    fetches. ``options`` override :data:`~pythanos.storeapi.service.CLIENT_OPTIONS` key by key."""

    def __init__(self, address: str, *, timeout: float = 120.0, info_timeout: float = 5.0,
                 credentials: Optional[grpc.ChannelCredentials] = None,
                 options: Sequence[tuple] = (), tls: Optional["ClientTLS"] = None,
                 target: Optional[str] = None, members: Sequence[str] = ()) -> None:
        self.address = address
        self.target = target or address
        self.members: tuple[str, ...] = tuple(members) or (address,)
        self.timeout = timeout
        self.info_timeout = info_timeout
        self.tls = tls if tls is not None and tls.enabled else None
        self._credentials = credentials
        self._tls_options: list[tuple[str, Any]] = []
        self._tls_stamp: Optional[tuple] = None  # the files' state the credentials were made from
        merged = dict(svc.CLIENT_OPTIONS)
        merged.update(options)
        self._options = list(merged.items())
        self._channel: Optional[grpc.aio.Channel] = None
        self._calls: dict = {}
        self._closing: dict = {}  # close(grace) task -> retired channel
        self._h2: Optional[H2Channel] = None
        self._h2_checked = False

    # -- channel --
    def stream_channel(self) -> Optional[H2Channel]:
        """The lean HTTP/2 channel for Series (:mod:`.h2stream`) when this endpoint is dialled in
        plaintext at its own ``host:port``; None when grpcio must carry the call (TLS, a resolver
        target, raw credentials)."""
        if not self._h2_checked:
            self._h2_checked = True
            if self.tls is None and self._credentials is None and self.target == self.address and \
                    "://" not in self.address and not self.address.startswith(("unix:", "dns:")):
                try:
                    max_recv = dict(self._options).get("grpc.max_receive_message_length", svc.MAX_MSG_SIZE)
                    self._h2 = H2Channel(self.address, max_recv=max_recv if max_recv > 0 else svc.MAX_MSG_SIZE)
                except ValueError:
                    self._h2 = None
        return self._h2

    def _call(self, path: str):
        c = self._calls.get(path)
        if c is None:
            if self._channel is None:
                if self.tls is not None and self._credentials is None:
                    self._prepare_sync(path)
                if self._credentials is not None:
                    options = self._options + self._tls_options
                    self._channel = grpc.aio.secure_channel(self.target, self._credentials, options=options)
                else:
                    self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            req, resp, streaming = svc.METHODS[path]
            make = self._channel.unary_stream if streaming else self._channel.unary_unary
            c = make(path, request_serializer=req.SerializeToString, response_deserializer=resp.FromString)
            self._calls[path] = c
        return c

    def _prepare_sync(self, path: str) -> None:
        """TLS credentials from the files alone (a call before any :meth:`info`)."""
        from ..errors import UserError

        assert self.tls is not None
        if self.tls.skip_verify:  # needs the certificate fetched, which info() does
            raise StoreAPIError(self.address, path, grpc.StatusCode.UNAVAILABLE,
                                "TLS (insecure_skip_verify): the endpoint's certificate has not been fetched yet")
        try:
            stamp = self._stamp()
            roots, key, cert = self.tls.material()
        except UserError as e:
            raise StoreAPIError(self.address, path, None, f"TLS: {e}") from None
        self._credentials = grpc.ssl_channel_credentials(roots, key, cert)
        self._tls_options = [("grpc.ssl_target_name_override", self.tls.server_name)] if self.tls.server_name else []
        self._tls_stamp = stamp

    async def _prepare(self) -> None:
        """(Re)make the TLS credentials when there are none or their files changed; a channel on
        older credentials is replaced (its calls finish within the client timeout)."""
        from ..errors import UserError

        if self.tls is None:
            return
        stamp = self._stamp()
        if self._credentials is not None and stamp == self._tls_stamp:
            return
        try:
            creds, options = await self.tls.channel_args(self.members, self.info_timeout)
        except UserError as e:
            if self._credentials is not None:  # keep dialling with what worked; say why it did not change
                log.error("cannot reload the client TLS files; keeping the previous ones",
                          extra={"address": self.address, "err": str(e)})
                self._tls_stamp = stamp
                return
            raise StoreAPIError(self.address, svc.INFO, None, f"TLS: {e}") from None
        except ConnectionError as e:
            raise StoreAPIError(self.address, svc.INFO, grpc.StatusCode.UNAVAILABLE, str(e)) from None
        if self._tls_stamp is not None and stamp[0] != self._tls_stamp[0]:
            log.info("client TLS files changed; dialling with the new ones", extra={"address": self.address})
        self._credentials, self._tls_options, self._tls_stamp = creds, options, stamp
        self._retire_channel()

    def _stamp(self) -> tuple:
        """What the credentials depend on: the files, and for skip-verify the members whose
        certificates are pinned."""
        assert self.tls is not None
        return self.tls.stamp(), (self.members if self.tls.skip_verify else ())

    def set_members(self, members: Sequence[str]) -> None:
        """The group's addresses changed (a DNS lookup said so): dial again, so grpcio resolves
        the name anew (its resolver does not poll), with certificates pinned again under
        skip-verify (at the next :meth:`info`)."""
        self.members = tuple(members) or (self.address,)
        self._retire_channel()

    def _retire_channel(self) -> None:
        """Drop the current channel: the next call opens one with the current credentials."""
        old = self._channel
        self._channel = None
        self._calls.clear()
        if old is not None:
            task = asyncio.ensure_future(old.close(grace=self.timeout))
            self._closing[task] = old
            task.add_done_callback(lambda t: self._closing.pop(t, None))

    async def close(self) -> None:
        for task, old in list(self._closing.items()):  # retired channels: no more grace
            task.cancel()
            try:
                await old.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if self._h2 is not None:
            self._h2.close()
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
            details = e.details() or ""
            if self.tls is not None and e.code() == grpc.StatusCode.UNAVAILABLE:
                details = _tls_hint(details)
            return StoreAPIError(self.address, path, e.code(), details)
        return StoreAPIError(self.address, path, None, f"{type(e).__name__}: {e}")

    async def _unary(self, path: str, request, timeout: Optional[float]):
        try:
            return await self._call(path)(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.aio.AioRpcError as e:
            raise self._error(path, e) from None

    # -- Info --
    async def info(self, timeout: Optional[float] = None) -> StoreInfo:
        """InfoAPI; when the endpoint answers UNIMPLEMENTED (Thanos < v0.21), ``Store.Info``.
        With TLS, first (re)makes the credentials (see :meth:`_prepare`)."""
        t = self.info_timeout if timeout is None else timeout
        await self._prepare()
        try:
            resp = await self._unary(svc.INFO, info_pb2.InfoRequest(), t)
        except StoreAPIError as e:
            if e.code == grpc.StatusCode.UNAVAILABLE and self.tls is not None and self.tls.skip_verify:
                self._credentials = None  # the pinned certificate may be stale: fetch it again next time
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

    async def exemplars(self, request, timeout: Optional[float] = None) -> list:
        """``thanos.Exemplars/Exemplars``: every ``ExemplarsResponse`` of the stream."""
        call = self._call(svc.EXEMPLARS)(request, timeout=self.timeout if timeout is None else timeout)
        try:
            return [frame async for frame in call]
        except grpc.aio.AioRpcError as e:
            raise self._error(svc.EXEMPLARS, e) from None
        finally:
            call.cancel()

    async def rules(self, request, timeout: Optional[float] = None) -> list:
        """``thanos.Rules/Rules``: every ``RulesResponse`` of the stream."""
        call = self._call(svc.RULES)(request, timeout=self.timeout if timeout is None else timeout)
        try:
            return [frame async for frame in call]
        except grpc.aio.AioRpcError as e:
            raise self._error(svc.RULES, e) from None
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


def _tls_hint(details: str) -> str:
    """grpcio's handshake errors, said in words (the raw text stays)."""
    d = details.lower()
    if "certificate_verify_failed" in d or "certificate verify failed" in d:
        why = "the server's certificate is not trusted by the configured CA (or does not name this server)"
    elif "handshake" in d or "ssl" in d or "tsi" in d:
        why = "TLS handshake failed"
    elif "socket closed" in d or "connection reset" in d or "end of tcp stream" in d:
        why = ("the server closed the connection during the TLS handshake (does it speak TLS, and does it want "
               "a client certificate this client does not have or it does not trust?)")
    else:
        return details
    return f"{why}: {details}"
