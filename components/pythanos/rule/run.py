"""``pythanos rule``: rules evaluated against queriers, alerts to Alertmanagers, recorded series in
a local TSDB served over the StoreAPI (and shipped), or remote-written in stateless mode.

Wiring only; the pieces: :mod:`.rulefile` (rule files), :mod:`.manager` (evaluation and alert
state), :mod:`.queryclient` (``--query``), :mod:`.notifier` (Alertmanagers), :mod:`.api` (HTTP API),
:mod:`pythanos.storeapi.tsdbstore` and :mod:`pythanos.storeapi.rules` (gRPC).

Reload (SIGHUP or ``POST /-/reload``) re-reads every ``--rule-file``; a file that does not load
keeps the rules in force, is logged and sets ``thanos_rule_config_last_reload_successful`` to 0.
At start a file that does not load is fatal, as in Thanos.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from ..tlsconfig import ServerTLS

log = logging.getLogger(__name__)

__all__ = ["RuleConfig", "run", "serve"]

#: how often (at most) the TSDB head is cut into blocks, blocks shipped and retention applied
HOUSEKEEPING_S = 30.0


@dataclass
class RuleConfig:
    http_address: str = "0.0.0.0:10902"
    http_grace_period: float = 120.0
    http_config: str = ""
    grpc_address: str = "0.0.0.0:10901"
    grpc_grace_period: float = 120.0
    grpc_tls: Optional[ServerTLS] = None
    grpc_max_connection_age: float = 3600.0
    route_prefix: str = ""
    external_prefix: str = ""
    prefix_header: str = ""
    disable_cors: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    data_dir: str = "data/"
    rule_files: list[str] = field(default_factory=lambda: ["rules/"])
    eval_interval: float = 60.0
    resend_delay: float = 60.0
    rule_query_offset: float = 0.0
    for_outage_tolerance: float = 3600.0
    for_grace_period: float = 600.0
    restore_ignored_labels: list[str] = field(default_factory=list)
    rule_concurrent_evaluation: int = 1
    features: tuple[str, ...] = ()
    block_duration: float = 7200.0
    retention: float = 48 * 3600.0
    no_lockfile: bool = False
    wal_compression: bool = True
    query_addrs: list[str] = field(default_factory=list)
    query_config: str = ""
    query_sd: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (scheme, path prefix, globs)
    query_sd_interval: float = 300.0
    query_dns_interval: float = 30.0
    query_http_method: str = "POST"
    query_default_step: float = 1.0
    query_only_prometheus_params: bool = False
    alertmanagers_urls: list[str] = field(default_factory=list)
    alertmanagers_config: str = ""
    alertmanagers_send_timeout: float = 10.0
    alertmanagers_dns_interval: float = 30.0
    alert_query_url: str = ""
    alert_label_drop: list[str] = field(default_factory=list)
    alert_relabel_config: str = ""
    alert_relabel_where: str = "--alert.relabel-config"
    alert_query_template: str = "/graph?g0.expr={{.Expr}}&g0.tab=1"
    series_limit: int = 0
    samples_limit: int = 0
    remote_write_config: str = ""
    remote_write_where: str = "--remote-write.config"
    bucket: Any = None
    upload_compacted: bool = False
    allow_out_of_order_uploads: bool = False
    skip_corrupted_blocks: bool = False
    hash_func: str = ""
    shipper_meta_file: str = "thanos.shipper.json"

    @property
    def stateless(self) -> bool:
        """``--remote-write.config[-file]`` given and not empty: no TSDB, no StoreAPI."""
        return bool(self.remote_write_config.strip())


def run(config: RuleConfig) -> int:
    from ..runtime import tune_gc

    tune_gc()
    return asyncio.run(serve(config))


class _ReloadMetrics:
    def __init__(self, registry) -> None:
        from prometheus_client import Counter, Gauge

        self.success = Gauge("thanos_rule_config_last_reload_successful",
                             "Whether the last configuration reload attempt was successful.", registry=registry)
        self.success_time = Gauge("thanos_rule_config_last_reload_success_timestamp_seconds",
                                  "Timestamp of the last successful configuration reload.", registry=registry)
        self.loaded = Gauge("thanos_rule_loaded_rules", "Loaded rules partitioned by file and group.",
                            ["strategy", "file", "group"], registry=registry)
        # Thanos counts addresses given twice across query configurations; ours refuses them at start
        Counter("thanos_rule_duplicated_query_addresses", "The number of times a duplicated query addresses is "
                "detected from the different configs in rule.", registry=registry)


class Rules:
    """The rule files in force: (re)loaded into the manager, one reload at a time."""

    def __init__(self, config: RuleConfig, manager, registry) -> None:
        self.config = config
        self.manager = manager
        self.metrics = _ReloadMetrics(registry)
        self._lock = asyncio.Lock()

    async def reload(self, why: str) -> Optional[str]:
        """Load the files and hand their groups to the manager; the error text (None: loaded).
        On error the manager keeps what it had."""
        from .rulefile import RuleFileError, load_files

        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                groups = await loop.run_in_executor(None, functools.partial(
                    load_files, self.config.rule_files,
                    experimental_functions="promql-experimental-functions" in self.config.features))
            except (RuleFileError, OSError) as e:
                self.metrics.success.set(0)
                msg = f"reloading rules failed: {e}"
                log.error(f"reload rules by {why} failed", extra={"err": msg})
                return msg
            await self.manager.update(groups)
            self.metrics.success.set(1)
            self.metrics.success_time.set(time.time())
            self.metrics.loaded.clear()
            for g in groups:
                self.metrics.loaded.labels(g.partial_response_strategy, g.file, g.name).set(len(g.rules))
            log.info("reload rule files", extra={"numFiles": len({g.file for g in groups}), "groups": len(groups),
                                                 "by": why})
            return None


class TSDBAppender:
    """The manager's appender over the ruler's TSDB: one ``append`` per rule evaluation, on the
    event loop (a rule's result is a small vector: the head's kernel and one WAL write take less
    than handing it to a thread, which cost a fifth of the ruler's CPU), in a thread only while a
    flush holds the TSDB's append lock."""

    def __init__(self, db, executor=None) -> None:
        self.db = db
        self.executor = executor

    def _write(self, samples: list, blocking: bool = True) -> bool:
        import numpy as np

        from ..tsdb.walrecords import labels_to_blob

        index: dict[bytes, int] = {}
        series = np.empty(len(samples), dtype=np.int64)
        ts = np.empty(len(samples), dtype=np.int64)
        vs = np.empty(len(samples), dtype=np.float64)
        for i, (labels, t, v) in enumerate(samples):  # a rule's result: a small vector
            series[i] = index.setdefault(labels_to_blob(labels), len(index))
            ts[i] = t
            vs[i] = v
        blobs = list(index)
        offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b) for b in blobs])
        return self.db.append(b"".join(blobs), offsets, series, ts, vs, blocking=blocking) is not None

    async def append(self, samples: list) -> None:
        if samples and not self._write(samples, blocking=False):
            await asyncio.get_running_loop().run_in_executor(self.executor, self._write, samples)


def _rules_info_handler(ext: tuple):
    """``thanos.info.Info/Info`` of a stateless ruler: its label set and the Rules API, no store."""
    import grpc

    from ..storeapi import service as svc
    from ..storeapi.pb import info_pb2
    from ..storeapi.types import labels_to_pb

    async def info(request, context):
        resp = info_pb2.InfoResponse(ComponentType="rule")
        if ext:
            resp.label_sets.add().labels.extend(labels_to_pb(ext))
        resp.rules.SetInParent()
        return resp

    req, resp, _ = svc.METHODS[svc.INFO]
    return grpc.method_handlers_generic_handler(svc.INFO_SERVICE, {"Info": grpc.unary_unary_rpc_method_handler(
        info, request_deserializer=req.FromString, response_serializer=resp.SerializeToString)})


async def serve(config: RuleConfig, stop: Optional[asyncio.Event] = None) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from ..errors import UserError
    from ..server import Component
    from ..storeapi import rules as rules_api
    from .api import RuleAPI, query_text

    srv = Component("rule", http_address=config.http_address, http_grace_period=config.http_grace_period,
                    http_config=config.http_config, grpc_address=config.grpc_address,
                    grpc_grace_period=config.grpc_grace_period, grpc_tls=config.grpc_tls,
                    grpc_max_connection_age=config.grpc_max_connection_age, stop=stop)
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rule-tsdb")
    ext = tuple(sorted(config.labels.items()))
    db = None
    shipper = None
    lock_fd = -1
    if config.stateless:
        from ..remote.writeclient import RemoteWriter
        from ..tsdb.db import lock_dir
        from ..tsdb.wal import WALCorruption

        try:  # as Thanos' agent DB: <data-dir>/lock and the queue's WAL in <data-dir>/wal
            os.makedirs(config.data_dir, exist_ok=True)
            lock_fd = -1 if config.no_lockfile else lock_dir(config.data_dir)
            appender = RemoteWriter.from_config(
                config.remote_write_config, config.remote_write_where, os.path.join(config.data_dir, "wal"),
                registry=srv.registry, external_labels=config.labels,
                compression="snappy" if config.wal_compression else None)
        except (OSError, WALCorruption) as e:
            raise UserError(f"--data-dir={config.data_dir}: cannot open the remote-write WAL: {e}") from None
    else:
        from ..tsdb.db import TSDB

        try:
            db = await asyncio.get_running_loop().run_in_executor(executor, lambda: TSDB.open(
                config.data_dir, chunk_range_ms=int(config.block_duration * 1000),
                retention_ms=int(config.retention * 1000),
                wal_compression="snappy" if config.wal_compression else None, registry=srv.registry,
                lockfile=not config.no_lockfile))
        except OSError as e:
            raise UserError(f"--data-dir={config.data_dir}: cannot open the TSDB: {e}") from None
        appender = TSDBAppender(db, executor)
        from ..tsdb.head import HeadCollector

        srv.registry.register(HeadCollector(lambda: {"": db.head}, label=None))
        if config.bucket is not None:
            from ..block.shipper import Shipper
            from ..objstore import instrument

            shipper = Shipper(instrument(config.bucket, srv.registry), config.data_dir, labels=lambda: dict(ext),
                              source="ruler", upload_compacted=config.upload_compacted,
                              meta_file_name=config.shipper_meta_file,
                              allow_out_of_order_uploads=config.allow_out_of_order_uploads,
                              skip_corrupted_blocks=config.skip_corrupted_blocks, registry=srv.registry)
    manager, query, notifier = _build_manager(config, appender, srv.registry, db, executor)
    rules = Rules(config, manager, srv.registry)
    err = await rules.reload("start")
    if err is not None:
        await query.close()
        if db is not None:
            db.close()
        raise UserError(f"--rule-file: initialize rules failed: {err}")

    prefix = config.route_prefix
    api = RuleAPI(manager.groups, config.labels, lambda: rules.reload("webhandler"),
                  disable_cors=config.disable_cors)
    api.routes(srv.app, prefix)
    _ui_routes(srv.app, prefix, config.external_prefix or prefix, config.alert_query_url, config.prefix_header)
    if prefix:  # as Thanos: / goes to the route prefix
        from aiohttp import web

        async def to_prefix(request):
            raise web.HTTPFound(prefix)

        srv.app.router.add_get("/", to_prefix)

    handlers = [rules_api.provider_handler(manager.groups, lambda: ext, query_text, group_pbs=api.group_pbs)]
    if db is not None:
        from ..storeapi import StoreServer
        from ..storeapi.tsdbstore import TSDBStore

        from prometheus_client import Counter

        dropped = Counter("thanos_store_selects_dropped", "Number of select queries that were dropped due to "
                          "configured limits.", ["reason"], registry=srv.registry)
        for reason in ("series", "chunks"):
            dropped.labels(reason)
        store = TSDBStore(lambda: db, config.labels, component_type="rule", executor=executor, rules=True,
                          series_limit=config.series_limit, samples_limit=config.samples_limit,
                          dropped=lambda reason: dropped.labels(reason).inc())
        handlers += StoreServer(store).handlers()
    else:
        handlers.append(_rules_info_handler(ext))

    async def close() -> None:
        await notifier.stop()
        if db is None:
            await appender.stop()
            if lock_fd >= 0:
                os.close(lock_fd)
        await query.close()
        if shipper is not None:
            shipper.close()
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(executor, db.close)
        executor.shutdown(wait=True)

    await srv.start(handlers, cleanup=close)
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(rules.reload("sighup")))
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
        pass

    async def housekeeping() -> None:
        """Cut the head into blocks, apply retention, ship; errors logged, never fatal."""
        every = min(HOUSEKEEPING_S, max(1.0, config.block_duration / 4))  # short blocks are cut in time
        while True:
            await asyncio.sleep(every)
            if db is None:
                continue
            try:
                await loop.run_in_executor(executor, db.compact)
            except Exception as e:  # noqa: BLE001
                log.error("compaction failed", extra={"err": f"{type(e).__name__}: {e}"})
            if shipper is not None:
                try:
                    n = await shipper.sync_async()
                    if n:
                        log.info("uploaded blocks", extra={"uploaded": n})
                except Exception as e:  # noqa: BLE001
                    log.warning("upload failed", extra={"err": f"{type(e).__name__}: {e}"})

    async def evaluate() -> None:
        await manager.run()
        await asyncio.Event().wait()  # run() may return once its groups are started

    await notifier.start()
    if db is None:
        await appender.start()
    query.bind_loop()
    srv.set_ready(True)
    log.info("starting rule", extra={"grpc": config.grpc_address, "http": config.http_address,
                                     "stateless": config.stateless})

    async def on_stop() -> None:
        await manager.stop()
        await close()

    return await srv.run_tasks([asyncio.create_task(evaluate(), name="rules"),
                                asyncio.create_task(housekeeping(), name="tsdb")], on_stop=on_stop)


def _ui_routes(app, prefix: str, link_prefix: str, query_url: str, prefix_header: str = "") -> None:
    """The rules and alerts pages (and ``/`` -> alerts, as the Thanos ruler's UI)."""
    try:
        from ..web.rules import add_rules_ui_routes
    except ImportError:
        return
    add_rules_ui_routes(app, prefix, link_prefix=link_prefix, component="rule", query_url=query_url,
                        prefix_header=prefix_header)


def tsdb_for_state_reader(db, executor=None):
    """``ALERTS_FOR_STATE`` read back from the ruler's own TSDB (a restart within
    ``--for-outage-tolerance`` keeps an alert's ``for`` progress): per series its labels and its
    last sample in ``[mint, maxt]``."""
    def read(matchers: dict[str, str], mint: int, maxt: int) -> list:
        import numpy as np

        from ..tsdb.chunkenc import decode_xor
        from ..tsdb.labels import Matcher

        out = []
        for labels, chunks in db.series([Matcher("=", n, v) for n, v in matchers.items()], mint, maxt):
            best = None
            for _, _, enc, data in chunks:
                if enc != 1:  # ALERTS_FOR_STATE is a float series
                    continue
                t, v = decode_xor(data)
                keep = np.flatnonzero((t >= mint) & (t <= maxt))
                if len(keep) and (best is None or t[keep[-1]] >= best[0]):
                    best = (int(t[keep[-1]]), float(v[keep[-1]]))
            if best is not None:
                out.append((dict(labels), best[0], best[1]))
        return out

    async def reader(matchers: dict[str, str], mint: int, maxt: int) -> list:
        return await asyncio.get_running_loop().run_in_executor(executor, read, matchers, mint, maxt)

    return reader


def _sd_addresses(groups: list[tuple[str, str, list[str]]]):
    """``--query.sd-files`` / ``file_sd_configs``: the targets of the files, re-read when one of
    them changes (a file that does not parse is logged and its previous targets kept)."""
    from ..filesd import file_stamps, read_sd_files

    state: dict = {"stamp": None, "addrs": []}

    def addresses() -> list[str]:
        now = file_stamps([pat for _, _, pats in groups for pat in pats])
        if now != state["stamp"]:
            addrs = []
            for scheme, prefix, pats in groups:
                targets, errors = read_sd_files(pats)
                for e in errors:
                    log.error("query file SD", extra={"err": e})
                addrs += [t if t.startswith(("dns+", "dnssrv+")) else f"{scheme}://{t}{prefix}" for t in targets]
            state["stamp"], state["addrs"] = now, addrs
        return state["addrs"]

    return addresses


def _build_manager(config: RuleConfig, appender, registry, db, executor):
    """E's :class:`~pythanos.rule.manager.Manager` over the query client and F's notifier; the
    coroutines that start and close what needs it."""
    from .manager import Manager
    from .notifier import from_config
    from .queryclient import QueryClient

    query = QueryClient(config.query_addrs, http_method=config.query_http_method, registry=registry,
                        do_not_add_thanos_params=config.query_only_prometheus_params,
                        resolve_interval_s=config.query_dns_interval,
                        extra_addresses=_sd_addresses(config.query_sd) if config.query_sd else None)
    notifier = from_config(config, registry=registry)
    if db is not None:
        for_state_reader = tsdb_for_state_reader(db, executor)
    else:  # stateless: ALERTS_FOR_STATE read back through the queriers (Thanos #5219)
        for_state_reader = query.for_state_reader(step_s=max(1, int(config.query_default_step)),
                                                  ignored_labels=config.restore_ignored_labels)
    manager = Manager(query=query.query, append=appender.append, notify=notifier.send,
                      blocking_query=query.query_blocking, external_labels=dict(config.labels),
                      external_url=config.alert_query_url, query_template=config.alert_query_template,
                      outage_tolerance_s=config.for_outage_tolerance, for_grace_period_s=config.for_grace_period,
                      resend_delay_s=config.resend_delay, rule_query_offset_s=config.rule_query_offset,
                      default_interval_s=config.eval_interval, registry=registry,
                      for_state_reader=for_state_reader, data_dir=config.data_dir)
    return manager, query, notifier
