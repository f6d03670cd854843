"""The block ``tombstones`` file (Prometheus ``tsdb/tombstones``).

Layout: magic ``0x0130BA30`` BE, version byte ``1``, stones (``uvarint seriesRef``, ``varint
mint``, ``varint maxt``; one stone per closed interval ``[mint, maxt]``), then CRC32C BE over the
stones only. The empty file is ``0130ba30 01 00000000``. Readers merge the intervals of a series
(sorted, overlapping or adjacent ones coalesced, as Go's ``Intervals.Add``). A missing file
means no tombstones. Thanos never uploads tombstones.
"""
from __future__ import annotations

import os
import struct
from typing import Mapping, Sequence

import google_crc32c

from .encoding import put_uvarint, put_varint
from .errors import CorruptBlockError

MAGIC_TOMBSTONE = 0x0130BA30
TOMBSTONES_V1 = 1
HEADER = struct.pack(">IB", MAGIC_TOMBSTONE, TOMBSTONES_V1)
FILENAME = "tombstones"

Intervals = list  # list[tuple[int, int]], closed intervals


def merge_intervals(intervals: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with overlapping and adjacent (``maxt + 1 == next mint``) intervals coalesced."""
    out: list[list[int]] = []
    for mint, maxt in sorted((int(a), int(b)) for a, b in intervals):
        if out and mint <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], maxt)
        else:
            out.append([mint, maxt])
    return [(a, b) for a, b in out]


def encode(stones: Mapping[int, Sequence[tuple[int, int]]]) -> bytes:
    """File bytes for ``{series_ref: [(mint, maxt), ...]}`` (refs ascending, intervals as given)."""
    body = bytearray()
    for ref in sorted(stones):
        for mint, maxt in stones[ref]:
            put_uvarint(body, int(ref))
            put_varint(body, int(mint))
            put_varint(body, int(maxt))
    return HEADER + bytes(body) + struct.pack(">I", google_crc32c.value(bytes(body)))


def write(block_dir: str | os.PathLike, stones: Mapping[int, Sequence[tuple[int, int]]] | None = None) -> int:
    """Write ``<block_dir>/tombstones`` atomically (tmp + rename); returns its size."""
    data = encode(stones or {})
    path = os.path.join(os.fspath(block_dir), FILENAME)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
    return len(data)


def decode(data: bytes, *, block: str = "", file: str = FILENAME) -> dict[int, list[tuple[int, int]]]:
    """Parse tombstones bytes into ``{series_ref: merged intervals}``; raises CorruptBlockError."""
    def err(off: int, what: str) -> CorruptBlockError:
        return CorruptBlockError(block, file, off, what)

    if len(data) < 5:
        raise err(0, f"tombstones file too short for its header ({len(data)} bytes)")
    magic, version = struct.unpack_from(">IB", data)
    if magic != MAGIC_TOMBSTONE:
        raise err(0, f"invalid magic number {magic:#010x} (want {MAGIC_TOMBSTONE:#010x})")
    if version != TOMBSTONES_V1:
        raise err(4, f"invalid tombstones format version {version}")
    if len(data) < 9:
        raise err(5, "tombstones file too short for its checksum")
    end = len(data) - 4
    body = data[5:end]
    want = struct.unpack_from(">I", data, end)[0]
    got = google_crc32c.value(bytes(body))
    if got != want:
        raise err(end, f"checksum mismatch: stored {want:08x}, computed {got:08x}")
    out: dict[int, list[tuple[int, int]]] = {}
    pos = 5

    def uvarint() -> int:
        nonlocal pos
        n = shift = 0
        start = pos
        while True:
            if pos >= end:
                raise err(start, "truncated varint in tombstone")
            b = data[pos]
            pos += 1
            if shift == 63 and b > 1:  # a 10th byte above 1 overflows 64 bits (Go's binary.Uvarint)
                raise err(start, "varint overflows 64 bits in tombstone")
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n
            shift += 7
            if shift > 63:
                raise err(start, "varint overflows 64 bits in tombstone")

    while pos < end:
        ref = uvarint()
        z = uvarint()
        mint = (z >> 1) ^ -(z & 1)
        z = uvarint()
        maxt = (z >> 1) ^ -(z & 1)
        out.setdefault(ref, []).append((mint, maxt))
    return {ref: merge_intervals(iv) for ref, iv in out.items()}


def read(block_dir: str | os.PathLike, *, block: str | None = None) -> dict[int, list[tuple[int, int]]]:
    """Read ``<block_dir>/tombstones``; a missing file means no tombstones."""
    path = os.path.join(os.fspath(block_dir), FILENAME)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    return decode(data, block=block if block is not None else os.path.basename(os.path.normpath(block_dir)))


def num_intervals(stones: Mapping[int, Sequence[tuple[int, int]]]) -> int:
    return sum(len(v) for v in stones.values())
