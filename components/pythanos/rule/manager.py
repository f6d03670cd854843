"""The ruler's rule manager: loaded groups, one evaluation task each, reloads that keep state.

As Prometheus 3.9.1 ``rules/manager.go`` under Thanos' ``pkg/rules/manager.go``:

* ``update(groups)`` keeps a group that did not change (its task goes on undisturbed); a changed
  group replaces the old one and takes over its alerts and last-seen series by rule name and
  labels; a removed group stops, and its series get stale markers two intervals later.
* Groups of the first load restore their alerts' ``for`` state after their second evaluation
  (from ``ALERTS_FOR_STATE`` through ``for_state_reader``); their ``ALERTS`` series are written
  only from then on. Groups added by later reloads start restored.
* Thanos evaluates each partial-response strategy in a manager of its own over a rewritten copy
  of the rule files under ``<data-dir>/.tmp-rules/<STRATEGY>/<file>``; that path names the group
  in metrics (``rule_group``) and seeds its evaluation offset. Given ``data_dir``, we use the same
  path, so our evaluations fall on the instants a ``thanos rule`` with the same files uses.
* Every evaluation's due alerts go to ``notify(list_of_dicts)`` in Alertmanager API v2 shape
  (pending ones never): external labels set over the alert's, ``startsAt`` the firing time,
  ``endsAt`` the resolve time or ``valid_until``, ``generatorURL`` from ``--alert.query-url``
  and ``--alert.query-template``.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import posixpath
import time
from typing import Awaitable, Callable, Optional, Sequence

from .alerting import AlertingRule
from .api import query_text
from .group import ForStateReader, Group, GroupOptions, Metrics
from .notifier import generator_url
from .recording import RecordingRule
from .state import AlertState, GroupState

log = logging.getLogger(__name__)

__all__ = ["Manager", "DEFAULT_QUERY_TEMPLATE", "generator_url", "format_am_time"]

DEFAULT_QUERY_TEMPLATE = "/graph?g0.expr={{.Expr}}&g0.tab=1"
TMP_RULE_DIR = ".tmp-rules"

QueryFn = Callable[[str, int, str], Awaitable[list[tuple[dict[str, str], float]]]]
BlockingQueryFn = Callable[[str, int, str], list[tuple[dict[str, str], float]]]
Appender = Callable[[list], Awaitable[None]]


def format_am_time(ns: int) -> str:
    """Alertmanager's wire form of a time (go-openapi ``strfmt.DateTime``: RFC 3339, milliseconds)."""
    sec, rem = divmod(ns, 10**9)
    d = _dt.datetime.fromtimestamp(sec, _dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rem // 10**6:03d}Z"


class Manager:
    """Evaluates rule groups; see the module docstring."""

    def __init__(self, *, query: QueryFn, append: Appender, notify: Optional[Callable[[list[dict]], None]] = None,
                 blocking_query: Optional[BlockingQueryFn] = None, external_labels: Optional[dict[str, str]] = None,
                 external_url: str = "", query_template: str = DEFAULT_QUERY_TEMPLATE,
                 outage_tolerance_s: float = 3600.0, for_grace_period_s: float = 600.0,
                 resend_delay_s: float = 60.0, rule_query_offset_s: float = 0.0, default_interval_s: float = 60.0,
                 registry=None, for_state_reader: Optional[ForStateReader] = None, data_dir: Optional[str] = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._query = query
        self._blocking_query = blocking_query
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url
        self.query_template = query_template
        self.default_interval_s = default_interval_s
        self.rule_query_offset_s = rule_query_offset_s
        self.data_dir = data_dir
        self._notify_fn = notify
        self.metrics = Metrics(registry)
        self.opts = GroupOptions(
            query=self._query_for, blocking_query=self._blocking_for, append=append, notify=self._notify,
            metrics=self.metrics, resend_delay_ns=round(resend_delay_s * 1e9),
            outage_tolerance_ns=round(outage_tolerance_s * 1e9), for_grace_period_ns=round(for_grace_period_s * 1e9),
            for_state_reader=for_state_reader, clock_ns=clock_ns)
        self._groups: dict[str, Group] = {}
        self._order: list[str] = []
        self._restored = False
        self._running = False
        self._done = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stalers: set[asyncio.Task] = set()

    # -- plumbing given to the groups --------------------------------------------------------

    def _query_for(self, strategy: str):
        async def q(expr: str, t_ns: int):
            return await self._query(expr, t_ns, strategy)
        return q

    def _blocking_for(self, strategy: str):
        if self._blocking_query is None:
            return None

        def q(expr: str, t_ms: int):
            return self._blocking_query(expr, t_ms, strategy)
        return q

    def _notify(self, rule: AlertingRule, alerts: list, ts: int) -> None:
        if self._notify_fn is None:
            return
        url = generator_url(self.external_url, self.query_template, rule.expr)
        out = []
        for a in alerts:
            if a.state == 2:  # pending: only firing (or resolved) alerts go out, as Thanos' notifyFunc
                continue
            labels = dict(a.labels)
            labels.update(self.external_labels)
            out.append({"labels": labels, "annotations": dict(a.annotations),
                        "startsAt": format_am_time(a.fired_at) if a.fired_at else "0001-01-01T00:00:00.000Z",
                        "endsAt": format_am_time(a.resolved_at or a.valid_until), "generatorURL": url})
        if out:
            self._notify_fn(out)

    # -- loading -----------------------------------------------------------------------------

    def eval_file(self, file: str, strategy: str) -> str:
        """The path naming a group (Thanos' rewritten copy under the data dir, when given)."""
        if not self.data_dir:
            return file
        return posixpath.normpath("/".join([self.data_dir, TMP_RULE_DIR, strategy.upper(), file]))

    def _build(self, spec, should_restore: bool) -> Group:
        rules = []
        glabels = dict(getattr(spec, "labels", None) or {})
        for r in spec.rules:
            labels = {**glabels, **dict(r.labels or {})}
            expr = query_text(r.expr)  # Prometheus queries (and links) the parsed expression's printing
            if r.kind == "alert":
                rules.append(AlertingRule(r.name, expr, for_s=r.for_s, keep_firing_for_s=r.keep_firing_for_s,
                                          labels=labels, annotations=dict(r.annotations or {}),
                                          external_labels=self.external_labels, external_url=self.external_url,
                                          restored=not should_restore, source=r))
            else:
                rules.append(RecordingRule(r.name, expr, labels=labels, source=r))
        interval = spec.interval_s if spec.interval_s else self.default_interval_s
        offset = spec.query_offset_s if spec.query_offset_s is not None else self.rule_query_offset_s
        strategy = (spec.partial_response_strategy or "ABORT").upper()
        return Group(spec, rules, interval_ns=round(interval * 1e9), query_offset_ns=round(offset * 1e9),
                     eval_file=self.eval_file(spec.file, strategy), opts=self.opts, should_restore=should_restore)

    async def update(self, groups: Sequence) -> None:
        """Replace the rule set with ``groups`` (rulefile.RuleGroup), keeping what did not change."""
        async with self._lock:
            if self._done.is_set():
                return
            should_restore = not self._restored
            new: dict[str, Group] = {}
            order: list[str] = []
            for spec in groups:
                g = self._build(spec, should_restore)
                if g.key in new:  # Prometheus keys by file;name, the later one wins
                    order.remove(g.key)
                new[g.key] = g
                order.append(g.key)
            self._restored = True
            starts = []
            for key, g in list(new.items()):
                old = self._groups.pop(key, None)
                if old is not None and old.equals(g):
                    old.spec = g.spec  # same rules; keep the old group running (and its state)
                    for r_old, r_new in zip(old.rules, g.rules):
                        r_old.source = r_new.source
                    new[key] = old
                    continue
                if old is not None:
                    await old.stop()
                    g.copy_state(old)
                starts.append(g)
            for key, old in self._groups.items():  # removed groups
                old.mark_stale = True
                await old.stop()
                self.metrics.forget(key, old.strategy.lower())
                if self._running:
                    self._stale_later(old)
            self._groups = new
            self._order = order
            if self._running:
                for g in starts:
                    g.start()

    def _stale_later(self, g: Group) -> None:
        """Stale markers for a removed group's series after two of its intervals (unless the
        manager stops first), as Prometheus does."""
        series = g.series_for_final_staleness()
        if not series:
            return

        async def later() -> None:
            try:
                await asyncio.wait_for(self._done.wait(), 2 * g.interval_ns / 1e9)
                return
            except asyncio.TimeoutError:
                pass
            g.stale_series = series
            await g.cleanup_stale_series(self.opts.clock_ns())

        t = asyncio.get_running_loop().create_task(later())
        self._stalers.add(t)
        t.add_done_callback(self._stalers.discard)

    # -- running -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start evaluating (groups loaded before are held until now, as Prometheus' ``block``)."""
        async with self._lock:
            if self._running:
                return
            self._running = True
            for key in self._order:
                self._groups[key].start()

    async def run(self) -> None:
        """Start, then wait until :meth:`stop`."""
        await self.start()
        await self._done.wait()

    async def stop(self) -> None:
        async with self._lock:
            self._done.set()
            await asyncio.gather(*(g.stop() for g in self._groups.values()), return_exceptions=True)
            for t in list(self._stalers):
                t.cancel()
            self._running = False

    # -- snapshots ---------------------------------------------------------------------------

    def groups(self) -> list[GroupState]:
        """Every group as last evaluated, in load order (the event loop's thread: consistent)."""
        return [self._groups[k].snapshot() for k in self._order if k in self._groups]

    def alerts(self) -> list[AlertState]:
        """Active (not resolved) alerts of every alerting rule."""
        out = []
        for k in self._order:
            g = self._groups.get(k)
            if g is None:
                continue
            for r in g.rules:
                if isinstance(r, AlertingRule):
                    out.extend(a.snapshot() for a in r.active_alerts())
        return out

    def group_objects(self) -> list[Group]:
        """The live groups (for tests and the component's metrics)."""
        return [self._groups[k] for k in self._order if k in self._groups]
