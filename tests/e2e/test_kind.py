"""End to end on kind: build both images, load them, install with manifests/, apply the tutorial's example,
wait for Ready, query the querier through a port-forward and check HA de-duplication.

Runs with ``make e2e`` (PYTHANOS_E2E=1) on the kind backend, wherever ``kind`` and a Docker daemon exist;
elsewhere every test skips with the reason. The kind cluster and its images are the session fixtures of
``conftest.py`` (``kind_cluster``, ``kind_images``).
"""
from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from e2e_backends import e2e_backend, sh

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEMO_NS = "pythanos-demo"   # manifests/examples/objstore-secret.yaml points at s3.pythanos-demo.svc

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


@pytest.fixture(scope="module")
def cluster(request):
    if e2e_backend() != "kind":
        pytest.skip("kind backend only (PYTHANOS_E2E_BACKEND=local): the local cluster runs test_smoke.py; "
                    "these scenarios move to it with issue 12 section 2")
    return request.getfixturevalue("kind_cluster")


@pytest.fixture(scope="module")
def kc(cluster):
    def run(*args: str, input: str | None = None, check: bool = True, timeout: float = 600) -> str:
        return sh("kubectl", f"--kubeconfig={cluster}", *args, input=input, check=check, timeout=timeout)
    return run


@pytest.fixture(scope="module")
def images(cluster, request):
    return request.getfixturevalue("kind_images")


@pytest.fixture(scope="module")
def installed(kc, images):
    kc("apply", "--server-side", "-k", str(ROOT / "manifests"))
    kc("-n", "pythanos-system", "set", "image", "deployment/pythanos-operator", f"operator={images['operator']}")
    kc("-n", "pythanos-system", "set", "env", "deployment/pythanos-operator",
       f"PYTHANOS_COMPONENT_IMAGE={images['component']}")
    kc("-n", "pythanos-system", "rollout", "status", "deployment/pythanos-operator", "--timeout=300s")
    kc("create", "namespace", DEMO_NS, check=False)
    kc("-n", DEMO_NS, "apply", "-f", "-", input=S3_MANIFEST % {"image": images["s3"]})
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
