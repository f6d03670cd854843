"""Uploading a block lays it out in the bucket as Thanos does, and real Thanos accepts it."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pythanos.objstore import FilesystemBucket, bucket_from_config
from pythanos.tsdb.meta import ThanosMeta, read_meta, write_meta
from pythanos.tsdb.upload import UploadError, upload_block


class RecordingBucket:
    """Wraps a bucket and records the order of uploads."""

    def __init__(self, inner):
        self.inner, self.keys = inner, []

    def upload(self, key, data):
        self.keys.append(key)
        self.inner.upload(key, data)


def _promtool_block(promtool_bin: str, tmp: Path) -> Path:
    om = tmp / "data.om"
    lines = []
    for i in range(300):
        ts = 1_700_000_000 + i * 15
        lines.append(f'up{{job="a",instance="x:{i % 3}"}} {i % 7} {ts}')
    om.write_text("# TYPE up gauge\n" + "\n".join(lines) + "\n# EOF\n")
    out = tmp / "blocks"
    subprocess.run([promtool_bin, "tsdb", "create-blocks-from", "openmetrics", str(om), str(out)],
                   check=True, capture_output=True, timeout=120)
    (block,) = [p for p in out.iterdir() if p.is_dir()]
    return block


@pytest.fixture
def labelled_block(promtool_bin, tmp_path) -> Path:
    block = _promtool_block(promtool_bin, tmp_path)
    meta = read_meta(block)
    meta.thanos = ThanosMeta(labels={"cluster": "eu1", "replica": "0"}, source="sidecar")
    write_meta(block, meta)
    return block


def test_refuses_block_without_external_labels(promtool_bin, tmp_path):
    block = _promtool_block(promtool_bin, tmp_path)
    with pytest.raises(UploadError, match=f"{block.name}.*empty external labels"):
        upload_block(FilesystemBucket(str(tmp_path / "bkt")), block)


def test_upload_order_and_meta(labelled_block, tmp_path):
    bkt = RecordingBucket(FilesystemBucket(str(tmp_path / "bkt")))
    ulid = upload_block(bkt, labelled_block)
    assert ulid == labelled_block.name
    assert bkt.keys[-1] == f"{ulid}/meta.json", "meta.json must be uploaded last"
    assert bkt.keys[-2] == f"{ulid}/index"
    assert all(k.startswith(f"{ulid}/chunks/") for k in bkt.keys[:-2]) and bkt.keys[:-2]
    assert not any(k.endswith("tombstones") for k in bkt.keys)
    meta = json.loads(bkt.inner.get(f"{ulid}/meta.json"))
    files = {f["rel_path"]: f.get("size_bytes") for f in meta["thanos"]["files"]}
    assert files["index"] == (labelled_block / "index").stat().st_size
    assert files["meta.json"] is None
    assert meta["thanos"]["segment_files"] == ["000001"]
    assert meta["thanos"]["labels"] == {"cluster": "eu1", "replica": "0"}
    assert meta["thanos"]["upload_time"].endswith("Z")
    # The local meta.json is left as it was.
    assert read_meta(labelled_block).thanos.files == []


def _json_stream(text: str) -> list:
    """`thanos tools bucket ls -o json` prints indented JSON objects one after another."""
    dec, out, rest = json.JSONDecoder(), [], text.strip()
    while rest:
        obj, end = dec.raw_decode(rest)
        out.append(obj)
        rest = rest[end:].strip()
    return out


def _thanos(thanos_bin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([thanos_bin, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind", ["filesystem", "s3"])
def test_real_thanos_accepts_uploaded_block(kind, labelled_block, tmp_path, thanos_bin, request):
    if kind == "s3":
        conf = request.getfixturevalue("s3_bucket").objstore_yaml
    else:
        conf = f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path / 'fsbkt'}\n"
    upload_block(bucket_from_config(conf, source="test"), labelled_block)
    cfg = tmp_path / "objstore.yml"
    cfg.write_text(conf)
    ls = _thanos(thanos_bin, "tools", "bucket", "ls", f"--objstore.config-file={cfg}", "-o", "json")
    assert ls.returncode == 0, ls.stderr
    (line,) = _json_stream(ls.stdout)
    assert line["ulid"] == labelled_block.name
    assert line["thanos"]["labels"] == {"cluster": "eu1", "replica": "0"}
    verify = _thanos(thanos_bin, "tools", "bucket", "verify", f"--objstore.config-file={cfg}",
                     "--objstore-backup.config-file=" + str(cfg), "--issues=index_known_issues",
                     "--issues=overlapped_blocks")
    assert verify.returncode == 0, verify.stderr
    assert "verify task completed" in verify.stderr, verify.stderr
    assert "detected issue" not in verify.stderr and "level=error" not in verify.stderr, verify.stderr
