"""Index health of one block (Thanos ``block.GatherIndexHealthStats`` / ``HealthStats``) and the
rewrite that repairs what can be repaired (Thanos ``block.Repair``).

:func:`gather` walks every series of the index (all-postings order) with our
:class:`~pythanos.tsdb.index.IndexReader` and counts, as Thanos does:

* series whose labels are not strictly after the previous series' (a hard error), empty label sets
  and series without chunks (hard errors);
* label names out of order inside a series (the Prometheus <= 2.8.0 bug);
* chunks outside ``[minTime, maxTime]`` of the meta: all of them, those *completely* outside, and
  those starting exactly at ``maxTime`` (prometheus/tsdb#347);
* chunks of a series that start before the previous chunk ends: exact duplicates (same range) and
  the rest (out of order).

A corrupt index raises :class:`~pythanos.tsdb.errors.CorruptIndexError` naming block, file and
offset. :meth:`HealthStats.any_err` gives Thanos' error text (None when healthy). Pure duplicate
chunks alone are not an error, as in Thanos.

:func:`rewrite` builds a repaired copy in a local directory: labels sorted within each series,
series re-sorted, chunks sorted by start time with complete outsiders, exact duplicates and #347
outsiders dropped (an overlapping chunk that is not an exact duplicate makes the repair fail),
duplicate series dropped (the first kept). The new block has a new ULID, the same compaction
section and time range, recomputed stats, and source ``bucket.repair``.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..tsdb.encoding import crc32c
from ..tsdb.meta import BlockMeta

log = logging.getLogger(__name__)

BATCH_SERIES = 4096
REPAIR_SOURCE = "bucket.repair"


class IndexIssueError(Exception):
    """The index breaks an invariant that stops the walk (names the block and the series)."""


@dataclass
class HealthStats:
    total_series: int = 0
    out_of_order_series: int = 0
    out_of_order_chunks: int = 0
    duplicated_chunks: int = 0
    outside_chunks: int = 0
    complete_outside_chunks: int = 0
    issue347_outside_chunks: int = 0
    out_of_order_labels: int = 0
    total_chunks: int = 0
    single_sample_chunks: int = 0
    label_names_count: int = 0
    metric_label_values_count: int = 0
    examples: list[str] = field(default_factory=list)  # a few offending series, for logs

    def critical_err(self) -> Optional[str]:
        msgs = []
        n = self.outside_chunks - (self.complete_outside_chunks + self.issue347_outside_chunks)
        if n > 0:
            msgs.append(f"found {n} chunks non-completely outside the block time range")
        if self.complete_outside_chunks > 0:
            msgs.append(f"found {self.complete_outside_chunks} chunks completely outside the block time range")
        return ", ".join(msgs) or None

    def any_err(self) -> Optional[str]:
        msgs = []
        c = self.critical_err()
        if c:
            msgs.append(c)
        if self.issue347_outside_chunks > 0:
            msgs.append(f"found {self.issue347_outside_chunks} chunks outside the block time range introduced by "
                        "https://github.com/prometheus/tsdb/issues/347")
        if self.out_of_order_labels > 0:
            msgs.append(f"index contains {self.out_of_order_labels} postings with out of order labels")
        if self.out_of_order_chunks > 0:
            msgs.append(f"{self.out_of_order_series}/{self.total_series} series have an average of "
                        f"{self.out_of_order_chunks / self.out_of_order_series:.3f} out-of-order chunks: "
                        f"{self.duplicated_chunks / self.out_of_order_chunks:.3f} of these are exact duplicates "
                        "(in terms of data and time range)")
        return ", ".join(msgs) or None

    def summary(self) -> str:
        return (f"{{TotalSeries:{self.total_series} OutOfOrderSeries:{self.out_of_order_series} "
                f"OutOfOrderChunks:{self.out_of_order_chunks} DuplicatedChunks:{self.duplicated_chunks} "
                f"OutsideChunks:{self.outside_chunks} CompleteOutsideChunks:{self.complete_outside_chunks} "
                f"Issue347OutsideChunks:{self.issue347_outside_chunks} OutOfOrderLabels:{self.out_of_order_labels} "
                f"TotalChunks:{self.total_chunks} SingleSampleChunks:{self.single_sample_chunks} "
                f"LabelNamesCount:{self.label_names_count} MetricLabelValuesCount:{self.metric_label_values_count}}}")


def _fmt_labels(lbls) -> str:
    return "{" + ", ".join(f'{n}="{v}"' for n, v in lbls) + "}"


def open_index(bucket, meta: BlockMeta):
    """The block's index in the bucket, read with ranged reads (size from ``thanos.files`` when listed)."""
    from ..tsdb.index import IndexReader
    from ..tsdb.source import BucketSource

    size = None
    if meta.thanos:
        size = next((f.size_bytes for f in meta.thanos.files if f.rel_path == "index" and f.size_bytes), None)
    src = BucketSource(bucket, f"{meta.ulid}/index", "index", block=meta.ulid, readahead=64 * 1024, size=size)
    return IndexReader(src, block=meta.ulid, file="index", owns_source=True)


def gather(index, min_time: int, max_time: int, block: str = "") -> HealthStats:
    """Walk every series of ``index`` (an IndexReader); raises IndexIssueError / CorruptIndexError."""
    st = HealthStats()
    st.label_names_count = len(index.label_names())
    st.metric_label_values_count = len(index.label_values("__name__"))
    refs = index.all_postings()
    prev: Optional[tuple] = None
    for b0 in range(0, len(refs), BATCH_SERIES):
        brefs = refs[b0:b0 + BATCH_SERIES]
        labels, nch, chunks = index.series_bulk(brefs)
        for ref, lbls, n in zip(brefs.tolist(), labels, nch.tolist()):
            st.total_series += 1
            if not lbls:
                raise IndexIssueError(f"empty label set detected for series {ref}")
            if prev is not None and prev >= tuple(lbls):
                raise IndexIssueError(f"series {_fmt_labels(lbls)} out of order; previous {_fmt_labels(prev)}")
            prev = tuple(lbls)
            bad = sum(1 for i in range(1, len(lbls)) if lbls[i][0] < lbls[i - 1][0])
            if bad:
                st.out_of_order_labels += bad
                log.warning("out-of-order label set: known bug in Prometheus 2.8.0 and below",
                            extra={"block": block, "labelset": _fmt_labels(lbls), "series": ref})
            if n == 0:
                raise IndexIssueError(f"empty chunks for series {ref}")
        if len(chunks) == 0:
            continue
        mint, maxt = chunks[:, 0], chunks[:, 1]
        st.total_chunks += len(chunks)
        st.single_sample_chunks += int(np.count_nonzero(maxt == mint))
        outside = (mint < min_time) | (maxt > max_time)
        complete = outside & ((mint > max_time) | (maxt < min_time))
        i347 = outside & ~complete & (mint == max_time)
        st.outside_chunks += int(np.count_nonzero(outside))
        st.complete_outside_chunks += int(np.count_nonzero(complete))
        st.issue347_outside_chunks += int(np.count_nonzero(i347))
        # order within each series: chunk i against chunk i - 1 of the same series
        first = np.zeros(len(chunks), dtype=bool)
        starts = np.concatenate(([0], np.cumsum(nch)[:-1]))
        first[starts[nch > 0]] = True
        prev_min = np.concatenate(([0], mint[:-1]))
        prev_max = np.concatenate(([0], maxt[:-1]))
        follows = ~first & (mint <= prev_max)
        dup = follows & (mint == prev_min) & (maxt == prev_max)
        ooo = follows & ~dup
        st.duplicated_chunks += int(np.count_nonzero(dup))
        if ooo.any():
            series_of = np.repeat(np.arange(len(nch)), nch)
            per_series = np.bincount(series_of[ooo], minlength=len(nch))
            st.out_of_order_chunks += int(per_series.sum())
            st.out_of_order_series += int(np.count_nonzero(per_series))
            for s in np.flatnonzero(per_series)[:3].tolist():
                if len(st.examples) < 3:
                    st.examples.append(_fmt_labels(labels[s]))
    return st


# ------------------------------------------------------------------------------------------- repair

class RepairError(Exception):
    """The block cannot be repaired automatically."""


def _sanitize(chks: list, min_time: int, max_time: int, data) -> list:
    """Thanos' sanitizeChunkSequence with its three ignore rules, in its order: complete outsiders,
    exact duplicates of the previous kept chunk (same range and CRC32C of the data), #347 outsiders.
    ``chks``: [(mint, maxt, ref)]; ``data(ref) -> (encoding, bytes)``."""
    chks = sorted(chks, key=lambda c: c[0])
    out = []
    last = None
    for c in chks:
        mint, maxt, ref = c
        if mint > max_time or maxt < min_time:
            continue
        if last is not None and mint <= last[1]:
            if mint != last[0] or maxt != last[1]:
                raise RepairError(f"ignore function: non-sequential chunks not equal: [{last[0]}, {last[1]}] and "
                                  f"[{mint}, {maxt}]")
            ca, cb = crc32c(data(last[2])[1]), crc32c(data(ref)[1])
            if ca != cb:
                raise RepairError(f"ignore function: non-sequential chunks not equal: {ca:x} and {cb:x}")
            continue
        if mint == max_time:
            continue
        last = c
        out.append(c)
    return out


def rewrite(reader, out_dir: str, *, source: str = REPAIR_SOURCE) -> BlockMeta:
    """Write the repaired copy of the block open in ``reader`` (a BlockReader) into ``out_dir``;
    returns its meta. Raises RepairError."""
    from ..tsdb.streamwriter import StreamBlockWriter

    meta = reader.meta
    if meta.resolution > 0:
        raise RepairError("cannot repair downsampled blocks")
    index = reader.index
    refs = index.all_postings()
    series = []
    for b0 in range(0, len(refs), BATCH_SERIES):
        labels, nch, chunks = index.series_bulk(refs[b0:b0 + BATCH_SERIES])
        k = 0
        for lbls, n in zip(labels, nch.tolist()):
            series.append((tuple(sorted(lbls)), [tuple(c) for c in chunks[k:k + n].tolist()]))
            k += n
    series.sort(key=lambda s: s[0])
    thanos = copy.deepcopy(meta.thanos) if meta.thanos else None
    if thanos is not None:
        thanos.source = source
        thanos.files, thanos.segment_files, thanos.upload_time = [], [], None
    w = StreamBlockWriter(out_dir, index.symbols(), min_time=meta.min_time, max_time=meta.max_time,
                          thanos=thanos, compaction=copy.deepcopy(meta.compaction))
    with w:
        last = None
        for lbls, chks in series:
            if lbls == last:
                log.warning("dropping duplicate series in tsdb block found", extra={"labelset": _fmt_labels(lbls)})
                continue
            cache: dict = {}

            def data(ref, _cache=cache):
                if ref not in _cache:
                    _cache[ref] = reader.chunks.chunk(ref)
                return _cache[ref]

            kept = _sanitize(chks, meta.min_time, meta.max_time, data)
            if not kept:
                continue
            got = dict(zip((c[2] for c in kept), reader.chunks.chunks([c[2] for c in kept])))
            w.add_series(lbls, [(c[0], c[1], got[c[2]][0], got[c[2]][1]) for c in kept])
            last = lbls
        new = w.write()
    if new is None:
        raise RepairError("repaired block would have no series")
    return new


def check_dir(block_dir: str, min_time: int, max_time: int) -> Optional[str]:
    """Thanos' VerifyIndex on a local block: the health error text, or None."""
    from ..tsdb.index import IndexReader

    with IndexReader.open(os.path.join(block_dir, "index"), block=os.path.basename(block_dir)) as ir:
        try:
            return gather(ir, min_time, max_time, block=os.path.basename(block_dir)).any_err()
        except IndexIssueError as e:
            return str(e)
