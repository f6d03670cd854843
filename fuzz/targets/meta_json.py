"""``meta.json`` and the marker files of a block as a bucket holds them (``BlockMeta.from_json``,
``marker_from_json``: the fetcher, the compactor, the store gateway and the bucket tools).

Fine: :class:`InvalidMetaError` (names block and file). Checked: a meta that is accepted can be
written back (the compactor and the shipper write what they read) and reads back to the same bytes."""
from __future__ import annotations

from pythanos.tsdb.meta import (DELETION_MARK_FILENAME, NO_COMPACT_MARK_FILENAME, NO_DOWNSAMPLE_MARK_FILENAME,
                                BlockMeta, InvalidMetaError, marker_from_json, marker_to_json)

_MARKERS = (DELETION_MARK_FILENAME, NO_COMPACT_MARK_FILENAME, NO_DOWNSAMPLE_MARK_FILENAME)


def test_one_input(data: bytes) -> None:
    """Parse as meta.json and as each marker; what parses must round-trip."""
    try:
        meta = BlockMeta.from_json(data, block="fuzz")
    except InvalidMetaError:
        pass
    else:
        out = meta.to_json()
        assert BlockMeta.from_json(out, block="fuzz").to_json() == out, out
    for name in _MARKERS:
        try:
            mark = marker_from_json(name, data, block="fuzz")
        except InvalidMetaError:
            continue
        out = marker_to_json(mark)
        assert marker_to_json(marker_from_json(name, out)) == out, out
