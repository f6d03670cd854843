"""Remote-write request decoding (``pythanos.remote.write``): RW 1.0 and 2.0 bodies into columns.

Checked against the upb protobuf module (messages built and parsed with our ``prompb`` modules), a
model of Prometheus v3.9.1's receiver checks written here from its rules, the ``xxhash`` package for
Thanos' routing hash, and a real Prometheus 3.9.1 remote-writing to a server in the test.
"""
from __future__ import annotations

import http.server
import math
import struct
import threading
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable

import cramjam
import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pythanos.remote import _rwdecode
from pythanos.remote.prompb import remote_pb2, types_pb2, write_v2_pb2
from pythanos.remote.write import (
    DEFAULT_MAX_DECODED_SIZE,
    FLAG_EMPTY_VALUE,
    FLAG_UNSORTED,
    MESSAGE_V1,
    MESSAGE_V2,
    STATUS_BAD_LABEL_REFS,
    STATUS_BAD_METADATA_REFS,
    STATUS_DUPLICATE_LABEL,
    STATUS_EMPTY_LABEL_NAME,
    STATUS_EMPTY_METRIC_NAME,
    STATUS_INVALID_UTF8,
    STATUS_NO_METRIC_NAME,
    STATUS_NO_SAMPLES,
    STATUS_OK,
    WriteDecodeError,
    decode_blob,
    decode_request,
    decode_v1,
    decode_v2,
    written_headers,
)

CT_V2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


# ------------------------------------------------------------------------------------------ model

def _uvarint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def model_series(pairs: list[tuple[bytes, bytes]], tenant: bytes = b"") -> tuple[bytes, int, int, int]:
    """What Prometheus' receiver makes of one label set, written from its rules: (blob, status, flags, hash).

    Labels sorted by name (stable); refused when there is no __name__, a name is empty or not UTF-8, a
    value is not UTF-8, __name__ is empty, or a name repeats (checked in that order); empty values are
    left out of what is stored. Thanos' hash: xxHash64 of tenant 0xff (name 0xff value 0xff)*.
    """
    s = sorted(pairs, key=lambda p: p[0])
    flags = FLAG_UNSORTED if [p[0] for p in s] != [p[0] for p in pairs] else 0

    def utf8(b: bytes) -> bool:
        try:
            b.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    names = [n for n, _ in s]
    if b"__name__" not in names:
        status = STATUS_NO_METRIC_NAME
    elif b"" in names:
        status = STATUS_EMPTY_LABEL_NAME
    elif not all(utf8(n) and utf8(v) for n, v in s):
        status = STATUS_INVALID_UTF8
    elif any(n == b"__name__" and v == b"" for n, v in s):
        status = STATUS_EMPTY_METRIC_NAME
    elif len(set(names)) != len(names):
        status = STATUS_DUPLICATE_LABEL
    else:
        status = STATUS_OK
    kept = [(n, v) for n, v in s if v]
    if len(kept) != len(s):
        flags |= FLAG_EMPTY_VALUE
    blob = _uvarint(len(kept)) + b"".join(_uvarint(len(n)) + n + _uvarint(len(v)) + v for n, v in kept)
    h = xxhash.xxh64(tenant + b"\xff" + b"".join(n + b"\xff" + v + b"\xff" for n, v in kept)).intdigest()
    return blob, status, flags, h


def thanos_hash(pairs: list[tuple[bytes, bytes]], tenant: bytes = b"") -> int:
    """labelpb.HashWithPrefix on the labels as the request carries them (all of them)."""
    return xxhash.xxh64(tenant + b"\xff" + b"".join(n + b"\xff" + v + b"\xff" for n, v in pairs)).intdigest()


def check_against_model(d, expect: list[tuple[list[tuple[bytes, bytes]], list[tuple[int, float]]]],
                        tenant: bytes = b"", canonical_hash: bool = False) -> None:
    assert d.n_series == len(expect)
    assert d.n_samples == sum(len(s) for _, s in expect)
    for i, (pairs, samples) in enumerate(expect):
        blob, status, flags, h = model_series(pairs, tenant)
        assert d.blob(i) == blob, i
        assert d.status[i] == status, (i, pairs)
        assert d.flags[i] == flags, (i, pairs)
        assert d.hashes[i] == (h if canonical_hash else thanos_hash(pairs, tenant)), i
        assert d.label_counts[i] == len(pairs)
        lo, hi = d.sample_offsets[i], d.sample_offsets[i + 1]
        assert (d.sample_series[lo:hi] == i).all()
        assert d.sample_ts[lo:hi].tolist() == [t for t, _ in samples]
        got = d.sample_values[lo:hi].view(np.uint64).tolist()
        assert got == [struct.unpack("<Q", struct.pack("<d", v))[0] for _, v in samples]


# ------------------------------------------------------------------------------------------ builders

def v1_request(series: Iterable[tuple[list[tuple[str, str]], list[tuple[int, float]]]]) -> bytes:
    wr = remote_pb2.WriteRequest()
    for labels, samples in series:
        ts = wr.timeseries.add()
        for n, v in labels:
            ts.labels.add(name=n, value=v)
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
    return wr.SerializeToString()


def v2_request(series, extra_symbols: Iterable[str] = ()) -> tuple[bytes, list[str]]:
    """series: (labels, samples, metadata (type, help, unit) or None)."""
    syms: dict[str, int] = {"": 0}

    def ref(s: str) -> int:
        return syms.setdefault(s, len(syms))

    for s in extra_symbols:
        ref(s)
    r = write_v2_pb2.Request()
    for labels, samples, meta in series:
        ts = r.timeseries.add()
        for n, v in labels:
            ts.labels_refs.extend([ref(n), ref(v)])
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
        if meta:
            ts.metadata.type, ts.metadata.help_ref, ts.metadata.unit_ref = meta[0], ref(meta[1]), ref(meta[2])
    r.symbols.extend(syms)
    return r.SerializeToString(), list(syms)


def key(field: int, wt: int) -> bytes:
    return _uvarint(field << 3 | wt)


def ld(field: int, payload: bytes) -> bytes:
    return key(field, 2) + _uvarint(len(payload)) + payload


def raw_label(name: bytes, value: bytes) -> bytes:
    return ld(1, ld(1, name) + ld(2, value))


def raw_sample(ts: int, v: float) -> bytes:
    return ld(2, key(1, 1) + struct.pack("<d", v) + key(2, 0) + _uvarint(ts & (1 << 64) - 1))


def snappy(b: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(b))


# ------------------------------------------------------------------------------------------ hashing

def test_xxh64_matches_the_xxhash_package():
    rng = np.random.default_rng(1)
    for n in [*range(0, 100), 255, 256, 1000, 4096, 65537]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert _rwdecode.xxh64(data) == xxhash.xxh64(data).intdigest(), n


# Thanos v0.42.4 itself, for the routing hash: these vectors were printed by a throwaway Go program
# (not kept: a main package in a temporary module requiring github.com/thanos-io/thanos v0.42.4 from the
# module proxy, `go mod tidy && go run .`) that built []labelpb.ZLabel from each case below and printed
# labelpb.HashWithPrefix(tenant, labels), the function pkg/receive/hashring.go routes with (hashmod and
# ketama alike). The labels are sorted, as Thanos requires of what it accepts.
THANOS_VECTORS = [
    ("", [("__name__", "up")], 6681356656659525901),
    ("default-tenant", [("__name__", "up"), ("instance", "localhost:9090"), ("job", "prometheus")],
     14662100480556636236),
    ("t", [("__name__", "x" * 600), ("a", "b" * 500)], 3496907708496368814),  # over Thanos' 1 KiB fast path
    ("tenant-ü", [("__name__", "héllo"), ("zz", "日本")], 17112630591776311110),
]


def test_routing_hash_matches_thanos():
    for tenant, labels, want in THANOS_VECTORS:
        body = v1_request([(labels, [(1, 1.0)])])
        d = decode_v1(body, tenant=tenant)
        ref = xxhash.xxh64(tenant.encode() + b"\xff" + b"".join(
            n.encode() + b"\xff" + v.encode() + b"\xff" for n, v in labels)).intdigest()
        assert int(d.hashes[0]) == ref == want
        body2, _ = v2_request([(labels, [(1, 1.0)], None)])
        assert int(decode_v2(body2, tenant=tenant).hashes[0]) == ref


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=6),
                          st.just([(1, 1.0)])), max_size=8), st.text(max_size=5))
def test_routing_hash_is_the_hashrings(series, tenant):
    from pythanos.receive.hashring import series_hashes  # the receiver routes with these values

    d = decode_v1(v1_request(series), tenant=tenant)
    assert d.hashes.tolist() == series_hashes(tenant, [ls for ls, _ in series]).tolist()


# ------------------------------------------------------------------------------------------ RW 1.0

NAMES = st.sampled_from(["__name__", "job", "instance", "a", "b", "", "é", "zz", "A", "_x"])
VALUES = st.sampled_from(["up", "", "1", "prometheus", "日本", "x" * 40, "a\"b\\c\n"])
LABELS = st.lists(st.tuples(NAMES, VALUES), max_size=8)
FLOATS = st.one_of(st.floats(allow_nan=True), st.just(STALE_NAN))
SAMPLES = st.lists(st.tuples(st.integers(-2**63, 2**63 - 1), FLOATS), max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(LABELS, SAMPLES), max_size=12), st.text(max_size=8))
def test_v1_roundtrip(series, tenant):
    body = v1_request(series)
    want = [([(n.encode(), v.encode()) for n, v in ls], ss) for ls, ss in series]
    check_against_model(decode_v1(body, tenant=tenant), want, tenant.encode())
    check_against_model(decode_v1(body, tenant=tenant, hash_as_sent=False), want, tenant.encode(), canonical_hash=True)
    d = decode_v1(body, tenant=tenant)
    # what upb sees, series for series
    wr = remote_pb2.WriteRequest.FromString(body)
    assert d.n_series == len(wr.timeseries)
    for i, ts in enumerate(wr.timeseries):
        want = sorted(((lb.name, lb.value) for lb in ts.labels if lb.value), key=lambda p: p[0].encode())
        if len({lb.name for lb in ts.labels}) == len(ts.labels):
            assert d.labels(i) == want


def test_v1_labels_sorted_and_flagged_when_sent_unsorted():
    d = decode_v1(v1_request([([("job", "a"), ("__name__", "up"), ("empty", ""), ("b", "c")], [(5, 1.0)])]))
    assert d.labels(0) == [("__name__", "up"), ("b", "c"), ("job", "a")]
    assert d.flags[0] == FLAG_UNSORTED | FLAG_EMPTY_VALUE and d.status[0] == STATUS_OK
    assert d.label_counts[0] == 4
    # routing: Thanos hashes what was sent; the canonical choice routes it where its sorted form goes
    sent = [(b"job", b"a"), (b"__name__", b"up"), (b"empty", b""), (b"b", b"c")]
    assert int(d.hashes[0]) == thanos_hash(sent)
    sorted_form = decode_v1(v1_request([([("__name__", "up"), ("b", "c"), ("job", "a")], [(5, 1.0)])]))
    assert int(sorted_form.hashes[0]) != int(d.hashes[0])
    canon = decode_v1(v1_request([([("job", "a"), ("__name__", "up"), ("empty", ""), ("b", "c")], [(5, 1.0)])]),
                      hash_as_sent=False)
    assert int(canon.hashes[0]) == int(sorted_form.hashes[0])


def test_blobs_are_the_heads_series_keys():
    from pythanos.tsdb.head import blob_from_labels  # the head keys series by the same bytes

    sets = [[("job", "a"), ("__name__", "up"), ("ü", "日本")], [("__name__", "x"), ("e", "")], [("__name__", "y")]]
    for d in (decode_v1(v1_request([(ls, [(1, 1.0)]) for ls in sets])),
              decode_v2(v2_request([(ls, [(1, 1.0)], None) for ls in sets])[0])):
        assert [d.blob(i) for i in range(3)] == [blob_from_labels([p for p in ls if p[1]]) for ls in sets]


def test_v1_statuses():
    cases = [
        ([("job", "a")], STATUS_NO_METRIC_NAME),
        ([("__name__", "up"), ("", "x")], STATUS_EMPTY_LABEL_NAME),
        ([("__name__", "")], STATUS_EMPTY_METRIC_NAME),
        ([("__name__", "up"), ("a", "1"), ("a", "2")], STATUS_DUPLICATE_LABEL),
        ([("__name__", "up"), ("a", ""), ("a", "2")], STATUS_DUPLICATE_LABEL),  # checked before empties go
        ([("__name__", "up"), ("a", "1")], STATUS_OK),
        ([("__name__", "up"), ("ünicode", "ok")], STATUS_OK),  # names need only be UTF-8 in Prometheus 3
        ([], STATUS_NO_METRIC_NAME),
    ]
    d = decode_v1(v1_request([(ls, [(1, 1.0)]) for ls, _ in cases]))
    assert d.status.tolist() == [s for _, s in cases]


def test_v1_and_thanos_write_without_require_name_keep_nameless_series():
    """Thanos' receiver stores a series without __name__; only a series with no label left is refused."""
    cases = [
        ([("job", "a")], STATUS_OK),
        ([("job", "a"), ("", "x")], STATUS_EMPTY_LABEL_NAME),
        ([("job", "a"), ("job", "b")], STATUS_DUPLICATE_LABEL),
        ([("job", "")], STATUS_NO_METRIC_NAME),  # nothing left to store
        ([], STATUS_NO_METRIC_NAME),
        ([("__name__", "up")], STATUS_OK),
    ]
    body = v1_request([(ls, [(1, 1.0)]) for ls, _ in cases])
    assert decode_v1(body, require_name=False).status.tolist() == [s for _, s in cases]
    assert decode_v1(body).status.tolist()[0] == STATUS_NO_METRIC_NAME


def test_v1_invalid_utf8_refused():
    for name, value in [(b"a\xff", b"x"), (b"a", b"\xc0\x80"), (b"a", b"\xed\xa0\x80"), (b"a", b"\xf4\x90\x80\x80"),
                        (b"a", b"\xe2\x82")]:
        ts = raw_label(b"__name__", b"up") + raw_label(name, value) + raw_sample(1, 1.0)
        d = decode_v1(ld(1, ts))
        assert d.status.tolist() == [STATUS_INVALID_UTF8], (name, value)
    ok = ld(1, raw_label(b"__name__", b"up") + raw_label(b"a", "€𝄞é".encode()) + raw_sample(1, 1.0))
    assert decode_v1(ok).status.tolist() == [STATUS_OK]


def test_v1_nan_and_stale_bits_kept_and_many_samples():
    rng = np.random.default_rng(7)
    n = 100_000
    ts = np.sort(rng.integers(0, 2**40, n))
    vals = rng.standard_normal(n)
    vals[::7] = STALE_NAN
    vals[3::11] = math.nan
    vals[5::13] = math.inf
    series = [([("__name__", "m"), ("i", str(k))], list(zip(ts[k::1000].tolist(), vals[k::1000].tolist())))
              for k in range(1000)]
    body = v1_request(series)
    d = decode_v1(body)
    check_against_model(d, [([(a.encode(), b.encode()) for a, b in ls], ss) for ls, ss in series])
    stale = d.sample_values.view(np.uint64) == 0x7FF0000000000002
    assert stale.sum() == sum(1 for _, ss in series for _, v in ss
                              if struct.pack("<d", v) == struct.pack("<d", STALE_NAN))


def test_v1_unknown_fields_skipped():
    ts = (raw_label(b"__name__", b"up")
          + key(9, 0) + _uvarint(300)                      # unknown varint
          + key(10, 5) + b"\x00\x00\x80\x3f"                # unknown fixed32
          + key(11, 1) + b"\x00" * 8                        # unknown fixed64
          + key(12, 3) + key(1, 0) + b"\x01" + key(2, 3) + key(2, 4) + key(12, 4)  # a nested group
          + ld(13, b"whatever")
          + ld(2, key(7, 0) + b"\x05" + key(1, 1) + struct.pack("<d", 2.5) + key(2, 0) + b"\x0a"))
    body = ld(2, b"reserved by Cortex") + ld(1, ts) + key(15, 0) + b"\x01"
    d = decode_v1(body)
    assert d.labels(0) == [("__name__", "up")] and d.sample_ts.tolist() == [10] and d.sample_values.tolist() == [2.5]


def test_v1_repeated_scalar_last_wins_and_defaults():
    sample = ld(2, key(2, 0) + b"\x01" + key(2, 0) + b"\x02")  # no value: 0.0; timestamp twice: last wins
    label = ld(1, ld(1, b"x") + ld(1, b"__name__") + ld(2, b"up"))
    d = decode_v1(ld(1, label + sample))
    assert d.labels(0) == [("__name__", "up")] and d.sample_ts.tolist() == [2] and d.sample_values.tolist() == [0.0]


def test_v1_negative_timestamps_and_empty_request():
    d = decode_v1(v1_request([([("__name__", "a")], [(-5, 1.0)])]))
    assert d.sample_ts.tolist() == [-5]
    e = decode_v1(b"")
    assert e.n_series == 0 and e.n_samples == 0 and e.blob_offsets.tolist() == [0]


def test_v1_exemplars_histograms_metadata():
    wr = remote_pb2.WriteRequest()
    ts = wr.timeseries.add()
    ts.labels.add(name="__name__", value="h")
    ex = ts.exemplars.add(value=0.5, timestamp=99)
    ex.labels.add(name="trace_id", value="abc")
    ex.labels.add(name="empty", value="")
    hi = ts.histograms.add(count_int=10, sum=12.5, schema=3, zero_threshold=1e-128, zero_count_int=2,
                           positive_deltas=[1, 2, -1], negative_deltas=[3], reset_hint=types_pb2.Histogram.NO,
                           timestamp=1000)
    hi.positive_spans.add(offset=-2, length=3)
    hi.negative_spans.add(offset=1, length=1)
    hf = ts.histograms.add(count_float=3.5, sum=1.0, schema=-53, positive_counts=[1.5, 2.0], timestamp=2000,
                           custom_values=[0.1, 1.0])
    hf.positive_spans.add(offset=0, length=2)
    ts2 = wr.timeseries.add()
    ts2.labels.add(name="__name__", value="plain")
    ts2.samples.add(value=1, timestamp=1)
    wr.metadata.add(type=types_pb2.MetricMetadata.COUNTER, metric_family_name="plain", help="Plain.", unit="seconds")
    d = decode_v1(wr.SerializeToString())
    assert d.n_exemplars.tolist() == [1, 0] and d.n_histograms.tolist() == [2, 0]
    e = d.exemplars()
    assert e.series.tolist() == [0] and e.values.tolist() == [0.5] and e.timestamps.tolist() == [99]
    assert decode_blob(e.labels[0]) == [("trace_id", "abc")]
    h = d.histograms()
    assert [x.series for x in h] == [0, 0]
    assert (h[0].is_float, h[0].count, h[0].zero_count, h[0].schema, h[0].positive_spans, h[0].positive_buckets,
            h[0].negative_spans, h[0].negative_buckets, h[0].reset_hint, h[0].timestamp) == (
        False, 10, 2, 3, [(-2, 3)], [1, 2, -1], [(1, 1)], [3], 2, 1000)
    assert (h[1].is_float, h[1].count, h[1].positive_buckets, h[1].custom_values, h[1].schema) == (
        True, 3.5, [1.5, 2.0], [0.1, 1.0], -53)
    m = d.metadata()
    assert [(x.family, x.type, x.help, x.unit) for x in m] == [("plain", "counter", "Plain.", "seconds")]


def test_v1_rare_paths_take_bytes_that_are_not_utf8():
    ex = ld(3, raw_label(b"trace\xff", b"id") + key(2, 1) + struct.pack("<d", 1.5) + key(3, 0) + b"\x07")
    hist = ld(4, key(1, 0) + b"\x03" + key(15, 0) + b"\x09")
    ok = ld(1, raw_label(b"__name__", b"up") + raw_sample(1, 1.0) + ex + hist)
    bad = ld(1, raw_label(b"__name__", b"up") + raw_label(b"v", b"\xff") + raw_sample(1, 1.0) + hist)
    d = decode_v1(ok + bad)
    assert d.status.tolist() == [STATUS_OK, STATUS_INVALID_UTF8]
    e = d.exemplars()
    assert e.series.tolist() == [0] and e.labels == [b"\x01\x06trace\xff\x02id"] and e.timestamps.tolist() == [7]
    h = d.histograms()  # only the series that pass the checks
    assert [(x.series, x.count, x.timestamp) for x in h] == [(0, 3, 9)]
    assert d.series_error(1) == 'invalid metric name or labels, got {__name__="up", v="\\xff"}'
    with pytest.raises(WriteDecodeError) as ei:  # a malformed exemplar surfaces when it is read
        decode_v1(ld(1, raw_label(b"__name__", b"up") + ld(3, b"\x0a\x05"))).exemplars()
    assert ei.value.status == 400 and "timeseries[0].exemplars" in ei.value.message


# ------------------------------------------------------------------------------------------ RW 2.0

META = st.one_of(st.none(), st.tuples(st.integers(0, 7), st.sampled_from(["", "Help text."]),
                                      st.sampled_from(["", "seconds"])))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(LABELS, SAMPLES, META), max_size=12), st.text(max_size=8))
def test_v2_roundtrip(series, tenant):
    body, syms = v2_request(series)
    d = decode_v2(body, tenant=tenant)
    canon = decode_v2(body, tenant=tenant, hash_as_sent=False)
    assert d.symbols() == syms
    r = write_v2_pb2.Request.FromString(body)
    assert d.n_series == len(r.timeseries)
    for i, (ls, ss, meta) in enumerate(series):
        blob, status, flags, h = model_series([(n.encode(), v.encode()) for n, v in ls], tenant.encode())
        if status == STATUS_OK and not ss:
            status = STATUS_NO_SAMPLES
        assert (d.blob(i), int(d.status[i]), int(d.flags[i]), int(canon.hashes[i])) == (blob, status, flags, h)
        assert int(d.hashes[i]) == thanos_hash([(n.encode(), v.encode()) for n, v in ls], tenant.encode())
        lo, hi = d.sample_offsets[i], d.sample_offsets[i + 1]
        assert d.sample_ts[lo:hi].tolist() == [t for t, _ in ss]
        assert d.sample_values[lo:hi].view(np.uint64).tolist() == [
            struct.unpack("<Q", struct.pack("<d", v))[0] for _, v in ss]
        mt, help_, unit = meta or (0, "", "")
        assert (int(d.metadata_type[i]), syms[d.help_ref[i]], syms[d.unit_ref[i]]) == (mt, help_, unit)
    assert (d.sample_start_ts == 0).all()


def test_v2_refs_checked_and_error_texts():
    syms = ["", "__name__", "up", "job", "a", "help"]
    r = write_v2_pb2.Request(symbols=syms)
    r.timeseries.add(labels_refs=[1, 2, 3, 4]).samples.add(value=1, timestamp=5, start_timestamp=3)
    r.timeseries.add(labels_refs=[1, 2, 3, 9]).samples.add(value=1, timestamp=5)
    r.timeseries.add(labels_refs=[1, 2, 3]).samples.add(value=1, timestamp=5)
    t = r.timeseries.add(labels_refs=[1, 2])
    t.samples.add(value=1, timestamp=5)
    t.metadata.help_ref = 6
    r.timeseries.add(labels_refs=[1, 2, 3, 4])  # no samples
    r.timeseries.add(labels_refs=[3, 4]).samples.add(value=1, timestamp=5)
    r.timeseries.add(labels_refs=[1, 2, 3, 4, 3, 2]).samples.add(value=1, timestamp=5)
    t = r.timeseries.add(labels_refs=[1, 2])
    t.samples.add(value=1, timestamp=5)
    t.metadata.type, t.metadata.help_ref, t.metadata.unit_ref = write_v2_pb2.Metadata.METRIC_TYPE_GAUGE, 5, 0
    d = decode_v2(r.SerializeToString())
    assert d.status.tolist() == [STATUS_OK, STATUS_BAD_LABEL_REFS, STATUS_BAD_LABEL_REFS, STATUS_BAD_METADATA_REFS,
                                 STATUS_NO_SAMPLES, STATUS_NO_METRIC_NAME, STATUS_DUPLICATE_LABEL, STATUS_OK]
    assert d.sample_start_ts.tolist()[0] == 3
    assert [d.series_error(i) for i in range(8)] == [
        "",
        "parsing labels for series [1 2 3 9]: labelRefs 3 (name) = 9 (value) outside of symbols table (size 6)",
        "parsing labels for series [1 2 3]: invalid labelRefs length 3",
        'parsing metadata for series {__name__="up"}: help_ref 6 or unit_ref 0 outside of symbols table (size 6)',
        'TimeSeries must contain at least one sample or histogram for series {__name__="up", job="a"}',
        'invalid metric name or labels, got {job="a"}',
        'invalid labels for series, labels {__name__="up", job="a", job="up"}, duplicated label job',
        "",
    ]
    assert [(m.family, m.type, m.help) for m in d.metadata()] == [("up", "gauge", "help")]
    assert written_headers(3, 1, 0) == {"X-Prometheus-Remote-Write-Samples-Written": "3",
                                        "X-Prometheus-Remote-Write-Histograms-Written": "1",
                                        "X-Prometheus-Remote-Write-Exemplars-Written": "0"}


def test_v2_symbols_after_series_unpacked_refs_and_v1_body():
    sym = ld(4, b"") + ld(4, b"__name__") + ld(4, b"up")
    series = ld(5, key(1, 0) + b"\x01" + key(1, 0) + b"\x02" + ld(2, key(2, 0) + b"\x07"))
    d = decode_v2(series + sym)
    assert d.labels(0) == [("__name__", "up")] and d.sample_ts.tolist() == [7] and d.status.tolist() == [0]
    # a 1.0 body read as 2.0: its fields are reserved in 2.0, so it is empty (what the protocol intends)
    assert decode_v2(v1_request([([("__name__", "up")], [(1, 1.0)])])).n_series == 0


def test_v2_invalid_utf8_symbol_refused_only_where_used():
    body = ld(4, b"") + ld(4, b"__name__") + ld(4, b"up") + ld(4, b"bad\xff") + ld(5, ld(1, b"\x01\x02") + ld(
        2, b"")) + ld(5, ld(1, b"\x01\x02\x03\x02") + ld(2, b""))
    assert decode_v2(body).status.tolist() == [STATUS_OK, STATUS_INVALID_UTF8]


def test_v2_exemplars_histograms():
    r = write_v2_pb2.Request(symbols=["", "__name__", "h", "trace_id", "abc"])
    t = r.timeseries.add(labels_refs=[1, 2])
    t.exemplars.add(labels_refs=[3, 4], value=2.0, timestamp=10)
    hh = t.histograms.add(count_int=4, sum=2.0, schema=0, positive_deltas=[4], timestamp=10, start_timestamp=1)
    hh.positive_spans.add(offset=0, length=1)
    d = decode_v2(r.SerializeToString())
    assert d.status.tolist() == [STATUS_OK]  # a histogram counts as a sample
    e = d.exemplars()
    assert decode_blob(e.labels[0]) == [("trace_id", "abc")] and e.values.tolist() == [2.0]
    h = d.histograms()
    assert (h[0].count, h[0].positive_buckets, h[0].start_timestamp) == (4, [4], 1)


def test_v2_label_bytes_bounded():
    # one long symbol referenced many times: the blobs would be far larger than the body
    r = write_v2_pb2.Request(symbols=["", "__name__", "x" * 100_000])
    for _ in range(100):
        r.timeseries.add(labels_refs=[1, 2]).samples.add(value=1, timestamp=1)
    body = r.SerializeToString()
    with pytest.raises(WriteDecodeError) as ei:
        decode_v2(body, max_label_bytes=1_000_000)
    assert ei.value.status == 413
    assert ei.value.message == "the label sets of the request exceed 1000000 bytes"
    assert decode_v2(body, max_label_bytes=20_000_000).n_series == 100
    # one series naming a 1000-byte symbol 200k times: refused before its 200 MB label set is built
    one = ld(4, b"") + ld(4, b"__name__") + ld(4, b"v" * 1000) + ld(5, ld(1, b"\x01\x02" * 200_000))
    with pytest.raises(WriteDecodeError) as ei:
        decode_v2(one)
    assert ei.value.status == 413 and ei.value.message.startswith("the label sets of the request exceed ")


# ------------------------------------------------------------------------------------------ malformed

GOOD_TS = raw_label(b"__name__", b"up") + raw_sample(1, 1.0)
MALFORMED_V1 = [
    (b"\x0a", "proto: WriteRequest.timeseries: truncated or overlong length at byte 1"),
    (b"\x0a\x05\x0a", "proto: WriteRequest.timeseries: length 5 exceeds the 1 bytes left at byte 1"),
    (b"\x0a\xff\xff\xff\xff\x0f", "proto: WriteRequest.timeseries: length 4294967295 exceeds the 0 bytes left at byte 1"),
    (b"\x0a" + b"\xff" * 11, "proto: WriteRequest.timeseries: truncated or overlong length at byte 1"),
    (b"\x08\x01", "proto: WriteRequest.timeseries: wrong wire type varint, want length-delimited at byte 0"),
    (b"\x1d\x00\x00\x00\x00", "proto: WriteRequest.metadata: wrong wire type fixed32, want length-delimited at byte 0"),
    (b"\x00", "proto: WriteRequest: illegal field number 0 at byte 0"),
    (b"\x0e", "proto: WriteRequest: illegal wire type 6 (field 1) at byte 0"),
    (b"\x80", "proto: WriteRequest: truncated or overlong field key at byte 0"),
    (b"\x23\x08", "proto: WriteRequest: field 1: truncated or overlong varint at byte 2"),
    (b"\x23", "proto: WriteRequest: field 4: unterminated group at byte 1"),
    (b"\x24", "proto: WriteRequest: field 4: unexpected end-group at byte 1"),
    (b"\x29\x00\x00", "proto: WriteRequest: field 5: truncated fixed64 at byte 1"),
    (ld(1, GOOD_TS) + ld(1, raw_label(b"__name__", b"up") + ld(2, key(1, 0) + b"\x01")),
     "proto: WriteRequest.timeseries[1].samples[0].value: wrong wire type varint, want fixed64 at byte "
     f"{len(ld(1, GOOD_TS)) + 2 + len(raw_label(b'__name__', b'up')) + 2}"),
    (ld(1, raw_label(b"__name__", b"up") + ld(2, key(2, 0) + b"\xff")),
     "proto: WriteRequest.timeseries[0].samples[0].timestamp: truncated or overlong varint at byte 21"),
    (ld(1, raw_label(b"__name__", b"up") + ld(1, key(2, 0) + b"\x01")),
     "proto: WriteRequest.timeseries[0].labels[1].value: wrong wire type varint, want length-delimited at byte 20"),
    (ld(1, ld(1, ld(1, b"abc")[:-1])),
     "proto: WriteRequest.timeseries[0].labels[0].name: length 3 exceeds the 2 bytes left at byte 5"),
    (ld(1, ld(3, b"") + key(4, 0) + b"\x01"),
     "proto: WriteRequest.timeseries[0].histograms: wrong wire type varint, want length-delimited at byte 4"),
    (ld(1, ld(2, key(1, 1) + b"\x00" * 7)),
     "proto: WriteRequest.timeseries[0].samples[0].value: truncated fixed64 at byte 5"),
]


@pytest.mark.parametrize("body,message", MALFORMED_V1)
def test_v1_malformed(body, message):
    with pytest.raises(WriteDecodeError) as ei:
        decode_request(snappy(body), "application/x-protobuf", "0.1.0", "snappy")
    assert (ei.value.status, ei.value.message) == (400, message)


MALFORMED_V2 = [
    (ld(5, key(1, 5) + b"\x00\x00\x00\x00"),
     "proto: Request.timeseries[0].labels_refs: wrong wire type fixed32, want varint or length-delimited at byte 2"),
    (ld(5, ld(1, b"\x01\x80")), "proto: Request.timeseries[0].labels_refs: truncated or overlong varint at byte 5"),
    (ld(5, ld(5, key(3, 2) + b"\x00")),
     "proto: Request.timeseries[0].metadata.help_ref: wrong wire type length-delimited, want varint at byte 4"),
    (ld(5, ld(2, key(3, 1) + b"\x00" * 8)),
     "proto: Request.timeseries[0].samples[0].start_timestamp: wrong wire type fixed64, want varint at byte 4"),
    (key(4, 0) + b"\x00", "proto: Request.symbols: wrong wire type varint, want length-delimited at byte 0"),
    (ld(4, b"") + b"\x22\x09abc", "proto: Request.symbols: length 9 exceeds the 3 bytes left at byte 3"),
]


@pytest.mark.parametrize("body,message", MALFORMED_V2)
def test_v2_malformed(body, message):
    with pytest.raises(WriteDecodeError) as ei:
        decode_request(snappy(body), CT_V2, "2.0.0", "snappy")
    assert (ei.value.status, ei.value.message) == (400, message)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_never_crash(data, v2):
    try:
        d = decode_v2(data) if v2 else decode_v1(data)
    except WriteDecodeError as e:
        assert e.status == 400 and e.message.startswith("proto: ")
    else:
        assert d.blob_offsets[-1] == len(d.blobs) and len(d.sample_offsets) == d.n_series + 1


def test_truncations_of_a_real_body_are_all_reported():
    body = v1_request([([("__name__", "up"), ("job", str(i))], [(i, float(i))]) for i in range(20)])
    for cut in range(1, len(body)):
        try:
            d = decode_v1(body[:cut])
        except WriteDecodeError as e:
            assert e.status == 400 and " at byte " in e.message
        else:  # cut on a series boundary: a shorter valid request
            assert d.n_series < 20


# ------------------------------------------------------------------------------------------ HTTP level

def test_snappy_and_size_errors():
    good = v1_request([([("__name__", "up")], [(1, 1.0)])])
    # not snappy at all / corrupt block / framed format
    for bad in [b"", b"\xff" * 11, snappy(good)[:-2], bytes(cramjam.snappy.compress(good))]:
        with pytest.raises(WriteDecodeError) as ei:
            decode_request(bad, "", "", "snappy")
        assert (ei.value.status, ei.value.message) == (400, "snappy decode error: s2: corrupt input"), bad[:10]
    # a header claiming 1 GiB is refused before anything is allocated
    huge = _uvarint(1 << 30) + b"\x00"
    with pytest.raises(WriteDecodeError) as ei:
        decode_request(huge, "", "", "snappy")
    assert (ei.value.status, ei.value.message) == (400, f"decoded size exceeds the {DEFAULT_MAX_DECODED_SIZE} bytes limit")
    # Thanos' request size limit: on the compressed and on the decoded size
    with pytest.raises(WriteDecodeError) as ei:
        decode_request(snappy(good), "", "", "snappy", size_bytes_limit=len(good) - 1)
    assert (ei.value.status, ei.value.message) == (413, "write request too large")
    body = snappy(b"\x12\x00" * 1000)
    with pytest.raises(WriteDecodeError) as ei:
        decode_request(body, "", "", "snappy", size_bytes_limit=len(body) + 1)
    assert (ei.value.status, ei.value.message) == (413, "write request too large")
    limit = max(len(good), len(snappy(good)))
    assert decode_request(snappy(good), "", "", "snappy", size_bytes_limit=limit).n_series == 1


def test_content_negotiation():
    good = snappy(v1_request([([("__name__", "up")], [(1, 1.0)])]))
    for ct in ["", "application/x-protobuf", " application/x-protobuf ", "application/x-protobuf;proto=prometheus.WriteRequest",
               "application/x-protobuf; proto=io.prometheus.write.v2.Request"]:  # the space hides the parameter
        assert decode_request(good, ct, "0.1.0", "").message == MESSAGE_V1, ct
    assert decode_request(snappy(b""), CT_V2, "2.0.0", "snappy").message == MESSAGE_V2
    cases = [
        ("text/plain", "", "expected application/x-protobuf as the first (media) part, got text/plain content-type"),
        ("application/x-protobuf;proto", "", "as per https://www.rfc-editor.org/rfc/rfc9110#parameter expected "
         "parameters to be key-values, got proto in application/x-protobuf;proto content-type"),
        ("application/x-protobuf;proto=foo.Bar", "", "got application/x-protobuf;proto=foo.Bar content type; unknown "
         "type for remote write protobuf message foo.Bar, supported: prometheus.WriteRequest, io.prometheus.write.v2.Request"),
        ("application/x-protobuf", "gzip", "gzip encoding (compression) is not accepted by this server; only snappy is acceptable"),
    ]
    for ct, enc, msg in cases:
        with pytest.raises(WriteDecodeError) as ei:
            decode_request(good, ct, "", enc)
        assert (ei.value.status, ei.value.message) == (415, msg)
    with pytest.raises(WriteDecodeError) as ei:
        decode_request(good, CT_V2, "2.0.0", "snappy", accepted=(MESSAGE_V1,))
    assert (ei.value.status, ei.value.message) == (
        415, "io.prometheus.write.v2.Request protobuf message is not accepted by this server; only accepts prometheus.WriteRequest")


# ------------------------------------------------------------------------------------------ real Prometheus

class _Capture(http.server.BaseHTTPRequestHandler):
    """Remote-write target: keeps every request and answers as Prometheus' receiver does."""

    requests: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        hdrs = {k: v for k, v in self.headers.items()}
        self.requests.append((hdrs, body))
        try:
            d = decode_request(body, hdrs.get("Content-Type", ""), hdrs.get(
                "X-Prometheus-Remote-Write-Version", ""), hdrs.get("Content-Encoding", ""))
        except WriteDecodeError as e:
            self.send_response(e.status)
            self.end_headers()
            self.wfile.write(e.message.encode())
            return
        self.send_response(204)
        if d.is_v2:
            for k, v in written_headers(int(d.n_samples), int(d.n_histograms.sum()), int(d.n_exemplars.sum())).items():
                self.send_header(k, v)
        self.end_headers()

    def log_message(self, *a) -> None:
        pass


@pytest.mark.parametrize("message", [MESSAGE_V1, MESSAGE_V2])
def test_real_prometheus_sender(prometheus_factory, prometheus3_bin, message):
    handler = type("Capture", (_Capture,), {"requests": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # the kernel's port: nobody else's
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        target = f"http://127.0.0.1:{srv.server_address[1]}/api/v1/write"
        # metadata-wal-records: without it Prometheus sends RW 2.0 series without their metadata
        p = prometheus_factory(config_yaml="global:\n  scrape_interval: 1s\n", binary=prometheus3_bin,
                               extra_args=["--web.enable-lifecycle", "--enable-feature=metadata-wal-records"])
        p.extra["config_file"].write_text(
            "global:\n  scrape_interval: 1s\n  scrape_native_histograms: true\n"
            f"scrape_configs:\n  - job_name: prom\n    static_configs:\n      - targets: ['127.0.0.1:{p.port}']\n"
            f"remote_write:\n  - url: {target}\n    protobuf_message: {message}\n    send_native_histograms: true\n"
            "    queue_config: {batch_send_deadline: 1s, max_samples_per_send: 2000}\n"
            "    metadata_config: {send: true, send_interval: 1s}\n")
        urllib.request.urlopen(urllib.request.Request(p.url + "/-/reload", method="POST"), timeout=10).read()

        def enough() -> bool:
            return sum(1 for h, b in handler.requests if len(b) > 1000) >= 4
        p.wait_ready(enough, 90, what="remote-write requests with samples")
        reqs = list(handler.requests)
    finally:
        srv.shutdown()
        srv.server_close()

    total_series = total_hist = with_meta = 0
    for hdrs, body in reqs:
        assert hdrs["Content-Encoding"] == "snappy"
        if message == MESSAGE_V2:
            assert hdrs["Content-Type"] == CT_V2 and hdrs["X-Prometheus-Remote-Write-Version"] == "2.0.0"
        else:
            assert hdrs["Content-Type"] == "application/x-protobuf"
            assert hdrs["X-Prometheus-Remote-Write-Version"] == "0.1.0"
        d = decode_request(body, hdrs["Content-Type"], hdrs["X-Prometheus-Remote-Write-Version"],
                           hdrs["Content-Encoding"], tenant="default-tenant")
        raw = bytes(cramjam.snappy.decompress_raw(body))
        if message == MESSAGE_V2:
            r = write_v2_pb2.Request.FromString(raw)
            syms = list(r.symbols)
            assert syms[0] == "" and d.symbols() == syms
            want = [([(syms[t.labels_refs[k]], syms[t.labels_refs[k + 1]]) for k in range(0, len(t.labels_refs), 2)],
                     [(s.timestamp, s.value) for s in t.samples]) for t in r.timeseries]
            for i, t in enumerate(r.timeseries):  # every series carries its metadata in 2.0
                assert (int(d.metadata_type[i]), d.help_ref[i], d.unit_ref[i]) == (
                    t.metadata.type, t.metadata.help_ref, t.metadata.unit_ref)
            with_meta += int((d.metadata_type != 0).sum())
        else:
            r = remote_pb2.WriteRequest.FromString(raw)
            want = [([(lb.name, lb.value) for lb in t.labels], [(s.timestamp, s.value) for s in t.samples])
                    for t in r.timeseries]
            got_meta = [(m.family, m.type, m.help, m.unit) for m in d.metadata()]
            assert got_meta == [(m.metric_family_name, _TYPES[m.type], m.help, m.unit) for m in r.metadata]
            with_meta += len(got_meta)
        assert d.n_series == len(r.timeseries)
        check_against_model(d, [([(n.encode(), v.encode()) for n, v in ls], ss) for ls, ss in want],
                            b"default-tenant")
        statuses = d.status.tolist()
        for i, t in enumerate(r.timeseries):  # Prometheus sends only good series, sorted
            assert statuses[i] == (STATUS_OK if len(t.samples) or len(t.histograms) or message == MESSAGE_V1
                                   else STATUS_NO_SAMPLES)
            assert d.flags[i] == 0
        hs = d.histograms()
        assert len(hs) == sum(len(t.histograms) for t in r.timeseries)
        for h, (i, t) in zip(hs, [(i, t) for i, t in enumerate(r.timeseries) for _ in t.histograms]):
            assert h.series == i
        total_series += d.n_series
        total_hist += len(hs)
    assert total_series > 0
    assert total_hist > 0  # Prometheus' own native histograms, scraped with scrape_native_histograms
    assert with_meta > 0  # 1.0: metadata requests (send_interval 1s); 2.0: metadata on the series


_TYPES = ("unknown", "counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset")


# ------------------------------------------------------------------------------------------ Prometheus as judge

def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read().decode(), dict(r.headers.items())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers.items())


def _ours(body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    try:
        decode_request(body, headers.get("Content-Type", ""), "", headers.get("Content-Encoding", ""))
    except WriteDecodeError as e:
        return e.status, e.message
    return 204, ""


@pytest.fixture
def prometheus_receiver(prometheus_factory, prometheus3_bin):
    """A real Prometheus 3.9.1 taking remote write (1.0 and 2.0) at /api/v1/write."""
    p = prometheus_factory(binary=prometheus3_bin, extra_args=["--web.enable-remote-write-receiver"])
    p.extra["write"] = p.url + "/api/v1/write"
    return p


def test_request_errors_as_prometheus_answers_them(prometheus_receiver):
    url = prometheus_receiver.extra["write"]
    good = snappy(v1_request([([("__name__", "judge_up")], [(int(time.time() * 1000), 1.0)])]))
    v1h = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
    cases = [
        (good, {**v1h, "Content-Encoding": "gzip"}),
        (good, {**v1h, "Content-Type": "text/plain"}),
        (good, {**v1h, "Content-Type": "application/x-protobuf;proto"}),
        (good, {**v1h, "Content-Type": "application/x-protobuf;proto=foo.Bar"}),
        (good, {**v1h, "Content-Type": "application/x-protobuf;a=b;proto=foo.Bar"}),
        (_uvarint(1 << 30) + b"\x00", v1h),  # decoded length over the bound
        (_uvarint(1 << 20) + b"\x00", v1h),  # decoded length under the bound, body corrupt
        (b"\xff" * 11, v1h),
        (snappy(b"\x0a\x05\x0a"), v1h),  # malformed protobuf
        (snappy(b"\x08\x01"), v1h),
        (snappy(ld(5, key(1, 5) + b"\x00" * 4)), {**v1h, "Content-Type": CT_V2}),
        (good, {**v1h, "Content-Type": ""}),
        (good, {**v1h, "Content-Encoding": ""}),
    ]
    for body, headers in cases:
        status, text, _ = _post(url, body, headers)
        ours = _ours(body, headers)
        assert ours[0] == status, (headers, text, ours)
        text = text.rstrip("\n")
        if status == 400 and ours[1].startswith("proto: "):
            continue  # malformed protobuf: ours names the field and offset, Go's parser has its own words
        if ours[1].startswith("snappy decode error: "):
            assert ours[1] == "snappy decode error: " + text  # Thanos' prefix on the same s2 error
        else:
            assert ours[1] == text, headers


def _series_api(p, match: str) -> list[dict[str, str]]:
    q = urllib.parse.urlencode({"match[]": match})
    with urllib.request.urlopen(f"{p.url}/api/v1/series?{q}", timeout=10) as r:
        return json.load(r)["data"]


def test_v1_series_checks_as_prometheus_stores_them(prometheus_receiver):
    now = int(time.time() * 1000)
    cases = [
        [(b"__name__", b"judge_ok"), (b"case", b"0")],
        [(b"case", b"1"), (b"__name__", b"judge_unsorted"), (b"b", b"x")],
        [(b"__name__", b"judge_empty_value"), (b"case", b"2"), (b"gone", b"")],
        [(b"case", b"3"), (b"job", b"no_name")],
        [(b"__name__", b"judge_empty_name"), (b"case", b"4"), (b"", b"v")],
        [(b"__name__", b"judge_dup"), (b"case", b"5"), (b"a", b"1"), (b"a", b"2")],
        [(b"__name__", b""), (b"case", b"6")],
        [(b"__name__", b"judge_bad_utf8"), (b"case", b"7"), (b"v", b"\xff")],
        [(b"__name__", b"judge_bad_utf8_name"), (b"case", b"8"), (b"\xc3", b"v")],
        [(b"__name__", "judge_ünicode".encode()), (b"case", b"9"), ("ñame".encode(), b"v")],
        [(b"__name__", b"judge_dup_empty"), (b"case", b"10"), (b"a", b""), (b"a", b"2")],
    ]
    body = b"".join(ld(1, b"".join(raw_label(n, v) for n, v in ls) + raw_sample(now, 1.0)) for ls in cases)
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
               "X-Prometheus-Remote-Write-Version": "0.1.0"}
    status, text, _ = _post(prometheus_receiver.extra["write"], snappy(body), headers)
    assert status == 204, text  # RW 1.0: refused series are skipped, the request succeeds
    d = decode_request(snappy(body), headers["Content-Type"], "0.1.0", "snappy")
    ours = sorted(tuple(d.labels(i)) for i in range(d.n_series) if d.status[i] == STATUS_OK)
    stored = sorted(tuple(sorted(s.items(), key=lambda kv: kv[0].encode())) for s in _series_api(
        prometheus_receiver, '{case=~".+"}'))
    assert ours == stored
    assert d.status.tolist() == [STATUS_OK, STATUS_OK, STATUS_OK, STATUS_NO_METRIC_NAME, STATUS_EMPTY_LABEL_NAME,
                                 STATUS_DUPLICATE_LABEL, STATUS_EMPTY_METRIC_NAME, STATUS_INVALID_UTF8,
                                 STATUS_INVALID_UTF8, STATUS_OK, STATUS_DUPLICATE_LABEL]


def test_v2_series_errors_as_prometheus_answers_them(prometheus_receiver):
    now = int(time.time() * 1000)
    syms = [b"", b"__name__", b"judge2_ok", b"case", b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"job", b"a",
            b"judge2_x", b"bad\xff", b"7", b"8", b"quote\"d\n"]
    s = {v: i for i, v in enumerate(syms)}

    def series(refs: list[int], samples: int = 1, exemplar_refs: list[int] | None = None) -> bytes:
        ex = b"" if exemplar_refs is None else ld(4, ld(1, b"".join(_uvarint(r) for r in exemplar_refs)) + key(
            2, 1) + struct.pack("<d", 0.5) + key(3, 0) + _uvarint(now))
        return ld(5, ld(1, b"".join(_uvarint(r) for r in refs)) + b"".join(
            ld(2, key(1, 1) + struct.pack("<d", 1.0) + key(2, 0) + _uvarint(now + k)) for k in range(samples)) + ex)

    body = b"".join(ld(4, x) for x in syms) + b"".join([
        series([s[b"__name__"], s[b"judge2_ok"], s[b"case"], s[b"0"]], samples=2),
        series([s[b"__name__"], s[b"judge2_x"], s[b"case"], 99]),                      # ref outside
        series([s[b"__name__"], s[b"judge2_x"], s[b"case"]]),                          # odd refs
        series([s[b"case"], s[b"3"], s[b"job"], s[b"a"]]),                             # no name
        series([s[b"__name__"], s[b"judge2_x"], s[b"case"], s[b"4"], s[b"job"], s[b"a"], s[b"job"], s[b"0"]]),  # dup
        series([s[b"__name__"], s[b"judge2_x"], s[b"case"], s[b"5"]], samples=0),      # no samples
        series([s[b"__name__"], s[b"judge2_x"], s[b"case"], s[b"6"], s[b"job"], s[b"bad\xff"]]),  # not UTF-8
        series([s[b"case"], s[b"7"], s[b"__name__"], s[b"judge2_x"], s[b"job"], s[b"quote\"d\n"]]),  # ok, unsorted
        series([s[b"__name__"], s[b""], s[b"case"], s[b"8"]]),                          # empty metric name
        series([s[b"__name__"], s[b"judge2_ok"], s[b"case"], s[b"1"]], exemplar_refs=[s[b"job"], 77]),  # bad exemplar
    ])
    headers = {"Content-Type": CT_V2, "Content-Encoding": "snappy", "X-Prometheus-Remote-Write-Version": "2.0.0"}
    status, text, rh = _post(prometheus_receiver.extra["write"], snappy(body), headers)
    d = decode_request(snappy(body), CT_V2, "2.0.0", "snappy")
    ex = d.exemplars()
    assert len(ex.series) == 0 and [i for i, _ in ex.errors] == [9]
    ex_errors = dict(ex.errors)
    want_text = [d.series_error(i) or ex_errors.get(i, "") for i in range(d.n_series)]
    assert status == 400
    assert text.rstrip("\n") == "\n".join(t for t in want_text if t)
    ok_samples = sum(int(d.sample_offsets[i + 1] - d.sample_offsets[i]) for i in range(d.n_series)
                     if d.status[i] == STATUS_OK)
    want = written_headers(ok_samples, 0, 0)
    assert {k: rh.get(k) for k in want} == want
    ours = sorted(tuple(d.labels(i)) for i in range(d.n_series) if d.status[i] == STATUS_OK)
    stored = sorted(tuple(sorted(x.items())) for x in _series_api(prometheus_receiver, '{__name__=~"judge2_.*"}'))
    assert ours == stored
