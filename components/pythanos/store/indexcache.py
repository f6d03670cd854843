"""The store gateway's index cache: postings lists and series entries of every block, kept in an
IN-MEMORY, MEMCACHED or REDIS :class:`~pythanos.cache.Cache` (``--index-cache.config``, or an
in-memory cache of ``--index-cache-size``).

Block readers run in worker threads; the cache backends live on the event loop, so
:class:`BlockIndexCache` (one per block, what :class:`~pythanos.tsdb.index.IndexReader` calls)
hands each lookup to the loop and waits for it. A cache that fails or times out is a miss.

Keys are Thanos' (``P:<block>:<blake2b-256 of name:value, base64url>``, ``S:<block>:<ref>``) under
a ``pythanos:`` prefix: the values are our own encoding (big-endian uint32 postings, raw series
entries), so a memcached shared with Thanos stores must not hand theirs to us or ours to them.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
from typing import Optional

log = logging.getLogger(__name__)

__all__ = ["IndexCache", "BlockIndexCache"]

_WAIT = 10.0  # seconds a reader waits for the cache before treating the lookup as a miss


class IndexCache:
    """Shared by all blocks: the backend, its enabled items, metrics."""

    def __init__(self, configured, loop: asyncio.AbstractEventLoop, registry=None) -> None:
        self.backend = configured.backend
        self.ttl = configured.ttl if configured.type != "IN-MEMORY" else 0.0
        self.items = set(configured.enabled_items) or {"Postings", "Series", "ExpandedPostings"}
        self.loop = loop
        self.metrics = _Metrics(registry) if registry is not None else None
        # the in-memory backend is called from the reader threads directly (under this lock)
        # instead of through the event loop, which has the answers to write meanwhile
        self._direct = getattr(self.backend, "get_multi_sync", None) is not None
        self._lock = threading.Lock()

    def for_block(self, ulid: str) -> "BlockIndexCache":
        return BlockIndexCache(self, ulid)

    def _run(self, coro):
        """Run ``coro`` on the loop from a reader thread (never call it on the loop's own thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(_WAIT)

    def get(self, item: str, keys: list[str]) -> dict[str, bytes]:
        if item not in self.items or not keys:
            return {}
        try:
            if self._direct:
                with self._lock:
                    hits = self.backend.get_multi_sync(keys)
            else:
                hits = self._run(self.backend.get_multi(keys))
        except Exception as e:  # noqa: BLE001
            log.debug("index cache lookup failed", extra={"err": str(e)})
            hits = {}
        if self.metrics:
            self.metrics.requests.labels(item).inc(len(keys))
            self.metrics.hits.labels(item).inc(len(hits))
        return hits

    def put(self, item: str, items: dict[str, bytes]) -> None:
        if item not in self.items or not items:
            return
        try:
            if self._direct:
                with self._lock:
                    self.backend.set_multi_sync(items, self.ttl)
            else:
                self._run(self.backend.set_multi(items, self.ttl))
        except Exception as e:  # noqa: BLE001
            log.debug("index cache store failed", extra={"err": str(e)})
        if self.metrics:
            self.metrics.added.labels(item).inc(len(items))

    async def close(self) -> None:
        await self.backend.close()


def postings_key(ulid: str, name: str, value: str) -> str:
    h = hashlib.blake2b(f"{name}:{value}".encode("utf-8", "surrogateescape"), digest_size=32).digest()
    return f"pythanos:P:{ulid}:{base64.urlsafe_b64encode(h).rstrip(b'=').decode()}"


class BlockIndexCache:
    """The :class:`~pythanos.tsdb.index.IndexCache` of one block."""

    def __init__(self, shared: IndexCache, ulid: str) -> None:
        self.shared = shared
        self.ulid = ulid

    def get_postings(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        names = {postings_key(self.ulid, n, v): (n, v) for n, v in keys}
        return {names[k]: b for k, b in self.shared.get("Postings", list(names)).items() if k in names}

    def put_postings(self, items: dict[tuple[str, str], bytes]) -> None:
        self.shared.put("Postings", {postings_key(self.ulid, n, v): b for (n, v), b in items.items()})

    def get_series_pages(self, pages: list[int]) -> dict[int, bytes]:
        keys = {f"pythanos:SP:{self.ulid}:{p}": p for p in pages}
        return {keys[k]: b for k, b in self.shared.get("Series", list(keys)).items() if k in keys}

    def put_series_pages(self, items: dict[int, bytes]) -> None:
        self.shared.put("Series", {f"pythanos:SP:{self.ulid}:{p}": b for p, b in items.items()})


class _Metrics:
    def __init__(self, registry) -> None:
        from prometheus_client import Counter

        self.requests = Counter("thanos_store_index_cache_requests", "Total number of items requests to the cache.",
                                ["item_type"], registry=registry)
        self.hits = Counter("thanos_store_index_cache_hits", "Total number of items requests to the cache that "
                            "were a hit.", ["item_type"], registry=registry)
        self.added = Counter("thanos_store_index_cache_items_added", "Total number of items that were added to "
                             "the index cache.", ["item_type"], registry=registry)


def build(config: Optional[object], default_size: int, loop, registry=None) -> IndexCache:
    """The index cache of ``--index-cache.config`` (parsed) or an in-memory one of ``default_size``."""
    from ..cache import build_cache, parse_cache_config

    if config is None:
        config = parse_cache_config("type: IN-MEMORY", "--index-cache-size", default_size)
    return IndexCache(build_cache(config, name="index-cache"), loop, registry=registry)
