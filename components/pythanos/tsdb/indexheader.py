"""Thanos' index-header (binary format v1): the parts of a block's ``index`` a store needs in
memory, kept on local disk so a restart does not download them again.

File layout (big-endian, ``pkg/block/indexheader/binary_reader.go``)::

    magic BAAAD792 | version 1 | TSDB index version | BE64 end of the last postings list
    | copy of index[toc.symbols : toc.series]            (the symbol table)
    | copy of index[toc.postings_table : end of index]   (postings offset table + index TOC)
    | BE64 offset of the symbols copy | BE64 offset of the postings-table copy | CRC32C of those 16 bytes

:func:`build` makes one from ranged reads of the remote index (five requests, big ranges cut
into parts), written to ``index-header.tmp`` then renamed. :class:`HeaderedIndexSource` is a
:class:`~.source.ByteSource` over the *whole* index that answers the ranges the header copies
from the local file and everything else (postings lists, series) from the remote source, so the
ordinary :class:`~.index.IndexReader` reads a block in object storage with nothing downloaded
at open but what the header holds.
"""
from __future__ import annotations

import os
import struct
from typing import Optional

from .encoding import crc32c
from .errors import CorruptIndexError
from .index import FORMAT_V1, FORMAT_V2, FORMAT_V3, HEADER_LEN, MAGIC_INDEX, TOC, TOC_LEN
from .source import ByteSource, FileSource

__all__ = ["INDEX_HEADER_FILENAME", "MAGIC_INDEX_HEADER", "build", "HeaderedIndexSource", "read_header_toc"]

INDEX_HEADER_FILENAME = "index-header"
MAGIC_INDEX_HEADER = 0xBAAAD792
HEADER_VERSION_1 = 1
_HEADER_LEN = 4 + 1 + 1 + 8
_TOC_LEN = 8 + 8 + 4
_PART = 16 << 20  # ranges above this are fetched in parts (Thanos' parallel_bucket.go uses 16 MiB)

_HEAD = struct.Struct(">IBBQ")
_IDX_TOC = struct.Struct(">6Q")
_BIN_TOC = struct.Struct(">QQI")


def _copy(src: ByteSource, out, offset: int, length: int) -> None:
    pos = offset
    end = offset + length
    while pos < end:
        n = min(_PART, end - pos)
        out.write(src.read(pos, n))
        pos += n


def build(remote: ByteSource, path: str | os.PathLike, *, block: str = "") -> None:
    """Write the index-header of the index behind ``remote`` to ``path`` (atomically).

    Raises :class:`CorruptIndexError` naming the block when the index's header or TOC is bad."""
    path = os.fspath(path)
    size = remote.size()
    if size < HEADER_LEN + TOC_LEN:
        raise CorruptIndexError(block, "index", 0, f"file too small for an index ({size} bytes)")
    head = remote.read(0, HEADER_LEN)
    magic, version = struct.unpack(">IB", head)
    if magic != MAGIC_INDEX:
        raise CorruptIndexError(block, "index", 0, f"invalid magic number {magic:08x} (want {MAGIC_INDEX:08x})")
    if version not in (FORMAT_V1, FORMAT_V2, FORMAT_V3):
        raise CorruptIndexError(block, "index", 4, f"unsupported index format version {version}")
    toc_off = size - TOC_LEN
    tb = remote.read(toc_off, TOC_LEN)
    want = struct.unpack_from(">I", tb, 48)[0]
    if crc32c(tb[:48]) != want:
        raise CorruptIndexError(block, "index", toc_off + 48, "TOC: CRC32C mismatch")
    toc = TOC(*_IDX_TOC.unpack_from(tb))
    if not (HEADER_LEN <= toc.symbols < toc.series <= toc_off and HEADER_LEN <= toc.postings_table <= toc_off):
        raise CorruptIndexError(block, "index", toc_off, f"TOC: section offsets out of order ({toc})")
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        with open(tmp, "wb") as out:
            out.write(_HEAD.pack(MAGIC_INDEX_HEADER, HEADER_VERSION_1, version, toc.postings_table))
            sym_at = _HEADER_LEN
            _copy(remote, out, toc.symbols, toc.series - toc.symbols)
            pt_at = out.tell()
            _copy(remote, out, toc.postings_table, size - toc.postings_table)
            t = struct.pack(">QQ", sym_at, pt_at)
            out.write(t + struct.pack(">I", crc32c(t)))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_header_toc(local: ByteSource, *, block: str = "") -> tuple[int, int, int, int]:
    """``(index version, last postings end, symbols copy offset, postings-table copy offset)``,
    checked (magic, version, CRC, offsets inside the file)."""
    name = INDEX_HEADER_FILENAME
    size = local.size()
    if size < _HEADER_LEN + _TOC_LEN:
        raise CorruptIndexError(block, name, 0, f"file too small ({size} bytes)")
    magic, hv, iv, last = _HEAD.unpack(local.read(0, _HEADER_LEN))
    if magic != MAGIC_INDEX_HEADER:
        raise CorruptIndexError(block, name, 0, f"invalid magic number {magic:08x} (want {MAGIC_INDEX_HEADER:08x})")
    if hv != HEADER_VERSION_1:
        raise CorruptIndexError(block, name, 4, f"unsupported index-header version {hv}")
    sym, pt, crc = _BIN_TOC.unpack(local.read(size - _TOC_LEN, _TOC_LEN))
    if crc32c(struct.pack(">QQ", sym, pt)) != crc:
        raise CorruptIndexError(block, name, size - 4, "TOC: CRC32C mismatch")
    if not (_HEADER_LEN <= sym <= pt <= size - _TOC_LEN - TOC_LEN):
        raise CorruptIndexError(block, name, size - _TOC_LEN, f"TOC: offsets {sym}, {pt} out of range")
    return iv, last, sym, pt


class HeaderedIndexSource:
    """The whole remote index as a :class:`ByteSource`: header-held ranges from the local
    index-header, the rest from ``remote`` (which is only touched for postings and series)."""

    def __init__(self, header_path: str | os.PathLike, remote: ByteSource, *, block: str = "") -> None:
        self.name = "index"
        self.block = block
        self.remote = remote
        self.local = FileSource(header_path, block=block, name=INDEX_HEADER_FILENAME)
        try:
            self.version, _, sym, pt = read_header_toc(self.local, block=block)
            local_size = self.local.size()
            pt_len = local_size - _TOC_LEN - pt
            # the index's own TOC ends the postings-table copy: it gives every section offset
            toc = TOC(*_IDX_TOC.unpack(self.local.read(pt + pt_len - TOC_LEN, 6 * 8)))
            self._size = toc.postings_table + pt_len
            if toc.series - toc.symbols != pt - sym:
                raise CorruptIndexError(block, INDEX_HEADER_FILENAME, pt + pt_len - TOC_LEN,
                                        "symbol table copy does not match the index TOC")
            # (index start, length, local start) of each copied range
            self._spans = ((toc.symbols, pt - sym, sym), (toc.postings_table, pt_len, pt))
            self._head = struct.pack(">IB", MAGIC_INDEX, self.version)
        except BaseException:
            self.local.close()
            raise

    def size(self) -> int:
        return self._size

    def _local(self, offset: int, length: int) -> Optional[bytes]:
        if offset + length <= HEADER_LEN:
            return self._head[offset:offset + length]
        for start, n, at in self._spans:
            if start <= offset and offset + length <= start + n:
                return self.local.read(at + offset - start, length)
        return None

    def read(self, offset: int, length: int) -> bytes:
        data = self._local(offset, length)
        return data if data is not None else self.remote.read(offset, length)

    def close(self) -> None:
        self.local.close()
        close = getattr(self.remote, "close", None)
        if close is not None:
            close()
