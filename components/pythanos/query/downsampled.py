"""How the querier asks for and reads downsampled data (Thanos ``pkg/query/querier.go``, ``iter.go``).

Asking: every selection sends ``aggregates`` from the function around the selector
(:func:`aggrs_from_func`, Thanos' ``aggrsFromFunc``) and ``max_resolution_window`` from
``max_source_resolution``, lowered to half the range for functions that need two samples
(:func:`max_resolution_from_hints`, ``maxResolutionFromSelectHints``).

Reading (``chunkSeries.Iterator``): a store answers raw chunks of raw blocks and, for downsampled
blocks, the requested aggregates of each chunk as separate XOR chunks. Per chunk, :func:`pick`
chooses what to decode:

* one aggregate requested (COUNT, SUM, MIN, MAX, COUNTER): that aggregate, else the raw chunk
  (``getFirstIterator(c.X, c.Raw)``);
* COUNT and SUM (the default): the raw chunk, else ``sum / count`` sample by sample
  (``AverageChunkIterator``).

The chunks of a series are then read one after another, each new chunk skipping samples not after
the last one read (``chunkSeriesIterator``), or, for COUNTER, as one running total that hides
counter resets (``ApplyCounterResetsSeriesIterator``: a counter chunk starts with the first raw
sample and ends with the last raw value repeating the last timestamp, which only updates the value
a following chunk is compared with). Decoding happens on whole arrays in
:class:`pythanos.query.queryable.LazySelection`; this module holds the per-chunk choices and the
chunk order the proxy gives when the same series comes from several stores.
"""
from __future__ import annotations

from functools import cmp_to_key
from typing import Optional, Sequence

from ..promql.errors import ExecutionError
from ..storeapi.types import AGGR_COUNT, AGGR_COUNTER, AGGR_MAX, AGGR_MIN, AGGR_SUM

__all__ = ["DEFAULT_AGGRS", "TWO_SAMPLE_FUNCS", "COUNTER_AGGR_FUNCS", "UnsupportedChunk", "aggrs_from_func",
           "max_resolution_from_hints", "pick", "has_aggregates", "remove_identical", "overlap_split"]

XOR = 0  # thanos Chunk.Encoding
EMPTY_XOR = b"\x00\x00"  # an XOR chunk of no samples

DEFAULT_AGGRS = (AGGR_COUNT, AGGR_SUM)

COUNTER_AGGR_FUNCS = frozenset({"increase", "rate", "irate", "resets", "xincrease", "xrate"})

TWO_SAMPLE_FUNCS = frozenset({"rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear",
                              "holt_winters", "double_exponential_smoothing"})
"""``promqlFuncRequiresTwoSamples``."""


def aggrs_from_func(f: str) -> tuple:
    """``aggrsFromFunc``: the aggregates a selection wrapped in ``f`` asks for."""
    if f == "min" or f.startswith("min_"):
        return (AGGR_MIN,)
    if f == "max" or f.startswith("max_"):
        return (AGGR_MAX,)
    if f == "count" or f.startswith("count_"):
        return (AGGR_COUNT,)
    if f.startswith("sum_"):  # a plain sum wants the samples themselves: the default
        return (AGGR_SUM,)
    if f in COUNTER_AGGR_FUNCS:
        return (AGGR_COUNTER,)
    return DEFAULT_AGGRS


def max_resolution_from_hints(max_resolution_ms: int, range_ms: int, func: str) -> int:
    """``maxResolutionFromSelectHints``: at most half the range for functions that need two samples."""
    if range_ms > 0 and func in TWO_SAMPLE_FUNCS:
        return min(max_resolution_ms, range_ms // 2)
    return max_resolution_ms


class UnsupportedChunk(Exception):
    """A chunk the querier cannot read as floats; ``encoding`` says which."""

    def __init__(self, encoding: int) -> None:
        super().__init__(encoding)
        self.encoding = encoding


def has_aggregates(chunks: Sequence) -> bool:
    for c in chunks:
        if len(c) > 4:
            return True
    return False


def _xor(sub: tuple) -> bytes:
    if sub[0] != XOR:
        raise UnsupportedChunk(sub[0])
    return sub[1]


def pick(c: tuple, aggrs: tuple) -> tuple[bytes, Optional[bytes]]:
    """What to decode of chunk ``c`` (see the module doc): ``(data, None)``, or ``(sum data, count
    data)`` for an average. Raises :class:`UnsupportedChunk` for a non-XOR chunk and
    ``ExecutionError`` (Thanos' iterator errors) when the chunk lacks what is asked for."""
    if len(c) == 4:
        if c[2] != XOR:
            raise UnsupportedChunk(c[2])
        return c[3], None
    ag = c[4]
    raw = (c[2], c[3]) if c[3] else None
    if len(aggrs) == 1:
        sub = ag.get(aggrs[0])
        if sub is None:
            sub = raw
        if sub is None:
            if aggrs[0] == AGGR_COUNTER:
                # ApplyCounterResetsSeriesIterator moves past a failing chunk iterator unnoticed
                return EMPTY_XOR, None
            raise ExecutionError("no valid chunk found")
        return _xor(sub), None
    if raw is not None:
        return _xor(raw), None
    s, n = ag.get(AGGR_SUM), ag.get(AGGR_COUNT)
    if s is None or n is None:
        raise ExecutionError("no valid chunk found")
    return _xor(s), _xor(n)


# --- the proxy's chunk order for one series (pkg/store/proxy_merge.go, storepb AggrChunk.Compare) ---

def _fields(c: tuple) -> tuple:
    """(raw, count, sum, min, max, counter) of a chunk, each (encoding, data) or None."""
    if len(c) == 4:
        return (c[2], c[3]), None, None, None, None, None
    ag = c[4]
    raw = (c[2], c[3]) if c[3] else None
    return (raw, ag.get(AGGR_COUNT), ag.get(AGGR_SUM), ag.get(AGGR_MIN), ag.get(AGGR_MAX), ag.get(AGGR_COUNTER))


def _cmp_sub(m, b) -> int:
    """``storepb.Chunk.Compare``."""
    if m is None and b is None:
        return 0
    if b is None:
        return 1
    if m is None:
        return -1
    if m[0] != b[0]:
        return 1 if m[0] < b[0] else -1
    x, y = bytes(m[1]), bytes(b[1])
    return (x > y) - (x < y)


def _cmp(m: tuple, b: tuple) -> int:
    """``storepb.AggrChunk.Compare``: 1 when ``m`` comes first."""
    if m[0] != b[0]:
        return 1 if m[0] < b[0] else -1
    if m[1] != b[1]:
        return 1 if m[1] < b[1] else -1
    for x, y in zip(_fields(m), _fields(b)):
        r = _cmp_sub(x, y)
        if r:
            return r
    return 0


_ORDER = cmp_to_key(lambda x, y: -_cmp(x, y))


def remove_identical(chunks: Sequence[tuple]) -> list:
    """``chainSeriesAndRemIdenticalChunks``: a chunk is kept under the first of its raw, count, max,
    min, sum, counter chunks whose data was not seen before (and dropped when all were seen), then
    the kept ones are ordered by ``AggrChunk.Compare`` (min time, max time, then the chunks)."""
    seen: set = set()
    kept = []
    for c in chunks:
        raw, count, s, mn, mx, counter = _fields(c)
        for f in (raw, count, mx, mn, s, counter):
            if f is None:
                continue
            key = bytes(f[1])
            if key not in seen:
                seen.add(key)
                kept.append(c)
                break
    kept.sort(key=_ORDER)
    return kept


def overlap_split(chunks: Sequence[tuple]) -> list[list]:
    """``dedup.NewOverlapSplit``: each chunk goes to the first "replica" whose last chunk ends before
    the chunk starts, else to a new one."""
    reps: list[list] = []
    for c in chunks:
        for r in reps:
            if r[-1][1] < c[0]:
                r.append(c)
                break
        else:
            reps.append([c])
    return reps
