"""Alert notifications to Alertmanagers over their API v2, as Thanos' ruler sends them
(``pkg/alert``).

The evaluation side calls :meth:`Notifier.send` with the alerts due; that only queues them
(never waits on the network). The queue holds 10 000 alerts (the oldest are dropped when it is
full); on the way in each alert loses the ``--alert.label-drop`` labels, gets the external labels
(minus the dropped ones) and passes ``--alert.relabel-config`` (an alert relabelled away is not
queued). A sender task takes batches of up to 100 and POSTs each batch to every Alertmanager
endpoint at once (``/api/v2/alerts`` under the configured path prefix); the batch counts as
delivered if any endpoint took it, else it is counted in
``thanos_alert_sender_alerts_dropped_total``. An unreachable endpoint or a failing DNS lookup is
logged and counted, never fatal.

Alertmanagers come from ``--alertmanagers.url`` (repeatable; ``dns+``/``dnssrv+``/``dnssrvnoa+``
before the scheme resolve the host; ``user:password@`` becomes basic auth; the path is the API
prefix) or from ``--alertmanagers.config[-file]`` (Thanos' ``alertmanagers:`` YAML with
``static_configs``, ``file_sd_configs``, ``scheme``, ``path_prefix``, ``timeout``,
``api_version`` and ``http_config``). Addresses are resolved again every
``--alertmanagers.sd-dns-interval``; a failed lookup keeps the previous answer.
"""
from __future__ import annotations

import asyncio
import collections
import datetime as _dt
import logging
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence
from urllib.parse import quote_plus, unquote, urlsplit

import aiohttp
import yaml

from ..dnsresolve import resolve, split_dns_prefix
from ..errors import ConfigError
from ..filesd import read_sd_files
from ..httpsession import auth_headers
from ..relabel import RelabelConfig, apply, parse_relabel_config

__all__ = ["AlertmanagerConfig", "Notifier", "parse_alerting_config", "config_from_url", "alertmanager_configs",
           "from_config", "generator_url", "check_query_template", "format_time", "QUEUE_CAPACITY", "MAX_BATCH_SIZE"]

log = logging.getLogger(__name__)

QUEUE_CAPACITY = 10000   # cmd/thanos/rule.go NewQueue(..., 10000, 100, ...)
MAX_BATCH_SIZE = 100
DEFAULT_PORT = 9093      # a dns+ address without a port
_DNS_SCHEME_PREFIXES = ("dns+", "dnssrv+", "dnssrvnoa+")


@dataclass
class AlertmanagerConfig:
    """One ``alertmanagers:`` entry: a set of endpoints sharing client settings."""

    static_addresses: list[str] = field(default_factory=list)   # host:port, or dns+/dnssrv+ names
    file_sd_files: list[str] = field(default_factory=list)
    scheme: str = "http"
    path_prefix: str = ""
    timeout_s: float = 10.0
    api_version: str = "v2"
    username: str = ""
    password: str = ""
    password_file: str = ""
    bearer_token: str = ""
    bearer_token_file: str = ""
    proxy_url: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    insecure_skip_verify: bool = False
    where: str = ""

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        """The TLS client context for https endpoints (None: aiohttp's default)."""
        from ..httpsession import client_ssl_context

        return client_ssl_context(self.ca_file, self.cert_file, self.key_file, self.insecure_skip_verify)

    def headers(self) -> dict[str, str]:
        """The Authorization header: basic auth (files read at each send, as Prometheus' client
        does) or a bearer token."""
        return auth_headers(self.username, self.password, self.password_file, self.bearer_token,
                            self.bearer_token_file)


# ---------------------------------------------------------------------------------------------
# Configuration: --alertmanagers.url and --alertmanagers.config.

def config_from_url(url: str, timeout_s: float, where: str = "--alertmanagers.url") -> AlertmanagerConfig:
    """Thanos' BuildAlertmanagerConfig: ``[dns+|dnssrv+]scheme://[user:pass@]host[:port][/prefix]``."""
    try:
        u = urlsplit(url)
        u.port  # noqa: B018 - validates the port
    except ValueError as e:
        raise ConfigError(f"{where}={url}: {e}") from None
    scheme = u.scheme
    if not scheme:
        raise ConfigError(f"{where}={url}: alertmanagers.url contains empty scheme")
    hostport = u.netloc.rpartition("@")[2]
    if not hostport:
        raise ConfigError(f"{where}={url}: alertmanagers.url contains empty host")
    bad = next((c for c in hostport if c.isspace() or c in '<>"{}|\\^`'), None)
    if bad is not None:
        raise ConfigError(f'{where}={url}: parse "{url}": invalid character "{bad}" in host name')
    host = hostport
    for prefix in _DNS_SCHEME_PREFIXES:
        if scheme.lower().startswith(prefix):
            scheme = scheme[len(prefix):]
            host = prefix + hostport
            if prefix == "dns+" and u.port is None:
                host += f":{DEFAULT_PORT}"
            break
    return AlertmanagerConfig(static_addresses=[host], scheme=scheme, path_prefix=u.path, timeout_s=timeout_s,
                              username=unquote(u.username or ""), password=unquote(u.password or ""),
                              where=f"{where}={url}")


_TOP_FIELDS = {"alertmanagers"}
_AM_FIELDS = {"http_config", "static_configs", "file_sd_configs", "scheme", "path_prefix", "timeout", "api_version"}
_HTTP_FIELDS = {"basic_auth", "bearer_token", "bearer_token_file", "proxy_url", "tls_config", "transport_config"}
_BASIC_AUTH_FIELDS = {"username", "password", "password_file"}
_TLS_FIELDS = {"ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify"}
_TRANSPORT_FIELDS = {"max_idle_conns", "max_idle_conns_per_host", "idle_conn_timeout", "response_header_timeout",
                     "expect_continue_timeout", "max_conns_per_host", "disable_compression",
                     "tls_handshake_timeout", "dialer_timeout"}
_FILE_SD_FIELDS = {"files", "refresh_interval"}


def _cannot(value: Any, into: str, where: str) -> ConfigError:
    """yaml's type error: ``cannot unmarshal !!str `x` into []string``."""
    if isinstance(value, dict):
        kind = "!!map"
    elif isinstance(value, list):
        kind = "!!seq"
    else:
        tag = {bool: "!!bool", int: "!!int", float: "!!float"}.get(type(value), "!!str")
        text = str(value)
        kind = f"{tag} `{text[:7] + '...' if len(text) > 10 else text}`"
    return ConfigError(f"{where}: cannot unmarshal {kind} into {into}")


def _mapping(value: Any, where: str, known: set[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _cannot(value, "a mapping", where)
    for k in value:
        if k not in known:
            raise ConfigError(f"{where}: field {k} not found (known: {', '.join(sorted(known))})")
    return value


def _str(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise _cannot(value, "string", where)
    return str(value)


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _cannot(value, "[]string", where)
    return [_str(v, f"{where}[{i}]") for i, v in enumerate(value)]


def parse_alerting_config(text: str, where: str = "--alertmanagers.config") -> list[AlertmanagerConfig]:
    """Thanos' AlertingConfig YAML (strict: unknown fields are refused). ``api_version`` must be
    v2: Alertmanager's v1 API is gone (removed in Alertmanager 0.27)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: {' '.join(str(e).split())}") from None
    top = _mapping(doc, where, _TOP_FIELDS)
    ams = top.get("alertmanagers")
    if ams is None:
        return []
    if not isinstance(ams, list):
        raise _cannot(ams, "[]alert.AlertmanagerConfig", f"{where}: alertmanagers")
    out = []
    for i, raw in enumerate(ams):
        at = f"{where}: alertmanagers[{i}]"
        am = _mapping(raw, at, _AM_FIELDS)
        cfg = AlertmanagerConfig(where=at)
        cfg.static_addresses = _str_list(am.get("static_configs"), f"{at}.static_configs")
        for j, sd in enumerate(am.get("file_sd_configs") or []):
            sd = _mapping(sd, f"{at}.file_sd_configs[{j}]", _FILE_SD_FIELDS)
            cfg.file_sd_files += _str_list(sd.get("files"), f"{at}.file_sd_configs[{j}].files")
        cfg.scheme = _str(am.get("scheme"), f"{at}.scheme") or "http"  # any: Thanos fails at sending
        cfg.path_prefix = _str(am.get("path_prefix"), f"{at}.path_prefix")
        if am.get("timeout") is not None:
            from .rulefile import parse_model_duration

            try:
                cfg.timeout_s = parse_model_duration(_str(am["timeout"], f"{at}.timeout"))
            except ValueError as e:
                raise ConfigError(f"{at}.timeout: {e}") from None
        version = _str(am.get("api_version"), f"{at}.api_version") or "v2"
        if version == "v1":
            raise ConfigError(f"{at}.api_version: v1 is not supported: Alertmanager's API v1 was removed "
                              "(Alertmanager 0.27); use api_version: v2")
        if version != "v2":
            raise ConfigError(f'{at}.api_version: expected Alertmanager API version to be one of [v1 v2] but got '
                              f'"{version}"')
        http = _mapping(am.get("http_config"), f"{at}.http_config", _HTTP_FIELDS)
        ba = _mapping(http.get("basic_auth"), f"{at}.http_config.basic_auth", _BASIC_AUTH_FIELDS)
        tls = _mapping(http.get("tls_config"), f"{at}.http_config.tls_config", _TLS_FIELDS)
        _mapping(http.get("transport_config"), f"{at}.http_config.transport_config", _TRANSPORT_FIELDS)
        cfg.username = _str(ba.get("username"), f"{at}.http_config.basic_auth.username")
        cfg.password = _str(ba.get("password"), f"{at}.http_config.basic_auth.password")
        cfg.password_file = _str(ba.get("password_file"), f"{at}.http_config.basic_auth.password_file")
        if cfg.password and cfg.password_file:
            raise ConfigError(f"{at}.http_config.basic_auth: at most one of basic_auth password, password_file & "
                              "password_ref must be configured")
        cfg.bearer_token = _str(http.get("bearer_token"), f"{at}.http_config.bearer_token")
        cfg.bearer_token_file = _str(http.get("bearer_token_file"), f"{at}.http_config.bearer_token_file")
        if cfg.bearer_token and cfg.bearer_token_file:
            raise ConfigError(f"{at}.http_config: at most one of bearer_token & bearer_token_file must be "
                              "configured")
        if (cfg.username or cfg.password or cfg.password_file) and (cfg.bearer_token or cfg.bearer_token_file):
            raise ConfigError(f"{at}.http_config: at most one of basic_auth, oauth2, bearer_token & "
                              "bearer_token_file must be configured")
        cfg.proxy_url = _str(http.get("proxy_url"), f"{at}.http_config.proxy_url")
        for k in ("ca_file", "cert_file", "key_file", "server_name"):
            setattr(cfg, k, _str(tls.get(k), f"{at}.http_config.tls_config.{k}"))
        cfg.insecure_skip_verify = bool(tls.get("insecure_skip_verify") or False)
        if cfg.cert_file and not cfg.key_file:
            raise ConfigError(f"{at}.http_config.tls_config: exactly one of key or key_file must be configured "
                              "when a client certificate is configured")
        if cfg.key_file and not cfg.cert_file:
            raise ConfigError(f"{at}.http_config.tls_config: exactly one of cert or cert_file must be configured "
                              "when a client key is configured")
        out.append(cfg)
    return out


def alertmanager_configs(urls: Sequence[str], config_text: str, send_timeout_s: float, *,
                         config_where: str = "--alertmanagers.config") -> list[AlertmanagerConfig]:
    """The Alertmanager sets of the flags: the YAML if given, else one per URL (both: refused)."""
    if config_text.strip():
        if urls:
            raise ConfigError("--alertmanagers.url and --alertmanagers.config* parameters cannot be defined at "
                              "the same time")
        return parse_alerting_config(config_text, config_where)
    return [config_from_url(u, send_timeout_s) for u in urls]


# ---------------------------------------------------------------------------------------------
# Alerts on the wire.

def format_time(t: Any) -> str:
    """Alertmanager's strfmt.DateTime text (RFC 3339, milliseconds, UTC) of unix seconds; strings
    pass through; None is Go's zero time."""
    if isinstance(t, str):
        return t
    if t is None:
        return "0001-01-01T00:00:00.000Z"
    ms = int(round(float(t) * 1000))
    d = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(milliseconds=ms)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


_PLAIN_EXPR_TEMPLATE = re.compile(r"(?:[^{]|\{(?!\{))*(?:\{\{\s*\.Expr\s*\}\}(?:[^{]|\{(?!\{))*)*")


def generator_url(query_url: str, template: str, expr: str) -> str:
    """An alert's ``generatorURL`` as Thanos builds it: ``--alert.query-url`` followed by the
    ``--alert.query-template`` Go template executed with ``.Expr`` the query-escaped expression
    (a template that fails gives the URL alone, as Thanos logs and goes on)."""
    escaped = quote_plus(expr, safe="")
    if _PLAIN_EXPR_TEMPLATE.fullmatch(template):  # the usual case: no other actions
        return query_url + re.sub(r"\{\{\s*\.Expr\s*\}\}", lambda _m: escaped, template)
    try:
        from ..promtemplate import TemplateError, expand
        from ..promtemplate.values import GoStruct
    except ImportError:
        return query_url
    try:
        return query_url + expand(template, "url", GoStruct("main.Expression", {"Expr": escaped}),
                                  timestamp_ms=0, external_url=None)
    except TemplateError as e:
        log.warning("failed to generate link for expression", extra={"expr": expr, "err": str(e)})
        return query_url


def check_query_template(template: str, where: str = "--alert.query-template") -> None:
    """Thanos' start-up check of ``--alert.query-template``: it must parse and execute with
    ``.Expr`` set (ConfigError in Thanos' words otherwise)."""
    if _PLAIN_EXPR_TEMPLATE.fullmatch(template):
        return
    try:
        from ..promtemplate import TemplateError, expand
        from ..promtemplate.values import GoStruct
    except ImportError:
        return
    try:
        expand(template, "test", GoStruct("main.Expression", {"Expr": "test_expr"}), timestamp_ms=0,
               external_url=None)
    except TemplateError as e:
        what = "parse" if str(e).startswith("error parsing") else "execute"
        raise ConfigError(f"{where}: failed to {what} the template: {getattr(e, 'go_error', '') or e}") from None


def _payload(alerts: Sequence[Mapping[str, Any]]) -> bytes:
    """API v2 PostableAlerts as Thanos' sender marshals them: struct fields in Go's order
    (annotations and generatorURL left out when empty), label maps sorted, Go's escaping."""
    from ..gofmt import go_json

    out = []
    for a in alerts:
        item: dict[str, Any] = {}
        if a.get("annotations"):
            item["annotations"] = dict(sorted(a["annotations"].items()))
        item["endsAt"] = format_time(a.get("endsAt"))
        item["startsAt"] = format_time(a.get("startsAt"))
        if a.get("generatorURL"):
            item["generatorURL"] = a["generatorURL"]
        item["labels"] = dict(sorted((a.get("labels") or {}).items()))
        out.append(item)
    return go_json(out).encode()


# ---------------------------------------------------------------------------------------------

class _Metrics:
    def __init__(self, registry) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        kw = {"registry": registry}  # None: not registered anywhere (tests make many)
        self.pushed = Counter("thanos_alert_queue_alerts_pushed_total", "Total number of alerts pushed to the queue.",
                              **kw)
        self.popped = Counter("thanos_alert_queue_alerts_popped_total", "Total number of alerts popped from the queue.",
                              **kw)
        self.queue_dropped = Counter("thanos_alert_queue_alerts_dropped_total",
                                     "Total number of alerts that were dropped from the queue.", **kw)
        self.capacity = Gauge("thanos_alert_queue_capacity", "Capacity of the alert queue.", **kw)
        self.length = Gauge("thanos_alert_queue_length", "Length of the alert queue.", **kw)
        self.sent = Counter("thanos_alert_sender_alerts_sent_total", "Total number of alerts sent by alertmanager.",
                            ["alertmanager"], **kw)
        self.errors = Counter("thanos_alert_sender_errors_total",
                              "Total number of errors while sending alerts to alertmanager.", ["alertmanager"], **kw)
        self.dropped = Counter("thanos_alert_sender_alerts_dropped_total",
                               "Total number of alerts dropped in case of all sends to alertmanagers failed.", **kw)
        self.latency = Histogram("thanos_alert_sender_latency_seconds",
                                 "Latency for sending alert notifications (not including dropped notifications).",
                                 ["alertmanager"], **kw)
        self.dns_lookups = Counter("thanos_rule_alertmanagers_dns_lookups_total",
                                   "The number of DNS lookups resolutions attempts", **kw)
        self.dns_failures = Counter("thanos_rule_alertmanagers_dns_failures_total",
                                    "The number of DNS lookup failures", **kw)
        self.dns_results = Gauge("thanos_rule_alertmanagers_dns_provider_results",
                                 "The number of resolved endpoints for each configured address", ["addr"], **kw)


class _Set:
    """One configured Alertmanager set and its currently resolved endpoint addresses."""

    def __init__(self, cfg: AlertmanagerConfig) -> None:
        self.cfg = cfg
        self.resolved: dict[str, list[str]] = {}   # configured address -> host:port list
        try:
            self.ssl = cfg.ssl_context() if cfg.scheme == "https" else None
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{cfg.where}: http_config.tls_config: unable to load the certificates: {e}") from None

    def addresses(self) -> list[str]:
        out: list[str] = []
        for addrs in self.resolved.values():
            out += [a for a in addrs if a not in out]
        return out

    def url(self, addr: str) -> str:
        prefix = "/" + self.cfg.path_prefix.strip("/") if self.cfg.path_prefix.strip("/") else ""
        return f"{self.cfg.scheme}://{addr}{prefix}/api/v2/alerts"


class Notifier:
    """The alert queue and its sender. Create it, ``await start()`` in the event loop that
    should do the sending, call :meth:`send` from anywhere, ``await stop()`` at shutdown."""

    def __init__(self, alertmanagers: Sequence[AlertmanagerConfig], *,
                 external_labels: Optional[Mapping[str, str]] = None, label_drop: Iterable[str] = (),
                 relabel_configs: Sequence[RelabelConfig] = (), registry=None,
                 capacity: int = QUEUE_CAPACITY, max_batch: int = MAX_BATCH_SIZE,
                 dns_interval_s: float = 30.0, dns_server: str = "") -> None:
        self._sets = [_Set(c) for c in alertmanagers]
        self._drop = tuple(label_drop)
        self._add = {k: v for k, v in (external_labels or {}).items() if k not in self._drop}
        self._relabel = list(relabel_configs)
        self._capacity, self._max_batch = capacity, max_batch
        self._dns_interval, self._dns_server = dns_interval_s, dns_server
        self._queue: collections.deque[dict] = collections.deque()
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._more: Optional[asyncio.Event] = None
        self._tasks: list[asyncio.Task] = []
        self._session: Optional[aiohttp.ClientSession] = None
        self._resolved_once: Optional[asyncio.Event] = None
        self.m = _Metrics(registry)
        self.m.capacity.set(capacity)
        self.m.length.set_function(lambda: len(self._queue))
        if not self._sets:
            log.warning("no alertmanager configured")

    # -- the caller's side --------------------------------------------------------------------

    def send(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Queue alerts (API v2 dicts: labels, annotations, startsAt/endsAt as unix seconds or
        RFC 3339 text, generatorURL) for sending; returns at once. Labels are taken as the rule
        produced them: external labels are added here."""
        if not alerts:
            return
        kept = []
        for a in alerts:
            labels = {k: v for k, v in (a.get("labels") or {}).items() if k not in self._drop}
            labels.update(self._add)
            labels = apply(labels, self._relabel) if self._relabel else dict(sorted(labels.items()))
            if labels is None:
                continue
            b = dict(a)
            b["labels"] = labels
            kept.append(b)
        with self._lock:
            self.m.pushed.inc(len(alerts))
            if not kept:
                return
            if len(kept) > self._capacity:
                d = len(kept) - self._capacity
                kept = kept[d:]
                log.warning("Alert batch larger than queue capacity, dropping alerts", extra={"numDropped": d})
                self.m.queue_dropped.inc(d)
            d = len(self._queue) + len(kept) - self._capacity
            if d > 0:
                for _ in range(d):
                    self._queue.popleft()
                log.warning("Alert notification queue full, dropping alerts", extra={"numDropped": d})
                self.m.queue_dropped.inc(d)
            self._queue.extend(kept)
        self._wake()

    def _wake(self) -> None:
        loop, ev = self._loop, self._more
        if loop is None or ev is None or loop.is_closed():
            return  # not started: the sender picks the queue up when it starts
        try:
            if _running_loop() is loop:
                ev.set()
            else:
                loop.call_soon_threadsafe(ev.set)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def queue_length(self) -> int:
        return len(self._queue)

    def endpoints(self) -> list[str]:
        """The endpoint URLs alerts go to now."""
        return [s.url(a) for s in self._sets for a in s.addresses()]

    # -- the sender's side --------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve the Alertmanagers once, then keep resolving and sending in background tasks."""
        self._loop = asyncio.get_running_loop()
        self._more = asyncio.Event()
        self._resolved_once = asyncio.Event()
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._resolve_loop(), name="alertmanager-discovery"),
                       asyncio.create_task(self._send_loop(), name="alert-sender")]
        if self._queue:
            self._more.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._loop = None

    async def resolve(self) -> None:
        """One round of discovery: file SD files read, DNS names looked up (a failure keeps
        the previous answer for that name, and is logged and counted)."""
        for s in self._sets:
            wanted = list(s.cfg.static_addresses)
            if s.cfg.file_sd_files:
                targets, errors = read_sd_files(s.cfg.file_sd_files)
                for e in errors:
                    log.warning("reading Alertmanager file SD failed", extra={"err": e})
                wanted = targets + wanted
            resolved: dict[str, list[str]] = {}
            for addr in wanted:
                prefix, rest = split_dns_prefix(addr)
                if not prefix:
                    resolved[addr] = [addr]
                    continue
                self.m.dns_lookups.inc()
                try:
                    resolved[addr] = await resolve(prefix, rest, self._dns_server)
                except Exception as e:  # noqa: BLE001 - any lookup failure: keep the last answer
                    self.m.dns_failures.inc()
                    log.error("failed to lookup SRV records" if prefix.startswith("dnssrv") else
                              "dns resolution failed", extra={"addr": addr, "err": str(e)})
                    resolved[addr] = s.resolved.get(addr, [])
            s.resolved = resolved
        self.m.dns_results.clear()
        for s in self._sets:
            for addr, got in s.resolved.items():
                self.m.dns_results.labels(addr).set(len(got))

    async def _resolve_loop(self) -> None:
        while True:
            try:
                await self.resolve()
            except Exception as e:  # noqa: BLE001 - discovery must go on
                log.error("Alertmanager discovery failed", extra={"err": str(e)})
            assert self._resolved_once is not None
            self._resolved_once.set()
            await asyncio.sleep(self._dns_interval)

    def _pop(self) -> list[dict]:
        with self._lock:
            n = min(self._max_batch, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
        if n:
            self.m.popped.inc(n)
        return batch

    async def _send_loop(self) -> None:
        assert self._more is not None and self._resolved_once is not None
        await self._resolved_once.wait()
        while True:
            await self._more.wait()
            self._more.clear()
            while True:
                batch = self._pop()
                if not batch:
                    break
                try:
                    await self.send_batch(batch)
                except Exception as e:  # noqa: BLE001 - the sender never dies
                    log.error("sending alerts failed", extra={"err": repr(e)})

    async def send_batch(self, alerts: Sequence[Mapping[str, Any]]) -> bool:
        """POST one batch to every endpoint at once; True if any accepted it (else the batch is
        counted as dropped)."""
        body = _payload(alerts)
        jobs = [self._post(s, addr, body, len(alerts)) for s in self._sets for addr in s.addresses()]
        results = await asyncio.gather(*jobs) if jobs else []
        if any(results):
            return True
        self.m.dropped.inc(len(alerts))
        log.warning("failed to send alerts to all alertmanagers", extra={"numAlerts": len(alerts)})
        return False

    async def _post(self, s: _Set, addr: str, body: bytes, n: int) -> bool:
        assert self._session is not None
        url = s.url(addr)
        start = time.perf_counter()
        log.debug("sending alerts", extra={"alertmanager": addr, "numAlerts": n})
        try:
            kw: dict[str, Any] = {}
            if s.ssl is not None:
                kw["ssl"] = s.ssl
            if s.cfg.server_name:
                kw["server_hostname"] = s.cfg.server_name
            if s.cfg.proxy_url:
                kw["proxy"] = s.cfg.proxy_url
            async with self._session.post(
                    url, data=body,
                    headers={"Content-Type": "application/json", **s.cfg.headers()},
                    timeout=aiohttp.ClientTimeout(total=s.cfg.timeout_s), **kw) as resp:
                await resp.read()
                if resp.status // 100 != 2:
                    raise _BadStatus(f'bad response status {resp.status} {resp.reason} from "{url}"')
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, _BadStatus) as e:
            err = str(e) if isinstance(e, _BadStatus) else f'send request to "{url}": {type(e).__name__}: {e}'
            log.warning("sending alerts failed", extra={"alertmanager": addr, "numAlerts": n, "err": err})
            self.m.errors.labels(addr).inc()
            return False
        self.m.latency.labels(addr).observe(time.perf_counter() - start)
        self.m.sent.labels(addr).inc(n)
        return True


class _BadStatus(Exception):
    pass


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def from_config(cfg: Any, *, registry=None, external_labels: Optional[Mapping[str, str]] = None,
                dns_server: str = "") -> Notifier:
    """The notifier of the ruler's configuration (:class:`pythanos.rule.run.RuleConfig` fields
    ``alertmanagers_urls``, ``alertmanagers_config``, ``alertmanagers_send_timeout``,
    ``alertmanagers_dns_interval``, ``alert_label_drop``, ``alert_relabel_config``,
    ``alert_relabel_where``); configuration errors are ConfigErrors naming the flag."""
    ams = alertmanager_configs(list(getattr(cfg, "alertmanagers_urls", []) or []),
                               getattr(cfg, "alertmanagers_config", "") or "",
                               float(getattr(cfg, "alertmanagers_send_timeout", 10.0)))
    check_query_template(getattr(cfg, "alert_query_template", "") or "")
    relabel_text = getattr(cfg, "alert_relabel_config", "") or ""
    relabel = parse_relabel_config(relabel_text, getattr(cfg, "alert_relabel_where", "--alert.relabel-config"))
    return Notifier(ams, external_labels=external_labels if external_labels is not None else
                    getattr(cfg, "labels", None), label_drop=getattr(cfg, "alert_label_drop", ()) or (),
                    relabel_configs=relabel, registry=registry,
                    dns_interval_s=float(getattr(cfg, "alertmanagers_dns_interval", 30.0)), dns_server=dns_server)
