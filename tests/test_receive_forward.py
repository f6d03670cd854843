"""The receiver's routing and replication step (``pythanos.receive.forward``).

Compatibility is proven against real ``thanos receive`` v0.42.4 processes as the other members of
the hashring (and as a router doing the same job next to ours): where series go and with which
wire replica, quorum with members stopped, the 503 and 409 texts, a conflict from a real member,
and remote-write 2.0 requests arriving at a Thanos member with their labels and samples. The
quorum rules over every combination of replica answers run in process (our own servicers
answering the statuses a Thanos member answers: that mapping is proven in test_hashring).

The Thanos members run with Thanos' defaults: they forward to our receivers compressed with
snappy (``--receive.grpc-compression=snappy``), which our receiver's gRPC front decodes. Our
forwarder talks to them with its default setting ("snappy") but sends uncompressed, which Thanos
accepts (see pythanos.receive.forward).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import struct
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from peers import REGISTRY, free_ports
from pythanos.receive import hashring as hr
from pythanos.receive.forward import (ForwardResult, Forwarder, LocalResult, endpoint_text, error_set_text,
                                      local_outcome)
from pythanos.remote.prompb import remote_pb2, types_pb2, write_v2_pb2
from pythanos.remote.write import decode_v1, decode_v2
from pythanos.remote.write import decode_thanos_write
from pythanos.remote.write import timeseries_frames as series_frames
from pythanos.storeapi import writeapi
from pythanos.storeapi.client import StoreClient
from pythanos.storeapi.pb import write_pb2
from pythanos.tsdb.chunkenc import decode_xor
from pythanos.tsdb.labels import Matcher
from test_hashring import Receiver, held_series, post_rw, series_labels, start_receivers, stop_all
import test_tls_grpc
from test_tls_grpc import server_flags

ALL = [Matcher("=~", "__name__", ".+")]
certs = test_tls_grpc.certs  # the fixture of test certificates (CA, server, client)


# ------------------------------------------------------------------------------------------ helpers

def v1_body(n: int, ts_ms: int, first: int = 0, labels=series_labels) -> bytes:
    req = remote_pb2.WriteRequest()
    for i in range(first, first + n):
        s = req.timeseries.add()
        for k, v in labels(i):
            s.labels.add(name=k, value=v)
        s.samples.add(value=float(i), timestamp=ts_ms)
    return req.SerializeToString()


def v2_body(series) -> bytes:
    """series: (labels in the sender's order, [(t, v)], histograms, exemplars [(labels, v, t)])."""
    syms: dict[str, int] = {"": 0}

    def ref(s: str) -> int:
        return syms.setdefault(s, len(syms))

    r = write_v2_pb2.Request()
    for labels, samples, hists, exs in series:
        ts = r.timeseries.add()
        for n, v in labels:
            ts.labels_refs.extend([ref(n), ref(v)])
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
        for h in hists:
            ts.histograms.add().CopyFrom(h)
        for lbs, v, t in exs:
            e = ts.exemplars.add(value=v, timestamp=t)
            for n, lv in lbs:
                e.labels_refs.extend([ref(n), ref(lv)])
    r.symbols.extend(syms)
    return r.SerializeToString()


class Local:
    """The ``local_write`` callback: records what it was given, answers what the test says."""

    def __init__(self, answer: Optional[LocalResult] = None) -> None:
        self.calls: list[tuple[str, list[int], int]] = []
        self.answer = answer

    async def __call__(self, tenant: str, decoded, positions: np.ndarray, replica: int) -> LocalResult:
        self.calls.append((tenant, positions.tolist(), replica))
        return self.answer or LocalResult(samples_written=len(positions))


class Servicer:
    """An in-process WriteableStore answering with a fixed gRPC status (None: success)."""

    def __init__(self, code: Optional[grpc.StatusCode] = None, details: str = "") -> None:
        self.code, self.details = code, details
        self.requests: list[write_pb2.WriteRequest] = []
        self.server: Optional[grpc.aio.Server] = None
        self.address = ""

    async def handle(self, req: write_pb2.WriteRequest) -> None:
        self.requests.append(req)
        if self.code is not None:
            exc = {grpc.StatusCode.ALREADY_EXISTS: writeapi.WriteConflict,
                   grpc.StatusCode.UNAVAILABLE: writeapi.WriteUnavailable}.get(self.code, writeapi.WriteError)
            raise exc(self.details)

    async def start(self, port: int = 0) -> "Servicer":
        """grpcio behind the gRPC front, as a receiver listens (Thanos routers send snappy)."""
        from pythanos.server.grpcfront import GrpcFront
        from pythanos.storeapi.service import MAX_MSG_SIZE

        async def raw(body: bytes) -> None:
            await self.handle(write_pb2.WriteRequest.FromString(body))

        self.front = GrpcFront(writeapi.writeable_front(raw), max_recv=MAX_MSG_SIZE)
        self.server = grpc.aio.server()
        writeapi.add_writeable_servicer(self.server, self.handle)
        self.server.add_insecure_port("unix:" + self.front.upstream)
        await self.server.start()
        port = await self.front.start(f"127.0.0.1:{port}")
        self.address = f"127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        await asyncio.gather(self.server.stop(None), self.front.close(0))

    def held(self) -> dict[tuple[str, int], set[int]]:
        out: dict[tuple[str, int], set[int]] = {}
        for r in self.requests:
            for ts in r.timeseries:
                idx = int({lb.name: lb.value for lb in ts.labels}["idx"])
                out.setdefault((self.address, r.replica), set()).add(idx)
        return out


def ring_of(addrs, alg: str = "hashmod", rf: int = 1) -> hr.MultiHashring:
    return hr.new_multi_hashring(hr.parse_hashrings(json.dumps([{"endpoints": list(addrs)}])), alg, rf)


def assigned(ring: hr.MultiHashring, tenant: str, idxs, rf: int,
             labels=series_labels) -> dict[tuple[str, int], set[int]]:
    """(endpoint address, wire replica) -> series idx, as our hashring (proven equal to Thanos') says."""
    idxs = list(idxs)
    hashes = hr.series_hashes(tenant, (labels(i) for i in idxs))
    r, idx = ring.route(tenant, hashes, rf)
    out: dict[tuple[str, int], set[int]] = {}
    for s, row in zip(idxs, idx.tolist()):
        for n, e in enumerate(row):
            out.setdefault((r.endpoints[e].address, n + 1), set()).add(s)
    return out


async def until(cond, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def start_members(thanos_bin: str, work: Path, n: int, rf: int, extra_endpoints=()) -> tuple[list[Receiver], list[str]]:
    """``n`` Thanos router+ingestors whose hashring file also names ``extra_endpoints`` (ours)."""
    rs = start_receivers(thanos_bin, work, n, lambda a: [{"endpoints": list(extra_endpoints) + a}], rf=rf)
    return rs, list(extra_endpoints) + [r.grpc for r in rs]


def start_router(thanos_bin: str, work: Path, addrs, rf: int, name: str = "thanos-router",
                 alg: str = "hashmod") -> Receiver:
    """A real Thanos router-only receiver over ``addrs``."""
    hfile = work / f"{name}.json"
    hfile.write_text(json.dumps([{"endpoints": list(addrs), "algorithm": alg}]))
    g, h, w, c = free_ports(4)
    p = REGISTRY.start(name, [
        thanos_bin, "receive", f"--tsdb.path={work / name}", f"--grpc-address=127.0.0.1:{g}",
        f"--http-address=127.0.0.1:{h}", f"--remote-write.address=127.0.0.1:{w}",
        f"--receive.hashrings-file={hfile}", f"--receive.replication-factor={rf}",
        f"--receive.capnproto-address=127.0.0.1:{c}",
        f'--label=receive="{name}"'], work / "logs")
    p.url = f"http://127.0.0.1:{h}"
    p.wait_http_ready(timeout=90)
    return Receiver(p, f"127.0.0.1:{g}", p.url, f"http://127.0.0.1:{w}")


def post_body(url: str, raw: bytes, tenant: str) -> tuple[int, str]:
    import cramjam
    return post_rw(url, bytes(cramjam.snappy.compress_raw(raw)), tenant)


# ------------------------------------------------------------------------------------------ frames

def test_v1_frames_are_the_senders_bytes():
    raw = v1_body(50, 1234)
    d = decode_v1(raw, "t")
    pos = np.array([7, 3, 41, 0], np.int64)
    frames = series_frames(d, pos)
    want = remote_pb2.WriteRequest.FromString(raw).timeseries
    got = write_pb2.WriteRequest.FromString(frames + b"\x12\x01t\x18\x02")
    assert [ts.SerializeToString() for ts in got.timeseries] == [want[i].SerializeToString() for i in pos]
    assert got.tenant == "t" and got.replica == 2
    # the frames are the body's own bytes, tag and length included
    for i in pos:
        off, n = d.series_ranges[i]
        assert bytes(d.body[off:off + n]) in frames
    assert series_frames(d, np.zeros(0, np.int64)) == b""


def _hist(t: int, float_kind: bool = False) -> write_v2_pb2.Histogram:
    h = write_v2_pb2.Histogram(sum=12.5, schema=1, zero_threshold=1e-3, timestamp=t, reset_hint=2,
                               start_timestamp=t - 5)
    if float_kind:
        h.count_float, h.zero_count_float = 7.0, 1.0
        h.positive_counts.extend([2.0, 4.0])
    else:
        h.count_int, h.zero_count_int = 7, 1
        h.positive_deltas.extend([2, 2])
    h.positive_spans.add(offset=0, length=2)
    return h


def test_v2_frames_equal_upbs_encoding_of_the_canonical_series():
    odd_values = [0.0, -0.0, 1.5, float("nan"), struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]]
    series = [
        ([("__name__", "up"), ("job", "a")], [(0, 0.0), (-5, 1.0), (1 << 40, 2.5)], [], []),
        ([("job", "b"), ("__name__", "up"), ("empty", "")], [(10 + k, v) for k, v in enumerate(odd_values)], [], []),
        ([("__name__", "h"), ("x", "é")], [], [_hist(100), _hist(200, True)], []),
        ([("__name__", "e")], [(300, 3.0)], [], [([("trace_id", "abc")], 9.0, 300)]),
        ([("__name__", "he")], [(400, 4.0)], [_hist(400, True)], [([("trace_id", "def")], 8.0, 400)]),
    ]
    d = decode_v2(v2_body(series), "t")
    pos = np.arange(len(series), dtype=np.int64)
    got = remote_pb2.WriteRequest.FromString(series_frames(d, pos)).timeseries
    assert len(got) == 5
    by_labels = {tuple((lb.name, lb.value) for lb in ts.labels): ts for ts in got}
    for labels, samples, hists, exs in series:
        want = types_pb2.TimeSeries()
        for n, v in sorted((n, v) for n, v in labels if v):
            want.labels.add(name=n, value=v)
        for t, v in samples:
            want.samples.add(timestamp=t, value=v)
        for lbs, v, t in exs:
            e = want.exemplars.add(value=v, timestamp=t)
            for n, lv in lbs:
                e.labels.add(name=n, value=lv)
        for h in hists:
            w = types_pb2.Histogram.FromString(h.SerializeToString())  # fields 1-16 are shared
            w.DiscardUnknownFields()  # 2.0's start_timestamp (17) has no place in 1.0
            want.histograms.append(w)
        ts = by_labels[tuple((lb.name, lb.value) for lb in want.labels)]
        assert [(lb.name, lb.value) for lb in ts.labels] == [(lb.name, lb.value) for lb in want.labels]
        assert [(s.timestamp, struct.pack("<d", s.value)) for s in ts.samples] == \
            [(s.timestamp, struct.pack("<d", s.value)) for s in want.samples]  # NaN payloads and -0.0 kept
        assert list(ts.histograms) == list(want.histograms)
        assert list(ts.exemplars) == list(want.exemplars)
        # the kernel's bytes are upb's: labels, samples, exemplars, histograms field by field
        one = decode_v2(v2_body([(labels, samples, hists, exs)]), "t")
        assert series_frames(one, np.array([0])) == writeapi.frame_timeseries([want])
    # an exemplar whose label refs do not resolve is left out (Prometheus refuses it, keeps the rest)
    r = write_v2_pb2.Request.FromString(v2_body(series[3:4]))
    bad = r.timeseries[0].exemplars.add(value=2.0, timestamp=301)
    bad.labels_refs.extend([1, 999])
    odd = r.timeseries[0].exemplars.add(value=3.0, timestamp=302)
    odd.labels_refs.extend([1])
    d3 = decode_v2(r.SerializeToString(), "t")
    assert d3.status[0] == 0 and d3.n_exemplars[0] == 3
    ts = remote_pb2.WriteRequest.FromString(series_frames(d3, np.array([0]))).timeseries[0]
    assert [(e.value, [(lb.name, lb.value) for lb in e.labels]) for e in ts.exemplars] == [(9.0, [("trace_id", "abc")])]


def test_v2_routing_hash_is_over_the_forwarded_labels():
    """A 2.0 series the sender did not sort (or with an empty value) is forwarded with its
    canonical labels, so it is routed by their hash: the hash a Thanos member computes."""
    series = [([("job", "b"), ("__name__", "up")], [(1, 1.0)], [], []),
              ([("__name__", "up"), ("e", ""), ("job", "c")], [(1, 1.0)], [], []),
              ([("__name__", "up"), ("job", "d")], [(1, 1.0)], [], [])]
    d = decode_v2(v2_body(series), "ten")
    f = Forwarder(lambda: None, "", local_write=Local(), registry=CollectorRegistry())
    got = f._hashes("ten", d, np.arange(3))
    want = [hr.series_hash("ten", sorted((n, v) for n, v in ls if v)) for ls, *_ in series]
    assert got.tolist() == want
    assert int(d.hashes[2]) == want[2] and int(d.hashes[0]) != want[0]


@pytest.mark.parametrize("n,endpoints,reps", [(1, 1, (0,)), (2000, 6, (0, 1, 2)), (500, 200, (0, 1)),
                                               (300, 40000, (0, 1, 2)), (50, 3, (2, 0))])
def test_split_by_endpoint_equals_a_model(n, endpoints, reps):
    rng = np.random.default_rng(n)
    idx = rng.integers(0, endpoints, size=(n, len(reps)), dtype=np.int64)
    model: dict[tuple[int, int], list[int]] = {}
    for i in range(n):
        for j, rep in enumerate(reps):
            model.setdefault((int(idx[i, j]), rep), []).append(i)
    got = hr.split_by_endpoint(idx, reps)
    assert [(e, rep) for e, rep, _ in got] == sorted(model)
    assert all(ids.tolist() == model[(e, rep)] for e, rep, ids in got)


def test_local_result_texts_are_thanos_writer_texts():
    assert LocalResult().ok and LocalResult().text() == ""
    r = LocalResult(samples_out_of_order=3, samples_duplicate=1, exemplars_label_length=2)
    assert r.conflict and r.text() == (
        "3 errors: add 1 samples: duplicate sample for timestamp; add 2 exemplars: label length for exemplar "
        "exceeds maximum of 128 UTF-8 characters; add 3 samples: out of order sample")
    assert LocalResult(labels_empty=1).text() == "add 1 series: label set contains a label with empty name or value"
    assert LocalResult(not_ready=True).text() == "TSDB not ready"
    assert LocalResult(samples_too_old=1, error="commit samples: disk full").kind() == 1  # conflict wins, as Thanos
    assert error_set_text(["b", "a", "b"]) == "2 errors: a; b" and error_set_text(["x"]) == "x"
    # any result object with Thanos' texts in ``errors`` (the receiver's writer) reads the same way
    assert local_outcome(SimpleNamespace(errors=["add 1 samples: out of order sample"])) == (
        1, "add 1 samples: out of order sample")
    assert local_outcome(SimpleNamespace(errors=[])) == (0, "")
    assert local_outcome(SimpleNamespace(errors=[], error="get tenant appendable: boom")) == (
        4, "get tenant appendable: boom")
    assert local_outcome(SimpleNamespace(errors=[], not_ready=True)) == (3, "TSDB not ready")


# ------------------------------------------------------------------------------------------ quorum rules

def our_rule(answers: tuple[str, ...], quorum: int) -> int:
    s, c = answers.count("S"), answers.count("C")
    return 200 if s >= quorum else 409 if s + c >= quorum else 503


def thanos_rule(answers: tuple[str, ...], quorum: int) -> int:
    """Thanos v0.42.4's answer for one series (fanoutForward + replicationErrors.Cause), where it
    is defined (RF 2 and 3)."""
    s, c = answers.count("S"), answers.count("C")
    n = len(answers)
    fail_threshold = n - quorum + 1
    if s >= quorum:
        return 200
    if c >= fail_threshold:
        return 409
    failures = n - s
    if failures < fail_threshold:
        return 200
    unavailable = answers.count("U")
    counts = [("C", c), ("N", unavailable), ("U", unavailable)]  # gRPC Unavailable is both not-ready and unavailable
    counts.sort(key=lambda x: -x[1])  # stable for ties: conflict first, as Go's insertion sort leaves them
    if counts[0][1] >= quorum:
        return 409 if counts[0][0] == "C" else 503
    return 503


@pytest.mark.parametrize("rf", [2, 3])
def test_quorum_rules_over_every_combination_of_answers(rf):
    """Every combination of replica answers (Success, Conflict, Unavailable, Internal error) for
    RF 2 and 3, through real gRPC calls to in-process servicers: our answer is Thanos' except
    where a conflict completes the quorum (thanos-io/thanos#8727), where we answer 409 for its 503."""
    codes = {"S": None, "C": grpc.StatusCode.ALREADY_EXISTS, "U": grpc.StatusCode.UNAVAILABLE,
             "I": grpc.StatusCode.INTERNAL}

    async def main():
        differ = []
        svcs = [await Servicer().start() for _ in range(rf)]
        try:
            ring = ring_of([s.address for s in svcs], rf=rf)
            eps = {e.address: e for e in ring.rings[0].endpoints}
            d = decode_v1(v1_body(4, 1000), "t")
            for answers in itertools.product("SCUI", repeat=rf):
                for s, a in zip(svcs, answers):
                    s.code, s.details = codes[a], f"answer {a}"
                f = Forwarder(lambda: ring, "", rf, hr.ROUTER_ONLY, local_write=Local(), registry=CollectorRegistry())
                res = await f.forward("t", d)
                await f.close()
                want = our_rule(answers, hr.write_quorum(rf))
                assert res.status == want, (answers, res)
                if want != 200:
                    failed = sorted({f"forwarding request to endpoint {endpoint_text(eps[svcs[k].address])}: "
                                     f"rpc error: code = {dict(C='AlreadyExists', U='Unavailable', I='Internal')[a]} "
                                     f"desc = answer {a}" for k, a in enumerate(answers) if a != "S"})
                    # early answers may leave out writes still running; every reason given is a real one
                    assert set(re.split(r"; (?=forwarding)", re.sub(r"^\d+ errors: ", "", res.message))) <= set(failed)
                if thanos_rule(answers, hr.write_quorum(rf)) != want:
                    differ.append(answers)
        finally:
            for s in svcs:
                await s.stop()
        return differ

    differ = asyncio.run(main())
    # the only departures (RF 3): a success and a conflict completing the quorum, the third replica failed
    if rf == 2:
        assert differ == []
    if rf == 3:
        assert sorted(differ) == sorted(set(itertools.chain.from_iterable(
            itertools.permutations(("S", "C", x)) for x in "UI")))
    assert all(our_rule(a, hr.write_quorum(rf)) == 409 and thanos_rule(a, hr.write_quorum(rf)) == 503 for a in differ)


def test_modes_replicas_and_bad_replica_in_process():
    async def main():
        svcs = [await Servicer().start() for _ in range(2)]
        try:
            me = "127.0.0.1:1"  # never dialled: it is this receiver
            addrs = [me] + [s.address for s in svcs]
            ring = ring_of(addrs, rf=2)
            d = decode_v1(v1_body(60, 1000), "t")
            want = assigned(ring, "t", range(60), 2)
            local = Local()
            f = Forwarder(lambda: ring, me, 2, hr.ROUTER_INGESTOR, local_write=local, registry=CollectorRegistry())
            assert (await f.forward("t", d)).status == 200
            await until(lambda: sum(len(r.timeseries) for s in svcs for r in s.requests) ==
                        sum(len(v) for (a, _), v in want.items() if a != me), what="the forwards")
            got = {k: v for s in svcs for k, v in s.held().items()}
            assert got == {k: v for k, v in want.items() if k[0] != me}
            assert {(me, rep + 1): set(pos) for _, pos, rep in local.calls} == {k: v for k, v in want.items()
                                                                                 if k[0] == me}
            # an already replicated request (wire replica 2): placed at replica 1 only, quorum 1
            for s in svcs:
                s.requests.clear()
            local.calls.clear()
            assert (await f.forward("t", d, 2)).status == 200
            rep1 = {k: v for k, v in want.items() if k[1] == 2}
            await until(lambda: sum(len(r.timeseries) for s in svcs for r in s.requests) ==
                        sum(len(v) for (a, _), v in rep1.items() if a != me), what="the replica-2 forwards")
            assert {k: v for s in svcs for k, v in s.held().items()} == {k: v for k, v in rep1.items() if k[0] != me}
            assert all(rep == 1 for _, _, rep in local.calls)
            # a replica number above the replication factor
            res = await f.forward("t", d, 3)
            assert (res.status, res.message) == (400, "request replica exceeds receiver replication factor")
            assert res.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
            await f.close()
            # router-only: never local, the replica header ignored (acyclic topologies)
            local2 = Local()
            r2 = Forwarder(lambda: ring_of([s.address for s in svcs], rf=2), "", 2, hr.ROUTER_ONLY, local_write=local2,
                           registry=CollectorRegistry())
            assert (await r2.forward("t", d, 7)).status == 200 and local2.calls == []
            await r2.close()
            # ingestor-only: no hashring, everything local once, the replica header ignored
            local3 = Local(LocalResult(samples_out_of_order=2, samples_written=58))
            i3 = Forwarder(lambda: None, "", 1, hr.INGESTOR_ONLY, local_write=local3, registry=CollectorRegistry())
            res = await i3.forward("t", d, 5)
            assert local3.calls == [("t", list(range(60)), 0)]
            assert res.samples_written == 58  # what the partly refused local write stored
            assert (res.status, res.message) == (409, "forwarding request to endpoint addr: , capnp_addr: , az: : "
                                                       "writing locally: add 2 samples: out of order sample")
            res = await i3.ingest("t", d)
            assert (res.status, res.message, res.grpc_code) == (409, "add 2 samples: out of order sample",
                                                                grpc.StatusCode.ALREADY_EXISTS)
            assert res.samples_written == 58
            local3.answer = LocalResult(not_ready=True)
            assert (await i3.ingest("t", d)).status == 503
            # no hashring yet in a routing receiver: not ready
            nr = Forwarder(lambda: None, me, 1, local_write=Local(), registry=CollectorRegistry())
            assert (await nr.forward("t", d)).status == 503
        finally:
            for s in svcs:
                await s.stop()

    asyncio.run(main())


def test_backoff_hashring_replacement_and_metrics_in_process():
    """An endpoint answering Unavailable is backed off as Thanos does (writes fail at once with its
    text, nothing is sent), a success or a new hashring lets it back in; metrics keep Thanos' names."""
    async def main():
        down = await Servicer(grpc.StatusCode.UNAVAILABLE, "shutting down").start()
        now = [1000.0]
        reg = CollectorRegistry()
        ring = ring_of([down.address])
        current = [ring]
        f = Forwarder(lambda: current[0], "", 1, hr.ROUTER_ONLY, local_write=Local(), registry=reg,
                      clock=lambda: now[0], forward_timeout=30)
        d = decode_v1(v1_body(5, 1000), "t")
        ep = ring.rings[0].endpoints[0]
        try:
            res = await f.forward("t", d)
            assert res.status == 503 and res.message == (f"forwarding request to endpoint {endpoint_text(ep)}: "
                                                         "rpc error: code = Unavailable desc = shutting down")
            res = await f.forward("t", d)  # the clock has not moved: still backing off
            assert res.status == 503 and res.message == (f"backing off forward request for endpoint "
                                                         f"{{{{{ep.address} {ep.capnproto_address} }} 0}}: "
                                                         "target not available")
            assert len(down.requests) == 1
            now[0] += 0.11  # past the first backoff (100 ms)
            down.code = None
            assert (await f.forward("t", d)).status == 200 and len(down.requests) == 2
            down.code = grpc.StatusCode.UNAVAILABLE
            assert (await f.forward("t", d)).status == 503
            assert (await f.forward("t", d)).message.startswith("backing off")
            current[0] = ring_of([down.address])  # a new hashring (same members): backoffs forgotten
            down.code = None
            assert (await f.forward("t", d)).status == 200 and len(down.requests) == 4
            other = await Servicer().start()
            current[0] = ring_of([other.address])  # the old member left: its channel is closed
            assert (await f.forward("t", d)).status == 200 and len(other.requests) == 1
            assert list(f._channels) == [ring_of([other.address]).rings[0].endpoints[0]]
            await other.stop()
            assert reg.get_sample_value("thanos_receive_forward_requests_total", {"result": "success"}) == 3
            assert reg.get_sample_value("thanos_receive_forward_requests_total", {"result": "error"}) == 2
            assert reg.get_sample_value("thanos_receive_replications_total", {"result": "error"}) == 2
            assert reg.get_sample_value("thanos_receive_replication_factor") == 1
            assert reg.get_sample_value("thanos_receive_forward_delay_seconds_count", {"worker": down.address}) == 4
        finally:
            await f.close()
            await down.stop()

    asyncio.run(main())


def test_large_parts_are_built_off_the_loop_and_arrive_whole():
    n = 6000

    async def main():
        svc = await Servicer().start()
        try:
            f = Forwarder(lambda: ring_of([svc.address]), "", 1, hr.ROUTER_ONLY, local_write=Local(),
                          registry=CollectorRegistry())
            for d in (decode_v1(v1_body(n, 5), "t"),
                      decode_v2(v2_body([(series_labels(i), [(5, float(i))], [], []) for i in range(n)]), "t")):
                svc.requests.clear()
                assert (await f.forward("t", d)).status == 200
                await until(lambda: len(svc.requests) == 1, what="the forward")
                assert svc.held() == {(svc.address, 1): set(range(n))}
            await f.close()
        finally:
            await svc.stop()

    asyncio.run(main())


class Gated(Servicer):
    """Holds every request until ``gate`` is set; records how many it held at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.inflight = self.most = 0

    async def handle(self, req: write_pb2.WriteRequest) -> None:
        self.requests.append(req)
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        try:
            await self.gate.wait()
        finally:
            self.inflight -= 1


def test_forwards_to_one_peer_are_limited_to_its_workers():
    """Thanos' per-peer worker pool (--receive.forward.async-workers): with 2 workers, 5 requests
    to one member never have more than 2 writes in flight there; the rest wait their turn."""
    async def main():
        svc = await Gated().start()
        ring = ring_of([svc.address])
        f = Forwarder(lambda: ring, "", 1, hr.ROUTER_ONLY, local_write=Local(), registry=CollectorRegistry(),
                      forward_workers=2, forward_timeout=60)
        d = decode_v1(v1_body(3, 1000), "t")
        try:
            calls = [asyncio.ensure_future(f.forward("t", d)) for _ in range(5)]
            ep = ring.rings[0].endpoints[0]
            await until(lambda: svc.inflight == 2 and ep in f._workers and len(f._workers[ep]._waiters or ()) == 3,
                        what="two writes in flight and three waiting")
            svc.gate.set()
            assert [r.status for r in await asyncio.gather(*calls)] == [200] * 5
            assert svc.most == 2 and len(svc.requests) == 5
        finally:
            await f.close()
            await svc.stop()

    asyncio.run(main())


class Hanging(Servicer):
    """Never answers (a member that accepted the connection and stalls)."""

    async def handle(self, req: write_pb2.WriteRequest) -> None:
        self.requests.append(req)
        await asyncio.Event().wait()


def test_timeouts_and_local_failures_in_process():
    """A stalled member counts as failed when the forward timeout ends, with the gRPC deadline
    text; what the others answered decides (a conflict still completes the quorum). A local write
    that raises is a failed replica with its text."""
    async def main():
        ok, hang = Servicer(), Hanging()
        conflict = Servicer(grpc.StatusCode.ALREADY_EXISTS, "add 1 samples: out of bounds")
        for s in (ok, conflict, hang):
            await s.start()
        d = decode_v1(v1_body(5, 1000), "t")
        try:
            ok2 = await Servicer().start()
            for members, want in (((ok, conflict, hang), 409), ((ok, ok2, hang), 200)):
                ring = ring_of([m.address for m in members], rf=3)
                f = Forwarder(lambda: ring, "", 3, hr.ROUTER_ONLY, local_write=Local(), registry=CollectorRegistry(),
                              forward_timeout=0.5)
                res = await f.forward("t", d)
                await f.close()
                assert res.status == want, res
                if want == 409:
                    assert "rpc error: code = DeadlineExceeded desc = " in res.message
                    assert "rpc error: code = AlreadyExists desc = add 1 samples: out of bounds" in res.message
            await ok2.stop()
            # one success and two stalled members: short of the quorum
            hang2 = await Hanging().start()
            ring = ring_of([ok.address, hang.address, hang2.address], rf=3)
            f = Forwarder(lambda: ring, "", 3, hr.ROUTER_ONLY, local_write=Local(), registry=CollectorRegistry(),
                          forward_timeout=0.5)
            res = await f.forward("t", d)
            await f.close()
            await hang2.stop()
            assert res.status == 503 and res.message.count("DeadlineExceeded") == 2, res

            async def boom(tenant, decoded, positions, replica):
                raise OSError("disk on fire")
            me = "127.0.0.1:1"
            ring = ring_of([me, ok.address], rf=2)
            f = Forwarder(lambda: ring, me, 2, local_write=boom, registry=CollectorRegistry())
            res = await f.forward("t", d)  # the other replica succeeds: quorum 1
            assert res.status == 200
            ring1 = ring_of([me], rf=1)
            f1 = Forwarder(lambda: ring1, me, 1, local_write=boom, registry=CollectorRegistry())
            res = await f1.forward("t", d)
            assert (res.status, res.message) == (503, "forwarding request to endpoint addr: 127.0.0.1:1, capnp_addr: "
                                                      "127.0.0.1:19391, az: : writing locally: disk on fire")
            for x in (f, f1):
                await x.close()
        finally:
            for s in (ok, conflict, hang):
                await s.stop()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------ real Thanos


@pytest.mark.parametrize("alg", ["hashmod", "ketama"])
def test_routing_and_wire_replicas_equal_a_thanos_routers(alg, thanos_bin, tmp_path):
    """The same request through a real Thanos router-only receiver and through ours (RF 2, three
    of our servicers as the ring): each servicer gets the same series with the same wire replica,
    one request per (endpoint, replica), and ours forwards the sender's TimeSeries bytes."""
    n, tenant = 300, "route-tenant"

    async def main():
        svcs = [await Servicer().start(p) for p in free_ports(3)]
        addrs = [s.address for s in svcs]
        rings = [{"endpoints": addrs, "algorithm": alg}]
        router = await asyncio.to_thread(start_router, thanos_bin, tmp_path, addrs, 2, "thanos-router", alg)
        try:
            raw = v1_body(n, int(time.time() * 1000))
            code, text = await asyncio.to_thread(post_body, router.rw, raw, tenant)
            assert code == 200, text
            await until(lambda: sum(len(r.timeseries) for s in svcs for r in s.requests) == 2 * n, what="Thanos")
            thanos_got = {k: v for s in svcs for k, v in s.held().items()}
            thanos_reqs = sorted((s.address, r.replica) for s in svcs for r in s.requests)
            for s in svcs:
                s.requests.clear()
            ring = hr.new_multi_hashring(hr.parse_hashrings(json.dumps(rings)), "hashmod", 2)
            f = Forwarder(lambda: ring, "", 2, hr.ROUTER_ONLY, local_write=Local(), registry=CollectorRegistry())
            d = decode_v1(raw, tenant)
            assert (await f.forward(tenant, d)).status == 200
            await until(lambda: sum(len(r.timeseries) for s in svcs for r in s.requests) == 2 * n, what="ours")
            ours = {k: v for s in svcs for k, v in s.held().items()}
            assert ours == thanos_got == assigned(ring, tenant, range(n), 2)
            assert sorted((s.address, r.replica) for s in svcs for r in s.requests) == thanos_reqs
            orig = {ts.SerializeToString() for ts in remote_pb2.WriteRequest.FromString(raw).timeseries}
            assert all(ts.SerializeToString() in orig and r.tenant == tenant
                       for s in svcs for r in s.requests for ts in r.timeseries)
            await f.close()
        finally:
            router.p.stop()
            for s in svcs:
                await s.stop()

    asyncio.run(main())


async def held_eventually(addr: str, want: set[int], timeout: float = 30.0) -> set[int]:
    """A member's series idx once they equal ``want`` (writes beyond the quorum finish later)."""
    deadline = time.monotonic() + timeout
    held = await held_series(addr)
    while held != want and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        held = await held_series(addr)
    return held


@pytest.mark.parametrize("rf", [2, 3])
def test_quorum_with_a_stopped_thanos_member(rf, thanos_bin, tmp_path):
    """Our receiver (router+ingestor) and two real Thanos members in one ring: everything is where
    the hashring says; with one member stopped, writes still succeed by quorum."""
    tenant = "quorum-tenant"
    me = f"127.0.0.1:{free_ports(1)[0]}"  # our endpoint in the ring; nothing is forwarded to it
    rs, addrs = start_members(thanos_bin, tmp_path, 2, rf, extra_endpoints=[me])
    try:
        ring = ring_of(addrs, rf=rf)

        async def main():
            local = Local()
            reg = CollectorRegistry()
            f = Forwarder(lambda: ring, me, rf, local_write=local, registry=reg)  # grpc_compression: default snappy
            now = int(time.time() * 1000)
            res = await f.forward(tenant, decode_v1(v1_body(120, now), tenant))
            assert (res.status, res.message, res.failed) == (200, "", 0)
            want = assigned(ring, tenant, range(120), rf)
            for r in rs:
                mine = set().union(*(v for (a, _), v in want.items() if a == r.grpc))
                assert await held_eventually(r.grpc, mine) == mine
            assert set().union(*(set(p) for _, p, _ in local.calls)) == set().union(
                *(v for (a, _), v in want.items() if a == me))
            rs[1].p.stop()
            res = await f.forward(tenant, decode_v1(v1_body(120, now + 1000, first=1000), tenant))
            assert (res.status, res.message, res.failed, res.conflicts) == (200, "", 0, 0), res
            assert res.samples_written == 120
            want2 = assigned(ring, tenant, range(1000, 1120), rf)
            mine = set().union(*(v for (a, _), v in want.items() if a == rs[0].grpc),
                               *(v for (a, _), v in want2.items() if a == rs[0].grpc))
            assert await held_eventually(rs[0].grpc, mine) == mine
            assert reg.get_sample_value("thanos_receive_forward_requests_total", {"result": "success"}) > 0
            await f.close()

        asyncio.run(main())
    finally:
        stop_all(rs)


def _entries(message: str) -> list[str]:
    """A 503 text's per-endpoint errors with the peer library's own description masked."""
    body = re.sub(r"^\d+ errors: ", "", message.strip())
    parts = re.split(r"; (?=forwarding request to endpoint |backing off forward request )", body)
    return sorted(re.sub(r"desc = .*", "desc = <peer>", p) for p in parts)


def test_all_members_down_answers_503_with_thanos_text(thanos_bin, tmp_path):
    """Every member down: 503, one error per endpoint, in Thanos' words (the gRPC library's own
    description of the refused connection masked: Go's and grpcio's differ)."""
    dead = [f"127.0.0.1:{p}" for p in free_ports(2)]
    router = start_router(thanos_bin, tmp_path, dead, 1)
    try:
        raw = v1_body(40, int(time.time() * 1000))
        code, thanos_text = post_body(router.rw, raw, "t")
        assert code == 503, thanos_text

        async def main():
            f = Forwarder(lambda: ring_of(dead), "", 1, hr.ROUTER_ONLY, local_write=Local(),
                          registry=CollectorRegistry())
            res = await f.forward("t", decode_v1(raw, "t"))
            await f.close()
            return res
        res = asyncio.run(main())
        assert res.status == 503 and res.grpc_code == grpc.StatusCode.UNAVAILABLE
        assert _entries(res.message) == _entries(thanos_text), (res.message, thanos_text)
        assert res.message.startswith("2 errors: forwarding request to endpoint addr: 127.0.0.1:")
    finally:
        router.p.stop()


def test_conflict_from_a_thanos_member_answers_409_with_thanos_text(thanos_bin, tmp_path):
    """An old sample for a series a real member holds: 409, and the text a real Thanos router
    gives for the same write, byte for byte."""
    rs, addrs = start_members(thanos_bin, tmp_path, 1, 1)
    router = start_router(thanos_bin, tmp_path, addrs, 1)
    try:
        now = int(time.time() * 1000)
        tenant = "conflict-tenant"

        async def write(ts_ms: int) -> ForwardResult:
            f = Forwarder(lambda: ring_of(addrs), "", 1, hr.ROUTER_ONLY, local_write=Local(),
                          registry=CollectorRegistry())
            res = await f.forward(tenant, decode_v1(v1_body(3, ts_ms), tenant))
            await f.close()
            return res
        assert asyncio.run(write(now)).status == 200
        res = asyncio.run(write(now - 60_000))
        code, thanos_text = post_body(router.rw, v1_body(3, now - 30_000), tenant)
        assert (code, res.status) == (409, 409)
        assert res.message == thanos_text.rstrip("\n")
        assert res.message.endswith(": writing locally: add 3 samples: out of order sample")
        assert "rpc error: code = AlreadyExists desc = forwarding request to endpoint" in res.message
        assert res.grpc_code == grpc.StatusCode.ALREADY_EXISTS and res.conflicts == 3
    finally:
        router.p.stop()
        stop_all(rs)


def test_rolling_restart_rf3_answers_409_never_503(thanos_bin, tmp_path):
    """thanos-io/thanos#8727: RF 3, three real Thanos members, one stopped (a rolling restart).
    (a) Both live members answer conflict: 409, as Thanos v0.42.4 answers.
    (b) One live member has the sample (conflict), the other takes it (success): the data is at
    two replicas, the quorum; we answer 409, a real Thanos router answers 503 (and Prometheus
    would retry that batch until the member is back)."""
    rs, addrs = start_members(thanos_bin, tmp_path, 3, 3)
    router = start_router(thanos_bin, tmp_path, addrs, 3)
    ring = ring_of(addrs, rf=3)
    tenant = "restart-tenant"
    now = int(time.time() * 1000)

    def labels(i: int):
        return [("__name__", "restart_test"), ("idx", str(i))]

    try:
        async def main():
            f = Forwarder(lambda: ring, "", 3, hr.ROUTER_ONLY, local_write=Local(), registry=CollectorRegistry())
            d = decode_v1(v1_body(1, now, 0, labels), tenant)
            assert (await f.forward(tenant, d)).status == 200  # series 0 at all three members
            for r in rs:
                assert await held_eventually(r.grpc, {0}) == {0}
            # series 1 and 2 at the first member only: sent with the replica number it holds them at
            for i in (1, 2):
                rep = next(n for n in range(3) if ring.get_n(tenant, hr.series_hash(tenant, labels(i)), n).address
                           == rs[0].grpc)
                async with grpc.aio.insecure_channel(rs[0].grpc) as ch:
                    await writeapi.remote_write(ch, tenant, rep + 1, v1_frames(i, now, labels), timeout=30)
            rs[2].p.stop()
            res_a = await f.forward(tenant, decode_v1(v1_body(1, now - 60_000, 0, labels), tenant))
            res_b = await f.forward(tenant, decode_v1(v1_body(1, now - 60_000, 1, labels), tenant))
            await f.close()
            return res_a, res_b

        res_a, res_b = asyncio.run(main())
        assert res_a.status == 409, res_a
        assert "writing locally: add 1 samples: out of order sample" in res_a.message
        code_a, text_a = post_body(router.rw, v1_body(1, now - 50_000, 0, labels), tenant)
        assert code_a == 409, text_a
        assert res_b.status == 409 and res_b.conflicts == 1 and res_b.failed == 0, res_b
        code_b, text_b = post_body(router.rw, v1_body(1, now - 60_000, 2, labels), tenant)
        assert code_b == 503, text_b  # Thanos v0.42.4 for the same situation (series 2 is series 1's twin)
        assert "AlreadyExists" in text_b
    finally:
        router.p.stop()
        stop_all(rs)


def v1_frames(i: int, ts_ms: int, labels) -> bytes:
    d = decode_v1(v1_body(1, ts_ms, i, labels), "")
    return series_frames(d, np.array([0]))


def test_forwarding_over_mutual_tls_to_a_thanos_member(certs, thanos_bin, tmp_path):
    """Client TLS options as a grpc credentials object: a Thanos member requiring client
    certificates takes our writes with them, and refuses them without."""
    rs = start_receivers(thanos_bin, tmp_path, 1, lambda a: [{"endpoints": a}], extra=server_flags(certs))
    try:
        def creds(with_cert: bool) -> grpc.ChannelCredentials:
            read = lambda p: Path(p).read_bytes()  # noqa: E731
            if with_cert:
                return grpc.ssl_channel_credentials(read(certs.ca_crt), read(certs.client_key), read(certs.client_crt))
            return grpc.ssl_channel_credentials(read(certs.ca_crt))

        async def main(with_cert: bool) -> ForwardResult:
            f = Forwarder(lambda: ring_of([rs[0].grpc]), "", 1, hr.ROUTER_ONLY, local_write=Local(),
                          registry=CollectorRegistry(), credentials=creds(with_cert), forward_timeout=20)
            res = await f.forward("tls", decode_v1(v1_body(10, int(time.time() * 1000)), "tls"))
            await f.close()
            return res
        res = asyncio.run(main(True))
        assert (res.status, res.samples_written) == (200, 10), res
        res = asyncio.run(main(False))
        assert res.status == 503 and "rpc error: code = Unavailable" in res.message, res
    finally:
        stop_all(rs)


def test_a_thanos_router_forwarding_to_our_receiving_side(thanos_bin, tmp_path):
    """The receiving side as a receiver wires it (the gRPC front and a raw WriteableStore servicer:
    decode_thanos_write, Forwarder.forward with the wire replica), in a ring with a real Thanos member, fed by
    a real Thanos router with RF 2: every series lands at its replica on the right member; ours
    writes its share locally (nothing is forwarded on), the Thanos member holds the rest."""
    tenant, n = "mixed-tenant", 200

    async def main():
        port = free_ports(1)[0]
        me = f"127.0.0.1:{port}"
        rs, addrs = await asyncio.to_thread(start_members, thanos_bin, tmp_path, 1, 2, [me])
        ring = ring_of(addrs, rf=2)
        got: list[tuple[int, int]] = []

        async def local(tenant: str, decoded, positions: np.ndarray, replica: int) -> LocalResult:
            # recorded here, with the request's own series: the router's two replicas arrive concurrently
            got.extend((replica + 1, int(dict(decoded.labels(i))["idx"])) for i in positions.tolist())
            return LocalResult(samples_written=len(positions))

        fwd = Forwarder(lambda: ring, me, 2, hr.ROUTER_INGESTOR, local_write=local, registry=CollectorRegistry())

        async def handle(raw: bytes) -> None:
            d, t, replica = decode_thanos_write(raw)
            res = await fwd.forward(t, d, replica)
            if res.status != 200:
                raise writeapi.WriteError(res.message)

        # as the receiver listens: the gRPC front (snappy, the Thanos router's default) before grpcio
        from pythanos.server.grpcfront import GrpcFront
        from pythanos.storeapi.service import MAX_MSG_SIZE

        front = GrpcFront(writeapi.writeable_front(handle), max_recv=MAX_MSG_SIZE)
        server = grpc.aio.server()
        writeapi.add_writeable_servicer(server, handle, raw=True)
        server.add_insecure_port("unix:" + front.upstream)
        await server.start()
        await front.start(me)
        router = await asyncio.to_thread(start_router, thanos_bin, tmp_path, addrs, 2)
        try:
            code, text = await asyncio.to_thread(post_body, router.rw, v1_body(n, int(time.time() * 1000)), tenant)
            assert code == 200, text
            want = assigned(ring, tenant, range(n), 2)
            mine = {(rep, i) for (a, rep), v in want.items() if a == me for i in v}
            await until(lambda: len(got) == len(mine), what="our share")
            assert set(got) == mine and len(got) == len(mine)
            theirs = set().union(*(v for (a, _), v in want.items() if a == rs[0].grpc))
            assert await held_eventually(rs[0].grpc, theirs) == theirs
        finally:
            router.p.stop()
            stop_all(rs)
            await fwd.close()
            await asyncio.gather(server.stop(None), front.close(0))

    asyncio.run(main())


def test_rw2_requests_reach_a_thanos_member_with_their_labels_and_samples(thanos_bin, tmp_path):
    """A remote-write 2.0 request forwarded to a real Thanos member (which only speaks 1.0): read
    back through its StoreAPI, every series has its canonical labels and every sample; the native
    histogram series is stored as histogram chunks."""
    rs, addrs = start_members(thanos_bin, tmp_path, 1, 1)
    tenant = "v2-tenant"
    now = int(time.time() * 1000)
    series = [([("__name__", "v2_metric"), ("idx", str(i))] if i % 3 else [("idx", str(i)), ("__name__", "v2_metric"),
                                                                          ("empty", "")],
               [(now + 15_000 * k, float(i * 10 + k)) for k in range(4)], [], [])
              for i in range(30)]
    series.append(([("__name__", "v2_hist"), ("idx", "h")], [], [_hist(now), _hist(now + 15_000)], []))
    series.append(([("__name__", "v2_ex"), ("idx", "e")], [(now, 1.0)], [], [([("trace_id", "t1")], 1.0, now)]))
    try:
        async def main():
            f = Forwarder(lambda: ring_of(addrs), "", 1, hr.ROUTER_ONLY, local_write=Local(),
                          registry=CollectorRegistry())
            d = decode_v2(v2_body(series), tenant)
            res = await f.forward(tenant, d)
            await f.close()
            assert (res.status, res.samples_written, res.histograms_written) == (200, 121, 2), res
            async with StoreClient(rs[0].grpc, timeout=30) as c:
                got, _ = await c.series_list(ALL)
            return got

        got = asyncio.run(main())
        by_idx = {dict(s.labels)["idx"]: s for s in got}
        assert set(by_idx) == {str(i) for i in range(30)} | {"h", "e"}
        for i in range(30):
            s = by_idx[str(i)]
            assert [(k, v) for k, v in s.labels if k != "tenant_id" and k != "receive"] == \
                [("__name__", "v2_metric"), ("idx", str(i))]
            ts = np.concatenate([decode_xor(c.data)[0] for c in s.chunks])
            vs = np.concatenate([decode_xor(c.data)[1] for c in s.chunks])
            assert ts.tolist() == [now + 15_000 * k for k in range(4)]
            assert vs.tolist() == [float(i * 10 + k) for k in range(4)]
        h = by_idx["h"]
        assert h.chunks and all(c.encoding in (1, 2) for c in h.chunks)  # Thanos' HISTOGRAM / FLOAT_HISTOGRAM
        assert math.isclose(decode_xor(by_idx["e"].chunks[0].data)[1][0], 1.0)
    finally:
        stop_all(rs)


def _post_prom(url: str, raw: bytes, content_type: str) -> int:
    import urllib.error
    import urllib.request

    import cramjam
    r = urllib.request.Request(url + "/api/v1/write", data=bytes(cramjam.snappy.compress_raw(raw)), method="POST",
                               headers={"Content-Type": content_type, "Content-Encoding": "snappy"})
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def _prom_json(url: str, path: str, **params) -> object:
    import urllib.parse

    from peers import http_get
    code, body = http_get(url + path + "?" + urllib.parse.urlencode(params), timeout=30)
    assert code == 200, body
    return json.loads(body)["data"]


def test_rw2_conversion_as_prometheus_reads_it(prometheus_factory, prometheus3_bin):
    """The 1.0 TimeSeries we forward for a 2.0 request (native histograms, exemplars) read by a
    real Prometheus 3.9.1 as 1.0, next to another taking the 2.0 request itself: the same float
    samples, histograms and exemplars come back from both."""
    now = int(time.time() * 1000)
    series = [
        ([("__name__", "conv_float"), ("job", "x")], [(now, 1.5), (now + 1000, 2.5)], [],
         [([("trace_id", "abc"), ("span", "1")], 1.5, now)]),
        # no exemplar here: Prometheus' 1.0 handler appends exemplars before histograms, so one on a
        # histogram-only series finds no series yet and is dropped (Thanos' writer appends it after)
        ([("__name__", "conv_hist"), ("job", "x")], [], [_hist(now), _hist(now + 1000, True)], []),
        ([("__name__", "conv_third"), ("job", "x")], [(now, 7.0)], [], [([("trace_id", "def")], 3.0, now)]),
    ]
    raw2 = v2_body(series)
    d = decode_v2(raw2, "")
    frames = series_frames(d, np.arange(d.n_series))
    flags = ["--web.enable-remote-write-receiver", "--enable-feature=exemplar-storage",
             "--web.remote-write-receiver.accepted-protobuf-messages=prometheus.WriteRequest",
             "--web.remote-write-receiver.accepted-protobuf-messages=io.prometheus.write.v2.Request"]
    direct = prometheus_factory(binary=prometheus3_bin, extra_args=flags, name="prom-v2")
    ours = prometheus_factory(binary=prometheus3_bin, extra_args=flags, name="prom-v1")
    assert _post_prom(direct.url, raw2, "application/x-protobuf;proto=io.prometheus.write.v2.Request") == 204
    assert _post_prom(ours.url, frames, "application/x-protobuf") == 204
    got = []
    for p in (direct, ours):
        at = {}
        for name in ("conv_float", "conv_hist", "conv_third"):
            at[name] = _prom_json(p.url, "/api/v1/query_range", query=name, start=(now - 1000) / 1000,
                                  end=(now + 2000) / 1000, step="1")
        ex = _prom_json(p.url, "/api/v1/query_exemplars", query='{job="x"}', start=(now - 1000) / 1000,
                        end=(now + 2000) / 1000)
        got.append((at, sorted(json.dumps(e, sort_keys=True) for e in ex)))
    assert got[0] == got[1]
    assert got[0][0]["conv_hist"]["result"] and got[0][0]["conv_float"]["result"] and len(got[0][1]) == 2
    assert any("histograms" in r for r in got[0][0]["conv_hist"]["result"])

