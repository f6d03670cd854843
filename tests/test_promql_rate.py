"""The rate/increase/delta kernel (``promql/_rate.c``) against the numpy path it replaced, which
stays in ``functions._batched_chunk`` as the reference: the same bits for every series and step,
on data with counter resets, NaN, infinities, gaps, single samples and empty windows. Prometheus'
own rate tests (promqltest) and the differential tests against Thanos check the answers."""
from __future__ import annotations

import numpy as np
import pytest

from pythanos.promql import functions as F
from pythanos.promql.engine import RangeArg


def _range_arg(rng: np.random.Generator, n_series: int, steps: int, range_ms: int) -> RangeArg:
    series = []
    for i in range(n_series):
        n = int(rng.integers(0, 40))
        t = np.sort(rng.choice(np.arange(0, 600_000, 1000), size=n, replace=False)).astype(np.int64)
        v = np.cumsum(rng.integers(0, 5, n)).astype(np.float64)
        if n and i % 3 == 0:  # counter resets
            v[rng.integers(0, n, max(1, n // 8))] = rng.integers(0, 3)
        if n and i % 5 == 1:
            v[rng.integers(0, n)] = rng.choice([np.nan, np.inf, -np.inf, -1.0, 0.0, -0.0])
        if i % 7 == 2:
            v = rng.normal(0, 1e6, n)  # gauges for delta, negative values
        series.append(((("i", str(i)),), t, v))
    te = np.sort(rng.integers(0, 700_000, steps)).astype(np.int64)
    bounds = np.concatenate([te - range_ms, te])
    both = np.array([np.searchsorted(t, bounds, "right") for _, t, _ in series], dtype=np.int32).reshape(n_series, 2 * steps)
    return RangeArg(series, both[:, :steps], both[:, steps:], te, range_ms, None)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("name", ["rate", "increase", "delta"])
def test_kernel_equals_numpy_path(monkeypatch, seed, name):
    rng = np.random.default_rng(seed)
    ra = _range_arg(rng, int(rng.integers(1, 30)), int(rng.integers(1, 50)), int(rng.choice([5_000, 60_000, 300_000])))
    kernel = F._range_func_batched(name, ra, ra.te)
    monkeypatch.setattr(F, "_rate_c", None)
    numpy_path = F._range_func_batched(name, ra, ra.te)
    assert kernel.labels == numpy_path.labels
    assert np.array_equal(kernel.P, numpy_path.P)
    got = np.where(kernel.P, kernel.V, 0.0).view(np.uint64)
    want = np.where(numpy_path.P, numpy_path.V, 0.0).view(np.uint64)
    assert np.array_equal(got, want)  # bit for bit, NaN payloads and signed zeros included


def test_kernel_refuses_windows_outside_the_series():
    T = np.arange(4, dtype=np.int64)
    V = np.ones(4)
    out, ok = np.empty((1, 1)), np.empty((1, 1), np.uint8)
    one = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="window"):
        F._rate_c.extrapolated(T, V, one, np.array([4]), np.array([[0]]), np.array([[5]]), np.array([10]), 1000, 0,
                               1.0, out, ok)
    with pytest.raises(ValueError, match="outside the 4 given"):
        F._rate_c.extrapolated(T, V, np.array([2]), np.array([4]), np.array([[0]]), np.array([[1]]), np.array([10]),
                               1000, 0, 1.0, out, ok)
    with pytest.raises(ValueError, match="kind"):
        F._rate_c.extrapolated(T, V, one, np.array([4]), np.array([[0]]), np.array([[1]]), np.array([10]), 1000, 7,
                               1.0, out, ok)


def _random_times(rng, most: int, empty_every: int) -> list:
    """8-59 series' sorted timestamps of up to ``most`` samples, every ``empty_every``-th empty,
    around bases that are zero, negative, far positive or today's."""
    out = []
    for i in range(int(rng.integers(8, 60))):
        n = int(rng.integers(0, most)) if i % empty_every else 0
        base = int(rng.choice([0, -10**12, 10**12, 1_700_000_000_000]))
        out.append(np.sort(rng.choice(np.arange(base, base + 10**7, 997), size=n, replace=False)).astype(np.int64))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_window_bounds_in_one_search_equal_per_series(seed):
    """``engine._bounds_at_once`` (all series' windows in one search) against a search per series:
    empty series, negative and far-apart timestamps, bounds before and after every sample."""
    from pythanos.promql import engine as E

    rng = np.random.default_rng(seed)
    series = [((), t, np.zeros(len(t))) for t in _random_times(rng, 50, 4)]
    te = np.sort(rng.integers(-2 * 10**12, 2 * 10**12, int(rng.integers(1, 30)))).astype(np.int64)
    bounds = np.concatenate([te - 300_000, te])
    want = np.array([np.searchsorted(t, bounds, "right") for _, t, _ in series])
    got = np.empty_like(want)
    assert E._bounds_at_once(series, bounds, got)
    assert np.array_equal(got, want)
    # bands that would overflow int64: refused, nothing written, the caller searches per series
    far = series + [((), np.array([-(1 << 62), 1 << 62], np.int64), np.zeros(2))]
    assert not E._bounds_at_once(far, bounds, np.empty((len(far), len(bounds)), np.int64))


@pytest.mark.parametrize("seed", range(20))
def test_instant_selection_in_one_search_equals_prometheus_lookback(seed):
    """``engine._latest_at_once`` (an instant selector over many small series in one search)
    against each step's latest sample per series as Prometheus picks it: at or before the step,
    newer than the lookback, not a staleness marker (a plain NaN is a value). Empty series,
    series that start after some steps, negative and far-apart timestamps."""
    from pythanos.promql import engine as E
    from pythanos.tsdb.chunkenc import STALE_NAN_BITS

    stale = np.array([STALE_NAN_BITS], np.uint64).view(np.float64)[0]
    rng = np.random.default_rng(seed)
    series = []
    for i, t in enumerate(_random_times(rng, 40, 5)):
        n = len(t)
        v = rng.normal(size=n)
        v[rng.random(n) < 0.15] = stale
        v[rng.random(n) < 0.05] = np.nan
        series.append(((("i", str(i)),), t, v))
    te = np.sort(np.concatenate([rng.integers(-2 * 10**12, 2 * 10**12, 5),
                                 rng.integers(1_700_000_000_000, 1_700_000_000_000 + 10**7, 20)])).astype(np.int64)
    lb = int(rng.choice([300_000, 5_000, 10**7]))
    cut = te - lb
    S, N = len(te), len(series)
    V, P, T = np.full((N + 2, S), -1.0), np.zeros((N + 2, S), bool), np.zeros((N + 2, S), np.int64)
    assert E._latest_at_once(series, te, cut, V, P, T, 1)
    for k, (_, t, v) in enumerate(series):
        for j, step in enumerate(te):
            i = int(np.searchsorted(t, step, "right")) - 1
            want = i >= 0 and t[i] > step - lb and v[i].view(np.uint64) != STALE_NAN_BITS
            assert P[k + 1, j] == want, (k, j)
            if want:
                assert T[k + 1, j] == t[i]
                assert V[k + 1, j] == v[i] or (np.isnan(V[k + 1, j]) and np.isnan(v[i]))
    assert not P[0].any() and not P[N + 1].any()  # rows outside the batch untouched
    assert (V[0] == -1).all() and (V[N + 1] == -1).all()
    # bands that would overflow int64: refused, the caller goes series by series
    far = series + [((), np.array([-(1 << 62), 1 << 62], np.int64), np.zeros(2))]
    assert not E._latest_at_once(far, te, cut, np.empty((N + 1, S)), np.empty((N + 1, S), bool), None, 0)
