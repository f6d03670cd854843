"""Vertical sharding (``--query-frontend.vertical-shards``): which queries may be split by series,
and on which labels.

A query is shardable when every series its answer combines agrees on some labels: then each shard
asks the stores only for the series whose hash of those labels falls to it (StoreAPI
``shard_info``), evaluates its part, and the parts concatenate. This is Thanos' analysis
(``pkg/querysharding``), node for node, so our frontend and Thanos' shard the same queries the
same way, and our stores answer a Thanos frontend's shards:

* an aggregation ``by (l...)`` keeps the series of one group together: shard by those labels;
  ``without (l...)``: by every label but those and ``__name__`` (Thanos leaves ``__name__`` in,
  which splits a group whose series differ only in their name); a plain ``sum(x)`` groups
  everything: not shardable;
* a binary operation between two vectors matches ``on (l...)`` (by those) or on all labels but
  ``ignoring (l...)`` and ``__name__``;
* ``histogram_quantile`` needs all ``le`` of a series: never by ``le``; ``label_replace`` and
  ``label_join`` make their target label, which the stores cannot hash: never by it;
* ``absent``, ``absent_over_time`` and ``scalar`` need every series at once: not shardable.

The constraints of all nodes combine (``by`` sets intersect, ``without`` sets unite, a ``by`` set
loses what a ``without`` set excludes); the query is shardable when a non-empty set remains.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Optional

import promql_parser as pp

__all__ = ["ShardPlan", "analyze", "shard_param", "instant_order"]

NAME = "__name__"
_SCALAR_FUNCS = frozenset(("time", "pi", "scalar"))


@dataclass(frozen=True)
class ShardPlan:
    by: bool
    labels: tuple[str, ...]


def _scope(state: Optional[tuple[bool, set]], labels, by: bool) -> tuple[bool, set]:
    """Thanos' ``scopeToLabels``."""
    new = set(labels)
    if state is None:
        return by, new
    sby, have = state
    if sby and by:
        return True, have & new
    if not sby and not by:
        return False, have | new
    keep, drop = (have, new) if sby else (new, have)
    return True, keep - drop


def _is_vector(n) -> bool:
    """The node's value type is an instant vector (Go's parser keeps vector matching only then)."""
    while isinstance(n, (pp.ParenExpr, pp.UnaryExpr)):
        n = n.expr
    if isinstance(n, (pp.VectorSelector, pp.AggregateExpr)):
        return True
    if isinstance(n, pp.Call):
        return n.func.name not in _SCALAR_FUNCS
    if isinstance(n, pp.BinaryExpr):
        return _is_vector(n.lhs) or _is_vector(n.rhs)
    return False


def _children(n) -> list:
    if isinstance(n, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
        return [n.expr]
    if isinstance(n, pp.MatrixSelector):
        return [n.vector_selector]
    if isinstance(n, pp.BinaryExpr):
        return [n.lhs, n.rhs]
    if isinstance(n, pp.AggregateExpr):
        return [n.expr] + ([n.param] if n.param is not None else [])
    if isinstance(n, pp.Call):
        return list(n.args)
    return []


def _string_arg(n) -> str:
    while isinstance(n, pp.ParenExpr):
        n = n.expr
    return n.val


@functools.lru_cache(maxsize=256)  # dashboards repeat their queries (Thanos caches its analyses too)
def analyze(query: str) -> Optional[ShardPlan]:
    """The labels to shard ``query`` by, or None when it cannot be sharded (or does not parse:
    the querier answers that)."""
    from ..promql.engine import parse

    try:
        expr = parse(query)
    except Exception:  # noqa: BLE001 - a parse error is the querier's to report
        return None
    state: Optional[tuple[bool, set]] = None
    dynamic: list[str] = []
    stack = [expr]
    while stack:  # pre-order, as parser.Inspect
        n = stack.pop()
        if isinstance(n, pp.Call):
            name = n.func.name
            if name in ("label_join", "label_replace"):
                dynamic.append(_string_arg(n.args[1]))
            elif name in ("absent_over_time", "absent", "scalar"):
                return None
            elif name == "histogram_quantile":
                state = _scope(state, ["le"], False)
        elif isinstance(n, pp.BinaryExpr) and _is_vector(n.lhs) and _is_vector(n.rhs):
            m = n.modifier.matching if n.modifier is not None else None
            on = m is not None and str(m.type) == "LabelModifierType.Include"
            labels = list(m.labels or ()) if m is not None else []
            state = _scope(state, labels if on else labels + [NAME], on)
        elif isinstance(n, pp.AggregateExpr):
            mod = n.modifier
            without = mod is not None and str(mod.type) == "AggModifierType.Without"
            labels = list(mod.labels or ()) if mod is not None else []
            # ``without`` drops the metric name too: series of one group may differ in it (a
            # difference from Thanos, whose analysis would split such a group across shards)
            state = _scope(state, labels + [NAME] if without else labels, not without)
        stack.extend(reversed(_children(n)))
    if dynamic:
        state = _scope(state, dynamic, False)
    if state is None or not state[1]:
        return None
    return ShardPlan(state[0], tuple(sorted(state[1])))


def shard_param(plan: ShardPlan, index: int, total: int) -> str:
    """The ``shard_info`` request parameter as Thanos' frontend writes it (Go's JSON of
    ``storepb.ShardInfo``: zero values left out)."""
    d: dict = {}
    if index:
        d["shard_index"] = index
    d["total_shards"] = total
    if plan.by:
        d["by"] = True
    d["labels"] = list(plan.labels)
    return json.dumps(d, separators=(",", ":"))


@functools.lru_cache(maxsize=256)
def instant_order(query: str) -> str:
    """How the shards' instant vectors are put in order (Thanos' ``sortPlanForQuery``): "merge"
    for ``topk``/``bottomk``/``limitk``/``limit_ratio`` at the root, "asc"/"desc" for a root
    (or a root operand's) ``sort``/``sort_by_label``/``sort_desc``/``sort_by_label_desc``,
    else "labels"."""
    from ..promql.engine import parse

    try:
        expr = parse(query)
    except Exception:  # noqa: BLE001
        return "labels"
    if isinstance(expr, pp.AggregateExpr) and str(expr.op) in ("topk", "bottomk", "limitk", "limit_ratio"):
        return "merge"

    def sort_of(n) -> Optional[str]:
        if isinstance(n, pp.Call):
            if n.func.name in ("sort", "sort_by_label"):
                return "asc"
            if n.func.name in ("sort_desc", "sort_by_label_desc"):
                return "desc"
        return None

    for n in ([expr] + ([expr.lhs, expr.rhs] if isinstance(expr, pp.BinaryExpr) else [])):
        got = sort_of(n)
        if got:
            return got
    return "labels"
