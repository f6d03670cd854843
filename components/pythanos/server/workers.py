"""Worker processes: one component on every core it may use.

CPython runs one thread of Python at a time, so a component that spends its time in Python
(the querier: HTTP, gRPC frames, PromQL planning, JSON) uses one core however many it has.
With ``n`` workers the process the user started becomes a small supervisor:

* it opens the HTTP listening socket itself and hands it to every worker (one accept queue: a
  new connection goes to whichever worker takes it first; worker 0 always takes connections and
  the others join while the workers taking them are busy, see :mod:`pythanos.server.spill`), and reserves the
  gRPC port (``SO_REUSEPORT``: every worker listens on it too, gRPC cannot take a socket);
* it starts ``n`` copies of its own command line, each told by the environment which worker it
  is (:class:`WorkerSlot`), and forwards SIGTERM/SIGINT/SIGHUP to them;
* when one worker ends on its own, the others are stopped and the supervisor exits with a
  failure: the component is unhealthy and its pod restarts, as a single process would.

The supervisor is this module run as a program (:func:`exec_supervisor` replaces the component's
process with it, same pid): it imports nothing but the standard library and the log format, so
it holds about 20 MB instead of a component's 70.

``/metrics`` of any worker holds every worker's series, each with a ``worker`` label: a worker
asks its siblings over a Unix socket each (:func:`gather_metrics`). Probes and the API answer
per worker, as each has its own endpoint set.

The default count is the CPU limit the process runs under (:func:`cpu_limit`): the cgroup's
quota in a container, the CPUs it may run on otherwise, never the host's core count.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger(__name__)

__all__ = ["WorkerSlot", "cpu_limit", "exec_supervisor", "supervise", "gather_metrics", "ENV"]

ENV = "PYTHANOS_WORKER"  # "<index>/<count>:<http fd>:<grpc address>:<metrics dir>"
PARENT_ENV = "PYTHANOS_WORKER_PARENT"  # the supervisor's process id
LOCAL_METRICS_HEADER = "X-Pythanos-Worker-Local"


def cpu_limit(cgroup_root: str = "/sys/fs/cgroup", proc_self: str = "/proc/self/cgroup") -> int:
    """Whole CPUs this process may use: the cgroup CPU quota (v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us``) rounded up, capped by the CPUs in its affinity
    mask; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(Path(cgroup_root), Path(proc_self))
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota(root: Path, proc_self: Path) -> Optional[float]:
    rel = {"v2": "", "v1": ""}
    try:
        for line in proc_self.read_text().splitlines():
            hid, ctrls, path = line.split(":", 2)
            if hid == "0" and ctrls == "":
                rel["v2"] = path
            elif "cpu" in ctrls.split(","):
                rel["v1"] = path
    except (OSError, ValueError):
        pass
    # v2: cpu.max "max 100000" or "50000 100000", in this cgroup or the mounted root
    for d in (root / rel["v2"].lstrip("/"), root):
        try:
            q, p = (d / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        return None if q == "max" else int(q) / int(p)
    for base in (root / "cpu", root / "cpu,cpuacct"):
        for d in (base / rel["v1"].lstrip("/"), base):
            try:
                q = int((d / "cpu.cfs_quota_us").read_text())
                p = int((d / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            return None if q <= 0 or p <= 0 else q / p
    return None


@dataclass(frozen=True)
class WorkerSlot:
    """What a worker is told by its supervisor."""

    index: int
    count: int
    http_fd: int
    grpc_address: str
    metrics_dir: str

    @classmethod
    def from_env(cls) -> Optional["WorkerSlot"]:
        raw = os.environ.get(ENV)
        if not raw:
            return None
        ic, fd, rest = raw.split(":", 2)
        grpc_address, _, metrics_dir = rest.rpartition(":")
        i, n = ic.split("/")
        return cls(int(i), int(n), int(fd), grpc_address, metrics_dir)

    def encode(self) -> str:
        return f"{self.index}/{self.count}:{self.http_fd}:{self.grpc_address}:{self.metrics_dir}"

    def metrics_socket(self, index: Optional[int] = None) -> str:
        return os.path.join(self.metrics_dir, f"worker-{self.index if index is None else index}.sock")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _bind(address: str, flag: str, reuse_port: bool) -> socket.socket:
    from ..errors import UserError

    host, port = _split(address)
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind(addr)
    except OSError as e:
        s.close()
        raise UserError(f"{flag}={address}: cannot listen: {e.strerror or e}") from None
    return s


def exec_supervisor(count: int, http_address: str, grpc_address: Optional[str], grace: float,
                    argv: Optional[Sequence[str]] = None) -> None:
    """Replace this process by the light supervisor (:func:`main`) of ``count`` workers of
    ``argv`` (default: this process' own command line)."""
    cmd = [sys.executable, "-m", "pythanos.server.workers", f"--workers={count}", f"--http-address={http_address}",
           f"--grace={grace}"]
    if grpc_address is not None:
        cmd.append(f"--grpc-address={grpc_address}")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [*cmd, "--", *(sys.argv[1:] if argv is None else argv)])


def _log_flags(argv: Sequence[str]) -> tuple[str, str]:
    """``--log.level`` and ``--log.format`` of the component's command line (both spellings)."""
    found = {"--log.level": "info", "--log.format": "logfmt"}
    for i, a in enumerate(argv):
        name, eq, value = a.partition("=")
        if name in found:
            found[name] = value if eq else (argv[i + 1] if i + 1 < len(argv) else found[name])
    return found["--log.level"], found["--log.format"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pythanos.server.workers --workers=N --http-address=A [--grpc-address=G]
    [--grace=S] -- <component command line>``: the supervisor on its own."""
    import argparse

    from .. import logfmt
    from ..errors import UserError

    p = argparse.ArgumentParser(prog="pythanos-workers")
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--http-address", required=True)
    p.add_argument("--grpc-address")
    p.add_argument("--grace", type=float, default=120.0)
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    logfmt.setup(*_log_flags(command))
    try:
        return supervise(a.workers, a.http_address, a.grpc_address, argv=command, grace=a.grace)
    except UserError as e:
        log.error("%s", e)
        return 1


def follow_supervisor() -> None:
    """In a worker: be sent SIGTERM when the supervisor dies, however it dies. Signals it gets are
    forwarded, but a SIGKILL is not, and a worker left behind would go on serving the shared
    port. Linux' parent-death signal does it; a supervisor already gone when it is set up (it
    died between fork and here) means exiting now."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("cannot follow the supervisor's death", extra={"errno": ctypes.get_errno()})
        return
    if os.getppid() != int(parent):
        log.error("supervisor gone before this worker started", extra={"supervisor": parent})
        sys.exit(1)


def supervise(count: int, http_address: str, grpc_address: Optional[str],
              argv: Optional[Sequence[str]] = None, grace: float = 120.0) -> int:
    """Run ``count`` workers of this command line (see the module doc); their exit code."""
    http = _bind(http_address, "--http-address", reuse_port=False)
    http.listen(1024)
    http.set_inheritable(True)
    reserve = None
    grpc_concrete = ""
    if grpc_address is not None:
        reserve = _bind(grpc_address, "--grpc-address", reuse_port=True)  # held, never listening
        host, _ = _split(grpc_address)
        port = reserve.getsockname()[1]
        grpc_concrete = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    metrics_dir = tempfile.mkdtemp(prefix="pythanos-workers-")
    cmd = [sys.executable, "-m", "pythanos.cli", *(sys.argv[1:] if argv is None else argv)]
    procs: list[subprocess.Popen] = []
    stopping = False

    def forward(signum, _frame) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signum)
                except ProcessLookupError:
                    pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    log.info("starting workers", extra={"workers": count, "address": http_address})
    exit_code = 0
    try:
        for i in range(count):
            if stopping:  # a signal came while starting: start no more
                break
            slot = WorkerSlot(i, count, http.fileno(), grpc_concrete, metrics_dir)
            env = dict(os.environ, **{ENV: slot.encode(), PARENT_ENV: str(os.getpid())})
            procs.append(subprocess.Popen(cmd, env=env, pass_fds=(http.fileno(),)))
        while True:
            ended = [p for p in procs if p.poll() is not None]
            if ended:
                break
            try:
                os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
        first = ended[0] if ended else None
        if first is not None and not stopping:
            exit_code = first.returncode or 1
            log.error("worker ended, stopping the others", extra={"worker": procs.index(first),
                                                                  "exit_code": first.returncode})
            forward(signal.SIGTERM, None)
        deadline = time.monotonic() + grace + 5
        for p in procs:
            try:
                rc = p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            if stopping and rc in (-signal.SIGTERM, -signal.SIGINT):
                rc = 0  # asked to stop before it had its own handlers: a clean stop all the same
            if rc and not exit_code:
                exit_code = rc if rc > 0 else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        http.close()
        if reserve is not None:
            reserve.close()
        for f in Path(metrics_dir).glob("*"):
            f.unlink(missing_ok=True)
        os.rmdir(metrics_dir)
    return exit_code


async def gather_metrics(slot: WorkerSlot, own: bytes) -> bytes:
    """Every worker's ``/metrics`` text as one exposition, each series with a ``worker`` label.
    ``own`` is this worker's; a sibling that does not answer (starting, stopping) is left out."""
    import asyncio

    import aiohttp

    async def sibling(i: int) -> Optional[bytes]:
        try:
            conn = aiohttp.UnixConnector(path=slot.metrics_socket(i))
            async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=5)) as s:
                async with s.get("http://worker/metrics", headers={LOCAL_METRICS_HEADER: "1"}) as r:
                    return await r.read() if r.status == 200 else None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            return None

    others = await asyncio.gather(*(sibling(i) for i in range(slot.count) if i != slot.index))
    texts = {slot.index: own}
    for i, t in zip((i for i in range(slot.count) if i != slot.index), others):
        if t is not None:
            texts[i] = t
    return await asyncio.get_running_loop().run_in_executor(None, merge_expositions, texts)


def merge_expositions(texts: dict) -> bytes:
    """Prometheus text expositions of several workers as one, each sample labelled ``worker``."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.samples import Sample

    families: dict = {}
    for index in sorted(texts):
        for fam in text_string_to_metric_families(texts[index].decode("utf-8")):
            samples = list(fam.samples)
            have = families.setdefault(fam.name, fam)
            if have is fam:
                fam.samples = []
            have.samples.extend(Sample(s.name, {**s.labels, "worker": str(index)}, s.value, s.timestamp, s.exemplar)
                                for s in samples)

    class _Collector:
        def collect(self):
            return list(families.values())

    return generate_latest(_Collector())  # type: ignore[arg-type]



if __name__ == "__main__":
    sys.exit(main())
