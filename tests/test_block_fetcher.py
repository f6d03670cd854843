"""Block discovery (``pythanos.block``) and the index-header (``pythanos.tsdb.indexheader``) on
real files: what a bucket reader keeps, drops and why; the header gives the same index as the file."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from pythanos.block import (ConsistencyDelayFilter, DeduplicateFilter, IgnoreDeletionMarkFilter, LabelShardFilter,
                            MetaFetcher, ReplicaLabelRemover, TimePartitionFilter)
from pythanos.flags import parse_time_or_duration
from pythanos.objstore import FilesystemBucket
from pythanos.relabel import parse_relabel_config
from pythanos.tsdb import ulid as _ulid
from pythanos.tsdb.block import BlockWriter
from pythanos.tsdb.errors import CorruptBlockError
from pythanos.tsdb.index import IndexReader
from pythanos.tsdb.indexheader import HeaderedIndexSource, build
from pythanos.tsdb.labels import Matcher
from pythanos.tsdb.meta import BlockMeta, Compaction, DeletionMark, ThanosMeta, marker_to_json
from pythanos.tsdb.source import FileSource

HOUR = 3_600_000


def put_meta(root, u, mint, maxt, labels=None, sources=None, source="sidecar", res=0, upload_time=None):
    d = root / u
    d.mkdir(parents=True, exist_ok=True)
    m = BlockMeta(ulid=u, min_time=mint, max_time=maxt, compaction=Compaction(level=1, sources=sources or [u]),
                  thanos=ThanosMeta(labels=labels or {"cluster": "eu1"}, source=source, downsample_resolution=res,
                                    upload_time=upload_time))
    (d / "meta.json").write_bytes(m.to_json())
    return m


def ulid_at(ms: int) -> str:
    return _ulid.new(ms)


def test_discovery_partial_corrupted_and_filters(tmp_path):
    root = tmp_path / "bkt"
    now = int(time.time() * 1000)
    old = now - 48 * HOUR
    a, b, c, d = (ulid_at(old + i) for i in range(4))
    put_meta(root, a, 0, 2 * HOUR)
    put_meta(root, b, 2 * HOUR, 4 * HOUR)
    put_meta(root, c, 0, 4 * HOUR, sources=[a, b], source="compactor")   # a and b are its sources
    (root / d).mkdir(parents=True)  # partial upload: no meta.json
    (root / d / "index").write_bytes(b"x")
    e = ulid_at(old + 5)
    (root / e).mkdir()
    (root / e / "meta.json").write_text("{not json")
    (root / "debug" / "metas").mkdir(parents=True)  # not a ULID: ignored
    fresh = ulid_at(now)
    put_meta(root, fresh, 4 * HOUR, 6 * HOUR)
    marked_old, marked_new = ulid_at(old + 7), ulid_at(old + 8)
    put_meta(root, marked_old, 10 * HOUR, 12 * HOUR, labels={"cluster": "eu2"})
    put_meta(root, marked_new, 12 * HOUR, 14 * HOUR, labels={"cluster": "eu2"})
    (root / marked_old / "deletion-mark.json").write_bytes(marker_to_json(DeletionMark(marked_old, now // 1000 - 7200)))
    (root / marked_new / "deletion-mark.json").write_bytes(marker_to_json(DeletionMark(marked_new, now // 1000)))

    f = MetaFetcher(FilesystemBucket(str(root)), cache_dir=str(tmp_path / "cache"),
                    filters=[ConsistencyDelayFilter(1800), IgnoreDeletionMarkFilter(3600), DeduplicateFilter()])
    res = f.fetch()
    assert set(res.metas) == {c, marked_new}
    assert res.partial == {d: "meta.json not found"}
    assert list(res.corrupted) == [e] and "not valid JSON" in res.corrupted[e]
    assert res.filtered == {a: "duplicate", b: "duplicate", fresh: "too-fresh", marked_old: "marked-for-deletion"}
    assert res.deletion_marked == {marked_old, marked_new}
    # metas are cached locally and read from there next time
    assert (tmp_path / "cache" / c / "meta.json").exists()
    f2 = MetaFetcher(FilesystemBucket(str(root)), cache_dir=str(tmp_path / "cache"))
    assert f2._cached(c).ulid == c
    # a block gone from the bucket leaves the cache
    os.remove(root / a / "meta.json")
    os.rmdir(root / a)
    f.fetch()
    assert not (tmp_path / "cache" / a).exists()
    f.close()
    f2.close()


def test_time_partition_label_shard_and_replica_remover(tmp_path):
    root = tmp_path / "bkt"
    base = 1_700_000_000_000
    us = [ulid_at(base + i) for i in range(40)]
    for i, u in enumerate(us):
        put_meta(root, u, base + i * 2 * HOUR, base + (i + 1) * 2 * HOUR, labels={"cluster": "eu1", "replica": "r1"})
    bkt = FilesystemBucket(str(root))
    lo = parse_time_or_duration("2023-11-15T00:00:00Z")
    hi = parse_time_or_duration("2023-11-16T00:00:00Z", "--max-time")
    res = MetaFetcher(bkt, filters=[TimePartitionFilter(lo, hi)]).fetch()
    for u, m in res.metas.items():
        assert m.max_time >= lo.timestamp_ms() and m.min_time <= hi.timestamp_ms()
    assert 0 < len(res.metas) < len(us)
    shards = []
    for i in (0, 1):
        cfg = parse_relabel_config(f"[{{action: hashmod, source_labels: [__block_id], target_label: s, modulus: 2}}, "
                                   f"{{action: keep, source_labels: [s], regex: '{i}'}}]", "--selector.relabel-config")
        shards.append(set(MetaFetcher(bkt, filters=[LabelShardFilter(cfg)]).fetch().metas))
    assert shards[0] and shards[1] and not shards[0] & shards[1] and shards[0] | shards[1] == set(us)
    res = MetaFetcher(bkt, filters=[ReplicaLabelRemover(["replica"])]).fetch()
    assert {tuple(m.labels.items()) for m in res.metas.values()} == {(("cluster", "eu1"),)}
    only_replica = MetaFetcher(bkt, filters=[ReplicaLabelRemover(["replica", "cluster"])]).fetch()
    assert {tuple(m.labels.items()) for m in only_replica.metas.values()} == {(("replica", "deduped"),)}


def test_unlistable_bucket_raises(tmp_path):
    class Broken(FilesystemBucket):
        def iter(self, prefix="", recursive=False):
            raise OSError("connection refused")

    with pytest.raises(OSError):
        MetaFetcher(Broken(str(tmp_path))).fetch()


@pytest.fixture
def block_dir(tmp_path):
    rng = np.random.default_rng(3)
    w = BlockWriter(tmp_path / "out", thanos={"labels": {"cluster": "eu1"}})
    for i in range(300):
        t = np.arange(0, 2 * HOUR, 15_000, dtype=np.int64)
        w.add_series({"__name__": f"m{i % 7}", "pod": f"pod-{i}", "job": "j" + str(i % 3)}, t,
                     rng.normal(size=len(t)))
    meta = w.write()
    return tmp_path / "out" / meta.ulid


def test_index_header_reader_equals_the_index(block_dir, tmp_path):
    full = IndexReader(FileSource(block_dir / "index"), block="b")
    remote = FileSource(block_dir / "index")
    build(remote, tmp_path / "ih" / "index-header", block="b")
    hdr = IndexReader(HeaderedIndexSource(tmp_path / "ih" / "index-header", remote, block="b"), block="b",
                      owns_source=True)
    assert hdr.label_names() == full.label_names()
    for n in full.label_names():
        assert hdr.label_values(n) == full.label_values(n)
    for ms in ([Matcher.eq("__name__", "m3")], [Matcher.re("pod", "pod-1.*"), Matcher.ne("job", "j0")],
               [Matcher.ne("pod", ""), Matcher.eq("job", "j2")]):
        a, b = hdr.postings_for_matchers(ms), full.postings_for_matchers(ms)
        assert np.array_equal(a, b) and len(a)
        assert hdr.series_many(a) == full.series_many(b)


def test_index_header_damage_is_detected(block_dir, tmp_path):
    path = tmp_path / "index-header"
    build(FileSource(block_dir / "index"), path, block="b")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the header's own TOC
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptBlockError, match="index-header.*CRC32C"):
        HeaderedIndexSource(path, FileSource(block_dir / "index"), block="b")


def test_index_header_of_a_bad_index_names_the_block(block_dir, tmp_path):
    idx = tmp_path / "index"
    data = bytearray((block_dir / "index").read_bytes())
    data[-20] ^= 0xFF  # the TOC's CRC no longer matches
    idx.write_bytes(bytes(data))
    with pytest.raises(CorruptBlockError, match="01.*index.*TOC"):
        build(FileSource(idx), tmp_path / "h", block="01ABC")
    assert not (tmp_path / "h").exists() and not (tmp_path / "h.tmp").exists()
