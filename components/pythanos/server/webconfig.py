"""Prometheus' web configuration file (``--http.config``), read as Thanos reads it.

Thanos hands the file to prometheus/exporter-toolkit (``web.Validate``, then ``web.ListenAndServe``),
so one file enables TLS, client certificates, basic auth, extra response headers and a rate limit
on every HTTP port of a component. This module is the file's model: strict parsing (an unknown or
repeated field is an error naming file, line and field, as with Go's ``yaml.UnmarshalStrict``),
exporter-toolkit's defaults (TLS 1.2 to 1.3, server cipher preference, HTTP/2 on) and its
validation, and the :class:`ssl.SSLContext` a TLS section stands for. The runtime around it
(reloading, basic auth, the TLS listener) is :mod:`pythanos.server.httpguard`.

Where Python's ``ssl`` cannot do what Go's ``crypto/tls`` does, the config is refused at start-up
with the reason instead of being served differently:

* ``client_auth_type: RequireAnyClientCert`` (alias ``RequireClientCert``) accepts a client
  certificate without verifying it; OpenSSL through Python always verifies a certificate it asked
  for. Use ``RequireAndVerifyClientCert`` with ``client_ca_file``.
* ``client_allowed_sans`` with ``RequestClientCert`` (Go reads the SANs of a certificate it never
  verified); with the verifying modes it works as in Go.

``RequestClientCert`` alone behaves as in Go from the client's side (every client connects, with a
certificate or without), so it is served without asking for a certificate. HTTP/2 is not served
(aiohttp speaks HTTP/1.1; ALPN offers ``http/1.1``), but ``http2`` and its cipher check are kept so
the same files are accepted and refused. ``curve_preferences`` restricts the key exchange to its
first curve where the Python lacks ``SSLContext.set_groups`` (before 3.15).

Secrets (the ``basic_auth_users`` hashes, an inline ``key``) never appear in a repr or an error.
"""
from __future__ import annotations

import dataclasses
import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..errors import ConfigError, UserError
from ..tlsconfig import GO_CIPHER_SUITES

__all__ = ["WebConfig", "TLSServerConfig", "RateLimit", "parse", "load", "read", "validate_users",
           "tls_context", "tls_files", "ALLOWED_HEADERS", "DEFAULT_FLAG"]

DEFAULT_FLAG = "--http.config"

#: exporter-toolkit's extraHTTPHeaders: the only headers the file may add, with their allowed
#: values where the header is an enumeration (None: any value).
ALLOWED_HEADERS: dict[str, Optional[tuple[str, ...]]] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

#: Go's tls.CipherSuites() names -> OpenSSL's names: the one table gRPC's flags use too.
CIPHERS = GO_CIPHER_SUITES

_GO_DEFAULT_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                       "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                       "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA")
#: Go's HTTP/2 server wants one of these in a TLS 1.2 cipher list
H2_REQUIRED_CIPHERS = frozenset({"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"})

#: exporter-toolkit's curve names -> OpenSSL's group names
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}

CLIENT_AUTH_TYPES = ("NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
                     "RequireAndVerifyClientCert")


@dataclass(frozen=True)
class TLSServerConfig:
    """``tls_server_config``; paths are already joined with the config file's directory."""

    cert: str = ""
    key: str = field(default="", repr=False)  # an inline private key: secret
    client_ca: str = ""
    cert_file: str = ""
    key_file: str = ""
    client_auth_type: str = ""
    client_ca_file: str = ""
    cipher_suites: tuple[str, ...] = ()
    curve_preferences: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    prefer_server_cipher_suites: bool = True
    client_allowed_sans: Optional[tuple[str, ...]] = None  # None: no check; () rejects every client

    @property
    def enabled(self) -> bool:
        """exporter-toolkit's "TLS config is not present" is this being False: plain HTTP."""
        return bool(self.cert_file or self.cert or self.key_file or self.key or self.client_ca_file
                    or self.client_ca or self.client_auth_type)


@dataclass(frozen=True)
class RateLimit:
    """``rate_limit``: golang.org/x/time/rate's limiter of ``burst`` tokens refilled one per ``interval``."""

    burst: int = 0
    interval_s: float = 0.0


@dataclass(frozen=True)
class WebConfig:
    """One web configuration file, parsed. ``users`` maps a user name (bytes, as compared with the
    request's) to its bcrypt hash; its repr shows only the names."""

    path: str
    tls: TLSServerConfig = field(default_factory=TLSServerConfig)
    http2: bool = True
    headers: tuple[tuple[str, str], ...] = ()
    users: dict[bytes, bytes] = field(default_factory=dict)
    rate_limit: RateLimit = field(default_factory=RateLimit)

    def __repr__(self) -> str:
        names = sorted(u.decode("utf-8", "replace") for u in self.users)
        key = ", key=<secret>" if self.tls.key else ""
        return (f"WebConfig(path={self.path!r}, tls={self.tls!r}{key}, http2={self.http2!r}, "
                f"headers={self.headers!r}, users={{{', '.join(f'{n!r}: <secret>' for n in names)}}}, "
                f"rate_limit={self.rate_limit!r})")

    __str__ = __repr__


# ---------------------------------------------------------------------------------------------- YAML

class _Doc:
    """Typed reads of a composed YAML node tree with the rules of Go's yaml.v2 decoding into the
    exporter-toolkit structs: strict fields, null is the zero value, scalars become strings where
    a string is wanted. Errors name the file, line and field path; values of secret fields are
    never quoted."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, node, path: str, msg: str) -> ConfigError:
        line = f"line {node.start_mark.line + 1}: " if node is not None else ""
        return ConfigError(f"{self.where}: {line}{path}: {msg}")

    @staticmethod
    def is_null(node) -> bool:
        return node is None or (getattr(node, "tag", "") == "tag:yaml.org,2002:null")

    def mapping(self, node, path: str, fields: Optional[set] = None) -> dict[str, Any]:
        """A mapping's key -> value node; with ``fields``, only those keys are allowed."""
        import yaml

        if self.is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, path or "the document", f"want a mapping, got {_kind(node)}")
        _constructor().flatten_mapping(node)  # YAML merge keys (<<), as yaml.v2 has them
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise self.fail(knode, path or "the document", "a key must be a plain value")
            key = knode.value
            where = f"{path}.{key}" if path else key
            if fields is not None and key not in fields:
                raise self.fail(knode, where, f"unknown field (known in {path or 'the document'}: "
                                              f"{', '.join(sorted(fields))})")
            if key in out:
                raise self.fail(knode, where, "set twice")
            out[key] = vnode
        return out

    def string(self, node, path: str) -> str:
        import yaml

        if self.is_null(node):
            return ""
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, path, f"want a string, got {_kind(node)}")
        return node.value

    def boolean(self, node, path: str) -> bool:
        import yaml

        if self.is_null(node):
            return False
        if isinstance(node, yaml.ScalarNode):
            v = node.value
            plain = node.style is None
            if plain and v in ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"):
                return True
            if plain and v in ("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"):
                return False
        raise self.fail(node, path, f"want true or false, got {_describe(node)}")

    def integer(self, node, path: str) -> int:
        import yaml

        if self.is_null(node):
            return 0
        if isinstance(node, yaml.ScalarNode) and node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
            value = _construct(node)
            if isinstance(value, (int, float)) and value == value and abs(value) < 2 ** 63:
                return int(value)
        raise self.fail(node, path, f"want an integer, got {_describe(node)}")

    def duration(self, node, path: str) -> float:
        """Go's time.Duration from YAML: an integer of nanoseconds or ParseDuration's syntax."""
        import yaml

        if self.is_null(node):
            return 0.0
        if isinstance(node, yaml.ScalarNode):
            if node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
                return self.integer(node, path) / 1e9
            if node.tag == "tag:yaml.org,2002:str":
                secs = parse_go_duration(node.value)
                if secs is not None:
                    return secs
        raise self.fail(node, path, f"want a Go duration such as 1s or 250ms, got {_describe(node)}")

    def strings(self, node, path: str) -> Optional[list]:
        """A sequence of (scalar) nodes, None for null; each item is returned as its node."""
        import yaml

        if self.is_null(node):
            return None
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, path, f"want a list, got {_kind(node)}")
        return list(node.value)


def _constructor():
    import yaml

    return yaml.constructor.SafeConstructor()


def _construct(node) -> Any:
    return _constructor().construct_object(node)


def _kind(node) -> str:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a " + node.tag.rsplit(":", 1)[-1] if node is not None else "nothing"


def _describe(node) -> str:
    import yaml

    if isinstance(node, yaml.ScalarNode):
        return repr(node.value)
    return _kind(node)


_GO_DUR = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> Optional[float]:
    """Go's time.ParseDuration in seconds (no ``d``/``w`` units, a unit always required except for
    ``0``), or None when it is not one."""
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        return None
    pos, total = 0, 0.0
    for m in _GO_DUR.finditer(s):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _GO_UNIT[m.group(2)]
        pos = m.end()
    return sign * total if pos == len(s) and pos > 0 else None


# ---------------------------------------------------------------------------------------------- parse

_TOP = {"tls_server_config", "http_server_config", "rate_limit", "basic_auth_users"}
_TLS = {"cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file", "cipher_suites",
        "curve_preferences", "min_version", "max_version", "prefer_server_cipher_suites", "client_allowed_sans"}
_HTTP = {"http2", "headers"}
_RATE = {"burst", "interval"}


def _join(base_dir: str, path: str) -> str:
    """prometheus/common's JoinDir: a relative path is relative to the config file's directory."""
    return path if not path or os.path.isabs(path) else os.path.join(base_dir, path)


def parse(text: str, path: str, flag: str = DEFAULT_FLAG) -> WebConfig:
    """The file's text as a :class:`WebConfig` (no file other than this one is read).

    Raises :class:`ConfigError` naming ``flag=path``, the line and the field: unknown or repeated
    fields, wrong types, unknown cipher/curve/TLS version names, headers exporter-toolkit does
    not allow."""
    import yaml

    where = f"{flag}={path}"
    d = _Doc(where)
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_node() if loader.check_node() else None  # the first document, as yaml.v2
    except yaml.MarkedYAMLError as e:  # the problem only: PyYAML's snippet could quote a secret
        mark = e.problem_mark or e.context_mark
        at = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{where}: invalid YAML: {at}{e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML: {type(e).__name__}") from None
    finally:
        loader.dispose()
    if isinstance(root, yaml.ScalarNode) and not d.is_null(root):
        raise d.fail(root, "the document", "want a mapping of tls_server_config, http_server_config, "
                                           "basic_auth_users and rate_limit, got a plain value")
    top = d.mapping(root, "", _TOP)
    base_dir = os.path.dirname(path)

    tls = TLSServerConfig()
    if "tls_server_config" in top:
        node = top["tls_server_config"]
        # a null section is Go's zero value: versions 0 (Go's defaults) and no server preference
        tls = TLSServerConfig(prefer_server_cipher_suites=False) if d.is_null(node) else tls
        values: dict[str, Any] = {}
        for key, vnode in d.mapping(node, "tls_server_config", _TLS).items():
            p = f"tls_server_config.{key}"
            if key in ("cipher_suites", "curve_preferences"):
                items = d.strings(vnode, p)
                names = []
                table: dict = CIPHERS if key == "cipher_suites" else CURVES
                what = "cipher" if key == "cipher_suites" else "curve"
                for item in items or ():
                    name = d.string(item, p)
                    if name not in table:
                        raise d.fail(item, p, f"unknown {what} {name!r} (known: {', '.join(table)})")
                    names.append(name)
                values[key] = tuple(names)
            elif key in ("min_version", "max_version"):
                name = d.string(vnode, p)
                if d.is_null(vnode):
                    name = "TLS12" if key == "min_version" else "TLS13"
                elif name not in TLS_VERSIONS:
                    raise d.fail(vnode, p, f"unknown TLS version {name!r} (known: {', '.join(TLS_VERSIONS)})")
                values[key] = name
            elif key == "prefer_server_cipher_suites":
                values[key] = d.boolean(vnode, p)
            elif key == "client_allowed_sans":
                items = d.strings(vnode, p)
                values[key] = None if items is None else tuple(d.string(i, p) for i in items)
            else:
                values[key] = d.string(vnode, p)
        for key in ("cert_file", "key_file", "client_ca_file"):
            if key in values:
                values[key] = _join(base_dir, values[key])
        tls = dataclasses.replace(tls, **values)

    http2, headers = True, ()
    if "http_server_config" in top:
        node = top["http_server_config"]
        http2 = not d.is_null(node)  # Go's zero value of the section has HTTP/2 off
        for key, vnode in d.mapping(node, "http_server_config", _HTTP).items():
            if key == "http2":
                http2 = d.boolean(vnode, "http_server_config.http2")
            else:
                headers = tuple(_headers(d, vnode))

    users: dict[bytes, bytes] = {}
    for name, vnode in d.mapping(top.get("basic_auth_users"), "basic_auth_users").items():
        users[name.encode("utf-8")] = d.string(vnode, f"basic_auth_users.{name}").encode("utf-8")

    rate = RateLimit()
    if "rate_limit" in top:
        values = {}
        for key, vnode in d.mapping(top["rate_limit"], "rate_limit", _RATE).items():
            if key == "burst":
                values["burst"] = d.integer(vnode, "rate_limit.burst")
            else:
                values["interval_s"] = d.duration(vnode, "rate_limit.interval")
        rate = RateLimit(**values)
    return WebConfig(path=path, tls=tls, http2=http2, headers=headers, users=users, rate_limit=rate)


def _headers(d: _Doc, node) -> list[tuple[str, str]]:
    out = []
    for name, vnode in d.mapping(node, "http_server_config.headers").items():
        p = f"http_server_config.headers.{name}"
        value = d.string(vnode, p)
        if name not in ALLOWED_HEADERS:
            raise d.fail(vnode, p, f"HTTP header {name!r} can not be configured (allowed: "
                                   f"{', '.join(ALLOWED_HEADERS)})")
        allowed = ALLOWED_HEADERS[name]
        if allowed is not None and value not in allowed:
            raise d.fail(vnode, p, f"invalid value {value!r}, want one of {', '.join(allowed)}")
        out.append((name, value))
    return out


def read(path: str, flag: str = DEFAULT_FLAG) -> WebConfig:
    """Read and :func:`parse` the file (no certificate is read)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{flag}={path}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{flag}={path}: not UTF-8 text (byte {e.start})") from None
    return parse(text, path, flag)


# ---------------------------------------------------------------------------------------------- checks

def bcrypt_problem(hashed: bytes) -> Optional[str]:
    """Why ``hashed`` is not a bcrypt hash we can check, or None. Go's ``bcrypt.Cost`` rules (at
    least 59 bytes, ``$``, major version 2 or lower, two-digit cost 4..31), plus the variants the
    ``bcrypt`` package checks (``$2a$``, ``$2b$``, ``$2x$``, ``$2y$``)."""
    if len(hashed) < 59:
        return "too short to be a bcrypt hash"
    if hashed[:1] != b"$":
        return "a bcrypt hash starts with '$'"
    if hashed[1:2] > b"2":
        return "bcrypt version newer than 2"
    if hashed[3:4] != b"$" or hashed[1:3] not in (b"2a", b"2b", b"2x", b"2y"):
        return "unsupported bcrypt variant (want $2a$, $2b$ or $2y$)"
    cost = hashed[4:6]
    if not cost.isdigit() or hashed[6:7] != b"$":
        return "no cost in the bcrypt hash"
    if not 4 <= int(cost) <= 31:
        return f"bcrypt cost {int(cost)} is outside 4..31"
    return None


def validate_users(cfg: WebConfig, flag: str = DEFAULT_FLAG) -> None:
    """Every ``basic_auth_users`` value must be a bcrypt hash (exporter-toolkit's validateUsers);
    the error names the user, never the hash."""
    for user, hashed in cfg.users.items():
        why = bcrypt_problem(hashed)
        if why is not None:
            name = user.decode("utf-8", "replace")
            raise ConfigError(f"{flag}={cfg.path}: basic_auth_users.{name}: {why}")


def tls_files(cfg: WebConfig) -> tuple[str, ...]:
    """The files the TLS section reads (watched for changes by the listener)."""
    t = cfg.tls
    return tuple(p for p in (t.cert_file, t.key_file, t.client_ca_file) if p)


def _read_file(path: str, where: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {e.strerror or e}") from None


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.S)


def tls_context(cfg: WebConfig, flag: str = DEFAULT_FLAG) -> Optional[ssl.SSLContext]:
    """The server context of the TLS section (exporter-toolkit's ConfigToTLSConfig), None when the
    file has no TLS settings (plain HTTP). Reads the certificate, key and client CA files now;
    raises :class:`ConfigError` naming the field."""
    t = cfg.tls
    where = f"{flag}={cfg.path}: tls_server_config"
    if not t.enabled:
        return None
    if not t.cert_file and not t.cert:
        raise ConfigError(f"{where}: missing one of cert or cert_file")
    if not t.key_file and not t.key:
        raise ConfigError(f"{where}: missing one of key or key_file")
    cert = _read_file(t.cert_file, f"{where}.cert_file") if t.cert_file else t.cert.encode("utf-8")
    key = _read_file(t.key_file, f"{where}.key_file") if t.key_file else t.key.encode("utf-8")

    auth = t.client_auth_type
    if auth not in ("",) + CLIENT_AUTH_TYPES + ("RequireClientCert",):
        raise ConfigError(f"{where}.client_auth_type: invalid value {auth!r} (want one of "
                          f"{', '.join(CLIENT_AUTH_TYPES)})")
    if auth in ("RequireAnyClientCert", "RequireClientCert"):
        raise ConfigError(f"{where}.client_auth_type: {auth} (a client certificate accepted without verifying it) "
                          "cannot be served by Python's TLS, which verifies every certificate it asks for: use "
                          "RequireAndVerifyClientCert with client_ca_file")
    has_ca = bool(t.client_ca_file or t.client_ca)
    if has_ca and auth in ("", "NoClientCert"):
        raise ConfigError(f"{where}: client CA's have been configured without a Client Auth Policy "
                          "(client_ca_file or client_ca needs client_auth_type)")
    if t.client_allowed_sans is not None and auth == "RequestClientCert":
        raise ConfigError(f"{where}.client_allowed_sans: needs client_auth_type VerifyClientCertIfGiven or "
                          "RequireAndVerifyClientCert (Python's TLS cannot read a certificate it did not verify)")
    if cfg.http2 and t.cipher_suites and TLS_VERSIONS[t.min_version] < ssl.TLSVersion.TLSv1_3 \
            and not H2_REQUIRED_CIPHERS & set(t.cipher_suites):
        raise ConfigError(f"{where}.cipher_suites: with http_server_config.http2 (the default) the list needs "
                          "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 "
                          "(HTTP/2's required cipher, as Go checks)")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[t.min_version]
    ctx.maximum_version = TLS_VERSIONS[t.max_version]
    if t.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        if t.cipher_suites:
            tls12 = [CIPHERS[c] for c in t.cipher_suites if CIPHERS[c]]
            if tls12:
                ctx.set_ciphers(":".join(tls12))
            else:  # only TLS 1.3 names: Go's TLS 1.2 handshakes find no suite, TLS 1.3 goes on
                ctx.set_ciphers(_GO_DEFAULT_CIPHERS)
                ctx.minimum_version = max(ctx.minimum_version, ssl.TLSVersion.TLSv1_3)
        else:
            ctx.set_ciphers(_GO_DEFAULT_CIPHERS)
    except ssl.SSLError as e:
        raise ConfigError(f"{where}.cipher_suites: not available in this OpenSSL: {e.reason or e}") from None
    if t.curve_preferences:
        groups = [CURVES[c] for c in t.curve_preferences]
        set_groups: Optional[Callable] = getattr(ctx, "set_groups", None)
        try:
            if set_groups is not None:
                set_groups(":".join(groups))
            else:
                ctx.set_ecdh_curve(groups[0])
        except (ssl.SSLError, ValueError) as e:
            raise ConfigError(f"{where}.curve_preferences: not available in this OpenSSL: {e}") from None

    try:
        with _pem_path(cert) as cert_path, _pem_path(key) as key_path:
            ctx.load_cert_chain(cert_path, key_path, password=_no_password)
    except (ssl.SSLError, OSError, TypeError) as e:
        what = (f"cert_file {t.cert_file}" if t.cert_file else "cert") + " and " + \
               (f"key_file {t.key_file}" if t.key_file else "key")
        reason = getattr(e, "reason", None) or str(e)
        raise ConfigError(f"{where}: failed to load the X509 key pair ({what}): {reason}") from None

    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        ctx.verify_mode = ssl.CERT_OPTIONAL if auth == "VerifyClientCertIfGiven" else ssl.CERT_REQUIRED
        if has_ca:
            ca = _read_file(t.client_ca_file, f"{where}.client_ca_file") if t.client_ca_file \
                else t.client_ca.encode("utf-8")
            # Go's AppendCertsFromPEM: every parsable CERTIFICATE block, the rest ignored (an empty
            # pool refuses every client certificate)
            for block in _PEM_CERT.findall(ca):
                try:
                    ctx.load_verify_locations(cadata=block.decode("ascii", "replace"))
                except (ssl.SSLError, ValueError):
                    pass
        else:  # Go verifies against the system roots when no client CA is given
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    elif has_ca and t.client_ca_file:
        _read_file(t.client_ca_file, f"{where}.client_ca_file")  # read (and so checked) as Go does
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _no_password() -> bytes:
    raise TypeError("the private key is encrypted (exporter-toolkit reads unencrypted keys only)")


class _pem_path:
    """PEM bytes as a path OpenSSL can open, in memory (memfd): inline keys never touch a disk."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.fd = -1

    def __enter__(self) -> str:
        self.fd = os.memfd_create("pythanos-webconfig", os.MFD_CLOEXEC)
        os.write(self.fd, self.data)
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def load(path: str, flag: str = DEFAULT_FLAG) -> tuple[WebConfig, Optional[ssl.SSLContext]]:
    """Everything Thanos checks before it listens (exporter-toolkit's Validate): the file, the
    users' hashes and the TLS section with its files. Raises :class:`UserError` (a ConfigError)
    naming the flag, the file and the field."""
    if not path:
        raise UserError(f"{flag}: empty path")
    cfg = read(path, flag)
    validate_users(cfg, flag)
    return cfg, tls_context(cfg, flag)
