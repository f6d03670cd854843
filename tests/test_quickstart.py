"""``make quickstart`` runs the course's topology, both halves, and they behave as the course says.

First half: the dedup toggle. Second half, checked on the running processes after the script reports
ready: the store gateway serves the year through our querier, the compactor has written 5m and 1h
blocks into the bucket and the auto-downsampled answer uses them, and the compactor counts its
iterations. A second start on the same directory reuses the year instead of generating it again.
"""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "quickstart.py"
READY = "quickstart: Ctrl-C stops everything."
DAY = 86400


class Quickstart:
    """The script as a user runs it (no QUICKSTART_ONESHOT); its output read line by line."""

    def __init__(self, work: Path, script: Path = SCRIPT) -> None:
        env = {**os.environ, "QUICKSTART_DIR": str(work)}
        env.pop("QUICKSTART_ONESHOT", None)
        self.proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line)
        self._q.put(None)

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"quickstart not ready within {timeout:.0f} s:\n{self.out}")
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"quickstart exited with {self.proc.wait()} before it was ready:\n{self.out}")
            self.lines.append(line)
            if line.strip() == READY:
                return self.out

    def stop(self) -> str:
        """SIGTERM, as Ctrl-C: the script stops what it started and exits 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(120)
        while (line := self._q.get(timeout=30)) is not None:
            self.lines.append(line)
        assert rc == 0, self.out
        return self.out


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def poll(what: str, check, timeout: float):
    """``check()`` until it returns something truthy; a clear failure at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"{what}: not seen within {timeout:.0f} s (last: {last!r})")


def block_resolutions(bucket: Path) -> dict[int, int]:
    out: dict[int, int] = {}
    for meta in bucket.glob("*/meta.json"):
        try:
            res = json.loads(meta.read_text())["thanos"]["downsample"]["resolution"]
        except (OSError, ValueError, KeyError):
            continue
        out[res] = out.get(res, 0) + 1
    return out


def compactor_iterations(base: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r"^thanos_compact_iterations_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_quickstart_course_topology(tmp_path, prometheus_bin, pythanos_bin):
    qs = Quickstart(tmp_path)
    try:
        out = qs.wait_ready(timeout=600)
        # first half
        assert re.search(r"querier UI: http://127\.0\.0\.1:\d+/graph", out), out
        assert "dedup=true: prometheus_tsdb_head_series has 3 series" in out, out
        assert "dedup=false: prometheus_tsdb_head_series has 5 series" in out, out
        dd = float(re.search(r"dedup=true: .* = ([0-9.e+]+)", out).group(1))
        raw = float(re.search(r"dedup=false: .* = ([0-9.e+]+)", out).group(1))
        assert 0 < dd <= raw, out  # the first self-scrape of a fresh Prometheus may report 0 head series

        # second half: where things are, as printed
        assert "generating a year of eu1 data" in out, out
        ui = re.search(r"querier UI: (http://127\.0\.0\.1:\d+)/graph", out).group(1)
        m = re.search(r"store gateway: (http://127\.0\.0\.1:\d+) \(gRPC (127\.0\.0\.1:\d+)\)"
                      r"  compactor: (http://127\.0\.0\.1:\d+)  bucket: (\S+)", out)
        assert m, out
        store_grpc, compactor, bucket = m.group(2), m.group(3), Path(m.group(4))
        assert bucket == tmp_path / "bucket", out
        assert f"bucket UI (compactor): {compactor}/blocks" in out, out
        assert re.search(r"a year through the querier .*\n.*1 series, 3\d\d points", out), out

        # (a) the store gateway serves the year's blocks through our querier
        end = time.time()
        start = end - 365 * DAY
        stores = get_json(ui + "/api/v1/stores")["data"]
        ours = [s for g in stores.values() for s in g if s["name"] == store_grpc]
        assert ours and ours[0]["lastError"] is None, stores
        assert ours[0]["labelSets"] == [{"cluster": "eu1"}], ours
        assert ours[0]["minTime"] <= (start + DAY) * 1000, ours  # the year, not just recent blocks

        def query_range(expr: str) -> list[dict]:
            qs_ = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": DAY,
                                          "max_source_resolution": "auto"})
            doc = get_json(f"{ui}/api/v1/query_range?{qs_}")
            assert doc["status"] == "success", doc
            return doc["data"]["result"]

        for expr in ("sum by (__name__) (rate(continuous_app_metric0[5m]))", "continuous_app_metric0"):
            result = query_range(expr)
            assert len(result) == 1, (expr, result)
            ts = [float(t) for t, _ in result[0]["values"]]
            # a point every day of the year (the generated year starts a few hours after `start`)
            assert len(ts) >= 360 and ts[0] <= start + 2 * DAY and ts[-1] >= end - DAY, (expr, ts[:3], ts[-3:])

        # the auto-downsampled answer reads the compactor's blocks: a day holds 5760 raw samples,
        # 288 at 5m and 24 at 1h; days older than the raw blocks (the newest 14 h) count downsampled points
        counts = query_range("count_over_time(continuous_app_metric0[1d])")[0]["values"]
        old = [float(v) for t, v in counts if float(t) < end - 3 * DAY]
        assert old and max(old) <= 300, old
        assert sum(1 for v in old if v <= 25) > 200, old  # most of the year from the 1h blocks

        # (b) the compactor has written 5m and 1h blocks into the bucket
        res = poll("5m (300000) and 1h (3600000) blocks in the bucket's meta.json files",
                   lambda: (r := block_resolutions(bucket)).get(300_000) and r.get(3_600_000) and r, timeout=300)
        assert res.get(0, 0) >= 13, res  # the year's raw blocks are all still there

        # (c) the compactor counts its iterations
        poll(f"thanos_compact_iterations_total >= 1 on {compactor}/metrics",
             lambda: compactor_iterations(compactor) >= 1, timeout=120)
    finally:
        out = qs.stop()

    # everything it started is stopped: 3 Prometheus, 3 sidecars, querier, compactor, store gateway
    assert out.count("quickstart: stopped ") == 9, out
    for log in ("querier.log", "sidecar0_eu1.log", "prometheus0_eu1.log", "bench-blocks.log", "compactor.log",
                "store.log"):
        assert (tmp_path / log).exists(), log

    # a second start reuses the year (generated once) and comes up again on the same directory
    env = {**os.environ, "QUICKSTART_ONESHOT": "1", "QUICKSTART_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    out2 = r.stdout + r.stderr
    assert r.returncode == 0, out2
    assert "second half: reusing the year in" in out2 and "generating a year" not in out2, out2
    # the store serves the bucket's blocks: at least those the compactor's pass left unmarked (the
    # counts depend on how far the first run's compactor got), at most every block with a meta.json
    loaded = int(re.search(r"store gateway ready in .* with (\d+) blocks", out2).group(1))
    left = sum(int(n) for n in re.search(r"first pass done in .* bucket: (\d+) raw, (\d+) 5m, (\d+) 1h blocks",
                                         out2).groups())
    assert 0 < left <= loaded <= len(list((tmp_path / "bucket").glob("*/meta.json"))), out2
    assert READY in out2 and out2.count("quickstart: stopped ") == 9, out2
