"""``pythanos rule`` flags (Thanos v0.42 ``cmd/thanos/rule.go`` and ``config.go`` names and defaults)
-> :class:`pythanos.rule.run.RuleConfig`.

Every flag ``thanos rule`` has is accepted, its hidden ones included, so a Thanos command line runs
unchanged; the few whose feature we do not have are refused by name when set to anything but their
default (never silently ignored).
"""
from __future__ import annotations

import argparse

from .. import flags as f
from ..errors import UserError

__all__ = ["register", "config_from_args"]

#: what ``--enable-feature`` knows (Thanos v0.42 ruler)
FEATURES = ("promql-experimental-functions",)


def register(components) -> None:
    p = components.add_parser("rule", help="Ruler evaluating Prometheus rules against given Query nodes, exposing "
                                           "Store API and storing old blocks in bucket.")
    f.add_common(p)
    f.add_listeners(p)
    dur = f.duration
    hidden = argparse.SUPPRESS
    bool_flag = argparse.BooleanOptionalAction
    # -- web (config.go webConfig)
    p.add_argument("--web.route-prefix", dest="route_prefix", default="",
                   help="Prefix for API and UI endpoints. This allows thanos UI to be served on a sub-path. This "
                        "option is analogous to --web.route-prefix of Prometheus.")
    p.add_argument("--web.external-prefix", dest="external_prefix", default="",
                   help="Static prefix for all HTML links and redirect URLs in the bucket web UI interface. Actual "
                        "endpoints are still served on / or the web.route-prefix. This allows thanos bucket web UI "
                        "to be served behind a reverse proxy that strips a URL sub-path.")
    p.add_argument("--web.prefix-header", dest="prefix_header", default="",
                   help="Name of HTTP request header used for dynamic prefixing of UI links and redirects. This "
                        "option is ignored if web.external-prefix argument is set.")
    p.add_argument("--web.disable-cors", dest="disable_cors", action=bool_flag, default=False,
                   help="Whether to disable CORS headers to be set by Thanos. By default Thanos sets CORS headers "
                        "to be allowed by all.")
    # -- shipper (config.go shipperConfig)
    p.add_argument("--shipper.upload-compacted", dest="upload_compacted", action=bool_flag, default=False,
                   help="If true shipper will try to upload compacted blocks as well. Useful for migration "
                        "purposes.")
    p.add_argument("--shipper.ignore-unequal-block-size", dest="ignore_unequal_block_size", action=bool_flag,
                   default=False, help=hidden)
    p.add_argument("--shipper.allow-out-of-order-uploads", dest="allow_out_of_order_uploads", action=bool_flag,
                   default=False, help=hidden)
    p.add_argument("--shipper.skip-corrupted-blocks", dest="skip_corrupted_blocks", action=bool_flag,
                   default=False, help=hidden)
    p.add_argument("--hash-func", dest="hash_func", default="", choices=["", "SHA256"],
                   help="Specify which hash function to use when calculating the hashes of produced files. "
                        "Possible values are: \"\", \"SHA256\".")
    p.add_argument("--shipper.meta-file-name", dest="shipper_meta_file", default="thanos.shipper.json",
                   help="the file to store shipper metadata in")
    p.add_argument("--shipper.upload-concurrency", dest="upload_concurrency", default=0, type=int,
                   help="Number of goroutines to use when uploading block files to object storage.")
    # -- query (config.go queryConfig)
    p.add_argument("--query", dest="query_addrs", action="append", default=[], metavar="<query>",
                   help="Addresses of statically configured query API servers (repeatable). The scheme may be "
                        "prefixed with 'dns+' or 'dnssrv+' to detect query API servers through respective DNS "
                        "lookups.")
    f.add_path_or_content(
        p, "query.config",
        "YAML file that contains query API servers configuration. If defined, it takes "
        "precedence over the '--query' and '--query.sd-files' flags.")
    p.add_argument("--query.sd-files", dest="query_sd_files", action="append", default=[], metavar="<path>",
                   help="Path to file that contains addresses of query API servers. The path can be a glob pattern "
                        "(repeatable).")
    p.add_argument("--query.sd-interval", dest="query_sd_interval", default=300.0, type=dur("--query.sd-interval"),
                   help="Refresh interval to re-read file SD files. (used as a fallback)")
    p.add_argument("--query.sd-dns-interval", dest="query_dns_interval", default=30.0,
                   type=dur("--query.sd-dns-interval"), help="Interval between DNS resolutions.")
    p.add_argument("--query.http-method", dest="query_http_method", default="POST", choices=["GET", "POST"],
                   help="HTTP method to use when sending queries. Possible options: [GET, POST]")
    p.add_argument("--query.sd-dns-resolver", dest="query_dns_resolver", default="miekgdns",
                   choices=["golang", "miekgdns"], help=hidden)
    p.add_argument("--query.default-step", dest="query_default_step", default=1.0, type=dur("--query.default-step"),
                   help="Default range query step to use. This is only used in stateless Ruler and alert state "
                        "restoration.")
    p.add_argument("--query.only-prometheus-params", dest="query_only_prometheus_params", action=bool_flag,
                   default=False, help=hidden)
    # -- Alertmanagers (config.go alertMgrConfig)
    f.add_path_or_content(
        p, "alertmanagers.config",
        "YAML file that contains alerting configuration. If defined, it takes "
        "precedence over the '--alertmanagers.url' and '--alertmanagers.send-timeout' "
        "flags.")
    p.add_argument("--alertmanagers.url", dest="alertmanagers_urls", action="append", default=[],
                   help="Alertmanager replica URLs to push firing alerts. Ruler claims success if push to at least "
                        "one alertmanager from discovered succeeds. The scheme may be prefixed with 'dns+' or "
                        "'dnssrv+'. The URL path is used as a prefix for the regular Alertmanager API path.")
    p.add_argument("--alertmanagers.send-timeout", dest="alertmanagers_send_timeout", default=10.0,
                   type=dur("--alertmanagers.send-timeout"), help="Timeout for sending alerts to Alertmanager")
    p.add_argument("--alertmanagers.sd-dns-interval", dest="alertmanagers_dns_interval", default=30.0,
                   type=dur("--alertmanagers.sd-dns-interval"),
                   help="Interval between DNS resolutions of Alertmanager hosts.")
    p.add_argument("--alert.query-url", dest="alert_query_url", default="",
                   help="The external Thanos Query URL that would be set in all alerts 'Source' field")
    p.add_argument("--alert.label-drop", dest="alert_label_drop", action="append", default=[],
                   help="Labels by name to drop before sending to alertmanager. This allows alert to be "
                        "deduplicated on replica label (repeated). Similar Prometheus alert relabelling")
    f.add_path_or_content(p, "alert.relabel-config", "YAML file that contains alert relabelling configuration.")
    p.add_argument("--alert.query-template", dest="alert_query_template", default="/graph?g0.expr={{.Expr}}&g0.tab=1",
                   help="Template to use in alerts source field. Need only include {{.Expr}} parameter")
    # -- store limits (pkg/store/limiter.go)
    f.add_store_limits(p)
    # -- the ruler's own (rule.go registerRule)
    p.add_argument("--label", dest="labels", action="append", default=[], metavar='<name>="<value>"',
                   help="Labels to be applied to all generated metrics (repeated). Similar to external labels for "
                        "Prometheus, used to identify ruler and its blocks as unique source.")
    p.add_argument("--tsdb.block-duration", dest="block_duration", default=7200.0, type=dur("--tsdb.block-duration"),
                   help="Block duration for TSDB block.")
    p.add_argument("--tsdb.retention", dest="retention", default=48 * 3600.0, type=dur("--tsdb.retention"),
                   help="Block retention time on local disk.")
    p.add_argument("--tsdb.no-lockfile", dest="no_lockfile", action=bool_flag, default=False,
                   help="Do not create lockfile in TSDB data directory. In any case, the lockfiles will be deleted "
                        "on next startup.")
    p.add_argument("--tsdb.wal-compression", dest="wal_compression", action=bool_flag, default=True,
                   help="Compress the tsdb WAL.")
    p.add_argument("--data-dir", dest="data_dir", default="data/", help="data directory")
    p.add_argument("--rule-file", dest="rule_files", action="append", default=None, metavar="rules/",
                   help="Rule files that should be used by rule manager. Can be in glob format (repeated). Note that "
                        "rules are not automatically detected, use SIGHUP or do HTTP POST /-/reload to re-read them. "
                        "(default: rules/)")
    p.add_argument("--resend-delay", dest="resend_delay", default=60.0, type=dur("--resend-delay"),
                   help="Minimum amount of time to wait before resending an alert to Alertmanager.")
    p.add_argument("--eval-interval", dest="eval_interval", default=60.0, type=dur("--eval-interval"),
                   help="The default evaluation interval to use.")
    p.add_argument("--rule-query-offset", dest="rule_query_offset", default=0.0, type=dur("--rule-query-offset"),
                   help="The default rule group query_offset duration to use.")
    p.add_argument("--for-outage-tolerance", dest="for_outage_tolerance", default=3600.0,
                   type=dur("--for-outage-tolerance"),
                   help="Max time to tolerate prometheus outage for restoring \"for\" state of alert. "
                        "pythanos also keeps resending a rule's last known alerts while its queries fail, "
                        "for up to this long after its last good evaluation.")
    p.add_argument("--for-grace-period", dest="for_grace_period", default=600.0, type=dur("--for-grace-period"),
                   help="Minimum duration between alert and restored \"for\" state. This is maintained only for "
                        "alerts with configured \"for\" time greater than grace period.")
    p.add_argument("--restore-ignored-label", dest="restore_ignored_labels", action="append", default=[],
                   help="Label names to be ignored when restoring alerts from the remote storage. This is only used "
                        "in stateless mode.")
    p.add_argument("--rule-concurrent-evaluation", dest="rule_concurrent_evaluation", default=1,
                   type=f.flag_type(f.positive_int, "--rule-concurrent-evaluation"),
                   help="How many rules can be evaluated concurrently. Default is 1.")
    p.add_argument("--grpc-query-endpoint", dest="grpc_query_endpoints", action="append", default=[],
                   metavar="<endpoint>",
                   help="Addresses of Thanos gRPC query API servers (repeatable). pythanos: not supported, use "
                        "--query (the HTTP query API).")
    p.add_argument("--query.enable-x-functions", dest="x_functions", action=bool_flag, default=False,
                   help="Whether to enable extended rate functions (xrate, xincrease and xdelta). Only has effect "
                        "when used with Thanos engine. pythanos: not supported.")
    p.add_argument("--enable-feature", dest="features", action="append", default=[],
                   help="Comma separated feature names to enable. Valid options for now: "
                        "promql-experimental-functions (enables promql experimental functions for ruler)")
    p.add_argument("--tsdb.enable-native-histograms", dest="native_histograms", action=bool_flag, default=True,
                   help="(Deprecated) Enables the ingestion of native histograms. This flag is a no-op now and will "
                        "be removed in the future. Native histogram ingestion is always enabled.")
    f.add_path_or_content(
        p, "remote-write.config",
        "YAML config for the remote-write configurations, that specify servers "
        "where samples should be sent to. This automatically enables stateless mode "
        "for ruler and no series will be stored in the ruler's TSDB. If an empty "
        "config (or file) is provided, the flag is ignored and ruler is run with its "
        "own TSDB.")
    f.add_objstore(p, required=False)
    f.add_path_or_content(p, "request.logging-config", "YAML file with request logging configuration.")
    p.set_defaults(run=main)


def _refuse(args: argparse.Namespace) -> None:
    """Flags whose feature pythanos does not have: an error that says so, never silence."""
    if args.grpc_query_endpoints:
        raise UserError(f"--grpc-query-endpoint={args.grpc_query_endpoints[0]}: not supported by pythanos (the "
                        "Thanos gRPC Query API); give the querier's HTTP address with --query")
    if args.rule_concurrent_evaluation > 1:
        raise UserError(f"--rule-concurrent-evaluation={args.rule_concurrent_evaluation}: not supported by pythanos "
                        "(the rules of a group are evaluated one after another, Thanos' default 1)")
    if args.hash_func:
        raise UserError(f"--hash-func={args.hash_func}: not supported by pythanos (shipped blocks carry no file "
                        "hashes)")
    if args.request_logging_config or args.request_logging_config_file:
        raise UserError("--request.logging-config: not supported by pythanos (requests are not logged per "
                        "configuration)")
    if args.x_functions:
        raise UserError("--query.enable-x-functions: not supported by pythanos (xrate, xincrease and xdelta are "
                        "Thanos engine functions our engine does not have)")


def _features(args: argparse.Namespace) -> tuple[str, ...]:
    out = tuple(x.strip() for v in args.features for x in v.split(",") if x.strip())
    for feat in out:
        if feat not in FEATURES:
            raise UserError(f"--enable-feature={feat}: unknown feature (known: {', '.join(FEATURES)})")
    return out


def parse_query_config(text: str, where: str) -> tuple[list[str], list[tuple[str, str, list[str]]]]:
    """Thanos' ``--query.config`` (``pkg/clientconfig``: a list of ``{static_configs, file_sd_configs,
    scheme, path_prefix, http_config}``) as (static base URLs, [(scheme, path prefix, SD file
    globs)]); what we cannot honour (``http_config`` settings, ``grpc_config``) is refused by name."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{where}: parsing YAML: {e}") from None
    if doc is None:
        doc = []
    if not isinstance(doc, list):
        raise UserError(f"{where}: want a list of query endpoint configurations")
    static: list[str] = []
    sd: list[tuple[str, str, list[str]]] = []
    known = {"static_configs", "file_sd_configs", "scheme", "path_prefix", "http_config", "grpc_config"}
    for i, c in enumerate(doc):
        at = f"{where}: [{i}]"
        if not isinstance(c, dict) or set(c) - known:
            extra = sorted(set(c) - known) if isinstance(c, dict) else []
            raise UserError(f"{at}: " + (f"field {extra[0]} not found" if extra else "want a mapping"))
        if c.get("http_config"):
            raise UserError(f"{at}: http_config: not supported by pythanos (plain HTTP to the queriers)")
        if c.get("grpc_config"):
            raise UserError(f"{at}: grpc_config: not supported by pythanos (use HTTP endpoints)")
        scheme = str(c.get("scheme") or "http")
        prefix = "/" + str(c.get("path_prefix") or "").strip("/") if str(c.get("path_prefix") or "").strip("/") \
            else ""
        for a in c.get("static_configs") or []:
            a = str(a)
            if a.startswith(("dns+", "dnssrv+", "dnssrvnoa+")):
                if scheme != "http" or prefix:
                    raise UserError(f"{at}: static_configs: {a}: a DNS name with a scheme or path_prefix is not "
                                    "supported by pythanos")
                static.append(a)
            else:
                static.append(f"{scheme}://{a}{prefix}")
        for j, fc in enumerate(c.get("file_sd_configs") or []):
            files = [str(x) for x in (fc or {}).get("files") or []]
            if not files:
                raise UserError(f"{at}: file_sd_configs[{j}]: no files given")
            sd.append((scheme, prefix, files))
    return static, sd


def _query_addrs(args: argparse.Namespace) -> tuple[list[str], str]:
    """``--query`` (duplicates refused as Thanos does) and the ``--query.config*`` text."""
    seen: set[str] = set()
    for q in args.query_addrs:
        if q in seen:
            raise UserError(f"Address {q} is duplicated for --query flag.")
        seen.add(q)
    text = f.expand_env(f.content_flag(args, "query_config", "--query.config"), "--query.config")
    if not (args.query_sd_files or args.query_addrs or text.strip()):
        raise UserError("no query configuration parameter was given (--query, --query.sd-files or --query.config*)")
    if (args.query_sd_files or args.query_addrs) and text.strip():
        raise UserError("--query/--query.sd-files/--grpc-query-endpoint and --query.config* parameters cannot be "
                        "defined at the same time")
    return list(args.query_addrs), text


def config_from_args(args: argparse.Namespace):
    tls = f.grpc_tls_from_args(args)  # first: grpcio reads its TLS policy when it is loaded
    from .run import RuleConfig

    _refuse(args)
    features = _features(args)
    labels = f.parse_label_flags(args.labels)
    query_addrs, query_config = _query_addrs(args)
    query_sd = [("http", "", list(args.query_sd_files))] if args.query_sd_files else []
    if query_config.strip():
        where = "--query.config-file" if args.query_config_file else "--query.config"
        query_addrs, query_sd = parse_query_config(query_config, where)
    am_config = f.expand_env(f.content_flag(args, "alertmanagers_config", "--alertmanagers.config"),
                             "--alertmanagers.config")
    if am_config.strip() and args.alertmanagers_urls:
        raise UserError("--alertmanagers.url and --alertmanagers.config* parameters cannot be defined at the same "
                        "time")
    relabel_where = ("--alert.relabel-config-file" if args.alert_relabel_config_file else "--alert.relabel-config")
    alert_relabel = f.expand_env(f.content_flag(args, "alert_relabel_config", "--alert.relabel-config"), relabel_where)
    rw_where = ("--remote-write.config-file" if args.remote_write_config_file else "--remote-write.config")
    remote_write = f.expand_env(f.content_flag(args, "remote_write_config", "--remote-write.config"), rw_where)
    prefix = args.route_prefix
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return RuleConfig(
        http_address=args.http_address, http_grace_period=args.http_grace_period, http_config=args.http_config,
        grpc_address=args.grpc_address, grpc_grace_period=args.grpc_grace_period, grpc_tls=tls.server,
        grpc_max_connection_age=args.grpc_max_connection_age,
        route_prefix=prefix.rstrip("/"), external_prefix=args.external_prefix.rstrip("/"),
        prefix_header=args.prefix_header, disable_cors=args.disable_cors,
        labels=labels, data_dir=args.data_dir, rule_files=list(args.rule_files or ["rules/"]),
        eval_interval=args.eval_interval, resend_delay=args.resend_delay, rule_query_offset=args.rule_query_offset,
        for_outage_tolerance=args.for_outage_tolerance, for_grace_period=args.for_grace_period,
        restore_ignored_labels=list(args.restore_ignored_labels),
        rule_concurrent_evaluation=args.rule_concurrent_evaluation, features=features,
        block_duration=args.block_duration, retention=args.retention, no_lockfile=args.no_lockfile,
        wal_compression=args.wal_compression,
        query_addrs=query_addrs, query_config=query_config, query_sd=query_sd,
        query_sd_interval=args.query_sd_interval, query_dns_interval=args.query_dns_interval,
        query_http_method=args.query_http_method, query_default_step=args.query_default_step,
        query_only_prometheus_params=args.query_only_prometheus_params,
        alertmanagers_urls=list(args.alertmanagers_urls), alertmanagers_config=am_config,
        alertmanagers_send_timeout=args.alertmanagers_send_timeout,
        alertmanagers_dns_interval=args.alertmanagers_dns_interval,
        alert_query_url=args.alert_query_url, alert_label_drop=list(args.alert_label_drop),
        alert_relabel_config=alert_relabel, alert_relabel_where=relabel_where,
        alert_query_template=args.alert_query_template,
        series_limit=args.series_limit, samples_limit=args.samples_limit,
        remote_write_config=remote_write, remote_write_where=rw_where,
        bucket=f.bucket_from_args(args, optional=True),
        upload_compacted=args.upload_compacted, allow_out_of_order_uploads=args.allow_out_of_order_uploads,
        skip_corrupted_blocks=args.skip_corrupted_blocks, hash_func=args.hash_func,
        shipper_meta_file=args.shipper_meta_file)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # before .run is imported: it loads grpc (see grpc_tls_from_args)
    from .run import run

    return run(config)
