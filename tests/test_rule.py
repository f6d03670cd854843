"""``pythanos rule`` end to end, against real peers: Prometheus 3.9.1 scraped data behind our sidecar
and a real ``thanos query``; our ruler and a real ``thanos rule`` v0.42.4 given the same rule file
over that querier, both notifying one real Alertmanager; a real ``thanos query`` over both rulers'
StoreAPIs. Compared with the real ruler: the notifications, the recorded series, ``/api/v1/rules``
(with every filter) and ``/api/v1/alerts``; reload of a bad file; kill -9 and restart; stateless
mode remote-writing into a real Prometheus.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from peers import REGISTRY, Process, http_get, start_on_free_ports, start_thanos_query

pytestmark = pytest.mark.timeout(900)

RULES = """
groups:
- name: recording
  interval: 1s
  rules:
  - record: job:up:sum
    expr: sum(up) by (job)
    labels: {source: rec}
- name: alerting
  interval: 1s
  rules:
  - alert: AlwaysFiring
    expr: sum by (job) (up) > 0
    labels: {severity: page}
    annotations:
      summary: "{{ $labels.job }} has {{ $value }} targets up"
      cluster: "{{ $externalLabels.cluster }}"
  - alert: LongPending
    expr: vector(1)
    for: 1h
    keep_firing_for: 5m
    labels: {severity: "info"}
  - alert: NeverFires
    expr: vector(1) == 0
- name: warned
  partial_response_strategy: warn
  interval: 1s
  limit: 10
  rules:
  - record: one
    expr: vector(1)
"""

QUERY_URL = "http://query.example:9090"


# ---------------------------------------------------------------------------------------------- helpers

def get_json(url: str, timeout: float = 10.0):
    code, body = http_get(url, timeout=timeout)
    return code, json.loads(body) if body else None


def post(url: str, timeout: float = 30.0) -> tuple[int, str]:
    req = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(check, what: str, timeout: float = 90.0, procs: tuple = ()):
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` (and the logs)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for p in procs:
            assert p.alive(), f"{p.name} exited:\n{p.log(60)}"
        try:
            last = check()
        except Exception as e:  # noqa: BLE001 - not there yet
            last = e
        else:
            if last:
                return last
        time.sleep(0.3)
    logs = "\n".join(f"--- {p.name}\n{p.log(30)}" for p in procs)
    raise AssertionError(f"{what}: not seen within {timeout}s (last: {last!r})\n{logs}")


def start_ruler(binary: str, work: Path, rule_file: Path, query_url: str, *extra: str, label: str,
                am: str | None = None, thanos: bool = False) -> Process:
    """Our ruler (``binary`` the pythanos script) or a real ``thanos rule``, on free ports."""
    work.mkdir(parents=True, exist_ok=True)

    def launch(ports: list[int]) -> Process:
        http_port, grpc_port = ports
        args = [binary, "rule", f"--rule-file={rule_file}", f"--query={query_url}", f"--label={label}",
                '--label=cluster="c1"', "--eval-interval=1s", f"--data-dir={work / 'data'}",
                f"--http-address=127.0.0.1:{http_port}", f"--grpc-address=127.0.0.1:{grpc_port}",
                f"--alert.query-url={QUERY_URL}", "--resend-delay=1s", *extra]
        if am:
            args.append(f"--alertmanagers.url={am}")
        p = REGISTRY.start("thanos-rule" if thanos else "pythanos-rule", args, work)
        p.url, p.port = f"http://127.0.0.1:{http_port}", http_port
        p.extra.update(grpc=f"127.0.0.1:{grpc_port}")
        return p

    return start_on_free_ports(2, launch, lambda p: p.wait_http_ready("/-/ready", 120))


def start_rw_prometheus(binary: str, work: Path, port: int, name: str = "prometheus-rw") -> Process:
    """A real Prometheus 3.9.1 taking remote writes on ``port`` (nothing scraped)."""
    cfg = work / f"{name}.yml"
    cfg.write_text("global: {scrape_interval: 1m}\n")
    p = REGISTRY.start(name, [binary, f"--config.file={cfg}", f"--storage.tsdb.path={work / name}",
                              f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver"], work)
    p.url = f"http://127.0.0.1:{port}"
    return p


def restart(p: Process) -> Process:
    """The same command line again (same ports and data directory)."""
    q = REGISTRY.start(p.name, p.args, p.log_path.parent)
    q.url, q.port, q.extra = p.url, p.port, dict(p.extra)
    q.wait_http_ready("/-/ready", 120)
    return q


def metric(p: Process, name: str) -> float | None:
    code, body = http_get(p.url + "/metrics")
    assert code == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def rules(p: Process, query: str = "") -> dict:
    code, body = get_json(p.url + "/api/v1/rules" + (("?" + query) if query else ""))
    assert code == 200, body
    return body


def evaluated(p: Process) -> bool:
    """Every rule evaluated at least once, healthy."""
    groups = rules(p)["data"]["groups"]
    return bool(groups) and all(r["health"] == "ok" for g in groups for r in g["rules"])


def normalize_rules(body: dict) -> dict:
    """What may differ between two rulers evaluating the same rules: times, durations, the
    ``ruler`` external label."""
    body = json.loads(json.dumps(body))
    for g in body["data"]["groups"]:
        g["lastEvaluation"] = g["evaluationTime"] = "-"
        for r in g["rules"]:
            r["lastEvaluation"] = r["evaluationTime"] = "-"
            r["labels"].pop("ruler", None)
            for a in r.get("alerts", ()):
                a["activeAt"] = "-"
    return body


def normalize_alerts(body: dict) -> list:
    alerts = json.loads(json.dumps(body["data"]["Alerts"] or []))
    for a in alerts:
        a["activeAt"] = "-"
    return sorted(alerts, key=lambda a: json.dumps(a, sort_keys=True))


# ---------------------------------------------------------------------------------------------- the stack

@pytest.fixture(scope="module")
def stack(tmp_path_factory, prometheus3_bin, thanos_bin, pythanos_bin, alertmanager_bin):
    """Prometheus 3.9.1 <- our sidecar <- a real thanos query <- (our ruler, thanos rule) -> Alertmanager;
    a second thanos query over both rulers' StoreAPIs."""
    work = tmp_path_factory.mktemp("rule-stack")
    started: list[Process] = []
    try:
        def prom_launch(ports):
            cfg = work / "prom.yml"
            cfg.write_text(f"global: {{scrape_interval: 1s, external_labels: {{cluster: c1, replica: p0}}}}\n"
                           f"scrape_configs: [{{job_name: prom, static_configs: [{{targets: ['127.0.0.1:{ports[0]}']}}]}}]\n")
            p = REGISTRY.start("prometheus", [prometheus3_bin, f"--config.file={cfg}",
                                              f"--storage.tsdb.path={work / 'prom'}",
                                              f"--web.listen-address=127.0.0.1:{ports[0]}"], work, session=True)
            p.url = f"http://127.0.0.1:{ports[0]}"
            started.append(p)
            return p

        prom = start_on_free_ports(1, prom_launch, lambda p: p.wait_http_ready("/-/ready", 90))

        def sidecar_launch(ports):
            p = REGISTRY.start("pythanos-sidecar", [pythanos_bin, "sidecar", f"--prometheus.url={prom.url}",
                                                    f"--tsdb.path={work / 'prom'}",
                                                    f"--grpc-address=127.0.0.1:{ports[0]}",
                                                    f"--http-address=127.0.0.1:{ports[1]}"], work, session=True)
            p.url, p.extra["grpc"] = f"http://127.0.0.1:{ports[1]}", f"127.0.0.1:{ports[0]}"
            started.append(p)
            return p

        sidecar = start_on_free_ports(2, sidecar_launch, lambda p: p.wait_http_ready("/-/ready", 90))
        query = start_thanos_query(thanos_bin, [sidecar.extra["grpc"]], work / "query")
        started.append(query)
        wait_for(lambda: get_json(query.url + "/api/v1/query?query=up")[1]["data"]["result"], "up via the querier",
                 procs=(query,))

        def am_launch(ports):
            cfg = work / "am.yml"
            cfg.write_text("route: {receiver: r, group_wait: 0s}\nreceivers: [{name: r}]\n")
            p = REGISTRY.start("alertmanager", [alertmanager_bin, f"--config.file={cfg}",
                                                f"--storage.path={work / 'am'}",
                                                f"--web.listen-address=127.0.0.1:{ports[0]}",
                                                "--cluster.listen-address="], work, session=True)
            p.url = f"http://127.0.0.1:{ports[0]}"
            started.append(p)
            return p

        am = start_on_free_ports(1, am_launch, lambda p: p.wait_http_ready("/-/ready", 60))
        rule_file = work / "rules.yaml"
        rule_file.write_text(RULES)
        ours = start_ruler(pythanos_bin, work / "ours", rule_file, query.url, label='ruler="r0"', am=am.url)
        started.append(ours)
        theirs = start_ruler(thanos_bin, work / "thanos", rule_file, query.url, label='ruler="thanos"', am=am.url,
                             thanos=True)
        started.append(theirs)
        over_rulers = start_thanos_query(thanos_bin, [ours.extra["grpc"], theirs.extra["grpc"]], work / "query2")
        started.append(over_rulers)
        for r in (ours, theirs):
            wait_for(lambda: evaluated(r), f"{r.name}: every rule evaluated", procs=(r,))
        yield dict(prom=prom, sidecar=sidecar, query=query, am=am, ours=ours, theirs=theirs,
                   over_rulers=over_rulers, rule_file=rule_file, work=work)
    finally:
        for p in reversed(started):
            p.stop()


# ---------------------------------------------------------------------------------------------- tests

def test_alert_reaches_alertmanager_as_thanos_sends_it(stack):
    """The same alert from both rulers at the real Alertmanager: same labels (bar the ruler
    label), annotations rendered alike, same generatorURL."""
    am = stack["am"]

    def by_ruler():
        _, alerts = get_json(am.url + "/api/v2/alerts")
        got = {a["labels"].get("ruler"): a for a in alerts if a["labels"].get("alertname") == "AlwaysFiring"}
        return got if {"r0", "thanos"} <= set(got) else None

    got = wait_for(by_ruler, "AlwaysFiring from both rulers at Alertmanager", procs=(stack["ours"],))
    ours, theirs = got["r0"], got["thanos"]
    assert {k: v for k, v in ours["labels"].items() if k != "ruler"} == \
        {k: v for k, v in theirs["labels"].items() if k != "ruler"}
    assert ours["labels"]["cluster"] == "c1" and ours["labels"]["job"] == "prom"
    assert ours["annotations"] == theirs["annotations"] == {"summary": "prom has 1 targets up", "cluster": "c1"}
    assert ours["generatorURL"] == theirs["generatorURL"]
    assert ours["generatorURL"].startswith(QUERY_URL + "/graph?g0.expr=")
    assert ours["status"]["state"] == "active"
    # pending and inactive alerts are never sent
    _, alerts = get_json(am.url + "/api/v2/alerts")
    assert not [a for a in alerts if a["labels"]["alertname"] in ("LongPending", "NeverFires")]


def test_recorded_series_served_over_storeapi_to_a_real_querier(stack):
    """A real thanos query over both rulers' StoreAPIs: the recorded series of each, equal but
    for the ruler label (the external labels on it, as Thanos' TSDB store puts them)."""
    q = stack["over_rulers"]

    def both():
        _, body = get_json(q.url + "/api/v1/query?query=job:up:sum")
        res = {s["metric"].get("ruler"): s for s in body["data"]["result"]}
        return res if {"r0", "thanos"} <= set(res) else None

    got = wait_for(both, "job:up:sum from both rulers", procs=(stack["ours"], q))
    strip = lambda s: {k: v for k, v in s["metric"].items() if k != "ruler"}  # noqa: E731
    assert strip(got["r0"]) == strip(got["thanos"]) == {"__name__": "job:up:sum", "job": "prom", "source": "rec",
                                                       "cluster": "c1"}
    assert got["r0"]["value"][1] == got["thanos"]["value"][1] == "1"
    # ALERTS and ALERTS_FOR_STATE are stored too, with the same labels as Thanos stores them
    # (from the evaluation after the for-state restore on: the second, which may not have run yet)
    for name in ("ALERTS", "ALERTS_FOR_STATE"):
        def by_ruler(name=name):
            _, body = get_json(q.url + "/api/v1/query?" + urllib.parse.urlencode({"query": name}))
            series = {}
            for s in body["data"]["result"]:
                series.setdefault(s["metric"].pop("ruler"), []).append(s["metric"])
            return series if {"r0", "thanos"} <= set(series) else None

        series = wait_for(by_ruler, f"{name} from both rulers", procs=(stack["ours"], q))
        key = lambda m: json.dumps(m, sort_keys=True)  # noqa: E731
        assert sorted(series["r0"], key=key) == sorted(series["thanos"], key=key), name
    # the querier sees our ruler as a rule component offering the Rules API, as the real one
    _, stores = get_json(q.url + "/api/v1/stores")
    assert sorted(stores["data"]) == ["rule"], stores
    _, body = get_json(q.url + "/api/v1/rules")
    mine = [r for g in body["data"]["groups"] for r in g["rules"] if r["labels"].get("ruler") == "r0"]
    assert sorted(r["name"] for r in mine) == ["AlwaysFiring", "LongPending", "NeverFires", "job:up:sum", "one"]


@pytest.mark.parametrize("query", [
    "", "type=alert", "type=record", "type=ALERT", "rule_name[]=AlwaysFiring&rule_name[]=one",
    "rule_group[]=alerting", "rule_group[]=warned&rule_name[]=AlwaysFiring", "match[]={severity=\"page\"}",
    "match[]={severity=~\"page|info\"}&match[]={source=\"rec\"}", "match[]={cluster=\"c1\"}&type=record",
    "file[]=/nonexistent.yaml",
])
def test_rules_api_answers_as_thanos_rule(stack, query):
    ours, theirs = stack["ours"], stack["theirs"]
    q = query.replace("{", "%7B").replace("}", "%7D").replace('"', "%22").replace("~", "%7E").replace("|", "%7C")
    want = normalize_rules(rules(theirs, q))
    got = normalize_rules(rules(ours, q))
    assert got == want
    if not query:  # the shape really is there: the groups, rules, alerts and states
        groups = {g["name"]: g for g in got["data"]["groups"]}
        assert sorted(groups) == ["alerting", "recording", "warned"]
        assert groups["warned"]["partialResponseStrategy"] == "WARN" and groups["warned"]["limit"] == 10
        states = {r["name"]: r.get("state") for r in groups["alerting"]["rules"]}
        assert states == {"AlwaysFiring": "firing", "LongPending": "pending", "NeverFires": "inactive"}


def test_rules_api_file_filter_and_errors_as_thanos(stack):
    ours, theirs = stack["ours"], stack["theirs"]
    f = urllib.parse.quote(str(stack["rule_file"]), safe="")
    assert normalize_rules(rules(ours, f"file[]={f}")) == normalize_rules(rules(theirs, f"file[]={f}"))
    assert len(rules(ours, f"file[]={f}")["data"]["groups"]) == 3
    for q in ("type=nope", "match[]=%7B", "match[]=up%5B5m%5D"):
        a = get_json(ours.url + "/api/v1/rules?" + q)
        b = get_json(theirs.url + "/api/v1/rules?" + q)
        assert a[0] == b[0] and a[1]["status"] == b[1]["status"] == "error", (q, a, b)
        assert a[1]["errorType"] == b[1]["errorType"], (q, a, b)
        if q == "type=nope":
            assert a[1]["error"] == b[1]["error"]


def test_alerts_api_answers_as_thanos_rule(stack):
    ours, theirs = stack["ours"], stack["theirs"]
    code, a = get_json(ours.url + "/api/v1/alerts")
    _, b = get_json(theirs.url + "/api/v1/alerts")
    assert code == 200 and list(a["data"]) == list(b["data"]) == ["Alerts"]
    got, want = normalize_alerts(a), normalize_alerts(b)
    assert got == want
    assert sorted((x["labels"]["alertname"], x["state"]) for x in got) == [("AlwaysFiring", "firing"),
                                                                           ("LongPending", "pending")]


def test_rules_and_alerts_pages(stack, chromium, tmp_path):
    """The web UI: the rules page lists every group and rule with its health, the alerts page the
    alerting rules by state with their active alerts; expressions link to --alert.query-url."""
    import aiohttp
    from browser import run

    ours = stack["ours"]

    async def scenario():
        async with aiohttp.ClientSession() as session:
            page = await chromium.page(session)
            await page.goto(ours.url + "/")
            await page.wait_for("document.querySelectorAll('section.alert-rule').length === 3", what="alert rules")
            sections = await page.eval("[...document.querySelectorAll('section.alert-rule')].map(s => "
                                       "[s.dataset.rule, s.className, s.querySelectorAll('tbody tr').length])")
            assert sections == [["AlwaysFiring", "alert-rule firing", 1], ["LongPending", "alert-rule pending", 1],
                                ["NeverFires", "alert-rule inactive", 0]], sections
            href = await page.eval("document.querySelector('section.alert-rule a.series').getAttribute('href')")
            assert href.startswith(QUERY_URL + "/graph?g0.expr="), href
            await page.goto(ours.url + "/rules")
            await page.wait_for("document.querySelectorAll('section.rule-group').length === 3", what="rule groups")
            rows = await page.eval("[...document.querySelectorAll('table.rules tbody tr')].map(tr => "
                                   "[tr.dataset.rule, tr.children[2].textContent])")
            assert sorted(rows) == sorted([["AlwaysFiring", "OK"], ["LongPending", "OK"], ["NeverFires", "OK"],
                                           ["job:up:sum", "OK"], ["one", "OK"]]), rows
            await page.screenshot(tmp_path / "rules.png")
            assert page.errors == [], page.errors

    run(scenario())


def test_reload_with_a_bad_file_keeps_the_rules(stack, pythanos_bin, thanos_bin, tmp_path):
    """POST /-/reload with a broken file: 500 naming the file, the previous rules still served and
    evaluated, thanos_rule_config_last_reload_successful 0 — as a real thanos rule does; a good
    file then loads on SIGHUP."""
    rulers = []
    for binary, name, thanos in ((pythanos_bin, "ours", False), (thanos_bin, "thanos", True)):
        f = tmp_path / f"{name}.yaml"
        f.write_text(RULES)
        rulers.append((start_ruler(binary, tmp_path / name, f, stack["query"].url, label=f'ruler="{name}"',
                                   thanos=thanos), f))
    try:
        for r, _ in rulers:
            wait_for(lambda: evaluated(r), f"{r.name} evaluated", procs=(r,))
            assert metric(r, "thanos_rule_config_last_reload_successful") == 1
        before = {r.name: normalize_rules(rules(r)) for r, _ in rulers}
        for r, f in rulers:
            f.write_text(RULES.replace("sum(up) by (job)", "sum(up) by (job"))
            code, text = post(r.url + "/-/reload")
            assert code == 500, (r.name, code, text)
            assert text.startswith("reloading rules failed: "), (r.name, text)
            if r.name == "pythanos-rule":  # ours names the file and the place (Thanos' text does not)
                assert str(f) in text and "recording" in text, text
            assert metric(r, "thanos_rule_config_last_reload_successful") == 0, r.name
            assert normalize_rules(rules(r)) == before[r.name], r.name
        ours = rulers[0][0]
        t0 = rules(ours)["data"]["groups"][0]["lastEvaluation"]
        wait_for(lambda: rules(ours)["data"]["groups"][0]["lastEvaluation"] != t0, "evaluation goes on",
                 procs=(ours,))
        assert ours.alive() and "reloading rules failed" in ours.log(200)
        for r, f in rulers:
            f.write_text(RULES + "  - record: two\n    expr: vector(2)\n")
            os.kill(r.pid, signal.SIGHUP)
        for r, _ in rulers:
            wait_for(lambda: [x["health"] for g in rules(r)["data"]["groups"] for x in g["rules"]
                              if x["name"] == "two"] == ["ok"], f"{r.name}: the new rule after SIGHUP", procs=(r,))
            assert metric(r, "thanos_rule_config_last_reload_successful") == 1
            assert metric(r, "thanos_rule_config_last_reload_success_timestamp_seconds") > 0
        same_file = lambda body: [dict(g, file="-") for g in normalize_rules(body)["data"]["groups"]]  # noqa: E731
        assert same_file(rules(rulers[0][0])) == same_file(rules(rulers[1][0]))
    finally:
        for r, _ in rulers:
            r.stop()


def _stored(grpc_addr: str, name: str) -> list[tuple[int, float]]:
    """Every sample of ``name`` the store at ``grpc_addr`` holds (StoreAPI Series, chunks decoded)."""
    from pythanos.storeapi.client import StoreClient
    from pythanos.tsdb.chunkenc import decode_xor
    from pythanos.tsdb.labels import Matcher

    async def go():
        async with StoreClient(grpc_addr, timeout=60) as c:
            out, _ = await c.series_list([Matcher("=", "__name__", name)])
        return out

    samples = []
    for s in asyncio.run(go()):
        for ch in s.chunks:
            t, v = decode_xor(ch.data)
            samples += zip(t.tolist(), v.tolist())
    return sorted(set(samples))


def _active_at(p: Process, alert: str) -> float | None:
    """Unix seconds the alert ``alert`` has been active since, per /api/v1/alerts (None: not active)."""
    import datetime as dt

    for a in get_json(p.url + "/api/v1/alerts")[1]["data"]["Alerts"] or []:
        if a["labels"]["alertname"] == alert:
            text = a["activeAt"].rstrip("Z")
            head, _, frac = text.partition(".")
            t = dt.datetime.fromisoformat(head).replace(tzinfo=dt.timezone.utc).timestamp()
            return t + float("0." + frac) if frac else t
    return None


def test_kill9_and_restart_keep_the_recorded_samples_and_for_state(stack, pythanos_bin, tmp_path):
    """kill -9: what was recorded is still served after the restart (WAL replay), and a pending
    alert (for: 1h) keeps its progress: restored from ALERTS_FOR_STATE in the ruler's own TSDB, its
    active-since is from before the restart (shifted by the downtime, as Prometheus restores)."""
    f = tmp_path / "rules.yaml"
    f.write_text(RULES)
    r = start_ruler(pythanos_bin, tmp_path / "r", f, stack["query"].url, label='ruler="k"')
    try:
        wait_for(lambda: len(_stored(r.extra["grpc"], "job:up:sum")) >= 5, "5 recorded samples", procs=(r,))
        wait_for(lambda: (_active_at(r, "LongPending") or time.time()) < time.time() - 20,
                 "LongPending pending for 20s", procs=(r,))
        before = _stored(r.extra["grpc"], "job:up:sum")
        os.killpg(r.pid, signal.SIGKILL)
        r.proc.wait(10)
        restarted = time.time()
        r = restart(r)
        after = _stored(r.extra["grpc"], "job:up:sum")
        assert set(before) <= set(after), (len(before), len(after))
        wait_for(lambda: len(_stored(r.extra["grpc"], "job:up:sum")) > len(after), "evaluation after restart",
                 procs=(r,))
        # restored after the second evaluation as (second evaluation - 20s pending), before the
        # restart; unrestored it would be active since after the restart
        wait_for(lambda: (_active_at(r, "LongPending") or time.time()) < restarted,
                 "LongPending's for state restored", procs=(r,), timeout=30)
    finally:
        r.stop()


def test_stateless_ruler_remote_writes_as_thanos(stack, pythanos_bin, thanos_bin, prometheus3_bin, tmp_path):
    """--remote-write.config: no TSDB, no StoreAPI; the recorded series and ALERTS arrive at a real
    Prometheus 3.9.1 with the external labels, as a stateless thanos rule writes them."""
    prom = start_on_free_ports(1, lambda ports: start_rw_prometheus(prometheus3_bin, tmp_path, ports[0]),
                               lambda p: p.wait_http_ready("/-/ready", 90))
    rw = f"--remote-write.config=remote_write: [{{url: '{prom.url}/api/v1/write', name: sink}}]"
    f = tmp_path / "rules.yaml"
    f.write_text(RULES)
    started = [prom]
    try:
        for binary, name, thanos in ((pythanos_bin, "ours", False), (thanos_bin, "thanos", True)):
            started.append(start_ruler(binary, tmp_path / name, f, stack["query"].url, rw,
                                       label=f'ruler="{name}"', thanos=thanos))

        def series(q: str):
            _, body = get_json(prom.url + "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
            got = {}
            for s in body["data"]["result"]:
                got.setdefault(s["metric"].pop("ruler", None), []).append(s["metric"])
            return got if {"ours", "thanos"} <= set(got) else None

        for q in ("job:up:sum", "ALERTS", "one"):
            got = wait_for(lambda: series(q), f"{q} remote-written by both", procs=tuple(started))
            key = lambda m: json.dumps(m, sort_keys=True)  # noqa: E731
            assert sorted(got["ours"], key=key) == sorted(got["thanos"], key=key), q
            assert all(m["cluster"] == "c1" for m in got["ours"])
        # as thanos rule's agent DB: a WAL and a lock in --data-dir, no blocks, no head chunks
        # (thanos rule also keeps its copy of the rule files in .tmp-rules)
        for name in ("ours", "thanos"):
            data = tmp_path / name / "data"
            assert (data / "wal").is_dir() and (data / "lock").exists(), name
            assert not [p for p in data.iterdir() if p.name not in ("wal", "lock", ".tmp-rules")], name
        ours = started[1]
        assert metric(ours, "prometheus_remote_storage_samples_total") > 0
        assert rules(ours)["data"]["groups"]
    finally:
        for p in reversed(started):
            p.stop()


def _status(url: str, method: str = "GET") -> int:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    req = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_route_prefix_and_query_endpoints_from_config_and_sd_files(stack, pythanos_bin, thanos_bin, tmp_path):
    """--web.route-prefix: the API, reload and pages under it, / redirected to it, as a real thanos
    rule answers; the querier given by --query.config (static) and by --query.sd-files."""
    q = urllib.parse.urlsplit(stack["query"].url).netloc
    sd = tmp_path / "sd.yaml"
    sd.write_text(f"- targets: ['{q}']\n")
    f = tmp_path / "rules.yaml"
    f.write_text(RULES)
    started = []
    try:
        for binary, name, thanos, how in (
                (pythanos_bin, "ours", False, [f"--query.config=[{{static_configs: ['{q}'], scheme: http}}]"]),
                (thanos_bin, "thanos", True, [f"--query.config=[{{static_configs: ['{q}'], scheme: http}}]"]),
                (pythanos_bin, "ours-sd", False, [f"--query.sd-files={sd}"])):
            work = tmp_path / name
            work.mkdir()

            def launch(ports, binary=binary, name=name, how=how, work=work):
                args = [binary, "rule", f"--rule-file={f}", f'--label=ruler="{name}"', "--eval-interval=1s",
                        f"--data-dir={work / 'data'}", f"--http-address=127.0.0.1:{ports[0]}",
                        f"--grpc-address=127.0.0.1:{ports[1]}", "--web.route-prefix=/pre", *how]
                p = REGISTRY.start(name, args, work)
                p.url = f"http://127.0.0.1:{ports[0]}"
                return p

            started.append(start_on_free_ports(2, launch, lambda p: p.wait_http_ready("/-/ready", 120)))
        for r in started:
            wait_for(lambda: get_json(r.url + "/pre/api/v1/rules")[1]["data"]["groups"] and all(
                x["health"] == "ok" for g in get_json(r.url + "/pre/api/v1/rules")[1]["data"]["groups"]
                for x in g["rules"]), f"{r.name}: rules evaluated over the configured querier", procs=(r,))
        paths = [("/", "GET"), ("/pre/api/v1/rules", "GET"), ("/pre/api/v1/alerts", "GET"), ("/api/v1/rules", "GET"),
                 ("/pre/-/reload", "POST"), ("/pre/alerts", "GET"), ("/metrics", "GET"), ("/-/ready", "GET")]
        ours, theirs = started[0], started[1]
        assert [_status(ours.url + p, m) for p, m in paths] == [_status(theirs.url + p, m) for p, m in paths]
        assert _status(ours.url + "/pre/rules") == 200
    finally:
        for p in started:
            p.stop()


def test_blocks_shipped_with_source_ruler(stack, pythanos_bin, thanos_bin, tmp_path):
    """With --objstore.config the ruler's blocks go to the bucket with its external labels and
    ``thanos.source=ruler``, as a real ``thanos tools bucket inspect`` reads them."""
    import csv
    import io
    import subprocess

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    objstore = f"--objstore.config={{type: FILESYSTEM, config: {{directory: {bucket}}}}}"
    f = tmp_path / "rules.yaml"
    f.write_text(RULES)
    r = start_ruler(pythanos_bin, tmp_path / "r", f, stack["query"].url, objstore, "--tsdb.block-duration=3s",
                    label='ruler="shipper"')
    try:
        def inspected():
            run = subprocess.run([thanos_bin, "tools", "bucket", "inspect", objstore, "--output=csv"],
                                 capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stderr[-500:]
            rows = list(csv.DictReader(io.StringIO(run.stdout)))
            return rows if rows and all(int(x["#SAMPLES"]) > 0 for x in rows) else None

        rows = wait_for(inspected, "a block in the bucket", timeout=120, procs=(r,))
        assert {(x["LABELS"], x["SOURCE"], x["RESOLUTION"]) for x in rows} == \
            {("cluster=c1,ruler=shipper", "ruler", "0s")}, rows
    finally:
        r.stop()


#: families a real thanos rule has that ours does not yet (none now; kept so a new one shows up by name)
NOT_YET: set[str] = set()


#: the head metrics every TSDB user watches (what was recorded)
HEAD = {"prometheus_tsdb_head_samples_appended_total", "prometheus_tsdb_head_series",
        "prometheus_tsdb_head_series_created_total", "prometheus_tsdb_head_min_time", "prometheus_tsdb_head_max_time"}


def test_metric_families_as_thanos_rule(stack):
    """The ruler's own metric families (thanos_rule_*, prometheus_rule_*, thanos_alert_*, the main
    TSDB head ones) that a real thanos rule exposes, ours exposes under the same names and types."""
    def families(p: Process) -> dict[str, str]:
        _, body = http_get(p.url + "/metrics")
        out = {}
        for line in body.decode().splitlines():
            if line.startswith("# TYPE "):
                _, _, name, typ = line.split(" ", 3)
                if (name.startswith(("thanos_rule_", "prometheus_rule_", "thanos_alert_")) and not
                        name.endswith("_created")) or name in HEAD:
                    out[name] = typ
        return out

    ours, theirs = families(stack["ours"]), families(stack["theirs"])
    missing = {n for n in theirs if n not in ours}
    assert missing == NOT_YET & set(theirs), sorted(missing)
    assert {n: t for n, t in theirs.items() if n in ours} == {n: ours[n] for n in theirs if n in ours}


def test_status_endpoints_as_thanos_rule(stack):
    """/api/v1/status/{flags,runtimeinfo,buildinfo} (Thanos' BaseAPI): the same flags with the same
    values as thanos rule prints them (defaults, durations of both kinds, repeated flags), but for
    the ones the two were started with differently; the same fields in the other two."""
    def data(p: Process, what: str) -> dict:
        code, body = get_json(p.url + "/api/v1/status/" + what)
        assert code == 200 and body["status"] == "success", body
        return body["data"]

    ours, theirs = data(stack["ours"], "flags"), data(stack["theirs"], "flags")
    assert set(ours) == set(theirs)
    differ = {k for k in theirs if ours[k] != theirs[k]}
    assert differ == {"data-dir", "grpc-address", "http-address", "label"}, {k: (ours[k], theirs[k]) for k in differ}
    assert ours["label"] == 'ruler="r0",cluster="c1"' and theirs["label"] == 'ruler="thanos",cluster="c1"'
    assert theirs["tsdb.retention"] == ours["tsdb.retention"] == "2d"  # a model.Duration
    assert theirs["for-grace-period"] == ours["for-grace-period"] == "10m0s"  # a time.Duration
    for what in ("runtimeinfo", "buildinfo"):
        o, t = data(stack["ours"], what), data(stack["theirs"], what)
        assert {k: type(v) for k, v in o.items()} == {k: type(v) for k, v in t.items()}, what


def test_alertmanager_down_then_up(stack, pythanos_bin, alertmanager_bin, tmp_path):
    """An Alertmanager that is not there never holds up evaluation (rules keep being evaluated,
    send errors counted); once it is up, the firing alert reaches it (resent every --resend-delay)."""
    from ports import free_port

    port = free_port()
    f = tmp_path / "rules.yaml"
    f.write_text(RULES)
    r = start_ruler(pythanos_bin, tmp_path / "r", f, stack["query"].url, label='ruler="am"',
                    am=f"http://127.0.0.1:{port}")
    am = None
    try:
        wait_for(lambda: (metric(r, "thanos_alert_sender_errors_total") or 0) > 0, "send errors counted",
                 procs=(r,))
        t0 = rules(r)["data"]["groups"][1]["lastEvaluation"]
        wait_for(lambda: rules(r)["data"]["groups"][1]["lastEvaluation"] != t0, "evaluation goes on", procs=(r,))
        cfg = tmp_path / "am.yml"
        cfg.write_text("route: {receiver: r, group_wait: 0s}\nreceivers: [{name: r}]\n")
        am = REGISTRY.start("alertmanager", [alertmanager_bin, f"--config.file={cfg}", f"--storage.path={tmp_path / 'am'}",
                                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            tmp_path)
        am.url = f"http://127.0.0.1:{port}"
        am.wait_http_ready("/-/ready", 60)
        wait_for(lambda: [a for a in get_json(am.url + "/api/v2/alerts")[1]
                          if a["labels"]["alertname"] == "AlwaysFiring" and a["labels"]["ruler"] == "am"],
                 "AlwaysFiring at the Alertmanager once it is up", procs=(r, am))
    finally:
        r.stop()
        if am is not None:
            am.stop()


def test_stateless_remote_write_endpoint_down_then_up(stack, pythanos_bin, prometheus3_bin, tmp_path):
    """The remote-write endpoint is not there at first: batches are retried (counted), nothing
    fails. The ruler is killed with SIGKILL and started again meanwhile; once a real Prometheus
    listens there, the recorded series arrive, the first process's earliest samples too (they
    waited in the WAL; Thanos' queue starts from its start time and never sends them)."""
    from ports import free_port

    port = free_port()
    f = tmp_path / "rules.yaml"
    f.write_text(RULES)
    rw = f"--remote-write.config=remote_write: [{{url: 'http://127.0.0.1:{port}/api/v1/write', name: late}}]"
    r = start_ruler(pythanos_bin, tmp_path / "r", f, stack["query"].url, rw, label='ruler="late"')
    prom = None
    try:
        wait_for(lambda: (metric(r, "prometheus_remote_storage_samples_retried_total") or 0) > 0,
                 "retries counted", procs=(r,))
        first_eval = time.time()
        wait_for(lambda: (metric(r, "prometheus_rule_group_iterations_total") or 0) >= 3,
                 "three evaluations before the kill", procs=(r,))
        os.killpg(r.pid, signal.SIGKILL)
        r.proc.wait(10)
        killed = time.time()
        r = start_ruler(pythanos_bin, tmp_path / "r", f, stack["query"].url, rw, label='ruler="late"')
        prom = start_rw_prometheus(prometheus3_bin, tmp_path, port, "prometheus-late")
        prom.wait_http_ready("/-/ready", 90)

        def samples_between(a: float, b: float):  # what the ruler wrote in [a, b], by timestamp
            q = urllib.parse.urlencode({"query": f'count_over_time({{ruler="late"}}[{max(1, int(b - a))}s])',
                                        "time": f"{b:.3f}"})
            return get_json(prom.url + "/api/v1/query?" + q)[1]["data"]["result"]

        wait_for(lambda: samples_between(first_eval, killed), "the killed ruler's samples", procs=(r, prom))
        wait_for(lambda: samples_between(killed, time.time()), "the restarted ruler's samples", procs=(r, prom))
        assert metric(r, "prometheus_remote_storage_samples_failed_total") in (None, 0.0)
        assert metric(r, "prometheus_remote_storage_samples_dropped_total") in (None, 0.0)
    finally:
        r.stop()
        if prom is not None:
            prom.stop()


def test_store_limits_as_thanos(stack, pythanos_bin, thanos_bin, tmp_path):
    """--store.limits.request-series / -samples: a Series call past them fails with Thanos' status
    and text, as on a real thanos rule with the same limits."""
    from pythanos.storeapi.client import StoreClient
    from pythanos.tsdb.labels import Matcher

    f = tmp_path / "rules.yaml"
    f.write_text(RULES)
    started = []
    try:
        for binary, name, thanos, limit in ((pythanos_bin, "ours-s", False, "--store.limits.request-series=1"),
                                            (thanos_bin, "thanos-s", True, "--store.limits.request-series=1"),
                                            (pythanos_bin, "ours-c", False, "--store.limits.request-samples=100"),
                                            (thanos_bin, "thanos-c", True, "--store.limits.request-samples=100")):
            started.append(start_ruler(binary, tmp_path / name, f, stack["query"].url, limit, label=f'ruler="{name}"',
                                       thanos=thanos))

        async def series(addr: str):
            try:
                async with StoreClient(addr, timeout=30) as c:
                    got, _ = await c.series_list([Matcher("=~", "__name__", "ALERTS.*|job:up:sum|one")])
                return len(got), ""
            except Exception as e:  # noqa: BLE001 - the status is the point
                return None, str(e)

        answers = {}
        for name, r in zip(("ours-s", "thanos-s", "ours-c", "thanos-c"), started):  # refused once 2 series
            answers[name] = wait_for(lambda: (lambda a: a if a[0] is None else None)(asyncio.run(
                series(r.extra["grpc"]))), f"{r.name}: the limit hit", procs=(r,))
        for ours, theirs, want in (("ours-s", "thanos-s", "failed to send series: limit 1 violated (got 2)"),
                                   ("ours-c", "thanos-c", "failed to send samples: limit 100 violated (got 120)")):
            assert want in answers[ours][1] and want in answers[theirs][1], answers
            code = lambda text: text.split(": ")[1]  # noqa: E731 - 'store <addr> <method>: CODE: ...'
            assert code(answers[ours][1]) == code(answers[theirs][1]) == "UNKNOWN", answers
    finally:
        for p in started:
            p.stop()


def test_pages_take_their_link_prefix_from_the_prefix_header():
    """--web.prefix-header: behind a proxy that strips a path, the pages' links carry the prefix
    the proxy names in that header (HTML-escaped); without the header, none."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from pythanos.web.rules import add_rules_ui_routes

    async def go():
        app = web.Application()
        add_rules_ui_routes(app, "", component="rule", prefix_header="X-Forwarded-Prefix")
        async with TestClient(TestServer(app)) as c:
            plain = await (await c.get("/alerts")).text()
            behind = await (await c.get("/alerts", headers={"X-Forwarded-Prefix": "/ruler/"})).text()
            hostile = await (await c.get("/rules", headers={"X-Forwarded-Prefix": '/"><script>'})).text()
        return plain, behind, hostile

    plain, behind, hostile = asyncio.run(go())
    assert 'href="/static/app.css"' in plain and "/ruler/" not in plain
    assert 'href="/ruler/static/app.css"' in behind and 'href="/ruler/rules"' in behind
    assert '"><script>' not in hostile and "&quot;&gt;&lt;script&gt;" in hostile
