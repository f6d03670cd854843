"""The shipper: upload each new TSDB block of a Prometheus to object storage, once (Thanos ``pkg/shipper``).

Semantics, as in Thanos' ``Shipper.Sync`` (verified in ``pkg/shipper/shipper.go``):

* block directories are the entries of the TSDB dir whose names are ULIDs; their ``meta.json`` is
  read and they are handled oldest ``minTime`` first;
* a block listed in the state file is skipped (and stays listed while its directory exists);
  a block with ``stats.numSamples == 0`` is skipped; a block of compaction level > 1 is skipped
  unless ``upload_compacted``; a block whose ``<ULID>/meta.json`` already exists in the bucket is
  marked uploaded without uploading;
* with ``upload_compacted``, a compacted block is first checked for time overlap against every
  bucket block with the same external labels (loaded lazily, once per sync); an overlap is an
  error unless ``allow_out_of_order_uploads``;
* an upload hard-links ``chunks/*``, ``index`` and ``meta.json`` into
  ``<tsdb>/thanos/upload/<ULID>/`` and writes a new ``meta.json`` there (through a temporary file
  and a rename, so the link is replaced and Prometheus' own meta.json is never written) with
  ``thanos.labels`` = the block's labels plus the current external labels, ``thanos.source``
  (``sidecar``), ``thanos.segment_files``, downsample resolution 0; then
  :func:`pythanos.tsdb.upload.upload_block` uploads chunks, index and meta.json **last** (a
  failure never leaves a meta.json without its files) and the temporary directory is removed;
* an upload error stops the sync (later blocks wait for the next one) unless
  ``allow_out_of_order_uploads``, in which case the shipper goes on with the next block;
* the state file ``thanos.shipper.json`` in the TSDB dir is ``{"version": 1, "uploaded": [...]}``,
  tab-indented like Go's ``json.Encoder`` (``null`` when empty), written atomically (tmp file,
  fsync, rename, fsync of the directory). A missing or unreadable state file means "start empty"
  (the bucket check then prevents re-uploads). We write it after every sync, also after a failed
  one, so blocks uploaded before the failure are remembered (Thanos skips the write on an
  upload error and relies on the bucket check; the end result is the same).

Metrics (Thanos' names): ``thanos_shipper_dir_syncs_total``, ``thanos_shipper_dir_sync_failures_total``,
``thanos_shipper_uploads_total``, ``thanos_shipper_upload_failures_total``,
``thanos_shipper_corrupted_blocks_total``, ``thanos_shipper_upload_compacted_done``. One difference:
Thanos counts ``upload_failures`` only in out-of-order mode; we count every failed block upload.
"""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..objstore.bucket import Bucket, is_obj_not_found
from ..tsdb import ulid as _ulid
from ..tsdb.meta import META_FILENAME, BlockMeta, ThanosMeta, read_meta, write_meta
from ..tsdb.upload import upload_block

log = logging.getLogger(__name__)

__all__ = ["Shipper", "ShipperError", "ShipperState", "read_state", "write_state", "DEFAULT_META_FILENAME",
           "SOURCE_SIDECAR"]

DEFAULT_META_FILENAME = "thanos.shipper.json"
STATE_VERSION1 = 1
SOURCE_SIDECAR = "sidecar"
UPLOAD_DIR = os.path.join("thanos", "upload")


class ShipperError(Exception):
    """A sync could not finish; the message names the block and the cause."""


@dataclass
class ShipperState:
    version: int = STATE_VERSION1
    uploaded: list[str] | None = None


def read_state(path: str | os.PathLike) -> ShipperState:
    """Read ``thanos.shipper.json``; raises ``OSError`` / ``ValueError`` (bad JSON or version)."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        d = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"failed to parse {path} as JSON: {e}: {raw[:200]!r}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: not a JSON object")
    if d.get("version") != STATE_VERSION1:
        raise ValueError(f"{path}: unexpected meta file version {d.get('version')!r}")
    up = d.get("uploaded") or []
    if not isinstance(up, list) or not all(isinstance(u, str) for u in up):
        raise ValueError(f"{path}: 'uploaded' is not a list of block IDs")
    return ShipperState(STATE_VERSION1, list(up))


def write_state(path: str | os.PathLike, state: ShipperState) -> None:
    """Write the state file atomically, byte-identical to Thanos' ``WriteMetaFile``."""
    path = os.fspath(path)
    obj = {"version": state.version, "uploaded": list(state.uploaded) if state.uploaded else None}
    data = (json.dumps(obj, indent="\t") + "\n").encode()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(src, dst)


def hardlink_block(src: Path, dst: Path) -> None:
    """Link ``chunks/*``, ``meta.json`` and ``index`` of ``src`` into ``dst`` (Thanos ``hardlinkBlock``)."""
    (dst / "chunks").mkdir(parents=True, exist_ok=True)
    files = [Path("chunks") / p.name for p in sorted((src / "chunks").iterdir())]
    files += [Path(META_FILENAME), Path("index")]
    for rel in files:
        _link_or_copy(src / rel, dst / rel)


class _Families:
    """The shipper's metric families in one registry, with ``labelnames`` (the receiver's shippers,
    one per tenant, share them with a ``tenant`` label, as Thanos wraps each tenant's registerer)."""

    def __init__(self, registry: CollectorRegistry, labelnames: tuple[str, ...]):
        kw = dict(registry=registry, labelnames=labelnames)
        self.labelnames = labelnames
        self.dir_syncs = Counter("thanos_shipper_dir_syncs_total", "Total number of dir syncs", **kw)
        self.dir_sync_failures = Counter("thanos_shipper_dir_sync_failures_total",
                                         "Total number of failed dir syncs", **kw)
        self.uploads = Counter("thanos_shipper_uploads_total", "Total number of uploaded blocks", **kw)
        self.upload_failures = Counter("thanos_shipper_upload_failures_total",
                                       "Total number of block upload failures", **kw)
        self.corrupted_blocks = Counter("thanos_shipper_corrupted_blocks_total",
                                        "Total number of corrupted blocks", **kw)
        self.upload_compacted_done = Gauge("thanos_shipper_upload_compacted_done",
                                           "If 1 it means shipper uploaded all compacted blocks from the filesystem.",
                                           **kw)


_FAMILIES: "weakref.WeakKeyDictionary[CollectorRegistry, _Families]" = weakref.WeakKeyDictionary()
_FAMILIES_LOCK = threading.Lock()


class _Metrics:
    """One shipper's children of the (shared) families; ``labels`` empty for a lone shipper."""

    def __init__(self, registry: CollectorRegistry, labels: dict[str, str] | None = None):
        labels = labels or {}
        with _FAMILIES_LOCK:
            fam = _FAMILIES.get(registry)
            if fam is None:
                fam = _FAMILIES[registry] = _Families(registry, tuple(sorted(labels)))
        if set(fam.labelnames) != set(labels):
            raise ValueError(f"shipper metrics in this registry are labelled {fam.labelnames}, not {sorted(labels)}")
        for name in ("dir_syncs", "dir_sync_failures", "uploads", "upload_failures", "corrupted_blocks",
                     "upload_compacted_done"):
            family = getattr(fam, name)
            setattr(self, name, family.labels(**labels) if labels else family)


class _OverlapChecker:
    """Bucket blocks with the shipper's labels, loaded on first use (Thanos ``lazyOverlapChecker``)."""

    def __init__(self, bucket: Bucket, labels: dict[str, str]):
        self.bucket = bucket
        self.labels = labels
        self.metas: list[BlockMeta] | None = None

    def _load(self) -> list[BlockMeta]:
        out = []
        for key in self.bucket.iter(""):
            name = key.rstrip("/")
            if not key.endswith("/") or not _is_ulid(name):
                continue
            try:
                raw = self.bucket.get(f"{name}/{META_FILENAME}")
            except Exception as e:  # noqa: BLE001
                if is_obj_not_found(e):
                    continue  # partial upload: ignored, as readers do
                raise
            m = BlockMeta.from_json(raw, block=name)
            if m.labels == self.labels:
                out.append(m)
        return out

    def check(self, meta: BlockMeta) -> None:
        if self.metas is None:
            self.metas = self._load()
        hits = [m for m in self.metas
                if m.ulid != meta.ulid and m.min_time < meta.max_time and meta.min_time < m.max_time]
        if hits:
            desc = ", ".join(f"{m.ulid} [{m.min_time}, {m.max_time})" for m in hits)
            raise ShipperError(f"found overlap, cannot upload compacted block {meta.ulid} "
                               f"[{meta.min_time}, {meta.max_time}): overlaps bucket blocks {desc}")


def _is_ulid(name: str) -> bool:
    try:
        _ulid.parse(name)
        return True
    except Exception:  # noqa: BLE001
        return False


class Shipper:
    """Ships the blocks of ``tsdb_dir`` to ``bucket``.

    ``labels`` returns the current external labels (read from Prometheus by the sidecar).
    ``sync()`` is blocking (bucket calls); ``await sync_async()`` runs it on the shipper's own
    worker thread and ``await run(interval)`` syncs forever. ``on_uploaded(ulid)`` is called after
    each block upload. ``metric_labels`` label this shipper's metrics (e.g. ``{"tenant": ...}``:
    the shippers of one registry share the families, all with the same label names).
    """

    def __init__(self, bucket: Bucket, tsdb_dir: str | os.PathLike, *, labels: Callable[[], dict[str, str]],
                 source: str = SOURCE_SIDECAR, upload_compacted: bool = False,
                 meta_file_name: str = DEFAULT_META_FILENAME, allow_out_of_order_uploads: bool = False,
                 skip_corrupted_blocks: bool = False, registry: CollectorRegistry | None = None,
                 on_uploaded: Callable[[str], None] | None = None, metric_labels: dict[str, str] | None = None):
        self.bucket = bucket
        self.dir = Path(tsdb_dir)
        self.labels = labels
        self.source = source
        self.upload_compacted = upload_compacted
        self.state_path = self.dir / meta_file_name
        self.allow_out_of_order_uploads = allow_out_of_order_uploads
        self.skip_corrupted_blocks = skip_corrupted_blocks
        self.metrics = _Metrics(registry if registry is not None else CollectorRegistry(), metric_labels)
        self.on_uploaded = on_uploaded
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------------------ state

    def uploaded_blocks(self) -> set[str]:
        """Block IDs recorded in the state file (empty when it is missing or unreadable)."""
        try:
            return set(read_state(self.state_path).uploaded or [])
        except (OSError, ValueError):
            return set()

    def _read_state(self) -> set[str]:
        try:
            return set(read_state(self.state_path).uploaded or [])
        except FileNotFoundError:
            log.info("no meta file found, creating empty meta data to write later",
                     extra={"file": str(self.state_path)})
        except (OSError, ValueError) as e:
            log.error("failed to read meta file, creating empty meta data to write later",
                      extra={"file": str(self.state_path), "err": str(e)})
        return set()

    # ------------------------------------------------------------------------------ scan

    def block_metas_from_oldest(self) -> tuple[list[BlockMeta], list[str]]:
        """Metas of the ULID-named block dirs, oldest minTime first, and the names that failed to read."""
        metas: list[BlockMeta] = []
        failed: list[str] = []
        for entry in sorted(os.scandir(self.dir), key=lambda e: e.name):
            if not _is_ulid(entry.name):
                continue
            try:
                if not entry.is_dir():
                    continue
                metas.append(read_meta(entry.path))
            except Exception as e:  # noqa: BLE001
                if not self.skip_corrupted_blocks:
                    raise ShipperError(f"read metadata for block {entry.path}: {e}") from e
                log.error("read metadata for block", extra={"block": entry.path, "err": str(e)})
                failed.append(entry.name)
        metas.sort(key=lambda m: m.min_time)
        return metas, failed

    # ------------------------------------------------------------------------------ sync

    def _remove_stale_upload_dirs(self) -> None:
        """Hard links left by an upload that was killed: nothing is uploading now (we hold the
        lock), so every directory under thanos/upload is stale and would pin deleted blocks."""
        updir = self.dir / UPLOAD_DIR
        if updir.is_dir():
            for d in updir.iterdir():
                shutil.rmtree(d, ignore_errors=True)

    def sync(self) -> int:
        """One pass over the TSDB dir; returns the number of blocks uploaded. Raises ShipperError."""
        with self._lock:
            return self._sync()

    def _sync(self) -> int:
        self._remove_stale_upload_dirs()
        has_uploaded = self._read_state()
        done: set[str] = set()
        uploaded = 0
        upload_errs = 0
        metas: list[BlockMeta] = []
        failed: list[str] = []
        scanned = ok = False
        try:
            metas, failed = self.block_metas_from_oldest()
            scanned = True
            labels = dict(self.labels() or {})
            checker = _OverlapChecker(self.bucket, labels)
            for m in metas:
                if m.ulid in has_uploaded:
                    done.add(m.ulid)
                    continue
                if m.stats.num_samples == 0:
                    log.debug("ignoring empty block", extra={"block": m.ulid})
                    continue
                if m.compaction.level > 1 and not self.upload_compacted:
                    continue
                try:
                    exists = self.bucket.exists(f"{m.ulid}/{META_FILENAME}")
                except Exception as e:  # noqa: BLE001
                    raise ShipperError(f"check exists {m.ulid}/{META_FILENAME}: {e}") from e
                if exists:
                    done.add(m.ulid)
                    continue
                if not labels:
                    raise ShipperError(f"upload {m.ulid}: empty external labels are not allowed for Thanos block.")
                try:
                    if m.compaction.level > 1 and not self.allow_out_of_order_uploads:
                        checker.check(m)
                    self._upload(m, labels)
                except Exception as e:  # noqa: BLE001
                    self.metrics.upload_failures.inc()
                    if not self.allow_out_of_order_uploads:
                        raise ShipperError(f"upload {m.ulid}: {e}") from e
                    log.error("shipping failed", extra={"block": m.ulid, "err": str(e)})
                    upload_errs += 1
                    continue
                done.add(m.ulid)
                uploaded += 1
                self.metrics.uploads.inc()
                if self.on_uploaded is not None:
                    self.on_uploaded(m.ulid)
            ok = True
        finally:
            # Remember what is uploaded and still present locally, also after a failed upload;
            # if the scan itself failed, keep the old state as it was.
            if scanned:
                keep = [m.ulid for m in metas if m.ulid in done or m.ulid in has_uploaded]
            else:
                keep = sorted(has_uploaded)
            try:
                write_state(self.state_path, ShipperState(STATE_VERSION1, keep))
            except OSError as e:
                log.warning("updating meta file failed", extra={"file": str(self.state_path), "err": str(e)})
            if ok:
                self.metrics.dir_syncs.inc()
            else:
                self.metrics.dir_sync_failures.inc()
        if upload_errs or failed:
            self.metrics.corrupted_blocks.inc(len(failed))
            raise ShipperError(f"failed to sync {upload_errs}/{len(failed)} blocks")
        self.metrics.upload_compacted_done.set(1 if self.upload_compacted else 0)
        return uploaded

    def _upload(self, meta: BlockMeta, labels: dict[str, str]) -> None:
        log.info("upload new block", extra={"id": meta.ulid})
        updir = self.dir / UPLOAD_DIR / meta.ulid
        shutil.rmtree(updir, ignore_errors=True)
        updir.mkdir(parents=True)
        try:
            hardlink_block(self.dir / meta.ulid, updir)
            m = read_meta(updir)
            if m.thanos is None:
                m.thanos = ThanosMeta()
            m.thanos.labels.update(labels)
            m.thanos.source = self.source
            m.thanos.segment_files = sorted(p.name for p in (updir / "chunks").iterdir())
            # write_meta goes through meta.json.tmp + rename: the hard link to Prometheus'
            # meta.json is replaced, the original file is never written.
            write_meta(updir, m)
            upload_block(self.bucket, updir)
        finally:
            shutil.rmtree(updir, ignore_errors=True)

    # ------------------------------------------------------------------------------ async

    async def sync_async(self) -> int:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shipper")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.sync)

    async def run(self, interval: float = 30.0) -> None:
        """Sync every ``interval`` seconds until cancelled; failures are logged and retried next time."""
        while True:
            try:
                n = await self.sync_async()
                if n:
                    log.info("shipper sync done", extra={"uploaded": n})
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                log.warning("shipper sync failed; retrying next cycle", extra={"err": str(e), "dir": str(self.dir)})
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
