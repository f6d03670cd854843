"""``pythanos <component>`` builds only that component's flags (start-up pays for no other), and
parses every command line exactly as the parser of all components does."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pythanos.cli import _component, build_parser

LINES = [
    ["store", "--objstore.config=type: FILESYSTEM", "--data-dir=/tmp/x", "--min-time=-2w"],
    ["querier", "--endpoint=127.0.0.1:1", "--query.replica-label=replica"],
    ["query", "--query.timeout=30s"],
    ["sidecar", "--tsdb.path=/p", "--prometheus.url=http://127.0.0.1:9090"],
    ["compact", "--objstore.config=type: FILESYSTEM", "--wait"],
    ["--log.level=debug", "tools", "bucket", "ls", "--objstore.config=type: FILESYSTEM"],
]


@pytest.mark.parametrize("argv", LINES, ids=lambda a: " ".join(a[:2]))
def test_one_component_parses_as_all(argv):
    if argv[0].startswith("--"):  # a flag before the component is not a pythanos flag: both refuse
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        with pytest.raises(SystemExit):
            build_parser(_component(argv)).parse_args(argv)
        return
    only = vars(build_parser(_component(argv)).parse_args(argv))
    full = vars(build_parser().parse_args(argv))
    assert {k: v for k, v in only.items() if k != "run"} == {k: v for k, v in full.items() if k != "run"}
    assert only["run"].__qualname__ == full["run"].__qualname__


def test_component_named_first_or_none():
    assert _component(["store", "--help"]) == "store"
    assert _component(["querier"]) == "query"
    assert _component(["--help"]) is None and _component(["stor"]) is None and _component([]) is None


def test_component_start_imports_no_other_component():
    code = ("import sys\nfrom pythanos.cli import main\n"
            "try:\n    main(['store', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('pythanos.tools', 'pythanos.query', "
            "'pythanos.sidecar', 'pythanos.compact'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr


def test_top_level_help_and_typos_list_every_component():
    r = subprocess.run([sys.executable, "-m", "pythanos.cli", "stor"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    for name in ("tools", "sidecar", "query", "store", "compact", "receive"):
        assert name in r.stderr


@pytest.mark.parametrize("component", ["tools", "sidecar", "query", "store", "compact", "receive"])
def test_every_component_prints_its_help(component):
    """``--help`` works (argparse asserts on some group layouts while it formats the usage)."""
    r = subprocess.run([sys.executable, "-m", "pythanos.cli", component, "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith(f"usage: pythanos {component}")
