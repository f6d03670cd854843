"""End-to-end tests in real pods, collected only with PYTHANOS_E2E=1 (``make e2e``; ``make test`` skips them).

Two backends, chosen by PYTHANOS_E2E_BACKEND (``make e2e`` sets it) or, when unset, here:

* ``kind``: where ``kind`` and a Docker engine exist. A kind cluster ``pythanos`` from ``kind-config.yaml``
  (reused if it exists; one created here is deleted afterwards unless PYTHANOS_E2E_KEEP=1); images built
  with ``docker build`` and ``kind load``-ed.
* ``local``: everywhere else. A single-node cluster built from upstream parts on this machine
  (``localcluster.py``: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
  containerd, CoreDNS), with images assembled by ``images.py``. Needs root.

Fixtures:

* ``e2e_cluster`` (session): an :class:`E2ECluster` with ``backend``, ``kubeconfig``, ``kubectl`` (a
  :class:`localcluster.Kubectl`) and ``images`` (``component``, ``operator``, ``s3``, ``prometheus`` names as
  pods must spell them), on whichever backend was chosen; ``retag_image()`` and ``provide_volume()`` do
  what differs between the backends.
* ``local_cluster`` (session): the :class:`localcluster.LocalCluster` itself (local backend only).
* ``kind_cluster`` (session): the kind kubeconfig path (kind backend only); ``kind_images`` builds and loads
  the images there.
* ``e2e_namespace``: a fresh namespace per test, deleted afterwards.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
E2E = os.environ.get("PYTHANOS_E2E") == "1"
collect_ignore_glob = [] if E2E else ["test_*.py"]

if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from e2e_backends import KIND_CLUSTER, TAG, E2ECluster, e2e_backend, kind_why_not, sh  # noqa: E402


# --- local backend --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory) -> Iterator["object"]:
    import localcluster
    from peers import missing

    why = localcluster.why_not()
    if why:
        missing(f"local e2e cluster: {why}")
    cluster = localcluster.LocalCluster(tmp_path_factory.mktemp("local-cluster"),
                                        log=lambda m: print(f"local-cluster: {m}", flush=True))
    cluster.start()
    yield cluster
    cluster.stop()   # logs what it had to clean up beyond stopping the processes
    print("local-cluster: stopped in %.1fs (%s)" % (cluster.timings.get("stop", 0), ", ".join(
        f"{k[5:]} {v:.1f}s" for k, v in cluster.timings.items() if k.startswith("stop "))))


# --- kind backend ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kind_cluster(tmp_path_factory) -> Iterator[Path]:
    why = kind_why_not()
    if why:
        pytest.skip(why)
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    created = False
    if KIND_CLUSTER not in sh("kind", "get", "clusters").split():
        sh("kind", "create", "cluster", "--name", KIND_CLUSTER, "--config", str(ROOT / "kind-config.yaml"),
           "--wait", "300s")
        created = True
    sh("kind", "export", "kubeconfig", "--name", KIND_CLUSTER, "--kubeconfig", str(kubeconfig))
    yield kubeconfig
    if created and os.environ.get("PYTHANOS_E2E_KEEP") != "1":
        sh("kind", "delete", "cluster", "--name", KIND_CLUSTER, check=False)


@pytest.fixture(scope="session")
def kind_images(kind_cluster) -> dict[str, str]:
    for name, dockerfile in (("pythanos", "components/Dockerfile"), ("pythanos-operator", "operator/Dockerfile")):
        sh("docker", "build", "-f", str(ROOT / dockerfile), "-t", f"{name}:{TAG}", str(ROOT))
        sh("kind", "load", "docker-image", f"{name}:{TAG}", "--name", KIND_CLUSTER)
    return {"component": f"pythanos:{TAG}", "operator": f"pythanos-operator:{TAG}",
            "s3": os.environ.get("PYTHANOS_E2E_S3_IMAGE", "chrislusf/seaweedfs:3.80"),
            "prometheus": "quay.io/prometheus/prometheus:v3.9.1"}


# --- either ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def e2e_cluster(request) -> E2ECluster:
    import localcluster

    backend = e2e_backend()
    if backend == "kind":
        kubeconfig = request.getfixturevalue("kind_cluster")
        imgs = request.getfixturevalue("kind_images")
        kubectl = localcluster.Kubectl(shutil.which("kubectl") or "kubectl", kubeconfig)
        return E2ECluster("kind", kubeconfig, kubectl, imgs)
    import images

    cluster = request.getfixturevalue("local_cluster")
    return E2ECluster("local", cluster.kubeconfig, cluster.kubectl,
                      {"component": images.COMPONENT_IMAGE, "operator": images.OPERATOR_IMAGE,
                       "s3": images.S3_IMAGE, "prometheus": images.PROMETHEUS_IMAGE}, local=cluster)


@pytest.fixture(scope="module")
def install(e2e_cluster, tmp_path_factory):
    """The operator installed with ``kubectl apply -k`` for one module, uninstalled after it (a module may
    define its own: test_operator.py times it)."""
    from course import Install

    inst = Install(e2e_cluster, "kustomize", tmp_path_factory.mktemp("kustomize"))
    inst.install()
    yield inst
    inst.uninstall()


@pytest.fixture(autouse=True)
def _timed(request) -> Iterator[None]:
    """Each test's duration into its module's ``TIMINGS`` dict, where it has one (printed at teardown)."""
    t0 = time.monotonic()
    yield
    timings = getattr(request.module, "TIMINGS", None)
    if timings is not None:
        timings[request.node.name] = time.monotonic() - t0


@pytest.fixture
def e2e_namespace(e2e_cluster) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    e2e_cluster.kubectl("create", "namespace", name)
    yield name
    e2e_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
