"""Exemplars through the receiver, against real peers: a real Prometheus 3.9.1 scraping an
OpenMetrics endpoint with exemplars (served here) and remote-writing them into our receiver and a
real ``thanos receive --tsdb.max-exemplars``; ``/api/v1/query_exemplars`` of a real ``thanos
query`` over each, of our querier and of Prometheus itself must agree. Also: exemplars survive a
kill -9 (WAL replay), bad exemplars are answered as Thanos answers them, and the buffer never
holds more than ``--tsdb.max-exemplars``.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ports import free_ports
from peers import REGISTRY, Process, http_get, start_on_free_ports, start_thanos_query
from pythanos.remote.prompb import remote_pb2
from test_receive import poll, post, restart, v1

pytestmark = pytest.mark.timeout(900)

SERIES_QUERY = '{__name__=~"demo_.+", tenant_id="default-tenant"}'


# ---------------------------------------------------------------------------------------------- helpers

def start_rcv(binary: str, kind: str, work: Path, max_exemplars: int) -> Process:
    """Our receiver (kind "ours") or Thanos' ("thanos") with the same flags."""
    work.mkdir(parents=True, exist_ok=True)

    def launch(ports: list[int]) -> Process:
        rw, grpc_port, http_port, capn = ports
        args = [binary, "receive", f'--label=replica="{kind}"', f"--tsdb.path={work / 'data'}",
                f"--remote-write.address=127.0.0.1:{rw}", f"--grpc-address=127.0.0.1:{grpc_port}",
                f"--http-address=127.0.0.1:{http_port}", f"--tsdb.max-exemplars={max_exemplars}"]
        if kind == "thanos":
            args.append(f"--receive.capnproto-address=127.0.0.1:{capn}")
        p = REGISTRY.start(f"{kind}-receive", args, work)
        p.url, p.port = f"http://127.0.0.1:{http_port}", http_port
        p.extra.update(rw=f"http://127.0.0.1:{rw}/api/v1/receive", grpc=f"127.0.0.1:{grpc_port}")
        return p

    return start_on_free_ports(4, launch, lambda p: p.wait_http_ready("/-/ready", 120))


def start_our_query(pythanos_bin: str, endpoints: list[str], work: Path) -> Process:
    h, g = free_ports(2)
    p = REGISTRY.start("query", [pythanos_bin, "query", f"--http-address=127.0.0.1:{h}", f"--grpc-address=127.0.0.1:{g}",
                                 "--query.replica-label=replica", *[f"--endpoint={e}" for e in endpoints]], work)
    p.url, p.extra["grpc"] = f"http://127.0.0.1:{h}", f"127.0.0.1:{g}"
    p.wait_http_ready("/-/ready", 60)
    return p


def exemplars(url: str, query: str, start: str = "", end: str = "") -> tuple[int, dict]:
    params = {"query": query}
    if start:
        params["start"] = start
    if end:
        params["end"] = end
    code, body = http_get(f"{url}/api/v1/query_exemplars?" + urllib.parse.urlencode(params), timeout=30)
    return code, json.loads(body)


def metrics_text(url: str) -> str:
    code, body = http_get(url + "/metrics")
    assert code == 200, body
    return body.decode() if isinstance(body, bytes) else body


def exemplar_metrics(url: str) -> dict[str, float]:
    """``prometheus_tsdb_exemplar_*`` of the default tenant (``_created`` samples left out)."""
    out = {}
    for line in metrics_text(url).splitlines():
        if line.startswith("prometheus_tsdb_exemplar_") and 'tenant="default-tenant"' in line:
            name, value = line.split("{", 1)[0], float(line.rsplit(" ", 1)[1])
            if not name.endswith("_created"):
                out[name] = value
    return out


def normal(data: list, drop=("tenant_id", "replica")) -> list:
    """An answer's data in one shape: series without the receivers' labels, exemplars with the
    timestamp as a number (Prometheus writes "1.100" where Thanos writes 1.1)."""
    out = []
    for s in data:
        key = tuple(sorted((k, v) for k, v in s["seriesLabels"].items() if k not in drop))
        out.append((key, [(tuple(sorted(e["labels"].items())), e["value"], float(e["timestamp"]))
                          for e in s["exemplars"]]))
    return sorted(out)


class ExemplarSource:
    """An OpenMetrics endpoint: a counter and a classic histogram whose exemplars change on every
    scrape (after the first few, so the series exist at the receivers before any exemplar does),
    until :meth:`freeze`: then each scrape repeats the last exemplars, which Prometheus ignores
    as duplicates."""

    def __init__(self) -> None:
        self.n = 0
        self.frozen = False
        self.exemplar_scrapes = 0
        self.lock = threading.Lock()
        self.last = ""
        src = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = src.page().encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def page(self) -> str:
        with self.lock:
            if self.frozen and self.last:
                return self.last
            self.n += 1
            n = self.n
            lines = ["# TYPE demo_requests counter", "# HELP demo_requests Requests served."]
            ex = ""
            hx_low = hx_inf = ""
            if n > 3:
                self.exemplar_scrapes += 1
                ts = f"{time.time():.3f}"
                ex = f' # {{trace_id="t{n:04d}",span_id="s{n}"}} {n / 4} {ts}'
                hx_low = f' # {{trace_id="h{n:04d}"}} 0.0{n % 10} {ts}'
                hx_inf = f' # {{trace_id="i{n:04d}"}} {n}.5 {ts}'
            lines.append(f'demo_requests_total{{path="/a"}} {n}{ex}')
            lines += ["# TYPE demo_latency_seconds histogram", "# HELP demo_latency_seconds Latency.",
                      f'demo_latency_seconds_bucket{{le="0.1"}} {n}{hx_low}',
                      f'demo_latency_seconds_bucket{{le="+Inf"}} {2 * n}{hx_inf}',
                      f"demo_latency_seconds_sum {n * 0.7}", f"demo_latency_seconds_count {2 * n}", "# EOF", ""]
            self.last = "\n".join(lines)
            return self.last

    def freeze(self) -> None:
        with self.lock:
            self.frozen = True

    def close(self) -> None:
        self.server.shutdown()


def prom_config(source: str, targets: list[tuple[str, str, str]]) -> str:
    """Scrape ``source`` every second (OpenMetrics only), remote-write with exemplars to each
    (url, protobuf message, tenant)."""
    rws = "".join(f"""
  - url: {url}
    send_exemplars: true
    protobuf_message: {msg}
    headers: {{THANOS-TENANT: {tenant}}}
    queue_config: {{batch_send_deadline: 200ms, max_shards: 1}}""" for url, msg, tenant in targets)
    return f"""
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: demo
    scrape_protocols: [OpenMetricsText1.0.0]
    static_configs: [{{targets: ['{source}']}}]
remote_write:{rws}
"""


# ---------------------------------------------------------------------------------------------- tests

def test_prometheus_exemplars_through_our_receiver_equal_thanos_and_prometheus(prometheus_factory, prometheus3_bin,
                                                                              pythanos_bin, thanos_bin, tmp_path):
    src = ExemplarSource()
    ours = start_rcv(pythanos_bin, "ours", tmp_path / "ours", 1000)
    theirs = start_rcv(thanos_bin, "thanos", tmp_path / "thanos", 1000)
    try:
        prom = prometheus_factory(binary=prometheus3_bin, name="prom-ex", extra_args=["--enable-feature=exemplar-storage"],
                                  config_yaml=prom_config(src.address, [
                                      (ours.extra["rw"], "prometheus.WriteRequest", "default-tenant"),
                                      (theirs.extra["rw"], "prometheus.WriteRequest", "default-tenant"),
                                      (ours.extra["rw"], "io.prometheus.write.v2.Request", "rw2")]))
        tq_ours = start_thanos_query(thanos_bin, [ours.extra["grpc"]], tmp_path / "tq-ours")
        tq_theirs = start_thanos_query(thanos_bin, [theirs.extra["grpc"]], tmp_path / "tq-theirs")
        oq = start_our_query(pythanos_bin, [ours.extra["grpc"]], tmp_path / "oq")
        try:
            poll(lambda: (src.exemplar_scrapes >= 6, src.exemplar_scrapes), 120, "six scrapes with exemplars")
            src.freeze()
            # Prometheus' own answer, once it holds every exemplar the source gave
            want_n = 3 * src.exemplar_scrapes

            def prom_all():
                code, body = exemplars(prom.url, '{__name__=~"demo_.+"}')
                got = normal(body.get("data") or [])
                return sum(len(e) for _, e in got) == want_n, got

            want = poll(prom_all, 60, "Prometheus has every exemplar")
            assert len(want) == 3  # the counter and two buckets

            for who in (tq_ours, tq_theirs, oq):
                poll(lambda: (normal(exemplars(who.url, SERIES_QUERY)[1]["data"]) == want,
                              normal(exemplars(who.url, SERIES_QUERY)[1]["data"])), 60,
                     f"{who.name} answers as Prometheus")
            # the same exemplars sent with remote write 2.0 (tenant rw2, ours only: Thanos v0.42 drops RW 2.0)
            rw2 = SERIES_QUERY.replace("default-tenant", "rw2")
            poll(lambda: (normal(exemplars(oq.url, rw2)[1]["data"]) == want, normal(exemplars(oq.url, rw2)[1]["data"])),
                 60, "RW 2.0 exemplars")
            # exactly: the same bytes of data from Thanos' querier over either receiver and from ours
            a = exemplars(tq_ours.url, SERIES_QUERY)[1]
            assert a == exemplars(tq_theirs.url, SERIES_QUERY)[1]
            assert exemplars(oq.url, SERIES_QUERY)[1] == a
            assert a["data"][0]["seriesLabels"]["tenant_id"] == "default-tenant"
            assert "replica" not in a["data"][0]["seriesLabels"]  # the querier's replica label is dropped
            # a time window, a selector on an exemplar-less series, a binary expression of selectors
            ts = sorted(e[2] for _, ex in want for e in ex)
            mid_start, mid_end = f"{ts[3]:.3f}", f"{ts[-4]:.3f}"
            for q, s, e in ((SERIES_QUERY, mid_start, mid_end),
                            ('demo_latency_seconds_count{tenant_id="default-tenant"}', "", ""),
                            ('rate(demo_requests_total{tenant_id="default-tenant"}[1m]) + on() '
                             'demo_latency_seconds_bucket{le="+Inf",tenant_id="default-tenant"}', "", ""),
                            ('demo_requests_total{tenant_id="nope"}', "", "")):
                w = exemplars(tq_theirs.url, q, s, e)
                assert w[0] == 200, w
                assert exemplars(tq_ours.url, q, s, e) == w, q
                assert exemplars(oq.url, q, s, e) == w, q
            assert normal(exemplars(oq.url, SERIES_QUERY, mid_start, mid_end)[1]["data"]) == normal(
                exemplars(prom.url, '{__name__=~"demo_.+"}', mid_start, mid_end)[1]["data"])
            # bad parameters and queries: Thanos' querier's answers
            for q, s in (("demo_requests_total{", ""), ("demo_requests_total", "yesterday"), ("", "")):
                w = exemplars(tq_ours.url, q, s)
                assert w[0] in (400, 500), w
                assert exemplars(oq.url, q, s) == w, (q, s)
            # the receiver's metrics, with Prometheus' names
            metrics = metrics_text(ours.url)
            assert 'prometheus_tsdb_exemplar_max_exemplars{tenant="default-tenant"} 1000.0' in metrics
            assert f'prometheus_tsdb_exemplar_exemplars_in_storage{{tenant="default-tenant"}} {float(want_n)}' \
                in metrics

            # kill -9 and restart: the exemplars come back from the WAL
            before = exemplars(oq.url, SERIES_QUERY)[1]
            os.killpg(ours.pid, signal.SIGKILL)
            ours.proc.wait(10)
            ours = restart(ours)
            poll(lambda: (exemplars(oq.url, SERIES_QUERY)[1] == before, exemplars(oq.url, SERIES_QUERY)[1]), 60,
                 "exemplars after kill -9 and restart")
        finally:
            for p in (tq_ours, tq_theirs, oq):
                p.stop()
    finally:
        ours.stop()
        theirs.stop()
        src.close()


def rw1(series) -> bytes:
    """Series of (labels, samples [(t, v)], exemplars [(labels, v, t)])."""
    wr = remote_pb2.WriteRequest.FromString(v1([(labels, samples) for labels, samples, _ in series]))
    for ts, (_, _, exs) in zip(wr.timeseries, series):
        for lbls, v, t in exs:
            e = ts.exemplars.add(value=v, timestamp=t)
            for n, lv in lbls:
                e.labels.add(name=n, value=lv)
    return wr.SerializeToString()


def test_bad_exemplars_and_the_bound_as_thanos_receive(pythanos_bin, thanos_bin, tmp_path):
    cap = 5
    ours = start_rcv(pythanos_bin, "ours", tmp_path / "ours", cap)
    theirs = start_rcv(thanos_bin, "thanos", tmp_path / "thanos", cap)
    tq_ours = tq_theirs = oq = tq_stacked = None
    try:
        now = int(time.time() * 1000)
        s = [("__name__", "ex"), ("a", "1")]
        steps = [
            # a sample with an exemplar
            [(s, [(now, 1.0)], [([("trace_id", "a")], 1.0, now)])],
            # the same exemplar again: a duplicate, ignored without an error
            [(s, [(now + 1000, 2.0)], [([("trace_id", "a")], 1.0, now)])],
            # older than the series' newest: out of order; labels of 129 runes: too long
            [(s, [(now + 2000, 3.0)], [([("trace_id", "b")], 1.0, now - 1)]),
             ([("__name__", "ex"), ("a", "2")], [(now, 1.0)], [([("trace_id", "é" * 121)], 1.0, now)])],
            # 128 runes exactly: taken; an exemplar of a series whose sample is refused: dropped silently
            [([("__name__", "ex"), ("a", "3")], [(now, 1.0)], [([("trace_id", "é" * 120)], 2.0, now)]),
             (s, [(now - 10_000, 9.0)], [([("trace_id", "c")], 3.0, now + 5000)])],
            # an exemplar-only entry of a series that exists
            [(s, [], [([("trace_id", "d")], 4.0, now + 6000)])],
            # an exemplar-only entry of a series that does not: dropped silently
            [([("__name__", "ex"), ("a", "4")], [], [([("trace_id", "e")], 4.0, now)])],
        ]
        tq_ours = start_thanos_query(thanos_bin, [ours.extra["grpc"]], tmp_path / "tq-ours")
        tq_theirs = start_thanos_query(thanos_bin, [theirs.extra["grpc"]], tmp_path / "tq-theirs")
        oq = start_our_query(pythanos_bin, [ours.extra["grpc"]], tmp_path / "oq")
        # a Thanos querier over ours: our querier's Exemplars API and its Info advertising it
        tq_stacked = start_thanos_query(thanos_bin, [oq.extra["grpc"]], tmp_path / "tq-stacked")

        def run(steps: list) -> None:
            for i, body in enumerate(steps):
                b = rw1(body)
                want = post(theirs.extra["rw"], b)[:2]
                got = post(ours.extra["rw"], b)[:2]
                assert got == want, (i, got, want)

        def same() -> dict:
            w = exemplars(tq_theirs.url, '{__name__="ex"}')
            assert w[0] == 200, w
            assert exemplars(tq_ours.url, '{__name__="ex"}') == w
            assert exemplars(oq.url, '{__name__="ex"}') == w
            assert exemplars(tq_stacked.url, '{__name__="ex"}') == w
            return w[1]

        run(steps)
        assert sum(len(x["exemplars"]) for x in same()["data"]) == 3  # a, é*120 and d: the others refused or dropped
        # then more than the buffer holds: the oldest go
        run([[(s, [(now + 10_000 + i * 1000, 1.0)], [([("trace_id", f"z{i}")], float(i), now + 10_000 + i * 1000)])]
             for i in range(8)])
        assert sum(len(x["exemplars"]) for x in same()["data"]) == cap
        # the head's exemplar metrics: Prometheus' names, the values Thanos' receiver reports
        mine, want = exemplar_metrics(ours.url), exemplar_metrics(theirs.url)
        assert mine == want and mine["prometheus_tsdb_exemplar_exemplars_in_storage"] == cap, (mine, want)
    finally:
        for p in (tq_ours, tq_theirs, oq, tq_stacked):
            if p is not None:
                p.stop()
        ours.stop()
        theirs.stop()


def test_max_exemplars_0_keeps_none_and_logs_none(pythanos_bin, tmp_path):
    """Thanos' default: exemplars are accepted without an error, neither kept nor written to the WAL."""
    ours = start_rcv(pythanos_bin, "ours", tmp_path / "ours", 0)
    try:
        now = int(time.time() * 1000)
        code, text, _ = post(ours.extra["rw"], rw1([([("__name__", "ex")], [(now, 1.0)],
                                                     [([("trace_id", "a")], 1.0, now)])]))
        assert code == 200, text
    finally:
        ours.stop()
    from pythanos.tsdb import wal, walrecords as wr

    kinds = {rec[0] for rec in wal.read_records(str(tmp_path / "ours" / "data" / "default-tenant" / "wal"))}
    assert wr.SAMPLES in kinds and wr.EXEMPLARS not in kinds


def start_sidecar(binary: str, kind: str, prom: Process, work: Path) -> Process:
    """Our sidecar or Thanos' next to ``prom``, with the same flags."""
    work.mkdir(parents=True, exist_ok=True)

    def launch(ports: list[int]) -> Process:
        grpc_port, http_port = ports
        p = REGISTRY.start(f"{kind}-sidecar", [binary, "sidecar", f"--prometheus.url={prom.url}",
                                               f"--tsdb.path={work / 'none'}", f"--grpc-address=127.0.0.1:{grpc_port}",
                                               f"--http-address=127.0.0.1:{http_port}"], work)
        p.url, p.port = f"http://127.0.0.1:{http_port}", http_port
        p.extra["grpc"] = f"127.0.0.1:{grpc_port}"
        return p

    return start_on_free_ports(2, launch, lambda p: p.wait_http_ready("/-/ready", 60))


def test_sidecar_passes_prometheus_exemplars_on_as_thanos_sidecar(prometheus_factory, prometheus3_bin, pythanos_bin,
                                                                  thanos_bin, tmp_path):
    src = ExemplarSource()
    started: list[Process] = []
    try:
        prom = prometheus_factory(binary=prometheus3_bin, name="prom-sc", extra_args=["--enable-feature=exemplar-storage"],
                                  config_yaml=prom_config(src.address, []).replace(
                                      "global: {scrape_interval: 1s}",
                                      "global: {scrape_interval: 1s, external_labels: {cluster: c1}}"))
        poll(lambda: (src.exemplar_scrapes >= 3, src.exemplar_scrapes), 120, "three scrapes with exemplars")
        src.freeze()
        want_n = 3 * src.exemplar_scrapes
        want = poll(lambda: (sum(len(e) for _, e in normal(exemplars(prom.url, '{__name__=~"demo_.+"}')[1]["data"]))
                             == want_n, normal(exemplars(prom.url, '{__name__=~"demo_.+"}')[1]["data"])), 60,
                    "Prometheus has every exemplar")
        ours = start_sidecar(pythanos_bin, "ours", prom, tmp_path / "ours")
        started.append(ours)
        theirs = start_sidecar(thanos_bin, "thanos", prom, tmp_path / "thanos")
        started.append(theirs)
        tq_ours = start_thanos_query(thanos_bin, [ours.extra["grpc"]], tmp_path / "tq-ours")
        started.append(tq_ours)
        tq_theirs = start_thanos_query(thanos_bin, [theirs.extra["grpc"]], tmp_path / "tq-theirs")
        started.append(tq_theirs)
        oq = start_our_query(pythanos_bin, [ours.extra["grpc"]], tmp_path / "oq")
        started.append(oq)
        for q in ('{__name__=~"demo_.+"}', '{__name__=~"demo_.+", cluster="c1"}', 'demo_requests_total{cluster="c2"}',
                  'sum(rate(demo_requests_total[1m]))'):
            w = exemplars(tq_theirs.url, q)
            assert w[0] == 200, w
            assert exemplars(tq_ours.url, q) == w, q
            assert exemplars(oq.url, q) == w, q
        w = exemplars(tq_theirs.url, '{__name__=~"demo_.+"}')[1]["data"]
        assert w[0]["seriesLabels"]["cluster"] == "c1"
        assert normal(w, drop=("cluster",)) == want
    finally:
        for p in started:
            p.stop()
        src.close()


def rw2(series) -> bytes:
    """As :func:`rw1`, in a remote-write 2.0 request."""
    from pythanos.remote.prompb import write_v2_pb2

    syms: dict[str, int] = {"": 0}

    def refs(labels) -> list[int]:
        return [syms.setdefault(x, len(syms)) for n, v in labels for x in (n, v)]

    r = write_v2_pb2.Request()
    for labels, samples, exs in series:
        ts = r.timeseries.add(labels_refs=refs(labels))
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
        for lbls, v, t in exs:
            ts.exemplars.add(labels_refs=refs(lbls), value=v, timestamp=t)
    r.symbols.extend(syms)
    return r.SerializeToString()


def test_rw2_exemplars_written_header_as_prometheus(prometheus_factory, prometheus3_bin, pythanos_bin, tmp_path):
    """Prometheus' own RW 2.0 receiver (exemplar storage on) and ours: the same statuses and the same
    X-Prometheus-Remote-Write-Exemplars-Written for new, duplicate and out-of-order exemplars."""
    prom = prometheus_factory(binary=prometheus3_bin, name="prom-rw2",
                              extra_args=["--web.enable-remote-write-receiver", "--enable-feature=exemplar-storage"])
    ours = start_rcv(pythanos_bin, "ours", tmp_path / "ours", 100)
    try:
        now = int(time.time() * 1000)
        s = [("__name__", "ex2"), ("a", "1")]
        header = "X-Prometheus-Remote-Write-Exemplars-Written"
        for body in ([(s, [(now, 1.0)], [([("trace_id", "a")], 1.0, now)])],
                     [(s, [(now + 1000, 2.0)], [([("trace_id", "a")], 1.0, now), ([("trace_id", "b")], 2.0, now + 1000)])],
                     [(s, [(now + 2000, 3.0)], [([("trace_id", "c")], 1.0, now - 5)])]):
            b = rw2(body)
            code_p, _, h_p = post(prom.url + "/api/v1/write", b, v2=True)
            code_o, text_o, h_o = post(ours.extra["rw"], b, v2=True)
            assert (code_o, h_o.get(header)) == (code_p, h_p.get(header)), (body, code_p, h_p, code_o, text_o, h_o)
        assert normal(exemplars(prom.url, '{__name__="ex2"}')[1]["data"]) == normal(
            exemplars_via_grpc(ours.extra["grpc"], '{__name__="ex2"}'))
    finally:
        ours.stop()


def exemplars_via_grpc(address: str, query: str) -> list:
    """The receiver's Exemplars API answer as the HTTP API's ``data`` (through our merge and JSON)."""
    import asyncio

    from pythanos.storeapi import exemplars as ex
    from pythanos.storeapi.client import StoreClient
    from pythanos.storeapi.pb import exemplars_pb2

    async def go():
        async with StoreClient(address, timeout=30) as c:
            return await c.exemplars(exemplars_pb2.ExemplarsRequest(query=query, start=0, end=1 << 62))

    return json.loads(ex.to_json(ex.merge([f.data for f in asyncio.run(go()) if f.HasField("data")])))
