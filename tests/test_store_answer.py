"""The store gateway's answer kernel (``pythanos.store._answer``): frames equal to what the server
base's framer and the generated classes make of the same series, groups joined exactly, bad input
refused with an error; and the base sending a store's :class:`SeriesFrames` as they are."""
from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from pythanos.store._answer import frames, join_groups
from pythanos.storeapi import StoreInfo, StoreServer
from pythanos.storeapi.memstore import MemoryStore
from pythanos.storeapi.pb import rpc_pb2, types_pb2
from pythanos.storeapi.server import _Fail, _Framer
from pythanos.storeapi.types import SeriesFrames, labels_to_bytes, matcher_to_pb
from pythanos.tsdb.labels import Matcher


def _series(n: int):
    """Labels bytes and chunk fields of n series of growing sizes (varint lengths of 1-3 bytes)."""
    labels, chunks = [], []
    for i in range(n):
        ls = (("__name__", "m"), ("i", f"{i:05d}"), ("pad", "p" * (i * 37 % 300)))
        labels.append(labels_to_bytes(ls))
        msg = types_pb2.AggrChunk(min_time=i, max_time=i + 1,
                                  raw=types_pb2.Chunk(data=b"d" * (i * 91 % 20000))).SerializeToString()
        chunks.append(b"\x12" + bytes(_varint(len(msg))) + msg if i % 7 else b"")
    return labels, chunks


def _varint(v: int) -> list[int]:
    out = []
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    return out + [v]


def _framer(payloads, batch):
    f = _Framer(batch)
    out = [x for p in payloads for x in f.series(p)]
    return out + f.flush()


@pytest.mark.parametrize("batch", [0, 1, 2, 3, 64, 1000])
@pytest.mark.parametrize("n", [0, 1, 5, 200])
def test_frames_equal_the_framer(batch, n):
    labels, chunks = _series(n)
    assert frames(labels, chunks, batch) == _framer([a + b for a, b in zip(labels, chunks)], batch)
    assert frames(labels, None, batch) == _framer(labels, batch)


def test_frames_parse_as_series_responses():
    labels, chunks = _series(130)
    got = []
    for f in frames(labels, chunks, 64):
        r = rpc_pb2.SeriesResponse.FromString(f)
        assert r.WhichOneof("result") == "batch"
        got += [s.SerializeToString() for s in r.batch.series]
    assert got == [types_pb2.Series.FromString(a + b).SerializeToString() for a, b in zip(labels, chunks)]
    assert len(frames(labels, chunks, 64)) == 3  # 64 + 64 + 2, as Thanos batches


def test_frames_refuses_bad_input():
    with pytest.raises(TypeError, match=r"labels\[1\] is str"):
        frames([b"a", "b"], None, 1)
    with pytest.raises(TypeError, match=r"chunks\[0\] is NoneType"):
        frames([b"a"], [None], 1)
    with pytest.raises(ValueError, match="differ in length"):
        frames([b"a"], [], 1)
    with pytest.raises(TypeError):
        frames((b"a",), None, 1)


def test_join_groups():
    parts = [b"a", b"bc", b"", b"d", b"ef"]
    counts = np.array([2, 0, 1, 2], dtype=np.int64)
    assert join_groups(parts, counts.tobytes()) == [b"abc", b"", b"", b"def"]
    assert join_groups([], b"") == []


@pytest.mark.parametrize("counts, err", [([2, 2], ValueError), ([-1, 4], ValueError), ([1 << 62, 3], ValueError),
                                         ([1, 1], ValueError)])
def test_join_groups_refuses_counts_that_do_not_add_up(counts, err):
    with pytest.raises(err):
        join_groups([b"a", b"b", b"c"], np.array(counts, dtype=np.int64).tobytes())
    with pytest.raises(ValueError, match="int64"):
        join_groups([b"a"], b"\x01\x00")
    with pytest.raises(TypeError, match="part 1 is int"):
        join_groups([b"a", 1], np.array([2], dtype=np.int64).tobytes())


class _FramesStore(MemoryStore):
    """Yields what it is given: SeriesFrames groups (a store that serialized its answer)."""

    final_labels = True

    def __init__(self, groups):
        super().__init__([])
        self.groups = groups

    async def info(self):
        return StoreInfo(external_labels=())

    async def series(self, req):
        for g in self.groups:
            yield g


def _serve(store):
    req = rpc_pb2.SeriesRequest(min_time=0, max_time=100, matchers=[matcher_to_pb(Matcher.re("__name__", ".+"))],
                                response_batch_size=2)

    async def go():
        return [f async for f in StoreServer(store)._series_frames(req)]
    return asyncio.run(go())


def _group(lo: int, hi: int) -> SeriesFrames:
    ls = [(("__name__", "m"), ("i", f"{i:03d}")) for i in range(lo, hi)]
    return SeriesFrames(frames(list(map(labels_to_bytes, ls)), None, 2), hi - lo, ls[0], ls[-1])


def test_base_sends_store_frames_as_they_are():
    a, b = _group(0, 5), _group(5, 9)
    assert _serve(_FramesStore([a, b])) == a.frames + b.frames


def test_base_refuses_store_frames_out_of_order():
    with pytest.raises(_Fail) as e:
        _serve(_FramesStore([_group(5, 9), _group(0, 5)]))
    assert e.value.code == grpc.StatusCode.INTERNAL and "out of order" in str(e.value)
