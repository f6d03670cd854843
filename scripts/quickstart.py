#!/usr/bin/env python3
"""`make quickstart`: the Thanos course's first topology, for real, on this machine, no Docker.

As in the course (../shared/seeds, course 1, steps 1-3):

* three real Prometheus servers: ``cluster=eu1, replica=0`` on :9090 scraping itself, and two
  ``cluster=us1`` replicas 0 and 1 on :9091/:9092 scraping both us1 servers; each also scrapes
  its sidecar (the course's "verification" configs);
* our sidecar next to each (HTTP :19090-19092, gRPC :19190-19192, reloading the config file);
* our querier on :29090 with ``--query.replica-label replica`` over the three sidecars.

A port that is taken is replaced by a free one (the addresses printed are the real ones). It
prints the UI address and, once the first scrapes are in, ``sum(prometheus_tsdb_head_series)``
with and without de-duplication, then waits for Ctrl-C and stops everything it started, by
process id. ``QUICKSTART_ONESHOT=1`` stops after printing (used to check it works);
``QUICKSTART_DIR`` puts configs, data and logs elsewhere than ``.quickstart/``.
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
WORK = Path(os.environ.get("QUICKSTART_DIR") or REPO / ".quickstart")
BIN = Path(sys.executable).parent


def say(msg: str) -> None:
    print(f"quickstart: {msg}", flush=True)


def free_port(preferred: int, taken: set[int]) -> int:
    for port in (preferred, 0):
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            got = s.getsockname()[1]
        if got not in taken:
            taken.add(got)
            return got
    return free_port(0, taken)


def prom_config(cluster: str, replica: int, targets: list[int], sidecars: list[int]) -> str:
    t = ",".join(f"'127.0.0.1:{p}'" for p in targets)
    s = ",".join(f"'127.0.0.1:{p}'" for p in sidecars)
    return f"""global:
  scrape_interval: 15s
  evaluation_interval: 15s
  external_labels:
    cluster: {cluster}
    replica: {replica}

scrape_configs:
  - job_name: 'prometheus'
    static_configs:
      - targets: [{t}]
  - job_name: 'sidecar'
    static_configs:
      - targets: [{s}]
"""


class Procs:
    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list) -> subprocess.Popen:
        log = open(WORK / f"{name}.log", "wb")
        p = subprocess.Popen([str(a) for a in args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             stdin=subprocess.DEVNULL)
        log.close()
        self.started.append((name, p))
        return p

    def stop(self) -> None:
        for name, p in reversed(self.started):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for name, p in reversed(self.started):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
            say(f"stopped {name} (pid {p.pid})")


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def wait_for(what: str, check, procs: Procs, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, p in procs.started:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}; see {WORK / (name + '.log')}")
        if check():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def query(base: str, promql: str, **params) -> dict:
    qs = urllib.parse.urlencode({"query": promql, **params})
    code, body = get(f"{base}/api/v1/query?{qs}", timeout=30)
    return json.loads(body) if body else {"status": "error", "error": f"HTTP {code}"}


def main() -> int:
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    pythanos = BIN / "pythanos"
    WORK.mkdir(exist_ok=True)
    taken: set[int] = set()
    prom_ports = [free_port(p, taken) for p in (9090, 9091, 9092)]
    sc_http = [free_port(p, taken) for p in (19090, 19091, 19092)]
    sc_grpc = [free_port(p, taken) for p in (19190, 19191, 19192)]
    q_http, q_grpc = free_port(29090, taken), free_port(10901, taken)
    servers = [("eu1", 0, [prom_ports[0]], [sc_http[0]]),
               ("us1", 0, prom_ports[1:], sc_http[1:]),
               ("us1", 1, prom_ports[1:], sc_http[1:])]

    procs = Procs()
    try:
        for i, (cluster, replica, targets, sidecars) in enumerate(servers):
            name = f"prometheus{replica}_{cluster}"
            cfg = WORK / f"{name}.yml"
            cfg.write_text(prom_config(cluster, replica, targets, sidecars))
            data = WORK / f"{name}_data"
            data.mkdir(exist_ok=True)
            procs.start(name, [prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={data}",
                               f"--web.listen-address=127.0.0.1:{prom_ports[i]}", "--web.enable-lifecycle"])
            procs.start(f"sidecar{replica}_{cluster}", [
                pythanos, "sidecar", f"--http-address=127.0.0.1:{sc_http[i]}",
                f"--grpc-address=127.0.0.1:{sc_grpc[i]}", f"--reloader.config-file={cfg}",
                f"--prometheus.url=http://127.0.0.1:{prom_ports[i]}", "--tsdb.path", str(data)])
        procs.start("querier", [pythanos, "query", f"--http-address=127.0.0.1:{q_http}",
                                f"--grpc-address=127.0.0.1:{q_grpc}", "--query.replica-label", "replica",
                                *[a for g in sc_grpc for a in ("--store", f"127.0.0.1:{g}")]])
        ui = f"http://127.0.0.1:{q_http}"
        wait_for("the querier", lambda: get(ui + "/-/ready")[0] == 200, procs)
        wait_for("three healthy sidecars on the stores page", lambda: sum(
            1 for g in json.loads(get(ui + "/api/v1/stores")[1] or b'{"data":{}}')["data"].values()
            for s in g if not s["lastError"]) == 3, procs)
        for i, (cluster, replica, _, _) in enumerate(servers):
            say(f"Prometheus {replica} {cluster}: http://127.0.0.1:{prom_ports[i]}  sidecar: "
                f"http://127.0.0.1:{sc_http[i]} (gRPC 127.0.0.1:{sc_grpc[i]})")
        say(f"querier UI: {ui}/graph   stores: {ui}/stores")
        say("waiting for the first scrapes (15 s interval, as in the course) ...")

        def five_series() -> bool:
            doc = query(ui, "prometheus_tsdb_head_series", dedup="false")
            return doc.get("status") == "success" and len(doc["data"]["result"]) == 5
        wait_for("the first scrapes", five_series, procs, timeout=90)
        for dedup in ("true", "false"):
            doc = query(ui, "sum(prometheus_tsdb_head_series)", dedup=dedup)
            val = doc["data"]["result"][0]["value"][1] if doc.get("data", {}).get("result") else "no data"
            n = len(query(ui, "prometheus_tsdb_head_series", dedup=dedup)["data"]["result"])
            say(f"  dedup={dedup}: prometheus_tsdb_head_series has {n} series, "
                f"sum(prometheus_tsdb_head_series) = {val}")
        say(f"  try: {ui}/graph?g0.expr=sum(prometheus_tsdb_head_series)&g0.tab=0 and toggle 'deduplication'")
        say("Ctrl-C stops everything.")
        while os.environ.get("QUICKSTART_ONESHOT") != "1":
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        procs.stop()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on SIGTERM too
    sys.exit(main())
