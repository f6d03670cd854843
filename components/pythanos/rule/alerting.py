"""Alerting rules: the alert state machine of Prometheus 3.9.1 (``rules/alerting.go``).

Each evaluation turns the query's vector into alert instances keyed by their label set (the
series' labels without ``__name__``, overridden by the rule's expanded labels, plus
``alertname``). An instance goes inactive -> pending -> firing once it has been active for
``for``; when its series disappears a firing alert stays firing for ``keep_firing_for``, then is
resolved (kept 15 minutes for notification, then forgotten); a pending one is dropped at once.
Once the rule is "restored" (``for`` state read back after a restart), each evaluation yields
``ALERTS{alertstate=...}`` = 1 and ``ALERTS_FOR_STATE`` = active-since (unix seconds) per active
instance.

Times are integer nanoseconds (0: unset), as Go's ``time.Time`` keeps them, so that the values
written (``ALERTS_FOR_STATE``) and the timestamps sent equal Prometheus'.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Awaitable, Callable, Optional

from .state import AlertState

log = logging.getLogger(__name__)

__all__ = ["Alert", "AlertingRule", "LabelKey", "ALERTS", "ALERTS_FOR_STATE", "RESOLVED_RETENTION_NS",
           "ERR_DUPLICATE_ALERT", "expand_texts"]

ALERTS = "ALERTS"
ALERTS_FOR_STATE = "ALERTS_FOR_STATE"
RESOLVED_RETENTION_NS = 15 * 60 * 10**9
ERR_DUPLICATE_ALERT = "vector contains metrics with the same labelset after applying alert labels"

#: states in Prometheus' order (the highest wins for a rule's state)
INACTIVE, PENDING, FIRING = 1, 2, 3
STATE_NAMES = {0: "unknown", INACTIVE: "inactive", PENDING: "pending", FIRING: "firing"}

LabelKey = tuple[tuple[str, str], ...]
#: an appended sample: sorted label pairs, timestamp ms, value
OutSample = tuple[LabelKey, int, float]
QueryFn = Callable[[str, int], Awaitable[list[tuple[dict[str, str], float]]]]
BlockingQueryFn = Callable[[str, int], list[tuple[dict[str, str], float]]]

from ..promtemplate import expand_alert as _expand_alert


def _key(labels: dict[str, str]) -> LabelKey:
    # an empty value deletes the label, as Go's labels.Builder.Set does
    return tuple(sorted((k, v) for k, v in labels.items() if v != ""))


def _ns_to_s(ns: int) -> Optional[float]:
    return ns / 1e9 if ns else None


@dataclass
class Alert:
    """One alert instance (Prometheus' ``rules.Alert``); times in ns, 0 = unset."""

    labels: dict[str, str]
    annotations: dict[str, str]
    state: int
    value: float
    active_at: int = 0
    fired_at: int = 0
    resolved_at: int = 0
    last_sent_at: int = 0
    valid_until: int = 0
    keep_firing_since: int = 0

    def needs_sending(self, ts: int, resend_delay_ns: int) -> bool:
        """Pending never; resolved since the last send always; else once per resend delay."""
        if self.state == PENDING:
            return False
        if self.resolved_at > self.last_sent_at:
            return True
        return self.last_sent_at + resend_delay_ns < ts

    def snapshot(self) -> AlertState:
        return AlertState(labels=dict(self.labels), annotations=dict(self.annotations),
                          state=STATE_NAMES[self.state], active_at=_ns_to_s(self.active_at),
                          fired_at=_ns_to_s(self.fired_at), resolved_at=_ns_to_s(self.resolved_at),
                          last_sent_at=_ns_to_s(self.last_sent_at), valid_until=_ns_to_s(self.valid_until),
                          keep_firing_since=_ns_to_s(self.keep_firing_since), value=self.value)


def expand_texts(texts: list[tuple[str, str]], *, alertname: str, labels: dict[str, str],
                 external_labels: dict[str, str], external_url: str, value: float, ts_ms: int,
                 query: Optional[BlockingQueryFn]) -> list[tuple[str, str]]:
    """Expand label/annotation templates of one sample (blocking: run it in a worker thread).

    Errors come back as Prometheus' ``<error expanding template: ...>`` text from
    ``expand_alert``.
    """
    out = []
    for k, text in texts:
        if "{{" not in text:
            out.append((k, text))  # text without actions renders as itself
            continue
        out.append((k, _expand_alert(text, name=alertname, labels=labels, external_labels=external_labels,
                                     external_url=external_url, value=value, timestamp_ms=ts_ms, query=query)))
    return out


class AlertingRule:
    """One ``alert:`` rule and its active alerts."""

    def __init__(self, name: str, expr: str, *, for_s: float = 0.0, keep_firing_for_s: float = 0.0,
                 labels: Optional[dict[str, str]] = None, annotations: Optional[dict[str, str]] = None,
                 external_labels: Optional[dict[str, str]] = None, external_url: str = "",
                 restored: bool = False, source=None) -> None:
        self.name = name
        self.expr = expr
        self.hold_ns = round(for_s * 1e9)
        self.keep_firing_for_ns = round(keep_firing_for_s * 1e9)
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url
        self.restored = restored
        self.source = source  # the rulefile.Rule this came from
        self.active: dict[LabelKey, Alert] = {}
        self.health = "unknown"
        self.last_error = ""
        self.evaluation_time_s = 0.0
        self.last_evaluation = 0.0  # unix seconds of the last evaluation's start, 0: never
        self.last_ok_ts = 0  # the slot (ns) of the last evaluation that succeeded, 0: none yet
        self.query_failed = False  # the last evaluation failed in its query (not in its results)
        self.bridging = False  # its last known alerts are being sent while its query fails (group.py)

    kind = "alert"

    def _needs_expansion(self) -> bool:
        return any("{{" in t for t in (*self.labels.values(), *self.annotations.values()))

    async def eval(self, ts: int, query_offset_ns: int, query: QueryFn, limit: int = 0,
                   blocking_query: Optional[BlockingQueryFn] = None) -> list[OutSample]:
        """One evaluation at ``ts`` (ns); returns ``ALERTS``/``ALERTS_FOR_STATE`` samples (once
        restored). Raises on a query error, a duplicate label set or an exceeded ``limit``."""
        qt_ms = (ts - query_offset_ns) // 10**6
        self.query_failed = True
        res = await query(self.expr, ts - query_offset_ns)
        self.query_failed = False
        ts_ms = ts // 10**6
        # labels/annotations of every sample; templates expanded off the event loop
        texts = [("L", k, v) for k, v in self.labels.items()] + [("A", k, v) for k, v in self.annotations.items()]
        pairs = [(f"{t}{k}", v) for t, k, v in texts]

        def expand_all() -> list[list[tuple[str, str]]]:
            return [expand_texts(pairs, alertname=self.name, labels=lb, external_labels=self.external_labels,
                                 external_url=self.external_url, value=v, ts_ms=ts_ms, query=blocking_query)
                    for lb, v in res]

        if not res or not self._needs_expansion():
            expanded = [pairs for _ in res]
        elif any("query" in t for _, t in pairs):
            # the template's query function waits on this event loop: expand in a thread
            expanded = await asyncio.to_thread(expand_all)
        else:  # no query: expanding here costs less than the hand-over to a thread
            expanded = expand_all()

        new: dict[LabelKey, Alert] = {}
        for (lb, v), exp in zip(res, expanded):
            lbs = {k: val for k, val in lb.items() if k != "__name__"}
            ann: dict[str, str] = {}
            for k, text in exp:
                if k[0] == "L":
                    lbs[k[1:]] = text
                else:
                    ann[k[1:]] = text
            lbs["alertname"] = self.name
            key = _key(lbs)
            if key in new:
                raise RuntimeError(ERR_DUPLICATE_ALERT)
            new[key] = Alert(labels=dict(key), annotations=dict(sorted(ann.items())), state=PENDING,
                             value=v, active_at=ts)

        for key, a in new.items():
            cur = self.active.get(key)
            if cur is not None and cur.state != INACTIVE:
                cur.value = a.value
                cur.annotations = a.annotations
                continue
            self.active[key] = a

        out: list[OutSample] = []
        n_active = 0
        for key, a in list(self.active.items()):
            if key not in new:
                keep_firing = False
                if a.state == FIRING and self.keep_firing_for_ns > 0:
                    if not a.keep_firing_since:
                        a.keep_firing_since = ts
                    keep_firing = ts - a.keep_firing_since < self.keep_firing_for_ns
                if a.state == PENDING or (a.resolved_at and ts - a.resolved_at > RESOLVED_RETENTION_NS):
                    del self.active[key]
                if a.state != INACTIVE and not keep_firing:
                    a.state = INACTIVE
                    a.resolved_at = ts
                if not keep_firing:
                    continue
            else:
                a.keep_firing_since = 0
            n_active += 1
            if a.state == PENDING and ts - a.active_at >= self.hold_ns:
                a.state = FIRING
                a.fired_at = ts
            if self.restored:
                out.append((self._series(ALERTS, a, STATE_NAMES[a.state]), qt_ms, 1.0))
                out.append((self._series(ALERTS_FOR_STATE, a, None), qt_ms, float(a.active_at // 10**9)))

        if limit > 0 and n_active > limit:
            self.active = {}
            raise RuntimeError(f"exceeded limit of {limit} with {n_active} alerts")
        return out

    def _series(self, metric: str, a: Optional[Alert], alertstate: Optional[str]) -> LabelKey:
        lb = dict(self.labels)
        if a is not None:
            lb.update(a.labels)
        lb["__name__"] = metric
        lb["alertname"] = self.name
        if alertstate is not None:
            lb["alertstate"] = alertstate
        return _key(lb)

    def for_state_matchers(self) -> dict[str, str]:
        """Label equalities selecting this rule's ``ALERTS_FOR_STATE`` series (before expansion,
        as Prometheus' ``QueryForStateSeries``)."""
        return dict(self._series(ALERTS_FOR_STATE, None, None))

    def state(self) -> int:
        """The highest state of the active alerts; 0 (unknown) before the first evaluation."""
        if not self.last_evaluation:
            return 0
        return max((a.state for a in self.active.values()), default=INACTIVE)

    def alerts_to_send(self, ts: int, resend_delay_ns: int, interval_ns: int) -> list[Alert]:
        """Alerts due for (re)sending; marks them sent and valid for 4 x max(interval, resend)."""
        out = []
        for a in self.active.values():
            if a.needs_sending(ts, resend_delay_ns):
                a.last_sent_at = ts
                a.valid_until = ts + 4 * max(interval_ns, resend_delay_ns)
                out.append(replace(a, labels=dict(a.labels)))
        return out

    def active_alerts(self) -> list[Alert]:
        """Alerts not resolved (what ``/api/v1/alerts`` lists)."""
        return [a for a in self.active.values() if not a.resolved_at]

    def copy_state_from(self, other: "AlertingRule") -> None:
        self.active.update(other.active)
        self.last_ok_ts = max(self.last_ok_ts, other.last_ok_ts)
