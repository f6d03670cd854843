"""Remote-write request bodies (Prometheus remote write 1.0 and 2.0) decoded into columns.

The hot path is one C walk (``_rwdecode``) over the snappy-decoded protobuf: per series its canonical
label blob (the head's series key and the WAL Series record body), a validation status with
Prometheus' rules, Thanos' routing hash, and all samples of the request in three flat arrays. Nothing
loops in Python per series or per sample. Exemplars, native histograms and metadata are rare; they are
counted in C and decoded from their series' bytes with the upb protobuf module only when asked for.

Between receivers the same columns come from Thanos' gRPC ``thanos.WriteRequest``
(:func:`decode_thanos_write`), and go back out as remote-write 1.0 TimeSeries frames
(:func:`encode_v1_timeseries`, :func:`timeseries_frames`), both in C.

Status codes, HTTP texts and limits follow Prometheus v3.9.1 (``storage/remote/write_handler.go`` and
client_golang's ``exp/api/remote`` handler it uses) and Thanos v0.42.4 (``pkg/receive/handler.go``):

* ``Content-Encoding`` other than empty or ``snappy``: 415 (Prometheus' text).
* ``Content-Type`` not ``application/x-protobuf[;proto=<message>]`` or an unaccepted message: 415
  (Prometheus' texts); an empty one means RW 1.0.
* Snappy: block format only. The decoded-length header is checked before anything is decompressed:
  over ``max_decoded_size`` (Prometheus' 32 MiB) is 400 with Prometheus' text; over a Thanos request
  size limit (``size_bytes_limit``) is 413 "write request too large"; corrupt input is 400 with
  Thanos' "snappy decode error: s2: corrupt input".
* Malformed protobuf: 400 naming the field path and byte offset.
* The version header (``X-Prometheus-Remote-Write-Version``) is recorded, not enforced: neither
  Prometheus nor Thanos checks it.

What the receiver does with the statuses (not decided here): Prometheus 3.9.1 skips refused series
and answers 204 in RW 1.0, and in RW 2.0 keeps the good series and answers 400 with one
``series_error`` line per refused series (``"\n"``-joined), plus ``written_headers``. Thanos v0.42.4
checks labels differently (``labelpb.ValidateLabels``, a 409 conflict): an empty name or an empty
value (``STATUS_EMPTY_LABEL_NAME``, ``FLAG_EMPTY_VALUE``: "label set contains a label with empty name
or value"), a repeated name (``STATUS_DUPLICATE_LABEL``: "label set contains duplicate label names"),
unsorted labels (``FLAG_UNSORTED``: "out of order labels"); it does not require ``__name__`` nor UTF-8.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import cramjam
import numpy as np

from pythanos.remote import _rwdecode
from pythanos.remote.prompb import types_pb2, write_v2_pb2

__all__ = [
    "APP_PROTOBUF",
    "DEFAULT_MAX_DECODED_SIZE",
    "FLAG_EMPTY_VALUE",
    "FLAG_UNSORTED",
    "MESSAGE_THANOS",
    "MESSAGE_V1",
    "MESSAGE_V2",
    "STATUS_BAD_LABEL_REFS",
    "STATUS_BAD_METADATA_REFS",
    "STATUS_DUPLICATE_LABEL",
    "STATUS_EMPTY_LABEL_NAME",
    "STATUS_EMPTY_METRIC_NAME",
    "STATUS_INVALID_UTF8",
    "STATUS_NO_METRIC_NAME",
    "STATUS_NO_SAMPLES",
    "STATUS_OK",
    "DecodedWrite",
    "Exemplars",
    "HistogramSample",
    "MetricMetadata",
    "WriteDecodeError",
    "decode_blob",
    "encode_blob",
    "decode_request",
    "decode_thanos_write",
    "decode_v1",
    "decode_v2",
    "encode_v1_timeseries",
    "parse_content_type",
    "snappy_decode",
    "timeseries_frames",
    "written_headers",
]

MESSAGE_V1 = "prometheus.WriteRequest"
MESSAGE_V2 = "io.prometheus.write.v2.Request"
MESSAGE_THANOS = "thanos.WriteRequest"  # gRPC thanos.WriteableStore/RemoteWrite, receiver to receiver
APP_PROTOBUF = "application/x-protobuf"
VERSION_HEADER = "X-Prometheus-Remote-Write-Version"
# client_golang exp/api/remote: the decompressed body Prometheus' receiver accepts at most.
DEFAULT_MAX_DECODED_SIZE = 32 * 1024 * 1024

# Series status, in the order Prometheus checks (the first failing check wins).
STATUS_OK = 0
STATUS_NO_METRIC_NAME = 1  # no __name__ label
STATUS_EMPTY_LABEL_NAME = 2  # a label named ""
STATUS_INVALID_UTF8 = 3  # a name or value that is not UTF-8
STATUS_EMPTY_METRIC_NAME = 4  # __name__=""
STATUS_DUPLICATE_LABEL = 5  # a label name twice
STATUS_BAD_LABEL_REFS = 6  # RW 2.0: odd number of label refs, or a ref outside the symbols
STATUS_BAD_METADATA_REFS = 7  # RW 2.0: help or unit ref outside the symbols
STATUS_NO_SAMPLES = 8  # RW 2.0: neither samples nor histograms
# Series flags (not errors).
FLAG_UNSORTED = 1  # the sender's labels were not sorted by name (sorted here, as Prometheus 3 does)
FLAG_EMPTY_VALUE = 2  # empty-valued labels were left out of the blob (Prometheus' head drops them)

_METRIC_TYPES = ("unknown", "counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset")
_WRITTEN_HEADERS = (
    "X-Prometheus-Remote-Write-Samples-Written",
    "X-Prometheus-Remote-Write-Histograms-Written",
    "X-Prometheus-Remote-Write-Exemplars-Written",
)


class WriteDecodeError(Exception):
    """A request that cannot be decoded: the HTTP status to answer and the text to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


@dataclass
class Exemplars:
    """The exemplars of a request, as columns; ``labels`` are canonical label blobs."""

    series: np.ndarray  # int64, index of the series each belongs to
    labels: list[bytes]
    values: np.ndarray  # float64
    timestamps: np.ndarray  # int64
    errors: list[tuple[int, str]] = field(default_factory=list)  # RW 2.0: (series, Prometheus' text)


@dataclass
class HistogramSample:
    """One native histogram sample, the fields Prometheus' head and WAL keep.

    ``positive_buckets``/``negative_buckets`` are deltas (ints) for integer histograms and absolute
    counts (floats) for float histograms, as on the wire and in the WAL records.
    """

    series: int
    timestamp: int
    is_float: bool
    count: int | float
    sum: float
    schema: int
    zero_threshold: float
    zero_count: int | float
    positive_spans: list[tuple[int, int]]
    positive_buckets: list
    negative_spans: list[tuple[int, int]]
    negative_buckets: list
    reset_hint: int  # 0 unknown, 1 yes, 2 no, 3 gauge
    custom_values: list[float] = field(default_factory=list)
    start_timestamp: int = 0  # RW 2.0 only


@dataclass
class MetricMetadata:
    """Metadata of one metric family (RW 1.0) or one series (RW 2.0); type as Prometheus names it."""

    family: str
    type: str
    help: str
    unit: str


@dataclass
class DecodedWrite:
    """A decoded request. Arrays are per series (length ``n_series``) or per sample (``n_samples``).

    Series are never dropped: a refused series keeps its index and samples, and ``status`` says why,
    so the caller applies the protocol's rule (RW 1.0: skip, 2xx; RW 2.0: skip, 400 for them).
    """

    message: str  # MESSAGE_V1, MESSAGE_V2 or MESSAGE_THANOS (series in the RW 1.0 layout)
    version_header: str
    body: bytes | bytearray  # the decoded protobuf; blobs and rare-path decoding read from it
    n_series: int
    n_samples: int
    blobs: bytes
    blob_offsets: np.ndarray  # int64, n+1: series i's blob is blobs[off[i]:off[i+1]]
    status: np.ndarray  # uint8 STATUS_*
    flags: np.ndarray  # uint8 FLAG_*
    label_counts: np.ndarray  # uint32, labels as sent
    hashes: np.ndarray  # uint64, Thanos' hashring routing hash (tenant prefix included; see decode_v1)
    sample_offsets: np.ndarray  # int64, n+1: series i's samples are [off[i], off[i+1])
    sample_series: np.ndarray  # int64
    sample_ts: np.ndarray  # int64, ms
    sample_values: np.ndarray  # float64 (stale markers keep their NaN bits)
    n_exemplars: np.ndarray  # uint32
    n_histograms: np.ndarray  # uint32
    series_ranges: np.ndarray  # int64 (n, 2): offset and length of each TimeSeries in body
    sample_start_ts: np.ndarray | None = None  # RW 2.0: int64 start (created) timestamps, 0 unset
    metadata_type: np.ndarray | None = None  # RW 2.0: int32 Metadata.MetricType per series
    help_ref: np.ndarray | None = None  # RW 2.0: uint32 symbol index per series
    unit_ref: np.ndarray | None = None  # RW 2.0: uint32 symbol index per series
    symbol_ranges: np.ndarray | None = None  # RW 2.0: int64 (s, 2)
    metadata_ranges: np.ndarray | None = None  # RW 1.0: int64 (k, 2) of WriteRequest.metadata
    _symbols: list[str] | None = field(default=None, repr=False)
    #: the blobs were rewritten after decoding (receiver relabelling): forwarded series take their
    #: labels from the blobs, never from the sender's bytes
    labels_rewritten: bool = False

    @property
    def is_v2(self) -> bool:
        return self.message == MESSAGE_V2

    def blob(self, i: int) -> bytes:
        return self.blobs[self.blob_offsets[i]:self.blob_offsets[i + 1]]

    def labels(self, i: int) -> list[tuple[str, str]]:
        """Series i's canonical labels (for logs and tests; the hot path uses the blob)."""
        return decode_blob(self.blob(i))

    def symbols(self) -> list[str]:
        """RW 2.0 symbols table (bytes that are not UTF-8 kept as surrogate escapes)."""
        if self._symbols is None:
            body, rng = self.body, self.symbol_ranges
            self._symbols = [] if rng is None else [
                body[o:o + n].decode("utf-8", "surrogateescape") for o, n in rng.tolist()]
        return self._symbols

    def _fields(self, i: int) -> Iterator[tuple[int, int, object]]:
        off, n = self.series_ranges[i].tolist()
        return _walk(self.body, off, off + n, f"timeseries[{i}]")

    def _label_pairs(self, i: int) -> tuple[list[tuple[bytes, bytes]], list[int]]:
        """Series i's labels in the sender's order (RW 2.0: also its refs; [] if they do not resolve)."""
        if not self.is_v2:
            return [_label(v, f"timeseries[{i}].labels") for f, wt, v in self._fields(i) if f == 1 and wt == 2], []
        refs = [r for f, wt, v in self._fields(i) if f == 1 for r in _refs(wt, v, f"timeseries[{i}]")]
        rng, body = self.symbol_ranges, self.body
        if len(refs) % 2 or any(r >= len(rng) for r in refs):
            return [], refs
        sym = [body[o:o + n] for o, n in rng.tolist()]
        return [(sym[refs[k]], sym[refs[k + 1]]) for k in range(0, len(refs), 2)], refs

    def exemplars(self) -> Exemplars:
        """Decodes the exemplars of the series that pass the checks (rare path: only series that carry
        some are read). RW 2.0 exemplars whose label refs do not resolve are left out and named in
        ``errors`` with Prometheus' text (it answers 400 for them and keeps the rest)."""
        out = Exemplars(np.zeros(0, np.int64), [], np.zeros(0), np.zeros(0, np.int64))
        series: list[int] = []
        values: list[float] = []
        times: list[int] = []
        ok = (self.n_exemplars > 0) & (self.status == STATUS_OK)
        ex_field = 4 if self.is_v2 else 3
        for i in np.flatnonzero(ok).tolist():
            for f, wt, v in self._fields(i):
                if f != ex_field or wt != 2:
                    continue
                where = f"timeseries[{i}].exemplars"
                pairs, refs, value, ts = [], [], 0.0, 0
                for g, w, x in _walk(v, 0, len(v), where):
                    if g == 1 and not self.is_v2 and w == 2:
                        pairs.append(_label(x, where + ".labels"))
                    elif g == 1 and self.is_v2:
                        refs += _refs(w, x, where)
                    elif g == 2 and w == 1:
                        value = struct.unpack("<d", struct.pack("<Q", x))[0]
                    elif g == 3 and w == 0:
                        ts = x - (1 << 64) if x >> 63 else x
                if self.is_v2:
                    rng = self.symbol_ranges
                    why = _refs_error(refs, len(rng))
                    if why:
                        out.errors.append((i, f"parsing exemplar for series {_go_labels(self._raw_labels(i))}: {why}"))
                        continue
                    sym = [self.body[o:o + n] for o, n in rng.tolist()]
                    pairs = [(sym[refs[k]], sym[refs[k + 1]]) for k in range(0, len(refs), 2)]
                series.append(i)
                out.labels.append(_blob(pairs))
                values.append(value)
                times.append(ts)
        out.series = np.array(series, dtype=np.int64)
        out.values = np.array(values, dtype=np.float64)
        out.timestamps = np.array(times, dtype=np.int64)
        return out

    def histograms(self) -> list[HistogramSample]:
        """Decodes the native histogram samples of the series that pass the checks, in request order."""
        out: list[HistogramSample] = []
        h_field, cls = (3, write_v2_pb2.Histogram) if self.is_v2 else (4, types_pb2.Histogram)
        ok = (self.n_histograms > 0) & (self.status == STATUS_OK)
        for i in np.flatnonzero(ok).tolist():
            for f, wt, v in self._fields(i):
                if f != h_field or wt != 2:
                    continue
                try:
                    h = cls.FromString(v)
                except Exception as e:  # upb's DecodeError
                    raise WriteDecodeError(400, f"proto: timeseries[{i}].histograms: {e}") from None
                is_float = h.WhichOneof("count") == "count_float"
                if is_float:
                    count, zc = h.count_float, h.zero_count_float
                    pos, neg = list(h.positive_counts), list(h.negative_counts)
                else:
                    count, zc = h.count_int, h.zero_count_int
                    pos, neg = list(h.positive_deltas), list(h.negative_deltas)
                out.append(HistogramSample(
                    series=i, timestamp=h.timestamp, is_float=is_float, count=count, sum=h.sum, schema=h.schema,
                    zero_threshold=h.zero_threshold, zero_count=zc,
                    positive_spans=[(s.offset, s.length) for s in h.positive_spans], positive_buckets=pos,
                    negative_spans=[(s.offset, s.length) for s in h.negative_spans], negative_buckets=neg,
                    reset_hint=int(h.reset_hint), custom_values=list(h.custom_values),
                    start_timestamp=h.start_timestamp if self.is_v2 else 0))
        return out

    def metadata(self) -> list[MetricMetadata]:
        """RW 1.0: the request's metric-family metadata. RW 2.0: one entry per series with metadata
        (type, help or unit set), its family being the series' metric name."""
        out: list[MetricMetadata] = []
        if not self.is_v2:
            for off, n in (self.metadata_ranges if self.metadata_ranges is not None else ()).tolist():
                try:
                    m = types_pb2.MetricMetadata.FromString(self.body[off:off + n])
                except Exception as e:  # upb's DecodeError (it also wants UTF-8 strings)
                    raise WriteDecodeError(400, f"proto: WriteRequest.metadata: {e}") from None
                typ = _METRIC_TYPES[m.type] if 0 <= m.type < len(_METRIC_TYPES) else "unknown"
                out.append(MetricMetadata(m.metric_family_name, typ, m.help, m.unit))
            return out
        syms = self.symbols()
        has = (self.metadata_type != 0) | (self.help_ref != 0) | (self.unit_ref != 0)
        ok = self.status != STATUS_BAD_LABEL_REFS
        ok &= self.status != STATUS_BAD_METADATA_REFS
        for i in np.flatnonzero(has & ok).tolist():
            t = int(self.metadata_type[i])
            name = dict(self.labels(i)).get("__name__", "")
            out.append(MetricMetadata(name, _METRIC_TYPES[t] if 0 <= t < len(_METRIC_TYPES) else "unknown",
                                      syms[self.help_ref[i]], syms[self.unit_ref[i]]))
        return out

    def _raw_labels(self, i: int) -> list[tuple[str, str]]:
        """Series i's labels as Prometheus holds them when it checks them: sorted, empty values kept."""
        pairs = sorted(self._label_pairs(i)[0], key=lambda p: p[0])
        return [(n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in pairs]

    def series_error(self, i: int) -> str:
        """Prometheus' RW 2.0 error text for refused series i ("" for a good one)."""
        st = int(self.status[i])
        if st == STATUS_OK:
            return ""
        if st == STATUS_BAD_LABEL_REFS:
            refs = self._label_pairs(i)[1]
            return f"parsing labels for series {_go_slice(refs)}: {_refs_error(refs, len(self.symbol_ranges))}"
        ls = _go_labels(self._raw_labels(i))
        if st == STATUS_BAD_METADATA_REFS:
            return (f"parsing metadata for series {ls}: help_ref {int(self.help_ref[i])} or unit_ref "
                    f"{int(self.unit_ref[i])} outside of symbols table (size {len(self.symbols())})")
        if st == STATUS_DUPLICATE_LABEL:
            raw = self._raw_labels(i)
            dup = next(raw[k][0] for k in range(1, len(raw)) if raw[k][0] == raw[k - 1][0])
            return f"invalid labels for series, labels {ls}, duplicated label {dup}"
        if st == STATUS_NO_SAMPLES:
            return f"TimeSeries must contain at least one sample or histogram for series {ls}"
        return f"invalid metric name or labels, got {ls}"


def written_headers(samples: int, histograms: int, exemplars: int) -> dict[str, str]:
    """The response headers RW 2.0 requires (Prometheus sends them on success and on partial 4xx)."""
    return dict(zip(_WRITTEN_HEADERS, (str(samples), str(histograms), str(exemplars))))


def parse_content_type(content_type: str) -> str:
    """The protobuf message a Content-Type names, with Prometheus' 415 texts for anything else."""
    ct = content_type.strip() or APP_PROTOBUF  # strings.TrimSpace; empty means RW 1.0
    parts = ct.split(";")
    if parts[0] != APP_PROTOBUF:
        raise WriteDecodeError(415, f"expected {APP_PROTOBUF} as the first (media) part, got {ct} content-type")
    for p in parts[1:]:
        pair = p.split("=")
        if len(pair) != 2:
            raise WriteDecodeError(415, "as per https://www.rfc-editor.org/rfc/rfc9110#parameter expected parameters "
                                        f"to be key-values, got {p} in {ct} content-type")
        if pair[0] == "proto":
            if pair[1] not in (MESSAGE_V1, MESSAGE_V2):
                raise WriteDecodeError(415, f"got {ct} content type; unknown type for remote write protobuf message "
                                            f"{pair[1]}, supported: {MESSAGE_V1}, {MESSAGE_V2}")
            return pair[1]
    return MESSAGE_V1


def _snappy_header(body: bytes) -> int:
    """The decoded length a snappy block declares (s2's rules: a uvarint of at most 32 bits)."""
    v = shift = 0
    for i in range(min(len(body), 10)):
        b = body[i]
        v |= (b & 0x7F) << shift
        if b < 0x80:
            if v > 0xFFFFFFFF:
                break
            return v
        shift += 7
    raise WriteDecodeError(400, "snappy decode error: s2: corrupt input")


def snappy_decode(body: bytes, max_decoded_size: int = DEFAULT_MAX_DECODED_SIZE,
                  size_bytes_limit: int = 0) -> bytearray:
    """Snappy block decoding with the size bounds checked before any memory is taken."""
    n = _snappy_header(body)
    if n > max_decoded_size:
        raise WriteDecodeError(400, f"decoded size exceeds the {max_decoded_size} bytes limit")
    if size_bytes_limit and n > size_bytes_limit:
        raise WriteDecodeError(413, "write request too large")
    out = bytearray(n)  # decoded straight into a buffer of the declared size: no copy after
    try:
        got = cramjam.snappy.decompress_raw_into(body, out)
    except Exception:
        raise WriteDecodeError(400, "snappy decode error: s2: corrupt input") from None
    if got != n:
        raise WriteDecodeError(400, "snappy decode error: s2: corrupt input")
    return out


def _columns(message: str, version_header: str, body: bytes | bytearray, d: dict) -> DecodedWrite:
    def a(key: str, dtype) -> np.ndarray:
        return np.frombuffer(d[key], dtype=dtype)

    w = DecodedWrite(
        message=message, version_header=version_header, body=body, n_series=d["n_series"], n_samples=d["n_samples"],
        blobs=d["blobs"], blob_offsets=a("blob_offsets", np.int64), status=a("status", np.uint8),
        flags=a("flags", np.uint8), label_counts=a("label_counts", np.uint32), hashes=a("hashes", np.uint64),
        sample_offsets=a("sample_offsets", np.int64), sample_series=a("sample_series", np.int64),
        sample_ts=a("sample_ts", np.int64), sample_values=a("sample_values", np.float64),
        n_exemplars=a("n_exemplars", np.uint32), n_histograms=a("n_histograms", np.uint32),
        series_ranges=a("series_ranges", np.int64).reshape(-1, 2))
    if message == MESSAGE_V2:
        w.sample_start_ts = a("sample_start_ts", np.int64)
        w.metadata_type = a("metadata_type", np.int32)
        w.help_ref = a("help_ref", np.uint32)
        w.unit_ref = a("unit_ref", np.uint32)
        w.symbol_ranges = a("symbol_ranges", np.int64).reshape(-1, 2)
    else:
        w.metadata_ranges = a("metadata_ranges", np.int64).reshape(-1, 2)
    return w


def _max_label_bytes(n: int, max_label_bytes: int | None) -> int:
    # RW 2.0 blobs may repeat a symbol many times; RW 1.0 blobs are never larger than the body.
    return max_label_bytes if max_label_bytes is not None else min(max(64 * n, 1 << 20), 1 << 30)


def _run(fn, message: str, body: bytes | bytearray, tenant: str, version_header: str, max_label_bytes: int | None,
         hash_as_sent: bool, require_name: bool = True) -> DecodedWrite:
    try:
        d = fn(body, tenant.encode(), _max_label_bytes(len(body), max_label_bytes), hash_as_sent, require_name)
    except ValueError as e:
        raise WriteDecodeError(400, str(e)) from None
    except OverflowError as e:
        raise WriteDecodeError(413, str(e)) from None
    return _columns(message, version_header, body, d)


def decode_v1(body: bytes | bytearray, tenant: str = "", version_header: str = "0.1.0",
              max_label_bytes: int | None = None, hash_as_sent: bool = True,
              require_name: bool = True) -> DecodedWrite:
    """Decodes a snappy-decoded ``prometheus.WriteRequest``.

    ``hash_as_sent``: the routing hash over the labels in the request's order, empty values
    included, as Thanos computes it; False: over the canonical labels (sorted, no empty values), so
    a series sent unsorted routes where its sorted form does. Both agree on every series Thanos
    accepts. ``require_name``: a series without ``__name__`` is refused, as Prometheus' receiver
    refuses it; False: kept, as Thanos' receiver keeps it (a series with no label at all is refused
    either way)."""
    return _run(_rwdecode.decode_v1, MESSAGE_V1, body, tenant, version_header, max_label_bytes, hash_as_sent,
                require_name)


def decode_v2(body: bytes | bytearray, tenant: str = "", version_header: str = "2.0.0",
              max_label_bytes: int | None = None, hash_as_sent: bool = True) -> DecodedWrite:
    """Decodes a snappy-decoded ``io.prometheus.write.v2.Request`` (``hash_as_sent``: see decode_v1,
    the order being that of the label refs)."""
    return _run(_rwdecode.decode_v2, MESSAGE_V2, body, tenant, version_header, max_label_bytes, hash_as_sent)


def decode_thanos_write(body: bytes | bytearray, *, hash_as_sent: bool = True, max_label_bytes: int | None = None,
                        require_name: bool = True) -> tuple[DecodedWrite, str, int]:
    """Decodes a ``thanos.WriteRequest`` (the gRPC ``thanos.WriteableStore/RemoteWrite`` body one
    receiver sends another) into the same columns as :func:`decode_v1`, and its tenant and replica.

    The tenant prefixes the routing hashes (``hash_as_sent``: see decode_v1); the replica is as on
    the wire (0: not replicated yet, n > 0: replica n-1 placed by a router). Field 3 is the varint
    replica here and the metadata messages in ``prometheus.WriteRequest``: each decoder refuses the
    other's by its wire type, naming the field and byte. Tenant bytes that are not UTF-8 (Thanos
    does not check them) come back as surrogate escapes. ``require_name``: see decode_v1.
    Malformed input: WriteDecodeError(400)."""
    try:
        d, tenant, replica = _rwdecode.decode_thanos(body, b"", _max_label_bytes(len(body), max_label_bytes),
                                                     hash_as_sent, require_name)
    except ValueError as e:
        raise WriteDecodeError(400, str(e)) from None
    except OverflowError as e:
        raise WriteDecodeError(413, str(e)) from None
    return _columns(MESSAGE_THANOS, "", body, d), tenant.decode("utf-8", "surrogateescape"), replica


_EMPTY_I64 = np.zeros(0, np.int64)


def _positions(decoded: DecodedWrite, positions: np.ndarray | None) -> np.ndarray:
    if positions is None:
        return np.arange(decoded.n_series, dtype=np.int64)
    return np.ascontiguousarray(positions, dtype=np.int64)


def _encode(mode: int, d: DecodedWrite, positions: np.ndarray | None) -> bytes:
    c = np.ascontiguousarray
    sym = d.symbol_ranges if d.symbol_ranges is not None else _EMPTY_I64
    return _rwdecode.encode_v1(
        mode, d.body, d.blobs, c(d.blob_offsets, np.int64), c(d.sample_offsets, np.int64), c(d.sample_ts, np.int64),
        c(d.sample_values, np.float64), c(d.n_exemplars, np.uint32), c(d.n_histograms, np.uint32),
        c(d.series_ranges, np.int64), c(sym, np.int64), _positions(d, positions))


def encode_v1_timeseries(decoded: DecodedWrite, positions: np.ndarray | None = None) -> bytes:
    """The series at ``positions`` (all when None) as concatenated field-1 frames of
    ``prometheus.TimeSeries``: the ``timeseries`` of a remote-write 1.0 ``WriteRequest`` or of a
    ``thanos.WriteRequest`` (Thanos speaks RW 1.0 between receivers), encoded in one C call.

    Labels are the canonical blob's (sorted, empty values left out), samples the columns'.
    Exemplars and histograms: from an RW 1.0 (or thanos) body, copied from the series' bytes; from
    RW 2.0, exemplars with their label refs resolved through the symbols (one whose refs do not
    resolve is left out, as :meth:`DecodedWrite.exemplars` leaves it out) and histograms with the
    fields 1-16 they share with ``prometheus.Histogram`` (start_timestamp has no place there, as
    RW 2.0 metadata and sample start timestamps have none). ValueError names a position whose
    columns do not hold (never expected from our decoder)."""
    return _encode(1 if decoded.is_v2 else 0, decoded, positions)


def timeseries_frames(decoded: DecodedWrite, positions: np.ndarray | None = None) -> bytes:
    """Like :func:`encode_v1_timeseries`, cheaper for RW 1.0: the sender's TimeSeries bytes
    sliced from the body as they came (labels as sent, unknown fields kept); RW 2.0 is encoded."""
    return _encode(1 if decoded.is_v2 else 0 if decoded.labels_rewritten else 2, decoded, positions)


def decode_request(body: bytes, content_type: str, version_header: str, content_encoding: str, *,
                   tenant: str = "", max_decoded_size: int = DEFAULT_MAX_DECODED_SIZE, size_bytes_limit: int = 0,
                   accepted: tuple[str, ...] = (MESSAGE_V1, MESSAGE_V2),
                   max_label_bytes: int | None = None, hash_as_sent: bool = True,
                   v1_require_name: bool = True) -> DecodedWrite:
    """A remote-write HTTP body into columns, checked in the order Prometheus' handler checks.

    ``tenant`` prefixes the routing hash as Thanos' hashring does; ``size_bytes_limit`` is Thanos'
    per-tenant request size limit (0: none) on the compressed and the decoded size.
    ``v1_require_name``: ``require_name`` of :func:`decode_v1` (a 2.0 series always needs a name,
    as the 2.0 specification and Prometheus' receiver require).
    """
    enc = content_encoding.strip()
    if enc and enc != "snappy":
        raise WriteDecodeError(415, f"{enc} encoding (compression) is not accepted by this server; "
                                    "only snappy is acceptable")
    if size_bytes_limit and len(body) > size_bytes_limit:
        raise WriteDecodeError(413, "write request too large")
    raw = snappy_decode(body, max_decoded_size, size_bytes_limit)
    message = parse_content_type(content_type)
    if message not in accepted:
        raise WriteDecodeError(415, f"{message} protobuf message is not accepted by this server; "
                                    f"only accepts {', '.join(accepted)}")
    if message == MESSAGE_V2:
        return decode_v2(raw, tenant, version_header, max_label_bytes, hash_as_sent)
    return decode_v1(raw, tenant, version_header, max_label_bytes, hash_as_sent, v1_require_name)


# ---- the rare path: a small protobuf walker (exemplars, histograms, error texts) ----

def _walk(buf: bytes, start: int, end: int, where: str) -> Iterator[tuple[int, int, object]]:
    """The fields of one message: (number, wire type, value), value an int for varint, fixed64 and
    fixed32 (raw bits), bytes for length-delimited; groups are skipped. Checks every length."""
    pos = start

    def varint() -> int:
        nonlocal pos
        v = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise WriteDecodeError(400, f"proto: {where}: truncated or overlong varint at byte {pos}")
            b = buf[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                return v & 0xFFFFFFFFFFFFFFFF
            shift += 7

    depth = 0
    while pos < end:
        at = pos
        k = varint()
        f, wt = k >> 3, k & 7
        if f == 0 or wt > 5:
            raise WriteDecodeError(400, f"proto: {where}: illegal field key {k} at byte {at}")
        if wt == 0:
            v: object = varint()
        elif wt in (1, 5):
            w = 8 if wt == 1 else 4
            if end - pos < w:
                raise WriteDecodeError(400, f"proto: {where}: truncated fixed{w * 8} at byte {pos}")
            v = int.from_bytes(buf[pos:pos + w], "little")
            pos += w
        elif wt == 2:
            n = varint()
            if n > end - pos:
                raise WriteDecodeError(400, f"proto: {where}: length {n} exceeds the {end - pos} bytes left at byte {at}")
            v = bytes(buf[pos:pos + n])
            pos += n
        else:  # groups: nothing of ours lives in one
            depth += 1 if wt == 3 else -1
            if depth < 0:
                raise WriteDecodeError(400, f"proto: {where}: unexpected end-group at byte {at}")
            continue
        if depth == 0:
            yield f, wt, v
    if depth:
        raise WriteDecodeError(400, f"proto: {where}: unterminated group at byte {end}")


def _label(b: object, where: str) -> tuple[bytes, bytes]:
    name = value = b""
    assert isinstance(b, bytes)
    for f, wt, v in _walk(b, 0, len(b), where):
        if wt == 2 and f in (1, 2):
            assert isinstance(v, bytes)
            if f == 1:
                name = v
            else:
                value = v
    return name, value


def _refs(wt: int, v: object, where: str) -> list[int]:
    """labels_refs values of one field occurrence (packed or not), as uint32."""
    if wt == 0:
        assert isinstance(v, int)
        return [v & 0xFFFFFFFF]
    if wt == 2:
        assert isinstance(v, bytes)
        out, pos = [], 0
        while pos < len(v):
            x = shift = 0
            while True:
                if pos >= len(v) or shift > 63:
                    raise WriteDecodeError(400, f"proto: {where}.labels_refs: truncated or overlong varint")
                b = v[pos]
                pos += 1
                x |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
            out.append(x & 0xFFFFFFFF)
        return out
    raise WriteDecodeError(400, f"proto: {where}.labels_refs: wrong wire type {wt}")


def _refs_error(refs: list[int], nsym: int) -> str:
    """Prometheus' text for label refs that do not resolve ("" when they do)."""
    if len(refs) % 2:
        return f"invalid labelRefs length {len(refs)}"
    for k in range(0, len(refs), 2):
        if refs[k] >= nsym or refs[k + 1] >= nsym:
            return f"labelRefs {refs[k]} (name) = {refs[k + 1]} (value) outside of symbols table (size {nsym})"
    return ""


# ---- label blobs ----

def _uvarint(b: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        x = b[i]
        i += 1
        v |= (x & 0x7F) << shift
        if x < 0x80:
            return v, i
        shift += 7


def decode_blob(blob: bytes) -> list[tuple[str, str]]:
    """A canonical label blob back into (name, value) pairs."""
    n, i = _uvarint(blob, 0)
    out = []
    for _ in range(n):
        ln, i = _uvarint(blob, i)
        name = blob[i:i + ln].decode("utf-8", "surrogateescape")
        i += ln
        lv, i = _uvarint(blob, i)
        out.append((name, blob[i:i + lv].decode("utf-8", "surrogateescape")))
        i += lv
    return out


def _put_uvarint(out: bytearray, v: int) -> None:
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def encode_blob(pairs: list[tuple[str, str]]) -> bytes:
    """The canonical blob of a label set: sorted by name, empty values left out (rare path only)."""
    return _blob([(n.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")) for n, v in pairs])


def _blob(pairs: list[tuple[bytes, bytes]]) -> bytes:
    enc = sorted(((n, v) for n, v in pairs if v), key=lambda p: p[0])
    out = bytearray()
    _put_uvarint(out, len(enc))
    for n, v in enc:
        _put_uvarint(out, len(n))
        out += n
        _put_uvarint(out, len(v))
        out += v
    return bytes(out)


# ---- Go-formatted texts for error messages ----

_GO_ESC = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v", 34: '\\"', 92: "\\\\"}


def _go_quote(s: str) -> str:
    """Go's strconv.Quote (invalid UTF-8 bytes as \\x.., non-printable runes as \\u....)."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o in _GO_ESC:
            out.append(_GO_ESC[o])
        elif ch == " " or ch.isprintable():
            out.append(ch)
        elif o < 0x80:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def _legacy_name(s: str) -> bool:
    return bool(s) and (s[0].isascii() and (s[0].isalpha() or s[0] == "_")) and all(
        c.isascii() and (c.isalnum() or c == "_") for c in s)


def _go_labels(pairs: list[tuple[str, str]]) -> str:
    """Prometheus' Labels.String()."""
    return "{" + ", ".join(f"{n if _legacy_name(n) else _go_quote(n)}={_go_quote(v)}" for n, v in pairs) + "}"


def _go_slice(v: list[int]) -> str:
    return "[" + " ".join(str(x) for x in v) + "]"

