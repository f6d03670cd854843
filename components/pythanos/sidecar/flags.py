"""``pythanos sidecar`` flags (Thanos' ``cmd/thanos/sidecar.go`` names and defaults) -> :class:`SidecarConfig`."""
from __future__ import annotations

import argparse

from .. import flags as f

__all__ = ["register", "config_from_args"]


def register(components) -> None:
    p = components.add_parser("sidecar", help="Sidecar for Prometheus server.")
    f.add_common(p)
    f.add_listeners(p)
    p.add_argument("--prometheus.url", dest="prometheus_url", default="http://localhost:9090",
                   type=f.flag_type(f.parse_url, "--prometheus.url"), help="URL at which to reach Prometheus's API.")
    p.add_argument("--prometheus.ready_timeout", dest="prometheus_ready_timeout", default=600.0,
                   type=f.duration("--prometheus.ready_timeout"),
                   help="Maximum time to wait for the Prometheus instance to start up")
    p.add_argument("--prometheus.get_config_interval", dest="get_config_interval", default=30.0,
                   type=f.duration("--prometheus.get_config_interval"), help="How often to get Prometheus config")
    p.add_argument("--prometheus.get_config_timeout", dest="get_config_timeout", default=30.0,
                   type=f.duration("--prometheus.get_config_timeout"), help="Timeout for getting Prometheus config")
    p.add_argument("--tsdb.path", dest="tsdb_path", default="./data", help="Data directory of TSDB.")
    f.add_objstore(p, required=False)
    p.add_argument("--shipper.upload-compacted", dest="upload_compacted", action="store_true",
                   help="If true shipper will try to upload compacted blocks as well.")
    p.add_argument("--reloader.config-file", dest="reloader_config_file", default="",
                   help="Config file watched by the reloader.")
    p.add_argument("--reloader.config-envsubst-file", dest="reloader_config_envsubst_file", default="",
                   help="Output file for environment variable substituted config file.")
    p.add_argument("--reloader.rule-dir", dest="reloader_rule_dirs", action="append", default=[],
                   help="Rule directories for the reloader to refresh (repeated field).")
    p.add_argument("--reloader.watch-interval", dest="reloader_watch_interval", default=180.0,
                   type=f.duration("--reloader.watch-interval"),
                   help="Controls how often reloader re-reads config and rules.")
    p.add_argument("--reloader.once", dest="reloader_once", action="store_true",
                   help="Write --reloader.config-envsubst-file from --reloader.config-file once and exit: no "
                        "servers, no Prometheus, no reload (pythanos addition; an init container, so Prometheus "
                        "starts with its expanded config present).")
    p.add_argument("--reloader.retry-interval", dest="reloader_retry_interval", default=5.0,
                   type=f.duration("--reloader.retry-interval"),
                   help="Controls how often reloader retries config reload in case of error.")
    f.add_time_range(p, "Thanos sidecar")
    p.set_defaults(run=main)


def config_from_args(args: argparse.Namespace):
    tls = f.grpc_tls_from_args(args)  # first: grpcio reads its TLS policy when it is loaded
    from .run import SidecarConfig

    return SidecarConfig(
        grpc_tls=tls.server, grpc_max_connection_age=args.grpc_max_connection_age,
        prometheus_url=args.prometheus_url, prometheus_ready_timeout=args.prometheus_ready_timeout,
        get_config_interval=args.get_config_interval, get_config_timeout=args.get_config_timeout,
        tsdb_path=args.tsdb_path,
        bucket=None if args.reloader_once else f.bucket_from_args(args, optional=True),
        upload_compacted=args.upload_compacted,
        http_address=args.http_address, http_grace_period=args.http_grace_period, http_config=args.http_config,
        grpc_address=args.grpc_address, grpc_grace_period=args.grpc_grace_period,
        reloader_config_file=args.reloader_config_file,
        reloader_config_envsubst_file=args.reloader_config_envsubst_file,
        reloader_rule_dirs=list(args.reloader_rule_dirs), reloader_watch_interval=args.reloader_watch_interval,
        reloader_retry_interval=args.reloader_retry_interval, reloader_once=args.reloader_once,
        min_time=args.min_time)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # before .run is imported: it loads grpc (see grpc_tls_from_args)
    from .run import run

    return run(config)
