"""Upload a local block into a bucket the way Thanos does (``block.Upload``).

Order matters: every ``chunks/`` segment, then ``index``, then ``meta.json`` **last**, so a reader
never sees a meta.json whose files are missing (a block without meta.json is a partial upload that
readers ignore). ``tombstones`` are never uploaded. The uploaded meta.json carries
``thanos.files`` (sizes), ``thanos.segment_files`` and ``thanos.upload_time``; the local one is
left untouched.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Protocol

from .errors import CorruptBlockError
from .meta import META_FILENAME, ThanosFile, read_meta
from . import ulid as _ulid


class UploadTarget(Protocol):
    def upload(self, key: str, data) -> None: ...


class UploadError(Exception):
    """The block cannot be uploaded as it is (names the block and why)."""


def _sha256(path: Path) -> dict:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)
    return {"hashFunc": "SHA256", "value": h.hexdigest()}


def upload_block(bucket: UploadTarget, block_dir: str | os.PathLike, *, allow_empty_labels: bool = False,
                 hash_func: str = "") -> str:
    """Upload ``block_dir`` to ``<ULID>/...`` in ``bucket``; returns the ULID. ``hash_func="SHA256"``
    records each file's digest in ``thanos.files`` (Thanos' ``--hash-func``).

    Thanos refuses blocks without external labels ("empty external labels are not allowed for
    Thanos block."), since they could never be told apart from other sources; so do we.
    """
    d = Path(block_dir)
    ulid = d.name
    try:
        _ulid.parse(ulid)
    except _ulid.ULIDError as e:
        raise UploadError(f"{d}: not a block directory: {e}") from None
    meta = read_meta(d)
    if meta.ulid != ulid:
        raise UploadError(f"{d}: meta.json ulid {meta.ulid} does not match the directory name")
    if meta.thanos is None or (not meta.thanos.labels and not allow_empty_labels):
        raise UploadError(f"{d}: empty external labels are not allowed for Thanos block.")
    chunk_dir = d / "chunks"
    if not (d / "index").is_file() or not chunk_dir.is_dir():
        raise CorruptBlockError(ulid, "index" if not (d / "index").is_file() else "chunks", 0,
                                "missing; cannot upload an incomplete block")
    segments = sorted(p.name for p in chunk_dir.iterdir() if p.is_file())

    if hash_func not in ("", "SHA256"):
        raise UploadError(f"{d}: unknown hash function {hash_func!r} (want \"\" or SHA256)")
    digest = _sha256 if hash_func == "SHA256" else (lambda _p: None)
    files = [ThanosFile(f"chunks/{s}", (chunk_dir / s).stat().st_size, digest(chunk_dir / s)) for s in segments]
    files.append(ThanosFile("index", (d / "index").stat().st_size, digest(d / "index")))
    files.append(ThanosFile(META_FILENAME))
    meta.thanos.files = sorted(files, key=lambda f: f.rel_path)
    meta.thanos.segment_files = segments
    meta.thanos.upload_time = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    for s in segments:
        bucket.upload(f"{ulid}/chunks/{s}", chunk_dir / s)
    bucket.upload(f"{ulid}/index", d / "index")
    bucket.upload(f"{ulid}/{META_FILENAME}", meta.to_json())
    return ulid
