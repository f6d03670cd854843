"""A front on a gRPC port that answers chosen unary methods itself, with snappy compression.

Why: a Thanos receiver forwards writes to the other members of its hashring over gRPC
(``/thanos.WriteableStore/RemoteWrite``) compressed with the message encoding ``snappy``
(``--receive.grpc-compression``, default ``snappy``: request header ``grpc-encoding: snappy``,
compressed flag 1 on the length-prefixed message). grpcio's C core knows identity, deflate and
gzip only and refuses such a call with UNIMPLEMENTED, which a Thanos router turns into a 503.
grpcio has no hook for another codec, so the port itself has to understand snappy.

Shape (chosen over a full HTTP/2 gRPC server in Python, which would put every StoreAPI
``Series`` frame through Python twice): the public address is served by this front; grpcio
listens on a Unix socket in a private directory. Per accepted connection the front (with
``h2``, python-hyper's HTTP/2 state machine) reads frames up to the first complete request
HEADERS:

* the first call is one of :attr:`GrpcFront.methods` (the receiver: RemoteWrite): the whole
  connection is served here: gRPC length-prefixed messages, ``snappy`` (and identity)
  decoding, the handler's answer or its status (an exception's ``code`` attribute, a
  ``grpc.StatusCode``, as the write API's errors carry; anything else Internal), trailers
  ``grpc-status``/``grpc-message``, ``grpc-accept-encoding: snappy,identity``. Any other
  method on such a connection answers UNIMPLEMENTED;
* anything else (StoreAPI clients, uncompressed writers that begin with another call): the
  bytes read so far are replayed to grpcio and the connection is spliced both ways. Plaintext
  splices leave the event loop: two threads per connection move the bytes with ``os.splice``
  (kernel to kernel, GIL released); copying on the event loop instead cost a StoreAPI
  ``Series`` stream through the front about twice the server CPU of a direct one, the kernel
  splice about a third more. Under TLS the bytes are decrypted here and copied on the loop.

The first call decides for the whole connection: a client that multiplexes StoreAPI and snappy
RemoteWrite calls on one connection gets UNIMPLEMENTED for whichever kind came second (Thanos
does not: routers' peer connections carry RemoteWrite only, queriers' StoreAPI only; note that
grpcio clients share one connection between channels to the same target unless
``grpc.use_local_subchannel_pool`` is set).

The catch that shapes the handshake: a grpc-go client sends no call before it has the server's
SETTINGS, so the front must answer the preface before it knows which side will serve the
connection. It sends grpcio's own first SETTINGS frame, learnt once at start by connecting to the
internal socket, and configures its h2 state with the same values; on a spliced connection
grpcio's first SETTINGS frame (the same bytes) is dropped and the client's ACK reaches grpcio
only after grpcio has sent it, so both ends agree on windows and frame sizes.

Snappy here is the framing ("stream") format: Thanos' compressor is klauspost's
``snappy.NewBufferedWriter``/``NewReader`` (stream identifier, then chunks of at most 64 KiB
uncompressed, each with a masked CRC-32C). Chunks are decoded one by one (a message of the
largest kind is a few hundred chunks), the CRC checked, and the declared length of each block
checked against the bound before it is decompressed.

Bounds: a message longer than ``max_recv`` (grpcio's ``grpc.max_receive_message_length``) is
refused with RESOURCE_EXHAUSTED as soon as its length prefix arrives, and a compressed one as
soon as its decoded size would pass it; nothing is allocated from a declared length. Flow
control is h2's (data is acknowledged as it is buffered, and the buffer is bounded by the
message limit). A malformed frame or a preface that is not HTTP/2 closes that connection only.

TLS (``--grpc-server-tls-*``) ends here: Python ``ssl`` with ALPN ``h2``, client certificates
required and verified against the client CA when one is set, the files re-read at the next
handshake after they change (a file that fails to load keeps the previous certificate, as
grpcio's path does). grpcio behind it speaks plaintext on its private socket.

Connection age and shutdown: spliced connections are grpcio's (``grpc.max_connection_age_ms``
and ``server.stop(grace)`` send their GOAWAYs through the splice); connections served here get
a GOAWAY after ``max_connection_age`` (with grpc's +-10% jitter) and at :meth:`GrpcFront.close`,
finish their calls in flight within the grace period, then close.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
from typing import Awaitable, Callable, Mapping, Optional

from ..errors import UserError

log = logging.getLogger(__name__)

__all__ = ["GrpcFront", "UnaryMethod", "SnappyFrameError", "snappy_frames_decode", "PREFACE", "grpc_message_escape"]

#: the handler of a unary method: request bytes (decompressed) -> response bytes
UnaryMethod = Callable[[bytes], Awaitable[bytes]]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_SETTINGS = 0x4
_FLAG_ACK = 0x1
#: the most a client may send before its first request HEADERS are complete (a HEADERS block
#: bigger than grpcio's 16 KiB header list limit would be refused anyway)
_SNIFF_LIMIT = 1 << 20
_HANDSHAKE_TIMEOUT = 120.0  # grpc-go's server ConnectionTimeout
_READ = 1 << 16

# gRPC status codes (numbers, as on the wire)
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 2, 3, 4
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 8, 12, 13, 14


# --------------------------------------------------------------------------------------- snappy

class SnappyFrameError(ValueError):
    """A snappy stream that cannot be decoded; the text names the byte offset."""


_STREAM_ID = b"\xff\x06\x00\x00sNaPpY"
_MAX_CHUNK = 1 << 16  # uncompressed bytes per chunk, by the framing format


def _masked_crc(data) -> int:
    import google_crc32c

    c = google_crc32c.value(bytes(data))
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def snappy_frames_decode(data: bytes, limit: int) -> bytes:
    """Decode the snappy framing format (what Go's ``snappy.NewBufferedWriter`` writes).

    Raises :class:`SnappyFrameError` (bad stream, naming the offset) or :class:`OverflowError`
    when the decoded size would exceed ``limit`` (checked before each chunk is decoded)."""
    import cramjam

    mv = memoryview(data)
    out: list[bytes] = []
    total, pos, n = 0, 0, len(mv)
    if not mv[:len(_STREAM_ID)] == _STREAM_ID:
        raise SnappyFrameError("snappy: missing stream identifier at offset 0")
    while pos < n:
        if n - pos < 4:
            raise SnappyFrameError(f"snappy: truncated chunk header at offset {pos}")
        kind = mv[pos]
        size = mv[pos + 1] | (mv[pos + 2] << 8) | (mv[pos + 3] << 16)
        body = pos + 4
        if n - body < size:
            raise SnappyFrameError(f"snappy: chunk at offset {pos} declares {size} bytes, {n - body} left")
        chunk = mv[body:body + size]
        if kind in (0x00, 0x01):
            if size < 4:
                raise SnappyFrameError(f"snappy: chunk at offset {pos} too short for its checksum")
            crc = struct.unpack_from("<I", chunk)[0]
            payload = chunk[4:]
            if kind == 0x00:
                try:
                    want = cramjam.snappy.decompress_raw_len(bytes(payload))
                except Exception as e:  # noqa: BLE001: cramjam raises its own error type
                    raise SnappyFrameError(f"snappy: bad block length at offset {body + 4}: {e}") from None
                if want > _MAX_CHUNK:
                    raise SnappyFrameError(f"snappy: chunk at offset {pos} decodes to {want} bytes, "
                                           f"more than {_MAX_CHUNK}")
                if total + want > limit:
                    raise OverflowError(total + want)
                try:
                    plain = bytes(cramjam.snappy.decompress_raw(bytes(payload)))
                except Exception as e:  # noqa: BLE001
                    raise SnappyFrameError(f"snappy: corrupt block at offset {body + 4}: {e}") from None
            else:
                if len(payload) > _MAX_CHUNK:
                    raise SnappyFrameError(f"snappy: uncompressed chunk at offset {pos} holds {len(payload)} bytes, "
                                           f"more than {_MAX_CHUNK}")
                if total + len(payload) > limit:
                    raise OverflowError(total + len(payload))
                plain = bytes(payload)
            if _masked_crc(plain) != crc:
                raise SnappyFrameError(f"snappy: checksum mismatch in chunk at offset {pos}")
            out.append(plain)
            total += len(plain)
        elif kind == 0xFF:
            if bytes(chunk) != _STREAM_ID[4:]:
                raise SnappyFrameError(f"snappy: bad stream identifier at offset {pos}")
        elif kind < 0x80:
            raise SnappyFrameError(f"snappy: unskippable chunk type {kind:#04x} at offset {pos}")
        # 0x80..0xfe: skippable (padding included)
        pos = body + size
    return b"".join(out)


# ----------------------------------------------------------------------------------- gRPC bits

def grpc_message_escape(text: str) -> str:
    """``grpc-message`` percent-encoding: UTF-8, bytes outside 0x20..0x7e and ``%`` escaped."""
    out = []
    for b in text.encode("utf-8", "replace"):
        out.append(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}")
    return "".join(out)


_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def _grpc_timeout(value: Optional[str]) -> Optional[float]:
    if not value or len(value) < 2 or value[-1] not in _TIMEOUT_UNITS or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]


def _status_of(exc: BaseException) -> tuple[int, str]:
    """An exception's gRPC status: its ``code`` (a ``grpc.StatusCode`` or an int), else Internal."""
    code = getattr(exc, "code", None)
    value = getattr(code, "value", code)
    if isinstance(value, tuple):  # grpc.StatusCode values are (number, name)
        value = value[0]
    if isinstance(value, int) and not isinstance(value, bool):
        return value, str(exc) or type(exc).__name__
    return INTERNAL, str(exc) or type(exc).__name__


def _settings_pairs(frame: bytes) -> list[tuple[int, int]]:
    body = frame[9:]
    return [struct.unpack_from(">HI", body, i) for i in range(0, len(body) - len(body) % 6, 6)]


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(9)
    return head + await reader.readexactly(int.from_bytes(head[:3], "big"))


# ------------------------------------------------------------------------------------------- TLS

class _TLSContexts:
    """The server ``ssl.SSLContext`` for the next handshake, rebuilt when the files change."""

    def __init__(self, tls) -> None:
        from ..tlsconfig import check_min_version

        check_min_version(tls.min_version, f"--grpc-server-tls-min-version={tls.min_version}")
        self.tls = tls
        self.stamp = tls.stamp()
        self.failed: tuple = ()
        self.ctx = self._build()  # UserError naming flag and file when they do not load

    def _build(self) -> ssl.SSLContext:
        self.tls.load()  # checks every file with errors naming the flag
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if self.tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.tls.cert_file, self.tls.key_file)
            if self.tls.client_ca_file:
                ctx.load_verify_locations(cafile=self.tls.client_ca_file)
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (ssl.SSLError, OSError) as e:
            c, k, _ = self.tls.names
            raise UserError(f"{c}={self.tls.cert_file} {k}={self.tls.key_file}: cannot load: {e}") from None
        if self.tls.min_version != "1.3":  # the TLS 1.2 suites grpcio is held to (--grpc-server-tls-ciphers)
            from ..tlsconfig import ENV

            suites = os.environ.get(ENV)
            if suites:
                ctx.set_ciphers(suites)
        ctx.set_alpn_protocols(["h2"])
        return ctx

    def current(self) -> ssl.SSLContext:
        st = self.tls.stamp()
        if st != self.stamp and st != self.failed:
            try:
                ctx = self._build()
            except UserError as e:
                self.failed = st
                log.error("cannot reload the gRPC server certificate; keeping the previous one", extra={"err": str(e)})
            else:
                self.ctx, self.stamp, self.failed = ctx, st, ()
                log.info("reloaded the gRPC server certificate", extra={"cert": self.tls.cert_file})
        return self.ctx


# ----------------------------------------------------------------------------------------- front

class GrpcFront:
    """The public side of a gRPC port: :attr:`methods` answered here, everything else spliced to
    the grpcio server listening on :attr:`upstream` (see the module docstring)."""

    def __init__(self, methods: Mapping[str, UnaryMethod], *, max_recv: int, tls=None,
                 max_connection_age: float = 0.0, name: str = "",
                 handshake_timeout: float = _HANDSHAKE_TIMEOUT) -> None:
        self.methods = dict(methods)
        #: for the TLS handshake and the client's HTTP/2 preface and SETTINGS
        self.handshake_timeout = handshake_timeout
        self.max_recv = max_recv
        self.tls = _TLSContexts(tls) if tls is not None else None
        self.max_connection_age = max_connection_age
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="pythanos-grpc-")  # mode 0700: only this user reaches grpcio
        #: where grpcio listens (pass ``"unix:" + upstream`` to ``add_insecure_port``)
        self.upstream = os.path.join(self.dir, "grpc.sock")
        self._settings = b""
        self._server: Optional[asyncio.base_events.Server] = None
        self._conns: set["_Conn"] = set()
        self._closing = False
        self.port = 0

    async def learn_settings(self, timeout: float = 10.0) -> None:
        """grpcio's first SETTINGS frame, read once from the internal socket (after grpcio started)."""
        reader, writer = await asyncio.open_unix_connection(self.upstream)
        try:
            writer.write(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            frame = await asyncio.wait_for(_read_frame(reader), timeout)
        finally:
            writer.close()
        if frame[3] != _FRAME_SETTINGS or frame[4] & _FLAG_ACK:
            raise RuntimeError(f"gRPC front: grpcio's first frame is type {frame[3]}, not SETTINGS")
        self._settings = frame

    async def start(self, address: str, flag: str = "--grpc-address", *, reuse_port: bool = False) -> int:
        """Listen on ``address`` (``host:port``); returns the port. UserError naming ``flag``."""
        if not self._settings:
            await self.learn_settings()
        host, _, port = address.rpartition(":")
        try:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                lambda: _HeldProtocol(asyncio.StreamReader(limit=_READ * 4), self._accept),
                host.strip("[]") or None, int(port), reuse_port=reuse_port or None)
        except (OSError, ValueError) as e:
            raise UserError(f"{flag}={address}: cannot listen: {getattr(e, 'strerror', None) or e}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def stop_accepting(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()

    async def close(self, grace: float) -> None:
        """GOAWAY to connections served here; wait up to ``grace`` for all connections (grpcio
        ends the spliced ones as it stops), then close what is left and remove the socket dir."""
        self.stop_accepting()
        for c in list(self._conns):
            c.goaway()
        deadline = time.monotonic() + grace
        while self._conns and time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        for c in list(self._conns):
            c.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- per connection ------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        conn = _Conn(self, reader, writer)
        self._conns.add(conn)
        try:
            await conn.run()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError, asyncio.TimeoutError):
            pass
        except Exception as e:  # noqa: BLE001: one connection's failure never ends the server
            log.warning("gRPC front connection failed", extra={"err": repr(e)})
        finally:
            self._conns.discard(conn)
            conn.abort()


class _HeldProtocol(asyncio.StreamReaderProtocol):
    """Streams whose reading starts held: bytes a client sends before a TLS handshake is set up
    (its ClientHello) would otherwise land in the plaintext reader and the handshake would hang."""

    def connection_made(self, transport) -> None:
        transport.pause_reading()
        super().connection_made(transport)


class _Conn:
    """One accepted connection: TLS, sniffing, then served here or spliced."""

    def __init__(self, front: GrpcFront, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.front, self.reader, self.writer = front, reader, writer
        #: the accepted socket's transport (a failed TLS handshake leaves the writer without one)
        self.raw = writer.transport
        self.h2 = None
        self.upstream: Optional[asyncio.StreamWriter] = None
        self.kernel: tuple[socket.socket, ...] = ()
        self.calls: dict[int, "_Call"] = {}
        #: the last stream id named in our GOAWAY (0: none sent)
        self.goaway_sent = 0

    def abort(self) -> None:
        for sock in self.kernel:  # spliced in the kernel: the threads end when their sockets shut down
            _shutdown(sock)
        for t in (self.raw, self.writer.transport, self.upstream.transport if self.upstream is not None else None):
            if t is not None and not t.is_closing():
                t.abort()
        for call in self.calls.values():
            if call.task is not None:
                call.task.cancel()

    def goaway(self, why: str = "shutting down") -> None:
        """Graceful GOAWAY on a connection served here (spliced ones are grpcio's to close)."""
        if self.h2 is None or self.goaway_sent or self.upstream is not None:
            if self.h2 is None and self.upstream is None:  # still sniffing: nothing was started
                self.abort()
            return
        from hyperframe.frame import GoAwayFrame

        # written by hand: after h2's own close_connection it refuses to send the answers of the
        # calls still in flight; streams the client opens after this one are refused in _request
        self.goaway_sent = self.h2.highest_inbound_stream_id
        log.debug("gRPC front: GOAWAY", extra={"reason": why, "last_stream": self.goaway_sent,
                                               "peer": str(self.writer.get_extra_info("peername"))})
        frame = GoAwayFrame(0)
        frame.last_stream_id, frame.error_code = self.goaway_sent, 0
        self.flush()
        if not self.writer.is_closing():
            self.writer.write(frame.serialize())
        if not self.calls:
            self.writer.close()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def run(self) -> None:
        from h2.config import H2Configuration
        from h2.connection import H2Connection
        from h2.events import RequestReceived
        from h2.exceptions import ProtocolError
        from h2.settings import SettingCodes, Settings

        front = self.front
        if front.tls is not None:  # reading is still held (_HeldProtocol): the ClientHello goes to ssl
            await asyncio.wait_for(self.writer.start_tls(front.tls.current()), front.handshake_timeout)
        else:
            self.raw.resume_reading()
        h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        # h2 speaks with grpcio's settings, which are the ones the client gets (module docstring)
        known = {int(c) for c in SettingCodes}
        values = {SettingCodes(k): v for k, v in _settings_pairs(front._settings) if k in known}
        values.setdefault(SettingCodes.MAX_CONCURRENT_STREAMS, 2**31 - 1)
        h2.local_settings = Settings(client=False, initial_values=values)
        h2.max_inbound_frame_size = h2.local_settings.max_frame_size
        h2.incoming_buffer.max_frame_size = h2.max_inbound_frame_size
        h2.initiate_connection()
        h2.data_to_send()  # replaced by grpcio's own frame, the same values
        self.writer.write(front._settings)
        buf = bytearray()
        first = None
        events: list = []
        # the client's preface and SETTINGS within the handshake time, as grpcio allows; after
        # that a connection may wait idle for its first call
        loop = asyncio.get_running_loop()
        deadline: Optional[float] = loop.time() + front.handshake_timeout
        while first is None:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            data = await asyncio.wait_for(self.reader.read(_READ), timeout)
            if not data:
                return
            buf += data
            if len(buf) > _SNIFF_LIMIT:
                return
            try:
                events = h2.receive_data(data)
            except ProtocolError:
                return  # not HTTP/2, or malformed: close
            for ev in events:
                if type(ev).__name__ == "RemoteSettingsChanged":
                    deadline = None
                if isinstance(ev, RequestReceived):
                    first = dict(ev.headers).get(":path", "")
                    break
                if type(ev).__name__ not in ("RemoteSettingsChanged", "SettingsAcknowledged", "WindowUpdated"):
                    first = ""  # a ping or something else before any call: grpcio's business
                    break
        if first in front.methods:
            self.h2 = h2
            await self._serve(events)
        else:
            await self._splice(bytes(buf))

    # -- spliced to grpcio ---------------------------------------------------------------------
    async def _splice(self, buf: bytes) -> None:
        front = self.front
        up_r, up_w = await asyncio.open_unix_connection(front.upstream, limit=_READ * 4)
        self.upstream = up_w
        # preface and the client's SETTINGS first; the rest (its ACK of "our" SETTINGS among it)
        # only once grpcio has sent the SETTINGS frame that ACK stands for
        cut = len(PREFACE)
        if len(buf) >= cut + 9:
            cut += 9 + int.from_bytes(buf[cut:cut + 3], "big")
        cut = min(cut, len(buf))
        up_w.write(buf[:cut])
        frame = await asyncio.wait_for(_read_frame(up_r), front.handshake_timeout)
        if frame != front._settings:  # not seen so far: pass it on, visibly (the client ACKs it too)
            log.warning("gRPC front: grpcio's first SETTINGS differ from those learnt at start; passed on",
                        extra={"learnt": front._settings.hex(), "now": frame.hex()})
            self.writer.write(frame)
        up_w.write(buf[cut:])
        if front.tls is None and _KERNEL_SPLICE:
            await self._kernel_splice(up_r, up_w)
        else:  # TLS (decrypted here) or no os.splice: copied on the event loop
            await asyncio.gather(_pump(self.reader, up_w), _pump(up_r, self.writer))

    async def _kernel_splice(self, up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter) -> None:
        """Both sockets leave the event loop: two threads move the bytes with ``os.splice``
        (socket -> pipe -> socket in the kernel, the GIL released), so a StoreAPI stream through
        the front costs the process next to nothing (figures in the report of this change)."""
        client, to_up = await _detach(self.writer, self.reader)
        up, to_client = await _detach(up_w, up_r)
        self.kernel = (client, up)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        left = [2]

        def finished() -> None:  # on the loop, so the count needs no lock
            left[0] -= 1
            if left[0] == 0 and not done.done():
                done.set_result(None)

        def one(src: socket.socket, dst: socket.socket, head: bytes) -> None:
            try:
                _splice_copy(src, dst, head)
            finally:
                try:
                    loop.call_soon_threadsafe(finished)
                except RuntimeError:  # the loop is gone (process exit)
                    pass

        for args in ((client, up, to_up), (up, client, to_client)):
            threading.Thread(target=one, args=args, name="grpc-front-splice", daemon=True).start()
        try:
            await done
        finally:
            for sock in (client, up):
                _shutdown(sock)
            if not done.done():  # cancelled: the threads end on the shutdown; the sockets close then
                await asyncio.shield(done)
            client.close()
            up.close()

    # -- served here ---------------------------------------------------------------------------
    async def _serve(self, events: list) -> None:
        from h2.exceptions import ProtocolError

        front = self.front
        age = None
        if front.max_connection_age > 0:
            jitter = front.max_connection_age * random.uniform(-0.1, 0.1)
            age = asyncio.get_running_loop().call_later(front.max_connection_age + jitter, self.goaway,
                                                        "max connection age")
        try:
            self._handle(events)
            self.flush()
            while True:
                data = await self.reader.read(_READ)
                if not data:
                    return
                try:
                    events = self.h2.receive_data(data)
                except ProtocolError:
                    try:
                        self.flush()  # h2 queued a GOAWAY naming the error
                    except Exception:  # noqa: BLE001
                        pass
                    return
                self._handle(events)
                self.flush()
                await self.writer.drain()
                if self.goaway_sent and not self.calls:
                    return
        finally:
            if age is not None:
                age.cancel()

    def _handle(self, events: list) -> None:
        from h2 import events as ev

        for e in events:
            if isinstance(e, ev.RequestReceived):
                self._request(e.stream_id, dict(e.headers))
            elif isinstance(e, ev.DataReceived):
                self.h2.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                call = self.calls.get(e.stream_id)
                if call is not None and call.task is None:
                    call.data(e.data)
            elif isinstance(e, ev.StreamEnded):
                call = self.calls.get(e.stream_id)
                if call is not None and call.task is None and not call.done:
                    call.start()
            elif isinstance(e, ev.StreamReset):
                call = self.calls.pop(e.stream_id, None)
                if call is not None and call.task is not None:
                    call.task.cancel()
            elif isinstance(e, ev.ConnectionTerminated):
                self.writer.close()

    def _request(self, sid: int, headers: dict) -> None:
        if self.goaway_sent and sid > self.goaway_sent:  # opened after our GOAWAY: retry elsewhere
            self.h2.reset_stream(sid, 7)  # REFUSED_STREAM
            return
        path = headers.get(":path", "")
        call = _Call(self, sid, headers)
        self.calls[sid] = call
        enc = headers.get("grpc-encoding", "identity")
        if path not in self.front.methods:
            call.finish(UNIMPLEMENTED, f"unknown method {path.rpartition('/')[2]} for service "
                        f"{path.strip('/').rpartition('/')[0]}")
        elif enc not in ("identity", "snappy"):
            call.finish(UNIMPLEMENTED, f'grpc: Decompressor is not installed for grpc-encoding "{enc}"')
        elif not headers.get("content-type", "").startswith("application/grpc"):
            call.finish(UNKNOWN, f"invalid gRPC request content-type {headers.get('content-type', '')!r}")


class _Call:
    """One unary call on a connection served by the front."""

    def __init__(self, conn: _Conn, sid: int, headers: dict) -> None:
        self.conn, self.sid, self.headers = conn, sid, headers
        self.buf = bytearray()
        self.task: Optional[asyncio.Task] = None
        self.done = False

    def data(self, chunk: bytes) -> None:
        if self.done:
            return
        self.buf += chunk
        if len(self.buf) >= 5:
            (n,) = struct.unpack_from(">I", self.buf, 1)
            if n > self.conn.front.max_recv:  # refused before the message is buffered
                self.finish(RESOURCE_EXHAUSTED, f"grpc: received message larger than max ({n} vs. "
                                                f"{self.conn.front.max_recv})")
            elif len(self.buf) > 5 + n:
                self.finish(UNIMPLEMENTED, "grpc: more than one request message for a unary method")

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        front = self.conn.front
        buf = self.buf
        if len(buf) < 5 or len(buf) != 5 + struct.unpack_from(">I", buf, 1)[0]:
            return self.finish(INTERNAL, "grpc: request message is incomplete or missing")
        message = bytes(buf[5:])
        self.buf = bytearray()
        if buf[0] == 1:
            if self.headers.get("grpc-encoding", "identity") != "snappy":
                return self.finish(INTERNAL, "grpc: compressed flag set with identity or empty encoding")
            try:
                message = snappy_frames_decode(message, front.max_recv)
            except OverflowError:
                return self.finish(RESOURCE_EXHAUSTED, f"grpc: received message after decompression larger "
                                                       f"than max {front.max_recv}")
            except SnappyFrameError as e:
                return self.finish(INTERNAL, f"grpc: failed to decompress the received message: {e}")
        elif buf[0] != 0:
            return self.finish(INTERNAL, f"grpc: invalid compressed flag {buf[0]}")
        handler = front.methods[self.headers.get(":path", "")]
        timeout = _grpc_timeout(self.headers.get("grpc-timeout"))
        try:
            response = await asyncio.wait_for(handler(message), timeout)
        except asyncio.CancelledError:
            self.done = True
            self.conn.calls.pop(self.sid, None)
            raise
        except (asyncio.TimeoutError, TimeoutError):
            return self.finish(DEADLINE_EXCEEDED, "context deadline exceeded")
        except Exception as e:  # noqa: BLE001: every failure becomes a status
            code, text = _status_of(e)
            if code == INTERNAL and getattr(e, "code", None) is None:
                log.error("gRPC call failed", extra={"method": self.headers.get(":path"), "err": repr(e)},
                          exc_info=e)
            return self.finish(code, text)
        self.finish(OK, "", response)

    def finish(self, code: int, message: str, response: Optional[bytes] = None) -> None:
        """Answer (trailers-only for an error), then forget the call; flushes."""
        if self.done:
            return
        self.done = True
        conn = self.conn
        h2 = conn.h2
        base = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-accept-encoding", "snappy,identity")]
        trailers = [("grpc-status", str(code))]
        if message:
            trailers.append(("grpc-message", grpc_message_escape(message)))
        try:
            if code == OK and response is not None:
                h2.send_headers(self.sid, base)
                h2.send_data(self.sid, b"\x00" + struct.pack(">I", len(response)) + response)
                h2.send_headers(self.sid, trailers, end_stream=True)
            else:
                h2.send_headers(self.sid, base + trailers, end_stream=True)
            stream = h2.streams.get(self.sid)
            if stream is not None and not stream.closed:  # the client is still sending: no more wanted
                h2.reset_stream(self.sid, 0)
        except Exception as e:  # noqa: BLE001: the stream or connection went away meanwhile
            log.debug("gRPC front: cannot answer", extra={"stream": self.sid, "err": repr(e)})
        conn.calls.pop(self.sid, None)
        conn.flush()
        if conn.goaway_sent and not conn.calls:
            conn.writer.close()


_KERNEL_SPLICE = hasattr(os, "splice")
_PIPE_SIZE = 1 << 20


async def _detach(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> tuple[socket.socket, bytes]:
    """Take a stream's socket off the event loop: what it still had to send is sent first; the
    bytes it had read but nobody consumed are returned with a blocking duplicate of the socket."""
    t = writer.transport
    t.pause_reading()
    t.set_write_buffer_limits(high=0)
    await writer.drain()
    left = bytes(reader._buffer)  # read by the transport, not yet by us (asyncio keeps no public way)
    reader._buffer.clear()
    sock = socket.socket(fileno=os.dup(t.get_extra_info("socket").fileno()))
    t.abort()  # closes asyncio's descriptor only; the duplicate keeps the connection
    sock.setblocking(True)
    return sock, left


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _splice_copy(src: socket.socket, dst: socket.socket, head: bytes) -> None:
    """Copy ``head`` then everything from ``src`` to ``dst`` until end of stream (blocking; in
    the kernel through a pipe), then half-close ``dst``. Errors end the copy: the connection is over."""
    r, w = os.pipe()
    try:
        try:
            import fcntl

            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        except (ImportError, AttributeError, OSError):  # the default pipe (64 KiB) does too
            pass
        if head:
            dst.sendall(head)
        sfd, dfd = src.fileno(), dst.fileno()
        while True:
            n = os.splice(sfd, w, _PIPE_SIZE)
            if n == 0:
                break
            while n:
                n -= os.splice(r, dfd, n)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        _shutdown(dst)
        _shutdown(src)
    finally:
        os.close(r)
        os.close(w)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until end of stream; then half-close ``dst`` (or close it where that cannot be)."""
    try:
        while True:
            data = await src.read(_READ)
            if not data:
                break
            dst.write(data)
            if dst.transport.get_write_buffer_size() > _READ * 4:
                await dst.drain()
    finally:
        if dst.can_write_eof():
            try:
                dst.write_eof()
            except OSError:
                dst.close()
        else:
            dst.close()
