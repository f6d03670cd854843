"""``pythanos query``: the querier's wiring in one asyncio loop (Thanos ``cmd/thanos/query.go``).

HTTP (API v1, UI, ``/metrics``, ``/-/healthy``, ``/-/ready``) and gRPC (StoreAPI + InfoAPI over
the same proxy, so queriers stack) start at once; the endpoint set is refreshed every 5 s.
SIGTERM/SIGINT stop gRPC within ``--grpc-grace-period`` and HTTP within ``--http-grace-period``.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Optional

from ..tlsconfig import ClientTLS, ServerTLS
from .api import ApiConfig
from .discovery import Discovery, EndpointSpec

log = logging.getLogger(__name__)

__all__ = ["QueryConfig", "run", "serve"]


@dataclass
class QueryConfig:
    http_address: str = "0.0.0.0:10902"
    grpc_address: str = "0.0.0.0:10901"
    http_grace_period: float = 120.0
    http_config: str = ""  # --http.config: web config file (TLS, basic auth); "" for plain HTTP
    grpc_grace_period: float = 120.0
    grpc_tls: Optional[ServerTLS] = None  # --grpc-server-tls-*; None: plaintext
    grpc_max_connection_age: float = 3600.0  # --grpc-server-max-connection-age
    client_tls: ClientTLS = field(default_factory=ClientTLS)  # --grpc-client-tls-*
    default_tls: Optional[ClientTLS] = None  # --endpoint.sd-config's default_client_config
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
    workers: int = 0  # processes serving the ports; 0: the CPU limit (pythanos.server.workers.cpu_limit)


#: The default worker count follows the CPU limit up to this many: a pod without a CPU limit on a
#: big node would otherwise start a worker (about 80 MB each) per core of the node.
MAX_AUTO_WORKERS = 8


def run(config: QueryConfig) -> int:
    from ..runtime import tune_gc
    from ..server.workers import WorkerSlot, cpu_limit, exec_supervisor, follow_supervisor

    slot = WorkerSlot.from_env()
    if slot is not None:
        follow_supervisor()
    workers = config.workers or min(cpu_limit(), MAX_AUTO_WORKERS)
    if slot is None and workers > 1:
        if config.http_config:  # a bad file is one error here, not one per worker
            from ..server.webconfig import load

            load(config.http_config)
        exec_supervisor(workers, config.http_address, config.grpc_address,
                        grace=max(config.http_grace_period, config.grpc_grace_period))
    tune_gc()
    return asyncio.run(serve(config, worker=slot))


async def serve(config: QueryConfig, stop: Optional[asyncio.Event] = None, worker=None) -> int:
    from prometheus_client import Gauge

    from ..promql import Engine
    from ..server import Component
    from ..storeapi import StoreServer
    from .api import QueryAPI
    from .endpoints import EndpointSet
    from .proxy import Proxy
    from .store import QueryStore

    srv = Component("query", http_address=config.http_address, http_grace_period=config.http_grace_period,
                    http_config=config.http_config,
                    grpc_address=config.grpc_address, grpc_grace_period=config.grpc_grace_period,
                    grpc_tls=config.grpc_tls, grpc_max_connection_age=config.grpc_max_connection_age, stop=stop,
                    worker=worker)
    registry = srv.registry
    gate_max = Gauge("thanos_query_concurrent_gate_queries_max", "Maximum number of concurrent queries.",
                     registry=registry)
    gate_in_flight = Gauge("thanos_query_concurrent_gate_queries_in_flight",
                           "Number of queries that are currently in flight.", registry=registry)
    nodes = Gauge("thanos_store_nodes_grpc_connections",
                  "Number of gRPC connection to Store APIs. Opened connection means healthy store APIs "
                  "available for Querier.", ["external_labels", "store_type"], registry=registry)
    gate_max.set(config.api.max_concurrent)

    discovery = Discovery(static=list(config.endpoints), client_tls=config.client_tls,
                          default_tls=config.default_tls, sd_files=list(config.sd_files),
                          sd_config_file=config.sd_config_file, dns_interval=config.dns_interval,
                          sd_interval=config.sd_interval, sd_config_interval=config.sd_config_interval,
                          dns_server=config.dns_server)
    endpoints = EndpointSet(discovery, unhealthy_timeout=config.unhealthy_timeout)
    proxy = Proxy(endpoints, response_timeout=config.response_timeout)
    # Thanos builds its engine with MaxSamples = MaxInt32 (pkg/api/query/engine.go)
    engine = Engine(lookback_delta_ms=config.api.lookback_delta_ms, timeout_s=config.api.timeout_s or None,
                    max_samples=2**31 - 1, select_concurrency=config.select_concurrency)
    api = QueryAPI(proxy, engine, config.api, endpoints.statuses)
    from .exemplars import ExemplarsProxy

    api.exemplars = ExemplarsProxy(endpoints, timeout=config.response_timeout)
    from .rules import RulesProxy

    api.rules = RulesProxy(endpoints, timeout=config.response_timeout)
    gate_in_flight.set_function(lambda: api.in_flight)

    def update_node_metrics() -> None:
        nodes.clear()
        counts: dict = {}
        for ep in endpoints.active():
            # a strict endpoint that has never answered is still queried: Thanos counts it as unknown-store-api
            key = (",".join("{" + ",".join(f'{n}="{v}"' for n, v in ls) + "}" for ls in ep.label_sets()),
                   ep.component_type or "unknown-store-api")
            counts[key] = counts.get(key, 0) + 1
        for (ext, typ), n in counts.items():
            nodes.labels(ext, typ).set(n)

    srv.before_metrics.append(update_node_metrics)
    prefix = (config.route_prefix or config.external_prefix).rstrip("/")
    api.routes(srv.app, prefix)
    try:
        from ..web import add_ui_routes
    except ImportError:  # the UI package is optional for the API
        add_ui_routes = None
    if add_ui_routes is not None:
        add_ui_routes(srv.app, prefix)
        from ..web.rules import add_rules_ui_routes

        add_rules_ui_routes(srv.app, prefix, component="query", redirect_root=False,
                            nav=[("Graph", "/graph"), ("Stores", "/stores")], home="/graph")

    async def close() -> None:
        await endpoints.stop()
        engine.close()

    if worker is not None:
        # A worker shares its listening socket with the others: it takes connections only once
        # it knows its endpoints (a query it took earlier would find no store).
        try:
            await endpoints.start()
        except BaseException:
            await close()
            raise
    await srv.start([*StoreServer(QueryStore(proxy)).handlers(), api.exemplars.handler(), api.rules.handler()],
                    cleanup=close)
    if worker is None:
        try:
            await endpoints.start()
        except BaseException:
            await srv.shutdown()
            await close()
            raise
    srv.set_ready(True)
    log.info("starting query node", extra={"endpoints": len(endpoints.endpoints)})
    return await srv.run_tasks([], on_stop=close)
