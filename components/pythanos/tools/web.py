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
    p.add_argument("--web.route-prefix", dest="route_prefix", default="",
                   help="Prefix for API and UI endpoints. This allows thanos UI to be served on a sub-path. This "
                        "option is analogous to --web.route-prefix of Prometheus.")
    p.add_argument("--web.external-prefix", dest="external_prefix", default="",
                   help="Static prefix for all HTML links and redirect URLs in the bucket web UI interface.")
    p.add_argument("--web.prefix-header", dest="prefix_header", default="",
                   help="Name of HTTP request header used for dynamic prefixing of UI links and redirects.")
    p.add_argument("--web.disable-cors", dest="disable_cors", action="store_true",
                   help="Whether to disable CORS headers to be set by Thanos. By default Thanos sets CORS headers "
                        "to be allowed by all.")
    p.add_argument("--refresh", dest="refresh", default=1800.0, type=f.duration("--refresh"),
                   help="Refresh interval to download metadata from remote storage")
    p.add_argument("--timeout", dest="timeout", default=300.0, type=f.duration("--timeout"),
                   help="Timeout to download metadata from remote storage")
    p.add_argument("--label", dest="label", default="",
                   help="External block label to use as group title")
    f.add_time_range(p, "Bucket Web", max_time=True)
    f.add_selector_relabel(p)
    p.add_argument("--disable-admin-operations", dest="disable_admin_operations", action="store_true",
                   help="Disable UI/API admin operations like marking blocks for deletion and no compaction.")
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    return asyncio.run(serve(args))


async def serve(args: argparse.Namespace) -> int:
    from ..server import Component, close_quietly
    from ..web.blocks import BlocksView, add_blocks_routes, bucket_web_fetcher

    bucket = f.bucket_from_args(args)
    srv = Component("bucket", http_address=args.http_address, http_grace_period=args.http_grace_period)
    fetcher = bucket_web_fetcher(bucket, min_time=args.min_time, max_time=args.max_time,
                                 relabel=f.selector_relabel_from_args(args), registry=srv.registry)
    view = BlocksView(fetcher, refresh=args.refresh, timeout=args.timeout)
    add_blocks_routes(srv.app, view, prefix=args.route_prefix or args.external_prefix, label=args.label,
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
