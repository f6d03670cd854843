"""Thanos' Rules API, against real peers: a real Prometheus 3.9.1 evaluating a rule file
(recording and alerting rules, firing, pending and inactive alerts, a templated label), our
sidecar beside a real ``thanos sidecar`` on it; a real ``thanos query`` and ours over either
answer ``/api/v1/rules`` and ``/api/v1/alerts`` byte for byte alike (evaluation times and
durations, which move on with every evaluation, normalised). Two Prometheus replicas differing
in their ``prom_replica`` external label are de-duplicated by ours as by ``thanos query
--query.replica-label``. Plus the library's pieces on their own (Go formats, the ruler's
conversion and filters).
"""
from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from pathlib import Path

import grpc
import pytest

from ports import free_ports
from peers import REGISTRY, Process, http_get, start_on_free_ports, start_thanos_query
from pythanos.storeapi import rules as rl
from pythanos.storeapi.client import StoreClient
from pythanos.storeapi.pb import rules_pb2
from test_receive import poll

pytestmark = pytest.mark.timeout(900)

RULES_A = """\
groups:
  - name: recording
    interval: 1s
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels:
          source: rules
      - record: job:scrape_duration:max
        expr: max by(job)(scrape_duration_seconds)
  - name: alerts
    interval: 1s
    rules:
      - alert: AlwaysFiring
        expr: vector(1) > 0
        labels:
          severity: page
          team: "{{ $value }}"
        annotations:
          summary: "value is {{ $value }}"
      - alert: PendingForAnHour
        expr: up{job="prometheus"} == 1
        for: 1h
        keep_firing_for: 5m
        labels:
          severity: warning
      - alert: TargetDown
        expr: up{job="extra"} == 0
        labels:
          severity: page
        annotations:
          description: "{{ $labels.instance }} of {{ $labels.job }} is down"
      - alert: NeverFires
        expr: absent(up)
"""

RULES_B = """\
groups:
  - name: other
    interval: 2s
    limit: 10
    rules:
      - record: instance:up:count
        expr: count(up)
"""


def prom_config(rule_dir: Path, replica: str, extra_target: str | None) -> str:
    jobs = ""
    if extra_target:
        jobs = f"""
  - job_name: extra
    static_configs: [{{targets: ['{extra_target}']}}]"""
    return f"""\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
  external_labels: {{cluster: c1, prom_replica: {replica}}}
rule_files: ['{rule_dir}/*.yml']
scrape_configs:
  - job_name: prometheus
    static_configs: [{{targets: ['PROM_SELF']}}]{jobs}
"""


def start_prom(prometheus_factory, prometheus3_bin, tmp_path: Path, replica: str, extra: bool,
               args: tuple = ()) -> Process:
    rule_dir = tmp_path / "rules"  # replicas share it: the same file names, as HA pairs have
    rule_dir.mkdir(exist_ok=True)
    (rule_dir / "a.yml").write_text(RULES_A)
    (rule_dir / "b.yml").write_text(RULES_B)
    dead = f"127.0.0.1:{free_ports(1)[0]}" if extra else None  # leased, never listened on: up == 0
    prom = prometheus_factory(binary=prometheus3_bin, name=f"prom-{replica}", extra_args=list(args),
                              config_yaml=prom_config(rule_dir, replica, dead).replace("PROM_SELF", "127.0.0.1:9"))
    # scrape itself (its port is known only now)
    cfg = Path(prom.extra["config_file"])
    cfg.write_text(cfg.read_text().replace("127.0.0.1:9", f"127.0.0.1:{prom.port}"))
    prom.proc.send_signal(1)  # SIGHUP: reload
    prom.extra["rule_dir"] = rule_dir

    def settled():
        code, body = http_get(prom.url + "/api/v1/alerts")
        alerts = json.loads(body)["data"]["alerts"] if code == 200 else []
        firing = sorted(a["labels"]["alertname"] for a in alerts if a["state"] == "firing")
        pending = sorted(a["labels"]["alertname"] for a in alerts if a["state"] == "pending")
        want = (["AlwaysFiring", "TargetDown"] if extra else ["AlwaysFiring"], ["PendingForAnHour"])
        return (firing, pending) == want, (firing, pending)

    poll(settled, 90, "Prometheus' alerts fire and pend")
    return prom


def start_sidecar(binary: str, kind: str, prom: Process, work: Path) -> Process:
    """Our sidecar or Thanos' next to ``prom``, with the same flags."""
    work.mkdir(parents=True, exist_ok=True)

    def launch(ports: list[int]) -> Process:
        grpc_port, http_port = ports
        p = REGISTRY.start(f"{kind}-sidecar", [binary, "sidecar", f"--prometheus.url={prom.url}",
                                               f"--tsdb.path={work / 'none'}", f"--grpc-address=127.0.0.1:{grpc_port}",
                                               f"--http-address=127.0.0.1:{http_port}"], work)
        p.url, p.port = f"http://127.0.0.1:{http_port}", http_port
        p.extra["grpc"] = f"127.0.0.1:{grpc_port}"
        return p

    return start_on_free_ports(2, launch, lambda p: p.wait_http_ready("/-/ready", 60))


def start_our_query(pythanos_bin: str, endpoints: list[str], work: Path, extra=("--query.replica-label=replica",)
                    ) -> Process:
    work.mkdir(parents=True, exist_ok=True)

    def launch(ports: list[int]) -> Process:
        h, g = ports
        p = REGISTRY.start("query", [pythanos_bin, "query", f"--http-address=127.0.0.1:{h}",
                                     f"--grpc-address=127.0.0.1:{g}", *extra,
                                     *[f"--endpoint={e}" for e in endpoints]], work)
        p.url, p.extra["grpc"] = f"http://127.0.0.1:{h}", f"127.0.0.1:{g}"
        return p

    def ready(p: Process) -> None:
        p.wait_http_ready("/-/ready", 60)

        def healthy() -> bool:
            code, body = http_get(p.url + "/api/v1/stores", timeout=2)
            ok = {s["name"] for g in json.loads(body)["data"].values() for s in g if not s.get("lastError")}
            return code == 200 and all(e in ok for e in endpoints)

        p.wait_ready(healthy, 60, what="all endpoints healthy")

    return start_on_free_ports(2, launch, ready)


@pytest.fixture
def started():
    """Processes a test started, stopped when it ends (whatever the outcome)."""
    procs: list[Process] = []
    yield procs
    for p in procs:
        p.stop()


def two_replicas(prometheus_factory, prometheus3_bin, pythanos_bin, thanos_bin, tmp_path: Path, started: list,
                 extra_a: bool) -> tuple[Process, Process, dict[str, list[str]]]:
    """Prometheus replicas a and b (``extra_a``: a has a target down) with our sidecar and Thanos' on each:
    (a, b, {"ours": [gRPC addresses], "thanos": [...]})."""
    pa = start_prom(prometheus_factory, prometheus3_bin, tmp_path, "a", extra=extra_a)
    pb = start_prom(prometheus_factory, prometheus3_bin, tmp_path, "b", extra=False)
    sidecars: dict[str, list[str]] = {}
    for kind, binary in (("ours", pythanos_bin), ("thanos", thanos_bin)):
        for name, prom in (("a", pa), ("b", pb)):
            p = start_sidecar(binary, kind, prom, tmp_path / f"{kind}-{name}")
            started.append(p)
            sidecars.setdefault(kind, []).append(p.extra["grpc"])
    return pa, pb, sidecars


_MOVING = [(re.compile(r'"lastEvaluation":"[^"]*"'), '"lastEvaluation":"T"'),
           (re.compile(r'"evaluationTime":[-0-9.e+]+'), '"evaluationTime":0')]
_ACTIVE_AT = (re.compile(r'"activeAt":"[^"]*"'), '"activeAt":"T"')


def get(url: str, path: str, params=(), *, active_at: bool = False) -> tuple[int, str]:
    """Status and body, with what moves on with every evaluation normalised (``active_at``: also
    when alerts became active, which differs between replicas)."""
    q = ("?" + urllib.parse.urlencode(params)) if params else ""
    code, body = http_get(url + path + q, timeout=30)
    text = body.decode()
    for rx, rep in _MOVING + ([_ACTIVE_AT] if active_at else []):
        text = rx.sub(rep, text)
    return code, text


def same(got: tuple[int, str], want: tuple[int, str], what) -> None:
    """Equal bodies; if not, a line diff of both pretty-printed (and the raw texts when only the
    bytes differ)."""
    if got == want:
        return
    import difflib

    def pretty(t: tuple[int, str]) -> list[str]:
        try:
            return [str(t[0])] + json.dumps(json.loads(t[1]), indent=1, sort_keys=False).splitlines()
        except ValueError:
            return [str(t[0]), t[1]]

    diff = "\n".join(difflib.unified_diff(pretty(want), pretty(got), "want", "got", lineterm="", n=2))
    raise AssertionError(f"{what}\n{diff or ('raw want: ' + want[1] + chr(10) + 'raw got:  ' + got[1])}")


def calls(rule_dir: Path) -> list[tuple[str, list]]:
    return [
        ("/api/v1/rules", []),
        ("/api/v1/rules", [("type", "alert")]),
        ("/api/v1/rules", [("type", "RECORD")]),
        ("/api/v1/rules", [("type", "bogus")]),
        ("/api/v1/rules", [("match[]", '{severity="page"}')]),
        ("/api/v1/rules", [("match[]", '{team=~".+"}')]),  # templated: never matched
        ("/api/v1/rules", [("match[]", '{cluster="c1", severity="warning"}'), ("match[]", '{source="rules"}')]),
        ("/api/v1/rules", [("match[]", '{severity="page"')]),  # does not parse
        ("/api/v1/rules", [("rule_name[]", "AlwaysFiring"), ("rule_name[]", "job:up:sum")]),
        ("/api/v1/rules", [("rule_group[]", "other")]),
        ("/api/v1/rules", [("file[]", str(rule_dir / "b.yml")), ("type", "record")]),
        ("/api/v1/rules", [("rule_group[]", "alerts"), ("type", "record")]),
        ("/api/v1/alerts", []),
    ]


def test_rules_and_alerts_through_sidecars_and_queriers_as_thanos(prometheus_factory, prometheus3_bin, pythanos_bin,
                                                                    thanos_bin, tmp_path, started):
    prom = start_prom(prometheus_factory, prometheus3_bin, tmp_path, "a", extra=True)
    ours = start_sidecar(pythanos_bin, "ours", prom, tmp_path / "ours")
    started.append(ours)
    theirs = start_sidecar(thanos_bin, "thanos", prom, tmp_path / "thanos")
    started.append(theirs)
    tq_ours = start_thanos_query(thanos_bin, [ours.extra["grpc"]], tmp_path / "tq-ours")
    started.append(tq_ours)
    tq_theirs = start_thanos_query(thanos_bin, [theirs.extra["grpc"]], tmp_path / "tq-theirs")
    started.append(tq_theirs)
    oq_theirs = start_our_query(pythanos_bin, [theirs.extra["grpc"]], tmp_path / "oq-theirs")
    started.append(oq_theirs)
    oq_ours = start_our_query(pythanos_bin, [ours.extra["grpc"]], tmp_path / "oq-ours")
    started.append(oq_ours)
    # a real querier over our querier's own Rules API, ours over a real querier's
    tq_oq = start_thanos_query(thanos_bin, [oq_ours.extra["grpc"]], tmp_path / "tq-oq")
    started.append(tq_oq)
    tq_mid = start_thanos_query(thanos_bin, [theirs.extra["grpc"]], tmp_path / "tq-mid")
    started.append(tq_mid)
    tq_grpc = next(a.split("=", 1)[1] for a in tq_mid.args if a.startswith("--grpc-address="))
    oq_tq = start_our_query(pythanos_bin, [tq_grpc], tmp_path / "oq-tq")
    started.append(oq_tq)
    for path, params in calls(prom.extra["rule_dir"]):
        want = get(tq_theirs.url, path, params)
        for q in (tq_ours, oq_theirs, oq_ours, tq_oq, oq_tq):
            same(get(q.url, path, params), want, (q.name, path, params))
    code, body = get(tq_theirs.url, "/api/v1/rules")
    data = json.loads(body)["data"]
    # the fixture is what it should be: external labels on rules, all kinds of states
    names = {r["name"]: r for g in data["groups"] for r in g["rules"]}
    assert names["job:up:sum"]["labels"] == {"cluster": "c1", "prom_replica": "a", "source": "rules"}
    assert {names[n]["state"] for n in ("AlwaysFiring", "PendingForAnHour", "NeverFires")} == {
        "firing", "pending", "inactive"}
    alerts = json.loads(get(tq_theirs.url, "/api/v1/alerts")[1])["data"]["alerts"]
    assert len(alerts) == 3 and all("cluster" not in a["labels"] for a in alerts)


def test_sidecar_rules_grpc_frames_as_thanos_sidecar(prometheus_factory, prometheus3_bin, pythanos_bin, thanos_bin,
                                                     tmp_path, started):
    """Frame by frame on the wire: both sidecars send the same groups for each type."""
    prom = start_prom(prometheus_factory, prometheus3_bin, tmp_path, "a", extra=False)
    ours = start_sidecar(pythanos_bin, "ours", prom, tmp_path / "ours")
    started.append(ours)
    theirs = start_sidecar(thanos_bin, "thanos", prom, tmp_path / "thanos")
    started.append(theirs)

    async def frames(address: str, typ: int) -> list:
        c = StoreClient(address)
        try:
            got = await c.rules(rules_pb2.RulesRequest(type=typ), timeout=30)
        finally:
            await c.close()
        out = []
        for f in got:
            g = f.group
            g.ClearField("last_evaluation")
            g.evaluation_duration_seconds = 0
            for r in g.rules:
                x = r.alert if r.WhichOneof("result") == "alert" else r.recording
                x.ClearField("last_evaluation")
                x.evaluation_duration_seconds = 0
            out.append(f.SerializeToString(deterministic=True))
        return out

    for typ in (rl.ALL, rl.ALERT, rl.RECORD):
        want = asyncio.run(frames(theirs.extra["grpc"], typ))
        assert want
        assert asyncio.run(frames(ours.extra["grpc"], typ)) == want, typ
    # a sidecar whose Prometheus is gone answers an error
    prom.stop()

    async def failing(address: str):
        c = StoreClient(address)
        try:
            await c.rules(rules_pb2.RulesRequest(), timeout=30)
        except Exception as e:  # noqa: BLE001
            return getattr(e, "code", None)
        finally:
            await c.close()

    assert asyncio.run(failing(ours.extra["grpc"])) == asyncio.run(failing(theirs.extra["grpc"])) \
        == grpc.StatusCode.INTERNAL


def test_replicas_deduplicated_as_thanos_query(prometheus_factory, prometheus3_bin, pythanos_bin, thanos_bin,
                                               tmp_path, started):
    """Replica a has a target down (TargetDown firing), replica b none (inactive): de-duplication
    keeps the more critical rule; without replica labels both copies show, in Thanos' order."""
    pa, pb, sidecars = two_replicas(prometheus_factory, prometheus3_bin, pythanos_bin, thanos_bin, tmp_path,
                                    started, extra_a=True)
    for dedup in (True, False):
        # the queriers' default here is "replica", which these Prometheus do not have
        extra = ["--query.replica-label=prom_replica"] if dedup else []
        tag = "dedup" if dedup else "raw"
        tq = start_thanos_query(thanos_bin, sidecars["thanos"], tmp_path / f"tq-{tag}", extra=extra)
        started.append(tq)
        oq_theirs = start_our_query(pythanos_bin, sidecars["thanos"], tmp_path / f"oq-theirs-{tag}",
                                    ["--query.replica-label=replica", *extra])
        started.append(oq_theirs)
        oq_ours = start_our_query(pythanos_bin, sidecars["ours"], tmp_path / f"oq-ours-{tag}",
                                  ["--query.replica-label=replica", *extra])
        started.append(oq_ours)
        for path, params in calls(pa.extra["rule_dir"]):
            want = get(tq.url, path, params, active_at=True)
            for q in (oq_theirs, oq_ours):
                same(get(q.url, path, params, active_at=True), want, (tag, q.name, path, params))
        data = json.loads(get(tq.url, "/api/v1/rules", [("rule_name[]", "TargetDown")])[1])["data"]
        rules = [r for g in data["groups"] for r in g["rules"]]
        if dedup:
            assert [(r["state"], r["labels"]) for r in rules] == [("firing", {"cluster": "c1", "severity": "page"})]
        else:
            assert [(r["state"], r["labels"]["prom_replica"]) for r in rules] == [("firing", "a"), ("inactive", "b")]


def start_ruler(binary: str, kind: str, work: Path, rule_files: list[Path], query_url: str, *extra: str) -> Process:
    """Our ruler or a real ``thanos rule`` with the same flags (the same ``--label``, so their rules
    compare equal)."""
    work.mkdir(parents=True, exist_ok=True)

    def launch(ports: list[int]) -> Process:
        h, g = ports
        p = REGISTRY.start(f"{kind}-rule", [binary, "rule", *[f"--rule-file={f}" for f in rule_files],
                                            f"--query={query_url}", '--label=ruler="r1"', "--eval-interval=1s",
                                            f"--data-dir={work / 'data'}", f"--http-address=127.0.0.1:{h}",
                                            f"--grpc-address=127.0.0.1:{g}", *extra], work)
        p.url, p.port, p.extra["grpc"] = f"http://127.0.0.1:{h}", h, f"127.0.0.1:{g}"
        return p

    return start_on_free_ports(2, launch, lambda p: p.wait_http_ready("/-/ready", 120))


def test_rulers_through_queriers_as_thanos(prometheus_factory, prometheus3_bin, pythanos_bin, thanos_bin, tmp_path,
                                           started):
    """Our ruler beside a real ``thanos rule`` (same rule files, same querier to read from): a real
    ``thanos query`` over ours answers as over theirs, our querier over theirs too; over both
    rulers with ``--query.replica-label=ruler`` each rule shows once. When alerts became
    active is normalised: the two rulers started at different instants."""
    prom = start_prom(prometheus_factory, prometheus3_bin, tmp_path, "a", extra=True)
    prom_rules = prom.extra["rule_dir"]
    files = [prom_rules / "a.yml", prom_rules / "b.yml"]
    sc = start_sidecar(thanos_bin, "thanos", prom, tmp_path / "sc")
    started.append(sc)
    data = start_thanos_query(thanos_bin, [sc.extra["grpc"]], tmp_path / "tq-data")
    started.append(data)
    ours = start_ruler(pythanos_bin, "ours", tmp_path / "ruler-ours", files, data.url)
    started.append(ours)
    theirs = start_ruler(thanos_bin, "thanos", tmp_path / "ruler-thanos", files, data.url)
    started.append(theirs)
    tq_ours = start_thanos_query(thanos_bin, [ours.extra["grpc"]], tmp_path / "tq-ours")
    started.append(tq_ours)
    tq_theirs = start_thanos_query(thanos_bin, [theirs.extra["grpc"]], tmp_path / "tq-theirs")
    started.append(tq_theirs)
    oq_theirs = start_our_query(pythanos_bin, [theirs.extra["grpc"]], tmp_path / "oq-theirs")
    started.append(oq_theirs)
    oq_ours = start_our_query(pythanos_bin, [ours.extra["grpc"]], tmp_path / "oq-ours")
    started.append(oq_ours)

    def settled(q: Process):
        body = json.loads(get(q.url, "/api/v1/rules")[1])["data"]
        states = {r["name"]: (r["health"], r.get("state")) for g in body["groups"] for r in g["rules"]}
        want = {"job:up:sum": ("ok", None), "job:scrape_duration:max": ("ok", None),
                "instance:up:count": ("ok", None), "AlwaysFiring": ("ok", "firing"),
                "PendingForAnHour": ("ok", "pending"), "TargetDown": ("ok", "firing"),
                "NeverFires": ("ok", "inactive")}
        return states == want, states

    poll(lambda: settled(tq_theirs), 120, "thanos rule's rules evaluated, alerts firing and pending")
    poll(lambda: settled(tq_ours), 120, "our ruler's rules evaluated, alerts firing and pending")
    for path, params in calls(prom_rules):
        want = get(tq_theirs.url, path, params, active_at=True)
        for q in (tq_ours, oq_theirs, oq_ours):
            same(get(q.url, path, params, active_at=True), want, (q.name, path, params))
    # both rulers under one querier: one copy of each rule with the ruler label taken as replica
    both = start_thanos_query(thanos_bin, [ours.extra["grpc"], theirs.extra["grpc"]], tmp_path / "tq-both",
                              extra=["--query.replica-label=ruler"])
    started.append(both)
    oboth = start_our_query(pythanos_bin, [ours.extra["grpc"], theirs.extra["grpc"]], tmp_path / "oq-both",
                            ["--query.replica-label=ruler"])
    started.append(oboth)
    for path, params in (("/api/v1/rules", []), ("/api/v1/rules", [("type", "alert")])):
        want = get(both.url, path, params, active_at=True)
        same(get(oboth.url, path, params, active_at=True), want, ("both", path, params))
        body = json.loads(want[1])["data"]
        assert sum(len(g["rules"]) for g in body["groups"]) == (7 if not params else 4)


def test_stateless_rulers_offer_only_rules(prometheus_factory, prometheus3_bin, pythanos_bin, thanos_bin, tmp_path,
                                           started):
    """Rulers in stateless mode (remote-writing to Prometheus) serve the Rules API and no Store API:
    queriers keep them as rule endpoints (not unhealthy), ask them for rules and never for series."""
    prom = start_prom(prometheus_factory, prometheus3_bin, tmp_path, "a", extra=True,
                      args=("--web.enable-remote-write-receiver",))
    files = [prom.extra["rule_dir"] / "a.yml", prom.extra["rule_dir"] / "b.yml"]
    rw = f"remote_write:\n  - url: {prom.url}/api/v1/write\n    name: prom\n"
    sc = start_sidecar(thanos_bin, "thanos", prom, tmp_path / "sc")
    started.append(sc)
    data = start_thanos_query(thanos_bin, [sc.extra["grpc"]], tmp_path / "tq-data")
    started.append(data)
    ours = start_ruler(pythanos_bin, "ours", tmp_path / "ruler-ours", files, data.url,
                       f"--remote-write.config={rw}")
    started.append(ours)
    theirs = start_ruler(thanos_bin, "thanos", tmp_path / "ruler-thanos", files, data.url,
                         f"--remote-write.config={rw}")
    started.append(theirs)
    tq_ours = start_thanos_query(thanos_bin, [ours.extra["grpc"]], tmp_path / "tq-ours")
    started.append(tq_ours)
    tq_theirs = start_thanos_query(thanos_bin, [theirs.extra["grpc"]], tmp_path / "tq-theirs")
    started.append(tq_theirs)
    oq_theirs = start_our_query(pythanos_bin, [theirs.extra["grpc"]], tmp_path / "oq-theirs")
    started.append(oq_theirs)

    def evaluated(q: Process):
        body = json.loads(get(q.url, "/api/v1/rules")[1])["data"]
        health = sorted((r["name"], r["health"]) for g in body["groups"] for r in g["rules"])
        return len(health) == 7 and all(h == "ok" for _, h in health), health

    for q in (tq_theirs, tq_ours, oq_theirs):
        poll(lambda: evaluated(q), 120, f"{q.name} shows every rule evaluated")
    want = get(tq_theirs.url, "/api/v1/rules", [("type", "record")])
    same(get(tq_ours.url, "/api/v1/rules", [("type", "record")]), want, "thanos query over our stateless ruler")
    same(get(oq_theirs.url, "/api/v1/rules", [("type", "record")]), want, "our query over thanos' stateless ruler")
    # listed as rule endpoints, asked for no series
    stores = json.loads(http_get(oq_theirs.url + "/api/v1/stores")[1])["data"]
    assert list(stores) == ["rule"] and not stores["rule"][0]["lastError"], stores
    series = json.loads(http_get(oq_theirs.url + "/api/v1/query?query=up")[1])
    assert series["status"] == "success" and series["data"]["result"] == [] and not series.get("warnings")


def test_querier_rules_and_alerts_pages(prometheus_factory, prometheus3_bin, pythanos_bin, chromium, tmp_path,
                                        started):
    """The querier's UI: Alerts and Rules in the navigation of every page; the alerts page lists the
    gathered alerting rules by state with their alerts, the rules page every group and rule;
    expressions link to the querier's own graph page."""
    import aiohttp

    from browser import run

    prom = start_prom(prometheus_factory, prometheus3_bin, tmp_path, "a", extra=True)
    sc = start_sidecar(pythanos_bin, "ours", prom, tmp_path / "sc")
    started.append(sc)
    q = start_our_query(pythanos_bin, [sc.extra["grpc"]], tmp_path / "oq")
    started.append(q)

    async def scenario():
        async with aiohttp.ClientSession() as session:
            page = await chromium.page(session)
            await page.goto(q.url + "/graph")
            nav = await page.eval("[...document.querySelectorAll('nav a.navlink')].map(a => a.textContent)")
            assert nav == ["Graph", "Stores", "Alerts", "Rules"], nav
            await page.click("nav a.navlink[href$='/alerts']")
            await page.wait_for("document.querySelectorAll('section.alert-rule').length === 4", what="alert rules")
            sections = await page.eval("[...document.querySelectorAll('section.alert-rule')].map(s => "
                                       "[s.dataset.rule, s.className, s.querySelectorAll('tbody tr').length])")
            assert sections == [["AlwaysFiring", "alert-rule firing", 1], ["TargetDown", "alert-rule firing", 1],
                                ["PendingForAnHour", "alert-rule pending", 1],
                                ["NeverFires", "alert-rule inactive", 0]], sections
            nav = await page.eval("[...document.querySelectorAll('nav a.navlink')].map(a => a.textContent)")
            assert nav == ["Graph", "Stores", "Alerts", "Rules"], nav
            href = await page.eval("document.querySelector('section.alert-rule a.series').getAttribute('href')")
            assert href.startswith("/graph?g0.expr="), href
            await page.goto(q.url + "/rules")
            await page.wait_for("document.querySelectorAll('section.rule-group').length === 3", what="rule groups")
            rows = await page.eval("[...document.querySelectorAll('table.rules tbody tr')].map(tr => "
                                   "[tr.dataset.rule, tr.children[2].textContent])")
            assert sorted(rows) == sorted([[n, "OK"] for n in (
                "AlwaysFiring", "PendingForAnHour", "TargetDown", "NeverFires", "job:up:sum",
                "job:scrape_duration:max", "instance:up:count")]), rows
            await page.screenshot(tmp_path / "query-rules.png")
            assert page.errors == [], page.errors

    run(scenario())


def test_failing_endpoint_warns_or_fails_as_thanos_query(prometheus_factory, prometheus3_bin, pythanos_bin,
                                                          thanos_bin, tmp_path, started):
    """A sidecar whose Prometheus went away still answers Info but fails Rules: under partial
    response (the default) the others' rules come with one warning naming that endpoint; with
    --no-rule.partial-response the call fails with 500 "error retrieving rules: ...". Thanos
    names the endpoint by its client's address in memory, we by its address: the warning's and
    error's texts are compared up to that."""
    pa, pb, sidecars = two_replicas(prometheus_factory, prometheus3_bin, pythanos_bin, thanos_bin, tmp_path,
                                    started, extra_a=False)
    queriers = []
    for partial in (True, False):
        extra = [] if partial else ["--no-rule.partial-response"]
        for kind in ("thanos", "ours"):  # Thanos' sidecars under both queriers, ours under ours
            tq = start_thanos_query(thanos_bin, sidecars[kind], tmp_path / f"tq-{kind}-{partial}", extra=extra)
            oq = start_our_query(pythanos_bin, sidecars[kind], tmp_path / f"oq-{kind}-{partial}", extra)
            started += [tq, oq]
            queriers.append((partial, kind, tq, oq))
    pb.stop()

    def masked(t: tuple[int, str]) -> tuple[int, dict]:
        body = json.loads(t[1])
        for k in ("warnings", "error"):
            if k in body:
                # the endpoint's name, and below it the sidecar's words for "Prometheus is gone"
                body[k] = [re.sub(r"(rules client ).*?(: rpc error: code = Internal desc = ).*", r"\1X\2Y", w)
                           for w in ([body[k]] if k == "error" else body[k])]
        return t[0], body

    for partial, kind, tq, oq in queriers:
        for path in ("/api/v1/rules", "/api/v1/alerts"):
            want = poll(lambda: ((r := get(tq.url, path, active_at=True))[0] != 200 or '"warnings"' in r[1], r),
                        60, f"thanos query sees the failure ({path})")
            code, body = masked(want)
            assert code == (200 if partial else 500), want
            got = masked(get(oq.url, path, active_at=True))
            assert got[0] == code, (partial, kind, path, got, want)
            assert got == (code, body), (partial, kind, path)


# ---------------------------------------------------------------------------------------------- library

def test_go_value_formats():
    assert [rl.go_value(v) for v in (1.0, 0.5, 123.456, -2.0, 0.0, 1e21, 1.5e-7, float("inf"), float("nan"))] == [
        "1e+00", "5e-01", "1.23456e+02", "-2e+00", "0e+00", "1e+21", "1.5e-07", "+Inf", "NaN"]


def test_rfc3339_round_trip():
    ts = rules_pb2.RuleGroup().last_evaluation
    for text in ("0001-01-01T00:00:00Z", "2026-12-03T03:04:05.123456789Z", "1970-01-01T00:00:00.5Z"):
        rl._parse_time(ts, text, "t")
        assert rl.rfc3339nano(ts) == text
    rl._parse_time(ts, "2026-12-03T05:04:05.1+02:00", "t")
    assert rl.rfc3339nano(ts) == "2026-12-03T03:04:05.1Z"


def _ruler_group():
    """A ruler's snapshot as plain dicts (the shape of pythanos.rule.state.GroupState)."""
    rec = {"kind": "record", "name": "r:x", "expr": "sum(x)", "labels": {"a": "1"}}
    alert = {"kind": "alert", "name": "X", "expr": "x > 0", "for_s": 60.0, "keep_firing_for_s": 0.0,
             "labels": {"severity": "page", "replica": "r1"}, "annotations": {"s": "v {{ $value }}"}}
    return {"group": {"name": "g", "file": "/r.yml", "limit": 0, "partial_response_strategy": "WARN"},
            "interval_s": 30.0, "evaluation_time_s": 0.25, "last_evaluation": 1764730000.5,
            "rules": [{"rule": rec, "health": "ok", "last_error": "", "evaluation_time_s": 0.001,
                       "last_evaluation": 1764730000.5, "alerts": [], "state": "inactive"},
                      {"rule": alert, "health": "err", "last_error": "boom", "evaluation_time_s": 0.002,
                       "last_evaluation": 0, "state": "firing",
                       "alerts": [{"labels": {"alertname": "X"}, "annotations": {}, "state": "firing",
                                   "active_at": 1764729000.0, "value": 2.5}]}]}


def test_provider_handler_serves_plain_data_with_type_filter():
    """The ruler's helper over an in-process gRPC server: external labels over rule labels, the
    type filter keeps emptied groups (as Thanos' ruler), Go's formats in the JSON."""

    async def go():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([rl.provider_handler(lambda: [_ruler_group()],
                                                             lambda: (("cluster", "c1"), ("severity", "x")))])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        c = StoreClient(f"127.0.0.1:{port}")
        try:
            return {t: await c.rules(rules_pb2.RulesRequest(type=t), timeout=10) for t in (rl.ALL, rl.ALERT, rl.RECORD)}
        finally:
            await c.close()
            await server.stop(None)

    got = asyncio.run(go())
    assert [len(f.group.rules) for t in (rl.ALL, rl.ALERT, rl.RECORD) for f in got[t]] == [2, 1, 1]
    groups = [f.group for f in got[rl.ALL]]
    body = json.loads(rl.rules_json(rl.gather(groups, replica_labels=["replica"])))
    g = body["groups"][0]
    assert (g["name"], g["file"], g["interval"], g["evaluationTime"], g["lastEvaluation"], g["limit"],
            g["partialResponseStrategy"]) == ("g", "/r.yml", 30, 0.25, "2025-12-03T02:46:40.5Z", 0, "WARN")
    alert, rec = g["rules"]  # alerting rules first
    assert alert["labels"] == {"cluster": "c1", "severity": "x"}  # external label wins, replica gone
    assert (alert["state"], alert["health"], alert["lastError"], alert["duration"], alert["lastEvaluation"]) == (
        "firing", "err", "boom", 60, "0001-01-01T00:00:00Z")
    assert alert["alerts"] == [{"labels": {"alertname": "X"}, "annotations": {}, "state": "firing",
                                "activeAt": "2025-12-03T02:30:00Z", "value": "2.5e+00",
                                "partialResponseStrategy": "WARN"}]
    assert rec["type"] == "recording" and "lastError" not in rec and rec["labels"] == {"a": "1", "cluster": "c1",
                                                                                        "severity": "x"}
    assert json.loads(rl.alerts_json([]))["alerts"] is None


def test_gather_dedup_keeps_most_critical_then_latest():
    def group(state: str, replica: str, evaluated: float):
        g = _ruler_group()
        g["rules"][1]["state"] = state
        g["rules"][1]["last_evaluation"] = evaluated
        g["rules"][1]["rule"]["labels"]["replica"] = replica
        g["rules"][0]["last_evaluation"] = evaluated
        return rl.group_pb(g)

    got = rl.gather([group("pending", "r1", 100.0), group("firing", "r2", 50.0), group("firing", "r3", 60.0)],
                    replica_labels=["replica"])
    assert len(got) == 1 and len(got[0].rules) == 2
    a, r = got[0].rules
    assert a.alert.state == rules_pb2.FIRING and a.alert.last_evaluation.seconds == 60
    assert r.recording.last_evaluation.seconds == 100
    # filters: matchers see plain-text labels only; a filter that empties a group drops it
    from pythanos.tsdb.labels import Matcher

    g = rl.group_pb(_ruler_group())
    assert rl.gather([g], matcher_sets=[[Matcher("=", "a", "1")]])[0].rules[0].recording.name == "r:x"
    assert rl.gather([rl.group_pb(_ruler_group())], rule_names=["nope"]) == []


def test_field_numbers_are_thanos():
    """Thanos v0.42.4 pkg/rules/rulespb/rpc.proto's numbers (the wire is only numbers)."""
    def fields(m) -> dict:
        return {f.name: f.number for f in m.DESCRIPTOR.fields}

    assert fields(rules_pb2.RulesRequest) == {"type": 1, "partial_response_strategy": 2, "matcher_string": 3,
                                              "rule_name": 4, "rule_group": 5, "file": 6}
    assert dict(rules_pb2.RulesRequest.Type.items()) == {"ALL": 0, "ALERT": 1, "RECORD": 2}
    assert fields(rules_pb2.RulesResponse) == {"group": 1, "warning": 2}
    assert fields(rules_pb2.RuleGroups) == {"groups": 1}
    assert fields(rules_pb2.RuleGroup) == {"name": 1, "file": 2, "rules": 3, "interval": 4,
                                           "evaluation_duration_seconds": 5, "last_evaluation": 6, "limit": 9,
                                           "PartialResponseStrategy": 8}
    assert fields(rules_pb2.Rule) == {"recording": 1, "alert": 2}
    assert dict(rules_pb2.AlertState.items()) == {"UNKNOWN_STATE": 0, "INACTIVE": 1, "PENDING": 2, "FIRING": 3}
    assert fields(rules_pb2.AlertInstance) == {"labels": 1, "annotations": 2, "state": 3, "active_at": 4, "value": 5,
                                               "PartialResponseStrategy": 6}
    assert fields(rules_pb2.Alert) == {"state": 1, "name": 2, "query": 3, "duration_seconds": 4, "labels": 5,
                                       "annotations": 6, "alerts": 7, "health": 8, "last_error": 9,
                                       "evaluation_duration_seconds": 10, "last_evaluation": 11,
                                       "keep_firing_for_seconds": 12}
    assert fields(rules_pb2.RecordingRule) == {"name": 1, "query": 2, "labels": 3, "health": 4, "last_error": 5,
                                               "evaluation_duration_seconds": 6, "last_evaluation": 7}
    assert rules_pb2.DESCRIPTOR.services_by_name["Rules"].full_name == "thanos.Rules"
