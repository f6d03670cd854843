"""A block writer that streams: series arrive in label order with their chunks already encoded.

The compactor and the downsampler never hold a block in memory: they read series from their
input blocks in the index's label order, produce each output series' chunks, and hand them
here. Chunk bytes go straight to the segment files and the series entry straight to the index;
only the postings (one ref per label pair, as Prometheus) and the symbol table stay in memory.

``StreamBlockWriter(output_dir, symbols, min_time=, max_time=, thanos=, compaction=)``;
``add_series(labels, chunks)`` with ``labels`` a name-sorted sequence of ``(name, value)`` and
``chunks`` a sequence of ``(mint, maxt, encoding, data)`` in time order; ``write()`` returns the
:class:`BlockMeta` (``None`` when no series had chunks), ``abort()`` removes the partial block.
The block is built in ``<output_dir>/<ULID>.tmp-for-creation`` and renamed when complete.
"""
from __future__ import annotations

import os
import shutil
from typing import Iterable, Sequence

import numpy as np

from . import tombstones as _tomb
from . import ulid as _ulid
from .chunks import ChunkWriter, DEFAULT_SEGMENT_SIZE
from .meta import META_FILENAME, BlockMeta, BlockStats, Compaction, ThanosFile, ThanosMeta, write_meta

TMP_FOR_CREATION = ".tmp-for-creation"
INDEX_FILENAME = "index"
CHUNKS_DIRNAME = "chunks"

Chunk = tuple  # (mint, maxt, encoding, data)


def chunk_samples(encoding: int, data: bytes | memoryview) -> int:
    """Samples in one chunk: XOR's 2-byte count, or an AggrChunk's count sub-chunk's."""
    mv = memoryview(data)
    if encoding == 1:
        return int.from_bytes(mv[:2], "big") if len(mv) >= 2 else 0
    if encoding == 0xFF:
        from .aggrchunk import get
        c = get(bytes(mv), 0)
        return int.from_bytes(c[1][:2], "big") if c and c[0] == 1 and len(c[1]) >= 2 else 0
    return int.from_bytes(mv[:2], "big") if len(mv) >= 2 else 0


def finish_thanos_meta(thanos: ThanosMeta | None, block_dir: str, segment_files: Sequence[str]) -> None:
    """Fill ``segment_files`` and ``files`` (sizes) as Thanos' writers do."""
    if thanos is None:
        return
    thanos.segment_files = list(segment_files)
    files = [ThanosFile(f"{CHUNKS_DIRNAME}/{f}", os.path.getsize(os.path.join(block_dir, CHUNKS_DIRNAME, f)))
             for f in segment_files]
    files.append(ThanosFile(INDEX_FILENAME, os.path.getsize(os.path.join(block_dir, INDEX_FILENAME))))
    files.append(ThanosFile(META_FILENAME))
    thanos.files = sorted(files, key=lambda f: f.rel_path)


class StreamBlockWriter:
    """See the module docstring."""

    def __init__(self, output_dir: str | os.PathLike, symbols: Iterable[str], *, min_time: int, max_time: int,
                 thanos: ThanosMeta | None = None, compaction: Compaction | None = None,
                 block_ulid: str | None = None, segment_size: int = DEFAULT_SEGMENT_SIZE,
                 prometheus_stats: bool = False, index_stats: bool | None = None):
        """``prometheus_stats``: also fill ``numFloatSamples`` / ``numHistogramSamples`` as a
        Prometheus 3 compaction does; ``index_stats`` (default: as ``prometheus_stats``): fill
        ``thanos.index_stats`` as Thanos' index health check does after compaction and downsampling."""
        from .index import IndexWriter

        self.ulid = block_ulid or _ulid.new()
        self.output_dir = os.fspath(output_dir)
        self.final = os.path.join(self.output_dir, self.ulid)
        self.tmp = self.final + TMP_FOR_CREATION
        self.min_time, self.max_time = min_time, max_time
        self.thanos = thanos
        self.compaction = compaction
        self.stats = BlockStats()
        self.prometheus_stats = prometheus_stats
        self.index_stats = prometheus_stats if index_stats is None else index_stats
        self._prev_ref = 0
        self._series_max = 0
        self._chunk_max = 0
        if os.path.exists(self.tmp):
            shutil.rmtree(self.tmp)
        os.makedirs(os.path.join(self.tmp, CHUNKS_DIRNAME))
        self._cw = ChunkWriter(os.path.join(self.tmp, CHUNKS_DIRNAME), segment_size)
        try:
            self._iw = IndexWriter(os.path.join(self.tmp, INDEX_FILENAME), symbols, style="prom3")
        except BaseException:
            self._cw.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self._done = False

    def add_series(self, labels: Sequence[tuple[str, str]], chunks: Sequence[Chunk]) -> None:
        """Append one series (labels strictly after the previous series'); empty ``chunks`` is a no-op."""
        if not chunks:
            return
        lens = [len(c[3]) for c in chunks]
        offs = np.zeros(len(chunks) + 1, dtype=np.int64)
        np.cumsum(lens, out=offs[1:])
        buf = b"".join(bytes(c[3]) if isinstance(c[3], memoryview) else c[3] for c in chunks)
        encs = [int(c[2]) for c in chunks]
        refs = self._cw.write_series(buf, offs, encs)
        ref = self._iw.add_series(labels, [(int(c[0]), int(c[1]), int(r)) for c, r in zip(chunks, refs.tolist())])
        n = sum(chunk_samples(e, c[3]) for e, c in zip(encs, chunks))
        self._account(ref, refs, n, encs)

    def _account(self, ref: int, refs: np.ndarray, n: int, encs) -> None:
        st = self.stats
        st.num_series += 1
        st.num_chunks += len(refs)
        st.num_samples += n
        if self.prometheus_stats:
            hist = sum(1 for e in encs if e in (2, 3)) if not isinstance(encs, int) else (encs in (2, 3))
            if hist:
                st.num_histogram_samples += n  # mixed series are rare; native histograms come later
            else:
                st.num_float_samples += n
        if not self.index_stats:
            return
        # Thanos' GatherIndexHealthStats: distance between consecutive series entries (x16), and
        # between chunk refs in one segment (skipping a series' last two chunks, as Thanos does).
        if self._prev_ref:
            self._series_max = max(self._series_max, (ref - self._prev_ref) * 16)
        self._prev_ref = ref
        if len(refs) > 2:
            r = refs.astype(np.int64)
            d = np.diff(r)[:len(r) - 2]
            same = (r[1:len(r) - 1] >> 32) == (r[:len(r) - 2] >> 32)
            if same.any():
                self._chunk_max = max(self._chunk_max, int(d[same].max()))

    def add_series_raw(self, labels: Sequence[tuple[str, str]], mints, maxts, encs, buf, offs,
                       num_samples: int) -> None:
        """Append one series whose chunks are ``buf[offs[i]:offs[i+1]]`` (sample count given)."""
        if len(mints) == 0:
            return
        refs = self._cw.write_series(buf, offs, encs)
        ref = self._iw.add_series(labels, list(zip(mints, maxts, refs.tolist())))
        self._account(ref, refs, int(num_samples), encs)

    def add_many(self, labels: Sequence, buf, offs: np.ndarray, encodings, mint: np.ndarray, maxt: np.ndarray,
                 nchunks: np.ndarray, samples: np.ndarray) -> None:
        """Append many series at once (labels in order, after the previous ones): series ``i`` has
        ``nchunks[i]`` chunks (0: skipped), chunk ``j`` is ``buf[offs[j]:offs[j+1]]`` with
        ``encodings`` (one byte for all or one per chunk) and ``samples[j]`` samples. Records and
        index entries are built in C: no Python per chunk."""
        from ._indexenc import chunk_records

        nchunks = np.asarray(nchunks, dtype=np.int64)
        if len(nchunks) == 0 or int(nchunks.sum()) == 0:
            return
        offs = np.ascontiguousarray(offs, dtype=np.int64)
        encs = bytes([encodings]) if isinstance(encodings, (int, np.integer)) else \
            np.ascontiguousarray(encodings, dtype=np.uint8).tobytes()
        recs, rec_lens = chunk_records(buf, offs, encs)
        rec_lens = np.frombuffer(rec_lens, dtype=np.int64)
        keep = nchunks > 0
        refs = self._cw.write_records(recs, rec_lens, np.diff(offs), nchunks[keep].tolist())
        si = self._iw._sym_index
        kept = [lb for lb, k in zip(labels, keep.tolist()) if k]
        nl = np.fromiter((len(lb) for lb in kept), np.int64, len(kept))
        try:
            syms = np.fromiter((si[x] for lb in kept for kv in lb for x in kv), np.uint32, int(nl.sum()) * 2)
        except KeyError as e:
            raise ValueError(f"symbol {e.args[0]!r} is not in the block's symbol table") from None
        srefs = self._iw.add_encoded_series(nl, syms, nchunks[keep], mint, maxt, refs.astype(np.int64))
        enc_arr = np.frombuffer(encs, dtype=np.uint8)
        if len(enc_arr) == 1:
            enc_arr = np.repeat(enc_arr, len(rec_lens))
        self.account_bulk(srefs, refs, nchunks[keep], np.asarray(samples, dtype=np.int64), enc_arr)

    def account_bulk(self, series_refs: np.ndarray, chunk_refs: np.ndarray, nchunks: np.ndarray,
                     samples: np.ndarray, encodings: np.ndarray) -> None:
        """Stats for series written in bulk (:meth:`IndexWriter.add_encoded_series`), as
        :meth:`add_series` keeps them one by one."""
        st = self.stats
        n = len(series_refs)
        if n == 0:
            return
        st.num_series += n
        st.num_chunks += int(nchunks.sum())
        total = int(samples.sum())
        st.num_samples += total
        if self.prometheus_stats:
            hist = np.isin(encodings, (2, 3))
            st.num_histogram_samples += int(samples[hist].sum())
            st.num_float_samples += total - int(samples[hist].sum())
        if not self.index_stats:
            return
        srefs = np.asarray(series_refs, dtype=np.int64)
        if self._prev_ref:
            srefs = np.concatenate(([self._prev_ref], srefs))
        if len(srefs) > 1:
            self._series_max = max(self._series_max, int(np.diff(srefs).max()) * 16)
        self._prev_ref = int(srefs[-1])
        # chunk sizes as Thanos' health check measures them: ref distance to the next chunk of the
        # series in the same segment, for every chunk but a series' last two
        r = np.asarray(chunk_refs, dtype=np.int64)
        if len(r) > 1:
            pos = np.arange(len(r)) - np.repeat(np.concatenate(([0], np.cumsum(nchunks)[:-1])), nchunks)
            left = np.repeat(nchunks, nchunks) - pos  # chunks from this one to the series' end
            ok = (left[:-1] > 2) & ((r[1:] >> 32) == (r[:-1] >> 32))
            if ok.any():
                self._chunk_max = max(self._chunk_max, int(np.diff(r)[ok].max()))

    def write(self) -> BlockMeta | None:
        """Finish the index, tombstones and meta.json, and move the block into place."""
        self._done = True
        try:
            self._cw.close()
            if self.stats.num_series == 0:
                self._iw.abort()
                shutil.rmtree(self.tmp, ignore_errors=True)
                return None
            self._iw.close()
            _tomb.write(self.tmp)
            comp = self.compaction or Compaction(level=1, sources=[self.ulid])
            meta = BlockMeta(ulid=self.ulid, min_time=self.min_time, max_time=self.max_time, stats=self.stats,
                             compaction=comp, thanos=self.thanos)
            if meta.thanos is not None and self.index_stats:
                meta.thanos.index_stats = {"series_max_size": self._series_max, "chunk_max_size": self._chunk_max}
            finish_thanos_meta(meta.thanos, self.tmp, [os.path.basename(f) for f in self._cw.files])
            write_meta(self.tmp, meta)
            os.replace(self.tmp, self.final)
            return meta
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the partial block (safe to call twice)."""
        self._done = True
        self._cw.close()
        if not getattr(self._iw, "_closed", True):
            self._iw.abort()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "StreamBlockWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._done:
            self.abort()
