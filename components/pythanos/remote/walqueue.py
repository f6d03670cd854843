"""The stateless ruler's remote-write queue on disk: what is appended survives an endpoint outage
and a crash, and each endpoint resumes where it was acknowledged.

Thanos' stateless ruler keeps an agent WAL in ``--data-dir/wal`` and Prometheus' queue tails it
from the moment it starts, so samples queued at a crash are never sent, and an outage holds up to
4 h (the agent's MaxWALTime). Here the queue is that WAL: the same directory, segment framing and
record types (``tsdb/wal.py``), written as self-contained batches (one Series record naming the
batch's series as refs 1..n, then one Samples record), so any batch boundary is a place to start
reading. Each endpoint's position (segment, offset past its last acknowledged batch) is saved in
``wal/remote-positions.json`` after every acknowledgement (rename, no fsync: a killed process
loses nothing the page cache holds); a restart resends from there, at least once (a resent
sample with the same value is accepted by Prometheus and Thanos alike).

Disk is bounded two ways: segments every endpoint has passed are deleted, and the active segment
is cut once every endpoint has read it and it holds ``rotate_bytes``; segments older than
``max_age_s`` (4 h, the agent's MaxWALTime) are deleted even if unsent, and their samples counted
as dropped with a warning that names the segment.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from ..tsdb import wal as walmod
from ..tsdb import walrecords as wr

__all__ = ["Batch", "WALQueue"]

log = logging.getLogger(__name__)

POSITIONS = "remote-positions.json"
SEGMENT_SIZE = 16 << 20
ROTATE_BYTES = 1 << 20
MAX_AGE_S = 4 * 3600.0

Labels = tuple  # sorted (name, value) pairs


@dataclass
class Batch:
    """One appended batch as read back: its series, the samples as arrays (``index`` into
    ``series``), and the position just past it."""
    series: list[Labels]
    index: np.ndarray
    ts: np.ndarray
    vs: np.ndarray
    end: tuple[int, int]


class WALQueue:
    """Append once, read per endpoint (``readers``: stable names); all calls from one thread."""

    def __init__(self, directory: str | os.PathLike, readers: Sequence[str], *, compression: Optional[str] = "snappy",
                 segment_size: int = SEGMENT_SIZE, rotate_bytes: int = ROTATE_BYTES, max_age_s: float = MAX_AGE_S,
                 on_dropped: Callable[[str, int], None] = lambda reader, n: None) -> None:
        self.dir = os.fspath(directory)
        self.wal = walmod.WAL(self.dir, segment_size=segment_size, compression=compression)
        self.rotate_bytes, self.max_age_s, self.on_dropped = rotate_bytes, max_age_s, on_dropped
        saved = self._load_positions()
        first, _ = self.wal.segments()
        # a reader we know resumes where it was; a new one starts now, as Prometheus' queue does;
        # with the positions lost, every reader resends the whole WAL rather than lose any of it
        start = (self.wal.active_segment, 0) if saved is not None else (first, 0)
        self.pos: dict[str, tuple[int, int]] = {}
        for r in readers:
            p = (saved or {}).get(r, start)
            self.pos[r] = p if p[0] >= first else (first, 0)
        self._save_positions()
        self._truncate()

    # -- positions

    def _positions_path(self) -> str:
        return os.path.join(self.dir, POSITIONS)

    def _load_positions(self) -> Optional[dict[str, tuple[int, int]]]:
        """Saved positions; {} when there are none yet, None when the file is unreadable."""
        try:
            with open(self._positions_path()) as f:
                doc = json.load(f)
            return {str(k): (int(v[0]), int(v[1])) for k, v in doc.items()}
        except FileNotFoundError:
            return {}
        except (ValueError, TypeError, IndexError, AttributeError) as e:
            log.warning("unreadable remote-write positions, resending the whole WAL",
                        extra={"file": self._positions_path(), "err": str(e)})
            return None

    def _save_positions(self) -> None:
        tmp = self._positions_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump({k: list(v) for k, v in self.pos.items()}, f)
        os.replace(tmp, self._positions_path())

    # -- writing

    def append(self, samples: Iterable[tuple[Labels, int, float]]) -> int:
        """Log (labels, ts ms, value) triples as one batch; returns how many."""
        refs: dict[Labels, int] = {}
        r, t, v = [], [], []
        for labels, ts, val in samples:
            ref = refs.get(labels)
            if ref is None:
                ref = refs[labels] = len(refs) + 1
            r.append(ref)
            t.append(ts)
            v.append(val)
        if not r:
            return 0
        series = wr.encode_series(np.arange(1, len(refs) + 1), [wr.labels_to_blob(l) for l in refs])
        self.wal.log([series, wr.encode_samples(r, t, np.asarray(v, dtype=np.float64))])
        return len(r)

    # -- reading

    def read(self, reader: str) -> Optional[Batch]:
        """The next batch after ``reader``'s position, or None when it has read everything. A
        damaged segment is logged (segment and offset) and the rest of it skipped: the damage
        cannot be read past, and the segments after it still can."""
        while True:
            try:
                return self._read(reader)
            except (walmod.WALCorruption, wr.WALRecordError) as e:
                seg = self.pos[reader][0]
                log.error("remote-write WAL damaged, skipping the rest of the segment",
                          extra={"segment": walmod.segment_name(self.dir, seg), "endpoint": reader, "err": str(e)})
                if seg >= self.wal.active_segment:
                    self.wal.next_segment()
                self.pos[reader] = (seg + 1, 0)

    def _read(self, reader: str) -> Optional[Batch]:
        seg, off = self.pos[reader]
        while True:
            series: Optional[list[Labels]] = None
            for end, rec in walmod.read_segment(walmod.segment_name(self.dir, seg), off):
                kind = wr.record_type(rec)
                if kind == wr.SERIES:
                    refs, blobs = wr.decode_series(rec)
                    if refs.size and not np.array_equal(refs, np.arange(1, refs.size + 1, dtype=np.uint64)):
                        raise walmod.WALCorruption(walmod.segment_name(self.dir, seg), off,
                                                   "series refs of a batch are not 1..n")
                    series = [wr.blob_to_labels(b) for b in blobs]
                elif kind == wr.SAMPLES:
                    rr, ts, vs = wr.decode_samples(rec)
                    if series is None or (rr.size and (rr.min() < 1 or rr.max() > len(series))):
                        raise walmod.WALCorruption(walmod.segment_name(self.dir, seg), off,
                                                   "samples record without its series record")
                    return Batch(series, rr.astype(np.int64) - 1, ts, vs, (seg, end))
                off = end
            if seg >= self.wal.active_segment:
                return None
            seg, off = seg + 1, 0
            self.pos[reader] = (seg, 0)

    def commit(self, reader: str, end: tuple[int, int]) -> None:
        """``reader`` has delivered everything before ``end``."""
        self.pos[reader] = end
        self._save_positions()
        self._truncate()

    # -- truncation

    def _truncate(self) -> None:
        active = self.wal.active_segment
        if self.pos and all(p == (active, self._size(active)) for p in self.pos.values()) \
                and self._size(active) >= self.rotate_bytes:
            active = self.wal.next_segment()
            self.pos = dict.fromkeys(self.pos, (active, 0))
            self._save_positions()
        first, _ = self.wal.segments()
        now = time.time()
        while first < active:
            path = walmod.segment_name(self.dir, first)
            try:
                old = now - os.stat(path).st_mtime > self.max_age_s
            except FileNotFoundError:
                old = False
            if not old:
                break
            behind = sorted(r for r, p in self.pos.items() if p[0] <= first)
            for r in behind:
                n = self._count_unsent(first, self.pos[r][1])
                if n:
                    log.warning("remote-write WAL segment too old, dropping its unsent samples",
                                extra={"segment": path, "samples": n, "endpoint": r})
                    self.on_dropped(r, n)
                self.pos[r] = (first + 1, 0)
            if behind:
                self._save_positions()
            self.wal.delete_segments_before(first + 1)
            first += 1
        keep = min((p[0] for p in self.pos.values()), default=active)
        if keep > first:
            self.wal.delete_segments_before(keep)

    def _size(self, seg: int) -> int:
        try:
            return os.path.getsize(walmod.segment_name(self.dir, seg))
        except FileNotFoundError:
            return 0

    def _count_unsent(self, seg: int, off: int) -> int:
        try:
            return sum(len(wr.decode_samples(rec)[0]) for _, rec in
                       walmod.read_segment(walmod.segment_name(self.dir, seg), off)
                       if wr.record_type(rec) == wr.SAMPLES)
        except (walmod.WALCorruption, wr.WALRecordError):
            return 0

    def close(self) -> None:
        self._save_positions()
        self.wal.close()
