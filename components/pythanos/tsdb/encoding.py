"""Primitive encodings of the Prometheus TSDB (``tsdb/encoding/encoding.go``).

* uvarint: Go ``binary.PutUvarint`` (LEB128, 1-10 bytes);
* varint: Go ``binary.PutVarint`` (zig-zag, then uvarint);
* BE32 / BE64: big-endian fixed width;
* strings: uvarint byte length + UTF-8 bytes;
* CRC32: Castagnoli (CRC-32C), stored big-endian.

``Decbuf`` is a bounds-checked cursor over a byte slice that knows the absolute
file offset of its first byte: any overrun, malformed varint or CRC mismatch
raises ``CorruptBlockError`` (or the subclass given) naming block, file and
absolute offset. ``struct.error`` / ``IndexError`` never escape.
"""
from __future__ import annotations

import struct
from typing import Type

import google_crc32c

from .errors import CorruptBlockError

__all__ = [
    "VarintError",
    "crc32c",
    "encode_uvarint",
    "encode_varint",
    "put_uvarint",
    "put_varint",
    "put_be32",
    "put_be64",
    "put_uvarint_str",
    "put_uvarint_bytes",
    "be32",
    "be64",
    "uvarint_len",
    "decode_uvarint",
    "decode_varint",
    "Decbuf",
]

_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_U64_MAX = (1 << 64) - 1
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1


class VarintError(ValueError):
    """A varint is truncated or overflows 64 bits; ``pos`` is the position in the input."""

    def __init__(self, what: str, pos: int) -> None:
        super().__init__(what)
        self.what = what
        self.pos = pos


# --------------------------------------------------------------------------- CRC

def crc32c(data, value: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data`` (bytes-like), optionally continuing from ``value``."""
    if type(data) is not bytes:
        data = bytes(data)
    if value:
        return google_crc32c.extend(value, data)
    return google_crc32c.value(data)


# --------------------------------------------------------------------------- encoding

def encode_uvarint(n: int) -> bytes:
    if n < 0x80:
        if n < 0:
            raise ValueError(f"uvarint of negative number {n}")
        return bytes((n,))
    if n > _U64_MAX:
        raise ValueError(f"uvarint overflow: {n}")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_varint(n: int) -> bytes:
    if n < _I64_MIN or n > _I64_MAX:
        raise ValueError(f"varint overflow: {n}")
    return encode_uvarint(((n << 1) ^ (n >> 63)) & _U64_MAX)


def put_uvarint(buf: bytearray, n: int) -> None:
    if n < 0x80:
        if n < 0:
            raise ValueError(f"uvarint of negative number {n}")
        buf.append(n)
        return
    if n > _U64_MAX:
        raise ValueError(f"uvarint overflow: {n}")
    while n >= 0x80:
        buf.append((n & 0x7F) | 0x80)
        n >>= 7
    buf.append(n)


def put_varint(buf: bytearray, n: int) -> None:
    if n < _I64_MIN or n > _I64_MAX:
        raise ValueError(f"varint overflow: {n}")
    put_uvarint(buf, ((n << 1) ^ (n >> 63)) & _U64_MAX)


def put_be32(buf: bytearray, n: int) -> None:
    buf += _BE32.pack(n)


def put_be64(buf: bytearray, n: int) -> None:
    buf += _BE64.pack(n)


def be32(n: int) -> bytes:
    return _BE32.pack(n)


def be64(n: int) -> bytes:
    return _BE64.pack(n)


def put_uvarint_bytes(buf: bytearray, b: bytes) -> None:
    put_uvarint(buf, len(b))
    buf += b


def put_uvarint_str(buf: bytearray, s: str) -> None:
    b = s.encode("utf-8", "surrogateescape")
    put_uvarint(buf, len(b))
    buf += b


def uvarint_len(n: int) -> int:
    """Number of bytes of the uvarint encoding of ``n``."""
    return max(1, (n.bit_length() + 6) // 7)


# --------------------------------------------------------------------------- decoding

def decode_uvarint(data, pos: int = 0, end: int | None = None) -> tuple[int, int]:
    """Decode a uvarint at ``data[pos]``; returns ``(value, next_pos)``. Raises VarintError."""
    if end is None:
        end = len(data)
    if pos >= end:
        raise VarintError("uvarint: unexpected end of data", pos)
    x = data[pos]
    if x < 0x80:
        return x, pos + 1
    start = pos
    result = x & 0x7F
    shift = 7
    pos += 1
    while True:
        if pos >= end:
            raise VarintError("uvarint: unexpected end of data", start)
        x = data[pos]
        pos += 1
        if x < 0x80:
            if shift == 63 and x > 1:
                raise VarintError("uvarint: overflows 64 bits", start)
            return result | (x << shift), pos
        if shift >= 63:
            raise VarintError("uvarint: overflows 64 bits", start)
        result |= (x & 0x7F) << shift
        shift += 7


def decode_varint(data, pos: int = 0, end: int | None = None) -> tuple[int, int]:
    """Decode a zig-zag varint at ``data[pos]``; returns ``(value, next_pos)``. Raises VarintError."""
    u, pos = decode_uvarint(data, pos, end)
    return (u >> 1) ^ -(u & 1), pos


class Decbuf:
    """Bounds-checked reader over ``data[pos:end]``; ``base`` is the absolute file offset of ``data[0]``."""

    __slots__ = ("data", "pos", "end", "base", "block", "file", "err")

    def __init__(self, data, base: int = 0, block: str = "", file: str = "",
                 err: Type[CorruptBlockError] = CorruptBlockError, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.base = base
        self.block = block
        self.file = file
        self.err = err

    # -- errors
    @property
    def offset(self) -> int:
        """Absolute file offset of the cursor."""
        return self.base + self.pos

    def error(self, what: str, pos: int | None = None) -> CorruptBlockError:
        return self.err(self.block, self.file, self.base + (self.pos if pos is None else pos), what)

    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise self.error(f"{what}: need {n} bytes, {self.end - self.pos} left")

    # -- primitives
    def be32(self) -> int:
        self._need(4, "be32")
        v = _BE32.unpack_from(self.data, self.pos)[0]
        self.pos += 4
        return v

    def be64(self) -> int:
        self._need(8, "be64")
        v = _BE64.unpack_from(self.data, self.pos)[0]
        self.pos += 8
        return v

    def byte(self) -> int:
        self._need(1, "byte")
        v = self.data[self.pos]
        self.pos += 1
        return v

    def uvarint(self) -> int:
        data, pos = self.data, self.pos
        if pos < self.end:
            x = data[pos]
            if x < 0x80:
                self.pos = pos + 1
                return x
        try:
            v, self.pos = decode_uvarint(data, pos, self.end)
        except VarintError as e:
            raise self.error(e.what, e.pos) from None
        return v

    def varint(self) -> int:
        u = self.uvarint()
        return (u >> 1) ^ -(u & 1)

    def bytes(self, n: int) -> bytes:
        self._need(n, "bytes")
        v = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return v

    def skip(self, n: int) -> None:
        self._need(n, "skip")
        self.pos += n

    def uvarint_bytes(self) -> bytes:
        at = self.pos
        n = self.uvarint()
        if self.pos + n > self.end:
            raise self.error(f"string of {n} bytes runs past the end of its section", at)
        v = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return v

    def uvarint_str(self) -> str:
        return self.uvarint_bytes().decode("utf-8", "surrogateescape")

    def check_crc(self, start: int, end: int, what: str = "section") -> None:
        """Check the BE32 CRC32C at the cursor against ``data[start:end]`` and advance past it."""
        at = self.pos
        want = self.be32()
        got = crc32c(bytes(self.data[start:end]))
        if got != want:
            raise self.error(f"{what}: CRC32C mismatch (stored {want:08x}, computed {got:08x})", at)
