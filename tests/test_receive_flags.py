"""``pythanos receive`` flags and its limits file: Thanos' names and defaults, errors that name the flag and field."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from pythanos.cli import build_parser
from pythanos.errors import ConfigError, UserError
from pythanos.flags import parse_label_flags
from pythanos.receive.limits import RequestLimits, parse_limits


def _args(*argv: str):
    return build_parser("receive").parse_args(["receive", *argv])


def test_defaults_are_thanos_defaults():
    a = _args()
    assert a.remote_write_address == "0.0.0.0:19291"
    assert a.grpc_address == "0.0.0.0:10901" and a.http_address == "0.0.0.0:10902"
    assert a.tsdb_path == "./data" and a.retention == 15 * 86400
    assert a.tenant_header == "THANOS-TENANT" and a.default_tenant == "default-tenant"
    assert a.tenant_label == "tenant_id" and a.replica_header == "THANOS-REPLICA"
    assert a.replication_factor == 1 and a.hashrings_algorithm == "hashmod"
    assert a.forward_timeout == 5.0 and a.min_block_duration == 7200 and a.wal_compression is True
    assert a.hashrings_refresh_interval == 300


def test_every_flag_of_thanos_receive_is_accepted(thanos_bin):
    """Every flag real ``thanos receive --help`` lists (its hidden ones are taken from its source: see flags.py)."""
    run = subprocess.run([thanos_bin, "receive", "--help"], capture_output=True, text=True)
    names = sorted({m.group(1).replace("[no-]", "") for m in
                    re.finditer(r"^ {2,6}(?:-\w, )?(--(?:\[no-\])?[a-z0-9.-]+)", run.stdout + run.stderr, re.M)})
    ours = {opt for action in build_parser("receive")._subparsers._group_actions[0].choices["receive"]._actions
            for opt in action.option_strings}
    skip = {"--help", "--version", "--tracing.config", "--tracing.config-file", "--enable-auto-gomemlimit",
            "--auto-gomemlimit.ratio"}
    assert len(names) > 60, names  # the list really came from Thanos
    assert [n for n in names if n not in ours and n not in skip] == []


def test_label_flags():
    assert parse_label_flags(['replica="a"', 'cluster="eu 1"']) == {"cluster": "eu 1", "replica": "a"}
    with pytest.raises(UserError, match="unrecognized label 'x'"):
        parse_label_flags(["x"])
    with pytest.raises(UserError, match=r"--label=a=1: unquote label value"):
        parse_label_flags(["a=1"])
    with pytest.raises(UserError, match="given twice"):
        parse_label_flags(['a="1"', 'a="2"'])


def _refused(pythanos_bin: str, *argv: str) -> str:
    """Run ``pythanos receive`` with ``argv`` (in a process of its own: the flags put grpcio's TLS
    policy in force, once per process); it must exit 1 at once and say why on stderr."""
    run = subprocess.run([pythanos_bin, "receive", *argv, "--tsdb.path=/nonexistent/never-created",
                          "--http-address=127.0.0.1:0", "--grpc-address=127.0.0.1:0",
                          "--remote-write.address=127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0, run.stderr
    return run.stderr


def test_no_external_labels_is_refused_as_thanos_does(pythanos_bin):
    assert "no external labels configured for receive" in _refused(pythanos_bin)


@pytest.mark.parametrize("flag,want", [
    (["--receive.replication-protocol=capnproto"], "capnproto: not supported"),
    (["--enable-feature=nope"], "--enable-feature=nope: unknown feature"),
    (["--receive.relabel-config=- action: nope"], "--receive.relabel-config: relabel config at index 0: unknown "
                                                  "relabel action"),
    (["--receive.relabel-config-file=/nonexistent/relabel.yaml"], "--receive.relabel-config-file"),
    (["--receive.relabel-config=[{target_label: env, replacement: $(PYTHANOS_TEST_UNSET_VAR)}]"],
     "--receive.relabel-config: found reference to unset environment variable"),
    (["--remote-write.server-tls-key=/x.key"], "--remote-write.server-tls-key: both server key and certificate "
                                                "must be provided"),
    (["--remote-write.server-tls-client-ca=/ca.pem"], "--remote-write.server-tls-client-ca=/ca.pem: when a client "
                                                       "CA is used a server key and certificate must also be provided"),
    (["--remote-write.server-tls-cert=/nonexistent/c.pem", "--remote-write.server-tls-key=/nonexistent/k.pem"],
     "--remote-write.server-tls-cert=/nonexistent/c.pem: cannot read"),
    (["--remote-write.server-tls-cert=/c", "--remote-write.server-tls-key=/k", "--remote-write.server-tls-curves=P1"],
     "--remote-write.server-tls-curves: invalid curve: P1"),
    (["--remote-write.server-tls-cert=/c", "--remote-write.server-tls-key=/k", "--remote-write.server-tls-min-version=1.2",
      "--remote-write.server-tls-ciphers=TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"],
     "--remote-write.server-tls-ciphers: http2: TLSConfig.CipherSuites is missing an HTTP/2-required"),
    (["--remote-write.client-tls-secure", "--remote-write.client-tls-cert=/c.pem"],
     "--remote-write.client-tls-cert=/c.pem: both client key and certificate must be provided"),
    (["--remote-write.client-tls-secure", "--remote-write.client-tls-ca=/nonexistent/ca.pem"],
     "--remote-write.client-tls-ca=/nonexistent/ca.pem: cannot read"),
    (["--receive.hashrings=[{"], "--receive.hashrings: failed to validate hashring configuration content"),
])
def test_unsupported_features_and_bad_configs_are_refused_by_name(pythanos_bin, flag, want):
    assert want in _refused(pythanos_bin, '--label=r="1"', *flag)


@pytest.mark.parametrize("argv,ok", [
    # without gRPC server TLS the peers' client flags set the process' gRPC TLS minimum
    (["--remote-write.client-tls-secure", "--remote-write.client-tls-min-version=1.2"], "1.2"),
    (["--remote-write.client-tls-secure"], "1.3"),
])
def test_peer_tls_minimum_is_the_process_minimum(argv, ok):
    code = ("import sys\n"
            "from pythanos.cli import build_parser\n"
            "from pythanos.receive.flags import config_from_args\n"
            "from pythanos.tlsconfig import process_min_version\n"
            "cfg = config_from_args(build_parser('receive').parse_args(sys.argv[1:]))\n"
            "print(process_min_version(), cfg.rw_client_tls.min_version)\n")
    run = subprocess.run([sys.executable, "-c", code, "receive", '--label=r="1"', *argv], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [ok, ok]


def test_limits_overlay_default_and_tenants():
    lim = parse_limits("""
write:
  global: {max_concurrency: 4}
  default:
    request: {size_bytes_limit: 1024, series_limit: 10}
    head_series_limit: 100
  tenants:
    a: {request: {samples_limit: 5}}
    b: {head_series_limit: 7}
""", "limits.yaml")
    assert lim.request("x") == RequestLimits(size_bytes=1024, series=10, samples=0)
    assert lim.request("a") == RequestLimits(size_bytes=1024, series=10, samples=5)
    assert lim.request("b") == lim.default
    assert lim.head_series("b") == 7 and lim.head_series("a") == 100
    assert lim.max_concurrency == 4


@pytest.mark.parametrize("text,want", [
    ("write: {defaults: {}}", r"limits.yaml: write: parsing config YAML file: field defaults not found"),
    ("write: {default: {request: {series_limit: x}}}", r"write.default.request.series_limit: want an integer"),
    ("write: {global: {meta_monitoring_url: 'foo'}}", "foo is not a valid meta-monitoring URL"),
    ("write: {tenants: {t1: {head_series_limit: -1}}}", r"write.tenants.t1.head_series_limit: want a non-negative"),
    ("write: [", "parsing config YAML file"),
])
def test_limits_errors_name_the_field(text, want):
    with pytest.raises(ConfigError, match=want):
        parse_limits(text, "limits.yaml")
