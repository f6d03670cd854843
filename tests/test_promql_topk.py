"""topk / bottomk pick and order series exactly as Prometheus v3.9.1 does.

Prometheus does not keep "the k largest, ties to the earlier series": per step and group it walks the
input series in order through a k-element heap (Go's container/heap over vectorByValueHeap, the
reverse heap for bottomk), and an instant query emits each group's heap after
``sort.Sort(sort.Reverse(heap))`` (Go's pdqsort). Which of several tied series survive, and in which
order they come out, is the heap's doing. Checked here against

* a pure-Python transcription of that algorithm (Go's heap and pdqsort included), with hypothesis;
* Go itself, when a Go toolchain is on PATH (the same walk compiled from the standard library);
* a real Prometheus 3.9.1 serving a block written by our writer.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import urllib.parse
import urllib.request

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pythanos.promql import Engine, MemoryQueryable
from pythanos.promql import _topk as topk_c

# ------------------------------------------------------------------ reference: Go, transcribed


def go_less(a: float, b: float, bottom: bool) -> bool:
    """vectorByValueHeap.Less (topk) / vectorByReverseValueHeap.Less (bottomk) on values."""
    if math.isnan(a):
        return True
    return a > b if bottom else a < b


class GoHeap:
    """container/heap over a list of (value, row)."""

    def __init__(self, bottom: bool):
        self.h: list[tuple[float, int]] = []
        self.bottom = bottom

    def less(self, i, j):
        return go_less(self.h[i][0], self.h[j][0], self.bottom)

    def swap(self, i, j):
        self.h[i], self.h[j] = self.h[j], self.h[i]

    def up(self, j):
        while True:
            i = int((j - 1) / 2)  # Go's integer division truncates toward zero: j = 0 -> 0
            if i == j or not self.less(j, i):
                break
            self.swap(i, j)
            j = i

    def down(self, i0, n):
        i = i0
        while True:
            j1 = 2 * i + 1
            if j1 >= n or j1 < 0:
                break
            j = j1
            j2 = j1 + 1
            if j2 < n and self.less(j2, j1):
                j = j2
            if not self.less(j, i):
                break
            self.swap(i, j)
            i = j
        return i > i0

    def push(self, x):
        self.h.append(x)
        self.up(len(self.h) - 1)

    def fix(self, i):
        if not self.down(i, len(self.h)):
            self.up(i)


class GoReverse:
    """sort.Reverse(heap): Less(i, j) = heap.Less(j, i)."""

    def __init__(self, data: list, bottom: bool):
        self.d, self.bottom = data, bottom

    def less(self, i, j):
        return go_less(self.d[j][0], self.d[i][0], self.bottom)

    def swap(self, i, j):
        self.d[i], self.d[j] = self.d[j], self.d[i]


# Go's sort.Sort (sort/zsortinterface.go): pdqsort, insertion sort up to 12 elements.

def _insertion_sort(d, a, b):
    for i in range(a + 1, b):
        j = i
        while j > a and d.less(j, j - 1):
            d.swap(j, j - 1)
            j -= 1


def _sift_down(d, lo, hi, first):
    root = lo
    while True:
        child = 2 * root + 1
        if child >= hi:
            return
        if child + 1 < hi and d.less(first + child, first + child + 1):
            child += 1
        if not d.less(first + root, first + child):
            return
        d.swap(first + root, first + child)
        root = child


def _heap_sort(d, a, b):
    first, lo, hi = a, 0, b - a
    for i in range((hi - 1) // 2, -1, -1):
        _sift_down(d, i, hi, first)
    for i in range(hi - 1, -1, -1):
        d.swap(first, first + i)
        _sift_down(d, lo, i, first)


def _partition(d, a, b, pivot):
    d.swap(a, pivot)
    i, j = a + 1, b - 1
    while i <= j and d.less(i, a):
        i += 1
    while i <= j and not d.less(j, a):
        j -= 1
    if i > j:
        d.swap(j, a)
        return j, True
    d.swap(i, j)
    i += 1
    j -= 1
    while True:
        while i <= j and d.less(i, a):
            i += 1
        while i <= j and not d.less(j, a):
            j -= 1
        if i > j:
            break
        d.swap(i, j)
        i += 1
        j -= 1
    d.swap(j, a)
    return j, False


def _partition_equal(d, a, b, pivot):
    d.swap(a, pivot)
    i, j = a + 1, b - 1
    while True:
        while i <= j and not d.less(a, i):
            i += 1
        while i <= j and d.less(a, j):
            j -= 1
        if i > j:
            break
        d.swap(i, j)
        i += 1
        j -= 1
    return i


def _partial_insertion_sort(d, a, b):
    i = a + 1
    for _ in range(5):
        while i < b and not d.less(i, i - 1):
            i += 1
        if i == b:
            return True
        if b - a < 50:
            return False
        d.swap(i, i - 1)
        if i - a >= 2:
            for j in range(i - 1, 0, -1):
                if not d.less(j, j - 1):
                    break
                d.swap(j, j - 1)
        if b - i >= 2:
            for j in range(i + 1, b):
                if not d.less(j, j - 1):
                    break
                d.swap(j, j - 1)
    return False


def _break_patterns(d, a, b):
    length = b - a
    if length >= 8:
        r = length
        modulus = 1 << length.bit_length()
        for idx in range(a + (length // 4) * 2 - 1, a + (length // 4) * 2 + 2):
            r ^= (r << 13) & 0xFFFFFFFFFFFFFFFF
            r ^= r >> 7
            r ^= (r << 17) & 0xFFFFFFFFFFFFFFFF
            other = r & (modulus - 1)
            if other >= length:
                other -= length
            d.swap(idx, a + other)


def _choose_pivot(d, a, b):
    swaps = [0]

    def order2(x, y):
        if d.less(y, x):
            swaps[0] += 1
            return y, x
        return x, y

    def median(x, y, z):
        x, y = order2(x, y)
        y, z = order2(y, z)
        x, y = order2(x, y)
        return y

    n = b - a
    i, j, k = a + n // 4 * 1, a + n // 4 * 2, a + n // 4 * 3
    if n >= 8:
        if n >= 50:
            i = median(i - 1, i, i + 1)
            j = median(j - 1, j, j + 1)
            k = median(k - 1, k, k + 1)
        j = median(i, j, k)
    if swaps[0] == 0:
        return j, "inc"
    if swaps[0] == 12:
        return j, "dec"
    return j, "unknown"


def _pdqsort(d, a, b, limit):
    was_balanced, was_partitioned = True, True
    while True:
        length = b - a
        if length <= 12:
            _insertion_sort(d, a, b)
            return
        if limit == 0:
            _heap_sort(d, a, b)
            return
        if not was_balanced:
            _break_patterns(d, a, b)
            limit -= 1
        pivot, hint = _choose_pivot(d, a, b)
        if hint == "dec":
            i, j = a, b - 1
            while i < j:
                d.swap(i, j)
                i += 1
                j -= 1
            pivot = (b - 1) - (pivot - a)
            hint = "inc"
        if was_balanced and was_partitioned and hint == "inc":
            if _partial_insertion_sort(d, a, b):
                return
        if a > 0 and not d.less(a - 1, pivot):
            a = _partition_equal(d, a, b, pivot)
            continue
        mid, was_partitioned = _partition(d, a, b, pivot)
        left, right = mid - a, b - mid
        threshold = length // 8
        if left < right:
            was_balanced = left >= threshold
            _pdqsort(d, a, mid, limit)
            a = mid + 1
        else:
            was_balanced = right >= threshold
            _pdqsort(d, mid + 1, b, limit)
            b = mid


def go_sort_reverse(h: list, bottom: bool) -> None:
    """sort.Sort(sort.Reverse(heap)) in place."""
    if len(h) > 1:
        _pdqsort(GoReverse(h, bottom), 0, len(h), len(h).bit_length())


def reference_topk(V, P, gid, k, bottom):
    """aggregationK for TOPK/BOTTOMK over all steps: (kept mask, per-step output rows in order)."""
    N, S = V.shape
    sel = np.zeros((N, S), bool)
    orders = []
    for c in range(S):
        kk = min(int(k[c]), N)
        heaps: dict[int, GoHeap] = {}  # insertion order = order of the group's first sample
        if kk >= 1:
            for r in range(N):
                if not P[r, c]:
                    continue
                v = float(V[r, c])
                h = heaps.get(int(gid[r]))
                if h is None:
                    h = heaps[int(gid[r])] = GoHeap(bottom)
                    h.push((v, r))
                elif len(h.h) < kk:
                    h.push((v, r))
                else:
                    top = h.h[0][0]
                    better = top > v if bottom else top < v
                    if better or (math.isnan(top) and not math.isnan(v)):
                        h.h[0] = (v, r)
                        if kk > 1:
                            h.fix(0)
        out = []
        for g in sorted(heaps, key=lambda g: _first_row(gid, g)):  # Prometheus' groups: first appearance
            h = heaps[g].h
            go_sort_reverse(h, bottom)
            out += [r for _, r in h]
        for r in out:
            sel[r, c] = True
        orders.append(out)
    return sel, orders


def _first_row(gid, g):
    return int(np.nonzero(np.asarray(gid) == g)[0][0])


# ------------------------------------------------------------------ the kernel against the reference

VALUES = st.sampled_from([0.0, 1.0, 1.0, 2.0, 2.0, 3.0, -1.0, math.nan, math.inf, -math.inf, -0.0])


@st.composite
def matrices(draw, max_n=40, max_s=6):
    n = draw(st.integers(1, max_n))
    s = draw(st.integers(1, max_s))
    vals = draw(st.lists(VALUES, min_size=n * s, max_size=n * s))
    pres = draw(st.lists(st.sampled_from([True, True, True, False]), min_size=n * s, max_size=n * s))
    groups = draw(st.integers(1, 4))
    gid = draw(st.lists(st.integers(0, groups - 1), min_size=n, max_size=n))
    ks = draw(st.lists(st.integers(-1, n + 3), min_size=s, max_size=s))
    return (np.array(vals, float).reshape(n, s), np.array(pres, bool).reshape(n, s), np.array(gid, np.int64),
            np.array(ks, np.int64))


def _renumber(gid):
    """Group ids by first appearance, as the engine's _groups makes them."""
    m: dict[int, int] = {}
    return np.array([m.setdefault(int(g), len(m)) for g in gid], np.int64), len(set(gid.tolist()))


def _kernel(V, P, gid, k, bottom):
    gid, G = _renumber(gid)
    N, S = V.shape
    sel = np.zeros((N, S), np.uint8)
    out = np.empty(N, np.int64)
    n = topk_c.select(V, P.view(np.uint8), gid, G, k, bottom, sel, out, N)
    return sel.view(bool), out[:n].tolist()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(matrices(), st.booleans())
def test_kernel_matches_go_heap_walk(m, bottom):
    V, P, gid, k = m
    want_sel, want_orders = reference_topk(V, P, gid, k, bottom)
    got_sel, _ = _kernel(V, P, gid, k, bottom)
    assert (got_sel == want_sel).all()
    for c in range(V.shape[1]):  # single-step calls give the order too
        got_sel1, got_order = _kernel(V[:, c:c + 1].copy(), P[:, c:c + 1].copy(), gid, k[c:c + 1], bottom)
        assert got_order == want_orders[c]
        assert (got_sel1[:, 0] == want_sel[:, c]).all()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, 2.0, 3.0, math.nan, 5.0]), min_size=0, max_size=300), st.booleans())
def test_pdqsort_matches_reference_beyond_insertion_sort(vals, bottom):
    """sort.Sort(sort.Reverse(...)) on arbitrary slices (not only heaps), lengths well past 12."""
    h = [(v, i) for i, v in enumerate(vals)]
    go_sort_reverse(h, bottom)
    perm = np.empty(len(vals), np.int64)
    topk_c.sort_reverse(np.array(vals, float), bottom, perm)
    assert perm.tolist() == [i for _, i in h]


def test_kernel_large_k_heaps_use_pdqsort():
    """Heaps of more than 12 elements go through pdqsort proper (pivots, partitions, heapsort)."""
    rng = np.random.default_rng(7)
    for n, k, hi in ((200, 60, 4), (500, 200, 3), (1000, 700, 50), (300, 300, 2)):
        V = rng.integers(0, hi, (n, 1)).astype(float)
        V[rng.random((n, 1)) < 0.05] = math.nan
        P = rng.random((n, 1)) < 0.9
        gid = rng.integers(0, 2, n).astype(np.int64)
        for bottom in (False, True):
            want_sel, want_orders = reference_topk(V, P, gid, np.array([k]), bottom)
            got_sel, got_order = _kernel(V, P, gid, np.array([k], np.int64), bottom)
            assert (got_sel == want_sel).all()
            assert got_order == want_orders[0]


def test_kernel_many_steps_and_blocks():
    """Wide inputs are walked in column blocks; the per-step answer must not depend on the blocking."""
    rng = np.random.default_rng(3)
    N, S = 300, 700
    V = rng.integers(0, 3, (N, S)).astype(float)
    P = rng.random((N, S)) < 0.8
    gid = rng.integers(0, 5, N).astype(np.int64)
    k = rng.integers(0, 8, S).astype(np.int64)
    for bottom in (False, True):
        want, _ = reference_topk(V, P, gid, k, bottom)
        got, order = _kernel(V, P, gid, k, bottom)
        assert (got == want).all()
        assert order == []


def test_kernel_block_boundaries():
    """Blocks end when the per-(group, step) state or the heaps fill the scratch space: one group per
    series (many small heaps), and k close to the series count (few huge heaps)."""
    rng = np.random.default_rng(5)
    N, S = 3000, 70
    V = rng.integers(0, 2, (N, S)).astype(float)
    P = rng.random((N, S)) < 0.9
    gid = np.arange(N, dtype=np.int64) // 2
    k = rng.integers(0, 3, S).astype(np.int64)
    want, _ = reference_topk(V, P, gid, k, False)
    got, _ = _kernel(V, P, gid, k, False)
    assert (got == want).all()
    N, S = 12000, 14
    V = rng.integers(0, 5, (N, S)).astype(float)
    P = rng.random((N, S)) < 0.95
    gid = np.zeros(N, np.int64)
    k = np.array([N - 5, N, 3, N + 10, N // 2, 0, 1, N - 1, N, N, 2, N, N - 100, N]) - 1
    for bottom in (False, True):
        want, _ = reference_topk(V, P, gid, k, bottom)
        got, _ = _kernel(V, P, gid, k, bottom)
        assert (got == want).all()


# ------------------------------------------------------------------ the engine against the reference

STEP = 600_000  # longer than the 5m lookback, so a missing sample is missing at its step


def _series_labels(i, g):
    # "a" sorts before "g": series order (Prometheus' selector order) interleaves the groups.
    return (("__name__", "x"), ("a", f"{i:03d}"), ("g", f"g{g}"))


def _queryable(V, P, gid):
    q = MemoryQueryable()
    N, S = V.shape
    for i in range(N):  # added in label order, the order Prometheus' storage returns them in
        t = np.arange(S, dtype=np.int64)[P[i]] * STEP
        if len(t):
            q.add(dict(_series_labels(i, int(gid[i]))), t, V[i][P[i]])
    return q


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(matrices(max_n=25, max_s=4), st.booleans(), st.booleans(), st.data())
def test_engine_matches_reference(m, bottom, by_group, data):
    V, P, gid, _ = m
    N, S = V.shape
    k = data.draw(st.integers(0, N + 3))
    op = "bottomk" if bottom else "topk"
    query = f"{op} by (g) ({k}, x)" if by_group else f"{op}({k}, x)"
    # The engine sees only series with a sample somewhere in the range; the reference gets the same.
    keep = P.any(axis=1)
    rows = np.nonzero(keep)[0]
    q = _queryable(V, P, gid)
    Vk, Pk = V[rows], P[rows]
    gk = gid[rows] if by_group else np.zeros(len(rows), np.int64)
    kk = np.full(S, k, np.int64)
    want_sel, want_orders = reference_topk(Vk, Pk, gk, kk, bottom)
    e = Engine()
    for c in range(S):
        res = e.instant(query, c * STEP, q)
        got = [s.labels for s in res.value]
        # an instant query at one step sees only the series with a sample in its lookback window
        rc = np.nonzero(Pk[:, c])[0]
        one_sel, one_order = reference_topk(Vk[rc, c:c + 1], Pk[rc, c:c + 1], gk[rc], kk[:1], bottom)
        assert got == [_series_labels(int(rows[rc[r]]), int(gid[rows[rc[r]]])) for r in one_order[0]], (query, c)
        vals = [s.v for s in res.value]
        assert np.array_equal(vals, [Vk[rc[r], c] for r in one_order[0]], equal_nan=True)
    if S > 1:
        res = e.range(query, 0, (S - 1) * STEP, STEP, q)
        got = {s.labels: s.t.tolist() for s in res.value}
        want = {}
        for r in range(len(rows)):
            ts = [c * STEP for c in range(S) if want_sel[r, c]]
            if ts:
                want[_series_labels(int(rows[r]), int(gid[rows[r]]))] = ts
        assert got == want, query


def test_tie_at_kth_place_is_cut_by_the_heap_not_by_series_order():
    """1, 3, 3, NaN, 3, 2 with k = 2: the second 3 replaces the 1 at the root and the later 3s do not
    beat the root, so the heap is [s2, s1] and the reverse sort (stable for equal values at n = 2)
    keeps that order."""
    q = MemoryQueryable()
    for i, v in enumerate([1.0, 3.0, 3.0, math.nan, 3.0, 2.0]):
        q.add({"__name__": "x", "i": str(i)}, np.array([0]), np.array([v]))
    e = Engine()
    assert [dict(s.labels)["i"] for s in e.instant("topk(2, x)", 0, q).value] == ["2", "1"]
    assert [dict(s.labels)["i"] for s in e.instant("bottomk(2, x)", 0, q).value] == ["0", "5"]
    assert [dict(s.labels)["i"] for s in e.instant("topk(6, x)", 0, q).value][-1] == "3"


# ------------------------------------------------------------------ Go itself

GO_PROGRAM = r"""
package main

import (
	"container/heap"
	"encoding/json"
	"math"
	"os"
	"sort"
)

type S struct {
	F float64
	R int
}
type H []S

func (s H) Len() int { return len(s) }
func (s H) Less(i, j int) bool {
	if math.IsNaN(s[i].F) {
		return true
	}
	return s[i].F < s[j].F
}
func (s H) Swap(i, j int) { s[i], s[j] = s[j], s[i] }
func (s *H) Push(x any)  { *s = append(*s, x.(S)) }
func (s *H) Pop() any     { o := *s; n := len(o); e := o[n-1]; *s = o[:n-1]; return e }

type RH []S

func (s RH) Len() int { return len(s) }
func (s RH) Less(i, j int) bool {
	if math.IsNaN(s[i].F) {
		return true
	}
	return s[i].F > s[j].F
}
func (s RH) Swap(i, j int) { s[i], s[j] = s[j], s[i] }
func (s *RH) Push(x any)  { *s = append(*s, x.(S)) }
func (s *RH) Pop() any     { o := *s; n := len(o); e := o[n-1]; *s = o[:n-1]; return e }

type Case struct {
	V      []*float64 `json:"v"` // null = NaN
	K      int64      `json:"k"`
	Bottom bool       `json:"bottom"`
}

func main() {
	var cases []Case
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	out := [][]int{}
	for _, c := range cases {
		k := min(c.K, int64(len(c.V)))
		h := H{}
		for r, p := range c.V {
			f := math.NaN()
			if p != nil {
				f = *p
			}
			s := S{f, r}
			switch {
			case int64(len(h)) < k:
				if c.Bottom {
					heap.Push((*RH)(&h), s)
				} else {
					heap.Push(&h, s)
				}
			case !c.Bottom && (h[0].F < s.F || (math.IsNaN(h[0].F) && !math.IsNaN(s.F))):
				h[0] = s
				if k > 1 {
					heap.Fix(&h, 0)
				}
			case c.Bottom && (h[0].F > s.F || (math.IsNaN(h[0].F) && !math.IsNaN(s.F))):
				h[0] = s
				if k > 1 {
					heap.Fix((*RH)(&h), 0)
				}
			}
		}
		if len(h) > 1 {
			if c.Bottom {
				sort.Sort(sort.Reverse((*RH)(&h)))
			} else {
				sort.Sort(sort.Reverse(h))
			}
		}
		rows := []int{}
		for _, s := range h {
			rows = append(rows, s.R)
		}
		out = append(out, rows)
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
"""


def test_kernel_matches_go_toolchain(tmp_path):
    """The same walk compiled by Go (container/heap, sort.Sort): selection and order, heaps up to 400."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain on PATH")
    (tmp_path / "main.go").write_text(GO_PROGRAM)
    (tmp_path / "go.mod").write_text("module topkref\n\ngo 1.21\n")
    env = {**os.environ, "GOCACHE": str(tmp_path / "cache"), "GOPATH": str(tmp_path / "gopath"),
           "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "HOME": str(tmp_path)}
    b = subprocess.run([go, "build", "-o", str(tmp_path / "ref"), "."], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert b.returncode == 0, b.stderr
    rng = np.random.default_rng(11)
    cases = []
    for _ in range(600):
        n = int(rng.choice([1, 2, 5, 13, 30, 80, 400]))
        v = rng.integers(0, int(rng.choice([2, 3, 5, 1000])), n).astype(float)
        v[rng.random(n) < 0.1] = math.nan
        k = int(rng.choice([1, 2, 3, 13, 20, 64, n, n + 5]))
        cases.append((v, k, bool(rng.integers(0, 2))))
    payload = json.dumps([{"v": [None if math.isnan(x) else x for x in v.tolist()], "k": k, "bottom": bot}
                          for v, k, bot in cases])
    r = subprocess.run([str(tmp_path / "ref")], input=payload, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    want = json.loads(r.stdout)
    for (v, k, bot), w in zip(cases, want):
        n = len(v)
        _, order = _kernel(v.reshape(n, 1), np.ones((n, 1), bool), np.zeros(n, np.int64), np.array([k]), bot)
        assert order == w, (v.tolist(), k, bot)


# ------------------------------------------------------------------ a real Prometheus 3.9.1

H2 = 7_200_000
SCRAPE = 15_000


def _prom_data():
    """~30 series of small integers (heavy ties), a few NaNs, some gaps longer than the lookback."""
    rng = np.random.default_rng(2024)
    start = (1_700_000_000_000 // H2) * H2 + 600_000
    n_samples = 240  # 1h
    t_all = start + np.arange(n_samples, dtype=np.int64) * SCRAPE
    series = []
    for i in range(30):
        v = rng.integers(0, 4, n_samples).astype(np.float64)
        v[rng.random(n_samples) < 0.02] = math.nan
        keep = np.ones(n_samples, bool)
        if i % 4 == 1:  # a 10-minute gap somewhere
            a = int(rng.integers(0, n_samples - 40))
            keep[a:a + 40] = False
        if i % 7 == 3:  # starts late
            keep[: int(rng.integers(20, 120))] = False
        labels = {"__name__": "x", "g": f"g{i % 3}", "i": f"{i:02d}"}
        series.append((labels, t_all[keep], v[keep]))
    tail = [1.0, 3.0, 3.0, math.nan, 3.0, 2.0]  # the classic tie: topk(2, y) keeps 2 then 1
    for i, fv in enumerate(tail):
        series.append(({"__name__": "y", "i": str(i)}, t_all.copy(), np.full(n_samples, fv)))
    series.sort(key=lambda s: tuple(sorted(s[0].items())))
    return start, t_all, series


def _go_float(s: str) -> float:
    return float(s)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


QUERIES = ["topk(3, x)", "bottomk(5, x)", "topk by (g) (2, x)", "bottomk by (g) (4, x)", "topk(15, x)",
           "bottomk(25, x)", "topk(2, y)", "bottomk(2, y)", "bottomk(3, y)", "topk(5, y)", "topk(6, y)",
           "topk(100, x)"]


def test_same_answers_as_prometheus(tmp_path, prometheus_factory, prometheus3_bin):
    from pythanos.tsdb.block import aligned_ranges, write_blocks

    start, t_all, series = _prom_data()
    db = tmp_path / "db"
    mint, maxt = int(t_all[0]), int(t_all[-1]) + 1
    write_blocks(db, ((dict(l), t, v) for l, t, v in series), aligned_ranges(mint, maxt))
    q = MemoryQueryable()
    for labels, t, v in series:
        q.add(labels, t, v)
    prom = prometheus_factory(tsdb_path=db, binary=prometheus3_bin, name="prometheus3",
                              extra_args=["--storage.tsdb.retention.time=100y"])
    e = Engine()

    def api(path, params):
        with urllib.request.urlopen(f"{prom.url}{path}?{urllib.parse.urlencode(params)}", timeout=60) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    mismatches = []
    instants = [int(x) for x in np.linspace(mint + 30_000, maxt - 1, 25)]
    compared = 0
    for query in QUERIES:
        for ts in instants:
            theirs = [(tuple(sorted(r["metric"].items())), _go_float(r["value"][1]))
                      for r in api("/api/v1/query", {"query": query, "time": f"{ts / 1000:.3f}"})]
            ours = [(s.labels, s.v) for s in e.instant(query, ts, q).value]
            compared += 1
            if len(theirs) != len(ours) or any(a[0] != b[0] or not _same(a[1], b[1])
                                               for a, b in zip(theirs, ours)):
                mismatches.append(("instant", query, ts, theirs, ours))
        step = 60_000
        t0, t1 = mint, maxt - 1
        theirs = {tuple(sorted(r["metric"].items())): [(int(round(float(t) * 1000)), _go_float(v))
                                                         for t, v in r["values"]]
                  for r in api("/api/v1/query_range", {"query": query, "start": f"{t0 / 1000:.3f}",
                                                       "end": f"{t1 / 1000:.3f}", "step": "60"})}
        ours = {s.labels: list(zip(s.t.tolist(), s.v.tolist())) for s in e.range(query, t0, t1, step, q).value}
        compared += 1
        if theirs.keys() != ours.keys() or any(
                len(theirs[l]) != len(ours[l]) or any(a[0] != b[0] or not _same(a[1], b[1])
                                                       for a, b in zip(theirs[l], ours[l])) for l in theirs):
            mismatches.append(("range", query, sorted(set(theirs) ^ set(ours))))
    assert compared == len(QUERIES) * (len(instants) + 1)
    assert mismatches == []
