"""Thanos' Rules gRPC API (``/thanos.Rules/Rules``, server streaming): what servers, clients and
the querier share.

Servers (each sends one ``RuleGroup`` per frame, rule labels extended by the external labels,
the request's ``type`` applied; a Thanos server applies no other filter):

* :func:`provider_handler` — a ruler: groups from a callable returning plain data shaped as
  ``pythanos.rule.state.GroupState`` (attributes or dict keys; nothing of the component is
  imported), converted by :func:`group_pb`;
* :func:`handler` — any server over an async generator of ``RuleGroup``/warning strings (the
  sidecar over :func:`groups_from_json` of Prometheus' ``/api/v1/rules``, the querier's fan-out).

The querier (Thanos ``pkg/rules/rules.go`` ``GRPCClient``): :func:`gather` applies ``match[]``
(non-templated rule labels only), rule names, groups and files, merges groups of the same
file and name and de-duplicates rules that differ only by replica labels (alerting before
recording, then name, labels, query, ``for``; of equal ones the most critical state, then the
latest evaluation wins). :func:`rules_json` / :func:`alerts_json` write the ``data`` of
``/api/v1/rules`` and ``/api/v1/alerts`` as Thanos' querier marshals it.
"""
from __future__ import annotations

import calendar
import json
import math
import re
from typing import Any, AsyncIterator, Callable, Iterable, Mapping, Optional, Sequence, Union

import grpc

from .pb import rules_pb2
from .pb.types_pb2 import ABORT, WARN
from .service import RULES, RULES_SERVICE as SERVICE, StreamError, streaming_handler
from .types import labels_from_pb, labels_to_pb

__all__ = ["SERVICE", "RULES", "RulesError", "ALL", "ALERT", "RECORD", "STATES", "request_type",
           "group_pb", "groups_from_json", "extend_labels", "filter_type", "handler", "provider_handler",
           "gather", "rules_json", "alerts_json", "rule_labels", "go_value", "rfc3339nano"]

Labels = tuple[tuple[str, str], ...]

ALL, ALERT, RECORD = rules_pb2.RulesRequest.ALL, rules_pb2.RulesRequest.ALERT, rules_pb2.RulesRequest.RECORD
#: alert/rule state names (Prometheus' lower-case strings) and their enum numbers
STATES = {"unknown": rules_pb2.UNKNOWN_STATE, "inactive": rules_pb2.INACTIVE, "pending": rules_pb2.PENDING,
          "firing": rules_pb2.FIRING}
_STATE_NAMES = {v: k for k, v in STATES.items()}
_STRATEGIES = {"ABORT": ABORT, "WARN": WARN}
_STRATEGY_NAMES = {v: k for k, v in _STRATEGIES.items()}
#: Go's zero time.Time (what a never-evaluated group or rule reports) as Unix seconds
ZERO_TIME_S = -62135596800


class RulesError(StreamError):
    """An error the server answers with this gRPC code (a sidecar whose Prometheus fails: coded
    from its HTTP status as Thanos' client does)."""


def request_type(name: str) -> Optional[int]:
    """``type=alert|record`` (any case; empty: all) as the request's enum, ``None`` if neither."""
    if name == "":
        return ALL
    return {"ALL": ALL, "ALERT": ALERT, "RECORD": RECORD}.get(name.upper())


# -- values as Go writes them ------------------------------------------------------------------

def go_value(v: float) -> str:
    """Go ``strconv.FormatFloat(v, 'e', -1, 64)``: the alert's value as Prometheus and Thanos
    report it (shortest digits, two-digit exponent at least)."""
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    mant = repr(abs(v)).partition("e")[0].replace(".", "").lstrip("0").rstrip("0")
    return format(v, f".{max(len(mant) - 1, 0)}e")


def _set_time(ts, t: Optional[float]) -> None:
    """A Unix-seconds float (``None``/0: never, Go's zero time) into a Timestamp."""
    if not t:
        ts.seconds, ts.nanos = ZERO_TIME_S, 0
        return
    s = math.floor(t)
    ns = min(int(round((t - s) * 1e9)), 999_999_999)
    ts.seconds, ts.nanos = int(s), ns


_RFC3339 = re.compile(r"(-?\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def _parse_time(ts, text: str, where: str) -> None:
    """RFC 3339 (Go's time.Time JSON, nanoseconds kept) into a Timestamp."""
    m = _RFC3339.match(text or "")
    if not m:
        raise ValueError(f"{where}: cannot parse time {text!r}")
    y, mo, d, hh, mm, ss, frac, zone = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(hh), int(mm), int(ss)))
    if zone != "Z":
        off = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        secs -= off if zone[0] == "+" else -off
    ts.seconds, ts.nanos = secs, int((frac or "0").ljust(9, "0"))


def rfc3339nano(ts) -> str:
    """A Timestamp as Go's ``time.Time`` JSON in UTC (RFC3339Nano: trailing zeros dropped)."""
    days, rem = divmod(ts.seconds, 86400)
    # civil date from days since 1970-01-01 (Howard Hinnant's algorithm; any year)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    frac = f"{ts.nanos:09d}".rstrip("0")
    return (f"{year:04d}-{month:02d}-{day:02d}T{rem // 3600:02d}:{rem // 60 % 60:02d}:{rem % 60:02d}"
            + (f".{frac}" if frac else "") + "Z")


# -- plain data -> protobuf --------------------------------------------------------------------

def _get(o: Any, name: str, default: Any = None) -> Any:
    if isinstance(o, Mapping):
        return o.get(name, default)
    return getattr(o, name, default)


def _set_labels(zset, labels: Union[Mapping[str, str], Iterable[tuple[str, str]], None]) -> None:
    items = labels.items() if isinstance(labels, Mapping) else (labels or ())
    zset.SetInParent()
    zset.labels.extend(labels_to_pb(tuple(sorted((str(n), str(v)) for n, v in items))))


def group_pb(g: Any, query_text: Callable[[str], str] = lambda q: q) -> rules_pb2.RuleGroup:
    """One group in the shape of ``GroupState`` (``group`` with ``name``, ``file``, ``limit``,
    ``partial_response_strategy``; ``interval_s``, ``evaluation_time_s``, ``last_evaluation``,
    ``rules`` of ``RuleState``: ``rule`` with ``kind``, ``name``, ``expr``, ``for_s``,
    ``keep_firing_for_s``, ``labels``, ``annotations``; ``health``, ``last_error``,
    ``evaluation_time_s``, ``last_evaluation``, ``state``, ``alerts`` of ``AlertState``).
    ``query_text`` turns a rule's expression into what is reported (Thanos: Prometheus'
    printing of the parsed expression)."""
    spec = _get(g, "group")
    strategy = _STRATEGIES.get(str(_get(spec, "partial_response_strategy", "ABORT") or "ABORT").upper(), ABORT)
    out = rules_pb2.RuleGroup(name=_get(spec, "name", ""), file=_get(spec, "file", ""),
                              interval=float(_get(g, "interval_s", 0.0) or 0.0),
                              evaluation_duration_seconds=float(_get(g, "evaluation_time_s", 0.0) or 0.0),
                              limit=int(_get(spec, "limit", 0) or 0), PartialResponseStrategy=strategy)
    _set_time(out.last_evaluation, _get(g, "last_evaluation"))
    for rs in _get(g, "rules", ()) or ():
        rule = _get(rs, "rule")
        kind = _get(rule, "kind")
        common = dict(name=_get(rule, "name", ""), query=query_text(_get(rule, "expr", "")),
                      health=_get(rs, "health", "unknown") or "unknown", last_error=_get(rs, "last_error", "") or "",
                      evaluation_duration_seconds=float(_get(rs, "evaluation_time_s", 0.0) or 0.0))
        if kind == "alert":
            a = out.rules.add().alert
            a.MergeFrom(rules_pb2.Alert(state=STATES.get(_get(rs, "state", "inactive"), rules_pb2.INACTIVE),
                                        duration_seconds=float(_get(rule, "for_s", 0.0) or 0.0),
                                        keep_firing_for_seconds=float(_get(rule, "keep_firing_for_s", 0.0) or 0.0),
                                        **common))
            _set_labels(a.labels, _get(rule, "labels"))
            _set_labels(a.annotations, _get(rule, "annotations"))
            _set_time(a.last_evaluation, _get(rs, "last_evaluation"))
            for al in _get(rs, "alerts", ()) or ():
                inst = a.alerts.add(state=STATES.get(_get(al, "state", ""), rules_pb2.UNKNOWN_STATE),
                                    value=go_value(_get(al, "value", 0.0)), PartialResponseStrategy=strategy)
                _set_labels(inst.labels, _get(al, "labels"))
                _set_labels(inst.annotations, _get(al, "annotations"))
                if _get(al, "active_at") is not None:
                    _set_time(inst.active_at, _get(al, "active_at"))
        elif kind == "record":
            r = out.rules.add().recording
            r.MergeFrom(rules_pb2.RecordingRule(**common))
            _set_labels(r.labels, _get(rule, "labels"))
            _set_time(r.last_evaluation, _get(rs, "last_evaluation"))
        else:
            raise ValueError(f"group {out.name!r}: rule {common['name']!r} of unknown kind {kind!r}")
    return out


def groups_from_json(data: Any, strategy: int = ABORT) -> list[rules_pb2.RuleGroup]:
    """The ``data`` of Prometheus' ``/api/v1/rules`` (a dict with ``groups``) as protobuf, as
    Thanos' sidecar reads it (its JSON field names; unknown fields ignored; every group given
    ``strategy``: Prometheus has none, Thanos says Abort for groups, leaving alerts at Warn)."""
    out = []
    for gi, g in enumerate((data or {}).get("groups") or ()):
        where = f"group {gi}"
        pg = rules_pb2.RuleGroup(name=g.get("name") or "", file=g.get("file") or "",
                                 interval=float(g.get("interval") or 0), limit=int(g.get("limit") or 0),
                                 evaluation_duration_seconds=float(g.get("evaluationTime") or 0),
                                 PartialResponseStrategy=strategy)
        _parse_time(pg.last_evaluation, g.get("lastEvaluation") or "0001-01-01T00:00:00Z", where)
        for ri, r in enumerate(g.get("rules") or ()):
            typ = str(r.get("type") or "").lower()
            common = dict(name=r.get("name") or "", query=r.get("query") or "", health=r.get("health") or "",
                          last_error=r.get("lastError") or "",
                          evaluation_duration_seconds=float(r.get("evaluationTime") or 0))
            rwhere = f"{where} rule {ri}"
            if typ == "recording":
                pr = pg.rules.add().recording
                pr.MergeFrom(rules_pb2.RecordingRule(**common))
            elif typ == "alerting":
                pr = pg.rules.add().alert
                pr.MergeFrom(rules_pb2.Alert(state=_state(r.get("state"), rwhere),
                                             duration_seconds=float(r.get("duration") or 0),
                                             keep_firing_for_seconds=float(r.get("keepFiringFor") or 0), **common))
                _set_labels(pr.annotations, r.get("annotations"))
                for a in r.get("alerts") or ():
                    # only groups are given the strategy: an alert keeps what the JSON says (none: Warn)
                    inst = pr.alerts.add(state=_state(a.get("state"), rwhere), value=str(a.get("value") or ""),
                                         PartialResponseStrategy=_STRATEGIES.get(
                                             str(a.get("partialResponseStrategy") or "WARN").upper(), WARN))
                    _set_labels(inst.labels, a.get("labels"))
                    _set_labels(inst.annotations, a.get("annotations"))
                    if a.get("activeAt"):
                        _parse_time(inst.active_at, a["activeAt"], rwhere)
            else:
                raise ValueError(f"{rwhere}: rule: unknown type field provided {r.get('type')!r}")
            _set_labels(pr.labels, r.get("labels"))
            _parse_time(pr.last_evaluation, r.get("lastEvaluation") or "0001-01-01T00:00:00Z", rwhere)
        out.append(pg)
    return out


def _state(name: Any, where: str) -> int:
    s = STATES.get(str(name or "").lower())
    if s is None:
        raise ValueError(f"{where}: unknown alertState: {name!r}")
    return s


# -- server side -------------------------------------------------------------------------------

def _rule_of(r: rules_pb2.Rule):
    return r.alert if r.WhichOneof("result") == "alert" else r.recording


def rule_labels(r: rules_pb2.Rule) -> Labels:
    return labels_from_pb(_rule_of(r).labels.labels)


def _replace_labels(r: rules_pb2.Rule, labels: Labels) -> None:
    x = _rule_of(r)
    del x.labels.labels[:]
    x.labels.SetInParent()
    x.labels.labels.extend(labels_to_pb(labels))


def extend_labels(groups: Iterable[rules_pb2.RuleGroup], external: Labels) -> None:
    """Every rule's labels with the external labels over them (an external label wins), as Thanos'
    ruler and sidecar send them; alert instances are left as they are."""
    if not external:
        return
    ext = dict(external)
    for g in groups:
        for r in g.rules:
            ls = dict(rule_labels(r))
            ls.update(ext)
            _replace_labels(r, tuple(sorted(ls.items())))


def filter_type(groups: Iterable[rules_pb2.RuleGroup], typ: int) -> list[rules_pb2.RuleGroup]:
    """The request's ``type``: other rules left out, groups kept even when left empty (Thanos'
    ruler does so)."""
    groups = list(groups)
    if typ == ALL:
        return groups
    want = "alert" if typ == ALERT else "recording"
    out = []
    for g in groups:
        f = rules_pb2.RuleGroup()
        f.CopyFrom(g)
        del f.rules[:]
        f.rules.extend(r for r in g.rules if r.WhichOneof("result") == want)
        out.append(f)
    return out


Serve = Callable[[rules_pb2.RulesRequest], AsyncIterator[Union[rules_pb2.RuleGroup, str]]]


def handler(serve: Serve) -> grpc.GenericRpcHandler:
    """``thanos.Rules/Rules`` answering with what ``serve(request)`` yields (a string is a warning
    frame)."""
    return streaming_handler(RULES, serve, lambda g: (rules_pb2.RulesResponse(warning=g) if isinstance(g, str)
                                                     else rules_pb2.RulesResponse(group=g)))


def provider_handler(groups: Callable[[], Iterable[Any]], external_labels: Callable[[], Labels],
                     query_text: Callable[[str], str] = lambda q: q,
                     group_pbs: Optional[Callable[[], Iterable[rules_pb2.RuleGroup]]] = None
                     ) -> grpc.GenericRpcHandler:
    """A ruler's Rules API: ``groups()`` returns ``GroupState``-shaped snapshots (see
    :func:`group_pb`), ``external_labels()`` the sorted label pairs added to every rule;
    ``group_pbs()``, when given, returns them already as protobuf (copies the call may change)."""

    async def serve(req: rules_pb2.RulesRequest):
        pbs = group_pbs() if group_pbs is not None else (group_pb(g, query_text) for g in groups())
        pgs = filter_type(pbs, req.type)
        extend_labels(pgs, tuple(external_labels()))
        for g in pgs:
            yield g

    return handler(serve)


# -- the querier's side ------------------------------------------------------------------------

def _templated(value: str) -> bool:
    """Whether Go's text/template would see more than one plain text node in ``value`` (Thanos
    matches ``match[]`` only against labels that are plain text)."""
    return value == "" or "{{" in value


def _matches(matcher_sets: Sequence[Sequence[Any]], labels: Labels) -> bool:
    plain = {n: v for n, v in labels if not _templated(v)}
    return all(m.matches(plain.get(m.name, "")) for ms in matcher_sets for m in ms)


def _key(r: rules_pb2.Rule) -> tuple:
    """Thanos' rule order: alerting first, then name, labels, query, ``for``."""
    x = _rule_of(r)
    alert = r.WhichOneof("result") == "alert"
    return (0 if alert else 1, x.name, rule_labels(r), x.query, x.duration_seconds if alert else 0.0)


def _ts(ts) -> tuple[int, int]:
    return ts.seconds, ts.nanos


def _dedup_rules(rules: list[rules_pb2.Rule], replica_labels: frozenset) -> list[rules_pb2.Rule]:
    for r in rules:
        ls = rule_labels(r)
        if any(n in replica_labels for n, _ in ls):
            _replace_labels(r, tuple((n, v) for n, v in ls if n not in replica_labels))
    rules = sorted(rules, key=_key)
    out: list[rules_pb2.Rule] = []
    for r in rules:
        if out and _key(out[-1]) == _key(r):
            x, y = _rule_of(out[-1]), _rule_of(r)
            if r.WhichOneof("result") == "alert":
                better = (y.state, _ts(y.last_evaluation)) > (x.state, _ts(x.last_evaluation))
            else:
                better = _ts(y.last_evaluation) > _ts(x.last_evaluation)
            if better:
                out[-1] = r
            continue
        out.append(r)
    return out


def gather(groups: Iterable[rules_pb2.RuleGroup], *, matcher_sets: Sequence[Sequence[Any]] = (),
           rule_names: Sequence[str] = (), rule_groups: Sequence[str] = (), files: Sequence[str] = (),
           replica_labels: Iterable[str] = ()) -> list[rules_pb2.RuleGroup]:
    """What the querier answers from the groups its endpoints sent (see the module docstring).
    ``matcher_sets``: parsed ``match[]`` (objects with ``name`` and ``matches(value)``), all of
    whose matchers must hold; groups left without rules by a filter are left out."""
    groups = list(groups)
    if matcher_sets:
        kept = []
        for g in groups:
            rs = [r for r in g.rules if _matches(matcher_sets, rule_labels(r))]
            if rs:
                del g.rules[:]
                g.rules.extend(rs)
                kept.append(g)
        groups = kept
    if rule_names or rule_groups or files:
        names, gnames, fnames = set(rule_names), set(rule_groups), set(files)
        kept = []
        for g in groups:
            if (gnames and g.name not in gnames) or (fnames and g.file not in fnames):
                continue
            if names:
                rs = [r for r in g.rules if _rule_of(r).name in names]
                del g.rules[:]
                g.rules.extend(rs)
            if len(g.rules):
                kept.append(g)
        groups = kept
    merged: dict[tuple[str, str], rules_pb2.RuleGroup] = {}
    for g in sorted(groups, key=lambda g: g.file + ";" + g.name):
        k = (g.file, g.name)
        if k in merged:
            merged[k].rules.extend(g.rules)
        else:
            merged[k] = g
    drop = frozenset(replica_labels)
    out = []
    for g in merged.values():
        rs = _dedup_rules(list(g.rules), drop)
        del g.rules[:]
        g.rules.extend(rs)
        out.append(g)
    return out


# -- JSON as Thanos' querier writes it -----------------------------------------------------------

def _jstr(s: str) -> str:
    """A JSON string, not yet HTML-escaped: rules_json and alerts_json escape the whole answer
    once (``<``, ``>``, ``&``, U+2028/9 can only occur inside strings)."""
    return json.dumps(s, ensure_ascii=False)


def _go_escape(out: str) -> str:
    """Go's encoding/json HTML-safe escaping of a whole document."""
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                 ("\u2029", "\\u2029")):
        if a in out:
            out = out.replace(a, b)
    return out


def _jfloat(x: float) -> str:
    from ..promql.format import _go_json_float

    return _go_json_float(float(x))


def _jlabels(zset) -> str:
    return json.dumps(dict(sorted(labels_from_pb(zset.labels))), ensure_ascii=False, separators=(",", ":"))


def _alert_json(a: rules_pb2.AlertInstance) -> str:
    parts = ['"labels":' + _jlabels(a.labels), '"annotations":' + _jlabels(a.annotations),
             '"state":' + _jstr(_STATE_NAMES.get(a.state, "unknown"))]
    if a.HasField("active_at"):
        parts.append('"activeAt":' + _jstr(rfc3339nano(a.active_at)))
    parts.append('"value":' + _jstr(a.value))
    parts.append('"partialResponseStrategy":' + _jstr(_STRATEGY_NAMES.get(a.PartialResponseStrategy, "WARN")))
    return "{" + ",".join(parts) + "}"


def _rule_json(r: rules_pb2.Rule) -> str:
    if r.WhichOneof("result") == "recording":
        x = r.recording
        parts = ['"name":' + _jstr(x.name), '"query":' + _jstr(x.query), '"labels":' + _jlabels(x.labels),
                 '"health":' + _jstr(x.health)]
        if x.last_error:
            parts.append('"lastError":' + _jstr(x.last_error))
        parts += ['"evaluationTime":' + _jfloat(x.evaluation_duration_seconds),
                  '"lastEvaluation":' + _jstr(rfc3339nano(x.last_evaluation)), '"type":"recording"']
        return "{" + ",".join(parts) + "}"
    x = r.alert
    parts = ['"state":' + _jstr(_STATE_NAMES.get(x.state, "unknown")), '"name":' + _jstr(x.name),
             '"query":' + _jstr(x.query), '"duration":' + _jfloat(x.duration_seconds),
             '"labels":' + _jlabels(x.labels), '"annotations":' + _jlabels(x.annotations),
             '"alerts":[' + ",".join(_alert_json(a) for a in x.alerts) + "]", '"health":' + _jstr(x.health)]
    if x.last_error:
        parts.append('"lastError":' + _jstr(x.last_error))
    parts += ['"evaluationTime":' + _jfloat(x.evaluation_duration_seconds),
              '"lastEvaluation":' + _jstr(rfc3339nano(x.last_evaluation)),
              '"keepFiringFor":' + _jfloat(x.keep_firing_for_seconds), '"type":"alerting"']
    return "{" + ",".join(parts) + "}"


def _group_json(g: rules_pb2.RuleGroup) -> str:
    return ('{"name":' + _jstr(g.name) + ',"file":' + _jstr(g.file)
            + ',"rules":[' + ",".join(_rule_json(r) for r in g.rules) + "]"
            + ',"interval":' + _jfloat(g.interval) + ',"evaluationTime":' + _jfloat(g.evaluation_duration_seconds)
            + ',"lastEvaluation":' + _jstr(rfc3339nano(g.last_evaluation)) + ',"limit":' + str(g.limit)
            + ',"partialResponseStrategy":' + _jstr(_STRATEGY_NAMES.get(g.PartialResponseStrategy, "WARN")) + "}")


def rules_json(groups: Sequence[rules_pb2.RuleGroup]) -> str:
    """``{"groups":[...]}`` (field order and formats of Thanos' gogo structs)."""
    return _go_escape('{"groups":[' + ",".join(_group_json(g) for g in groups) + "]}")


def alerts_json(groups: Sequence[rules_pb2.RuleGroup]) -> str:
    """``{"alerts":[...]}``: every alerting rule's alerts in group and rule order (``null`` when
    there are none, as Thanos' querier writes its nil list)."""
    alerts = [_alert_json(a) for g in groups for r in g.rules if r.WhichOneof("result") == "alert"
              for a in r.alert.alerts]
    return _go_escape('{"alerts":' + ("[" + ",".join(alerts) + "]" if alerts else "null") + "}")
