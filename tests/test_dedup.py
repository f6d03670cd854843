"""Replica de-duplication (pythanos.dedup): the C kernels against a plain-Python model of Thanos'
iterators, Thanos' own test vectors, and the real Thanos querier on crafted replica data."""
from __future__ import annotations

import json
import math
import urllib.parse

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peers import http_get
from pythanos.dedup import (
    COUNTER_FUNCS,
    apply_counter_resets,
    dedup_chunks,
    dedup_many,
    dedup_samples,
    split_replicas,
)
from pythanos.tsdb.chunkenc import STALE_NAN_BITS, encode_xor

STALE = np.array([STALE_NAN_BITS], np.int64).view(np.float64)[0]


# --- a plain-Python model of the Go iterators (the reference the C kernel is checked against) ----

class RefLeaf:
    """A replica's sample iterator; with ``counter`` the counterErrAdjustSeriesIterator wrapper."""

    def __init__(self, t, v, counter: bool) -> None:
        self.t = [int(x) for x in t]
        self.v = [float(x) for x in v]
        self.i = -1
        self.err = 0.0
        self.counter = counter

    def next(self) -> bool:
        self.i += 1
        return self.i < len(self.t)

    def seek(self, x: int) -> bool:
        self.i = max(self.i, 0)
        while self.i < len(self.t) and self.t[self.i] < x:
            self.i += 1
        return self.i < len(self.t)

    def at_t(self) -> int:
        return self.t[self.i]

    def at(self):
        v = self.v[self.i]
        return self.t[self.i], (v + self.err if self.counter else v)

    def adjust(self, last: float) -> None:
        if self.counter:
            cur = self.at()[1]
            if last > cur:
                self.err += last - cur


def wrap64(x: int) -> int:
    return (x + 2**63) % 2**64 - 2**63


MIN_INT64 = -(2**63)


class RefNode:
    """dedupSeriesIterator(a, b)."""

    def __init__(self, a, b) -> None:
        self.a, self.b = a, b
        self.last_t = MIN_INT64
        self.last_iter = a
        self.use_a = True
        self.pen_a = self.pen_b = 0
        self.aval = a.next()
        self.bval = b.next()

    def next(self) -> bool:
        have_last = self.aval if self.use_a else self.bval
        last = self.last_iter.at()[1] if have_last else 0.0
        last_use_a = self.use_a
        ret = self._step()
        if self.use_a != last_use_a and have_last:
            self.adjust(last)
        return ret

    def _step(self) -> bool:
        if self.aval:
            self.aval = self.a.seek(wrap64(self.last_t + 1 + self.pen_a))
        if self.bval:
            self.bval = self.b.seek(wrap64(self.last_t + 1 + self.pen_b))
        if not self.aval:
            self.use_a = False
            if self.bval:
                self.last_t, self.last_iter, self.pen_b = self.b.at_t(), self.b, 0
            return self.bval
        if not self.bval:
            self.use_a = True
            self.last_t, self.last_iter, self.pen_a = self.a.at_t(), self.a, 0
            return True
        ta, tb = self.a.at_t(), self.b.at_t()
        self.use_a = ta <= tb
        if self.use_a:
            self.pen_b = wrap64(2 * (ta - self.last_t)) if self.last_t != MIN_INT64 else 5000
            self.pen_a, self.last_t, self.last_iter = 0, ta, self.a
        else:
            self.pen_a = wrap64(2 * (tb - self.last_t)) if self.last_t != MIN_INT64 else 5000
            self.pen_b, self.last_t, self.last_iter = 0, tb, self.b
        return True

    def adjust(self, last: float) -> None:
        if self.aval:
            self.a.adjust(last)
        if self.bval:
            self.b.adjust(last)

    def seek(self, x: int) -> bool:
        while True:
            ts = self.at_t()
            if ts >= x:
                return (self.a if self.use_a else self.b).seek(ts)
            if not self.next():
                return False

    def at_t(self) -> int:
        return (self.a if self.use_a else self.b).at_t()

    def at(self):
        return self.last_iter.at()


def ref_chain(reps):
    """Prometheus chainSampleIterator.Next with Go's container/heap (tie order matters)."""
    its = [RefLeaf(t, v, False) for t, v in reps]
    h: list = []

    def less(i, j):
        return h[i].at_t() < h[j].at_t()

    def up(j):
        while True:
            i = int((j - 1) / 2)
            if i == j or not less(j, i):
                break
            h[i], h[j] = h[j], h[i]
            j = i

    def down(i, n):
        while True:
            j1 = 2 * i + 1
            if j1 >= n:
                break
            j = j1
            if j1 + 1 < n and less(j1 + 1, j1):
                j = j1 + 1
            if not less(j, i):
                break
            h[i], h[j] = h[j], h[i]
            i = j

    def push(x):
        h.append(x)
        up(len(h) - 1)

    def pop():
        n = len(h) - 1
        h[0], h[n] = h[n], h[0]
        down(0, n)
        return h.pop()

    curr = its[0]
    for it in its[1:]:
        if it.next():
            push(it)
    last_t = MIN_INT64
    out = []
    while True:
        while True:
            if not curr.next():
                if not h:
                    return out
            else:
                ct = curr.at_t()
                if ct == last_t:
                    continue
                if not h or ct < h[0].at_t():
                    break
                push(curr)
            curr = pop()
            ct = curr.at_t()
            if ct != last_t:
                break
        last_t = ct
        out.append(curr.at())


def ref_resets(t, v):
    out = []
    last_t, last_v, total = 0, 0.0, 0.0
    for ti, vi in zip(t.tolist(), v.tolist()):
        if math.isnan(vi):
            continue
        if not out:
            last_t, last_v, total = ti, vi, vi
        elif ti > last_t:
            total += vi - last_v if vi >= last_v else vi
            last_t, last_v = ti, vi
        else:
            if ti == last_t:
                last_v = vi
            continue
        out.append((last_t, total))
    return out


def ref_dedup(reps, *, counter=False, func="penalty"):
    if counter:
        reps = [(np.array([x[0] for x in rs], np.int64), np.array([x[1] for x in rs], np.float64))
                for rs in (ref_resets(t, v) for t, v in reps)]
    if len(reps) == 1:
        return [(int(a), float(b)) for a, b in zip(*reps[0])]
    if func == "chain":
        return ref_chain(reps)
    it = RefLeaf(*reps[0], counter)
    for t, v in reps[1:]:
        it = RefNode(it, RefLeaf(t, v, counter))
    out = []
    while it.next():
        out.append(it.at())
    return out


def as_pairs(t, v):
    return list(zip(t.tolist(), np.asarray(v, np.float64).view(np.int64).tolist()))


def ref_pairs(samples):
    if not samples:
        return []
    t = np.array([s[0] for s in samples], np.int64)
    v = np.array([s[1] for s in samples], np.float64)
    return as_pairs(t, v)


# --- random replicas: gaps, scrape phases, jitter, shared timestamps, stale markers, resets ------

@st.composite
def replica_sets(draw, max_replicas: int = 4):
    k = draw(st.integers(1, max_replicas))
    base_interval = draw(st.sampled_from([1000, 10_000, 15_000, 30_000]))
    reps = []
    for _ in range(k):
        n = draw(st.integers(0, 60))
        interval = draw(st.sampled_from([base_interval, base_interval, 2 * base_interval, 5_000]))
        phase = draw(st.sampled_from([0, 0, 1, interval // 3, interval // 2, interval - 1]))
        jitter = draw(st.lists(st.integers(-interval // 4, interval // 4), min_size=n, max_size=n))
        t = np.arange(n, dtype=np.int64) * interval + phase + np.array(jitter, dtype=np.int64).reshape(-1)
        # gaps: drop random runs
        keep = np.ones(n, bool)
        for _ in range(draw(st.integers(0, 3))):
            if n:
                s = draw(st.integers(0, n - 1))
                keep[s:s + draw(st.integers(1, 12))] = False
        kind = draw(st.sampled_from(["counter", "gauge", "ints"]))
        if kind == "counter":
            inc = np.array(draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)), np.float64).reshape(-1)
            v = np.cumsum(inc) + draw(st.integers(0, 5))
            for _ in range(draw(st.integers(0, 2))):  # resets
                if n:
                    s = draw(st.integers(0, n - 1))
                    v[s:] -= v[s] - draw(st.integers(0, 3))
        elif kind == "ints":
            v = np.array(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)), np.float64).reshape(-1)
        else:
            v = np.array(draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=64), min_size=n, max_size=n)),
                         np.float64).reshape(-1)
        for _ in range(draw(st.integers(0, 2))):  # stale markers and -0.0
            if n:
                v[draw(st.integers(0, n - 1))] = draw(st.sampled_from([STALE, -0.0, float("nan")]))
        t, v = t[keep], v[keep]
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        uniq = np.ones(len(t), bool)
        uniq[1:] = t[1:] != t[:-1]
        reps.append((t[uniq], v[uniq]))
    return reps


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(replica_sets(), st.booleans())
def test_penalty_kernel_matches_reference(reps, counter):
    got = dedup_samples(reps, counter=counter, counter_resets=False)
    assert as_pairs(*got) == ref_pairs(ref_dedup(reps) if not counter else _ref_counter_no_resets(reps))


def _ref_counter_no_resets(reps):
    if len(reps) == 1:
        return [(int(a), float(b)) for a, b in zip(*reps[0])]
    it = RefLeaf(*reps[0], True)
    for t, v in reps[1:]:
        it = RefNode(it, RefLeaf(t, v, True))
    out = []
    while it.next():
        out.append(it.at())
    return out


@SETTINGS
@given(replica_sets(), st.sampled_from(["penalty", "chain"]))
def test_counter_pipeline_matches_reference(reps, func):
    got = dedup_samples(reps, counter=True, func=func)
    assert as_pairs(*got) == ref_pairs(ref_dedup(reps, counter=True, func=func))


@SETTINGS
@given(replica_sets(max_replicas=5))
def test_chain_kernel_matches_reference(reps):
    got = dedup_samples(reps, func="chain")
    assert as_pairs(*got) == ref_pairs(ref_dedup(reps, func="chain"))
    # one sample per timestamp, every timestamp of every replica
    assert got[0].tolist() == sorted(set(np.concatenate([t for t, _ in reps]).tolist()))


@SETTINGS
@given(replica_sets(max_replicas=1))
def test_counter_resets_matches_reference(reps):
    t, v = reps[0]
    assert as_pairs(*apply_counter_resets(t, v)) == ref_pairs(ref_resets(t, v))


@settings(max_examples=150, deadline=None)
@given(replica_sets(max_replicas=3), st.integers(1, 50), st.booleans())
def test_dedup_chunks_equals_samples_of_split_replicas(reps, per_chunk, dup):
    """Chunks of all replicas (shuffled, some sent twice) -> the same answer as the samples of the
    fake replicas that the overlap split yields."""
    chunks = []
    for t, v in reps:
        for i in range(0, len(t), per_chunk):
            chunks.append((int(t[i]), int(t[i:i + per_chunk][-1]), encode_xor(t[i:i + per_chunk], v[i:i + per_chunk])))
    if dup:
        chunks = chunks + chunks[::2]
    chunks = chunks[::-1]
    fake = split_replicas(chunks)
    for r in fake:  # no overlap inside one replica
        assert all(a[1] < b[0] for a, b in zip(r, r[1:]))
    from pythanos.tsdb.chunkenc import decode_xor
    samples = []
    for r in fake:
        dec = [decode_xor(c[2]) for c in r]
        samples.append((np.concatenate([d[0] for d in dec]) if dec else np.empty(0, np.int64),
                        np.concatenate([d[1] for d in dec]) if dec else np.empty(0)))
    for counter in (False, True):
        want = dedup_samples(samples, counter=counter) if samples else (np.empty(0, np.int64), np.empty(0))
        assert as_pairs(*dedup_chunks(chunks, counter=counter)) == as_pairs(*want)


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(replica_sets(max_replicas=3), st.integers(1, 40)), min_size=1, max_size=6),
       st.sampled_from(["penalty", "chain"]), st.booleans(), st.booleans(),
       st.sampled_from([(None, None), (0, 400_000), (200_000, 300_000)]))
def test_dedup_many_equals_dedup_chunks_per_label_set(sets, func, counter, resets, bounds):
    """The batched path the querier takes (all label sets of a selection in two C calls) gives,
    label set by label set, exactly what the one-at-a-time path gives, incl. overlapping chunks
    (a chunk going back in time), counter totals and the [mint, maxt] cut."""
    mint, maxt = bounds
    items, want = [], []
    for n, (reps, per_chunk) in enumerate(sets):
        chunks = []
        for t, v in reps:
            for i in range(0, len(t), per_chunk):
                chunks.append((int(t[i]), int(t[i:i + per_chunk][-1]), 0,
                               encode_xor(t[i:i + per_chunk], v[i:i + per_chunk])))
        if len(chunks) > 2:  # one chunk sent again shifted back: overlaps within a replica
            chunks.append(chunks[1])
        labels = (("i", str(n)),)
        items.append((labels, chunks))
        t, v = dedup_chunks([(c[0], c[1], c[3]) for c in chunks], counter=counter, func=func,
                            counter_resets=resets, mint=mint, maxt=maxt)
        if len(t):
            want.append((labels, as_pairs(t, v)))
    got = [(lbls, as_pairs(t, v)) for lbls, t, v in dedup_many(items, counter=counter, func=func,
                                                                counter_resets=resets, mint=mint, maxt=maxt)]
    assert got == want


def test_dedup_many_rejects_bounds_that_do_not_fit():
    from pythanos.dedup import _dedup

    t, v = np.arange(4, dtype=np.int64), np.zeros(4)
    out_t, out_v, ob = np.empty(4, np.int64), np.empty(4), np.empty(2, np.int64)
    with pytest.raises(ValueError, match="bounds out of range"):
        _dedup.batch(t, v, np.array([0, 9], np.int64), np.array([0, 1], np.int64), False, False, False,
                     0, 10, out_t, out_v, ob)
    with pytest.raises(ValueError, match="bounds out of range"):
        _dedup.batch(t, v, np.array([0, 4], np.int64), np.array([0, 2], np.int64), False, False, False,
                     0, 10, out_t, out_v, ob)
    with pytest.raises(ValueError, match="replica bounds decrease"):
        _dedup.batch(t, v, np.array([0, 3, 2, 4], np.int64), np.array([0, 3], np.int64), False, False, False,
                     0, 10, out_t, out_v, ob)


# --- Thanos' own test vectors (pkg/dedup/iter_test.go) -----------------------------------------

def _s(pairs):
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.float64)


@pytest.mark.parametrize("a,b,exp", [
    ([(10000, 10), (20000, 11), (30000, 12), (40000, 13)], [(10000, 20), (20000, 21), (30000, 22), (40000, 23)],
     [(10000, 10), (20000, 11), (30000, 12), (40000, 13)]),
    ([(10100, 1), (20100, 1), (30100, 1), (40100, 1)], [(10000, 2), (20000, 2), (30000, 2), (40000, 2)],
     [(10000, 2), (20000, 2), (30000, 2), (40000, 2)]),
    ([(10000, 1), (20000, 1), (40000, 1)], [(10000, 2), (20000, 2), (30000, 2), (40000, 2)],
     [(10000, 1), (20000, 1), (40000, 1)]),
    ([(10000, 1), (20000, 1), (40000, 1)], [(15000, 2), (25000, 2), (35000, 2), (45000, 2)],
     [(10000, 1), (20000, 1), (40000, 1)]),
    ([(10000, 1), (20000, 1), (30000, 1), (60000, 1), (70000, 1)],
     [(10100, 2), (20100, 2), (30100, 2), (40100, 2), (50100, 2), (60100, 2)],
     [(10000, 1), (20000, 1), (30000, 1), (50100, 2), (60100, 2)]),
])
def test_thanos_penalty_vectors(a, b, exp):
    t, v = dedup_samples([_s(a), _s(b)])
    assert list(zip(t.tolist(), v.tolist())) == [(x, float(y)) for x, y in exp]


ISSUE_2401_A = [(10000, 8.0), (20000, 9.0), (50001, 10.0), (60000, 11.0), (70000, 12.0), (80000, 13.0),
                (90000, 14.0), (100000, 15.0)]
ISSUE_2401_B = [(10001, 8.0), (45001, 8.5), (55001, 9.5), (65001, 10.5)]


@pytest.mark.parametrize("counter,exp", [
    (True, [(10000, 8), (20000, 9), (45001, 9), (55001, 10), (65001, 11), (100000, 15)]),
    (False, [(10000, 8), (20000, 9), (45001, 8.5), (55001, 9.5), (65001, 10.5), (100000, 15)]),
])
def test_thanos_counter_adjust_vectors(counter, exp):
    """Thanos' unit test expects (90000, 14) too, but its mocked iterator seeks *backwards*
    (sort.Search from the start); real chunk iterators only move forward, so after A was sought
    to 95004 at 45001 the real querier emits 100000 next — checked against the real querier in
    test_raw_samples_match_thanos_querier (series pt_dedup_2401)."""
    t, v = dedup_samples([_s(ISSUE_2401_A), _s(ISSUE_2401_B)], counter=counter)
    assert list(zip(t.tolist(), v.tolist())) == [(x, float(y)) for x, y in exp]


# --- unit facts ---------------------------------------------------------------------------------

def test_stale_markers_and_negative_zero_pass_through_bit_exact():
    t0 = np.array([0, 15000, 30000, 45000], np.int64)
    v0 = np.array([1.0, STALE, -0.0, float("nan")])
    t1 = t0 + 100_000  # after replica 0: every sample of replica 0 is emitted
    for func in ("penalty", "chain"):
        t, v = dedup_samples([(t0, v0), (t1, np.ones(4))], func=func)
        bits = v.view(np.int64)
        assert STALE_NAN_BITS in bits.tolist()
        assert np.array([-0.0]).view(np.int64)[0] in bits.tolist()
    # the counter path drops NaNs, as ApplyCounterResetsSeriesIterator does
    t, v = dedup_samples([(t0, v0), (t1, np.ones(4))], counter=True)
    assert not np.isnan(v).any()


def test_split_replicas_orders_and_drops_identical():
    a = (0, 100, b"\x00\x01a")
    b = (0, 100, b"\x00\x01b")
    c = (50, 150, b"\x00\x01c")
    d = (101, 200, b"\x00\x01d")
    reps = split_replicas([d, a, c, b, a, d])
    # equal ranges: data descending (b before a), then overlap split
    assert reps == [[b, d], [a], [c]]
    assert split_replicas([]) == []


def test_split_replicas_short_path_equals_general():
    """One or two chunks take a short path; it must split exactly as the general one: every pair
    of a few ranges (equal, touching, overlapping, either order) and data (equal, either order)."""
    from itertools import product

    from pythanos.dedup import _split_general

    ranges = [(0, 100), (0, 50), (100, 200), (101, 200), (50, 150), (-10, 0)]
    datas = [b"\x00\x01a", b"\x00\x01b", b"\x00\x01a\x00"]
    chunks = [(lo, hi, d) for (lo, hi), d in product(ranges, datas)]
    n = 0
    for x in chunks:
        assert split_replicas([x]) == _split_general([x]) == [[x]]
        for y in chunks:
            assert split_replicas([x, y]) == _split_general([x, y]), (x, y)
            n += 1
    assert n == len(chunks) ** 2
    # generators are taken too
    assert split_replicas(iter(chunks[:2])) == _split_general(chunks[:2])


def test_small_inputs_and_errors():
    e = (np.empty(0, np.int64), np.empty(0))
    assert dedup_samples([])[0].size == 0
    assert dedup_samples([e, e])[0].size == 0
    one = (np.array([1, 2], np.int64), np.array([3.0, 4.0]))
    assert as_pairs(*dedup_samples([one])) == as_pairs(*one)
    assert as_pairs(*dedup_samples([e, one])) == as_pairs(*one)
    assert as_pairs(*dedup_samples([one, e], func="chain")) == as_pairs(*one)
    with pytest.raises(ValueError):
        dedup_samples([one], func="nope")
    with pytest.raises(ValueError):
        dedup_samples([(np.array([1, 2]), np.array([1.0]))])
    assert dedup_chunks([])[0].size == 0
    assert COUNTER_FUNCS == {"rate", "increase", "irate", "resets"}


def test_mint_maxt_bound_after_running_totals():
    t = np.array([0, 10_000, 20_000, 30_000], np.int64)
    v = np.array([5.0, 1.0, 2.0, 3.0])  # a reset before mint still counts in the total
    got = dedup_samples([(t, v)], counter=True, mint=15_000, maxt=25_000)
    assert as_pairs(*got) == as_pairs(np.array([20_000]), np.array([7.0]))


# --- the real Thanos querier on crafted replica data ---------------------------------------------

BASE = 1_700_000_000_000
MIN = 60_000


def _api(q, path: str, **params):
    code, body = http_get(f"{q.url}{path}?{urllib.parse.urlencode(params, doseq=True)}", timeout=30)
    doc = json.loads(body)
    assert code == 200 and doc["status"] == "success", (path, params, code, body[:500])
    return doc["data"]


def _cut(t, v, start, end):
    m = (t < start) | (t >= end)
    return t[m], v[m]


def crafted_replicas(seed: int = 3):
    """Three replicas of a gauge and of a counter over 50 minutes: different scrape phases,
    jitter, gaps (so the walk switches), stale markers, counter resets at different times and
    slightly different counter values (scraped at different moments)."""
    rng = np.random.default_rng(seed)
    out = {}
    span = 50 * MIN
    specs = [  # (interval, phase, gaps)
        (15_000, 0, [(8 * MIN, 13 * MIN), (30 * MIN, 31 * MIN)]),
        (15_000, 7_300, [(20 * MIN, 26 * MIN), (40 * MIN, 47 * MIN)]),
        (30_000, 3_000, [(0, 5 * MIN), (36 * MIN, 38 * MIN)]),
    ]
    for r, (interval, phase, gaps) in enumerate(specs):
        t = BASE + phase + np.arange(span // interval, dtype=np.int64) * interval
        t = t + rng.integers(-200, 201, len(t))
        t[0] = BASE + phase
        g = np.round(rng.normal(100 + 10 * r, 5, len(t)), 3)
        # the counter: same underlying rate, each replica sees its own scrape moment; restarts
        c = np.floor((t - BASE) / 1000.0 * 2.5) + r
        for reset_at in ([17 * MIN], [33 * MIN], [17 * MIN + 20_000, 44 * MIN])[r]:
            after = t >= BASE + reset_at
            c[after] -= c[after][0] - r
        for a, b in gaps:
            keep = (t < BASE + a) | (t >= BASE + b)
            t, g, c = t[keep], g[keep], c[keep]
        # a stale marker right before each gap, as Prometheus writes when a target disappears
        for a, _ in gaps:
            i = int(np.searchsorted(t, BASE + a)) - 1
            if 0 <= i < len(t) - 1 and a > 0:
                g[i] = STALE
        out[r] = (t, g, c)
    return out


def _chunks(t, v, per: int):
    return [(int(t[i]), int(t[i:i + per][-1]), encode_xor(t[i:i + per], v[i:i + per])) for i in range(0, len(t), per)]


@pytest.fixture(scope="module")
def dedup_stores():
    from test_storeapi import Loop
    from pythanos.storeapi.memstore import MemoryStore

    reps = crafted_replicas()
    loop = Loop()
    ends = []
    per = 40  # several chunks per replica, so the overlap split has work to do
    for r, (t, g, c) in reps.items():
        series = [({"__name__": "pt_dedup_gauge", "job": "j"}, t, g), ({"__name__": "pt_dedup_counter", "job": "j"}, t, c)]
        ends.append(f"127.0.0.1:{loop.serve(MemoryStore(series, external_labels={'replica': str(r)}, samples_per_chunk=per))}")
    # Thanos' issue-2401 vectors, A in replica 0 and B in replica 1
    for r, pairs in ((0, ISSUE_2401_A), (1, ISSUE_2401_B)):
        t, v = _s(pairs)
        ends.append(f"127.0.0.1:{loop.serve(MemoryStore([({'__name__': 'pt_dedup_2401'}, t + BASE, v)], external_labels={'replica': str(r)}))}")
    # a byte-identical copy of replica 0 under another replica name: its chunks must be dropped
    t, g, c = reps[0]
    twin = [({"__name__": "pt_dedup_gauge", "job": "j"}, t, g), ({"__name__": "pt_dedup_counter", "job": "j"}, t, c)]
    ends.append(f"127.0.0.1:{loop.serve(MemoryStore(twin, external_labels={'replica': '9'}, samples_per_chunk=per))}")
    chunks = {
        "gauge": [ch for r in [0, 1, 2, 0] for ch in _chunks(reps[r][0], reps[r][1], per)],
        "counter": [ch for r in [0, 1, 2, 0] for ch in _chunks(reps[r][0], reps[r][2], per)],
        "2401": [ch for pairs in (ISSUE_2401_A, ISSUE_2401_B) for ch in _chunks(_s(pairs)[0] + BASE, _s(pairs)[1], 120)],
    }
    yield ends, reps, chunks
    loop.close()


def _matrix(q, query, t_ms):
    res = _api(q, "/api/v1/query", query=query, time=t_ms / 1000, dedup="true")["result"]
    assert len(res) == 1, res
    assert "replica" not in res[0]["metric"]
    return [(int(round(float(ts) * 1000)), float(x)) for ts, x in res[0]["values"]]


def _ours(t, v):
    keep = v.view(np.int64) != STALE_NAN_BITS  # range vectors never show stale markers
    return list(zip(t[keep].tolist(), v[keep].tolist()))


@pytest.mark.parametrize("func", ["penalty", "chain"])
def test_raw_samples_match_thanos_querier(dedup_stores, thanos_query_factory, func):
    ends, reps, chunks = dedup_stores
    q = thanos_query_factory(ends, extra=[f"--deduplication.func={func}"])
    t_eval = BASE + 55 * MIN
    for name, key in (("pt_dedup_gauge", "gauge"), ("pt_dedup_counter", "counter")):
        got = _matrix(q, f"{name}[1h]", t_eval)
        ours = dedup_chunks(chunks[key], func=func)
        assert got == _ours(*ours), name
        # the samples API gives the same when handed the decoded fake replicas
        assert len(got) > 150
    got = _matrix(q, "pt_dedup_2401[1h]", t_eval)
    assert got == _ours(*dedup_chunks(chunks["2401"], func=func))
    if func == "penalty":
        assert [t - BASE for t, _ in got] == [10000, 20000, 45001, 55001, 65001, 100000]
    if func == "penalty":
        # the walk really switched replicas (samples of all three appear)
        t, g = dedup_chunks(chunks["gauge"])
        srcs = {r for r, (rt, _, _) in reps.items() for x in t.tolist() if x in set(rt.tolist())}
        assert srcs == {0, 1, 2}


COUNTER_QUERIES = [("rate", "2m"), ("increase", "5m"), ("irate", "1m"), ("resets", "10m"), ("delta", "5m")]


def test_counter_functions_match_thanos_querier(dedup_stores, thanos_query_factory):
    """Thanos reads counters as running totals and adjusts values on replica switches for rate &
    co; our dedup (counter=True) fed into our engine must give Thanos' answer."""
    from pythanos.promql import Engine, MemoryQueryable

    ends, _, chunks = dedup_stores
    q = thanos_query_factory(ends)
    start, end, step = BASE + MIN, BASE + 52 * MIN, 30_000
    for fn, rng in COUNTER_QUERIES:
        # Thanos' querier bounds every replica to (start - range, end] after forming running totals
        mint, maxt = start - int(rng[:-1]) * MIN + 1, end
        query = f"{fn}(pt_dedup_counter[{rng}])"
        res = _api(q, "/api/v1/query_range", query=query, start=start / 1000, end=end / 1000, step=step / 1000,
                   dedup="true")["result"]
        assert len(res) == 1
        theirs = [(int(round(float(ts) * 1000)), float(x)) for ts, x in res[0]["values"]]

        def engine(counter: bool):
            t, v = dedup_chunks(chunks["counter"], counter=counter, mint=mint, maxt=maxt)
            mq = MemoryQueryable()
            mq.add({"__name__": "pt_dedup_counter", "job": "j"}, t, v)
            r = Engine().range(query, start, end, step, mq)
            assert len(r.value) == 1
            return list(zip(r.value[0].t.tolist(), r.value[0].v.tolist()))

        ours = engine(fn in COUNTER_FUNCS)
        assert [x[0] for x in ours] == [x[0] for x in theirs], fn
        for (ts, a), (_, b) in zip(ours, theirs):
            assert a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12), (fn, ts, a, b)
        if fn == "resets":  # running totals never decrease: Thanos' quirk (issue 3644)
            assert {b for _, b in theirs} == {0.0}
        if fn in COUNTER_FUNCS:  # without the counter path the answer would differ
            assert [b for _, b in engine(False)] != [b for _, b in theirs], fn


# --- bounded by the input: many replicas, the deadline, timestamps Go's arithmetic wraps on -----

_MANY_REPLICAS = r"""
import sys
import numpy as np
from pythanos.dedup import dedup_many, dedup_samples
from pythanos.tsdb.chunkenc import encode_xor

k, s, step = 2000, 120, 15_000
# every replica on the same grid, replica r r ms later: each node keeps following replica 0
grid = [(np.arange(s, dtype=np.int64) * step + r, np.full(s, float(r))) for r in range(k)]
# replica r alone in window k-1-r, windows 4 steps apart: every node first takes its own replica
# (earlier), then everything from below, so nothing is dropped
w = s * step + 4 * step
windows = [(np.arange(s, dtype=np.int64) * step + (k - 1 - r) * w, np.full(s, float(r))) for r in range(k)]
for counter in (False, True):
    t, v = dedup_samples(grid, counter=counter, counter_resets=False)
    assert t.tolist() == grid[0][0].tolist() and set(v.tolist()) == {0.0}, (counter, len(t))
    t, v = dedup_samples(windows, counter=counter, counter_resets=False)
    assert len(t) == k * s and bool(np.all(np.diff(t) > 0)), (counter, len(t))
    # the earliest window is replica k-1's; the counter adjustment then lifts the later ones to it
    assert v[:s].tolist() == [float(k - 1)] * s and v[-s:].tolist() == [float(k - 1) if counter else 0.0] * s
for reps, want in ((grid, s), (windows, k * s)):  # the querier's batched path
    chunks = [(int(t[0]), int(t[-1]), 0, encode_xor(t, v)) for t, v in reps]
    (_, t, v), = dedup_many([((("a", "b"),), chunks)])
    assert len(t) == want, len(t)
print("ok")
"""


def _run_py(code: str, timeout: float):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def test_many_replicas_of_one_series_in_bounded_time():
    """2,000 replicas of one label set (120 samples each): Thanos' iterator tree costs O(k) per
    sample and more (before: ~10 minutes for the grid, hours for the windows). Run in a child
    process so that a regression fails by the timeout instead of hanging the suite."""
    p = _run_py(_MANY_REPLICAS, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", (p.returncode, p.stdout[-2000:], p.stderr[-2000:])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(17, 40), st.booleans())
def test_penalty_kernel_matches_reference_with_many_replicas(seed, k, counter):
    """Many replicas (chains of steady nodes that split and merge, the node tree used from 18 on,
    the counter adjustment over the leaves' tree from 17 on) against the plain model of Thanos'
    iterator tree, on grids with jitter, gaps, bursts and windows."""
    rng = np.random.default_rng(seed)
    reps = []
    for r in range(k):
        n = int(rng.integers(0, 40))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            t = np.arange(n) * 15_000 + int(rng.integers(0, 15_000)) + rng.integers(-3000, 3000, n)
        elif kind == 1:
            t = np.cumsum(rng.choice([1_000, 2_000, 30_000, 200_000], n))
        elif kind == 2:
            t = r * 300_000 + np.sort(rng.integers(0, 500_000, n))
        else:
            t = np.sort(rng.integers(0, 1_000_000, n))
        t = np.unique(t.astype(np.int64))
        v = np.cumsum(rng.integers(0, 4, len(t))).astype(np.float64)
        if len(t) and rng.random() < 0.4:
            v[int(rng.integers(0, len(t)))] = rng.choice([STALE, -0.0, 0.5])
        reps.append((t, v))
    got = dedup_samples(reps, counter=counter, counter_resets=False)
    want = _ref_counter_no_resets(reps) if counter else ref_dedup(reps)
    assert as_pairs(*got) == ref_pairs(want)


def test_unsorted_replicas_read_forward_only():
    """A replica going back in time is read as a forward-only iterator reads it (later samples
    below the running maximum are never landed on), as before."""
    a = (np.array([10, 5, 20, 20, 15, 40], np.int64), np.arange(6.0))
    b = (np.array([12, 30, 25, 50], np.int64), np.arange(4.0) + 10)
    c = (np.array([1, 60], np.int64), np.array([7.0, 8.0]))
    for reps in ([a, b], [a, b, c], [c, b, a]):
        for counter in (False, True):
            ref = _ref_counter_no_resets(reps) if counter else ref_dedup(reps)
            assert as_pairs(*dedup_samples(reps, counter=counter, counter_resets=False)) == ref_pairs(ref)


def test_deadline_stops_dedup_with_timeout_error():
    import time

    from pythanos.dedup import DeadlineExceeded

    reps = [(np.arange(50, dtype=np.int64) * 1000 + r, np.ones(50)) for r in range(30)]
    past = time.monotonic() - 1
    assert issubclass(DeadlineExceeded, TimeoutError)
    for func in ("penalty", "chain"):
        with pytest.raises(DeadlineExceeded, match="deadline"):
            dedup_samples(reps, func=func, deadline=past)
        items = [((("i", str(i)),), [(int(t[0]), int(t[-1]), 0, encode_xor(t, v)) for t, v in reps]) for i in range(3)]
        with pytest.raises(DeadlineExceeded):
            dedup_many(items, func=func, deadline=past)
        # a deadline still ahead changes nothing
        assert as_pairs(*dedup_samples(reps, func=func, deadline=time.monotonic() + 600)) == \
            as_pairs(*dedup_samples(reps, func=func))


def test_querier_maps_dedup_deadline_to_query_timeout():
    """The querier's de-duplication past the query's deadline is Prometheus' timeout error."""
    import time

    from pythanos.promql.errors import QueryTimeoutError
    from pythanos.query.queryable import QueryOptions, to_samples

    lbls = (("__name__", "m"),)
    chunks = [(0, 49_000, 0, encode_xor(np.arange(50, dtype=np.int64) * 1000 + r, np.ones(50))) for r in range(3)]
    o = QueryOptions(dedup=True, replica_labels=("replica",))
    assert len(to_samples({lbls: chunks}, {lbls: 3}, 0, 10**6, o, deadline=time.monotonic() + 600)) == 1
    with pytest.raises(QueryTimeoutError, match="^query timed out in query execution$") as e:
        to_samples({lbls: chunks}, {lbls: 3}, 0, 10**6, o, deadline=time.monotonic() - 1)
    assert e.value.error_type == "timeout"


_INT64_EDGE = r"""
import numpy as np
from pythanos.dedup import dedup_samples
t = np.array([0, 2**63 - 1], np.int64)
try:
    dedup_samples([(t, np.ones(2)), (np.array([1], np.int64), np.ones(1))])
except ValueError as e:
    print("ValueError:", e)
"""


def test_timestamps_near_int64_limits_are_an_error_not_a_runaway():
    """Go's penalty arithmetic wraps at the int64 limits: Thanos' tree then emits a sample at the
    int64 maximum forever (before: the kernel wrote past its output and crashed). Timestamps
    beyond +-2^60 ms are refused."""
    p = _run_py(_INT64_EDGE, timeout=60)
    assert p.returncode == 0 and "ValueError: replica 0: sample timestamp outside +-2^60 ms" in p.stdout, \
        (p.returncode, p.stdout[-500:], p.stderr[-500:])
    ok = np.array([-(2**60), 0, 2**60], np.int64)
    assert dedup_samples([(ok, np.ones(3)), (ok + np.array([1, 1, 0]), np.zeros(3))])[0].tolist() == ok.tolist()
