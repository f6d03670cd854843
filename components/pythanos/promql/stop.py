"""When a query's work must stop: its deadline, or a cancel by whoever waits for it.

A query's work runs where nothing can interrupt it from outside: a worker thread, or a kernel
called on the event loop. ``asyncio.timeout`` only stops the *wait* for it, and the thread would
go on burning CPU after the client got its timeout error. So the work itself looks at a
:class:`StopToken` at a coarse grain: every plan node, every selection, every batch of decoded
samples or of windows (never per sample). :func:`checkpoint` is that look for code that has no
token in hand (the functions' batch loops): the token of the evaluation running in this thread or
task, set by :func:`running`.
"""
from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Iterator, Optional

from .errors import QueryCanceledError, QueryTimeoutError

__all__ = ["StopToken", "checkpoint", "running"]


class StopToken:
    """A query's ``deadline`` (``time.monotonic()``, or None) and its cancel flag, shared by every
    thread working on the query. :meth:`check` raises Prometheus' errors ("query timed out in
    ...", "query was canceled in ...") once either says stop."""

    __slots__ = ("deadline", "cancelled")

    def __init__(self, deadline: Optional[float] = None) -> None:
        self.deadline = deadline
        self.cancelled = False

    @classmethod
    def after(cls, timeout: Optional[float]) -> "StopToken":
        """A token whose deadline is ``timeout`` seconds from now (none when ``timeout`` is falsy)."""
        return cls(time.monotonic() + timeout if timeout else None)

    def cancel(self) -> None:
        """Ask the work to stop at its next check (nobody waits for its answer any more)."""
        self.cancelled = True

    def stopped(self) -> bool:
        return self.cancelled or (self.deadline is not None and time.monotonic() > self.deadline)

    def remaining(self) -> Optional[float]:
        """Seconds left until the deadline (0 once stopped); None without a deadline."""
        if self.cancelled:
            return 0.0
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def check(self, where: str = "expression evaluation") -> None:
        if self.cancelled:
            raise QueryCanceledError(f"query was canceled in {where}")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise QueryTimeoutError(f"query timed out in {where}")


_CURRENT: contextvars.ContextVar[Optional[StopToken]] = contextvars.ContextVar("pythanos_query_stop", default=None)


@contextlib.contextmanager
def running(token: StopToken) -> Iterator[StopToken]:
    """Make ``token`` what :func:`checkpoint` looks at while the block runs (this thread or task)."""
    reset = _CURRENT.set(token)
    try:
        yield token
    finally:
        _CURRENT.reset(reset)


def checkpoint(where: str = "expression evaluation") -> None:
    """:meth:`StopToken.check` of the evaluation running here, if any."""
    token = _CURRENT.get()
    if token is not None:
        token.check(where)
