"""``pythanos tools bucket verify`` against a real ``thanos tools bucket verify`` (v0.42) on the same
FILESYSTEM buckets: the same issues found (same groups, ULIDs, ranges and error texts), the same exit
codes, repairs that give what Thanos' repair gives (byte-identical repaired blocks), and our extra
``--repair`` for ``overlapped_blocks``."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pythanos.tsdb import index as _index
from pythanos.tsdb import ulid as _ulid
from pythanos.tsdb.block import BlockWriter
from pythanos.tsdb.chunkenc import encode_xor_many
from pythanos.tsdb.chunks import ChunkWriter
from pythanos.tsdb.meta import BlockMeta, BlockStats, Compaction, ThanosMeta, marker_from_json, write_meta

REPO = Path(__file__).resolve().parent.parent
PYTHANOS = Path(sys.executable).parent / "pythanos"
H = 3600 * 1000
BASE = 1_700_000_000_000 // (2 * H) * (2 * H)
BORN = 1_700_100_000_000  # ULID times: a larger "born" makes a newer block


# --------------------------------------------------------------------------------------------- helpers

def make_block(root: Path, mint: int, maxt: int, labels: dict, *, born: int, series: int = 3,
               res: int = 0, level: int = 1, sources: list[str] | None = None) -> str:
    uid = _ulid.new(born)
    w = BlockWriter(root, thanos={"labels": labels, "source": "sidecar", "resolution": res}, min_time=mint,
                    max_time=maxt, block_ulid=uid, compaction=Compaction(level=level, sources=sources or [uid]))
    t = np.arange(mint, maxt, 60_000, dtype=np.int64)
    for i in range(series):
        w.add_series({"__name__": "up", "instance": f"i{i}"}, t, np.full(len(t), float(i)))
    assert w.write() is not None
    return uid


def clone_block(root: Path, uid: str, born: int) -> str:
    """The same block (same sources, range, stats, data) under a new ULID: a compaction done twice."""
    new = _ulid.new(born)
    shutil.copytree(root / uid, root / new)
    meta = json.loads((root / new / "meta.json").read_text())
    meta["ulid"] = new
    (root / new / "meta.json").write_text(json.dumps(meta, indent="\t") + "\n")
    return new


def _xor(ts) -> bytes:
    ts = np.asarray(ts, dtype=np.int64)
    buf, _ = encode_xor_many(ts, np.ones(len(ts)), np.array([0, len(ts)], dtype=np.int64))
    return bytes(buf)


def make_raw_block(root: Path, series, mint: int, maxt: int, labels: dict, born: int) -> str:
    """A block written as given, broken or not: ``series`` is ``[(label pairs in index order,
    [timestamps of each chunk])]``; chunk metas may overlap, repeat or leave the block's range."""
    uid = _ulid.new(born)
    bd = root / uid
    (bd / "chunks").mkdir(parents=True)
    syms = {s for lbls, _ in series for pair in lbls for s in pair}
    orig = _index.put_uvarint
    _index.put_uvarint = lambda b, n: orig(b, n & ((1 << 64) - 1))  # negative deltas wrap, as in Go
    try:
        iw = _index.IndexWriter(str(bd / "index"), syms, style="prom3")
        st = BlockStats()
        with ChunkWriter(bd / "chunks") as cw:
            for lbls, chunks in series:
                refs = cw.write_chunks([(1, _xor(c)) for c in chunks])
                iw._emit_series(list(lbls), [(int(c[0]), int(c[-1]), r) for c, r in zip(chunks, refs)])
                st.num_series += 1
                st.num_chunks += len(chunks)
                st.num_samples += sum(len(c) for c in chunks)
        iw.close()
    finally:
        _index.put_uvarint = orig
    write_meta(bd, BlockMeta(ulid=uid, min_time=mint, max_time=maxt, stats=st, compaction=Compaction(1, [uid]),
                             thanos=ThanosMeta(labels=labels, source="sidecar")))
    return uid


def bucket_yaml(root: Path) -> str:
    return f"type: FILESYSTEM\nconfig:\n  directory: {root}\n"


def _ours() -> str:
    if not PYTHANOS.exists():
        pytest.fail(f"{PYTHANOS} missing: install the project into the venv (pip install -e .)")
    return str(PYTHANOS)


def run(binary: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, "tools", "bucket", *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TZ="UTC"), cwd=REPO)


_PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)')


def logfmt(stderr: str) -> list[dict]:
    out = []
    for line in stderr.splitlines():
        rec = {}
        for k, v in _PAIR.findall(line):
            rec[k] = json.loads(v) if v.startswith('"') else v
        if rec:
            out.append(rec)
    return out


def msgs(stderr: str, msg: str) -> list[dict]:
    return [r for r in logfmt(stderr) if r.get("msg") == msg]


def overlap_report(stderr: str) -> dict[str, set[tuple]]:
    """group -> the set of overlaps, each (range header, blocks). Thanos prints a Go map (lines in any
    order) and sorts blocks by minTime with an unstable sort (equal minTimes in any order)."""
    out: dict[str, set[tuple]] = {}
    for r in msgs(stderr, "found overlapped blocks"):
        for line in r["overlap"].split("\n"):
            head, _, blocks = line.partition("]: ")
            out.setdefault(r["group"], set()).add((head + "]", tuple(sorted(re.findall(r"<[^>]*>", blocks)))))
    return out


def both(thanos_bin: str, *args: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    return run(thanos_bin, *args), run(_ours(), *args)


# ------------------------------------------------------------------------------------------- buckets

@pytest.fixture
def clean(tmp_path) -> Path:
    root = tmp_path / "clean"
    root.mkdir()
    for i in range(3):
        make_block(root, BASE + i * 2 * H, BASE + (i + 1) * 2 * H, {"cluster": "eu1", "replica": "a"}, born=BORN + i)
    # the same times in other groups (other labels, other resolution) are no overlap
    make_block(root, BASE, BASE + 2 * H, {"cluster": "eu1", "replica": "b"}, born=BORN + 10)
    make_block(root, BASE, BASE + 6 * H, {"cluster": "eu1", "replica": "a"}, res=300_000, born=BORN + 11)
    return root


@pytest.fixture
def overlapping(tmp_path) -> tuple[Path, dict]:
    """Group eu1: a 2h block overlapped by a later 4h one and, elsewhere, three blocks in a chain;
    group us: two identical ranges; group eu1@5m: clean."""
    root = tmp_path / "overlap"
    root.mkdir()
    eu, us = {"cluster": "eu1"}, {"cluster": "us"}
    ids = {
        "a": make_block(root, BASE, BASE + 2 * H, eu, born=BORN + 1),
        "b": make_block(root, BASE + H, BASE + 5 * H, eu, born=BORN + 2),
        "c": make_block(root, BASE + 10 * H, BASE + 12 * H, eu, born=BORN + 3),
        "d": make_block(root, BASE + 11 * H, BASE + 13 * H, eu, born=BORN + 4),
        "e": make_block(root, BASE + 12 * H + 30 * 60_000, BASE + 14 * H, eu, born=BORN + 5),
        "f": make_block(root, BASE + 20 * H, BASE + 22 * H, eu, born=BORN + 6),
        "u1": make_block(root, BASE, BASE + 2 * H, us, born=BORN + 7),
        "u2": make_block(root, BASE, BASE + 2 * H, us, born=BORN + 8, series=4),
        "r": make_block(root, BASE, BASE + 24 * H, eu, res=300_000, born=BORN + 9),
    }
    return root, ids


# ---------------------------------------------------------------------------------------- detection

def test_clean_bucket_no_issues_like_thanos(thanos_bin, clean):
    cfg = bucket_yaml(clean)
    theirs, ours = both(thanos_bin, "verify", "--objstore.config", cfg,
                        "-i", "overlapped_blocks", "-i", "duplicated_compaction", "-i", "index_known_issues")
    assert theirs.returncode == ours.returncode == 0, ours.stderr
    for p in (theirs, ours):
        assert not [r for r in logfmt(p.stderr) if r.get("level") in ("warn", "error")
                    and r.get("msg") != "Found duplicated blocks that are ok to be removed"], p.stderr
        assert msgs(p.stderr, "verify task completed")
    # same task lines, same fields
    assert [r["verifiers"] for r in msgs(ours.stderr, "Starting verify task")] == \
        [r["verifiers"] for r in msgs(theirs.stderr, "Starting verify task")] == \
        ["overlapped_blocks,duplicated_compaction,index_known_issues"]


def test_overlaps_reported_as_thanos(thanos_bin, overlapping):
    root, ids = overlapping
    cfg = bucket_yaml(root)
    theirs, ours = both(thanos_bin, "verify", "--objstore.config", cfg)
    assert theirs.returncode == ours.returncode == 0, ours.stderr
    t, o = overlap_report(theirs.stderr), overlap_report(ours.stderr)
    assert o == t
    assert len(o) == 2  # eu1 raw and us; eu1 at 5m is clean
    text = repr(o)
    for k in ("a", "b", "c", "d", "e", "u1", "u2"):
        assert ids[k] in text
    assert ids["f"] not in text and ids["r"] not in text
    for r in msgs(ours.stderr, "found overlapped blocks"):
        assert r["level"] == "warn" and r["verifier"] == "overlapped_blocks"
    # the index check ran on every block (ours and theirs: nothing found)
    assert not msgs(ours.stderr, "detected issue") and not msgs(theirs.stderr, "detected issue")


def test_duplicated_compaction_reported_as_thanos(thanos_bin, overlapping):
    root, ids = overlapping
    dup = clone_block(root, ids["f"], born=BORN + 20)
    cfg = bucket_yaml(root)
    theirs, ours = both(thanos_bin, "verify", "--objstore.config", cfg, "-i", "duplicated_compaction")
    assert theirs.returncode == ours.returncode == 0, ours.stderr

    def dups(stderr):
        return {(r["group"], r["range-min"], r["range-max"]) for r in msgs(stderr, "found duplicated blocks")}

    assert dups(ours.stderr) == dups(theirs.stderr) and len(dups(ours.stderr)) == 1

    def unrelated(stderr):
        return {(r["group"], r["range"], tuple(sorted(re.findall(r"<[^>]*>", r["overlap"])))) for r in
                msgs(stderr, "found overlapped blocks, but all of the blocks are unique. Seems like unrelated issue. "
                             "Ignoring overlap")}

    # a-b, c-d and d-e (two sets: c has ended where e starts), u1-u2
    assert unrelated(ours.stderr) == unrelated(theirs.stderr) and len(unrelated(ours.stderr)) == 4
    (t_sum,), (o_sum,) = (msgs(p.stderr, "Found duplicated blocks that are ok to be removed") for p in (theirs, ours))
    assert o_sum["num"] == t_sum["num"] == "1"
    # Thanos keeps whichever of the two its sort put first; we keep the older one
    assert t_sum["ULIDs"] in (f"[{ids['f']}]", f"[{dup}]") and o_sum["ULIDs"] == f"[{dup}]"


def test_index_issues_reported_as_thanos(thanos_bin, tmp_path):
    root = tmp_path / "idx"
    root.mkdir()
    base = BASE
    r = lambda a, b: np.arange(a, b, 10_000)  # noqa: E731
    broken = make_raw_block(root, [
        ([("__name__", "up"), ("job", "a")], [r(base, base + 100_000), r(base + 50_000, base + 150_000)]),
        ([("__name__", "up"), ("job", "b")], [r(base, base + 100_000), r(base, base + 100_000),
                                              r(base + 200_000, base + 300_000)]),
        ([("__name__", "up"), ("job", "c")], [r(base, base + 100_000), r(base + 2 * H, base + 2 * H + 100_000),
                                              r(base + 3 * H, base + 3 * H + 100_000)]),
        ([("job", "d"), ("__name__", "up")], [r(base, base + 100_000)]),
    ], base, base + 2 * H, {"cluster": "x"}, born=BORN + 1)
    fine = make_block(root, base, base + 2 * H, {"cluster": "y"}, born=BORN + 2)
    corrupt = make_block(root, base, base + 2 * H, {"cluster": "z"}, born=BORN + 3)
    idx = bytearray((root / corrupt / "index").read_bytes())
    idx[64] ^= 0xFF  # an early byte of the index: a CRC mismatch
    (root / corrupt / "index").write_bytes(bytes(idx))
    cfg = bucket_yaml(root)
    theirs, ours = both(thanos_bin, "verify", "--objstore.config", cfg, "-i", "index_known_issues")
    assert theirs.returncode == ours.returncode == 0, ours.stderr
    t = {r["id"]: r["err"] for r in msgs(theirs.stderr, "detected issue")}
    o = {r["id"]: r["err"] for r in msgs(ours.stderr, "detected issue")}
    assert set(o) == set(t) == {broken, corrupt}
    assert o[broken] == t[broken]  # the same counts in the same words
    assert fine not in o
    # the corrupt index: named with block, file and offset
    assert o[corrupt].startswith(f"gather index issues {corrupt}: ") and "index" in o[corrupt]
    assert re.search(r"offset \d+|at \d+|@\d+", o[corrupt]), o[corrupt]
    lab = [r for r in logfmt(ours.stderr) if r.get("msg", "").startswith("out-of-order label set")]
    lab_t = [r for r in logfmt(theirs.stderr) if r.get("msg", "").startswith("out-of-order label set")]
    assert [(r["labelset"], r["series"]) for r in lab] == [(r["labelset"], r["series"]) for r in lab_t]


def test_id_flag(thanos_bin, overlapping):
    root, ids = overlapping
    cfg = bucket_yaml(root)
    p = run(_ours(), "verify", "--objstore.config", cfg, "-i", "index_known_issues", "--id", ids["a"],
            "--log.level", "debug")
    assert p.returncode == 0, p.stderr
    assert [r["id"] for r in msgs(p.stderr, "no issue")] == [ids["a"]]
    # Thanos refuses --id with overlapped_blocks; we report the overlaps involving the given blocks
    t = run(thanos_bin, "verify", "--objstore.config", cfg, "--id", ids["u1"])
    assert t.returncode == 1 and "id matching is not supported" in t.stderr
    p = run(_ours(), "verify", "--objstore.config", cfg, "--id", ids["u1"].lower())
    assert p.returncode == 0, p.stderr
    rep = overlap_report(p.stderr)
    assert len(rep) == 1 and ids["u2"] in repr(rep)
    p = run(_ours(), "verify", "--objstore.config", cfg, "--id", "nope")
    assert p.returncode == 1 and "--id" in p.stderr and "nope" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("args,needle", [
    (["-i", "no_such_issue"], "no_such_issue"),
    (["--repair"], "--objstore-backup.config"),
    (["--repair", "-i", "duplicated_compaction"], "--objstore-backup.config"),
    (["--delete-delay", "soon"], "--delete-delay"),
])
def test_verify_flag_errors(clean, args, needle):
    p = run(_ours(), "verify", "--objstore.config", bucket_yaml(clean), *args)
    assert p.returncode in (1, 2) and needle in p.stderr and "Traceback" not in p.stderr


# -------------------------------------------------------------------------------------------- repair

def test_repair_index_equals_thanos_repair(thanos_bin, tmp_path):
    base = BASE
    r = lambda a, b: np.arange(a, b, 10_000)  # noqa: E731
    src = tmp_path / "src"
    src.mkdir()
    broken = make_raw_block(src, [
        ([("__name__", "up"), ("job", "b")], [r(base, base + 100_000), r(base, base + 100_000),
                                              r(base + 200_000, base + 300_000)]),
        ([("__name__", "up"), ("job", "c")], [r(base - 3 * H, base - 3 * H + 100_000), r(base, base + 100_000),
                                              r(base + 2 * H, base + 2 * H + 100_000)]),
        ([("job", "d"), ("__name__", "up")], [r(base, base + 100_000)]),
    ], base, base + 2 * H, {"cluster": "x"}, born=BORN)
    make_block(src, base + 2 * H, base + 4 * H, {"cluster": "x"}, born=BORN + 1)
    out = {}
    for who, binary in (("thanos", thanos_bin), ("ours", _ours())):
        b, bk = tmp_path / f"{who}-bucket", tmp_path / f"{who}-backup"
        shutil.copytree(src, b)
        bk.mkdir()
        p = run(binary, "verify", "--objstore.config", bucket_yaml(b), "--objstore-backup.config", bucket_yaml(bk),
                "-i", "index_known_issues", "--repair")
        assert p.returncode == 0, p.stderr
        new = [d.name for d in b.iterdir() if d.name not in os.listdir(src)]
        assert len(new) == 1 and not (b / broken).exists(), (who, sorted(os.listdir(b)))
        assert sorted(os.listdir(bk)) == [broken]
        assert (bk / broken / "index").read_bytes() == (src / broken / "index").read_bytes()
        out[who] = (b / new[0], p)
    (tb, _), (ob, _) = out["thanos"], out["ours"]
    assert (ob / "index").read_bytes() == (tb / "index").read_bytes()
    assert (ob / "chunks" / "000001").read_bytes() == (tb / "chunks" / "000001").read_bytes()
    tm, om = json.loads((tb / "meta.json").read_text()), json.loads((ob / "meta.json").read_text())
    for m in (tm, om):
        m.pop("ulid")
        m["thanos"].pop("upload_time")
    assert om == tm and om["thanos"]["source"] == "bucket.repair"
    # Thanos finds nothing left to repair in our result
    p = run(thanos_bin, "verify", "--objstore.config", bucket_yaml(ob.parent), "-i", "index_known_issues")
    assert p.returncode == 0 and not msgs(p.stderr, "detected issue"), p.stderr


def test_repair_index_failure_is_logged_like_thanos(thanos_bin, tmp_path):
    r = lambda a, b: np.arange(a, b, 10_000)  # noqa: E731
    root = tmp_path / "b"
    root.mkdir()
    bad = make_raw_block(root, [([("__name__", "up")], [r(BASE, BASE + 100_000), r(BASE + 50_000, BASE + 150_000)])],
                         BASE, BASE + 2 * H, {"cluster": "x"}, born=BORN)
    errs = {}
    for who, binary in (("thanos", thanos_bin), ("ours", _ours())):
        (tmp_path / f"bk-{who}").mkdir()
        p = run(binary, "verify", "--objstore.config", bucket_yaml(root), "--objstore-backup.config",
                bucket_yaml(tmp_path / f"bk-{who}"), "-i", "index_known_issues", "-r")
        assert p.returncode == 0, p.stderr
        (e,) = msgs(p.stderr, "could not repair index")
        errs[who] = e["err"]
        assert sorted(os.listdir(root)) == [bad] and not os.listdir(tmp_path / f"bk-{who}")
    assert errs["ours"] == errs["thanos"]


def test_repair_duplicated_compaction(thanos_bin, overlapping, tmp_path):
    root, ids = overlapping
    dup = clone_block(root, ids["f"], born=BORN + 20)
    backup = tmp_path / "backup"
    backup.mkdir()
    args = ["verify", "--objstore.config", bucket_yaml(root), "--objstore-backup.config", bucket_yaml(backup),
            "-i", "duplicated_compaction", "--repair"]
    p = run(_ours(), *args, "--delete-delay", "1h")
    assert p.returncode == 0, p.stderr
    mark = marker_from_json("deletion-mark.json", (root / dup / "deletion-mark.json").read_text(), block=dup)
    assert mark.details == "manual verify-repair"
    assert sorted(os.listdir(backup)) == [dup] and not (backup / dup / "deletion-mark.json").exists()
    assert (backup / dup / "meta.json").read_bytes() == (root / dup / "meta.json").read_bytes()
    # Thanos no longer sees the duplicate (deletion-marked blocks are not verified)
    t = run(thanos_bin, "verify", "--objstore.config", bucket_yaml(root), "-i", "duplicated_compaction")
    (s,) = msgs(t.stderr, "Found duplicated blocks that are ok to be removed")
    assert s["num"] == "0"
    # with --delete-delay=0 the duplicate is deleted at once
    dup2 = clone_block(root, ids["f"], born=BORN + 21)
    p = run(_ours(), *args)
    assert p.returncode == 0, p.stderr
    assert not (root / dup2).exists() and (backup / dup2 / "index").exists()
    # a block already in the backup bucket is refused
    dup3 = clone_block(root, ids["f"], born=BORN + 22)
    shutil.copytree(root / dup3, backup / dup3)
    p = run(_ours(), *args)
    assert p.returncode == 1 and "exists in backup bucket" in p.stderr and (root / dup3 / "meta.json").exists()


def test_repair_overlapped_blocks_marks_newer_no_compact(thanos_bin, overlapping):
    root, ids = overlapping
    cfg = bucket_yaml(root)
    t = run(thanos_bin, "verify", "--objstore.config", cfg, "-i", "overlapped_blocks", "--repair")
    assert t.returncode == 1 and "backup client is required" in t.stderr  # Thanos cannot repair overlaps
    p = run(_ours(), "verify", "--objstore.config", cfg, "-i", "overlapped_blocks", "--repair")  # no backup needed
    assert p.returncode == 0, p.stderr
    marked = {d.name for d in root.iterdir() if (d / "no-compact-mark.json").exists()}
    # a(1) b(2): b newer; c(3) d(4) e(5): d overlaps c, e overlaps only d (marked) so e is kept; u1 u2: u2
    assert marked == {ids["b"], ids["d"], ids["u2"]}
    for k, other in (("b", "a"), ("d", "c"), ("u2", "u1")):
        m = marker_from_json("no-compact-mark.json", (root / ids[k] / "no-compact-mark.json").read_text(),
                             block=ids[k])
        assert m.reason == "manual" and ids[other] in m.details and "overlaps" in m.details
    # the rest of each group no longer overlaps
    from pythanos.tools.verify import group_overlaps  # noqa: PLC0415
    from pythanos.tsdb.meta import read_meta  # noqa: PLC0415
    rest = {d.name: read_meta(d) for d in root.iterdir() if d.name not in marked}
    assert group_overlaps(rest) == {}
    # idempotent; Thanos still reads the markers (mark --remove finds them)
    p = run(_ours(), "verify", "--objstore.config", cfg, "-i", "overlapped_blocks", "--repair")
    assert p.returncode == 0 and not msgs(p.stderr, "marked overlapping block for no compaction")
    run(thanos_bin, "mark", "--objstore.config", cfg, "--id", ids["b"], "--marker", "no-compact-mark.json", "--remove")
    assert not (root / ids["b"] / "no-compact-mark.json").exists()


def test_repair_help_documents_overlap_repair():
    p = subprocess.run([_ours(), "tools", "bucket", "verify", "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    assert "overlapped_blocks" in p.stdout and "no-compact-mark.json" in p.stdout


# ------------------------------------------------------------------------------------------ progress

def _run_on_pty(*args: str) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal (stdout on a pipe); returns (rc, what the terminal got)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([_ours(), "tools", "bucket", *args], stdout=subprocess.PIPE, stderr=slave,
                         env=dict(os.environ, TZ="UTC"), cwd=REPO)
    os.close(slave)
    chunks = []
    while True:
        r, _, _ = select.select([master], [], [], 60)
        if not r:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    p.stdout.close()
    return p.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


def test_progress_on_terminal_not_on_pipe(clean):
    cfg = bucket_yaml(clean)
    rc, term = _run_on_pty("verify", "--objstore.config", cfg, "-i", "index_known_issues")
    assert rc == 0, term
    assert "index_known_issues: 0/5 blocks" in term and "index_known_issues: 5/5 blocks" in term
    assert "\x1b[K" in term
    piped = run(_ours(), "verify", "--objstore.config", cfg, "-i", "index_known_issues")
    assert piped.returncode == 0 and "blocks" not in piped.stderr.replace("blocks:", "") and "\r" not in piped.stderr
