"""The cache interface every backend implements, and helpers they share (sizes, metrics, the
asynchronous write queue, the circuit breaker of Thanos' ``set_async_circuit_breaker_config``).
"""
from __future__ import annotations

import abc
import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

log = logging.getLogger("pythanos.cache")

__all__ = ["Cache", "parse_size", "format_size", "AsyncQueue", "CircuitBreakerConfig", "CircuitBreaker",
           "CircuitOpenError", "family"]


class Cache(abc.ABC):
    """A best-effort key/value cache (Thanos' ``cache.Cache``).

    ``get_multi`` returns only the hits; ``set_multi`` never raises: remote backends enqueue the
    writes and return at once (failures are logged at debug/warn and counted in metrics). Neither
    raises because the backend is down: a cache that does not answer is a cache that misses.
    """

    name: str = "cache"

    @abc.abstractmethod
    async def get_multi(self, keys: list[str]) -> dict[str, bytes]:
        """The values of those ``keys`` found in the cache (misses are absent)."""

    @abc.abstractmethod
    async def set_multi(self, items: dict[str, bytes], ttl: float) -> None:
        """Store ``items`` for ``ttl`` seconds (``ttl <= 0``: no expiry). Best effort, never raises."""

    async def flush(self) -> None:
        """Wait until every write accepted so far has been attempted (remote backends queue
        writes). Tests and graceful shutdown use it; the in-memory cache has nothing to wait for."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish queued writes, then release connections. Idempotent."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# --- sizes: Thanos' model.Bytes (alecthomas/units.ParseBase2Bytes) --------------------------------

from ..flags import parse_bytes as parse_size  # noqa: E402  (re-exported: cache YAML sizes)


def format_size(n: int) -> str:
    """``units.Base2Bytes.String()``-like: 262144000 -> ``250MiB``."""
    for i, p in reversed(list(enumerate("KMGTPE", start=1))):
        if n and n % (1024 ** i) == 0:
            return f"{n // 1024 ** i}{p}iB"
    return f"{n}B"


# --- metrics: one family per (registry, metric name), labelled by cache name ------------------------

_FAMILIES: "weakref.WeakKeyDictionary[object, dict[str, object]]" = weakref.WeakKeyDictionary()


def family(registry, kind: str, name: str, help_: str, labelnames: tuple[str, ...] = (), **kw):
    """A prometheus_client metric family registered once per registry (several caches with
    different ``name`` labels share it), or ``None`` without a registry."""
    if registry is None:
        return None
    import prometheus_client as pc

    per = _FAMILIES.setdefault(registry, {})
    m = per.get(name)
    if m is None:
        cls = {"counter": pc.Counter, "gauge": pc.Gauge, "histogram": pc.Histogram}[kind]
        m = cls(name, help_, ("name", *labelnames), registry=registry, **kw)
        per[name] = m
    return m


class _Null:
    """Stands in for a metric child when there is no registry."""

    def inc(self, *_a) -> None:
        pass

    def dec(self, *_a) -> None:
        pass

    def set(self, *_a) -> None:
        pass

    def observe(self, *_a) -> None:
        pass

    def labels(self, *_a, **_k) -> "_Null":
        return self


NULL = _Null()


def child(fam, name: str, *labels: str):
    return fam.labels(name, *labels) if fam is not None else NULL


# --- circuit breaker (Thanos' set_async_circuit_breaker_config, sony/gobreaker semantics) ----------

@dataclass(frozen=True)
class CircuitBreakerConfig:
    enabled: bool = False
    half_open_max_requests: int = 10
    open_duration: float = 5.0
    min_requests: int = 50
    consecutive_failures: int = 5
    failure_percent: float = 0.05


class CircuitOpenError(Exception):
    """The breaker is open (or half-open and full): the operation was not attempted."""


class CircuitBreaker:
    """gobreaker's state machine, enough for the async set path: closed -> open when, over at least
    ``min_requests`` requests, ``consecutive_failures`` failed in a row or the failure ratio reached
    ``failure_percent``; open -> half-open after ``open_duration``; half-open lets
    ``half_open_max_requests`` through and closes when they all succeed, reopens on a failure."""

    def __init__(self, cfg: CircuitBreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.state = "closed"
        self._opened_at = 0.0
        self._reset_counts()

    def _reset_counts(self) -> None:
        self.requests = self.failures = self.consecutive = self.successes = 0

    def _allow(self) -> bool:
        if self.state == "open":
            if self.clock() - self._opened_at < (self.cfg.open_duration or 60.0):
                return False
            self.state = "half-open"
            self._reset_counts()
        if self.state == "half-open" and self.requests >= max(1, self.cfg.half_open_max_requests):
            return False
        self.requests += 1
        return True

    def _record(self, ok: bool) -> None:
        if ok:
            self.successes += 1
            self.consecutive = 0
            if self.state == "half-open" and self.successes >= max(1, self.cfg.half_open_max_requests):
                self.state = "closed"
                self._reset_counts()
            return
        self.failures += 1
        self.consecutive += 1
        if self.state == "half-open":
            self._trip()
        elif self.requests >= self.cfg.min_requests and (
                self.consecutive >= self.cfg.consecutive_failures
                or self.failures / self.requests >= self.cfg.failure_percent):
            self._trip()

    def _trip(self) -> None:
        self.state = "open"
        self._opened_at = self.clock()
        self._reset_counts()

    async def call(self, fn: Callable[[], Awaitable[None]]) -> None:
        if not self.cfg.enabled:
            await fn()
            return
        if not self._allow():
            raise CircuitOpenError(f"circuit breaker is {self.state}")
        try:
            await fn()
        except BaseException:
            self._record(False)
            raise
        self._record(True)


# --- the asynchronous write queue (Thanos' AsyncOperationProcessor) --------------------------------

class AsyncQueue:
    """A bounded queue of write operations run by ``concurrency`` worker tasks.

    ``offer(op, weight)`` never blocks: it returns False when the buffer (``buffer_size`` items,
    an op weighing as many items as it writes) is full, and the caller counts the skip. Workers
    start on first use inside the running loop; ``close`` runs what is queued, then stops them.
    """

    def __init__(self, buffer_size: int, concurrency: int, what: str) -> None:
        self.buffer_size = max(1, buffer_size)
        self.concurrency = max(1, concurrency)
        self.what = what
        self._queue: Optional[asyncio.Queue] = None
        self._workers: list[asyncio.Task] = []
        self._pending = 0
        self._closed = False

    def offer(self, op: Callable[[], Awaitable[None]], weight: int = 1) -> bool:
        if self._closed:
            return False
        if self._pending and self._pending + weight > self.buffer_size:
            return False
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._workers = [asyncio.get_running_loop().create_task(self._work(), name=f"{self.what}-{i}")
                             for i in range(self.concurrency)]
        self._pending += weight
        self._queue.put_nowait((op, weight))
        return True

    def __len__(self) -> int:
        return self._pending

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            op, weight = await self._queue.get()
            try:
                await op()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the op tracks its own errors; this is a last resort
                log.debug("async cache operation failed", extra={"what": self.what, "err": repr(e)})
            finally:
                self._pending -= weight
                self._queue.task_done()

    async def join(self) -> None:
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._queue is None:
            return
        await self._queue.join()
        for t in self._workers:
            t.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
