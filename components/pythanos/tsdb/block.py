"""Writing and reading whole TSDB blocks (``<ULID>/{meta.json,index,chunks/,tombstones}``).

Writing
-------
``BlockWriter(output_dir, style="prom3"|"prom2", thanos=None, ...)``: feed series with
``add_series(labels, t, v)`` (labels: mapping or ``(name, value)`` pairs; ``t`` int64 ms,
``v`` float64, numpy arrays or sequences; series in any order), then ``write()`` returns the
:class:`~pythanos.tsdb.meta.BlockMeta` (``None`` if there were no samples: Prometheus never
writes empty blocks). The block goes to ``<output_dir>/<ULID>.tmp-for-creation`` and is
renamed to ``<output_dir>/<ULID>`` when complete.

* Time range: ``min_time``/``max_time`` (``max_time`` exclusive) if given, else the first
  sample and last sample + 1 (as promtool). Samples outside ``[min_time, max_time)`` are
  dropped, never written. Duplicate timestamps keep the first sample (head semantics).
* Chunk cutting:
  - ``cutting="fixed"`` (default for prom3): every ``samples_per_chunk`` (120) samples and,
    with ``align_ranges=True``, never across a multiple of ``chunk_range`` (2h);
  - ``cutting="head"`` (default for prom2): Prometheus 2.42's head rules (``nextAt`` from the
    ``head_chunk_range``-aligned end, re-estimated at 30 samples, hard cut at 240), run
    separately on each ``chunk_range`` window (a fresh head per block, as promtool), so a
    block written from the samples of a promtool / Prometheus 2.42 block is byte-identical to
    it (index and chunks; meta.json differs by the ULID only). ``head_chunk_range`` defaults
    to ``2 * chunk_range`` because promtool's backfill "pretends the block is twice as large";
    for blocks a running Prometheus cut from its head, pass its ``min-block-duration``.
* ``style="prom2"``: ``""`` symbol, legacy label indices, 2.x XOR trailing-zero quirk;
  ``style="prom3"``: none of these (what Prometheus >= 3.7 writes). Both are read by 2.42.
* ``thanos``: a :class:`~pythanos.tsdb.meta.ThanosMeta` or a dict (``labels``, ``source``,
  ``resolution``/``downsample_resolution``, ...) adds the ``thanos`` section, with
  ``segment_files`` and ``files`` (sizes) filled in as Thanos' shipper does.

``write_blocks(output_dir, series_iter, ranges, thanos_labels=None, source="", style="prom3")``
writes one block per ``(mint, maxt)`` range (maxt exclusive, e.g. 2h-aligned windows) from one
stream of ``(labels, t, v)`` series, and returns the metas of the written blocks (ranges
without samples produce no block). ``series_iter`` is consumed once; each series is split
over the ranges with ``searchsorted``. ``aligned_ranges(mint, maxt, step=2h)`` builds the
list of aligned windows covering ``[mint, maxt)``.

Reading
-------
``BlockReader.open_dir(path)`` or ``BlockReader.open_bucket(bucket, ulid)``: ``meta``,
``index`` (IndexReader), ``chunks`` (ChunkReader), ``tombstones`` (local only; Thanos never
uploads them). ``series(matchers, mint, maxt)`` yields ``(labels, t, v)`` for the matching
series, decoding only chunks overlapping the closed interval ``[mint, maxt]`` (batched reads
and one ``decode_xor_many`` call per batch), with tombstoned samples removed. On a bucket
nothing is downloaded whole: the index is read with ranged reads, chunks with coalesced
ranged reads. ``series_chunks(...)`` yields raw chunks instead.
"""
from __future__ import annotations

import copy
import os
import shutil
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import tombstones as _tomb
from . import ulid as _ulid
from .chunks import ChunkReader, ChunkWriter, DEFAULT_SEGMENT_SIZE, segment_name
from .errors import CorruptChunkError
from .meta import (
    META_FILENAME,
    BlockMeta,
    BlockStats,
    Compaction,
    ThanosFile,
    ThanosMeta,
    read_meta,
    write_meta,
)
from .source import BucketSource, FileSource

DEFAULT_BLOCK_RANGE = 2 * 3600 * 1000
DEFAULT_SAMPLES_PER_CHUNK = 120
TMP_FOR_CREATION = ".tmp-for-creation"
INDEX_FILENAME = "index"
CHUNKS_DIRNAME = "chunks"
ENCODING_XOR = 1
MIN_TIME = -(1 << 63)
MAX_TIME = (1 << 63) - 1

Labels = tuple  # tuple[tuple[str, str], ...] sorted by name


def norm_labels(labels) -> tuple[tuple[str, str], ...]:
    """Labels as a name-sorted tuple of (name, value) pairs; empty values dropped (as Prometheus)."""
    items = labels.items() if isinstance(labels, Mapping) else labels
    out = tuple(sorted((str(n), str(v)) for n, v in items if v != ""))
    for i in range(1, len(out)):
        if out[i][0] == out[i - 1][0]:
            raise ValueError(f"duplicate label name {out[i][0]!r} in {out}")
    return out


# --- chunk cutting -------------------------------------------------------------------------------

def _go_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def range_end(t: int, width: int) -> int:
    """Prometheus' ``rangeForTimestamp``: the end of the ``width``-aligned range holding ``t``."""
    return _go_div(t, width) * width + width


def cut_fixed(t: np.ndarray, samples_per_chunk: int = DEFAULT_SAMPLES_PER_CHUNK,
              chunk_range: int | None = DEFAULT_BLOCK_RANGE) -> np.ndarray:
    """Chunk bounds (k+1 indices): every ``samples_per_chunk`` samples, restarting at each
    multiple of ``chunk_range`` (``None``: no alignment)."""
    n = len(t)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    if chunk_range:
        seg = np.floor_divide(t, chunk_range)
        starts = np.concatenate(([0], np.flatnonzero(np.diff(seg)) + 1))
    else:
        starts = np.array([0], dtype=np.int64)
    ends = np.append(starts[1:], n)
    parts = [np.arange(s, e, samples_per_chunk, dtype=np.int64) for s, e in zip(starts.tolist(), ends.tolist())]
    return np.append(np.concatenate(parts), n).astype(np.int64)


def cut_head(t: np.ndarray, samples_per_chunk: int = DEFAULT_SAMPLES_PER_CHUNK,
             chunk_range: int = DEFAULT_BLOCK_RANGE) -> np.ndarray:
    """Chunk bounds as Prometheus 2.42's head cuts them (``memSeries.appendPreprocessor``).

    A chunk starting at sample a ends at the first sample with ``t >= nextAt`` where
    ``nextAt = rangeForTimestamp(t[a])``; when the chunk holds ``samples_per_chunk/4``
    samples, ``nextAt`` becomes ``computeChunkEndTime(t[a], t[a+q-1], nextAt)``; a chunk
    never exceeds ``2*samples_per_chunk`` samples.
    """
    n = len(t)
    bounds = [0]
    q = samples_per_chunk // 4
    hard = samples_per_chunk * 2
    tl = t  # numpy for searchsorted
    a = 0
    while a < n:
        start = int(tl[a])
        nxt = range_end(start, chunk_range)
        j = int(np.searchsorted(tl, nxt, side="left"))
        if j < a + 1:
            j = a + 1
        if j <= a + q or a + q >= n:
            end = min(j, n)
        else:
            cur = int(tl[a + q - 1])
            m = _go_div(nxt - start, (cur - start + 1) * 4)
            if m > 1:
                nxt = start + _go_div(nxt - start, m)
            j2 = int(np.searchsorted(tl, nxt, side="left"))
            end = min(max(j2, a + q), a + hard, n)
        bounds.append(end)
        a = end
    return np.asarray(bounds, dtype=np.int64)


# --- writer --------------------------------------------------------------------------------------

def _thanos_meta(thanos) -> ThanosMeta | None:
    if thanos is None:
        return None
    if isinstance(thanos, ThanosMeta):
        return copy.deepcopy(thanos)  # the writer fills in files / segment_files
    d = dict(thanos)
    res = d.pop("resolution", d.pop("downsample_resolution", 0))
    return ThanosMeta(labels=dict(d.pop("labels", {}) or {}), downsample_resolution=int(res),
                      source=d.pop("source", ""), **d)


class BlockWriter:
    """Builds one block from series given in any order; see the module docstring."""

    def __init__(self, output_dir: str | os.PathLike, *, style: str = "prom3", thanos=None,
                 samples_per_chunk: int = DEFAULT_SAMPLES_PER_CHUNK, align_ranges: bool = True,
                 chunk_range: int = DEFAULT_BLOCK_RANGE, head_chunk_range: int | None = None,
                 cutting: str | None = None,
                 min_time: int | None = None, max_time: int | None = None, block_ulid: str | None = None,
                 segment_size: int = DEFAULT_SEGMENT_SIZE, compaction: Compaction | None = None,
                 encode_batch_samples: int = 1 << 20):
        if style not in ("prom2", "prom3"):
            raise ValueError(f"style must be 'prom2' or 'prom3', not {style!r}")
        self.output_dir = os.fspath(output_dir)
        self.style = style
        self.thanos = _thanos_meta(thanos)
        self.samples_per_chunk = samples_per_chunk
        self.align_ranges = align_ranges
        self.chunk_range = chunk_range
        self.head_chunk_range = head_chunk_range or 2 * chunk_range
        self.cutting = cutting or ("head" if style == "prom2" else "fixed")
        if self.cutting not in ("head", "fixed"):
            raise ValueError(f"cutting must be 'head' or 'fixed', not {cutting!r}")
        self.min_time = min_time
        self.max_time = max_time
        self.ulid = block_ulid
        self.segment_size = segment_size
        self.compaction = compaction
        self.encode_batch_samples = encode_batch_samples
        self._series: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def add_series(self, labels, t, v) -> None:
        lbls = norm_labels(labels)
        t = np.asarray(t, dtype=np.int64)
        v = np.asarray(v, dtype=np.float64)
        if t.shape != v.shape or t.ndim != 1:
            raise ValueError(f"series {lbls}: t and v must be 1-d arrays of equal length")
        if len(t) > 1 and not np.all(t[1:] > t[:-1]):
            order = np.argsort(t, kind="stable")
            t, v = t[order], v[order]
            keep = np.concatenate(([True], t[1:] != t[:-1]))
            t, v = t[keep], v[keep]
        if lbls in self._series:
            raise ValueError(f"series {lbls} added twice")
        self._series[lbls] = (t, v)

    def _bounds(self, t: np.ndarray) -> np.ndarray:
        if self.cutting == "head":
            if not self.align_ranges or len(t) == 0:
                return cut_head(t, self.samples_per_chunk, self.head_chunk_range)
            # A fresh head per chunk_range window, as promtool backfills.
            seg = np.floor_divide(t, self.chunk_range)
            starts = np.concatenate(([0], np.flatnonzero(np.diff(seg)) + 1)).tolist()
            ends = starts[1:] + [len(t)]
            parts = [cut_head(t[a:b], self.samples_per_chunk, self.head_chunk_range)[:-1] + a
                     for a, b in zip(starts, ends)]
            return np.append(np.concatenate(parts), len(t)).astype(np.int64)
        return cut_fixed(t, self.samples_per_chunk, self.chunk_range if self.align_ranges else None)

    def write(self) -> BlockMeta | None:
        from .chunkenc import encode_xor_many
        from .index import IndexWriter

        mint_lim = MIN_TIME if self.min_time is None else self.min_time
        maxt_lim = MAX_TIME if self.max_time is None else self.max_time
        series: list[tuple[tuple, np.ndarray, np.ndarray]] = []
        lo, hi = MAX_TIME, MIN_TIME
        for lbls in sorted(self._series):
            t, v = self._series[lbls]
            if len(t) and (t[0] < mint_lim or t[-1] >= maxt_lim):
                i0, i1 = np.searchsorted(t, [mint_lim, maxt_lim], side="left")
                t, v = t[i0:i1], v[i0:i1]
            if len(t) == 0:
                continue
            lo, hi = min(lo, int(t[0])), max(hi, int(t[-1]))
            series.append((lbls, t, v))
        if not series:
            return None
        min_time = lo if self.min_time is None else self.min_time
        max_time = hi + 1 if self.max_time is None else self.max_time
        uid = self.ulid or _ulid.new()
        final = os.path.join(self.output_dir, uid)
        tmp = final + TMP_FOR_CREATION
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(os.path.join(tmp, CHUNKS_DIRNAME))
        stats = BlockStats(num_series=len(series))
        quirk = self.style == "prom2"
        iw = None
        try:
            symbols = {""} if self.style == "prom2" else set()
            for lbls, _, _ in series:
                for n, v in lbls:
                    symbols.add(n)
                    symbols.add(v)
            iw = IndexWriter(os.path.join(tmp, INDEX_FILENAME), symbols, style=self.style)
            with ChunkWriter(os.path.join(tmp, CHUNKS_DIRNAME), self.segment_size) as cw:
                i = 0
                while i < len(series):
                    # One encode call for a batch of series.
                    j, n = i, 0
                    while j < len(series) and (j == i or n + len(series[j][1]) <= self.encode_batch_samples):
                        n += len(series[j][1])
                        j += 1
                    batch = series[i:j]
                    bnds, base, sbase = [], 0, [0]
                    for _, t, _ in batch:
                        b = self._bounds(t)
                        bnds.append(b[:-1] + base)
                        base += len(t)
                        sbase.append(sbase[-1] + len(b) - 1)
                    bnds.append(np.array([base], dtype=np.int64))
                    allb = np.concatenate(bnds)
                    tt = np.concatenate([s[1] for s in batch]) if len(batch) > 1 else batch[0][1]
                    vv = np.concatenate([s[2] for s in batch]) if len(batch) > 1 else batch[0][2]
                    buf, offs = encode_xor_many(tt, vv, allb, prom2_quirk=quirk)
                    offs = np.asarray(offs, dtype=np.int64)
                    if len(offs) == len(allb) - 1:
                        offs = np.append(offs, len(buf))
                    for si, (lbls, t, v) in enumerate(batch):
                        c0, c1 = sbase[si], sbase[si + 1]
                        o0 = int(offs[c0])
                        refs = cw.write_series(memoryview(buf)[o0:int(offs[c1])], offs[c0:c1 + 1] - o0, ENCODING_XOR)
                        cb = allb[c0:c1 + 1]
                        mints = tt[cb[:-1]]
                        maxts = tt[cb[1:] - 1]
                        iw.add_series(lbls, [(int(a), int(b), int(r)) for a, b, r in zip(mints, maxts, refs)])
                        stats.num_samples += len(t)
                        stats.num_chunks += c1 - c0
                    i = j
                seg_files = [os.path.basename(f) for f in cw.files]
            iw.close()
            _tomb.write(tmp)
            comp = self.compaction or Compaction(level=1, sources=[uid])
            meta = BlockMeta(ulid=uid, min_time=min_time, max_time=max_time, stats=stats, compaction=comp,
                             thanos=self.thanos)
            if meta.thanos is not None:
                meta.thanos.segment_files = seg_files
                files = [ThanosFile(f"{CHUNKS_DIRNAME}/{f}", os.path.getsize(os.path.join(tmp, CHUNKS_DIRNAME, f)))
                         for f in seg_files]
                files.append(ThanosFile(INDEX_FILENAME, os.path.getsize(os.path.join(tmp, INDEX_FILENAME))))
                files.append(ThanosFile(META_FILENAME))
                meta.thanos.files = files
            write_meta(tmp, meta)
            os.replace(tmp, final)
        except BaseException:
            if iw is not None and not getattr(iw, "_closed", True):
                iw.abort()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return meta

    flush = write


def aligned_ranges(mint: int, maxt: int, step: int = DEFAULT_BLOCK_RANGE) -> list[tuple[int, int]]:
    """``step``-aligned windows ``[k*step, (k+1)*step)`` covering ``[mint, maxt)``."""
    out = []
    s = (mint // step) * step
    while s < maxt:
        out.append((s, s + step))
        s += step
    return out


def write_blocks(output_dir: str | os.PathLike, series_iter: Iterable, ranges: Sequence[tuple[int, int]],
                 thanos_labels: Mapping[str, str] | None = None, source: str = "", *, style: str = "prom3",
                 resolution: int = 0, **writer_kw) -> list[BlockMeta]:
    """One block per range from one stream of ``(labels, t, v)``; see the module docstring.

    With ``thanos_labels`` (or ``source``) the metas get a thanos section. Each block's
    minTime/maxTime are the range's bounds (so blocks are 2h-aligned when the ranges are).
    """
    thanos = None
    if thanos_labels is not None or source:
        thanos = dict(labels=dict(thanos_labels or {}), source=source, resolution=resolution)
    writers = [BlockWriter(output_dir, style=style, thanos=dict(thanos) if thanos else None,
                           min_time=a, max_time=b, **writer_kw) for a, b in ranges]
    starts = np.array([a for a, _ in ranges], dtype=np.int64)
    ends = np.array([b for _, b in ranges], dtype=np.int64)
    for labels, t, v in series_iter:
        t = np.asarray(t, dtype=np.int64)
        v = np.asarray(v, dtype=np.float64)
        i0s = np.searchsorted(t, starts, side="left")
        i1s = np.searchsorted(t, ends, side="left")
        for w, i0, i1 in zip(writers, i0s.tolist(), i1s.tolist()):
            if i1 > i0:
                w.add_series(labels, t[i0:i1], v[i0:i1])
    metas = []
    for w in writers:
        m = w.write()
        if m is not None:
            metas.append(m)
    return metas


# --- reader --------------------------------------------------------------------------------------

def _apply_tombstones(t: np.ndarray, v: np.ndarray, intervals) -> tuple[np.ndarray, np.ndarray]:
    keep = np.ones(len(t), dtype=bool)
    for a, b in intervals:
        i0, i1 = np.searchsorted(t, [a, b], side="left")
        i1 = np.searchsorted(t, b, side="right")
        keep[i0:i1] = False
    return t[keep], v[keep]


class BlockReader:
    """A block opened from a local directory or a bucket; see the module docstring."""

    def __init__(self, meta: BlockMeta, index, chunks: ChunkReader, tombstones: dict, *, path: str = "",
                 sources: Sequence = ()):
        self.meta = meta
        self.index = index
        self.chunks = chunks
        self.tombstones = tombstones
        self.path = path
        self._sources = list(sources)

    @property
    def ulid(self) -> str:
        return self.meta.ulid

    @classmethod
    def open_dir(cls, path: str | os.PathLike) -> "BlockReader":
        from .index import IndexReader

        path = os.fspath(path)
        block = os.path.basename(os.path.normpath(path))
        meta = read_meta(path)
        cdir = os.path.join(path, CHUNKS_DIRNAME)
        if not os.path.isdir(cdir):
            raise CorruptChunkError(block, CHUNKS_DIRNAME, 0, "chunks directory missing")
        names = sorted(n for n in os.listdir(cdir) if os.path.isfile(os.path.join(cdir, n)))
        csrc = [FileSource(os.path.join(cdir, n), block=block, name=f"{CHUNKS_DIRNAME}/{n}") for n in names]
        isrc = FileSource(os.path.join(path, INDEX_FILENAME), block=block, name=INDEX_FILENAME)
        index = IndexReader(isrc, block=block, file=INDEX_FILENAME)
        chunks = ChunkReader(csrc, block=block, names=[f"{CHUNKS_DIRNAME}/{n}" for n in names])
        stones = _tomb.read(path, block=block)
        return cls(meta, index, chunks, stones, path=path, sources=[isrc, *csrc])

    @classmethod
    def open_bucket(cls, bucket, block_ulid: str, *, index_readahead: int = 64 * 1024,
                    meta: BlockMeta | None = None) -> "BlockReader":
        from .index import IndexReader

        if meta is None:
            meta = BlockMeta.from_json(bucket.get(f"{block_ulid}/{META_FILENAME}"), block=block_ulid)
        # Thanos' meta lists the files with sizes: no listing, no HEAD requests needed.
        sizes = {f.rel_path: f.size_bytes for f in (meta.thanos.files if meta.thanos else []) if f.size_bytes}
        names = sorted(n for n in sizes if n.startswith(f"{CHUNKS_DIRNAME}/"))
        if not names or INDEX_FILENAME not in sizes:
            sizes = {}
            names = sorted(f"{CHUNKS_DIRNAME}/{k.rsplit('/', 1)[-1]}"
                           for k in bucket.iter(f"{block_ulid}/{CHUNKS_DIRNAME}/", recursive=False)
                           if not k.endswith("/"))
        csrc = [BucketSource(bucket, f"{block_ulid}/{n}", n, block=block_ulid, size=sizes.get(n)) for n in names]
        isrc = BucketSource(bucket, f"{block_ulid}/{INDEX_FILENAME}", INDEX_FILENAME, block=block_ulid,
                            readahead=index_readahead, size=sizes.get(INDEX_FILENAME))
        index = IndexReader(isrc, block=block_ulid, file=INDEX_FILENAME)
        chunks = ChunkReader(csrc, block=block_ulid, names=names)
        return cls(meta, index, chunks, {}, path=f"{block_ulid}", sources=[isrc, *csrc])

    def close(self) -> None:
        for s in self._sources:
            close = getattr(s, "close", None)
            if close:
                close()
        close = getattr(self.index, "close", None)
        if close:
            close()

    def __enter__(self) -> "BlockReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- querying ---------------------------------------------------------------------------------
    def _postings(self, matchers) -> list[int]:
        if not matchers:
            return [int(r) for r in self.index.postings("", "")]
        return [int(r) for r in self.index.postings_for_matchers(list(matchers))]

    def series_chunks(self, matchers=(), mint: int = MIN_TIME, maxt: int = MAX_TIME, *, batch_series: int = 1024
                      ) -> Iterator[tuple[Labels, list[tuple[int, int, int]], list[tuple[int, int, int, bytes]]]]:
        """Yields ``(labels, intervals, chunks)`` where chunks are ``(mint, maxt, encoding, data)``
        overlapping ``[mint, maxt]`` and intervals are the series' tombstones."""
        refs = self._postings(matchers)
        for b0 in range(0, len(refs), batch_series):
            for lbls, sref, metas, encs, buf, offs, lens, _ in self._batch(refs[b0:b0 + batch_series], mint, maxt):
                mv = memoryview(buf)
                yield (lbls, self.tombstones.get(sref, []),
                       [(m[0], m[1], int(encs[i]), bytes(mv[offs[i]:offs[i] + lens[i]])) for i, m in metas])

    def _batch(self, refs, mint, maxt):
        entries = self.index.series_many(refs)
        sel: list = []
        all_refs: list[int] = []
        for sref, (lbls, cmetas) in zip(refs, entries):
            mine = []
            for c in cmetas:
                cmint, cmaxt, cref = _chunk_meta(c)
                if cmaxt >= mint and cmint <= maxt:
                    mine.append((len(all_refs), (cmint, cmaxt)))
                    all_refs.append(cref)
            sel.append((norm_labels(lbls), sref, mine))
        encs, buf, offs, lens = self.chunks.chunks_raw(all_refs)
        for lbls, sref, mine in sel:
            if mine:
                yield lbls, sref, mine, encs, buf, offs, lens, all_refs

    def _chunk_err(self, ref: int, what: str) -> CorruptChunkError:
        seq, off = ref >> 32, ref & 0xFFFFFFFF
        names = self.chunks.names
        name = names[seq] if seq < len(names) else f"{CHUNKS_DIRNAME}/{segment_name(seq)}"
        return CorruptChunkError(self.ulid, name, off, what)

    def series(self, matchers=(), mint: int = MIN_TIME, maxt: int = MAX_TIME, *, batch_series: int = 1024
               ) -> Iterator[tuple[Labels, np.ndarray, np.ndarray]]:
        """Yields ``(labels, t, v)`` with samples in ``[mint, maxt]`` minus tombstones (series
        without samples left are skipped)."""
        refs = self._postings(matchers)
        for b0 in range(0, len(refs), batch_series):
            groups = list(self._batch(refs[b0:b0 + batch_series], mint, maxt))
            if not groups:
                continue
            from .chunkenc import decode_xor_many

            encs, buf, offs, lens, all_refs = groups[0][3:8]
            bad = np.flatnonzero(encs != ENCODING_XOR)
            if len(bad):
                raise self._chunk_err(all_refs[int(bad[0])],
                                      f"unsupported chunk encoding {int(encs[bad[0]])} (only XOR=1 is decoded here)")
            try:
                counts, t_all, v_all = decode_xor_many(buf, offs, lens)
            except CorruptChunkError as e:
                ci = getattr(e, "chunk_index", None)
                if ci is None:
                    raise
                raise self._chunk_err(all_refs[int(ci)], f"bad XOR chunk data: {e.what}") from None
            counts = np.asarray(counts, dtype=np.int64)
            starts = np.concatenate(([0], np.cumsum(counts)))
            for lbls, sref, mine, *_ in groups:
                ts = [t_all[starts[i]:starts[i + 1]] for i, _ in mine]
                vs = [v_all[starts[i]:starts[i + 1]] for i, _ in mine]
                t = np.concatenate(ts) if len(ts) > 1 else ts[0]
                v = np.concatenate(vs) if len(vs) > 1 else vs[0]
                if len(t) and (t[0] < mint or t[-1] > maxt):
                    i0 = np.searchsorted(t, mint, side="left")
                    i1 = np.searchsorted(t, maxt, side="right")
                    t, v = t[i0:i1], v[i0:i1]
                iv = self.tombstones.get(sref)
                if iv:
                    t, v = _apply_tombstones(t, v, iv)
                if len(t):
                    yield lbls, t, v


def _chunk_meta(c) -> tuple[int, int, int]:
    """(mint, maxt, ref) from whatever the index reader returns for a chunk meta."""
    if isinstance(c, tuple):
        return int(c[0]), int(c[1]), int(c[2])
    return int(c.mint), int(c.maxt), int(c.ref)
