"""One CRC-32C: the C kernels that check or write checksums inline (index series entries and
chunk records in ``_series`` / ``_indexenc``, remote-read frames in ``_transcode``) all compile
the one implementation in ``components/pythanos/_crc32c.h``; Python code uses the google-crc32c
package. Both paths of the header (the SSE 4.2 instruction and the slice-by-8 tables) equal
google-crc32c on random data of every length up to 1 KiB, at every alignment, and continued."""
from __future__ import annotations

import os
import random

import google_crc32c
import pytest

from pythanos.storeapi import _transcode
from pythanos.tsdb import _indexenc, _series, _wal

KERNELS = [_series, _indexenc, _transcode, _wal]


@pytest.mark.parametrize("mod", KERNELS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize("hardware", [True, False], ids=["hw", "tables"])
def test_kernel_crc32c_equals_google_crc32c(mod, hardware):
    rnd = random.Random(7)
    blob = os.urandom(1 << 16)
    for n in list(range(0, 1025)) + [4095, 4096, 65535]:
        for align in (0, 1, 3, 7) if n < 200 else (rnd.randrange(8),):
            data = memoryview(blob)[align:align + n]
            want = google_crc32c.value(bytes(data))
            assert mod.crc32c(data, hardware=hardware) == want, (n, align)
            # continued from a checksum, as google_crc32c.extend
            cut = rnd.randrange(n + 1)
            first = mod.crc32c(data[:cut], hardware=hardware)
            assert first == google_crc32c.value(bytes(data[:cut]))
            assert mod.crc32c(data[cut:], first, hardware=hardware) == want
    big = os.urandom(3 << 20)
    assert mod.crc32c(big, hardware=hardware) == google_crc32c.value(big)
    start = rnd.randrange(1 << 32)
    assert mod.crc32c(big[:1000], start, hardware=hardware) == google_crc32c.extend(start, big[:1000])


def test_known_vectors():
    # RFC 3720 B.4: 32 bytes of zeros / ones / incrementing
    for mod in KERNELS:
        assert mod.crc32c(b"\x00" * 32) == 0x8A9136AA
        assert mod.crc32c(b"\xff" * 32) == 0x62A8AB43
        assert mod.crc32c(bytes(range(32))) == 0x46DD794E
        assert mod.crc32c(b"123456789") == 0xE3069283
    with pytest.raises(ValueError):
        _series.crc32c(b"x", 1 << 32)
