"""``pythanos config-reloader`` against a real Prometheus 3.9.1 (``--web.enable-lifecycle``).

The rule files sit in a directory laid out and updated as the kubelet does a ConfigMap volume
(:mod:`configmap_volume`): a changed, added or removed file reaches Prometheus' ``/api/v1/rules``
through one ``POST /-/reload`` and the server is never restarted (same process). A server that
refuses the reload (lifecycle API off: 403) is counted as a failed reload with its answer logged,
and the reloader keeps running. Flag errors name the flag.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from configmap_volume import write_configmap_volume
from peers import http_get, listening


def group(name: str, record: str) -> str:
    return f"groups:\n  - name: {name}\n    rules:\n      - record: {record}\n        expr: vector(1)\n"


def groups(prom) -> list[str]:
    code, body = http_get(prom.url + "/api/v1/rules")
    assert code == 200, body
    return sorted(g["name"] for g in json.loads(body)["data"]["groups"])


def metrics(url: str) -> dict[str, float]:
    code, body = http_get(url + "/metrics")
    assert code == 200
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("reloader_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def start_reloader(pythanos_factory, pythanos_bin, rules: Path, reload_url: str):
    p = pythanos_factory(["config-reloader", f"--watched-dir={rules}", f"--reload-url={reload_url}",
                          "--listen-address=127.0.0.1:0", "--retry-interval=1s"], name="config-reloader")
    p.url = "http://" + listening(p, want=("http",))["http"]
    return p


def test_changed_added_removed_files_reload_prometheus_in_place(tmp_path, prometheus_factory, prometheus3_bin,
                                                                 pythanos_factory, pythanos_bin):
    rules = write_configmap_volume(tmp_path / "rules", {"a.yaml": group("a", "a:one")})
    prom = prometheus_factory(config_yaml=f"rule_files: ['{rules}/*.yaml']\n", binary=prometheus3_bin,
                              extra_args=["--web.enable-lifecycle"])
    assert groups(prom) == ["a"]
    rl = start_reloader(pythanos_factory, pythanos_bin, rules, prom.url + "/-/reload")
    rl.wait_ready(lambda: metrics(rl.url).get("reloader_last_reload_successful") == 1, what="first reload")

    write_configmap_volume(rules, {"a.yaml": group("b", "b:one")})
    prom.wait_ready(lambda: groups(prom) == ["b"], what="changed file reloaded")
    write_configmap_volume(rules, {"a.yaml": group("b", "b:one"), "c.yaml": group("c", "c:one")})
    prom.wait_ready(lambda: groups(prom) == ["b", "c"], what="added file reloaded")
    write_configmap_volume(rules, {"c.yaml": group("c", "c:one")})
    prom.wait_ready(lambda: groups(prom) == ["c"], what="removed file reloaded")

    assert prom.alive() and rl.alive()   # the same processes all along: reloaded, never restarted
    m = metrics(rl.url)
    assert m["reloader_reloads_total"] >= 4 and m["reloader_reloads_failed_total"] == 0, m
    assert m["reloader_watch_events_total"] >= 3 and m['reloader_info{method="http"}'] == 1, m
    assert "Reload triggered" in rl.log()


def test_a_refused_reload_is_counted_and_logged(tmp_path, prometheus_factory, prometheus3_bin, pythanos_factory,
                                                pythanos_bin):
    rules = write_configmap_volume(tmp_path / "rules", {"a.yaml": group("a", "a:one")})
    prom = prometheus_factory(config_yaml=f"rule_files: ['{rules}/*.yaml']\n", binary=prometheus3_bin)
    rl = start_reloader(pythanos_factory, pythanos_bin, rules, prom.url + "/-/reload")
    rl.wait_ready(lambda: metrics(rl.url).get("reloader_reloads_failed_total", 0) >= 2, what="failed reloads")
    m = metrics(rl.url)
    assert m["reloader_last_reload_successful"] == 0, m
    assert f"POST {prom.url}/-/reload: 403" in rl.log() and "Lifecycle API is not enabled" in rl.log()
    assert rl.alive() and groups(prom) == ["a"]


def test_flag_errors_name_the_flag(pythanos_bin, tmp_path):
    r = subprocess.run([pythanos_bin, "config-reloader", f"--watched-dir={tmp_path}", "--reload-url=localhost:9090"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--reload-url" in r.stderr and "localhost:9090" in r.stderr, r.stderr
    r = subprocess.run([pythanos_bin, "config-reloader"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "--watched-dir" in r.stderr, r.stderr
