"""Smoke test of the e2e cluster (kind or the local one, see conftest.py): a pod of the component image runs,
and a pythanos querier Deployment behind a Service answers ``/-/ready`` by its Service DNS name from another
pod. That goes through the scheduler, the kubelet and containerd, the pod network (CNI), kube-proxy (the
ClusterIP) and CoreDNS (the name)."""
from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.e2e

QUERIER = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke-query}
spec:
  replicas: 1
  selector: {matchLabels: {app: smoke-query}}
  template:
    metadata: {labels: {app: smoke-query}}
    spec:
      containers:
      - name: query
        image: %(image)s
        imagePullPolicy: IfNotPresent
        args: [query, --http-address=0.0.0.0:10902, --grpc-address=0.0.0.0:10901]
        ports: [{containerPort: 10902, name: http}, {containerPort: 10901, name: grpc}]
        readinessProbe: {httpGet: {path: /-/ready, port: http}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: smoke-query}
spec:
  selector: {app: smoke-query}
  ports: [{name: http, port: 9090, targetPort: http}]
"""

# A client pod of the same image: the Service's DNS name -> ClusterIP -> the querier pod. It retries for a
# while (the endpoint reaches kube-proxy a moment after the Deployment is available) and prints what it got.
CLIENT = r"""
import sys, time, urllib.request
url = sys.argv[1]
deadline, last = time.monotonic() + 120, None
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            print("status", r.status, r.read().decode().strip()); sys.exit(0)
    except Exception as e:
        last = e
    time.sleep(1)
print("failed:", repr(last)); sys.exit(1)
"""


def _pod(name: str, image: str, args: list[str], command: list[str] | None = None) -> str:
    container = {"name": "main", "image": image, "imagePullPolicy": "IfNotPresent", "args": args}
    if command:
        container["command"] = command
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"restartPolicy": "Never", "containers": [container]}})


def _wait_pod_done(kubectl, ns: str, name: str, timeout: float = 300) -> tuple[str, str]:
    """Poll until the pod has Succeeded or Failed; returns (phase, logs)."""
    deadline, phase = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        phase = kubectl.json("get", "pod", name, namespace=ns)["status"].get("phase")
        if phase in ("Succeeded", "Failed"):
            return phase, kubectl("logs", name, namespace=ns, check=False).stdout
        time.sleep(1)
    describe = kubectl("describe", "pod", name, namespace=ns, check=False).stdout
    raise AssertionError(f"pod {ns}/{name} still {phase} after {timeout:.0f}s:\n{describe}")


def test_cluster_is_up(e2e_cluster):
    nodes = e2e_cluster.kubectl.json("get", "nodes")["items"]
    ready = {n["metadata"]["name"]: {c["type"]: c["status"] for c in n["status"]["conditions"]}.get("Ready")
             for n in nodes}
    assert ready and all(v == "True" for v in ready.values()), ready
    dns = e2e_cluster.kubectl.json("get", "deployment", "-l", "k8s-app=kube-dns", namespace="kube-system")["items"]
    assert dns and all(d["status"].get("availableReplicas", 0) >= 1 for d in dns)


def test_component_image_runs(e2e_cluster, e2e_namespace):
    kc = e2e_cluster.kubectl
    kc("apply", "-f", "-", input=_pod("version", e2e_cluster.images["component"], ["--version"]),
       namespace=e2e_namespace)
    phase, logs = _wait_pod_done(kc, e2e_namespace, "version")
    assert phase == "Succeeded", logs
    assert logs.startswith("pythanos, version "), logs


def test_querier_answers_through_its_service_name(e2e_cluster, e2e_namespace):
    kc, image = e2e_cluster.kubectl, e2e_cluster.images["component"]
    kc("apply", "-f", "-", input=QUERIER % {"image": image}, namespace=e2e_namespace)
    kc("rollout", "status", "deployment/smoke-query", "--timeout=300s", namespace=e2e_namespace, timeout=330)

    url = f"http://smoke-query.{e2e_namespace}.svc.cluster.local:9090/-/ready"
    kc("apply", "-f", "-", input=_pod("client", image, ["-c", CLIENT, url], command=["python"]),
       namespace=e2e_namespace)
    phase, logs = _wait_pod_done(kc, e2e_namespace, "client")
    assert phase == "Succeeded" and "status 200" in logs, logs
