"""Sidecar Series throughput: ``pythanos sidecar`` vs a real ``thanos sidecar`` on the same Prometheus.

Set-up (started here, stopped by process id at the end): one ``bench-10k-2h`` block (10 000 series x
480 samples, 15 s) written by ``pythanos tools bench-blocks`` into a temporary TSDB dir, one
Prometheus 2.42 on it (retention 10y), our sidecar and a Thanos sidecar (peers cache, see
``scripts/peers.sh``) in front of it. Then a full Series, ``{__name__=~".+"}`` over the whole time
range with all chunks: one warm-up through our ``StoreClient`` that decodes every frame and checks
both answers agree, then ``RUNS`` timed runs reading raw frames on grpc's synchronous channel against each sidecar, alternating; first with ``response_batch_size=64``
(what a Thanos v0.42 querier asks for, ``store.DefaultResponseBatchSize``), then unbatched (one gRPC
message per series, older queriers; figures ``sidecar.unbatched.*``).

Figures: ``sidecar.ours.series_per_s`` / ``.mb_per_s`` (chunk bytes), the same for Thanos, and
``sidecar.ratio_time_ours_over_thanos`` (median time ours / median time Thanos; <= 1.0 is the goal).
``BENCH_SIDECAR_PROFILE`` picks another bench-blocks profile.
"""
from __future__ import annotations

import asyncio
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

PROFILE = os.environ.get("BENCH_SIDECAR_PROFILE", "bench-10k-2h")
RUNS = int(os.environ.get("BENCH_SIDECAR_RUNS", "3"))
READY_TIMEOUT = 300.0


def _peers_dir() -> Path:
    env = os.environ.get("PYTHANOS_PEERS_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pythanos-peers"


def _binary(*cands) -> str:
    for c in cands:
        c = str(c)
        p = shutil.which(c) if os.sep not in c else (c if os.access(c, os.X_OK) else None)
        if p:
            return p
    raise RuntimeError(f"binary not found: {', '.join(map(str, cands))}")


def _ports(n: int) -> list[int]:
    """Ports leased as the tests lease theirs (tests/ports.py): a benchmark running next to a test
    run never starts a server on a port one of the tests' servers is about to take."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from ports import free_ports

    return free_ports(n)


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except Exception:  # noqa: BLE001
        return False


class _Procs:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "wb")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        log.close()
        p.name = name  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    def wait(self, p: subprocess.Popen, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.returncode}: "  # type: ignore[attr-defined]
                                   f"{(self.work / (p.name + '.log')).read_text()[-2000:]}")  # type: ignore
            if _ok(url):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{p.name} not ready at {url}")  # type: ignore[attr-defined]

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
                except ProcessLookupError:
                    pass


async def _series_once(addr: str, count_bytes: bool, batch: int) -> tuple[float, int, int]:
    """The warm-up: every frame decoded, series and chunk bytes counted (the answers must agree)."""
    from pythanos.storeapi import MAX_TIME, MIN_TIME, StoreClient
    from pythanos.tsdb.labels import Matcher

    async with StoreClient(addr, timeout=600) as c:
        req = c.series_request([Matcher.re("__name__", ".+")], MIN_TIME, MAX_TIME, response_batch_size=batch)
        await c.info()  # connect outside the timed part
        n = nbytes = 0
        t0 = time.perf_counter()
        async for f in c.series_frames(req):
            kind = f.WhichOneof("result")
            if kind == "series":
                n += 1
                if count_bytes:
                    nbytes += sum(len(ch.raw.data) for ch in f.series.chunks)
            elif kind == "batch":
                n += len(f.batch.series)
                if count_bytes:
                    nbytes += sum(len(ch.raw.data) for s in f.batch.series for ch in s.chunks)
        return time.perf_counter() - t0, n, nbytes


def _series_timed(addr: str, batch: int) -> tuple[float, int]:
    """One timed Series call read as raw frames on grpc's synchronous channel.

    The Python client must not be what is measured: decoding 10k unbatched frames in asyncio costs
    about as much as either server takes to send them. Frames are counted by their oneof tag
    (``series`` = field 1, ``batch`` = field 4); only batch frames (about 160) are parsed to count
    their series."""
    import grpc

    from pythanos.storeapi import MAX_TIME, MIN_TIME, StoreClient
    from pythanos.storeapi.pb import rpc_pb2
    from pythanos.tsdb.labels import Matcher

    req = StoreClient(addr).series_request([Matcher.re("__name__", ".+")], MIN_TIME, MAX_TIME,
                                           response_batch_size=batch)
    opts = [("grpc.max_receive_message_length", 1 << 30)]
    with grpc.insecure_channel(addr, options=opts) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        call = ch.unary_stream("/thanos.Store/Series", request_serializer=rpc_pb2.SeriesRequest.SerializeToString,
                               response_deserializer=None)
        n = 0
        t0 = time.perf_counter()
        for frame in call(req, timeout=600):
            tag = frame[0]
            if tag == 0x0A:
                n += 1
            elif tag == 0x22:
                n += len(rpc_pb2.SeriesResponse.FromString(frame).batch.series)
        return time.perf_counter() - t0, n


def run() -> list[tuple[str, float, str]]:
    prometheus = _binary("/usr/bin/prometheus", "prometheus")
    thanos = _binary(_peers_dir() / "bin" / "thanos")
    pythanos = _binary(Path(sys.executable).parent / "pythanos", "pythanos")
    work = Path(tempfile.mkdtemp(prefix="bench-sidecar-"))
    procs = _Procs(work)
    try:
        tsdb = work / "tsdb"
        subprocess.run([pythanos, "tools", "bench-blocks", "--profile", PROFILE, f"--output.dir={tsdb}",
                        "--log.level=warn"], check=True)
        prom_port, o_grpc, o_http, t_grpc, t_http = _ports(5)
        cfg = work / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1h\n  external_labels:\n    cluster: bench\n    replica: '0'\n")
        prom = procs.start("prometheus", [prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={tsdb}",
                                          f"--web.listen-address=127.0.0.1:{prom_port}",
                                          "--storage.tsdb.retention.time=10y"])
        prom_url = f"http://127.0.0.1:{prom_port}"
        procs.wait(prom, prom_url + "/-/ready")
        ours = procs.start("pythanos-sidecar", [pythanos, "sidecar", f"--prometheus.url={prom_url}",
                                                f"--grpc-address=127.0.0.1:{o_grpc}",
                                                f"--http-address=127.0.0.1:{o_http}", f"--tsdb.path={tsdb}",
                                                "--log.level=warn"])
        theirs = procs.start("thanos-sidecar", [thanos, "sidecar", f"--prometheus.url={prom_url}",
                                                f"--grpc-address=127.0.0.1:{t_grpc}",
                                                f"--http-address=127.0.0.1:{t_http}", f"--tsdb.path={tsdb}",
                                                "--log.level=warn"])
        procs.wait(ours, f"http://127.0.0.1:{o_http}/-/ready")
        procs.wait(theirs, f"http://127.0.0.1:{t_http}/-/ready")
        addrs = {"ours": f"127.0.0.1:{o_grpc}", "thanos": f"127.0.0.1:{t_grpc}"}

        out: list[tuple[str, float, str]] = []
        for batch, tag in ((64, ""), (0, ".unbatched")):
            times: dict[str, list[float]] = {"ours": [], "thanos": []}
            counts: dict[str, tuple[int, int]] = {}
            for who, addr in addrs.items():  # warm-up, also counts the bytes
                _, n, nbytes = asyncio.run(_series_once(addr, True, batch))
                counts[who] = (n, nbytes)
            for _ in range(RUNS):
                for who, addr in addrs.items():
                    dt, n = _series_timed(addr, batch)
                    if n != counts[who][0]:
                        raise RuntimeError(f"{who}: {n} series, warm-up had {counts[who][0]}")
                    times[who].append(dt)
            if counts["ours"] != counts["thanos"]:
                raise RuntimeError(f"different answers: ours {counts['ours']} thanos {counts['thanos']} "
                                   "(series, chunk bytes)")
            med = {who: statistics.median(ts) for who, ts in times.items()}
            for who in ("ours", "thanos"):
                n, nbytes = counts[who]
                out += [(f"sidecar{tag}.{who}.series_per_s", n / med[who], "series/s"),
                        (f"sidecar{tag}.{who}.mb_per_s", nbytes / med[who] / 1e6, "MB/s (chunk bytes)"),
                        (f"sidecar{tag}.{who}.seconds", med[who], "s (median of %d, %d series)" % (RUNS, n))]
            out.append((f"sidecar{tag}.ratio_time_ours_over_thanos", med["ours"] / med["thanos"],
                        "x (<= 1.0 is the goal)"))
        return out
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name:<45} {value:>12.4g} {unit}")
