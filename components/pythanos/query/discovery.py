"""Where the querier's endpoints come from: static addresses with Thanos' DNS prefixes, file SD
(``--store.sd-files``) and the endpoint SD config (``--endpoint.sd-config[-file]``).

Address forms (``pkg/discovery/dns``): ``host:port`` as it is; ``dns+host:port`` an A/AAAA lookup
(port required); ``dnssrv+_svc._tcp.name`` an SRV lookup then A lookups of each target (port from
SRV unless given); ``dnssrvnoa+name`` SRV targets as they are. Lookups that fail keep the last
good answer, as Thanos' provider does, and are logged.
"""
from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Optional, Sequence

import yaml

from ..errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["EndpointSpec", "Discovery", "parse_sd_config", "read_sd_files", "split_dns_prefix"]

DNS_PREFIXES = ("dns+", "dnssrv+", "dnssrvnoa+", "dnsdualstack+")


@dataclass(frozen=True)
class EndpointSpec:
    """One configured address (before DNS) and whether it is strict (kept even when unhealthy)."""

    address: str
    strict: bool = False


def split_dns_prefix(addr: str) -> tuple[str, str]:
    """``("dns+", "host:port")`` or ``("", addr)``."""
    for p in DNS_PREFIXES:
        if addr.startswith(p):
            return p, addr[len(p):]
    return "", addr


def _host_port(hp: str, where: str, need_port: bool = True) -> tuple[str, Optional[int]]:
    host, sep, port = hp.rpartition(":")
    if not sep or not host:
        if need_port:
            raise ConfigError(f"{where}: address {hp!r} needs a port (host:port)")
        return hp, None
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"{where}: bad port in {hp!r}") from None
    if not 0 < p < 65536:
        raise ConfigError(f"{where}: port out of range in {hp!r}")
    return host.strip("[]"), p


def validate_address(addr: str, where: str) -> None:
    """Reject what cannot work before anything starts (flag errors name the flag)."""
    prefix, rest = split_dns_prefix(addr)
    if not rest:
        raise ConfigError(f"{where}: empty address")
    if prefix in ("", "dns+", "dnsdualstack+"):
        _host_port(rest, where)


def parse_sd_config(text: str, where: str) -> list[EndpointSpec]:
    """``--endpoint.sd-config`` YAML: ``endpoints: [{address, strict, group}]``; TLS and
    compression settings are read but only plaintext is supported (a clear error otherwise)."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping with 'endpoints'")
    unknown = set(doc) - {"endpoints", "default_client_config"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    tls = ((doc.get("default_client_config") or {}).get("tls_config") or {})
    if tls.get("enabled"):
        raise ConfigError(f"{where}: default_client_config.tls_config.enabled: TLS to endpoints is not supported yet")
    out = []
    for i, ep in enumerate(doc.get("endpoints") or []):
        if not isinstance(ep, dict) or not ep.get("address"):
            raise ConfigError(f"{where}: endpoints[{i}]: 'address' is required")
        if ep.get("group"):
            raise ConfigError(f"{where}: endpoints[{i}].group: endpoint groups are not supported yet")
        if ((ep.get("client_config") or {}).get("tls_config") or {}).get("enabled"):
            raise ConfigError(f"{where}: endpoints[{i}].client_config.tls_config: TLS is not supported yet")
        addr = str(ep["address"])
        strict = bool(ep.get("strict", False))
        if strict and split_dns_prefix(addr)[0]:
            raise ConfigError(f"{where}: endpoints[{i}]: a strict endpoint cannot use DNS discovery ({addr})")
        validate_address(addr, f"{where}: endpoints[{i}].address")
        out.append(EndpointSpec(addr, strict))
    return out


def read_sd_files(patterns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Prometheus file-SD files (JSON or YAML lists of ``{targets, labels}``): (targets, errors).
    A file that cannot be read or parsed is reported and skipped; the others still count."""
    targets: list[str] = []
    errors: list[str] = []
    for pat in patterns:
        for path in sorted(glob.glob(pat)) or ([pat] if not glob.has_magic(pat) else []):
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
            except (OSError, ValueError, yaml.YAMLError) as e:
                errors.append(f"{path}: {e}")
                continue
            if doc is None:
                continue
            if not isinstance(doc, list):
                errors.append(f"{path}: expected a list of target groups")
                continue
            for i, group in enumerate(doc):
                ts = group.get("targets") if isinstance(group, dict) else None
                if not isinstance(ts, list):
                    errors.append(f"{path}: group {i}: 'targets' must be a list")
                    continue
                targets.extend(str(t) for t in ts)
    return targets, errors


def _mtimes(patterns: Sequence[str]) -> tuple:
    out = []
    for pat in patterns:
        for path in sorted(glob.glob(pat)):
            try:
                st = os.stat(path)
                out.append((path, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((path, None, None))
    return tuple(out)


@dataclass
class Discovery:
    """Resolves the configured endpoints into addresses, on demand (:meth:`addresses`).

    ``static``: flag addresses; ``sd_files``: file SD patterns (re-read when they change or every
    ``sd_interval``); ``sd_config_file``: endpoint SD config (re-read when it changes or every
    ``sd_config_interval``)."""

    static: list[EndpointSpec] = field(default_factory=list)
    sd_files: list[str] = field(default_factory=list)
    sd_config_file: str = ""
    dns_interval: float = 30.0
    sd_interval: float = 300.0
    sd_config_interval: float = 300.0
    dns_server: str = ""  # host:port to ask instead of the system resolver (pythanos only)
    _file_targets: list[str] = field(default_factory=list)
    _file_state: tuple = ()
    _file_read_at: float = float("-inf")
    _cfg_specs: list[EndpointSpec] = field(default_factory=list)
    _cfg_state: tuple = ()
    _cfg_read_at: float = float("-inf")
    _dns: dict = field(default_factory=dict)  # address -> (resolved_at, [host:port])

    def _reload_files(self, now: float) -> None:
        if self.sd_files:
            state = _mtimes(self.sd_files)
            if state != self._file_state or now - self._file_read_at >= self.sd_interval:
                targets, errors = read_sd_files(self.sd_files)
                for e in errors:
                    log.error("failed to read file SD", extra={"err": e})
                if targets or not errors:
                    self._file_targets = targets
                self._file_state, self._file_read_at = state, now
        if self.sd_config_file:
            state = _mtimes([self.sd_config_file])
            if state != self._cfg_state or now - self._cfg_read_at >= self.sd_config_interval:
                try:
                    with open(self.sd_config_file, encoding="utf-8") as f:
                        self._cfg_specs = parse_sd_config(f.read(), f"--endpoint.sd-config-file={self.sd_config_file}")
                except (OSError, ConfigError) as e:
                    log.error("failed to reload endpoint SD config; keeping the previous one", extra={"err": str(e)})
                self._cfg_state, self._cfg_read_at = state, now

    def specs(self, now: float) -> list[EndpointSpec]:
        self._reload_files(now)
        seen: dict[str, EndpointSpec] = {}
        for s in [*self.static, *self._cfg_specs, *(EndpointSpec(t) for t in self._file_targets)]:
            if s.address not in seen or s.strict:
                seen[s.address] = s
        return list(seen.values())

    async def addresses(self, now: float) -> dict[str, bool]:
        """address -> strict, after DNS (cached ``dns_interval``)."""
        out: dict[str, bool] = {}
        for spec in self.specs(now):
            prefix, rest = split_dns_prefix(spec.address)
            if not prefix:
                out[rest] = out.get(rest, False) or spec.strict
                continue
            cached = self._dns.get(spec.address)
            if cached is None or now - cached[0] >= self.dns_interval:
                try:
                    found = await resolve(prefix, rest, self.dns_server)
                    self._dns[spec.address] = (now, found)
                except (OSError, ConfigError, Exception) as e:  # noqa: BLE001 - keep the last good answer
                    log.error("failed to resolve endpoint address", extra={"address": spec.address, "err": str(e)})
                    if cached is None:
                        self._dns[spec.address] = (now, [])
            for a in self._dns.get(spec.address, (0, []))[1]:
                out.setdefault(a, False)
        return out


async def resolve(prefix: str, rest: str, server: str = "") -> list[str]:
    """One DNS lookup in Thanos' style; ``host:port`` strings. Without ``server``, A/AAAA
    lookups use the system's resolver (``/etc/hosts`` included) and SRV lookups
    ``/etc/resolv.conf`` (nameservers, search list, ndots); with it, every lookup asks that server
    for the name as given."""
    if prefix in ("dns+", "dnsdualstack+"):
        host, port = _host_port(rest, prefix + rest)
        if server:
            ips, errors = [], []
            for rdtype in ("A", "AAAA"):  # one family failing is fine when the other answers
                try:
                    ips += await _lookup(server, host, rdtype)
                except Exception as e:  # noqa: BLE001 - dns.exception.DNSException and socket errors
                    errors.append(e)
            if not ips and errors:
                raise errors[0]
        else:
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM)
            ips = [sa[0] for *_, sa in infos]
        addrs = []
        for ip in ips:
            a = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
            if a not in addrs:
                addrs.append(a)
        return addrs
    name, _, port_s = rest.partition(":")
    port = int(port_s) if port_s else None
    out = []
    for target, srv_port in await _lookup(server, name, "SRV"):
        p = port or srv_port
        if prefix == "dnssrvnoa+":
            out.append(f"{target}:{p}")
            continue
        for a in await resolve("dns+", f"{target}:{p}", server):
            if a not in out:
                out.append(a)
    return out


async def _lookup(server: str, name: str, rdtype: str) -> list:
    import dns.asyncresolver
    import dns.resolver

    res = dns.asyncresolver.Resolver(configure=not server)
    if server:
        host, port = _host_port(server, "--store.sd-dns-server")
        res.nameservers = [host]
        res.port = port
    try:
        # With the system's resolv.conf, its search list and ndots apply as they do for getaddrinfo (and for
        # Thanos' resolvers): in a pod, dnssrv+_grpc._tcp.<svc>.<ns>.svc is found as <...>.svc.cluster.local.
        ans = await res.resolve(name, rdtype, search=not server)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    if rdtype == "SRV":
        return [(str(r.target).rstrip("."), r.port) for r in ans]
    return [r.address for r in ans]
