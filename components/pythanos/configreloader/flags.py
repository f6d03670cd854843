"""``pythanos config-reloader`` flags, named as prometheus-operator's ``prometheus-config-reloader``
names them (``--reload-url``, ``--watched-dir``, ``--config-file``, ``--config-envsubst-file``,
``--watch-interval``, ``--listen-address``), so a pod spec written for that reloader reads the same."""
from __future__ import annotations

import argparse

from .. import flags as f

__all__ = ["register", "config_from_args"]


def register(components) -> None:
    p = components.add_parser(
        "config-reloader",
        help="Reload a Prometheus-style server (POST its /-/reload) when watched files change: the "
             "in-pod reloader of the operator's rulers (a ConfigMap volume updated in place).")
    f.add_common(p)
    p.add_argument("--reload-url", dest="reload_url", default="http://127.0.0.1:9090/-/reload",
                   type=f.flag_type(f.parse_url, "--reload-url"), help="URL POSTed to trigger a reload.")
    p.add_argument("--watched-dir", dest="watched_dirs", action="append", default=[],
                   help="Directory to watch for changes, recursively (repeatable).")
    p.add_argument("--config-file", dest="config_file", default="", help="Config file to watch for changes.")
    p.add_argument("--config-envsubst-file", dest="config_envsubst_file", default="",
                   help="Output file for the config file with $(VAR) references expanded from the environment.")
    p.add_argument("--watch-interval", dest="watch_interval", default=180.0, type=f.duration("--watch-interval"),
                   help="How often everything is re-read and a reload forced after failed ones.")
    p.add_argument("--retry-interval", dest="retry_interval", default=5.0, type=f.duration("--retry-interval"),
                   help="Longest wait between attempts of a failing reload.")
    p.add_argument("--listen-address", dest="listen_address", default=":8080",
                   type=f.flag_type(f.parse_address, "--listen-address"),
                   help="host:port for /metrics, /-/healthy and /-/ready.")
    p.set_defaults(run=main)


def config_from_args(args: argparse.Namespace):
    from .run import ReloaderConfig

    if not args.watched_dirs and not args.config_file:
        from ..errors import UserError

        raise UserError("config-reloader: nothing to watch: give --watched-dir or --config-file")
    return ReloaderConfig(reload_url=args.reload_url, watched_dirs=list(args.watched_dirs),
                          config_file=args.config_file, config_envsubst_file=args.config_envsubst_file,
                          watch_interval=args.watch_interval, retry_interval=args.retry_interval,
                          listen_address=args.listen_address)


def main(args: argparse.Namespace) -> int:
    from .run import run

    return run(config_from_args(args))
