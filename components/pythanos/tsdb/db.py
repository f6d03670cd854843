"""A TSDB as Prometheus' ``tsdb.DB`` lays it out: the in-memory :class:`~pythanos.tsdb.head.Head`,
its write-ahead log in ``<dir>/wal/`` and the blocks cut from it in ``<dir>/<ULID>/``. What the
receiver keeps per tenant (and the ruler will reuse); a real Prometheus 3.9.1 opens the same
directory and finds the same samples.

Facts from Prometheus v3.9.1 (``tsdb/db.go``, ``head.go``, ``head_wal.go``, ``head_append.go``):

* Open: the blocks are loaded first; the head's lowest valid time becomes the newest block's
  max time, and WAL samples before it are discarded on replay (they are in a block already).
  The WAL (newest checkpoint, then the segments after it) is replayed: Series records
  recreate series with their refs (a record repeating the labels of a live series maps its ref
  to that series, Prometheus' ``multiRef``), samples of unknown refs are counted and skipped.
  Damage in a segment cuts the WAL there (the records before it are kept), damage in a
  checkpoint fails the open, as Prometheus.
* Append (``headAppender.log``, then ``Commit``): one WAL write per call holding first a
  Series record for the series the call created, then the accepted samples. Ours appends to
  the head first (to learn which samples it accepts) and logs before returning, so an append
  that returned survives kill -9 (no fsync, as Prometheus: a machine crash may lose the
  newest page).
* Compaction (``DB.Compact``): while the head spans more than 1.5 chunk ranges, its oldest
  chunk-range window is written as a block and the head truncated to the block's end; then
  the WAL is truncated (``Head.truncateWAL``): a new segment is started, the lower two thirds
  of the older segments become a checkpoint (series still in the head, samples at or after the
  truncation time) and the covered segments and older checkpoints are deleted.
* Out-of-order samples (with ``ooo_window_ms``) are logged to ``<dir>/wbl/`` (Prometheus'
  write-behind log, same format), replayed after the WAL without the window check, and the
  WBL is dropped once the head's out-of-order samples are written as blocks (after a head
  compaction, ``DB.compactOOOHead``); Prometheus also logs them to the WAL, we do not, so a
  restart never brings back samples already in an out-of-order block.
* Retention (``BeyondTimeRetention``): blocks whose max time lies ``retention`` or more behind
  the newest block's max time are deleted (renamed ``.tmp-for-deletion``, then removed); the
  newest block never is.
* ``<dir>/lock`` is flock'ed while open, as Prometheus does: neither opens the other's directory.

Layout beside the blocks: ``wal/``, ``wbl/``, ``lock``; no ``chunks_head/`` (our head keeps its
chunks in memory) and no block compaction beyond level 1 (Thanos' receiver disables it too).

Native histograms (:meth:`TSDB.append_histograms`) go into the head and the WAL like floats
(record types 7-10, late ones to the WBL), are replayed with ``Head.replay_histograms`` and cut
into blocks with the floats. Exemplars (:meth:`TSDB.append_exemplars`) are validated against and
kept in a circular buffer of ``max_exemplars`` slots (:mod:`.exemplars`, Prometheus' exemplar
storage; 0 = neither kept nor logged, as Prometheus with exemplar storage off), logged to the WAL
and restored from it on replay; their series' records stay in checkpoints while they are in range.
They never go into blocks (nor do Prometheus').
"""
from __future__ import annotations

import heapq
import logging
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from . import ulid as _ulid
from . import wal as _wal
from . import walrecords as wr
from .exemplars import ADDED as EXEMPLAR_ADDED
from .exemplars import ExemplarStorage
from .exemplars import metrics_for as _exemplar_metrics_for
from .block import MAX_TIME, MIN_TIME, BlockReader, norm_labels, range_end
from .head import BAD_REF, DEFAULT_CHUNK_RANGE, DEFAULT_SAMPLES_PER_CHUNK, ENCODING_XOR, OK, OOO_OK, Head
from .histchunk import histogram_columns
from .labels import Matcher
from .meta import BlockMeta

log = logging.getLogger(__name__)

__all__ = ["TSDB", "AppendResult", "WAL_DIRNAME", "WBL_DIRNAME", "ENCODING_XOR", "series_record"]

WAL_DIRNAME = "wal"
WBL_DIRNAME = "wbl"
TMP_FOR_CREATION = ".tmp-for-creation"
TMP_FOR_DELETION = ".tmp-for-deletion"
_REPLAY_BATCH = 4096  # Samples records decoded per kernel call on replay
_MAX_SAMPLES_PER_RECORD = 1 << 20
_HIST_TYPES = (wr.HISTOGRAM_SAMPLES, wr.FLOAT_HISTOGRAM_SAMPLES, wr.CUSTOM_BUCKETS_HISTOGRAM_SAMPLES,
               wr.CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES)
_FLOAT_HIST_TYPES = (wr.FLOAT_HISTOGRAM_SAMPLES, wr.CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES)

Labels = tuple  # tuple[tuple[str, str], ...], sorted by name
Chunk = tuple  # (mint, maxt, encoding, data)


@dataclass
class AppendResult:
    """What :meth:`TSDB.append` did: the head's status per sample (``pythanos.tsdb.head`` codes;
    ``BAD_REF`` for the samples of a malformed label blob) and the ref per series (0 for a
    malformed blob). ``created`` counts the series this call created."""

    status: np.ndarray
    refs: np.ndarray
    created: int = 0


# --- metrics -------------------------------------------------------------------------------------

class _Metrics:
    """Prometheus' DB and head-WAL metrics (names and help from ``tsdb/db.go``, ``tsdb/head.go``),
    one child per TSDB (``labelnames``, e.g. the receiver's tenant)."""

    def __init__(self, registry: Any, labelnames: Sequence[str]) -> None:
        from prometheus_client import Counter, Gauge

        ln = list(labelnames)
        kw = dict(labelnames=ln, registry=registry)
        self.labelnames = tuple(ln)
        self.blocks_loaded = Gauge("prometheus_tsdb_blocks_loaded", "Number of currently loaded data blocks", **kw)
        self.compactions_failed = Counter("prometheus_tsdb_compactions_failed_total",
                                          "Total number of compactions that failed for the partition.", **kw)
        self.time_retentions = Counter("prometheus_tsdb_time_retentions_total",
                                       "The number of times that blocks were deleted because the maximum time "
                                       "limit was exceeded.", **kw)
        self.checkpoint_creations = Counter("prometheus_tsdb_checkpoint_creations_total",
                                            "Total number of checkpoint creations attempted.", **kw)
        self.checkpoint_creations_failed = Counter("prometheus_tsdb_checkpoint_creations_failed_total",
                                                   "Total number of checkpoint creations that failed.", **kw)
        self.checkpoint_deletions = Counter("prometheus_tsdb_checkpoint_deletions_total",
                                            "Total number of checkpoint deletions attempted.", **kw)
        self.replay_duration = Gauge("prometheus_tsdb_data_replay_duration_seconds",
                                     "Time taken to replay the data on disk.", **kw)
        self.wal_corruptions = Counter("prometheus_tsdb_wal_corruptions_total", "Total number of WAL corruptions.",
                                       **kw)
        self.unknown_refs = Counter("prometheus_tsdb_wal_replay_unknown_refs_total",
                                    "Total number of unknown series references encountered during WAL replay.",
                                    labelnames=ln + ["type"], registry=registry)


_METRICS_LOCK = threading.Lock()
_METRICS: dict[int, tuple] = {}


def _metrics_for(registry: Any, labelnames: Sequence[str]) -> tuple[_Metrics, _wal.WALMetrics, _wal.WALMetrics]:
    """One set of metric families per registry, shared by all TSDBs on it (they differ by label)."""
    with _METRICS_LOCK:
        got = _METRICS.get(id(registry))
        if got is None or got[0] is not registry:
            got = (registry, _Metrics(registry, labelnames), _wal.WALMetrics(registry, labelnames),
                   _wal.WALMetrics(registry, labelnames, prefix="prometheus_tsdb_out_of_order_wbl_"))
            _METRICS[id(registry)] = got
        if got[1].labelnames != tuple(labelnames):
            raise ValueError(f"metric labels {tuple(labelnames)} differ from {got[1].labelnames} "
                             "used by another TSDB on this registry")
        return got[1], got[2], got[3]


class _NoMetric:
    def labels(self, *a: Any) -> "_NoMetric":
        return self

    def inc(self, *a: Any) -> None:
        pass

    def set(self, *a: Any) -> None:
        pass

    def set_function(self, *a: Any) -> None:
        pass


# --- helpers -------------------------------------------------------------------------------------

def lock_dir(d: str) -> int:
    """Take ``<dir>/lock`` as Prometheus does (flock(2), exclusive, non-blocking): a Prometheus,
    another process or a second open in this one cannot use the same TSDB meanwhile."""
    import fcntl

    path = os.path.join(d, "lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise OSError(e.errno, f"lock DB directory: {path} is locked by another process ({e.strerror})") from None
    return fd


def _i64(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def series_record(refs: np.ndarray, buf: Any, offsets: np.ndarray, idx: np.ndarray) -> bytes:
    """A WAL Series record for series ``idx`` (their refs ``refs``) straight from the label-blob
    columns: type byte, then per series its ref (BE64) and blob. Built with whole-array copies,
    no Python step per series."""
    idx = _i64(idx)
    starts_src = offsets[idx]
    lens = offsets[idx + 1] - starts_src
    n, total_blob = len(idx), int(lens.sum())
    out = np.empty(1 + 8 * n + total_blob, dtype=np.uint8)
    out[0] = wr.SERIES
    # destination of each entry: 1 + 8*i + sum(lens[:i])
    dst = np.empty(n, dtype=np.int64)
    if n:
        dst[0] = 1
        np.cumsum(lens[:-1] + 8, out=dst[1:])
        dst[1:] += 1
    pos = (dst[:, None] + np.arange(8, dtype=np.int64)).ravel()
    out[pos] = np.asarray(refs, dtype=np.int64).astype(">i8").view(np.uint8)
    if total_blob:
        src = np.frombuffer(buf, dtype=np.uint8)
        first = np.zeros(n, dtype=np.int64)
        np.cumsum(lens[:-1], out=first[1:])
        rel = np.arange(total_blob, dtype=np.int64) - np.repeat(first, lens)
        out[np.repeat(dst + 8, lens) + rel] = src[np.repeat(starts_src, lens) + rel]
    return out.tobytes()


def _samples_records(r: np.ndarray, t: np.ndarray, v: np.ndarray) -> list[bytes]:
    return [wr.encode_samples(r[a:a + _MAX_SAMPLES_PER_RECORD], t[a:a + _MAX_SAMPLES_PER_RECORD],
                              v[a:a + _MAX_SAMPLES_PER_RECORD]) for a in range(0, len(r), _MAX_SAMPLES_PER_RECORD)]


def _histogram_records(items: Sequence[tuple[int, Any]]) -> list[bytes]:
    """WAL records of (ref, HistogramSample-like) pairs, grouped by record type as Prometheus'
    encoder splits them (integer / float, custom buckets apart)."""
    groups: dict[int, list[wr.Histogram]] = {}
    for ref, h in items:
        custom = h.schema == wr.CUSTOM_BUCKETS_SCHEMA
        rtype = ((wr.CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES if h.is_float else wr.CUSTOM_BUCKETS_HISTOGRAM_SAMPLES)
                 if custom else (wr.FLOAT_HISTOGRAM_SAMPLES if h.is_float else wr.HISTOGRAM_SAMPLES))
        groups.setdefault(rtype, []).append(wr.Histogram(
            ref, int(h.timestamp), int(h.reset_hint), int(h.schema), float(h.zero_threshold), h.zero_count, h.count,
            float(h.sum), tuple(map(tuple, h.positive_spans)), tuple(map(tuple, h.negative_spans)),
            tuple(h.positive_buckets), tuple(h.negative_buckets), tuple(h.custom_values) if custom else None))
    order = (wr.HISTOGRAM_SAMPLES, wr.CUSTOM_BUCKETS_HISTOGRAM_SAMPLES, wr.FLOAT_HISTOGRAM_SAMPLES,
             wr.CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES)  # headAppenderBase.log's order
    return [wr.encode_histograms(t, groups[t]) for t in order if t in groups]


class _Block:
    """A loaded block and the reads using it: a deleted block is closed when its last read ends."""

    __slots__ = ("reader", "meta", "users", "deleted")

    def __init__(self, reader: BlockReader) -> None:
        self.reader = reader
        self.meta: BlockMeta = reader.meta
        self.users = 0
        self.deleted = False


# --- the TSDB ------------------------------------------------------------------------------------

class TSDB:
    """See the module docstring. Open with :meth:`open`. One append at a time (a lock); reads run
    alongside appends and compaction. A receiver tenant, roughly::

        db = TSDB.open(f"{data_dir}/{tenant}", retention_ms=retention, registry=reg,
                       metric_labels={"tenant": tenant})
        res = db.append(dw.blobs, dw.blob_offsets, dw.sample_series, dw.sample_ts, dw.sample_values)
        # res.status: head status per sample (status_error() gives Prometheus' text)
        db.compact()            # every minute or so
        db.series([Matcher("=", "__name__", "up")], mint, maxt)
        db.close()              # or db.flush() first, to leave blocks for the shipper
    """

    def __init__(self, directory: str, head: Head, wal: _wal.WAL, *, retention_ms: int, compression: str,
                 metrics: _Metrics | None, metric_labels: dict[str, str]) -> None:
        self.dir = directory
        self.wal_dir = os.path.join(directory, WAL_DIRNAME)
        self.head = head
        self.wal = wal
        self.wbl: _wal.WAL | None = None  # out-of-order samples (Prometheus' write-behind log)
        self.retention_ms = int(retention_ms)
        self.compression = compression
        self._wlock = threading.RLock()  # appends and head truncation (flush holds it around the rest)
        self._clock = threading.Lock()  # compaction, flush, close
        self._blk_lock = threading.Lock()  # the block list and read counts
        self._blocks: list[_Block] = []
        self._wal_expiry: dict[int, int] = {}  # ref -> keep its Series record while t >= this
        self._unlogged: dict[int, list[bytes]] = {}  # id(WAL) -> records a failed write left over
        self._last_wal_truncation = MIN_TIME
        self._closed = False
        self._lock_fd = -1
        self.replay_stats: dict[str, Any] = {}
        vals = [metric_labels[k] for k in (metrics.labelnames if metrics else ())]
        self._vals = vals
        self._m: Any = metrics
        self._child = (lambda m: m.labels(*vals) if vals else m) if metrics else (lambda m: _NoMetric())
        self.exemplars = ExemplarStorage(0)

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | os.PathLike, *, chunk_range_ms: int = DEFAULT_CHUNK_RANGE, retention_ms: int = 0,
             ooo_window_ms: int = 0, wal_compression: str | None = "snappy",
             wal_segment_size: int = _wal.DEFAULT_SEGMENT_SIZE, samples_per_chunk: int = DEFAULT_SAMPLES_PER_CHUNK,
             registry: Any = None, metric_labels: dict[str, str] | None = None, max_exemplars: int = 0,
             lockfile: bool = True) -> "TSDB":
        """Open (or create) the TSDB in ``directory``: load its blocks, repair and replay its WAL.
        ``max_exemplars``: slots of the exemplar buffer (0: exemplars are not kept); ``lockfile``
        False: no ``lock`` file is taken (``--tsdb.no-lockfile``)."""
        d = os.fspath(directory)
        os.makedirs(d, exist_ok=True)
        lock_fd = lock_dir(d) if lockfile else -1
        metric_labels = dict(metric_labels or {})
        metrics = walm = wblm = None
        if registry is not None:
            metrics, walm, wblm = _metrics_for(registry, sorted(metric_labels))
        head = Head(chunk_range=chunk_range_ms, samples_per_chunk=samples_per_chunk, ooo_window=ooo_window_ms)
        start = time.perf_counter()
        try:
            w = _wal.WAL(os.path.join(d, WAL_DIRNAME), segment_size=wal_segment_size, compression=wal_compression,
                         repair=True, metrics=walm, metric_labels=metric_labels)
        except BaseException:
            if lock_fd >= 0:
                os.close(lock_fd)
            raise
        db = cls(d, head, w, retention_ms=retention_ms, compression=wal_compression or "none", metrics=metrics,
                 metric_labels=metric_labels)
        db._lock_fd = lock_fd
        names = sorted(metric_labels)
        db.exemplars = ExemplarStorage(
            max_exemplars, _exemplar_metrics_for(registry, names) if registry is not None else None,
            [metric_labels[k] for k in names])
        try:
            wbl_dir = os.path.join(d, WBL_DIRNAME)
            if ooo_window_ms > 0 or os.path.isdir(wbl_dir):
                db.wbl = _wal.WAL(wbl_dir, segment_size=wal_segment_size, compression=wal_compression, repair=True,
                                  metrics=wblm, metric_labels=metric_labels)
            db._load_blocks()
            # blocks cut from out-of-order samples do not count (DB.inOrderBlocksMaxTime)
            in_order = [b.meta.max_time for b in db._blocks if "from-out-of-order" not in b.meta.compaction.hints]
            if in_order:
                head.set_min_valid_time(max(in_order))  # Head.Init(minValidTime)
            db._replay()
        except BaseException:
            w.close()
            if db.wbl is not None:
                db.wbl.close()
            db._close_blocks()
            db._unlock()
            raise
        db._child(db._m.replay_duration if db._m else None).set(time.perf_counter() - start)
        db._count_blocks()
        return db

    def _count_blocks(self) -> None:
        self._child(self._m.blocks_loaded if self._m else None).set(len(self._blocks))

    def _load_blocks(self) -> None:
        for name in sorted(os.listdir(self.dir)):
            path = os.path.join(self.dir, name)
            if not os.path.isdir(path):
                continue
            base, _, _ = name.partition(".")
            if name != base and ("." + name.partition(".")[2]) in (TMP_FOR_CREATION, TMP_FOR_DELETION) \
                    and _ulid.is_ulid(base):
                # a block write or deletion that did not finish (Prometheus removes these on open)
                log.info("Removing leftover block directory", extra={"dir": path})
                shutil.rmtree(path, ignore_errors=True)
                continue
            if not _ulid.is_ulid(name):
                continue
            try:
                self._blocks.append(_Block(BlockReader.open_dir(path)))
            except Exception as e:  # noqa: BLE001 - an unreadable block must not stop the tenant
                log.error("Skipping unreadable block", extra={"block": path, "err": str(e)})
        self._blocks.sort(key=lambda b: (b.meta.min_time, b.meta.max_time))

    def _replay(self) -> None:
        """Replay the WAL, then the WBL (out-of-order samples), into the head."""
        t0 = time.perf_counter()
        self._multi: dict[int, int] = {}
        self._mk = np.zeros(0, dtype=np.int64)
        self._mv = np.zeros(0, dtype=np.int64)
        st = dict(series=0, samples=0, discarded_before_blocks=0, unknown_sample_refs=0, rejected_samples=0,
                  histograms=0, unknown_histogram_refs=0, exemplars=0, records_skipped=0, ooo_samples=0)
        unknown: set[int] = set()
        self._replay_log(self.wal, st, unknown, wbl=False)
        if self.wbl is not None:
            # Prometheus puts WBL samples into the out-of-order chunks without checking the
            # window (it was checked when they came; the head's max time has moved on since the
            # WAL replay): our head takes them as out-of-order samples with an unbounded window
            window = self.head.ooo_window
            self.head.ooo_window = 1 << 62  # no overflow in max_time - window
            try:
                self._replay_log(self.wbl, st, unknown, wbl=True)
            finally:
                self.head.ooo_window = window
        if st["unknown_sample_refs"]:
            log.warning("Unknown series references", extra={"series": len(unknown),
                                                              "samples": st["unknown_sample_refs"]})
            if self._m:
                self._m.unknown_refs.labels(*self._vals, "samples").inc(st["unknown_sample_refs"])
                self._m.unknown_refs.labels(*self._vals, "series").inc(len(unknown))
        st["seconds"] = time.perf_counter() - t0
        self.replay_stats = st
        del self._multi, self._mk, self._mv
        log.info("WAL replay completed", extra={k: v for k, v in st.items()})

    def _replay_exemplars(self, refs: np.ndarray, t: np.ndarray, v: np.ndarray, blobs: list, st: dict) -> None:
        """An Exemplars record into the exemplar buffer (unknown refs skipped and counted, as
        Prometheus counts them; an out-of-order one is left out, a duplicate ignored)."""
        buf, offs = self.head.blobs(refs)
        known = offs[1:] > offs[:-1]
        if not known.all():
            st["unknown_exemplar_refs"] = st.get("unknown_exemplar_refs", 0) + int((~known).sum())
            if self._m:
                self._m.unknown_refs.labels(*self._vals, "exemplars").inc(int((~known).sum()))
        idx = np.flatnonzero(known).tolist()
        if idx:
            keys = [buf[offs[i]:offs[i + 1]] for i in idx]
            self.exemplars.add(keys, [blobs[i] for i in idx], t[idx], v[idx])

    def _set_multi(self) -> None:
        self._mk = np.array(sorted(self._multi), dtype=np.int64)
        self._mv = np.array([self._multi[k] for k in self._mk.tolist()], dtype=np.int64)

    def _replay_log(self, w: _wal.WAL, st: dict, unknown: set[int], *, wbl: bool) -> None:
        """One log into the head; a reader thread decodes while this one appends. In the WAL,
        samples before the newest block are dropped (they are in it); the WBL holds only
        out-of-order samples, which Prometheus never drops for that reason."""
        head = self.head
        min_valid = MIN_TIME if wbl else head._min_valid_time  # set from the newest block before replay
        multi = self._multi
        q: queue.Queue = queue.Queue(maxsize=2)  # bounds the decoded batches in flight
        _END = object()

        def produce() -> None:
            try:
                for item in _wal.replay(w.dir, batch=_REPLAY_BATCH):
                    q.put(item)
                q.put(_END)
            except BaseException as e:  # handed to the consumer
                q.put(e)

        reader = threading.Thread(target=produce, name="wal-replay-reader", daemon=True)
        reader.start()
        err: BaseException | None = None
        while True:
            item = q.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                err = item
                break
            rtype, body = item
            if rtype == wr.SERIES and not wbl:
                refs, blobs = body
                if not blobs:
                    continue
                offs = np.zeros(len(blobs) + 1, dtype=np.int64)
                np.cumsum([len(b) for b in blobs], out=offs[1:])
                rec_refs = refs.view(np.int64)
                got, status = head.create_with_refs(b"".join(blobs), offs, rec_refs)
                created = status == 1
                st["series"] += int(created.sum())
                if multi and created.any():
                    # a ref that stood for a repeated series now names new labels: from here on
                    # its samples are that series' own
                    if [r for r in rec_refs[created].tolist() if multi.pop(r, None) is not None]:
                        self._set_multi()
                dup = np.flatnonzero((status == 0) & (got != rec_refs))
                if len(dup):
                    multi.update(zip(rec_refs[dup].tolist(), got[dup].tolist()))
                    self._set_multi()
                bad = np.flatnonzero(status >= 2)
                if len(bad):
                    log.warning("WAL replay: series record not applied",
                                extra={"refs": rec_refs[bad][:10].tolist(), "count": len(bad),
                                       "reason": "ref taken by other labels or malformed labels"})
            elif rtype == wr.SAMPLES:
                r, t, v = body
                r = r.view(np.int64)
                keep = t >= min_valid
                if not keep.all():
                    st["discarded_before_blocks"] += int(len(t) - keep.sum())
                    r, t, v = r[keep], t[keep], v[keep]
                if len(self._mk):
                    r = self._remap(r, t, self._mk, self._mv)
                if not len(r):
                    continue
                # WAL: in-order samples, as processWALSamples (no appendable window, only the
                # min valid time); WBL: out-of-order samples, through the out-of-order path
                status = head.append(r, t, v) if wbl else head.replay(r, t, v)
                ok = (status == OK) | (status == OOO_OK)
                n_ok = int(ok.sum())
                st["ooo_samples" if wbl else "samples"] += n_ok
                if n_ok != len(status):
                    unk = status == BAD_REF
                    n_unk = int(unk.sum())
                    if n_unk:
                        st["unknown_sample_refs"] += n_unk
                        unknown.update(np.unique(r[unk]).tolist())
                    st["rejected_samples"] += len(status) - n_ok - n_unk
            elif rtype in _HIST_TYPES:
                hs = [h for h in body if h.t >= min_valid]
                if not hs:
                    continue
                r = np.array([multi.get(h.ref, h.ref) for h in hs], dtype=np.int64)
                cols = histogram_columns(hs, is_float=rtype in _FLOAT_HIST_TYPES)
                status = head.append_histograms(r, cols) if wbl else head.replay_histograms(r, cols)
                ok = (status == OK) | (status == OOO_OK)
                st["histograms"] += int(ok.sum())
                unk = status == BAD_REF
                if unk.any():
                    st["unknown_histogram_refs"] += int(unk.sum())
                    unknown.update(np.unique(r[unk]).tolist())
                self._keep_refs(r.tolist(), [h.t for h in hs])
            elif wbl:
                st["records_skipped"] += 1
            elif rtype == wr.EXEMPLARS:
                r, t, v, b = body
                m = t >= min_valid
                st["exemplars"] += int(m.sum())
                refs = [multi.get(x, x) for x in r[m].view(np.int64).tolist()]
                self._keep_refs(refs, t[m].tolist())
                if self.exemplars.enabled and refs:
                    self._replay_exemplars(np.array(refs, dtype=np.int64), t[m], v[m],
                                           [b[i] for i in np.flatnonzero(m).tolist()], st)
            elif rtype in (wr.TOMBSTONES, wr.METADATA, wr.MMAP_MARKERS):
                pass  # the head deletes nothing and keeps no metadata; they stay in the WAL
            else:
                st["records_skipped"] += 1
        reader.join()
        if err is not None:
            if not isinstance(err, _wal.WALCorruption):
                raise err
            self._child(self._m.wal_corruptions if self._m else None).inc()
            if os.path.abspath(os.path.dirname(err.segment)) != os.path.abspath(w.dir):
                raise err  # a damaged checkpoint: Prometheus refuses to start too
            log.warning("Replay stopped at damage; repairing", extra={"err": str(err)})
            w.repair(err)
            st["repaired" if not wbl else "wbl_repaired"] = str(err)

    def _remap(self, r: np.ndarray, t: np.ndarray, mk: np.ndarray, mv: np.ndarray) -> np.ndarray:
        """Samples of a ref whose Series record repeated a live series' labels go to that series;
        the old ref's record is kept in checkpoints while such samples are in range."""
        i = np.searchsorted(mk, r)
        i[i == len(mk)] = 0
        hit = mk[i] == r
        if not hit.any():
            return r
        self._keep_refs(r[hit].tolist(), t[hit].tolist())
        r = r.copy()
        r[hit] = mv[i[hit]]
        return r

    def _keep_refs(self, refs: Iterable[int], ts: Iterable[int]) -> None:
        e = self._wal_expiry
        for ref, t in zip(refs, ts):
            if e.get(ref, MIN_TIME) < t:
                e[ref] = t

    # -- appending --------------------------------------------------------------------------------
    def append(self, buf: Any, offsets: Any, series: Any, ts: Any, vs: Any, *,
               blocking: bool = True) -> Optional[AppendResult]:
        """Append one request: label blobs ``buf[offsets[i]:offsets[i+1]]`` (canonical format),
        per sample its series index ``series[j]``, timestamp ``ts[j]`` (ms) and value ``vs[j]``.
        New series and the accepted samples are in the WAL when this returns. With
        ``blocking=False`` nothing is done and None returned while another thread holds the
        append lock (a flush): an event loop appends small batches itself, not waiting."""
        if not blocking:
            if not self._wlock.acquire(blocking=False):
                return None
            try:
                return self.append(buf, offsets, series, ts, vs)
            finally:
                self._wlock.release()
        offsets = _i64(offsets)
        series = _i64(series)
        ts = _i64(ts)
        vs = np.ascontiguousarray(vs, dtype=np.float64)
        if not (len(series) == len(ts) == len(vs)):
            raise ValueError(f"append: {len(series)} series indices, {len(ts)} timestamps, {len(vs)} values")
        nser = len(offsets) - 1
        if len(series) and (series.min() < 0 or series.max() >= nser):
            raise ValueError(f"append: series index out of range 0..{nser - 1}")
        with self._wlock:
            self._check_open()
            refs, created = self.head.get_or_create(buf, offsets, strict=False)
            sr = refs[series]
            status = self.head.append(sr, ts, vs) if len(series) else np.zeros(0, dtype=np.uint8)
            recs = []
            new = np.flatnonzero(created) if created.any() else ()
            if len(new):
                recs.append(series_record(refs[new], buf, offsets, new))
            st, sv = ts, vs
            ooo = None
            if (status != OK).any():  # some samples left out: log only the accepted ones
                if self.wbl is not None:
                    oi = np.flatnonzero(status == OOO_OK)
                    if len(oi):
                        ooo = _samples_records(sr[oi], ts[oi], vs[oi])
                ok = np.flatnonzero(status == OK)
                sr, st, sv = sr[ok], ts[ok], vs[ok]
            recs += _samples_records(sr, st, sv)
            self._log(self.wal, recs)
            if ooo:  # after the WAL, which holds the Series records they need
                self._log(self.wbl, ooo)
        return AppendResult(status, refs, len(new))

    def _log(self, w: _wal.WAL, recs: list[bytes]) -> None:
        """Log records; when that fails (disk full) they are already in the head, so they are
        kept and logged first by the next call that succeeds (a retried request finds its samples
        as equal duplicates, which are not logged again). Caller holds the append lock."""
        pending = self._unlogged.get(id(w))
        if pending:
            recs = pending + recs
        if not recs:
            return
        try:
            w.log(recs)
        except BaseException:
            self._unlogged[id(w)] = recs
            raise
        if pending:
            del self._unlogged[id(w)]

    def _series_for(self, buf: Any, offsets: Any, series: Any) -> tuple[np.ndarray, list[bytes]]:
        """Refs of the series of rare-path items (created if needed, Series record returned)."""
        offsets = _i64(offsets)
        series = _i64(series)
        refs, created = self.head.get_or_create(buf, offsets, strict=False)  # malformed: ref 0
        recs = []
        new = np.flatnonzero(created)
        if len(new):
            recs.append(series_record(refs[new], buf, offsets, new))
        return refs[series], recs

    def append_histograms(self, buf: Any, offsets: Any, histograms: Sequence[Any]) -> np.ndarray:
        """Append native histogram samples (``pythanos.remote.write.HistogramSample``-like:
        ``series`` index into the blobs, timestamp, is_float, fields) to the head; the accepted
        ones are logged as Prometheus does (record types 7-10 by kind, custom-bucket ones apart;
        late ones to the WBL). Returns the head's status per histogram (``BAD_REF`` for a
        malformed series blob, ``INVALID`` for one failing Prometheus' validation)."""
        n = len(histograms)
        status = np.full(n, BAD_REF, dtype=np.uint8)
        if not n:
            return status
        with self._wlock:
            self._check_open()
            refs, recs = self._series_for(buf, offsets, [h.series for h in histograms])
            good = np.flatnonzero(refs)
            if len(good):
                hs = [histograms[i] for i in good.tolist()]
                status[good] = self.head.append_histograms(refs[good], histogram_columns(hs))
            ooo: list[bytes] = []
            for want, out in ((OK, recs), (OOO_OK, ooo)):
                idx = np.flatnonzero(status == want).tolist()
                if idx:
                    out += _histogram_records([(int(refs[i]), histograms[i]) for i in idx])
            if ooo and self.wbl is None:  # cannot happen: OOO_OK needs a window, which opens the WBL
                recs += ooo
                ooo = []
            self._log(self.wal, recs)
            if ooo:
                self._log(self.wbl, ooo)
            if len(good):
                self._keep_refs(refs[good].tolist(), [int(histograms[i].timestamp) for i in good.tolist()])
        return status

    def append_exemplars(self, buf: Any, offsets: Any, series: Any, label_blobs: Sequence[bytes], values: Any,
                         timestamps: Any) -> np.ndarray:
        """Append exemplars (per exemplar: series index, its own label blob, value, timestamp), as
        Prometheus' head: each is validated against the buffer (``pythanos.tsdb.exemplars``
        statuses), the valid ones are logged to the WAL as one Exemplars record and then put in
        the buffer in order. With the buffer off (``max_exemplars`` 0) nothing is logged and every
        status is DISABLED (Prometheus ignores them without an error), as are those of a malformed
        series label blob. Returns the statuses."""
        from .exemplars import DISABLED

        n = len(label_blobs)
        status = np.full(n, DISABLED, dtype=np.uint8)
        if n == 0 or not self.exemplars.enabled:
            return status
        offsets = _i64(offsets)
        series = _i64(series)
        ts = _i64(timestamps)
        vs = np.ascontiguousarray(values, dtype=np.float64)
        with self._wlock:
            self._check_open()
            refs, recs = self._series_for(buf, offsets, series)
            good = np.flatnonzero(refs)
            if len(good):
                mv = memoryview(buf) if not isinstance(buf, (bytes, bytearray)) else buf
                sl = series[good].tolist()
                keys = [bytes(mv[offsets[s]:offsets[s + 1]]) for s in sl]
                lbl = [label_blobs[i] for i in good.tolist()]
                status[good] = self.exemplars.validate(keys, lbl, ts[good], vs[good])
                ok = good[status[good] == EXEMPLAR_ADDED]
                if len(ok):
                    recs.append(wr.encode_exemplars(refs[ok], ts[ok], vs[ok], [label_blobs[i] for i in ok.tolist()]))
                self._log(self.wal, recs)
                if len(ok):
                    self._keep_refs(refs[ok].tolist(), ts[ok].tolist())
                    sel = status[good] == EXEMPLAR_ADDED
                    self.exemplars.add([k for k, s in zip(keys, sel.tolist()) if s],
                                       [x for x, s in zip(lbl, sel.tolist()) if s], ts[ok], vs[ok])
            else:
                self._log(self.wal, recs)
        return status

    # -- compaction, retention --------------------------------------------------------------------
    def compact(self) -> list[str]:
        """Cut the head's oldest chunk-range windows into blocks while it is compactable, truncate
        the head and the WAL, apply retention. Returns the new block ULIDs."""
        with self._clock:
            self._check_open()
            try:
                return self._compact()
            except BaseException:
                self._child(self._m.compactions_failed if self._m else None).inc()
                raise

    def _compact(self) -> list[str]:
        out: list[str] = []
        last_maxt = None
        head = self.head
        while head.compactable():
            mint, maxt = head.next_block_range()
            # appends go on meanwhile: they cannot reach [mint, maxt) (the appendable window starts
            # half a chunk range behind the head's max time, past maxt while compactable)
            u = head.write_block(self.dir, mint, maxt)
            if u:
                self._add_block(u)
                out.append(u)
            with self._wlock:
                head.truncate(maxt)
            last_maxt = maxt
        if last_maxt is not None:
            self._truncate_wal(last_maxt)
            if head.ooo_window:
                with self._wlock:
                    out += self._compact_ooo()
        self._apply_retention()
        if out:
            log.info("Head compacted", extra={"blocks": ",".join(out), "head_min_time": head.min_time})
        return out

    def flush(self) -> list[str]:
        """Write everything in the head into blocks (one per chunk-range window), empty the head
        and checkpoint the whole WAL (a tenant pruned, or a shutdown that wants blocks). Appends
        wait meanwhile: a sample landing in a window already written would be truncated away."""
        with self._clock, self._wlock:
            self._check_open()
            out: list[str] = []
            head = self.head
            if head.initialized and head.max_time >= head.min_time and head.num_series:
                end = head.max_time + 1
                mint = head.min_time
                while mint < end:
                    maxt = min(range_end(mint, head.chunk_range), end)
                    u = head.write_block(self.dir, mint, maxt)
                    if u:
                        self._add_block(u)
                        out.append(u)
                    mint = maxt
                out += self._compact_ooo()
                head.truncate(end)
                self._truncate_wal(end, everything=True)
            self._apply_retention()
            return out

    def _compact_ooo(self) -> list[str]:
        """The head's out-of-order samples into blocks, then the WBL that held them dropped
        (``DB.compactOOOHead`` + ``Head.truncateOOO``). Appends are held by the caller: an
        out-of-order sample logged meanwhile would be deleted with the WBL unwritten."""
        out = []
        for u in self.head.compact_ooo(self.dir):
            self._add_block(u)
            out.append(u)
        if self.wbl is not None:
            nxt = self.wbl.next_segment()
            self.wbl.delete_segments_before(nxt)
            _wal.delete_checkpoints_before(self.wbl.dir, nxt)
        return out

    def _add_block(self, u: str) -> None:
        b = _Block(BlockReader.open_dir(os.path.join(self.dir, u)))
        with self._blk_lock:
            self._blocks = sorted([*self._blocks, b], key=lambda x: (x.meta.min_time, x.meta.max_time))
        self._count_blocks()

    def _truncate_wal(self, mint: int, everything: bool = False) -> None:
        """Prometheus' ``Head.truncateWAL``: checkpoint the lower two thirds of the finished
        segments (all of them with ``everything``), keeping the head's live series and what is at
        or after ``mint``; then delete the covered segments and older checkpoints."""
        if mint <= self._last_wal_truncation:
            return
        self._last_wal_truncation = mint
        first, last = self.wal.segments()
        self.wal.next_segment()
        if last < 0:
            return
        if not everything:
            last = first + (last - first) * 2 // 3
            if last <= first:
                return
        live = np.sort(self.head.all_refs())
        with self._wlock:  # appends add to it meanwhile
            expiry = dict(self._wal_expiry)

        def keep(refs: np.ndarray) -> np.ndarray:
            r = np.asarray(refs).view(np.int64) if np.asarray(refs).dtype == np.uint64 else _i64(refs)
            k = np.isin(r, live, assume_unique=False)
            if expiry and not k.all():
                for i in np.flatnonzero(~k).tolist():
                    if expiry.get(int(r[i]), MIN_TIME) >= mint:
                        k[i] = True
            return k

        self._child(self._m.checkpoint_creations if self._m else None).inc()
        try:
            stats = _wal.checkpoint(self.wal_dir, first, last, keep, mint, compression=self.compression)
        except BaseException:
            self._child(self._m.checkpoint_creations_failed if self._m else None).inc()
            raise
        try:
            self.wal.delete_segments_before(last + 1)
        except OSError as e:  # leftovers are superseded by the checkpoint; retried next time
            log.error("truncating segments failed", extra={"err": str(e)})
        with self._wlock:
            e = self._wal_expiry
            for ref in [r for r, t in e.items() if t < mint]:
                del e[ref]
        self._child(self._m.checkpoint_deletions if self._m else None).inc()
        _wal.delete_checkpoints_before(self.wal_dir, last)
        log.info("WAL checkpoint complete", extra={"first": first, "last": last, "mint": mint, **stats})

    def _apply_retention(self) -> list[str]:
        """Delete the blocks ``retention_ms`` or more behind the newest block (by max time)."""
        if self.retention_ms <= 0:
            return []
        with self._blk_lock:
            blocks = sorted(self._blocks, key=lambda b: b.meta.max_time, reverse=True)
            if not blocks:
                return []
            newest = blocks[0].meta.max_time
            gone = [b for b in blocks[1:] if newest - b.meta.max_time >= self.retention_ms]
            if not gone:
                return []
            self._blocks = [b for b in self._blocks if b not in gone]
            for b in gone:
                b.deleted = True
                if b.users == 0:
                    b.reader.close()
        self._child(self._m.time_retentions if self._m else None).inc()
        self._count_blocks()
        for b in gone:
            path = os.path.join(self.dir, b.meta.ulid)
            tmp = path + TMP_FOR_DELETION
            try:
                os.rename(path, tmp)
            except OSError as e:
                log.error("Deleting block failed", extra={"block": b.meta.ulid, "err": str(e)})
                continue
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("Deleting obsolete block", extra={"block": b.meta.ulid, "max_time": b.meta.max_time})
        return [b.meta.ulid for b in gone]

    # -- reading ----------------------------------------------------------------------------------
    def blocks(self) -> list[BlockMeta]:
        """Metas of the loaded blocks, oldest min time first."""
        with self._blk_lock:
            return [b.meta for b in self._blocks]

    @property
    def min_time(self) -> int:
        """Lowest timestamp held (blocks or head); MAX_TIME when empty."""
        with self._blk_lock:
            t = min((b.meta.min_time for b in self._blocks), default=MAX_TIME)
        h = self.head
        if h.initialized and h.num_series:
            t = min(t, h.min_time)
        return t

    @property
    def max_time(self) -> int:
        """Highest timestamp held (inclusive: a block's exclusive max time minus 1); MIN_TIME when empty."""
        with self._blk_lock:
            t = max((b.meta.max_time - 1 for b in self._blocks), default=MIN_TIME)
        h = self.head
        if h.initialized and h.num_series:
            t = max(t, h.max_time)
        return t

    def _acquire(self, mint: int, maxt: int) -> list[_Block]:
        with self._blk_lock:
            got = [b for b in self._blocks if b.meta.min_time <= maxt and b.meta.max_time > mint]
            for b in got:
                b.users += 1
            return got

    def _release(self, blocks: list[_Block]) -> None:
        with self._blk_lock:
            for b in blocks:
                b.users -= 1
                if b.deleted and b.users == 0:
                    b.reader.close()

    def _head_stream(self, matchers: Sequence[Matcher], mint: int, maxt: int, skip_chunks: bool
                     ) -> Iterator[tuple[Labels, list[Chunk]]]:
        h = self.head
        if not h.initialized or h.num_series == 0:
            return iter(())
        lbls, hc = h.query(matchers, mint, maxt)
        if skip_chunks:
            return ((ls, []) for ls in lbls)
        starts = hc.starts.tolist()
        cm, cx, offs, data = hc.mint.tolist(), hc.maxt.tolist(), hc.offsets.tolist(), hc.data
        enc = hc.encoding.tolist()  # 1 XOR, 2 histogram, 3 float histogram

        def gen() -> Iterator[tuple[Labels, list[Chunk]]]:
            for i, ls in enumerate(lbls):
                yield ls, [(cm[j], cx[j], enc[j], data[offs[j]:offs[j + 1]]) for j in range(starts[i], starts[i + 1])]
        return gen()

    @staticmethod
    def _block_stream(b: _Block, matchers: Sequence[Matcher], mint: int, maxt: int, skip_chunks: bool
                      ) -> Iterator[tuple[Labels, list[Chunk]]]:
        r = b.reader
        if skip_chunks:
            refs = (r.index.postings_for_matchers(list(matchers)) if matchers else r.index.postings("", ""))
            refs = [int(x) for x in refs]
            for i in range(0, len(refs), 4096):
                for lbls, metas in r.index.series_many(refs[i:i + 4096]):
                    if any(c[1] >= mint and c[0] <= maxt for c in map(_meta3, metas)):
                        yield norm_labels(lbls), []
            return
        for lbls, _iv, chunks in r.series_chunks(matchers, mint, maxt):
            yield lbls, chunks

    def series(self, matchers: Sequence[Matcher] = (), mint: int = MIN_TIME, maxt: int = MAX_TIME, *,
               skip_chunks: bool = False) -> list[tuple[Labels, list[Chunk]]]:
        """The series selected by ``matchers`` with chunks overlapping ``[mint, maxt]`` (closed),
        sorted by labels: ``(labels, chunks)``, labels a name-sorted tuple of (name, value),
        chunks ``(mint, maxt, encoding, data)`` from all blocks and the head, ordered by
        (mint, maxt); whole chunks, so samples outside the range may come along. Chunks of an
        out-of-order block overlap in-order ones (a reader merges them, as Prometheus' querier).
        ``encoding`` is Prometheus' chunkenc number (XOR = 1, as in block files); Thanos'
        storepb ``Chunk.Encoding`` numbers XOR as 0, the StoreAPI layer maps. Without matchers,
        all series; ``skip_chunks`` gives empty chunk lists."""
        matchers = [m if isinstance(m, Matcher) else Matcher(*m) for m in matchers]
        # the head before the blocks: a compaction adds its block before truncating the head, so
        # a range moving from head to block meanwhile is seen at least once (twice is deduplicated)
        head = self._head_stream(matchers, mint, maxt, skip_chunks)
        blocks = self._acquire(mint, maxt)
        try:
            streams = [self._block_stream(b, matchers, mint, maxt, skip_chunks) for b in blocks]
            streams.append(head)
            if len(streams) == 1:
                return list(streams[0])
            out: list[tuple[Labels, list[Chunk]]] = []
            for ls, chunks in heapq.merge(*streams, key=lambda x: x[0]):
                if out and out[-1][0] == ls:
                    out[-1][1].extend(chunks)
                else:
                    out.append((ls, list(chunks)))
            if not skip_chunks:
                for _, chunks in out:
                    if len(chunks) > 1:
                        chunks.sort(key=lambda c: (c[0], c[1]))
                        dup = [j for j in range(1, len(chunks)) if chunks[j] == chunks[j - 1]]
                        for j in reversed(dup):
                            del chunks[j]
            return out
        finally:
            self._release(blocks)

    def label_names(self, matchers: Sequence[Matcher] = (), mint: int = MIN_TIME, maxt: int = MAX_TIME) -> list[str]:
        """Sorted label names of the series with data in ``[mint, maxt]`` (selected by ``matchers``)."""
        if matchers:
            return sorted({n for ls, _ in self.series(matchers, mint, maxt, skip_chunks=True) for n, _v in ls})
        names: set[str] = set()
        blocks = self._acquire(mint, maxt)
        try:
            for b in blocks:
                names.update(n for n in b.reader.index.label_names() if n)
        finally:
            self._release(blocks)
        if self._head_overlaps(mint, maxt):
            names.update(self.head.label_names())
        return sorted(names)

    def label_values(self, name: str, matchers: Sequence[Matcher] = (), mint: int = MIN_TIME,
                     maxt: int = MAX_TIME) -> list[str]:
        """Sorted values of label ``name`` among the series with data in ``[mint, maxt]``."""
        if matchers:
            vals = set()
            for ls, _ in self.series(matchers, mint, maxt, skip_chunks=True):
                for n, v in ls:
                    if n == name:
                        vals.add(v)
            return sorted(vals)
        out: set[str] = set()
        blocks = self._acquire(mint, maxt)
        try:
            for b in blocks:
                out.update(b.reader.index.label_values(name))
        finally:
            self._release(blocks)
        if self._head_overlaps(mint, maxt):
            out.update(self.head.label_values(name))
        return sorted(out)

    def _head_overlaps(self, mint: int, maxt: int) -> bool:
        h = self.head
        return h.initialized and h.num_series > 0 and h.min_time <= maxt and h.max_time >= mint

    # -- closing ----------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"TSDB {self.dir} is closed")

    def _close_blocks(self) -> None:
        with self._blk_lock:
            for b in self._blocks:
                b.deleted = True
                if b.users == 0:
                    b.reader.close()
            self._blocks = []
        self._count_blocks()

    def close(self) -> None:
        """Close the WAL (last page written, fsynced) and the blocks. The head is not cut into
        blocks (call :meth:`flush` first for that); the next open replays the WAL."""
        with self._clock, self._wlock:
            if self._closed:
                return
            self._closed = True
            for w in (self.wal, self.wbl):
                if w is not None and self._unlogged.get(id(w)):
                    try:
                        self._log(w, [])
                    except OSError as e:
                        log.error("records lost: the WAL cannot be written", extra={"dir": w.dir, "err": str(e)})
            self.wal.close()
            if self.wbl is not None:
                self.wbl.close()
        self._close_blocks()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1

    def __enter__(self) -> "TSDB":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _meta3(c: Any) -> tuple[int, int]:
    if isinstance(c, tuple):
        return int(c[0]), int(c[1])
    return int(c.mint), int(c.maxt)

