"""Prometheus' remote-write receiver compliance suite (``prometheus/compliance`` ``remotewrite/receiver``)
against ``pythanos receive``, in one run with a real Prometheus 3.9.1 (the baseline) and a real
``thanos receive`` v0.42.4 (to show where Thanos differs: it answers RW 2.0 bodies with 200 and drops
them).

The suite is Go tests compiled into one binary by ``scripts/peers.sh`` (``rw-compliance-receiver.test``
in the peers cache): it sends each request to every ``remote_write`` entry of a Prometheus config and
checks the answers (status, ``X-Prometheus-Remote-Write-*-Written``). It never reads data back, so
what it sent is compared afterwards: every series and sample Prometheus stored, a real Thanos querier
over our receiver must return the same.

Then our own checks of the defects the suite showed, each against the same Prometheus (no suite
binary needed): RW 2.0 answers 204 when everything was written and 400 (not Thanos' 409) for refused
series; a ``Content-Encoding`` other than snappy is 415, never decoded by the HTTP server first.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from peers import REGISTRY, Process, find_binary, missing, peers_dir, start_on_free_ports, start_thanos_query
from pythanos.remote.prompb import write_v2_pb2
from test_receive import poll, post, query, start_receiver, start_thanos_receive, v1, v2

pytestmark = pytest.mark.timeout(900)

RECEIVERS = ("prometheus", "pythanos", "thanos")
V2_TYPE = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
WRITTEN = tuple(f"X-Prometheus-Remote-Write-{k}-Written" for k in ("Samples", "Histograms", "Exemplars"))


@pytest.fixture(scope="session")
def rw_compliance_bin() -> str:
    return find_binary(peers_dir() / "bin" / "rw-compliance-receiver.test") or missing(
        f"the remote-write receiver compliance suite in {peers_dir()}/bin (scripts/peers.sh)")


def start_prometheus_receiver(binary: str, work: Path) -> Process:
    """Prometheus 3.9.1 as the suite's README sets up its baseline: remote-write receiver on, native
    histograms on, nothing scraped."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "prometheus.yml"
    cfg.write_text("global: {}\n")

    def launch(ports: list[int]) -> Process:
        args = [binary, f"--config.file={cfg}", f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{ports[0]}", "--web.enable-remote-write-receiver",
                "--enable-feature=native-histograms"]
        p = REGISTRY.start("prometheus-rw", args, work)
        p.url, p.port = f"http://127.0.0.1:{ports[0]}", ports[0]
        p.extra["rw"] = p.url + "/api/v1/write"
        return p

    return start_on_free_ports(1, launch, lambda p: p.wait_http_ready("/-/ready", 90))


# ------------------------------------------------------------------------------------- the suite's output

_RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): (\S+) \(")
_SWITCH = re.compile(r"^=== (?:RUN|CONT|NAME|PAUSE)\s+(\S+)")


@dataclass
class SuiteRun:
    """Per case (the test name without the receiver) and receiver: PASS/FAIL/SKIP, and the lines the
    suite logged for it (the answer's status and body, the failed check)."""

    results: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    logs: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def passed(self, receiver: str) -> set[str]:
        return {case for case, r in self.results.items() if r.get(receiver) == "PASS"}

    def explain(self, case: str, receivers=("prometheus", "pythanos")) -> str:
        return "\n".join(f"  {case} [{rcv}]:\n" + "\n".join("    " + ln.strip() for ln in self.logs[f"{case}/{rcv}"]
                                                            if ln.strip())
                         for rcv in receivers)


def parse_suite_output(text: str) -> SuiteRun:
    """``go test -v`` output of the suite: the result line of every per-receiver subtest, and the
    output lines between a subtest's ``=== RUN``/``=== NAME`` line and the next such line."""
    run, current = SuiteRun(), ""
    for line in text.splitlines():
        m = _SWITCH.match(line)
        if m:
            current = m.group(1)
            continue
        m = _RESULT.match(line)
        if m:
            case, _, receiver = m.group(2).rpartition("/")
            if receiver in RECEIVERS:
                run.results[case][receiver] = m.group(1)
            continue
        if current.rpartition("/")[2] in RECEIVERS and not line.startswith("=== "):
            run.logs[current].append(line)
    return run


@dataclass
class Compliance:
    run: SuiteRun
    output: str
    prometheus: Process
    thanos_query_over_ours: Process
    started: float
    finished: float


@pytest.fixture(scope="module")
def compliance(rw_compliance_bin, prometheus3_bin, pythanos_bin, thanos_bin, tmp_path_factory):
    """One run of the suite against the three receivers (each request goes to all three), and a
    Thanos querier over our receiver to read back what was stored."""
    work = tmp_path_factory.mktemp("rw-compliance")
    procs: list[Process] = []
    try:
        prom = start_prometheus_receiver(prometheus3_bin, work / "prometheus")
        procs.append(prom)
        ours = start_receiver(pythanos_bin, work / "pythanos")
        procs.append(ours)
        theirs = start_thanos_receive(thanos_bin, work / "thanos")
        procs.append(theirs)
        tq = start_thanos_query(thanos_bin, [ours.extra["grpc"]], work / "tq")
        procs.append(tq)
        cfg = work / "config.yml"
        cfg.write_text("remote_write:\n" + "".join(f"  - name: {n}\n    url: {p.extra['rw']}\n"
                                                   for n, p in zip(RECEIVERS, (prom, ours, theirs))))
        started = time.time()
        env = {**os.environ, "PROMETHEUS_RW2_COMPLIANCE_CONFIG_FILE": str(cfg)}
        env.pop("PROMETHEUS_RW2_COMPLIANCE_RECEIVERS", None)
        done = subprocess.run([rw_compliance_bin, "-test.v", "-test.count=1", "-test.timeout=10m"], cwd=work,
                              env=env, capture_output=True, text=True, timeout=900)
        finished = time.time()
        output = done.stdout + done.stderr
        (work / "suite-output.txt").write_text(output)
        run = parse_suite_output(output)
        assert run.results, f"no test results in the suite's output (exit {done.returncode}):\n{output[-3000:]}"
        yield Compliance(run, output, prom, tq, started, finished)
    finally:
        for p in reversed(procs):
            p.stop()


def test_every_case_prometheus_passes_passes_against_ours(compliance):
    run = compliance.run
    # every case ran against each receiver
    incomplete = sorted(c for c, r in run.results.items() if set(r) != set(RECEIVERS))
    assert not incomplete, f"cases without a result for every receiver: {incomplete}"
    baseline, ours, thanos = (run.passed(r) for r in RECEIVERS)
    print(f"\ncompliance suite: {len(run.results)} cases; passed: prometheus {len(baseline)}, "
          f"pythanos {len(ours)}, thanos {len(thanos)}")
    assert len(baseline) > len(run.results) // 2, "the Prometheus baseline failed most cases:\n" + \
        "\n".join(run.explain(c, ("prometheus",)) for c in sorted(set(run.results) - baseline)[:10])
    failed = sorted(baseline - ours)
    assert not failed, (f"{len(failed)} cases pass against Prometheus 3.9.1 and fail against ours: {failed}\n"
                        + "\n".join(run.explain(c) for c in failed[:20]))


def test_thanos_v042_fails_rw2_cases_it_drops(compliance):
    """Where a real ``thanos receive`` v0.42.4 differs: it answers RW 2.0 bodies with 200 and no written
    counts (it reads them as an empty RW 1.0 request and drops them), which the suite's RW 2.0 success
    cases refuse. (Its RW 1.0 case is left out here: the suite builds labels from a Go map, so their
    order is random, and Thanos refuses unsorted labels with 409 where Prometheus and we sort them.)"""
    run = compliance.run
    baseline, thanos = run.passed("prometheus"), run.passed("thanos")
    rw2_ok = sorted(c for c in baseline if c.startswith("TestSingleMetric/") and "/simple_metric" in c
                    and "without_name" not in c)
    assert rw2_ok, "the baseline passed none of the single-metric cases"
    assert not set(rw2_ok) & thanos, run.explain(sorted(set(rw2_ok) & thanos)[0], ("thanos",))
    for case in rw2_ok:
        lines = run.logs[case + "/thanos"]
        assert any('Response code from "thanos": 200' in ln for ln in lines), (case, lines)
        assert any("0 samples written" in ln for ln in lines), (case, lines)


def _stored(url: str, at: float) -> dict[tuple, tuple[list, list]]:
    """Every raw sample and histogram a Prometheus-API server returns for the last 3h, by series
    (the receiver's external labels dropped)."""
    out = {}
    for r in query(url, '{__name__=~".+"}[3h]', at):
        key = tuple(sorted((k, v) for k, v in r["metric"].items() if k not in ("replica", "tenant_id")))
        out[key] = (r.get("values", []), r.get("histograms", []))
    return out


def test_what_the_suite_sent_is_stored_as_prometheus_stored_it(compliance):
    """The suite checks answers only; here the data: what Prometheus kept of the suite's requests
    (floats, special values, native and custom-bucket histograms; refused series left out) equals what
    a real Thanos querier reads from our receiver's StoreAPI."""
    at = compliance.finished + 600  # past every timestamp the suite wrote (its offsets are minutes at most)
    want = _stored(compliance.prometheus.url, at)
    assert len(want) > 50, f"Prometheus stored only {len(want)} series from the suite"
    assert any(h for _, h in want.values()), "no native histograms stored by Prometheus"

    def same():
        got = _stored(compliance.thanos_query_over_ours.url, at)
        diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        return not diff, [(k, want.get(k), got.get(k)) for k in diff[:5]] + [f"{len(diff)} series differ"]
    poll(same, timeout=60, what="every series the suite wrote, as Prometheus stored it, read from ours")


# ------------------------------------------------------------------- our checks of the defects it found

def _histogram_request(now: int, count: int) -> bytes:
    """One native histogram, one positive bucket holding one observation, with Count ``count``."""
    r = write_v2_pb2.Request(symbols=["", "__name__", "rw2_hist"])
    ts = r.timeseries.add(labels_refs=[1, 2])
    h = ts.histograms.add(count_int=count, sum=1.5, schema=0, timestamp=now, positive_deltas=[1])
    h.positive_spans.add(offset=0, length=1)
    return r.SerializeToString()


def _cases(now: int) -> list[tuple[str, bytes, str, str]]:
    """(name, protobuf body, Content-Type, Content-Encoding) of the requests both receivers get."""
    ok = [([("__name__", "rw2_ok"), ("i", str(i))], [(now, float(i))]) for i in range(3)]
    return [
        ("all written", v2(ok), V2_TYPE, "snappy"),
        ("empty request", v2([]), V2_TYPE, "snappy"),
        ("one series without __name__", v2([([("__name__", "rw2_part")], [(now, 1.0)]),
                                            ([("job", "no_name")], [(now, 2.0)])]), V2_TYPE, "snappy"),
        ("series without samples", v2([([("__name__", "rw2_nothing")], [])]), V2_TYPE, "snappy"),
        ("out of order", v2([([("__name__", "rw2_ok"), ("i", "0")], [(now - 60_000, 5.0)])]), V2_TYPE, "snappy"),
        ("histogram count not the buckets' sum", _histogram_request(now, 99), V2_TYPE, "snappy"),
        ("valid histogram", _histogram_request(now, 1), V2_TYPE, "snappy"),
        ("gzip", b"\x1f\x8b corrupt", V2_TYPE, "gzip"),
        ("deflate", b"x\x9c corrupt", V2_TYPE, "deflate"),
        ("RW 1.0 gzip", b"\x1f\x8b corrupt", "application/x-protobuf", "gzip"),
        ("RW 1.0 valid body, gzip header", v1(ok), "application/x-protobuf", "gzip"),
    ]


def test_statuses_and_written_counts_as_prometheus(prometheus3_bin, pythanos_bin, tmp_path):
    """The same requests, in the same order, to Prometheus 3.9.1 and to us: the same status and the
    same written counts. RW 2.0: 204 for a full write, 400 with the good series written (and counted)
    when some are refused; any Content-Encoding but snappy: 415, whatever the body."""
    prom = start_prometheus_receiver(prometheus3_bin, tmp_path / "prometheus")
    ours = start_receiver(pythanos_bin, tmp_path / "ours")
    try:
        now = int(time.time() * 1000)
        differ = []
        for name, body, ctype, enc in _cases(now):
            answers = []
            for p in (prom, ours):
                code, text, headers = post(p.extra["rw"], body, v2=ctype == V2_TYPE, snappy=enc == "snappy",
                                           headers={} if enc == "snappy" else {"Content-Encoding": enc})
                answers.append((code, tuple(headers.get(h) for h in WRITTEN), text.strip()))
            if answers[0][:2] != answers[1][:2]:
                differ.append((name, answers))
        assert not differ, "\n".join(f"{n}: prometheus {a[0]}, ours {a[1]}" for n, a in differ)
    finally:
        ours.stop()
        prom.stop()
