#!/usr/bin/env python3
"""Remote-write decoding figures (pythanos.remote.write): series/s and MB/s of protobuf decoded.

Shape: requests as Prometheus sends them, one sample per series and 8 labels per series (metric name,
job, instance, and five more with values of 4-30 bytes), 2000 series (Prometheus' default
max_samples_per_send) and 100k series, in RW 1.0 and RW 2.0 (symbols shared across series as a
Prometheus sender builds them). Figures, best of ``REPEATS``:

* ``ours``: ``decode_v1``/``decode_v2`` on the snappy-decoded body (blobs, statuses, hashes, samples);
* ``ours+snappy``: ``decode_request`` from the snappy body (includes decompression);
* ``upb``: the protobuf module's ``FromString`` plus walking every series' labels and samples into
  Python lists (what a Python receiver without the kernel does; no sorting, no checks, no hash).

And the receiver-to-receiver direction (``rwencode.*``): ``thanos`` is ``decode_thanos_write`` on the
``thanos.WriteRequest`` of those series; ``v2->v1`` is ``encode_v1_timeseries`` on a decoded RW 2.0
request (RW 1.0 TimeSeries from the columns, what a receiver forwards), ``v1 slice`` is
``timeseries_frames`` on a decoded RW 1.0 request (the sender's bytes), ``upb`` builds and serializes
the same TimeSeries with the protobuf module.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import cramjam

try:
    from pythanos.remote.prompb import remote_pb2, write_v2_pb2
    from pythanos.remote.write import (decode_request, decode_thanos_write, decode_v1, decode_v2,
                                       encode_v1_timeseries, timeseries_frames)
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "components"))
    from pythanos.remote.prompb import remote_pb2, write_v2_pb2
    from pythanos.remote.write import (decode_request, decode_thanos_write, decode_v1, decode_v2,
                                       encode_v1_timeseries, timeseries_frames)

REPEATS = 5
CT_V2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"


def labels(i: int) -> list[tuple[str, str]]:
    return [("__name__", f"http_requests_total_{i % 50}"), ("code", str(200 + i % 5)),
            ("handler", f"/api/v1/endpoint/{i % 40}"), ("instance", f"10.0.{i % 250}.{i % 7}:9090"),
            ("job", "kubernetes-pods"), ("method", ("GET", "POST")[i % 2]), ("namespace", f"ns-{i % 30}"),
            ("pod", f"app-{i:08d}-x7k2p")]


def build(n: int) -> tuple[bytes, bytes]:
    v1 = remote_pb2.WriteRequest()
    v2 = write_v2_pb2.Request()
    syms: dict[str, int] = {"": 0}
    for i in range(n):
        ls = labels(i)
        ts = v1.timeseries.add()
        for k, v in ls:
            ts.labels.add(name=k, value=v)
        ts.samples.add(value=float(i), timestamp=1_700_000_000_000 + i)
        t2 = v2.timeseries.add()
        for k, v in ls:
            t2.labels_refs.extend([syms.setdefault(k, len(syms)), syms.setdefault(v, len(syms))])
        t2.samples.add(value=float(i), timestamp=1_700_000_000_000 + i)
    v2.symbols.extend(syms)
    return v1.SerializeToString(), v2.SerializeToString()


def upb_v1(body: bytes) -> int:
    wr = remote_pb2.WriteRequest.FromString(body)
    out = []
    for ts in wr.timeseries:
        out.append(([(lb.name, lb.value) for lb in ts.labels], [(s.timestamp, s.value) for s in ts.samples]))
    return len(out)


def upb_v2(body: bytes) -> int:
    r = write_v2_pb2.Request.FromString(body)
    syms = list(r.symbols)
    out = []
    for ts in r.timeseries:
        refs = ts.labels_refs
        out.append(([(syms[refs[k]], syms[refs[k + 1]]) for k in range(0, len(refs), 2)],
                    [(s.timestamp, s.value) for s in ts.samples]))
    return len(out)


def best(fn, *args) -> float:
    t = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn(*args)
        t = min(t, time.perf_counter() - t0)
    return t


def measure() -> list[tuple[str, int, int, float, float, float]]:
    """(request, series, bytes, ours s, ours+snappy s, upb s) for each shape."""
    out = []
    for n in (2000, 100_000):
        b1, b2 = build(n)
        for name, body, ours, upb, ct in (("v1", b1, decode_v1, upb_v1, "application/x-protobuf"),
                                          ("v2", b2, decode_v2, upb_v2, CT_V2)):
            snap = bytes(cramjam.snappy.compress_raw(body))
            out.append((name, n, len(body), best(ours, body), best(decode_request, snap, ct, "", "snappy"),
                        best(upb, body)))
    return out


def upb_encode(n: int) -> bytes:
    wr = remote_pb2.WriteRequest()
    for i in range(n):
        ts = wr.timeseries.add()
        for k, v in labels(i):
            ts.labels.add(name=k, value=v)
        ts.samples.add(value=float(i), timestamp=1_700_000_000_000 + i)
    return wr.SerializeToString()


def measure_encode() -> list[tuple[str, float, str]]:
    figs: list[tuple[str, float, str]] = []
    for n in (2000, 100_000):
        b1, b2 = build(n)
        d1, d2 = decode_v1(b1), decode_v2(b2)
        frames = timeseries_frames(d1)
        thanos = frames + b"\x12\x07tenant1\x18\x01"
        assert encode_v1_timeseries(d2) == frames  # the series are sorted and have no empty values
        tag = f"rwencode {n // 1000}k" if n >= 1000 else f"rwencode {n}"
        t_th, t_enc, t_slice, t_upb = (best(decode_thanos_write, thanos), best(encode_v1_timeseries, d2),
                                       best(timeseries_frames, d1), best(upb_encode, n))
        figs += [(f"{tag} thanos decode ours", n / t_th, "series/s"),
                 (f"{tag} v2->v1 ours", n / t_enc, "series/s"), (f"{tag} v1 slice ours", n / t_slice, "series/s"),
                 (f"{tag} upb", n / t_upb, "series/s"), (f"{tag} v2->v1 ours/upb", t_upb / t_enc, "x")]
    return figs


def run() -> list[tuple[str, float, str]]:
    figs: list[tuple[str, float, str]] = measure_encode()
    for name, n, size, t_ours, t_snap, t_upb in measure():
        tag = f"rwdecode.{name} {n // 1000}k" if n >= 1000 else f"rwdecode.{name} {n}"
        figs += [(f"{tag} ours", n / t_ours, "series/s"), (f"{tag} ours", size / 1e6 / t_ours, "MB/s"),
                 (f"{tag} ours+snappy", n / t_snap, "series/s"), (f"{tag} upb", n / t_upb, "series/s"),
                 (f"{tag} ours/upb", t_upb / t_ours, "x")]
    return figs


def main() -> None:
    print(f"{'request':<22}{'bytes':>11}{'ours s/s':>14}{'MB/s':>8}{'+snappy s/s':>14}{'upb s/s':>12}{'MB/s':>8}"
          f"{'ours/upb':>10}")
    for name, n, size, t_ours, t_snap, t_upb in measure():
        mb = size / 1e6
        print(f"{name} {n:>7} series{'':<5}{size:>11}{n / t_ours:>14,.0f}{mb / t_ours:>8.0f}"
              f"{n / t_snap:>14,.0f}{n / t_upb:>12,.0f}{mb / t_upb:>8.0f}{t_upb / t_ours:>10.1f}")


if __name__ == "__main__":
    main()
