"""The in-memory LRU cache (Thanos' ``pkg/cache/inmemory.go``), bounded by the bytes of keys and
values together.

Differences from Thanos, on purpose: a ``set`` of a key that is present replaces its value (Thanos
keeps the old one, which only suits immutable block data); sizes count the key's UTF-8 bytes as
well as the value's (Thanos bounds on values alone but reports both). A ``ttl > 0`` is honoured
as in ``pkg/cache`` (expired entries are dropped when read); the store's index cache, for which
Thanos ignores the TTL in memory, passes 0.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Optional

from .base import Cache, child, family, format_size

log = logging.getLogger("pythanos.cache")

DEFAULT_MAX_SIZE = 250 * 1024 * 1024
DEFAULT_MAX_ITEM_SIZE = 125 * 1024 * 1024


class InMemoryCache(Cache):
    """LRU over an ``OrderedDict``; every operation runs without awaiting, so it is atomic on the
    one asyncio loop (it is not meant to be shared between threads)."""

    def __init__(self, max_size_bytes: int = DEFAULT_MAX_SIZE, max_item_size_bytes: int = DEFAULT_MAX_ITEM_SIZE,
                 *, name: str = "inmemory", registry=None, clock=time.monotonic,
                 max_items: Optional[int] = None) -> None:
        if max_item_size_bytes > max_size_bytes:
            raise ValueError(f"max item size ({format_size(max_item_size_bytes)}) cannot be bigger than overall "
                             f"cache size ({format_size(max_size_bytes)})")
        self.name = name
        self.max_size_bytes = int(max_size_bytes)
        self.max_item_size_bytes = int(max_item_size_bytes)
        self.max_items = max_items  # the query frontend's max_size_items, besides the byte bound
        self._clock = clock
        # key -> (value, entry size, expiry or None)
        self._lru: "OrderedDict[str, tuple[bytes, int, Optional[float]]]" = OrderedDict()
        self.size_bytes = 0
        self.evicted = self.overflowed = self.added = 0
        m = {}
        for kind, metric, help_ in (
                ("counter", "thanos_cache_inmemory_items_evicted_total", "Total number of items that were evicted from the inmemory cache."),
                ("counter", "thanos_cache_inmemory_items_added_total", "Total number of items that were added to the inmemory cache."),
                ("counter", "thanos_cache_inmemory_requests_total", "Total number of requests to the inmemory cache."),
                ("counter", "thanos_cache_inmemory_hits_on_expired_data_total", "Total number of requests to the inmemory cache that were a hit but needed to be evicted due to TTL."),
                ("counter", "thanos_cache_inmemory_items_overflowed_total", "Total number of items that could not be added to the inmemory cache due to being too big."),
                ("counter", "thanos_cache_inmemory_hits_total", "Total number of requests to the inmemory cache that were a hit."),
                ("gauge", "thanos_cache_inmemory_items", "Current number of items in the inmemory cache."),
                ("gauge", "thanos_cache_inmemory_total_size_bytes", "Current number of bytes used by the inmemory cache (keys and values)."),
                ("gauge", "thanos_cache_inmemory_max_size_bytes", "Maximum number of bytes to be held in the inmemory cache."),
                ("gauge", "thanos_cache_inmemory_max_item_size_bytes", "Maximum number of bytes for single entry to be held in the inmemory cache.")):
            m[metric.removeprefix("thanos_cache_inmemory_")] = child(family(registry, kind, metric, help_), name)
        self._m = m
        m["max_size_bytes"].set(self.max_size_bytes)
        m["max_item_size_bytes"].set(self.max_item_size_bytes)

    def __len__(self) -> int:
        return len(self._lru)

    async def get_multi(self, keys: list[str]) -> dict[str, bytes]:
        return self.get_multi_sync(keys)

    def get_multi_sync(self, keys: list[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        now = None
        lru = self._lru
        get, touch = lru.get, lru.move_to_end
        for k in keys:
            e = get(k)
            if e is None:
                continue
            if e[2] is not None:
                now = self._clock() if now is None else now
                if now >= e[2]:
                    self._m["hits_on_expired_data_total"].inc()
                    self._remove(k)
                    continue
            touch(k)
            out[k] = e[0]
        # counted once per call: a metric update per key costs more than the lookup
        self._m["requests_total"].inc(len(keys))
        self._m["hits_total"].inc(len(out))
        return out

    async def set_multi(self, items: dict[str, bytes], ttl: float) -> None:
        self.set_multi_sync(items, ttl)

    def set_multi_sync(self, items: dict[str, bytes], ttl: float) -> None:
        expiry = self._clock() + ttl if ttl and ttl > 0 else None
        added = 0
        for k, v in items.items():
            size = len(k.encode()) + len(v)
            if size > self.max_item_size_bytes:
                self.overflowed += 1
                self._m["items_overflowed_total"].inc()
                log.debug("item bigger than max item size, ignoring",
                          extra={"cache": self.name, "maxItemSizeBytes": self.max_item_size_bytes, "itemSize": size})
                continue
            if k in self._lru:
                self._remove(k)
            while self._lru and (self.size_bytes + size > self.max_size_bytes
                                 or (self.max_items is not None and len(self._lru) >= self.max_items)):
                old, _ = next(iter(self._lru.items()))
                self._remove(old)
                self.evicted += 1
                self._m["items_evicted_total"].inc()
            self._lru[k] = (bytes(v), size, expiry)
            self.size_bytes += size
            self.added += 1
            added += 1
        self._m["items_added_total"].inc(added)
        self._m["items"].set(len(self._lru))
        self._m["total_size_bytes"].set(self.size_bytes)

    def _remove(self, k: str) -> None:
        e = self._lru.pop(k)
        self.size_bytes -= e[1]

    async def close(self) -> None:
        self._lru.clear()
        self.size_bytes = 0
        self._m["items"].set(0)
        self._m["total_size_bytes"].set(0)

    def __repr__(self) -> str:
        return (f"InMemoryCache(name={self.name!r}, max_size={format_size(self.max_size_bytes)}, "
                f"max_item_size={format_size(self.max_item_size_bytes)})")
