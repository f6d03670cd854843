"""Remote-write ingestion: ``pythanos receive`` vs a real ``thanos receive`` v0.42.4, side by side.

Load: ``BENCH_RECEIVE_SERIES`` active series (default 100 000; 20 000 makes a quick run of under two
minutes), node-exporter and HTTP-service label sets (100 series per target: cpu x mode, filesystems,
network and disk devices, request-duration buckets, Go and process gauges; target labels cluster,
namespace, job, instance, pod, node), cut into requests of 2000 series as Prometheus' queue manager
sends them. A *round* sends every series once; each round's samples are 15 s after the last
(per-target scrape offsets, counter values growing). Bodies are prebuilt once per 2000-series group
(RW 2.0 with the protobuf module, RW 1.0 from its decoded columns by our C encoder
``encode_v1_timeseries``); per request only the sample bytes are patched in place (numpy) and the
body snappy-compressed. An asyncio client of ours (aiohttp, ``BENCH_RECEIVE_CONNS`` keep-alive
connections, default 10) sends them on an open-loop schedule; each group always goes over the same
connection, in round order, so no sample reaches a receiver out of order (Prometheus' shards
behave so).

Each receiver runs alone, pinned to core ``BENCH_RECEIVE_CPU`` (default 0) with ``taskset``; this
process is pinned to the other cores. Per receiver and protocol (RW 1.0 for both, RW 2.0 for ours:
Thanos v0.42.4 reads every body as a ``prometheus.WriteRequest``, so it answers a RW 2.0 body with 200
and stores nothing; a rate figure for it would mean nothing):

1. Start on an empty data dir, two rounds as fast as they are accepted (series creation).
2. Rate steps from ``BENCH_RECEIVE_START_RATE`` samples/s (default 25 000), times
   ``BENCH_RECEIVE_FACTOR`` (2) each, ``BENCH_RECEIVE_STEP`` seconds each (10; 3 when fewer than
   50 000 series), at most ``BENCH_RECEIVE_MAX_STEPS`` (8). A step is *sustained* when every request
   answers 2xx and the achieved rate (samples answered / time from the step's start to its last
   answer) is >= 95 % of the target. At the first step that is not, one more step tries the rate
   half way (geometrically) between it and the last sustained one, then stepping stops (it also
   stops when the data would span more than 2.5 h, which would make the head compact mid-run).
3. One step at 50 % of the highest sustained target: p50/p99 write latency (request sent to answer
   read) and the receiver's CPU seconds per million samples.
4. Peak RSS (VmHWM of /proc/<pid>/status) after all that, per million active series.
5. WAL replay: a fresh data dir gets ``BENCH_RECEIVE_REPLAY_ROUNDS`` rounds (default 40: 10 minutes
   of data) as fast as accepted; the receiver is killed (SIGKILL: a graceful Thanos flushes its head
   into a block on exit) and restarted on the dir; the figure is the time from the restart to
   ``/-/ready`` answering 200 (printed with the time the same receiver took to be ready on the
   empty dir, its start-up cost). Thanos v0.42.4 flushes the replayed head into a block before it
   reports ready, so its figure includes that compaction.

Figures: ``receive.<rw1|rw2>.<ours|thanos>.*`` and ``receive.rw1.ratio_*`` (ours / Thanos) for the
sustained rate (>= 1.0 is the goal), p99 latency, peak RSS and replay time (<= 1.0 is the goal),
plus one line per rate step. The client's CPU share in the top step is printed with it: near 100 %
means the figure is the client's limit, not the receiver's.

``BENCH_RECEIVE_WHO`` (comma-separated: thanos,ours), ``BENCH_RECEIVE_PROTOCOLS`` (1,2).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sidecar import _binary, _peers_dir, _ports  # noqa: E402

SERIES = int(os.environ.get("BENCH_RECEIVE_SERIES", "100000"))
PER_REQUEST = 2000
CONNS = int(os.environ.get("BENCH_RECEIVE_CONNS", "10"))
STEP_S = float(os.environ.get("BENCH_RECEIVE_STEP", "10" if SERIES >= 50000 else "3"))
START_RATE = float(os.environ.get("BENCH_RECEIVE_START_RATE", "25000"))
FACTOR = float(os.environ.get("BENCH_RECEIVE_FACTOR", "2"))
MAX_STEPS = int(os.environ.get("BENCH_RECEIVE_MAX_STEPS", "8"))
REPLAY_ROUNDS = int(os.environ.get("BENCH_RECEIVE_REPLAY_ROUNDS", "40"))
WHO = [w for w in os.environ.get("BENCH_RECEIVE_WHO", "thanos,ours").split(",") if w]
PROTOCOLS = [int(p) for p in os.environ.get("BENCH_RECEIVE_PROTOCOLS", "1,2").split(",") if p]
CPU = os.environ.get("BENCH_RECEIVE_CPU", "0")
SCRAPE_MS = 15000
MAX_ROUNDS = int(2.5 * 3600 * 1000 / SCRAPE_MS)  # the head compacts once it spans 3 h
READY_TIMEOUT = 300.0

CT = {1: "application/x-protobuf", 2: "application/x-protobuf;proto=io.prometheus.write.v2.Request"}
VERSION = {1: "0.1.0", 2: "2.0.0"}


# --------------------------------------------------------------------------------- series and bodies

def _target_series() -> list[tuple[str, list[tuple[str, str]], bool]]:
    """The 100 series every target exposes: (metric, its own labels, is a counter)."""
    out: list[tuple[str, list[tuple[str, str]], bool]] = []
    for cpu in range(4):
        for mode in ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"):
            out.append(("node_cpu_seconds_total", [("cpu", str(cpu)), ("mode", mode)], True))
    for dev, mp, fs in (("/dev/nvme0n1p1", "/", "ext4"), ("/dev/nvme0n1p15", "/boot/efi", "vfat"),
                        ("tmpfs", "/run", "tmpfs"), ("/dev/nvme1n1", "/var/lib/kubelet", "xfs")):
        out.append(("node_filesystem_avail_bytes", [("device", dev), ("fstype", fs), ("mountpoint", mp)], False))
    for dev in ("eth0", "lo", "cni0"):
        for d in ("receive", "transmit"):
            out.append((f"node_network_{d}_bytes_total", [("device", dev)], True))
    for handler in ("/api/v1/orders", "/api/v1/users"):
        for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"):
            out.append(("http_request_duration_seconds_bucket",
                        [("handler", handler), ("le", le), ("method", "GET")], True))
        for code in ("200", "404", "500"):
            out.append(("http_requests_total", [("code", code), ("handler", handler), ("method", "GET")], True))
    for dev in ("nvme0n1", "nvme1n1"):
        for m in ("reads_completed_total", "writes_completed_total", "read_bytes_total", "written_bytes_total",
                  "io_time_seconds_total"):
            out.append((f"node_disk_{m}", [("device", dev)], True))
    for m in ("go_goroutines", "go_threads", "go_memstats_alloc_bytes", "go_memstats_heap_inuse_bytes",
              "process_resident_memory_bytes", "process_open_fds", "up", "scrape_duration_seconds",
              "scrape_samples_scraped", "node_load1"):
        out.append((m, [], False))
    for m in ("process_cpu_seconds_total", "go_gc_duration_seconds_count"):
        out.append((m, [], True))
    for m in ("MemAvailable", "MemFree", "Cached", "Buffers", "SwapFree", "Active", "Inactive", "Dirty", "Shmem",
              "Mapped"):
        out.append((f"node_memory_{m}_bytes", [], False))
    assert len(out) == 100, len(out)
    return out


def series_labels(n: int) -> tuple[list[list[tuple[str, str]]], np.ndarray, np.ndarray]:
    """``n`` label sets (100 per target), each target's scrape offset (ms) and counter flags."""
    per = _target_series()
    rng = np.random.default_rng(42)
    out: list[list[tuple[str, str]]] = []
    offsets = np.zeros(n, np.int64)
    counter = np.zeros(n, bool)
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    for t in range((n + 99) // 100):
        a, b, c = t // 65536 % 256, t // 256 % 256, t % 256
        app = f"app-{t % 37}"
        pod = f"{app}-{''.join(rng.choice(list(alphabet), 9))}-{''.join(rng.choice(list(alphabet), 5))}"
        common = [("cluster", f"prod-eu-{t % 3 + 1}"), ("instance", f"10.{a}.{b}.{c}:9100"),
                  ("job", "kubernetes-pods"), ("namespace", f"team-{t % 11}"), ("node", f"ip-10-{a}-{b}-{c}"
                  ".eu-west-1.compute.internal"), ("pod", pod)]
        off = int(rng.integers(0, SCRAPE_MS))
        for k, (metric, own, is_counter) in enumerate(per):
            i = t * 100 + k
            if i >= n:
                break
            out.append([("__name__", metric), *common, *own])
            offsets[i], counter[i] = off, is_counter
    return out, offsets, counter


@dataclass
class Group:
    """One request's worth of series: its body (RW 1.0 or 2.0) with the sample bytes patched per round."""

    arr: np.ndarray  # the uncompressed body, mutated in place
    vidx: np.ndarray  # (n, 8) byte positions of each sample value
    tidx: np.ndarray  # (n, 6) byte positions of each timestamp (a 6-byte varint)
    offsets: np.ndarray
    base: np.ndarray
    step: np.ndarray

    def body(self, t0: int, rnd: int) -> bytes:
        import cramjam

        ts = t0 + rnd * SCRAPE_MS + self.offsets
        vals = self.base + rnd * self.step
        self.arr[self.vidx] = vals.view(np.uint8).reshape(-1, 8)
        b = (ts[:, None] >> (np.arange(6, dtype=np.int64) * 7)) & 0x7F
        b[:, :5] |= 0x80
        self.arr[self.tidx] = b.astype(np.uint8)
        return bytes(cramjam.snappy.compress_raw(self.arr))


def build_groups(n: int, t0: int) -> dict[int, list[Group]]:
    """The prebuilt bodies of every 2000-series group, for RW 1.0 and 2.0."""
    from pythanos.remote.prompb import write_v2_pb2
    from pythanos.remote.write import STATUS_OK, decode_v1, decode_v2, encode_v1_timeseries

    labels, offsets, counter = series_labels(n)
    rng = np.random.default_rng(7)
    base = np.where(counter, rng.integers(1, 10**6, n), rng.uniform(1, 1e9, n)).astype(np.float64)
    step = np.where(counter, rng.integers(1, 500, n), 0).astype(np.float64)
    out: dict[int, list[Group]] = {1: [], 2: []}
    tmpl_ts = t0  # a 6-byte varint, as every timestamp of the run
    assert 1 << 35 <= tmpl_ts and tmpl_ts + MAX_ROUNDS * SCRAPE_MS + SCRAPE_MS < 1 << 42
    for g0 in range(0, n, PER_REQUEST):
        sl = slice(g0, min(n, g0 + PER_REQUEST))
        syms: dict[str, int] = {"": 0}
        r = write_v2_pb2.Request()
        for lbs in labels[sl]:
            ts = r.timeseries.add()
            ts.labels_refs.extend([syms.setdefault(x, len(syms)) for p in lbs for x in p])
            ts.samples.add(value=1.0, timestamp=tmpl_ts)
        r.symbols.extend(syms)
        v2 = r.SerializeToString()
        d2 = decode_v2(v2)
        assert (d2.status == STATUS_OK).all()
        v1 = encode_v1_timeseries(d2)  # sorted labels, as Prometheus sends them
        for proto, body, d in ((2, v2, d2), (1, v1, decode_v1(v1))):
            ends = d.series_ranges[:, 0] + d.series_ranges[:, 1]
            arr = np.frombuffer(bytearray(body), np.uint8).copy()
            # the sample is each series' last field: 0x12 0x10, value 0x09 + 8 bytes, timestamp 0x10 + 6
            assert (arr[ends - 18] == 0x12).all() and (arr[ends - 16] == 0x09).all() and (arr[ends - 7] == 0x10).all()
            out[proto].append(Group(arr, (ends - 15)[:, None] + np.arange(8), (ends - 6)[:, None] + np.arange(6),
                                    offsets[sl], base[sl], step[sl]))
    return out


# --------------------------------------------------------------------------------- the client

@dataclass
class StepResult:
    target: float
    requests: int
    answered: int
    ok: int
    achieved: float
    latencies: np.ndarray
    codes: dict = field(default_factory=dict)
    seconds: float = 0.0
    client_cpu: float = 0.0
    receiver_cpu_s: float = 0.0

    @property
    def sustained(self) -> bool:
        return self.ok == self.requests and self.achieved >= 0.95 * self.target

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if len(self.latencies) else float("nan")


def _cpu_s(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return 0.0


class Load:
    """Rounds of requests to one receiver; the round counter only grows (samples stay in order)."""

    def __init__(self, url: str, groups: list[Group], proto: int, t0: int, pid: int) -> None:
        self.url, self.groups, self.proto, self.t0, self.pid = url + "/api/v1/receive", groups, proto, t0, pid
        self.next = 0  # next request index: round = k // len(groups), group = k % len(groups)
        g = len(groups)
        # each group on one connection: the number of workers divides the number of groups
        self.conns = max(c for c in range(1, min(CONNS, g) + 1) if g % c == 0)
        self.headers = {"Content-Encoding": "snappy", "Content-Type": CT[proto],
                        "X-Prometheus-Remote-Write-Version": VERSION[proto], "User-Agent": "bench-receive"}

    @property
    def rounds(self) -> int:
        return self.next // len(self.groups)

    async def step(self, session, target: float | None, n_req: int, max_seconds: float) -> StepResult:
        """``n_req`` requests at ``target`` samples/s (None: as fast as they are answered)."""
        loop = asyncio.get_running_loop()
        first = self.next
        self.next += n_req
        lat: list[float] = []
        codes: dict[object, int] = {}
        ok = answered = 0
        last = 0.0
        t_start = loop.time() + 0.02
        deadline = t_start + max_seconds
        cpu0, rcpu0 = time.process_time(), _cpu_s(self.pid)

        async def worker(w: int) -> None:
            nonlocal ok, answered, last
            for i in range(w, n_req, self.conns):
                k = first + i
                body = self.groups[k % len(self.groups)].body(self.t0, k // len(self.groups))
                if target:
                    delay = t_start + i * PER_REQUEST / target - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if loop.time() > deadline:
                    return
                s = loop.time()
                try:
                    async with session.post(self.url, data=body, headers=self.headers) as r:
                        await r.read()
                        code: object = r.status
                except Exception as e:  # noqa: BLE001: counted as an error, the load goes on
                    code = type(e).__name__
                now = loop.time()
                lat.append(now - s)
                answered += 1
                last = max(last, now)
                codes[code] = codes.get(code, 0) + 1
                if isinstance(code, int) and 200 <= code < 300:
                    ok += 1

        await asyncio.gather(*(worker(w) for w in range(self.conns)))
        took = max(last - t_start, 1e-9)
        return StepResult(target or 0.0, n_req, answered, ok, ok * PER_REQUEST / took, np.array(lat), codes, took,
                          (time.process_time() - cpu0) / took, _cpu_s(self.pid) - rcpu0)


# --------------------------------------------------------------------------------- receivers

@dataclass
class Receiver:
    who: str
    args: list[str]
    http: str
    rw: str
    work: Path
    proc: subprocess.Popen | None = None

    def start(self, tag: str) -> None:
        log = open(self.work / f"{self.who}-{tag}.log", "wb")
        self.proc = subprocess.Popen(["taskset", "-c", CPU, *self.args], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def wait_ready(self) -> float:
        """Seconds from now until /-/ready answers 200 (polled every 20 ms)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < READY_TIMEOUT:
            if self.proc.poll() is not None:
                logs = sorted(self.work.glob(f"{self.who}-*.log"))
                raise RuntimeError(f"{self.who} exited with {self.proc.returncode}: "
                                   f"{logs[-1].read_text(errors='replace')[-1500:] if logs else ''}")
            try:
                with urllib.request.urlopen(self.http + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except Exception:  # noqa: BLE001: not up yet
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.who} not ready after {READY_TIMEOUT} s")

    def hwm_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(30)


def receiver(who: str, binary: str, work: Path, data: Path) -> Receiver:
    g, h, w, c = _ports(4)
    common = [f"--tsdb.path={data}", f"--remote-write.address=127.0.0.1:{w}", f"--grpc-address=127.0.0.1:{g}",
              f"--http-address=127.0.0.1:{h}", "--log.level=warn"]
    if who == "thanos":
        args = [binary, "receive", "--label=replica=\"0\"", *common, f"--receive.capnproto-address=127.0.0.1:{c}"]
    else:
        args = [binary, "receive", "--label=r=\"0\"", *common]
    return Receiver(who, args, f"http://127.0.0.1:{h}", f"http://127.0.0.1:{w}", work)


# --------------------------------------------------------------------------------- one receiver, one protocol

async def _measure(r: Receiver, groups: list[Group], proto: int, t0: int) -> dict:
    import aiohttp

    res: dict = {"steps": []}
    load = Load(r.rw, groups, proto, t0, r.proc.pid)
    per_round = len(groups)
    conn = aiohttp.TCPConnector(limit=load.conns)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as s:
        warm = await load.step(s, None, 2 * per_round, 300)
        res["warm"] = warm
        rate, best, refined = START_RATE, None, False
        for _ in range(MAX_STEPS + 1):
            n_req = max(load.conns, int(rate * STEP_S / PER_REQUEST))
            if load.rounds + (n_req + per_round - 1) // per_round + 20 > MAX_ROUNDS:
                res["round_limit"] = True
                break
            st = await load.step(s, rate, n_req, 2 * STEP_S + 10)
            res["steps"].append(st)
            if st.sustained:
                best = st
                if refined:
                    break
                rate *= FACTOR
            elif best is None or refined:
                break
            else:  # once: the rate half way (geometrically) between the last sustained step and this one
                refined = True
                rate = best.target * FACTOR ** 0.5
        res["best"] = best
        if best is not None:
            half = best.target / 2
            res["half"] = await load.step(s, half, max(load.conns, int(half * STEP_S / PER_REQUEST)), 2 * STEP_S + 10)
    res["hwm_kb"] = r.hwm_kb()
    res["samples"] = load.next * PER_REQUEST
    return res


async def _replay_data(r: Receiver, groups: list[Group], proto: int, t0: int) -> StepResult:
    import aiohttp

    load = Load(r.rw, groups, proto, t0, r.proc.pid)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=load.conns),
                                     timeout=aiohttp.ClientTimeout(total=60)) as s:
        return await load.step(s, None, REPLAY_ROUNDS * len(groups), 1800)


def _one(who: str, binary: str, proto: int, groups: list[Group], t0: int, work: Path) -> dict:
    data = work / f"{who}-rw{proto}-load"
    r = receiver(who, binary, work, data)
    r.start(f"rw{proto}-load")
    try:
        r.wait_ready()
        res = asyncio.run(_measure(r, groups, proto, t0))
    finally:
        r.kill()
    shutil.rmtree(data, ignore_errors=True)
    data = work / f"{who}-rw{proto}-replay"
    r = receiver(who, binary, work, data)
    r.start(f"rw{proto}-replay")
    try:
        res["start_empty_s"] = r.wait_ready()
        fill = asyncio.run(_replay_data(r, groups, proto, t0))
        res["replay_fill"] = fill
        r.kill()
        wal = sum(f.stat().st_size for f in data.rglob("*") if f.is_file() and "wal" in f.parts)
        res["wal_bytes"] = wal
        r.start(f"rw{proto}-restart")
        res["replay_s"] = r.wait_ready()
    finally:
        r.kill()
    shutil.rmtree(data, ignore_errors=True)
    return res


# --------------------------------------------------------------------------------- figures

def _figures(out: list, proto: int, who: str, res: dict) -> None:
    name = f"receive.rw{proto}.{who}"
    for st in res["steps"]:
        out.append((f"{name}.step.{int(st.target):d}", st.achieved,
                    f"samples/s achieved ({'sustained' if st.sustained else 'NOT sustained'}; "
                    f"{st.ok}/{st.requests} 2xx {st.codes}, p99 {st.p(99):.0f} ms, client CPU {st.client_cpu:.0%})"))
    best = res.get("best")
    note = " (round budget reached: at least this)" if res.get("round_limit") else ""
    out.append((f"{name}.sustained_samples_per_s", best.target if best else 0,
                f"samples/s{note} (achieved {best.achieved:,.0f}, client CPU {best.client_cpu:.0%})"
                if best else "samples/s (no step sustained)"))
    half = res.get("half")
    if half is not None:
        out.append((f"{name}.p99_ms_at_half", half.p(99),
                    f"ms at {half.target:,.0f} samples/s (p50 {half.p(50):.1f} ms, {half.ok}/{half.requests} 2xx)"))
        out.append((f"{name}.cpu_s_per_million_samples", half.receiver_cpu_s / (half.ok * PER_REQUEST / 1e6),
                    "CPU-s of the receiver per million samples at 50 % load"))
    out.append((f"{name}.peak_rss_mb_per_million_series", res["hwm_kb"] / 1024 / (SERIES / 1e6),
                f"MB (VmHWM {res['hwm_kb'] / 1024:.0f} MB for {SERIES:,} series, {res['samples']:,} samples)"))
    fill = res["replay_fill"]
    out.append((f"{name}.wal_replay_s", res["replay_s"],
                f"s to /-/ready after SIGKILL ({REPLAY_ROUNDS} rounds = {fill.ok * PER_REQUEST:,} samples, "
                f"WAL {res['wal_bytes'] / 2**20:.0f} MB; filled at {fill.achieved:,.0f} samples/s; "
                f"ready on the empty dir in {res['start_empty_s']:.2f} s)"))
    if fill.ok != fill.requests:
        out.append((f"{name}.wal_replay_fill_errors", fill.requests - fill.ok, f"requests not 2xx {fill.codes}"))


def _ratios(out: list, proto: int, results: dict) -> None:
    o, t = results.get("ours"), results.get("thanos")
    if not o or not t:
        return
    name = f"receive.rw{proto}.ratio"

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    ob, tb = o.get("best"), t.get("best")
    out.append((f"{name}.sustained_ours_over_thanos", ratio(ob.target if ob else 0, tb.target if tb else 0),
                "x (>= 1.0 is the goal)"))
    if o.get("half") and t.get("half"):
        out.append((f"{name}.p99_at_half_ours_over_thanos", ratio(o["half"].p(99), t["half"].p(99)),
                    "x (<= 1.0 is the goal; each at half its own sustained rate)"))
    out.append((f"{name}.peak_rss_ours_over_thanos", ratio(o["hwm_kb"], t["hwm_kb"]), "x (<= 1.0 is the goal)"))
    out.append((f"{name}.wal_replay_ours_over_thanos", ratio(o["replay_s"], t["replay_s"]), "x (<= 1.0 is the goal)"))


def run() -> list[tuple[str, float, str]]:
    bins = {"thanos": _binary(_peers_dir() / "bin" / "thanos"),
            "ours": _binary(Path(sys.executable).parent / "pythanos", "pythanos")}
    _binary("taskset")
    out: list[tuple[str, float, str]] = []
    now_ms = int(time.time() * 1000)
    t0 = (now_ms - 30 * 60 * 1000) // SCRAPE_MS * SCRAPE_MS
    t_build = time.perf_counter()
    groups = build_groups(SERIES, t0)
    out.append(("receive.build_bodies_s", time.perf_counter() - t_build,
                f"s to prebuild {len(groups[1])} x 2 bodies of {PER_REQUEST} series"))
    mask = os.sched_getaffinity(0)
    others = {c for c in mask if str(c) not in CPU.split(",")}
    if others:
        os.sched_setaffinity(0, others)
    work = Path(tempfile.mkdtemp(prefix="bench-receive-"))
    try:
        for proto in PROTOCOLS:
            results: dict[str, dict] = {}
            for who in WHO:
                if who == "thanos" and proto == 2:
                    continue  # v0.42.4 answers 200 to a RW 2.0 body and stores nothing
                try:
                    results[who] = _one(who, bins[who], proto, groups[proto], t0, work)
                except Exception as e:  # noqa: BLE001: the other receiver's figures still count
                    out.append((f"receive.rw{proto}.{who}.error", 1, f"{type(e).__name__}: {str(e)[-300:]}"))
                    continue
                _figures(out, proto, who, results[who])
            _ratios(out, proto, results)
    finally:
        os.sched_setaffinity(0, mask)
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name:<56} {value:>12,.6g} {unit}")
