"""Prometheus remote read client (``POST /api/v1/read``), async on aiohttp.

Wire facts (Prometheus ``prompb/remote.proto``, ``storage/remote/{client,codec,chunked}.go``):

* The request body is the snappy **block** format (not framed) of a marshalled ``ReadRequest``;
  headers ``Content-Encoding: snappy``, ``Accept-Encoding: snappy``,
  ``Content-Type: application/x-protobuf``, ``X-Prometheus-Remote-Read-Version: 0.1.0``.
* The server picks the first response type of ``accepted_response_types`` it supports. We ask
  for ``[STREAMED_XOR_CHUNKS, SAMPLES]`` as Prometheus and Thanos do.
* ``STREAMED_XOR_CHUNKS``: ``Content-Type: application/x-streamed-protobuf;
  proto=prometheus.ChunkedReadResponse``, not compressed; a sequence of frames
  ``uvarint(len) + BE32 CRC32C(message) + message``. Each message carries one series; a big
  series may span several consecutive frames (same labels), which we merge back into one.
  Chunks are passed through as the protobuf ``Chunk`` messages, never re-encoded.
* ``SAMPLES`` (servers that don't stream): ``Content-Type: application/x-protobuf``, a snappy
  block of ``ReadResponse``; series come back with raw samples (numpy arrays);
  :func:`samples_to_xor_chunks` turns them into XOR chunks of at most 120 samples, as the
  Thanos sidecar does.
* Errors are plain text with 400/500. Once a stream has started the status is 200, so an error
  mid-stream shows up as a truncated or corrupt frame: we raise on both.

Snappy comes from ``cramjam`` (``cramjam.snappy.compress_raw`` / ``decompress_raw`` are the block
format).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Iterable, Sequence

import aiohttp
import cramjam
import numpy as np
from google.protobuf.message import DecodeError

from ..httpsession import SessionClient
from ..tsdb.encoding import crc32c, encode_uvarint
from ..tsdb.labels import MATCH_EQUAL, MATCH_NOT_EQUAL, MATCH_NOT_REGEXP, MATCH_REGEXP, Matcher
from .prompb import remote_pb2, types_pb2

log = logging.getLogger(__name__)

__all__ = [
    "REMOTE_READ_VERSION",
    "STREAMED_CONTENT_TYPE",
    "SAMPLES",
    "STREAMED_XOR_CHUNKS",
    "DEFAULT_CHUNKED_READ_LIMIT",
    "RemoteReadError",
    "FrameError",
    "RemoteSeries",
    "RemoteReadClient",
    "to_prompb_matchers",
    "encode_read_request",
    "iter_frames",
    "parse_chunked_stream",
    "samples_to_xor_chunks",
]

REMOTE_READ_VERSION = "0.1.0"
STREAMED_CONTENT_TYPE = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
SAMPLES = remote_pb2.ReadRequest.SAMPLES
STREAMED_XOR_CHUNKS = remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS
# config.DefaultChunkedReadLimit: the largest frame a Prometheus client accepts.
DEFAULT_CHUNKED_READ_LIMIT = 50_000_000
# storage/remote/codec.go decodeReadLimit: the largest snappy-decoded body.
DECODE_READ_LIMIT = 32 * 1024 * 1024
MAX_SAMPLES_PER_CHUNK = 120  # Thanos' sidecar re-encodes SAMPLES responses into chunks of this size

_MATCH_TYPES = {
    MATCH_EQUAL: types_pb2.LabelMatcher.EQ,
    MATCH_NOT_EQUAL: types_pb2.LabelMatcher.NEQ,
    MATCH_REGEXP: types_pb2.LabelMatcher.RE,
    MATCH_NOT_REGEXP: types_pb2.LabelMatcher.NRE,
}


class RemoteReadError(Exception):
    """A remote read failed; the message names the Prometheus URL and the status/body or cause.

    ``status`` is the HTTP status (0 when no response came back: connect error, timeout).
    """

    def __init__(self, message: str, *, url: str, status: int = 0, body: str = ""):
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = body


class FrameError(ValueError):
    """A STREAMED_XOR_CHUNKS frame is truncated, too large or fails its CRC; ``offset`` is its start."""

    def __init__(self, what: str, offset: int):
        super().__init__(f"{what} (frame at byte {offset})")
        self.what = what
        self.offset = offset


@dataclass
class RemoteSeries:
    """One series of a remote read result.

    ``labels`` are sorted ``(name, value)`` pairs as Prometheus sent them (its external labels
    included). Streamed responses fill ``chunks`` with ``prometheus.Chunk`` messages
    (``min_time_ms``, ``max_time_ms``, ``type`` in Prometheus' numbering, XOR = 1, ``data``);
    SAMPLES responses fill ``timestamps`` (int64 ms) and ``values`` (float64) instead.
    """

    labels: tuple[tuple[str, str], ...]
    chunks: list = field(default_factory=list)
    timestamps: np.ndarray | None = None
    values: np.ndarray | None = None
    query_index: int = 0

    @property
    def labels_dict(self) -> dict[str, str]:
        return dict(self.labels)


def to_prompb_matchers(matchers: Iterable[Matcher]) -> list:
    out = []
    for m in matchers:
        try:
            typ = _MATCH_TYPES[m.type]
        except KeyError:
            raise ValueError(f"unknown matcher type {m.type!r}") from None
        out.append(types_pb2.LabelMatcher(type=typ, name=m.name, value=m.value))
    return out


def encode_read_request(queries: Sequence[tuple[int, int, Sequence[Matcher]]],
                        response_types: Sequence[int] = (STREAMED_XOR_CHUNKS, SAMPLES),
                        hints: Sequence[types_pb2.ReadHints | None] | None = None) -> bytes:
    """The snappy-compressed body of a ``ReadRequest`` for ``(start_ms, end_ms, matchers)`` queries."""
    req = remote_pb2.ReadRequest(accepted_response_types=list(response_types))
    for i, (start, end, matchers) in enumerate(queries):
        q = req.queries.add(start_timestamp_ms=int(start), end_timestamp_ms=int(end))
        q.matchers.extend(to_prompb_matchers(matchers))
        if hints is not None and hints[i] is not None:
            q.hints.CopyFrom(hints[i])
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def iter_frames(buf: bytearray, *, max_frame: int = DEFAULT_CHUNKED_READ_LIMIT, base: int = 0):
    """Split complete frames off the front of ``buf``; yields message bytes, consumes them from ``buf``.

    Incomplete trailing bytes stay in ``buf`` for the next call. ``base`` is the stream offset of
    ``buf[0]`` (for error messages); the caller advances it by what was consumed
    (``iter_frames.consumed`` is not kept: compare ``len(buf)`` before and after).
    """
    pos = 0
    n = len(buf)
    mv = memoryview(buf)
    try:
        while pos < n:
            # uvarint length
            size = 0
            shift = 0
            p = pos
            while True:
                if p >= n:
                    return  # length not complete yet
                b = buf[p]
                p += 1
                size |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
                if shift > 63:
                    raise FrameError("frame length varint overflows 64 bits", base + pos)
            if size > max_frame:
                raise FrameError(f"frame of {size} bytes exceeds the limit of {max_frame} bytes", base + pos)
            end = p + 4 + size
            if end > n:
                return
            want = int.from_bytes(mv[p:p + 4], "big")
            msg = bytes(mv[p + 4:end])
            got = crc32c(msg)
            if got != want:
                raise FrameError(f"CRC32C mismatch: frame says {want:08x}, message has {got:08x}", base + pos)
            pos = end
            yield msg
    finally:
        mv.release()
        if pos:
            del buf[:pos]


async def parse_chunked_stream(chunks: AsyncIterator[bytes], *, max_frame: int = DEFAULT_CHUNKED_READ_LIMIT
                               ) -> AsyncIterator[RemoteSeries]:
    """Series from a STREAMED_XOR_CHUNKS body given as an async iterator of byte pieces.

    Consecutive frames of the same series (same labels, same query) are merged. A stream that
    ends inside a frame raises :class:`FrameError`.
    """
    buf = bytearray()
    offset = 0
    pending: RemoteSeries | None = None
    async for piece in chunks:
        buf += piece
        before = len(buf)
        frames = list(iter_frames(buf, max_frame=max_frame, base=offset))
        at = offset
        offset += before - len(buf)
        for msg in frames:
            try:
                resp = remote_pb2.ChunkedReadResponse.FromString(msg)
            except DecodeError as e:
                raise FrameError(f"malformed ChunkedReadResponse message: {e}", at) from None
            at += len(encode_uvarint(len(msg))) + 4 + len(msg)
            for cs in resp.chunked_series:
                lbls = tuple((lb.name, lb.value) for lb in cs.labels)
                if pending is not None and pending.labels == lbls and pending.query_index == resp.query_index:
                    pending.chunks.extend(cs.chunks)
                    continue
                if pending is not None:
                    yield pending
                pending = RemoteSeries(labels=lbls, chunks=list(cs.chunks), query_index=resp.query_index)
    if buf:
        raise FrameError(f"stream ended inside a frame ({len(buf)} bytes left over)", offset)
    if pending is not None:
        yield pending


def samples_to_xor_chunks(t: np.ndarray, v: np.ndarray, max_samples: int = MAX_SAMPLES_PER_CHUNK) -> list:
    """``prometheus.Chunk`` messages (XOR) of at most ``max_samples`` samples each."""
    from ..tsdb.chunkenc import encode_xor_many

    n = len(t)
    if n == 0:
        return []
    bounds = np.arange(0, n + max_samples, max_samples, dtype=np.int64)
    bounds[-1] = n
    bounds = np.unique(bounds)
    data, offsets = encode_xor_many(t, v, bounds)
    out = []
    for i in range(len(bounds) - 1):
        a, b = int(bounds[i]), int(bounds[i + 1])
        out.append(types_pb2.Chunk(min_time_ms=int(t[a]), max_time_ms=int(t[b - 1]), type=types_pb2.Chunk.XOR,
                                   data=bytes(data[offsets[i]:offsets[i + 1]])))
    return out


class RemoteReadClient(SessionClient):
    """Remote read against one Prometheus: ``async for s in client.read(start, end, matchers): ...``.

    ``timeout`` bounds a whole read (connect, headers and body), ``connect_timeout`` the TCP
    connect. Pass an ``aiohttp.ClientSession`` to share connections; otherwise the client makes
    one on first use and :meth:`close` closes it.
    """

    def __init__(self, url: str, *, session: aiohttp.ClientSession | None = None, timeout: float = 120.0,
                 connect_timeout: float = 5.0, user_agent: str = "pythanos",
                 max_frame: int = DEFAULT_CHUNKED_READ_LIMIT):
        self.base_url = url.rstrip("/")
        self.read_url = self.base_url + "/api/v1/read"
        super().__init__(session)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.user_agent = user_agent
        self.max_frame = max_frame

    def _error(self, what: str, status: int = 0, body: str = "") -> RemoteReadError:
        msg = f"remote read from {self.read_url}: {what}"
        if status:
            msg += f": HTTP {status}"
        if body:
            msg += f": {body.strip()[:500]}"
        return RemoteReadError(msg, url=self.read_url, status=status, body=body)

    async def read(self, start_ms: int, end_ms: int, matchers: Sequence[Matcher], *,
                   hints: types_pb2.ReadHints | None = None,
                   response_types: Sequence[int] = (STREAMED_XOR_CHUNKS, SAMPLES)) -> AsyncIterator[RemoteSeries]:
        """Series matching ``matchers`` in ``[start_ms, end_ms]`` (inclusive), sorted by labels.

        Raises :class:`RemoteReadError` (URL + status/body, or the connection cause; a corrupt
        stream is a :class:`FrameError` wrapped in it). ``timeout`` bounds the whole read, body
        included. A consumer that stops early should close the generator
        (``async with contextlib.aclosing(client.read(...)) as it``) to release the connection.
        """
        async for s in self.read_many([(start_ms, end_ms, matchers)], hints=[hints],
                                      response_types=response_types):
            yield s

    async def read_many(self, queries: Sequence[tuple[int, int, Sequence[Matcher]]], *,
                        hints: Sequence[types_pb2.ReadHints | None] | None = None,
                        response_types: Sequence[int] = (STREAMED_XOR_CHUNKS, SAMPLES)
                        ) -> AsyncIterator[RemoteSeries]:
        """Several queries in one request; each series carries its ``query_index``."""
        body = encode_read_request(queries, response_types, hints)
        headers = {
            "Content-Encoding": "snappy",
            "Accept-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "User-Agent": self.user_agent,
            "X-Prometheus-Remote-Read-Version": REMOTE_READ_VERSION,
        }
        timeout = aiohttp.ClientTimeout(total=self.timeout, connect=self.connect_timeout)
        session = self._get_session()
        t0 = time.monotonic()
        nseries = 0
        try:
            # auto_decompress=False: a snappy Content-Encoding is ours to undo, not aiohttp's.
            async with session.post(self.read_url, data=body, headers=headers, timeout=timeout,
                                    auto_decompress=False) as resp:
                if resp.status != 200:
                    text = (await resp.read()).decode("utf-8", "replace")
                    raise self._error("unexpected response", resp.status, text)
                ctype = resp.headers.get("Content-Type", "")
                if ctype.startswith("application/x-streamed-protobuf"):
                    if "proto=prometheus.ChunkedReadResponse" not in ctype:
                        raise self._error(f"unsupported streamed content type {ctype!r}")
                    async for s in parse_chunked_stream(resp.content.iter_chunked(1 << 16),
                                                        max_frame=self.max_frame):
                        nseries += 1
                        yield s
                elif ctype.startswith("application/x-protobuf") or not ctype:
                    raw = await resp.read()
                    async for s in self._samples(raw, resp.headers.get("Content-Encoding", "")):
                        nseries += 1
                        yield s
                else:
                    raise self._error(f"unexpected content type {ctype!r}")
        except RemoteReadError:
            raise
        except FrameError as e:
            raise self._error(f"corrupt chunked response: {e}") from e
        except asyncio.TimeoutError:
            raise self._error(f"timed out after {time.monotonic() - t0:.1f}s (timeout {self.timeout}s)") from None
        except aiohttp.ClientError as e:
            raise self._error(f"{type(e).__name__}: {e}") from e
        log.debug("remote read done", extra={"url": self.read_url, "series": nseries,
                                             "duration": f"{time.monotonic() - t0:.3f}s"})

    async def _samples(self, raw: bytes, encoding: str) -> AsyncIterator[RemoteSeries]:
        try:
            if encoding == "snappy" or encoding == "":
                # the decoded length (the block's header) checked before decoding, as Prometheus does
                n = cramjam.snappy.decompress_raw_len(raw) if raw else 0
                if n > DECODE_READ_LIMIT:
                    raise self._error(f"SAMPLES response of {n} bytes exceeds {DECODE_READ_LIMIT} bytes")
                raw = bytes(cramjam.snappy.decompress_raw(raw)) if raw else b""
            else:
                raise self._error(f"unsupported Content-Encoding {encoding!r}")
        except cramjam.DecompressionError as e:
            raise self._error(f"cannot snappy-decode the SAMPLES response: {e}") from None
        try:
            resp = remote_pb2.ReadResponse.FromString(raw)
        except DecodeError as e:
            raise self._error(f"malformed SAMPLES response ({len(raw)} bytes after snappy): {e}") from None
        for qi, result in enumerate(resp.results):
            series = []
            for ts in result.timeseries:
                lbls = tuple(sorted((lb.name, lb.value) for lb in ts.labels))
                t = np.fromiter((s.timestamp for s in ts.samples), dtype=np.int64, count=len(ts.samples))
                v = np.fromiter((s.value for s in ts.samples), dtype=np.float64, count=len(ts.samples))
                series.append(RemoteSeries(labels=lbls, timestamps=t, values=v, query_index=qi))
            series.sort(key=lambda s: s.labels)
            for s in series:
                yield s
