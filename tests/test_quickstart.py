"""``make quickstart`` runs the course's topology and the dedup toggle behaves as the course says."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quickstart_course_topology(tmp_path, prometheus_bin, pythanos_bin):
    env = {**os.environ, "QUICKSTART_ONESHOT": "1", "QUICKSTART_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "quickstart.py")], env=env, capture_output=True,
                       text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert re.search(r"querier UI: http://127\.0\.0\.1:\d+/graph", out), out
    assert "dedup=true: prometheus_tsdb_head_series has 3 series" in out, out
    assert "dedup=false: prometheus_tsdb_head_series has 5 series" in out, out
    dd = float(re.search(r"dedup=true: .* = ([0-9.e+]+)", out).group(1))
    raw = float(re.search(r"dedup=false: .* = ([0-9.e+]+)", out).group(1))
    assert 0 < dd <= raw, out  # the first self-scrape of a fresh Prometheus may report 0 head series
    # everything it started is stopped
    assert out.count("quickstart: stopped ") == 7, out
    for log in ("querier.log", "sidecar0_eu1.log", "prometheus0_eu1.log"):
        assert (tmp_path / log).exists()
