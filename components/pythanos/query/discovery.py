"""Where the querier's endpoints come from: static addresses with Thanos' DNS prefixes, file SD
(``--store.sd-files``) and the endpoint SD config (``--endpoint.sd-config[-file]``), each with
the TLS settings to dial it.

Address forms (``pkg/discovery/dns``): ``host:port`` as it is; ``dns+host:port`` an A/AAAA lookup
(port required); ``dnssrv+_svc._tcp.name`` an SRV lookup then A lookups of each target (port from
SRV unless given); ``dnssrvnoa+name`` SRV targets as they are. Lookups that fail keep the last
good answer, as Thanos' provider does, and are logged.

TLS (Thanos v0.42 ``cmd/thanos/endpointset.go``): flag and file SD endpoints are dialled with the
*default* client settings: the SD config's ``default_client_config`` when it sets anything (it
then replaces the ``--grpc-client-tls-*`` flags), else the flags. An SD config endpoint with its
own ``client_config`` gets: with ``tls_config.enabled`` given, exactly its own settings (unset
fields take Thanos' defaults); without it, its fields over the default's (TLS turned on by any of
cert_file, key_file, ca_file, insecure_skip_verify). One difference: Thanos dials the addresses
a ``dns+``/``dnssrv+`` entry resolves to with the default settings even when the entry has its
own; here the entry's own settings apply to them.

Endpoint groups (``--endpoint-group[-strict]``, ``group: true``; Thanos v0.42 ``thanos:///``
endpoints): one endpoint named ``thanos:///<address>`` whose calls go to one of its members. The
address is handed to grpcio as one target, resolved by grpcio's own DNS resolver: ``dns+name:port``
(and ``dnsdualstack+``) becomes ``dns:///name:port`` balanced round-robin over every A/AAAA
address (service config: Thanos' default or the entry's ``service_config``); a plain
``host:port`` is one address as in Thanos (which hands it to gRPC unresolved), i.e. pick_first
over what the name resolves to. ``--store.sd-dns-server`` becomes the target's DNS authority
(``dns://server/name:port``). grpcio's resolver looks again only when a connection drops, while
Thanos resolves groups every ``--store.sd-dns-interval``: the name is looked up here at that
interval too and a changed answer makes the group dial again (grpcio then resolves it anew).
``dnssrv+``/``dnssrvnoa+`` groups are refused: grpcio's resolver reads A/AAAA records only.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import yaml

from ..dnsresolve import _host_port, resolve, split_dns_prefix  # resolve/split_dns_prefix re-exported
from ..errors import ConfigError, UserError
from ..filesd import file_stamps, read_sd_files  # read_sd_files re-exported
from ..tlsconfig import ClientTLS, parse_min_version

log = logging.getLogger(__name__)

__all__ = ["EndpointSpec", "EndpointConfig", "Target", "GroupDial", "Discovery", "parse_sd_config",
           "parse_endpoint_config", "read_sd_files", "split_dns_prefix", "validate_group_address", "GROUP_SCHEME"]

#: what Thanos v0.42 puts before a group's address: its name in /api/v1/stores, logs and errors
GROUP_SCHEME = "thanos:///"


@dataclass(frozen=True)
class EndpointSpec:
    """One configured address (before DNS), whether it is strict (kept even when unhealthy), its
    own TLS settings (None: the default ones), and whether it is an endpoint group (with the
    gRPC service config from its entry; empty: Thanos' default)."""

    address: str
    strict: bool = False
    tls: Optional[ClientTLS] = None
    group: bool = False
    service_config: str = ""

    @property
    def name(self) -> str:
        """The endpoint's name: its address, ``thanos:///<address>`` for a group (as Thanos)."""
        return GROUP_SCHEME + self.address if self.group else self.address


@dataclass(frozen=True)
class EndpointConfig:
    """A parsed ``--endpoint.sd-config``: its endpoints and ``default_client_config`` (None when
    it sets nothing: the ``--grpc-client-tls-*`` flags apply)."""

    endpoints: list[EndpointSpec]
    default_tls: Optional[ClientTLS] = None


@dataclass(frozen=True)
class GroupDial:
    """How a group is dialled: the grpcio target (``dns:///name:port``), the service config
    (empty: Thanos' default) and whether calls are balanced over every address (``dns+``) or
    go to the first that answers (a plain ``host:port``)."""

    target: str
    service_config: str = ""
    balanced: bool = True


@dataclass(frozen=True)
class Target:
    """A discovered endpoint: strict or not, how to dial it, and for a group how it is dialled
    and its members as last looked up here (which change makes it dial again)."""

    strict: bool
    tls: ClientTLS
    group: Optional[GroupDial] = None
    members: tuple[str, ...] = ()


def validate_address(addr: str, where: str) -> None:
    """Reject what cannot work before anything starts (flag errors name the flag)."""
    prefix, rest = split_dns_prefix(addr)
    if not rest:
        raise ConfigError(f"{where}: empty address")
    if prefix in ("", "dns+", "dnsdualstack+"):
        _host_port(rest, where)


def validate_group_address(addr: str, where: str) -> None:
    """An endpoint group's address: ``host:port`` or ``dns+``/``dnsdualstack+`` ``name:port``."""
    prefix, _ = split_dns_prefix(addr)
    if prefix in ("dnssrv+", "dnssrvnoa+"):
        raise ConfigError(f"{where}: an endpoint group cannot use {prefix} (SRV) discovery here: its name is resolved "
                          "by gRPC's DNS resolver, which reads A/AAAA records only; use dns+<name>:<port>")
    validate_address(addr, where)


def grpc_target(addr: str, dns_server: str = "") -> GroupDial:
    """The grpcio target of a group address (see the module docstring)."""
    prefix, rest = split_dns_prefix(addr)
    authority = dns_server if prefix else ""
    return GroupDial(f"dns://{authority}/{rest}", balanced=bool(prefix))


def _service_config(raw, where: str) -> str:
    """A group's ``service_config`` (gRPC service config JSON), checked by grpcio itself."""
    if raw is None or raw == "":
        return ""
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: expected a string holding gRPC service config JSON, got {raw!r}")
    from ..storeapi.client import check_service_config

    try:
        check_service_config(raw)
    except ValueError as e:
        raise ConfigError(f"{where}: invalid gRPC service config: {e}") from None
    return raw


def parse_sd_config(text: str, where: str, client_tls: Optional[ClientTLS] = None) -> list[EndpointSpec]:
    """The endpoints of an ``--endpoint.sd-config`` document (see :func:`parse_endpoint_config`)."""
    return parse_endpoint_config(text, where, client_tls).endpoints


_TLS_BOOLS = ("enabled", "insecure_skip_verify")
_TLS_STRS = ("cert_file", "key_file", "ca_file", "min_version")


def _tls_fields(raw, where: str) -> dict:
    """The ``tls_config`` fields given (unset ones absent: Thanos tells unset from empty)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(raw) - set(_TLS_BOOLS) - set(_TLS_STRS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    out = {}
    for k, v in raw.items():
        if v is None:
            continue
        if k in _TLS_BOOLS and not isinstance(v, bool):
            raise ConfigError(f"{where}.{k}: expected true or false, got {v!r}")
        if k in _TLS_STRS:
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise ConfigError(f"{where}.{k}: expected a string, got {v!r}")
            v = str(v)
            if k == "min_version":
                try:
                    v = parse_min_version(v, f"{where}.min_version")
                except UserError as e:
                    raise ConfigError(str(e)) from None
        out[k] = v
    return out


def _client_config(raw, where: str) -> tuple[dict, str]:
    """(tls_config fields given, server_name) of a ``client_config`` / ``default_client_config``."""
    if raw is None:
        return {}, ""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(raw) - {"tls_config", "server_name", "compression"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    name = raw.get("server_name") or ""
    if not isinstance(name, str):
        raise ConfigError(f"{where}.server_name: expected a string, got {name!r}")
    return _tls_fields(raw.get("tls_config"), f"{where}.tls_config"), name


def _client_tls(fields: dict, server_name: str, fallback: Optional[ClientTLS], where: str) -> ClientTLS:
    """Thanos' ``applyDefaults``: given fields, else the fallback's, else the defaults; TLS is on
    when asked, or when a certificate, key, CA or skip-verify is given, or when the fallback is."""
    fb = fallback or ClientTLS()
    enabled = fields.get("enabled")
    if enabled is None:
        given = any(k in fields for k in ("cert_file", "key_file", "ca_file", "insecure_skip_verify"))
        enabled = True if given else (fb.enabled if fallback is not None else False)
    tls = ClientTLS(enabled=enabled, cert_file=fields.get("cert_file", fb.cert_file),
                    key_file=fields.get("key_file", fb.key_file), ca_file=fields.get("ca_file", fb.ca_file),
                    server_name=server_name, skip_verify=fields.get("insecure_skip_verify", fb.skip_verify),
                    min_version=fields.get("min_version", fb.min_version if fallback is not None else "1.3"),
                    where=where)
    try:
        tls.validate()
    except UserError as e:
        raise ConfigError(str(e)) from None
    return tls


def parse_endpoint_config(text: str, where: str, client_tls: Optional[ClientTLS] = None) -> EndpointConfig:
    """``--endpoint.sd-config`` YAML (Thanos' ``EndpointConfig``): ``default_client_config`` and
    ``endpoints: [{address, strict, group, service_config, client_config}]``; ``client_tls`` are the
    ``--grpc-client-tls-*`` flags (what an endpoint falls back to without a default). Every TLS
    file named is read and checked now; errors name the field."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping with 'endpoints'")
    unknown = set(doc) - {"endpoints", "default_client_config"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    default_tls = None
    fields, name = _client_config(doc.get("default_client_config"), f"{where}: default_client_config")
    if fields or name:  # it replaces the flags
        default_tls = _client_tls(fields, name, None, f"{where}: default_client_config")
    fallback = default_tls if default_tls is not None else (client_tls or ClientTLS())
    out = []
    endpoints = doc.get("endpoints") or []
    if not isinstance(endpoints, list):
        raise ConfigError(f"{where}: endpoints: expected a list")
    for i, ep in enumerate(endpoints):
        if not isinstance(ep, dict) or not ep.get("address"):
            raise ConfigError(f"{where}: endpoints[{i}]: 'address' is required")
        group = ep.get("group", False)
        if group is None:
            group = False
        if not isinstance(group, bool):
            raise ConfigError(f"{where}: endpoints[{i}].group: expected true or false, got {group!r}")
        addr = str(ep["address"])
        strict = bool(ep.get("strict", False))
        kind = "a strict endpoint group" if group else "a strict endpoint"
        if strict and split_dns_prefix(addr)[0]:
            raise ConfigError(f"{where}: endpoints[{i}]: {kind} cannot use DNS discovery ({addr})")
        if group:
            validate_group_address(addr, f"{where}: endpoints[{i}].address")
        else:
            validate_address(addr, f"{where}: endpoints[{i}].address")
            if ep.get("service_config") not in (None, ""):
                raise ConfigError(f"{where}: endpoints[{i}].service_config: only valid for endpoint groups "
                                  f"(group: true); {addr} is not one")
        service_config = _service_config(ep.get("service_config"), f"{where}: endpoints[{i}].service_config")
        cwhere = f"{where}: endpoints[{i}].client_config"
        fields, name = _client_config(ep.get("client_config"), cwhere)
        tls = None
        if fields or name:
            tls = _client_tls(fields, name, None if "enabled" in fields else fallback, cwhere)
        out.append(EndpointSpec(addr, strict, tls, group, service_config))
    return EndpointConfig(out, default_tls)


@dataclass
class Discovery:
    """Resolves the configured endpoints into addresses, on demand (:meth:`addresses`).

    ``static``: flag addresses; ``sd_files``: file SD patterns (re-read when they change or every
    ``sd_interval``); ``sd_config_file``: endpoint SD config (re-read when it changes or every
    ``sd_config_interval``)."""

    static: list[EndpointSpec] = field(default_factory=list)
    #: the ``--grpc-client-tls-*`` flags, and an inline ``--endpoint.sd-config``'s default_client_config
    client_tls: ClientTLS = field(default_factory=ClientTLS)
    default_tls: Optional[ClientTLS] = None
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
    _cfg_default: Optional[ClientTLS] = None
    _cfg_state: tuple = ()
    _cfg_read_at: float = float("-inf")
    _dns: dict = field(default_factory=dict)  # address -> (resolved_at, [host:port])

    def _reload_files(self, now: float) -> None:
        if self.sd_files:
            state = file_stamps(self.sd_files)
            if state != self._file_state or now - self._file_read_at >= self.sd_interval:
                targets, errors = read_sd_files(self.sd_files)
                for e in errors:
                    log.error("failed to read file SD", extra={"err": e})
                if targets or not errors:
                    self._file_targets = targets
                self._file_state, self._file_read_at = state, now
        if self.sd_config_file:
            state = file_stamps([self.sd_config_file])
            if state != self._cfg_state or now - self._cfg_read_at >= self.sd_config_interval:
                try:
                    with open(self.sd_config_file, encoding="utf-8") as f:
                        cfg = parse_endpoint_config(f.read(), f"--endpoint.sd-config-file={self.sd_config_file}",
                                                    self.client_tls)
                    self._cfg_specs, self._cfg_default = cfg.endpoints, cfg.default_tls
                except (OSError, ConfigError) as e:
                    log.error("failed to reload endpoint SD config; keeping the previous one", extra={"err": str(e)})
                self._cfg_state, self._cfg_read_at = state, now

    def specs(self, now: float) -> list[EndpointSpec]:
        self._reload_files(now)
        seen: dict[str, EndpointSpec] = {}
        for s in [*self.static, *self._cfg_specs, *(EndpointSpec(t) for t in self._file_targets)]:
            if s.name not in seen or s.strict:
                seen[s.name] = s
        return list(seen.values())

    def global_tls(self) -> ClientTLS:
        """The default dial settings: the SD config's default_client_config, else the flags."""
        return self._cfg_default or self.default_tls or self.client_tls

    async def addresses(self, now: float) -> dict[str, Target]:
        """name -> :class:`Target`, after DNS (cached ``dns_interval``): an address, or a group's
        ``thanos:///<address>``."""
        out: dict[str, Target] = {}
        specs = self.specs(now)
        default = self.global_tls()
        for spec in specs:
            prefix, rest = split_dns_prefix(spec.address)
            tls = spec.tls or default
            if spec.group:
                dial = grpc_target(spec.address, self.dns_server)
                dial = GroupDial(dial.target, spec.service_config, dial.balanced)
                members = tuple(sorted(await self._lookup(spec.address, prefix, rest, now))) if prefix else (rest,)
                out[spec.name] = Target(spec.strict, tls, dial, members)
                continue
            if not prefix:
                had = out.get(rest)
                out[rest] = Target((had is not None and had.strict) or spec.strict, tls)
                continue
            for a in await self._lookup(spec.address, prefix, rest, now):
                out.setdefault(a, Target(False, tls))
        return out

    async def _lookup(self, address: str, prefix: str, rest: str, now: float) -> list[str]:
        """The addresses a ``dns+``/``dnssrv+`` address resolves to, looked up again after
        ``dns_interval``; a failed lookup keeps the last good answer (and is logged)."""
        cached = self._dns.get(address)
        if cached is None or now - cached[0] >= self.dns_interval:
            try:
                found = await resolve(prefix, rest, self.dns_server)
                self._dns[address] = (now, found)
            except (OSError, ConfigError, Exception) as e:  # noqa: BLE001 - keep the last good answer
                log.error("failed to resolve endpoint address", extra={"address": address, "err": str(e)})
                if cached is None:
                    self._dns[address] = (now, [])
        return list(self._dns.get(address, (0, []))[1])
