"""gRPC transport security (issue 13 §1): Thanos' ``--grpc-server-tls-*`` / ``--grpc-client-tls-*``
flags and the endpoint SD config's ``tls_config``, against real binaries.

Certificates are made here with the openssl CLI: a CA, a server certificate for 127.0.0.1 and
localhost, a client certificate, and a second, unrelated CA with its own server and client
certificates. Peers: a real Prometheus, a real ``thanos sidecar`` and ``thanos query`` (v0.42),
our sidecar, store and querier as processes.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from peers import REGISTRY, free_ports, http_get, start_thanos_query

READY = 90.0

# --------------------------------------------------------------------------------- certificates

CA_CNF = """[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = {cn}
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
LEAF_EXT = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={eku}\n{san}"
SERVER_SAN = "subjectAltName=IP:127.0.0.1,DNS:localhost\n"


@dataclass
class Certs:
    dir: Path

    def __getattr__(self, name: str) -> str:  # certs.ca_crt -> <dir>/ca.crt
        if name.startswith("_"):
            raise AttributeError(name)
        stem, _, ext = name.rpartition("_")
        return str(self.dir / f"{stem.replace('_', '-')}.{ext}")


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _ca(d: Path, name: str) -> None:
    (d / f"{name}.cnf").write_text(CA_CNF.format(cn=name))
    _openssl("req", "-x509", "-config", f"{name}.cnf", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3", cwd=d)


def _leaf(d: Path, name: str, ca: str, eku: str, san: str = "", subject: str = "") -> None:
    (d / f"{name}.ext").write_text(LEAF_EXT.format(eku=eku, san=san))
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", subject or f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "3", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed to make the test certificates")
    d = tmp_path_factory.mktemp("certs")
    _ca(d, "ca")
    _leaf(d, "server", "ca", "serverAuth", SERVER_SAN)
    _leaf(d, "client", "ca", "clientAuth")
    _ca(d, "other-ca")  # unrelated to the first
    _leaf(d, "other-server", "other-ca", "serverAuth", SERVER_SAN)
    _leaf(d, "other-client", "other-ca", "clientAuth")
    return Certs(d)


def server_flags(c: Certs, *extra: str) -> list[str]:
    return [f"--grpc-server-tls-cert={c.server_crt}", f"--grpc-server-tls-key={c.server_key}",
            f"--grpc-server-tls-client-ca={c.ca_crt}", *extra]


def client_flags(c: Certs, ca: str | None = None) -> list[str]:
    return ["--grpc-client-tls-secure", f"--grpc-client-tls-ca={ca or c.ca_crt}",
            f"--grpc-client-tls-cert={c.client_crt}", f"--grpc-client-tls-key={c.client_key}"]


# ------------------------------------------------------------------------------------ processes

def start(name: str, args: list[str], base: Path, http_port: int, session: bool = True):
    p = REGISTRY.start(name, args, base / name, session=session)
    p.url = f"http://127.0.0.1:{http_port}"
    return p


def our_store(pythanos_bin: str, base: Path, name: str, *extra: str, ready: bool = True,
              ports: tuple[int, int] | None = None):
    g, h = ports or free_ports(2)
    (base / f"{name}-bucket").mkdir(parents=True, exist_ok=True)
    p = start(name, [pythanos_bin, "store", f"--data-dir={base / name / 'data'}",
                     f"--objstore.config={{type: FILESYSTEM, config: {{directory: {base / f'{name}-bucket'}}}}}",
                     f"--grpc-address=127.0.0.1:{g}", f"--http-address=127.0.0.1:{h}",
                     "--grpc-grace-period=1s", "--http-grace-period=1s", *extra], base, h, session=False)
    p.extra["grpc"] = f"127.0.0.1:{g}"
    if ready:
        p.wait_http_ready("/-/ready", READY)
    return p


def our_query(pythanos_bin: str, base: Path, name: str, *extra: str, workers: int = 1):
    h, g = free_ports(2)
    p = start(name, [pythanos_bin, "query", f"--http-address=127.0.0.1:{h}", f"--grpc-address=127.0.0.1:{g}",
                     f"--query.workers={workers}", "--grpc-grace-period=1s", "--http-grace-period=1s", *extra],
              base, h, session=False)
    p.extra["grpc"] = f"127.0.0.1:{g}"
    p.wait_http_ready("/-/ready", READY)
    return p


@dataclass
class Peers:
    prom: object
    ours: object  # our sidecar, mTLS
    thanos: object  # Thanos' sidecar, mTLS


@pytest.fixture(scope="module")
def peers(tmp_path_factory, certs, prometheus_bin, thanos_bin, pythanos_bin):
    """One Prometheus scraping itself, behind our sidecar and a Thanos sidecar, both serving mTLS."""
    base = tmp_path_factory.mktemp("tls")
    procs = []
    try:
        (pp,) = free_ports(1)
        (base / "prom").mkdir()
        cfg = base / "prom" / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: tls\n"
                       f"scrape_configs:\n  - job_name: prometheus\n    static_configs:\n"
                       f"      - targets: ['127.0.0.1:{pp}']\n")
        prom = start("prometheus", [prometheus_bin, f"--config.file={cfg}",
                                    f"--storage.tsdb.path={base / 'prom' / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{pp}"], base, pp)
        procs.append(prom)
        prom.wait_http_ready("/-/ready", READY)
        g, h = free_ports(2)
        ours = start("sidecar", [pythanos_bin, "sidecar", f"--prometheus.url={prom.url}",
                                 f"--tsdb.path={base / 'prom' / 'data'}", f"--grpc-address=127.0.0.1:{g}",
                                 f"--http-address=127.0.0.1:{h}", "--grpc-grace-period=1s", "--http-grace-period=1s",
                                 *server_flags(certs)], base, h)
        ours.extra["grpc"] = f"127.0.0.1:{g}"
        procs.append(ours)
        g, h = free_ports(2)
        thanos = start("thanos-sidecar", [thanos_bin, "sidecar", f"--prometheus.url={prom.url}",
                                          f"--tsdb.path={base / 'prom' / 'data'}", f"--grpc-address=127.0.0.1:{g}",
                                          f"--http-address=127.0.0.1:{h}", *server_flags(certs)], base, h)
        thanos.extra["grpc"] = f"127.0.0.1:{g}"
        procs.append(thanos)
        for p in (ours, thanos):
            p.wait_http_ready("/-/ready", READY)

        def scraped() -> bool:
            code, body = http_get(prom.url + "/api/v1/query?query=up")
            return code == 200 and bool(json.loads(body)["data"]["result"])
        prom.wait_ready(scraped, READY, what="one scrape")
        yield Peers(prom, ours, thanos)
    finally:
        for p in reversed(procs):
            p.stop()


def query(q, expr: str) -> list:
    code, body = http_get(q.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=30)
    doc = json.loads(body)
    assert code == 200 and doc["status"] == "success", (code, doc)
    return doc["data"]["result"]


def healthy_stores(q) -> set:
    code, body = http_get(q.url + "/api/v1/stores")
    if code != 200:
        return set()
    return {s["name"] for g in json.loads(body)["data"].values() for s in g if not s["lastError"]}


def wait_answer(q, expr: str = 'up{cluster="tls"}') -> list:
    got: list = []

    def answered() -> bool:
        got[:] = query(q, expr)
        return bool(got)
    q.wait_ready(answered, READY, what=f"an answer to {expr}")
    return got


def wait_log(p, *needles: str, timeout: float = READY) -> str:
    """The first log line holding every needle."""
    found: list = []

    def seen() -> bool:
        found[:] = [ln for ln in p.log(2000).splitlines() if all(n in ln for n in needles)]
        return bool(found)
    p.wait_ready(seen, timeout, what=f"a log line with {needles}")
    return found[0]


# --------------------------------------------------------------------------------- in-process

def info_error(address: str, **tls) -> str | None:
    """None when an Info call with these client TLS settings succeeds, else the error. This
    process loaded grpc without a TLS policy, so its floor is grpcio's own (1.2)."""
    from pythanos.storeapi import StoreAPIError, StoreClient
    from pythanos.tlsconfig import ClientTLS

    async def go() -> None:
        async with StoreClient(address, tls=ClientTLS(enabled=True, min_version="1.2", **tls), info_timeout=5) as c:
            await c.info()
    try:
        asyncio.run(go())
        return None
    except StoreAPIError as e:
        return str(e)


def handshake(address: str, certs: Certs, version: ssl.TLSVersion, ciphers: str | None = None) -> str:
    """The TLS version a Python (OpenSSL) client limited to ``version`` negotiates, or the error."""
    host, port = address.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs.ca_crt)
    ctx.load_cert_chain(certs.client_crt, certs.client_key)
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_alpn_protocols(["h2"])
    if ciphers:
        ctx.set_ciphers(ciphers)
    try:
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.version()
    except (ssl.SSLError, OSError) as e:
        return f"refused: {e}"


# ------------------------------------------------------------------------------------- the tests

def test_our_querier_over_thanos_sidecar_mtls(peers, certs, pythanos_bin, tmp_path):
    """(a) Our querier dials a real Thanos sidecar serving mTLS: client certificate, CA, and the
    server name checked against the certificate's DNS name."""
    q = our_query(pythanos_bin, tmp_path, "query-over-thanos", f"--endpoint={peers.thanos.extra['grpc']}",
                  *client_flags(certs), "--grpc-client-server-name=localhost")
    try:
        got = wait_answer(q)
        assert {r["metric"]["cluster"] for r in got} == {"tls"}
        assert healthy_stores(q) == {peers.thanos.extra["grpc"]}
    finally:
        q.stop()


def test_thanos_querier_over_our_sidecar_mtls(peers, certs, thanos_bin, tmp_path):
    """(b) A real Thanos querier (Go TLS, its default minimum 1.3) dials our sidecar serving mTLS."""
    tq = start_thanos_query(thanos_bin, [peers.ours.extra["grpc"]], tmp_path, client_flags(certs),
                            ready_timeout=READY)
    try:
        got = wait_answer(tq)
        assert {r["metric"]["cluster"] for r in got} == {"tls"}
    finally:
        tq.stop()


def test_thanos_querier_without_certificate_gets_nothing_from_our_sidecar(peers, certs, thanos_bin, tmp_path):
    """(c) with a real client: Thanos' querier without a client certificate never sees our sidecar
    (Go reads EOF where it expects the server's HTTP/2 preface: under TLS 1.3 the server judges the
    client's certificate after the client has finished its handshake)."""
    h, g = free_ports(2)
    tq = start("thanos-query-nocert", [thanos_bin, "query", f"--http-address=127.0.0.1:{h}",
                                       f"--grpc-address=127.0.0.1:{g}", f"--endpoint={peers.ours.extra['grpc']}",
                                       "--grpc-client-tls-secure", f"--grpc-client-tls-ca={certs.ca_crt}"],
               tmp_path, h, session=False)
    try:
        wait_log(tq, "update of endpoint failed", peers.ours.extra["grpc"])
        assert healthy_stores(tq) == set()
    finally:
        tq.stop()


def test_mtls_refuses_clients_without_a_trusted_certificate(peers, certs):
    """(c) Our mTLS server: no client certificate, or one from an unrelated CA, is refused; ours is
    served. The same for a server certificate the client does not trust."""
    addr = peers.ours.extra["grpc"]
    assert info_error(addr, ca_file=certs.ca_crt, cert_file=certs.client_crt, key_file=certs.client_key) is None
    no_cert = info_error(addr, ca_file=certs.ca_crt)
    assert no_cert is not None and addr in no_cert and "UNAVAILABLE" in no_cert, no_cert
    other = info_error(addr, ca_file=certs.ca_crt, cert_file=certs.other_client_crt, key_file=certs.other_client_key)
    assert other is not None and addr in other, other
    wrong_ca = info_error(addr, ca_file=certs.other_ca_crt, cert_file=certs.client_crt, key_file=certs.client_key)
    assert wrong_ca is not None and "not trusted by the configured CA" in wrong_ca, wrong_ca
    # a plaintext client: the server speaks TLS only
    from pythanos.storeapi import StoreAPIError, StoreClient

    async def plain() -> None:
        async with StoreClient(addr, info_timeout=5) as c:
            await c.info()
    with pytest.raises(StoreAPIError, match="UNAVAILABLE"):
        asyncio.run(plain())


def test_querier_error_names_the_untrusted_endpoint(peers, certs, pythanos_bin, tmp_path):
    """(d) Our querier trusting the wrong CA: the endpoint stays out and the log says which one and why."""
    addr = peers.ours.extra["grpc"]
    q = our_query(pythanos_bin, tmp_path, "query-wrong-ca", f"--endpoint={addr}",
                  *client_flags(certs, ca=certs.other_ca_crt))
    try:
        line = wait_log(q, "update of endpoint failed", f"address={addr}")
        assert "not trusted by the configured CA" in line and "CERTIFICATE_VERIFY_FAILED" in line, line
        assert healthy_stores(q) == set() and query(q, "up") == []
    finally:
        q.stop()


def test_tls_minimum_version_is_enforced(certs, pythanos_bin, tmp_path):
    """Thanos' default minimum, 1.3, holds: a TLS 1.2 client fails the handshake. With 1.2 it is
    served, and --grpc-server-tls-ciphers then chooses the TLS 1.2 suites."""
    default = our_store(pythanos_bin, tmp_path, "store-default", *server_flags(certs))
    low = our_store(pythanos_bin, tmp_path, "store-tls12", *server_flags(
        certs, "--grpc-server-tls-min-version=1.2", "--grpc-server-tls-ciphers=TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"))
    try:
        assert handshake(default.extra["grpc"], certs, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
        assert handshake(default.extra["grpc"], certs, ssl.TLSVersion.TLSv1_2).startswith("refused")
        assert handshake(low.extra["grpc"], certs, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
        assert handshake(low.extra["grpc"], certs, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA") == "TLSv1.2"
        assert handshake(low.extra["grpc"], certs, ssl.TLSVersion.TLSv1_2,
                         "ECDHE-ECDSA-AES128-GCM-SHA256").startswith("refused")
    finally:
        default.stop()
        low.stop()


def test_server_certificate_is_reloaded(certs, pythanos_bin, tmp_path):
    """Certificate and key are re-read when they change: new connections get the new one; a
    broken replacement is logged and the last good one kept."""
    d = tmp_path / "live"
    d.mkdir()
    for src, dst in ((certs.server_crt, "tls.crt"), (certs.server_key, "tls.key")):
        shutil.copy(src, d / dst)
    store = our_store(pythanos_bin, tmp_path, "store-reload", f"--grpc-server-tls-cert={d / 'tls.crt'}",
                      f"--grpc-server-tls-key={d / 'tls.key'}")
    addr = store.extra["grpc"]
    try:
        assert info_error(addr, ca_file=certs.ca_crt) is None
        assert info_error(addr, ca_file=certs.other_ca_crt) is not None
        # replace both files (new ones, renamed into place, as a secret volume update does)
        for src, dst in ((certs.other_server_crt, "tls.crt"), (certs.other_server_key, "tls.key")):
            shutil.copy(src, d / f"{dst}.new")
            (d / f"{dst}.new").rename(d / dst)
        store.wait_ready(lambda: info_error(addr, ca_file=certs.other_ca_crt) is None, READY,
                         what="the new certificate presented")
        assert info_error(addr, ca_file=certs.ca_crt) is not None
        (d / "tls.key").write_text("not a key\n")
        assert info_error(addr, ca_file=certs.other_ca_crt) is None  # the handshake that saw the bad file
        wait_log(store, "cannot reload the gRPC server certificate", "tls.key", "no PEM private key in the file")
        assert info_error(addr, ca_file=certs.other_ca_crt) is None
    finally:
        store.stop()


def test_querier_workers_serve_tls(certs, pythanos_bin, tmp_path):
    """The server base applies TLS in every worker process of the querier: fresh connections,
    whichever worker takes them, are all served over mTLS, and a plaintext one by none."""
    q = our_query(pythanos_bin, tmp_path, "query-workers", *server_flags(certs), workers=2)
    try:
        for _ in range(8):
            assert info_error(q.extra["grpc"], ca_file=certs.ca_crt, cert_file=certs.client_crt,
                              key_file=certs.client_key) is None
        assert info_error(q.extra["grpc"], ca_file=certs.ca_crt) is not None
        q.wait_ready(lambda: q.log().count("enabling server side TLS") == 2, READY, what="both workers serving TLS")
    finally:
        q.stop()


def test_endpoint_sd_config_tls_and_skip_verify(peers, certs, pythanos_bin, tmp_path):
    """The endpoint SD config's default_client_config (mTLS) dials our sidecar; a second endpoint,
    Thanos' sidecar, takes insecure_skip_verify over the default (its client certificate with it):
    its certificate is fetched and pinned. A third, our store with a certificate of another CA,
    is refused under the default (its CA is not trusted) until a reload gives it skip-verify."""
    store = our_store(pythanos_bin, tmp_path, "store-other-ca", f"--grpc-server-tls-cert={certs.other_server_crt}",
                      f"--grpc-server-tls-key={certs.other_server_key}")
    cfg = tmp_path / "endpoints.yml"
    cfg.write_text(
        "default_client_config:\n"
        f"  tls_config: {{ca_file: {certs.ca_crt}, cert_file: {certs.client_crt}, key_file: {certs.client_key}}}\n"
        "endpoints:\n"
        f"  - address: {peers.ours.extra['grpc']}\n"
        f"  - address: {peers.thanos.extra['grpc']}\n"
        "    client_config: {tls_config: {insecure_skip_verify: true}}\n"
        f"  - address: {store.extra['grpc']}\n")
    q = our_query(pythanos_bin, tmp_path, "query-sd", f"--endpoint.sd-config-file={cfg}")
    try:
        want = {peers.ours.extra["grpc"], peers.thanos.extra["grpc"]}
        q.wait_ready(lambda: healthy_stores(q) == want, READY, what=f"healthy {sorted(want)}")
        wait_log(q, "update of endpoint failed", f"address={store.extra['grpc']}", "CERTIFICATE_VERIFY_FAILED")
        assert wait_answer(q)
        # reloaded: the store gets skip-verify (now dialled), the Thanos sidecar is gone
        cfg.write_text(
            "default_client_config:\n"
            f"  tls_config: {{ca_file: {certs.ca_crt}, cert_file: {certs.client_crt}, key_file: {certs.client_key}}}\n"
            "endpoints:\n"
            f"  - address: {peers.ours.extra['grpc']}\n"
            f"  - address: {store.extra['grpc']}\n"
            "    client_config: {tls_config: {insecure_skip_verify: true}}\n")
        want = {peers.ours.extra["grpc"], store.extra["grpc"]}
        q.wait_ready(lambda: healthy_stores(q) == want, READY, what=f"healthy {sorted(want)} after the reload")
    finally:
        q.stop()
        store.stop()


# -------------------------------------------------------------------------------- flag errors

def run_flags(pythanos_bin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([pythanos_bin, *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


STORE = ["store", "--objstore.config={type: FILESYSTEM, config: {directory: /nonexistent}}",
         "--http-address=127.0.0.1:0", "--grpc-address=127.0.0.1:0"]


def flag_cases(c: Certs, tmp: Path) -> list[tuple[list[str], str]]:
    garbage = tmp / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    noblock = tmp / "noblock.pem"
    noblock.write_text("hello\n")
    enc = tmp / "enc.key"
    subprocess.run(["openssl", "pkey", "-in", c.server_key, "-aes256", "-passout", "pass:x", "-out", str(enc)],
                   check=True, capture_output=True)
    missing = tmp / "missing.crt"
    sd = (f"--endpoint.sd-config=endpoints:\n  - address: 127.0.0.1:1\n    client_config:\n"
          f"      tls_config: {{ca_file: {missing}}}\n")
    return [
        ([*STORE, f"--grpc-server-tls-cert={c.server_crt}"],
         "--grpc-server-tls-cert: both server key and certificate must be provided (--grpc-server-tls-key is empty)"),
        ([*STORE, f"--grpc-server-tls-key={c.server_key}"],
         "--grpc-server-tls-key: both server key and certificate must be provided (--grpc-server-tls-cert is empty)"),
        ([*STORE, f"--grpc-server-tls-client-ca={c.ca_crt}"],
         f"--grpc-server-tls-client-ca={c.ca_crt}: when a client CA is used a server key and certificate must"),
        ([*STORE, f"--grpc-server-tls-cert={missing}", f"--grpc-server-tls-key={c.server_key}"],
         f"--grpc-server-tls-cert={missing}: cannot read: No such file or directory"),
        ([*STORE, f"--grpc-server-tls-cert={garbage}", f"--grpc-server-tls-key={c.server_key}"],
         f"--grpc-server-tls-cert={garbage}: invalid PEM certificate"),
        ([*STORE, f"--grpc-server-tls-cert={noblock}", f"--grpc-server-tls-key={c.server_key}"],
         f"--grpc-server-tls-cert={noblock}: no PEM certificate in the file"),
        ([*STORE, f"--grpc-server-tls-cert={c.server_crt}", f"--grpc-server-tls-key={c.client_key}"],
         f"--grpc-server-tls-key={c.client_key}: the private key does not match the certificate of "
         f"--grpc-server-tls-cert={c.server_crt}"),
        ([*STORE, f"--grpc-server-tls-cert={c.server_crt}", f"--grpc-server-tls-key={enc}"],
         f"--grpc-server-tls-key={enc}: the private key is encrypted"),
        ([*STORE, f"--grpc-server-tls-cert={c.server_crt}", f"--grpc-server-tls-key={c.server_key}",
          f"--grpc-server-tls-client-ca={noblock}"],
         f"--grpc-server-tls-client-ca={noblock}: no PEM certificate in the file"),
        ([*STORE, "--grpc-server-tls-min-version=1.1"],
         "argument --grpc-server-tls-min-version: TLS 1.1 cannot be allowed: grpcio (BoringSSL) negotiates TLS 1.2 "
         "and 1.3 only"),
        ([*STORE, "--grpc-server-tls-min-version=1.4"],
         "argument --grpc-server-tls-min-version: invalid TLS version '1.4', valid values are 1.0, 1.1, 1.2, 1.3"),
        ([*STORE, *server_flags(c), "--grpc-server-tls-curves=X25519"],
         "--grpc-server-tls-curves: grpcio cannot restrict TLS curves"),
        ([*STORE, *server_flags(c, "--grpc-server-tls-min-version=1.2",
                                "--grpc-server-tls-ciphers=TLS_AES_128_GCM_SHA256")],
         "--grpc-server-tls-ciphers: only TLS 1.3 suites are named, and those cannot be chosen"),
        ([*STORE, *server_flags(c), "--grpc-server-tls-ciphers=TLS_RSA_WITH_RC4_128_SHA"],
         "--grpc-server-tls-ciphers: invalid cipher suite: TLS_RSA_WITH_RC4_128_SHA, valid values are"),
        (["query", "--http-address=127.0.0.1:0", "--grpc-address=127.0.0.1:0", "--grpc-client-tls-secure",
          f"--grpc-client-tls-cert={c.client_crt}"],
         f"--grpc-client-tls-cert={c.client_crt}: both client key and certificate must be provided"),
        (["query", "--http-address=127.0.0.1:0", "--grpc-address=127.0.0.1:0", *server_flags(c),
          "--grpc-client-tls-secure", "--grpc-client-tls-min-version=1.2"],
         "--grpc-client-tls-min-version=1.2: TLS minimum version 1.2 differs from this process' gRPC TLS minimum 1.3"),
        (["query", "--http-address=127.0.0.1:0", "--grpc-address=127.0.0.1:0", sd],
         f"--endpoint.sd-config: endpoints[0].client_config.tls_config.ca_file={missing}: cannot read"),
        (["query", "--http-address=127.0.0.1:0", "--grpc-address=127.0.0.1:0",
          "--endpoint.sd-config=default_client_config: {tls_config: {enabled: true, min_version: '1.0'}}"],
         "--endpoint.sd-config: default_client_config.tls_config.min_version: TLS 1.0 cannot be allowed"),
    ]


def test_flag_errors(certs, pythanos_bin, tmp_path):
    """(e) Each bad setting: exit code 1 or 2 and one line naming the flag, field or file."""
    failures = []
    for args, want in flag_cases(certs, tmp_path):
        r = run_flags(pythanos_bin, *args)
        if r.returncode not in (1, 2) or want not in r.stderr or "Traceback" in r.stderr:
            failures.append(f"{args[-1]}: exit {r.returncode}, stderr:\n{r.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)


def test_help_documents_what_grpcio_enforces(pythanos_bin):
    for component in ("query", "sidecar", "store"):
        out = run_flags(pythanos_bin, component, "--help").stdout
        for flag in ("--grpc-server-tls-cert", "--grpc-server-tls-key", "--grpc-server-tls-client-ca",
                     "--grpc-server-tls-min-version", "--grpc-server-tls-ciphers", "--grpc-server-tls-curves",
                     "--grpc-server-max-connection-age"):
            assert flag in out, (component, flag)
    out = " ".join(run_flags(pythanos_bin, "query", "--help").stdout.split())
    for flag in ("--grpc-client-tls-secure", "--grpc-client-tls-skip-verify", "--grpc-client-tls-cert",
                 "--grpc-client-tls-key", "--grpc-client-tls-ca", "--grpc-client-server-name",
                 "--grpc-client-tls-min-version"):
        assert flag in out, flag
    assert "1.3 is enforced: TLS 1.2 peers fail the handshake" in out


# ------------------------------------------------------------------------------------ unit level

def test_certificate_names(certs):
    from pythanos.tlsconfig import certificate_names

    der = ssl.PEM_cert_to_DER_cert(Path(certs.server_crt).read_text())
    assert certificate_names(der) == {"dns": ["localhost"], "ip": ["127.0.0.1"], "cn": ["server"]}
    der = ssl.PEM_cert_to_DER_cert(Path(certs.client_crt).read_text())
    assert certificate_names(der) == {"dns": [], "ip": [], "cn": ["client"]}
    assert certificate_names(b"\x30\x82\xff") == {"dns": [], "ip": [], "cn": []}


@pytest.fixture
def floor_13(monkeypatch):
    """This test process as a component started with Thanos' default TLS minimum (1.3) sees it,
    without loading grpc again (only what check_min_version consults)."""
    from pythanos import tlsconfig

    monkeypatch.setattr(tlsconfig, "_fixed", tlsconfig.GrpcTLSPolicy("1.3"))


def test_sd_config_tls_resolution_follows_thanos(certs, floor_13):
    """default_client_config replaces the flags; an endpoint with its own fields merges over the
    default unless it says ``enabled`` (then Thanos' defaults fill in); cert/key/ca/skip-verify
    turn TLS on; server_name alone takes the rest from the default."""
    from pythanos.errors import ConfigError
    from pythanos.query.discovery import parse_endpoint_config
    from pythanos.tlsconfig import ClientTLS

    flags = ClientTLS(enabled=True, ca_file=certs.ca_crt)
    cfg = parse_endpoint_config("endpoints:\n  - address: a:1\n", "cfg", flags)
    assert cfg.default_tls is None and cfg.endpoints[0].tls is None  # the flags apply
    cfg = parse_endpoint_config(
        "default_client_config:\n"
        f"  tls_config: {{cert_file: {certs.client_crt}, key_file: {certs.client_key}, ca_file: {certs.ca_crt}}}\n"
        "endpoints:\n"
        "  - address: a:1\n"
        "  - address: b:1\n    client_config: {tls_config: {insecure_skip_verify: true}}\n"
        "  - address: c:1\n    client_config: {tls_config: {enabled: true}}\n"
        "  - address: d:1\n    client_config: {server_name: localhost}\n"
        "  - address: e:1\n    client_config: {tls_config: {enabled: false}}\n", "cfg", flags)
    d = cfg.default_tls
    assert d == ClientTLS(enabled=True, cert_file=certs.client_crt, key_file=certs.client_key, ca_file=certs.ca_crt)
    a, b, c, dd, e = (s.tls for s in cfg.endpoints)
    assert a is None
    assert b == ClientTLS(True, certs.client_crt, certs.client_key, certs.ca_crt, "", True, "1.3")
    assert c == ClientTLS(enabled=True)  # no merge with the default: no client certificate, system CAs
    assert dd == ClientTLS(True, certs.client_crt, certs.client_key, certs.ca_crt, "localhost", False, "1.3")
    assert e == ClientTLS(enabled=False)
    # without a default, an endpoint merges over the flags
    cfg = parse_endpoint_config("endpoints:\n  - address: a:1\n    client_config: {server_name: x}\n", "cfg", flags)
    assert cfg.endpoints[0].tls == ClientTLS(enabled=True, ca_file=certs.ca_crt, server_name="x")
    for bad, msg in (
            ("endpoints:\n  - address: a:1\n    client_config: {tls_config: {enabled: yes-please}}\n",
             r"cfg: endpoints\[0\].client_config.tls_config.enabled: expected true or false"),
            ("endpoints:\n  - address: a:1\n    client_config: {tls_config: {cafile: x}}\n",
             r"cfg: endpoints\[0\].client_config.tls_config: unknown field\(s\) cafile"),
            ("endpoints:\n  - address: a:1\n    client_config: {tls_config: {min_version: '1.2', enabled: true}}\n",
             r"cfg: endpoints\[0\].client_config.tls_config.min_version=1.2: TLS minimum version 1.2 differs"),
            (f"endpoints:\n  - address: a:1\n    client_config: {{tls_config: {{cert_file: {certs.client_crt}}}}}\n",
             r"cfg: endpoints\[0\].client_config.tls_config.cert_file=.*: both client key and certificate")):
        with pytest.raises(ConfigError, match=msg):
            parse_endpoint_config(bad, "cfg", ClientTLS())


def test_skip_verify_fetches_the_certificate_again(certs, pythanos_bin, tmp_path):
    """A skip-verify endpoint restarted with another certificate (another CA too) on the same port:
    the pinned one no longer fits, the querier fetches the new one and the endpoint comes back."""
    g, h = free_ports(2)
    first = our_store(pythanos_bin, tmp_path, "store-pin-1", f"--grpc-server-tls-cert={certs.server_crt}",
                      f"--grpc-server-tls-key={certs.server_key}", ports=(g, h))
    addr = first.extra["grpc"]
    q = our_query(pythanos_bin, tmp_path, "query-pin", f"--endpoint={addr}", "--grpc-client-tls-secure",
                  "--grpc-client-tls-skip-verify", "--store.unhealthy-timeout=10m")
    second = None
    try:
        q.wait_ready(lambda: healthy_stores(q) == {addr}, READY, what="the store pinned")
        first.stop()
        q.wait_ready(lambda: healthy_stores(q) == set(), READY, what="the store gone")
        second = our_store(pythanos_bin, tmp_path, "store-pin-2", f"--grpc-server-tls-cert={certs.other_server_crt}",
                           f"--grpc-server-tls-key={certs.other_server_key}", ports=(g, h))
        q.wait_ready(lambda: healthy_stores(q) == {addr}, READY, what="the store's new certificate pinned")
    finally:
        q.stop()
        first.stop()
        if second is not None:
            second.stop()


def test_client_certificate_is_reloaded(certs, pythanos_bin, tmp_path):
    """The querier's client certificate files replaced (as a mounted Secret is): the next endpoint
    check dials with the new pair, and the store that refused the old one is served."""
    store = our_store(pythanos_bin, tmp_path, "store-client-reload", *server_flags(certs))
    addr = store.extra["grpc"]
    d = tmp_path / "client"
    d.mkdir()
    for src, dst in ((certs.other_client_crt, "tls.crt"), (certs.other_client_key, "tls.key")):
        shutil.copy(src, d / dst)
    q = our_query(pythanos_bin, tmp_path, "query-client-reload", f"--endpoint={addr}", "--grpc-client-tls-secure",
                  f"--grpc-client-tls-ca={certs.ca_crt}", f"--grpc-client-tls-cert={d / 'tls.crt'}",
                  f"--grpc-client-tls-key={d / 'tls.key'}")
    try:
        wait_log(q, "update of endpoint failed", f"address={addr}")
        assert healthy_stores(q) == set()
        for src, dst in ((certs.client_crt, "tls.crt"), (certs.client_key, "tls.key")):
            shutil.copy(src, d / f"{dst}.new")
            (d / f"{dst}.new").rename(d / dst)
        q.wait_ready(lambda: healthy_stores(q) == {addr}, READY,
                     what="the store served with the new client certificate")
        wait_log(q, "client TLS files changed", f"address={addr}")
    finally:
        q.stop()
        store.stop()
