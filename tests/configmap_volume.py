"""A directory laid out as the kubelet lays out a ConfigMap volume, updated as the kubelet updates it.

``key -> ..data/key`` symlinks, ``..data`` a symlink to a timestamped directory holding the files; an
update writes a new timestamped directory, swaps ``..data`` to it with one rename, adds and removes
the key symlinks and removes the old directory. Readers that follow symlinks see every key change at
once, and a watcher that hashes contents sees the change without any file being written in place."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Mapping

__all__ = ["write_configmap_volume"]


def write_configmap_volume(d: Path, files: Mapping[str, str]) -> Path:
    """Make ``d`` hold exactly ``files`` (key -> text), as a ConfigMap volume after an update."""
    d.mkdir(parents=True, exist_ok=True)
    old = (d / "..data").resolve() if (d / "..data").is_symlink() else None
    stamp = d / f"..2026_12_03_{time.monotonic_ns()}"
    stamp.mkdir()
    for key, text in files.items():
        (stamp / key).write_text(text)
    tmp = d / "..data_tmp"
    tmp.symlink_to(stamp.name)
    tmp.rename(d / "..data")
    for key in files:
        if not (d / key).is_symlink():
            (d / key).symlink_to(f"..data/{key}")
    for link in d.iterdir():
        if link.is_symlink() and not link.name.startswith("..") and link.name not in files:
            link.unlink()
    if old is not None:
        shutil.rmtree(old)
    return d
