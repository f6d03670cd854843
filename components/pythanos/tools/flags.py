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

    from .inspect import COLUMNS, OUTPUTS

    ins = bsub.add_parser("inspect", help="Inspect all blocks in the bucket in detailed, table-like way.")
    f.add_common(ins)
    f.add_objstore(ins, required=True)
    ins.add_argument("--selector", "-l", action="append", default=[], metavar='<name>="<value>"',
                     help='Selects blocks based on label, e.g. \'-l key1="value1" -l key2="value2"\'. '
                          "All key value pairs must match.")
    ins.add_argument("--sort-by", dest="sort_by", action="append", default=None, metavar="COLUMN",
                     help="Sort by columns (default FROM, then UNTIL). It's also possible to sort by multiple "
                          "columns, e.g. '--sort-by FROM --sort-by UNTIL'. I.e., if the 'FROM' value is equal the "
                          f"rows are then further sorted by the 'UNTIL' value. Columns: {', '.join(COLUMNS)}.")
    ins.add_argument("--timeout", default=300.0, type=f.duration("--timeout"),
                     help="Timeout to download metadata from remote storage.")
    ins.add_argument("--output", "-o", default="table", choices=list(OUTPUTS),
                     help="Output format for result. Currently supports table, csv, tsv.")
    ins.set_defaults(run=_bucket_inspect)

    from .mark import MARKERS

    mk = bsub.add_parser("mark", help="Mark block for deletion or no-compact in a safe way. NOTE: If the compactor "
                                      "is currently running compacting same block, this operation would be "
                                      "potentially a noop.")
    f.add_common(mk)
    f.add_objstore(mk, required=True)
    mk.add_argument("--id", dest="ids", action="append", required=True, metavar="ID",
                    help="ID (ULID) of the blocks to be marked (repeated flag). Every block must exist.")
    mk.add_argument("--marker", required=True, choices=list(MARKERS), help="Marker to be put.")
    mk.add_argument("--details", default="", help="Human readable details to be put into marker (required "
                                                  "unless --remove).")
    mk.add_argument("--remove", action="store_true", help="Remove the marker.")
    mk.set_defaults(run=_bucket_mark)

    from .verify import DEFAULT_ISSUES, REPAIRERS, VERIFIERS, OVERLAPPED_BLOCKS

    vf = bsub.add_parser(
        "verify", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="Verify all blocks in the bucket against specified issues.",
        description="Verify all blocks in the bucket against specified issues. NOTE: Depending on issue this\n"
                    "might take time: index_known_issues reads every index of the chosen blocks.\n\n"
                    "Finding issues is not an error: the exit code is 0 once the checks ran (as in Thanos).\n"
                    "--repair, per issue:\n"
                    "  overlapped_blocks      (pythanos only) in each set of overlapping blocks of a compaction\n"
                    "                         group the oldest block (smallest ULID) is kept and every newer block\n"
                    "                         overlapping a kept one gets no-compact-mark.json (reason manual, details\n"
                    "                         naming the overlap), so the compactor can compact the rest of the group.\n"
                    "                         Nothing is deleted; no backup bucket is needed. Note: a Thanos compactor\n"
                    "                         (v0.42) still halts on marked overlapping blocks; the pythanos one does not.\n"
                    "  duplicated_compaction  blocks that are the same compaction done twice: all but one are\n"
                    "                         copied to the backup bucket, then deleted (with --delete-delay > 0:\n"
                    "                         marked for deletion).\n"
                    "  index_known_issues     blocks with fixable index issues are rewritten without the bad chunks\n"
                    "                         (source bucket.repair), the broken one is backed up and deleted.")
    f.add_common(vf)
    f.add_objstore(vf, required=True)
    bk = vf.add_mutually_exclusive_group()
    bk.add_argument("--objstore-backup.config-file", dest="objstore_backup_config_file", metavar="PATH",
                    help="Path to YAML file that contains object store configuration. Used for repair logic to "
                         "backup blocks before removal.")
    bk.add_argument("--objstore-backup.config", dest="objstore_backup_config", metavar="YAML",
                    help="Alternative to 'objstore-backup.config-file' flag: object store configuration in YAML. "
                         "Used for repair logic to backup blocks before removal.")
    vf.add_argument("--repair", "-r", action="store_true",
                    help="Attempt to repair blocks for which issues were detected (see above).")
    vf.add_argument("--issues", "-i", action="append", default=None, metavar="ISSUE",
                    help=f"Issues to verify (and optionally repair), repeatable; default "
                         f"{' '.join(DEFAULT_ISSUES)}. Possible issue to verify, without repair (Thanos): "
                         f"[{' '.join(VERIFIERS)}]; possible issue to verify and repair: [{' '.join(REPAIRERS)}]; "
                         f"pythanos also repairs {OVERLAPPED_BLOCKS}.")
    vf.add_argument("--id", dest="ids", action="append", default=[], metavar="ID",
                    help="Block IDs to verify (and optionally repair) only. If none is specified, all blocks will "
                         "be verified. Repeated field.")
    vf.add_argument("--delete-delay", dest="delete_delay", default=0.0, type=f.duration("--delete-delay"),
                    help="Duration after which blocks marked for deletion would be deleted permanently from source "
                         "bucket by compactor component. If delete-delay is non zero, blocks will be marked for "
                         "deletion and compactor component is required to delete blocks from source bucket. If "
                         "delete-delay is 0, blocks will be deleted straight away. Use this if you want to get rid "
                         "of or move the block immediately. Note that deleting blocks immediately can cause query "
                         "failures, if store gateway still has the block loaded, or compactor is ignoring the "
                         "deletion because it's compacting the block at the same time.")
    vf.set_defaults(run=_bucket_verify)


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


def _bucket_inspect(args: argparse.Namespace) -> int:
    from . import inspect

    cfg = inspect.InspectConfig(selector=inspect.parse_selector(args.selector, "--selector"),
                                sort_by=inspect.parse_sort_by(args.sort_by, "--sort-by"),
                                output=args.output, timeout_s=args.timeout)
    return inspect.inspect(f.bucket_from_args(args), cfg, out=sys.stdout)


def _bucket_mark(args: argparse.Namespace) -> int:
    from . import mark

    cfg = mark.MarkConfig(ids=mark.parse_ids(args.ids, "--id"), marker=args.marker, details=args.details,
                          remove=args.remove)
    return mark.mark(f.bucket_from_args(args), cfg)


def _bucket_verify(args: argparse.Namespace) -> int:
    from . import mark, verify

    cfg = verify.VerifyConfig(issues=verify.check_issues(args.issues or list(verify.DEFAULT_ISSUES), "--issues"),
                              ids=mark.parse_ids(args.ids, "--id"), repair=args.repair,
                              delete_delay_s=args.delete_delay)
    backup = None
    text = f.content_flag(args, "objstore_backup_config", "--objstore-backup.config")
    if text.strip():
        from ..objstore import bucket_from_config

        where = (f"--objstore-backup.config-file={args.objstore_backup_config_file}"
                 if args.objstore_backup_config_file else "--objstore-backup.config")
        backup = bucket_from_config(text, where)
    return verify.verify(f.bucket_from_args(args), cfg, backup=backup)
