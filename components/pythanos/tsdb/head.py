"""The in-memory TSDB head: series and their XOR chunks, appended to in whole batches.

What a receiver (and later the ruler) writes into before blocks exist. Pure in-memory state:
the WAL is written and replayed by its caller. The hot state lives in the C kernel
:mod:`pythanos.tsdb._head` (one call per batch, GIL released); this module keeps what queries
need (a postings index label name -> value -> refs, built when series are created) and the
head-wide times as Prometheus keeps them (``tsdb/head.go``, ``head_append.go``, v3.9.1).

Series are keyed by their canonical label blob (labels sorted by name; uvarint count, then
uvarint-length-prefixed name and value bytes: the body of a WAL Series record after the ref).
Refs are dense from 1 and never reused; a series removed by :meth:`Head.truncate` that comes
back gets a new ref.

Appending (:meth:`Head.append`) behaves like one Prometheus appender for the whole batch: each
sample is checked against the series' state before the batch (``Append``) and again, in batch
order, when applied (``Commit``). Status per sample:

* ``OK`` appended; ``DUP_OK`` same timestamp and value bits as the last sample, ignored
  (Prometheus accepts these silently, federation produces them);
* ``OUT_OF_ORDER`` ("out of order sample"), ``DUPLICATE`` ("duplicate sample for timestamp"),
  ``OUT_OF_BOUNDS`` ("out of bounds": before the head's appendable window), ``BAD_REF``;
* with an out-of-order window (``ooo_window`` ms, ``--tsdb.out-of-order.time-window``):
  ``OOO_OK`` kept among the series' out-of-order samples (a sample older than the series' last
  one, or before the appendable window, but not more than the window behind the head's max
  time); ``TOO_OLD`` ("too old sample") otherwise; ``OUT_OF_BOUNDS`` and ``OUT_OF_ORDER`` do not
  occur then;
* ``| AT_COMMIT`` (0x80) when the sample passed ``Append`` (against the state before the batch)
  and only failed at ``Commit`` (behind an earlier sample of the same batch): Prometheus and
  Thanos report such a sample as accepted and drop it silently.

Chunks are cut as Prometheus cuts head chunks (``appendPreprocessor``): at the end of the
``chunk_range``-aligned window of the chunk's first sample, earlier when a quarter of
``samples_per_chunk`` predicts a shorter chunk (``computeChunkEndTime``), at 2x
``samples_per_chunk`` samples, and when the chunk passes 1005 bytes. So every chunk lies in one
block range and blocks are written from whole chunks (:meth:`Head.write_block`).

Out-of-order samples are kept per series, sorted, apart from the chunks (Prometheus' OOO head
chunks); reads merge them in (:meth:`Head.query`; for a timestamp present in both, the in-order
sample wins). Blocks are cut as Prometheus cuts them: in-order blocks from the in-order chunks
only, then, when the head was compacted, one out-of-order block per chunk range holding
out-of-order samples (``compaction.hints: ["from-out-of-order"]``; they overlap the in-order
blocks, so a compactor needs vertical compaction, as with Thanos' receiver).

Native histograms (:meth:`Head.append_histograms`, columns from
:func:`pythanos.tsdb.histchunk.histogram_columns`) live in the :mod:`pythanos.tsdb._histchunk`
kernel under the same refs: chunk encodings 2 (integer) and 3 (float), byte for byte as
Prometheus 3.9.1 appends them (new chunk on schema, zero threshold or custom bounds change and on
counter resets, re-coding when buckets appear, the 1024-byte target / 10-sample minimum cadence).
A series holds one kind at a time as a Prometheus memSeries: switching kinds cuts a chunk of the
other encoding, and the series' last time covers both. Reads (:meth:`Head.query`,
:meth:`Head.select_histograms`) and blocks carry each chunk with its encoding
(:attr:`HeadChunks.encoding`); out-of-order histograms go to the out-of-order blocks.
"""
from __future__ import annotations

import os
import secrets
import threading
from array import array
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import _head, _histchunk, walrecords
from .block import MAX_TIME, MIN_TIME, range_end
from .chunkenc import decode_xor, decode_xor_many, encode_xor
from .histchunk import HistogramColumns
from .labels import MATCH_EQUAL, Matcher

__all__ = [
    "Head", "HeadChunks", "HeadCollector", "blob_from_labels", "labels_from_blob", "blobs_from_labels",
    "OK", "DUP_OK", "OUT_OF_ORDER", "DUPLICATE", "OUT_OF_BOUNDS", "TOO_OLD", "OOO_OK", "BAD_REF", "INVALID", "AT_COMMIT",
    "ERR_OUT_OF_ORDER", "ERR_DUPLICATE", "ERR_OUT_OF_BOUNDS", "ERR_TOO_OLD", "status_error",
]

OK = 0
DUP_OK = 1
OUT_OF_ORDER = 2
DUPLICATE = 3
OUT_OF_BOUNDS = 4
TOO_OLD = 5
OOO_OK = 6
BAD_REF = 7
INVALID = 8  # a native histogram failing Prometheus' Validate (text in Head.last_histogram_error)
AT_COMMIT = 0x80

# Prometheus' error texts (storage/interface.go)
ERR_OUT_OF_ORDER = "out of order sample"
ERR_DUPLICATE = "duplicate sample for timestamp"
ERR_OUT_OF_BOUNDS = "out of bounds"
ERR_TOO_OLD = "too old sample"

DEFAULT_CHUNK_RANGE = 2 * 3600 * 1000
DEFAULT_SAMPLES_PER_CHUNK = 120
ENCODING_XOR = 1

_EMPTY = np.zeros(0, dtype=np.int64)


def status_error(status: int) -> str | None:
    """Prometheus' error text for a status (None when the sample counts as accepted)."""
    if status & AT_COMMIT or status in (OK, DUP_OK, OOO_OK):
        return None
    return {OUT_OF_ORDER: ERR_OUT_OF_ORDER, DUPLICATE: ERR_DUPLICATE, OUT_OF_BOUNDS: ERR_OUT_OF_BOUNDS,
            TOO_OLD: ERR_TOO_OLD, BAD_REF: "unknown series ref", INVALID: "invalid histogram"}.get(status, f"status {status}")


# --- label blobs ---------------------------------------------------------------------------------

def blob_from_labels(labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """The canonical label blob (labels sorted by name): the WAL Series record's encoding."""
    return walrecords.labels_to_blob(labels.items() if isinstance(labels, Mapping) else labels)


def blobs_from_labels(label_sets: Iterable) -> tuple[bytes, np.ndarray]:
    """Many blobs back to back: ``(buf, offsets)`` with blob ``i`` = ``buf[offsets[i]:offsets[i+1]]``."""
    blobs = [blob_from_labels(ls) for ls in label_sets]
    offs = np.zeros(len(blobs) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in blobs], out=offs[1:])
    return b"".join(blobs), offs


def labels_from_blob(blob) -> tuple[tuple[str, str], ...]:
    """The (name, value) pairs of a label blob, in its order."""
    return walrecords.blob_to_labels(bytes(blob))


def _go_mod(a: int, b: int) -> int:
    """Go's ``%`` (the sign of the dividend)."""
    r = abs(a) % abs(b)
    return r if a >= 0 else -r


def _i64(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


# --- results -------------------------------------------------------------------------------------

@dataclass
class HeadChunks:
    """Chunks of selected series as columns: series ``i`` (``refs[i]``) owns chunks
    ``starts[i]:starts[i+1]``; chunk ``j`` is ``data[offsets[j]:offsets[j+1]]`` (XOR), covering
    ``[mint[j], maxt[j]]``. ``chunk_refs`` repeats each series ref once per chunk."""

    refs: np.ndarray
    counts: np.ndarray
    mint: np.ndarray
    maxt: np.ndarray
    offsets: np.ndarray
    data: bytes
    encodings: np.ndarray | None = None  # per chunk (1 XOR, 2 histogram, 3 float histogram); None: all XOR

    @property
    def starts(self) -> np.ndarray:
        s = np.zeros(len(self.counts) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=s[1:])
        return s

    @property
    def chunk_refs(self) -> np.ndarray:
        return np.repeat(self.refs, self.counts)

    @property
    def encoding(self) -> np.ndarray:
        if self.encodings is not None:
            return self.encodings
        return np.full(len(self.mint), ENCODING_XOR, dtype=np.uint8)

    @property
    def num_samples(self) -> np.ndarray:
        """Samples per chunk (the first two bytes, big-endian, in every encoding)."""
        if len(self.mint) == 0:
            return _EMPTY
        d = np.frombuffer(self.data, dtype=np.uint8)
        o = self.offsets[:-1]
        return (d[o].astype(np.int64) << 8) | d[o + 1]

    def chunk(self, j: int) -> bytes:
        return self.data[int(self.offsets[j]):int(self.offsets[j + 1])]


# --- the head ------------------------------------------------------------------------------------

class Head:
    """See the module docstring. Thread-safe: kernel calls hold the kernel's lock (taken with the
    GIL released); changes (series creation, appends, truncation, compaction) also hold the head's
    own lock, so they run one at a time; reads run alongside them and see whole batches."""

    def __init__(self, *, chunk_range: int = DEFAULT_CHUNK_RANGE, samples_per_chunk: int = DEFAULT_SAMPLES_PER_CHUNK,
                 ooo_window: int = 0, capacity: int = 1024, _hash_mask: int | None = None):
        if ooo_window < 0:
            raise ValueError("ooo_window must be >= 0")
        self.ooo_window = int(ooo_window)
        self.chunk_range = int(chunk_range)
        self.samples_per_chunk = int(samples_per_chunk)
        self._k = _head.Head(self.chunk_range, self.samples_per_chunk, int(capacity),
                             secrets.randbits(64), (1 << 64) - 1 if _hash_mask is None else int(_hash_mask))
        self._h = _histchunk.HistHead(self.chunk_range)  # native histogram series (refs shared)
        self.histograms_appended = 0
        self.invalid_histograms = 0
        self.hist_rejected = {OUT_OF_ORDER: 0, OUT_OF_BOUNDS: 0, DUPLICATE: 0, TOO_OLD: 0}
        self.last_histogram_error = ""
        # Prometheus' head times: MaxInt64/MinInt64 until the first append
        self.min_time = MAX_TIME
        self.max_time = MIN_TIME
        self._min_valid_time = MIN_TIME
        self.min_ooo_time = MAX_TIME  # out-of-order samples held span [min_ooo_time, max_ooo_time]
        self.max_ooo_time = MIN_TIME
        self._postings: dict[str, dict[str, array]] = {}
        self._mu = threading.RLock()
        self.samples_appended = 0
        # rejections as Prometheus counts them (Append and Commit alike)
        self.out_of_order_samples = 0
        self.out_of_bound_samples = 0
        self.duplicate_samples = 0
        self.too_old_samples = 0
        self.ooo_samples_appended = 0
        self.truncations = 0

    # -- series -----------------------------------------------------------------------------------
    @property
    def num_series(self) -> int:
        return int(self._k.stats()["series"])

    def lookup(self, buf, offsets) -> np.ndarray:
        """Refs (int64, 0 = unknown) of the blobs ``buf[offsets[i]:offsets[i+1]]``."""
        offsets = _i64(offsets)
        refs = np.empty(max(len(offsets) - 1, 0), dtype=np.int64)
        self._k.lookup(buf, offsets, refs)
        return refs

    def get_or_create(self, buf, offsets, *, strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Refs of the blobs, creating the series that do not exist; returns ``(refs, created)``
        (``created``: bool mask of the series this call made, whose Series records the caller logs).
        A malformed blob (bad varints, unsorted or duplicate names, invalid UTF-8) gets ref 0;
        with ``strict`` a ValueError naming the first such blob and byte is raised after the
        good ones were created."""
        offsets = _i64(offsets)
        refs = self.lookup(buf, offsets)
        if refs.all():
            return refs, np.zeros(len(refs), dtype=bool)
        new = np.zeros(len(refs), dtype=np.uint8)
        with self._mu:
            bad, why = self._k.create(buf, offsets, refs, new)
            self._index_new(buf, offsets, refs, new)
        if bad == -2:
            raise MemoryError("head: out of memory creating series")
        if bad >= 0 and strict:
            raise ValueError(why)
        return refs, new == 1

    def create_with_refs(self, buf, offsets, refs) -> tuple[np.ndarray, np.ndarray]:
        """Create series with the refs given (WAL replay: a Series record's ref). Returns
        ``(refs, status)``: status 1 created with the given ref; 0 the labels already exist,
        under the ref returned (the caller maps the record's ref to it, as Prometheus'
        multiRef); 2 the ref is taken by other labels or not positive; 3 malformed blob. Later
        new series get refs above every ref seen."""
        offsets = _i64(offsets)
        refs = np.array(refs, dtype=np.int64)
        new = np.zeros(len(refs), dtype=np.uint8)
        with self._mu:
            bad, _why = self._k.create(buf, offsets, refs, new, True)
            self._index_new(buf, offsets, refs, new)
        if bad == -2:
            raise MemoryError("head: out of memory creating series")
        return refs, new

    def _index_new(self, buf, offsets: np.ndarray, refs: np.ndarray, new: np.ndarray) -> None:
        idx = np.flatnonzero(new == 1)
        if len(idx):
            self._index(zip(refs[idx].tolist(), _head.labels_of(buf, offsets, idx)))

    create = get_or_create

    def get_or_create_labels(self, label_sets: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`get_or_create` from label mappings / pair lists (convenience, not the hot path)."""
        return self.get_or_create(*blobs_from_labels(label_sets))

    def _index(self, items: Iterable[tuple[int, tuple]]) -> None:
        p = self._postings
        for ref, lbls in items:
            for n, v in lbls:
                d = p.get(n)
                if d is None:
                    d = p[n] = {}
                a = d.get(v)
                if a is None:
                    d[v] = array("q", (ref,))
                else:
                    a.append(ref)

    def labels(self, refs) -> list[tuple[tuple[str, str], ...]]:
        """Label sets of the refs (``()`` for unknown refs)."""
        buf, offs = self._k.blobs(_i64(refs))
        o = np.frombuffer(offs, dtype=np.int64)
        out = _head.labels_of(buf, o, np.flatnonzero(o[1:] > o[:-1]))
        if len(out) == len(o) - 1:
            return out
        it = iter(out)
        return [next(it) if o[i + 1] > o[i] else () for i in range(len(o) - 1)]

    def blobs(self, refs) -> tuple[bytes, np.ndarray]:
        """The label blobs of the refs back to back: ``(buf, offsets)``, an unknown ref's blob empty."""
        buf, offs = self._k.blobs(_i64(refs))
        return bytes(buf), np.frombuffer(offs, dtype=np.int64)

    def all_refs(self) -> np.ndarray:
        """The live refs, ascending."""
        return np.frombuffer(self._k.refs(), dtype=np.int64)

    def alive(self, refs) -> np.ndarray:
        """Bool mask: which refs are live series (a WAL checkpoint keeps their Series records)."""
        return np.frombuffer(self._k.alive(_i64(refs)), dtype=bool)

    def time_range(self, refs) -> tuple[np.ndarray, np.ndarray]:
        """Each series' first and last in-order sample time (MAX_TIME/MIN_TIME when none)."""
        a, b = self._k.series_range(_i64(refs))
        return np.frombuffer(a, dtype=np.int64), np.frombuffer(b, dtype=np.int64)

    # -- postings ---------------------------------------------------------------------------------
    def _union(self, d: dict[str, array], values: Iterable[str]) -> np.ndarray:
        # np.array copies inside one C call: no buffer export outlives it (array.append of a
        # concurrent series creation would fail on an exported array)
        parts = [np.array(a, dtype=np.int64) for a in map(d.get, values) if a is not None]
        if not parts:
            return _EMPTY
        if len(parts) == 1:
            return np.sort(parts[0])
        return np.unique(np.concatenate(parts))

    def _values_matching(self, d: dict[str, array], m: Matcher, invert: bool) -> list[str]:
        if m.type == MATCH_EQUAL and not invert:
            return [m.value] if m.value in d else []
        vals = list(d)  # a snapshot: series creation may add values meanwhile
        if invert:
            return [v for v in vals if not m.matches(v)]
        return [v for v in vals if m.matches(v)]

    def postings(self, matchers: Sequence[Matcher]) -> np.ndarray:
        """Sorted refs of the series selected by all matchers (Prometheus' PostingsForMatchers
        semantics: a matcher that matches "" also selects series without the label; no matchers
        select nothing)."""
        if not matchers:
            return _EMPTY
        pos, neg = [], []
        for m in matchers:
            if not isinstance(m, Matcher):
                m = Matcher(*m)
            if m.name == "":
                if m.matches(""):
                    continue
                return _EMPTY
            (neg if m.matches("") else pos).append(m)
        result: np.ndarray | None = None
        pos.sort(key=lambda m: 0 if m.type == MATCH_EQUAL else 1)
        for m in pos:
            d = self._postings.get(m.name)
            if not d:
                return _EMPTY
            p = self._union(d, self._values_matching(d, m, False))
            result = p if result is None else np.intersect1d(result, p, assume_unique=True)
            if len(result) == 0:
                return _EMPTY
        if result is None:
            result = self.all_refs().copy()
        for m in neg:
            d = self._postings.get(m.name)
            if not d:
                continue
            p = self._union(d, self._values_matching(d, m, True))
            if len(p):
                result = np.setdiff1d(result, p, assume_unique=True)
        return result

    def label_names(self, matchers: Sequence[Matcher] = ()) -> list[str]:
        """Sorted label names of the series (selected by ``matchers`` if given)."""
        if not matchers:
            return sorted(self._postings)
        refs = self.postings(matchers)
        names = set()
        for lbls in self.labels(refs):
            names.update(n for n, _ in lbls)
        return sorted(names)

    def label_values(self, name: str, matchers: Sequence[Matcher] = ()) -> list[str]:
        """Sorted values of label ``name`` (among the series selected by ``matchers`` if given)."""
        d = self._postings.get(name, {})
        if not matchers:
            return sorted(d)
        refs = self.postings(matchers)
        return sorted(v for v, a in list(d.items()) if len(np.intersect1d(np.array(a, dtype=np.int64), refs)))

    # -- appending --------------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return self.min_time != MAX_TIME

    def appendable_min_valid_time(self) -> int:
        """The lowest timestamp an append may have: half a chunk range behind the head's max
        time, and never before what was truncated (``Head.appendableMinValidTime``)."""
        return max(self.max_time - self.chunk_range // 2, self._min_valid_time, MIN_TIME)

    def append(self, refs, ts, vs) -> np.ndarray:
        """Append samples (any mix of series, in the order given); returns a status (uint8) per
        sample, see the module docstring. One kernel call for the whole batch."""
        refs, ts = _i64(refs), _i64(ts)
        vs = np.ascontiguousarray(vs, dtype=np.float64)
        status = np.empty(len(refs), dtype=np.uint8)
        if len(refs) == 0:
            return status
        with self._mu:
            return self._append(refs, ts, vs, status)

    def set_min_valid_time(self, t: int) -> None:
        """No append (or replayed sample) before ``t`` from now on (``Head.SetMinValidTime``:
        the max time of the newest block on disk, at startup)."""
        with self._mu:
            self._min_valid_time = int(t)

    def replay(self, refs, ts, vs) -> np.ndarray:
        """Re-append samples read back from the WAL (``processWALSamples``): no appendable window,
        only the min valid time; a sample not after its series' last one is skipped (statuses as
        :meth:`append`; not counted as appended)."""
        refs, ts = _i64(refs), _i64(ts)
        vs = np.ascontiguousarray(vs, dtype=np.float64)
        status = np.empty(len(refs), dtype=np.uint8)
        if len(refs) == 0:
            return status
        with self._mu:
            appended, mint, maxt, *_ = self._k.append(refs, ts, vs, status, self._min_valid_time, 0, 0)
            if appended:
                self.min_time = min(self.min_time, mint)
                self.max_time = max(self.max_time, maxt)
        return status

    def _append(self, refs: np.ndarray, ts: np.ndarray, vs: np.ndarray, status: np.ndarray) -> np.ndarray:
        if not self.initialized:
            # initAppender: the first sample's time starts the head
            t0 = int(ts[0])
            self.min_time = t0
            self.max_time = max(self.max_time, t0)
        appended, mint, maxt, oappended, omint, omaxt = self._k.append(
            refs, ts, vs, status, self.appendable_min_valid_time(), self.ooo_window, self.max_time)
        if appended != len(status):
            c = np.bincount(status & 0x7F, minlength=8)
            self.out_of_order_samples += int(c[OUT_OF_ORDER])
            self.out_of_bound_samples += int(c[OUT_OF_BOUNDS])
            self.duplicate_samples += int(c[DUPLICATE])
            self.too_old_samples += int(c[TOO_OLD])
        if oappended:
            self.ooo_samples_appended += oappended
            self.min_ooo_time = min(self.min_ooo_time, omint)
            self.max_ooo_time = max(self.max_ooo_time, omaxt)
        if appended:
            self.samples_appended += appended
            self.min_time = min(self.min_time, mint)
            self.max_time = max(self.max_time, maxt)
        return status

    def append_histograms(self, refs, cols: HistogramColumns) -> np.ndarray:
        """Append native histogram samples (``cols[i]`` to series ``refs[i]``, any mix of series,
        integer and float histograms); returns a status per sample as :meth:`append` (with an
        out-of-order window, late histograms are kept as out-of-order samples: ``OOO_OK``), plus
        ``INVALID`` (Prometheus' ``Validate`` failed; the first reason in
        :attr:`last_histogram_error`). One kernel call for the batch.

        A series holds floats or histograms at a time as in Prometheus: a histogram after a float
        sample (or the reverse) starts a new chunk of its encoding, and either kind at or before
        the other's last time is out of order (a duplicate at the same time)."""
        refs = _i64(refs)
        n = len(refs)
        status = np.empty(n, dtype=np.uint8)
        if n == 0:
            return status
        if len(cols) != n:
            raise ValueError(f"{n} refs for {len(cols)} histograms")
        with self._mu:
            if not self.initialized:
                t0 = int(cols.ts[0])
                self.min_time = t0
                self.max_time = max(self.max_time, t0)
            c = cols
            appended, mint, maxt, _created, bad_i, why, oappended, omint, omaxt = self._histogram_kernel(
                refs, cols, status, self.appendable_min_valid_time(), self.ooo_window, self.max_time)
            if oappended:
                self._k.hist_hold(refs[status == OOO_OK], True)
                self.ooo_samples_appended += oappended
                self.min_ooo_time = min(self.min_ooo_time, omint)
                self.max_ooo_time = max(self.max_ooo_time, omaxt)
            if bad_i >= 0:
                self.last_histogram_error = f"histogram {bad_i}: {why}"
            if appended != n:
                cnt = np.bincount(status & 0x7F, minlength=9)
                for k in self.hist_rejected:
                    self.hist_rejected[k] += int(cnt[k])
                self.invalid_histograms += int(cnt[INVALID])
            if appended:
                ok = status == OK
                self._k.hist_mark(refs[ok], _i64(c.ts)[ok])
                self.histograms_appended += appended
                self.min_time = min(self.min_time, mint)
                self.max_time = max(self.max_time, maxt)
        return status

    def replay_histograms(self, refs, cols: HistogramColumns) -> np.ndarray:
        """Re-append histogram samples read back from the WAL (as :meth:`replay` for floats: no
        appendable window, only the min valid time; a sample not after its series' last one is
        skipped; not counted as appended)."""
        refs = _i64(refs)
        status = np.empty(len(refs), dtype=np.uint8)
        if len(refs) == 0:
            return status
        with self._mu:
            appended, mint, maxt = self._histogram_kernel(refs, cols, status, self._min_valid_time, 0, 0)[:3]
            if appended:
                ok = status == OK
                self._k.hist_mark(refs[ok], _i64(cols.ts)[ok])
                self.min_time = min(self.min_time, mint)
                self.max_time = max(self.max_time, maxt)
        return status

    def _histogram_kernel(self, refs: np.ndarray, c: HistogramColumns, status: np.ndarray, minvalid: int,
                          ooo_window: int, head_maxt: int) -> tuple:
        if len(c) != len(refs):
            raise ValueError(f"{len(refs)} refs for {len(c)} histograms")
        _lo, other = self._k.series_range(refs)  # the float side's last time (or a histogram's)
        return self._h.append(
            refs, _i64(c.ts), np.frombuffer(other, dtype=np.int64), np.ascontiguousarray(c.is_float, np.uint8),
            np.ascontiguousarray(c.count, np.uint64), np.ascontiguousarray(c.zero_count, np.uint64),
            np.ascontiguousarray(c.sum, np.float64), _i64(c.schema), np.ascontiguousarray(c.zero_threshold, np.float64),
            np.ascontiguousarray(c.reset_hint, np.uint8), _i64(c.pspan_off), _i64(c.nspan_off),
            _i64(c.spans).reshape(-1), _i64(c.pbucket_off), _i64(c.nbucket_off),
            np.ascontiguousarray(c.buckets, np.uint64), _i64(c.cv_off), np.ascontiguousarray(c.custom_values, np.float64),
            status, int(minvalid), int(ooo_window), int(head_maxt))

    # -- reading ----------------------------------------------------------------------------------
    def select_histograms(self, refs, mint: int = MIN_TIME, maxt: int = MAX_TIME) -> HeadChunks:
        """The native histogram chunks of the series ``refs`` overlapping ``[mint, maxt]`` (closed),
        oldest first, with their encodings (2 or 3)."""
        refs = _i64(refs)
        counts, cmint, cmaxt, encs, offs, data = self._h.select(refs, int(mint), int(maxt))
        return HeadChunks(refs, np.frombuffer(counts, dtype=np.int64), np.frombuffer(cmint, dtype=np.int64),
                          np.frombuffer(cmaxt, dtype=np.int64), np.frombuffer(offs, dtype=np.int64), data,
                          np.frombuffer(encs, dtype=np.uint8))

    def _with_histograms(self, hc: HeadChunks, mint: int, maxt: int) -> HeadChunks:
        """``hc`` (float chunks, rows in their order) with the same series' histogram chunks merged
        in by time; series that have only histograms must already have a row."""
        return self._merge_rows(hc, self.select_histograms(hc.refs, mint, maxt))

    def _ooo_histograms(self, refs: np.ndarray, mint: int, maxt: int) -> HeadChunks:
        """The out-of-order histogram samples of ``refs`` in ``[mint, maxt]`` as chunks (encoded as
        Prometheus' OOOChunk.ToEncodedChunks), rows as ``refs``."""
        counts, cmint, cmaxt, encs, offs, data = self._h.ooo_select(refs, int(mint), int(maxt))
        return HeadChunks(refs, np.frombuffer(counts, dtype=np.int64), np.frombuffer(cmint, dtype=np.int64),
                          np.frombuffer(cmaxt, dtype=np.int64), np.frombuffer(offs, dtype=np.int64), data,
                          np.frombuffer(encs, dtype=np.uint8))

    @staticmethod
    def _merge_rows(hc: HeadChunks, hh: HeadChunks) -> HeadChunks:
        """Two chunk sets over the same rows merged per row, by chunk min time."""
        if len(hh.mint) == 0:
            return hc
        nf, nh = len(hc.mint), len(hh.mint)
        ser = np.concatenate((np.repeat(np.arange(len(hc.refs)), hc.counts), np.repeat(np.arange(len(hh.refs)), hh.counts)))
        mins = np.concatenate((hc.mint, hh.mint))
        order = np.lexsort((mins, ser))
        lens = np.concatenate((np.diff(hc.offsets), np.diff(hh.offsets)))
        starts = np.concatenate((hc.offsets[:-1], hh.offsets[:-1] + len(hc.data)))
        blob = hc.data + hh.data
        data = b"".join(blob[a:a + ln] for a, ln in zip(starts[order].tolist(), lens[order].tolist()))
        offs = np.zeros(nf + nh + 1, dtype=np.int64)
        np.cumsum(lens[order], out=offs[1:])
        encs = np.concatenate((hc.encoding, hh.encodings))[order]
        return HeadChunks(hc.refs, hc.counts + hh.counts, np.concatenate((hc.mint, hh.mint))[order],
                          np.concatenate((hc.maxt, hh.maxt))[order], offs, data, encs)

    def select(self, refs, mint: int = MIN_TIME, maxt: int = MAX_TIME) -> HeadChunks:
        """Every chunk of the series ``refs`` overlapping ``[mint, maxt]`` (closed), oldest first,
        the open chunk as a copy; unknown refs have no chunks."""
        refs = _i64(refs)
        counts, cmint, cmaxt, offs, data = self._k.select(refs, int(mint), int(maxt))
        return HeadChunks(refs, np.frombuffer(counts, dtype=np.int64), np.frombuffer(cmint, dtype=np.int64),
                          np.frombuffer(cmaxt, dtype=np.int64), np.frombuffer(offs, dtype=np.int64), data)

    def query(self, matchers: Sequence[Matcher] = (), mint: int = MIN_TIME, maxt: int = MAX_TIME, *,
              ooo: bool = True) -> tuple[list[tuple[tuple[str, str], ...]], HeadChunks]:
        """The series selected by ``matchers`` (all without) that have chunks overlapping
        ``[mint, maxt]``, in label order: ``(labels, chunks)`` with ``labels[i]`` the label set of
        ``chunks.refs[i]`` (what a StoreAPI Series answer needs). Out-of-order samples are
        merged in unless ``ooo`` is false."""
        refs = self.postings(matchers) if matchers else self.all_refs()
        lbls = self.labels(refs)
        order = sorted(range(len(refs)), key=lbls.__getitem__)
        refs = refs[order]
        lbls = [lbls[i] for i in order]
        hc = self.select(refs, mint, maxt)  # in label order: nothing to move afterwards
        hst = self._h.stats()
        if hst["series"] > 0:
            hc = self._with_histograms(hc, mint, maxt)
        has = hc.counts > 0
        ohist = None
        if ooo and hst["ooo_samples"] and mint <= self.max_ooo_time and maxt >= self.min_ooo_time:
            ohist = self._ooo_histograms(refs, mint, maxt)
            has |= ohist.counts > 0
        held = None
        if ooo and self.max_ooo_time != MIN_TIME and mint <= self.max_ooo_time and maxt >= self.min_ooo_time:
            oc, ot, ov = self._k.ooo_select(refs, int(mint), int(maxt))
            held = (np.frombuffer(oc, dtype=np.int64), np.frombuffer(ot, dtype=np.int64),
                    np.frombuffer(ov, dtype=np.float64))
            if held[0].any():
                has |= held[0] > 0
            else:
                held = None
        keep = np.flatnonzero(has)
        if len(keep) < len(refs):  # series without chunks own no chunk columns: drop their rows only
            hc = HeadChunks(refs[keep], hc.counts[keep], hc.mint, hc.maxt, hc.offsets, hc.data, hc.encodings)
            lbls = [lbls[i] for i in keep.tolist()]
        if held is not None:
            hc = self._merge_ooo(hc, held, keep)
        if ohist is not None and len(ohist.mint):
            if len(keep) < len(refs):
                st = ohist.starts
                sel = np.concatenate([np.arange(st[i], st[i + 1]) for i in keep.tolist()] or [_EMPTY]).astype(np.int64)
                lens = np.diff(ohist.offsets)[sel]
                offs = np.zeros(len(sel) + 1, dtype=np.int64)
                np.cumsum(lens, out=offs[1:])
                data = b"".join(ohist.chunk(j) for j in sel.tolist())
                ohist = HeadChunks(hc.refs, ohist.counts[keep], ohist.mint[sel], ohist.maxt[sel], offs, data,
                                   ohist.encodings[sel])
            hc = self._merge_rows(hc, ohist)
        return lbls, hc

    def _merge_ooo(self, hc: HeadChunks, ooo, idx: np.ndarray) -> HeadChunks:
        """``hc`` with the out-of-order samples merged in, for the series that have some (their
        chunks re-encoded, 120 samples each within chunk-range windows; in-order samples win a
        tie). ``idx[i]`` is series i's index in the ``ooo`` columns. A series' histogram chunks
        stay as they are, placed among the re-encoded float chunks by time."""
        from .block import cut_fixed

        oc, ot, ov = ooo
        ostart = np.zeros(len(oc) + 1, dtype=np.int64)
        np.cumsum(oc, out=ostart[1:])
        starts = hc.starts
        enc = hc.encoding
        counts, mints, maxts, pieces, encs = [], [], [], [], []
        for i, k in enumerate(idx.tolist()):
            c0, c1 = int(starts[i]), int(starts[i + 1])
            if oc[k] == 0:
                counts.append(c1 - c0)
                mints.append(hc.mint[c0:c1])
                maxts.append(hc.maxt[c0:c1])
                encs.append(enc[c0:c1])
                pieces += [hc.chunk(j) for j in range(c0, c1)]
                continue
            ts, vs = [], []
            hist = [j for j in range(c0, c1) if enc[j] != ENCODING_XOR]
            for j in range(c0, c1):
                if enc[j] != ENCODING_XOR:
                    continue
                t, v = decode_xor(hc.chunk(j))
                ts.append(t)
                vs.append(v)
            a, b = int(ostart[k]), int(ostart[k + 1])
            ts.append(ot[a:b])
            vs.append(ov[a:b])
            t = np.concatenate(ts)
            v = np.concatenate(vs)
            o = np.argsort(t, kind="stable")  # in-order samples first among equal times
            t, v = t[o], v[o]
            first = np.concatenate(([True], t[1:] != t[:-1]))
            t, v = t[first], v[first]
            bnd = cut_fixed(t, self.samples_per_chunk, self.chunk_range)
            mi = np.concatenate((t[bnd[:-1]], hc.mint[hist]))
            mx = np.concatenate((t[bnd[1:] - 1], hc.maxt[hist]))
            pc = [encode_xor(t[x:y], v[x:y]) for x, y in zip(bnd[:-1].tolist(), bnd[1:].tolist())]
            pc += [hc.chunk(j) for j in hist]
            en = np.concatenate((np.full(len(bnd) - 1, ENCODING_XOR, np.uint8), enc[hist]))
            o = np.argsort(mi, kind="stable")
            counts.append(len(pc))
            mints.append(mi[o])
            maxts.append(mx[o])
            encs.append(en[o])
            pieces += [pc[x] for x in o.tolist()]
        offs = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in pieces], out=offs[1:])
        return HeadChunks(hc.refs, np.asarray(counts, dtype=np.int64),
                          np.concatenate(mints) if mints else _EMPTY, np.concatenate(maxts) if maxts else _EMPTY,
                          offs, b"".join(pieces), np.concatenate(encs) if encs else np.zeros(0, np.uint8))

    def series(self, matchers: Sequence[Matcher] = (), mint: int = MIN_TIME, maxt: int = MAX_TIME
               ) -> Iterator[tuple[tuple[tuple[str, str], ...], np.ndarray, np.ndarray]]:
        """``(labels, t, v)`` with the samples in ``[mint, maxt]`` of the selected series (all
        series without matchers), in label order; series without such samples are skipped. Float
        samples only (native histograms: :meth:`select_histograms`)."""
        lbls, hc = self.query(matchers, mint, maxt)
        if len(hc.mint) == 0:
            return
        cstart, clen, cs = hc.offsets[:-1], np.diff(hc.offsets), hc.starts
        if hc.encodings is not None and (hc.encodings != ENCODING_XOR).any():
            x = hc.encodings == ENCODING_XOR
            per = np.bincount(np.repeat(np.arange(len(hc.counts)), hc.counts)[x], minlength=len(hc.counts))
            cstart, clen = cstart[x], clen[x]
            cs = np.zeros(len(per) + 1, dtype=np.int64)
            np.cumsum(per, out=cs[1:])
        counts, t_all, v_all = decode_xor_many(hc.data, cstart, clen)
        sstart = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=sstart[1:])
        for i, ls in enumerate(lbls):
            a, b = int(sstart[cs[i]]), int(sstart[cs[i + 1]])
            t, v = t_all[a:b], v_all[a:b]
            if len(t) and (t[0] < mint or t[-1] > maxt):
                i0, i1 = np.searchsorted(t, mint, side="left"), np.searchsorted(t, maxt, side="right")
                t, v = t[i0:i1], v[i0:i1]
            if len(t):
                yield ls, t, v

    # -- blocks and truncation --------------------------------------------------------------------
    def compactable(self) -> bool:
        """Whether the head spans more than 1.5 chunk ranges (``Head.compactable``)."""
        return self.initialized and self.max_time - self.min_time > self.chunk_range // 2 * 3

    def next_block_range(self) -> tuple[int, int]:
        """``[mint, maxt)`` of the next block Prometheus would cut: from the head's min time to
        the end of its chunk-range window."""
        return self.min_time, range_end(self.min_time, self.chunk_range)

    def write_block(self, output_dir: str | os.PathLike, mint: int, maxt: int, *, thanos=None) -> str | None:
        """Write the head's in-order samples in ``[mint, maxt)`` as a block (Prometheus' layout,
        level 1) and return its ULID; None when there are no samples (Prometheus writes no empty block).
        Whole head chunks are written as they are; a chunk reaching outside the range (only
        possible for a range not on chunk-range boundaries) is re-encoded with its samples inside."""
        from .meta import ThanosMeta
        from .streamwriter import StreamBlockWriter

        lbls, hc = self.query((), mint, maxt - 1, ooo=False)
        if not lbls:
            return None
        cmint, cmaxt, offs, data = hc.mint, hc.maxt, hc.offsets, hc.data
        encs = hc.encoding
        outside = np.flatnonzero((cmint < mint) | (cmaxt >= maxt))
        if len(outside):
            pieces, nmint, nmaxt, lens = [], cmint.copy(), cmaxt.copy(), np.diff(offs).copy()
            for j in range(len(cmint)):
                c = data[int(offs[j]):int(offs[j + 1])]
                if (cmint[j] < mint or cmaxt[j] >= maxt) and encs[j] != ENCODING_XOR:
                    c = _histchunk.slice(c, int(encs[j]), int(mint), int(maxt) - 1)
                    ts = _histchunk.decode(c, int(encs[j]))["t"]  # select guarantees a sample in range
                    nmint[j], nmaxt[j] = np.frombuffer(ts, dtype=np.int64)[[0, -1]]
                    lens[j] = len(c)
                elif cmint[j] < mint or cmaxt[j] >= maxt:
                    t, v = decode_xor(c)
                    sel = (t >= mint) & (t < maxt)
                    t, v = t[sel], v[sel]
                    c = encode_xor(t, v)
                    nmint[j], nmaxt[j] = t[0], t[-1]  # select guarantees a sample in range
                    lens[j] = len(c)
                pieces.append(c)
            data = b"".join(pieces)
            offs = np.zeros(len(lens) + 1, dtype=np.int64)
            np.cumsum(lens, out=offs[1:])
            cmint, cmaxt = nmint, nmaxt
        d = np.frombuffer(data, dtype=np.uint8)
        samples = (d[offs[:-1]].astype(np.int64) << 8) | d[offs[:-1] + 1]
        symbols = {s for ls in lbls for kv in ls for s in kv}
        if thanos is not None and not isinstance(thanos, ThanosMeta):
            t = dict(thanos)
            thanos = ThanosMeta(labels=dict(t.pop("labels", {}) or {}),
                                downsample_resolution=int(t.pop("resolution", t.pop("downsample_resolution", 0))),
                                source=t.pop("source", ""), **t)
        w = StreamBlockWriter(output_dir, symbols, min_time=int(mint), max_time=int(maxt), thanos=thanos,
                              prometheus_stats=True, index_stats=thanos is not None)
        try:
            w.add_many(lbls, data, offs, encs, cmint, cmaxt, hc.counts, samples)
            meta = w.write()
        except BaseException:
            w.abort()
            raise
        return meta.ulid if meta is not None else None

    def truncate(self, mint: int) -> np.ndarray:
        """Drop the chunks entirely before ``mint`` and the series left without samples
        (``Head.truncateMemory`` + ``gc``); returns the refs of the series removed (a WAL
        checkpoint may keep their records until the WAL no longer holds their samples)."""
        with self._mu:
            return self._truncate(mint)

    def _truncate(self, mint: int) -> np.ndarray:
        if self.initialized and self.min_time >= mint:
            return _EMPTY
        self.truncations += 1
        self.min_time = mint
        self._min_valid_time = mint
        self.max_time = max(self.max_time, mint)
        removed, blobs, boffs, _nchunks, actual = self._k.truncate(int(mint))
        _hc, _hs, hactual = self._h.truncate(int(mint))
        actual = min(actual, hactual)
        removed = np.frombuffer(removed, dtype=np.int64)
        if len(removed):
            self._unindex(removed, blobs, np.frombuffer(boffs, dtype=np.int64))
            removed = np.sort(removed)
        if actual == MAX_TIME:
            actual = mint
        if actual > self.min_time:
            amv = self.appendable_min_valid_time()
            self.min_time = self._min_valid_time = actual if actual < amv else amv
        return removed

    def _unindex(self, removed: np.ndarray, blobs: bytes, offs: np.ndarray) -> None:
        removed = np.sort(removed)
        rset = set(removed.tolist())
        affected: dict[str, set[str]] = {}
        for lbls in _head.labels_of(blobs, offs, np.arange(len(removed), dtype=np.int64)):
            for n, v in lbls:
                affected.setdefault(n, set()).add(v)
        p = self._postings
        for n, vals in affected.items():
            d = p[n]
            for v in vals:
                arr = d[v]
                if len(arr) == 1:  # a value of one series: the common case for unique labels
                    if arr[0] in rset:
                        del d[v]
                    continue
                a = np.frombuffer(arr, dtype=np.int64)
                k = a[~np.isin(a, removed, assume_unique=True)]
                if len(k):
                    d[v] = array("q", k.tobytes())
                else:
                    del d[v]
            if not d:
                del p[n]

    def compact(self, output_dir: str | os.PathLike, *, thanos=None) -> list[str]:
        """Cut blocks while the head is compactable, truncating after each, then, if any was cut,
        the out-of-order blocks (``DB.Compact``'s head part; Prometheus' compaction delay is the
        caller's business). Returns the new ULIDs."""
        with self._mu:
            return self._compact(output_dir, thanos)

    def _compact(self, output_dir, thanos) -> list[str]:
        out = []
        compacted = False
        while self.compactable():
            mint, maxt = self.next_block_range()
            u = self.write_block(output_dir, mint, maxt, thanos=thanos)
            if u:
                out.append(u)
            self.truncate(maxt)
            compacted = True
        if compacted and self.ooo_window:
            out += self.compact_ooo(output_dir, thanos=thanos)
        return out

    def flush(self, output_dir: str | os.PathLike, *, thanos=None, block_duration: int | None = None) -> list[str]:
        """Write what the head holds as blocks, as Thanos' receiver flushes a tenant's head
        (``tenant.flushHead``): one block up to the last ``block_duration`` boundary before the
        head's max time, one for the rest, truncating after each. As there, the remainder block
        ends at the max time (exclusive): samples at exactly the max time stay in the head,
        unless the head spans a single timestamp. Returns the new ULIDs."""
        with self._mu:
            if not self.initialized:
                return []
            width = block_duration or self.chunk_range
            out = []
            lo, hi = self.min_time, self.max_time
            if lo == hi:
                u = self.write_block(output_dir, lo, hi + 1, thanos=thanos)
                self._truncate(hi + 1)
                return [u] if u else []
            aligned = hi - _go_mod(hi, width)
            if lo < aligned:
                u = self.write_block(output_dir, lo, aligned, thanos=thanos)
                if u:
                    out.append(u)
            self._truncate(aligned)
            lo, hi = self.min_time, self.max_time
            if lo < hi:
                u = self.write_block(output_dir, lo, hi, thanos=thanos)
                if u:
                    out.append(u)
            self._truncate(hi)
            return out

    def compact_ooo(self, output_dir: str | os.PathLike, *, thanos=None) -> list[str]:
        """Write the out-of-order samples as blocks, one per chunk-range window they fall in
        (``DB.compactOOO``), then drop them (``Head.truncateOOO``) and the series left empty.
        Returns the new ULIDs."""
        with self._mu:
            return self._compact_ooo(output_dir, thanos)

    def _compact_ooo(self, output_dir, thanos) -> list[str]:
        from . import ulid as _ulid
        from .block import BlockWriter
        from .meta import Compaction

        out: list[str] = []
        if self.max_ooo_time == MIN_TIME:
            return out
        refs = self.all_refs()
        lo, hi = self.min_ooo_time, self.max_ooo_time
        w = self.chunk_range
        t0 = (lo // w) * w if lo >= 0 else -((-lo + w - 1) // w) * w
        hist = self._h.stats()["ooo_samples"] > 0
        for a in range(t0, hi + 1, w):
            oc, ot, ov = self._k.ooo_select(refs, a, a + w - 1)
            oc = np.frombuffer(oc, dtype=np.int64)
            ot, ov = np.frombuffer(ot, dtype=np.int64), np.frombuffer(ov, dtype=np.float64)
            if hist:
                oh = self._ooo_histograms(refs, a, a + w - 1)
                if oh.counts.any():
                    uid = self._ooo_block_with_histograms(output_dir, thanos, refs, a, oc, ot, ov, oh)
                    if uid:
                        out.append(uid)
                    continue
            if not oc.any():
                continue
            idx = np.flatnonzero(oc)
            st = np.zeros(len(oc) + 1, dtype=np.int64)
            np.cumsum(oc, out=st[1:])
            uid = _ulid.new()
            bw = BlockWriter(output_dir, style="prom3", thanos=thanos, min_time=a, max_time=a + w, block_ulid=uid,
                             samples_per_chunk=self.samples_per_chunk, chunk_range=self.chunk_range,
                             compaction=Compaction(level=1, sources=[uid], hints=["from-out-of-order"]))
            for k, lbls in zip(idx.tolist(), self.labels(refs[idx])):
                bw.add_series(lbls, ot[st[k]:st[k + 1]], ov[st[k]:st[k + 1]])
            if bw.write() is not None:
                out.append(uid)
        self._k.ooo_clear()
        if hist:
            _dropped, held = self._h.ooo_clear()
            self._k.hist_hold(np.frombuffer(held, dtype=np.int64), False)
        self.min_ooo_time, self.max_ooo_time = MAX_TIME, MIN_TIME
        self._gc()
        return out

    def _ooo_block_with_histograms(self, output_dir, thanos, refs: np.ndarray, a: int, oc: np.ndarray, ot: np.ndarray,
                                   ov: np.ndarray, oh: HeadChunks) -> str | None:
        """One out-of-order block for window ``[a, a + chunk_range)`` holding out-of-order floats
        (cut as the float-only path cuts them) and histograms (chunks as ToEncodedChunks)."""
        from . import ulid as _ulid
        from .block import cut_fixed
        from .meta import Compaction, ThanosMeta
        from .streamwriter import StreamBlockWriter

        ostart = np.zeros(len(oc) + 1, dtype=np.int64)
        np.cumsum(oc, out=ostart[1:])
        counts, mints, maxts, pieces = [], [], [], []
        for k in range(len(refs)):
            t, v = ot[ostart[k]:ostart[k + 1]], ov[ostart[k]:ostart[k + 1]]
            if not len(t):
                counts.append(0)
                continue
            bnd = cut_fixed(t, self.samples_per_chunk, self.chunk_range)
            counts.append(len(bnd) - 1)
            mints.append(t[bnd[:-1]])
            maxts.append(t[bnd[1:] - 1])
            pieces += [encode_xor(t[x:y], v[x:y]) for x, y in zip(bnd[:-1].tolist(), bnd[1:].tolist())]
        offs = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in pieces], out=offs[1:])
        fc = HeadChunks(refs, np.asarray(counts, dtype=np.int64), np.concatenate(mints) if mints else _EMPTY,
                        np.concatenate(maxts) if maxts else _EMPTY, offs, b"".join(pieces))
        hc = self._merge_rows(fc, oh)
        rows = np.flatnonzero(hc.counts > 0)
        lbls = self.labels(refs[rows])
        order = sorted(range(len(rows)), key=lbls.__getitem__)
        st = hc.starts
        sel = [j for i in order for j in range(int(st[rows[i]]), int(st[rows[i] + 1]))]
        data = b"".join(hc.chunk(j) for j in sel)
        lens = np.diff(hc.offsets)[sel]
        o2 = np.zeros(len(sel) + 1, dtype=np.int64)
        np.cumsum(lens, out=o2[1:])
        d = np.frombuffer(data, dtype=np.uint8)
        samples = (d[o2[:-1]].astype(np.int64) << 8) | d[o2[:-1] + 1]
        slbls = [lbls[i] for i in order]
        if thanos is not None and not isinstance(thanos, ThanosMeta):
            tm = dict(thanos)
            thanos = ThanosMeta(labels=dict(tm.pop("labels", {}) or {}),
                                downsample_resolution=int(tm.pop("resolution", tm.pop("downsample_resolution", 0))),
                                source=tm.pop("source", ""), **tm)
        uid = _ulid.new()
        w = StreamBlockWriter(output_dir, {x for ls in slbls for kv in ls for x in kv}, min_time=int(a),
                              max_time=int(a + self.chunk_range), thanos=thanos, block_ulid=uid,
                              compaction=Compaction(level=1, sources=[uid], hints=["from-out-of-order"]),
                              prometheus_stats=True, index_stats=thanos is not None)
        try:
            w.add_many(slbls, data, o2, hc.encoding[sel], hc.mint[sel], hc.maxt[sel],
                       hc.counts[rows[order]] if len(order) else _EMPTY, samples)
            meta = w.write()
        except BaseException:
            w.abort()
            raise
        return meta.ulid if meta is not None else None

    def _gc(self) -> None:
        """Drop the series left without any sample (nothing else: no chunk is before min_time)."""
        removed, blobs, boffs, _n, _actual = self._k.truncate(int(self.min_time if self.initialized else MIN_TIME))
        removed = np.frombuffer(removed, dtype=np.int64)
        if len(removed):
            self._unindex(removed, blobs, np.frombuffer(boffs, dtype=np.int64))

    # -- accounting -------------------------------------------------------------------------------
    def chunk_count(self) -> int:
        """Chunks in the head, open ones included (``prometheus_tsdb_head_chunks``)."""
        st = self.stats()
        return st["chunks"] + st["open_chunks"] + st["histogram_chunks"] + st["histogram_open_chunks"]

    def postings_stats(self, label: str = "__name__", limit: int = 10) -> dict:
        """Cardinality from the postings, as Prometheus' ``MemPostings.Stats`` (``/api/v1/status/tsdb``):
        the ``limit`` largest of series per value of ``label``, values per label name, bytes per
        label name (Thanos' build: ``(len(name) + 16 + len(value) + 16) * series``, its slicelabels
        ``SizeOfLabels``) and series per label pair; and the number of label pairs. Ties at the cut
        fall where Prometheus' map order puts them (unspecified) here too."""
        import heapq

        by = lambda kv: kv[1]  # noqa: E731
        with self._mu:
            metrics, names, sizes, pairs = [], [], [], []
            n_pairs = 0
            for n, values in self._postings.items():
                if n == "":
                    continue
                names.append((n, len(values)))
                n_pairs += len(values)
                size = 0
                for v, refs in values.items():
                    cnt = len(refs)
                    if n == label:
                        metrics.append((v, cnt))
                    pairs.append((f"{n}={v}", cnt))
                    size += (len(n.encode()) + 16 + len(v.encode()) + 16) * cnt
                sizes.append((n, size))
        top = lambda xs: [{"name": k, "value": c} for k, c in heapq.nlargest(max(limit, 0), xs, key=by)]  # noqa: E731
        return {"seriesCountByMetricName": top(metrics), "labelValueCountByLabelName": top(names),
                "memoryInBytesByLabelName": top(sizes), "seriesCountByLabelValuePair": top(pairs),
                "numLabelPairs": n_pairs}

    def stats(self) -> dict:
        """Counts and bytes held by the kernels (series, chunks, open chunk buffers, arenas; the
        native histogram side under ``histogram_*``)."""
        st = self._k.stats()
        for k, v in self._h.stats().items():
            st["histogram_" + k] = v
        return st


class HeadCollector:
    """Prometheus' head metrics (``prometheus_tsdb_head_*`` and the rejection counters, names
    and help from ``tsdb/head.go``) for several heads, one label value each (Thanos' receiver
    labels each tenant's TSDB with ``tenant``). Register with ``prometheus_client.REGISTRY``.
    ``heads`` is called at each scrape and returns ``{label value: Head}``; with ``label`` None
    (one TSDB, as Prometheus or the ruler) the metrics carry no such label and the key is ignored."""

    def __init__(self, heads, label: str | None = "tenant"):
        self.heads = heads
        self.label = label

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        lb = [self.label] if self.label is not None else []
        g = {n: GaugeMetricFamily(n, h, labels=lb) for n, h in (
            ("prometheus_tsdb_head_series", "Total number of series in the head block."),
            ("prometheus_tsdb_head_chunks", "Total number of chunks in the head block."),
            ("prometheus_tsdb_head_min_time", "Minimum time bound of the head block. The unit is decided by the "
                                              "library consumer."),
            ("prometheus_tsdb_head_max_time", "Maximum timestamp of the head block. The unit is decided by the "
                                              "library consumer."))}
        c = {n: CounterMetricFamily(n, h, labels=lb) for n, h in (
            ("prometheus_tsdb_head_series_created", "Total number of series created in the head"),
            ("prometheus_tsdb_head_series_removed", "Total number of series removed in the head"),
            ("prometheus_tsdb_head_chunks_created", "Total number of chunks created in the head"),
            ("prometheus_tsdb_head_chunks_removed", "Total number of chunks removed in the head"),
            ("prometheus_tsdb_head_truncations", "Total number of head truncations attempted."))}
        typed = {n: CounterMetricFamily(n, h, labels=[*lb, "type"]) for n, h in (
            ("prometheus_tsdb_head_samples_appended", "Total number of appended samples."),
            ("prometheus_tsdb_out_of_order_samples", "Total number of out of order samples ingestion failed attempts "
                                                     "due to out of order being disabled."),
            ("prometheus_tsdb_out_of_bound_samples", "Total number of out of bound samples ingestion failed attempts "
                                                     "with out of order support disabled."),
            ("prometheus_tsdb_too_old_samples", "Total number of out of order samples ingestion failed attempts with "
                                                "out of support enabled, but sample outside of time window."),
            ("prometheus_tsdb_head_out_of_order_samples_appended", "Total number of appended out of order samples."))}
        for name, head in sorted(self.heads().items()):
            st = head.stats()
            v = [name] if self.label is not None else []
            g["prometheus_tsdb_head_series"].add_metric(v, st["series"])
            g["prometheus_tsdb_head_chunks"].add_metric(v, st["chunks"] + st["open_chunks"] + st["histogram_chunks"]
                                                        + st["histogram_open_chunks"])
            g["prometheus_tsdb_head_min_time"].add_metric(v, head.min_time)
            g["prometheus_tsdb_head_max_time"].add_metric(v, head.max_time)
            c["prometheus_tsdb_head_series_created"].add_metric(v, st["series_created"])
            c["prometheus_tsdb_head_series_removed"].add_metric(v, st["series_removed"])
            c["prometheus_tsdb_head_chunks_created"].add_metric(v, st["chunks_created"])
            c["prometheus_tsdb_head_chunks_removed"].add_metric(v, st["chunks_removed"])
            c["prometheus_tsdb_head_truncations"].add_metric(v, head.truncations)
            typed["prometheus_tsdb_head_samples_appended"].add_metric([*v, "float"], head.samples_appended)
            typed["prometheus_tsdb_head_samples_appended"].add_metric([*v, "histogram"], head.histograms_appended)
            hr = head.hist_rejected
            typed["prometheus_tsdb_out_of_order_samples"].add_metric([*v, "histogram"], hr[OUT_OF_ORDER])
            typed["prometheus_tsdb_out_of_bound_samples"].add_metric([*v, "histogram"], hr[OUT_OF_BOUNDS])
            typed["prometheus_tsdb_too_old_samples"].add_metric([*v, "histogram"], hr[TOO_OLD])
            typed["prometheus_tsdb_out_of_order_samples"].add_metric([*v, "float"], head.out_of_order_samples)
            typed["prometheus_tsdb_out_of_bound_samples"].add_metric([*v, "float"], head.out_of_bound_samples)
            typed["prometheus_tsdb_too_old_samples"].add_metric([*v, "float"], head.too_old_samples)
            typed["prometheus_tsdb_head_out_of_order_samples_appended"].add_metric([*v, "float"],
                                                                                  head.ooo_samples_appended)
        yield from g.values()
        yield from c.values()
        yield from typed.values()
