"""Thanos' BaseAPI: ``/api/v1/status/flags``, ``/status/runtimeinfo`` and ``/status/buildinfo``,
served wherever Thanos serves them (querier, ruler, store, compactor, bucket web), and the
Prometheus JSON envelope those answers share.

``flags`` maps every flag of the running component to its value as a string: the text given on
the command line, else the default, as kingpin prints them (durations as Go's or Prometheus'
duration, as Thanos declares each flag; booleans ``true``/``false``; repeated flags joined by
commas); ``--objstore.config[-file]`` read
``<REDACTED>`` as in Thanos. ``runtimeinfo`` has Thanos' field names; the Go-only ones carry
what a Python process has in their place (threads for goroutines, usable CPUs for GOMAXPROCS,
the GOGC/GODEBUG environment variables, and Go's "no limit" for GOMEMLIMIT).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from typing import TYPE_CHECKING, Optional, Sequence

from .. import __version__

if TYPE_CHECKING:  # the CLI records the flags of every command; aiohttp is loaded only to serve them
    from aiohttp import web

__all__ = ["answer", "record_command_line", "flags_map", "add_status_routes"]

REDACTED = {"objstore.config", "objstore.config-file"}
APP_FLAGS = {"log.level", "log.format"}  # Thanos' application-wide flags, not in a component's map
#: Thanos' flags whose values are Prometheus' model.Duration (``2d``); the others print as Go's
#: time.Duration (``2m0s``)
MODEL_DURATION_FLAGS = frozenset({
    "delete-delay", "endpoint.info-timeout", "endpoint.sd-config-reload-interval", "http-grace-period",
    "query.default-evaluation-interval", "query.default-step", "query.instant.default.max_source_resolution",
    "query.timeout", "receive-forward-max-backoff", "receive-forward-timeout", "receive.artificial-max-delay",
    "receive.hashrings-file-refresh-interval", "store.response-timeout", "store.sd-dns-interval",
    "store.sd-interval", "store.unhealthy-timeout", "tsdb.block-duration", "tsdb.max-block-duration",
    "tsdb.min-block-duration", "tsdb.out-of-order.time-window", "tsdb.retention",
    "tsdb.too-far-in-future.time-window", "retention.resolution-raw", "retention.resolution-5m",
    "retention.resolution-1h", "consistency-delay"})
_FLAGS: dict[str, str] = {}
_START_NS = time.time_ns()
_CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, OPTIONS",
         "Access-Control-Allow-Headers": "Accept, Authorization, Content-Type, Origin",
         "Access-Control-Expose-Headers": "Date"}


def answer(data_json: Optional[str] = None, *, status: int = 200, error_type: str = "", error: str = "",
           cors: bool = True) -> "web.Response":
    """Prometheus' envelope: ``{"status":"success","data":...}`` around already encoded JSON,
    or ``{"status":"error","errorType":...,"error":...}``; CORS headers unless disabled."""
    from aiohttp import web

    if error_type:
        body = json.dumps({"status": "error", "errorType": error_type, "error": error})
    else:
        body = '{"status":"success","data":' + (data_json or "null") + "}"
    headers = {"Content-Type": "application/json"}
    if cors:  # Thanos' default (--web.disable-cors unset)
        headers.update(_CORS)
    return web.Response(body=body.encode(), status=status, headers=headers)


def _long_name(action: argparse.Action) -> str:
    """The action's first long flag without its dashes (what kingpin names the flag)."""
    return next(o for o in action.option_strings if o.startswith("--"))[2:]


def _duration_text(action: argparse.Action, seconds: float) -> str:
    from ..flags import format_duration
    from ..gofmt import model_duration

    name = _long_name(action)
    return model_duration(round(seconds * 1000)) if name in MODEL_DURATION_FLAGS else format_duration(seconds)


def _text(action: argparse.Action, value: object) -> str:
    """A flag's value as kingpin prints it."""
    if value is None or value is argparse.SUPPRESS:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, (int, float)) and getattr(action.type, "is_duration", False):
        return _duration_text(action, float(value))
    return str(getattr(value, "text", value))


def flags_map(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, str]:
    """Every long flag of ``parser`` (one component's sub-parser) with its value as text."""
    actions: dict[str, argparse.Action] = {}
    out: dict[str, str] = {}
    for a in parser._actions:  # noqa: SLF001 - argparse has no public list of its actions
        longs = [o for o in a.option_strings if o.startswith("--")]
        if not longs or isinstance(a, (argparse._HelpAction, argparse._VersionAction)):  # noqa: SLF001
            continue
        name = longs[0][2:]
        for o in a.option_strings:
            actions[o] = a
        if name not in APP_FLAGS:
            out[name] = _text(a, a.default)
    given: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if tok == "--":
            break
        opt, eq, val = tok.partition("=")
        a = actions.get(opt)
        if a is None:
            continue
        name = _long_name(a)
        if a.nargs == 0:  # store_true/false, BooleanOptionalAction
            neg = opt.startswith("--no-") and not name.startswith("no-")
            if isinstance(a, argparse._StoreFalseAction):  # noqa: SLF001
                neg = not neg
            given[name] = ["false" if neg else "true"]
            continue
        if not eq:
            val = argv[i] if i < len(argv) else ""
            i += 1
        if getattr(a.type, "is_duration", False):
            try:
                val = _duration_text(a, a.type(val))
            except (ValueError, TypeError, argparse.ArgumentTypeError):
                pass
        if isinstance(a, argparse._AppendAction):  # noqa: SLF001
            given.setdefault(name, []).append(val)
        else:
            given[name] = [val]
    for name, vals in given.items():
        if name not in APP_FLAGS:
            out[name] = ",".join(vals)
    for name in REDACTED & set(out):
        out[name] = "<REDACTED>"
    return out


def record_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Keep the running component's flags for ``/api/v1/status/flags`` (called once by the CLI)."""
    _FLAGS.clear()
    _FLAGS.update(flags_map(parser, argv))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def runtime_info() -> dict:
    from ..rule.queryclient import format_rfc3339nano

    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "<error retrieving current working directory>"
    return {"startTime": format_rfc3339nano(_START_NS), "CWD": cwd, "goroutineCount": threading.active_count(),
            "GOMAXPROCS": _usable_cpus(), "GOGC": os.environ.get("GOGC", ""), "GODEBUG": os.environ.get("GODEBUG", ""),
            "GOMEMLIMIT": (1 << 63) - 1}


def build_info() -> dict:
    return {"version": __version__, "revision": "", "branch": "", "buildUser": "", "buildDate": "",
            "goVersion": f"python{platform.python_version()}"}


def add_status_routes(app: "web.Application", prefix: str = "", *, cors: bool = True,
                      buildinfo: bool = True) -> None:
    """The three status routes under ``<prefix>/api/v1/status``."""
    p = prefix.rstrip("/") + "/api/v1/status"

    def route(fn):
        async def handle(request: "web.Request") -> "web.Response":
            return answer(json.dumps(fn(), separators=(",", ":")), cors=cors)
        return handle

    app.router.add_get(p + "/flags", route(lambda: dict(_FLAGS)))
    app.router.add_get(p + "/runtimeinfo", route(runtime_info))
    if buildinfo:
        app.router.add_get(p + "/buildinfo", route(build_info))
