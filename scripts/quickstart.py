#!/usr/bin/env python3
"""`make quickstart`: run what pythanos has so far, for real, on this machine.

1. `pythanos tools bench-blocks` writes a year of thanosbench-shaped data (continuous-365d-tiny,
   external labels cluster="eu1") as Prometheus TSDB blocks.
2. A real Prometheus (Debian's 2.42) is started on that directory and serves the year.
3. The blocks are uploaded into a FILESYSTEM bucket the way Thanos lays them out, and
   `pythanos tools bucket ls -o wide` lists them.

It prints what it started and waits for Ctrl-C, then stops everything it started.
The later issues replace this with the course's topology (sidecars, querier, store, compactor).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".quickstart"
BIN = Path(sys.executable).parent


def say(msg: str) -> None:
    print(f"quickstart: {msg}", flush=True)


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def query(base: str, promql: str, at: float) -> list:
    q = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{base}/api/v1/query?{q}", timeout=30) as r:
        return json.load(r)["data"]["result"]


def main() -> int:
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    blocks = WORK / "eu1"
    bucket_dir = WORK / "bucket"
    if not (blocks.exists() and any(blocks.iterdir())):
        blocks.mkdir(parents=True, exist_ok=True)
        say(f"generating a year of data (continuous-365d-tiny, cluster=\"eu1\") into {blocks}")
        subprocess.run([BIN / "pythanos", "tools", "bench-blocks", "--profile", "continuous-365d-tiny",
                        "--labels", 'cluster="eu1"', "--max-time", "6h", "--output.dir", blocks], check=True)
    else:
        say(f"reusing the blocks in {blocks} (delete {WORK} to start afresh)")

    sys.path.insert(0, str(REPO / "components"))
    from pythanos.objstore import FilesystemBucket
    from pythanos.tsdb.upload import upload_block

    bucket = FilesystemBucket(str(bucket_dir))
    uploaded = 0
    for d in sorted(p for p in blocks.iterdir() if p.is_dir() and len(p.name) == 26):
        if not bucket.exists(f"{d.name}/meta.json"):
            upload_block(bucket, d)
            uploaded += 1
    say(f"uploaded {uploaded} new blocks into the FILESYSTEM bucket {bucket_dir}")
    cfg = WORK / "bucket.yml"
    cfg.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {bucket_dir}\n")
    subprocess.run([BIN / "pythanos", "tools", "bucket", "ls", "-o", "wide", f"--objstore.config-file={cfg}"],
                   check=True)

    port = free_port(9090)
    prom_cfg = WORK / "prometheus.yml"
    prom_cfg.write_text("global:\n  scrape_interval: 15s\n  external_labels:\n    cluster: eu1\n")
    log = open(WORK / "prometheus.log", "wb")
    proc = subprocess.Popen([prometheus, f"--config.file={prom_cfg}", f"--storage.tsdb.path={blocks}",
                             "--storage.tsdb.retention.time=1000d", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/-/ready", proc)
        now = time.time()
        recent = query(url, "count(continuous_app_metric0)", now - 3600)
        old = query(url, "continuous_app_metric0", now - 300 * 86400)
        say(f"started Prometheus {prometheus} (pid {proc.pid}) on {url} over {blocks}")
        say(f"  count(continuous_app_metric0) an hour ago = {recent[0]['value'][1] if recent else 'none'}")
        say(f"  continuous_app_metric0 300 days ago = {old[0]['value'][1] if old else 'none'}")
        say(f"  try: {url}/graph?g0.expr=continuous_app_metric0&g0.range_input=1y")
        say("Ctrl-C stops everything.")
        while os.environ.get("QUICKSTART_ONESHOT") != "1":
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        say(f"stopped Prometheus (pid {proc.pid})")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on SIGTERM too
    sys.exit(main())
