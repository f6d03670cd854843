"""``pythanos query``: the querier's wiring in one asyncio loop (Thanos ``cmd/thanos/query.go``).

HTTP (API v1, UI, ``/metrics``, ``/-/healthy``, ``/-/ready``) and gRPC (StoreAPI + InfoAPI over
the same proxy, so queriers stack) start at once; the endpoint set is refreshed every 5 s.
SIGTERM/SIGINT stop gRPC within ``--grpc-grace-period`` and HTTP within ``--http-grace-period``.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Optional

from ..errors import UserError
from .api import ApiConfig
from .discovery import Discovery, EndpointSpec

log = logging.getLogger(__name__)

__all__ = ["QueryConfig", "run", "serve"]


@dataclass
class QueryConfig:
    http_address: str = "0.0.0.0:10902"
    grpc_address: str = "0.0.0.0:10901"
    http_grace_period: float = 120.0
    grpc_grace_period: float = 120.0
    endpoints: list[EndpointSpec] = field(default_factory=list)
    sd_files: list[str] = field(default_factory=list)
    sd_config_file: str = ""
    sd_interval: float = 300.0
    sd_config_interval: float = 300.0
    dns_interval: float = 30.0
    dns_server: str = ""
    unhealthy_timeout: float = 300.0
    response_timeout: float = 0.0
    api: ApiConfig = field(default_factory=ApiConfig)
    external_prefix: str = ""
    route_prefix: str = ""
    select_concurrency: int = 4


class _Metrics:
    def __init__(self, registry) -> None:
        from prometheus_client import Gauge, Histogram

        from .. import __version__

        self.status = Gauge("thanos_status", "Represents status (0 indicates failure, 1 indicates success) of the "
                            "component.", ["check", "component"], registry=registry)
        self.build = Gauge("thanos_build_info", "A metric with a constant '1' value labeled by version, revision, "
                           "branch, and goversion from which thanos was built.",
                           ["version", "revision", "branch", "goversion"], registry=registry)
        self.build.labels(__version__, "", "", "python").set(1)
        self.http_duration = Histogram("http_request_duration_seconds", "Tracks the latencies for HTTP requests.",
                                       ["code", "handler", "method"], registry=registry)
        self.gate_max = Gauge("thanos_query_concurrent_gate_queries_max",
                              "Maximum number of concurrent queries.", registry=registry)
        self.gate_in_flight = Gauge("thanos_query_concurrent_gate_queries_in_flight",
                                    "Number of queries that are currently in flight.", registry=registry)
        self.nodes = Gauge("thanos_store_nodes_grpc_connections",
                           "Number of gRPC connection to Store APIs. Opened connection means healthy store APIs "
                           "available for Querier.", ["external_labels", "store_type"], registry=registry)


def run(config: QueryConfig) -> int:
    from ..runtime import tune_gc

    tune_gc()
    return asyncio.run(serve(config))


async def serve(config: QueryConfig, stop: Optional[asyncio.Event] = None) -> int:
    from aiohttp import web
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    from ..promql import Engine
    from ..storeapi import StoreServer
    from .api import QueryAPI
    from .endpoints import EndpointSet
    from .proxy import Proxy
    from .store import QueryStore

    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    metrics = _Metrics(registry)
    metrics.gate_max.set(config.api.max_concurrent)

    discovery = Discovery(static=list(config.endpoints), sd_files=list(config.sd_files),
                          sd_config_file=config.sd_config_file, dns_interval=config.dns_interval,
                          sd_interval=config.sd_interval, sd_config_interval=config.sd_config_interval,
                          dns_server=config.dns_server)
    endpoints = EndpointSet(discovery, unhealthy_timeout=config.unhealthy_timeout)
    proxy = Proxy(endpoints, response_timeout=config.response_timeout)
    # Thanos builds its engine with MaxSamples = MaxInt32 (pkg/api/query/engine.go)
    engine = Engine(lookback_delta_ms=config.api.lookback_delta_ms, timeout_s=config.api.timeout_s or None,
                    max_samples=2**31 - 1,
                    select_concurrency=config.select_concurrency)
    api = QueryAPI(proxy, engine, config.api, endpoints.statuses)
    metrics.gate_in_flight.set_function(lambda: api.in_flight)

    def update_node_metrics() -> None:
        metrics.nodes.clear()
        counts: dict = {}
        for ep in endpoints.active():
            key = (",".join("{" + ",".join(f'{n}="{v}"' for n, v in ls) + "}" for ls in ep.label_sets()),
                   ep.component_type)
            counts[key] = counts.get(key, 0) + 1
        for (ext, typ), n in counts.items():
            metrics.nodes.labels(ext, typ).set(n)

    async def metrics_handler(request: web.Request) -> web.Response:
        update_node_metrics()
        body = await loop.run_in_executor(None, generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def ok_handler(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    @web.middleware
    async def instrument(request: web.Request, handler):
        t0 = time.perf_counter()
        code = 500
        try:
            resp = await handler(request)
            code = resp.status
            return resp
        except web.HTTPException as e:
            code = e.status
            raise
        finally:
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "other"
            metrics.http_duration.labels(str(code), name, request.method).observe(time.perf_counter() - t0)

    prefix = (config.route_prefix or config.external_prefix).rstrip("/")
    app = web.Application(middlewares=[instrument])
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/-/healthy", ok_handler)
    app.router.add_get("/-/ready", ok_handler)
    api.routes(app, prefix)
    try:
        from ..web import add_ui_routes
    except ImportError:  # the UI package is optional for the API
        add_ui_routes = None
    if add_ui_routes is not None:
        add_ui_routes(app, prefix)

    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=config.http_grace_period)
    await runner.setup()
    host, _, port = config.http_address.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]") or None, int(port))
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise UserError(f"--http-address={config.http_address}: cannot listen: {e.strerror or e}") from None
    metrics.status.labels("healthy", "query").set(1)
    log.info("listening for requests and metrics", extra={"component": "query", "address": config.http_address})

    grpc_server = StoreServer(QueryStore(proxy))
    try:
        await grpc_server.start(config.grpc_address)
    except OSError as e:
        await runner.cleanup()
        raise UserError(f"--grpc-address={config.grpc_address}: {e}") from None

    await endpoints.start()
    metrics.status.labels("ready", "query").set(1)
    log.info("starting query node", extra={"endpoints": len(endpoints.endpoints)})
    try:
        await stop.wait()
        log.info("caught signal. Exiting.")
    finally:
        metrics.status.labels("ready", "query").set(0)
        await grpc_server.stop(config.grpc_grace_period)
        log.info("internal server is shutdown gracefully", extra={"component": "query", "service": "gRPC"})
        await runner.cleanup()
        log.info("internal server is shutdown gracefully", extra={"component": "query", "service": "http"})
        await endpoints.stop()
        engine.close()
    return 0
