"""The PromQL engine's view of the stores for one query (Thanos ``pkg/query/querier.go``).

The engine runs in a worker thread and calls :meth:`StoreQueryable.select`, which runs the
fan-out on the querier's event loop and waits for it. Series of one label set are then turned
into samples:

* with de-duplication (``dedup`` and at least one replica label), every label set goes through
  :func:`pythanos.dedup.dedup_chunks` (byte-identical chunks dropped, overlap split, penalty
  merge; counter adjustment for rate/increase/irate/resets, as ``hints.func`` says);
* without it, a label set from one endpoint is decoded as it is (all such series in one C call)
  and one sent by several endpoints is merged 1:1 by timestamp (Prometheus' chained merge).

Downsampled data: each selection asks for the aggregates its function needs and at most the
resolution ``max_source_resolution`` allows (:mod:`pythanos.query.downsampled`); chunks that
arrive with aggregates are read as Thanos reads them (the chosen aggregate, the average of sum and
count, or the counter as a running total), on whole arrays like raw chunks.
"""
from __future__ import annotations

import asyncio
import concurrent.futures as _cf
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from ..dedup import (COUNTER_FUNCS, COUNTER_RESET_FUNCS, DeadlineExceeded, counter_resets_inplace, dedup_many,
                     dedup_samples)
from ..promql.engine import STALE_NAN_BITS
from ..promql.errors import ExecutionError, PromQLError, QueryTimeoutError
from ..promql.stop import StopToken
from ..tsdb.chunkenc import decode_xor_many, decode_xor_many_into
from ..tsdb.labels import Matcher
from .downsampled import (DEFAULT_AGGRS, UnsupportedChunk, aggrs_from_func, has_aggregates,
                          max_resolution_from_hints, overlap_split, pick, remove_identical)
from .proxy import Proxy, StoreFetchError

__all__ = ["QueryOptions", "SelectOnLoop", "StoreQueryable", "StorageError"]

XOR = 0  # thanos Chunk.Encoding


class StorageError(PromQLError):
    """A store failed and partial response is off. Thanos answers ``execution`` (422) here, not
    Prometheus' ``internal``: its querier's error is not a promql.ErrStorage."""

    error_type = "execution"
    status = 422


@dataclass
class QueryOptions:
    dedup: bool = True
    replica_labels: Sequence[str] = ()
    partial: bool = True
    store_matchers: Optional[list] = None
    max_resolution_window: int = 0
    dedup_func: str = "penalty"
    shard_info: Optional[object] = None  # an rpc_pb2.ShardInfo from the request's shard_info

    @property
    def deduplicating(self) -> bool:
        return self.dedup and bool(self.replica_labels)


@dataclass
class StoreQueryable:
    """``stop``: the query's deadline (``timeout`` from now unless ``deadline`` is given) and cancel
    flag; fan-outs get what is left of the time, decoding and de-duplication stop at it."""

    proxy: Proxy
    loop: asyncio.AbstractEventLoop
    opts: QueryOptions
    timeout: Optional[float] = None
    warnings: list = field(default_factory=list)
    deadline: Optional[float] = None  # time.monotonic(); from timeout when not given
    stop: StopToken = field(default_factory=StopToken)

    def __post_init__(self) -> None:
        if self.deadline is None and self.timeout:
            self.deadline = time.monotonic() + self.timeout
        if self.stop.deadline is None:
            self.stop.deadline = self.deadline

    def select(self, matchers: Sequence[Matcher], mint_ms: int, maxt_ms: int, hints=None) -> list:
        """The engine's select, from a worker thread: the fan-out runs on the event loop."""
        if _on_loop():
            raise SelectOnLoop("a selection outside the query's plan cannot be made on the event loop")
        fut = asyncio.run_coroutine_threadsafe(self.fetch(matchers, mint_ms, maxt_ms, hints), self.loop)
        try:
            got = fut.result(self.stop.remaining())
        except _cf.TimeoutError:
            fut.cancel()  # the fan-out's gRPC calls are cancelled with it
            self.stop.check("query execution")
            raise QueryTimeoutError("query timed out in query execution") from None
        return self.samples(got, mint_ms, maxt_ms, hints)

    async def fetch(self, matchers: Sequence[Matcher], mint_ms: int, maxt_ms: int, hints=None):
        """The fan-out of one selection (on the event loop); :meth:`samples` turns it into series."""
        o = self.opts
        func = getattr(hints, "func", "") if hints is not None else ""
        rng = getattr(hints, "range", 0) if hints is not None else 0
        self.stop.check("query execution")
        left = self.stop.remaining()
        if left is not None and left <= 0:  # the deadline is now: no time left for a fan-out
            raise QueryTimeoutError("query timed out in query execution")
        try:
            got = await self.proxy.fetch(
                matchers, mint_ms, maxt_ms, replica_labels=o.replica_labels if o.deduplicating else (),
                partial=o.partial, store_matchers=o.store_matchers, timeout=left,
                max_resolution_window=max_resolution_from_hints(o.max_resolution_window, rng, func),
                aggregates=aggrs_from_func(func), shard_info=o.shard_info)
        except StoreFetchError as e:
            raise StorageError(str(e)) from None
        except asyncio.TimeoutError:
            raise QueryTimeoutError("query timed out in query execution") from None
        # an answer completed by the deadline's warnings is no answer: the query has timed out
        self.stop.check("query execution")
        for w in got.warnings:
            if w not in self.warnings:
                self.warnings.append(w)
        return got

    def samples(self, got, mint_ms: int, maxt_ms: int, hints=None) -> list:
        """What :meth:`fetch` brought, as the engine's series (decoded, de-duplicated)."""
        func = getattr(hints, "func", "") if hints is not None else ""
        self.stop.check("query execution")
        return to_samples(got.series, got.sources, mint_ms, maxt_ms, self.opts, func, aggrs_from_func(func),
                          deadline=self.stop.deadline, check=self.stop.check)


class SelectOnLoop(RuntimeError):
    """The engine asked for a selection while evaluating on the event loop (where waiting for
    the fan-out would deadlock): the caller evaluates the query in a worker thread instead."""


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def to_samples(series: dict, sources: dict, mint: int, maxt: int, o: QueryOptions, func: str = "",
               aggrs: Optional[tuple] = None, deadline: Optional[float] = None,
               check: Optional[Callable[[], None]] = None) -> list:
    """(labels, t, v) for every label set, samples in ``[mint, maxt]``; see the module doc.
    ``aggrs``: what the selection asked for (``aggrs_from_func(func)`` when not given).
    ``deadline`` (``time.monotonic()``): the query's; de-duplication past it stops with
    :class:`QueryTimeoutError` ("query timed out in query execution", as Prometheus says).
    ``check``: raises when the query must stop; called before every batch a lazy selection decodes."""
    try:
        return _to_samples(series, sources, mint, maxt, o, func, aggrs, deadline, check)
    except DeadlineExceeded:
        raise QueryTimeoutError("query timed out in query execution") from None


def _to_samples(series: dict, sources: dict, mint: int, maxt: int, o: QueryOptions, func: str,
                aggrs: Optional[tuple], deadline: Optional[float], check: Optional[Callable[[], None]]) -> list:
    if aggrs is None:
        aggrs = aggrs_from_func(func)
    if any(c[2] != XOR for chunks in series.values() for c in chunks if len(c) == 4):
        for lbls, chunks in series.items():
            if any(c[2] != XOR for c in chunks if len(c) == 4):
                raise ExecutionError(f"native histogram chunks are not supported yet (series {_fmt(lbls)})")
    resets = func in COUNTER_RESET_FUNCS
    if not o.deduplicating and all(n == 1 for n in sources.values()):
        # the common case, one source per label set: decoded batch by batch as the engine reads
        return LazySelection(list(series.items()), mint, maxt, counter_resets=resets, aggrs=aggrs, check=check)
    out = _Selected()
    single: list = []  # (labels, chunks) decoded together
    merged: list = []  # de-duplicated together (penalty or the configured func)
    chained: list = []  # several sources without de-duplication: Prometheus' chained merge
    for lbls, chunks in series.items():
        if (o.deduplicating or sources.get(lbls, 1) > 1) and has_aggregates(chunks):
            t, v = _merge_downsampled(lbls, chunks, aggrs, func, o, mint, maxt, resets, deadline)
            if len(t):
                out.append((lbls, t, v))
        elif o.deduplicating:
            merged.append((lbls, chunks))
        elif sources.get(lbls, 1) > 1:
            chained.append((lbls, chunks))
        else:
            single.append((lbls, chunks))
    if merged:
        out.extend(dedup_many(merged, counter=func in COUNTER_FUNCS, func=o.dedup_func, counter_resets=resets,
                              mint=mint, maxt=maxt, deadline=deadline))
    if chained:
        out.extend(dedup_many(chained, func="chain", mint=mint, maxt=maxt, deadline=deadline))
    if single:
        out.extend(_decode_single(single, mint, maxt, counter_resets=resets, aggrs=aggrs, check=check))
    out.sort(key=_first)
    return out


def _merge_downsampled(lbls, chunks: list, aggrs: tuple, func: str, o: QueryOptions, mint: int, maxt: int,
                       resets: bool, deadline: Optional[float] = None) -> tuple:
    """A label set with downsampled chunks from several endpoints, or under de-duplication, as
    Thanos' querier reads it: the proxy's chunk order without identical chunks; without
    de-duplication that is one series (aggregates, counter running totals, ``[mint, maxt]``),
    with it each "fake replica" of non-overlapping chunks is read so and the replicas are merged
    as raw ones are (penalty, with the counter adjustment for rate/increase/irate/resets)."""
    uniq = remove_identical(chunks)
    reps = []
    for rep in (overlap_split(uniq) if o.deduplicating else [uniq]):
        got = list(LazySelection([(lbls, rep)], mint, maxt, counter_resets=resets, aggrs=aggrs))
        reps.append((got[0][1], got[0][2]) if got else (np.empty(0, np.int64), np.empty(0, np.float64)))
    if not o.deduplicating:
        return reps[0]
    return dedup_samples(reps, counter=func in COUNTER_FUNCS, func=o.dedup_func, counter_resets=False,
                         deadline=deadline)


class _Selected(list):
    """A selection; ``stale_free`` says no value is a staleness marker (see ``Queryable.select``)."""

    stale_free = False


def _first(x):
    return x[0]


class _SamplePool:
    """Decode buffers kept across queries, as Go's heap keeps its pages.

    Decoding itself is cheap (tens of ms for 57M samples); what costs is faulting in fresh
    pages for the output (about 1-2 s per GB on a small VM): numpy's large arrays are mmapped
    and handed back to the kernel when a query ends. Buffers of big selections are therefore
    kept here; the engine gets views into them, and a buffer is reused only when no view is
    left (its reference count is back to the pool's own references), so a query never sees
    another's samples. At most ``max_bytes`` are kept (idle ones are dropped first)."""

    MIN_SAMPLES = 1 << 20  # smaller selections decode into fresh arrays

    def __init__(self, max_bytes: int = 2 << 30) -> None:
        self.max_bytes = max_bytes
        self.bufs: list = []  # [t int64[n], v float64[n]] pairs
        self.lock = threading.Lock()

    @staticmethod
    def _idle(pair: list) -> bool:
        # references to an idle array: the pair list's slot and getrefcount's argument; a view
        # (t[a:b], also of a view) holds one more on its base
        return sys.getrefcount(pair[0]) <= 2 and sys.getrefcount(pair[1]) <= 2

    def acquire(self, n: int) -> tuple:
        with self.lock:
            best = None
            for pair in self.bufs:
                if pair[0].size >= n and self._idle(pair) and (best is None or pair[0].size < best[0].size):
                    best = pair
            if best is not None:
                return best[0], best[1]
            size = n + n // 8
            t, v = np.empty(size, np.int64), np.empty(size, np.float64)
            kept = sum(p[0].size for p in self.bufs) * 16
            # make room: drop idle buffers, smallest first, until the new one fits
            for pair in sorted(self.bufs, key=lambda p: p[0].size):
                if kept + size * 16 <= self.max_bytes:
                    break
                if self._idle(pair):
                    self.bufs.remove(pair)
                    kept -= pair[0].size * 16
            if kept + size * 16 <= self.max_bytes:
                self.bufs.append([t, v])
            return t, v


_POOL = _SamplePool()


def _decode_single(items: list, mint: int, maxt: int, counter_resets: bool = False,
                   aggrs: tuple = DEFAULT_AGGRS, check: Optional[Callable[[], None]] = None) -> list:
    """All of ``items`` decoded at once (see :class:`LazySelection`), in label order."""
    return list(LazySelection(items, mint, maxt, counter_resets=counter_resets, aggrs=aggrs, check=check))


BATCH_SAMPLES = 1 << 22  # decoded samples per batch: 64 MB of int64 + float64


class LazySelection:
    """Single-source series of one selection, decoded batch by batch as they are read.

    Only the compressed chunks are kept (one joined buffer, the labels sorted as Thanos' proxy
    merges them; topk/bottomk ties depend on that order). Iterating yields ``(labels, t, v)``
    with the samples in ``[mint, maxt]``; :meth:`batches` yields the same as lists of about
    :data:`BATCH_SAMPLES` samples, so an engine that is done with one batch before it asks for
    the next never holds the whole selection decoded: a day of 10k series is 0.9 GB as arrays
    and about 25 MB as chunks. ``counter_resets``: under rate/increase/irate/resets/xrate/xincrease
    Thanos reads raw chunks as running totals (``aggrsFromFunc`` -> COUNTER ->
    ``ApplyCounterResetsIterator``) even without de-duplication, before cutting to the
    selection; so do we, in place in the decode buffer. ``aggrs``: what the selection asked the
    stores for; of a chunk with aggregates that aggregate is decoded (or its raw chunk), and for
    the default COUNT and SUM the sum and count chunks, divided sample by sample
    (:mod:`pythanos.query.downsampled`). The chunks of a series are read one after another as
    Thanos' ``chunkSeriesIterator`` does: a chunk that overlaps the one before starts after the
    last sample read."""

    stale_free = False  # unknown for the whole selection; each batch says

    def __init__(self, items: list, mint: int, maxt: int, *, counter_resets: bool = False,
                 aggrs: tuple = DEFAULT_AGGRS, check: Optional[Callable[[], None]] = None) -> None:
        items = sorted(items, key=_first)
        self.mint, self.maxt, self.counter_resets = mint, maxt, counter_resets
        self.check = check  # the query's stop check, before every batch
        self.labels = [lbls for lbls, _ in items]
        self.counts_buf = None  # downsampled averages: the count chunks (see _averages)
        if any(has_aggregates(chunks) for _, chunks in items):
            datas, counts = _picked(items, aggrs)
            if counts:
                self._index_counts(counts, sum(len(chunks) for _, chunks in items))
        else:
            datas = [c[3] for _, chunks in items for c in chunks]
        per_series = np.fromiter((len(chunks) for _, chunks in items), np.int64, len(items))
        self.lengths = np.fromiter(map(len, datas), np.int64, len(datas))
        self.offsets = np.zeros(len(datas), np.int64)
        if len(datas) > 1:
            np.cumsum(self.lengths[:-1], out=self.offsets[1:])
        self.buf = b"".join(datas)
        del datas
        # the 2-byte big-endian sample count heading every XOR chunk sizes each batch up front
        raw = np.frombuffer(self.buf, np.uint8)
        heads = np.zeros(len(self.lengths), np.int64)
        ok = self.lengths >= 2
        heads[ok] = raw[self.offsets[ok]].astype(np.int64) << 8 | raw[self.offsets[ok] + 1]
        self.chunk_at = np.r_[0, np.cumsum(per_series)].astype(np.int64)  # series -> first chunk
        self.samples_at = np.r_[0, np.cumsum(heads)][self.chunk_at]  # series -> samples before it

    def _index_counts(self, counts: dict, n_chunks: int) -> None:
        """The count chunks of averaged chunks (chunk index -> data) as one buffer; ``count_len``
        is -1 for chunks read as they are."""
        idx = np.fromiter(counts.keys(), np.int64, len(counts))
        datas = list(counts.values())
        lens = np.fromiter(map(len, datas), np.int64, len(datas))
        offs = np.zeros(len(datas), np.int64)
        if len(datas) > 1:
            np.cumsum(lens[:-1], out=offs[1:])
        self.counts_buf = b"".join(datas)
        self.count_len = np.full(n_chunks, -1, np.int64)
        self.count_off = np.zeros(n_chunks, np.int64)
        self.count_len[idx] = lens
        self.count_off[idx] = offs

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        it = self.batches()
        while True:
            batch = next(it, None)
            if batch is None:
                return
            yield from batch
            del batch  # the next batch may then reuse this one's buffer

    def batches(self, max_samples: int = BATCH_SAMPLES):
        n = len(self.labels)
        a = 0
        while a < n:
            if self.check is not None:
                self.check()
            b = int(np.searchsorted(self.samples_at, self.samples_at[a] + max_samples, "right")) - 1
            b = min(max(b, a + 1), n)
            yield self._decode(a, b)
            a = b

    def _decode(self, a: int, b: int) -> "_Selected":
        ca, cb = int(self.chunk_at[a]), int(self.chunk_at[b])
        offsets, lengths = self.offsets[ca:cb], self.lengths[ca:cb]
        total = int(self.samples_at[b] - self.samples_at[a])
        if total >= _SamplePool.MIN_SAMPLES:
            t_out, v_out = _POOL.acquire(total)
            counts, n = decode_xor_many_into(self.buf, offsets, lengths, t_out, v_out)
            t, v = t_out[:n], v_out[:n]
            del t_out, v_out
        else:
            counts, t, v = decode_xor_many(self.buf, offsets, lengths)
        sample_at_chunk = np.r_[0, np.cumsum(counts)]
        if self.counts_buf is not None:
            self._averages(ca, cb, counts, sample_at_chunk, t, v)
        bounds = sample_at_chunk[self.chunk_at[a:b + 1] - ca]
        starts, ends = bounds[:-1], bounds[1:]
        out = _Selected()
        fixed: dict = {}
        if self.counter_resets:
            ends = starts.copy()
            for i, (s, e) in enumerate(zip(starts.tolist(), bounds[1:].tolist())):
                ends[i] = s + counter_resets_inplace(t[s:e], v[s:e])
            out.stale_free = True  # the running totals drop every NaN
        else:
            fixed = _skip_overlaps(t, v, sample_at_chunk, starts, self.chunk_at[a:b + 1] - ca)
            # one pass over the batch instead of one per series in the engine
            out.stale_free = not bool((v.view(np.uint64) == STALE_NAN_BITS).any())
        # each series cut to [mint, maxt] (its samples are in time order), all bisected at once
        lo = search_many(t, starts, ends, self.mint, right=False)
        hi = search_many(t, starts, ends, self.maxt, right=True)
        if fixed:
            lo, hi = lo.tolist(), hi.tolist()
            for i, (ts, vs) in fixed.items():
                x = int(np.searchsorted(ts, self.mint, "left"))
                y = int(np.searchsorted(ts, self.maxt, "right"))
                if y > x:
                    fixed[i] = (ts[x:y], vs[x:y])
                else:
                    fixed[i] = None
            for i, (lbls, x, y) in enumerate(zip(self.labels[a:b], lo, hi)):
                if i in fixed:
                    if fixed[i] is not None:
                        out.append((lbls, fixed[i][0], fixed[i][1]))
                elif y > x:
                    out.append((lbls, t[x:y], v[x:y]))
            return out
        out.extend((lbls, t[x:y], v[x:y]) for lbls, x, y in zip(self.labels[a:b], lo.tolist(), hi.tolist()) if y > x)
        return out

    def _averages(self, ca: int, cb: int, counts: np.ndarray, sample_at_chunk: np.ndarray, t: np.ndarray,
                  v: np.ndarray) -> None:
        """``AverageChunkIterator`` for the averaged chunks among ``[ca, cb)``: their sums were decoded
        into ``t``/``v``; their counts are decoded here and each sum becomes sum / count."""
        clen = self.count_len[ca:cb]
        sel = np.flatnonzero(clen >= 0)
        if not len(sel):
            return
        c2, t2, v2 = decode_xor_many(self.counts_buf, self.count_off[ca:cb][sel], clen[sel])
        if not np.array_equal(c2, counts[sel]):
            raise ExecutionError("sum and count iterator not aligned")
        # where each count sample's sum sample is: chunk start in the batch + index within the chunk
        first = np.r_[0, np.cumsum(c2)[:-1]]
        pos = np.repeat(sample_at_chunk[sel] - first, c2) + np.arange(len(t2), dtype=np.int64)
        if not np.array_equal(t[pos], t2):
            raise ExecutionError("sum and count timestamps not aligned")
        v[pos] = v[pos] / v2


def _picked(items: list, aggrs: tuple) -> tuple[list, dict]:
    """What to decode of every chunk of ``items`` (:func:`pythanos.query.downsampled.pick`): the data
    list, one per chunk, and the count chunks of averaged chunks by chunk index."""
    datas: list = []
    counts: dict = {}
    for lbls, chunks in items:
        try:
            for c in chunks:
                d, n = pick(c, aggrs)
                if n is not None:
                    counts[len(datas)] = n
                datas.append(d)
        except UnsupportedChunk as e:
            if e.encoding in (1, 2):
                raise ExecutionError(f"native histogram chunks are not supported yet (series {_fmt(lbls)})") from None
            raise ExecutionError(f"unsupported chunk encoding {e.encoding} (series {_fmt(lbls)})") from None
    return datas, counts


def _skip_overlaps(t: np.ndarray, v: np.ndarray, sample_at_chunk: np.ndarray, starts: np.ndarray,
                   series_chunk: np.ndarray) -> dict:
    """Thanos' ``chunkSeriesIterator`` reads the chunks of a series one after another and starts each
    next chunk after the last sample read (chunks are in order but may overlap). Only series where a
    chunk starts at or before the end of the one before need work (one vectorised check over the
    chunk starts); they come back as ``{series index in the batch: (t, v)}`` with those samples left
    out. ``series_chunk``: the first chunk of each series and the end, relative to the batch."""
    if len(sample_at_chunk) < 3:
        return {}
    pos = sample_at_chunk[:-1]
    ser = np.repeat(np.arange(len(starts)), np.diff(series_chunk))
    # the first sample of a non-empty chunk that does not start its series, against the one before
    m = (sample_at_chunk[1:] > pos) & (pos != starts[ser])
    p = pos[m]
    bad = ser[m][t[p] <= t[p - 1]]
    if not len(bad):
        return {}
    out = {}
    for i in np.unique(bad).tolist():
        keep_t, keep_v = [], []
        last = None
        for k in range(int(series_chunk[i]), int(series_chunk[i + 1])):
            ct = t[sample_at_chunk[k]:sample_at_chunk[k + 1]]
            cv = v[sample_at_chunk[k]:sample_at_chunk[k + 1]]
            if not len(ct):
                continue
            if last is not None:
                after = ct > last
                if not after.any():
                    continue  # the whole chunk is at or before the last sample read
                j = int(np.argmax(after))
                ct, cv = ct[j:], cv[j:]
            keep_t.append(ct)
            keep_v.append(cv)
            last = int(ct[-1])
        out[i] = (np.concatenate(keep_t), np.concatenate(keep_v))
    return out


def search_many(t: np.ndarray, starts: np.ndarray, ends: np.ndarray, x: int, *, right: bool) -> np.ndarray:
    """For each sorted run ``t[starts[i]:ends[i]]``, where ``x`` goes (``np.searchsorted`` with side
    left or right), as an index into ``t``: one bisection over all runs together, about 20 steps of
    whole-array work instead of one search call per series."""
    lo = np.array(starts, dtype=np.int64)
    hi = np.array(ends, dtype=np.int64)
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) >> 1
        tm = t[np.where(active, mid, 0)]
        up = ((tm <= x) if right else (tm < x)) & active
        lo = np.where(up, mid + 1, lo)
        hi = np.where(active & ~up, mid, hi)


def _fmt(lbls) -> str:
    return "{" + ", ".join(f'{n}="{v}"' for n, v in lbls) + "}"
