"""Native histogram chunks (encodings 2 and 3) and the columns the head appends them from.

The encoder lives in the head's kernel (:mod:`pythanos.tsdb._histchunk`, Prometheus 3.9.1's
appender rules: new chunk on schema / zero threshold / custom bounds change and counter reset,
re-coding when buckets appear); this module gives the batch layout (:class:`HistogramColumns`,
built from remote-write ``HistogramSample``-like objects by :func:`histogram_columns`) and the
decoder (:func:`decode_histogram_chunk`, bounds-checked in C).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import _histchunk

__all__ = ["ENCODING_HISTOGRAM", "ENCODING_FLOAT_HISTOGRAM", "HistogramColumns", "histogram_columns", "reduce_resolution",
           "DecodedHistograms", "decode_histogram_chunk", "STALE_NAN_BITS"]

ENCODING_HISTOGRAM = 2
ENCODING_FLOAT_HISTOGRAM = 3
STALE_NAN_BITS = 0x7FF0000000000002
HEADER_NAMES = {0x00: "unknown", 0x40: "not_reset", 0x80: "reset", 0xC0: "gauge"}


@dataclass
class HistogramColumns:
    """A batch of histogram samples as flat columns (one kernel call appends them all).

    Per sample ``i``: ``ts``, ``is_float``, ``count``/``zero_count`` (uint64 counts for integer
    histograms, float64 bits for float ones, in one uint64 column), ``sum``, ``schema``,
    ``zero_threshold``, ``reset_hint`` (0 unknown, 1 reset, 2 no reset, 3 gauge); positive spans
    ``spans[pspan_off[i]:pspan_off[i+1]]`` and negative ``spans[nspan_off[i]:nspan_off[i+1]]``
    (rows ``(offset, length)``); buckets likewise in ``buckets`` (int64 deltas for integer
    histograms, float64 bits for float ones); custom bounds ``custom_values[cv_off[i]:cv_off[i+1]]``."""

    ts: np.ndarray
    is_float: np.ndarray
    count: np.ndarray
    zero_count: np.ndarray
    sum: np.ndarray
    schema: np.ndarray
    zero_threshold: np.ndarray
    reset_hint: np.ndarray
    pspan_off: np.ndarray
    nspan_off: np.ndarray
    spans: np.ndarray
    pbucket_off: np.ndarray
    nbucket_off: np.ndarray
    buckets: np.ndarray
    cv_off: np.ndarray
    custom_values: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)


def histogram_columns(samples: Sequence[Any], is_float: bool | None = None) -> HistogramColumns:
    """Columns from ``pythanos.remote.write.HistogramSample``-like objects (``timestamp``,
    ``is_float``, ``count``, ``sum``, ``schema``, ``zero_threshold``, ``zero_count``,
    ``positive_spans``/``negative_spans`` as (offset, length), ``positive_buckets``/
    ``negative_buckets``, ``reset_hint``, ``custom_values``). Histograms are rare next to floats,
    so this gathers in Python; the append itself is one C call. WAL records
    (``pythanos.tsdb.walrecords.Histogram``: ``t``, ``counter_reset_hint``, no ``is_float``)
    work too, with ``is_float`` given for the whole record."""
    n = len(samples)
    ts, isf, cnt, zc, sm, sch, zt, hint = [], [], [], [], [], [], [], []
    pso, nso, pbo, nbo, cvo = [0], [0], [0], [0], [0]
    psp: list[int] = []
    nsp: list[int] = []
    pbk: list = []
    nbk: list = []
    cvs: list[float] = []
    for h in samples:
        f = bool(h.is_float) if is_float is None else is_float
        if 8 < h.schema <= 52:  # Prometheus' receiver reduces schemas 9..52 to 8 before appending
            h = _reduced(h, not f)
        ts.append(h.timestamp if hasattr(h, "timestamp") else h.t)
        isf.append(f)
        cnt.append(h.count)
        zc.append(h.zero_count)
        sm.append(h.sum)
        sch.append(h.schema)
        zt.append(h.zero_threshold)
        hint.append(h.reset_hint if hasattr(h, "reset_hint") else h.counter_reset_hint)
        for o, ln in h.positive_spans:
            psp += (o, ln)
        for o, ln in h.negative_spans:
            nsp += (o, ln)
        pso.append(len(psp) >> 1)
        nso.append(len(nsp) >> 1)
        pbk += h.positive_buckets
        nbk += h.negative_buckets
        pbo.append(len(pbk))
        nbo.append(len(nbk))
        if h.custom_values:
            cvs += h.custom_values
        cvo.append(len(cvs))
    isf_a = np.array(isf, dtype=bool).reshape(n)
    cnt_a = _u64_column(cnt, isf_a)
    zc_a = _u64_column(zc, isf_a)
    pbo_a, nbo_a = np.array(pbo, dtype=np.int64), np.array(nbo, dtype=np.int64)
    # bucket words: int64 deltas, or float64 bits for the float histograms' runs
    buckets = _u64_column(pbk + nbk, np.concatenate((np.repeat(isf_a, np.diff(pbo_a)), np.repeat(isf_a, np.diff(nbo_a)))))
    # positive spans (buckets) of all samples first, then the negative ones
    return HistogramColumns(np.array(ts, dtype=np.int64).reshape(n), isf_a.astype(np.uint8), cnt_a, zc_a,
                            np.array(sm, dtype=np.float64).reshape(n), np.array(sch, dtype=np.int64).reshape(n),
                            np.array(zt, dtype=np.float64).reshape(n), np.array(hint, dtype=np.uint8).reshape(n),
                            np.array(pso, dtype=np.int64), np.array(nso, dtype=np.int64) + len(psp) // 2,
                            np.array(psp + nsp, dtype=np.int64).reshape(-1, 2), pbo_a, nbo_a + len(pbk),
                            buckets, np.array(cvo, dtype=np.int64), np.array(cvs, dtype=np.float64))


def reduce_resolution(spans: Sequence[tuple[int, int]], buckets: Sequence, origin: int, target: int,
                      deltas: bool) -> tuple[list[tuple[int, int]], list] | None:
    """Spans and buckets at a lower schema (``reduceResolution`` of Prometheus' model/histogram):
    bucket ``i`` goes to ``((i - 1) >> (origin - target)) + 1``; ``deltas``: integer buckets as
    deltas. None when the spans and buckets disagree (Validate then refuses the histogram)."""
    out_s: list[list[int]] = []
    out_b: list = []
    idx = pos = 0
    last_idx = 0
    last_count = last_target = 0
    for n, (off, length) in enumerate(spans):
        if n > 0 and off < 0:
            return None
        idx += off
        for _ in range(length):
            if pos >= len(buckets):
                return None
            b = buckets[pos]
            ti = ((idx - 1) >> (origin - target)) + 1
            if not out_s:
                out_s.append([ti, 1])
                out_b.append(b)
                last_idx = ti
                last_count = last_target = b
            elif ti == last_idx:
                if deltas:
                    last_count += b
                    out_b[-1] += last_count
                    last_target += last_count
                else:
                    out_b[-1] += b
            else:
                if ti == last_idx + 1:
                    out_s[-1][1] += 1
                else:
                    out_s.append([ti - last_idx - 1, 1])
                last_idx = ti
                if deltas:
                    last_count += b
                    out_b.append(last_count - last_target)
                    last_target = last_count
                else:
                    out_b.append(b)
            idx += 1
            pos += 1
    if pos != len(buckets):
        return None
    return [(a, ln) for a, ln in out_s], out_b


def _reduced(h: Any, deltas: bool) -> Any:
    from types import SimpleNamespace

    p = reduce_resolution(h.positive_spans, h.positive_buckets, h.schema, 8, deltas)
    n = reduce_resolution(h.negative_spans, h.negative_buckets, h.schema, 8, deltas)
    if p is None or n is None:
        return h
    d = {k: getattr(h, k) for k in ("count", "sum", "zero_threshold", "zero_count", "custom_values", "is_float")
         if hasattr(h, k)}
    d["timestamp"] = h.timestamp if hasattr(h, "timestamp") else h.t
    d["reset_hint"] = h.reset_hint if hasattr(h, "reset_hint") else h.counter_reset_hint
    return SimpleNamespace(schema=8, positive_spans=p[0], positive_buckets=p[1], negative_spans=n[0],
                           negative_buckets=n[1], **d)


def _u64_column(vals: list, is_float: np.ndarray) -> np.ndarray:
    """uint64 words: integers as they are (two's complement for negative deltas), floats as bits."""
    out = np.zeros(len(vals), dtype=np.uint64)
    if not len(vals):
        return out
    if is_float.all():
        return np.array(vals, dtype=np.float64).view(np.uint64)
    if not is_float.any():
        try:
            return np.array(vals, dtype=np.int64).view(np.uint64)
        except OverflowError:  # counts above 2^63
            return np.array([int(v) & 0xFFFFFFFFFFFFFFFF for v in vals], dtype=np.uint64)
    fi = np.flatnonzero(is_float)
    ii = np.flatnonzero(~is_float)
    out[fi] = np.array([vals[i] for i in fi.tolist()], dtype=np.float64).view(np.uint64)
    out[ii] = np.array([int(vals[i]) & 0xFFFFFFFFFFFFFFFF for i in ii.tolist()], dtype=np.uint64)
    return out


@dataclass
class DecodedHistograms:
    """One decoded histogram chunk. Layout (schema, zero threshold, spans, custom bounds) is the
    chunk's; per sample: ``t``, ``count``, ``zero_count`` (uint64 counts or float64, by
    encoding), ``sum``, ``stale`` and ``buckets[i]`` (positive then negative: ``npos`` + ``nneg``
    values; int64 deltas or float64 absolute counts; zeros for stale markers)."""

    encoding: int
    header: str
    schema: int
    zero_threshold: float
    positive_spans: list[tuple[int, int]]
    negative_spans: list[tuple[int, int]]
    custom_values: np.ndarray
    t: np.ndarray
    count: np.ndarray
    zero_count: np.ndarray
    sum: np.ndarray
    stale: np.ndarray
    buckets: np.ndarray
    npos: int
    nneg: int

    def __len__(self) -> int:
        return len(self.t)


def decode_histogram_chunk(data: bytes, encoding: int) -> DecodedHistograms:
    """Decode a histogram (2) or float histogram (3) chunk; ValueError naming the bit on bad input."""
    d = _histchunk.decode(bytes(data), int(encoding))
    fl = encoding == ENCODING_FLOAT_HISTOGRAM
    sp = np.frombuffer(d["spans"], dtype=np.int64).reshape(-1, 2)
    npos_sp = int(d["npos_spans"])
    pairs = [(int(o), int(ln)) for o, ln in sp.tolist()]
    n, nb = int(d["n"]), int(d["npos"]) + int(d["nneg"])
    cdt = np.float64 if fl else np.uint64
    return DecodedHistograms(
        int(encoding), HEADER_NAMES[int(d["header"])], int(d["schema"]), float(d["zero_threshold"]),
        pairs[:npos_sp], pairs[npos_sp:], np.frombuffer(d["custom_values"], dtype=np.float64),
        np.frombuffer(d["t"], dtype=np.int64), np.frombuffer(d["count"], dtype=cdt),
        np.frombuffer(d["zero_count"], dtype=cdt), np.frombuffer(d["sum"], dtype=np.float64),
        np.frombuffer(d["stale"], dtype=bool),
        np.frombuffer(d["buckets"], dtype=np.float64 if fl else np.int64).reshape(n, nb),
        int(d["npos"]), int(d["nneg"]))
