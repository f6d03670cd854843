"""Label matchers with Prometheus semantics (``model/labels/matcher.go``, ``regexp.go``).

Regular expressions are fully anchored, like Prometheus' ``^(?s:re)$`` (3.x:
``.`` also matches a newline). Python's ``re`` is used; the RE2 syntax used in
practice (classes, alternation, repetition) is the same, and what Python spells
differently (mid-pattern ``(?i)``, ``(?<name>``, ``[[:alpha:]]``) is rewritten. A label
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


_FLAG_GROUP = re.compile(r"\(\?([imsU]*(?:-[imsU]*)?)\)")
_POSIX = {"alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7F", "blank": "\\t ",
          "cntrl": "\\x00-\\x1F\\x7F", "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
          "punct": "!-/:-@[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_",
          "xdigit": "0-9A-Fa-f"}


def _re2_to_python(value: str) -> str:
    """RE2 syntax Python's ``re`` spells differently: a flag group ``(?i)`` in mid-pattern (RE2 applies
    it to the rest of the enclosing group, each remaining alternative included; Python only allows
    flags at the very start), ``(?<name>``, and POSIX classes ``[[:alpha:]]`` inside brackets."""
    out: list = []
    stack = [[None, False]]  # per group: (flags for the remaining alternatives, wrapper open)
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "\\":
            out.append(value[i:i + 2])
            i += 2
            continue
        if c == "[":
            j = i + 1
            buf = ["["]
            if j < n and value[j] == "^":
                buf.append("^")
                j += 1
            if j < n and value[j] == "]":
                buf.append("\\]")
                j += 1
            while j < n and value[j] != "]":
                if value[j] == "\\":
                    buf.append(value[j:j + 2])
                    j += 2
                    continue
                m = re.compile(r"\[:(\^?)([a-z]+):\]").match(value, j)
                if m and m.group(2) in _POSIX and not m.group(1):
                    buf.append(_POSIX[m.group(2)])
                    j = m.end()
                    continue
                if value[j] == "[":
                    buf.append("\\[")
                    j += 1
                    continue
                buf.append(value[j])
                j += 1
            buf.append("]")
            out.append("".join(buf))
            i = j + 1
            continue
        if c == "(":
            m = _FLAG_GROUP.match(value, i)
            if m and m.group(1):
                frame = stack[-1]
                if frame[1]:
                    out.append(")")
                flags = m.group(1)
                if frame[0]:
                    flags = _merge_flags(frame[0], flags)
                frame[0], frame[1] = flags, True
                out.append(f"(?{flags}:")
                i = m.end()
                continue
            stack.append([None, False])
            if value.startswith("(?<", i) and not value.startswith("(?<=", i) and not value.startswith("(?<!", i):
                out.append("(?P<")
                i += 3
                continue
            out.append("(")
            i += 1
            continue
        if c == ")":
            frame = stack.pop() if len(stack) > 1 else stack[-1]
            if frame[1]:
                out.append(")")
            out.append(")")
            i += 1
            continue
        if c == "|":
            frame = stack[-1]
            if frame[1]:
                out.append(")")
            out.append("|")
            if frame[0]:
                out.append(f"(?{frame[0]}:")
                frame[1] = True
            i += 1
            continue
        out.append(c)
        i += 1
    if stack[-1][1]:
        out.append(")")
    return "".join(out)


def _merge_flags(old: str, new: str) -> str:
    on_old, _, off_old = old.partition("-")
    on_new, _, off_new = new.partition("-")
    on = "".join(sorted((set(on_old) - set(off_new)) | set(on_new)))
    off = "".join(sorted((set(off_old) - set(on_new)) | set(off_new)))
    return on + ("-" + off if off else "")


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
    if any("U" in f for f in _FLAG_GROUP.findall(value)):
        raise ValueError(f"unsupported regex flag 'U' in {value!r}")
    return re.compile("(?:" + _re2_to_python(value) + ")", flags | re.DOTALL)


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
