"""The compactor's work on a bucket (Thanos ``pkg/compact``, ``cmd/thanos/compact.go`` and
``downsample.go``), one :meth:`BucketCompactor.iteration` at a time:

1. sync metas through the filters; apply retention and delete blocks whose deletion mark is older
   than ``--delete-delay`` *first*, so a compaction backlog never starves them (thanos-io/thanos#7218);
2. mark for deletion the blocks another block fully contains (what a crash between upload and
   marking leaves behind: this is what makes the compactor restart-safe);
3. compact groups until no group has work (groups in parallel up to ``--compact.concurrency``);
4. downsample raw -> 5m and 5m -> 1h (two passes);
5. retention again, cleanup of marked blocks and of aborted partial uploads (older than 48h).

Overlapping blocks in a group without vertical compaction are a :class:`HaltError` naming the
blocks and the fixes; bucket and network failures are :class:`RetryError` (the next iteration
retries them).
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..tsdb.meta import DELETION_MARK_FILENAME, NO_COMPACT_MARK_FILENAME, NO_DOWNSAMPLE_MARK_FILENAME, ThanosMeta
from . import ops
from .fetcher import FetchResult, MetaFetcher
from .planner import DEFAULT_RANGES, Group, describe_overlaps, groups, overlaps, plan

log = logging.getLogger(__name__)

__all__ = ["make_fetcher", "RES_RAW", "RES_5M", "RES_1H", "BucketCompactor", "CompactorConfig", "CompactorMetrics", "HaltError",
           "RetryError", "PARTIAL_UPLOAD_THRESHOLD_AGE"]

RES_RAW, RES_5M, RES_1H = 0, 300_000, 3_600_000
DOWNSAMPLE_RANGE_5M = 40 * 3600 * 1000    # raw blocks spanning this much are downsampled to 5m
DOWNSAMPLE_RANGE_1H = 10 * 24 * 3600 * 1000  # 5m blocks spanning this much are downsampled to 1h
PARTIAL_UPLOAD_THRESHOLD_AGE = 2 * 24 * 3600.0


class HaltError(Exception):
    """Compaction cannot continue without an operator (overlaps, corrupt input, bad output)."""


class RetryError(Exception):
    """A transient failure (download, upload, bucket); the next iteration retries."""


@dataclass
class CompactorConfig:
    data_dir: str = "./data"
    ranges: list = field(default_factory=lambda: list(DEFAULT_RANGES))
    vertical: bool = False              # --compact.enable-vertical-compaction or a replica label
    dedup_func: str = ""                # "" (one-to-one) or "penalty"
    concurrency: int = 1
    fetch_concurrency: int = 1
    downsample_concurrency: int = 1
    downsampling: bool = True
    retention: dict = field(default_factory=dict)  # resolution -> seconds (0 or absent: keep)
    delete_delay: float = 48 * 3600.0
    skip_out_of_order: bool = False
    hash_func: str = ""                 # --hash-func: "" or SHA256


class CompactorMetrics:
    """Thanos' compactor metrics, on ``registry``."""

    def __init__(self, registry=None) -> None:
        from prometheus_client import Counter, Gauge

        def c(name, doc, labels=()):
            return Counter(name, doc, list(labels), registry=registry)

        def g(name, doc, labels=()):
            return Gauge(name, doc, list(labels), registry=registry)

        self.halted = g("thanos_compact_halted", "Set to 1 if the compactor halted due to an unexpected error.")
        self.retries = c("thanos_compact_retries_total", "Total number of retries after retriable compactor error.")
        self.iterations = c("thanos_compact_iterations_total", "Total number of iterations that were executed "
                            "successfully.")
        self.cleaned = c("thanos_compact_blocks_cleaned_total", "Total number of blocks deleted in compactor.")
        self.clean_failures = c("thanos_compact_block_cleanup_failures_total",
                                "Failures encountered while deleting blocks in compactor.")
        self.marked = c("thanos_compact_blocks_marked_total", "Total number of blocks marked in compactor.",
                        ("marker", "reason"))
        self.gc = c("thanos_compact_garbage_collected_blocks_total", "Total number of blocks marked for deletion by "
                    "compactor.")
        self.partial_deletes = c("thanos_compact_aborted_partial_uploads_deletion_attempts_total",
                                 "Total number of started deletions of blocks that are assumed aborted and only "
                                 "partially uploaded.")
        self.group_compactions = c("thanos_compact_group_compactions_total", "Total number of group compaction "
                                   "attempts that resulted in a new block.", ("resolution",))
        self.group_vertical = c("thanos_compact_group_vertical_compactions_total", "Total number of group "
                                "compaction attempts that resulted in a new block based on overlapping blocks.",
                                ("resolution",))
        self.group_failures = c("thanos_compact_group_compactions_failures_total", "Total number of failed group "
                                "compactions.", ("resolution",))
        self.downsamples = c("thanos_compact_downsample_total", "Total number of downsampling attempts.",
                             ("resolution",))
        self.downsample_failures = c("thanos_compact_downsample_failures_total", "Total number of failed "
                                     "downsampling attempts.", ("resolution",))
        from prometheus_client import Histogram

        self.downsample_duration = Histogram(
            "thanos_compact_downsample_duration_seconds", "Duration of downsample runs", ["resolution"],
            registry=registry, buckets=(60, 300, 900, 1800, 3600, 7200, 14400))
        self.todo_compactions = g("thanos_compact_todo_compactions", "number of compactions to be done")
        self.todo_compaction_blocks = g("thanos_compact_todo_compaction_blocks", "number of blocks to be compacted")
        self.todo_downsample = g("thanos_compact_todo_downsample_blocks", "number of blocks to be downsampled")
        self.todo_deletion = g("thanos_compact_todo_deletion_blocks", "number of blocks that have crossed their "
                               "retention period")

    def mark(self, marker: str, reason: str):
        return self.marked.labels(marker, reason)


def _res_label(res: int) -> str:
    """Thanos' ``resolution`` metric label: the resolution in milliseconds (``ResolutionString``)."""
    return str(int(res))


def make_fetcher(bucket, *, data_dir: str, relabel=(), replica_labels=(), consistency_delay: float = 1800.0,
                 delete_delay: float = 48 * 3600.0, min_time=None, max_time=None, concurrency: int = 32,
                 registry=None) -> MetaFetcher:
    """The compactor's view of a bucket (Thanos' filter chain for ``compact`` and the bucket tools):
    time partition, label sharding, consistency delay, deletion marks older than half the delete
    delay, replica labels removed, then blocks contained in others filtered out."""
    from .fetcher import (ConsistencyDelayFilter, DeduplicateFilter, IgnoreDeletionMarkFilter, LabelShardFilter,
                          ReplicaLabelRemover, TimePartitionFilter)

    filters = []
    if min_time is not None and max_time is not None:
        filters.append(TimePartitionFilter(min_time, max_time))
    filters += [LabelShardFilter(list(relabel), list(replica_labels)), ConsistencyDelayFilter(consistency_delay),
                IgnoreDeletionMarkFilter(delete_delay / 2), ReplicaLabelRemover(list(replica_labels)),
                DeduplicateFilter()]
    return MetaFetcher(bucket, cache_dir=os.path.join(data_dir, "meta-syncer"), concurrency=concurrency,
                       filters=filters, registry=registry)


class BucketCompactor:
    """One compactor over one bucket; see the module docstring."""

    def __init__(self, bucket, fetcher: MetaFetcher, config: CompactorConfig,
                 metrics: Optional[CompactorMetrics] = None, now: Callable[[], float] = time.time) -> None:
        self.bucket = bucket
        self.fetcher = fetcher
        self.cfg = config
        self.metrics = metrics or CompactorMetrics(registry=None)
        self.now = now
        self.compact_dir = os.path.join(config.data_dir, "compact")
        self.downsample_dir = os.path.join(config.data_dir, "downsample")
        self._lock = threading.Lock()  # cleanup may run beside an iteration
        self._sync_lock = threading.Lock()
        self.synced: FetchResult = FetchResult()
        self.no_compact: dict = {}
        self.no_downsample: dict = {}

    # -- sync -----------------------------------------------------------------------------------
    def sync(self) -> FetchResult:
        try:
            with self._sync_lock:
                res = self.fetcher.fetch()
                self.no_compact = ops.read_markers(self.bucket, res.metas, NO_COMPACT_MARK_FILENAME, self.fetcher.map)
                self.no_downsample = ops.read_markers(self.bucket, res.metas, NO_DOWNSAMPLE_MARK_FILENAME,
                                                      self.fetcher.map)
        except Exception as e:  # noqa: BLE001
            raise RetryError(f"sync metas: {e}") from e
        self.synced = res
        return res

    # -- garbage collection, retention, cleanup -------------------------------------------------------
    def garbage_collect(self, res: FetchResult) -> None:
        """Mark for deletion the blocks the dedup filter found inside another block."""
        for u, state in sorted(res.filtered.items()):
            if state != "duplicate" or u in res.deletion_marked:
                continue
            if ops.mark_for_deletion(self.bucket, u, "outdated block", self.metrics.mark(DELETION_MARK_FILENAME, "")):
                self.metrics.gc.inc()
                res.deletion_marked.add(u)

    def apply_retention(self, res: FetchResult) -> int:
        """Mark blocks past their resolution's retention; returns how many were marked."""
        n = 0
        now = self.now()
        for u, m in sorted(res.metas.items()):
            keep = float(self.cfg.retention.get(m.resolution, 0) or 0)
            if keep <= 0 or u in res.deletion_marked:
                continue
            if now > (m.max_time // 1000) + keep:
                from ..flags import format_duration

                log.info("applying retention: marking block for deletion",
                         extra={"id": u, "maxTime": m.max_time, "retention": format_duration(keep)})
                if ops.mark_for_deletion(self.bucket, u, f"block exceeding retention of {format_duration(keep)}",
                                         self.metrics.mark(DELETION_MARK_FILENAME, "")):
                    n += 1
                res.deletion_marked.add(u)
        return n

    def clean(self, res: Optional[FetchResult] = None) -> None:
        """Delete blocks marked longer than ``--delete-delay`` ago, and aborted partial uploads."""
        with self._lock:
            res = res or self.synced
            marked = set(res.deletion_marked) | set(res.partial)
            marks = ops.read_markers(self.bucket, sorted(marked), DELETION_MARK_FILENAME, self.fetcher.map)
            now = self.now()
            deleted = set()
            for u, mark in sorted(marks.items()):
                if now - mark.deletion_time <= self.cfg.delete_delay:
                    continue
                try:
                    ops.delete(self.bucket, u)
                except Exception as e:  # noqa: BLE001
                    self.metrics.clean_failures.inc()
                    log.warning("failed to delete block; will retry in the next iteration",
                                extra={"block": u, "err": str(e)})
                    continue
                self.metrics.cleaned.inc()
                deleted.add(u)
                log.info("deleted block marked for deletion", extra={"block": u})
            # A partial block is deleted once its mark is older than the delete delay (above; a
            # delete that stopped after meta.json), or, marked or not, once nothing in it changed
            # for 48h (an aborted upload; Thanos' only rule for blocks without meta.json).
            for u in sorted(set(res.partial) - deleted):
                if now - self._last_modified(u) <= PARTIAL_UPLOAD_THRESHOLD_AGE:
                    continue
                self.metrics.partial_deletes.inc()
                log.info("found partially uploaded block; deleting", extra={"block": u})
                try:
                    ops.delete(self.bucket, u)
                except Exception as e:  # noqa: BLE001
                    log.warning("failed to delete aborted partial upload; will retry in next iteration",
                                extra={"block": u, "err": str(e)})

    def _last_modified(self, u: str) -> float:
        from ..tsdb import ulid as _ulid

        newest = 0.0
        try:
            for key in self.bucket.iter(f"{u}/", recursive=True):
                if not key.endswith("/"):
                    newest = max(newest, self.bucket.attributes(key).last_modified.timestamp())
        except Exception as e:  # noqa: BLE001
            log.warning("failed to get last modified time for block; falling back to block creation time",
                        extra={"block": u, "err": str(e)})
            newest = 0.0
        return newest or _ulid.timestamp_ms(u) / 1000.0

    # -- compaction ---------------------------------------------------------------------------------
    def compact(self) -> int:
        """Compact until no group has work; returns the number of blocks written."""
        written = 0
        while True:
            res = self.sync()
            self.garbage_collect(res)
            # A block marked for deletion is on its way out (compacted, expired or outdated): never
            # compact it again, or retention-expired data would come back in a new block.
            todo = [g for g in groups(m for u, m in res.metas.items() if u not in res.deletion_marked)
                    if len(g.metas) > 1]
            self._update_todo(todo)
            if not todo:
                return written
            did = 0
            if self.cfg.concurrency > 1 and len(todo) > 1:
                with ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix="compact-group") as pool:
                    outcomes = list(pool.map(self._compact_group_logged, todo))
            else:
                outcomes = [self._compact_group_logged(g) for g in todo]
            for n in outcomes:
                did += n
            written += did
            if not did:
                return written

    def _compact_group_logged(self, g: Group) -> int:
        try:
            return self.compact_group(g)
        except (HaltError, RetryError):
            self.metrics.group_failures.labels(_res_label(g.resolution)).inc()
            raise

    def _update_todo(self, todo: list[Group]) -> None:
        n = blocks = 0
        for g in todo:
            p = plan(g.metas, self.cfg.ranges, self.no_compact)
            if p:
                n += 1
                blocks += len(p)
        self.metrics.todo_compactions.set(n)
        self.metrics.todo_compaction_blocks.set(blocks)

    def compact_group(self, g: Group) -> int:
        """Plan and run one compaction in the group; returns 1 if a block was written."""
        over = overlaps([m for m in g.metas if m.ulid not in self.no_compact])
        if over and not self.cfg.vertical:
            raise HaltError(
                f"pre compaction overlap check: overlaps found while gathering blocks in group {g.key} "
                f"(labels {g.labels}, resolution {g.resolution}): {describe_overlaps(over)}. These are usually "
                "HA replicas uploaded without a replica label, or the same data uploaded twice. Fix: set "
                "--deduplication.replica-label to merge replicas, or enable vertical compaction, or mark the "
                "unwanted blocks with `pythanos tools bucket mark --marker=no-compact-mark.json` (or "
                "`tools bucket verify --repair --issues=overlapped_blocks`), then restart the compactor")
        if over and g.resolution != RES_RAW:
            # Downsampled data cannot be merged vertically: set the overlapping blocks aside.
            for s in over:
                for m in s[1:]:
                    ops.mark_no_compact(self.bucket, m.ulid, "downsample-vertical-compaction",
                                        f"overlaps with {s[0].ulid} at resolution {g.resolution}",
                                        self.metrics.mark(NO_COMPACT_MARK_FILENAME, "downsample-vertical-compaction"))
                    self.no_compact[m.ulid] = True
        to_compact = plan(g.metas, self.cfg.ranges, self.no_compact)
        if not to_compact:
            return 0
        ids = [m.ulid for m in to_compact]
        log.info("compaction available and planned", extra={"group": g.key, "plan": " ".join(ids)})
        t0 = time.monotonic()
        work = os.path.join(self.compact_dir, g.key.replace("@", "-"))
        os.makedirs(work, exist_ok=True)
        dirs = []
        try:
            def fetch(m) -> str:
                d = os.path.join(work, m.ulid)
                try:
                    ops.download(self.bucket, m.ulid, d)
                except FileNotFoundError:
                    raise RetryError(f"download block {m.ulid}: it disappeared from the bucket") from None
                except Exception as e:  # noqa: BLE001
                    raise RetryError(f"download block {m.ulid}: {e}") from e
                return d

            if self.cfg.fetch_concurrency > 1 and len(to_compact) > 1:  # --compact.blocks-fetch-concurrency
                with ThreadPoolExecutor(self.cfg.fetch_concurrency, thread_name_prefix="block-fetch") as pool:
                    dirs = list(pool.map(fetch, to_compact))
            else:
                dirs = [fetch(m) for m in to_compact]
            if self.cfg.skip_out_of_order:
                from ..tsdb.compact import out_of_order_series

                bad = [m for m, d in zip(to_compact, dirs) if out_of_order_series(d)]
                for m in bad:
                    ops.mark_no_compact(self.bucket, m.ulid, "block-index-out-of-order-chunk",
                                        "block has series with out-of-order chunks; left out of compaction "
                                        "(--compact.skip-block-with-out-of-order-chunks)",
                                        self.metrics.mark(NO_COMPACT_MARK_FILENAME, "block-index-out-of-order-chunk"))
                    self.no_compact[m.ulid] = True
                if bad:
                    return 1  # planned again without them at the next round
            log.info("downloaded blocks; compacting", extra={"group": g.key, "plan": " ".join(ids),
                                                             "duration": f"{time.monotonic() - t0:.3f}s"})
            vertical = bool(overlaps(to_compact))
            thanos = ThanosMeta(labels=dict(g.labels), downsample_resolution=g.resolution, source="compactor")
            meta = self._compact_dirs(dirs, work, thanos, g)
            if meta is None:
                log.info("no compacted blocks, deleting source blocks", extra={"group": g.key, "blocks": " ".join(ids)})
                for m in to_compact:
                    if m.stats.num_samples == 0:
                        ops.mark_for_deletion(self.bucket, m.ulid, "source of compacted block",
                                              self.metrics.mark(DELETION_MARK_FILENAME, ""))
                return 1
            out = os.path.join(work, meta.ulid)
            others = [m for m in g.metas if m.ulid not in ids]
            if not self.cfg.vertical:
                bad = overlaps([meta, *others])
                if bad:
                    raise HaltError(f"resulted compacted block {meta.ulid} overlaps with something: "
                                    f"{describe_overlaps(bad)}")
            self.metrics.group_compactions.labels(_res_label(g.resolution)).inc()
            if vertical:
                self.metrics.group_vertical.labels(_res_label(g.resolution)).inc()
            log.info("compacted blocks", extra={"new": meta.ulid, "blocks": " ".join(ids),
                                                "overlapping_blocks": str(vertical).lower(),
                                                "duration": f"{time.monotonic() - t0:.3f}s"})
            try:
                ops.upload(self.bucket, out, self.cfg.hash_func)
            except Exception as e:  # noqa: BLE001
                raise RetryError(f"upload of {meta.ulid} failed: {e}") from e
            log.info("uploaded block", extra={"result_block": meta.ulid})
            for m in to_compact:
                try:
                    ops.mark_for_deletion(self.bucket, m.ulid, "source of compacted block",
                                          self.metrics.mark(DELETION_MARK_FILENAME, ""))
                except Exception as e:  # noqa: BLE001
                    raise RetryError(f"mark old block {m.ulid} for deletion: {e}") from e
            log.info("finished compacting blocks", extra={"result_block": meta.ulid, "source_blocks": " ".join(ids),
                                                         "duration": f"{time.monotonic() - t0:.3f}s"})
            return 1
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _compact_dirs(self, dirs, work: str, thanos: ThanosMeta, g: Group):
        from ..tsdb.compact import compact_blocks
        from ..tsdb.errors import CorruptBlockError

        func = "penalty" if self.cfg.dedup_func == "penalty" else "chain"
        total = sum(m.stats.num_series for m in g.metas if os.path.join(work, m.ulid) in dirs)
        last = [time.monotonic()]

        def progress(done: int) -> None:
            if time.monotonic() - last[0] >= 10:
                last[0] = time.monotonic()
                log.info("compaction progress", extra={"group": g.key, "series_done": done, "series_total": total})

        from ..tsdb.index import IndexWriterError

        try:
            return compact_blocks(dirs, work, thanos=thanos, func=func, progress=progress)
        except (CorruptBlockError, IndexWriterError) as e:
            raise HaltError(f"compact blocks {[os.path.basename(d) for d in dirs]}: {e}") from e

    # -- downsampling -------------------------------------------------------------------------------
    def downsample(self) -> int:
        """Two passes (the second downsamples the 5m blocks the first one wrote); returns blocks written."""
        n = 0
        for i in range(2):
            if i:
                log.info("start second pass of downsampling")
            res = self.sync()
            metas = {u: m for u, m in res.metas.items() if u not in self.no_downsample}
            n += self._downsample_pass(metas)
        return n

    def downsample_todo(self, metas: dict) -> list:
        covered = {RES_5M: set(), RES_1H: set()}
        for m in metas.values():
            if m.resolution in covered:
                covered[m.resolution].update(m.compaction.sources)
        out = []
        for u in sorted(metas):
            m = metas[u]
            if m.resolution == RES_RAW:
                target, need = RES_5M, DOWNSAMPLE_RANGE_5M
            elif m.resolution == RES_5M:
                target, need = RES_1H, DOWNSAMPLE_RANGE_1H
            else:
                continue
            if all(s in covered[target] for s in m.compaction.sources):
                continue
            if m.max_time - m.min_time < need:
                continue
            out.append((m, target))
        return out

    def _downsample_pass(self, metas: dict) -> int:
        todo = self.downsample_todo(metas)
        self.metrics.todo_downsample.set(len(todo))
        if not todo:
            return 0
        os.makedirs(self.downsample_dir, exist_ok=True)
        if self.cfg.downsample_concurrency > 1 and len(todo) > 1:
            with ThreadPoolExecutor(self.cfg.downsample_concurrency, thread_name_prefix="downsample") as pool:
                return sum(pool.map(lambda a: self._downsample_one(*a), todo))
        return sum(self._downsample_one(m, target) for m, target in todo)

    def _downsample_one(self, m, target: int) -> int:
        from ..tsdb.block import BlockReader
        from ..tsdb.downsample import downsample_block

        label = _res_label(m.resolution)
        self.metrics.downsamples.labels(label).inc()
        src = os.path.join(self.downsample_dir, m.ulid)
        out_dir = os.path.join(self.downsample_dir, f"{m.ulid}.out")
        t0 = time.monotonic()
        try:
            try:
                ops.download(self.bucket, m.ulid, src)
            except Exception as e:  # noqa: BLE001
                raise RetryError(f"download block {m.ulid} for downsampling: {e}") from e
            os.makedirs(out_dir, exist_ok=True)
            total = m.stats.num_series
            last = [time.monotonic()]

            def progress(done: int, _total: int = total) -> None:
                if time.monotonic() - last[0] >= 10:
                    last[0] = time.monotonic()
                    log.info("downsampling progress", extra={"block": m.ulid, "series_done": done,
                                                             "series_total": _total})

            with BlockReader.open_dir(src) as reader:
                out = downsample_block(reader, out_dir, target, progress=progress)
            if out is None:
                log.info("downsampled block is empty; nothing uploaded", extra={"block": m.ulid})
                return 0
            try:
                ops.upload(self.bucket, os.path.join(out_dir, out.ulid), self.cfg.hash_func)
            except Exception as e:  # noqa: BLE001
                raise RetryError(f"upload downsampled block {out.ulid}: {e}") from e
            self.metrics.downsample_duration.labels(label).observe(time.monotonic() - t0)
            log.info("downsampled block", extra={"from": m.ulid, "to": out.ulid, "resolution": target,
                                                 "duration": f"{time.monotonic() - t0:.3f}s"})
            return 1
        except RetryError:
            self.metrics.downsample_failures.labels(label).inc()
            raise
        except Exception as e:
            self.metrics.downsample_failures.labels(label).inc()
            raise HaltError(f"downsampling block {m.ulid} to resolution {target}: {e}") from e
        finally:
            shutil.rmtree(src, ignore_errors=True)
            shutil.rmtree(out_dir, ignore_errors=True)

    def background_cleanup(self) -> None:
        """Retention and deletion of marked blocks, independent of the compaction backlog."""
        res = self.sync()
        self.apply_retention(res)
        self.clean(res)

    # -- one iteration ------------------------------------------------------------------------------
    def iteration(self) -> None:
        shutil.rmtree(self.compact_dir, ignore_errors=True)
        shutil.rmtree(self.downsample_dir, ignore_errors=True)
        res = self.sync()
        self.apply_retention(res)
        self.clean(res)
        self.compact()
        if self.cfg.downsampling:
            log.info("start first pass of downsampling")
            self.downsample()
            log.info("downsampling iterations done")
        else:
            log.info("downsampling was explicitly disabled")
        res = self.sync()
        self.metrics.todo_deletion.set(0)
        self.apply_retention(res)
        self.clean(res)
        self.metrics.iterations.inc()
