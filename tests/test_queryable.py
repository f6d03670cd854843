"""The querier's selection path without a store: chunks from a real TSDB encoder decoded and cut
to the selection, compared with a plain per-series reference."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pythanos.dedup import apply_counter_resets, counter_resets_inplace
from pythanos.promql.engine import STALE_NAN
from pythanos.query.queryable import QueryOptions, search_many, to_samples
from pythanos.tsdb.chunkenc import encode_xor


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(0, 60), max_size=12), max_size=20), st.integers(-2, 62), st.booleans())
def test_search_many_equals_searchsorted(runs, x, right):
    runs = [np.sort(np.array(r, np.int64)) for r in runs]
    t = np.concatenate(runs) if runs else np.zeros(0, np.int64)
    b = np.r_[0, np.cumsum([len(r) for r in runs])].astype(np.int64)
    got = search_many(t, b[:-1], b[1:], x, right=right)
    exp = [b[i] + np.searchsorted(r, x, "right" if right else "left") for i, r in enumerate(runs)]
    assert got.tolist() == exp


def _chunks(t: np.ndarray, v: np.ndarray, per: int) -> list:
    out = []
    for i in range(0, len(t), per):
        tt, vv = t[i:i + per], v[i:i + per]
        out.append((int(tt[0]), int(tt[-1]), 0, encode_xor(tt, vv)))
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(0, 2**32), st.booleans(), st.booleans(), st.sampled_from([1, 50, 700, 1 << 22]))
def test_single_source_selection(nseries, seed, stale, counter, batch):
    """Decoded and cut to [mint, maxt] as a per-series reference does, in label order, whatever
    the batch size; each batch says whether it holds a staleness marker; under a counter
    function the samples are Thanos' running totals (``apply_counter_resets``) before the cut."""
    rng = np.random.default_rng(seed)
    series, raw = {}, {}
    for i in range(nseries):
        n = int(rng.integers(1, 400))
        t = np.cumsum(rng.integers(1, 30_000, n)).astype(np.int64)
        v = np.cumsum(rng.random(n)) if counter else rng.standard_normal(n)
        if counter:
            v[rng.random(n) < 0.05] = 0.5  # resets
        if stale and i == 0:
            v[n // 2] = STALE_NAN
        lbls = (("__name__", "m"), ("i", f"{(i * 7) % nseries:03d}"), ("n", str(i)))
        series[lbls] = _chunks(t, v, int(rng.integers(1, 150)))
        raw[lbls] = apply_counter_resets(t, v) if counter else (t, v)
    allt = np.concatenate([t for t, _ in raw.values()])
    mint, maxt = int(np.quantile(allt, 0.2)), int(np.quantile(allt, 0.7))
    func = "rate" if counter else ""
    sel = to_samples(series, {k: 1 for k in series}, mint, maxt, QueryOptions(dedup=False), func)
    assert len(sel) == nseries
    exp = []
    for lbls in sorted(raw):
        t, v = raw[lbls]
        keep = (t >= mint) & (t <= maxt)
        if keep.any():
            exp.append((lbls, t[keep], v[keep]))
    batches = list(sel.batches(batch))
    got = [x for b in batches for x in b]
    assert [g[0] for g in got] == [e[0] for e in exp]
    for (_, gt, gv), (_, et, ev) in zip(got, exp):
        assert np.array_equal(gt, et)
        assert np.array_equal(gv.view(np.uint64), ev.view(np.uint64))
    assert [x[0] for x in sel] == [e[0] for e in exp]  # plain iteration: the same series
    for b in batches:
        has = any((x[2].view(np.uint64) == np.float64(STALE_NAN).view(np.uint64)).any() for x in b)
        assert not (b.stale_free and has)
    if not stale or counter:
        assert all(b.stale_free for b in batches)


def test_counter_resets_in_place_equals_copy():
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(0, 60))
        t = np.cumsum(rng.integers(0, 3, n)).astype(np.int64)  # repeats and steps
        v = rng.integers(0, 5, n).astype(np.float64)
        v[rng.random(n) < 0.1] = np.nan
        et, ev = apply_counter_resets(t, v)
        t2, v2 = t.copy(), v.copy()
        m = counter_resets_inplace(t2, v2)
        assert np.array_equal(t2[:m], et) and np.array_equal(v2[:m], ev)


def test_range_functions_over_a_lazy_selection_of_nothing():
    """A range function over a selector the stores have no series for: an empty vector (or
    matrix), as over an empty in-memory selection. The querier's lazy selection of nothing has
    no batches; the engine then found no part to join and the query failed with a 500
    (``increase(metric_not_yet_scraped[1m]) > 0`` in a rule, found by test_rule_faults)."""
    from pythanos.promql.engine import Engine

    class Empty:
        def select(self, matchers, mint, maxt, hints=None):
            return to_samples({}, {}, mint, maxt, QueryOptions(dedup=False), getattr(hints, "func", "") or "")

    assert hasattr(Empty().select([], 0, 1), "batches")  # the lazy kind
    e = Engine()
    for q in ("increase(m[1m]) > 0", "rate(m[1m])", "max_over_time(m[5m])", "sum(rate(m[1m]))"):
        assert e.instant(q, 1_700_000_000_000, Empty()).value == [], q
        assert e.range(q, 1_700_000_000_000, 1_700_000_060_000, 15_000, Empty()).value == [], q
