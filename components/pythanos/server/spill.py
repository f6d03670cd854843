"""Workers that take connections only when the ones already taking them are busy.

Every worker could accept from the shared HTTP socket all the time, but on a node whose cores are
also busy with other work (the sidecar, Prometheus, the load itself), two half-idle Python
processes cost more CPU per request than one busy one: each wakes up more often and finds its
caches cold. Measured on two cores (one Prometheus, our sidecar, 20 clients): 0.82 ms of CPU per
small query with two workers accepting, 0.67 ms with one. Go's runtime has the same concern and
starts running goroutines on another core only when there is work waiting for one.

So worker 0 always accepts, and worker ``k`` joins when the workers' CPU use adds up to more
than ``k`` cores at :data:`JOIN` each (they are saturated, another core helps) and leaves when
it adds up to less than ``k`` cores at :data:`LEAVE` each (the others could carry it without
being saturated; the gap between the two keeps a worker from joining and leaving in turn).
CPU use is each process' CPU time (every thread) per second of wall time, smoothed over about a
second, published in a small file all workers map (:class:`LoadBoard`). On a machine where the querier cannot get a whole core (others
take it), no second worker joins: it would not get a core either.

Connections a client keeps open stay with the worker that accepted them. When a worker is
saturated while a sibling that accepts has room, it answers a few requests with
``Connection: close`` (:meth:`Spill.take_shed`); the client reconnects, and an idle worker, woken
first, takes the new connection.
"""
from __future__ import annotations

import asyncio
import math
import mmap
import os
import socket
import struct
import time
from typing import Callable, Optional, Sequence

from aiohttp import web

__all__ = ["LoadBoard", "Spill", "WorkerSite", "wants_connections", "JOIN", "LEAVE", "TICK"]

#: a worker joins when each accepting worker uses more than this much of a core
JOIN = 0.9
#: ... and leaves when they would use less than this much each without it
LEAVE = 0.75
#: seconds between measurements
TICK = 0.25
#: weight of the newest measurement (about one second of memory at :data:`TICK`)
ALPHA = 0.25
_SLOT = struct.Struct("d")


def wants_connections(index: int, total: float, accepting: bool) -> bool:
    """Whether worker ``index`` should take new connections, given every worker's CPU use added
    up (``total``, in cores) and whether it takes them now (the hysteresis between
    :data:`JOIN` and :data:`LEAVE`)."""
    if index == 0:
        return True
    if accepting:
        return total > index * LEAVE
    return total > index * JOIN


class LoadBoard:
    """Each worker's recent CPU use and whether it takes connections, in a file every worker maps:
    one double per worker (the CPU use, negative while it does not take connections).

    A worker writes only its own slot; an aligned 8-byte store is read whole by the others, so no
    lock is needed, and a stale value is at most one tick old."""

    def __init__(self, path: str, count: int, index: int) -> None:
        self.count, self.index = count, index
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < count * _SLOT.size:
                os.ftruncate(fd, count * _SLOT.size)  # zeros: a worker not yet started uses nothing
            self._map = mmap.mmap(fd, count * _SLOT.size)
        finally:
            os.close(fd)
        self._all = struct.Struct(f"{count}d")

    def publish(self, cores: float, accepting: bool) -> None:
        _SLOT.pack_into(self._map, self.index * _SLOT.size, cores if accepting else -cores - 1.0)

    def read(self) -> list[tuple[float, bool]]:
        """``(cores, accepting)`` of every worker."""
        return [(v, True) if v >= 0 else (-v - 1.0, False) for v in self._all.unpack_from(self._map, 0)]

    def close(self) -> None:
        self._map.close()


class Spill:
    """One worker's side: measures its CPU use every :data:`TICK`, publishes it, and calls
    ``pause``/``resume`` when it should stop or start taking connections."""

    def __init__(self, board: LoadBoard, pause: Callable[[], None], resume: Callable[[], None],
                 connections: Callable[[], int] = lambda: 0,
                 cpu: Callable[[], float] = time.process_time, clock: Callable[[], float] = time.monotonic) -> None:
        self.board, self.index = board, board.index
        self._pause, self._resume, self._connections = pause, resume, connections
        self._cpu, self._clock = cpu, clock
        self.accepting = self.index == 0  # the site starts so (``WorkerSite(accepting=...)``)
        self.load = 0.0
        self.shed = 0  # responses left to answer with "Connection: close"
        self._last: Optional[tuple[float, float]] = None
        board.publish(0.0, self.accepting)

    def tick(self) -> None:
        now, cpu = self._clock(), self._cpu()
        if self._last is not None and now > self._last[0]:
            used = (cpu - self._last[1]) / (now - self._last[0])
            self.load += ALPHA * (used - self.load)
        self._last = (now, cpu)
        board = self.board.read()
        want = wants_connections(self.index, math.fsum(load for load, _ in board), self.accepting)
        if want != self.accepting:
            self.accepting = want
            (self._resume if want else self._pause)()
        self.board.publish(self.load, self.accepting)
        self.shed = self._shed_budget(board)

    def _shed_budget(self, board: Sequence[tuple[float, bool]]) -> int:
        """Connections to hand back this tick: some, while this worker is saturated and a sibling
        that takes connections has room."""
        if not self.accepting or self.load <= JOIN:
            return 0
        room = any(accepting and load < LEAVE for i, (load, accepting) in enumerate(board) if i != self.index)
        return max(1, self._connections() // 8) if room else 0

    def take_shed(self) -> bool:
        """True when the response being sent should close its connection (one of this tick's)."""
        if self.shed <= 0:
            return False
        self.shed -= 1
        return True


class WorkerSite(web.BaseSite):
    """Plain HTTP on the supervisor's shared listening socket, taking connections only between
    :meth:`resume` and :meth:`pause`. Each resume listens on a fresh duplicate of the socket's
    descriptor and each pause closes that duplicate: the shared socket, its queue of connections
    not yet taken and the connections already taken are left as they are."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, *, accepting: bool = True,
                 backlog: int = 1024) -> None:  # the supervisor's, which listen() here sets again
        super().__init__(runner, backlog=backlog)
        self._sock = sock
        self._accepting = accepting

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        if self._accepting:
            await self._listen()

    async def _listen(self) -> None:
        dup = socket.socket(fileno=os.dup(self._sock.fileno()))
        dup.setblocking(False)
        server = await asyncio.get_running_loop().create_server(self._runner.server, sock=dup, backlog=self._backlog)
        if self._accepting and self._server is None:
            self._server = server
        else:  # paused (or resumed twice) while it started
            server.close()

    def resume(self) -> None:
        """Start taking connections (from the event loop's thread)."""
        if not self._accepting:
            self._accepting = True
            asyncio.ensure_future(self._listen())

    def pause(self) -> None:
        """Stop taking new connections; those taken are served on."""
        if self._accepting:
            self._accepting = False
            if self._server is not None:
                self._server.close()
                self._server = None
