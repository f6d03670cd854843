"""Remote read client (``pythanos.remote``) against real Prometheus 2.42 and 3.x, plus frame-level unit tests."""
from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from peers import free_port
from pythanos.remote import (
    SAMPLES,
    STREAMED_XOR_CHUNKS,
    FrameError,
    RemoteReadClient,
    RemoteReadError,
    encode_read_request,
    iter_frames,
    parse_chunked_stream,
    samples_to_xor_chunks,
)
from pythanos.remote.prompb import remote_pb2, types_pb2
from pythanos.sidecar.promclient import PromClient
from pythanos.tsdb.chunkenc import decode_xor
from pythanos.tsdb.encoding import crc32c, encode_uvarint
from pythanos.tsdb.labels import Matcher

EXT = {"cluster": "rr", "replica": "0"}


# ------------------------------------------------------------------------------------------ helpers

def _frame(msg: bytes, crc: int | None = None) -> bytes:
    return encode_uvarint(len(msg)) + (crc32c(msg) if crc is None else crc).to_bytes(4, "big") + msg


def _chunked(labels: dict[str, str], chunks: list, qi: int = 0) -> bytes:
    r = remote_pb2.ChunkedReadResponse(query_index=qi)
    cs = r.chunked_series.add()
    for k, v in sorted(labels.items()):
        cs.labels.add(name=k, value=v)
    cs.chunks.extend(chunks)
    return r.SerializeToString()


async def _aiter(pieces):
    for p in pieces:
        yield p


async def _collect(agen):
    return [x async for x in agen]


def _query(url: str, expr: str, t: float) -> dict:
    q = urllib.parse.urlencode({"query": expr, "time": f"{t:.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as r:
        return json.load(r)["data"]


def _api_samples(url: str, expr: str, t_ms: int) -> dict[tuple, list[tuple[int, float]]]:
    out = {}
    for s in _query(url, expr, t_ms / 1000)["result"]:
        key = tuple(sorted(s["metric"].items()))
        out[key] = [(int(round(float(ts) * 1000)), float(v)) for ts, v in s["values"]]
    return out


def _rr_samples(series, drop=EXT) -> dict[tuple, list[tuple[int, float]]]:
    out = {}
    for s in series:
        key = tuple((k, v) for k, v in s.labels if k not in drop)
        if s.chunks:
            pts = []
            for c in s.chunks:
                assert c.type == types_pb2.Chunk.XOR
                t, v = decode_xor(c.data)
                assert t.size and t[0] >= c.min_time_ms and t[-1] <= c.max_time_ms
                pts += list(zip(t.tolist(), v.tolist()))
        else:
            pts = list(zip(s.timestamps.tolist(), s.values.tolist()))
        out[key] = pts
    return out


# ------------------------------------------------------------------------------------------ unit

def test_request_encoding_roundtrip():
    import cramjam

    body = encode_read_request([(10, 20, [Matcher.eq("__name__", "up"), Matcher.ne("a", "b"),
                                          Matcher.re("c", "d.*"), Matcher.nre("e", "f|g")])])
    req = remote_pb2.ReadRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    assert list(req.accepted_response_types) == [STREAMED_XOR_CHUNKS, SAMPLES] == [1, 0]
    q = req.queries[0]
    assert (q.start_timestamp_ms, q.end_timestamp_ms) == (10, 20)
    assert [(m.type, m.name, m.value) for m in q.matchers] == [
        (0, "__name__", "up"), (1, "a", "b"), (2, "c", "d.*"), (3, "e", "f|g")]
    # field numbers on the wire: queries=1 (0x0a), accepted_response_types=2 packed (0x12)
    raw = req.SerializeToString()
    assert raw[0] == 0x0A and raw.endswith(b"\x12\x02\x01\x00")
    c = types_pb2.Chunk(min_time_ms=1, max_time_ms=2, type=types_pb2.Chunk.XOR, data=b"\x00\x01")
    assert c.SerializeToString() == b"\x08\x01\x10\x02\x18\x01\x22\x02\x00\x01"


def test_frames_split_merge_and_errors():
    t = np.arange(0, 240_000, 1000, dtype=np.int64)
    chunks = samples_to_xor_chunks(t, np.arange(t.size, dtype=np.float64))
    assert len(chunks) == 2
    a = _frame(_chunked({"__name__": "a"}, chunks[:1]))
    a2 = _frame(_chunked({"__name__": "a"}, chunks[1:]))
    b = _frame(_chunked({"__name__": "b"}, chunks[:1]))
    stream = a + a2 + b
    # delivered one byte at a time: frames reassembled, consecutive frames of one series merged
    got = asyncio.run(_collect(parse_chunked_stream(_aiter([stream[i:i + 1] for i in range(len(stream))]))))
    assert [s.labels for s in got] == [(("__name__", "a"),), (("__name__", "b"),)]
    assert [len(s.chunks) for s in got] == [2, 1]
    assert got[0].chunks[1].data == chunks[1].data  # passed through, not re-encoded

    bad = bytearray(a + _frame(_chunked({"__name__": "x"}, chunks[:1]), crc=123))
    with pytest.raises(FrameError, match=rf"CRC32C mismatch.*frame at byte {len(a)}"):
        list(iter_frames(bad))
    with pytest.raises(FrameError, match="stream ended inside a frame"):
        asyncio.run(_collect(parse_chunked_stream(_aiter([a[:-3]]))))
    with pytest.raises(FrameError, match="exceeds the limit"):
        list(iter_frames(bytearray(a), max_frame=10))


def test_unreachable_prometheus_is_a_clear_bounded_error():
    port = free_port()  # leased to this test: nobody listens there
    url = f"http://127.0.0.1:{port}"

    async def run(client):
        try:
            return await _collect(client.read(0, 1000, [Matcher.eq("__name__", "up")]))
        finally:
            await client.close()

    t0 = time.monotonic()
    with pytest.raises(RemoteReadError) as ei:
        asyncio.run(run(RemoteReadClient(url, connect_timeout=2, timeout=3)))
    assert f"{url}/api/v1/read" in str(ei.value) and ei.value.status == 0
    assert time.monotonic() - t0 < 3

    # a server that accepts but never answers: the timeout bounds the call
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(RemoteReadError, match=r"timed out") as ei:
            asyncio.run(run(RemoteReadClient(url, timeout=1.0)))
        assert url in str(ei.value)
        assert time.monotonic() - t0 < 3
    finally:
        srv.close()


# ------------------------------------------------------------------------------------------ real Prometheus

def _self_scraping_prometheus(prometheus_factory, binary):
    """A Prometheus scraping itself every second (its port is only known once started: reload)."""
    p = prometheus_factory(config_yaml="global:\n  scrape_interval: 1s\n", extra_args=["--web.enable-lifecycle"],
                           binary=binary)
    cfg = ("global:\n  scrape_interval: 1s\n  external_labels:\n"
           + "".join(f"    {k}: '{v}'\n" for k, v in EXT.items())
           + f"scrape_configs:\n  - job_name: prom\n    static_configs:\n      - targets: ['127.0.0.1:{p.port}']\n"
           + f"  - job_name: prom2\n    static_configs:\n      - targets: ['localhost:{p.port}']\n")
    p.extra["config_file"].write_text(cfg)

    async def reload():
        async with PromClient(p.url) as c:
            await c.reload()
            assert await c.external_labels() == EXT
    asyncio.run(reload())
    return p


@pytest.mark.parametrize("version", ["2.42", "3.x"])
def test_remote_read_real_prometheus(prometheus_factory, prometheus_bin, version, request):
    binary = prometheus_bin if version == "2.42" else request.getfixturevalue("prometheus3_bin")
    p = _self_scraping_prometheus(prometheus_factory, binary)
    # wait until a handful of scrapes of both jobs lie before t_end (every sample <= t_end is appended by then)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        t_end = (int(time.time()) - 2) * 1000
        res = _query(p.url, "count_over_time(up[1m])", t_end / 1000)["result"]
        if len(res) == 2 and min(float(r["value"][1]) for r in res) >= 4:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"no scrapes: {res}")
    t_start = t_end - 300_000

    async def read(matchers, start=t_start, end=t_end, **kw):
        async with RemoteReadClient(p.url, timeout=20) as c:
            return await _collect(c.read(start, end, matchers, **kw))

    for metric in ("up", "prometheus_tsdb_head_series"):
        got = asyncio.run(read([Matcher.eq("__name__", metric)]))
        assert len(got) == 2, got
        # labels sorted, series sorted, external labels merged in by Prometheus
        for s in got:
            assert list(s.labels) == sorted(s.labels) and {k: v for k, v in s.labels if k in EXT} == EXT
            assert s.chunks and s.timestamps is None
        assert [s.labels for s in got] == sorted(s.labels for s in got)
        want = _api_samples(p.url, f"{metric}[5m]", t_end)
        have = _rr_samples(got)
        assert have == want and all(len(v) >= 3 for v in have.values())

        # SAMPLES fallback: same samples
        got_s = asyncio.run(read([Matcher.eq("__name__", metric)], response_types=(SAMPLES,)))
        assert all(s.timestamps is not None and not s.chunks for s in got_s)
        assert _rr_samples(got_s) == want

    # matchers of every type are translated
    cases = [
        ([Matcher.eq("__name__", "up"), Matcher.eq("job", "prom")], "up{job='prom'}"),
        ([Matcher.eq("__name__", "up"), Matcher.ne("job", "prom")], "up{job!='prom'}"),
        ([Matcher.re("__name__", "up|prometheus_tsdb_head_series"), Matcher.re("instance", "local.*")],
         "{__name__=~'up|prometheus_tsdb_head_series', instance=~'local.*'}"),
        ([Matcher.eq("__name__", "up"), Matcher.nre("job", "prom.+")], "up{job!~'prom.+'}"),
    ]
    for matchers, selector in cases:
        assert _rr_samples(asyncio.run(read(matchers))) == _api_samples(p.url, f"{selector}[5m]", t_end), selector
    # a matcher contradicting everything returns nothing
    assert asyncio.run(read([Matcher.eq("__name__", "up"), Matcher.eq("job", "nope")])) == []

    # the time range is respected (Prometheus trims chunks to [start, end], inclusive)
    full = _rr_samples(asyncio.run(read([Matcher.eq("__name__", "up")])))
    ts = sorted({t for pts in full.values() for t, _ in pts})
    lo, hi = ts[1], ts[-2]
    part = _rr_samples(asyncio.run(read([Matcher.eq("__name__", "up")], start=lo, end=hi)))
    assert part == {k: [(t, v) for t, v in pts if lo <= t <= hi] for k, pts in full.items()}

    # an invalid request gives an error naming the URL and the HTTP status and body
    with pytest.raises(RemoteReadError) as ei:
        asyncio.run(read([Matcher.re("__name__", "up")], response_types=(7,)))
    assert ei.value.status == 400 and p.url in str(ei.value)
