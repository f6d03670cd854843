#!/usr/bin/env python3
"""`make quickstart`: the Thanos course on this machine, for real, no Docker.

First half, as in the course (../shared/seeds, course 1, steps 1-3):

* three real Prometheus servers: ``cluster=eu1, replica=0`` on :9090 scraping itself, and two
  ``cluster=us1`` replicas 0 and 1 on :9091/:9092 scraping both us1 servers; each also scrapes
  its sidecar (the course's "verification" configs);
* our sidecar next to each (HTTP :19090-19092, gRPC :19190-19192, reloading the config file);
* our querier on :29090 with ``--query.replica-label replica`` over the three sidecars, the store
  gateway below and ``--query.auto-downsampling``.

Second half, as in the course (course 2, steps 1, 3 and 4), beside the first:

* a year of eu1 data, ``pythanos tools bench-blocks --profile continuous-365d-tiny --labels
  'cluster="eu1"' --max-time=6h``, generated once into a FILESYSTEM bucket (``bucket/``, config
  ``bucket_storage.yaml``) and reused by later runs (delete ``bucket/`` to generate a fresh year);
* our compactor on it (HTTP :19095, ``--wait --wait-interval=30s --consistency-delay=0s``), which
  downsamples the year to 5m and 1h blocks; its bucket UI is ``/blocks`` on its HTTP port;
* our store gateway on it (the course's :19091/:19191 are the us1 sidecar's here, so HTTP :19093,
  gRPC :19193), started once the compactor's first pass is done so it serves the downsampled blocks
  from its first sync; the querier has its gRPC address as a ``--store``.

A port that is taken is replaced by a free one (the addresses printed are the real ones). It prints
the addresses and, once the first scrapes are in, ``sum(prometheus_tsdb_head_series)`` with and
without de-duplication, then a query over the year through the querier; then it waits for Ctrl-C
(or SIGTERM) and stops everything it started, by process id. ``QUICKSTART_ONESHOT=1`` stops after
printing (used to check it works); ``QUICKSTART_DIR`` puts configs, data, the bucket and logs
elsewhere than ``.quickstart/``.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("QUICKSTART_DIR") or REPO / ".quickstart")
BIN = Path(sys.executable).parent
BUCKET = WORK / "bucket"
YEAR_QUERY = "sum by (__name__) (rate(continuous_app_metric0[5m]))"
RESOLUTIONS = {0: "raw", 300_000: "5m", 3_600_000: "1h"}


def say(msg: str) -> None:
    print(f"quickstart: {msg}", flush=True)


def free_port(preferred: int, taken: set[int]) -> int:
    for port in (preferred, 0):
        if port in taken:
            continue
        with socket.socket() as s:
            # As Go's and aiohttp's listeners do: a port in TIME_WAIT from the last run is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


class Stopping(Exception):
    """Ctrl-C arrived while the second half was still starting things."""


class Procs:
    """Everything started, stopped by process group id. Servers are ``started``; ``jobs`` run once
    (the year's generation) and are only interrupted if still running at Ctrl-C."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []
        self.jobs: list[tuple[str, subprocess.Popen]] = []
        self.lock = threading.Lock()  # the second half starts processes from its own thread
        self.stopping = False

    def start(self, name: str, args: list, *, job: bool = False) -> subprocess.Popen:
        with self.lock:
            if self.stopping:
                raise Stopping(name)
            log = open(WORK / f"{name}.log", "wb")
            p = subprocess.Popen([str(a) for a in args], stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, stdin=subprocess.DEVNULL)
            log.close()
            (self.jobs if job else self.started).append((name, p))
            return p

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
        for name, p in reversed(self.jobs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait()
                say(f"interrupted {name} (pid {p.pid})")
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
        if procs.stopping:
            raise Stopping(what)
        for name, p in list(procs.started):
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}; see {WORK / (name + '.log')}")
        if check():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def query(base: str, promql: str, path: str = "query", **params) -> dict:
    qs = urllib.parse.urlencode({"query": promql, **params})
    code, body = get(f"{base}/api/v1/{path}?{qs}", timeout=60)
    return json.loads(body) if body else {"status": "error", "error": f"HTTP {code}"}


def metric(base: str, name: str) -> float | None:
    """The sum of a metric's samples on ``base``/metrics, None while it has none."""
    code, body = get(base + "/metrics")
    vals = [float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body.decode(errors="replace"),
                                                     re.M)] if code == 200 else []
    return sum(vals) if vals else None


def bucket_blocks(bucket: Path) -> dict[str, int]:
    """Blocks per resolution ("raw", "5m", "1h") among the bucket's blocks not marked for deletion."""
    out = {name: 0 for name in RESOLUTIONS.values()}
    for meta in bucket.glob("*/meta.json"):
        if (meta.parent / "deletion-mark.json").exists():
            continue
        try:
            res = json.loads(meta.read_text())["thanos"]["downsample"]["resolution"]
        except (OSError, ValueError, KeyError):
            continue  # a block being written
        out[RESOLUTIONS.get(res, str(res))] = out.get(RESOLUTIONS.get(res, str(res)), 0) + 1
    return out


def fmt_blocks(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {res}" for res, n in counts.items())


class SecondHalf:
    """The course's second half, run in a thread beside the first: the year (once), the compactor,
    then the store gateway. ``error`` holds what went wrong; ``done`` is set when the store is ready."""

    def __init__(self, procs: Procs, pythanos: Path, compact_http: int, store_http: int, store_grpc: int):
        self.procs, self.pythanos = procs, pythanos
        self.compact_http, self.store_http, self.store_grpc = compact_http, store_http, store_grpc
        self.objstore = WORK / "bucket_storage.yaml"
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.year()
            self.compactor()
            self.store()
        except Stopping:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e
        finally:
            self.done.set()

    def year(self) -> None:
        if BUCKET.is_dir():
            say(f"second half: reusing the year in {BUCKET} ({fmt_blocks(bucket_blocks(BUCKET))} blocks; "
                f"delete it to generate a new year)")
        else:
            partial = WORK / "bucket.partial"
            shutil.rmtree(partial, ignore_errors=True)
            say("second half: generating a year of eu1 data (pythanos tools bench-blocks --profile "
                "continuous-365d-tiny --labels 'cluster=\"eu1\"' --max-time=6h) ...")
            t0 = time.monotonic()
            p = self.procs.start("bench-blocks", [
                self.pythanos, "tools", "bench-blocks", "--profile", "continuous-365d-tiny",
                "--labels", 'cluster="eu1"', "--max-time=6h", f"--output.dir={partial}"], job=True)
            while p.poll() is None:  # progress: the blocks written so far, every few seconds
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    say(f"second half:   {len(list(partial.glob('*/meta.json')))} of 13 blocks written ...")
            if self.procs.stopping:
                raise Stopping("bench-blocks")
            if p.returncode != 0:
                raise RuntimeError(f"bench-blocks exited with {p.returncode}; see {WORK / 'bench-blocks.log'}")
            partial.rename(BUCKET)  # only a complete year is ever reused
            say(f"second half: {len(list(BUCKET.glob('*/meta.json')))} blocks written to {BUCKET} "
                f"in {time.monotonic() - t0:.1f} s")
        self.objstore.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {BUCKET}\n")

    def compactor(self) -> None:
        base = f"http://127.0.0.1:{self.compact_http}"
        t0 = time.monotonic()
        self.procs.start("compactor", [
            self.pythanos, "compact", "--wait", "--wait-interval=30s", "--consistency-delay=0s",
            "--delete-delay=2h", f"--objstore.config-file={self.objstore}", f"--data-dir={WORK / 'compact_data'}",
            f"--http-address=127.0.0.1:{self.compact_http}"])
        wait_for("the compactor's first pass (thanos_compact_iterations_total >= 1)",
                 lambda: (metric(base, "thanos_compact_iterations_total") or 0) >= 1, self.procs, timeout=600)
        say(f"second half: compactor's first pass done in {time.monotonic() - t0:.1f} s; "
            f"bucket: {fmt_blocks(bucket_blocks(BUCKET))} blocks")

    def store(self) -> None:
        base = f"http://127.0.0.1:{self.store_http}"
        t0 = time.monotonic()
        # --ignore-deletion-marks-delay below the compactor's --delete-delay (as Thanos advises), so the
        # store lets go of a compacted-away block before the compactor deletes it.
        self.procs.start("store", [
            self.pythanos, "store", f"--objstore.config-file={self.objstore}", f"--data-dir={WORK / 'store_data'}",
            f"--http-address=127.0.0.1:{self.store_http}", f"--grpc-address=127.0.0.1:{self.store_grpc}",
            "--ignore-deletion-marks-delay=1h"])
        wait_for("the store gateway", lambda: get(base + "/-/ready")[0] == 200, self.procs, timeout=300)
        say(f"second half: store gateway ready in {time.monotonic() - t0:.1f} s with "
            f"{metric(base, 'thanos_bucket_store_blocks_loaded') or 0:.0f} blocks")


def day(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d")


def main() -> int:
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    pythanos = BIN / "pythanos"
    WORK.mkdir(exist_ok=True)
    taken: set[int] = set()
    prom_ports = [free_port(p, taken) for p in (9090, 9091, 9092)]
    sc_http = [free_port(p, taken) for p in (19090, 19091, 19092)]
    sc_grpc = [free_port(p, taken) for p in (19190, 19191, 19192)]
    q_http, q_grpc = free_port(29090, taken), free_port(10901, taken)
    store_http, store_grpc = free_port(19093, taken), free_port(19193, taken)
    compact_http = free_port(19095, taken)
    servers = [("eu1", 0, [prom_ports[0]], [sc_http[0]]),
               ("us1", 0, prom_ports[1:], sc_http[1:]),
               ("us1", 1, prom_ports[1:], sc_http[1:])]

    procs = Procs()
    second = SecondHalf(procs, pythanos, compact_http, store_http, store_grpc)
    try:
        threading.Thread(target=second.run, name="second-half", daemon=True).start()
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
                                *[a for g in [*sc_grpc, store_grpc] for a in ("--store", f"127.0.0.1:{g}")],
                                "--query.auto-downsampling"])
        ui = f"http://127.0.0.1:{q_http}"

        def healthy(addrs: list[str]) -> bool:
            doc = json.loads(get(ui + "/api/v1/stores")[1] or b'{"data":{}}')
            ok = {s["name"] for g in doc.get("data", {}).values() for s in g if not s["lastError"]}
            return ok.issuperset(addrs)
        wait_for("the querier", lambda: get(ui + "/-/ready")[0] == 200, procs)
        wait_for("three healthy sidecars on the stores page",
                 lambda: healthy([f"127.0.0.1:{g}" for g in sc_grpc]), procs)
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

        # The second half: wait for its thread, then for the querier to see the store gateway.
        wait_for("the second half (year, compactor, store gateway)",
                 lambda: second.done.is_set(), procs, timeout=900)
        if second.error is not None:
            raise second.error
        wait_for("the store gateway on the querier's stores page", lambda: healthy([f"127.0.0.1:{store_grpc}"]),
                 procs)

        def year_known() -> bool:
            """The querier has the store gateway's time range (its Info after the blocks were
            loaded): before that it asks the store for nothing older than what the sidecars hold."""
            doc = json.loads(get(ui + "/api/v1/stores")[1] or b'{"data":{}}')
            mins = [s.get("minTime") for g in doc.get("data", {}).values() for s in g
                    if s["name"] == f"127.0.0.1:{store_grpc}"]
            return bool(mins) and mins[0] is not None and mins[0] <= (time.time() - 300 * 86400) * 1000
        wait_for("the store gateway's year on the querier's stores page", year_known, procs)
        store_ui, compact_ui = f"http://127.0.0.1:{store_http}", f"http://127.0.0.1:{compact_http}"
        say(f"store gateway: {store_ui} (gRPC 127.0.0.1:{store_grpc})  compactor: {compact_ui}  "
            f"bucket: {BUCKET}")
        for name, base in (("compactor", compact_ui), ("store gateway", store_ui)):
            code = get(base + "/blocks")[0]
            if code == 200:
                say(f"bucket UI ({name}): {base}/blocks")
            elif name == "compactor":
                say(f"bucket UI ({name}): {base}/blocks (HTTP {code}: not served by this build yet)")
        end = time.time()
        doc = query(ui, YEAR_QUERY, "query_range", start=f"{end - 365 * 86400:.3f}", end=f"{end:.3f}", step="1d")
        series = doc.get("data", {}).get("result", []) if doc.get("status") == "success" else []
        if not series or not series[0]["values"]:
            raise RuntimeError(f"the year's query answered {doc}")
        vals = series[0]["values"]
        say(f"a year through the querier (auto-downsampling: 5m and 1h blocks), step 1d: {YEAR_QUERY}")
        say(f"  {len(series)} series, {len(vals)} points from {day(vals[0][0])} to {day(vals[-1][0])}")
        expr = urllib.parse.quote(YEAR_QUERY)
        say(f"  try: {ui}/graph?g0.expr={expr}&g0.tab=0&g0.range_input=1y&g0.step_input=86400")
        say("Ctrl-C stops everything.")
        while os.environ.get("QUICKSTART_ONESHOT") != "1":
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    except Stopping:
        pass
    finally:
        procs.stop()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on SIGTERM too
    sys.exit(main())
