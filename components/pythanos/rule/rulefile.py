"""Rule files: Prometheus 3's rule-file format (``model/rulefmt``) plus Thanos' per-group
``partial_response_strategy``.

A rule file is checked the way ``promtool check rules`` (Prometheus 3.9.1) and a Thanos v0.42
ruler check it, so a file one of them refuses is refused here with the same substance:

* YAML is decoded as Go's yaml.v3 decodes it strictly into rulefmt's structures: unknown
  fields, keys given twice and values of the wrong kind are reported with their line, in Go's
  words (``line 4: field fo not found in type rulefmt.Rule``); an invalid duration stops the
  decoding (yaml.v3 gives up on an unmarshaler's error, without a line).
* Then rulefmt's validation: group names present and unique in the file, exactly one of
  ``record``/``alert``, an ``expr`` that parses (our PromQL parser), no ``for``,
  ``keep_firing_for`` or annotations on a recording rule, no braces in a record name, label
  names (UTF-8 scheme, not ``__name__``), label and annotation templates of alerting rules
  parsed as Go templates (:mod:`pythanos.promtemplate`). These errors read as rulefmt's:
  ``12:11: group "g", rule 2, "Foo": could not parse expression: ...`` with line:column of
  the YAML node.

Every message is prefixed with the file, as promtool prints it; :class:`RuleFileError`
carries them all (``errors``) and prints one per line.

Where we part from the Go tools, on purpose: group-level messages carry the group's position
(``6:3: groupname: "g" is repeated``, as Prometheus 2 printed it; 3.9.1 prints ``0:0``);
messages name the file as given, where thanos rule names the temporary copy it validates.
A running thanos rule is laxer than promtool and ``thanos tools rules-check`` (it re-encodes
the file through a non-strict decoder first, so repeated keys and unknown top-level keys pass
there, and it panics on a null group): we refuse what promtool refuses. YAML syntax errors
come from PyYAML: the line and wording follow libyaml's where the two agree, which is not
always (the tests compare them loosely).
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import yaml

__all__ = ["Rule", "RuleGroup", "RuleFileError", "load_files", "load_file", "parse_rules",
           "parse_model_duration", "PARTIAL_RESPONSE_STRATEGIES"]

PARTIAL_RESPONSE_STRATEGIES = ("WARN", "ABORT")  # Thanos' storepb enum, in its value order


def _items_hash(d: dict) -> tuple:
    return tuple(sorted(d.items()))


@dataclass(frozen=True)
class Rule:
    """One rule as written in its file (``kind`` is ``record`` or ``alert``)."""

    kind: str
    name: str
    expr: str
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    line: int = 0  # line of the rule in its file, for messages

    def __hash__(self) -> int:  # the dicts are never mutated after loading
        return hash((self.kind, self.name, self.expr, self.for_s, self.keep_firing_for_s,
                     _items_hash(self.labels), _items_hash(self.annotations), self.line))


@dataclass(frozen=True)
class RuleGroup:
    """A group of rules evaluated in order at one interval."""

    name: str
    file: str
    rules: tuple[Rule, ...] = ()
    interval_s: Optional[float] = None      # None: --eval-interval
    query_offset_s: Optional[float] = None  # None: --rule-query-offset
    limit: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    partial_response_strategy: str = "ABORT"

    def __hash__(self) -> int:
        return hash((self.name, self.file, self.rules, self.interval_s, self.query_offset_s, self.limit,
                     _items_hash(self.labels), self.partial_response_strategy))


class RuleFileError(ValueError):
    """Rule files that do not load: ``errors`` holds one message per problem, each beginning
    with the file (``rules.yml: 5:11: group "g", rule 1, "x": ...``), as promtool prints them."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# ---------------------------------------------------------------------------------------------
# Durations as Prometheus' model.ParseDuration reads them (units in descending order, integers).

_DURATION_UNITS = {"y": (1, 365 * 86400_000), "w": (2, 7 * 86400_000), "d": (3, 86400_000),
                   "h": (4, 3600_000), "m": (5, 60_000), "s": (6, 1000), "ms": (7, 1)}
_DURATION_PART = re.compile(r"([0-9]+)([^0-9]*)")
_MAX_DURATION_MS = (1 << 63) // 1_000_000  # time.Duration's range, in ms


def parse_model_duration(text: str) -> float:
    """Seconds of a Prometheus duration (``1h30m``, ``2d``, ``0``); ValueError in Prometheus' words."""
    if text == "0":
        return 0.0
    if text == "":
        raise ValueError("empty duration string")
    pos, last, total = 0, 0, 0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None or not m.group(2):
            raise ValueError(f"not a valid duration string: {_go_quote(text)}")
        unit = _DURATION_UNITS.get(m.group(2))
        if unit is None:
            raise ValueError(f"unknown unit {_go_quote(m.group(2))} in duration {_go_quote(text)}")
        if unit[0] <= last:
            raise ValueError(f"not a valid duration string: {_go_quote(text)}")
        last = unit[0]
        total += int(m.group(1)) * unit[1]
        if total > _MAX_DURATION_MS:
            raise ValueError("duration out of range")
        pos = m.end()
    return total / 1000.0


def _go_quote(s: str) -> str:
    from ..relabel import _go_quote as quote  # Go's %q

    return quote(s)


# ---------------------------------------------------------------------------------------------
# YAML: PyYAML's node tree, read as yaml.v3 decodes into typed Go structures.

class _Loader(yaml.SafeLoader):
    """Composes nodes only, leaving plain scalars untagged (tag ""), so they are resolved as
    yaml.v3 resolves them (YAML 1.2 core: ``yes`` is a string) rather than as YAML 1.1."""

    def resolve(self, kind, value, implicit):  # type: ignore[override]
        if kind is yaml.ScalarNode:
            return ""
        return super().resolve(kind, value, implicit)

    def compose_node(self, parent, index):  # type: ignore[override]
        """An anchor defined again names the new node from there on (libyaml), not an error."""
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if anchor is not None and not isinstance(event, yaml.AliasEvent):
            self.anchors.pop(anchor, None)
        return super().compose_node(parent, index)


_STR, _INT, _FLOAT, _BOOL, _NULL, _SEQ, _MAP = ("!!str", "!!int", "!!float", "!!bool", "!!null", "!!seq", "!!map")
_NULLS = {"", "~", "null", "Null", "NULL"}
_BOOLS = {"true", "True", "TRUE", "false", "False", "FALSE"}
_FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_SPECIAL_FLOATS = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF",
                   ".nan", ".NaN", ".NAN"}
_GO_INT_RE = re.compile(r"^[-+]?(0[xX][0-9a-fA-F]+|0[oO]?[0-7]+|0[bB][01]+|[1-9][0-9]*|0)$")


def _short_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


def _go_int(text: str) -> Optional[int]:
    """``strconv.ParseInt(text, 0, 64)`` after yaml.v3 drops underscores; None if not an int."""
    plain = text.replace("_", "")
    if not _GO_INT_RE.match(plain):
        return None
    sign = -1 if plain.startswith("-") else 1
    body = plain.lstrip("+-")
    low = body.lower()
    if low.startswith("0x"):
        v = int(body[2:], 16)
    elif low.startswith("0o"):
        v = int(body[2:], 8)
    elif low.startswith("0b"):
        v = int(body[2:], 2)
    elif len(body) > 1 and body.startswith("0"):
        v = int(body[1:], 8)
    else:
        v = int(body)
    v *= sign
    return v if -(1 << 63) <= v < (1 << 64) else None  # ParseInt, else ParseUint; beyond: a float


def _resolve(node: yaml.ScalarNode) -> tuple[str, Any]:
    """yaml.v3's tag and value of a scalar: quoted and block scalars are strings; an explicit
    ``!!int``/``!!float``/``!!bool``/``!!null`` the text does not fit ends the decoding."""
    if node.tag:  # an explicit tag
        tag = _short_tag(node.tag)
        if tag == _STR or tag not in (_INT, _FLOAT, _BOOL, _NULL):
            return tag, node.value
        rtag, v = _resolve_plain(node.value)
        if rtag == tag:
            return rtag, v
        if tag == _FLOAT and rtag == _INT:
            return _FLOAT, float(v)
        raise _Fatal(f"yaml: cannot decode {rtag} `{node.value}` as a {tag}")
    if node.style:
        return _STR, node.value
    return _resolve_plain(node.value)


def _resolve_plain(v: str) -> tuple[str, Any]:
    if v in _NULLS:
        return _NULL, None
    if v in _BOOLS:
        return _BOOL, v.lower() == "true"
    if v in _SPECIAL_FLOATS:
        return _FLOAT, float(v.replace(".", ""))
    i = _go_int(v)
    if i is not None:
        return _INT, i
    if _FLOAT_RE.match(v.replace("_", "")):
        return _FLOAT, float(v.replace("_", ""))
    return _STR, v


class _Fatal(Exception):
    """An error that stops yaml.v3's decoding (an unmarshaler's own error)."""


def _is_merge(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.value == "<<" and not node.style and (
        not node.tag or node.tag == "tag:yaml.org,2002:merge")


def _key_value(node: yaml.Node) -> str:
    """A yaml.v3 node's Value: the text of a scalar, empty for a collection."""
    return node.value if isinstance(node, yaml.ScalarNode) else ""


def _pos(node: Optional[yaml.Node]) -> tuple[int, int]:
    if node is None:
        return 0, 0
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Decoder:
    """Decodes the node tree into plain values, gathering yaml.v3's type errors (``terrors``)."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.terrors: list[str] = []

    def terror(self, node: yaml.Node, into: str) -> None:
        if isinstance(node, yaml.MappingNode) and self.pairs(node) is None:
            return  # yaml.v3 checks a mapping's keys before what it is decoded into
        if isinstance(node, yaml.ScalarNode):
            tag = _resolve(node)[0]
            v = node.value
            shown = f" `{v[:7]}...`" if len(v) > 10 else f" `{v}`"
        else:
            tag, shown = (_SEQ if isinstance(node, yaml.SequenceNode) else _MAP), ""
            if node.tag and not node.tag.startswith("tag:yaml.org,2002:"):
                tag = node.tag
        self.terrors.append(f"line {_pos(node)[0]}: cannot unmarshal {tag}{shown} into {into}")

    def is_null(self, node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and _resolve(node)[0] == _NULL

    def string(self, node: yaml.Node) -> Optional[str]:
        if self.is_null(node):
            return ""
        if isinstance(node, yaml.ScalarNode):
            return node.value  # any scalar's text (yaml.v3), once its tag is checked by is_null
        self.terror(node, "string")
        return None

    def integer(self, node: yaml.Node) -> int:
        if isinstance(node, yaml.ScalarNode):
            tag, v = _resolve(node)
            if tag == _NULL:
                return 0
            if tag == _INT and -(1 << 63) <= v < (1 << 63):
                return v
            if tag == _FLOAT and v == v and abs(v) < 2.0 ** 63:
                return int(v)
        self.terror(node, "int")
        return 0

    def duration(self, node: yaml.Node) -> float:
        """model.Duration: decoded as a string by its own unmarshaler, whose error ends decoding."""
        if self.is_null(node):
            return 0.0
        text = self.string(node)
        if text is None:
            return 0.0
        try:
            return parse_model_duration(text)
        except ValueError as e:
            raise _Fatal(str(e)) from None

    def string_map(self, node: yaml.Node) -> dict[str, str]:
        if self.is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.terror(node, "map[string]string")
            return {}
        out: dict[str, str] = {}
        for k, v in self.with_merges(self.pairs(node) or []):
            if self.is_null(k):
                continue
            key = self.string(k)
            val = self.string(v)
            if key is not None and val is not None:
                out[key] = val
        return out

    def pairs(self, node: yaml.MappingNode) -> Optional[list[tuple[yaml.Node, yaml.Node]]]:
        """The mapping's pairs, or None when a key is repeated: yaml.v3 reports each repetition
        and then leaves the whole mapping undecoded (nothing inside it is looked at)."""
        pairs = node.value
        found = False
        for i, (k, _) in enumerate(pairs):
            for k2, _ in pairs[i + 1:]:
                if type(k) is type(k2) and _key_value(k) == _key_value(k2):
                    found = True
                    self.terrors.append(f"line {_pos(k2)[0]}: mapping key {_go_quote(_key_value(k))} "
                                        f"already defined at line {_pos(k)[0]}")
        return None if found else pairs

    def with_merges(self, pairs: list[tuple[yaml.Node, yaml.Node]]) -> Iterator[tuple[yaml.Node, yaml.Node]]:
        """The mapping's own pairs, then those its merge keys (``<<: *anchor``) bring that it
        does not set itself: yaml.v3 decodes the merged mappings last, checking them again."""
        own = [(k, v) for k, v in pairs if not _is_merge(k)]
        yield from own
        names = {_key_value(k) for k, _ in own}
        for k, v in pairs:
            if not _is_merge(k):
                continue
            for m in (v.value if isinstance(v, yaml.SequenceNode) else [v]):
                if not isinstance(m, yaml.MappingNode):
                    raise _Fatal("yaml: map merge requires map or sequence of maps as the value")
                for mk, mv in self.pairs(m) or ():
                    if _key_value(mk) not in names:
                        names.add(_key_value(mk))
                        yield mk, mv

    def fields(self, node: yaml.Node, type_name: str, known: set[str]) -> Iterator[tuple[str, yaml.Node]]:
        """A mapping read into a Go struct, in the file's order (so errors come in yaml.v3's
        order): (field, value node) for the known keys, unknown ones refused when strict; a type
        error when the node is not a mapping."""
        if self.is_null(node):
            return
        if not isinstance(node, yaml.MappingNode):
            self.terror(node, type_name)
            return
        for k, v in self.with_merges(self.pairs(node) or []):
            if self.is_null(k):
                continue  # yaml.v3 cannot name a field by a null key, and skips it
            name = self.string(k)
            if name is None:
                continue
            if name in known:
                yield name, v
            elif self.strict:
                self.terrors.append(f"line {_pos(k)[0]}: field {name} not found in type {type_name}")


_GROUP_FIELDS = {"name", "interval", "query_offset", "limit", "rules", "labels", "partial_response_strategy"}
_RULE_FIELDS = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


@dataclass
class _RawRule:
    record: str = ""
    alert: str = ""
    expr: str = ""
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    labels: dict = field(default_factory=dict)
    annotations: dict = field(default_factory=dict)
    node: Optional[yaml.Node] = None
    record_node: Optional[yaml.Node] = None
    alert_node: Optional[yaml.Node] = None
    expr_node: Optional[yaml.Node] = None


@dataclass
class _RawGroup:
    name: str = ""
    interval_s: float = 0.0
    query_offset_s: Optional[float] = None
    limit: int = 0
    labels: dict = field(default_factory=dict)
    strategy: str = ""
    strategy_node: Optional[yaml.Node] = None
    rules: list = field(default_factory=list)
    node: Optional[yaml.Node] = None


def _decode(doc: Optional[yaml.Node], dec: _Decoder, group_fields: set[str]) -> list[_RawGroup]:
    if doc is None:
        return []
    groups: list[_RawGroup] = []
    for _, gnode in dec.fields(doc, "rulefmt.RuleGroups", {"groups"}):
        groups = _decode_groups(gnode, dec, group_fields)
    return groups


def _decode_groups(gnode: yaml.Node, dec: _Decoder, group_fields: set[str]) -> list[_RawGroup]:
    if dec.is_null(gnode):
        return []
    if not isinstance(gnode, yaml.SequenceNode):
        dec.terror(gnode, "[]rulefmt.RuleGroup")
        return []
    groups = []
    for g in gnode.value:
        if dec.is_null(g):
            continue  # yaml.v3 leaves a null item out of a list of structs
        raw = _RawGroup(node=g)
        groups.append(raw)
        for key, v in dec.fields(g, "rulefmt.RuleGroup", group_fields):
            if key == "name":
                raw.name = dec.string(v) or ""
            elif key == "interval":
                raw.interval_s = dec.duration(v)
            elif key == "query_offset":
                raw.query_offset_s = None if dec.is_null(v) else dec.duration(v)
            elif key == "limit":
                raw.limit = dec.integer(v)
            elif key == "labels":
                raw.labels = dec.string_map(v)
            elif key == "partial_response_strategy":
                raw.strategy, raw.strategy_node = dec.string(v) or "", v
            elif key == "rules":
                raw.rules = _decode_rules(v, dec)
    return groups


def _decode_rules(node: yaml.Node, dec: _Decoder) -> list[_RawRule]:
    if dec.is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        dec.terror(node, "[]rulefmt.Rule")
        return []
    rules = []
    for r in node.value:
        if dec.is_null(r):
            continue
        raw = _RawRule(node=r)
        rules.append(raw)
        for key, v in dec.fields(r, "rulefmt.Rule", _RULE_FIELDS):
            if key in ("record", "alert", "expr"):
                setattr(raw, key, dec.string(v) or "")
                setattr(raw, key + "_node", v)
            elif key == "for":
                raw.for_s = dec.duration(v)
            elif key == "keep_firing_for":
                raw.keep_firing_for_s = dec.duration(v)
            elif key == "labels":
                raw.labels = dec.string_map(v)
            elif key == "annotations":
                raw.annotations = dec.string_map(v)
    return rules


# ---------------------------------------------------------------------------------------------
# Validation (rulefmt's Validate, UTF-8 name scheme as Prometheus 3 and Thanos v0.42 use).

_TEMPLATE_PREAMBLE = ("{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}"
                      "{{$externalURL := .ExternalURL}}{{$value := .Value}}")


def _template_parser():
    """``pythanos.promtemplate.parse`` when that library is present; None skips template checks."""
    try:
        from ..promtemplate import parse
    except ImportError:
        return None
    return parse if callable(parse) else None  # not the submodule of a package still being written


def _check_expr(expr: str, experimental: bool) -> Optional[str]:
    from ..promql.engine import parse
    from ..promql.errors import PromQLError
    from ..promql.experimental import refuse_experimental

    try:
        tree = parse(expr)
        if not experimental:
            refuse_experimental(expr, tree)
    except PromQLError as e:
        return str(e)
    return None


def _valid_name(name: str) -> bool:
    """Label/metric names under Prometheus 3's UTF-8 scheme: any non-empty valid UTF-8."""
    return bool(name) and _valid_utf8(name)


def _valid_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not valid UTF-8
        return False
    return True


def _where(node: Optional[yaml.Node], alt: Optional[yaml.Node] = None, *, both: bool = False) -> str:
    """rulefmt's ``line:col: `` prefix; an absent field's node is the zero node (``0:0``)."""
    line, col = _pos(node)
    if both:
        line2, col2 = _pos(alt)
        return f"{line}:{col}: {line2}:{col2}: "
    return f"{line}:{col}: "


def _validate_rule(r: _RawRule, parse_template, experimental: bool) -> list[tuple[str, str]]:
    """rulefmt's checks of one rule: (position prefix or "", message) pairs."""
    out: list[tuple[str, str]] = []
    both = _where(r.record_node, r.alert_node, both=True)
    if r.record and r.alert:
        out.append((both, "only one of 'record' and 'alert' must be set"))
    if not r.record and not r.alert:
        out.append((both, "one of 'record' or 'alert' must be set"))
    if not r.expr:
        out.append((_where(r.expr_node), "field 'expr' must be set in rule"))
    else:
        err = _check_expr(r.expr, experimental)
        if err is not None:
            out.append((_where(r.expr_node), f"could not parse expression: {err}"))
    if r.record:
        at = _where(r.record_node)
        if r.annotations:
            out.append((at, "invalid field 'annotations' in recording rule"))
        if r.for_s:
            out.append((at, "invalid field 'for' in recording rule"))
        if r.keep_firing_for_s:
            out.append((at, "invalid field 'keep_firing_for' in recording rule"))
        if not _valid_name(r.record):
            out.append((at, f"invalid recording rule name: {r.record}"))
        if "{" in r.record or "}" in r.record:
            out.append((at, f"braces present in the recording rule name; should it be in expr?: {r.record}"))
    for k, v in r.labels.items():
        if not _valid_name(k) or k == "__name__":
            out.append(("", f"invalid label name: {k}"))
        if not _valid_utf8(v):
            out.append(("", f"invalid label value: {v}"))
    for k in r.annotations:
        if not _valid_name(k):
            out.append(("", f"invalid annotation name: {k}"))
    if r.alert and parse_template is not None:
        name = "__alert_" + r.alert
        for what, d in (("label", r.labels), ("annotation", r.annotations)):
            for k, text in d.items():
                err = _template_error(parse_template, _TEMPLATE_PREAMBLE + text, name)
                if err is not None:
                    out.append(("", f"{what} {_go_quote(k)}: {err}"))
    return out


def _template_error(parse_template, text: str, name: str) -> Optional[str]:
    try:
        parse_template(text, name)
    except ValueError as e:
        go_error = getattr(e, "go_error", None)  # Go's own text, what rulefmt prints
        if go_error:
            return go_error
        msg = str(e)
        prefix = f"error parsing template {name}: "
        return msg[len(prefix):] if msg.startswith(prefix) else msg
    return None


def _validate(groups: list[_RawGroup], experimental: bool) -> list[str]:
    errs: list[str] = []
    seen: set[str] = set()
    parse_template = _template_parser()
    for g in groups:
        line, col = _pos(g.node)
        if not g.name:
            errs.append(f"{line}:{col}: Groupname must not be empty")
        if g.name in seen:
            errs.append(f'{line}:{col}: groupname: "{g.name}" is repeated in the same file')
        for k, v in g.labels.items():
            if not _valid_name(k) or k == "__name__":
                errs.append(f"invalid label name: {k}")
            if not _valid_utf8(v):
                errs.append(f"invalid label value: {v}")
        seen.add(g.name)
        for i, r in enumerate(g.rules, 1):
            name = r.alert or r.record
            for where, msg in _validate_rule(r, parse_template, experimental):
                errs.append(f"{where}group {_go_quote(g.name)}, rule {i}, {_go_quote(name)}: {msg}")
    return errs


def _strategy(g: _RawGroup) -> tuple[str, Optional[str]]:
    """Thanos' PartialResponseStrategy from the group's field: empty is ABORT, case-insensitive."""
    if g.strategy == "":
        return "ABORT", None
    up = g.strategy.upper()
    if up in PARTIAL_RESPONSE_STRATEGIES:
        return up, None
    return "ABORT", (f"failed to unmarshal {_go_quote(g.strategy)} as 'partial_response_strategy'. "
                     f"Possible values are {','.join(sorted(PARTIAL_RESPONSE_STRATEGIES))}")


# ---------------------------------------------------------------------------------------------

def parse_rules(content: str, path: str, *, thanos: bool = True,
                experimental_functions: bool = False) -> list[RuleGroup]:
    """The groups of one rule file's text; RuleFileError with every problem found. ``thanos``
    accepts the group field ``partial_response_strategy`` (a Thanos ruler); without it the
    field is unknown, as for promtool. ``experimental_functions``: the ruler's
    ``--enable-feature=promql-experimental-functions`` (else such functions are refused)."""
    try:
        doc = _first_document(content)
    except yaml.YAMLError as e:
        raise RuleFileError([f"{path}: {_yaml_syntax_error(e)}"]) from None
    dec = _Decoder(strict=True)
    try:
        raw = _decode(doc, dec, _GROUP_FIELDS if thanos else _GROUP_FIELDS - {"partial_response_strategy"})
    except _Fatal as e:
        raise RuleFileError([f"{path}: {e}"]) from None
    if dec.terrors:
        raise RuleFileError([f"{path}: yaml: unmarshal errors:\n  " + "\n  ".join(dec.terrors)])
    errs = _validate(raw, experimental_functions)
    strategies = []
    for g in raw:
        s, err = _strategy(g)
        strategies.append(s)
        if err is not None:
            line, col = _pos(g.strategy_node)
            errs.append(f'{line}:{col}: group {_go_quote(g.name)}: {err}')
    if errs:
        raise RuleFileError([f"{path}: {e}" for e in errs])
    return [RuleGroup(
        name=g.name, file=path,
        rules=tuple(Rule(kind="alert" if r.alert else "record", name=r.alert or r.record, expr=r.expr,
                         for_s=r.for_s, keep_firing_for_s=r.keep_firing_for_s, labels=r.labels,
                         annotations=r.annotations, line=_pos(r.node)[0]) for r in g.rules),
        interval_s=g.interval_s or None, query_offset_s=g.query_offset_s, limit=g.limit, labels=g.labels,
        partial_response_strategy=s) for g, s in zip(raw, strategies)]


def _first_document(content: str) -> Optional[yaml.Node]:
    """The first YAML document's node tree, as yaml.v3 reads it: later documents are not
    looked at, but the tokens up to the next ``---``/``...`` are (libyaml's scanner reads
    ahead), so a token error right after the document still counts. A tab ending a line is
    whitespace to libyaml (PyYAML refuses it): such tabs are read as spaces."""
    placeholders = False
    for _ in range(1000):
        try:
            doc = next(iter(yaml.compose_all(content, Loader=_Loader)), None)
            _scan_rest_of_document(content)
            if placeholders and doc is not None:
                _restore_tabs(doc)
            return doc
        except yaml.scanner.ScannerError as e:
            fix = _tab_fix(content, e)
            if fix is None:
                raise
            at, char = fix
            placeholders |= char == _TAB_IN_SCALAR
            content = content[:at] + char + content[at + 1:]
    raise AssertionError("unreachable")


_TAB_IN_SCALAR = "\ue009"  # a tab inside a plain scalar, while PyYAML reads it


def _tab_fix(content: str, e: yaml.scanner.ScannerError) -> Optional[tuple[int, str]]:
    """A tab PyYAML refuses where libyaml takes it: at the end of a line or between tokens it is
    whitespace (a space here); inside a plain scalar it is part of the text (a placeholder put
    back afterwards). A tab in a line's indentation stays an error, as for libyaml."""
    mark = e.problem_mark
    if mark is None or not (e.problem or "").startswith("found character '\\t'"):
        return None
    i = mark.index
    if i >= len(content) or content[i] != "\t":
        return None
    line_start = content.rfind("\n", 0, i) + 1
    before = content[line_start:i].rstrip(" \t")
    if not before.strip(" -"):
        return None  # indentation
    rest = content[i:].split("\n", 1)[0].lstrip(" \t\r")
    if rest == "" or rest.startswith("#") or before[-1] in ":-,[{?" or re.match(r":(\s|$)", rest) or \
            before.split()[-1][:1] in ("!", "&"):  # after a tag or an anchor
        return i, " "
    return i, _TAB_IN_SCALAR


def _restore_tabs(node: yaml.Node) -> None:
    stack = [node]
    seen: set[int] = set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, yaml.ScalarNode):
            n.value = n.value.replace(_TAB_IN_SCALAR, "\t")
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack.extend((k, v))


_OPENS = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
          yaml.FlowSequenceStartToken)
_CLOSES = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _scan_rest_of_document(content: str) -> None:
    """Scan the first document's tokens and peek at the token after its root node, as libyaml
    does when it looks for the document's end (with the look-ahead a possible simple key
    needs): a scanner error up to there counts."""
    depth, started = 0, False
    scanner = _Loader(content)
    try:
        while scanner.check_token():
            tok = scanner.get_token()
            if isinstance(tok, (yaml.StreamStartToken, yaml.DirectiveToken, yaml.DocumentStartToken)) and \
                    not started:
                continue
            if isinstance(tok, (yaml.StreamEndToken, yaml.DocumentEndToken, yaml.DocumentStartToken)):
                return
            started = True
            if isinstance(tok, _OPENS):
                depth += 1
            elif isinstance(tok, _CLOSES):
                depth -= 1
            if depth <= 0 and not isinstance(tok, (yaml.AnchorToken, yaml.TagToken)):
                scanner.peek_token()
                return
    finally:
        scanner.dispose()


# PyYAML's wording of a syntax error -> libyaml's (which yaml.v3 prints), by context and problem.
_LIBYAML_WORDS = (
    ("while parsing a block collection", "expected <block end>", "did not find expected '-' indicator"),
    ("while parsing a block mapping", "expected <block end>", "did not find expected key"),
    ("", "expected the node content", "did not find expected node content"),
    ("", "expected alphabetic or numeric character", "did not find expected alphabetic or numeric character"),
    ("", "sequence entries are not allowed here", "block sequence entries are not allowed in this context"),
    ("while parsing a flow sequence", "expected ',' or ']'", "did not find expected ',' or ']'"),
    ("while parsing a flow mapping", "expected ',' or '}'", "did not find expected ',' or '}'"),
    ("", "mapping values are not allowed here", "mapping values are not allowed in this context"),
    ("", "found character '\\t' that cannot start any token", "found character that cannot start any token"),
    ("", "found character", "found character that cannot start any token"),
)


def _yaml_syntax_error(e: yaml.YAMLError) -> str:
    """A YAML syntax error as yaml.v3 prints it: ``yaml: line N: <libyaml's problem>``, the line
    being the context's (0-based, one more for scanner errors) or else the problem's."""
    ctx, prob = getattr(e, "context_mark", None), getattr(e, "problem_mark", None)
    context, problem = getattr(e, "context", None) or "", getattr(e, "problem", None) or str(e)
    alias = re.match(r"found undefined alias '(.*)'$", problem)
    if alias:  # yaml.v3 says so while resolving, without a line
        return f"yaml: unknown anchor '{alias.group(1)}' referenced"
    for want_ctx, want_problem, words in _LIBYAML_WORDS:
        if context.startswith(want_ctx) and problem.startswith(want_problem):
            problem = words
            break
    scanner = 1 if isinstance(e, yaml.scanner.ScannerError) else 0
    tab_line = _tab_after_plain_scalar(prob) if problem.startswith("found character") else 0
    if tab_line:  # libyaml finds it while still scanning the plain scalar of the line before
        return f"yaml: line {tab_line}: found a tab character that violates indentation"
    line = 0
    if ctx is not None and ctx.line != 0:
        line = ctx.line + scanner
    elif prob is not None and prob.line != 0:
        line = prob.line + scanner
    return f"yaml: line {line}: {problem}" if line else f"yaml: {problem}"


def _tab_after_plain_scalar(mark) -> int:
    """The 1-based line of the plain scalar a tab-indented line would continue (libyaml's
    "tab character that violates indentation"), or 0 if that is not the case."""
    buf = getattr(mark, "buffer", None)
    if mark is None or not buf or mark.pointer >= len(buf) or buf[mark.pointer] != "\t":
        return 0
    lines = buf.split("\n")
    if lines[mark.line][:mark.column].strip(" \t"):
        return 0  # not in the indentation
    for n in range(mark.line - 1, -1, -1):
        text = lines[n].split(" #")[0].rstrip()
        if text:
            return n + 1 if not text.endswith((":", "-", "|", ">", "[", "{", ",")) else 0
    return 0


def load_file(path: str, *, thanos: bool = True, experimental_functions: bool = False) -> list[RuleGroup]:
    """One rule file's groups (RuleFileError names the file on any problem, unreadable included)."""
    if os.path.isdir(path):
        raise RuleFileError([f"{path}: read {os.path.normpath(path)}: is a directory"])
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RuleFileError([f"{path}: open {path}: {(e.strerror or str(e)).lower()}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:  # libyaml's words for the three cases
        what = {"invalid start byte": "invalid leading UTF-8 octet",
                "unexpected end of data": "incomplete UTF-8 octet sequence"}.get(e.reason,
                                                                                 "invalid trailing UTF-8 octet")
        raise RuleFileError([f"{path}: yaml: {what}"]) from None
    return parse_rules(text, path, thanos=thanos, experimental_functions=experimental_functions)


def load_files(patterns: Sequence[str], *, thanos: bool = True,
               experimental_functions: bool = False) -> list[RuleGroup]:
    """Groups of every file the glob patterns match (Go's filepath.Glob: sorted, dot files
    included; a file matched twice is read once), in order. A directory matched is an error, as
    in thanos rule. Every problem in every file is gathered into one RuleFileError."""
    files: list[str] = []
    for pat in patterns:
        for fn in sorted(glob.glob(pat, include_hidden=True)):
            if fn not in files:
                files.append(fn)
    groups: list[RuleGroup] = []
    errors: list[str] = []
    for fn in files:
        try:
            groups.extend(load_file(fn, thanos=thanos, experimental_functions=experimental_functions))
        except RuleFileError as e:
            errors.extend(e.errors)
    if errors:
        raise RuleFileError(errors)
    return groups
