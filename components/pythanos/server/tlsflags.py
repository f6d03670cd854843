"""HTTPS on an extra listener from Thanos-style server TLS flags (Thanos v0.42's ``pkg/tls``
``NewServerConfig``), for the receiver's ``--remote-write.server-tls-*``.

The checks and their order are Thanos': no certificate and no key is plain HTTP (a client CA alone
is an error), one without the other is an error, then the minimum version, the cipher suites and
the curves by their Go names. A client CA means clients must present a certificate it signed
(Go's ``RequireAndVerifyClientCert``). The files are read with :mod:`pythanos.tlsconfig`'s
checked readers (errors name the flag and the file), and the :class:`ssl.SSLContext` is built by
:func:`pythanos.server.webconfig.tls_context`, the one that serves ``--http.config``: one reader
and one context builder for every HTTPS port.

:class:`FlagServerTLS` is what :class:`pythanos.server.httpguard.TLSSite` asks for a context at
every new connection: the certificate, key and client CA files are checked (``stat``) and re-read
when they changed, so rotated certificates need no restart, as Thanos' ``getCertificate``. A
change that does not load (half-written file, key not matching) is logged and the previous context
stays in use.
"""
from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from typing import Optional, Sequence

from ..errors import ConfigError, UserError
from ..tlsconfig import TLS_VERSIONS, ServerTLS, _stamp, check_ciphers, parse_curves
from . import webconfig

log = logging.getLogger(__name__)

__all__ = ["HTTPServerTLS", "FlagServerTLS", "server_tls_from_flags"]

_VERSION_NAMES = {"1.0": "TLS10", "1.1": "TLS11", "1.2": "TLS12", "1.3": "TLS13"}


@dataclass(frozen=True)
class HTTPServerTLS:
    """The settings; ``prefix`` is the flags' common prefix (``--remote-write.server-tls-``)."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""
    min_version: str = "1.3"
    ciphers: tuple[str, ...] = ()
    curves: tuple[str, ...] = ()
    prefix: str = "--remote-write.server-tls-"

    def flag(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def files(self) -> ServerTLS:
        """The files, with the checked readers of the gRPC server TLS (errors name these flags)."""
        return ServerTLS(self.cert_file, self.key_file, self.client_ca_file, self.min_version,
                         names=(self.flag("cert"), self.flag("key"), self.flag("client-ca")))

    def context(self) -> ssl.SSLContext:
        """A server context from the files as they are now; UserError naming the flag and file."""
        self.files().load()
        cfg = webconfig.WebConfig(path=self.cert_file, http2=False, tls=webconfig.TLSServerConfig(
            cert_file=self.cert_file, key_file=self.key_file, client_ca_file=self.client_ca_file,
            client_auth_type="RequireAndVerifyClientCert" if self.client_ca_file else "",
            cipher_suites=self.ciphers, curve_preferences=self.curves,
            min_version=_VERSION_NAMES[self.min_version], max_version="TLS13"))
        ctx = webconfig.tls_context(cfg, self.flag("cert"))
        assert ctx is not None
        return ctx


def server_tls_from_flags(cert: str, key: str, client_ca: str, min_version: str, ciphers: Sequence[str],
                          curves: Sequence[str], prefix: str = "--remote-write.server-tls-") -> Optional[HTTPServerTLS]:
    """Thanos' ``NewServerConfig`` checks: None for plain HTTP, else the settings with every file
    read and a context built once (so a bad file stops start-up, as in Thanos)."""
    if not cert and not key:
        if client_ca:
            raise UserError(f"{prefix}client-ca={client_ca}: when a client CA is used a server key and certificate "
                            f"must also be provided ({prefix}cert, {prefix}key)")
        return None
    if not (cert and key):
        given, other = ("cert", "key") if cert else ("key", "cert")
        raise UserError(f"{prefix}{given}: both server key and certificate must be provided ({prefix}{other} is "
                        "empty)")
    if min_version not in TLS_VERSIONS:
        raise UserError(f"{prefix}min-version: invalid TLS version: {min_version}, valid values are "
                        f"{', '.join(TLS_VERSIONS)}")
    names = check_ciphers(ciphers, f"{prefix}ciphers")
    if names and min_version != "1.3" and not webconfig.H2_REQUIRED_CIPHERS & set(names):
        # Go's HTTP/2 server setup, which Thanos' listener goes through, refuses such a list
        raise UserError(f"{prefix}ciphers: http2: TLSConfig.CipherSuites is missing an HTTP/2-required "
                        "AES_128_GCM_SHA256 cipher (need at least one of TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or "
                        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)")
    want = parse_curves(curves, f"{prefix}curves")
    for name in want:
        if name not in webconfig.CURVES:
            raise UserError(f"{prefix}curves: {name} is not available to Python's TLS (it offers "
                            f"{', '.join(webconfig.CURVES)})")
    tls = HTTPServerTLS(cert, key, client_ca, min_version, names, want, prefix)
    try:
        tls.context()
    except ConfigError as e:
        raise UserError(str(e)) from None
    return tls


class FlagServerTLS:
    """The current context for each new connection (the ``guard`` :class:`TLSSite` takes)."""

    tls = True

    def __init__(self, settings: HTTPServerTLS) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        self._failed: tuple = ()
        self._ctx = settings.context()
        log.info("enabling server side TLS", extra={"cert": settings.cert_file,
                                                     "client_ca": settings.client_ca_file or None})

    def _files_stamp(self) -> tuple:
        s = self.settings
        return _stamp((s.cert_file, s.key_file, s.client_ca_file))

    def tls_for_connection(self) -> tuple[Optional[ssl.SSLContext], None]:
        with self._lock:
            st = self._files_stamp()
            if st != self._stamp and st != self._failed:
                try:
                    ctx = self.settings.context()
                except UserError as e:
                    self._failed = st
                    log.error("cannot reload the server certificate; keeping the previous one",
                              extra={"err": str(e)})
                else:
                    if self._files_stamp() == st:  # else changed while read: again at the next connection
                        self._ctx, self._stamp, self._failed = ctx, st, ()
                        log.info("reloaded the server certificate", extra={"cert": self.settings.cert_file})
            return self._ctx, None
