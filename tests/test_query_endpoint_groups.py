"""Endpoint groups (issue 13 §1): ``--endpoint-group``, ``--endpoint-group-strict`` and ``group: true``
in ``--endpoint.sd-config``, as Thanos v0.42 has them, with client TLS.

Members are two of our store gateways on the same port of 127.0.0.1 and 127.0.0.2, each over a
bucket with one series naming it (``member_info{member="a"}``, ``{member="b"}``), so an answer says
which member gave it. Our querier finds them through a real DNS server (dnsmasq) answering
``grp.pythanos.test`` with both addresses. The real ``thanos query`` v0.42.4 reads names only from
the system's resolver, which a test cannot point at dnsmasq; it gets the same two members through
its hidden ``--inject-test-addresses`` flag (the test hook of its group resolver, which Thanos' own
e2e tests use) behind ``dns+localhost:<port>``. Both then balance over the same two members.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from peers import REGISTRY, free_ports, http_get, listening, missing
from tlsfiles import make_pki

READY = 120.0
NAME = "grp.pythanos.test"
H = 3_600_000
T0 = 1_700_000_000_000 // H * H
AT = (T0 + H) / 1000  # the instant every query asks about
ANSWERS = {m: [{"metric": {"__name__": "member_info", "cluster": "grp", "member": m}, "value": [AT, "1"]}]
           for m in "ab"}


# ------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def buckets(tmp_path_factory) -> dict[str, Path]:
    """One bucket per member: a block holding the series that names it."""
    import numpy as np

    from pythanos.tsdb.block import BlockWriter

    base = tmp_path_factory.mktemp("group-buckets")
    out = {}
    for m in "ab":
        w = BlockWriter(base / m, thanos={"labels": {"cluster": "grp"}, "source": "sidecar"},
                        min_time=T0, max_time=T0 + 2 * H)
        t = np.arange(T0, T0 + 2 * H, 15_000, dtype=np.int64)
        w.add_series({"__name__": "member_info", "member": m}, t, np.ones(len(t)))
        w.write()
        out[m] = base / m
    return out


class Dns:
    """dnsmasq answering from a hosts file it re-reads on SIGHUP."""

    def __init__(self, proc, address: str, hosts: Path) -> None:
        self.proc, self.address, self.hosts = proc, address, hosts

    def ask(self, name: str) -> list[str]:
        import dns.resolver

        r = dns.resolver.Resolver(configure=False)
        host, port = self.address.rsplit(":", 1)
        r.nameservers, r.port = [host], int(port)
        try:
            return sorted(a.address for a in r.resolve(name, "A", lifetime=2))
        except dns.resolver.NXDOMAIN:
            return []

    def set_hosts(self, text: str, name: str, want: list[str]) -> None:
        """Rewrite the hosts file, have dnsmasq read it again, wait until it answers ``want``."""
        self.hosts.write_text(text)
        os.kill(self.proc.pid, signal.SIGHUP)
        self.proc.wait_ready(lambda: self.ask(name) == want, 30, what=f"{name} -> {want}")


@pytest.fixture(scope="module")
def dns(tmp_path_factory) -> Dns:
    binary = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.access("/usr/sbin/dnsmasq", os.X_OK) else None)
    if binary is None:
        missing("dnsmasq (Debian dnsmasq-base; scripts/system-peers.sh installs it)")
    base = tmp_path_factory.mktemp("dnsmasq")
    hosts = base / "hosts"
    hosts.write_text(f"127.0.0.1 {NAME}\n127.0.0.2 {NAME}\n127.0.0.1 grow.pythanos.test\n")
    (port,) = free_ports(1)
    p = REGISTRY.start("dnsmasq", [binary, "--keep-in-foreground", "--no-daemon", "--no-resolv", "--no-hosts",
                                   f"--addn-hosts={hosts}", "--listen-address=127.0.0.1", "--bind-interfaces",
                                   f"--port={port}", "--user=root", "--pid-file="], base, session=True)
    d = Dns(p, f"127.0.0.1:{port}", hosts)
    try:
        p.wait_ready(lambda: d.ask(NAME) == ["127.0.0.1", "127.0.0.2"], 30, what="dnsmasq answering")
        yield d
    finally:
        p.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and a leaf for grp.pythanos.test (server and client use), and the same from another CA."""
    base = tmp_path_factory.mktemp("group-pki")
    return make_pki(base / "ca", NAME), make_pki(base / "other", NAME, ca_name="other-ca")


# ------------------------------------------------------------------------------------ processes

def start_member(pythanos_bin: str, buckets, base: Path, m: str, port: int, *extra: str, name: str = ""):
    """Our store gateway serving member ``m``'s bucket on 127.0.0.<1|2>:port (``name``: its data
    directory and log name, default ``member-<m>``)."""
    ip = "127.0.0.1" if m == "a" else "127.0.0.2"
    name = name or f"member-{m}"
    p = REGISTRY.start(name, [pythanos_bin, "store", f"--data-dir={base / name}",
                                       f"--objstore.config={{type: FILESYSTEM, config: {{directory: {buckets[m]}}}}}",
                                       f"--grpc-address={ip}:{port}", "--http-address=127.0.0.1:0",
                                       "--grpc-grace-period=0s", "--http-grace-period=0s", *extra], base)
    p.url = "http://" + listening(p, ("http",), READY)["http"]
    p.wait_http_ready("/-/ready", READY)
    p.extra["grpc"] = f"{ip}:{port}"
    return p


class Members:
    def __init__(self, procs: dict, port: int) -> None:
        self.procs, self.port = procs, port

    def stop(self) -> None:
        for p in self.procs.values():
            p.stop()


def start_members(pythanos_bin: str, buckets, base: Path, *extra: str, extra_b: tuple = ()) -> Members:
    (port,) = free_ports(1)
    a = start_member(pythanos_bin, buckets, base, "a", port, *extra)
    b = start_member(pythanos_bin, buckets, base, "b", port, *(extra_b or extra))
    return Members({"a": a, "b": b}, port)


@pytest.fixture(scope="module")
def members(pythanos_bin, buckets, tmp_path_factory) -> Members:
    ms = start_members(pythanos_bin, buckets, tmp_path_factory.mktemp("members"))
    yield ms
    ms.stop()


def our_query(pythanos_bin: str, base: Path, name: str, *flags: str):
    p = REGISTRY.start(name, [pythanos_bin, "query", "--http-address=127.0.0.1:0", "--grpc-address=127.0.0.1:0",
                              "--query.workers=1", "--grpc-grace-period=0s", "--http-grace-period=0s", *flags], base)
    p.url = "http://" + listening(p, ("http",), READY)["http"]
    p.wait_http_ready("/-/ready", READY)
    return p


def thanos_query(thanos_bin: str, base: Path, name: str, *flags: str):
    h, g = free_ports(2)
    p = REGISTRY.start(name, [thanos_bin, "query", f"--http-address=127.0.0.1:{h}", f"--grpc-address=127.0.0.1:{g}",
                              *flags], base)
    p.url = f"http://127.0.0.1:{h}"
    p.wait_http_ready("/-/ready", READY)
    return p


def thanos_group_flags(port: int) -> list[str]:
    """Thanos' group over both members (see the module docstring)."""
    return [f"--endpoint-group=dns+localhost:{port}", f"--inject-test-addresses=127.0.0.1:{port}",
            f"--inject-test-addresses=127.0.0.2:{port}"]


def stores(q) -> dict[str, dict]:
    code, body = http_get(q.url + "/api/v1/stores")
    assert code == 200, body
    return {s["name"]: s for group in json.loads(body)["data"].values() for s in group}


def wait_healthy(q, name: str) -> dict:
    q.wait_ready(lambda: name in stores(q) and stores(q)[name]["lastError"] is None, READY,
                 what=f"{name} healthy in /api/v1/stores, have {stores(q)}")
    return stores(q)[name]


def query(q, expr: str = "member_info", **params) -> dict:
    args = {"query": expr, "time": f"{AT}", **params}
    code, body = http_get(q.url + "/api/v1/query?" + urllib.parse.urlencode(args), timeout=30)
    doc = json.loads(body)
    doc["code"] = code
    return doc


def answer(q) -> str | None:
    """Which member answered (None: no data, or a warning)."""
    doc = query(q)
    assert doc["status"] == "success", doc
    result = doc["data"]["result"]
    for m, want in ANSWERS.items():
        if result == want and not doc.get("warnings"):
            return m
    return None


def wait_both(q) -> set:
    """Query until both members have answered; the set of distinct answers (every one of a member)."""
    seen: set = set()

    def both() -> bool:
        m = answer(q)
        assert m is not None, query(q)
        seen.add(m)
        return seen == {"a", "b"}
    q.wait_ready(both, READY, what=f"answers of both members, have {seen}")
    return seen


def parse_time(s: str) -> dt.datetime:
    """RFC 3339 with up to nanoseconds (Thanos) or microseconds (ours)."""
    head, _, frac = s.rstrip("Z").partition(".")
    return dt.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


# ------------------------------------------------------------------------------------ the tests

def test_group_answers_from_both_members_like_thanos(dns, members, pythanos_bin, thanos_bin, tmp_path):
    """(a) One endpoint, thanos:///<address>, whose calls go round-robin to both members: from the
    flag, from an SD config entry with ``group: true``, and in a real Thanos querier alike."""
    port = members.port
    group = f"dns+{NAME}:{port}"
    ours = our_query(pythanos_bin, tmp_path, "query-group", f"--endpoint-group={group}",
                     f"--store.sd-dns-server={dns.address}")
    sd = our_query(pythanos_bin, tmp_path, "query-group-sd", f"--store.sd-dns-server={dns.address}",
                   f"--endpoint.sd-config=endpoints:\n  - address: {group}\n    group: true\n")
    theirs = thanos_query(thanos_bin, tmp_path, "thanos-query-group", *thanos_group_flags(port))
    try:
        ours_status = wait_healthy(ours, f"thanos:///{group}")
        assert wait_healthy(sd, f"thanos:///{group}")["labelSets"] == ours_status["labelSets"]
        their_status = wait_healthy(theirs, f"thanos:///dns+localhost:{port}")
        assert len(stores(ours)) == len(stores(theirs)) == 1  # one endpoint, not one per member
        for k in ("labelSets", "minTime", "maxTime"):
            assert ours_status[k] == their_status[k], (k, ours_status, their_status)
        assert wait_both(ours) == wait_both(sd) == wait_both(theirs) == {"a", "b"}
        # an answer that does not depend on the member is the same from every querier
        for q in (ours, sd, theirs):
            assert query(q, "count(member_info)")["data"]["result"] == [{"metric": {}, "value": [AT, "1"]}]
    finally:
        for q in (ours, sd, theirs):
            q.stop()


def test_service_config_of_the_entry_is_used(dns, members, pythanos_bin, tmp_path):
    """An SD config entry's ``service_config`` replaces Thanos' default (round_robin): with
    pick_first every call goes to the one member it connected to."""
    group = f"dns+{NAME}:{members.port}"
    cfg = (f"endpoints:\n  - address: {group}\n    group: true\n"
           "    service_config: '{\"loadBalancingPolicy\": \"pick_first\"}'\n")
    q = our_query(pythanos_bin, tmp_path, "query-pick-first", f"--store.sd-dns-server={dns.address}",
                  f"--endpoint.sd-config={cfg}")
    try:
        wait_healthy(q, f"thanos:///{group}")
        got = {answer(q) for _ in range(8)}
        assert len(got) == 1 and None not in got, got
    finally:
        q.stop()


def test_group_survives_a_member_stopped(dns, buckets, pythanos_bin, thanos_bin, tmp_path):
    """(b) A member stops: the group stays healthy and every query is answered by the other, in
    ours and in Thanos; started again, it is balanced over again (ours)."""
    ms = start_members(pythanos_bin, buckets, tmp_path)
    group = f"dns+{NAME}:{ms.port}"
    ours = our_query(pythanos_bin, tmp_path, "query-group-b", f"--endpoint-group={group}",
                     f"--store.sd-dns-server={dns.address}")
    theirs = thanos_query(thanos_bin, tmp_path, "thanos-query-group-b", *thanos_group_flags(ms.port))
    both = ((ours, f"thanos:///{group}"), (theirs, f"thanos:///dns+localhost:{ms.port}"))
    try:
        for q, name in both:
            wait_healthy(q, name)
            assert wait_both(q) == {"a", "b"}
        ms.procs["b"].stop()
        stopped = dt.datetime.now(dt.timezone.utc)
        for q, name in both:
            # three in a row: round-robin no longer picks b (its connection's end has been seen)
            q.wait_ready(lambda q=q: [answer(q) for _ in range(3)] == ["a"] * 3, READY, what="a answering alone")
            assert [answer(q) for _ in range(8)] == ["a"] * 8  # not one query lost to the stopped member
            q.wait_ready(lambda q=q, name=name: parse_time(wait_healthy(q, name)["lastCheck"]) > stopped, READY,
                         what="a successful check of the group after the stop")
        ms.procs["b"] = start_member(pythanos_bin, buckets, tmp_path, "b", ms.port)
        assert wait_both(ours) == {"a", "b"}
    finally:
        ours.stop()
        theirs.stop()
        ms.stop()


def test_group_over_mtls(dns, buckets, pki, pythanos_bin, thanos_bin, tmp_path):
    """(c) Members serving mutual TLS: a group dialled with the client flags (certificate, key, CA)
    or an SD config entry's own tls_config is served by both; with the wrong CA it is refused and
    the querier's log says so, naming the group. The certificate is checked against the group's
    DNS name. Thanos v0.42.4 checks it against the target it hands gRPC, 'dns+<name>', so it
    needs --grpc-client-server-name (shown here too)."""
    ca, other = pki
    ms = start_members(pythanos_bin, buckets, tmp_path, f"--grpc-server-tls-cert={ca.dir / 'tls.crt'}",
                       f"--grpc-server-tls-key={ca.dir / 'tls.key'}",
                       f"--grpc-server-tls-client-ca={ca.dir / 'ca.crt'}")
    group = f"dns+{NAME}:{ms.port}"
    client = [f"--grpc-client-tls-cert={ca.dir / 'tls.crt'}", f"--grpc-client-tls-key={ca.dir / 'tls.key'}"]
    procs = []
    try:
        flags = our_query(pythanos_bin, tmp_path, "query-group-mtls", f"--endpoint-group={group}",
                          f"--store.sd-dns-server={dns.address}", "--grpc-client-tls-secure",
                          f"--grpc-client-tls-ca={ca.dir / 'ca.crt'}", *client)
        procs.append(flags)
        cfg = (f"endpoints:\n  - address: {group}\n    group: true\n    client_config:\n      tls_config:\n"
               f"        ca_file: {ca.dir / 'ca.crt'}\n        cert_file: {ca.dir / 'tls.crt'}\n"
               f"        key_file: {ca.dir / 'tls.key'}\n")
        entry = our_query(pythanos_bin, tmp_path, "query-group-mtls-sd", f"--store.sd-dns-server={dns.address}",
                          f"--endpoint.sd-config={cfg}")
        procs.append(entry)
        wrong = our_query(pythanos_bin, tmp_path, "query-group-wrong-ca", f"--endpoint-group={group}",
                          f"--store.sd-dns-server={dns.address}", "--grpc-client-tls-secure",
                          f"--grpc-client-tls-ca={other.dir / 'ca.crt'}", *client)
        procs.append(wrong)
        thanos = [*thanos_group_flags(ms.port), "--grpc-client-tls-secure", f"--grpc-client-tls-ca={ca.dir / 'ca.crt'}",
                  *client]
        theirs = thanos_query(thanos_bin, tmp_path, "thanos-query-group-mtls", *thanos,
                              f"--grpc-client-server-name={NAME}")
        procs.append(theirs)
        theirs_no_name = thanos_query(thanos_bin, tmp_path, "thanos-query-group-mtls-no-name", *thanos)
        procs.append(theirs_no_name)

        for q in (flags, entry):
            wait_healthy(q, f"thanos:///{group}")
            assert wait_both(q) == {"a", "b"}
        wait_healthy(theirs, f"thanos:///dns+localhost:{ms.port}")
        assert wait_both(theirs) == {"a", "b"}

        line = wait_line(wrong, "update of endpoint failed", f"address=thanos:///{group}")
        assert "not trusted by the configured CA" in line and "CERTIFICATE_VERIFY_FAILED" in line, line
        assert stores(wrong) == {} and query(wrong)["data"]["result"] == []
        line = wait_line(theirs_no_name, "update of endpoint failed", "not dns+localhost")
        assert f"address=thanos:///dns+localhost:{ms.port}" in line, line
    finally:
        for p in procs:
            p.stop()
        ms.stop()


def test_group_skip_verify_pins_every_member(dns, buckets, pki, pythanos_bin, tmp_path):
    """insecure_skip_verify on a group: each member's certificate is fetched (here from two CAs,
    with the group's name in common) and all are trusted for the group's channel."""
    ca, other = pki
    ms = start_members(pythanos_bin, buckets, tmp_path, f"--grpc-server-tls-cert={ca.dir / 'tls.crt'}",
                       f"--grpc-server-tls-key={ca.dir / 'tls.key'}",
                       extra_b=(f"--grpc-server-tls-cert={other.dir / 'tls.crt'}",
                                f"--grpc-server-tls-key={other.dir / 'tls.key'}"))
    group = f"dns+{NAME}:{ms.port}"
    cfg = (f"endpoints:\n  - address: {group}\n    group: true\n"
           "    client_config: {tls_config: {insecure_skip_verify: true}}\n")
    q = our_query(pythanos_bin, tmp_path, "query-group-skip-verify", f"--store.sd-dns-server={dns.address}",
                  f"--endpoint.sd-config={cfg}")
    try:
        wait_healthy(q, f"thanos:///{group}")
        assert wait_both(q) == {"a", "b"}
    finally:
        q.stop()
        ms.stop()


def test_strict_group_kept_while_down_as_thanos(buckets, pythanos_bin, thanos_bin, tmp_path):
    """(d) --endpoint-group-strict: while its member is down the group stays on the stores page as
    Thanos shows it (name, label sets, time range, the time of its last successful check, an
    error) and stays in queries (without partial response the query fails naming it), while a
    plain group is dropped after --store.unhealthy-timeout; back up, it is healthy again."""
    (px, py) = free_ports(2)
    x = start_member(pythanos_bin, buckets, tmp_path, "a", px, name="x")
    y = start_member(pythanos_bin, buckets, tmp_path, "a", py, name="y")
    flags = [f"--endpoint-group-strict=127.0.0.1:{px}", f"--endpoint-group=127.0.0.1:{py}",
             "--store.unhealthy-timeout=2s"]
    strict, plain = f"thanos:///127.0.0.1:{px}", f"thanos:///127.0.0.1:{py}"
    ours = our_query(pythanos_bin, tmp_path, "query-strict-group", *flags)
    theirs = thanos_query(thanos_bin, tmp_path, "thanos-query-strict-group", *flags)
    try:
        for q in (ours, theirs):
            wait_healthy(q, strict)
            wait_healthy(q, plain)
        x.stop()
        y.stop()
        stopped = dt.datetime.now(dt.timezone.utc)
        down = []
        for q in (ours, theirs):
            def dropped_and_kept(q=q) -> bool:
                s = stores(q)
                return plain not in s and strict in s and s[strict]["lastError"] is not None
            q.wait_ready(dropped_and_kept, READY, what=f"{plain} dropped, {strict} kept with an error")
            down.append(stores(q)[strict])
        a, b = down
        for k in ("name", "labelSets", "minTime", "maxTime"):
            assert a[k] == b[k], (k, a, b)
        assert a["labelSets"] == [{"cluster": "grp"}]
        for s in (a, b):
            assert parse_time(s["lastCheck"]) < stopped, s  # the last check that succeeded
            assert "127.0.0.1" in s["lastError"] or "refused" in s["lastError"], s
        for q in (ours, theirs):  # still asked: without partial response the query fails naming it
            doc = query(q, partial_response="false")
            assert doc["status"] == "error" and strict in doc["error"], doc
            doc = query(q)
            assert doc["status"] == "success" and doc["data"]["result"] == [] and doc["warnings"], doc
        x = start_member(pythanos_bin, buckets, tmp_path, "a", px, name="x")
        for q in (ours, theirs):
            wait_healthy(q, strict)
    finally:
        ours.stop()
        theirs.stop()
        x.stop()
        y.stop()


def test_strict_endpoints_that_never_answered_are_still_asked(pythanos_bin, thanos_bin, tmp_path):
    """A strict group (and a strict endpoint) that has never answered is not on the stores page
    (no component type yet) but is asked by every query, as in Thanos: without partial response
    the query fails naming it, with it the answer carries a warning."""
    d1, d2 = free_ports(2)  # leased: nothing listens there
    flags = [f"--endpoint-group-strict=127.0.0.1:{d1}", f"--endpoint-strict=127.0.0.1:{d2}"]
    ours = our_query(pythanos_bin, tmp_path, "query-strict-never", *flags)
    theirs = thanos_query(thanos_bin, tmp_path, "thanos-query-strict-never", *flags)
    try:
        for q in (ours, theirs):
            assert stores(q) == {}
            q.wait_ready(lambda q=q: query(q, partial_response="false")["status"] == "error", READY,
                         what="a query failing on the strict endpoints")
            doc = query(q, partial_response="false")
            assert f"thanos:///127.0.0.1:{d1}" in doc["error"] or f"127.0.0.1:{d2}" in doc["error"], doc
            doc = query(q)
            assert doc["status"] == "success" and doc["data"]["result"] == [] and doc["warnings"], doc
    finally:
        ours.stop()
        theirs.stop()


def test_group_follows_dns_changes(dns, members, pythanos_bin, tmp_path):
    """A member added to the group's DNS name is used within --store.sd-dns-interval (Thanos
    resolves groups at that interval; grpcio's resolver would wait for a connection to drop)."""
    group = f"dns+grow.pythanos.test:{members.port}"
    q = our_query(pythanos_bin, tmp_path, "query-group-grow", f"--endpoint-group={group}",
                  f"--store.sd-dns-server={dns.address}", "--store.sd-dns-interval=1s")
    try:
        wait_healthy(q, f"thanos:///{group}")
        assert {answer(q) for _ in range(6)} == {"a"}
        dns.set_hosts(f"127.0.0.1 {NAME}\n127.0.0.2 {NAME}\n127.0.0.1 grow.pythanos.test\n"
                      "127.0.0.2 grow.pythanos.test\n", "grow.pythanos.test", ["127.0.0.1", "127.0.0.2"])
        assert wait_both(q) == {"a", "b"}
        wait_line(q, "endpoint group members changed", f"address=thanos:///{group}")
    finally:
        q.stop()


def wait_line(p, *needles: str) -> str:
    found: list = []

    def seen() -> bool:
        found[:] = [ln for ln in p.log(3000).splitlines() if all(n in ln for n in needles)]
        return bool(found)
    p.wait_ready(seen, READY, what=f"a log line with {needles}")
    return found[0]


# ------------------------------------------------------------------------------- errors, units

def run_query(pythanos_bin: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([pythanos_bin, "query", "--http-address=127.0.0.1:0", "--grpc-address=127.0.0.1:0", *flags],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def sd(entry: str) -> str:
    return "--endpoint.sd-config=endpoints:\n  - " + entry.replace("\n", "\n    ") + "\n"


@pytest.mark.parametrize("flag,msg", [
    ("--endpoint-group-strict=dns+grp:1",
     "--endpoint-group-strict=dns+grp:1: a strict endpoint group cannot use DNS discovery"),
    ("--endpoint-group=dnssrv+_grpc._tcp.grp",
     "--endpoint-group=dnssrv+_grpc._tcp.grp: an endpoint group cannot use dnssrv+ (SRV) discovery here"),
    ("--endpoint-group=nohost", "--endpoint-group=nohost: address 'nohost' needs a port"),
    ("--endpoint-group=", "--endpoint-group=: empty address"),
    ("--endpoint-group-strict=a:99999", "--endpoint-group-strict=a:99999: port out of range"),
    (sd("address: a:1\ngroup: maybe"), "--endpoint.sd-config: endpoints[0].group: expected true or false, got 'maybe'"),
    (sd("address: dns+a:1\ngroup: true\nstrict: true"),
     "--endpoint.sd-config: endpoints[0]: a strict endpoint group cannot use DNS discovery (dns+a:1)"),
    (sd("address: dnssrvnoa+_grpc._tcp.a\ngroup: true"),
     "--endpoint.sd-config: endpoints[0].address: an endpoint group cannot use dnssrvnoa+"),
    (sd("address: a:1\nservice_config: '{}'"),
     "--endpoint.sd-config: endpoints[0].service_config: only valid for endpoint groups (group: true); a:1"),
    (sd("address: a:1\ngroup: true\nservice_config: '{nope'"),
     "--endpoint.sd-config: endpoints[0].service_config: invalid gRPC service config: not valid JSON"),
    (sd("address: a:1\ngroup: true\nservice_config: '[]'"),
     "--endpoint.sd-config: endpoints[0].service_config: invalid gRPC service config: expected a JSON object"),
    (sd("address: a:1\ngroup: true\nservice_config: '{\"loadBalancingPolicy\": \"nope\"}'"),
     "endpoints[0].service_config: invalid gRPC service config: errors validating service config: "
     "[field:loadBalancingPolicy error:unknown LB policy"),
    (sd("address: a:1\ngroup: true\nservice_config: {loadBalancingPolicy: round_robin}"),
     "endpoints[0].service_config: expected a string holding gRPC service config JSON"),
    (sd("address: a:1\ngroup: true\nclient_config: {tls_config: {ca_file: /nonexistent/ca.crt}}"),
     "--endpoint.sd-config: endpoints[0].client_config.tls_config.ca_file=/nonexistent/ca.crt: cannot read"),
])
def test_flag_and_config_errors(pythanos_bin, flag, msg):
    """(e) Each mistake stops the querier with one line naming the flag or the entry's field."""
    r = run_query(pythanos_bin, flag)
    assert r.returncode in (1, 2) and msg in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_help_has_thanos_group_flags(pythanos_bin):
    out = " ".join(run_query(pythanos_bin, "--help").stdout.split())
    assert ("--endpoint-group <endpoint-group> (Deprecated, Experimental): DNS name of statically configured Thanos "
            "API server groups (repeatable). Targets resolved from the DNS name will be queried in a round-robin, "
            "instead of a fanout manner.") in out, out
    assert ("--endpoint-group-strict <endpoint-group-strict> (Deprecated, Experimental): DNS name of statically "
            "configured Thanos API server groups (repeatable) that are always used, even if the health check "
            "fails.") in out, out


def test_groups_in_config_and_discovery():
    """Parsing (flags' and SD config's groups are keyed by their thanos:/// name, apart from a plain
    endpoint at the same address) and what each address form is dialled as."""
    import asyncio

    from pythanos.query import discovery as qd
    from pythanos.storeapi.client import GROUP_SERVICE_CONFIG, group_channel_options

    cfg = qd.parse_endpoint_config(
        "endpoints:\n  - address: 127.0.0.1:1\n  - address: 127.0.0.1:1\n    group: true\n"
        "  - address: dns+localhost:2\n    group: true\n"
        "    service_config: '{\"loadBalancingPolicy\": \"pick_first\"}'\n",
        "cfg")
    plain, grp, dnsgrp = cfg.endpoints
    assert (plain.group, grp.group, dnsgrp.group) == (False, True, True)
    assert (plain.name, grp.name, dnsgrp.name) == ("127.0.0.1:1", "thanos:///127.0.0.1:1", "thanos:///dns+localhost:2")
    d = qd.Discovery(static=[*cfg.endpoints, qd.EndpointSpec("localhost:3", strict=True, group=True)],
                     dns_server="127.0.0.1:53")
    got = asyncio.run(d.addresses(0.0))
    assert set(got) == {"127.0.0.1:1", "thanos:///127.0.0.1:1", "thanos:///dns+localhost:2", "thanos:///localhost:3"}
    assert got["127.0.0.1:1"].group is None
    assert got["thanos:///127.0.0.1:1"].group == qd.GroupDial("dns:///127.0.0.1:1", "", balanced=False)
    assert got["thanos:///localhost:3"].strict and got["thanos:///localhost:3"].members == ("localhost:3",)
    g = got["thanos:///dns+localhost:2"]  # dns+: the DNS server asked by grpcio too, balanced
    assert g.group == qd.GroupDial("dns://127.0.0.1:53/localhost:2", '{"loadBalancingPolicy": "pick_first"}', True)
    opts = dict(group_channel_options())
    assert opts["grpc.service_config"] == GROUP_SERVICE_CONFIG and opts["grpc.service_config_disable_resolution"] == 1
    assert json.loads(dict(group_channel_options(balanced=False))["grpc.service_config"])["loadBalancingPolicy"] == \
        "pick_first"


def test_skip_verify_pin_name_for_several_certificates():
    from pythanos.tlsconfig import _pin_name

    def names(dns=(), ip=(), cn=()):
        return {"dns": list(dns), "ip": list(ip), "cn": list(cn)}

    a, b = names(["a.svc", "grp.svc"]), names(["b.svc", "grp.svc"])
    assert _pin_name([a, b], "") == "grp.svc"
    assert _pin_name([a, b], "b.svc") == "grp.svc"  # not held by both
    assert _pin_name([a, names(["*.svc"])], "") == "a.svc"
    assert _pin_name([names(["*.svc"]), names(["*.svc"])], "") == "pinned.svc"
    assert _pin_name([a, names(["c.other"])], "") is None
    assert _pin_name(names(cn=["only-cn"]), "") == "only-cn"
    assert _pin_name([names(ip=["127.0.0.1"]), names(ip=["127.0.0.1"], dns=["x"])], "") == "127.0.0.1"
