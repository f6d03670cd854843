"""Prometheus' experimental PromQL functions and aggregations, refused where the
``promql-experimental-functions`` feature is off (Prometheus 3.9.1's parser; Thanos' ruler
and querier flag ``--enable-feature=promql-experimental-functions``).

Our parser accepts them all; :func:`refuse_experimental` is the parser's later check, with
its words and position (the function name, or the aggregation's start).
"""
from __future__ import annotations

from .errors import ParseError

__all__ = ["EXPERIMENTAL_FUNCTIONS", "EXPERIMENTAL_AGGREGATIONS", "refuse_experimental"]

#: promql/parser/functions.go entries marked Experimental (v3.9.1)
EXPERIMENTAL_FUNCTIONS = frozenset({
    "double_exponential_smoothing", "first_over_time", "info", "mad_over_time", "sort_by_label",
    "sort_by_label_desc", "ts_of_first_over_time", "ts_of_last_over_time", "ts_of_max_over_time",
    "ts_of_min_over_time"})
#: ItemType.IsExperimentalAggregator
EXPERIMENTAL_AGGREGATIONS = frozenset({"limitk", "limit_ratio"})


def _uses(expr) -> tuple[str, str] | None:
    """The first experimental function ("func", name) or aggregation ("aggr", op) in the tree."""
    import promql_parser as pp

    stack = [expr]
    while stack:
        n = stack.pop()
        if isinstance(n, pp.Call):
            if n.func.name in EXPERIMENTAL_FUNCTIONS:
                return "func", n.func.name
            stack.extend(reversed(list(n.args)))
        elif isinstance(n, pp.AggregateExpr):
            if str(n.op) in EXPERIMENTAL_AGGREGATIONS:
                return "aggr", str(n.op)
            stack.extend(c for c in (n.expr, n.param) if c is not None)
        elif isinstance(n, pp.BinaryExpr):
            stack.extend((n.rhs, n.lhs))
        elif isinstance(n, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
            stack.append(n.expr)
    return None


def refuse_experimental(query: str, expr) -> None:
    """ParseError in Prometheus' words when ``expr`` (parsed from ``query``) uses an
    experimental function or aggregation."""
    from .parse_errors import _lex, _position

    found = _uses(expr)
    if found is None:
        return
    kind, name = found
    try:
        toks = _lex(query)
    except Exception:  # noqa: BLE001 - it parsed, so it lexes; a position is all we want
        toks = []
    pos = next((t.pos for t in toks if t.val.lower() == name), 0)
    if kind == "func":
        raise ParseError(f'{_position(query, pos)}: parse error: function "{name}" is not enabled')
    raise ParseError(f"{_position(query, pos)}: parse error: {name}() is experimental and must be enabled with "
                     "--enable-feature=promql-experimental-functions")
