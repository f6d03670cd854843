"""``pythanos rule`` flags: every flag of a real ``thanos rule`` v0.42.4 (its hidden ones included),
the defaults its help renders, and the flags we cannot honour refused by name."""
from __future__ import annotations

import argparse
import json
import re
import subprocess

import pytest

from pythanos.cli import build_parser

#: ``.Hidden()`` flags of ``thanos rule`` (cmd/thanos/config.go, main.go at v0.42.4): its help
#: does not list them, so each is checked to be accepted by the real binary below
HIDDEN = ("--shipper.ignore-unequal-block-size", "--shipper.allow-out-of-order-uploads",
          "--shipper.skip-corrupted-blocks", "--query.sd-dns-resolver=golang", "--query.only-prometheus-params")
#: process-wide flags of the Thanos binary, not the ruler's (no pythanos component has them)
GLOBAL = {"--help", "--version", "--tracing.config", "--tracing.config-file", "--enable-auto-gomemlimit",
          "--auto-gomemlimit.ratio"}


def component_parser(module: str, command: str) -> argparse.ArgumentParser:
    """The sub-parser of ``pythanos <command>`` (its flags in ``pythanos.<module>.flags``)."""
    return build_parser(module)._subparsers._group_actions[0].choices[command]


def actions_by_flag(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {opt: a for a in parser._actions for opt in a.option_strings}


def thanos_help_of(thanos_bin: str, command: str) -> str:
    run = subprocess.run([thanos_bin, command, "--help"], capture_output=True, text=True, timeout=60)
    return run.stdout + run.stderr


def _parser() -> argparse.ArgumentParser:
    return component_parser("rule", "rule")


def _ours() -> dict[str, argparse.Action]:
    return actions_by_flag(_parser())


@pytest.fixture(scope="module")
def thanos_help(thanos_bin) -> str:
    return thanos_help_of(thanos_bin, "rule")


def _listed(text: str) -> dict[str, str | None]:
    """Flag name -> the default the help renders (None: none shown, or a placeholder)."""
    out: dict[str, str | None] = {}
    for m in re.finditer(r"^ {2,6}(?:-\w, )?--(\[no-\])?([a-z0-9.-]+)(?:=(\S*))?", text, re.M):
        value = m.group(3)
        if value is not None and (value.startswith("<") or re.fullmatch(r"[A-Z0-9.-]+", value or "-")):
            value = None  # <file-path>, ALERTMANAGERS.URL: a placeholder, not a default
        out["--" + m.group(2)] = value
    return out


def test_every_flag_of_thanos_rule_is_accepted(thanos_help):
    listed = _listed(thanos_help)
    assert len(listed) > 70, thanos_help  # the list really came from Thanos
    ours = _ours()
    assert sorted(n for n in listed if n not in ours and n not in GLOBAL) == []


@pytest.mark.parametrize("flag", HIDDEN)
def test_hidden_flags_are_thanos_flags_and_ours(thanos_bin, flag):
    real = subprocess.run([thanos_bin, "rule", flag, "--help"], capture_output=True, text=True, timeout=60)
    assert real.returncode == 0, real.stderr[-500:]
    assert flag.split("=")[0] in _ours()
    _parser().parse_args([flag])


def test_unknown_flag_is_refused_by_both(thanos_bin):
    """The check above can fail: an unknown flag makes the real binary exit 1."""
    real = subprocess.run([thanos_bin, "rule", "--no-such.flag", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert real.returncode == 1
    with pytest.raises(SystemExit):
        _parser().parse_args(["--no-such.flag"])


def test_rendered_defaults_are_ours(thanos_help):
    """Each default the real help shows, read by our parser for that flag, is our default."""
    ours = _ours()
    checked = 0
    for name, value in _listed(thanos_help).items():
        if name in GLOBAL or value is None or name not in ours:
            continue
        a = ours[name]
        text = value[1:-1] if value.startswith('"') and value.endswith('"') else value
        if isinstance(a, argparse._AppendAction):
            want = [text] if text else []
            got = a.default if a.default is not None else ["rules/"]  # --rule-file: Thanos' default rules/
            assert got == want, name
        else:
            want = a.type(text) if a.type is not None else text
            assert a.default == want, (name, a.default, want)
        checked += 1
    assert checked >= 28


@pytest.mark.parametrize("name,default", [
    ("--tsdb.wal-compression", True), ("--tsdb.enable-native-histograms", True), ("--tsdb.no-lockfile", False),
    ("--web.disable-cors", False), ("--shipper.upload-compacted", False), ("--query.enable-x-functions", False),
])
def test_boolean_defaults(thanos_help, name, default):
    """Go booleans render no default; ours are Thanos' (cmd/thanos/rule.go, config.go) and each is a
    ``--[no-]`` flag in the real help."""
    assert f"--[no-]{name[2:]}" in thanos_help
    assert _ours()[name].default is default


def _config(*argv: str) -> "argparse.Namespace":
    """``config_from_args`` in a process of its own (it puts grpcio's TLS policy in force, once per
    process; other tests of the session may have loaded grpc already): the RuleConfig's plain fields."""
    import sys

    code = ("import dataclasses, json, sys\n"
            "from pythanos.cli import build_parser\n"
            "from pythanos.rule.flags import config_from_args\n"
            "cfg = config_from_args(build_parser('rule').parse_args(sys.argv[1:]))\n"
            "print(json.dumps({k: v for k, v in dataclasses.asdict(cfg).items() if k not in ('bucket', 'grpc_tls')},"
            " default=str) + '\\n' + json.dumps(cfg.stateless))\n")
    run = subprocess.run([sys.executable, "-c", code, "rule", *argv], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    fields, stateless = run.stdout.splitlines()
    return argparse.Namespace(**json.loads(fields), stateless=json.loads(stateless))


def test_config_defaults():
    cfg = _config("--query=127.0.0.1:9090", '--label=ruler="a"')
    assert cfg.data_dir == "data/" and cfg.rule_files == ["rules/"]
    assert cfg.retention == 48 * 3600 and cfg.block_duration == 7200
    assert cfg.eval_interval == 60 and cfg.resend_delay == 60 and cfg.for_grace_period == 600
    assert cfg.for_outage_tolerance == 3600 and cfg.labels == {"ruler": "a"} and not cfg.stateless
    assert cfg.alert_query_template == "/graph?g0.expr={{.Expr}}&g0.tab=1"


def _refused(pythanos_bin: str, *argv: str) -> str:
    run = subprocess.run([pythanos_bin, "rule", *argv, "--data-dir=/nonexistent/never-created",
                          "--http-address=127.0.0.1:0", "--grpc-address=127.0.0.1:0"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0, run.stderr
    return run.stderr


@pytest.mark.parametrize("argv,want", [
    ([], "no query configuration parameter was given"),
    (["--query=a:1", "--query=a:1"], "Address a:1 is duplicated for --query flag."),
    (["--query=a:1", "--query.config=- static_configs: [a:1]"],
     "--query/--query.sd-files/--grpc-query-endpoint and --query.config* parameters cannot be defined at the same"),
    (["--query=a:1", "--alertmanagers.url=http://a", "--alertmanagers.config=alertmanagers: []"],
     "--alertmanagers.url and --alertmanagers.config* parameters cannot be defined at the same time"),
    (["--query=a:1", "--grpc-query-endpoint=a:2"], "--grpc-query-endpoint=a:2: not supported by pythanos"),
    (["--query=a:1", "--query.enable-x-functions"], "--query.enable-x-functions: not supported by pythanos"),
    (["--query=a:1", "--enable-feature=nope"], "--enable-feature=nope: unknown feature"),
    (["--query=a:1", "--rule-concurrent-evaluation=4"], "--rule-concurrent-evaluation=4: not supported by pythanos"),
    (["--query=a:1", "--hash-func=SHA256"], "--hash-func=SHA256: not supported by pythanos"),
    (["--query=a:1", "--request.logging-config=options: {}"], "--request.logging-config: not supported by pythanos"),
    (["--query=a:1", "--label=x"], "--label: unrecognized label 'x'"),
    (["--query=a:1", "--remote-write.config=$(PYTHANOS_TEST_UNSET_VAR)"],
     '--remote-write.config: found reference to unset environment variable'),
    (["--query=a:1", "--query.config-file=/nonexistent/q.yaml"], "--query.config-file=/nonexistent/q.yaml: cannot read"),
])
def test_bad_flags_are_refused_by_name(pythanos_bin, argv, want):
    assert want in _refused(pythanos_bin, *argv)


def test_bad_durations_name_the_flag(pythanos_bin):
    assert "argument --eval-interval" in _refused(pythanos_bin, "--query=a:1", "--eval-interval=soon")


def test_query_config_and_sd_files():
    from pythanos.errors import UserError
    from pythanos.rule.flags import parse_query_config

    static, sd = parse_query_config("- static_configs: [a:1]\n  scheme: https\n  path_prefix: /q/\n"
                                    "- static_configs: ['dns+b:2']\n"
                                    "- file_sd_configs: [{files: [x.yaml]}]\n", "--query.config")
    assert static == ["https://a:1/q", "dns+b:2"] and sd == [("http", "", ["x.yaml"])]
    for text, want in [("- http_config: {tls_config: {ca_file: x}}", "[0]: http_config: not supported"),
                       ("- bogus: 1", "[0]: field bogus not found"), ("{}", "want a list")]:
        with pytest.raises(UserError, match=re.escape(want)):
            parse_query_config(text, "--query.config")
    with pytest.raises(UserError, match="a DNS name with a scheme or path_prefix"):
        parse_query_config("- {static_configs: ['dns+b:2'], scheme: https}", "--query.config")
    cfg = _config("--query.sd-files=/x/*.yaml")
    assert cfg.query_addrs == [] and cfg.query_sd == [["http", "", ["/x/*.yaml"]]]


def test_no_lockfile(tmp_path):
    """--tsdb.no-lockfile reaches the TSDB: no ``lock`` file, so a second open is not refused
    (by default it is, as Prometheus' lock refuses it)."""
    from pythanos.tsdb.db import TSDB

    assert _config("--query=a:1", "--tsdb.no-lockfile").no_lockfile
    a = TSDB.open(tmp_path / "a", lockfile=False)
    b = TSDB.open(tmp_path / "a", lockfile=False)
    assert not (tmp_path / "a" / "lock").exists()
    a.close(), b.close()
    c = TSDB.open(tmp_path / "b")
    with pytest.raises(OSError, match="lock DB directory"):
        TSDB.open(tmp_path / "b")
    c.close()
