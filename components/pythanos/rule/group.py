"""One rule group's evaluation loop, as Prometheus 3.9.1 ``rules/group.go`` runs it.

Timing: a group's evaluations fall on ``slot = k * interval + offset`` where ``offset`` is the
xxhash64 of the label set ``{file=<file>, name=<name>}`` modulo the interval, so groups spread
over the interval and a restarted ruler keeps the same instants. The first evaluation is the
slot after start; a slow evaluation skips the slots it overran (``missed``), counted in
``prometheus_rule_group_iterations_missed_total``. Each rule queries at ``slot - query_offset``
and its samples carry that time.

Series a rule produced last time and not this time get a stale marker (StaleNaN) at the same
timestamp; so do the series of a group that was removed or changed on reload.

The ``for`` state of alerts is restored after the second evaluation of a freshly loaded group
(``restore_for_state``), from ``ALERTS_FOR_STATE`` read through a callback.

A rule whose evaluation fails is ``err`` with the error as ``lastError``, counted in
``prometheus_rule_evaluation_failures_total{rule_group}``, and writes nothing; an alerting rule
keeps its alerts as they were. Where we differ from Prometheus (and so from Thanos): when the
query failed, or an evaluation runs past its interval, the rule's last known alerts are still
sent every ``--resend-delay``, for up to ``--for-outage-tolerance`` after its last good
evaluation (``_bridge``); Prometheus sends none, so a query outage longer than
4 x max(interval, resend delay) resolves them at the Alertmanager.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional, Sequence, Union

import xxhash

from ..promql import STALE_NAN
from .alerting import FIRING, PENDING, STATE_NAMES, AlertingRule, LabelKey, OutSample
from .recording import RecordingRule
from .state import GroupState, RuleState

log = logging.getLogger(__name__)

__all__ = ["Group", "GroupOptions", "Metrics", "group_key", "group_hash", "eval_timestamp", "ForStateReader",
           "AnyRule"]

AnyRule = Union[AlertingRule, RecordingRule]
QueryFn = Callable[[str, int], Awaitable[list[tuple[dict[str, str], float]]]]
BlockingQueryFn = Callable[[str, int], list[tuple[dict[str, str], float]]]
Appender = Callable[[list[OutSample]], Awaitable[None]]
#: (alert, rule, interval_ns, ts_ns) -> None; see Manager._notify
NotifyFn = Callable[[AlertingRule, list, int], None]
#: equality matchers, mint ms, maxt ms -> per series its labels and its last sample (t ms, value)
ForStateReader = Callable[[dict[str, str], int, int], Awaitable[list[tuple[dict[str, str], int, float]]]]


def group_key(file: str, name: str) -> str:
    """Prometheus' ``GroupKey``: the ``rule_group`` label of the group's metrics."""
    return f"{file};{name}"


def group_hash(file: str, name: str) -> int:
    """``labels.Labels{file, name}.Hash()`` as Thanos' build (slicelabels) computes it:
    xxhash64 over ``name 0xff value 0xff`` of the sorted labels."""
    h = xxhash.xxh64()
    for k, v in (("file", file), ("name", name)):
        h.update(k.encode())
        h.update(b"\xff")
        h.update(v.encode())
        h.update(b"\xff")
    return h.intdigest()


def eval_timestamp(h: int, interval_ns: int, start_ns: int) -> int:
    """The latest evaluation slot at or before ``start_ns`` (Prometheus' ``EvalTimestamp``)."""
    offset = h % interval_ns
    adj = start_ns - offset
    return adj - adj % interval_ns + offset


class Metrics:
    """Prometheus' rule-group metrics, with Thanos' ``strategy`` label (Thanos registers one set
    per partial-response strategy through a wrapping registerer)."""

    def __init__(self, registry=None) -> None:
        from prometheus_client import Counter, Gauge, Histogram, Summary

        kw = {"registry": registry} if registry is not None else {"registry": None}
        L = ["rule_group", "strategy"]
        self.eval_duration = Summary("prometheus_rule_evaluation_duration_seconds",
                                     "The duration for a rule to execute.", ["strategy"], **kw)
        self.eval_duration_hist = Histogram("prometheus_rule_evaluation_duration_histogram_seconds",
                                            "The duration for a rule to execute.", ["strategy"],
                                            buckets=(.01, .1, 1, 10), **kw)
        self.iteration_duration = Summary("prometheus_rule_group_duration_seconds",
                                          "The duration of rule group evaluations.", ["strategy"], **kw)
        self.iteration_duration_hist = Histogram("prometheus_rule_group_duration_histogram_seconds",
                                                 "The duration of rule group evaluations.", ["strategy"],
                                                 buckets=(.01, .1, 1, 10), **kw)
        self.iterations_missed = Counter(
            "prometheus_rule_group_iterations_missed",
            "The total number of rule group evaluations missed due to slow rule group evaluation.", L, **kw)
        self.iterations_scheduled = Counter(
            "prometheus_rule_group_iterations",
            "The total number of scheduled rule group evaluations, whether executed or missed.", L, **kw)
        self.eval_total = Counter("prometheus_rule_evaluations", "The total number of rule evaluations.", L, **kw)
        self.eval_failures = Counter("prometheus_rule_evaluation_failures",
                                     "The total number of rule evaluation failures.", L, **kw)
        self.group_interval = Gauge("prometheus_rule_group_interval_seconds", "The interval of a rule group.", L, **kw)
        self.last_eval_time = Gauge("prometheus_rule_group_last_evaluation_timestamp_seconds",
                                    "The timestamp of the last rule group evaluation in seconds.", L, **kw)
        self.last_duration = Gauge("prometheus_rule_group_last_duration_seconds",
                                   "The duration of the last rule group evaluation.", L, **kw)
        self.last_rule_duration_sum = Gauge(
            "prometheus_rule_group_last_rule_duration_sum_seconds",
            "The sum of time in seconds it took to evaluate each rule in the group regardless of concurrency. "
            "This should be higher than the group duration if rules are evaluated concurrently.", L, **kw)
        self.last_restore_duration = Gauge(
            "prometheus_rule_group_last_restore_duration_seconds",
            "The duration of the last alert rules alerts restoration using the `ALERTS_FOR_STATE` series.", L, **kw)
        self.group_rules = Gauge("prometheus_rule_group_rules", "The number of rules.", L, **kw)
        self.group_samples = Gauge("prometheus_rule_group_last_evaluation_samples",
                                   "The number of samples returned during the last rule group evaluation.", L, **kw)

    def per_group(self):
        return (self.iterations_missed, self.iterations_scheduled, self.eval_total, self.eval_failures,
                self.group_interval, self.last_eval_time, self.last_duration, self.group_rules, self.group_samples)

    def forget(self, key: str, strategy: str) -> None:
        """Drop a removed group's series (as Prometheus' manager does on reload)."""
        for m in self.per_group():
            try:
                m.remove(key, strategy)
            except KeyError:
                pass


@dataclass
class GroupOptions:
    """What every group of a manager shares."""

    query: Callable[[str], QueryFn]              # strategy -> async query(expr, t_ns)
    blocking_query: Callable[[str], Optional[BlockingQueryFn]]  # strategy -> query(expr, t_ms) for templates
    append: Appender
    notify: Callable[[AlertingRule, list, int], None]  # (rule, alerts due, ts_ns)
    metrics: Metrics
    resend_delay_ns: int = 60 * 10**9
    outage_tolerance_ns: int = 3600 * 10**9
    for_grace_period_ns: int = 600 * 10**9
    for_state_reader: Optional[ForStateReader] = None
    clock_ns: Callable[[], int] = time.time_ns
    stopping: list = field(default_factory=list)  # groups whose stale markers are still due (manager)


class Group:
    """A loaded rule group and its evaluation state."""

    def __init__(self, spec, rules: Sequence[AnyRule], *, interval_ns: int, query_offset_ns: int,
                 eval_file: str, opts: GroupOptions, should_restore: bool) -> None:
        self.spec = spec  # the rulefile.RuleGroup
        self.name: str = spec.name
        self.file: str = spec.file
        self.eval_file = eval_file
        self.strategy: str = (getattr(spec, "partial_response_strategy", "ABORT") or "ABORT").upper()
        self.limit: int = int(getattr(spec, "limit", 0) or 0)
        self.rules = list(rules)
        self.interval_ns = interval_ns
        self.query_offset_ns = query_offset_ns
        self.opts = opts
        self.should_restore = should_restore
        self.key = group_key(eval_file, self.name)
        self.series_prev: list[dict[LabelKey, None]] = [dict() for _ in self.rules]
        self.stale_series: list[LabelKey] = []
        self.evaluation_time_s = 0.0
        self.last_evaluation = 0.0
        self.last_eval_ts = 0
        self.mark_stale = False
        self._task: Optional[asyncio.Task] = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        m, s = opts.metrics, self.strategy.lower()
        for c in m.per_group():
            c.labels(self.key, s)
        m.group_rules.labels(self.key, s).set(len(self.rules))
        m.group_interval.labels(self.key, s).set(interval_ns / 1e9)

    # -- identity ----------------------------------------------------------------------------

    def hash(self) -> int:
        return group_hash(self.eval_file, self.name)

    def eval_timestamp(self, start_ns: int) -> int:
        return eval_timestamp(self.hash(), self.interval_ns, start_ns)

    def equals(self, other: "Group") -> bool:
        """Same group as loaded (Prometheus' ``Equals``): name, file, interval, limit, offset, rules."""
        return (self.name == other.name and self.eval_file == other.eval_file
                and self.interval_ns == other.interval_ns and self.limit == other.limit
                and self.query_offset_ns == other.query_offset_ns and self._offset_spec() == other._offset_spec()
                and [rule_identity(r) for r in self.rules] == [rule_identity(r) for r in other.rules])

    def _offset_spec(self):
        return getattr(self.spec, "query_offset_s", None)

    def copy_state(self, old: "Group") -> None:
        """Carry alerts and last-seen series over from the group this one replaces."""
        self.evaluation_time_s = old.evaluation_time_s
        self.last_evaluation = old.last_evaluation
        by_name: dict[tuple, list[int]] = {}
        for i, r in enumerate(old.rules):
            by_name.setdefault(name_and_labels(r), []).append(i)
        for i, r in enumerate(self.rules):
            idx = by_name.get(name_and_labels(r))
            if not idx:
                continue
            fi = idx.pop(0)
            self.series_prev[i] = old.series_prev[fi]
            if isinstance(r, AlertingRule) and isinstance(old.rules[fi], AlertingRule):
                r.copy_state_from(old.rules[fi])
        self.stale_series = list(old.stale_series)
        for nl, idx in by_name.items():
            for fi in idx:
                self.stale_series.extend(old.series_prev[fi])

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"rule group {self.key}")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _sleep_until(self, t_ns: int) -> bool:
        """Wait until wall time ``t_ns``; False when stopped meanwhile."""
        delay = (t_ns - self.opts.clock_ns()) / 1e9
        if delay > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
                return False
            except asyncio.TimeoutError:
                pass
        return not self._stop.is_set()

    async def run(self) -> None:
        """Evaluate on the group's slots until stopped."""
        ts = self.eval_timestamp(self.opts.clock_ns()) + self.interval_ns
        if not await self._sleep_until(ts):
            return
        tick0 = self.opts.clock_ns()  # Go's ticker starts here and ticks every interval
        await self.iteration(ts)
        restore_pending = self.should_restore
        k = 1
        while True:
            now = self.opts.clock_ns()
            if tick0 + k * self.interval_ns <= now:
                # Go's ticker holds one tick while an evaluation overruns (the next runs at once)
                # and drops the others
                k = (now - tick0) // self.interval_ns + 1
                if self._stop.is_set():
                    return
            else:
                if not await self._sleep_until(tick0 + k * self.interval_ns):
                    return
                k += 1
            missed = (self.opts.clock_ns() - ts) // self.interval_ns - 1
            if missed > 0:
                s = self.strategy.lower()
                self.opts.metrics.iterations_missed.labels(self.key, s).inc(missed)
                self.opts.metrics.iterations_scheduled.labels(self.key, s).inc(missed)
            ts += (max(missed, 0) + 1) * self.interval_ns
            await self.iteration(ts)
            if restore_pending:
                restore_pending = False
                await self.restore_for_state(self.opts.clock_ns())

    async def iteration(self, ts: int) -> None:
        """One scheduled evaluation (Prometheus' ``DefaultEvalIterationFunc``)."""
        m, s = self.opts.metrics, self.strategy.lower()
        m.iterations_scheduled.labels(self.key, s).inc()
        start = self.opts.clock_ns()
        t0 = time.perf_counter()
        await self._eval_keeping_alerts(ts)
        took = time.perf_counter() - t0
        m.iteration_duration.labels(s).observe(took)
        m.iteration_duration_hist.labels(s).observe(took)
        m.last_rule_duration_sum.labels(self.key, s).set(sum(r.evaluation_time_s for r in self.rules))
        m.last_duration.labels(self.key, s).set(took)
        m.last_eval_time.labels(self.key, s).set(start / 1e9)
        self.evaluation_time_s = took
        self.last_evaluation = start / 1e9
        self.last_eval_ts = ts

    async def _eval_keeping_alerts(self, ts: int) -> None:
        """:meth:`eval`; while it runs past an interval (a query that hangs: a querier that
        accepts connections and does not answer), the rules' last known alerts are sent as when
        their query fails (:meth:`_bridge`). Prometheus sends nothing until the evaluation ends."""
        task = asyncio.ensure_future(self.eval(ts))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.interval_ns / 1e9)
                if done:
                    break
                now = self.opts.clock_ns()
                for rule in self.rules:
                    if isinstance(rule, AlertingRule):
                        self._bridge(rule, now)
        except BaseException:
            task.cancel()
            raise
        task.result()

    async def eval(self, ts: int) -> None:
        """Evaluate every rule in order at slot ``ts`` (ns); a failing rule never stops the others."""
        m, s = self.opts.metrics, self.strategy.lower()
        query = self.opts.query(self.strategy)
        bquery = self.opts.blocking_query(self.strategy)
        samples_total = 0
        stale_t = (ts - self.query_offset_ns) // 10**6
        for i, rule in enumerate(self.rules):
            if self._stop.is_set() and self._task is not None:
                return
            m.eval_total.labels(self.key, s).inc()
            started = self.opts.clock_ns()
            t0 = time.perf_counter()
            try:
                try:
                    vec = await rule.eval(ts, self.query_offset_ns, query, self.limit, bquery)
                except Exception as e:  # noqa: BLE001 - any failure is the rule's health, never the loop's
                    rule.health, rule.last_error = "err", str(e) or type(e).__name__
                    m.eval_failures.labels(self.key, s).inc()
                    log.warning("Evaluating rule failed", extra={"group": self.name, "file": self.file,
                                                                 "rule": rule.name, "index": i, "err": rule.last_error})
                    if isinstance(rule, AlertingRule) and rule.query_failed:
                        self._bridge(rule, ts)
                    continue
                rule.health, rule.last_error = "ok", ""
                samples_total += len(vec)
                if isinstance(rule, AlertingRule):
                    rule.last_ok_ts, rule.bridging = ts, False
                    self._send(rule, ts)
                returned = {k: None for k, _, _ in vec}
                out = list(vec)
                for k in self.series_prev[i]:
                    if k not in returned:
                        out.append((k, stale_t, STALE_NAN))
                try:
                    if out:
                        await self.opts.append(out)
                except Exception as e:  # noqa: BLE001 - a storage error is reported on the rule
                    rule.health, rule.last_error = "err", str(e) or type(e).__name__
                    m.eval_failures.labels(self.key, s).inc()
                    log.warning("Rule sample appending failed", extra={"group": self.name, "rule": rule.name,
                                                                       "err": rule.last_error})
                    continue
                self.series_prev[i] = returned
            finally:
                took = time.perf_counter() - t0
                m.eval_duration.labels(s).observe(took)
                m.eval_duration_hist.labels(s).observe(took)
                rule.evaluation_time_s = took
                rule.last_evaluation = started / 1e9
        m.group_samples.labels(self.key, s).set(samples_total)
        await self.cleanup_stale_series(ts)

    def _send(self, rule: AlertingRule, ts: int) -> None:
        """Prometheus' ``sendAlerts``: the rule's alerts due at ``ts`` to the notifier."""
        due = rule.alerts_to_send(ts, self.opts.resend_delay_ns, self.interval_ns)
        if due:
            try:
                self.opts.notify(rule, due, ts)
            except Exception as e:  # noqa: BLE001 - an unreachable Alertmanager never stops evaluation
                log.warning("sending alerts failed", extra={"group": self.name, "err": str(e)})

    def _bridge(self, rule: AlertingRule, ts: int) -> None:
        """The rule's query failed (or hangs): its alerts keep their state (as in Prometheus) and, unlike
        Prometheus, the last known ones are still sent while the failures have lasted no longer
        than ``--for-outage-tolerance`` since the last good evaluation. Prometheus sends nothing,
        so every alert of a rule whose query fails resolves at the Alertmanager once its
        ``endsAt`` (4 x max(interval, resend delay)) passes, and fires again when the query
        works: a querier outage reads as 'all resolved', then 'all firing'."""
        if not rule.last_ok_ts:
            return
        if ts - rule.last_ok_ts > self.opts.outage_tolerance_ns:
            if rule.bridging:
                rule.bridging = False
                log.warning("Rule's queries have failed for longer than --for-outage-tolerance; its last known "
                            "alerts are no longer sent", extra={"group": self.name, "rule": rule.name,
                                                                 "since": rule.last_ok_ts // 10**9})
            return
        if not rule.bridging and any(a.state != PENDING for a in rule.active.values()):
            rule.bridging = True
            log.warning("Rule's query failed or hangs; its last known alerts are sent until it works again or "
                        "--for-outage-tolerance has passed", extra={"group": self.name, "rule": rule.name})
        self._send(rule, ts)

    async def cleanup_stale_series(self, ts: int) -> None:
        """Stale markers for series of rules that are gone (reload); kept until written."""
        if not self.stale_series:
            return
        t = (ts - self.query_offset_ns) // 10**6
        try:
            await self.opts.append([(k, t, STALE_NAN) for k in self.stale_series])
        except Exception as e:  # noqa: BLE001
            log.warning("Stale sample appending for previous configuration failed", extra={"err": str(e)})
            return
        self.stale_series = []

    def series_for_final_staleness(self) -> list[LabelKey]:
        """Every series this group last produced (a removed group marks them stale)."""
        out = list(self.stale_series)
        for prev in self.series_prev:
            out.extend(prev)
        return out

    # -- for-state restore -------------------------------------------------------------------

    async def restore_for_state(self, now_ns: int) -> None:
        """Prometheus' ``RestoreForState``: move each active alert's ``active_at`` as if the
        ruler had kept evaluating during an outage of up to ``--for-outage-tolerance``."""
        t0 = time.perf_counter()
        try:
            await self._restore(now_ns)
        finally:
            self.opts.metrics.last_restore_duration.labels(self.key, self.strategy.lower()).set(time.perf_counter() - t0)
            self.should_restore = False

    async def _restore(self, now_ns: int) -> None:
        o = self.opts
        maxt = now_ns // 10**6
        mint = (now_ns - o.outage_tolerance_ns) // 10**6
        for rule in self.rules:
            if not isinstance(rule, AlertingRule):
                continue
            if rule.hold_ns < o.for_grace_period_ns or o.for_state_reader is None:
                rule.restored = True
                continue
            try:
                found = await o.for_state_reader(rule.for_state_matchers(), mint, maxt)
            except Exception as e:  # noqa: BLE001
                log.error("Failed to restore 'for' state", extra={"alertname": rule.name, "stage": "Select", "err": str(e)})
                rule.restored = True
                continue
            by_labels = {}
            for lb, t_ms, v in found:
                by_labels[tuple(sorted((k, x) for k, x in lb.items() if k != "__name__"))] = (t_ms, v)
            if not by_labels:
                rule.restored = True
                continue
            for key, a in rule.active.items():
                got = by_labels.get(key)
                if got is None:
                    continue
                t_ms, v = got
                if v != v:  # stale marker (or NaN): the alert was not active
                    continue
                down_at = (t_ms // 1000) * 10**9
                restored = int(v) * 10**9
                remaining = rule.hold_ns - (down_at - restored)
                if remaining <= 0:
                    pass
                elif remaining < o.for_grace_period_ns:
                    restored = now_ns + o.for_grace_period_ns - rule.hold_ns
                else:
                    restored += now_ns - down_at
                a.active_at = restored
            rule.restored = True

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> GroupState:
        rules = []
        for r in self.rules:
            rs = RuleState(rule=r.source, health=r.health, last_error=r.last_error,
                           evaluation_time_s=r.evaluation_time_s, last_evaluation=r.last_evaluation)
            if isinstance(r, AlertingRule):
                rs.alerts = [a.snapshot() for a in r.active_alerts()]
                rs.state = STATE_NAMES[r.state()]  # "unknown" until evaluated, as Thanos' Rules API says
            else:
                rs.state = ""
            rules.append(rs)
        return GroupState(group=self.spec, interval_s=self.interval_ns / 1e9,
                          evaluation_time_s=self.evaluation_time_s, last_evaluation=self.last_evaluation, rules=rules)

    def has_firing(self) -> bool:
        return any(isinstance(r, AlertingRule) and r.state() == FIRING for r in self.rules)


def rule_identity(r: AnyRule) -> tuple:
    """What makes two loaded rules the same rule (Prometheus compares their YAML)."""
    if isinstance(r, AlertingRule):
        return ("alert", r.name, r.expr, r.hold_ns, r.keep_firing_for_ns, tuple(sorted(r.labels.items())),
                tuple(sorted(r.annotations.items())))
    return ("record", r.name, r.expr, tuple(sorted(r.labels.items())))


def name_and_labels(r: AnyRule) -> tuple:
    return (r.name, tuple(sorted(r.labels.items())))
