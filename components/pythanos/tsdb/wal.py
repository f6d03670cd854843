"""Prometheus' write-ahead log on disk (``tsdb/wlog``): segment files a real Prometheus replays,
and a reader for the segments and checkpoints Prometheus writes.

A WAL directory holds segment files named ``%08d`` (no header), written in 32 KiB pages; records
are split into fragments that never cross a page, and a record never crosses a segment (a record
larger than a segment gets a segment of its own that grows past the size). Compression (snappy
by default, as ``--storage.tsdb.wal-compression``; zstd readable and writable) applies to a whole
record and is dropped when it does not shrink it. Framing, parsing and the CRC-32C run in the
``_wal`` kernel on whole batches and whole segments.

Checkpoints (``checkpoint.%08d``, the number is the last segment they cover) are WAL directories of
their own; replay reads the newest checkpoint, then the segments after it.
"""
from __future__ import annotations

import logging
import mmap
import os
import re
import shutil
import threading
import time
from typing import Any, Callable, Iterator, Sequence, Union

import cramjam
import numpy as np

from . import _wal
from . import walrecords as wr

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_SIZE = 128 * 1024 * 1024
PAGE_SIZE = 32 * 1024
HEADER_SIZE = 7
CHECKPOINT_PREFIX = "checkpoint."

_SNAPPY = 0x08
_ZSTD = 0x10
_COMPRESSIONS = {"none": 0, "": 0, "snappy": _SNAPPY, "zstd": _ZSTD}
_READ_BATCH = 8 << 20  # payload bytes the parser hands back per call
_SEGMENT_RE = re.compile(r"^[0-9]+$")

# What the readers take: a WAL directory, a checkpoint directory, one segment file, or segment files.
Source = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


class WALCorruption(Exception):
    """The WAL is damaged: names the segment file, the offset in it and the reason. ``good_end`` is
    the offset just past the last complete record before the damage (what repair keeps)."""

    def __init__(self, segment: str, offset: int, reason: str, good_end: int = 0) -> None:
        self.segment = segment
        self.offset = offset
        self.reason = reason
        self.good_end = good_end
        super().__init__(segment, offset, reason, good_end)

    @property
    def index(self) -> int:
        """The segment's number."""
        return int(os.path.basename(self.segment))

    def __str__(self) -> str:
        return f"corruption in segment {self.segment} at {self.offset}: {self.reason}"

    def __reduce__(self) -> tuple:
        return (self.__class__, (self.segment, self.offset, self.reason, self.good_end))


def segment_name(directory: str | os.PathLike, i: int) -> str:
    return os.path.join(directory, f"{i:08d}")


def list_segments(directory: str | os.PathLike) -> list[int]:
    """Indices of the segment files, ascending; they must be consecutive (as Prometheus insists)."""
    idx = sorted(int(n) for n in os.listdir(directory) if _SEGMENT_RE.match(n))
    for a, b in zip(idx, idx[1:]):
        if b != a + 1:
            raise WALCorruption(segment_name(directory, b), 0, f"segments are not sequential: {a} then {b}")
    return idx


def segment_range(directory: str | os.PathLike) -> tuple[int, int]:
    """(first, last) segment index, (-1, -1) when there is none."""
    idx = list_segments(directory)
    return (idx[0], idx[-1]) if idx else (-1, -1)


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, str]]:
    """(index, path) of the checkpoint directories, ascending (``.tmp`` leftovers are ignored)."""
    out = []
    for n in os.listdir(directory):
        if n.startswith(CHECKPOINT_PREFIX):
            rest = n[len(CHECKPOINT_PREFIX):]
            if rest.isdigit():
                out.append((int(rest), os.path.join(directory, n)))
    return sorted(out)


def last_checkpoint(directory: str | os.PathLike) -> tuple[int, str] | None:
    cps = list_checkpoints(directory)
    return cps[-1] if cps else None


# ---------------------------------------------------------------------------- reading


def _decompress(flags: int, data: bytes) -> bytes:
    if not flags or not data:
        return data
    if flags & _SNAPPY:
        # the block starts with the uvarint decoded length; snappy cannot expand a byte into more
        # than ~22 (a 3-byte copy of 64), so a larger claim is damage, not a reason to allocate it
        n, shift = 0, 0
        for i, c in enumerate(data[:5]):
            n |= (c & 0x7F) << shift
            shift += 7
            if c < 0x80:
                break
        if n > 24 * len(data) + 64:
            raise ValueError(f"snappy block claims {n} bytes from {len(data)}")
        return bytes(cramjam.snappy.decompress_raw(data))
    return bytes(cramjam.zstd.decompress(data))


def read_segment(path: str, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """(end offset, record) of one segment file from ``start`` (0 or an end offset it gave
    before); raises WALCorruption at the first damage."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= start:
            return
        view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        pos, good = start, start
        while True:
            payload, ends, offs, flags, pos, err = _wal.parse(view, pos, _READ_BATCH)
            e = np.frombuffer(ends, dtype=np.int64).tolist()
            o = np.frombuffer(offs, dtype=np.int64).tolist()
            start = 0
            for end, off, fl in zip(e, o, flags):
                data = payload[start:end]
                if fl:
                    try:
                        data = _decompress(fl, data)
                    except Exception as ex:  # cramjam raises its own DecompressionError
                        raise WALCorruption(path, good, f"cannot decompress record: {ex}", good) from None
                start = end
                good = off
                yield off, data
            if err is not None:
                raise WALCorruption(path, err[0], err[1], good)
            if pos >= size or not e:
                return
    finally:
        view.close()


def _sources(src: Source) -> list[str]:
    """The segment files to replay: a WAL dir gives its newest checkpoint's segments, then the
    segments after that checkpoint; a checkpoint dir or a list of files gives those."""
    if isinstance(src, (str, os.PathLike)):
        d = os.fspath(src)
        if os.path.isfile(d):
            return [d]
        out: list[str] = []
        first = 0
        cp = last_checkpoint(d)
        if cp is not None:
            out += [segment_name(cp[1], i) for i in list_segments(cp[1])]
            first = cp[0] + 1
        out += [segment_name(d, i) for i in list_segments(d) if i >= first]
        return out
    return [os.fspath(p) for p in src]


def iter_records(src: Source) -> Iterator[tuple[str, int, bytes]]:
    """(segment file, offset past the record, record) in replay order; see read_records."""
    for path in _sources(src):
        for off, rec in read_segment(path):
            yield path, off, rec


def read_records(src: Source) -> Iterator[bytes]:
    """The records of a WAL directory (newest checkpoint, then the segments after it), of a
    checkpoint directory, or of the given segment files, in order. Damage raises WALCorruption
    naming the segment and offset after every record before it was yielded."""
    for _, _, rec in iter_records(src):
        yield rec


def replay(src: Source, batch: int = 4096, max_bytes: int = 4 << 20) -> Iterator[tuple[int, Any]]:
    """(record type, decoded body) in WAL order, as walrecords.decode gives them, except that a
    run of consecutive Samples records (up to ``batch`` records or ``max_bytes`` of record bytes,
    which bounds the decoded arrays) comes as ONE (SAMPLES, (refs, ts, vs)) decoded in one kernel
    call: a WAL of small commits replays without a Python step per record. Order across types is
    kept, so a Series record still precedes the samples that use it. On damage, everything
    before it is yielded, then WALCorruption is raised."""
    pending: list[bytes] = []
    size = 0

    def samples() -> tuple[int, Any]:
        r, t, v, _ = wr.decode_samples_many(pending)
        pending.clear()
        return wr.SAMPLES, (r, t, v)

    try:
        for rec in read_records(src):
            if rec[:1] == b"\x02":
                pending.append(rec)
                size += len(rec)
                if len(pending) >= batch or size >= max_bytes:
                    size = 0
                    yield samples()
                continue
            if pending:
                size = 0
                yield samples()
            yield wr.decode(rec)
    except WALCorruption:
        if pending:
            yield samples()
        raise
    if pending:
        yield samples()


# ---------------------------------------------------------------------------- writing


class WALMetrics:
    """Prometheus' write-log metrics (``tsdb/wlog/wlog.go``) on one registry, for any number of
    WALs told apart by ``labelnames`` (e.g. the receiver's tenant). The prefix is
    ``prometheus_tsdb_wal_`` (``prometheus_tsdb_out_of_order_wbl_`` for a WBL) as in Prometheus."""

    def __init__(self, registry: Any, labelnames: Sequence[str] = (), prefix: str = "prometheus_tsdb_wal_") -> None:
        from prometheus_client import Counter, Gauge, Summary

        ln = list(labelnames)
        kw = dict(labelnames=ln, registry=registry)
        self.labelnames = tuple(ln)
        self.fsync_duration = Summary(prefix + "fsync_duration_seconds", "Duration of write log fsync.", **kw)
        self.page_flushes = Counter(prefix + "page_flushes_total", "Total number of page flushes.", **kw)
        self.completed_pages = Counter(prefix + "completed_pages_total", "Total number of completed pages.", **kw)
        self.truncate_fail = Counter(prefix + "truncations_failed_total",
                                     "Total number of write log truncations that failed.", **kw)
        self.truncate_total = Counter(prefix + "truncations_total",
                                      "Total number of write log truncations attempted.", **kw)
        self.segment_current = Gauge(prefix + "segment_current",
                                     "Write log segment index that TSDB is currently writing to.", **kw)
        self.writes_failed = Counter(prefix + "writes_failed_total", "Total number of write log writes that failed.",
                                     **kw)
        self.storage_size = Gauge(prefix + "storage_size_bytes", "Size of the write log directory.", **kw)
        self.part_writes = Counter(prefix + "record_part_writes_total",
                                   "Total number of record parts written before flushing.", **kw)
        self.part_bytes = Counter(prefix + "record_parts_bytes_written_total",
                                  "Total number of record part bytes written before flushing, including"
                                  " CRC and compression headers.", **kw)
        self.bytes_saved = Counter(prefix + "record_bytes_saved_total",
                                   "Total number of bytes saved by the optional record compression."
                                   " Use this metric to learn about the effectiveness compression.",
                                   labelnames=ln + ["compression"], registry=registry)


class _Instruments:
    """One WAL's children of WALMetrics (or no-ops without metrics)."""

    def __init__(self, m: WALMetrics | None, labels: dict[str, str], compression: str,
                 size: Callable[[], float]) -> None:
        self.on = m is not None
        if m is None:
            return
        values = [labels[k] for k in m.labelnames]

        def child(metric: Any) -> Any:
            return metric.labels(*values) if values else metric

        self.fsync = child(m.fsync_duration)
        self.flushes = child(m.page_flushes)
        self.completed = child(m.completed_pages)
        self.truncate_fail = child(m.truncate_fail)
        self.truncate_total = child(m.truncate_total)
        self.segment = child(m.segment_current)
        self.writes_failed = child(m.writes_failed)
        self.part_writes = child(m.part_writes)
        self.part_bytes = child(m.part_bytes)
        self.saved = m.bytes_saved.labels(*values, compression)
        child(m.storage_size).set_function(size)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    mv = memoryview(data)
    while mv:
        n = os.write(fd, mv)
        mv = mv[n:]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WAL:
    """A writer of Prometheus WAL segments. Like Prometheus, opening a directory always starts a
    new segment after the last one; with ``repair`` the newest non-empty segment is read first and
    a torn or damaged tail is cut at the last good record (later segments deleted)."""

    def __init__(self, directory: str | os.PathLike, segment_size: int = DEFAULT_SEGMENT_SIZE,
                 compression: str | None = "snappy", repair: bool = True, metrics: WALMetrics | None = None,
                 metric_labels: dict[str, str] | None = None) -> None:
        if segment_size % PAGE_SIZE or segment_size <= 0:
            raise ValueError("segment size must be a positive multiple of 32 KiB")
        if (compression or "none") not in _COMPRESSIONS:
            raise ValueError(f"unknown WAL compression {compression!r} (none, snappy, zstd)")
        self.dir = os.fspath(directory)
        self.segment_size = segment_size
        self.compression = compression or "none"
        self._cflag = _COMPRESSIONS[self.compression]
        self._pps = segment_size // PAGE_SIZE
        self._fd = -1
        self._closed = False
        self._lock = threading.Lock()
        self._closer: threading.Thread | None = None
        os.makedirs(self.dir, exist_ok=True)
        for n in os.listdir(self.dir):  # a checkpoint interrupted before its rename
            if n.startswith(CHECKPOINT_PREFIX) and n.endswith(".tmp"):
                log.info("Removing unfinished WAL checkpoint", extra={"dir": os.path.join(self.dir, n)})
                shutil.rmtree(os.path.join(self.dir, n), ignore_errors=True)
        self._m = _Instruments(metrics, metric_labels or {}, self.compression, self._dir_size)
        idx = list_segments(self.dir)
        if repair and idx:
            self._repair_tail(idx)
            idx = list_segments(self.dir)
        if idx:
            self._open_segment(idx[-1] + 1)
        else:
            # no segments: start after the newest checkpoint, so replay (which reads the segments
            # after it) cannot skip what is written now (Prometheus would start at 0)
            cp = last_checkpoint(self.dir)
            self._open_segment(cp[0] + 1 if cp else 0)

    # -- segments

    def _dir_size(self) -> float:
        total = 0
        for root, _, files in os.walk(self.dir):
            for f in files:
                try:
                    total += os.path.getsize(os.path.join(root, f))
                except OSError:
                    pass
        return float(total)

    def _open_segment(self, i: int) -> None:
        path = segment_name(self.dir, i)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        size = os.fstat(self._fd).st_size
        self._seg = i
        self._done = size // PAGE_SIZE
        self._alloc = 0
        if size % PAGE_SIZE:  # a torn last page: zero-fill it, as Prometheus does
            _write_all(self._fd, bytes(PAGE_SIZE - size % PAGE_SIZE))
            self._done += 1
        if self._m.on:
            self._m.segment.set(i)

    def _finish_page(self) -> None:
        if self._alloc > 0:
            _write_all(self._fd, bytes(PAGE_SIZE - self._alloc))
            self._alloc = 0
            self._done += 1
            if self._m.on:
                self._m.flushes.inc()
                self._m.completed.inc()

    def _fsync(self, fd: int) -> None:
        start = time.perf_counter()
        os.fsync(fd)
        if self._m.on:
            self._m.fsync.observe(time.perf_counter() - start)

    def _wait_closer(self) -> None:
        if self._closer is not None:
            self._closer.join()
            self._closer = None

    def next_segment(self) -> int:
        """Start the next segment; the finished one (last page zero-filled) is fsynced and closed
        in the background so appends do not wait for it, as in Prometheus."""
        with self._lock:
            return self._next_segment()

    def _next_segment(self) -> int:
        self._check_open()
        self._finish_page()
        prev = self._fd
        self._wait_closer()  # one finished segment in flight at most

        def close_prev() -> None:
            try:
                self._fsync(prev)
            except OSError as e:
                log.error("sync previous segment", extra={"err": str(e)})
            os.close(prev)

        self._closer = threading.Thread(target=close_prev, name="wal-segment-close", daemon=True)
        self._closer.start()
        self._open_segment(self._seg + 1)
        return self._seg

    def segments(self) -> tuple[int, int]:
        """(first, last) segment index on disk."""
        return segment_range(self.dir)

    @property
    def active_segment(self) -> int:
        return self._seg

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("WAL is closed")

    # -- appending

    def log(self, records: Sequence[bytes]) -> None:
        """Append a batch of records; their bytes are in the file when this returns (like
        Prometheus' Log, one write per batch and segment; call sync() for durability)."""
        if isinstance(records, (bytes, bytearray, memoryview)):
            raise TypeError("log takes a sequence of records")
        recs = list(records)
        if not recs:
            return
        flags = bytearray(len(recs))
        saved = 0
        if self._cflag:  # compression runs outside the lock (the kernels release the GIL)
            for i, r in enumerate(recs):
                if not r:
                    continue
                c = (cramjam.snappy.compress_raw(r) if self._cflag == _SNAPPY else cramjam.zstd.compress(r))
                if len(c) < len(r):
                    saved += len(r) - len(c)
                    recs[i] = bytes(c)
                    flags[i] = self._cflag
        with self._lock:
            self._check_open()
            try:
                self._log(recs, flags)
            except BaseException:
                if self._m.on:
                    self._m.writes_failed.inc()
                raise
        if self._m.on:
            self._m.saved.inc(saved)
            self._m.part_bytes.inc(sum(map(len, recs)))

    def _log(self, recs: list, flags: bytearray) -> None:
        force = False
        while recs:
            done0, alloc0 = self._done, self._alloc
            out, k, alloc, done, frags = _wal.frame(recs, bytes(flags), self._alloc, self._done, self._pps, force)
            if out:
                size0 = os.fstat(self._fd).st_size
                try:
                    _write_all(self._fd, out)
                except BaseException:
                    # a failed write (disk full) must not leave half a batch: the segment is cut
                    # back to where it was, so the next write continues it cleanly
                    try:
                        os.ftruncate(self._fd, size0)
                    except OSError as e:
                        log.error("cannot cut back a failed WAL write", extra={"segment": self._seg,
                                                                               "err": str(e)})
                    self._done, self._alloc = done0, alloc0
                    raise
            self._alloc, self._done = alloc, done
            if self._m.on:
                self._m.part_writes.inc(frags)
                self._m.part_bytes.inc(HEADER_SIZE * frags)
                self._m.completed.inc(self._done - done0)
                self._m.flushes.inc(self._done - done0 + (1 if self._alloc else 0))
            recs, flags = recs[k:], flags[k:]
            if recs:
                self._next_segment()
                force = True

    def flush(self) -> None:
        """Records are written by log(); nothing is held back in memory (kept for symmetry)."""
        self._check_open()

    def sync(self) -> None:
        """fsync the active segment."""
        with self._lock:
            self._check_open()
            self._fsync(self._fd)

    def close(self) -> None:
        """Zero-fill the last page, fsync and close (Prometheus does the same on Close)."""
        with self._lock:
            if self._closed:
                return
            self._finish_page()
            self._wait_closer()
            self._fsync(self._fd)
            os.close(self._fd)
            self._closed = True

    def __enter__(self) -> "WAL":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- truncation, repair

    def delete_segments_before(self, n: int) -> None:
        """Remove segments with index < n (after a checkpoint covering them); Prometheus' Truncate."""
        if self._m.on:
            self._m.truncate_total.inc()
        try:
            delete_segments_before(self.dir, n)
        except OSError:
            if self._m.on:
                self._m.truncate_fail.inc()
            raise

    def _repair_tail(self, idx: list[int]) -> None:
        last = idx[-1]
        while last > idx[0] and os.path.getsize(segment_name(self.dir, last)) == 0:
            last -= 1
        try:
            for _ in read_segment(segment_name(self.dir, last)):
                pass
        except WALCorruption as e:
            repair(self.dir, e)

    def repair(self, err: WALCorruption) -> None:
        """Cut the WAL at the damage err reports (its segment truncated at the last good record,
        later segments deleted) and continue writing in a new segment after it."""
        with self._lock:
            self._check_open()
            self._wait_closer()
            os.close(self._fd)
            repair(self.dir, err)
            self._open_segment(err.index + 1)


def repair(directory: str | os.PathLike, err: WALCorruption) -> None:
    """Prometheus' Repair: drop everything from the damage on. The damaged segment keeps its
    records before ``err.good_end`` (zero-filled to the page end); all later segments go."""
    d = os.fspath(directory)
    k = err.index
    if os.path.abspath(os.path.dirname(err.segment)) != os.path.abspath(d):
        # as in Prometheus: a damaged checkpoint is not repaired (the head would miss series)
        raise ValueError(f"cannot repair {err.segment}: not a segment of {d}")
    log.warning("Starting corruption repair", extra={"segment": err.segment, "offset": err.offset,
                                                     "keep_bytes": err.good_end, "reason": err.reason})
    for i in list_segments(d):
        if i > k:
            os.remove(segment_name(d, i))
    path = segment_name(d, k)
    keep = err.good_end
    pad = (-keep) % PAGE_SIZE
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.seek(keep)
        f.write(bytes(pad))
        f.flush()
        os.fsync(f.fileno())
    log.warning("Repaired WAL segment", extra={"segment": path, "offset": keep})


def delete_segments_before(directory: str | os.PathLike, n: int) -> None:
    """Remove the segments with index < n."""
    d = os.fspath(directory)
    for i in list_segments(d):
        if i >= n:
            break
        os.remove(segment_name(d, i))


def delete_checkpoints_before(directory: str | os.PathLike, n: int) -> None:
    """Remove the checkpoint directories with index < n."""
    for i, path in list_checkpoints(directory):
        if i < n:
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------- checkpoints


def checkpoint(wal_dir: str | os.PathLike, first_segment: int, last_segment: int,
               keep_series: Callable[[np.ndarray], np.ndarray], mint: int,
               compression: str | None = "snappy") -> dict[str, int]:
    """Write ``checkpoint.<last_segment>`` from the newest earlier checkpoint and the segments
    first..last: series for which keep_series(refs) is true, samples, histograms and exemplars
    with t >= mint, tombstones with an interval reaching mint, and the latest metadata of each kept
    series. Written to ``.tmp`` and renamed, as Prometheus does. Returns counts."""
    d = os.fspath(wal_dir)
    sources: list[str] = []
    cp = last_checkpoint(d)
    if cp is not None:
        if first_segment > cp[0] + 1:
            raise ValueError(f"unexpected gap to last checkpoint: expected {cp[0] + 1}, requested {first_segment}")
        first_segment = cp[0] + 1
        sources += [segment_name(cp[1], i) for i in list_segments(cp[1])]
    sources += [segment_name(d, i) for i in list_segments(d) if first_segment <= i <= last_segment]

    final = os.path.join(d, f"{CHECKPOINT_PREFIX}{last_segment:08d}")
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    stats = dict(total_series=0, dropped_series=0, total_samples=0, dropped_samples=0, total_tombstones=0,
                 dropped_tombstones=0, total_exemplars=0, dropped_exemplars=0, total_metadata=0)
    latest_meta: dict[int, wr.Metadata] = {}
    try:
        cpw = WAL(tmp, compression=compression, repair=False)
        batch: list[bytes] = []
        size = 0
        pending: list[bytes] = []  # consecutive Samples records, filtered together
        pending_bytes = 0

        def emit(recs: list[bytes]) -> None:
            nonlocal batch, size
            for r in recs:
                batch.append(r)
                size += len(r)
            if size > 1 << 20:
                cpw.log(batch)
                batch, size = [], 0

        def flush_samples() -> None:
            # one kernel call decodes the run; a record kept whole is copied as it is (our encoder
            # and Prometheus' give the same bytes), one partly kept is re-encoded, as Prometheus does
            r, ts, vs, counts = wr.decode_samples_many(pending)
            m = ts >= mint
            stats["total_samples"] += len(ts)
            stats["dropped_samples"] += int(len(ts) - m.sum())
            ends = np.cumsum(counts)
            cs = np.zeros(len(m) + 1, dtype=np.int64)
            np.cumsum(m, out=cs[1:])
            kept = cs[ends] - cs[ends - counts]
            out = []
            for i, (k, c) in enumerate(zip(kept.tolist(), counts.tolist())):
                if k == c and c:
                    out.append(pending[i])
                elif k:
                    a, b = int(ends[i] - c), int(ends[i])
                    sel = m[a:b]
                    out.append(wr.encode_samples(r[a:b][sel], ts[a:b][sel], vs[a:b][sel]))
            pending.clear()
            emit(out)

        for _, _, rec in iter_records(sources):
            t = wr.record_type(rec)
            out = None
            if t == wr.SAMPLES:
                pending.append(rec)
                pending_bytes += len(rec)
                if len(pending) >= 4096 or pending_bytes >= 4 << 20:
                    flush_samples()
                    pending_bytes = 0
                continue
            if pending:
                flush_samples()
                pending_bytes = 0
            if t == wr.SERIES:
                refs, blobs = wr.decode_series(rec)
                m = np.asarray(keep_series(refs), dtype=bool)
                stats["total_series"] += len(refs)
                stats["dropped_series"] += int(len(refs) - m.sum())
                if m.any():
                    out = wr.encode_series(refs[m], [b for b, k in zip(blobs, m.tolist()) if k])
            elif t in (wr.HISTOGRAM_SAMPLES, wr.FLOAT_HISTOGRAM_SAMPLES,
                       wr.CUSTOM_BUCKETS_HISTOGRAM_SAMPLES, wr.CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES):
                hs = wr.decode_histograms(rec)
                kept = [h for h in hs if h.t >= mint]
                stats["total_samples"] += len(hs)
                stats["dropped_samples"] += len(hs) - len(kept)
                if kept:
                    out = wr.encode_histograms(t, kept)
            elif t == wr.TOMBSTONES:
                r, a, b = wr.decode_tombstones(rec)
                m = b >= mint
                stats["total_tombstones"] += len(r)
                stats["dropped_tombstones"] += int(len(r) - m.sum())
                if m.any():
                    out = wr.encode_tombstones(r[m], a[m], b[m])
            elif t == wr.EXEMPLARS:
                r, ts, vs, blobs = wr.decode_exemplars(rec)
                m = ts >= mint
                stats["total_exemplars"] += len(ts)
                stats["dropped_exemplars"] += int(len(ts) - m.sum())
                if m.any():
                    out = wr.encode_exemplars(r[m], ts[m], vs[m], [b for b, k in zip(blobs, m.tolist()) if k])
            elif t == wr.METADATA:
                ms = wr.decode_metadata(rec)
                stats["total_metadata"] += len(ms)
                if ms:
                    m = np.asarray(keep_series(np.array([x.ref for x in ms], dtype=np.uint64)), dtype=bool)
                    for x, k in zip(ms, m.tolist()):
                        if k:
                            latest_meta[x.ref] = x
            if out is not None:
                emit([out])
        if pending:
            flush_samples()
        if batch:
            cpw.log(batch)
        if latest_meta:
            cpw.log([wr.encode_metadata(list(latest_meta.values()))])
        cpw.close()
        _fsync_dir(tmp)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("WAL checkpoint complete", extra={"first": first_segment, "last": last_segment, "mint": mint})
    return stats


def truncate(wal_dir: str | os.PathLike, last_segment: int) -> None:
    """After checkpoint(..., last_segment): drop the covered segments and older checkpoints."""
    delete_segments_before(wal_dir, last_segment + 1)
    delete_checkpoints_before(wal_dir, last_segment)


__all__ = [
    "DEFAULT_SEGMENT_SIZE", "PAGE_SIZE", "WAL", "WALCorruption", "WALMetrics", "checkpoint", "delete_checkpoints_before",
    "delete_segments_before", "iter_records", "last_checkpoint", "list_checkpoints", "list_segments",
    "read_records", "repair", "replay", "segment_name", "segment_range", "truncate",
]
