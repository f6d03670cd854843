"""``pythanos store`` flags (Thanos' ``cmd/thanos/store.go`` names and defaults) -> :class:`StoreConfig`."""
from __future__ import annotations

import argparse

from .. import flags as f

__all__ = ["register", "config_from_args"]


def register(components) -> None:
    p = components.add_parser("store", help="Store node giving access to blocks in a bucket provider. Now supported "
                                            "GCS, S3, Azure, Swift, Tencent COS and Aliyun OSS.")
    f.add_common(p)
    f.add_listeners(p)
    dur = f.duration
    size = lambda flag: f.flag_type(f.parse_bytes, flag)  # noqa: E731
    count = lambda flag: f.flag_type(f.non_negative_int, flag)  # noqa: E731
    p.add_argument("--data-dir", dest="data_dir", default="./data",
                   help="Local data directory used for caching purposes (index-header, in-mem cache items and "
                        "meta.jsons). If removed, no data will be lost, just store will have to rebuild the cache.")
    f.add_objstore(p, required=True)
    p.add_argument("--index-cache-size", dest="index_cache_size", default=f.parse_bytes("250MB", "--index-cache-size"),
                   type=size("--index-cache-size"),
                   help="Maximum size of items held in the in-memory index cache. Ignored if --index-cache.config "
                        "or --index-cache.config-file option is specified.")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--index-cache.config-file", dest="index_cache_config_file", metavar="<file-path>",
                   help="Path to YAML file that contains index cache configuration.")
    g.add_argument("--index-cache.config", dest="index_cache_config", metavar="<content>",
                   help="Alternative to 'index-cache.config-file' flag: index cache configuration in YAML.")
    p.add_argument("--chunk-pool-size", dest="chunk_pool_size", default=f.parse_bytes("2GB", "--chunk-pool-size"),
                   type=size("--chunk-pool-size"),
                   help="Maximum size of concurrently allocatable bytes reserved strictly to reuse for chunks in "
                        "memory.")
    p.add_argument("--store.grpc.series-max-concurrency", dest="series_max_concurrency", default=20,
                   type=f.flag_type(f.positive_int, "--store.grpc.series-max-concurrency"),
                   help="Maximum number of concurrent Series calls.")
    p.add_argument("--store.limits.request-series", "--store.grpc.touched-series-limit", dest="series_limit",
                   default=0, type=count("--store.limits.request-series"),
                   help="The maximum series allowed for a single Series request. The Series call fails if this "
                        "limit is exceeded. 0 means no limit.")
    p.add_argument("--store.limits.request-samples", "--store.grpc.series-sample-limit", dest="samples_limit",
                   default=0, type=count("--store.limits.request-samples"),
                   help="The maximum samples allowed for a single Series request, The Series call fails if this "
                        "limit is exceeded. 0 means no limit. NOTE: For efficiency the limit is internally "
                        "implemented as 'chunks limit' considering each chunk contains a maximum of 120 samples.")
    p.add_argument("--sync-block-duration", dest="sync_block_duration", default=900.0,
                   type=dur("--sync-block-duration"), help="Repeat interval for syncing the blocks between local "
                                                           "and remote view.")
    p.add_argument("--block-discovery-strategy", dest="block_discovery_strategy", default="concurrent",
                   choices=["concurrent", "recursive"],
                   help="One of concurrent, recursive. When set to concurrent, stores will concurrently issue one "
                        "call per directory to discover active blocks in the bucket.")
    p.add_argument("--block-sync-concurrency", dest="block_sync_concurrency", default=20,
                   type=f.flag_type(f.positive_int, "--block-sync-concurrency"),
                   help="Number of goroutines to use when constructing index-cache.json blocks from object storage. "
                        "Must be equal or greater than 1.")
    p.add_argument("--block-meta-fetch-concurrency", dest="block_meta_fetch_concurrency", default=32,
                   type=f.flag_type(f.positive_int, "--block-meta-fetch-concurrency"),
                   help="Number of goroutines to use when fetching block metadata from object storage.")
    f.add_time_range(p, "Thanos Store", max_time=True)
    f.add_selector_relabel(p)
    p.add_argument("--consistency-delay", dest="consistency_delay", default=0.0, type=dur("--consistency-delay"),
                   help="Minimum age of all blocks before they are being read. Set it to safe value (e.g 30m) if "
                        "your object storage is eventually consistent.")
    p.add_argument("--ignore-deletion-marks-delay", dest="ignore_deletion_marks_delay", default=86400.0,
                   type=dur("--ignore-deletion-marks-delay"),
                   help="Duration after which the blocks marked for deletion will be filtered out while fetching "
                        "blocks. The idea of ignore-deletion-marks-delay is to ignore blocks that are marked for "
                        "deletion with some delay. This ensures store can still serve blocks that are meant to be "
                        "deleted but do not have a replacement yet.")
    p.add_argument("--store.enable-index-header-lazy-reader", dest="lazy_index_header", action="store_true",
                   help="If true, Store Gateway will lazy memory map index-header only once the block is required "
                        "by a query.")
    p.add_argument("--store.index-header-lazy-reader-idle-timeout", dest="lazy_idle_timeout", default=300.0,
                   type=dur("--store.index-header-lazy-reader-idle-timeout"),
                   help="If index-header lazy reader is enabled and this idle timeout setting is > 0, memory "
                        "map-ed index-headers will be automatically released after 'idle timeout' inactivity.")
    p.add_argument("--cache-index-header", dest="cache_index_header", action=argparse.BooleanOptionalAction,
                   default=True, help="Cache TSDB index-headers on disk to reduce startup time. When set to true, "
                                      "Thanos Store will download index headers from remote object storage on "
                                      "startup and create a header file on disk.")
    f.add_bucket_web(p)
    p.set_defaults(run=main)


def config_from_args(args: argparse.Namespace):
    tls = f.grpc_tls_from_args(args)  # first: grpcio reads its TLS policy when it is loaded
    from ..cache import INDEX_CACHE_ITEMS, parse_cache_config
    from .run import StoreConfig

    relabel = f.selector_relabel_from_args(args)
    cache_text = f.content_flag(args, "index_cache_config", "--index-cache.config")
    cache_where = ("--index-cache.config-file" if args.index_cache_config_file else "--index-cache.config")
    cache = parse_cache_config(cache_text, cache_where, args.index_cache_size, valid_items=INDEX_CACHE_ITEMS) \
        if cache_text.strip() else None
    if args.min_time.timestamp_ms() > args.max_time.timestamp_ms():
        from ..errors import UserError

        raise UserError(f"--min-time={args.min_time.text} is later than --max-time={args.max_time.text}")
    return StoreConfig(
        grpc_tls=tls.server, grpc_max_connection_age=args.grpc_max_connection_age,
        http_address=args.http_address, http_grace_period=args.http_grace_period, http_config=args.http_config,
        grpc_address=args.grpc_address, grpc_grace_period=args.grpc_grace_period,
        data_dir=args.data_dir, bucket=f.bucket_from_args(args), index_cache_size=args.index_cache_size,
        index_cache=cache, chunk_pool_size=args.chunk_pool_size,
        series_max_concurrency=args.series_max_concurrency, series_limit=args.series_limit,
        samples_limit=args.samples_limit, sync_interval=args.sync_block_duration,
        block_sync_concurrency=args.block_sync_concurrency, meta_fetch_concurrency=args.block_meta_fetch_concurrency,
        min_time=args.min_time, max_time=args.max_time, relabel=relabel, consistency_delay=args.consistency_delay,
        ignore_deletion_marks_delay=args.ignore_deletion_marks_delay, lazy_index_header=args.lazy_index_header,
        lazy_idle_timeout=args.lazy_idle_timeout, web_disable=args.web_disable,
        web_prefix=f.web_prefix_from_args(args),
        web_disable_cors=args.disable_cors, bucket_web_label=args.bucket_web_label,
        disable_admin_operations=args.disable_admin_operations)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # before .run is imported: it loads grpc (see grpc_tls_from_args)
    from .run import run

    return run(config)
