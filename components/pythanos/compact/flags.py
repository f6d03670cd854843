"""``pythanos compact`` flags (Thanos' ``cmd/thanos/compact.go`` names and defaults) -> :class:`CompactConfig`."""
from __future__ import annotations

import argparse

from .. import flags as f
from ..errors import UserError

__all__ = ["register", "config_from_args"]

HOUR = 3600.0
DEDUP_FUNCS = ("", "penalty")


def register(components) -> None:
    p = components.add_parser("compact", help="Continuously compacts blocks in an object store bucket.")
    f.add_common(p)
    f.add_listeners(p, grpc=None)
    dur = f.duration
    pos = lambda flag: f.flag_type(f.positive_int, flag)  # noqa: E731
    p.add_argument("--data-dir", dest="data_dir", default="./data",
                   help="Data directory in which to cache blocks and process compactions.")
    f.add_objstore(p, required=True)
    p.add_argument("--consistency-delay", dest="consistency_delay", default=30 * 60.0, type=dur("--consistency-delay"),
                   help="Minimum age of fresh (non-compacted) blocks before they are being processed. Malformed "
                        "blocks older than the maximum of consistency-delay and 48h0m0s will be removed.")
    f.add_retention(p)
    p.add_argument("--wait", "-w", dest="wait", action="store_true",
                   help="Do not exit after all compactions have been processed and wait for new work.")
    p.add_argument("--wait-interval", dest="wait_interval", default=300.0, type=dur("--wait-interval"),
                   help="Wait interval between consecutive compaction runs and bucket refreshes. Only works when "
                        "--wait flag specified.")
    p.add_argument("--downsampling.disable", dest="downsampling_disable", action="store_true",
                   help="Disables downsampling. This is not recommended as querying long time ranges without "
                        "non-downsampled data is not efficient and useful e.g it is not possible to render all "
                        "samples for a human eye anyway")
    p.add_argument("--block-discovery-strategy", dest="block_discovery_strategy", default="concurrent",
                   choices=["concurrent", "recursive"],
                   help="One of concurrent, recursive. When set to concurrent, stores will concurrently issue one "
                        "call per directory to discover active blocks in the bucket.")
    p.add_argument("--block-meta-fetch-concurrency", dest="block_meta_fetch_concurrency", default=32,
                   type=pos("--block-meta-fetch-concurrency"),
                   help="Number of goroutines to use when fetching block metadata from object storage.")
    p.add_argument("--block-files-concurrency", dest="block_files_concurrency", default=1,
                   type=pos("--block-files-concurrency"),
                   help="Number of goroutines to use when fetching/uploading block files from object storage.")
    p.add_argument("--block-viewer.global.sync-block-interval", dest="block_viewer_sync_interval", default=60.0,
                   type=dur("--block-viewer.global.sync-block-interval"),
                   help="Repeat interval for syncing the blocks between local and remote view for /global Block "
                        "Viewer UI.")
    p.add_argument("--block-viewer.global.sync-block-timeout", dest="block_viewer_sync_timeout", default=300.0,
                   type=dur("--block-viewer.global.sync-block-timeout"),
                   help="Maximum time for syncing the blocks between local and remote view for /global Block "
                        "Viewer UI.")
    p.add_argument("--compact.cleanup-interval", dest="cleanup_interval", default=300.0,
                   type=dur("--compact.cleanup-interval"),
                   help="How often we should clean up partially uploaded blocks and blocks with deletion mark in "
                        "the background when --wait has been enabled. Setting it to \"0s\" disables it - the "
                        "cleaning will only happen at the end of an iteration.")
    p.add_argument("--compact.progress-interval", dest="progress_interval", default=300.0,
                   type=dur("--compact.progress-interval"),
                   help="Frequency of calculating the compaction progress in the background when --wait has been "
                        "enabled. Setting it to \"0s\" disables it.")
    p.add_argument("--compact.concurrency", dest="compact_concurrency", default=1, type=pos("--compact.concurrency"),
                   help="Number of goroutines to use when compacting groups.")
    p.add_argument("--compact.blocks-fetch-concurrency", dest="blocks_fetch_concurrency", default=1,
                   type=pos("--compact.blocks-fetch-concurrency"),
                   help="Number of goroutines to use when download block during compaction.")
    p.add_argument("--downsample.concurrency", dest="downsample_concurrency", default=1,
                   type=pos("--downsample.concurrency"), help="Number of goroutines to use when downsampling blocks.")
    p.add_argument("--delete-delay", dest="delete_delay", default=48 * HOUR, type=dur("--delete-delay"),
                   help="Time before a block marked for deletion is deleted from bucket. If delete-delay is non "
                        "zero, blocks will be marked for deletion and compactor component will delete blocks marked "
                        "for deletion from the bucket. If delete-delay is 0, blocks will be deleted straight away.")
    p.add_argument("--compact.enable-vertical-compaction", dest="vertical", action="store_true",
                   help="Experimental. When set to true, compactor will allow overlaps and perform **irreversible** "
                        "vertical compaction.")
    p.add_argument("--deduplication.func", dest="dedup_func", default="", choices=DEDUP_FUNCS,
                   help="Experimental. Deduplication algorithm for merging overlapping blocks. Possible values are: "
                        "\"\", \"penalty\". If no value is specified, the default compact deduplication merger is "
                        "used, which performs 1:1 deduplication for samples. When set to penalty, penalty based "
                        "deduplication algorithm will be used. At least one replica label has to be set via "
                        "--deduplication.replica-label flag.")
    p.add_argument("--deduplication.replica-label", dest="replica_labels", action="append", default=[],
                   help="Experimental. Label to treat as a replica indicator of blocks that can be deduplicated "
                        "(repeated flag). This will merge multiple replica blocks into one. This process is "
                        "irreversible.")
    p.add_argument("--compact.block-max-index-size", dest="block_max_index_size",
                   default=f.parse_bytes("64GB", "--compact.block-max-index-size"),
                   type=f.flag_type(f.parse_bytes, "--compact.block-max-index-size"), help=argparse.SUPPRESS)
    p.add_argument("--compact.skip-block-with-out-of-order-chunks", dest="skip_out_of_order", action="store_true",
                   help="When set to true, mark blocks containing index with out-of-order chunks for no compact. "
                        "Without it pythanos merges a series' out-of-order chunks while compacting (every sample "
                        "kept once), where Thanos stops with an error.")
    p.add_argument("--hash-func", dest="hash_func", default="", choices=["", "SHA256"],
                   help="Specify which hash function to use when calculating the hashes of produced files.")
    f.add_time_range(p, "Thanos Compactor", max_time=True)
    f.add_selector_relabel(p)
    p.add_argument("--debug.halt-on-error", dest="halt_on_error", default=True, action=argparse.BooleanOptionalAction,
                   help=argparse.SUPPRESS)
    p.add_argument("--debug.accept-malformed-index", dest="accept_malformed_index", action="store_true",
                   help=argparse.SUPPRESS)
    p.add_argument("--debug.max-compaction-level", dest="max_compaction_level", default=4,
                   type=pos("--debug.max-compaction-level"), help=argparse.SUPPRESS)
    f.add_bucket_web(p, route_prefix=True)
    p.set_defaults(run=main)


def split_labels(values: list[str]) -> list[str]:
    """Repeated and comma-separated label names, in order, without duplicates."""
    out: list[str] = []
    for v in values:
        for name in v.split(","):
            name = name.strip()
            if name and name not in out:
                out.append(name)
    return out


def config_from_args(args: argparse.Namespace):
    from ..block.compactor import DOWNSAMPLE_RANGE_1H, DOWNSAMPLE_RANGE_5M
    from ..block.planner import ranges_for_level
    from .run import CompactConfig

    replica = split_labels(args.replica_labels)
    if args.dedup_func == "penalty" and not replica:
        raise UserError("--deduplication.func=penalty: penalty based deduplication needs at least one replica label "
                        "specified (--deduplication.replica-label)")
    if not args.downsampling_disable:
        if args.retention_raw and args.retention_raw * 1000 < DOWNSAMPLE_RANGE_5M:
            raise UserError("--retention.resolution-raw: raw resolution must be higher than the minimum block size "
                            "after which 5m resolution downsampling will occur (40 hours)")
        if args.retention_5m and args.retention_5m * 1000 < DOWNSAMPLE_RANGE_1H:
            raise UserError("--retention.resolution-5m: 5m resolution retention must be higher than the minimum "
                            "block size after which 1h resolution downsampling will occur (10 days)")
    if args.min_time.timestamp_ms() > args.max_time.timestamp_ms():
        raise UserError(f"--min-time={args.min_time.text} is later than --max-time={args.max_time.text}")
    try:
        ranges = ranges_for_level(args.max_compaction_level)
    except ValueError as e:
        raise UserError(str(e)) from None
    return CompactConfig(
        http_config=args.http_config,
        http_address=args.http_address, http_grace_period=args.http_grace_period, data_dir=args.data_dir,
        bucket=f.bucket_from_args(args), consistency_delay=args.consistency_delay,
        retention=f.retention_from_args(args),
        wait=args.wait, wait_interval=args.wait_interval, downsampling=not args.downsampling_disable,
        meta_fetch_concurrency=args.block_meta_fetch_concurrency, cleanup_interval=args.cleanup_interval,
        compact_concurrency=args.compact_concurrency, fetch_concurrency=args.blocks_fetch_concurrency,
        downsample_concurrency=args.downsample_concurrency, delete_delay=args.delete_delay,
        vertical=args.vertical or bool(replica), dedup_func=args.dedup_func, replica_labels=replica,
        skip_out_of_order=args.skip_out_of_order, hash_func=args.hash_func, min_time=args.min_time, max_time=args.max_time,
        relabel=f.selector_relabel_from_args(args), halt_on_error=args.halt_on_error, ranges=ranges,
        web_disable=args.web_disable, web_prefix=f.web_prefix_from_args(args),
        web_disable_cors=args.disable_cors, bucket_web_label=args.bucket_web_label,
        disable_admin_operations=args.disable_admin_operations,
        block_viewer_interval=args.block_viewer_sync_interval, block_viewer_timeout=args.block_viewer_sync_timeout)


def main(args: argparse.Namespace) -> int:
    from .run import run

    return run(config_from_args(args))
