"""XOR chunk decoder (``tsdb.chunkenc``): the bytes of a chunk as a block or a store hands them over.

Decoded one by one (``decode_xor``: the querier's single chunks) and as a batch whose ranges come
from the input (``decode_xor_many``: the block reader, the compactor, the downsampler), overlapping
ranges included. Fine: :class:`CorruptChunkError`. Also checked: the output is bounded by the input
(``xor_max_samples``) and re-encoding what was decoded decodes to the same bits."""
from __future__ import annotations

import numpy as np

from pythanos.tsdb.chunkenc import decode_xor, decode_xor_many, encode_xor, xor_max_samples, xor_num_samples
from pythanos.tsdb.errors import CorruptChunkError


def _ranges(data: bytes) -> tuple[bytes, np.ndarray, np.ndarray]:
    """The first byte says how many (offset, length) byte pairs follow; the rest is the buffer."""
    if not data:
        return data, np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = min(data[0] % 8, (len(data) - 1) // 2)
    pairs = data[1:1 + 2 * k]
    buf = data[1 + 2 * k:]
    offs = np.frombuffer(pairs, dtype=np.uint8)[0::2].astype(np.int64)
    lens = np.frombuffer(pairs, dtype=np.uint8)[1::2].astype(np.int64)
    if k == 0:  # the whole buffer as one chunk
        offs, lens = np.zeros(1, np.int64), np.array([len(buf)], np.int64)
    return buf, offs, lens


def test_one_input(data: bytes) -> None:
    """Decode ``data`` alone and as a batch; a decoded chunk must round-trip through the encoder."""
    try:
        t, v = decode_xor(data)
    except CorruptChunkError:
        pass
    else:
        assert len(t) == len(v) == xor_num_samples(data) <= xor_max_samples(len(data)), (len(t), len(data))
        if len(t):
            t2, v2 = decode_xor(encode_xor(t, v))
            assert np.array_equal(t, t2) and np.array_equal(v.view(np.int64), v2.view(np.int64))
    buf, offs, lens = _ranges(data)
    try:
        counts, t, v = decode_xor_many(buf, offs, lens)
    except CorruptChunkError:
        return
    assert int(counts.sum()) == len(t) == len(v) <= xor_max_samples(len(buf)), (int(counts.sum()), len(buf))
