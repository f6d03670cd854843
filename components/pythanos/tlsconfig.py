"""gRPC transport security on grpcio: Thanos' ``--grpc-server-tls-*`` and ``--grpc-client-tls-*``
flags and the endpoint SD config's ``tls_config``, for every component that serves or dials gRPC.

What grpcio (its BoringSSL) allows, checked on grpcio 1.85, and what this module makes of it:

* **TLS versions.** grpcio's SSL credentials negotiate TLS 1.2 and 1.3, never older, and take no
  minimum version (the TLS-credentials API that has one is C++ only). Its one switch is the
  process-wide cipher list ``GRPC_SSL_CIPHER_SUITES``, read once when grpc is loaded. A minimum of
  1.3 (Thanos' default) is enforced with a list that holds no TLS 1.2 suite BoringSSL can use
  (:data:`NO_TLS12_SUITES`, a PSK suite: grpc installs no PSK callback), so a TLS 1.2 peer fails
  the handshake, as server and as client. 1.2 is grpcio's own floor. 1.0 and 1.1 cannot be
  honoured (grpcio would refuse such peers) and are rejected as values. Because the switch is per
  process, every gRPC TLS connection of a process shares one minimum (:func:`fix_process_policy`,
  called while flags are read, before anything imports grpc); a setting that disagrees is an
  error naming it, never silently weaker or stronger.
* **Cipher suites** (``--grpc-server-tls-ciphers``): Go's TLS 1.2 names map to BoringSSL's in the
  same variable, so they apply to the whole process (the querier's client connections too). TLS 1.3
  suites are not configurable, in Go either; under a 1.3 minimum the list has no effect, as in Go.
* **Curves** (``--grpc-server-tls-curves``): grpcio cannot restrict key-exchange groups. It
  negotiates :data:`GRPC_CURVES` (P-256 only under TLS 1.2), so a list is accepted only when it
  names all of them, i.e. when it restricts nothing grpcio would use.
* **Reload.** The server presents its certificate through grpcio's dynamic credentials: at each
  new handshake the certificate, key and client CA files are checked (``stat``) and re-read when
  changed, as Thanos re-reads certificate and key. A change that does not load (half-written
  file, key not matching) is logged and the previous material is kept. Client certificates are
  checked by :class:`ClientTLS` users (the querier's endpoint checks) and a changed one gives a
  new channel.
* **insecure_skip_verify** has no grpcio switch. :meth:`ClientTLS.channel_args` fetches the
  certificate the endpoint presents (a separate TLS handshake without verification) and gives the
  channel that one certificate as its only trust anchor, with a name it holds. See there for what
  that does and does not protect against.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import ssl
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .errors import UserError

log = logging.getLogger(__name__)

__all__ = ["TLS_VERSIONS", "SUPPORTED_MIN_VERSIONS", "GO_CIPHER_SUITES", "GRPC_CURVES", "NO_TLS12_SUITES",
           "GrpcTLSPolicy", "fix_process_policy", "process_min_version", "check_min_version", "check_ciphers",
           "check_curves", "parse_curves", "ServerTLS", "ClientTLS", "certificate_names", "read_file"]

#: Thanos' allowed values for every ``*min-version`` / ``min_version``
TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")
#: those grpcio can honour (see the module docstring)
SUPPORTED_MIN_VERSIONS = ("1.2", "1.3")
ENV = "GRPC_SSL_CIPHER_SUITES"
#: a TLS 1.2 cipher list BoringSSL accepts but can never negotiate (PSK without a PSK callback):
#: with it a process speaks TLS 1.3 only
NO_TLS12_SUITES = "PSK-AES128-CBC-SHA"

#: Go's ``tls.CipherSuites()`` names (the ones Thanos accepts) -> BoringSSL's; None: a TLS 1.3 suite
GO_CIPHER_SUITES: dict[str, Optional[str]] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
#: Thanos' curve names (``--grpc-server-tls-curves``)
GO_CURVES = ("CurveP256", "CurveP384", "CurveP521", "X25519", "X25519MLKEM768", "SecP256r1MLKEM768",
             "SecP384r1MLKEM1024")
#: the groups grpcio 1.85 negotiates (TLS 1.3; TLS 1.2 uses P-256 only), in Thanos' names
GRPC_CURVES = ("CurveP256", "CurveP384", "CurveP521", "X25519", "X25519MLKEM768")


# ------------------------------------------------------------------------------- process policy

@dataclass(frozen=True)
class GrpcTLSPolicy:
    """What grpcio enforces for every TLS connection of this process: the minimum version and,
    under 1.2, the TLS 1.2 suites (Go names; empty: grpcio's default list)."""

    min_version: str = "1.3"
    ciphers: tuple[str, ...] = ()

    def env_value(self) -> Optional[str]:
        """``GRPC_SSL_CIPHER_SUITES`` for this policy (None: leave grpcio's default)."""
        if self.min_version == "1.3":
            return NO_TLS12_SUITES
        if not self.ciphers:
            return None
        suites = [GO_CIPHER_SUITES[c] for c in self.ciphers if GO_CIPHER_SUITES.get(c)]
        # only TLS 1.3 names: Go then has no TLS 1.2 suite either, and neither do we
        return ":".join(dict.fromkeys(suites)) if suites else NO_TLS12_SUITES


_policy_lock = threading.Lock()
_fixed: Optional[GrpcTLSPolicy] = None


def _grpc_loaded() -> bool:
    return "grpc" in sys.modules


def fix_process_policy(policy: GrpcTLSPolicy) -> None:
    """Make grpcio enforce ``policy`` in this process.

    grpcio reads its cipher list once, when it is loaded, so this must run before anything
    imports grpc (component flags call it first thing). Afterwards it only checks that the
    policy already in force is the same one, and raises RuntimeError otherwise (an ordering bug,
    not a user error). Worker processes of the querier inherit the variable and fix the same."""
    global _fixed
    want = policy.env_value()
    with _policy_lock:
        have = os.environ.get(ENV)
        if _grpc_loaded():
            if have != want:
                raise RuntimeError(f"gRPC TLS minimum version {policy.min_version} cannot be put in force: grpc was "
                                   f"already loaded with {ENV}={have!r} (it is read once, at load)")
        else:
            if have is not None and have != want and _fixed is None:
                log.warning("overriding the environment's gRPC cipher list to enforce the TLS settings",
                            extra={"var": ENV, "was": have})
            if want is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = want
        _fixed = policy


def process_min_version() -> str:
    """The minimum TLS version grpcio enforces in this process ("1.2" or "1.3")."""
    if _fixed is not None:
        return _fixed.min_version
    return "1.3" if os.environ.get(ENV) == NO_TLS12_SUITES else "1.2"


def parse_min_version(text: str, where: str) -> str:
    """A Thanos TLS version value grpcio can honour; anything else is a UserError naming ``where``."""
    v = (text or "").strip()
    if v not in TLS_VERSIONS:
        raise UserError(f"{where}: invalid TLS version {text!r}, valid values are {', '.join(TLS_VERSIONS)}")
    if v not in SUPPORTED_MIN_VERSIONS:
        raise UserError(f"{where}: TLS {v} cannot be allowed: grpcio (BoringSSL) negotiates TLS 1.2 and 1.3 "
                        "only; use 1.2 or 1.3")
    return v


def check_min_version(version: str, where: str) -> None:
    """``version`` must be the minimum this process enforces (one per process, see the module docstring)."""
    have = process_min_version()
    if version != have:
        raise UserError(f"{where}: TLS minimum version {version} differs from this process' gRPC TLS minimum "
                        f"{have} (grpcio applies one minimum to every gRPC TLS connection of a process: "
                        "--grpc-server-tls-min-version, --grpc-client-tls-min-version and every min_version "
                        "in use must agree)")


def check_ciphers(names: Sequence[str], where: str) -> tuple[str, ...]:
    """Go cipher suite names (repeatable, comma-separated allowed) as Thanos accepts them."""
    out = []
    for raw in names:
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            if name not in GO_CIPHER_SUITES:
                raise UserError(f"{where}: invalid cipher suite: {name}, valid values are "
                                f"{', '.join(sorted(GO_CIPHER_SUITES))}")
            out.append(name)
    return tuple(out)


def parse_curves(names: Sequence[str], where: str) -> tuple[str, ...]:
    """Go curve names (repeatable, comma-separated allowed) as Thanos accepts them."""
    out = []
    for raw in names:
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            if name not in GO_CURVES:
                raise UserError(f"{where}: invalid curve: {name}, valid values are {', '.join(sorted(GO_CURVES))}")
            out.append(name)
    return tuple(out)


def check_curves(names: Sequence[str], where: str) -> tuple[str, ...]:
    """Accept a curve list only if it restricts nothing grpcio negotiates (it cannot be told to)."""
    out = parse_curves(names, where)
    missing = [c for c in GRPC_CURVES if c not in out]
    if out and missing:
        raise UserError(f"{where}: grpcio cannot restrict TLS curves; it negotiates {', '.join(GRPC_CURVES)} "
                        f"and this list leaves out {', '.join(missing)}. Leave the flag unset, or name all of them.")
    return tuple(out)


# ------------------------------------------------------------------------------------ PEM files

def read_file(path: str, where: str) -> bytes:
    """The bytes of a TLS file, or a UserError naming ``where`` (``--flag=path`` or a config field)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UserError(f"{where}: cannot read: {e.strerror or e}") from None


def _check_certs(pem: bytes, where: str) -> None:
    """``pem`` holds at least one parseable certificate."""
    try:
        text = pem.decode("ascii")
    except UnicodeDecodeError:
        raise UserError(f"{where}: not a PEM file (binary data; DER certificates must be converted to PEM)") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise UserError(f"{where}: no PEM certificate in the file (want -----BEGIN CERTIFICATE-----)")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as e:
        raise UserError(f"{where}: invalid PEM certificate: {getattr(e, 'reason', None) or e}") from None


def _check_key_pair(cert_path: str, key_path: str, key_pem: bytes, cert_where: str, key_where: str) -> None:
    """``key_path`` holds an unencrypted PEM private key matching the certificate in ``cert_path``."""
    text = key_pem.decode("ascii", "replace")
    if "PRIVATE KEY-----" not in text:
        raise UserError(f"{key_where}: no PEM private key in the file (want -----BEGIN ... PRIVATE KEY-----)")
    if "ENCRYPTED" in text:
        raise UserError(f"{key_where}: the private key is encrypted; grpcio needs an unencrypted key")

    def no_password() -> str:
        raise UserError(f"{key_where}: the private key is encrypted; grpcio needs an unencrypted key")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert_path, key_path, password=no_password)
    except ssl.SSLError as e:
        reason = (e.reason or "").upper()
        if "MISMATCH" in reason or "NO_CERTIFICATE_ASSIGNED" in reason:
            raise UserError(f"{key_where}: the private key does not match the certificate of {cert_where}") from None
        raise UserError(f"{key_where}: invalid PEM private key: {e.reason or e}") from None
    except OSError as e:  # vanished between the reads
        raise UserError(f"{key_where}: cannot read: {e.strerror or e}") from None


def _stamp(paths: Sequence[str]) -> tuple:
    out = []
    for p in paths:
        if not p:
            out.append(None)
            continue
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append("missing")
    return tuple(out)


def _load_identity(cert_path: str, key_path: str, cert_where: str, key_where: str) -> tuple[bytes, bytes]:
    """(key PEM, certificate chain PEM), both checked."""
    cert = read_file(cert_path, cert_where)
    _check_certs(cert, cert_where)
    key = read_file(key_path, key_where)
    _check_key_pair(cert_path, key_path, key, cert_where, key_where)
    return key, cert


def _load_ca(path: str, where: str) -> bytes:
    pem = read_file(path, where)
    _check_certs(pem, where)
    return pem


def system_roots() -> Optional[bytes]:
    """The system CA bundle (Go's ``x509.SystemCertPool``: ``SSL_CERT_FILE``, then the distribution's
    bundle); None lets grpcio use its own bundled roots."""
    paths = ssl.get_default_verify_paths()
    for p in (os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile,
              "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"):
        if p and os.path.isfile(p):
            try:
                with open(p, "rb") as f:
                    return f.read()
            except OSError:
                continue
    return None


# --------------------------------------------------------------------------------------- server

@dataclass(frozen=True)
class ServerTLS:
    """Server TLS (and mTLS with ``client_ca_file``) for a gRPC server.

    ``names`` are the flags (or config fields) of cert, key and client CA, used in errors."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""
    min_version: str = "1.3"
    names: tuple[str, str, str] = field(default=("--grpc-server-tls-cert", "--grpc-server-tls-key",
                                                 "--grpc-server-tls-client-ca"), compare=False)

    def _where(self) -> tuple[str, str, str]:
        c, k, a = self.names
        return f"{c}={self.cert_file}", f"{k}={self.key_file}", f"{a}={self.client_ca_file}"

    def load(self) -> tuple[bytes, bytes, Optional[bytes]]:
        """(key, certificate chain, client CA or None), each file checked; UserError naming the file."""
        cw, kw, aw = self._where()
        key, cert = _load_identity(self.cert_file, self.key_file, cw, kw)
        ca = _load_ca(self.client_ca_file, aw) if self.client_ca_file else None
        return key, cert, ca

    def validate(self) -> None:
        self.load()

    def stamp(self) -> tuple:
        return _stamp((self.cert_file, self.key_file, self.client_ca_file))

    def credentials(self):
        """grpcio server credentials presenting the current files (re-read when they change) and,
        with a client CA, requiring and verifying client certificates."""
        import grpc

        check_min_version(self.min_version, f"--grpc-server-tls-min-version={self.min_version}")
        reloader = _ServerReloader(self)
        key, cert, ca = reloader.initial()
        initial = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
        return grpc.dynamic_ssl_server_credentials(initial, reloader.fetch,
                                                   require_client_authentication=ca is not None)


class _ServerReloader:
    """The certificate-configuration fetcher grpcio calls (from its own threads) at every new
    handshake: cheap when nothing changed (three ``stat`` calls)."""

    def __init__(self, tls: ServerTLS) -> None:
        self.tls = tls
        self.lock = threading.Lock()
        self.stamp: tuple = ()
        self.failed: tuple = ()

    def initial(self) -> tuple[bytes, bytes, Optional[bytes]]:
        st = self.tls.stamp()
        material = self.tls.load()
        self.stamp = st
        return material

    def fetch(self):
        import grpc

        with self.lock:
            st = self.tls.stamp()
            if st == self.stamp or st == self.failed:
                return None
            try:
                key, cert, ca = self.tls.load()
            except UserError as e:
                self.failed = st
                log.error("cannot reload the gRPC server certificate; keeping the previous one", extra={"err": str(e)})
                return None
            if self.tls.stamp() != st:  # changed while being read: take it at the next handshake
                return None
            self.stamp, self.failed = st, ()
        log.info("reloaded the gRPC server certificate", extra={"cert": self.tls.cert_file})
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


# --------------------------------------------------------------------------------------- client

#: field names in errors: flags, or ``<where>.<yaml field>`` for the endpoint SD config
FLAG_NAMES = {"cert_file": "--grpc-client-tls-cert", "key_file": "--grpc-client-tls-key",
              "ca_file": "--grpc-client-tls-ca", "min_version": "--grpc-client-tls-min-version",
              "skip_verify": "--grpc-client-tls-skip-verify"}


@dataclass(frozen=True)
class ClientTLS:
    """How to dial one gRPC endpoint: plaintext (``enabled`` false) or TLS, optionally with a
    client certificate (mTLS), a CA bundle (default: the system's), a server name to verify and
    send (default: the address' host), or no verification at all (``skip_verify``).

    ``where`` names the source in errors: empty for the ``--grpc-client-tls-*`` flags, else the
    YAML path of the ``tls_config`` (``--endpoint.sd-config-file=x: endpoints[0].client_config``)."""

    enabled: bool = False
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    server_name: str = ""
    skip_verify: bool = False
    min_version: str = "1.3"
    where: str = field(default="", compare=False)
    #: the flags' prefix in errors (the receiver's are ``--remote-write.client-tls-``)
    flag_prefix: str = field(default="--grpc-client-tls-", compare=False)

    def name(self, attr: str) -> str:
        value = getattr(self, attr)
        if not self.where:
            return f"{FLAG_NAMES[attr].replace('--grpc-client-tls-', self.flag_prefix)}={value}"
        yaml_name = {"skip_verify": "insecure_skip_verify"}.get(attr, attr)
        return f"{self.where}.tls_config.{yaml_name}={value}"

    def validate(self) -> None:
        """Everything checkable before dialling: the pair, the files, the minimum version."""
        if not self.enabled:
            return
        if bool(self.cert_file) != bool(self.key_file):
            given, other = ("cert_file", "key_file") if self.cert_file else ("key_file", "cert_file")
            raise UserError(f"{self.name(given)}: both client key and certificate must be provided "
                            f"({self.name(other).split('=')[0]} is empty)")
        check_min_version(self.min_version, self.name("min_version"))
        self.material()

    def stamp(self) -> tuple:
        return _stamp((self.cert_file, self.key_file, "" if self.skip_verify else self.ca_file))

    def material(self) -> tuple[Optional[bytes], Optional[bytes], Optional[bytes]]:
        """(root certificates, private key, certificate chain)."""
        key = cert = None
        if self.cert_file:
            key, cert = _load_identity(self.cert_file, self.key_file, self.name("cert_file"), self.name("key_file"))
        if self.skip_verify:
            return None, key, cert
        roots = _load_ca(self.ca_file, self.name("ca_file")) if self.ca_file else system_roots()
        return roots, key, cert

    async def channel_args(self, address: "str | Sequence[str]",
                           timeout: float = 5.0) -> tuple[Any, list[tuple[str, Any]]]:
        """(grpc.ChannelCredentials, extra channel options) to dial ``address`` as configured
        (several addresses: the members of an endpoint group, dialled through one channel).

        With ``skip_verify`` (Go's InsecureSkipVerify) grpcio offers no switch, so the certificate
        is fetched first: one TLS handshake without verification (client certificate included),
        then the channel trusts exactly that certificate, as its only root, under a name it holds
        (the server name if it holds it). What that gives: the connection is encrypted and the
        server must hold the key of the certificate it showed a moment before; nothing is learned
        about who it is, exactly as with Go's InsecureSkipVerify (anyone able to intercept the
        connection can show their own certificate and be trusted). What it does not widen: the
        pin is for this endpoint's channel only and only until a connection fails (then the
        caller fetches again). Differences from Go: an expired or not yet valid certificate is
        still refused (BoringSSL checks the dates of the trust anchor too), and so is one that
        names no host (no subjectAltName, no common name).

        A group's members are each asked; the channel trusts every certificate that came back
        (members that do not answer are left out) under one name all of them hold (grpcio checks
        one name per channel): members with certificates for different names and no common one
        cannot be pinned together, which is an error saying so."""
        import grpc

        check_min_version(self.min_version, self.name("min_version"))
        roots, key, cert = self.material()
        options: list[tuple[str, Any]] = []
        if self.skip_verify:
            addresses = [address] if isinstance(address, str) else list(address)
            got = await asyncio.gather(*(fetch_certificate(a, self, timeout) for a in addresses),
                                       return_exceptions=True)
            ders: list[bytes] = []
            failures: list[BaseException] = []
            for r in got:
                if isinstance(r, bytes):
                    if r not in ders:
                        ders.append(r)
                elif isinstance(r, (ConnectionError, UserError)):
                    failures.append(r)
                else:
                    raise r
            if not ders:
                raise failures[0]
            pin = _pin_name([certificate_names(d) for d in ders], self.server_name)
            if pin is None:
                where = addresses[0] if len(addresses) == 1 else ", ".join(addresses)
                why = ("the certificate it presents names no host (no subjectAltName or common name), which grpcio "
                       "needs to connect") if len(ders) == 1 else (
                       "its members present certificates that share no host name, and grpcio checks one name per "
                       "channel (set server_name to a name they all hold)")
                raise ConnectionError(f"{where}: {self.name('skip_verify')}: {why}")
            roots = "".join(ssl.DER_cert_to_PEM_cert(d) for d in ders).encode("ascii")
            options.append(("grpc.ssl_target_name_override", pin))
        elif self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        creds = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=cert)
        return creds, options


async def fetch_certificate(address: str, tls: ClientTLS, timeout: float) -> bytes:
    """The DER certificate ``address`` presents, fetched without verifying it (see
    :meth:`ClientTLS.channel_args`)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    if tls.cert_file:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as e:
            raise UserError(f"{tls.name('cert_file')}: cannot load with {tls.name('key_file')}: {e}") from None
    sni = tls.server_name or (None if _is_ip(host) else host)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=ctx, server_hostname=sni or ""), timeout)
    except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
        raise ConnectionError(f"{address}: fetching the certificate for insecure_skip_verify failed: "
                              f"{type(e).__name__}: {e}") from None
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    if not der:
        raise ConnectionError(f"{address}: presented no certificate")
    return der


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _holds(names: dict[str, list[str]], host: str) -> bool:
    """Whether grpcio's host check accepts ``host`` for a certificate with these names."""
    dns, ips, cn = names["dns"], names["ip"], names["cn"]
    if host in dns or host in ips or any(_wildcard_match(d, host) for d in dns):
        return True
    return not dns and not ips and host in cn


def _pin_name(certs: "dict[str, list[str]] | Sequence[dict[str, list[str]]]", wanted: str) -> Optional[str]:
    """A name grpcio's host check accepts for every certificate with these names: ``wanted``
    when they all hold it, else the first of the first certificate's names they all hold
    (plain DNS names, IP addresses, a name under a wildcard, the common name of one without
    subjectAltName)."""
    all_names = [certs] if isinstance(certs, dict) else list(certs)
    first = all_names[0]
    dns, ips, cn = first["dns"], first["ip"], first["cn"]
    candidates = [wanted] if wanted else []
    candidates += [d for d in dns if not d.startswith("*.")] + list(ips)
    candidates += ["pinned" + d[1:] for d in dns if d.startswith("*.")]  # any one label under the wildcard
    if not dns and not ips:
        candidates += cn
    for c in candidates:
        if all(_holds(n, c) for n in all_names):
            return c
    return None


def _wildcard_match(pattern: str, name: str) -> bool:
    if not pattern.startswith("*."):
        return False
    head, _, rest = name.partition(".")
    return bool(head) and rest.lower() == pattern[2:].lower()


# ------------------------------------------------------------------------------ certificate names

def _tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``."""
    tag = buf[pos]
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(buf[pos:pos + k], "big")
        pos += k
    if pos + n > len(buf):
        raise ValueError("truncated DER")
    return tag, pos, pos + n


def _children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        t = _tlv(buf, start)
        out.append(t)
        start = t[2]
    return out


_OID_CN = bytes.fromhex("550403")
_OID_SAN = bytes.fromhex("551d11")


def certificate_names(der: bytes) -> dict[str, list[str]]:
    """The host names a DER certificate holds: ``{"dns": [...], "ip": [...], "cn": [...]}``
    (subjectAltName DNS and IP entries, subject common names)."""
    out: dict[str, list[str]] = {"dns": [], "ip": [], "cn": []}
    try:
        _, s, e = _tlv(der, 0)
        _, ts, te = _tlv(der, s)  # tbsCertificate
        items = _children(der, ts, te)
        plain = [it for it in items if it[0] & 0xC0 == 0]  # serial, signature, issuer, validity, subject, spki
        _, ss, se = plain[4]
        for _, rs, re_ in _children(der, ss, se):  # RDN sets
            for _, as_, ae in _children(der, rs, re_):  # attribute type-and-value
                (_, os_, oe), (_, vs, ve) = _children(der, as_, ae)[:2]
                if der[os_:oe] == _OID_CN:
                    out["cn"].append(der[vs:ve].decode("utf-8", "replace"))
        for tag, xs, xe in items:
            if tag != 0xA3:  # [3] extensions
                continue
            _, ls, le = _tlv(der, xs)
            for _, es, ee in _children(der, ls, le):
                parts = _children(der, es, ee)
                if der[parts[0][1]:parts[0][2]] != _OID_SAN:
                    continue
                _, vs, ve = parts[-1]  # extnValue OCTET STRING
                _, gs, ge = _tlv(der, vs)
                for gtag, ns, ne in _children(der, gs, ge):
                    if gtag == 0x82:
                        out["dns"].append(der[ns:ne].decode("ascii", "replace"))
                    elif gtag == 0x87 and ne - ns in (4, 16):
                        out["ip"].append(str(ipaddress.ip_address(der[ns:ne])))
    except (ValueError, IndexError):
        pass
    return out
