"""The sidecar's StoreAPI: one Prometheus behind ``thanos.Store`` (Thanos ``pkg/store/prometheus.go``).

What it does, as the Thanos sidecar does (facts from ``pkg/store/prometheus.go``, v0.42):

* **Series**: matchers on external labels were already checked and removed by the server base
  (``matchesExternalLabels``); a request with no matcher left is ``INVALID_ARGUMENT`` "no
  matchers specified (excluding external labels)". ``min_time`` is raised to the advertised
  min time (Prometheus' lowest timestamp or ``--min-time``, whichever is later). The query goes
  to Prometheus' remote read asking for ``STREAMED_XOR_CHUNKS`` first, ``SAMPLES`` second.
  Streamed chunks are **passed through**: the ``prometheus.Chunk`` message becomes a
  ``thanos.AggrChunk`` with the same bytes, ``type`` shifted from Prometheus' numbering
  (XOR = 1) to Thanos' (XOR = 0); no sample is decoded. The fast path: every complete
  remote-read frame received goes through one C call (``pythanos.storeapi._transcode``: CRC,
  parse, chunks written straight into ``thanos.Series`` wire bytes, the same bytes as the Python
  :class:`ChunkTranscoder`) and is yielded as :class:`~pythanos.storeapi.types.RawSeries`; the
  server base adds the label bytes. A SAMPLES answer (servers that do not
  stream) is cut into XOR chunks of at most 120 samples, and series without samples are skipped,
  as Thanos does. External labels are merged by the server base and win over Prometheus' own.
* ``skip_chunks``: ``/api/v1/series`` instead of remote read (labels only), as Thanos.
* Failures to reach Prometheus are ``UNAVAILABLE`` with a message naming its URL (Thanos wraps
  them as "query Prometheus: ..." with code Unknown; UNAVAILABLE tells a querier it is the
  backend, which it treats the same for partial responses).
* **LabelNames / LabelValues**: ``/api/v1/labels`` and ``/api/v1/label/<name>/values``; with
  matchers only on Prometheus >= 2.24, otherwise ``/api/v1/series`` and the names/values are
  collected from the series (Thanos' ``labelCallsSupportMatchers``).
* **Info**: component ``sidecar``, min time as above, max time MaxInt64 (a live head), the
  external label set as the only label set and one TSDB info. While the sidecar is not ready
  (external labels unknown or empty, Prometheus unreachable at start) every call is
  ``UNAVAILABLE`` naming the reason; Thanos' Info answers "Not ready" then too.

Not carried over: the chunk ``hash`` field (Thanos fills it with xxhash64 of the data; it is
optional on the wire and 0 here), query sharding (``supports_sharding`` is False) and the
``prometheus_store_received_frames`` histogram.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import AsyncIterator, Callable, Optional, Sequence

import aiohttp

from ..remote import (
    REMOTE_READ_VERSION,
    FrameError,
    RemoteReadClient,
    RemoteReadError,
    encode_read_request,
    samples_to_xor_chunks,
)
from ..storeapi import InvalidArgument, Series, Store, StoreInfo, Unavailable
from ..storeapi._transcode import transcode_frames as _transcode_frames
from ..storeapi.pb import types_pb2
from ..storeapi.types import LabelNamesRequest, Labels, LabelValuesRequest, RawSeries, SeriesRequest, uvarint
from ..tsdb.labels import Matcher
from .promclient import PromClient, PromClientError

log = logging.getLogger(__name__)

__all__ = ["PrometheusStore", "NO_MATCHERS", "MIN_API_TIME", "MAX_API_TIME", "LABEL_MATCHERS_MIN_VERSION"]

NO_MATCHERS = "no matchers specified (excluding external labels)"
# Prometheus' API clamps to these (web/api/v1 minTime/maxTime are year -292273086..292277025; we keep
# to years 0000..9999 so the float seconds we send are exact and every Prometheus version parses them).
MIN_API_TIME = -62167219200000  # 0000-01-01T00:00:00Z
MAX_API_TIME = 253402300799999  # 9999-12-31T23:59:59.999Z
LABEL_MATCHERS_MIN_VERSION = (2, 24, 0)

_AggrChunk = types_pb2.AggrChunk
_RawChunk = types_pb2.Chunk


def _version_tuple(v: str) -> Optional[tuple[int, int, int]]:
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", v or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def _clamp(ms: int) -> int:
    return min(max(int(ms), MIN_API_TIME), MAX_API_TIME)


def to_aggr_chunks(chunks) -> list:
    """``prometheus.Chunk`` messages -> ``thanos.AggrChunk`` messages with the same bytes (XOR 1 -> 0)."""
    out = []
    for c in chunks:
        ac = _AggrChunk(min_time=c.min_time_ms, max_time=c.max_time_ms)
        raw = ac.raw
        raw.data = c.data
        if c.type != 1:  # XOR (Thanos 0) is the proto3 default
            raw.type = c.type - 1
        else:
            raw.SetInParent()
        out.append(ac)
    return out


_V1 = tuple(bytes((i,)) for i in range(0x80))


class ChunkTranscoder:
    """``prometheus.Chunk`` messages -> the ``chunks`` fields of a ``thanos.Series`` (bytes), the
    same bytes ``to_aggr_chunks`` + ``SerializeToString`` give, without a message per chunk.

    AggrChunk{min_time = 1, max_time = 2, raw = 3 Chunk{type = 1, data = 2}}; proto3 leaves out
    zero values, as the generated serializer does. The ``min_time``/``max_time`` prefix is cached
    (chunks of series scraped together share their time ranges)."""

    __slots__ = ("heads",)

    def __init__(self) -> None:
        self.heads: dict = {}

    def head(self, mint: int, maxt: int) -> bytes:
        h = (b"\x08" + uvarint(mint) if mint else b"") + (b"\x10" + uvarint(maxt) if maxt else b"") + b"\x1a"
        if len(self.heads) > 100_000:
            self.heads.clear()
        self.heads[(mint, maxt)] = h
        return h

    def __call__(self, chunks) -> bytes:
        get = self.heads.get
        out = []
        for c in chunks:
            mint = c.min_time_ms
            maxt = c.max_time_ms
            head = get((mint, maxt)) or self.head(mint, maxt)
            data = c.data
            n = len(data)
            t = c.type
            # raw = Chunk{type = 1 (Thanos numbering: Prometheus' minus one), data = 2}
            if n:
                raw = (b"\x12" + _V1[n] if n < 0x80 else b"\x12" + uvarint(n)) + data
            else:
                raw = b""
            if t != 1:
                raw = b"\x08" + uvarint(t - 1) + raw
            n = len(raw)
            ac = head + (_V1[n] if n < 0x80 else uvarint(n)) + raw
            n = len(ac)
            out.append((b"\x12" + _V1[n] if n < 0x80 else b"\x12" + uvarint(n)) + ac)
        return b"".join(out)


def _joined(first: RawSeries, chunks: list) -> RawSeries:
    """The series ``first`` with the chunks of all its pieces (its ``wire`` holds only its own)."""
    return first if len(chunks) == 1 else RawSeries(first[0], b"".join(chunks))


class PrometheusStore(Store):
    """StoreAPI on top of one Prometheus.

    ``external_labels()`` returns the current external labels (sorted pairs), ``timestamps()``
    the advertised ``(min_time, max_time)``, ``not_ready()`` ``None`` when serving or the reason
    why not, ``version()`` Prometheus' version string. The sidecar's metadata loop keeps them
    current; the store never calls Prometheus for them."""

    presorted = False  # the base re-sorts after merging external labels, as Thanos' resortingServer

    def __init__(self, url: str, *, remote: RemoteReadClient, prom: PromClient,
                 external_labels: Callable[[], Labels], timestamps: Callable[[], tuple[int, int]],
                 not_ready: Callable[[], Optional[str]] = lambda: None,
                 version: Callable[[], str] = lambda: "") -> None:
        self.url = url.rstrip("/")
        self.remote = remote
        self.prom = prom
        self.external_labels = external_labels
        self.timestamps = timestamps
        self.not_ready = not_ready
        self.version = version

    def _check_ready(self) -> None:
        why = self.not_ready()
        if why:
            raise Unavailable(f"sidecar not ready: {why}")

    async def info(self) -> StoreInfo:
        self._check_ready()
        ext = self.external_labels()
        mint, maxt = self.timestamps()
        return StoreInfo(min_time=mint, max_time=maxt, external_labels=ext, component_type="sidecar",
                         supports_sharding=False, supports_without_replica_labels=True,
                         tsdb_infos=[(ext, mint, maxt)] if ext else [], exemplars=(0, 0), rules=True)

    def _label_calls_support_matchers(self) -> bool:
        v = _version_tuple(self.version())
        return v is not None and v >= LABEL_MATCHERS_MIN_VERSION

    def _unavailable(self, what: str, e: Exception) -> Unavailable:
        msg = str(e)
        if self.url not in msg:
            msg = f"{self.url}: {msg}"
        return Unavailable(f"{what} Prometheus {msg}")

    # ------------------------------------------------------------------------------ Series

    async def series(self, req: SeriesRequest) -> AsyncIterator:
        if not req.matchers:
            raise InvalidArgument(NO_MATCHERS)
        mint, _ = self.timestamps()
        start = max(req.min_time, mint)
        end = req.max_time
        if start > end:
            return
        if req.skip_chunks:
            try:
                maps = await self.prom.series(req.matchers, _clamp(start), _clamp(end), req.limit or None)
            except PromClientError as e:
                raise self._unavailable("series from", e) from None
            for lm in maps:
                yield Series(tuple(lm.items()), ())
            return
        try:
            async for s in self._remote_read(start, end, req.matchers):
                yield s
        except RemoteReadError as e:
            raise self._unavailable("query", e) from None

    async def _remote_read(self, start: int, end: int, matchers: Sequence[Matcher]) -> AsyncIterator[Series]:
        """Remote read, streamed frames turned into Series without decoding a sample.

        The hot path of the sidecar, so it does not go through ``RemoteReadClient.read`` (one
        event-loop turn and one protobuf parse per frame): every complete frame that has arrived
        goes through **one** C call (``storeapi._transcode.transcode_frames``: CRC32C check,
        parse, chunks written as ``thanos.Series`` wire bytes byte for byte as
        :class:`ChunkTranscoder`, labels as str pairs, consecutive entries of one series joined;
        the GIL released for the parse), and entries of one series split over two calls are
        joined here (Prometheus splits big series over frames)."""
        rc = self.remote
        body = encode_read_request([(start, end, matchers)])
        headers = {"Content-Encoding": "snappy", "Accept-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                   "User-Agent": rc.user_agent, "X-Prometheus-Remote-Read-Version": REMOTE_READ_VERSION}
        timeout = aiohttp.ClientTimeout(total=rc.timeout, connect=rc.connect_timeout)
        t0 = time.monotonic()
        try:
            async with rc._get_session().post(rc.read_url, data=body, headers=headers, timeout=timeout,
                                              auto_decompress=False) as resp:
                if resp.status != 200:
                    text = (await resp.read()).decode("utf-8", "replace")
                    raise rc._error("unexpected response", resp.status, text)
                ctype = resp.headers.get("Content-Type", "")
                if not ctype.startswith("application/x-streamed-protobuf"):
                    if ctype.startswith("application/x-protobuf") or not ctype:  # SAMPLES (old Prometheus)
                        raw = await resp.read()
                        async for s in rc._samples(raw, resp.headers.get("Content-Encoding", "")):
                            if len(s.timestamps):
                                yield Series(s.labels, to_aggr_chunks(samples_to_xor_chunks(s.timestamps, s.values)))
                            else:
                                log.warning("found timeseries without any chunk", extra={"lset": str(dict(s.labels))})
                        return
                    raise rc._error(f"unexpected content type {ctype!r}")
                if "proto=prometheus.ChunkedReadResponse" not in ctype:
                    raise rc._error(f"unsupported streamed content type {ctype!r}")
                buf = bytearray()
                offset = 0
                pend: Optional[RawSeries] = None  # the last series of a call: may go on in the next
                pend_chunks: list = []
                max_frame = rc.max_frame
                async for piece in resp.content.iter_any():
                    buf += piece
                    # every complete frame in one C call: CRC, parse, transcode (without the GIL);
                    # consecutive entries of one series come back joined, with their Series bytes
                    try:
                        used, ready = _transcode_frames(buf, offset, max_frame, RawSeries, True)
                    except ValueError as e:
                        raise rc._error(f"corrupt chunked response: {e}") from e
                    if not used:
                        continue
                    del buf[:used]
                    offset += used
                    if not ready:
                        continue
                    i = 0
                    if pend is not None:  # join across calls (a series split over reads)
                        first = ready[0]
                        if first[0] == pend[0]:
                            pend_chunks.append(first[1])
                            i = 1
                        if i == 0 or len(ready) > 1:
                            yield _joined(pend, pend_chunks)
                            pend = None
                    if i < len(ready):
                        last = ready.pop()
                        for k in range(i, len(ready)):
                            yield ready[k]
                        pend, pend_chunks = last, [last[1]]
                if buf:
                    raise FrameError(f"stream ended inside a frame ({len(buf)} bytes left over)", offset)
                if pend is not None:
                    yield _joined(pend, pend_chunks)
        except RemoteReadError:
            raise
        except FrameError as e:
            raise rc._error(f"corrupt chunked response: {e}") from e
        except asyncio.TimeoutError:
            raise rc._error(f"timed out after {time.monotonic() - t0:.1f}s (timeout {rc.timeout}s)") from None
        except aiohttp.ClientError as e:
            raise rc._error(f"{type(e).__name__}: {e}") from e

    # ------------------------------------------------------------------------------ labels

    async def _series_maps(self, matchers: Sequence[Matcher], start: int, end: int, limit: int) -> list[dict]:
        return await self.prom.series(matchers, _clamp(start), _clamp(end), limit or None)

    async def label_names(self, req: LabelNamesRequest) -> list[str]:
        try:
            if not req.matchers or self._label_calls_support_matchers():
                return await self.prom.label_names(req.matchers, _clamp(req.start), _clamp(req.end),
                                                   req.limit or None)
            sers = await self._series_maps(req.matchers, req.start, req.end, req.limit)
        except PromClientError as e:
            raise self._unavailable("label names from", e) from None
        return sorted({n for s in sers for n in s})

    async def label_values(self, req: LabelValuesRequest) -> list[str]:
        try:
            if not req.matchers or self._label_calls_support_matchers():
                return await self.prom.label_values(req.label, req.matchers, _clamp(req.start), _clamp(req.end),
                                                    req.limit or None)
            sers = await self._series_maps(req.matchers, req.start, req.end, req.limit)
        except PromClientError as e:
            raise self._unavailable("label values from", e) from None
        return sorted({s[req.label] for s in sers if req.label in s})
