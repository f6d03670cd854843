"""``pythanos tools bucket verify``: check a bucket for known issues, optionally repair them
(Thanos' ``tools bucket verify``, ``pkg/verifier``).

Issues (``--issues``, default ``index_known_issues`` and ``overlapped_blocks``):

* ``overlapped_blocks``: blocks of one compaction group (same external labels and resolution)
  whose time ranges overlap, found as Prometheus' ``OverlappingBlocks`` does and logged at warn
  level with Thanos' text (``group=<res>@<labels hash> overlap="[mint: .., maxt: .., range: ..,
  blocks: n]: <ulid: .., mint: .., maxt: .., range: ..>, ..."``).
  Repair (ours; Thanos has none, thanos-io/thanos#8512): in every overlapping set the oldest
  block (smallest ULID) is kept and each newer block that overlaps a kept one gets a
  ``no-compact-mark.json`` (reason ``manual``, details naming the overlap), so the pythanos
  compactor leaves them out and compacts the rest of the group. Nothing is deleted: the marked
  blocks are still served, and can be deleted or unmarked by hand (``tools bucket mark``).
  No backup bucket is needed for it.
* ``duplicated_compaction``: overlapping blocks with the same time range, compaction level,
  sources and stats (one compaction done twice). Repair keeps one of each set, backs the others up
  to ``--objstore-backup.config`` and deletes them (``--delete-delay=0``) or marks them for deletion.
* ``index_known_issues``: every block's index read with our index reader: series and label order,
  out-of-order and duplicated chunks, chunks outside the block's time range, corrupted index
  (reported with block, file and offset). Repair rewrites the block without the offending chunks
  (new ULID, source ``bucket.repair``), uploads it, then backs up and deletes (or marks) the old one.

As in Thanos, finding issues is not a failure: the exit code is 0 when the checks ran and 1 when
they could not (bad flags, bucket errors). Blocks carrying a deletion mark are not looked at.
``--id`` limits the checks to the given blocks; unlike Thanos, ``overlapped_blocks`` and
``duplicated_compaction`` accept it too (reporting and repairing only overlaps that involve one of
the given blocks). While index checks run, a ``blocks done/total`` counter is shown on a terminal.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import UserError
from ..block.planner import group_key  # Thanos' <resolution>@<labels hash>
from ..objstore import is_obj_not_found
from ..tsdb.meta import DELETION_MARK_FILENAME, META_FILENAME, NO_COMPACT_MARK_FILENAME, BlockMeta
from .. import gofmt
from .progress import Progress

log = logging.getLogger(__name__)

OVERLAPPED_BLOCKS = "overlapped_blocks"
INDEX_KNOWN_ISSUES = "index_known_issues"
DUPLICATED_COMPACTION = "duplicated_compaction"
# Thanos' registry: verify-only issues, then issues that can also be repaired
VERIFIERS = (OVERLAPPED_BLOCKS,)
REPAIRERS = (INDEX_KNOWN_ISSUES, DUPLICATED_COMPACTION)
ISSUES = VERIFIERS + REPAIRERS
DEFAULT_ISSUES = (INDEX_KNOWN_ISSUES, OVERLAPPED_BLOCKS)
DESTRUCTIVE_REPAIRS = (INDEX_KNOWN_ISSUES, DUPLICATED_COMPACTION)
REPAIR_DELETION_DETAILS = "manual verify-repair"
MARKER_FILES = (DELETION_MARK_FILENAME, NO_COMPACT_MARK_FILENAME, "no-downsample-mark.json")


@dataclass
class VerifyConfig:
    issues: list[str] = field(default_factory=lambda: list(DEFAULT_ISSUES))
    ids: list[str] = field(default_factory=list)
    repair: bool = False
    delete_delay_s: float = 0.0


def check_issues(issues: Sequence[str], flag: str = "--issues") -> list[str]:
    out = []
    for i in issues:
        if i not in ISSUES:
            raise UserError(f"{flag}: no such issue ID {i!r}; verify-only: {', '.join(VERIFIERS)}; "
                            f"verify and repair: {', '.join(REPAIRERS)} (pythanos also repairs {OVERLAPPED_BLOCKS})")
        if i not in out:
            out.append(i)
    return out


def _b(x: bool) -> str:
    return "true" if x else "false"


class _Log(logging.LoggerAdapter):
    """A logger that adds fixed fields (``verifiers=``, ``verifier=``) to every line."""

    def process(self, msg, kwargs):
        extra = dict(self.extra)
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs

    def with_(self, **fields) -> "_Log":
        return _Log(self.logger, {**self.extra, **fields})


# ------------------------------------------------------------------------------------------ overlaps

def overlapping_blocks(metas: Sequence[BlockMeta]) -> list[tuple[tuple[int, int], list[BlockMeta]]]:
    """Prometheus' ``tsdb.OverlappingBlocks`` on blocks sorted by minTime: ``[((min, max), blocks)]``
    where (min, max) is the range every block of the set covers. Sets whose ranges coincide are
    merged as the Go map does (the later one wins)."""
    if len(metas) <= 1:
        return []
    sets: list[list[BlockMeta]] = []
    pending = [metas[0]]
    continuous = True
    for b in metas[1:]:
        still = []
        for p in pending:
            if b.min_time >= p.max_time:
                continuous = False
                continue
            still.append(p)
        pending = still + [b]
        if not still:
            continue
        if continuous and sets:
            sets[-1].append(b)
            continue
        sets.append(still + [b])
        continuous = True
    out: dict[tuple[int, int], list[BlockMeta]] = {}
    for s in sets:
        lo, hi = 0, (1 << 63) - 1
        for m in s:
            hi = min(hi, m.max_time)
            lo = max(lo, m.min_time)
        out[(lo, hi)] = s
    return sorted(out.items(), key=lambda kv: kv[0])


def group_overlaps(metas: dict[str, BlockMeta]) -> dict[str, list[tuple[tuple[int, int], list[BlockMeta]]]]:
    groups: dict[str, list[BlockMeta]] = {}
    for m in metas.values():
        groups.setdefault(group_key(m), []).append(m)
    out = {}
    for k in sorted(groups):
        ms = sorted(groups[k], key=lambda m: (m.min_time, m.ulid))
        o = overlapping_blocks(ms)
        if o:
            out[k] = o
    return out


def _secs(ms: int) -> str:
    """``(time.Duration(ms/1000) * time.Second).String()``."""
    q = abs(ms) // 1000
    return gofmt.duration((q if ms >= 0 else -q) * 1_000_000_000)


def _block_desc(m: BlockMeta) -> str:
    return f"<ulid: {m.ulid}, mint: {m.min_time}, maxt: {m.max_time}, range: {_secs(m.max_time - m.min_time)}>"


def overlaps_string(o: Sequence[tuple[tuple[int, int], list[BlockMeta]]]) -> str:
    """Prometheus' ``Overlaps.String()`` (one line per overlapping set)."""
    lines = []
    for (lo, hi), blocks in o:
        lines.append(f"[mint: {lo}, maxt: {hi}, range: {_secs(hi - lo)}, blocks: {len(blocks)}]: "
                     + ", ".join(_block_desc(m) for m in blocks))
    return "\n".join(lines)


def sprint_metas(ms: Sequence[BlockMeta]) -> str:
    return f"blocks: {len(ms)}, [{','.join(_block_desc(m) for m in ms)}]"


def duplicated_blocks(blocks: Sequence[BlockMeta]) -> list[list[BlockMeta]]:
    """Sets of 2+ blocks with equal time range, compaction level, sources and stats (Thanos)."""
    sets: list[list[BlockMeta]] = []
    for b in blocks:
        for s in sets:
            a = s[0]
            if (a.min_time, a.max_time, a.compaction.level, list(a.compaction.sources), a.stats) == \
                    (b.min_time, b.max_time, b.compaction.level, list(b.compaction.sources), b.stats):
                s.append(b)
                break
        else:
            sets.append([b])
    return [s for s in sets if len(s) > 1]


# ------------------------------------------------------------------------------ block copy / delete

def _copy_object(src, dst, key: str, tmpdir: str) -> None:
    from ..block.ops import get_to_file

    path = os.path.join(tmpdir, "object")
    get_to_file(src, key, path)  # in ranged pieces: a 512 MiB segment never sits in memory
    dst.upload(key, Path(path))
    os.remove(path)


def block_in_bucket(bucket, block: str) -> bool:
    """Any object under ``<block>/`` (Thanos' TSDBBlockExistsInBucket)."""
    for _ in bucket.iter(block, recursive=False):
        return True
    return False


def backup_block(src, backup, block: str) -> None:
    """Copy the block's objects (not its markers) to ``backup``, meta.json last; refuses when the
    backup bucket already holds something under ``<block>/``."""
    if block_in_bucket(backup, block):
        raise UserError(f"{block} dir seems to exists in backup bucket. Remove this block manually if you are sure "
                        "it is safe to do")
    keys = [k for k in src.iter(f"{block}/", recursive=True) if not k.endswith("/")]
    if f"{block}/{META_FILENAME}" not in keys:
        raise UserError(f"existing tsdb block is invalid: {block} has no {META_FILENAME}")
    keys = [k for k in keys if k not in {f"{block}/{m}" for m in MARKER_FILES}]
    # Thanos' upload order: chunks, index, meta.json last
    keys.sort(key=lambda k: (k == f"{block}/{META_FILENAME}", k == f"{block}/index", k))
    log.info("Uploading block to backup bucket", extra={"id": block})
    with tempfile.TemporaryDirectory(prefix=f"backup-{block}-") as tmp:
        for k in keys:
            _copy_object(src, backup, k, tmp)


# ------------------------------------------------------------------------------------------ manager

class Verifier:
    """Runs the configured issues against ``bucket`` (see the module docstring)."""

    def __init__(self, bucket, cfg: VerifyConfig, backup=None, *, now: Callable[[], float] = time.time,
                 progress_stream=None) -> None:
        self.bucket, self.backup, self.cfg, self.now = bucket, backup, cfg, now
        self.ids = set(cfg.ids)
        self.progress_stream = progress_stream
        self.found: dict[str, int] = {}

    # -- helpers
    def _fetch(self) -> dict[str, BlockMeta]:
        from ..block import IgnoreDeletionMarkFilter
        from .inspect import fetch_metas

        return fetch_metas(self.bucket, 300.0, filters=[IgnoreDeletionMarkFilter(0.0, now=self.now)])

    def _selected(self, u: str) -> bool:
        return not self.ids or u in self.ids

    def _overlaps(self, metas):
        o = group_overlaps(metas)
        if not self.ids:
            return o
        out = {}
        for k, sets in o.items():
            keep = [(r, s) for r, s in sets if any(m.ulid in self.ids for m in s)]
            if keep:
                out[k] = keep
        return out

    def _backup_and_delete(self, lg: _Log, block: str) -> None:
        from .mark import make_marker, write_marker

        backup_block(self.bucket, self.backup, block)
        if self.cfg.delete_delay_s <= 0:
            from ..block.ops import delete

            lg.info("Deleting block", extra={"id": block})
            delete(self.bucket, block)  # Thanos' order: meta.json first, deletion mark last
            return
        lg.info("Marking block as deleted", extra={"id": block})
        write_marker(self.bucket, block, make_marker(DELETION_MARK_FILENAME, block, REPAIR_DELETION_DETAILS,
                                                     now=self.now()), log_=lg)

    # -- issues
    def overlapped_blocks(self, lg: _Log, repair: bool) -> None:
        lg.info("started verifying issue", extra={"with-repair": _b(repair)} if repair else None)
        overlaps = self._overlaps(self._fetch())
        n = 0
        for k, o in overlaps.items():
            lg.warning("found overlapped blocks", extra={"group": k, "overlap": overlaps_string(o)})
            n += len(o)
        self.found[OVERLAPPED_BLOCKS] = n
        if not repair or not overlaps:
            return
        from .mark import make_marker, write_marker

        marked = 0
        for k, o in overlaps.items():
            blocks = {m.ulid: m for _, s in o for m in s}
            set_aside = {u for u in blocks if self.bucket.exists(f"{u}/{NO_COMPACT_MARK_FILENAME}")}
            for u in sorted(set_aside):
                lg.info("overlapping block is already marked for no compaction", extra={"group": k, "id": u})
            kept = [m for u, m in blocks.items() if u not in set_aside and not self._selected(u)]
            for u in sorted(blocks):
                if u in set_aside or not self._selected(u):
                    continue
                b = blocks[u]
                other = next((m for m in sorted(kept, key=lambda m: m.ulid)
                              if b.min_time < m.max_time and m.min_time < b.max_time), None)
                if other is None:
                    kept.append(b)
                    continue
                lo, hi = max(b.min_time, other.min_time), min(b.max_time, other.max_time)
                details = (f"overlaps block {other.ulid} in [{lo}, {hi}) ({_secs(hi - lo)}) of compaction group {k}; "
                           f"marked by pythanos tools bucket verify --repair (overlapped_blocks)")
                if write_marker(self.bucket, u, make_marker(NO_COMPACT_MARK_FILENAME, u, details, now=self.now()),
                                log_=lg):
                    marked += 1
                    lg.warning("marked overlapping block for no compaction", extra={"group": k, "id": u,
                                                                                    "overlaps": other.ulid})
        lg.info("repaired overlapped blocks: newer overlapping blocks marked for no compaction",
                extra={"marked": marked})

    def duplicated_compaction(self, lg: _Log, repair: bool) -> None:
        lg.info("started verifying issue", extra={"with-repair": _b(repair)})
        overlaps = self._overlaps(self._fetch())
        if not overlaps:
            self.found[DUPLICATED_COMPACTION] = 0
            return
        kill: list[str] = []
        for k, o in overlaps.items():
            for (lo, hi), blocks in o:
                dups = duplicated_blocks(sorted(blocks, key=lambda m: (m.min_time, m.ulid)))
                for d in dups:
                    victims = [m for m in d[1:] if self._selected(m.ulid)]
                    lg.warning("found duplicated blocks", extra={"group": k, "range-min": lo, "range-max": hi,
                                                                 "kill": sprint_metas(victims)})
                    kill.extend(m.ulid for m in victims if m.ulid not in kill)
                if not dups:
                    lg.warning("found overlapped blocks, but all of the blocks are unique. Seems like unrelated issue. "
                               "Ignoring overlap", extra={"group": k, "range": f"{{{lo} {hi}}}",
                                                          "overlap": sprint_metas(blocks)})
        self.found[DUPLICATED_COMPACTION] = len(kill)
        lg.warning("Found duplicated blocks that are ok to be removed",
                   extra={"ULIDs": "[" + " ".join(kill) + "]", "num": len(kill)})
        if not repair:
            return
        with Progress("duplicated_compaction repair", len(kill), self.progress_stream) as p:
            for i, u in enumerate(kill):
                self._backup_and_delete(lg, u)
                p.step()
                lg.info("Removed duplicated block", extra={"id": u, "to-be-removed": len(kill) - (i + 1),
                                                           "removed": i + 1})
        lg.info("Removed all duplicated blocks. You might want to rerun this verify to check if there is still "
                "any unrelated overlap")

    def index_known_issues(self, lg: _Log, repair: bool) -> None:
        from ..tsdb.errors import CorruptBlockError
        from . import indexhealth

        lg.info("started verifying issue", extra={"with-repair": _b(repair)})
        metas = self._fetch()
        todo = [u for u in sorted(metas) if self._selected(u)]
        n = 0
        with Progress(INDEX_KNOWN_ISSUES, len(todo), self.progress_stream) as p:
            for u in todo:
                meta = metas[u]
                try:
                    with indexhealth.open_index(self.bucket, meta) as ir:
                        stats = indexhealth.gather(ir, meta.min_time, meta.max_time, block=u)
                    lg.debug("index stats", extra={"stats": stats.summary(), "id": u})
                    err = stats.any_err()
                except (CorruptBlockError, indexhealth.IndexIssueError) as e:
                    err = f"gather index issues {u}: {e}"
                except Exception as e:  # noqa: BLE001  (bucket errors: this block cannot be checked)
                    if not is_obj_not_found(e):
                        raise
                    err = f"download index file {u}/index: {e}"
                p.step()
                if err is None:
                    lg.debug("no issue", extra={"id": u})
                    continue
                n += 1
                lg.warning("detected issue", extra={"id": u, "err": err})
                if repair:
                    try:
                        self._repair_index(lg, meta)
                    except Exception as e:  # noqa: BLE001  (as Thanos: log it and go on with the next block)
                        lg.error("could not repair index", extra={"id": u, "err": str(e)})
                        continue
                    lg.info("all good, continuing", extra={"id": u})
        self.found[INDEX_KNOWN_ISSUES] = n
        lg.info("verified issue", extra={"with-repair": _b(repair)})

    def _repair_index(self, lg: _Log, meta: BlockMeta) -> None:
        from ..tsdb.block import BlockReader
        from ..tsdb.errors import CorruptBlockError
        from ..tsdb.upload import upload_block
        from . import indexhealth

        u = meta.ulid
        if meta.resolution > 0:
            raise indexhealth.RepairError("cannot repair downsampled blocks")
        with tempfile.TemporaryDirectory(prefix=f"index-issue-block-{u}-") as tmp:
            lg.info("repairing block", extra={"id": u})
            try:
                with BlockReader.open_bucket(self.bucket, u, meta=meta) as r:
                    new = indexhealth.rewrite(r, tmp)
            except (indexhealth.RepairError, CorruptBlockError) as e:
                raise indexhealth.RepairError(f"repair failed for block {u}: rewrite block: {e}") from None
            lg.info("verifying repaired block", extra={"id": u, "newID": new.ulid})
            bad = indexhealth.check_dir(os.path.join(tmp, new.ulid), meta.min_time, meta.max_time)
            if bad:
                raise indexhealth.RepairError(f"repaired block is invalid {new.ulid}: {bad}")
            lg.info("uploading repaired block", extra={"newID": new.ulid})
            upload_block(self.bucket, os.path.join(tmp, new.ulid), allow_empty_labels=True)
            shutil.rmtree(os.path.join(tmp, new.ulid), ignore_errors=True)
        lg.info("safe deleting broken block", extra={"id": u})
        self._backup_and_delete(lg, u)

    # -- run
    def run(self) -> int:
        cfg = self.cfg
        issues = check_issues(cfg.issues)
        if not issues:
            raise UserError("--issues: nothing to verify")
        if cfg.repair:
            order = list(issues)
        else:  # Thanos runs its verify-only issues first
            order = [i for i in issues if i in VERIFIERS] + [i for i in issues if i not in VERIFIERS]
        root = _Log(log, {"verifiers": ",".join(order)})
        if cfg.repair:
            root.warning("GLOBAL COMPACTOR SHOULD __NOT__ BE RUNNING ON THE SAME BUCKET")
            root.info("Starting verify and repair task")
        else:
            root.info("Starting verify task")
        for issue in order:
            getattr(self, issue)(root.with_(verifier=issue), cfg.repair)
        root.info("verify and repair task completed" if cfg.repair else "verify task completed",
                  extra={"issues_found": sum(self.found.values())})
        return 0


def verify(bucket, cfg: VerifyConfig, backup=None) -> int:
    try:
        issues = check_issues(cfg.issues)
        if cfg.repair and backup is None and any(i in DESTRUCTIVE_REPAIRS for i in issues):
            raise UserError("--objstore-backup.config: repair is specified, so backup client is required (blocks are "
                            f"backed up there before removal; only {OVERLAPPED_BLOCKS} repairs without one)")
        return Verifier(bucket, cfg, backup).run()
    finally:
        bucket.close()
        if backup is not None:
            backup.close()
