"""One TSDB per tenant (Thanos ``pkg/receive/multitsdb.go``): opened on a tenant's first write or at
start for every tenant directory, compacted into blocks, shipped, pruned, and served as one StoreAPI.

A tenant's external labels are ``--label`` plus ``<tenant-label>=<tenant>`` plus its hashring's
``external_labels``. The StoreAPI announces one label set per tenant and answers with every series'
labels complete (the tenant's external labels merged in), as Thanos' local proxy over its TSDBStores.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Optional, Sequence

from ..storeapi.server import InvalidArgument, Store, Unavailable
from ..storeapi.types import (FLOAT_HISTOGRAM, HISTOGRAM, MAX_TIME, MIN_TIME, XOR, LabelNamesRequest, LabelsResult, LabelValuesRequest,
                              Series, SeriesRequest, StoreInfo)

log = logging.getLogger(__name__)

__all__ = ["TenantOptions", "Tenant", "Tenants", "TenantsStore", "check_tenant"]


def check_tenant(tenant: str) -> Optional[str]:
    """Why ``tenant`` cannot name a directory (None: it can). Thanos only checks
    ``tenant == path.Base(tenant)``, which lets ``..`` through; we refuse it and friends."""
    if not tenant or tenant in (".", "..") or "/" in tenant or "\\" in tenant or "\x00" in tenant:
        return "tenant name not valid"
    return None


@dataclass(frozen=True)
class TenantOptions:
    base_dir: str
    labels: dict[str, str]
    tenant_label: str = "tenant_id"
    chunk_range_ms: int = 2 * 3600 * 1000
    retention_ms: int = 15 * 86400 * 1000
    ooo_window_ms: int = 0
    wal_compression: bool = True
    bucket: object = None
    allow_out_of_order_uploads: bool = False
    skip_corrupted_blocks: bool = False
    hash_func: str = ""
    max_exemplars: int = 0  # --tsdb.max-exemplars: per tenant, 0 = exemplars not kept


class Tenant:
    """A tenant's TSDB, external labels and shipper."""

    def __init__(self, name: str, db, ext_labels: dict[str, str], shipper=None) -> None:
        self.name = name
        self.db = db
        self.ext_labels = ext_labels
        self.ext = tuple(sorted(ext_labels.items()))
        self.shipper = shipper
        self.last_write = time.monotonic()


class Tenants:
    """Tenant name -> :class:`Tenant`; TSDB work runs on ``executor`` (the event loop stays free)."""

    def __init__(self, opts: TenantOptions, *, registry=None, executor: Optional[ThreadPoolExecutor] = None,
                 hashring_labels: Callable[[str], dict[str, str]] = lambda tenant: {}) -> None:
        self.opts = opts
        self.registry = registry
        self.executor = executor or ThreadPoolExecutor(max_workers=4, thread_name_prefix="tsdb")
        self.hashring_labels = hashring_labels
        self._tenants: dict[str, Tenant] = {}
        self._opening: dict[str, asyncio.Future] = {}
        self._lock = threading.Lock()
        os.makedirs(opts.base_dir, exist_ok=True)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def names_on_disk(self) -> list[str]:
        return sorted(e.name for e in os.scandir(self.opts.base_dir) if e.is_dir() and check_tenant(e.name) is None
                      and not e.name.startswith("."))

    def ext_labels_for(self, tenant: str) -> dict[str, str]:
        ext = dict(self.opts.labels)
        ext[self.opts.tenant_label] = tenant
        ext.update(self.hashring_labels(tenant))
        return ext

    def _open(self, tenant: str) -> Tenant:
        from ..tsdb.db import TSDB

        path = os.path.join(self.opts.base_dir, tenant)
        db = TSDB.open(path, chunk_range_ms=self.opts.chunk_range_ms, retention_ms=self.opts.retention_ms,
                       ooo_window_ms=self.opts.ooo_window_ms,
                       wal_compression="snappy" if self.opts.wal_compression else None,
                       registry=self.registry, metric_labels={"tenant": tenant},
                       max_exemplars=self.opts.max_exemplars)
        ext = self.ext_labels_for(tenant)
        shipper = None
        if self.opts.bucket is not None:
            from ..block.shipper import Shipper

            shipper = Shipper(self.opts.bucket, path, labels=lambda t=tenant: self.ext_labels_for(t),
                              source="receive", allow_out_of_order_uploads=self.opts.allow_out_of_order_uploads,
                              skip_corrupted_blocks=self.opts.skip_corrupted_blocks, registry=self.registry,
                              metric_labels={"tenant": tenant})
        log.info("TSDB is now ready", extra={"tenant": tenant, "dir": path})
        return Tenant(tenant, db, ext, shipper)

    async def get(self, tenant: str) -> Tenant:
        """The tenant's TSDB, opened (WAL replayed) on first use; concurrent first writes wait for one open."""
        t = self._tenants.get(tenant)
        if t is not None:
            return t
        fut = self._opening.get(tenant)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._opening[tenant] = loop.run_in_executor(self.executor, self._open, tenant)
            try:
                t = await fut
            finally:
                self._opening.pop(tenant, None)
            with self._lock:
                self._tenants[tenant] = t
            return t
        return await asyncio.shield(fut)

    async def open_existing(self) -> None:
        """Open every tenant found on disk (their WAL replayed), as Thanos does at start."""
        for name in self.names_on_disk():
            await self.get(name)

    def all(self) -> list[Tenant]:
        with self._lock:
            return sorted(self._tenants.values(), key=lambda t: t.ext)

    def refresh_labels(self) -> None:
        """Recompute external labels (the hashring's ``external_labels`` may have changed)."""
        for t in self.all():
            t.ext_labels = self.ext_labels_for(t.name)
            t.ext = tuple(sorted(t.ext_labels.items()))

    async def compact(self) -> None:
        loop = asyncio.get_running_loop()
        for t in self.all():
            try:
                await loop.run_in_executor(self.executor, t.db.compact)
            except Exception as e:  # noqa: BLE001
                log.error("compaction failed", extra={"tenant": t.name, "err": f"{type(e).__name__}: {e}"})

    async def ship(self) -> None:
        for t in self.all():
            if t.shipper is None:
                continue
            try:
                n = await t.shipper.sync_async()
                if n:
                    log.info("uploaded blocks", extra={"tenant": t.name, "uploaded": n})
            except Exception as e:  # noqa: BLE001
                log.warning("upload failed", extra={"tenant": t.name, "err": f"{type(e).__name__}: {e}"})

    async def flush(self) -> None:
        """Cut every head into blocks (shutdown with a bucket: nothing stays only in a WAL)."""
        loop = asyncio.get_running_loop()
        for t in self.all():
            await loop.run_in_executor(self.executor, t.db.flush)

    async def prune(self, idle_s: float) -> None:
        """Thanos' tenant lifecycle: a tenant without writes for ``idle_s`` (``--tsdb.retention``) is
        flushed, shipped and removed from disk once nothing of it is left unshipped."""
        if idle_s <= 0:
            return
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        for t in self.all():
            if now - t.last_write < idle_s:
                continue
            await loop.run_in_executor(self.executor, t.db.flush)
            if t.shipper is not None:
                await t.shipper.sync_async()
                if set(b.ulid for b in t.db.blocks()) - t.shipper.uploaded_blocks():
                    continue  # something is not in the bucket yet: keep it
            with self._lock:
                self._tenants.pop(t.name, None)
            await loop.run_in_executor(self.executor, t.db.close)
            await loop.run_in_executor(self.executor, shutil.rmtree, t.db.dir)
            log.info("pruned tenant", extra={"tenant": t.name})

    def close(self) -> None:
        for t in self.all():
            try:
                t.db.close()
            finally:
                if t.shipper is not None:
                    t.shipper.close()
        self.executor.shutdown(wait=True)


#: Prometheus' chunk encodings (chunkenc: XOR 1, histogram 2, float histogram 3) -> Thanos' storepb numbers
_TO_THANOS = {1: XOR, 2: HISTOGRAM, 3: FLOAT_HISTOGRAM}


def _split_external(matchers, ext: dict[str, str]):
    """(matches, remaining matchers): matchers on the tenant's external labels are checked against
    them and dropped (Thanos ``matchesExternalLabels``)."""
    remaining = []
    for m in matchers:
        v = ext.get(m.name)
        if v is None:
            remaining.append(m)
        elif not m.matches(v):
            return False, []
    return True, remaining


def _merge_ext(labels: Sequence[tuple[str, str]], ext: dict[str, str], drop: set[str]) -> tuple:
    """Series labels with the external labels over them (Thanos ``ExtendSortedLabels``), minus ``drop``."""
    d = {n: v for n, v in labels if n not in drop}
    for n, v in ext.items():
        if n not in drop:
            d[n] = v
    return tuple(sorted(d.items()))


class TenantsStore(Store):
    """StoreAPI over every tenant's TSDB: one label set per tenant, complete labels, sorted."""

    presorted = True

    def __init__(self, tenants: Tenants, ready: Callable[[], Optional[str]] = lambda: None) -> None:
        self.tenants = tenants
        self.ready = ready

    def _check_ready(self) -> None:
        why = self.ready()
        if why is not None:
            raise Unavailable(f"receiver not ready: {why}")

    async def info(self) -> StoreInfo:
        self._check_ready()
        ts = self.tenants.all()
        if not ts:
            return StoreInfo(min_time=MAX_TIME, max_time=MIN_TIME, label_sets=[], component_type="receive",
                             supports_without_replica_labels=True, tsdb_infos=[], exemplars=(0, 0))
        infos = []
        for t in ts:
            infos.append((t.ext, t.db.min_time, t.db.max_time))
        lo = min(i[1] for i in infos)
        return StoreInfo(min_time=lo, max_time=MAX_TIME, label_sets=[list(t.ext) for t in ts],
                         component_type="receive", supports_without_replica_labels=True,
                         tsdb_infos=[(e, a, MAX_TIME) for e, a, _ in infos], exemplars=(0, 0))

    def _selected(self, matchers) -> list[tuple[Tenant, list]]:
        out = []
        for t in self.tenants.all():
            ok, rest = _split_external(matchers, t.ext_labels)
            if ok:
                out.append((t, rest))
        return out

    async def series(self, req: SeriesRequest) -> AsyncIterator:
        self._check_ready()
        drop = set(req.without_replica_labels or ())
        loop = asyncio.get_running_loop()
        merged: list[tuple[tuple, list]] = []
        for t, rest in self._selected(req.matchers):
            if not rest:
                raise InvalidArgument("no matchers specified (excluding external labels)")
            found = await loop.run_in_executor(
                self.tenants.executor, lambda: list(t.db.series(rest, req.min_time, req.max_time,
                                                                skip_chunks=req.skip_chunks)))
            for labels, chunks in found:
                merged.append((_merge_ext(labels, t.ext_labels, drop), chunks))
        merged.sort(key=lambda s: s[0])
        for labels, chunks in merged:
            yield Series(labels, [] if req.skip_chunks else [(a, z, _TO_THANOS[e], d) for a, z, e, d in chunks])

    async def label_names(self, req: LabelNamesRequest) -> LabelsResult:
        self._check_ready()
        loop = asyncio.get_running_loop()
        names: set[str] = set()
        for t, rest in self._selected(req.matchers):
            got = await loop.run_in_executor(self.tenants.executor,
                                             lambda: t.db.label_names(rest, req.start, req.end))
            if got:
                names.update(got)
                names.update(t.ext_labels)
        return LabelsResult(sorted(names))

    async def label_values(self, req: LabelValuesRequest) -> LabelsResult:
        self._check_ready()
        loop = asyncio.get_running_loop()
        values: set[str] = set()
        for t, rest in self._selected(req.matchers):
            if req.label in t.ext_labels:
                probe = await loop.run_in_executor(self.tenants.executor,
                                                   lambda: t.db.label_names(rest, req.start, req.end))
                if probe:
                    values.add(t.ext_labels[req.label])
                continue
            got = await loop.run_in_executor(self.tenants.executor,
                                             lambda: t.db.label_values(req.label, rest, req.start, req.end))
            values.update(got)
        return LabelsResult(sorted(values))

