"""Writes the seed corpora (``fuzz/corpus/<target>/``) from real data: a small block written by the
project's block writer (Prometheus 2.x byte layout, checked against promtool in tests/), the same
block downsampled (aggregate chunks), and StoreAPI / remote-read frames carrying its chunks.
Run ``python fuzz/seeds.py`` after a format change; the files are committed (a few KB per target)."""
from __future__ import annotations

import hashlib
import os
import shutil
import struct
import sys
import tempfile

import cramjam
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")

from pythanos.remote.prompb import remote_pb2, types_pb2  # noqa: E402
from pythanos.storeapi.pb import rpc_pb2, types_pb2 as thanos_types  # noqa: E402
from pythanos.storeapi.pb import labels_pb2  # noqa: E402
from pythanos.tsdb import tombstones  # noqa: E402
from pythanos.tsdb.block import BlockReader, BlockWriter  # noqa: E402
from pythanos.tsdb.downsample import RES_5M, downsample_block  # noqa: E402
from pythanos.tsdb.encoding import crc32c, encode_uvarint  # noqa: E402
from pythanos.tsdb.meta import DeletionMark, NoCompactMark, marker_to_json  # noqa: E402

T0 = 1_700_000_000_000


def _series() -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """Three series of the kinds blocks hold: a counter, a gauge with NaN and StaleNaN, a constant."""
    t = T0 + np.arange(150, dtype=np.int64) * 15_000
    stale = np.array([0x7FF0000000000002], dtype=np.int64).view(np.float64)[0]
    gauge = np.sin(np.arange(150) / 7.0) * 100
    gauge[40], gauge[41] = np.nan, stale
    return [({"__name__": "http_requests_total", "job": "api", "replica": "0"}, t, np.cumsum(np.arange(150) % 7.0)),
            ({"__name__": "temperature", "job": "api", "zone": "eu-1"}, t[::3], gauge[::3]),
            ({"__name__": "up", "job": "api"}, t[:20], np.ones(20))]


def _write_block(root: str, style: str) -> str:
    w = BlockWriter(root, style=style, thanos={"labels": {"cluster": "eu1"}, "source": "sidecar"})
    for labels, t, v in _series():
        w.add_series(labels, t, v)
    meta = w.write()
    return os.path.join(root, meta.ulid)


def _put(target: str, data: bytes) -> None:
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _fld(tag: int, b: bytes) -> bytes:
    return bytes([tag]) + encode_uvarint(len(b)) + b


def _frame(msg: bytes) -> bytes:
    return encode_uvarint(len(msg)) + struct.pack(">I", crc32c(msg)) + msg


def main() -> None:
    shutil.rmtree(CORPUS, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = _write_block(os.path.join(tmp, "raw2"), "prom2")
        raw3 = _write_block(os.path.join(tmp, "raw3"), "prom3")
        with BlockReader.open_dir(raw) as r:
            ds = downsample_block(r, os.path.join(tmp, "ds"), RES_5M)
            series = [(lb, cs) for lb, _, cs in r.series_chunks()]
        dsdir = os.path.join(tmp, "ds", ds.ulid)
        with BlockReader.open_dir(dsdir) as r:
            aggr = [c for _, _, chunks in r.series_chunks() for c in chunks]
        # index, chunk segments, meta.json, tombstones of real blocks
        _put("index", _read(os.path.join(raw, "index")))
        _put("index", _read(os.path.join(raw3, "index")))
        _put("index", _read(os.path.join(dsdir, "index")))
        _put("chunk_segment", b"\x05\x01\x00" + _read(os.path.join(raw, "chunks", "000001")))
        _put("chunk_segment", b"\x03\x00\x00" + _read(os.path.join(dsdir, "chunks", "000001"))[:1500])
        _put("meta_json", _read(os.path.join(raw, "meta.json")))
        _put("meta_json", _read(os.path.join(dsdir, "meta.json")))
        _put("meta_json", marker_to_json(DeletionMark(id=ds.ulid, deletion_time=1_700_000_000, details="fuzz")))
        _put("meta_json", marker_to_json(NoCompactMark(id=ds.ulid, no_compact_time=1_700_000_000)))
        _put("tombstones", tombstones.encode({}))
        _put("tombstones", tombstones.encode({1: [(T0, T0 + 1000)], 7: [(-5, 3), (10, 2 ** 40)]}))
        # chunks: XOR data alone and in batches, aggregate chunks with their header bytes
        xors = [bytes(c[3]) for _, cs in series for c in cs]
        for d in sorted(set(xors), key=len)[:3]:
            _put("xor_chunk", d)
        _put("xor_chunk", bytes([2, 0, len(xors[0]), len(xors[0]), 40]) + xors[0] + xors[1][:40])
        for c in aggr[:3]:
            _put("aggr_chunk", bytes([0, 128 + 1, 24]) + bytes(c[3]))
        # StoreAPI Series frames: a series with raw chunks, one with aggregates, a batch, a warning
        lbls = [labels_pb2.Label(name=n, value=v) for n, v in sorted(series[0][0])]
        raw_s = thanos_types.Series(labels=lbls, chunks=[
            thanos_types.AggrChunk(min_time=c[0], max_time=c[1], raw=thanos_types.Chunk(type=0, data=bytes(c[3])))
            for c in series[0][1][:2]])
        agg = aggr[0]
        agg_s = thanos_types.Series(labels=lbls[:2], chunks=[
            thanos_types.AggrChunk(min_time=agg[0], max_time=agg[1],
                                   raw=thanos_types.Chunk(type=0xFF, data=bytes(agg[3])))])
        _put("frames", b"\x00" + rpc_pb2.SeriesResponse(series=raw_s).SerializeToString())
        _put("frames", b"\x01" + rpc_pb2.SeriesResponse(series=agg_s).SerializeToString())
        _put("frames", b"\x01" + rpc_pb2.SeriesResponse(batch=thanos_types.SeriesBatch(series=[agg_s, agg_s])
                                                        ).SerializeToString())
        _put("frames", b"\x00" + rpc_pb2.SeriesResponse(warning="store eu1: partial").SerializeToString())
        # remote read: ChunkedReadResponse frames (a series split over two frames) and a SAMPLES body
        plbls = [types_pb2.Label(name=n, value=v) for n, v in sorted(series[1][0])]
        chunks = [types_pb2.Chunk(min_time_ms=c[0], max_time_ms=c[1], type=types_pb2.Chunk.XOR, data=bytes(c[3]))
                  for c in series[1][1]]
        f1 = _frame(remote_pb2.ChunkedReadResponse(chunked_series=[types_pb2.ChunkedSeries(
            labels=plbls, chunks=chunks[:1])]).SerializeToString())
        f2 = _frame(remote_pb2.ChunkedReadResponse(chunked_series=[types_pb2.ChunkedSeries(
            labels=plbls, chunks=chunks[1:2])], query_index=0).SerializeToString())
        _put("transcode", b"\x10" + f1 + f2)
        _put("transcode", remote_pb2.ChunkedReadResponse(chunked_series=[types_pb2.ChunkedSeries(
            labels=plbls[:1], chunks=[types_pb2.Chunk(min_time_ms=-5, max_time_ms=5, type=3, data=b"\x00\x01")])]
        ).SerializeToString())
        _put("remote_read", b"\x07" + f1 + f2)
        samples = remote_pb2.ReadResponse(results=[remote_pb2.QueryResult(timeseries=[types_pb2.TimeSeries(
            labels=plbls, samples=[types_pb2.Sample(timestamp=T0 + i, value=i / 3) for i in range(4)])])])
        _put("remote_read", b"\x00" + samples.SerializeToString())
        _put("remote_read", b"\x00" + bytes(cramjam.snappy.compress_raw(samples.SerializeToString())))
        # JSON writer: provider bytes (a vector, a matrix with values of every kind)
        rng = np.random.default_rng(13)
        _put("jsonfmt", b"\x01\x02" + b"job\x00api\x00" + rng.bytes(64))
        vals = np.array([0.1, -0.0, 1e21, 1e-7, np.inf, 123456789.125, 5e-324, 2 ** 53], dtype=np.float64)
        _put("jsonfmt", b"\x00\x03" + (np.arange(8, dtype=np.int64) * 15_000 + T0).tobytes() + vals.tobytes())
    _remote_write_seeds()
    _head_seeds()
    total = {t: sum(os.path.getsize(os.path.join(CORPUS, t, f)) for f in os.listdir(os.path.join(CORPUS, t)))
             for t in sorted(os.listdir(CORPUS))}
    print("seed corpus bytes per target:", total)


def _remote_write_seeds() -> None:
    """Remote-write bodies: RW 1.0 with an exemplar, histograms and metadata; RW 2.0 with symbols,
    metadata, an exemplar and a histogram; the first byte picks the version (and the HTTP path)."""
    from pythanos.remote.prompb import write_v2_pb2

    wr = remote_pb2.WriteRequest()
    for labels, t, v in _series():
        ts = wr.timeseries.add()
        for n in sorted(labels):
            ts.labels.add(name=n, value=labels[n])
        for k in range(3):
            ts.samples.add(timestamp=int(t[k]), value=float(v[k]))
    ex = wr.timeseries[0].exemplars.add(value=1.5, timestamp=T0)
    ex.labels.add(name="trace_id", value="4bf92f3577b34da6")
    h = wr.timeseries[1].histograms.add(count_int=5, sum=2.5, schema=1, zero_count_int=1, positive_deltas=[2, -1],
                                        timestamp=T0)
    h.positive_spans.add(offset=0, length=2)
    wr.timeseries[2].histograms.add(count_float=2.0, sum=1.0, schema=-53, positive_counts=[2.0], custom_values=[1.0],
                                    timestamp=T0).positive_spans.add(offset=0, length=1)
    wr.metadata.add(type=types_pb2.MetricMetadata.COUNTER, metric_family_name="http_requests_total", help="Requests.")
    _put("remote_write", b"\x00" + wr.SerializeToString())
    _put("remote_write", b"\x02" + bytes(cramjam.snappy.compress_raw(wr.SerializeToString())))
    r = write_v2_pb2.Request(symbols=["", "__name__", "up", "job", "api", "trace_id", "abc", "Help.", "seconds"])
    t2 = r.timeseries.add(labels_refs=[1, 2, 3, 4])
    t2.samples.add(value=1.0, timestamp=T0, start_timestamp=T0 - 1000)
    t2.metadata.type, t2.metadata.help_ref, t2.metadata.unit_ref = 2, 7, 8
    t2.exemplars.add(labels_refs=[5, 6], value=1.0, timestamp=T0)
    h2 = r.timeseries.add(labels_refs=[3, 4, 1, 2]).histograms.add(count_int=1, schema=0, positive_deltas=[1],
                                                                   timestamp=T0)
    h2.positive_spans.add(offset=1, length=1)
    r.timeseries.add(labels_refs=[1, 2, 3, 9]).samples.add(value=2.0, timestamp=T0)
    _put("remote_write", b"\x01" + r.SerializeToString())
    _put("remote_write", b"\x03" + bytes(cramjam.snappy.compress_raw(r.SerializeToString())))


def _head_seeds() -> None:
    """Head programs (fuzz/targets/head.py): create two series (and a malformed blob), append in
    order, late, duplicate and at the int64 extremes, replay, truncate, read; with and without an
    out-of-order window."""
    from pythanos.tsdb.head import blob_from_labels

    a, b = blob_from_labels({"__name__": "up", "job": "a"}), blob_from_labels({"__name__": "up", "job": "b"})
    create = bytes([0, 3, len(a)]) + a + bytes([len(b)]) + b + bytes([3]) + b"\x02\x01b"

    def t(d: int) -> bytes:
        return b"\x00" + struct.pack("<h", d)

    batch = bytes([1, 6]) + bytes([1, 2, 1, 2, 1, 9]) + t(0) + t(0) + t(5) + t(5) + t(-3) + t(1) + bytes([1, 3, 6, 6, 2, 0])
    extremes = bytes([1, 2, 1, 2]) + b"\x80" + struct.pack("<q", 2 ** 63 - 1) + b"\x80" + struct.pack("<q", -2 ** 63) + \
        bytes([0, 4])
    replay = bytes([2, 2, 1, 1]) + t(100) + t(50) + bytes([1, 1])
    for cfg in (0x00, 0x03, 0x16):
        _put("head", bytes([cfg]) + create + batch + replay + bytes([4, 1]) + bytes([3]) + t(40) + bytes([4, 0]))
    _put("head", bytes([0x05]) + create + batch + extremes + bytes([3]) + b"\x80" + struct.pack("<q", 2 ** 62))


if __name__ == "__main__":
    sys.exit(main())
