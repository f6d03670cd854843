"""The PromQL engine's view of the stores for one query (Thanos ``pkg/query/querier.go``).

The engine runs in a worker thread and calls :meth:`StoreQueryable.select`, which runs the
fan-out on the querier's event loop and waits for it. Series of one label set are then turned
into samples:

* with de-duplication (``dedup`` and at least one replica label), every label set goes through
  :func:`pythanos.dedup.dedup_chunks` (byte-identical chunks dropped, overlap split, penalty
  merge; counter adjustment for rate/increase/irate/resets, as ``hints.func`` says);
* without it, a label set from one endpoint is decoded as it is (all such series in one C call)
  and one sent by several endpoints is merged 1:1 by timestamp (Prometheus' chained merge).
"""
from __future__ import annotations

import asyncio
import sys
import threading
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..dedup import COUNTER_FUNCS, COUNTER_RESET_FUNCS, counter_resets_inplace, dedup_chunks
from ..promql.engine import STALE_NAN_BITS
from ..promql.errors import ExecutionError, PromQLError, QueryTimeoutError
from ..tsdb.chunkenc import decode_xor_many, decode_xor_many_into
from ..tsdb.labels import Matcher
from .proxy import Proxy, StoreFetchError

__all__ = ["QueryOptions", "StoreQueryable", "StorageError"]

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

    @property
    def deduplicating(self) -> bool:
        return self.dedup and bool(self.replica_labels)


@dataclass
class StoreQueryable:
    proxy: Proxy
    loop: asyncio.AbstractEventLoop
    opts: QueryOptions
    timeout: Optional[float] = None
    warnings: list = field(default_factory=list)

    def select(self, matchers: Sequence[Matcher], mint_ms: int, maxt_ms: int, hints=None) -> list:
        o = self.opts
        fut = asyncio.run_coroutine_threadsafe(self.proxy.fetch(
            matchers, mint_ms, maxt_ms, replica_labels=o.replica_labels if o.deduplicating else (),
            partial=o.partial, store_matchers=o.store_matchers, timeout=self.timeout,
            max_resolution_window=o.max_resolution_window), self.loop)
        try:
            got = fut.result()
        except StoreFetchError as e:
            raise StorageError(str(e)) from None
        except asyncio.TimeoutError:
            raise QueryTimeoutError("query timed out in query execution") from None
        for w in got.warnings:
            if w not in self.warnings:
                self.warnings.append(w)
        func = getattr(hints, "func", "") if hints is not None else ""
        return to_samples(got.series, got.sources, mint_ms, maxt_ms, o, func)


def to_samples(series: dict, sources: dict, mint: int, maxt: int, o: QueryOptions, func: str = "") -> list:
    """(labels, t, v) for every label set, samples in ``[mint, maxt]``; see the module doc."""
    if any(c[2] != XOR for chunks in series.values() for c in chunks):
        for lbls, chunks in series.items():
            if any(c[2] != XOR for c in chunks):
                raise ExecutionError(f"native histogram chunks are not supported yet (series {_fmt(lbls)})")
    resets = func in COUNTER_RESET_FUNCS
    if not o.deduplicating and all(n == 1 for n in sources.values()):
        # the common case, one source per label set: decoded batch by batch as the engine reads
        return LazySelection(list(series.items()), mint, maxt, counter_resets=resets)
    out = _Selected()
    single: list = []  # (labels, chunks) decoded together
    for lbls, chunks in series.items():
        if o.deduplicating:
            t, v = dedup_chunks([(c[0], c[1], c[3]) for c in chunks], counter=func in COUNTER_FUNCS,
                                func=o.dedup_func, counter_resets=resets, mint=mint, maxt=maxt)
            if len(t):
                out.append((lbls, t, v))
        elif sources.get(lbls, 1) > 1:
            t, v = dedup_chunks([(c[0], c[1], c[3]) for c in chunks], func="chain", mint=mint, maxt=maxt)
            if len(t):
                out.append((lbls, t, v))
        else:
            single.append((lbls, chunks))
    if single:
        out.extend(_decode_single(single, mint, maxt, counter_resets=resets))
    out.sort(key=_first)
    return out


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


def _decode_single(items: list, mint: int, maxt: int, counter_resets: bool = False) -> list:
    """All of ``items`` decoded at once (see :class:`LazySelection`), in label order."""
    return list(LazySelection(items, mint, maxt, counter_resets=counter_resets))


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
    selection; so do we, in place in the decode buffer."""

    stale_free = False  # unknown for the whole selection; each batch says

    def __init__(self, items: list, mint: int, maxt: int, *, counter_resets: bool = False) -> None:
        items = sorted(items, key=_first)
        self.mint, self.maxt, self.counter_resets = mint, maxt, counter_resets
        self.labels = [lbls for lbls, _ in items]
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
        bounds = sample_at_chunk[self.chunk_at[a:b + 1] - ca]
        starts, ends = bounds[:-1], bounds[1:]
        out = _Selected()
        if self.counter_resets:
            ends = starts.copy()
            for i, (s, e) in enumerate(zip(starts.tolist(), bounds[1:].tolist())):
                ends[i] = s + counter_resets_inplace(t[s:e], v[s:e])
            out.stale_free = True  # the running totals drop every NaN
        else:
            # one pass over the batch instead of one per series in the engine
            out.stale_free = not bool((v.view(np.uint64) == STALE_NAN_BITS).any())
        # each series cut to [mint, maxt] (its samples are in time order), all bisected at once
        lo = search_many(t, starts, ends, self.mint, right=False)
        hi = search_many(t, starts, ends, self.maxt, right=True)
        out.extend((lbls, t[x:y], v[x:y]) for lbls, x, y in zip(self.labels[a:b], lo.tolist(), hi.tolist()) if y > x)
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
