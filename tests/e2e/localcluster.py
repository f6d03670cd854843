"""A real single-node Kubernetes cluster on this machine, built from upstream parts, for the e2e tests.

Where kind cannot run (no Docker engine, as on the machines this project is developed on), the e2e tests run
on this cluster instead. Every part is a real upstream binary started here as a process:

* etcd, kube-apiserver, kube-controller-manager (all controllers), kube-scheduler, kubelet and kube-proxy
  (iptables mode), built by ``scripts/peers.sh --cluster`` into the peers cache;
* containerd and runc (Debian packages) with its own config, root, state and socket under the work dir;
  the Debian CNI ``bridge`` + ``host-local`` plugins make the pod network;
* CoreDNS as a Deployment in ``kube-system`` behind the ``kube-dns`` Service (10.96.0.10), so Services are
  reached by DNS name from pods;
* the images come from ``tests/e2e/images.py`` (nothing is pulled) and are imported into containerd's
  ``k8s.io`` namespace at start.

Network: a bridge ``pythanos0`` with 10.244.0.1/24 that this harness creates; pods get 10.244.0.x on it,
Services 10.96.0.0/16. The API server and the kubelet listen on the bridge address (a Service endpoint
cannot be a loopback address), everything else on 127.0.0.1. Nothing listens on the machine's other
interfaces.

What this machine needs and gets (checked on the Debian 12 VMs this project runs on): cgroups v1, so the
kubelet runs with ``failCgroupV1: false`` and ``cgroupDriver: cgroupfs``; CAP_SYS_RESOURCE is missing, so
containerd has ``restrict_oom_score_adj = true`` (the kubelet's and kube-proxy's failures to set OOM scores
are logged and harmless).

What it changes on the host, and puts back at ``stop()``: the bridge; sysctls (``net.ipv4.ip_forward`` and
the kernel tunables the kubelet insists on: ``vm.overcommit_memory``, ``kernel.panic``, ...), restored to
their values from before; iptables chains that kube-proxy and the kubelet add (``kube-proxy --cleanup``,
then any chain that was not there before is removed); network namespaces containerd made in /run/netns;
a cgroup ``/pythanos-e2e`` in every v1 hierarchy; the CNI result cache files of its network; the kubelet's
symlinks in /var/log/containers. All processes are stopped by pid (the container shims found by their
``-address`` argument, which names this cluster's socket).

Use as a pytest fixture (``local_cluster`` in ``conftest.py``) or by hand::

    python tests/e2e/localcluster.py      # start, print the kubeconfig path, stop on Ctrl-C
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(p) for p in (HERE, HERE.parent) if str(p) not in sys.path]

import images  # noqa: E402  (tests/e2e/images.py)
from peers import REGISTRY, Process, find_binary, free_ports, peers_dir  # noqa: E402  (tests/peers.py)

NODE_NAME = "pythanos-e2e"
BRIDGE = "pythanos0"
NODE_IP = "10.244.0.1"                 # the bridge's address: node IP, API server, pods' gateway
POD_SUBNET = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
CNI_NETWORK = "pythanos-e2e"
CGROUP_ROOT = "pythanos-e2e"
CNI_BIN_DIR = "/usr/lib/cni"
CNI_RESULTS = "/var/lib/cni/results"
STATE_DIR = Path("/run/pythanos-e2e")   # the lock (one local cluster per machine) and the running one's state
ADMIN_USER = "pythanos-admin"

KUBELET_CHAINS = {"KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"}

# Host settings changed while the cluster runs; put back at stop().
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv4/conf/all/route_localnet",
           "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
           "vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/netfilter/nf_conntrack_max",
           "net/netfilter/nf_conntrack_tcp_timeout_established", "net/netfilter/nf_conntrack_tcp_timeout_close_wait")

DEBIAN_PACKAGES = {"containerd": "containerd", "runc": "runc", "ctr": "containerd", "iptables": "iptables",
                   "conntrack": "conntrack", "debootstrap": "debootstrap"}


class ClusterError(RuntimeError):
    pass


def why_not() -> str | None:
    """Why a local cluster cannot start here, or None."""
    if os.geteuid() != 0:
        return "the local cluster needs root (containerd, network, cgroups)"
    for tool, pkg in DEBIAN_PACKAGES.items():
        if not find_binary(tool, f"/usr/sbin/{tool}", f"/usr/bin/{tool}"):
            return f"{tool} is missing (Debian package {pkg}; scripts/system-peers-cluster.sh installs it)"
    if not Path(CNI_BIN_DIR, "bridge").exists():
        return f"no CNI bridge plugin in {CNI_BIN_DIR} (Debian package containernetworking-plugins)"
    for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
              "kubectl", "coredns"):
        if not os.access(peers_dir() / "bin" / b, os.X_OK):
            return f"{b} is not in {peers_dir()}/bin (scripts/peers.sh --cluster builds it)"
    return None


def _bin(name: str) -> str:
    return str(peers_dir() / "bin" / name)


def _run(*argv, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise ClusterError(f"{' '.join(map(str, argv))} exited {r.returncode}:\n{r.stderr[-3000:]}{r.stdout[-2000:]}")
    return r


def poll(check: Callable[[], object], timeout: float, what: str, interval: float = 0.25,
         alive: Callable[[], None] | None = None) -> object:
    """Call ``check`` until it returns something truthy (returned), or raise after ``timeout`` seconds."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        if alive:
            alive()
        try:
            v = check()
            if v:
                return v
        except Exception as e:  # noqa: BLE001  (the condition is not there yet)
            last = e
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}" + (f"; last error: {last!r}" if last else ""))
        time.sleep(interval)


class KubectlError(AssertionError):
    def __init__(self, args, result: subprocess.CompletedProcess):
        self.result, self.stderr, self.stdout = result, result.stderr, result.stdout
        super().__init__(f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}")


@dataclass
class Kubectl:
    """``kubectl("get", "pods", namespace="x")`` -> CompletedProcess; ``.json(...)`` -> dict."""

    binary: str
    kubeconfig: Path

    def __call__(self, *args: str, input: str | None = None, namespace: str | None = None, check: bool = True,
                 timeout: float = 120.0) -> subprocess.CompletedProcess:
        argv = [self.binary, f"--kubeconfig={self.kubeconfig}", *([f"--namespace={namespace}"] if namespace else []),
                *args]
        r = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise KubectlError(args, r)
        return r

    def json(self, *args: str, namespace: str | None = None) -> dict:
        return json.loads(self(*args, "-o", "json", namespace=namespace).stdout)

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        self("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifest, namespace=namespace)


# --- host state ----------------------------------------------------------------------------------

def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys", name).write_text(value + "\n")


def _cgroup_hierarchies(fstypes: tuple[str, ...] = ("cgroup",)) -> list[Path]:
    """Mount points of the cgroup hierarchies (v1 by default; with "cgroup2", also the hybrid unified one)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            if parts[sep + 1] in fstypes:
                out.append(Path(parts[4]))
    return out


def _mounts_under(prefix: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if mp == prefix or mp.startswith(prefix.rstrip("/") + "/"):
                out.append(mp)
    return out


def _iptables_chains() -> dict[tuple[str, str], set[str]]:
    """{(iptables|ip6tables, table): chains} as iptables-save shows them."""
    out: dict[tuple[str, str], set[str]] = {}
    for tool in ("iptables", "ip6tables"):
        r = subprocess.run([f"{tool}-save"], capture_output=True, text=True)
        table = None
        for line in r.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
                out.setdefault((tool, table), set())
            elif line.startswith(":") and table and line.split()[1] == "-":   # user chains only
                out[(tool, table)].add(line[1:].split()[0])
    return out


def _remove_new_iptables_chains(before: dict[tuple[str, str], set[str]]) -> list[str]:
    """Remove every KUBE-*/CNI-* chain (and every rule jumping to it) that was not there before; returns what
    it removed."""
    removed = []
    for tool in ("iptables", "ip6tables"):
        r = subprocess.run([f"{tool}-save"], capture_output=True, text=True)
        table, rules, chains = None, {}, {}
        for line in r.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
                rules[table], chains[table] = [], set()
            elif line.startswith(":") and table and line.split()[1] == "-":
                chains[table].add(line[1:].split()[0])
            elif line.startswith("-A ") and table:
                rules[table].append(line)
        for t, cs in chains.items():
            new = {c for c in cs - before.get((tool, t), set()) if c.startswith(("KUBE-", "CNI-"))}
            if not new:
                continue
            script = [f"*{t}"]
            for rule in rules[t]:
                chain = rule.split()[1]
                target = re.search(r" -[jg] (\S+)", rule)
                if chain not in new and target and target.group(1) in new:
                    script.append("-D" + rule[2:])
            script += [f"-F {c}" for c in sorted(new)] + [f"-X {c}" for c in sorted(new)] + ["COMMIT", ""]
            subprocess.run([f"{tool}-restore", "--noflush"], input="\n".join(script), capture_output=True, text=True)
            removed += [f"{tool} -t {t} {c}" for c in sorted(new)]
    return removed


# --- certificates and config files ---------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    _run("openssl", *args, cwd=cwd)


def make_pki(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=pythanos-e2e-ca", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr",
             "-subj", "/CN=kube-apiserver", cwd=d)
    names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
             "localhost"]
    (d / "san.ext").write_text(
        "subjectAltName=" + ",".join([f"IP:{ip}" for ip in ("127.0.0.1", NODE_IP, KUBERNETES_SERVICE_IP)]
                                     + [f"DNS:{n}" for n in names]) + "\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "apiserver.crt", "-days", "2", "-extfile", "san.ext", cwd=d)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    return {k: d / v for k, v in {"ca": "ca.crt", "ca_key": "ca.key", "cert": "apiserver.crt",
                                  "key": "apiserver.key", "sa_key": "sa.key", "sa_pub": "sa.pub"}.items()}


def write_kubeconfig(path: Path, url: str, ca: Path, token: str) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": NODE_NAME, "cluster": {"server": url, "certificate-authority": str(ca)}}],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [{"name": NODE_NAME, "context": {"cluster": NODE_NAME, "user": ADMIN_USER, "namespace": "default"}}],
        "current-context": NODE_NAME,
    }, indent=2))
    return path


def containerd_config(work: Path) -> str:
    c = work / "containerd"
    return f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{c / 'containerd.sock'}"

[ttrpc]
  address = "{c / 'containerd.sock.ttrpc'}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE_IMAGE}"
  # CAP_SYS_RESOURCE is missing even from the bounding set on this machine.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{c / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{work / 'cni' / 'net.d'}"
    max_conf_num = 1
"""


def cni_conflist(work: Path) -> str:
    return json.dumps({
        "cniVersion": "1.0.0", "name": CNI_NETWORK,
        "plugins": [{
            "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(work / "cni" / "ipam")},
        }],
    }, indent=2)


def kubelet_config(work: Path, sock: Path, port: int, healthz_port: int) -> str:
    return json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        # cgroups v1 on this machine: allowed explicitly, with the cgroupfs driver (no systemd).
        "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{CGROUP_ROOT}",
        "containerRuntimeEndpoint": f"unix://{sock}", "imageServiceEndpoint": f"unix://{sock}",
        "address": NODE_IP, "port": port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False},
                           "x509": {}},
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDNS": [DNS_SERVICE_IP], "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(work / "resolv.conf"),
        "podLogsDir": str(work / "pod-logs"),
        # Nothing can be pulled here: never collect the imported images, never evict for disk.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "failSwapOn": False, "syncFrequency": "10s", "fileCheckFrequency": "10s",
        "serializeImagePulls": False, "maxPods": 110, "registerNode": True,
        "nodeStatusUpdateFrequency": "5s", "shutdownGracePeriod": "0s",
    }, indent=2)


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> str:
    return json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables", "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME, "bindAddress": "127.0.0.1", "clusterCIDR": CLUSTER_CIDR,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}", "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # Leave the host's conntrack limits and route_localnet alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "oomScoreAdj": 0, "configSyncPeriod": "0s",
    }, indent=2)


COREDNS_MANIFEST = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  # No forward plugin: nothing outside the cluster is reachable from here, so other names fail at once.
  Corefile: |
    .:53 {
        errors
        health {
            lameduck 2s
        }
        ready
        kubernetes %(domain)s in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
        loop
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
      - name: coredns
        image: %(image)s
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {containerPort: 53, name: dns, protocol: UDP}
        - {containerPort: 53, name: dns-tcp, protocol: TCP}
        - {containerPort: 9153, name: metrics, protocol: TCP}
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 2}
        livenessProbe: {httpGet: {path: /health, port: 8080}, initialDelaySeconds: 30, periodSeconds: 10}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes:
      - name: config
        configMap: {name: coredns, items: [{key: Corefile, path: Corefile}]}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  selector: {k8s-app: kube-dns}
  clusterIP: %(dns_ip)s
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
  - {name: metrics, port: 9153, protocol: TCP}
"""


# --- the cluster ---------------------------------------------------------------------------------

@dataclass
class LocalCluster:
    work: Path
    log: Callable[[str], None] = print
    kubeconfig: Path = field(init=False)
    api_url: str = ""
    token: str = ""
    images: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    _sysctls: dict[str, str | None] = field(default_factory=dict)
    _iptables_before: dict | None = None     # None: not recorded yet (an empty dict is a record: no chains)
    _netns_before: set[str] = field(default_factory=set)
    _cni_results_before: set[str] = field(default_factory=set)
    _made_bridge: bool = False
    _made_cgroups: list[Path] = field(default_factory=list)
    _stopped: bool = False
    _lock_fd: int | None = None

    def __post_init__(self) -> None:
        self.work = self.work.resolve()
        self.kubeconfig = self.work / "kubeconfig"

    @property
    def containerd_sock(self) -> Path:
        return self.work / "containerd" / "containerd.sock"

    @property
    def kubectl(self) -> Kubectl:
        return Kubectl(_bin("kubectl"), self.kubeconfig)

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return _run("ctr", f"--address={self.containerd_sock}", "--namespace=k8s.io", *args, check=check,
                    timeout=timeout)

    # -- start ------------------------------------------------------------------------------------

    def start(self, timeout: float = 600) -> "LocalCluster":
        why = why_not()
        if why:
            raise ClusterError(why)
        t_start = time.monotonic()
        self._lock()
        try:
            self._recover_stale()
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t_start
        self.log("local cluster up in %.0fs (%s)" % (
            self.timings["total"], ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items() if k != "total")))
        return self

    def _step(self, name: str, t0: float) -> float:
        now = time.monotonic()
        self.timings[name] = now - t0
        return now

    def _start(self, timeout: float) -> None:
        t = time.monotonic()
        self.work.mkdir(parents=True, exist_ok=True)
        archive_box: dict = {}
        builder = threading.Thread(target=self._build_images, args=(archive_box,), daemon=True)
        builder.start()
        self._prepare_host()
        self._save_state()
        pki = make_pki(self.work / "pki")
        t = self._step("host+pki", t)

        self._start_containerd()
        etcd = self._start_etcd()
        builder.join()
        if "error" in archive_box:
            raise archive_box["error"]
        t = self._step("images", t)
        # The images go into containerd while the API server starts.
        importer = threading.Thread(target=self._import_images, args=(archive_box,), daemon=True)
        importer.start()
        self._start_apiserver(etcd, pki)
        t = self._step("apiserver", t)
        self._start_controller_manager(pki)
        self._start_scheduler()
        importer.join()
        if "import_error" in archive_box:
            raise archive_box["import_error"]
        self.timings["image-import"] = archive_box.get("import_seconds", 0.0)
        self._start_kubelet()
        self._start_kube_proxy()
        kc = self.kubectl
        poll(lambda: _node_ready(kc), timeout, f"node {NODE_NAME} Ready", interval=0.5, alive=self._check_alive)
        t = self._step("node-ready", t)
        kc.apply(COREDNS_MANIFEST % {"image": images.COREDNS_IMAGE, "domain": CLUSTER_DOMAIN,
                                     "dns_ip": DNS_SERVICE_IP})
        poll(lambda: kc("get", "serviceaccount", "default", namespace="default", check=False).returncode == 0,
             timeout, "the default ServiceAccount", interval=0.5, alive=self._check_alive)
        kc("rollout", "status", "deployment/coredns", "--namespace=kube-system", f"--timeout={int(timeout)}s",
           timeout=timeout + 30)
        poll(lambda: self._proxy_healthy(), timeout, "kube-proxy /healthz", interval=0.5, alive=self._check_alive)
        self._step("coredns", t)

    def _check_alive(self) -> None:
        for name, p in self.processes.items():
            if not p.alive():
                raise ClusterError(f"{name} exited with {p.proc.returncode}:\n{p.log(60)}")

    def _build_images(self, box: dict) -> None:
        try:
            t0 = time.monotonic()
            box["archive"], self.images = images.build(log=self.log)
            box["build_seconds"] = time.monotonic() - t0
        except BaseException as e:  # noqa: BLE001  (re-raised in the starting thread)
            box["error"] = e

    def _import_images(self, box: dict) -> None:
        try:
            t0 = time.monotonic()
            self.ctr("images", "import", str(box["archive"]))
            box["import_seconds"] = time.monotonic() - t0
        except BaseException as e:  # noqa: BLE001
            box["import_error"] = e

    def _prepare_host(self) -> None:
        for name in SYSCTLS:
            self._sysctls[name] = _read_sysctl(name)
        self._iptables_before = _iptables_chains()
        self._netns_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
        self._cni_results_before = set(os.listdir(CNI_RESULTS)) if os.path.isdir(CNI_RESULTS) else set()
        # A bridge left behind by a run that was killed is taken down first.
        if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
            _run("ip", "link", "delete", BRIDGE)
        routes = _run("ip", "-4", "route", "show", "match", POD_SUBNET).stdout
        for line in routes.splitlines():
            if line.split()[0] != "default":
                raise ClusterError(f"{POD_SUBNET} is routed on this machine already: {line}")
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        self._made_bridge = True
        _run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        _write_sysctl("net/ipv4/ip_forward", "1")
        if self._sysctls.get("net/bridge/bridge-nf-call-iptables") not in (None, "1"):
            _write_sysctl("net/bridge/bridge-nf-call-iptables", "1")
        # The kubelet's cgroup root must exist in every hierarchy; cpuset needs cpus and mems to take tasks.
        for h in _cgroup_hierarchies(("cgroup", "cgroup2")):
            d = h / CGROUP_ROOT      # ours by name: one left by a killed run is taken over and removed at stop
            d.mkdir(exist_ok=True)
            self._made_cgroups.append(d)
            for f in ("cpuset.cpus", "cpuset.mems"):
                if (h / f).exists() and not (d / f).read_text().strip():
                    (d / f).write_text((h / f).read_text())
        for sub in ("cni/net.d", "cni/ipam", "pod-logs", "kubelet", "containerd"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        (self.work / "cni" / "net.d" / "10-pythanos.conflist").write_text(cni_conflist(self.work))
        (self.work / "resolv.conf").write_text("# no upstream DNS: the machine's network is closed\n")

    def _proc(self, name: str, args: list[str], **kw) -> Process:
        p = REGISTRY.start(name, args, self.work / "logs", session=True, **kw)
        self.processes[name] = p
        self._save_state()
        return p

    def _start_containerd(self) -> Process:
        cfg = self.work / "containerd" / "config.toml"
        cfg.write_text(containerd_config(self.work))
        p = self._proc("containerd", [find_binary("containerd", "/usr/bin/containerd"), "--config", str(cfg),
                                      "--log-level", "warn"])
        p.wait_ready(lambda: self.ctr("version", timeout=5).returncode == 0, timeout=60, what="containerd socket")
        return p

    def _start_etcd(self) -> Process:
        from kube import start_etcd

        p = start_etcd(_bin("etcd"), self.work / "etcd")
        self.processes["etcd"] = p
        self._save_state()
        return p

    def _start_apiserver(self, etcd: Process, pki: dict) -> None:
        self.token = uuid.uuid4().hex
        (self.work / "tokens.csv").write_text(f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        (port,) = free_ports(1)
        self.api_url = f"https://{NODE_IP}:{port}"
        args = [_bin("kube-apiserver"),
                f"--etcd-servers={etcd.url}", f"--cert-dir={self.work / 'apiserver-certs'}",
                f"--tls-cert-file={pki['cert']}", f"--tls-private-key-file={pki['key']}",
                f"--client-ca-file={pki['ca']}", f"--secure-port={port}",
                f"--bind-address={NODE_IP}", f"--advertise-address={NODE_IP}",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true",
                "--authorization-mode=Node,RBAC", f"--token-auth-file={self.work / 'tokens.csv'}",
                f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
                f"--service-account-key-file={pki['sa_pub']}",
                f"--service-account-signing-key-file={pki['sa_key']}",
                # The node's name does not resolve on the host: reach the kubelet (logs, exec) by its IP.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--profiling=false", "--v=1"]
        p = self._proc("kube-apiserver", args)
        p.url, p.port = self.api_url, port
        write_kubeconfig(self.kubeconfig, self.api_url, pki["ca"], self.token)
        ctx = ssl.create_default_context(cafile=str(pki["ca"]))

        def get(path: str) -> int:
            req = urllib.request.Request(self.api_url + path, headers={"Authorization": f"Bearer {self.token}"})
            with urllib.request.urlopen(req, timeout=3, context=ctx) as r:
                return r.status

        p.wait_ready(lambda: get("/readyz") == 200, timeout=180, what=self.api_url + "/readyz")
        p.wait_ready(lambda: get("/api/v1/namespaces/default") == 200, timeout=60, what="namespace default")

    def _healthz(self, url: str) -> bool:
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        with urllib.request.urlopen(url, timeout=2, context=insecure if url.startswith("https") else None) as r:
            return r.status == 200

    def _start_controller_manager(self, pki: dict) -> None:
        (port,) = free_ports(1)
        kc = str(self.kubeconfig)
        args = [_bin("kube-controller-manager"), f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}", "--controllers=*", "--leader-elect=false",
                "--use-service-account-credentials=false", f"--secure-port={port}", "--bind-address=127.0.0.1",
                f"--cert-dir={self.work / 'kcm-certs'}", f"--root-ca-file={pki['ca']}",
                f"--service-account-private-key-file={pki['sa_key']}",
                f"--service-cluster-ip-range={SERVICE_CIDR}", f"--cluster-cidr={CLUSTER_CIDR}", "--v=1"]
        p = self._proc("kube-controller-manager", args)
        p.url, p.port = f"https://127.0.0.1:{port}", port
        p.wait_ready(lambda: self._healthz(p.url + "/healthz"), timeout=120, what=p.url + "/healthz")

    def _start_scheduler(self) -> None:
        (port,) = free_ports(1)
        kc = str(self.kubeconfig)
        args = [_bin("kube-scheduler"), f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}", "--leader-elect=false", f"--secure-port={port}",
                "--bind-address=127.0.0.1", f"--cert-dir={self.work / 'scheduler-certs'}", "--v=1"]
        p = self._proc("kube-scheduler", args)
        p.url, p.port = f"https://127.0.0.1:{port}", port
        p.wait_ready(lambda: self._healthz(p.url + "/healthz"), timeout=120, what=p.url + "/healthz")

    def _start_kubelet(self) -> None:
        port, healthz = free_ports(2)
        cfg = self.work / "kubelet" / "config.json"
        cfg.write_text(kubelet_config(self.work, self.containerd_sock, port, healthz))
        args = [_bin("kubelet"), f"--config={cfg}", f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={self.work / 'kubelet'}", f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
                "--v=1"]
        p = self._proc("kubelet", args)
        p.url, p.port = f"http://127.0.0.1:{healthz}", healthz
        p.wait_ready(lambda: self._healthz(p.url + "/healthz"), timeout=120, what=p.url + "/healthz")

    def _start_kube_proxy(self) -> None:
        healthz, metrics = free_ports(2)
        cfg = self.work / "kube-proxy.json"
        cfg.write_text(kube_proxy_config(self.kubeconfig, healthz, metrics))
        p = self._proc("kube-proxy", [_bin("kube-proxy"), f"--config={cfg}", "--v=1"])
        p.url, p.port = f"http://127.0.0.1:{healthz}", healthz

    def _proxy_healthy(self) -> bool:
        return self._healthz(self.processes["kube-proxy"].url + "/healthz")

    # -- stop -------------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop everything this cluster started and put the host back; returns notes on what was left."""
        if self._stopped:
            return []
        self._stopped = True
        notes: list[str] = []
        t0 = time.monotonic()
        def stop_process(name: str) -> None:
            if name in self.processes:
                t = time.monotonic()
                self.processes[name].stop(timeout=10)
                self.timings[f"stop {name}"] = time.monotonic() - t

        for name in ("kube-scheduler", "kube-controller-manager", "kubelet", "kube-proxy"):
            stop_process(name)
        if "containerd" in self.processes and self.processes["containerd"].alive():
            t = time.monotonic()
            self._kill_containers(notes)
            self.timings["stop containers"] = time.monotonic() - t
        for name in ("kube-apiserver", "etcd", "containerd"):
            stop_process(name)
        t = time.monotonic()
        self._cleanup_host(notes, kube_proxy_ran="kube-proxy" in self.processes)
        self.timings["stop cleanup"] = time.monotonic() - t
        self._release()
        self.timings["stop"] = time.monotonic() - t0
        for n in notes:
            self.log("local cluster stop: " + n)
        return notes

    def _cleanup_host(self, notes: list[str], kube_proxy_ran: bool) -> None:
        """Everything but the processes: containers, mounts, network, cgroups, iptables, sysctls."""
        if kube_proxy_ran:
            r = _run(_bin("kube-proxy"), "--cleanup", "--v=0", check=False, timeout=60)
            if r.returncode != 0:
                notes.append(f"kube-proxy --cleanup exited {r.returncode}: {r.stderr[-500:]}")
        self._kill_shims(notes)
        self._runc_delete_all()
        for mp in sorted(_mounts_under(str(self.work)), key=len, reverse=True):
            if subprocess.run(["umount", mp], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mp], capture_output=True)
        if os.path.isdir("/run/netns"):
            for ns in sorted(set(os.listdir("/run/netns")) - self._netns_before):
                if ns.startswith("cni-"):
                    subprocess.run(["umount", f"/run/netns/{ns}"], capture_output=True)
                    with contextlib.suppress(OSError):
                        os.unlink(f"/run/netns/{ns}")
        for d in self._made_cgroups:
            _rmdir_cgroup(Path(d), notes)
        if self._made_bridge:
            _run("ip", "link", "delete", BRIDGE, check=False)
        removed = _remove_new_iptables_chains(self._iptables_before) if self._iptables_before is not None else []
        # The kubelet's own chains are always there (kube-proxy --cleanup takes only kube-proxy's): removed
        # quietly. Anything else is worth a note.
        unexpected = [r for r in removed if r.split()[-1] not in KUBELET_CHAINS]
        if unexpected:
            notes.append("removed iptables chains left behind: " + ", ".join(unexpected))
        for name, value in self._sysctls.items():
            if value is not None and _read_sysctl(name) != value:
                _write_sysctl(name, value)
        # libcni's result cache (containerd 1.6 does not let it be moved): this network's and loopback's
        # entries that appeared while the cluster ran.
        if os.path.isdir(CNI_RESULTS):
            for f in set(os.listdir(CNI_RESULTS)) - self._cni_results_before:
                if f.startswith((f"{CNI_NETWORK}-", "cni-loopback-")):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(CNI_RESULTS, f))
        logs = str(self.work / "pod-logs")
        with contextlib.suppress(OSError):
            for f in os.scandir("/var/log/containers"):
                if f.is_symlink() and os.readlink(f.path).startswith(logs):
                    os.unlink(f.path)
        # The unpacked images and pod volumes are large; the logs stay. Only with nothing mounted below.
        if _mounts_under(str(self.work)):
            notes.append(f"mounts left under {self.work}: {_mounts_under(str(self.work))[:5]}")
        else:
            for heavy in ("containerd", "kubelet", "etcd"):
                shutil.rmtree(self.work / heavy, ignore_errors=True)

    # -- one cluster per machine; a run that was killed is cleaned up by the next --------------------

    def _lock(self, timeout: float = 1800) -> None:
        import fcntl

        STATE_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(STATE_DIR / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline, told = time.monotonic() + timeout, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise ClusterError(f"another local cluster still runs on this machine after {timeout:.0f}s "
                                       f"(lock {STATE_DIR / 'lock'} held by pid {os.pread(fd, 32, 0).decode().strip()})")
                if not told:
                    self.log(f"waiting for the local cluster of another run to stop ({STATE_DIR / 'lock'})")
                    told = True
                time.sleep(1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (STATE_DIR / "state.json").unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)   # releases the flock
            self._lock_fd = None

    def _save_state(self) -> None:
        state = {"work": str(self.work), "pids": {n: p.pid for n, p in self.processes.items()},
                 "sysctls": self._sysctls, "netns_before": sorted(self._netns_before),
                 "cni_results_before": sorted(self._cni_results_before), "made_bridge": self._made_bridge,
                 "made_cgroups": [str(d) for d in self._made_cgroups],
                 "iptables_before": [[t, tb, sorted(cs)] for (t, tb), cs in (self._iptables_before or {}).items()]}
        tmp = STATE_DIR / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.rename(STATE_DIR / "state.json")

    def _recover_stale(self) -> None:
        """A run that was killed (SIGKILL, a lost session) left its cluster: stop it by its pids, clean up."""
        path = STATE_DIR / "state.json"
        if not path.exists():
            return
        st = json.loads(path.read_text())
        old = LocalCluster(Path(st["work"]), log=self.log)
        old._sysctls, old._made_bridge = st["sysctls"], st["made_bridge"]
        old._netns_before, old._cni_results_before = set(st["netns_before"]), set(st["cni_results_before"])
        old._made_cgroups = [Path(d) for d in st["made_cgroups"]]
        old._iptables_before = {(t, tb): set(cs) for t, tb, cs in st["iptables_before"]}
        killed = []
        for name, pid in st["pids"].items():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if st["work"].encode() in cmdline:   # every process of ours names its work dir (not a reused pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                killed.append(f"{name}[{pid}]")
        for name, pid in st["pids"].items():
            with contextlib.suppress(Exception):
                poll(lambda: not Path(f"/proc/{pid}").exists(), 10, f"{name} to exit")
        notes: list[str] = []
        old._cleanup_host(notes, kube_proxy_ran="kube-proxy" in st["pids"])
        path.unlink()
        self.log(f"cleaned up the local cluster a killed run left in {st['work']} (killed {killed or 'nothing'})"
                 + ("; " + "; ".join(notes) if notes else ""))

    def _kill_containers(self, notes: list[str]) -> None:
        r = self.ctr("tasks", "ls", check=False, timeout=30)
        ids = [line.split()[0] for line in r.stdout.splitlines()[1:] if line.strip()]
        for i in ids:
            self.ctr("tasks", "kill", "--signal", "SIGKILL", i, check=False, timeout=30)
        for i in ids:
            self.ctr("tasks", "delete", "--force", i, check=False, timeout=30)
        left = self.ctr("tasks", "ls", "-q", check=False, timeout=30).stdout.split()
        if left:
            notes.append(f"containerd tasks still there after kill/delete: {left}")

    def _kill_shims(self, notes: list[str]) -> None:
        addr = str(self.containerd_sock)
        pids = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and addr.encode() in argv:
                pids.append(int(pid))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if pids:
            notes.append(f"killed {len(pids)} containerd shims left running")

    def _runc_delete_all(self) -> None:
        root = self.work / "containerd" / "runc" / "k8s.io"
        if not root.is_dir():
            return
        for cid in os.listdir(root):
            subprocess.run(["runc", "--root", str(root), "kill", cid, "KILL"], capture_output=True)
            subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], capture_output=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _rmdir_cgroup(d: Path, notes: list[str]) -> None:
    if not d.is_dir():
        return
    deadline = time.monotonic() + 10
    while True:
        leftovers = []
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [d]:
            try:
                sub.rmdir()
            except OSError:
                leftovers.append(sub)
        if not leftovers or time.monotonic() > deadline:
            break
        time.sleep(0.2)   # processes killed a moment ago are still leaving their cgroups
    if leftovers:
        notes.append(f"cgroups left: {[str(p) for p in leftovers[:5]]}")


def _node_ready(kc: Kubectl) -> bool:
    r = kc("get", "node", NODE_NAME, "-o", "json", check=False)
    if r.returncode != 0:
        return False
    conds = {c["type"]: c["status"] for c in json.loads(r.stdout)["status"].get("conditions", [])}
    return conds.get("Ready") == "True"


def main() -> None:
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="pythanos-cluster-"))
    cluster = LocalCluster(work)
    cluster.start()
    print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
    print(f"kubectl: {_bin('kubectl')}; logs in {work / 'logs'}; Ctrl-C stops the cluster", flush=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
