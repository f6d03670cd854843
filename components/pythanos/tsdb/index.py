"""Prometheus TSDB index, format v2 (``tsdb/index/index.go``): writer and ranged-read reader.

Layout (see shared/reference/prometheus-formats.md §3)::

    magic BAAAD700 | version 2 | symbols | series (16-aligned, ref = off/16)
    | [legacy label indices] | postings (4-aligned) | [label offset table]
    | postings offset table | TOC (6 x BE64 + CRC32C)

``IndexWriter(style="prom2")`` reproduces promtool/Prometheus 2.42 byte for byte
(legacy label indices, label offset table, 2.42's TOC values);
``style="prom3"`` writes what v3.7+ writes (no legacy structures).

``IndexReader`` reads the header, TOC, symbol table and postings offset table
on open (like Thanos' index-header) and everything else on demand with ranged
reads through a ``ByteSource``: one read per postings list (adjacent lists are
coalesced), one bounded read per series entry. Every CRC is verified; every
malformation raises ``CorruptIndexError`` naming block, file and offset.
"""
from __future__ import annotations

import bisect
import os
import struct
from typing import BinaryIO, Iterable, NamedTuple, Protocol, Sequence

import numpy as np

from .encoding import Decbuf, crc32c, put_uvarint, put_uvarint_str, put_varint
from .errors import CorruptBlockError, CorruptIndexError
from .labels import (MATCH_EQUAL, MATCH_NOT_EQUAL, MATCH_NOT_REGEXP, MATCH_REGEXP,
                     Matcher)
from .source import ByteSource, FileSource

__all__ = [
    "MAGIC_INDEX", "FORMAT_V1", "FORMAT_V2", "FORMAT_V3", "HEADER_LEN", "TOC_LEN",
    "TOC", "ChunkMeta", "IndexWriter", "IndexWriterError", "IndexReader", "IndexCache", "Matcher", "write_index",
]

MAGIC_INDEX = 0xBAAAD700
FORMAT_V1 = 1
FORMAT_V2 = 2
FORMAT_V3 = 3
HEADER_LEN = 5
TOC_LEN = 6 * 8 + 4
SERIES_ALIGN = 16
MAX_SERIES_REF = (1 << 32) - 1

_BE32 = struct.Struct(">I")
_TOC = struct.Struct(">6Q")
_EMPTY = np.empty(0, dtype=np.uint64)
_SERIES_WINDOW = 512          # first read of a series entry
_COALESCE_GAP = 64 * 1024     # postings lists closer than this are fetched in one read
_COALESCE_MAX = 32 << 20      # ... up to this many bytes per read
_SERIES_GAP = 4096            # series entries closer than this are fetched in one read
SERIES_PAGE = 16 << 10        # the index cache holds the series section in pages of this size


class ChunkMeta(NamedTuple):
    mint: int
    maxt: int
    ref: int


class TOC(NamedTuple):
    symbols: int
    series: int
    label_indices: int
    label_indices_table: int
    postings: int
    postings_table: int


class IndexWriterError(ValueError):
    """The caller broke a writer constraint (order, overlap, unknown symbol...)."""


def _be32(n: int) -> bytes:
    return _BE32.pack(n)


def _section(body: bytes | bytearray) -> bytes:
    """``len BE32 | body | CRC32C(body)``."""
    return b"".join((_BE32.pack(len(body)), body, _BE32.pack(crc32c(bytes(body)))))


# =========================================================================== writer

class IndexWriter:
    """Streams an index file.

    ``IndexWriter(path_or_file, symbols=None, style="prom2", empty_symbol=None)``

    * ``symbols``: every label name and value that series will use (any order,
      duplicates fine; ``""`` is kept if given — Prometheus head blocks have it as
      symbol #0). The header and symbol table are written at once and series are
      streamed to the file. With ``symbols=None`` the writer collects them and
      keeps series in memory until ``close()``; ``empty_symbol`` (default: True
      for prom2, False for prom3) then says whether ``""`` is added.
    * ``add_series(labels, chunk_metas)``: labels sorted by name, label sets in
      strictly increasing ``labels.Compare`` order; chunk metas ``(mint, maxt, ref)``
      with ``maxt >= mint``, ``mint > previous maxt``, refs non-decreasing within a
      series and across series. Returns the series ref (offset / 16).
    * ``close()``: writes label indices (prom2), postings, tables and the TOC.

    Postings are kept in memory (one list of refs per label pair), as Prometheus does.
    """

    def __init__(self, out: str | os.PathLike | BinaryIO, symbols: Iterable[str] | None = None, *,
                 style: str = "prom2", empty_symbol: bool | None = None) -> None:
        if style not in ("prom2", "prom3"):
            raise ValueError(f"unknown index style {style!r} (want 'prom2' or 'prom3')")
        self.style = style
        self._empty_symbol = (style == "prom2") if empty_symbol is None else empty_symbol
        if isinstance(out, (str, os.PathLike)):
            self._f: BinaryIO = open(out, "wb", buffering=1 << 20)
            self._own = True
        else:
            self._f = out
            self._own = False
        self._pos = 0
        self._closed = False
        self._last_labels: list | None = None
        self._last_chunk_ref = 0
        self._nseries = 0
        self._postings: dict[int, list[int]] = {}   # (name_idx << 32 | value_idx) -> refs
        self._all: list[int] = []
        self.toc: TOC | None = None
        self._buffered: list | None = None
        self._bulk_postings: list = []
        self._sym_index: dict[str, int] = {}
        self._symbols: list[str] = []
        if symbols is None:
            self._buffered = []
        else:
            self._write_symbols(symbols)

    # -- low level
    def _write(self, b: bytes | bytearray) -> None:
        self._f.write(b)
        self._pos += len(b)

    def _pad(self, align: int) -> None:
        p = (-self._pos) % align
        if p:
            self._write(b"\x00" * p)

    def _write_symbols(self, symbols: Iterable[str]) -> None:
        syms = sorted(set(symbols), key=lambda s: s.encode("utf-8", "surrogateescape"))
        self._symbols = syms
        self._sym_index = {s: i for i, s in enumerate(syms)}
        self._write(_BE32.pack(MAGIC_INDEX) + bytes((FORMAT_V2,)))
        body = bytearray(_BE32.pack(len(syms)))
        for s in syms:
            put_uvarint_str(body, s)
        if len(body) > 0xFFFFFFFF:
            raise IndexWriterError("symbol table exceeds 4 GiB")
        self._toc_symbols = self._pos
        self._write(_section(body))
        self._toc_series = self._pos

    # -- series
    def add_series(self, labels: Sequence[tuple[str, str]], chunk_metas: Sequence[tuple[int, int, int]] = ()) -> int:
        if self._closed:
            raise IndexWriterError("add_series after close")
        labels = [tuple(l) for l in labels]
        last = self._last_labels
        if last is not None and not labels > last:
            raise IndexWriterError(f"series out of order: {_fmt(labels)} does not sort after {_fmt(last)}")
        prev_name = None
        for n, v in labels:
            if not n:
                raise IndexWriterError(f"series {_fmt(labels)}: empty label name")
            if not v:
                raise IndexWriterError(f"series {_fmt(labels)}: label {n!r} has an empty value")
            if prev_name is not None and not n > prev_name:
                raise IndexWriterError(f"series {_fmt(labels)}: labels not sorted by name or duplicate name {n!r}")
            prev_name = n
        # chunk metas
        last_ref = self._last_chunk_ref
        prev_maxt = None
        for i, cm in enumerate(chunk_metas):
            mint, maxt, ref = cm[0], cm[1], cm[2]
            if maxt < mint:
                raise IndexWriterError(f"series {_fmt(labels)} chunk {i}: maxt {maxt} < mint {mint}")
            if prev_maxt is not None and mint <= prev_maxt:
                raise IndexWriterError(f"series {_fmt(labels)} chunk {i}: mint {mint} overlaps previous maxt {prev_maxt}")
            if ref < last_ref:
                raise IndexWriterError(f"series {_fmt(labels)} chunk {i}: chunk ref {ref} < previous ref {last_ref}")
            prev_maxt = maxt
            last_ref = ref
        self._last_labels = labels
        self._last_chunk_ref = last_ref
        if self._buffered is not None:
            self._buffered.append((labels, [tuple(c[:3]) for c in chunk_metas]))
            self._nseries += 1
            return -1
        return self._emit_series(labels, chunk_metas)

    def _emit_series(self, labels, chunk_metas) -> int:
        si = self._sym_index
        buf = bytearray()
        put_uvarint(buf, len(labels))
        keys = []
        try:
            for n, v in labels:
                ni = si[n]
                vi = si[v]
                put_uvarint(buf, ni)
                put_uvarint(buf, vi)
                keys.append((ni << 32) | vi)
        except KeyError as e:
            raise IndexWriterError(f"series {_fmt(labels)}: symbol {e.args[0]!r} not in the symbol table") from None
        put_uvarint(buf, len(chunk_metas))
        if chunk_metas:
            mint, maxt, ref = chunk_metas[0][:3]
            put_varint(buf, mint)
            put_uvarint(buf, maxt - mint)
            put_uvarint(buf, ref)
            t0, r0 = maxt, ref
            for cm in chunk_metas[1:]:
                mint, maxt, ref = cm[0], cm[1], cm[2]
                put_uvarint(buf, mint - t0)
                put_uvarint(buf, maxt - mint)
                put_varint(buf, ref - r0)
                t0, r0 = maxt, ref
        self._pad(SERIES_ALIGN)
        if self._pos % SERIES_ALIGN:
            raise IndexWriterError("internal: series not aligned")
        ref = self._pos // SERIES_ALIGN
        if ref > MAX_SERIES_REF:
            raise IndexWriterError("index exceeds 64 GiB")
        head = bytearray()
        put_uvarint(head, len(buf))
        self._write(bytes(head) + bytes(buf) + _BE32.pack(crc32c(bytes(buf))))
        post = self._postings
        for k in keys:
            lst = post.get(k)
            if lst is None:
                post[k] = [ref]
            else:
                lst.append(ref)
        self._all.append(ref)
        self._nseries += 1
        return ref

    def add_encoded_series(self, nlabels: np.ndarray, syms: np.ndarray, nchunks: np.ndarray, mint: np.ndarray,
                           maxt: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Many series in one call, encoded in C (the compactor's fast path); returns their refs.

        Series ``i`` has ``nlabels[i]`` labels given as (name, value) *symbol indices of this
        writer's table* in ``syms`` (uint32 pairs) and ``nchunks[i]`` chunk metas in ``mint`` /
        ``maxt`` / ``ref``. The caller guarantees label-set order (strictly increasing, also
        after the series added before) and non-decreasing chunk refs across series; chunk metas
        within a series are checked in C."""
        from ._indexenc import series

        if self._closed or self._buffered is not None:
            raise IndexWriterError("add_encoded_series needs an open writer with its symbol table written")
        syms = np.ascontiguousarray(syms, dtype=np.uint32)
        if len(syms) and int(syms.max()) >= len(self._symbols):
            raise IndexWriterError(f"symbol index {int(syms.max())} outside the table of {len(self._symbols)}")
        try:
            entries, refs = series(self._pos, *(np.ascontiguousarray(a, dtype=np.int64) for a in (nlabels,)),
                                   syms, *(np.ascontiguousarray(a, dtype=np.int64) for a in (nchunks, mint, maxt, ref)))
        except ValueError as e:
            raise IndexWriterError(str(e)) from None
        self._write(entries)
        refs = np.frombuffer(refs, dtype=np.int64)
        if len(refs) and int(refs[-1]) > MAX_SERIES_REF:
            raise IndexWriterError("index exceeds 64 GiB")
        keys = (syms[0::2].astype(np.int64) << 32) | syms[1::2].astype(np.int64)
        self._bulk_postings.append((keys, np.repeat(refs, np.asarray(nlabels, dtype=np.int64))))
        self._all.extend(refs.tolist())
        self._nseries += len(refs)
        if len(ref):
            self._last_chunk_ref = int(ref[-1])
        return refs

    def _merge_bulk_postings(self) -> None:
        if not self._bulk_postings:
            return
        keys = np.concatenate([k for k, _ in self._bulk_postings])
        owners = np.concatenate([o for _, o in self._bulk_postings])
        self._bulk_postings = []
        order = np.lexsort((owners, keys))
        keys, owners = keys[order], owners[order]
        cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
        starts = np.concatenate(([0], cuts)).tolist()
        ends = np.concatenate((cuts, [len(keys)])).tolist()
        post = self._postings
        for a, b in zip(starts, ends):
            k = int(keys[a])
            refs = owners[a:b]
            old = post.get(k)
            post[k] = refs if old is None else np.sort(np.concatenate((np.asarray(old, np.int64), refs)))

    # -- finish
    def close(self) -> TOC:
        if self._closed:
            return self.toc
        if self._buffered is not None:
            buffered, self._buffered = self._buffered, None
            syms = {""} if self._empty_symbol else set()
            for labels, _ in buffered:
                for n, v in labels:
                    syms.add(n)
                    syms.add(v)
            self._write_symbols(syms)
            for labels, cms in buffered:
                self._emit_series(labels, cms)
        self._closed = True
        self._merge_bulk_postings()
        syms = self._symbols
        keys = sorted(self._postings)
        post = self._postings
        # group keys by name
        names: list[int] = []
        for k in keys:
            ni = k >> 32
            if not names or names[-1] != ni:
                names.append(ni)
        toc_label_indices = self._pos
        label_index_offsets: list[tuple[int, int]] = []
        if self.style == "prom2":
            i = 0
            for ni in names:
                vals = []
                while i < len(keys) and (keys[i] >> 32) == ni:
                    vals.append(keys[i] & 0xFFFFFFFF)
                    i += 1
                self._pad(4)
                label_index_offsets.append((ni, self._pos))
                body = _be32(1) + _be32(len(vals)) + np.asarray(vals, dtype=">u4").tobytes()
                self._write(_section(body))
        toc_postings = self._pos
        offsets: list[tuple[str, str, int]] = []
        # the all-postings list first
        self._pad(4)
        offsets.append(("", "", self._pos))
        self._write_postings(self._all)
        for k in keys:
            self._pad(4)
            offsets.append((syms[k >> 32], syms[k & 0xFFFFFFFF], self._pos))
            self._write_postings(post[k])
        toc_label_indices_table = self._pos
        if self.style == "prom2":
            body = bytearray(_be32(len(label_index_offsets)))
            for ni, off in label_index_offsets:
                put_uvarint(body, 1)
                put_uvarint_str(body, syms[ni])
                put_uvarint(body, off)
            self._write(_section(body))
        toc_postings_table = self._pos
        body = bytearray(_be32(len(offsets)))
        for n, v, off in offsets:
            put_uvarint(body, 2)
            put_uvarint_str(body, n)
            put_uvarint_str(body, v)
            put_uvarint(body, off)
        self._write(_section(body))
        toc = TOC(self._toc_symbols, self._toc_series, toc_label_indices, toc_label_indices_table,
                  toc_postings, toc_postings_table)
        tb = _TOC.pack(*toc)
        self._write(tb + _BE32.pack(crc32c(tb)))
        self.toc = toc
        self._postings = {}
        self._all = []
        self._f.flush()
        if self._own:
            self._f.close()
        return toc

    def _write_postings(self, refs: list[int]) -> None:
        body = _be32(len(refs)) + np.asarray(refs, dtype=">u4").tobytes()
        self._write(_section(body))

    def abort(self) -> None:
        """Close the output without finishing the file (the file is then invalid)."""
        self._closed = True
        if self._own:
            self._f.close()

    @property
    def series_count(self) -> int:
        return self._nseries

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _fmt(labels) -> str:
    return "{" + ", ".join(f'{n}="{v}"' for n, v in labels) + "}"


def write_index(out, series: Iterable[tuple[Sequence[tuple[str, str]], Sequence[tuple[int, int, int]]]],
                symbols: Iterable[str] | None = None, *, style: str = "prom2") -> TOC:
    """Convenience: write ``series`` (already sorted) and close."""
    w = IndexWriter(out, symbols, style=style)
    try:
        for labels, cms in series:
            w.add_series(labels, cms)
    except BaseException:
        w.abort()
        raise
    return w.close()


# =========================================================================== reader

class _Name:
    """Postings offset table entries of one label name."""
    __slots__ = ("values", "offs", "ends")

    def __init__(self, values: list[str], offs: list[int], ends: list[int]) -> None:
        self.values = values
        self.offs = offs
        self.ends = ends


class IndexCache(Protocol):
    """What a reader asks before reading postings lists or series entries (the store gateway's
    index cache). Values are opaque bytes the reader wrote; every hit is checked as a read is."""

    def get_postings(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], bytes]: ...

    def put_postings(self, items: dict[tuple[str, str], bytes]) -> None: ...

    def get_series_pages(self, pages: list[int]) -> dict[int, bytes]: ...

    def put_series_pages(self, items: dict[int, bytes]) -> None: ...


class IndexReader:
    """Reads an index through a ``ByteSource`` with ranged reads.

    On open: header, TOC, symbol table, postings offset table (all CRC-checked).
    On demand: postings lists and series entries, through ``cache`` (an :class:`IndexCache`)
    when one is set.
    """

    cache: "IndexCache | None" = None

    def __init__(self, source: ByteSource, block: str = "", file: str = "index", *, owns_source: bool = False) -> None:
        self.source = source
        self.block = block
        self.file = file
        self._owns = owns_source
        try:
            self._open()
        except BaseException:
            if owns_source:
                self.close()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike, block: str | None = None) -> "IndexReader":
        src = FileSource(path, block=block)
        return cls(src, block=src.block, file=src.name, owns_source=True)

    def close(self) -> None:
        if self._owns:
            close = getattr(self.source, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> "IndexReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- helpers
    def _err(self, offset: int, what: str) -> CorruptIndexError:
        return CorruptIndexError(self.block, self.file, offset, what)

    def _read(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise self._err(offset, f"{what}: {length} bytes at offset {offset} run past the end of the file (size {self._size})")
        try:
            data = self.source.read(offset, length)
        except CorruptIndexError:
            raise
        except CorruptBlockError as e:
            raise self._err(e.offset, f"{what}: {e.what}") from None
        if len(data) != length:
            raise self._err(offset, f"{what}: short read ({len(data)} of {length} bytes)")
        return data

    def _dec(self, data: bytes, base: int, pos: int = 0, end: int | None = None) -> Decbuf:
        return Decbuf(data, base, self.block, self.file, CorruptIndexError, pos, end)

    def _read_section(self, offset: int, what: str) -> tuple[bytes, int]:
        """A ``len BE32 | body | CRC`` section: returns (body, absolute offset of body)."""
        hdr = self._read(offset, 4, what)
        n = _BE32.unpack(hdr)[0]
        if offset + 8 + n > self._size:
            raise self._err(offset, f"{what}: length {n} runs past the end of the file (size {self._size})")
        data = self._read(offset + 4, n + 4, what)
        want = _BE32.unpack_from(data, n)[0]
        body = data[:n]
        got = crc32c(body)
        if got != want:
            raise self._err(offset + 4 + n, f"{what}: CRC32C mismatch (stored {want:08x}, computed {got:08x})")
        return body, offset + 4

    # -- open
    def _open(self) -> None:
        size = self.source.size()
        self._size = size
        if size < HEADER_LEN:
            raise self._err(0, f"file too small for the index header ({size} bytes)")
        head = self._read(0, HEADER_LEN, "header")
        magic = _BE32.unpack_from(head)[0]
        if magic != MAGIC_INDEX:
            raise self._err(0, f"invalid magic number {magic:08x} (want {MAGIC_INDEX:08x})")
        self.version = head[4]
        if self.version not in (FORMAT_V2, FORMAT_V3):
            raise self._err(4, f"unsupported index format version {self.version} (supported: 2, 3)")
        if size < HEADER_LEN + TOC_LEN:
            raise self._err(size, f"file too small for the table of contents ({size} bytes)")
        toc_off = size - TOC_LEN
        tb = self._read(toc_off, TOC_LEN, "TOC")
        want = _BE32.unpack_from(tb, 48)[0]
        got = crc32c(tb[:48])
        if got != want:
            raise self._err(toc_off + 48, f"TOC: CRC32C mismatch (stored {want:08x}, computed {got:08x})")
        toc = TOC(*_TOC.unpack_from(tb))
        for fld, v in zip(TOC._fields, toc):
            if v > toc_off:
                raise self._err(toc_off + 8 * TOC._fields.index(fld),
                                f"TOC: {fld} offset {v} points past the table of contents at {toc_off}")
        if toc.symbols < HEADER_LEN or toc.postings_table < HEADER_LEN:
            raise self._err(toc_off, f"TOC: symbols {toc.symbols} / postings table {toc.postings_table} offsets invalid")
        self.toc = toc
        self._read_symbols()
        self._read_postings_table()
        # the series section ends where the next section begins
        after = [v for v in (toc.label_indices, toc.postings, toc.label_indices_table, toc.postings_table)
                 if v > toc.series]
        self._series_end = min(after) if after else toc_off

    def _read_symbols(self) -> None:
        body, base = self._read_section(self.toc.symbols, "symbol table")
        d = self._dec(body, base)
        n = d.be32()
        syms = []
        append = syms.append
        data = body
        pos = 4
        end = len(body)
        # fast path: inline uvarint for short strings
        for _ in range(n):
            if pos < end and data[pos] < 0x80:
                ln = data[pos]
                pos += 1
            else:
                d.pos = pos
                ln = d.uvarint()
                pos = d.pos
            if pos + ln > end:
                raise self._err(base + pos, f"symbol table: symbol of {ln} bytes runs past the end of the table")
            append(data[pos:pos + ln].decode("utf-8", "surrogateescape"))
            pos += ln
        if pos != end:
            raise self._err(base + pos, f"symbol table: {end - pos} trailing bytes after {n} symbols")
        self._symbols = syms

    def _read_postings_table(self) -> None:
        body, base = self._read_section(self.toc.postings_table, "postings offset table")
        d = self._dec(body, base)
        n = d.be32()
        names: dict[str, tuple[list[str], list[int]]] = {}
        cur_name = None
        cur_nb = None
        cur_vals: list[str] = []
        cur_offs: list[int] = []
        all_offs: list[int] = []
        data = body
        end = len(body)
        pos = 4
        size = self._size

        def uv(p: int) -> tuple[int, int]:
            d.pos = p
            v = d.uvarint()
            return v, d.pos

        for _ in range(n):
            at = pos
            if pos < end and data[pos] == 2:
                pos += 1
            else:
                k, _ = uv(pos)
                raise d.error(f"postings offset table: entry has {k} keys (want 2)", at)
            if pos < end and data[pos] < 0x80:
                ln = data[pos]
                pos += 1
            else:
                ln, pos = uv(pos)
            if pos + ln > end:
                raise d.error("postings offset table: label name runs past the end of the table", at)
            nb = data[pos:pos + ln]
            pos += ln
            if pos < end and data[pos] < 0x80:
                ln = data[pos]
                pos += 1
            else:
                ln, pos = uv(pos)
            if pos + ln > end:
                raise d.error("postings offset table: label value runs past the end of the table", at)
            vb = data[pos:pos + ln]
            pos += ln
            if pos < end and data[pos] < 0x80:
                off = data[pos]
                pos += 1
            else:
                off, pos = uv(pos)
            value = vb.decode("utf-8", "surrogateescape")
            if nb != cur_nb:
                name = nb.decode("utf-8", "surrogateescape")
                if cur_nb is not None and nb <= cur_nb:
                    raise d.error(f"postings offset table: label name {name!r} out of order", at)
                cur_nb, cur_name = nb, name
                cur_vals, cur_offs = [], []
                names[name] = (cur_vals, cur_offs)
            elif value <= cur_vals[-1] and (value.encode("utf-8", "surrogateescape")
                                            <= cur_vals[-1].encode("utf-8", "surrogateescape")):
                raise d.error(f"postings offset table: value {value!r} of {cur_name!r} out of order", at)
            if off < HEADER_LEN or off + 12 > size:
                raise d.error(f"postings offset table: offset {off} of {cur_name}={value!r} out of range", at)
            cur_vals.append(value)
            cur_offs.append(off)
            all_offs.append(off)
        d.pos = pos
        if d.pos != d.end:
            raise d.error(f"postings offset table: {d.end - d.pos} trailing bytes after {n} entries")
        # the end of each list: the next list's start, or the section that follows the postings
        uniq = np.unique(np.asarray(all_offs, dtype=np.int64)) if all_offs else np.empty(0, np.int64)
        toc = self.toc
        bounds = [v for v in (toc.label_indices_table, toc.postings_table) if v > 0]
        last_start = int(uniq[-1]) if len(uniq) else 0
        tail = min([b for b in bounds if b > last_start] or [self._size - TOC_LEN])
        nxt = np.append(uniq[1:], tail) if len(uniq) else uniq
        self._names: dict[str, _Name] = {}
        for name, (vals, offs) in names.items():
            o = np.asarray(offs, dtype=np.int64)
            e = nxt[np.searchsorted(uniq, o, side="left")]
            self._names[name] = _Name(vals, offs, e.tolist())
        self._label_names = sorted(n for n in names if n != "")

    # -- lookups
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def symbol(self, i: int) -> str:
        return self._symbols[i]

    def label_names(self) -> list[str]:
        return list(self._label_names)

    def label_values(self, name: str) -> list[str]:
        e = self._names.get(name)
        if e is None or name == "":
            return []
        return list(e.values)

    def postings(self, name: str, value: str) -> np.ndarray:
        """Sorted series refs (uint64) of the series with ``name=value`` (``("","")``: all series)."""
        e = self._names.get(name)
        if e is None:
            return _EMPTY
        i = bisect.bisect_left(e.values, value)
        if i >= len(e.values) or e.values[i] != value:
            return _EMPTY
        if self.cache is not None:
            return self._union(name, [i])
        return self._read_postings_one(e.offs[i], e.ends[i], name, value)

    def all_postings(self) -> np.ndarray:
        return self.postings("", "")

    def _parse_postings(self, buf: bytes, start: int, base: int, avail: int, name: str, value: str,
                        words: np.ndarray | None = None) -> np.ndarray | None:
        """CRC-checked refs (big-endian uint32 view) of the list at ``buf[start:]``.

        ``avail`` bytes are readable there; returns None if the list needs more. ``words``:
        ``buf`` viewed as ``>u4`` (when ``start`` is 4-aligned), to avoid a copy per list.
        """
        off = base + start
        if avail < 8:
            return None
        ln = _BE32.unpack_from(buf, start)[0]
        if ln + 8 > avail:
            return None
        cend = start + 4 + ln
        want = _BE32.unpack_from(buf, cend)[0]
        got = crc32c(buf[start + 4:cend])
        if got != want:
            raise self._err(off + 4 + ln, f"postings list {name}={value!r}: CRC32C mismatch "
                                          f"(stored {want:08x}, computed {got:08x})")
        if ln < 4:
            raise self._err(off, f"postings list {name}={value!r}: length {ln} too small")
        n = _BE32.unpack_from(buf, start + 4)[0]
        if 4 + 4 * n != ln:
            raise self._err(off + 4, f"postings list {name}={value!r}: {n} entries do not fit length {ln}")
        if words is not None and start % 4 == 0:
            w0 = start // 4 + 2
            return words[w0:w0 + n]
        return np.frombuffer(buf, dtype=">u4", count=n, offset=start + 8)

    def _check_sorted(self, refs: np.ndarray, off: int, name: str, value: str) -> np.ndarray:
        r = refs.astype(np.uint64)
        if len(r) > 1 and not bool((r[1:] > r[:-1]).all()):
            raise self._err(off + 8, f"postings list {name}={value!r}: series refs not strictly increasing")
        return r

    def _read_postings_one(self, off: int, end: int, name: str, value: str, check: bool = True) -> np.ndarray:
        what = f"postings list {name}={value!r}"
        want = max(8, end - off)
        if off + want > self._size:
            want = self._size - off
        buf = self._read(off, want, what)
        r = self._parse_postings(buf, 0, off, len(buf), name, value)
        if r is None:
            if len(buf) < 4:
                raise self._err(off, f"{what}: runs past the end of the file")
            ln = _BE32.unpack_from(buf)[0]
            buf = self._read(off, ln + 8, what)
            r = self._parse_postings(buf, 0, off, len(buf), name, value)
            if r is None:  # pragma: no cover - _read guarantees the length
                raise self._err(off, f"{what}: truncated")
        return self._check_sorted(r, off, name, value) if check else r

    def _read_postings_many(self, e: _Name, idx: Sequence[int], name: str) -> list[np.ndarray]:
        """CRC-checked postings (``>u4`` views, order not yet verified) of ``e.values[i] for i in idx``.

        Lists close together in the file are fetched with one read.
        """
        if not len(idx):
            return []
        offs, ends, vals = e.offs, e.ends, e.values
        idx = sorted(idx, key=offs.__getitem__)
        out: list[np.ndarray] = []
        gstart = 0
        nidx = len(idx)
        while gstart < nidx:
            i0 = idx[gstart]
            start = offs[i0]
            stop = ends[i0]
            g = gstart + 1
            while g < nidx:
                i = idx[g]
                if offs[i] - stop > _COALESCE_GAP or ends[i] - start > _COALESCE_MAX:
                    break
                if ends[i] > stop:
                    stop = ends[i]
                g += 1
            stop = min(max(stop, start + 8), self._size)
            buf = self._read(start, stop - start, f"postings lists of {name!r}")
            words = np.frombuffer(buf, dtype=">u4", count=len(buf) // 4) if start % 4 == 0 else None
            parse = self._parse_postings
            for j in range(gstart, g):
                i = idx[j]
                o = offs[i]
                avail = min(ends[i], stop) - o
                r = parse(buf, o - start, start, avail, name, vals[i], words)
                if r is None:
                    r = self._read_postings_one(o, ends[i], name, vals[i], check=False)
                out.append(r)
            gstart = g
        return out

    def postings_size(self, m: Matcher) -> tuple[int, int]:
        """``(series, bytes)`` of the postings lists a positive matcher would fetch, from the
        offset table alone (nothing read): the series count is exact up to list padding."""
        e = self._names.get(m.name)
        if e is None:
            return 0, 0
        idx = self._value_indices(e, m, invert=False)
        size = sum(e.ends[i] - e.offs[i] for i in idx)
        return max(0, (size - 12 * len(idx)) // 4), size

    def _postings_lists(self, e: _Name, idx: Sequence[int], name: str) -> list[np.ndarray]:
        """``_read_postings_many`` with the cache asked first and filled with what was read."""
        if self.cache is None or not len(idx):
            return self._read_postings_many(e, idx, name)
        vals = e.values
        hits = self.cache.get_postings([(name, vals[i]) for i in idx])
        out = []
        miss = []
        for i in idx:
            b = hits.get((name, vals[i]))
            if b is None or len(b) % 4:
                miss.append(i)
            else:
                out.append(np.frombuffer(b, dtype=">u4"))
        if miss:
            miss.sort(key=e.offs.__getitem__)  # the order _read_postings_many answers in
            got = self._read_postings_many(e, miss, name)
            self.cache.put_postings({(name, vals[i]): np.asarray(r, dtype=">u4").tobytes() for i, r in zip(miss, got)})
            out.extend(got)
        return out

    def _value_indices(self, e: _Name, m: Matcher, invert: bool) -> list[int]:
        """Indices of the values of ``e`` that ``m`` matches (``invert``: that ``m`` does not match)."""
        vals = e.values
        t = m.type
        if invert:
            t = {MATCH_EQUAL: MATCH_NOT_EQUAL, MATCH_NOT_EQUAL: MATCH_EQUAL,
                 MATCH_REGEXP: MATCH_NOT_REGEXP, MATCH_NOT_REGEXP: MATCH_REGEXP}[t]
        if t in (MATCH_EQUAL, MATCH_NOT_EQUAL):
            i = bisect.bisect_left(vals, m.value)
            hit = [i] if i < len(vals) and vals[i] == m.value else []
            if t == MATCH_EQUAL:
                return hit
            return [j for j in range(len(vals)) if not hit or j != hit[0]]
        pos = self._regex_indices(vals, m)
        if t == MATCH_REGEXP:
            return pos
        ps = set(pos)
        return [j for j in range(len(vals)) if j not in ps]

    @staticmethod
    def _regex_indices(vals: list[str], m: Matcher) -> list[int]:
        if m._set is not None:
            out = []
            for v in m._set:
                i = bisect.bisect_left(vals, v)
                if i < len(vals) and vals[i] == v:
                    out.append(i)
            return sorted(out)
        lo, hi = 0, len(vals)
        if m._prefix:
            p = m._prefix
            lo = bisect.bisect_left(vals, p)
            hi = lo
            while hi < len(vals) and vals[hi].startswith(p):
                hi += 1
            if m._prefix_all:
                return list(range(lo, hi))
        fm = m._re.match  # RE2: linear in each value
        return [i for i in range(lo, hi) if fm(vals[i])]

    def _union(self, name: str, idx: list[int]) -> np.ndarray:
        """Sorted union of the postings of ``name``'s values ``idx`` (every list's order verified)."""
        e = self._names[name]
        lists = self._postings_lists(e, idx, name)
        if not lists:
            return _EMPTY
        if len(lists) == 1:
            return self._check_sorted(lists[0], e.offs[idx[0]], name, e.values[idx[0]])
        c = np.concatenate(lists).astype(np.int64)
        if len(c) > 1:
            ok = c[1:] > c[:-1]
            # list boundaries may go down
            bounds = np.cumsum([len(x) for x in lists])[:-1] - 1
            ok[bounds[(bounds >= 0) & (bounds < len(ok))]] = True
            if not bool(ok.all()):
                bad = int(np.searchsorted(np.cumsum([len(x) for x in lists]), int(np.argmin(ok)), side="right"))
                order = sorted(idx, key=e.offs.__getitem__)
                i = order[min(bad, len(order) - 1)]
                raise self._err(e.offs[i] + 8, f"postings list {name}={e.values[i]!r}: "
                                               f"series refs not strictly increasing")
        c.sort()
        if len(c) > 1:
            keep = np.empty(len(c), dtype=bool)
            keep[0] = True
            np.not_equal(c[1:], c[:-1], out=keep[1:])
            if not keep.all():
                c = c[keep]
        return c.astype(np.uint64)

    def postings_for_matchers(self, matchers: Sequence[Matcher]) -> np.ndarray:
        """Sorted series refs selected by all ``matchers`` (Prometheus ``PostingsForMatchers``).

        A matcher that matches the empty string also selects series without the label.
        No matchers select nothing.
        """
        if not matchers:
            return _EMPTY
        pos_ms: list[Matcher] = []
        neg_ms: list[Matcher] = []
        for m in matchers:
            if not isinstance(m, Matcher):
                m = Matcher(*m)
            if m.name == "":
                # the empty label name is never set: its value is always ""
                if m.matches(""):
                    continue
                return _EMPTY
            if m.matches(""):
                neg_ms.append(m)
            else:
                pos_ms.append(m)
        result: np.ndarray | None = None
        # cheapest positive matchers first: equality, then regex
        pos_ms.sort(key=lambda m: 0 if m.type == MATCH_EQUAL else (1 if m._set is not None else 2))
        for m in pos_ms:
            e = self._names.get(m.name)
            if e is None:
                return _EMPTY
            idx = self._value_indices(e, m, invert=False)
            if not idx:
                return _EMPTY
            p = self._union(m.name, idx)
            result = p if result is None else np.intersect1d(result, p, assume_unique=True)
            if len(result) == 0:
                return _EMPTY
        if result is None:
            result = self.all_postings()
        for m in neg_ms:
            e = self._names.get(m.name)
            if e is None:
                continue  # nobody has the label: all series have value "" which m matches
            idx = self._value_indices(e, m, invert=True)
            if not idx:
                continue
            p = self._union(m.name, idx)
            result = np.setdiff1d(result, p, assume_unique=True)
            if len(result) == 0:
                return _EMPTY
        return result.astype(np.uint64, copy=False)

    # -- series
    def _series_offset(self, ref: int) -> int:
        ref = int(ref)
        off = ref * SERIES_ALIGN
        if ref < 0 or off < self.toc.series or off >= self._series_end:
            raise self._err(off, f"series ref {ref} (offset {off}) outside the series section "
                                 f"[{self.toc.series}, {self._series_end})")
        return off

    def _decode_series(self, buf: bytes, start: int, base: int, ref: int):
        """Decode the entry at ``buf[start:]``; None if ``buf`` is too short for it."""
        off = base + start
        end = len(buf)
        d = self._dec(buf, base, start, min(end, start + 5))
        try:
            ln = d.uvarint()
        except CorruptIndexError:
            if end - start >= 5 or off + (end - start) >= self._series_end:
                raise self._err(off, f"series ref {ref}: invalid entry length")
            return None
        cstart = d.pos
        if base + cstart + ln + 4 > self._series_end:
            raise self._err(off, f"series ref {ref}: entry of {ln} bytes runs past the series section")
        if cstart + ln + 4 > end:
            return None
        cend = cstart + ln
        want = _BE32.unpack_from(buf, cend)[0]
        got = crc32c(buf[cstart:cend])
        if got != want:
            raise self._err(base + cend, f"series ref {ref}: CRC32C mismatch (stored {want:08x}, computed {got:08x})")
        d = self._dec(buf, base, cstart, cend)
        syms = self._symbols
        nsym = len(syms)
        nl = d.uvarint()
        labels = []
        for _ in range(nl):
            at = d.pos
            ni = d.uvarint()
            vi = d.uvarint()
            if ni >= nsym or vi >= nsym:
                raise d.error(f"series ref {ref}: symbol reference {max(ni, vi)} out of range ({nsym} symbols)", at)
            labels.append((syms[ni], syms[vi]))
        nc = d.uvarint()
        if nc > ln:
            raise d.error(f"series ref {ref}: {nc} chunks cannot fit in {ln} bytes")
        chunks = []
        if nc:
            mint = d.varint()
            maxt = mint + d.uvarint()
            cref = d.uvarint()
            chunks.append(ChunkMeta(mint, maxt, cref))
            for _ in range(nc - 1):
                mint = maxt + d.uvarint()
                maxt = mint + d.uvarint()
                cref += d.varint()
                chunks.append(ChunkMeta(mint, maxt, cref))
        if d.pos != cend:
            raise d.error(f"series ref {ref}: {cend - d.pos} trailing bytes in entry")
        return labels, chunks

    def series(self, ref: int) -> tuple[list[tuple[str, str]], list[ChunkMeta]]:
        """Labels and chunk metas ``(mint, maxt, ref)`` of the series ``ref``."""
        off = self._series_offset(ref)
        n = min(_SERIES_WINDOW, self._series_end - off)
        buf = self._read(off, n, f"series ref {ref}")
        r = self._decode_series(buf, 0, off, int(ref))
        if r is None:
            d = self._dec(buf, off, 0, min(len(buf), 5))
            ln = d.uvarint()
            total = d.pos + ln + 4
            buf = self._read(off, total, f"series ref {ref}")
            r = self._decode_series(buf, 0, off, int(ref))
            if r is None:  # pragma: no cover
                raise self._err(off, f"series ref {ref}: truncated entry")
        return r

    def series_many(self, refs: Iterable[int]) -> list[tuple[list[tuple[str, str]], list[ChunkMeta]]]:
        """``[series(r) for r in refs]`` with nearby entries fetched in one read; order kept."""
        refs = [int(r) for r in refs]
        if not refs:
            return []
        labels, nch, chunks = self.series_bulk(refs)
        out = []
        k = 0
        for lbls, n in zip(labels, nch.tolist()):
            out.append((list(lbls), [ChunkMeta(*c) for c in chunks[k:k + n].tolist()]))
            k += n
        return out

    def series_bulk(self, refs, ext: tuple = (), remove=None, *, wire: bool = False) -> tuple:
        """The series ``refs`` decoded in C: ``(labels, nchunks int64[n], chunks int64[m, 3])`` in
        the order of ``refs``; chunks ``(mint, maxt, ref)`` of series i follow those of i - 1.

        ``labels[i]`` is a tuple of pairs: the series' labels merged with the sorted pairs ``ext``
        (which win on equal names), without the names in the set ``remove``. Entries close together
        are fetched in one read; the cache (when set) is asked first and given what was read.
        With ``wire`` a fourth item: per series the protobuf ``labels`` fields of a thanos.Series
        (or None where not made here: the caller encodes those)."""
        refs = np.asarray(refs, dtype=np.int64)
        if len(refs) > 1 and not bool((refs[1:] > refs[:-1]).all()):
            return self._with_wire(self._series_bulk_mapped(refs, ext, remove), wire)
        if self.cache is not None and len(refs):
            return self._series_bulk_paged(refs, ext, remove, wire)
        offs = refs * SERIES_ALIGN
        if len(offs) and (int(offs[0]) < self.toc.series or int(offs[-1]) >= self._series_end):
            self._series_offset(int(refs[0]) if int(offs[0]) < self.toc.series else int(refs[-1]))
        cuts = (np.flatnonzero(np.diff(offs) > _SERIES_GAP) + 1).tolist()
        labels: list = []
        wires: list = []
        nchs: list = []
        chunks: list = []
        for g0, g in zip([0] + cuts, cuts + [len(refs)]):
            while g0 < g:
                end = g0 + int(np.searchsorted(offs[g0:g], offs[g0] + _COALESCE_MAX, side="left"))
                end = max(end, g0 + 1)
                start = int(offs[g0])
                stop = min(int(offs[end - 1]) + _SERIES_WINDOW, self._series_end)
                buf = self._read(start, stop - start, f"series refs {int(refs[g0])}..{int(refs[end - 1])}")
                self._decode_run(buf, start, offs[g0:end] - start, self._series_end - start, refs[g0:end],
                                 ext, remove, wire, (labels, wires, nchs, chunks))
                g0 = end
        if not chunks:
            out = (labels, np.empty(0, np.int64), np.empty((0, 3), np.int64))
        else:
            out = (labels, np.concatenate(nchs), np.concatenate(chunks))
        return out + ((wires,) if wire else ())

    def _decode_run(self, buf, base: int, rel, limit: int, refs, ext, remove, wire: bool, acc: tuple) -> None:
        """Decode the entries at ``rel`` of ``buf`` (file offset ``base``) in C and append them to
        ``acc`` = (labels, wires, nchunks, chunks); an entry running past ``buf`` sends the run
        the careful way (:meth:`_series_bulk_mapped`)."""
        from ._series import decode

        labels, wires, nchs, chunks = acc
        lb, ends, nch, ch, err, *wl = decode(buf, rel, limit, self._symbols, ext, remove, wire)
        if err is not None:
            i, pos, what = err
            raise self._err(base + pos, f"series ref {int(refs[i])}: {what}")
        if (np.frombuffer(ends, dtype=np.int64) < 0).any():
            lb, n2, c2 = self._series_bulk_mapped(refs, ext, remove)
            wires.extend([None] * len(lb))
            labels.extend(lb)
            nchs.append(n2)
            chunks.append(c2)
            return
        labels.extend(lb)
        if wire:
            wires.extend(wl[0])
        nchs.append(np.frombuffer(nch, dtype=np.int64))
        chunks.append(np.frombuffer(ch, dtype=np.int64).reshape(-1, 3))

    def _series_bulk_paged(self, refs: np.ndarray, ext, remove, wire: bool) -> tuple:
        """``series_bulk`` through the index cache, which holds the series section in pages of
        :data:`SERIES_PAGE` bytes: a call for 100k series asks the cache for a few hundred keys
        instead of 100k, and the entries are decoded in C straight from the joined pages."""
        offs = refs * SERIES_ALIGN
        if int(offs[0]) < self.toc.series or int(offs[-1]) >= self._series_end:
            self._series_offset(int(refs[0]) if int(offs[0]) < self.toc.series else int(refs[-1]))
        last_page = (self._series_end - 1) // SERIES_PAGE
        first = offs // SERIES_PAGE
        need = np.unique(np.concatenate((first, np.minimum(first + 1, last_page))))
        keys = need.tolist()
        pages = self.cache.get_series_pages(keys)
        missing = [p for p in keys if p not in pages]
        if missing:
            fresh = {}
            runs = np.split(np.asarray(missing), np.flatnonzero(np.diff(missing) != 1) + 1)
            for run in runs:
                a = int(run[0]) * SERIES_PAGE
                z = min((int(run[-1]) + 1) * SERIES_PAGE, self._series_end)
                buf = self._read(a, z - a, f"series pages {int(run[0])}..{int(run[-1])}")
                for i, p in enumerate(run.tolist()):
                    fresh[p] = buf[i * SERIES_PAGE:(i + 1) * SERIES_PAGE]
            pages.update(fresh)
            self.cache.put_series_pages(fresh)
        labels: list = []
        wires: list = []
        nchs: list = []
        chunks: list = []
        # contiguous runs of pages: one buffer each, entries decoded from it in order
        runs = np.split(need, np.flatnonzero(np.diff(need) != 1) + 1)
        lo = 0
        for run in runs:
            base = int(run[0]) * SERIES_PAGE
            stop = (int(run[-1]) + 1) * SERIES_PAGE
            hi = lo + int(np.searchsorted(offs[lo:], stop, side="left"))
            if hi == lo:
                continue
            buf = b"".join(pages[p] for p in run.tolist())
            self._decode_run(buf, base, offs[lo:hi] - base, min(len(buf), self._series_end - base), refs[lo:hi],
                             ext, remove, wire, (labels, wires, nchs, chunks))
            lo = hi
        out = (labels, np.concatenate(nchs), np.concatenate(chunks))
        return out + ((wires,) if wire else ())

    @staticmethod
    def _with_wire(res: tuple, wire: bool) -> tuple:
        return res + ([None] * len(res[0]),) if wire else res

    def _series_bulk_mapped(self, refs, ext: tuple = (), remove=None) -> tuple[list, np.ndarray, np.ndarray]:
        """``series_bulk`` entry by entry: refs in any order or repeated, the cache, long entries."""
        from ._series import decode

        refs = np.asarray(refs, dtype=np.int64)
        uniq = np.unique(refs)
        found: dict[int, tuple] = {}  # ref -> (labels, chunks int64[k, 3])
        fresh: dict[int, bytes] | None = None
        todo = uniq.tolist()
        offs = [self._series_offset(r) for r in todo]
        g0 = 0
        while g0 < len(todo):
            g = g0 + 1
            while g < len(todo) and offs[g] - offs[g - 1] <= _SERIES_GAP and offs[g] - offs[g0] < _COALESCE_MAX:
                g += 1
            start = offs[g0]
            stop = min(offs[g - 1] + _SERIES_WINDOW, self._series_end)
            buf = self._read(start, stop - start, f"series refs {todo[g0]}..{todo[g - 1]}")
            starts = np.asarray(offs[g0:g], dtype=np.int64) - start
            short = self._decode_into(decode, buf, starts, todo[g0:g], self._series_end - start, start, ext, remove,
                                      found, fresh)
            for r in short:  # longer than the window: read whole
                off = self._series_offset(r)
                d = self._dec(self._read(off, min(10, self._series_end - off), f"series ref {r}"), off, 0, None)
                total = d.uvarint() + d.pos + 4
                one = self._read(off, total, f"series ref {r}")
                self._decode_into(decode, one, np.zeros(1, np.int64), [r], self._series_end - off, off, ext, remove,
                                  found, fresh)
            g0 = g
        order = refs.tolist()
        labels = [found[r][0] for r in order]
        parts = [found[r][1] for r in order]
        nch = np.fromiter((len(c) for c in parts), dtype=np.int64, count=len(parts))
        chunks = np.concatenate(parts) if parts else np.empty((0, 3), np.int64)
        return labels, nch, chunks

    def _decode_into(self, decode, buf, starts, refs, limit, base, ext, remove, found, fresh) -> list[int]:
        """Decode entries of ``buf`` at ``starts`` into ``found``; the refs that need more bytes."""
        labels, ends, nch, chunks, err = decode(buf, starts, limit, self._symbols, ext, remove)
        if err is not None:
            i, pos, what = err
            raise self._err(base + pos, f"series ref {refs[i]}: {what}")
        ends = np.frombuffer(ends, dtype=np.int64)
        nch = np.frombuffer(nch, dtype=np.int64)
        chunks = np.frombuffer(chunks, dtype=np.int64).reshape(-1, 3)
        bounds = np.concatenate(([0], np.cumsum(nch)))
        short = []
        for i, r in enumerate(refs):
            if ends[i] < 0:
                short.append(r)
                continue
            found[r] = (labels[i], chunks[bounds[i]:bounds[i + 1]])
            if fresh is not None:
                fresh[r] = bytes(buf[starts[i]:ends[i]])
        return short

    # -- introspection
    @property
    def size(self) -> int:
        return self._size

    def postings_range(self, name: str, value: str) -> tuple[int, int] | None:
        """``(offset, end bound)`` of the postings list of ``name=value`` in the file, or None."""
        e = self._names.get(name)
        if e is None:
            return None
        i = bisect.bisect_left(e.values, value)
        if i >= len(e.values) or e.values[i] != value:
            return None
        return e.offs[i], e.ends[i]
