"""Prometheus' alert-generator compliance suite (``prometheus/compliance`` ``alert_generator``)
against ``pythanos rule``, in the topology Thanos' own ``TestAlertCompliance`` uses for its
stateful ruler: the suite remote-writes its series into our receiver, our querier reads the
receiver (and the ruler's StoreAPI, for the suite's ``ALERTS`` checks), our ruler evaluates the
suite's ``rules.yaml`` against the querier and sends its alerts to the suite's webhook. The suite
then checks ``/api/v1/rules``, ``/api/v1/alerts``, the ``ALERTS`` series and every notification
against its specification (resend every minute, ``for``, resolved alerts for 15 minutes, ...).

It runs about 40 minutes (the specification's cases span that much time): the binary is built by
``scripts/peers.sh --compliance`` (``alert-generator-compliance-tester`` in the peers cache). Thanos
skips its own copy of this test in CI for that reason; here ``make compliance`` runs it (this
directory is collected only with ``PYTHANOS_ALERT_COMPLIANCE=1``, which that target sets).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from peers import REGISTRY, Process, find_binary, missing, peers_dir, start_on_free_ports
from ports import free_ports
from test_receive import start_receiver

pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="session")
def alert_generator_bin() -> str:
    return find_binary(peers_dir() / "bin" / "alert-generator-compliance-tester") or missing(
        f"the alert-generator compliance tester in {peers_dir()}/bin (scripts/peers.sh --compliance)")


def _rules_yaml(binary: str) -> str:
    """The suite's rules.yaml, as its source tree next to the binary holds it."""
    src = Path(binary).resolve().parent.parent / "src"
    found = sorted(src.glob("alert-generator-compliance-*/alert_generator/rules.yaml"))
    if not found:
        missing(f"the alert-generator suite's rules.yaml under {src} (scripts/peers.sh --compliance)")
    return found[-1].read_text()


def test_alert_generator_compliance(pythanos_bin, alert_generator_bin, tmp_path):
    receiver = start_receiver(pythanos_bin, tmp_path / "receive", label='receive="r0"')
    rule_dir = tmp_path / "ruler"
    rule_dir.mkdir()
    (rule_dir / "rules.yaml").write_text(_rules_yaml(alert_generator_bin))
    suite_port, q_http, q_grpc = free_ports(3)

    def launch_ruler(ports: list[int]) -> Process:
        h, g = ports
        p = REGISTRY.start("pythanos-rule", [
            pythanos_bin, "rule", f"--http-address=127.0.0.1:{h}", f"--grpc-address=127.0.0.1:{g}",
            f"--data-dir={rule_dir / 'data'}", f"--rule-file={rule_dir / 'rules.yaml'}",
            f"--query=127.0.0.1:{q_http}", f"--alertmanagers.url=http://127.0.0.1:{suite_port}",
            "--eval-interval=1m", "--resend-delay=1m"], rule_dir)
        p.url, p.extra["grpc"] = f"http://127.0.0.1:{h}", f"127.0.0.1:{g}"
        return p

    ruler = start_on_free_ports(2, launch_ruler, lambda p: p.wait_http_ready("/-/ready", 60))
    # the querier de-duplicates by the receiver's labels: the suite wants its series as it wrote them
    querier = REGISTRY.start("pythanos-query", [
        pythanos_bin, "query", f"--http-address=127.0.0.1:{q_http}", f"--grpc-address=127.0.0.1:{q_grpc}",
        "--query.replica-label=receive", "--query.replica-label=tenant_id",
        f"--endpoint={receiver.extra['grpc']}", f"--endpoint={ruler.extra['grpc']}"], tmp_path)
    querier.url = f"http://127.0.0.1:{q_http}"
    querier.wait_http_ready("/-/ready", 60)
    cfg = tmp_path / "suite.yaml"
    cfg.write_text(f"""\
settings:
  remote_write_url: '{receiver.extra["rw"]}'
  query_base_url: '{querier.url}'
  rules_and_alerts_api_base_url: '{ruler.url}'
  alert_reception_server_port: {suite_port}
  alert_message_parser: default
""")
    log = tmp_path / "suite.log"
    try:
        with open(log, "wb") as out:
            rc = subprocess.run([alert_generator_bin, f"-config-file={cfg}"], stdout=out, stderr=subprocess.STDOUT,
                                timeout=3300, cwd=tmp_path).returncode
    finally:
        for p in (querier, ruler, receiver):
            p.stop()
    text = log.read_text(errors="replace")
    assert rc == 0 and "Congrats! All tests passed" in text, text[-6000:] + "\n--- ruler:\n" + ruler.log(80)
