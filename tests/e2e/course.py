"""The operator's course in real pods, shared by the e2e test modules: install the operator (kustomize or
helm, with the images the backend has), run an S3 server pod, apply ``manifests/examples`` with its objstore
Secret pointed at that pod, and look at the result (conditions, queries, metrics, Argo CD health).

Everything in the cluster is reached through the API server (``kubectl get --raw`` on the service and pod
proxies), so the same code runs on kind and on the local cluster. Waiting is polling with a deadline
(:func:`until`), never a fixed sleep.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import tarfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NS = "pythanos-system"
OPERATOR_SELECTOR = "app.kubernetes.io/name=pythanos-operator"
PYTHANOS_CRDS = ("prometheushas.pythanos.io", "thanosclusters.pythanos.io")
KOPF_CRDS = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")
HELM_RELEASE = "pythanos-operator"
EXAMPLES = ("demo", "eu1", "us1")   # manifests/examples: ThanosCluster demo, PrometheusHA eu1 (1) and us1 (2)
QUERY_SVC = "thanos-query-demo"
COMPACT_CLAIM = "data-thanos-compact-demo-0"
MANAGED = "app.kubernetes.io/managed-by=pythanos-operator"


def until(check: Callable[[], Any], timeout: float, what: str, interval: float = 2.0) -> Any:
    """Call ``check`` until it returns without raising; its value is returned. A check says "not yet" by
    raising (an ``assert`` with a message): after ``timeout`` seconds the last such message is the failure."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        try:
            return check()
        except Exception as e:  # noqa: BLE001  (not there yet)
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last}") from last
        time.sleep(interval)


def split_image(ref: str) -> tuple[str, str]:
    name, _, tag = ref.rpartition(":")
    return name, tag


# --- install --------------------------------------------------------------------------------------

def write_install_overlay(d: Path, images: dict[str, str], component_image: str | None = None) -> Path:
    """A kustomize overlay over ``manifests/`` that only swaps the images for the ones the backend has."""
    d.mkdir(parents=True, exist_ok=True)
    op_name, op_tag = split_image(images["operator"])
    patch = {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "pythanos-operator", "namespace": OPERATOR_NS},
             "spec": {"template": {"spec": {"containers": [{
                 "name": "operator",
                 "env": [{"name": "PYTHANOS_COMPONENT_IMAGE",
                          "value": component_image or images["component"]}]}]}}}}
    (d / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(ROOT / "manifests", d)],   # kustomize refuses absolute bases
        "images": [{"name": "pythanos-operator", "newName": op_name, "newTag": op_tag}],
        "patches": [{"patch": yaml.safe_dump(patch)}],
    }, sort_keys=False))
    return d


@dataclass
class Install:
    """The operator, installed one of the two shipped ways."""
    e2e: Any
    how: str            # "kustomize" | "helm"
    work: Path
    helm: str | None = None

    @property
    def kc(self):
        return self.e2e.kubectl

    def install(self, component_image: str | None = None) -> None:
        if self.how == "kustomize":
            overlay = write_install_overlay(self.work / "install", self.e2e.images, component_image)
            self.kc("apply", "--server-side", "-k", str(overlay), timeout=300)
        else:
            op_name, op_tag = split_image(self.e2e.images["operator"])
            c_name, c_tag = split_image(component_image or self.e2e.images["component"])
            subprocess.run([self.helm, "upgrade", "--install", HELM_RELEASE, str(ROOT / "charts" / "pythanos-operator"),
                            "--kubeconfig", str(self.e2e.kubeconfig), "--namespace", OPERATOR_NS,
                            "--create-namespace", "--set", f"image.repository={op_name}",
                            "--set", f"image.tag={op_tag}", "--set", f"componentImage.repository={c_name}",
                            "--set", f"componentImage.tag={c_tag}"],
                           check=True, capture_output=True, text=True, timeout=300)
        for crd in PYTHANOS_CRDS:
            self.kc("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=120s", timeout=150)
        self.kc("rollout", "status", "deployment/pythanos-operator", "--timeout=300s", namespace=OPERATOR_NS,
                timeout=330)

    def uninstall(self) -> None:
        if self.how == "kustomize":
            self.kc("delete", "--ignore-not-found", "--wait=true", "--timeout=300s", "-k", str(self.work / "install"),
                    timeout=330, check=False)
        else:
            subprocess.run([self.helm, "uninstall", HELM_RELEASE, "--kubeconfig", str(self.e2e.kubeconfig),
                            "--namespace", OPERATOR_NS, "--wait"], capture_output=True, text=True, timeout=330)
            # helm keeps CRDs (and the namespace it created): the cluster is left as it was found
            self.kc("delete", "crd", "--ignore-not-found", "--timeout=300s", *PYTHANOS_CRDS, *KOPF_CRDS,
                    timeout=330, check=False)
            self.kc("delete", "namespace", OPERATOR_NS, "--ignore-not-found", "--timeout=300s", timeout=330,
                    check=False)

    def operator_pod(self) -> dict:
        pods = [p for p in self.kc.json("get", "pods", "-l", OPERATOR_SELECTOR, namespace=OPERATOR_NS)["items"]
                if not p["metadata"].get("deletionTimestamp")]
        assert len(pods) == 1, f"expected one operator pod, got {[p['metadata']['name'] for p in pods]}"
        return pods[0]


# --- the S3 server --------------------------------------------------------------------------------

S3_ACCESS_KEY, S3_SECRET_KEY, BUCKET = "pythanos", "pythanos-secret", "thanos"   # manifests/examples' Secret

S3_MANIFEST = """
apiVersion: v1
kind: ConfigMap
metadata: {name: s3-config}
data:
  s3.json: '{"identities": [{"name": "pythanos", "credentials": [{"accessKey": "%(access)s", "secretKey": "%(secret)s"}],
    "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}'
---
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
        imagePullPolicy: IfNotPresent
        args: [server, -dir=/data, -ip.bind=0.0.0.0, -s3, -s3.port=8333, -s3.config=/etc/s3/s3.json,
               -master.volumeSizeLimitMB=64, -volume.max=8]
        ports: [{containerPort: 8333, name: s3}]
        readinessProbe: {tcpSocket: {port: 8333}, periodSeconds: 2}
        resources: {requests: {cpu: 10m, memory: 64Mi}}
        volumeMounts: [{name: data, mountPath: /data}, {name: config, mountPath: /etc/s3}]
      volumes: [{name: data, emptyDir: {}}, {name: config, configMap: {name: s3-config}}]
---
apiVersion: v1
kind: Service
metadata: {name: s3}
spec:
  selector: {app: s3}
  ports: [{name: s3, port: 8333, targetPort: s3}]
"""


def objstore_yaml(namespace: str) -> str:
    return yaml.safe_dump({"type": "S3", "config": {
        "bucket": BUCKET, "endpoint": f"s3.{namespace}.svc:8333", "access_key": S3_ACCESS_KEY,
        "secret_key": S3_SECRET_KEY, "insecure": True}}, sort_keys=False)


# Faster loops than the defaults, so that blocks travel sidecar -> bucket -> compactor -> store gateway
# within a test's patience: the compactor takes blocks at once (no 30m consistency delay) and plans every
# 15s; the store gateway syncs every 10s. Nothing else of the examples changes.
FAST_LOOPS = [
    {"op": "add", "path": "/spec/storeGateway/extraArgs", "value": ["--sync-block-duration=10s"]},
    {"op": "add", "path": "/spec/compactor/extraArgs",
     "value": ["--consistency-delay=0s", "--wait-interval=15s", "--block-viewer.global.sync-block-interval=10s"]},
]


def write_examples_overlay(d: Path, namespace: str, examples: str = "examples") -> Path:
    """``manifests/<examples>`` (``examples``, or ``examples-rule`` which adds rulers to them) with its
    objstore Secret pointed at the S3 pod of ``namespace``."""
    d.mkdir(parents=True, exist_ok=True)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "thanos-objstore"},
              "stringData": {"objstore.yml": objstore_yaml(namespace)}}
    (d / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "sortOptions": {"order": "fifo"},   # the examples' own order: the ThanosCluster before its members
        "resources": [os.path.relpath(ROOT / "manifests" / examples, d)],
        "patches": [{"patch": yaml.safe_dump(secret)},
                    {"target": {"group": "pythanos.io", "kind": "ThanosCluster", "name": "demo"},
                     "patch": yaml.safe_dump(FAST_LOOPS)}],
    }, sort_keys=False))
    return d


# --- Argo CD health -------------------------------------------------------------------------------

_LUA = None


def argo_health(obj: dict) -> tuple[str, str]:
    """manifests/argocd/health.lua on a live object, in Lua 5.1 as Argo CD's gopher-lua (tests/test_argocd_health.py
    runs the same script on hand-made objects)."""
    global _LUA
    if _LUA is None:
        try:
            from lupa.lua51 import LuaRuntime
        except ImportError:
            from lupa import LuaRuntime
        _LUA = (LuaRuntime, (ROOT / "manifests" / "argocd" / "health.lua").read_text())
    runtime, script = _LUA
    lua = runtime(unpack_returned_tuples=True, register_eval=False)

    def to_lua(v):
        if isinstance(v, dict):
            return lua.table_from({k: to_lua(x) for k, x in v.items()})
        if isinstance(v, list):
            return lua.table_from([to_lua(x) for x in v])
        return v

    lua.globals().obj = to_lua(obj)
    hs = lua.execute(script)
    return hs["status"], hs["message"]


# --- one namespace of examples --------------------------------------------------------------------

def condition(obj: dict, ctype: str = "Ready") -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return {}


@dataclass
class Course:
    e2e: Any
    namespace: str
    work: Path
    volumes: list[str] = field(default_factory=list)
    health: dict[str, list[str]] = field(default_factory=dict)   # kind/name -> Argo health statuses seen, in order

    @property
    def kc(self):
        return self.e2e.kubectl

    # -- set-up -----------------------------------------------------------------------------------

    def deploy(self) -> None:
        """The S3 pod and ``manifests/examples`` (with its compactor's volume)."""
        self.deploy_s3(claims=(COMPACT_CLAIM,))
        overlay = write_examples_overlay(self.work / f"examples-{self.namespace}", self.namespace)
        self.kc("apply", "--server-side", "-k", str(overlay), namespace=self.namespace, timeout=120)

    def deploy_s3(self, claims: tuple[str, ...] = ()) -> None:
        """The namespace, the S3 pod with its bucket, and volumes for the named claims (where the backend
        cannot provision them)."""
        ns, kc = self.namespace, self.kc
        kc("create", "namespace", ns)
        kc.apply(S3_MANIFEST % {"image": self.e2e.images["s3"], "access": S3_ACCESS_KEY, "secret": S3_SECRET_KEY},
                 namespace=ns)
        for claim in claims:
            self.provide_volume(claim)
        kc("rollout", "status", "deployment/s3", "--timeout=300s", namespace=ns, timeout=330)
        until(self._make_bucket, 180, f"bucket {BUCKET} on the S3 pod")

    def provide_volume(self, claim: str) -> None:
        pv = self.e2e.provide_volume(self.namespace, claim)
        if pv:
            self.volumes.append(pv)

    def objstore_secret(self, name: str = "thanos-objstore", key: str = "objstore.yml") -> None:
        """The objstore Secret pointed at this namespace's S3 pod."""
        self.kc.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                                      "stringData": {key: objstore_yaml(self.namespace)}}), namespace=self.namespace)

    def bucket_metas(self) -> dict[str, dict]:
        """Every block's meta.json in the S3 pod's bucket, by ULID, read with ``weed shell`` (the bucket's own
        view, not one of ours)."""
        d = f"/buckets/{BUCKET}"
        script = (f"for b in $(echo 'fs.ls {d}' | weed shell 2>/dev/null | grep -E '^[0-9A-Z]{{26}}$'); do "
                  f"echo \"=== $b\"; echo \"fs.cat {d}/$b/meta.json\" | weed shell 2>/dev/null; echo; done")
        out = self.kc("exec", "deploy/s3", "--", "sh", "-c", script, namespace=self.namespace, timeout=120).stdout
        metas = {}
        for part in out.split("=== ")[1:]:
            ulid, _, body = part.partition("\n")
            start, end = body.find("{"), body.rfind("}")
            if start >= 0 and end > start:
                metas[ulid.strip()] = json.loads(body[start:end + 1])
        return metas

    def _make_bucket(self) -> None:
        out = self.kc("exec", "deploy/s3", "--", "sh", "-c",
                      f"echo 's3.bucket.create -name {BUCKET}' | weed shell >/dev/null 2>&1; "
                      "echo s3.bucket.list | weed shell", namespace=self.namespace, check=False, timeout=60)
        assert re.search(rf"^\s*{BUCKET}(\s|$)", out.stdout, re.M), \
            f"bucket not listed yet: {out.stdout[-500:]}{out.stderr[-500:]}"

    def teardown(self) -> None:
        self.kc("delete", "namespace", self.namespace, "--ignore-not-found", "--timeout=300s", timeout=330,
                check=False)
        for pv in self.volumes:
            self.kc("delete", "pv", pv, "--ignore-not-found", "--timeout=60s", timeout=90, check=False)

    # -- custom resources -------------------------------------------------------------------------

    def crs(self) -> list[dict]:
        return self.kc.json("get", "thanoscluster,prometheusha", namespace=self.namespace)["items"]

    def cr(self, kind: str, name: str) -> dict:
        return self.kc.json("get", kind, name, namespace=self.namespace)

    def record_health(self, objs: list[dict]) -> None:
        for o in objs:
            key = f"{o['kind']}/{o['metadata']['name']}"
            status, _ = argo_health(o)
            seen = self.health.setdefault(key, [])
            if not seen or seen[-1] != status:
                seen.append(status)

    def wait_ready(self, names: tuple[str, ...] = EXAMPLES, timeout: float = 900) -> list[dict]:
        """Every condition of the named objects True and observed at their generation; Argo CD health is
        recorded on every poll."""
        def check() -> list[dict]:
            objs = [o for o in self.crs() if o["metadata"]["name"] in names]
            self.record_health(objs)
            assert {o["metadata"]["name"] for o in objs} == set(names), f"objects: {[o['metadata']['name'] for o in objs]}"
            for o in objs:
                st = o.get("status") or {}
                conds = {c["type"]: c for c in st.get("conditions") or []}
                assert st.get("observedGeneration") == o["metadata"]["generation"], \
                    f"{o['kind']} {o['metadata']['name']}: observedGeneration {st.get('observedGeneration')} " \
                    f"!= generation {o['metadata']['generation']}"
                assert set(conds) >= {"Ready", "Reconciled", "Available"}, f"{o['metadata']['name']}: {conds}"
                bad = {t: (c["status"], c.get("reason"), c.get("message")) for t, c in conds.items()
                       if c["status"] != "True"}
                assert not bad, f"{o['kind']} {o['metadata']['name']}: {bad}"
            return objs
        return until(check, timeout, f"Ready=True on {', '.join(names)} in {self.namespace}", interval=1.0)

    def events(self, name: str, reason: str) -> list[dict]:
        return [e for e in self.kc.json("get", "events", namespace=self.namespace)["items"]
                if e["involvedObject"].get("name") == name and e.get("reason") == reason]

    # -- through the API server's proxies ---------------------------------------------------------

    def raw(self, path: str) -> str:
        return self.kc("get", "--raw", path, timeout=60).stdout

    def service_get(self, service: str, port: str, path: str, params: dict | None = None) -> str:
        q = ("?" + urllib.parse.urlencode(params, doseq=True)) if params else ""
        return self.raw(f"/api/v1/namespaces/{self.namespace}/services/{service}:{port}/proxy{path}{q}")

    def pod_get(self, pod: str, port: int, path: str, params: dict | None = None) -> str:
        q = ("?" + urllib.parse.urlencode(params, doseq=True)) if params else ""
        return self.raw(f"/api/v1/namespaces/{self.namespace}/pods/{pod}:{port}/proxy{path}{q}")

    def query(self, q: str, dedup: bool = True, at: float | None = None) -> list[dict]:
        """An instant query to the querier's Service; the result vector."""
        params = {"query": q, "dedup": str(dedup).lower()}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = json.loads(self.service_get(QUERY_SVC, "http", "/api/v1/query", params))
        assert body.get("status") == "success", body
        return body["data"]["result"]

    def prometheus_query(self, pod: str, q: str, at: float | None = None) -> list[dict]:
        params = {"query": q}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = json.loads(self.pod_get(pod, 9090, "/api/v1/query", params))
        assert body.get("status") == "success", body
        return body["data"]["result"]

    def metrics(self, pod: str, port: int = 10902) -> dict[str, float]:
        """A pod's /metrics as {'name{labels}': value} (plus 'name' summed over its series)."""
        from prometheus_client.parser import text_string_to_metric_families

        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(self.pod_get(pod, port, "/metrics")):
            for s in fam.samples:
                key = s.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}"
                                if s.labels else "")
                out[key] = s.value
                out[s.name] = out.get(s.name, 0.0) + s.value if s.labels else s.value
        return out

    # -- objects ----------------------------------------------------------------------------------

    def versions(self) -> dict[tuple[str, str], str]:
        """resourceVersion of every object the operator manages here, and of the custom resources."""
        out = {}
        kinds = "configmaps,services,statefulsets,deployments,poddisruptionbudgets"
        for o in self.kc.json("get", kinds, "-l", MANAGED, namespace=self.namespace)["items"]:
            out[(o["kind"], o["metadata"]["name"])] = o["metadata"]["resourceVersion"]
        for o in self.crs():
            out[(o["kind"], o["metadata"]["name"])] = o["metadata"]["resourceVersion"]
        return out

    def pods(self, selector: str) -> list[dict]:
        return [p for p in self.kc.json("get", "pods", "-l", selector, namespace=self.namespace)["items"]
                if not p["metadata"].get("deletionTimestamp")]

    def exec_in(self, pod: str, container: str, script: str, stdin: str | None = None, timeout: float = 120) -> str:
        return self.kc("exec", *(["-i"] if stdin is not None else []), pod, "-c", container, "--", "sh", "-c",
                       script, input=stdin, namespace=self.namespace, timeout=timeout).stdout

    def put_blocks(self, pod: str, container: str, src: Path, dest: str) -> None:
        """Copy the block directories in ``src`` into ``dest`` of a pod, each appearing at once (extracted
        next to it, then renamed), so nobody watching ``dest`` sees a half-written block."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(str(src), arcname=".")
        tmp = f"{dest}/.e2e-incoming"
        script = (f"set -e; rm -rf {tmp}; mkdir -p {tmp}; base64 -d | tar -xz -C {tmp}; "
                  f"for b in {tmp}/*; do mv \"$b\" {dest}/; done; rmdir {tmp}")
        self.exec_in(pod, container, script, stdin=base64.b64encode(buf.getvalue()).decode())


def vector(result: list[dict], by: str) -> dict[str, float]:
    """A query result keyed by one label."""
    return {r["metric"].get(by, ""): float(r["value"][1]) for r in result}


def kubectl_get_table(kc, namespace: str, what: str) -> list[dict[str, str]]:
    """``kubectl get <what>`` as rows {column: value} (all tables of a multi-kind get)."""
    out = kc("get", what, namespace=namespace).stdout
    rows, header = [], None
    for line in out.splitlines():
        if not line.strip():
            header = None
            continue
        cols = line.split()
        if header is None or cols[0] == "NAME":
            header = cols
            continue
        rows.append(dict(zip(header, cols)))
    return rows
