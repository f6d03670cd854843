"""Throw-away PKI for tests: a CA and a certificate it signs (openssl CLI), and the Secret that carries them.

``make_pki(dir, dns_name)`` writes ``ca.crt``, ``ca.key``, ``tls.crt`` and ``tls.key`` (EC P-256, a day long;
the leaf has the DNS name as SAN and both server and client usage, so one Secret serves both ends of gRPC
mutual TLS, as with a cert-manager Certificate). ``reissue`` signs a new leaf with the same CA;
``tls_secret`` builds the Secret manifest.
"""
from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from pathlib import Path

from peers import find_binary, missing


@dataclass(frozen=True)
class PKI:
    dir: Path
    dns_name: str

    def read(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.stderr}")


def _leaf(d: Path, dns_name: str) -> None:
    (d / "leaf.ext").write_text(f"subjectAltName=DNS:{dns_name}\nextendedKeyUsage=serverAuth,clientAuth\n"
                                "keyUsage=digitalSignature\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "tls.key",
             "-out", "tls.csr", "-subj", f"/CN={dns_name}", cwd=d)
    _openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "tls.crt", "-days", "1", "-extfile", "leaf.ext", cwd=d)


def make_pki(d: Path, dns_name: str, ca_name: str = "test-ca") -> PKI:
    if not find_binary("openssl"):
        missing("openssl (to generate test certificates)")
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", f"/CN={ca_name}", cwd=d)
    _leaf(d, dns_name)
    return PKI(d, dns_name)


def reissue(pki: PKI) -> PKI:
    """A new certificate and key from the same CA (a renewal: what cert-manager does before expiry)."""
    _leaf(pki.dir, pki.dns_name)
    return pki


def tls_secret(name: str, pki: PKI, *, keys: tuple[str, ...] = ("tls.crt", "tls.key", "ca.crt"),
               rename: dict[str, str] | None = None) -> dict:
    """A kubernetes.io/tls Secret with ``keys`` of the PKI (``rename`` maps a file name to another key)."""
    rename = rename or {}
    data = {rename.get(k, k): base64.b64encode(pki.read(k)).decode() for k in keys}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "kubernetes.io/tls" if {"tls.crt", "tls.key"} <= set(data) else "Opaque", "data": data}
