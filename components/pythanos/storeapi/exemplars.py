"""Thanos' Exemplars gRPC API (``/thanos.Exemplars/Exemplars``, server streaming): the pieces a
server and a querier share.

* :func:`selectors` — the label-matcher sets of a PromQL query (Prometheus' ``ExtractSelectors``);
* :func:`match_external` — Thanos' ``selectorsMatchesExternalLabels``: a store whose external
  labels contradict every selector is skipped, matchers on external labels are dropped;
* :func:`handler` — a generic gRPC handler over an async generator of ``ExemplarData``;
* :func:`merge` — Thanos' querier de-duplication (``dedupExemplarsResponse``): replica labels
  dropped, series merged by labels and sorted, each series' exemplars sorted by time, labels and
  value with equal ones kept once;
* :func:`to_json` — the ``data`` of ``/api/v1/query_exemplars`` as Thanos' querier writes it.
"""
from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import AsyncIterator, Callable, Iterable, Sequence, Union

import grpc

from ..tsdb.labels import Matcher
from .pb import exemplars_pb2
from .service import EXEMPLARS, EXEMPLARS_SERVICE as SERVICE, StreamError, streaming_handler
from .types import labels_from_pb, labels_to_pb

__all__ = ["SERVICE", "EXEMPLARS", "selectors", "match_external", "handler", "merge", "to_json", "data_pb",
           "ExemplarsError"]


Labels = tuple[tuple[str, str], ...]


class ExemplarsError(StreamError):
    """An error the server answers with this gRPC code (Thanos' codes: InvalidArgument for no
    matchers, Internal for a query that does not parse, Aborted around a tenant's failure)."""


def selectors(query: str) -> list[list[Matcher]]:
    """Every vector selector's matchers, the metric name as a ``__name__`` matcher (raises
    ``pythanos.promql.ParseError`` with Prometheus' text)."""
    import promql_parser as pp

    from ..promql import parse
    from ..promql.engine import _matchers

    out: list[list[Matcher]] = []
    stack = [parse(query)]
    while stack:
        n = stack.pop()
        if isinstance(n, pp.MatrixSelector):
            n = n.vector_selector
        if isinstance(n, pp.VectorSelector):
            out.append(_matchers(n))
            continue
        kids = []
        for attr in ("expr", "param", "lhs", "rhs"):
            c = getattr(n, attr, None)
            if c is not None and not isinstance(c, (str, int, float)):
                kids.append(c)
        kids.extend(getattr(n, "args", None) or ())
        stack.extend(reversed(kids))
    return out


def match_external(sets: Sequence[Sequence[Matcher]], ext: dict[str, str]) -> tuple[bool, list[list[Matcher]]]:
    """(whether any selector can match a series with these external labels, the selectors that
    can with their external-label matchers dropped; empty ones left out)."""
    matched = False
    out: list[list[Matcher]] = []
    for ms in sets:
        rest: list[Matcher] = []
        ok = True
        for m in ms:
            v = ext.get(m.name, "")
            if v == "":
                rest.append(m)
            elif not m.matches(v):
                ok = False
                break
        if ok:
            matched = True
            if rest:
                out.append(rest)
    return matched, out


def data_pb(series_labels: Labels, exemplars: Iterable[tuple[Labels, float, int]]) -> exemplars_pb2.ExemplarData:
    d = exemplars_pb2.ExemplarData()
    d.seriesLabels.labels.extend(labels_to_pb(series_labels))
    for lbls, v, t in exemplars:
        e = d.exemplars.add(value=v, ts=t)
        e.labels.SetInParent()
        e.labels.labels.extend(labels_to_pb(lbls))
    return d


Serve = Callable[[exemplars_pb2.ExemplarsRequest], AsyncIterator[Union[exemplars_pb2.ExemplarData, str]]]


def handler(serve: Serve) -> grpc.GenericRpcHandler:
    """``thanos.Exemplars/Exemplars`` answering with what ``serve(request)`` yields (a string is
    a warning frame)."""
    return streaming_handler(EXEMPLARS, serve,
                             lambda d: (exemplars_pb2.ExemplarsResponse(warning=d) if isinstance(d, str)
                                        else exemplars_pb2.ExemplarsResponse(data=d)),
                             unexpected=grpc.StatusCode.INTERNAL)


def merge(data: Iterable[exemplars_pb2.ExemplarData], replica_labels: Iterable[str] = ()
          ) -> list[tuple[Labels, list[tuple[Labels, float, int]]]]:
    """Thanos' de-duplication of what the stores sent (see the module docstring). Exemplar label
    sets are sorted by name first; series without exemplars are left out."""
    drop = set(replica_labels)
    by_series: dict[Labels, list[tuple[Labels, float, int]]] = {}
    for d in data:
        if not len(d.exemplars):
            continue
        key = tuple((n, v) for n, v in labels_from_pb(d.seriesLabels.labels) if n not in drop)
        got = by_series.setdefault(key, [])
        for e in d.exemplars:
            got.append((tuple(sorted(labels_from_pb(e.labels.labels))), e.value, e.ts))
    out = []
    for key in sorted(by_series):
        ex = sorted(by_series[key], key=lambda e: (e[2], e[0], e[1]))
        kept = [ex[0]]
        for e in ex[1:]:
            p = kept[-1]
            if not (e[2] == p[2] and e[0] == p[0] and e[1] == p[1]):
                kept.append(e)
        out.append((key, kept))
    return out


def _go_f(x: float) -> str:
    """Go ``strconv.FormatFloat(x, 'f', -1, 64)``: shortest digits, never an exponent."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    r = repr(float(x))
    if "e" in r:
        r = format(Decimal(r), "f")
    return r[:-2] if r.endswith(".0") else r


def _go_map(d: Labels) -> str:
    """A label set as Go's encoding/json writes a map: keys sorted, HTML characters escaped."""
    out = json.dumps(dict(d), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                 ("\u2029", "\\u2029")):
        out = out.replace(a, b)
    return out


def to_json(series: Sequence[tuple[Labels, list[tuple[Labels, float, int]]]]) -> str:
    """The answer's ``data`` as Thanos' querier marshals it (exemplar value a string, timestamp
    seconds as a number, both in Go's 'f' format)."""
    parts = []
    for key, ex in series:
        items = ",".join('{"labels":' + _go_map(lbls)
                         + ',"timestamp":' + _go_f(t / 1000) + ',"value":"' + _go_f(v) + '"}' for lbls, v, t in ex)
        parts.append('{"seriesLabels":' + _go_map(key)
                     + ',"exemplars":[' + items + "]}")
    return "[" + ",".join(parts) + "]"
