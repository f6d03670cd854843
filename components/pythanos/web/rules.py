"""The rules and alerts pages (Thanos ruler UI's ``/rules`` and ``/alerts``), for any component
that serves ``/api/v1/rules`` and ``/api/v1/alerts`` in Thanos' JSON (the ruler; the querier,
which answers the same shape with ``alerts`` in lower case — the page reads either).

Plain HTML + vanilla JavaScript on the shared assets (``common.js``, ``app.css``), as the other pages.
"""
from __future__ import annotations

import html
import json
from typing import Sequence

from aiohttp import web

from . import STATIC_DIR, _normalize_prefix, render_page

__all__ = ["add_rules_ui_routes"]


def add_rules_ui_routes(app: web.Application, prefix: str = "", *, link_prefix: str | None = None,
                        component: str = "rule", redirect_root: bool = True, query_url: str | None = None,
                        nav: Sequence[tuple[str, str]] = (), home: str = "/alerts", prefix_header: str = "") -> None:
    """GET {prefix}/rules, {prefix}/alerts and {prefix}/static/...; with ``redirect_root``
    {prefix}/ -> alerts (the Thanos ruler's start page). Links in the pages use ``link_prefix``
    (``--web.external-prefix``; default the route prefix); expressions link to ``query_url``'s
    graph page (the ruler's ``--alert.query-url``; None: this component's own). ``nav``: the
    component's other pages (title, path) linked before Alerts and Rules (the querier's Graph and
    Stores), ``home`` where the brand links to. ``prefix_header`` (``--web.prefix-header``, used
    when ``link_prefix`` is empty): the links' prefix is taken from that request header, as
    Thanos does behind a proxy that strips a path (e.g. ``X-Forwarded-Prefix``)."""
    prefix = _normalize_prefix(prefix)
    links = _normalize_prefix(prefix if link_prefix is None else link_prefix)

    def render(name: str, links: str) -> str:
        qurl = json.dumps(query_url.rstrip("/") if query_url is not None else None)
        qurl = qurl.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        extra = "".join(f'\n    <a class="navlink" href="{html.escape(links + path, quote=True)}">{html.escape(title)}</a>'
                        for title, path in nav)
        return render_page(name, links).replace("{{COMPONENT}}", html.escape(component)).replace(
            "{{QUERY_URL_JSON}}", qurl).replace("{{HOME}}", html.escape(home, quote=True)).replace("{{EXTRA_NAV}}", extra)

    def page(name: str):
        text = render(name, links)

        async def handler(request: web.Request) -> web.Response:
            body = text
            if prefix_header and not links and request.headers.get(prefix_header):
                body = render(name, _normalize_prefix(request.headers[prefix_header]))
            return web.Response(text=body, content_type="text/html", charset="utf-8",
                                headers={"Cache-Control": "no-cache"})
        return handler

    async def to_alerts(request: web.Request) -> web.Response:
        raise web.HTTPFound(links + "/alerts")

    if redirect_root:
        app.router.add_get(prefix + "/", to_alerts)
        if prefix:
            app.router.add_get(prefix, to_alerts)
    app.router.add_get(prefix + "/rules", page("rules.html"))
    app.router.add_get(prefix + "/alerts", page("alerts.html"))
    if not any(getattr(r, "canonical", "") == prefix + "/static" for r in app.router.resources()):
        app.router.add_static(prefix + "/static", STATIC_DIR, show_index=False, append_version=False)
