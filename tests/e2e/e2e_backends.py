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
    local: "object | None" = None   # the localcluster.LocalCluster (local backend only)

    def retag_image(self, image: str, tag: str) -> str:
        """The same image under a second tag, known to the cluster's container runtime; returns its name."""
        new = f"{image.rpartition(':')[0]}:{tag}"
        if self.backend == "local":
            self.local.ctr("images", "tag", "--force", image, new)
        else:
            sh("docker", "tag", image, new)
            sh("kind", "load", "docker-image", new, "--name", KIND_CLUSTER)
        return new

    def provide_volume(self, namespace: str, claim: str, size: str = "10Gi") -> str | None:
        """A PersistentVolume for the claim ``namespace/claim`` where the cluster cannot provision one: the
        local cluster has no storage provisioner, so a hostPath PV (a fresh world-writable directory, pods run
        as 65534) is pre-bound to that claim; kind's default StorageClass provisions by itself (None)."""
        if self.backend != "local":
            return None
        import json
        import uuid

        name = f"e2e-{uuid.uuid4().hex[:10]}"
        d = self.local.work / "volumes" / name
        d.mkdir(parents=True)
        d.chmod(0o777)
        pv = {"apiVersion": "v1", "kind": "PersistentVolume",
              "metadata": {"name": name, "labels": {"pythanos.io/e2e": "volume"}},
              "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                       "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                       "claimRef": {"namespace": namespace, "name": claim},
                       "hostPath": {"path": str(d), "type": "Directory"}}}
        self.kubectl("apply", "-f", "-", input=json.dumps(pv))
        return name


