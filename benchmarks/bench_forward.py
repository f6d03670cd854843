#!/usr/bin/env python3
"""Receiver forwarding figures (pythanos.receive.forward): the cost of routing a request and of
building what goes on the wire, and a whole fan-out over gRPC in this process.

Requests as Prometheus sends them (2000 series, one sample and 8 labels each: the shape of
bench_rwdecode). Figures, best of ``REPEATS``:

* ``route``: routing hashes of all series -> (endpoint, replica) parts (``MultiHashring.route`` +
  ``split_by_endpoint``), RF 3 over 6 endpoints, hashmod and ketama;
* ``frames v1``: every series' forward frames from a 1.0 body (sliced, not re-encoded);
* ``frames v2``: the same series encoded as 1.0 TimeSeries from a 2.0 request's columns; with 1% of
  the series carrying a native histogram, and with 1% carrying an exemplar (both converted by the
  kernel from the 2.0 body);
* ``forward``: ``Forwarder.forward`` end to end, RF 3 over three in-process gRPC servicers that accept
  the raw bytes (client, server and the forwarder share this process and its cores).
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

try:
    import grpc
    from prometheus_client import CollectorRegistry

    from pythanos.receive import hashring as hr
    from pythanos.receive.forward import Forwarder, LocalResult
    from pythanos.remote.write import timeseries_frames as series_frames
    from pythanos.remote.prompb import remote_pb2, write_v2_pb2
    from pythanos.remote.write import decode_v1, decode_v2
    from pythanos.storeapi import writeapi
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "components"))
    import grpc
    from prometheus_client import CollectorRegistry

    from pythanos.receive import hashring as hr
    from pythanos.receive.forward import Forwarder, LocalResult
    from pythanos.remote.write import timeseries_frames as series_frames
    from pythanos.remote.prompb import remote_pb2, write_v2_pb2
    from pythanos.remote.write import decode_v1, decode_v2
    from pythanos.storeapi import writeapi

REPEATS = 7
N = 2000


def labels(i: int) -> list[tuple[str, str]]:
    return [("__name__", f"http_requests_total_{i % 50}"), ("code", str(200 + i % 5)),
            ("handler", f"/api/v1/endpoint/{i % 40}"), ("instance", f"10.0.{i % 250}.{i % 7}:9090"),
            ("job", "kubernetes-pods"), ("method", ("GET", "POST")[i % 2]), ("namespace", f"ns-{i % 30}"),
            ("pod", f"app-{i:08d}-x7k2p")]


def build(n: int, hist_every: int = 0, exemplar_every: int = 0) -> tuple[bytes, bytes]:
    v1, v2 = remote_pb2.WriteRequest(), write_v2_pb2.Request()
    syms: dict[str, int] = {"": 0}
    for i in range(n):
        ts = v1.timeseries.add()
        t2 = v2.timeseries.add()
        for k, v in labels(i):
            ts.labels.add(name=k, value=v)
            t2.labels_refs.extend([syms.setdefault(k, len(syms)), syms.setdefault(v, len(syms))])
        ts.samples.add(value=float(i), timestamp=1_700_000_000_000 + i)
        t2.samples.add(value=float(i), timestamp=1_700_000_000_000 + i)
        if hist_every and i % hist_every == 0:
            h = t2.histograms.add(count_int=3, sum=1.0, schema=0, timestamp=1_700_000_000_000 + i)
            h.positive_spans.add(offset=0, length=1)
            h.positive_deltas.append(3)
        if exemplar_every and i % exemplar_every == 0:
            e = t2.exemplars.add(value=1.0, timestamp=1_700_000_000_000 + i)
            e.labels_refs.extend([syms.setdefault("trace_id", len(syms)), syms.setdefault(f"{i:032x}", len(syms))])
    v2.symbols.extend(syms)
    return v1.SerializeToString(), v2.SerializeToString()


def best(fn) -> float:
    out = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    raw1, raw2 = build(N)
    _, raw2h = build(N, hist_every=100)
    _, raw2e = build(N, exemplar_every=100)
    d1, d2, d2h, d2e = decode_v1(raw1, "t"), decode_v2(raw2, "t"), decode_v2(raw2h, "t"), decode_v2(raw2e, "t")
    addrs = [f"10.0.0.{i}:10901" for i in range(6)]
    for alg in ("hashmod", "ketama"):
        ring = hr.new_multi_hashring(hr.parse_hashrings(json.dumps([{"endpoints": addrs}])), alg, 3)

        def route():
            _, idx = ring.route("t", d1.hashes, 3)
            hr.split_by_endpoint(idx, 3)
        print(f"route {alg:8s} {N} series x RF 3 / 6 endpoints: {best(route) * 1e6:8.1f} us")
    pos = np.arange(N, dtype=np.int64)
    t1 = best(lambda: series_frames(d1, pos))
    f1 = series_frames(d1, pos)
    print(f"frames v1 (slices)   {N} series: {t1 * 1e6:8.1f} us  {len(f1) / t1 / 1e6:7.0f} MB/s  "
          f"{t1 / N * 1e9:6.0f} ns/series")
    t2 = best(lambda: series_frames(d2, pos))
    f2 = series_frames(d2, pos)
    print(f"frames v2 (encoded)  {N} series: {t2 * 1e6:8.1f} us  {len(f2) / t2 / 1e6:7.0f} MB/s  "
          f"{t2 / N * 1e9:6.0f} ns/series  (v1 frames {len(f1)} B, v2-encoded {len(f2)} B)")
    t3 = best(lambda: series_frames(d2h, pos))
    print(f"frames v2, 1% hist   {N} series: {t3 * 1e6:8.1f} us  ({N // 100} native histograms copied by the kernel)")
    t4 = best(lambda: series_frames(d2e, pos))
    print(f"frames v2, 1% exempl {N} series: {t4 * 1e6:8.1f} us  ({N // 100} exemplars converted by the kernel)")

    async def fanout() -> None:
        servers, seen = [], [0]

        async def handle(req: bytes) -> None:
            seen[0] += 1

        addrs2 = []
        for _ in range(3):
            s = grpc.aio.server()
            writeapi.add_writeable_servicer(s, handle, raw=True)
            port = s.add_insecure_port("127.0.0.1:0")
            await s.start()
            servers.append(s)
            addrs2.append(f"127.0.0.1:{port}")
        ring = hr.new_multi_hashring(hr.parse_hashrings(json.dumps([{"endpoints": addrs2}])), "hashmod", 3)

        async def local(tenant, decoded, positions, replica):
            return LocalResult()
        f = Forwarder(lambda: ring, "", 3, hr.ROUTER_ONLY, local_write=local, registry=CollectorRegistry())
        for d, name in ((d1, "v1"), (d2, "v2")):
            await f.forward("t", d)
            times = []
            for _ in range(REPEATS * 3):
                t = time.perf_counter()
                res = await f.forward("t", d)
                times.append(time.perf_counter() - t)
                assert res.status == 200
            print(f"forward {name} RF 3, 3 in-process servicers, {N} series: {min(times) * 1e3:6.2f} ms best, "
                  f"{sorted(times)[len(times) // 2] * 1e3:6.2f} ms median")
        await f.close()
        for s in servers:
            await s.stop(None)

    asyncio.run(fanout())


if __name__ == "__main__":
    main()
