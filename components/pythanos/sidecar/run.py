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

The reloader (when ``--reloader.config-file`` or ``--reloader.rule-dir`` is set) runs from the
start; its first apply failing ends the sidecar, as Thanos' ``Watch``. The shipper (when an
object store is configured) waits up to ``--prometheus.ready_timeout`` for external labels, then
syncs every 30 s, first sync at once. SIGTERM/SIGINT: not ready, gRPC stops accepting calls and
lets running ones finish within ``--grpc-grace-period``, HTTP stops within
``--http-grace-period``, background loops are cancelled (an upload in flight is abandoned; the
shipper's state and the bucket check make the next start finish it).
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import re
import signal
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence
from urllib.parse import urlsplit

from ..errors import UserError

log = logging.getLogger(__name__)

__all__ = ["SidecarConfig", "MinTime", "run", "serve", "parse_duration", "parse_time_or_duration",
           "parse_url", "parse_address", "NO_EXTERNAL_LABELS"]

NO_EXTERNAL_LABELS = ("no external labels configured on Prometheus server, uniquely identifying external labels must "
                      "be configured; see https://thanos.io/tip/thanos/storage.md#external-labels for details.")
MAX_INT64 = (1 << 63) - 1
SHIPPER_INTERVAL = 30.0  # Thanos: runutil.Repeat(30*time.Second, ...)


# ---------------------------------------------------------------------------------------------- flag values

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
             "d": 86400.0, "w": 7 * 86400.0, "y": 365 * 86400.0}
_DUR_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w|y)")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$")


def parse_duration(text: str, flag: str) -> float:
    """A duration in seconds: Go's syntax (``1m30s``, ``1.5h``, ``300ms``) or Prometheus' (``2d``, ``1w``).

    Raises :class:`UserError` naming the flag."""
    s = (text or "").strip()
    if s in ("0",):
        return 0.0
    pos, total = 0, 0.0
    for m in _DUR_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise UserError(f"{flag}: invalid duration {text!r} (want e.g. 30s, 5m, 1h30m, 2d)")
    return total


@dataclass(frozen=True)
class MinTime:
    """Thanos' ``TimeOrDurationValue``: a fixed time (``time_ms``) or a duration relative to now
    (``offset_ms``, evaluated at every use, so ``-2h`` keeps moving)."""

    time_ms: Optional[int] = None
    offset_ms: Optional[int] = None
    text: str = ""

    def timestamp_ms(self, now_ms: Optional[int] = None) -> int:
        if self.time_ms is not None:
            return self.time_ms
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        return now_ms + int(self.offset_ms or 0)


DEFAULT_MIN_TIME = "0000-01-01T00:00:00Z"


def parse_time_or_duration(text: str, flag: str = "--min-time") -> MinTime:
    """RFC3339 time or a duration relative to now (``-1d``, ``2h45m``); :class:`UserError` naming the flag."""
    s = (text or "").strip()
    if not s:
        raise UserError(f"{flag}: empty; want an RFC3339 time (2019-10-18T00:00:00Z) or a duration such as -1d")
    if _RFC3339.match(s):
        iso = s[:-1] + "+00:00" if s[-1] in "Zz" else s
        iso = iso.replace("t", "T")
        year = int(iso[:4])
        try:
            if year < 1:  # Thanos' default 0000-01-01: Python has no year 0; count from 0001-01-01
                rest = _dt.datetime.fromisoformat("0001" + iso[4:])
                base = _dt.datetime(1, 1, 1, tzinfo=_dt.timezone.utc)
                ms = -62167219200000 + int((rest - base).total_seconds() * 1000)
            else:
                ms = int(round(_dt.datetime.fromisoformat(iso).timestamp() * 1000))
        except ValueError as e:
            raise UserError(f"{flag}: invalid RFC3339 time {text!r}: {e}") from None
        return MinTime(time_ms=ms, text=s)
    sign = -1 if s.startswith("-") else 1
    body = s[1:] if s[0] in "+-" else s
    try:
        secs = parse_duration(body, flag)
    except UserError:
        raise UserError(f"{flag}: expected an RFC3339 time (2019-10-18T00:00:00Z) or a duration relative to now "
                        f"(-1d, 2h45m), got {text!r}") from None
    return MinTime(offset_ms=sign * int(round(secs * 1000)), text=s)


def parse_url(text: str, flag: str = "--prometheus.url") -> str:
    u = urlsplit((text or "").strip())
    if u.scheme not in ("http", "https") or not u.hostname:
        raise UserError(f"{flag}: want an http(s) URL such as http://localhost:9090, got {text!r}")
    try:
        u.port
    except ValueError:
        raise UserError(f"{flag}: invalid port in {text!r}") from None
    return text.strip().rstrip("/")


def parse_address(text: str, flag: str) -> str:
    """``host:port`` (host may be empty or ``[v6]``) for a listen address."""
    s = (text or "").strip()
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise UserError(f"{flag}: want host:port, e.g. 0.0.0.0:10901, got {text!r}")
    return s


# ---------------------------------------------------------------------------------------------- config

@dataclass
class SidecarConfig:
    """Everything ``run`` needs; built by ``cli.py`` from Thanos' flags (names in comments)."""

    prometheus_url: str = "http://localhost:9090"  # --prometheus.url
    prometheus_ready_timeout: float = 600.0  # --prometheus.ready_timeout
    get_config_interval: float = 30.0  # --prometheus.get_config_interval
    get_config_timeout: float = 30.0  # --prometheus.get_config_timeout
    tsdb_path: str = "./data"  # --tsdb.path
    bucket: object = None  # from --objstore.config[-file]; None: uploads disabled
    upload_compacted: bool = False  # --shipper.upload-compacted
    http_address: str = "0.0.0.0:10902"  # --http-address
    http_grace_period: float = 120.0  # --http-grace-period
    grpc_address: str = "0.0.0.0:10901"  # --grpc-address
    grpc_grace_period: float = 120.0  # --grpc-grace-period
    reloader_config_file: str = ""  # --reloader.config-file
    reloader_config_envsubst_file: str = ""  # --reloader.config-envsubst-file
    reloader_rule_dirs: list[str] = field(default_factory=list)  # --reloader.rule-dir
    reloader_watch_interval: float = 180.0  # --reloader.watch-interval
    reloader_retry_interval: float = 5.0  # --reloader.retry-interval
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


class _Metrics:
    def __init__(self, registry) -> None:
        from prometheus_client import Gauge, Histogram

        self.prom_up = Gauge("thanos_sidecar_prometheus_up",
                             "Boolean indicator whether the sidecar can reach its Prometheus peer.", registry=registry)
        self.status = Gauge("thanos_status", "Represents status (0 indicates failure, 1 indicates success) of the "
                            "component.", ["check", "component"], registry=registry)
        self.status.labels("healthy", "sidecar").set(0)
        self.status.labels("ready", "sidecar").set(0)
        self.build = Gauge("thanos_build_info", "A metric with a constant '1' value labeled by version, revision, "
                           "branch, and goversion from which thanos was built.",
                           ["version", "revision", "branch", "goversion"], registry=registry)
        from .. import __version__
        self.build.labels(__version__, "", "", "python").set(1)
        self.http_duration = Histogram("http_request_duration_seconds", "Tracks the latencies for HTTP requests.",
                                       ["code", "handler", "method"], registry=registry)


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

    tune_gc()
    return asyncio.run(serve(config))


async def serve(config: SidecarConfig, stop: Optional[asyncio.Event] = None) -> int:
    """The sidecar in the running loop; returns when ``stop`` is set (or a signal arrives): exit code."""
    from aiohttp import web
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    from ..remote import RemoteReadClient
    from ..storeapi import StoreServer
    from ..storeapi.types import norm_labels
    from .promclient import PromClient, PromClientError
    from .store import PrometheusStore

    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    metrics = _Metrics(registry)
    meta = PromMetadata(config.prometheus_url, config.min_time)
    prom = PromClient(config.prometheus_url, timeout=config.get_config_timeout, user_agent="pythanos-sidecar")
    api = PromClient(config.prometheus_url, timeout=120.0, user_agent="pythanos-sidecar")
    remote = RemoteReadClient(config.prometheus_url, timeout=600.0, user_agent="pythanos-sidecar")
    store = PrometheusStore(config.prometheus_url, remote=remote, prom=api, external_labels=meta.external_labels,
                            timestamps=meta.timestamps, not_ready=meta.not_ready, version=lambda: meta.version)

    # -- HTTP --
    async def metrics_handler(request: web.Request) -> web.Response:
        body = await loop.run_in_executor(None, generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthy_handler(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def ready_handler(request: web.Request) -> web.Response:
        why = meta.not_ready()
        if why is None:
            return web.Response(text="OK")
        return web.Response(status=503, text=f"NOT OK: {why}\n")

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

    app = web.Application(middlewares=[instrument])
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/-/healthy", healthy_handler)
    app.router.add_get("/-/ready", ready_handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=config.http_grace_period)
    await runner.setup()
    host, _, port = config.http_address.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]") or None, int(port))
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise UserError(f"--http-address={config.http_address}: cannot listen: {e.strerror or e}") from None
    metrics.status.labels("healthy", "sidecar").set(1)
    log.info("listening for requests and metrics", extra={"component": "sidecar", "address": config.http_address})

    # -- gRPC --
    grpc_server = StoreServer(store)
    try:
        await grpc_server.start(config.grpc_address)
    except OSError as e:
        await runner.cleanup()
        raise UserError(f"--grpc-address={config.grpc_address}: {e}") from None

    tasks: list[asyncio.Task] = []
    exit_code = 0
    failure: Optional[BaseException] = None

    def set_ready(ok: bool) -> None:
        meta.ready = ok
        metrics.status.labels("ready", "sidecar").set(1 if ok and meta.labels else 0)

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
        metrics.prom_up.set(1)
        set_ready(True)
        while True:
            await asyncio.sleep(config.get_config_interval)
            try:
                await update_meta()
            except (PromClientError, asyncio.TimeoutError) as e:
                meta.last_error = str(e) or type(e).__name__
                log.warning("updating external labels and timestamps failed", extra={"err": meta.last_error})
                metrics.prom_up.set(0)
                set_ready(False)
                continue
            if not meta.labels:
                log.warning("Prometheus has no external labels any more; not serving until it has",
                            extra={"url": config.prometheus_url})
            metrics.prom_up.set(1)
            set_ready(True)

    async def shipper_loop() -> None:
        from .shipper import Shipper

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

    stop_task = asyncio.create_task(stop.wait(), name="stop")
    try:
        done, _ = await asyncio.wait([stop_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is stop_task:
                continue
            exc = t.exception()
            if exc is not None:
                failure = exc
            else:
                failure = RuntimeError(f"{t.get_name()} ended")
        if failure is not None:
            exit_code = 1
            if isinstance(failure, UserError):
                log.error(str(failure))
            else:
                log.error("sidecar component failed", extra={"err": f"{type(failure).__name__}: {failure}"})
        else:
            log.info("caught signal. Exiting.")
    finally:
        set_ready(False)
        metrics.status.labels("ready", "sidecar").set(0)
        for t in tasks:
            t.cancel()
        stop_task.cancel()
        await asyncio.gather(*tasks, stop_task, return_exceptions=True)
        await grpc_server.stop(config.grpc_grace_period)
        log.info("internal server is shutdown gracefully", extra={"component": "sidecar", "service": "gRPC"})
        await runner.cleanup()
        log.info("internal server is shutdown gracefully", extra={"component": "sidecar", "service": "http"})
        for c in (prom, api, remote):
            await c.close()
        if config.bucket is not None:
            close = getattr(config.bucket, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass
    return exit_code


def labels_text(labels: Sequence[tuple[str, str]]) -> str:
    return "{" + ", ".join(f'{n}="{v}"' for n, v in labels) + "}"
