"""StoreAPI Series frames as a store sends them (``query._frames.parse``: the querier reads every
store's answer with it), checked against protobuf's parser followed by the Python extraction it
replaces (``query.proxy._series``), which its docstring promises to equal.

Fine: ``ValueError`` (``UnicodeDecodeError`` included), which the querier turns into a
StoreAPIError naming the store. Checked: where both parse, the same kind and payload."""
from __future__ import annotations

from google.protobuf.message import DecodeError

from pythanos.query import _frames
from pythanos.query.proxy import _series
from pythanos.storeapi.pb import rpc_pb2

_KINDS = {"series": 1, "warning": 2, "hints": 3, "batch": 4}


def _reference(frame: bytes, strip):
    """(kind, payload) from protobuf's parser, as ``_read_pb`` reads a frame; None when rejected."""
    try:
        msg = rpc_pb2.SeriesResponse.FromString(frame)
        kind = msg.WhichOneof("result")
        if kind == "series":
            return 1, [_series(msg.series, strip)]
        if kind == "batch":
            return 4, [_series(s, strip) for s in msg.batch.series]
        if kind == "warning":
            return 2, msg.warning
        return _KINDS.get(kind, 0), None
    except (DecodeError, ValueError):
        return None


def test_one_input(data: bytes) -> None:
    """Parse with and without a strip set; compare with the reference where both accept."""
    if not data:
        return
    strip = frozenset({"replica", ""}) if data[0] & 1 else None
    frame = data[1:]
    try:
        got = _frames.parse(frame, strip, {})
    except ValueError:
        return
    want = _reference(frame, strip)
    if want is not None:
        assert got == want, (got, want)
