"""The fuzz targets (fuzz/targets/, `make fuzz`) in the test suite: every saved input, the seed
corpus and each regression (an input that once crashed or broke a target, kept when it was fixed),
replayed in-process through its target; then each target fuzzed briefly by atheris in a child
process on the normal build (Python coverage only; `make fuzz` runs the sanitizer build)."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fuzz.targets import TARGETS  # noqa: E402

SHORT_RUN_S = 2  # per target: the whole pass adds about 40 s to `make test`


def _inputs() -> list[tuple[str, Path]]:
    out = []
    for t in TARGETS:
        for kind in ("corpus", "regressions"):
            d = ROOT / "fuzz" / kind / t
            if d.is_dir():
                out += [(t, p) for p in sorted(d.iterdir()) if p.is_file()]
    return out


INPUTS = _inputs()


def test_every_target_has_seeds_and_a_module():
    for t in TARGETS:
        assert (ROOT / "fuzz" / "targets" / f"{t}.py").is_file(), t
        assert any(x == t for x, _ in INPUTS), f"no seed corpus for {t}"
    for kind in ("corpus", "regressions"):
        for d in (ROOT / "fuzz" / kind).iterdir():
            assert d.name in TARGETS, f"fuzz/{kind}/{d.name} belongs to no target"


@pytest.mark.parametrize("target,path", INPUTS, ids=[f"{t}/{p.parent.name}/{p.name[:24]}" for t, p in INPUTS])
def test_saved_input(target: str, path: Path):
    """The target returns normally: only the errors production handles may occur inside it."""
    importlib.import_module(f"fuzz.targets.{target}").test_one_input(path.read_bytes())


@pytest.mark.parametrize("target", TARGETS)
def test_short_fuzz_run(target: str, tmp_path: Path):
    """A few seconds of atheris from the saved corpus (new inputs go to a scratch directory)."""
    work = tmp_path / "corpus"
    work.mkdir()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    p = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "run.py"), target, f"-max_total_time={SHORT_RUN_S}", "-timeout=30",
         "-rss_limit_mb=3072", "-max_len=8192", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1",
         str(work), str(ROOT / "fuzz" / "corpus" / target)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert p.returncode == 0, (p.returncode, p.stderr[-4000:])
    assert "stat::number_of_executed_units" in p.stderr, p.stderr[-2000:]
