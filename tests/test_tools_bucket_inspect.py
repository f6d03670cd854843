"""``pythanos tools bucket inspect`` and ``mark`` against a real ``thanos tools bucket`` (v0.42) on the
same FILESYSTEM bucket: the table / CSV / TSV text must be equal byte for byte, and markers must be
the ones Thanos writes (and honours)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pythanos import gofmt
from pythanos.tools.inspect import _less
from pythanos.tsdb import ulid as _ulid
from pythanos.tsdb.block import BlockWriter
from pythanos.tsdb.meta import Compaction, marker_from_json

REPO = Path(__file__).resolve().parent.parent
PYTHANOS = Path(sys.executable).parent / "pythanos"
H = 3600 * 1000
BASE = 1_700_000_000_000 // (2 * H) * (2 * H)


def make_block(root: Path, mint: int, maxt: int, labels: dict, *, series: int = 2, step: int = 60_000,
               res: int = 0, level: int = 1, failed: bool = False, born_ms: int | None = None,
               source: str = "sidecar", thanos: bool = True) -> str:
    uid = _ulid.new(born_ms)
    w = BlockWriter(root, thanos={"labels": labels, "source": source, "resolution": res} if thanos else None,
                    min_time=mint, max_time=maxt, block_ulid=uid,
                    compaction=Compaction(level=level, sources=[uid], failed=failed))
    t = np.arange(mint, maxt, step, dtype=np.int64)
    for i in range(series):
        w.add_series({"__name__": "up", "instance": f"i{i:05d}"}, t, np.full(len(t), float(i)))
    assert w.write() is not None
    return uid


def bucket_yaml(root: Path) -> str:
    return f"type: FILESYSTEM\nconfig:\n  directory: {root}\n"


def run(binary: str, *args: str, tz: str = "UTC", check: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, TZ=tz)
    p = subprocess.run([binary, "tools", "bucket", *args], capture_output=True, text=True, timeout=120,
                       env=env, cwd=REPO)
    if check:
        assert p.returncode == 0, f"{binary} {' '.join(args)}: rc={p.returncode}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def bucket(tmp_path_factory) -> Path:
    """A bucket with varied blocks: resolutions, levels, failed compaction, labels needing CSV quoting,
    wide characters and a newline, counts above a thousand, equal FROM times, and blocks Thanos and
    we both leave out (partial upload, corrupted meta.json)."""
    root = tmp_path_factory.mktemp("inspect") / "bucket"
    root.mkdir()
    make_block(root, BASE, BASE + 2 * H, {"cluster": "eu1", "replica": "0"}, series=1200)
    make_block(root, BASE, BASE + 2 * H, {"cluster": "eu1", "replica": "1"})
    make_block(root, BASE - 8 * H, BASE, {"cluster": "eu1", "replica": "0"}, level=2)
    make_block(root, BASE - 48 * H, BASE - 8 * H, {"cluster": "eu1"}, level=3, res=300_000, step=300_000)
    make_block(root, BASE - 14 * 24 * H, BASE - 48 * H, {"cluster": "eu1"}, level=4, res=3_600_000, step=3_600_000)
    make_block(root, BASE - 50 * H, BASE - 2 * H, {"cluster": "us"}, level=3, failed=True)
    make_block(root, BASE + 2 * H + 1234, BASE + 4 * H - 1, {"team": 'a,b "c"', "zone": " west"}, source="receive")
    make_block(root, BASE + 4 * H, BASE + 6 * H, {"env": "prod\nblue", "名前": "値"})
    make_block(root, BASE + 4 * H, BASE + 6 * H, {}, source="", thanos=False)
    partial = root / _ulid.new()
    (partial / "chunks").mkdir(parents=True)
    (partial / "index").write_bytes(b"x")
    corrupt = root / _ulid.new()
    corrupt.mkdir()
    (corrupt / "meta.json").write_text("{not json")
    return root


@pytest.fixture(scope="module")
def config(bucket) -> str:
    return bucket_yaml(bucket)


def _ours() -> str:
    if not PYTHANOS.exists():
        pytest.fail(f"{PYTHANOS} missing: install the project into the venv (pip install -e .)")
    return str(PYTHANOS)


# ------------------------------------------------------------------------------------------- inspect

@pytest.mark.parametrize("output", ["table", "csv", "tsv"])
@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata", "America/New_York"])
def test_inspect_equals_thanos(thanos_bin, config, output, tz):
    theirs = run(thanos_bin, "inspect", "--objstore.config", config, "--output", output, tz=tz, check=True)
    ours = run(_ours(), "inspect", "--objstore.config", config, "--output", output, tz=tz, check=True)
    assert ours.stdout == theirs.stdout
    assert len(ours.stdout.splitlines()) >= 9


@pytest.mark.parametrize("args", [
    ["-l", 'cluster="eu1"'],
    ["--selector", 'cluster="eu1"', "--selector", 'replica="0"'],
    ["-l", "cluster=`us`"],
    ["-l", 'cluster="nowhere"'],
    ["--sort-by", "#SERIES"],
    ["--sort-by", "RANGE", "--sort-by", "ULID"],
    ["--sort-by", "UNTIL-DOWN"],
    ["--sort-by", "LABELS", "--sort-by", "FROM"],
    ["--sort-by", "COMP-LEVEL", "--sort-by", "COMP-FAILED", "--sort-by", "RESOLUTION"],
    ["--sort-by", "SOURCE", "--sort-by", "#SAMPLES"],
    ["--sort-by", "UNTIL", "--sort-by", "#CHUNKS"],
])
def test_inspect_selector_and_sort_equal_thanos(thanos_bin, config, args):
    theirs = run(thanos_bin, "inspect", "--objstore.config", config, *args, tz="Europe/Berlin", check=True)
    ours = run(_ours(), "inspect", "--objstore.config", config, *args, tz="Europe/Berlin", check=True)
    assert ours.stdout == theirs.stdout


def test_inspect_empty_bucket_equals_thanos(thanos_bin, tmp_path):
    (tmp_path / "b").mkdir()
    cfg = bucket_yaml(tmp_path / "b")
    for output in ("table", "csv"):
        theirs = run(thanos_bin, "inspect", "--objstore.config", cfg, "--output", output, check=True)
        ours = run(_ours(), "inspect", "--objstore.config", cfg, "--output", output, check=True)
        assert ours.stdout == theirs.stdout


@pytest.mark.parametrize("args,flag", [
    (["-l", "cluster"], "--selector"),
    (["-l", "cluster=eu1"], "--selector"),
    (["--selector", '="x"'], "--selector"),
    (["--sort-by", "FOO"], "--sort-by"),
])
def test_inspect_bad_flag_is_one_line_naming_it(config, thanos_bin, args, flag):
    theirs = run(thanos_bin, "inspect", "--objstore.config", config, *args)
    assert theirs.returncode != 0  # Thanos refuses these too
    p = run(_ours(), "inspect", "--objstore.config", config, *args)
    assert p.returncode == 1
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "level=error" in lines[0] and flag in lines[0]
    assert "Traceback" not in p.stderr


def test_inspect_timeout_flag(config):
    p = run(_ours(), "inspect", "--objstore.config", config, "--timeout", "2m", "-o", "csv", check=True)
    assert p.stdout.startswith("ULID,FROM,UNTIL,")
    p = run(_ours(), "inspect", "--objstore.config", config, "--timeout", "soon")
    assert p.returncode == 2 and "--timeout" in p.stderr


def test_go_formats():
    assert [gofmt.duration(n) for n in (0, 1, 1500, 1_500_000, 999_999_999, 10 ** 9, 90 * 10 ** 9,
                                        7_200_000_000_000, -136_800 * 10 ** 9, 3_723_500_000_000)] == [
        "0s", "1ns", "1.5µs", "1.5ms", "999.999999ms", "1s", "1m30s", "2h0m0s", "-38h0m0s", "1h2m3.5s"]
    assert gofmt.duration(-(1 << 63)) == "-2562047h47m16.854775808s"
    assert gofmt.thousands(1234567) == "1,234,567"
    assert gofmt.unquote('"a\\"b\\n\\u00e9"') == 'a"b\né' and gofmt.unquote("`x\\y`") == "x\\y"
    for bad in ('"', "'ab'", '"a"b"', "x", '"\\q"'):
        with pytest.raises(gofmt.UnquoteError):
            gofmt.unquote(bad)
    assert gofmt.csv_line(["a", "b,c", ' d', 'e"f', ""]) == 'a,"b,c"," d","e""f",\n'
    # cell comparison: times, then durations, then integers with commas, then strings
    assert _less("2023-11-14T23:00:00+01:00", "2023-11-14T23:30:00Z")
    assert _less("-38h0m0s", "1h0m0s") and _less("-", "-38h0m0s") and _less("999", "1,000")
    assert _less("false", "true") and not _less("b", "a")


# ---------------------------------------------------------------------------------------------- mark

@pytest.fixture
def mark_bucket(tmp_path) -> tuple[Path, str, list[str]]:
    root = tmp_path / "bucket"
    root.mkdir()
    ids = [make_block(root, BASE + i * 2 * H, BASE + (i + 1) * 2 * H, {"cluster": "m"}) for i in range(4)]
    return root, bucket_yaml(root), sorted(ids)


_TIME_KEY = {"deletion-mark.json": "deletion_time", "no-compact-mark.json": "no_compact_time",
             "no-downsample-mark.json": "no_downsample_time"}


@pytest.mark.parametrize("marker", list(_TIME_KEY))
def test_mark_writes_what_thanos_writes(thanos_bin, mark_bucket, marker):
    root, cfg, ids = mark_bucket
    details = 'broken <by> "ops" & co'
    run(thanos_bin, "mark", "--objstore.config", cfg, "--id", ids[0], "--marker", marker, "--details", details,
        check=True)
    p = run(_ours(), "mark", "--objstore.config", cfg, "--id", ids[1], "--marker", marker, "--details", details,
            check=True)
    assert 'msg="marking done"' in p.stderr and f"IDs={ids[1]}" in p.stderr
    theirs = (root / ids[0] / marker).read_text()
    ours = (root / ids[1] / marker).read_text()
    t, o = json.loads(theirs), json.loads(ours)
    assert list(o) == list(t)  # same fields in the same order
    assert {k: v for k, v in o.items() if k not in ("id", _TIME_KEY[marker])} == \
        {k: v for k, v in t.items() if k not in ("id", _TIME_KEY[marker])}
    assert o["id"] == ids[1] and isinstance(o[_TIME_KEY[marker]], int)
    assert abs(o[_TIME_KEY[marker]] - t[_TIME_KEY[marker]]) < 600
    # byte for byte the same JSON once id and time are the same (Go's escaping of <, >, &)
    assert ours.replace(ids[1], ids[0]).replace(str(o[_TIME_KEY[marker]]), str(t[_TIME_KEY[marker]])) == theirs
    # each side parses the other's marker
    assert marker_from_json(marker, theirs, block=ids[0]).details == details
    again = run(thanos_bin, "mark", "--objstore.config", cfg, "--id", ids[1], "--marker", marker, "--details", "x",
                check=True)
    assert "already exists" in again.stderr and (root / ids[1] / marker).read_text() == ours
    run(thanos_bin, "mark", "--objstore.config", cfg, "--id", ids[1], "--marker", marker, "--remove", check=True)
    assert not (root / ids[1] / marker).exists()


def test_deletion_mark_honoured_by_thanos(thanos_bin, mark_bucket):
    root, cfg, ids = mark_bucket
    run(_ours(), "mark", "--objstore.config", cfg, "--id", ids[2], "--id", ids[3].lower(),
        "--marker", "deletion-mark.json", "--details", "manual", check=True)
    listed = run(thanos_bin, "ls", "--objstore.config", cfg, "--exclude-delete", check=True).stdout.split()
    assert sorted(listed) == ids[:2]
    assert sorted(run(thanos_bin, "ls", "--objstore.config", cfg, check=True).stdout.split()) == ids
    # removed again by us: Thanos lists them again
    run(_ours(), "mark", "--objstore.config", cfg, "--id", ids[2], "--id", ids[3], "--marker", "deletion-mark.json",
        "--remove", check=True)
    assert sorted(run(thanos_bin, "ls", "--objstore.config", cfg, "--exclude-delete", check=True).stdout.split()) == ids


def test_mark_existing_marker_left_alone_and_remove_missing_warns(mark_bucket):
    root, cfg, ids = mark_bucket
    args = ["mark", "--objstore.config", cfg, "--id", ids[0], "--marker", "no-compact-mark.json"]
    run(_ours(), *args, "--details", "first", check=True)
    before = (root / ids[0] / "no-compact-mark.json").read_bytes()
    p = run(_ours(), *args, "--details", "second", check=True)
    assert "level=warn" in p.stderr and "already exists" in p.stderr
    assert (root / ids[0] / "no-compact-mark.json").read_bytes() == before
    run(_ours(), *args, "--remove", check=True)
    p = run(_ours(), *args, "--remove", check=True)
    assert "level=warn" in p.stderr and "does not exist" in p.stderr


@pytest.mark.parametrize("extra,needle", [
    (["--id", "not-a-ulid", "--details", "x"], "not-a-ulid"),
    (["--id", "8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "--details", "x"], "8ZZZZZZZZZZZZZZZZZZZZZZZZZ"),
    ([], "--details"),
    (["--id", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "--details", "x"], "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
])
def test_mark_refuses_and_writes_nothing(mark_bucket, extra, needle):
    root, cfg, ids = mark_bucket
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    p = run(_ours(), "mark", "--objstore.config", cfg, "--id", ids[0], *extra, "--marker", "deletion-mark.json")
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "level=error" in lines[0] and needle in lines[0], p.stderr
    # a missing block, a bad ULID or missing details: not even the valid ids get a marker
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_mark_bad_marker_is_usage_error(mark_bucket):
    _, cfg, ids = mark_bucket
    p = run(_ours(), "mark", "--objstore.config", cfg, "--id", ids[0], "--marker", "foo.json", "--details", "x")
    assert p.returncode == 2 and "--marker" in p.stderr
