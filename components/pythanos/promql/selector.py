"""Series selectors (``match[]``) as matchers: the querier's metadata API and the ruler's rules
API both take them; errors are PromQL's texts."""
from __future__ import annotations

import promql_parser as pp

from ..tsdb.labels import Matcher
from .errors import ParseError

__all__ = ["SelectorError", "parse_selector"]

_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


class SelectorError(ValueError):
    """Not a series selector; the message is Prometheus'."""


def parse_selector(text: str) -> list[Matcher]:
    """A series selector into matchers; a :class:`SelectorError` says why it is not one."""
    from . import parse
    from .parse_errors import matcher_value

    try:
        node = parse(text)
    except ParseError as e:
        raise SelectorError(str(e)) from None
    if not isinstance(node, pp.VectorSelector):
        raise SelectorError(f"1:1: parse error: expected type instant vector in series selector, got "
                            f"{'range vector' if isinstance(node, pp.MatrixSelector) else 'expression'}")
    out = []
    if node.name:
        out.append(Matcher("=", "__name__", node.name))
    for m in node.matchers.matchers:
        out.append(Matcher(_OPS[str(m.op)], m.name, matcher_value(m.value)))
    if all(m.matches("") for m in out):
        raise SelectorError("1:1: parse error: vector selector must contain at least one non-empty matcher")
    return out
