"""Thanos' downsampled chunk on disk (``pkg/compact/downsample/aggr.go``): the reading side.

A chunk with encoding byte ``0xFF`` (``ChunkEncAggr``) holds five sub-chunks in ``AggrType``
order count, sum, min, max, counter. Each is ``uvarint(L)`` and, when ``L > 0``, one Prometheus
chunk encoding byte (1 XOR, 3 float histogram) and ``L`` bytes of that sub-chunk (``L`` does not
count the encoding byte); ``L == 0`` marks an absent aggregate.

The store gateway sends the sub-chunks as the ``count``..``counter`` fields of a StoreAPI
``AggrChunk`` (``populateChunk``), with the StoreAPI numbering of ``Chunk.Encoding`` (XOR 0,
HISTOGRAM 1, FLOAT_HISTOGRAM 2: the encoding byte minus one); :func:`split` gives them in that
form, keyed by ``thanos.Aggr`` (COUNT 1 .. COUNTER 5).
"""
from __future__ import annotations

__all__ = ["AGGR_ENCODING", "AGGR_TYPES", "get", "split", "store_encoding"]

AGGR_ENCODING = 0xFF
"""``downsample.ChunkEncAggr``; also what a StoreAPI raw chunk's ``type`` says when a store sends an
on-disk aggregate chunk as it is (the querier then reads its aggregates, see ``pythanos.query``)."""

AGGR_TYPES = ("count", "sum", "min", "max", "counter")
"""``downsample.AggrType`` order; entry ``i`` is ``thanos.Aggr`` ``i + 1``."""


def store_encoding(b: int) -> int:
    """A Prometheus chunk encoding byte as ``thanos.Chunk.Encoding`` (unknown ones as 0xFF)."""
    return b - 1 if 1 <= b <= 3 else AGGR_ENCODING


def split(data: bytes | memoryview) -> dict[int, tuple[int, bytes]]:
    """The present aggregates of an on-disk aggregate chunk (its bytes after the encoding byte):
    ``{thanos.Aggr: (thanos.Chunk.Encoding, sub-chunk bytes)}``. Raises ``ValueError`` when an
    entry runs past the end (Thanos' ``AggrChunk.Get``: "invalid size")."""
    b = memoryview(data)
    out: dict[int, tuple[int, bytes]] = {}
    p = 0
    for i in range(len(AGGR_TYPES)):
        n = shift = 0
        while True:
            if p >= len(b) or shift >= 64:
                raise ValueError(f"aggregate chunk: invalid size of {AGGR_TYPES[i]}")
            x = b[p]
            p += 1
            n |= (x & 0x7F) << shift
            if x < 0x80:
                break
            shift += 7
        if n == 0:
            continue
        if len(b) - p < n + 1:
            raise ValueError(f"aggregate chunk: invalid size of {AGGR_TYPES[i]}")
        out[i + 1] = (store_encoding(b[p]), bytes(b[p + 1:p + 1 + n]))
        p += n + 1
    return out


def get(data: bytes, want: int):
    """Entry ``want`` (0 count .. 4 counter) of an on-disk AggrChunk as ``(prom_encoding, bytes)``,
    or None when unset; parsed as Thanos' ``AggrChunk.Get`` (which also needs one byte after a
    zero length, so a trailing unset entry reads as malformed there and here)."""
    pos = 0
    n = len(data)
    for i in range(want + 1):
        ln = 0
        shift = 0
        while True:
            if pos >= n or shift > 63:
                return None
            b = data[pos]
            pos += 1
            ln |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        if n - pos < ln + 1:
            return None
        if ln == 0:
            if i == want:
                return None
            continue
        if i == want:
            return data[pos], bytes(data[pos + 1:pos + 1 + ln])
        pos += 1 + ln
    return None
