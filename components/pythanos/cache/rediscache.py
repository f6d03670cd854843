"""A Redis cache with Thanos' redis client configuration (``pkg/cacheutil/redis_client.go``),
through redis-py's asyncio client (``redis.asyncio``).

As in Thanos: ``get_multi`` sends ``MGET`` in batches of ``get_multi_batch_size`` keys, at most
``max_get_multi_concurrency`` at once, the whole call bounded by ``read_timeout``; writes are
``SETEX`` pipelines of ``set_multi_batch_size`` items, at most ``max_set_multi_concurrency`` at
once. Thanos' ``RedisCache.Store`` runs its pipeline in the caller; here writes are queued
(``max_async_buffer_size`` items, ``max_async_concurrency`` workers) so ``set_multi`` returns at
once. ``prefix`` is put before every key. A server that is down yields misses, never exceptions;
redis-py's own retries are turned off (a cache miss is cheaper than a stalled query).

``addr`` is ``host:port``; with ``master_name`` it lists Sentinels (comma-separated), and several
comma-separated addresses without ``master_name`` are taken as a Redis Cluster (rueidis finds
cluster mode by itself; redis-py needs telling). Sentinel and Cluster are built with redis-py's
classes but not tested here against real ones.

Accepted for compatibility but without effect: ``min_idle_conns``, ``idle_timeout``,
``max_conn_age`` (go-redis pool settings of older Thanos; redis-py's pool has no equivalent),
``cache_size`` (rueidis client-side caching; a warning is logged when it is set) and
``tls_config.server_name`` (redis-py cannot set SNI apart from the host). ``pool_size`` bounds
redis-py's connection pool. The password shows as ``<secret>`` in ``repr``/``str`` and logs.

Metrics: Thanos' ``thanos_redis_operation_duration_seconds{operation}``,
``thanos_cache_redis_requests_total``, ``thanos_cache_redis_hits_total`` and, as pythanos'
addition mirroring memcached's (Thanos has no failure counter for Redis),
``thanos_redis_operation_failures_total{operation, reason}``.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Optional

from ..redact import redacted, secret_field
from .base import AsyncQueue, Cache, CircuitBreaker, CircuitBreakerConfig, CircuitOpenError, child, family

log = logging.getLogger("pythanos.cache")

OP_SET, OP_SETMULTI, OP_GETMULTI = "set", "setmulti", "getmulti"
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 3, 6, 10)
_TLS_VERSIONS = {"1.0": "TLSv1", "1.1": "TLSv1_1", "1.2": "TLSv1_2", "1.3": "TLSv1_3"}


@dataclass(frozen=True)
class RedisTLSConfig:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    insecure_skip_verify: bool = False
    min_version: str = ""


@redacted
@dataclass(frozen=True)
class RedisConfig:
    """Thanos' ``RedisClientConfig`` with its defaults (durations in seconds, sizes in bytes)."""

    addr: str = ""
    prefix: str = ""
    username: str = ""
    password: str = secret_field()
    db: int = 0
    dial_timeout: float = 5.0
    read_timeout: float = 3.0
    write_timeout: float = 3.0
    pool_size: int = 100
    min_idle_conns: int = 10
    idle_timeout: float = 300.0
    max_conn_age: float = 0.0
    max_get_multi_concurrency: int = 100
    get_multi_batch_size: int = 100
    max_set_multi_concurrency: int = 100
    set_multi_batch_size: int = 100
    tls_enabled: bool = False
    tls_config: RedisTLSConfig = field(default_factory=RedisTLSConfig)
    cache_size: int = 0
    master_name: str = ""
    max_async_buffer_size: int = 10000
    max_async_concurrency: int = 20
    set_async_circuit_breaker_config: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)

    def validate(self) -> Optional[str]:
        """The first problem as ``field: message``, or None (Thanos' ``validate`` and more)."""
        if not self.addr:
            return "addr: no redis addr provided"
        for a in self.addr.split(","):
            host, sep, port = a.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                return f"addr: {a.strip()!r} is not host:port"
        if self.tls_enabled:
            if bool(self.tls_config.cert_file) != bool(self.tls_config.key_file):
                return "tls_config: both client key and certificate must be provided"
            if self.tls_config.min_version and self.tls_config.min_version not in _TLS_VERSIONS:
                return (f"tls_config.min_version: invalid {self.tls_config.min_version!r} "
                        f"(want one of {', '.join(_TLS_VERSIONS)})")
        if self.max_async_concurrency <= 0:
            return "max_async_concurrency: must be positive"
        if self.pool_size <= 0:
            return "pool_size: must be positive"
        return None


def _reason(e: BaseException) -> str:
    import redis.exceptions as rx

    if isinstance(e, (asyncio.TimeoutError, TimeoutError, rx.TimeoutError)):
        return "timeout"
    if isinstance(e, (rx.ConnectionError, OSError)):
        return "network-error"
    if isinstance(e, rx.ResponseError):
        return "server-error"
    return "other"


class RedisCache(Cache):
    """Redis through ``redis.asyncio``; see the module docstring. Build it with a :class:`RedisConfig`."""

    def __init__(self, config: RedisConfig, *, name: str = "redis", registry=None) -> None:
        problem = config.validate()
        if problem:
            raise ValueError(problem)
        self.config = config
        self.name = name
        self._client = None
        self._sentinel = None
        self._get_gate: Optional[asyncio.Semaphore] = None
        self._set_gate: Optional[asyncio.Semaphore] = None
        self._queue = AsyncQueue(config.max_async_buffer_size, config.max_async_concurrency, f"redis-{name}")
        self._breaker = CircuitBreaker(config.set_async_circuit_breaker_config)
        self._closed = False
        if config.cache_size:
            log.warning("redis client-side caching (cache_size) is not supported; ignored", extra={"cache": name})
        dur = family(registry, "histogram", "thanos_redis_operation_duration_seconds",
                     "Duration of operations against redis.", ("operation",), buckets=_DURATION_BUCKETS)
        fails = family(registry, "counter", "thanos_redis_operation_failures_total",
                       "Total number of operations against redis that failed (pythanos).", ("operation", "reason"))
        req = family(registry, "counter", "thanos_cache_redis_requests_total", "Total number of items requests to redis.")
        hits = family(registry, "counter", "thanos_cache_redis_hits_total",
                      "Total number of items requests to the cache that were a hit.")
        self._dur = {op: child(dur, name, op) for op in (OP_SET, OP_SETMULTI, OP_GETMULTI)}
        self._fails_family, self._requests, self._hits = fails, child(req, name), child(hits, name)
        self.failures: dict[tuple[str, str], int] = {}
        self.skipped: dict[tuple[str, str], int] = {}

    def _fail(self, op: str, e: BaseException, n: int = 1) -> str:
        r = _reason(e)
        child(self._fails_family, self.name, op, r).inc(n)
        self.failures[(op, r)] = self.failures.get((op, r), 0) + n
        return r

    # connection -------------------------------------------------------------------------------

    def _conn_kwargs(self) -> dict:
        c = self.config
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        kw = dict(db=c.db, username=c.username or None, password=c.password or None,
                  socket_connect_timeout=c.dial_timeout or None, socket_timeout=c.read_timeout or None,
                  max_connections=c.pool_size, retry=Retry(NoBackoff(), 0))
        if c.tls_enabled:
            import ssl

            t = c.tls_config
            kw.update(ssl=True, ssl_ca_certs=t.ca_file or None, ssl_certfile=t.cert_file or None,
                      ssl_keyfile=t.key_file or None,
                      ssl_cert_reqs="none" if t.insecure_skip_verify else "required",
                      ssl_check_hostname=not t.insecure_skip_verify)
            if t.min_version:
                kw["ssl_min_version"] = getattr(ssl.TLSVersion, _TLS_VERSIONS[t.min_version])
        return kw

    def _redis(self):
        if self._client is not None:
            return self._client
        c = self.config
        addrs = [a.strip() for a in c.addr.split(",") if a.strip()]
        hp = [(a.rpartition(":")[0].strip("[]"), int(a.rpartition(":")[2])) for a in addrs]
        kw = self._conn_kwargs()
        if c.master_name:
            from redis.asyncio.sentinel import Sentinel

            self._sentinel = Sentinel(hp, socket_timeout=c.read_timeout or None,
                                      sentinel_kwargs={"socket_connect_timeout": c.dial_timeout or None,
                                                       "socket_timeout": c.read_timeout or None})
            self._client = self._sentinel.master_for(c.master_name, **kw)
        elif len(hp) > 1:
            from redis.asyncio.cluster import ClusterNode, RedisCluster

            kw.pop("db")
            kw.pop("retry")
            kw.pop("max_connections")
            self._client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in hp],
                                        max_connections=c.pool_size, **kw)
        else:
            import redis.asyncio as aredis

            self._client = aredis.Redis(host=hp[0][0], port=hp[0][1], **kw)
        return self._client

    def _key(self, k: str) -> str:
        return self.config.prefix + k if self.config.prefix else k

    # reads ------------------------------------------------------------------------------------

    async def get_multi(self, keys: list[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        self._requests.inc(len(keys))
        if self._closed:
            return {}
        keys = list(dict.fromkeys(keys))
        bs = self.config.get_multi_batch_size
        batches = [keys[i:i + bs] for i in range(0, len(keys), bs)] if bs > 0 else [keys]
        if self.config.max_get_multi_concurrency > 0 and self._get_gate is None:
            self._get_gate = asyncio.Semaphore(self.config.max_get_multi_concurrency)
        start = time.monotonic()
        hits: dict[str, bytes] = {}
        tasks = [asyncio.ensure_future(self._mget(b, hits)) for b in batches]
        try:
            if self.config.read_timeout > 0:
                async with asyncio.timeout(self.config.read_timeout):
                    await asyncio.gather(*tasks)
            else:
                await asyncio.gather(*tasks)
        except (asyncio.TimeoutError, TimeoutError) as e:
            for t in tasks:
                t.cancel()
            self._fail(OP_GETMULTI, e)
            log.warning("failed to mget items from redis", extra={"cache": self.name, "items": len(keys), "err": "timeout"})
        self._dur[OP_GETMULTI].observe(time.monotonic() - start)
        self._hits.inc(len(hits))
        return hits

    async def _mget(self, batch: list[str], hits: dict[str, bytes]) -> None:
        gate = self._get_gate
        if gate is not None:
            await gate.acquire()
        try:
            r = self._redis()
            wire = [self._key(k) for k in batch]
            if hasattr(r, "mget_nonatomic"):
                vals = await r.mget_nonatomic(wire)
            else:
                vals = await r.mget(wire)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            reason = self._fail(OP_GETMULTI, e)
            log.warning("failed to mget items from redis",
                        extra={"cache": self.name, "items": len(batch), "reason": reason, "err": repr(e)})
            return
        finally:
            if gate is not None:
                gate.release()
        for k, v in zip(batch, vals):
            if v is not None:
                hits[k] = v

    # writes -----------------------------------------------------------------------------------

    async def set_multi(self, items: dict[str, bytes], ttl: float) -> None:
        if self._closed or not items:
            return
        bs = self.config.set_multi_batch_size
        pairs = [(self._key(k), bytes(v)) for k, v in items.items()]
        batches = [pairs[i:i + bs] for i in range(0, len(pairs), bs)] if bs > 0 else [pairs]
        full = 0
        for b in batches:
            if not self._queue.offer(self._set_op(b, ttl), weight=len(b)):
                full += len(b)
        if full:
            self.skipped[(OP_SETMULTI, "async-buffer-full")] = self.skipped.get((OP_SETMULTI, "async-buffer-full"), 0) + full
            log.debug("failed to store items to redis because the async buffer is full",
                      extra={"cache": self.name, "items": full, "size": len(self._queue)})

    def _set_op(self, batch: list[tuple[str, bytes]], ttl: float):
        secs = max(1, math.ceil(ttl)) if ttl and ttl > 0 else None

        async def run() -> None:
            r = self._redis()
            async with r.pipeline(transaction=False) as p:
                for k, v in batch:
                    p.set(k, v, ex=secs)  # SET .. EX: Thanos' SETEX
                if self.config.write_timeout > 0:
                    async with asyncio.timeout(self.config.write_timeout + self.config.read_timeout):
                        res = await p.execute(raise_on_error=True)
                else:
                    res = await p.execute(raise_on_error=True)
            del res

        async def op() -> None:
            gate = self._set_gate
            if gate is None and self.config.max_set_multi_concurrency > 0:
                gate = self._set_gate = asyncio.Semaphore(self.config.max_set_multi_concurrency)
            if gate is not None:
                await gate.acquire()
            start = time.monotonic()
            try:
                await self._breaker.call(run)
            except asyncio.CancelledError:
                raise
            except CircuitOpenError as e:
                log.warning("circuit breaker disallows storing items in redis", extra={"cache": self.name, "err": str(e)})
                return
            except Exception as e:
                reason = self._fail(OP_SETMULTI, e)
                log.warning("failed to set multi items to redis",
                            extra={"cache": self.name, "items": len(batch), "reason": reason, "err": repr(e)})
                return
            finally:
                if gate is not None:
                    gate.release()
            self._dur[OP_SETMULTI].observe(time.monotonic() - start)

        return op

    async def flush(self) -> None:
        await self._queue.join()

    async def close(self) -> None:
        if self._closed:
            return
        await self._queue.close()
        self._closed = True
        c, self._client = self._client, None
        if c is not None:
            try:
                await c.aclose()
            except Exception as e:  # pragma: no cover - best effort
                log.debug("closing redis client failed", extra={"cache": self.name, "err": repr(e)})

    def __repr__(self) -> str:
        return f"RedisCache(name={self.name!r}, addr={self.config.addr!r}, db={self.config.db})"
