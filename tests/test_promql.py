"""Focused tests of PromQL semantics that implementations get wrong (prometheus-formats.md §10.3, §11)."""
import math

import numpy as np
import pytest

from pythanos.promql import (STALE_NAN, Engine, ExecutionError, MemoryQueryable, ParseError, format_float,
                             format_scalar_float, format_timestamp, response_json)

M = 60_000


def _q(series):
    q = MemoryQueryable()
    for labels, t, v in series:
        q.add(labels, np.asarray(t, dtype=np.int64), np.asarray(v, dtype=np.float64))
    return q


def _vec(res):
    assert res.type == "vector"
    return {s.labels: s.v for s in res.value}


def test_rate_extrapolation_and_counter_reset():
    # samples every 15s from 15s, counter with a reset; window (T-5m, T]
    t = np.arange(1, 21) * 15_000
    v = np.arange(1, 21, dtype=float) * 3
    v[10:] -= 30  # reset: 30 -> 3
    q = _q([({"__name__": "c", "job": "a"}, t, v)])
    e = Engine()
    got = _vec(e.instant("increase(c[5m])", 300_000, q))[(("job", "a"),)]
    # by hand: last-first + reset correction, extrapolated (Prometheus extrapolatedRate)
    first, last = v[0], v[-1]
    result = last - first + 30.0
    sampled = (t[-1] - t[0]) / 1000
    avg = sampled / (len(t) - 1)
    d_start = (t[0] - 0) / 1000
    d_start = avg / 2 if d_start >= avg * 1.1 else d_start
    d_start = min(d_start, sampled * first / result)
    d_end = (300_000 - t[-1]) / 1000
    assert got == pytest.approx(result * (sampled + d_start + d_end) / sampled, rel=1e-12)
    r = _vec(e.instant("rate(c[5m])", 300_000, q))[(("job", "a"),)]
    assert r == pytest.approx(got / 300, rel=1e-12)


def test_left_open_window_and_fewer_than_two_samples():
    q = _q([({"__name__": "x"}, [0, 60_000], [1, 2])])
    e = Engine()
    # the sample at T-1m is outside (T-1m, T]: only one sample left -> no output
    assert e.instant("rate(x[1m])", 60_000, q).value == []
    assert _vec(e.instant("count_over_time(x[1m])", 60_000, q)) == {(): 1.0}
    assert _vec(e.instant("count_over_time(x[61s])", 60_000, q)) == {(): 2.0}


def test_lookback_and_staleness():
    q = _q([({"__name__": "x"}, [0, 60_000, 120_000], [1, 2, STALE_NAN])])
    e = Engine()
    assert _vec(e.instant("x", 100_000, q)) == {(("__name__", "x"),): 2.0}
    assert e.instant("x", 120_000, q).value == []  # stale marker ends the series
    q2 = _q([({"__name__": "y"}, [0], [5])])
    assert e.instant("y", 5 * M, q2).value == []  # lookback is left-open (3.x)
    assert _vec(e.instant("y", 5 * M - 1, q2)) == {(("__name__", "y"),): 5.0}
    # stale markers are dropped from range selections
    assert _vec(e.instant("count_over_time(x[5m])", 150_000, q)) == {(): 2.0}


def test_range_query_matches_instant():
    t = np.arange(0, 3600_000, 15_000)
    q = _q([({"__name__": "x", "i": str(i)}, t, np.cumsum(np.random.default_rng(i).random(len(t))))
            for i in range(5)])
    e = Engine()
    rr = e.range("sum by (i) (rate(x[5m]))", 600_000, 1800_000, 60_000, q)
    for s in rr.value:
        for ti, vi in zip(s.t.tolist(), s.v.tolist()):
            inst = _vec(e.instant("sum by (i) (rate(x[5m]))", ti, q))
            assert inst[s.labels] == pytest.approx(vi, rel=1e-9)


def test_many_to_many_error_text():
    q = _q([({"__name__": "a", "job": "x", "i": "1"}, [0], [1]),
            ({"__name__": "b", "job": "x", "i": "1"}, [0], [1]),
            ({"__name__": "b", "job": "x", "i": "2"}, [0], [2])])
    e = Engine()
    with pytest.raises(ExecutionError) as ei:
        e.instant("a + on(job) b", 0, q)
    assert str(ei.value) == (
        'found duplicate series for the match group {job="x"} on the right hand-side of the operation: '
        '[{__name__="b", i="2", job="x"}, {__name__="b", i="1", job="x"}];many-to-many matching not allowed: '
        'matching labels must be unique on one side')
    assert ei.value.error_type == "execution" and ei.value.status == 422
    with pytest.raises(ExecutionError, match="many-to-one matching must be explicit"):
        e.instant("b + on(job) a", 0, q)
    with pytest.raises(ExecutionError, match="vector cannot contain metrics with the same labelset"):
        e.instant('rate({__name__=~"a|b", i="1"}[5m]) or abs({__name__=~"a|b", i="1"})', 0, q)


def test_parse_error_is_bad_data():
    with pytest.raises(ParseError) as ei:
        Engine().instant("sum(x", 0, MemoryQueryable())
    assert ei.value.error_type == "bad_data" and "unclosed left parenthesis" in str(ei.value)


def test_absent_labels_and_name_dropping():
    e = Engine()
    q = _q([({"__name__": "x", "job": "a"}, [0], [-3])])
    assert _vec(e.instant('absent(nonexistent{job="myjob",instance=~".*"})', 0, q)) == {(("job", "myjob"),): 1.0}
    assert _vec(e.instant("absent(sum(nonexistent))", 0, q)) == {(): 1.0}
    assert _vec(e.instant("abs(x)", 0, q)) == {(("job", "a"),): 3.0}
    assert _vec(e.instant("x > -5", 0, q)) == {(("__name__", "x"), ("job", "a")): -3.0}
    assert _vec(e.instant("x > bool -5", 0, q)) == {(("job", "a"),): 1.0}


def test_histogram_quantile_classic():
    les = ["0.1", "0.5", "1", "+Inf"]
    counts = [1, 5, 8, 10]
    q = _q([({"__name__": "h_bucket", "le": le}, [0], [c]) for le, c in zip(les, counts)])
    e = Engine()
    assert _vec(e.instant("histogram_quantile(0.5, h_bucket)", 0, q))[()] == pytest.approx(0.1 + 0.4 * 4 / 4)
    assert _vec(e.instant("histogram_quantile(0.99, h_bucket)", 0, q))[()] == 1.0
    assert _vec(e.instant("histogram_quantile(2, h_bucket)", 0, q))[()] == math.inf


def test_number_formatting():
    assert format_float(1e-07) == "1e-07"
    assert format_float(1e21) == "1e+21"
    assert format_float(0.1 + 0.2) == "0.30000000000000004"
    assert format_float(123456789012345678.0) == "123456789012345680"
    assert format_float(-0.0) == "-0"
    assert [format_float(x) for x in (math.inf, -math.inf, math.nan)] == ["+Inf", "-Inf", "NaN"]
    assert format_scalar_float(1e21) == "1000000000000000000000"
    assert format_timestamp(1700000100500) == "1700000100.500"
    assert format_timestamp(1700000000050) == "1700000000.050"
    assert format_timestamp(-1500) == "-1.500"
    assert format_timestamp(1700000100000) == "1700000100"
    res = Engine().instant("scalar(vector(1e21))", 1700000100500, MemoryQueryable())
    assert response_json(res) == '{"status":"success","data":{"resultType":"scalar","result":[1700000100.5,"1000000000000000000000"]}}'


def test_subquery_and_at_modifier():
    t = np.arange(0, 3600_000, 60_000)
    q = _q([({"__name__": "x"}, t, t / 1000.0)])
    e = Engine()
    assert _vec(e.instant("x @ 600", 3000_000, q)) == {(("__name__", "x"),): 600.0}
    assert _vec(e.instant("x @ 600 offset 1m", 3000_000, q)) == {(("__name__", "x"),): 540.0}
    # subquery steps aligned to multiples of the step, window left-open
    assert _vec(e.instant("count_over_time(x[5m:1m])", 600_000, q)) == {(): 5.0}
    assert _vec(e.instant("max_over_time(x[10m:2m] @ end())", 600_000, q)) == {(): 600.0}


def test_batched_range_functions_match_per_series_across_chunks(monkeypatch):
    """Counter resets, series boundaries and batch boundaries: many series in tiny batches must give
    what each series gives alone."""
    from pythanos.promql import functions as fn

    rng = np.random.default_rng(7)
    series = []
    for i in range(12):
        n = int(rng.integers(1, 60))
        t = np.sort(rng.choice(np.arange(0, 3600_000, 5_000), n, replace=False))
        v = np.cumsum(rng.integers(0, 5, n)).astype(float)
        if n > 4:
            v[n // 2:] -= v[n // 2] - 1  # a reset
        if i % 3 == 0:
            v = v[::-1].copy()  # many resets; the next series starts lower than this one ends
        series.append(({"__name__": "c", "i": str(i)}, t, v))
    q = _q(series)
    e = Engine()
    queries = ["rate(c[5m])", "increase(c[3m])", "delta(c[5m])", "irate(c[5m])", "resets(c[10m])",
               "changes(c[10m])", "count_over_time(c[2m])", "last_over_time(c[1m])"]
    whole = {qq: e.range(qq, 0, 3600_000, 30_000, q) for qq in queries}
    monkeypatch.setattr(fn, "_CHUNK_SAMPLES", 7)
    for qq in queries:
        small = e.range(qq, 0, 3600_000, 30_000, q)
        assert [(s.labels, s.t.tolist(), s.v.tolist()) for s in small.value] == \
               [(s.labels, s.t.tolist(), s.v.tolist()) for s in whole[qq].value], qq
        for labels, t, v in series:
            one = e.range(qq, 0, 3600_000, 30_000, _q([(labels, t, v)]))
            want = [(s.t.tolist(), s.v.tolist()) for s in one.value]
            key = tuple(sorted((k, x) for k, x in labels.items() if k != "__name__" or qq.startswith("last")))
            got = [(s.t.tolist(), s.v.tolist()) for s in small.value if s.labels == key]
            assert got == want, (qq, labels)


def test_topk_ties_follow_prometheus_heap_and_nan_last():
    """Tie order as Prometheus 3.9.1's heap leaves it (checked against a real one in test_promql_topk.py)."""
    q = _q([({"__name__": "x", "i": str(i)}, [0], [v]) for i, v in enumerate([1.0, 3.0, 3.0, math.nan, 3.0, 2.0])])
    e = Engine()
    res = e.instant("topk(2, x)", 0, q)
    assert [dict(s.labels)["i"] for s in res.value] == ["2", "1"]
    res = e.instant("bottomk(2, x)", 0, q)
    assert [dict(s.labels)["i"] for s in res.value] == ["0", "5"]
    res = e.instant("topk(5, x)", 0, q)
    assert [dict(s.labels)["i"] for s in res.value] == ["2", "1", "4", "5", "0"]
    res = e.instant("topk(6, x)", 0, q)
    assert [dict(s.labels)["i"] for s in res.value][-1] == "3"
    r = e.range("topk(1, x)", 0, 60_000, 30_000, q)
    assert [(dict(s.labels)["i"], s.t.tolist()) for s in r.value] == [("1", [0, 30_000, 60_000])]


def test_regex_flags_in_mid_pattern_follow_re2():
    """RE2 applies ``(?i)`` from where it stands to the end of its group, every later alternative included."""
    from pythanos.tsdb.labels import Matcher

    def m(rx, s):
        return Matcher("=~", "l", rx).matches(s)

    assert m("((?i)PRO).*", "production") and not m("((?i)PRO).*", "xpro")
    assert m(".*((?i)DUC).*", "PRODUCTION") and m(".*((?i)DUC).*", "production")
    assert m("a(?i)b|c", "aB") and m("a(?i)b|c", "C") and not m("a(?i)b|c", "AB")
    assert m("a(?i)b(?-i)c", "aBc") and not m("a(?i)b(?-i)c", "aBC")
    assert m("[[:alpha:]]+[[:digit:]]", "abc1") and not m("[[:alpha:]]+", "ab1")
    assert m("(?<x>a)b", "ab")


def test_delayed_name_removal_is_an_engine_option():
    q = _q([({"__name__": "a", "env": "1"}, [0], [1.0]), ({"__name__": "b", "env": "1"}, [0], [2.0])])
    with pytest.raises(ExecutionError, match="same labelset"):
        Engine().instant('sum by (env) (rate({env="1"}[5m])) or -{env="1"}', 0, q)
    d = Engine(delayed_name_removal=True)
    # grouped by the names still there, then both names go: the labelsets clash at the end
    with pytest.raises(ExecutionError, match="same labelset"):
        d.instant('sum by (__name__) (-{env="1"})', 0, q)
    assert _vec(d.instant('sum by (__name__) ({env="1"})', 0, q)) == {(("__name__", "a"),): 1.0,
                                                                       (("__name__", "b"),): 2.0}
    assert _vec(d.instant('sum by (env) (-{env="1"})', 0, q)) == {(("env", "1"),): -3.0}
    assert _vec(d.instant('label_replace(-{env="1"}, "__name__", "n_$1", "__name__", "(.+)")', 0, q)) == {
        (("__name__", "n_a"), ("env", "1")): -1.0, (("__name__", "n_b"), ("env", "1")): -2.0}
    res = d.instant('max_over_time((-a)[1m:30s])', 0, q)
    assert [s.labels for s in res.value] == [(("env", "1"),)]
    res = d.instant('(-a)[1m:30s]', 0, q)
    assert [s.labels for s in res.value] == [(("env", "1"),)]


def test_window_order_statistics_match_a_per_window_reference(monkeypatch):
    """quantile_over_time / mad_over_time on step chunks (NaNs, +-Inf, ragged windows) against a plain
    per-window computation of Prometheus' quantile (NaNs sorted first)."""
    from pythanos.promql import functions as fn

    rng = np.random.default_rng(11)
    t = np.sort(rng.choice(np.arange(0, 1800_000, 5_000), 200, replace=False))
    v = rng.normal(0, 10, len(t))
    v[rng.choice(len(t), 12, replace=False)] = np.nan
    v[rng.choice(len(t), 4, replace=False)] = np.inf
    v[rng.choice(len(t), 4, replace=False)] = -np.inf
    q = _q([({"__name__": "g"}, t, v)])
    monkeypatch.setattr(fn, "_WINDOW_CELLS", 50)  # many step chunks

    def ref_quantile(qq, w):
        w = np.concatenate([w[np.isnan(w)], np.sort(w[~np.isnan(w)])])
        return _quantile_model(qq, w.tolist())

    ts = np.arange(0, 1800_001, 30_000)
    for query, f in (("quantile_over_time(0.3, g[2m])", lambda w: ref_quantile(0.3, w)),
                     ("quantile_over_time(1.5, g[2m])", lambda w: ref_quantile(1.5, w)),
                     ("mad_over_time(g[3m])", lambda w: ref_quantile(0.5, np.abs(w - ref_quantile(0.5, w))))):
        rng_ms = 120_000 if "2m" in query else 180_000
        res = Engine().range(query, 0, 1800_000, 30_000, q)
        got = dict(zip(res.value[0].t.tolist(), res.value[0].v.tolist())) if res.value else {}
        for T in ts:
            w = v[(t > T - rng_ms) & (t <= T)]
            if len(w) == 0:
                assert T not in got
                continue
            want = f(w)
            assert (math.isnan(want) and math.isnan(got[T])) or got[T] == want, (query, T, got[T], want)


def test_aggregation_by_blocks_of_steps_equals_whole():
    """Big vectors are aggregated a block of steps at a time; every block size gives the same
    groups, presence and values (sum and avg to the last bits only: their compensation is chosen
    per block)."""
    from pythanos.promql import functions as fn
    rng = np.random.default_rng(0)
    for _ in range(150):
        N, S = int(rng.integers(1, 40)), int(rng.integers(1, 30))
        V = rng.standard_normal((N, S)) * 10.0 ** rng.integers(-3, 15, (N, 1))
        V[rng.random((N, S)) < 0.05] = np.nan
        V[rng.random((N, S)) < 0.02] = np.inf
        P = rng.random((N, S)) < 0.8
        ids = rng.integers(0, 5, N)
        B = int(rng.integers(1, S + 1))
        for op in ("sum", "count", "group", "avg", "min", "max", "stddev", "stdvar"):
            whole = fn._agg_steps(op, V, P, ids, 5)
            parts = [fn._agg_steps(op, V[:, a:a + B], P[:, a:a + B], ids, 5) for a in range(0, S, B)]
            out = np.concatenate([p[0] for p in parts], axis=1)
            assert np.array_equal(parts[0][2], whole[2])
            assert np.array_equal(np.concatenate([p[1] for p in parts], axis=1), whole[1])
            if op in ("sum", "avg"):
                # plain summation is used only where |sum| > sum|v| / 1e4: at most ~N eps 1e4 apart
                np.testing.assert_allclose(out, whole[0], rtol=1e-10, atol=0)
            else:
                assert np.array_equal(out, whole[0], equal_nan=True)


def _q_outside(q):
    """What both quantile functions answer for a NaN q or one outside [0, 1] (else None)."""
    import math
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    return None


def _bucket_quantile_model(q, les, counts):
    """Prometheus' bucketQuantile for one step, written the plain way (present buckets only)."""
    import math
    if _q_outside(q) is not None:
        return _q_outside(q)
    if len(les) == 0 or not math.isinf(les[-1]) or les[-1] < 0:
        return math.nan
    ub, idx = np.unique(les, return_index=True)
    les, counts = ub, np.add.reduceat(counts, idx)
    if len(les) < 2:
        return math.nan
    counts = np.maximum.accumulate(np.where(np.isnan(counts), -np.inf, counts))
    total = counts[-1]
    if total == 0 or math.isnan(total):
        return math.nan
    rank = q * total
    cand = np.nonzero(counts[:-1] >= rank)[0]
    b = int(cand[0]) if len(cand) else len(les) - 1
    if b == len(les) - 1:
        return float(les[-2])
    if b == 0 and les[0] <= 0:
        return float(les[0])
    start, end, cnt = 0.0, les[b], counts[b]
    if b > 0:
        start = les[b - 1]
        cnt -= counts[b - 1]
        rank -= counts[b - 1]
    return float(start + (end - start) * (rank / cnt))


def _quantile_model(q, vals):
    """Prometheus' quantile of one step's values (sorted with NaNs first)."""
    import math
    if _q_outside(q) is not None:
        return _q_outside(q)
    n = len(vals)
    rank = q * (n - 1)
    lo = max(0, math.floor(rank))
    hi = min(n - 1, lo + 1)
    w = rank - math.floor(rank)
    return vals[lo] * (1 - w) + vals[hi] * w


def _same(a, b) -> bool:
    return (a == b) or (np.isnan(a) and np.isnan(b))


def test_histogram_quantile_all_steps_at_once_equals_per_step_model():
    """Buckets present at some steps only, equal bounds, NaN and decreasing counts, bounds <= 0,
    a missing +Inf bucket, q outside [0, 1] and NaN: every step as the one-step model says."""
    from pythanos.promql import functions as fn
    rng = np.random.default_rng(2)
    for _ in range(400):
        B, S = int(rng.integers(1, 8)), int(rng.integers(1, 12))
        les = np.sort(rng.choice([-1.0, 0.0, 0.5, 1.0, 2.5, 5.0, 10.0, np.inf, np.inf], B))
        if rng.random() < 0.8:
            les[-1] = np.inf
        C = np.cumsum(rng.integers(0, 5, (B, S)), axis=0).astype(np.float64)
        C[rng.random((B, S)) < 0.1] = np.nan
        C[rng.random((B, S)) < 0.1] -= 3  # non-monotonic
        P = rng.random((B, S)) < 0.85
        q = rng.choice([0.0, 0.1, 0.5, 0.9, 0.99, 1.0, -0.5, 1.5, np.nan], S)
        out, anyp = fn._bucket_quantile_steps(q, les, C, P)
        for c in range(S):
            m = P[:, c]
            assert anyp[c] == m.any()
            if m.any():
                with np.errstate(all="ignore"):  # the model computes NaN/Inf cases as Go does
                    exp = _bucket_quantile_model(float(q[c]), les[m], C[m, c])
                assert _same(out[c], exp), (les, C[:, c], m, q[c], out[c], exp)


def test_quantile_aggregation_all_steps_at_once_equals_per_step_model():
    from pythanos.promql import functions as fn
    from pythanos.promql.engine import VS
    rng = np.random.default_rng(4)
    for _ in range(200):
        N, S = int(rng.integers(1, 12)), int(rng.integers(1, 10))
        V = rng.choice([-np.inf, -1.0, 0.0, 0.5, 2.0, 7.5, np.inf, np.nan], (N, S))
        P = rng.random((N, S)) < 0.7
        keys = [("g", str(int(rng.integers(0, 3)))) for _ in range(N)]
        q = rng.choice([0.0, 0.25, 0.5, 0.9, 1.0, -1.0, 2.0, np.nan], S)
        got = fn._quantile_agg(VS([((k,),) for k in keys], V, P), [(k,) for k in keys], q, S)
        ids, order = fn._groups([(k,) for k in keys])
        for g in range(len(order)):
            rows = np.nonzero(ids == g)[0]
            for c in range(S):
                m = P[rows, c]
                assert got.P[g, c] == m.any()
                if m.any():
                    vals = V[rows, c][m]
                    nan = np.isnan(vals)
                    srt = np.concatenate([vals[nan], np.sort(vals[~nan])]).tolist()
                    assert _same(got.V[g, c], _quantile_model(float(q[c]), srt))


def _ts_of_extreme_model(is_max, tw, vw):
    import math
    best, bt = vw[0], tw[0]
    for f, tt in zip(vw, tw):
        if (f >= best if is_max else f <= best) or math.isnan(best):
            best, bt = f, tt
    return bt / 1000.0


def _des_model(w, a, b):
    s0, s1, tr = 0.0, w[0], w[1] - w[0]
    for i in range(1, len(w)):
        x = a * w[i]
        if i - 1 > 0:
            tr = b * (s1 - s0) + (1 - b) * tr
        y = (1 - a) * (s1 + tr)
        s0, s1 = s1, x + y
    return s1


def test_window_walks_vectorised_equal_per_window_models(monkeypatch):
    """ts_of_max/min_over_time and double_exponential_smoothing run over all windows at once
    (step chunks included); each window equals Prometheus' per-window walk, bit for bit."""
    from pythanos.promql import functions as fn
    monkeypatch.setattr(fn, "_WINDOW_CELLS", 40)
    rng = np.random.default_rng(9)
    for _ in range(100):
        n = int(rng.integers(1, 60))
        t = np.cumsum(rng.integers(1, 5, n)).astype(np.int64) * 1000
        v = rng.choice([np.nan, -np.inf, np.inf, 0.0, 1.0, 2.0, 3.5], n) if rng.random() < 0.5 else rng.standard_normal(n)
        S = int(rng.integers(1, 30))
        lo = np.sort(rng.integers(0, n, S))
        cnt = np.minimum(rng.integers(0, 15, S), n - lo)
        for is_max in (True, False):
            got = fn._ts_of_extreme(is_max, t, v, lo, cnt)
            for c in range(S):
                if cnt[c]:
                    exp = _ts_of_extreme_model(is_max, t[lo[c]:lo[c] + cnt[c]], v[lo[c]:lo[c] + cnt[c]].tolist())
                    assert got[c] == exp
        sf, tf = rng.uniform(0.05, 0.95, S), rng.uniform(0.05, 0.95, S)
        ok = cnt >= 2
        with np.errstate(all="ignore"):
            got = fn._double_exponential_smoothing(v, lo, cnt, ok, sf, tf)
            for c in range(S):
                if ok[c]:
                    exp = _des_model(v[lo[c]:lo[c] + cnt[c]].tolist(), float(sf[c]), float(tf[c]))
                    assert _same(got[c], exp)
    with pytest.raises(Exception, match=r"invalid trend factor. Expected: 0 < tf < 1, got: 1.500000"):
        fn._double_exponential_smoothing(np.ones(4), np.array([0]), np.array([1]), np.array([False]),
                                         np.array([0.5]), np.array([1.5]))


def test_count_values_vectorised_equals_per_sample_model():
    """Values as their text (NaN payloads one "NaN", 0 and -0 apart), a label that overrides a
    grouping label merges groups, series in order of first appearance."""
    from pythanos.promql import functions as fn
    from pythanos.promql.engine import VS
    from pythanos.promql.format import format_scalar_float
    rng = np.random.default_rng(12)
    nan2 = np.array([0x7FF8000000000123], np.uint64).view(np.float64)[0]
    for _ in range(200):
        N, S = int(rng.integers(1, 10)), int(rng.integers(1, 8))
        V = rng.choice([0.0, -0.0, 1.0, 2.5, np.nan, nan2, np.inf, 1e21], (N, S))
        P = rng.random((N, S)) < 0.7
        label = str(rng.choice(["value", "g"]))
        keys = [(("g", str(int(rng.integers(0, 3)))),) for _ in range(N)]
        got = fn._count_values(VS([k for k in keys], V, P), keys, label, S)
        counts: dict = {}
        for r, c in zip(*np.nonzero(P)):
            d = dict(keys[r])
            d[label] = format_scalar_float(float(V[r, c]))
            counts.setdefault(tuple(sorted(d.items())), np.zeros(S))[c] += 1
        assert got.labels == list(counts)
        assert np.array_equal(got.V, np.array([counts[k] for k in counts]).reshape(len(counts), S))


@pytest.mark.parametrize("query", ["deriv(g[10m])", "predict_linear(g[10m], 600)", "predict_linear(g[5m], -30)",
                                   "deriv(c[3m])", "predict_linear(g[10m] @ 1700003000, 600)"])
def test_linear_regression_from_prefix_sums_equals_per_window_sums(monkeypatch, query):
    """deriv/predict_linear over finite values come from compensated prefix sums; they equal the
    per-window least squares (the path taken for non-finite values) to 1e-9 relative, including
    windows of constant values (slope 0) and single-sample windows (no result)."""
    from pythanos.promql import functions as fn
    rng = np.random.default_rng(21)
    series = []
    for i in range(40):
        n = int(rng.integers(1, 300))
        t = 1_700_000_000_000 + np.cumsum(rng.integers(1, 40, n)).astype(np.int64) * 1000
        if i % 3 == 0:
            v = np.repeat(rng.standard_normal(n // 10 + 1) * 1e3, 10)[:n]  # constant stretches
        elif i % 3 == 1:
            v = np.cumsum(rng.random(n)) * 1e6  # a big counter
        else:
            v = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4)
        series.append(({"__name__": "g" if i % 4 else "c", "i": str(i)}, t, v))
    t = 1_700_000_000_000 + np.arange(400, dtype=np.int64) * 15_000
    series.append(({"__name__": "g", "i": "const"}, t, np.full(400, 42.5)))
    series.append(({"__name__": "c", "i": "const"}, t, np.full(400, 7.0)))
    q = _q(series)
    e = Engine(max_samples=10**9)
    start, end = 1_700_000_000_000, 1_700_000_000_000 + 6_000_000
    fast = e.range(query, start, end, 37_000, q)
    monkeypatch.setattr(fn, "_prefix_safe", lambda ra, scale=1.0: False)
    slow = e.range(query, start, end, 37_000, q)
    assert [s.labels for s in fast.value] == [s.labels for s in slow.value] and fast.value
    for a, b in zip(fast.value, slow.value):
        assert np.array_equal(a.t, b.t)
        np.testing.assert_allclose(a.v, b.v, rtol=1e-9, atol=1e-9 * np.abs(b.v).max())


def test_pathological_regexes_run_in_linear_time():
    """Selectors and label_replace with patterns that make a backtracking engine take 2^48 steps
    (holding the GIL) finish at once on RE2, with the right answer. Run in a fresh interpreter
    whose timeout only keeps a regression from hanging the suite; nothing is timed."""
    import subprocess
    import sys

    code = r'''
import numpy as np
from pythanos.promql import Engine, MemoryQueryable

q = MemoryQueryable()
for i, v in enumerate(("x" * 48, "a" * 48 + "!", "xy")):
    q.add({"__name__": "m", "l": v, "i": str(i)}, np.array([0], dtype=np.int64), np.array([1.0]))
e = Engine()
def names(query):
    return sorted(dict(s.labels).get("i", "") + "=" + dict(s.labels).get("o", "-") for s in e.instant(query, 0, q).value)
print(names('m{l=~"(x|x)*y"}'), names('m{l!~"(x|x)*y|(a+)+"}'))
print(names('label_replace(m, "o", "<$1>", "l", "(x|x)*(y)")'))
print(names('label_replace(m, "o", "$1", "l", "(a|aa)*(!)")'))
'''
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "['2=-'] ['0=-', '1=-']",
        "['0=-', '1=-', '2=<x>']",
        "['0=-', '1=a', '2=-']",
    ]


def test_go_regex_syntax_that_promql_parser_rejects():
    """promql-parser checks matcher regexes with Rust's regex crate; Go's syntax it lacks
    (``\\Q...\\E``, ``(?)``, octal escapes) is still accepted, as by Prometheus, and Go-invalid
    regexes the crate accepts (``a**``) are still rejected, in Go's words and at Prometheus' place."""
    from pythanos.query.params import ApiError, parse_selector

    q = _q([({"__name__": "m", "v": v}, [0], [1.0]) for v in ("a*b", "x", "a")])
    e = Engine()
    got = lambda query: sorted(dict(s.labels)["v"] for s in e.instant(query, 0, q).value)  # noqa: E731
    assert got(r'm{v=~"\\Qa*\\E.*"}') == ["a*b"]
    assert got(r'm{v!~"\\Qa*\\E.*"}') == ["a", "x"]
    assert got(r'm{v=~"(?)x|\\141"}') == ["a", "x"]
    assert got(r'count by (v) (count_over_time(m{v=~"\\Qa*\\Eb"}[5m]))') == ["a*b"]
    assert [(m.type, m.value) for m in parse_selector(r'{v=~"\\Qa*\\E", __name__="m"}')] == \
        [("=~", r"\Qa*\E"), ("=", "m")]
    for query, msg in [(r'{v=~"\\Q\\E"}', "1:1: parse error: vector selector must contain at least one non-empty matcher"),
                       (r'm{v=~"\\C"}', r"1:3: parse error: error parsing regexp: invalid escape sequence: `\C`"),
                       ('m{x="1", v=~"a**"}', "1:10: parse error: error parsing regexp: invalid nested repetition "
                                             "operator: `**`")]:
        with pytest.raises(ParseError) as ei:
            e.instant(query, 0, q)
        assert str(ei.value) == msg
    with pytest.raises(ApiError):
        parse_selector(r'{v=~"\\Q\\E"}')
