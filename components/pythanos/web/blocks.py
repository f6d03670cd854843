"""The bucket web UI ("Block Viewer") and its API, one library for every component that shows blocks.

``thanos compact``, ``thanos store`` and ``thanos tools bucket web`` all serve the same page and API
(Thanos ``pkg/api/blocks/v1.go`` and the React ``pages/blocks``); here it is a function that mounts
them on a component's aiohttp app, fed by a *view*: anything with ``snapshot() -> BlocksSnapshot``.

Mounting (a component's ``run.py``)::

    view = BlocksView(bucket_web_fetcher(bucket), refresh=1800, timeout=300)   # tools bucket web
    add_blocks_routes(srv.app, view, prefix="/thanos", label="cluster", redirect_root=True)
    tasks.append(view.start())                                                # background refresh

    # a second view (?view=loaded, page /loaded): e.g. what a store gateway has loaded
    add_blocks_routes(srv.app, global_view, loaded=LiveView(lambda: [b.meta for b in store.blocks.values()]))

Views:

* :class:`BlocksView` refreshes from a :class:`~pythanos.block.MetaFetcher` every ``refresh``
  seconds in the background (the blocking fetch in a thread), each refresh bounded by ``timeout``.
  A failed or timed-out refresh keeps the last good list and reports the error in ``err``; a
  refresh that could not read some metas keeps those blocks' previous metas and says so in ``err``
  (Thanos keeps the whole previous list). Failed refreshes are retried after ``retry`` seconds
  (Thanos: one minute). ``set(metas, err)`` pushes a list instead (Thanos' ``SetGlobal``).
* :class:`LiveView` asks a callable on every request (nothing to refresh: the list is already in
  memory, as a store gateway's loaded blocks are).

API (Prometheus' envelope; errors as Prometheus' error JSON):

* ``GET {prefix}/api/v1/blocks`` -> ``{"status": "success", "data": {"label": ..., "blocks":
  [<meta.json objects>], "refreshedAt": "<RFC3339Nano>", "err": null | "<message>"}}``.
  ``view=loaded`` answers from the second view when there is one (else the global one, as Thanos).
  Beyond Thanos (thanos-io/thanos#4452: a whole bucket in one 12 MB answer): ``minTime`` /
  ``maxTime`` (Unix milliseconds) keep the blocks overlapping ``[minTime, maxTime]`` and ``limit``
  the first N (blocks are sorted by ``minTime``, then ULID); with ``limit`` the answer also carries
  ``total``, the number of blocks before the limit. A bad parameter is ``bad_data`` (400) naming it.
  ``err`` is the error's message (Thanos serializes a Go error value, which comes out as ``{}``).
* ``POST {prefix}/api/v1/blocks/mark`` with form fields ``id``, ``action`` (``DELETION`` |
  ``NO_COMPACTION``) and ``detail`` writes the marker (``no-compact-mark.json`` with reason
  ``manual``) -> ``{"status": "success"}``. Refusals are Thanos' (all ``bad_data``, 400, same
  strings, same order): "Admin operations are disabled", "ID cannot be empty", "Action cannot be
  empty", ``ULID "x" is not valid: ...``, "not supported marker X". Unlike Thanos, a ULID with
  characters outside Crockford's alphabet is refused (Go's lax parser turns it into some other
  ULID) and so is a block the bucket does not hold (Thanos writes a marker for it anyway).

Pages: ``{prefix}/blocks`` (global view), ``{prefix}/loaded`` (when there is a second view), their
assets under ``{prefix}/static/`` (shared with the query UI's, registered once), and with
``redirect_root`` ``{prefix}/`` -> ``{prefix}/blocks`` (opt-in: the querier's ``/`` goes to /graph).
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import re
import time
from typing import Any, Callable, Iterable, Optional, Sequence

from aiohttp import web

from ..tsdb.meta import META_FILENAME, go_json
from ..tsdb.ulid import ALPHABET as _ULID_ALPHABET
from . import STATIC_DIR, _normalize_prefix, _template

log = logging.getLogger(__name__)

__all__ = ["BlocksSnapshot", "BlocksView", "LiveView", "add_blocks_routes", "bucket_web_fetcher", "parse_ulid",
           "ACTIONS", "ZERO_TIME"]

#: Go's zero ``time.Time`` in JSON: ``refreshedAt`` before the first refresh.
ZERO_TIME = "0001-01-01T00:00:00Z"
ACTIONS = ("DELETION", "NO_COMPACTION")
MANUAL_NO_COMPACT_REASON = "manual"
_JSON_IN_EXECUTOR = 2000  # blocks; bigger answers are encoded off the event loop
_CORS_HEADERS = {
    "Access-Control-Allow-Headers": "Accept, Accept-Encoding, Authorization, Content-Type, Origin",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Date",
}


# ------------------------------------------------------------------------------------------ views

class BlocksSnapshot:
    """One state of a view: the metas (``BlockMeta`` or meta.json dicts), when they were read
    (Unix seconds; None before the first refresh) and the last refresh's error (None when it
    went well). The meta.json objects are built once per snapshot and shared by every answer."""

    __slots__ = ("metas", "refreshed_at", "err", "_objects")

    def __init__(self, metas: Iterable = (), refreshed_at: Optional[float] = None, err: Optional[str] = None):
        self.metas = tuple(metas)
        self.refreshed_at = refreshed_at
        self.err = err
        self._objects: Optional[list[dict]] = None

    def objects(self) -> list[dict]:
        """The meta.json objects, sorted by (minTime, ULID)."""
        if self._objects is None:
            objs = [m if isinstance(m, dict) else m.to_obj() for m in self.metas]
            objs.sort(key=lambda o: (int(o.get("minTime", 0)), str(o.get("ulid", ""))))
            self._objects = objs
        return self._objects


class BlocksView:
    """The block list of a :class:`~pythanos.block.MetaFetcher`, refreshed in the background; see
    the module docstring. ``fetcher`` may be None for a view fed only by :meth:`set`."""

    def __init__(self, fetcher=None, *, refresh: float = 1800.0, timeout: float = 300.0, retry: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.fetcher = fetcher
        self.refresh = float(refresh)
        self.timeout = float(timeout)
        self.retry = float(retry)
        self.clock = clock
        self._snap = BlocksSnapshot()
        self._inflight: Optional[asyncio.Future] = None
        self._task: Optional[asyncio.Task] = None
        self.refreshes = 0  # completed refreshes, good or bad (tests wait on it)

    @property
    def bucket(self):
        """The fetcher's bucket (where markers go), or None."""
        return getattr(self.fetcher, "bucket", None)

    def snapshot(self) -> BlocksSnapshot:
        return self._snap

    def set(self, metas: Optional[Iterable], err: Optional[str] = None) -> None:
        """Replace the list (Thanos' ``SetGlobal`` / ``SetLoaded``); with an error and no metas the
        previous list stays and only ``err`` and the time change."""
        if metas is None:
            metas = self._snap.metas
        self._snap = BlocksSnapshot(metas, self.clock(), err)
        self.refreshes += 1

    async def refresh_now(self) -> BlocksSnapshot:
        """One fetch, at most ``timeout`` seconds. A fetch that outlives its timeout goes on in its
        thread and the next refresh waits for it instead of starting another one."""
        if self.fetcher is None:
            return self._snap
        loop = asyncio.get_running_loop()
        if self._inflight is None or self._inflight.done():
            fut = loop.run_in_executor(None, self.fetcher.fetch)
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "exception not retrieved"
            self._inflight = fut
        try:
            res = await asyncio.wait_for(asyncio.shield(self._inflight), self.timeout)
        except asyncio.TimeoutError:
            err = f"refreshing the block list timed out after {self.timeout:g}s"
            log.warning("block viewer refresh timed out; keeping the last view", extra={"timeout": f"{self.timeout:g}s"})
            self.set(None, err)
            return self._snap
        except Exception as e:  # noqa: BLE001  (a bucket error: keep the last view, report it)
            self._inflight = None
            err = str(e) or type(e).__name__
            log.warning("block viewer refresh failed; keeping the last view", extra={"err": err})
            self.set(None, err)
            return self._snap
        self._inflight = None
        metas = dict(res.metas)
        err = None
        failed = getattr(res, "failed", None) or {}
        if failed:
            previous = {getattr(m, "ulid", None): m for m in self._snap.metas}
            for u in failed:
                if u in previous and u not in metas:
                    metas[u] = previous[u]
            first = sorted(failed)[0]
            err = (f"incomplete view: {len(failed)} block meta(s) could not be read (previous metas kept); "
                   f"{first}: {failed[first]}")
        self.set(metas.values(), err)
        return self._snap

    async def run(self) -> None:
        """Refresh now, then every ``refresh`` seconds (``retry`` after a failure); until cancelled."""
        while True:
            snap = await self.refresh_now()
            await asyncio.sleep(min(self.retry, self.refresh) if snap.err else self.refresh)

    def start(self) -> asyncio.Task:
        """:meth:`run` as a task of the running loop (hand it to ``Component.run_tasks``)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="block-viewer-refresh")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


class LiveView:
    """A view computed on every request from ``source()`` (an iterable of metas), e.g. the blocks a
    store gateway has loaded; ``refreshedAt`` is the time of the request."""

    def __init__(self, source: Callable[[], Iterable], *, bucket=None, clock: Callable[[], float] = time.time):
        self.source = source
        self.bucket = bucket
        self.clock = clock

    def snapshot(self) -> BlocksSnapshot:
        try:
            return BlocksSnapshot(list(self.source()), self.clock(), None)
        except Exception as e:  # noqa: BLE001
            return BlocksSnapshot((), self.clock(), str(e) or type(e).__name__)


def bucket_web_fetcher(bucket, *, min_time=None, max_time=None, relabel: Sequence = (), concurrency: int = 32,
                       registry=None, cache_dir: Optional[str] = None):
    """The fetcher of ``tools bucket web`` as Thanos builds it: ``--min-time``/``--max-time``, the
    selector relabelling, then blocks whose sources another block holds are left out."""
    from ..block import DeduplicateFilter, LabelShardFilter, MetaFetcher, TimePartitionFilter

    filters: list = []
    if min_time is not None and max_time is not None:
        filters.append(TimePartitionFilter(min_time, max_time))
    filters += [LabelShardFilter(list(relabel)), DeduplicateFilter()]
    return MetaFetcher(bucket, cache_dir=cache_dir, concurrency=concurrency, filters=filters, registry=registry)


# ------------------------------------------------------------------------------------ the API

class _BadData(Exception):
    pass


def parse_ulid(text: str) -> str:
    """The canonical (upper-case) ULID, or ValueError with the message Go's ``ulid.ParseStrict`` gives."""
    if len(text.encode("utf-8")) != 26:
        raise ValueError("ulid: bad data size when unmarshaling")
    up = text.upper()
    if any(c not in _ULID_ALPHABET for c in up):
        raise ValueError("ulid: bad data characters when unmarshaling")
    if up[0] > "7":
        raise ValueError("ulid: overflow when unmarshaling")
    return up


def _go_quote(s: str) -> str:
    """Go's ``%q`` for the strings a form carries (JSON's quoting, non-ASCII kept)."""
    return json.dumps(s, ensure_ascii=False)


def _rfc3339(t: Optional[float]) -> str:
    """Go's JSON for a ``time.Time`` (RFC3339Nano, trailing zeros of the fraction dropped), in UTC."""
    if t is None:
        return ZERO_TIME
    d = _dt.datetime.fromtimestamp(t, _dt.timezone.utc)
    frac = f"{d.microsecond:06d}".rstrip("0")
    return d.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def _ms_param(query, name: str) -> Optional[int]:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise _BadData(f'invalid parameter "{name}": cannot parse {_go_quote(raw)} as Unix milliseconds') from None


def _error(message: str, *, status: int = 400, error_type: str = "bad_data", cors: bool = True) -> web.Response:
    headers = {"Cache-Control": "no-store", **(_CORS_HEADERS if cors else {})}
    return web.Response(status=status, text=go_json({"status": "error", "errorType": error_type, "error": message}),
                        content_type="application/json", headers=headers)


def _success(text: str, *, cors: bool = True) -> web.Response:
    return web.Response(text=text, content_type="application/json", headers=_CORS_HEADERS if cors else None)


def add_blocks_routes(app: web.Application, view, *, prefix: str = "", loaded=None, bucket=None,
                      disable_admin: bool = False, label: str = "", component: str = "bucket",
                      redirect_root: bool = False, cors: bool = True) -> None:
    """Mounts the block viewer's API and pages on ``app``; see the module docstring.

    ``view`` (and ``loaded``, the optional second view) have ``snapshot() -> BlocksSnapshot``.
    ``bucket`` receives markers (default: ``view.bucket``; without one, marking answers an error).
    ``label`` is the external label whose value titles a row (``--label`` / ``--bucket-web-label``);
    ``component`` names the process in the page's title bar; ``cors=False`` is ``--web.disable-cors``."""
    from .statusapi import add_status_routes

    prefix = _normalize_prefix(prefix)
    add_status_routes(app, prefix, cors=cors)  # Thanos' BlocksAPI embeds its BaseAPI
    if bucket is None:
        bucket = getattr(view, "bucket", None)
    views = ["global"] + (["loaded"] if loaded is not None else [])

    async def blocks(request: web.Request) -> web.Response:
        q = request.query
        try:
            mint = _ms_param(q, "minTime")
            maxt = _ms_param(q, "maxTime")
            if mint is not None and maxt is not None and mint > maxt:
                raise _BadData(f'invalid parameter "maxTime": {maxt} is before minTime {mint}')
            limit = None
            if q.get("limit") not in (None, ""):
                try:
                    limit = int(q["limit"])
                except ValueError:
                    limit = -1
                if limit < 0:
                    raise _BadData(f'invalid parameter "limit": {_go_quote(q["limit"])} is not a non-negative '
                                   "integer")
        except _BadData as e:
            return _error(str(e), cors=cors)
        src = loaded if (q.get("view") == "loaded" and loaded is not None) else view
        snap = src.snapshot()
        objs = snap.objects()
        if mint is not None or maxt is not None:
            lo = mint if mint is not None else -(1 << 63)
            hi = maxt if maxt is not None else (1 << 63) - 1
            # a block is [minTime, maxTime): it overlaps [lo, hi] when it starts at or before hi and ends after lo
            objs = [o for o in objs if int(o.get("minTime", 0)) <= hi and int(o.get("maxTime", 0)) > lo]
        data: dict[str, Any] = {"label": label}
        total = len(objs)
        if limit:
            objs = objs[:limit]
        data["blocks"] = objs
        data["refreshedAt"] = _rfc3339(snap.refreshed_at)
        data["err"] = snap.err
        if limit is not None:
            data["total"] = total
        body = {"status": "success", "data": data}
        if len(objs) > _JSON_IN_EXECUTOR:
            text = await asyncio.get_running_loop().run_in_executor(None, go_json, body)
        else:
            text = go_json(body)
        return _success(text, cors=cors)

    async def mark(request: web.Request) -> web.Response:
        if disable_admin:
            return _error("Admin operations are disabled", cors=cors)
        form = await request.post()

        def value(name: str) -> str:  # Go's FormValue: the body's field, else the URL's, else ""
            v = form.get(name)
            if v is None:
                v = request.query.get(name, "")
            return v if isinstance(v, str) else ""

        raw_id, action, detail = value("id"), value("action"), value("detail")
        if raw_id == "":
            return _error("ID cannot be empty", cors=cors)
        if action == "":
            return _error("Action cannot be empty", cors=cors)
        try:
            ulid = parse_ulid(raw_id)
        except ValueError as e:
            return _error(f"ULID {_go_quote(raw_id)} is not valid: {e}", cors=cors)
        if action not in ACTIONS:
            return _error(f"not supported marker {action}", cors=cors)
        if bucket is None:
            return _error("no bucket to write markers to", status=500, error_type="internal", cors=cors)

        def write() -> Optional[str]:
            from ..block.ops import mark_for_deletion, mark_no_compact

            if not bucket.exists(f"{ulid}/{META_FILENAME}"):
                return f"block {ulid} not found in the bucket (no {ulid}/{META_FILENAME})"
            if action == "DELETION":
                mark_for_deletion(bucket, ulid, detail)
            else:
                mark_no_compact(bucket, ulid, MANUAL_NO_COMPACT_REASON, detail)
            return None

        try:
            why = await asyncio.get_running_loop().run_in_executor(None, write)
        except Exception as e:  # noqa: BLE001  (Thanos answers bucket errors as bad_data too)
            return _error(str(e) or type(e).__name__, cors=cors)
        if why:
            return _error(why, cors=cors)
        log.info("block marked from the web UI", extra={"block": ulid, "action": action, "detail": detail})
        return web.Response(status=204, headers=_CORS_HEADERS if cors else None)  # Thanos: no data, no body

    async def preflight(request: web.Request) -> web.Response:
        return web.Response(headers=_CORS_HEADERS if cors else None)

    def page(which: str):
        config = {"view": which, "views": views, "adminDisabled": bool(disable_admin), "label": label,
                  "component": component}

        async def handler(request: web.Request) -> web.Response:
            return web.Response(text=_render("blocks.html", prefix, config), content_type="text/html",
                                charset="utf-8", headers={"Cache-Control": "no-cache"})
        return handler

    async def to_blocks(request: web.Request) -> web.Response:
        location = prefix + "/blocks"
        if request.query_string:
            location += "?" + request.query_string
        raise web.HTTPFound(location)

    api = prefix + "/api/v1/blocks"
    app.router.add_get(api, blocks)
    app.router.add_post(api + "/mark", mark)
    if cors:
        app.router.add_route("OPTIONS", api, preflight)
        app.router.add_route("OPTIONS", api + "/mark", preflight)
    app.router.add_get(prefix + "/blocks", page("global"))
    if loaded is not None:
        app.router.add_get(prefix + "/loaded", page("loaded"))
    if redirect_root:
        app.router.add_get(prefix + "/", to_blocks)
        if prefix:
            app.router.add_get(prefix, to_blocks)
    static = prefix + "/static"
    if not any(isinstance(r, web.StaticResource) and r.canonical == static for r in app.router.resources()):
        app.router.add_static(static, STATIC_DIR, show_index=False, append_version=False)


_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


def _script_json(obj) -> str:
    """JSON safe inside ``<script>``."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _render(name: str, prefix: str, config: dict) -> str:
    """The template with ``{{PREFIX}}`` (HTML-escaped), ``{{PREFIX_JSON}}``, ``{{CONFIG_JSON}}`` and
    ``{{COMPONENT}}`` filled in, in one pass (a value never gets substituted again)."""
    import html

    values = {"PREFIX": html.escape(prefix, quote=True), "PREFIX_JSON": _script_json(prefix),
              "CONFIG_JSON": _script_json(config), "COMPONENT": html.escape(config.get("component", ""), quote=True)}
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), _template(name))
