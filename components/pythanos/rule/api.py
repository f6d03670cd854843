"""The ruler's HTTP API: ``/api/v1/rules`` and ``/api/v1/alerts`` as ``thanos rule`` answers them
(``pkg/api/rule/v1.go``), and ``POST /-/reload``.

* ``/api/v1/rules``: the manager's groups as Thanos' ``RuleGroup`` JSON, rule labels extended by
  the external labels, passed through what Thanos' local rules client does (``type``
  ``alert|record``; ``match[]`` against non-templated rule labels; ``rule_name[]``,
  ``rule_group[]``, ``file[]``; groups sorted by file and name, rules alerting first, then by name).
  All of that is :mod:`pythanos.storeapi.rules`, shared with the querier.
* ``/api/v1/alerts``: every active alert, ``{"Alerts": [...]}`` — capital A, as a real
  ``thanos rule`` v0.42.4 writes it (its anonymous Go struct has no JSON tag); ``null`` when none.
* ``POST /-/reload``: re-read the rule files; 500 with the error when they do not load (the
  previous rules stay in force).

Errors are Prometheus' error JSON (``bad_data``, 400).
"""
from __future__ import annotations

import functools
import json
from typing import Awaitable, Callable, Iterable, Optional, Sequence

from aiohttp import web

from ..web.statusapi import add_status_routes
from ..web.statusapi import answer as _answer

__all__ = ["RuleAPI", "query_text"]


@functools.lru_cache(maxsize=65536)
def query_text(expr: str) -> str:
    """A rule's expression as Thanos reports it (Prometheus prints the parsed expression): our
    parser's printing when it stays on one line, else the text as written."""
    try:
        import promql_parser

        out = promql_parser.parse(expr).prettify()
    except Exception:  # noqa: BLE001 - an expression the loader accepted; show it as written
        return expr.strip()
    return out if "\n" not in out else expr.strip()


class RuleAPI:
    """Routes over ``groups()`` (``GroupState`` snapshots in file order), the external labels
    and ``reload()`` (an error text, or None when the files loaded)."""

    def __init__(self, groups: Callable[[], Iterable], external_labels: dict[str, str],
                 reload: Callable[[], Awaitable[Optional[str]]], *, disable_cors: bool = False) -> None:
        self.groups = groups
        self.ext = tuple(sorted(external_labels.items()))
        self.reload = reload
        self.cors = not disable_cors
        self._pbs: dict[int, tuple] = {}  # id(group spec) -> (state key, RuleGroup, group spec)

    def routes(self, app: web.Application, prefix: str = "") -> None:
        app.router.add_get(prefix + "/api/v1/rules", self.rules)
        app.router.add_get(prefix + "/api/v1/alerts", self.alerts)
        app.router.add_post(prefix + "/-/reload", self.reload_handler)
        add_status_routes(app, prefix, cors=self.cors)

    def group_pbs(self) -> list:
        """Every group as protobuf (the callers' own copies: they add labels and filter). A
        group's is built again only after one of its rules was evaluated since: a dashboard
        polling /api/v1/rules over 1 000 rules and 2 000 alerts cost a quarter second a call."""
        from ..storeapi import rules as rpb

        out, seen = [], {}
        for g in self.groups():
            key = (g.last_evaluation, g.evaluation_time_s,
                   tuple((r.last_evaluation, r.evaluation_time_s, r.health, r.last_error, len(r.alerts))
                         for r in g.rules))
            hit = self._pbs.get(id(g.group))
            if hit is None or hit[0] != key or hit[2] is not g.group:
                hit = (key, rpb.group_pb(g, query_text), g.group)
            seen[id(g.group)] = hit
            copy = type(hit[1])()
            copy.CopyFrom(hit[1])
            out.append(copy)
        self._pbs = seen  # groups gone after a reload are forgotten
        return out

    async def rules(self, request: web.Request) -> web.Response:
        from ..storeapi import rules as rpb

        q = request.query
        typ = rpb.request_type(q.get("type", ""))
        if typ is None:
            return _answer(status=400, error_type="bad_data", error=f"invalid rules parameter type='{q['type']}'",
                           cors=self.cors)
        try:
            matcher_sets = [_selector(s) for s in q.getall("match[]", [])]
        except ValueError as e:
            return _answer(status=500, error_type="internal",
                           error=f"error retrieving rules: parser ParseMetricSelector: {e}", cors=self.cors)
        groups = rpb.filter_type(self.group_pbs(), typ)
        rpb.extend_labels(groups, self.ext)
        groups = rpb.gather(groups, matcher_sets=matcher_sets, rule_names=q.getall("rule_name[]", []),
                            rule_groups=q.getall("rule_group[]", []), files=q.getall("file[]", []))
        return _answer(rpb.rules_json(groups), cors=self.cors)

    async def alerts(self, request: web.Request) -> web.Response:
        from ..storeapi import rules as rpb

        data = rpb.alerts_json(self.group_pbs())  # '{"alerts":...}', the querier's key
        return _answer('{"Alerts"' + data[len('{"alerts"'):], cors=self.cors)

    async def reload_handler(self, request: web.Request) -> web.Response:
        err = await self.reload()
        if err is not None:
            return web.Response(status=500, text=err + "\n")
        return web.Response(status=200)


def _selector(text: str) -> Sequence:
    """A ``match[]`` series selector as matchers (objects with ``name`` and ``matches``)."""
    from ..promql.selector import parse_selector

    return parse_selector(text)
