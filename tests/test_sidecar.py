"""``pythanos sidecar`` through its command line, against real Prometheus 2.42, SeaweedFS and Thanos.

* shipper: Prometheus (2h min = max block duration) on ``bench-blocks`` blocks, ``--shipper.upload-compacted``
  to S3 behind a slow link, SIGKILLed mid-upload and restarted: every block uploaded exactly once,
  accepted by a real ``thanos tools bucket ls`` / ``verify``;
* reloader: ``$(POD_NAME)`` expanded into Prometheus' config file, changes visible in Prometheus'
  ``/api/v1/status/config`` (and in the sidecar's Info) within seconds;
* bad input: unreachable Prometheus (at start and after it goes away) -> ``/-/ready`` 503 and
  UNAVAILABLE naming the URL, no crash; malformed regex -> INVALID_ARGUMENT; only external-label
  matchers -> INVALID_ARGUMENT as Thanos; a contradicting external label -> empty without a remote
  read; ``--min-time`` trims; Prometheus without external labels -> exit 1 with Thanos' message;
  bad flag values -> exit 2 naming the flag.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from peers import free_port, free_ports, http_get
from pythanos.objstore import bucket_from_config
from pythanos.storeapi import StoreAPIError, StoreClient
from pythanos.storeapi.pb import types_pb2
from pythanos.tsdb.chunkenc import decode_xor
from pythanos.tsdb.labels import Matcher
from pythanos.tsdb.meta import read_meta, write_meta

READY_TIMEOUT = 120.0
LABELS = {"cluster": "eu1", "replica": "0"}
PROM_CONFIG = "global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: eu1\n    replica: '0'\n"
BLOCK_ARGS = ["--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h",
              "--storage.tsdb.retention.time=1y"]


def sidecar_args(prom_url: str, grpc_port: int, http_port: int, *extra: str) -> list[str]:
    return ["sidecar", f"--prometheus.url={prom_url}", f"--grpc-address=127.0.0.1:{grpc_port}",
            f"--http-address=127.0.0.1:{http_port}", "--prometheus.get_config_interval=1s",
            "--grpc-grace-period=1s", "--http-grace-period=1s", *extra]


def metric(url: str, name: str) -> float | None:
    code, body = http_get(url + "/metrics")
    assert code == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def store_call(addr: str, fn):
    async def go():
        async with StoreClient(addr, timeout=30) as c:
            return await fn(c)
    return asyncio.run(go())


def store_error(addr: str, fn) -> StoreAPIError:
    with pytest.raises(StoreAPIError) as ei:
        store_call(addr, fn)
    return ei.value


# ------------------------------------------------------------------------------------------ shipper

def make_blocks(out: Path) -> list:
    """continuous-30d-tiny (9 blocks: 2h,2h,2h,8h,4x176h,2h); the 8h and 176h ones marked compacted, no
    thanos section (as Prometheus writes blocks)."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pythanos.cli", "tools", "bench-blocks", "--profile",
                    "continuous-30d-tiny", "--max-time", "2h", f"--output.dir={out}", "--log.level=warn"],
                   check=True)
    metas = []
    for d in sorted(out.iterdir()):
        m = read_meta(d)
        m.thanos = None
        if m.max_time - m.min_time > 2 * 3600_000:
            m.compaction.level = 2 if m.max_time - m.min_time <= 8 * 3600_000 else 3
        write_meta(d, m)
        metas.append(m)
    return sorted(metas, key=lambda m: m.min_time)


class SlowProxy:
    """A loopback TCP forwarder that sleeps ``delay`` seconds before forwarding each piece (of at
    most ``piece`` bytes): a slow link. ``cut`` counts pieces that could not be delivered because
    the receiving side had closed its connection (a client that gave up mid-answer)."""

    def __init__(self, target: tuple[str, int], delay: float, piece: int = 65536):
        self.target, self.delay, self.piece = target, delay, piece
        self.cut = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
                t = socket.create_connection(self.target)
            except OSError:
                if self.closed:
                    return
                continue
            for a, b in ((c, t), (t, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(self.piece)
                if not data:
                    break
                time.sleep(self.delay)
                try:
                    b.sendall(data)
                except OSError:
                    self.cut += 1
                    raise
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def bucket_metas(bucket) -> dict[str, dict]:
    out = {}
    for key in bucket.iter(""):
        name = key.rstrip("/")
        with contextlib.suppress(Exception):
            out[name] = json.loads(bucket.get(f"{name}/meta.json"))
    return out


def test_shipper_through_cli_killed_mid_upload_uploads_each_block_once(
        prometheus_factory, pythanos_factory, s3_bucket, thanos_bin, tmp_path):
    tsdb = tmp_path / "tsdb"
    metas = make_blocks(tsdb)
    ulids = sorted(m.ulid for m in metas)
    prom = prometheus_factory(tsdb_path=tsdb, config_yaml=PROM_CONFIG, extra_args=BLOCK_ARGS,
                              ready_timeout=READY_TIMEOUT)
    bucket = bucket_from_config(s3_bucket.objstore_yaml, "test")
    host, port = s3_bucket.endpoint.rsplit(":", 1)
    proxy = SlowProxy((host, int(port)), delay=0.15)
    slow_cfg = tmp_path / "objstore-slow.yml"
    slow_cfg.write_text(s3_bucket.objstore_yaml.replace(s3_bucket.endpoint, f"127.0.0.1:{proxy.port}"))
    cfg = tmp_path / "objstore.yml"
    cfg.write_text(s3_bucket.objstore_yaml)

    # first run over the slow link: SIGKILL once two blocks are complete in the bucket
    g, h = free_ports(2)
    first_sc = pythanos_factory(sidecar_args(prom.url, g, h, f"--tsdb.path={tsdb}", f"--objstore.config-file={slow_cfg}",
                                             "--shipper.upload-compacted"),
                                ready_url=f"http://127.0.0.1:{h}/-/ready", name="sidecar-1", ready_timeout=READY_TIMEOUT)
    partial: list[str] = []

    def two_done_one_partial() -> bool:
        done = bucket_metas(bucket)
        started = {k.split("/", 1)[0] for k in bucket.iter("", recursive=True)}
        partial[:] = sorted(started - set(done))
        return len(done) >= 2 and bool(partial)

    try:
        first_sc.wait_ready(two_done_one_partial, READY_TIMEOUT, what="2 blocks uploaded and a 3rd one started")
        os.killpg(first_sc.pid, signal.SIGKILL)
        first_sc.proc.wait(10)
    finally:
        proxy.close()
    first = bucket_metas(bucket)
    assert 2 <= len(first) < len(metas), sorted(first)
    partial = [u for u in partial if u not in first]  # (unless it completed before the kill landed)
    assert len(partial) <= 1
    upload_times = {u: m["thanos"]["upload_time"] for u, m in first.items()}
    assert all(m["thanos"]["labels"] == LABELS and m["thanos"]["source"] == "sidecar" for m in first.values())

    # restart on the direct link: uploads the rest, nothing twice
    g, h = free_ports(2)
    second_sc = pythanos_factory(sidecar_args(prom.url, g, h, f"--tsdb.path={tsdb}", f"--objstore.config-file={cfg}",
                                              "--shipper.upload-compacted"),
                                 ready_url=f"http://127.0.0.1:{h}/-/ready", name="sidecar-2",
                                 ready_timeout=READY_TIMEOUT)
    sc_url = f"http://127.0.0.1:{h}"
    second_sc.wait_ready(lambda: sorted(bucket_metas(bucket)) == ulids, READY_TIMEOUT, what="all blocks uploaded")
    second_sc.wait_ready(lambda: metric(sc_url, "thanos_shipper_dir_syncs_total") == 1, 30, what="first sync done")
    final = bucket_metas(bucket)
    assert {u: final[u]["thanos"]["upload_time"] for u in first} == upload_times  # not uploaded again
    assert all(m["thanos"]["labels"] == LABELS and m["thanos"]["source"] == "sidecar"
               and m["thanos"]["downsample"]["resolution"] == 0 for m in final.values())
    assert metric(sc_url, "thanos_shipper_uploads_total") == len(metas) - len(first)
    assert metric(sc_url, "thanos_shipper_upload_compacted_done") == 1
    assert metric(sc_url, "thanos_sidecar_prometheus_up") == 1
    uploaded_logged = re.findall(r'msg="upload new block" id=(\w+)', second_sc.log(1000))
    assert sorted(uploaded_logged) == sorted(set(ulids) - set(first))
    assert set(partial) <= set(uploaded_logged)  # the block killed mid-upload was uploaded (once) after the restart
    state = json.loads((tsdb / "thanos.shipper.json").read_text())
    assert state["version"] == 1 and sorted(state["uploaded"]) == ulids
    # the killed upload's hard-link dir is replaced when that block is uploaded again; a block whose
    # upload finished just before the kill (meta.json up, state not yet written) keeps its dir
    assert {p.name for p in (tsdb / "thanos" / "upload").glob("*")} <= set(first)
    for u in ulids:  # complete blocks: chunks, index, meta.json
        keys = set(bucket.iter(u, recursive=True))
        assert {f"{u}/index", f"{u}/meta.json"} <= keys and any(k.startswith(f"{u}/chunks/") for k in keys), keys

    ls = subprocess.run([thanos_bin, "tools", "bucket", "ls", f"--objstore.config-file={cfg}"], capture_output=True,
                        text=True, timeout=120)
    assert ls.returncode == 0, ls.stderr
    assert sorted(ls.stdout.split()) == ulids
    verify = subprocess.run([thanos_bin, "tools", "bucket", "verify", f"--objstore.config-file={cfg}",
                             f"--objstore-backup.config-file={cfg}", "--issues=index_known_issues",
                             "--issues=overlapped_blocks"], capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stderr
    assert "verify task completed" in verify.stderr, verify.stderr
    assert "detected issue" not in verify.stderr and "level=error" not in verify.stderr, verify.stderr
    assert prom.alive()


# ------------------------------------------------------------------------------------------ reloader

def test_reloader_through_cli_expands_env_and_reloads_prometheus(prometheus_factory, pythanos_factory, tmp_path):
    prom = prometheus_factory(config_yaml=PROM_CONFIG, extra_args=["--web.enable-lifecycle"],
                              ready_timeout=READY_TIMEOUT)
    out = Path(prom.extra["config_file"])  # the file Prometheus loads
    src = tmp_path / "prometheus.yml.tmpl"
    rules = tmp_path / "rules"
    rules.mkdir()
    template = "global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: {cluster}\n    replica: $(POD_NAME)\n"
    src.write_text(template.format(cluster="eu1"))
    g, h = free_ports(2)
    sc = pythanos_factory(sidecar_args(prom.url, g, h, f"--reloader.config-file={src}",
                                       f"--reloader.config-envsubst-file={out}", f"--reloader.rule-dir={rules}",
                                       "--reloader.watch-interval=1h", "--reloader.retry-interval=1s"),
                          ready_url=f"http://127.0.0.1:{h}/-/ready", name="sidecar", env={"POD_NAME": "pod-7"},
                          ready_timeout=READY_TIMEOUT)
    sc_url, addr = f"http://127.0.0.1:{h}", f"127.0.0.1:{g}"

    def prom_config() -> str:
        return json.loads(http_get(prom.url + "/api/v1/status/config")[1])["data"]["yaml"]

    def labels_in_info():
        return store_call(addr, lambda c: c.info()).label_sets

    sc.wait_ready(lambda: "replica: pod-7" in prom_config(), 30, what="expanded config loaded")
    assert "$(POD_NAME)" not in out.read_text() and "replica: pod-7" in out.read_text()
    sc.wait_ready(lambda: labels_in_info() == [(("cluster", "eu1"), ("replica", "pod-7"))], 30, what="new labels")

    # with a 1h watch interval, a reload seen within the poll's deadline came from the file change
    src.write_text(template.format(cluster="eu2"))
    sc.wait_ready(lambda: "cluster: eu2" in prom_config(), 30, what="changed config loaded")
    sc.wait_ready(lambda: labels_in_info() == [(("cluster", "eu2"), ("replica", "pod-7"))], 30, what="new labels")
    reloads = metric(sc_url, "thanos_sidecar_reloader_reloads_total")

    (rules / "a.yml").write_text("groups: []\n")  # a rule dir change triggers a reload too
    sc.wait_ready(lambda: metric(sc_url, "thanos_sidecar_reloader_reloads_total") > reloads, 30,
                  what="reload after rule change")
    assert metric(sc_url, "thanos_sidecar_reloader_last_reload_successful") == 1
    assert metric(sc_url, "thanos_sidecar_reloader_reloads_failed_total") == 0
    assert sc.alive() and prom.alive()


def test_reloader_once_writes_the_expanded_config_and_exits(tmp_path):
    """``--reloader.once``: what the operator's init container runs so that Prometheus starts with its config
    present. No Prometheus, no servers (a listener would keep the process up), no object storage touched."""
    src, out = tmp_path / "prometheus.yaml.tmpl", tmp_path / "out" / "prometheus.yaml"
    out.parent.mkdir()
    src.write_text("global:\n  external_labels:\n    cluster: eu1\n    replica: $(POD_NAME)\n")
    dead = f"http://127.0.0.1:{free_port()}"
    g, h = free_ports(2)
    cmd = [sys.executable, "-m", "pythanos.cli", *sidecar_args(dead, g, h, f"--reloader.config-file={src}",
                                                                f"--reloader.config-envsubst-file={out}",
                                                                "--objstore.config=type: NOPE", "--reloader.once")]
    env = {**os.environ, "POD_NAME": "prometheus-eu1-0"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "global:\n  external_labels:\n    cluster: eu1\n    replica: prometheus-eu1-0\n"
    assert "wrote the expanded config" in r.stderr and "Traceback" not in r.stderr, r.stderr

    # an unset variable: exit 1 naming it, the old output left as it was
    src.write_text("global:\n  external_labels:\n    replica: $(NOT_SET_ANYWHERE)\n")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and 'unset environment variable \\"NOT_SET_ANYWHERE' in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "prometheus-eu1-0" in out.read_text()
    # nothing to write: a usage error, not a sidecar that silently serves
    r = subprocess.run(cmd[:-4] + ["--reloader.once"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and "--reloader.once needs --reloader.config-file" in r.stderr, r.stderr


# ------------------------------------------------------------------------------------------ bad input

def test_series_call_given_up_by_its_client_stops_the_remote_read(prometheus_factory, pythanos_factory, tmp_path):
    """A client whose Series call reaches its gRPC deadline (a querier's query timeout) while the
    sidecar is still reading Prometheus' answer: the sidecar's handler is cancelled and closes its
    remote-read connection mid-answer instead of reading the rest for nobody. Prometheus is behind
    a link of 40 kB/s, so its answer for 10k series (a few MB) would take over a minute; the
    close is polled for with a deadline well below that."""
    tsdb = tmp_path / "tsdb"
    subprocess.run([sys.executable, "-m", "pythanos.cli", "tools", "bench-blocks", "--profile", "bench-10k-2h",
                    "--max-time", "2h", f"--output.dir={tsdb}", "--log.level=warn"], check=True)
    prom = prometheus_factory(tsdb_path=tsdb, config_yaml=PROM_CONFIG, extra_args=BLOCK_ARGS,
                              ready_timeout=READY_TIMEOUT)
    link = SlowProxy(("127.0.0.1", prom.port), delay=0.1, piece=4096)
    try:
        g, h = free_ports(2)
        pythanos_factory(sidecar_args(f"http://127.0.0.1:{link.port}", g, h), name="sidecar",
                         ready_url=f"http://127.0.0.1:{h}/-/ready", ready_timeout=READY_TIMEOUT)
        err = store_error(f"127.0.0.1:{g}", lambda c: c.series_list([Matcher.re("__name__", ".+")],
                                                                     timeout=2))
        assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED, err
        deadline = time.monotonic() + 30
        while not link.cut:
            assert time.monotonic() < deadline, "the sidecar went on reading the remote read's answer"
            time.sleep(0.1)
    finally:
        link.close()


def test_unreachable_prometheus_is_not_ready_and_unavailable(prometheus_factory, pythanos_factory):
    # never there
    dead = f"http://127.0.0.1:{free_port()}"
    g, h = free_ports(2)
    sc = pythanos_factory(sidecar_args(dead, g, h), ready_url=f"http://127.0.0.1:{h}/-/healthy", name="sidecar-dead",
                          ready_timeout=READY_TIMEOUT)
    code, body = http_get(f"http://127.0.0.1:{h}/-/ready")
    assert code == 503 and dead.encode() in body, body
    addr = f"127.0.0.1:{g}"
    e = store_error(addr, lambda c: c.info())
    assert e.code == grpc.StatusCode.UNAVAILABLE and dead in e.details, e
    e = store_error(addr, lambda c: c.series_list([Matcher.eq("__name__", "up")]))
    assert e.code == grpc.StatusCode.UNAVAILABLE and dead in e.details, e
    assert metric(f"http://127.0.0.1:{h}", "thanos_sidecar_prometheus_up") == 0
    assert sc.alive()

    # there, then gone
    prom = prometheus_factory(config_yaml=PROM_CONFIG, ready_timeout=READY_TIMEOUT)
    g, h = free_ports(2)
    sc = pythanos_factory(sidecar_args(prom.url, g, h), ready_url=f"http://127.0.0.1:{h}/-/ready", name="sidecar",
                          ready_timeout=READY_TIMEOUT)
    addr, sc_url = f"127.0.0.1:{g}", f"http://127.0.0.1:{h}"
    assert store_call(addr, lambda c: c.series_list([Matcher.eq("__name__", "up")]))[1] == []
    prom.stop()
    e = store_error(addr, lambda c: c.series_list([Matcher.eq("__name__", "up")]))
    assert e.code == grpc.StatusCode.UNAVAILABLE and prom.url in e.details, e
    sc.wait_ready(lambda: http_get(sc_url + "/-/ready")[0] == 503, 30, what="/-/ready 503")
    sc.wait_ready(lambda: metric(sc_url, "thanos_sidecar_prometheus_up") == 0, 30, what="prometheus_up 0")
    e = store_error(addr, lambda c: c.series_list([Matcher.eq("__name__", "up")]))
    assert e.code == grpc.StatusCode.UNAVAILABLE and prom.url in e.details, e
    assert http_get(sc_url + "/-/healthy")[0] == 200 and sc.alive()


def test_bad_requests_external_labels_and_min_time(prometheus_factory, pythanos_factory):
    prom = prometheus_factory(config_yaml=PROM_CONFIG + "scrape_configs:\n  - job_name: self\n    static_configs:\n"
                              "      - targets: [127.0.0.1:1]\n", ready_timeout=READY_TIMEOUT)
    g, h, g2, h2 = free_ports(4)
    pythanos_factory(sidecar_args(prom.url, g, h), ready_url=f"http://127.0.0.1:{h}/-/ready", name="sidecar",
                     ready_timeout=READY_TIMEOUT)
    addr, addr_min = f"127.0.0.1:{g}", f"127.0.0.1:{g2}"

    def up_timestamps() -> list[int]:
        res = json.loads(http_get(prom.url + "/api/v1/query?query=up[1h]")[1])["data"]["result"]
        return [round(float(t) * 1000) for t, _ in res[0]["values"]] if res else []

    wait = prom.wait_ready
    wait(lambda: len(up_timestamps()) >= 2, READY_TIMEOUT, what="2 scrapes")
    min_ms = (up_timestamps()[0] // 1000 + 3) * 1000  # a whole second after the 2nd/3rd scrape
    min_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(min_ms // 1000))
    pythanos_factory(sidecar_args(prom.url, g2, h2, f"--min-time={min_time}"),
                     ready_url=f"http://127.0.0.1:{h2}/-/ready", name="sidecar-min-time", ready_timeout=READY_TIMEOUT)
    wait(lambda: up_timestamps()[-1] > min_ms + 2000, READY_TIMEOUT, what="scrapes after --min-time")

    def reads() -> float:
        code, body = http_get(prom.url + "/metrics")
        m = re.search(r'prometheus_http_requests_total\{code="200",handler="/api/v1/read"\} (\S+)', body.decode())
        return float(m.group(1)) if m else 0.0

    bad = types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.RE, name="job", value="(")
    e = store_error(addr, lambda c: c.series_list([Matcher.eq("__name__", "up"), bad]))
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "(" in e.details, e
    e = store_error(addr, lambda c: c.label_values("job", [bad]))
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT, e
    e = store_error(addr, lambda c: c.series_list([Matcher.eq("cluster", "eu1")]))
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and e.details == "no matchers specified (excluding external labels)"

    before = reads()
    assert store_call(addr, lambda c: c.series_list([Matcher.eq("__name__", "up"), Matcher.eq("cluster", "us1")])) == (
        [], [])
    assert reads() == before  # answered without asking Prometheus
    series, _ = store_call(addr, lambda c: c.series_list([Matcher.eq("__name__", "up"), Matcher.re("replica", "0|1")]))
    assert len(series) == 1 and reads() == before + 1

    # --min-time: advertised and trimmed
    info = store_call(addr_min, lambda c: c.info())
    assert info.min_time == min_ms
    trimmed, _ = store_call(addr_min, lambda c: c.series_list([Matcher.eq("__name__", "up")]))
    full, _ = store_call(addr, lambda c: c.series_list([Matcher.eq("__name__", "up")]))  # later: a superset
    ts_full = [t for ch in full[0].chunks for t in decode_xor(ch.data)[0].tolist()]
    ts_trim = [t for ch in trimmed[0].chunks for t in decode_xor(ch.data)[0].tolist()]
    assert min(ts_full) < min_ms <= min(ts_trim) and ts_trim == [t for t in ts_full if t >= min_ms][:len(ts_trim)]


def test_prometheus_without_external_labels_is_refused(prometheus_factory, pythanos_factory):
    prom = prometheus_factory(config_yaml="global:\n  scrape_interval: 15s\n", ready_timeout=READY_TIMEOUT)
    g, h = free_ports(2)
    sc = pythanos_factory(sidecar_args(prom.url, g, h), name="sidecar")
    rc = sc.proc.wait(READY_TIMEOUT)
    assert rc == 1
    log = sc.log()
    assert "no external labels configured on Prometheus server, uniquely identifying external labels must be " \
           "configured" in log and prom.url in log and "level=error" in log, log
    assert "Traceback" not in log


@pytest.mark.parametrize("flag,value", [
    ("--min-time", "yesterday"), ("--prometheus.url", "localhost:9090"), ("--grpc-address", "10901"),
    ("--reloader.watch-interval", "3 minutes"), ("--prometheus.ready_timeout", "-"),
])
def test_bad_flag_values_name_the_flag(flag, value):
    r = subprocess.run([sys.executable, "-m", "pythanos.cli", "sidecar", f"{flag}={value}"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and f"argument {flag}:" in r.stderr and "Traceback" not in r.stderr, r.stderr
