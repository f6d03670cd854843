"""Run one fuzz target under atheris: ``python fuzz/run.py TARGET [libFuzzer flags] [corpus dirs]``.

Python coverage comes from a trace function (line-to-line edges of pythanos and fuzz code, each an
atheris counter), not from atheris' bytecode instrumentation: atheris 2.3.0 rewrites some Python
3.11 loops wrongly (``tsdb.encoding.decode_uvarint`` then fails on any varint of 3+ bytes), which
would report bugs that are not there and hide real ones. The C kernels give coverage too when they
were built by ``make fuzz`` (clang, ``-fsanitize=address,undefined,fuzzer-no-link``, atheris'
``asan_with_fuzzer.so`` preloaded); with the normal build (``make test``'s short pass) only the
Python side is guided."""
from __future__ import annotations

import importlib
import os
import sys
from types import FrameType
from typing import Any, Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TRACED = (os.sep + "pythanos" + os.sep, os.sep + "fuzz" + os.sep)


_POOL = 1 << 14  # counters reserved before libFuzzer starts (atheris registers those only, fewer than 2^16)


def coverage_tracer(reserve: Callable[[], int], hit: Callable[[int], None]) -> Callable:
    """A ``sys.settrace`` function giving each (code, previous line, line) edge a counter of the pool."""
    pool = [reserve() for _ in range(_POOL)]
    ids: dict = {}
    wanted: dict = {}

    def local(frame: FrameType, event: str, arg: Any) -> Optional[Callable]:
        if event == "line":
            code = frame.f_code
            prev = _last.get(id(frame), 0)
            key = (code, prev, frame.f_lineno)
            c = ids.get(key)
            if c is None:
                c = ids[key] = pool[hash(key) % _POOL]
            hit(c)
            _last[id(frame)] = frame.f_lineno
        elif event == "return":
            _last.pop(id(frame), None)
        return local

    _last: dict = {}

    def call(frame: FrameType, event: str, arg: Any) -> Optional[Callable]:
        code = frame.f_code
        ok = wanted.get(code)
        if ok is None:
            ok = wanted[code] = any(p in code.co_filename for p in _TRACED)
        return local if ok else None

    return call


def main(argv: list[str]) -> None:
    """Trace the target's code for coverage and hand it to libFuzzer (which never returns)."""
    import atheris

    if len(argv) < 2:
        raise SystemExit("usage: fuzz/run.py TARGET [libFuzzer flags] [corpus dirs]")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    target = importlib.import_module(f"fuzz.targets.{argv[1]}")
    # looked up at each call: atheris.Setup replaces _trace_branch (a function bound now would be a no-op)
    tracer = coverage_tracer(atheris._reserve_counter, lambda c: atheris._trace_branch(c))

    def one(data: bytes) -> None:
        sys.settrace(tracer)
        try:
            target.test_one_input(data)
        finally:
            sys.settrace(None)

    atheris.Setup([argv[0], *argv[2:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
