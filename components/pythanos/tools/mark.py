"""``pythanos tools bucket mark``: write or remove a block marker (Thanos' ``tools bucket mark``).

Markers are the files Thanos writes (``pkg/block/metadata/markers.go``), compact JSON:

* ``deletion-mark.json``: ``{"id", "version": 1, "details", "deletion_time": <unix s>}``;
* ``no-compact-mark.json``: ``{"id", "version": 1, "details", "no_compact_time": <unix s>, "reason": "manual"}``;
* ``no-downsample-mark.json``: ``{"id", "version": 1, "details", "no_downsample_time": <unix s>, "reason": "manual"}``.

As in Thanos: every ``--id`` must be a ULID (checked before anything is written), ``--details``
is required unless ``--remove``, a marker that is already there is left as it is (warning), and
removing a marker that is not there is a warning, not an error.

Unlike Thanos (v0.42 writes the marker anyway, creating a stray ``<id>/`` that readers take for
a partial upload), marking a block that is not in the bucket is an error naming the block, and
nothing is written for any of the given ids.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..errors import UserError
from ..objstore import is_obj_not_found
from ..tsdb import ulid as _ulid
from ..tsdb.meta import (DELETION_MARK_FILENAME, META_FILENAME, NO_COMPACT_MARK_FILENAME,
                         NO_DOWNSAMPLE_MARK_FILENAME, DeletionMark, NoCompactMark, NoDownsampleMark,
                         marker_to_json)

log = logging.getLogger(__name__)

MARKERS = (DELETION_MARK_FILENAME, NO_COMPACT_MARK_FILENAME, NO_DOWNSAMPLE_MARK_FILENAME)
MANUAL_REASON = "manual"


@dataclass
class MarkConfig:
    ids: list[str] = field(default_factory=list)
    marker: str = ""
    details: str = ""
    remove: bool = False


def parse_ids(items: Sequence[str], flag: str = "--id") -> list[str]:
    """ULIDs (case-insensitive, printed upper case as Go's ``ulid.ULID.String``); the error names
    the first bad one."""
    out = []
    for s in items or ():
        u = s.strip().upper()
        try:
            _ulid.parse(u)
        except _ulid.ULIDError as e:
            raise UserError(f"{flag}: {s!r} is not a valid ULID: {str(e).split(': ', 1)[-1]}") from None
        out.append(u)
    return out


def make_marker(marker: str, block: str, details: str, reason: str = MANUAL_REASON, now: float | None = None):
    t = int(time.time() if now is None else now)
    if marker == DELETION_MARK_FILENAME:
        return DeletionMark(id=block, deletion_time=t, details=details)
    if marker == NO_COMPACT_MARK_FILENAME:
        return NoCompactMark(id=block, no_compact_time=t, reason=reason, details=details)
    if marker == NO_DOWNSAMPLE_MARK_FILENAME:
        return NoDownsampleMark(id=block, no_downsample_time=t, reason=reason, details=details)
    raise UserError(f"--marker: not a supported marker {marker!r}, want one of {', '.join(MARKERS)}")


_DONE_MSG = {DELETION_MARK_FILENAME: "block has been marked for deletion",
             NO_COMPACT_MARK_FILENAME: "block has been marked for no compaction",
             NO_DOWNSAMPLE_MARK_FILENAME: "block has been marked for no downsample"}


def write_marker(bucket, block: str, mark, log_=log) -> bool:
    """Upload ``mark`` unless the block already has that marker (then warn); True if written."""
    key = f"{block}/{mark.filename}"
    if bucket.exists(key):
        log_.warning("requested to mark the block, but the marker already exists; left as it is",
                     extra={"block": block, "marker": mark.filename})
        return False
    bucket.upload(key, marker_to_json(mark))
    log_.info(_DONE_MSG[mark.filename], extra={"block": block})
    return True


def remove_marker(bucket, block: str, marker: str, log_=log) -> bool:
    key = f"{block}/{marker}"
    if not bucket.exists(key):
        log_.warning("requested to remove the mark, but file does not exist",
                     extra={"err": f"file {key} does not exist in bucket"})
        return False
    try:
        bucket.delete(key)
    except Exception as e:  # noqa: BLE001
        if not is_obj_not_found(e):
            raise
    log_.info("mark has been removed from the block", extra={"block": block})
    return True


def block_exists(bucket, block: str) -> bool:
    """The block has a meta.json (a complete upload)."""
    return bucket.exists(f"{block}/{META_FILENAME}")


def mark(bucket, cfg: MarkConfig, now: Callable[[], float] = time.time) -> int:
    try:
        if cfg.marker not in MARKERS:
            raise UserError(f"--marker: not a supported marker {cfg.marker!r}, want one of {', '.join(MARKERS)}")
        if not cfg.ids:
            raise UserError("--id: at least one block ID is required")
        if not cfg.remove and not cfg.details:
            raise UserError("--details: required unless --remove is given")
        if not cfg.remove:
            missing = [u for u in cfg.ids if not block_exists(bucket, u)]
            if missing:
                raise UserError(f"--id: block {missing[0]} not found in the bucket (no {missing[0]}/{META_FILENAME})"
                                + (f"; {len(missing) - 1} more ids missing" if len(missing) > 1 else "")
                                + "; nothing was marked")
        for u in cfg.ids:
            if cfg.remove:
                remove_marker(bucket, u, cfg.marker)
            else:
                write_marker(bucket, u, make_marker(cfg.marker, u, cfg.details, now=now()))
        log.info("marking done", extra={"marker": cfg.marker, "IDs": ",".join(cfg.ids)})
        return 0
    finally:
        bucket.close()
