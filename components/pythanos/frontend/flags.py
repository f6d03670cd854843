"""``pythanos query-frontend`` flags (Thanos v0.42 ``cmd/thanos/query_frontend.go`` names and
defaults) -> :class:`pythanos.frontend.run.FrontendConfig`.

Every flag ``thanos query-frontend`` has is accepted.
"""
from __future__ import annotations

import argparse

from .. import flags as f
from ..errors import UserError

__all__ = ["register", "config_from_args"]

FEATURES = ("promql-experimental-functions",)


def register(components) -> None:
    p = components.add_parser("query-frontend", help="Query frontend command implements a service deployed in front "
                                                     "of queriers to improve query parallelization and caching.")
    f.add_common(p)
    f.add_listeners(p, grpc=None)
    dur = f.duration
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--web.disable-cors", dest="disable_cors", action=bool_flag, default=False,
                   help="Whether to disable CORS headers to be set by Thanos. By default Thanos sets CORS headers "
                        "to be allowed by all.")
    p.add_argument("--query-range.align-range-with-step", dest="align", action=bool_flag, default=True,
                   help="Mutate incoming queries to align their start and end with their step for better "
                        "cache-ability. Note: Grafana dashboards do that by default.")
    p.add_argument("--query-range.request-downsampled", dest="request_downsampled", action=bool_flag, default=True,
                   help="Make additional query for downsampled data in case of empty or incomplete response to "
                        "range request.")
    p.add_argument("--query-range.split-interval", dest="split_interval", default=86400.0,
                   type=dur("--query-range.split-interval"),
                   help="Split query range requests by an interval and execute in parallel, it should be greater "
                        "than 0 when query-range.response-cache-config is configured.")
    p.add_argument("--query-range.min-split-interval", dest="min_split_interval", default=0.0,
                   type=dur("--query-range.min-split-interval"),
                   help="Split query range requests above this interval in query-range.horizontal-shards "
                        "requests of equal range.")
    p.add_argument("--query-range.max-split-interval", dest="max_split_interval", default=0.0,
                   type=dur("--query-range.max-split-interval"),
                   help="Split query range below this interval in query-range.horizontal-shards.")
    p.add_argument("--query-range.horizontal-shards", dest="horizontal_shards", default=0, type=int,
                   help="Split queries in this many requests when query duration is below "
                        "query-range.max-split-interval.")
    p.add_argument("--query-range.max-retries-per-request", dest="max_retries", default=5, type=int,
                   help="Maximum number of retries for a single query range request; beyond this, the downstream "
                        "error is returned.")
    p.add_argument("--query.max-retries-per-request", dest="instant_max_retries", default=5, type=int,
                   help="Maximum number of retries for a single instant query request; beyond this, the "
                        "downstream error is returned.")
    p.add_argument("--query-frontend.enable-x-functions", dest="x_functions", action=bool_flag, default=False,
                   help="Enable experimental x-functions in query-frontend.")
    p.add_argument("--enable-feature", dest="features", action="append", default=[],
                   help="Comma separated feature names to enable. Valid options for now: "
                        "promql-experimental-functions (enables promql experimental functions in query-frontend)")
    p.add_argument("--query-range.max-query-length", dest="max_query_length", default=0.0,
                   type=dur("--query-range.max-query-length"),
                   help="Limit the query time range (end - start time) in the query-frontend, 0 disables it.")
    p.add_argument("--query-range.max-query-parallelism", dest="max_query_parallelism", default=14, type=int,
                   help="Maximum number of query range requests will be scheduled in parallel by the Frontend.")
    p.add_argument("--query-range.response-cache-max-freshness", dest="max_freshness", default=60.0,
                   type=dur("--query-range.response-cache-max-freshness"),
                   help="Most recent allowed cacheable result for query range requests, to prevent caching very "
                        "recent results that might still be in flux.")
    p.add_argument("--query-range.partial-response", dest="partial_response", action=bool_flag, default=True,
                   help="Enable partial response for query range requests if no partial_response param is "
                        "specified.")
    f.add_path_or_content(p, "query-range.response-cache-config",
                          "YAML file that contains response cache configuration.")
    p.add_argument("--labels.split-interval", dest="labels_split_interval", default=86400.0,
                   type=dur("--labels.split-interval"),
                   help="Split labels requests by an interval and execute in parallel, it should be greater than "
                        "0 when labels.response-cache-config is configured.")
    p.add_argument("--labels.max-retries-per-request", dest="labels_max_retries", default=5, type=int,
                   help="Maximum number of retries for a single label/series API request; beyond this, the "
                        "downstream error is returned.")
    p.add_argument("--labels.max-query-parallelism", dest="labels_max_query_parallelism", default=14, type=int,
                   help="Maximum number of labels requests will be scheduled in parallel by the Frontend.")
    p.add_argument("--labels.response-cache-max-freshness", dest="labels_max_freshness", default=60.0,
                   type=dur("--labels.response-cache-max-freshness"),
                   help="Most recent allowed cacheable result for labels requests, to prevent caching very "
                        "recent results that might still be in flux.")
    p.add_argument("--labels.partial-response", dest="labels_partial_response", action=bool_flag, default=True,
                   help="Enable partial response for labels requests if no partial_response param is specified.")
    p.add_argument("--labels.default-time-range", dest="labels_default_time_range", default=86400.0,
                   type=dur("--labels.default-time-range"),
                   help="The default metadata time range duration for retrieving labels through Labels and "
                        "Series API when the range parameters are not specified.")
    f.add_path_or_content(p, "labels.response-cache-config", "YAML file that contains response cache configuration.")
    p.add_argument("--cache-compression-type", dest="cache_compression", default="", choices=["", "snappy"],
                   help="Use compression in results cache. Supported values are: 'snappy' and '' (disable "
                        "compression).")
    p.add_argument("--query-frontend.downstream-url", dest="downstream_url", default="http://localhost:9090",
                   type=f.flag_type(f.parse_url, "--query-frontend.downstream-url"),
                   help="URL of downstream Prometheus Query compatible API.")
    f.add_path_or_content(p, "query-frontend.downstream-tripper-config",
                          "YAML file that contains downstream tripper configuration.")
    p.add_argument("--query-frontend.compress-responses", dest="compress_responses", action=bool_flag,
                   default=False, help="Compress HTTP responses.")
    p.add_argument("--query-frontend.log-queries-longer-than", dest="log_queries_longer_than", default=0.0,
                   type=dur("--query-frontend.log-queries-longer-than"),
                   help="Log queries that are slower than the specified duration. Set to 0 to disable. Set to < 0 "
                        "to enable on all queries.")
    p.add_argument("--query-frontend.force-query-stats", dest="force_query_stats", action=bool_flag, default=False,
                   help="Enables query statistics for all queries and will export statistics as logs and service "
                        "headers.")
    p.add_argument("--query-frontend.org-id-header", dest="org_id_headers", action="append", default=[],
                   metavar="<http-header-name>",
                   help="Request header names used to identify the source of slow queries (repeated flag).")
    p.add_argument("--query-frontend.forward-header", dest="forward_headers", action="append", default=[],
                   metavar="<http-header-name>",
                   help="List of headers forwarded by the query-frontend to downstream queriers, default is empty")
    p.add_argument("--query-frontend.vertical-shards", dest="vertical_shards", default=0, type=int,
                   help="Number of shards to use when distributing shardable PromQL queries.")
    p.add_argument("--query-frontend.slow-query-logs-user-header", dest="slow_query_user_header", default="",
                   metavar="<http-header-name>",
                   help="Set the value of the field remote_user in the slow query logs to the value of the given "
                        "HTTP header. Falls back to reading the user from the basic auth header.")
    p.add_argument("--query-frontend.tenant-header", dest="tenant_header", default="THANOS-TENANT",
                   help=argparse.SUPPRESS)
    p.add_argument("--query-frontend.default-tenant-id", dest="default_tenant", default="default-tenant",
                   help=argparse.SUPPRESS)
    f.add_path_or_content(p, "request.logging-config", "YAML file with request logging configuration.")
    p.set_defaults(run=main)


def config_from_args(args: argparse.Namespace):
    from .cacheconfig import parse_response_cache_config, parse_tripper_config
    from .run import FrontendConfig

    for feat in (x.strip() for v in args.features for x in v.split(",") if x.strip()):
        if feat not in FEATURES:
            raise UserError(f"--enable-feature={feat}: unknown feature (known: {', '.join(FEATURES)})")
    for flag, v in (("--query-range.max-retries-per-request", args.max_retries),
                    ("--query.max-retries-per-request", args.instant_max_retries),
                    ("--labels.max-retries-per-request", args.labels_max_retries)):
        if v < 0:
            raise UserError(f"{flag}={v}: must not be negative")
    if args.vertical_shards < 0:
        raise UserError(f"--query-frontend.vertical-shards={args.vertical_shards}: must not be negative")
    for flag, v in (("--query-range.max-query-parallelism", args.max_query_parallelism),
                    ("--labels.max-query-parallelism", args.labels_max_query_parallelism)):
        if v < 1:
            raise UserError(f"{flag}={v}: must be at least 1")
    where = ("--query-range.response-cache-config-file" if args.query_range_response_cache_config_file
             else "--query-range.response-cache-config")
    cache = parse_response_cache_config(
        f.content_flag(args, "query_range_response_cache_config", "--query-range.response-cache-config"), where)
    dynamic = args.min_split_interval > 0 or args.max_split_interval > 0 or args.horizontal_shards > 0
    if cache is not None and args.split_interval <= 0 and not dynamic:
        raise UserError("--query-range.split-interval: must be greater than 0 when "
                        "--query-range.response-cache-config is configured")
    if dynamic and args.split_interval != 0:
        raise UserError("--query-range.split-interval and --query-range.min-split-interval, "
                        "--query-range.max-split-interval, --query-range.horizontal-shards (dynamic split) cannot "
                        "be set at the same time (set --query-range.split-interval=0)")
    if dynamic:
        for flag, v in (("--query-range.horizontal-shards", args.horizontal_shards),
                        ("--query-range.max-split-interval", args.max_split_interval),
                        ("--query-range.min-split-interval", args.min_split_interval)):
            if v <= 0:
                raise UserError(f"{flag}: must be greater than 0 when the dynamic split is used")
    lwhere = ("--labels.response-cache-config-file" if args.labels_response_cache_config_file
              else "--labels.response-cache-config")
    labels_cache = parse_response_cache_config(
        f.content_flag(args, "labels_response_cache_config", "--labels.response-cache-config"), lwhere)
    if labels_cache is not None and args.labels_split_interval <= 0:
        raise UserError("--labels.split-interval: must be greater than 0 when --labels.response-cache-config "
                        "is configured")
    if args.labels_default_time_range <= 0:
        raise UserError("--labels.default-time-range: cannot be set to 0")
    twhere = ("--query-frontend.downstream-tripper-config-file" if args.query_frontend_downstream_tripper_config_file
              else "--query-frontend.downstream-tripper-config")
    tripper = parse_tripper_config(f.content_flag(args, "query_frontend_downstream_tripper_config",
                                                  "--query-frontend.downstream-tripper-config"), twhere)
    return FrontendConfig(
        http_address=args.http_address, http_grace_period=args.http_grace_period, http_config=args.http_config,
        disable_cors=args.disable_cors, downstream_url=args.downstream_url, align_range_with_step=args.align,
        request_downsampled=args.request_downsampled,
        split_interval_ms=int(args.split_interval * 1000), max_retries=args.max_retries,
        min_split_interval_ms=int(args.min_split_interval * 1000),
        max_split_interval_ms=int(args.max_split_interval * 1000), horizontal_shards=args.horizontal_shards,
        vertical_shards=args.vertical_shards,
        instant_max_retries=args.instant_max_retries, labels_max_retries=args.labels_max_retries,
        labels_split_interval_ms=int(args.labels_split_interval * 1000),
        labels_default_range_ms=int(args.labels_default_time_range * 1000),
        labels_partial_response=args.labels_partial_response, cache_compression=args.cache_compression,
        compress_responses=args.compress_responses, tripper=tripper,
        max_query_length_ms=int(args.max_query_length * 1000), max_query_parallelism=args.max_query_parallelism,
        labels_max_query_parallelism=args.labels_max_query_parallelism,
        max_freshness_ms=int(args.max_freshness * 1000), partial_response=args.partial_response,
        response_cache=cache, labels_response_cache=labels_cache,
        labels_max_freshness_ms=int(args.labels_max_freshness * 1000), forward_headers=list(args.forward_headers),
        log_queries_longer_than_s=args.log_queries_longer_than, tenant_header=args.tenant_header,
        default_tenant=args.default_tenant)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from .run import run

    return run(config)
