"""Downsampling a block as Thanos' compactor does (``pkg/compact/downsample``).

``downsample_block(reader, output_dir, resolution, *, progress=None) -> BlockMeta | None``

* ``resolution=300000`` (5m): ``reader`` must be a raw block (resolution 0, XOR chunks).
* ``resolution=3600000`` (1h): ``reader`` must be a 5m block (aggregate chunks, encoding
  0xFF). XOR chunks found in it are first aggregated at 5m, empty ones skipped, as Thanos does.

Each series becomes a series of aggregate chunks (``aggrchunk.py`` has the layout): per
window of ``resolution`` ms the count, sum, min and max of the samples and a counter with
resets removed; the counter sub-chunk also keeps the first raw sample and the last raw value
(repeated at the last window's stamp) so that readers see resets across chunks. 5m -> 1h
works along the input chunk boundaries. The output block is written next to nothing else in
``output_dir`` under a new ULID; its meta is the input's with ``thanos.downsample.resolution``
set, ``thanos.source`` = ``compactor`` and the series, chunk and sample counts recomputed
(samples: those of the count sub-chunks; the other stats are copied, as Thanos copies them).
``None`` when no series has samples left (no block is written then).

Like Thanos' downsampler, tombstones are not applied, and chunks within a series must not
overlap. Series are read ``batch_series`` at a time as whole arrays (``IndexReader.series_bulk``,
``ChunkReader.chunks_raw``: no Python per chunk); the per-sample work runs in the C kernel
:mod:`pythanos.tsdb._downsample`, many series per call, in calls of about ``batch_samples``
decoded samples at most. Memory is bounded by one batch, never the whole block (a single
series is always decoded whole, as Thanos does too).

Native-histogram chunks raise :class:`UnsupportedChunkError` (not implemented yet); any other
problem in the input raises :class:`DownsampleError` or
:class:`~pythanos.tsdb.errors.CorruptChunkError`, naming the block and the series.
"""
from __future__ import annotations

import copy
import os
from typing import Callable, Sequence

import numpy as np

from . import _downsample
from .aggrchunk import AGGR_ENCODING, AGGR_TYPES
from .block import BlockReader, norm_labels
from .chunkenc import decode_xor_many, encode_xor_many
from .errors import CorruptChunkError
from .meta import BlockMeta, ThanosMeta
from .streamwriter import StreamBlockWriter

__all__ = ["RES_RAW", "RES_5M", "RES_1H", "DownsampleError", "UnsupportedChunkError", "downsample_block"]

RES_RAW = 0
RES_5M = 5 * 60 * 1000
RES_1H = 60 * 60 * 1000
ENC_XOR = 1
ENC_HISTOGRAM = 2
ENC_FLOAT_HISTOGRAM = 3
COMPACTOR_SOURCE = "compactor"

_I8 = np.int64


def format_labels(labels: Sequence[tuple[str, str]]) -> str:
    return "{" + ", ".join(f'{n}="{v}"' for n, v in labels) + "}"


class DownsampleError(Exception):
    """The input block cannot be downsampled: names the block, the series (when known) and why."""

    def __init__(self, block: str, what: str, series: Sequence[tuple[str, str]] | None = None) -> None:
        self.block = block
        self.what = what
        self.series = tuple(series) if series is not None else None
        super().__init__(block, what, self.series)

    def __str__(self) -> str:
        where = f"downsample block {self.block}"
        if self.series is not None:
            where += f": series {format_labels(self.series)}"
        return f"{where}: {self.what}"

    def __reduce__(self):
        return (self.__class__, (self.block, self.what, self.series))


class UnsupportedChunkError(DownsampleError, NotImplementedError):
    """The series holds chunks the downsampler does not handle yet (native histograms)."""


def downsample_block(reader: BlockReader, output_dir: str | os.PathLike, resolution: int, *,
                     progress: Callable[[int, int], None] | None = None, batch_series: int = 256,
                     batch_samples: int = 1 << 22) -> BlockMeta | None:
    """Write ``reader``'s block downsampled to ``resolution`` into ``output_dir``; see the module
    docstring. ``progress(series_done, series_total)`` is called after each batch."""
    src = reader.meta
    in_res = src.resolution
    if (in_res, resolution) not in ((RES_RAW, RES_5M), (RES_5M, RES_1H)):
        raise ValueError(f"block {src.ulid}: cannot downsample resolution {in_res} to {resolution} "
                         f"(only {RES_RAW} -> {RES_5M} and {RES_5M} -> {RES_1H})")
    thanos = copy.deepcopy(src.thanos) if src.thanos is not None else ThanosMeta()
    thanos.downsample_resolution = resolution
    thanos.source = COMPACTOR_SOURCE
    thanos.segment_files, thanos.files = [], []
    thanos.index_stats = {}  # recomputed by the writer, as Thanos' health check after downsampling does
    thanos.upload_time = None
    job = _Job(reader, resolution, in_res, batch_samples)
    refs = np.asarray(reader.index.postings("", ""), dtype=_I8)
    total = len(refs)
    writer = StreamBlockWriter(output_dir, reader.index.symbols(), min_time=src.min_time, max_time=src.max_time,
                               thanos=thanos, compaction=copy.deepcopy(src.compaction), index_stats=True)
    with writer:
        # Thanos copies the input's stats and overwrites only these three counts.
        writer.stats.num_tombstones = src.stats.num_tombstones
        writer.stats.num_float_samples = src.stats.num_float_samples
        writer.stats.num_histogram_samples = src.stats.num_histogram_samples
        step = max(1, batch_series)
        for b0 in range(0, total, step):
            job.batch(refs[b0:b0 + step], writer)
            if progress is not None:
                progress(min(b0 + step, total), total)
        return writer.write()


class _Job:
    """One block's downsampling; ``batch`` handles one reader batch."""

    def __init__(self, reader: BlockReader, resolution: int, in_res: int, batch_samples: int):
        self.reader = reader
        self.block = reader.meta.ulid
        self.res = resolution
        self.in_res = in_res
        self.batch_samples = batch_samples

    # -- errors -----------------------------------------------------------------------------------
    def _err(self, what: str, series=None, cls=DownsampleError) -> DownsampleError:
        return cls(self.block, what, series)

    def _chunk_err(self, ref: int, what: str) -> CorruptChunkError:
        names = self.reader.chunks.names
        seq, off = int(ref) >> 32, int(ref) & 0xFFFFFFFF
        name = names[seq] if seq < len(names) else f"chunks/{seq + 1:06d}"
        return CorruptChunkError(self.block, name, off, what)

    def _encoding_err(self, enc: int, series, ref: int) -> DownsampleError:
        if enc in (ENC_HISTOGRAM, ENC_FLOAT_HISTOGRAM):
            return self._err(f"native histogram chunk (encoding {enc}, ref {int(ref)}): downsampling native "
                             f"histograms is not implemented yet", series, UnsupportedChunkError)
        return self._err(f"unexpected chunk encoding {enc} (ref {int(ref)}) in a block of resolution "
                         f"{self.in_res}", series)

    # -- one reader batch -------------------------------------------------------------------------
    def batch(self, series_refs: np.ndarray, writer: StreamBlockWriter) -> None:
        """Series entries and chunks read as whole arrays (no per-chunk Python), then kernel calls."""
        lbls_raw, nch, cm = self.reader.index.series_bulk(series_refs)
        nch = np.asarray(nch, dtype=_I8)
        keep = np.flatnonzero(nch > 0)  # Prometheus writes no series without chunks; skip them if any
        if not len(keep):
            return
        labels = [norm_labels(lbls_raw[i]) for i in keep.tolist()]
        nch = nch[keep]
        cm = np.asarray(cm, dtype=_I8).reshape(-1, 3)
        refs = cm[:, 2].astype(np.uint64)
        encs, buf, offs, lens = self.reader.chunks.chunks_raw(refs)
        encs = np.asarray(encs).astype(_I8)
        offs = np.asarray(offs, dtype=_I8)
        lens = np.asarray(lens, dtype=_I8)
        mm = cm[:, :2]
        sstart = np.zeros(len(nch) + 1, dtype=_I8)
        np.cumsum(nch, out=sstart[1:])
        chunk_series = np.repeat(np.arange(len(nch)), nch)
        # Chunks within a series must be ordered and must not overlap (Thanos refuses them too).
        if len(mm) > 1:
            bad = np.flatnonzero((mm[:-1, 1] >= mm[1:, 0]) & (chunk_series[:-1] == chunk_series[1:]))
            if len(bad):
                s = int(chunk_series[bad[0]])
                raise self._err(f"overlapping chunks within the series: chunk [{mm[bad[0], 0]}, {mm[bad[0], 1]}] "
                                f"and [{mm[bad[0] + 1, 0]}, {mm[bad[0] + 1, 1]}]", labels[s])
        if self.in_res == RES_RAW:
            bad = np.flatnonzero(encs != ENC_XOR)
        else:
            bad = np.flatnonzero((encs != ENC_XOR) & (encs != AGGR_ENCODING))
        if len(bad):
            c = int(bad[0])
            raise self._encoding_err(int(encs[c]), labels[int(chunk_series[c])], refs[c])
        ch = _Chunks(buf, offs, lens, encs, mm[:, 0].copy(), mm[:, 1].copy(), refs, chunk_series)
        # Kernel calls of a bounded number of decoded samples (estimated from the XOR headers).
        est = self._estimate(ch)
        per_series = np.add.reduceat(est, sstart[:-1]).tolist()
        s0 = 0
        while s0 < len(nch):
            acc, s1 = 0, s0
            while s1 < len(nch) and (s1 == s0 or acc + per_series[s1] <= self.batch_samples):
                acc += per_series[s1]
                s1 += 1
            c0, c1 = int(sstart[s0]), int(sstart[s1])
            sub = ch.select(slice(c0, c1), chunk_series_base=s0)
            if self.in_res == RES_RAW:
                out = self._raw(sub, labels, nch[s0:s1], self.res)
            else:
                out = self._aggr(sub, labels, nch[s0:s1])
            self._write(writer, labels[s0:s1], *out)
            s0 = s1

    @staticmethod
    def _estimate(ch: "_Chunks") -> np.ndarray:
        """Decoded samples per chunk, about: XOR headers, or the sub-chunk bytes of an AggrChunk."""
        b = np.frombuffer(ch.buf, dtype=np.uint8) if len(ch.buf) else np.zeros(2, dtype=np.uint8)
        ok = ch.lens >= 2
        o = np.where(ok, ch.offs, 0)
        hdr = np.where(ok, b[o].astype(_I8) * 256 + b[np.minimum(o + 1, len(b) - 1)], 0)
        # an aggregate chunk holds five series; ~4 samples per byte is the XOR minimum
        return np.where(ch.encs == ENC_XOR, hdr, ch.lens * 4)

    # -- raw -> 5m --------------------------------------------------------------------------------
    def _decode(self, ch: "_Chunks", offs, lens, owners, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """decode_xor_many with errors naming the chunk and series; ``owners[i]``: chunk index of entry i."""
        try:
            return decode_xor_many(ch.buf, offs, lens)
        except CorruptChunkError as e:
            i = getattr(e, "chunk_index", None)
            if i is None:
                raise
            c = int(owners[i])
            err = self._chunk_err(ch.refs[c], f"series {format_labels(labels[int(ch.series[c])])}: {e.what}")
            raise err from None

    def _raw(self, ch: "_Chunks", labels, nch: np.ndarray, res: int):
        counts, t, v = self._decode(ch, ch.offs, ch.lens, np.arange(len(ch.offs)), labels)
        r = _downsample.raw(t, v, np.asarray(counts, dtype=_I8), np.ascontiguousarray(nch, dtype=_I8), res)
        return self._encode(r, labels[ch.series_base:])

    # -- 5m -> 1h ---------------------------------------------------------------------------------
    def _aggr(self, ch: "_Chunks", labels, nch: np.ndarray):
        if np.any(ch.encs == ENC_XOR):
            ch, nch = self._convert_xor(ch, labels, nch)
        k = len(ch.offs)
        ent = np.frombuffer(_downsample.entries(ch.buf, ch.offs, ch.lens), dtype=_I8).reshape(k, 5, 3)
        state, doff, denc = ent[:, :, 0], ent[:, :, 1], ent[:, :, 2]
        bad = np.argwhere(state < 0)
        if len(bad):
            c, a = int(bad[0, 0]), int(bad[0, 1])
            raise self._chunk_err(ch.refs[c], f"series {format_labels(labels[int(ch.series[c])])}: aggregate chunk: "
                                              f"invalid size of {AGGR_TYPES[a]}")
        present = state > 0
        hist = present[:, 4] & ((denc[:, 4] == ENC_HISTOGRAM) | (denc[:, 4] == ENC_FLOAT_HISTOGRAM))
        if hist.any():
            c = int(np.flatnonzero(hist)[0])
            raise self._err(f"aggregate chunk of native histograms (ref {int(ch.refs[c])}): downsampling native "
                            f"histograms is not implemented yet", labels[int(ch.series[c])], UnsupportedChunkError)
        bad = np.argwhere(present & (denc != ENC_XOR))
        if len(bad):
            c, a = int(bad[0, 0]), int(bad[0, 1])
            raise self._chunk_err(ch.refs[c], f"series {format_labels(labels[int(ch.series[c])])}: aggregate chunk: "
                                              f"{AGGR_TYPES[a]} has encoding {int(denc[c, a])}, want XOR")
        flat = np.flatnonzero(present.reshape(-1))
        counts, t, v = self._decode(ch, doff.reshape(-1)[flat], state.reshape(-1)[flat], flat // 5, labels)
        counts = np.asarray(counts, dtype=_I8)
        starts = np.zeros(len(counts) + 1, dtype=_I8)
        np.cumsum(counts, out=starts[1:])
        ranges = np.full((k * 5, 2), -1, dtype=_I8)
        ranges[flat, 0] = starts[:-1]
        ranges[flat, 1] = starts[1:]
        nsamples = np.where(present[:, 0], ranges.reshape(k, 5, 2)[:, 0, 1] - ranges.reshape(k, 5, 2)[:, 0, 0], 0)
        r = _downsample.aggr(t, v, ranges, ch.mint, ch.maxt, np.ascontiguousarray(nsamples, dtype=_I8),
                             np.ascontiguousarray(nch, dtype=_I8), self.in_res, self.res)
        return self._encode(r, labels[ch.series_base:])

    def _convert_xor(self, ch: "_Chunks", labels, nch: np.ndarray):
        """XOR chunks in a downsampled block: each non-empty one aggregated at 5m on its own,
        empty ones dropped (Thanos' fix for blocks written with thanos-io/thanos#5272)."""
        xs = np.flatnonzero(ch.encs == ENC_XOR)
        est = self._estimate(ch)
        empty = xs[(est[xs] == 0) & (ch.lens[xs] >= 2)]
        conv = np.setdiff1d(xs, empty)  # (shorter than the header: the decoder names the chunk)
        pieces: list[tuple[int, list]] = []  # (input chunk, [(mint, maxt, bytes)])
        if len(conv):
            counts, t, v = self._decode(ch, ch.offs[conv], ch.lens[conv], conv, labels)
            r = _downsample.raw(t, v, np.asarray(counts, dtype=_I8), np.ones(len(conv), dtype=_I8), RES_5M)
            abuf, aoffs, mint, maxt, nout, _ = self._encode(r, [labels[int(ch.series[c])] for c in conv])
            k = 0
            for c, n in zip(conv.tolist(), nout.tolist()):
                pieces.append((c, [(int(mint[i]), int(maxt[i]), abuf[aoffs[i]:aoffs[i + 1]]) for i in range(k, k + n)]))
                k += n
        repl = dict(pieces)
        drop = set(empty.tolist())
        extra = bytearray()
        base = len(ch.buf)
        rows = []  # (offs, lens, enc, mint, maxt, ref, series)
        for c in range(len(ch.offs)):
            if c in drop:
                continue
            if c in repl:
                for mn, mx, data in repl[c]:
                    rows.append((base + len(extra), len(data), AGGR_ENCODING, mn, mx, int(ch.refs[c]),
                                 int(ch.series[c])))
                    extra += data
                continue
            rows.append((int(ch.offs[c]), int(ch.lens[c]), int(ch.encs[c]), int(ch.mint[c]), int(ch.maxt[c]),
                         int(ch.refs[c]), int(ch.series[c])))
        a = np.array(rows, dtype=np.int64).reshape(-1, 7)
        series = a[:, 6]
        nch2 = np.bincount(series - ch.series_base, minlength=len(nch)).astype(_I8)
        new = _Chunks(bytes(ch.buf) + bytes(extra), a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy(), a[:, 3].copy(),
                      a[:, 4].copy(), a[:, 5].astype(np.uint64), series.copy(), ch.series_base)
        return new, nch2

    # -- output -----------------------------------------------------------------------------------
    def _encode(self, r, labels_of_series):
        code, s, ot, ov, bounds, mint, maxt, present, nout = r
        if code:
            raise self._err("an output chunk would hold more than 65535 samples", labels_of_series[int(s)])
        ot = np.frombuffer(ot, dtype=_I8)
        ov = np.frombuffer(ov, dtype=np.float64)
        bounds = np.frombuffer(bounds, dtype=_I8)
        xbuf, xoffs = encode_xor_many(ot, ov, bounds)
        xoffs = np.asarray(xoffs, dtype=_I8)
        if len(xoffs) == len(bounds) - 1:
            xoffs = np.append(xoffs, len(xbuf))
        abuf, aoffs = _downsample.assemble(xbuf, xoffs, present)
        nsamples = np.diff(bounds)[0::5]  # the count sub-chunks' samples: AggrChunk.NumSamples
        return (memoryview(abuf), np.frombuffer(aoffs, dtype=_I8), np.frombuffer(mint, dtype=_I8),
                np.frombuffer(maxt, dtype=_I8), np.frombuffer(nout, dtype=_I8), nsamples)

    @staticmethod
    def _write(writer: StreamBlockWriter, labels, abuf, aoffs, mint, maxt, nout, nsamples) -> None:
        writer.add_many(labels, abuf, aoffs, AGGR_ENCODING, mint, maxt, nout, nsamples)


class _Chunks:
    """The input chunks of some consecutive series: chunk i is ``buf[offs[i]:offs[i]+lens[i]]``."""

    __slots__ = ("buf", "offs", "lens", "encs", "mint", "maxt", "refs", "series", "series_base")

    def __init__(self, buf, offs, lens, encs, mint, maxt, refs, series, series_base: int = 0):
        self.buf, self.offs, self.lens, self.encs = buf, offs, lens, encs
        self.mint, self.maxt, self.refs, self.series = mint, maxt, refs, series
        self.series_base = series_base

    def select(self, sl: slice, *, chunk_series_base: int) -> "_Chunks":
        return _Chunks(self.buf, self.offs[sl], self.lens[sl], self.encs[sl], self.mint[sl], self.maxt[sl],
                       self.refs[sl], self.series[sl], chunk_series_base)
