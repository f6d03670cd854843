"""The kube part of the harness: binaries from the peers cache, a real API server, RBAC, garbage collection."""
from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

from kube import ADMIN_USER
from peers import REPO, find_binary, missing, peers_dir


def pinned(var: str) -> str:
    """The version scripts/peers.sh builds (``VAR="${VAR:-v1.2.3}"``)."""
    m = re.search(rf'^{var}="\$\{{{var}:-([^}}]+)\}}"', (REPO / "scripts" / "peers.sh").read_text(), re.M)
    assert m, var
    return m.group(1)


def version_output(binary: str, *args: str) -> str:
    r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


def test_kube_apiserver_version(kube_apiserver_bin):
    assert version_output(kube_apiserver_bin, "--version").strip() == f"Kubernetes {pinned('KUBERNETES_VERSION')}"


def test_kube_controller_manager_version(kube_controller_manager_bin):
    assert version_output(kube_controller_manager_bin, "--version").strip() == \
        f"Kubernetes {pinned('KUBERNETES_VERSION')}"


def test_kubectl_version(kubectl_bin):
    v = json.loads(version_output(kubectl_bin, "version", "--client", "-o", "json"))["clientVersion"]
    assert v["gitVersion"] == pinned("KUBERNETES_VERSION")
    assert v["major"] == "1" and v["minor"] == pinned("KUBERNETES_VERSION").split(".")[1]


def test_helm_version(helm_bin):
    out = version_output(helm_bin, "version", "--short")
    assert out.startswith(pinned("HELM_VERSION")), out


def test_etcd_version():
    """peers.sh builds the etcd that k8s.io/kubernetes requires (the etcd_bin fixture falls back to Debian's)."""
    etcd = find_binary(peers_dir() / "bin" / "etcd") or missing(f"etcd in {peers_dir()}/bin (scripts/peers.sh)")
    want = (peers_dir() / "etcd-version").read_text().strip()
    assert f"etcd Version: {want.lstrip('v')}\n" in version_output(etcd, "--version")


def test_api_server_serves_its_version_to_kubectl(kube_apiserver, kubectl):
    v = json.loads(kubectl("version", "-o", "json").stdout)
    assert v["serverVersion"]["gitVersion"] == pinned("KUBERNETES_VERSION")
    status, body = kube_apiserver.get("/readyz?verbose")
    assert status == 200 and b"readyz check passed" in body
    # The admin is who the kubeconfig says, in system:masters.
    who = json.loads(kubectl("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert who["username"] == ADMIN_USER and "system:masters" in who["groups"]


def test_rbac_is_enforced(kubectl, namespace):
    assert kubectl("auth", "can-i", "create", "statefulsets", namespace=namespace).stdout.strip() == "yes"
    sa = f"system:serviceaccount:{namespace}:nobody"
    r = kubectl("auth", "can-i", "create", "statefulsets", f"--as={sa}", namespace=namespace, check=False)
    assert r.stdout.strip() == "no"
    # Grant it with a Role + RoleBinding, as an operator's RBAC manifests do.
    kubectl("create", "role", "sts-writer", "--verb=create,get", "--resource=statefulsets.apps", namespace=namespace)
    kubectl("create", "rolebinding", "sts-writer", "--role=sts-writer", f"--serviceaccount={namespace}:nobody",
            namespace=namespace)
    assert kubectl("auth", "can-i", "create", "statefulsets", f"--as={sa}", namespace=namespace).stdout.strip() == "yes"


def test_namespace_fixture_gives_a_fresh_namespace(kubectl, namespace):
    ns = kubectl.json("get", "namespace", namespace)
    assert ns["status"]["phase"] == "Active"
    assert kubectl.json("get", "configmaps", "--field-selector=metadata.name!=kube-root-ca.crt",
                        namespace=namespace)["items"] == []


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s: {what}")


def test_garbage_collection_of_owned_objects(kube_controller_manager, kubectl, namespace):
    kubectl("create", "configmap", "owner", "--from-literal=a=b", namespace=namespace)
    uid = kubectl.json("get", "configmap", "owner", namespace=namespace)["metadata"]["uid"]
    child = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "child", "ownerReferences": [
                 {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid,
                  "controller": True, "blockOwnerDeletion": True}]},
             "data": {"x": "y"}}
    kubectl("apply", "-f", "-", input=json.dumps(child), namespace=namespace)
    kubectl("delete", "configmap", "owner", "--wait=false", namespace=namespace)

    def child_gone() -> bool:
        r = kubectl("get", "configmap", "child", namespace=namespace, check=False)
        return r.returncode != 0 and "NotFound" in r.stderr

    wait_until(child_gone, 90, "the garbage collector deletes the owned ConfigMap")


def test_namespace_deletion_finishes_with_controller_manager(kube_controller_manager, kubectl):
    ns = f"t-del-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", ns)
    kubectl("create", "configmap", "x", "--from-literal=a=b", namespace=ns)
    kubectl("delete", "namespace", ns, "--wait=false")

    def gone() -> bool:
        r = kubectl("get", "namespace", ns, check=False)
        return r.returncode != 0 and "NotFound" in r.stderr

    wait_until(gone, 90, f"namespace {ns} finishes deleting")
