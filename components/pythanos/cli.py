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
