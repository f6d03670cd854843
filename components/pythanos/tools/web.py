"""``tools bucket web``: the bucket web UI (Block Viewer) on its own, as Thanos' ``tools bucket web``.

The page and its API are :mod:`pythanos.web.blocks`; this command serves them on the shared
server base (``/-/ready``, ``/metrics``), refreshing the view every ``--refresh``.
"""
from __future__ import annotations

import argparse
import asyncio
import logging

from .. import flags as f

log = logging.getLogger(__name__)

__all__ = ["register", "serve"]


def register(bsub) -> None:
    p = bsub.add_parser("web", help="Web interface for remote storage bucket.")
    f.add_common(p)
    f.add_objstore(p, required=True)
    f.add_listeners(p, grpc=None)
    f.add_bucket_web(p, disable=False, route_prefix=True, label_flag="--label")
    p.add_argument("--refresh", dest="refresh", default=1800.0, type=f.duration("--refresh"),
                   help="Refresh interval to download metadata from remote storage")
    p.add_argument("--timeout", dest="timeout", default=300.0, type=f.duration("--timeout"),
                   help="Timeout to download metadata from remote storage")
    f.add_time_range(p, "Bucket Web", max_time=True)
    f.add_selector_relabel(p)
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    return asyncio.run(serve(args))


async def serve(args: argparse.Namespace) -> int:
    from ..objstore import instrument
    from ..server import Component, close_quietly
    from ..web.blocks import BlocksView, add_blocks_routes, bucket_web_fetcher

    srv = Component("bucket", http_address=args.http_address, http_grace_period=args.http_grace_period,
                    http_config=args.http_config)
    bucket = instrument(f.bucket_from_args(args), srv.registry)
    fetcher = bucket_web_fetcher(bucket, min_time=args.min_time, max_time=args.max_time,
                                 relabel=f.selector_relabel_from_args(args), registry=srv.registry)
    view = BlocksView(fetcher, refresh=args.refresh, timeout=args.timeout)
    add_blocks_routes(srv.app, view, prefix=f.web_prefix_from_args(args), label=args.bucket_web_label,
                      disable_admin=args.disable_admin_operations, component="bucket", redirect_root=True,
                      cors=not args.disable_cors)

    async def close() -> None:
        await view.stop()
        fetcher.close()
        close_quietly(bucket)

    await srv.start(cleanup=close)
    srv.set_ready(True)
    log.info("starting bucket web", extra={"http": args.http_address})
    return await srv.run_tasks([view.start()], on_stop=close)
