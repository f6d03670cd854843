"""A lean client for server-streaming gRPC calls over cleartext HTTP/2: the querier's Series fan-out.

Why not grpcio here: a dashboard is many small queries, each one ``Series`` call per store, and
grpcio's asyncio client spends about 0.33 ms of CPU per such call in this process (its C core
hands every completion from its own threads to the event loop), measured against a sidecar
answering ``up``: as much as a whole small query costs a Thanos querier for three stores. The
same calls framed here on the event loop cost about 0.13 ms (``benchmarks/README.md``,
``bench_dashboard.py``). Everything else (Info, labels, TLS, endpoint groups) stays on grpcio,
and so does Series when the endpoint dials with TLS or through a resolver target.

What is spoken (RFC 9113 and gRPC's PROTOCOL-HTTP2): prior-knowledge h2c; request headers
encoded with HPACK literals only (no dynamic table, so the peer's table size does not matter);
response header blocks decoded by ``hpack`` (python-hyper's, the package ``h2`` is built on);
DATA frames cut into gRPC length-prefixed messages; trailers (or a trailers-only answer) give
``grpc-status``/``grpc-message``; an HTTP status other than 200 maps to a gRPC code as gRPC's
spec says. The peer's SETTINGS (frame size, initial window, concurrent streams) are obeyed; PING
is answered; GOAWAY fails the streams above its last id as UNAVAILABLE and retires the
connection (the next call dials a new one).

Bounds: a message longer than ``max_recv`` fails its call with RESOURCE_EXHAUSTED as soon as its
length prefix is read; a stream's buffered, unread bytes are bounded by its receive window
(:data:`STREAM_WINDOW`, credited back as the reader takes messages); header blocks by ``hpack``'s
header list limit. Deadlines: ``grpc-timeout`` is sent and the call fails locally with
DEADLINE_EXCEEDED when it passes (the stream is reset). A silent connection with calls in flight
is pinged after ``keepalive`` seconds and dropped after ``keepalive_timeout`` more without an
answer, as grpcio's ``keepalive_time_ms``/``keepalive_timeout_ms`` do.
"""
from __future__ import annotations

import asyncio
import collections
import struct
import time
import urllib.parse
from typing import Optional

import grpc
import hpack

__all__ = ["H2Channel", "H2Call", "H2Error", "EOF", "grpc_timeout"]

EOF = grpc.aio.EOF  # what read() returns at the end of the stream, as grpcio's call.read()

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE = 1, 2, 3, 4, 5
CANCEL, REFUSED_STREAM = 0x8, 0x7
REFUSED_RETRIES = 8  # times a refused call is sent again (backoff 10 ms doubling, at most 1 s)

STREAM_WINDOW = 4 << 20  # bytes a stream may have in flight and unread
CONNECTION_WINDOW = 64 << 20
MAX_FRAME = 1 << 16  # what we accept per frame (peers send at most this much at once)
MAX_STREAM_ID = (1 << 31) - 1

_FRAME = struct.Struct(">HBBBI")  # length as 16 + 8 bits, type, flags, stream id

# gRPC's mapping of HTTP statuses when there is no grpc-status (PROTOCOL-HTTP2, "HTTP to gRPC Status Code Mapping")
_HTTP_CODES = {400: grpc.StatusCode.INTERNAL, 401: grpc.StatusCode.UNAUTHENTICATED,
               403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.UNIMPLEMENTED,
               429: grpc.StatusCode.UNAVAILABLE, 502: grpc.StatusCode.UNAVAILABLE,
               503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.UNAVAILABLE}
_CODES = {c.value[0]: c for c in grpc.StatusCode}
# RST_STREAM error codes as grpc-go reports them
_RST_CODES = {0x7: grpc.StatusCode.UNAVAILABLE, 0x8: grpc.StatusCode.CANCELLED, 0xB: grpc.StatusCode.RESOURCE_EXHAUSTED,
              0xC: grpc.StatusCode.PERMISSION_DENIED}


class H2Error(Exception):
    """A failed call: ``code`` (grpc.StatusCode) and ``details``, as grpcio's AioRpcError carries them."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


def _frame(typ: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 8, n & 0xFF, typ, flags, sid) + payload


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name_index: int, name: bytes, value: bytes) -> bytes:
    """HPACK "literal header field without indexing" (never touches the dynamic table), no Huffman."""
    head = _hpack_int(name_index, 4, 0x00) if name_index else b"\x00" + _hpack_int(len(name), 7, 0) + name
    return head + _hpack_int(len(value), 7, 0) + value


def grpc_timeout(seconds: float) -> bytes:
    """gRPC's ``grpc-timeout`` value: at most eight digits and a unit."""
    ms = max(1, int(seconds * 1000 + 0.999))
    for value, unit in ((ms, b"m"), (ms // 1000 + 1, b"S"), (ms // 60_000 + 1, b"M"), (ms // 3_600_000 + 1, b"H")):
        if value < 100_000_000:
            return str(value).encode() + unit
    return b"99999999H"


class H2Call:
    """One call's stream: :meth:`read` gives each message's bytes, then :data:`EOF`, or raises H2Error."""

    __slots__ = ("_conn", "sid", "_messages", "_buf", "_waiter", "_error", "_done", "_unacked", "_queued",
                 "_headers", "send_window", "_timer", "_ended", "_request", "_deadline", "_retries", "_slot")

    def __init__(self, conn: "_Connection", sid: int, timeout: Optional[float]) -> None:
        self._conn, self.sid = conn, sid
        self._messages: collections.deque = collections.deque()
        self._buf = bytearray()
        self._waiter: Optional[asyncio.Future] = None
        self._error: Optional[H2Error] = None
        self._done = False  # the peer ended the stream (or it failed)
        self._ended = False  # nothing more will be sent or read on it: the connection forgot it
        self._unacked = 0  # bytes received but not yet credited back to the peer
        self._queued = 0  # bytes of complete messages not yet read
        self._headers: Optional[list] = None
        self.send_window = conn.peer_initial_window
        self._request: tuple = (b"", b"")
        self._retries = 0
        self._slot: Optional[asyncio.Future] = None  # while waiting for a stream slot
        self._timer = None
        self._deadline = None
        if timeout is not None:
            self._deadline = time.monotonic() + timeout
            self._timer = conn.loop.call_later(timeout, self._expire)

    # -- reader side --
    async def read(self):
        """The next message's bytes, :data:`EOF` at a clean end; H2Error when the call failed."""
        while True:
            if self._messages:
                msg = self._messages.popleft()
                self._queued -= len(msg)
                self._credit()
                return msg
            if self._error is not None:
                raise self._error
            if self._done:
                return EOF
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def cancel(self) -> None:
        """Stop the call (reset the stream unless it ended); a later read() raises CANCELLED."""
        if not self._ended:
            self._conn.reset(self, CANCEL)
            self._fail(H2Error(grpc.StatusCode.CANCELLED, "Cancelled"))

    # -- connection side --
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, err: H2Error) -> None:
        if not self._done:  # a stream that ended cleanly keeps its answer
            self._error = err
        self._finish()

    def _finish(self) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._ended:
            self._ended = True
            self._conn.forget(self)
        if self._slot is not None and not self._slot.done():
            self._slot.set_result(None)
        self._wake()

    def _expire(self) -> None:
        self._timer = None
        if not self._done:
            self._conn.reset(self, CANCEL)
            self._fail(H2Error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    def _credit(self) -> None:
        if self._unacked >= STREAM_WINDOW // 4 and self._queued < STREAM_WINDOW // 2 and not self._ended:
            self._conn.send(_frame(WINDOW_UPDATE, 0, self.sid, struct.pack(">I", self._unacked)))
            self._unacked = 0

    def _data(self, payload: bytes, flow: int, end: bool) -> None:
        self._unacked += flow
        if self._error is not None:
            return
        buf = self._buf
        buf += payload
        max_recv = self._conn.max_recv
        pos, size = 0, len(buf)
        while size - pos >= 5:
            n = int.from_bytes(buf[pos + 1:pos + 5], "big")
            if n > max_recv:
                self._conn.reset(self, CANCEL)
                self._fail(H2Error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"Received message larger than max ({n} vs. {max_recv})"))
                return
            if size - pos < 5 + n:
                break
            if buf[pos]:
                self._conn.reset(self, CANCEL)
                self._fail(H2Error(grpc.StatusCode.INTERNAL, "compressed message but no grpc-encoding was asked for"))
                return
            self._messages.append(bytes(buf[pos + 5:pos + 5 + n]))
            self._queued += n
            pos += 5 + n
        if pos:
            del buf[:pos]
        self._credit()
        if end:
            self._end_stream()
        self._wake()

    def _header_block(self, block: bytes, end_stream: bool) -> None:
        try:
            headers = self._conn.decode(block)
        except hpack.HPACKError as e:
            self._conn.fatal(f"bad header block: {e}")
            return
        if self._headers is None:
            self._headers = headers
            status = next((v for k, v in headers if k == b":status"), None)
            if status != b"200":
                code = _HTTP_CODES.get(int(status) if status and status.isdigit() else 0, grpc.StatusCode.UNKNOWN)
                if not any(k == b"grpc-status" for k, _ in headers):
                    self._conn.reset(self, CANCEL)
                    self._fail(H2Error(code, f"Received http2 header with status: {(status or b'?').decode()}"))
                    return
        if end_stream:
            self._trailers(headers)

    def _trailers(self, headers: list) -> None:
        status = message = None
        for k, v in headers:
            if k == b"grpc-status":
                status = v
            elif k == b"grpc-message":
                message = v
        if status is None:
            self._fail(H2Error(grpc.StatusCode.UNKNOWN, "missing grpc-status in the trailers"))
            return
        code = _CODES.get(int(status) if status.isdigit() else -1, grpc.StatusCode.UNKNOWN)
        if code != grpc.StatusCode.OK:
            details = urllib.parse.unquote(message.decode("utf-8", "replace")) if message else ""
            self._fail(H2Error(code, details))
            return
        self._end_stream()

    def _end_stream(self) -> None:
        if self._buf and self._error is None:
            self._error = H2Error(grpc.StatusCode.INTERNAL, f"the stream ended inside a message ({len(self._buf)} bytes)")
        self._finish()


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection and its streams."""

    def __init__(self, channel: "H2Channel") -> None:
        self.loop = asyncio.get_running_loop()
        self.channel = channel
        self.max_recv = channel.max_recv
        self.decoder = hpack.Decoder()
        self._decoded: dict[bytes, list] = {}
        self.transport: Optional[asyncio.Transport] = None
        self.streams: dict[int, H2Call] = {}
        self.next_sid = 1
        self.peer_initial_window = 65_535
        self.peer_max_frame = 16_384
        self.peer_max_streams = 1 << 31
        self.send_window = 65_535
        self.conn_unacked = 0
        self.closed: Optional[str] = None  # why no new call may start here
        self.ready = self.loop.create_future()  # the peer's first SETTINGS arrived
        self._buf = bytearray()
        self._pending_block: Optional[tuple[int, bytearray, bool]] = None
        self._window_waiters: list[asyncio.Future] = []
        self._retrying: set = set()  # tasks sending refused calls again
        self._slot_waiters: collections.deque = collections.deque()
        self._last_frame = time.monotonic()
        self._ping_sent: Optional[float] = None
        self._keepalive = None

    # -- asyncio.Protocol --
    def connection_made(self, transport) -> None:
        self.transport = transport
        settings = struct.pack(">HIHIHIHI", S_ENABLE_PUSH, 0, S_INITIAL_WINDOW_SIZE, STREAM_WINDOW,
                               S_MAX_FRAME_SIZE, MAX_FRAME, S_HEADER_TABLE_SIZE, 4096)
        transport.write(PREFACE + _frame(SETTINGS, 0, 0, settings) +
                        _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", CONNECTION_WINDOW - 65_535)))
        self._schedule_keepalive()

    def connection_lost(self, exc) -> None:
        self._close(f"connection to {self.channel.address} lost: {exc or 'closed by the peer'}")

    def data_received(self, data: bytes) -> None:
        self._last_frame = time.monotonic()
        self._ping_sent = None
        buf = self._buf
        buf += data
        pos, n = 0, len(buf)
        conn_credit = 0
        try:
            while n - pos >= 9:
                ln = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
                if ln > MAX_FRAME:
                    raise _ConnError(f"frame of {ln} bytes is larger than SETTINGS_MAX_FRAME_SIZE {MAX_FRAME}")
                end = pos + 9 + ln
                if end > n:
                    break
                typ, flags = buf[pos + 3], buf[pos + 4]
                sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
                payload = bytes(buf[pos + 9:end])
                pos = end
                if self._pending_block is not None and typ != CONTINUATION:
                    raise _ConnError("a header block was not continued")
                if typ == DATA:
                    conn_credit += ln
                    self._on_data(sid, flags, payload, ln)
                elif typ == HEADERS or typ == CONTINUATION:
                    self._on_headers(typ, sid, flags, payload)
                elif typ == SETTINGS:
                    if not flags & ACK:
                        self._on_settings(payload)
                elif typ == WINDOW_UPDATE:
                    self._on_window_update(sid, payload)
                elif typ == PING:
                    if not flags & ACK:
                        self.send(_frame(PING, ACK, 0, payload))
                elif typ == RST_STREAM:
                    call = self.streams.get(sid)
                    if call is not None:
                        code = int.from_bytes(payload[:4], "big") if len(payload) >= 4 else 0
                        if code == REFUSED_STREAM and self._refused(call):
                            continue
                        call._fail(H2Error(_RST_CODES.get(code, grpc.StatusCode.INTERNAL),
                                           f"stream reset by the peer (HTTP/2 error code {code})"))
                elif typ == GOAWAY:
                    self._on_goaway(payload)
                elif typ == PUSH_PROMISE:
                    raise _ConnError("PUSH_PROMISE although push is disabled")
                # PRIORITY and unknown types: ignored, as RFC 9113 asks
        except _ConnError as e:
            del buf[:pos]
            self.fatal(str(e))
            return
        del buf[:pos]
        self.conn_unacked += conn_credit
        if self.conn_unacked >= CONNECTION_WINDOW // 4:
            self.send(_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.conn_unacked)))
            self.conn_unacked = 0

    # -- frames --
    def _on_data(self, sid: int, flags: int, payload: bytes, flow: int) -> None:
        call = self.streams.get(sid)
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise _ConnError("bad padding on a DATA frame")
            payload = payload[1:len(payload) - payload[0]]
        if call is not None:
            call._data(payload, flow, bool(flags & END_STREAM))

    def _on_headers(self, typ: int, sid: int, flags: int, payload: bytes) -> None:
        if typ == HEADERS:
            if flags & PADDED:
                if not payload or payload[0] >= len(payload):
                    raise _ConnError("bad padding on a HEADERS frame")
                payload = payload[1:len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            block, end_stream = bytearray(payload), bool(flags & END_STREAM)
        else:
            if self._pending_block is None or self._pending_block[0] != sid:
                raise _ConnError("CONTINUATION without a header block")
            _, block, end_stream = self._pending_block
            block += payload
            if len(block) > 1 << 20:
                raise _ConnError("header block over 1 MiB")
        if not flags & END_HEADERS:
            self._pending_block = (sid, block, end_stream)
            return
        self._pending_block = None
        call = self.streams.get(sid)
        if call is not None:
            call._header_block(bytes(block), end_stream)
        else:  # keep the decoder's dynamic table in step with the peer's encoder
            try:
                self.decoder.decode(bytes(block), raw=True)
            except hpack.HPACKError as e:
                raise _ConnError(f"bad header block: {e}") from None

    def _on_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise _ConnError("SETTINGS frame of a length not a multiple of 6")
        for off in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, off)
            if key == S_INITIAL_WINDOW_SIZE:
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for call in self.streams.values():
                    call.send_window += delta
            elif key == S_MAX_FRAME_SIZE:
                self.peer_max_frame = value
            elif key == S_MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
        self.send(_frame(SETTINGS, ACK, 0))
        if not self.ready.done():
            self.ready.set_result(None)
        self._wake_windows()
        self._wake_slots()

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        if sid == 0:
            self.send_window += inc
        else:
            call = self.streams.get(sid)
            if call is not None:
                call.send_window += inc
        self._wake_windows()

    def _on_goaway(self, payload: bytes) -> None:
        last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        code = int.from_bytes(payload[4:8], "big") if len(payload) >= 8 else 0
        debug = payload[8:].decode("utf-8", "replace")
        self.closed = f"the server sent GOAWAY (HTTP/2 error code {code}){': ' + debug if debug else ''}"
        for sid, call in list(self.streams.items()):
            if sid > last:
                call._fail(H2Error(grpc.StatusCode.UNAVAILABLE, self.closed))
        self.channel._retire(self)
        self._close_if_idle()

    def decode(self, block: bytes) -> list:
        """HPACK-decode a header block. A block that does not change the dynamic table (indexed
        fields and literals without indexing only: a server's every answer after its first) means
        the same while the table stays as it is, so its decoding is kept until a block changes it."""
        got = self._decoded.get(block)
        if got is not None:
            return got
        headers = self.decoder.decode(block, raw=True)
        if _leaves_table(block):
            if len(self._decoded) < 64:
                self._decoded[block] = headers
        else:
            self._decoded.clear()
        return headers

    # -- writing --
    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def reset(self, call: H2Call, code: int) -> None:
        if not call._ended and call.sid:
            self.send(_frame(RST_STREAM, 0, call.sid, struct.pack(">I", code)))

    def forget(self, call: H2Call) -> None:
        if self.streams.get(call.sid) is call:
            del self.streams[call.sid]
        self._wake_slots()
        self._close_if_idle()

    async def start(self, path: bytes, body: bytes, timeout: Optional[float]) -> H2Call:
        call = H2Call(self, 0, timeout)
        call._request = (path, body)
        await self._open(call)
        return call

    async def _open(self, call: H2Call) -> None:
        """Give ``call`` a stream once the peer's stream limit allows, and send its request."""
        while len(self.streams) >= self.peer_max_streams and self.closed is None and not call._done:
            w = self.loop.create_future()
            self._slot_waiters.append(w)
            call._slot = w
            try:
                await w
            finally:
                call._slot = None
        if call._done:  # its deadline passed while it waited
            return
        if self.closed is not None:
            call._fail(H2Error(grpc.StatusCode.UNAVAILABLE, self.closed))
            return
        sid = self.next_sid
        self.next_sid += 2
        if self.next_sid > MAX_STREAM_ID:
            self.channel._retire(self)
            self.closed = "stream ids used up"
        call.sid = sid
        call.send_window = self.peer_initial_window
        self.streams[sid] = call
        path, body = call._request
        block = self.channel.header_prefix(path)
        if call._deadline is not None:
            block += _literal(0, b"grpc-timeout", grpc_timeout(max(0.001, call._deadline - time.monotonic())))
        if len(block) > self.peer_max_frame:
            call._fail(H2Error(grpc.StatusCode.INTERNAL, f"request headers of {len(block)} bytes"))
            return
        headers = _frame(HEADERS, END_HEADERS, sid, block)
        data = b"\x00" + len(body).to_bytes(4, "big") + body
        n = len(data)
        if n <= self.send_window and n <= call.send_window and n <= self.peer_max_frame:
            self.send(headers + _frame(DATA, END_STREAM, sid, data))  # one write: the common case
            self.send_window -= n
            call.send_window -= n
            return
        self.send(headers)
        await self._send_body(call, data)

    def _refused(self, call: H2Call) -> bool:
        """REFUSED_STREAM before any answer: the peer did not process the request (RFC 9113
        8.7), so it is sent again on a new stream after a short backoff, as gRPC's transparent
        retry does; a server still counting streams it has been told to reset refuses new ones
        for a moment. False when the call has used its retries."""
        if call._headers is not None or call._retries >= REFUSED_RETRIES or call._done:
            return False
        call._retries += 1
        self.streams.pop(call.sid, None)
        call.sid = 0
        delay = min(1.0, 0.005 * (1 << call._retries))

        def again() -> None:
            task = self.loop.create_task(self._open(call))
            self._retrying.add(task)
            task.add_done_callback(self._retrying.discard)
        self.loop.call_later(delay, again)
        self._wake_slots()
        return True

    async def _send_body(self, call: H2Call, data: bytes) -> None:
        """``data`` as DATA frames as the peer's windows and frame size allow."""
        view, pos = memoryview(data), 0
        while True:
            if call._ended:
                return
            room = min(self.send_window, call.send_window, self.peer_max_frame)
            left = len(data) - pos
            if room >= left:
                self.send(_frame(DATA, END_STREAM, call.sid, bytes(view[pos:])))
                self.send_window -= left
                call.send_window -= left
                return
            if room > 0:
                self.send(_frame(DATA, 0, call.sid, bytes(view[pos:pos + room])))
                self.send_window -= room
                call.send_window -= room
                pos += room
                continue
            w = self.loop.create_future()
            self._window_waiters.append(w)
            await w
            if self.closed is not None and call._ended:
                return

    def _wake_windows(self) -> None:
        ws, self._window_waiters = self._window_waiters, []
        for w in ws:
            if not w.done():
                w.set_result(None)

    def _wake_slots(self) -> None:
        while self._slot_waiters and (len(self.streams) < self.peer_max_streams or self.closed is not None):
            w = self._slot_waiters.popleft()
            if not w.done():
                w.set_result(None)

    # -- keepalive and closing --
    def _schedule_keepalive(self) -> None:
        self._keepalive = self.loop.call_later(self.channel.keepalive, self._check_alive)

    def _check_alive(self) -> None:
        self._keepalive = None
        if self.transport is None or self.transport.is_closing():
            return
        now = time.monotonic()
        if self._ping_sent is not None and now - self._ping_sent >= self.channel.keepalive_timeout:
            self.fatal(f"keepalive ping to {self.channel.address} not answered in "
                       f"{self.channel.keepalive_timeout:g}s")
            return
        if self.streams and self._ping_sent is None and now - self._last_frame >= self.channel.keepalive:
            self._ping_sent = now
            self.send(_frame(PING, 0, 0, b"\x00" * 8))
            self._keepalive = self.loop.call_later(self.channel.keepalive_timeout, self._check_alive)
            return
        self._schedule_keepalive()

    def fatal(self, why: str) -> None:
        """A connection error: every stream fails UNAVAILABLE, the connection closes."""
        self.send(_frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0x1)))  # PROTOCOL_ERROR
        self._close(why)

    def _close(self, why: str) -> None:
        self.closed = self.closed or why
        for call in list(self.streams.values()):
            call._fail(H2Error(grpc.StatusCode.UNAVAILABLE, why))
        self.streams.clear()
        self.channel._retire(self)
        if not self.ready.done():
            self.ready.set_exception(H2Error(grpc.StatusCode.UNAVAILABLE, why))
            self.ready.exception()  # retrieved: nobody may be waiting
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        self._wake_windows()
        self._wake_slots()
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def _close_if_idle(self) -> None:
        if self.closed is not None and not self.streams and self.transport is not None:
            self.transport.close()
            self.transport = None


def _skip_int(block: bytes, i: int, prefix_bits: int) -> int:
    """Past an HPACK integer whose prefix starts at ``block[i]``."""
    if block[i] & ((1 << prefix_bits) - 1) != (1 << prefix_bits) - 1:
        return i + 1
    i += 1
    while i < len(block) and block[i] & 0x80:
        i += 1
    return i + 1


def _str_end(block: bytes, i: int) -> int:
    """Past an HPACK string literal starting at ``block[i]``."""
    n, j = block[i] & 0x7F, i + 1
    if n == 0x7F:
        n, shift = 0x7F, 0
        while j < len(block):
            n += (block[j] & 0x7F) << shift
            shift += 7
            j += 1
            if not block[j - 1] & 0x80:
                break
    return j + n


def _leaves_table(block: bytes) -> bool:
    """True when the block holds no field that adds to the dynamic table and no size update."""
    i, n = 0, len(block)
    while i < n:
        c = block[i]
        if c & 0x80:  # indexed field
            i = _skip_int(block, i, 7)
        elif c & 0xE0:  # literal with incremental indexing, or a table size update
            return False
        else:  # literal without indexing / never indexed: name index or literal name, then value
            named = c & 0x0F
            i = _skip_int(block, i, 4)
            if not named:
                i = _str_end(block, i)
            if i >= n:
                return False
            i = _str_end(block, i)
    return i == n


class _ConnError(Exception):
    pass


class H2Channel:
    """Calls to one ``host:port`` over one HTTP/2 connection at a time, dialled on first use and
    again after it was lost or retired."""

    def __init__(self, address: str, *, max_recv: int = (1 << 31) - 1, keepalive: float = 10.0,
                 keepalive_timeout: float = 5.0, connect_timeout: float = 20.0) -> None:
        self.address = address
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address {address!r} is not host:port")
        self.host, self.port = host.strip("[]"), int(port)
        self.authority = address.encode()
        self.max_recv = max_recv
        self.keepalive, self.keepalive_timeout = keepalive, keepalive_timeout
        self.connect_timeout = connect_timeout
        self._prefixes: dict[bytes, bytes] = {}
        self._conn: Optional[_Connection] = None
        self._dialing: Optional[asyncio.Future] = None

    def header_prefix(self, path: bytes) -> bytes:
        """The request headers every call of ``path`` begins with (all but the deadline)."""
        got = self._prefixes.get(path)
        if got is None:
            got = (b"\x83\x86" + _literal(4, b"", path) + _literal(1, b"", self.authority) +  # POST, http
                   _literal(31, b"", b"application/grpc") + _literal(0, b"te", b"trailers"))
            if len(self._prefixes) < 16:
                self._prefixes[path] = got
        return got

    def _retire(self, conn: _Connection) -> None:
        if self._conn is conn:
            self._conn = None

    async def _connection(self, deadline: Optional[float]) -> _Connection:
        conn = self._conn
        if conn is not None and conn.closed is None and conn.ready.done():
            return conn
        if self._dialing is None:
            self._dialing = asyncio.ensure_future(self._dial())
        dialing = self._dialing
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            return await asyncio.wait_for(asyncio.shield(dialing), timeout)
        except asyncio.TimeoutError:
            raise H2Error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None

    async def _dial(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: _Connection(self), self.host, self.port), self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as e:
                why = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
                raise H2Error(grpc.StatusCode.UNAVAILABLE,
                              f"failed to connect to all addresses; last error: UNAVAILABLE: {self.address}: {why}") from None
            try:
                await asyncio.wait_for(conn.ready, self.connect_timeout)
            except asyncio.TimeoutError:
                conn.fatal(f"{self.address} sent no HTTP/2 SETTINGS within {self.connect_timeout:g}s")
                raise H2Error(grpc.StatusCode.UNAVAILABLE, conn.closed) from None
            self._conn = conn
            return conn
        finally:
            self._dialing = None

    async def unary_stream(self, path: bytes, body: bytes, timeout: Optional[float] = None) -> H2Call:
        """Start a call: ``path`` (``/pkg.Service/Method``), ``body`` the serialized request;
        the answers are read from the returned call."""
        deadline = None if timeout is None else time.monotonic() + timeout
        conn = await self._connection(deadline)
        left = None if deadline is None else max(0.001, deadline - time.monotonic())
        return await conn.start(path, body, left)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn._close(f"channel to {self.address} closed")
