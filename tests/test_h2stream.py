"""The lean HTTP/2 Series client (``pythanos.storeapi.h2stream``) against real gRPC servers: our
grpcio StoreServer and a real Thanos sidecar (grpc-go). It must answer exactly what grpcio's client
answers (the same frame bytes, the same status codes and details), and fail the ways grpcio fails:
deadlines, cancellation, oversized messages, an unreachable or frozen peer, a restarted server."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import grpc
import numpy as np
import pytest

from peers import free_ports, http_get
from pythanos.storeapi import Chunk, Series, StoreClient, StoreServer
from pythanos.storeapi import service as svc
from pythanos.storeapi.h2stream import EOF, H2Channel, H2Error, grpc_timeout
from pythanos.storeapi.memstore import MemoryStore
from pythanos.storeapi.pb import rpc_pb2, types_pb2
from pythanos.storeapi.types import XOR
from pythanos.tsdb.labels import Matcher
from test_storeapi import Loop, start_thanos_sidecar

PATH = svc.SERIES.encode()


@pytest.fixture(scope="module")
def aio():
    lp = Loop()
    yield lp
    lp.close()


def _req(matchers, mint=0, maxt=1 << 62, **kw) -> rpc_pb2.SeriesRequest:
    return StoreClient("x:1").series_request(matchers, mint, maxt, **kw)


async def _lean(ch: H2Channel, req, timeout=30.0) -> list[bytes]:
    call = await ch.unary_stream(PATH, req.SerializeToString(), timeout)
    out = []
    try:
        while (m := await call.read()) is not EOF:
            out.append(m)
    finally:
        call.cancel()
    return out


async def _grpcio(address: str, req, timeout=30.0) -> list[bytes]:
    async with grpc.aio.insecure_channel(address, options=svc.CLIENT_OPTIONS) as ch:
        call = ch.unary_stream(svc.SERIES, request_serializer=rpc_pb2.SeriesRequest.SerializeToString,
                               response_deserializer=None)
        return [m async for m in call(req, timeout=timeout)]


async def _both(address: str, ch: H2Channel, req):
    """(lean frames or error, grpcio frames or error) for one request."""
    out = []
    for fn in (lambda: _lean(ch, req), lambda: _grpcio(address, req)):
        try:
            out.append(await fn())
        except H2Error as e:
            out.append((e.code, e.details))
        except grpc.aio.AioRpcError as e:
            out.append((e.code(), e.details()))
    return out


class _Big(MemoryStore):
    """Many series, and one message larger than a stream's receive window (4 MiB)."""

    async def series(self, req):
        async for s in super().series(req):
            yield s
        if any(m.name == "__name__" and m.value == "big" for m in req.matchers):
            yield Series({"__name__": "big"}, [Chunk(0, 1, XOR, bytes(6 << 20))])


def _many(n: int):
    t = np.arange(0, 3_600_000, 15_000, dtype=np.int64)
    rng = np.random.default_rng(3)
    return [({"__name__": f"m{i % 7}", "i": str(i)}, t, rng.normal(size=len(t))) for i in range(n)]


def test_same_frames_as_grpcio_on_our_server(aio):
    store = _Big(_many(20_000), external_labels={"cluster": "eu1", "replica": "0"})
    addr = f"127.0.0.1:{aio.serve(store)}"
    ch = H2Channel(addr)
    reqs = [
        _req([Matcher.re("__name__", "m.*")]),  # about 20 MB in 20k frames: windows credited back
        _req([Matcher.re("__name__", "m.*")], response_batch_size=64),
        _req([Matcher.eq("__name__", "m3")], skip_chunks=True, without_replica_labels=["replica"]),
        _req([Matcher.eq("__name__", "big")]),  # one 6 MiB message across stream windows
        _req([Matcher.eq("__name__", "none")]),
        _req([Matcher.eq("cluster", "us1")]),  # contradicts the external labels: nothing
    ]

    async def go():
        return [await _both(addr, ch, r) for r in reqs]

    results = aio.run(go(), 300)
    for (lean, theirs), r in zip(results, reqs):
        assert isinstance(lean, list) and lean == theirs, r
    assert len(results[0][0]) >= 20_000 and sum(map(len, results[0][0])) > 8 * (4 << 20)
    assert max(map(len, results[3][0])) > 6 << 20

    async def concurrent():  # many calls multiplexed on the one connection
        got = await asyncio.gather(*(_lean(ch, reqs[2 + i % 3]) for i in range(150)))
        return got, [await _grpcio(addr, reqs[2 + i]) for i in range(3)]

    got, want = aio.run(concurrent(), 300)
    assert all(g == want[i % 3] for i, g in enumerate(got))
    ch.close()


def test_errors_match_grpcio(aio):
    class Failing(MemoryStore):
        async def series(self, req):
            yield Series({"__name__": "a"}, [])
            raise RuntimeError("disk on fire")

    good = f"127.0.0.1:{aio.serve(MemoryStore(_many(10)))}"
    bad = f"127.0.0.1:{aio.serve(Failing([]))}"
    bad_regex = types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.RE, name="job", value="(")

    async def go():
        out = []
        for addr, req in ((good, _req([Matcher.eq("__name__", "m1"), bad_regex])), (bad, _req([]))):
            ch = H2Channel(addr)
            out.append(await _both(addr, ch, req))
            ch.close()
        return out

    (lean1, theirs1), (lean2, theirs2) = aio.run(go())
    assert lean1 == theirs1 and lean1[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert lean2 == theirs2 and lean2[0] != grpc.StatusCode.OK and "disk on fire" in lean2[1]


class _Stalling(MemoryStore):
    """Asked for ``stall``: answers one series, then waits until the call goes away and records
    that it was cancelled. Anything else: its series."""

    def __init__(self):
        super().__init__(_many(4))
        self.cancelled = asyncio.Event()
        self.entered = asyncio.Event()

    async def series(self, req):
        if not any(m.value == "stall" for m in req.matchers):
            async for s in super().series(req):
                yield s
            return
        yield Series({"__name__": "a"}, [])
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        yield Series({"__name__": "b"}, [])


STALL = _req([Matcher.eq("__name__", "stall")])


def test_deadline_and_cancel_reset_the_stream(aio):
    store = _Stalling()
    addr = f"127.0.0.1:{aio.serve(store)}"
    ch = H2Channel(addr)

    async def deadline():
        call = await ch.unary_stream(PATH, STALL.SerializeToString(), 0.5)
        with pytest.raises(H2Error) as ei:
            while await call.read() is not EOF:
                pass
        await asyncio.wait_for(store.cancelled.wait(), 30)  # the server saw the reset
        return ei.value

    err = aio.run(deadline(), 60)
    assert (err.code, err.details) == (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    async def cancel():
        store.cancelled.clear()
        store.entered.clear()
        call = await ch.unary_stream(PATH, STALL.SerializeToString(), 30)
        await asyncio.wait_for(store.entered.wait(), 30)
        call.cancel()
        with pytest.raises(H2Error) as ei:
            await call.read()
        await asyncio.wait_for(store.cancelled.wait(), 30)
        return ei.value.code

    assert aio.run(cancel(), 60) == grpc.StatusCode.CANCELLED
    # the connection is still good for the next call
    assert len(aio.run(_lean(ch, _req([Matcher.re("__name__", ".+")])), 60)) == 4
    ch.close()


def test_oversized_message_fails_the_call_not_the_connection(aio):
    store = _Big(_many(3))
    addr = f"127.0.0.1:{aio.serve(store)}"
    ch = H2Channel(addr, max_recv=1 << 20)

    async def go():
        with pytest.raises(H2Error) as ei:
            await _lean(ch, _req([Matcher.eq("__name__", "big")]))
        return ei.value, await _lean(ch, _req([Matcher.re("__name__", "m.*")]))

    err, after = aio.run(go(), 60)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in err.details
    assert len(after) == 3
    ch.close()


def test_unreachable_restarted_and_not_http2(aio):
    (port,) = free_ports(1)
    addr = f"127.0.0.1:{port}"
    ch = H2Channel(addr)
    with pytest.raises(H2Error) as ei:
        aio.run(_lean(ch, _req([])), 60)
    assert ei.value.code == grpc.StatusCode.UNAVAILABLE and addr in ei.value.details

    srv = StoreServer(MemoryStore(_many(5)))
    aio.run(srv.start(addr))
    try:
        assert len(aio.run(_lean(ch, _req([Matcher.re("__name__", ".+")])), 60)) == 5
        aio.run(srv.stop(0))
        with pytest.raises(H2Error) as ei:
            aio.run(_lean(ch, _req([])), 60)
        assert ei.value.code == grpc.StatusCode.UNAVAILABLE
        srv = StoreServer(MemoryStore(_many(2)))
        aio.run(srv.start(addr))
        assert len(aio.run(_lean(ch, _req([Matcher.re("__name__", ".+")])), 60)) == 2  # dialled again
    finally:
        aio.run(srv.stop(0))
        ch.close()

    # a listener that accepts and never speaks HTTP/2: a bounded UNAVAILABLE, not a hang
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    try:
        silent = H2Channel(f"127.0.0.1:{lsock.getsockname()[1]}", connect_timeout=0.5)
        with pytest.raises(H2Error) as ei:
            aio.run(_lean(silent, _req([]), timeout=60), 60)
        assert ei.value.code == grpc.StatusCode.UNAVAILABLE and "SETTINGS" in ei.value.details
    finally:
        lsock.close()


def test_grpc_timeout_header():
    assert grpc_timeout(0.0001) == b"1m"
    assert grpc_timeout(120) == b"120000m"
    assert grpc_timeout(10 ** 6) == b"1000001S"
    assert grpc_timeout(10 ** 9) == b"16666667M"
    assert len(grpc_timeout(10 ** 13)) <= 9


def test_against_a_real_thanos_sidecar(aio, prometheus_factory, thanos_bin, tmp_path):
    """grpc-go on the other end: frames and errors equal to grpcio's; a frozen sidecar (SIGSTOP)
    with a call in flight is found by the keepalive ping, and the channel recovers after it."""
    prom, sc, addr = start_thanos_sidecar(prometheus_factory, thanos_bin, tmp_path)
    try:
        sc.wait_ready(lambda: b'"job":"sidecar"' in http_get(f"{prom.url}/api/v1/query?query=up")[1],
                      30, what="a scrape of the sidecar")
        t_ms = int(time.time() * 1000)
        ch = H2Channel(addr, keepalive=0.5, keepalive_timeout=0.5)
        bad_regex = types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.RE, name="job", value="(")
        reqs = [_req([Matcher.eq("job", "sidecar")], t_ms - 3_600_000, t_ms),
                _req([Matcher.eq("job", "sidecar")], t_ms - 3_600_000, t_ms, response_batch_size=10),
                _req([Matcher.eq("__name__", "up")], t_ms - 3_600_000, t_ms, skip_chunks=True),
                _req([Matcher.eq("__name__", "up"), bad_regex], t_ms - 1000, t_ms)]

        async def go():
            return [await _both(addr, ch, r) for r in reqs]

        results = aio.run(go(), 120)
        for lean, theirs in results[:3]:
            assert isinstance(lean, list) and len(lean) > 0 and lean == theirs
        assert results[3][0] == results[3][1] and results[3][0][0] != grpc.StatusCode.OK

        os.kill(sc.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(H2Error) as ei:
                aio.run(_lean(ch, reqs[0], timeout=60), 90)
        finally:
            os.kill(sc.proc.pid, signal.SIGCONT)
        assert ei.value.code == grpc.StatusCode.UNAVAILABLE and "keepalive" in ei.value.details
        assert aio.run(_lean(ch, reqs[2]), 60) == results[2][1]
        ch.close()
    finally:
        sc.stop()


def _serve_with(aio, store, *options):
    """``store`` behind a grpcio server with our server options and ``options``: (server, port)."""
    async def start():
        s = grpc.aio.server(options=[*svc.SERVER_OPTIONS, *options])
        s.add_generic_rpc_handlers(StoreServer(store).handlers())
        port = s.add_insecure_port("127.0.0.1:0")
        await s.start()
        return s, port

    return aio.run(start())


def test_the_servers_stream_limit_is_waited_for(aio):
    """A server that allows two streams at a time (SETTINGS_MAX_CONCURRENT_STREAMS): thirty calls
    at once all answer. Calls wait for a free stream, and the ones grpcio refuses while it still
    counts the two just reset (REFUSED_STREAM) are sent again (this failed before the retry)."""
    store = _Stalling()
    server, port = _serve_with(aio, store, ("grpc.max_concurrent_streams", 2))
    ch = H2Channel(f"127.0.0.1:{port}")
    try:
        async def go():
            # two calls stall, holding both streams; the rest must wait for them
            stalled = [await ch.unary_stream(PATH, STALL.SerializeToString(), 30) for _ in range(2)]
            await asyncio.wait_for(store.entered.wait(), 30)
            waiting = asyncio.gather(*(_lean(ch, _req([Matcher.re("__name__", ".+")])) for _ in range(30)))
            for c in stalled:
                c.cancel()
            return await asyncio.wait_for(waiting, 60), ch._conn.peer_max_streams

        got, limit = aio.run(go(), 90)
        assert limit == 2
        assert all(len(g) == 4 for g in got) and len(got) == 30
    finally:
        ch.close()
        aio.run(server.stop(0))


def test_connection_age_goaway_is_followed_by_a_new_connection(aio):
    """A server that ends its connections after 300 ms (grpcio's max_connection_age, Thanos'
    --grpc-server-max-connection-age): it sends GOAWAY, calls already sent finish on the old
    connection, new ones go on a new one; every call answers."""
    server, port = _serve_with(aio, MemoryStore(_many(6)), ("grpc.max_connection_age_ms", 300),
                               ("grpc.max_connection_age_grace_ms", 10_000))
    ch = H2Channel(f"127.0.0.1:{port}")
    try:
        async def go():
            conns, answers = set(), []
            while len(conns) < 3:  # until the channel has dialled three times
                call = await ch.unary_stream(PATH, _req([Matcher.re("__name__", ".+")]).SerializeToString(), 30)
                conns.add(call._conn)  # the connection objects themselves: no id is reused
                got = []
                while (m := await call.read()) is not EOF:
                    got.append(m)
                answers.append(got)
            return conns, answers

        conns, answers = aio.run(go(), 120)
        assert len(conns) >= 3 and all(len(a) == 6 for a in answers)
    finally:
        ch.close()
        aio.run(server.stop(0))
