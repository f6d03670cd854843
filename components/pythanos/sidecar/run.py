"""``pythanos sidecar``: wiring of the sidecar in one asyncio loop (Thanos ``cmd/thanos/sidecar.go``).

Start-up, as Thanos does it:

1. the HTTP server (``/metrics``, ``/-/healthy``, ``/-/ready``) starts at once: healthy, not ready;
2. with uploads enabled, Prometheus' flags are checked (``storage.tsdb.min-block-duration`` must
   equal ``max-block-duration``; a 404 skips the check), retried every
   ``--prometheus.get_config_interval`` until they pass;
3. Prometheus' version, then its lowest timestamp and external labels, each retried every
   ``--prometheus.get_config_interval`` until Prometheus answers;
4. **empty external labels end the sidecar** with Thanos' message ("no external labels configured
   on Prometheus server, uniquely identifying external labels must be configured"), exit code 1;
5. ``thanos_sidecar_prometheus_up`` = 1, ready; then every ``--prometheus.get_config_interval``
   timestamps and external labels are re-read (heartbeat): a failure sets ``prometheus_up`` to 0
   and the sidecar not ready until the next success; empty labels make it not ready too.

One difference, on purpose: Thanos does not listen on gRPC before step 5. We listen from the
start and answer every call with ``UNAVAILABLE`` "sidecar not ready: ..." naming Prometheus' URL
and the last error, so a querier (or a person with grpcurl) sees *why* instead of "connection
refused". A Thanos querier treats both as an unhealthy endpoint.

``--reloader.once`` (a pythanos addition) only writes the expanded config and exits (an init
container: Prometheus then starts with its config present). The reloader (when
``--reloader.config-file`` or ``--reloader.rule-dir`` is set) runs from the start; its first apply
failing ends the sidecar, as Thanos' ``Watch``. The shipper (when an
object store is configured) waits up to ``--prometheus.ready_timeout`` for external labels, then
syncs every 30 s, first sync at once. SIGTERM/SIGINT: not ready, gRPC stops accepting calls and
lets running ones finish within ``--grpc-grace-period``, HTTP stops within
``--http-grace-period``, background loops are cancelled (an upload in flight is abandoned; the
shipper's state and the bucket check make the next start finish it).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

from ..errors import UserError
from ..flags import DEFAULT_MIN_TIME, MinTime, parse_time_or_duration
from ..tlsconfig import ServerTLS

log = logging.getLogger(__name__)

__all__ = ["SidecarConfig", "run", "serve", "write_config_once", "NO_EXTERNAL_LABELS"]

NO_EXTERNAL_LABELS = ("no external labels configured on Prometheus server, uniquely identifying external labels must "
                      "be configured; see https://thanos.io/tip/thanos/storage.md#external-labels for details.")
MAX_INT64 = (1 << 63) - 1
SHIPPER_INTERVAL = 30.0  # Thanos: runutil.Repeat(30*time.Second, ...)


# ---------------------------------------------------------------------------------------------- config

@dataclass
class SidecarConfig:
    """Everything ``run`` needs; built by ``sidecar/flags.py`` from Thanos' flags (names in comments)."""

    prometheus_url: str = "http://localhost:9090"  # --prometheus.url
    prometheus_ready_timeout: float = 600.0  # --prometheus.ready_timeout
    get_config_interval: float = 30.0  # --prometheus.get_config_interval
    get_config_timeout: float = 30.0  # --prometheus.get_config_timeout
    tsdb_path: str = "./data"  # --tsdb.path
    bucket: object = None  # from --objstore.config[-file]; None: uploads disabled
    upload_compacted: bool = False  # --shipper.upload-compacted
    http_address: str = "0.0.0.0:10902"  # --http-address
    http_grace_period: float = 120.0  # --http-grace-period
    http_config: str = ""  # --http.config: web config file (TLS, basic auth); "" for plain HTTP
    grpc_address: str = "0.0.0.0:10901"  # --grpc-address
    grpc_grace_period: float = 120.0  # --grpc-grace-period
    grpc_tls: Optional[ServerTLS] = None  # --grpc-server-tls-*; None: plaintext
    grpc_max_connection_age: float = 3600.0  # --grpc-server-max-connection-age
    reloader_config_file: str = ""  # --reloader.config-file
    reloader_config_envsubst_file: str = ""  # --reloader.config-envsubst-file
    reloader_rule_dirs: list[str] = field(default_factory=list)  # --reloader.rule-dir
    reloader_watch_interval: float = 180.0  # --reloader.watch-interval
    reloader_retry_interval: float = 5.0  # --reloader.retry-interval
    reloader_once: bool = False  # --reloader.once (pythanos): write the expanded config, then exit
    min_time: MinTime = field(default_factory=lambda: parse_time_or_duration(DEFAULT_MIN_TIME))  # --min-time
    shipper_interval: float = SHIPPER_INTERVAL


# ---------------------------------------------------------------------------------------------- state

class PromMetadata:
    """What the sidecar knows about its Prometheus (Thanos' ``promMetadata``), kept by one loop."""

    def __init__(self, url: str, min_time: MinTime) -> None:
        self.url = url
        self.min_time = min_time
        self.labels: tuple = ()
        self.lowest: int = -(1 << 63)
        self.version: str = ""
        self.labels_known = False
        self.ready = False
        self.last_error: str = "not yet connected"

    def external_labels(self) -> tuple:
        return self.labels

    def timestamps(self) -> tuple[int, int]:
        return max(self.min_time.timestamp_ms(), self.lowest), MAX_INT64

    def not_ready(self) -> Optional[str]:
        if self.ready and self.labels:
            return None
        if self.labels_known and not self.labels:
            return f"Prometheus at {self.url} has no external labels; {NO_EXTERNAL_LABELS}"
        return f"Prometheus at {self.url}: {self.last_error}"


# ---------------------------------------------------------------------------------------------- run

async def _retry(interval: float, what: str, fn, meta: PromMetadata):
    """Call ``await fn()`` until it succeeds, every ``interval`` seconds (Thanos' runutil.Retry)."""
    from .promclient import PromClientError

    while True:
        try:
            return await fn()
        except (PromClientError, asyncio.TimeoutError) as e:
            meta.last_error = str(e) or type(e).__name__
            log.warning(f"failed to {what}. Is Prometheus running? Retrying", extra={"err": meta.last_error})
        await asyncio.sleep(interval)


async def _validate_flags(prom, cfg: SidecarConfig) -> None:
    """Thanos' validatePrometheus (uploads only): a PromClientError to retry, UserError never."""
    import os

    from .promclient import PromClientError

    try:
        flags = await prom.flags()
    except PromClientError as e:
        if e.status == 404:
            log.warning("failed to check Prometheus flags, due to potentially older Prometheus. "
                        "No extra validation is done.", extra={"err": str(e)})
            return
        raise
    delay = flags.get("storage.tsdb.delay-compact-file.path", "")
    if delay:
        want = os.path.join(cfg.tsdb_path, "thanos.shipper.json")
        if os.path.normpath(delay) != os.path.normpath(want):
            raise PromClientError(
                f"found that Prometheus and Thanos use different paths for tracking block uploads. Prometheus uses "
                f"--storage.tsdb.delay-compact-file.path={delay} while Thanos will write to {want}, they must both "
                f"use the same path.", url=prom.url)
    mn, mx = flags.get("storage.tsdb.min-block-duration"), flags.get("storage.tsdb.max-block-duration")
    if mn != mx and not delay:
        raise PromClientError(f"found that TSDB Max time is {mx} and Min time is {mn}. Compaction needs to be "
                              "disabled (storage.tsdb.min-block-duration = storage.tsdb.max-block-duration)",
                              url=prom.url)
    if mn != "2h":
        log.warning("found that TSDB block time is not 2h. Only 2h block time is recommended.",
                    extra={"block-time": mn})


def run(config: SidecarConfig) -> int:
    """Run the sidecar until SIGTERM/SIGINT; the process exit code."""
    from ..runtime import tune_gc

    if config.reloader_once:
        return write_config_once(config)
    tune_gc()
    return asyncio.run(serve(config))


def write_config_once(config: SidecarConfig) -> int:
    """``--reloader.once``: the reloader's first apply without the reload (gunzip, ``$(VAR)`` expansion,
    atomic write of the output file), then exit 0. An init container runs it so that Prometheus starts with
    its config file present, with no shell loop waiting for the sidecar; the sidecar proper keeps it fresh."""
    import os

    from .reloader import ReloaderError, normalize

    if not (config.reloader_config_file and config.reloader_config_envsubst_file):
        raise UserError("--reloader.once needs --reloader.config-file and --reloader.config-envsubst-file")
    try:
        normalize(config.reloader_config_file, config.reloader_config_envsubst_file, os.environ)
    except ReloaderError as e:
        raise UserError(f"--reloader.once: {e}") from None
    log.info("wrote the expanded config", extra={"cfg_in": config.reloader_config_file,
                                                  "cfg_out": config.reloader_config_envsubst_file})
    return 0


async def serve(config: SidecarConfig, stop: Optional[asyncio.Event] = None) -> int:
    """The sidecar in the running loop; returns when ``stop`` is set (or a signal arrives): exit code."""
    from prometheus_client import Gauge

    from ..objstore import instrument
    from ..remote import RemoteReadClient
    from ..server import Component, close_quietly
    from ..storeapi import StoreServer
    from ..storeapi.types import norm_labels
    from .promclient import PromClient, PromClientError
    from .store import PrometheusStore

    srv = Component("sidecar", http_address=config.http_address, http_grace_period=config.http_grace_period,
                    http_config=config.http_config,
                    grpc_address=config.grpc_address, grpc_grace_period=config.grpc_grace_period,
                    grpc_tls=config.grpc_tls, grpc_max_connection_age=config.grpc_max_connection_age, stop=stop)
    registry = srv.registry
    if config.bucket is not None:
        config = replace(config, bucket=instrument(config.bucket, registry))
    prom_up = Gauge("thanos_sidecar_prometheus_up",
                    "Boolean indicator whether the sidecar can reach its Prometheus peer.", registry=registry)
    meta = PromMetadata(config.prometheus_url, config.min_time)
    srv.ready_check = meta.not_ready
    prom = PromClient(config.prometheus_url, timeout=config.get_config_timeout, user_agent="pythanos-sidecar")
    api = PromClient(config.prometheus_url, timeout=120.0, user_agent="pythanos-sidecar")
    remote = RemoteReadClient(config.prometheus_url, timeout=600.0, user_agent="pythanos-sidecar")
    store = PrometheusStore(config.prometheus_url, remote=remote, prom=api, external_labels=meta.external_labels,
                            timestamps=meta.timestamps, not_ready=meta.not_ready, version=lambda: meta.version)

    async def close_clients() -> None:
        for c in (prom, api, remote):
            await c.close()
        close_quietly(config.bucket)

    from .exemplars import exemplars_server
    from .rules import rules_server

    await srv.start([*StoreServer(store).handlers(), exemplars_server(api, meta.external_labels),
                     rules_server(api, meta.external_labels)], cleanup=close_clients)

    tasks: list[asyncio.Task] = []

    def set_ready(ok: bool) -> None:
        meta.ready = ok
        srv.set_ready(ok and bool(meta.labels))

    async def update_meta() -> None:
        lowest = await asyncio.wait_for(prom.lowest_timestamp(), config.get_config_timeout)
        labels = await asyncio.wait_for(prom.external_labels(), config.get_config_timeout)
        meta.lowest = lowest
        meta.labels = norm_labels(labels)
        meta.labels_known = True

    async def metadata_loop() -> None:
        if config.bucket is not None:
            await _retry(config.get_config_interval, "validate prometheus flags",
                         lambda: _validate_flags(prom, config), meta)
            log.info("successfully validated prometheus flags")
        meta.version = await _retry(config.get_config_interval, "fetch prometheus version", prom.version, meta)
        log.info("successfully loaded prometheus version", extra={"version": meta.version})
        await _retry(config.get_config_interval, "fetch initial external labels", update_meta, meta)
        log.info("successfully loaded prometheus external labels",
                 extra={"external_labels": labels_text(meta.labels)})
        if not meta.labels:
            raise UserError(f"Prometheus at {config.prometheus_url}: {NO_EXTERNAL_LABELS}")
        prom_up.set(1)
        set_ready(True)
        while True:
            await asyncio.sleep(config.get_config_interval)
            try:
                await update_meta()
            except (PromClientError, asyncio.TimeoutError) as e:
                meta.last_error = str(e) or type(e).__name__
                log.warning("updating external labels and timestamps failed", extra={"err": meta.last_error})
                prom_up.set(0)
                set_ready(False)
                continue
            if not meta.labels:
                log.warning("Prometheus has no external labels any more; not serving until it has",
                            extra={"url": config.prometheus_url})
            prom_up.set(1)
            set_ready(True)

    async def shipper_loop() -> None:
        from ..block.shipper import Shipper

        deadline = time.monotonic() + config.prometheus_ready_timeout
        while not meta.labels:
            if time.monotonic() >= deadline:
                raise UserError(f"aborting as no external labels found after waiting "
                                f"{config.prometheus_ready_timeout:g}s: not uploading as no external labels are "
                                f"configured yet - is Prometheus at {config.prometheus_url} healthy/reachable?")
            await asyncio.sleep(min(2.0, max(0.05, deadline - time.monotonic())))
        shipper = Shipper(config.bucket, config.tsdb_path, labels=lambda: dict(meta.labels),
                          upload_compacted=config.upload_compacted, registry=registry)
        try:
            await shipper.run(config.shipper_interval)
        finally:
            # an upload in flight finishes in its worker thread; we do not wait for it
            if shipper._executor is not None:
                shipper._executor.shutdown(wait=False, cancel_futures=True)

    async def reloader_loop() -> None:
        from .reloader import Reloader

        rl = Reloader(prom.reload, config_file=config.reloader_config_file or None,
                      config_envsubst_file=config.reloader_config_envsubst_file or None,
                      rule_dirs=config.reloader_rule_dirs, watch_interval=config.reloader_watch_interval,
                      retry_interval=config.reloader_retry_interval, registry=registry)
        await rl.run()

    tasks.append(asyncio.create_task(metadata_loop(), name="prometheus-metadata"))
    if config.reloader_config_file or config.reloader_rule_dirs:
        tasks.append(asyncio.create_task(reloader_loop(), name="reloader"))
    if config.bucket is None:
        log.info("no supported bucket was configured, uploads will be disabled")
    else:
        tasks.append(asyncio.create_task(shipper_loop(), name="shipper"))
    log.info("starting sidecar", extra={"prometheus": config.prometheus_url, "grpc": config.grpc_address,
                                        "http": config.http_address})

    return await srv.run_tasks(tasks, on_stop=close_clients)


def labels_text(labels: Sequence[tuple[str, str]]) -> str:
    return "{" + ", ".join(f'{n}="{v}"' for n, v in labels) + "}"
