"""Native histogram chunk decoder (``tsdb._histchunk``: encodings 2 and 3), as a block or a store
hands the bytes over, and the re-encoding a block cut through a head chunk uses (``slice``).

The first byte picks the encoding (its low bit) and a time range for the slice; the rest is the
chunk. Fine: ValueError naming the bit. Checked: the decoded columns agree in length with the
sample count in the header, bucket values are bounded by the input's bits, and a slice over
every sample decodes to the same times, sums and stale markers."""
from __future__ import annotations

import numpy as np

from pythanos.tsdb import _histchunk
from pythanos.tsdb.histchunk import decode_histogram_chunk

_I64 = (-(1 << 63), (1 << 63) - 1)


def test_one_input(data: bytes) -> None:
    """Decode ``data[1:]`` as a histogram chunk; a decoded chunk must survive a full slice."""
    if not data:
        return
    enc = 2 + (data[0] & 1)
    chunk = data[1:]
    try:
        d = decode_histogram_chunk(chunk, enc)
    except ValueError as e:
        assert "histogram chunk" in str(e), e
        return
    n = int.from_bytes(chunk[:2], "big")
    assert len(d) == n and len(d.sum) == len(d.stale) == len(d.count) == n
    assert d.buckets.size <= max(len(chunk) * 8, 1) + d.npos + d.nneg
    if n == 0:
        return
    lo, hi = (_I64 if data[0] & 2 else (int(d.t.min()), int(d.t.max())))
    again = _histchunk.slice(chunk, enc, lo, hi)
    e = decode_histogram_chunk(again, enc)
    assert np.array_equal(e.t, d.t) and np.array_equal(e.stale, d.stale)
    assert np.array_equal(e.sum.view(np.uint64), d.sum.view(np.uint64))
    assert e.header == d.header and e.schema == d.schema
