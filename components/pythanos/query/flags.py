"""``pythanos query`` flags (Thanos' ``cmd/thanos/query.go`` names and defaults) -> :class:`QueryConfig`."""
from __future__ import annotations

import argparse
import logging

from .. import flags as f

log = logging.getLogger(__name__)

__all__ = ["register", "config_from_args"]

_GROUP_NOTE = ("As in Thanos v0.42: dns+<name>:<port> is balanced over every address the name has, a plain "
               "<host>:<port> is one endpoint (the first of its addresses that answers); the group is one "
               "endpoint named thanos:///<address>. pythanos: resolved by gRPC's own DNS resolver "
               "(--store.sd-dns-server, if set, is asked); dnssrv+ cannot be used.")


def register(components) -> None:
    p = components.add_parser("query", aliases=["querier"],
                              help="Query node exposing PromQL enabled Query API with data retrieved from multiple "
                                   "store nodes.")
    f.add_common(p)
    f.add_listeners(p)
    f.add_grpc_client_tls(p)
    dur = f.duration
    p.add_argument("--endpoint", dest="endpoints", action="append", default=[], metavar="<endpoint>",
                   help="Addresses of statically configured Thanos API servers (repeatable). The scheme may be "
                        "prefixed with 'dns+' or 'dnssrv+' to detect Thanos API servers through respective DNS "
                        "lookups.")
    p.add_argument("--store", dest="endpoints", action="append", metavar="<store>",
                   help="Deprecated alias of --endpoint (removed in Thanos v0.38; accepted here).")
    p.add_argument("--endpoint-strict", dest="strict_endpoints", action="append", default=[],
                   metavar="<endpoint>",
                   help="Addresses of only statically configured Thanos API servers that are always used, even if "
                        "the health check fails (repeatable).")
    p.add_argument("--endpoint-group", dest="endpoint_groups", action="append", default=[],
                   metavar="<endpoint-group>",
                   help="(Deprecated, Experimental): DNS name of statically configured Thanos API server groups "
                        "(repeatable). Targets resolved from the DNS name will be queried in a round-robin, instead "
                        "of a fanout manner. This flag should be used when connecting a Thanos Query to HA groups "
                        "of Thanos components. " + _GROUP_NOTE)
    p.add_argument("--endpoint-group-strict", dest="strict_endpoint_groups", action="append", default=[],
                   metavar="<endpoint-group-strict>",
                   help="(Deprecated, Experimental): DNS name of statically configured Thanos API server groups "
                        "(repeatable) that are always used, even if the health check fails. As in Thanos, a "
                        "plain <host>:<port> (no dns+).")
    p.add_argument("--endpoint.sd-config-file", dest="sd_config_file", default="",
                   help="Path to Config File with endpoint definitions (reloaded when it changes).")
    p.add_argument("--endpoint.sd-config-reload-interval", dest="sd_config_interval", default=300.0,
                   type=dur("--endpoint.sd-config-reload-interval"),
                   help="Interval between endpoint config refreshes (the file is also re-read as soon as it "
                        "changes).")
    p.add_argument("--endpoint.sd-config", dest="sd_config", default="",
                   help="Alternative to 'endpoint.sd-config-file' flag (mutually exclusive). Content of Config File "
                        "with endpoint definitions.")
    p.add_argument("--store.sd-files", dest="sd_files", action="append", default=[], metavar="<path>",
                   help="Path to files that contain addresses of store API servers. The path can be a glob pattern "
                        "(repeatable).")
    p.add_argument("--store.sd-interval", dest="sd_interval", default=300.0, type=dur("--store.sd-interval"),
                   help="Refresh interval to re-read file SD files. It is used as a resync fallback.")
    p.add_argument("--store.sd-dns-interval", dest="dns_interval", default=30.0,
                   type=dur("--store.sd-dns-interval"), help="Interval between DNS resolutions.")
    p.add_argument("--store.sd-dns-server", dest="dns_server", default="", metavar="<host:port>",
                   help="pythanos only: ask this DNS server for dns+/dnssrv+ addresses (and the names of dns+ "
                        "endpoint groups) instead of the system resolver.")
    p.add_argument("--store.unhealthy-timeout", dest="unhealthy_timeout", default=300.0,
                   type=dur("--store.unhealthy-timeout"),
                   help="Timeout before an unhealthy store is cleaned from the store UI page.")
    p.add_argument("--store.response-timeout", dest="response_timeout", default=0.0,
                   type=dur("--store.response-timeout"),
                   help="If a Store doesn't send any data in this specified duration then a Store will be ignored "
                        "and partial data will be returned if it's enabled. 0 disables timeout.")
    p.add_argument("--query.replica-label", dest="replica_labels", action="append", default=[],
                   help="Labels to treat as a replica indicator along which data is deduplicated. Still you will "
                        "be able to query without deduplication using 'dedup=false' parameter. Data includes time "
                        "series, recording rules, and alerting rules. Flag may be specified multiple times as well "
                        "as a comma separated list of labels.")
    p.add_argument("--query.partial-response", dest="partial_response", action=argparse.BooleanOptionalAction,
                   default=True, help="Enable partial response for queries if no partial_response param is "
                                      "specified. --no-query.partial-response for disabling.")
    p.add_argument("--query.auto-downsampling", dest="auto_downsampling", action="store_true",
                   help="Enable automatic adjustment (step / 5) to what source of data should be used in store "
                        "gateways if no max_source_resolution param is specified.")
    p.add_argument("--query.timeout", dest="query_timeout", default=120.0, type=dur("--query.timeout"),
                   help="Maximum time to process query by query node.")
    p.add_argument("--query.max-concurrent", dest="max_concurrent", default=20, type=f.flag_type(f.positive_int, "--query.max-concurrent"),
                   help="Maximum number of queries processed concurrently by query node.")
    p.add_argument("--query.max-concurrent-select", dest="max_concurrent_select", default=4, type=f.flag_type(f.positive_int, "--query.max-concurrent-select"),
                   help="Maximum number of select requests made concurrently per a query.")
    p.add_argument("--query.workers", dest="workers", default=0,
                   type=f.flag_type(f.non_negative_int, "--query.workers"),
                   help="pythanos only: processes that serve the HTTP and gRPC ports together, each on its own "
                        "core (CPython runs one thread of Python at a time). 0 means one per CPU this process may "
                        "use: the container's CPU limit (cgroup quota, rounded up), else the CPUs it may run on; at most 8. "
                        "Each worker keeps its own endpoint set, as separate querier replicas do.")
    p.add_argument("--query.lookback-delta", dest="lookback_delta", default=0.0, type=dur("--query.lookback-delta"),
                   help="The maximum lookback duration for retrieving metrics during expression evaluations. "
                        "0 means the PromQL default, 5m.")
    p.add_argument("--exemplar.partial-response", dest="exemplar_partial_response",
                   action=argparse.BooleanOptionalAction, default=True,
                   help="Enable partial response for exemplar endpoint. --no-exemplar.partial-response for "
                        "disabling (as Thanos' hidden flag of the same name).")
    p.add_argument("--rule.partial-response", dest="rule_partial_response",
                   action=argparse.BooleanOptionalAction, default=True,
                   help="Enable partial response for rules endpoint. --no-rule.partial-response for "
                        "disabling (as Thanos' hidden flag of the same name).")
    p.add_argument("--query.dynamic-lookback-delta", dest="dynamic_lookback_delta",
                   action=argparse.BooleanOptionalAction, default=True,
                   help="Allow for larger lookback duration for queries based on resolution (as Thanos' hidden "
                        "flag of the same name).")
    p.add_argument("--query.default-step", dest="default_step", default=1.0, type=dur("--query.default-step"),
                   help="Set default step for range queries. Default step is only used when step is not set in UI.")
    p.add_argument("--query.metadata.default-time-range", dest="metadata_range", default=0.0,
                   type=dur("--query.metadata.default-time-range"),
                   help="The default metadata time range duration for retrieving labels through Labels and Series "
                        "API when the range parameters are not specified. 0 means the range covers the time since "
                        "the beginning.")
    p.add_argument("--enable-feature", dest="features", action="append", default=[],
                   help="Comma separated feature names to enable. Valid options for now: "
                        "promql-experimental-functions (enables promql experimental functions in query)")
    p.add_argument("--deduplication.func", dest="dedup_func", default="penalty", choices=["penalty", "chain"],
                   help="Experimental. Deduplication algorithm for merging overlapping series.")
    p.add_argument("--web.external-prefix", dest="external_prefix", default="",
                   help="Static prefix for all HTML links and redirect URLs in the UI query web interface.")
    p.add_argument("--web.route-prefix", dest="route_prefix", default="",
                   help="Prefix for API and UI endpoints. Defaults to the value of --web.external-prefix.")
    p.set_defaults(run=main)


def config_from_args(args: argparse.Namespace):
    from ..flags import grpc_tls_from_args  # (``f`` is a local name below)

    tls = grpc_tls_from_args(args)  # first: grpcio reads its TLS policy when it is loaded
    from ..errors import UserError
    from . import discovery as qd
    from .api import ApiConfig
    from .run import QueryConfig

    client_tls = tls.client
    if (args.grpc_client_tls_secure or args.grpc_client_tls_skip_verify or args.grpc_client_tls_cert
            or args.grpc_client_tls_key or args.grpc_client_tls_ca or args.grpc_client_server_name):
        log.warning("--grpc-client-tls-* flags are deprecated and will be removed after v0.43.0, use "
                    "default_client_config in endpoint.sd-config-file instead")
    default_tls = None
    specs = []
    for addr in args.endpoints:
        qd.validate_address(addr, f"--endpoint={addr}")
        specs.append(qd.EndpointSpec(addr))
    for addr in args.strict_endpoints:
        if qd.split_dns_prefix(addr)[0]:
            raise UserError(f"--endpoint-strict={addr}: a strict endpoint cannot use DNS discovery")
        qd.validate_address(addr, f"--endpoint-strict={addr}")
        specs.append(qd.EndpointSpec(addr, strict=True))
    for addr in args.endpoint_groups:
        qd.validate_group_address(addr, f"--endpoint-group={addr}")
        specs.append(qd.EndpointSpec(addr, group=True))
    for addr in args.strict_endpoint_groups:
        if qd.split_dns_prefix(addr)[0]:
            raise UserError(f"--endpoint-group-strict={addr}: a strict endpoint group cannot use DNS discovery "
                            "(as in Thanos: give <host>:<port>)")
        qd.validate_group_address(addr, f"--endpoint-group-strict={addr}")
        specs.append(qd.EndpointSpec(addr, strict=True, group=True))
    if args.sd_config and args.sd_config_file:
        raise UserError("--endpoint.sd-config and --endpoint.sd-config-file are mutually exclusive")
    if args.sd_config:
        inline = qd.parse_endpoint_config(args.sd_config, "--endpoint.sd-config", client_tls)
        specs.extend(inline.endpoints)
        default_tls = inline.default_tls
    if args.sd_config_file:
        try:
            with open(args.sd_config_file, encoding="utf-8") as f:
                qd.parse_endpoint_config(f.read(), f"--endpoint.sd-config-file={args.sd_config_file}", client_tls)
        except OSError as e:
            raise UserError(f"--endpoint.sd-config-file={args.sd_config_file}: cannot read: {e.strerror or e}") from None
    if args.dns_server:
        qd.validate_address(args.dns_server, f"--store.sd-dns-server={args.dns_server}")
    replica = [r.strip() for v in args.replica_labels for r in v.split(",") if r.strip()]
    features = {f.strip() for v in args.features for f in v.split(",") if f.strip()}
    for f in sorted(features - {"promql-experimental-functions"}):
        log.warning("unknown feature, ignoring", extra={"feature": f})
    api = ApiConfig(replica_labels=replica, partial_response=args.partial_response,
                    auto_downsampling=args.auto_downsampling, timeout_s=args.query_timeout,
                    max_concurrent=args.max_concurrent,
                    lookback_delta_ms=int(args.lookback_delta * 1000) or 300_000,
                    default_step_ms=int(args.default_step * 1000), dedup_func=args.dedup_func,
                    metadata_range_ms=int(args.metadata_range * 1000),
                    dynamic_lookback_delta=args.dynamic_lookback_delta,
                    exemplar_partial_response=args.exemplar_partial_response,
                    rule_partial_response=args.rule_partial_response,
                    experimental_functions="promql-experimental-functions" in features)
    return QueryConfig(http_address=args.http_address, grpc_address=args.grpc_address, http_config=args.http_config,
                      http_grace_period=args.http_grace_period, grpc_grace_period=args.grpc_grace_period,
                      grpc_tls=tls.server, grpc_max_connection_age=args.grpc_max_connection_age,
                      client_tls=client_tls, default_tls=default_tls,
                      endpoints=specs, sd_files=list(args.sd_files), sd_config_file=args.sd_config_file,
                      sd_interval=args.sd_interval, dns_interval=args.dns_interval, dns_server=args.dns_server,
                      sd_config_interval=args.sd_config_interval,
                      unhealthy_timeout=args.unhealthy_timeout, response_timeout=args.response_timeout, api=api,
                      external_prefix=args.external_prefix, route_prefix=args.route_prefix,
                      select_concurrency=args.max_concurrent_select, workers=args.workers)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # before .run is imported: it loads grpc (see grpc_tls_from_args)
    from .run import run

    return run(config)
