"""Test-data helpers for the block tests: random series, OpenMetrics text for
``promtool tsdb create-blocks-from openmetrics``, and a parser for ``promtool tsdb dump`` output.

* ``random_series(rng, ...)`` -> ``{labels_tuple: (t int64[], v float64[])}`` with NaN, +-Inf,
  -0, stale markers (optional), UTF-8 / quote / backslash / newline label values, jittered
  and huge timestamp gaps.
* ``to_openmetrics(series)`` -> text ending with ``# EOF``; timestamps in seconds with ms
  precision. OpenMetrics text cannot carry NaN payloads: every NaN is written as ``NaN`` and
  promtool stores Go's ``math.NaN()`` (``0x7ff8000000000001``), so stale markers cannot be
  backfilled through promtool (they come back as an ordinary NaN).
* ``parse_dump(text)`` parses 2.42's ``promtool tsdb dump`` lines ``{l="v", ...} value ts``
  (Go ``labels.String()`` quoting, Go ``%g`` values) into the same dict shape.
* ``same_samples(a, b, nan_exact=True)`` compares two such dicts (bit patterns, so -0 != 0).
"""
from __future__ import annotations

import math
import re
import struct

import numpy as np

STALE_NAN_BITS = 0x7FF0000000000002
GO_NAN_BITS = 0x7FF8000000000001
STALE_NAN = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]


def f64_bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


LABEL_VALUES = ["plain", "é✓ünïcödé", "日本語", 'quo"te', "back\\slash", "new\nline", "a b,c=d", "<&>"]


def random_series(rng: np.random.Generator, *, n_series: int = 20, start: int = 1_700_000_000_000,
                  max_samples: int = 400, interval: int = 15_000, with_stale: bool = False,
                  huge_gap: int = 30 * 86400_000, metric_names=("om_gauge", "om_other", "om_total")) -> dict:
    out: dict = {}
    for i in range(n_series):
        name = metric_names[i % len(metric_names)]
        labels = {"__name__": name, "idx": str(i), "uv": LABEL_VALUES[i % len(LABEL_VALUES)]}
        if i % 3 == 0:
            labels["extra"] = f"x{i % 5}"
        n = int(rng.integers(1, max_samples + 1))
        step = rng.integers(interval // 2, interval * 2, size=n).astype(np.int64)
        if i % 4 == 1:  # ms jitter and occasional big gaps
            step += rng.integers(0, 999, size=n)
            step[rng.random(n) < 0.02] += 3_600_000
        t = start + int(rng.integers(0, 3_600_000)) + np.cumsum(step) - step[0]
        if i % 5 == 2 and n > 3:
            t[-1] += huge_gap
        kind = i % 4
        if kind == 0:
            v = rng.normal(0, 1e6, n)
        elif kind == 1:
            v = np.cumsum(rng.integers(0, 10, n)).astype(np.float64)
        elif kind == 2:
            v = np.round(rng.random(n) * 100, 3)
        else:
            v = np.full(n, 42.0)
        special = rng.random(n)
        v[special < 0.03] = np.nan
        v[(special >= 0.03) & (special < 0.05)] = np.inf
        v[(special >= 0.05) & (special < 0.07)] = -np.inf
        v[(special >= 0.07) & (special < 0.08)] = -0.0
        if with_stale:
            v[(special >= 0.08) & (special < 0.10)] = STALE_NAN
        out[tuple(sorted(labels.items()))] = (t.astype(np.int64), v.astype(np.float64))
    return out


def _om_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _om_value(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x))


def to_openmetrics(series: dict) -> str:
    """OpenMetrics text; families grouped by metric name, each series in time order."""
    by_name: dict[str, list] = {}
    for lbls, tv in sorted(series.items()):
        by_name.setdefault(dict(lbls)["__name__"], []).append((lbls, tv))
    lines = []
    for name, items in by_name.items():
        fam = name[:-6] if name.endswith("_total") else name
        lines.append(f"# TYPE {fam} {'counter' if name.endswith('_total') else 'gauge'}")
        for lbls, (t, v) in items:
            ls = ",".join(f'{k}="{_om_escape(val)}"' for k, val in lbls if k != "__name__")
            head = f"{name}{{{ls}}}" if ls else name
            for ti, vi in zip(t.tolist(), v.tolist()):
                lines.append(f"{head} {_om_value(vi)} {ti // 1000}.{ti % 1000:03d}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}


def _go_unquote(s: str, i: int) -> tuple[str, int]:
    """Parse a Go-quoted string starting at s[i] == '"'; returns (value, index after)."""
    assert s[i] == '"', (s, i)
    i += 1
    out = []
    while s[i] != '"':
        c = s[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = s[i + 1]
        if e in _ESC:
            out.append(_ESC[e])
            i += 2
        elif e == "x":
            out.append(chr(int(s[i + 2:i + 4], 16)))
            i += 4
        elif e == "u":
            out.append(chr(int(s[i + 2:i + 6], 16)))
            i += 6
        elif e == "U":
            out.append(chr(int(s[i + 2:i + 10], 16)))
            i += 10
        else:
            raise ValueError(f"bad escape in {s!r} at {i}")
    return "".join(out), i + 1


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_labels(s: str) -> tuple[tuple, int]:
    assert s[0] == "{", s
    i = 1
    out = []
    while s[i] != "}":
        m = _NAME.match(s, i)
        name = m.group(0)
        i = m.end()
        assert s[i] == "=", (s, i)
        val, i = _go_unquote(s, i + 1)
        out.append((name, val))
        if s.startswith(", ", i):
            i += 2
    return tuple(sorted(out)), i + 1


def parse_dump(text: str) -> dict:
    acc: dict = {}
    # Label values may contain newlines (escaped by Go's quoting, so lines are safe to split).
    for line in text.splitlines():
        if not line:
            continue
        lbls, j = parse_labels(line)
        val, ts = line[j:].split()
        acc.setdefault(lbls, ([], []))
        acc[lbls][0].append(int(ts))
        acc[lbls][1].append(float(val))
    return {k: (np.array(t, dtype=np.int64), np.array(v, dtype=np.float64)) for k, (t, v) in acc.items()}


def _norm(v: np.ndarray, nan_exact: bool) -> np.ndarray:
    bits = np.asarray(v, dtype=np.float64).view(np.uint64).copy()
    if not nan_exact:
        bits[np.isnan(v)] = GO_NAN_BITS
    return bits


def same_samples(a: dict, b: dict, *, nan_exact: bool = True) -> list[str]:
    """Differences between two ``{labels: (t, v)}`` dicts (empty list: identical)."""
    diffs = []
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            diffs.append(f"{k}: only in {'first' if k in a else 'second'}")
            continue
        (ta, va), (tb, vb) = a[k], b[k]
        if len(ta) != len(tb) or not np.array_equal(ta, tb):
            diffs.append(f"{k}: timestamps differ ({len(ta)} vs {len(tb)} samples)")
            continue
        ba, bb = _norm(va, nan_exact), _norm(vb, nan_exact)
        if not np.array_equal(ba, bb):
            i = int(np.flatnonzero(ba != bb)[0])
            diffs.append(f"{k}: value {i} at t={ta[i]}: {ba[i]:#018x} vs {bb[i]:#018x}")
    return diffs
