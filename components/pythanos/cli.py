"""Command line: ``pythanos <component> [flags]``, flags named as Thanos names them.

Dispatch only: each component's ``flags.py`` registers its sub-command, builds its config
object and calls its ``run``; shared parsers live in :mod:`pythanos.flags`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from . import __version__, logfmt

log = logging.getLogger(__name__)

#: the modules that define ``register(subparsers)``: one per component, flags and config there
COMPONENT_FLAGS = ("tools", "sidecar", "query", "store", "compact")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pythanos", description="A Python re-implementation of Thanos.")
    parser.add_argument("--version", action="version", version=f"pythanos, version {__version__}")
    components = parser.add_subparsers(dest="component", metavar="<component>", required=True)

    for name in COMPONENT_FLAGS:
        importlib.import_module(f".{name}.flags", __package__).register(components)
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
