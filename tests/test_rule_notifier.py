"""The ruler's Alertmanager sender (pythanos.rule.notifier) against real Alertmanagers
(/usr/bin/prometheus-alertmanager): alerts posted are read back from Alertmanager's own
``/api/v2/alerts``; Alertmanagers that are down, come back, or fail DNS; label dropping and
relabelling; the configuration's refusals."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import prometheus_client
import pytest

from peers import REGISTRY, Process, ready_or_exited, start_on_free_ports
from ports import free_port, free_ports
from pythanos.errors import ConfigError
from pythanos.relabel import parse_relabel_config
from pythanos.rule.notifier import (Notifier, alertmanager_configs, check_query_template, config_from_url,
                                    format_time, from_config, generator_url, parse_alerting_config)

AM_CONFIG = "route:\n  receiver: default\nreceivers:\n  - name: default\n"


def start_am(binary: str, work: Path, port: int | None = None) -> Process:
    """A real Alertmanager (clustering off) on ``port`` or a free one, ready when returned."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "alertmanager.yml"
    cfg.write_text(AM_CONFIG)

    def launch(ports: list[int]) -> Process:
        p_ = port or ports[0]
        p = REGISTRY.start("alertmanager", [binary, f"--config.file={cfg}", f"--storage.path={work / 'data'}",
                                            f"--web.listen-address=127.0.0.1:{p_}", "--cluster.listen-address="],
                           work)
        p.url, p.port = f"http://127.0.0.1:{p_}", p_
        return p

    return start_on_free_ports(1, launch, lambda p: p.wait_http_ready("/-/ready", 60),
                               attempts=1 if port else 3)


@pytest.fixture
def ams(alertmanager_bin, tmp_path):
    started: list[Process] = []

    def start(port: int | None = None) -> Process:
        p = start_am(alertmanager_bin, tmp_path / f"am{len(started)}", port)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def am_alerts(am: Process) -> list[dict]:
    with urllib.request.urlopen(am.url + "/api/v2/alerts", timeout=5) as r:
        return json.loads(r.read())


def dead_port() -> int:
    """A leased port nothing listens on (connections refused)."""
    return free_port()


async def wait_for(cond: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await asyncio.to_thread(cond)
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def value(reg, name: str, **labels) -> float:
    v = reg.get_sample_value(name, labels or None)
    return 0.0 if v is None else v


def alert(name: str, now: float, **labels) -> dict:
    return {"labels": {"alertname": name, **labels}, "annotations": {"summary": f"{name} is firing",
                                                                     "description": "ünïcode & <html>"},
            "startsAt": now - 120.5, "endsAt": now + 3600, "generatorURL": f"http://query.example/graph?g0.expr={name}"}


def by_name(alerts: list[dict]) -> dict[str, dict]:
    return {a["labels"]["alertname"]: a for a in alerts}


def parse_time(s: str) -> float:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def run(coro):
    return asyncio.run(coro)


def test_alerts_read_back_from_alertmanager(ams):
    """Labels (external labels added), annotations, startsAt/endsAt and generatorURL as sent."""
    am = ams()
    reg = prometheus_client.CollectorRegistry()
    now = time.time()

    async def main():
        n = Notifier([config_from_url(am.url, 5.0)], external_labels={"cluster": "eu1"}, registry=reg)
        await n.start()
        try:
            sent = [alert(f"A{i}", now, severity="page", instance=f"host{i}:9100") for i in range(3)]
            n.send(sent)
            got = await wait_for(lambda: len(am_alerts(am)) == 3 and am_alerts(am), "3 alerts in Alertmanager")
            return sent, got
        finally:
            await n.stop()

    sent, got = run(main())
    got_by = by_name(got)
    for a in sent:
        g = got_by[a["labels"]["alertname"]]
        assert g["labels"] == {**a["labels"], "cluster": "eu1"}
        assert g["annotations"] == a["annotations"]
        assert g["generatorURL"] == a["generatorURL"]
        assert abs(parse_time(g["startsAt"]) - a["startsAt"]) < 0.001
        assert abs(parse_time(g["endsAt"]) - a["endsAt"]) < 0.001
        assert g["status"]["state"] == "active"
    host = am.url.removeprefix("http://")
    assert value(reg, "thanos_alert_sender_alerts_sent_total", alertmanager=host) == 3
    assert value(reg, "thanos_alert_queue_alerts_pushed_total") == 3
    assert value(reg, "thanos_alert_queue_alerts_popped_total") == 3
    assert value(reg, "thanos_alert_sender_alerts_dropped_total") == 0
    assert value(reg, "thanos_alert_sender_latency_seconds_count", alertmanager=host) == 1
    assert value(reg, "thanos_alert_queue_capacity") == 10000


def test_resolved_alert_ends(ams):
    """An alert sent again with endsAt in the past is resolved in Alertmanager."""
    am = ams()
    now = time.time()

    async def main():
        n = Notifier([config_from_url(am.url, 5.0)])
        await n.start()
        try:
            a = alert("Gone", now)
            n.send([a])
            await wait_for(lambda: am_alerts(am), "the alert")
            n.send([{**a, "endsAt": now - 1}])
            await wait_for(lambda: not am_alerts(am), "the alert resolved (no longer listed as active)")
        finally:
            await n.stop()

    run(main())


def test_one_of_two_down_still_delivers(ams):
    am = ams()
    down = f"127.0.0.1:{dead_port()}"
    reg = prometheus_client.CollectorRegistry()
    now = time.time()

    async def main():
        n = Notifier([config_from_url(f"http://{down}", 5.0), config_from_url(am.url, 5.0)], registry=reg)
        await n.start()
        try:
            n.send([alert("Half", now)])
            await wait_for(lambda: am_alerts(am), "the alert in the live Alertmanager")
            await wait_for(lambda: value(reg, "thanos_alert_sender_errors_total", alertmanager=down) >= 1,
                           "the error counted for the dead one")
        finally:
            await n.stop()

    run(main())
    assert value(reg, "thanos_alert_sender_alerts_dropped_total") == 0
    assert value(reg, "thanos_alert_sender_alerts_sent_total", alertmanager=am.url.removeprefix("http://")) == 1


def test_all_down_dropped_and_caller_not_blocked():
    """Every Alertmanager refusing: each batch counted as dropped; send() only queues (the
    alerts are still in the queue when it returns, no matter how long the posts take)."""
    downs = [f"127.0.0.1:{p}" for p in free_ports(2)]
    reg = prometheus_client.CollectorRegistry()
    now = time.time()

    async def main():
        n = Notifier([config_from_url(f"http://{d}", 5.0) for d in downs], registry=reg)
        await n.start()
        try:
            n.send([alert(f"X{i}", now) for i in range(250)])
            assert n.queue_length() == 250  # nothing sent yet: send() returned before any network I/O
            await wait_for(lambda: value(reg, "thanos_alert_sender_alerts_dropped_total") == 250,
                           "250 alerts counted as dropped")
        finally:
            await n.stop()

    run(main())
    for d in downs:  # batches of 100: 100, 100, 50
        assert value(reg, "thanos_alert_sender_errors_total", alertmanager=d) == 3
    assert value(reg, "thanos_alert_queue_alerts_popped_total") == 250
    assert value(reg, "thanos_alert_queue_alerts_dropped_total") == 0


def test_hanging_alertmanager_does_not_block_caller():
    """An Alertmanager that accepts connections and never answers: send() returns while a post
    hangs, later alerts queue behind it, and the timeout ends the post (counted as an error)."""
    reg = prometheus_client.CollectorRegistry()
    now = time.time()

    async def main():
        conns: list[asyncio.StreamWriter] = []

        async def hold(_r, w):
            conns.append(w)

        server = await asyncio.start_server(hold, "127.0.0.1", 0)
        addr = "127.0.0.1:%d" % server.sockets[0].getsockname()[1]
        n = Notifier([config_from_url(f"http://{addr}", 2.0)], registry=reg)
        await n.start()
        try:
            n.send([alert("H1", now)])
            await wait_for(lambda: conns, "the post to reach the hanging server")
            n.send([alert("H2", now)])  # while the first post hangs
            assert n.queue_length() == 1
            await wait_for(lambda: value(reg, "thanos_alert_sender_alerts_dropped_total") == 2,
                           "both alerts given up after the send timeout")
        finally:
            await n.stop()
            server.close()
            for w in conns:
                w.close()

    run(main())
    assert value(reg, "thanos_alert_sender_errors_total", alertmanager=_any_label(reg)) == 2


def _any_label(reg) -> str:
    for m in reg.collect():
        if m.name == "thanos_alert_sender_errors":
            for s in m.samples:
                if s.name.endswith("_total"):
                    return s.labels["alertmanager"]
    raise AssertionError("no error counted")


def test_alertmanager_down_then_back(ams):
    """Alerts sent while the only Alertmanager is down are dropped; after it is back on the same
    address, later sends arrive."""
    port = free_port()
    reg = prometheus_client.CollectorRegistry()
    now = time.time()

    async def main():
        n = Notifier([config_from_url(f"http://127.0.0.1:{port}", 5.0)], registry=reg)
        await n.start()
        try:
            n.send([alert("Early", now)])
            await wait_for(lambda: value(reg, "thanos_alert_sender_alerts_dropped_total") == 1, "a dropped alert")
            am = await asyncio.to_thread(ams, port)
            n.send([alert("Late", now)])
            got = await wait_for(lambda: am_alerts(am), "the later alert")
            return got
        finally:
            await n.stop()

    got = run(main())
    assert [a["labels"]["alertname"] for a in got] == ["Late"]


def test_label_drop_and_relabel(ams):
    """--alert.label-drop removes labels (external ones included) before relabelling; the
    relabel config rewrites labels and drops whole alerts."""
    am = ams()
    now = time.time()
    relabel = parse_relabel_config("""
- source_labels: [severity]
  regex: none
  action: drop
- source_labels: [instance]
  regex: '([^:]+):\\d+'
  target_label: host
  replacement: $1
- regex: team
  action: labeldrop
""", "--alert.relabel-config")
    reg = prometheus_client.CollectorRegistry()

    async def main():
        n = Notifier([config_from_url(am.url, 5.0)], external_labels={"replica": "r1", "cluster": "eu1"},
                     label_drop=["replica", "pod"], relabel_configs=relabel, registry=reg)
        await n.start()
        try:
            n.send([alert("Keep", now, severity="page", instance="db1:9100", team="infra", pod="p-1",
                          replica="r9"),
                    alert("Quiet", now, severity="none")])
            await wait_for(lambda: am_alerts(am), "the kept alert")
            await n.send_batch([])  # nothing; the queue is drained by now
        finally:
            await n.stop()

    run(main())
    got = am_alerts(am)
    assert [a["labels"] for a in got] == [{"alertname": "Keep", "severity": "page", "instance": "db1:9100",
                                           "host": "db1", "cluster": "eu1"}]
    assert value(reg, "thanos_alert_queue_alerts_pushed_total") == 2
    assert value(reg, "thanos_alert_queue_alerts_popped_total") == 1


def test_dns_and_file_sd(ams, tmp_path):
    """dns+localhost:port resolves to the Alertmanager; a name that does not resolve is logged and
    counted (dns failures), never fatal; file_sd_configs targets are read."""
    am1, am2 = ams(), ams()
    sd = tmp_path / "am.yml"
    sd.write_text(f"- targets: ['127.0.0.1:{am2.port}']\n")
    reg = prometheus_client.CollectorRegistry()
    now = time.time()
    cfgs = alertmanager_configs([f"dns+http://localhost:{am1.port}", "dns+http://no-such-host.invalid:9093"], "",
                                5.0)
    cfgs += parse_alerting_config(f"""
alertmanagers:
- file_sd_configs:
  - files: ['{sd}']
  timeout: 5s
""")

    async def main():
        n = Notifier(cfgs, registry=reg)
        await n.start()
        try:
            n.send([alert("Everywhere", now)])
            await wait_for(lambda: am_alerts(am1) and am_alerts(am2), "the alert in both Alertmanagers")
            return n.endpoints()
        finally:
            await n.stop()

    endpoints = run(main())
    assert f"http://127.0.0.1:{am1.port}/api/v2/alerts" in endpoints
    assert f"http://127.0.0.1:{am2.port}/api/v2/alerts" in endpoints
    assert value(reg, "thanos_rule_alertmanagers_dns_failures_total") >= 1
    assert value(reg, "thanos_rule_alertmanagers_dns_provider_results", addr=f"dns+localhost:{am1.port}") >= 1
    assert value(reg, "thanos_rule_alertmanagers_dns_provider_results", addr="dns+no-such-host.invalid:9093") == 0
    assert value(reg, "thanos_alert_sender_alerts_dropped_total") == 0


def test_path_prefix_and_basic_auth_from_url():
    """The URL's path is the API prefix and its user:password become basic auth: seen by a plain
    HTTP server standing in for an Alertmanager behind a proxy."""
    seen: list[tuple[str, str]] = []

    async def main():
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter):
            head = (await r.readuntil(b"\r\n\r\n")).decode()
            lines = head.split("\r\n")
            headers = {k.lower(): v for k, _, v in (ln.partition(": ") for ln in lines[1:] if ln)}
            await r.readexactly(int(headers.get("content-length", "0")))
            seen.append((lines[0], headers.get("authorization", "")))
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await w.drain()
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        n = Notifier([config_from_url(f"http://user:p%40ss@127.0.0.1:{port}/am/", 5.0)])
        await n.start()
        try:
            n.send([alert("Auth", time.time())])
            await wait_for(lambda: seen, "the post")
        finally:
            await n.stop()
            server.close()

    run(main())
    import base64

    assert seen[0][0] == "POST /am/api/v2/alerts HTTP/1.1"
    assert seen[0][1] == "Basic " + base64.b64encode(b"user:p@ss").decode()


def test_queue_full_drops_oldest():
    """Capacity 10 000: pushing more before the sender runs keeps the newest."""
    reg = prometheus_client.CollectorRegistry()
    n = Notifier([], registry=reg)
    now = time.time()
    n.send([alert(f"Q{i}", now) for i in range(6000)])
    n.send([alert(f"R{i}", now) for i in range(6000)])
    assert n.queue_length() == 10000
    assert value(reg, "thanos_alert_queue_alerts_dropped_total") == 2000
    assert n._pop()[0]["labels"]["alertname"] == "Q2000"


@pytest.mark.parametrize("url,err", [
    ("127.0.0.1:9093", "empty"),
    ("http://", "alertmanagers.url contains empty host"),
    ("http://a b:9093", 'invalid character " " in host name'),
])
def test_bad_urls(url, err):
    with pytest.raises(ConfigError, match=err):
        config_from_url(url, 10.0)


def test_dns_url_forms():
    c = config_from_url("dns+http://am.example/prefix", 3.0)
    assert (c.static_addresses, c.scheme, c.path_prefix, c.timeout_s) == (["dns+am.example:9093"], "http",
                                                                          "/prefix", 3.0)
    c = config_from_url("dnssrv+https://_am._tcp.example", 3.0)
    assert (c.static_addresses, c.scheme) == (["dnssrv+_am._tcp.example"], "https")


@pytest.mark.parametrize("text,err", [
    ("alertmanagers:\n- static_configs: [a:1]\n  api_version: v1\n", r"alertmanagers\[0\]\.api_version: v1 is not"),
    ("alertmanagers:\n- static_configs: [a:1]\n  api_version: v3\n", "one of \\[v1 v2\\]"),
    ("alertmanagers:\n- static_configs: [a:1]\n  foo: 1\n", r"alertmanagers\[0\]: field foo not found"),
    ("alertmanagers:\n- http_config: {basic_auth: {username: u, password: p, password_file: f}}\n",
     "at most one of basic_auth password, password_file & password_ref"),
    ("alertmanagers:\n- timeout: 5x\n", r"alertmanagers\[0\]\.timeout: unknown unit"),
    ("alertmanager: []\n", "field alertmanager not found"),
])
def test_bad_alerting_configs(text, err):
    with pytest.raises(ConfigError, match=err):
        parse_alerting_config(text)


def test_url_and_config_exclusive():
    with pytest.raises(ConfigError, match="cannot be defined at the same time"):
        alertmanager_configs(["http://a:1"], "alertmanagers: []", 10.0)


def test_from_config():
    class Cfg:
        alertmanagers_urls = ["http://127.0.0.1:1"]
        alertmanagers_config = ""
        alertmanagers_send_timeout = 4.0
        alertmanagers_dns_interval = 30.0
        alert_label_drop = ["replica"]
        alert_relabel_config = "- action: labeldrop\n  regex: x\n"
        alert_relabel_where = "--alert.relabel-config"
        labels = {"replica": "a", "c": "d"}

    n = from_config(Cfg())
    assert n._add == {"c": "d"} and n._sets[0].cfg.timeout_s == 4.0 and len(n._relabel) == 1
    Cfg.alert_relabel_config = "- action: nope\n"
    with pytest.raises(ConfigError, match="--alert.relabel-config"):
        from_config(Cfg())


def test_wire_formats():
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert format_time(1700000000.1234) == "2023-11-14T22:13:20.123Z"
    assert format_time(None) == "0001-01-01T00:00:00.000Z"
    assert generator_url("http://q:9090", "/graph?g0.expr={{.Expr}}&g0.tab=1", 'up{job="a b"} / 2') == \
        "http://q:9090/graph?g0.expr=up%7Bjob%3D%22a+b%22%7D+%2F+2&g0.tab=1"


def test_no_socket_left(ams):
    """Stopping the notifier closes its connections (no leaked session)."""
    am = ams()

    async def main():
        n = Notifier([config_from_url(am.url, 5.0)])
        await n.start()
        n.send([alert("S", time.time())])
        await wait_for(lambda: am_alerts(am), "the alert")
        await n.stop()
        assert n._session is None

    run(main())


class Capture:
    """An HTTP server standing in for an Alertmanager that records every request as it came."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.requests: list[tuple[str, str, dict, bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


QUERY_TEMPLATE = '/graph?g0.expr={{ .Expr }}{{ if .Expr }}&g0.tab=1{{ end }}{{ printf "&n=%d" (len .Expr) }}'
RULES_FOR_PAYLOAD = """\
groups:
- name: payload
  rules:
  - alert: Payload
    expr: vector(1)
    labels:
      severity: page
      zone: "a<b>&c"
    annotations:
      summary: "ünïcode <b> & \\u2028 done"
      value: "{{ $value }}"
      bare: ""
"""


def test_payload_as_thanos_rule_sends_it(thanos_bin, prometheus3_bin, prometheus_factory, tmp_path):
    """A real thanos rule v0.42.4 posts a firing alert to a recording server; ours, given the
    same alert as the rule produced it (times as numbers), posts the same bytes to the same
    path with the same content type: field order, time format, label order, Go's escaping,
    external labels added and --alert.label-drop applied."""
    prom = prometheus_factory(binary=prometheus3_bin)
    cap = Capture()
    try:
        rule_file = tmp_path / "rules.yml"
        rule_file.write_text(RULES_FOR_PAYLOAD)

        def launch(ports: list[int]) -> Process:
            args = [thanos_bin, "rule", f"--rule-file={rule_file}", f"--query={prom.url}", '--label=replica="r1"',
                    '--label=cluster="eu1"', "--alert.label-drop=replica", "--eval-interval=1s",
                    f"--data-dir={tmp_path / 'data'}", f"--http-address=127.0.0.1:{ports[0]}",
                    f"--grpc-address=127.0.0.1:{ports[1]}", "--alert.query-url=http://query.example:9090/",
                    f"--alertmanagers.url={cap.url}/prefix", f"--alert.query-template={QUERY_TEMPLATE}"]
            p = REGISTRY.start("thanos-rule", args, tmp_path)
            p.url = f"http://127.0.0.1:{ports[0]}"
            return p

        thanos = start_on_free_ports(2, launch, lambda p: p.wait_http_ready("/-/ready", 120))
        try:
            deadline = time.monotonic() + 90
            while not cap.requests:
                assert time.monotonic() < deadline and thanos.alive(), thanos.log()
                time.sleep(0.2)
        finally:
            thanos.stop()
        method, path, headers, body = cap.requests[0]
        (theirs,) = json.loads(body)
        cap.requests.clear()

        rule_labels = {k: v for k, v in theirs["labels"].items() if k != "cluster"}
        alert_in = {"labels": {**rule_labels, "replica": "from-the-rule"}, "annotations": theirs["annotations"],
                    "startsAt": parse_time(theirs["startsAt"]), "endsAt": parse_time(theirs["endsAt"]),
                    "generatorURL": theirs["generatorURL"]}

        async def main():
            n = Notifier([config_from_url(f"{cap.url}/prefix", 5.0)],
                         external_labels={"replica": "r1", "cluster": "eu1"}, label_drop=["replica"])
            await n.start()
            try:
                n.send([alert_in])
                await wait_for(lambda: cap.requests, "our post")
            finally:
                await n.stop()

        run(main())
        m2, p2, h2, b2 = cap.requests[0]
        assert (m2, p2) == (method, path) == ("POST", "/prefix/api/v2/alerts")
        assert h2["content-type"] == headers["content-type"]
        assert b2 == body, (b2, body)
        assert b"\\u003cb\\u003e \\u0026 \\u2028" in body  # the cases the file is there for did occur
        assert "replica" not in theirs["labels"] and theirs["labels"]["cluster"] == "eu1"
        assert theirs["generatorURL"] == generator_url("http://query.example:9090/", QUERY_TEMPLATE, "vector(1)")
    finally:
        cap.close()


def test_https_and_basic_auth_from_alerting_config(alertmanager_bin, tmp_path):
    """--alertmanagers.config with scheme https, tls_config (CA, server name) and basic_auth
    (password_file) against a real Alertmanager serving TLS with basic auth; a wrong password is
    refused by it (counted, dropped), the right one delivers."""
    import base64
    import ssl

    import bcrypt

    from tlsfiles import make_pki

    pki = make_pki(tmp_path / "pki", "localhost")
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {pki.dir / 'tls.crt'}\n  key_file: {pki.dir / 'tls.key'}\n"
                   f"basic_auth_users:\n  alerts: '{bcrypt.hashpw(b's3cret', bcrypt.gensalt(4)).decode()}'\n")
    cfg = tmp_path / "am.yml"
    cfg.write_text(AM_CONFIG)
    ctx = ssl.create_default_context(cafile=str(pki.dir / "ca.crt"))
    auth = "Basic " + base64.b64encode(b"alerts:s3cret").decode()

    def get_alerts(url: str):
        req = urllib.request.Request(url + "/api/v2/alerts", headers={"Authorization": auth})
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return json.loads(r.read())

    def launch(ports: list[int]) -> Process:
        p = REGISTRY.start("alertmanager", [alertmanager_bin, f"--config.file={cfg}", f"--web.config.file={web}",
                                            f"--storage.path={tmp_path / 'data'}", "--cluster.listen-address=",
                                            f"--web.listen-address=127.0.0.1:{ports[0]}"], tmp_path)
        p.url, p.port = f"https://localhost:{ports[0]}", ports[0]
        return p

    def ready(p: Process) -> None:
        def ok() -> bool:
            try:
                get_alerts(p.url)
                return True
            except OSError:
                return False
        p.wait_ready(ok, 60, what="the Alertmanager answering over TLS with basic auth")

    am = start_on_free_ports(1, launch, ready)
    try:
        def alerting(password_field: str) -> str:
            return f"""
alertmanagers:
- static_configs: ['127.0.0.1:{am.port}']
  scheme: https
  timeout: 5s
  http_config:
    basic_auth:
      username: alerts
      {password_field}
    tls_config:
      ca_file: {pki.dir / 'ca.crt'}
      server_name: localhost
"""
        reg = prometheus_client.CollectorRegistry()
        now = time.time()

        async def main():
            wrong = Notifier(parse_alerting_config(alerting("password: nope")), registry=reg)
            right = Notifier(parse_alerting_config(alerting(f"password_file: {pw}")))
            await wrong.start()
            await right.start()
            try:
                wrong.send([alert("Wrong", now)])
                await wait_for(lambda: value(reg, "thanos_alert_sender_alerts_dropped_total") == 1,
                               "the refused post counted as dropped")
                right.send([alert("Right", now)])
                return await wait_for(lambda: get_alerts(am.url), "the alert over TLS")
            finally:
                await wrong.stop()
                await right.stop()

        got = run(main())
        assert [a["labels"]["alertname"] for a in got] == ["Right"]
        assert value(reg, "thanos_alert_sender_errors_total", alertmanager=f"127.0.0.1:{am.port}") == 1
    finally:
        am.stop()


ALERTING_CASES = [  # (flags, what Thanos says when it refuses them)
    (["--alertmanagers.config=alertmanagers:\n- static_configs: [a:1]\n  foo: 1\n"], "field foo not found"),
    (["--alertmanagers.config=alertmanagers:\n- static_configs: [a:1]\n  api_version: v3\n"], "one of [v1 v2]"),
    (["--alertmanagers.config=alertmanagers:\n- static_configs: [a:1]\n  scheme: ftp\n"], None),
    (["--alertmanagers.config=alertmanagers:\n- timeout: 5x\n"], 'unknown unit "x"'),
    (["--alertmanagers.config=alertmanagers:\n- http_config: {basic_auth: {username: u, password: p, "
      "password_file: f}}\n"], "at most one of basic_auth password, password_file & password_ref"),
    (["--alertmanagers.config=alertmanagers:\n- http_config: {tls_config: {cert_file: /x}}\n"],
     "exactly one of key or key_file must be configured"),
    (["--alertmanagers.config=alertmanagers:\n- http_config: {bearer_token: a, bearer_token_file: b}\n"],
     "at most one of bearer_token & bearer_token_file"),
    (["--alertmanagers.config=alertmanagers:\n- static_configs: a:1\n"], "cannot unmarshal !!str"),
    (["--alertmanagers.config=alertmanager: []\n"], "field alertmanager not found"),
    (["--alertmanagers.config=alertmanagers:\n- static_configs: ['dns+am.example:9093', 'b:1']\n  scheme: https\n"
      "  path_prefix: /am\n  timeout: 3s\n  file_sd_configs:\n  - files: [/nonexistent/*.yml]\n"
      "    refresh_interval: 1m\n"], None),
    (["--alertmanagers.url=http://", ], "alertmanagers.url contains empty host"),
    (["--alertmanagers.url=http://a b:1"], "invalid character"),
    (["--alertmanagers.url=ftp://h:1"], None),
    (["--alertmanagers.url=dnssrv+https://user:pw@_am._tcp.example/prefix", "--alertmanagers.url=dns+http://am"],
     None),
    (["--alertmanagers.url=http://a:1", "--alertmanagers.config=alertmanagers: []\n"], "cannot be defined at the same"),
    (["--alert.query-template=/graph?g0.expr={{.Expr"], "failed to parse the template: template: "),
    (["--alert.query-template=/graph?g0.expr={{.Nope}}"], "failed to execute the template: template: "),
    (["--alert.query-template=/graph?g0.expr={{ .Expr }}{{ if .Expr }}&g0.tab=1{{ end }}"], None),
]


@pytest.mark.parametrize("flags,theirs", ALERTING_CASES, ids=[str(i) for i in range(len(ALERTING_CASES))])
def test_alertmanager_flags_as_thanos_rule(thanos_bin, tmp_path, flags, theirs):
    """The Alertmanager configurations a real thanos rule v0.42.4 starts with are accepted by ours;
    the ones it refuses, ours refuses for the same reason (its words where ours has them)."""
    def launch(ports: list[int]) -> Process:
        args = [thanos_bin, "rule", "--query=http://127.0.0.1:1", f"--data-dir={tmp_path / 'data'}",
                f"--rule-file={tmp_path / 'none.yml'}", f"--http-address=127.0.0.1:{ports[0]}",
                f"--grpc-address=127.0.0.1:{ports[1]}", *flags]
        p = REGISTRY.start("thanos-rule", args, tmp_path)
        p.url = f"http://127.0.0.1:{ports[0]}"
        return p

    p = start_on_free_ports(2, launch, ready_or_exited)
    try:
        refused = not p.alive()
        log = p.log()
    finally:
        p.stop()
    urls = [f.split("=", 1)[1] for f in flags if f.startswith("--alertmanagers.url=")]
    config = next((f.split("=", 1)[1] for f in flags if f.startswith("--alertmanagers.config=")), "")
    template = next((f.split("=", 1)[1] for f in flags if f.startswith("--alert.query-template=")), "")
    try:
        alertmanager_configs(urls, config, 10.0)
        check_query_template(template)
        ours = None
    except ConfigError as e:
        ours = str(e)
    assert refused == (theirs is not None), log
    assert refused == (ours is not None), ours
    if refused:
        assert theirs in log.replace('\\"', '"'), log
        assert theirs.replace("[v1 v2]", "") in ours or theirs.split()[0] in ours, ours


def test_missing_ca_file_named(tmp_path):
    cfgs = parse_alerting_config(f"alertmanagers:\n- static_configs: [a:1]\n  scheme: https\n  http_config:\n"
                                 f"    tls_config: {{ca_file: {tmp_path / 'none.crt'}}}\n")
    with pytest.raises(ConfigError, match=r"alertmanagers\[0\]: http_config.tls_config: unable to load"):
        Notifier(cfgs)
