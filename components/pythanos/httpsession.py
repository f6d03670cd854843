"""An aiohttp session that a client either borrows or owns.

Clients of Prometheus' HTTP API and remote-read endpoint take an optional shared session (one
connection pool per process); without one they create their own on first use and close only
that one.
"""
from __future__ import annotations

from typing import TypeVar

import aiohttp

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
