"""``pythanos receive``: remote write in, one TSDB per tenant, StoreAPI out, blocks shipped.

Wiring only; the pieces: :mod:`.handler` (the HTTP remote-write endpoint and the gRPC write API),
:mod:`.tenants` (a TSDB per tenant, its shipper, its StoreAPI), :mod:`.hashring` (routing).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ..tlsconfig import ServerTLS

log = logging.getLogger(__name__)

__all__ = ["ReceiveConfig", "run", "serve"]


@dataclass
class ReceiveConfig:
    http_address: str = "0.0.0.0:10902"
    http_grace_period: float = 120.0
    http_config: str = ""
    grpc_address: str = "0.0.0.0:10901"
    grpc_grace_period: float = 120.0
    grpc_tls: Optional[ServerTLS] = None
    grpc_max_connection_age: float = 3600.0
    remote_write_address: str = "0.0.0.0:19291"
    tsdb_path: str = "./data"
    labels: dict[str, str] = field(default_factory=dict)
    bucket: Any = None
    retention: float = 15 * 86400.0
    hashrings_file: str = ""
    hashrings_text: Optional[str] = None
    hashrings_where: str = ""
    hashrings_algorithm: str = "hashmod"
    hashrings_refresh_interval: float = 300.0
    local_endpoint: str = ""
    tenant_header: str = "THANOS-TENANT"
    default_tenant: str = "default-tenant"
    split_tenant_label: str = ""
    tenant_label: str = "tenant_id"
    replica_header: str = "THANOS-REPLICA"
    replication_factor: int = 1
    grpc_compression: str = "snappy"
    forward_timeout: float = 5.0
    forward_max_backoff: float = 5.0
    forward_workers: int = 5
    relabel: list = field(default_factory=list)
    block_duration: float = 7200.0
    too_far_in_future: float = 0.0
    ooo_window: float = 0.0
    wal_compression: bool = True
    max_exemplars: int = 0
    hash_func: str = ""
    allow_out_of_order_uploads: bool = False
    skip_corrupted_blocks: bool = False
    limits_text: str = ""
    limits_where: str = "--receive.limits-config"
    limits_file: str = ""
    limits_reload_timer: float = 1.0
    series_limit: int = 0
    samples_limit: int = 0
    rw_server_tls: Any = None  # pythanos.server.tlsflags.HTTPServerTLS: HTTPS on --remote-write.address
    rw_client_tls: Any = None  # pythanos.tlsconfig.ClientTLS: TLS to the other hashring members
    tenant_field: str = ""  # --receive.tenant-certificate-field


def run(config: ReceiveConfig) -> int:
    from ..runtime import tune_gc

    tune_gc()
    return asyncio.run(serve(config))


def _join(reasons: list[str]) -> str:
    """Thanos' ``errorSet.Error()``: sorted, de-duplicated reasons, counted when more than one."""
    rs = sorted(set(reasons))
    return (f"{len(rs)} errors: " if len(rs) > 1 else "") + "; ".join(rs)


async def serve(config: ReceiveConfig, stop: Optional[asyncio.Event] = None) -> int:
    import time

    from ..objstore import instrument
    from ..server import Component
    from ..storeapi import StoreServer
    from .handler import ReceiveHandler, WriteOutcome
    from .limits import parse_limits
    from .tenants import TenantOptions, Tenants, TenantsStore, check_tenant
    from .writer import write_local

    srv = Component("receive", http_address=config.http_address, http_grace_period=config.http_grace_period,
                    http_config=config.http_config, grpc_address=config.grpc_address,
                    grpc_grace_period=config.grpc_grace_period, grpc_tls=config.grpc_tls,
                    grpc_max_connection_age=config.grpc_max_connection_age, stop=stop)
    bucket = instrument(config.bucket, srv.registry) if config.bucket is not None else None
    limits_state = {"limits": parse_limits(config.limits_text, config.limits_where)}
    tenants = Tenants(TenantOptions(
        base_dir=config.tsdb_path, labels=config.labels, tenant_label=config.tenant_label,
        chunk_range_ms=int(config.block_duration * 1000), retention_ms=int(config.retention * 1000),
        ooo_window_ms=int(config.ooo_window * 1000), wal_compression=config.wal_compression, bucket=bucket,
        allow_out_of_order_uploads=config.allow_out_of_order_uploads,
        skip_corrupted_blocks=config.skip_corrupted_blocks, hash_func=config.hash_func,
        max_exemplars=config.max_exemplars), registry=srv.registry)
    from ..tsdb.head import HeadCollector

    srv.registry.register(HeadCollector(lambda: {t.name: t.db.head for t in tenants.all()}))
    opened = asyncio.Event()
    from . import hashring as hr
    from .forward import Forwarder

    configured = bool(config.hashrings_file or config.hashrings_text)
    mode = hr.receiver_mode(configured, config.local_endpoint)
    ring_state: dict = {"ring": None, "configs": []}

    def set_configs(configs) -> None:
        ring_state["ring"] = hr.new_multi_hashring(configs, config.hashrings_algorithm, config.replication_factor)
        ring_state["configs"] = configs
        tenants.refresh_labels()
        log.info("hashring changed", extra={"hashrings": len(configs), "mode": mode})

    tenants.hashring_labels = lambda tenant: dict(hr.external_labels_of(ring_state["configs"], tenant))
    watcher = None
    if config.hashrings_file:
        def validate(configs) -> None:
            hr.new_multi_hashring(configs, config.hashrings_algorithm, config.replication_factor)

        watcher = hr.HashringFileWatcher(config.hashrings_file, set_configs,
                                         refresh_interval=config.hashrings_refresh_interval,
                                         registry=srv.registry, validate=validate)
        await watcher.refresh()
        if watcher.configs is None:
            from ..errors import UserError

            raise UserError(f"{config.hashrings_where}: failed to validate hashring configuration file: "
                            f"{watcher.last_error}")
    elif config.hashrings_text:
        try:
            set_configs(hr.parse_hashrings(config.hashrings_text, config.hashrings_where))
        except hr.HashringConfigError as e:
            from ..errors import UserError

            raise UserError(f"{config.hashrings_where}: failed to validate hashring configuration content: {e}") \
                from None

    def not_ready() -> Optional[str]:
        if not opened.is_set():
            return "replaying the write-ahead logs"
        if configured and ring_state["ring"] is None:
            return "no hashring configuration loaded"
        return None

    srv.ready_check = not_ready
    loop = asyncio.get_running_loop()
    future_ms = int(config.too_far_in_future * 1000)

    async def local_write(tenant: str, decoded, positions, replica: int):
        t = await tenants.get(tenant)
        res = await loop.run_in_executor(tenants.executor, lambda: write_local(
            t.db, decoded, positions, too_far_in_future_ms=future_ms, exemplars=config.max_exemplars > 0))
        t.last_write = time.monotonic()
        return res

    forwarder = Forwarder(lambda: ring_state["ring"], config.local_endpoint, config.replication_factor, mode,
                          local_write=local_write, forward_timeout=config.forward_timeout,
                          max_backoff=config.forward_max_backoff, forward_workers=config.forward_workers,
                          grpc_compression=config.grpc_compression, registry=srv.registry,
                          dial=config.rw_client_tls.channel_args if config.rw_client_tls is not None
                          and config.rw_client_tls.enabled else None)
    from .rewrite import SplitTenantError, forward_split

    rewritten: dict[str, dict] = {"http": {}, "grpc": {}}  # label rewriting results kept across requests

    async def route(tenant: str, decoded, replica: int) -> WriteOutcome:
        try:
            out = await forward_split(forwarder, tenant, decoded, replica, relabel=config.relabel,
                                      split_label=config.split_tenant_label, cache=rewritten["http"])
        except SplitTenantError as e:  # nothing routed: nothing observed, as in Thanos
            return WriteOutcome(status=400, message=str(e), per_tenant={})
        return WriteOutcome(status=out.status, message=out.message, samples_written=out.samples_written,
                            histograms_written=out.histograms_written, exemplars_written=out.exemplars_written,
                            per_tenant=out.per_tenant)

    def head_series(tenant: str) -> int:
        t = tenants._tenants.get(tenant)
        return t.db.head.num_series if t is not None else 0

    async def grpc_write(raw: bytes) -> None:
        """A write another receiver forwarded (``thanos.WriteableStore/RemoteWrite``)."""
        from ..remote import write as rw
        from ..storeapi.writeapi import WriteConflict, WriteInvalid, WriteUnavailable

        why = not_ready()
        if why is not None:
            raise WriteUnavailable(f"target not ready: {why}")
        try:
            # the routing hashes carry the request's tenant, the one it is written under (Thanos
            # routers always send it; an empty one is refused, not moved to the default tenant)
            decoded, tenant, replica = rw.decode_thanos_write(raw, require_name=False)
        except rw.WriteDecodeError as e:
            raise WriteInvalid(e.message) from None
        why = check_tenant(tenant)
        if why is not None:
            raise WriteInvalid(why)
        if mode == hr.INGESTOR_ONLY:
            out = await forwarder.ingest(tenant, decoded)
        else:
            try:  # as Thanos: forwarded writes are split by tenant label too, never relabelled
                out = await forward_split(forwarder, tenant, decoded, replica, split_label=config.split_tenant_label,
                                          cache=rewritten["grpc"])
            except SplitTenantError as e:
                raise WriteInvalid(str(e)) from None
        if out.status == 200:
            return
        err = {409: WriteConflict, 503: WriteUnavailable, 400: WriteInvalid}.get(out.status)
        if err is None:
            raise RuntimeError(out.message)
        raise err(out.message)

    handler = ReceiveHandler(route, tenant_header=config.tenant_header, default_tenant=config.default_tenant,
                             replica_header=config.replica_header, limits=lambda: limits_state["limits"], head_series=head_series,
                             ready=not_ready, registry=srv.registry, executor=tenants.executor,
                             tenant_field=config.tenant_field)
    from aiohttp import web

    async def tsdb_status(request):
        """``/api/v1/status/tsdb``: cardinality per tenant (``THANOS-TENANT`` header, default tenant,
        or ``all_tenants=true``; ``limit`` default 10), Thanos' answer shape."""
        def fail(status: int, kind: str, msg: str):
            return web.json_response({"status": "error", "errorType": kind, "error": msg}, status=status)

        if not_ready() is not None:
            return fail(500, "internal", "service unavailable")
        tenant = request.headers.get(config.tenant_header, "")
        every = request.query.get("all_tenants") == "true"
        if every and tenant:
            return fail(400, "bad_data", f"using both the all_tenants parameter and the {config.tenant_header} "
                                         "header is not supported")
        raw = request.query.get("limit", "")
        try:
            limit = int(raw) if raw else 10
        except ValueError:
            quoted = json.dumps(raw, ensure_ascii=False)  # Go's %q, for what a query string carries
            return fail(400, "bad_data", f"unable to parse 'limit' parameter: strconv.ParseInt: parsing {quoted}: "
                                         "invalid syntax")
        chosen = tenants.all() if every else [t for t in tenants.all() if t.name == (tenant or config.default_tenant)]

        def one(t) -> dict:
            head = t.db.head
            ps = head.postings_stats("__name__", limit)
            return {"tenant": t.name,
                    "headStats": {"numSeries": head.num_series, "numLabelPairs": ps.pop("numLabelPairs"),
                                  "chunkCount": head.chunk_count(), "minTime": head.min_time, "maxTime": head.max_time},
                    **ps}

        data = await loop.run_in_executor(tenants.executor, lambda: [one(t) for t in chosen])
        return web.json_response({"status": "success", "data": data})

    # auto_decompress=False: the body's Content-Encoding is the handler's to judge (snappy only, 415 otherwise)
    rw_app = web.Application(client_max_size=64 << 20, handler_args={"auto_decompress": False})
    rw_app.router.add_get("/api/v1/status/tsdb", tsdb_status)  # on the remote-write port, as Thanos serves it
    handler.routes(rw_app)
    store = TenantsStore(tenants, ready=not_ready)

    async def close() -> None:
        await forwarder.close()
        await loop.run_in_executor(None, tenants.close)
        if bucket is not None:
            from ..server import close_quietly

            close_quietly(bucket)

    from ..storeapi.writeapi import writeable_front, writeable_handler

    from .exemplars import exemplars_server

    # the front answers RemoteWrite with snappy (Thanos routers' default), grpcio the rest
    await srv.start([*StoreServer(store).handlers(), writeable_handler(grpc_write, raw=True),
                     exemplars_server(tenants)], cleanup=close, grpc_front=writeable_front(grpc_write))
    rw_tls = None
    if config.rw_server_tls is not None:
        from ..server.tlsflags import FlagServerTLS

        rw_tls = FlagServerTLS(config.rw_server_tls)
    await srv.listen_http(rw_app, config.remote_write_address, "--remote-write.address", tls=rw_tls)

    async def startup() -> None:
        await tenants.open_existing()
        if mode != hr.ROUTER_ONLY:
            await tenants.get(config.default_tenant)  # as Thanos: the default tenant's TSDB exists from the start
        opened.set()
        srv.set_ready(True)
        log.info("receiver ready", extra={"tenants": len(tenants.all())})
        while True:
            await asyncio.sleep(30.0)
            await tenants.compact()
            if bucket is not None:
                await tenants.ship()
            await tenants.prune(config.retention)

    async def on_stop() -> None:
        if bucket is not None:
            try:
                await tenants.flush()
                await tenants.ship()
            except Exception as e:  # noqa: BLE001
                log.error("final flush and upload failed", extra={"err": f"{type(e).__name__}: {e}"})
        await close()

    log.info("starting receiver", extra={"remote_write": config.remote_write_address, "grpc": config.grpc_address,
                                         "http": config.http_address})
    async def limits_loop() -> None:
        """``--receive.limits-config-file`` re-read when it changes (at most every reload timer); a
        bad file is logged and the limits in force stay."""
        from .limits import ConfigError

        def stamp():
            try:
                st = os.stat(config.limits_file)
                return st.st_ino, st.st_size, st.st_mtime_ns
            except OSError:
                return None

        last = stamp()
        while True:
            await asyncio.sleep(max(config.limits_reload_timer, 0.1))
            now = stamp()
            if now == last or now is None:
                continue
            last = now
            try:
                with open(config.limits_file, encoding="utf-8") as f:
                    limits_state["limits"] = parse_limits(f.read(), config.limits_where)
                log.info("reloaded limits configuration", extra={"file": config.limits_file})
            except (OSError, UnicodeDecodeError, ConfigError) as e:
                log.error("failed to reload limits configuration; keeping the previous one",
                          extra={"file": config.limits_file, "err": str(e)})

    tasks = [asyncio.create_task(startup(), name="tenants")]
    if config.limits_file:
        tasks.append(asyncio.create_task(limits_loop(), name="limits-reload"))
    if watcher is not None:
        tasks.append(asyncio.create_task(watcher.run(), name="hashring-watcher"))
    return await srv.run_tasks(tasks, on_stop=on_stop)
