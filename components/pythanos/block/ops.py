"""Operations on whole blocks in a bucket (Thanos ``pkg/block/block.go``): download, upload,
markers and deletion, in the orders that keep every reader consistent.

* Upload: chunks, then ``index``, then ``meta.json`` last (a block without meta.json is partial).
* Delete: ``meta.json`` first (the block disappears for readers at once), then every other object
  except ``deletion-mark.json``, which goes last, so an interrupted delete is retried by the next
  cleaner run instead of leaving an unmarked partial block behind.
* Markers are written once: marking a block that already has the marker leaves it in place.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Callable, Optional

from ..objstore import is_obj_not_found
from ..tsdb.meta import (DELETION_MARK_FILENAME, META_FILENAME, NO_COMPACT_MARK_FILENAME,
                         NO_DOWNSAMPLE_MARK_FILENAME, DeletionMark, InvalidMetaError,
                         NoCompactMark, NoDownsampleMark, marker_from_json, marker_to_json)
from ..tsdb.upload import upload_block

log = logging.getLogger(__name__)

MARKER_FILES = (DELETION_MARK_FILENAME, NO_COMPACT_MARK_FILENAME, NO_DOWNSAMPLE_MARK_FILENAME)
DOWNLOAD_PIECE = 32 << 20

__all__ = ["download", "upload", "mark_for_deletion", "mark_no_compact", "mark_no_downsample", "delete", "read_marker",
           "read_markers"]


def download(bucket, block_ulid: str, dest: str) -> None:
    """Copy every object of the block into ``dest`` (replacing what is there); meta.json last,
    so a local directory with a meta.json is complete."""
    tmp = dest + ".download"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    keys = [k for k in bucket.iter(f"{block_ulid}/", recursive=True) if not k.endswith("/")]
    if f"{block_ulid}/{META_FILENAME}" not in keys:
        raise FileNotFoundError(f"block {block_ulid}: no meta.json in the bucket")
    keys.sort(key=lambda k: k.endswith(f"/{META_FILENAME}"))
    for key in keys:
        rel = key[len(block_ulid) + 1:]
        if rel in MARKER_FILES:
            continue
        path = os.path.join(tmp, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        get_to_file(bucket, key, path)
    os.replace(tmp, dest)


def get_to_file(bucket, key: str, path: str, piece: int = DOWNLOAD_PIECE) -> None:
    """Copy one object to ``path`` in ranged pieces (a 512 MiB chunk segment never sits in memory)."""
    size = bucket.attributes(key).size
    with open(path, "wb") as f:
        off = 0
        while off < size:
            data = bucket.get_range(key, off, min(piece, size - off))
            if not data:
                raise IOError(f"{key}: object ended at byte {off}, expected {size}")
            f.write(data)
            off += len(data)


def upload(bucket, block_dir: str, hash_func: str = "") -> str:
    """Upload a finished local block (meta.json last); returns its ULID."""
    return upload_block(bucket, block_dir, hash_func=hash_func)


def read_marker(bucket, block_ulid: str, filename: str):
    """The block's marker, or None when absent or unparsable (logged, as Thanos' partial markers)."""
    try:
        data = bucket.get(f"{block_ulid}/{filename}")
    except Exception as e:  # noqa: BLE001
        if is_obj_not_found(e):
            return None
        raise
    try:
        return marker_from_json(filename, data, block=block_ulid)
    except InvalidMetaError as e:
        log.warning("found partial marker; ignoring it", extra={"block": block_ulid, "file": filename, "err": str(e)})
        return None


def read_markers(bucket, ulids, filename: str, mapper: Callable = map) -> dict:
    """``{ulid: marker}`` for the blocks among ``ulids`` that carry ``filename``."""
    out = {}
    for u, m in mapper(lambda u: (u, read_marker(bucket, u, filename)), list(ulids)):
        if m is not None:
            out[u] = m
    return out


def _mark(bucket, block_ulid: str, mark) -> bool:
    key = f"{block_ulid}/{mark.filename}"
    if bucket.exists(key):
        log.info("block already has the marker; leaving it", extra={"block": block_ulid, "marker": mark.filename})
        return False
    bucket.upload(key, marker_to_json(mark))
    return True


def mark_for_deletion(bucket, block_ulid: str, details: str, counter=None, now: Optional[float] = None) -> bool:
    """Write ``deletion-mark.json``; False when the block had one already."""
    if not bucket.exists(f"{block_ulid}/{META_FILENAME}"):
        log.warning("block to mark for deletion has no meta.json; marking anyway",
                    extra={"block": block_ulid})
    done = _mark(bucket, block_ulid, DeletionMark(id=block_ulid, deletion_time=int(now or time.time()),
                                                  details=details))
    if done:
        log.info("block has been marked for deletion", extra={"block": block_ulid, "details": details})
        if counter is not None:
            counter.inc()
    return done


def mark_no_compact(bucket, block_ulid: str, reason: str, details: str = "", counter=None) -> bool:
    done = _mark(bucket, block_ulid, NoCompactMark(id=block_ulid, no_compact_time=int(time.time()), reason=reason,
                                                   details=details))
    if done:
        log.info("block has been marked for no compaction", extra={"block": block_ulid, "reason": reason,
                                                                    "details": details})
        if counter is not None:
            counter.inc()
    return done


def mark_no_downsample(bucket, block_ulid: str, reason: str, details: str = "") -> bool:
    return _mark(bucket, block_ulid, NoDownsampleMark(id=block_ulid, no_downsample_time=int(time.time()),
                                                      reason=reason, details=details))


def delete(bucket, block_ulid: str) -> None:
    """Delete the block: meta.json first, the deletion mark last, then the directory markers."""
    prefix = f"{block_ulid}/"
    meta_key = prefix + META_FILENAME
    mark_key = prefix + DELETION_MARK_FILENAME
    if bucket.exists(meta_key):
        bucket.delete(meta_key)
        log.debug("deleted file", extra={"file": meta_key, "bucket": bucket.name})
    has_mark = False
    for key in list(bucket.iter(prefix, recursive=True)):
        if key == mark_key:
            has_mark = True
            continue
        if key.endswith("/"):
            continue
        _delete_quiet(bucket, key)
    if has_mark:
        _delete_quiet(bucket, mark_key)
    for d in (prefix + "chunks/", prefix):
        try:
            bucket.delete(d)
        except Exception:  # noqa: BLE001  (directory markers exist only on some stores)
            pass


def _delete_quiet(bucket, key: str) -> None:
    try:
        bucket.delete(key)
    except Exception as e:  # noqa: BLE001
        if not is_obj_not_found(e):
            raise
