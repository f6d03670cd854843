"""The querier's web UI: a graph page, a stores page and their static assets.

The pages are plain HTML + CSS + vanilla JavaScript (no build step, no CDN: the UI works offline)
and talk only to the querier's HTTP API: Prometheus' ``/api/v1/*`` plus Thanos' ``dedup`` /
``partial_response`` parameters and ``/api/v1/stores``. Every URL the browser uses is built from the
prefix handed to :func:`add_ui_routes` (the querier's ``--web.external-prefix``), which the pages
receive as ``window.PATH_PREFIX``.

URL state follows Thanos' classic UI, so a link opens and runs a query:
``/graph?g0.expr=up&g0.tab=0&g0.range_input=1h&g0.dedup=1&g0.partial_response=0``
(``tab`` 0 = graph, 1 = table).
"""
from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path

from aiohttp import web

__all__ = ["add_ui_routes", "STATIC_DIR", "TEMPLATE_DIR"]

_HERE = Path(__file__).resolve().parent
STATIC_DIR = _HERE / "static"
TEMPLATE_DIR = _HERE / "templates"


def _normalize_prefix(prefix: str) -> str:
    """"" or "/" -> ""; "thanos/" -> "/thanos"."""
    prefix = (prefix or "").strip().rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix


@lru_cache(maxsize=None)
def _template(name: str) -> str:
    return (TEMPLATE_DIR / name).read_text(encoding="utf-8")


def render_page(name: str, prefix: str) -> str:
    """The page ``name`` (a file in templates/) with the prefix filled in.

    ``{{PREFIX}}`` is the HTML-escaped prefix for attributes, ``{{PREFIX_JSON}}`` a JavaScript string
    literal safe inside ``<script>``.
    """
    js = json.dumps(prefix).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _template(name).replace("{{PREFIX_JSON}}", js).replace("{{PREFIX}}", html.escape(prefix, quote=True))


def add_ui_routes(app: web.Application, prefix: str = "") -> None:
    """Registers GET {prefix}/ (redirect to {prefix}/graph), {prefix}/graph, {prefix}/stores and
    {prefix}/static/...."""
    prefix = _normalize_prefix(prefix)

    def page(name: str):
        async def handler(request: web.Request) -> web.Response:
            return web.Response(text=render_page(name, prefix), content_type="text/html", charset="utf-8",
                                headers={"Cache-Control": "no-cache"})
        return handler

    async def to_graph(request: web.Request) -> web.Response:
        location = prefix + "/graph"
        if request.query_string:
            location += "?" + request.query_string
        raise web.HTTPFound(location)

    app.router.add_get(prefix + "/", to_graph)
    if prefix:
        app.router.add_get(prefix, to_graph)
    app.router.add_get(prefix + "/graph", page("graph.html"))
    app.router.add_get(prefix + "/stores", page("stores.html"))
    app.router.add_static(prefix + "/static", STATIC_DIR, show_index=False, append_version=False)
