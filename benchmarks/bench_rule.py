"""Rule evaluation: ``pythanos rule`` vs a real ``thanos rule`` v0.42.4 over the same query API.

Data: ``BENCH_RULE_SERIES`` series (default 10 000) of a counter ``bench_requests_total`` with labels
``job`` (10), ``instance`` and ``shard`` (``BENCH_RULE_RECORDING`` shards), remote-written into a real
Prometheus 3.9.1 every 15 s by this process (a history of 10 minutes first), which both rulers
query (``--query``: Prometheus answers the same ``/api/v1/query`` as a Thanos querier, so the
figure is the rulers' cost, not a querier's).

Rules: ``BENCH_RULE_RECORDING`` recording rules (default 1 000) in groups of 100,
``sum by (job) (rate(bench_requests_total{shard="i"}[5m]))``, and ``BENCH_RULE_ALERTING``
alerting rules (default 200) in groups of 100, ``rate(bench_requests_total{shard="i"}[5m]) > 0``
with ``for: 1m``, a label and an annotation template (``humanize``), each keeping its shard's
series as alerts; interval ``BENCH_RULE_INTERVAL`` (15 s).

Each ruler runs alone, pinned to core ``BENCH_RULE_CPU`` (default 0) with ``taskset``, for two
warm-up intervals and then ``BENCH_RULE_INTERVALS`` (4) measured ones. Figures per ruler: the
evaluation time per interval (the sum of every group's last evaluation time, from
``/api/v1/rules``, median over the measured intervals; also split into recording and alerting
groups), CPU seconds per interval, peak RSS (VmHWM);
and ``rule.ratio_*`` = ours / Thanos (goal <= 1.0).
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import json
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sidecar import _binary, _peers_dir, _ports  # noqa: E402

SERIES = int(os.environ.get("BENCH_RULE_SERIES", "10000"))
RECORDING = int(os.environ.get("BENCH_RULE_RECORDING", "1000"))
ALERTING = int(os.environ.get("BENCH_RULE_ALERTING", "200"))
INTERVAL = float(os.environ.get("BENCH_RULE_INTERVAL", "15"))
INTERVALS = int(os.environ.get("BENCH_RULE_INTERVALS", "4"))
CPU = os.environ.get("BENCH_RULE_CPU", "0")
WHO = [w for w in os.environ.get("BENCH_RULE_WHO", "thanos,ours").split(",") if w]
PER_GROUP = 100
STEP_MS = 15000


def _rules_yaml() -> str:
    out = ["groups:"]
    for g in range(0, RECORDING, PER_GROUP):
        out += [f"- name: rec{g // PER_GROUP}", f"  interval: {INTERVAL:g}s", "  rules:"]
        for i in range(g, min(g + PER_GROUP, RECORDING)):
            out += [f"  - record: job:bench_requests:rate5m_{i}",
                    f"    expr: sum by (job) (rate(bench_requests_total{{shard=\"{i}\"}}[5m]))"]
    for g in range(0, ALERTING, PER_GROUP):
        out += [f"- name: alert{g // PER_GROUP}", f"  interval: {INTERVAL:g}s", "  rules:"]
        for i in range(g, min(g + PER_GROUP, ALERTING)):
            out += [f"  - alert: BenchRate{i}", f"    expr: rate(bench_requests_total{{shard=\"{i % RECORDING}\"}}[5m]) > 0",
                    "    for: 1m", "    labels: {severity: warning}",
                    "    annotations: {summary: \"{{ $labels.instance }} at {{ $value | humanize }}\"}"]
    return "\n".join(out) + "\n"


def _series_labels() -> list[tuple[tuple[str, str], ...]]:
    return [(("__name__", "bench_requests_total"), ("instance", f"host-{i // 10}:9100"), ("job", f"job{i % 10}"),
             ("shard", str(i % RECORDING))) for i in range(SERIES)]


def _write(url: str, labels: list, t_ms: int, round_no: int) -> None:
    from pythanos.remote.writeclient import encode_write_request

    for a in range(0, len(labels), 2000):
        body = encode_write_request([(ls, t_ms, float(round_no * (1 + j % 7))) for j, ls in
                                     enumerate(labels[a:a + 2000], start=a)])
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status // 100 == 2, r.status


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}: not ready after {timeout}s")


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _measure(name: str, binary: str, work: Path, rule_file: Path, prom_url: str) -> dict:
    http, grpc = _ports(2)
    args = ["taskset", "-c", CPU, binary, "rule", f"--rule-file={rule_file}", f"--query={prom_url}",
            f'--label=ruler="{name}"', f"--eval-interval={INTERVAL:g}s", f"--data-dir={work / name}",
            f"--http-address=127.0.0.1:{http}", f"--grpc-address=127.0.0.1:{grpc}", "--log.level=error"]
    log = open(work / f"{name}.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{http}"
    try:
        _wait_ready(url, proc)
        time.sleep(2 * INTERVAL + 2)  # warm-up: two evaluations of every group
        cpu0, t0 = _proc_cpu(proc.pid), time.monotonic()
        evals, rec, alert, errors = [], [], [], 0
        for _ in range(INTERVALS):
            time.sleep(INTERVAL)
            groups = _get(url + "/api/v1/rules")["data"]["groups"]
            evals.append(sum(g["evaluationTime"] for g in groups))
            rec.append(sum(g["evaluationTime"] for g in groups if g["name"].startswith("rec")))
            alert.append(sum(g["evaluationTime"] for g in groups if g["name"].startswith("alert")))
            errors += sum(1 for g in groups for r in g["rules"] if r["health"] != "ok")
        cpu = (_proc_cpu(proc.pid) - cpu0) / ((time.monotonic() - t0) / INTERVAL)
        alerts = len((_get(url + "/api/v1/alerts")["data"].get("Alerts")) or [])
        return {"eval_s": statistics.median(evals), "rec_s": statistics.median(rec),
                "alert_s": statistics.median(alert), "cpu_s": cpu, "rss_mib": _hwm_mib(proc.pid),
                "unhealthy": errors, "alerts": alerts}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def run() -> list[tuple[str, float, str]]:
    bins = {"thanos": _binary(_peers_dir() / "bin" / "thanos"),
            "ours": _binary(Path(sys.executable).parent / "pythanos", "pythanos")}
    prom_bin = _binary(_peers_dir() / "bin" / "prometheus")
    _binary("taskset")
    work = Path(tempfile.mkdtemp(prefix="bench-rule-"))
    rule_file = work / "rules.yaml"
    rule_file.write_text(_rules_yaml())
    (work / "prom.yml").write_text("global: {scrape_interval: 1m}\n")
    port = _ports(1)[0]
    prom = subprocess.Popen([prom_bin, f"--config.file={work / 'prom.yml'}", f"--storage.tsdb.path={work / 'prom'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    prom_url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    out: list[tuple[str, float, str]] = []
    try:
        _wait_ready(prom_url, prom)
        labels = _series_labels()
        now = int(time.time() * 1000) // STEP_MS * STEP_MS
        for k in range(40, 0, -1):  # ten minutes of history
            _write(prom_url + "/api/v1/write", labels, now - k * STEP_MS, 40 - k)

        def feed() -> None:
            n = 40
            while not stop.wait(STEP_MS / 1000):
                _write(prom_url + "/api/v1/write", labels, int(time.time() * 1000), n)
                n += 1

        threading.Thread(target=feed, daemon=True).start()
        got = {}
        for who in WHO:
            got[who] = m = _measure(who, bins[who], work, rule_file, prom_url)
            out += [(f"rule.{who}.eval_per_interval", m["eval_s"], "s"),
                    (f"rule.{who}.eval_recording_groups", m["rec_s"], "s"),
                    (f"rule.{who}.eval_alerting_groups", m["alert_s"], "s"),
                    (f"rule.{who}.cpu_per_interval", m["cpu_s"], "s"),
                    (f"rule.{who}.peak_rss", m["rss_mib"], "MiB"),
                    (f"rule.{who}.unhealthy_rules", m["unhealthy"], "rules"),
                    (f"rule.{who}.active_alerts", m["alerts"], "alerts")]
        if "ours" in got and "thanos" in got:
            for k, label in (("eval_s", "eval_per_interval"), ("cpu_s", "cpu_per_interval"), ("rss_mib", "peak_rss")):
                if got["thanos"][k] > 0:
                    out.append((f"rule.ratio_{label}", got["ours"][k] / got["thanos"][k], "x"))
    finally:
        stop.set()
        prom.terminate()
        prom.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name:<40} {value:>12.4g} {unit}")
