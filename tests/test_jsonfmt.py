"""The C matrix-point writer (``pythanos.promql._jsonfmt``) equals the Python formatter, which
follows Go's ``strconv`` rules (checked against real Prometheus and Thanos elsewhere), byte for byte."""
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
