"""A real Kubernetes control plane for tests, envtest-style: etcd + kube-apiserver (+ kube-controller-manager).

Binaries come from the peers cache (``scripts/peers.sh`` builds kube-apiserver, kube-controller-manager,
kubectl and etcd from ``k8s.io/kubernetes``, helm from ``helm.sh/helm``). Fixtures (registered in
``conftest.py``):

* ``kube_apiserver`` (session): a :class:`KubeAPIServer` with ``.url``, ``.kubeconfig`` (path), ``.token``,
  ``.ca_file``, ``.process``, ``.etcd`` and ``.client()`` (a new ``kubernetes.client.ApiClient``). etcd and
  the API server listen on free 127.0.0.1 ports; RBAC is on and the ``admin`` token is in ``system:masters``.
  There is no scheduler, kubelet or controller-manager unless ``kube_controller_manager`` is requested:
  StatefulSets and Deployments get no Pods and their status is whatever a test patches into ``/status``.
* ``kube_controller_manager`` (session): kube-controller-manager running only the garbage collector and
  the namespace controller (never the workload controllers, so patched StatefulSet/Deployment status
  stays as the test wrote it). Request it in tests that need ownerReference cascades. It starts after
  ``pythanos_crds`` so that the collector watches our kinds from the start (CRDs installed later are
  seen at its 30 s discovery resync).
* ``kubeconfig``: the kubeconfig path. ``kube_client``: a ``kubernetes.client.ApiClient`` (session).
* ``kubectl``: ``kubectl("apply", "-f", "-", input=yaml, namespace=ns, check=True)`` -> CompletedProcess
  (text); ``check=True`` raises :class:`KubectlError` carrying stderr.
* ``namespace``: a fresh namespace per test (``t-<random>``), deleted afterwards.
* ``pythanos_crds`` (session): ``crds/`` applied with kubectl and Established (``install_crds()`` does it).
* ``kube_apiserver_bin``, ``kube_controller_manager_bin``, ``kubectl_bin``, ``etcd_bin``, ``helm_bin``.
"""
from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from peers import REGISTRY, Process, find_binary, free_ports, missing, peers_dir

ADMIN_USER = "pythanos-admin"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# Admission plugins that wait for a controller this harness does not run (the ServiceAccount
# admission plugin wants the `default` ServiceAccount that the serviceaccount controller creates).
DISABLED_ADMISSION = "ServiceAccount"
# kube-controller-manager: only what tests rely on (ownerReference cascades, namespace deletion).
KCM_CONTROLLERS = "garbage-collector-controller,namespace-controller"


def _peer(name: str, why: str) -> str:
    return find_binary(peers_dir() / "bin" / name) or missing(f"{name} in {peers_dir()}/bin ({why})")


@pytest.fixture(scope="session")
def kube_apiserver_bin() -> str:
    return _peer("kube-apiserver", "scripts/peers.sh builds it from k8s.io/kubernetes")


@pytest.fixture(scope="session")
def kube_controller_manager_bin() -> str:
    return _peer("kube-controller-manager", "scripts/peers.sh builds it from k8s.io/kubernetes")


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    return _peer("kubectl", "scripts/peers.sh builds it from k8s.io/kubernetes")


@pytest.fixture(scope="session")
def etcd_bin() -> str:
    # The etcd release that kube-apiserver's k8s.io/kubernetes requires (3.6.x), built by peers.sh.
    # Debian's etcd-server (3.4.23) predates the 3.4.29 that kube-apiserver >= 1.31 assumes (its health
    # endpoints); it starts and serves, so it is only the fallback when the peers cache has no etcd.
    return find_binary(peers_dir() / "bin" / "etcd", "/usr/bin/etcd") or missing(
        f"etcd in {peers_dir()}/bin (scripts/peers.sh builds go.etcd.io/etcd/server/v3 at the version "
        "k8s.io/kubernetes requires)")


@pytest.fixture(scope="session")
def helm_bin() -> str:
    return _peer("helm", "scripts/peers.sh builds it from helm.sh/helm")


# --- certificates --------------------------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.stderr}")


def make_pki(d: Path) -> dict[str, Path]:
    """A CA, a serving cert for 127.0.0.1/localhost signed by it, and a service-account key pair."""
    if not find_binary("openssl"):
        missing("openssl (to generate the API server's certificates)")
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=pythanos-test-ca", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr",
             "-subj", "/CN=kube-apiserver", cwd=d)
    (d / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default\n"
        "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "apiserver.crt", "-days", "2", "-extfile", "san.ext", cwd=d)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    return {k: d / v for k, v in {"ca": "ca.crt", "cert": "apiserver.crt", "key": "apiserver.key",
                                  "sa_key": "sa.key", "sa_pub": "sa.pub"}.items()}


def write_kubeconfig(path: Path, url: str, ca: Path, token: str, user: str = ADMIN_USER) -> Path:
    # JSON is YAML: no PyYAML needed, and kubectl/helm/the Python client all read it.
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "pythanos-test", "cluster": {"server": url, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "pythanos-test", "context": {"cluster": "pythanos-test", "user": user,
                                                          "namespace": "default"}}],
        "current-context": "pythanos-test",
    }, indent=2))
    return path


# --- the control plane ---------------------------------------------------------------------------

@dataclass
class KubeAPIServer:
    url: str
    kubeconfig: Path
    token: str
    ca_file: Path
    process: Process
    etcd: Process
    pki: dict

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """An authenticated GET against the API server (``path`` like ``/readyz``)."""
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def client(self):
        """A new ``kubernetes.client.ApiClient`` for the admin user."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.ssl_ca_cert = str(self.ca_file)
        cfg.verify_ssl = True
        cfg.api_key = {"authorization": self.token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(cfg)


def start_etcd(etcd: str, work: Path, *, session: bool = True) -> Process:
    client_port, peer_port = free_ports(2)
    client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    args = [etcd, "--name=pythanos-test", f"--data-dir={work / 'etcd-data'}",
            f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=pythanos-test={peer_url}", "--initial-cluster-state=new",
            "--unsafe-no-fsync", "--quota-backend-bytes=2147483648", "--log-level=warn"]
    p = REGISTRY.start("etcd", args, work, session=session)
    p.url, p.port = client_url, client_port

    def healthy() -> bool:
        with urllib.request.urlopen(client_url + "/health", timeout=2) as r:
            return json.loads(r.read()).get("health") == "true"

    p.wait_ready(healthy, timeout=60, what=client_url + "/health")
    return p


def start_kube_apiserver(apiserver: str, etcd: Process, work: Path, *, session: bool = True,
                         timeout: float = 180.0) -> KubeAPIServer:
    pki = make_pki(work / "pki")
    token = uuid.uuid4().hex
    (work / "tokens.csv").write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    (port,) = free_ports(1)
    url = f"https://127.0.0.1:{port}"
    args = [apiserver,
            f"--etcd-servers={etcd.url}", f"--etcd-prefix=/pythanos-{uuid.uuid4().hex[:8]}",
            f"--cert-dir={work / 'certs'}", f"--tls-cert-file={pki['cert']}", f"--tls-private-key-file={pki['key']}",
            f"--client-ca-file={pki['ca']}",
            f"--secure-port={port}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            # No kubernetes.default endpoints: a loopback address is invalid there, and nothing needs them.
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}", "--allow-privileged=true",
            f"--disable-admission-plugins={DISABLED_ADMISSION}",
            "--authorization-mode=RBAC", f"--token-auth-file={work / 'tokens.csv'}",
            f"--service-account-issuer={url}/", f"--service-account-key-file={pki['sa_pub']}",
            f"--service-account-signing-key-file={pki['sa_key']}",
            "--profiling=false", "--v=1"]
    p = REGISTRY.start("kube-apiserver", args, work, session=session)
    p.url, p.port = url, port
    server = KubeAPIServer(url=url, kubeconfig=write_kubeconfig(work / "kubeconfig", url, pki["ca"], token),
                           token=token, ca_file=pki["ca"], process=p, etcd=etcd, pki=pki)
    p.wait_ready(lambda: server.get("/readyz", timeout=3)[0] == 200, timeout=timeout, what=url + "/readyz")
    # RBAC bootstrap (cluster roles) is done when /readyz is 200; the default namespace comes from a
    # controller inside the API server a moment later.
    p.wait_ready(lambda: server.get("/api/v1/namespaces/default")[0] == 200, timeout=60, what="namespace default")
    return server


def start_kube_controller_manager(kcm: str, server: KubeAPIServer, work: Path, *, session: bool = True,
                                  controllers: str = KCM_CONTROLLERS) -> Process:
    (port,) = free_ports(1)
    kc = str(server.kubeconfig)
    args = [kcm, f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            f"--controllers={controllers}", "--leader-elect=false", "--use-service-account-credentials=false",
            f"--secure-port={port}", "--bind-address=127.0.0.1", f"--cert-dir={work / 'kcm-certs'}",
            f"--root-ca-file={server.ca_file}", f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--concurrent-gc-syncs=5", "--v=1"]
    p = REGISTRY.start("kube-controller-manager", args, work, session=session)
    p.url, p.port = f"https://127.0.0.1:{port}", port
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE

    def healthy() -> bool:
        with urllib.request.urlopen(p.url + "/healthz", timeout=2, context=insecure) as r:
            return r.status == 200

    p.wait_ready(healthy, timeout=120, what=p.url + "/healthz")
    return p


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory, kube_apiserver_bin, etcd_bin) -> Iterator[KubeAPIServer]:
    work = tmp_path_factory.mktemp("kube")
    etcd = start_etcd(etcd_bin, work)
    try:
        server = start_kube_apiserver(kube_apiserver_bin, etcd, work)
    except BaseException:
        etcd.stop()
        raise
    yield server
    server.process.stop()
    etcd.stop()


@pytest.fixture(scope="session")
def kube_controller_manager(tmp_path_factory, kube_apiserver, kube_controller_manager_bin,
                            pythanos_crds) -> Iterator[Process]:
    # The CRDs go in first: the garbage collector watches the resources discovery shows at its start
    # and picks up later ones only at its 30 s discovery resync, so a custom resource created in
    # between would have its children collected some 30-40 s late.
    p = start_kube_controller_manager(kube_controller_manager_bin, kube_apiserver, tmp_path_factory.mktemp("kcm"))
    yield p
    p.stop()


@pytest.fixture(scope="session")
def kubeconfig(kube_apiserver) -> Path:
    return kube_apiserver.kubeconfig


@pytest.fixture(scope="session")
def kube_client(kube_apiserver):
    api = kube_apiserver.client()
    yield api
    with contextlib.suppress(Exception):
        api.close()


class KubectlError(AssertionError):
    def __init__(self, args, result: subprocess.CompletedProcess):
        self.result, self.stderr, self.stdout = result, result.stderr, result.stdout
        super().__init__(f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}")


@dataclass
class Kubectl:
    binary: str
    kubeconfig: Path

    def __call__(self, *args: str, input: str | None = None, namespace: str | None = None,
                 check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess:
        argv = [self.binary, f"--kubeconfig={self.kubeconfig}", *([f"--namespace={namespace}"] if namespace else []),
                *args]
        r = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "KUBECONFIG": str(self.kubeconfig)})
        if check and r.returncode != 0:
            raise KubectlError(args, r)
        return r

    def json(self, *args: str, namespace: str | None = None) -> dict:
        return json.loads(self(*args, "-o", "json", namespace=namespace).stdout)


@pytest.fixture(scope="session")
def kubectl(kubectl_bin, kube_apiserver) -> Kubectl:
    return Kubectl(kubectl_bin, kube_apiserver.kubeconfig)


@pytest.fixture
def namespace(kube_client) -> Iterator[str]:
    """A fresh namespace for one test; deleted afterwards (it finishes deleting only with kube_controller_manager)."""
    from kubernetes import client

    core = client.CoreV1Api(kube_client)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    with contextlib.suppress(Exception):
        core.delete_namespace(name)


# --- the project's CRDs ---------------------------------------------------------------------------

CRD_DIR = Path(__file__).resolve().parent.parent / "crds"
CRD_NAMES = ("prometheushas.pythanos.io", "thanosclusters.pythanos.io")


def install_crds(kubectl: Kubectl, crd_dir: Path = CRD_DIR, timeout: str = "60s") -> None:
    """``kubectl apply`` the CRDs as users do, then wait until the API server serves them."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_dir))
    kubectl("wait", "--for=condition=Established", f"--timeout={timeout}",
            *[f"customresourcedefinition/{n}" for n in CRD_NAMES])


@pytest.fixture(scope="session")
def pythanos_crds(kubectl) -> tuple[str, ...]:
    """The two CRDs of ``crds/`` installed (once per session) and Established; returns their names."""
    install_crds(kubectl)
    return CRD_NAMES
