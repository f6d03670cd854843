"""A one-line progress counter (``index_known_issues: 3/10 blocks``) for long bucket checks.

Shown only when the stream is a terminal: on a pipe or a file nothing is written, so logs stay
clean. Log lines written meanwhile (to the same terminal) first erase the counter, which is drawn
again at the next update.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional, TextIO

_ERASE = "\r\x1b[K"


class Progress:
    def __init__(self, what: str, total: int, stream: Optional[TextIO] = None, enabled: Optional[bool] = None,
                 unit: str = "blocks") -> None:
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            try:
                enabled = self.stream.isatty()
            except (AttributeError, ValueError):
                enabled = False
        self.enabled = bool(enabled)
        self.done = 0
        self._shown = False
        self._filter: Optional[logging.Filter] = None

    def __enter__(self) -> "Progress":
        if self.enabled:
            progress = self

            class _EraseFirst(logging.Filter):
                def filter(self, record: logging.LogRecord) -> bool:
                    progress.clear()
                    return True

            self._filter = _EraseFirst()
            for h in logging.getLogger().handlers:
                h.addFilter(self._filter)
            self.update(0)
        return self

    def __exit__(self, *exc) -> None:
        self.clear()
        if self._filter is not None:
            for h in logging.getLogger().handlers:
                h.removeFilter(self._filter)
            self._filter = None

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        self.stream.write(f"{_ERASE}{self.what}: {done}/{self.total} {self.unit}")
        self.stream.flush()
        self._shown = True

    def step(self) -> None:
        self.update(self.done + 1)

    def clear(self) -> None:
        if self.enabled and self._shown:
            self.stream.write(_ERASE)
            self.stream.flush()
            self._shown = False
