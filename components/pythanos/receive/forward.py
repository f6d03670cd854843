"""The receiver's routing and replication step: where each series of a request goes, and what
the request's answer is once its replicas have answered.

Facts follow Thanos v0.42.4 (``pkg/receive/handler.go``: ``forward``, ``fanoutForward``,
``distributeTimeseriesToReplicas``, ``writeQuorum``, the error sets; ``writer_errors.go`` for the
local texts), so our receivers and real Thanos ones can share a hashring:

* **Routing**: every series of the request at once (:meth:`MultiHashring.route` over the decoder's
  routing hashes), one write per (endpoint, replica) holding all its series. The local endpoint's
  share goes to the ``local_write`` callback; every other share is one gRPC
  ``thanos.WriteableStore/RemoteWrite`` with ``replica = n + 1`` on the wire (1-based, always set).
  Remote-write 1.0 series are forwarded as the sender's TimeSeries bytes; 2.0 series are encoded as
  1.0 TimeSeries from the decoded columns (:func:`pythanos.remote.write.timeseries_frames`).
* **Replication**: a request without a replica number is placed at replicas 0..RF-1 and needs
  ``write_quorum(RF)`` answers per series; one that carries replica n (a router sent it) is placed
  at n alone, quorum 1. Router-only receivers never write locally; ingestor-only ones write
  everything locally.
* **Peers**: one channel per endpoint, reused, at most ``forward_workers`` writes in flight to it
  (Thanos' ``--receive.forward.async-workers``); an endpoint answering Unavailable is backed off
  (100 ms doubling with jitter up to ``max_backoff``, Thanos' ``receive-forward-max-backoff``): writes
  to it fail at once with Thanos' "backing off" text until then; a success ends the backoff. A
  hashring change closes the channels of endpoints that left and resets every backoff. Calls go
  uncompressed: grpcio has no snappy (Thanos' default ``--receive.grpc-compression``), and Thanos
  receivers accept uncompressed calls, so nothing needs configuring on either side.
* **Answer** (per series, then for the request): a series whose successes reach the quorum is
  written. Otherwise, *our departure from Thanos* (thanos-io/thanos#8727): replicas answering
  Conflict (409 / AlreadyExists: out-of-order, duplicate, out-of-bounds samples...) hold the data,
  so they count with the successes; a series reaching the quorum that way is settled as a
  conflict. A rolling restart with RF 3 and one member down therefore answers 200 or 409, never
  a 503 that Prometheus would retry for ever (Thanos answers 503 when one replica succeeds, one
  conflicts and one is down). Any series short of the quorum makes the request 503 (Thanos'
  "prefer retryable" rule), else any conflict makes it 409, else 200. The text is Thanos': the
  sorted, de-duplicated errors of the failed series' writes, ``"N errors: a; b"`` when more than
  one.
* **Timeout**: ``forward_timeout`` bounds the whole fan-out. Writes still running then count as
  failed with the gRPC deadline text (Thanos answers 500 "context deadline exceeded" instead;
  both are retried by Prometheus, ours keeps the settled series' verdict).

Remote writes still running when the answer is known continue in the background when every series
succeeded (they improve replication, as in Thanos), and are cancelled otherwise; local writes are
never cancelled half way. Other departures, all deliberate: a local conflict is not counted as an
error in ``thanos_receive_forward_requests_total`` (Thanos leaves out only remote ones); an
ingestor-only receiver with RF > 1 writes everything locally once (Thanos answers 500
"insufficient nodes"); a request whose answer is decided (every series has its quorum, or can no
longer reach it) answers at once instead of waiting for the rest.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional, Sequence

import grpc
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..remote.write import FLAG_EMPTY_VALUE, FLAG_UNSORTED, DecodedWrite, timeseries_frames
from ..storeapi import writeapi
from .hashring import (INGESTOR_ONLY, ROUTER_INGESTOR, ROUTER_ONLY, BadReplicaError, Endpoint,
                       InsufficientNodesError, MultiHashring, NoMatchingHashringError, plan_replicas,
                       series_hash, split_by_endpoint)

log = logging.getLogger(__name__)

__all__ = [
    "COMPRESSIONS", "ERR_NOT_READY", "ERR_UNAVAILABLE", "ERR_BAD_REPLICA", "LocalResult", "ForwardResult",
    "LocalWrite", "Forwarder", "local_outcome", "endpoint_text",
    "error_set_text", "go_status_text",
]

ERR_BAD_REPLICA = "request replica exceeds receiver replication factor"
ERR_NOT_READY = "target not ready"
ERR_UNAVAILABLE = "target not available"
TSDB_NOT_READY = "TSDB not ready"
DEADLINE_TEXT = "context deadline exceeded"
COMPRESSIONS = ("snappy", "none")
_FRAMES_INLINE_MAX = 4096  # series; larger forward parts are encoded on a worker thread

# The outcome of one write to one (endpoint, replica).
OK, CONFLICT, UNAVAILABLE, NOT_READY, FAILED = range(5)

_GO_CODES = {
    grpc.StatusCode.OK: "OK", grpc.StatusCode.CANCELLED: "Canceled", grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument", grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound", grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied", grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition", grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange", grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal", grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss", grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
_STATUS_TO_GRPC = {200: grpc.StatusCode.OK, 400: grpc.StatusCode.INVALID_ARGUMENT, 409: grpc.StatusCode.ALREADY_EXISTS,
                   503: grpc.StatusCode.UNAVAILABLE}


def go_status_text(code: Optional[grpc.StatusCode], details: str) -> str:
    """A gRPC status as Go's ``status.Error`` prints it."""
    return f"rpc error: code = {_GO_CODES.get(code, 'Unknown') if code is not None else 'Unknown'} desc = {details}"


def endpoint_text(e: Endpoint) -> str:
    """Thanos' ``Endpoint.String()``."""
    return f"addr: {e.address}, capnp_addr: {e.capnproto_address}, az: {e.az}"


def _endpoint_replica_text(e: Endpoint, replica: int) -> str:
    # Go's %v of endpointReplica: unexported fields print without their String methods.
    return f"{{{{{e.address} {e.capnproto_address} {e.az}}} {replica}}}"


def error_set_text(reasons: Sequence[str]) -> str:
    """Thanos' errorSet text: reasons de-duplicated and sorted, ``"N errors: "`` before several."""
    rs = sorted(set(r for r in reasons if r))
    if len(rs) > 1:
        return f"{len(rs)} errors: " + "; ".join(rs)
    return rs[0] if rs else ""


# --- results ----------------------------------------------------------------------------------

@dataclass
class LocalResult:
    """What ``local_write`` reports for its share of a request: how many of each refused kind, as
    Thanos' writer counts them (they are conflicts: the request answers 409 unless a replica is
    short), ``not_ready`` when the tenant's TSDB cannot take writes yet, ``error`` for anything
    else (Thanos: "get tenant appendable: ...", "commit samples: ...")."""

    samples_written: int = 0
    histograms_written: int = 0
    exemplars_written: int = 0
    labels_out_of_order: int = 0
    labels_duplicate: int = 0
    labels_empty: int = 0
    samples_out_of_order: int = 0
    samples_duplicate: int = 0
    samples_out_of_bounds: int = 0
    samples_too_old: int = 0
    exemplars_out_of_order: int = 0
    exemplars_duplicate: int = 0
    exemplars_label_length: int = 0
    not_ready: bool = False
    error: str = ""

    _TEXTS = (
        ("labels_out_of_order", "series", "out of order labels"),
        ("labels_duplicate", "series", "label set contains duplicate label names"),
        ("labels_empty", "series", "label set contains a label with empty name or value"),
        ("samples_out_of_order", "samples", "out of order sample"),
        ("samples_duplicate", "samples", "duplicate sample for timestamp"),
        ("samples_out_of_bounds", "samples", "out of bounds"),
        ("samples_too_old", "samples", "too old sample"),
        ("exemplars_out_of_order", "exemplars", "out of order exemplar"),
        ("exemplars_duplicate", "exemplars", "duplicate exemplar"),
        ("exemplars_label_length", "exemplars", "label length for exemplar exceeds maximum of 128 UTF-8 characters"),
    )

    @property
    def conflict(self) -> bool:
        """Some series, samples or exemplars were refused for a reason retrying cannot change."""
        return any(getattr(self, k) > 0 for k, _, _ in self._TEXTS)

    @property
    def ok(self) -> bool:
        return not (self.conflict or self.not_ready or self.error)

    def kind(self) -> int:
        # Thanos' writeErrors.Cause order: not ready before conflict before anything else.
        if self.ok:
            return OK
        if self.not_ready:
            return NOT_READY
        return CONFLICT if self.conflict else FAILED

    def text(self) -> str:
        """Thanos' writer error text ("add 2 samples: out of order sample", several joined)."""
        if self.not_ready:
            return TSDB_NOT_READY
        reasons = [f"add {getattr(self, k)} {what}: {why}" for k, what, why in self._TEXTS if getattr(self, k) > 0]
        if self.error:
            reasons.append(self.error)
        return error_set_text(reasons)


@dataclass
class ForwardResult:
    """The answer to a request: HTTP ``status`` (200, 400, 409, 500, 503) and Thanos' ``message``
    (without the newline ``http.Error`` adds). ``series``/``samples``: how many were routed;
    ``*_written``: those of the series that reached the quorum with successes alone, plus, with one
    replica per series, what a partly refused local write reports it stored (RW 2.0's written
    headers); ``conflicts``/``failed`` count
    series settled as conflicts / short of the quorum."""

    status: int
    message: str = ""
    series: int = 0
    samples: int = 0
    samples_written: int = 0
    histograms_written: int = 0
    exemplars_written: int = 0
    conflicts: int = 0
    failed: int = 0
    #: (series, samples) routed per tenant, when a request was relabelled or split (receive/rewrite.py)
    per_tenant: Optional[dict[str, tuple[int, int]]] = None

    @property
    def grpc_code(self) -> grpc.StatusCode:
        """The status Thanos' RemoteWrite answers for the same outcome."""
        return _STATUS_TO_GRPC.get(self.status, grpc.StatusCode.INTERNAL)


LocalWrite = Callable[[str, DecodedWrite, np.ndarray, int], Awaitable[object]]


def _written(res: object) -> tuple[int, int, int]:
    """(samples, histograms, exemplars) a local write reports it stored (0 when it does not say)."""
    return tuple(int(getattr(res, k, 0) or 0)  # type: ignore[return-value]
                 for k in ("samples_written", "histograms_written", "exemplars_written"))


def local_outcome(res: object) -> tuple[int, str]:
    """The outcome kind and Thanos' writer text of what ``local_write`` returned: a
    :class:`LocalResult`, or any object with ``errors`` (Thanos' texts, each a conflict) and
    optionally ``not_ready`` (bool) and ``error`` (str, a failure that is not a conflict)."""
    if isinstance(res, LocalResult):
        return res.kind(), res.text()
    errors = [str(e) for e in getattr(res, "errors", ()) or ()]
    error = str(getattr(res, "error", "") or "")
    if getattr(res, "not_ready", False):
        return NOT_READY, TSDB_NOT_READY
    if errors:
        return CONFLICT, error_set_text(errors + ([error] if error else []))
    if error:
        return FAILED, error
    return OK, ""


# --- series frames ----------------------------------------------------------------------------

def _i64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def _blob_pairs(blob: bytes) -> list[tuple[bytes, bytes]]:
    """A canonical label blob as (name, value) byte pairs (rare path)."""
    out: list[tuple[bytes, bytes]] = []

    def uv(i: int) -> tuple[int, int]:
        v = shift = 0
        while True:
            b = blob[i]
            i += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                return v, i
            shift += 7

    n, i = uv(0)
    for _ in range(n):
        ln, i = uv(i)
        name = blob[i:i + ln]
        i += ln
        lv, i = uv(i)
        out.append((name, blob[i:i + lv]))
        i += lv
    return out


# --- the forwarder ----------------------------------------------------------------------------

@dataclass
class _Peer:
    attempt: int = -1
    next_allowed: float = 0.0


@dataclass
class _Part:
    endpoint: Endpoint
    replica: int
    local_ids: np.ndarray  # indices into the routed series (0..n)
    local: bool
    written: Optional[tuple[int, int, int]] = None  # what a local write reports it stored


class Forwarder:
    """Routes and replicates decoded remote-write requests over the hashring (see the module
    docstring). ``hashring()`` gives the current :class:`MultiHashring` (None: not ready); the file
    watcher may replace it at any time. ``local_write(tenant, decoded, positions, replica)`` appends
    the series at ``positions`` of ``decoded`` to the tenant's TSDB. Use from one event loop."""

    def __init__(self, hashring: Callable[[], Optional[MultiHashring]], local_endpoint: str,
                 replication_factor: int = 1, mode: str = ROUTER_INGESTOR, *, local_write: LocalWrite,
                 forward_timeout: float = 5.0, max_backoff: float = 5.0, forward_workers: int = 5,
                 credentials: Optional[grpc.ChannelCredentials] = None, grpc_compression: str = "snappy",
                 registry: Optional[CollectorRegistry] = None,
                 channel_options: Sequence[tuple[str, object]] = (),
                 dial: Optional[Callable[[str], Awaitable[tuple[grpc.ChannelCredentials, list]]]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if mode not in (ROUTER_ONLY, INGESTOR_ONLY, ROUTER_INGESTOR):
            raise ValueError(f"unknown receiver mode {mode!r}")
        if replication_factor < 1:
            raise ValueError(f"replication factor must be at least 1, got {replication_factor}")
        if grpc_compression not in COMPRESSIONS:
            raise ValueError(f"--receive.grpc-compression must be one of {', '.join(COMPRESSIONS)}, "
                             f"got {grpc_compression!r}")
        if grpc_compression == "snappy":
            # grpcio has no snappy codec; Thanos receivers accept uncompressed calls, so nothing is lost
            # but bandwidth between receivers.
            log.info("forwarding between receivers uncompressed: grpcio has no snappy codec",
                     extra={"grpc_compression": grpc_compression})
        self.hashring = hashring
        self.local_endpoint = local_endpoint
        self.replication_factor = replication_factor
        self.mode = mode
        self.local_write = local_write
        self.forward_timeout = forward_timeout
        self.max_backoff = max_backoff
        self.forward_workers = max(1, forward_workers)  # Thanos: 0 means 1
        self.credentials = credentials
        self.dial = dial  # TLS per endpoint (--remote-write.client-tls-*): credentials and options for an address
        self.clock = clock
        defaults = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
                    # Thanos' client keepalive
                    ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
                    # grpc's own reconnect backoff (default up to 120 s) would keep a restarted
                    # member dark long after ours let it back in.
                    ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", max(100, int(max_backoff * 1000)))]
        given = {k for k, _ in channel_options}  # e.g. grpc.ssl_target_name_override for TLS
        self._options = [*channel_options, *(kv for kv in defaults if kv[0] not in given)]
        self._ring: Optional[MultiHashring] = None
        self._channels: dict[Endpoint, grpc.aio.Channel] = {}
        self._workers: dict[Endpoint, asyncio.Semaphore] = {}
        self._peers: dict[Endpoint, _Peer] = {}
        self._background: set[asyncio.Task] = set()
        self._local_tasks: set[asyncio.Task] = set()
        reg = registry
        self.m_forward = Counter("thanos_receive_forward_requests_total", "The number of forward requests.",
                                 ["result"], registry=reg)
        self.m_replications = Counter("thanos_receive_replications_total",
                                      "The number of replication operations done by the receiver. The success of "
                                      "replication is fulfilled when a quorum is met.", ["result"], registry=reg)
        self.m_rf = Gauge("thanos_receive_replication_factor",
                          "The number of times to replicate incoming write requests.", registry=reg)
        self.m_delay = Histogram("thanos_receive_forward_delay_seconds",
                                 "The delay between the time the request was received and the time it was forwarded "
                                 "to a worker. ", ["worker"], buckets=[0.001 * 2 ** i for i in range(16)],
                                 registry=reg)
        for r in ("success", "error"):
            self.m_forward.labels(r)
            self.m_replications.labels(r)
        self.m_rf.set(replication_factor)

    # -- peers --

    def _sync_ring(self, ring: MultiHashring) -> None:
        """Thanos' Handler.Hashring: on a new ring, close the channels of endpoints that left it and
        forget every backoff."""
        if ring is self._ring:
            return
        if self._ring is not None:
            gone = set(self._ring.nodes) - set(ring.nodes)
            for e in gone:
                ch = self._channels.pop(e, None)
                self._workers.pop(e, None)
                if ch is not None:
                    self._spawn(ch.close(None))
            self._peers.clear()
        self._ring = ring

    def _channel(self, e: Endpoint) -> grpc.aio.Channel:
        ch = self._channels.get(e)
        if ch is None:
            if self.credentials is not None:
                ch = grpc.aio.secure_channel(e.address, self.credentials, options=self._options)
            else:
                ch = grpc.aio.insecure_channel(e.address, options=self._options)
            self._channels[e] = ch
        return ch

    async def _open(self, e: Endpoint) -> grpc.aio.Channel:
        """The endpoint's channel; with ``dial``, a TLS one made for its address (an
        ``insecure_skip_verify`` channel trusts the certificate the endpoint showed when dialled)."""
        ch = self._channels.get(e)
        if ch is not None or self.dial is None:
            return ch if ch is not None else self._channel(e)
        creds, opts = await self.dial(e.address)
        ch = self._channels.get(e)  # another write may have opened it meanwhile
        if ch is None:
            given = {k for k, _ in opts}
            ch = grpc.aio.secure_channel(e.address, creds, options=[*opts, *(kv for kv in self._options
                                                                             if kv[0] not in given)])
            self._channels[e] = ch
        return ch

    def _backoff(self, attempt: int) -> float:
        """jpillora/backoff ForAttempt with Thanos' settings: min 100 ms, factor 2, jitter, max."""
        lo, hi = 0.1, (self.max_backoff if self.max_backoff > 0 else 10.0)
        if lo >= hi:
            return hi
        d = lo * 2.0 ** min(attempt, 64)
        d = random.random() * (d - lo) + lo
        return min(max(d, lo), hi)

    def _peer_up(self, e: Endpoint) -> bool:
        p = self._peers.get(e)
        return p is None or self.clock() > p.next_allowed

    def _mark_unavailable(self, e: Endpoint) -> None:
        p = self._peers.setdefault(e, _Peer())
        p.attempt += 1
        p.next_allowed = self.clock() + self._backoff(p.attempt)

    def _mark_available(self, e: Endpoint) -> None:
        self._peers.pop(e, None)

    def _spawn(self, coro, local: bool = False) -> asyncio.Task:
        """A task kept referenced until it ends (the answer may come before it does)."""
        t = asyncio.ensure_future(coro)
        for s in (self._background, self._local_tasks) if local else (self._background,):
            s.add(t)
            t.add_done_callback(s.discard)
        t.add_done_callback(_quiet)
        return t

    async def close(self) -> None:
        """Cancel the forwards still running, let local writes finish, close every channel."""
        for t in list(self._background):
            if t not in self._local_tasks:
                t.cancel()
        if self._local_tasks:
            await asyncio.gather(*list(self._local_tasks), return_exceptions=True)
        chans, self._channels = list(self._channels.values()), {}
        for ch in chans:
            await ch.close(None)

    # -- writes --

    def _count(self, ok: bool, conflict: bool, replicated: bool) -> None:
        if ok:
            self.m_forward.labels("success").inc()
            if not replicated:
                self.m_replications.labels("success").inc()
        elif not conflict:  # Thanos leaves AlreadyExists out of the error counts
            self.m_forward.labels("error").inc()
            if not replicated:
                self.m_replications.labels("error").inc()

    async def _remote(self, part: _Part, tenant: str, decoded: DecodedWrite, positions: np.ndarray,
                      replicated: bool, deadline: float, started: float) -> tuple[int, str]:
        e = part.endpoint
        prefix = f"forwarding request to endpoint {endpoint_text(e)}: "
        try:
            if len(positions) > _FRAMES_INLINE_MAX:  # the kernels release the GIL: build big parts off the loop
                frames = await asyncio.to_thread(timeseries_frames, decoded, positions)
            else:
                frames = timeseries_frames(decoded, positions)
        except Exception as err:  # noqa: BLE001: columns a kernel refuses fail this write, not the request
            self._count(False, False, replicated)
            return FAILED, prefix + str(err)
        workers = self._workers.get(e)
        if workers is None:
            workers = self._workers[e] = asyncio.Semaphore(self.forward_workers)
        try:
            async with workers:  # Thanos' per-peer worker pool (--receive.forward.async-workers)
                self.m_delay.labels(e.address).observe(max(0.0, self.clock() - started))
                await writeapi.remote_write(await self._open(e), tenant, part.replica + 1, frames,
                                            timeout=max(deadline - self.clock(), 0.001), target=e.address)
        except writeapi.RemoteWriteError as err:
            conflict = err.code == grpc.StatusCode.ALREADY_EXISTS
            self._count(False, conflict, replicated)
            if err.code == grpc.StatusCode.UNAVAILABLE:
                self._mark_unavailable(e)
            kind = CONFLICT if conflict else UNAVAILABLE if err.code == grpc.StatusCode.UNAVAILABLE else FAILED
            return kind, prefix + go_status_text(err.code, err.details)
        except asyncio.CancelledError:
            self._count(False, False, replicated)
            raise
        except Exception as err:  # noqa: BLE001: a channel closed under us, a grpc usage error: a failed write
            self._count(False, False, replicated)
            return FAILED, prefix + (str(err) or type(err).__name__)
        self._count(True, False, replicated)
        self._mark_available(e)
        return OK, ""

    async def _local(self, part: _Part, tenant: str, decoded: DecodedWrite, positions: np.ndarray,
                     replicated: bool, started: float) -> tuple[int, str]:
        self.m_delay.labels(part.endpoint.address).observe(max(0.0, self.clock() - started))
        try:
            res = await self.local_write(tenant, decoded, positions, part.replica)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001: the local TSDB failing is a failed replica, not a crash
            log.error("local write failed", extra={"tenant": tenant, "err": repr(err)}, exc_info=err)
            res = LocalResult(error=str(err) or type(err).__name__)
        kind, text = local_outcome(res)
        self._count(kind == OK, kind == CONFLICT, replicated)
        part.written = _written(res)
        if kind == OK:
            return OK, ""
        return kind, f"forwarding request to endpoint {endpoint_text(part.endpoint)}: writing locally: {text}"

    def _hashes(self, tenant: str, decoded: DecodedWrite, pos: np.ndarray) -> np.ndarray:
        """The routing hash of each series. 2.0 series are forwarded with their canonical labels,
        so a series the sender did not sort, or with empty values, is hashed over those (a Thanos
        member re-hashes what it receives and must find itself)."""
        h = decoded.hashes[pos]
        if decoded.is_v2:
            odd = np.flatnonzero(decoded.flags[pos] & (FLAG_UNSORTED | FLAG_EMPTY_VALUE))
            if len(odd):
                h = h.copy()
                for k in odd.tolist():
                    h[k] = series_hash(tenant, _blob_pairs(decoded.blob(int(pos[k]))))
        return h

    async def forward(self, tenant: str, decoded: DecodedWrite, wire_replica: int = 0,
                      series: Optional[np.ndarray] = None) -> ForwardResult:
        """Route, replicate and write the series of ``decoded`` (``series``: their indices; default
        all of them, as Thanos forwards every series and lets the ingesting writer refuse bad label
        sets as conflicts) for ``tenant``. ``wire_replica`` is the request's replica
        number as received (HTTP ``THANOS-REPLICA`` header or gRPC ``WriteRequest.replica``, 0 =
        not yet replicated). ``decoded.hashes`` must have been computed with this tenant."""
        started = self.clock()
        try:
            plan = plan_replicas(int(wire_replica), self.replication_factor, self.mode)
        except BadReplicaError as e:
            return ForwardResult(400, str(e))
        pos = np.arange(decoded.n_series, dtype=np.int64) if series is None else _i64(series)
        n = len(pos)
        so = decoded.sample_offsets
        nsamples = int((so[pos + 1] - so[pos]).sum()) if n else 0
        if n == 0:
            return ForwardResult(200)
        if self.mode == INGESTOR_ONLY:
            # No hashring: everything is this receiver's, written once.
            me = Endpoint(self.local_endpoint, self.local_endpoint)
            parts = [_Part(me, 0, np.arange(n), True)]
            replicas: tuple[int, ...] = (0,)
            quorum = 1
            replicated = False
        else:
            ring = self.hashring()
            if ring is None:
                return ForwardResult(503, ERR_NOT_READY, n, nsamples, failed=n)
            self._sync_ring(ring)
            try:
                hr, idx = ring.route(tenant, self._hashes(tenant, decoded, pos), plan.replicas)
            except (NoMatchingHashringError, InsufficientNodesError) as e:
                return ForwardResult(500, str(e), n, nsamples, failed=n)
            local_ok = self.mode == ROUTER_INGESTOR and bool(self.local_endpoint)
            parts = [_Part(hr.endpoints[e], rep, ids, local_ok and hr.endpoints[e].has_address(self.local_endpoint))
                     for e, rep, ids in split_by_endpoint(idx, plan.replicas)]
            replicas, quorum, replicated = plan.replicas, plan.quorum, plan.replicated
        return await self._fanout(tenant, decoded, pos, parts, len(replicas), quorum, replicated, nsamples, started)

    @staticmethod
    def _counts(decoded: DecodedWrite, p: np.ndarray) -> tuple[int, int, int]:
        so = decoded.sample_offsets
        return (int((so[p + 1] - so[p]).sum()), int(decoded.n_histograms[p].sum()), int(decoded.n_exemplars[p].sum()))

    async def _fanout(self, tenant: str, decoded: DecodedWrite, pos: np.ndarray, parts: list[_Part], nrep: int,
                      quorum: int, replicated: bool, nsamples: int, started: float) -> ForwardResult:
        n = len(pos)
        deadline = started + self.forward_timeout
        succ = np.zeros(n, np.int32)
        conf = np.zeros(n, np.int32)
        pending = np.full(n, nrep, np.int32)
        reasons: list[tuple[int, str]] = []  # (part, text) of every failed write
        tasks: dict[asyncio.Task, int] = {}

        def settle(k: int, kind: int, text: str) -> None:
            ids = parts[k].local_ids
            pending[ids] -= 1
            if kind == OK:
                succ[ids] += 1
                return
            if kind == CONFLICT:
                conf[ids] += 1
            reasons.append((k, text))

        for k, part in enumerate(parts):
            if part.local:
                tasks[self._spawn(self._local(part, tenant, decoded, pos[part.local_ids], replicated, started),
                                 True)] = k
            elif not self._peer_up(part.endpoint):
                settle(k, UNAVAILABLE, f"backing off forward request for endpoint "
                                       f"{_endpoint_replica_text(part.endpoint, part.replica)}: {ERR_UNAVAILABLE}")
            else:
                tasks[self._spawn(self._remote(part, tenant, decoded, pos[part.local_ids], replicated, deadline,
                                               started))] = k

        def decided() -> bool:
            s, c, p = succ, succ + conf, pending
            return bool(np.all((s >= quorum) | ((s + p < quorum) & ((c >= quorum) | (c + p < quorum)))))

        waiting = set(tasks)
        while waiting and not decided():
            left = deadline - self.clock()
            if left <= 0:
                break
            done, waiting = await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.cancelled():  # closed under us
                    settle(tasks[t], FAILED, f"forwarding request to endpoint "
                                             f"{endpoint_text(parts[tasks[t]].endpoint)}: context canceled")
                else:
                    settle(tasks[t], *t.result())
        timed_out = not decided()
        all_ok = bool(np.all(succ >= quorum))
        for t in waiting:
            k = tasks[t]
            part = parts[k]
            if not part.local and not all_ok:
                t.cancel()  # the answer is a failure: nothing to gain from the rest (as Thanos)
            if timed_out:
                how = "writing locally: " if part.local else "rpc error: code = DeadlineExceeded desc = "
                settle(k, FAILED,
                       f"forwarding request to endpoint {endpoint_text(part.endpoint)}: {how}{DEADLINE_TEXT}")
        return self._answer(decoded, pos, parts, succ, conf, quorum, reasons, nsamples, nrep)

    def _answer(self, decoded: DecodedWrite, pos: np.ndarray, parts: list[_Part], succ: np.ndarray,
                conf: np.ndarray, quorum: int, reasons: list[tuple[int, str]], nsamples: int,
                nrep: int) -> ForwardResult:
        ok = succ >= quorum
        settled = ~ok & (succ + conf >= quorum)
        failed = ~ok & ~settled
        # What was written (RW 2.0's written headers): the series that have their quorum; with one
        # replica per series, a local write's own count for its share when some of it was refused.
        written = self._counts(decoded, pos[ok])
        if nrep == 1:
            for part in parts:
                if part.written is not None and not ok[part.local_ids].all():
                    written = tuple(w + x for w, x in zip(written, part.written))
        res = ForwardResult(200, "", len(pos), nsamples, *written,
                            conflicts=int(settled.sum()), failed=int(failed.sum()))
        if res.failed or res.conflicts:
            res.status = 503 if res.failed else 409
            res.message = error_set_text([text for k, text in reasons if (~ok[parts[k].local_ids]).any()])
        return res

    async def ingest(self, tenant: str, decoded: DecodedWrite, series: Optional[np.ndarray] = None) -> ForwardResult:
        """Thanos' ingestor-only gRPC fast path: the series straight into the local TSDB, its
        writer's text as the answer (503 not ready, 409 conflict, 500 anything else)."""
        pos = np.arange(decoded.n_series, dtype=np.int64) if series is None else _i64(series)
        so = decoded.sample_offsets
        n, nsamples = len(pos), (int((so[pos + 1] - so[pos]).sum()) if len(pos) else 0)
        if n == 0:
            return ForwardResult(200)
        try:
            res = await self.local_write(tenant, decoded, pos, 0)
        except Exception as err:  # noqa: BLE001
            log.error("local write failed", extra={"tenant": tenant, "err": repr(err)}, exc_info=err)
            res = LocalResult(error=str(err) or type(err).__name__)
        kind, text = local_outcome(res)
        if kind == OK:
            return ForwardResult(200, "", n, nsamples, *self._counts(decoded, pos))
        status = {NOT_READY: 503, CONFLICT: 409}.get(kind, 500)
        return ForwardResult(status, text, n, nsamples, *_written(res), conflicts=n if kind == CONFLICT else 0,
                             failed=0 if kind == CONFLICT else n)


def _quiet(t: asyncio.Task) -> None:
    """Collect a background write's exception so asyncio does not log it as never retrieved."""
    if not t.cancelled():
        t.exception()
