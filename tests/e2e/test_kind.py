"""End to end on kind: build both images, load them, install with manifests/, apply the tutorial's example,
wait for Ready, query the querier through a port-forward and check HA de-duplication.

Runs with ``make e2e`` (PYTHANOS_E2E=1) wherever ``kind`` and a Docker daemon exist; elsewhere every test
skips with the reason. An existing kind cluster named ``pythanos`` is reused; one this test creates is
deleted afterwards unless PYTHANOS_E2E_KEEP=1.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("PYTHANOS_E2E_CLUSTER", "pythanos")
TAG = "e2e"
DEMO_NS = "pythanos-demo"   # manifests/examples/objstore-secret.yaml points at s3.pythanos-demo.svc
SEAWEEDFS_IMAGE = os.environ.get("PYTHANOS_E2E_S3_IMAGE", "chrislusf/seaweedfs:3.80")

S3_MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: s3}
spec:
  replicas: 1
  selector: {matchLabels: {app: s3}}
  template:
    metadata: {labels: {app: s3}}
    spec:
      containers:
      - name: weed
        image: %(image)s
        args: ["server", "-dir=/data", "-s3", "-s3.port=8333", "-volume.max=4"]
        ports: [{containerPort: 8333, name: s3}]
        readinessProbe: {tcpSocket: {port: 8333}, periodSeconds: 3}
        volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: s3}
spec:
  selector: {app: s3}
  ports: [{name: s3, port: 8333, targetPort: s3}]
"""


def _why_not() -> str | None:
    for tool in ("kind", "docker", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    r = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if r.returncode != 0:
        return "no Docker daemon: " + (r.stderr.strip().splitlines() or ["docker info failed"])[-1]
    return None


def sh(*argv: str, input: str | None = None, timeout: float = 1800, check: bool = True) -> str:
    print("+", " ".join(argv), flush=True)
    r = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stderr}{r.stdout}")
    return r.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = _why_not()
    if why:
        print(f"e2e skipped: {why}")
        pytest.skip(why)
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    created = False
    if CLUSTER not in sh("kind", "get", "clusters").split():
        sh("kind", "create", "cluster", "--name", CLUSTER, "--config", str(ROOT / "kind-config.yaml"),
           "--wait", "300s")
        created = True
    sh("kind", "export", "kubeconfig", "--name", CLUSTER, "--kubeconfig", str(kubeconfig))
    yield kubeconfig
    if created and os.environ.get("PYTHANOS_E2E_KEEP") != "1":
        sh("kind", "delete", "cluster", "--name", CLUSTER, check=False)


@pytest.fixture(scope="module")
def kc(cluster):
    def run(*args: str, input: str | None = None, check: bool = True, timeout: float = 600) -> str:
        return sh("kubectl", f"--kubeconfig={cluster}", *args, input=input, check=check, timeout=timeout)
    return run


@pytest.fixture(scope="module")
def images(cluster):
    for name, dockerfile in (("pythanos", "components/Dockerfile"), ("pythanos-operator", "operator/Dockerfile")):
        sh("docker", "build", "-f", str(ROOT / dockerfile), "-t", f"{name}:{TAG}", str(ROOT))
        sh("kind", "load", "docker-image", f"{name}:{TAG}", "--name", CLUSTER)
    return {"component": f"pythanos:{TAG}", "operator": f"pythanos-operator:{TAG}"}


@pytest.fixture(scope="module")
def installed(kc, images):
    kc("apply", "--server-side", "-k", str(ROOT / "manifests"))
    kc("-n", "pythanos-system", "set", "image", "deployment/pythanos-operator", f"operator={images['operator']}")
    kc("-n", "pythanos-system", "set", "env", "deployment/pythanos-operator",
       f"PYTHANOS_COMPONENT_IMAGE={images['component']}")
    kc("-n", "pythanos-system", "rollout", "status", "deployment/pythanos-operator", "--timeout=300s")
    kc("create", "namespace", DEMO_NS, check=False)
    kc("-n", DEMO_NS, "apply", "-f", "-", input=S3_MANIFEST % {"image": SEAWEEDFS_IMAGE})
    kc("-n", DEMO_NS, "rollout", "status", "deployment/s3", "--timeout=300s")
    kc("-n", DEMO_NS, "exec", "deploy/s3", "--", "sh", "-c",
       "echo 's3.bucket.create -name thanos' | weed shell -master=localhost:9333", check=False)
    kc("-n", DEMO_NS, "apply", "--server-side", "-k", str(ROOT / "manifests" / "examples"))
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_everything_becomes_ready(kc, installed):
    for obj in ("thanoscluster/demo", "prometheusha/eu1", "prometheusha/us1"):
        kc("-n", DEMO_NS, "wait", "--for=condition=Ready", "--timeout=600s", obj, timeout=700)
    compact = json.loads(kc("-n", DEMO_NS, "get", "statefulset", "thanos-compact-demo", "-o", "json"))
    assert compact["spec"]["replicas"] == 1


def test_querier_deduplicates_the_us1_pair(kc, installed, cluster):
    port = _free_port()
    pf = subprocess.Popen(["kubectl", f"--kubeconfig={cluster}", "-n", DEMO_NS, "port-forward",
                           "service/thanos-query-demo", f"{port}:10902"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        def query(q: str, dedup: bool) -> dict:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(
                {"query": q, "dedup": str(dedup).lower()})
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())

        q = 'count by (cluster) (up{job="prometheus"})'
        deadline, last = time.monotonic() + 600, None
        while time.monotonic() < deadline:
            try:
                raw = {r["metric"]["cluster"]: int(r["value"][1]) for r in query(q, False)["data"]["result"]}
                dedup = {r["metric"]["cluster"]: int(r["value"][1]) for r in query(q, True)["data"]["result"]}
                last = (raw, dedup)
                if raw == {"eu1": 1, "us1": 2} and dedup == {"eu1": 1, "us1": 1}:
                    return
            except Exception as e:  # noqa: BLE001  (port-forward and sidecars still starting)
                last = e
            time.sleep(5)
        raise AssertionError(f"querier never showed us1 as a de-duplicated pair; last: {last!r}")
    finally:
        pf.terminate()
        pf.wait(10)
