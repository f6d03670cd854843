"""Drift: does a live child object still carry what the operator renders for it? (pure; no I/O)

The operator owns the fields it applies (server-side apply, ``force``); everything else on a live object
(defaults the API server filled in, status, fields other managers own) is none of its business. So a live
object has drifted when some field of the rendered object differs from the live one:

* mappings: every rendered key must be there with a matching value (extra live keys are fine);
* lists whose rendered items are all mappings with a ``name`` (containers, env, ports, volumes, volume
  mounts: associative lists in server-side apply) match item by name, in any order, extra live items fine;
* every other list (``args``, ``command``, ...: atomic lists) must match item for item, same length;
* scalars must be equal; an empty rendered value (``{}``, ``[]``, ``""``) also matches an absent one.

A false "drifted" costs one reconcile whose applies are no-ops (a no-op server-side apply does not bump
``resourceVersion``, so it causes no new event and cannot loop); a missed drift would leave a hand edit in
place, so the comparison leans towards "drifted".
"""
from __future__ import annotations

from typing import Any, Mapping

from .spec import GROUP, PHA_KIND, TC_KIND

# Top-level keys that are not the object's content: identity, server bookkeeping, status.
_SKIP_TOP = {"apiVersion", "kind", "status"}
_SKIP_META = {"name", "namespace"}


def controller_of(obj: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(kind, name, uid) of the PrometheusHA/ThanosCluster controlling ``obj``, from its owner references."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if (ref.get("controller") and str(ref.get("apiVersion", "")).startswith(GROUP + "/")
                and ref.get("kind") in (PHA_KIND, TC_KIND) and ref.get("name") and ref.get("uid")):
            return ref["kind"], ref["name"], ref["uid"]
    return None


def _empty(v: Any) -> bool:
    return v is None or v == {} or v == [] or v == ""


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, Mapping) and "name" in i for i in items)


def _diff(want: Any, live: Any, path: str) -> str | None:
    if isinstance(want, Mapping):
        if live is None and not want:
            return None
        if not isinstance(live, Mapping):
            return path or "."
        for k, v in want.items():
            if k not in live:
                if _empty(v):
                    continue
                return f"{path}.{k}" if path else str(k)
            d = _diff(v, live[k], f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    if isinstance(want, list):
        if live is None and not want:
            return None
        if not isinstance(live, list):
            return path
        if _named(want):
            by_name = {i.get("name"): i for i in live if isinstance(i, Mapping)}
            for item in want:
                name = item["name"]
                if name not in by_name:
                    return f"{path}[{name}]"
                d = _diff(item, by_name[name], f"{path}[{name}]")
                if d:
                    return d
            return None
        if len(want) != len(live):
            return path
        for i, (w, lv) in enumerate(zip(want, live)):
            d = _diff(w, lv, f"{path}[{i}]")
            if d:
                return d
        return None
    if want == live or (_empty(want) and live is None):
        return None
    return path


def drift(desired: Mapping[str, Any], live: Mapping[str, Any]) -> str | None:
    """The path of the first rendered field that the live object does not carry (e.g.
    ``spec.replicas``, ``spec.template.spec.containers[prometheus].args``), or None when it carries them all."""
    md_want = {k: v for k, v in (desired.get("metadata") or {}).items() if k not in _SKIP_META}
    d = _diff(md_want, live.get("metadata") or {}, "metadata")
    if d:
        return d
    for k, v in desired.items():
        if k in _SKIP_TOP or k == "metadata":
            continue
        d = _diff(v, live.get(k), k)
        if d:
            return d
    return None
