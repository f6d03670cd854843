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
COMPONENT_FLAGS = ("tools", "sidecar", "query", "store", "compact", "receive", "rule", "configreloader", "frontend")
#: sub-command aliases a module registers, by the module that registers them
ALIASES = {"querier": "query", "config-reloader": "configreloader", "query-frontend": "frontend"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``only`` just that component's flags: registering every component
    imports their flag modules and what those need (the bucket tools alone cost ~0.3 s), which a
    component's start-up should not pay."""
    parser = argparse.ArgumentParser(prog="pythanos", description="A Python re-implementation of Thanos.")
    parser.add_argument("--version", action="version", version=f"pythanos, version {__version__}")
    components = parser.add_subparsers(dest="component", metavar="<component>", required=True)

    for name in COMPONENT_FLAGS if only is None else (only,):
        importlib.import_module(f".{name}.flags", __package__).register(components)
    return parser


def _component(argv: Sequence[str]) -> str | None:
    """The component the command line names first, if it is one (else every parser is built:
    top-level help, a typo, ``--version``)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    first = ALIASES.get(first, first)
    return first if first in COMPONENT_FLAGS else None


def _record_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """The component's flags as ``/api/v1/status/flags`` shows them."""
    from .web.statusapi import record_command_line

    words = iter(a for a in argv if not a.startswith("-"))
    while True:  # down to the (sub-)command named: ``tools bucket web`` has its own flags
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)  # noqa: SLF001
        word = next(words, None) if sub is not None else None
        if word not in (sub.choices if sub is not None else ()):
            break
        parser = sub.choices[word]
    record_command_line(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_component(argv))
    args = parser.parse_args(argv)
    _record_flags(parser, argv)
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
