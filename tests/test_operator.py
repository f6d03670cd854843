"""The operator against a real kube-apiserver (+ etcd, + kube-controller-manager for garbage collection).

The real ``pythanos-operator`` process runs (module-scoped) with the install's own identity: the
ServiceAccount and ClusterRole of manifests/ (a token from the TokenRequest API), so every call it makes is
proven to fit the least-privilege RBAC; the namespaced installs (manifests/namespaced/, the chart's
``watchNamespaces``) run an operator under their own ServiceAccount too, and ``kubectl auth can-i`` as those
ServiceAccounts shows what each may not do. There is no kubelet: tests patch StatefulSet/Deployment
``/status`` themselves to move the conditions.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from kube import write_kubeconfig
from peers import free_ports

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "manifests" / "examples"
OPERATOR_NS = "pythanos-system"
TIMEOUT = 45.0


def wait_for(fn: Callable[[], Any], timeout: float = TIMEOUT, what: str = "condition", interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001  (retry until the deadline; report the last error)
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


# ---------------------------------------------------------------------------------------------- fixtures

class Operator:
    def __init__(self, proc: subprocess.Popen, log: Path, health: int, metrics: int):
        self.proc, self.log, self.health_port, self.metrics_port = proc, log, health, metrics

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, port: int, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()

    def alive(self) -> bool:
        return self.proc.poll() is None


def _operator_as(kubectl, kube_apiserver, work: Path, account: str, ns: str, name: str) -> "Operator":
    """An operator watching ``ns`` with the token of service account ``account`` (in OPERATOR_NS)."""
    token = kubectl("create", "token", account, "-n", OPERATOR_NS, "--duration=1h").stdout.strip()
    kc = write_kubeconfig(work / "kubeconfig", kube_apiserver.url, kube_apiserver.ca_file, token,
                          user=f"system:serviceaccount:{OPERATOR_NS}:{account}")
    return start_operator(kc, work, f"--namespace={ns}", "--peering=pythanos-operator", name=name)


def start_operator(kubeconfig: Path, work: Path, *args: str, name: str = "operator") -> Operator:
    health, metrics = free_ports(2)
    log = work / f"{name}.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHANOS_OPERATOR_RETRY_DELAY": "2",
           "PYTHANOS_OPERATOR_SECRET_RESYNC": "1", "PYTHANOS_COMPONENT_IMAGE": "pythanos:test",
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pythanos_operator.main", f"--liveness=http://127.0.0.1:{health}/healthz",
         f"--metrics-address=127.0.0.1:{metrics}", *args],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=str(work))
    op = Operator(proc, log, health, metrics)
    try:
        wait_for(lambda: op.alive() and op.get(health, "/healthz")[0] == 200, 60, "operator /healthz")
    except AssertionError:
        proc.kill()
        raise AssertionError(f"operator did not come up:\n{op.output()[-4000:]}")
    return op


def stop_operator(op: Operator) -> None:
    op.proc.terminate()
    try:
        op.proc.wait(15)
    except subprocess.TimeoutExpired:
        op.proc.kill()
        op.proc.wait(5)


@pytest.fixture(scope="module")
def installed(kubectl, pythanos_crds):
    """The operator install (manifests/: CRDs, namespace, peering, RBAC, Deployment) applied as users do."""
    kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "manifests"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            "crd/clusterkopfpeerings.kopf.dev", "crd/kopfpeerings.kopf.dev")
    return True


@pytest.fixture(scope="module")
def operator_kubeconfig(installed, kubectl, kube_apiserver, tmp_path_factory) -> Path:
    """A kubeconfig for the operator's ServiceAccount (so the RBAC of manifests/ is what it gets)."""
    token = kubectl("create", "token", "pythanos-operator", "-n", OPERATOR_NS, "--duration=2h").stdout.strip()
    work = tmp_path_factory.mktemp("operator-sa")
    return write_kubeconfig(work / "kubeconfig", kube_apiserver.url, kube_apiserver.ca_file, token,
                            user="system:serviceaccount:pythanos-system:pythanos-operator")


@pytest.fixture(scope="module")
def operator(operator_kubeconfig, tmp_path_factory, request):
    work = tmp_path_factory.mktemp("operator")
    op = start_operator(operator_kubeconfig, work, "--standalone")
    yield op
    alive = op.alive()
    stop_operator(op)
    assert alive, f"the operator died:\n{op.output()[-6000:]}"


@pytest.fixture
def op_log(operator, request):
    """Print the operator's log tail when a test fails."""
    start = len(operator.output())
    yield operator
    if not operator.alive():
        pytest.fail(f"the operator died:\n{operator.output()[-6000:]}")
    # shown by pytest only when the test failed
    sys.stdout.write("---- operator log during this test ----\n" + operator.output()[start:][-8000:])


# ---------------------------------------------------------------------------------------------- helpers

def kget(kubectl, kind: str, name: str, ns: str) -> dict | None:
    r = kubectl("get", kind, name, "-o", "json", "--show-managed-fields", namespace=ns, check=False)
    if r.returncode != 0:
        if "NotFound" in r.stderr or "not found" in r.stderr:
            return None
        raise AssertionError(r.stderr)
    return json.loads(r.stdout)


def cond(obj: dict | None, ctype: str) -> dict:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c
    return {}


def wait_cond(kubectl, kind, name, ns, ctype, status, reason=None, timeout=TIMEOUT) -> dict:
    seen: list = [None]

    def ok():
        o = kget(kubectl, kind, name, ns)
        seen[0] = (o or {}).get("status")
        c = cond(o, ctype)
        return o if c.get("status") == status and (reason is None or c.get("reason") == reason) else None
    try:
        return wait_for(ok, timeout, f"{kind} {ns}/{name} {ctype}={status} {reason or ''}")
    except AssertionError as e:
        raise AssertionError(f"{e}\nlast status: {json.dumps(seen[0], indent=1)}") from None


def patch_status(kubectl, kind, name, ns, status: dict) -> None:
    kubectl("patch", kind, name, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}),
            namespace=ns)


def args_of(obj: dict, container: str) -> list[str]:
    return next(c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == container)["args"]


def apply_examples(kubectl, ns: str, *files: str) -> None:
    files = files or ("objstore-secret.yaml", "thanoscluster.yaml", "prometheusha-eu1.yaml", "prometheusha-us1.yaml")
    for f in files:
        kubectl("apply", "--server-side", "-f", str(EXAMPLES / f), namespace=ns)


def events_for(kubectl, ns: str, name: str) -> list[dict]:
    return [e for e in kubectl.json("get", "events", namespace=ns)["items"]
            if e["involvedObject"].get("name") == name]


# ---------------------------------------------------------------------------------------------- tests

def test_examples_render_children_with_owner_refs_and_flags(kubectl, namespace, op_log):
    ns = namespace
    kubectl("apply", "--server-side", "-k", str(EXAMPLES), namespace=ns)   # as the README says
    tc = wait_for(lambda: kget(kubectl, "thanoscluster", "demo", ns), what="tc")
    eu1 = kget(kubectl, "prometheusha", "eu1", ns)
    us1 = kget(kubectl, "prometheusha", "us1", ns)

    sts_us1 = wait_for(lambda: kget(kubectl, "statefulset", "prometheus-us1", ns), what="sts us1")
    sts_eu1 = wait_for(lambda: kget(kubectl, "statefulset", "prometheus-eu1", ns), what="sts eu1")
    assert sts_us1["spec"]["replicas"] == 2 and sts_eu1["spec"]["replicas"] == 1
    for sts, owner in ((sts_us1, us1), (sts_eu1, eu1)):
        assert sts["metadata"]["ownerReferences"] == [{
            "apiVersion": "pythanos.io/v1alpha1", "kind": "PrometheusHA", "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        side = args_of(sts, "thanos-sidecar")
        assert side[0] == "sidecar" and "--objstore.config-file=/etc/thanos/objstore/objstore.yml" in side
        assert any(c["image"] == "pythanos:test" for c in sts["spec"]["template"]["spec"]["containers"])
        mf = {m["manager"] for m in sts["metadata"]["managedFields"]}
        assert "pythanos-operator" in mf
    cm = wait_for(lambda: kget(kubectl, "configmap", "prometheus-us1-config", ns), what="config")
    cfg = yaml.safe_load(cm["data"]["prometheus.yaml.tmpl"])
    assert cfg["global"]["external_labels"] == {"cluster": "us1", "replica": "$(POD_NAME)"}
    svc = kget(kubectl, "service", "prometheus-us1", ns)
    assert svc["spec"]["clusterIP"] == "None" and any(p["name"] == "grpc" and p["port"] == 10901
                                                       for p in svc["spec"]["ports"])
    assert wait_for(lambda: kget(kubectl, "pdb", "prometheus-us1", ns), what="pdb us1")
    assert kget(kubectl, "pdb", "prometheus-eu1", ns) is None

    q = wait_for(lambda: kget(kubectl, "deployment", "thanos-query-demo", ns), what="querier")
    assert q["metadata"]["ownerReferences"][0]["uid"] == tc["metadata"]["uid"]
    assert "--query.replica-label=replica" in args_of(q, "thanos-query")
    sd = wait_for(lambda: kget(kubectl, "configmap", "thanos-query-demo-endpoints", ns), what="sd")

    def endpoints():
        got = yaml.safe_load(kget(kubectl, "configmap", "thanos-query-demo-endpoints", ns)["data"]["endpoints.yaml"])
        return got if len(got["endpoints"]) == 3 else None
    assert wait_for(endpoints, what="3 endpoints") == {"endpoints": [
        {"address": f"dnssrv+_grpc._tcp.prometheus-eu1.{ns}.svc"},
        {"address": f"dnssrv+_grpc._tcp.prometheus-us1.{ns}.svc"},
        {"address": f"dnssrv+_grpc._tcp.thanos-store-demo.{ns}.svc"}]}
    assert sd["metadata"]["ownerReferences"][0]["kind"] == "ThanosCluster"
    compact = wait_for(lambda: kget(kubectl, "statefulset", "thanos-compact-demo", ns), what="compactor")
    assert compact["spec"]["replicas"] == 1 and compact["spec"]["volumeClaimTemplates"]
    assert "--deduplication.replica-label=replica" in args_of(compact, "thanos-compact")
    assert wait_for(lambda: kget(kubectl, "statefulset", "thanos-store-demo", ns), what="store")
    assert kget(kubectl, "service", "thanos-store-demo", ns)["spec"]["clusterIP"] == "None"

    # Status: reconciled, nothing ready yet (no kubelet here).
    o = wait_cond(kubectl, "prometheusha", "us1", ns, "Ready", "False", "NoPodReady")
    assert cond(o, "Reconciled")["status"] == "True"
    assert o["status"]["observedGeneration"] == o["metadata"]["generation"]
    assert o["status"]["thanosCluster"] == "demo"
    t = wait_cond(kubectl, "thanoscluster", "demo", ns, "Reconciled", "True")
    assert t["status"]["members"] == 2 and t["status"]["replicaLabels"] == ["replica"]
    # printer columns read what we write
    out = kubectl("get", "pha", namespace=ns).stdout
    assert "NoPodReady" in out and "us1" in out


def test_status_follows_workload_status(kubectl, namespace, op_log):
    ns = namespace
    apply_examples(kubectl, ns)
    wait_for(lambda: kget(kubectl, "statefulset", "prometheus-us1", ns), what="sts")
    wait_cond(kubectl, "prometheusha", "us1", ns, "Available", "False", "NoPodReady")
    patch_status(kubectl, "statefulset", "prometheus-us1", ns, {"replicas": 2, "readyReplicas": 1})
    o = wait_cond(kubectl, "prometheusha", "us1", ns, "Ready", "False", "SomePodsNotReady")
    assert "1/2 ready" in cond(o, "Available")["message"]
    assert o["status"]["readyReplicas"] == 1 and o["status"]["replicas"] == 2
    patch_status(kubectl, "statefulset", "prometheus-us1", ns, {"replicas": 2, "readyReplicas": 2})
    o = wait_cond(kubectl, "prometheusha", "us1", ns, "Ready", "True", "AllPodsReady")
    assert cond(o, "Available")["status"] == "True" and o["status"]["availableReplicas"] == 2

    # the ThanosCluster's Ready summarises querier, store gateway and compactor
    wait_cond(kubectl, "thanoscluster", "demo", ns, "Ready", "False", "NoPodReady")
    for kind, name, st in (("deployment", "thanos-query-demo", {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}),
                           ("statefulset", "thanos-store-demo", {"replicas": 1, "readyReplicas": 1})):
        wait_for(lambda: kget(kubectl, kind, name, ns), what=name)
        patch_status(kubectl, kind, name, ns, st)
    wait_cond(kubectl, "thanoscluster", "demo", ns, "Ready", "False", "SomePodsNotReady")
    wait_for(lambda: kget(kubectl, "statefulset", "thanos-compact-demo", ns), what="compactor")
    patch_status(kubectl, "statefulset", "thanos-compact-demo", ns, {"replicas": 1, "readyReplicas": 1})
    wait_cond(kubectl, "thanoscluster", "demo", ns, "Ready", "True", "AllPodsReady")


def test_scale_down_prunes_pdb_and_spec_is_never_written(kubectl, namespace, op_log):
    ns = namespace
    apply_examples(kubectl, ns)
    wait_for(lambda: kget(kubectl, "pdb", "prometheus-us1", ns), what="pdb")
    before = {(k, n): kget(kubectl, k, n, ns)["spec"] for k, n in
              (("prometheusha", "us1"), ("prometheusha", "eu1"), ("thanoscluster", "demo"))}
    # Server-side apply dry run of the original YAML: nothing to change (the operator wrote no spec).
    wait_cond(kubectl, "thanoscluster", "demo", ns, "Reconciled", "True")
    for f in ("thanoscluster.yaml", "prometheusha-eu1.yaml", "prometheusha-us1.yaml"):
        r = kubectl("diff", "--server-side", "-f", str(EXAMPLES / f), namespace=ns, check=False)
        assert r.returncode == 0, f"{f} differs from the live object:\n{r.stdout}{r.stderr}"
    for (k, n), spec in before.items():
        assert kget(kubectl, k, n, ns)["spec"] == spec
        mf = [m for m in kget(kubectl, k, n, ns)["metadata"]["managedFields"] if "f:spec" in json.dumps(m)]
        assert {m["manager"] for m in mf} == {"kubectl"}, mf

    # through the scale subresource (spec.replicas, status.replicas, status.selector)
    kubectl("scale", "prometheusha", "us1", "--replicas=1", namespace=ns)
    wait_for(lambda: kget(kubectl, "pdb", "prometheus-us1", ns) is None, what="pdb pruned")
    assert kget(kubectl, "statefulset", "prometheus-us1", ns)["spec"]["replicas"] == 1
    o = wait_for(lambda: (lambda x: x if x["status"].get("observedGeneration") == 2 else None)(
        kget(kubectl, "prometheusha", "us1", ns)), what="observedGeneration 2")
    assert cond(o, "Reconciled")["observedGeneration"] == 2
    scale = json.loads(kubectl("get", "--raw", f"/apis/pythanos.io/v1alpha1/namespaces/{ns}/prometheushas/us1/scale").stdout)
    assert scale["spec"]["replicas"] == 1
    assert scale["status"]["selector"] == "app.kubernetes.io/name=prometheus,pythanos.io/prometheusha=us1"


def test_immutable_statefulset_change_recreates_it(kubectl, namespace, kube_controller_manager, op_log):
    """Adding storage changes volumeClaimTemplates (immutable): orphan-delete and re-apply, not a wedge.
    (The garbage collector completes an orphaning delete, hence kube-controller-manager.)"""
    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml", "thanoscluster.yaml", "prometheusha-eu1.yaml")
    old = wait_for(lambda: kget(kubectl, "statefulset", "prometheus-eu1", ns), what="sts")
    kubectl("patch", "prometheusha", "eu1", "--type=merge", "-p", '{"spec":{"storage":{"size":"1Gi"}}}', namespace=ns)

    def recreated():
        sts = kget(kubectl, "statefulset", "prometheus-eu1", ns)
        return sts if sts and sts["metadata"]["uid"] != old["metadata"]["uid"] else None
    sts = wait_for(recreated, what="sts recreated")
    vct = sts["spec"]["volumeClaimTemplates"][0]
    assert vct["metadata"]["name"] == "data" and vct["spec"]["resources"]["requests"]["storage"] == "1Gi"
    wait_cond(kubectl, "prometheusha", "eu1", ns, "Reconciled", "True")


def test_external_label_conflict(kubectl, namespace, op_log):
    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml", "thanoscluster.yaml", "prometheusha-eu1.yaml")
    wait_cond(kubectl, "prometheusha", "eu1", ns, "Reconciled", "True")
    sts_before = kget(kubectl, "statefulset", "prometheus-eu1", ns)
    dup = yaml.safe_load((EXAMPLES / "prometheusha-eu1.yaml").read_text())
    dup["metadata"]["name"] = "eu1-again"
    dup["spec"]["replicas"] = 2
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(dup), namespace=ns)

    o = wait_cond(kubectl, "prometheusha", "eu1-again", ns, "Ready", "False", "ExternalLabelsConflict")
    msg = cond(o, "Reconciled")["message"]
    assert "eu1" in msg and "cluster='eu1'" in msg, msg
    ev = wait_for(lambda: [e for e in events_for(kubectl, ns, "eu1-again") if e["reason"] == "ExternalLabelsConflict"],
                  what="conflict event")
    assert ev[0]["type"] == "Warning" and f"{ns}/eu1" in ev[0]["message"]
    # no workload for the later one; the earlier one keeps running, untouched (the condition above was
    # written by the reconcile that refused it, so there is nothing to wait for)
    assert kget(kubectl, "statefulset", "prometheus-eu1-again", ns) is None
    assert kget(kubectl, "statefulset", "prometheus-eu1", ns)["metadata"]["generation"] == \
        sts_before["metadata"]["generation"]
    assert cond(kget(kubectl, "prometheusha", "eu1", ns), "Reconciled")["status"] == "True"
    sd = yaml.safe_load(kget(kubectl, "configmap", "thanos-query-demo-endpoints", ns)["data"]["endpoints.yaml"])
    assert not any("eu1-again" in e["address"] for e in sd["endpoints"])

    # making the labels unique resolves it
    kubectl("patch", "prometheusha", "eu1-again", "--type=merge", "-p",
            '{"spec":{"externalLabels":{"cluster":"eu2"}}}', namespace=ns)
    wait_cond(kubectl, "prometheusha", "eu1-again", ns, "Reconciled", "True")
    assert wait_for(lambda: kget(kubectl, "statefulset", "prometheus-eu1-again", ns), what="sts after fix")

    def in_sd():
        d = yaml.safe_load(kget(kubectl, "configmap", "thanos-query-demo-endpoints", ns)["data"]["endpoints.yaml"])
        return any("prometheus-eu1-again" in e["address"] for e in d["endpoints"])
    wait_for(in_sd, what="endpoint added")


def test_missing_object_storage_secret(kubectl, namespace, operator, op_log):
    ns = namespace
    apply_examples(kubectl, ns, "thanoscluster.yaml", "prometheusha-eu1.yaml")
    t = wait_cond(kubectl, "thanoscluster", "demo", ns, "Ready", "False", "ObjectStorageSecretMissing")
    assert "thanos-objstore" in cond(t, "Reconciled")["message"]
    wait_cond(kubectl, "prometheusha", "eu1", ns, "Ready", "False", "ObjectStorageSecretMissing")
    assert wait_for(lambda: [e for e in events_for(kubectl, ns, "demo") if e["reason"] == "ObjectStorageSecretMissing"],
                    what="event")
    assert kget(kubectl, "deployment", "thanos-query-demo", ns) is None
    assert kget(kubectl, "statefulset", "prometheus-eu1", ns) is None
    assert operator.alive() and operator.get(operator.health_port, "/healthz")[0] == 200
    # the Secret appears: the retry (2 s here) picks it up
    apply_examples(kubectl, ns, "objstore-secret.yaml")
    wait_cond(kubectl, "thanoscluster", "demo", ns, "Reconciled", "True")
    wait_cond(kubectl, "prometheusha", "eu1", ns, "Reconciled", "True")
    assert kget(kubectl, "deployment", "thanos-query-demo", ns)
    assert kget(kubectl, "statefulset", "prometheus-eu1", ns)


CHILD_KINDS = "statefulsets,deployments,services,configmaps,poddisruptionbudgets"


def annotation(obj: dict | None, key: str = "pythanos.io/grpc-tls-ca-sha256") -> str | None:
    return (((obj or {}).get("spec") or {}).get("template", {}).get("metadata", {}).get("annotations") or {}).get(key)


def volumes_of(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["volumes"]


def mounts_of(obj: dict, container: str) -> list[dict]:
    return next(c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == container)["volumeMounts"]


def apply_secret(kubectl, ns: str, secret: dict) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(secret), namespace=ns)


def tls_cluster(ns: str, server_name: str | None = None) -> str:
    tc = yaml.safe_load((EXAMPLES / "thanoscluster.yaml").read_text())
    tc["spec"]["grpcTLS"] = {"secretName": "demo-grpc-tls", "serverName": server_name or f"thanos-grpc.{ns}.svc"}
    return yaml.safe_dump(tc)


def test_grpc_tls_secret_missing_invalid_then_rendered_and_rolled(kubectl, namespace, tmp_path, op_log):
    """ThanosCluster.spec.grpcTLS through the real API server, under the operator's own RBAC (get on Secrets,
    by name): a missing Secret, then one lacking its CA, is a condition and an Event on the cluster and on the
    member inheriting it, with nothing rendered; the complete Secret renders TLS everywhere gRPC is served
    or dialled; a renewed certificate rolls nothing, a new CA rolls the pods that read it; a deleted Secret is
    reported again and the workloads stay as they were."""
    from tlsfiles import make_pki, reissue, tls_secret

    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml", "prometheusha-eu1.yaml")
    kubectl("apply", "--server-side", "-f", "-", input=tls_cluster(ns), namespace=ns)
    t = wait_cond(kubectl, "thanoscluster", "demo", ns, "Ready", "False", "TLSSecretNotFound")
    msg = cond(t, "Reconciled")["message"]
    assert "spec.grpcTLS" in msg and "Secret demo-grpc-tls not found" in msg and ns in msg, msg
    p = wait_cond(kubectl, "prometheusha", "eu1", ns, "Ready", "False", "TLSSecretNotFound")
    assert "spec.grpcTLS of ThanosCluster demo" in cond(p, "Reconciled")["message"]
    for who in ("demo", "eu1"):
        wait_for(lambda: [e for e in events_for(kubectl, ns, who) if e["reason"] == "TLSSecretNotFound"
                          and e["type"] == "Warning"], what=f"TLSSecretNotFound event on {who}")
    assert children(kubectl, ns) == {}, "nothing rendered half-way"

    pki = make_pki(tmp_path / "pki", f"thanos-grpc.{ns}.svc")
    apply_secret(kubectl, ns, tls_secret("demo-grpc-tls", pki, keys=("tls.crt", "tls.key")))
    t = wait_cond(kubectl, "thanoscluster", "demo", ns, "Ready", "False", "TLSSecretInvalid")
    assert "Secret demo-grpc-tls has no key ca.crt (the CA; keys: tls.crt, tls.key)" in cond(t, "Reconciled")["message"]
    wait_cond(kubectl, "prometheusha", "eu1", ns, "Ready", "False", "TLSSecretInvalid")
    wait_for(lambda: [e for e in events_for(kubectl, ns, "demo") if e["reason"] == "TLSSecretInvalid"],
             what="TLSSecretInvalid event")
    assert children(kubectl, ns) == {}

    apply_secret(kubectl, ns, tls_secret("demo-grpc-tls", pki))
    wait_cond(kubectl, "thanoscluster", "demo", ns, "Reconciled", "True")
    wait_cond(kubectl, "prometheusha", "eu1", ns, "Reconciled", "True")
    ca1 = hashlib.sha256(pki.read("ca.crt")).hexdigest()
    d = "/etc/thanos/grpc-tls"
    server = [f"--grpc-server-tls-cert={d}/tls.crt", f"--grpc-server-tls-key={d}/tls.key",
              f"--grpc-server-tls-client-ca={d}/ca.crt"]
    client = ["--grpc-client-tls-secure", f"--grpc-client-tls-cert={d}/tls.crt", f"--grpc-client-tls-key={d}/tls.key",
              f"--grpc-client-tls-ca={d}/ca.crt", f"--grpc-client-server-name=thanos-grpc.{ns}.svc"]
    vol = {"name": "grpc-tls", "secret": {"secretName": "demo-grpc-tls", "defaultMode": 420}}   # as served
    mount = {"name": "grpc-tls", "mountPath": d, "readOnly": True}
    q = wait_for(lambda: kget(kubectl, "deployment", "thanos-query-demo", ns), what="querier")
    assert args_of(q, "thanos-query")[-len(server + client):] == server + client
    assert vol in volumes_of(q) and mount in mounts_of(q, "thanos-query") and annotation(q) == ca1
    store = wait_for(lambda: kget(kubectl, "statefulset", "thanos-store-demo", ns), what="store")
    assert args_of(store, "thanos-store")[-3:] == server and vol in volumes_of(store) and annotation(store) == ca1
    sts = wait_for(lambda: kget(kubectl, "statefulset", "prometheus-eu1", ns), what="eu1")
    assert args_of(sts, "thanos-sidecar")[-3:] == server and annotation(sts) == ca1
    assert mount in mounts_of(sts, "thanos-sidecar") and mount not in mounts_of(sts, "prometheus")
    compact = wait_for(lambda: kget(kubectl, "statefulset", "thanos-compact-demo", ns), what="compactor")
    assert not [a for a in args_of(compact, "thanos-compact") if "tls" in a] and annotation(compact) is None
    for o in (q, store, sts):   # readiness stays HTTP
        for c in o["spec"]["template"]["spec"]["containers"]:
            assert "httpGet" in c["readinessProbe"], c["name"]

    # A renewed certificate (same CA): a reconcile that reads it (started here by a label on the cluster,
    # which kopf hands to the update handler; kopf records the label once the handler succeeded) renders
    # the same pods: nothing rolls.
    gen = {k: kget(kubectl, k, n, ns)["metadata"]["generation"] for k, n in
           (("deployment", "thanos-query-demo"), ("statefulset", "prometheus-eu1"))}
    apply_secret(kubectl, ns, tls_secret("demo-grpc-tls", reissue(pki)))
    kubectl("label", "thanoscluster", "demo", "renewed=yes", namespace=ns)
    wait_for(lambda: '"renewed":"yes"' in kget(kubectl, "thanoscluster", "demo", ns)["metadata"]["annotations"]
             .get("pythanos.io/last-handled-configuration", ""), what="the update handler after the renewal")
    q = kget(kubectl, "deployment", "thanos-query-demo", ns)
    assert (q["metadata"]["generation"], annotation(q)) == (gen["deployment"], ca1)
    # A new CA: the pods that read it roll (found by the resync thread: no change to any custom resource).
    pki2 = make_pki(tmp_path / "pki2", f"thanos-grpc.{ns}.svc", ca_name="test-ca-2")
    apply_secret(kubectl, ns, tls_secret("demo-grpc-tls", pki2))
    ca2 = hashlib.sha256(pki2.read("ca.crt")).hexdigest()
    q = wait_for(lambda: (lambda o: o if annotation(o) == ca2 else None)(
        kget(kubectl, "deployment", "thanos-query-demo", ns)), what="the querier rolled to the new CA")
    sts = wait_for(lambda: (lambda o: o if annotation(o) == ca2 else None)(
        kget(kubectl, "statefulset", "prometheus-eu1", ns)), what="the sidecars rolled to the new CA")
    assert q["metadata"]["generation"] > gen["deployment"] and sts["metadata"]["generation"] > gen["statefulset"]
    wait_for(lambda: "gRPC TLS Secret" in op_log.output() and f"ThanosCluster {ns}/demo" in op_log.output(),
             what="the resync's log line")

    # The Secret deleted: reported again (no change of any custom resource needed: the resync thread reads
    # it), with a new Event; workloads unchanged.
    def not_found_events() -> list[dict]:
        return [e for e in events_for(kubectl, ns, "demo") if e["reason"] == "TLSSecretNotFound"]
    n_events = len(not_found_events())
    kubectl("delete", "secret", "demo-grpc-tls", namespace=ns)
    wait_cond(kubectl, "thanoscluster", "demo", ns, "Ready", "False", "TLSSecretNotFound")
    wait_cond(kubectl, "prometheusha", "eu1", ns, "Ready", "False", "TLSSecretNotFound")
    wait_for(lambda: len(not_found_events()) > n_events, what="a new TLSSecretNotFound event")
    assert kget(kubectl, "deployment", "thanos-query-demo", ns)["metadata"]["generation"] == q["metadata"]["generation"]
    apply_secret(kubectl, ns, tls_secret("demo-grpc-tls", pki2))
    wait_cond(kubectl, "thanoscluster", "demo", ns, "Reconciled", "True")
    wait_cond(kubectl, "prometheusha", "eu1", ns, "Reconciled", "True")
    assert kget(kubectl, "deployment", "thanos-query-demo", ns)["metadata"]["generation"] == q["metadata"]["generation"]


def test_tls_sidecars_under_a_plaintext_querier(kubectl, namespace, tmp_path, op_log):
    """A member whose sidecars serve TLS while its ThanosCluster's queriers dial in plaintext is refused
    (GRPCTLSMismatch, an Event, its workload as it was); TLS on the cluster resolves it."""
    from tlsfiles import make_pki, tls_secret

    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml", "thanoscluster.yaml", "prometheusha-eu1.yaml")
    wait_cond(kubectl, "prometheusha", "eu1", ns, "Reconciled", "True")
    before = kget(kubectl, "statefulset", "prometheus-eu1", ns)
    pki = make_pki(tmp_path / "pki", f"thanos-grpc.{ns}.svc")
    apply_secret(kubectl, ns, tls_secret("demo-grpc-tls", pki))
    kubectl("patch", "prometheusha", "eu1", "--type=merge", "-p",
            json.dumps({"spec": {"sidecar": {"grpcTLS": {"secretName": "demo-grpc-tls"}}}}), namespace=ns)
    o = wait_cond(kubectl, "prometheusha", "eu1", ns, "Ready", "False", "GRPCTLSMismatch")
    msg = cond(o, "Reconciled")["message"]
    assert "ThanosCluster demo has no spec.grpcTLS" in msg and "plaintext" in msg, msg
    ev = wait_for(lambda: [e for e in events_for(kubectl, ns, "eu1") if e["reason"] == "GRPCTLSMismatch"],
                  what="mismatch event")
    assert ev[0]["type"] == "Warning"
    assert kget(kubectl, "statefulset", "prometheus-eu1", ns)["metadata"]["generation"] == \
        before["metadata"]["generation"], "the running sidecars keep serving what the querier dials"

    kubectl("apply", "--server-side", "-f", "-", input=tls_cluster(ns), namespace=ns)
    wait_cond(kubectl, "prometheusha", "eu1", ns, "Reconciled", "True")
    wait_for(lambda: "--grpc-server-tls-cert=/etc/thanos/grpc-tls/tls.crt" in
             args_of(kget(kubectl, "statefulset", "prometheus-eu1", ns), "thanos-sidecar"), what="TLS sidecars")
    wait_for(lambda: "--grpc-client-tls-secure" in args_of(kget(kubectl, "deployment", "thanos-query-demo", ns),
                                                           "thanos-query"), what="a TLS querier")


def children(kubectl, ns: str) -> dict[tuple[str, str], dict]:
    """Every object the operator manages in ``ns``, by (kind, name)."""
    items = kubectl.json("get", CHILD_KINDS, "-l", "app.kubernetes.io/managed-by=pythanos-operator", namespace=ns)
    return {(o["kind"], o["metadata"]["name"]): o for o in items["items"]}


def test_drift_is_repaired_without_a_loop(kubectl, namespace, op_log):
    """Children edited or deleted by hand come back as rendered, with no change to the custom resources and
    no operator restart; the repair leaves every other child untouched (a no-op server-side apply does not
    bump resourceVersion) and nothing loops afterwards."""
    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml", "thanoscluster.yaml", "prometheusha-us1.yaml")
    wait_cond(kubectl, "prometheusha", "us1", ns, "Reconciled", "True")
    wait_cond(kubectl, "thanoscluster", "demo", ns, "Reconciled", "True")

    def settled():   # the cluster has its member (endpoints and compactor flags follow the member's arrival)
        sd = kget(kubectl, "configmap", "thanos-query-demo-endpoints", ns)
        return sd and "prometheus-us1" in sd["data"]["endpoints.yaml"]
    wait_for(settled, what="us1 in the querier's endpoints")
    before = children(kubectl, ns)
    assert {("StatefulSet", "prometheus-us1"), ("Service", "prometheus-us1"), ("Deployment", "thanos-query-demo"),
            ("ConfigMap", "thanos-query-demo-endpoints"), ("PodDisruptionBudget", "prometheus-us1")} <= set(before)
    log_start = len(op_log.output())

    def drifts() -> list[str]:
        return [ln for ln in op_log.output()[log_start:].splitlines() if "drift: " in ln and f" {ns}/" in ln]

    # a Service removed (PrometheusHA child)
    uid = before[("Service", "prometheus-us1")]["metadata"]["uid"]
    kubectl("delete", "service", "prometheus-us1", namespace=ns)
    svc = wait_for(lambda: (lambda o: o if o and o["metadata"]["uid"] != uid else None)(
        kget(kubectl, "service", "prometheus-us1", ns)), what="Service prometheus-us1 re-created")
    assert svc["spec"]["clusterIP"] == "None" and svc["metadata"]["ownerReferences"][0]["kind"] == "PrometheusHA"

    # a StatefulSet scaled by hand
    kubectl("scale", "statefulset", "prometheus-us1", "--replicas=5", namespace=ns)
    wait_for(lambda: kget(kubectl, "statefulset", "prometheus-us1", ns)["spec"]["replicas"] == 2,
             what="StatefulSet prometheus-us1 back to 2 replicas")

    # a container flag changed (ThanosCluster child)
    q_args = args_of(before[("Deployment", "thanos-query-demo")], "thanos-query")
    i = q_args.index("--log.level=info")
    kubectl("patch", "deployment", "thanos-query-demo", "--type=json", "-p", json.dumps(
        [{"op": "replace", "path": f"/spec/template/spec/containers/0/args/{i}", "value": "--log.level=debug"}]),
        namespace=ns)
    wait_for(lambda: args_of(kget(kubectl, "deployment", "thanos-query-demo", ns), "thanos-query") == q_args,
             what="the querier's flags restored")

    # a ConfigMap edited
    kubectl("patch", "configmap", "thanos-query-demo-endpoints", "--type=merge", "-p",
            json.dumps({"data": {"endpoints.yaml": "endpoints: []\n"}}), namespace=ns)
    wait_for(lambda: kget(kubectl, "configmap", "thanos-query-demo-endpoints", ns)["data"] ==
             before[("ConfigMap", "thanos-query-demo-endpoints")]["data"], what="the endpoints ConfigMap restored")
    assert len(drifts()) >= 4, drifts()
    assert cond(kget(kubectl, "prometheusha", "us1", ns), "Reconciled")["status"] == "True"

    # Untouched children kept their resourceVersion through four repairs (each a full reconcile of the owner)
    touched = {("Service", "prometheus-us1"), ("StatefulSet", "prometheus-us1"), ("Deployment", "thanos-query-demo"),
               ("ConfigMap", "thanos-query-demo-endpoints")}
    now = children(kubectl, ns)
    assert set(now) == set(before)
    moved = {k: (before[k]["metadata"]["resourceVersion"], now[k]["metadata"]["resourceVersion"])
             for k in set(before) - touched if before[k]["metadata"]["resourceVersion"] !=
             now[k]["metadata"]["resourceVersion"]}
    assert not moved, f"untouched children rewritten by the repairs: {moved}"

    # No loop: two more events through the operator (workload status, which it turns into the owner's status)
    # and nothing changed meanwhile, nor was any drift seen in them.
    n_drifts = len(drifts())
    patch_status(kubectl, "statefulset", "prometheus-us1", ns, {"replicas": 2, "readyReplicas": 1})
    wait_cond(kubectl, "prometheusha", "us1", ns, "Available", "False", "SomePodsNotReady")
    patch_status(kubectl, "statefulset", "prometheus-us1", ns, {"replicas": 2, "readyReplicas": 2})
    wait_cond(kubectl, "prometheusha", "us1", ns, "Ready", "True", "AllPodsReady")
    later = children(kubectl, ns)
    changed = {k: (now[k]["metadata"]["resourceVersion"], later[k]["metadata"]["resourceVersion"])
               for k in now if k != ("StatefulSet", "prometheus-us1")
               and now[k]["metadata"]["resourceVersion"] != later[k]["metadata"]["resourceVersion"]}
    assert not changed, f"children still being rewritten after the repairs: {changed}"
    sts_now, sts_later = now[("StatefulSet", "prometheus-us1")], later[("StatefulSet", "prometheus-us1")]
    assert sts_later["metadata"]["generation"] == sts_now["metadata"]["generation"]
    assert len(drifts()) == n_drifts, drifts()[n_drifts:]


def test_deleting_thanoscluster_collects_its_children(kubectl, namespace, kube_controller_manager, op_log):
    ns = namespace
    apply_examples(kubectl, ns)
    for kind, name in (("deployment", "thanos-query-demo"), ("statefulset", "thanos-compact-demo"),
                       ("configmap", "thanos-query-demo-endpoints"), ("statefulset", "prometheus-eu1")):
        wait_for(lambda: kget(kubectl, kind, name, ns), what=name)
    kubectl("delete", "thanoscluster", "demo", "--wait=true", "--timeout=60s", namespace=ns)
    for kind, name in (("deployment", "thanos-query-demo"), ("statefulset", "thanos-compact-demo"),
                       ("statefulset", "thanos-store-demo"), ("service", "thanos-query-demo"),
                       ("configmap", "thanos-query-demo-endpoints")):
        wait_for(lambda: kget(kubectl, kind, name, ns) is None, 60, f"{kind} {name} collected")
    # members stay and keep running as they were; their dangling reference is reported
    sts_before = kget(kubectl, "statefulset", "prometheus-eu1", ns)
    o = wait_cond(kubectl, "prometheusha", "eu1", ns, "Ready", "False", "ThanosClusterNotFound")
    assert "demo" in cond(o, "Reconciled")["message"]
    assert kget(kubectl, "statefulset", "prometheus-eu1", ns)["metadata"]["generation"] == \
        sts_before["metadata"]["generation"]
    # a PrometheusHA without a reference renders standalone (no upload)
    kubectl("patch", "prometheusha", "eu1", "--type=json", "-p", '[{"op":"remove","path":"/spec/thanosClusterRef"}]',
            namespace=ns)

    def standalone():
        sts = kget(kubectl, "statefulset", "prometheus-eu1", ns)
        return not any(a.startswith("--objstore") for a in args_of(sts, "thanos-sidecar"))
    wait_for(standalone, what="eu1 re-rendered without the cluster")
    o = wait_cond(kubectl, "prometheusha", "eu1", ns, "Reconciled", "True")
    assert "thanosCluster" not in o["status"]


def test_a_stale_body_of_a_deleted_thanoscluster_renders_nothing(kubectl, kube_client, namespace, pythanos_crds):
    """A reconcile that starts from a ThanosCluster its snapshot of kopf's index still holds but the API
    server no longer has (a member's late handler re-reconciling its cluster after it was deleted) creates
    no child: the body is checked against the API server first. Without the check the children were applied
    again after the garbage collector had removed them, and a member's ThanosClusterNotFound was overwritten
    (test_deleting_thanoscluster_collects_its_children, now and then under load)."""
    import logging

    from pythanos_operator import handlers
    from pythanos_operator.kube import Kube
    from pythanos_operator.spec import Defaults

    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml")   # everything the render needs, except the cluster
    stale = yaml.safe_load((EXAMPLES / "thanoscluster.yaml").read_text())
    stale["metadata"].update(namespace=ns, uid="00000000-0000-0000-0000-0000000000dd", generation=1)
    ctx = handlers.Ctx(Kube(kube_client), Defaults(component_image="pythanos:test"), [], [stale], (),
                       logging.getLogger("test"))
    handlers.reconcile_tc(ctx, stale, own=False)
    assert children(kubectl, ns) == {}
    assert ctx.tcs == [], "the gone cluster left the snapshot"


def test_metrics_and_health(operator):
    code, text = operator.get(operator.metrics_port, "/metrics")
    assert code == 200 and "pythanos_operator_reconcile_total" in text
    assert operator.get(operator.health_port, "/healthz")[0] == 200


def test_peering_keeps_one_replica_active(operator_kubeconfig, kubectl, tmp_path, operator):
    """Two more operators peered on the ClusterKopfPeering: the lower priority one pauses."""
    ops = []
    try:
        ops.append(start_operator(operator_kubeconfig, tmp_path, "--peering=pythanos-operator", "--priority=10",
                                  name="low"))
        ops.append(start_operator(operator_kubeconfig, tmp_path, "--peering=pythanos-operator", "--priority=20",
                                  name="high"))
        wait_for(lambda: "Pausing operations in favour of" in ops[0].output(), 60, "low priority pauses")
        assert "Pausing operations" not in ops[1].output()
        peering = kubectl.json("get", "clusterkopfpeering", "pythanos-operator")
        assert len(peering.get("status") or {}) >= 2
    finally:
        for op in ops:
            stop_operator(op)


def test_tls_secret_resync_follows_peering(operator_kubeconfig, kubectl, namespace, tmp_path, operator):
    """The resync thread is the operator's own, outside kopf's pause: an operator outranked by a live peer
    leaves a changed TLS Secret to that peer. (Which operator then rolls the pods is not pinned: the module's
    standalone operator watches this namespace too, and the first one to re-render makes the others see a
    drifted annotation, which they repair to the same value.)"""
    from tlsfiles import make_pki, tls_secret

    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml")
    apply_secret(kubectl, ns, tls_secret("demo-grpc-tls", make_pki(tmp_path / "pki", f"thanos-grpc.{ns}.svc")))
    ops = []
    try:
        low = start_operator(operator_kubeconfig, tmp_path, "--peering=pythanos-operator", "--priority=10", name="low")
        ops.append(low)
        kubectl("apply", "--server-side", "-f", "-", input=tls_cluster(ns), namespace=ns)
        wait_for(lambda: f"ThanosCluster {ns}/demo: applied" in low.output(), 60, "low reconciles demo")
        high = start_operator(operator_kubeconfig, tmp_path, "--peering=pythanos-operator", "--priority=20",
                              name="high")
        ops.append(high)
        wait_for(lambda: "Pausing operations in favour of" in low.output(), 60, "low priority pauses")
        wait_for(lambda: f"ThanosCluster {ns}/demo: applied" in high.output(), 60, "high resumes demo")

        pki2 = make_pki(tmp_path / "pki2", f"thanos-grpc.{ns}.svc", ca_name="test-ca-2")
        apply_secret(kubectl, ns, tls_secret("demo-grpc-tls", pki2))
        changed = f"gRPC TLS Secret {ns}/demo-grpc-tls changed;"
        wait_for(lambda: f"{changed} ThanosCluster {ns}/demo left to a peer with a higher priority" in low.output(),
                 60, "low leaves the change to high")
        ca2 = hashlib.sha256(pki2.read("ca.crt")).hexdigest()
        wait_for(lambda: annotation(kget(kubectl, "deployment", "thanos-query-demo", ns)) == ca2, what="rolled")
        assert f"{changed} reconciling ThanosCluster {ns}/demo" not in low.output()
        assert f"reconciling ThanosCluster {ns}/demo" not in low.output().split("Pausing operations")[-1]
    finally:
        for op in ops:
            stop_operator(op)


def test_namespaced_install_with_role_only(kubectl, namespace, helm_bin, kube_apiserver, tmp_path, installed):
    """The chart's watchNamespaces mode: a Role/RoleBinding in the watched namespace is all the operator
    gets (its own ServiceAccount, no ClusterRole) and it still reconciles, peers and reports."""
    ns = namespace
    chart = ROOT / "charts" / "pythanos-operator"
    out = subprocess.run([helm_bin, "template", "pythanos-operator", str(chart), "--namespace", OPERATOR_NS,
                          "--set", f"watchNamespaces={{{ns}}}", "--set", f"serviceAccount.name=op-{ns}"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d and d["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Role", "RoleBinding"}
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))
    op = _operator_as(kubectl, kube_apiserver, tmp_path, f"op-{ns}", ns, "namespaced")
    try:
        apply_examples(kubectl, ns, "objstore-secret.yaml", "thanoscluster.yaml", "prometheusha-us1.yaml")
        wait_cond(kubectl, "prometheusha", "us1", ns, "Reconciled", "True")
        wait_cond(kubectl, "thanoscluster", "demo", ns, "Reconciled", "True")
        assert kget(kubectl, "kopfpeering", "pythanos-operator", ns)
        # this operator did the work (the module's cluster-wide one may have too)
        wait_for(lambda: f"PrometheusHA {ns}/us1: applied" in op.output(), what="namespaced operator applied us1")
        wait_for(lambda: f"ThanosCluster {ns}/demo: applied" in op.output(), what="namespaced operator applied demo")
        assert "Forbidden" not in op.output() and "forbidden" not in op.output(), op.output()[-4000:]
    finally:
        stop_operator(op)


# ---------------------------------------------------------------------------------------------- least RBAC

def can(kubectl, sa: str, verb: str, resource: str, ns: str | None = None, *extra: str) -> bool:
    """``kubectl auth can-i`` as ServiceAccount ``sa`` ("namespace:name"); ns None: all namespaces."""
    where = ["-n", ns] if ns else ["--all-namespaces"]
    r = kubectl("auth", "can-i", verb, resource, *where, *extra, f"--as=system:serviceaccount:{sa}", check=False)
    assert r.returncode in (0, 1) and r.stdout.strip() in ("yes", "no"), r.stderr + r.stdout
    if "doesn't have a resource type" in r.stderr and not extra:   # a CRD not installed (PrometheusRule)
        return _reviewed(kubectl, sa, verb, resource, ns)
    return r.stdout.strip() == "yes"


def _reviewed(kubectl, sa: str, verb: str, resource: str, ns: str | None) -> bool:
    """A SubjectAccessReview with the group spelled out: kubectl cannot resolve a resource the API server
    does not serve, while RBAC rules name it all the same."""
    plural, _, group = resource.partition(".")
    attrs = {"verb": verb, "group": group, "resource": plural, **({"namespace": ns} if ns else {})}
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
        "user": f"system:serviceaccount:{sa}", "resourceAttributes": attrs,
        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{sa.split(':')[0]}", "system:authenticated"]}}
    out = kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review))
    return bool(json.loads(out.stdout)["status"].get("allowed"))


NEEDED = [("list", "prometheushas.pythanos.io"), ("watch", "thanosclusters.pythanos.io"),
          ("patch", "prometheushas.pythanos.io"), ("patch", "thanosclusters.pythanos.io", "--subresource=status"),
          ("create", "statefulsets.apps"), ("patch", "deployments.apps"), ("delete", "statefulsets.apps"),
          ("watch", "services"), ("watch", "configmaps"), ("watch", "poddisruptionbudgets.policy"),
          ("delete", "poddisruptionbudgets.policy"), ("get", "secrets"), ("create", "events"),
          ("list", "pods"), ("watch", "pods"), ("get", "prometheusrules.monitoring.coreos.com"),
          ("list", "prometheusrules.monitoring.coreos.com"), ("watch", "prometheusrules.monitoring.coreos.com"),
          ("patch", "kopfpeerings.kopf.dev"), ("get", "kopfpeerings.kopf.dev")]
NEVER = [("list", "secrets"), ("watch", "secrets"), ("create", "secrets"), ("patch", "secrets"),
         ("delete", "secrets"), ("create", "prometheusrules.monitoring.coreos.com"),
         ("patch", "prometheusrules.monitoring.coreos.com"), ("update", "prometheushas.pythanos.io"),
         ("create", "thanosclusters.pythanos.io"),
         ("delete", "prometheushas.pythanos.io"), ("get", "pods"), ("create", "pods", "--subresource=exec"),
         ("patch", "pods"), ("delete", "pods"), ("patch", "pods", "--subresource=status"),
         ("get", "events"), ("create", "events.events.k8s.io"), ("create", "rolebindings.rbac.authorization.k8s.io"),
         ("escalate", "roles.rbac.authorization.k8s.io"), ("impersonate", "serviceaccounts"), ("*", "*")]


def test_cluster_wide_rbac_is_least(kubectl, installed, namespace):
    """manifests/: what the operator needs, in every namespace; no list/watch of Secrets anywhere (a Secret is
    read by the name a custom resource gives), no writes of Secrets, pods or RBAC, no spec writes by PUT."""
    sa = f"{OPERATOR_NS}:pythanos-operator"
    for ns in (namespace, None):
        for verb, res, *extra in NEEDED:
            if ns is None and verb not in ("list", "watch"):
                continue
            assert can(kubectl, sa, verb, res, ns, *extra), (verb, res, extra, ns)
        for verb, res, *extra in NEVER:
            assert not can(kubectl, sa, verb, res, ns, *extra), (verb, res, extra, ns)
    assert can(kubectl, sa, "patch", "clusterkopfpeerings.kopf.dev", None)
    assert not can(kubectl, sa, "list", "namespaces", None)
    assert not can(kubectl, sa, "create", "customresourcedefinitions.apiextensions.k8s.io", None)


def _rbac_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d and d["kind"] in
            ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]


def test_namespaced_kustomize_install_binds_its_role_in_the_watched_namespace_only(
        kubectl, namespace, helm_bin, kube_apiserver, tmp_path, installed):
    """manifests/namespaced/ (watching ``namespace`` instead of pythanos-demo, under its own ServiceAccount name):
    no ClusterRoleBinding; the operator's permissions in the watched namespace only, exactly the chart's
    ``watchNamespaces`` mode; an operator under that identity reconciles, peers, repairs drift, never Forbidden."""
    ns, name = namespace, f"op-k-{namespace}"
    built = kubectl("kustomize", str(ROOT / "manifests" / "namespaced")).stdout.replace("pythanos-demo", ns)
    objs = [d for d in yaml.safe_load_all(built) if d]
    docs = _rbac_docs(built)
    assert sorted(d["kind"] for d in docs) == ["ClusterRole", "RoleBinding", "ServiceAccount"]
    [rb] = [d for d in docs if d["kind"] == "RoleBinding"]
    assert rb["metadata"]["namespace"] == ns and rb["roleRef"]["kind"] == "ClusterRole"
    [dep] = [d for d in objs if d["kind"] == "Deployment"]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={ns}" in args and "--peering=pythanos-operator" in args
    for d in docs:   # our own ServiceAccount name: the module's cluster-wide install keeps its own
        if d["kind"] == "ServiceAccount":
            d["metadata"]["name"] = name
        for subj in d.get("subjects") or []:
            subj["name"] = name
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs))

    # the chart's namespaced mode, for comparison
    hname = f"op-h-{ns}"
    out = subprocess.run([helm_bin, "template", "pythanos-operator", str(ROOT / "charts" / "pythanos-operator"),
                          "--namespace", OPERATOR_NS, "--set", f"watchNamespaces={{{ns}}}",
                          "--set", f"serviceAccount.name={hname}"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    helm_docs = [d for d in _rbac_docs(out) if d["kind"] != "ClusterRole"]
    assert sorted(d["kind"] for d in helm_docs) == ["Role", "RoleBinding", "ServiceAccount"]
    for d in helm_docs:   # next to the kustomize RoleBinding of the same name
        if d["kind"] in ("Role", "RoleBinding"):
            d["metadata"]["name"] = "pythanos-operator-helm"
        if d["kind"] == "RoleBinding":
            d["roleRef"]["name"] = "pythanos-operator-helm"
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(helm_docs))

    sa = f"{OPERATOR_NS}:{name}"
    for verb, res, *extra in NEEDED:
        assert can(kubectl, sa, verb, res, ns, *extra), (verb, res, extra)
    for verb, res, *extra in NEVER:
        assert not can(kubectl, sa, verb, res, ns, *extra), (verb, res, extra)
    for verb, res in (("get", "secrets"), ("list", "statefulsets.apps"), ("patch", "prometheushas.pythanos.io"),
                      ("create", "events"), ("watch", "configmaps")):
        assert not can(kubectl, sa, verb, res, "default"), (verb, res, "outside the watched namespace")
        assert not can(kubectl, sa, verb, res, None), (verb, res, "cluster-wide")
    assert not can(kubectl, sa, "patch", "clusterkopfpeerings.kopf.dev", None)
    assert not can(kubectl, sa, "list", "namespaces", None)

    def rules(sa_name: str, where: str) -> list[str]:
        lines = kubectl("auth", "can-i", "--list", "-n", where,
                        f"--as=system:serviceaccount:{OPERATOR_NS}:{sa_name}").stdout.splitlines()
        return sorted(" ".join(ln.split()) for ln in lines[1:])
    inside, outside = rules(name, ns), rules(name, "default")
    assert any(r.startswith("secrets [] [] [get]") for r in inside), inside
    assert not any("secrets" in r or "statefulsets" in r for r in outside), outside
    for where in (ns, "default"):   # the same permissions as the chart's mode, in and outside the namespace
        assert rules(name, where) == rules(hname, where), where

    op = _operator_as(kubectl, kube_apiserver, tmp_path, name, ns, "kustomize-namespaced")
    try:
        apply_examples(kubectl, ns, "objstore-secret.yaml", "thanoscluster.yaml", "prometheusha-eu1.yaml")
        wait_cond(kubectl, "prometheusha", "eu1", ns, "Reconciled", "True")
        wait_cond(kubectl, "thanoscluster", "demo", ns, "Reconciled", "True")
        wait_for(lambda: f"PrometheusHA {ns}/eu1: applied" in op.output(), what="namespaced operator applied eu1")
        assert kget(kubectl, "kopfpeering", "pythanos-operator", ns)
        uid = kget(kubectl, "service", "thanos-query-demo", ns)["metadata"]["uid"]
        kubectl("delete", "service", "thanos-query-demo", namespace=ns)
        wait_for(lambda: f"drift: Service {ns}/thanos-query-demo: deleted" in op.output(),
                 what="the namespaced operator sees the deletion")
        wait_for(lambda: (kget(kubectl, "service", "thanos-query-demo", ns) or {"metadata": {"uid": uid}})
                 ["metadata"]["uid"] != uid, what="Service re-created")
        assert "Forbidden" not in op.output() and "forbidden" not in op.output(), op.output()[-4000:]
    finally:
        stop_operator(op)
