"""The querier reading downsampled chunks, against a sample-by-sample transcription of Thanos'
iterators (``pkg/query/iter.go`` chunkSeriesIterator, ``pkg/compact/downsample/downsample.go``
ApplyCounterResetsSeriesIterator and AverageChunkIterator, ``pkg/dedup/iter.go``
boundedSeriesIterator, v0.42.4): every chunk shape (raw, aggregates, both, the on-disk 0xFF
encoding in ``raw``), overlapping chunks, counter resets inside and between chunks, NaNs, equal
timestamps; plus what a selection asks the stores for (``aggrsFromFunc``,
``maxResolutionFromSelectHints``) and the dynamic lookback delta."""
from __future__ import annotations

import asyncio
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pythanos.promql.engine import STALE_NAN, SelectHints
from pythanos.promql.errors import ExecutionError
from pythanos.query import _frames
from pythanos.query.api import lookback_for_resolution
from pythanos.query.downsampled import (aggrs_from_func, max_resolution_from_hints, overlap_split,
                                        remove_identical)
from pythanos.query.proxy import Fetched, _series
from pythanos.query.queryable import LazySelection, QueryOptions, StoreQueryable, to_samples
from pythanos.storeapi.pb import rpc_pb2, types_pb2
from pythanos.storeapi.types import AGGR_COUNT, AGGR_COUNTER, AGGR_MAX, AGGR_MIN, AGGR_SUM, chunk_to_pb
from pythanos.tsdb import aggrchunk
from pythanos.tsdb.chunkenc import encode_xor

COUNT, SUM, MIN, MAX, COUNTER = AGGR_COUNT, AGGR_SUM, AGGR_MIN, AGGR_MAX, AGGR_COUNTER
AVG = (COUNT, SUM)
ALL_AGGRS = [(COUNT,), (SUM,), (MIN,), (MAX,), (COUNTER,), AVG]


# --- Thanos' iterators, one sample at a time -----------------------------------------------------

class ListIt:
    """A decoded chunk: AtT() is 0 before the first Next(), as for Prometheus' XOR iterator."""

    def __init__(self, samples, err=None):
        self.s, self.i, self.err = samples, -1, err

    def next(self) -> bool:
        if self.err or self.i + 1 >= len(self.s):
            self.i = len(self.s)
            return False
        self.i += 1
        return True

    def at(self):
        return self.s[self.i] if 0 <= self.i < len(self.s) else (0, 0.0)

    def att(self):
        return self.at()[0]


class AverageIt:
    def __init__(self, cnt: ListIt, sm: ListIt):
        self.c, self.s, self.t, self.v, self.err = cnt, sm, 0, 0.0, cnt.err or sm.err

    def next(self) -> bool:
        a, b = self.c.next(), self.s.next()
        if a != b:
            self.err = self.err or "sum and count iterator not aligned"
            return False
        if not a:
            return False
        if self.c.att() != self.s.att():
            self.err = self.err or "sum and count timestamps not aligned"
            return False
        self.t = self.c.att()
        self.v = self.s.at()[1] / self.c.at()[1]
        return True

    def at(self):
        return self.t, self.v

    def att(self):
        return self.t


class ChunkSeriesIt:
    def __init__(self, its):
        self.its, self.i, self.cur = its, 0, its[0]

    def seek(self, t) -> bool:
        while True:
            if self.cur.att() >= t:
                return True
            if not self.next():
                return False

    def next(self) -> bool:
        last = self.att()
        if self.its[self.i].next():
            return True
        if self.i >= len(self.its) - 1:
            return False
        self.i += 1
        self.cur = self.its[self.i]
        return self.seek(last + 1)

    def at(self):
        return self.cur.at()

    def att(self):
        return self.cur.att()

    @property
    def err(self):
        return self.cur.err


class CounterIt:
    def __init__(self, its):
        self.its, self.i, self.total, self.lastT, self.lastV, self.totalV = its, 0, 0, 0, 0.0, 0.0

    def next(self) -> bool:
        while True:
            if self.i >= len(self.its):
                return False
            if not self.its[self.i].next():
                self.i += 1
                return self.seek(self.lastT + 1)
            t, v = self.its[self.i].at()
            if math.isnan(v):
                continue
            if self.total == 0:
                self.total, self.lastT, self.lastV, self.totalV = 1, t, v, v
                return True
            if t > self.lastT:
                self.totalV += v - self.lastV if v >= self.lastV else v
                self.lastT, self.lastV = t, v
                self.total += 1
                return True
            if t == self.lastT:
                self.lastV = v

    def seek(self, x) -> bool:
        while True:
            if self.lastT >= x:
                return True
            if not self.next():
                return False

    def at(self):
        return self.lastT, self.totalV

    def att(self):
        return self.lastT

    @property
    def err(self):
        return self.its[self.i].err if self.i < len(self.its) else None


def bounded(it, mint, maxt):
    """boundedSeriesIterator, read to the end: the samples the engine sees."""
    out = []
    while it.next():
        t = it.att()
        if t < mint:
            if mint > maxt or not it.seek(mint):
                break
            t = it.att()
        if t > maxt:
            break
        out.append(it.at())
    if it.err:
        raise ExecutionError(it.err)
    return out


def _decode(data: bytes) -> list:
    from pythanos.tsdb.chunkenc import decode_xor
    t, v = decode_xor(data)
    return list(zip(t.tolist(), v.tolist()))


def _first(*subs) -> ListIt:
    """getFirstIterator."""
    for s in subs:
        if s is not None:
            return ListIt(_decode(s[1]))
    return ListIt([], err="no valid chunk found")


def thanos_series(chunks, aggrs, mint, maxt) -> list:
    """chunkSeries.Iterator over parsed chunk tuples, read through the bounded iterator."""
    its = []
    for c in chunks:
        ag = c[4] if len(c) > 4 else {}
        raw = (c[2], c[3]) if (len(c) == 4 or c[3]) else None
        if len(aggrs) == 1:
            its.append(_first(ag.get(aggrs[0]), raw))
        elif raw is not None:
            its.append(_first(raw))
        else:
            its.append(AverageIt(_first(ag.get(COUNT)), _first(ag.get(SUM))))
    if aggrs == (COUNTER,):
        return bounded(CounterIt(its), mint, maxt)
    if not its:
        return []
    return bounded(ChunkSeriesIt(its), mint, maxt)


# --- chunks as the store gateway sends them ------------------------------------------------------

def downsample(t: np.ndarray, v: np.ndarray, res: int, per_chunk: int) -> list:
    """Raw samples -> 5m-style aggregate chunks (count, sum, min, max, counter with the extra first
    and last raw samples), as Thanos' downsampleRawLoop lays them out."""
    out = []
    for i in range(0, len(t), per_chunk):
        bt, bv = t[i:i + per_chunk], v[i:i + per_chunk]
        w = bt - bt % res + res - 1
        ends = np.r_[np.flatnonzero(np.diff(w)), len(bt) - 1]
        starts = np.r_[0, ends[:-1] + 1]
        at = np.minimum(w[ends], bt[ends])
        cnt = (ends - starts + 1).astype(np.float64)
        sm = np.add.reduceat(bv, starts)
        mn = np.minimum.reduceat(bv, starts)
        mx = np.maximum.reduceat(bv, starts)
        d = np.diff(bv)
        inc = np.r_[bv[0], np.where(d >= 0, d, bv[1:])]
        ctr = np.cumsum(inc)[ends]
        ct = np.r_[bt[0], at, at[-1]]
        cv = np.r_[bv[0], ctr, bv[-1]]
        ag = {COUNT: (0, encode_xor(at, cnt)), SUM: (0, encode_xor(at, sm)), MIN: (0, encode_xor(at, mn)),
              MAX: (0, encode_xor(at, mx)), COUNTER: (0, encode_xor(ct, cv))}
        out.append((int(bt[0]), int(at[-1]), 0, b"", ag))
    return out


def raw_chunks(t, v, per_chunk) -> list:
    return [(int(t[i]), int(t[min(i + per_chunk, len(t)) - 1]), 0, encode_xor(t[i:i + per_chunk], v[i:i + per_chunk]))
            for i in range(0, len(t), per_chunk)]


def counter_values(rng, n) -> np.ndarray:
    v = np.cumsum(rng.integers(0, 50, n)).astype(np.float64)
    for r in np.flatnonzero(rng.random(n) < 0.02):
        v[r:] -= v[r] - rng.integers(0, 5)  # a reset to a small value
    return v


def random_series(rng, shape: str) -> list:
    n = int(rng.integers(1, 3000))
    t = 1_000_000 + np.cumsum(rng.integers(1, 40_000, n)).astype(np.int64)
    v = counter_values(rng, n) if rng.random() < 0.7 else rng.standard_normal(n) * 100
    if rng.random() < 0.2:
        v[rng.random(n) < 0.01] = STALE_NAN
    per = int(rng.integers(1, 400))
    if shape == "raw":
        return raw_chunks(t, v, per)
    if shape == "5m":
        return downsample(t, np.nan_to_num(v), 300_000, per)
    if shape == "mixed":  # a raw block after a downsampled one, as the store fills a gap
        cut = int(rng.integers(0, n))
        return downsample(t[:cut], np.nan_to_num(v[:cut]), 300_000, per) + raw_chunks(t[cut:], v[cut:], per)
    # "messy": chunks that overlap, repeat timestamps, carry raw and aggregates together
    chunks = []
    for _ in range(int(rng.integers(1, 8))):
        a = int(rng.integers(0, n))
        b = min(n, a + int(rng.integers(1, 300)))
        tt, vv = t[a:b], np.nan_to_num(v[a:b])
        if rng.random() < 0.3:
            c = raw_chunks(tt, vv, len(tt))[0]
        else:
            c = downsample(tt, vv, int(rng.choice([60_000, 300_000])), len(tt))[0]
            if rng.random() < 0.2:
                c = (c[0], c[1], 0, encode_xor(tt, vv), c[4])
        chunks.append(c)
    chunks.sort(key=lambda c: c[0])
    return chunks


def same(got: list, want: list) -> bool:
    if len(got) != len(want):
        return False
    return all(a[0] == b[0] and np.float64(a[1]).view(np.uint64) == np.float64(b[1]).view(np.uint64)
               for a, b in zip(got, want))


def ours(chunks, aggrs, mint, maxt) -> list:
    sel = LazySelection([((("i", "0"),), chunks)], mint, maxt, counter_resets=aggrs == (COUNTER,), aggrs=aggrs)
    got = list(sel)
    return list(zip(got[0][1].tolist(), got[0][2].tolist())) if got else []


@pytest.mark.parametrize("shape", ["raw", "5m", "mixed", "messy"])
@pytest.mark.parametrize("aggrs", ALL_AGGRS, ids=lambda a: "-".join(map(str, a)))
def test_series_equal_thanos_iterators(shape, aggrs):
    rng = np.random.default_rng(abs(hash((shape, aggrs))) % 2**32)
    for _ in range(40):
        chunks = random_series(rng, shape)
        lo = min(c[0] for c in chunks)
        hi = max(c[1] for c in chunks)
        mint = int(rng.integers(lo - 10, hi)) if rng.random() < 0.7 else lo - 1
        maxt = int(rng.integers(mint, hi + 10)) if rng.random() < 0.7 else hi + 1
        assert same(ours(chunks, aggrs, mint, maxt), thanos_series(chunks, aggrs, mint, maxt))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_hypothesis_small_chunks(data):
    """Tiny hand-shaped chunks: equal timestamps across and within chunks, going back in time."""
    def sub():
        n = data.draw(st.integers(1, 5))
        ts = sorted(data.draw(st.lists(st.integers(1, 40), min_size=n, max_size=n)))
        vs = data.draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, 5.0, 7.5, float("nan")]), min_size=n, max_size=n))
        return np.array(ts, np.int64), np.array(vs)
    chunks = []
    for _ in range(data.draw(st.integers(1, 5))):
        kind = data.draw(st.sampled_from(["raw", "aggr", "both"]))
        t, v = sub()
        ag = {}
        for a in (COUNT, SUM, MIN, MAX, COUNTER):
            ag[a] = (0, encode_xor(t, v))
        ag[COUNT] = (0, encode_xor(t, np.abs(np.nan_to_num(v)) + 1))
        raw = encode_xor(*sub()) if kind != "aggr" else b""
        c = (int(t[0]), int(t[-1]), 0, raw) if kind == "raw" else (int(t[0]), int(t[-1]), 0, raw, ag)
        chunks.append(c)
    aggrs = data.draw(st.sampled_from(ALL_AGGRS))
    mint, maxt = data.draw(st.integers(0, 20)), data.draw(st.integers(10, 45))
    try:
        want = thanos_series(chunks, aggrs, mint, maxt)
    except ExecutionError:
        with pytest.raises(ExecutionError):
            ours(chunks, aggrs, mint, maxt)
        return
    assert same(ours(chunks, aggrs, mint, maxt), want)


def test_many_series_in_batches():
    """Many series of all shapes in one selection, read in small batches: each equals its model."""
    rng = np.random.default_rng(11)
    for aggrs in ALL_AGGRS:
        series = {}
        for i in range(40):
            series[(("i", f"{i:02d}"),)] = random_series(rng, ["raw", "5m", "mixed", "messy"][i % 4])
        sel = to_samples(series, {k: 1 for k in series}, 2_000_000, 40_000_000, QueryOptions(dedup=False),
                         {(COUNTER,): "rate", (COUNT,): "count_over_time", (SUM,): "sum_over_time",
                          (MIN,): "min", (MAX,): "max_over_time", AVG: "avg"}[aggrs], aggrs)
        got = {lbls: list(zip(t.tolist(), v.tolist())) for b in sel.batches(500) for lbls, t, v in b}
        for lbls, chunks in series.items():
            want = thanos_series(chunks, aggrs, 2_000_000, 40_000_000)
            assert same(got.get(lbls, []), want), lbls


def test_several_sources_and_dedup():
    """A label set from two stores: one series of the proxy's chunk order without identical
    chunks; under de-duplication the fake replicas are read each on its own and merged."""
    rng = np.random.default_rng(3)
    n = 2000
    t = 1_000_000 + np.cumsum(rng.integers(10_000, 20_000, n)).astype(np.int64)
    v = counter_values(rng, n)
    a = downsample(t, v, 300_000, 120)
    b = downsample(t + 7_000, v, 300_000, 120)
    lbls = (("__name__", "x"),)
    for aggrs, func in ((AVG, ""), ((COUNTER,), "rate"), ((MAX,), "max_over_time")):
        # the same chunks from two stores: read as one source
        sel = to_samples({lbls: a + a}, {lbls: 2}, 0, 10**12, QueryOptions(dedup=False), func, aggrs)
        want = thanos_series(remove_identical(a + a), aggrs, 0, 10**12)
        assert same(list(zip(sel[0][1].tolist(), sel[0][2].tolist())), want)
        assert same(want, thanos_series(a, aggrs, 0, 10**12))
        # two replicas under de-duplication: each read alone, then the penalty merge
        o = QueryOptions(dedup=True, replica_labels=["replica"])
        sel = to_samples({lbls: a + b}, {lbls: 2}, 0, 10**12, o, func, aggrs)
        reps = overlap_split(remove_identical(a + b))
        assert len(reps) == 2
        from pythanos.dedup import COUNTER_FUNCS, dedup_samples
        model = []
        for r in reps:
            s = thanos_series(r, aggrs, 0, 10**12)
            model.append((np.array([x[0] for x in s], np.int64), np.array([x[1] for x in s])))
        mt, mv = dedup_samples(model, counter=func in COUNTER_FUNCS, counter_resets=False)
        assert np.array_equal(sel[0][1], mt) and np.array_equal(sel[0][2].view(np.uint64), mv.view(np.uint64))


def test_remove_identical_as_thanos():
    """chainSeriesAndRemIdenticalChunks keys a chunk by the first of raw, count, max, min, sum,
    counter whose data is new: a chunk whose count was seen but whose sum is new stays."""
    x, y, z = (0, b"\x00\x01x"), (0, b"\x00\x01y"), (0, b"\x00\x01z")
    c1 = (10, 20, 0, b"", {COUNT: x, SUM: y})
    c2 = (10, 20, 0, b"", {COUNT: x, SUM: z})
    c3 = (10, 20, 0, b"", {COUNT: x, SUM: y})  # kept: its count is seen, its sum not (c1 was kept under count)
    c4 = (5, 30, 0, b"", {COUNT: z})  # dropped: z was seen as c2's sum
    c5 = (5, 30, 0, b"\x00\x01w")
    got = remove_identical([c1, c2, c3, c4, c5])
    assert got == [c5, c2, c1, c3]  # min time, then max time, then the chunks compared descending


def test_averages_not_aligned_fail():
    t = np.array([1, 2, 3], np.int64)
    c = (1, 3, 0, b"", {COUNT: (0, encode_xor(t[:2], np.ones(2))), SUM: (0, encode_xor(t, np.ones(3)))})
    with pytest.raises(ExecutionError, match="not aligned"):
        ours([c], AVG, 0, 10)
    c = (1, 3, 0, b"", {COUNT: (0, encode_xor(t + 1, np.ones(3))), SUM: (0, encode_xor(t, np.ones(3)))})
    with pytest.raises(ExecutionError, match="timestamps not aligned"):
        ours([c], AVG, 0, 10)
    with pytest.raises(ExecutionError, match="no valid chunk found"):
        ours([(1, 3, 0, b"", {COUNT: (0, encode_xor(t, np.ones(3)))})], (MIN,), 0, 10)
    with pytest.raises(ExecutionError, match="native histogram"):
        ours([(1, 3, 0, b"", {SUM: (2, b"\x00\x01"), COUNT: (0, encode_xor(t, np.ones(3)))})], AVG, 0, 10)


# --- the on-disk encoding in `raw`, and the frame parser ------------------------------------------

def disk_aggr(ag: dict) -> bytes:
    """EncodeAggrChunk: uvarint length, encoding byte, data; zero length for an absent aggregate."""
    from pythanos.storeapi.types import uvarint
    out = b""
    for a in (COUNT, SUM, MIN, MAX, COUNTER):
        if a in ag:
            out += uvarint(len(ag[a][1])) + bytes([ag[a][0] + 1]) + ag[a][1]
        else:
            out += b"\x00"
    return out


def test_on_disk_aggregate_in_raw():
    rng = np.random.default_rng(8)
    n = 900
    t = 1_000_000 + np.cumsum(rng.integers(10_000, 20_000, n)).astype(np.int64)
    v = counter_values(rng, n)
    chunks = downsample(t, v, 300_000, 200)
    as_raw = [(c[0], c[1], aggrchunk.AGGR_ENCODING, disk_aggr(c[4])) for c in chunks]
    for c, r in zip(chunks, as_raw):
        assert aggrchunk.split(r[3]) == c[4]
    s = types_pb2.Series(chunks=[chunk_to_pb(c) for c in as_raw])
    frame = rpc_pb2.SeriesResponse(series=s).SerializeToString()
    kind, payload = _frames.parse(frame, None, {})
    assert payload[0][1] == [c for c in chunks] == _series(s, None)[1]
    for aggrs in ALL_AGGRS:
        assert same(ours(payload[0][1], aggrs, 0, 10**12), thanos_series(chunks, aggrs, 0, 10**12))
    # an entry running past the end: both parsers refuse it
    bad = (1, 2, aggrchunk.AGGR_ENCODING, disk_aggr(chunks[0][4])[:-3])
    frame = rpc_pb2.SeriesResponse(series=types_pb2.Series(chunks=[chunk_to_pb(bad)])).SerializeToString()
    with pytest.raises(ValueError):
        _frames.parse(frame, None, {})
    with pytest.raises(ValueError):
        aggrchunk.split(bad[3])


@pytest.mark.parametrize("seed", range(20))
def test_frames_with_aggregates_same_as_protobuf(seed):
    r = random.Random(seed)
    s = types_pb2.Series()
    for _ in range(r.randint(1, 6)):
        c = s.chunks.add(min_time=r.randint(0, 2**40), max_time=r.randint(0, 2**40))
        if r.random() < 0.4:
            c.raw.type = r.choice([0, 1, 2, 0xFF])
            c.raw.data = r.randbytes(r.randint(0, 40))
            if c.raw.type == 0xFF and r.random() < 0.7:
                c.raw.data = disk_aggr({a: (r.choice([0, 2]), r.randbytes(r.randint(1, 30)))
                                        for a in r.sample([COUNT, SUM, MIN, MAX, COUNTER], r.randint(0, 5))})
        for name in r.sample(["count", "sum", "min", "max", "counter"], r.randint(0, 5)):
            sub = getattr(c, name)
            sub.type = r.choice([0, 2])
            sub.data = r.randbytes(r.randint(0, 30))
    frame = rpc_pb2.SeriesResponse(series=s).SerializeToString()
    try:
        want = _series(rpc_pb2.SeriesResponse.FromString(frame).series, None)
    except ValueError:
        with pytest.raises(ValueError):
            _frames.parse(frame, None, {})
        return
    assert _frames.parse(frame, None, {}) == (1, [want])
    # and back: the querier's StoreAPI passes them on with the same fields (a chunk that has
    # aggregates and a raw chunk of no bytes, or a 0xFF raw chunk without aggregates, is an edge
    # the tuples do not keep apart)
    if all(len(c) == 4 or (c[4] and (c[3] or c[2] == 0)) for c in want[1]):
        again = types_pb2.Series(chunks=[chunk_to_pb(c) for c in want[1]])
        assert _series(again, None) == want


# --- what a selection asks for ---------------------------------------------------------------------

def test_aggrs_from_func():
    assert aggrs_from_func("min") == aggrs_from_func("min_over_time") == (MIN,)
    assert aggrs_from_func("max") == aggrs_from_func("max_over_time") == (MAX,)
    assert aggrs_from_func("count") == aggrs_from_func("count_over_time") == (COUNT,)
    assert aggrs_from_func("count_values") == (COUNT,)
    assert aggrs_from_func("sum_over_time") == (SUM,)
    for f in ("rate", "increase", "irate", "resets", "xrate", "xincrease"):
        assert aggrs_from_func(f) == (COUNTER,)
    for f in ("", "sum", "avg", "avg_over_time", "delta", "minute", "quantile_over_time", "stddev"):
        assert aggrs_from_func(f) == (COUNT, SUM)
    assert aggrs_from_func("minute") == (COUNT, SUM)  # no underscore after "min"
    assert aggrs_from_func("min_") == (MIN,)


def test_max_resolution_from_hints():
    h = 3_600_000
    assert max_resolution_from_hints(h, 0, "rate") == h  # no range: unchanged
    assert max_resolution_from_hints(h, 30 * 60_000, "rate") == 15 * 60_000
    assert max_resolution_from_hints(h, 3 * h, "rate") == h
    assert max_resolution_from_hints(h, 601, "deriv") == 300
    for f in ("irate", "increase", "delta", "idelta", "predict_linear", "holt_winters", "double_exponential_smoothing"):
        assert max_resolution_from_hints(h, 60_000, f) == 30_000
    for f in ("resets", "xrate", "max_over_time", ""):
        assert max_resolution_from_hints(h, 60_000, f) == h


def test_lookback_for_resolution():
    m = 60_000
    # --query.lookback-delta unset (our config says 5m): 5m data -> 5m, anything above 5m -> 1h
    assert lookback_for_resolution(5 * m, 0) == 5 * m
    assert lookback_for_resolution(5 * m, 5 * m) == 5 * m
    assert lookback_for_resolution(5 * m, 5 * m + 1) == 60 * m
    assert lookback_for_resolution(5 * m, 60 * m) == 60 * m
    assert lookback_for_resolution(5 * m, 60 * m, dynamic=False) == 5 * m
    # a larger configured lookback delta counts first
    assert lookback_for_resolution(10 * m, 6 * m) == 10 * m
    assert lookback_for_resolution(10 * m, 11 * m) == 60 * m
    assert lookback_for_resolution(2 * 60 * m, 60 * m) == 120 * m
    assert lookback_for_resolution(2 * 60 * m, 3 * 60 * m) == 120 * m
    assert lookback_for_resolution(m, 2 * m) == 5 * m


class _Proxy:
    def __init__(self):
        self.calls = []

    async def fetch(self, matchers, mint, maxt, **kw):
        self.calls.append(kw)
        return Fetched()


@pytest.mark.parametrize("func,rng,want_aggrs,want_res", [
    ("rate", 10 * 60_000, (COUNTER,), 5 * 60_000),
    ("rate", 4 * 3_600_000, (COUNTER,), 3_600_000),
    ("max_over_time", 60_000, (MAX,), 3_600_000),
    ("sum", 0, (COUNT, SUM), 3_600_000),
    ("", 0, (COUNT, SUM), 3_600_000),
])
def test_select_asks_for_aggregates(func, rng, want_aggrs, want_res):
    loop = asyncio.new_event_loop()
    import threading
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()
    try:
        p = _Proxy()
        q = StoreQueryable(p, loop, QueryOptions(dedup=False, max_resolution_window=3_600_000))
        q.select([], 0, 10, hints=SelectHints(0, 10, 0, rng, func))
        assert p.calls[0]["aggregates"] == want_aggrs
        assert p.calls[0]["max_resolution_window"] == want_res
    finally:
        loop.call_soon_threadsafe(loop.stop)
        th.join()
        loop.close()
