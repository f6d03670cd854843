"""Prometheus remote-write request bodies as the receiver reads them (``remote.write``): the C walk
(``decode_v1``/``decode_v2``) on the snappy-decoded protobuf, the rare paths on its result
(exemplars, native histograms, metadata, the RW 2.0 error texts), and ``decode_request`` on the
bytes as an HTTP body (snappy header and block, content type).

Fine: :class:`WriteDecodeError` with a 4xx status, what the receiver answers. Checked: the columns
are consistent (offsets, counts) and every label blob decodes."""
from __future__ import annotations

import numpy as np

from pythanos.remote.write import WriteDecodeError, decode_blob, decode_request, decode_v1, decode_v2

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


def test_one_input(data: bytes) -> None:
    """``data[0]``: bit 0 picks RW 2.0, bit 1 also reads the rest as an HTTP body."""
    if not data:
        return
    body, v2 = data[1:], bool(data[0] & 1)
    try:
        d = (decode_v2 if v2 else decode_v1)(body, tenant="t", max_label_bytes=1 << 20)
    except WriteDecodeError as e:
        assert e.status in (400, 413) and e.message
    else:
        _columns(d)
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
