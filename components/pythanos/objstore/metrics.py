"""Thanos' object-storage metrics: :class:`InstrumentedBucket` (objstore's ``WrapWithMetrics``).

Every Thanos component that uses a bucket exposes, with ``bucket`` the bucket's name (S3: the
bucket, filesystem: ``fs: <dir>``) and ``operation`` one of ``OPERATIONS``:

* ``thanos_objstore_bucket_operations_total`` and ``..._operation_failures_total`` (counters);
* ``thanos_objstore_bucket_operation_duration_seconds`` (histogram, ``DURATION_BUCKETS``);
* ``thanos_objstore_bucket_operation_fetched_bytes_total`` (counter) and
  ``thanos_objstore_bucket_operation_transferred_bytes`` (histogram, ``TRANSFERRED_BUCKETS``), for
  get, get_range and upload only (upload's fetched bytes stay 0, as in Thanos);
* ``thanos_objstore_bucket_last_successful_upload_time`` (gauge, labelled by bucket only).

Every series exists from the start (0), as Thanos initialises them. What is observed when follows
objstore's ``metricBucket``: a not-found error is *expected*, never a failure (Thanos marks it so
where callers expect it: meta.json and markers); get/get_range observe their duration on errors
too, exists/attributes/delete only on success; iter's duration spans the whole listing including
the caller's time between keys (Thanos: "include time spent on each callback"); upload observes
duration and bytes read from its source whatever the outcome.

The store gateway makes many small ``get_range`` calls, so the numbers are plain fields updated
under one lock per operation (two short critical sections a call) and turned into
prometheus-client metric families by a collector only when ``/metrics`` is scraped: a
prometheus-client ``Histogram`` would cost a lock and a Python loop over its bounds per
observation. This also leaves out the ``_created`` series prometheus-client adds (Go does not).
"""
from __future__ import annotations

import math
import os
import threading
import time
import weakref
from bisect import bisect_left
from decimal import Decimal
from time import perf_counter
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .bucket import Bucket, ObjectAttributes, ObjectNotFoundError, UploadData, is_path

__all__ = ["DURATION_BUCKETS", "InstrumentedBucket", "OPERATIONS", "TRANSFERRED_BUCKETS", "instrument"]

OPERATIONS = ("iter", "get", "get_range", "exists", "upload", "delete", "attributes")
BYTE_OPERATIONS = ("get", "get_range", "upload")
DURATION_BUCKETS = (0.001, 0.01, 0.1, 0.3, 0.6, 1.0, 3.0, 6.0, 9.0, 20.0, 30.0, 60.0, 90.0, 120.0)
TRANSFERRED_BUCKETS = tuple(float(32768 << i) for i in range(16))  # 32 KiB ... 1 GiB

_HELP = {
    "ops": "Total number of all attempted operations against a bucket.",
    "failures": "Total number of operations against a bucket that failed, but were not expected to fail in "
                "certain way from caller perspective. Those errors have to be investigated.",
    "fetched": "Total number of bytes fetched from bucket, per operation.",
    "transferred": "Number of bytes transferred from/to bucket per operation.",
    "duration": "Duration of successful operations against the bucket per operation - iter operations include "
                "time spent on each callback.",
    "last_upload": "Second timestamp of the last successful upload to the bucket.",
}


def _go_float(v: float) -> str:
    """A bound as Go's client writes it (``strconv 'g', -1``): ``1``, ``0.3``, ``1.048576e+06``."""
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    d = Decimal(repr(v)).normalize()
    sign, digits, exponent = d.as_tuple()
    exp = len(digits) - 1 + int(exponent)
    if exp < -4 or exp >= 6:
        m = "".join(map(str, digits)).rstrip("0") or "0"
        mant = m[0] + ("." + m[1:] if len(m) > 1 else "")
        return f"{'-' if sign else ''}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    return format(d, "f")


_DURATION_LE = tuple(_go_float(b) for b in DURATION_BUCKETS) + ("+Inf",)
_TRANSFERRED_LE = tuple(_go_float(b) for b in TRANSFERRED_BUCKETS) + ("+Inf",)


class _OpStats:
    """One (bucket, operation)'s numbers; histogram counts per bucket, made cumulative at scrape."""

    __slots__ = ("lock", "count", "failures", "dur_sum", "dur_counts", "fetched", "xfer_sum", "xfer_counts")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.failures = 0
        self.dur_sum = 0.0
        self.dur_counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.fetched = 0
        self.xfer_sum = 0.0
        self.xfer_counts = [0] * (len(TRANSFERRED_BUCKETS) + 1)

    # acquire/release with try/finally: about half the cost of ``with`` on the hot path

    def begin(self) -> None:
        lock = self.lock
        lock.acquire()
        try:
            self.count += 1
        finally:
            lock.release()

    def done(self, seconds: float) -> None:
        i = bisect_left(DURATION_BUCKETS, seconds)
        lock = self.lock
        lock.acquire()
        try:
            self.dur_sum += seconds
            self.dur_counts[i] += 1
        finally:
            lock.release()

    def failed(self, seconds: Optional[float], counts: bool) -> None:
        """An error: a failure unless expected; its duration where Thanos observes it (not None)."""
        i = -1 if seconds is None else bisect_left(DURATION_BUCKETS, seconds)
        with self.lock:
            if counts:
                self.failures += 1
            if i >= 0:
                self.dur_sum += seconds  # type: ignore[operator]
                self.dur_counts[i] += 1

    def moved(self, seconds: float, n: int, fetched: bool) -> None:
        """A read (``fetched``) or upload that moved ``n`` bytes in ``seconds``."""
        i = bisect_left(DURATION_BUCKETS, seconds)
        j = bisect_left(TRANSFERRED_BUCKETS, n)
        lock = self.lock
        lock.acquire()
        try:
            self.dur_sum += seconds
            self.dur_counts[i] += 1
            self.xfer_sum += n
            self.xfer_counts[j] += 1
            if fetched:
                self.fetched += n
        finally:
            lock.release()

    def snapshot(self) -> tuple[int, int, float, list[int], int, float, list[int]]:
        with self.lock:
            return (self.count, self.failures, self.dur_sum, list(self.dur_counts), self.fetched, self.xfer_sum,
                    list(self.xfer_counts))


class _BucketStats:
    """Every operation's numbers for one bucket name, and its last successful upload time."""

    def __init__(self) -> None:
        self.ops = {op: _OpStats() for op in OPERATIONS}
        self.last_upload = 0.0


def _cumulative(counts: list[int], le: tuple[str, ...]) -> list[tuple[str, float]]:
    out, acc = [], 0
    for bound, c in zip(le, counts):
        acc += c
        out.append((bound, float(acc)))
    return out


class _Collector:
    """The ``thanos_objstore_*`` families of every bucket wrapped on one registry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, _BucketStats] = {}

    def stats(self, name: str) -> _BucketStats:
        """A second wrapper of the same bucket on the registry shares its series (no duplicates)."""
        with self._lock:
            st = self._buckets.get(name)
            if st is None:
                st = self._buckets[name] = _BucketStats()
            return st

    def describe(self) -> Iterable[Metric]:
        return self._families({})

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            buckets = dict(self._buckets)
        return self._families(buckets)

    @staticmethod
    def _families(buckets: dict[str, _BucketStats]) -> list[Metric]:
        p = "thanos_objstore_bucket_"
        lab = ["bucket", "operation"]
        ops = CounterMetricFamily(p + "operations_total", _HELP["ops"], labels=lab)
        fails = CounterMetricFamily(p + "operation_failures_total", _HELP["failures"], labels=lab)
        fetched = CounterMetricFamily(p + "operation_fetched_bytes_total", _HELP["fetched"], labels=lab)
        xfer = HistogramMetricFamily(p + "operation_transferred_bytes", _HELP["transferred"], labels=lab)
        dur = HistogramMetricFamily(p + "operation_duration_seconds", _HELP["duration"], labels=lab)
        last = GaugeMetricFamily(p + "last_successful_upload_time", _HELP["last_upload"], labels=["bucket"])
        for name in sorted(buckets):
            st = buckets[name]
            for op in sorted(OPERATIONS):
                count, failures, dsum, dcounts, nfetched, xsum, xcounts = st.ops[op].snapshot()
                ops.add_metric([name, op], count)
                fails.add_metric([name, op], failures)
                dur.add_metric([name, op], _cumulative(dcounts, _DURATION_LE), dsum)
                if op in BYTE_OPERATIONS:
                    fetched.add_metric([name, op], nfetched)
                    xfer.add_metric([name, op], _cumulative(xcounts, _TRANSFERRED_LE), xsum)
            last.add_metric([name], st.last_upload)
        return [last, dur, fails, fetched, xfer, ops]


_COLLECTORS: "weakref.WeakKeyDictionary[Any, _Collector]" = weakref.WeakKeyDictionary()
_COLLECTORS_LOCK = threading.Lock()


def _collector(registry: Any) -> _Collector:
    """The registry's collector, registered on first use; without a registry a private one."""
    if registry is None:
        return _Collector()
    with _COLLECTORS_LOCK:
        c = _COLLECTORS.get(registry)
        if c is None:
            c = _COLLECTORS[registry] = _Collector()
            registry.register(c)
        return c


def _counts(e: BaseException) -> bool:
    """Whether an error is a failure: not-found is expected (Thanos' ``IsObjNotFoundErr``)."""
    return not isinstance(e, ObjectNotFoundError)


class _CountingReader:
    """An upload source that counts the bytes the backend reads from it (one add per ``read``)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        b = self._f.read(n)
        self.count += len(b)
        return b

    def readinto(self, buf: Any) -> int:
        n = self._f.readinto(buf)  # type: ignore[attr-defined]
        self.count += n or 0
        return n

    def seekable(self) -> bool:
        return bool(getattr(self._f, "seekable", lambda: False)())

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class InstrumentedBucket(Bucket):
    """``bucket`` with Thanos' ``thanos_objstore_*`` metrics on ``registry`` (see the module docstring)."""

    def __init__(self, bucket: Bucket, registry: Any = None, name: Optional[str] = None) -> None:
        self._bkt = bucket
        self._registry = registry
        self._stats = _collector(registry).stats(bucket.name if name is None else name)
        s = self._stats.ops
        self._iter_s, self._get_s, self._range_s, self._exists_s = s["iter"], s["get"], s["get_range"], s["exists"]
        self._upload_s, self._delete_s, self._attrs_s = s["upload"], s["delete"], s["attributes"]

    @property
    def inner(self) -> Bucket:
        return self._bkt

    @property
    def registry(self) -> Any:
        return self._registry

    @property
    def name(self) -> str:
        return self._bkt.name

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        s = self._range_s
        s.begin()
        start = perf_counter()
        try:
            data = self._bkt.get_range(key, offset, length)
        except Exception as e:
            s.failed(perf_counter() - start, _counts(e))
            raise
        s.moved(perf_counter() - start, len(data), True)
        return data

    def get(self, key: str) -> bytes:
        s = self._get_s
        s.begin()
        start = perf_counter()
        try:
            data = self._bkt.get(key)
        except Exception as e:
            s.failed(perf_counter() - start, _counts(e))
            raise
        s.moved(perf_counter() - start, len(data), True)
        return data

    def exists(self, key: str) -> bool:
        return self._plain(self._exists_s, self._bkt.exists, key)

    def attributes(self, key: str) -> ObjectAttributes:
        return self._plain(self._attrs_s, self._bkt.attributes, key)

    def delete(self, key: str) -> None:
        self._plain(self._delete_s, self._bkt.delete, key)

    @staticmethod
    def _plain(s: _OpStats, fn: Callable[[str], Any], key: str) -> Any:
        """exists/attributes/delete: the duration of successful calls only (as Thanos)."""
        s.begin()
        start = perf_counter()
        try:
            out = fn(key)
        except Exception as e:
            s.failed(None, _counts(e))
            raise
        s.done(perf_counter() - start)
        return out

    def upload(self, key: str, data: UploadData) -> None:
        s = self._upload_s
        s.begin()
        start = perf_counter()
        counting: Optional[_CountingReader] = None
        path: Optional[str] = None
        size = 0
        ok = False
        if isinstance(data, (bytes, bytearray, memoryview)):
            size = len(data)
        elif is_path(data):
            path = os.fspath(data)  # type: ignore[arg-type]
        elif not isinstance(data, str):  # a str is refused by the backend
            counting = _CountingReader(data)  # type: ignore[arg-type]
            data = counting  # type: ignore[assignment]
        try:
            self._bkt.upload(key, data)
        except Exception as e:
            s.failed(None, _counts(e))
            raise
        else:
            ok = True
            self._stats.last_upload = time.time()
        finally:
            if counting is not None:
                size = counting.count
            elif path is not None:
                try:
                    size = os.stat(path).st_size if ok else 0
                except OSError:
                    size = 0
            s.moved(perf_counter() - start, size, False)

    def iter(self, prefix: str = "", recursive: bool = False) -> Iterator[str]:
        s = self._iter_s
        s.begin()
        start = perf_counter()
        try:
            keys = self._bkt.iter(prefix, recursive)
        except Exception as e:
            s.failed(perf_counter() - start, _counts(e))
            raise
        return self._listing(keys, s, start)

    @staticmethod
    def _listing(keys: Iterator[str], s: _OpStats, start: float) -> Iterator[str]:
        """The inner listing as is (``yield from``: no Python step per key), timed until it ends,
        fails or the caller stops early (not a failure: Python callers ``break``)."""
        try:
            yield from keys
        except Exception as e:
            s.failed(perf_counter() - start, _counts(e))
            raise
        except BaseException:  # GeneratorExit: the caller stopped early
            s.done(perf_counter() - start)
            raise
        s.done(perf_counter() - start)

    def close(self) -> None:
        self._bkt.close()


def instrument(bucket: Bucket, registry: Any, name: Optional[str] = None) -> InstrumentedBucket:
    """``bucket`` wrapped with Thanos' objstore metrics on ``registry`` (idempotent for one registry)."""
    if isinstance(bucket, InstrumentedBucket) and bucket.registry is registry:
        return bucket
    return InstrumentedBucket(bucket, registry, name)
