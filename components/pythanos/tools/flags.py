"""``pythanos tools ...`` flags: ``bench-blocks`` and ``bucket <command>`` (Thanos' ``tools bucket``)."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

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

    dur = f.duration
    pos = lambda flag: f.flag_type(f.positive_int, flag)  # noqa: E731

    def chores(p, delete_help: str) -> None:
        f.add_common(p)
        f.add_objstore(p, required=True)
        p.add_argument("--delete-delay", dest="delete_delay", default=48 * 3600.0, type=dur("--delete-delay"),
                       help=delete_help)
        p.add_argument("--consistency-delay", dest="consistency_delay", default=1800.0,
                       type=dur("--consistency-delay"),
                       help="Minimum age of fresh (non-compacted) blocks before they are being processed. Malformed "
                            "blocks older than the maximum of consistency-delay and 48h0m0s will be removed.")
        p.add_argument("--block-sync-concurrency", dest="block_sync_concurrency", default=20,
                       type=pos("--block-sync-concurrency"),
                       help="Number of goroutines to use when syncing block metadata from object storage.")
        f.add_selector_relabel(p)

    cl = bsub.add_parser("cleanup", help="Cleans up all blocks marked for deletion.")
    chores(cl, "Time before a block marked for deletion is deleted from bucket.")
    cl.set_defaults(run=_bucket_cleanup)

    rt = bsub.add_parser("retention", help="Retention applies retention policies on the given bucket. Please make "
                                           "sure no compactor is running on the same bucket at the same time.")
    chores(rt, "Time before a block marked for deletion is deleted from bucket.")
    f.add_retention(rt)
    rt.set_defaults(run=_bucket_retention)

    ds = bsub.add_parser("downsample", help="Continuously downsamples blocks in an object store bucket.")
    f.add_common(ds)
    f.add_objstore(ds, required=True)
    f.add_listeners(ds, http="0.0.0.0:10902", grpc=None)
    ds.add_argument("--wait-interval", dest="wait_interval", default=300.0, type=dur("--wait-interval"),
                    help="Wait interval between downsample runs.")
    ds.add_argument("--downsample.concurrency", dest="downsample_concurrency", default=1,
                    type=pos("--downsample.concurrency"), help="Number of goroutines to use when downsampling blocks.")
    ds.add_argument("--block-files-concurrency", dest="block_files_concurrency", default=1,
                    type=pos("--block-files-concurrency"),
                    help="Number of goroutines to use when fetching/uploading block files from object storage.")
    ds.add_argument("--data-dir", dest="data_dir", default="./data",
                    help="Data directory in which to cache blocks and process downsamplings.")
    ds.add_argument("--hash-func", dest="hash_func", default="", choices=["", "SHA256"],
                    help="Specify which hash function to use when calculating the hashes of produced files.")
    ds.add_argument("--single-run", dest="single_run", action="store_true",
                    help="(pythanos) Run one downsampling pass (two passes: raw->5m, then 5m->1h) and exit.")
    ds.set_defaults(run=_bucket_downsample)

    rw = bsub.add_parser("rewrite", help="Rewrite chosen blocks in the bucket, while deleting or modifying series. "
                                         "WARNING: This procedure is *IRREVERSIBLE* after certain time (delete "
                                         "delay), so do backup your blocks first.")
    f.add_common(rw)
    f.add_objstore(rw, required=True)
    rw.add_argument("--id", dest="ids", action="append", required=True, metavar="ID",
                    help="ID (ULID) of the blocks for rewrite (repeated flag).")
    rw.add_argument("--tmp.dir", dest="tmp_dir", default=os.path.join(tempfile.gettempdir(), "thanos-rewrite"),
                    help="Working directory for temporary files")
    rw.add_argument("--dry-run", dest="dry_run", default=True, action=argparse.BooleanOptionalAction,
                    help="Prints the series changes instead of doing them. Defaults to true, for user to double "
                         "check. (: Pass --no-dry-run to skip this.")
    rw.add_argument("--prom-blocks", dest="prom_blocks", action="store_true",
                    help="If specified, we assume the blocks to be uploaded are only used with Prometheus so we "
                         "don't check external labels in this case.")
    rw.add_argument("--delete-blocks", dest="delete_blocks", action="store_true",
                    help="Whether to delete the original blocks after rewriting blocks successfully. Available in "
                         "non dry-run mode only.")
    rw.add_argument("--hash-func", dest="hash_func", default="", choices=["", "SHA256"],
                    help="Specify which hash function to use when calculating the hashes of produced files.")
    for name, what in (("rewrite.to-delete-config", "[]metadata.DeletionRequest"),
                       ("rewrite.to-relabel-config", "relabel configs")):
        g = rw.add_mutually_exclusive_group()
        dest = name.replace(".", "_").replace("-", "_")
        g.add_argument(f"--{name}-file", dest=f"{dest}_file", metavar="<file-path>",
                       help=f"Path to YAML file that contains {what} that will be applied to blocks")
        g.add_argument(f"--{name}", dest=dest, metavar="<content>",
                       help=f"Alternative to '{name}-file' flag (mutually exclusive). Content of YAML file that "
                            f"contains {what} that will be applied to blocks")
    rw.add_argument("--rewrite.add-change-log", dest="change_log", default=True,
                    action=argparse.BooleanOptionalAction,
                    help="If specified, all modifications are written to new block directory. Disable if latency "
                         "is to high.")
    rw.set_defaults(run=_bucket_rewrite)

    from . import web

    web.register(bsub)


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


def _chores(args: argparse.Namespace, **kw):
    from .lifecycle import ChoreConfig

    return ChoreConfig(delete_delay=args.delete_delay, consistency_delay=args.consistency_delay,
                       concurrency=args.block_sync_concurrency, relabel=f.selector_relabel_from_args(args), **kw)


def _bucket_cleanup(args: argparse.Namespace) -> int:
    from . import lifecycle

    return lifecycle.cleanup(f.bucket_from_args(args), _chores(args))


def _bucket_retention(args: argparse.Namespace) -> int:
    from . import lifecycle

    return lifecycle.retention(f.bucket_from_args(args), _chores(
        args, retention=f.retention_from_args(args)))


def _bucket_downsample(args: argparse.Namespace) -> int:
    from . import lifecycle

    # Thanos' downsampler sees every block (no consistency delay, none hidden for a deletion mark)
    cfg = lifecycle.ChoreConfig(data_dir=args.data_dir, downsample_concurrency=args.downsample_concurrency,
                                wait_interval=args.wait_interval, consistency_delay=0.0,
                                delete_delay=float("inf"), hash_func=args.hash_func)
    return lifecycle.downsample(f.bucket_from_args(args), cfg, args.http_address, once=args.single_run,
                                http_config=args.http_config)


def _bucket_rewrite(args: argparse.Namespace) -> int:
    from . import mark, rewrite

    ids = mark.parse_ids(args.ids, "--id")
    delete_text = _env_content(args, "rewrite_to_delete_config", "--rewrite.to-delete-config")
    relabel_text = _env_content(args, "rewrite_to_relabel_config", "--rewrite.to-relabel-config")
    relabel = []
    if relabel_text.strip():
        from ..relabel import parse_relabel_config

        relabel = parse_relabel_config(relabel_text, _where(args, "rewrite_to_relabel_config",
                                                            "--rewrite.to-relabel-config"))
    deletions = (rewrite.parse_deletions(delete_text, _where(args, "rewrite_to_delete_config",
                                                             "--rewrite.to-delete-config"))
                 if delete_text.strip() else [])
    cfg = rewrite.RewriteConfig(
        ids=ids, tmp_dir=args.tmp_dir, deletions=deletions, relabel=relabel, dry_run=args.dry_run,
        delete_blocks=args.delete_blocks, prom_blocks=args.prom_blocks, change_log=args.change_log,
        hash_func=args.hash_func)
    return rewrite.rewrite(f.bucket_from_args(args), cfg)


def _env_content(args: argparse.Namespace, dest: str, flag: str) -> str:
    """A path-or-content flag with Thanos' environment substitution (``$(VAR)``, Kubernetes style;
    an unset variable is an error)."""
    import re

    from ..errors import UserError

    text = f.content_flag(args, dest, flag)

    def sub(m: "re.Match") -> str:
        if m.group(1) not in os.environ:
            raise UserError(f"{_where(args, dest, flag)}: found reference to unset environment variable "
                            f"\"{m.group(1)}\"")
        return os.environ[m.group(1)]

    return re.sub(r"\$\(([a-zA-Z_0-9]+)\)", sub, text)


def _where(args: argparse.Namespace, dest: str, flag: str) -> str:
    path = getattr(args, f"{dest}_file", None)
    return f"{flag}-file={path}" if path else flag
