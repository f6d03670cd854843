"""A memcached cache with Thanos' memcached client configuration (``pkg/cacheutil/memcached_client.go``).

Client library: ``emcache`` (PyPI ``emcache``, MIT, maintained; binary wheels for CPython 3.8-3.14).
Chosen over the alternatives because it is asyncio-native *and* handles timeouts safely:

* ``aiomcache`` has no operation timeout of its own, and when an operation is cancelled (as
  ``asyncio.wait_for`` does on timeout) its pool takes the connection back with the unread rest
  of the response still in the socket (its ``acquire`` wrapper only marks a connection bad on
  ``Exception``, and ``CancelledError`` is not one), so the next command on that connection reads
  a stale answer. A 500ms timeout is the normal case for a cache, so that is disqualifying.
* ``pymemcache`` is solid but blocking: every batch would hold a thread of a pool for up to the
  timeout, against the one-event-loop design.
* ``emcache`` has per-operation timeouts that close the connection they interrupted, a bounded
  connection pool per node (min/max, idle purge), connection timeouts and node health tracking.

Server selection is Thanos' own (``MemcachedJumpHashSelector``), not emcache's rendezvous hashing:
addresses are put in natural sort order and a key goes to ``jump_hash(xxhash64(key), n)``
(``xxhash`` from PyPI), so a pythanos store and a Thanos store sharing one memcached pool put
every key on the same server. Each server gets its own single-node emcache client.

Behaviour as in Thanos: ``get_multi`` splits keys per server and into batches of
``max_get_multi_batch_size`` (0: one batch per server), at most ``max_get_multi_concurrency`` in
flight; writes are queued (``max_async_buffer_size``) and run by ``max_async_concurrency`` workers,
one ``set`` per key, items above ``max_item_size`` skipped; failures are logged at debug (gets
at warn) and counted in ``thanos_memcached_operation_failures_total{operation, reason}``; a server
that is down yields misses, never exceptions.

Connections: ``timeout`` bounds each operation and each dial (0 means gomemcache's 500ms);
``max_idle_connections`` caps emcache's pool per server (gomemcache keeps that many idle and
dials more on demand; emcache makes callers wait for one of its connections instead).

Metrics (Thanos' names, const label ``name``): ``thanos_memcached_operations_total{operation}``,
``thanos_memcached_operation_failures_total{operation, reason}``,
``thanos_memcached_operation_skipped_total{operation, reason}``,
``thanos_memcached_operation_duration_seconds{operation}``,
``thanos_memcached_operation_data_size_bytes{operation}`` (client level, ``pkg/cacheutil``) and
``thanos_cache_memcached_requests_total``, ``thanos_cache_memcached_hits_total`` (``pkg/cache``).

Differences: keys memcached cannot take (over 250 bytes, or with spaces, control or non-ASCII
characters) are sent as ``pythanos-sha256:<hex of sha256(key)>`` instead of failing as malformed;
the expiry is sent relative (seconds) up to 30 days, so client and server clocks need not agree;
``ttl <= 0`` stores without expiry. Addresses: ``host:port`` and ``dns+host:port`` (A/AAAA lookups,
repeated every ``dns_provider_update_interval``); ``dnssrv+``/``dnssrvnoa+`` and
``auto_discovery: true`` are rejected with a clear error for now. emcache backs off reconnecting
to a dead server (up to 60 s); so that a server coming back is used again promptly, a node that
emcache has marked unhealthy (after three failed reconnects, ~3 s; until then each request waits
out ``timeout``) is skipped at once (misses, reason ``network-error``) and its client is rebuilt
on the next ``dns_provider_update_interval`` tick, which also bounds emcache's retry chain.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Optional

from .base import AsyncQueue, Cache, CircuitBreaker, CircuitBreakerConfig, CircuitOpenError, child, family, format_size

log = logging.getLogger("pythanos.cache")

OP_SET, OP_GETMULTI = "set", "getmulti"
R_MAX_ITEM_SIZE, R_BUFFER_FULL = "max-item-size", "async-buffer-full"
R_MALFORMED, R_TIMEOUT, R_SERVER, R_NETWORK, R_OTHER = "malformed-key", "timeout", "server-error", "network-error", "other"
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 3, 6, 10)
_SIZE_BUCKETS = (32, 256, 512, 1024, 32 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024, 32 * 1024 * 1024,
                 256 * 1024 * 1024, 512 * 1024 * 1024)
MAX_RELATIVE_EXPIRY = 30 * 24 * 3600


@dataclass(frozen=True)
class MemcachedConfig:
    """Thanos' ``MemcachedClientConfig`` with its defaults (durations in seconds, sizes in bytes)."""

    addresses: tuple[str, ...] = ()
    timeout: float = 0.5
    max_idle_connections: int = 100
    max_async_concurrency: int = 20
    max_async_buffer_size: int = 10000
    max_get_multi_concurrency: int = 100
    max_get_multi_batch_size: int = 0
    max_item_size: int = 1024 * 1024
    dns_provider_update_interval: float = 10.0
    auto_discovery: bool = False
    set_async_circuit_breaker_config: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)

    def validate(self) -> Optional[str]:
        """The first problem, as ``(field, message)`` text, or None (Thanos' ``validate``)."""
        if not self.addresses:
            return "addresses: no memcached addresses provided"
        for a in self.addresses:
            if a.startswith(("dnssrv+", "dnssrvnoa+")):
                return (f"addresses: {a!r}: SRV discovery (dnssrv+/dnssrvnoa+) is not supported for memcached "
                        "yet; list the servers as host:port or dns+host:port")
            rest = a.removeprefix("dns+")
            host, sep, port = rest.rpartition(":")
            if "/" in rest:
                return f"addresses: {a!r}: unix sockets are not supported"
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                return f"addresses: {a!r} is not host:port"
        if self.auto_discovery:
            return "auto_discovery: memcached auto-discovery (config get cluster) is not supported yet"
        if self.dns_provider_update_interval <= 0:
            return "dns_provider_update_interval: DNS provider update interval must be positive"
        if self.max_async_concurrency <= 0:
            return "max_async_concurrency: max async concurrency must be positive"
        if self.timeout < 0:
            return "timeout: must not be negative"
        return None


# --- server selection: Thanos' MemcachedJumpHashSelector ---------------------------------------------

def jump_hash(key: int, num_buckets: int) -> int:
    """Lamping & Veach's jump consistent hash, bit for bit as Thanos' ``jumpHash`` (float64 maths)."""
    b, j = -1, 0
    while j < num_buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int(float(b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def natsort_key(s: str) -> list:
    """Natural order (facette/natsort): ``memcached-2`` before ``memcached-10``."""
    return [(0, int(p), p) if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", s) if p != ""]


def pick_server(servers: list[str], key: str) -> str:
    """The server (of an already natural-sorted list) Thanos would pick for ``key``."""
    import xxhash

    if len(servers) == 1:
        return servers[0]
    return servers[jump_hash(xxhash.xxh64_intdigest(key.encode()), len(servers))]


_VALID_KEY = re.compile(rb"[\x21-\x7e]{1,250}")


def memcached_key(key: str) -> str:
    """``key`` itself when memcached accepts it as is (1-250 printable ASCII bytes, no space),
    else ``pythanos-sha256:<hex>`` of its UTF-8 bytes (deterministic, 80 bytes)."""
    b = key.encode("utf-8", "surrogatepass")
    if _VALID_KEY.fullmatch(b):
        return key
    return "pythanos-sha256:" + hashlib.sha256(b).hexdigest()


def _reason(e: BaseException) -> str:
    import emcache

    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return R_TIMEOUT
    if isinstance(e, ValueError):
        return R_MALFORMED
    if isinstance(e, emcache.CommandError):
        return R_SERVER
    if isinstance(e, (OSError, ConnectionError, emcache.ClusterNoAvailableNodes, _NodeDown)):
        return R_NETWORK
    return R_OTHER


class _NodeDown(Exception):
    pass


class MemcachedCache(Cache):
    """Memcached through emcache; see the module docstring. Build it with a :class:`MemcachedConfig`."""

    def __init__(self, config: MemcachedConfig, *, name: str = "memcached", registry=None) -> None:
        problem = config.validate()
        if problem:
            raise ValueError(problem)
        self.config = config
        self.name = name
        self._timeout = config.timeout or 0.5  # gomemcache: 0 means its DefaultTimeout (500ms)
        self._servers: list[str] = []
        self._clients: dict[str, object] = {}
        self._resolved_at = -math.inf
        self._refresh_task: Optional[asyncio.Task] = None
        self._get_gate: Optional[asyncio.Semaphore] = None
        self._queue = AsyncQueue(config.max_async_buffer_size, config.max_async_concurrency, f"memcached-{name}")
        self._breaker = CircuitBreaker(config.set_async_circuit_breaker_config)
        self._closed = False
        self._dns_cache: dict[str, list[str]] = {}
        self._init_metrics(registry)
        static = [a for a in config.addresses if not a.startswith("dns+")]
        if len(static) == len(config.addresses):
            self._set_servers(static)

    # metrics ----------------------------------------------------------------------------------

    def _init_metrics(self, registry) -> None:
        n = self.name
        ops = family(registry, "counter", "thanos_memcached_operations_total",
                     "Total number of operations against memcached.", ("operation",))
        fails = family(registry, "counter", "thanos_memcached_operation_failures_total",
                       "Total number of operations against memcached that failed.", ("operation", "reason"))
        skipped = family(registry, "counter", "thanos_memcached_operation_skipped_total",
                         "Total number of operations against memcached that have been skipped.", ("operation", "reason"))
        dur = family(registry, "histogram", "thanos_memcached_operation_duration_seconds",
                     "Duration of operations against memcached.", ("operation",), buckets=_DURATION_BUCKETS)
        size = family(registry, "histogram", "thanos_memcached_operation_data_size_bytes",
                      "Tracks the size of the data stored in and fetched from memcached.", ("operation",),
                      buckets=_SIZE_BUCKETS)
        req = family(registry, "counter", "thanos_cache_memcached_requests_total",
                     "Total number of items requests to memcached.")
        hits = family(registry, "counter", "thanos_cache_memcached_hits_total",
                      "Total number of items requests to the cache that were a hit.")
        self._ops = {op: child(ops, n, op) for op in (OP_GETMULTI, OP_SET)}
        self._fails = {(op, r): child(fails, n, op, r) for op in (OP_GETMULTI, OP_SET)
                       for r in (R_TIMEOUT, R_MALFORMED, R_SERVER, R_NETWORK, R_OTHER)}
        self._skipped = {k: child(skipped, n, *k) for k in ((OP_GETMULTI, R_MAX_ITEM_SIZE), (OP_SET, R_MAX_ITEM_SIZE),
                                                            (OP_SET, R_BUFFER_FULL))}
        self._dur = {op: child(dur, n, op) for op in (OP_GETMULTI, OP_SET)}
        self._size = {op: child(size, n, op) for op in (OP_GETMULTI, OP_SET)}
        self._requests, self._hits = child(req, n), child(hits, n)
        # plain counters as well, for tests and for callers without a registry
        self.failures: dict[tuple[str, str], int] = {}
        self.skipped: dict[tuple[str, str], int] = {}

    def _fail(self, op: str, e: BaseException) -> str:
        r = _reason(e)
        self._fails[(op, r)].inc()
        self.failures[(op, r)] = self.failures.get((op, r), 0) + 1
        return r

    def _skip(self, op: str, reason: str) -> None:
        self._skipped[(op, reason)].inc()
        self.skipped[(op, reason)] = self.skipped.get((op, reason), 0) + 1

    # servers ----------------------------------------------------------------------------------

    @property
    def servers(self) -> list[str]:
        return list(self._servers)

    def _set_servers(self, servers: list[str]) -> None:
        self._servers = sorted(dict.fromkeys(servers), key=natsort_key)

    async def _resolve(self) -> None:
        """(Re)resolve ``dns+`` addresses; a failed lookup keeps the last answer (as Thanos does)."""
        out: list[str] = []
        loop = asyncio.get_running_loop()
        for a in self.config.addresses:
            if not a.startswith("dns+"):
                out.append(a)
                continue
            host, _, port = a[4:].rpartition(":")
            try:
                infos = await loop.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
            except OSError as e:
                log.error("failed to resolve addresses for memcached", extra={"cache": self.name, "address": a, "err": str(e)})
                out.extend(s for s in self._servers if s in self._dns_cache.get(a, ()))
                continue
            got = []
            for fam, _t, _p, _c, sa in infos:
                got.append(f"[{sa[0]}]:{sa[1]}" if fam == socket.AF_INET6 else f"{sa[0]}:{sa[1]}")
            got = list(dict.fromkeys(got))
            self._dns_cache[a] = got
            out.extend(got)
        if out:
            self._set_servers(out)
        elif not self._servers:
            log.warning("no server address resolved for memcached", extra={"cache": self.name})

    async def _ensure_started(self) -> None:
        if self._refresh_task is None and not self._closed:
            if any(a.startswith("dns+") for a in self.config.addresses):
                await self._resolve()
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_loop(),
                                                                        name=f"memcached-{self.name}-refresh")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.dns_provider_update_interval)
            try:
                await self._refresh_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("failed update memcached servers list", extra={"cache": self.name, "err": repr(e)})

    async def _refresh_once(self) -> None:
        if any(a.startswith("dns+") for a in self.config.addresses):
            await self._resolve()
        for addr, c in list(self._clients.items()):
            if addr not in self._servers or self._unhealthy(c):
                # gone from DNS, or emcache is backing off reconnecting: start afresh
                del self._clients[addr]
                await self._close_client(c)

    @staticmethod
    def _unhealthy(client) -> bool:
        return bool(client.cluster_managment().unhealthy_nodes())

    async def _client(self, addr: str):
        c = self._clients.get(addr)
        if c is not None:
            return c
        import emcache

        host, _, port = addr.rpartition(":")
        c = await emcache.create_client(
            [emcache.MemcachedHostAddress(host.strip("[]"), int(port))],
            timeout=self._timeout, connection_timeout=self._timeout,
            max_connections=max(1, self.config.max_idle_connections), min_connections=1)
        if addr in self._clients or self._closed:  # lost a race with another task, or closed meanwhile
            await self._close_client(c)
            if self._closed:
                raise _NodeDown("cache is closed")
            return self._clients[addr]
        self._clients[addr] = c
        return c

    @staticmethod
    async def _close_client(c) -> None:
        try:
            await c.close()
        except Exception as e:  # pragma: no cover - best effort
            log.debug("closing memcached client failed", extra={"err": repr(e)})

    # reads ------------------------------------------------------------------------------------

    async def get_multi(self, keys: list[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        self._requests.inc(len(keys))
        if self._closed:
            return {}
        await self._ensure_started()
        if not self._servers:
            return {}
        wire: dict[str, list[str]] = {}
        for k in keys:
            wire.setdefault(memcached_key(k), []).append(k)
        by_server: dict[str, list[str]] = {}
        for w in wire:
            by_server.setdefault(pick_server(self._servers, w), []).append(w)
        bs = self.config.max_get_multi_batch_size
        batches = [(srv, ks[i:i + bs] if bs > 0 else ks)
                   for srv, ks in by_server.items() for i in range(0, len(ks), bs if bs > 0 else len(ks))]
        if self.config.max_get_multi_concurrency > 0 and self._get_gate is None:
            self._get_gate = asyncio.Semaphore(self.config.max_get_multi_concurrency)
        results = await asyncio.gather(*(self._get_batch(srv, ks) for srv, ks in batches))
        hits: dict[str, bytes] = {}
        errors = [r for r in results if isinstance(r, BaseException)]
        for r in results:
            if isinstance(r, dict):
                for w, v in r.items():
                    for k in wire.get(w, ()):
                        hits[k] = v
        if errors:
            log.warning("failed to fetch items from memcached",
                        extra={"cache": self.name, "numKeys": len(keys), "firstKey": keys[0], "err": repr(errors[-1])})
        self._hits.inc(len(hits))
        return hits

    async def _get_batch(self, server: str, keys: list[str]):
        gate = self._get_gate
        if gate is not None:
            await gate.acquire()
        try:
            start = time.monotonic()
            self._ops[OP_GETMULTI].inc()
            try:
                c = await self._client(server)
                if self._unhealthy(c):
                    raise _NodeDown(f"memcached server {server} is unreachable (reconnecting)")
                items = await c.get_many([k.encode() for k in keys])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                r = self._fail(OP_GETMULTI, e)
                log.debug("failed to get multiple items from memcached",
                          extra={"cache": self.name, "server": server, "reason": r, "err": repr(e)})
                return e
            out = {k.decode(): it.value for k, it in items.items()}
            self._size[OP_GETMULTI].observe(sum(len(v) for v in out.values()))
            self._dur[OP_GETMULTI].observe(time.monotonic() - start)
            return out
        finally:
            if gate is not None:
                gate.release()

    # writes -----------------------------------------------------------------------------------

    async def set_multi(self, items: dict[str, bytes], ttl: float) -> None:
        if self._closed:
            return
        await self._ensure_started()
        full = 0
        for k, v in items.items():
            if self.config.max_item_size > 0 and len(v) > self.config.max_item_size:
                self._skip(OP_SET, R_MAX_ITEM_SIZE)
                continue
            if not self._queue.offer(self._set_op(k, bytes(v), ttl)):
                self._skip(OP_SET, R_BUFFER_FULL)
                full += 1
        if full:
            log.debug("failed to store items to memcached because the async buffer is full",
                      extra={"cache": self.name, "items": full, "size": len(self._queue)})

    def _set_op(self, key: str, value: bytes, ttl: float):
        async def op() -> None:
            start = time.monotonic()
            self._ops[OP_SET].inc()
            server = ""
            try:
                w = memcached_key(key)
                if not self._servers:
                    raise _NodeDown("no memcached server resolved")
                server = pick_server(self._servers, w)
                c = await self._client(server)
                if self._unhealthy(c):
                    raise _NodeDown(f"memcached server {server} is unreachable (reconnecting)")
                await self._breaker.call(lambda: c.set(w.encode(), value, exptime=_exptime(ttl)))
            except asyncio.CancelledError:
                raise
            except CircuitOpenError as e:
                log.warning("circuit breaker disallows storing item in memcached", extra={"cache": self.name, "key": key, "err": str(e)})
                return
            except Exception as e:
                r = self._fail(OP_SET, e)
                log.debug("failed to store item to memcached", extra={"cache": self.name, "key": key, "sizeBytes": len(value),
                                                                       "server": server, "reason": r, "err": repr(e)})
                return
            self._size[OP_SET].observe(len(value))
            self._dur[OP_SET].observe(time.monotonic() - start)

        return op

    async def flush(self) -> None:
        await self._queue.join()

    async def close(self) -> None:
        if self._closed:
            return
        await self._queue.close()
        self._closed = True
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            await asyncio.gather(self._refresh_task, return_exceptions=True)
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await self._close_client(c)

    def __repr__(self) -> str:
        return (f"MemcachedCache(name={self.name!r}, addresses={list(self.config.addresses)!r}, "
                f"timeout={self._timeout}s, max_item_size={format_size(self.config.max_item_size)})")


def _exptime(ttl: float) -> int:
    """memcached's exptime: 0 = never; up to 30 days relative seconds; beyond, an absolute time."""
    if not ttl or ttl <= 0:
        return 0
    secs = max(1, math.ceil(ttl))
    return secs if secs <= MAX_RELATIVE_EXPIRY else int(time.time()) + secs
