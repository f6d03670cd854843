"""An aiohttp session that a client either borrows or owns, and the Authorization header of
Prometheus' HTTP client configuration.

Clients of Prometheus' HTTP API and remote-read endpoint take an optional shared session (one
connection pool per process); without one they create their own on first use and close only
that one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, TypeVar

import aiohttp

if TYPE_CHECKING:
    import ssl

T = TypeVar("T", bound="SessionClient")


class SessionClient:
    """Base of HTTP clients: ``_get_session()``, ``close()`` and ``async with``."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._own_session = session is None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def auth_headers(username: str = "", password: str = "", password_file: str = "", bearer_token: str = "",
                 bearer_token_file: str = "") -> dict[str, str]:
    """The ``Authorization`` header of a Prometheus HTTP client config (``basic_auth`` with
    ``password`` or ``password_file``, else ``bearer_token[_file]``); files are read at each call,
    as Prometheus' client reads them at each request."""
    import base64

    if username or password or password_file:
        pw = password
        if password_file:
            with open(password_file, encoding="utf-8") as f:
                pw = f.read().strip()
        return {"Authorization": "Basic " + base64.b64encode(f"{username}:{pw}".encode()).decode()}
    token = bearer_token
    if bearer_token_file:
        with open(bearer_token_file, encoding="utf-8") as f:
            token = f.read().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def client_ssl_context(ca_file: str = "", cert_file: str = "", key_file: str = "",
                       insecure_skip_verify: bool = False) -> "Optional[ssl.SSLContext]":
    """An HTTP client's TLS context from Prometheus' ``tls_config`` files (None when nothing is
    set: aiohttp's default verification against the system roots)."""
    import ssl

    if not (ca_file or cert_file or insecure_skip_verify):
        return None
    ctx = ssl.create_default_context(cafile=ca_file or None)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file or None)
    if insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
