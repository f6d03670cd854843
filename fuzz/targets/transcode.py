"""Prometheus remote-read STREAMED_XOR_CHUNKS frames as Prometheus sends them to the sidecar
(``storeapi._transcode.transcode_frames``, the sidecar's remote read path; ``transcode`` on one
message), checked against protobuf's parser and the Python transcoder it replaces
(``sidecar.store.ChunkTranscoder``).

Fine: ``ValueError`` (the sidecar wraps it in a RemoteReadError naming the URL). Checked: bytes
consumed are whole frames, and the series equal the reference's."""
from __future__ import annotations

from google.protobuf.message import DecodeError

from pythanos.remote.prompb import remote_pb2
from pythanos.sidecar.store import ChunkTranscoder
from pythanos.storeapi._transcode import transcode, transcode_frames
from pythanos.storeapi.types import RawSeries


def _reference(msg: bytes) -> list | None:
    """[(labels, chunks bytes)] of one message, consecutive equal label sets joined; None if rejected."""
    try:
        resp = remote_pb2.ChunkedReadResponse.FromString(msg)
    except DecodeError:
        return None
    tc = ChunkTranscoder()
    out: list = []
    for cs in resp.chunked_series:
        lbls = tuple((lb.name, lb.value) for lb in cs.labels)
        chunks = tc(cs.chunks)
        if out and out[-1][0] == lbls:
            out[-1] = (lbls, out[-1][1] + chunks)
        else:
            out.append((lbls, chunks))
    return out


def test_one_input(data: bytes) -> None:
    """``data`` as a frame stream (limit from ``data[0]``) and as one message."""
    if not data:
        return
    try:
        used, series = transcode_frames(data, 100, 1 << (data[0] % 24), RawSeries, True)
    except ValueError:
        pass
    else:
        assert 0 <= used <= len(data)
        for s in series:
            assert isinstance(s, RawSeries) and isinstance(s.wire, bytes)
    try:
        got = transcode(data, 0, RawSeries, False)
    except ValueError:
        return
    want = _reference(data)
    if want is not None:
        assert [(s.labels, s.chunks) for s in got] == want, (got, want)
