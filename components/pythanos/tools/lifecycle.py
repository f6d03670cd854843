"""``tools bucket cleanup``, ``retention`` and ``downsample``: the compactor's bucket chores run on
their own (Thanos ``cmd/thanos/tools_bucket.go``), by the same code as ``pythanos compact``
(:mod:`pythanos.block.compactor`). Run none of them beside a compactor on the same bucket."""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from typing import Optional

from ..block.compactor import (BucketCompactor, CompactorConfig, CompactorMetrics, HaltError, RetryError,
                               make_fetcher)

log = logging.getLogger(__name__)

__all__ = ["ChoreConfig", "cleanup", "retention", "downsample"]


@dataclass
class ChoreConfig:
    delete_delay: float = 48 * 3600.0
    consistency_delay: float = 1800.0
    concurrency: int = 20
    relabel: list = field(default_factory=list)
    retention: dict = field(default_factory=dict)
    data_dir: Optional[str] = None
    downsample_concurrency: int = 1
    wait_interval: float = 300.0
    hash_func: str = ""


def _compactor(bucket, cfg: ChoreConfig, data_dir: str, registry=None) -> BucketCompactor:
    """The compactor's library on the bucket; with ``registry`` the fetcher's metrics and the
    downsampler's (Thanos' names: ``thanos_compact_downsample_total`` and ``..._failures_total``,
    by source resolution) are served; the compactor-only ones stay unregistered."""
    fetcher = make_fetcher(bucket, data_dir=data_dir, relabel=cfg.relabel, consistency_delay=cfg.consistency_delay,
                           delete_delay=cfg.delete_delay, concurrency=cfg.concurrency, registry=registry)
    metrics = CompactorMetrics(registry=None)
    if registry is not None:
        registry.register(metrics.downsamples)
        registry.register(metrics.downsample_failures)
    return BucketCompactor(bucket, fetcher, CompactorConfig(
        data_dir=data_dir, delete_delay=cfg.delete_delay, retention=dict(cfg.retention),
        downsample_concurrency=cfg.downsample_concurrency, hash_func=cfg.hash_func), metrics=metrics)


def cleanup(bucket, cfg: ChoreConfig) -> int:
    """Delete blocks marked for deletion longer than ``--delete-delay`` ago and aborted partial
    uploads (no meta.json, nothing changed for 48h), as Thanos' ``tools bucket cleanup``; unlike
    Thanos, also a block whose delete stopped after meta.json once its mark is older than the
    delete delay. Like Thanos' tool it marks nothing (no garbage collection of blocks that
    another block contains: that is the compactor's job)."""
    with tempfile.TemporaryDirectory(prefix="pythanos-cleanup-") as d:
        bc = _compactor(bucket, cfg, d)
        try:
            log.info("syncing blocks metadata")
            res = bc.sync()
            log.info("synced blocks done")
            bc.clean(res)
            log.info("cleanup done")
        finally:
            bc.fetcher.close()
    return 0


def retention(bucket, cfg: ChoreConfig) -> int:
    """Mark the blocks past their resolution's retention for deletion (once)."""
    from ..flags import format_duration

    for res, name in ((0, "raw samples"), (300_000, "5 min aggregated samples"), (3_600_000, "1 hour aggregated "
                                                                                               "samples")):
        if cfg.retention.get(res):
            log.info(f"retention policy of {name} is enabled", extra={"duration": format_duration(cfg.retention[res])})
    with tempfile.TemporaryDirectory(prefix="pythanos-retention-") as d:
        bc = _compactor(bucket, cfg, d)
        try:
            res = bc.sync()
            log.warning("GLOBAL COMPACTOR SHOULD __NOT__ BE RUNNING ON THE SAME BUCKET")
            log.info("start optional retention")
            n = bc.apply_retention(res)
            log.info("optional retention apply done", extra={"marked": n})
        finally:
            bc.fetcher.close()
    return 0


def downsample(bucket, cfg: ChoreConfig, http_address: str, once: bool = False, http_config: str = "") -> int:
    """The continuous downsampler: HTTP (probes, ``/metrics``) and a pass every ``--wait-interval``."""
    import asyncio

    from ..runtime import tune_malloc

    tune_malloc()
    return asyncio.run(_serve_downsample(bucket, cfg, http_address, once, http_config))


async def _serve_downsample(bucket, cfg: ChoreConfig, http_address: str, once: bool, http_config: str = ""
                            ) -> int:
    import asyncio

    from ..errors import UserError
    from ..objstore import instrument
    from ..server import Component

    srv = Component("downsample", http_address=http_address, http_config=http_config)
    bucket = instrument(bucket, srv.registry)
    bc = _compactor(bucket, cfg, cfg.data_dir or "./data", registry=srv.registry)

    async def close() -> None:
        bc.fetcher.close()

    await srv.start(cleanup=close)
    srv.set_ready(True)
    loop = asyncio.get_running_loop()

    async def passes() -> None:
        while True:
            try:
                log.info("start first pass of downsampling")
                n = await loop.run_in_executor(None, bc.downsample)
                # as Thanos, a series per resolution present in the bucket, 0 until attempted
                for m in bc.synced.metas.values():
                    bc.metrics.downsamples.labels(str(m.resolution))
                    bc.metrics.downsample_failures.labels(str(m.resolution))
                log.info("downsampling iterations done", extra={"blocks": n})
            except RetryError as e:
                log.error("retriable error while downsampling; retrying at the next interval", extra={"err": str(e)})
            except HaltError as e:
                raise UserError(f"downsampling failed: {e}") from None
            if once:
                srv.stop.set()
                await asyncio.Event().wait()
            await asyncio.sleep(cfg.wait_interval)

    return await srv.run_tasks([asyncio.create_task(passes(), name="downsample")], on_stop=close)
