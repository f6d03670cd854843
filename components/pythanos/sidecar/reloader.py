"""The config reloader: watch Prometheus' config file and rule dirs, reload Prometheus on change (Thanos ``pkg/reloader``).

Facts followed (verified in Thanos' ``pkg/reloader/reloader.go``, ``cmd/thanos/{config,sidecar}.go``):

* ``--reloader.config-file`` is the watched input. With ``--reloader.config-envsubst-file`` it is
  "normalized" into that output on every apply: gunzipped when it starts with the gzip magic
  ``1f 8b 08`` (detected by content, so ``prometheus.yml.gz`` works whatever the name), then
  ``$(VAR)`` references (regex ``\\$\\(([a-zA-Z_0-9]+)\\)``, Kubernetes style; ``$VAR`` and ``${VAR}``
  are left alone) are replaced by environment variables, and the result is written atomically
  (tmp file + rename). A reference to an unset variable is an error: nothing is written and
  ``reloader_config_environment_variable_expansion_errors`` says how many were unset.
* ``--reloader.rule-dir`` directories are walked recursively (symlinks followed); every file
  goes into one SHA-256, as does the config file (each file hashed as ``\\xff name \\xff content``).
* When a hash differs from the last successful reload, ``POST <prometheus>/-/reload`` is sent and
  retried until it succeeds or the watch interval (``--reloader.watch-interval``, 3m) runs out;
  after that the next check forces a reload. Thanos retries every ``--reloader.retry-interval``
  (5s); we back off exponentially from ``retry_initial`` up to that interval.
* Thanos watches with fsnotify plus a forced re-check every watch interval; we poll (hashing
  every ``poll_interval`` seconds, 1s by default), which sees the same changes without inotify.
* The first apply happens at start, and its failure is fatal (Thanos' ``Watch`` returns it);
  later failures are logged and counted.

Metrics (registered with the ``thanos_sidecar_`` prefix, as the Thanos sidecar does; ``metric_prefix``
changes it, e.g. to none for ``pythanos config-reloader`` as prometheus-operator's reloader):
``reloader_reloads_total``, ``reloader_reloads_failed_total``, ``reloader_last_reload_successful``,
``reloader_last_reload_success_timestamp_seconds``, ``reloader_config_apply_operations_total``,
``reloader_config_apply_operations_failed_total``, ``reloader_config_environment_variable_expansion_errors``,
``reloader_info{method="http"}``, ``reloader_watches``, ``reloader_watch_events_total``,
``reloader_watch_errors_total``.
"""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import os
import re
import time
from typing import Awaitable, Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

__all__ = ["Reloader", "ReloaderError", "EnvExpansionError", "expand_env", "normalize", "GZIP_MAGIC"]

GZIP_MAGIC = b"\x1f\x8b\x08"
ENV_RE = re.compile(rb"\$\(([a-zA-Z_0-9]+)\)")
METRIC_PREFIX = "thanos_sidecar_"


class ReloaderError(Exception):
    """An apply failed (reading, decompressing, expanding or writing the config, or hashing)."""


class EnvExpansionError(ReloaderError):
    """``$(VAR)`` references to unset environment variables; ``names`` lists them."""

    def __init__(self, names: Sequence[str], source: str = ""):
        self.names = list(names)
        where = f"{source}: " if source else ""
        quoted = ", ".join(f'"{n}"' for n in self.names)
        super().__init__(f"{where}expand environment variables: found reference to unset environment "
                         f"variable{'s' if len(self.names) > 1 else ''} {quoted}")


def expand_env(data: bytes, environ: Mapping[str, str], source: str = "") -> tuple[bytes, int]:
    """Replace ``$(VAR)``; returns ``(bytes, 0)`` or raises :class:`EnvExpansionError` naming every unset one."""
    missing: list[str] = []

    def sub(m: re.Match[bytes]) -> bytes:
        name = m.group(1).decode()
        val = environ.get(name)
        if val is None:
            missing.append(name)
            return m.group(0)
        return val.encode()

    out = ENV_RE.sub(sub, data)
    if missing:
        raise EnvExpansionError(missing, source)
    return out, 0


def normalize(input_file: str, output_file: str, environ: Mapping[str, str]) -> None:
    """Gunzip (by magic bytes) and env-expand ``input_file`` into ``output_file`` atomically."""
    try:
        with open(input_file, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ReloaderError(f"read file {input_file}: {e.strerror or e}") from None
    if data[:3] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ReloaderError(f"read compressed config file {input_file}: {e}") from None
    data, _ = expand_env(data, environ, input_file)
    tmp = output_file + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, output_file)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise ReloaderError(f"write file {output_file}: {e.strerror or e}") from None


def _hash_file(h, path: str) -> None:
    with open(path, "rb") as f:
        h.update(b"\xff" + os.fsencode(path) + b"\xff")
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)


def _hash_dirs(dirs: Sequence[str]) -> bytes | None:
    if not dirs:
        return None
    h = hashlib.sha256()
    for d in dirs:
        root = os.path.realpath(d)
        for cur, subdirs, files in os.walk(root, followlinks=True):
            subdirs.sort()
            for name in sorted(files):
                p = os.path.join(cur, name)
                if os.path.isdir(p):
                    continue
                _hash_file(h, p)
    return h.digest()


class _Metrics:
    def __init__(self, registry: CollectorRegistry, method: str, prefix: str = METRIC_PREFIX):
        p = prefix
        self.reloads = Counter(p + "reloader_reloads_total", "Total number of reload requests.", registry=registry)
        self.reload_errors = Counter(p + "reloader_reloads_failed_total",
                                     "Total number of reload requests that failed.", registry=registry)
        self.last_reload_success = Gauge(p + "reloader_last_reload_successful",
                                         "Whether the last reload attempt was successful", registry=registry)
        self.last_reload_success_ts = Gauge(p + "reloader_last_reload_success_timestamp_seconds",
                                            "Timestamp of the last successful reload", registry=registry)
        self.config_apply = Counter(p + "reloader_config_apply_operations_total",
                                    "Total number of config apply operations.", registry=registry)
        self.config_apply_errors = Counter(p + "reloader_config_apply_operations_failed_total",
                                           "Total number of config apply operations that failed.", registry=registry)
        self.env_errors = Gauge(p + "reloader_config_environment_variable_expansion_errors",
                                "Number of environment variable expansions that failed during the last operation.",
                                registry=registry)
        info = Gauge(p + "reloader_info", "A metric with a constant '1' value labeled by reload method "
                     "(either 'http' or 'signal').", ["method"], registry=registry)
        info.labels(method=method).set(1)
        self.watches = Gauge(p + "reloader_watches", "Number of resources watched by the reloader.",
                             registry=registry)
        self.watch_events = Counter(p + "reloader_watch_events_total",
                                    "Total number of events received by the reloader from the watcher.",
                                    registry=registry)
        self.watch_errors = Counter(p + "reloader_watch_errors_total",
                                    "Total number of errors received by the reloader from the watcher.",
                                    registry=registry)


class Reloader:
    """Keeps Prometheus' config (and rules) applied: ``await reloader.run()``.

    ``reload`` is the reload trigger, typically ``PromClient(url).reload`` (``POST /-/reload``).
    """

    def __init__(self, reload: Callable[[], Awaitable[None]], *, config_file: str | None = None,
                 config_envsubst_file: str | None = None, rule_dirs: Sequence[str] = (),
                 watch_interval: float = 180.0, retry_interval: float = 5.0, retry_initial: float = 0.25,
                 poll_interval: float = 1.0, environ: Mapping[str, str] | None = None,
                 registry: CollectorRegistry | None = None, method: str = "http",
                 metric_prefix: str = METRIC_PREFIX):
        self.reload = reload
        self.config_file = config_file or None
        self.config_envsubst_file = config_envsubst_file or None
        self.rule_dirs = list(rule_dirs)
        self.watch_interval = watch_interval
        self.retry_interval = retry_interval
        self.retry_initial = min(retry_initial, retry_interval) if retry_interval > 0 else retry_initial
        self.poll_interval = poll_interval
        self.environ = environ if environ is not None else os.environ
        self.metrics = _Metrics(registry if registry is not None else CollectorRegistry(), method, metric_prefix)
        self._last_cfg_hash: bytes | None = None
        self._last_dirs_hash: bytes | None = None
        self._force_reload = False
        self._last_seen: tuple[bytes | None, bytes | None] | None = None  # what the poll loop compares to
        self.last_error: BaseException | None = None
        #: completed polls of the watched files: what "nothing happened for N polls" is counted in
        self.polls = 0

    # ------------------------------------------------------------------------------ hashing

    def _hashes(self) -> tuple[bytes | None, bytes | None]:
        cfg = None
        if self.config_file:
            h = hashlib.sha256()
            try:
                _hash_file(h, self.config_file)
            except OSError as e:
                raise ReloaderError(f"hash file {self.config_file}: {e.strerror or e}") from None
            cfg = h.digest()
        try:
            dirs = _hash_dirs(self.rule_dirs)
        except OSError as e:
            raise ReloaderError(f"build hash of rule dirs: {e}") from None
        return cfg, dirs

    def _changed(self, hashes: tuple[bytes | None, bytes | None]) -> bool:
        return self._force_reload or hashes != (self._last_cfg_hash, self._last_dirs_hash)

    # ------------------------------------------------------------------------------ apply

    async def apply(self, deadline: float | None = None) -> bool:
        """Normalize the config and reload Prometheus if anything changed; True when a reload happened.

        Raises :class:`ReloaderError` when the config cannot be read, expanded or written (nothing
        is reloaded then). A reload that keeps failing until ``deadline`` (monotonic; default now +
        watch interval) is logged, counted and forced on the next apply; it returns False.
        """
        loop = asyncio.get_running_loop()
        hashes = await loop.run_in_executor(None, self._hashes)
        self._last_seen = hashes
        if self.config_file and self.config_envsubst_file:
            try:
                await loop.run_in_executor(None, normalize, self.config_file, self.config_envsubst_file,
                                           self.environ)
                self.metrics.env_errors.set(0)
            except EnvExpansionError as e:
                self.metrics.env_errors.set(len(e.names))
                raise
        if not self._changed(hashes):
            return False

        deadline = deadline if deadline is not None else time.monotonic() + self.watch_interval
        delay = self.retry_initial
        while True:
            self.metrics.reloads.inc()
            try:
                await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                self.metrics.reload_errors.inc()
                self.metrics.last_reload_success.set(0)
                self.last_error = e
                wait = min(delay, max(0.0, deadline - time.monotonic()))
                if wait <= 0:
                    self._force_reload = True
                    log.error("Failed to trigger reload. Retrying.", extra={"err": str(e)})
                    return False
                log.warning("reload failed, retrying", extra={"err": str(e), "backoff": f"{wait:.2f}s"})
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.retry_interval) if self.retry_interval > 0 else delay * 2
                continue
            break
        self._force_reload = False
        self._last_cfg_hash, self._last_dirs_hash = hashes
        self.last_error = None
        self.metrics.last_reload_success.set(1)
        self.metrics.last_reload_success_ts.set(time.time())
        log.info("Reload triggered", extra={"cfg_in": self.config_file or "", "cfg_out": self.config_envsubst_file or "",
                                            "watched_dirs": ", ".join(self.rule_dirs)})
        return True

    # ------------------------------------------------------------------------------ loop

    async def run(self) -> None:
        """Apply at start (a failure raises, as in Thanos), then poll for changes until cancelled."""
        if not self.config_file and not self.rule_dirs:
            log.info("nothing to be watched")
            await asyncio.Event().wait()
            return
        self.metrics.watches.set((1 if self.config_file else 0) + len(self.rule_dirs))
        if self.config_file:
            await self.apply()
        else:
            # rule dirs only: the first apply records the hash and reloads once, as Thanos does
            try:
                await self.apply()
            except ReloaderError as e:
                log.error("apply error", extra={"err": str(e)})
        log.info("started watching config file and directories for changes",
                 extra={"cfg": self.config_file or "", "out": self.config_envsubst_file or "",
                        "dirs": ",".join(self.rule_dirs)})
        loop = asyncio.get_running_loop()
        next_forced = time.monotonic() + self.watch_interval
        while True:
            await asyncio.sleep(min(self.poll_interval, self.watch_interval))
            forced = time.monotonic() >= next_forced
            try:
                hashes = await loop.run_in_executor(None, self._hashes)
            except ReloaderError as e:
                self.metrics.watch_errors.inc()
                log.error("watch error", extra={"err": str(e)})
                continue
            finally:
                self.polls += 1
            if not forced and hashes == self._last_seen:
                continue
            if not forced:
                self.metrics.watch_events.inc()
            next_forced = time.monotonic() + self.watch_interval
            self.metrics.config_apply.inc()
            try:
                await self.apply()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                self.metrics.config_apply_errors.inc()
                self.last_error = e
                log.error("apply error", extra={"err": str(e)})
