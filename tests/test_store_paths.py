"""The store gateway's read path on a real block in a bucket, counting what it fetches: limits that
are decided before any posting is read, ``pod!=""``-style matchers that do not fetch every posting
list, aggregate chunks filled as Thanos fills them, and the index cache answering instead of reads."""
from __future__ import annotations

import time

import numpy as np
import pytest

from pythanos.objstore import FilesystemBucket
from pythanos.storeapi.pb import rpc_pb2, types_pb2
from pythanos.storeapi.server import ResourceExhausted
from pythanos.store.aggr import AggrChunkError, aggr_chunk_bytes
from pythanos.store.bucketstore import BucketBlock, _Limits, block_series
from pythanos.tsdb.block import BlockReader, BlockWriter
from pythanos.tsdb.labels import Matcher
from pythanos.tsdb.upload import upload_block

HOUR = 3_600_000


class CountingBucket(FilesystemBucket):
    """A filesystem bucket that counts ranged reads and bytes per object."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.reads: list[tuple[str, int, int]] = []

    def get_range(self, key, offset, length):
        self.reads.append((key, offset, length))
        return super().get_range(key, offset, length)

    def index_bytes(self) -> int:
        return sum(n for k, _, n in self.reads if k.endswith("/index"))


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paths")
    rng = np.random.default_rng(7)
    w = BlockWriter(tmp / "out", thanos={"labels": {"cluster": "eu1"}, "source": "test"})
    t = np.arange(0, 2 * HOUR, 30_000, dtype=np.int64)
    for i in range(3000):
        w.add_series({"__name__": f"m{i % 10}", "pod": f"pod-{i:05d}", "job": f"j{i % 4}"}, t,
                     rng.normal(size=len(t)))
    meta = w.write()
    root = tmp / "bucket"
    upload_block(FilesystemBucket(str(root)), tmp / "out" / meta.ulid)
    return root, meta, tmp / "out" / meta.ulid


def open_block(root, meta, tmp_path) -> tuple[BucketBlock, CountingBucket]:
    bkt = CountingBucket(str(root))
    b = BucketBlock(bkt, meta, str(tmp_path / "data"))
    b.index()  # builds the index-header: what follows counts only query reads
    bkt.reads.clear()
    return b, bkt


def labels_of(rows):
    return rows.labels


def test_series_limit_decided_before_postings_are_fetched(block, tmp_path):
    root, meta, _ = block
    b, bkt = open_block(root, meta, tmp_path)
    with pytest.raises(ResourceExhausted, match="exceeded series limit"):
        block_series(b, [Matcher.re("__name__", "m[1-3]")], 0, 2 * HOUR, skip_chunks=True, aggrs=(),
                     remove=frozenset(), limits=_Limits(series=500))
    assert bkt.reads == [], "postings were read before the limit was checked"
    # under the limit the same call answers
    rows = block_series(b, [Matcher.re("__name__", "m[1-3]")], 0, 2 * HOUR, skip_chunks=True, aggrs=(),
                        remove=frozenset(), limits=_Limits(series=1000))
    assert len(rows.labels) == 900


def test_non_empty_matcher_applied_to_series_instead_of_every_posting_list(block, tmp_path):
    root, meta, local = block
    b, bkt = open_block(root, meta, tmp_path)
    ms = [Matcher.eq("__name__", "m3"), Matcher.ne("pod", "")]
    rows = block_series(b, ms, 0, 2 * HOUR, skip_chunks=True, aggrs=(), remove=frozenset(), limits=_Limits())
    lazy_bytes = bkt.index_bytes()
    with BlockReader.open_dir(local) as full:
        want = [tuple(sorted(dict(lbls, cluster="eu1").items())) for lbls, _, _ in full.series(ms)]
        pod_lists = sum(full.index.postings_size(Matcher.ne("pod", ""))[1:])
    assert labels_of(rows) == sorted(want) and len(rows.labels) == 300
    # 3000 pod lists are ~45 KB; what was read is the m3 list and 300 series entries
    assert lazy_bytes < pod_lists, (lazy_bytes, pod_lists)


def test_index_cache_answers_instead_of_reads(block, tmp_path):
    root, meta, _ = block

    class DictCache:
        def __init__(self):
            self.p, self.s = {}, {}

        def get_postings(self, keys):
            return {k: self.p[k] for k in keys if k in self.p}

        def put_postings(self, items):
            self.p.update(items)

        def get_series_pages(self, pages):
            return {r: self.s[r] for r in pages if r in self.s}

        def put_series_pages(self, items):
            self.s.update(items)

    cache = DictCache()
    b, bkt = open_block(root, meta, tmp_path)
    b.index().cache = cache
    ms = [Matcher.re("__name__", "m[12]"), Matcher.eq("job", "j1")]
    first = block_series(b, ms, 0, 2 * HOUR, skip_chunks=True, aggrs=(), remove=frozenset(), limits=_Limits())
    assert bkt.index_bytes() > 0 and cache.p and cache.s
    bkt.reads.clear()
    again = block_series(b, ms, 0, 2 * HOUR, skip_chunks=True, aggrs=(), remove=frozenset(), limits=_Limits())
    assert again == first and bkt.index_bytes() == 0
    # a damaged cached page is caught like a damaged read
    for r, page in cache.s.items():
        cache.s[r] = bytes(x ^ 0x40 for x in page)
    with pytest.raises(Exception, match="series ref"):
        block_series(b, ms, 0, 2 * HOUR, skip_chunks=True, aggrs=(), remove=frozenset(), limits=_Limits())


def aggr_chunk(parts) -> bytes:
    """An on-disk AggrChunk from ``[(encoding, data) or None] * 5``."""
    out = b""
    for p in parts:
        if p is None:
            out += b"\x00"
        else:
            out += bytes([len(p[1])]) + bytes([p[0]]) + p[1]
    return out


def test_aggregate_chunks_filled_as_thanos_populates_them():
    data = aggr_chunk([(1, b"cnt"), (1, b"sum"), (1, b"min"), (1, b"max"), (1, b"ctr")])
    ac = types_pb2.AggrChunk.FromString(aggr_chunk_bytes(-5, 9, 0xFF, data, [1, 5]))
    assert (ac.min_time, ac.max_time) == (-5, 9)
    assert ac.count.data == b"cnt" and ac.counter.data == b"ctr" and not ac.HasField("sum") and not ac.HasField("raw")
    import xxhash

    assert ac.count.hash == xxhash.xxh64_intdigest(b"cnt")
    raw = types_pb2.AggrChunk.FromString(aggr_chunk_bytes(1, 2, 1, b"\x00\x01xor", [1, 2]))
    assert raw.raw.data == b"\x00\x01xor" and raw.raw.type == types_pb2.Chunk.XOR and not raw.HasField("count")
    no_min = aggr_chunk([(1, b"cnt"), (1, b"sum"), None, (1, b"max"), (1, b"ctr")])
    with pytest.raises(AggrChunkError, match="aggregate min does not exist"):
        aggr_chunk_bytes(0, 1, 0xFF, no_min, [3])
    # byte-identical to the generated serializer
    assert aggr_chunk_bytes(-5, 9, 0xFF, data, [1, 5]) == ac.SerializeToString()


def test_ready_before_index_headers_exist_and_queries_wait_for_their_block(block, tmp_path):
    """The store is ready once metas are synced; a Series call that needs a block whose
    index-header is still being built waits for that block instead of missing it (Thanos is not
    ready until every header is built: thanos-io/thanos#3150)."""
    import asyncio
    import threading

    from pythanos.block import MetaFetcher
    from pythanos.store.bucketstore import BucketStore, BucketStoreConfig
    from pythanos.storeapi.types import SeriesRequest

    root, meta, _ = block
    gate = threading.Event()

    stuck = threading.Event()

    class SlowIndex(FilesystemBucket):
        def get_range(self, key, offset, length):
            if key.endswith("/index"):
                stuck.set()
                gate.wait(60)  # the header build is stuck until the test lets it go
            return super().get_range(key, offset, length)

    bkt = SlowIndex(str(root))
    store = BucketStore(bkt, MetaFetcher(bkt), BucketStoreConfig(data_dir=str(tmp_path / "data")))

    async def go():
        await store.sync()
        assert store.synced and meta.ulid in store.blocks and not store.blocks[meta.ulid].loaded
        req = SeriesRequest(matchers=[Matcher.eq("__name__", "m1"), Matcher.eq("job", "j1")], min_time=0,
                            max_time=2 * HOUR, skip_chunks=True)

        async def collect():  # the series in the answer's frames (batch size 0: one per frame)
            return [rpc_pb2.SeriesResponse.FromString(f).series
                    async for part in store.series(req) for f in part.frames]

        task = asyncio.ensure_future(collect())
        deadline = time.monotonic() + 30
        while not stuck.is_set():  # the block's index is being opened (and hangs there)
            assert time.monotonic() < deadline, "the index was never read"
            await asyncio.sleep(0.01)
        assert not task.done()  # it waits on the block being opened, not answering without it
        gate.set()
        return await asyncio.wait_for(task, 60)

    try:
        got = asyncio.run(go())
    finally:
        gate.set()
        store.close()
    assert len(got) == 150  # pod i with i % 10 == 1 and i % 4 == 1
    assert all({lb.name: lb.value for lb in s.labels}["job"] == "j1" and
               {lb.name: lb.value for lb in s.labels}["__name__"] == "m1" for s in got)


def test_chunk_ranges_fetched_concurrently_give_the_same_bytes(block):
    """With a pool the ranged reads of one call run together; the answer is the serial one."""
    from concurrent.futures import ThreadPoolExecutor

    from pythanos.tsdb.chunks import ChunkReader
    from pythanos.tsdb.source import FileSource

    _, _, local = block
    segs = sorted((local / "chunks").iterdir())
    with BlockReader.open_dir(local) as br:
        refs = [c.ref for lbls, metas in br.index.series_many(br.index.postings("", "")) for c in metas]
    refs = refs[::60] + refs[7::90]  # out of order, far apart: many separate reads
    serial = ChunkReader([FileSource(p) for p in segs], max_gap=0)
    with ThreadPoolExecutor(8) as pool:
        parallel = ChunkReader([FileSource(p) for p in segs], max_gap=0, pool=pool)
        a, b = serial.chunks_raw(refs), parallel.chunks_raw(refs)
    assert serial.reads > 10
    assert np.array_equal(a[0], b[0])
    for i in range(len(refs)):
        assert a[1][a[2][i]:a[2][i] + a[3][i]] == b[1][b[2][i]:b[2][i] + b[3][i]]


def test_chunk_reads_stop_at_the_callers_check(block):
    """``chunks_raw(check=...)`` asks before every ranged read: once the call it serves has ended,
    the reads not yet issued are not issued (serially and on a pool)."""
    from concurrent.futures import ThreadPoolExecutor

    from pythanos.tsdb.chunks import ChunkReader
    from pythanos.tsdb.source import FileSource

    _, _, local = block
    segs = sorted((local / "chunks").iterdir())
    with BlockReader.open_dir(local) as br:
        refs = [c.ref for lbls, metas in br.index.series_many(br.index.postings("", "")) for c in metas][::60]

    class Ended(Exception):
        pass

    def reads_until_stopped(allowed: int, pool=None) -> int:
        reader = ChunkReader([FileSource(p) for p in segs], max_gap=0, pool=pool)
        calls = []

        def check():
            calls.append(1)
            if len(calls) > allowed:
                raise Ended()
        with pytest.raises(Ended):
            reader.chunks_raw(refs, check=check)
        if pool is not None:
            pool.shutdown(wait=True)
        return reader.reads

    header = reads_until_stopped(0)  # the segment headers are checked before any ranged read
    assert len(refs) > 50
    assert reads_until_stopped(3) == header + 3
    assert reads_until_stopped(3, ThreadPoolExecutor(2)) == header + 3


def test_a_cancelled_series_call_stops_its_block_work(block, tmp_path):
    """A Series call whose client goes away while the store waits on a hung chunk read: the call
    ends at once, and the block work it left keeps the Series gate slot
    (``thanos_bucket_store_series_gate_queries_in_flight``) until it has stopped; once the object
    store answers, that work takes no chunk-pool bytes (they would never be given back: the
    call's bytes were released when it ended) and the slot is free again."""
    import asyncio
    import threading

    from prometheus_client import CollectorRegistry

    from pythanos.block import MetaFetcher
    from pythanos.store.bucketstore import BucketStore, BucketStoreConfig
    from pythanos.storeapi import StoreClient, StoreServer

    root, meta, _ = block
    hung, entered = threading.Event(), threading.Event()

    class HungChunks(CountingBucket):
        def get_range(self, key, offset, length):
            if "/chunks/" in key:
                entered.set()
                hung.wait(60)  # the object store does not answer until the test lets it
            return super().get_range(key, offset, length)

    bkt = HungChunks(str(root))
    reg = CollectorRegistry()
    store = BucketStore(bkt, MetaFetcher(bkt), BucketStoreConfig(data_dir=str(tmp_path / "data"),
                                                                 chunk_pool_size=1 << 30), registry=reg)

    def in_flight() -> float:
        return reg.get_sample_value("thanos_bucket_store_series_gate_queries_in_flight")

    async def until(cond, what: str) -> None:
        deadline = time.monotonic() + 30
        while not cond():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.01)

    async def go():
        await store.sync()
        ended = asyncio.Event()  # the store's side of the call is over (the client's ends first)
        series = store.series

        async def watched(req):
            inner = series(req)
            try:
                async for item in inner:
                    yield item
            finally:
                await inner.aclose()
                ended.set()

        store.series = watched
        server = StoreServer(store)
        port = await server.start("127.0.0.1:0")
        try:
            async with StoreClient(f"127.0.0.1:{port}") as c:
                call = asyncio.ensure_future(c.series_list([Matcher.eq("job", "j1")], 0, 2 * HOUR))
                await until(entered.is_set, "the Series call reached the chunk read")
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
                # the handler is gone; its block work is still stuck in the read and holds the slot
                await until(lambda: ended.is_set() and store.chunk_pool.used == 0 and in_flight() == 1,
                            "the call ended")
                hung.set()
                await until(lambda: in_flight() == 0, "the block work stopped and freed the slot")
                assert store.chunk_pool.used == 0
                chunk_reads = [r for r in bkt.reads if "/chunks/" in r[0]]
                assert len(chunk_reads) == 1, chunk_reads
                # the store serves the next call
                got, _ = await c.series_list([Matcher.eq("job", "j1"), Matcher.eq("__name__", "m1")], 0, 2 * HOUR)
                assert len(got) == 150  # pod i with i % 10 == 1 and i % 4 == 1
        finally:
            await server.stop(0)

    try:
        asyncio.run(go())
    finally:
        hung.set()
        store.close()


def test_bulk_series_decoding_equals_the_entry_by_entry_reader(block):
    """The C decoder against the Python one, with external labels that sort before, between and
    after the series' names, one that replaces a series label, and removed names."""
    _, _, local = block
    with BlockReader.open_dir(local) as br:
        ix = br.index
        refs = ix.postings("", "")
        one_by_one = [ix.series(int(r)) for r in refs]
        for ext, remove in (((), None), ((("a", "1"), ("job", "ext"), ("zz", "9")), None),
                            ((("cluster", "eu1"), ("pod", "")), {"job", "zz"}), ((("m", "x"),), {"__name__"})):
            labels, nch, chunks = ix.series_bulk(refs, ext, remove)
            k = 0
            for (lbls, metas), got, n in zip(one_by_one, labels, nch.tolist()):
                want = dict(lbls)
                want.update(ext)
                want = tuple(sorted((a, b) for a, b in want.items() if b != "" and a not in (remove or ())))
                assert got == want
                assert [tuple(c) for c in chunks[k:k + n].tolist()] == [tuple(m) for m in metas]
                k += n
        # refs out of order and repeated take the mapped path: same answers, in the order asked
        mixed = [int(refs[5]), int(refs[0]), int(refs[5])]
        lb, n2, _ = ix.series_bulk(mixed)
        assert lb == [tuple(one_by_one[i][0]) for i in (5, 0, 5)]
        assert n2.tolist() == [len(one_by_one[i][1]) for i in (5, 0, 5)]


def test_raw_chunk_messages_from_c_equal_the_generated_serializer():
    """AggrChunk bytes with raw chunks built in C (times incl. negative and zero, all three raw
    encodings, hash = XXH64 of the data) equal protobuf's own serialization; XXH64 equals xxhash's."""
    import os

    import xxhash

    from pythanos.tsdb._series import raw_chunks, xxh64

    rng = np.random.default_rng(5)
    datas = [os.urandom(int(n)) for n in rng.integers(0, 300, 200)] + [b"", os.urandom(40000)]
    for d in datas:
        assert xxh64(d) == xxhash.xxh64_intdigest(d)
    buf = b"".join(datas)
    lens = np.array([len(d) for d in datas], dtype=np.int64)
    offs = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
    mint = rng.integers(-2**40, 2**41, len(datas)).astype(np.int64)
    mint[:3] = (0, -1, 2**62)
    maxt = mint + rng.integers(0, 10**7, len(datas))
    enc = rng.integers(1, 4, len(datas)).astype(np.int64)
    enc[5] = 0xFF
    got = raw_chunks(buf, mint, maxt, enc, offs, lens)
    assert got[5] is None
    for i, b in enumerate(got):
        if i == 5:
            continue
        want = types_pb2.AggrChunk(min_time=int(mint[i]), max_time=int(maxt[i]))
        want.raw.type = int(enc[i]) - 1
        want.raw.data = datas[i]
        want.raw.hash = xxhash.xxh64_intdigest(datas[i])
        if not datas[i] and not want.raw.hash:
            want.raw.SetInParent()
        msg = want.SerializeToString()
        assert b == types_pb2.Series(chunks=[want]).SerializeToString(), i  # the whole Series.chunks field
        assert msg == aggr_chunk_bytes(int(mint[i]), int(maxt[i]), int(enc[i]), datas[i], [])
