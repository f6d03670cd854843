"""Flag parsers every component shares: durations, listen addresses, URLs, times, byte sizes,
and the argparse groups that Thanos repeats on each component (logging, HTTP/gRPC listeners,
object storage).

Parsers take ``(text, flag)`` and raise :class:`UserError` naming the flag; :func:`flag_type`
turns one into an argparse ``type=`` so a bad value prints argparse's usual
"argument --flag: ..." line. Components keep their own flags in ``<component>/flags.py``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, TypeVar
from urllib.parse import urlsplit

from . import logfmt
from .errors import ConfigError, UserError

if TYPE_CHECKING:  # pythanos.tlsconfig is imported where used (it pulls in ssl)
    from .tlsconfig import ClientTLS, ServerTLS

__all__ = ["parse_duration", "parse_time_or_duration", "TimeOrDuration", "MinTime", "parse_url", "parse_address",
           "parse_bytes", "positive_int", "add_time_range", "non_negative_int", "duration", "content_flag", "flag_type", "add_common", "add_objstore", "add_listeners",
           "add_grpc_server_tls", "add_grpc_client_tls", "GrpcTLS", "grpc_tls_from_args",
           "read_flag_file", "parse_label_flags", "objstore_text", "bucket_from_args", "DEFAULT_MIN_TIME", "DEFAULT_MAX_TIME"]

T = TypeVar("T")

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
             "d": 86400.0, "w": 7 * 86400.0, "y": 365 * 86400.0}
_DUR_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w|y)")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$")


def parse_duration(text: str, flag: str) -> float:
    """A duration in seconds: Go's syntax (``1m30s``, ``1.5h``, ``300ms``) or Prometheus' (``2d``, ``1w``)."""
    s = (text or "").strip()
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DUR_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise UserError(f"{flag}: invalid duration {text!r} (want e.g. 30s, 5m, 1h30m, 2d)")
    return total


def format_duration(seconds: float) -> str:
    """Go's ``time.Duration.String()`` (``2h0m0s``, ``30m0s``, ``1.5s``): how Thanos prints durations."""
    from .gofmt import duration

    return duration(round(seconds * 1e9))


@dataclass(frozen=True)
class TimeOrDuration:
    """Thanos' ``TimeOrDurationValue``: a fixed time (``time_ms``) or a duration relative to now
    (``offset_ms``, evaluated at every use, so ``-2h`` keeps moving)."""

    time_ms: Optional[int] = None
    offset_ms: Optional[int] = None
    text: str = ""

    def timestamp_ms(self, now_ms: Optional[int] = None) -> int:
        if self.time_ms is not None:
            return self.time_ms
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        return now_ms + int(self.offset_ms or 0)


MinTime = TimeOrDuration  # the sidecar's name for it

DEFAULT_MIN_TIME = "0000-01-01T00:00:00Z"
DEFAULT_MAX_TIME = "9999-12-31T23:59:59Z"


def parse_time_or_duration(text: str, flag: str = "--min-time") -> TimeOrDuration:
    """RFC3339 time or a duration relative to now (``-1d``, ``2h45m``)."""
    s = (text or "").strip()
    if not s:
        raise UserError(f"{flag}: empty; want an RFC3339 time (2019-10-18T00:00:00Z) or a duration such as -1d")
    if _RFC3339.match(s):
        iso = s[:-1] + "+00:00" if s[-1] in "Zz" else s
        iso = iso.replace("t", "T")
        try:
            if int(iso[:4]) < 1:  # Thanos' default 0000-01-01: Python has no year 0; count from 0001-01-01
                rest = _dt.datetime.fromisoformat("0001" + iso[4:])
                base = _dt.datetime(1, 1, 1, tzinfo=_dt.timezone.utc)
                ms = -62167219200000 + int((rest - base).total_seconds() * 1000)
            else:
                ms = int(round(_dt.datetime.fromisoformat(iso).timestamp() * 1000))
        except ValueError as e:
            raise UserError(f"{flag}: invalid RFC3339 time {text!r}: {e}") from None
        return TimeOrDuration(time_ms=ms, text=s)
    sign = -1 if s.startswith("-") else 1
    body = s[1:] if s[0] in "+-" else s
    try:
        secs = parse_duration(body, flag)
    except UserError:
        raise UserError(f"{flag}: expected an RFC3339 time (2019-10-18T00:00:00Z) or a duration relative to now "
                        f"(-1d, 2h45m), got {text!r}") from None
    return TimeOrDuration(offset_ms=sign * int(round(secs * 1000)), text=s)


def parse_url(text: str, flag: str) -> str:
    u = urlsplit((text or "").strip())
    if u.scheme not in ("http", "https") or not u.hostname:
        raise UserError(f"{flag}: want an http(s) URL such as http://localhost:9090, got {text!r}")
    try:
        u.port
    except ValueError:
        raise UserError(f"{flag}: invalid port in {text!r}") from None
    return text.strip().rstrip("/")


def parse_address(text: str, flag: str) -> str:
    """``host:port`` (host may be empty or ``[v6]``) for a listen address."""
    s = (text or "").strip()
    _, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise UserError(f"{flag}: want host:port, e.g. 0.0.0.0:10901, got {text!r}")
    return s


# kingpin's BytesVar (units.ParseBase2Bytes): KB and KiB are both 1024
_SIZE_UNITS = {"B": 1}
for _i, _p in enumerate("KMGTPE", start=1):
    _SIZE_UNITS[_p + "iB"] = 1024 ** _i
    _SIZE_UNITS[_p + "B"] = 1024 ** _i  # ParseBase2Bytes: "KB" and "KiB" are both 1024 (never "kB")
_SIZE_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([A-Za-z]*)")


def parse_bytes(text: str | int, where: str) -> int:
    """A size in bytes as Thanos' ``model.Bytes`` reads it: ``250MiB``, ``1GB``, ``1MiB512KiB``.

    Like ``units.ParseBase2Bytes`` the units are base 2 whichever spelling (``KB`` = ``KiB`` = 1024,
    ``1GB`` = 2^30; ``kB`` is rejected). Unlike it, a plain number (YAML int or digits) is bytes.
    Raises :class:`pythanos.errors.ConfigError` naming ``where``."""
    if isinstance(text, bool):
        raise ConfigError(f"{where}: invalid size {text!r} (want e.g. 250MiB, 1GB or a number of bytes)")
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"{where}: size must not be negative, got {text}")
        return text
    s = str(text).strip()
    if s.isdigit():
        return int(s)
    pos, total = 0, 0.0
    for m in _SIZE_PART.finditer(s):
        if m.start() != pos or m.group(2) not in _SIZE_UNITS:
            break
        total += float(m.group(1)) * _SIZE_UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ConfigError(f"{where}: invalid size {text!r} (want e.g. 250MiB, 1GB, 512KiB or a number of bytes; "
                          "units are base 2 as in Thanos)")
    return int(total)


def positive_int(text: str, flag: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise UserError(f"{flag}: expected an integer, got {text!r}") from None
    if n <= 0:
        raise UserError(f"{flag}: must be positive, got {n}")
    return n


def non_negative_int(text: str, flag: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise UserError(f"{flag}: expected an integer, got {text!r}") from None
    if n < 0:
        raise UserError(f"{flag}: must not be negative, got {n}")
    return n


def flag_type(parse: Callable[[str, str], T], flag: str) -> Callable[[str], T]:
    """An argparse ``type=`` that turns our UserError into argparse's "argument --flag: ..." error."""
    def conv(text: str) -> T:
        try:
            return parse(text, flag)
        except UserError as e:
            msg, prefix = str(e), f"{flag}: "
            raise argparse.ArgumentTypeError(msg[len(prefix):] if msg.startswith(prefix) else msg) from None
    conv.__name__ = flag
    return conv


def duration(flag: str) -> Callable[[str], float]:
    conv = flag_type(parse_duration, flag)
    conv.is_duration = True  # type: ignore[attr-defined]  # /api/v1/status/flags prints its default as one
    return conv


# ---------------------------------------------------------------------------------------------- groups

def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log.level", dest="log_level", default="info", choices=sorted(logfmt.LEVELS),
                   help="Only log messages with the given severity or above.")
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"],
                   help="Output format of log messages.")


def add_listeners(p: argparse.ArgumentParser, *, http: str = "0.0.0.0:10902", grpc: Optional[str] = "0.0.0.0:10901"
                  ) -> None:
    """``--http-address`` / ``--http-grace-period`` and (unless ``grpc`` is None) the gRPC pair."""
    p.add_argument("--http-address", dest="http_address", default=http,
                   type=flag_type(parse_address, "--http-address"), help="Listen host:port for HTTP endpoints.")
    p.add_argument("--http-grace-period", dest="http_grace_period", default=120.0,
                   type=duration("--http-grace-period"),
                   help="Time to wait after an interrupt received for HTTP Server.")
    p.add_argument("--http.config", dest="http_config", default="", metavar="<filename>",
                   help="[EXPERIMENTAL] Path to the configuration file that can enable TLS or authentication "
                        "for all HTTP endpoints (Prometheus' web configuration format). Re-read when it "
                        "changes.")
    if grpc is None:
        return
    p.add_argument("--grpc-address", dest="grpc_address", default=grpc,
                   type=flag_type(parse_address, "--grpc-address"),
                   help="Listen ip:port address for gRPC endpoints (StoreAPI).")
    p.add_argument("--grpc-grace-period", dest="grpc_grace_period", default=120.0,
                   type=duration("--grpc-grace-period"),
                   help="Time to wait after an interrupt received for GRPC Server.")
    add_grpc_server_tls(p)


_GRPC_TLS_NOTE = ("pythanos: grpcio negotiates TLS 1.2 and 1.3 only and fixes its TLS settings once per process, so "
                  "every gRPC TLS connection of the process (server and client) shares one minimum version.")


def add_grpc_server_tls(p: argparse.ArgumentParser) -> None:
    """Thanos' gRPC server TLS flags (``cmd/thanos/config.go`` grpcConfig) and the max connection age."""
    from .tlsconfig import GO_CIPHER_SUITES, GO_CURVES, GRPC_CURVES, parse_min_version

    p.add_argument("--grpc-server-tls-cert", dest="grpc_server_tls_cert", default="",
                   help="TLS Certificate for gRPC server, leave blank to disable TLS. Re-read when it changes.")
    p.add_argument("--grpc-server-tls-key", dest="grpc_server_tls_key", default="",
                   help="TLS Key for the gRPC server, leave blank to disable TLS. Re-read when it changes.")
    p.add_argument("--grpc-server-tls-client-ca", dest="grpc_server_tls_client_ca", default="",
                   help="TLS CA to verify clients against. If no client CA is specified, there is no client "
                        "verification on server side. (tls.NoClientCert)")
    p.add_argument("--grpc-server-tls-min-version", dest="grpc_server_tls_min_version", default="1.3",
                   type=flag_type(parse_min_version, "--grpc-server-tls-min-version"),
                   help="TLS supported minimum version for gRPC server. If no version is specified, it'll default "
                        "to 1.3. Allowed values: [\"1.2\", \"1.3\"] (Thanos also takes 1.0 and 1.1; grpcio "
                        "cannot: rejected). 1.3 is enforced: TLS 1.2 peers fail the handshake. " + _GRPC_TLS_NOTE)
    p.add_argument("--grpc-server-tls-ciphers", dest="grpc_server_tls_ciphers", action="append", default=[],
                   metavar="<cipher>",
                   help="TLS cipher suites for gRPC server (repeatable), Go names: "
                        + ", ".join(sorted(GO_CIPHER_SUITES)) + ". If not specified, grpcio's default suites are "
                        "used. Only TLS 1.2 suites can be chosen (as in Go), so with minimum version 1.3 the list "
                        "has no effect. pythanos: grpcio applies the list to every gRPC TLS connection of the "
                        "process, the querier's client connections included.")
    p.add_argument("--grpc-server-tls-curves", dest="grpc_server_tls_curves", action="append", default=[],
                   metavar="<curve>",
                   help="TLS curves for gRPC server (repeatable). Valid values: " + ", ".join(GO_CURVES) + ". "
                        "pythanos: grpcio cannot restrict curves; it negotiates " + ", ".join(GRPC_CURVES)
                        + " (P-256 only under TLS 1.2), so a list is accepted only if it names all of these.")
    p.add_argument("--grpc-server-max-connection-age", dest="grpc_max_connection_age", default=3600.0,
                   type=duration("--grpc-server-max-connection-age"),
                   help="The grpc server max connection age. This controls how often to re-establish connections "
                        "and redo TLS handshakes.")


def add_grpc_client_tls(p: argparse.ArgumentParser) -> None:
    """Thanos' ``--grpc-client-tls-*`` flags (grpcClientConfig; deprecated after v0.43 in favour of
    ``default_client_config`` in the endpoint SD config, still honoured)."""
    from .tlsconfig import parse_min_version

    p.add_argument("--grpc-client-tls-secure", dest="grpc_client_tls_secure", action="store_true",
                   help="Deprecated after v0.43.0: Use TLS when talking to the gRPC server")
    p.add_argument("--grpc-client-tls-skip-verify", dest="grpc_client_tls_skip_verify", action="store_true",
                   help="Deprecated after v0.43.0: Disable TLS certificate verification i.e self signed, signed by "
                        "fake CA. pythanos: grpcio has no such switch; the certificate the endpoint presents is "
                        "fetched and trusted for that endpoint alone (encryption without authentication, as in "
                        "Go); unlike Go, an expired certificate is still refused.")
    p.add_argument("--grpc-client-tls-cert", dest="grpc_client_tls_cert", default="",
                   help="Deprecated after v0.43.0: TLS Certificates to use to identify this client to the server")
    p.add_argument("--grpc-client-tls-key", dest="grpc_client_tls_key", default="",
                   help="Deprecated after v0.43.0: TLS Key for the client's certificate")
    p.add_argument("--grpc-client-tls-ca", dest="grpc_client_tls_ca", default="",
                   help="Deprecated after v0.43.0: TLS CA Certificates to use to verify gRPC servers (default: the "
                        "system's CA bundle)")
    p.add_argument("--grpc-client-server-name", dest="grpc_client_server_name", default="",
                   help="Deprecated after v0.43.0: Server name to verify the hostname on the returned gRPC "
                        "certificates. See https://tools.ietf.org/html/rfc4366#section-3.1")
    p.add_argument("--grpc-client-tls-min-version", dest="grpc_client_tls_min_version", default="1.3",
                   type=flag_type(parse_min_version, "--grpc-client-tls-min-version"),
                   help="Deprecated after v0.43.0: TLS supported minimum version for gRPC client. If no version is "
                        "specified, it'll default to 1.3. Allowed values: [\"1.2\", \"1.3\"]. " + _GRPC_TLS_NOTE)


@dataclass(frozen=True)
class GrpcTLS:
    """The gRPC TLS settings of one process: the server's (None: plaintext) and the client flags'
    (None when the component has no client flags; ``enabled`` false: plaintext)."""

    server: "Optional[ServerTLS]"
    client: "Optional[ClientTLS]"


def grpc_tls_from_args(args: argparse.Namespace) -> GrpcTLS:
    """Check the gRPC TLS flags and put the process' TLS policy in force.

    Components call this first in their ``config_from_args``: grpcio reads its TLS policy once,
    when it is loaded (see :mod:`pythanos.tlsconfig`). The process minimum is the server's when it
    serves TLS, else the client flags' (the receiver's ``--remote-write.client-tls-*``); every other
    setting must agree with it."""
    from .tlsconfig import (GO_CIPHER_SUITES, ClientTLS, GrpcTLSPolicy, ServerTLS, check_ciphers, check_curves,
                            fix_process_policy)

    server = None
    cert, key, ca = args.grpc_server_tls_cert, args.grpc_server_tls_key, args.grpc_server_tls_client_ca
    if cert or key:
        if not (cert and key):
            given, other = (("--grpc-server-tls-cert", "--grpc-server-tls-key") if cert
                            else ("--grpc-server-tls-key", "--grpc-server-tls-cert"))
            raise UserError(f"{given}: both server key and certificate must be provided ({other} is empty)")
        server = ServerTLS(cert, key, ca, args.grpc_server_tls_min_version)
    elif ca:
        raise UserError(f"--grpc-server-tls-client-ca={ca}: when a client CA is used a server key and certificate "
                        "must also be provided (--grpc-server-tls-cert, --grpc-server-tls-key)")
    ciphers: tuple[str, ...] = ()
    if server is not None:
        ciphers = check_ciphers(args.grpc_server_tls_ciphers, "--grpc-server-tls-ciphers")
        check_curves(args.grpc_server_tls_curves, "--grpc-server-tls-curves")
        if server.min_version == "1.2" and ciphers and not any(GO_CIPHER_SUITES[c] for c in ciphers):
            raise UserError("--grpc-server-tls-ciphers: only TLS 1.3 suites are named, and those cannot be chosen; "
                            "with --grpc-server-tls-min-version=1.2 TLS 1.2 would have no suite at all. Name TLS 1.2 "
                            "suites, or use --grpc-server-tls-min-version=1.3.")
    client = None
    if hasattr(args, "grpc_client_tls_secure"):
        client = ClientTLS(enabled=args.grpc_client_tls_secure, cert_file=args.grpc_client_tls_cert,
                           key_file=args.grpc_client_tls_key, ca_file=args.grpc_client_tls_ca,
                           server_name=args.grpc_client_server_name, skip_verify=args.grpc_client_tls_skip_verify,
                           min_version=args.grpc_client_tls_min_version)
    if server is not None:
        floor = server.min_version
    elif client is not None:
        floor = client.min_version
    elif getattr(args, "rw_client_tls_secure", False):  # the receiver dials its peers with these
        floor = args.rw_client_tls_min_version
    else:
        floor = "1.3"
    fix_process_policy(GrpcTLSPolicy(floor, ciphers))
    if server is not None:
        server.validate()
    if client is not None:
        client.validate()
    return GrpcTLS(server, client)


_TIME_HELP = ("Option can be a constant time in RFC3339 format or time duration relative to current time, such "
              "as -1d or 2h45m. Valid duration units are ms, s, m, h, d, w, y.")


def add_time_range(p: argparse.ArgumentParser, who: str, *, max_time: bool = False) -> None:
    """``--min-time`` (and with ``max_time`` ``--max-time``): Thanos' time-or-duration range to serve."""
    p.add_argument("--min-time", dest="min_time", default=parse_time_or_duration(DEFAULT_MIN_TIME),
                   type=flag_type(parse_time_or_duration, "--min-time"),
                   help=f"Start of time range limit to serve. {who} will serve only metrics, which happened later "
                        f"than this value. {_TIME_HELP}")
    if max_time:
        p.add_argument("--max-time", dest="max_time", default=parse_time_or_duration(DEFAULT_MAX_TIME, "--max-time"),
                       type=flag_type(parse_time_or_duration, "--max-time"),
                       help=f"End of time range limit to serve. {who} will serve only blocks, which happened earlier "
                            f"than this value. {_TIME_HELP}")


def add_store_limits(p: argparse.ArgumentParser) -> None:
    """``--store.limits.request-series|samples`` (Thanos ``pkg/store/limiter.go``, on every
    component serving the StoreAPI from a local TSDB)."""
    p.add_argument("--store.limits.request-series", dest="series_limit", default=0,
                   type=flag_type(non_negative_int, "--store.limits.request-series"),
                   help="The maximum series allowed for a single Series request. The Series call fails if this "
                        "limit is exceeded. 0 means no limit.")
    p.add_argument("--store.limits.request-samples", dest="samples_limit", default=0,
                   type=flag_type(non_negative_int, "--store.limits.request-samples"),
                   help="The maximum samples allowed for a single Series request, The Series call fails if this "
                        "limit is exceeded. 0 means no limit.")


def add_objstore(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--objstore.config-file", dest="objstore_config_file", metavar="PATH",
                   help="Path to YAML file that contains object store configuration.")
    g.add_argument("--objstore.config", dest="objstore_config", metavar="YAML",
                   help="Alternative to 'objstore.config-file' flag: object store configuration in YAML.")


def add_retention(p: argparse.ArgumentParser) -> None:
    """``--retention.resolution-raw|5m|1h`` (compactor, ``tools bucket retention``); 0d keeps forever."""
    for res, what in (("raw", "raw samples"), ("5m", "samples of resolution 1 (5 minutes)"),
                      ("1h", "samples of resolution 2 (1 hour)")):
        p.add_argument(f"--retention.resolution-{res}", dest=f"retention_{res}", default=0.0,
                       type=duration(f"--retention.resolution-{res}"),
                       help=f"How long to retain {what} in bucket. Setting this to 0d will retain samples of this "
                            "resolution forever")


def retention_from_args(args: argparse.Namespace) -> dict[int, float]:
    """Retention in seconds by resolution in ms (0 raw, 300000 5m, 3600000 1h)."""
    return {0: args.retention_raw, 300_000: args.retention_5m, 3_600_000: args.retention_1h}


def add_selector_relabel(p: argparse.ArgumentParser) -> None:
    """``--selector.relabel-config[-file]``: which blocks (by external labels) a component handles."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--selector.relabel-config-file", dest="relabel_config_file", metavar="<file-path>",
                   help="Path to YAML file with relabeling configuration that allows selecting blocks. It follows "
                        "native Prometheus relabel-config syntax.")
    g.add_argument("--selector.relabel-config", dest="relabel_config", metavar="<content>",
                   help="Alternative to 'selector.relabel-config-file' flag (mutually exclusive). Content of YAML "
                        "file with relabeling configuration that allows selecting blocks.")


def add_bucket_web(p: argparse.ArgumentParser, *, disable: bool = True, route_prefix: bool = False,
                   label_flag: str = "--bucket-web-label") -> None:
    """The bucket web UI's flags (store, compactor, ``tools bucket web``); ``label_flag`` keeps
    Thanos' name for the group-title flag (``--label`` on ``tools bucket web``)."""
    if disable:
        p.add_argument("--web.disable", dest="web_disable", action="store_true", help="Disable Block Viewer UI.")
    if route_prefix:
        p.add_argument("--web.route-prefix", dest="route_prefix", default="",
                       help="Prefix for API and UI endpoints. This allows thanos UI to be served on a sub-path.")
    p.add_argument("--web.external-prefix", dest="external_prefix", default="",
                   help="Static prefix for all HTML links and redirect URLs in the bucket web UI interface.")
    p.add_argument("--web.prefix-header", dest="prefix_header", default="",
                   help="Name of HTTP request header used for dynamic prefixing of UI links and redirects.")
    p.add_argument("--web.disable-cors", dest="disable_cors", action="store_true",
                   help="Whether to disable CORS headers to be set by Thanos. By default Thanos sets CORS headers "
                        "to be allowed by all.")
    p.add_argument(label_flag, dest="bucket_web_label", default="",
                   help="External block label to use as group title in the bucket web UI")
    p.add_argument("--disable-admin-operations", dest="disable_admin_operations", action="store_true",
                   help="Disable UI/API admin operations like marking blocks for deletion and no compaction.")


def web_prefix_from_args(args: argparse.Namespace) -> str:
    return getattr(args, "route_prefix", "") or args.external_prefix


def selector_relabel_from_args(args: argparse.Namespace) -> list:
    """The parsed ``--selector.relabel-config[-file]`` (errors name the flag and the rule)."""
    from .relabel import SELECTOR_ACTIONS, parse_relabel_config

    where = "--selector.relabel-config-file" if args.relabel_config_file else "--selector.relabel-config"
    return parse_relabel_config(content_flag(args, "relabel_config", "--selector.relabel-config"), where,
                                actions=SELECTOR_ACTIONS)


def parse_label_flags(values: list[str], flag: str = "--label") -> dict[str, str]:
    """Repeated ``--label name="value"`` flags (Thanos' ``parseFlagLabels``): the value is a Go
    quoted string. A name given twice is refused (Thanos keeps both, a label set no store can
    announce)."""
    from .gofmt import UnquoteError, unquote

    out: dict[str, str] = {}
    for text in values:
        name, eq, quoted = text.partition("=")
        if not eq:
            raise UserError(f"{flag}: unrecognized label {text!r} (want name=\"value\")")
        if not name:
            raise UserError(f"{flag}: unsupported format for label {text} (empty name)")
        if name in out:
            raise UserError(f"{flag}={text}: label name {name!r} given twice")
        try:
            out[name] = unquote(quoted)
        except UnquoteError:
            raise UserError(f"{flag}={text}: unquote label value: invalid syntax (the value must be quoted, "
                            f"e.g. {name}=\"{quoted}\")") from None
    return dict(sorted(out.items()))


def read_flag_file(path: str, flag: str) -> str:
    """The text of a ``--*-file`` flag's file, or a UserError naming the flag and the reason."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise UserError(f"{flag}={path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{flag}={path}: not UTF-8 text: {e}") from None


_ENV_REFERENCE = re.compile(r"\$\(([a-zA-Z_0-9]+)\)")


def expand_env(text: str, where: str) -> str:
    """Thanos' environment substitution in a ``--x`` / ``--x-file`` configuration (extkingpin's
    ``WithEnvSubstitution``): every ``$(NAME)`` replaced by that variable, Kubernetes' convention;
    a variable that is not set is an error naming ``where``."""
    import os

    def value(m: "re.Match[str]") -> str:
        v = os.environ.get(m.group(1))
        if v is None:
            raise UserError(f'{where}: found reference to unset environment variable "{m.group(1)}"')
        return v

    return _ENV_REFERENCE.sub(value, text)


def add_path_or_content(p: argparse.ArgumentParser, name: str, text: str, *, path_help: str = "Path to ") -> None:
    """Thanos' ``extflag.RegisterPathOrContent``: ``--<name>-file`` and ``--<name>``, mutually
    exclusive; read them with :func:`content_flag`."""
    dest = name.replace(".", "_").replace("-", "_")
    g = p.add_mutually_exclusive_group()
    g.add_argument(f"--{name}-file", dest=f"{dest}_file", metavar="<file-path>", help=f"{path_help}{text}")
    g.add_argument(f"--{name}", dest=dest, metavar="<content>",
                   help=f"Alternative to '{name}-file' flag (mutually exclusive). Content of {text}")


def content_flag(args: argparse.Namespace, dest: str, flag: str) -> str:
    """Thanos' ``extflag.PathOrContent``: the ``--x-file`` file's text, or ``--x``'s value, or ""."""
    path = getattr(args, f"{dest}_file", None)
    if path:
        return read_flag_file(path, f"{flag}-file")
    return getattr(args, dest, None) or ""


def objstore_text(args: argparse.Namespace) -> Optional[str]:
    """The objstore YAML given by flags, None when neither flag is set."""
    if args.objstore_config_file is None and args.objstore_config is None:
        return None
    return content_flag(args, "objstore_config", "--objstore.config")


def bucket_from_args(args: argparse.Namespace, *, optional: bool = False):
    """The bucket of ``--objstore.config[-file]``; with ``optional``, None when no (or an empty)
    configuration is given (Thanos: uploads disabled)."""
    from .objstore import bucket_from_config, bucket_from_flags

    if optional:
        text = objstore_text(args)
        if not (text or "").strip():
            return None
        where = (f"--objstore.config-file={args.objstore_config_file}" if args.objstore_config_file
                 else "--objstore.config")
        return bucket_from_config(text, where)
    return bucket_from_flags(config_file=args.objstore_config_file, config_yaml=args.objstore_config)
