"""``pythanos rule`` when what it depends on fails, against real processes: Prometheus 3.9.1 behind our
sidecar and our querier, a real Alertmanager 0.25 notifying a webhook in this test, and a real
``thanos rule`` v0.42.4 given the same rule file over the same querier for comparison.

* The querier goes away and comes back: evaluations fail and are counted per group, the rules
  show ``err`` and Thanos' ``lastError``, the alerts keep their state, and nothing is re-fired
  when it returns.
* The querier hangs (SIGSTOP), then answers: evaluations overrun, the missed slots are counted.
* One store of two is down (Thanos #6223): a group under ``partial_response_strategy: abort``
  fails, naming the store; a ``warn`` group keeps alerting, and a meta-alert on the failures
  (the ruler's own /metrics scraped by Prometheus) reaches the Alertmanager.

Where our ruler does better than Prometheus' rules engine (which Thanos runs): an alerting rule
whose query fails, or hangs past the group's interval, still re-sends its last known alerts
(every ``--resend-delay``, for up to ``--for-outage-tolerance`` since its last good evaluation),
so a query outage does not make the Alertmanager resolve every alert and fire it again
afterwards; and its ``lastError`` is the querier's answer when there was one.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from peers import REGISTRY, Process, http_get, start_on_free_ports
from test_rule import get_json, normalize_rules as normalize, restart, rules, start_ruler, wait_for

pytestmark = pytest.mark.timeout(300)


# ---------------------------------------------------------------------------------------------- peers

class Webhook:
    """Where the Alertmanager sends its notifications: each one's status, group labels and alerts."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        lock = self.lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def statuses(self, ruler: str, alertname: str) -> list[str]:
        """The status of ``alertname`` from ``ruler`` in each notification, in order."""
        with self.lock:
            got = list(self.received)
        return [a["status"] for n in got for a in n["alerts"]
                if a["labels"].get("ruler") == ruler and a["labels"].get("alertname") == alertname]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_prometheus(binary: str, work: Path, name: str, cluster: str, extra_scrape: str = "") -> Process:
    def launch(ports):
        cfg = work / f"{name}.yml"
        cfg.write_text(prom_config(ports[0], cluster, extra_scrape))
        p = REGISTRY.start(name, [binary, f"--config.file={cfg}", f"--storage.tsdb.path={work / name}",
                                  f"--web.listen-address=127.0.0.1:{ports[0]}"], work)
        p.url, p.port, p.extra["config"] = f"http://127.0.0.1:{ports[0]}", ports[0], cfg
        return p

    return start_on_free_ports(1, launch, lambda p: p.wait_http_ready("/-/ready", 90))


def prom_config(port: int, cluster: str, extra_scrape: str = "") -> str:
    return (f"global: {{scrape_interval: 1s, evaluation_interval: 1s, external_labels: {{cluster: {cluster}}}}}\n"
            f"scrape_configs:\n- {{job_name: prom, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}\n"
            + extra_scrape)


def start_sidecar(pythanos_bin: str, prom: Process, work: Path, name: str) -> Process:
    def launch(ports):
        p = REGISTRY.start(name, [pythanos_bin, "sidecar", f"--prometheus.url={prom.url}",
                                  f"--tsdb.path={work / prom.name}", f"--grpc-address=127.0.0.1:{ports[0]}",
                                  f"--http-address=127.0.0.1:{ports[1]}"], work)
        p.url, p.port, p.extra["grpc"] = f"http://127.0.0.1:{ports[1]}", ports[1], f"127.0.0.1:{ports[0]}"
        return p

    return start_on_free_ports(2, launch, lambda p: p.wait_http_ready("/-/ready", 90))


def start_querier(pythanos_bin: str, work: Path, endpoints: list[str], strict: list[str] = ()) -> Process:
    """Our querier; ready once it answers ``up`` from every endpoint's Prometheus."""
    def launch(ports):
        p = REGISTRY.start("pythanos-query", [pythanos_bin, "query", f"--http-address=127.0.0.1:{ports[0]}",
                                              f"--grpc-address=127.0.0.1:{ports[1]}",
                                              *[f"--endpoint={e}" for e in endpoints],
                                              *[f"--endpoint-strict={e}" for e in strict]], work)
        p.url, p.port = f"http://127.0.0.1:{ports[0]}", ports[0]
        return p

    want = len(endpoints) + len(strict)

    def answers(p):
        p.wait_http_ready("/-/ready", 60)
        p.wait_ready(lambda: len({s["metric"]["cluster"] for s in get_json(p.url + "/api/v1/query?query=up")[1]
                                  ["data"]["result"]}) == want, 60, what="up from every endpoint")

    return start_on_free_ports(2, launch, answers)


def start_alertmanager(binary: str, work: Path, hook: Webhook) -> Process:
    """Grouped by alert and ruler, flushed every second, resolved alerts notified too."""
    def launch(ports):
        cfg = work / "am.yml"
        cfg.write_text("route: {receiver: hook, group_by: [alertname, ruler], group_wait: 0s, group_interval: 1s,"
                       " repeat_interval: 1h}\n"
                       f"receivers: [{{name: hook, webhook_configs: [{{url: '{hook.url}', send_resolved: true}}]}}]\n")
        p = REGISTRY.start("alertmanager", [binary, f"--config.file={cfg}", f"--storage.path={work / 'am'}",
                                            f"--web.listen-address=127.0.0.1:{ports[0]}", "--cluster.listen-address="],
                           work)
        p.url, p.port = f"http://127.0.0.1:{ports[0]}", ports[0]
        return p

    return start_on_free_ports(1, launch, lambda p: p.wait_http_ready("/-/ready", 60))


# ---------------------------------------------------------------------------------------------- reading

def samples(p: Process, name: str) -> dict[tuple, float]:
    """``name``'s samples on ``p``'s /metrics: sorted label pairs -> value."""
    code, body = http_get(p.url + "/metrics")
    assert code == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def failures(p: Process, group: str) -> float:
    """``prometheus_rule_evaluation_failures_total`` of the group named ``group``."""
    got = [v for k, v in samples(p, "prometheus_rule_evaluation_failures_total").items()
           if dict(k)["rule_group"].endswith(";" + group)]
    assert len(got) == 1, (group, got)
    return got[0]


def by_rule(p: Process) -> dict[str, dict]:
    return {r["name"]: dict(r, group=g["name"]) for g in rules(p)["data"]["groups"] for r in g["rules"]}


def alerts(p: Process) -> dict[str, dict]:
    """The ruler's active alerts by name (one instance each in these rules)."""
    return {a["labels"]["alertname"]: a for a in get_json(p.url + "/api/v1/alerts")[1]["data"]["Alerts"] or []}


def at_am(am: Process, ruler: str) -> dict[str, dict]:
    """The active alerts the Alertmanager holds from ``ruler``, by name."""
    _, got = get_json(am.url + "/api/v2/alerts")
    return {a["labels"]["alertname"]: a for a in got if a["labels"].get("ruler") == ruler}


# ---------------------------------------------------------------------------------------------- tests

OUTAGE_RULES = """
groups:
- name: alerting
  interval: 1s
  rules:
  - alert: Up
    expr: sum by (job) (up) > 0
    for: 2s
    labels: {severity: page}
  - alert: LongPending
    expr: vector(1)
    for: 1h
- name: recording
  interval: 1s
  rules:
  - record: job:up:sum
    expr: sum by (job) (up)
"""


def start_outage_stack(tmp_path, started: list, prometheus3_bin: str, pythanos_bin: str, alertmanager_bin: str,
                       hook: "Webhook") -> tuple[Process, Process, Path]:
    """Prometheus + our sidecar + our querier, an Alertmanager notifying ``hook`` and OUTAGE_RULES
    written out: (querier, Alertmanager, rule file). Each process joins ``started`` as it starts."""
    prom = start_prometheus(prometheus3_bin, tmp_path, "prometheus", "c1")
    started.append(prom)
    sidecar = start_sidecar(pythanos_bin, prom, tmp_path, "sidecar")
    started.append(sidecar)
    query = start_querier(pythanos_bin, tmp_path / "query", [sidecar.extra["grpc"]])
    started.append(query)
    am = start_alertmanager(alertmanager_bin, tmp_path, hook)
    started.append(am)
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(OUTAGE_RULES)
    return query, am, rule_file


def test_querier_down_then_back(tmp_path, prometheus3_bin, pythanos_bin, thanos_bin, alertmanager_bin):
    """The querier stops, then starts again on the same port.

    While it is gone, every rule of our ruler and of a real thanos rule is ``err`` with Thanos'
    ``lastError`` (``/api/v1/rules`` of the two equal), failures are counted per group, and the
    alerts keep their state (firing stays firing, pending stays pending, active-since unchanged),
    as Prometheus keeps an alerting rule's alerts when its query fails. Then the difference:
    Prometheus (so thanos rule) re-sends nothing while the query fails, so the Alertmanager
    resolves its alert 4 x max(interval, resend delay) later (a 'resolved' notification) and
    fires it again when the querier is back; ours keeps re-sending the last known alerts, so the
    Alertmanager keeps the alert and notifies nothing — for up to ``--for-outage-tolerance``:
    a ruler of ours with a 2s tolerance stops re-sending and its alert resolves as Thanos'.
    Once the querier is back every rule is ``ok`` again and the failures stop increasing.
    """
    hook = Webhook()
    started: list[Process] = []
    try:
        query, am, rule_file = start_outage_stack(tmp_path, started, prometheus3_bin, pythanos_bin,
                                                  alertmanager_bin, hook)
        rulers = {}
        for name, binary, extra in (("ours", pythanos_bin, ()), ("thanos", thanos_bin, ()),
                                    ("short", pythanos_bin, ("--for-outage-tolerance=2s",))):
            rulers[name] = start_ruler(binary, tmp_path / name, rule_file, query.url, *extra,
                                       label=f'ruler="{name}"', am=am.url, thanos=name == "thanos")
            started.append(rulers[name])
        procs = tuple(started)

        def healthy(p: Process) -> bool:
            return all(r["health"] == "ok" for r in by_rule(p).values())

        for name, r in rulers.items():
            wait_for(lambda: healthy(r) and alerts(r)["Up"]["state"] == "firing", f"{name}: Up firing", procs=procs)
            wait_for(lambda: "Up" in at_am(am, name), f"{name}'s Up at the Alertmanager", procs=procs)
        before = {name: alerts(r) for name, r in rulers.items()}
        starts_at = at_am(am, "ours")["Up"]["startsAt"]

        query.stop()
        started.remove(query)
        for name, r in rulers.items():
            wait_for(lambda: all(x["health"] == "err" for x in by_rule(r).values()), f"{name}: every rule err",
                     procs=tuple(started))
        for name in ("ours", "short"):
            wait_for(lambda: failures(rulers[name], "alerting") >= 3 and failures(rulers[name], "recording") >= 3,
                     f"{name}: failures counted per group", procs=(rulers[name],))
        ours, theirs = rulers["ours"], rulers["thanos"]
        assert {x["lastError"] for x in by_rule(ours).values()} == {"no query API server reachable"}
        assert normalize(rules(ours)) == normalize(rules(theirs))
        # the failure counters are labelled as Thanos labels them (group by rewritten file and name, strategy)
        strip = lambda p, d: {tuple((k, v.replace(str(tmp_path / d), "<data>")) for k, v in key)  # noqa: E731
                              for key in samples(p, "prometheus_rule_evaluation_failures_total")}
        assert strip(ours, "ours") == strip(theirs, "thanos")
        assert len(strip(ours, "ours")) == 2

        # Thanos' alert resolves at the Alertmanager (nothing re-sent); so does ours under a 2s tolerance
        for name in ("thanos", "short"):
            wait_for(lambda: "resolved" in hook.statuses(name, "Up"), f"{name}: Up resolved by the Alertmanager",
                     procs=(am,), timeout=60)
            assert "Up" not in at_am(am, name)
        # ours is still there, as it was, and was never notified resolved
        assert at_am(am, "ours")["Up"]["status"]["state"] == "active"
        assert at_am(am, "ours")["Up"]["startsAt"] == starts_at
        assert hook.statuses("ours", "Up") == ["firing"]
        for name, r in rulers.items():  # the ruler's state is kept by all three
            now = alerts(r)
            assert {k: (a["state"], a["activeAt"]) for k, a in now.items()} == \
                {k: (a["state"], a["activeAt"]) for k, a in before[name].items()}, name
            assert now["Up"]["state"] == "firing" and now["LongPending"]["state"] == "pending", name

        query = restart(query)
        started.append(query)
        for name, r in rulers.items():
            wait_for(lambda: healthy(r), f"{name}: every rule ok again", procs=(r, query))
        # nothing re-fired from pending: same state and active-since as before the outage
        for name, r in rulers.items():
            now = alerts(r)
            assert {k: (a["state"], a["activeAt"]) for k, a in now.items()} == \
                {k: (a["state"], a["activeAt"]) for k, a in before[name].items()}, name
        # Thanos' alert comes back to the Alertmanager as a new notification; ours never left
        wait_for(lambda: hook.statuses("thanos", "Up")[-1:] == ["firing"], "thanos: Up fired again",
                 procs=(am,))
        assert hook.statuses("thanos", "Up") == ["firing", "resolved", "firing"]
        assert at_am(am, "ours")["Up"]["startsAt"] == starts_at
        # the failures stop increasing
        counts = {g: failures(ours, g) for g in ("alerting", "recording")}
        t0 = {g["name"]: g["lastEvaluation"] for g in rules(ours)["data"]["groups"]}
        seen = [t0]

        def two_more():
            now = {g["name"]: g["lastEvaluation"] for g in rules(ours)["data"]["groups"]}
            if all(now[k] != seen[-1][k] for k in now):
                seen.append(now)
            return len(seen) >= 3

        wait_for(two_more, "two more evaluations of each group", procs=(ours,))
        assert {g: failures(ours, g) for g in ("alerting", "recording")} == counts
        assert healthy(ours)
        assert hook.statuses("ours", "Up") == ["firing"]
    finally:
        for p in reversed(started):
            p.stop()
        hook.close()


def test_querier_hangs_then_answers(tmp_path, prometheus3_bin, pythanos_bin, thanos_bin, alertmanager_bin):
    """The querier is frozen (SIGSTOP: its sockets still accept, nothing answers), then thawed.

    An evaluation now hangs in its query past its interval: the rules keep the health and
    alerts of their last evaluation (nothing fails, nothing is counted) and the missed slots are
    counted once it returns, in both rulers. A real thanos rule sends nothing while it waits,
    so its alert resolves at the Alertmanager; ours sends the last known alerts each interval
    the evaluation overruns, so the Alertmanager keeps it and notifies nothing.
    """
    hook = Webhook()
    started: list[Process] = []
    query = None
    try:
        query, am, rule_file = start_outage_stack(tmp_path, started, prometheus3_bin, pythanos_bin,
                                                  alertmanager_bin, hook)
        rulers = {name: start_ruler(binary, tmp_path / name, rule_file, query.url, label=f'ruler="{name}"',
                                    am=am.url, thanos=name == "thanos")
                  for name, binary in (("ours", pythanos_bin), ("thanos", thanos_bin))}
        started += rulers.values()
        for name, r in rulers.items():
            wait_for(lambda: alerts(r)["Up"]["state"] == "firing", f"{name}: Up firing", procs=tuple(started))
            wait_for(lambda: "Up" in at_am(am, name), f"{name}'s Up at the Alertmanager", procs=tuple(started))
        before = {name: alerts(r) for name, r in rulers.items()}
        missed = lambda r: sum(v for k, v in samples(r, "prometheus_rule_group_iterations_missed_total").items()  # noqa: E731
                               if dict(k)["rule_group"].endswith(";alerting"))
        assert {name: missed(r) for name, r in rulers.items()} == {"ours": 0, "thanos": 0}

        os.killpg(query.pid, signal.SIGSTOP)
        wait_for(lambda: "resolved" in hook.statuses("thanos", "Up"), "thanos: Up resolved by the Alertmanager",
                 procs=(am,), timeout=60)
        assert at_am(am, "ours")["Up"]["status"]["state"] == "active"
        assert hook.statuses("ours", "Up") == ["firing"]
        for name, r in rulers.items():  # still as the last evaluation left them
            assert all(x["health"] == "ok" for x in by_rule(r).values()), name
            assert {k: (a["state"], a["activeAt"]) for k, a in alerts(r).items()} == \
                {k: (a["state"], a["activeAt"]) for k, a in before[name].items()}, name
        assert failures(rulers["ours"], "alerting") == 0

        os.killpg(query.pid, signal.SIGCONT)
        for name, r in rulers.items():
            wait_for(lambda: missed(r) > 0, f"{name}: the slots missed while it waited counted", procs=(r, query))
        wait_for(lambda: hook.statuses("thanos", "Up")[-1:] == ["firing"], "thanos: Up fired again", procs=(am,))
        for name, r in rulers.items():
            assert {k: (a["state"], a["activeAt"]) for k, a in alerts(r).items()} == \
                {k: (a["state"], a["activeAt"]) for k, a in before[name].items()}, name
        assert failures(rulers["ours"], "alerting") == 0
        assert hook.statuses("ours", "Up") == ["firing"]
    finally:
        if query is not None and query.alive():
            os.killpg(query.pid, signal.SIGCONT)
        for p in reversed(started):
            p.stop()
        hook.close()


STORE_DOWN_RULES = """
groups:
- name: critical
  interval: 1s
  rules:
  - alert: CriticalUp
    expr: sum(up) > 0
- name: tolerant
  interval: 1s
  partial_response_strategy: warn
  rules:
  - alert: TolerantUp
    expr: sum(up) > 0
  - alert: RuleEvaluationsFailing
    expr: increase(prometheus_rule_evaluation_failures_total{rule_group=~".*;critical"}[1m]) > 0
    labels: {severity: page}
    annotations: {summary: "{{ $labels.instance }} cannot evaluate {{ $labels.rule_group }}"}
"""


def test_one_store_down_abort_group_fails_warn_group_alerts(tmp_path, prometheus3_bin, pythanos_bin, thanos_bin,
                                                             alertmanager_bin):
    """Thanos #6223 (one store down under ``partial_response_strategy: abort`` stopped all alerting):
    two Prometheus + sidecar pairs behind our querier, B a strict endpoint (``--endpoint-strict``:
    the querier keeps asking it, so its failure reaches every query that selects it); our ruler
    and a real thanos rule over that querier; Prometheus A scrapes both rulers' /metrics.

    Sidecar B stops. The ``abort`` group fails every evaluation, counted under its own
    ``rule_group``; the ``warn`` group goes on (the store's failure a counted warning), its alert
    stays firing at the Alertmanager, and its meta-alert on the abort group's failures
    (``increase(prometheus_rule_evaluation_failures_total{rule_group=~".*;critical"}[1m]) > 0``
    over the scraped metrics) fires and reaches the Alertmanager, from both rulers about both.

    What the real thanos rule does differently: its ``lastError`` is ``no query API server
    reachable`` (it drops the querier's answer), ours is that answer, naming store B; and the
    abort group's firing alert resolves at the Alertmanager once its ``endsAt`` passes, while ours
    keeps sending it (see the module doc). B is strict because a plain endpoint that fails its
    health check (every 5 s) is dropped from the querier's endpoint set, as Thanos' querier drops
    it: from then on the abort group evaluates over A alone and fails nothing (partial data, said
    nowhere), so when the failure shows would depend on that check.
    """
    hook = Webhook()
    started: list[Process] = []
    try:
        prom_a = start_prometheus(prometheus3_bin, tmp_path, "prom-a", "a")
        started.append(prom_a)
        prom_b = start_prometheus(prometheus3_bin, tmp_path, "prom-b", "b")
        started.append(prom_b)
        side_a = start_sidecar(pythanos_bin, prom_a, tmp_path, "sidecar-a")
        started.append(side_a)
        side_b = start_sidecar(pythanos_bin, prom_b, tmp_path, "sidecar-b")
        started.append(side_b)
        query = start_querier(pythanos_bin, tmp_path / "query", [side_a.extra["grpc"]], strict=[side_b.extra["grpc"]])
        started.append(query)
        am = start_alertmanager(alertmanager_bin, tmp_path, hook)
        started.append(am)
        rule_file = tmp_path / "rules.yaml"
        rule_file.write_text(STORE_DOWN_RULES)
        rulers = {name: start_ruler(binary, tmp_path / name, rule_file, query.url, label=f'ruler="{name}"',
                                    am=am.url, thanos=name == "thanos")
                  for name, binary in (("ours", pythanos_bin), ("thanos", thanos_bin))}
        started += rulers.values()
        addr = {name: urllib.parse.urlsplit(r.url).netloc for name, r in rulers.items()}
        # Prometheus A scrapes the rulers too
        prom_a.extra["config"].write_text(prom_config(prom_a.port, "a", "- {job_name: rulers, static_configs: "
                                                      f"[{{targets: ['{addr['ours']}', '{addr['thanos']}']}}]}}\n"))
        os.kill(prom_a.pid, signal.SIGHUP)
        procs = tuple(started)
        wait_for(lambda: len([s for s in get_json(query.url + '/api/v1/query?query=up{job="rulers"}==1')[1]["data"]
                              ["result"]]) == 2, "both rulers scraped by Prometheus A", procs=procs)
        for name, r in rulers.items():
            wait_for(lambda: all(x["health"] == "ok" for x in by_rule(r).values())
                     and alerts(r)["CriticalUp"]["state"] == alerts(r)["TolerantUp"]["state"] == "firing",
                     f"{name}: both groups evaluated, their alerts firing", procs=procs)
            wait_for(lambda: {"CriticalUp", "TolerantUp"} <= set(at_am(am, name)), f"{name}'s alerts at the Alertmanager",
                     procs=procs)
            assert "RuleEvaluationsFailing" not in alerts(r)
            assert failures(r, "critical") == failures(r, "tolerant") == 0, name

        side_b.stop()
        started.remove(side_b)
        procs = tuple(started)
        ours, theirs = rulers["ours"], rulers["thanos"]
        for name, r in rulers.items():
            wait_for(lambda: by_rule(r)["CriticalUp"]["health"] == "err", f"{name}: the abort group fails", procs=procs)
            wait_for(lambda: failures(r, "critical") >= 3, f"{name}: its failures counted", procs=procs)
        err = by_rule(ours)["CriticalUp"]["lastError"]
        assert err.startswith(f"query API server {query.url} answered 422 execution: ") and \
            f"Addr: {side_b.extra['grpc']} " in err, err
        assert by_rule(theirs)["CriticalUp"]["lastError"] == "no query API server reachable"
        warned = lambda r: samples(r, "thanos_rule_evaluation_with_warnings_total")[(("strategy", "warn"),)]  # noqa: E731
        for name, r in rulers.items():  # the warn group goes on: its queries answered with a warning
            w = warned(r)
            wait_for(lambda: warned(r) > w, f"{name}: the warn group evaluated with the store's warning", procs=procs)
            assert all(by_rule(r)[x]["health"] == "ok" for x in ("TolerantUp", "RuleEvaluationsFailing")), name
            assert alerts(r)["TolerantUp"]["state"] == "firing", name

        def meta_alerts(ruler: str) -> dict[str, dict]:
            _, got = get_json(am.url + "/api/v2/alerts")
            return {a["labels"]["instance"]: a for a in got if a["labels"].get("ruler") == ruler
                    and a["labels"]["alertname"] == "RuleEvaluationsFailing"}

        for name in rulers:  # the meta-alert, from each ruler about each ruler
            got = wait_for(lambda: (lambda m: m if set(m) == set(addr.values()) else None)(meta_alerts(name)),
                           f"{name}: RuleEvaluationsFailing about both rulers at the Alertmanager", procs=procs)
            for inst, who in ((addr["ours"], "ours"), (addr["thanos"], "thanos")):
                a = got[inst]
                assert a["labels"]["rule_group"] == \
                    f"{tmp_path / who / 'data'}/.tmp-rules/ABORT{rule_file};critical", a
                assert a["labels"]["strategy"] == "abort" and a["labels"]["severity"] == "page"
                assert a["annotations"]["summary"] == f"{inst} cannot evaluate {a['labels']['rule_group']}"
        # the abort group's alert: Thanos' resolves at the Alertmanager, ours is still sent
        wait_for(lambda: "resolved" in hook.statuses("thanos", "CriticalUp"),
                 "thanos: CriticalUp resolved by the Alertmanager", procs=procs, timeout=60)
        assert at_am(am, "ours")["CriticalUp"]["status"]["state"] == "active"
        assert hook.statuses("ours", "CriticalUp") == ["firing"]
        for name in rulers:  # the warn group's alert never left
            assert at_am(am, name)["TolerantUp"]["status"]["state"] == "active", name
            assert hook.statuses(name, "TolerantUp") == ["firing"], name
        assert failures(ours, "tolerant") == failures(theirs, "tolerant") == 0
    finally:
        for p in reversed(started):
            p.stop()
        hook.close()
