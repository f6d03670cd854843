"""Block discovery as Thanos' ``BaseFetcher`` + ``MetaFetcher`` do it (``pkg/block/fetcher.go``).

One :meth:`MetaFetcher.fetch` lists the bucket's top level, keeps names that are ULIDs, reads
every block's ``meta.json`` (from the local cache ``<dir>/meta-syncer/<ULID>/meta.json`` when
there: metas never change) with bounded concurrency, then runs the filters in order. Blocks
without ``meta.json`` are *partial* (an upload in progress or aborted) and left out; a meta that
does not parse is *corrupted*, reported and left out; the rest of the bucket is served either way.
A bucket that cannot be listed raises (the caller keeps its previous view).

``thanos_blocks_meta_synced{state}`` counts the outcome of the last sync with Thanos' state names.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

from ..objstore import is_obj_not_found
from ..tsdb import ulid as _ulid
from ..tsdb.meta import (DELETION_MARK_FILENAME, META_FILENAME, BlockMeta, InvalidMetaError, marker_from_json)

log = logging.getLogger(__name__)

__all__ = ["BLOCK_ID_LABEL", "FetchResult", "MetaFetcher", "MetaFilter", "TimePartitionFilter", "LabelShardFilter",
           "ConsistencyDelayFilter", "IgnoreDeletionMarkFilter", "DeduplicateFilter", "ReplicaLabelRemover"]

BLOCK_ID_LABEL = "__block_id"

# Thanos' state names (``thanos_blocks_meta_synced{state}``)
CORRUPTED_META = "corrupted-meta-json"
NO_META = "no-meta-json"
LOADED = "loaded"
FAILED = "failed"
LABEL_EXCLUDED = "label-excluded"
TIME_EXCLUDED = "time-excluded"
TOO_FRESH = "too-fresh"
DUPLICATE = "duplicate"
MARKED_FOR_DELETION = "marked-for-deletion"
STATES = (CORRUPTED_META, NO_META, LOADED, FAILED, LABEL_EXCLUDED, TIME_EXCLUDED, TOO_FRESH, DUPLICATE,
          MARKED_FOR_DELETION, "marked-for-no-compact", "marked-for-no-downsample", "parquet-migrated")

# sources whose blocks are complete the moment they appear (no consistency delay)
_TRUSTED_SOURCES = {"compactor", "compactor.repair", "bucket.repair"}


@dataclass
class FetchResult:
    """The view of one sync: usable metas, and what was left out and why."""

    metas: dict[str, BlockMeta] = field(default_factory=dict)
    partial: dict[str, str] = field(default_factory=dict)     # no meta.json
    corrupted: dict[str, str] = field(default_factory=dict)   # meta.json unusable
    failed: dict[str, str] = field(default_factory=dict)      # could not be read (bucket error)
    filtered: dict[str, str] = field(default_factory=dict)    # ULID -> state that removed it
    deletion_marked: set[str] = field(default_factory=set)    # every block with a deletion mark


class MetaFilter(Protocol):
    def filter(self, metas: dict[str, BlockMeta], result: FetchResult, fetcher: "MetaFetcher") -> None:
        """Remove metas in place, recording ``result.filtered[ulid] = state``."""


class TimePartitionFilter:
    """``--min-time`` / ``--max-time``: keep blocks overlapping [min, max] (both inclusive, as Thanos)."""

    def __init__(self, min_time, max_time) -> None:
        self.min_time, self.max_time = min_time, max_time

    def filter(self, metas, result, fetcher) -> None:
        lo, hi = self.min_time.timestamp_ms(), self.max_time.timestamp_ms()
        for u, m in list(metas.items()):
            if not (m.max_time >= lo and m.min_time <= hi):
                del metas[u]
                result.filtered[u] = TIME_EXCLUDED


class LabelShardFilter:
    """``--selector.relabel-config``: relabel ``{external labels..., __block_id}``; an empty result drops the block."""

    def __init__(self, configs: Sequence, dedup_replica_labels: Sequence[str] = ()) -> None:
        self.configs = list(configs)
        self.skip = set(dedup_replica_labels)

    def filter(self, metas, result, fetcher) -> None:
        if not self.configs:
            return
        from ..relabel import process

        for u, m in list(metas.items()):
            lbls = {k: v for k, v in m.labels.items() if k not in self.skip}
            lbls[BLOCK_ID_LABEL] = u
            if not process(lbls, self.configs):
                del metas[u]
                result.filtered[u] = LABEL_EXCLUDED


class ConsistencyDelayFilter:
    """Hide blocks younger than the delay (by upload time, else ULID time) unless a compactor made them."""

    def __init__(self, delay_s: float, now: Callable[[], float] = time.time) -> None:
        self.delay_ms = int(delay_s * 1000)
        self.now = now

    def filter(self, metas, result, fetcher) -> None:
        if self.delay_ms <= 0:
            return
        now_ms = int(self.now() * 1000)
        for u, m in list(metas.items()):
            born = _upload_ms(m)
            if born is None:
                born = _ulid.timestamp_ms(u)
            source = m.thanos.source if m.thanos else ""
            if now_ms - born < self.delay_ms and source not in _TRUSTED_SOURCES:
                del metas[u]
                result.filtered[u] = TOO_FRESH


class IgnoreDeletionMarkFilter:
    """Hide blocks whose ``deletion-mark.json`` is older than the delay; every marked block is
    recorded in ``result.deletion_marked``. A marker that does not parse is ignored with a warning."""

    def __init__(self, delay_s: float, now: Callable[[], float] = time.time) -> None:
        self.delay_s = delay_s
        self.now = now

    def filter(self, metas, result, fetcher) -> None:
        def read(u: str):
            try:
                return u, fetcher.bucket.get(f"{u}/{DELETION_MARK_FILENAME}")
            except Exception as e:  # noqa: BLE001
                if is_obj_not_found(e):
                    return u, None
                raise

        now = self.now()
        for u, data in fetcher.map(read, list(metas)):
            if data is None:
                continue
            try:
                mark = marker_from_json(DELETION_MARK_FILENAME, data, block=u)
            except InvalidMetaError as e:
                log.warning("found partial deletion-mark.json; if we will see it happening often for the same "
                            "block, consider manually deleting deletion-mark.json from the object storage",
                            extra={"block": u, "err": str(e)})
                continue
            result.deletion_marked.add(u)
            if now - mark.deletion_time > self.delay_s:
                del metas[u]
                result.filtered[u] = MARKED_FOR_DELETION


class DeduplicateFilter:
    """Within a compaction group (resolution + labels), drop blocks whose sources another block
    holds entirely (what a compaction leaves behind until its sources are deleted)."""

    def filter(self, metas, result, fetcher) -> None:
        groups: dict[tuple, list[BlockMeta]] = {}
        for m in metas.values():
            groups.setdefault((m.resolution, tuple(sorted(m.labels.items()))), []).append(m)
        for group in groups.values():
            group.sort(key=lambda m: (-len(m.compaction.sources), m.ulid))
            covering: list[set[str]] = []
            for m in group:
                src = set(m.compaction.sources)
                if any(src <= parent for parent in covering):
                    metas.pop(m.ulid, None)
                    result.filtered[m.ulid] = DUPLICATE
                else:
                    covering.append(src)


class ReplicaLabelRemover:
    """Drop ``--deduplication.replica-label`` names from each block's labels (in memory only)."""

    def __init__(self, replica_labels: Sequence[str]) -> None:
        self.replica_labels = list(replica_labels)

    def filter(self, metas, result, fetcher) -> None:
        if not self.replica_labels:
            return
        import copy

        for u, m in list(metas.items()):
            lbls = {k: v for k, v in m.labels.items() if k not in self.replica_labels}
            if lbls == m.labels:
                continue
            if not lbls:
                lbls = {self.replica_labels[0]: "deduped"}
            nm = copy.copy(m)
            nm.thanos = copy.copy(m.thanos)
            nm.thanos.labels = lbls
            metas[u] = nm


def _upload_ms(m: BlockMeta) -> Optional[int]:
    ut = m.thanos.upload_time if m.thanos else None
    if not ut:
        return None
    import datetime as dt

    s = ut.rstrip("Zz")
    frac = ""
    if "." in s:
        s, frac = s.split(".", 1)
    try:
        base = dt.datetime.fromisoformat(s).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None
    return int(base.timestamp() * 1000) + int((frac + "000")[:3] or 0)


class MetaFetcher:
    """Lists blocks and reads their metas; see the module docstring.

    ``cache_dir``: where metas are cached across restarts (``<data-dir>/meta-syncer``), or None.
    ``concurrency``: parallel meta reads (``--block-meta-fetch-concurrency``, 32)."""

    def __init__(self, bucket, *, cache_dir: Optional[str] = None, concurrency: int = 32,
                 filters: Sequence[MetaFilter] = (), registry=None, component: str = "") -> None:
        self.bucket = bucket
        self.cache_dir = cache_dir
        self.concurrency = max(1, concurrency)
        self.filters = list(filters)
        self._cache: dict[str, BlockMeta] = {}
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="meta-fetch")
        self._metrics = _Metrics(registry) if registry is not None else None
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def map(self, fn, items):
        """``fn`` over ``items`` on the fetcher's pool; results in order; the first error raises."""
        return list(self._pool.map(fn, items))

    def _cached(self, u: str) -> Optional[BlockMeta]:
        m = self._cache.get(u)
        if m is not None or not self.cache_dir:
            return m
        path = os.path.join(self.cache_dir, u, META_FILENAME)
        try:
            with open(path, "rb") as f:
                m = BlockMeta.from_json(f.read(), block=u)
        except FileNotFoundError:
            return None
        except (OSError, InvalidMetaError) as e:
            log.warning("best effort read of the local meta.json failed; removing cached block dir",
                        extra={"dir": os.path.dirname(path), "err": str(e)})
            _remove_tree(os.path.dirname(path))
            return None
        self._cache[u] = m
        return m

    def _store_cache(self, u: str, data: bytes, m: BlockMeta) -> None:
        self._cache[u] = m
        if not self.cache_dir:
            return
        d = os.path.join(self.cache_dir, u)
        try:
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, META_FILENAME + ".tmp"), "wb") as f:
                f.write(data)
            os.replace(os.path.join(d, META_FILENAME + ".tmp"), os.path.join(d, META_FILENAME))
        except OSError as e:
            log.warning("best effort save of the meta.json to local dir failed; ignoring",
                        extra={"dir": d, "err": str(e)})

    def _load(self, u: str):
        m = self._cached(u)
        if m is not None:
            # a cached meta still needs its object: a deleted (or being deleted) block has none
            try:
                if self.bucket.exists(f"{u}/{META_FILENAME}"):
                    return u, m, None
            except Exception as e:  # noqa: BLE001
                return u, None, f"{FAILED}: {e}"
            self._cache.pop(u, None)
            return u, None, NO_META
        try:
            data = self.bucket.get(f"{u}/{META_FILENAME}")
        except Exception as e:  # noqa: BLE001
            if is_obj_not_found(e):
                return u, None, NO_META
            return u, None, f"{FAILED}: {e}"
        try:
            m = BlockMeta.from_json(data, block=u)
        except InvalidMetaError as e:
            return u, None, f"{CORRUPTED_META}: {e}"
        self._store_cache(u, data, m)
        return u, m, None

    def fetch(self) -> FetchResult:
        """One sync (blocking: run it in a thread). Raises :class:`ObjstoreError` when the bucket
        cannot be listed."""
        t0 = time.monotonic()
        try:
            ids = sorted({name.rstrip("/") for name in self.bucket.iter("", recursive=False)
                          if _ulid.is_ulid(name.rstrip("/"))})
            res = FetchResult()
            for u, m, why in self.map(self._load, ids):
                if m is not None:
                    res.metas[u] = m
                elif why == NO_META:
                    res.partial[u] = "meta.json not found"
                elif why.startswith(CORRUPTED_META):
                    res.corrupted[u] = why[len(CORRUPTED_META) + 2:]
                else:
                    res.failed[u] = why[len(FAILED) + 2:]
            for u, why in res.corrupted.items():
                log.warning("meta.json corrupted; block skipped", extra={"block": u, "err": why})
            # drop cached metas of blocks gone from the bucket
            for u in set(self._cache) - set(ids):
                self._cache.pop(u, None)
                if self.cache_dir:
                    _remove_tree(os.path.join(self.cache_dir, u))
            metas = dict(res.metas)
            for flt in self.filters:
                flt.filter(metas, res, self)
            res.metas = metas
        except Exception:
            if self._metrics:
                self._metrics.failures.inc()
                self._metrics.syncs.inc()
            raise
        if self._metrics:
            self._metrics.observe(res, time.monotonic() - t0)
        return res


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class _Metrics:
    def __init__(self, registry) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.syncs = Counter("blocks_meta_syncs", "Total blocks metadata synchronization attempts",
                             namespace="thanos", registry=registry)
        self.failures = Counter("blocks_meta_sync_failures", "Total blocks metadata synchronization failures",
                                namespace="thanos", registry=registry)
        self.duration = Histogram("blocks_meta_sync_duration_seconds", "Duration of the blocks metadata synchronization "
                                  "in seconds", namespace="thanos", registry=registry,
                                  buckets=(0.01, 1, 10, 100, 300, 600, 1000))
        self.synced = Gauge("blocks_meta_synced", "Number of block metadata synced", ["state"],
                            namespace="thanos", registry=registry)

    def observe(self, res: FetchResult, seconds: float) -> None:
        self.syncs.inc()
        self.duration.observe(seconds)
        counts = dict.fromkeys(STATES, 0)
        counts[LOADED] = len(res.metas)
        counts[NO_META] = len(res.partial)
        counts[CORRUPTED_META] = len(res.corrupted)
        counts[FAILED] = len(res.failed)
        for state in res.filtered.values():
            counts[state] = counts.get(state, 0) + 1
        for state, n in counts.items():
            self.synced.labels(state).set(n)

