"""``pythanos tools bucket ...``: bucket utilities (Thanos' ``cmd/thanos/tools_bucket.go``).

``ls`` lists the blocks of a bucket: top-level "directories" whose name is a ULID and that hold a
``meta.json`` (a block without one is a partial upload and is skipped, like Thanos' fetcher).
Blocks are printed sorted by ULID. Output formats:

* ``""``: one ULID per line.
* ``"json"``: each block's meta.json as one compact JSON line (Thanos prints it tab-indented).
* ``"wide"``: Thanos' wide line, plus the external labels::

    <ULID> -- <minTime RFC3339> - <maxTime RFC3339> Diff: <Go duration>, Compaction: <level>,
    Downsample: <resolution>, Source: <source>, Labels: {k="v", ...}
"""
from __future__ import annotations

import json
import logging
from typing import Any, TextIO

from .. import gofmt
from ..objstore import Bucket, ObjstoreError, is_obj_not_found

log = logging.getLogger(__name__)

_CROCKFORD = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def is_ulid(s: str) -> bool:
    """26 Crockford base32 characters (case-insensitive), first one <= '7' (the 128-bit limit)."""
    return len(s) == 26 and s[0] <= "7" and all(c in _CROCKFORD for c in s.upper())


def _labels(labels: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={json.dumps(str(v), ensure_ascii=False)}" for k, v in sorted(labels.items())) + "}"


def wide_line(meta: dict[str, Any]) -> str:
    thanos = meta.get("thanos") or {}
    mint = gofmt.go_div(int(meta.get("minTime", 0)), 1000)
    maxt = gofmt.go_div(int(meta.get("maxTime", 0)), 1000)
    return (f"{meta.get('ulid', '')} -- {gofmt.unix_rfc3339(mint)} - {gofmt.unix_rfc3339(maxt)} Diff: {gofmt.duration((maxt - mint) * 1_000_000_000)}, "
            f"Compaction: {int((meta.get('compaction') or {}).get('level', 0))}, "
            f"Downsample: {int((thanos.get('downsample') or {}).get('resolution', 0))}, "
            f"Source: {thanos.get('source', '')}, Labels: {_labels(thanos.get('labels') or {})}")


def block_metas(bucket: Bucket) -> list[tuple[str, dict[str, Any]]]:
    """(ULID, parsed meta.json) of every complete block, sorted by ULID."""
    out = []
    for entry in bucket.iter("", recursive=False):
        if not entry.endswith("/"):
            continue
        ulid = entry[:-1]
        if not is_ulid(ulid):
            continue
        try:
            raw = bucket.get(f"{ulid}/meta.json")
        except Exception as e:
            if is_obj_not_found(e):
                log.debug("block without meta.json (partial upload), skipped", extra={"block": ulid})
                continue
            raise
        try:
            meta = json.loads(raw)
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            log.warning("corrupted meta.json, block skipped", extra={"block": ulid, "err": str(e)})
            continue
        out.append((ulid, meta))
    out.sort(key=lambda x: x[0])
    return out


def ls(bucket: Bucket, output: str, out: TextIO) -> int:
    """``pythanos tools bucket ls [-o json|wide]``; returns the exit code."""
    if output not in ("", "json", "wide"):
        raise ValueError(f"--output: unknown format {output!r}, want '', 'json' or 'wide'")
    try:
        metas = block_metas(bucket)
        for ulid, meta in metas:
            if output == "":
                out.write(ulid + "\n")
            elif output == "json":
                out.write(json.dumps(meta, ensure_ascii=False, separators=(",", ":")) + "\n")
            else:
                out.write(wide_line(meta) + "\n")
        out.flush()
        log.info("ls done", extra={"objects": len(metas)})
        return 0
    except ObjstoreError as e:
        log.error("ls failed", extra={"err": str(e)})
        return 1
    finally:
        bucket.close()
