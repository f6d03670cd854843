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
