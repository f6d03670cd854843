"""The rulers' rule files: gathered from ConfigMaps and PrometheusRules, checked, packed into ConfigMaps.

The operator writes every rule file its rulers evaluate into ConfigMaps of its own,
``<rule StatefulSet>-rulefiles-<n>`` (as prometheus-operator does for a ThanosRuler), which the ruler pods
mount whole: the kubelet then updates the files in place and the pod's config reloader has the ruler
re-read them. A changed, added or removed rule file changes those ConfigMaps' data only, never the pod
template, so nothing rolls; only a change in the number of ConfigMaps (shards) changes the pod spec.

Sources, in the ThanosCluster's namespace (never a ConfigMap the operator manages):

* ConfigMaps named in ``ruler.ruleConfigMaps`` or selected by ``ruler.ruleSelector``: each key ending in
  ``.yaml``/``.yml`` is a file named ``<configmap>-<key>`` (keys of different ConfigMaps never clash);
* PrometheusRules (``monitoring.coreos.com/v1``) selected by the same ``ruleSelector``: ``spec.groups`` as a
  ``groups:`` file named ``<namespace>-<name>-<uid>.yaml``, prometheus-operator's name for it (an integer
  ``expr``, which its CRD allows, is written as a string).

A file that does not load (checked by the ruler's own loader, :mod:`pythanos.rule.rulefile`, with the
ruler's ``--enable-feature=promql-experimental-functions`` when its ``extraArgs`` give it) is left out and
reported (``Problem``: the object, the key and the loader's message; the handlers make it the ThanosCluster's
``RuleFiles`` condition and a Warning Event). Left out rather than written: a ruler refuses a reload when any
file is bad, so one team's broken file would freeze every other team's rule changes, and a ruler that
restarts with it does not start at all; prometheus-operator likewise skips a PrometheusRule that does not
validate. The price: a file that was good and is now broken loses its groups until it is fixed. So is a file
whose name is not a valid ConfigMap key (longer than 253 characters), one larger than a shard, or a second
file of the same name.

Shards hold at most ``MAX_SHARD_BYTES`` (512 KiB, keys and values as UTF-8) each, well under the API
server's 1 MiB per ConfigMap: files sorted by name fill shard 0, then 1, ... There is always a shard 0
(possibly empty), so the first rule file changes no pod spec either.

Pure functions; the loader is imported when first needed (it brings the PromQL parser).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from .render import MANAGED_BY, RULE_FILE_SUFFIXES
from .spec import RulerSpec, labels_match, meta, name_of, tc_spec

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MAX_SHARD_BYTES = 512 * 1024
MAX_KEY_LENGTH = 253
_KEY = re.compile(r"[-._a-zA-Z0-9]+")
EXPERIMENTAL_FEATURE = "promql-experimental-functions"

Checker = Callable[[str, str, bool], "str | None"]   # (content, source, experimental) -> error or None


@dataclass(frozen=True)
class RuleFile:
    name: str      # the key in the generated ConfigMap, the file name in the rules directory
    content: str
    source: str    # "ConfigMap team-rules, key b.yml" / "PrometheusRule node-rules": what the messages name
    ref: dict[str, Any] = field(default_factory=dict, compare=False)   # the object: an Event's subject


@dataclass(frozen=True)
class Problem:
    source: str
    message: str
    ref: dict[str, Any] = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        text = self.message if self.message.startswith(self.source) else f"{self.source}: {self.message}"
        return re.sub(r"\s*\n\s*", " ", text)   # the loader's one-per-line messages, on one line


@dataclass(frozen=True)
class RuleFiles:
    """What the rulers get: the shards' data (file name -> content) and what was left out, and why."""
    shards: tuple[dict[str, str], ...] = field(default_factory=lambda: ({},))
    problems: tuple[Problem, ...] = ()
    files: int = 0
    config_maps: int = 0
    prometheus_rules: int = 0


# ---------------------------------------------------------------------------------------------- selection

def _managed(obj: Mapping[str, Any]) -> bool:
    return (meta(obj).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY


def _in_play(obj: Mapping[str, Any], namespace: str) -> bool:
    md = meta(obj)
    return (md.get("namespace") or namespace) == namespace and not md.get("deletionTimestamp") and not _managed(obj)


def selected_config_maps(tc: Mapping[str, Any], config_maps: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The ConfigMaps whose files the rulers load: in the cluster's namespace, named in ``ruleConfigMaps``
    or selected by ``ruleSelector``, not one of ours; by name."""
    s = tc_spec(tc)
    r: RulerSpec = s.ruler
    named = set(r.rule_config_maps)
    out = {name_of(cm): cm for cm in config_maps if _in_play(cm, s.namespace) and (
        name_of(cm) in named or labels_match(r.rule_selector, meta(cm).get("labels") or {}))}
    return [out[n] for n in sorted(out)]


def selected_prometheus_rules(tc: Mapping[str, Any],
                              prometheus_rules: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The PrometheusRules ``ruleSelector`` selects in the cluster's namespace; by name."""
    s = tc_spec(tc)
    out = {name_of(p): p for p in prometheus_rules
           if _in_play(p, s.namespace) and labels_match(s.ruler.rule_selector, meta(p).get("labels") or {})}
    return [out[n] for n in sorted(out)]


def experimental(tc: Mapping[str, Any]) -> bool:
    """Whether the rulers run with the PromQL experimental functions (``extraArgs``): files using them load."""
    return any(a.startswith("--enable-feature") and EXPERIMENTAL_FEATURE in a for a in tc_spec(tc).ruler.extra_args)


# ---------------------------------------------------------------------------------------------- digests

def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def slim_config_map(body: Mapping[str, Any]) -> dict[str, Any]:
    """A ConfigMap as the operator keeps it: name, labels, deletion mark and a digest of each rule-file key
    (the contents stay in the API server and are read when they change)."""
    md = body.get("metadata") or {}
    return {"metadata": {"name": md.get("name"), "namespace": md.get("namespace"),
                         "labels": dict(md.get("labels") or {}), "deletionTimestamp": md.get("deletionTimestamp")},
            "data": {k: _sha(str(v)) for k, v in (body.get("data") or {}).items() if k.endswith(RULE_FILE_SUFFIXES)}}


def slim_prometheus_rule(body: Mapping[str, Any]) -> dict[str, Any]:
    """A PrometheusRule as the operator keeps it: name, uid, labels, deletion mark, a digest of its groups."""
    md = body.get("metadata") or {}
    groups = (body.get("spec") or {}).get("groups")
    return {"metadata": {"name": md.get("name"), "namespace": md.get("namespace"), "uid": md.get("uid"),
                         "labels": dict(md.get("labels") or {}), "deletionTimestamp": md.get("deletionTimestamp")},
            "groups": _sha(json.dumps(groups, sort_keys=True))}


def sources_digest(tc: Mapping[str, Any], slim_config_maps: Iterable[Mapping[str, Any]],
                   slim_prometheus_rules: Iterable[Mapping[str, Any]]) -> str:
    """Digest of everything the rulers' files are made of: the selected objects (slim: see above) and
    whether experimental functions are allowed. Equal digests, equal :func:`build` results."""
    cms = selected_config_maps(tc, slim_config_maps)
    prs = selected_prometheus_rules(tc, slim_prometheus_rules)
    return _sha(json.dumps({"cms": [(name_of(c), sorted(c["data"].items())) for c in cms],
                            "prs": [(name_of(p), meta(p).get("uid"), p["groups"]) for p in prs],
                            "experimental": experimental(tc)}, sort_keys=True))


# ---------------------------------------------------------------------------------------------- files

def _ref(obj: Mapping[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    md = meta(obj)
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {k: md[k] for k in ("name", "namespace", "uid") if md.get(k)}}


def config_map_files(config_maps: Sequence[Mapping[str, Any]]) -> list[RuleFile]:
    """Every ``.yaml``/``.yml`` key of the ConfigMaps, as ``<configmap>-<key>``."""
    return [RuleFile(f"{name_of(cm)}-{k}", str(v), f"ConfigMap {name_of(cm)}, key {k}", _ref(cm, "v1", "ConfigMap"))
            for cm in config_maps for k, v in sorted((cm.get("data") or {}).items()) if k.endswith(RULE_FILE_SUFFIXES)]


def prometheus_rule_yaml(pr: Mapping[str, Any]) -> str:
    """A PrometheusRule's ``spec.groups`` as a rule file (``groups:``); integer expressions as strings."""
    groups = json.loads(json.dumps((pr.get("spec") or {}).get("groups") or []))
    for g in groups:
        for r in (g.get("rules") or []) if isinstance(g, dict) else []:
            if isinstance(r, dict) and isinstance(r.get("expr"), (int, float)) and not isinstance(r["expr"], bool):
                r["expr"] = str(r["expr"])
    return yaml.safe_dump({"groups": groups}, sort_keys=False, allow_unicode=True, default_flow_style=False)


def prometheus_rule_file_name(pr: Mapping[str, Any]) -> str:
    md = meta(pr)
    parts = [md.get("namespace") or "", name_of(pr), md.get("uid") or ""]
    return "-".join(p for p in parts if p) + ".yaml"


def prometheus_rule_files(prometheus_rules: Sequence[Mapping[str, Any]]) -> list[RuleFile]:
    return [RuleFile(prometheus_rule_file_name(p), prometheus_rule_yaml(p), f"PrometheusRule {name_of(p)}",
                     _ref(p, "monitoring.coreos.com/v1", "PrometheusRule")) for p in prometheus_rules]


def load_check(content: str, source: str, experimental_functions: bool) -> str | None:
    """The ruler's own loader on one file: its message (every problem, one per line), or None."""
    from pythanos.rule.rulefile import RuleFileError, parse_rules

    try:
        parse_rules(content, source, thanos=True, experimental_functions=experimental_functions)
    except RuleFileError as e:
        return str(e)
    return None


class CachedCheck:
    """A checker remembering its verdicts by content digest (and source, which the messages name): the
    loader parses every expression and template, ~2 ms a rule, so a change of one file re-checks that file
    only. Bounded: forgets everything past ``limit`` entries."""

    def __init__(self, check: Checker = load_check, limit: int = 4096) -> None:
        self._check, self._limit = check, limit
        self._seen: dict[tuple[str, str, bool], str | None] = {}

    def __call__(self, content: str, source: str, experimental_functions: bool) -> str | None:
        key = (_sha(content), source, experimental_functions)
        if key not in self._seen:
            if len(self._seen) >= self._limit:
                self._seen.clear()
            self._seen[key] = self._check(content, source, experimental_functions)
        return self._seen[key]


def _size(name: str, content: str) -> int:
    return len(name.encode()) + len(content.encode())


def _refusal(f: RuleFile, seen: Mapping[str, str], limit: int) -> str | None:
    """Why a file cannot go into a ConfigMap at all (before its content is looked at), or None."""
    if len(f.name) > MAX_KEY_LENGTH or not _KEY.fullmatch(f.name):
        return (f"file name {f.name!r} is not a valid ConfigMap key (at most {MAX_KEY_LENGTH} characters of "
                "[-._a-zA-Z0-9])")
    if f.name in seen:
        return f"file name {f.name} is taken by {seen[f.name]}"
    if _size(f.name, f.content) > limit:
        return f"{_size(f.name, f.content)} bytes, more than the {limit} a rule file may have"
    return None


def admit(files: Sequence[RuleFile], experimental_functions: bool, check: Checker = load_check,
          limit: int = MAX_SHARD_BYTES) -> tuple[list[RuleFile], list[Problem]]:
    """The files the rulers get and the problems of those left out (see the module's docstring)."""
    ok: list[RuleFile] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for f in files:
        why = _refusal(f, seen, limit)
        if why is None:
            seen[f.name] = f.source
            why = check(f.content, f.source, experimental_functions)
        if why is None:
            ok.append(f)
        else:
            problems.append(Problem(f.source, why, f.ref))
    return ok, problems


def pack(files: Iterable[RuleFile], limit: int = MAX_SHARD_BYTES) -> tuple[dict[str, str], ...]:
    """Files by name into shards of at most ``limit`` bytes each (every file fits one: :func:`admit`);
    always at least one shard."""
    shards: list[dict[str, str]] = [{}]
    used = 0
    for f in sorted(files, key=lambda f: f.name):
        n = _size(f.name, f.content)
        if used + n > limit and shards[-1]:
            shards.append({})
            used = 0
        shards[-1][f.name] = f.content
        used += n
    return tuple(shards)


def build(tc: Mapping[str, Any], config_maps: Iterable[Mapping[str, Any]],
          prometheus_rules: Iterable[Mapping[str, Any]], check: Checker = load_check,
          limit: int = MAX_SHARD_BYTES) -> RuleFiles:
    """The rulers' files from the namespace's ConfigMaps and PrometheusRules (whole objects)."""
    cms = selected_config_maps(tc, config_maps)
    prs = selected_prometheus_rules(tc, prometheus_rules)
    ok, problems = admit([*config_map_files(cms), *prometheus_rule_files(prs)], experimental(tc), check, limit)
    return RuleFiles(shards=pack(ok, limit), problems=tuple(problems), files=len(ok), config_maps=len(cms),
                     prometheus_rules=len(prs))


def summary(rf: RuleFiles) -> str:
    """One line for the RuleFiles condition."""
    where = f"{len(rf.shards)} ConfigMap" + ("s" if len(rf.shards) != 1 else "")
    text = (f"{rf.files} rule file{'s' if rf.files != 1 else ''} from {rf.config_maps} ConfigMap"
            f"{'s' if rf.config_maps != 1 else ''} and {rf.prometheus_rules} PrometheusRule"
            f"{'s' if rf.prometheus_rules != 1 else ''} in {where}")
    if rf.problems:
        text += (f"; left out ({len(rf.problems)}): " + "; ".join(str(p) for p in rf.problems))
    return text
