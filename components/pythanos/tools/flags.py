"""``pythanos tools ...`` flags: ``bench-blocks`` and ``bucket <command>`` (Thanos' ``tools bucket``)."""
from __future__ import annotations

import argparse
import sys

from .. import flags as f

__all__ = ["register"]


def register(components) -> None:
    tools = components.add_parser("tools", help="Tools utility commands.")
    sub = tools.add_subparsers(dest="tool", metavar="<tool>", required=True)

    bb = sub.add_parser("bench-blocks",
                        help="Generate TSDB blocks of a benchmark profile (like thanosbench block plan | gen).")
    f.add_common(bb)
    bb.add_argument("--profile", "-p", required=True, help="Profile name, e.g. continuous-365d-tiny (see --profile=help).")
    bb.add_argument("--labels", action="append", default=[],
                    help='External labels of the blocks, e.g. \'cluster="eu1"\' (repeatable).')
    bb.add_argument("--max-time", default="-30m",
                    help="End of the newest block: RFC3339 time, or a duration relative to now "
                         "(6h = now plus 6h, -30m = 30m ago). Rounded up to a 2h boundary.")
    bb.add_argument("--output.dir", dest="output_dir", required=True, help="Directory to write the blocks into.")
    bb.add_argument("--seed", type=int, default=1, help="Random seed, for reproducible data.")
    bb.set_defaults(run=_bench_blocks)

    bucket = sub.add_parser("bucket", help="Bucket utility commands.")
    bsub = bucket.add_subparsers(dest="bucket_cmd", metavar="<command>", required=True)
    ls = bsub.add_parser("ls", help="List all blocks in the bucket.")
    f.add_common(ls)
    f.add_objstore(ls, required=True)
    ls.add_argument("--output", "-o", default="", choices=["", "json", "wide"],
                    help="Optional format in which to print each block's information.")
    ls.set_defaults(run=_bucket_ls)


def _bench_blocks(args: argparse.Namespace) -> int:
    from . import benchblocks

    cfg = benchblocks.BenchBlocksConfig(
        profile=args.profile,
        labels=benchblocks.parse_labels(args.labels, flag="--labels"),
        max_time=benchblocks.parse_max_time(args.max_time, flag="--max-time"),
        output_dir=args.output_dir,
        seed=args.seed,
    )
    return benchblocks.run(cfg)


def _bucket_ls(args: argparse.Namespace) -> int:
    from . import bucket

    return bucket.ls(f.bucket_from_args(args), output=args.output, out=sys.stdout)
