"""The per-tenant TSDB (pythanos.tsdb.db): head + WAL + blocks in one directory, as Prometheus'
tsdb.DB lays them out.

1. Append, close, reopen: the same answers after every reopen (many cycles, and random requests
   with rejections, duplicates and late samples), rejected and duplicate samples never reach the
   WAL, the Series record built from the blob columns is the encoder's; statuses, malformed blobs,
   a failed (disk full) WAL write.
2. Crash safety: a child process appends numbered batches (compaction running) and acknowledges
   each after ``append`` returned; SIGKILL at random points; every acknowledged sample is there
   exactly once after reopen, the unacknowledged batch whole or not at all. The same with late
   samples going to the WBL and out-of-order compactions.
3. Compaction over more than 3h: blocks appear (promtool accepts them), the head shrinks, the
   WAL is checkpointed and its old segments go; reopen still has every sample once; compaction
   beside a concurrent writer; out-of-order samples through the WBL into out-of-order blocks.
4. Real peers: a Prometheus 3.9.1 opened on our directory (blocks + WAL with a checkpoint, native
   histograms; and our WBL) answers the same raw samples as our ``series()``; our TSDB opens a
   directory Prometheus wrote; both take the same directory lock; the shipper uploads our blocks
   and ``thanos tools bucket verify`` (v0.42.4) finds them sound.
5. Retention, block loading (non-ULID, unfinished and unreadable block dirs), unknown refs and
   repeated series in the WAL, a damaged segment, reads concurrent with appends, histograms and
   exemplars kept through checkpoints, metrics on a shared registry.
6. Figures (printed, not asserted): append throughput for 2000- and 100k-series requests,
   replay time of 100k series x 240 samples, head memory, flush time.
"""
from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from pythanos.tsdb import wal as W
from pythanos.tsdb import walrecords as R
from pythanos.tsdb.chunkenc import decode_xor
from pythanos.tsdb.db import TSDB, series_record
from pythanos.tsdb.histchunk import decode_histogram_chunk
from pythanos.tsdb.head import BAD_REF, DUP_OK, OK, OUT_OF_BOUNDS, OUT_OF_ORDER, blobs_from_labels
from pythanos.tsdb.labels import Matcher

H = 3600 * 1000
H2 = 2 * H
T0 = 1_700_000_000_000
REPO_COMPONENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "components")


def samples_of(db: TSDB, matchers=(), mint=-(1 << 63), maxt=(1 << 63) - 1) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """labels -> (t, v) decoded from every chunk series() returns (chunks in time order)."""
    out = {}
    for lbls, chunks in db.series(matchers, mint, maxt):
        ts, vs = [], []
        last_max = None
        for cmint, cmaxt, enc, data in chunks:
            assert enc == 1
            if last_max is not None:
                assert cmint > last_max, (lbls, "chunks overlap or out of order")
            last_max = cmaxt
            t, v = decode_xor(data)
            assert t[0] == cmint and t[-1] == cmaxt
            ts.append(t)
            vs.append(v)
        out[lbls] = (np.concatenate(ts), np.concatenate(vs))
    return out


def labelsets(n: int, name: str = "m") -> list[dict]:
    return [{"__name__": name, "i": f"{i:05d}", "z": ["a", "é✓", 'q"b'][i % 3]} for i in range(n)]


def key(d: dict) -> tuple:
    return tuple(sorted(d.items()))


# ---------------------------------------------------------------------------- 1. basics


def test_series_record_is_the_encoders():
    rng = np.random.default_rng(3)
    buf, offs = blobs_from_labels(labelsets(50))
    for _ in range(20):
        idx = np.sort(rng.choice(50, int(rng.integers(0, 50)), replace=False))
        refs = rng.integers(1, 1 << 62, len(idx))
        want = R.encode_series(refs, [buf[offs[i]:offs[i + 1]] for i in idx])
        assert series_record(refs, buf, np.asarray(offs), idx) == want


def test_append_close_reopen_cycles(tmp_path):
    rng = np.random.default_rng(5)
    n = 300
    sets = labelsets(n)
    buf, offs = blobs_from_labels(sets)
    model: dict[tuple, list[tuple[int, float]]] = {key(s): [] for s in sets}
    t = T0
    answers = None
    for cycle in range(12):
        db = TSDB.open(tmp_path / "db", wal_segment_size=64 * 1024)
        if answers is not None:  # the reopened TSDB answers as before it was closed
            assert samples_equal(samples_of(db), answers)
            assert db.label_names() == ["__name__", "i", "z"]
            assert db.label_values("z") == sorted(["a", "é✓", 'q"b'])
            assert db.replay_stats["unknown_sample_refs"] == 0
        for _ in range(5):
            pick = np.sort(rng.choice(n, 120, replace=False))  # a request carries some of the series
            sbuf = b"".join(buf[offs[i]:offs[i + 1]] for i in pick)
            soff = np.zeros(len(pick) + 1, dtype=np.int64)
            np.cumsum([offs[i + 1] - offs[i] for i in pick], out=soff[1:])
            per = 3
            sidx = np.repeat(np.arange(len(pick)), per)
            ts = t + np.tile(np.arange(per) * 1000, len(pick))
            vs = rng.normal(size=len(sidx))
            res = db.append(sbuf, soff, sidx, ts, vs)
            assert (res.status == OK).all()
            for j, p in enumerate(pick.tolist()):
                model[key(sets[p])] += list(zip(ts[j * per:(j + 1) * per].tolist(), vs[j * per:(j + 1) * per].tolist()))
            # rejected samples (older than the series' last sample) and equal duplicates stay out of the WAL
            bad = db.append(sbuf, soff, np.arange(len(pick)), np.full(len(pick), t - 1), np.zeros(len(pick)))
            assert (bad.status == OUT_OF_ORDER).all()
            last = np.arange(len(pick)) * per + per - 1
            dup = db.append(sbuf, soff, sidx[last], ts[last], vs[last])
            assert (dup.status == DUP_OK).all()
            t += per * 1000
        answers = samples_of(db)
        want = {k: (np.array([a for a, _ in v], dtype=np.int64), np.array([b for _, b in v])) for k, v in model.items() if v}
        assert samples_equal(answers, want)
        db.close()
    # every sample in the WAL exactly once
    wal_samples = 0
    for rtype, body in W.replay(tmp_path / "db" / "wal"):
        if rtype == R.SAMPLES:
            wal_samples += len(body[0])
    assert wal_samples == sum(len(v) for v in model.values())


def samples_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        if not (np.array_equal(a[k][0], b[k][0]) and np.array_equal(a[k][1].view(np.uint64), b[k][1].view(np.uint64))):
            return False
    return True


def test_statuses_refs_and_malformed_blobs(tmp_path):
    with TSDB.open(tmp_path / "db") as db:
        good, offs = blobs_from_labels([{"__name__": "a"}, {"__name__": "b"}])
        bad = b"\x02\x01b\x00\x01a\x00"  # names not sorted
        buf = good + bad
        offs = np.r_[offs, len(buf)]
        res = db.append(buf, offs, [0, 1, 2, 0], [T0, T0, T0, T0 - H2], [1.0, 2.0, 3.0, 4.0])
        assert res.refs[0] > 0 and res.refs[1] > 0 and res.refs[2] == 0
        assert res.status.tolist() == [OK, OK, BAD_REF, OUT_OF_BOUNDS]
        assert res.created == 2
    with TSDB.open(tmp_path / "db") as db:
        got = samples_of(db)
        assert list(got) == [(("__name__", "a"),), (("__name__", "b"),)]
        assert db.replay_stats["samples"] == 2


# ---------------------------------------------------------------------------- 2. crash safety

CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    from pythanos.tsdb.db import TSDB
    from pythanos.tsdb.head import blobs_from_labels

    path, ack, start, NS, PER, STEP, T0 = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
    buf, offs = blobs_from_labels([{"__name__": "crash", "s": str(i)} for i in range(NS)])
    db = TSDB.open(path, wal_segment_size=128 * 1024)
    fd = os.open(ack, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sidx = np.repeat(np.arange(NS), PER)
    k = start
    while True:
        ts = T0 + k * PER * STEP + np.tile(np.arange(PER) * STEP, NS)
        vs = (k * 1000 + sidx).astype(np.float64) + np.tile(np.arange(PER), NS) / 10
        res = db.append(buf, offs, sidx, ts, vs)
        # the first batch after a restart may be the unacknowledged one, logged before the kill:
        # then none of it is new (last samples equal duplicates, earlier ones out of order)
        again = k == start and not (res.status == 0).any() and (res.status <= 2).all()
        if not ((res.status == 0).all() or again):
            raise SystemExit(f"batch {k}: statuses {np.unique(res.status)}")
        os.write(fd, f"{k}\\n".encode())
        os.fsync(fd)
        db.compact()
        k += 1
""")


def expected_batch(k: int, ns: int, per: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(t, v) of series 0..ns-1 in batch k, shape (ns, per)."""
    t = T0 + k * per * step + np.arange(per) * step
    v = (k * 1000 + np.arange(ns))[:, None] + np.arange(per)[None, :] / 10
    return np.broadcast_to(t, (ns, per)), v


def read_acks(path) -> list[int]:
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def test_sigkill_loses_no_acknowledged_sample(tmp_path):
    ns, per, step = 500, 4, 60_000  # 4 minutes of sample time per batch: compactions and checkpoints happen
    path, ack = tmp_path / "db", tmp_path / "acks"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": REPO_COMPONENTS + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rnd = random.Random(7)
    acked = -1
    trials = 12
    for trial in range(trials):
        start = acked + 1
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(ack), str(start), str(ns), str(per),
                                 str(step), str(T0)], env=env, stderr=subprocess.PIPE)
        target = start + rnd.randint(1, 25)
        deadline = time.monotonic() + 120
        while True:
            acks = read_acks(ack)
            if acks and acks[-1] >= target:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "child made no progress"
            time.sleep(0.002 * rnd.random())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stderr.close()
        acked = read_acks(ack)[-1]
        db = TSDB.open(path, wal_segment_size=128 * 1024)
        try:
            got = samples_of(db)
            assert len(got) == ns
            # the batch after the last acknowledged one may have been logged: whole, or not at all
            tmax = max(int(t[-1]) for t, _ in got.values())
            extra = tmax >= T0 + (acked + 1) * per * step
            last = acked + 1 if extra else acked
            for s in range(ns):
                t, v = got[(("__name__", "crash"), ("s", str(s)))]
                want_t = np.concatenate([expected_batch(k, ns, per, step)[0][s] for k in range(last + 1)])
                want_v = np.concatenate([expected_batch(k, ns, per, step)[1][s] for k in range(last + 1)])
                assert np.array_equal(t, want_t), (trial, s, len(t), len(want_t))
                assert np.array_equal(v, want_v), (trial, s)
            if trial == trials - 1:
                assert db.blocks(), "the loop ran long enough to cut blocks"
                assert W.last_checkpoint(path / "wal") is not None
        finally:
            db.close()


# ---------------------------------------------------------------------------- 3. compaction


def feed(db: TSDB, sets: list[dict], t: np.ndarray, vals: np.ndarray, per_request: int) -> None:
    """Send t (one grid for all series) in requests of per_request timestamps each."""
    buf, offs = blobs_from_labels(sets)
    n = len(sets)
    for a in range(0, len(t), per_request):
        tt = t[a:a + per_request]
        sidx = np.repeat(np.arange(n), len(tt))
        res = db.append(buf, offs, sidx, np.tile(tt, n), vals[:, a:a + per_request].ravel())
        assert (res.status == OK).all()


def test_compaction_checkpoint_reopen_and_promtool(tmp_path, promtool_bin):
    rng = np.random.default_rng(1)
    sets = labelsets(200, "comp")
    start = (T0 // H2) * H2 + 1234
    t = start + np.arange(0, 7 * H, 30_000, dtype=np.int64)  # 7h of 30s samples
    vals = rng.normal(size=(len(sets), len(t)))
    db = TSDB.open(tmp_path / "db", wal_segment_size=64 * 1024)
    seen_blocks, head_mins = [], []
    for a in range(0, len(t), 120):  # an hour at a time, compacting after each
        feed(db, sets, t[a:a + 120], vals[:, a:a + 120], 4)
        seen_blocks += db.compact()
        head_mins.append(db.head.min_time)
    assert len(seen_blocks) == 2  # head spans > 3h twice: [start, 2h boundary), then the next 2h
    assert [m.ulid for m in db.blocks()] == seen_blocks
    assert head_mins[-1] > start and db.head.min_time >= db.blocks()[-1].max_time
    cp = W.last_checkpoint(tmp_path / "db" / "wal")
    assert cp is not None
    first, _ = W.segment_range(tmp_path / "db" / "wal")
    assert first == cp[0] + 1  # the checkpointed segments are gone
    want = {key(s): (t, vals[i]) for i, s in enumerate(sets)}
    assert samples_equal(samples_of(db), want)
    db.close()
    db = TSDB.open(tmp_path / "db")
    assert samples_equal(samples_of(db), want)
    assert db.replay_stats["discarded_before_blocks"] > 0 or db.replay_stats["samples"] < len(t) * len(sets)
    # a query inside one block, across block and head, and in the head only
    b0 = db.blocks()[0]
    for mint, maxt in ((b0.min_time, b0.max_time - 1), (b0.max_time - H, b0.max_time + H), (db.head.min_time, t[-1])):
        got = samples_of(db, [Matcher.eq("i", "00007")], mint, maxt)
        (tt, vv), = got.values()
        sel = (t >= mint) & (t <= maxt)
        # whole chunks come back: they cover the range, and every sample in range is there
        inside = (tt >= mint) & (tt <= maxt)
        assert np.array_equal(tt[inside], t[sel])
    assert db.min_time == start and db.max_time == t[-1]
    flushed = db.flush()
    assert flushed and db.head.num_series == 0
    assert samples_equal(samples_of(db), want)
    db.close()
    db = TSDB.open(tmp_path / "db")
    assert samples_equal(samples_of(db), want)
    assert db.replay_stats["samples"] == 0
    db.close()
    for m in json_metas(tmp_path / "db"):
        res = subprocess.run([promtool_bin, "tsdb", "analyze", str(tmp_path / "db"), m["ulid"]], capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stderr


def json_metas(d) -> list[dict]:
    out = []
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name, "meta.json")
        if os.path.isfile(p):
            with open(p) as f:
                out.append(json.load(f))
    return out


# ---------------------------------------------------------------------------- 4. a real Prometheus


def prom_query(url: str, q: str, at: float) -> list[dict]:
    qs = urllib.parse.urlencode({"query": q, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{qs}", timeout=60) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_reads_our_directory(tmp_path, prometheus3_bin, prometheus_factory):
    from pythanos.remote.write import HistogramSample

    rng = np.random.default_rng(9)
    now = int(time.time() * 1000)
    sets = labelsets(40, "promdb")
    t = np.arange(now - 5 * H, now - 60_000, 15_000, dtype=np.int64)
    vals = np.round(rng.normal(0, 100, size=(len(sets), len(t))), 3)
    vals[0, 5] = np.nan
    data = tmp_path / "data"
    db = TSDB.open(data, wal_segment_size=64 * 1024)
    blocks = []
    for a in range(0, len(t), 240):
        feed(db, sets, t[a:a + 240], vals[:, a:a + 240], 40)
        blocks += db.compact()
    assert blocks and W.last_checkpoint(data / "wal") is not None
    hbuf, hoffs = blobs_from_labels([{"__name__": "promdb_hist"}])
    ht = [now - 30 * 60_000 + k * 60_000 for k in range(10)]
    # integer histogram: zero bucket 1, two positive buckets 1 and 1+k (deltas 1, k)
    hs = [HistogramSample(series=0, timestamp=x, is_float=False, count=3 + k, sum=1.5 * k, schema=0,
                          zero_threshold=1e-128, zero_count=1, positive_spans=[(0, 2)], positive_buckets=[1, k],
                          negative_spans=[], negative_buckets=[], reset_hint=0) for k, x in enumerate(ht)]
    assert (db.append_histograms(hbuf, hoffs, hs) == OK).all()
    ours = samples_of(db, [Matcher.eq("__name__", "promdb")])
    (hl, hchunks), = db.series([Matcher.eq("__name__", "promdb_hist")])
    assert {c[2] for c in hchunks} == {2}  # the head keeps them as histogram chunks
    db.close()
    assert len(ours) == len(sets)

    prom = prometheus_factory(tsdb_path=data, binary=prometheus3_bin,
                              extra_args=["--storage.tsdb.retention.time=100y"])
    at = (now + 1000) / 1000
    got = prom_query(prom.url, "promdb[6h]", at)
    assert len(got) == len(sets)
    for r in got:
        k = tuple(sorted(r["metric"].items()))
        tt, vv = ours[k]
        assert [int(round(float(a) * 1000)) for a, _ in r["values"]] == tt.tolist()
        pv = np.array([float(b) for _, b in r["values"]])
        assert np.array_equal(np.isnan(pv), np.isnan(vv)) and np.array_equal(pv[~np.isnan(pv)], vv[~np.isnan(vv)])
    (hres,) = prom_query(prom.url, "promdb_hist[1h]", at)
    assert [int(round(x * 1000)) for x, _ in hres["histograms"]] == ht
    assert [float(h["count"]) for _, h in hres["histograms"]] == [float(h.count) for h in hs]


# ---------------------------------------------------------------------------- 5. retention, loading, replay


def test_retention_deletes_old_blocks_never_the_newest(tmp_path):
    sets = labelsets(10, "ret")
    start = (T0 // H2) * H2
    t = start + np.arange(0, 12 * H, 60_000, dtype=np.int64)
    vals = np.ones((len(sets), len(t)))
    db = TSDB.open(tmp_path / "keep", retention_ms=0)
    for a in range(0, len(t), 60):
        feed(db, sets, t[a:a + 60], vals[:, a:a + 60], 60)
        db.compact()
    all_blocks = [m.ulid for m in db.blocks()]
    assert len(all_blocks) == 5
    db.close()
    db = TSDB.open(tmp_path / "ret", retention_ms=4 * H)
    for a in range(0, len(t), 60):
        feed(db, sets, t[a:a + 60], vals[:, a:a + 60], 60)
        db.compact()
        metas = db.blocks()
        if metas:
            newest = max(m.max_time for m in metas)
            assert all(newest - m.max_time < 4 * H for m in metas)
            on_disk = sorted(n for n in os.listdir(tmp_path / "ret") if n not in ("wal", "lock"))
            assert on_disk == sorted(m.ulid for m in metas)
    assert [m.max_time - m.min_time for m in db.blocks()] == [H2, H2]
    db.close()
    # retention shorter than a block: only the newest stays
    db = TSDB.open(tmp_path / "ret", retention_ms=1)
    db.compact()
    assert len(db.blocks()) == 1
    db.close()


def test_block_dirs_loaded_skipped_and_cleaned(tmp_path, caplog):
    sets = labelsets(5, "ld")
    start = (T0 // H2) * H2
    t = start + np.arange(0, 5 * H, 60_000, dtype=np.int64)
    with TSDB.open(tmp_path / "db") as db:
        feed(db, sets, t, np.ones((5, len(t))), 30)
        (u,) = db.compact()
    d = tmp_path / "db"
    (d / "not-a-block").mkdir()
    (d / "01ARZ3NDEKTSV4RRFFQ69G5FAV.tmp-for-creation").mkdir()
    broken = d / "01ARZ3NDEKTSV4RRFFQ69G5FAW"
    broken.mkdir()
    (broken / "meta.json").write_text("{not json")
    with caplog.at_level("ERROR", logger="pythanos.tsdb.db"):
        db = TSDB.open(d)
    assert [m.ulid for m in db.blocks()] == [u]
    (rec,) = [r for r in caplog.records if r.getMessage() == "Skipping unreadable block"]
    assert "01ARZ3NDEKTSV4RRFFQ69G5FAW" in rec.block and "JSON" in rec.err
    assert not (d / "01ARZ3NDEKTSV4RRFFQ69G5FAV.tmp-for-creation").exists()
    assert (d / "not-a-block").exists()
    want = {key(s): (t, np.ones(len(t))) for s in sets}
    assert samples_equal(samples_of(db), want)
    db.close()


def test_replay_counts_unknown_refs_and_maps_repeated_series(tmp_path):
    wal_dir = tmp_path / "db" / "wal"
    buf, offs = blobs_from_labels([{"__name__": "x"}, {"__name__": "y"}])
    x, y = buf[offs[0]:offs[1]], buf[offs[1]:offs[2]]
    w = W.WAL(wal_dir)
    w.log([R.encode_series([5], [x]), R.encode_samples([5, 9, 9], [T0, T0, T0 + 1], [1.0, 2.0, 3.0]),
           R.encode_series([7], [x]),  # the same labels again under another ref (Prometheus' multiRef)
           R.encode_samples([7], [T0 + 10], [4.0]),
           R.encode_series([7], [y]),  # ref 7 reused for other labels: its samples are y's from here on
           R.encode_samples([7, 5], [T0 + 20, T0 + 20], [5.0, 6.0])])
    w.close()
    with TSDB.open(tmp_path / "db") as db:
        assert db.replay_stats["unknown_sample_refs"] == 2
        got = samples_of(db)
        tx, vx = got[(("__name__", "x"),)]
        assert tx.tolist() == [T0, T0 + 10, T0 + 20] and vx.tolist() == [1.0, 4.0, 6.0]
        ty, vy = got[(("__name__", "y"),)]
        assert ty.tolist() == [T0 + 20] and vy.tolist() == [5.0]
        b2, o2 = blobs_from_labels([{"__name__": "z"}])
        assert db.append(b2, o2, [0], [T0], [1.0]).refs[0] not in (5, 7)


def test_damaged_segment_is_cut_and_the_rest_kept(tmp_path):
    sets = labelsets(20, "dmg")
    t = T0 + np.arange(0, 1000 * 1000, 1000, dtype=np.int64)
    vals = np.random.default_rng(2).normal(size=(20, len(t)))
    with TSDB.open(tmp_path / "db", wal_segment_size=32 * 1024) as db:
        feed(db, sets, t, vals, 5)
    first, last = W.segment_range(tmp_path / "db" / "wal")
    assert last - first >= 3
    mid = W.segment_name(tmp_path / "db" / "wal", first + 2)
    with open(mid, "r+b") as f:  # flip bytes inside the first record of a middle segment
        f.seek(100)
        b = f.read(8)
        f.seek(100)
        f.write(bytes(x ^ 0xFF for x in b))
    db = TSDB.open(tmp_path / "db")
    assert "repaired" in db.replay_stats
    got = samples_of(db)
    n = {len(tt) for tt, _ in got.values()}
    assert len(n) == 1 and 0 < n.pop() < len(t)  # a prefix of the requests, the same for all series
    assert W.segment_range(tmp_path / "db" / "wal")[1] == first + 3  # later segments gone, a new one started
    feed(db, sets, t[-1:] + 1000, np.ones((20, 1)), 1)
    db.close()
    with TSDB.open(tmp_path / "db") as db:
        assert "repaired" not in db.replay_stats


def test_reads_while_appending(tmp_path):
    sets = labelsets(500, "conc")
    buf, offs = blobs_from_labels(sets)
    db = TSDB.open(tmp_path / "db")
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                got = db.series([Matcher.re("i", "000.*")])
                counts = {len(c) for _, c in got}
                assert len(got) in (0, 100) and counts <= {1, 2, 3}
                db.label_values("i")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    th = [threading.Thread(target=reader) for _ in range(2)]
    for x in th:
        x.start()
    for k in range(300):
        res = db.append(buf, offs, np.arange(500), np.full(500, T0 + k * 1000), np.full(500, float(k)))
        assert (res.status == OK).all()
    stop.set()
    for x in th:
        x.join()
    assert not errors, errors[0]
    db.close()


def test_metrics_on_a_shared_registry(tmp_path):
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    a = TSDB.open(tmp_path / "a", registry=reg, metric_labels={"tenant": "a"})
    b = TSDB.open(tmp_path / "b", registry=reg, metric_labels={"tenant": "b"})
    buf, offs = blobs_from_labels([{"__name__": "m"}])
    a.append(buf, offs, [0], [T0], [1.0])
    assert reg.get_sample_value("prometheus_tsdb_blocks_loaded", {"tenant": "b"}) == 0
    assert reg.get_sample_value("prometheus_tsdb_wal_segment_current", {"tenant": "a"}) == 0
    assert reg.get_sample_value("prometheus_tsdb_data_replay_duration_seconds", {"tenant": "a"}) >= 0
    a.close()
    b.close()


# ---------------------------------------------------------------------------- 6. figures


def rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_figures_append_and_replay(tmp_path, capsys):
    """Append throughput through db.append (2000- and 100k-series requests), replay time of
    100k series x 240 samples, peak RSS. Printed, not asserted."""
    ns, nt = 100_000, 240
    buf, offs = blobs_from_labels([{"__name__": "fig", "job": f"j{i % 10}", "instance": f"host-{i:06d}"}
                                   for i in range(ns)])
    offs = np.asarray(offs)
    now = int(time.time() * 1000) - nt * 15_000
    lines = []
    db = TSDB.open(tmp_path / "small")
    reqs = [(buf[offs[a]:offs[a + 2000]], offs[a:a + 2001] - offs[a]) for a in range(0, ns, 2000)]
    spent = 0.0
    for k in range(nt):
        for rb, ro in reqs:
            ts = np.full(2000, now + k * 15_000, dtype=np.int64)
            t0 = time.perf_counter()
            db.append(rb, ro, np.arange(2000), ts, np.random.rand(2000))
            if k:
                spent += time.perf_counter() - t0
    n = (nt - 1) * ns
    lines.append(f"append, 2000-series requests: {n / spent:,.0f} samples/s, {spent / (n / 2000) * 1e3:.2f} ms/request")
    db.close()
    t0 = time.perf_counter()
    db = TSDB.open(tmp_path / "small")
    lines.append(f"replay {ns} series x {nt} samples: {time.perf_counter() - t0:.2f} s "
                 f"({db.replay_stats['samples'] / db.replay_stats['seconds'] / 1e6:.1f}M samples/s)")
    assert db.replay_stats["samples"] == ns * nt
    st = db.head.stats()
    kernel = sum(v for k, v in st.items() if k.endswith("_bytes"))
    lines.append(f"head after replay: {kernel / 1e6:.0f} MB in the kernel ({kernel / ns:.0f} B/series, "
                 f"chunk data {st['chunk_data_bytes'] / (ns * nt):.2f} B/sample), RSS now "
                 f"{rss_now_mb():.0f} MB")
    t0 = time.perf_counter()
    blocks = db.flush()
    lines.append(f"flush of the head into {len(blocks)} block(s) + checkpoint: {time.perf_counter() - t0:.2f} s")
    db.close()
    db = TSDB.open(tmp_path / "big")
    spent = 0.0
    for k in range(10):
        t0 = time.perf_counter()
        db.append(buf, offs, np.arange(ns), np.full(ns, now + k * 15_000), np.random.rand(ns))
        if k:
            spent += time.perf_counter() - t0
    lines.append(f"append, 100k-series requests: {9 * ns / spent:,.0f} samples/s, {spent / 9 * 1e3:.1f} ms/request")
    db.close()
    lines.append(f"peak RSS of the test process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_directory_lock_as_prometheus(tmp_path, prometheus3_bin, prometheus_factory):
    """Our TSDB and a real Prometheus 3.9.1 take the same lock: neither opens a directory the other has."""
    db = TSDB.open(tmp_path / "db")
    try:
        with pytest.raises(OSError, match="locked"):
            TSDB.open(tmp_path / "db")
        with pytest.raises(RuntimeError, match="lock DB directory"):
            prometheus_factory(tsdb_path=tmp_path / "db", binary=prometheus3_bin, ready_timeout=30)
    finally:
        db.close()
    db = TSDB.open(tmp_path / "db")  # closing released it
    db.close()
    prom = prometheus_factory(tsdb_path=tmp_path / "db", binary=prometheus3_bin, name="prom-holder")
    with pytest.raises(OSError, match="locked"):
        TSDB.open(tmp_path / "db")
    prom.stop()
    TSDB.open(tmp_path / "db").close()


def all_samples(db: TSDB, dedup: bool = False) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """labels -> (t, v) from every chunk, sorted by time; chunks may overlap (out-of-order blocks)
    but no timestamp may come twice, unless ``dedup``: an out-of-order sample with the timestamp
    of an in-order one is kept by Prometheus' head too, both end up in blocks (an out-of-order
    block overlapping an in-order one) and the querier's merge keeps one (here: the first chunk's)."""
    out = {}
    for lbls, chunks in db.series():
        ts, vs = zip(*(decode_xor(c[3]) for c in chunks))
        t, v = np.concatenate(ts), np.concatenate(vs)
        o = np.argsort(t, kind="stable")
        t, v = t[o], v[o]
        if dedup:
            first = np.r_[True, t[1:] != t[:-1]]
            t, v = t[first], v[first]
        assert (np.diff(t) > 0).all(), (lbls, "a timestamp twice")
        out[lbls] = (t, v)
    return out


def test_out_of_order_samples_go_to_the_wbl_and_blocks_once(tmp_path):
    """With an out-of-order window, late samples are logged to <dir>/wbl (as Prometheus' WBL), cut
    into out-of-order blocks after a head compaction, and the WBL dropped then: reopening at any
    point gives every sample once."""
    rng = np.random.default_rng(4)
    sets = labelsets(50, "ooo")
    buf, offs = blobs_from_labels(sets)
    start = (T0 // H2) * H2
    grid = start + np.arange(0, 7 * H, 60_000, dtype=np.int64)
    late = grid[(grid - start) % 120_000 == 0] + 30_000  # every other minute, sent 20 minutes late
    model = {key(s): ([], []) for s in sets}
    path = tmp_path / "db"
    db = TSDB.open(path, ooo_window_ms=H, wal_segment_size=64 * 1024)
    n_ooo_blocks = replayed_ooo = 0
    for k, t in enumerate(grid.tolist()):
        batch_t = [t] + [x for x in late.tolist() if t - 20 * 60_000 <= x < t - 20 * 60_000 + 60_000]
        for bt in batch_t:
            v = rng.normal(size=len(sets))
            res = db.append(buf, offs, np.arange(len(sets)), np.full(len(sets), bt), v)
            assert set(res.status.tolist()) <= {OK, 6}, res.status
            for i, s in enumerate(sets):
                model[key(s)][0].append(bt)
                model[key(s)][1].append(v[i])
        if k % 30 == 29:
            new = db.compact()
            n_ooo_blocks += sum(1 for m in db.blocks() if m.ulid in new and "from-out-of-order" in m.compaction.hints)
        if k % 97 == 96:  # reopen now and then: WAL + WBL replay
            db.close()
            db = TSDB.open(path, ooo_window_ms=H, wal_segment_size=64 * 1024)
            assert db.replay_stats["rejected_samples"] == 0
            replayed_ooo += db.replay_stats["ooo_samples"]
    want = {}
    for kk, (t, v) in model.items():
        t, v = np.array(t), np.array(v)
        o = np.argsort(t)
        want[kk] = (t[o], v[o])
    assert n_ooo_blocks >= 2 and replayed_ooo > 0
    assert samples_equal(all_samples(db), want)
    db.close()
    db = TSDB.open(path, ooo_window_ms=H)
    assert samples_equal(all_samples(db), want)
    db.flush()
    assert samples_equal(all_samples(db), want)
    db.close()
    db = TSDB.open(path, ooo_window_ms=H)
    assert samples_equal(all_samples(db), want) and db.head.num_series == 0
    db.close()


def test_histograms_and_exemplars_kept_in_the_wal_through_checkpoints(tmp_path):
    """Native histograms and exemplars go to the WAL, and a checkpoint keeps them (and the Series
    record of their series) while they are at or after its time; older ones go with the
    checkpoint. The histograms themselves are in the head, then in blocks: all there after reopen."""
    from pythanos.remote.write import HistogramSample

    sets = labelsets(20, "hx")
    start = (T0 // H2) * H2
    t = start + np.arange(0, 7 * H, 60_000, dtype=np.int64)
    hbuf, hoffs = blobs_from_labels([{"__name__": "hx_hist"}])
    ebuf, eoffs = blobs_from_labels(sets[:1])
    db = TSDB.open(tmp_path / "db", wal_segment_size=32 * 1024, max_exemplars=100_000)
    hist_t, ex_t = [], []
    for a in range(0, len(t), 30):
        feed(db, sets, t[a:a + 30], np.random.default_rng(a).normal(size=(len(sets), 30)), 30)
        ht = int(t[a]) + 1
        db.append_histograms(hbuf, hoffs, [HistogramSample(
            series=0, timestamp=ht, is_float=True, count=2.0, sum=1.0, schema=1, zero_threshold=0.001, zero_count=0.5,
            positive_spans=[(0, 1)], positive_buckets=[1.5], negative_spans=[], negative_buckets=[], reset_hint=0)])
        hist_t.append(ht)
        db.append_exemplars(ebuf, eoffs, [0], [blobs_from_labels([{"trace_id": f"t{a}"}])[0]], [1.0], [ht])
        ex_t.append(ht)
        db.compact()
    assert db.blocks() and W.last_checkpoint(tmp_path / "db" / "wal") is not None
    cp_t = db._last_wal_truncation
    db.close()
    refs_named, hists, exs = {}, [], []
    for rtype, body in W.replay(tmp_path / "db" / "wal"):
        if rtype == R.SERIES:
            for r, b in zip(body[0].tolist(), body[1]):
                refs_named[r] = R.blob_to_labels(b)
        elif rtype in (R.FLOAT_HISTOGRAM_SAMPLES,):
            hists += [(h.ref, h.t) for h in body]
        elif rtype == R.EXEMPLARS:
            exs += body[1].tolist()
    # every histogram and exemplar from the last checkpoint's time on is there once, with its
    # series named; the oldest went with the checkpoints (newer segments are not checkpointed yet)
    got_h = sorted(x for _, x in hists)
    assert len(set(got_h)) == len(got_h) and set(got_h) <= set(hist_t)
    assert {x for x in hist_t if x >= cp_t} <= set(got_h) and min(hist_t) not in got_h
    assert all(refs_named[r] == (("__name__", "hx_hist"),) for r, _ in hists)
    assert len(set(exs)) == len(exs) and {x for x in ex_t if x >= cp_t} <= set(exs) and min(ex_t) not in exs
    with TSDB.open(tmp_path / "db") as db:
        assert db.replay_stats["histograms"] == len([x for x in hist_t if x >= db.head._min_valid_time])
        assert db.replay_stats["exemplars"] > 0
        # the head keeps native histograms now: in blocks (cut with the floats) and the head,
        # every one once, as float-histogram chunks
        (_, chunks), = db.series([Matcher.eq("__name__", "hx_hist")])
        assert {c[2] for c in chunks} == {3}
        got_t = np.concatenate([decode_histogram_chunk(c[3], c[2]).t for c in chunks])
        assert got_t.tolist() == hist_t


def test_compaction_concurrent_with_appends(tmp_path):
    """compact() in one thread while another appends (the receiver's minutely compaction beside
    its write handlers): every sample ends up once, in a block or the head, also after reopen."""
    sets = labelsets(300, "cc")
    buf, offs = blobs_from_labels(sets)
    start = (T0 // H2) * H2
    n_batches = 600  # 30 s apart: 5h
    db = TSDB.open(tmp_path / "db", wal_segment_size=64 * 1024)
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for k in range(n_batches):
                res = db.append(buf, offs, np.arange(len(sets)), np.full(len(sets), start + k * 30_000),
                                np.full(len(sets), float(k)))
                assert (res.status == OK).all(), np.unique(res.status)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            done.set()

    th = threading.Thread(target=writer)
    th.start()
    cut = []
    while not done.is_set():
        cut += db.compact()
    th.join()
    assert not errors, errors[0]
    cut += db.compact()
    assert len(cut) >= 1
    want_t = start + np.arange(n_batches, dtype=np.int64) * 30_000
    want = {key(s): (want_t, np.arange(n_batches, dtype=np.float64)) for s in sets}
    assert samples_equal(samples_of(db), want)
    db.close()
    with TSDB.open(tmp_path / "db") as db:
        assert samples_equal(samples_of(db), want)


def test_prometheus_replays_our_wbl(tmp_path, prometheus3_bin, prometheus_factory):
    """Late samples we logged to <dir>/wbl are found by a real Prometheus 3.9.1 with an
    out-of-order window (it replays wal/ then wbl/, as we do)."""
    now = int(time.time() * 1000)
    sets = labelsets(20, "promooo")
    buf, offs = blobs_from_labels(sets)
    data = tmp_path / "data"
    db = TSDB.open(data, ooo_window_ms=H)
    t_in = np.arange(now - 50 * 60_000, now, 60_000, dtype=np.int64)
    for k, t in enumerate(t_in.tolist()):
        assert (db.append(buf, offs, np.arange(20), np.full(20, t), np.full(20, float(k))).status == OK).all()
    t_late = t_in[:-5] + 30_000  # half a minute after each in-order sample, all sent late
    st = db.append(buf, offs, np.repeat(np.arange(20), len(t_late)), np.tile(t_late, 20), np.full(20 * len(t_late), -1.0))
    assert (st.status == 6).all()
    ours = all_samples(db)
    db.close()
    assert os.listdir(data / "wbl")
    cfg = "global:\n  scrape_interval: 1h\nstorage:\n  tsdb:\n    out_of_order_time_window: 1h\n"
    prom = prometheus_factory(tsdb_path=data, binary=prometheus3_bin, config_yaml=cfg,
                              extra_args=["--storage.tsdb.retention.time=100y"])
    got = prom_query(prom.url, "promooo[2h]", (now + 1000) / 1000)
    assert len(got) == 20
    for r in got:
        tt, vv = ours[tuple(sorted(r["metric"].items()))]
        assert [int(round(float(a) * 1000)) for a, _ in r["values"]] == tt.tolist()
        assert [float(b) for _, b in r["values"]] == vv.tolist()


def test_failed_wal_write_is_cut_back_and_logged_later(tmp_path, monkeypatch):
    """A WAL write failing halfway (disk full) leaves no torn bytes, and the samples the head took
    meanwhile reach the WAL with the next append that succeeds (a retry of the failed request
    finds them as equal duplicates)."""
    import errno

    real = W._write_all
    fail = {"n": 0}

    def flaky(fd, data):
        if fail["n"]:
            fail["n"] -= 1
            real(fd, bytes(data)[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(W, "_write_all", flaky)
    sets = labelsets(200, "full")
    buf, offs = blobs_from_labels(sets)
    db = TSDB.open(tmp_path / "db")
    for k in range(10):
        if k in (3, 7):
            fail["n"] = 1
            with pytest.raises(OSError):
                db.append(buf, offs, np.arange(200), np.full(200, T0 + k * 1000), np.random.rand(200))
            # the head took them: they are logged ahead of the next append
            continue
        res = db.append(buf, offs, np.arange(200), np.full(200, T0 + k * 1000), np.full(200, float(k)))
        assert (res.status == OK).all()
    fail["n"] = 1
    with pytest.raises(OSError):
        db.append(buf, offs, np.arange(200), np.full(200, T0 + 10_000), np.full(200, 10.0))
    ours = samples_of(db)
    db.close()  # the last failed batch is logged on close
    assert W.segment_range(tmp_path / "db" / "wal")[1] == 0
    for _ in W.read_records(tmp_path / "db" / "wal"):  # no corruption anywhere
        pass
    with TSDB.open(tmp_path / "db") as db:
        assert samples_equal(samples_of(db), ours)
        assert len(next(iter(ours.values()))[0]) == 11


def test_shipper_uploads_our_blocks_and_thanos_verifies_them(tmp_path, thanos_bin):
    """The shipper reads the block directories of our TSDB directory as it reads Prometheus'
    (wal/, wbl/ and lock beside them): every block is uploaded once, and Thanos' own bucket
    verifier finds nothing wrong with them."""
    from pythanos.block.shipper import Shipper
    from pythanos.objstore.filesystem import FilesystemBucket

    sets = labelsets(50, "ship")
    start = (T0 // H2) * H2
    t = start + np.arange(0, 9 * H, 30_000, dtype=np.int64)
    db = TSDB.open(tmp_path / "db", ooo_window_ms=H)
    for a in range(0, len(t), 120):
        feed(db, sets, t[a:a + 120], np.random.default_rng(a).normal(size=(len(sets), len(t[a:a + 120]))), 40)
        db.compact()
    metas = db.blocks()
    assert len(metas) >= 3
    bucket = FilesystemBucket(str(tmp_path / "bkt"))
    shipper = Shipper(bucket, tmp_path / "db", labels=lambda: {"receive": "r0", "tenant_id": "t"}, source="receive")
    assert shipper.sync() == len(metas)
    assert shipper.sync() == 0
    assert sorted(os.listdir(tmp_path / "bkt")) == sorted(m.ulid for m in metas)
    db.close()
    v = subprocess.run([thanos_bin, "tools", "bucket", "verify",
                        "--objstore.config={type: FILESYSTEM, config: {directory: %s}}" % (tmp_path / "bkt")],
                       capture_output=True, text=True, timeout=120)
    assert v.returncode == 0 and "level=warn" not in v.stderr and "level=error" not in v.stderr, v.stderr[-3000:]


def test_we_open_a_directory_prometheus_wrote(tmp_path, prometheus3_bin, prometheus_factory):
    """The other way round: a real Prometheus 3.9.1 receives remote writes (a block cut from
    older samples, recent ones in its WAL), is stopped, and our TSDB opened on its directory
    holds every sample once."""
    import cramjam

    from pythanos.remote.prompb import remote_pb2

    now = (int(time.time() * 1000) // 1000) * 1000
    sent: dict[tuple, dict[int, float]] = {}
    data = tmp_path / "data"
    prom = prometheus_factory(tsdb_path=data, binary=prometheus3_bin,
                              extra_args=["--web.enable-remote-write-receiver", "--storage.tsdb.retention.time=100y"])

    def send(lo: int, hi: int) -> None:
        req = remote_pb2.WriteRequest()
        for i in range(25):
            ts = req.timeseries.add()
            labels = (("__name__", "fromprom"), ("i", str(i)))
            for n, v in labels:
                ts.labels.add(name=n, value=v)
            for t in range(lo, hi, 30_000):
                v = float(i * 100_000 + (t - now) // 30_000)
                ts.samples.add(timestamp=t, value=v)
                sent.setdefault(labels, {})[t] = v
        body = bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
        r = urllib.request.Request(f"{prom.url}/api/v1/write", data=body, method="POST", headers={
            "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        with urllib.request.urlopen(r, timeout=30) as resp:
            assert resp.status in (200, 204)

    for k in range(10):  # 5h in half-hour requests: Prometheus' head becomes compactable
        lo = now - 5 * H + k * H // 2
        send(lo, lo + H // 2)
    deadline = time.monotonic() + 120
    while not any(n for n in os.listdir(data) if len(n) == 26):  # its compaction runs every minute
        assert prom.alive() and time.monotonic() < deadline, "Prometheus cut no block in 120 s"
        time.sleep(0.2)
    prom.stop()
    with TSDB.open(data) as db:
        assert db.blocks()
        got = samples_of(db)
        assert db.replay_stats["unknown_sample_refs"] == 0
    assert set(got) == set(sent)
    for labels, pts in sent.items():
        t, v = got[labels]
        assert t.tolist() == sorted(pts) and v.tolist() == [pts[x] for x in sorted(pts)]


@pytest.mark.parametrize("seed,ooo", [(1, 0), (2, 0), (3, 30 * 60_000), (4, 30 * 60_000)])
def test_random_requests_reopen_to_the_same_state(tmp_path, seed, ooo):
    """Random requests (new series, in-order, late, too old, equal and conflicting duplicates,
    several samples of a series out of order within one request), compactions in between: after
    every reopen the TSDB answers exactly as before it was closed."""
    rng = np.random.default_rng(seed)
    sets = labelsets(80, f"rnd{seed}")
    buf, offs = blobs_from_labels(sets)
    path = tmp_path / "db"
    kw = dict(ooo_window_ms=ooo, wal_segment_size=32 * 1024)
    db = TSDB.open(path, **kw)
    now = T0
    statuses = set()
    for step in range(120):
        now += int(rng.integers(0, 4 * 60_000))
        n = int(rng.integers(1, 400))
        sidx = rng.integers(0, len(sets), n)
        ts = now - rng.choice([0, 0, 0, 1000, 60_000, 20 * 60_000, 2 * H], n)
        vs = rng.choice([1.0, 2.0, np.nan], n)
        res = db.append(buf, offs, sidx, ts, vs)
        statuses |= set(np.unique(res.status).tolist())
        if step % 25 == 24:
            db.compact()
        if step % 20 == 19:
            before = all_samples(db, dedup=True)
            db.close()
            db = TSDB.open(path, **kw)
            assert samples_equal(all_samples(db, dedup=True), before), step
    db.close()
    assert OK in statuses and len(statuses) >= 4 and (6 in statuses) == bool(ooo), statuses


CHILD_OOO = textwrap.dedent("""
    import os, sys
    import numpy as np
    from pythanos.tsdb.db import TSDB
    from pythanos.tsdb.head import blobs_from_labels

    path, ack, start, NS, PER, STEP, T0 = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
    buf, offs = blobs_from_labels([{"__name__": "crashooo", "s": str(i)} for i in range(NS)])
    db = TSDB.open(path, wal_segment_size=128 * 1024, ooo_window_ms=3600 * 1000)
    fd = os.open(ack, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sidx = np.repeat(np.arange(NS), PER)
    j = np.tile(np.arange(PER), NS)
    k = start
    while True:
        ts = T0 + k * PER * STEP + j * STEP
        vs = (k * 1000 + sidx) + j / 10
        n_late = 0
        if k >= 3:  # the same series, half a step after the samples of batch k-3: out of order
            ts = np.concatenate([ts, T0 + (k - 3) * PER * STEP + j * STEP + STEP // 2])
            vs = np.concatenate([vs, -((k * 1000 + sidx) + j / 10)])
            n_late = len(sidx)
        res = db.append(buf, offs, np.concatenate([sidx] * (2 if n_late else 1)), ts, vs)
        st = res.status
        if not ((st[:len(sidx)] == 0).all() and (st[len(sidx):] == 6).all()):
            raise SystemExit(f"batch {k}: statuses {np.unique(st)}")
        os.write(fd, f"{k}\\n".encode())
        os.fsync(fd)
        db.compact()
        k += 1
""")


def test_sigkill_with_out_of_order_samples(tmp_path):
    """As the SIGKILL test, with every batch also carrying late samples (out of order, logged to
    the WBL) and out-of-order compactions: acknowledged batches are there whole and once; the
    batch being appended at the kill may be there in part (its in-order samples go to the WAL
    before its late ones go to the WBL) and is never sent again."""
    ns, per, step = 300, 4, 60_000
    path, ack = tmp_path / "db", tmp_path / "acks"
    script = tmp_path / "child.py"
    script.write_text(CHILD_OOO)
    env = {**os.environ, "PYTHONPATH": REPO_COMPONENTS + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rnd = random.Random(11)
    acked, skipped = -1, []
    j = np.arange(per)

    def in_order(k: int, s: int) -> dict[int, float]:
        return dict(zip((T0 + k * per * step + j * step).tolist(), ((k * 1000 + s) + j / 10).tolist()))

    def late(k: int, s: int) -> dict[int, float]:
        if k < 3:
            return {}
        return dict(zip((T0 + (k - 3) * per * step + j * step + step // 2).tolist(), (-((k * 1000 + s) + j / 10)).tolist()))

    for trial in range(10):
        start = acked + 2 if acked >= 0 else 0  # the batch that may be half-logged is never sent again
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(ack), str(start), str(ns), str(per),
                                 str(step), str(T0)], env=env, stderr=subprocess.PIPE)
        target = start + rnd.randint(1, 25)
        deadline = time.monotonic() + 120
        while True:
            acks = read_acks(ack)
            if acks and acks[-1] >= target:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "child made no progress"
            time.sleep(0.002 * rnd.random())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stderr.close()
        acked = read_acks(ack)[-1]
        skipped.append(acked + 1)
        done = set(read_acks(ack))
        db = TSDB.open(path, wal_segment_size=128 * 1024, ooo_window_ms=H)
        try:
            got = all_samples(db)
            assert len(got) == ns
            for s in range(ns):
                t, v = got[(("__name__", "crashooo"), ("s", str(s)))]
                have = dict(zip(t.tolist(), v.tolist()))
                want: dict[int, float] = {}
                for k in done:
                    want.update(in_order(k, s))
                    want.update(late(k, s))
                assert all(have.get(x) == y for x, y in want.items()), (trial, s, "an acknowledged sample is missing")
                extra = {x: y for x, y in have.items() if x not in want}
                for k in skipped:  # what the kills may have left: in-order part, then the late part too
                    io, lt = in_order(k, s), late(k, s)
                    got_io = {x: extra.pop(x) for x in list(io) if x in extra}
                    got_lt = {x: extra.pop(x) for x in list(lt) if x in extra}
                    assert got_io in ({}, io) and got_lt in ({}, lt) and (not got_lt or got_io), (trial, s, k)
                    assert all(io[x] == y for x, y in got_io.items()) and all(lt[x] == y for x, y in got_lt.items())
                assert not extra, (trial, s, "samples never sent")
            if trial == 9:
                assert any("from-out-of-order" in m.compaction.hints for m in db.blocks())
        finally:
            db.close()
