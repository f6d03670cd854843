"""The shipper: real Prometheus 2.42 blocks to SeaweedFS, checked by a real Thanos; kills, failures, outages."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from peers import free_port
from pythanos.objstore import bucket_from_config
from pythanos.objstore.filesystem import FilesystemBucket
from pythanos.sidecar.promclient import PromClient
from pythanos.block.shipper import Shipper, ShipperError, ShipperState, read_state, write_state
from pythanos.tsdb.meta import BlockMeta, read_meta, write_meta

LABELS = {"cluster": "eu1", "replica": "0"}
PROM_CONFIG = "global:\n  scrape_interval: 15s\n  external_labels:\n    cluster: eu1\n    replica: '0'\n"
PROM_ARGS = ["--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h",
             "--storage.tsdb.retention.time=1y"]


def make_blocks(out: Path, compacted: bool = True) -> list[BlockMeta]:
    """continuous-30d-tiny blocks (9: 2h,2h,2h,8h,4x176h,2h), the 8h and 176h ones marked compacted."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pythanos.cli", "tools", "bench-blocks", "--profile",
                    "continuous-30d-tiny", "--max-time", "2h", f"--output.dir={out}", "--log.level=warn"],
                   check=True)
    metas = []
    for d in sorted(out.iterdir()):
        m = read_meta(d)
        m.thanos = None  # as Prometheus writes blocks: no thanos section
        if compacted and m.max_time - m.min_time > 2 * 3600_000:
            m.compaction.level = 2 if m.max_time - m.min_time <= 8 * 3600_000 else 3
        write_meta(d, m)
        metas.append(m)
    return sorted(metas, key=lambda m: m.min_time)


def bucket_metas(bucket) -> dict[str, dict]:
    out = {}
    for key in bucket.iter(""):
        name = key.rstrip("/")
        with contextlib.suppress(KeyError):
            out[name] = json.loads(bucket.get(f"{name}/meta.json"))
    return out


def _thanos(thanos_bin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([thanos_bin, *args], capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------------------ filesystem bucket

class FlakyBucket:
    """Wraps a bucket; fails the n-th upload call (counting from 1) once."""

    def __init__(self, inner, fail_at: set[int]):
        self.inner = inner
        self.fail_at = fail_at
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upload(self, key, data):
        self.calls += 1
        if self.calls in self.fail_at:
            raise OSError(f"injected failure uploading {key}")
        return self.inner.upload(key, data)


def test_shipper_semantics_filesystem(tmp_path):
    tsdb = tmp_path / "tsdb"
    metas = make_blocks(tsdb)
    level1 = [m.ulid for m in metas if m.compaction.level == 1]
    assert len(metas) == 9 and len(level1) == 4
    # an empty block is never shipped; a non-ULID dir and a stray file are ignored
    empty = metas[0].ulid
    m0 = read_meta(tsdb / empty)
    m0.stats.num_samples = 0
    write_meta(tsdb / empty, m0)
    (tsdb / "wal").mkdir()
    (tsdb / "lock").write_text("")
    originals = {m.ulid: (tsdb / m.ulid / "meta.json").read_bytes() for m in metas}

    bkt = FilesystemBucket(tmp_path / "bkt")
    flaky = FlakyBucket(bkt, fail_at={2})  # 2nd object of the first block: its index
    reg = CollectorRegistry()
    uploaded = []
    sh = Shipper(flaky, tsdb, labels=lambda: dict(LABELS), registry=reg, on_uploaded=uploaded.append)

    with pytest.raises(ShipperError, match=r"upload .*injected failure"):
        sh.sync()
    # the failed block left objects but no meta.json: readers ignore it; nothing recorded
    assert bucket_metas(bkt) == {}
    assert read_state(tsdb / "thanos.shipper.json").uploaded == []
    assert not any((tsdb / "thanos" / "upload").iterdir())
    assert reg.get_sample_value("thanos_shipper_upload_failures_total") == 1
    assert reg.get_sample_value("thanos_shipper_dir_sync_failures_total") == 1

    # next cycle: retried, only level-1 non-empty blocks by default, oldest first
    assert sh.sync() == 3
    want = [u for u in level1 if u != empty]
    assert uploaded == sorted(want, key=lambda u: next(m.min_time for m in metas if m.ulid == u))
    got = bucket_metas(bkt)
    assert sorted(got) == sorted(want)
    for u, meta in got.items():
        th = meta["thanos"]
        assert th["labels"] == LABELS and th["source"] == "sidecar" and th["downsample"] == {"resolution": 0}
        assert th["segment_files"] == ["000001"]
        assert [f["rel_path"] for f in th["files"]] == ["chunks/000001", "index", "meta.json"]
    # Prometheus' own meta.json files are untouched, and no hard link is left behind
    for m in metas:
        p = tsdb / m.ulid / "meta.json"
        if m.ulid != empty:
            assert p.read_bytes() == originals[m.ulid]
        assert p.stat().st_nlink == 1 and (tsdb / m.ulid / "index").stat().st_nlink == 1
    # state file: Thanos' format, byte for byte (Go json.Encoder, tab indent, trailing newline)
    raw = (tsdb / "thanos.shipper.json").read_text()
    assert raw == json.dumps({"version": 1, "uploaded": want}, indent="\t") + "\n"
    assert reg.get_sample_value("thanos_shipper_uploads_total") == 3
    assert reg.get_sample_value("thanos_shipper_dir_syncs_total") == 1
    assert reg.get_sample_value("thanos_shipper_upload_compacted_done") == 0

    # nothing new: no upload; a lost state file is rebuilt from the bucket without re-uploading
    assert sh.sync() == 0
    (tsdb / "thanos.shipper.json").unlink()
    calls = flaky.calls
    assert sh.sync() == 0 and flaky.calls == calls
    assert read_state(tsdb / "thanos.shipper.json").uploaded == want
    # a corrupt state file is the same as a missing one
    (tsdb / "thanos.shipper.json").write_text("{not json")
    assert sh.sync() == 0 and flaky.calls == calls

    # upload_compacted: the compacted blocks follow, once
    sh2 = Shipper(bkt, tsdb, labels=lambda: dict(LABELS), upload_compacted=True, registry=CollectorRegistry())
    assert sh2.sync() == 5 and sh2.sync() == 0
    assert sorted(bucket_metas(bkt)) == sorted(m.ulid for m in metas if m.ulid != empty)
    # a block deleted locally (Prometheus retention) drops out of the state
    import shutil

    shutil.rmtree(tsdb / metas[-1].ulid)
    sh2.sync()
    assert metas[-1].ulid not in read_state(tsdb / "thanos.shipper.json").uploaded


def test_compacted_overlap_is_refused(tmp_path):
    tsdb = tmp_path / "tsdb"
    metas = make_blocks(tsdb)
    bkt = FilesystemBucket(tmp_path / "bkt")
    # a bucket block with the same labels overlapping the 8h compacted block
    eight = next(m for m in metas if m.compaction.level == 2)
    other = tmp_path / "other"
    make_blocks(other)
    ov = next(read_meta(d) for d in other.iterdir() if read_meta(d).min_time == eight.min_time)
    from pythanos.tsdb.meta import ThanosMeta
    from pythanos.tsdb.upload import upload_block

    ov.thanos = ThanosMeta(labels=dict(LABELS), source="sidecar")
    write_meta(other / ov.ulid, ov)
    upload_block(bkt, other / ov.ulid)
    sh = Shipper(bkt, tsdb, labels=lambda: dict(LABELS), upload_compacted=True, registry=CollectorRegistry())
    with pytest.raises(ShipperError, match=rf"overlap.*{eight.ulid}.*{ov.ulid}"):
        sh.sync()
    assert eight.ulid not in bucket_metas(bkt)


def test_state_file_roundtrip(tmp_path):
    p = tmp_path / "thanos.shipper.json"
    write_state(p, ShipperState(1, None))
    assert p.read_text() == '{\n\t"version": 1,\n\t"uploaded": null\n}\n'  # Go marshals a nil slice as null
    assert read_state(p).uploaded == []
    p.write_text('{"version": 2, "uploaded": []}')
    with pytest.raises(ValueError, match="version"):
        read_state(p)


# ------------------------------------------------------------------------------------------ real Prometheus + S3

def test_ship_real_prometheus_blocks_to_s3(prometheus_factory, s3_bucket, thanos_bin, tmp_path):
    tsdb = tmp_path / "tsdb"
    metas = make_blocks(tsdb)
    p = prometheus_factory(tsdb_path=tsdb, config_yaml=PROM_CONFIG, extra_args=PROM_ARGS)
    bucket = bucket_from_config(s3_bucket.objstore_yaml, "test")

    async def main():
        async with PromClient(p.url) as prom:
            ext = await prom.external_labels()
            assert ext == LABELS
            flags = await prom.flags()
            assert flags["storage.tsdb.min-block-duration"] == flags["storage.tsdb.max-block-duration"] == "2h"
            sh = Shipper(bucket, tsdb, labels=lambda: ext, upload_compacted=True, registry=CollectorRegistry())
            try:
                assert await sh.sync_async() == 9
                assert await sh.sync_async() == 0
            finally:
                sh.close()
            assert await prom.ready()  # Prometheus does not mind
            assert await prom.lowest_timestamp() == metas[0].min_time

    asyncio.run(main())
    got = bucket_metas(bucket)
    assert sorted(got) == sorted(m.ulid for m in metas)
    assert all(g["thanos"]["labels"] == LABELS and g["thanos"]["source"] == "sidecar" for g in got.values())

    cfg = tmp_path / "objstore.yml"
    cfg.write_text(s3_bucket.objstore_yaml)
    ls = _thanos(thanos_bin, "tools", "bucket", "ls", f"--objstore.config-file={cfg}")
    assert ls.returncode == 0, ls.stderr
    assert sorted(ls.stdout.split()) == sorted(m.ulid for m in metas)
    verify = _thanos(thanos_bin, "tools", "bucket", "verify", f"--objstore.config-file={cfg}",
                     f"--objstore-backup.config-file={cfg}", "--issues=index_known_issues",
                     "--issues=overlapped_blocks")
    assert verify.returncode == 0, verify.stderr
    assert "verify task completed" in verify.stderr, verify.stderr
    assert "detected issue" not in verify.stderr and "level=error" not in verify.stderr, verify.stderr


DRIVER = r"""
import sys, time, logging
from prometheus_client import CollectorRegistry
from pythanos.objstore import bucket_from_config
from pythanos.block.shipper import Shipper
tsdb, cfg, delay = sys.argv[1], open(sys.argv[2]).read(), float(sys.argv[3])
bucket = bucket_from_config(cfg, "driver")
class Slow:
    def __getattr__(self, n): return getattr(bucket, n)
    def upload(self, key, data):
        time.sleep(delay)
        print("PUT", key, flush=True)
        return bucket.upload(key, data)
sh = Shipper(Slow(), tsdb, labels=lambda: {"cluster": "eu1", "replica": "0"}, upload_compacted=True,
             registry=CollectorRegistry(), on_uploaded=lambda u: print("UPLOADED", u, flush=True))
print("DONE", sh.sync(), flush=True)
"""


def _driver(tsdb: Path, cfg: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(tsdb), str(cfg), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_killed_mid_upload_and_restarted_uploads_each_block_once(s3_bucket, tmp_path):
    tsdb = tmp_path / "tsdb"
    metas = make_blocks(tsdb)
    cfg = tmp_path / "objstore.yml"
    cfg.write_text(s3_bucket.objstore_yaml)
    bucket = bucket_from_config(s3_bucket.objstore_yaml, "test")

    # first run: slow uploads, SIGKILLed in the middle of the 4th block (after 3 done + 1 object of the 4th)
    proc = _driver(tsdb, cfg, 0.05)
    first: list[str] = []
    puts_after = 0
    try:
        for line in proc.stdout:
            if line.startswith("UPLOADED"):
                first.append(line.split()[1])
            elif line.startswith("PUT") and len(first) == 3:
                puts_after += 1
                if puts_after == 2:  # the 4th block's chunks are up, its index is being written
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL and len(first) == 3
    fourth = sorted(metas, key=lambda m: m.min_time)[3].ulid
    metas_in_bucket = bucket_metas(bucket)
    assert sorted(metas_in_bucket) == sorted(first) and fourth not in metas_in_bucket
    assert any(k.startswith(fourth + "/") for k in bucket.iter("", recursive=True))  # partial, no meta.json
    upload_times = {u: metas_in_bucket[u]["thanos"]["upload_time"] for u in first}
    assert (tsdb / "thanos" / "upload" / fourth).exists()  # the killed upload's leftovers

    # restart: finishes the rest, re-uploads nothing
    proc = _driver(tsdb, cfg, 0.0)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    second = [ln.split()[1] for ln in out.splitlines() if ln.startswith("UPLOADED")]
    assert f"DONE {len(metas) - 3}" in out
    assert not set(first) & set(second) and len(second) == len(set(second))
    assert sorted(first + second) == sorted(m.ulid for m in metas)
    final = bucket_metas(bucket)
    assert sorted(final) == sorted(m.ulid for m in metas)
    assert {u: final[u]["thanos"]["upload_time"] for u in first} == upload_times  # not uploaded again
    assert sorted(read_state(tsdb / "thanos.shipper.json").uploaded) == sorted(m.ulid for m in metas)
    assert not (tsdb / "thanos" / "upload" / fourth).exists()
    # the completed 4th block has all its files
    keys = set(bucket.iter(fourth, recursive=True))
    assert keys == {f"{fourth}/chunks/000001", f"{fourth}/index", f"{fourth}/meta.json"}


class TCPProxy:
    """A loopback TCP forwarder that can be taken down (connection refused) and brought back on the same port."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()  # leased: nothing else takes it before up() listens there
        self._lsock: socket.socket | None = None
        self._conns: list[socket.socket] = []

    def up(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._lsock = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self) -> None:
        if self._lsock:
            self._lsock.close()
            self._lsock = None
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        self._conns.clear()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                t = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            self._conns += [c, t]
            for a, b in ((c, t), (t, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)


def test_objstore_outage_delays_uploads_and_loses_nothing(s3_bucket, tmp_path):
    tsdb = tmp_path / "tsdb"
    metas = make_blocks(tsdb)
    host, port = s3_bucket.endpoint.split(":")
    proxy = TCPProxy((host, int(port)))
    conf = s3_bucket.objstore_yaml.replace(s3_bucket.endpoint, f"127.0.0.1:{proxy.port}") + "  max_retries: 1\n"
    bucket = bucket_from_config(conf, "test")
    reg = CollectorRegistry()
    sh = Shipper(bucket, tsdb, labels=lambda: dict(LABELS), upload_compacted=True, registry=reg)

    async def main():
        run = asyncio.create_task(sh.run(interval=0.5))
        try:
            # the object store is down: syncs fail, nothing is recorded as uploaded
            deadline = time.monotonic() + 20
            while reg.get_sample_value("thanos_shipper_dir_sync_failures_total") < 2:
                assert time.monotonic() < deadline, "no failing syncs"
                await asyncio.sleep(0.1)
            assert not sh.uploaded_blocks()
            assert reg.get_sample_value("thanos_shipper_uploads_total") == 0
            # back up: everything is shipped by the next cycles
            proxy.up()
            deadline = time.monotonic() + 30
            while len(sh.uploaded_blocks()) < len(metas):
                assert time.monotonic() < deadline, f"only {sh.uploaded_blocks()} uploaded"
                await asyncio.sleep(0.2)
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
            sh.close()

    try:
        asyncio.run(main())
    finally:
        proxy.down()
    direct = bucket_from_config(s3_bucket.objstore_yaml, "test")
    assert sorted(bucket_metas(direct)) == sorted(m.ulid for m in metas)
    assert reg.get_sample_value("thanos_shipper_uploads_total") == len(metas)


def test_stale_upload_dir_of_a_killed_upload_is_removed(tmp_path):
    """A kill between a block's meta.json upload and the state write leaves hard links behind;
    the next sync removes them so they don't pin blocks Prometheus deletes."""
    tsdb = tmp_path / "tsdb"
    metas = make_blocks(tsdb, compacted=False)
    stale = tsdb / "thanos" / "upload" / metas[0].ulid
    (stale / "chunks").mkdir(parents=True)
    os.link(tsdb / metas[0].ulid / "index", stale / "index")
    assert os.stat(tsdb / metas[0].ulid / "index").st_nlink == 2
    bkt = FilesystemBucket(tmp_path / "bkt")
    # The killed run got as far as the block's meta.json: the restart only marks it as done.
    bkt.upload(f"{metas[0].ulid}/meta.json", (tsdb / metas[0].ulid / "meta.json").read_bytes())
    sh = Shipper(bkt, tsdb, labels=lambda: dict(LABELS))
    assert sh.sync() == len(metas) - 1
    assert metas[0].ulid in sh.uploaded_blocks()
    assert list((tsdb / "thanos" / "upload").iterdir()) == []
    assert os.stat(tsdb / metas[0].ulid / "index").st_nlink == 1
