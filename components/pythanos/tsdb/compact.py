"""Compacting local blocks into one (Prometheus' ``LeveledCompactor`` as Thanos' compactor runs it).

:func:`compact_blocks` streams: the input blocks' series are read in label order, batch by
batch, merged k-way by label set, and written through :class:`StreamBlockWriter`; memory holds
one batch per input block and one series, never a block.

Chunks of a series that do not overlap are copied byte for byte (what Prometheus does, so a
horizontally compacted block's chunks equal its sources'). Overlapping chunks (vertical
compaction: blocks of replicas, or out-of-order uploads) are merged as Prometheus'
``compactChunkIterator`` / Thanos' ``dedupChunksIterator`` do: pop the earliest chunk, gather
every chunk overlapping it (dropping exact duplicates of the previous one), merge their samples,
re-encode them into chunks of at most 120 samples, emit the first and put the rest back among
the pending chunks. Sample merge: ``"chain"`` keeps one sample per timestamp (Prometheus'
``ChainedSeriesMerge``, Thanos' default ``--deduplication.func=""``); ``"penalty"`` runs the
querier's penalty de-duplication (``pythanos.dedup``), as Thanos' ``--deduplication.func=penalty``.

The output meta is Prometheus' ``CompactBlockMetas``: level = highest input level + 1, sources
= sorted union, parents = the inputs in the order given, time range = union.
"""
from __future__ import annotations

import heapq
import os
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from .block import BlockReader
from .chunkenc import decode_xor_many, encode_xor_many
from .errors import CorruptBlockError, CorruptChunkError
from .meta import BlockDesc, BlockMeta, Compaction, ThanosMeta
from ._indexenc import gather
from .streamwriter import StreamBlockWriter, chunk_samples

__all__ = ["MERGE_FUNCS", "compact_blocks", "compaction_meta", "merge_series_chunks"]

MERGE_FUNCS = ("chain", "penalty")
SAMPLES_PER_CHUNK = 120  # Prometheus' seriesToChunkEncoderSplit
ENC_XOR = 1

Chunk = tuple  # (mint, maxt, encoding, data)


def compaction_meta(metas: Sequence[BlockMeta]) -> Compaction:
    """Level, sources and parents of a block compacted from ``metas`` (in that order)."""
    sources = sorted({s for m in metas for s in m.compaction.sources})
    parents = [BlockDesc(m.ulid, m.min_time, m.max_time) for m in metas]
    return Compaction(level=max(m.compaction.level for m in metas) + 1, sources=sources, parents=parents)


def _decode(chunks: Sequence[Chunk], where: str) -> list[tuple[np.ndarray, np.ndarray]]:
    bad = [c for c in chunks if int(c[2]) != ENC_XOR]
    if bad:
        raise CorruptBlockError(where, "chunks", 0, f"overlapping chunks of encoding {int(bad[0][2])} cannot be "
                                "merged (only float XOR chunks are merged vertically)")
    lens = np.fromiter((len(c[3]) for c in chunks), np.int64, len(chunks))
    offs = np.zeros(len(chunks), np.int64)
    np.cumsum(lens[:-1], out=offs[1:])
    try:
        counts, t, v = decode_xor_many(b"".join(bytes(c[3]) for c in chunks), offs, lens)
    except CorruptChunkError as e:  # name the blocks being merged, not an offset in a scratch buffer
        raise CorruptChunkError(where, "chunks", 0, f"overlapping chunks being merged: {e.what}") from None
    ends = np.cumsum(counts)
    starts = ends - counts
    return [(t[a:b], v[a:b]) for a, b in zip(starts.tolist(), ends.tolist())]


def _merge_samples(parts: list[tuple[np.ndarray, np.ndarray]], func: str) -> tuple[np.ndarray, np.ndarray]:
    if func == "penalty":
        from ..dedup import dedup_samples

        return dedup_samples(parts, func="penalty")
    t = np.concatenate([p[0] for p in parts])
    v = np.concatenate([p[1] for p in parts])
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    keep = np.ones(len(t), bool)
    keep[1:] = t[1:] != t[:-1]
    return t[keep], v[keep]


def _encode(t: np.ndarray, v: np.ndarray) -> list[Chunk]:
    if len(t) == 0:
        return []
    bounds = np.append(np.arange(0, len(t), SAMPLES_PER_CHUNK, dtype=np.int64), len(t))
    buf, offs = encode_xor_many(t, v, bounds)
    mv = memoryview(buf)
    return [(int(t[a]), int(t[b - 1]), ENC_XOR, bytes(mv[int(offs[i]):int(offs[i + 1])]))
            for i, (a, b) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist()))]


def merge_series_chunks(chunk_lists: Sequence[Sequence[Chunk]], func: str = "chain", where: str = "") -> list[Chunk]:
    """One series' chunks from several blocks (each list in time order) as one list; see the
    module docstring. Non-overlapping input comes back as the same chunk objects."""
    lists = [list(cl) for cl in chunk_lists if cl]
    if len(lists) == 1:
        return _merge_one(lists[0], func, where)
    heap: list = []
    seq = 0
    for li, cl in enumerate(lists):
        heap.append((cl[0][0], cl[0][1], seq, cl, 0))
        seq += 1
    heapq.heapify(heap)
    out: list[Chunk] = []

    def advance(cl, pos):
        nonlocal seq
        if pos + 1 < len(cl):
            heapq.heappush(heap, (cl[pos + 1][0], cl[pos + 1][1], seq, cl, pos + 1))
            seq += 1

    while heap:
        _, _, _, cl, pos = heapq.heappop(heap)
        curr = cl[pos]
        advance(cl, pos)
        overlapping = []
        omax, prev = curr[1], curr
        while heap and heap[0][0] <= omax:
            _, _, _, ncl, npos = heapq.heappop(heap)
            nxt = ncl[npos]
            if not (nxt[0] == prev[0] and nxt[1] == prev[1] and bytes(nxt[3]) == bytes(prev[3])):
                overlapping.append(nxt)
                omax = max(omax, nxt[1])
                prev = nxt
            advance(ncl, npos)
        if not overlapping:
            out.append(curr)
            continue
        merged = _encode(*_merge_samples(_decode([curr, *overlapping], where), func))
        out.append(merged[0])
        if len(merged) > 1:
            rest = merged[1:]
            heapq.heappush(heap, (rest[0][0], rest[0][1], seq, rest, 0))
            seq += 1
    return out


def _merge_one(cl: list[Chunk], func: str, where: str) -> list[Chunk]:
    """A single list: copied unless its own chunks overlap (a block with out-of-order chunks)."""
    for a, b in zip(cl, cl[1:]):
        if b[0] <= a[1]:
            return merge_series_chunks([[c] for c in cl], func, where)
    return cl


def _apply_tombstones(chunks: list[Chunk], intervals, where: str) -> list[Chunk]:
    """Drop deleted samples (local blocks only; Thanos never uploads tombstones)."""
    parts = _decode(chunks, where)
    t = np.concatenate([p[0] for p in parts])
    v = np.concatenate([p[1] for p in parts])
    keep = np.ones(len(t), bool)
    for lo, hi in intervals:
        keep &= ~((t >= lo) & (t <= hi))
    return _encode(t[keep], v[keep])


def _series_stream(reader: BlockReader, batch: int) -> Iterator[tuple]:
    for lbls, intervals, chunks in reader.series_chunks(batch_series=batch):
        yield lbls, intervals, chunks


# --- the copy path: blocks that do not overlap (horizontal compaction) --------------------------------

COPY_BATCH_SERIES = 8192


def _copyable(readers: Sequence[BlockReader]) -> bool:
    ms = sorted((r.meta for r in readers), key=lambda m: m.min_time)
    if any(a.max_time > b.min_time for a, b in zip(ms, ms[1:])):
        return False
    return all(not r.tombstones and r.path and os.path.isdir(r.path) for r in readers)


class _BlockCursor:
    """One input block read in label order, a batch of series at a time."""

    def __init__(self, reader: BlockReader, idx: int) -> None:
        self.r = reader
        self.idx = idx
        self.refs = np.asarray(reader.index.postings("", ""), dtype=np.int64)
        self.pos = 0
        self.labels: list = []
        self.nch = np.empty(0, np.int64)
        self.ch = np.empty((0, 3), np.int64)
        self.segs = [np.memmap(os.path.join(reader.path, "chunks", n.split("/")[-1]), dtype=np.uint8, mode="r")
                     for n in reader.chunks.names]

    def fill(self, n: int) -> None:
        if self.labels or self.pos >= len(self.refs):
            return
        refs = self.refs[self.pos:self.pos + n]
        self.pos += len(refs)
        self.labels, self.nch, self.ch = self.r.index.series_bulk(refs)
        self.labels = [tuple(lb) for lb in self.labels]
        m = self.r.meta
        if len(self.ch):
            # Thanos' health check: a chunk (partly) outside the block's range is a critical issue,
            # except one starting exactly at maxTime (prometheus/tsdb#347)
            mint, maxt = self.ch[:, 0], self.ch[:, 1]
            bad = ((mint < m.min_time) | (maxt > m.max_time)) & (mint != m.max_time)
            if bad.any():
                raise CorruptBlockError(self.r.ulid, "index", 0,
                                        f"{int(bad.sum())} chunks outside the block time range "
                                        f"[{m.min_time}, {m.max_time}]; repair it with "
                                        "`tools bucket verify --repair --issues=index_known_issues`")

    @property
    def done(self) -> bool:
        return not self.labels and self.pos >= len(self.refs)

    @property
    def last_batch(self) -> bool:
        return self.pos >= len(self.refs)

    def take(self, upto) -> tuple[list, np.ndarray, np.ndarray]:
        """The buffered series with labels <= ``upto`` (all when None)."""
        import bisect

        k = len(self.labels) if upto is None else bisect.bisect_right(self.labels, upto)
        c = int(self.nch[:k].sum())
        out = (self.labels[:k], self.nch[:k], self.ch[:c])
        self.labels, self.nch, self.ch = self.labels[k:], self.nch[k:], self.ch[c:]
        return out

    def records(self, refs: np.ndarray):
        """Record start, record length, data length, encoding and sample count of each chunk."""
        from ._series import records

        seq = (refs >> 32).astype(np.int64)
        off = (refs & 0xFFFFFFFF).astype(np.int64)
        n = len(refs)
        rs, rl, dl, enc, ns = (np.zeros(n, np.int64) for _ in range(5))
        for q in np.unique(seq).tolist():
            if q >= len(self.segs):
                raise CorruptBlockError(self.r.ulid, "chunks", 0, f"chunk ref to segment {q + 1} which is missing")
            sel = np.flatnonzero(seq == q)
            data = self.segs[q]
            e, st, ln, err = records(data, off[sel], 0, len(data))
            if err is not None:
                raise CorruptBlockError(self.r.ulid, self.r.chunks.names[q], err[1], err[2])
            e, st, ln = (np.frombuffer(x, dtype=np.int64) for x in (e, st, ln))
            rs[sel], dl[sel], enc[sel] = off[sel], ln, e
            rl[sel] = st + ln + 4 - off[sel]
            has2 = ln >= 2
            cnt = np.zeros(len(sel), np.int64)
            if has2.any():
                p = st[has2]
                cnt[has2] = (data[p].astype(np.int64) << 8) | data[p + 1].astype(np.int64)
            for j in np.flatnonzero(e == 0xFF).tolist():  # downsampled: the count sub-chunk's samples
                cnt[j] = chunk_samples(0xFF, bytes(data[st[j]:st[j] + ln[j]]))
            ns[sel] = cnt
        return rs, rl, dl, enc, ns


def _copy_compact(readers: Sequence[BlockReader], w: StreamBlockWriter, symbols: list[str],
                  progress: Optional[Callable[[int], None]]) -> bool:
    """Write the merged series of non-overlapping blocks by copying chunk records; False (nothing
    written) when a series' chunks turn out to overlap, so the caller merges instead."""
    cursors = [_BlockCursor(r, i) for i, r in enumerate(readers)]
    sym_index = {s: i for i, s in enumerate(symbols)}
    done = 0
    first = True
    while any(not c.done for c in cursors):
        for c in cursors:
            c.fill(COPY_BATCH_SERIES)
        live = [c for c in cursors if c.labels]
        bounds = [c.labels[-1] for c in live if not c.last_batch]
        upto = min(bounds) if bounds else None
        parts = [(c, *c.take(upto)) for c in live]
        # merge the label sets of this window: one output series per distinct set
        keyid: dict = {}
        ids = []
        for c, labels, nch, ch in parts:
            ids.append(np.fromiter((keyid.setdefault(lb, len(keyid)) for lb in labels), np.int64, len(labels)))
        uniq = list(keyid)
        order = sorted(range(len(uniq)), key=uniq.__getitem__)
        rank = np.empty(len(uniq), np.int64)
        rank[order] = np.arange(len(uniq))
        e_rank = np.concatenate([rank[i] for i in ids])
        e_blk = np.concatenate([np.full(len(i), c.idx, np.int64) for (c, *_), i in zip(parts, ids)])
        e_nch = np.concatenate([p[2] for p in parts])
        # each entry's first chunk row in the concatenated chunk table
        ch_all = np.concatenate([p[3] for p in parts])
        e_cstart = np.concatenate(([0], np.cumsum(e_nch)[:-1]))
        eo = np.lexsort((e_blk, e_rank))
        cnt = e_nch[eo]
        rows = np.repeat(e_cstart[eo] - np.concatenate(([0], np.cumsum(cnt)[:-1])), cnt) + np.arange(int(cnt.sum()))
        mint, maxt = ch_all[rows, 0], ch_all[rows, 1]
        # chunks per output series, and the overlap check (then: merge path)
        series_of_entry = e_rank[eo]
        out_nch = np.bincount(series_of_entry, weights=cnt, minlength=len(uniq)).astype(np.int64)
        s_of_row = np.repeat(np.arange(len(uniq)), out_nch)
        same = s_of_row[1:] == s_of_row[:-1]
        if (same & (mint[1:] <= maxt[:-1])).any():
            if first:
                return False
            raise CorruptBlockError(",".join(r.ulid for r in readers), "index", 0,
                                    "overlapping chunks found after the copy compaction started")
        first = False
        # chunk records of every block, in output order
        blk_of_row = np.repeat(e_blk[eo], cnt)
        rs, rl, dl, enc, ns = (np.zeros(len(rows), np.int64) for _ in range(5))
        for c in cursors:
            sel = np.flatnonzero(blk_of_row == c.idx)
            if len(sel):
                a = c.records(ch_all[rows[sel], 2].astype(np.uint64))
                for arr, val in zip((rs, rl, dl, enc, ns), a):
                    arr[sel] = val
        # one gather over every input segment file
        srcs, first_src = [], {}
        for c in cursors:
            first_src[c.idx] = len(srcs)
            srcs.extend(c.segs)
        sq = (ch_all[rows, 2] >> 32).astype(np.int64)
        which = np.asarray([first_src[c.idx] for c in cursors], np.int64)[blk_of_row] + sq
        buf = gather(tuple(srcs), which, rs, rl)
        new_refs = w._cw.write_records(buf, rl, dl, out_nch.tolist())
        # index entries: labels as symbol indices of the output table
        labels_sorted = [uniq[i] for i in order]
        nl = np.fromiter((len(lb) for lb in labels_sorted), np.int64, len(labels_sorted))
        try:
            syms = np.fromiter((sym_index[x] for lb in labels_sorted for kv in lb for x in kv), np.uint32,
                               int(nl.sum()) * 2)
        except KeyError as e:
            raise CorruptBlockError(",".join(r.ulid for r in readers), "index", 0,
                                    f"label {e.args[0]!r} missing from the symbol tables") from None
        srefs = w._iw.add_encoded_series(nl, syms, out_nch, mint, maxt, new_refs.astype(np.int64))
        w.account_bulk(srefs, new_refs, out_nch, ns, enc)
        done += len(uniq)
        if progress is not None:
            progress(done)
    return True


def out_of_order_series(block_dir: str, batch: int = COPY_BATCH_SERIES) -> int:
    """How many series of the block have a chunk starting before the previous one ends (not an
    exact duplicate): what Thanos' health check calls out-of-order chunks."""
    with BlockReader.open_dir(block_dir) as r:
        refs = np.asarray(r.index.postings("", ""), dtype=np.int64)
        n = 0
        for b0 in range(0, len(refs), batch):
            _, nch, ch = r.index.series_bulk(refs[b0:b0 + batch])
            if len(ch) < 2:
                continue
            s_of = np.repeat(np.arange(len(nch)), nch)
            same = s_of[1:] == s_of[:-1]
            mint, maxt = ch[:, 0], ch[:, 1]
            dup = (mint[1:] == mint[:-1]) & (maxt[1:] == maxt[:-1])
            bad = same & (mint[1:] <= maxt[:-1]) & ~dup
            n += len(np.unique(s_of[1:][bad]))
        return n


def compact_blocks(block_dirs: Sequence[str], output_dir: str, *, thanos: Optional[ThanosMeta] = None,
                   func: str = "chain", batch_series: int = 1024,
                   progress: Optional[Callable[[int], None]] = None) -> Optional[BlockMeta]:
    """Compact the local blocks ``block_dirs`` (in minTime order) into one new block under
    ``output_dir``; returns its meta, or None when the inputs hold no samples."""
    if func not in MERGE_FUNCS:
        raise ValueError(f"unknown merge func {func!r} (want one of {', '.join(MERGE_FUNCS)})")
    readers = [BlockReader.open_dir(d) for d in block_dirs]
    try:
        metas = [r.meta for r in readers]
        symbols: set[str] = set()
        for r in readers:
            symbols.update(r.index.symbols())
        mint = min(m.min_time for m in metas)
        maxt = max(m.max_time for m in metas)
        if _copyable(readers):
            w = StreamBlockWriter(output_dir, symbols, min_time=mint, max_time=maxt, thanos=thanos,
                                  compaction=compaction_meta(metas), prometheus_stats=True)
            with w:
                if _copy_compact(readers, w, w._iw._symbols, progress):
                    return w.write()
                w.abort()
        w = StreamBlockWriter(output_dir, symbols, min_time=mint, max_time=maxt, thanos=thanos,
                              compaction=compaction_meta(metas), prometheus_stats=True)
        with w:
            streams = [((lbls, i, iv, ch) for lbls, iv, ch in _series_stream(r, batch_series))
                       for i, r in enumerate(readers)]
            cur_lbls = None
            pending: list = []
            done = 0

            def flush() -> None:
                nonlocal done
                where = ",".join(readers[i].ulid for i, _, _ in pending)
                lists = []
                for i, iv, ch in pending:
                    if iv:
                        ch = _apply_tombstones(ch, iv, readers[i].ulid)
                    lists.append(ch)
                w.add_series(cur_lbls, merge_series_chunks(lists, func, where) if len(lists) > 1
                             else _merge_one(lists[0], func, where) if lists[0] else [])
                done += 1
                if progress is not None and done % 10000 == 0:
                    progress(done)

            for lbls, i, iv, ch in heapq.merge(*streams, key=lambda s: (s[0], s[1])):
                if lbls != cur_lbls:
                    if pending:
                        flush()
                    cur_lbls, pending = lbls, []
                pending.append((i, iv, ch))
            if pending:
                flush()
            if progress is not None:
                progress(done)
            return w.write()
    finally:
        for r in readers:
            r.close()

