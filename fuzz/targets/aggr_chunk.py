"""Thanos' downsampled (aggregate) chunk, encoding byte 0xFF, as a bucket or a store hands it over:
five ``uvarint(len) [encoding, sub-chunk]`` entries count, sum, min, max, counter.

Read where production reads it: ``tsdb.aggrchunk.split`` (the querier's protobuf path),
``_frames.parse`` on a Series frame that carries it as a raw chunk (the querier's C path),
``store.aggr.aggr_chunk_bytes`` (the store gateway answering aggregates) and the compactor's
5m -> 1h downsampling (``_downsample.entries``, the sub-chunks decoded, ``_downsample.aggr``).
Fine: ``ValueError`` from ``split``/``_frames`` (the querier turns it into a store error),
:class:`AggrChunkError`, :class:`CorruptChunkError` and :class:`DownsampleError`. Checked: both
querier paths find the same aggregates, and ``get`` agrees with ``split``."""
from __future__ import annotations

import numpy as np

from pythanos.query import _frames
from pythanos.store.aggr import AggrChunkError, aggr_chunk_bytes
from pythanos.tsdb import aggrchunk
from pythanos.tsdb.downsample import RES_1H, RES_5M, DownsampleError, _Chunks, _Job
from pythanos.tsdb.encoding import encode_uvarint
from pythanos.tsdb.errors import CorruptChunkError


def _fld(tag: int, b: bytes) -> bytes:
    return bytes([tag]) + encode_uvarint(len(b)) + b


class _Names:
    names = ["chunks/000001"]


class _Reader:
    """What ``_Job`` asks of a block reader when it reports an error."""

    chunks = _Names()

    class meta:
        ulid = "fuzz"


def _querier(data: bytes) -> None:
    try:
        split = aggrchunk.split(data)
    except ValueError:
        split = None
    chunk = b"\x08" + encode_uvarint(0xFF) + _fld(0x12, data)  # thanos.Chunk{type = 0xFF, data}
    frame = _fld(0x0A, _fld(0x12, _fld(0x1A, chunk)))  # SeriesResponse{series{chunks{raw}}}
    try:
        kind, payload = _frames.parse(frame, None, {})
    except ValueError:
        assert split is None, split
        return
    assert split is not None
    got = payload[0][1][0][4] if payload[0][1] else {}
    assert got == split, (got, split)
    for i in range(5):
        e = aggrchunk.get(data, i)
        if e is not None:
            assert split[i + 1] == (aggrchunk.store_encoding(e[0]), e[1]), (i, e, split)


def _store(data: bytes) -> None:
    for aggrs in ((1,), (2,), (3,), (4,), (5,), (1, 2, 3, 4, 5)):
        try:
            aggr_chunk_bytes(-5, 7, aggrchunk.AGGR_ENCODING, data, aggrs)
        except AggrChunkError:
            pass


def _compactor(data: bytes, mint: int, maxt: int, enc: int) -> None:
    job = _Job(_Reader(), RES_1H, RES_5M, 1 << 20)
    one = np.ones(1, np.int64)
    ch = _Chunks(data, np.zeros(1, np.int64), np.array([len(data)], np.int64), np.array([enc], np.int64),
                 np.array([mint], np.int64), np.array([maxt], np.int64), np.array([8], np.uint64),
                 np.zeros(1, np.int64))
    try:
        job._aggr(ch, [(("a", "b"),)], one)
    except (CorruptChunkError, DownsampleError):
        pass


def test_one_input(data: bytes) -> None:
    """``data[0]`` picks the compactor's chunk encoding (0xFF or XOR) and, with ``data[1:3]``, its
    time range; the rest is the chunk."""
    if len(data) < 3:
        return
    chunk = data[3:]
    _querier(chunk)
    _store(chunk)
    mint = (data[1] - 128) * RES_5M * 4
    _compactor(chunk, mint, mint + data[2] * RES_5M, 1 if data[0] & 1 else aggrchunk.AGGR_ENCODING)
