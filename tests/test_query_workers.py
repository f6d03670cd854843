"""The querier on every core: ``--query.workers`` processes behind one HTTP socket and one gRPC
port (pythanos.server.workers), and the small-query path that evaluates on the event loop.

Real processes throughout: our sidecar in front of a real Prometheus, our querier with two
workers, a real Thanos querier over the same sidecar as the reference for answers, and a real
Thanos querier stacked on our workers' gRPC port.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

import pytest

from peers import free_ports, http_get

from pythanos.server.workers import WorkerSlot, cpu_limit, merge_expositions

READY = 120.0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for t in Path(f"/proc/{pid}/task").iterdir():
        out.extend(int(c) for c in (t / "children").read_text().split())
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def _poll(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = cond()
        except OSError:  # not listening yet
            got = None
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


# -- the CPU limit -------------------------------------------------------------------------------

def _cgroup(tmp_path: Path, proc: str, files: dict) -> tuple[str, str]:
    root = tmp_path / "cg"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (tmp_path / "self").write_text(proc)
    return str(root), str(tmp_path / "self")


def test_cpu_limit_follows_the_cgroup_quota_not_the_host(tmp_path):
    cpus = len(os.sched_getaffinity(0))
    # cgroup v2, unlimited: the CPUs this process may run on
    assert cpu_limit(*_cgroup(tmp_path / "a", "0::/pod\n", {"pod/cpu.max": "max 100000\n"})) == cpus
    # cgroup v2, 0.5 CPU: one worker; 1.5 CPUs: two (capped by the affinity mask)
    assert cpu_limit(*_cgroup(tmp_path / "b", "0::/pod\n", {"pod/cpu.max": "50000 100000\n"})) == 1
    assert cpu_limit(*_cgroup(tmp_path / "c", "0::/pod\n", {"pod/cpu.max": "150000 100000\n"})) == min(2, cpus)
    # cgroup v1 (cpu,cpuacct controller): quota 100000 over period 100000 is one CPU; -1 is none
    v1 = "4:cpu,cpuacct:/kubepods/pod1\n"
    assert cpu_limit(*_cgroup(tmp_path / "d", v1, {"cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us": "100000\n",
                                                   "cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us": "100000\n"})) == 1
    assert cpu_limit(*_cgroup(tmp_path / "e", v1, {"cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us": "-1\n",
                                                   "cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us": "100000\n"})) == cpus
    # no cgroup files at all
    assert cpu_limit(str(tmp_path / "none"), str(tmp_path / "none-self")) == cpus


def test_worker_slot_round_trips_through_the_environment(monkeypatch):
    slot = WorkerSlot(1, 3, 7, "[::1]:10901", "/tmp/x y")
    monkeypatch.setenv("PYTHANOS_WORKER", slot.encode())
    assert WorkerSlot.from_env() == slot
    monkeypatch.delenv("PYTHANOS_WORKER")
    assert WorkerSlot.from_env() is None


def test_merged_metrics_keep_every_worker_apart():
    a = (b"# HELP x_total X.\n# TYPE x_total counter\nx_total{h=\"q\"} 3.0\n"
         b"# HELP g A gauge.\n# TYPE g gauge\ng 1.0\n")
    b = b"# HELP x_total X.\n# TYPE x_total counter\nx_total{h=\"q\"} 5.0\n"
    text = merge_expositions({0: a, 1: b}).decode()
    assert 'x_total{h="q",worker="0"} 3.0' in text
    assert 'x_total{h="q",worker="1"} 5.0' in text
    assert 'g{worker="0"} 1.0' in text
    assert text.count("# TYPE x_total counter") == 1


# -- a querier with two workers over a real store -----------------------------------------------

@pytest.fixture(scope="module")
def stack(prometheus_bin, thanos_bin, pythanos_bin, tmp_path_factory):
    from peers import REGISTRY, start_thanos_query

    work = tmp_path_factory.mktemp("workers")
    started = []
    try:
        prom_port, sc_grpc, sc_http, q_http, q_grpc = free_ports(5)
        cfg = work / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: w\n    replica: '0'\n"
                       f"scrape_configs:\n  - job_name: prometheus\n    static_configs:\n"
                       f"      - targets: ['127.0.0.1:{prom_port}']\n")
        prom = REGISTRY.start("prometheus", [prometheus_bin, f"--config.file={cfg}",
                                             f"--storage.tsdb.path={work / 'tsdb'}",
                                             f"--web.listen-address=127.0.0.1:{prom_port}"], work)
        started.append(prom)
        prom.url = f"http://127.0.0.1:{prom_port}"
        prom.wait_http_ready("/-/ready", READY)
        sc = REGISTRY.start("sidecar", [pythanos_bin, "sidecar", f"--prometheus.url={prom.url}",
                                        f"--grpc-address=127.0.0.1:{sc_grpc}", f"--http-address=127.0.0.1:{sc_http}",
                                        f"--tsdb.path={work / 'tsdb'}"], work)
        started.append(sc)
        sc.url, sc.extra["grpc"] = f"http://127.0.0.1:{sc_http}", f"127.0.0.1:{sc_grpc}"
        sc.wait_http_ready("/-/ready", READY)
        q = REGISTRY.start("query-workers", [pythanos_bin, "query", "--query.workers=2", "--query.replica-label=replica",
                                             f"--endpoint=127.0.0.1:{sc_grpc}",
                                             f"--http-address=127.0.0.1:{q_http}",
                                             f"--grpc-address=127.0.0.1:{q_grpc}"], work)
        started.append(q)
        q.url, q.extra["grpc"] = f"http://127.0.0.1:{q_http}", f"127.0.0.1:{q_grpc}"
        q.wait_http_ready("/-/ready", READY)
        thanos = start_thanos_query(thanos_bin, [f"127.0.0.1:{sc_grpc}"], work / "thanos")
        started.append(thanos)
        stacked = start_thanos_query(thanos_bin, [q.extra["grpc"]], work / "stacked")
        started.append(stacked)

        def scraped():
            r = _get(prom.url + "/api/v1/query?query=count_over_time(up[1m])")["data"]["result"]
            return r and float(r[0]["value"][1]) >= 20
        prom.wait_ready(scraped, READY, "20 scrapes")
        yield {"prom": prom, "sidecar": sc, "ours": q, "thanos": thanos, "stacked": stacked}
    finally:
        for p in reversed(started):
            p.stop()


def test_two_worker_processes_serve_one_port(stack):
    q = stack["ours"]
    workers = _poll(lambda: len(_children(q.pid)) == 2 and _children(q.pid), 30, "two workers")
    text = http_get(q.url + "/metrics")[1].decode()
    assert len(workers) == 2
    for w in ("0", "1"):
        assert f'thanos_status{{check="ready",component="query",worker="{w}"}} 1.0' in text


def _range_path(query: str, end: float) -> str:
    return "/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": query, "start": f"{end - 60:.3f}", "end": f"{end:.3f}", "step": "5"})


def _canon(doc: dict) -> list:
    assert doc["status"] == "success", doc
    return sorted((sorted(s["metric"].items()), s.get("values") or [s["value"]]) for s in doc["data"]["result"])


def _same(got: list, want: list, what: str) -> None:
    """Equal series and timestamps; values equal, or within 1e-9 relative where the engines sum
    in another order (as test_query compares with a real Thanos querier)."""
    import math

    assert [k for k, _ in got] == [k for k, _ in want], (what, "series differ")
    for (k, gp), (_, wp) in zip(got, want):
        assert [p[0] for p in gp] == [p[0] for p in wp], (what, k, "timestamps differ")
        for (t, gv), (_, wv) in zip(gp, wp):
            a, b = float(gv), float(wv)
            assert gv == wv or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9), \
                (what, k, t, gv, wv)


DASHBOARD = [
    "sum(rate(prometheus_http_requests_total[1m]))",
    "sum by (handler) (rate(prometheus_http_requests_total[1m]))",
    "histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[1m])))",
    "prometheus_tsdb_head_series",
    "topk(3, prometheus_http_requests_total)",
    "up",
    # a subquery and an @ modifier: selections planned with their own windows
    "max_over_time(rate(prometheus_http_requests_total[30s])[1m:10s])",
    "prometheus_tsdb_head_series @ end()",
]


def _concurrent_dashboard_as_thanos(stack) -> None:
    end = time.time() - 5
    want = {qs: _canon(_get(stack["thanos"].url + _range_path(qs, end))) for qs in DASHBOARD}
    got: list = []
    errors: list = []

    def client(i: int) -> None:
        try:
            for k in range(len(DASHBOARD)):
                qs = DASHBOARD[(i + k) % len(DASHBOARD)]
                got.append((qs, _canon(_get(stack["ours"].url + _range_path(qs, end)))))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(got) == 12 * len(DASHBOARD)
    for qs, answer in got:
        _same(answer, want[qs], qs)


def test_concurrent_small_queries_answer_as_thanos(stack):
    """Many clients at once (on worker 0 alone unless it is saturated, see the spill tests
    below); every answer equals the real Thanos querier's."""
    _concurrent_dashboard_as_thanos(stack)


# -- workers join while the ones taking connections are saturated (pythanos.server.spill) ---------

def _worker_figures(url: str) -> dict:
    """Per worker: whether it takes connections, and the query_range requests it answered."""
    out: dict = {"accepting": {}, "served": {}}
    for line in http_get(url + "/metrics", timeout=30)[1].decode().splitlines():
        value = line.rsplit(" ", 1)[-1]
        worker = line.partition('worker="')[2].partition('"')[0]
        if line.startswith("pythanos_worker_accepting_connections{"):
            out["accepting"][worker] = float(value)
        elif line.startswith("http_request_duration_seconds_count{") and 'handler="/api/v1/query_range"' in line:
            out["served"][worker] = out["served"].get(worker, 0.0) + float(value)
    return out


def _worker_one_out(url: str) -> dict:
    def out() -> Optional[dict]:
        f = _worker_figures(url)
        return f if f["accepting"].get("1") == 0 else None

    return _poll(out, 60, "worker 1 not taking connections")


def test_second_worker_stays_out_of_light_load(stack):
    """Queries one at a time keep worker 0 far from saturated: worker 1 takes none of them."""
    q = stack["ours"]
    before = _worker_one_out(q.url)
    end = time.time() - 5
    for i in range(3 * len(DASHBOARD)):
        assert _get(q.url + _range_path(DASHBOARD[i % len(DASHBOARD)], end))["status"] == "success"
    after = _worker_figures(q.url)
    assert after["served"].get("1", 0) == before["served"].get("1", 0)
    assert after["served"].get("0", 0) >= before["served"].get("0", 0) + 3 * len(DASHBOARD)
    assert after["accepting"] == {"0": 1.0, "1": 0.0}


#: About 440,000 window cells per request (61 steps of a 2 h window at 1 s): tens of ms of CPU, so
#: four clients keep worker 0 saturated.
SPILL_QUERY = "quantile_over_time(0.5, vector(1)[2h:1s])"


def test_saturated_worker_brings_in_the_second_and_hands_it_kept_connections(stack):
    """Four clients keep their connections open (opened while worker 1 takes none, so worker 0
    holds all four) and send CPU-heavy queries back to back. Worker 1 joins, worker 0 answers
    some requests with ``Connection: close``, the clients reconnect and worker 1 answers on the
    new connections; every answer is right. Meanwhile the dashboard queries over fresh
    connections still equal Thanos'. Once the load stops, worker 1 leaves."""
    import http.client

    q = stack["ours"]
    before = _worker_one_out(q.url)
    host, port = q.url.split("//")[1].split(":")
    conns = [http.client.HTTPConnection(host, int(port), timeout=120) for _ in range(4)]
    for c in conns:
        c.connect()
    stop = threading.Event()
    closes, errors = [0], []

    def load(c) -> None:
        try:
            while not stop.is_set():
                end = time.time()
                c.request("GET", "/api/v1/query_range?" + urllib.parse.urlencode(
                    {"query": SPILL_QUERY, "start": f"{end - 3600:.3f}", "end": f"{end:.3f}", "step": "60"}))
                r = c.getresponse()
                doc = json.loads(r.read())
                if r.status != 200 or {v for s in doc["data"]["result"] for _, v in s["values"]} != {"1"}:
                    errors.append((r.status, str(doc)[:300]))
                if (r.getheader("Connection") or "").lower() == "close":
                    closes[0] += 1  # http.client reconnects on the next request
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=load, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    try:
        def worker_one_answers() -> Optional[dict]:
            f = _worker_figures(q.url)
            return f if f["served"].get("1", 0) > before["served"].get("1", 0) and closes[0] else None

        joined = _poll(worker_one_answers, 120, "worker 1 answering on connections worker 0 handed back")
        assert joined["accepting"]["1"] == 1.0
        _concurrent_dashboard_as_thanos(stack)
    finally:
        stop.set()
        for t in threads:
            t.join()
        for c in conns:
            c.close()
    assert not errors, errors[:3]
    _worker_one_out(q.url)


def test_stacked_thanos_querier_reads_the_workers_grpc_port(stack):
    end = time.time() - 5
    qs = "sum by (job) (up)"
    _same(_canon(_get(stack["stacked"].url + _range_path(qs, end))),
          _canon(_get(stack["thanos"].url + _range_path(qs, end))), qs)


class _InProcess:
    """Our querier in this process (one worker, its loop in a thread), so a test can steer which
    path a query takes."""

    def __init__(self, endpoint: str, timeout_s: float = 120.0, max_concurrent: int = 20) -> None:
        from pythanos.query.discovery import EndpointSpec
        from pythanos.query.run import QueryConfig

        h, g = free_ports(2)
        self.url = f"http://127.0.0.1:{h}"
        self.cfg = QueryConfig(http_address=f"127.0.0.1:{h}", grpc_address=f"127.0.0.1:{g}",
                               endpoints=[EndpointSpec(endpoint)], workers=1)
        self.cfg.api.replica_labels = ["replica"]
        self.cfg.api.timeout_s = timeout_s
        self.cfg.api.max_concurrent = max_concurrent
        self.loop = asyncio.new_event_loop()
        self.stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from pythanos.query.run import serve

        async def main():
            self.stop = asyncio.Event()
            await serve(self.cfg, stop=self.stop)

        self.loop.run_until_complete(main())

    def __enter__(self) -> "_InProcess":
        self.thread.start()
        _poll(lambda: http_get(self.url + "/-/ready", timeout=2)[0] == 200 if self.stop else False, READY,
              "in-process querier ready")
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(60)


def test_worker_thread_path_answers_as_thanos(stack, monkeypatch):
    """With the inline threshold below every query, each is evaluated in a worker thread after
    the selections came in on the loop: the same answers as Thanos'."""
    from pythanos.query import api

    monkeypatch.setattr(api, "INLINE_BYTES", -1)
    monkeypatch.setattr(api, "INLINE_POINTS", -1)
    end = time.time() - 5
    with _InProcess(_sidecar_grpc(stack)) as q:
        for qs in DASHBOARD:
            _same(_canon(_get(q.url + _range_path(qs, end))),
                  _canon(_get(stack["thanos"].url + _range_path(qs, end))), qs)


def test_selection_the_plan_missed_falls_back_to_a_worker_thread(stack, monkeypatch):
    """A query whose selections were not made up front (as if the plan had missed them): on the
    loop the engine's select is refused, and the query runs again in a worker thread, where the
    select may wait for the fan-out. Same answers as Thanos'."""
    from pythanos.promql import engine

    monkeypatch.setattr(engine.Planned, "selections", property(lambda self: []))
    end = time.time() - 5
    with _InProcess(_sidecar_grpc(stack)) as q:
        for qs in DASHBOARD[:3]:
            _same(_canon(_get(q.url + _range_path(qs, end))),
                  _canon(_get(stack["thanos"].url + _range_path(qs, end))), qs)


def _sidecar_grpc(stack) -> str:
    return stack["sidecar"].extra["grpc"]


# -- a query that times out stops its work -------------------------------------------------------

#: Order statistics over a 2-day window at 1 s for 11,000 steps: about 1.9e9 window cells, a minute
#: or more of CPU, spread over thousands of batches (each checks the query's stop token).
HEAVY = "quantile_over_time(0.5, vector(1)[2d:1s])"


def _heavy_path(query: str, end: float) -> str:
    return "/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": query, "start": f"{end - 10_999 * 60:.3f}", "end": f"{end:.3f}", "step": "60"})


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (``/proc/<pid>/stat`` fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Idle:
    """Polled: true once the process used less than ``busy`` CPU seconds in the last ``window``
    seconds of samples (a query still running would use about one CPU second per second)."""

    def __init__(self, pid: int, window: float = 1.0, busy: float = 0.3) -> None:
        self.pid, self.window, self.busy = pid, window, busy
        self.samples: list[tuple[float, float]] = []

    def __call__(self) -> bool:
        now = time.monotonic()
        self.samples.append((now, _cpu_seconds(self.pid)))
        old = [s for s in self.samples if now - s[0] >= self.window]
        if not old:
            return False
        t0, c0 = old[-1]
        return self.samples[-1][1] - c0 < self.busy


def _gauge(url: str, name: str) -> float:
    for line in http_get(url + "/metrics", timeout=30)[1].decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def _query_times_out(url: str, query: str, end: float) -> dict:
    code, body = http_get(url + _heavy_path(query, end), timeout=60)
    doc = json.loads(body)
    assert (code, doc["status"], doc["errorType"]) == (503, "error", "timeout"), doc
    return doc


@pytest.mark.parametrize("path", ["event_loop", "worker_thread", "fallback"])
def test_a_timed_out_query_stops_its_work(stack, monkeypatch, path):
    """A query far longer than ``--query.timeout`` (2 s here) fails with Prometheus' timeout
    error, and its work stops too, wherever it ran: evaluated on the event loop, in a worker
    thread (the inline threshold below every query), or in the worker thread a query falls
    back to when its plan missed a selection. Then no query holds the concurrency gate
    (``thanos_query_concurrent_gate_queries_in_flight``: a worker thread keeps its slot until it
    has stopped), the process is idle again, and the one slot of the gate serves the next query.
    Polled with deadlines far below the minute the query would otherwise burn. The CPU time it
    used is bounded by the timeout, not by the machine's speed: CPU time of work that stops at a
    2 s deadline cannot exceed those 2 s by more than a batch (on the event loop, nothing but
    the work's own checks can end it before the answer is written)."""
    from pythanos.promql import engine
    from pythanos.query import api

    query = HEAVY
    if path == "worker_thread":
        monkeypatch.setattr(api, "INLINE_BYTES", -1)
    elif path == "fallback":
        monkeypatch.setattr(engine.Planned, "selections", property(lambda self: []))
        query = f"count(up) + {HEAVY}"  # the selection comes first: refused on the loop, run in a thread
    end = time.time() - 5
    with _InProcess(_sidecar_grpc(stack), timeout_s=2.0, max_concurrent=1) as q:
        cpu0 = _cpu_seconds(os.getpid())
        doc = _query_times_out(q.url, query, end)
        print(path, doc["error"])
        _poll(lambda: _gauge(q.url, "thanos_query_concurrent_gate_queries_in_flight") == 0, 20,
              "the timed-out query's work released its gate slot")
        _poll(_Idle(os.getpid()), 20, "no CPU used once the query timed out")
        used = _cpu_seconds(os.getpid()) - cpu0
        print(f"{path}: {used:.1f} CPU s from the request to idle")
        assert used < 10, f"the query went on for {used:.1f} CPU seconds after its 2 s timeout"
        got = _get(q.url + _range_path("up", end))
        assert got["status"] == "success" and got["data"]["result"], got


def test_selection_outside_the_plan_is_refused_on_the_loop():
    """The guard the small-query path relies on: a select on the event loop raises instead of
    waiting for a fan-out that the same loop would have to run (a deadlock)."""
    from pythanos.query.queryable import QueryOptions, SelectOnLoop, StoreQueryable

    async def main():
        qa = StoreQueryable(proxy=None, loop=asyncio.get_running_loop(), opts=QueryOptions())  # type: ignore
        with pytest.raises(SelectOnLoop):
            qa.select([], 0, 1)

    asyncio.run(main())


@pytest.fixture
def two_workers(pythanos_bin, tmp_path):
    """A querier with two workers and no endpoint; yields (process, worker pids)."""
    from peers import REGISTRY

    h, g = free_ports(2)
    q = REGISTRY.start("query-two", [pythanos_bin, "query", "--query.workers=2", f"--http-address=127.0.0.1:{h}",
                                     f"--grpc-address=127.0.0.1:{g}"], tmp_path)
    try:
        q.url = f"http://127.0.0.1:{h}"
        q.wait_http_ready("/-/ready", READY)
        yield q, _poll(lambda: len(_children(q.pid)) == 2 and _children(q.pid), 30, "two workers")
    finally:
        q.stop()


def test_sigterm_stops_every_worker(two_workers):
    q, workers = two_workers
    os.kill(q.pid, signal.SIGTERM)
    assert q.proc.wait(60) == 0
    assert not [w for w in workers if _alive(w)]


def test_a_worker_that_dies_takes_the_querier_down(two_workers):
    """One worker killed: the supervisor stops the other and exits non-zero (the pod restarts)
    instead of serving on with part of its capacity and a socket nobody accepts on."""
    q, workers = two_workers
    os.kill(workers[0], signal.SIGKILL)
    assert q.proc.wait(60) != 0
    assert not _alive(workers[1])
    assert "worker ended" in q.log()


def test_workers_end_when_the_supervisor_is_killed(two_workers):
    """SIGKILL cannot be forwarded: the workers follow their supervisor's death by themselves
    instead of serving on, orphaned, on the shared port."""
    q, workers = two_workers
    os.kill(q.pid, signal.SIGKILL)
    q.proc.wait(60)
    _poll(lambda: not [w for w in workers if _alive(w)], 60, "the workers ended")


def test_busy_http_port_is_a_clear_error_with_workers(pythanos_bin, tmp_path):
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        (g,) = free_ports(1)
        p = subprocess.run([pythanos_bin, "query", "--query.workers=2", f"--http-address=127.0.0.1:{port}",
                            f"--grpc-address=127.0.0.1:{g}"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert f"--http-address=127.0.0.1:{port}: cannot listen" in p.stderr
