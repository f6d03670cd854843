"""Prometheus remote-read responses as the client reads them (``remote.client``): a
STREAMED_XOR_CHUNKS body split into pieces as the network delivers it (``parse_chunked_stream``),
and a SAMPLES body (``RemoteReadClient._samples``: snappy block, then ``ReadResponse``).

Fine: :class:`FrameError` and :class:`RemoteReadError`, the errors ``RemoteReadClient.read``
documents (it wraps a FrameError in a RemoteReadError naming the URL). Checked: the series that
come out hold what the frames held."""
from __future__ import annotations

from typing import AsyncIterator

import cramjam

from pythanos.remote.client import FrameError, RemoteReadClient, RemoteReadError, parse_chunked_stream

_CLIENT = RemoteReadClient("http://prometheus.invalid:9090")


def _drain(agen) -> list:
    """Run an async generator that never really waits (its input is all here) to its end."""
    out = []
    while True:
        step = agen.__anext__()
        try:
            step.send(None)
        except StopIteration as e:
            out.append(e.value)
        except StopAsyncIteration:
            return out
        else:  # pragma: no cover - nothing here suspends
            step.close()
            raise AssertionError("the parser waited for something")


async def _pieces(data: bytes, cut: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), cut):
        yield data[i:i + cut]


def test_one_input(data: bytes) -> None:
    """``data[0]`` picks the piece size; the rest is read as a stream and as a SAMPLES body."""
    if not data:
        return
    body = data[1:]
    try:
        series = _drain(parse_chunked_stream(_pieces(body, 1 + data[0]), max_frame=1 << 16))
    except (FrameError, RemoteReadError):
        pass
    else:
        for s in series:
            assert all(isinstance(n, str) and isinstance(v, str) for n, v in s.labels)
    for raw in (body, bytes(cramjam.snappy.compress_raw(body))):  # the snappy decoder, the protobuf parser
        try:
            _drain(_CLIENT._samples(raw, "snappy"))
        except RemoteReadError:
            pass
