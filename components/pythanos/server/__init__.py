"""The one server base every long-running component stands on.

A :class:`Component` owns what Thanos' ``prober``, ``httpserver`` and ``grpcserver`` packages
give each ``thanos <component>``:

* a metrics registry with the process collectors, ``thanos_status{check,component}``,
  ``thanos_build_info`` and ``http_request_duration_seconds`` (every HTTP route instrumented);
* the HTTP server: ``/metrics``, ``/-/healthy`` and ``/-/ready`` (503 with the reason while not
  ready), plus whatever routes the component adds to :attr:`Component.app` before
  :meth:`start_http`;
* the gRPC server (``grpc.aio``, the StoreAPI's server options) carrying the generic handlers the
  component registers (e.g. ``StoreServer(store).handlers()``);
* SIGTERM/SIGINT handling and graceful shutdown: not ready, gRPC drains within
  ``--grpc-grace-period``, HTTP within ``--http-grace-period``;
* :meth:`run_tasks`: the component's background loops supervised together: the first one to
  fail ends the component (exit code 1, the error logged once).

Listening is the one place where transport security plugs in (``--grpc-server-tls-*`` and
``--http.config``): :meth:`start_http` and :meth:`start_grpc` are the only callers of
``TCPSite`` and ``add_*_port``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Awaitable, Callable, Iterable, Mapping, Optional

from ..errors import UserError

if TYPE_CHECKING:  # imported where used: ``python -m pythanos.server.workers`` runs that module itself
    from ..tlsconfig import ServerTLS
    from .grpcfront import GrpcFront, UnaryMethod
    from .workers import WorkerSlot

log = logging.getLogger(__name__)

__all__ = ["Component", "ReadyCheck", "bound_address", "close_quietly"]

#: ``None`` when ready, else the reason shown by ``/-/ready``.
ReadyCheck = Callable[[], Optional[str]]


class _Metrics:
    def __init__(self, registry, component: str) -> None:
        from prometheus_client import Gauge, Histogram

        from .. import __version__

        self.status = Gauge("thanos_status", "Represents status (0 indicates failure, 1 indicates success) of the "
                            "component.", ["check", "component"], registry=registry)
        self.status.labels("healthy", component).set(0)
        self.status.labels("ready", component).set(0)
        self.build = Gauge("thanos_build_info", "A metric with a constant '1' value labeled by version, revision, "
                           "branch, and goversion from which thanos was built.",
                           ["version", "revision", "branch", "goversion"], registry=registry)
        self.build.labels(__version__, "", "", "python").set(1)
        self.http_duration = Histogram("http_request_duration_seconds", "Tracks the latencies for HTTP requests.",
                                       ["code", "handler", "method"], registry=registry)


class Component:
    """HTTP + gRPC servers, probes, metrics and shutdown of one ``pythanos <component>``.

    Typical use in a component's ``serve``::

        srv = Component("store", http_address=..., grpc_address=..., stop=stop)
        srv.app.router.add_get(...)              # the component's own routes
        srv.ready_check = lambda: None if synced else "initial block sync running"
        await srv.start_http()
        await srv.start_grpc(StoreServer(store).handlers())
        return await srv.run_tasks([...])        # until a signal or a failing task; then shutdown
    """

    def __init__(self, name: str, *, http_address: str, http_grace_period: float = 120.0, http_config: str = "",
                 grpc_address: Optional[str] = None, grpc_grace_period: float = 120.0,
                 grpc_tls: Optional[ServerTLS] = None, grpc_max_connection_age: float = 0.0,
                 stop: Optional[asyncio.Event] = None, registry=None, worker: Optional[WorkerSlot] = None) -> None:
        from aiohttp import web
        from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

        self.name = name
        #: set when this process is one of several workers (:mod:`pythanos.server.workers`)
        self.worker = worker
        self.http_address = http_address
        self.http_grace_period = http_grace_period
        #: ``--http.config``: Prometheus' web config file (TLS, basic auth, headers); "" for plain HTTP
        self.http_config = http_config
        self.grpc_address = grpc_address
        self.grpc_grace_period = grpc_grace_period
        #: ``--grpc-server-tls-*`` (None: plaintext); ``--grpc-server-max-connection-age`` (0: unlimited)
        self.grpc_tls = grpc_tls
        self.grpc_max_connection_age = grpc_max_connection_age
        self.stop = stop or asyncio.Event()
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        self.registry = registry
        self.metrics = _Metrics(registry, name)
        self.ready_check: ReadyCheck = lambda: None
        self._ready = False
        #: called before ``/metrics`` is rendered (to refresh gauges computed on demand)
        self.before_metrics: list[Callable[[], None]] = []
        self.app = web.Application(middlewares=[self._instrument])
        self.app.router.add_get("/metrics", self._metrics_handler)
        self.app.router.add_get("/-/healthy", self._healthy_handler)
        self.app.router.add_get("/-/ready", self._ready_handler)
        self._runner = None
        self._local_runner = None
        self._extra_runners: list = []
        self._grpc = None
        self._front: Optional[GrpcFront] = None
        self._spill = None  # a worker's pythanos.server.spill.Spill
        self._spill_timer: Optional[asyncio.TimerHandle] = None
        self.grpc_port = 0
        self.http_port = 0
        self._install_signals()

    # -- probes --------------------------------------------------------------------------------------
    def set_ready(self, ok: bool) -> None:
        """Mark the component ready (``ready_check`` is still consulted by ``/-/ready``)."""
        self._ready = ok
        self.metrics.status.labels("ready", self.name).set(1 if ok else 0)

    def not_ready_reason(self) -> Optional[str]:
        why = self.ready_check()
        if why is not None:
            return why
        return None if self._ready else "not ready"

    async def _healthy_handler(self, request):
        from aiohttp import web

        return web.Response(text="OK")

    async def _ready_handler(self, request):
        from aiohttp import web

        why = self.not_ready_reason()
        if why is None:
            return web.Response(text="OK")
        return web.Response(status=503, text=f"NOT OK: {why}\n")

    async def _metrics_handler(self, request):
        from aiohttp import web
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        for fn in self.before_metrics:
            fn()
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, self.registry)
        if self.worker is not None:
            from .workers import LOCAL_METRICS_HEADER, gather_metrics

            if not request.headers.get(LOCAL_METRICS_HEADER):
                body = await gather_metrics(self.worker, body)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _instrument(self, request, handler):
        from aiohttp import web

        t0 = time.perf_counter()
        code = 500
        try:
            resp = await handler(request)
            code = resp.status
            if self._spill is not None and self._spill.shed > 0 and self._spill.take_shed():
                resp.force_close()  # the client reconnects, and a less busy worker takes it
            return resp
        except web.HTTPException as e:
            code = e.status
            raise
        finally:
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "other"
            self.metrics.http_duration.labels(str(code), name, request.method).observe(time.perf_counter() - t0)

    # aiohttp recognises new-style middlewares by this attribute
    _instrument.__middleware_version__ = 1  # type: ignore[attr-defined]

    # -- listening ----------------------------------------------------------------------------------
    async def start_http(self) -> None:
        """Listen on ``--http-address`` (a worker: on its supervisor's socket). With ``--http.config``
        every route, the probes and ``/metrics`` included, is behind the file's rate limit, headers
        and basic auth, and with a TLS section the port speaks TLS only, as a Thanos HTTP server
        (exporter-toolkit; see :mod:`pythanos.server.httpguard`). A bad file is a UserError naming
        the flag, the file and the field."""
        from aiohttp import web

        guard = None
        if self.http_config:
            from .httpguard import HTTPGuard

            guard = HTTPGuard(self.http_config)
            guard.install(self.app)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=self.http_grace_period)
        await self._runner.setup()
        host, _, port = self.http_address.rpartition(":")
        tls = guard is not None and guard.tls
        socks: list[socket.socket] = []
        try:
            if self.worker is not None:  # the supervisor's listening socket, and one for the siblings' /metrics
                socks = [socket.socket(fileno=self.worker.http_fd)]
                site = self._http_site(socks, guard)
                await self._start_local_metrics()
            elif tls:
                from .httpguard import listen_sockets

                socks = listen_sockets(host.strip("[]") or None, int(port))
                site = self._http_site(socks, guard)
            else:
                site = web.TCPSite(self._runner, host.strip("[]") or None, int(port))
            await site.start()
            if self.worker is not None and self.worker.count > 1:
                self._start_spill(site)
        except OSError as e:
            await self._runner.cleanup()
            self._runner = None
            raise UserError(f"--http-address={self.http_address}: cannot listen: {e.strerror or e}") from None
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or socks
        self.http_port = sockets[0].getsockname()[1] if sockets else int(port)
        self.metrics.status.labels("healthy", self.name).set(1)
        # the port it really listens on: with ":0" the kernel picked it, and this line is how one learns it
        address = bound_address(self.http_address, self.http_port)
        log.info("listening for requests and metrics", extra={"component": self.name, "address": address})
        if guard is not None:  # aiohttp serves HTTP/1.1 only: no HTTP/2 whatever http_server_config.http2 says
            log.info("TLS is enabled." if tls else "TLS is disabled.",
                     extra={"component": self.name, "http2": False, "address": address})

    def _http_site(self, socks: list[socket.socket], guard):
        """The site on already listening sockets: TLS when the web config has a TLS section."""
        from aiohttp import web

        accepting = self.worker is None or self.worker.index == 0  # see pythanos.server.spill
        if guard is not None and guard.tls:
            from .httpguard import TLSSite

            return TLSSite(self._runner, socks, guard, accepting=accepting)
        if self.worker is not None:
            from .spill import WorkerSite

            return WorkerSite(self._runner, socks[0], accepting=accepting)
        return web.SockSite(self._runner, socks[0])

    def _start_spill(self, site) -> None:
        """A worker takes connections while its siblings are busy (:mod:`pythanos.server.spill`)."""
        from prometheus_client import Gauge

        from .spill import TICK, LoadBoard, Spill

        assert self.worker is not None
        board = LoadBoard(os.path.join(self.worker.metrics_dir, "load"), self.worker.count, self.worker.index)
        server = self._runner.server
        self._spill = spill = Spill(board, site.pause, site.resume, connections=lambda: len(server.connections))
        accepting = Gauge("pythanos_worker_accepting_connections", "1 while this worker takes new HTTP connections "
                          "(worker 0 always; others while the workers taking them use their cores).",
                          registry=self.registry)
        cores = Gauge("pythanos_worker_cpu_cores", "CPU this worker used lately (cores, about the last second).",
                      registry=self.registry)
        loop = asyncio.get_running_loop()

        def tick() -> None:
            spill.tick()
            accepting.set(1 if spill.accepting else 0)
            cores.set(spill.load)
            self._spill_timer = loop.call_later(TICK, tick)

        accepting.set(1 if spill.accepting else 0)
        self._spill_timer = loop.call_later(TICK, tick)

    async def _start_local_metrics(self) -> None:
        """A worker's own ``/metrics`` for its siblings, on a Unix socket in the supervisor's private
        directory: a separate app with that one route (no web config, nothing else reachable)."""
        from aiohttp import web

        assert self.worker is not None
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_handler)
        self._local_runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await self._local_runner.setup()
        await web.UnixSite(self._local_runner, self.worker.metrics_socket()).start()

    async def start_grpc(self, handlers: Iterable, front_methods: Optional[Mapping[str, UnaryMethod]] = None) -> None:
        """Serve ``handlers`` on ``--grpc-address``: TLS (mTLS with a client CA, certificates re-read
        when their files change) when :attr:`grpc_tls` is set, else plaintext. Workers listen on
        the port their supervisor holds, each with the same settings.

        ``front_methods`` (path -> unary handler; the receiver's RemoteWrite): the port is served
        by a :class:`~pythanos.server.grpcfront.GrpcFront` that answers connections beginning
        with those methods itself (with snappy, which grpcio lacks) and splices every other
        connection to grpcio on a private Unix socket; TLS then ends in the front."""
        import grpc

        from ..storeapi import service as svc

        if self.grpc_address is None:
            raise ValueError(f"{self.name}: no gRPC address configured")
        options, address = list(svc.SERVER_OPTIONS), self.grpc_address
        if self.worker is not None:  # every worker listens on the port the supervisor holds
            options = [o for o in options if o[0] != "grpc.so_reuseport"] + [("grpc.so_reuseport", 1)]
            address = self.worker.grpc_address
        if self.grpc_max_connection_age > 0:  # GOAWAY after this long: clients reconnect (and handshake anew)
            options.append(("grpc.max_connection_age_ms", max(1, int(self.grpc_max_connection_age * 1000))))
        if front_methods is not None:
            from .grpcfront import GrpcFront

            max_recv = dict(options)["grpc.max_receive_message_length"]
            # TLS files are loaded (and refused with a UserError) here, before anything listens
            self._front = GrpcFront(front_methods, max_recv=max_recv, tls=self.grpc_tls,
                                    max_connection_age=self.grpc_max_connection_age, name=self.name)
            public, address = address, "unix:" + self._front.upstream
        credentials = None
        if self.grpc_tls is not None:
            if front_methods is None:  # else the front ends TLS and grpcio behind it is plaintext
                credentials = self.grpc_tls.credentials()  # a UserError naming the flag and file if they do not load
            log.info("enabling server side TLS", extra={"component": self.name, "protocol": "gRPC"})
            if self.grpc_tls.client_ca_file:
                log.info("server TLS client verification enabled", extra={"component": self.name, "protocol": "gRPC"})
        else:
            log.info("disabled TLS, key and cert must be set to enable", extra={"component": self.name,
                                                                               "protocol": "gRPC"})
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers(list(handlers))
        try:
            if credentials is not None:
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise UserError(f"--grpc-address={self.grpc_address}: cannot listen: {e}") from None
        if not port:
            raise UserError(f"--grpc-address={self.grpc_address}: cannot listen")
        await server.start()
        self._grpc = server
        if self._front is not None:
            port = await self._front.start(public, reuse_port=self.worker is not None)
        self.grpc_port = port
        log.info("listening for serving gRPC", extra={"component": self.name,
                                                      "address": bound_address(self.grpc_address, port),
                                                      "tls": self.grpc_tls is not None})

    async def listen_http(self, app, address: str, flag: str, tls=None) -> int:
        """Serve another aiohttp ``app`` on ``address`` (the receiver's ``--remote-write.address``);
        stopped with the others. Returns the port; a UserError names ``flag`` when it cannot listen.
        ``tls``: a :class:`pythanos.server.tlsflags.FlagServerTLS` to speak TLS only (Go's answer
        to plain HTTP, certificates re-read when they change)."""
        from aiohttp import web

        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=self.http_grace_period)
        await runner.setup()
        host, _, port = address.rpartition(":")
        try:
            if tls is not None:
                from .httpguard import TLSSite, listen_sockets

                site = TLSSite(runner, listen_sockets(host.strip("[]") or None, int(port)), tls)
            else:
                site = web.TCPSite(runner, host.strip("[]") or None, int(port))
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise UserError(f"{flag}={address}: cannot listen: {e.strerror or e}") from None
        self._extra_runners.append(runner)
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None)
        bound = sockets[0].getsockname()[1] if sockets else int(port)
        log.info("listening for requests", extra={"component": self.name, "address": bound_address(address, bound),
                                                  "flag": flag})
        return bound

    async def start(self, grpc_handlers: Optional[Iterable] = None,
                    cleanup: Optional[Callable[[], Awaitable]] = None,
                    grpc_front: Optional[Mapping[str, UnaryMethod]] = None) -> None:
        """HTTP, then gRPC (when handlers are given); if either cannot listen, what started is
        stopped, ``cleanup`` runs and the error (a UserError naming the flag) propagates."""
        try:
            await self.start_http()
            if grpc_handlers is not None:
                await self.start_grpc(grpc_handlers, grpc_front)
        except BaseException:
            await self.shutdown()
            if cleanup is not None:
                await cleanup()
            raise

    # -- lifecycle ----------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop.set)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass

    async def run_tasks(self, tasks: Iterable[Awaitable], *, on_stop: Optional[Callable[[], Awaitable]] = None) -> int:
        """Run the background coroutines until ``stop`` is set or one of them ends; then shut down.

        A task that raises ends the component with exit code 1 (a :class:`UserError` logged as
        its message, anything else as "<component> component failed"); a task that returns
        without being asked to counts as a failure too. ``on_stop`` runs after the servers
        have stopped (close clients, buckets)."""
        running = [t if isinstance(t, asyncio.Task) else asyncio.ensure_future(t) for t in tasks]
        stop_task = asyncio.create_task(self.stop.wait(), name="stop")
        exit_code = 0
        try:
            done, _ = await asyncio.wait([stop_task, *running], return_when=asyncio.FIRST_COMPLETED)
            failure: Optional[BaseException] = None
            for t in done:
                if t is stop_task:
                    continue
                exc = t.exception()
                failure = exc if exc is not None else RuntimeError(f"{t.get_name()} ended")
            if failure is not None:
                exit_code = 1
                if isinstance(failure, UserError):
                    log.error(str(failure))
                else:
                    log.error(f"{self.name} component failed", extra={"err": f"{type(failure).__name__}: {failure}"})
            else:
                log.info("caught signal. Exiting.")
        finally:
            for t in running:
                t.cancel()
            stop_task.cancel()
            await asyncio.gather(*running, stop_task, return_exceptions=True)
            await self.shutdown()
            if on_stop is not None:
                await on_stop()
        return exit_code

    async def shutdown(self) -> None:
        """Not ready, then gRPC and HTTP stop within their grace periods."""
        self.set_ready(False)
        if self._spill_timer is not None:
            self._spill_timer.cancel()
        if self._front is not None:  # its connections drain while grpcio stops (spliced ones are grpcio's)
            self._front.stop_accepting()
        if self._grpc is not None:
            if self._front is None:
                await self._grpc.stop(self.grpc_grace_period)
            else:
                await asyncio.gather(self._grpc.stop(self.grpc_grace_period), self._front.close(self.grpc_grace_period))
            self._grpc = None
            log.info("internal server is shutdown gracefully", extra={"component": self.name, "service": "gRPC"})
        if self._front is not None:
            await self._front.close(0)  # no-op after the above; removes its socket dir if grpcio never started
            self._front = None
        while self._extra_runners:
            await self._extra_runners.pop().cleanup()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._local_runner is not None:
            await self._local_runner.cleanup()
            self._local_runner = None
            log.info("internal server is shutdown gracefully", extra={"component": self.name, "service": "http"})
        self.metrics.status.labels("healthy", self.name).set(0)


def bound_address(address: str, port: int) -> str:
    """``address`` (``host:port`` as configured) with the port a server actually listens on."""
    host, _, _ = address.rpartition(":")
    return f"{host}:{port}"


def close_quietly(obj) -> None:
    """``obj.close()`` if it has one, ignoring its errors (shutdown must go on)."""
    closer = getattr(obj, "close", None)
    if closer is not None:
        try:
            closer()
        except Exception:  # noqa: BLE001
            pass
