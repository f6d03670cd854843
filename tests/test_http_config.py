"""``--http.config`` (Prometheus' web configuration: TLS, client certificates, basic auth, headers,
rate limit) on every HTTP port, checked against a real ``thanos query`` v0.42 given the same file.

Certificates are made here with the openssl CLI, bcrypt hashes with the bcrypt package. Each
client of a table talks to the real Thanos and to ours; the outcomes (TLS refused, or the status,
``WWW-Authenticate`` and configured header of the answer) must be equal. Bad files must stop both
from starting, ours with an error naming the file and the field.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

from peers import REGISTRY, free_ports

bcrypt = pytest.importorskip("bcrypt")

from pythanos.errors import UserError  # noqa: E402
from pythanos.server import httpguard, webconfig  # noqa: E402

READY = 60.0


# -- certificates --------------------------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
             f"{name}.key", "-out", f"{name}.crt", "-days", "3650", "-subj", f"/CN={name}", "-addext",
             "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d: Path, name: str, ca: str, san: str, eku: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\nextendedKeyUsage={eku}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-set_serial",
             str(int.from_bytes(os.urandom(8), "big")), "-days", "3650", "-out", f"{name}.crt", "-extfile",
             f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca and otherca; server (localhost, 127.0.0.1) and server2 (the same names, by otherca);
    client (DNS client.example), ipclient (IP 127.0.0.2), otherclient (DNS other.example) by ca;
    badclient (DNS client.example) by otherca."""
    if not subprocess.run(["which", "openssl"], capture_output=True).returncode == 0:
        pytest.fail("the openssl CLI is needed to make the test certificates")
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "otherca")
    _leaf(d, "server", "ca", "DNS:localhost,IP:127.0.0.1", "serverAuth")
    _leaf(d, "server2", "otherca", "DNS:localhost,IP:127.0.0.1", "serverAuth")
    _leaf(d, "client", "ca", "DNS:client.example", "clientAuth")
    _leaf(d, "ipclient", "ca", "IP:127.0.0.2", "clientAuth")
    _leaf(d, "otherclient", "ca", "DNS:other.example", "clientAuth")
    _leaf(d, "badclient", "otherca", "DNS:client.example", "clientAuth")
    return d


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {"alice": bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode(),
            "bob": bcrypt.hashpw(b"hunter2", bcrypt.gensalt(5)).decode()}


def _users(hashes: dict[str, str]) -> str:
    return "basic_auth_users:\n" + "".join(f"  {u}: {h}\n" for u, h in hashes.items())


# -- clients -------------------------------------------------------------------------------------

def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def call(port: int, *, tls: bool = True, cert: Optional[str] = None, auth: Optional[str] = None,
            header: Optional[str] = None, path: str = "/-/healthy", ca: Optional[Path] = None,
            max_version: Optional[ssl.TLSVersion] = None) -> tuple:
    """One HTTP/1.1 request. ("down",) when nothing listens, ("refused",) when TLS fails or no
    answer comes, else ("http", status, WWW-Authenticate, X-Frame-Options, body of a 400)."""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        return ("down",)
    s: socket.socket = raw
    try:
        if tls:
            ctx = ssl.create_default_context(cafile=str(ca))
            if max_version is not None:
                ctx.maximum_version = max_version
            if cert:
                ctx.load_cert_chain(str(ca.parent / f"{cert}.crt"), str(ca.parent / f"{cert}.key"))
            s = ctx.wrap_socket(raw, server_hostname="localhost")
        lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Connection: close"]
        if auth is not None:
            lines.append("Authorization: Basic " + _b64(auth))
        if header is not None:
            lines.append("Authorization: " + header)
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (OSError, ssl.SSLError):
        return ("refused",)
    finally:
        s.close()
    if not data.startswith(b"HTTP/"):
        return ("refused",)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    status = int(status_line.split()[1])
    return ("http", status, hdrs.get("www-authenticate"), hdrs.get("x-frame-options"),
            body if status == 400 else None)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _poll(cond, what: str, timeout: float = READY, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise AssertionError(f"{p.name} exited ({p.proc.returncode}) while waiting for {what}:\n{p.log(40)}")
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


@pytest.fixture
def servers(tmp_path, thanos_bin, pythanos_bin, request):
    """``servers(config_path, ready=client kwargs or None)`` -> (reference, ours): a real ``thanos
    query`` (or, with ``reference="prometheus"``, a real Prometheus 3 with ``--web.config.file``) and
    our ``pythanos query`` (one worker) with the same ``--http.config``, listening."""
    started = []

    def start(config: Path, ready: Optional[dict] = None, reference: str = "thanos"):
        pair = []
        http, grpc = free_ports(2)
        if reference == "prometheus":
            prom = request.getfixturevalue("prometheus3_bin")
            (tmp_path / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
            ref = [prom, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                   f"--web.listen-address=127.0.0.1:{http}", f"--web.config.file={config}"]
        else:
            ref = [thanos_bin, "query", f"--http-address=127.0.0.1:{http}", f"--grpc-address=127.0.0.1:{grpc}",
                   f"--http.config={config}"]
        ours_http, ours_grpc = free_ports(2)
        for name, args, port in ((reference, ref, http),
                                 ("pythanos-query", [pythanos_bin, "query", f"--http-address=127.0.0.1:{ours_http}",
                                                     f"--grpc-address=127.0.0.1:{ours_grpc}", "--query.workers=1",
                                                     f"--http.config={config}"], ours_http)):
            p = REGISTRY.start(name, args, tmp_path / name)
            p.port = port
            started.append(p)
            pair.append(p)
        for p in pair:
            if ready is None:  # a port that is listening (no request: the rate limit must not see one)
                _poll(lambda: _listening(p.port), f"{p.name} listening", procs=[p])
            else:
                _poll(lambda: call(p.port, **ready)[0] == "http", f"{p.name} answering", procs=[p])
        return pair[0], pair[1]

    yield start
    for p in started:
        p.stop()


def _compare(thanos, ours, clients: dict[str, dict]) -> dict:
    got = {}
    for name, kw in clients.items():
        want, have = call(thanos.port, **kw), call(ours.port, **kw)
        assert have == want, f"{name}: {thanos.name} {want}, pythanos {have}"
        got[name] = have
    return got


# -- the same outcomes as Thanos -----------------------------------------------------------------

@pytest.mark.parametrize("reference", ["thanos", "prometheus"])
def test_tls_client_certs_and_basic_auth_answer_as_thanos(pki, hashes, servers, reference):
    """The same table against Thanos v0.42 and Prometheus 3.9 (both exporter-toolkit v0.15)."""
    cfg = pki / "mtls.yml"
    cfg.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                   "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
                   "http_server_config:\n  headers:\n    X-Frame-Options: deny\n" + _users(hashes))
    ca = pki / "ca.crt"
    good = dict(ca=ca, cert="client")
    thanos, ours = servers(cfg, ready=dict(good, auth="alice:secret"), reference=reference)
    got = _compare(thanos, ours, {
        "no auth": dict(good),
        "wrong password": dict(good, auth="alice:wrong"),
        "unknown user": dict(good, auth="mallory:secret"),
        "right password": dict(good, auth="alice:secret"),
        "second user": dict(good, auth="bob:hunter2"),
        "empty password": dict(good, auth="alice:"),
        "lower-case scheme": dict(good, header="basic " + _b64("alice:secret")),
        "not base64": dict(good, header="Basic !!!"),
        "no colon": dict(good, header="Basic " + _b64("alice")),
        "bearer": dict(good, header="Bearer abc"),
        "metrics, right password": dict(good, auth="alice:secret", path="/metrics"),
        "metrics, no auth": dict(good, path="/metrics"),
        "ready, no auth": dict(good, path="/-/ready"),
        "no client certificate": dict(ca=ca, auth="alice:secret"),
        "client certificate of another CA": dict(ca=ca, cert="badclient", auth="alice:secret"),
        "TLS 1.2 client": dict(good, auth="alice:secret", max_version=ssl.TLSVersion.TLSv1_2),
        "plain HTTP to the TLS port": dict(tls=False),
    })
    assert got["right password"] == ("http", 200, None, "deny", None)
    assert got["no auth"] == ("http", 401, "Basic", "deny", None)
    assert got["ready, no auth"][1] == 401  # probes are behind auth, as in Thanos
    assert got["no client certificate"] == ("refused",)
    assert got["client certificate of another CA"] == ("refused",)
    assert got["plain HTTP to the TLS port"] == ("http", 400, None, None,
                                                 b"Client sent an HTTP request to an HTTPS server.\n")


def test_client_allowed_sans_answer_as_thanos(pki, servers):
    cfg = pki / "sans.yml"
    cfg.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                   "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n"
                   "  client_allowed_sans: [client.example, 127.0.0.2]\n")
    ca = pki / "ca.crt"
    thanos, ours = servers(cfg, ready=dict(ca=ca, cert="client"))
    got = _compare(thanos, ours, {
        "DNS SAN allowed": dict(ca=ca, cert="client"),
        "IP SAN allowed": dict(ca=ca, cert="ipclient"),
        "SAN not allowed": dict(ca=ca, cert="otherclient"),
        "no client certificate": dict(ca=ca),  # Go's check panics on it: the connection is dropped
        "another CA": dict(ca=ca, cert="badclient"),
    })
    assert got["DNS SAN allowed"][:2] == ("http", 200) and got["SAN not allowed"] == ("refused",)


def test_basic_auth_without_tls_and_tls_versions_answer_as_thanos(pki, hashes, servers):
    cfg = pki / "plain.yml"
    cfg.write_text("http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n"
                   "    Strict-Transport-Security: max-age=31536000\n" + _users(hashes))
    thanos, ours = servers(cfg, ready=dict(tls=False, auth="alice:secret"))
    got = _compare(thanos, ours, {
        "no auth": dict(tls=False),
        "right password": dict(tls=False, auth="alice:secret"),
        "wrong password": dict(tls=False, auth="bob:secret"),
        "unknown user": dict(tls=False, auth="carol:secret"),
        "TLS to a plain port": dict(ca=pki / "ca.crt"),
    })
    assert got["right password"][:4] == ("http", 200, None, "sameorigin")

    cfg13 = pki / "tls13.yml"
    cfg13.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS13\n")
    ca = pki / "ca.crt"
    thanos, ours = servers(cfg13, ready=dict(ca=ca))
    got = _compare(thanos, ours, {
        "TLS 1.3": dict(ca=ca),
        "TLS 1.2 only": dict(ca=ca, max_version=ssl.TLSVersion.TLSv1_2),
        "a client certificate nobody asked for": dict(ca=ca, cert="badclient"),
    })
    assert got["TLS 1.2 only"] == ("refused",) and got["TLS 1.3"][:2] == ("http", 200)


def test_rate_limit_answers_as_thanos(pki, servers):
    cfg = pki / "rate.yml"
    cfg.write_text("rate_limit:\n  burst: 2\n  interval: 1h\n")
    thanos, ours = servers(cfg, ready=None)
    want = [call(thanos.port, tls=False)[:2] for _ in range(4)]
    have = [call(ours.port, tls=False)[:2] for _ in range(4)]
    assert have == want == [("http", 200), ("http", 200), ("http", 429), ("http", 429)]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_changes_to_the_file_and_certificates_apply_without_restart(pki, hashes, servers, tmp_path):
    d = tmp_path / "reload"
    d.mkdir()
    for f in ("server.crt", "server.key"):
        (d / f).write_bytes((pki / f).read_bytes())
    cfg = d / "web.yml"
    tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
    cfg.write_text(tls + _users({"alice": hashes["alice"]}))
    ca, other = pki / "ca.crt", pki / "otherca.crt"
    thanos, ours = servers(cfg, ready=dict(ca=ca, auth="alice:secret"))

    def both(**kw):
        return call(thanos.port, **kw), call(ours.port, **kw)

    _atomic_write(cfg, tls + _users({"alice": bcrypt.hashpw(b"second", bcrypt.gensalt(4)).decode()}))
    _poll(lambda: both(ca=ca, auth="alice:second") == (("http", 200, None, None, None),) * 2
          and both(ca=ca, auth="alice:secret")[1][1] == 401, "the new password accepted, the old refused")
    assert both(ca=ca, auth="alice:secret")[0][1] == 401

    _atomic_write(cfg, tls + "unknown_field: 1\n")  # a broken file: new TLS connections are refused
    _poll(lambda: both(ca=ca, auth="alice:second") == (("refused",),) * 2, "both refuse while the file is broken")
    assert "unknown_field" in ours.log()

    _atomic_write(cfg, tls)  # fixed, no users; then the certificate is rotated to one of another CA
    _poll(lambda: both(ca=ca) == (("http", 200, None, None, None),) * 2, "both serve the fixed file")
    for f in ("crt", "key"):
        _atomic_write(d / f"server.{f}", (pki / f"server2.{f}").read_text())
    _poll(lambda: both(ca=other) == (("http", 200, None, None, None),) * 2, "the rotated certificate served")
    assert both(ca=ca) == (("refused",),) * 2
    assert hashes["alice"] not in ours.log()


# -- bad files: neither starts -------------------------------------------------------------------

BAD = {  # name -> (file, what our error must name)
    "unknown field": ("tls_server_config:\n  cert_filse: server.crt\n", "tls_server_config.cert_filse"),
    "unknown section": ("tls_config:\n  cert_file: server.crt\n", "tls_config"),
    "junk": ("hWkNKCp3fvIx3jKnsaBI\nTuEjdwNS8A2vYdFbiKqr\n", "the document"),
    "missing cert file": ("tls_server_config:\n  cert_file: nothere.crt\n  key_file: server.key\n",
                          "tls_server_config.cert_file"),
    "cert without key": ("tls_server_config:\n  cert_file: server.crt\n", "missing one of key or key_file"),
    "key without cert": ("tls_server_config:\n  key_file: server.key\n", "missing one of cert or cert_file"),
    "cert and key do not match": ("tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
                                  "key pair"),
    "bad client_auth_type": ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                             "  client_auth_type: Maybe\n", "tls_server_config.client_auth_type"),
    "client CA without auth type": ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                                    "  client_ca_file: ca.crt\n", "Client Auth Policy"),
    "missing client CA file": ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                               "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: nothere.crt\n",
                               "tls_server_config.client_ca_file"),
    "not a bcrypt hash": ("basic_auth_users:\n  alice: doe\n", "basic_auth_users.alice"),
    "bcrypt cost too low": ("basic_auth_users:\n  alice: $2y$03$" + "a" * 53 + "\n", "basic_auth_users.alice"),
    "header not allowed": ("http_server_config:\n  headers:\n    Content-Type: foo\n",
                           "http_server_config.headers.Content-Type"),
    "header value not allowed": ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                                 "http_server_config.headers.X-Frame-Options"),
    "unknown cipher": ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                       "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2048]\n",
                       "tls_server_config.cipher_suites"),
    "HTTP/2 without its cipher": ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                                  "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n  max_version: TLS12\n",
                                  "tls_server_config.cipher_suites"),
    "unknown curve": ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                      "  curve_preferences: [CurveP257]\n", "tls_server_config.curve_preferences"),
    "unknown TLS version": ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                            "  min_version: TLS111\n", "tls_server_config.min_version"),
    "field set twice": ("tls_server_config:\n  cert_file: server.crt\n  cert_file: server.crt\n",
                        "tls_server_config.cert_file"),
    "wrong type": ("http_server_config:\n  http2: [true]\n", "http_server_config.http2"),
    "bad rate limit interval": ("rate_limit:\n  interval: 1d\n", "rate_limit.interval"),
    "invalid YAML": ("tls_server_config: [\n", "invalid YAML"),
}


def _wait_exit(p, timeout: float = 30.0) -> Optional[int]:
    try:
        return p.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def test_bad_files_stop_thanos_and_us_and_ours_name_the_field(pki, thanos_bin, pythanos_bin, tmp_path):
    work = tmp_path / "bad"
    work.mkdir()
    for f in ("server.crt", "server.key", "client.key", "ca.crt"):
        (work / f).write_bytes((pki / f).read_bytes())
    thanos_started = []
    try:
        for i, (name, (text, field)) in enumerate(BAD.items()):
            path = work / f"bad{i}.yml"
            path.write_text(text)
            http, grpc = free_ports(2)
            thanos_started.append((name, REGISTRY.start("thanos-query", [
                thanos_bin, "query", f"--http-address=127.0.0.1:{http}", f"--grpc-address=127.0.0.1:{grpc}",
                f"--http.config={path}"], work)))
            with pytest.raises(UserError) as err:
                httpguard.HTTPGuard(str(path))  # what Component.start_http does first
            msg = str(err.value)
            assert f"--http.config={path}" in msg and field in msg, f"{name}: {msg}"
        missing = work / "missing.yml"
        with pytest.raises(UserError, match=f"--http.config={missing}: cannot read: No such file"):
            httpguard.HTTPGuard(str(missing))
        for name, p in thanos_started:
            rc = _wait_exit(p)
            assert rc not in (None, 0), f"{name}: thanos query did not refuse the file (rc={rc}):\n{p.log(5)}"
    finally:
        for _, p in thanos_started:
            p.stop()

    # and through the command line: exit code 1, the error on one line naming the field
    path = work / "bad-cli.yml"
    path.write_text(BAD["not a bcrypt hash"][0])
    http, grpc = free_ports(2)
    r = subprocess.run([pythanos_bin, "query", f"--http-address=127.0.0.1:{http}", f"--grpc-address=127.0.0.1:{grpc}",
                        "--query.workers=2", f"--http.config={path}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"--http.config={path}: basic_auth_users.alice: too short to be a bcrypt hash" in r.stderr
    assert "doe" not in r.stderr


def test_what_pythanos_refuses_where_thanos_serves(pki, thanos_bin, tmp_path):
    """Python's TLS verifies every client certificate it asks for: the unverified modes are refused
    at start-up with the reason (Thanos serves them), never served differently."""
    work = tmp_path / "differ"
    work.mkdir()
    for f in ("server.crt", "server.key"):
        (work / f).write_bytes((pki / f).read_bytes())
    path = work / "any.yml"
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                    "  client_auth_type: RequireAnyClientCert\n")
    with pytest.raises(UserError, match="client_auth_type: RequireAnyClientCert .* use RequireAndVerifyClientCert"):
        httpguard.HTTPGuard(str(path))
    http, grpc = free_ports(2)
    p = REGISTRY.start("thanos-query", [thanos_bin, "query", f"--http-address=127.0.0.1:{http}",
                                        f"--grpc-address=127.0.0.1:{grpc}", f"--http.config={path}"], work)
    try:
        _poll(lambda: call(http, ca=pki / "ca.crt", cert="badclient")[0] == "http",
              "thanos serving RequireAnyClientCert (any certificate accepted)", procs=[p])
    finally:
        p.stop()
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                    "  client_auth_type: RequestClientCert\n  client_allowed_sans: [client.example]\n")
    with pytest.raises(UserError, match="client_allowed_sans: needs client_auth_type"):
        httpguard.HTTPGuard(str(path))


# -- every component, and the querier's workers ---------------------------------------------------

@pytest.fixture
def https_config(pki, hashes) -> Path:
    cfg = pki / "component.yml"
    cfg.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n" + _users(hashes))
    return cfg


def test_every_component_serves_https_with_basic_auth(pki, https_config, pythanos_bin, tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    objstore = f"--objstore.config=type: FILESYSTEM\nconfig:\n  directory: {bucket}\n"
    components = {
        "sidecar": ["sidecar", "--prometheus.url=http://127.0.0.1:1", f"--tsdb.path={tmp_path / 'tsdb'}"],
        "store": ["store", objstore, f"--data-dir={tmp_path / 'store'}"],
        "compact": ["compact", "--wait", objstore, f"--data-dir={tmp_path / 'compact'}"],
        "tools bucket web": ["tools", "bucket", "web", objstore],
        "tools bucket downsample": ["tools", "bucket", "downsample", objstore, f"--data-dir={tmp_path / 'ds'}"],
        "query": ["query", "--query.workers=1"],
    }
    ca = pki / "ca.crt"
    started = []
    try:
        for name, args in components.items():
            ports = free_ports(2)
            grpc = [f"--grpc-address=127.0.0.1:{ports[1]}"] if name in ("sidecar", "store", "query") else []
            p = REGISTRY.start(name.replace(" ", "-"), [pythanos_bin, *args, f"--http-address=127.0.0.1:{ports[0]}",
                                                         *grpc, f"--http.config={https_config}"], tmp_path / "logs")
            p.port = ports[0]
            started.append((name, p))
        for name, p in started:
            _poll(lambda: call(p.port, ca=ca, auth="alice:secret")[:2] == ("http", 200),
                  f"{name}: /-/healthy over TLS with the password", procs=[p])
            assert call(p.port, ca=ca)[:3] == ("http", 401, "Basic"), name
            assert call(p.port, ca=ca, auth="alice:secret", path="/metrics")[:2] == ("http", 200), name
            assert call(p.port, tls=False)[1] == 400, name
    finally:
        for _, p in started:
            p.stop()


def test_querier_workers_serve_https_with_basic_auth(pki, https_config, pythanos_bin, tmp_path):
    http, grpc = free_ports(2)
    p = REGISTRY.start("pythanos-query", [pythanos_bin, "query", "--query.workers=2", f"--http-address=127.0.0.1:{http}",
                                          f"--grpc-address=127.0.0.1:{grpc}", f"--http.config={https_config}"],
                       tmp_path)
    ca = pki / "ca.crt"
    try:
        def both_workers() -> bool:  # /metrics holds every worker's series once both are up
            ctx = ssl.create_default_context(cafile=str(ca))
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", http), timeout=10), server_hostname="localhost")
            with s:
                s.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic "
                          f"{_b64('bob:hunter2')}\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            return b'worker="0"' in data and b'worker="1"' in data

        _poll(lambda: _listening(http) and both_workers(), "both workers in /metrics", procs=[p])
        outcomes = {call(http, ca=ca)[:3] for _ in range(20)}
        assert outcomes == {("http", 401, "Basic")}
        assert {call(http, ca=ca, auth="alice:secret")[:2] for _ in range(20)} == {("http", 200)}
        assert call(http, tls=False)[1] == 400
        code_json = call(http, ca=ca, auth="alice:secret", path="/api/v1/query?query=1")
        assert code_json[:2] == ("http", 200)
    finally:
        p.stop()


# -- in-process: secrets, the password cache ------------------------------------------------------

def test_secrets_stay_out_of_reprs_and_errors(tmp_path, hashes):
    path = tmp_path / "web.yml"
    key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSECRET\n-----END PRIVATE KEY-----\n"
    path.write_text("tls_server_config:\n  cert_file: x.crt\n  key: |\n"
                    + "".join(f"    {line}\n" for line in key.splitlines()) + _users(hashes))
    cfg = webconfig.read(str(path))
    text = repr(cfg) + str(cfg)
    for secret in (hashes["alice"], hashes["bob"], "SECRET"):
        assert secret not in text
    assert "'alice': <secret>" in text and "key=<secret>" in text
    # a YAML error next to a hash does not quote the line
    path.write_text(f"basic_auth_users:\n  alice: {hashes['alice']}\n  bob: [{hashes['bob']}\n")
    with pytest.raises(UserError) as err:
        webconfig.read(str(path))
    assert hashes["bob"] not in str(err.value) and hashes["alice"] not in str(err.value)
    # a hash of the wrong type or shape is named by its user only
    path.write_text(f"basic_auth_users:\n  alice: [{hashes['alice']}]\n")
    with pytest.raises(UserError, match="basic_auth_users.alice: want a string") as err:
        webconfig.read(str(path))
    assert hashes["alice"] not in str(err.value)


def test_password_checks_are_cached_on_success_only(monkeypatch, hashes):
    calls = []
    real = httpguard._checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(httpguard, "_checkpw", counting)
    users = {u.encode(): h.encode() for u, h in hashes.items()}

    async def run() -> list:
        auth = httpguard._BasicAuth()
        out = []
        for creds in ("alice:secret", "alice:secret", "alice:nope", "alice:nope", "zed:x", "alice:secret"):
            out.append(await auth.check(users, "Basic " + _b64(creds)))
        # concurrent first checks of one user: one bcrypt, the others find the cached success
        auth2 = httpguard._BasicAuth()
        n = len(calls)
        res = await asyncio.gather(*(auth2.check(users, "Basic " + _b64("bob:hunter2")) for _ in range(5)))
        out.append((all(res), len(calls) - n))
        return out

    out = asyncio.run(run())
    assert out[:6] == [True, True, False, False, False, True]
    assert out[6] == (True, 1)
    # one check for the first success, one per failure, one for the unknown user (a dummy hash of
    # the users' highest cost, so an unknown user costs what a known one does)
    assert len(calls) == 1 + 2 + 1 + 1
    dummy = calls[3]
    assert dummy not in users.values() and dummy[4:6] == b"05"


def test_long_passwords_are_cut_at_72_bytes_as_go_does():
    hashed = bcrypt.hashpw(b"p" * 72, bcrypt.gensalt(4))
    assert httpguard._checkpw(b"p" * 80, hashed)  # Go's CompareHashAndPassword reads 72 bytes too
    assert not httpguard._checkpw(b"p" * 71, hashed)
    assert not httpguard._checkpw(b"x", b"$2y$10$" + b"!" * 53)  # an unusable hash: no access, no crash


def test_reload_errors_are_logged_once_per_change(tmp_path, caplog, hashes):
    path = tmp_path / "web.yml"
    path.write_text(_users(hashes))
    guard = httpguard.HTTPGuard(str(path))
    assert guard.current() is not None and not guard.tls
    _atomic_write(path, "nope: 1\n" + _users(hashes))
    with caplog.at_level(logging.ERROR, logger="pythanos.server.httpguard"):
        for _ in range(5):
            assert guard.current() is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "nope" in errors[0].err
    assert all(h not in json.dumps([vars(r) for r in caplog.records], default=str) for h in hashes.values())
