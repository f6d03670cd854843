"""``pythanos.query._frames``: SeriesResponse bytes parsed in C give exactly what protobuf's parser
plus the querier's Python extraction give, and malformed frames raise instead of losing data."""
from __future__ import annotations

import random

import pytest
from google.protobuf import any_pb2

from pythanos.query import _frames
from pythanos.query.proxy import _series
from pythanos.storeapi.pb import labels_pb2, rpc_pb2, types_pb2

NAMES = ["__name__", "job", "instance", "replica", "cluster", "é✓", ""]
VALUES = ["x", "", "日本語", "a" * 300, "quo\"te", "replica-0"]


def random_series(rng: random.Random) -> types_pb2.Series:
    s = types_pb2.Series()
    for n in sorted(rng.sample(NAMES, rng.randint(0, len(NAMES)))):
        s.labels.append(labels_pb2.Label(name=n, value=rng.choice(VALUES)))
    for _ in range(rng.randint(0, 4)):
        c = s.chunks.add(min_time=rng.randint(-2**40, 2**40), max_time=rng.randint(-2**40, 2**40))
        kind = rng.random()
        if kind < 0.7:
            c.raw.type = rng.choice([0, 0, 1, 2])
            c.raw.data = rng.randbytes(rng.choice([0, 1, 127, 128, 5000]))
            if rng.random() < 0.3:
                c.raw.hash = rng.getrandbits(64)
        elif kind < 0.9:  # downsampled: aggregates only (no raw; see also test_query_downsampled.py)
            c.count.data = rng.randbytes(10)
            c.sum.data = rng.randbytes(10)
    return s


def python_path(frame: bytes, strip):
    r = rpc_pb2.SeriesResponse.FromString(frame)
    kind = r.WhichOneof("result")
    if kind == "series":
        return 1, [_series(r.series, strip)]
    if kind == "batch":
        return 4, [_series(s, strip) for s in r.batch.series]
    if kind == "warning":
        return 2, r.warning
    return (3 if kind == "hints" else 0), None


@pytest.mark.parametrize("seed", range(30))
def test_same_as_protobuf(seed):
    rng = random.Random(seed)
    strip = frozenset({"replica"}) if seed % 2 else None
    frames = [rpc_pb2.SeriesResponse(series=random_series(rng)).SerializeToString()]
    batch = rpc_pb2.SeriesResponse()
    for _ in range(rng.randint(0, 70)):
        batch.batch.series.append(random_series(rng))
    frames.append(batch.SerializeToString())
    frames.append(rpc_pb2.SeriesResponse(warning="store said é✓ " * rng.randint(1, 3)).SerializeToString())
    frames.append(rpc_pb2.SeriesResponse(hints=any_pb2.Any(type_url="x/y", value=b"abc")).SerializeToString())
    cache: dict = {}
    for f in frames:
        kind, payload = _frames.parse(f, strip, cache)
        want = python_path(f, strip)
        if kind == 3:
            assert want[0] == 3
            continue
        assert (kind, payload) == want


def test_malformed_frames_raise():
    rng = random.Random(7)
    b = rpc_pb2.SeriesResponse()
    for _ in range(5):
        b.batch.series.append(random_series(rng))
    good = b.SerializeToString()
    raised = 0
    for cut in range(1, len(good)):
        try:
            kind, payload = _frames.parse(good[:cut], None, {})
        except ValueError:
            raised += 1
            continue
        # a cut that happens to end on a field boundary is a valid shorter message: protobuf agrees
        assert (kind, payload) == python_path(good[:cut], None)
    assert raised > len(good) // 2
    with pytest.raises(ValueError):
        _frames.parse(b"\x0a\xff\xff\xff\xff\x0f", None, {})
