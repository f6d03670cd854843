"""The receiver flags for TLS and tenancy, against real peers: ``--remote-write.server-tls-*`` (a real
Prometheus 3.9.1 remote-writing over mutual TLS), ``--receive.tenant-certificate-field``,
``--remote-write.client-tls-*`` (forwarding between hashring members over gRPC mutual TLS, ours and
a real ``thanos receive``), ``--receive.relabel-config`` and ``--receive.split-tenant-label-name``
(what a real ``thanos receive`` v0.42.4 with the same flags stores and answers).

Certificates are made here with the openssl CLI: a CA, a server certificate for 127.0.0.1 (also
used as the client certificate between receivers), client certificates with organization,
organizational unit and common name, one without an organization, and one from another CA.
"""
from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from peers import REGISTRY, Process, free_ports, http_get, start_thanos_query
from test_receive import poll, post, query, stored, v1
from test_tls_grpc import _ca
from test_tls_grpc import _leaf as tls_leaf

pytestmark = pytest.mark.timeout(900)

# --------------------------------------------------------------------------------- certificates

def _leaf(d: Path, name: str, ca: str, subject: str, eku: str, san: str = "") -> None:
    """A leaf certificate with this subject (openssl's ``/O=../OU=../CN=..``)."""
    tls_leaf(d, name, ca, eku, san, subject=subject)


@dataclass
class Certs:
    dir: Path

    def crt(self, name: str) -> str:
        return str(self.dir / f"{name}.crt")

    def key(self, name: str) -> str:
        return str(self.dir / f"{name}.key")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed to make the test certificates")
    d = tmp_path_factory.mktemp("certs")
    _ca(d, "ca")
    _leaf(d, "server", "ca", "/CN=receiver", "serverAuth,clientAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    # no 127.0.0.1 in it: dialled at 127.0.0.1, it verifies only under a server name it holds
    _leaf(d, "named", "ca", "/CN=peer", "serverAuth,clientAuth", "subjectAltName=DNS:peer.test,DNS:localhost\n")
    _leaf(d, "client-a", "ca", "/O=org-a/OU=unit-a/CN=cn-a", "clientAuth")
    _leaf(d, "client-noorg", "ca", "/CN=cn-only", "clientAuth")
    _ca(d, "other-ca")
    _leaf(d, "other-client", "other-ca", "/O=org-a/CN=intruder", "clientAuth")
    return Certs(d)


def rw_server_tls(c: Certs, client_ca: bool = True) -> list[str]:
    return [f"--remote-write.server-tls-cert={c.crt('server')}", f"--remote-write.server-tls-key={c.key('server')}",
            *([f"--remote-write.server-tls-client-ca={c.crt('ca')}"] if client_ca else [])]


def grpc_mtls(c: Certs, *, skip_verify: bool = False, server: str = "server") -> list[str]:
    """gRPC server mTLS (``server``'s certificate) and the forwarding client's TLS."""
    client = ["--remote-write.client-tls-skip-verify"] if skip_verify else [f"--remote-write.client-tls-ca={c.crt('ca')}"]
    return [f"--grpc-server-tls-cert={c.crt(server)}", f"--grpc-server-tls-key={c.key(server)}",
            f"--grpc-server-tls-client-ca={c.crt('ca')}", "--remote-write.client-tls-secure",
            f"--remote-write.client-tls-cert={c.crt('server')}", f"--remote-write.client-tls-key={c.key('server')}",
            *client]


# ------------------------------------------------------------------------------------ processes

def receiver(binary: str, work: Path, name: str, *extra: str, tls: bool = False, ports: list[int] | None = None,
             wait: bool = True, env: dict[str, str] | None = None) -> Process:
    """``pythanos receive`` or ``thanos receive`` (by ``binary``) on free ports; ``extra['rw']`` is
    the remote-write URL (https with ``tls``), ``extra['grpc']`` the gRPC address."""
    thanos = not binary.endswith("pythanos")
    ports = ports or free_ports(4)
    rw, grpc_port, http_port, capn = ports
    args = [binary, "receive", f'--label=member="{name}"', f"--tsdb.path={work / name}",
            f"--remote-write.address=127.0.0.1:{rw}", f"--grpc-address=127.0.0.1:{grpc_port}",
            f"--http-address=127.0.0.1:{http_port}", *extra]
    if thanos:
        args.append(f"--receive.capnproto-address=127.0.0.1:{capn}")
    p = REGISTRY.start(f"{'thanos' if thanos else 'pythanos'}-receive-{name}", args, work, env=env)
    p.url, p.port = f"http://127.0.0.1:{http_port}", http_port
    p.extra.update(rw=f"{'https' if tls else 'http'}://127.0.0.1:{rw}/api/v1/receive", rw_port=rw,
                   grpc=f"127.0.0.1:{grpc_port}")
    if wait:
        p.wait_http_ready("/-/ready", 120)
    return p


def client_context(c: Certs, cert: str | None = "client-a", *, ca: str = "ca",
                   version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=c.crt(ca))
    if cert:
        ctx.load_cert_chain(c.crt(cert), c.key(cert))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def post_tls(port: int, body: bytes, ctx: ssl.SSLContext, headers: dict | None = None) -> tuple[int, str]:
    """A snappy RW 1.0 POST over TLS; an ssl/connection error propagates."""
    import cramjam

    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    try:
        conn.request("POST", "/api/v1/receive", body=bytes(cramjam.snappy.compress_raw(body)),
                     headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                              "X-Prometheus-Remote-Write-Version": "0.1.0", **(headers or {})})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def refused(port: int, ctx: ssl.SSLContext) -> str:
    """Why a request over ``ctx`` fails at the TLS level ("" if it got an answer)."""
    try:
        post_tls(port, v1([([("__name__", "x")], [(1, 1.0)])]), ctx)
    except (ssl.SSLError, ConnectionError, OSError) as e:
        return type(e).__name__
    return ""


def peer_certificate(port: int, c: Certs) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with client_context(c, None).wrap_socket(s, server_hostname="127.0.0.1") as t:
            return t.getpeercert(binary_form=True)


def plain_http_answer(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /api/v1/receive HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return out
            out += chunk


def write_histograms(p: Process) -> dict:
    """``thanos_receive_write_timeseries`` / ``_samples`` sums and counts by (code, tenant) from /metrics."""
    import re

    out = {}
    text = http_get(p.url + "/metrics")[1].decode()
    for m in re.finditer(r'^thanos_receive_write_(timeseries|samples)_(sum|count)\{([^}]*)\} (\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3)))
        out[(labels["code"], labels["tenant"], m.group(2) if m.group(1) == "timeseries" else "samples_" + m.group(2))] = \
            float(m.group(4))
    return out


def label_sets(grpc_addr: str, drop=("member",), matchers=(("__name__", "=~", ".+"),)) -> set:
    return {tuple((k, v) for k, v in ls if k not in drop) for ls in stored(grpc_addr, matchers)}


# ---------------------------------------------------------------------------------------- tests

def test_prometheus_writes_over_mtls_and_the_tenant_comes_from_the_certificate(certs, prometheus_factory,
                                                                               prometheus3_bin, pythanos_bin,
                                                                               thanos_bin, tmp_path):
    """A real Prometheus remote-writes to ours and to a real thanos receive, both serving the
    remote-write port over TLS with a client CA and taking the tenant from the certificate's
    organization: both store the same series under tenant org-a, and both refuse and answer the
    same to clients without a trusted certificate, without an organization, over plain HTTP or
    TLS 1.2."""
    flags = [*rw_server_tls(certs), "--receive.tenant-certificate-field=organization"]
    ours = receiver(pythanos_bin, tmp_path, "ours", *flags, tls=True)
    th = receiver(thanos_bin, tmp_path, "thanos", *flags, tls=True)
    tls_cfg = (f"tls_config: {{ca_file: {certs.crt('ca')}, cert_file: {certs.crt('client-a')}, "
               f"key_file: {certs.key('client-a')}}}")
    no_cert = f"tls_config: {{ca_file: {certs.crt('ca')}}}"
    prom = prometheus_factory(binary=prometheus3_bin, name="prom-tls", config_yaml=f"""
global: {{scrape_interval: 1s}}
scrape_configs: [{{job_name: rcv, static_configs: [{{targets: ['{ours.url.removeprefix("http://")}']}}]}}]
remote_write:
  - url: {ours.extra['rw']}
    name: ours
    {tls_cfg}
    headers: {{THANOS-TENANT: ignored-header}}
    queue_config: {{batch_send_deadline: 500ms}}
  - url: {th.extra['rw']}
    name: thanos
    {tls_cfg}
    headers: {{THANOS-TENANT: ignored-header}}
    queue_config: {{batch_send_deadline: 500ms}}
  - url: {ours.extra['rw']}
    name: ours-no-cert
    {no_cert}
    queue_config: {{batch_send_deadline: 500ms, min_backoff: 100ms, max_backoff: 1s}}
  - url: {th.extra['rw']}
    name: thanos-no-cert
    {no_cert}
    queue_config: {{batch_send_deadline: 500ms, min_backoff: 100ms, max_backoff: 1s}}
""")
    up = (("__name__", "=", "up"),)
    for who in (ours, th):
        poll(lambda who=who: (bool(stored(who.extra["grpc"], up)), None), 90, f"up through {who.name}")

    def sent(name: str) -> tuple[float, float]:
        """(samples sent, samples retried) by one of Prometheus' remote-write queues."""
        import re

        text = http_get(prom.url + "/metrics")[1].decode()
        def total(metric: str) -> float:
            return sum(float(v) for v in re.findall(rf'^{metric}{{[^}}]*remote_name="{name}"[^}}]*}} (\S+)$', text,
                                                    re.M))
        return total("prometheus_remote_storage_samples_total"), total("prometheus_remote_storage_samples_retried_total")
    # the queues without a client certificate get nowhere: their sends fail and are retried, on both
    for name in ("ours-no-cert", "thanos-no-cert"):
        poll(lambda name=name: (sent(name)[1] > 0, sent(name)), 60, f"Prometheus retrying {name}")
    assert sent("ours")[1] == sent("thanos")[1] == 0
    assert label_sets(ours.extra["grpc"], matchers=up) == label_sets(th.extra["grpc"], matchers=up) == {
        (("__name__", "up"), ("instance", ours.url.removeprefix("http://")), ("job", "rcv"), ("tenant_id", "org-a"))}

    body = v1([([("__name__", "direct")], [(int(time.time() * 1000), 1.0)])])
    for who in (ours, th):
        port = who.extra["rw_port"]
        # no client certificate, one from another CA, TLS 1.2 under the 1.3 default: the handshake fails
        assert refused(port, client_context(certs, None)), who.name
        assert refused(port, client_context(certs, "other-client")), who.name
        assert refused(port, client_context(certs, version=ssl.TLSVersion.TLSv1_2)), who.name
        assert not refused(port, client_context(certs))
    # a trusted certificate without an organization: Thanos' 400 and text, from both
    answers = [post_tls(w.extra["rw_port"], body, client_context(certs, "client-noorg")) for w in (ours, th)]
    assert answers[0] == answers[1] == (400, "could not get organization field from client cert\n")
    assert [post_tls(w.extra["rw_port"], body, client_context(certs))[0] for w in (ours, th)] == [200, 200]
    # plain HTTP on the TLS port: Go's answer
    assert plain_http_answer(ours.extra["rw_port"]) == plain_http_answer(th.extra["rw_port"])
    assert b"Client sent an HTTP request to an HTTPS server." in plain_http_answer(ours.extra["rw_port"])


@pytest.mark.parametrize("field,tenant", [("organizationalUnit", "unit-a"), ("commonName", "cn-a")])
def test_tenant_from_certificate_fields(certs, pythanos_bin, thanos_bin, tmp_path, field, tenant):
    """The other certificate fields, and a listener without a client CA: no certificate is asked
    for, so there is none to take a tenant from (400; Thanos panics in the handler and drops the
    connection, which is not imitated)."""
    flags = [*rw_server_tls(certs), f"--receive.tenant-certificate-field={field}"]
    ours = receiver(pythanos_bin, tmp_path, "ours", *flags, tls=True)
    th = receiver(thanos_bin, tmp_path, "thanos", *flags, tls=True)
    now = int(time.time() * 1000)
    body = v1([([("__name__", "by_cert")], [(now, 1.0)])])
    for who in (ours, th):
        assert post_tls(who.extra["rw_port"], body, client_context(certs)) == (200, "")
    m = (("__name__", "=", "by_cert"),)
    assert label_sets(ours.extra["grpc"], matchers=m) == label_sets(th.extra["grpc"], matchers=m) == {
        (("__name__", "by_cert"), ("tenant_id", tenant))}
    ours.stop()
    plain = receiver(pythanos_bin, tmp_path, "no-ca", *rw_server_tls(certs, client_ca=False),
                     f"--receive.tenant-certificate-field={field}", tls=True)
    assert post_tls(plain.extra["rw_port"], body, client_context(certs, None)) == (
        400, "could not get required certificate field from client cert\n")


def test_remote_write_certificate_is_reloaded(certs, pythanos_bin, tmp_path):
    """New connections get a rotated certificate without a restart; a broken file keeps the one in use."""
    d = tmp_path / "rot"
    d.mkdir()
    for f in ("ca.crt", "ca.key", "server.ext"):
        shutil.copy(certs.dir / f, d / f)
    _leaf(d, "server", "ca", "/CN=first", "serverAuth", "subjectAltName=IP:127.0.0.1\n")
    c = Certs(d)
    ours = receiver(pythanos_bin, tmp_path, "ours", *rw_server_tls(c, client_ca=False), tls=True)
    port = ours.extra["rw_port"]
    first = peer_certificate(port, c)
    _leaf(d, "server", "ca", "/CN=second", "serverAuth", "subjectAltName=IP:127.0.0.1\n")
    second = poll(lambda: ((x := peer_certificate(port, c)) != first, x), 30, "the rotated certificate")
    assert ssl.DER_cert_to_PEM_cert(second).strip() == (d / "server.crt").read_text().strip()
    (d / "server.crt").write_text("not a certificate\n")
    assert peer_certificate(port, c) == second
    assert post_tls(port, v1([([("__name__", "x")], [(int(time.time() * 1000), 1.0)])]),
                    client_context(c, None))[0] == 200


RELABEL = r"""
- source_labels: [__name__]
  regex: go_gc_.*|python_gc_.*
  action: drop
- source_labels: [__name__]
  regex: up|process_.*|python_.*|go_.*|thanos_receive_.*|wipe_me|kept_.*
  action: keep
- source_labels: [__name__]
  regex: up|process_.*
  target_label: env
  replacement: prod
- source_labels: [job]
  regex: (.+)
  target_label: origin
  replacement: from-$1
- action: labeldrop
  regex: instance|zz
- source_labels: [__name__]
  regex: wipe_me
  target_label: __name__
  replacement: ""
"""


def test_relabel_config_stores_what_thanos_stores(prometheus_factory, prometheus3_bin, pythanos_bin, thanos_bin,
                                                  tmp_path):
    """The same relabel config (drop, keep, replace, labeldrop) on ours and on a real thanos receive,
    a real Prometheus remote-writing the same stream to both: the same series are stored, real
    queriers over each answer the same; a series relabelled to nothing and a request dropped
    entirely get Thanos' answers."""
    cfg = tmp_path / "relabel.yaml"
    cfg.write_text(RELABEL)
    ours = receiver(pythanos_bin, tmp_path, "ours", f"--receive.relabel-config-file={cfg}")
    th = receiver(thanos_bin, tmp_path, "thanos", f"--receive.relabel-config={RELABEL}")
    prometheus_factory(binary=prometheus3_bin, name="prom-relabel", config_yaml=f"""
global: {{scrape_interval: 1s}}
scrape_configs: [{{job_name: rcv, static_configs: [{{targets: ['{ours.url.removeprefix("http://")}']}}]}}]
remote_write:
  - url: {ours.extra['rw']}
    queue_config: {{batch_send_deadline: 500ms}}
  - url: {th.extra['rw']}
    queue_config: {{batch_send_deadline: 500ms}}
""")
    poll(lambda: (len(label_sets(ours.extra["grpc"])) > 20 and label_sets(ours.extra["grpc"])
                  == label_sets(th.extra["grpc"]), (len(label_sets(ours.extra["grpc"])),
                                                    len(label_sets(th.extra["grpc"])))),
         90, "the same series stored by both")
    got = label_sets(ours.extra["grpc"])
    names = {dict(ls)["__name__"] for ls in got}
    assert "up" in names and not any(n.startswith(("go_gc_", "python_gc_", "http_")) for n in names), names
    assert all(dict(ls).get("origin") == "from-rcv" and "instance" not in dict(ls) for ls in got)
    assert dict(next(ls for ls in got if dict(ls)["__name__"] == "up"))["env"] == "prod"
    tq = [start_thanos_query(thanos_bin, [w.extra["grpc"]], tmp_path / f"tq-{w.name}") for w in (ours, th)]
    expr = 'group by (__name__, env, origin, job, tenant_id) ({__name__=~"up|process_.*"})'

    def same_answers():
        t = time.time()
        answers = [sorted(json.dumps(r["metric"], sort_keys=True) for r in query(q.url, expr, t)) for q in tq]
        return bool(answers[0]) and answers[0] == answers[1], answers
    answers = poll(same_answers, 60, "the same answer from queriers over each receiver")
    assert '"env": "prod"' in answers[0][0], answers

    now = int(time.time() * 1000)
    wipe = v1([([("__name__", "wipe_me"), ("zz", "1")], [(now, 1.0)]), ([("__name__", "kept_a")], [(now, 2.0)])])
    answers = [post(w.extra["rw"], wipe) for w in (ours, th)]
    assert answers[0][0] == answers[1][0] == 409, answers
    assert "add 1 series: label set contains a label with empty name or value" in answers[0][1]
    assert "add 1 series: label set contains a label with empty name or value" in answers[1][1]
    all_dropped = v1([([("__name__", "go_gc_x")], [(now, 1.0)]), ([("__name__", "dropped_by_keep")], [(now, 1.0)])])
    assert [post(w.extra["rw"], all_dropped)[:2] for w in (ours, th)] == [(200, ""), (200, "")]
    m = (("__name__", "=~", "kept_a|go_gc_x|dropped_by_keep"),)
    assert label_sets(ours.extra["grpc"], matchers=m) == label_sets(th.extra["grpc"], matchers=m) == {
        (("__name__", "kept_a"), ("tenant_id", "default-tenant"))}


def test_split_tenant_label_like_thanos(pythanos_bin, thanos_bin, tmp_path):
    """One request, three tenants: series with the label go to the tenant it names (without the
    label), the rest to the header's tenant; a tenant that is not a valid name fails the request."""
    flags = ["--receive.split-tenant-label-name=team"]
    ours = receiver(pythanos_bin, tmp_path, "ours", *flags)
    th = receiver(thanos_bin, tmp_path, "thanos", *flags)
    now = int(time.time() * 1000)
    body = v1([([("__name__", "s"), ("i", "1"), ("team", "t1")], [(now, 1.0)]),
               ([("__name__", "s"), ("i", "2"), ("team", "t2")], [(now, 2.0)]),
               ([("__name__", "s"), ("i", "3")], [(now, 3.0)]),
               ([("__name__", "s"), ("i", "4"), ("team", "t1")], [(now, 4.0), (now + 1000, 5.0)])])
    for who in (ours, th):
        assert post(who.extra["rw"], body, tenant="hdr")[:2] == (200, "")
    m = (("__name__", "=", "s"),)
    want = {(("__name__", "s"), ("i", "1"), ("tenant_id", "t1")), (("__name__", "s"), ("i", "2"), ("tenant_id", "t2")),
            (("__name__", "s"), ("i", "3"), ("tenant_id", "hdr")), (("__name__", "s"), ("i", "4"), ("tenant_id", "t1"))}
    assert label_sets(ours.extra["grpc"], matchers=m) == label_sets(th.extra["grpc"], matchers=m) == want
    ours_samples = {tuple(x for x in k if x[0] != "member"): v for k, v in stored(ours.extra["grpc"], m).items()}
    th_samples = {tuple(x for x in k if x[0] != "member"): v for k, v in stored(th.extra["grpc"], m).items()}
    assert ours_samples == th_samples
    bad = v1([([("__name__", "s"), ("i", "5"), ("team", "a/b")], [(now, 1.0)])])
    answers = [post(w.extra["rw"], bad, tenant="hdr")[:2] for w in (ours, th)]
    assert answers[0] == answers[1] == (400, "tenant name not valid: validation error\n")
    # the write histograms per tenant the series went to, nothing for the refused request
    got = [write_histograms(w) for w in (ours, th)]
    assert got[0] == got[1] and got[0][("200", "t1", "sum")] == 2, got


def test_forwarding_over_grpc_mtls_between_our_receivers(certs, pythanos_bin, thanos_bin, tmp_path):
    """Two of our receivers in one hashring, gRPC servers requiring client certificates: each
    forwards the other's share over TLS with its client certificate, one verifying against the CA
    under ``--remote-write.client-server-name`` (the other's certificate does not hold the address
    dialled), the other with skip-verify. RF 1: a write answers 200 only once the other member
    stored its share."""
    pa, pb = free_ports(4), free_ports(4)
    ring = tmp_path / "hashrings.json"
    a_grpc, b_grpc = f"127.0.0.1:{pa[1]}", f"127.0.0.1:{pb[1]}"
    ring.write_text(json.dumps([{"hashring": "default", "endpoints": [a_grpc, b_grpc]}]))
    a = receiver(pythanos_bin, tmp_path, "a", f"--receive.hashrings-file={ring}", *grpc_mtls(certs),
                 "--remote-write.client-server-name=peer.test", f"--receive.local-endpoint={a_grpc}", ports=pa,
                 wait=False)
    b = receiver(pythanos_bin, tmp_path, "b", f"--receive.hashrings-file={ring}",
                 *grpc_mtls(certs, skip_verify=True, server="named"), f"--receive.local-endpoint={b_grpc}", ports=pb)
    a.wait_http_ready("/-/ready", 120)
    _write_through_each(certs, thanos_bin, [a, b], "fwd", tmp_path)


def test_forwarding_over_grpc_mtls_with_a_real_thanos_receive(certs, pythanos_bin, thanos_bin, tmp_path):
    """Ours and a real thanos receive in one hashring, both gRPC servers requiring client
    certificates and both forwarding over TLS: writes through either are stored, each member's
    share on it. (The Thanos member forwards with its default snappy compression, over TLS.)"""
    po, pt = free_ports(4), free_ports(4)
    o_grpc, t_grpc = f"127.0.0.1:{po[1]}", f"127.0.0.1:{pt[1]}"
    ring = tmp_path / "hashrings.json"
    ring.write_text(json.dumps([{"hashring": "default", "endpoints": [o_grpc, t_grpc]}]))
    common = [f"--receive.hashrings-file={ring}", *grpc_mtls(certs)]
    ours = receiver(pythanos_bin, tmp_path, "ours", *common, f"--receive.local-endpoint={o_grpc}", ports=po,
                    wait=False)
    th = receiver(thanos_bin, tmp_path, "thanos", *common, f"--receive.local-endpoint={t_grpc}",
                  ports=pt)
    ours.wait_http_ready("/-/ready", 120)
    _write_through_each(certs, thanos_bin, [ours, th], "mixed_tls", tmp_path)


def _write_through_each(certs: Certs, thanos_bin: str, members: list[Process], name: str, work: Path) -> None:
    """50 series written through each member in turn (a sample each): every write answers 200
    (RF 1: only once the remote share is stored), and a real thanos query reading both over gRPC
    mutual TLS finds every series with every sample, and series on each member."""
    tls = ["--grpc-client-tls-secure", f"--grpc-client-tls-ca={certs.crt('ca')}", "--grpc-client-server-name=localhost",
           f"--grpc-client-tls-cert={certs.crt('server')}", f"--grpc-client-tls-key={certs.key('server')}"]
    now = int(time.time() * 1000)
    for k, who in enumerate(members):
        body = v1([([("__name__", name), ("i", str(i))], [(now + k * 1000, float(i))]) for i in range(50)])
        poll(lambda who=who, body=body: ((r := post(who.extra["rw"], body))[0] == 200, r[:2]), 60,
             f"a write through {who.name}")
    tq = start_thanos_query(thanos_bin, [m.extra["grpc"] for m in members], work / f"tq-{name}", extra=tls)
    try:
        expr = f"count(count_over_time({name}[10m]) == {len(members)})"
        poll(lambda: ((r := query(tq.url, expr, time.time())) != [] and r[0]["value"][1] == "50", r), 60,
             f"50 series of {name} with {len(members)} samples")
        per_member = query(tq.url, f"count by (member) ({name})", time.time())
        assert sorted(r["metric"]["member"] for r in per_member) == sorted(m.name.rsplit("-", 1)[1]
                                                                         for m in members), per_member
    finally:
        tq.stop()


def test_relabel_and_split_tenant_in_a_hashring_with_a_real_thanos_receive(pythanos_bin, thanos_bin, tmp_path):
    """Ours and a real thanos receive in one hashring (RF 1), both relabelling and splitting by
    tenant label: whichever member a write enters by, every series is stored once, relabelled,
    under the tenant its label names, on the member both agree owns it (a forwarded series carries
    its new labels and tenant; a member disagreeing would forward it on). The Thanos member
    forwards with its default snappy compression."""
    po, pt = free_ports(4), free_ports(4)
    o_grpc, t_grpc = f"127.0.0.1:{po[1]}", f"127.0.0.1:{pt[1]}"
    ring = tmp_path / "hashrings.json"
    ring.write_text(json.dumps([{"hashring": "default", "endpoints": [o_grpc, t_grpc]}]))
    # $(VAR) taken from the environment, as Thanos does for this flag
    relabel = "[{target_label: env, replacement: $(RELABEL_ENV)}, {action: labeldrop, regex: drop_me}]"
    env = {"RELABEL_ENV": "prod"}
    common = [f"--receive.hashrings-file={ring}", "--receive.split-tenant-label-name=team",
              f"--receive.relabel-config={relabel}"]
    ours = receiver(pythanos_bin, tmp_path, "ours", *common, f"--receive.local-endpoint={o_grpc}", ports=po,
                    wait=False, env=env)
    th = receiver(thanos_bin, tmp_path, "thanos", *common, f"--receive.local-endpoint={t_grpc}",
                  ports=pt, env=env)
    ours.wait_http_ready("/-/ready", 120)
    now = int(time.time() * 1000)
    want: dict[str, int] = {}
    for who in (ours, th):
        series = []
        for i in range(60):
            team = ("t0", "t1", "")[i % 3]
            labels = [("__name__", f"mix_{who.name.rsplit('-', 1)[1]}"), ("drop_me", "x"), ("i", str(i))]
            series.append((labels + ([("team", team)] if team else []), [(now, float(i))]))
            want[team or "hdr"] = want.get(team or "hdr", 0) + 1
        poll(lambda who=who, body=v1(series): ((r := post(who.extra["rw"], body, tenant="hdr"))[0] == 200, r[:2]),
             60, f"a write through {who.name}")
    tq = start_thanos_query(thanos_bin, [o_grpc, t_grpc], tmp_path / "tq")
    try:
        def counts():
            r = query(tq.url, 'count by (tenant_id) ({__name__=~"mix_.*", env="prod", drop_me="", team=""})',
                      time.time())
            return {x["metric"]["tenant_id"]: int(x["value"][1]) for x in r} == want, r
        poll(counts, 60, f"every series once, relabelled, per tenant {want}")
        assert query(tq.url, 'count({__name__=~"mix_.*"})', time.time())[0]["value"][1] == "120"
        members = query(tq.url, 'count by (member) ({__name__=~"mix_.*"})', time.time())
        assert sorted(x["metric"]["member"] for x in members) == ["ours", "thanos"], members
    finally:
        tq.stop()


def test_tls12_and_cipher_suites_like_thanos(certs, pythanos_bin, thanos_bin, tmp_path):
    """``--remote-write.server-tls-min-version=1.2`` with one cipher suite: ours and a real thanos
    receive accept and refuse the same handshakes."""
    flags = [*rw_server_tls(certs, client_ca=False), "--remote-write.server-tls-min-version=1.2",
             "--remote-write.server-tls-ciphers=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]
    members = [receiver(pythanos_bin, tmp_path, "ours", *flags, tls=True),
               receiver(thanos_bin, tmp_path, "thanos", *flags, tls=True)]

    def ctx(version: ssl.TLSVersion, cipher: str = "") -> ssl.SSLContext:
        c = client_context(certs, None, version=version)
        if cipher:
            c.set_ciphers(cipher)
        return c
    cases = {"tls1.3": ctx(ssl.TLSVersion.TLSv1_3), "tls1.2 listed": ctx(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256"),
             "tls1.2 other": ctx(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-GCM-SHA384"),
             "tls1.1": ctx(ssl.TLSVersion.TLSv1_1)}
    got = {name: [bool(refused(m.extra["rw_port"], c)) for m in members] for name, c in cases.items()}
    assert got == {"tls1.3": [False, False], "tls1.2 listed": [False, False], "tls1.2 other": [True, True],
                   "tls1.1": [True, True]}
