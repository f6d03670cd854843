"""Prometheus remote-write request bodies as the receiver reads them (``remote.write``): the C walk
(``decode_v1``/``decode_v2``) on the snappy-decoded protobuf, the rare paths on its result
(exemplars, native histograms, metadata, the RW 2.0 error texts), ``decode_request`` on the
bytes as an HTTP body (snappy header and block, content type), ``decode_thanos_write`` (the gRPC
``thanos.WriteRequest``), and the reverse direction on every decoded request: ``encode_v1_timeseries``
and ``timeseries_frames``, whose bytes must decode again to the same label blobs and samples.

Fine: :class:`WriteDecodeError` with a 4xx status, what the receiver answers. Checked: the columns
are consistent (offsets, counts) and every label blob decodes."""
from __future__ import annotations

import numpy as np

from pythanos.remote.write import (WriteDecodeError, decode_blob, decode_request, decode_thanos_write, decode_v1,
                                   decode_v2, encode_v1_timeseries, timeseries_frames)

_CT = ("application/x-protobuf", "application/x-protobuf;proto=io.prometheus.write.v2.Request")


def _columns(d) -> None:
    n, m = d.n_series, d.n_samples
    assert len(d.blob_offsets) == n + 1 and d.blob_offsets[0] == 0 and d.blob_offsets[-1] == len(d.blobs)
    assert (np.diff(d.blob_offsets) > 0).all()
    assert len(d.sample_offsets) == n + 1 and d.sample_offsets[-1] == m and (np.diff(d.sample_offsets) >= 0).all()
    for a in (d.status, d.flags, d.label_counts, d.hashes, d.n_exemplars, d.n_histograms):
        assert len(a) == n
    assert len(d.sample_series) == len(d.sample_ts) == len(d.sample_values) == m
    assert (d.sample_series == np.repeat(np.arange(n), np.diff(d.sample_offsets))).all()
    for i in range(min(n, 16)):
        decode_blob(d.blob(i))
        d.series_error(i)


def _reencode(d) -> None:
    """The series encoded back as RW 1.0 decode to the same blobs and samples (RW 2.0 exemplars or
    histograms the decoder only counted may be malformed: ValueError, never a crash)."""
    try:
        enc = encode_v1_timeseries(d)
    except ValueError as e:
        assert "malformed" in str(e) or "wire type" in str(e), e
        return
    back = decode_v1(enc, max_label_bytes=1 << 24)
    assert back.n_series == d.n_series and back.blobs == d.blobs
    assert back.sample_ts.tolist() == d.sample_ts.tolist()
    assert back.sample_values.view(np.uint64).tolist() == d.sample_values.view(np.uint64).tolist()
    if not d.is_v2:
        assert decode_v1(timeseries_frames(d), max_label_bytes=1 << 24).n_series == d.n_series


def test_one_input(data: bytes) -> None:
    """``data[0]``: bit 0 picks RW 2.0, bit 1 also reads the rest as an HTTP body, bit 2 reads it
    as a thanos.WriteRequest instead."""
    if not data:
        return
    body, v2 = data[1:], bool(data[0] & 1)
    if data[0] & 4:
        try:
            d, _, _ = decode_thanos_write(body, max_label_bytes=1 << 20)
        except WriteDecodeError as e:
            assert e.status in (400, 413) and e.message
        else:
            _columns(d)
            _reencode(d)
        return
    try:
        d = (decode_v2 if v2 else decode_v1)(body, tenant="t", max_label_bytes=1 << 20)
    except WriteDecodeError as e:
        assert e.status in (400, 413) and e.message
    else:
        _columns(d)
        _reencode(d)
        if v2:
            assert len(d.symbols()) == len(d.symbol_ranges)
        for rare in (d.exemplars, d.histograms, d.metadata):
            try:
                rare()
            except WriteDecodeError as e:
                assert e.status == 400
    if data[0] & 2:
        try:
            decode_request(body, _CT[v2], "", "snappy", max_decoded_size=1 << 16)
        except WriteDecodeError as e:
            assert 400 <= e.status < 500
