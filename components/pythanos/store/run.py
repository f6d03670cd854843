"""``pythanos store``: the store gateway's wiring (Thanos ``cmd/thanos/store.go``).

Start-up: HTTP (probes, ``/metrics``) and gRPC listen at once; the first block sync runs and is
retried every 5 s until the bucket answers (``/-/ready`` says why meanwhile, Series answers
UNAVAILABLE); ready as soon as the metas are synced: index-headers are built in the background
and by the first query that needs a block, so a store over thousands of blocks serves within
seconds instead of after every header is built (thanos-io/thanos#3150). Then a sync every
``--sync-block-duration``; a failed sync keeps the current blocks and is retried at the next
tick. With ``--store.enable-index-header-lazy-reader`` nothing is opened before a query, and
readers idle for ``--store.index-header-lazy-reader-idle-timeout`` are closed.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from ..tlsconfig import ServerTLS

log = logging.getLogger(__name__)

__all__ = ["StoreConfig", "run", "serve"]

INITIAL_SYNC_RETRY = 5.0


@dataclass
class StoreConfig:
    http_address: str = "0.0.0.0:10902"
    http_grace_period: float = 120.0
    http_config: str = ""  # --http.config: web config file (TLS, basic auth); "" for plain HTTP
    grpc_address: str = "0.0.0.0:10901"
    grpc_grace_period: float = 120.0
    grpc_tls: Optional[ServerTLS] = None  # --grpc-server-tls-*; None: plaintext
    grpc_max_connection_age: float = 3600.0  # --grpc-server-max-connection-age
    data_dir: str = "./data"
    bucket: Any = None
    index_cache_size: int = 250 << 20
    index_cache: Any = None  # parsed --index-cache.config (CacheConfig) or None: in-memory of index_cache_size
    chunk_pool_size: int = 2 << 30
    series_max_concurrency: int = 20
    series_limit: int = 0
    samples_limit: int = 0
    sync_interval: float = 900.0
    block_sync_concurrency: int = 20
    meta_fetch_concurrency: int = 32
    min_time: Any = None
    max_time: Any = None
    relabel: list = field(default_factory=list)
    consistency_delay: float = 0.0
    ignore_deletion_marks_delay: float = 86400.0
    lazy_index_header: bool = False
    lazy_idle_timeout: float = 300.0
    web_disable: bool = False
    web_prefix: str = ""
    web_disable_cors: bool = False
    bucket_web_label: str = ""
    disable_admin_operations: bool = False


def run(config: StoreConfig) -> int:
    from ..runtime import tune_gc

    tune_gc()
    return asyncio.run(serve(config))


async def serve(config: StoreConfig, stop: Optional[asyncio.Event] = None) -> int:
    from ..block import (ConsistencyDelayFilter, DeduplicateFilter, IgnoreDeletionMarkFilter, LabelShardFilter,
                         MetaFetcher, TimePartitionFilter)
    from ..objstore import instrument
    from ..server import Component, close_quietly
    from ..storeapi import StoreServer
    from . import indexcache
    from .bucketstore import BucketStore, BucketStoreConfig

    srv = Component("store", http_address=config.http_address, http_grace_period=config.http_grace_period,
                    http_config=config.http_config,
                    grpc_address=config.grpc_address, grpc_grace_period=config.grpc_grace_period,
                    grpc_tls=config.grpc_tls, grpc_max_connection_age=config.grpc_max_connection_age, stop=stop)
    config = replace(config, bucket=instrument(config.bucket, srv.registry))
    filters = []
    if config.min_time is not None and config.max_time is not None:
        filters.append(TimePartitionFilter(config.min_time, config.max_time))
    filters += [LabelShardFilter(config.relabel), ConsistencyDelayFilter(config.consistency_delay),
                IgnoreDeletionMarkFilter(config.ignore_deletion_marks_delay), DeduplicateFilter()]
    fetcher = MetaFetcher(config.bucket, cache_dir=os.path.join(config.data_dir, "meta-syncer"),
                          concurrency=config.meta_fetch_concurrency, filters=filters, registry=srv.registry)
    cache = indexcache.build(config.index_cache, config.index_cache_size, asyncio.get_running_loop(),
                             registry=srv.registry)
    store = BucketStore(config.bucket, fetcher, BucketStoreConfig(
        data_dir=config.data_dir, block_sync_concurrency=config.block_sync_concurrency,
        series_max_concurrency=config.series_max_concurrency, series_limit=config.series_limit,
        samples_limit=config.samples_limit, chunk_pool_size=config.chunk_pool_size,
        lazy_index_header=config.lazy_index_header,
        lazy_idle_timeout=config.lazy_idle_timeout, min_time=config.min_time, max_time=config.max_time),
        registry=srv.registry, index_cache=cache)

    def not_ready() -> Optional[str]:
        if store.synced:
            return None
        return "initial block sync has not finished" + (f": {store.last_sync_error}" if store.last_sync_error else "")

    srv.ready_check = not_ready
    if not config.web_disable:
        _add_block_viewer(srv, config, store)

    async def close() -> None:
        store.close()
        fetcher.close()
        await cache.close()
        close_quietly(config.bucket)

    await srv.start(StoreServer(store).handlers(), cleanup=close)

    async def sync_loop() -> None:
        while not store.synced:
            try:
                await store.sync()
            except Exception as e:  # noqa: BLE001
                log.warning("initial block sync failed; retrying", extra={"err": f"{type(e).__name__}: {e}",
                                                                        "retry_in": f"{INITIAL_SYNC_RETRY:g}s"})
                await asyncio.sleep(INITIAL_SYNC_RETRY)
        srv.set_ready(True)
        log.info("bucket store ready", extra={"blocks": len(store.blocks)})
        while True:
            await asyncio.sleep(config.sync_interval)
            try:
                await store.sync()
            except Exception as e:  # noqa: BLE001
                log.warning("syncing blocks failed", extra={"err": f"{type(e).__name__}: {e}"})

    async def idle_loop() -> None:
        every = max(config.lazy_idle_timeout / 10, 1.0)
        while True:
            await asyncio.sleep(every)
            store.release_idle()

    tasks = [asyncio.create_task(sync_loop(), name="block-sync")]
    if config.lazy_index_header and config.lazy_idle_timeout > 0:
        tasks.append(asyncio.create_task(idle_loop(), name="index-header-release"))
    log.info("starting store node", extra={"grpc": config.grpc_address, "http": config.http_address})
    return await srv.run_tasks(tasks, on_stop=close)


def _add_block_viewer(srv, config: StoreConfig, store) -> None:
    """The bucket web UI on the store's HTTP server: the blocks the store has loaded, at ``/loaded``
    (Thanos' store page) and ``/blocks`` (Thanos' store answers an empty global view there)."""
    from ..web.blocks import LiveView, add_blocks_routes

    loaded = LiveView(lambda: [b.meta for b in list(store.blocks.values())], bucket=config.bucket)
    add_blocks_routes(srv.app, loaded, loaded=loaded, prefix=config.web_prefix, label=config.bucket_web_label,
                      disable_admin=config.disable_admin_operations, component="store",
                      redirect_root=True, cors=not config.web_disable_cors)
