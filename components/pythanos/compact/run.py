"""``pythanos compact``: the compactor process (Thanos ``cmd/thanos/compact.go``).

HTTP (probes, ``/metrics``) serves from the start. Without ``--wait`` one iteration runs and the
process exits (1 on error). With ``--wait`` iterations repeat every ``--wait-interval``; a
retriable error (bucket, network) counts ``thanos_compact_retries_total`` and is retried at the
next interval; a halt error is logged at error level with the blocks and the fix, sets
``thanos_compact_halted`` to 1 and stops all compaction while HTTP keeps serving (unless
``--no-debug.halt-on-error``, then the process exits). Retention and the deletion of marked
blocks also run every ``--compact.cleanup-interval`` beside the iterations, so a long
compaction backlog never holds them back (thanos-io/thanos#7218).
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any, Optional

log = logging.getLogger(__name__)

__all__ = ["CompactConfig", "run", "serve"]


@dataclass
class CompactConfig:
    http_address: str = "0.0.0.0:10902"
    http_grace_period: float = 120.0
    http_config: str = ""  # --http.config: web config file (TLS, basic auth); "" for plain HTTP
    data_dir: str = "./data"
    bucket: Any = None
    consistency_delay: float = 1800.0
    retention: dict = field(default_factory=dict)
    wait: bool = False
    wait_interval: float = 300.0
    downsampling: bool = True
    meta_fetch_concurrency: int = 32
    cleanup_interval: float = 300.0
    compact_concurrency: int = 1
    fetch_concurrency: int = 1
    downsample_concurrency: int = 1
    delete_delay: float = 48 * 3600.0
    vertical: bool = False
    dedup_func: str = ""
    replica_labels: list = field(default_factory=list)
    skip_out_of_order: bool = False
    hash_func: str = ""
    min_time: Any = None
    max_time: Any = None
    relabel: list = field(default_factory=list)
    halt_on_error: bool = True
    ranges: Optional[list] = None
    # the block viewer (with --wait, as Thanos): global view refreshed on its own, loaded = the compactor's view
    web_disable: bool = False
    web_prefix: str = ""
    web_disable_cors: bool = False
    bucket_web_label: str = ""
    disable_admin_operations: bool = False
    block_viewer_interval: float = 60.0
    block_viewer_timeout: float = 300.0


def run(config: CompactConfig) -> int:
    from ..runtime import tune_gc, tune_malloc

    tune_gc()
    tune_malloc()
    return asyncio.run(serve(config))


def build(config: CompactConfig, registry=None):
    """The fetcher and :class:`BucketCompactor` of this configuration."""
    from ..block.compactor import BucketCompactor, CompactorConfig, CompactorMetrics, make_fetcher
    from ..block.planner import DEFAULT_RANGES

    fetcher = make_fetcher(config.bucket, data_dir=config.data_dir, relabel=config.relabel,
                           replica_labels=config.replica_labels, consistency_delay=config.consistency_delay,
                           delete_delay=config.delete_delay, min_time=config.min_time, max_time=config.max_time,
                           concurrency=config.meta_fetch_concurrency, registry=registry)
    cc = CompactorConfig(data_dir=config.data_dir, ranges=list(config.ranges or DEFAULT_RANGES),
                         vertical=config.vertical, dedup_func=config.dedup_func,
                         concurrency=config.compact_concurrency, fetch_concurrency=config.fetch_concurrency,
                         downsample_concurrency=config.downsample_concurrency, downsampling=config.downsampling,
                         retention=dict(config.retention), delete_delay=config.delete_delay,
                         skip_out_of_order=config.skip_out_of_order, hash_func=config.hash_func)
    metrics = CompactorMetrics(registry) if registry is not None else None
    return fetcher, BucketCompactor(config.bucket, fetcher, cc, metrics)


async def serve(config: CompactConfig, stop: Optional[asyncio.Event] = None) -> int:
    from prometheus_client import Gauge

    from ..block.compactor import HaltError, RetryError
    from ..errors import UserError
    from ..objstore import instrument
    from ..server import Component, close_quietly

    srv = Component("compact", http_address=config.http_address, http_grace_period=config.http_grace_period,
                    http_config=config.http_config,
                    stop=stop)
    config = replace(config, bucket=instrument(config.bucket, srv.registry))
    fetcher, bc = build(config, registry=srv.registry)
    Gauge("thanos_delete_delay_seconds", "Configured delete delay in seconds.",
          registry=srv.registry).set(config.delete_delay)
    Gauge("thanos_consistency_delay_seconds", "Configured consistency delay in seconds.",
          registry=srv.registry).set(config.consistency_delay)
    if config.replica_labels:
        log.info("deduplication.replica-label specified, enabling vertical compaction",
                 extra={"dedupReplicaLabels": ",".join(config.replica_labels)})
    for res, name in ((0, "raw samples"), (300_000, "5 min aggregated samples"), (3_600_000, "1 hour aggregated "
                                                                                               "samples")):
        if config.retention.get(res):
            from ..flags import format_duration

            log.info(f"retention policy of {name} is enabled",
                     extra={"duration": format_duration(config.retention[res])})

    viewer = _add_block_viewer(srv, config, bc) if config.wait and not config.web_disable else None

    async def close() -> None:
        fetcher.close()
        if viewer is not None:
            viewer.fetcher.close()
        close_quietly(config.bucket)

    await srv.start(cleanup=close)
    srv.set_ready(True)
    loop = asyncio.get_running_loop()
    os.makedirs(config.data_dir, exist_ok=True)
    halted = asyncio.Event()

    async def iterate() -> None:
        await loop.run_in_executor(None, bc.iteration)

    async def single_run() -> None:
        try:
            await iterate()
        except HaltError as e:
            bc.metrics.halted.set(1)
            raise UserError(f"critical error detected: {e}") from None
        except RetryError as e:
            bc.metrics.retries.inc()
            raise UserError(f"compaction failed (retriable): {e}") from None
        log.info("compaction iterations done")
        srv.stop.set()

    async def wait_loop() -> None:
        while True:
            try:
                await iterate()
            except HaltError as e:
                bc.metrics.halted.set(1)
                if not config.halt_on_error:
                    raise UserError(f"critical error detected: {e}") from None
                log.error("critical error detected; halting", extra={"err": str(e)})
                halted.set()
                await asyncio.Event().wait()  # serve HTTP and metrics, compact nothing more
            except RetryError as e:
                bc.metrics.retries.inc()
                log.error("retriable error", extra={"err": str(e)})
            await asyncio.sleep(config.wait_interval)

    async def cleanup_loop() -> None:
        while True:
            await asyncio.sleep(config.cleanup_interval)
            if halted.is_set():
                continue
            try:
                await loop.run_in_executor(None, bc.background_cleanup)
            except Exception as e:  # noqa: BLE001
                log.warning("background cleanup failed; retrying at the next interval",
                            extra={"err": f"{type(e).__name__}: {e}"})

    tasks = [asyncio.create_task(wait_loop() if config.wait else single_run(), name="compact")]
    if config.wait and config.cleanup_interval > 0:
        tasks.append(asyncio.create_task(cleanup_loop(), name="cleanup"))
    if viewer is not None:
        tasks.append(viewer.start())
    log.info("starting compact node", extra={"http": config.http_address})
    if not config.wait:
        return await _run_once(srv, tasks, close)
    return await srv.run_tasks(tasks, on_stop=close)


def _add_block_viewer(srv, config: CompactConfig, bc):
    """The bucket web UI on the compactor's HTTP server: ``/blocks`` the whole bucket (its own
    unfiltered fetcher, every ``--block-viewer.global.sync-block-interval``), ``/loaded`` the
    compactor's filtered view of its last sync. Returns the global view (to start and close)."""
    from ..block import MetaFetcher
    from ..web.blocks import BlocksView, LiveView, add_blocks_routes

    view = BlocksView(MetaFetcher(config.bucket, concurrency=config.meta_fetch_concurrency),
                      refresh=config.block_viewer_interval, timeout=config.block_viewer_timeout)
    add_blocks_routes(srv.app, view, loaded=LiveView(lambda: list(bc.synced.metas.values()), bucket=config.bucket),
                      prefix=config.web_prefix, label=config.bucket_web_label,
                      disable_admin=config.disable_admin_operations, component="compact", redirect_root=True,
                      cors=not config.web_disable_cors)
    return view


async def _run_once(srv, tasks, close) -> int:
    """Without --wait, the single iteration finishing ends the process with code 0."""
    task = tasks[0]
    stop_task = asyncio.create_task(srv.stop.wait())
    done, _ = await asyncio.wait([task, stop_task], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if task in done and task.exception() is not None:
        exc = task.exception()
        log.error(str(exc) if exc.__class__.__name__ == "UserError" else f"compact component failed: {exc!r}")
        code = 1
    elif task not in done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        log.info("caught signal. Exiting.")
    stop_task.cancel()
    await srv.shutdown()
    await close()
    return code
