"""The suite's own rules under CI: a skip is a failure (tests/conftest.py), except the end-to-end
tests' gate."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _run(tmp_path: Path, ci: bool, sub: str = "") -> subprocess.CompletedProcess:
    where = tmp_path / sub
    where.mkdir(exist_ok=True)
    (where / "test_skips.py").write_text("import pytest\n\ndef test_needs_a_peer():\n    pytest.skip('peer missing')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(where / "test_skips.py")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)


def test_a_skip_fails_under_ci(tmp_path):
    p = _run(tmp_path, ci=True)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "skipped under CI, which counts as a failure" in p.stdout and "peer missing" in p.stdout
    assert "1 failed" in p.stdout


def test_a_skip_stays_a_skip_elsewhere(tmp_path):
    p = _run(tmp_path, ci=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 skipped" in p.stdout


def test_the_e2e_gate_may_skip_under_ci(tmp_path):
    p = _run(tmp_path, ci=True, sub="e2e")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 skipped" in p.stdout
