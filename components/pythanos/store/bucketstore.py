"""The store gateway's StoreAPI over every block of a bucket (Thanos ``pkg/store/bucket.go``).

Blocks come from a :class:`~pythanos.block.MetaFetcher` sync. Each :class:`BucketBlock` reads
its ``index`` through a local index-header (:mod:`pythanos.tsdb.indexheader`: symbols and the
postings offset table on disk under ``--data-dir``, everything else by ranged reads) and its
chunks by ranged reads. Opening a block's index is done in the background after a sync and on
demand by the first query that needs the block, so the store is ready once the metas are synced
and a query never misses a block whose index-header is still being built.

A Series call, as Thanos answers it:

* block sets per external label set; matchers on external labels are checked against the set's
  values and dropped; blocks are chosen per set by resolution (``max_resolution_window``: the
  coarsest allowed resolution first, gaps filled with finer ones, ``getFor``);
* first, every block in the I/O pool: postings (expensive non-empty matchers such as ``pod!=""``
  are applied to the loaded series instead of fetching every posting list of the label) and the
  series limit, checked on the postings count before any series or chunk is fetched (from the
  offset table alone where one label decides), as Thanos' ``ExpandPostings``;
* then every block: series entries decoded in C (labels extended with the block's external labels,
  theirs win, minus ``without_replica_labels``, and already protobuf-encoded), chunks overlapping
  the request chosen on whole arrays, the chunk limit, chunk ranges fetched concurrently and raw
  chunks turned into ``AggrChunk`` messages in C;
* blocks merged in label order; a series present in several blocks is one series whose chunks
  are the union with identical chunks removed (Thanos' ``responseDeduplicator``);
* any block failing fails the call with its ULID in the message (the querier's partial response
  decides); a block that fails to load is reported once, dropped, and retried next sync.
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import operator
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import AsyncIterator, NamedTuple, Optional, Sequence

import numpy as np
from google.protobuf import any_pb2

from ..storeapi.pb import hints_pb2, types_pb2
from ..storeapi.server import Internal, InvalidArgument, ResourceExhausted, Store, Unavailable
from ..storeapi.types import (MAX_TIME, MIN_TIME, LabelEncoder, LabelNamesRequest, LabelsResult, LabelValuesRequest,
                              SeriesFrames, SeriesRequest, StoreInfo, uvarint)
from ..tsdb._series import raw_chunks, xxh64
from ..tsdb.chunks import ChunkReader
from ..tsdb.errors import CorruptBlockError
from ..tsdb.index import IndexReader
from ..tsdb.labels import MATCH_EQUAL, MATCH_NOT_EQUAL, Matcher
from ..tsdb.meta import BlockMeta
from ..tsdb.source import BucketSource
from ._answer import frames, join_groups
from .aggr import AggrChunkError, aggr_chunk_bytes

log = logging.getLogger(__name__)

__all__ = ["BucketStore", "BucketStoreConfig", "BucketBlock", "MAX_SAMPLES_PER_CHUNK"]

MAX_SAMPLES_PER_CHUNK = 120  # Thanos: the samples limit is enforced as chunks = samples / 120
RESOLUTIONS = (3_600_000, 300_000, 0)  # Thanos' block set order: 1h, 5m, raw
LAZY_MATCHER_MIN_VALUES = 64  # a non-empty matcher over more values than this is applied to series
_YIELD_FRAMES = 64  # answer frames handed to the server base per step


@dataclass
class BucketStoreConfig:
    data_dir: str = "./data"
    block_sync_concurrency: int = 20
    series_max_concurrency: int = 20
    series_limit: int = 0          # --store.limits.request-series
    samples_limit: int = 0         # --store.limits.request-samples (as chunks / 120)
    lazy_index_header: bool = False
    lazy_idle_timeout: float = 300.0
    min_time: object = None        # TimeOrDuration or None
    max_time: object = None
    io_threads: int = 16
    chunk_pool_size: int = 2 << 30


class BucketBlock:
    """One block in the bucket: its meta, index (through the index-header) and chunk readers."""

    def __init__(self, bucket, meta: BlockMeta, data_dir: str, index_cache=None, fetch_pool=None) -> None:
        self.bucket = bucket
        self.index_cache = index_cache
        self.fetch_pool = fetch_pool
        self.meta = meta
        self.ulid = meta.ulid
        self.dir = os.path.join(data_dir, meta.ulid)
        self.resolution = meta.resolution
        self.ext: tuple = tuple(sorted((k, v) for k, v in meta.labels.items() if v != ""))
        self._ext_map = dict(self.ext)
        self._relabel = {**self._ext_map, "__block_id": meta.ulid}  # what request hints' block matchers see
        self._index: Optional[IndexReader] = None
        self._lock = threading.Lock()
        self.last_used = time.monotonic()
        sizes = {f.rel_path: f.size_bytes for f in (meta.thanos.files if meta.thanos else []) if f.size_bytes}
        self._sizes = sizes
        names = sorted(n for n in sizes if n.startswith("chunks/"))
        self._chunk_names = names or None
        self._chunks: Optional[ChunkReader] = None

    # -- readers -------------------------------------------------------------------------------------
    def index(self) -> IndexReader:
        """The block's index reader, opening it (and building its index-header) if needed. Blocking."""
        with self._lock:
            self.last_used = time.monotonic()
            if self._index is None:
                self._index = self._open_index()
            return self._index

    @property
    def loaded(self) -> bool:
        return self._index is not None

    def _open_index(self) -> IndexReader:
        from ..tsdb import indexheader as ih

        remote = BucketSource(self.bucket, f"{self.ulid}/index", "index", block=self.ulid,
                              size=self._sizes.get("index"))
        path = os.path.join(self.dir, ih.INDEX_HEADER_FILENAME)
        if os.path.exists(path):
            try:
                src = ih.HeaderedIndexSource(path, remote, block=self.ulid)
            except CorruptBlockError as e:
                # a damaged local file (disk full, crash) is rebuilt from the bucket
                log.warning("index-header unusable, rebuilding", extra={"block": self.ulid, "err": str(e)})
                os.unlink(path)
        if not os.path.exists(path):
            ih.build(remote, path, block=self.ulid)
            src = ih.HeaderedIndexSource(path, remote, block=self.ulid)
        ix = IndexReader(src, block=self.ulid, file="index", owns_source=True)
        if self.index_cache is not None:
            ix.cache = self.index_cache.for_block(self.ulid)
        return ix

    def chunks(self) -> ChunkReader:
        with self._lock:
            if self._chunks is None:
                names = self._chunk_names
                if names is None:
                    names = sorted(f"chunks/{k.rstrip('/').rsplit('/', 1)[-1]}"
                                   for k in self.bucket.iter(f"{self.ulid}/chunks/", recursive=False)
                                   if not k.endswith("/"))
                srcs = [BucketSource(self.bucket, f"{self.ulid}/{n}", n, block=self.ulid, size=self._sizes.get(n))
                        for n in names]
                self._chunks = ChunkReader(srcs, block=self.ulid, names=names, pool=self.fetch_pool)
            return self._chunks

    def release_if_idle(self, idle_s: float) -> bool:
        """Close the index reader when unused for ``idle_s`` (lazy reader); True when released."""
        with self._lock:
            if self._index is None or time.monotonic() - self.last_used < idle_s:
                return False
            self._index.close()
            self._index = None
            return True

    def close(self, remove_dir: bool = False) -> None:
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None
        if remove_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- matching ------------------------------------------------------------------------------------
    def split_matchers(self, matchers: Sequence[Matcher]) -> Optional[list[Matcher]]:
        """Matchers left for the index after those on external labels, or None when one fails
        (Thanos' ``labelMatchers``: a name the block's labels lack goes to the index)."""
        out = []
        for m in matchers:
            v = self._ext_map.get(m.name)
            if v is None:
                out.append(m)
            elif not m.matches(v):
                return None
        return out

    def matches_block(self, block_matchers: Sequence[Matcher]) -> bool:
        return all(m.matches(self._relabel.get(m.name, "")) for m in block_matchers)

    def overlaps(self, mint: int, maxt: int) -> bool:
        return self.meta.min_time <= maxt and mint < self.meta.max_time


class ChunkPool:
    """``--chunk-pool-size``: a cap on chunk bytes held by all Series calls at once. A call that
    would go over it fails with RESOURCE_EXHAUSTED instead of growing memory (Thanos: "pool exhausted")."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            if self.capacity and self.used + n > self.capacity:
                raise ResourceExhausted(f"populate chunk: pool exhausted: {n} bytes of chunks would exceed "
                                        f"--chunk-pool-size={self.capacity} ({self.used} bytes in use)")
            self.used += n

    def give(self, n: int) -> None:
        with self._lock:
            self.used = max(0, self.used - n)


class _Stopped(Exception):
    """The call this block work was for has ended (its client cancelled it, its deadline passed, or
    another block failed): the work stops instead of finishing for nobody."""


@dataclass
class _Limits:
    """One call's limits, chunk-pool bytes and stop flag, shared by its block work in the pool."""

    series: int = 0
    chunks: int = 0
    series_used: int = 0
    chunks_used: int = 0
    pool: Optional[ChunkPool] = None
    pooled: int = 0
    stopped: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        self.stopped = True

    def check(self) -> None:
        """Raise :class:`_Stopped` once the call has ended; block work calls it between its stages."""
        if self.stopped:
            raise _Stopped("series call ended")

    def take_bytes(self, n: int) -> None:
        if self.pool is not None:
            with self.lock:  # never after release(): those bytes would never be given back
                self.check()
                self.pool.take(n)
                self.pooled += n

    def release(self) -> None:
        """The call is over: pooled bytes go back and block work still running stops."""
        with self.lock:
            self.stopped = True
            n, self.pooled = self.pooled, 0
        if self.pool is not None:
            self.pool.give(n)

    def reserve_series(self, n: int) -> None:
        if not self.series:
            return
        with self.lock:
            self.series_used += n
            if self.series_used > self.series:
                raise ResourceExhausted(f"exceeded series limit: limit {self.series} violated (got {self.series_used})")

    def reserve_chunks(self, n: int) -> None:
        if not self.chunks:
            return
        with self.lock:
            self.chunks_used += n
            if self.chunks_used > self.chunks:
                raise ResourceExhausted(f"exceeded chunks limit: limit {self.chunks} violated (got {self.chunks_used})")


def _is_lazy_candidate(m: Matcher) -> bool:
    """Matchers that select "has the label" over many values (``!=""``, ``=~".+"``)."""
    return not m.matches("") and m.type != MATCH_EQUAL


def _plan(ix: IndexReader, matchers: list[Matcher]) -> tuple[list[Matcher], list[Matcher]]:
    """(matchers for the postings, matchers applied to the loaded series).

    A positive matcher that would fetch the posting lists of many values (``pod!=""``: every
    pod) is deferred when another positive matcher narrows the result: its condition is then
    checked on the labels of the few series the others select (thanos-io/thanos#7956)."""
    pos = [m for m in matchers if not m.matches("")]
    if len(pos) < 2:
        return matchers, []
    costs = []
    for m in pos:
        e = ix._names.get(m.name)
        n = 0 if e is None else len(ix._value_indices(e, m, invert=False))
        costs.append(n)
    cheapest = min(costs)
    lazy = [m for m, n in zip(pos, costs)
            if _is_lazy_candidate(m) and n > LAZY_MATCHER_MIN_VALUES and n > 4 * max(cheapest, 1)]
    if len(lazy) == len(pos):
        lazy = lazy[1:]
    return [m for m in matchers if m not in lazy], lazy


def block_postings(block: BucketBlock, matchers: list[Matcher], limits: _Limits) -> tuple[np.ndarray, list]:
    """Series refs of the matchers in one block, and the matchers left for the loaded series.
    The series limit is reserved here, as Thanos' ``ExpandPostings``: every block's postings are
    counted before any block loads a chunk. No matchers left after those on the block's external
    labels select nothing, as in Thanos' ``ExpandedPostings``. Blocking."""
    limits.check()
    if not matchers:
        return np.empty(0, dtype=np.int64), []
    ix = block.index()
    limits.check()
    index_ms, lazy = _plan(ix, matchers) if matchers else ([], [])
    pos = [m for m in index_ms if not m.matches("")]
    if limits.series and len(pos) == 1 and len(index_ms) == 1 and not lazy:
        # one label's lists: their sizes in the offset table give the series count before any
        # posting is fetched (Thanos fetches first and counts after, thanos-io/thanos#5733)
        n, _ = ix.postings_size(pos[0])
        if n > limits.series:
            raise ResourceExhausted(f"exceeded series limit: limit {limits.series} violated (got at least {n}, "
                                    f"counted before fetching postings)")
    refs = ix.postings_for_matchers(index_ms)
    if not lazy:
        limits.reserve_series(len(refs))  # before a single series or chunk is fetched (#5733)
    return refs, lazy


class BlockAnswer(NamedTuple):
    """One block's (or the merged) answer as columns, sorted by labels. Per series: its labels
    (complete: external labels merged, replica labels removed), its ``chunks`` fields (bytes,
    joined; a list of ``(mint, maxt, field)`` when made for a merge of overlapping blocks; the
    column is None with ``skip_chunks``) and its labels as protobuf ``labels`` fields."""

    labels: list
    chunks: Optional[list]
    wires: list


def block_series(block: BucketBlock, matchers: list[Matcher], mint: int, maxt: int, *, skip_chunks: bool,
                 aggrs: Sequence[int], remove: frozenset, limits: _Limits, limit: int = 0, postings=None,
                 per_chunk: bool = False) -> BlockAnswer:
    """One block's answer; ``postings`` is what :func:`block_postings` gave, computed here when
    None; ``per_chunk`` keeps each series' chunks apart (see :func:`merge_answers`). Blocking."""
    refs, lazy = postings if postings is not None else block_postings(block, matchers, limits)
    limits.check()
    ix = block.index()
    if lazy:  # labels are checked (and replica labels dropped) below: encoded after that
        labels, nch, chunks = ix.series_bulk(refs, block.ext, None)
    else:
        labels, nch, chunks, wires = ix.series_bulk(refs, block.ext, remove, wire=True)
    limits.check()
    # chunks overlapping [mint, maxt]; series without one are not part of the answer
    owner = np.repeat(np.arange(len(labels)), nch)
    inside = (chunks[:, 1] >= mint) & (chunks[:, 0] <= maxt)
    per = np.bincount(owner[inside], minlength=len(labels))
    sel = np.flatnonzero(per).tolist()
    if lazy:
        sel = [i for i in sel if all(m.matches(dict(labels[i]).get(m.name, "")) for m in lazy)]
        limits.reserve_series(len(sel))
        if remove:
            for i in sel:
                labels[i] = tuple(p for p in labels[i] if p[0] not in remove)
        wires = [None] * len(labels)
    elif limit:
        sel = sel[:limit]
    if len(sel) == len(labels):  # every series (sel is ascending)
        out_labels, out_wires = list(labels), list(wires)
    else:
        out_labels, out_wires = _pick(labels, sel), _pick(wires, sel)
    if None in out_wires:  # the decoder leaves some label sets to us (and lazy ones changed)
        enc = LabelEncoder()
        out_wires = [w if w is not None else enc(ls) for ls, w in zip(out_labels, out_wires)]
    if skip_chunks:
        return _sorted(BlockAnswer(out_labels, None, out_wires))
    chosen = np.zeros(len(labels), dtype=bool)
    chosen[sel] = True
    picked = chunks[inside & chosen[owner]]
    counts = per[sel]
    limits.reserve_chunks(int(counts.sum()))
    encs, buf, offs, lens = block.chunks().chunks_raw(picked[:, 2], check=limits.check)
    limits.take_bytes(len(buf))
    mints, maxts = np.ascontiguousarray(picked[:, 0]), np.ascontiguousarray(picked[:, 1])
    # XOR/histogram chunks as Series.chunks fields, in C (identical chunks compare equal as bytes)
    msgs = raw_chunks(buf, mints, maxts, encs.astype(np.int64), offs, lens)
    if None in msgs:
        mv = memoryview(buf)
        try:
            for j in [j for j, m in enumerate(msgs) if m is None]:  # downsampled: the requested aggregates
                o, n = int(offs[j]), int(lens[j])
                m = aggr_chunk_bytes(int(mints[j]), int(maxts[j]), int(encs[j]), bytes(mv[o:o + n]), aggrs)
                msgs[j] = b"\x12" + uvarint(len(m)) + m
        except AggrChunkError as e:
            raise Internal(f"block {block.ulid}: {e}") from None
    if per_chunk:
        chks = list(zip(mints.tolist(), maxts.tolist(), msgs))
        grouped: list = []
        k = 0
        for c in counts.tolist():
            grouped.append(chks[k:k + c])
            k += c
    else:
        grouped = join_groups(msgs, counts.astype(np.int64).tobytes())
    return _sorted(BlockAnswer(out_labels, grouped, out_wires))


def _pick(items, idx: list) -> list:
    """``[items[i] for i in idx]`` without a Python loop (a list by positions or a dict by keys)."""
    if not idx:
        return []
    if len(idx) == 1:
        return [items[idx[0]]]
    return list(operator.itemgetter(*idx)(items))


def _sorted(a: BlockAnswer) -> BlockAnswer:
    """The answer in label order. A block's series come in index order, which is label order
    unless external labels or removed replica labels moved some."""
    ls = a.labels
    if all(map(operator.lt, ls, itertools.islice(ls, 1, None))):
        return a
    order = sorted(range(len(ls)), key=ls.__getitem__)
    return BlockAnswer(_pick(ls, order), None if a.chunks is None else _pick(a.chunks, order), _pick(a.wires, order))


def _blocks_overlap(blocks: Sequence[BucketBlock]) -> bool:
    spans = sorted((b.meta.min_time, b.meta.max_time) for b in blocks)
    return any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))


def merge_answers(answers: list[BlockAnswer], per_chunk: bool) -> BlockAnswer:
    """Per-block answers -> one, a series present in several blocks being one series with the
    chunks of all. Blocks that do not overlap in time come in time order (their chunks are then
    simply appended); overlapping ones (``per_chunk``) as Thanos' deduplicator: identical chunks
    dropped, the rest ordered by (mint, maxt)."""
    if len(answers) == 1 and not per_chunk:
        return answers[0]
    wires: dict = {}
    for a in answers:
        wires.update(zip(a.labels, a.wires))  # equal labels, equal encoding
    if answers[0].chunks is None:  # skip_chunks
        keys = sorted(wires)
        return BlockAnswer(keys, None, _pick(wires, keys))
    chunks: dict = {}
    get = chunks.get
    if per_chunk:
        for a in answers:
            for ls, cs in zip(a.labels, a.chunks):
                have = get(ls)
                if have is None:
                    chunks[ls] = list(cs)
                else:
                    have.extend(cs)
    else:
        for a in answers:
            for ls, cs in zip(a.labels, a.chunks):
                have = get(ls)
                chunks[ls] = cs if have is None else have + cs
    keys = sorted(chunks)
    joined = _pick(chunks, keys)
    if per_chunk:
        joined = [_series_chunks(cs) for cs in joined]
    return BlockAnswer(keys, joined, _pick(wires, keys))


def _series_chunks(chunks: list) -> bytes:
    """One series' ``chunks`` fields from overlapping blocks, as Thanos' ``responseDeduplicator``
    chains them: a chunk is kept when the hash of one of its parts (raw, count, max, min, sum,
    counter, in that order) is new, and the kept ones are ordered by min time, max time, then
    their parts' type and bytes (``AggrChunk.Compare``), so ties come out as Thanos sends them."""
    if len(chunks) == 1:
        return chunks[0][2]
    kept: dict = {}
    for c in chunks:
        m = types_pb2.Series.FromString(c[2]).chunks[0]
        for part in (m.raw, m.count, m.max, m.min, m.sum, m.counter):
            if not part.ByteSize() and not _has_part(m, part):
                continue
            h = part.hash or xxh64(part.data)
            if h not in kept:
                kept[h] = (c, m)
                break
    return b"".join([c[2] for c, _ in sorted(kept.values(), key=_thanos_chunk_order)])


def _has_part(m, part) -> bool:
    return any(part is getattr(m, f) and m.HasField(f) for f in ("raw", "count", "max", "min", "sum", "counter"))


def _compare_chunks(a, b) -> int:
    """Thanos' ``AggrChunk.Compare`` as a sort comparison (negative: ``a`` first): min time, max
    time, then per part (raw, count, sum, min, max, counter) present before absent, lower type
    first, and -- Go's ``bytes.Compare`` under the same sign convention -- greater data first."""
    (ca, ma), (cb, mb) = a, b
    if (ca[0], ca[1]) != (cb[0], cb[1]):
        return -1 if (ca[0], ca[1]) < (cb[0], cb[1]) else 1
    for f in ("raw", "count", "sum", "min", "max", "counter"):
        ha, hb = ma.HasField(f), mb.HasField(f)
        if ha != hb:
            return -1 if ha else 1
        if not ha:
            continue
        pa, pb = getattr(ma, f), getattr(mb, f)
        if pa.type != pb.type:
            return -1 if pa.type < pb.type else 1
        if pa.data != pb.data:
            return -1 if pa.data > pb.data else 1
    return 0


_thanos_chunk_order = functools.cmp_to_key(_compare_chunks)


class BucketStore(Store):
    """StoreAPI over the blocks the last sync found; :meth:`sync` is called by the run loop."""

    presorted = True
    final_labels = True  # labels come complete from the C decoder, answers in groups

    def __init__(self, bucket, fetcher, config: BucketStoreConfig, *, registry=None, index_cache=None) -> None:
        self.bucket = bucket
        self.index_cache = index_cache
        self.fetcher = fetcher
        self.cfg = config
        self.blocks: dict[str, BucketBlock] = {}
        self._failed_loads: set[str] = set()
        self._pool = ThreadPoolExecutor(max(4, config.io_threads), thread_name_prefix="store-io")
        # chunk ranges of one block fetched concurrently (a pool of its own: store-io workers wait on it)
        self._fetch_pool = ThreadPoolExecutor(max(4, config.io_threads), thread_name_prefix="store-fetch")
        self._gate = asyncio.Semaphore(max(1, config.series_max_concurrency))
        self.series_in_flight = 0  # Series calls holding a gate slot (until their block work has ended)
        self._load_sem = threading.Semaphore(max(1, config.block_sync_concurrency))
        self.chunk_pool = ChunkPool(config.chunk_pool_size)
        self.synced = False
        self.last_sync_error: Optional[str] = None
        self.metrics = _Metrics(registry, self) if registry is not None else None
        os.makedirs(config.data_dir, exist_ok=True)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)
        for b in self.blocks.values():
            b.close()

    # -- sync -----------------------------------------------------------------------------------------
    async def sync(self) -> None:
        """Sync the block set with the bucket. Raises on a listing failure (blocks kept as they are)."""
        loop = asyncio.get_running_loop()
        try:
            res = await loop.run_in_executor(self._pool, self.fetcher.fetch)
        except Exception as e:
            self.last_sync_error = f"{type(e).__name__}: {e}"
            raise
        self.last_sync_error = None
        new = []
        retry = []
        for u, meta in res.metas.items():
            if u not in self.blocks:
                b = BucketBlock(self.bucket, meta, self.cfg.data_dir, self.index_cache, self._fetch_pool)
                if u in self._failed_loads:
                    retry.append(b)  # known broken: added only once it loads
                else:
                    self.blocks[u] = b
                    new.append(b)
        for b, ok in zip(retry, await asyncio.gather(*(loop.run_in_executor(self._pool, self._try_load, b)
                                                        for b in retry))):
            if ok:
                self._failed_loads.discard(b.ulid)
                self.blocks[b.ulid] = b
                log.info("block loads again", extra={"block": b.ulid})
        # blocks that vanished are dropped; a meta that failed to read keeps its block
        for u in list(self.blocks):
            if u not in res.metas and u not in res.failed:
                self.blocks.pop(u).close(remove_dir=True)
                if self.metrics:
                    self.metrics.drops.inc()
                log.info("dropped outdated block", extra={"block": u})
        self._failed_loads &= set(res.metas)
        self._remove_stale_dirs()
        self.synced = True
        if new:
            log.info("loaded new blocks", extra={"count": len(new)})
        if new and not self.cfg.lazy_index_header:
            for b in new:
                loop.run_in_executor(self._pool, self._preload, b)

    def _preload(self, b: BucketBlock) -> None:
        with self._load_sem:
            if b.ulid not in self.blocks:
                return
            try:
                b.index()
            except Exception as e:  # noqa: BLE001
                self._load_failed(b, e)
                return
            if self.metrics:
                self.metrics.loads.inc()

    def _try_load(self, b: BucketBlock) -> bool:
        try:
            b.index()
            return True
        except Exception as e:  # noqa: BLE001
            self._load_failed(b, e)
            return False

    def _load_failed(self, b: BucketBlock, e: BaseException) -> None:
        """Report a broken block once, drop it; the next sync tries it again."""
        if self.blocks.get(b.ulid) is b:
            self.blocks.pop(b.ulid, None)
            b.close(remove_dir=True)
        if self.metrics:
            self.metrics.load_failures.inc()
        if b.ulid not in self._failed_loads:
            self._failed_loads.add(b.ulid)
            log.error("loading block failed; serving the other blocks, retrying at every sync",
                      extra={"block": b.ulid, "err": str(e)})
        else:
            log.debug("loading block failed again", extra={"block": b.ulid, "err": str(e)})

    def _remove_stale_dirs(self) -> None:
        from ..tsdb.ulid import is_ulid

        try:
            names = os.listdir(self.cfg.data_dir)
        except OSError:
            return
        for n in names:
            if is_ulid(n) and n not in self.blocks:
                shutil.rmtree(os.path.join(self.cfg.data_dir, n), ignore_errors=True)

    def release_idle(self) -> int:
        n = sum(1 for b in list(self.blocks.values()) if b.release_if_idle(self.cfg.lazy_idle_timeout))
        if n and self.metrics:
            self.metrics.lazy_unloads.inc(n)
        return n

    # -- info -----------------------------------------------------------------------------------------
    def _time_bounds(self) -> tuple[int, int]:
        lo = self.cfg.min_time.timestamp_ms() if self.cfg.min_time is not None else MIN_TIME
        hi = self.cfg.max_time.timestamp_ms() if self.cfg.max_time is not None else MAX_TIME
        return lo, hi

    async def info(self) -> StoreInfo:
        blocks = list(self.blocks.values())
        if not blocks:
            # Thanos reports an empty store as MaxInt64/MinInt64 so queriers skip it
            return StoreInfo(min_time=MAX_TIME, max_time=MIN_TIME, label_sets=[], component_type="store")
        lo, hi = self._time_bounds()
        mint = max(min(b.meta.min_time for b in blocks), lo)
        maxt = min(max(b.meta.max_time for b in blocks), hi)
        sets = sorted({b.ext for b in blocks})
        by_ext: dict[tuple, list] = {}
        for b in blocks:
            by_ext.setdefault(b.ext, []).append((b.meta.min_time, b.meta.max_time))
        tsdb = []
        for ext, spans in by_ext.items():
            spans.sort()
            cur = list(spans[0])
            for a, z in spans[1:]:
                if a > cur[1]:
                    tsdb.append((ext, cur[0], cur[1]))
                    cur = [a, z]
                else:
                    cur[1] = z
            tsdb.append((ext, cur[0], cur[1]))
        return StoreInfo(min_time=mint, max_time=maxt, label_sets=[list(s) for s in sets], component_type="store",
                         supports_without_replica_labels=True, tsdb_infos=tsdb)

    # -- block choice ---------------------------------------------------------------------------------
    def _blocks_for(self, matchers: list[Matcher], mint: int, maxt: int, max_res: int,
                    block_matchers: Sequence[Matcher] = ()) -> list[tuple[BucketBlock, list[Matcher]]]:
        sets: dict[tuple, dict[int, list[BucketBlock]]] = {}
        for b in self.blocks.values():
            sets.setdefault(b.ext, {}).setdefault(b.resolution, []).append(b)
        out = []
        for ext, by_res in sets.items():
            some = next(iter(by_res.values()))[0]
            left = some.split_matchers(matchers)
            if left is None:
                continue
            for lst in by_res.values():
                lst.sort(key=lambda b: b.meta.min_time)
            for b in _get_for(by_res, mint, maxt, max_res, 0, block_matchers):
                out.append((b, left))
        return out

    # -- StoreAPI -------------------------------------------------------------------------------------
    def _not_ready(self) -> None:
        if not self.synced:
            raise Unavailable("store gateway not ready: initial block sync has not finished"
                              + (f" ({self.last_sync_error})" if self.last_sync_error else ""))

    async def _run_blocks(self, fn, blocks, limits: _Limits, work: Optional[list] = None) -> list:
        """``fn(block, matchers)`` for every block in the I/O pool. When the call ends before
        they do (its client cancelled it, its deadline passed), the work not yet started is
        dropped and the running work stops at its next check (``limits``); ``work`` collects the
        pool futures, for a caller that holds a gate slot until they are done."""
        futs = [self._pool.submit(fn, b, ms) for b, ms in blocks]
        if work is not None:
            work.extend(futs)
        try:
            results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futs), return_exceptions=True)
        except BaseException:
            limits.stop()
            for f in futs:
                f.cancel()
            raise
        failed = [(b, r) for (b, _), r in zip(blocks, results) if isinstance(r, BaseException)]
        if failed:
            limits.stop()  # the call fails: the other blocks' work is for nobody
            # the block that failed, not one that stopped because of it
            b, r = next(((b, r) for b, r in failed if not isinstance(r, _Stopped)), failed[0])
            if not b.loaded and isinstance(r, CorruptBlockError):
                self._load_failed(b, r)  # its index could not even be opened: out of the set
            raise _block_error(b, r)
        return results

    def _release_after(self, work: list) -> None:
        """Free a Series gate slot once every pool future in ``work`` is done (block work that
        outlived its call holds the slot until it has stopped)."""
        left = [f for f in work if not f.done()]
        if not left:
            self._release_series_slot()
            return
        loop = asyncio.get_running_loop()
        count = [len(left)]

        def done(_f) -> None:
            def one() -> None:
                count[0] -= 1
                if count[0] == 0:
                    self._release_series_slot()
            try:
                loop.call_soon_threadsafe(one)
            except RuntimeError:  # the loop is closed: the store is gone
                pass

        for f in left:
            f.add_done_callback(done)

    def _release_series_slot(self) -> None:
        self.series_in_flight -= 1
        self._gate.release()

    async def series(self, req: SeriesRequest) -> AsyncIterator:
        self._not_ready()
        lo, hi = self._time_bounds()
        mint, maxt = max(req.min_time, lo), min(req.max_time, hi)
        blocks = self._blocks_for(req.matchers, mint, maxt, int(req.max_resolution_window),
                                  _hint_block_matchers(req.hints, hints_pb2.SeriesRequestHints(), "series"))
        limits = _Limits(series=self.cfg.series_limit, chunks=self.cfg.samples_limit // MAX_SAMPLES_PER_CHUNK,
                         pool=self.chunk_pool)
        remove = frozenset(req.without_replica_labels)
        aggrs = list(req.aggregates)
        limit = int(req.limit)

        def expand(b: BucketBlock, ms: list[Matcher]):
            return block_postings(b, ms, limits)

        try:
            # the gate slot is held until the block work has ended, also when the call ends first
            await self._gate.acquire()
            self.series_in_flight += 1
            work: list = []
            try:
                t0 = time.monotonic()
                postings = await self._run_blocks(expand, blocks, limits, work) if blocks else []
                by_block = {id(b): p for (b, _), p in zip(blocks, postings)}

                per_chunk = not req.skip_chunks and _blocks_overlap([b for b, _ in blocks])

                def one(b: BucketBlock, ms: list[Matcher]):
                    return block_series(b, ms, mint, maxt, skip_chunks=req.skip_chunks, aggrs=aggrs,
                                        remove=remove, limits=limits, limit=limit, postings=by_block[id(b)],
                                        per_chunk=per_chunk)

                blocks.sort(key=lambda bm: bm[0].meta.min_time)  # answers in time order for the merge
                results = await self._run_blocks(one, blocks, limits, work) if blocks else []
                batch = int(req.raw.response_batch_size) if req.raw is not None else 0

                def answer() -> SeriesFrames:
                    m = merge_answers(results, per_chunk) if results else BlockAnswer([], [], [])
                    if req.shard is not None and m.labels:  # the other shards' series (final labels)
                        keep = [i for i, lb in enumerate(m.labels) if req.shard.matches(lb)]
                        m = BlockAnswer([m.labels[i] for i in keep],
                                        [m.chunks[i] for i in keep] if m.chunks is not None else None,
                                        [m.wires[i] for i in keep])
                    if limit and len(m.labels) > limit:
                        m = BlockAnswer(m.labels[:limit], m.chunks[:limit] if m.chunks is not None else None,
                                        m.wires[:limit])
                    if not m.labels:
                        return SeriesFrames([], 0, (), ())
                    return SeriesFrames(frames(m.wires, m.chunks, batch), len(m.labels), m.labels[0], m.labels[-1])

                merging = self._pool.submit(answer)
                work.append(merging)
                merged = await asyncio.wrap_future(merging)
            except ResourceExhausted as e:
                if self.metrics:
                    self.metrics.dropped.labels("series" if "series limit" in str(e) else "chunks").inc()
                raise
            finally:
                self._release_after(work)
            results = []
            if self.metrics:
                self.metrics.observe_series(len(blocks), merged.count, time.monotonic() - t0)
            for g in range(0, len(merged.frames), _YIELD_FRAMES):
                part = merged.frames[g:g + _YIELD_FRAMES]
                # the order check needs the first and last labels only once: the store made the order
                yield SeriesFrames(part, merged.count if g == 0 else 0, merged.first, merged.last)
        finally:
            limits.release()  # the answer's chunk bytes are no longer held

    async def label_names(self, req: LabelNamesRequest) -> LabelsResult:
        self._not_ready()
        remove = frozenset(req.without_replica_labels)
        bms = _hint_block_matchers(req.hints, hints_pb2.LabelNamesRequestHints(), "label names")
        blocks = [(b, ms) for b in self.blocks.values() if b.overlaps(req.start, req.end) and b.matches_block(bms)
                  for ms in [b.split_matchers(req.matchers)] if ms is not None]

        limits = _Limits(series=self.cfg.series_limit)

        def one(b: BucketBlock, ms: list[Matcher]) -> set:
            if not ms:
                return set(b.index().label_names()) | {n for n, _ in b.ext if n not in remove}
            rows = block_series(b, ms, req.start, req.end, skip_chunks=True, aggrs=(), remove=remove, limits=limits)
            return {n for lbls in rows.labels for n, _ in lbls}

        sets = await self._run_blocks(one, blocks, limits)
        names = sorted(set().union(*sets)) if sets else []
        return LabelsResult(names, hints=_queried_hints(hints_pb2.LabelNamesResponseHints(), blocks))

    async def label_values(self, req: LabelValuesRequest) -> LabelsResult:
        self._not_ready()
        has_name_eq = any(m.name == "__name__" and m.type == MATCH_EQUAL for m in req.matchers)
        bms = _hint_block_matchers(req.hints, hints_pb2.LabelValuesRequestHints(), "label values")
        blocks = []
        for b in self.blocks.values():
            if not b.overlaps(req.start, req.end) or not b.matches_block(bms):
                continue
            ms = b.split_matchers(req.matchers)
            if ms is None:
                continue
            if not has_name_eq and ms and req.label not in b._ext_map:
                ms = ms + [Matcher(MATCH_NOT_EQUAL, req.label, "")]
            blocks.append((b, ms))

        limits = _Limits(series=self.cfg.series_limit)

        def one(b: BucketBlock, ms: list[Matcher]) -> set:
            if not ms:
                vals = set(b.index().label_values(req.label))
                ext = b._ext_map.get(req.label)
                if ext:
                    vals.add(ext)
                return vals
            rows = block_series(b, ms, req.start, req.end, skip_chunks=True, aggrs=(), remove=frozenset(),
                                limits=limits)
            return {v for lbls in rows.labels for n, v in lbls if n == req.label}

        sets = await self._run_blocks(one, blocks, limits)
        vals = sorted(set().union(*sets)) if sets else []
        return LabelsResult(vals, hints=_queried_hints(hints_pb2.LabelValuesResponseHints(), blocks))


def _get_for(by_res: dict[int, list[BucketBlock]], mint: int, maxt: int, max_res: int, i: int,
             block_matchers: Sequence[Matcher] = ()) -> list[BucketBlock]:
    """Thanos' ``bucketBlockSet.getFor``: the coarsest resolution <= ``max_res`` first, gaps
    between its blocks filled recursively with finer resolutions."""
    if mint > maxt:
        return []
    while i < len(RESOLUTIONS) and RESOLUTIONS[i] > max_res:
        i += 1
    if i >= len(RESOLUTIONS):
        return []
    out: list[BucketBlock] = []
    start = mint
    for b in by_res.get(RESOLUTIONS[i], []):
        if b.meta.max_time <= mint:
            continue
        if b.meta.min_time > maxt:
            break
        if i + 1 < len(RESOLUTIONS):
            out.extend(_get_for(by_res, start, b.meta.min_time - 1, RESOLUTIONS[i + 1], i + 1, block_matchers))
        if b.matches_block(block_matchers):
            out.append(b)
        start = b.meta.max_time
    if i + 1 < len(RESOLUTIONS):
        out.extend(_get_for(by_res, start, maxt, RESOLUTIONS[i + 1], i + 1, block_matchers))
    return out


def _hint_block_matchers(hints, msg, what: str) -> list[Matcher]:
    """The ``block_matchers`` of request hints (``hintspb.*RequestHints`` in an Any)."""
    if hints is None:
        return []
    from ..storeapi.types import matchers_from_pb

    if not hints.Unpack(msg):
        raise InvalidArgument(f"unmarshal {what} request hints: type {hints.type_url} is not {msg.DESCRIPTOR.full_name}")
    try:
        return matchers_from_pb(msg.block_matchers)
    except ValueError as e:
        raise InvalidArgument(f"translate request hints labels matchers: {e}") from None


def _queried_hints(msg, blocks) -> any_pb2.Any:
    for b, _ in blocks:
        msg.queried_blocks.add(id=b.ulid)
    a = any_pb2.Any()
    a.Pack(msg, type_url_prefix="type.googleapis.com/")
    return a


def _block_error(b: BucketBlock, e: BaseException) -> BaseException:
    """Name the block in the error; limits keep their code and message."""
    from ..objstore import ObjstoreError
    from ..storeapi.server import StoreError

    if isinstance(e, ResourceExhausted):
        return e
    if isinstance(e, StoreError):
        return type(e)(f"block {b.ulid}: {e}")
    if isinstance(e, ObjstoreError):
        return Unavailable(f"fetch series for block {b.ulid}: {e}")
    if isinstance(e, CorruptBlockError):
        return Internal(f"fetch series for block {b.ulid}: {e}")
    return Internal(f"fetch series for block {b.ulid}: {type(e).__name__}: {e}")


class _Metrics:
    def __init__(self, registry, store: BucketStore) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        ns = "thanos_bucket_store"
        self.loaded = Gauge(f"{ns}_blocks_loaded", "Number of currently loaded blocks.", registry=registry)
        self.loaded.set_function(lambda: len(store.blocks))
        self.loads = Counter(f"{ns}_block_loads", "Total number of remote block loading attempts.",
                             registry=registry)
        self.load_failures = Counter(f"{ns}_block_load_failures", "Total number of failed remote block loading "
                                     "attempts.", registry=registry)
        self.drops = Counter(f"{ns}_block_drops", "Total number of local blocks that were dropped.",
                             registry=registry)
        self.blocks_queried = Histogram(f"{ns}_series_blocks_queried", "Number of blocks in a bucket store that "
                                        "were touched to satisfy a query.", registry=registry,
                                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
        self.result_series = Histogram(f"{ns}_series_result_series", "Number of series observed in the final "
                                       "result of a query after merging identical series from different blocks.",
                                       registry=registry, buckets=(1, 10, 100, 1000, 10_000, 100_000, 1_000_000))
        self.get_all = Histogram(f"{ns}_series_get_all_duration_seconds", "Time it takes until all per-block "
                                 "prepares and loads for a query are finished.", registry=registry)
        self.dropped = Counter(f"{ns}_queries_dropped", "Number of queries that were dropped due to the limit.",
                               ["reason"], registry=registry)
        self.lazy_unloads = Counter("thanos_bucket_store_indexheader_lazy_unload", "Total number of index-header "
                                    "lazy unload operations.", registry=registry)
        gate_max = Gauge(f"{ns}_series_gate_queries_max", "Maximum number of concurrent queries.", registry=registry)
        gate_max.set(store.cfg.series_max_concurrency)
        Gauge(f"{ns}_series_gate_queries_in_flight", "Number of queries that are currently in flight.",
              registry=registry).set_function(lambda: store.series_in_flight)

    def observe_series(self, blocks: int, series: int, seconds: float) -> None:
        self.blocks_queried.observe(blocks)
        self.result_series.observe(series)
        self.get_all.observe(seconds)
