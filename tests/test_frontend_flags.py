"""``pythanos query-frontend`` flags: every flag of a real ``thanos query-frontend`` v0.42.4, the
defaults its help renders, and the features not built yet refused by name."""
from __future__ import annotations

import argparse
import subprocess

import pytest

from test_rule_flags import GLOBAL, _listed, actions_by_flag, component_parser, thanos_help_of

#: ``.Hidden()`` flags of ``thanos query-frontend`` (cmd/thanos/query_frontend.go at v0.42.4)
HIDDEN = ("--query-frontend.tenant-header=X-Tenant", "--query-frontend.default-tenant-id=t1")


def _parser() -> argparse.ArgumentParser:
    return component_parser("frontend", "query-frontend")


def _ours() -> dict[str, argparse.Action]:
    return actions_by_flag(_parser())


@pytest.fixture(scope="module")
def thanos_help(thanos_bin) -> str:
    return thanos_help_of(thanos_bin, "query-frontend")


def test_every_flag_of_thanos_query_frontend_is_accepted(thanos_help):
    listed = _listed(thanos_help)
    assert len(listed) > 40, thanos_help
    assert sorted(n for n in listed if n not in _ours() and n not in GLOBAL) == []


@pytest.mark.parametrize("flag", HIDDEN)
def test_hidden_flags_are_thanos_flags_and_ours(thanos_bin, flag):
    real = subprocess.run([thanos_bin, "query-frontend", flag, "--help"], capture_output=True, text=True,
                          timeout=60)
    assert real.returncode == 0, real.stderr[-500:]
    _parser().parse_args([flag])


def test_rendered_defaults_are_ours(thanos_help):
    ours = _ours()
    checked = 0
    for name, value in _listed(thanos_help).items():
        if name in GLOBAL or value is None or name not in ours:
            continue
        a = ours[name]
        text = value[1:-1] if value.startswith('"') and value.endswith('"') else value
        want = a.type(text) if a.type is not None else text
        assert a.default == want, (name, a.default, want)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("argv,want", [
    (["--query-range.horizontal-shards=2"], "(dynamic split) cannot be set at the same time"),
    (["--query-range.split-interval=0", "--query-range.horizontal-shards=2"],
     "--query-range.max-split-interval: must be greater than 0"),
    (["--labels.default-time-range=0"], "--labels.default-time-range: cannot be set to 0"),
    (["--query-frontend.vertical-shards=-1"], "--query-frontend.vertical-shards=-1: must not be negative"),
    (["--labels.response-cache-config=type: NOPE"], "--labels.response-cache-config: type: response cache with type"),
    (["--labels.response-cache-config=type: IN-MEMORY", "--labels.split-interval=0"],
     "--labels.split-interval: must be greater than 0"),
    (["--query-range.response-cache-config=type: NOPE"], "response cache with type 'NOPE' is not supported"),
    (["--query-range.response-cache-config={type: IN-MEMORY, config: {max_sise: 1MB}}"],
     "config.max_sise: unknown field"),
    (["--query-range.response-cache-config=type: IN-MEMORY", "--query-range.split-interval=0"],
     "--query-range.split-interval: must be greater than 0"),
    (["--enable-feature=nope"], "--enable-feature=nope: unknown feature"),
])
def test_refused_by_name(pythanos_bin, argv, want):
    run = subprocess.run([pythanos_bin, "query-frontend", "--http-address=127.0.0.1:0", *argv],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and want in run.stderr, run.stderr
