"""Prometheus relabelling, as Thanos' ``--selector.relabel-config`` uses it.

Semantics are those of Prometheus' ``model/relabel/relabel.go`` at v3.9 (module
v0.309.1, the one Thanos v0.42 builds against), parsed the way Thanos'
``block.ParseRelabelConfig`` does: YAML decoded like ``yaml.v2``'s non-strict
``Unmarshal`` (unknown keys are ignored, scalars keep their raw text), then each
entry validated with UTF-8 label names. The store gateway and the compactor use
the result to pick the blocks they own (``keep``/``drop``/``hashmod`` of the
external labels); every action is implemented so other users can share it.

Regexes are Go's, compiled as ``relabel.NewRegexp`` does (``^(?s:regex)$``) and run in
linear time on RE2 by :mod:`pythanos.goregexp`. Label handling replays ``labels.Builder`` (a sorted base,
an ordered list of additions, a list of deletions) so ``labelmap`` collisions
resolve in the same order as in Go.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Collection, Iterable, Mapping, Sequence

import yaml

from pythanos.errors import ConfigError
from pythanos.goregexp import Regexp, compile_anchored, expand

__all__ = [
    "ACTIONS", "SELECTOR_ACTIONS", "RelabelConfig", "parse_relabel_config", "process", "apply", "hashmod",
]

ACTIONS = ("replace", "keep", "drop", "keepequal", "dropequal", "hashmod", "labelmap",
           "labeldrop", "labelkeep", "lowercase", "uppercase")
# Thanos' block.SelectorSupportedRelabelActions: what --selector.relabel-config accepts.
SELECTOR_ACTIONS = frozenset({"keep", "drop", "hashmod"})

_DEFAULT_REGEX = "(.*)"
_DEFAULT_REPLACEMENT = "$1"
_DEFAULT_SEPARATOR = ";"
_NEEDS_TARGET = ("replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal")
_CASE_OR_EQUAL = ("lowercase", "uppercase", "keepequal", "dropequal")
_LEGACY_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# relabel.go's relabelTargetLegacy ``^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`` rewritten
# without nested ambiguous repetition (same language, no exponential backtracking in ``re``).
_TARGET_LEGACY = re.compile(r"(?:[a-zA-Z_]|\$(?:\{\w+\}|\w))(?:\w|\$(?:\{\w+\}|\w))*", re.ASCII)


@dataclass(frozen=True)
class RelabelConfig:
    """One relabel rule; field names and defaults as in Prometheus' YAML.

    ``regex`` None means "not given" (the default ``(.*)``): Prometheus tells the
    default apart from an explicit regex, and keepequal/dropequal reject the latter.
    ``source_labels`` None likewise differs from an explicit empty list for
    labeldrop/labelkeep. ``name_validation`` is ``"utf8"`` (Thanos, Prometheus 3)
    or ``"legacy"``.
    """

    source_labels: tuple[str, ...] | None = None
    separator: str = _DEFAULT_SEPARATOR
    regex: str | None = None
    modulus: int = 0
    target_label: str = ""
    replacement: str = _DEFAULT_REPLACEMENT
    action: str = "replace"
    name_validation: str = "utf8"
    pattern: Regexp = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.source_labels is not None and not isinstance(self.source_labels, tuple):
            object.__setattr__(self, "source_labels", tuple(self.source_labels))
        # ValueError with Go's text ("error parsing regexp: ...") for a bad one
        object.__setattr__(self, "pattern", compile_anchored(
            _DEFAULT_REGEX if self.regex is None else self.regex))

    def validate(self) -> None:
        """Prometheus' ``Config.Validate``, same checks in the same order; raises ValueError."""
        a, target, repl = self.action, self.target_label, self.replacement
        if a == "":
            raise ValueError("relabel action cannot be empty")
        if a not in ACTIONS:
            raise ValueError(f"unknown relabel action {_go_quote(a)}")
        if self.modulus == 0 and a == "hashmod":
            raise ValueError("relabel configuration for hashmod requires non-zero modulus")
        if a in _NEEDS_TARGET and target == "":
            raise ValueError(f"relabel configuration for {a} action requires 'target_label' value")
        if self.name_validation not in ("utf8", "legacy"):
            raise ValueError("unknown relabel config name validation method specified, must be either "
                             f"'', 'legacy' or 'utf8', got {self.name_validation}")
        valid = self._valid_name
        bad_target = f"{_go_quote(target)} is invalid 'target_label' for {a} action"
        if a == "replace" and "$" not in target and not valid(target):
            raise ValueError(bad_target)
        if a == "replace" and "$" in target and not self._valid_name_with_vars(target):
            raise ValueError(bad_target)
        if a in _CASE_OR_EQUAL and not valid(target):
            raise ValueError(bad_target)
        if a in _CASE_OR_EQUAL and repl != _DEFAULT_REPLACEMENT:
            raise ValueError(f"'replacement' can not be set for {a} action")
        if a == "labelmap" and not self._valid_name_with_vars(repl):
            raise ValueError(f"{_go_quote(repl)} is invalid 'replacement' for {a} action")
        if a == "hashmod" and not valid(target):
            raise ValueError(bad_target)
        if a in ("dropequal", "keepequal") and (
                self.regex is not None or self.modulus != 0 or self.separator != _DEFAULT_SEPARATOR
                or repl != _DEFAULT_REPLACEMENT):
            raise ValueError(f"{a} action requires only 'source_labels' and `target_label`, and no other fields")
        if a in ("labeldrop", "labelkeep") and (
                self.source_labels is not None or target != "" or self.modulus != 0
                or self.separator != _DEFAULT_SEPARATOR or repl != _DEFAULT_REPLACEMENT):
            raise ValueError(f"{a} action requires only 'regex', and no other fields")

    def _valid_name(self, name: str) -> bool:
        if self.name_validation == "legacy":
            return _LEGACY_NAME.fullmatch(name) is not None
        return _valid_utf8_name(name)

    def _valid_name_with_vars(self, name: str) -> bool:
        """A target/replacement template: UTF-8 allows ``$`` anyway; legacy has its own pattern."""
        if self.name_validation == "legacy":
            return _TARGET_LEGACY.fullmatch(name) is not None
        return _valid_utf8_name(name)


def parse_relabel_config(text: str, where: str, *, actions: Collection[str] | None = None,
                         name_validation: str = "utf8") -> list[RelabelConfig]:
    """Parse and validate a YAML list of relabel configs (empty text: none).

    ``actions`` restricts the allowed actions (Thanos passes ``SELECTOR_ACTIONS`` for
    ``--selector.relabel-config``; None allows all). Errors are ``ConfigError`` (a
    ``UserError``) starting with ``where`` and naming the list index of the bad entry.
    """
    if not text.strip():
        return []
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: parsing relabel configuration: {_one_line(e)}") from None
    if root is None or _is_null(root):
        return []
    if not isinstance(root, yaml.SequenceNode):
        raise ConfigError(f"{where}: parsing relabel configuration: {_type_error(root, '[]*relabel.Config')}")
    # Go decodes the whole list, then validates each entry, then checks the allowed actions.
    configs: list[RelabelConfig] = []
    for i, item in enumerate(root.value):
        try:
            configs.append(_decode_entry(item, name_validation))
        except ValueError as e:
            raise ConfigError(f"{where}: relabel config at index {i}: {e}") from None
    for i, cfg in enumerate(configs):
        try:
            cfg.validate()
        except ValueError as e:
            raise ConfigError(f"{where}: relabel config at index {i}: {e}") from None
    if actions is not None:
        for i, cfg in enumerate(configs):
            if cfg.action not in actions:
                raise ConfigError(f"{where}: relabel config at index {i}: unsupported relabel action: {cfg.action}")
    return configs


def process(labels: Mapping[str, str] | Iterable[tuple[str, str]],
            configs: Sequence[RelabelConfig]) -> dict[str, str] | None:
    """Apply ``configs`` in order; the new label set (sorted by name), or None when a rule
    dropped it or nothing is left (Thanos' sharding filter treats an empty result as dropped).
    Labels with an empty value count as absent, as in Prometheus."""
    b = _Builder(labels.items() if isinstance(labels, Mapping) else labels)
    for cfg in configs:
        if not _relabel(cfg, b):
            return None
    return b.labels() or None


def apply(labels: Mapping[str, str] | Iterable[tuple[str, str]],
          configs: Sequence[RelabelConfig]) -> dict[str, str] | None:
    """Prometheus' ``relabel.Process``: None only when a rule dropped the set; a set left with no
    labels is kept, empty (unlike :func:`process`)."""
    b = _Builder(labels.items() if isinstance(labels, Mapping) else labels)
    for cfg in configs:
        if not _relabel(cfg, b):
            return None
    return b.labels()


def hashmod(value: str, modulus: int) -> int:
    """Prometheus' hashmod: the last 8 bytes of the MD5 digest, big-endian, modulo ``modulus``.

    Prometheus 2.x computed ``sum64(md5)`` shifting every byte by ``(15-i)*8`` into a
    uint64; Go drops shifts of 64 or more, so that too was bytes 8..15 big-endian.
    3.x spells it ``binary.BigEndian.Uint64(hash[8:])`` "to give the same result".
    """
    digest = hashlib.md5(value.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[8:], "big") % modulus


# --- applying rules -------------------------------------------------------------------------

class _Builder:
    """``labels.Builder``: sorted base, additions in insertion order, deletions.

    Only ``labelmap`` can observe the order (two names mapping to one target: the later
    one in ``range()`` wins), and it is kept exactly.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.base = dict(sorted(dict(pairs).items()))
        self.dels = {n for n, v in self.base.items() if v == ""}
        self.adds: dict[str, str] = {}

    def get(self, name: str) -> str:
        if name in self.adds:
            return self.adds[name]
        if name in self.dels:
            return ""
        return self.base.get(name, "")

    def set(self, name: str, value: str) -> None:
        if value == "":
            self.delete(name)
        else:
            self.adds[name] = value  # an existing entry keeps its position, as in Go

    def delete(self, name: str) -> None:
        self.adds.pop(name, None)
        self.dels.add(name)

    def range(self) -> list[tuple[str, str]]:
        """A snapshot: base labels neither deleted nor re-set, then the additions."""
        snap = [(n, v) for n, v in self.base.items() if n not in self.dels and n not in self.adds]
        snap.extend(self.adds.items())
        return snap

    def labels(self) -> dict[str, str]:
        out = {n: v for n, v in self.base.items() if n not in self.dels}
        out.update(self.adds)
        return dict(sorted(out.items()))


def _relabel(cfg: RelabelConfig, b: _Builder) -> bool:
    """One rule on the builder; False when the label set is dropped."""
    val = cfg.separator.join(b.get(n) for n in cfg.source_labels or ())
    a, pat = cfg.action, cfg.pattern
    if a == "drop":
        return not pat.match(val)
    if a == "keep":
        return pat.match(val)
    if a == "dropequal":
        return b.get(cfg.target_label) != val
    if a == "keepequal":
        return b.get(cfg.target_label) == val
    if a == "replace":
        groups = pat.submatch(val)
        if groups is None:
            return True
        target = expand(cfg.target_label, groups, pat.group_index)
        if not cfg._valid_name(target):
            return True
        b.set(target, expand(cfg.replacement, groups, pat.group_index))  # an empty value deletes
    elif a == "lowercase":
        b.set(cfg.target_label, _go_lower(val))
    elif a == "uppercase":
        b.set(cfg.target_label, _go_upper(val))
    elif a == "hashmod":
        b.set(cfg.target_label, str(hashmod(val, cfg.modulus)))
    elif a == "labelmap":
        for name, value in b.range():
            groups = pat.submatch(name)
            if groups is not None:
                res = expand(cfg.replacement, groups, pat.group_index)
                # Go sets the name unchecked (even ""); a label name must be valid here.
                if cfg._valid_name(res):
                    b.set(res, value)
    elif a == "labeldrop":
        for name, _ in b.range():
            if pat.match(name):
                b.delete(name)
    elif a == "labelkeep":
        for name, _ in b.range():
            if not pat.match(name):
                b.delete(name)
    else:
        raise ValueError(f"relabel: unknown relabel action type {_go_quote(a)}")
    return True


def _go_upper(s: str) -> str:
    """``strings.ToUpper``: Unicode simple case mapping rune by rune (``ß`` stays, no ``SS``)."""
    if s.isascii():
        return s.upper()
    return "".join(_upper_rune(c) for c in s)


def _upper_rune(c: str) -> str:
    u = c.upper()
    if len(u) == 1:
        return u
    t = c.title()  # where the full uppercase is longer, the simple one equals the titlecase if any
    return t if len(t) == 1 else c


def _go_lower(s: str) -> str:
    """``strings.ToLower``: rune by rune (no final-sigma rule; ``İ`` -> ``i``)."""
    if s.isascii():
        return s.lower()
    return "".join(_lower_rune(c) for c in s)


def _lower_rune(c: str) -> str:
    low = c.lower()
    if len(low) == 1:
        return low
    return "i" if c == "\u0130" else c


def _valid_utf8_name(name: str) -> bool:
    if not name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- YAML, decoded as yaml.v2 decodes into relabel.Config ----------------------------------

_NULL_TAG = "tag:yaml.org,2002:null"
_GO_YAML_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _decode_entry(node: yaml.Node, name_validation: str) -> RelabelConfig:
    if _is_null(node):
        raise ValueError("empty entry")
    if not isinstance(node, yaml.MappingNode):
        raise ValueError(_type_error(node, "relabel.plain"))
    fields: dict[str, object] = {}
    for key, value in _flatten(node):
        if not isinstance(key, yaml.ScalarNode):
            continue
        name = key.value
        if name in ("separator", "target_label", "replacement"):
            fields[name] = _string(value)
        elif name == "regex":
            fields[name] = _string(value)  # null: the empty regex, as relabel.go's UnmarshalYAML
        elif name == "action":
            if _is_null(value):
                fields[name] = ""
            else:
                s = _string(value)
                act = _go_lower(s)
                if act not in ACTIONS:
                    raise ValueError(f"unknown relabel action {_go_quote(s)}")
                fields[name] = act
        elif name == "modulus":
            fields[name] = _uint64(value)
        elif name == "source_labels":
            fields[name] = _label_names(value)
        # Anything else is ignored: Thanos decodes with yaml.v2's non-strict Unmarshal.
    return RelabelConfig(name_validation=name_validation, **fields)  # type: ignore[arg-type]


def _flatten(node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
    """Key/value pairs in order, ``<<`` merges expanded where they stand (yaml.v2: a later
    key wins; of several merged maps the first wins)."""
    pairs: list[tuple[yaml.Node, yaml.Node]] = []
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag == _MERGE_TAG:
            sources = value.value[::-1] if isinstance(value, yaml.SequenceNode) else [value]
            for src in sources:
                if not isinstance(src, yaml.MappingNode):
                    raise ValueError(f"line {src.start_mark.line + 1}: map merge requires map or sequence of maps "
                                     "as the value")
                pairs.extend(_flatten(src))
        else:
            pairs.append((key, value))
    return pairs


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _string(node: yaml.Node) -> str:
    """A string field takes any scalar's raw text (``1.0`` stays "1.0"); null is ""."""
    if _is_null(node):
        return ""
    if not isinstance(node, yaml.ScalarNode):
        raise ValueError(_type_error(node, "string"))
    return node.value


def _uint64(node: yaml.Node) -> int:
    """yaml.v2 into a uint64: an int in range, or a float truncated toward zero."""
    if _is_null(node):
        return 0
    if isinstance(node, yaml.ScalarNode):
        number: float | int | None = None
        loader = yaml.SafeLoader("")
        try:
            if node.tag == "tag:yaml.org,2002:int":
                number = loader.construct_yaml_int(node)
            elif node.tag == "tag:yaml.org,2002:float":
                number = loader.construct_yaml_float(node)
            elif node.style is None and _GO_YAML_FLOAT.fullmatch(node.value):
                number = float(node.value)  # "1e3": a string to PyYAML, a float to yaml.v2
        finally:
            loader.dispose()
        if number is not None and 0 <= number < 1 << 64:
            return int(number)
    raise ValueError(_type_error(node, "uint64"))


def _label_names(node: yaml.Node) -> tuple[str, ...] | None:
    if _is_null(node):
        return None
    if not isinstance(node, yaml.SequenceNode):
        raise ValueError(_type_error(node, "model.LabelNames"))
    names = []
    for item in node.value:
        if _is_null(item):
            names.append("")  # yaml.v2 skips LabelName.UnmarshalYAML for null
            continue
        s = _string(item)
        if not _valid_utf8_name(s):
            raise ValueError(f"{_go_quote(s)} is not a valid label name")
        names.append(s)
    return tuple(names)


def _type_error(node: yaml.Node, into: str) -> str:
    """yaml.v2's message for a value of the wrong kind."""
    tag = node.tag
    short = "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag
    value = ""
    if isinstance(node, yaml.ScalarNode):
        value = f" `{node.value[:7]}...`" if len(node.value) > 10 else f" `{node.value}`"
    return f"line {node.start_mark.line + 1}: cannot unmarshal {short}{value} into {into}"


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
               '"': '\\"', "\\": "\\\\"}


def _go_quote(s: str) -> str:
    """Go's ``%q`` (``strconv.Quote``), for messages that match Prometheus' word for word."""
    out = ['"']
    for c in s:
        o = ord(c)
        if c in _GO_ESCAPES:
            out.append(_GO_ESCAPES[c])
        elif c == " " or c.isprintable():
            out.append(c)
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)
