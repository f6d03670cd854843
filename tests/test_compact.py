"""``pythanos compact`` against a real ``thanos compact`` v0.42 on identical copies of one bucket."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from peers import REGISTRY, free_port, http_get

from pythanos.tsdb.block import BlockReader, BlockWriter

H = 3600 * 1000
BASE = 1_740_000_000_000 // (48 * H) * (48 * H)  # a 2-day aligned start in early 2025


def fs_yaml(path: Path) -> str:
    return "{type: FILESYSTEM, config: {directory: %s}}" % path


def compact(binary: str, bucket: Path, work: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """One compactor run (no --wait) over ``bucket``; its log is kept in ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    defaults = [f"--data-dir={work / 'data'}", f"--objstore.config={fs_yaml(bucket)}", "--consistency-delay=0s",
                "--delete-delay=0s", f"--http-address=127.0.0.1:{free_port()}"]
    given = {e.split("=")[0] for e in extra}
    args = [binary, "compact", *(d for d in defaults if d.split("=")[0] not in given), *extra]
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    (work / f"{Path(binary).name}-{int(time.time() * 1000)}.log").write_text(r.stdout + r.stderr)
    return r


def metas(bucket: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in bucket.glob("*/meta.json")}


def layout(bucket: Path) -> list[tuple]:
    """What must match Thanos: time range, level, resolution, stats, index stats, number of sources."""
    out = []
    for m in metas(bucket).values():
        out.append((m["minTime"], m["maxTime"], m["compaction"]["level"], m["thanos"]["downsample"]["resolution"],
                    json.dumps(m["stats"], sort_keys=True), json.dumps(m["thanos"].get("index_stats"), sort_keys=True),
                    len(m["compaction"]["sources"]), json.dumps(m["thanos"]["labels"], sort_keys=True),
                    m["thanos"]["source"]))
    return sorted(out)


def content(bucket: Path) -> dict[tuple, str]:
    """Digest of index + chunk files per (minTime, maxTime, level, resolution)."""
    out = {}
    for u, m in metas(bucket).items():
        h = hashlib.sha256()
        for f in ["index", *sorted(f"chunks/{c.name}" for c in (bucket / u / "chunks").iterdir())]:
            h.update((bucket / u / f).read_bytes())
        out[(m["minTime"], m["maxTime"], m["compaction"]["level"], m["thanos"]["downsample"]["resolution"])] = \
            h.hexdigest()
    return out


def samples(bucket: Path, resolution: int = 0) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """Every raw sample of the bucket per (external labels, series labels), via our reader."""
    acc: dict[tuple, list] = {}
    for u, m in metas(bucket).items():
        if m["thanos"]["downsample"]["resolution"] != resolution:
            continue
        ext = tuple(sorted(m["thanos"]["labels"].items()))
        with BlockReader.open_dir(bucket / u) as r:
            for lbls, t, v in r.series():
                acc.setdefault((ext, lbls), []).append((t, v))
    out = {}
    for k, parts in acc.items():
        t = np.concatenate([p[0] for p in parts])
        v = np.concatenate([p[1] for p in parts])
        o = np.argsort(t, kind="stable")
        out[k] = (t[o], v[o])
    return out


def assert_no_overlap(bucket: Path) -> None:
    groups: dict[tuple, list] = {}
    for m in metas(bucket).values():
        groups.setdefault((m["thanos"]["downsample"]["resolution"], json.dumps(m["thanos"]["labels"], sort_keys=True)),
                          []).append((m["minTime"], m["maxTime"], m["ulid"]))
    for key, blocks in groups.items():
        blocks.sort()
        for a, b in zip(blocks, blocks[1:]):
            assert b[0] >= a[1], f"overlap in group {key}: {a} and {b}"


def write_block(bucket: Path, labels: dict, mint: int, maxt: int, series: int = 20, step: int = 15_000,
                phase: int = 0, seed: int = 0, source: str = "sidecar") -> str:
    """A 2h-style raw block of ``series`` counters scraped every ``step`` ms (shifted by ``phase``)."""
    rng = np.random.default_rng(seed)
    w = BlockWriter(bucket, thanos={"labels": labels, "source": source}, min_time=mint, max_time=maxt)
    t = np.arange(mint + phase, maxt, step, dtype=np.int64)
    for i in range(series):
        v = np.cumsum(rng.integers(0, 10, len(t))).astype(np.float64)
        w.add_series({"__name__": "requests_total", "job": f"job{i % 3}", "instance": f"i{i}"}, t, v)
    return w.write().ulid


@pytest.fixture(scope="module")
def tiny_bucket(tmp_path_factory, pythanos_bin) -> Path:
    """A month of continuous-30d-tiny blocks (several levels of compaction to do)."""
    b = tmp_path_factory.mktemp("tiny") / "bucket"
    subprocess.run([pythanos_bin, "tools", "bench-blocks", "--profile", "continuous-30d-tiny", "--labels",
                    'cluster="eu1"', "--max-time", "2025-03-01T00:00:00Z", "--output.dir", str(b)],
                   check=True, capture_output=True, timeout=300)
    return b


def copies(src: Path, dst: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        d = dst / f"copy{i}"
        shutil.copytree(src, d)
        out.append(d)
    return out


def test_compaction_byte_identical_to_thanos(tiny_bucket, tmp_path, pythanos_bin, thanos_bin):
    ours, theirs = copies(tiny_bucket, tmp_path, 2)
    r = compact(pythanos_bin, ours, tmp_path / "ours", "--downsampling.disable")
    assert r.returncode == 0, r.stderr[-3000:]
    r = compact(thanos_bin, theirs, tmp_path / "thanos", "--downsampling.disable")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(metas(ours)) < len(metas(tiny_bucket)), "nothing was compacted"
    assert layout(ours) == layout(theirs)
    assert content(ours) == content(theirs)
    _same_samples(ours, tiny_bucket)
    for u, m in metas(ours).items():
        if m["compaction"]["level"] > 1:
            assert not (ours / u / "tombstones").exists()
            assert m["thanos"]["source"] == "compactor"
            assert [p["ulid"] for p in m["compaction"]["parents"]], m
            assert m["thanos"]["upload_time"] != "0001-01-01T00:00:00Z"


def _same_samples(a: Path, b: Path) -> bool:
    sa, sb = samples(a), samples(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k][0], sb[k][0], err_msg=str(k))
        np.testing.assert_array_equal(sa[k][1].view(np.int64), sb[k][1].view(np.int64), err_msg=str(k))
    return True


def test_each_continues_the_others_work(tiny_bucket, tmp_path, pythanos_bin, thanos_bin):
    """Half the levels by one compactor, the rest by the other: the result equals one compactor's."""
    ref, a, b = copies(tiny_bucket, tmp_path, 3)
    assert compact(thanos_bin, ref, tmp_path / "ref", "--downsampling.disable").returncode == 0
    r = compact(pythanos_bin, a, tmp_path / "a1", "--downsampling.disable", "--debug.max-compaction-level=1")
    assert r.returncode == 0, r.stderr[-3000:]
    r = compact(thanos_bin, a, tmp_path / "a2", "--downsampling.disable")
    assert r.returncode == 0, r.stderr[-3000:]
    r = compact(thanos_bin, b, tmp_path / "b1", "--downsampling.disable", "--debug.max-compaction-level=1")
    assert r.returncode == 0, r.stderr[-3000:]
    r = compact(pythanos_bin, b, tmp_path / "b2", "--downsampling.disable")
    assert r.returncode == 0, r.stderr[-3000:]
    assert layout(a) == layout(ref)
    assert layout(b) == layout(ref)
    assert content(a) == content(ref) == content(b)
    v = subprocess.run([thanos_bin, "tools", "bucket", "verify", f"--objstore.config={fs_yaml(b)}"],
                       capture_output=True, text=True, timeout=120)
    assert v.returncode == 0 and "level=warn" not in v.stderr and "level=error" not in v.stderr, v.stderr[-3000:]


def overlapping_bucket(root: Path) -> tuple[Path, list[str]]:
    b = root / "overlap"
    b.mkdir(parents=True)
    ids = [write_block(b, {"cluster": "eu1"}, BASE, BASE + 2 * H, seed=1),
           write_block(b, {"cluster": "eu1"}, BASE + H, BASE + 3 * H, seed=2),
           write_block(b, {"cluster": "eu1"}, BASE + 4 * H, BASE + 6 * H, seed=3)]
    return b, ids


def test_overlap_halts_and_names_the_blocks(tmp_path, pythanos_bin):
    b, ids = overlapping_bucket(tmp_path)
    before = sorted(metas(b))
    r = compact(pythanos_bin, b, tmp_path / "once")
    assert r.returncode == 1
    err = [ln for ln in r.stderr.splitlines() if "level=error" in ln]
    assert err and ids[0] in err[-1] and ids[1] in err[-1] and ids[2] not in err[-1], r.stderr[-3000:]
    assert "--deduplication.replica-label" in err[-1] and "no-compact" in err[-1]
    assert sorted(metas(b)) == before  # nothing touched
    # with --wait: halted, metric set, still serving
    port = free_port()
    p = REGISTRY.start("compact-halt", [pythanos_bin, "compact", "--wait", "--wait-interval=1s",
                                        f"--data-dir={tmp_path / 'w'}", f"--objstore.config={fs_yaml(b)}",
                                        "--consistency-delay=0s", f"--http-address=127.0.0.1:{port}"], tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        p.wait_ready(lambda: b"thanos_compact_halted 1.0" in http_get(url + "/metrics")[1], 60, "halted metric")
        assert http_get(url + "/-/healthy")[0] == 200
        assert p.alive()
        assert "critical error detected; halting" in p.log()
    finally:
        p.stop()


def test_overlap_halts_real_thanos_too(tmp_path, thanos_bin):
    """The oracle: the same bucket halts Thanos (so the test above checks a real condition)."""
    b, _ = overlapping_bucket(tmp_path)
    r = compact(thanos_bin, b, tmp_path / "t")
    assert r.returncode != 0 and "overlaps found while gathering blocks" in r.stderr


def replica_bucket(root: Path, name: str) -> Path:
    b = root / name
    b.mkdir(parents=True)
    for k in range(4):
        mint, maxt = BASE + k * 2 * H, BASE + (k + 1) * 2 * H
        write_block(b, {"cluster": "eu1", "replica": "a"}, mint, maxt, seed=10 + k, phase=0)
        write_block(b, {"cluster": "eu1", "replica": "b"}, mint, maxt, seed=20 + k, phase=4_000)
    write_block(b, {"cluster": "eu1", "replica": "a"}, BASE + 8 * H, BASE + 10 * H, seed=30)
    return b


@pytest.mark.parametrize("func", ["", "penalty"])
def test_vertical_dedup_equals_thanos(tmp_path, pythanos_bin, thanos_bin, func):
    src = replica_bucket(tmp_path, "replicas")
    ours, theirs = copies(src, tmp_path, 2)
    extra = ["--downsampling.disable", "--deduplication.replica-label=replica", f"--deduplication.func={func}"]
    r = compact(pythanos_bin, ours, tmp_path / "ours", *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    r = compact(thanos_bin, theirs, tmp_path / "thanos", *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    assert layout(ours) == layout(theirs)
    assert any(m["thanos"]["labels"] == {"cluster": "eu1"} for m in metas(ours).values())
    _same_samples(ours, theirs)
    assert_no_overlap(ours)


def test_retention_marks_and_deletes_exactly_the_expired_blocks(tmp_path, pythanos_bin, thanos_bin):
    now = int(time.time() * 1000) // (2 * H) * (2 * H)
    src = tmp_path / "ret"
    src.mkdir()
    old = write_block(src, {"cluster": "eu1"}, now - 80 * H, now - 78 * H, seed=1)
    edge = write_block(src, {"cluster": "eu1"}, now - 50 * H, now - 48 * H, seed=2)
    new = write_block(src, {"cluster": "eu1"}, now - 4 * H, now - 2 * H, seed=3)
    ours, theirs = copies(src, tmp_path, 2)
    extra = ["--downsampling.disable", "--retention.resolution-raw=60h", "--delete-delay=1h"]
    assert compact(pythanos_bin, ours, tmp_path / "o", *extra).returncode == 0
    assert compact(thanos_bin, theirs, tmp_path / "t", *extra).returncode == 0
    for b in (ours, theirs):
        marked = {p.parent.name for p in b.glob("*/deletion-mark.json")}
        assert marked == {old}, (b, marked)
        assert {edge, new} <= set(metas(b))
    ours_mark = json.loads((ours / old / "deletion-mark.json").read_text())
    thanos_mark = json.loads((theirs / old / "deletion-mark.json").read_text())
    assert ours_mark["details"] == thanos_mark["details"] == "block exceeding retention of 60h0m0s"
    assert ours_mark.keys() == thanos_mark.keys()
    # the delay passed (delete-delay 0): the marked block goes, the others stay
    r = compact(pythanos_bin, ours, tmp_path / "o2", "--downsampling.disable", "--retention.resolution-raw=60h")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (ours / old).exists()
    assert set(metas(ours)) == {edge, new}


def test_no_compact_mark_is_honoured(tiny_bucket, tmp_path, pythanos_bin, thanos_bin):
    ours, theirs = copies(tiny_bucket, tmp_path, 2)
    first = min(metas(ours), key=lambda u: metas(ours)[u]["minTime"])
    for b in (ours, theirs):
        r = subprocess.run([thanos_bin, "tools", "bucket", "mark", f"--objstore.config={fs_yaml(b)}", f"--id={first}",
                            "--marker=no-compact-mark.json", "--details=test"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
    assert compact(pythanos_bin, ours, tmp_path / "o", "--downsampling.disable").returncode == 0
    assert compact(thanos_bin, theirs, tmp_path / "t", "--downsampling.disable").returncode == 0
    assert first in metas(ours) and metas(ours)[first]["compaction"]["level"] == 1
    assert layout(ours) == layout(theirs)


def test_aborted_partial_upload_is_cleaned_after_48h(tmp_path, pythanos_bin):
    b = tmp_path / "partial"
    b.mkdir()
    keep = write_block(b, {"cluster": "eu1"}, BASE, BASE + 2 * H, seed=1)
    stale = write_block(b, {"cluster": "eu1"}, BASE + 2 * H, BASE + 4 * H, seed=2)
    fresh = write_block(b, {"cluster": "eu1"}, BASE + 4 * H, BASE + 6 * H, seed=3)
    for u in (stale, fresh):
        (b / u / "meta.json").unlink()
    old = time.time() - 49 * 3600
    for p in (b / stale).rglob("*"):
        os.utime(p, (old, old))
    r = compact(pythanos_bin, b, tmp_path / "o", "--downsampling.disable")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (b / stale).exists()
    assert (b / fresh).exists()
    assert keep in metas(b)


def _log_ts(line: str) -> float:
    import datetime as dt

    ts = next(f[3:] for f in line.split() if f.startswith("ts="))
    return dt.datetime.fromisoformat(ts.rstrip("Z")[:26]).timestamp()


def test_kill9_at_random_points_loses_nothing(tmp_path, pythanos_bin):
    """At least 20 runs killed with SIGKILL at random moments of the compaction work, each followed
    by a full run: every sample exactly once, no overlap, the same blocks as an uninterrupted run.
    The window the kill is drawn from starts as long as an uninterrupted run's work and adapts to
    where kills land (shorter after one that came too late, longer after one too early), so that
    on a slower or busier machine kills still land mid-work; trials go on until five have."""
    src = tmp_path / "src"
    src.mkdir()
    for k in range(12):
        write_block(src, {"cluster": "eu1"}, BASE + k * 2 * H, BASE + (k + 1) * 2 * H, series=1500, seed=k)
    want = samples(src)
    probe = tmp_path / "probe"
    shutil.copytree(src, probe)
    r = compact(pythanos_bin, probe, tmp_path / "probe-w", "--downsampling.disable", "--log.level=debug")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stderr.splitlines()
    began = _log_ts(next(ln for ln in lines if "compaction available and planned" in ln))
    work = _log_ts(next(ln for ln in reversed(lines) if "compaction iterations done" in ln)) - began
    assert work > 0
    rng = random.Random(7)
    start_state, end_state = bucket_state(src), bucket_state(probe)
    interrupted, window, trial = 0, work, -1
    while trial < 19 or (interrupted < 5 and trial < 59):
        trial += 1
        b = tmp_path / f"t{trial}"
        shutil.copytree(src, b)
        for kill in range(1 + trial % 2):  # one or two kills, then a run to the end
            log = tmp_path / f"t{trial}-{kill}.log"
            with open(log, "wb") as out:
                p = subprocess.Popen([pythanos_bin, "compact", f"--data-dir={tmp_path / f'w{trial}'}",
                                      f"--objstore.config={fs_yaml(b)}", "--consistency-delay=0s",
                                      "--delete-delay=0s", "--downsampling.disable",
                                      f"--http-address=127.0.0.1:{free_port()}"], stdout=out, stderr=out)
            try:
                # the kill lands at a random point of the work, which starts with the first plan
                deadline = time.monotonic() + 120
                while p.poll() is None and b"compaction available and planned" not in log.read_bytes():
                    assert time.monotonic() < deadline, log.read_text()[-2000:]
                    time.sleep(0.01)
                p.wait(timeout=rng.uniform(0, window))
            except subprocess.TimeoutExpired:
                pass
            finally:
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
                p.wait()
        state = bucket_state(b)
        if state == end_state:
            window *= 0.7
        elif state == start_state:
            window *= 1.3
        else:
            interrupted += 1
        r = compact(pythanos_bin, b, tmp_path / f"w{trial}-final", "--downsampling.disable")
        assert r.returncode == 0, (trial, r.stderr[-3000:])
        got = samples(b)
        assert got.keys() == want.keys(), trial
        for k in want:
            np.testing.assert_array_equal(got[k][0], want[k][0], err_msg=f"trial {trial} {k}")
            np.testing.assert_array_equal(got[k][1], want[k][1], err_msg=f"trial {trial} {k}")
        assert_no_overlap(b)
        assert layout(b) == layout(probe), trial
        shutil.rmtree(b)
    # the kills must really have landed in the middle of the work, not only before or after it
    assert interrupted >= 5, (interrupted, trial)


def bucket_state(bucket: Path) -> frozenset:
    """Every object key of a FILESYSTEM bucket, with block ULIDs replaced by what they hold."""
    out = set()
    for p in bucket.rglob("*"):
        if p.is_file():
            rel = p.relative_to(bucket).parts
            m = metas(bucket).get(rel[0])
            key = (m["minTime"], m["maxTime"], m["compaction"]["level"]) if m else ("partial",)
            out.add((key, "/".join(rel[1:])))
    return frozenset(out)


def test_flags_and_startup_errors(pythanos_bin, tmp_path):
    r = subprocess.run([pythanos_bin, "compact", f"--objstore.config={fs_yaml(tmp_path)}",
                        "--retention.resolution-raw=1d"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "40 hours" in r.stderr and "--retention.resolution-raw" in r.stderr
    r = subprocess.run([pythanos_bin, "compact", f"--objstore.config={fs_yaml(tmp_path)}",
                        "--deduplication.func=penalty"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "replica label" in r.stderr
    r = subprocess.run([pythanos_bin, "compact", f"--objstore.config={fs_yaml(tmp_path)}", "--wait-interval=5x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--wait-interval" in r.stderr


def test_chunks_outside_the_block_range_halt_naming_the_block(tmp_path, pythanos_bin):
    b = tmp_path / "bad"
    b.mkdir()
    ids = [write_block(b, {"cluster": "eu1"}, BASE + k * 2 * H, BASE + (k + 1) * 2 * H, seed=k) for k in range(5)]
    meta = json.loads((b / ids[1] / "meta.json").read_text())
    meta["maxTime"] -= H  # its chunks now run past the block's end
    (b / ids[1] / "meta.json").write_text(json.dumps(meta))
    r = compact(pythanos_bin, b, tmp_path / "w", "--downsampling.disable")
    assert r.returncode == 1
    err = [ln for ln in r.stderr.splitlines() if "level=error" in ln]
    assert err and ids[1] in err[-1] and "outside the block time range" in err[-1], r.stderr[-3000:]
    assert sorted(metas(b)) == sorted(ids)  # nothing uploaded, nothing marked
    assert not list(b.glob("*/deletion-mark.json"))


def test_s3_outage_mid_compaction_is_retried_and_loses_nothing(tmp_path, pythanos_bin):
    """The S3 server goes away while the compactor works (after it downloaded its plan): the
    iteration fails as retriable, the compactor keeps running, and once S3 is back the next
    iterations finish the job with every sample exactly once and no overlap."""
    from test_store import start_own_seaweedfs

    from pythanos.objstore import bucket_from_config
    from pythanos.tsdb.upload import upload_block

    src = tmp_path / "src"
    src.mkdir()
    for k in range(8):
        write_block(src, {"cluster": "eu1"}, BASE + k * 2 * H, BASE + (k + 1) * 2 * H, series=3000, seed=k)
    own = start_own_seaweedfs(tmp_path / "weed")
    own["client"].make_bucket("stores3")
    cfg = (f"type: S3\nconfig:\n  bucket: stores3\n  endpoint: {own['endpoint']}\n  access_key: {own['ak']}\n"
           f"  secret_key: {own['sk']}\n  insecure: true\n  max_retries: 2\n")
    bkt = bucket_from_config(cfg, "test")
    ref = tmp_path / "ref"  # what an uninterrupted run makes of the same blocks
    shutil.copytree(src, ref)
    assert compact(pythanos_bin, ref, tmp_path / "ref-w", "--downsampling.disable").returncode == 0
    want = sorted((m["minTime"], m["maxTime"], m["compaction"]["level"]) for m in metas(ref).values())
    for u in sorted(metas(src)):
        upload_block(bkt, src / u)
    port = free_port()
    p = REGISTRY.start("compact-s3", [pythanos_bin, "compact", "--wait", "--wait-interval=1s",
                                      f"--data-dir={tmp_path / 'data'}", f"--objstore.config={cfg}",
                                      "--consistency-delay=0s", "--delete-delay=0s", "--downsampling.disable",
                                      f"--http-address=127.0.0.1:{port}"], tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        p.wait_ready(lambda: "downloaded blocks; compacting" in p.log(), 120, "first compaction under way")
        own["process"].stop()
        p.wait_ready(lambda: "retriable error" in p.log(), 120, "the outage seen as retriable")
        assert p.alive()
        assert b"thanos_compact_halted 0.0" in http_get(url + "/metrics")[1]
        own["restart"]()
        bkt = bucket_from_config(cfg, "test")

        def settled() -> bool:
            ms = [json.loads(bkt.get(k)) for k in bkt.iter("", recursive=True) if k.endswith("/meta.json")]
            live = [m for m in ms if not bkt.exists(f"{m['ulid']}/deletion-mark.json")]
            return sorted((m["minTime"], m["maxTime"], m["compaction"]["level"]) for m in live) == want

        p.wait_ready(settled, 180, "compaction finished after the outage")
        assert float(next(ln.split()[-1] for ln in http_get(url + "/metrics")[1].decode().splitlines()
                          if ln.startswith("thanos_compact_retries_total"))) >= 1
        # the compactor keeps deleting marked blocks: stop it before the listing is read
        p.stop()
        # everything, exactly once: download what is left and compare with the source
        out = tmp_path / "out"
        for k in bkt.iter("", recursive=True):
            if not k.endswith("/"):
                (out / k).parent.mkdir(parents=True, exist_ok=True)
                (out / k).write_bytes(bkt.get(k))
    finally:
        p.stop()
        own["process"].stop()  # the S3 server of this test, whichever start of it is running
    for u in list(metas(out)):
        if (out / u / "deletion-mark.json").exists():
            shutil.rmtree(out / u)
    for d in out.iterdir():
        if not (d / "meta.json").exists():
            shutil.rmtree(d)  # an upload the outage cut short: never read, cleaned after 48h
    assert_no_overlap(out)
    _same_samples(out, src)


def test_a_year_compacted_and_downsampled_equals_thanos(downsampled_bucket, tmp_path, pythanos_bin, thanos_bin):
    """The course's year (continuous-365d-tiny) through our compactor gives the very blocks a real
    ``thanos compact`` made of it (the session's ``downsampled_bucket``): raw, 5m and 1h, byte for
    byte; and Thanos' own verifier finds nothing to say about them."""
    from peers import DOWNSAMPLED_MAX_TIME

    b = tmp_path / "bucket"
    subprocess.run([pythanos_bin, "tools", "bench-blocks", "--profile", "continuous-365d-tiny", "--labels",
                    'cluster="eu1"', "--max-time", DOWNSAMPLED_MAX_TIME, "--output.dir", str(b)],
                   check=True, capture_output=True, timeout=600)
    r = compact(pythanos_bin, b, tmp_path / "w")
    assert r.returncode == 0, r.stderr[-3000:]
    assert {k[3] for k in content(b)} == {0, 300_000, 3_600_000}
    assert layout(b) == layout(downsampled_bucket)
    assert content(b) == content(downsampled_bucket)
    v = subprocess.run([thanos_bin, "tools", "bucket", "verify", f"--objstore.config={fs_yaml(b)}"],
                       capture_output=True, text=True, timeout=300)
    assert v.returncode == 0 and "level=warn" not in v.stderr and "level=error" not in v.stderr, v.stderr[-3000:]


def ooo_bucket(root: Path) -> tuple[Path, str]:
    """Five 2h blocks; the second has a series whose second chunk starts inside its first."""
    from test_tools_bucket_verify import make_raw_block

    b = root / "ooo"
    b.mkdir(parents=True)
    bad = None
    for k in range(5):
        mint = BASE + k * 2 * H
        ts = list(range(mint, mint + 2 * H, 60_000))
        chunks = [ts[:60], ts[50:]] if k == 1 else [ts[:60], ts[60:]]
        u = make_raw_block(b, [((("__name__", "up"), ("job", "a")), chunks)], mint, mint + 2 * H,
                           {"cluster": "eu1"}, born=int(time.time() * 1000) + k)
        bad = u if k == 1 else bad
    return b, bad


def test_out_of_order_chunks_merged_or_skipped(tmp_path, pythanos_bin, thanos_bin):
    """By default our compactor merges a series' out-of-order chunks (every sample kept once), where
    Thanos stops with an error; with --compact.skip-block-with-out-of-order-chunks both set the
    block aside with the same no-compact mark."""
    b, bad = ooo_bucket(tmp_path / "a")
    r = compact(pythanos_bin, b, tmp_path / "wa", "--downsampling.disable")
    assert r.returncode == 0, r.stderr[-3000:]
    (ts, _), = samples(b).values()
    want = np.arange(BASE, BASE + 10 * H, 60_000)
    np.testing.assert_array_equal(ts, want)
    assert max(m["compaction"]["level"] for m in metas(b).values()) == 2
    t = compact(thanos_bin, ooo_bucket(tmp_path / "t0")[0], tmp_path / "t0w", "--downsampling.disable")
    assert t.returncode != 0 and "out-of-order" in t.stderr
    marks = {}
    for who, binary in (("ours", pythanos_bin), ("thanos", thanos_bin)):
        b, bad = ooo_bucket(tmp_path / who)
        r = compact(binary, b, tmp_path / f"{who}w", "--downsampling.disable",
                    "--compact.skip-block-with-out-of-order-chunks")
        assert r.returncode == 0, r.stderr[-3000:]
        assert bad in metas(b) and metas(b)[bad]["compaction"]["level"] == 1
        mark = json.loads((b / bad / "no-compact-mark.json").read_text())
        marks[who] = (mark["reason"], sorted(mark))
    assert marks["ours"] == marks["thanos"]


def test_hash_func_sha256_as_thanos(tiny_bucket, tmp_path, pythanos_bin, thanos_bin):
    ours, theirs = copies(tiny_bucket, tmp_path, 2)
    extra = ["--downsampling.disable", "--hash-func=SHA256"]
    assert compact(pythanos_bin, ours, tmp_path / "o", *extra).returncode == 0
    assert compact(thanos_bin, theirs, tmp_path / "t", *extra).returncode == 0

    def files(b: Path) -> dict:
        return {(m["minTime"], m["maxTime"]): m["thanos"]["files"] for m in metas(b).values()
                if m["compaction"]["level"] > 1}

    got, want = files(ours), files(theirs)
    assert got and got == want
    assert all(f.get("hash", {}).get("hashFunc") == "SHA256" for fs in got.values() for f in fs
               if f["rel_path"] != "meta.json")


def test_no_downsample_mark_honoured_like_thanos_compact(tmp_path, pythanos_bin, thanos_bin):
    """Two 48h raw blocks, one marked no-downsample: both compactors downsample only the other."""
    src = tmp_path / "src"
    src.mkdir()
    ids = [write_block(src, {"cluster": "eu1"}, BASE + k * 48 * H, BASE + (k + 1) * 48 * H, series=5, step=60_000,
                       seed=k) for k in range(2)]
    (src / ids[0] / "no-downsample-mark.json").write_text(json.dumps(
        {"id": ids[0], "version": 1, "details": "test", "no_downsample_time": int(time.time()), "reason": "manual"}))
    ours, theirs = copies(src, tmp_path, 2)
    extra = ["--debug.max-compaction-level=3"]
    assert compact(pythanos_bin, ours, tmp_path / "o", *extra).returncode == 0
    assert compact(thanos_bin, theirs, tmp_path / "t", *extra).returncode == 0
    for b in (ours, theirs):
        down = [m for m in metas(b).values() if m["thanos"]["downsample"]["resolution"] == 300_000]
        assert [m["compaction"]["sources"] for m in down] == [[ids[1]]], b
    assert content(ours) == content(theirs)


def test_compacted_raw_blocks_dump_as_thanos_ones_in_promtool(tiny_bucket, tmp_path, pythanos_bin, thanos_bin,
                                                             promtool_bin):
    ours, theirs = copies(tiny_bucket, tmp_path, 2)
    assert compact(pythanos_bin, ours, tmp_path / "o", "--downsampling.disable").returncode == 0
    assert compact(thanos_bin, theirs, tmp_path / "t", "--downsampling.disable").returncode == 0

    def dump(b: Path) -> list[str]:
        (b / "wal").mkdir(exist_ok=True)  # promtool opens the directory as a Prometheus data dir
        r = subprocess.run([promtool_bin, "tsdb", "dump", str(b)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return sorted(r.stdout.splitlines())

    got = dump(ours)
    assert len(got) == sum(m["stats"]["numSamples"] for m in metas(ours).values())
    assert got == dump(theirs)
