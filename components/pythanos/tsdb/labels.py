"""Label matchers with Prometheus semantics (``model/labels/matcher.go``, ``regexp.go``).

Regular expressions are Go's (RE2 syntax), fully anchored like Prometheus' ``^(?s:re)$``
(``.`` also matches a newline), and run in linear time on RE2 (:mod:`pythanos.goregexp`):
a user's pattern can never backtrack. An invalid one raises ``ValueError`` with Go's
message (``error parsing regexp: ...``). A label that is absent has the value ``""`` for
matching purposes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pythanos.goregexp import Regexp, compile_matcher

__all__ = ["Matcher", "MATCH_EQUAL", "MATCH_NOT_EQUAL", "MATCH_REGEXP", "MATCH_NOT_REGEXP"]

MATCH_EQUAL = "="
MATCH_NOT_EQUAL = "!="
MATCH_REGEXP = "=~"
MATCH_NOT_REGEXP = "!~"
_TYPES = (MATCH_EQUAL, MATCH_NOT_EQUAL, MATCH_REGEXP, MATCH_NOT_REGEXP)
_INVERSE = {MATCH_EQUAL: MATCH_NOT_EQUAL, MATCH_NOT_EQUAL: MATCH_EQUAL,
            MATCH_REGEXP: MATCH_NOT_REGEXP, MATCH_NOT_REGEXP: MATCH_REGEXP}

_META = set("\\.+*?()|[]{}^$")  # Go's regexp.QuoteMeta escapes exactly these


def _is_literal(s: str) -> bool:
    return not any(c in _META for c in s)


@dataclass(frozen=True)
class Matcher:
    """``Matcher(type, name, value)``; ``type`` is one of ``=``, ``!=``, ``=~``, ``!~``."""

    type: str
    name: str
    value: str
    _re: Optional[Regexp] = field(default=None, init=False, repr=False, compare=False, hash=False)
    # literal fast paths for regex matchers: exact set of matching values (no regexp compiled,
    # as Prometheus' optimizeAlternatingLiterals), or a literal prefix
    _set: Optional[frozenset] = field(default=None, init=False, repr=False, compare=False, hash=False)
    _prefix: Optional[str] = field(default=None, init=False, repr=False, compare=False, hash=False)
    _prefix_all: bool = field(default=False, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"unknown matcher type {self.type!r} (want one of {', '.join(_TYPES)})")
        if self.type in (MATCH_REGEXP, MATCH_NOT_REGEXP):
            v = self.value
            if _is_literal(v):
                object.__setattr__(self, "_set", frozenset((v,)))
                return
            if "|" in v and all(_is_literal(p) for p in v.split("|")):
                object.__setattr__(self, "_set", frozenset(v.split("|")))
                return
            object.__setattr__(self, "_re", compile_matcher(v))  # ValueError in Go's words
            if v.endswith(".*") and _is_literal(v[:-2]):
                object.__setattr__(self, "_prefix", v[:-2])
                object.__setattr__(self, "_prefix_all", True)
            elif "|" not in v:
                # a literal prefix followed by something: narrows the candidates, regex decides
                i = 0
                while i < len(v) and v[i] not in _META:
                    i += 1
                pre = v[:i]
                # a quantifier right after the prefix applies to its last character
                if pre and i < len(v) and v[i] in "*?{":
                    pre = pre[:-1]
                if pre:
                    object.__setattr__(self, "_prefix", pre)

    @classmethod
    def eq(cls, name: str, value: str) -> "Matcher":
        return cls(MATCH_EQUAL, name, value)

    @classmethod
    def ne(cls, name: str, value: str) -> "Matcher":
        return cls(MATCH_NOT_EQUAL, name, value)

    @classmethod
    def re(cls, name: str, value: str) -> "Matcher":
        return cls(MATCH_REGEXP, name, value)

    @classmethod
    def nre(cls, name: str, value: str) -> "Matcher":
        return cls(MATCH_NOT_REGEXP, name, value)

    def matches(self, s: str) -> bool:
        t = self.type
        if t == MATCH_EQUAL:
            return s == self.value
        if t == MATCH_NOT_EQUAL:
            return s != self.value
        hit = s in self._set if self._set is not None else self._re.match(s)
        return hit if t == MATCH_REGEXP else not hit

    def inverse(self) -> "Matcher":
        return Matcher(_INVERSE[self.type], self.name, self.value)

    @property
    def is_negative(self) -> bool:
        return self.type in (MATCH_NOT_EQUAL, MATCH_NOT_REGEXP)

    def __str__(self) -> str:
        v = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.type}"{v}"'
