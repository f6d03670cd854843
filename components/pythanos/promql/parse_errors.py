"""Prometheus-worded parse errors with ``line:col`` positions.

``promql-parser`` reports what is wrong but not where, and words some errors differently. A
client (Grafana, promtool users, Thanos' own UI) shows Prometheus' ``1:8: parse error: ...``, so
we re-lex the query the way Prometheus' lexer does (``promql/parser/lex.go``) to find lexer
errors and token positions, and map the parser's message to Prometheus' wording and the
position Prometheus reports (the start of the offending node or token, in bytes, 1-based
column, ``unknown position`` for an empty query). Errors we cannot place keep a best guess.
"""
from __future__ import annotations

import re
from typing import Optional

import promql_parser as pp

from ..goregexp import compile_matcher

__all__ = ["prometheus_parse_error", "regex_parse_error", "invalid_utf8_literals", "protect_regexes", "matcher_value"]

_KEYWORDS = {"offset", "smoothed", "anchored", "by", "without", "on", "ignoring", "group_left", "group_right",
             "bool", "start", "end", "step"}
_SET_OPS = {"and", "or", "unless"}
_AGGS = {"sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk", "count_values",
         "quantile", "limitk", "limit_ratio"}
_PARAM_AGGS = {"topk", "bottomk", "count_values", "quantile", "limitk", "limit_ratio"}
_BIN_OPS = {"+", "-", "*", "/", "%", "^", "==", "!=", "<", ">", "<=", ">=", "and", "or", "unless", "atan2"}
_CMP_OPS = {"==", "!=", "<", ">", "<=", ">="}
_DUR_UNITS = ("ms", "s", "m", "h", "d", "w", "y")


class _Tok:
    __slots__ = ("kind", "val", "pos", "raw")

    def __init__(self, kind: str, val: str, pos: int, raw: str = ""):
        self.kind, self.val, self.pos, self.raw = kind, val, pos, raw

    def desc(self) -> str:
        """The token as Prometheus' ``Item.desc()`` names it in ``unexpected ...`` errors."""
        k, v = self.kind, self.val
        if k == "EOF":
            return "end of input"
        if k == "IDENT":
            return f'identifier "{v}"'
        if k == "METRIC_IDENT":
            return f'metric identifier "{v}"'
        if k == "NUMBER":
            return f'number "{v}"'
        if k == "DURATION":
            return f'duration "{v}"'
        if k == "STRING":  # Prometheus' item text keeps the quotes: %.10q of "'abc'"
            v = self.raw or v
            s = v if len(v) <= 10 else v[:10]
            return f"string {_go_quote(s)}" + ("..." if len(v) > 10 else "")
        if k == "KEYWORD":
            return f"<{v}>"
        if k == "AGG":
            return f"<aggr:{v}>"
        if k == "OP":
            return f"<op:{v}>"
        return f'"{v}"'


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _LexError(Exception):
    def __init__(self, msg: str, pos: int):
        super().__init__(msg)
        self.msg, self.pos = msg, pos


_NUM_RE = re.compile(r"0[xX][0-9a-fA-F_]+|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9_]+)?"
                     r"|[iI][nN][fF]|[nN][aA][nN]")
_DUR_RE = re.compile(r"(?:[0-9]+(?:ms|[smhdwy]))+")


def _lex(q: str) -> list:
    """Tokens of ``q`` (character positions); raises _LexError where Prometheus' lexer errors out
    (its ``toks``: the tokens before the error, which Prometheus' parser has seen by then)."""
    toks: list = []
    try:
        return _lex_into(q, toks)
    except _LexError as e:
        e.toks = toks
        raise


def _lex_into(q: str, toks: list) -> list:
    i, n = 0, len(q)
    paren = 0
    bracket_open = False
    brace_open = False
    got_colon = False
    while True:
        if i >= n:
            if brace_open:
                raise _LexError("unexpected end of input inside braces", n)
            if bracket_open:
                last = toks[-1].kind if toks else ""
                if last in ("[", ":"):
                    raise _LexError("unexpected end of input in duration expression", n)
                raise _LexError("unclosed left bracket", n)
            if paren:
                raise _LexError("unclosed left parenthesis", n)
            toks.append(_Tok("EOF", "", n))
            return toks
        c = q[i]
        if c in " \t\n\r":
            i += 1
            continue
        if c == "#":
            while i < n and q[i] != "\n":
                i += 1
            continue
        if c in "\"'`":
            j = i + 1
            while True:
                if j >= n or (c != "`" and q[j] == "\n"):
                    raise _LexError("unterminated quoted string" if c != "`" else "unterminated raw string", i)
                if c != "`" and q[j] == "\\":
                    if j + 1 < n and q[j + 1] not in "abfnrtv\\01234567xuU" + c:
                        raise _LexError(f"unknown escape sequence U+{ord(q[j + 1]):04X} {_rune(q, j + 1)}", i)
                    j += 2
                    continue
                if q[j] == c:
                    break
                j += 1
            toks.append(_Tok("STRING", q[i + 1:j], i, q[i:j + 1]))
            i = j + 1
            continue
        if brace_open:
            if c == "}":
                toks.append(_Tok("}", c, i)); brace_open = False; i += 1; continue
            if c == ",":
                toks.append(_Tok(",", c, i)); i += 1; continue
            if c == "{":
                raise _LexError("unexpected left brace '{'", i)
            m = re.compile(r"=~|!~|!=|=").match(q, i)
            if m:
                toks.append(_Tok("MATCH", m.group(), i)); i = m.end(); continue
            if c == "!":
                raise _LexError(f"unexpected character after '!' inside braces: {_rune(q, i + 1)}", i)
            m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(q, i)
            if m:
                toks.append(_Tok("IDENT", m.group(), i)); i = m.end(); continue
            raise _LexError(f"unexpected character inside braces: {_rune(q, i)}", i)
        if bracket_open:
            if c == "]":
                toks.append(_Tok("]", c, i)); bracket_open = False; i += 1; continue
            if c == ":":
                if got_colon:
                    raise _LexError("unexpected colon ':'", i)
                toks.append(_Tok(":", c, i)); got_colon = True; i += 1; continue
            if c == "[":
                raise _LexError("unexpected left bracket '['", i)
            if c == "-":
                raise _LexError("duration must be greater than 0", i)
            if not (c.isdigit() or c == "." or c in "+*/%^(),") and not (
                    c in "sSmM" and re.match(r"(?i)(step|min|max)(?![A-Za-z])", q[i:])):
                raise _LexError(f"unexpected character in duration expression: {_rune(q, i)}", i)
        if c.isdigit() or (c == "." and i + 1 < n and q[i + 1].isdigit()):
            bad = _bad_number_or_duration(q, i)
            if bad is not None:
                raise _LexError(f"bad number or duration syntax: {_go_quote(q[i:bad])}", i)
            m = _DUR_RE.match(q, i)
            if m and not (m.end() < n and (q[m.end()].isalnum() or q[m.end()] == "_")):
                toks.append(_Tok("DURATION", m.group(), i)); i = m.end(); continue
            m = _NUM_RE.match(q, i)
            e = m.end() if m else i + 1
            if e < n and (q[e].isalpha() or q[e] == "_"):
                raise _LexError(f'bad number or duration syntax: "{q[i:e]}"', i)
            toks.append(_Tok("NUMBER", q[i:e], i)); i = e; continue
        m = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*").match(q, i)
        if m and not (bracket_open and c == ":"):
            w = m.group()
            lw = w.lower()
            if ":" in w:
                kind = "METRIC_IDENT"
            elif lw in _AGGS:
                kind = "AGG"
            elif lw in _SET_OPS or lw == "atan2":
                kind = "OP"
            elif lw in _KEYWORDS:
                kind = "KEYWORD"
            elif lw in ("inf", "nan"):
                kind = "NUMBER"
            else:
                kind = "IDENT"
            toks.append(_Tok(kind, w, i)); i = m.end(); continue
        two = q[i:i + 2]
        if two in ("=~", "!~"):  # matchers belong in braces
            raise _LexError(f"unexpected character after {_rune(q, i)}: '~'", i)
        if c == "=" and two != "==":
            toks.append(_Tok("=", c, i)); i += 1; continue
        if two in ("==", "!=", "<=", ">=", "=~", "!~"):
            toks.append(_Tok("OP", two, i)); i += 2; continue
        if c in "+-*/%^<>":
            toks.append(_Tok("OP", c, i)); i += 1; continue
        if c == "=":
            raise _LexError(f"unexpected character after '=': {_rune(q, i + 1)}", i)
        if c == "!":
            raise _LexError(f"unexpected character after '!': {_rune(q, i + 1)}", i)
        if c == "(":
            toks.append(_Tok("(", c, i)); paren += 1; i += 1; continue
        if c == ")":
            toks.append(_Tok(")", c, i)); paren -= 1; i += 1
            if paren < 0:
                raise _LexError("unexpected right parenthesis ')'", i)
            continue
        if c == "{":
            toks.append(_Tok("{", c, i)); brace_open = True; i += 1; continue
        if c == "[":
            toks.append(_Tok("[", c, i)); bracket_open = True; got_colon = False; i += 1; continue
        if c == "]":
            raise _LexError("unexpected right bracket ']'", i)
        if c == ",":
            toks.append(_Tok(",", c, i)); i += 1; continue
        if c == "@":
            toks.append(_Tok("@", c, i)); i += 1; continue
        raise _LexError(f"unexpected character: {_rune(q, i)}", i)


def _operand_before_offset(toks: list, default: int) -> int:
    """Where the expression an ``offset`` follows begins (a call or a parenthesis)."""
    k = next((k for k, t in enumerate(toks) if t.kind == "KEYWORD" and t.val.lower() == "offset"), None)
    if k is None or k == 0 or toks[k - 1].kind != ")":
        return default
    j = _matching_open(toks, k - 1)
    if j is None:
        return default
    if j > 0 and toks[j - 1].kind in ("IDENT", "AGG"):
        return toks[j - 1].pos
    if j > 1 and toks[j - 1].val.lower() in ("by", "without") and toks[j - 2].kind == ")":  # sum(...) by (a)
        j3 = _matching_open(toks, j - 2)
        if j3 is not None and j3 > 0 and toks[j3 - 1].kind == "AGG":
            return toks[j3 - 1].pos
    if j > 0 and toks[j - 1].kind == ")":  # sum by (a) (...)
        j2 = _matching_open(toks, j - 1)
        if j2 is not None and j2 >= 2 and toks[j2 - 1].val.lower() in ("by", "without") and toks[j2 - 2].kind == "AGG":
            return toks[j2 - 2].pos
    return toks[j].pos


def _matching_open(toks: list, close: int) -> Optional[int]:
    depth = 0
    for j in range(close, -1, -1):
        depth += {")": 1, "(": -1}.get(toks[j].kind, 0)
        if depth == 0:
            return j
    return None


def _unknown_function(name: str) -> bool:
    import promql_parser as pp

    try:
        pp.parse(f"{name}()")
    except BaseException as e:  # noqa: BLE001 - ValueError, or a panic from the Rust side
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return str(e).startswith("unknown function")
    return False


def _is_alnum(c: str) -> bool:
    """Prometheus' lexer: ASCII letters, digits and '_' only."""
    return c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9")


def _bad_number_or_duration(q: str, i: int) -> Optional[int]:
    """Where Prometheus' lexNumberOrDuration stops when the text at ``i`` is neither a number
    nor a duration (the error quotes ``q[i:end]``); None when it is one of them."""
    n = len(q)
    pos = i

    def peek() -> str:
        return q[pos] if pos < n else ""

    def accept(chars: str) -> bool:
        nonlocal pos
        if pos < n and q[pos] in chars:
            pos += 1
            return True
        return False

    def number() -> bool:  # scanNumber: consumes as it goes, even when it fails
        nonlocal pos
        start = pos
        digits = "0123456789"
        if accept("0") and accept("xX"):
            accept("_")
            digits = "0123456789abcdefABCDEF"
        accept(".")
        accept(digits)
        dot = exp = False
        while peek() and peek() in digits + "._eE":
            c = peek()
            if c == "." and dot:
                accept(".")
                return False
            if c in "eE" and exp and digits == "0123456789":
                accept("eE")
                return False
            if accept("."):
                dot = True
                if accept("_.") or len(digits) > 10:
                    return False
                continue
            if digits == "0123456789" and accept("eE"):
                exp = True
                accept("+-")
                if accept("._eE") or peek() == "":
                    return False
                continue
            if accept("_"):
                if accept("._eE") or peek() == "":
                    return False
                continue
            while peek() and peek() in digits:
                pos += 1
        if pos == start:
            return False
        return not _is_alnum(peek())

    def duration() -> bool:  # acceptRemainingDuration
        nonlocal pos
        if not accept("smhdwy"):
            return False
        accept("s")
        while accept("0123456789"):
            while accept("0123456789"):
                pass
            if not accept("smhdw"):
                return False
            accept("s")
        c = peek()
        pos += 1 if c else 0
        return not _is_alnum(c)

    if number() or duration():
        return None
    return pos


def _rune(q: str, i: int) -> str:
    """Go's %q of a rune (single quotes)."""
    if i >= len(q):
        return "'\\x00'"
    c = q[i]
    return "'\\''" if c == "'" else f"'{c}'"


def _position(q: str, pos: Optional[int]) -> str:
    """Prometheus' ``StartPosInput``: 1-based line and byte column of a character offset."""
    if q == "" or pos is None:
        return "unknown position"
    b = q[:pos].encode()
    nl = b.rfind(b"\n")
    line = b.count(b"\n") + 1
    return f"{line}:{len(b) - nl}"


def _first_pos(toks: list) -> int:
    return toks[0].pos if toks else 0


def _call_tok(toks: list, name: str) -> Optional[int]:
    for k, t in enumerate(toks[:-1]):
        if t.val == name and toks[k + 1].kind == "(":
            return k
    return None


def _call_args(q: str, toks: list, k: int) -> list:
    """(start, end) character spans of the arguments of the call whose name is token k."""
    depth = 0
    spans, start = [], None
    for t in toks[k + 1:]:
        if t.kind in ("(", "[", "{"):
            depth += 1
            if depth == 1:
                start = None
                continue
        elif t.kind in (")", "]", "}"):
            depth -= 1
            if depth == 0:
                if start is not None:
                    spans.append((start, t.pos))
                return spans
        elif t.kind == "," and depth == 1:
            spans.append((start, t.pos))
            start = None
            continue
        if start is None:
            start = t.pos
    return spans


_TYPE_WORDS = {"matrix": "range vector", "vector": "instant vector", "scalar": "scalar", "string": "string"}


def _arg_type(text: str) -> Optional[str]:
    from .engine import _value_type  # engine imports us; evaluation types live there
    try:
        return _value_type(pp.parse(text))
    except BaseException:  # noqa: BLE001 - promql-parser may panic; an unparsable argument has no type
        return None


def _unexpected_start(toks: list) -> Optional[tuple]:
    """(message, position) when the first token is one no expression starts with."""
    first = toks[0]
    if first.kind == "OP" and first.val in _BIN_OPS and first.val not in ("+", "-") and not first.val.isalpha():
        return f"unexpected {first.desc()}", first.pos
    if first.kind == "@":
        return "unexpected <op:@>", first.pos
    if first.kind in (",", "["):
        return f'unexpected "{first.kind}"', first.pos
    if first.kind == "KEYWORD" and first.val.lower() in ("on", "ignoring", "group_left", "group_right", "bool"):
        return f"unexpected {first.desc()}", first.pos
    # and/or/unless/by/without/offset first are read as a metric name: what follows must fit one
    if len(toks) > 1 and ((first.kind == "OP" and first.val.isalpha()) or
                          (first.kind == "KEYWORD" and first.val.lower() in ("by", "without", "offset"))):
        t = toks[1]
        if t.kind == "(":
            return 'unexpected "("', t.pos
        if t.kind in ("IDENT", "METRIC_IDENT", "AGG", "NUMBER", "STRING", "DURATION") or (
                t.kind == "KEYWORD" and t.val.lower() in ("on", "ignoring", "group_left", "group_right", "bool",
                                                           "by", "without")):
            return f"unexpected {t.desc()}", t.pos
    return None


def _unexpected(q: str, toks: list) -> tuple:
    """Place a generic syntax error: the first token that cannot follow its predecessor."""
    operand_end = {"IDENT", "METRIC_IDENT", "NUMBER", "STRING", ")", "}", "]", "DURATION"}
    operand_start = {"IDENT", "METRIC_IDENT", "NUMBER", "STRING", "AGG", "{"}
    if toks and toks[0].kind == "=":
        return 'unexpected "="', toks[0].pos
    start = _unexpected_start(toks) if len(toks) > 1 else None
    if start is not None:
        return start
    for k in range(1, len(toks)):
        prev, t = toks[k - 1], toks[k]
        if t.kind == "=":  # '=' outside braces lexes, and fits nowhere
            return 'unexpected "="', t.pos
        if t.kind == "EOF":
            if prev.kind == "KEYWORD" and prev.val == "offset" or prev.val == "-" and k >= 2 and \
                    toks[k - 2].val == "offset":
                return "unexpected end of input in offset, expected number, duration, or step()", t.pos
            if prev.kind == "OP" or prev.kind == "(" and k >= 2 and toks[k - 2].val in ("on", "ignoring"):
                return "unexpected end of input", t.pos
            if prev.kind == ")" and _grouping_before(toks, k - 1) == "agg" and \
                    _opener(toks, k - 1) in ("by", "without"):
                return "unexpected end of input in aggregation", t.pos
            if prev.kind == ")" and _grouping_before(toks, k - 1) == "binop":
                return "unexpected end of input", t.pos
            if prev.kind == "KEYWORD" and prev.val in ("by", "without"):
                return 'unexpected end of input in grouping opts, expected "("', t.pos
            continue
        if prev.kind == "OP" and t.kind == "OP" and t.val not in ("+", "-"):
            return f"unexpected {t.desc()}", t.pos
        if prev.kind == "," and not _inside_braces(toks, k) and \
                sum({"(": 1, ")": -1}.get(x.kind, 0) for x in toks[:k]) <= 0:
            return 'unexpected ","', prev.pos  # a comma outside any call
        if prev.kind == "," and not _inside_braces(toks, k) and (
                t.kind == ")" or t.kind == "OP" and t.val not in ("+", "-") and not t.val.isalpha()):
            return "trailing commas not allowed in function call args", prev.pos
        if prev.kind in ("(", ",") and t.kind == "OP" and t.val.isalpha() and k + 1 < len(toks) and \
                toks[k + 1].kind in ("IDENT", "METRIC_IDENT", "NUMBER", "STRING", "AGG"):
            return f"unexpected {toks[k + 1].desc()}", toks[k + 1].pos  # the set operator read as a name
        if prev.kind in ("(", ",") and t.kind == "OP" and t.val not in ("+", "-") and not t.val.isalpha():
            return f"unexpected {t.desc()}", t.pos
        if prev.kind == "@" and t.kind in ("IDENT", "METRIC_IDENT"):
            return f"unexpected {t.desc()} in @, expected timestamp", t.pos
        if t.kind == "[" and (k == 0 or prev.kind not in operand_end):
            return 'unexpected "["', t.pos
        if prev.kind in operand_end and t.kind == "DURATION":
            return f"unexpected {t.desc()}", t.pos
        if prev.kind in ("}", ")", "]", "NUMBER", "STRING", "DURATION") and t.kind == "{":
            return 'unexpected "{"', t.pos
        if prev.kind in operand_end and t.kind == "KEYWORD" and t.val.lower() in (
                "on", "ignoring", "group_left", "group_right", "bool") and not (
                prev.kind == ")" and _opener(toks, k - 1) in ("on", "ignoring")):
            return f"unexpected {t.desc()}", t.pos
        if prev.kind == ")" and t.kind == "KEYWORD" and t.val.lower() in ("by", "without") and \
                _opener(toks, k - 1) in ("by", "without"):
            return f"unexpected {t.desc()} in aggregation", t.pos
        if prev.kind in operand_end and t.kind in operand_start - {"{"}:
            ctx = " in aggregation" if prev.kind == ")" and _grouping_before(toks, k - 1) == "agg" else ""
            return f"unexpected {t.desc()}{ctx}", t.pos
        if prev.kind in ("{", ",", "MATCH", "IDENT", "STRING") and _inside_braces(toks, k):
            if prev.kind == "MATCH" and t.kind != "STRING":
                return f"unexpected {t.desc()} in label matching, expected string", t.pos
            if prev.kind == "," and t.kind not in ("IDENT", "STRING", "}"):
                return f'unexpected {t.desc()} in label matching, expected identifier or "}}"', t.pos
            if prev.kind == "IDENT" and t.kind != "MATCH":
                return f"unexpected {t.desc()} in label matching, expected label matching operator", t.pos
        if prev.kind == ":" and t.kind in ("METRIC_IDENT", ":"):
            return 'unexpected metric identifier ":"', t.pos
    if len(toks) >= 2 and toks[0].kind == "[":
        return 'unexpected "["', toks[0].pos
    return "invalid promql query", _first_pos(toks)


def _inside_braces(toks: list, k: int) -> bool:
    for t in reversed(toks[:k]):
        if t.kind == "{":
            return True
        if t.kind == "}":
            return False
    return False


def _opener(toks: list, close: int) -> str:
    """The token before the ``(`` that the ``)`` at ``close`` closes."""
    depth = 0
    for j in range(close, -1, -1):
        if toks[j].kind == ")":
            depth += 1
        elif toks[j].kind == "(":
            depth -= 1
            if depth == 0:
                return toks[j - 1].val if j else ""
    return ""


def _grouping_before(toks: list, close: int) -> str:
    """For the ``)`` at ``close``: "agg" if it closes ``by (...)``/``without (...)`` or an aggregation's
    argument list, "binop" if it closes ``on(...)``/``ignoring(...)``/``group_*(...)``, else ""."""
    depth = 0
    for j in range(close, -1, -1):
        t = toks[j]
        if t.kind == ")":
            depth += 1
        elif t.kind == "(":
            depth -= 1
            if depth == 0:
                if j == 0:
                    return ""
                p = toks[j - 1]
                if p.val in ("by", "without") or p.kind == "AGG":
                    return "agg"
                if p.val in ("on", "ignoring", "group_left", "group_right"):
                    return "binop"
                return ""
    return ""


def prometheus_parse_error(q: str, msg: str) -> str:
    """``line:col: parse error: message`` as Prometheus 3.x words the error promql-parser found in ``q``."""
    if q.strip() == "":
        return "unknown position: parse error: no expression found in input" if q == "" else \
            f"{_position(q, len(q))}: parse error: no expression found in input"
    try:
        toks = _lex(q)
    except _LexError as e:
        # Prometheus' parser pulls tokens as it goes: a syntax error among the tokens before the
        # lexer's error, or an unknown function called there, is the one it reports
        seen = getattr(e, "toks", [])
        for k, t in enumerate(seen[:-1]):
            if t.kind == "IDENT" and seen[k + 1].kind == "(" and _unknown_function(t.val):
                return f'{_position(q, t.pos)}: parse error: unknown function with name "{t.val}"'
        start = _unexpected_start(seen) if seen else None
        text, pos = start or (_unexpected(q, seen) if len(seen) > 1 else ("invalid promql query", 0))
        if text != "invalid promql query" and pos < e.pos:
            return f"{_position(q, pos)}: parse error: {text}"
        return f"{_position(q, e.pos)}: parse error: {e.msg}"
    at = _first_pos(toks)
    out = msg.replace("'", '"')
    if out.startswith("offset modifier must be preceded by an vector selector"):
        return (f"{_position(q, _operand_before_offset(toks, at))}: parse error: offset modifier must be preceded "
                "by an instant vector selector or range vector selector or a subquery")
    if out == "trailing commas not allowed in function call args":
        k = next((k for k in range(len(toks) - 1) if toks[k].kind == "," and not _inside_braces(toks, k + 1) and (
            toks[k + 1].kind == ")" or toks[k + 1].kind == "OP" and toks[k + 1].val not in ("+", "-"))), None)
        return f"{_position(q, toks[k].pos if k is not None else at)}: parse error: {out}"
    if out == "expect duration before first colon(:) in brackets":
        k = next((k for k, t in enumerate(toks) if t.kind == ":"), None)
        return (f"{_position(q, toks[k].pos + 1 if k is not None else at)}: parse error: unexpected colon before "
                "duration in duration expression")  # the lexer reports it after the colon
    m = re.match(r"unknown function with name \"(.*)\"$", out)
    if m:
        k = _call_tok(toks, m.group(1))
        return f"{_position(q, toks[k].pos if k is not None else at)}: parse error: {out}"
    m = re.match(r"expected (\d+) argument\(s\) in call to \"(.*)\", got (\d+)$", out)
    if m:
        k = _call_tok(toks, m.group(2))
        return f"{_position(q, toks[k].pos if k is not None else at)}: parse error: {out}"
    m = re.match(r"expected type (\w+) in call to function \"(.*)\", got (\w+)$", out)
    if m:
        want, fname, got = m.groups()
        k = _call_tok(toks, fname)
        pos = toks[k].pos if k is not None else at
        if k is not None:
            for s, e in _call_args(q, toks, k):
                if s is not None and _arg_type(q[s:e]) == got:
                    pos = s
                    break
        return (f"{_position(q, pos)}: parse error: expected type {_TYPE_WORDS.get(want, want)} in call to function "
                f"\"{fname}\", got {_TYPE_WORDS.get(got, got)}")
    m = re.match(r"expected type (\w+) in aggregation expression, got (\w+)$", out)
    if m:
        pos = at
        for k, t in enumerate(toks):
            if t.kind == "AGG" and t.val.lower() in _PARAM_AGGS:
                spans = _call_args(q, toks, k + 1 if toks[k + 1].kind != "(" else k)
                if spans and spans[0][0] is not None:
                    pos = spans[0][0]
                break
        return (f"{_position(q, pos)}: parse error: expected type {_TYPE_WORDS.get(m.group(1), m.group(1))} in "
                f"aggregation parameter, got {_TYPE_WORDS.get(m.group(2), m.group(2))}")
    if out.startswith("wrong number of arguments for aggregate expression"):
        k = next((k for k, t in enumerate(toks) if t.kind == "AGG" and t.val.lower() in _PARAM_AGGS), None)
        return f"{_position(q, toks[k].pos if k is not None else at)}: parse error: {out}"
    m = re.match(r"illegal regex for (.*)$", msg, re.S)
    if m:
        return _regex_error(q, toks, m.group(1), at)
    if out == "comparisons between scalars must use BOOL modifier":
        k = next((k for k, t in enumerate(toks) if t.kind == "OP" and t.val in _CMP_OPS), None)
        return f"{_position(q, toks[k].pos if k is not None else at)}: parse error: {out}"
    if out == "bool modifier can only be used on comparison operators":  # placed at the operator
        k = next((k for k, t in enumerate(toks[:-1]) if t.kind == "OP" and t.val not in _CMP_OPS
                  and toks[k + 1].val.lower() == "bool"), None)
        return f"{_position(q, toks[k].pos if k is not None else at)}: parse error: {out}"
    if out == "vector selector must contain at least one non-empty matcher":
        k = next((k for k, t in enumerate(toks) if t.kind == "{" and (k == 0 or toks[k - 1].kind not in
                                                                       ("IDENT", "METRIC_IDENT"))), None)
        return f"{_position(q, toks[k].pos if k is not None else at)}: parse error: {out}"
    if out == "invalid promql query" or out.startswith(("invalid label matcher", "unexpected ")):
        text, pos = _unexpected(q, toks)
        return f"{_position(q, pos)}: parse error: {text}"
    return f"{_position(q, at)}: parse error: {out}"


def _regex_error(q: str, toks: list, rx: str, at: int, go_msg: Optional[str] = None) -> str:
    """A bad regex in a matcher, placed at the matcher's label name, in Go regexp's words
    (``go_msg``, else Go's verdict on ``rx`` where Go rejects it too, else a guess)."""
    pos = at
    for k in range(2, len(toks)):
        if toks[k].kind == "STRING" and toks[k - 1].kind == "MATCH" and (
                toks[k].val if q[toks[k].pos] == "`" else _decode_literal(toks[k].val)[1]) == rx:
            pos = toks[k - 2].pos
            break
    if go_msg is None:
        try:
            compile_matcher(rx)
        except ValueError as e:
            go_msg = str(e)
    if go_msg is None:  # the Rust parser rejects what Go accepts; say something close
        depth = 0
        code = None
        for ch in re.sub(r"\\.", "", rx):
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth < 0:
                    code = "unexpected )"
                    break
        if code is None:
            code = "missing closing )" if depth > 0 else "invalid regular expression"
        go_msg = f"error parsing regexp: {code}: `{rx}`"
    return f"{_position(q, pos)}: parse error: {go_msg}"


def regex_parse_error(q: str, rx: str, go_msg: str) -> str:
    """The parse error for a matcher regex ``rx`` of ``q`` that Go's regexp rejects (``go_msg``)."""
    try:
        toks = _lex(q)
    except _LexError:
        return f"1:1: parse error: {go_msg}"
    return _regex_error(q, toks, rx, _first_pos(toks), go_msg)


# promql-parser checks matcher regexes with Rust's regex crate, which rejects some that Go
# accepts (``\Q...\E``, ``(?)``, octal escapes). Such a query is parsed again with each regex
# matcher's string replaced by this marker and its value's UTF-8 in hex (a plain literal for
# any engine); :func:`matcher_value` gives the value back.
_REGEX_MARK = "\ue000"


def protect_regexes(q: str) -> Optional[str]:
    """``q`` with the string of every ``=~`` / ``!~`` matcher replaced by a marked placeholder,
    or None when there is none (or ``q`` does not lex)."""
    try:
        toks = _lex(q)
    except _LexError:
        return None
    out: list = []
    last = 0
    for k in range(1, len(toks)):
        t = toks[k]
        if t.kind == "STRING" and toks[k - 1].kind == "MATCH" and toks[k - 1].val in ("=~", "!~"):
            val = t.val if q[t.pos] == "`" else _decode_literal(t.val)[1]
            out.append(q[last:t.pos])
            out.append('"' + _REGEX_MARK + val.encode("utf-8", "surrogatepass").hex() + '"')
            last = t.pos + len(t.val) + 2
    if not out:
        return None
    out.append(q[last:])
    return "".join(out)


def matcher_value(v: str) -> str:
    """A matcher value from the syntax tree, a :func:`protect_regexes` placeholder decoded."""
    if v[:1] != _REGEX_MARK:
        return v
    try:
        return bytes.fromhex(v[1:]).decode("utf-8", "surrogatepass")
    except ValueError:
        return v


_ESC = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, "'": 39, '"': 34}


def _decode_literal(v: str) -> tuple[bytearray, str]:
    """A quoted string literal's body decoded as Go does (bytes) and as promql-parser does
    (each byte escape one code point)."""
    raw, chars = bytearray(), []
    i = 0
    while i < len(v):
        c = v[i]
        if c != "\\" or i + 1 >= len(v):
            raw += c.encode("utf-8", "surrogatepass")
            chars.append(c)
            i += 1
            continue
        e = v[i + 1]
        if e == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", v[i + 2:i + 4]):
            b = int(v[i + 2:i + 4], 16)
            raw.append(b)
            chars.append(chr(b))
            i += 4
        elif e in "01234567" and re.fullmatch(r"[0-7]{3}", v[i + 1:i + 4]):
            b = int(v[i + 1:i + 4], 8) & 0xFF
            raw.append(b)
            chars.append(chr(b))
            i += 4
        elif e in "uU":
            w = 4 if e == "u" else 8
            try:
                ch = chr(int(v[i + 2:i + 2 + w], 16))
            except ValueError:
                ch = v[i:i + 2 + w]
            raw += ch.encode("utf-8", "surrogatepass")
            chars.append(ch)
            i += 2 + w
        else:
            raw.append(_ESC.get(e, ord(e)))
            chars.append(chr(_ESC.get(e, ord(e))))
            i += 2
    return raw, "".join(chars)


def invalid_utf8_literals(q: str) -> frozenset:
    """String literals of ``q`` that Go decodes to invalid UTF-8 (``"\\xff"``), as promql-parser decodes
    them (each byte escape one code point). Prometheus rejects such a label name; promql-parser
    gives a valid string, so the evaluator needs this list to reject it too."""
    if "\\" not in q:
        return frozenset()
    try:
        toks = _lex(q)
    except _LexError:
        return frozenset()
    bad = set()
    for t in toks:
        if t.kind != "STRING" or "\\" not in t.val:
            continue
        raw, chars = _decode_literal(t.val)
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            bad.add(chars)
    return frozenset(bad)
