"""Caches for the store gateway's index cache (and later the query frontend's results cache).

One interface, :class:`Cache` (``get_multi`` returns hits only; ``set_multi`` is best effort and
never raises; ``flush`` waits for queued writes; ``close``), three backends with Thanos'
configuration keys and defaults:

* :class:`InMemoryCache` - an LRU bounded by the bytes of keys and values (``inmemory.py``);
* :class:`MemcachedCache` - memcached through ``emcache``, Thanos' jump-hash server selection
  (``memcached.py``; the module docstring says why that client);
* :class:`RedisCache` - Redis through ``redis.asyncio`` (``rediscache.py``);

and :func:`cache_from_config` reading Thanos' ``{type, config, enabled_items, ttl}`` YAML
(``config.py``). Metrics carry Thanos' names, labelled ``name`` by cache, on the
prometheus_client registry passed in (none without one).
"""
from __future__ import annotations

from .base import Cache, CircuitBreakerConfig, format_size, parse_size
from .config import (DEFAULT_TTL, INDEX_CACHE_ITEMS, CacheConfig, ConfiguredCache, InMemoryConfig, build_cache,
                     cache_from_config, parse_cache_config)
from .inmemory import InMemoryCache
from .memcached import MemcachedCache, MemcachedConfig, jump_hash, memcached_key, pick_server
from .rediscache import RedisCache, RedisConfig, RedisTLSConfig

__all__ = ["Cache", "InMemoryCache", "MemcachedCache", "MemcachedConfig", "RedisCache", "RedisConfig",
           "RedisTLSConfig", "CircuitBreakerConfig", "cache_from_config", "parse_cache_config", "build_cache",
           "CacheConfig", "ConfiguredCache", "InMemoryConfig", "DEFAULT_TTL", "INDEX_CACHE_ITEMS", "parse_size",
           "format_size", "jump_hash", "memcached_key", "pick_server"]
