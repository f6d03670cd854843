"""Workers taking connections only while needed (``pythanos.server.spill``): the rule, the board
the workers share, one worker's ticks, and the site that pauses and resumes on a shared socket
(with real sockets and aiohttp). The querier's workers under real load are in
``test_query_workers.py``."""
from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from pythanos.server.spill import JOIN, LEAVE, LoadBoard, Spill, WorkerSite, wants_connections


def test_worker_zero_always_takes_connections():
    for total in (0.0, 0.5, 3.0):
        for accepting in (False, True):
            assert wants_connections(0, total, accepting)


@pytest.mark.parametrize("index", [1, 2, 5])
def test_a_worker_joins_above_join_and_leaves_below_leave(index):
    # not accepting: joins only once the workers use more than JOIN of a core each
    assert not wants_connections(index, index * JOIN, False)
    assert wants_connections(index, index * JOIN + 0.01, False)
    # accepting: stays in the band between LEAVE and JOIN, leaves below it
    assert wants_connections(index, index * (LEAVE + JOIN) / 2, True)
    assert wants_connections(index, index * LEAVE + 0.01, True)
    assert not wants_connections(index, index * LEAVE, True)
    assert LEAVE < JOIN


def test_board_is_shared_by_workers_through_the_file(tmp_path):
    path = str(tmp_path / "load")
    boards = [LoadBoard(path, 3, i) for i in range(3)]
    try:
        assert boards[2].read() == [(0.0, True)] * 3  # a worker not started yet uses nothing
        boards[0].publish(0.95, True)
        boards[1].publish(0.25, False)
        boards[2].publish(0.0, False)
        for b in boards:
            assert b.read() == [(0.95, True), (0.25, False), (0.0, False)]
    finally:
        for b in boards:
            b.close()


class _Clock:
    """CPU time and wall time a test moves by hand: ``busy`` cores for ``seconds``."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def run(self, busy: float, seconds: float) -> None:
        self.wall += seconds
        self.cpu += busy * seconds


def _spill(board: LoadBoard, clock: _Clock, calls: list, connections: int = 0) -> Spill:
    return Spill(board, lambda: calls.append("pause"), lambda: calls.append("resume"),
                 connections=lambda: connections, cpu=lambda: clock.cpu, clock=lambda: clock.wall)


def _settle(spills: list, clocks: list, busy: list, ticks: int = 40) -> None:
    for _ in range(ticks):
        for s, c, b in zip(spills, clocks, busy):
            c.run(b, 0.25)
            s.tick()


def test_second_worker_joins_a_saturated_first_and_leaves_when_load_falls(tmp_path):
    path = str(tmp_path / "load")
    b0, b1 = LoadBoard(path, 2, 0), LoadBoard(path, 2, 1)
    c0, c1, calls0, calls1 = _Clock(), _Clock(), [], []
    s0, s1 = _spill(b0, c0, calls0), _spill(b1, c1, calls1)
    s0.tick(), s1.tick()  # first measurements
    assert (s0.accepting, s1.accepting) == (True, False)
    _settle([s0, s1], [c0, c1], [0.7, 0.0])  # worker 0 busy but not saturated: alone
    assert not s1.accepting and calls1 == [] and s0.load == pytest.approx(0.7, abs=0.01)
    _settle([s0, s1], [c0, c1], [0.99, 0.0])  # saturated: worker 1 joins
    assert s1.accepting and calls1 == ["resume"]
    _settle([s0, s1], [c0, c1], [0.45, 0.45])  # 0.9 of a core in all: in the band, both stay
    assert s1.accepting and calls1 == ["resume"]
    _settle([s0, s1], [c0, c1], [0.3, 0.3])  # one could carry it: worker 1 leaves
    assert not s1.accepting and calls1 == ["resume", "pause"]
    assert calls0 == [] and s0.accepting  # worker 0 is never paused
    b0.close(), b1.close()


def test_saturated_worker_hands_back_kept_connections_while_a_sibling_has_room(tmp_path):
    path = str(tmp_path / "load")
    b0, b1 = LoadBoard(path, 2, 0), LoadBoard(path, 2, 1)
    c0, c1 = _Clock(), _Clock()
    s0, s1 = _spill(b0, c0, [], connections=40), _spill(b1, c1, [])
    s0.tick(), s1.tick()
    _settle([s0, s1], [c0, c1], [1.0, 0.0])  # worker 1 joined, but gets no new connections
    assert s1.accepting and s0.shed == 40 // 8
    got = [s0.take_shed() for _ in range(s0.shed + 3)]
    assert got == [True] * 5 + [False] * 3
    _settle([s0, s1], [c0, c1], [1.0, 0.95])  # both saturated: nothing to gain by moving
    assert s0.shed == 0 and not s0.take_shed()
    assert s1.shed == 0  # a worker that is not saturated hands back nothing
    b0.close(), b1.close()


async def _site_pair(sock: socket.socket) -> tuple[list, list]:
    """Two 'workers' in one loop sharing ``sock``, each answering its own name."""
    runners, sites = [], []
    for name, accepting in (("a", False), ("b", True)):
        app = web.Application()

        async def hello(request, name=name):
            return web.Response(text=name)

        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = WorkerSite(runner, sock, accepting=accepting)
        await site.start()
        runners.append(runner)
        sites.append(site)
    return runners, sites


def test_paused_site_takes_no_connections_and_keeps_those_it_has():
    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        runners, (a, b) = await _site_pair(sock)
        try:
            async with aiohttp.ClientSession() as fresh_each:
                # a paused: every new connection goes to b
                for _ in range(10):
                    async with fresh_each.get(url, headers={"Connection": "close"}) as r:
                        assert await r.text() == "b"
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as kept:
                async with kept.get(url) as r:
                    assert await r.text() == "b"
                b.pause()
                a.resume()  # listens once the loop runs; a connection made before waits in the queue
                async with aiohttp.ClientSession() as fresh_each:
                    for _ in range(10):  # new connections: a now
                        async with fresh_each.get(url, headers={"Connection": "close"}) as r:
                            assert await r.text() == "a"
                for _ in range(3):  # the connection b took before its pause: still b's
                    async with kept.get(url) as r:
                        assert await r.text() == "b"
            a.pause()
            a.pause()  # twice is once
            b.resume()
            b.resume()
            async with aiohttp.ClientSession() as fresh_each:
                async with fresh_each.get(url, headers={"Connection": "close"}) as r:
                    assert await r.text() == "b"
        finally:
            for r in runners:
                await r.cleanup()
            sock.close()

    asyncio.run(main())
