"""The ruler's evaluation core (pythanos.rule: alerting, recording, group, manager, queryclient).

Unit tests drive the alert state machine and the group loop with a fake clock and an in-memory
query function: they check Prometheus' rules as written in ``rules/alerting.go``/``group.go``,
where no real peer is needed. The real-peer tests below run the same rule files on our manager
and on a real ``thanos rule`` v0.42.4 over the same data and compare what each writes.
"""
from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from pythanos.promql import is_stale_nan
from pythanos.rule.alerting import FIRING, INACTIVE, PENDING, AlertingRule
from pythanos.rule.group import eval_timestamp, group_hash
from pythanos.rule.manager import Manager, format_am_time, generator_url
from pythanos.rule.queryclient import QueryClient, QueryError, format_rfc3339nano
from pythanos.rule.recording import RecordingRule
from pythanos.rule.rulefile import Rule, RuleGroup

S = 10**9  # one second in ns
T0 = 1_700_000_000 * S


class FakeQuery:
    """An in-memory query function: ``vec`` is what every query returns (or raises)."""

    def __init__(self, vec=None):
        self.vec = vec or []
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, expr: str, t_ns: int, strategy: str = "ABORT"):
        self.calls.append((expr, t_ns))
        if isinstance(self.vec, Exception):
            raise self.vec
        if callable(self.vec):
            return self.vec(expr)
        return list(self.vec)


def run(coro):
    return asyncio.run(coro)


def ev(rule, ts, q, **kw):
    out = run(rule.eval(ts, kw.pop("offset", 0), q, **kw))
    rule.last_evaluation = ts / 1e9
    return out


# --- the alert state machine -------------------------------------------------------------------

def test_pending_then_firing_after_for_and_series_written_once_restored():
    r = AlertingRule("HighLoad", "load > 1", for_s=120, labels={"severity": "page"}, restored=True)
    q = FakeQuery([({"__name__": "load", "instance": "a"}, 2.5)])
    out = ev(r, T0, q)
    (a,) = r.active.values()
    assert a.state == PENDING and a.active_at == T0 and a.labels == {
        "alertname": "HighLoad", "instance": "a", "severity": "page"}
    assert dict((dict(k)["__name__"], v) for k, _, v in out) == {"ALERTS": 1.0, "ALERTS_FOR_STATE": T0 // S}
    assert dict(out[0][0])["alertstate"] == "pending" and out[0][1] == T0 // 10**6
    ev(r, T0 + 60 * S, q)
    assert a.state == PENDING
    out = ev(r, T0 + 120 * S, q)
    assert a.state == FIRING and a.fired_at == T0 + 120 * S
    assert dict(out[0][0])["alertstate"] == "firing"
    assert r.state() == FIRING


def test_not_restored_writes_no_series():
    r = AlertingRule("A", "x", restored=False)
    assert ev(r, T0, FakeQuery([({}, 1.0)])) == []
    assert r.active  # the state machine runs all the same


def test_query_offset_shifts_query_and_sample_time():
    r = AlertingRule("A", "x", restored=True)
    q = FakeQuery([({}, 1.0)])
    out = ev(r, T0, q, offset=30 * S)
    assert q.calls == [("x", T0 - 30 * S)] and {t for _, t, _ in out} == {(T0 - 30 * S) // 10**6}


def test_resolved_kept_for_notification_then_forgotten():
    r = AlertingRule("A", "x", restored=True)
    q = FakeQuery([({"i": "1"}, 1.0)])
    ev(r, T0, q)
    (a,) = r.active.values()
    assert a.state == FIRING  # for: 0 fires at once
    q.vec = []
    assert ev(r, T0 + 60 * S, q) == []
    assert a.state == INACTIVE and a.resolved_at == T0 + 60 * S and r.active_alerts() == []
    ev(r, T0 + 60 * S + 15 * 60 * S, q)
    assert r.active  # exactly 15 minutes: still kept
    ev(r, T0 + 60 * S + 15 * 60 * S + 1, q)
    assert not r.active


def test_pending_alert_that_disappears_is_dropped():
    r = AlertingRule("A", "x", for_s=300)
    q = FakeQuery([({}, 1.0)])
    ev(r, T0, q)
    q.vec = []
    ev(r, T0 + 60 * S, q)
    assert r.active == {}


def test_keep_firing_for():
    r = AlertingRule("A", "x", keep_firing_for_s=120, restored=True)
    q = FakeQuery([({}, 1.0)])
    ev(r, T0, q)
    (a,) = r.active.values()
    q.vec = []
    out = ev(r, T0 + 60 * S, q)
    assert a.state == FIRING and a.keep_firing_since == T0 + 60 * S and len(out) == 2
    ev(r, T0 + 120 * S, q)
    assert a.state == FIRING
    ev(r, T0 + 180 * S, q)  # 120s since keep_firing_since: no longer kept
    assert a.state == INACTIVE and a.resolved_at == T0 + 180 * S
    # back before the end: keep_firing_since is reset
    r2 = AlertingRule("B", "x", keep_firing_for_s=120)
    q2 = FakeQuery([({}, 1.0)])
    ev(r2, T0, q2)
    q2.vec = []
    ev(r2, T0 + 60 * S, q2)
    q2.vec = [({}, 1.0)]
    ev(r2, T0 + 120 * S, q2)
    assert next(iter(r2.active.values())).keep_firing_since == 0


def test_a_resolved_alert_that_comes_back_starts_pending_again():
    r = AlertingRule("A", "x", for_s=60)
    q = FakeQuery([({}, 1.0)])
    ev(r, T0, q)
    ev(r, T0 + 60 * S, q)
    q.vec = []
    ev(r, T0 + 120 * S, q)
    q.vec = [({}, 3.0)]
    ev(r, T0 + 180 * S, q)
    (a,) = r.active.values()
    assert a.state == PENDING and a.active_at == T0 + 180 * S and a.value == 3.0 and a.resolved_at == 0


def test_rule_labels_override_series_and_empty_deletes():
    r = AlertingRule("A", "x", labels={"instance": "rule", "job": ""}, annotations={"z": "1", "a": "2"})
    ev(r, T0, FakeQuery([({"__name__": "up", "instance": "series", "job": "j", "x": "y"}, 1.0)]))
    (a,) = r.active.values()
    assert a.labels == {"alertname": "A", "instance": "rule", "x": "y"}
    assert list(a.annotations) == ["a", "z"]


def test_duplicate_label_sets_fail():
    r = AlertingRule("A", "x", labels={"i": "same"})
    with pytest.raises(RuntimeError, match="same labelset after applying alert labels"):
        ev(r, T0, FakeQuery([({"i": "1"}, 1.0), ({"i": "2"}, 1.0)]))


def test_limit_clears_the_alerts():
    r = AlertingRule("A", "x")
    with pytest.raises(RuntimeError, match="exceeded limit of 1 with 2 alerts"):
        ev(r, T0, FakeQuery([({"i": "1"}, 1.0), ({"i": "2"}, 1.0)]), limit=1)
    assert r.active == {}


def test_resend_and_valid_until():
    r = AlertingRule("A", "x")
    q = FakeQuery([({}, 1.0)])
    ev(r, T0, q)
    iv, rd = 15 * S, 60 * S
    (sent,) = r.alerts_to_send(T0, rd, iv)
    assert sent.valid_until == T0 + 4 * rd and sent.last_sent_at == T0
    assert r.alerts_to_send(T0 + 60 * S, rd, iv) == []  # LastSentAt + delay is not before now
    assert len(r.alerts_to_send(T0 + 60 * S + 1, rd, iv)) == 1
    q.vec = []
    ev(r, T0 + 70 * S, q)
    (sent,) = r.alerts_to_send(T0 + 70 * S, rd, 300 * S)  # resolved since the last send: at once
    assert sent.resolved_at == T0 + 70 * S and sent.valid_until == T0 + 70 * S + 4 * 300 * S
    pend = AlertingRule("P", "x", for_s=60)
    ev(pend, T0, FakeQuery([({}, 1.0)]))
    assert pend.alerts_to_send(T0, rd, iv) == []


# --- recording rules ---------------------------------------------------------------------------

def test_recording_rule_names_and_labels():
    r = RecordingRule("job:up:sum", "sum by (job) (up)", labels={"team": "a"})
    out = run(r.eval(T0 + 123_456_789, 0, FakeQuery([({"job": "x"}, 2.0), ({"job": "y", "team": "b"}, 3.0)])))
    assert out == [((("__name__", "job:up:sum"), ("job", "x"), ("team", "a")), (T0 + 123_456_789) // 10**6, 2.0),
                   ((("__name__", "job:up:sum"), ("job", "y"), ("team", "a")), (T0 + 123_456_789) // 10**6, 3.0)]
    with pytest.raises(RuntimeError, match="same labelset after applying rule labels"):
        run(r.eval(T0, 0, FakeQuery([({"team": "x"}, 1.0), ({"team": "y"}, 1.0)])))
    with pytest.raises(RuntimeError, match="exceeded limit of 1 with 2 series"):
        run(r.eval(T0, 0, FakeQuery([({"job": "x"}, 1.0), ({"job": "y"}, 1.0)]), limit=1))


# --- groups and the manager --------------------------------------------------------------------

class Sink:
    def __init__(self):
        self.samples: list = []
        self.fail = False

    async def __call__(self, samples):
        if self.fail:
            raise OSError("disk full")
        self.samples.extend(samples)


def _manager(query, sink, **kw):
    reg = CollectorRegistry()
    sent: list = []
    m = Manager(query=query, append=sink, notify=sent.extend, registry=reg, **kw)
    return m, reg, sent


def _group(rules, name="g", file="/r.yaml", interval=10.0, **kw):
    return RuleGroup(name=name, file=file, rules=tuple(rules), interval_s=interval, **kw)


def test_group_stale_markers_failures_and_metrics():
    state = {"vec": [({"job": "a"}, 1.0), ({"job": "b"}, 2.0)]}

    def answer(expr):
        if expr == "bad":
            raise QueryError("no query API server reachable")
        return state["vec"]

    sink = Sink()
    m, reg, _ = _manager(FakeQuery(answer), sink)
    spec = _group([Rule(kind="record", name="r1", expr="up"), Rule(kind="record", name="r2", expr="bad"),
                   Rule(kind="record", name="r3", expr="up")])

    async def go():
        await m.update([spec])
        (g,) = m.group_objects()
        await g.iteration(T0)
        state["vec"] = [({"job": "a"}, 5.0)]
        await g.iteration(T0 + 10 * S)
        return g

    g = run(go())
    last = [(dict(k), t, v) for k, t, v in sink.samples if t == (T0 + 10 * S) // 10**6]
    stale = [(d["__name__"], d["job"]) for d, t, v in last if is_stale_nan(np.array([v]))[0]]
    assert sorted(stale) == [("r1", "b"), ("r3", "b")]
    rs = m.groups()[0].rules
    assert [r.health for r in rs] == ["ok", "err", "ok"]  # a failing rule never stops the others
    assert rs[1].last_error == "no query API server reachable"
    key = {"rule_group": "/r.yaml;g", "strategy": "abort"}
    assert reg.get_sample_value("prometheus_rule_evaluations_total", key) == 6
    assert reg.get_sample_value("prometheus_rule_evaluation_failures_total", key) == 2
    assert reg.get_sample_value("prometheus_rule_group_iterations_total", key) == 2
    assert reg.get_sample_value("prometheus_rule_group_last_evaluation_samples", key) == 2
    assert reg.get_sample_value("prometheus_rule_group_rules", key) == 3
    assert reg.get_sample_value("prometheus_rule_group_interval_seconds", key) == 10
    sink.fail = True
    run(g.iteration(T0 + 20 * S))
    assert m.groups()[0].rules[0].last_error == "disk full"


def test_manager_update_keeps_state_of_unchanged_rules_and_notifies():
    sink = Sink()
    q = FakeQuery([({"i": "1"}, 1.0)])
    m, reg, sent = _manager(q, sink, external_labels={"cluster": "c1"}, external_url="http://thanos:9090")
    alert = Rule(kind="alert", name="Up", expr='up{job="a"} == 1', labels={"cluster": "mine"})
    spec = _group([alert])

    async def go():
        await m.update([spec])
        (g,) = m.group_objects()
        await g.iteration(T0)
        await m.update([_group([alert])])  # unchanged: the same group object goes on
        assert m.group_objects() == [g]
        await m.update([_group([alert, Rule(kind="record", name="r", expr="up")])])  # changed: state copied
        (g2,) = m.group_objects()
        assert g2 is not g
        return g2

    g2 = run(go())
    (a,) = g2.rules[0].active.values()
    assert a.active_at == T0 and a.state == FIRING
    assert [al.labels for al in m.alerts()] == [{"alertname": "Up", "cluster": "mine", "i": "1"}]
    (n,) = sent
    assert n["labels"] == {"alertname": "Up", "cluster": "c1", "i": "1"}  # external labels win, as Thanos' queue
    assert n["startsAt"] == format_am_time(T0) and n["endsAt"] == format_am_time(T0 + 4 * 60 * S)
    assert n["generatorURL"] == "http://thanos:9090/graph?g0.expr=up%7Bjob%3D%22a%22%7D+%3D%3D+1&g0.tab=1"


def test_failed_query_keeps_sending_the_last_known_alerts_within_the_outage_tolerance():
    """Prometheus keeps an alerting rule's alerts when its query fails and sends none; ours
    sends the last known ones every resend delay (endsAt pushed on) while the failures have
    lasted no longer than --for-outage-tolerance since the last good evaluation, then stops.
    Pending alerts are never sent; a failure after the query answered (a duplicate label set)
    sends nothing; the query answering again finds the alerts as they were."""
    state = {"fail": False, "vec": [({"i": "1"}, 1.0)]}

    def answer(expr):
        if state["fail"]:
            raise QueryError("no query API server reachable")
        return state["vec"] if expr == "up" else [({}, 1.0)]

    m, reg, sent = _manager(FakeQuery(answer), Sink(), resend_delay_s=5, outage_tolerance_s=35)
    spec = _group([Rule(kind="alert", name="Up", expr="up"), Rule(kind="alert", name="Slow", expr="x", for_s=3600)])

    async def go():
        await m.update([spec])
        (g,) = m.group_objects()
        await g.iteration(T0)
        state["fail"] = True
        for k in range(1, 6):  # slots T0+10s .. T0+50s; tolerance ends after T0+35s
            await g.iteration(T0 + 10 * k * S)
        return g

    g = run(go())
    ups = [n for n in sent if n["labels"]["alertname"] == "Up"]
    assert [n["endsAt"] for n in ups] == [format_am_time(T0 + t * S + 4 * 10 * S) for t in (0, 10, 20, 30)]
    assert {n["startsAt"] for n in ups} == {format_am_time(T0)}
    assert not [n for n in sent if n["labels"]["alertname"] == "Slow"]  # pending: never sent
    up, slow = g.rules
    assert up.health == slow.health == "err"
    assert (up.state(), slow.state()) == (FIRING, PENDING)
    key = {"rule_group": "/r.yaml;g", "strategy": "abort"}
    assert reg.get_sample_value("prometheus_rule_evaluation_failures_total", key) == 10
    state["fail"] = False
    sent.clear()
    run(g.iteration(T0 + 60 * S))
    (a,) = up.active.values()
    assert up.health == "ok" and a.state == FIRING and a.active_at == a.fired_at == T0
    assert [n["startsAt"] for n in sent] == [format_am_time(T0)]
    # a failure after the query answered is the rule's, not an outage: nothing sent
    sent.clear()
    state["vec"] = [({"i": "1", "x": "1"}, 1.0), ({"i": "1", "x": "2"}, 1.0)]
    up.labels = {"x": ""}  # both series end up with the same labels
    run(g.iteration(T0 + 80 * S))
    assert up.health == "err" and "same labelset" in up.last_error and sent == []


def test_reload_stale_marks_series_of_a_removed_rule_and_keeps_the_rest():
    sink = Sink()
    m, reg, _ = _manager(FakeQuery([({"job": "a"}, 1.0)]), sink)
    r1, r2 = Rule(kind="record", name="r1", expr="up"), Rule(kind="record", name="r2", expr="up")

    async def go():
        await m.update([_group([r1, r2])])
        (g,) = m.group_objects()
        assert [r.state for r in m.groups()[0].rules] == ["", ""]
        await g.iteration(T0)
        await m.update([_group([r2])])  # r1 gone: its series are stale at the next evaluation
        (g2,) = m.group_objects()
        n = len(sink.samples)
        await g2.iteration(T0 + 10 * S)
        return sink.samples[n:]

    after = run(go())
    stale = [dict(k)["__name__"] for k, t, v in after if is_stale_nan(np.array([v]))[0]]
    fresh = [dict(k)["__name__"] for k, t, v in after if not is_stale_nan(np.array([v]))[0]]
    assert stale == ["r1"] and fresh == ["r2"]


def test_snapshots_carry_the_rule_files_objects_and_evaluation_state():
    m, reg, _ = _manager(FakeQuery([({"i": "1"}, 7.0)]), Sink(), clock_ns=lambda: T0 + 5 * S)
    alert = Rule(kind="alert", name="A", expr="up", for_s=60, annotations={"s": "x"})
    spec = _group([Rule(kind="record", name="r", expr="up"), alert], interval=15)

    async def go():
        await m.update([spec])
        await m.group_objects()[0].iteration(T0)

    run(go())
    (gs,) = m.groups()
    assert gs.group is spec and gs.interval_s == 15 and gs.last_evaluation == T0 / 1e9 + 5
    assert [r.rule for r in gs.rules] == list(spec.rules)
    assert [r.health for r in gs.rules] == ["ok", "ok"] and gs.rules[1].state == "pending"
    (a,) = gs.rules[1].alerts
    assert (a.state, a.active_at, a.value, a.annotations, a.fired_at) == ("pending", T0 / 1e9, 7.0, {"s": "x"}, None)
    assert [x.labels for x in m.alerts()] == [{"alertname": "A", "i": "1"}]

def test_alert_rule_state_unknown_until_evaluated():
    m, reg, _ = _manager(FakeQuery([]), Sink())

    async def go():
        await m.update([_group([Rule(kind="alert", name="A", expr="up")])])
        before = m.groups()[0].rules[0].state
        await m.group_objects()[0].iteration(T0)
        return before, m.groups()[0].rules[0].state

    assert run(go()) == ("unknown", "inactive")

def test_manager_stale_marks_removed_group_later():
    sink = Sink()
    m, reg, _ = _manager(FakeQuery([({}, 1.0)]), sink)

    async def go():
        await m.update([_group([Rule(kind="record", name="r", expr="up")], interval=0.05)])
        await m.start()
        (g,) = m.group_objects()
        for _ in range(400):
            if sink.samples:
                break
            await asyncio.sleep(0.01)
        await m.update([])
        n = len(sink.samples)
        for _ in range(400):
            if any(is_stale_nan(np.array([v]))[0] for _, _, v in sink.samples[n:]):
                break
            await asyncio.sleep(0.01)
        await m.stop()
        return n

    n = run(go())
    assert any(is_stale_nan(np.array([v]))[0] for _, _, v in sink.samples[n:])
    assert reg.get_sample_value("prometheus_rule_group_rules", {"rule_group": "/r.yaml;g", "strategy": "abort"}) is None


def test_restore_for_state():
    """Prometheus' RestoreForState: the outage is added to active_at; near the end of ``for``
    the grace period applies; a stale last sample restores nothing."""
    sink = Sink()
    now = T0 + 3600 * S
    found = {}

    async def reader(matchers, mint, maxt):
        assert matchers == {"__name__": "ALERTS_FOR_STATE", "alertname": "A", "sev": "x"}
        assert (mint, maxt) == ((now - 3600 * S) // 10**6, now // 10**6)
        return list(found.values())

    m, reg, _ = _manager(FakeQuery([({"i": "1"}, 1.0), ({"i": "2"}, 1.0), ({"i": "3"}, 1.0)]), sink,
                         for_state_reader=reader)
    rule = Rule(kind="alert", name="A", expr="x", for_s=3600, labels={"sev": "x"})
    lab = {"__name__": "ALERTS_FOR_STATE", "alertname": "A", "sev": "x"}
    down = now - 600 * S
    found["1"] = ({**lab, "i": "1"}, down // 10**6, float((down - 1200 * S) // S))   # 20m of 60m done before
    found["2"] = ({**lab, "i": "2"}, down // 10**6, float((down - 3300 * S) // S))   # 55m done: 5m < grace left
    found["3"] = ({**lab, "i": "3"}, down // 10**6, float("nan"))

    async def go():
        await m.update([_group([rule])])
        (g,) = m.group_objects()
        assert g.should_restore and not g.rules[0].restored
        await g.iteration(now - 10 * S)
        await g.restore_for_state(now)
        return g

    g = run(go())
    r = g.rules[0]
    assert r.restored
    by = {a.labels["i"]: a for a in r.active.values()}
    assert by["1"].active_at == down - 1200 * S + 600 * S
    assert by["2"].active_at == now + 600 * S - 3600 * S  # for-grace-period 10m from now
    assert by["3"].active_at == now - 10 * S


def test_eval_timestamp_alignment():
    h = group_hash("/rules/a.yaml", "g")
    iv = 30 * S
    slot = eval_timestamp(h, iv, T0)
    assert slot <= T0 < slot + iv and (slot - h % iv) % iv == 0
    assert eval_timestamp(h, iv, slot) == slot and eval_timestamp(h, iv, slot - 1) == slot - iv


def test_formats():
    assert format_rfc3339nano(T0) == "2023-11-14T22:13:20Z"
    assert format_rfc3339nano(T0 + 120_000_000) == "2023-11-14T22:13:20.12Z"
    assert format_rfc3339nano(T0 + 1) == "2023-11-14T22:13:20.000000001Z"
    assert format_am_time(T0 + 5_000_000) == "2023-11-14T22:13:20.005Z"
    assert generator_url("", "/graph?g0.expr={{.Expr}}&g0.tab=1", "a b/c") == "/graph?g0.expr=a+b%2Fc&g0.tab=1"


async def _query_api(handler):
    """A query API (``/api/v1/query`` answered by ``handler``) on a free port: (runner, port)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


def test_query_client_without_servers():
    qc = QueryClient(["127.0.0.1:1"])

    async def go():
        try:
            with pytest.raises(QueryError, match="^no query API server reachable$"):
                await qc.query("up", T0)
        finally:
            await qc.close()

    run(go())
    assert not math.isnan(0.0)


def test_query_client_names_the_error_of_a_server_that_answered():
    """When every endpoint fails and one of them answered with an error (the querier's
    ``execution`` error naming a failed store), that answer is the error, not Thanos' "no query
    API server reachable"; an endpoint that is not there still gives Thanos' text."""
    from aiohttp import web

    async def handler(request):
        return web.json_response({"status": "error", "errorType": "execution", "error":
                                  "expanding series: receive series from Addr: 127.0.0.1:7 ...: Unavailable"},
                                 status=422)

    async def go():
        runner, port = await _query_api(handler)
        qc = QueryClient(["127.0.0.1:1", f"127.0.0.1:{port}"])
        try:
            with pytest.raises(QueryError) as e:
                await qc.query("up", T0)
        finally:
            await qc.close()
            await runner.cleanup()
        return str(e.value)

    assert run(go()).startswith("query API server http://127.0.0.1:")
    assert run(go()).endswith(" answered 422 execution: expanding series: receive series from "
                              "Addr: 127.0.0.1:7 ...: Unavailable")


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_query_client_request_and_warnings(method):
    """What goes over the wire (Thanos' promclient parameters) and how warnings are counted: a
    PromQL annotation is not a partial-response warning; a store's warning is, once per query."""
    from aiohttp import web

    seen = []

    async def handler(request):
        form = dict(await request.post()) if request.method == "POST" else dict(request.query)
        seen.append((request.method, form))
        return web.json_response({"status": "success", "warnings": [
            "PromQL info: metric might not be a counter", "store 127.0.0.1:1 unreachable"],
            "data": {"resultType": "vector", "result": [
                {"metric": {"__name__": "up", "job": "a"}, "value": [1700000000.5, "NaN"]}]}})

    async def go():
        runner, port = await _query_api(handler)
        reg = CollectorRegistry()
        qc = QueryClient([f"127.0.0.1:{port}", f"127.0.0.1:{port}"], http_method=method, registry=reg)
        try:
            got = await qc.query("up", T0 + 500 * 10**6, "WARN")
            got2 = await qc.query("up", T0, "ABORT")
            # the blocking face, from a worker thread while the loop runs
            got3 = await asyncio.to_thread(qc.query_blocking, "up", T0 // 10**6, "ABORT")
        finally:
            await qc.close()
            await runner.cleanup()
        return got, got2, got3, reg

    got, got2, got3, reg = run(go())
    assert got[0][0] == {"__name__": "up", "job": "a"} and math.isnan(got[0][1]) and len(got) == 1
    assert len(got3) == 1
    assert [m for m, _ in seen] == [method] * 3  # duplicate addresses asked once
    assert seen[0][1] == {"query": "up", "time": "2023-11-14T22:13:20.5Z", "dedup": "true", "explain": "false",
                          "analyze": "false", "engine": "", "partial_response": "true"}
    assert seen[1][1]["partial_response"] == "false" and seen[1][1]["time"] == "2023-11-14T22:13:20Z"
    assert reg.get_sample_value("thanos_rule_evaluation_with_warnings_total", {"strategy": "warn"}) == 1
    assert reg.get_sample_value("thanos_rule_evaluation_with_warnings_total", {"strategy": "abort"}) == 2


def test_query_client_dns_metrics():
    """Thanos' query-API dns.Provider families: a lookup per dns+ address resolved, a failure per
    lookup that failed (the last answer kept), results per configured address (a static one is 1)."""
    from aiohttp import web

    async def handler(request):
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})

    async def go():
        runner, port = await _query_api(handler)
        reg = CollectorRegistry()
        addrs = [f"dns+127.0.0.1:{port}", "dns+no-such-host.invalid:9090", f"127.0.0.1:{port}"]
        qc = QueryClient(addrs, registry=reg, resolve_interval_s=3600)
        try:
            await qc.query("up", T0, "WARN")
            await qc.query("up", T0, "WARN")   # within the interval: no new lookup
        finally:
            await qc.close()
            await runner.cleanup()
        return reg, addrs

    reg, addrs = run(go())
    assert reg.get_sample_value("thanos_rule_query_apis_dns_lookups_total") == 2
    assert reg.get_sample_value("thanos_rule_query_apis_dns_failures_total") == 1
    results = "thanos_rule_query_apis_dns_provider_results"
    assert [reg.get_sample_value(results, {"addr": a}) for a in addrs] == [1, 0, 1]


def test_missed_iterations_and_failing_notifier_do_not_stop_evaluation():
    """A group whose evaluation overruns its interval skips the slots it missed (counted); an
    Alertmanager side that raises never stops the evaluations."""
    sink = Sink()

    async def slow(expr, t_ns, strategy="ABORT"):
        await asyncio.sleep(0.25)  # a slow peer: 2.5 intervals
        return [({}, 1.0)]

    def broken_notify(alerts):
        raise ConnectionError("alertmanager unreachable")

    reg = CollectorRegistry()
    m = Manager(query=slow, append=sink, notify=broken_notify, registry=reg)
    key = {"rule_group": "/r.yaml;g", "strategy": "abort"}

    async def go():
        await m.update([_group([Rule(kind="alert", name="A", expr="vector(1)")], interval=0.1)])
        await m.start()
        for _ in range(500):
            if (reg.get_sample_value("prometheus_rule_group_iterations_missed_total", key) or 0) >= 2:
                break
            await asyncio.sleep(0.02)
        await m.stop()

    run(go())
    assert reg.get_sample_value("prometheus_rule_group_iterations_missed_total", key) >= 2
    total = reg.get_sample_value("prometheus_rule_group_iterations_total", key)
    evals = reg.get_sample_value("prometheus_rule_evaluations_total", key)
    assert total > evals >= 2  # scheduled includes the missed ones
    assert m.groups()[0].rules[0].health == "ok"
    slots = sorted({t for _, t, _ in sink.samples})
    assert all((b - a) % 100 == 0 for a, b in zip(slots, slots[1:]))  # still on the group's slots

# --- against a real thanos rule ----------------------------------------------------------------
#
# Topology: a real Prometheus 3.9.1 scraping itself every second, our sidecar on it, our querier
# over the sidecar. A real ``thanos rule`` v0.42.4 and our Manager (in this process) evaluate the
# same rule file against that querier. Our Manager is given the thanos ruler's --data-dir, so the
# group's path (Thanos' <data-dir>/.tmp-rules/<STRATEGY>/<file>) and therefore its evaluation
# offset are the same: the samples must then agree to the millisecond. What thanos rule stored is
# read back through a real ``thanos query`` over its StoreAPI.

import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402

from peers import REGISTRY, http_get, start_on_free_ports  # noqa: E402
from test_receive import poll  # noqa: E402

PEER_RULES = """\
groups:
  - name: recording
    interval: 1s
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels:
          source: rules
      - record: flip:rec
        expr: vector(1) and on() (vector(time() % 8) < 4)
  - name: alerts
    interval: 2s
    partial_response_strategy: warn
    rules:
      - alert: Flapping
        expr: vector(time() % 12) < 6
        for: 2s
        labels:
          severity: page
        annotations:
          summary: plain text
      - alert: KeepFiring
        expr: vector(1) and on() (vector(time() % 20) < 5)
        keep_firing_for: 4s
      - alert: UpAlert
        expr: up{job="prometheus"} == 1
        labels:
          job: overridden
          value: "{{ $value }}"
          from_template: "{{ $labels.job }}-{{ $externalLabels.rule_replica }}"
        annotations:
          summary: "{{ $labels.instance }} of {{ $labels.job }} is {{ humanize 1234567.0 }} up"
          queried: '{{ with query "vector(42)" }}{{ . | first | value }}{{ end }}'
          link: "{{ $externalURL }}"
          broken: '{{ humanize "abc" }}'
"""

COMPARED = "job:up:sum|flip:rec|ALERTS|ALERTS_FOR_STATE"


class InProcessRuler:
    """Our Manager on an event loop in a thread of its own, appending into a list."""

    def __init__(self, query_addr: str, rule_file: str, data_dir: str, alertmanager: str = "",
                 external_labels=None, external_url: str = "", **manager_kw) -> None:
        from pythanos.rule.rulefile import load_files

        self.alertmanager, self.external_labels, self.external_url = alertmanager, external_labels, external_url
        self.manager_kw = manager_kw
        self.samples: list = []
        self.groups = load_files([rule_file])
        self.data_dir = data_dir
        self.query_addr = query_addr
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self._start())

    def call(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        async def append(samples):
            self.samples.extend(samples)

        from pythanos.rule.notifier import Notifier, config_from_url

        self.qc = QueryClient([self.query_addr], registry=CollectorRegistry())
        self.notifier = Notifier([config_from_url(self.alertmanager, 10.0)] if self.alertmanager else [],
                                 external_labels=self.external_labels, registry=CollectorRegistry())
        await self.notifier.start()
        self.m = Manager(query=self.qc.query, blocking_query=self.qc.query_blocking, append=append,
                         notify=self.notifier.send, external_labels=self.external_labels,
                         external_url=self.external_url, registry=CollectorRegistry(), data_dir=self.data_dir,
                         default_interval_s=60, **self.manager_kw)
        await self.m.update(self.groups)
        await self.m.start()

    def last_eval_ts(self) -> int:
        return min(g.last_eval_ts for g in self.m.group_objects())

    def stop(self) -> None:
        async def go():
            await self.m.stop()
            await self.notifier.stop()
            await self.qc.close()
        self.call(go())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _raw(url: str, expr: str, t_s: float) -> list:
    u = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{t_s:.3f}"})
    code, body = http_get(u, timeout=30)
    assert code == 200, body
    return json.loads(body)["data"]["result"]


def _same_samples(mine: dict, theirs: dict) -> None:
    """Series by series equal; UpAlert fires from each ruler's first evaluation on, so its
    ALERTS_FOR_STATE value (that instant) is compared by timestamps only."""
    assert set(mine) == set(theirs), sorted(set(mine) ^ set(theirs))
    for k in theirs:
        if dict(k)["__name__"] == "ALERTS_FOR_STATE" and dict(k)["alertname"] == "UpAlert":
            assert [t for t, _ in mine[k]] == [t for t, _ in theirs[k]], k
            continue
        assert mine[k] == theirs[k], (k, mine[k][:5], theirs[k][:5])


def _by_series(samples, drop=()) -> dict:
    out: dict = {}
    for labels, t, v in samples:
        key = tuple((k, x) for k, x in labels if k not in drop)
        out.setdefault(key, []).append((t, v))
    return {k: sorted(v) for k, v in out.items()}


def _querier_over_prometheus(prometheus_factory, prometheus3_bin, pythanos_bin, tmp_path) -> str:
    """A real Prometheus 3.9.1 scraping itself every second, our sidecar, our querier: its address."""
    from test_rules_api import start_our_query, start_sidecar

    prom = prometheus_factory(binary=prometheus3_bin, name="prom-rule",
                              config_yaml="global:\n  scrape_interval: 1s\n  external_labels: {cluster: c1}\n"
                                          "scrape_configs:\n  - job_name: prometheus\n"
                                          "    static_configs: [{targets: ['127.0.0.1:9']}]\n")
    cfg = prom.extra["config_file"]
    cfg.write_text(cfg.read_text().replace("127.0.0.1:9", f"127.0.0.1:{prom.port}"))
    prom.proc.send_signal(1)
    poll(lambda: (bool(_raw(prom.url, 'up{job="prometheus"}', time.time())), None), 60, "Prometheus scrapes itself")
    sidecar = start_sidecar(pythanos_bin, "ours", prom, tmp_path / "sidecar")
    querier = start_our_query(pythanos_bin, [sidecar.extra["grpc"]], tmp_path / "query")
    return querier.url.removeprefix("http://")


def _start_thanos_rule(thanos_bin: str, work, rule_file, data_dir, q_addr: str, extra=()):
    def launch(ports: list[int]):
        h, g = ports
        p = REGISTRY.start("thanos-rule", [thanos_bin, "rule", f"--http-address=127.0.0.1:{h}",
                                           f"--grpc-address=127.0.0.1:{g}", f"--data-dir={data_dir}",
                                           f"--rule-file={rule_file}", f"--query={q_addr}", "--eval-interval=1m",
                                           '--label=rule_replica="thanos"', "--log.level=debug", *extra], work)
        p.url, p.extra["grpc"] = f"http://127.0.0.1:{h}", f"127.0.0.1:{g}"
        return p

    return start_on_free_ports(2, launch, lambda p: p.wait_http_ready("/-/ready", 60))


RULE_METRICS = ("prometheus_rule_evaluations_total", "prometheus_rule_evaluation_failures_total",
                "prometheus_rule_group_iterations_total", "prometheus_rule_group_iterations_missed_total",
                "prometheus_rule_group_interval_seconds", "prometheus_rule_group_rules",
                "prometheus_rule_group_last_evaluation_samples", "prometheus_rule_group_last_duration_seconds",
                "thanos_rule_evaluation_with_warnings_total")


def _rule_metrics(url: str) -> dict:
    """``{(name, sorted labels): value}`` of the rule-evaluation series on ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    code, body = http_get(url + "/metrics")
    assert code == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for smp in fam.samples:
            if smp.name in RULE_METRICS:
                out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


def _am_alerts(url: str) -> list:
    code, body = http_get(url + "/api/v2/alerts")
    assert code == 200, body
    return json.loads(body)


def _same_flapping_alerts(thanos_am: str, ours_am: str, since: float):
    """Both Alertmanagers' alerts, once they hold the same firing phase of ``Flapping`` begun after
    both rulers' histories converged (startsAt, endsAt, labels, annotations, generatorURL);
    ``UpAlert`` fires since each ruler started, so its times are left out."""
    def norm(alerts):
        out = []
        for a in alerts:
            keep = {k: a[k] for k in ("labels", "annotations", "generatorURL", "startsAt", "endsAt")}
            if a["labels"]["alertname"] != "Flapping":
                keep.pop("startsAt"), keep.pop("endsAt")
            out.append(keep)
        return sorted(out, key=lambda a: sorted(a["labels"].items()))
    theirs, ours = norm(_am_alerts(thanos_am)), norm(_am_alerts(ours_am))
    flap = [a["startsAt"] for a in theirs if a["labels"]["alertname"] == "Flapping"]
    since_s = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since))
    return bool(flap) and flap[0] > since_s and theirs == ours, (theirs, ours)


@pytest.mark.timeout(600)
def test_same_series_and_notifications_as_thanos_rule(prometheus_factory, prometheus3_bin, pythanos_bin, thanos_bin,
                                                      thanos_query_factory, alertmanager_factory, tmp_path):
    q_addr = _querier_over_prometheus(prometheus_factory, prometheus3_bin, pythanos_bin, tmp_path)

    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(PEER_RULES)
    data_dir = tmp_path / "thanos-rule-data"
    am_thanos, am_ours = alertmanager_factory(), alertmanager_factory()
    query_url = "http://query.example:9090/prefix"

    thanos_rule = _start_thanos_rule(thanos_bin, tmp_path, rule_file, data_dir, q_addr,
                                     [f"--alertmanagers.url={am_thanos.url}", f"--alert.query-url={query_url}"])
    ours = InProcessRuler(q_addr, str(rule_file), str(data_dir), alertmanager=am_ours.url,
                          external_labels={"rule_replica": "thanos"}, external_url=query_url)
    try:
        tq = thanos_query_factory([thanos_rule.extra["grpc"]])
        started = time.time()
        # both histories converge once every alert has gone through a whole cycle (20s + 4s)
        t_from = started + 30
        t_to = t_from + 30

        def thanos_reached():
            got = _raw(tq.url, f'count({{__name__=~"{COMPARED}"}})', time.time())
            latest = _raw(tq.url, 'timestamp(job:up:sum)', time.time())
            ts = max((float(s["value"][1]) for s in latest), default=0)
            return ts >= t_to + 2 and bool(got), ts
        poll(thanos_reached, 180, "thanos rule evaluated past the window")
        poll(lambda: (ours.last_eval_ts() / 1e9 >= t_to + 2, ours.last_eval_ts()), 60, "ours evaluated past it")
        samples = list(ours.samples)
        notified = poll(lambda: _same_flapping_alerts(am_thanos.url, am_ours.url, t_from), 120,
                         "both Alertmanagers hold the same firing phase of Flapping")
    finally:
        ours.stop()
    theirs_am, ours_am = notified
    assert ours_am == theirs_am
    assert {a["labels"]["alertname"] for a in ours_am} >= {"Flapping", "UpAlert"}
    (up,) = [a for a in ours_am if a["labels"]["alertname"] == "UpAlert"]
    assert up["labels"]["job"] == "overridden" and up["labels"]["rule_replica"] == "thanos"
    assert up["labels"]["value"] == "1" and up["labels"]["from_template"] == "prometheus-thanos"
    assert up["annotations"]["queried"] == "42" and up["annotations"]["link"] == query_url
    assert "1.235M up" in up["annotations"]["summary"]
    assert up["annotations"]["broken"].startswith("<error expanding template: ")
    assert up["generatorURL"].startswith(query_url + "/graph?g0.expr=up%7Bjob%3D%22prometheus%22%7D")

    lo, hi = int(t_from * 1000), int(t_to * 1000)
    window = [(k, t, v) for k, t, v in samples if lo <= t <= hi]
    mine = _by_series([(k, t, v) for k, t, v in window if not is_stale_nan(np.array([v]))[0]
                       and dict(k)["__name__"] in COMPARED.split("|")])
    res = _raw(tq.url, f'{{__name__=~"{COMPARED}"}}[{int(t_to - t_from) + 5}s]', t_to)
    theirs_raw = []
    for s in res:
        labels = tuple(sorted((k, v) for k, v in s["metric"].items() if k != "rule_replica"))
        for t, v in s["values"]:
            t_ms = round(float(t) * 1000)
            if lo <= t_ms <= hi:
                theirs_raw.append((labels, t_ms, float(v)))
    theirs = _by_series(theirs_raw)
    _same_samples(mine, theirs)
    names = {dict(k)["__name__"] for k in theirs}
    assert names == {"job:up:sum", "flip:rec", "ALERTS", "ALERTS_FOR_STATE"}
    states = {dict(k).get("alertstate") for k in theirs if dict(k)["__name__"] == "ALERTS"}
    assert states == {"pending", "firing"}
    # our stale markers: thanos rule's series ends at the same instants (an instant query there is empty)
    stale = [(k, t) for k, t, v in window if is_stale_nan(np.array([v]))[0]]
    assert stale, "flip:rec and the flapping alerts disappear: stale markers expected"
    for k, t in stale[:6]:
        sel = "{" + ",".join(f'{n}="{v}"' for n, v in k) + "}"
        assert _raw(tq.url, sel, t / 1000) == [], (k, t)
        assert _raw(tq.url, sel, (t - 1) / 1000) != [], (k, t)


RESTORE_RULES = """\
groups:
  - name: restore
    interval: 1s
    rules:
      - alert: FiredBeforeOutage
        expr: vector(1)
        for: 4s
      - alert: PendingForAnHour
        expr: vector(1)
        for: 1h
"""


def _active_at(url: str) -> dict:
    code, body = http_get(url + "/api/v1/alerts")
    assert code == 200, body
    import calendar

    data = json.loads(body)["data"]
    out = {}
    for a in data.get("alerts", data.get("Alerts")) or []:  # the Thanos ruler's own API says "Alerts"
        d = a["activeAt"]  # RFC 3339 with up to 9 fraction digits, UTC
        sec, _, frac = d.rstrip("Z").partition(".")
        base = calendar.timegm(time.strptime(sec, "%Y-%m-%dT%H:%M:%S"))
        out[a["labels"]["alertname"]] = (base * S + int((frac + "000000000")[:9]), str(a["state"]).lower())
    return out


@pytest.mark.timeout(600)
def test_for_state_restored_as_thanos_rule(prometheus_factory, prometheus3_bin, pythanos_bin, thanos_bin,
                                           thanos_query_factory, tmp_path):
    """A thanos rule runs, stops and starts again on its data: it restores its alerts' ``for``
    state from ALERTS_FOR_STATE. Our Manager, reading the same series back through the query API
    (the stateless ruler's way, --restore-ignored-label dropping the ruler's external label),
    restores the alert that had fired to the same instant, and moves the pending one back by the
    outage as well."""
    q_addr = _querier_over_prometheus(prometheus_factory, prometheus3_bin, pythanos_bin, tmp_path)
    rule_file = tmp_path / "restore.yml"
    rule_file.write_text(RESTORE_RULES)
    data_dir = tmp_path / "thanos-rule-data"
    flags = ["--for-grace-period=2s"]
    t1 = _start_thanos_rule(thanos_bin, tmp_path, rule_file, data_dir, q_addr, flags)
    tq1 = thanos_query_factory([t1.extra["grpc"]])

    def written():
        got = _raw(tq1.url, 'ALERTS_FOR_STATE{alertname="FiredBeforeOutage"}', time.time())
        states = _active_at(t1.url)
        return bool(got) and states.get("FiredBeforeOutage", (0, ""))[1] == "firing", states
    before = poll(written, 90, "thanos rule fires and writes ALERTS_FOR_STATE")
    poll(lambda: (len(_raw(tq1.url, 'ALERTS_FOR_STATE{alertname="FiredBeforeOutage"}[1m]', time.time())[0]["values"])
                   >= 3, None), 30, "a few samples written")
    assert t1.stop() == 0
    t2 = _start_thanos_rule(thanos_bin, tmp_path, rule_file, data_dir, q_addr, flags)
    orig_fired = before["FiredBeforeOutage"][0] // S * S  # ALERTS_FOR_STATE holds whole seconds
    restored = poll(lambda: (_active_at(t2.url).get("FiredBeforeOutage", (0,))[0] == orig_fired, _active_at(t2.url)),
                     60, "the second thanos rule restores the fired alert's activeAt")
    tq2 = thanos_query_factory([t2.extra["grpc"]])

    qc_holder = {}
    ours_started = time.time_ns()  # without a restore no alert of ours could be active before this
    ours = InProcessRuler(q_addr, str(rule_file), str(tmp_path / "ours"), for_grace_period_s=2.0)
    try:
        async def wire():
            qc = QueryClient([tq2.url.removeprefix("http://")])
            qc_holder["qc"] = qc
            ours.m.opts.for_state_reader = qc.for_state_reader(1, ignored_labels=["rule_replica"])
        ours.call(wire())
        (g,) = ours.m.group_objects()
        poll(lambda: (all(r.restored for r in g.rules) and g.last_eval_ts > 0, None), 60, "our group restored")
        ours_at = {r.name: next(iter(r.active.values())).active_at for r in g.rules}
    finally:
        if "qc" in qc_holder:
            ours.call(qc_holder["qc"].close())
        ours.stop()
    assert ours_at["FiredBeforeOutage"] == restored["FiredBeforeOutage"][0] == orig_fired
    # the pending alert: moved back by the time thanos rule was down, not to our own first evaluation
    assert before["PendingForAnHour"][0] < ours_at["PendingForAnHour"] < ours_started
    assert restored["PendingForAnHour"][0] > before["PendingForAnHour"][0]


@pytest.mark.timeout(600)
def test_our_ruler_component_stores_what_thanos_rule_stores(prometheus_factory, prometheus3_bin, pythanos_bin,
                                                             thanos_bin, thanos_query_factory, tmp_path):
    """``pythanos rule`` and ``thanos rule`` as processes, each in a directory of its own with the
    same relative ``--rule-file=rules.yml --data-dir=data``: the group's path (Thanos'
    ``data/.tmp-rules/<STRATEGY>/rules.yml``) and so its evaluation instants are the same. A real
    ``thanos query`` over both StoreAPIs reads the samples back; they agree to the millisecond."""
    q_addr = _querier_over_prometheus(prometheus_factory, prometheus3_bin, pythanos_bin, tmp_path)
    procs = {}
    for kind, binary in (("thanos", thanos_bin), ("ours", pythanos_bin)):
        work = tmp_path / f"ruler-{kind}"
        work.mkdir()
        (work / "rules.yml").write_text(PEER_RULES)

        def launch(ports: list[int], binary=binary, kind=kind, work=work):
            h, g = ports
            p = REGISTRY.start(f"{kind}-rule", [binary, "rule", f"--http-address=127.0.0.1:{h}",
                                                f"--grpc-address=127.0.0.1:{g}", "--data-dir=data",
                                                "--rule-file=rules.yml", f"--query={q_addr}",
                                                f'--label=ruler="{kind}"', "--log.level=debug"], work, cwd=work)
            p.url, p.extra["grpc"] = f"http://127.0.0.1:{h}", f"127.0.0.1:{g}"
            return p

        procs[kind] = start_on_free_ports(2, launch, lambda p: p.wait_http_ready("/-/ready", 60))
    tq = thanos_query_factory([p.extra["grpc"] for p in procs.values()])
    t_from = time.time() + 30  # histories converge after a whole cycle of every alert (20s + 4s)
    t_to = t_from + 30

    def both_past():
        got = _raw(tq.url, "timestamp(job:up:sum)", time.time())
        ts = {s["metric"]["ruler"]: float(s["value"][1]) for s in got}
        return len(ts) == 2 and min(ts.values()) >= t_to + 2, ts
    poll(both_past, 180, "both rulers evaluated past the window")
    lo, hi = int(t_from * 1000), int(t_to * 1000)
    by_ruler: dict = {"thanos": [], "ours": []}
    for s in _raw(tq.url, f'{{__name__=~"{COMPARED}"}}[{int(t_to - t_from) + 5}s]', t_to):
        labels = tuple(sorted((k, v) for k, v in s["metric"].items() if k != "ruler"))
        for t, v in s["values"]:
            t_ms = round(float(t) * 1000)
            if lo <= t_ms <= hi:
                by_ruler[s["metric"]["ruler"]].append((labels, t_ms, float(v)))
    theirs, mine = _by_series(by_ruler["thanos"]), _by_series(by_ruler["ours"])
    assert theirs, "thanos rule stored nothing in the window"
    _same_samples(mine, theirs)
    # a series that vanished: both end at the same instant (stale markers through the StoreAPI)
    flip = [t for k, pts in theirs.items() if dict(k)["__name__"] == "flip:rec" for t, _ in pts]
    gaps = [a for a, b in zip(flip, flip[1:]) if b - a > 1000]
    assert gaps, flip
    for kind in ("thanos", "ours"):
        assert _raw(tq.url, f'flip:rec{{ruler="{kind}"}}', (gaps[0] + 1000) / 1000) == [], kind
    # the rule metrics: the same series (Prometheus' names and labels, Thanos' strategy label and
    # rule_group path), the static ones with the same values, no failures
    metrics = {kind: _rule_metrics(p.url) for kind, p in procs.items()}
    assert set(metrics["ours"]) == set(metrics["thanos"]), set(metrics["ours"]) ^ set(metrics["thanos"])
    for key, v in metrics["thanos"].items():
        if key[0] in ("prometheus_rule_group_rules", "prometheus_rule_group_interval_seconds",
                      "prometheus_rule_evaluation_failures_total", "thanos_rule_evaluation_with_warnings_total"):
            assert metrics["ours"][key] == v, key
    assert ("prometheus_rule_group_rules", (("rule_group", "data/.tmp-rules/WARN/rules.yml;alerts"),
                                            ("strategy", "warn"))) in metrics["ours"]
