"""The downsampler (``pythanos.tsdb.downsample``) against a real ``thanos compact`` on the same input.

* The year of ``continuous-365d-tiny`` blocks of ``downsampled_bucket`` (raw, 5m and 1h blocks, all
  written by a real Thanos compactor): our 5m of each raw block >= 40h and our 1h of each Thanos 5m
  block >= 10d are compared with Thanos' block of the same ``compaction.sources``: same series,
  every aggregate sample for sample (timestamps and float bits), the same chunk boundaries, the
  same chunk bytes, and the same segment file and index bytes.
* A real Thanos reads our blocks: ``thanos compact`` downsamples our 5m blocks to 1h (byte-identical
  to its own 1h blocks) and ``thanos tools bucket verify`` finds nothing wrong.
* Small hand-made blocks (counter resets, NaN, stale markers, +-Inf, one-sample series, series
  starting and ending mid-window, dense and sparse series, samples going back in time, XOR chunks
  in a 5m block) downsampled by ``thanos compact`` and by us: the same bytes. Real Thanos is the
  oracle; no expected value is written down here.
* Corrupt or unsupported input raises errors that name the block (and the series).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pythanos.tsdb import aggrchunk
from pythanos.tsdb.block import BlockReader, cut_fixed
from pythanos.tsdb.chunkenc import decode_xor, encode_xor, encode_xor_many
from pythanos.tsdb.downsample import (
    RES_1H, RES_5M, DownsampleError, UnsupportedChunkError, downsample_block)
from pythanos.tsdb.errors import CorruptBlockError, CorruptChunkError
from pythanos.tsdb.meta import ThanosMeta, read_meta, write_meta
from pythanos.tsdb.streamwriter import StreamBlockWriter

H = 3_600_000
D = 24 * H
SPAN_5M = 40 * H
SPAN_1H = 10 * D
STALE = np.array([0x7FF0000000000002], dtype=np.int64).view(np.float64)[0]
GO_NAN = np.array([0x7FF8000000000001], dtype=np.int64).view(np.float64)[0]  # Go's math.NaN()


def objstore(bucket: Path) -> str:
    return f"{{type: FILESYSTEM, config: {{directory: {bucket}}}}}"


def metas(bucket: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in bucket.glob("*/meta.json")}


def resolution(m: dict) -> int:
    return m["thanos"]["downsample"]["resolution"]


def by_sources(bucket: Path, res: int) -> dict[tuple, str]:
    return {tuple(m["compaction"]["sources"]): u for u, m in metas(bucket).items() if resolution(m) == res}


def run_compact(thanos_bin: str, bucket: Path, work: Path) -> str:
    """One ``thanos compact`` run (no --wait): it compacts, then downsamples in two passes."""
    log = work / "compact.log"
    with open(log, "wb") as f:
        rc = subprocess.run([thanos_bin, "compact", f"--data-dir={work / 'compact-data'}",
                             f"--objstore.config={objstore(bucket)}", "--consistency-delay=0s",
                             "--delete-delay=0s", "--http-address=127.0.0.1:0", "--log.level=info"],
                            stdout=f, stderr=subprocess.STDOUT, timeout=600).returncode
    text = log.read_text()
    assert rc == 0, text[-4000:]
    return text


def read_block(path: Path) -> list[tuple[tuple, list[tuple[int, int, int, bytes]]]]:
    with BlockReader.open_dir(path) as r:
        return [(lbls, chunks) for lbls, _, chunks in r.series_chunks()]


def aggregates(chunks) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each aggregate's samples over all chunks: (timestamps, float bits)."""
    parts: dict[int, list] = {}
    for _, _, enc, data in chunks:
        assert enc == aggrchunk.AGGR_ENCODING
        for a, (e, sub) in aggrchunk.split(data).items():
            assert e == 0  # XOR
            t, v = decode_xor(sub)
            parts.setdefault(a, []).append((t, v.view(np.int64)))
    return {aggrchunk.AGGR_TYPES[a - 1]: (np.concatenate([p[0] for p in ps]), np.concatenate([p[1] for p in ps]))
            for a, ps in sorted(parts.items())}


def compare_blocks(ours: Path, theirs: Path) -> None:
    """Same series, same aggregates sample for sample, same chunk boundaries and bytes, same files."""
    a, b = read_block(ours), read_block(theirs)
    assert [s[0] for s in a] == [s[0] for s in b], "different series"
    for (lbls, ca), (_, cb) in zip(a, b):
        aa, ab = aggregates(ca), aggregates(cb)
        assert list(aa) == list(ab), (lbls, "different aggregates present")
        for name in aa:
            np.testing.assert_array_equal(aa[name][0], ab[name][0], err_msg=f"{lbls} {name}: timestamps")
            np.testing.assert_array_equal(aa[name][1], ab[name][1], err_msg=f"{lbls} {name}: float bits")
        assert [c[:2] for c in ca] == [c[:2] for c in cb], (lbls, "different chunk boundaries")
        for i, (x, y) in enumerate(zip(ca, cb)):
            assert x[3] == y[3], (lbls, f"chunk {i} bytes differ")
    # byte-identical chunks and series order: the segment files and the index come out the same
    seg_a, seg_b = sorted((ours / "chunks").iterdir()), sorted((theirs / "chunks").iterdir())
    assert [p.name for p in seg_a] == [p.name for p in seg_b]
    for x, y in zip(seg_a, seg_b):
        assert x.read_bytes() == y.read_bytes(), f"segment file {x.name} differs"
    assert (ours / "index").read_bytes() == (theirs / "index").read_bytes(), "index differs"
    compare_meta(json.loads((ours / "meta.json").read_text()), json.loads((theirs / "meta.json").read_text()))


def compare_meta(ours: dict, theirs: dict) -> None:
    """All of meta.json but the ULID and upload time (set at upload)."""
    for m in (ours, theirs):
        m.pop("ulid")
        m["thanos"].pop("upload_time")
    assert ours == theirs


def downsample(src: Path, out: Path, res: int, **kw):
    out.mkdir(parents=True, exist_ok=True)
    with BlockReader.open_dir(src) as r:
        return downsample_block(r, out, res, **kw)


# --- the year of bench blocks downsampled by a real thanos compact ---------------------------------

@pytest.fixture(scope="module")
def ours_5m(downsampled_bucket, tmp_path_factory) -> dict[str, Path]:
    """Our 5m block of every raw block of span >= 40h in the bucket, by raw ULID."""
    out = tmp_path_factory.mktemp("ours-5m")
    res = {}
    for u, m in sorted(metas(downsampled_bucket).items()):
        if resolution(m) == 0 and m["maxTime"] - m["minTime"] >= SPAN_5M:
            meta = downsample(downsampled_bucket / u, out, RES_5M)
            res[u] = out / meta.ulid
    assert res
    return res


def test_raw_to_5m_equals_thanos(downsampled_bucket, ours_5m):
    theirs = by_sources(downsampled_bucket, RES_5M)
    for raw, ours in ours_5m.items():
        src = tuple(metas(downsampled_bucket)[raw]["compaction"]["sources"])
        assert src in theirs, f"thanos compact made no 5m block of {raw}"
        compare_blocks(ours, downsampled_bucket / theirs[src])


def test_5m_to_1h_equals_thanos(downsampled_bucket, tmp_path):
    all_metas = metas(downsampled_bucket)
    theirs = by_sources(downsampled_bucket, RES_1H)
    n = 0
    for u, m in sorted(all_metas.items()):
        if resolution(m) == RES_5M and m["maxTime"] - m["minTime"] >= SPAN_1H:
            meta = downsample(downsampled_bucket / u, tmp_path, RES_1H)
            compare_blocks(tmp_path / meta.ulid, downsampled_bucket / theirs[tuple(m["compaction"]["sources"])])
            n += 1
    assert n


def test_thanos_reads_our_blocks(downsampled_bucket, ours_5m, thanos_bin, tmp_path):
    """thanos compact turns our 5m blocks into 1h blocks equal to those it made from its own 5m
    blocks, and ``thanos tools bucket verify`` is content with our blocks."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    for u, m in metas(downsampled_bucket).items():
        if resolution(m) == 0:
            shutil.copytree(downsampled_bucket / u, bucket / u)
    for p in ours_5m.values():
        shutil.copytree(p, bucket / p.name)
    ours_ulids = {p.name for p in ours_5m.values()}
    log = run_compact(thanos_bin, bucket, tmp_path)
    assert "level=error" not in log, log[-4000:]
    after = metas(bucket)
    # thanos made no 5m block of its own: ours cover the raw blocks
    assert {u for u, m in after.items() if resolution(m) == RES_5M} == ours_ulids
    theirs_1h = by_sources(downsampled_bucket, RES_1H)
    new_1h = by_sources(bucket, RES_1H)
    assert new_1h and set(new_1h) == set(theirs_1h)
    for src, u in new_1h.items():
        compare_blocks(bucket / u, downsampled_bucket / theirs_1h[src])

    verify = subprocess.run([thanos_bin, "tools", "bucket", "verify", f"--objstore.config={objstore(bucket)}",
                             "--issues=index_known_issues", "--issues=overlapped_blocks"],
                            capture_output=True, text=True, timeout=300)
    out = verify.stdout + verify.stderr
    assert verify.returncode == 0, out
    assert "verify task completed" in out, out
    assert "level=warn" not in out and "level=error" not in out, out


# --- hand-made edge cases, with a real thanos compact as the oracle ------------------------------

T0 = 1_735_689_600_000 + 150_000  # 2025-01-01T00:02:30Z: the block starts mid-window
RAW_LABELS = {"cluster": "edge"}
XOR5M_LABELS = {"cluster": "xor-in-5m"}


def edge_series() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20250101)
    s: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def put(name, t, v):
        s[name] = (np.asarray(t, dtype=np.int64), np.asarray(v, dtype=np.float64))

    # a counter scraped every 15 s for 10 days, reset now and then (twice in a row too)
    t = T0 + 7_000 + 15_000 * np.arange(10 * 24 * 240)
    inc = rng.exponential(3.0, len(t)).round(3)
    v = np.cumsum(inc)
    for r in sorted(rng.choice(len(t), 40, replace=False)):
        v[r:] -= v[r] - rng.uniform(0, 2)
    v[5000:5002] = [0.5, 0.25]
    v[5002:] += 10.0
    put("counter_resets", t, v)
    # a gauge with NaN, stale markers (single and in runs) and infinities, +Inf and -Inf in one window
    t = T0 + 30_000 * np.arange(3 * 24 * 120)
    v = rng.normal(100, 30, len(t))
    v[rng.choice(len(t), 60, replace=False)] = GO_NAN
    v[rng.choice(len(t), 60, replace=False)] = STALE
    v[400:460] = STALE
    v[1000], v[1003], v[2000] = np.inf, -np.inf, np.inf
    v[0], v[-1] = STALE, STALE
    put("gauge_nan_stale", t, v)
    put("single_sample", [T0 + 5 * D + 123_457], [42.0])
    t = np.arange(T0 + 1_234_567, T0 + 9 * D + 4_321, 47_000)
    put("mid_window", t, np.sin(np.arange(len(t)) / 50.0) * 1e3)
    t = np.arange(T0 + 11, T0 + 10 * D - 1, 433_000)  # one sample per 7m13s
    put("sparse", t, rng.integers(0, 1000, len(t)).astype(float))
    t = T0 + 2 * D + 1_000 * np.arange(6 * 3600)  # 1 s for six hours
    put("dense", t, np.cumsum(rng.random(len(t))))
    put("all_stale", T0 + 60_000 * np.arange(100), np.full(100, STALE))
    put("all_nan", T0 + 60_000 * np.arange(50), np.full(50, GO_NAN))
    t = T0 + 60_000 * np.arange(3000)
    v = -rng.random(3000) * 10
    v[::7] = -0.0
    v[::11] = 0.0
    put("negative_and_zeros", t, v)
    t = T0 + 20_000 * np.arange(20000)
    v = 1e16 + np.arange(20000) * 0.7
    v[15000:15010] = 1.7e308
    put("big_floats", t, v)
    t = np.concatenate([T0 + 10_000 * np.arange(8000), T0 + 8 * D + 10_000 * np.arange(5000)])
    put("gap_of_days", t, np.arange(len(t), dtype=float) % 977)
    return s


def write_raw_edge_block(out: Path) -> Path:
    """The edge series as a raw block (plus one series whose first chunk goes back in time and
    repeats timestamps, which only a hand-made chunk can hold)."""
    series = edge_series()
    names = sorted(series)
    symbols = {"__name__", "back_in_time"} | set(names)
    w = StreamBlockWriter(out, symbols, min_time=T0, max_time=T0 + SPAN_1H,
                          thanos=ThanosMeta(labels=dict(RAW_LABELS), source="test"))
    total = 0
    back_t = np.array([T0 + 60_000, T0 + 120_000, T0 + 90_000, T0 + 150_000, T0 + 150_000, T0 + 400_000,
                       T0 + 350_000, T0 + 700_000], dtype=np.int64)
    back_v = np.array([1.0, 5.0, 3.0, 2.0, 7.0, 1.0, 9.0, 4.0])
    with w:
        rows = [("back_in_time", None)] + [(n, series[n]) for n in names]
        for name, tv in sorted(rows, key=lambda r: r[0]):
            lbls = (("__name__", name),)
            if tv is None:
                t2 = T0 + 2 * H + 30_000 * np.arange(200)
                v2 = np.arange(200.0)
                chunks = [(int(back_t[0]), int(back_t[-1]), 1, encode_xor(back_t, back_v)),
                          (int(t2[0]), int(t2[-1]), 1, encode_xor(t2, v2))]
                total += len(back_t) + len(t2)
            else:
                t, v = tv
                bounds = cut_fixed(t)
                buf, offs = encode_xor_many(t, v, bounds)
                chunks = [(int(t[a]), int(t[b - 1]), 1, buf[offs[i]:offs[i + 1]])
                          for i, (a, b) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist()))]
                total += len(t)
            w.add_series(lbls, chunks)
        meta = w.write()
    # as a Prometheus 3 compactor writes it: Thanos' downsampler copies these stats unchanged
    meta.stats.num_float_samples = total
    write_meta(out / meta.ulid, meta)
    return out / meta.ulid


def write_xor_in_5m_block(src_5m: Path, raw: Path, out: Path) -> Path:
    """A 5m block like those thanos-io/thanos#5272 left: some series' chunks are XOR chunks of raw
    samples instead of aggregate chunks, some of them empty."""
    with BlockReader.open_dir(raw) as r:
        raw_series = {lbls: (t, v) for lbls, t, v in r.series()}
    src = read_block(src_5m)
    symbols = {"__name__", "only_an_empty_xor_chunk"} | {v for lbls, _ in src for _, v in lbls}
    w = StreamBlockWriter(out, symbols, min_time=T0, max_time=T0 + SPAN_1H,
                          thanos=ThanosMeta(labels=dict(XOR5M_LABELS), downsample_resolution=RES_5M, source="test"))
    rows = []
    with w:
        for i, (lbls, chunks) in enumerate(src):
            t, v = raw_series[lbls]
            if i % 3 == 0:  # every third series: XOR chunks only, one empty
                bounds = cut_fixed(t, 500, None)
                buf, offs = encode_xor_many(t, v, bounds)
                new = [(int(t[a]), int(t[b - 1]), 1, buf[offs[j]:offs[j + 1]])
                       for j, (a, b) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist()))]
                if len(new) > 1 and new[1][0] - new[0][1] > 2:
                    new.insert(1, (new[0][1] + 1, new[0][1] + 1, 1, b"\x00\x00"))
            elif i % 3 == 1 and len(chunks) > 2:  # the second aggregate chunk swapped for its raw samples
                mn, mx = chunks[1][:2]
                sel = (t > chunks[0][1]) & (t < chunks[2][0])
                tt, vv = t[sel], v[sel]
                new = list(chunks)
                new[1] = (int(tt[0]), int(tt[-1]), 1, encode_xor(tt, vv)) if len(tt) else (mn, mx, 1, b"\x00\x00")
            else:
                new = chunks
            rows.append((lbls, new))
        rows.append(((("__name__", "only_an_empty_xor_chunk"),), [(T0 + H, T0 + H, 1, b"\x00\x00")]))
        for lbls, new in sorted(rows, key=lambda r: r[0]):
            w.add_series(lbls, new)
        meta = w.write()
    return out / meta.ulid


@pytest.fixture(scope="module")
def edge(tmp_path_factory, thanos_bin):
    """A bucket with the raw edge block and the XOR-in-5m block, after one ``thanos compact``."""
    work = tmp_path_factory.mktemp("downsample-edge")
    bucket = work / "bucket"
    bucket.mkdir()
    raw = write_raw_edge_block(bucket)
    ours5 = downsample(raw, work / "ours", RES_5M)
    xor5m = write_xor_in_5m_block(work / "ours" / ours5.ulid, raw, bucket)
    log = run_compact(thanos_bin, bucket, work)
    assert "level=error" not in log, log[-4000:]
    return {"bucket": bucket, "raw": raw, "xor5m": xor5m, "work": work, "log": log}


def test_edge_raw_to_5m_equals_thanos(edge, tmp_path):
    theirs = by_sources(edge["bucket"], RES_5M)[(edge["raw"].name,)]
    meta = downsample(edge["raw"], tmp_path, RES_5M)
    assert meta.stats.num_float_samples == read_meta(edge["raw"]).stats.num_float_samples
    names = [dict(lbls)["__name__"] for lbls, _ in read_block(tmp_path / meta.ulid)]
    assert "all_stale" not in names and "all_nan" not in names and "single_sample" in names
    compare_blocks(tmp_path / meta.ulid, edge["bucket"] / theirs)


def test_edge_5m_to_1h_equals_thanos(edge, tmp_path):
    b = edge["bucket"]
    five = b / by_sources(b, RES_5M)[(edge["raw"].name,)]
    theirs = by_sources(b, RES_1H)[(edge["raw"].name,)]
    meta = downsample(five, tmp_path, RES_1H)
    compare_blocks(tmp_path / meta.ulid, b / theirs)


def test_edge_xor_chunks_in_5m_block_equal_thanos(edge, tmp_path):
    b = edge["bucket"]
    theirs = by_sources(b, RES_1H)[(edge["xor5m"].name,)]
    assert "got an empty" in edge["log"]  # thanos met the empty XOR chunk too
    meta = downsample(edge["xor5m"], tmp_path, RES_1H)
    compare_blocks(tmp_path / meta.ulid, b / theirs)


def test_batching_and_progress_do_not_change_the_output(edge, tmp_path):
    calls = []
    a = downsample(edge["raw"], tmp_path / "a", RES_5M, progress=lambda d, t: calls.append((d, t)))
    b = downsample(edge["raw"], tmp_path / "b", RES_5M, batch_series=3, batch_samples=1000)
    n = a.stats.num_series + 2  # all_stale and all_nan give no output series
    assert calls[-1] == (n, n) and len(calls) == 1
    assert (tmp_path / "a" / a.ulid / "chunks" / "000001").read_bytes() == \
        (tmp_path / "b" / b.ulid / "chunks" / "000001").read_bytes()
    assert (tmp_path / "a" / a.ulid / "index").read_bytes() == (tmp_path / "b" / b.ulid / "index").read_bytes()
    calls.clear()
    downsample(edge["raw"], tmp_path / "c", RES_5M, batch_series=5, progress=lambda d, t: calls.append((d, t)))
    assert [d for d, _ in calls] == list(range(5, n, 5)) + [n] and {t for _, t in calls} == {n}


# --- errors ---------------------------------------------------------------------------------------

def small_block(out: Path, chunks_of: dict[str, list], res: int = 0) -> Path:
    w = StreamBlockWriter(out, {"__name__"} | set(chunks_of), min_time=0, max_time=2 * D,
                          thanos=ThanosMeta(labels={"cluster": "x"}, downsample_resolution=res, source="test"))
    with w:
        for name in sorted(chunks_of):
            w.add_series((("__name__", name),), chunks_of[name])
        meta = w.write()
    return out / meta.ulid


def xor_chunk(n: int, t0: int = 1000):
    t = t0 + 15_000 * np.arange(n)
    return (int(t[0]), int(t[-1]), 1, encode_xor(t, np.arange(float(n))))


def test_truncated_chunk_names_the_block(tmp_path):
    blk = small_block(tmp_path / "in", {"a": [xor_chunk(120)], "b": [xor_chunk(120, 10 * H)]})
    seg = blk / "chunks" / "000001"
    seg.write_bytes(seg.read_bytes()[:-100])
    with pytest.raises(CorruptBlockError) as e:
        downsample(blk, tmp_path / "out", RES_5M)
    assert blk.name in str(e.value)
    assert not list((tmp_path / "out").iterdir())  # nothing partial left behind


def test_bad_xor_data_names_block_and_series(tmp_path):
    t0, t1, _, data = xor_chunk(10)
    bad = b"\x00\x32" + data[2:]  # claims 50 samples, holds 10
    blk = small_block(tmp_path / "in", {"fine": [xor_chunk(120)], "broken": [(t0, t1, 1, bad)]})
    with pytest.raises(CorruptChunkError) as e:
        downsample(blk, tmp_path / "out", RES_5M)
    msg = str(e.value)
    assert blk.name in msg and "chunks/000001" in msg and 'broken' in msg, msg
    assert not list((tmp_path / "out").iterdir())


def test_native_histograms_are_not_implemented(tmp_path):
    blk = small_block(tmp_path / "in", {"a": [xor_chunk(120)], "h": [(1000, 2000, 2, b"\x00\x01\x02\x03")]})
    with pytest.raises(UnsupportedChunkError) as e:
        downsample(blk, tmp_path / "out", RES_5M)
    assert isinstance(e.value, NotImplementedError) and isinstance(e.value, DownsampleError)
    assert blk.name in str(e.value) and '__name__="h"' in str(e.value) and "histogram" in str(e.value)


def test_invalid_aggregate_chunk_names_block_and_series(tmp_path):
    good = downsample(small_block(tmp_path / "raw", {"a": [xor_chunk(120)]}), tmp_path / "5m", RES_5M)
    (_, [(mn, mx, enc, data)]), = read_block(tmp_path / "5m" / good.ulid)
    broken = b"\xff\xff\xff\x7f" + data[1:]  # count sub-chunk length past the end
    blk = small_block(tmp_path / "in", {"a": [(mn, mx, enc, data)], "b": [(mn, mx, enc, broken)]}, res=RES_5M)
    with pytest.raises(CorruptChunkError) as e:
        downsample(blk, tmp_path / "out", RES_1H)
    msg = str(e.value)
    assert blk.name in msg and '__name__="b"' in msg and "invalid size of count" in msg, msg


def test_resolution_pairs(tmp_path):
    blk = small_block(tmp_path / "in", {"a": [xor_chunk(120)]})
    with pytest.raises(ValueError, match=blk.name):
        downsample(blk, tmp_path / "out", RES_1H)
