"""The C writers (``pythanos.promql._jsonfmt``: matrix points, and whole vector/matrix results
written by one or two threads) equal the Python formatter, which follows Go's ``strconv`` rules
and jsoniter's escaping (checked against real Prometheus and Thanos elsewhere), byte for byte."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pythanos.promql import format as fmt
from pythanos.promql._jsonfmt import points


def python_points(t, v) -> str:
    return fmt._points(list(map(int, t)), list(map(float, v)), {})


EDGE = [0.0, -0.0, math.nan, math.inf, -math.inf, 1.0, -1.0, 0.1, 1e-6, -1e-6, 1e-4, 1e-5, 1e16, 1e15, 1e21, 1e20,
        9.999999999999999e20, 123456789012345680.0, 1.5e17, 2.5e-5, 5e-324, -5e-324, 2.2250738585072014e-308,
        1.7976931348623157e308, 0.30000000000000004, 100.0, 1234.5, 3.0e-7, 12345678901234567890.0,
        np.array([0x7FF0000000000002], np.uint64).view(np.float64)[0]]


def test_edges_and_neighbours():
    vals = []
    with np.errstate(over="ignore", invalid="ignore"):
        for x in EDGE:
            vals += [x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)]
    v = np.array(vals, np.float64)
    for t0 in (0, 1, 5, 50, 500, 999, 1000, -1, -5, -1500, 1_700_000_000_050, -(2**62)):
        t = t0 + np.arange(len(v), dtype=np.int64) * 7
        assert points(t, v) == python_points(t, v)
    assert points(np.array([-(2**63)], np.int64), np.array([1.0])) == python_points([-(2**63)], [1.0])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**62), 2**62), st.floats(allow_nan=True, allow_infinity=True)),
                max_size=50))
def test_random(pairs):
    t = np.array([p[0] for p in pairs], np.int64)
    v = np.array([p[1] for p in pairs], np.float64)
    assert points(t, v) == python_points(t, v)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=40))
def test_random_bit_patterns_and_repeats(bits):
    v = np.array(bits + bits[:5] * 3, np.uint64).view(np.float64)
    t = np.arange(len(v), dtype=np.int64) * 15_000 + 1_700_000_000_123
    assert points(t, v) == python_points(t, v)


def _one(t, v) -> str:
    return f'[{fmt.format_timestamp(t)},"{fmt.format_float(v)}"]'


RANGES = [(1e-7, 1e-6), (1e-6, 1e-4), (1e-4, 1.0), (1.0, 1e6), (1e15, 1e16), (1e16, 1e21), (1e21, 1e25),
          (1e-300, 1e-200), (1e200, 1e308)]


def test_every_value_and_vector_point_against_format_float():
    from pythanos.promql._jsonfmt import point
    rng = np.random.default_rng(7)
    vals = []
    for lo, hi in RANGES:  # log-uniform values in and around both switch points
        vals += list(np.exp(rng.uniform(math.log(lo), math.log(hi), 3000)))
    vals += list(np.round(rng.random(3000) * 1000, int(rng.integers(0, 6))))  # few decimals
    vals += list(rng.integers(-2**53, 2**53, 1000).astype(np.float64))
    vals += list(rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64).view(np.float64))  # any bit pattern
    vals += [float(np.uint64(0x7FF0000000000002).view(np.float64)), 0.0, -0.0, math.inf, -math.inf]
    with np.errstate(over="ignore", invalid="ignore"):
        for x in (1e-6, 1e21, 1e16, 1e-4, 2.0 ** 50, 2.0 ** 53, 5e-324, 1.7976931348623157e308):
            y = x
            for _ in range(5):
                vals.append(y)
                y = float(np.nextafter(y, np.inf))
            y = x
            for _ in range(5):
                y = float(np.nextafter(y, -np.inf))
                vals.append(y)
    vals += [-x for x in vals]
    v = np.array(vals, np.float64)
    t = rng.integers(-(2**50), 2**50, len(v)).astype(np.int64)
    t[: len(t) // 4] = (t[: len(t) // 4] // 1000) * 1000 + rng.choice([0, 5, 50, 500], len(t) // 4)
    assert points(t, v) == ",".join(_one(int(a), float(b)) for a, b in zip(t, v))
    for a, b in zip(t[:3000], v[:3000]):
        assert point(int(a), float(b)) == _one(int(a), float(b))
    for a in (0, 5, 50, 500, -5, -50, -500, -1000, 1000, 2**63 - 1, -(2**63)):
        assert point(a, 1.5) == _one(a, 1.5)


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=1e-6, max_value=2.0 ** 53), st.integers(0, 17))
def test_rounded_decimals(x, d):
    v = np.array([round(x, d), -round(x, d), x], np.float64)
    t = np.zeros(3, np.int64)
    assert points(t, v) == ",".join(_one(0, float(b)) for b in v)


def test_result_json_fallback_identical():
    import types
    rng = np.random.default_rng(3)
    series = [types.SimpleNamespace(labels=(("a", f"<{i}>"), ("b", 'x\\"y')),
                                    t=np.arange(20, dtype=np.int64) * 15_005 - 100,
                                    v=rng.standard_normal(20) * 10.0 ** rng.integers(-9, 23)) for i in range(50)]
    vec = [types.SimpleNamespace(labels=s.labels, t=int(s.t[3]), v=float(s.v[3])) for s in series]
    for res in (types.SimpleNamespace(type="matrix", value=series), types.SimpleNamespace(type="vector", value=vec)):
        assert fmt.result_json(res) == _python_result(res)


def _python_result(res) -> str:
    """The pure-Python writer: no C kernel at all."""
    saved = fmt._c_point, fmt._c_points, fmt._c_series
    fmt._c_point = fmt._c_points = fmt._c_series = None
    try:
        return fmt.result_json(res)
    finally:
        fmt._c_point, fmt._c_points, fmt._c_series = saved


LABEL_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "<>&", '"\\', "\x00\x01\x1f\x7f", "\b\f\n\r\t", "\u2028\u2029", "é€😀", "a b"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(st.tuples(LABEL_TEXT, LABEL_TEXT), max_size=4),
                          st.lists(st.tuples(st.integers(-(2**62), 2**62),
                                             st.floats(allow_nan=True, allow_infinity=True)), max_size=6)),
                max_size=6))
def test_whole_results_random_labels_and_values(raw):
    import types
    series, vec = [], []
    for labels, pts in raw:
        t = np.array([p[0] for p in pts], np.int64)
        v = np.array([p[1] for p in pts], np.float64)
        series.append(types.SimpleNamespace(labels=tuple(labels), t=t, v=v))
        if pts:
            vec.append(types.SimpleNamespace(labels=tuple(labels), t=int(t[0]), v=float(v[0])))
    for res in (types.SimpleNamespace(type="matrix", value=series), types.SimpleNamespace(type="vector", value=vec)):
        assert fmt.result_json(res) == _python_result(res)


def test_big_result_written_by_two_threads_identical(monkeypatch):
    """Above the split size the second half comes from the other thread; the text is the same,
    including where values need dtoa (which takes the GIL back inside the C writer)."""
    import types
    rng = np.random.default_rng(11)
    series = []
    for i in range(300):
        n = int(rng.integers(0, 400))
        v = np.round(rng.random(n) * 100, int(rng.integers(0, 4)))
        v[rng.random(n) < 0.1] = rng.standard_normal(int((rng.random(n) < 0.1).sum()) or 1)[:1]  # dtoa cases
        series.append(types.SimpleNamespace(labels=(("__name__", "m"), ("i", str(i))),
                                            t=np.sort(rng.integers(0, 10**12, n)).astype(np.int64), v=v))
    res = types.SimpleNamespace(type="matrix", value=series)
    monkeypatch.setattr(fmt, "_HALF_POINTS", 1000)
    pieces = fmt.result_pieces(res)
    assert len(pieces) == 5  # header, first half, comma, second half, trailer
    assert b"".join(pieces).decode() == _python_result(res)
    vec = [types.SimpleNamespace(labels=s.labels, t=i * 1001, v=float(i) / 7) for i, s in enumerate(series)]
    vres = types.SimpleNamespace(type="vector", value=vec)
    monkeypatch.setattr(fmt, "_HALF_POINTS", 10)
    assert len(fmt.result_pieces(vres)) == 5
    assert fmt.result_json(vres) == _python_result(vres)


def test_whole_result_falls_back_on_other_arrays():
    """Non-contiguous or non-int64/float64 arrays go to the Python writer, same text."""
    import types
    t = np.arange(0, 40, dtype=np.int64)[::2] * 1000
    v = np.arange(20, dtype=np.float32)
    res = types.SimpleNamespace(type="matrix", value=[types.SimpleNamespace(labels=(("a", "b"),), t=t, v=v)])
    assert fmt.result_json(res) == _python_result(res)
