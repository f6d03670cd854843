"""Record bodies of Prometheus' write-ahead log (``tsdb/record/record.go``), encoded and decoded
on whole arrays by the ``_wal`` kernel so replay and append never loop in Python per sample.

Every record starts with its type byte. Series records carry the canonical label blob (uvarint
label count, then uvarint-length-prefixed name and value of each label, sorted by name): the
head's series key, copied as-is. Samples-like records (samples, exemplars, histograms) hold the
first sample's ref and timestamp (BE64) and then per sample zigzag varint deltas against that
FIRST sample (not the previous one). Decoders name the record type and the offset of a fault.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence, Union

import numpy as np

Ints = Union[np.ndarray, Sequence[int]]
Floats = Union[np.ndarray, Sequence[float]]

from . import _wal

SERIES = 1
SAMPLES = 2
TOMBSTONES = 3
EXEMPLARS = 4
MMAP_MARKERS = 5
METADATA = 6
HISTOGRAM_SAMPLES = 7
FLOAT_HISTOGRAM_SAMPLES = 8
CUSTOM_BUCKETS_HISTOGRAM_SAMPLES = 9
CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES = 10
UNKNOWN = 255

TYPE_NAMES = {
    SERIES: "series",
    SAMPLES: "samples",
    TOMBSTONES: "tombstones",
    EXEMPLARS: "exemplars",
    MMAP_MARKERS: "mmapmarkers",
    METADATA: "metadata",
    HISTOGRAM_SAMPLES: "histogram_samples",
    FLOAT_HISTOGRAM_SAMPLES: "float_histogram_samples",
    CUSTOM_BUCKETS_HISTOGRAM_SAMPLES: "custom_buckets_histogram_samples",
    CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES: "custom_buckets_float_histogram_samples",
}

CUSTOM_BUCKETS_SCHEMA = -53

# Metric types of Metadata records (record.MetricType).
METRIC_TYPES = ("unknown", "counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset")


class WALRecordError(ValueError):
    """A record body is malformed: names the record type, the offset inside the record and what."""

    def __init__(self, rtype: int, offset: int, what: str) -> None:
        self.rtype = rtype
        self.offset = offset
        self.what = what
        super().__init__(rtype, offset, what)

    def __str__(self) -> str:
        return f"{TYPE_NAMES.get(self.rtype, f'type {self.rtype}')} record: {self.what} at offset {self.offset}"


def record_type(rec: bytes) -> int:
    """The record's type (UNKNOWN for an empty record or a type Prometheus v3.9 does not know)."""
    if not rec:
        return UNKNOWN
    t = rec[0]
    return t if t in TYPE_NAMES else UNKNOWN


def _check(rec: bytes, *want: int) -> int:
    if not rec:
        raise WALRecordError(want[0], 0, "empty record")
    if rec[0] not in want:
        raise WALRecordError(want[0], 0, f"invalid record type {rec[0]}")
    return rec[0]


def _kernel_error(rtype: int, e: ValueError) -> WALRecordError:
    if len(e.args) == 2 and isinstance(e.args[1], int):
        return WALRecordError(rtype, e.args[1], str(e.args[0]))
    return WALRecordError(rtype, 0, str(e))


# ---------------------------------------------------------------------------- label blobs


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def labels_to_blob(labels: Iterable[tuple[str, str]]) -> bytes:
    """The canonical label blob of a label set (sorted by name here)."""
    pairs = sorted(labels)
    parts = [_uvarint(len(pairs))]
    for name, value in pairs:
        n = name.encode("utf-8", "surrogateescape")
        v = value.encode("utf-8", "surrogateescape")
        parts += [_uvarint(len(n)), n, _uvarint(len(v)), v]
    return b"".join(parts)


def blob_to_labels(blob: bytes) -> tuple[tuple[str, str], ...]:
    """The (name, value) pairs of a label blob, in the blob's order."""
    try:
        return _wal.blob_labels(blob)
    except ValueError as e:
        raise _kernel_error(SERIES, e) from None


# ---------------------------------------------------------------------------- series


def encode_series(refs: Ints, blobs: Sequence[bytes]) -> bytes:
    """A Series record: each ref (BE64) followed by its label blob."""
    return _wal.encode_series(_i64(refs), blobs)


def decode_series(rec: bytes) -> tuple[np.ndarray, list[bytes]]:
    """(refs as uint64, label blobs) of a Series record."""
    _check(rec, SERIES)
    try:
        refs, blobs = _wal.decode_series(rec)
    except ValueError as e:
        raise _kernel_error(SERIES, e) from None
    return np.frombuffer(refs, dtype=np.uint64), blobs


# ---------------------------------------------------------------------------- samples, exemplars


def _i64(a: Ints) -> np.ndarray:
    """64-bit integers as int64 bits (uint64 refs above 2**63 keep their bits)."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.array(a, dtype=np.int64)
        except OverflowError:
            a = np.array(a, dtype=np.uint64)
    if a.dtype == np.uint64:
        a = a.view(np.int64)
    return np.ascontiguousarray(a, dtype=np.int64)


def encode_samples(refs: Ints, ts: Ints, vs: Floats) -> bytes:
    """A Samples record (V1) of parallel arrays: refs (int64/uint64), timestamps (ms), values."""
    return _wal.encode_samples(SAMPLES, _i64(refs), _i64(ts), np.ascontiguousarray(vs, dtype=np.float64), None)


def decode_samples(rec: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(refs uint64, timestamps int64, values float64) of a Samples record."""
    _check(rec, SAMPLES)
    try:
        r, t, v, _ = _wal.decode_samples(rec, False)
    except ValueError as e:
        raise _kernel_error(SAMPLES, e) from None
    return np.frombuffer(r, dtype=np.uint64), np.frombuffer(t, dtype=np.int64), np.frombuffer(v, dtype=np.float64)


def decode_samples_many(recs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(refs, timestamps, values, per-record counts) of many Samples records in one kernel call:
    replay of a WAL of small commits without a Python step per record. An error names the
    record's index in recs and the offset in it."""
    try:
        r, t, v, c = _wal.decode_samples_many(recs)
    except ValueError as e:
        if len(e.args) == 3:
            raise WALRecordError(SAMPLES, e.args[1], f"{e.args[0]} (record {e.args[2]} of the batch)") from None
        raise
    return (np.frombuffer(r, dtype=np.uint64), np.frombuffer(t, dtype=np.int64),
            np.frombuffer(v, dtype=np.float64), np.frombuffer(c, dtype=np.int64))


def encode_exemplars(refs: Ints, ts: Ints, vs: Floats, blobs: Sequence[bytes]) -> bytes:
    """An Exemplars record: as samples, each followed by the exemplar's label blob."""
    return _wal.encode_samples(EXEMPLARS, _i64(refs), _i64(ts), np.ascontiguousarray(vs, dtype=np.float64), list(blobs))


def decode_exemplars(rec: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[bytes]]:
    """(refs, timestamps, values, label blobs) of an Exemplars record."""
    _check(rec, EXEMPLARS)
    try:
        r, t, v, b = _wal.decode_samples(rec, True)
    except ValueError as e:
        raise _kernel_error(EXEMPLARS, e) from None
    return (np.frombuffer(r, dtype=np.uint64), np.frombuffer(t, dtype=np.int64),
            np.frombuffer(v, dtype=np.float64), b)


# ---------------------------------------------------------------------------- histograms


class Histogram(NamedTuple):
    """One histogram sample of a WAL record. Integer histograms: zero_count/count ints and
    buckets as deltas (ints); float histograms: floats and absolute bucket counts. Spans are
    (offset, length) pairs; custom_values only for schema -53 (None otherwise)."""

    ref: int
    t: int
    counter_reset_hint: int
    schema: int
    zero_threshold: float
    zero_count: int | float
    count: int | float
    sum: float
    positive_spans: tuple[tuple[int, int], ...]
    negative_spans: tuple[tuple[int, int], ...]
    positive_buckets: tuple
    negative_buckets: tuple
    custom_values: tuple[float, ...] | None


_FLOAT_TYPES = (FLOAT_HISTOGRAM_SAMPLES, CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES)
_HIST_TYPES = (HISTOGRAM_SAMPLES, CUSTOM_BUCKETS_HISTOGRAM_SAMPLES) + _FLOAT_TYPES


def decode_histograms(rec: bytes) -> list[Histogram]:
    """The histograms of a (float / custom-bucket) histogram samples record, types 7-10."""
    t = _check(rec, *_HIST_TYPES)
    try:
        items = _wal.decode_histograms(rec, t in _FLOAT_TYPES)
    except ValueError as e:
        raise _kernel_error(t, e) from None
    return list(map(Histogram._make, items))


def encode_histograms(rtype: int, hs: Sequence[Histogram | tuple]) -> bytes:
    """A histogram samples record of type rtype (7-10) holding hs as given. Prometheus puts
    custom-bucket (schema -53) histograms in types 9/10 and the others in 7/8."""
    if rtype not in _HIST_TYPES:
        raise ValueError(f"not a histogram record type: {rtype}")
    return _wal.encode_histograms(rtype, rtype in _FLOAT_TYPES, hs)


# ---------------------------------------------------------------------------- rarer records


class _Reader:
    """Bounded reads over one record (tombstones, metadata, mmap markers are rare and small)."""

    __slots__ = ("b", "p", "rtype")

    def __init__(self, b: bytes, rtype: int) -> None:
        self.b, self.p, self.rtype = b, 1, rtype

    def fail(self, what: str) -> WALRecordError:
        return WALRecordError(self.rtype, self.p, what)

    def left(self) -> int:
        return len(self.b) - self.p

    def be64(self) -> int:
        if self.left() < 8:
            raise self.fail("unexpected end of record")
        v = int.from_bytes(self.b[self.p:self.p + 8], "big")
        self.p += 8
        return v

    def byte(self) -> int:
        if self.left() < 1:
            raise self.fail("unexpected end of record")
        self.p += 1
        return self.b[self.p - 1]

    def uvarint(self) -> int:
        x, s, start = 0, 0, self.p
        for i in range(10):
            if self.p >= len(self.b):
                self.p = start
                raise self.fail("unexpected end of record in varint")
            c = self.b[self.p]
            self.p += 1
            if c < 0x80:
                if i == 9 and c > 1:
                    self.p = start
                    raise self.fail("varint overflows 64 bits")
                return x | (c << s)
            x |= (c & 0x7F) << s
            s += 7
        self.p = start
        raise self.fail("varint overflows 64 bits")

    def varint(self) -> int:
        u = self.uvarint()
        return (u >> 1) ^ -(u & 1)

    def string(self) -> bytes:
        n = self.uvarint()
        if n > self.left():
            raise self.fail("string past the end of the record")
        self.p += n
        return self.b[self.p - n:self.p]


def _zz(x: int) -> bytes:
    return _uvarint(((x << 1) ^ (x >> 63)) & 0xFFFFFFFFFFFFFFFF)


def encode_tombstones(refs: Ints, mints: Ints, maxts: Ints) -> bytes:
    """A Tombstones record: per interval ref (BE64), mint and maxt (varints)."""
    out = [bytes([TOMBSTONES])]
    for r, a, b in zip(_i64(refs).tolist(), _i64(mints).tolist(), _i64(maxts).tolist()):
        out += [(int(r) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big"), _zz(int(a)), _zz(int(b))]
    return b"".join(out)


def decode_tombstones(rec: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(refs uint64, mints, maxts) of a Tombstones record, one entry per interval."""
    _check(rec, TOMBSTONES)
    r = _Reader(rec, TOMBSTONES)
    refs, mints, maxts = [], [], []
    while r.left():
        refs.append(r.be64())
        mints.append(r.varint())
        maxts.append(r.varint())
    return np.array(refs, dtype=np.uint64), np.array(mints, dtype=np.int64), np.array(maxts, dtype=np.int64)


class Metadata(NamedTuple):
    """A series' metadata: metric type (record.MetricType number), unit and help."""

    ref: int
    type: int
    unit: str
    help: str


def encode_metadata(ms: Sequence[Metadata | tuple]) -> bytes:
    """A Metadata record: ref (uvarint), type byte, field count 2, "UNIT" unit, "HELP" help."""
    out = [bytes([METADATA])]
    for ref, typ, unit, help_ in ms:
        u = unit.encode("utf-8", "surrogateescape")
        h = help_.encode("utf-8", "surrogateescape")
        out += [_uvarint(int(ref)), bytes([typ]), b"\x02\x04UNIT", _uvarint(len(u)), u, b"\x04HELP", _uvarint(len(h)), h]
    return b"".join(out)


def decode_metadata(rec: bytes) -> list[Metadata]:
    """The entries of a Metadata record; fields other than UNIT and HELP are skipped."""
    _check(rec, METADATA)
    r = _Reader(rec, METADATA)
    out = []
    while r.left():
        ref = r.uvarint()
        typ = r.byte()
        n = r.uvarint()
        if n > r.left() // 2:
            raise r.fail("field count larger than the record")
        unit = help_ = b""
        for _ in range(n):
            name, value = r.string(), r.string()
            if name == b"UNIT":
                unit = value
            elif name == b"HELP":
                help_ = value
        out.append(Metadata(ref, typ, unit.decode("utf-8", "surrogateescape"),
                            help_.decode("utf-8", "surrogateescape")))
    return out


def encode_mmap_markers(refs: Ints, mmap_refs: Ints) -> bytes:
    """An MmapMarkers record (WBL): per series ref and chunk ref, both BE64."""
    a = np.empty((len(refs), 2), dtype=">u8")
    a[:, 0] = _i64(refs).view(np.uint64)
    a[:, 1] = _i64(mmap_refs).view(np.uint64)
    return bytes([MMAP_MARKERS]) + a.tobytes()


def decode_mmap_markers(rec: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(series refs, chunk refs) of an MmapMarkers record."""
    _check(rec, MMAP_MARKERS)
    if (len(rec) - 1) % 16:
        raise WALRecordError(MMAP_MARKERS, len(rec) - (len(rec) - 1) % 16, "unexpected bytes left in record")
    a = np.frombuffer(rec, dtype=">u8", offset=1).reshape(-1, 2).astype(np.uint64)
    return a[:, 0].copy(), a[:, 1].copy()


_DECODERS = {
    SERIES: decode_series,
    SAMPLES: decode_samples,
    TOMBSTONES: decode_tombstones,
    EXEMPLARS: decode_exemplars,
    MMAP_MARKERS: decode_mmap_markers,
    METADATA: decode_metadata,
    HISTOGRAM_SAMPLES: decode_histograms,
    FLOAT_HISTOGRAM_SAMPLES: decode_histograms,
    CUSTOM_BUCKETS_HISTOGRAM_SAMPLES: decode_histograms,
    CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES: decode_histograms,
}


def decode(rec: bytes) -> tuple[int, object]:
    """(type, decoded body) of any record, as the type's decoder gives it; (UNKNOWN, None) for a
    type this Prometheus version does not know (replay skips those, as Prometheus does)."""
    t = record_type(rec)
    dec = _DECODERS.get(t)
    return (t, dec(rec)) if dec else (UNKNOWN, None)
