"""Label matchers with Prometheus semantics (``model/labels/matcher.go``, ``regexp.go``).

Regular expressions are fully anchored, like Prometheus' ``^(?s:re)$`` (3.x:
``.`` also matches a newline). Python's ``re`` is used; the RE2 syntax used in
practice (classes, alternation, repetition, ``(?i)``) is the same. A label
that is absent has the value ``""`` for matching purposes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["Matcher", "MATCH_EQUAL", "MATCH_NOT_EQUAL", "MATCH_REGEXP", "MATCH_NOT_REGEXP"]

MATCH_EQUAL = "="
MATCH_NOT_EQUAL = "!="
MATCH_REGEXP = "=~"
MATCH_NOT_REGEXP = "!~"
_TYPES = (MATCH_EQUAL, MATCH_NOT_EQUAL, MATCH_REGEXP, MATCH_NOT_REGEXP)
_INVERSE = {MATCH_EQUAL: MATCH_NOT_EQUAL, MATCH_NOT_EQUAL: MATCH_EQUAL,
            MATCH_REGEXP: MATCH_NOT_REGEXP, MATCH_NOT_REGEXP: MATCH_REGEXP}

_META = set("\\.+*?()|[]{}^$")
_LEADING_FLAGS = re.compile(r"^\(\?([imsU]+)\)")


def _is_literal(s: str) -> bool:
    return not any(c in _META for c in s)


def _compile(value: str) -> re.Pattern:
    flags = 0
    m = _LEADING_FLAGS.match(value)
    if m:  # Go allows (?i) inside the anchoring group, Python only at the very start
        for f in m.group(1):
            if f == "i":
                flags |= re.IGNORECASE
            elif f == "m":
                flags |= re.MULTILINE
            elif f == "s":
                flags |= re.DOTALL
            else:
                raise ValueError(f"unsupported regex flag {f!r} in {value!r}")
        value = value[m.end():]
    return re.compile("(?:" + value + ")", flags | re.DOTALL)


@dataclass(frozen=True)
class Matcher:
    """``Matcher(type, name, value)``; ``type`` is one of ``=``, ``!=``, ``=~``, ``!~``."""

    type: str
    name: str
    value: str
    _re: Optional[re.Pattern] = field(default=None, init=False, repr=False, compare=False, hash=False)
    # literal fast paths for regex matchers: exact set of matching values, or a literal prefix
    _set: Optional[tuple] = field(default=None, init=False, repr=False, compare=False, hash=False)
    _prefix: Optional[str] = field(default=None, init=False, repr=False, compare=False, hash=False)
    _prefix_all: bool = field(default=False, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"unknown matcher type {self.type!r} (want one of {', '.join(_TYPES)})")
        if self.type in (MATCH_REGEXP, MATCH_NOT_REGEXP):
            try:
                rx = _compile(self.value)
            except re.error as e:
                raise ValueError(f"invalid regular expression {self.value!r}: {e}") from None
            object.__setattr__(self, "_re", rx)
            v = self.value
            if _is_literal(v):
                object.__setattr__(self, "_set", (v,))
            elif "|" in v and all(_is_literal(p) for p in v.split("|")):
                object.__setattr__(self, "_set", tuple(sorted(set(v.split("|")))))
            elif v.endswith(".*") and _is_literal(v[:-2]) and not _LEADING_FLAGS.match(v):
                object.__setattr__(self, "_prefix", v[:-2])
                object.__setattr__(self, "_prefix_all", True)
            else:
                # a literal prefix followed by something: narrows the candidates, regex decides
                i = 0
                while i < len(v) and v[i] not in _META:
                    i += 1
                pre = v[:i]
                # a quantifier right after the prefix applies to its last character
                if pre and i < len(v) and v[i] in "*?{":
                    pre = pre[:-1]
                if pre and not _LEADING_FLAGS.match(v) and "|" not in v:
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
        hit = self._re.fullmatch(s) is not None
        return hit if t == MATCH_REGEXP else not hit

    def inverse(self) -> "Matcher":
        return Matcher(_INVERSE[self.type], self.name, self.value)

    @property
    def is_negative(self) -> bool:
        return self.type in (MATCH_NOT_EQUAL, MATCH_NOT_REGEXP)

    def __str__(self) -> str:
        v = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.type}"{v}"'
