"""Prometheus' WAL (pythanos.tsdb.wal, walrecords): checked against a real Prometheus 3.9.1 both
ways. Ours -> Prometheus: a WAL (several pages and segments, compressed or not, with a
checkpoint, tombstones and native histograms) is replayed by Prometheus and queried back.
Prometheus -> ours: a WAL Prometheus wrote (remote-write receiver, self-scrape with snappy) is read
by our reader, every sample found, and every record re-encoded byte-identically. Then corruption
and repair, hypothesis round-trips of the codecs, and throughput figures (printed, not asserted).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time
import urllib.parse
import urllib.request

import cramjam
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peers import http_get
from pythanos.remote.prompb import remote_pb2, types_pb2
from pythanos.tsdb import _wal
from pythanos.tsdb import wal as W
from pythanos.tsdb import walrecords as R

PROM_CONFIG = "global:\n  scrape_interval: 1h\n  evaluation_interval: 1h\n"
METRIC = "wal_test_metric"


# ---------------------------------------------------------------------------- helpers


def query(url: str, q: str, t: float) -> list[dict]:
    status, body = http_get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": f"{t:.3f}"}), 30)
    assert status == 200, body[:500]
    data = json.loads(body)
    assert data["status"] == "success", data
    return data["data"]["result"]


def series_api(url: str, match: str) -> list[dict]:
    status, body = http_get(f"{url}/api/v1/series?" + urllib.parse.urlencode({"match[]": match}), 30)
    assert status == 200, body[:500]
    return json.loads(body)["data"]


def raw_flags(path: str) -> set[int]:
    """The compression bits of the records in one segment file (our parser, no decompression)."""
    with open(path, "rb") as f:
        data = f.read()
    _, _, _, flags, _, err = _wal.parse(data, 0, 1 << 40)
    assert err is None, err
    return set(flags)


def hist(ref: int, t: int, k: int) -> R.Histogram:
    """A valid integer histogram (schema 0, three positive buckets 1, 2+k, 1)."""
    return R.Histogram(ref, t, 0, 0, 1e-128, 1, 5 + k, 10.5 + k, ((0, 3),), (), (1, 1 + k, -1 - k), (), None)


def fhist(ref: int, t: int, k: int) -> R.Histogram:
    return R.Histogram(ref, t, 0, 0, 1e-128, 1.0, 5.0 + k, 3.25 * k, ((0, 2),), (), (2.0, 2.0 + k), (), None)


class Dataset:
    """A WAL written by us and the answer Prometheus must give after replaying it."""

    def __init__(self, now_ms: int, n_series: int = 300, steps: int = 60, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.n = n_series
        self.refs = np.arange(1, n_series + 1, dtype=np.int64)
        self.blobs = [R.labels_to_blob([("__name__", METRIC), ("series", f"s{i:04d}"), ("mod", str(i % 7))])
                      for i in self.refs.tolist()]
        self.times = now_ms - 3_600_000 + 60_000 * np.arange(steps, dtype=np.int64)
        self.values = np.round(rng.normal(0, 1000, size=(steps, n_series)), 3)
        self.values[3, 7] = 0.1 + 0.2  # not a short decimal: formatting must round-trip

    def sample_records(self, lo: int, hi: int, per: int = 5) -> list[bytes]:
        out = []
        for s in range(lo, hi, per):
            e = min(hi, s + per)
            ts = np.repeat(self.times[s:e], self.n)
            refs = np.tile(self.refs, e - s)
            out.append(R.encode_samples(refs, ts, self.values[s:e].ravel()))
        return out


def write_dataset(wal_dir: str, ds: Dataset, compression: str) -> dict:
    """Series and 30 steps, a checkpoint over them (dropping series 291+ and steps < 10), then 30
    steps more, a tombstone and two native-histogram series. Returns what Prometheus must show."""
    # small segments so that every compression spans several (zstd shrinks these records most)
    w = W.WAL(wal_dir, segment_size=(32 if compression == "zstd" else 64) * 1024, compression=compression)
    w.log([R.encode_series(ds.refs[i:i + 100], ds.blobs[i:i + 100]) for i in range(0, ds.n, 100)])
    w.log(ds.sample_records(0, 30))
    w.log([R.encode_metadata([R.Metadata(1, 2, "seconds", "a gauge")])])
    cp_last = w.next_segment() - 1
    first, _ = w.segments()
    mint = int(ds.times[10])
    stats = W.checkpoint(wal_dir, first, cp_last, lambda refs: refs <= 290, mint, compression=compression)
    assert stats["dropped_series"] == ds.n - 290 and stats["dropped_samples"] == 10 * ds.n
    W.truncate(wal_dir, cp_last)
    w.log(ds.sample_records(30, 60, per=3))
    t0, t1 = int(ds.times[40]), int(ds.times[45])
    w.log([R.encode_tombstones([5], [t0], [t1])])
    w.log([R.encode_series([2000], [R.labels_to_blob([("__name__", "x")])])])  # too small to compress
    hb = R.labels_to_blob([("__name__", "wal_test_hist")])
    fb = R.labels_to_blob([("__name__", "wal_test_fhist")])
    w.log([R.encode_series([1001, 1002], [hb, fb])])
    hts = ds.times[50:60].tolist()
    w.log([R.encode_histograms(R.HISTOGRAM_SAMPLES, [hist(1001, t, k) for k, t in enumerate(hts)]),
           R.encode_histograms(R.FLOAT_HISTOGRAM_SAMPLES, [fhist(1002, t, k) for k, t in enumerate(hts)])])
    w.close()
    first, last = W.segment_range(wal_dir)
    assert cp_last >= 1 and first == cp_last + 1 and last > first, (cp_last, first, last)
    assert os.path.isdir(os.path.join(wal_dir, f"checkpoint.{cp_last:08d}"))

    want: dict[str, list[tuple[int, float]]] = {}
    keep = ds.times >= mint
    for j, ref in enumerate(ds.refs.tolist()):
        if ref > 290:
            continue
        pts = [(int(t), float(v)) for t, v, k in zip(ds.times.tolist(), ds.values[:, j].tolist(), keep) if k]
        if ref == 5:
            pts = [(t, v) for t, v in pts if not (t0 <= t <= t1)]
        want[f"s{ref:04d}"] = pts
    return {"floats": want, "hist_times": hts}


# ---------------------------------------------------------------------------- ours -> Prometheus


@pytest.mark.parametrize("compression", ["snappy", "none", "zstd"])
def test_prometheus_replays_our_wal(compression, prometheus_factory, prometheus3_bin, tmp_path):
    now_ms = int(time.time() * 1000)
    ds = Dataset(now_ms)
    data = tmp_path / "data"
    want = write_dataset(str(data / "wal"), ds, compression)
    flags = set()
    for i in W.list_segments(data / "wal"):
        flags |= raw_flags(W.segment_name(data / "wal", i))
    assert flags == ({0, 0x08} if compression == "snappy" else {0, 0x10} if compression == "zstd" else {0})

    prom = prometheus_factory(tsdb_path=data, config_yaml=PROM_CONFIG, binary=prometheus3_bin)
    at = now_ms / 1000 + 1
    got = query(prom.url, f'{METRIC}[2h]', at)
    by_series = {r["metric"]["series"]: [(int(round(float(t) * 1000)), float(v)) for t, v in r["values"]] for r in got}
    assert by_series.keys() == want["floats"].keys()
    for name, pts in want["floats"].items():
        assert by_series[name] == pts, name
    names = {s["series"] for s in series_api(prom.url, METRIC)}
    assert names == set(want["floats"])

    for metric, mk in (("wal_test_hist", hist), ("wal_test_fhist", fhist)):
        (res,) = query(prom.url, f"{metric}[2h]", at)
        hs = res["histograms"]
        assert [int(round(t * 1000)) for t, _ in hs] == want["hist_times"]
        for k, (_, h) in enumerate(hs):
            exp = mk(0, 0, k)
            assert float(h["count"]) == float(exp.count) and float(h["sum"]) == exp.sum


# ---------------------------------------------------------------------------- Prometheus -> ours


def decode_wal(wal_dir, torn_tail_ok: bool = False
               ) -> tuple[dict[int, tuple], list[tuple[int, int, float]], list[R.Histogram], list[bytes]]:
    """Series (ref -> label pairs), float samples, histograms and all records of a WAL; every
    record of a known type is re-encoded and must equal the original bytes. ``torn_tail_ok``: a
    SIGKILL may land between the page writes of a record spanning pages (Prometheus too repairs
    that on its next start), so the last segment may end torn."""
    recs: list[bytes] = []
    try:
        for rec in W.read_records(wal_dir):
            recs.append(rec)
    except W.WALCorruption as e:
        last = W.segment_name(wal_dir, W.segment_range(wal_dir)[1])
        if not (torn_tail_ok and e.segment == last and ("torn" in e.reason or "truncated" in e.reason)):
            raise
    series: dict[int, tuple] = {}
    samples: list[tuple[int, int, float]] = []
    hists: list[R.Histogram] = []
    for rec in recs:
        t = R.record_type(rec)
        if t == R.SERIES:
            refs, blobs = R.decode_series(rec)
            assert R.encode_series(refs, blobs) == rec
            for r, b in zip(refs.tolist(), blobs):
                series[r] = R.blob_to_labels(b)
                assert R.labels_to_blob(series[r]) == b
        elif t == R.SAMPLES:
            r, ts, vs = R.decode_samples(rec)
            assert R.encode_samples(r, ts, vs) == rec
            samples += zip(r.tolist(), ts.tolist(), vs.tolist())
        elif t in (R.HISTOGRAM_SAMPLES, R.FLOAT_HISTOGRAM_SAMPLES, 9, 10):
            hs = R.decode_histograms(rec)
            assert R.encode_histograms(t, hs) == rec
            hists += hs
        elif t == R.METADATA:
            assert R.encode_metadata(R.decode_metadata(rec)) == rec
        elif t == R.TOMBSTONES:
            assert R.encode_tombstones(*R.decode_tombstones(rec)) == rec
        elif t == R.EXEMPLARS:
            assert R.encode_exemplars(*R.decode_exemplars(rec)) == rec
        elif t == R.MMAP_MARKERS:
            assert R.encode_mmap_markers(*R.decode_mmap_markers(rec)) == rec
    return series, samples, hists, recs


def remote_write(url: str, req) -> None:
    body = bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
    r = urllib.request.Request(f"{url}/api/v1/write", data=body, method="POST", headers={
        "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": "0.1.0"})
    with urllib.request.urlopen(r, timeout=30) as resp:
        assert resp.status in (200, 204), resp.status


@pytest.mark.parametrize("compression", ["snappy", "none", "zstd"])
def test_our_reader_reads_prometheus_remote_write_wal(compression, prometheus_factory, prometheus3_bin, tmp_path):
    data = tmp_path / "data"
    flag = ["--no-storage.tsdb.wal-compression"] if compression == "none" else [
        f"--storage.tsdb.wal-compression-type={compression}"]
    prom = prometheus_factory(tsdb_path=data, config_yaml=PROM_CONFIG, binary=prometheus3_bin,
                              extra_args=["--web.enable-remote-write-receiver", *flag])
    now = int(time.time() * 1000) - 600_000
    rng = np.random.default_rng(7)
    sent: dict[tuple, list[tuple[int, float]]] = {}
    req = remote_pb2.WriteRequest()
    for i in range(120):
        ts = req.timeseries.add()
        labels = sorted([("__name__", "rw_metric"), ("idx", str(i)), ("zone", "z%d" % (i % 3))])
        for n, v in labels:
            ts.labels.add(name=n, value=v)
        pts = [(now + 1000 * k, float(rng.normal())) for k in range(50)]
        for t, v in pts:
            ts.samples.add(timestamp=t, value=v)
        sent[tuple(labels)] = pts
    h = req.timeseries.add()
    h.labels.add(name="__name__", value="rw_hist")
    hh = h.histograms.add(count_int=6, sum=12.5, schema=1, zero_threshold=0.001, zero_count_int=1,
                          timestamp=now, reset_hint=types_pb2.Histogram.NO)
    hh.positive_spans.add(offset=-1, length=2)
    hh.positive_spans.add(offset=3, length=1)
    hh.positive_deltas.extend([2, -1, 1])
    remote_write(prom.url, req)
    # the write was acknowledged: its records are in the WAL file, so a SIGKILL loses nothing
    prom.proc.kill()
    prom.proc.wait(30)

    series, samples, hists, recs = decode_wal(data / "wal")
    by_labels = {lbls: ref for ref, lbls in series.items()}
    got: dict[int, list[tuple[int, float]]] = {}
    for r, t, v in samples:
        got.setdefault(r, []).append((t, v))
    for lbls, pts in sent.items():
        assert lbls in by_labels, lbls
        assert sorted(got[by_labels[lbls]]) == pts
    (hs,) = hists
    assert series[hs.ref] == (("__name__", "rw_hist"),)
    assert (hs.t, hs.counter_reset_hint, hs.schema, hs.zero_threshold, hs.zero_count, hs.count, hs.sum) == (
        now, 2, 1, 0.001, 1, 6, 12.5)
    assert hs.positive_spans == ((-1, 2), (3, 1)) and hs.positive_buckets == (2, -1, 1)
    assert hs.negative_spans == () and hs.custom_values is None

    assert raw_flags(data / "wal" / "00000000") >= {"none": {0}, "snappy": {0x08}, "zstd": {0x10}}[compression]
    if compression == "zstd":
        return  # Go's zstd encoder and ours make different (equally valid) frames
    # our writer frames the same records into the same bytes (pages, fragments, padding; the
    # samples record spans pages); with snappy our compressor's output also equals Go's here
    ours = tmp_path / "ours"
    w = W.WAL(ours, compression=compression)
    w.log(recs)
    w.close()
    assert W.list_segments(data / "wal") == [0]
    theirs = (data / "wal" / "00000000").read_bytes()
    mine = (ours / "00000000").read_bytes()
    assert len(theirs) > 2 * W.PAGE_SIZE or compression == "snappy"
    assert mine[:len(theirs)] == theirs and not any(mine[len(theirs):])


def test_our_reader_reads_prometheus_checkpoint(prometheus_factory, prometheus3_bin, tmp_path):
    """Prometheus writes a checkpoint after a head compaction when the WAL has enough segments
    (every start opens a new one): four starts, 4h of remote-written samples, then the reader
    reads checkpoint + later segments, and every sample from the checkpoint's mint on is there."""
    data = tmp_path / "data"
    now = (int(time.time() * 1000) // 60_000) * 60_000
    start = now - 4 * 3_600_000
    sent: dict[tuple, dict[int, float]] = {}

    def send(prom, lo: int, hi: int) -> None:
        req = remote_pb2.WriteRequest()
        for i in range(20):
            ts = req.timeseries.add()
            labels = (("__name__", "cp_metric"), ("idx", str(i)))
            for n, v in labels:
                ts.labels.add(name=n, value=v)
            for t in range(lo, hi, 60_000):
                v = float(i * 1000 + (t - start) // 60_000)
                ts.samples.add(timestamp=t, value=v)
                sent.setdefault(labels, {})[t] = v
        remote_write(prom.url, req)

    half = 1_800_000
    for k in range(4):
        prom = prometheus_factory(tsdb_path=data, config_yaml=PROM_CONFIG, binary=prometheus3_bin,
                                  extra_args=["--web.enable-remote-write-receiver"], name=f"prometheus{k}")
        for j in range(2):
            lo = start + (2 * k + j) * half
            send(prom, lo, lo + half)
        if k == 3:
            deadline = time.monotonic() + 120
            while not W.list_checkpoints(data / "wal"):
                assert prom.alive() and time.monotonic() < deadline, "no checkpoint in 120 s"
                time.sleep(0.2)
            while "WAL checkpoint complete" not in prom.log():
                assert time.monotonic() < deadline, "checkpoint not complete in 120 s"
                time.sleep(0.2)
        prom.proc.kill()
        prom.proc.wait(30)
        if k == 2:  # the segments the checkpoint will cover, for our own checkpoint of them
            shutil.copytree(data / "wal", tmp_path / "copy")

    m = re.search(r'msg="Creating checkpoint" .*?mint=(\d+)', prom.log(2000))
    assert m, prom.log(50)
    mint = int(m.group(1))
    (cp_index, cp_dir), = W.list_checkpoints(data / "wal")
    assert cp_index >= 1 and W.segment_range(data / "wal")[0] == cp_index + 1
    cp_records = list(W.read_records(cp_dir))
    # series always; samples only when the covered segments hold some at or after mint, which
    # depends on the time of day (mint is the 2h-aligned end of the block Prometheus cut)
    assert R.SERIES in {R.record_type(r) for r in cp_records}

    # our checkpoint of the same segments with the same mint is byte-identical to Prometheus'
    stats = W.checkpoint(tmp_path / "copy", 0, cp_index, lambda refs: np.ones(len(refs), bool), mint)
    assert stats["dropped_samples"] > 0
    ours = tmp_path / "copy" / f"checkpoint.{cp_index:08d}"
    assert os.listdir(ours) == os.listdir(cp_dir) == ["00000000"]
    assert (ours / "00000000").read_bytes() == open(os.path.join(cp_dir, "00000000"), "rb").read()

    series, samples, _, _ = decode_wal(data / "wal")
    got: dict[tuple, dict[int, float]] = {}
    for r, t, v in samples:
        got.setdefault(series[r], {})[t] = v
    assert set(got) == set(sent)
    for labels, pts in sent.items():
        assert all(pts.get(t) == v for t, v in got[labels].items())  # nothing that was not sent
        want = {t: v for t, v in pts.items() if t >= mint}
        assert {t: v for t, v in got[labels].items() if t >= mint} == want


def test_our_reader_reads_prometheus_self_scrape_wal(prometheus_factory, prometheus3_bin, tmp_path):
    data = tmp_path / "data"
    cfg = ("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n"
           "    static_configs:\n      - targets: ['{target}']\n")
    # the target is Prometheus itself: its port is known only once started, so reload the config
    prom = prometheus_factory(tsdb_path=data, config_yaml=PROM_CONFIG, binary=prometheus3_bin,
                              extra_args=["--enable-feature=metadata-wal-records", "--web.enable-lifecycle"])
    prom.extra["config_file"].write_text(cfg.replace("{target}", f"127.0.0.1:{prom.port}"))
    req = urllib.request.Request(f"{prom.url}/-/reload", method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200

    deadline = time.monotonic() + 90
    while True:
        n = 0
        try:
            n = sum(1 for rec in W.read_records(data / "wal") if rec[:1] == b"\x02")
        except W.WALCorruption:
            pass  # a batch being written right now
        if n >= 5:
            break
        assert time.monotonic() < deadline, "Prometheus wrote no samples in 90 s"
        time.sleep(0.5)
    before = query(prom.url, "prometheus_build_info[1h]", time.time())
    _, metrics_text = http_get(f"{prom.url}/metrics", 30)
    prom.proc.kill()
    prom.proc.wait(30)

    flags = set()
    for i in W.list_segments(data / "wal"):
        flags |= raw_flags(W.segment_name(data / "wal", i))
    assert 0x08 in flags  # snappy records (the default --storage.tsdb.wal-compression)
    series, samples, _, recs = decode_wal(data / "wal", torn_tail_ok=True)
    assert any(R.record_type(r) == R.METADATA for r in recs)
    metas = [m for r in recs if R.record_type(r) == R.METADATA for m in R.decode_metadata(r)]
    assert any(m.help and m.type in range(8) for m in metas)
    (res,) = before
    want_labels = tuple(sorted(res["metric"].items()))
    (ref,) = [r for r, l in series.items() if l == want_labels]
    pts = {(t, v) for r, t, v in samples if r == ref}
    for t, v in res["values"]:
        assert (int(round(float(t) * 1000)), float(v)) in pts

    # our WAL metrics carry Prometheus' names and types (what its /metrics says)
    from prometheus_client import CollectorRegistry
    reg = CollectorRegistry()
    w = W.WAL(tmp_path / "ours", metrics=W.WALMetrics(reg))
    w.log(recs[:50])
    w.close()
    theirs = {line.split()[2]: line.split()[3] for line in metrics_text.decode().splitlines()
              if line.startswith("# TYPE prometheus_tsdb_wal_")}
    ours = {m.name + ("_total" if m.type == "counter" else ""): m.type for m in reg.collect()}
    # the two Prometheus has beyond these (corruptions_total, truncate_duration_seconds) are the head's
    assert len(ours) == 11 and {k: theirs.get(k) for k in ours} == ours


# ---------------------------------------------------------------------------- corruption, repair


def small_wal(d: str, n: int = 40, compression: str = "none") -> list[bytes]:
    """A one-segment WAL of n ~5 KiB sample records (so records cross pages)."""
    recs = [R.encode_samples(np.full(450, i), np.arange(450) * 15 + i, np.arange(450) * 0.5) for i in range(n)]
    w = W.WAL(d, segment_size=W.DEFAULT_SEGMENT_SIZE, compression=compression)
    w.log(recs[: n // 2])
    w.log(recs[n // 2:])
    w.close()
    return recs


def test_flipped_byte_names_segment_and_offset(tmp_path):
    d = str(tmp_path / "wal")
    recs = small_wal(d)
    seg = W.segment_name(d, 0)
    with open(seg, "r+b") as f:
        f.seek(70_000)
        b = f.read(1)
        f.seek(70_000)
        f.write(bytes([b[0] ^ 0x40]))
    got = []
    with pytest.raises(W.WALCorruption) as ei:
        for r in W.read_records(d):
            got.append(r)
    e = ei.value
    assert e.segment == seg and "checksum" in e.reason
    assert e.offset <= 70_000 < e.offset + W.PAGE_SIZE and str(e).startswith(f"corruption in segment {seg} at")
    assert got == recs[: len(got)] and e.good_end <= e.offset


def test_truncated_tail_is_torn(tmp_path):
    d = str(tmp_path / "wal")
    recs = small_wal(d)
    seg = W.segment_name(d, 0)
    size = os.path.getsize(seg)
    # cut inside the last record
    offsets = [off for _, off, _ in W.iter_records(d)]
    cut = offsets[-2] + 2000
    with open(seg, "r+b") as f:
        f.truncate(cut)
    assert cut < size
    with pytest.raises(W.WALCorruption) as ei:
        list(W.read_records(d))
    assert ei.value.segment == seg and ei.value.good_end == offsets[-2]
    assert "torn" in ei.value.reason or "truncated" in ei.value.reason

    # repair on open: the segment keeps every record before the damage, writing goes on after it
    w = W.WAL(d)
    assert w.active_segment == 1
    extra = R.encode_series([7], [R.labels_to_blob([("a", "b")])])
    w.log([extra])
    w.close()
    assert list(W.read_records(d)) == recs[:-1] + [extra]
    assert os.path.getsize(seg) % W.PAGE_SIZE == 0


def test_zeroed_page_and_repair_drops_later_segments(tmp_path, caplog):
    d = str(tmp_path / "wal")
    recs = small_wal(d)
    w = W.WAL(d)  # segment 1
    w.log(recs[:3])
    w.close()
    seg = W.segment_name(d, 0)
    with open(seg, "r+b") as f:
        f.seek(W.PAGE_SIZE)
        f.write(bytes(W.PAGE_SIZE))
    with pytest.raises(W.WALCorruption) as ei:
        list(W.read_records(d))
    e = ei.value
    assert e.segment == seg and e.offset >= W.PAGE_SIZE
    # the writer's repair: the segment cut at the last good record, segment 1 deleted
    w = W.WAL(d, repair=False)
    with caplog.at_level("WARNING", logger="pythanos.tsdb.wal"):
        w.repair(e)
    assert any(getattr(r, "segment", None) == seg and getattr(r, "offset", None) == e.offset for r in caplog.records)
    w.log([recs[0]])
    w.close()
    assert W.list_segments(d) == [0, 1]
    got = list(W.read_records(d))
    n = len(got) - 1
    assert n >= 1 and got[:n] == recs[:n] and got[-1] == recs[0]


def test_compressed_record_damage(tmp_path):
    """A snappy record whose bytes pass the CRC but do not decompress (or claim a huge size) is an
    error at the record's offset; repair refuses a damaged checkpoint."""
    d = str(tmp_path / "wal")
    rec = R.encode_samples(np.arange(1000), np.arange(1000), np.zeros(1000))
    body = bytes(cramjam.snappy.compress_raw(rec))
    for bad in (b"\xff\xff\xff\xff\x0f" + body[5:], body[:-3]):
        seg = bytes(_wal.frame([b"\x01ok", bad], bytes([0, 0x08]), 0, 0, 4, False)[0])
        os.makedirs(d, exist_ok=True)
        with open(W.segment_name(d, 0), "wb") as f:
            f.write(seg)
        with pytest.raises(W.WALCorruption, match="cannot decompress") as ei:
            list(W.read_records(d))
        assert ei.value.offset == ei.value.good_end == 7 + 3
    cp = os.path.join(d, "checkpoint.00000000")
    os.makedirs(cp)
    os.rename(W.segment_name(d, 0), W.segment_name(cp, 0))
    with pytest.raises(W.WALCorruption) as ei:
        list(W.read_records(d))
    with pytest.raises(ValueError, match="not a segment of"):
        W.repair(d, ei.value)


def test_bad_fragment_sequence_and_unknown_type(tmp_path):
    d = str(tmp_path / "wal")
    w = W.WAL(d, compression="none")
    w.log([b"\x01abc", b"\x01def"])
    w.close()
    seg = W.segment_name(d, 0)
    raw = bytearray(open(seg, "rb").read())
    for kind, msg in ((4, "last fragment without a first"), (6, "unknown fragment type")):
        bad = bytearray(raw)
        bad[11] = kind  # the second fragment's type byte (first is 7 + 4 bytes)
        open(seg, "wb").write(bad)
        with pytest.raises(W.WALCorruption) as ei:
            list(W.read_records(d))
        assert ei.value.offset == 11 and msg in ei.value.reason and ei.value.good_end == 11
    bad = bytearray(raw)
    bad[0] = 2  # first fragment of a record that never ends
    open(seg, "wb").write(bad)
    with pytest.raises(W.WALCorruption, match="unexpected full fragment inside a record"):
        list(W.read_records(d))


# ---------------------------------------------------------------------------- framing details


def test_framing_matches_prometheus_rules(tmp_path):
    """Fragment kinds and page padding as wlog.go's log() writes them, including the 0-byte first
    fragment when exactly a header's room is left in a page."""
    d = str(tmp_path / "wal")
    w = W.WAL(d, segment_size=4 * W.PAGE_SIZE, compression="none")
    a = b"\x01" * (W.PAGE_SIZE - 14)  # leaves exactly 7 bytes in page 0
    big = b"\x02" + bytes(range(256)) * 150  # 38401 bytes
    w.log([a, big])
    w.log([b"\x01" * 10])
    w.close()
    s0 = open(W.segment_name(d, 0), "rb").read()
    P = W.PAGE_SIZE

    def frag(off: int) -> tuple[int, int]:
        return s0[off], struct.unpack(">H", s0[off + 1:off + 3])[0]

    assert len(s0) == 3 * P
    assert frag(0) == (1, P - 14)
    assert frag(P - 7) == (2, 0)
    assert frag(P) == (3, P - 7)
    assert frag(2 * P) == (4, 38401 - (P - 7))
    assert frag(2 * P + 7 + 38401 - (P - 7)) == (1, 10)
    assert list(W.read_records(d)) == [a, big, b"\x01" * 10]


def test_reopen_continues_after_last_segment_or_checkpoint(tmp_path):
    d = str(tmp_path / "wal")
    a, b, c, e = (R.encode_series([i], [R.labels_to_blob([("n", str(i))])]) for i in range(4))
    with W.WAL(d) as w:
        assert w.active_segment == 0
        w.log([a])
        w.next_segment()
        w.log([b])
    with W.WAL(d) as w:
        assert w.active_segment == 2 and w.segments() == (0, 2)
        w.log([c])
    W.checkpoint(d, 0, 2, lambda refs: refs != 1, 0)
    W.truncate(d, 2)
    assert W.list_segments(d) == [] and [i for i, _ in W.list_checkpoints(d)] == [2]
    os.makedirs(os.path.join(d, "checkpoint.00000001.tmp"))
    with W.WAL(d) as w:
        assert w.active_segment == 3
        w.log([e])
    assert not os.path.exists(os.path.join(d, "checkpoint.00000001.tmp"))
    assert list(W.read_records(d)) == [a, c, e]


def test_replay_batches_runs_of_samples_records(tmp_path):
    d = str(tmp_path / "wal")
    s1 = R.encode_series([1, 2], [R.labels_to_blob([("a", "1")]), R.labels_to_blob([("a", "2")])])
    smp = [R.encode_samples([1, 2], [i, i], [i * 0.5, i * 1.5]) for i in range(10)]
    tomb = R.encode_tombstones([1], [0], [3])
    with W.WAL(d, segment_size=W.PAGE_SIZE) as w:
        w.log([s1, *smp[:4], tomb, *smp[4:]])
    got = list(W.replay(d, batch=4))
    assert [t for t, _ in got] == [R.SERIES, R.SAMPLES, R.TOMBSTONES, R.SAMPLES, R.SAMPLES]
    assert got[1][1][1].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert np.concatenate([got[3][1][2], got[4][1][2]]).tolist() == [x for i in range(4, 10)
                                                                     for x in (i * 0.5, i * 1.5)]
    end = [off for _, off, _ in W.iter_records(d)][-1]
    with open(W.segment_name(d, 0), "r+b") as f:  # damage the last record: all before it comes first
        f.seek(end - 5)
        f.write(b"\xff")
    out = []
    with pytest.raises(W.WALCorruption):
        for item in W.replay(d, batch=100):
            out.append(item)
    assert [t for t, _ in out] == [R.SERIES, R.SAMPLES, R.TOMBSTONES, R.SAMPLES]
    assert len(out[3][1][0]) == 10  # 5 of the 6 records after the tombstone


def test_oversized_record_gets_its_own_segment(tmp_path):
    d = str(tmp_path / "wal")
    w = W.WAL(d, segment_size=W.PAGE_SIZE, compression="none")
    huge = b"\x01" + bytes(100_000)
    w.log([b"\x01x", huge, b"\x01y"])
    w.close()
    assert list(W.read_records(d)) == [b"\x01x", huge, b"\x01y"]
    sizes = [os.path.getsize(W.segment_name(d, i)) for i in W.list_segments(d)]
    assert len(sizes) == 3 and sizes[0] == sizes[2] == W.PAGE_SIZE and sizes[1] == 4 * W.PAGE_SIZE


# ---------------------------------------------------------------------------- codec properties

i64 = st.integers(-(2**63), 2**63 - 1)
u64 = st.integers(0, 2**64 - 1)
f64 = st.floats(allow_nan=False)
label = st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=8))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(u64, i64, f64), max_size=50))
def test_samples_roundtrip(items):
    refs = np.array([a for a, _, _ in items], dtype=np.uint64)
    ts = np.array([b for _, b, _ in items], dtype=np.int64)
    vs = np.array([c for _, _, c in items], dtype=np.float64)
    rec = R.encode_samples(refs, ts, vs)
    r, t, v = R.decode_samples(rec)
    assert r.tolist() == refs.tolist() and t.tolist() == ts.tolist() and v.tobytes() == vs.tobytes()
    assert R.encode_samples(r, t, v) == rec
    r2, t2, v2, c = R.decode_samples_many([rec, b"\x02", rec])
    assert c.tolist() == [len(items), 0, len(items)] and r2.tolist() == refs.tolist() * 2
    assert t2.tolist() == ts.tolist() * 2 and v2.tobytes() == vs.tobytes() * 2
    with pytest.raises(R.WALRecordError, match="record 1 of the batch"):
        R.decode_samples_many([rec, rec[:-1] if items else b"\x01", rec])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(u64, st.lists(label, max_size=5)), max_size=20))
def test_series_and_exemplars_roundtrip(items):
    refs = [a for a, _ in items]
    blobs = [R.labels_to_blob(dict(ls).items()) for _, ls in items]
    rec = R.encode_series(refs, blobs)
    r, b = R.decode_series(rec)
    assert r.tolist() == refs and b == blobs
    assert [R.labels_to_blob(R.blob_to_labels(x)) for x in b] == blobs
    ex = R.encode_exemplars(refs, list(range(len(refs))), [0.5] * len(refs), blobs)
    r2, t2, v2, b2 = R.decode_exemplars(ex)
    assert r2.tolist() == refs and b2 == blobs and R.encode_exemplars(r2, t2, v2, b2) == ex


spans = st.lists(st.tuples(st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**32 - 1)), max_size=4)


@st.composite
def histograms(draw, is_float: bool):
    schema = draw(st.sampled_from([-4, 0, 3, 8, -53]))
    num = f64 if is_float else st.integers(0, 2**64 - 1)
    bucket = f64 if is_float else i64
    return R.Histogram(draw(u64), draw(i64), draw(st.integers(0, 3)), schema, draw(f64), draw(num), draw(num),
                       draw(f64), tuple(draw(spans)), tuple(draw(spans)), tuple(draw(st.lists(bucket, max_size=5))),
                       tuple(draw(st.lists(bucket, max_size=5))),
                       tuple(draw(st.lists(f64, max_size=4))) if schema == -53 else None)


@settings(max_examples=150, deadline=None)
@given(st.lists(histograms(False), max_size=6), st.lists(histograms(True), max_size=6))
def test_histograms_roundtrip(hs, fhs):
    for rtype, items in ((R.HISTOGRAM_SAMPLES, hs), (R.FLOAT_HISTOGRAM_SAMPLES, fhs),
                         (R.CUSTOM_BUCKETS_HISTOGRAM_SAMPLES, hs), (R.CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES, fhs)):
        rec = R.encode_histograms(rtype, items)
        got = R.decode_histograms(rec)
        assert len(got) == len(items)
        for g, h in zip(got, items):
            assert g == h
        assert R.encode_histograms(rtype, got) == rec


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(u64, i64, i64), max_size=10),
       st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 7), st.text(max_size=10), st.text(max_size=10)),
                max_size=5))
def test_tombstones_metadata_mmap_roundtrip(ts, ms):
    rec = R.encode_tombstones(*zip(*ts)) if ts else R.encode_tombstones([], [], [])
    r, a, b = R.decode_tombstones(rec)
    assert list(zip(r.tolist(), a.tolist(), b.tolist())) == ts and R.encode_tombstones(r, a, b) == rec
    mrec = R.encode_metadata(ms)
    assert [tuple(m) for m in R.decode_metadata(mrec)] == ms
    mm = R.encode_mmap_markers([1, 2**64 - 1], [3, 4])
    assert [x.tolist() for x in R.decode_mmap_markers(mm)] == [[1, 2**64 - 1], [3, 4]]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([1, 2, 4, 7, 8, 9, 10, 3, 6, 5]))
def test_decoders_reject_garbage_with_a_place(body, rtype):
    rec = bytes([rtype]) + body
    dec = {1: R.decode_series, 2: R.decode_samples, 3: R.decode_tombstones, 4: R.decode_exemplars,
           5: R.decode_mmap_markers, 6: R.decode_metadata}.get(rtype, R.decode_histograms)
    try:
        dec(rec)
    except R.WALRecordError as e:
        assert 0 <= e.offset <= len(rec) and R.TYPE_NAMES[rtype] in str(e)


def test_huge_counts_do_not_allocate():
    """A count field claiming 2**60 entries in a tiny record is an error, not an allocation."""
    huge = b"\xff\xff\xff\xff\xff\xff\xff\xff\x0f"
    with pytest.raises(R.WALRecordError, match="larger than the record"):
        R.decode_series(b"\x01" + bytes(8) + huge + b"ab")
    hbody = bytes(16) + b"\x00\x00" + b"\x00" + b"\x00" + bytes(8) + b"\x00\x00" + bytes(8) + huge
    with pytest.raises(R.WALRecordError, match="count larger than the record"):
        R.decode_histograms(b"\x07" + hbody)
    with pytest.raises(R.WALRecordError, match="larger than the record"):
        R.decode_metadata(b"\x06\x01\x02" + huge)
    with pytest.raises(R.WALRecordError, match="larger than the blob"):
        R.blob_to_labels(huge)
    with pytest.raises(R.WALRecordError, match="samples record: unexpected end of record at offset 19"):
        R.decode_samples(b"\x02" + bytes(16) + b"\x00\x00" + bytes(7))


def _valid_segment() -> bytes:
    out = bytearray()
    recs = [R.encode_samples(np.full(n, n), np.arange(n), np.arange(n) * 0.25) for n in (3, 900, 5000, 40)]
    alloc, done = 0, 0
    b, k, alloc, done, _ = _wal.frame(recs, bytes(len(recs)), alloc, done, 1 << 20, False)
    out += b
    return bytes(out)


SEGMENT = _valid_segment()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(SEGMENT) - 1), st.integers(0, 255)), max_size=4),
       st.integers(0, len(SEGMENT)), st.binary(max_size=200))
def test_parse_never_reads_out_of_bounds(flips, cut, tail):
    """Damaged segments (bytes changed, cut short, garbage appended) end in records or an error
    with an offset inside the data; never a crash or an endless loop."""
    seg = bytearray(SEGMENT[:cut] + tail)
    for pos, val in flips:
        if pos < len(seg):
            seg[pos] = val
    payload, ends, offs, flags, pos, err = _wal.parse(bytes(seg), 0, 1 << 30)
    e = np.frombuffer(ends, dtype=np.int64)
    assert len(e) == len(flags) and (len(e) == 0 or e[-1] == len(payload))
    if err is not None:
        assert 0 <= err[0] <= len(seg) and isinstance(err[1], str)
    for rec in np.split(np.frombuffer(payload, np.uint8), e[:-1]) if len(e) else []:
        try:
            R.decode_samples(rec.tobytes())
        except R.WALRecordError:
            pass


def test_kernel_holds_what_it_reads():
    """A float conversion that empties the lists the kernel is reading (Python code run from the
    kernel) cannot make it read freed items: it works on tuple copies. In a child process with
    the debug allocator, so a use after free fails at once."""
    import subprocess
    import sys
    code = r"""
from pythanos.tsdb import walrecords as R
buckets, items = [], []
class Evil:
    def __float__(self):
        buckets.clear(); items.clear()
        return 2.5
buckets += [Evil(), 1.0, 3.0]
items.append(R.Histogram(1, 2, 0, 0, 0.0, 1.0, 2.0, 3.0, ((0, 3),), (), buckets, (), None))
items.append(R.Histogram(1, 3, 0, 0, 0.0, 1.0, 2.0, 3.0, ((0, 1),), (), [4.0], (), None))
rec = R.encode_histograms(R.FLOAT_HISTOGRAM_SAMPLES, items)
print([h.positive_buckets for h in R.decode_histograms(rec)])
"""
    env = dict(os.environ, PYTHONMALLOC="debug")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "[(2.5, 1.0, 3.0), (4.0,)]"


def test_crc_kernel_matches_google_crc32c():
    import google_crc32c
    for n in (0, 1, 7, 8, 100, 4097):
        b = os.urandom(n)
        assert _wal.crc32c(b) == google_crc32c.value(b)


# ---------------------------------------------------------------------------- throughput


def test_throughput_1m_samples(tmp_path, capsys):
    """Encode+write and read+decode of 1M samples (10k series x 100 steps); figures printed."""
    n_series, steps = 10_000, 100
    refs = np.arange(1, n_series + 1, dtype=np.int64)
    rng = np.random.default_rng(3)
    vals = rng.normal(size=(steps, n_series))
    t0 = 1_700_000_000_000
    out = {}
    for comp in ("none", "snappy"):
        d = str(tmp_path / comp)
        start = time.perf_counter()
        w = W.WAL(d, compression=comp)
        for s in range(steps):
            w.log([R.encode_samples(refs, np.full(n_series, t0 + s * 15_000, dtype=np.int64), vals[s])])
        w.close()
        wt = time.perf_counter() - start
        start = time.perf_counter()
        n = 0
        for rec in W.read_records(d):
            _, ts, _ = R.decode_samples(rec)
            n += len(ts)
        rt = time.perf_counter() - start
        assert n == n_series * steps
        out[comp] = (n / wt, n / rt, sum(os.path.getsize(W.segment_name(d, i)) for i in W.list_segments(d)))
    # a WAL of small commits (one 10-sample record each, as a receiver writes): replay()
    n_small = 100_000
    d = str(tmp_path / "small")
    with W.WAL(d) as w:
        recs = [R.encode_samples(refs[:10] + i, np.full(10, t0 + i, dtype=np.int64), vals[0, :10])
                for i in range(n_small)]
        for i in range(0, n_small, 1000):
            w.log(recs[i:i + 1000])
    start = time.perf_counter()
    n = sum(len(body[1]) for t, body in W.replay(d) if t == R.SAMPLES)
    small = time.perf_counter() - start
    assert n == 10 * n_small
    with capsys.disabled():
        for comp, (a, b, size) in out.items():
            print(f"\nWAL {comp}: encode+write {a / 1e6:.1f}M samples/s, read+decode {b / 1e6:.1f}M samples/s, "
                  f"{size / 1e6:.1f} MB on disk for 1M samples")
        print(f"WAL replay of small commits (snappy, 10 samples/record): {n_small / small / 1e6:.2f}M records/s, "
              f"{n / small / 1e6:.1f}M samples/s")
