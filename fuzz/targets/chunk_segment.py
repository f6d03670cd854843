"""A chunk segment file (``chunks/000001``) as a bucket or a directory holds it: records read by
``ChunkReader.chunk`` (one ref) and ``ChunkReader.chunks_raw`` (batched, records parsed by
``_series.records`` in C), then turned into StoreAPI chunk fields by ``_series.raw_chunks`` as the
store gateway does.

The refs are those an index would give: the first two input bytes pick how far records are
walked by their length fields; a third picks one more offset anywhere in the file. Fine:
:class:`CorruptChunkError` (names block, file and offset). Checked: the batched and the single
reads agree."""
from __future__ import annotations

import numpy as np

from pythanos.tsdb._series import raw_chunks
from pythanos.tsdb.chunks import SEGMENT_HEADER_SIZE, ChunkReader
from pythanos.tsdb.errors import CorruptBlockError
from pythanos.tsdb.source import BytesSource


def _walk(seg: bytes, limit: int) -> list[int]:
    """Offsets of the records as their length fields chain them, from the header on."""
    refs, pos = [], SEGMENT_HEADER_SIZE
    while pos < len(seg) and len(refs) < limit:
        refs.append(pos)
        n = shift = 0
        p = pos
        while p < len(seg) and p - pos < 5:
            b = seg[p]
            p += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        pos = p + 1 + n + 4
    return refs


def test_one_input(data: bytes) -> None:
    """Read the records of the segment ``data[3:]`` one by one and batched."""
    if len(data) < 3:
        return
    seg = data[3:]
    refs = _walk(seg, 1 + data[0] % 32)
    if data[1] & 1 and len(seg):
        refs.append((data[2] * 7919 + data[1]) % len(seg))
    r = ChunkReader([BytesSource(seg, "chunks/000001", "fuzz")], block="fuzz", max_gap=data[1] * 64)
    try:
        single = [r.chunk(x) for x in refs]
        encs, buf, offs, lens = r.chunks_raw(refs[::-1])
    except CorruptBlockError:
        return
    batched = [(int(e), bytes(buf[o:o + n])) for e, o, n in zip(encs, offs, lens)]
    assert batched == single[::-1]
    k = len(refs)
    mints, maxts = np.arange(k, dtype=np.int64) - 1, np.arange(k, dtype=np.int64) * 1000
    msgs = raw_chunks(buf, mints, maxts, np.asarray(encs, dtype=np.int64), np.asarray(offs, dtype=np.int64),
                      np.asarray(lens, dtype=np.int64))
    assert len(msgs) == k
