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

__all__ = ["ENCODING_HISTOGRAM", "ENCODING_FLOAT_HISTOGRAM", "HistogramColumns", "histogram_columns",
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


def _u64_of(vals, is_float: bool) -> list[int]:
    if is_float:
        return np.asarray(vals, dtype=np.float64).view(np.uint64).tolist()
    return [int(v) & 0xFFFFFFFFFFFFFFFF for v in vals]


def histogram_columns(samples: Sequence[Any], is_float: bool | None = None) -> HistogramColumns:
    """Columns from ``pythanos.remote.write.HistogramSample``-like objects (``timestamp``,
    ``is_float``, ``count``, ``sum``, ``schema``, ``zero_threshold``, ``zero_count``,
    ``positive_spans``/``negative_spans`` as (offset, length), ``positive_buckets``/
    ``negative_buckets``, ``reset_hint``, ``custom_values``). Histograms are rare next to floats,
    so this gathers in Python; the append itself is one C call. WAL records
    (``pythanos.tsdb.walrecords.Histogram``: ``t``, ``counter_reset_hint``, no ``is_float``)
    work too, with ``is_float`` given for the whole record."""
    n = len(samples)
    ts = np.empty(n, dtype=np.int64)
    isf = np.empty(n, dtype=np.uint8)
    cnt = np.empty(n, dtype=np.uint64)
    zc = np.empty(n, dtype=np.uint64)
    sm = np.empty(n, dtype=np.float64)
    sch = np.empty(n, dtype=np.int64)
    zt = np.empty(n, dtype=np.float64)
    hint = np.empty(n, dtype=np.uint8)
    pso, nso, pbo, nbo, cvo = (np.zeros(n + 1, dtype=np.int64) for _ in range(5))
    psp: list[int] = []
    nsp: list[int] = []
    pbk: list[int] = []
    nbk: list[int] = []
    cvs: list[float] = []
    for i, h in enumerate(samples):
        f = bool(h.is_float) if is_float is None else is_float
        ts[i] = int(h.timestamp) if hasattr(h, "timestamp") else int(h.t)
        isf[i] = f
        if f:
            cnt[i] = np.float64(h.count).view(np.uint64)
            zc[i] = np.float64(h.zero_count).view(np.uint64)
        else:
            cnt[i] = int(h.count)
            zc[i] = int(h.zero_count)
        sm[i] = float(h.sum)
        sch[i] = int(h.schema)
        zt[i] = float(h.zero_threshold)
        hint[i] = int(h.reset_hint) if hasattr(h, "reset_hint") else int(h.counter_reset_hint)
        for o, ln in h.positive_spans:
            psp += (int(o), int(ln))
        for o, ln in h.negative_spans:
            nsp += (int(o), int(ln))
        pso[i + 1], nso[i + 1] = len(psp) // 2, len(nsp) // 2
        pbk += _u64_of(h.positive_buckets, f)
        nbk += _u64_of(h.negative_buckets, f)
        pbo[i + 1], nbo[i + 1] = len(pbk), len(nbk)
        cvs += [float(x) for x in (h.custom_values or ())]
        cvo[i + 1] = len(cvs)
    # positive spans (buckets) of all samples first, then the negative ones
    return HistogramColumns(ts, isf, cnt, zc, sm, sch, zt, hint, pso, nso + len(psp) // 2,
                            np.asarray(psp + nsp, dtype=np.int64).reshape(-1, 2), pbo, nbo + len(pbk),
                            np.asarray(pbk + nbk, dtype=np.uint64), cvo, np.asarray(cvs, dtype=np.float64))


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
