"""``POST /api/v1/receive``: Prometheus remote write 1.0 and 2.0 in, Thanos' status semantics out.

The order of checks and the texts are Thanos v0.42's ``receiveHTTP`` (tenant, write gate, head-series
limit 429, size limit 413, snappy 400, protobuf 400, replica header 400, empty request 200, series
and samples limits 413), then the write: 200 when stored, 409 for conflicts (bad samples or series;
the good ones of the same request are stored all the same), 503 when a quorum of replicas is not
reached, 500 otherwise. Where Thanos v0.42 answers a remote-write 2.0 body with 200 and drops it, we
store it and answer as Prometheus' RW 2.0 receiver does (the remote-write 2.0 spec, checked by
prometheus/compliance ``remotewrite/receiver``): ``X-Prometheus-Remote-Write-*-Written`` headers, 204
when everything was written, 400 (not Thanos' 409) when some series or samples were refused, the good
ones written all the same and counted in the headers.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

from prometheus_client import Counter, Histogram

from ..remote import write as rw
from .limits import Limits
from .tenants import check_tenant

log = logging.getLogger(__name__)

__all__ = ["WriteOutcome", "ReceiveHandler", "DEFAULT_TENANT_HEADER"]

DEFAULT_TENANT_HEADER = "THANOS-TENANT"
#: bodies above this are decoded on a worker thread, smaller ones on the loop (a thread hop costs more)
_DECODE_INLINE_MAX = 256 << 10
#: remote write 2.0 answers as Prometheus gives them: 204 for a full write, 400 for refused data
_V2_STATUS = {200: 204, 409: 400}


@dataclass
class WriteOutcome:
    """What routing and storing a request gave: the HTTP status and text, and what was written."""

    status: int = 200
    message: str = ""
    samples_written: int = 0
    histograms_written: int = 0
    exemplars_written: int = 0
    #: (series, samples) routed per tenant after relabelling and splitting (None: all under the
    #: request's tenant, as decoded); Thanos observes its write histograms with these
    per_tenant: Optional[dict[str, tuple[int, int]]] = None


Route = Callable[[str, rw.DecodedWrite, int], Awaitable[WriteOutcome]]


class _Metrics:
    def __init__(self, registry) -> None:
        sizes = (10, 100, 1000, 10_000, 100_000, 1_000_000)
        self.timeseries = Histogram("thanos_receive_write_timeseries",
                                    "The number of timeseries received in the incoming write requests.",
                                    ["code", "tenant"], buckets=sizes, registry=registry)
        self.samples = Histogram("thanos_receive_write_samples",
                                 "The number of sampled received in the incoming write requests.",
                                 ["code", "tenant"], buckets=sizes, registry=registry)
        self.requests = Counter("http_requests_total", "Tracks the number of HTTP requests.",
                                ["code", "handler", "method"], registry=registry)


#: ``--receive.tenant-certificate-field`` values -> the subject attribute (Python's ``getpeercert`` names)
CERTIFICATE_FIELDS = {"organization": "organizationName", "organizationalUnit": "organizationalUnitName",
                      "commonName": "commonName"}


def tenant_from_certificate(transport, field: str) -> str:
    """The tenant from the verified client certificate (Thanos' ``getTenantFromCertificate``: the
    first organization or organizational unit, the common name), with Thanos' texts when missing."""
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        raise ValueError("could not get required certificate field from client cert")
    values = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == CERTIFICATE_FIELDS[field]]
    if not values or not values[0]:
        raise ValueError(f"could not get {field} field from client cert")
    return values[-1] if field == "commonName" else values[0]  # Go keeps the last CN, the first O/OU


class ReceiveHandler:
    """The remote-write endpoint; ``route`` stores or forwards a decoded request."""

    def __init__(self, route: Route, *, tenant_header: str = DEFAULT_TENANT_HEADER,
                 default_tenant: str = "default-tenant", replica_header: str = "THANOS-REPLICA",
                 limits: Callable[[], Limits], head_series: Callable[[str], int] = lambda tenant: 0,
                 ready: Callable[[], Optional[str]] = lambda: None, registry=None,
                 executor=None, tenant_field: str = "") -> None:
        self.route = route
        self.tenant_field = tenant_field  # --receive.tenant-certificate-field
        self.tenant_header = tenant_header
        self.default_tenant = default_tenant
        self.replica_header = replica_header
        self.limits = limits
        self.head_series = head_series
        self.ready = ready
        self.executor = executor
        self.metrics = _Metrics(registry)
        self._gate: Optional[asyncio.Semaphore] = None
        self._gate_size = 0

    def routes(self, app) -> None:
        app.router.add_post("/api/v1/receive", self.handle)

    def _tenant(self, request) -> str:
        """Thanos' ``GetTenantFromHTTP``: the header, the default header, the default tenant; with a
        certificate field, that field of the client's certificate (ValueError when it has none)."""
        if self.tenant_field:
            return tenant_from_certificate(request.transport, self.tenant_field)
        return (request.headers.get(self.tenant_header) or request.headers.get(DEFAULT_TENANT_HEADER)
                or self.default_tenant)

    def _write_gate(self, limits: Limits) -> Optional[asyncio.Semaphore]:
        if limits.max_concurrency <= 0:
            return None
        if self._gate is None or self._gate_size != limits.max_concurrency:
            self._gate, self._gate_size = asyncio.Semaphore(limits.max_concurrency), limits.max_concurrency
        return self._gate

    async def handle(self, request):
        from aiohttp import web

        status, text, headers, observed = 500, "", {}, {}
        try:
            tenant, why = self._tenant(request), None
        except ValueError as e:
            tenant, why = "", str(e)
        try:
            why = why or check_tenant(tenant)
            if why is not None:
                status, text = 400, why
                return web.Response(status=status, text=text + "\n")
            why = self.ready()
            if why is not None:
                status, text = 503, f"target not ready: {why}"
                return web.Response(status=status, text=text + "\n")
            limits = self.limits()
            gate = self._write_gate(limits)
            if gate is not None:
                await gate.acquire()
            try:
                status, text, headers, observed = await self._handle(request, tenant, limits)
            finally:
                if gate is not None:
                    gate.release()
            return web.Response(status=status, text=(text + "\n") if text else "", headers=headers)
        finally:
            self.metrics.requests.labels(str(status), "receive", "post").inc()
            for t, (n_series, n_samples) in observed.items():
                if n_series:
                    self.metrics.timeseries.labels(str(status), t).observe(n_series)
                    self.metrics.samples.labels(str(status), t).observe(n_samples)

    async def _handle(self, request, tenant: str, limits: Limits):
        limit = limits.head_series(tenant)
        if limit and self.head_series(tenant) >= limit:
            return 429, "tenant is above active series limit", {}, {}
        req_limits = limits.request(tenant)
        if req_limits.size_bytes and request.content_length is not None \
                and request.content_length > req_limits.size_bytes:
            return 413, "write request too large", {}, {}
        try:
            body = await request.read()
        except Exception as e:  # noqa: BLE001
            return 500, f"read compressed request body: {e}", {}, {}
        h = request.headers
        args = (body, h.get("Content-Type", ""), h.get(rw.VERSION_HEADER, ""), h.get("Content-Encoding", ""))
        # a 1.0 series without __name__ is stored, as Thanos' receiver stores it (Prometheus' refuses it)
        kw = dict(tenant=tenant, size_bytes_limit=req_limits.size_bytes, v1_require_name=False)
        try:
            if len(body) > _DECODE_INLINE_MAX:
                loop = asyncio.get_running_loop()
                decoded = await loop.run_in_executor(self.executor, lambda: rw.decode_request(*args, **kw))
            else:
                decoded = rw.decode_request(*args, **kw)
        except rw.WriteDecodeError as e:
            return e.status, e.message, {}, {}
        replica = 0
        raw = h.get(self.replica_header, "")
        if raw:
            try:
                replica = int(raw)
                if replica < 0 or replica >= 1 << 64:
                    raise ValueError
            except ValueError:
                return 400, "could not parse replica header", {}, {}
        v2 = decoded.is_v2
        n_series, n_samples = decoded.n_series, decoded.n_samples
        if n_series == 0:
            return (204, "", rw.written_headers(0, 0, 0), {}) if v2 else (200, "", {}, {})
        if req_limits.series and n_series > req_limits.series:
            return 413, "too many timeseries", {}, {tenant: (n_series, n_samples)}
        if req_limits.samples and n_samples > req_limits.samples:
            return 413, "too many samples", {}, {tenant: (n_series, n_samples)}
        out = await self.route(tenant, decoded, replica)
        if out.status >= 500:
            log.error("internal server error" if out.status == 500 else "write failed",
                      extra={"tenant": tenant, "status": out.status, "err": out.message})
        counts = out.per_tenant if out.per_tenant is not None else {tenant: (n_series, n_samples)}
        if not v2:
            return out.status, out.message, {}, counts
        headers = rw.written_headers(out.samples_written, out.histograms_written, out.exemplars_written)
        return _V2_STATUS.get(out.status, out.status), out.message, headers, counts
