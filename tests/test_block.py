"""Unit tests: ULIDs, chunk segment files, tombstones, meta.json, block writer and reader."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

from pythanos.tsdb import block as blk
from pythanos.tsdb import chunks as ch
from pythanos.tsdb import tombstones as tomb
from pythanos.tsdb import ulid
from pythanos.tsdb.block import BlockReader, BlockWriter, aligned_ranges, cut_fixed, cut_head, write_blocks
from pythanos.tsdb.errors import CorruptBlockError, CorruptChunkError
from pythanos.tsdb.labels import Matcher
from pythanos.tsdb.meta import (
    BlockMeta,
    BlockStats,
    Compaction,
    DeletionMark,
    InvalidMetaError,
    NoCompactMark,
    marker_from_json,
    marker_to_json,
    read_meta,
)
from pythanos.tsdb.source import FileSource

from openmetrics_gen import STALE_NAN_BITS, random_series, same_samples

H2 = 2 * 3600 * 1000
T0 = 1_700_000_000_000


# --- ULID -------------------------------------------------------------------------------------------

def test_ulid_new_parse_timestamp():
    u = ulid.new(1_700_000_000_123)
    assert len(u) == 26 and u[0] <= "7"
    assert ulid.timestamp_ms(u) == 1_700_000_000_123
    assert ulid.parse(u) >> 80 == 1_700_000_000_123
    assert ulid.timestamp_ms("01M80SAC2530Z1FVKEKWAT4TKD") > 0
    assert ulid.new() != ulid.new()


@pytest.mark.parametrize("bad", ["", "01M80SAC2530Z1FVKEKWAT4TK", "01M80SAC2530Z1FVKEKWAT4TKDX",
                                 "81M80SAC2530Z1FVKEKWAT4TKD", "01M80SAC2530Z1FVKEKWAT4TKU",
                                 "01m80sac2530z1fvkekwat4tkd"])
def test_ulid_parse_strict(bad):
    with pytest.raises(ulid.ULIDError):
        ulid.parse(bad)
    assert not ulid.is_ulid(bad)


# --- meta.json --------------------------------------------------------------------------------------

PROM_META = (b'{\n\t"ulid": "01M80SAC2530Z1FVKEKWAT4TKD",\n\t"minTime": 1700000000000,\n\t"maxTime": 1700000060001,'
             b'\n\t"stats": {\n\t\t"numSamples": 9,\n\t\t"numSeries": 3,\n\t\t"numChunks": 3\n\t},\n\t"compaction": '
             b'{\n\t\t"level": 1,\n\t\t"sources": [\n\t\t\t"01M80SAC2530Z1FVKEKWAT4TKD"\n\t\t]\n\t},\n\t"version": 1\n}')


def test_meta_exact_prometheus_bytes():
    u = "01M80SAC2530Z1FVKEKWAT4TKD"
    m = BlockMeta(u, 1_700_000_000_000, 1_700_000_060_001, BlockStats(num_samples=9, num_series=3, num_chunks=3),
                  Compaction(level=1, sources=[u]))
    assert m.to_json() == PROM_META
    assert BlockMeta.from_json(PROM_META) == m


def test_meta_thanos_section_and_unknown_keys():
    d = json.loads(PROM_META)
    d["futureKey"] = {"x": 1}
    d["thanos"] = {"labels": {"b": "2", "a": "<&>"}, "downsample": {"resolution": 300000}, "source": "compactor",
                   "segment_files": ["000001"], "files": [{"rel_path": "index", "size_bytes": 10},
                                                          {"rel_path": "chunks/000001", "size_bytes": 5},
                                                          {"rel_path": "meta.json"}], "whatever": 3}
    m = BlockMeta.from_json(json.dumps(d))
    assert m.labels == {"a": "<&>", "b": "2"} and m.resolution == 300000
    out = m.to_json()
    assert out.endswith(b"}\n")  # Thanos' json.Encoder adds a newline
    assert b'"\\u003c\\u0026\\u003e"' in out  # Go's HTML-safe escaping
    keys = list(json.loads(out))
    assert keys == ["ulid", "minTime", "maxTime", "stats", "compaction", "version", "thanos"]
    th = json.loads(out)["thanos"]
    assert list(th) == ["labels", "downsample", "source", "segment_files", "files", "index_stats", "upload_time"]
    assert [f["rel_path"] for f in th["files"]] == ["chunks/000001", "index", "meta.json"]
    assert BlockMeta.from_json(out).to_json() == out


def test_meta_compaction_fields_order():
    m = BlockMeta("01M80SAC2530Z1FVKEKWAT4TKD", 0, 10, BlockStats(num_samples=1, num_tombstones=2),
                  Compaction(level=2, sources=["A", "B"], deletable=True, failed=True,
                             parents=[blk.BlockDesc("A", 0, 5) if hasattr(blk, "BlockDesc") else
                                      __import__("pythanos.tsdb.meta", fromlist=["BlockDesc"]).BlockDesc("A", 0, 5)]))
    d = json.loads(m.to_json())
    assert list(d["compaction"]) == ["level", "sources", "deletable", "parents", "failed"]
    assert d["stats"] == {"numSamples": 1, "numTombstones": 2}
    assert d["compaction"]["parents"] == [{"ulid": "A", "minTime": 0, "maxTime": 5}]


@pytest.mark.parametrize("doc", [b'{"ulid": "x", "minTime": 0, "maxTime": 1, "version": 2}',
                                 b'{"ulid": "x", "minTime": 0, "maxTime": 1}', b"not json", b"[]",
                                 b'{"ulid": "x", "version": 1}'])
def test_meta_rejects(doc, tmp_path):
    d = tmp_path / "01M80SAC2530Z1FVKEKWAT4TKD"
    d.mkdir()
    (d / "meta.json").write_bytes(doc)
    with pytest.raises(InvalidMetaError) as ei:
        read_meta(d)
    assert ei.value.file == "meta.json" and ei.value.block == "01M80SAC2530Z1FVKEKWAT4TKD"
    assert "meta.json" in str(ei.value)


def test_markers():
    m = DeletionMark("01M80SAC2530Z1FVKEKWAT4TKD", 1700000000)
    assert marker_to_json(m) == b'{"id":"01M80SAC2530Z1FVKEKWAT4TKD","version":1,"deletion_time":1700000000}'
    assert marker_from_json("deletion-mark.json", marker_to_json(m)) == m
    n = NoCompactMark("01M80SAC2530Z1FVKEKWAT4TKD", 1700000000, "manual", "why")
    assert marker_to_json(n) == (b'{"id":"01M80SAC2530Z1FVKEKWAT4TKD","version":1,"details":"why",'
                                 b'"no_compact_time":1700000000,"reason":"manual"}')
    assert marker_from_json("x/no-compact-mark.json", marker_to_json(n)) == n
    with pytest.raises(InvalidMetaError):
        marker_from_json("deletion-mark.json", b'{"id":"x","version":2,"deletion_time":1}')


# --- tombstones -------------------------------------------------------------------------------------

def test_tombstones_empty_bytes(tmp_path):
    assert tomb.encode({}) == bytes.fromhex("0130ba3001" "00000000")
    assert tomb.write(tmp_path) == 9
    assert tomb.read(tmp_path) == {}
    assert tomb.read(tmp_path / "missing") == {}


def test_tombstones_round_trip_and_merge():
    stones = {6: [(10, 20), (21, 30), (50, 60), (-5, 0)], 8: [(1 << 40, (1 << 62))], 10: [(5, 9), (1, 7)]}
    data = tomb.encode(stones)
    got = tomb.decode(data)
    assert got == {6: [(-5, 0), (10, 30), (50, 60)], 8: [(1 << 40, 1 << 62)], 10: [(1, 9)]}


def test_tombstones_corrupt():
    data = tomb.encode({6: [(10, 20)], 300: [(1, 2)]})
    for bad, off in [(data[:-6], None), (data[:3], 0), (b"\x01\x30\xba\x31\x01" + data[5:], 0),
                     (data[:4] + b"\x02" + data[5:], 4), (data[:6] + b"\xff" + data[7:], None)]:
        with pytest.raises(CorruptBlockError) as ei:
            tomb.decode(bad, block="B")
        assert ei.value.block == "B" and ei.value.file == "tombstones"
        if off is not None:
            assert ei.value.offset == off
    # a truncated stone with a valid CRC
    body = b"\x06\x14"
    import google_crc32c
    with pytest.raises(CorruptBlockError, match="truncated"):
        tomb.decode(tomb.HEADER + body + struct.pack(">I", google_crc32c.value(body)))


# --- chunk segment files ----------------------------------------------------------------------------

def _write_raw_chunks(d, series_chunks, segment_size=ch.DEFAULT_SEGMENT_SIZE):
    with ch.ChunkWriter(d, segment_size) as w:
        refs = [w.write_chunks([(1, c) for c in cs]) for cs in series_chunks]
    return refs, w.files


def _reader(files, block="B"):
    return ch.ChunkReader([FileSource(f, block=block, name=f"chunks/{os.path.basename(f)}") for f in files],
                          block=block)


def test_chunks_round_trip_and_refs(tmp_path):
    rng = np.random.default_rng(1)
    data = [[rng.bytes(int(rng.integers(1, 300))) for _ in range(int(rng.integers(1, 5)))] for _ in range(50)]
    refs, files = _write_raw_chunks(tmp_path, data)
    assert [os.path.basename(f) for f in files] == ["000001"]
    assert refs[0][0] == 8
    raw = open(files[0], "rb").read()
    assert raw[:8] == bytes.fromhex("85bd40dd01000000")
    r = _reader(files)
    flat_refs = [x for rs in refs for x in rs]
    flat = [x for cs in data for x in cs]
    assert all(r.chunk(ref) == (1, d) for ref, d in zip(flat_refs, flat))
    r2 = _reader(files)
    order = list(range(len(flat)))[::-1]
    assert r2.chunks([flat_refs[i] for i in order]) == [(1, flat[i]) for i in order]
    assert r2.reads <= 3  # header + one coalesced range


def test_chunks_segment_cut(tmp_path):
    # 3 series of 3x100-byte chunks; segments hold 8 + 2*110 bytes -> never more than 2 chunks
    data = [[bytes([i]) * 100] * 3 for i in range(3)]
    refs, files = _write_raw_chunks(tmp_path, data, segment_size=8 + 2 * 110)
    assert len(files) >= 4
    assert all(os.path.getsize(f) > 8 for f in files)  # never an empty segment
    r = _reader(files)
    for rs, cs in zip(refs, data):
        assert r.chunks(rs) == [(1, c) for c in cs]
        assert len({x >> 32 for x in rs}) >= 1
    # first chunk of a later segment is at offset 8
    assert any(x & 0xFFFFFFFF == 8 and x >> 32 > 0 for rs in refs for x in rs)


def test_chunks_one_series_fits_no_cut(tmp_path):
    refs, files = _write_raw_chunks(tmp_path, [[b"a" * 10], [b"b" * 10]], segment_size=1000)
    assert len(files) == 1 and refs == [[8], [8 + 1 + 1 + 10 + 4]]


def _corrupt_cases(tmp_path):
    refs, files = _write_raw_chunks(tmp_path, [[b"x" * 50, b"y" * 60]])
    raw = open(files[0], "rb").read()
    return refs[0], files[0], raw


def test_chunks_wrong_magic(tmp_path):
    refs, f, raw = _corrupt_cases(tmp_path)
    open(f, "wb").write(b"\x00\x00\x00\x00" + raw[4:])
    with pytest.raises(CorruptChunkError) as ei:
        _reader([f], "BLK").chunk(refs[0])
    assert (ei.value.block, ei.value.file, ei.value.offset) == ("BLK", "chunks/000001", 0)
    assert "magic" in str(ei.value)


def test_chunks_bad_version(tmp_path):
    refs, f, raw = _corrupt_cases(tmp_path)
    open(f, "wb").write(raw[:4] + b"\x02" + raw[5:])
    with pytest.raises(CorruptChunkError, match="version"):
        _reader([f]).chunks(refs)


def test_chunks_crc_mismatch(tmp_path):
    refs, f, raw = _corrupt_cases(tmp_path)
    b = bytearray(raw)
    b[refs[1] + 5] ^= 0xFF
    open(f, "wb").write(bytes(b))
    r = _reader([f], "BLK")
    assert r.chunk(refs[0]) == (1, b"x" * 50)
    for call in (lambda: r.chunk(refs[1]), lambda: r.chunks(refs)):
        with pytest.raises(CorruptChunkError) as ei:
            call()
        assert (ei.value.block, ei.value.file, ei.value.offset) == ("BLK", "chunks/000001", refs[1])
        assert "checksum" in str(ei.value)


def test_chunks_ref_past_end_and_bad_segment(tmp_path):
    refs, f, raw = _corrupt_cases(tmp_path)
    r = _reader([f], "BLK")
    for bad in (len(raw), len(raw) + 1000, (1 << 32) | 8, 3):
        with pytest.raises(CorruptChunkError) as ei:
            r.chunk(bad)
        assert ei.value.block == "BLK" and ei.value.file.startswith("chunks/")
        with pytest.raises(CorruptChunkError):
            r.chunks([refs[0], bad])


def test_chunks_truncated_record(tmp_path):
    refs, f, raw = _corrupt_cases(tmp_path)
    open(f, "wb").write(raw[:-3])
    r = _reader([f], "BLK")
    with pytest.raises(CorruptChunkError) as ei:
        r.chunk(refs[1])
    assert ei.value.offset == refs[1] and "truncated" in str(ei.value)
    with pytest.raises(CorruptChunkError, match="truncated"):
        _reader([f]).chunks(refs)
    open(f, "wb").write(raw[:refs[1] + 1])
    with pytest.raises(CorruptChunkError, match="truncated"):
        _reader([f]).chunk(refs[1])
    open(f, "wb").write(raw[:5])
    with pytest.raises(CorruptChunkError, match="too short"):
        _reader([f]).chunk(8)


# --- chunk cutting ----------------------------------------------------------------------------------

def test_cut_fixed_120_and_2h():
    t = np.arange(0, 1000, dtype=np.int64) * 15_000 + T0
    b = cut_fixed(t, 120, H2)
    sizes = np.diff(b)
    assert sizes.max() == 120 and sizes.sum() == 1000
    # no chunk crosses a 2h boundary
    for s, e in zip(b[:-1], b[1:]):
        assert t[s] // H2 == t[e - 1] // H2
    # boundaries restart the 120 count
    bnd = np.flatnonzero(np.diff(t // H2)) + 1
    assert set(bnd.tolist()) <= set(b.tolist())
    assert cut_fixed(t, 120, None).tolist() == list(range(0, 1000, 120)) + [1000]
    assert cut_fixed(np.array([], dtype=np.int64)).tolist() == [0]


def test_cut_head_matches_prometheus_rules():
    # 15 s scrapes from a range start: at 30 samples the 2h range is split into 4 chunks of 30 min
    start = (T0 // H2) * H2
    t = start + np.arange(427, dtype=np.int64) * 15_000
    assert np.diff(cut_head(t)).tolist() == [120, 120, 120, 67]
    # 1 min scrapes: 30 samples already span 29 min, (2h / (29 min * 4)) = 1 -> one chunk to the range end
    t = start + np.arange(150, dtype=np.int64) * 60_000
    assert np.diff(cut_head(t)).tolist() == [120, 30]
    # 1 s scrapes: hard cut at 240
    t = start + np.arange(2000, dtype=np.int64) * 1000
    assert np.diff(cut_head(t)).max() <= 240
    # never across a range boundary
    t = start + H2 - 5000 + np.arange(20, dtype=np.int64) * 1000
    b = cut_head(t)
    assert [int(t[s] // H2) == int(t[e - 1] // H2) for s, e in zip(b[:-1], b[1:])] == [True] * (len(b) - 1)


# --- block writer / reader --------------------------------------------------------------------------

def _series_dict(reader, matchers=(), mint=blk.MIN_TIME, maxt=blk.MAX_TIME):
    return {l: (t, v) for l, t, v in reader.series(matchers, mint, maxt)}


@pytest.mark.parametrize("style", ["prom3", "prom2"])
def test_block_round_trip(tmp_path, style):
    rng = np.random.default_rng(7)
    data = random_series(rng, n_series=30, with_stale=True, huge_gap=0, max_samples=600)
    w = BlockWriter(tmp_path, style=style)
    for l, (t, v) in data.items():
        w.add_series(dict(l), t, v)
    meta = w.write()
    d = tmp_path / meta.ulid
    assert d.is_dir() and not list(tmp_path.glob("*.tmp-for-creation"))
    assert sorted(os.listdir(d)) == ["chunks", "index", "meta.json", "tombstones"]
    assert (d / "meta.json").read_bytes() == meta.to_json() and not meta.to_json().endswith(b"\n")
    assert meta.min_time == min(int(t[0]) for t, _ in data.values())
    assert meta.max_time == max(int(t[-1]) for t, _ in data.values()) + 1
    assert meta.stats.num_samples == sum(len(t) for t, _ in data.values())
    assert meta.stats.num_series == len(data) and meta.compaction.sources == [meta.ulid]
    with BlockReader.open_dir(d) as r:
        got = _series_dict(r)
        assert same_samples(data, got) == []
        assert any(STALE_NAN_BITS in v.view(np.uint64) for _, v in got.values())
        # matchers and time filtering
        sub = _series_dict(r, [Matcher("=", "__name__", "om_gauge")], T0 + 3_600_000, T0 + 7_200_000)
        assert sub and all(k[0] == ("__name__", "om_gauge") for k in sub)
        for k, (t, v) in sub.items():
            ft, fv = data[k]
            sel = (ft >= T0 + 3_600_000) & (ft <= T0 + 7_200_000)
            assert np.array_equal(t, ft[sel]) and np.array_equal(v.view(np.uint64), fv[sel].view(np.uint64))
        # chunks: <= 120 samples (prom3) or <= 240 (head cutting), never across 2h
        for lbls, _, chunks in r.series_chunks():
            for cmint, cmaxt, enc, _ in chunks:
                assert enc == 1 and cmint // H2 == cmaxt // H2


def test_block_min_max_time_exclusive(tmp_path):
    t = np.arange(0, 100, dtype=np.int64) * 1000 + T0
    v = np.arange(100, dtype=np.float64)
    w = BlockWriter(tmp_path, min_time=T0 + 10_000, max_time=T0 + 20_000)
    w.add_series({"__name__": "m"}, t, v)
    meta = w.write()
    assert (meta.min_time, meta.max_time) == (T0 + 10_000, T0 + 20_000)
    with BlockReader.open_dir(tmp_path / meta.ulid) as r:
        (_, rt, rv), = list(r.series())
        assert rt[0] == T0 + 10_000 and rt[-1] == T0 + 19_000  # maxTime itself is excluded
        assert meta.stats.num_samples == 10
    # no samples in range: nothing written
    w = BlockWriter(tmp_path / "empty", min_time=0, max_time=10)
    w.add_series({"__name__": "m"}, t, v)
    assert w.write() is None and not (tmp_path / "empty").exists() or not os.listdir(tmp_path / "empty")


def test_block_tmp_for_creation_rename(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(a, b):
        seen.append((os.fspath(a), os.fspath(b)))
        return real(a, b)

    monkeypatch.setattr(os, "replace", spy)
    w = BlockWriter(tmp_path)
    w.add_series({"__name__": "m"}, [T0], [1.0])
    meta = w.write()
    dirs = [(a, b) for a, b in seen if a.endswith(".tmp-for-creation")]
    assert dirs == [(os.path.join(tmp_path, meta.ulid + ".tmp-for-creation"), os.path.join(tmp_path, meta.ulid))]
    # a failure removes the temporary directory
    w = BlockWriter(tmp_path)
    w.add_series({"__name__": "m"}, [T0], [1.0])
    monkeypatch.setattr(blk, "write_meta", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        w.write()
    assert not list(tmp_path.glob("*.tmp-for-creation"))


def test_write_blocks_aligned_with_thanos(tmp_path):
    rng = np.random.default_rng(3)
    data = random_series(rng, n_series=10, huge_gap=0, max_samples=2000, interval=30_000)
    mint = min(int(t[0]) for t, _ in data.values())
    maxt = max(int(t[-1]) for t, _ in data.values()) + 1
    ranges = aligned_ranges(mint, maxt)
    metas = write_blocks(tmp_path, ((dict(l), t, v) for l, (t, v) in data.items()), ranges,
                         {"cluster": "a"}, "test")
    assert len(metas) >= 2
    merged: dict = {}
    for m in metas:
        assert m.min_time % H2 == 0 and m.max_time - m.min_time == H2
        raw = (tmp_path / m.ulid / "meta.json").read_bytes()
        assert raw.endswith(b"\n") and json.loads(raw)["thanos"]["labels"] == {"cluster": "a"}
        assert m.thanos.segment_files == ["000001"]
        assert {f.rel_path for f in m.thanos.files} == {"chunks/000001", "index", "meta.json"}
        with BlockReader.open_dir(tmp_path / m.ulid) as r:
            for l, t, v in r.series():
                assert t[0] >= m.min_time and t[-1] < m.max_time
                pt, pv = merged.get(l, (np.empty(0, np.int64), np.empty(0)))
                merged[l] = (np.concatenate([pt, t]), np.concatenate([pv, v]))
    assert same_samples(data, merged) == []


def test_block_tombstones_applied(tmp_path):
    t = np.arange(0, 50, dtype=np.int64) * 1000 + T0
    w = BlockWriter(tmp_path)
    w.add_series({"__name__": "a"}, t, t.astype(float))
    w.add_series({"__name__": "b"}, t, t.astype(float))
    meta = w.write()
    d = tmp_path / meta.ulid
    with BlockReader.open_dir(d) as r:
        ref_a = int(r.index.postings("__name__", "a")[0])
    tomb.write(d, {ref_a: [(T0 + 10_000, T0 + 19_999), (T0 + 20_000, T0 + 20_000)]})
    with BlockReader.open_dir(d) as r:
        got = _series_dict(r)
    ta = got[(("__name__", "a"),)][0]
    assert len(ta) == 39 and not ((ta >= T0 + 10_000) & (ta <= T0 + 20_000)).any()
    assert len(got[(("__name__", "b"),)][0]) == 50


def test_block_truncated_index(tmp_path):
    w = BlockWriter(tmp_path)
    w.add_series({"__name__": "m"}, [T0, T0 + 1], [1.0, 2.0])
    meta = w.write()
    idx = tmp_path / meta.ulid / "index"
    raw = idx.read_bytes()
    for cut in (len(raw) - 10, 3, len(raw) // 2):
        idx.write_bytes(raw[:cut])
        with pytest.raises(CorruptBlockError) as ei:
            BlockReader.open_dir(tmp_path / meta.ulid)
        assert ei.value.block == meta.ulid and ei.value.file == "index"


def test_block_chunk_damage_via_reader(tmp_path):
    w = BlockWriter(tmp_path)
    w.add_series({"__name__": "m"}, np.arange(10) + T0, np.arange(10.0))
    meta = w.write()
    seg = tmp_path / meta.ulid / "chunks" / "000001"
    raw = bytearray(seg.read_bytes())
    raw[-1] ^= 1
    seg.write_bytes(bytes(raw))
    with BlockReader.open_dir(tmp_path / meta.ulid) as r:
        with pytest.raises(CorruptChunkError) as ei:
            list(r.series())
    assert (ei.value.block, ei.value.file, ei.value.offset) == (meta.ulid, "chunks/000001", 8)


class CountingBucket:
    """Wraps a bucket and counts bytes fetched."""

    def __init__(self, inner):
        self.inner = inner
        self.bytes = 0
        self.gets = []
        self.calls = []

    def __getattr__(self, k):
        return getattr(self.inner, k)

    def get(self, key):
        data = self.inner.get(key)
        self.bytes += len(data)
        self.gets.append((key, 0, len(data)))
        return data

    def attributes(self, key):
        self.calls.append(("attributes", key))
        return self.inner.attributes(key)

    def iter(self, prefix="", recursive=False):
        self.calls.append(("iter", prefix))
        return self.inner.iter(prefix, recursive)

    def get_range(self, key, off, length):
        data = self.inner.get_range(key, off, length)
        self.bytes += len(data)
        self.gets.append((key, off, length))
        return data


@pytest.mark.parametrize("thanos", [None, {"labels": {"cluster": "c1"}, "source": "test"}])
def test_block_from_bucket_uses_ranged_reads(tmp_path, thanos):
    from pythanos.objstore import FilesystemBucket

    rng = np.random.default_rng(11)
    w = BlockWriter(tmp_path / "local", thanos=thanos)
    t = T0 + np.arange(120, dtype=np.int64) * 10_000
    for i in range(4000):
        w.add_series({"__name__": f"metric_{i % 3}", "i": str(i), "pod": f"pod-{i % 97}-abcdefgh"}, t,
                     rng.normal(size=120))
    meta = w.write()
    src = tmp_path / "local" / meta.ulid
    fs = FilesystemBucket(str(tmp_path / "bkt"))
    for f in ["chunks/000001", "index", "meta.json"]:
        fs.upload(f"{meta.ulid}/{f}", (src / f).read_bytes())
    index_size = (src / "index").stat().st_size
    chunks_size = (src / "chunks" / "000001").stat().st_size
    b = CountingBucket(fs)
    with BlockReader.open_bucket(b, meta.ulid) as r:
        got = _series_dict(r, [Matcher("=", "i", "17")], T0, T0 + 600_000)
    with BlockReader.open_dir(src) as lr:
        want = _series_dict(lr, [Matcher("=", "i", "17")], T0, T0 + 600_000)
    assert same_samples(want, got) == [] and len(got) == 1
    assert not any(k.endswith(("index", "000001")) and length in (-1, index_size, chunks_size)
                   for k, _, length in b.gets), b.gets
    fetched = b.bytes - len((src / "meta.json").read_bytes())
    assert fetched < (index_size + chunks_size) / 4, (fetched, index_size, chunks_size)
    if thanos:  # sizes come from meta.json's thanos.files: no listing, no HEAD requests
        assert b.calls == []
    else:
        assert [c[0] for c in b.calls].count("iter") == 1


def test_block_bad_xor_data_with_valid_crc(tmp_path):
    import google_crc32c

    w = BlockWriter(tmp_path)
    w.add_series({"__name__": "a"}, np.arange(5) + T0, np.arange(5.0))
    w.add_series({"__name__": "b"}, np.arange(5) + T0, np.arange(5.0))
    meta = w.write()
    seg = tmp_path / meta.ulid / "chunks" / "000001"
    raw = bytearray(seg.read_bytes())
    with BlockReader.open_dir(tmp_path / meta.ulid) as r:
        sref = int(r.index.postings("__name__", "b")[0])
        ref = int(r.index.series(sref)[1][0].ref)
    n = raw[ref]  # 1-byte length field
    raw[ref + 2:ref + 4] = b"\x03\xe8"  # claims 1000 samples
    raw[ref + 2 + n:ref + 6 + n] = struct.pack(">I", google_crc32c.value(bytes(raw[ref + 1:ref + 2 + n])))
    seg.write_bytes(bytes(raw))
    with BlockReader.open_dir(tmp_path / meta.ulid) as r:
        assert [l for l, _, _ in r.series([Matcher("=", "__name__", "a")])] == [(("__name__", "a"),)]
        with pytest.raises(CorruptChunkError) as ei:
            list(r.series())
    assert (ei.value.block, ei.value.file, ei.value.offset) == (meta.ulid, "chunks/000001", ref)


def test_block_series_sharing_one_chunk_cannot_multiply_the_output(tmp_path):
    """An index whose 2,000 series all point at one chunk (each ref valid on its own): the reader
    decodes them in one batch whose chunk ranges overlap, and the sample counts they claim
    exceed what the bytes read can hold, so it fails naming the block, file and chunk offset
    instead of decoding the same bytes 2,000 times."""
    from pythanos.tsdb.index import IndexWriter

    w = BlockWriter(tmp_path)
    w.add_series({"__name__": "m"}, T0 + np.arange(120) * 15_000, np.zeros(120))
    meta = w.write()
    d = tmp_path / meta.ulid
    with BlockReader.open_dir(d) as r:
        c = r.index.series(int(r.index.postings("__name__", "m")[0]))[1][0]
    n = 2000
    iw = IndexWriter(d / "index", ["__name__", "m", "i"] + [f"{i:04d}" for i in range(n)])
    for i in range(n):
        iw.add_series([("__name__", "m"), ("i", f"{i:04d}")], [(int(c.mint), int(c.maxt), int(c.ref))])
    iw.close()
    with BlockReader.open_dir(d) as r:
        with pytest.raises(CorruptChunkError, match="overlapping chunk ranges") as ei:
            list(r.series())
    assert (ei.value.block, ei.value.file, ei.value.offset) == (meta.ulid, "chunks/000001", int(c.ref) & 0xFFFFFFFF)
