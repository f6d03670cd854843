"""The Series fast path (pre-serialized chunks, SeriesResponse frames put together as bytes) gives
exactly what the message path gives: same bytes, parsed by the generated classes into the same
messages, same order after external labels are merged and replica labels removed."""
from __future__ import annotations

import asyncio

import pytest

from pythanos.remote.prompb import types_pb2 as prompb
from pythanos.sidecar.store import ChunkTranscoder, to_aggr_chunks
from pythanos.storeapi import Chunk, Series, StoreInfo, StoreServer
from pythanos.storeapi.memstore import MemoryStore
from pythanos.storeapi.pb import rpc_pb2, types_pb2
from pythanos.storeapi.types import (RawSeries, chunk_to_pb, labels_to_bytes, labels_to_pb, matcher_to_pb,
                                     uvarint)
from pythanos.tsdb.labels import Matcher


def _prom_chunks(specs):
    return [prompb.Chunk(min_time_ms=a, max_time_ms=b, type=t, data=d) for a, b, t, d in specs]


EDGE = [(0, 0, 1, b""), (1, 2, 1, b"x"), (-5, -1, 1, b"\x00" * 127), (1_700_000_000_000, 1_700_000_120_000, 1, b"a" * 128),
        (10, 20, 2, b"h" * 20000), (10, 20, 3, b"f"), (10, 20, 0, b"u"), (-(1 << 63), (1 << 63) - 1, 4, b"z" * 300)]


@pytest.mark.parametrize("n", range(len(EDGE) + 1))
def test_transcoder_bytes_equal_message_path(n):
    chunks = _prom_chunks(EDGE[:n] if n < len(EDGE) else EDGE)
    tc = ChunkTranscoder()
    want = types_pb2.Series(chunks=to_aggr_chunks(chunks)).SerializeToString()
    assert tc(chunks) == want
    assert tc(chunks) == want  # cached heads
    parsed = types_pb2.Series.FromString(tc(chunks))
    assert list(parsed.chunks) == to_aggr_chunks(chunks)


def test_uvarint_matches_protobuf():
    for v in (0, 1, 127, 128, 16383, 16384, 1 << 35, (1 << 63) - 1, -1, -(1 << 63)):
        m = types_pb2.AggrChunk(min_time=v).SerializeToString()
        assert (b"\x08" + uvarint(v) if v else b"") == m


def test_labels_bytes():
    ls = (("__name__", "up"), ("job", "ü" * 100), ("x", ""))
    assert labels_to_bytes(ls) == types_pb2.Series(labels=labels_to_pb(ls)).SerializeToString()


class _Raw(MemoryStore):
    """Yields the rows as given: RawSeries (fast path) or Series (message path)."""

    def __init__(self, rows, ext, raw: bool):
        super().__init__([])
        self.rows, self.raw, self.ext = rows, raw, ext

    async def info(self):
        return StoreInfo(external_labels=self.ext)

    async def series(self, req):
        for lbls, chunks in self.rows:
            if self.raw:
                yield RawSeries(lbls, b"".join(b"\x12" + uvarint(len(b)) + b for b in
                                               (chunk_to_pb(c).SerializeToString() for c in chunks)))
            else:
                yield Series(lbls, chunks)


def _frames(store, **kw):
    req = rpc_pb2.SeriesRequest(min_time=0, max_time=100, matchers=[matcher_to_pb(Matcher.re("__name__", ".+"))],
                                **kw)

    async def go():
        return [f async for f in StoreServer(store)._series_frames(req)]
    return asyncio.run(go())


def _old_frames(rows, ext, remove=(), batch=0, skip=False, limit=0):
    """The message path as it was: complete labels, sort, one message per series and chunk."""
    done = []
    for lbls, chunks in rows:
        d = dict(lbls)
        for n in remove:
            d.pop(n, None)
        d.update((n, v) for n, v in ext if n not in remove)
        done.append((tuple(sorted(d.items())), chunks))
    done.sort(key=lambda x: x[0])
    out, pend, prev, count = [], [], None, 0
    for lbls, chunks in done:
        if lbls != prev:
            count += 1
            if limit and count > limit:
                break
        prev = lbls
        s = types_pb2.Series(labels=labels_to_pb(lbls), chunks=[] if skip else [chunk_to_pb(c) for c in chunks])
        if batch > 1:
            pend.append(s)
            if len(pend) >= batch:
                out.append(rpc_pb2.SeriesResponse(batch=types_pb2.SeriesBatch(series=pend)))
                pend = []
        else:
            out.append(rpc_pb2.SeriesResponse(series=s))
    if pend:
        out.append(rpc_pb2.SeriesResponse(batch=types_pb2.SeriesBatch(series=pend)))
    return out


EXT = (("cluster", "eu"), ("replica", "0"))
ROWS = [
    # Prometheus' order by its own labels; every series carries the external labels (remote read adds them)
    ((("__name__", "a"), ("cluster", "eu"), ("replica", "0")), [Chunk(0, 10, 0, b"c1"), Chunk(11, 20, 0, b"c2")]),
    # a series' own "cluster" label loses against the external one: moves behind the next series
    ((("__name__", "b"), ("cluster", "aa"), ("replica", "0"), ("z", "1")), [Chunk(1, 2, 1, b"h")]),
    ((("__name__", "b"), ("cluster", "eu"), ("replica", "0"), ("z", "0")), [Chunk(1, 2, 0, b"x" * 200)]),
    # a replica label inside the TSDB: removing it reorders
    ((("__name__", "c"), ("cluster", "eu"), ("r", "1"), ("replica", "0"), ("z", "2")), []),
    ((("__name__", "c"), ("cluster", "eu"), ("r", "2"), ("replica", "0"), ("z", "1")), [Chunk(5, 6, 0, b"")]),
    # no external labels at all (another store), and a prefix of the next one
    ((("__name__", "d"),), [Chunk(-3, -1, 0, b"n")]),
    ((("__name__", "d"), ("instance", "i")), [Chunk(3, 4, 0, b"m")]),
]


@pytest.mark.parametrize("remove", [(), ("replica",), ("r",), ("r", "replica", "cluster")])
@pytest.mark.parametrize("batch", [0, 1, 2, 64])
@pytest.mark.parametrize("skip,limit", [(False, 0), (True, 0), (False, 3)])
def test_fast_path_frames_equal_message_path(remove, batch, skip, limit):
    kw = dict(without_replica_labels=list(remove), response_batch_size=batch, skip_chunks=skip, limit=limit)
    fast = _frames(_Raw(ROWS, EXT, True), **kw)
    slow = _frames(_Raw(ROWS, EXT, False), **kw)
    want = _old_frames(ROWS, EXT, remove, batch, skip, limit)
    assert fast == slow == [m.SerializeToString() for m in want]
    assert [rpc_pb2.SeriesResponse.FromString(f) for f in fast] == want
    # sorted, as a querier's merge needs
    got = [tuple((l.name, l.value) for l in s.labels) for m in want
           for s in ([m.series] if m.HasField("series") else m.batch.series)]
    assert got == sorted(got)
