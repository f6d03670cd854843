"""Thanos' DNS address prefixes (``pkg/discovery/dns``): ``dns+host:port`` (A/AAAA),
``dnssrv+name`` (SRV then A/AAAA), ``dnssrvnoa+name`` (SRV targets as they are),
``dnsdualstack+``. Shared by every component that dials configured addresses (the querier's
endpoints, the ruler's ``--query`` servers), so it lives below them.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Optional

from .errors import ConfigError

__all__ = ["DNS_PREFIXES", "split_dns_prefix", "host_port", "resolve"]

DNS_PREFIXES = ("dns+", "dnssrv+", "dnssrvnoa+", "dnsdualstack+")


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


host_port = _host_port


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
