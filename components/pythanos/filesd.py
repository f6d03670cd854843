"""Prometheus' file-based service discovery files, as Thanos reads them for address lists
(the querier's ``--store.sd-files``/``--endpoint`` files, the ruler's ``--query.sd-files`` and
Alertmanager ``file_sd_configs``): only the ``targets`` of each group count."""
from __future__ import annotations

import glob
import json
import os
from typing import Sequence

import yaml

__all__ = ["read_sd_files", "file_stamps"]


def read_sd_files(patterns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Prometheus file-SD files (JSON or YAML lists of ``{targets, labels}``): (targets, errors).
    A file that cannot be read or parsed is reported and skipped; the others still count."""
    targets: list[str] = []
    errors: list[str] = []
    for pat in patterns:
        for path in sorted(glob.glob(pat)) or ([pat] if not glob.has_magic(pat) else []):
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
            except (OSError, ValueError, yaml.YAMLError) as e:
                errors.append(f"{path}: {e}")
                continue
            if doc is None:
                continue
            if not isinstance(doc, list):
                errors.append(f"{path}: expected a list of target groups")
                continue
            for i, group in enumerate(doc):
                ts = group.get("targets") if isinstance(group, dict) else None
                if not isinstance(ts, list):
                    errors.append(f"{path}: group {i}: 'targets' must be a list")
                    continue
                targets.extend(str(t) for t in ts)
    return targets, errors


def file_stamps(patterns: Sequence[str]) -> tuple:
    """What identifies the current content of the files ``patterns`` match (path, mtime, size;
    None for a file gone meanwhile): re-read the files only when this changes."""
    out = []
    for pat in patterns:
        for path in sorted(glob.glob(pat)):
            try:
                st = os.stat(path)
                out.append((path, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((path, None, None))
    return tuple(out)
