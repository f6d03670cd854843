"""Thanos' cache configuration YAML (``pkg/store/cache/factory.go``)::

    type: IN-MEMORY | MEMCACHED | REDIS      # case-insensitive
    config: {...}                            # the backend's own keys, defaults as Thanos'
    enabled_items: []                        # item types to cache (all when empty)
    ttl: 0s                                  # remote caches; 0 means 24h as in Thanos

:func:`parse_cache_config` checks it all without touching the network (a component's
``flags.py`` calls it so a bad file is a flag error); :func:`build_cache` makes the backend;
:func:`cache_from_config` does both. Every error is a :class:`pythanos.errors.ConfigError` (a
``UserError``) that names ``where`` (the flag or file) and the field. Unknown fields are errors,
as with Thanos' ``yaml.UnmarshalStrict`` at the top level (stricter inside ``config``, where Thanos
is lenient: a misspelt key there is otherwise silently a default).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

import yaml

from ..errors import ConfigError
from .base import Cache, CircuitBreakerConfig, parse_size
from .inmemory import DEFAULT_MAX_ITEM_SIZE, InMemoryCache
from .memcached import MemcachedCache, MemcachedConfig
from .rediscache import RedisCache, RedisConfig, RedisTLSConfig

from ..flags import parse_duration

__all__ = ["InMemoryConfig", "CacheConfig", "ConfiguredCache", "parse_cache_config", "build_cache",
           "cache_from_config", "DEFAULT_TTL", "INDEX_CACHE_ITEMS"]

DEFAULT_TTL = 24 * 3600.0  # memcachedDefaultTTL: what ttl 0 (or absent) means
INDEX_CACHE_ITEMS = ("Postings", "Series", "ExpandedPostings")  # the store's enabled_items
TYPES = ("IN-MEMORY", "MEMCACHED", "REDIS")


@dataclass(frozen=True)
class InMemoryConfig:
    max_size: int
    max_item_size: int = DEFAULT_MAX_ITEM_SIZE


BackendConfig = Union[InMemoryConfig, MemcachedConfig, RedisConfig]


@dataclass(frozen=True)
class CacheConfig:
    """The parsed document: ``type`` upper-cased, ``config`` one of the backend config classes."""

    type: str
    config: BackendConfig
    enabled_items: tuple[str, ...] = ()
    ttl: float = DEFAULT_TTL


@dataclass
class ConfiguredCache:
    """What :func:`cache_from_config` returns: the backend and the settings around it."""

    backend: Cache
    type: str
    enabled_items: tuple[str, ...]
    ttl: float

    def enabled(self, item: str) -> bool:
        """Whether ``item`` (e.g. ``"Postings"``) is cached: all are when ``enabled_items`` is empty."""
        return not self.enabled_items or item in self.enabled_items

    async def close(self) -> None:
        await self.backend.close()


# --- field readers ------------------------------------------------------------------------------------

class _Fields:
    """Reads typed fields out of one YAML mapping, naming ``where`` and the dotted path on errors."""

    def __init__(self, doc: Any, where: str, path: str) -> None:
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise ConfigError(f"{where}: {path or 'document'}: expected a mapping, got {_kind(doc)}")
        self.doc, self.where, self.path = doc, where, path

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.where}: {self.name(key)}: {msg}")

    def check_known(self, known: Iterable[str], what: str) -> None:
        known = list(known)
        for k in self.doc:
            if k not in known:
                raise self.err(str(k), f"unknown field for {what} (known: {', '.join(known)})")

    def has(self, key: str) -> bool:
        return self.doc.get(key) is not None

    def int(self, key: str, default: int, minimum: Optional[int] = 0) -> int:
        v = self.doc.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(key, f"expected an integer, got {v!r}")
        if minimum is not None and v < minimum:
            raise self.err(key, f"must be at least {minimum}, got {v}")
        return v

    def float(self, key: str, default: float) -> float:
        v = self.doc.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.err(key, f"expected a number, got {v!r}")
        return float(v)

    def bool(self, key: str, default: bool) -> bool:
        v = self.doc.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.err(key, f"expected true or false, got {v!r}")
        return v

    def str(self, key: str, default: str = "") -> str:
        v = self.doc.get(key)
        if v is None:
            return default
        if isinstance(v, (dict, list, bool)):
            raise self.err(key, f"expected a string, got {_kind(v)}")
        return str(v)

    def duration(self, key: str, default: float) -> float:
        v = self.doc.get(key)
        if v is None:
            return default
        if v == 0 and not isinstance(v, bool):
            return 0.0
        if not isinstance(v, str):
            raise self.err(key, f"invalid duration {v!r} (want e.g. 500ms, 10s, 24h)")
        try:
            d = parse_duration(v, f"{self.where}: {self.name(key)}")
        except Exception as e:  # UserError from the shared parser, already naming the field
            raise ConfigError(str(e)) from None
        return d

    def size(self, key: str, default: int) -> int:
        v = self.doc.get(key)
        if v is None:
            return default
        return parse_size(v, f"{self.where}: {self.name(key)}")

    def str_list(self, key: str) -> tuple[str, ...]:
        v = self.doc.get(key)
        if v is None:
            return ()
        if isinstance(v, str):
            raise self.err(key, f"expected a list of strings, got the string {v!r}")
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.err(key, f"expected a list of strings, got {v!r}")
        return tuple(v)

    def sub(self, key: str) -> "_Fields":
        return _Fields(self.doc.get(key), self.where, self.name(key))


def _kind(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(v), type(v).__name__)


def _circuit_breaker(f: _Fields) -> CircuitBreakerConfig:
    d = CircuitBreakerConfig()
    known = [x.name for x in dataclasses.fields(CircuitBreakerConfig)]
    f.check_known(known, "set_async_circuit_breaker_config")
    cb = CircuitBreakerConfig(
        enabled=f.bool("enabled", d.enabled),
        half_open_max_requests=f.int("half_open_max_requests", d.half_open_max_requests),
        open_duration=f.duration("open_duration", d.open_duration),
        min_requests=f.int("min_requests", d.min_requests),
        consecutive_failures=f.int("consecutive_failures", d.consecutive_failures),
        failure_percent=f.float("failure_percent", d.failure_percent))
    if cb.enabled:
        if cb.consecutive_failures == 0:
            raise f.err("consecutive_failures", "circuit breaker: consecutive failures must be greater than 0")
        if not 0 < cb.failure_percent <= 1:
            raise f.err("failure_percent", "circuit breaker: failure percent must be in range (0,1]")
    return cb


def _inmemory(f: _Fields, default_size: int) -> InMemoryConfig:
    f.check_known(("max_size", "max_item_size"), "IN-MEMORY")
    max_size = f.size("max_size", default_size)
    item_default = min(DEFAULT_MAX_ITEM_SIZE, max_size) if not f.has("max_item_size") else DEFAULT_MAX_ITEM_SIZE
    max_item = f.size("max_item_size", item_default)
    if max_item > max_size:
        raise f.err("max_item_size", f"max item size ({max_item} bytes) cannot be bigger than overall cache size "
                                     f"({max_size} bytes)")
    return InMemoryConfig(max_size=max_size, max_item_size=max_item)


def _memcached(f: _Fields) -> MemcachedConfig:
    d = MemcachedConfig()
    f.check_known([x.name for x in dataclasses.fields(MemcachedConfig)], "MEMCACHED")
    cfg = MemcachedConfig(
        addresses=f.str_list("addresses"),
        timeout=f.duration("timeout", d.timeout),
        max_idle_connections=f.int("max_idle_connections", d.max_idle_connections),
        max_async_concurrency=f.int("max_async_concurrency", d.max_async_concurrency),
        max_async_buffer_size=f.int("max_async_buffer_size", d.max_async_buffer_size),
        max_get_multi_concurrency=f.int("max_get_multi_concurrency", d.max_get_multi_concurrency),
        max_get_multi_batch_size=f.int("max_get_multi_batch_size", d.max_get_multi_batch_size),
        max_item_size=f.size("max_item_size", d.max_item_size),
        dns_provider_update_interval=f.duration("dns_provider_update_interval", d.dns_provider_update_interval),
        auto_discovery=f.bool("auto_discovery", d.auto_discovery),
        set_async_circuit_breaker_config=_circuit_breaker(f.sub("set_async_circuit_breaker_config")))
    problem = cfg.validate()
    if problem:
        key, _, msg = problem.partition(": ")
        raise f.err(key, msg)
    return cfg


def _redis(f: _Fields) -> RedisConfig:
    d = RedisConfig()
    f.check_known([x.name for x in dataclasses.fields(RedisConfig)], "REDIS")
    t = f.sub("tls_config")
    t.check_known([x.name for x in dataclasses.fields(RedisTLSConfig)], "tls_config")
    tls = RedisTLSConfig(ca_file=t.str("ca_file"), cert_file=t.str("cert_file"), key_file=t.str("key_file"),
                         server_name=t.str("server_name"), insecure_skip_verify=t.bool("insecure_skip_verify", False),
                         min_version=t.str("min_version"))
    cfg = RedisConfig(
        addr=f.str("addr"), prefix=f.str("prefix"), username=f.str("username"), password=f.str("password"),
        db=f.int("db", d.db),
        dial_timeout=f.duration("dial_timeout", d.dial_timeout),
        read_timeout=f.duration("read_timeout", d.read_timeout),
        write_timeout=f.duration("write_timeout", d.write_timeout),
        pool_size=f.int("pool_size", d.pool_size),
        min_idle_conns=f.int("min_idle_conns", d.min_idle_conns),
        idle_timeout=f.duration("idle_timeout", d.idle_timeout),
        max_conn_age=f.duration("max_conn_age", d.max_conn_age),
        max_get_multi_concurrency=f.int("max_get_multi_concurrency", d.max_get_multi_concurrency),
        get_multi_batch_size=f.int("get_multi_batch_size", d.get_multi_batch_size),
        max_set_multi_concurrency=f.int("max_set_multi_concurrency", d.max_set_multi_concurrency),
        set_multi_batch_size=f.int("set_multi_batch_size", d.set_multi_batch_size),
        tls_enabled=f.bool("tls_enabled", d.tls_enabled), tls_config=tls,
        cache_size=f.size("cache_size", d.cache_size),
        master_name=f.str("master_name"),
        max_async_buffer_size=f.int("max_async_buffer_size", d.max_async_buffer_size),
        max_async_concurrency=f.int("max_async_concurrency", d.max_async_concurrency),
        set_async_circuit_breaker_config=_circuit_breaker(f.sub("set_async_circuit_breaker_config")))
    problem = cfg.validate()
    if problem:
        key, _, msg = problem.partition(": ")
        raise f.err(key, msg)
    return cfg


# --- entry points ---------------------------------------------------------------------------------------

def parse_cache_config(text: str, where: str, default_in_memory_size: int, *,
                       valid_items: Optional[Iterable[str]] = None, default_ttl: float = DEFAULT_TTL) -> CacheConfig:
    """Parse and check a cache configuration document (no network). ``default_in_memory_size``
    is IN-MEMORY's ``max_size`` when the document has none; ``valid_items`` (e.g.
    :data:`INDEX_CACHE_ITEMS`) restricts ``enabled_items``; ``ttl`` 0 or absent means ``default_ttl``."""
    try:
        doc = yaml.safe_load(text or "")
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML: {e}") from None
    top = _Fields(doc, where, "")
    top.check_known(("type", "config", "enabled_items", "ttl"), "the cache configuration")
    raw_type = top.str("type")
    typ = raw_type.strip().upper()
    if typ not in TYPES:
        raise top.err("type", f"cache with type {raw_type!r} is not supported (want one of {', '.join(TYPES)})")
    items = top.str_list("enabled_items")
    if valid_items is not None:
        valid = list(valid_items)
        for it in items:
            if it not in valid:
                raise top.err("enabled_items", f"unsupported item type {it!r} (supported: {', '.join(valid)})")
    ttl = top.duration("ttl", 0.0) or default_ttl
    sub = top.sub("config")
    backend: BackendConfig
    if typ == "IN-MEMORY":
        backend = _inmemory(sub, default_in_memory_size)
    elif typ == "MEMCACHED":
        backend = _memcached(sub)
    else:
        backend = _redis(sub)
    return CacheConfig(type=typ, config=backend, enabled_items=items, ttl=ttl)


def build_cache(cfg: CacheConfig, *, name: str = "index-cache", registry=None) -> ConfiguredCache:
    """Make the backend of a parsed configuration (connections are opened on first use)."""
    c = cfg.config
    backend: Cache
    if isinstance(c, InMemoryConfig):
        backend = InMemoryCache(c.max_size, c.max_item_size, name=name, registry=registry)
    elif isinstance(c, MemcachedConfig):
        backend = MemcachedCache(c, name=name, registry=registry)
    else:
        backend = RedisCache(c, name=name, registry=registry)
    return ConfiguredCache(backend=backend, type=cfg.type, enabled_items=cfg.enabled_items, ttl=cfg.ttl)


def cache_from_config(text: str, where: str, default_in_memory_size: int, *, name: str = "index-cache",
                      registry=None, valid_items: Optional[Iterable[str]] = None,
                      default_ttl: float = DEFAULT_TTL) -> ConfiguredCache:
    """:func:`parse_cache_config` then :func:`build_cache`."""
    cfg = parse_cache_config(text, where, default_in_memory_size, valid_items=valid_items, default_ttl=default_ttl)
    return build_cache(cfg, name=name, registry=registry)
