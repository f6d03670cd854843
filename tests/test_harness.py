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
