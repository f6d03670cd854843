"""Command line: ``pythanos <component> [flags]``, flags named as Thanos names them.

This module only parses flags, builds configuration objects and hands them to the
component's ``run``; it holds no domain logic.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from . import __version__, logfmt

log = logging.getLogger(__name__)

Runner = Callable[[argparse.Namespace], int]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log.level", dest="log_level", default="info", choices=sorted(logfmt.LEVELS),
                   help="Only log messages with the given severity or above.")
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"],
                   help="Output format of log messages.")


def _add_objstore(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--objstore.config-file", dest="objstore_config_file", metavar="PATH",
                   help="Path to YAML file that contains object store configuration.")
    g.add_argument("--objstore.config", dest="objstore_config", metavar="YAML",
                   help="Alternative to 'objstore.config-file' flag: object store configuration in YAML.")


def _bucket_from_flags(args: argparse.Namespace):
    from .objstore import bucket_from_flags

    return bucket_from_flags(config_file=args.objstore_config_file, config_yaml=args.objstore_config)


def _run_bench_blocks(args: argparse.Namespace) -> int:
    from .tools import benchblocks

    cfg = benchblocks.BenchBlocksConfig(
        profile=args.profile,
        labels=benchblocks.parse_labels(args.labels, flag="--labels"),
        max_time=benchblocks.parse_max_time(args.max_time, flag="--max-time"),
        output_dir=args.output_dir,
        seed=args.seed,
    )
    return benchblocks.run(cfg)


def _run_bucket_ls(args: argparse.Namespace) -> int:
    from .tools import bucket

    return bucket.ls(_bucket_from_flags(args), output=args.output, out=sys.stdout)


# --- sidecar (pythanos sidecar) -------------------------------------------------------------------

def _flag_type(parse, flag: str):
    """An argparse ``type=`` that turns our UserError into argparse's "argument --flag: ..." error."""
    def conv(text: str):
        from .errors import UserError

        try:
            return parse(text, flag)
        except UserError as e:
            msg = str(e)
            prefix = f"{flag}: "
            raise argparse.ArgumentTypeError(msg[len(prefix):] if msg.startswith(prefix) else msg) from None
    conv.__name__ = flag
    return conv


def _add_sidecar(components) -> None:
    from .sidecar import run as sc

    p = components.add_parser("sidecar", help="Sidecar for Prometheus server.")
    _add_common(p)
    dur = lambda flag: _flag_type(sc.parse_duration, flag)  # noqa: E731
    p.add_argument("--http-address", dest="http_address", default="0.0.0.0:10902",
                   type=_flag_type(sc.parse_address, "--http-address"),
                   help="Listen host:port for HTTP endpoints.")
    p.add_argument("--http-grace-period", dest="http_grace_period", default=120.0, type=dur("--http-grace-period"),
                   help="Time to wait after an interrupt received for HTTP Server.")
    p.add_argument("--grpc-address", dest="grpc_address", default="0.0.0.0:10901",
                   type=_flag_type(sc.parse_address, "--grpc-address"),
                   help="Listen ip:port address for gRPC endpoints (StoreAPI).")
    p.add_argument("--grpc-grace-period", dest="grpc_grace_period", default=120.0, type=dur("--grpc-grace-period"),
                   help="Time to wait after an interrupt received for GRPC Server.")
    p.add_argument("--prometheus.url", dest="prometheus_url", default="http://localhost:9090",
                   type=_flag_type(sc.parse_url, "--prometheus.url"), help="URL at which to reach Prometheus's API.")
    p.add_argument("--prometheus.ready_timeout", dest="prometheus_ready_timeout", default=600.0,
                   type=dur("--prometheus.ready_timeout"),
                   help="Maximum time to wait for the Prometheus instance to start up")
    p.add_argument("--prometheus.get_config_interval", dest="get_config_interval", default=30.0,
                   type=dur("--prometheus.get_config_interval"),
                   help="How often to get Prometheus config")
    p.add_argument("--prometheus.get_config_timeout", dest="get_config_timeout", default=30.0,
                   type=dur("--prometheus.get_config_timeout"),
                   help="Timeout for getting Prometheus config")
    p.add_argument("--tsdb.path", dest="tsdb_path", default="./data", help="Data directory of TSDB.")
    _add_objstore(p, required=False)
    p.add_argument("--shipper.upload-compacted", dest="upload_compacted", action="store_true",
                   help="If true shipper will try to upload compacted blocks as well.")
    p.add_argument("--reloader.config-file", dest="reloader_config_file", default="",
                   help="Config file watched by the reloader.")
    p.add_argument("--reloader.config-envsubst-file", dest="reloader_config_envsubst_file", default="",
                   help="Output file for environment variable substituted config file.")
    p.add_argument("--reloader.rule-dir", dest="reloader_rule_dirs", action="append", default=[],
                   help="Rule directories for the reloader to refresh (repeated field).")
    p.add_argument("--reloader.watch-interval", dest="reloader_watch_interval", default=180.0,
                   type=dur("--reloader.watch-interval"), help="Controls how often reloader re-reads config and rules.")
    p.add_argument("--reloader.retry-interval", dest="reloader_retry_interval", default=5.0,
                   type=dur("--reloader.retry-interval"),
                   help="Controls how often reloader retries config reload in case of error.")
    p.add_argument("--min-time", dest="min_time", default=sc.parse_time_or_duration(sc.DEFAULT_MIN_TIME),
                   type=_flag_type(sc.parse_time_or_duration, "--min-time"),
                   help="Start of time range limit to serve. Thanos sidecar will serve only metrics, which happened "
                        "later than this value. Option can be a constant time in RFC3339 format or time duration "
                        "relative to current time, such as -1d or 2h45m. Valid duration units are ms, s, m, h, d, w, y.")
    p.set_defaults(run=_run_sidecar)


def _run_sidecar(args: argparse.Namespace) -> int:
    from .sidecar import run as sc

    bucket = None
    if args.objstore_config_file is not None or args.objstore_config is not None:
        text = args.objstore_config
        if args.objstore_config_file is not None:
            from .errors import UserError

            try:
                with open(args.objstore_config_file, encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                raise UserError(f"--objstore.config-file={args.objstore_config_file}: cannot read: "
                                f"{e.strerror or e}") from None
        if (text or "").strip():  # empty configuration: uploads disabled, as Thanos
            bucket = _bucket_from_flags(args)
    cfg = sc.SidecarConfig(
        prometheus_url=args.prometheus_url, prometheus_ready_timeout=args.prometheus_ready_timeout,
        get_config_interval=args.get_config_interval, get_config_timeout=args.get_config_timeout,
        tsdb_path=args.tsdb_path, bucket=bucket, upload_compacted=args.upload_compacted,
        http_address=args.http_address, http_grace_period=args.http_grace_period,
        grpc_address=args.grpc_address, grpc_grace_period=args.grpc_grace_period,
        reloader_config_file=args.reloader_config_file,
        reloader_config_envsubst_file=args.reloader_config_envsubst_file,
        reloader_rule_dirs=list(args.reloader_rule_dirs), reloader_watch_interval=args.reloader_watch_interval,
        reloader_retry_interval=args.reloader_retry_interval, min_time=args.min_time)
    return sc.run(cfg)


# --- query (pythanos query) -----------------------------------------------------------------------

def _add_query(components) -> None:
    from .sidecar import run as sc

    p = components.add_parser("query", aliases=["querier"],
                              help="Query node exposing PromQL enabled Query API with data retrieved from multiple "
                                   "store nodes.")
    _add_common(p)
    dur = lambda flag: _flag_type(sc.parse_duration, flag)  # noqa: E731
    p.add_argument("--http-address", dest="http_address", default="0.0.0.0:10902",
                   type=_flag_type(sc.parse_address, "--http-address"), help="Listen host:port for HTTP endpoints.")
    p.add_argument("--http-grace-period", dest="http_grace_period", default=120.0, type=dur("--http-grace-period"),
                   help="Time to wait after an interrupt received for HTTP Server.")
    p.add_argument("--grpc-address", dest="grpc_address", default="0.0.0.0:10901",
                   type=_flag_type(sc.parse_address, "--grpc-address"),
                   help="Listen ip:port address for gRPC endpoints (StoreAPI).")
    p.add_argument("--grpc-grace-period", dest="grpc_grace_period", default=120.0, type=dur("--grpc-grace-period"),
                   help="Time to wait after an interrupt received for GRPC Server.")
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
                   help="pythanos only: ask this DNS server for dns+/dnssrv+ addresses instead of the system "
                        "resolver.")
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
    p.add_argument("--query.max-concurrent", dest="max_concurrent", default=20, type=_positive_int,
                   help="Maximum number of queries processed concurrently by query node.")
    p.add_argument("--query.max-concurrent-select", dest="max_concurrent_select", default=4, type=_positive_int,
                   help="Maximum number of select requests made concurrently per a query.")
    p.add_argument("--query.lookback-delta", dest="lookback_delta", default=0.0, type=dur("--query.lookback-delta"),
                   help="The maximum lookback duration for retrieving metrics during expression evaluations. "
                        "0 means the PromQL default, 5m.")
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
    p.set_defaults(run=_run_query)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {n}")
    return n


def _run_query(args: argparse.Namespace) -> int:
    from .errors import UserError
    from .query import discovery as qd
    from .query.api import ApiConfig
    from .query.run import QueryConfig, run

    specs = []
    for addr in args.endpoints:
        qd.validate_address(addr, f"--endpoint={addr}")
        specs.append(qd.EndpointSpec(addr))
    for addr in args.strict_endpoints:
        if qd.split_dns_prefix(addr)[0]:
            raise UserError(f"--endpoint-strict={addr}: a strict endpoint cannot use DNS discovery")
        qd.validate_address(addr, f"--endpoint-strict={addr}")
        specs.append(qd.EndpointSpec(addr, strict=True))
    if args.sd_config and args.sd_config_file:
        raise UserError("--endpoint.sd-config and --endpoint.sd-config-file are mutually exclusive")
    if args.sd_config:
        specs.extend(qd.parse_sd_config(args.sd_config, "--endpoint.sd-config"))
    if args.sd_config_file:
        try:
            with open(args.sd_config_file, encoding="utf-8") as f:
                qd.parse_sd_config(f.read(), f"--endpoint.sd-config-file={args.sd_config_file}")
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
                    experimental_functions="promql-experimental-functions" in features)
    cfg = QueryConfig(http_address=args.http_address, grpc_address=args.grpc_address,
                      http_grace_period=args.http_grace_period, grpc_grace_period=args.grpc_grace_period,
                      endpoints=specs, sd_files=list(args.sd_files), sd_config_file=args.sd_config_file,
                      sd_interval=args.sd_interval, dns_interval=args.dns_interval, dns_server=args.dns_server,
                      sd_config_interval=args.sd_config_interval,
                      unhealthy_timeout=args.unhealthy_timeout, response_timeout=args.response_timeout, api=api,
                      external_prefix=args.external_prefix, route_prefix=args.route_prefix,
                      select_concurrency=args.max_concurrent_select)
    return run(cfg)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pythanos", description="A Python re-implementation of Thanos.")
    parser.add_argument("--version", action="version", version=f"pythanos, version {__version__}")
    components = parser.add_subparsers(dest="component", metavar="<component>", required=True)

    tools = components.add_parser("tools", help="Tools utility commands.")
    tools_sub = tools.add_subparsers(dest="tool", metavar="<tool>", required=True)

    bb = tools_sub.add_parser(
        "bench-blocks", help="Generate TSDB blocks of a benchmark profile (like thanosbench block plan | gen).")
    _add_common(bb)
    bb.add_argument("--profile", "-p", required=True,
                    help="Profile name, e.g. continuous-365d-tiny (see --profile=help).")
    bb.add_argument("--labels", action="append", default=[],
                    help='External labels of the blocks, e.g. \'cluster="eu1"\' (repeatable).')
    bb.add_argument("--max-time", default="-30m",
                    help="End of the newest block: RFC3339 time, or a duration relative to now "
                         "(6h = now plus 6h, -30m = 30m ago). Rounded up to a 2h boundary.")
    bb.add_argument("--output.dir", dest="output_dir", required=True, help="Directory to write the blocks into.")
    bb.add_argument("--seed", type=int, default=1, help="Random seed, for reproducible data.")
    bb.set_defaults(run=_run_bench_blocks)

    bucket = tools_sub.add_parser("bucket", help="Bucket utility commands.")
    bucket_sub = bucket.add_subparsers(dest="bucket_cmd", metavar="<command>", required=True)
    ls = bucket_sub.add_parser("ls", help="List all blocks in the bucket.")
    _add_common(ls)
    _add_objstore(ls, required=True)
    ls.add_argument("--output", "-o", default="", choices=["", "json", "wide"],
                    help="Optional format in which to print each block's information.")
    ls.set_defaults(run=_run_bucket_ls)

    _add_sidecar(components)
    _add_query(components)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        logfmt.setup(args.log_level, args.log_format)
    except ValueError as e:
        print(f"pythanos: error: {e}", file=sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one clear line instead of a traceback for expected errors
        from .errors import UserError
        from .objstore import ObjstoreError

        if isinstance(e, (UserError, ObjstoreError)):
            log.error("%s", e)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
