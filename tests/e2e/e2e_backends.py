"""Which cluster the e2e tests run on (kind or the local one), and small helpers shared by the test files."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

KIND_CLUSTER = os.environ.get("PYTHANOS_E2E_CLUSTER", "pythanos")
TAG = "e2e"


def kind_why_not() -> str | None:
    for tool in ("kind", "docker", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    r = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if r.returncode != 0:
        return "no Docker daemon: " + (r.stderr.strip().splitlines() or ["docker info failed"])[-1]
    return None


def e2e_backend() -> str:
    b = os.environ.get("PYTHANOS_E2E_BACKEND", "")
    if b in ("kind", "local"):
        return b
    if b:
        raise pytest.UsageError(f"PYTHANOS_E2E_BACKEND={b!r}: expected kind or local")
    return "kind" if kind_why_not() is None else "local"


def sh(*argv: str, input: str | None = None, timeout: float = 1800, check: bool = True) -> str:
    print("+", " ".join(argv), flush=True)
    r = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stderr}{r.stdout}")
    return r.stdout


@dataclass
class E2ECluster:
    backend: str
    kubeconfig: Path
    kubectl: "object"     # localcluster.Kubectl
    images: dict[str, str]


