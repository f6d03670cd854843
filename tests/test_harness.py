"""The harness itself: every real peer starts, answers, and stops."""
from __future__ import annotations

import json
import re
import subprocess

from peers import http_get


def _version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


def test_thanos_from_peers_cache(thanos_bin):
    text = _version(thanos_bin)
    m = re.search(r"thanos, version (\d+)\.(\d+)\.(\d+)", text)
    assert m, text
    assert (int(m[1]), int(m[2])) >= (0, 40), text


def test_prometheus3_from_peers_cache(prometheus3_bin):
    text = _version(prometheus3_bin)
    m = re.search(r"prometheus, version (\d+)\.(\d+)\.(\d+)", text)
    assert m and int(m[1]) == 3, text


def test_promtool_and_prometheus_from_debian(promtool_bin, prometheus_bin):
    assert re.search(r"promtool, version 2\.\d+", _version(promtool_bin))
    assert re.search(r"prometheus, version 2\.\d+", _version(prometheus_bin))


def test_prometheus_starts_and_answers(prometheus_factory):
    prom = prometheus_factory()
    status, body = http_get(prom.url + "/api/v1/status/buildinfo")
    assert status == 200
    assert json.loads(body)["data"]["version"].startswith("2.")
    prom.stop()
    assert not prom.alive()


def test_prometheus3_starts(prometheus_factory, prometheus3_bin):
    prom = prometheus_factory(binary=prometheus3_bin)
    status, body = http_get(prom.url + "/api/v1/status/buildinfo")
    assert status == 200 and json.loads(body)["data"]["version"].startswith("3.")


def test_alertmanager_starts(alertmanager_factory):
    am = alertmanager_factory()
    status, body = http_get(am.url + "/api/v2/status")
    assert status == 200 and "versionInfo" in json.loads(body)


def test_s3_bucket_is_fresh_and_usable(s3_server, s3_bucket):
    import io

    c = s3_server.client()
    assert list(c.list_objects(s3_bucket.name, recursive=True)) == []
    c.put_object(s3_bucket.name, "a/b", io.BytesIO(b"hello"), 5)
    assert c.get_object(s3_bucket.name, "a/b").read() == b"hello"
    assert f"bucket: {s3_bucket.name}" in s3_bucket.objstore_yaml


def test_pythanos_console_script(pythanos_bin):
    assert "pythanos, version" in _version(pythanos_bin)


def test_pythanos_logs_logfmt_and_json(pythanos_bin, tmp_path):
    # A bad objstore config is reported as one logfmt error line naming the flag.
    bad = tmp_path / "bucket.yml"
    bad.write_text("type: FILESYSTEM\nconfig: {}\n")
    out = subprocess.run([pythanos_bin, "tools", "bucket", "ls", f"--objstore.config-file={bad}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    line = out.stderr.strip().splitlines()[-1]
    assert re.match(r'level=error ts=\d{4}-\d\d-\d\dT\S+Z caller=\S+:\d+ msg=', line), line
    assert str(bad) in line
    out = subprocess.run([pythanos_bin, "tools", "bucket", "ls", "--log.format=json",
                          f"--objstore.config-file={bad}"], capture_output=True, text=True, timeout=60)
    rec = json.loads(out.stderr.strip().splitlines()[-1])
    assert rec["level"] == "error" and str(bad) in rec["msg"]


def test_ports_are_leased_to_one_process_at_a_time(tmp_path):
    """Two processes asking for ports at the same time get different ones, all below the kernel's
    ephemeral range (nothing binds one there by itself), each free when handed out."""
    import sys
    from pathlib import Path

    from ports import _ephemeral_low, free_ports

    code = "import sys; sys.path.insert(0, sys.argv[1]); from ports import free_ports; print(*free_ports(200))"
    here = str(Path(__file__).parent)
    procs = [subprocess.Popen([sys.executable, "-c", code, here], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    got = [p.communicate(timeout=120)[0].split() for p in procs] + [list(map(str, free_ports(200)))]
    assert all(len(g) == 200 for g in got)
    every = [int(x) for g in got for x in g]
    assert len(set(every)) == len(every)
    assert max(every) < _ephemeral_low()


def test_a_peer_whose_port_was_taken_is_started_again_on_new_ports(prometheus_bin, tmp_path):
    """A port taken by a process that does not lease (held here by a plain socket) makes the real
    Prometheus exit with "address already in use"; the start is retried on fresh ports."""
    import socket

    from peers import REGISTRY, Process, start_on_free_ports

    (tmp_path / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    taken = squatter.getsockname()[1]
    tried: list[int] = []

    def launch(ports: list[int]) -> Process:
        port = taken if not tried else ports[0]
        tried.append(port)
        p = REGISTRY.start("prometheus", [prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                                          f"--storage.tsdb.path={tmp_path / f'data{len(tried)}'}",
                                          f"--web.listen-address=127.0.0.1:{port}"], tmp_path)
        p.url = f"http://127.0.0.1:{port}"
        return p

    try:
        p = start_on_free_ports(1, launch, lambda p: p.wait_http_ready("/-/ready", 60))
        assert tried[0] == taken and len(tried) == 2 and p.url.endswith(f":{tried[1]}")
        p.stop()
    finally:
        squatter.close()
        for p in REGISTRY.current:
            p.stop()


def test_our_components_report_the_ports_the_kernel_picked(pythanos_bin, tmp_path):
    """Started on port 0, a component's log lines say where it listens (one worker and two: the
    workers share the supervisor's ports), and it answers there."""
    from peers import REGISTRY, listening

    for workers in ("1", "2"):
        p = REGISTRY.start(f"query-{workers}", [pythanos_bin, "query", "--http-address=127.0.0.1:0",
                                                "--grpc-address=127.0.0.1:0", f"--query.workers={workers}"], tmp_path)
        try:
            at = listening(p)
            assert not at["http"].endswith(":0") and not at["grpc"].endswith(":0"), at
            p.url = f"http://{at['http']}"
            p.wait_http_ready("/-/ready", 60)
        finally:
            p.stop()
