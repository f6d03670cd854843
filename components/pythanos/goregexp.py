"""Go's ``regexp`` semantics, in linear time, on RE2 (the ``google-re2`` package).

Every regular expression that comes from a user (label matchers, ``label_replace``, relabel
configs) is compiled here, never by Python's backtracking ``re``: a pattern such as
``(x|x)*y`` against a long value must not freeze a process while it holds the GIL. RE2 is
the engine Go's ``regexp`` was modelled on: same syntax, same leftmost-first submatch
semantics, and matching time linear in the input.

Two ways to compile, as Prometheus does:

- :func:`compile_matcher` — a label matcher's ``=~`` / ``!~`` value (``labels.NewFastRegexMatcher``):
  the value alone must parse, then it matches the whole string as ``^(?s:value)$`` (``.``
  matches a newline).
- :func:`compile_anchored` — ``regexp.MustCompile("^(?s:" + value + ")$")`` verbatim (relabel's
  ``NewRegexp``, PromQL's ``label_replace``); :meth:`Regexp.match` is Go's ``MatchString``,
  :meth:`Regexp.replace` is ``FindStringSubmatchIndex`` followed by ``ExpandString``.

Syntax is Go's where C++ RE2 differs (``\\C`` is an error in Go), and errors read as Go's:
``error parsing regexp: missing closing ): `(a```. Patterns and values are Python ``str``;
they are matched as UTF-8, as Go matches its strings.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

from re2 import _re2

__all__ = ["RegexpError", "Regexp", "compile_matcher", "compile_anchored", "expand"]

# RE2 may use this much memory per compiled regexp (program, and a DFA cache that is reset
# when full; matching stays linear). Go has no such budget but limits a program to about 3.3
# million instructions ("expression too large"). RE2's default 8 MiB rejects patterns Go
# accepts (``\pL{1000}``); 32 MiB admits them and alternations of tens of thousands of values.
MAX_MEM = 32 << 20
# compiled patterns kept for reuse (dashboards repeat their queries); each is bounded by MAX_MEM
_CACHE = 64

_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_ANCHOR_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH

# C++ RE2's error code texts -> Go's regexp/syntax ErrorCode texts.
_GO_CODES = (
    ("invalid escape sequence", "invalid escape sequence"),
    ("invalid character class range", "invalid character class range"),
    ("invalid character class", "invalid character class"),
    ("missing ]", "missing closing ]"),
    ("missing )", "missing closing )"),
    ("unexpected )", "unexpected )"),
    ("trailing \\", "trailing backslash at end of expression"),
    ("no argument for repetition operator", "missing argument to repetition operator"),
    ("invalid repetition size", "invalid repeat count"),
    ("bad repetition operator", "invalid nested repetition operator"),
    ("invalid perl operator", "invalid or unsupported Perl syntax"),
    ("invalid UTF-8", "invalid UTF-8"),
    ("invalid named capture group", "invalid named capture"),
    ("pattern too large - compile failed", "expression too large"),
    ("pattern too large - reverse compile failed", "expression too large"),
)


class RegexpError(ValueError):
    """A pattern Go's ``regexp`` rejects; ``str()`` is Go's ``syntax.Error`` text."""

    def __init__(self, code: str, expr: str) -> None:
        self.code, self.expr = code, expr
        super().__init__(f"error parsing regexp: {code}: `{expr}`")


def _encode(s: str) -> bytes:
    try:
        return s.encode()
    except UnicodeEncodeError:  # a lone surrogate (from JSON): invalid UTF-8, as Go would see bytes
        return s.encode("utf-8", "surrogatepass")


def _options(dot_nl: bool, never_capture: bool):
    o = _re2.RE2.Options()
    o.log_errors = False
    o.max_mem = MAX_MEM
    o.dot_nl = dot_nl
    o.never_capture = never_capture
    return o


def _is_capture_name(name: str) -> bool:
    return name != "" and all(c == "_" or ("0" <= c <= "9") or ("a" <= c.lower() <= "z") for c in name)


def _escape_end(p: str, i: int) -> int:
    """End of the escape at ``p[i]`` (a backslash) as Go's ``parseEscape`` consumes it."""
    n = len(p)
    if i + 1 >= n:
        return n
    c, j = p[i + 1], i + 2
    if c in "01234567":
        if c != "0" and not (j < n and p[j] in "01234567"):
            return j  # \1-\7 alone: a back-reference, rejected
        for _ in range(2):
            if j < n and p[j] in "01234567":
                j += 1
        return j
    if c in "xpP":
        if j < n and p[j] == "{":
            end = p.find("}", j)
            return n if end < 0 else end + 1
        return min(n, j + (2 if c == "x" else 1))
    return j


def _go_syntax(pattern: str) -> tuple[str, Optional[tuple[int, str, str]]]:
    """Where Go's parser and C++ RE2's disagree, found scanning as Go parses (left to right).

    Returns the pattern to give RE2 and the first construct Go rejects but RE2 accepts, as
    (position in the returned pattern, Go's error code, Go's error argument), or None:

    - ``\\C`` (any byte in RE2) is an invalid escape in Go;
    - a named group ``(?P<name>`` / ``(?<name>`` (Go: any ``(?<``, so ``(?<=`` too) needs a
      name of ASCII letters, digits and ``_`` and a closing ``>``;
    - a name used twice is fine in Go (``$name`` takes the first), an error in RE2: the
      later groups are given to RE2 unnamed (``(``), which numbers them the same."""
    if "\\C" not in pattern and "(?" not in pattern:
        return pattern, None
    out: list[str] = []
    names: set = set()
    i, n, shift, done = 0, len(pattern), 0, 0
    in_class = False

    def given() -> str:
        return "".join(out) + pattern[done:]

    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1] if i + 1 < n else ""
            if nxt == "Q" and not in_class:
                end = pattern.find("\\E", i + 2)
                if end < 0:
                    break
                i = end + 2
                continue
            if nxt == "C":
                return given(), (i + shift, "invalid escape sequence", "\\C")
            i = _escape_end(pattern, i)
            continue
        if in_class:
            if c == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                if end >= 0:
                    i = end + 2
                    continue
            if c == "]":
                in_class = False
            i += 1
            continue
        if c == "[":
            in_class = True
            i += 1
            if pattern.startswith("^", i):
                i += 1
            if pattern.startswith("]", i):  # first in the class: a literal
                i += 1
            continue
        if c == "(" and pattern.startswith("(?", i):
            p_form = pattern.startswith("(?P<", i) and n - i > 4
            if p_form or (pattern.startswith("(?<", i) and n - i > 3):
                start = i + (4 if p_form else 3)
                end = pattern.find(">", start)
                if end < 0:
                    return given(), (i + shift, "invalid named capture", pattern[i:])
                name = pattern[start:end]
                if not _is_capture_name(name):
                    return given(), (i + shift, "invalid named capture", pattern[i:end + 1])
                if name in names:
                    out.append(pattern[done:i])
                    out.append("(")
                    shift -= end - i
                    done = end + 1
                names.add(name)
                i = end + 1
                continue
        i += 1
    return given(), None


def _trailing_escape(p: str) -> Optional[str]:
    """The escape that runs to the end of ``p``, if one does (as Go scans escapes)."""
    i, n, last = 0, len(p), None
    while i < n:
        if p[i] == "\\":
            if p.startswith("\\Q", i):
                end = p.find("\\E", i + 2)
                if end < 0:
                    return None
                i = end + 2
                continue
            last = i
            i = _escape_end(p, i)
            if i >= n:
                return p[last:]
            continue
        i += 1
    return None


def _re2_error(rx, pattern: str, given: str) -> RegexpError:
    """RE2's error for ``given`` (``pattern`` as given to RE2) in Go's words."""
    text = rx.error()
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    for cxx, go in _GO_CODES:
        if text == cxx or text.startswith(cxx + ": "):
            arg = text[len(cxx) + 2:]
            if go == "invalid UTF-8" and not arg:
                # RE2 ran off the end inside an escape (a str pattern is valid UTF-8); Go
                # calls the escape invalid
                esc = _trailing_escape(given)
                if esc is not None:
                    return RegexpError("invalid escape sequence", esc)
            if go in ("missing closing )", "unexpected )"):
                arg = pattern  # Go names the whole expression
            elif go in ("trailing backslash at end of expression", "expression too large"):
                arg = ""
            elif go == "invalid repeat count" and arg.endswith("}?") and not _repeat_count_ok(arg[:-1]):
                arg = arg[:-1]  # a count out of range is found before a following "?" is read
            elif go == "invalid nested repetition operator":
                # Go checks a repeat's count before the stacking
                k = arg.rfind("{", 1)
                last = arg[k:].removesuffix("?") if k > 0 else ""
                if last.endswith("}") and not _repeat_count_ok(last):
                    return RegexpError("invalid repeat count", last)
            return RegexpError(go, arg)
    return RegexpError(text, pattern)


def _repeat_count_ok(op: str) -> bool:
    lo, _, hi = op[1:-1].partition(",")
    try:
        mn = int(lo)
        mx = mn if "," not in op else (int(hi) if hi else -1)
    except ValueError:
        return True
    return not (mn > 1000 or mx > 1000 or (mx >= 0 and mn > mx))


def _compile(pattern: str, dot_nl: bool, never_capture: bool):
    """RE2 object for ``pattern`` with Go's syntax, or :class:`RegexpError` in Go's words."""
    given, go_err = _go_syntax(pattern)
    if go_err is not None:
        # Go stops at that construct: an error RE2 finds before it comes first (but a group or
        # class left open by the cut is no error of the whole)
        gpos, code, arg = go_err
        rx = _re2.RE2(_encode(given[:gpos]), _options(dot_nl, never_capture))
        if not rx.ok():
            e = _re2_error(rx, pattern, given[:gpos])
            if e.code not in ("missing closing )", "missing closing ]"):
                raise e
        raise RegexpError(code, arg)
    rx = _re2.RE2(_encode(given), _options(dot_nl, never_capture))
    if not rx.ok():
        raise _re2_error(rx, pattern, given)
    return rx


class Regexp:
    """A compiled pattern. :meth:`match` says whether a string matches (Go's ``MatchString``;
    for a matcher, the whole string); :meth:`replace` expands a template with the submatches."""

    __slots__ = ("pattern", "_dot_nl", "_anchor", "_m", "_sub", "_names")

    def __init__(self, pattern: str, dot_nl: bool, anchor) -> None:
        self.pattern = pattern
        self._dot_nl = dot_nl
        self._anchor = anchor
        self._m = _compile(pattern, dot_nl, never_capture=True)  # match only: RE2's DFA, no submatches
        self._sub = None
        self._names: Optional[dict] = None

    def __repr__(self) -> str:
        return f"Regexp({self.pattern!r})"

    def match(self, s: str) -> bool:
        b = _encode(s)
        return self._m.Match(self._anchor, b, 0, len(b))[0][0] >= 0

    def _submatch_re(self):
        sub = self._sub
        if sub is None:  # compiled on first use; threads racing here build equal objects
            sub = _compile(self.pattern, self._dot_nl, never_capture=False)
            names = {}
            for name, idx in sub.NamedCapturingGroups():
                names[name.decode("utf-8", "surrogatepass") if isinstance(name, bytes) else name] = idx
            self._names = names  # complete before _sub says so
            self._sub = sub
        return sub

    def submatch(self, s: str) -> Optional[list]:
        """Go's ``FindStringSubmatch``: the match and each group's text (None: group unset), or
        None when nothing matches."""
        sub = self._submatch_re()
        b = _encode(s)
        spans = sub.Match(self._anchor, b, 0, len(b))
        if spans[0][0] < 0:
            return None
        return [None if a < 0 else b[a:e].decode("utf-8", "surrogatepass") for a, e in spans]

    def group_index(self, name: str) -> Optional[int]:
        self._submatch_re()
        return self._names.get(name)

    def replace(self, template: str, s: str) -> Optional[str]:
        """``template`` expanded with the submatches of ``s`` (Go's ``ExpandString``), or None
        when ``s`` does not match."""
        groups = self.submatch(s)
        if groups is None:
            return None
        return expand(template, groups, self.group_index)

    def replace_many(self, template: str, values: Sequence[str]) -> list[Optional[str]]:
        """:meth:`replace` of every value (``label_replace`` over every series): the template's
        references are resolved to group numbers once, and only the groups it uses are decoded."""
        sub = self._submatch_re()
        ngroups = sub.NumberOfCapturingGroups() + 1
        pieces: list = []  # text, or a group number to insert (-1: expands to "")
        for piece in (_template_pieces(template) if "$" in template else (template,)):
            if type(piece) is str:
                pieces.append(piece)
            else:
                name, num = piece
                group = num if num >= 0 else self._names.get(name)
                pieces.append(group if group is not None and group < ngroups else -1)
        only = pieces[0] if len(pieces) == 1 else None
        anchor, match = self._anchor, sub.Match
        out: list[Optional[str]] = []
        for s in values:
            b = _encode(s)
            spans = match(anchor, b, 0, len(b))
            if spans[0][0] < 0:
                out.append(None)
            elif type(only) is str:
                out.append(only)
            else:
                parts = []
                for p in pieces:
                    if type(p) is str:
                        parts.append(p)
                    elif p >= 0 and spans[p][0] >= 0:
                        parts.append(b[spans[p][0]:spans[p][1]].decode("utf-8", "surrogatepass"))
                out.append("".join(parts))
        return out


@functools.lru_cache(maxsize=_CACHE)
def compile_matcher(value: str) -> Regexp:
    """A label matcher's regexp, as ``labels.NewFastRegexMatcher``: ``value`` must parse on its
    own (Perl syntax, ``.`` matching a newline); it then matches whole strings only."""
    return Regexp(value, True, _ANCHOR_BOTH)


@functools.lru_cache(maxsize=_CACHE)
def compile_anchored(value: str) -> Regexp:
    """``regexp.Compile("^(?s:" + value + ")$")`` verbatim (relabel, ``label_replace``): errors
    name the wrapped pattern, as Go's do, and matching is a search, as ``MatchString``."""
    return Regexp("^(?s:" + value + ")$", False, _UNANCHORED)


def expand(template: str, groups: list, group_index) -> str:
    """Go's ``Regexp.ExpandString``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``; an unknown or
    unset group expands to ""; a malformed reference keeps its ``$``. A name is the longest run
    of letters, digits and ``_`` (``$1x`` is the group named "1x"); numbers have no leading zero."""
    if "$" not in template:
        return template
    out: list[str] = []
    for piece in _template_pieces(template):
        if type(piece) is str:
            out.append(piece)
            continue
        name, num = piece
        group = num if num >= 0 else group_index(name)
        if group is not None and group < len(groups):
            out.append(groups[group] or "")
    return "".join(out)


@functools.lru_cache(maxsize=_CACHE)
def _template_pieces(template: str) -> tuple:
    """A template read once (``label_replace`` expands it for every series): its text pieces
    and its references as ``(name, number or -1)``."""
    out: list = []
    i, n = 0, len(template)
    while True:
        j = template.find("$", i)
        if j < 0:
            out.append(template[i:])
            return tuple(out)
        out.append(template[i:j])
        i = j + 1
        if i < n and template[i] == "$":
            out.append("$")
            i += 1
            continue
        ref = _extract(template, i)
        if ref is None:
            out.append("$")
            continue
        name, num, i = ref
        out.append((name, num))


def _extract(s: str, i: int) -> Optional[tuple[str, int, int]]:
    """Go's ``regexp.extract``: (name, number or -1, end index) of a reference at ``s[i:]``."""
    brace = i < len(s) and s[i] == "{"
    if brace:
        i += 1
    k = i
    while k < len(s) and (s[k].isalpha() or s[k].isdecimal() or s[k] == "_"):
        k += 1
    if k == i:
        return None
    name = s[i:k]
    if brace:
        if k >= len(s) or s[k] != "}":
            return None
        k += 1
    num = 0
    for c in name:
        if not "0" <= c <= "9" or num >= 100_000_000:
            num = -1
            break
        num = num * 10 + ord(c) - 48
    if name[0] == "0" and len(name) > 1:
        num = -1
    return name, num, k
