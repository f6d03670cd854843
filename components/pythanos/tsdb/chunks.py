"""Chunk segment files ``chunks/000001``, ``000002``, ... (Prometheus ``tsdb/chunks``).

File layout: 8-byte header (magic ``0x85BD40DD`` BE, version ``1``, 3 zero bytes), then
records ``uvarint(len(data)) | encoding byte | data | CRC32C-BE(encoding + data)`` with no
alignment. A chunk ref is ``(seq << 32) | offset`` where ``seq`` is the 0-based position of the
file among the sorted segment files and ``offset`` points at the record's length field.

* :class:`ChunkWriter` writes all chunks of one series per call (``write_series``), cutting
  segments like Go's ``Writer.WriteChunks`` (512 MiB by default, never an empty segment).
* :class:`ChunkReader` reads over :class:`~pythanos.tsdb.source.ByteSource` s (local files or
  ranged bucket reads): ``chunk(ref)`` and the batched ``chunks(refs)`` / ``chunks_raw(refs)``
  which coalesce nearby records into few ranged reads. Every record's CRC is verified. Damage
  raises :class:`~pythanos.tsdb.errors.CorruptChunkError` naming block, file and offset.
"""
from __future__ import annotations

import os
import struct
from typing import Callable, Iterable, Optional, Sequence

import google_crc32c
import numpy as np

from .encoding import encode_uvarint
from .errors import CorruptChunkError

MAGIC_CHUNKS = 0x85BD40DD
CHUNKS_FORMAT_V1 = 1
SEGMENT_HEADER_SIZE = 8
SEGMENT_HEADER = struct.pack(">IB3x", MAGIC_CHUNKS, CHUNKS_FORMAT_V1)
DEFAULT_SEGMENT_SIZE = 512 * 1024 * 1024
MAX_CHUNK_LEN_FIELD = 5
# What a batched read assumes for a record whose end is unknown (Thanos' EstimatedMaxChunkSize).
ESTIMATED_MAX_CHUNK_SIZE = 16000
# Records closer than this are fetched in one ranged read (Thanos' partitioner uses 512 KiB).
DEFAULT_MAX_GAP = 512 * 1024
# One coalesced read never spans more than this.
MAX_RANGE_SIZE = 32 * 1024 * 1024


def segment_name(seq0: int) -> str:
    """File name of the 0-based segment ``seq0`` (``000001`` for 0)."""
    return f"{seq0 + 1:06d}"


def chunk_ref(seq: int, offset: int) -> int:
    return (seq << 32) | offset


def split_ref(ref: int) -> tuple[int, int]:
    return ref >> 32, ref & 0xFFFFFFFF


def _as_offsets(buf_len: int, offsets: Sequence[int]) -> np.ndarray:
    off = np.asarray(offsets, dtype=np.int64)
    if len(off) == 0 or off[-1] != buf_len:
        off = np.append(off, buf_len)
    return off


class ChunkWriter:
    """Writes ``<dir>/000001``, ``000002``, ...; use as a context manager or call ``close()``."""

    def __init__(self, directory: str | os.PathLike, segment_size: int = DEFAULT_SEGMENT_SIZE):
        self.dir = os.fspath(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.segment_size = segment_size
        self.files: list[str] = []
        self._f = None
        self._n = 0  # bytes in the current segment (0: no segment yet)

    @property
    def seq(self) -> int:
        return len(self.files) - 1

    def _cut(self) -> None:
        if self._f is not None:
            self._f.close()
        path = os.path.join(self.dir, segment_name(len(self.files)))
        self._f = open(path, "wb")  # noqa: SIM115
        self.files.append(path)
        self._f.write(SEGMENT_HEADER)
        self._n = SEGMENT_HEADER_SIZE

    def write_series(self, buf, offsets: Sequence[int], encoding: int | Sequence[int] = 1) -> np.ndarray:
        """Write the chunks of one series (chunk i = ``buf[offsets[i]:offsets[i+1]]``).

        ``offsets`` has k+1 entries (or k, then ``len(buf)`` closes the last chunk); ``encoding``
        is one byte for all chunks or one per chunk. Returns the k chunk refs (uint64).
        """
        mv = memoryview(buf).cast("B")
        off = _as_offsets(len(mv), offsets)
        k = len(off) - 1
        encs = [int(encoding)] * k if isinstance(encoding, (int, np.integer)) else [int(e) for e in encoding]
        lens = np.diff(off)
        # Go's batching: split into batches that each fit in a segment.
        batches: list[tuple[int, int]] = []
        start, bsize, first = 0, 0, True
        for i in range(k):
            csize = MAX_CHUNK_LEN_FIELD + 1 + int(lens[i]) + 4
            bsize += csize
            cut = i != 0 and bsize + SEGMENT_HEADER_SIZE > self.segment_size
            if first and self._n > SEGMENT_HEADER_SIZE:
                cut = bsize + self._n > self.segment_size
                if cut:
                    first = False
            if cut:
                batches.append((start, i))
                start, bsize = i, csize
        batches.append((start, k))
        if self._n == 0:
            self._cut()
        refs = np.zeros(k, dtype=np.uint64)
        for bi, (s, e) in enumerate(batches):
            parts = []
            pos = self._n
            seq = self.seq
            for i in range(s, e):
                data = bytes(mv[off[i]:off[i + 1]])
                head = encode_uvarint(len(data)) + bytes((encs[i],))
                refs[i] = (seq << 32) | pos
                crc = google_crc32c.extend(google_crc32c.value(head[-1:]), data)
                parts += (head, data, struct.pack(">I", crc))
                pos += len(head) + len(data) + 4
            self._f.write(b"".join(parts))
            self._n = pos
            if bi < len(batches) - 1:
                self._cut()
        return refs

    def write_records(self, buf, rec_lens: np.ndarray, data_lens: np.ndarray, series_counts: Sequence[int]
                      ) -> np.ndarray:
        """Append whole chunk records copied from other segment files (``uvarint(len) | encoding |
        data | CRC``, back to back in ``buf``; record ``i`` is ``rec_lens[i]`` bytes, its data
        ``data_lens[i]``), series after series (``series_counts`` chunks each), cutting segment
        files exactly where :meth:`write_series` would. Returns the chunk refs (uint64)."""
        mv = memoryview(buf).cast("B")
        rec_lens = np.asarray(rec_lens, dtype=np.int64)
        est = np.asarray(data_lens, dtype=np.int64) + (MAX_CHUNK_LEN_FIELD + 1 + 4)
        starts = np.zeros(len(rec_lens) + 1, dtype=np.int64)
        np.cumsum(rec_lens, out=starts[1:])
        if starts[-1] != len(mv):
            raise ValueError(f"records: lengths add up to {int(starts[-1])} bytes, buffer has {len(mv)}")
        refs = np.zeros(len(rec_lens), dtype=np.uint64)
        seg = self.segment_size
        if self._n == 0:
            self._cut()
        all_est = int(est.sum())
        if self._n + all_est <= seg and all_est + SEGMENT_HEADER_SIZE <= seg:
            # everything fits in the open segment: no series can trigger a cut
            refs[:] = (np.uint64(self.seq) << np.uint64(32)) | (starts[:-1] + self._n).astype(np.uint64)
            self._n += int(starts[-1])
            self._f.write(mv)
            return refs
        run = 0  # first byte of buf not yet written
        i = 0
        for c in series_counts:
            c = int(c)
            if c == 0:
                continue
            if self._n == 0:
                self._cut()
            total = int(est[i:i + c].sum())
            if total + SEGMENT_HEADER_SIZE <= seg and (self._n == SEGMENT_HEADER_SIZE or total + self._n <= seg):
                base = self._n - int(starts[i])
                refs[i:i + c] = (np.uint64(self.seq) << np.uint64(32)) | (starts[i:i + c] + base).astype(np.uint64)
                self._n += int(starts[i + c] - starts[i])
                i += c
                continue
            # rare: this series crosses a segment boundary; Go's batching chunk by chunk
            bsize, first, cuts = 0, True, []
            for j in range(c):
                bsize += int(est[i + j])
                cut = j != 0 and bsize + SEGMENT_HEADER_SIZE > seg
                if first and self._n > SEGMENT_HEADER_SIZE:
                    cut = bsize + self._n > seg
                    if cut:
                        first = False
                if cut:
                    cuts.append(j)
                    bsize = int(est[i + j])
            for j in range(c):
                if j in cuts:
                    self._f.write(mv[run:int(starts[i + j])])
                    run = int(starts[i + j])
                    self._cut()
                refs[i + j] = (self.seq << 32) | self._n
                self._n += int(rec_lens[i + j])
            i += c
        self._f.write(mv[run:])
        return refs

    def write_chunks(self, chunks: Iterable[tuple[int, bytes]]) -> list[int]:
        """Convenience: write ``(encoding, data)`` pairs of one series; returns refs."""
        chunks = list(chunks)
        buf = b"".join(d for _, d in chunks)
        offs = np.cumsum([0] + [len(d) for _, d in chunks])
        return [int(r) for r in self.write_series(buf, offs, [e for e, _ in chunks])]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "ChunkWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _uvarint_at(mv, pos: int, end: int) -> tuple[int, int] | None:
    """(value, position after) or None if truncated / longer than 5 bytes."""
    n = shift = 0
    for i in range(MAX_CHUNK_LEN_FIELD):
        if pos + i >= end:
            return None
        b = mv[pos + i]
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos + i + 1
        shift += 7
    return None


class ChunkReader:
    """Reads chunk records from segment sources (index = 0-based segment sequence)."""

    def __init__(self, sources: Sequence, *, block: str = "", names: Sequence[str] | None = None,
                 max_gap: int = DEFAULT_MAX_GAP, pool=None):
        self.sources = list(sources)
        self.pool = pool  # an Executor: the ranged reads of one call run on it concurrently
        self.block = block
        self.names = list(names) if names is not None else [f"chunks/{segment_name(i)}" for i in range(len(sources))]
        self.max_gap = max_gap
        self._sizes: dict[int, int] = {}
        self.reads = 0  # ranged reads issued (for tests and metrics)
        self.bytes_read = 0

    # -- helpers ----------------------------------------------------------------------------------
    def _err(self, seq: int, offset: int, what: str) -> CorruptChunkError:
        name = self.names[seq] if 0 <= seq < len(self.names) else f"chunks/{segment_name(seq)}"
        return CorruptChunkError(self.block, name, offset, what)

    def _read(self, seq: int, offset: int, length: int) -> bytes:
        data = self.sources[seq].read(offset, length)
        self.reads += 1  # (from several threads: a statistic, not exact under concurrency)
        self.bytes_read += len(data)
        return data

    def _size(self, seq: int) -> int:
        """Segment size, checking the header on first use."""
        if seq < 0 or seq >= len(self.sources):
            raise self._err(seq, 0, f"segment index {seq} out of range ({len(self.sources)} segment files)")
        sz = self._sizes.get(seq)
        if sz is None:
            sz = self.sources[seq].size()
            if sz < SEGMENT_HEADER_SIZE:
                raise self._err(seq, 0, f"segment file too short for its header ({sz} bytes)")
            head = self._read(seq, 0, SEGMENT_HEADER_SIZE)
            if len(head) < SEGMENT_HEADER_SIZE:
                raise self._err(seq, 0, "truncated segment header")
            magic, version = struct.unpack_from(">IB", head)
            if magic != MAGIC_CHUNKS:
                raise self._err(seq, 0, f"invalid magic number {magic:#010x} (want {MAGIC_CHUNKS:#010x})")
            if version != CHUNKS_FORMAT_V1:
                raise self._err(seq, 4, f"invalid chunk format version {version}")
            self._sizes[seq] = sz
        return sz

    def _parse(self, seq: int, mv, base: int, rel: int, end: int) -> tuple[int, int, int] | None:
        """Parse a record at ``mv[rel:]`` (file offset ``base + rel``); None if ``mv`` is too short.

        Returns (encoding, data start, data length) relative to ``mv``.
        """
        size = self._sizes[seq]
        off = base + rel
        lv = _uvarint_at(mv, rel, end)
        if lv is None:
            if base + end >= min(size, off + MAX_CHUNK_LEN_FIELD):
                raise self._err(seq, off, "truncated chunk record (length field)")
            return None
        n, p = lv
        if base + p + 1 + n + 4 > size:
            raise self._err(seq, off, f"truncated chunk record: {n} data bytes past the end of the file ({size} bytes)")
        if p + 1 + n + 4 > end:
            return None
        enc = mv[p]
        crc_want = struct.unpack_from(">I", mv, p + 1 + n)[0]
        crc = google_crc32c.value(bytes(mv[p:p + 1 + n]))
        if crc != crc_want:
            raise self._err(seq, off, f"checksum mismatch: stored {crc_want:08x}, computed {crc:08x}")
        return enc, p + 1, n

    def _check_ref(self, ref: int) -> tuple[int, int, int]:
        seq, off = split_ref(int(ref))
        size = self._size(seq)
        if off >= size:
            raise self._err(seq, off, f"chunk ref {ref} points past the end of the segment ({size} bytes)")
        if off < SEGMENT_HEADER_SIZE:
            raise self._err(seq, off, f"chunk ref {ref} points into the segment header")
        return seq, off, size

    # -- API --------------------------------------------------------------------------------------
    def chunk(self, ref: int) -> tuple[int, bytes]:
        """``(encoding, data)`` of one chunk."""
        seq, off, size = self._check_ref(ref)
        length = min(size - off, MAX_CHUNK_LEN_FIELD + 1 + 1024 + 4)
        while True:
            data = self._read(seq, off, length)
            mv = memoryview(data)
            r = self._parse(seq, mv, off, 0, len(mv))
            if r is not None:
                enc, s, n = r
                return enc, bytes(mv[s:s + n])
            length = min(size - off, length * 16)

    def chunks(self, refs: Sequence[int]) -> list[tuple[int, bytes]]:
        """``(encoding, data)`` per ref, in the order given, with coalesced ranged reads."""
        encs, buf, offs, lens = self.chunks_raw(refs)
        mv = memoryview(buf)
        return [(int(encs[i]), bytes(mv[offs[i]:offs[i] + lens[i]])) for i in range(len(encs))]

    def chunks_raw(self, refs: Sequence[int], check: Optional[Callable[[], None]] = None):
        """Batched read: ``(encodings uint8[k], buf bytes, data_offsets int64[k], data_lengths int64[k])``.

        Chunk i's data is ``buf[data_offsets[i] : data_offsets[i] + data_lengths[i]]``; refs are
        returned in the order given. Records of one segment no further than ``max_gap`` apart
        are fetched in one ranged read; a record's end is taken from the next ref when that is
        in the same read, else estimated (16000 bytes, as Thanos does) and re-read if longer.
        ``check`` is called before every ranged read: it raises to stop a read nobody waits for.
        """
        refs = np.asarray(refs, dtype=np.uint64)
        k = len(refs)
        encs = np.zeros(k, dtype=np.uint8)
        offs = np.zeros(k, dtype=np.int64)
        lens = np.zeros(k, dtype=np.int64)
        pieces: list[bytes] = []
        total = 0
        if k == 0:
            return encs, b"", offs, lens
        from ._series import records

        order = np.argsort(refs, kind="stable")
        sref = refs[order]
        seqs = (sref >> np.uint64(32)).astype(np.int64)
        pos = (sref & np.uint64(0xFFFFFFFF)).astype(np.int64)
        # 1. every ref checked (segment exists, offset inside it) on whole arrays
        useq = np.unique(seqs)
        sizes = np.array([self._size(int(q)) for q in useq], dtype=np.int64)[np.searchsorted(useq, seqs)]
        bad = (pos < SEGMENT_HEADER_SIZE) | (pos >= sizes)
        if bad.any():
            self._check_ref(int(sref[int(np.flatnonzero(bad)[0])]))  # raises, naming the ref
        # 2. the ranged reads: runs of refs of one segment within max_gap, at most MAX_RANGE_SIZE
        cuts = (np.flatnonzero((seqs[1:] != seqs[:-1])
                               | (np.diff(pos) > self.max_gap + ESTIMATED_MAX_CHUNK_SIZE)) + 1).tolist()
        groups = []
        for g0, g in zip([0] + cuts, cuts + [k]):
            while g0 < g:
                j = max(g0 + 1, g0 + int(np.searchsorted(pos[g0:g], pos[g0] + MAX_RANGE_SIZE, side="right")))
                seq, start, size = int(seqs[g0]), int(pos[g0]), int(sizes[g0])
                end = min(size, int(pos[j - 1]) + MAX_CHUNK_LEN_FIELD + 1 + ESTIMATED_MAX_CHUNK_SIZE + 4)
                groups.append((g0, j, seq, start, end, size))
                g0 = j
        def read(g: tuple) -> bytes:
            if check is not None:
                check()
            return self._read(g[2], g[3], g[4] - g[3])

        if self.pool is not None and len(groups) > 1:
            datas = list(self.pool.map(read, groups))
        else:
            datas = [read(g) for g in groups]
        # 3. records parsed out of each read, in C
        for (i, j, seq, start, _, size), data in zip(groups, datas):
            e, st, ln, err = records(data, pos[i:j] - start, start, size)
            if err is not None:
                raise self._err(seq, err[1], err[2])
            e, st, ln = (np.frombuffer(x, dtype=np.int64) for x in (e, st, ln))
            idx = order[i:j]
            encs[idx], offs[idx], lens[idx] = e, st + total, ln
            pieces.append(data)
            total += len(data)
            for t in np.flatnonzero(st < 0).tolist():  # longer than estimated: read it alone
                enc, d = self.chunk(int(sref[i + t]))
                encs[idx[t]], offs[idx[t]], lens[idx[t]] = enc, total, len(d)
                pieces.append(d)
                total += len(d)
        return encs, b"".join(pieces) if len(pieces) > 1 else pieces[0], offs, lens


def segment_files(chunks_dir: str | os.PathLike) -> list[str]:
    """Sorted segment file paths of a local ``chunks/`` directory (as Go's ``os.ReadDir``)."""
    d = os.fspath(chunks_dir)
    return [os.path.join(d, n) for n in sorted(os.listdir(d)) if os.path.isfile(os.path.join(d, n))]
