"""``pythanos tools bucket ls`` as a subprocess, on a filesystem bucket."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pythanos.gofmt import duration
from pythanos.tools.bucket import is_ulid

REPO = Path(__file__).resolve().parent.parent
PYTHANOS = Path(sys.executable).parent / "pythanos"

BLOCK_A = "01HQ0000000000000000000000"
BLOCK_B = "01HPZZZZZZZZZZZZZZZZZZZZZZ"  # sorts before A
PARTIAL = "01HQ1111111111111111111111"


def _meta(ulid: str, mint: int, maxt: int, level: int, resolution: int, labels: dict) -> dict:
    return {"ulid": ulid, "minTime": mint, "maxTime": maxt, "stats": {"numSamples": 10},
            "compaction": {"level": level, "sources": [ulid]}, "version": 1,
            "thanos": {"labels": labels, "downsample": {"resolution": resolution}, "source": "sidecar",
                       "segment_files": ["000001"], "index_stats": {}}}


@pytest.fixture
def bucket_config(tmp_path) -> Path:
    root = tmp_path / "bucket"
    metas = {
        BLOCK_A: _meta(BLOCK_A, 1700000000000, 1700007200000, 1, 0, {"cluster": "eu1", "replica": "0"}),
        BLOCK_B: _meta(BLOCK_B, 1699999200500, 1700172000000, 3, 300000, {"cluster": "us"}),
    }
    for ulid, meta in metas.items():
        (root / ulid / "chunks").mkdir(parents=True)
        (root / ulid / "chunks" / "000001").write_bytes(b"\x85\xbd\x40\xdd\x01\x00\x00\x00")
        (root / ulid / "index").write_bytes(b"idx")
        (root / ulid / "meta.json").write_text(json.dumps(meta, indent="\t") + "\n")
    (root / PARTIAL / "chunks").mkdir(parents=True)  # partial upload: no meta.json
    (root / PARTIAL / "chunks" / "000001").write_bytes(b"x")
    (root / "debug" / "metas").mkdir(parents=True)  # not a ULID
    (root / "debug" / "metas" / f"{BLOCK_A}.json").write_text("{}")
    (root / "8ZZZZZZZZZZZZZZZZZZZZZZZZZ").mkdir()  # 26 base32 chars, but above the 128-bit limit
    (root / "8ZZZZZZZZZZZZZZZZZZZZZZZZZ" / "meta.json").write_text("{}")
    (root / "not-a-block.txt").write_text("x")
    cfg = tmp_path / "bucket.yml"
    cfg.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {root}\n")
    return cfg


def _run(*args: str) -> subprocess.CompletedProcess:
    if not PYTHANOS.exists():
        pytest.fail(f"{PYTHANOS} missing: install the project into the venv (pip install -e .)")
    env = dict(os.environ, TZ="UTC")
    return subprocess.run([str(PYTHANOS), "tools", "bucket", "ls", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=REPO)


def test_ls_default(bucket_config):
    p = _run("--objstore.config-file", str(bucket_config))
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{BLOCK_B}\n{BLOCK_A}\n"
    assert 'msg="ls done" objects=2' in p.stderr


def test_ls_json(bucket_config):
    p = _run("--objstore.config-file", str(bucket_config), "-o", "json")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 2
    metas = [json.loads(line) for line in lines]
    assert [m["ulid"] for m in metas] == [BLOCK_B, BLOCK_A]
    assert metas[1]["thanos"]["labels"] == {"cluster": "eu1", "replica": "0"}


def test_ls_wide(bucket_config):
    p = _run("--objstore.config-file", str(bucket_config), "--output=wide")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        f"{BLOCK_B} -- 2023-11-14T22:00:00Z - 2023-11-16T22:00:00Z Diff: 48h0m0s, Compaction: 3, "
        'Downsample: 300000, Source: sidecar, Labels: {cluster="us"}',
        f"{BLOCK_A} -- 2023-11-14T22:13:20Z - 2023-11-15T00:13:20Z Diff: 2h0m0s, Compaction: 1, "
        'Downsample: 0, Source: sidecar, Labels: {cluster="eu1", replica="0"}',
    ]


def test_ls_inline_config_with_prefix(bucket_config, tmp_path):
    root = tmp_path / "bucket"
    outer = tmp_path / "outer"
    (outer / "tenant").mkdir(parents=True)
    root.rename(outer / "tenant" / "blocks")
    p = _run("--objstore.config", f"type: filesystem\nconfig:\n  directory: {outer}\nprefix: tenant/blocks\n")
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{BLOCK_B}\n{BLOCK_A}\n"


def test_ls_config_error_is_one_line(tmp_path):
    cfg = tmp_path / "bad.yml"
    cfg.write_text("type: FILESYSTEM\nconfig:\n  directry: /x\n")
    p = _run("--objstore.config-file", str(cfg))
    assert p.returncode == 1
    assert p.stdout == ""
    assert f"--objstore.config-file={cfg}: config: unknown key \\\"directry\\\"" in p.stderr
    assert "Traceback" not in p.stderr


def test_ulid_and_duration_helpers():
    assert is_ulid(BLOCK_A) and is_ulid(BLOCK_A.lower()) and is_ulid("7ZZZZZZZZZZZZZZZZZZZZZZZZZ")
    for bad in ("8ZZZZZZZZZZZZZZZZZZZZZZZZZ", BLOCK_A[:-1], BLOCK_A + "0", "01HQ000000000000000000000I",
                "01HQ000000000000000000000U", "debug", ""):
        assert not is_ulid(bad), bad
    assert [duration(s * 1_000_000_000) for s in (0, 59, 60, 3600, 7200, 90061, -30)] == [
        "0s", "59s", "1m0s", "1h0m0s", "2h0m0s", "25h1m1s", "-30s"]
