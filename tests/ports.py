"""Loopback ports for peers that are told their port up front, held until their server takes them.

Picking a port by binding port 0 and closing the socket again leaves a window in which another
process can take it: another test run, or any process's ``bind(0)`` or outgoing connection, which
the kernel serves from the very range such a port came from. Ports here come from below the
kernel's ephemeral range (``net.ipv4.ip_local_port_range``), so nothing takes one by itself, and
each is leased across processes for :data:`LEASE_S` (a file per port in :data:`LEASE_DIR`, written
under one lock), long enough for the server it is meant for to bind it: two test processes using
this module never get the same port. The lease is checked against the port being free at that
moment. Standard library only: tests, benchmarks and scripts share it.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

__all__ = ["free_port", "free_ports", "LEASE_DIR", "LEASE_S"]

LEASE_DIR = Path(os.environ.get("PYTHANOS_PORT_LEASES") or Path(tempfile.gettempdir()) / "pythanos-port-leases")
LEASE_S = 900.0
#: the lowest port handed out; the highest is just below the ephemeral range
LOWEST = 20000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _span() -> tuple[int, int]:
    hi = _ephemeral_low()
    lo = LOWEST if hi - LOWEST >= 4096 else max(1024, hi - 8192)
    return lo, hi


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    LEASE_DIR.mkdir(parents=True, exist_ok=True)
    with open(LEASE_DIR / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _leased(port: int, now: float) -> bool:
    try:
        return now - (LEASE_DIR / str(port)).stat().st_mtime < LEASE_S
    except FileNotFoundError:
        return False


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports, free now and leased to this process (see the module doc)."""
    lo, hi = _span()
    out: list[int] = []
    start = random.randrange(lo, hi)
    with _locked():
        now = time.time()
        for i in range(hi - lo):
            port = lo + (start - lo + i) % (hi - lo)
            if _leased(port, now) or not _bindable(port):
                continue
            (LEASE_DIR / str(port)).write_text(f"{os.getpid()}\n")
            out.append(port)
            if len(out) == n:
                return out
    raise OSError(f"no {n} free ports between {lo} and {hi} that are not leased in {LEASE_DIR}")


def free_port() -> int:
    return free_ports(1)[0]
