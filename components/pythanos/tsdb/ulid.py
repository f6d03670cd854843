"""ULIDs (https://github.com/ulid/spec) as Prometheus and Thanos use them for block names.

A ULID is 128 bits: a 48-bit Unix time in milliseconds, then 80 random bits, written as 26
characters of Crockford base32 (upper case, no I L O U). ``parse`` is strict like Go's
``ulid.ParseStrict``: exactly 26 valid characters and the first one at most ``'7'``
(otherwise the value overflows 128 bits). No dependency, no monotonic-within-a-ms guarantee.
"""
from __future__ import annotations

import os
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DEC = {c: i for i, c in enumerate(ALPHABET)}
ULID_LEN = 26


class ULIDError(ValueError):
    """A string is not a strict ULID."""


def from_parts(ms: int, rand: int) -> str:
    if not 0 <= ms < 1 << 48:
        raise ULIDError(f"ULID time {ms} out of range")
    n = (ms << 80) | (rand & ((1 << 80) - 1))
    return "".join(ALPHABET[(n >> (5 * i)) & 31] for i in range(ULID_LEN - 1, -1, -1))


def new(ms: int | None = None) -> str:
    """A new ULID for time ``ms`` (Unix milliseconds, default now) and 80 random bits."""
    if ms is None:
        ms = time.time_ns() // 1_000_000
    return from_parts(ms, int.from_bytes(os.urandom(10), "big"))


def parse(s: str) -> int:
    """The 128-bit value of a strict ULID string; raises :class:`ULIDError`."""
    if not isinstance(s, str) or len(s) != ULID_LEN:
        raise ULIDError(f"invalid ULID {s!r}: want {ULID_LEN} characters")
    if s[0] > "7":
        raise ULIDError(f"invalid ULID {s!r}: overflows 128 bits (first character > '7')")
    n = 0
    for c in s:
        v = _DEC.get(c)
        if v is None:
            raise ULIDError(f"invalid ULID {s!r}: bad character {c!r}")
        n = (n << 5) | v
    return n


def is_ulid(s: str) -> bool:
    try:
        parse(s)
        return True
    except ULIDError:
        return False


def timestamp_ms(s: str) -> int:
    """The ULID's time in Unix milliseconds."""
    return parse(s) >> 80
