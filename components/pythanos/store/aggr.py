"""Chunks of a block as StoreAPI ``AggrChunk`` bytes, as Thanos' ``populateChunk`` fills them.

A raw chunk (XOR, histogram, float histogram) goes into ``raw`` whatever aggregates were asked
for. A downsampled chunk (on-disk encoding 0xFF: five ``uvarint(len) [encoding byte, data]``
entries count, sum, min, max, counter) fills only the requested aggregate fields; a requested
aggregate that the chunk lacks is an error, as in Thanos. Every ``Chunk`` carries
``hash = xxhash64(data)`` (Thanos' store computes it: ``WithChunkHashCalculation(true)``).

Fields are written in field-number order and zero values left out, so the bytes equal what the
generated serializer gives for the same message.
"""
from __future__ import annotations

from typing import Sequence

import xxhash

from ..storeapi.types import uvarint
from ..tsdb import aggrchunk

__all__ = ["ENCODING_AGGR", "AGGR_FIELDS", "aggr_chunk_bytes", "AggrChunkError"]

ENCODING_AGGR = aggrchunk.AGGR_ENCODING
# StoreAPI Aggr enum (COUNT=1 ... COUNTER=5) -> (index in the on-disk AggrChunk, AggrChunk field tag)
AGGR_FIELDS = {1: (0, 0x22), 2: (1, 0x2A), 3: (2, 0x32), 4: (3, 0x3A), 5: (4, 0x42)}
_AGGR_NAMES = ("count", "sum", "min", "max", "counter")


class AggrChunkError(ValueError):
    """A downsampled chunk lacks a requested aggregate, or is malformed."""


def _chunk_msg(prom_encoding: int, data: bytes) -> bytes:
    """``thanos.Chunk{type, data, hash}`` bytes (type = Prometheus encoding - 1; XOR = 0 left out)."""
    out = b""
    if prom_encoding > 1:
        out = b"\x08" + uvarint(prom_encoding - 1)
    h = xxhash.xxh64_intdigest(data)
    if data:  # proto3 leaves an empty bytes field out
        out += b"\x12" + uvarint(len(data)) + data
    if h:
        out += b"\x18" + uvarint(h)
    return out


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + uvarint(len(payload)) + payload


def aggr_chunk_bytes(mint: int, maxt: int, encoding: int, data: bytes, aggrs: Sequence[int]) -> bytes:
    """The ``thanos.AggrChunk`` message bytes of one chunk read from a block."""
    head = (b"\x08" + uvarint(mint & 0xFFFFFFFFFFFFFFFF) if mint else b"") + \
           (b"\x10" + uvarint(maxt & 0xFFFFFFFFFFFFFFFF) if maxt else b"")
    if encoding != ENCODING_AGGR:
        return head + _field(0x1A, _chunk_msg(encoding, data))
    parts = [head]
    for a in sorted(set(aggrs)):
        if a not in AGGR_FIELDS:  # RAW on a downsampled chunk: Thanos fills nothing either
            continue
        idx, tag = AGGR_FIELDS[a]
        e = aggrchunk.get(data, idx)
        if e is None:
            raise AggrChunkError(f"aggregate {_AGGR_NAMES[idx]} does not exist")
        parts.append(_field(tag, _chunk_msg(e[0], e[1])))
    return b"".join(parts)
