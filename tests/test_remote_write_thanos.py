"""Thanos' gRPC write request decoded into columns (``decode_thanos_write``) and the reverse
direction, remote-write 1.0 TimeSeries encoded from columns (``encode_v1_timeseries``,
``timeseries_frames``).

Checked against the upb protobuf module (``thanos.WriteRequest``, ``prometheus.WriteRequest`` and
``io.prometheus.write.v2.Request`` built and parsed with our generated modules), D's
``writeapi.encode_write_request``, the hashring module's routing hashes, and a real Thanos v0.42.4
router forwarding to a servicer in this process that decodes with ours.
"""
from __future__ import annotations

import asyncio
import json
import struct
import time
from typing import Optional

import cramjam
import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peers import REGISTRY, free_ports
from pythanos.receive import hashring as hr
from pythanos.remote.prompb import remote_pb2, types_pb2, write_v2_pb2
from pythanos.remote.write import (MESSAGE_THANOS, STATUS_NO_METRIC_NAME, STATUS_OK, WriteDecodeError,
                                   decode_thanos_write, decode_v1, decode_v2, encode_v1_timeseries, timeseries_frames)
from pythanos.storeapi import writeapi
from pythanos.storeapi.pb import prompb_pb2, write_pb2


def _uvarint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def key(field: int, wt: int) -> bytes:
    return _uvarint(field << 3 | wt)


def ld(field: int, payload: bytes) -> bytes:
    return key(field, 2) + _uvarint(len(payload)) + payload


def bits(v: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", v))[0]


labels_st = st.lists(st.tuples(st.sampled_from(["a", "b", "job", "instance", "__name__", "le", "ü"]),
                               st.text(max_size=6)), min_size=1, max_size=6)
samples_st = st.lists(st.tuples(st.integers(-2**63, 2**63 - 1),
                                st.floats(allow_nan=True, allow_infinity=True)), max_size=4)
series_st = st.lists(st.tuples(labels_st, samples_st), max_size=12)


def ts_msg(labels, samples, cls=types_pb2.TimeSeries):
    t = cls()
    for n, v in labels:
        t.labels.add(name=n, value=v)
    for ts, v in samples:
        t.samples.add(timestamp=ts, value=v)
    return t


def canonical(labels) -> list[tuple[str, str]]:
    return sorted(((n, v) for n, v in labels if v), key=lambda p: p[0].encode())


# ------------------------------------------------------------------------------------------ thanos.WriteRequest

@settings(max_examples=150, deadline=None)
@given(series_st, st.text(max_size=12), st.integers(0, 2**63 - 1))
def test_thanos_request_decodes_as_the_protobuf_module_reads_it(series, tenant, replica):
    msgs = [ts_msg(lb, sm) for lb, sm in series]
    body = writeapi.encode_write_request(msgs, tenant, replica)
    ref = write_pb2.WriteRequest.FromString(body)
    assert (ref.tenant, ref.replica, len(ref.timeseries)) == (tenant, replica, len(series))
    d, t, r = decode_thanos_write(body)
    assert (t, r, d.message, d.n_series, d.is_v2) == (tenant, replica, MESSAGE_THANOS, len(series), False)
    # the same columns as the series decoded as a remote-write 1.0 body with the tenant given
    v1 = decode_v1(remote_pb2.WriteRequest(timeseries=msgs).SerializeToString(), tenant)
    for name in ("blob_offsets", "status", "flags", "label_counts", "hashes", "sample_offsets", "sample_series",
                 "sample_ts", "n_exemplars", "n_histograms"):
        assert np.array_equal(getattr(d, name), getattr(v1, name)), name
    assert d.blobs == v1.blobs
    # as Thanos' writer (no __name__ needed): the same statuses either way
    lenient = decode_thanos_write(body, require_name=False)[0].status
    assert np.array_equal(lenient, decode_v1(remote_pb2.WriteRequest(timeseries=msgs).SerializeToString(), tenant,
                                             require_name=False).status)
    gained = (lenient == STATUS_OK) & (d.status != STATUS_OK)  # kept only when no name is needed
    assert np.all(d.status[gained] == STATUS_NO_METRIC_NAME)
    assert np.all(lenient[d.status == STATUS_OK] == STATUS_OK)
    assert all(d.labels(i) for i in np.flatnonzero(gained).tolist())
    assert d.sample_values.view(np.uint64).tolist() == v1.sample_values.view(np.uint64).tolist()
    for i, (lb, sm) in enumerate(series):
        assert d.labels(i) == canonical(lb) or d.status[i] != STATUS_OK
    # the tenant prefixes the routing hash exactly as the hashring module computes it
    assert d.hashes.tolist() == hr.series_hashes(tenant, (lb for lb, _ in series)).tolist()


def test_thanos_request_from_the_protobuf_module_fields_in_any_order():
    ts = ts_msg([("__name__", "up"), ("job", "x")], [(1000, 1.0)], prompb_pb2.TimeSeries)
    body = write_pb2.WriteRequest(timeseries=[ts], tenant="t1", replica=2).SerializeToString()
    # tenant and replica before the series, and repeated (the last occurrence wins)
    moved = (key(3, 0) + b"\x07" + ld(2, b"first") + ld(1, ts.SerializeToString()) + ld(2, b"t1") +
             key(3, 0) + b"\x02")
    for b in (body, moved):
        d, t, r = decode_thanos_write(b)
        assert (t, r, d.n_series, d.labels(0)) == ("t1", 2, 1, [("__name__", "up"), ("job", "x")])
        assert d.hashes.tolist() == hr.series_hashes("t1", [[("__name__", "up"), ("job", "x")]]).tolist()
    d, t, r = decode_thanos_write(b"")
    assert (d.n_series, t, r) == (0, "", 0)
    # negative replicas and tenants that are not UTF-8 come through as Go's gogoproto reads them
    d, t, r = decode_thanos_write(ld(2, b"\xffx") + key(3, 0) + _uvarint((1 << 64) - 5))
    assert (t.encode("utf-8", "surrogateescape"), r) == (b"\xffx", -5)
    # unknown fields are skipped
    d, t, r = decode_thanos_write(key(9, 0) + b"\x01" + ld(10, b"zz") + body)
    assert (d.n_series, t, r) == (1, "t1", 2)


GOOD_TS = ld(1, ld(1, ld(1, b"__name__") + ld(2, b"up")))

MALFORMED = [
    (ld(3, b""), "proto: thanos.WriteRequest.replica: wrong wire type length-delimited, want varint at byte 0"),
    (key(2, 0) + b"\x01", "proto: thanos.WriteRequest.tenant: wrong wire type varint, want length-delimited at byte 0"),
    (key(1, 0) + b"\x01",
     "proto: thanos.WriteRequest.timeseries: wrong wire type varint, want length-delimited at byte 0"),
    (ld(2, b"abc")[:-1], "proto: thanos.WriteRequest.tenant: length 3 exceeds the 2 bytes left at byte 1"),
    (GOOD_TS + key(3, 0) + b"\x80", "proto: thanos.WriteRequest.replica: truncated or overlong varint at byte "
                                   f"{len(GOOD_TS) + 1}"),
    (GOOD_TS + b"\x80", f"proto: thanos.WriteRequest: truncated or overlong field key at byte {len(GOOD_TS)}"),
    (GOOD_TS + ld(1, ld(1, ld(1, b"a") + key(2, 0) + b"\x01")),
     "proto: thanos.WriteRequest.timeseries[1].labels[0].value: wrong wire type varint, want length-delimited "
     f"at byte {len(GOOD_TS) + 7}"),
    (ld(1, ld(2, key(1, 1) + b"\x00" * 3)),
     "proto: thanos.WriteRequest.timeseries[0].samples[0].value: truncated fixed64 at byte 5"),
]


@pytest.mark.parametrize("body,message", MALFORMED)
def test_thanos_malformed(body, message):
    with pytest.raises(WriteDecodeError) as ei:
        decode_thanos_write(body)
    assert (ei.value.status, ei.value.message) == (400, message)


def test_thanos_and_prometheus_write_requests_are_not_confused():
    ts = ts_msg([("__name__", "up")], [(1, 1.0)])
    prom = remote_pb2.WriteRequest(timeseries=[ts])
    prom.metadata.add(type=types_pb2.MetricMetadata.COUNTER, metric_family_name="up", help="h")
    with pytest.raises(WriteDecodeError) as ei:  # field 3 is a metadata message there
        decode_thanos_write(prom.SerializeToString())
    assert "thanos.WriteRequest.replica: wrong wire type length-delimited, want varint" in ei.value.message
    with pytest.raises(WriteDecodeError) as ei:  # and the varint replica here
        decode_v1(writeapi.encode_write_request([ts], "t", 1))
    assert "WriteRequest.metadata: wrong wire type varint, want length-delimited" in ei.value.message
    # without a metadata message or a replica, the two read each other's series alike
    d, t, r = decode_thanos_write(remote_pb2.WriteRequest(timeseries=[ts]).SerializeToString())
    assert (d.n_series, t, r) == (1, "", 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data):
    try:
        d, _, _ = decode_thanos_write(data)
    except WriteDecodeError as e:
        assert e.status == 400 and e.message.startswith("proto: thanos.WriteRequest") and " at byte " in e.message
    else:
        assert d.blob_offsets[-1] == len(d.blobs) and len(d.sample_offsets) == d.n_series + 1


def test_truncations_are_all_reported():
    body = writeapi.encode_write_request([ts_msg([("__name__", "up"), ("i", str(i))], [(i, i)]) for i in range(10)],
                                         "tenant", 3)
    for cut in range(1, len(body)):
        try:
            decode_thanos_write(body[:cut])
        except WriteDecodeError as e:
            assert e.status == 400 and " at byte " in e.message
        # else: a cut on a field boundary is a shorter valid request


# ------------------------------------------------------------------------------------------ encoder

def rich_v1() -> remote_pb2.WriteRequest:
    """Series with unsorted labels, empty values, stale NaN, -0.0, exemplars, int and float histograms."""
    wr = remote_pb2.WriteRequest()
    t = wr.timeseries.add()
    for n, v in [("job", "api"), ("__name__", "h"), ("empty", ""), ("instance", "x:1")]:
        t.labels.add(name=n, value=v)
    t.samples.add(value=-0.0, timestamp=0)
    t.samples.add(value=struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0], timestamp=-5)
    ex = t.exemplars.add(value=0.5, timestamp=99)
    ex.labels.add(name="trace_id", value="abc")
    ex.labels.add(name="span", value="")
    t.exemplars.add(value=0.0, timestamp=0)
    hi = t.histograms.add(count_int=10, sum=12.5, schema=3, zero_threshold=1e-128, zero_count_int=2,
                          positive_deltas=[1, 2, -1], negative_deltas=[3], reset_hint=types_pb2.Histogram.NO,
                          timestamp=1000)
    hi.positive_spans.add(offset=-2, length=3)
    hi.negative_spans.add(offset=1, length=1)
    hf = t.histograms.add(count_float=3.5, sum=1.0, schema=-53, positive_counts=[1.5, 2.0], timestamp=2000,
                          custom_values=[0.1, 1.0], zero_count_float=0.25, reset_hint=types_pb2.Histogram.GAUGE)
    hf.positive_spans.add(offset=0, length=2)
    for i in range(3):
        t2 = wr.timeseries.add()
        t2.labels.add(name="__name__", value="plain")
        t2.labels.add(name="i", value=str(i))
        t2.samples.add(value=float(i), timestamp=1000 * i)
    wr.metadata.add(type=types_pb2.MetricMetadata.COUNTER, metric_family_name="plain", help="Plain.")
    return wr


def expected_v1(series: list[types_pb2.TimeSeries]) -> list[types_pb2.TimeSeries]:
    """What the encoder must give: the same series with canonical labels (sorted, empty values left out)."""
    out = []
    for s in series:
        t = types_pb2.TimeSeries()
        t.CopyFrom(s)
        del t.labels[:]
        for n, v in canonical([(lb.name, lb.value) for lb in s.labels]):
            t.labels.add(name=n, value=v)
        out.append(t)
    return out


def parse_frames(frames: bytes) -> list[types_pb2.TimeSeries]:
    return list(remote_pb2.WriteRequest.FromString(frames).timeseries)


def same_series(a: list[types_pb2.TimeSeries], b: list[types_pb2.TimeSeries]) -> None:
    """Equal field by field, sample values by their bits (NaN, -0.0)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert [(lb.name, lb.value) for lb in x.labels] == [(lb.name, lb.value) for lb in y.labels]
        assert [(s.timestamp, bits(s.value)) for s in x.samples] == [(s.timestamp, bits(s.value)) for s in y.samples]
        assert list(x.exemplars) == list(y.exemplars)
        assert list(x.histograms) == list(y.histograms)


def test_encode_v1_from_a_v1_body_and_round_trip():
    wr = rich_v1()
    d = decode_v1(wr.SerializeToString())
    enc = encode_v1_timeseries(d)
    same_series(parse_frames(enc), expected_v1(list(wr.timeseries)))
    # round trip through the decoder: the same blobs, samples and rare parts
    d2 = decode_v1(enc)
    assert d2.blobs == d.blobs and np.array_equal(d2.blob_offsets, d.blob_offsets)
    assert d2.sample_values.view(np.uint64).tolist() == d.sample_values.view(np.uint64).tolist()
    assert d2.sample_ts.tolist() == d.sample_ts.tolist()
    assert d2.histograms() == d.histograms()
    e, e2 = d.exemplars(), d2.exemplars()
    assert e.labels == e2.labels and e.values.tolist() == e2.values.tolist()
    # -0.0 keeps its sign, zero timestamps are left out as proto3 leaves them
    assert enc.count(b"\x09" + struct.pack("<d", -0.0)) == 1
    # positions: any subset, any order, repeats
    pos = np.array([3, 0, 3], np.int64)
    same_series(parse_frames(encode_v1_timeseries(d, pos)), [expected_v1(list(wr.timeseries))[i] for i in pos])
    assert encode_v1_timeseries(d, np.zeros(0, np.int64)) == b""


def test_timeseries_frames_slices_v1_bodies_as_sent():
    wr = rich_v1()
    body = wr.SerializeToString()
    d = decode_v1(body)
    frames = timeseries_frames(d)
    assert frames == remote_pb2.WriteRequest(timeseries=wr.timeseries).SerializeToString()
    pos = np.array([2, 0], np.int64)
    assert parse_frames(timeseries_frames(d, pos)) == [wr.timeseries[2], wr.timeseries[0]]
    # they go into a thanos.WriteRequest as they are
    dt, t, r = decode_thanos_write(writeapi.encode_write_request(frames, "tn", 1))
    assert (dt.n_series, t, r, dt.blobs) == (4, "tn", 1, d.blobs)


def v2_from(wr: remote_pb2.WriteRequest, extra_hist_field: bool = True) -> bytes:
    """The same series as an RW 2.0 request (symbols, refs), histograms with a start timestamp."""
    syms: dict[str, int] = {"": 0}

    def ref(s: str) -> int:
        return syms.setdefault(s, len(syms))

    r = write_v2_pb2.Request()
    for s in wr.timeseries:
        t = r.timeseries.add()
        for lb in s.labels:
            t.labels_refs.extend([ref(lb.name), ref(lb.value)])
        for smp in s.samples:
            t.samples.add(value=smp.value, timestamp=smp.timestamp, start_timestamp=7)
        for ex in s.exemplars:
            e = t.exemplars.add(value=ex.value, timestamp=ex.timestamp)
            for lb in ex.labels:
                e.labels_refs.extend([ref(lb.name), ref(lb.value)])
        for h in s.histograms:
            h2 = write_v2_pb2.Histogram.FromString(h.SerializeToString())  # fields 1-16 are the same
            if extra_hist_field:
                h2.start_timestamp = 123
            t.histograms.append(h2)
        t.metadata.type = write_v2_pb2.Metadata.METRIC_TYPE_COUNTER
        t.metadata.help_ref = ref("help text")
    r.symbols.extend(syms)
    return r.SerializeToString()


def test_encode_v1_from_a_v2_body():
    wr = rich_v1()
    d = decode_v2(v2_from(wr))
    assert d.is_v2 and (d.status == STATUS_OK).all()
    enc = encode_v1_timeseries(d)
    assert timeseries_frames(d) == enc  # RW 2.0 has no 1.0 bytes to slice
    # histograms: the same fields, start_timestamp left out; exemplars' refs resolved
    same_series(parse_frames(enc), expected_v1(list(wr.timeseries)))
    d2 = decode_v1(enc)
    assert d2.blobs == d.blobs
    want_h = d.histograms()
    for h in want_h:
        h.start_timestamp = 0
    assert d2.histograms() == want_h
    assert d2.exemplars().labels == d.exemplars().labels


def test_encode_v1_v2_exemplar_with_bad_refs_left_out():
    r = write_v2_pb2.Request(symbols=["", "__name__", "h", "trace_id", "abc"])
    t = r.timeseries.add(labels_refs=[1, 2])
    t.samples.add(value=1.0, timestamp=5)
    t.exemplars.add(labels_refs=[3, 9], value=2.0, timestamp=10)  # 9 is outside the symbols
    t.exemplars.add(labels_refs=[3], value=2.0, timestamp=10)  # odd
    t.exemplars.add(labels_refs=[3, 4], value=3.0, timestamp=11)
    d = decode_v2(r.SerializeToString())
    (s,) = parse_frames(encode_v1_timeseries(d))
    assert len(s.exemplars) == 1 and s.exemplars[0].value == 3.0
    assert [(lb.name, lb.value) for lb in s.exemplars[0].labels] == [("trace_id", "abc")]
    assert len(d.exemplars().errors) == 2  # the decoder names the two it leaves out


@settings(max_examples=150, deadline=None)
@given(series_st)
def test_encode_v1_property(series):
    msgs = [ts_msg(lb, sm) for lb, sm in series]
    wr = remote_pb2.WriteRequest(timeseries=msgs)
    for d in (decode_v1(wr.SerializeToString()), decode_v2(v2_from(wr))):
        ok = np.flatnonzero(d.status == STATUS_OK)
        got = parse_frames(encode_v1_timeseries(d, ok))
        same_series(got, expected_v1([msgs[i] for i in ok]))


def test_encode_v1_refuses_columns_that_do_not_hold():
    d = decode_v1(rich_v1().SerializeToString())
    with pytest.raises(ValueError, match=r"position 1: series 4 outside the 4 series"):
        encode_v1_timeseries(d, np.array([0, 4]))
    with pytest.raises(ValueError, match=r"position 0: series -1 outside"):
        timeseries_frames(d, np.array([-1]))
    bad = decode_v1(rich_v1().SerializeToString())
    bad.series_ranges = bad.series_ranges.copy()
    bad.series_ranges[0, 1] = 10**6
    with pytest.raises(ValueError, match=r"position 0 \(series 0\): series range \d+\+1000000 outside the body"):
        encode_v1_timeseries(bad)
    with pytest.raises(ValueError, match=r"series range"):
        timeseries_frames(bad)
    bad = decode_v1(rich_v1().SerializeToString())
    bad.blob_offsets = bad.blob_offsets.copy()
    bad.blob_offsets[1] += 1000
    with pytest.raises(ValueError, match=r"position 0 \(series 0\): blob offsets 0\.\.\d+ outside the \d+ blob bytes"):
        encode_v1_timeseries(bad, np.array([0]))
    bad = decode_v1(rich_v1().SerializeToString())
    bad.blobs = b"\x05" + bad.blobs[1:]
    with pytest.raises(ValueError, match=r"malformed label blob at byte"):
        encode_v1_timeseries(bad, np.array([0]))
    bad = decode_v1(rich_v1().SerializeToString())
    bad.sample_offsets = bad.sample_offsets.copy()
    bad.sample_offsets[1] = 99
    with pytest.raises(ValueError, match=r"sample offsets 0\.\.99 outside the 5 samples"):
        encode_v1_timeseries(bad, np.array([0]))
    bad = decode_v1(rich_v1().SerializeToString())
    bad.n_histograms = bad.n_histograms[:2]
    with pytest.raises(ValueError, match=r"counts uint32 n"):
        encode_v1_timeseries(bad)


def test_encode_v1_checks_the_rare_parts_it_reads():
    """Histogram and exemplar messages are only counted by the decoder. From RW 1.0 they are
    copied as the sender wrote them (the receiving peer judges them, as it would the sender's);
    from RW 2.0 the encoder reads them, and checks every field."""
    series = GOOD_TS[2:] + ld(2, key(1, 1) + b"\x00" * 8)
    for rare in (ld(3, key(1, 2) + b"\x05ab"), ld(4, b"\x80")):
        d = decode_v1(ld(1, series + rare))
        assert encode_v1_timeseries(d).endswith(rare)
        assert timeseries_frames(d) == ld(1, series + rare)
    r = ld(4, b"") + ld(4, b"__name__") + ld(4, b"up") + ld(5, ld(1, b"\x01\x02") + ld(2, key(2, 0) + b"\x01") +
                                                              ld(4, key(1, 2) + b"\x09\x01"))
    d = decode_v2(r)
    with pytest.raises(ValueError, match=r"malformed exemplar field at byte"):
        encode_v1_timeseries(d)
    r = ld(4, b"") + ld(4, b"__name__") + ld(4, b"up") + ld(5, ld(1, b"\x01\x02") + ld(3, key(4, 0) + b"\xff"))
    with pytest.raises(ValueError, match=r"malformed histogram field at byte"):
        encode_v1_timeseries(decode_v2(r))


# ------------------------------------------------------------------------------------------ a real Thanos router

class DecodingServicer:
    """A WriteableStore in this process that decodes what it gets with decode_thanos_write."""

    def __init__(self) -> None:
        self.got: list[tuple[object, str, int, bytes]] = []
        self.server: Optional[grpc.aio.Server] = None
        self.address = ""

    async def handle(self, raw: bytes) -> None:
        d, tenant, replica = decode_thanos_write(raw)
        self.got.append((d, tenant, replica, raw))

    async def start(self, port: int) -> None:
        self.server = grpc.aio.server()
        writeapi.add_writeable_servicer(self.server, self.handle, raw=True)
        self.address = f"127.0.0.1:{port}"
        assert self.server.add_insecure_port(self.address)
        await self.server.start()


def test_thanos_router_forwards_to_a_servicer_decoding_with_ours(thanos_bin, tmp_path):
    """A router-only thanos receive v0.42.4, RF 2, with two of our servicers as its hashring: each
    forward decodes as the protobuf module reads it, tenant and replica come through, every series
    is held by the endpoints our hashring computes from the decoded routing hashes, and the series
    re-encoded by encode_v1_timeseries are what Prometheus sent (exemplars and histograms too)."""
    tenant, nseries = "fwd-tenant", 150
    now = int(time.time() * 1000)
    wr = remote_pb2.WriteRequest()
    for i in range(nseries):
        t = wr.timeseries.add()
        for n, v in [("__name__", f"thanos_fwd_{i % 5}"), ("idx", str(i)), ("job", "rw")]:
            t.labels.add(name=n, value=v)
        t.samples.add(value=float(i), timestamp=now)
        if i % 10 == 0:
            ex = t.exemplars.add(value=0.5, timestamp=now)
            ex.labels.add(name="trace_id", value=f"t{i}")
            h = t.histograms.add(count_int=3, sum=1.5, schema=1, zero_count_int=1, positive_deltas=[1, 1],
                                 timestamp=now - 1)
            h.positive_spans.add(offset=0, length=2)
    sent = {s.labels[1].value: s for s in wr.timeseries}

    async def main():
        recs = [DecodingServicer(), DecodingServicer()]
        ports = free_ports(6)
        for rec, port in zip(recs, ports[:2]):
            await rec.start(port)
        rings = [{"endpoints": [rec.address for rec in recs]}]
        hfile = tmp_path / "h.json"
        hfile.write_text(json.dumps(rings))
        g, h, w, c = ports[2:]
        p = REGISTRY.start("thanos-router", [
            thanos_bin, "receive", f"--tsdb.path={tmp_path / 'tsdb'}", f"--grpc-address=127.0.0.1:{g}",
            f"--http-address=127.0.0.1:{h}", f"--remote-write.address=127.0.0.1:{w}",
            f"--receive.hashrings-file={hfile}", "--receive.replication-factor=2",
            "--receive.grpc-compression=none", f"--receive.capnproto-address=127.0.0.1:{c}",
            '--label=receive="router"'], tmp_path / "logs")
        p.url = f"http://127.0.0.1:{h}"
        try:
            await asyncio.to_thread(p.wait_http_ready, "/-/ready", 90)
            body = bytes(cramjam.snappy.compress_raw(wr.SerializeToString()))
            import urllib.request
            req = urllib.request.Request(f"http://127.0.0.1:{w}/api/v1/receive", data=body, method="POST", headers={
                "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                "X-Prometheus-Remote-Write-Version": "0.1.0", "THANOS-TENANT": tenant})
            resp = await asyncio.to_thread(urllib.request.urlopen, req, None, 30)
            assert resp.status == 200
            deadline = time.monotonic() + 30
            while sum(g[0].n_series for rec in recs for g in rec.got) < 2 * nseries:
                assert time.monotonic() < deadline, "the router's forwards did not all arrive"
                await asyncio.sleep(0.05)
            m = hr.new_multi_hashring(hr.parse_hashrings(json.dumps(rings)), "hashmod", 2)
            held: dict[tuple[str, int], set[str]] = {}
            for rec in recs:
                for d, t, r, raw in rec.got:
                    ref = write_pb2.WriteRequest.FromString(raw)
                    assert (t, r) == (ref.tenant, ref.replica) == (tenant, r) and r in (1, 2)
                    assert (d.status == STATUS_OK).all()
                    # where these series belong, from our decoded hashes: this endpoint at this replica
                    ring, idx = m.route(t, d.hashes, 2)
                    assert {ring.endpoints[e].address for e in idx[:, r - 1].tolist()} == {rec.address}
                    frames = encode_v1_timeseries(d)
                    got = parse_frames(frames)
                    same_series(got, [sent[s.labels[1].value] for s in got])
                    assert same_bytes(frames, ref)
                    for s in got:
                        held.setdefault((rec.address, r), set()).add(s.labels[1].value)
            assert sum(len(v) for v in held.values()) == 2 * nseries
        finally:
            p.stop()
            for rec in recs:
                await rec.server.stop(None)

    asyncio.run(main())


def same_bytes(frames: bytes, ref: write_pb2.WriteRequest) -> bool:
    """Our re-encoding of sorted series is byte for byte the router's (Go's gogoproto) encoding."""
    return frames == write_pb2.WriteRequest(timeseries=ref.timeseries).SerializeToString()


def test_encode_v1_refuses_symbols_outside_the_body():
    r = write_v2_pb2.Request(symbols=["", "__name__", "h", "trace_id", "abc"])
    t = r.timeseries.add(labels_refs=[1, 2])
    t.samples.add(value=1.0, timestamp=5)
    t.exemplars.add(labels_refs=[3, 4], value=2.0, timestamp=10)
    d = decode_v2(r.SerializeToString())
    d.symbol_ranges = d.symbol_ranges.copy()
    d.symbol_ranges[4, 1] = 10**9
    with pytest.raises(ValueError, match=r"symbol 4: range \d+\+1000000000 outside the body of \d+ bytes"):
        encode_v1_timeseries(d)


# ------------------------------------------------------------------------------------------ Prometheus as judge

def _post(url: str, body: bytes, content_type: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url + "/api/v1/write", data=bytes(cramjam.snappy.compress_raw(body)), method="POST",
                                 headers={"Content-Type": content_type, "Content-Encoding": "snappy"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _api(url: str, path: str, **params) -> list:
    import urllib.parse
    import urllib.request
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=20) as r:
        data = json.load(r)["data"]
    items = data["result"] if isinstance(data, dict) else data
    return sorted(items, key=lambda x: json.dumps(x.get("metric", x.get("seriesLabels")), sort_keys=True))


def test_prometheus_stores_the_v1_encoding_of_a_v2_request_as_the_v2_request(prometheus_factory, prometheus3_bin):
    """Two real Prometheus 3.9.1 receivers: one gets a RW 2.0 request (floats, int and float native
    histograms with custom buckets, exemplars), the other our RW 1.0 encoding of it. Every sample,
    histogram and exemplar they answer for is the same."""
    flags = ["--web.enable-remote-write-receiver", "--enable-feature=exemplar-storage"]
    a = prometheus_factory(binary=prometheus3_bin, extra_args=flags, name="prom-v2")
    b = prometheus_factory(binary=prometheus3_bin, extra_args=flags, name="prom-v1")
    t0 = (int(time.time()) - 60) * 1000
    wr = remote_pb2.WriteRequest()
    for k in range(5):
        t = t0 + 1000 * k
        c = wr.timeseries.add()
        for n, v in [("__name__", "enc_counter_total"), ("job", "enc"), ("empty", "")]:
            c.labels.add(name=n, value=v)
        c.samples.add(value=10.0 + k, timestamp=t)
        ex = c.exemplars.add(value=0.25 * k, timestamp=t)
        ex.labels.add(name="trace_id", value=f"trace-{k}")
        hi = wr.timeseries.add()
        for n, v in [("job", "enc"), ("__name__", "enc_latency_seconds")]:  # unsorted
            hi.labels.add(name=n, value=v)
        h = hi.histograms.add(count_int=9 + k, sum=1.5 * k, schema=1, zero_threshold=1e-3, zero_count_int=1,
                              positive_deltas=[2, 1 + k], negative_deltas=[1, 1], timestamp=t,
                              reset_hint=types_pb2.Histogram.NO if k else types_pb2.Histogram.UNKNOWN)
        h.positive_spans.add(offset=-1, length=2)
        h.negative_spans.add(offset=2, length=2)
        fl = wr.timeseries.add()
        for n, v in [("__name__", "enc_custom_buckets"), ("job", "enc")]:
            fl.labels.add(name=n, value=v)
        f = fl.histograms.add(count_float=3.5 + k, sum=2.25, schema=-53, positive_counts=[1.5, 2.0 + k],
                              custom_values=[0.1, 1.0], timestamp=t, reset_hint=types_pb2.Histogram.GAUGE)
        f.positive_spans.add(offset=0, length=2)
    v2 = v2_from(wr)
    d = decode_v2(v2)
    assert (d.status == STATUS_OK).all()
    v1 = encode_v1_timeseries(d)
    code, text = _post(a.url, v2, "application/x-protobuf;proto=io.prometheus.write.v2.Request")
    assert code == 204, text
    code, text = _post(b.url, v1, "application/x-protobuf")
    assert code == 204, text
    rng = dict(query='{job="enc"}', start=t0 / 1000, end=(t0 + 4000) / 1000, step="1")
    got_a, got_b = _api(a.url, "/api/v1/query_range", **rng), _api(b.url, "/api/v1/query_range", **rng)
    assert len(got_a) == 3 and sum(len(s.get("values", [])) + len(s.get("histograms", [])) for s in got_a) >= 15
    assert got_b == got_a
    ex = dict(query='{job="enc"}', start=(t0 - 1000) / 1000, end=(t0 + 5000) / 1000)
    ex_a, ex_b = _api(a.url, "/api/v1/query_exemplars", **ex), _api(b.url, "/api/v1/query_exemplars", **ex)
    assert len(ex_a) == 1 and len(ex_a[0]["exemplars"]) == 5
    assert ex_b == ex_a


def test_thanos_hash_over_canonical_labels_and_label_bytes_bound():
    ts = ts_msg([("job", "x"), ("__name__", "up"), ("e", "")], [(1, 1.0)])
    body = writeapi.encode_write_request([ts], "tn", 0)
    as_sent = decode_thanos_write(body)[0].hashes.tolist()
    canonical_hash = decode_thanos_write(body, hash_as_sent=False)[0].hashes.tolist()
    assert as_sent == hr.series_hashes("tn", [[("job", "x"), ("__name__", "up"), ("e", "")]]).tolist()
    assert canonical_hash == hr.series_hashes("tn", [[("__name__", "up"), ("job", "x")]]).tolist()
    with pytest.raises(WriteDecodeError) as ei:
        decode_thanos_write(body, max_label_bytes=5)
    assert (ei.value.status, ei.value.message) == (413, "the label sets of the request exceed 5 bytes")
