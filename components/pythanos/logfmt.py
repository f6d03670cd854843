"""Logs in Thanos' shape: ``level=info ts=... caller=file.py:42 msg="..." key=value``.

Thanos (go-kit log) writes logfmt by default and JSON with ``--log.format=json``; we
do the same through the standard ``logging`` module so every library logs alike.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
from typing import Any, TextIO

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _quote(value: Any) -> str:
    s = str(value)
    if s and not any(c in s for c in ' "=\\\n\t') and s.isprintable():
        return s
    return json.dumps(s, ensure_ascii=False)


def _fields(record: logging.LogRecord) -> list[tuple[str, Any]]:
    ts = _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    level = {"WARNING": "warn", "CRITICAL": "error"}.get(record.levelname, record.levelname.lower())
    out: list[tuple[str, Any]] = [
        ("level", level),
        ("ts", ts),
        ("caller", f"{record.filename}:{record.lineno}"),
    ]
    component = getattr(record, "component", None)
    if component:
        out.append(("component", component))
    out.append(("msg", record.getMessage()))
    for key, value in record.__dict__.items():
        if key not in _STD_ATTRS and key != "component" and not key.startswith("_"):
            out.append((key, value))
    if record.exc_info:
        out.append(("err", logging.Formatter().formatException(record.exc_info)))
    return out


class LogfmtFormatter(logging.Formatter):
    """One logfmt line per record; extra= fields become key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_quote(v)}" for k, v in _fields(record))


class JSONFormatter(logging.Formatter):
    """One JSON object per record, the keys of the logfmt form."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({k: (v if isinstance(v, (int, float, bool)) else str(v)) for k, v in _fields(record)})


def setup(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    """Configure the root logger once per process (called by cli.py only)."""
    if level not in LEVELS:
        raise ValueError(f"--log.level: unknown level {level!r}, want one of {', '.join(LEVELS)}")
    if fmt not in ("logfmt", "json"):
        raise ValueError(f"--log.format: unknown format {fmt!r}, want logfmt or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter() if fmt == "logfmt" else JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
