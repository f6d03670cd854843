"""In-memory exemplar storage of a TSDB: Prometheus' circular exemplar buffer (``tsdb/exemplar.go``).

A fixed number of slots (``--tsdb.max-exemplars``; 0 = exemplars are neither stored nor logged,
as Prometheus' head does when exemplar storage is off). Every exemplar taken goes to the next slot,
evicting the oldest one there; a series is in the index while it has an exemplar in the buffer.

Layout (our choice, not Prometheus'): the slots are numpy columns (series slot id, timestamp,
value) plus a list of the exemplars' label blobs, and per series only its newest slot and its
count are kept. Prometheus chains a series' exemplars in a linked list; here the ring order
itself is the age order, so a query selects the slots of the matching series with one mask and
orders them with one sort (no per-exemplar walk). Appending validates and places exemplars one
at a time in Python: each depends on the one before it for the same series (order and
duplicate checks), and exemplars are rare (one per series at most per scrape), so that loop
is over exemplars of a request, never over samples.

Validation, as Prometheus: the labels' names and values together may hold at most 128 UTF-8
runes (:data:`ERR_LABEL_LENGTH`); an exemplar equal to the series' newest is a duplicate
(ignored, not an error); one older than the newest (or at the same time with a smaller value,
or the same value and a smaller label hash) is out of order.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import xxhash

from . import walrecords as wr

__all__ = ["ExemplarStorage", "ExemplarMetrics", "SeriesExemplars", "ADDED", "DUPLICATE", "OUT_OF_ORDER", "LABEL_LENGTH",
           "DISABLED", "MAX_LABEL_SET_LENGTH", "ERR_OUT_OF_ORDER", "ERR_DUPLICATE", "ERR_LABEL_LENGTH"]

ADDED = 0
DUPLICATE = 1
OUT_OF_ORDER = 2
LABEL_LENGTH = 3
DISABLED = 4

MAX_LABEL_SET_LENGTH = 128  # OpenMetrics' limit, in runes, names and values together
ERR_OUT_OF_ORDER = "out of order exemplar"
ERR_DUPLICATE = "duplicate exemplar"
ERR_LABEL_LENGTH = f"label length for exemplar exceeds maximum of {MAX_LABEL_SET_LENGTH} UTF-8 characters"

_SEP = b"\xff"


def labels_hash(labels: Sequence[tuple[str, str]]) -> int:
    """Prometheus' ``labels.Hash`` (slice labels, as Thanos builds): xxhash64 of name, 0xff,
    value, 0xff for each label."""
    h = xxhash.xxh64()
    for n, v in labels:
        h.update(n.encode("utf-8", "surrogateescape"))
        h.update(_SEP)
        h.update(v.encode("utf-8", "surrogateescape"))
        h.update(_SEP)
    return h.intdigest()


def label_set_length(labels: Sequence[tuple[str, str]]) -> int:
    """Runes in names and values (bytes that are not UTF-8 count one each, as Go counts them)."""
    return sum(len(n) + len(v) for n, v in labels)


class ExemplarMetrics:
    """Prometheus' exemplar-storage metrics (``prometheus_tsdb_exemplar_*``), one child per TSDB."""

    def __init__(self, registry: Any, labelnames: Sequence[str]) -> None:
        from prometheus_client import Counter, Gauge

        kw = dict(labelnames=list(labelnames), registry=registry)
        self.labelnames = tuple(labelnames)
        self.appended = Counter("prometheus_tsdb_exemplar_exemplars_appended_total",
                                "Total number of appended exemplars.", **kw)
        self.in_storage = Gauge("prometheus_tsdb_exemplar_exemplars_in_storage",
                                "Number of exemplars currently in circular storage.", **kw)
        self.series = Gauge("prometheus_tsdb_exemplar_series_with_exemplars_in_storage",
                            "Number of series with exemplars currently in circular storage.", **kw)
        self.last_ts = Gauge("prometheus_tsdb_exemplar_last_exemplars_timestamp_seconds",
                             "The timestamp of the oldest exemplar stored in circular storage. Useful to check for "
                             "what timerange the current exemplar buffer limit allows. This usually means the last "
                             "timestampfor all exemplars for a typical setup. This is not true though if one of the "
                             "series timestamp is in future compared to rest series.", **kw)
        self.out_of_order = Counter("prometheus_tsdb_exemplar_out_of_order_exemplars_total",
                                    "Total number of out of order exemplar ingestion failed attempts.", **kw)
        self.max = Gauge("prometheus_tsdb_exemplar_max_exemplars",
                         "Total number of exemplars the exemplar storage can store, resizeable.", **kw)


_METRICS_LOCK = threading.Lock()
_METRICS: dict[int, tuple[Any, ExemplarMetrics]] = {}


def metrics_for(registry: Any, labelnames: Sequence[str]) -> ExemplarMetrics:
    """One set of families per registry, shared by the TSDBs on it (they differ by label)."""
    with _METRICS_LOCK:
        got = _METRICS.get(id(registry))
        if got is None or got[0] is not registry:
            got = (registry, ExemplarMetrics(registry, labelnames))
            _METRICS[id(registry)] = got
    return got[1]


@dataclass
class SeriesExemplars:
    """One series' exemplars in a query answer: labels sorted by name, exemplars oldest first."""

    series_labels: tuple[tuple[str, str], ...]
    labels: list[tuple[tuple[str, str], ...]]
    values: np.ndarray  # float64
    timestamps: np.ndarray  # int64 ms


class ExemplarStorage:
    """The circular buffer; see the module docstring. Thread-safe (one lock)."""

    def __init__(self, capacity: int, metrics: ExemplarMetrics | None = None,
                 metric_labels: Sequence[str] = ()) -> None:
        cap = max(0, int(capacity))
        self.capacity = cap
        self._lock = threading.Lock()
        self._slot_sid = np.full(cap, -1, dtype=np.int64)  # series slot id, -1: empty
        self._slot_ts = np.zeros(cap, dtype=np.int64)
        self._slot_v = np.zeros(cap, dtype=np.float64)
        self._slot_labels: list[bytes] = [b""] * cap
        self._next = 0
        self._sid_of: dict[bytes, int] = {}  # series label blob -> slot id
        self._series_blob: list[bytes] = []
        self._series_labels: list[tuple] = []
        self._newest: list[int] = []  # per slot id: its newest slot (-1 when free)
        self._count: list[int] = []
        self._free: list[int] = []
        self.appended = 0
        self.out_of_order = 0
        self._m = None
        if metrics is not None:
            vals = list(metric_labels)
            self._m = {k: (getattr(metrics, k).labels(*vals) if vals else getattr(metrics, k))
                       for k in ("appended", "in_storage", "series", "last_ts", "out_of_order", "max")}
            self._m["max"].set(cap)
            self._m["in_storage"].set(0)
            self._m["series"].set(0)

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def __len__(self) -> int:
        return int((self._slot_sid >= 0).sum())

    @property
    def num_series(self) -> int:
        return len(self._sid_of)

    # -- validation -------------------------------------------------------------------------------
    def _check(self, sid: int, labels: tuple, lblob: bytes, ts: int, v: float) -> int:
        if label_set_length(labels) > MAX_LABEL_SET_LENGTH:
            return LABEL_LENGTH
        if sid < 0:
            return ADDED
        k = self._newest[sid]
        nts, nv, nl = int(self._slot_ts[k]), float(self._slot_v[k]), self._slot_labels[k]
        if ts == nts and nv == v and nl == lblob:  # Go's Exemplar.Equals (values with ==: NaN never equal)
            return DUPLICATE
        if ts < nts or (ts == nts and v < nv) or (
                ts == nts and v == nv and labels_hash(labels) < labels_hash(wr.blob_to_labels(nl))):
            return OUT_OF_ORDER
        return ADDED

    def validate(self, series: Sequence[bytes], labels: Sequence[bytes], ts: np.ndarray, vs: np.ndarray) -> np.ndarray:
        """Status per exemplar against what is stored (Prometheus' ``ValidateExemplar``: each
        exemplar alone, not against the others of the batch). ``series``: the series' label
        blobs; ``labels``: the exemplars' label blobs (empty values already left out)."""
        n = len(labels)
        if not self.enabled:
            return np.full(n, DISABLED, dtype=np.uint8)
        out = np.empty(n, dtype=np.uint8)
        tl, vl = np.asarray(ts, dtype=np.int64).tolist(), np.asarray(vs, dtype=np.float64).tolist()
        with self._lock:
            for i in range(n):
                out[i] = self._check(self._sid_of.get(series[i], -1), wr.blob_to_labels(labels[i]), labels[i],
                                     tl[i], vl[i])
        return out

    # -- adding -----------------------------------------------------------------------------------
    def add(self, series: Sequence[bytes], labels: Sequence[bytes], ts: np.ndarray, vs: np.ndarray) -> np.ndarray:
        """Store exemplars in order (Prometheus' ``AddExemplar`` each: a duplicate is a no-op, an
        out-of-order one is counted and left out). Returns the status per exemplar."""
        n = len(labels)
        if not self.enabled:
            return np.full(n, DISABLED, dtype=np.uint8)
        out = np.empty(n, dtype=np.uint8)
        tl, vl = np.asarray(ts, dtype=np.int64).tolist(), np.asarray(vs, dtype=np.float64).tolist()
        added = ooo = 0
        with self._lock:
            for i in range(n):
                key = series[i]
                sid = self._sid_of.get(key, -1)
                st = self._check(sid, wr.blob_to_labels(labels[i]), labels[i], tl[i], vl[i])
                out[i] = st
                if st == OUT_OF_ORDER:
                    ooo += 1
                if st != ADDED:
                    continue
                if sid < 0:
                    sid = self._new_series(key)
                self._place(sid, labels[i], tl[i], vl[i])
                added += 1
            self.appended += added
            self.out_of_order += ooo
            self._update_metrics(added, ooo)
        return out

    def _new_series(self, key: bytes) -> int:
        lbls = wr.blob_to_labels(key)
        if self._free:
            sid = self._free.pop()
            self._series_blob[sid], self._series_labels[sid] = key, lbls
            self._newest[sid], self._count[sid] = -1, 0
        else:
            sid = len(self._series_blob)
            self._series_blob.append(key)
            self._series_labels.append(lbls)
            self._newest.append(-1)
            self._count.append(0)
        self._sid_of[key] = sid
        return sid

    def _place(self, sid: int, lblob: bytes, ts: int, v: float) -> None:
        k = self._next
        old = int(self._slot_sid[k])
        if old >= 0:  # evict the oldest exemplar: the slot about to be reused
            self._count[old] -= 1
            if self._count[old] == 0 and old != sid:
                del self._sid_of[self._series_blob[old]]
                self._newest[old] = -1
                self._series_blob[old] = b""
                self._series_labels[old] = ()
                self._free.append(old)
        self._slot_sid[k] = sid
        self._slot_ts[k] = ts
        self._slot_v[k] = v
        self._slot_labels[k] = lblob
        self._newest[sid] = k
        self._count[sid] += 1
        self._next = (k + 1) % self.capacity

    def _update_metrics(self, added: int, ooo: int) -> None:
        m = self._m
        if m is None:
            return
        if added:
            m["appended"].inc(added)
        if ooo:
            m["out_of_order"].inc(ooo)
        m["series"].set(len(self._sid_of))
        k = self._next
        if self._slot_sid[k] >= 0:  # full: the next slot holds the oldest
            m["in_storage"].set(self.capacity)
            m["last_ts"].set(int(self._slot_ts[k]) / 1000)
        else:
            m["in_storage"].set(k)
            if self._slot_sid[0] >= 0:
                m["last_ts"].set(int(self._slot_ts[0]) / 1000)

    # -- querying ---------------------------------------------------------------------------------
    def select(self, start: int, end: int, matcher_sets: Sequence[Sequence[Any]]) -> list[SeriesExemplars]:
        """Exemplars in ``[start, end]`` of the series matching any matcher set, series sorted by
        labels, each series' exemplars oldest first (Prometheus' ``Select``)."""
        if not self.enabled or not matcher_sets:
            return []
        with self._lock:
            sid = self._slot_sid.copy()
            ts = self._slot_ts.copy()
            vs = self._slot_v.copy()
            lab = list(self._slot_labels)
            nxt = self._next
            series_labels = list(self._series_labels)
        in_range = (sid >= 0) & (ts >= start) & (ts <= end)
        cand = np.unique(sid[in_range])
        matched = []
        for s in cand.tolist():  # per series, not per exemplar
            lbls = series_labels[s]
            d = dict(lbls)
            if any(all(m.matches(d.get(m.name, "")) for m in ms) for ms in matcher_sets):
                matched.append(s)
        if not matched:
            return []
        pick = np.flatnonzero(in_range & np.isin(sid, np.array(matched, dtype=np.int64)))
        age = (pick - nxt) % self.capacity
        order = np.lexsort((age, sid[pick]))
        pick = pick[order]
        psid = sid[pick]
        bounds = np.flatnonzero(np.diff(psid)) + 1
        out = []
        for part in np.split(pick, bounds):
            s = int(sid[part[0]])
            out.append(SeriesExemplars(series_labels[s], [wr.blob_to_labels(lab[k]) for k in part.tolist()],
                                       vs[part], ts[part]))
        out.sort(key=lambda e: e.series_labels)
        return out
