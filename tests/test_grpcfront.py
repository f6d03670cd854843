"""The gRPC front (``pythanos.server.grpcfront``): bad input and both paths, in process.

The real peers (a Thanos router forwarding snappy-compressed writes, ``thanos query`` reading
StoreAPI through the front, with and without TLS) are in test_receive.py,
test_receive_forward.py and test_tls_grpc.py; here the front's own limits are driven with a
small HTTP/2 client written with h2, so each bad input can be sent exactly."""
from __future__ import annotations

import asyncio
import socket
import struct
from typing import Optional

import cramjam
import grpc
import pytest

from pythanos.server.grpcfront import (PREFACE, GrpcFront, SnappyFrameError, grpc_message_escape,
                                       snappy_frames_decode)
from pythanos.storeapi import service as svc
from pythanos.storeapi.writeapi import REMOTE_WRITE, WriteConflict, writeable_front
import test_tls_grpc

certs = test_tls_grpc.certs  # the fixture of test certificates (CA, server, client)

ECHO = "/test.Echo/Echo"
#: a connection of its own per channel (grpcio shares subchannels between channels by default)
LOCAL = [("grpc.use_local_subchannel_pool", 1)]


class _Server:
    """grpcio (an echo method) behind a front that answers RemoteWrite with ``write``."""

    def __init__(self, max_recv: int = 1 << 20, max_age: float = 0.0, handshake: float = 120.0) -> None:
        self.got: list[bytes] = []
        self.entered, self.release = asyncio.Event(), asyncio.Event()
        self.max_recv, self.max_age, self.handshake = max_recv, max_age, handshake

    async def write(self, raw: bytes) -> None:
        if raw == b"conflict":
            raise WriteConflict("out of order sample")
        if raw == b"boom":
            raise RuntimeError("broken")
        if raw == b"slow":
            self.entered.set()
            await self.release.wait()
        self.got.append(raw)

    async def __aenter__(self) -> "_Server":
        self.front = GrpcFront(writeable_front(self.write), max_recv=self.max_recv, max_connection_age=self.max_age,
                               handshake_timeout=self.handshake)
        self.grpc = grpc.aio.server(options=list(svc.SERVER_OPTIONS))

        async def echo(req: bytes, ctx) -> bytes:
            return req

        self.grpc.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", {
            "Echo": grpc.unary_unary_rpc_method_handler(echo)})])
        self.grpc.add_insecure_port("unix:" + self.front.upstream)
        await self.grpc.start()
        self.port = await self.front.start("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.front.stop_accepting()
        await asyncio.gather(self.grpc.stop(1), self.front.close(1))


class H2Client:
    """Just enough of a gRPC client to send exactly the bytes a test wants."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def __aenter__(self) -> "H2Client":
        from h2.config import H2Configuration
        from h2.connection import H2Connection

        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.writer.write(self.h2.data_to_send())
        self.events: list = []  # every h2 event seen
        return self

    async def __aexit__(self, *exc) -> None:
        self.writer.close()

    async def call(self, path: str, body: bytes, encoding: Optional[str] = None,
                   timeout: float = 10.0) -> tuple[dict, bytes]:
        """One call (``body``: the whole DATA payload, length prefix included); (trailers, data)."""
        from h2 import events as ev

        sid = self.h2.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
                   ("content-type", "application/grpc"), ("te", "trailers")]
        if encoding:
            headers.append(("grpc-encoding", encoding))
        self.h2.send_headers(sid, headers)
        out, data = {}, b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = memoryview(body)
        while True:
            while pending is not None:  # as much of the body as the flow-control windows allow
                n = min(len(pending), self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                if n == 0 and pending:
                    break
                self.h2.send_data(sid, bytes(pending[:n]), end_stream=n == len(pending))
                pending = pending[n:]
                if not pending:
                    pending = None
                    break
            self.writer.write(self.h2.data_to_send())
            chunk = await asyncio.wait_for(self.reader.read(65536), max(0.01, deadline - loop.time()))
            if not chunk:
                raise ConnectionError("closed by the server")
            events = self.h2.receive_data(chunk)
            self.events += events
            for e in events:
                if isinstance(e, (ev.ResponseReceived, ev.TrailersReceived)) and e.stream_id == sid:
                    out.update(dict(e.headers))
                elif isinstance(e, ev.DataReceived) and e.stream_id == sid:
                    data += e.data
                    self.h2.acknowledge_received_data(e.flow_controlled_length, sid)
                elif isinstance(e, ev.StreamEnded) and e.stream_id == sid:
                    self.writer.write(self.h2.data_to_send())
                    return out, data
            self.writer.write(self.h2.data_to_send())


def msg(body: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", 1 if compressed else 0, len(body)) + body


def snappy_stream(body: bytes) -> bytes:
    return bytes(cramjam.snappy.compress(body))


# -------------------------------------------------------------------------------------- snappy

def test_snappy_frames_decode_roundtrip_and_bounds():
    body = bytes(range(256)) * 1000  # several 64 KiB chunks
    enc = snappy_stream(body)
    assert snappy_frames_decode(enc, len(body)) == body
    with pytest.raises(OverflowError):
        snappy_frames_decode(enc, len(body) - 1)
    with pytest.raises(SnappyFrameError, match="stream identifier at offset 0"):
        snappy_frames_decode(b"xxxx" + enc[4:], 1 << 20)
    bad = bytearray(enc)
    bad[14] ^= 0xFF  # a byte of the first chunk's checksum
    with pytest.raises(SnappyFrameError, match="offset 10"):
        snappy_frames_decode(bytes(bad), 1 << 20)
    with pytest.raises(SnappyFrameError, match="declares"):
        snappy_frames_decode(enc[:-3], 1 << 20)
    with pytest.raises(SnappyFrameError, match="unskippable"):
        snappy_frames_decode(enc[:10] + b"\x05\x00\x00\x00", 1 << 20)


def test_grpc_message_escape():
    assert grpc_message_escape("a b%c\né") == "a b%25c%0A%C3%A9"


# --------------------------------------------------------------------------------- both paths

def test_splice_and_write_paths():
    asyncio.run(_splice_and_write_paths())


async def _splice_and_write_paths():
    async with _Server() as s:
        # grpcio's method through the splice, with grpcio's own client
        async with grpc.aio.insecure_channel(s.address, options=LOCAL) as ch:
            assert await ch.unary_unary(ECHO)(b"hello", timeout=10) == b"hello"
            # on a spliced connection RemoteWrite is grpcio's (none registered there)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await ch.unary_unary(REMOTE_WRITE)(b"x", timeout=10)
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # a connection beginning with RemoteWrite is the front's: uncompressed with grpcio's client
        async with grpc.aio.insecure_channel(s.address, options=LOCAL) as ch:
            assert await ch.unary_unary(REMOTE_WRITE)(b"plain", timeout=10) == b""
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await ch.unary_unary(REMOTE_WRITE)(b"conflict", timeout=10)
            assert (e.value.code(), e.value.details()) == (grpc.StatusCode.ALREADY_EXISTS, "out of order sample")
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await ch.unary_unary(REMOTE_WRITE)(b"boom", timeout=10)
            assert (e.value.code(), e.value.details()) == (grpc.StatusCode.INTERNAL, "broken")
            # any other method on such a connection
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await ch.unary_unary(ECHO)(b"hello", timeout=10)
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # a spliced connection sees one SETTINGS frame: the front's copy of grpcio's, grpcio's own dropped
        from h2 import events as ev

        async with H2Client(s.port) as c:
            tr, data = await c.call(ECHO, msg(b"raw h2"))
            assert (tr["grpc-status"], data) == ("0", msg(b"raw h2"))
            assert "snappy" not in tr["grpc-accept-encoding"]  # grpcio answered
            assert sum(isinstance(e, ev.RemoteSettingsChanged) for e in c.events) == 1
        # snappy, as a Thanos router sends it; several calls on one connection
        body = b"series " * 50000
        async with H2Client(s.port) as c:
            for _ in range(3):
                tr, data = await c.call(REMOTE_WRITE, msg(snappy_stream(body), True), "snappy")
                assert tr["grpc-status"] == "0" and data == msg(b"")
                assert "snappy" in tr["grpc-accept-encoding"]
        assert s.got == [b"plain"] + [body] * 3


def test_bad_input():
    asyncio.run(_bad_input())


async def _bad_input():
    async with _Server(max_recv=1000, handshake=0.5) as s:
        async with H2Client(s.port) as c:
            # a length prefix above the limit: refused from the prefix alone (nothing more is sent)
            tr, _ = await c.call(REMOTE_WRITE, struct.pack(">BI", 0, 0xFFFFFFF0))
            assert tr["grpc-status"] == "8", tr
            assert "larger than max (4294967280 vs. 1000)" in tr["grpc-message"]
            # snappy that decodes past the limit
            tr, _ = await c.call(REMOTE_WRITE, msg(snappy_stream(b"a" * 5000), True), "snappy")
            assert tr["grpc-status"] == "8", tr
            # bad snappy: the offset is named
            tr, _ = await c.call(REMOTE_WRITE, msg(b"\xff\x06\x00\x00sNaPpY\x00\x08\x00\x00garbage!", True),
                                 "snappy")
            assert tr["grpc-status"] == "13" and "offset" in tr["grpc-message"], tr
            # compressed flag without an encoding; an encoding the front lacks; unknown method
            tr, _ = await c.call(REMOTE_WRITE, msg(b"x", True))
            assert tr["grpc-status"] == "13", tr
            tr, _ = await c.call(REMOTE_WRITE, msg(b"x"), "zstd")
            assert tr["grpc-status"] == "12", tr
            tr, _ = await c.call("/thanos.Store/Series", msg(b""))
            assert tr["grpc-status"] == "12", tr
            # a truncated message (prefix says 10, 3 bytes sent, stream ended)
            tr, _ = await c.call(REMOTE_WRITE, struct.pack(">BI", 0, 10) + b"abc")
            assert tr["grpc-status"] == "13", tr
            # still serving on the same connection
            tr, _ = await c.call(REMOTE_WRITE, msg(b"ok"))
            assert tr["grpc-status"] == "0", tr
        # a connection that stops mid-frame (its SETTINGS never complete): the front closes it after
        # the handshake time, as grpcio would; one that goes away mid-frame; one not HTTP/2 at all
        for junk, wait in ((PREFACE + b"\x00\x00\x10\x04\x00\x00\x00", True),
                           (PREFACE + b"\x00\x00\x10\x04\x00\x00\x00", False),
                           (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 100, False)):
            r, w = await asyncio.open_connection("127.0.0.1", s.port)
            w.write(junk)
            await w.drain()
            while wait and await asyncio.wait_for(r.read(65536), 10):
                pass
            w.close()
        r, w = await asyncio.open_connection("127.0.0.1", s.port)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00" * 100)
        await w.drain()
        while await asyncio.wait_for(r.read(65536), 10):  # the front closes it (after its SETTINGS)
            pass
        w.close()
        # a malformed frame after a write call began: that connection closes, the server goes on
        async with H2Client(s.port) as c:
            tr, _ = await c.call(REMOTE_WRITE, msg(b"first"))
            assert tr["grpc-status"] == "0"
            c.writer.write(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00")  # WINDOW_UPDATE increment 0
            while await asyncio.wait_for(c.reader.read(65536), 10):
                pass
        async with grpc.aio.insecure_channel(s.address, options=LOCAL) as ch:
            assert await ch.unary_unary(ECHO)(b"still here", timeout=10) == b"still here"
        assert s.got == [b"ok", b"first"]


def test_max_connection_age_and_shutdown_goaway():
    asyncio.run(_max_connection_age_and_shutdown_goaway())


async def _max_connection_age_and_shutdown_goaway():
    """A connection served by the front gets a GOAWAY after its age; grpcio's client reconnects
    and later calls still succeed; close() ends what is left."""
    async with _Server(max_age=0.3) as s:
        async with grpc.aio.insecure_channel(s.address, options=LOCAL) as ch:
            call = ch.unary_unary(REMOTE_WRITE)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            n = 0
            while loop.time() < deadline and n < 8:
                await call(b"w%d" % n, timeout=10)
                n += 1
                await asyncio.sleep(0.1)
            assert n == 8
        assert s.got == [b"w%d" % i for i in range(8)]
        from h2 import events as ev

        async with H2Client(s.port) as c:  # served by the front: its own GOAWAY after the age
            tr, _ = await c.call(REMOTE_WRITE, msg(b"x"))
            assert tr["grpc-status"] == "0"
            seen = None
            while seen is None:
                chunk = await asyncio.wait_for(c.reader.read(65536), 10)
                assert chunk, "closed without a GOAWAY"
                seen = next((e for e in c.h2.receive_data(chunk) if isinstance(e, ev.ConnectionTerminated)), None)
            assert seen.error_code == 0 and seen.last_stream_id == 1
            while await asyncio.wait_for(c.reader.read(65536), 10):  # then the front closes it
                pass
    # shutdown: a call in flight finishes within the grace period, after the GOAWAY
    s = _Server()
    await s.__aenter__()
    closed = False
    try:
        async with grpc.aio.insecure_channel(s.address, options=LOCAL) as ch:
            call = asyncio.ensure_future(ch.unary_unary(REMOTE_WRITE)(b"slow", timeout=10))
            await asyncio.wait_for(s.entered.wait(), 10)
            closing = asyncio.create_task(s.__aexit__())
            while not s.front._conns or not all(c.goaway_sent for c in s.front._conns):
                await asyncio.sleep(0.01)
            s.release.set()
            assert await call == b""
            await closing
            closed = True
    finally:
        if not closed:
            await s.__aexit__()
    assert s.got[-1] == b"slow"
    with socket.socket() as probe:  # the port is closed after __aexit__
        assert probe.connect_ex(("127.0.0.1", s.port)) != 0


# ------------------------------------------------------------------------------------------- TLS

def test_tls_ends_in_the_front_with_client_certificates_and_reload(certs, tmp_path):
    """Both paths over TLS (grpcio's own client: ALPN h2, client certificate verified against the
    CA); no certificate or an untrusted one is refused; the server certificate is re-read when its
    files change, and a broken replacement keeps the last good one."""
    import shutil

    from pythanos.tlsconfig import ServerTLS

    live = tmp_path / "live"
    live.mkdir()
    for src, dst in ((certs.server_crt, "tls.crt"), (certs.server_key, "tls.key")):
        shutil.copy(src, live / dst)
    tls = ServerTLS(str(live / "tls.crt"), str(live / "tls.key"), certs.ca_crt, min_version="1.2")
    read = lambda p: open(p, "rb").read()  # noqa: E731

    def creds(ca: str, cert: Optional[str] = None, key: Optional[str] = None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(read(ca), read(key) if key else None, read(cert) if cert else None)

    async def call(address: str, method: str, body: bytes, cred: grpc.ChannelCredentials) -> bytes:
        async with grpc.aio.secure_channel(address, cred, options=LOCAL) as ch:
            return await ch.unary_unary(method)(body, timeout=10)

    async def main() -> None:
        got: list[bytes] = []

        async def write(raw: bytes) -> None:
            got.append(raw)

        front = GrpcFront(writeable_front(write), max_recv=1 << 20, tls=tls)
        server = grpc.aio.server()

        async def echo(req: bytes, ctx) -> bytes:
            return req

        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", {
            "Echo": grpc.unary_unary_rpc_method_handler(echo)})])
        server.add_insecure_port("unix:" + front.upstream)
        await server.start()
        address = f"127.0.0.1:{await front.start('127.0.0.1:0')}"
        good = creds(certs.ca_crt, certs.client_crt, certs.client_key)
        try:
            assert await call(address, ECHO, b"spliced", good) == b"spliced"
            assert await call(address, REMOTE_WRITE, b"served", good) == b""
            assert got == [b"served"]
            for bad in (creds(certs.ca_crt), creds(certs.ca_crt, certs.other_client_crt, certs.other_client_key)):
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await call(address, ECHO, b"x", bad)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            async with grpc.aio.insecure_channel(address, options=LOCAL) as ch:  # plaintext: nothing
                with pytest.raises(grpc.aio.AioRpcError):
                    await ch.unary_unary(ECHO)(b"x", timeout=5)
            # new files, renamed into place: the next handshake presents the new certificate
            for src, dst in ((certs.other_server_crt, "tls.crt"), (certs.other_server_key, "tls.key")):
                shutil.copy(src, live / f"{dst}.new")
                (live / f"{dst}.new").rename(live / dst)
            other = creds(certs.other_ca_crt, certs.client_crt, certs.client_key)
            assert await call(address, ECHO, b"reloaded", other) == b"reloaded"
            with pytest.raises(grpc.aio.AioRpcError):
                await call(address, ECHO, b"x", good)
            (live / "tls.key").write_text("not a key\n")
            assert await call(address, REMOTE_WRITE, b"kept", other) == b""
        finally:
            front.stop_accepting()
            await asyncio.gather(server.stop(0), front.close(0))
        assert got == [b"served", b"kept"]

    asyncio.run(main())
