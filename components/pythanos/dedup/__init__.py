"""Replica de-duplication, as Thanos does it (``pkg/dedup``), for the querier and the compactor.

HA Prometheus pairs scrape the same targets at different phases, so once the replica label is
removed the same series arrives several times with slightly different timestamps and values.
Merging them naively would double the sample rate; Thanos' *penalty* algorithm instead stays
on one replica and switches only across a gap (see :func:`dedup_samples`).

What the querier does per series, reproduced here (thanos-wire-and-storage.md section 5):

1. the proxy chains the chunks of all stores and drops byte-identical ones, then orders them
   by (min_time, max_time, data descending) — :func:`split_replicas` step 1;
2. ``dedup.NewOverlapSplit`` turns them into "fake replicas" of non-overlapping chunks — step 2;
3. each replica is read on its own; for ``rate``/``increase``/``irate``/``resets`` (and
   ``xrate``/``xincrease``) Thanos reads raw chunks through ``ApplyCounterResetsSeriesIterator``,
   which drops NaNs and turns the counter into a running total (:func:`apply_counter_resets`);
   samples outside the querier's ``[mint, maxt]`` are then dropped;
4. replicas are merged by the penalty iterator chain ``dedup(dedup(r0, r1), r2)...`` (with the
   counter error adjustment for the four counter functions), or by Prometheus'
   ``ChainedSeriesMerge`` with ``--deduplication.func=chain``.

The sequential walks (penalty, chain, counter totals) run in the C extension
:mod:`pythanos.dedup._dedup`, which releases the GIL on large inputs. Values are copied
bit-exactly: stale markers (``0x7ff0000000000002``) and other NaNs pass through like ordinary
samples, except on the counter path where Thanos drops them too.

Bounded by the input: the penalty merge gives the answers of Thanos' iterator tree but in
O(n log k) for n samples of k replicas (the tree itself costs O(k) per sample and more:
2,000 replicas of one series took minutes); every function takes ``deadline`` (a
``time.monotonic()`` value) and raises :class:`DeadlineExceeded` (a ``TimeoutError``) once it
passes, so a query's timeout stops the work itself. Timestamps must lie within +-2^60 ms
(ValueError otherwise): beyond that Thanos' penalty arithmetic wraps around.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from ..tsdb.chunkenc import decode_xor_many
from . import _dedup
from ._dedup import DeadlineExceeded

__all__ = [
    "COUNTER_FUNCS",
    "COUNTER_RESET_FUNCS",
    "DeadlineExceeded",
    "FUNCS",
    "INITIAL_PENALTY_MS",
    "apply_counter_resets",
    "counter_resets_inplace",
    "dedup_chunks",
    "dedup_many",
    "dedup_samples",
    "split_replicas",
]

COUNTER_FUNCS = frozenset({"rate", "increase", "irate", "resets"})
"""PromQL functions for which Thanos adjusts counter values when switching replicas (``isCounter``)."""

COUNTER_RESET_FUNCS = COUNTER_FUNCS | {"xrate", "xincrease"}
"""Functions for which Thanos' querier reads chunks as running totals (``aggrsFromFunc`` -> COUNTER)."""

FUNCS = ("penalty", "chain")
"""``--deduplication.func`` values."""

INITIAL_PENALTY_MS = 5000

Replica = tuple[np.ndarray, np.ndarray]
RawChunk = tuple[int, int, bytes]

_I8 = np.dtype(np.int64)
_F8 = np.dtype(np.float64)
_EMPTY_T = np.empty(0, _I8)
_EMPTY_V = np.empty(0, _F8)


def _arrays(t, v) -> Replica:
    t = np.ascontiguousarray(t, dtype=_I8)
    v = np.ascontiguousarray(v, dtype=_F8)
    if t.ndim != 1 or t.shape != v.shape:
        raise ValueError(f"replica t and v must be 1-D and of equal length, got {t.shape} and {v.shape}")
    return t, v


def apply_counter_resets(t: np.ndarray, v: np.ndarray) -> Replica:
    """One replica as Thanos' querier reads a counter (``ApplyCounterResetsSeriesIterator``).

    NaNs (stale markers included) are dropped; each value becomes a running total that adds
    the increase, or the whole value after a reset; a repeated timestamp only updates the
    reference value and a sample going back in time is skipped. Thanos does this so that
    replicas stay comparable across restarts; as a side effect ``resets()`` sees none.
    """
    t, v = _arrays(t, v)
    to = np.empty(len(t), _I8)
    vo = np.empty(len(t), _F8)
    n = _dedup.counter_resets(t, v, to, vo)
    return to[:n], vo[:n]


def counter_resets_inplace(t: np.ndarray, v: np.ndarray) -> int:
    """:func:`apply_counter_resets` written over its own input (contiguous, writable int64 and
    float64 views); returns how many samples remain at the front. Safe because the kernel
    writes sample ``m`` only after reading sample ``i >= m``."""
    return _dedup.counter_resets(t, v, t, v)


def _bound(t: np.ndarray, v: np.ndarray, mint: Optional[int], maxt: Optional[int]) -> Replica:
    lo = 0 if mint is None else int(np.searchsorted(t, mint, "left"))
    hi = len(t) if maxt is None else int(np.searchsorted(t, maxt, "right"))
    if lo == 0 and hi == len(t):
        return t, v
    return t[lo:hi], v[lo:hi]


def dedup_samples(replicas: Sequence[tuple[np.ndarray, np.ndarray]], *, counter: bool = False,
                  func: str = "penalty", counter_resets: Optional[bool] = None,
                  mint: Optional[int] = None, maxt: Optional[int] = None,
                  deadline: Optional[float] = None) -> Replica:
    """Merge the replicas of one series (each ``(t int64 ms ascending, v float64)``) into one.

    ``func="penalty"`` (Thanos' default): per step, replica A is sought to ``lastT + 1 + penA``
    and B to ``lastT + 1 + penB``; the earlier sample wins (ties: A) and the loser gets a penalty
    of ``2 * (t - lastT)`` (5000 ms before the first pick), so the walk stays on one replica and
    switches only across a gap of about twice its scrape interval. More than two replicas are
    folded left: ``dedup(dedup(r0, r1), r2)...``. ``func="chain"``: Prometheus'
    ``ChainedSeriesMerge``, one sample per timestamp.

    ``counter=True`` (the query's function is in :data:`COUNTER_FUNCS`) adds Thanos' counter
    error adjustment on replica switches (penalty only) and, unless ``counter_resets=False``,
    first reads every replica as a running total (:func:`apply_counter_resets`), exactly like
    Thanos' querier. ``mint``/``maxt`` drop samples outside the querier's range *after* the
    running totals are formed and before merging (Thanos' ``boundedSeriesIterator``).
    ``deadline``: a ``time.monotonic()`` value after which :class:`DeadlineExceeded` is raised.
    """
    if func not in FUNCS:
        raise ValueError(f"unknown deduplication func {func!r}; expected one of {', '.join(FUNCS)}")
    if counter_resets is None:
        counter_resets = counter
    reps = []
    for t, v in replicas:
        t, v = _arrays(t, v)
        if counter_resets:
            t, v = apply_counter_resets(t, v)
        reps.append(_bound(t, v, mint, maxt))
    if not reps:
        return _EMPTY_T.copy(), _EMPTY_V.copy()
    if len(reps) == 1:  # Thanos passes a lone replica through untouched
        return reps[0]
    total = sum(len(t) for t, _ in reps)
    to = np.empty(total, _I8)
    vo = np.empty(total, _F8)
    ts = tuple(t for t, _ in reps)
    vs = tuple(v for _, v in reps)
    if func == "chain":
        n = _dedup.chain(ts, vs, to, vo, deadline)
    else:
        n = _dedup.penalty(ts, vs, bool(counter), to, vo, deadline)
    return to[:n], vo[:n]


def split_replicas(chunks: Iterable[RawChunk]) -> list[list[RawChunk]]:
    """Chunks of one label set from all stores -> "fake replicas" of non-overlapping chunks.

    First the proxy's ``responseDeduplicator``: byte-identical chunk data is kept once and the
    rest ordered by min_time, then max_time, then data *descending* (Thanos' ``AggrChunk.Compare``
    orders equal-range chunks by ``bytes.Compare`` reversed). Then ``NewOverlapSplit``: each
    chunk goes to the first replica whose last chunk ends before the chunk's min_time, else to a
    new replica. The order matters: it decides which replica is "A" and wins ties.
    """
    if not isinstance(chunks, (list, tuple)):
        chunks = list(chunks)
    if len(chunks) <= 2:  # a small query's usual case: one chunk per store, as the general path orders them
        cs = [(int(c[0]), int(c[1]), bytes(c[2])) for c in chunks]
        if len(cs) < 2:
            return [cs] if cs else []
        a, b = cs
        if a[2] == b[2]:
            return [[a]]
        if (b[0], b[1]) < (a[0], a[1]) or ((b[0], b[1]) == (a[0], a[1]) and b[2] > a[2]):
            a, b = b, a
        return [[a, b]] if a[1] < b[0] else [[a], [b]]
    return _split_general(chunks)


def _split_general(chunks: Iterable[RawChunk]) -> list[list[RawChunk]]:
    """:func:`split_replicas` for any number of chunks."""
    seen: dict[bytes, RawChunk] = {}
    for c in chunks:
        mint, maxt, data = int(c[0]), int(c[1]), bytes(c[2])
        seen.setdefault(data, (mint, maxt, data))
    uniq = sorted(seen.values(), key=lambda c: c[2], reverse=True)
    uniq.sort(key=lambda c: (c[0], c[1]))  # stable: equal ranges keep data-descending order
    reps: list[list[RawChunk]] = []
    for c in uniq:
        for r in reps:
            if r[-1][1] < c[0]:
                r.append(c)
                break
        else:
            reps.append([c])
    return reps


def _decode_replicas(reps: list[list[RawChunk]]) -> list[Replica]:
    """Decode every chunk in one C call, then cut the samples per replica."""
    flat = [c for r in reps for c in r]
    if not flat:
        return [(_EMPTY_T, _EMPTY_V)]
    lengths = np.fromiter((len(c[2]) for c in flat), _I8, len(flat))
    offsets = np.zeros(len(flat), _I8)
    np.cumsum(lengths[:-1], out=offsets[1:])
    counts, t, v = decode_xor_many(b"".join(c[2] for c in flat), offsets, lengths)
    ends = np.cumsum(counts)
    out = []
    ci = 0
    for r in reps:
        lo = int(ends[ci - 1]) if ci else 0
        ci += len(r)
        hi = int(ends[ci - 1])
        rt, rv = t[lo:hi], v[lo:hi]
        if len(rt) > 1 and not bool(np.all(rt[1:] > rt[:-1])):
            # Thanos' chunkSeriesIterator never goes back in time across chunks.
            prev = np.maximum.accumulate(rt)
            keep = np.ones(len(rt), bool)
            keep[1:] = rt[1:] > prev[:-1]
            rt, rv = rt[keep], rv[keep]
        out.append((rt, rv))
    return out


def dedup_chunks(chunks: Sequence[tuple[int, int, bytes]], *, counter: bool = False, func: str = "penalty",
                 counter_resets: Optional[bool] = None, mint: Optional[int] = None,
                 maxt: Optional[int] = None, deadline: Optional[float] = None) -> Replica:
    """The querier's whole path for one label set: chunks ``(min_time, max_time, XOR data)`` from
    all stores, in any order -> merged ``(t, v)``.

    Drops byte-identical chunks and overlap-splits the rest (:func:`split_replicas`), decodes,
    then merges with :func:`dedup_samples` (same ``counter``/``func``/``counter_resets``/
    ``mint``/``maxt``/``deadline`` meaning). Raises ``CorruptChunkError`` for undecodable chunk data.
    """
    if func not in FUNCS:
        raise ValueError(f"unknown deduplication func {func!r}; expected one of {', '.join(FUNCS)}")
    reps = _decode_replicas(split_replicas(chunks))
    return dedup_samples(reps, counter=counter, func=func, counter_resets=counter_resets, mint=mint, maxt=maxt,
                         deadline=deadline)


_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def dedup_many(items: Sequence[tuple], *, counter: bool = False, func: str = "penalty",
               counter_resets: Optional[bool] = None, mint: Optional[int] = None,
               maxt: Optional[int] = None, deadline: Optional[float] = None) -> list[tuple]:
    """:func:`dedup_chunks` for many label sets at once: ``items`` are ``(labels, chunks)`` with
    chunks ``(min_time, max_time, encoding, XOR data)``; returns ``(labels, t, v)`` for those
    with samples left, in the order given.

    A small query reads hundreds of label sets of a few chunks each, where a call per label set
    would cost more than the work: here the replicas are split per label set, every chunk is
    decoded in one C call and every label set is read and merged in another
    (``_dedup.batch``). The answers are those of :func:`dedup_chunks`, sample for sample;
    ``deadline`` as there."""
    if func not in FUNCS:
        raise ValueError(f"unknown deduplication func {func!r}; expected one of {', '.join(FUNCS)}")
    if counter_resets is None:
        counter_resets = counter
    datas: list = []
    rep_sizes: list = []
    series_nreps: list = []
    for _, chunks in items:
        if len(chunks) == 1 and type(chunks[0][3]) is bytes:  # one chunk: one replica of it
            datas.append(chunks[0][3])
            rep_sizes.append(1)
            series_nreps.append(1)
            continue
        reps = split_replicas([(c[0], c[1], c[3]) for c in chunks])
        for r in reps:
            rep_sizes.append(len(r))
            datas.extend(c[2] for c in r)
        series_nreps.append(len(reps))
    if not datas:
        return []
    lengths = np.fromiter(map(len, datas), _I8, len(datas))
    offsets = np.zeros(len(datas), _I8)
    np.cumsum(lengths[:-1], out=offsets[1:])
    counts, t, v = decode_xor_many(b"".join(datas), offsets, lengths)
    del datas
    sample_ends = np.cumsum(counts, dtype=_I8)
    rep_bounds = np.zeros(len(rep_sizes) + 1, _I8)
    rep_bounds[1:] = sample_ends[np.cumsum(np.asarray(rep_sizes, _I8)) - 1]
    series_reps = np.zeros(len(items) + 1, _I8)
    np.cumsum(np.asarray(series_nreps, _I8), out=series_reps[1:])
    t = np.ascontiguousarray(t, _I8)
    v = np.ascontiguousarray(v, _F8)
    to = np.empty(len(t), _I8)
    vo = np.empty(len(t), _F8)
    bounds = np.empty(len(items) + 1, _I8)
    try:
        _dedup.batch(t, v, rep_bounds, series_reps, func == "chain", bool(counter), bool(counter_resets),
                     _I64_MIN if mint is None else int(mint), _I64_MAX if maxt is None else int(maxt), to, vo, bounds,
                     deadline)
    except ValueError as e:
        s = getattr(e, "series", None)
        if s is None:
            raise
        raise ValueError(f"series {_fmt_labels(items[s][0])}: {e}") from None
    out = []
    for (lbls, _), a, b in zip(items, bounds[:-1].tolist(), bounds[1:].tolist()):
        if b > a:
            out.append((lbls, to[a:b], vo[a:b]))
    return out


def _fmt_labels(lbls) -> str:
    try:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in (lbls.items() if hasattr(lbls, "items") else lbls)) + "}"
    except (TypeError, ValueError):
        return repr(lbls)
