"""``pythanos tools bucket cleanup | retention | downsample | rewrite`` against the real
``thanos tools bucket <same command>`` (v0.42) on identical copies of FILESYSTEM buckets.

What must match: the objects left after ``cleanup``; the deletion marks (and their details text)
``retention`` writes per resolution; the blocks ``downsample`` writes (index and chunks
byte-identical, meta.json equal but for ULID and upload time) and its
``thanos_compact_downsample_total`` counts; for ``rewrite``: the new block (index and chunks
byte-identical, series and samples, meta.json with ``thanos.rewrites``, ``source``,
``compaction.sources`` and stats), the change log Thanos leaves in ``<tmp.dir>/<new ULID>/change.log``,
the marks of ``--delete-blocks``, the untouched bucket of a dry run, and the exit code of a bad
configuration.

Where we differ on purpose (asserted as ours):

* ``cleanup``: a block whose delete stopped after ``meta.json`` (deletion mark still there) is
  deleted once its mark is older than ``--delete-delay``. Thanos treats it as an aborted partial
  upload and waits until none of its objects changed for 48h.
* ``downsample --single-run`` (ours only) runs one iteration and exits; Thanos' downsampler only
  runs continuously. Thanos' ``tools bucket downsample`` also downsamples blocks marked
  ``no-downsample-mark.json`` (its filter gathers the marks but nothing reads them, unlike in
  ``thanos compact``); ours honours the mark, as both compactors do.
* ``rewrite``, dry run: the change log lines are also printed to stderr (Thanos' log line says they
  are; Thanos only writes the file). A bad deletion request fails with one line naming the flag
  and the entry (Thanos: a Go stack trace); requests Thanos silently accepts but which do nothing
  or everything are refused (unknown keys, ``mint > maxt``, no ``matchers``).
* ``rewrite --prom-blocks``: ``thanos.segment_files`` lists the new block's segments; Thanos omits
  it for a Prometheus block (and keeps the old block's list for a Thanos block).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from peers import REGISTRY, free_port, http_get
from test_compact import content, fs_yaml, layout, metas

from pythanos.tsdb import ulid as _ulid
from pythanos.tsdb.block import BlockReader, BlockWriter
from pythanos.tsdb.meta import Compaction

H = 3600 * 1000
D = 24 * H
BASE = 1_740_000_000_000 // (2 * H) * (2 * H)  # early 2025, 2h aligned
NOW_MS = int(time.time() * 1000)  # at import: only for what must be old; blocks born "now" take the test's time
OLD_BORN = NOW_MS - 5 * D  # ULID time of blocks past any consistency delay


# --------------------------------------------------------------------------------------------- helpers

def bucket_cmd(binary: str, bucket: Path, *args: str, timeout: float = 300, env: dict | None = None
               ) -> subprocess.CompletedProcess:
    """One ``tools bucket <args>`` run of ``binary`` on ``bucket``."""
    return subprocess.run([binary, "tools", "bucket", *args, f"--objstore.config={fs_yaml(bucket)}"],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def objects(bucket: Path) -> set[str]:
    """Every object (file) and directory of the bucket, relative to it."""
    out = set()
    for root, dirs, files in os.walk(bucket):
        rel = os.path.relpath(root, bucket)
        if rel != ".":
            out.add(rel + "/")
        out.update(os.path.normpath(os.path.join(rel, f)) for f in files)
    return out


def make_block(bucket: Path, mint: int, maxt: int, labels: dict, *, born: int = OLD_BORN, res: int = 0,
               step: int = 60_000, series: int = 3, seed: int = 0, level: int = 1,
               sources: list[str] | None = None) -> str:
    rng = np.random.default_rng(seed)
    uid = _ulid.new(born)
    w = BlockWriter(bucket, thanos={"labels": labels, "source": "sidecar", "resolution": res}, min_time=mint,
                    max_time=maxt, block_ulid=uid, compaction=Compaction(level=level, sources=sources or [uid]))
    t = np.arange(mint, maxt, step, dtype=np.int64)
    for i in range(series):
        v = np.cumsum(rng.integers(0, 10, len(t))).astype(np.float64)
        if len(v) > 100:
            v[len(v) // 3:] -= v[len(v) // 3]  # a counter reset
        w.add_series({"__name__": "requests_total", "instance": f"i{i}"}, t, v)
    assert w.write() is not None
    return uid


def write_json(path: Path, obj: dict, mtime: float | None = None) -> None:
    path.write_text(json.dumps(obj))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def mark_deleted(bucket: Path, uid: str, when_s: float, details: str = "test") -> None:
    write_json(bucket / uid / "deletion-mark.json",
               {"id": uid, "version": 1, "details": details, "deletion_time": int(when_s)})


def age(bucket: Path, uid: str, seconds_ago: float) -> None:
    """Every object of the block last modified ``seconds_ago``."""
    t = time.time() - seconds_ago
    for p in (bucket / uid).rglob("*"):
        os.utime(p, (t, t))


def twin(src: Path, root: Path) -> tuple[Path, Path]:
    """Identical copies (file times kept) for us and for Thanos."""
    ours, theirs = root / "ours", root / "thanos"
    shutil.copytree(src, ours)
    shutil.copytree(src, theirs)
    return ours, theirs


def marks(bucket: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in bucket.glob("*/deletion-mark.json")}


# --------------------------------------------------------------------------------------------- cleanup

def test_cleanup_leaves_what_thanos_leaves(tmp_path, pythanos_bin, thanos_bin):
    src = tmp_path / "src"
    src.mkdir()
    now = time.time()
    eu, us = {"cluster": "eu1"}, {"cluster": "us1"}
    b = {}
    b["old_mark"] = make_block(src, BASE, BASE + 2 * H, eu, seed=1)
    mark_deleted(src, b["old_mark"], now - 3 * 86400)                     # past --delete-delay: deleted
    b["hidden_mark"] = make_block(src, BASE + 2 * H, BASE + 4 * H, eu, seed=2)
    mark_deleted(src, b["hidden_mark"], now - 30 * 3600)                  # past delay/2 only: kept
    b["young_mark"] = make_block(src, BASE + 4 * H, BASE + 6 * H, eu, seed=3)
    mark_deleted(src, b["young_mark"], now - 3600)                        # kept
    b["fresh_block"] = make_block(src, BASE + 6 * H, BASE + 8 * H, eu, seed=4, born=int(now * 1000))
    mark_deleted(src, b["fresh_block"], now - 3 * 86400)                  # inside --consistency-delay: kept
    b["other_shard"] = make_block(src, BASE, BASE + 2 * H, us, seed=5)
    mark_deleted(src, b["other_shard"], now - 3 * 86400)                  # not selected: kept
    b["half_deleted_old"] = make_block(src, BASE + 8 * H, BASE + 10 * H, eu, seed=6)
    mark_deleted(src, b["half_deleted_old"], now - 3 * 86400)
    (src / b["half_deleted_old"] / "meta.json").unlink()
    age(src, b["half_deleted_old"], 3 * 86400)                           # all old: deleted by both
    b["half_deleted_new"] = make_block(src, BASE + 10 * H, BASE + 12 * H, eu, seed=7)
    mark_deleted(src, b["half_deleted_new"], now - 3 * 86400)
    (src / b["half_deleted_new"] / "meta.json").unlink()                 # objects fresh: only ours deletes
    b["aborted_upload"] = make_block(src, BASE + 12 * H, BASE + 14 * H, eu, seed=8)
    (src / b["aborted_upload"] / "meta.json").unlink()
    age(src, b["aborted_upload"], 49 * 3600)                             # deleted
    b["upload_in_progress"] = make_block(src, BASE + 14 * H, BASE + 16 * H, eu, seed=9)
    (src / b["upload_in_progress"] / "meta.json").unlink()              # kept
    b["plain"] = make_block(src, BASE + 16 * H, BASE + 18 * H, eu, seed=10)
    # a block another block contains: neither tool marks it (that is the compactor's GC)
    b["inner"] = make_block(src, BASE + 18 * H, BASE + 20 * H, eu, seed=11)
    b["outer"] = make_block(src, BASE + 18 * H, BASE + 22 * H, eu, seed=12, level=2,
                            sources=[b["inner"], _ulid.new(OLD_BORN)])
    before = objects(src)
    ours, theirs = twin(src, tmp_path)

    selector = "--selector.relabel-config=[{action: keep, source_labels: [cluster], regex: eu1}]"
    r = bucket_cmd(thanos_bin, theirs, "cleanup", selector)
    assert r.returncode == 0, r.stderr[-3000:]
    r = bucket_cmd(pythanos_bin, ours, "cleanup", selector)
    assert r.returncode == 0, r.stderr[-3000:]

    def gone(bucket: Path) -> set[str]:
        return {n for n, u in b.items() if not (bucket / u).exists()}

    assert gone(theirs) == {"old_mark", "half_deleted_old", "aborted_upload"}
    assert gone(ours) == gone(theirs) | {"half_deleted_new"}
    half = {o for o in before if o.startswith(b["half_deleted_new"])}
    assert objects(ours) == objects(theirs) - half
    assert objects(theirs) <= before  # nothing written: no new marks
    assert marks(ours) == {u: m for u, m in marks(theirs).items() if u != b["half_deleted_new"]}


def test_cleanup_delete_delay_zero(tmp_path, pythanos_bin, thanos_bin):
    """``--delete-delay=0s``: every marked block goes at once (past the consistency delay)."""
    src = tmp_path / "src"
    src.mkdir()
    a = make_block(src, BASE, BASE + 2 * H, {"cluster": "eu1"}, seed=1)
    mark_deleted(src, a, time.time() - 5)
    keep = make_block(src, BASE + 2 * H, BASE + 4 * H, {"cluster": "eu1"}, seed=2)
    ours, theirs = twin(src, tmp_path)
    for binary, bucket in ((thanos_bin, theirs), (pythanos_bin, ours)):
        r = bucket_cmd(binary, bucket, "cleanup", "--delete-delay=0s")
        assert r.returncode == 0, r.stderr[-3000:]
    assert objects(ours) == objects(theirs)
    assert not (ours / a).exists() and (ours / keep / "meta.json").exists()


# ------------------------------------------------------------------------------------------- retention

def test_retention_marks_as_thanos_per_resolution(tmp_path, pythanos_bin, thanos_bin):
    src = tmp_path / "src"
    src.mkdir()
    now = NOW_MS // H * H
    eu = {"cluster": "eu1"}
    b = {
        "raw_expired": make_block(src, now - 5 * D, now - 3 * D, eu, seed=1, step=3_600_000),
        "raw_kept": make_block(src, now - 3 * D, now - 2 * D, eu, seed=2, step=3_600_000),
        "5m_expired": make_block(src, now - 20 * D, now - 11 * D, eu, res=300_000, seed=3, step=3_600_000),
        "5m_kept": make_block(src, now - 11 * D, now - 9 * D, eu, res=300_000, seed=4, step=3_600_000),
        "1h_expired": make_block(src, now - 60 * D, now - 40 * D, eu, res=3_600_000, seed=5, step=3_600_000),
        "1h_kept": make_block(src, now - 40 * D, now - 20 * D, {"cluster": "us1"}, res=3_600_000, seed=6,
                              step=3_600_000),
        "already_marked": make_block(src, now - 9 * D, now - 7 * D, {"cluster": "us1"}, seed=7,
                                     step=3_600_000),
        "too_fresh": make_block(src, now - 9 * D, now - 7 * D, {"cluster": "ap1"}, seed=8, step=3_600_000,
                                born=int(time.time() * 1000)),  # born now (not at import: a slow run ages it)
    }
    mark_deleted(src, b["already_marked"], time.time() - 3600, details="kept as it is")
    ours, theirs = twin(src, tmp_path)
    flags = ["--retention.resolution-raw=60h", "--retention.resolution-5m=10d", "--retention.resolution-1h=30d"]
    for binary, bucket in ((thanos_bin, theirs), (pythanos_bin, ours)):
        r = bucket_cmd(binary, bucket, "retention", *flags)
        assert r.returncode == 0, r.stderr[-3000:]

    def summary(bucket: Path) -> dict[str, tuple]:
        names = {u: n for n, u in b.items()}
        return {names[u]: (m["version"], m["details"], m["id"] == u) for u, m in marks(bucket).items()}

    assert summary(ours) == summary(theirs) == {
        "raw_expired": (1, "block exceeding retention of 60h0m0s", True),
        "5m_expired": (1, "block exceeding retention of 240h0m0s", True),
        "1h_expired": (1, "block exceeding retention of 720h0m0s", True),
        "already_marked": (1, "kept as it is", True),
    }
    assert objects(ours) == objects(theirs)
    # the marks are Thanos' bytes but for the time
    for u, m in marks(theirs).items():
        mine = json.loads((ours / u / "deletion-mark.json").read_text())
        assert list(mine) == list(m) and {**mine, "deletion_time": 0} == {**m, "deletion_time": 0}
    # 0d keeps a resolution forever
    r = bucket_cmd(pythanos_bin, ours, "retention", "--retention.resolution-raw=0d")
    assert r.returncode == 0 and objects(ours) == objects(theirs), r.stderr[-3000:]


# ------------------------------------------------------------------------------------------ downsample

@pytest.fixture(scope="module")
def raw_bucket(tmp_path_factory) -> Path:
    """Raw blocks for both downsampling passes: 14d (-> 5m -> 1h), 2d (-> 5m), 1d (nothing), and a
    3d block marked no-downsample."""
    b = tmp_path_factory.mktemp("downsample") / "bucket"
    b.mkdir()
    make_block(b, BASE, BASE + 14 * D, {"cluster": "eu1"}, step=60_000, series=4, seed=1, level=4)
    make_block(b, BASE, BASE + 2 * D, {"cluster": "us1"}, step=15_000, series=3, seed=2, level=3)
    make_block(b, BASE + 2 * D, BASE + 3 * D, {"cluster": "us1"}, step=15_000, series=3, seed=3, level=2)
    nd = make_block(b, BASE, BASE + 3 * D, {"cluster": "ap1"}, step=60_000, series=2, seed=4, level=3)
    write_json(b / nd / "no-downsample-mark.json",
               {"id": nd, "version": 1, "details": "test", "no_downsample_time": int(time.time()),
                "reason": "manual"})
    return b


def downsampled(bucket: Path) -> dict[tuple, dict]:
    """meta.json of every downsampled block but ULID and upload time, by (range, resolution, labels)."""
    out = {}
    for m in metas(bucket).values():
        if m["thanos"]["downsample"]["resolution"] == 0:
            continue
        m = json.loads(json.dumps(m))
        m.pop("ulid")
        m["thanos"].pop("upload_time")
        out[(m["minTime"], m["maxTime"], m["thanos"]["downsample"]["resolution"],
             json.dumps(m["thanos"]["labels"]))] = m
    return out


def metric(body: str, name: str, resolution: str) -> float | None:
    m = re.search(rf'^{name}\{{resolution="{resolution}"\}} (\S+)$', body, re.M)
    return float(m.group(1)) if m else None


def test_downsample_single_run_equals_thanos_downsampler(raw_bucket, tmp_path, pythanos_bin, thanos_bin):
    ours, theirs = twin(raw_bucket, tmp_path)
    # Thanos' downsampler runs until stopped: wait for its blocks and its second iteration
    port = free_port()
    p = REGISTRY.start("thanos-downsample", [thanos_bin, "tools", "bucket", "downsample",
                                             f"--objstore.config={fs_yaml(theirs)}", "--wait-interval=1s",
                                             f"--data-dir={tmp_path / 'thanos-data'}",
                                             f"--http-address=127.0.0.1:{port}"], tmp_path)
    try:
        def done() -> bool:
            res = sorted(m["thanos"]["downsample"]["resolution"] for m in metas(theirs).values())
            return res.count(300_000) == 3 and res.count(3_600_000) == 1 and \
                p.log(10_000).count("start first pass of downsampling") >= 2
        p.wait_ready(done, timeout=600, what="downsampled blocks and a second iteration")
        body = http_get(f"http://127.0.0.1:{port}/metrics")[1].decode()
        thanos_counts = (metric(body, "thanos_compact_downsample_total", "0"),
                         metric(body, "thanos_compact_downsample_total", "300000"))
    finally:
        p.stop()
    r = subprocess.run([pythanos_bin, "tools", "bucket", "downsample", f"--objstore.config={fs_yaml(ours)}",
                        "--single-run", f"--data-dir={tmp_path / 'ours-data'}",
                        f"--http-address=127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # Thanos' tool downsamples the block marked no-downsample too (its filter only gathers the
    # marks); ours leaves it, as the compactor does
    (nd,) = [p.parent.name for p in theirs.glob("*/no-downsample-mark.json")]
    (extra,) = [u for u, m in metas(theirs).items() if m["compaction"]["sources"] == [nd] and u != nd]
    assert not [u for u, m in metas(ours).items() if m["compaction"]["sources"] == [nd] and u != nd]
    assert thanos_counts == (3.0, 1.0)
    shutil.rmtree(theirs / extra)
    assert layout(ours) == layout(theirs)
    assert content(ours) == content(theirs)
    assert downsampled(ours) == downsampled(theirs)
    assert len(downsampled(ours)) == 3


def test_downsample_serves_metrics_while_running(raw_bucket, tmp_path, pythanos_bin, thanos_bin):
    """Without ``--single-run`` ours keeps running, with /metrics (Thanos' counter names and labels)."""
    b = tmp_path / "bucket"
    shutil.copytree(raw_bucket, b)
    port = free_port()
    p = REGISTRY.start("pythanos-downsample", [pythanos_bin, "tools", "bucket", "downsample",
                                               f"--objstore.config={fs_yaml(b)}", f"--data-dir={tmp_path / 'data'}",
                                               f"--http-address=127.0.0.1:{port}"], tmp_path)
    p.url = url = f"http://127.0.0.1:{port}"
    try:
        p.wait_http_ready("/-/ready")

        def counted() -> bool:
            body = http_get(url + "/metrics")[1].decode()
            return (metric(body, "thanos_compact_downsample_total", "0") == 2.0
                    and metric(body, "thanos_compact_downsample_total", "300000") == 1.0)
        p.wait_ready(counted, timeout=120, what="thanos_compact_downsample_total")
        body = http_get(url + "/metrics")[1].decode()
        assert metric(body, "thanos_compact_downsample_failures_total", "0") in (None, 0.0)
        assert p.alive()
        assert len(downsampled(b)) == 3
    finally:
        rc = p.stop()
    assert rc == 0, p.log(40)


# --------------------------------------------------------------------------------------------- rewrite

ODD = 'say "hi"\n\tà la \\ carte'  # Go-quoted in the change log


@pytest.fixture(scope="module")
def rewrite_src(tmp_path_factory) -> tuple[Path, str]:
    """One 2h block cut as Prometheus' head cuts chunks (uneven sample counts), with series to
    delete, cut, rename, drop and merge."""
    b = tmp_path_factory.mktemp("rewrite") / "bucket"
    rng = np.random.default_rng(7)
    uid = _ulid.new(OLD_BORN)
    w = BlockWriter(b, thanos={"labels": {"cluster": "eu1"}, "source": "sidecar"}, min_time=BASE,
                    max_time=BASE + 2 * H, block_ulid=uid, cutting="head")
    t15 = np.arange(BASE, BASE + 2 * H, 15_000, dtype=np.int64)
    for job in ("api", "db"):
        for i in range(3):
            w.add_series({"__name__": "up", "job": job, "instance": f"i{i}"}, t15, rng.normal(size=len(t15)))
    t7 = np.sort(rng.choice(np.arange(BASE, BASE + 2 * H, 1000), 900, replace=False))
    w.add_series({"__name__": "other", "job": "api", "path": ODD}, t7, np.cumsum(rng.random(len(t7))))
    t30 = np.arange(BASE, BASE + 2 * H, 30_000, dtype=np.int64)
    w.add_series({"__name__": "merge_me", "src": "x"}, t30, rng.random(len(t30)))
    w.add_series({"__name__": "merge_me", "src": "y"}, t30 + 15_000, rng.random(len(t30)))
    assert w.write() is not None
    return b, uid


DELETE_SERIES = """
- matchers: '{job="api", instance="i1"}'
- matchers: 'other{path!=""}'
  request_id: whole
- matchers: '{__name__="up", absent=~".*"}'   # a matcher on an absent label never matches
"""
DELETE_INTERVALS = f"""
- matchers: 'up{{job="db"}}'
  intervals:
  - {{mint: {BASE + 1_000_000}, maxt: {BASE + 3_000_000}}}
  - {{mint: {BASE + 3_000_001}, maxt: {BASE + 4_000_000}}}
  request_id: r1
- matchers: '{{__name__=~"up|merge_me", instance!="i0"}}'
  intervals: [{{mint: {BASE + 6_000_000}, maxt: {BASE + 6_100_000}}}]
"""
RELABEL = """
- action: replace
  source_labels: [job]
  target_label: team
  regex: (.+)
  replacement: team-$1
- action: labeldrop
  regex: job
- action: drop
  source_labels: [__name__, instance]
  regex: up;i2
- action: labeldrop
  regex: src
"""
CASES = {
    "delete-series": ["--rewrite.to-delete-config", DELETE_SERIES],
    "delete-intervals": ["--rewrite.to-delete-config", DELETE_INTERVALS],
    "relabel": ["--rewrite.to-relabel-config", RELABEL],
    "relabel-then-delete": ["--rewrite.to-relabel-config", RELABEL, "--rewrite.to-delete-config",
                            f"- matchers: '{{team=\"team-db\"}}'\n  intervals: [{{mint: {BASE}, maxt: {BASE + H}}}]"],
}


def rewrite_run(binary: str, bucket: Path, tmp: Path, uid: str, case: str, *extra: str
                ) -> subprocess.CompletedProcess:
    args = CASES[case]
    flags = [f"{args[i]}={args[i + 1]}" for i in range(0, len(args), 2)]
    return bucket_cmd(binary, bucket, "rewrite", f"--id={uid}", f"--tmp.dir={tmp}", *flags, *extra)


def change_log(tmp: Path) -> tuple[str, str]:
    """(new ULID, change log text) of the one change log under ``tmp``."""
    logs = list(tmp.glob("*/change.log"))
    assert len(logs) == 1, logs
    return logs[0].parent.name, logs[0].read_text()


def series_of(block_dir: Path) -> dict[tuple, tuple]:
    with BlockReader.open_dir(block_dir) as r:
        return {lbls: (t.tolist(), v.view(np.int64).tolist()) for lbls, t, v in r.series()}


@pytest.mark.parametrize("case", list(CASES))
def test_rewrite_equals_thanos(rewrite_src, tmp_path, pythanos_bin, thanos_bin, case):
    src, uid = rewrite_src
    ours, theirs = twin(src, tmp_path)
    r = rewrite_run(thanos_bin, theirs, tmp_path / "t-tmp", uid, case, "--no-dry-run", "--delete-blocks")
    assert r.returncode == 0, r.stderr[-3000:]
    r = rewrite_run(pythanos_bin, ours, tmp_path / "o-tmp", uid, case, "--no-dry-run", "--delete-blocks")
    assert r.returncode == 0, r.stderr[-3000:]
    # the change log sits beside the new block in <tmp.dir>/<new ULID>/ (not uploaded)
    t_new, t_log = change_log(tmp_path / "t-tmp")
    o_new, o_log = change_log(tmp_path / "o-tmp")
    assert o_log == t_log and t_log
    assert set(metas(theirs)) == {uid, t_new} and set(metas(ours)) == {uid, o_new}
    assert sorted(os.listdir(ours / o_new)) == sorted(os.listdir(theirs / t_new)) == ["chunks", "index",
                                                                                        "meta.json"]
    assert (tmp_path / "o-tmp" / o_new / "meta.json").exists()
    # the new block: same bytes, series, samples, meta
    assert series_of(ours / o_new) == series_of(theirs / t_new)
    assert (ours / o_new / "index").read_bytes() == (theirs / t_new / "index").read_bytes()
    assert (ours / o_new / "chunks" / "000001").read_bytes() == (theirs / t_new / "chunks" / "000001").read_bytes()
    mo, mt = metas(ours)[o_new], metas(theirs)[t_new]
    assert mo["compaction"]["sources"] == [o_new] and mt["compaction"]["sources"] == [t_new]
    assert mo["thanos"]["source"] == "bucket.rewrite"
    assert mo["thanos"]["rewrites"][0]["sources"] == [uid]
    for m, new in ((mo, o_new), (mt, t_new)):
        assert m.pop("ulid") == new
        m["compaction"]["sources"] = []
        m["thanos"].pop("upload_time")
    assert json.dumps(mo, indent=1) == json.dumps(mt, indent=1)
    assert mo["stats"]["numSeries"] < metas(ours)[uid]["stats"]["numSeries"] or case.startswith("delete-int")
    # --delete-blocks: the old block marked as Thanos marks it
    mk_o, mk_t = marks(ours)[uid], marks(theirs)[uid]
    assert {**mk_o, "deletion_time": 0} == {**mk_t, "deletion_time": 0}
    assert mk_o["details"] == "block rewritten"
    assert objects(ours) - {f"{o_new}/", f"{o_new}/index", f"{o_new}/meta.json", f"{o_new}/chunks/",
                            f"{o_new}/chunks/000001"} == \
        objects(theirs) - {f"{t_new}/", f"{t_new}/index", f"{t_new}/meta.json", f"{t_new}/chunks/",
                           f"{t_new}/chunks/000001"}


def test_rewrite_change_log_details(rewrite_src, tmp_path, pythanos_bin):
    """What the logs above contain: whole series, cut chunks (merged intervals), Go quoting."""
    src, uid = rewrite_src
    b = tmp_path / "b"
    shutil.copytree(src, b)
    r = rewrite_run(pythanos_bin, b, tmp_path / "t1", uid, "delete-series")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = change_log(tmp_path / "t1")[1].splitlines()
    assert len(lines) == 2
    assert lines[0].startswith('Deleted {__name__="other", job="api", path="say \\"hi\\"\\n\\tà la \\\\ carte"} [{')
    assert lines[1] == f'Deleted {{__name__="up", instance="i1", job="api"}} [{{{BASE} {BASE + 2 * H - 15_000}}}]'
    r = rewrite_run(pythanos_bin, b, tmp_path / "t2", uid, "delete-intervals")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = change_log(tmp_path / "t2")[1].splitlines()
    db = [ln for ln in lines if 'job="db"' in ln]
    assert len(db) == 3
    # the two touching intervals act as one, cut at chunk boundaries
    spans = [tuple(map(int, s.split())) for s in re.findall(r"\{(\d+ \d+)\}", db[0])]
    assert spans[0][0] == BASE + 1_000_000 and spans[-1][1] == BASE + 4_000_000
    assert all(a <= b for a, b in spans) and spans == sorted(spans)


def test_rewrite_dry_run_changes_nothing(rewrite_src, tmp_path, pythanos_bin, thanos_bin):
    src, uid = rewrite_src
    before = objects(src)
    ours, theirs = twin(src, tmp_path)
    for case in ("delete-intervals", "relabel-then-delete"):
        rt = rewrite_run(thanos_bin, theirs, tmp_path / "t-tmp", uid, case)
        ro = rewrite_run(pythanos_bin, ours, tmp_path / "o-tmp", uid, case)
        assert rt.returncode == ro.returncode == 0, (rt.stderr[-2000:], ro.stderr[-2000:])
        assert objects(ours) == objects(theirs) == before
        t_log, o_log = change_log(tmp_path / "t-tmp")[1], change_log(tmp_path / "o-tmp")[1]
        assert o_log == t_log and t_log
        # ours also prints the changes (Thanos: only the file, though its log says stderr)
        printed = [ln for ln in ro.stderr.splitlines() if ln.startswith(("Deleted ", "Relabelled "))]
        assert printed == o_log.splitlines()
        assert "dry run finished" in ro.stderr and "dry run finished" in rt.stderr
    # --delete-blocks does nothing on a dry run
    ro = rewrite_run(pythanos_bin, ours, tmp_path / "o-tmp", uid, "relabel", "--delete-blocks")
    assert ro.returncode == 0 and objects(ours) == before
    # no change log with --no-rewrite.add-change-log
    ro = rewrite_run(pythanos_bin, ours, tmp_path / "o-tmp", uid, "relabel", "--no-rewrite.add-change-log",
                     "--no-dry-run")
    assert ro.returncode == 0, ro.stderr[-2000:]
    assert not list((tmp_path / "o-tmp").glob("*/change.log"))


def test_rewrite_prometheus_block(tmp_path, pythanos_bin, thanos_bin):
    """A block without a thanos section: refused unless --prom-blocks, then rewritten as Thanos does."""
    src = tmp_path / "src"
    w = BlockWriter(src, min_time=BASE, max_time=BASE + 2 * H, block_ulid=_ulid.new(OLD_BORN))
    t = np.arange(BASE, BASE + 2 * H, 15_000, dtype=np.int64)
    for job in "ab":
        w.add_series({"__name__": "up", "job": job}, t, np.ones(len(t)))
    uid = w.write().ulid
    ours, theirs = twin(src, tmp_path)
    cfg = "--rewrite.to-delete-config=- matchers: '{job=\"a\"}'"
    rt = bucket_cmd(thanos_bin, theirs, "rewrite", f"--id={uid}", f"--tmp.dir={tmp_path / 't'}", cfg, "--no-dry-run")
    ro = bucket_cmd(pythanos_bin, ours, "rewrite", f"--id={uid}", f"--tmp.dir={tmp_path / 'o'}", cfg, "--no-dry-run")
    assert rt.returncode == ro.returncode == 1
    assert "empty external labels are not allowed" in rt.stderr and "empty external labels" in ro.stderr
    assert set(metas(ours)) == set(metas(theirs)) == {uid}
    for binary, bucket, tmp in ((thanos_bin, theirs, "t"), (pythanos_bin, ours, "o")):
        r = bucket_cmd(binary, bucket, "rewrite", f"--id={uid}", f"--tmp.dir={tmp_path / tmp}", cfg, "--no-dry-run",
                       "--prom-blocks")
        assert r.returncode == 0, r.stderr[-3000:]
    (o_new,) = set(metas(ours)) - {uid}
    (t_new,) = set(metas(theirs)) - {uid}
    mo, mt = metas(ours)[o_new], metas(theirs)[t_new]
    assert mo["thanos"].pop("segment_files") == ["000001"] and "segment_files" not in mt["thanos"]
    for m in (mo, mt):
        m.pop("ulid")
        m["compaction"]["sources"] = []
        m["thanos"].pop("upload_time")
    assert mo == mt
    assert series_of(ours / o_new) == series_of(theirs / t_new)


BAD = [
    # (config, what our one-line error must name)
    ("- matchers: '{job=\"a\"}'\n- matchers: 'up{'", "entry 1"),
    ("- matchers: '{job=~\"(\"}'", "entry 0"),
    ("matchers: '{job=\"a\"}'", "list"),
    ("- matchers: '{job=\"a\"}'\n  intervals: [{mint: x, maxt: 2}]", "entry 0: interval 0"),
    ("[", "invalid YAML"),
]


@pytest.mark.parametrize("cfg,what", BAD)
def test_rewrite_bad_delete_config(rewrite_src, tmp_path, pythanos_bin, thanos_bin, cfg, what):
    src, uid = rewrite_src
    ours, theirs = twin(src, tmp_path)
    flag = f"--rewrite.to-delete-config={cfg}"
    rt = bucket_cmd(thanos_bin, theirs, "rewrite", f"--id={uid}", f"--tmp.dir={tmp_path / 't'}", flag)
    ro = bucket_cmd(pythanos_bin, ours, "rewrite", f"--id={uid}", f"--tmp.dir={tmp_path / 'o'}", flag)
    assert rt.returncode == ro.returncode == 1, (rt.stderr[-2000:], ro.stderr[-2000:])
    errors = [ln for ln in ro.stderr.splitlines() if "level=error" in ln]
    assert len(errors) == 1 and len(ro.stderr.splitlines()) == 1, ro.stderr
    assert "--rewrite.to-delete-config" in errors[0] and what in errors[0], errors[0]
    assert objects(ours) == objects(theirs) == objects(src)


@pytest.mark.parametrize("cfg,what", [
    ("- matchers: '{job=\"a\"}'\n  foo: 1", "unknown key(s) foo"),                     # Thanos ignores it
    ("- matchers: '{job=\"a\"}'\n  intervals: [{mint: 5, maxt: 2}]", "mint 5 is after maxt 2"),  # a no-op there
    ("- intervals: [{mint: 1, maxt: 2}]", "'matchers'"),                               # Thanos: every series
    ("- matchers: '{}'", "every series"),
])
def test_rewrite_refuses_what_thanos_lets_through(rewrite_src, tmp_path, pythanos_bin, cfg, what):
    src, uid = rewrite_src
    r = bucket_cmd(pythanos_bin, src, "rewrite", f"--id={uid}", f"--tmp.dir={tmp_path / 'o'}",
                   f"--rewrite.to-delete-config={cfg}")
    assert r.returncode == 1 and what in r.stderr and "entry 0" in r.stderr, r.stderr


def test_rewrite_missing_config_and_relabel_error(rewrite_src, tmp_path, pythanos_bin, thanos_bin):
    src, uid = rewrite_src
    for binary in (thanos_bin, pythanos_bin):
        r = bucket_cmd(binary, src, "rewrite", f"--id={uid}", f"--tmp.dir={tmp_path / 'x'}")
        assert r.returncode == 1 and "rewrite configuration should be provided" in r.stderr, r.stderr
        r = bucket_cmd(binary, src, "rewrite", f"--id={uid}", f"--tmp.dir={tmp_path / 'x'}",
                       "--rewrite.to-relabel-config=- action: nope")
        assert r.returncode == 1 and "unknown relabel action" in r.stderr and "nope" in r.stderr, r.stderr
    r = bucket_cmd(pythanos_bin, src, "rewrite", f"--id={uid}", f"--tmp.dir={tmp_path / 'x'}",
                   "--rewrite.to-relabel-config=- action: nope")
    assert "--rewrite.to-relabel-config" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_rewrite_config_file_with_environment(rewrite_src, tmp_path, pythanos_bin, thanos_bin):
    """``--rewrite.to-delete-config-file`` with ``$(VAR)`` substituted from the environment."""
    src, uid = rewrite_src
    ours, theirs = twin(src, tmp_path)
    cfg = tmp_path / "delete.yaml"
    cfg.write_text("- matchers: '{job=\"$(JOB_TO_DELETE)\"}'\n")
    for binary, bucket, tmp in ((thanos_bin, theirs, "t"), (pythanos_bin, ours, "o")):
        r = bucket_cmd(binary, bucket, "rewrite", f"--id={uid}", f"--tmp.dir={tmp_path / tmp}",
                       f"--rewrite.to-delete-config-file={cfg}", env={"JOB_TO_DELETE": "db"})
        assert r.returncode == 0, r.stderr[-2000:]
        r = bucket_cmd(binary, bucket, "rewrite", f"--id={uid}", f"--tmp.dir={tmp_path / tmp}-unset",
                       f"--rewrite.to-delete-config-file={cfg}")
        assert r.returncode == 1 and "unset environment variable" in r.stderr and "JOB_TO_DELETE" in r.stderr
    t_log, o_log = change_log(tmp_path / "t")[1], change_log(tmp_path / "o")[1]
    assert o_log == t_log and t_log.count('job="db"') == 3


def test_rewrite_shows_progress_on_a_terminal_only(rewrite_src, tmp_path, pythanos_bin):
    from test_tools_bucket_verify import _run_on_pty

    src, uid = rewrite_src
    b = tmp_path / "b"
    shutil.copytree(src, b)
    cfg = "type: FILESYSTEM\nconfig:\n  directory: %s\n" % b
    rc, term = _run_on_pty("rewrite", "--objstore.config", cfg, f"--id={uid}", f"--tmp.dir={tmp_path / 't1'}",
                           f"--rewrite.to-delete-config={DELETE_SERIES}")
    assert rc == 0, term
    assert f"rewrite {uid}: 0/9 series" in term and "\x1b[K" in term, term
    piped = bucket_cmd(pythanos_bin, b, "rewrite", f"--id={uid}",
                       f"--tmp.dir={tmp_path / 't2'}", f"--rewrite.to-delete-config={DELETE_SERIES}")
    assert piped.returncode == 0 and "\r" not in piped.stderr and "/9 series" not in piped.stderr
