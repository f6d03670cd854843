"""The querier's endpoint discovery and parameter parsing.

Unit checks of the parsers (Thanos' wording), then real processes: file SD reloaded on change,
``dns+``/``dnssrv+`` answered by a real DNS server (dnsmasq), ``dns+localhost`` through the system
resolver, and flag errors that name the flag.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from peers import REGISTRY, free_ports, http_get, missing
from pythanos.errors import ConfigError
from pythanos.query import discovery as qd
from pythanos.query.params import ApiError, parse_bool, parse_duration, parse_time

READY = 120.0


# --- parsers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,ms", [("1700000000", 1700000000000), ("1700000000.5", 1700000000500),
                                     ("1700000000.1234", 1700000000123), ("-1.5", -1500),
                                     ("2023-11-14T22:13:20Z", 1700000000000),
                                     ("2023-11-14T22:13:20.25Z", 1700000000250),
                                     ("2023-11-14T23:13:20+01:00", 1700000000000)])
def test_parse_time(text, ms):
    assert parse_time(text) == ms


@pytest.mark.parametrize("text", ["", "yesterday", "2023-11-14", "NaN"])
def test_parse_time_errors(text):
    with pytest.raises(ApiError, match=f'cannot parse "{text}" to a valid timestamp'):
        parse_time(text)


@pytest.mark.parametrize("text,ms", [("15", 15000), ("0.5", 500), ("5m", 300000), ("1h30m", 5400000),
                                     ("100ms", 100), ("1d", 86400000), ("0", 0)])
def test_parse_duration(text, ms):
    assert parse_duration(text) == ms


def test_parse_duration_and_bool_errors():
    with pytest.raises(ApiError, match='cannot parse "soon" to a valid duration'):
        parse_duration("soon")
    with pytest.raises(ApiError, match="'dedup' parameter: strconv.ParseBool: parsing \"maybe\": invalid syntax"):
        parse_bool("maybe", "dedup")
    assert parse_bool("1", "x") and not parse_bool("F", "x")


def test_sd_config_and_files(tmp_path):
    specs = qd.parse_sd_config("endpoints:\n  - address: 127.0.0.1:1\n  - address: dns+a.b:2\n"
                               "  - address: 127.0.0.1:3\n    strict: true\n", "cfg")
    assert specs == [qd.EndpointSpec("127.0.0.1:1"), qd.EndpointSpec("dns+a.b:2"),
                     qd.EndpointSpec("127.0.0.1:3", True)]
    for bad, msg in (("endpoints:\n  - strict: true\n", r"endpoints\[0\]: 'address' is required"),
                     ("endpoints:\n  - address: dns+a:1\n    strict: true\n", "strict endpoint cannot use DNS"),
                     ("endpoints:\n  - address: nohost\n", "needs a port"),
                     ("endpointz: []\n", "unknown field"), ("endpoints: [\n", "invalid YAML")):
        with pytest.raises(ConfigError, match=msg):
            qd.parse_sd_config(bad, "cfg")
    (tmp_path / "a.json").write_text(json.dumps([{"targets": ["127.0.0.1:1", "127.0.0.1:2"], "labels": {}}]))
    (tmp_path / "b.yml").write_text("- targets: ['127.0.0.1:3']\n")
    (tmp_path / "c.yml").write_text("- targets: 5\n")
    targets, errors = qd.read_sd_files([str(tmp_path / "*.json"), str(tmp_path / "*.yml")])
    assert targets == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    assert len(errors) == 1 and "c.yml: group 0: 'targets' must be a list" in errors[0]
    assert qd.split_dns_prefix("dnssrv+_x._tcp.y") == ("dnssrv+", "_x._tcp.y")
    assert qd.split_dns_prefix("10.0.0.1:1") == ("", "10.0.0.1:1")


# --- real processes ------------------------------------------------------------------------------

class Sidecars(list):
    """The sidecars' gRPC ports, and the Prometheus they front."""

    def __init__(self, ports, prom_url: str) -> None:
        super().__init__(ports)
        self.prom_url = prom_url


@pytest.fixture(scope="module")
def two_sidecars(tmp_path_factory, prometheus_bin, pythanos_bin):
    base = tmp_path_factory.mktemp("discovery")
    (port,) = free_ports(1)
    cfg = base / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: eu1\n")
    procs = []
    try:
        prom = REGISTRY.start("prometheus", [prometheus_bin, f"--config.file={cfg}",
                                             f"--storage.tsdb.path={base / 'data'}",
                                             f"--web.listen-address=127.0.0.1:{port}"], base, session=True)
        procs.append(prom)
        prom.url = f"http://127.0.0.1:{port}"
        prom.wait_http_ready("/-/ready", READY)
        grpc = []
        for i in range(2):
            g, h = free_ports(2)
            sc = REGISTRY.start(f"sidecar-{i}", [pythanos_bin, "sidecar", f"--prometheus.url={prom.url}",
                                                 f"--grpc-address=127.0.0.1:{g}", f"--http-address=127.0.0.1:{h}"],
                                base, session=True)
            procs.append(sc)
            sc.url = f"http://127.0.0.1:{h}"
            sc.wait_http_ready("/-/ready", READY)
            grpc.append(g)
        yield Sidecars(grpc, prom_url=prom.url)
    finally:
        for p in reversed(procs):
            p.stop()


def start_query(pythanos_bin, base, *flags):
    """One worker: these tests follow one endpoint set through its changes (each worker of a
    querier keeps its own, as separate querier replicas do)."""
    h, g = free_ports(2)
    p = REGISTRY.start("query", [pythanos_bin, "query", f"--http-address=127.0.0.1:{h}",
                                 f"--grpc-address=127.0.0.1:{g}", "--query.workers=1", *flags], base)
    p.url = f"http://127.0.0.1:{h}"
    p.wait_http_ready("/-/ready", READY)
    return p


def healthy(q) -> set:
    code, body = http_get(q.url + "/api/v1/stores")
    if code != 200:
        return set()
    return {s["name"] for g in json.loads(body)["data"].values() for s in g if not s["lastError"]}


def wait_stores(q, want: set, timeout: float = 30.0) -> None:
    q.wait_ready(lambda: healthy(q) == want, timeout, what=f"stores {sorted(want)}, have {sorted(healthy(q))}")


def test_file_sd_reloaded_on_change(two_sidecars, pythanos_bin, tmp_path):
    a, b = (f"127.0.0.1:{g}" for g in two_sidecars)
    sd = tmp_path / "stores.yml"
    sd.write_text(f"- targets: ['{a}']\n")
    q = start_query(pythanos_bin, tmp_path, f"--store.sd-files={tmp_path / '*.yml'}")
    try:
        wait_stores(q, {a})
        sd.write_text(f"- targets: ['{a}', '{b}']\n")
        wait_stores(q, {a, b})
        sd.write_text(f"- targets: ['{b}']\n")
        wait_stores(q, {b})
        code, body = http_get(q.url + "/api/v1/query?query=count(up)")
        assert code == 200 and json.loads(body)["status"] == "success"
    finally:
        q.stop()


def test_endpoint_sd_config_file(two_sidecars, pythanos_bin, tmp_path):
    a, b = (f"127.0.0.1:{g}" for g in two_sidecars)
    cfg = tmp_path / "endpoints.yml"
    cfg.write_text(f"endpoints:\n  - address: {a}\n")
    q = start_query(pythanos_bin, tmp_path, f"--endpoint.sd-config-file={cfg}")
    try:
        wait_stores(q, {a})
        cfg.write_text(f"endpoints:\n  - address: {a}\n  - address: {b}\n")
        wait_stores(q, {a, b})
    finally:
        q.stop()


@pytest.fixture
def dnsmasq(two_sidecars, tmp_path):
    binary = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if shutil.os.access("/usr/sbin/dnsmasq", 1) else None)
    if binary is None:
        missing("dnsmasq (Debian dnsmasq-base; scripts/system-peers.sh installs it)")
    (port,) = free_ports(1)
    a, b = two_sidecars
    args = [binary, "--keep-in-foreground", "--no-daemon", "--no-resolv", "--no-hosts", "--listen-address=127.0.0.1",
            "--bind-interfaces", f"--port={port}", "--user=root", "--pid-file=",
            "--host-record=store-a.pythanos.test,127.0.0.1", "--host-record=store-b.pythanos.test,127.0.0.1",
            f"--srv-host=_grpc._tcp.stores.pythanos.test,store-a.pythanos.test,{a}",
            f"--srv-host=_grpc._tcp.stores.pythanos.test,store-b.pythanos.test,{b}"]
    p = REGISTRY.start("dnsmasq", args, tmp_path)
    deadline = time.monotonic() + 20
    import dns.resolver
    r = dns.resolver.Resolver(configure=False)
    r.nameservers, r.port = ["127.0.0.1"], port
    while True:
        try:
            r.resolve("store-a.pythanos.test", "A", lifetime=1)
            break
        except Exception:  # noqa: BLE001
            if time.monotonic() > deadline or not p.alive():
                pytest.fail(f"dnsmasq did not answer:\n{p.log()}")
            time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    p.stop()


def test_dns_and_dnssrv_endpoints(dnsmasq, two_sidecars, pythanos_bin, tmp_path):
    a, b = two_sidecars
    q = start_query(pythanos_bin, tmp_path, "--endpoint=dnssrv+_grpc._tcp.stores.pythanos.test",
                    f"--store.sd-dns-server={dnsmasq}")
    try:
        wait_stores(q, {f"127.0.0.1:{a}", f"127.0.0.1:{b}"})
    finally:
        q.stop()
    q = start_query(pythanos_bin, tmp_path, f"--endpoint=dns+store-b.pythanos.test:{b}",
                    f"--store.sd-dns-server={dnsmasq}")
    try:
        wait_stores(q, {f"127.0.0.1:{b}"})
    finally:
        q.stop()


def test_srv_lookup_uses_the_resolv_conf_search_list(dnsmasq, monkeypatch):
    """Without --store.sd-dns-server, SRV names get resolv.conf's search list and ndots, as getaddrinfo's names
    do (and Thanos' resolvers): in a pod, the operator's dnssrv+_grpc._tcp.<svc>.<ns>.svc only exists as
    <...>.svc.cluster.local. Here resolv.conf is a resolver of dnsmasq with search domain pythanos.test."""
    import asyncio

    import dns.asyncresolver
    import dns.exception
    import dns.name

    host, port = dnsmasq.rsplit(":", 1)

    class PodResolver(dns.asyncresolver.Resolver):
        def __init__(self, filename="/etc/resolv.conf", configure=True):
            super().__init__(configure=False)
            if configure:   # what configure=True reads from a pod's /etc/resolv.conf
                self.nameservers, self.port = [host], int(port)
                self.search, self.ndots = [dns.name.from_text("pythanos.test")], 5

    monkeypatch.setattr(dns.asyncresolver, "Resolver", PodResolver)
    got = asyncio.run(qd.resolve("dnssrvnoa+", "_grpc._tcp.stores"))
    assert sorted(a.split(":")[0] for a in got) == ["store-a.pythanos.test", "store-b.pythanos.test"], got
    # with an explicit server the name is asked as given (no search list): dnsmasq refuses it
    try:
        got = asyncio.run(qd.resolve("dnssrvnoa+", "_grpc._tcp.stores", dnsmasq))
    except dns.exception.DNSException:
        got = []
    assert got == []


def test_dns_localhost_through_system_resolver(two_sidecars, pythanos_bin, tmp_path):
    a, _ = two_sidecars
    q = start_query(pythanos_bin, tmp_path, f"--endpoint=dns+localhost:{a}")
    try:
        wait_stores(q, {f"127.0.0.1:{a}"})
    finally:
        q.stop()


@pytest.mark.parametrize("flag,msg", [
    ("--endpoint=nohost", "--endpoint=nohost: address 'nohost' needs a port"),
    ("--endpoint-strict=dns+a:1", "a strict endpoint cannot use DNS discovery"),
    ("--query.timeout=soon", "argument --query.timeout"),
    ("--query.max-concurrent=0", "argument --query.max-concurrent: must be positive"),
    ("--endpoint.sd-config=endpoints: [", "--endpoint.sd-config: invalid YAML"),
])
def test_flag_errors_name_the_flag(pythanos_bin, flag, msg):
    r = subprocess.run([pythanos_bin, "query", "--http-address=127.0.0.1:0", flag], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode in (1, 2) and msg in (r.stdout + r.stderr), r.stdout + r.stderr


def test_unhealthy_endpoint_dropped_and_readded(two_sidecars, pythanos_bin, tmp_path):
    """A sidecar that goes away is dropped from queries at the next Info round (its status stays,
    with the error); started again on the same port it is added back."""
    a = f"127.0.0.1:{two_sidecars[0]}"
    # a third sidecar we can stop, on the same Prometheus as the others
    g, h = free_ports(2)
    args = [pythanos_bin, "sidecar", f"--prometheus.url={two_sidecars.prom_url}", f"--grpc-address=127.0.0.1:{g}",
            f"--http-address=127.0.0.1:{h}", "--grpc-grace-period=0s", "--http-grace-period=0s"]
    sc = REGISTRY.start("sidecar-flaky", args, tmp_path)
    sc.url = f"http://127.0.0.1:{h}"
    sc.wait_http_ready("/-/ready", READY)
    c = f"127.0.0.1:{g}"
    q = start_query(pythanos_bin, tmp_path, f"--endpoint={a}", f"--endpoint={c}")
    try:
        wait_stores(q, {a, c})
        sc.stop()
        wait_stores(q, {a})
        code, body = http_get(q.url + "/api/v1/stores")
        status = {s["name"]: s for grp in json.loads(body)["data"].values() for s in grp}
        assert status[c]["lastError"], status  # still listed, with why
        code, body = http_get(q.url + "/api/v1/query?query=count(up)&partial_response=false")
        assert code == 200, body  # the dropped endpoint is not asked
        sc = REGISTRY.start("sidecar-flaky", args, tmp_path)
        sc.url = f"http://127.0.0.1:{h}"
        sc.wait_http_ready("/-/ready", READY)
        wait_stores(q, {a, c})
    finally:
        q.stop()
        sc.stop()
