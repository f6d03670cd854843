"""``--http.config`` at run time: what exporter-toolkit's ``web.Serve`` does around Thanos' HTTP mux.

:class:`HTTPGuard` is built once per HTTP server (so once per querier worker process) from the
file :mod:`pythanos.server.webconfig` validated, and :meth:`Component.start_http
<pythanos.server.Component.start_http>` installs it:

* a middleware in front of every route, the probes and ``/metrics`` included (Thanos wraps its whole
  mux): the rate limit (429), the extra headers, then basic auth (401 with
  ``WWW-Authenticate: Basic``);
* with a TLS section, :class:`TLSSite` instead of aiohttp's sites: it accepts connections itself so
  that a plain HTTP request on the TLS port gets Go's ``400 Client sent an HTTP request to an HTTPS
  server.`` (aiohttp's TLS would just drop it), and takes the current :class:`ssl.SSLContext` for
  every new connection.

As with exporter-toolkit the file is re-read when it changes: a request sees the current users
and headers, a new connection the current certificate, key and client CAs (rotated certificates
need no restart). A change is noticed by ``stat`` (the file and the certificate files: one call
per request, four per connection). A file that no longer parses answers 500 to requests (and
refuses new TLS connections) until it is fixed; the error is logged once per change. Whether the
port speaks TLS at all and the rate limit are fixed at start-up, as in exporter-toolkit.

Basic auth checks a password with bcrypt in a worker thread, one check at a time per process
(exporter-toolkit's mutex: bcrypt is meant to be slow), and remembers successful checks only: a
keyed digest of (user, hash, password), never the password, at most 100 entries. An unknown user
costs a bcrypt check against a dummy hash as dear as the configured ones, so the time of an answer
does not tell which users exist. Failures are not cached: guessing cannot evict real users.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import hashlib
import ipaddress
import logging
import os
import random
import socket
import ssl
import time
from typing import Any, Callable, Optional

from aiohttp import web

from . import webconfig
from .webconfig import WebConfig

log = logging.getLogger(__name__)

__all__ = ["HTTPGuard", "TLSSite", "listen_sockets"]

#: where the middleware leaves the headers to add (aiohttp >= 3.13 wants typed request keys)
_HEADERS_KEY: Any = (web.RequestKey("pythanos_httpguard_headers", tuple) if hasattr(web, "RequestKey")
                     else "pythanos_httpguard_headers")
_CACHE_SIZE = 100
#: Go's net/http answer to a plain HTTP request on a TLS port (``tlsRecordHeaderLooksLikeHTTP``)
PLAIN_HTTP_ANSWER = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
_HTTP_HEADS = {b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO"}
_TLS_HANDSHAKE_RECORD = 0x16


def _stat(path: str) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class _Limiter:
    """golang.org/x/time/rate's Limiter.Allow: ``burst`` tokens, one more every ``interval``
    (starting full; a non-positive interval is an infinite rate)."""

    def __init__(self, burst: int, interval_s: float) -> None:
        self.burst = burst
        self.rate = float("inf") if interval_s <= 0 else 1.0 / interval_s
        self.tokens = float(burst)
        self.last = time.monotonic()

    def allow(self) -> bool:
        if self.rate == float("inf"):
            return True
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def parse_basic_auth(value: Optional[str]) -> Optional[tuple[bytes, bytes]]:
    """Go's ``Request.BasicAuth``: ``Basic`` (any case) and standard base64 of ``user:password``."""
    if not value:
        return None
    raw = value.encode("utf-8", "surrogateescape")  # aiohttp's decoding of header bytes, undone
    if len(raw) < 6 or raw[:6].lower() != b"basic ":
        return None
    try:
        decoded = base64.b64decode(raw[6:].replace(b"\r", b"").replace(b"\n", b""), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    import bcrypt

    try:  # bcrypt reads 72 bytes of a password, as Go's; the package refuses longer ones instead
        return bcrypt.checkpw(password[:72], hashed)
    except ValueError:  # not a hash the package can check (a reloaded file's typo): no access
        return False


class _BasicAuth:
    """Password checks with exporter-toolkit's cost profile (see the module doc)."""

    def __init__(self) -> None:
        self._secret = os.urandom(32)
        self._ok: dict[bytes, None] = {}
        self._lock = asyncio.Lock()
        self._dummies: dict[int, bytes] = {}

    def _key(self, user: bytes, hashed: bytes, password: bytes) -> bytes:
        h = hashlib.blake2b(key=self._secret, digest_size=32)
        for part in (user, hashed, password):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
        return h.digest()

    def _remember(self, key: bytes) -> None:
        if len(self._ok) >= _CACHE_SIZE:  # random eviction of a tenth, as exporter-toolkit's cache
            for k in random.sample(list(self._ok), max(1, len(self._ok) // 10)):
                del self._ok[k]
        self._ok[key] = None

    def _dummy(self, users: dict[bytes, bytes]) -> bytes:
        """A hash of a random password at the highest cost among the users (made once per cost)."""
        import bcrypt

        costs = [int(h[4:6]) for h in users.values() if webconfig.bcrypt_problem(h) is None]
        cost = max(costs, default=10)
        if cost not in self._dummies:
            self._dummies[cost] = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(cost))
        return self._dummies[cost]

    async def check(self, users: dict[bytes, bytes], header: Optional[str]) -> bool:
        creds = parse_basic_auth(header)
        if creds is None:
            return False
        user, password = creds
        hashed = users.get(user)
        key = self._key(user, hashed, password) if hashed is not None else b""
        if key in self._ok:
            return True
        loop = asyncio.get_running_loop()
        async with self._lock:  # one bcrypt at a time: it is meant to be slow
            if key in self._ok:  # checked while this request waited
                return True
            if hashed is None:
                dummy = await loop.run_in_executor(None, self._dummy, users)
                await loop.run_in_executor(None, _checkpw, password, dummy)
                return False
            ok = await loop.run_in_executor(None, _checkpw, password, hashed)
        if ok:
            self._remember(key)
        return ok


def _plain_error(status: int, reason: str) -> web.Response:
    """Go's ``http.Error`` response."""
    return web.Response(status=status, text=reason + "\n", content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


def _go_ip(text: str) -> str:
    """An IP SAN as Go prints it (compressed IPv6, IPv4-mapped as IPv4)."""
    try:
        ip: Any = ipaddress.ip_address(text.strip())
    except ValueError:
        return text.strip()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def san_allowed(peercert: Optional[dict], allowed: tuple[str, ...]) -> bool:
    """exporter-toolkit's VerifyPeerCertificate: one of the certificate's DNS, email, IP or URI
    SANs is in ``allowed`` (no certificate: refused, where Go's handler panics)."""
    if not peercert:
        return False
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "IP Address":
            value = _go_ip(value)
        elif kind not in ("DNS", "email", "URI"):
            continue
        if value in allowed:
            return True
    return False


class HTTPGuard:
    """One HTTP server's view of the ``--http.config`` file (see the module doc). The constructor
    validates it as Thanos does before listening: a :class:`pythanos.errors.UserError` naming the
    flag, the file and the field."""

    def __init__(self, path: str, flag: str = webconfig.DEFAULT_FLAG) -> None:
        self.path = path
        self.flag = flag
        sig = _stat(path)
        cfg, ctx = webconfig.load(path, flag)
        self.tls = ctx is not None
        self.http2 = cfg.http2
        self._cfg_sig, self._cfg, self._cfg_error = sig, cfg, ""
        self._tls_sig = self._tls_signature(sig, cfg)
        self._tls: tuple[Optional[ssl.SSLContext], Optional[tuple[str, ...]]] = (ctx, cfg.tls.client_allowed_sans)
        rl = cfg.rate_limit
        self._limiter = _Limiter(rl.burst, rl.interval_s) if rl.interval_s != 0 else None
        if self._limiter is not None:
            log.info("Rate Limiter is enabled.", extra={"burst": rl.burst, "interval": f"{rl.interval_s}s"})
        self._auth = _BasicAuth()

    # -- the file, re-read when it changes ----------------------------------------------------------
    @staticmethod
    def _tls_signature(cfg_sig: Optional[tuple], cfg: Optional[WebConfig]) -> tuple:
        files = webconfig.tls_files(cfg) if cfg is not None else ()
        return (cfg_sig, tuple((f, _stat(f)) for f in files))

    def _reread(self, sig: Optional[tuple]) -> None:
        try:
            cfg = webconfig.read(self.path, self.flag)
            self._cfg, self._cfg_error = cfg, ""
        except webconfig.ConfigError as e:
            self._cfg = None
            if str(e) != self._cfg_error:
                log.error("Unable to parse configuration", extra={"err": str(e)})
            self._cfg_error = str(e)
        self._cfg_sig = sig

    def current(self) -> Optional[WebConfig]:
        """The file as it is now (None while it does not parse)."""
        sig = _stat(self.path)
        if sig != self._cfg_sig:
            self._reread(sig)
        return self._cfg

    def tls_for_connection(self) -> tuple[Optional[ssl.SSLContext], Optional[tuple[str, ...]]]:
        """The context and allowed SANs for a new TLS connection (context None: refuse it)."""
        cfg = self.current()
        sig = self._tls_signature(self._cfg_sig, cfg)
        if sig != self._tls_sig:
            self._tls_sig = sig
            try:
                if cfg is None:
                    raise webconfig.ConfigError(self._cfg_error)
                ctx = webconfig.tls_context(cfg, self.flag)
                if ctx is None:
                    raise webconfig.ConfigError(f"{self.flag}={self.path}: TLS config is not present")
                self._tls = (ctx, cfg.tls.client_allowed_sans)
                log.info("TLS configuration reloaded", extra={"file": self.path})
            except webconfig.ConfigError as e:
                self._tls = (None, None)
                log.error("Unable to load the TLS configuration; refusing TLS connections", extra={"err": str(e)})
        return self._tls

    # -- requests ----------------------------------------------------------------------------------
    def install(self, app) -> None:
        """Put the guard in front of ``app``'s routes (before the app is frozen)."""
        app.middlewares.insert(0, self._middleware)
        app.on_response_prepare.append(self._add_headers)

    async def _middleware(self, request, handler):
        cfg = self.current()
        if cfg is None:
            return _plain_error(500, "Internal Server Error")
        if self._limiter is not None and not self._limiter.allow():
            return _plain_error(429, "Too Many Requests")
        if cfg.headers:
            request[_HEADERS_KEY] = cfg.headers
        if cfg.users and not await self._auth.check(cfg.users, request.headers.get("Authorization")):
            resp = _plain_error(401, "Unauthorized")
            resp.headers["WWW-Authenticate"] = "Basic"
            return resp
        return await handler(request)

    _middleware.__middleware_version__ = 1  # type: ignore[attr-defined]

    @staticmethod
    async def _add_headers(request, response) -> None:
        for name, value in request.get(_HEADERS_KEY, ()):
            if name not in response.headers:  # a handler's own value wins, as with Go's Header().Set
                response.headers[name] = value


# ---------------------------------------------------------------------------------------------- TLS

def listen_sockets(host: Optional[str], port: int, backlog: int = 128) -> list[socket.socket]:
    """Listening sockets for ``host:port`` as asyncio's create_server binds them (every address of
    the host, SO_REUSEADDR, IPv6 sockets IPv6-only). Raises OSError."""
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, stype, proto, _, addr in dict.fromkeys(infos):
            s = socket.socket(family, stype, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)
            s.listen(backlog)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


class _Gate(asyncio.Protocol):
    """The first protocol of a TLS connection with ``client_allowed_sans``: checks the peer's
    certificate once the handshake is done, then hands the connection to the HTTP protocol (or
    drops it before any byte of HTTP is read)."""

    def __init__(self, factory: Callable[[], Any], allowed: tuple[str, ...]) -> None:
        self._factory = factory
        self._allowed = allowed

    def connection_made(self, transport) -> None:
        if not san_allowed(transport.get_extra_info("peercert"), self._allowed):
            log.debug("http: TLS client certificate has none of client_allowed_sans",
                      extra={"remote": transport.get_extra_info("peername")})
            transport.abort()
            return
        proto = self._factory()
        transport.set_protocol(proto)
        proto.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # only after an abort: ignored
        pass

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


class _Acceptor:
    """What aiohttp's site keeps as its server (``sockets``, ``close``, ``wait_closed``): accepts on
    the listening sockets, tells TLS from plain HTTP by the first byte (peeked, so OpenSSL reads
    the whole ClientHello) and starts TLS on the current context."""

    def __init__(self, loop: asyncio.AbstractEventLoop, socks: list[socket.socket], factory: Callable[[], Any],
                 guard: HTTPGuard, handshake_timeout: float, backlog: int, accepting: bool = True) -> None:
        self._loop = loop
        self._socks = socks
        self._factory = factory
        self._guard = guard
        self._timeout = handshake_timeout
        self._backlog = backlog
        self._pending: dict[socket.socket, tuple[asyncio.TimerHandle, bytearray]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._accepting = False
        for s in socks:
            s.setblocking(False)
        if accepting:
            self.resume()

    def resume(self) -> None:
        """Take connections (see :class:`pythanos.server.spill.Spill`)."""
        if not self._accepting and not self._closed:
            self._accepting = True
            for s in self._socks:
                self._loop.add_reader(s.fileno(), self._accept, s)

    def pause(self) -> None:
        """Take no new connections; those taken are served on."""
        if self._accepting:
            self._accepting = False
            for s in self._socks:
                self._loop.remove_reader(s.fileno())

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._socks)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(self._backlog):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors: stop accepting for a second, as asyncio's servers do
                    log.error("http: cannot accept a connection, pausing for a second", extra={"err": str(e)})
                    self._loop.remove_reader(sock.fileno())
                    self._loop.call_later(1.0, self._resume, sock)
                return
            conn.setblocking(False)
            timer = self._loop.call_later(self._timeout, self._drop, conn)
            self._pending[conn] = (timer, bytearray())
            self._loop.add_reader(conn.fileno(), self._sniff, conn)

    def _resume(self, sock: socket.socket) -> None:
        if not self._closed and self._accepting:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _drop(self, conn: socket.socket) -> None:
        entry = self._pending.pop(conn, None)
        if entry is not None:
            entry[0].cancel()
            self._loop.remove_reader(conn.fileno())
        conn.close()

    def _sniff(self, conn: socket.socket) -> None:
        _, head = self._pending[conn]
        try:
            if not head:
                first = conn.recv(1, socket.MSG_PEEK)
                if first and first[0] == _TLS_HANDSHAKE_RECORD:
                    self._start_tls(conn)
                    return
                if not first:
                    self._drop(conn)
                    return
            data = conn.recv(5 - len(head))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        head += data
        if len(head) < 5:
            return
        if bytes(head) in _HTTP_HEADS:
            try:  # read what the client sent (closing on unread data would reset the answer away)
                for _ in range(16):
                    if not conn.recv(65536):
                        break
            except OSError:
                pass
            try:
                conn.send(PLAIN_HTTP_ANSWER)
            except OSError:
                pass
        self._drop(conn)

    def _start_tls(self, conn: socket.socket) -> None:
        timer, _ = self._pending.pop(conn)
        timer.cancel()
        self._loop.remove_reader(conn.fileno())
        ctx, allowed = self._guard.tls_for_connection()
        if ctx is None:
            conn.close()
            return
        task = self._loop.create_task(self._handshake(conn, ctx, allowed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handshake(self, conn: socket.socket, ctx: ssl.SSLContext, allowed: Optional[tuple[str, ...]]) -> None:
        factory = self._factory if allowed is None else (lambda: _Gate(self._factory, allowed))
        try:
            await self._loop.connect_accepted_socket(factory, conn, ssl=ctx, ssl_handshake_timeout=self._timeout)
        except (OSError, asyncio.TimeoutError) as e:  # ssl.SSLError is an OSError; the socket is closed
            log.debug("http: TLS handshake error", extra={"err": str(e)})

    def close(self) -> None:
        if self._closed:
            return
        self.pause()
        self._closed = True
        for s in self._socks:
            s.close()
        for conn in list(self._pending):
            self._drop(conn)
        for t in self._tasks:
            t.cancel()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class TLSSite(web.BaseSite):
    """An aiohttp site serving HTTPS on already listening sockets (see :class:`_Acceptor`)."""

    def __init__(self, runner, socks: list[socket.socket], guard: HTTPGuard, *, handshake_timeout: float = 60.0,
                 backlog: int = 128, accepting: bool = True) -> None:
        super().__init__(runner, backlog=backlog)
        self._socks = socks
        self._guard = guard
        self._handshake_timeout = handshake_timeout
        self._accepting = accepting

    @property
    def name(self) -> str:
        from yarl import URL

        host, port = self._socks[0].getsockname()[:2]
        return str(URL.build(scheme="https", host=host, port=port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = _Acceptor(asyncio.get_running_loop(), self._socks, server, self._guard,
                                 self._handshake_timeout, self._backlog, self._accepting)  # type: ignore[assignment]

    def pause(self) -> None:
        """Take no new connections (see :class:`pythanos.server.spill.Spill`)."""
        self._accepting = False
        if self._server is not None:
            self._server.pause()  # type: ignore[attr-defined]

    def resume(self) -> None:
        self._accepting = True
        if self._server is not None:
            self._server.resume()  # type: ignore[attr-defined]
