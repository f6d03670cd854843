"""pythanos.tsdb.chunkenc: the XOR chunk codec (prometheus-formats.md section 5).

Byte parity is checked three ways:

* the hand-verified vectors of section 5.7 (hex and CRC32C over encoding byte + data);
* a table of (length, CRC32C) pairs that Prometheus' own Go code produced for deterministic
  sample sets (``GOLDEN`` below; 3.x = ``github.com/prometheus/prometheus`` v0.309.1 (3.9.1),
  2.x = v0.42.0 (2.42), via ``chunkenc.NewXORChunk().Appender().Append``);
* hypothesis against ``_GoModel``, a literal slow transliteration of Go's ``bstream`` and
  ``xorAppender`` (both the 2.x and the 3.x ``writeByte``).
"""
from __future__ import annotations

import threading

import google_crc32c
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pythanos.tsdb import chunkenc
from pythanos.tsdb.chunkenc import (
    ENCODING_XOR,
    MAX_SAMPLES,
    decode_xor,
    decode_xor_many,
    decode_xor_many_into,
    encode_xor,
    encode_xor_many,
    xor_num_samples,
)
from pythanos.tsdb.errors import CorruptBlockError, CorruptChunkError

M64 = (1 << 64) - 1
T0 = 1700000000000


def crc(data: bytes) -> int:
    return google_crc32c.value(bytes([ENCODING_XOR]) + bytes(data))


def bits(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).view(np.uint64)


def assert_same(t, v, t2, v2):
    assert t2.dtype == np.int64 and v2.dtype == np.float64
    np.testing.assert_array_equal(t2, np.asarray(t, dtype=np.int64))
    np.testing.assert_array_equal(bits(v2), bits(v))


# --------------------------------------------------------------------------- 5.7 vectors

VECTORS = [
    # (samples, 3.x hex, 3.x crc, 2.x hex, 2.x crc)
    ([(T0, 1027.0), (T0 + 15000, 1030.0), (T0 + 30000, 1035.5), (T0 + 45000, 1040.0)],
     "000480a0abfef96240900c00000000009875e61d72176e236e", 0x42A50830, None, 0x42A50830),
    ([(T0, 3.0), (T0 + 15000, 3.0), (T0 + 31000, 4.0)],
     "000380a0abfef9624008000000000000987541f46b0b", 0x431D1C9C, None, 0x431D1C9C),
    ([(T0, 21.5), (T0 + 60000, 21.7)],
     "000280a0abfef9624035800000000000e0d403e576666666666660", 0xEB321166, None, 0xEB321166),
    ([(T0, 1.0)],
     "000180a0abfef9623ff0000000000000", 0x7328B91D, "000180a0abfef9623ff000000000000000", 0xFD78F054),
]


@pytest.mark.parametrize("samples,hex3,crc3,hex2,crc2", VECTORS)
def test_spec_vectors(samples, hex3, crc3, hex2, crc2):
    t = np.array([s[0] for s in samples], dtype=np.int64)
    v = np.array([s[1] for s in samples], dtype=np.float64)
    d3 = encode_xor(t, v)
    d2 = encode_xor(t, v, prom2_quirk=True)
    assert d3.hex() == hex3 and crc(d3) == crc3
    assert d2.hex() == (hex2 or hex3) and crc(d2) == crc2
    assert xor_num_samples(d3) == xor_num_samples(d2) == len(samples)
    for d in (d3, d2):  # both forms decode identically
        assert_same(t, v, *decode_xor(d))


# --------------------------------------------------------------------------- Go golden table

STALE = 0x7FF0000000000002
SPECIALS = np.array([STALE, 0x7FF8000000000001, 0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000000,
                     0xFFF0000000000000, 0x8000000000000000, 0, 0x7FF4000000000ABC, 0x3FF0000000000000,
                     0x3FF0000000000001, 0x0000000000000001], dtype=np.uint64)
DODS = np.array([0, 1, -1, 8191, 8192, -8191, -8192, 8193, -8193, 65535, 65536, -65535, -65536, 65537,
                 -65537, 524287, 524288, -524287, -524288, 524289, -524289, 2**40, -2**40], dtype=np.int64)


def _mix(n, salt):
    """Deterministic pseudo-random uint64s (splitmix64), independent of numpy's RNG streams."""
    with np.errstate(over="ignore"):
        x = (np.arange(n, dtype=np.uint64) + np.uint64(salt)) * np.uint64(0x9E3779B97F4A7C15)
        x ^= x >> np.uint64(30); x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27); x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def golden_case(name):
    tname, vname, n = name.split(":")
    n = int(n)
    r = _mix(n, hash_salt(name))
    T0 = 1700000000000
    if tname == "reg":
        t = T0 + 15000 * np.arange(n, dtype=np.int64)
    elif tname == "jit":
        t = T0 + np.cumsum(15000 + (r % np.uint64(101)).astype(np.int64) - 50)
    elif tname == "dods":
        dd = DODS[np.arange(n) % len(DODS)]
        t = T0 + np.cumsum(15000 + np.cumsum(dd))
    elif tname == "wild":
        t = r.view(np.int64).copy()
    elif tname == "neg":
        t = -T0 - 1000 * np.arange(n, dtype=np.int64) ** 2
    else:
        raise ValueError(tname)
    if vname == "const":
        v = np.full(n, 42.0)
    elif vname == "counter":
        v = np.cumsum((r >> np.uint64(57)).astype(np.int64)).astype(np.float64)
    elif vname == "gauge":
        v = ((r >> np.uint64(40)) % np.uint64(1000)).astype(np.float64) / 8.0
    elif vname == "bits":
        v = r.view(np.float64).copy()
    elif vname == "special":
        v = SPECIALS[(r % np.uint64(len(SPECIALS))).astype(np.int64)].view(np.float64).copy()
    elif vname == "steps":
        v = np.repeat(np.arange(n // 7 + 1, dtype=np.float64) * 0.1, 7)[:n]
    else:
        raise ValueError(vname)
    return t.astype(np.int64), np.ascontiguousarray(v, dtype=np.float64)


def hash_salt(name):
    h = 0
    for ch in name.encode():
        h = (h * 131 + ch) % (1 << 32)
    return h


NAMES = [f"{t}:{v}:{n}" for t, v, n in [
    ("reg", "const", 1), ("reg", "const", 2), ("reg", "const", 120), ("reg", "counter", 3),
    ("reg", "counter", 120), ("reg", "gauge", 121), ("reg", "bits", 120), ("reg", "special", 64),
    ("reg", "steps", 240), ("jit", "counter", 120), ("jit", "gauge", 143), ("jit", "bits", 7),
    ("dods", "const", 200), ("dods", "counter", 47), ("dods", "special", 100), ("wild", "bits", 50),
    ("wild", "const", 9), ("neg", "gauge", 30), ("neg", "special", 5), ("reg", "bits", 1),
    ("jit", "special", 255), ("dods", "bits", 1000), ("reg", "counter", 65535), ("jit", "steps", 4),
    ("reg", "gauge", 2), ("wild", "special", 2), ("neg", "const", 3), ("dods", "steps", 999),
    ("reg", "bits", 27), ("reg", "special", 5), ("jit", "counter", 33), ("jit", "special", 24),
    ("dods", "counter", 6), ("dods", "bits", 15), ("wild", "bits", 13), ("wild", "special", 8),
    ("neg", "gauge", 6), ("neg", "bits", 9),
]]


GOLDEN = [
    # (case, 3.x len, 3.x crc, 2.x len, 2.x crc) -- produced by Prometheus' Go chunkenc
    ("reg:const:1", 16, 0xc1b1812a, 17, 0x19e34436),
    ("reg:const:2", 19, 0x6e1fb87e, 19, 0x6e1fb87e),
    ("reg:const:120", 48, 0xae09f0bb, 48, 0xae09f0bb),
    ("reg:counter:3", 23, 0x7b4b1411, 23, 0x7b4b1411),
    ("reg:counter:120", 262, 0x44c129d5, 262, 0x44c129d5),
    ("reg:gauge:121", 273, 0x3763946f, 273, 0x3763946f),
    ("reg:bits:120", 1016, 0xcb3c6816, 1016, 0xcb3c6816),
    ("reg:special:64", 510, 0xf37d9b25, 510, 0xf37d9b25),
    ("reg:steps:240", 339, 0x7566f69a, 339, 0x7566f69a),
    ("jit:counter:120", 475, 0xe97cf100, 475, 0xe97cf100),
    ("jit:gauge:143", 610, 0x723a962f, 610, 0x723a962f),
    ("jit:bits:7", 83, 0x4e0d1d2d, 83, 0x4e0d1d2d),
    ("dods:const:200", 763, 0x888225b7, 763, 0x888225b7),
    ("dods:counter:47", 273, 0xd9080b89, 273, 0xd9080b89),
    ("dods:special:100", 1113, 0x888347d1, 1113, 0x888347d1),
    ("wild:bits:50", 854, 0xcf6052a9, 854, 0xcf6052a9),
    ("wild:const:9", 91, 0x3e455395, 91, 0x3e455395),
    ("neg:gauge:30", 138, 0xbe442c1e, 138, 0xbe442c1e),
    ("neg:special:5", 56, 0x9b4eab27, 56, 0x9b4eab27),
    ("reg:bits:1", 16, 0x912c1747, 17, 0xc75d0611),
    ("jit:special:255", 2420, 0xe2fb88fa, 2420, 0xe2fb88fa),
    ("dods:bits:1000", 11970, 0xd886db13, 11971, 0x51abe111),
    ("reg:counter:65535", 203821, 0x11152d2d, 203821, 0x11152d2d),
    ("jit:steps:4", 23, 0xe7104270, 23, 0xe7104270),
    ("reg:gauge:2", 22, 0x2f630a1b, 22, 0x2f630a1b),
    ("wild:special:2", 36, 0x8d973a72, 36, 0x8d973a72),
    ("neg:const:3", 29, 0x585eeb32, 29, 0x585eeb32),
    ("dods:steps:999", 4968, 0x1369a61a, 4968, 0x1369a61a),
    ("reg:bits:27", 239, 0xce7965fb, 240, 0x3854ee7a),
    ("reg:special:5", 54, 0x77ad2bf5, 55, 0x94958513),
    ("jit:counter:33", 141, 0xb36727af, 142, 0xae96bdf4),
    ("jit:special:24", 245, 0x7c7d58df, 246, 0xdfc1f386),
    ("dods:counter:6", 37, 0x82890f5e, 38, 0xafa2bfaa),
    ("dods:bits:15", 169, 0x119c3f66, 170, 0x150bbbe4),
    ("wild:bits:13", 224, 0xe9c37b58, 225, 0x89681236),
    ("wild:special:8", 126, 0xfd9e8f38, 127, 0xe8badca0),
    ("neg:gauge:6", 47, 0x1585348c, 48, 0x9ddd22cd),
    ("neg:bits:9", 108, 0x66caaa91, 109, 0x32d8e6ef),
]


@pytest.mark.parametrize("name,len3,crc3,len2,crc2", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_go_golden(name, len3, crc3, len2, crc2):
    t, v = golden_case(name)
    d3 = encode_xor(t, v)
    d2 = encode_xor(t, v, prom2_quirk=True)
    assert (len(d3), crc(d3)) == (len3, crc3)
    assert (len(d2), crc(d2)) == (len2, crc2)
    assert_same(t, v, *decode_xor(d3))
    assert_same(t, v, *decode_xor(d2))


def test_go_golden_batched():
    cases = [golden_case(g[0]) for g in GOLDEN]
    t = np.concatenate([c[0] for c in cases])
    v = np.concatenate([c[1] for c in cases])
    bounds = np.cumsum([0] + [len(c[0]) for c in cases])
    for quirk, li, ci in ((False, 1, 2), (True, 3, 4)):
        buf, offs = encode_xor_many(t, v, bounds, prom2_quirk=quirk)
        assert offs[0] == 0 and offs[-1] == len(buf)
        for i, g in enumerate(GOLDEN):
            d = buf[offs[i]:offs[i + 1]]
            assert (len(d), crc(d)) == (g[li], g[ci]), g[0]
        counts, t2, v2 = decode_xor_many(buf, offs[:-1], np.diff(offs))
        np.testing.assert_array_equal(counts, np.diff(bounds))
        assert_same(t, v, t2, v2)


# --------------------------------------------------------------------------- Go model


class _GoBStream:
    """Go's tsdb/chunkenc bstream writer; v2=True is the <= 2.55 writeByte (extra empty byte)."""

    def __init__(self, v2: bool):
        self.stream = bytearray(2)
        self.count = 0
        self.v2 = v2

    def write_bit(self, bit):
        if self.count == 0:
            self.stream.append(0)
            self.count = 8
        if bit:
            self.stream[-1] |= 1 << (self.count - 1)
        self.count -= 1

    def write_byte(self, byt):
        if self.count == 0:
            if not self.v2:
                self.stream.append(byt)
                return
            self.stream.append(0)
            self.count = 8
        self.stream[-1] |= byt >> (8 - self.count)
        self.stream.append((byt << self.count) & 0xFF)

    def write_bits(self, u, nbits):
        u = (u << (64 - nbits)) & M64
        while nbits >= 8:
            self.write_byte(u >> 56)
            u = (u << 8) & M64
            nbits -= 8
        while nbits > 0:
            self.write_bit(u >> 63)
            u = (u << 1) & M64
            nbits -= 1


def _uvarint(x):
    out = []
    while x >= 0x80:
        out.append((x & 0x7F) | 0x80)
        x >>= 7
    out.append(x)
    return out


def _signed(x):
    return x - (1 << 64) if x >> 63 else x


def _bit_range(x, n):
    return -((1 << (n - 1)) - 1) <= x <= 1 << (n - 1)


def go_encode(t, v, v2=False) -> bytes:
    """xorAppender.Append, sample by sample, exactly as Go 2.42 writes it."""
    b = _GoBStream(v2)
    vb = [int(x) for x in bits(v)]
    t = [int(x) for x in t]
    lead, trail = 0xFF, 0
    tdelta = 0

    def write_v(cur, prev):
        nonlocal lead, trail
        delta = cur ^ prev
        if delta == 0:
            b.write_bit(0)
            return
        b.write_bit(1)
        ld = 64 - delta.bit_length()
        tr = (delta & -delta).bit_length() - 1
        ld = min(ld, 31)
        if lead != 0xFF and ld >= lead and tr >= trail:
            b.write_bit(0)
            b.write_bits(delta >> trail, 64 - lead - trail)
            return
        lead, trail = ld, tr
        b.write_bit(1)
        b.write_bits(ld, 5)
        sig = 64 - ld - tr
        b.write_bits(sig & 63, 6)
        b.write_bits(delta >> tr, sig)

    for i in range(len(t)):
        if i == 0:
            for byte in _uvarint(((t[0] << 1) ^ (t[0] >> 63)) & M64):
                b.write_byte(byte)
            b.write_bits(vb[0], 64)
        elif i == 1:
            tdelta = (t[1] - t[0]) & M64
            for byte in _uvarint(tdelta):
                b.write_byte(byte)
            write_v(vb[1], vb[0])
        else:
            td = (t[i] - t[i - 1]) & M64
            dod = _signed((td - tdelta) & M64)
            if dod == 0:
                b.write_bit(0)
            elif _bit_range(dod, 14):
                b.write_bits(0b10, 2)
                b.write_bits(dod & 0x3FFF, 14)
            elif _bit_range(dod, 17):
                b.write_bits(0b110, 3)
                b.write_bits(dod & 0x1FFFF, 17)
            elif _bit_range(dod, 20):
                b.write_bits(0b1110, 4)
                b.write_bits(dod & 0xFFFFF, 20)
            else:
                b.write_bits(0b1111, 4)
                b.write_bits(dod & M64, 64)
            tdelta = td
            write_v(vb[i], vb[i - 1])
    b.stream[0:2] = len(t).to_bytes(2, "big")
    return bytes(b.stream)


def test_go_model_matches_spec_vectors():
    for samples, hex3, _, hex2, _ in VECTORS:
        t = [s[0] for s in samples]
        v = np.array([s[1] for s in samples])
        assert go_encode(t, v).hex() == hex3
        assert go_encode(t, v, v2=True).hex() == (hex2 or hex3)


# --------------------------------------------------------------------------- strategies

STALE_NAN = 0x7FF0000000000002
SPECIAL_BITS = [
    STALE_NAN, 0x7FF8000000000001, 0x7FF8000000000000, 0xFFF8000000000000, 0x7FF4000000000ABC,
    0x7FF0000000000000, 0xFFF0000000000000, 0x8000000000000000, 0x0, 0x1, 0x3FF0000000000000,
    0x3FF0000000000001, 0x7FEFFFFFFFFFFFFF,
]
DOD_EDGES = [0, 1, -1, 8191, 8192, -8191, -8192, 8193, -8193, 65535, 65536, -65535, -65536,
             65537, -65537, 524287, 524288, -524287, -524288, 524289, -524289, 2**31, -(2**40), 2**62]

value_bits = st.one_of(
    st.sampled_from(SPECIAL_BITS),
    st.integers(0, M64),
    st.floats(allow_nan=False).map(lambda f: int(np.array(f).view(np.uint64))),
    st.integers(-1000, 1000).map(lambda i: int(np.array(float(i)).view(np.uint64))),
)
dod_values = st.one_of(st.sampled_from(DOD_EDGES), st.integers(-(2**20), 2**20), st.integers(-(2**62), 2**62))


@st.composite
def series(draw, min_size=1, max_size=200):
    """(t int64, v float64): explicit dods at the bucket edges, huge gaps, any bit pattern."""
    n = draw(st.integers(min_size, max_size))
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    t0 = draw(st.one_of(st.just(T0), st.integers(-(2**62), 2**62)))
    d1 = draw(st.one_of(st.just(15000), st.integers(-(2**40), 2**40)))
    dods = draw(st.lists(dod_values, min_size=max(n - 2, 0), max_size=max(n - 2, 0)))
    deltas = np.array([d1] + dods, dtype=object).cumsum() if n > 1 else np.array([], dtype=object)
    ts = [t0]
    for d in deltas[: n - 1]:
        ts.append(ts[-1] + int(d))
    t = np.array([(x + 2**63) % 2**64 - 2**63 for x in ts], dtype=np.int64)  # wrap like Go's int64
    repeat = draw(st.booleans())
    vb = draw(st.lists(value_bits, min_size=1 if repeat else n, max_size=n))
    vb = (vb * (n // len(vb) + 1))[:n]
    return t, np.array(vb, dtype=np.uint64).view(np.float64)


@st.composite
def big_series(draw):
    """Up to 65535 samples, built from a seed with numpy (keeps hypothesis fast)."""
    n = draw(st.sampled_from([MAX_SAMPLES, MAX_SAMPLES - 1, 4096, 1000, 241]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    shape = draw(st.sampled_from(["regular", "jitter", "edges", "wild"]))
    if shape == "regular":
        t = T0 + 15000 * np.arange(n, dtype=np.int64)
    elif shape == "jitter":
        t = T0 + np.cumsum(15000 + rng.integers(-50, 51, n))
    elif shape == "edges":
        t = T0 + np.cumsum(15000 + np.cumsum(rng.choice(np.array(DOD_EDGES[:21]), n)))
    else:
        t = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    vshape = draw(st.sampled_from(["const", "counter", "random", "special"]))
    if vshape == "const":
        v = np.full(n, 3.25)
    elif vshape == "counter":
        v = np.cumsum(rng.integers(0, 100, n)).astype(np.float64)
    elif vshape == "random":
        v = rng.integers(0, 2**64, n, dtype=np.uint64).view(np.float64)
    else:
        v = rng.choice(np.array(SPECIAL_BITS, dtype=np.uint64), n).view(np.float64)
    return t.astype(np.int64), v


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- properties


@FAST
@given(series(max_size=120), st.booleans())
def test_encode_matches_go_model(tv, quirk):
    t, v = tv
    assert encode_xor(t, v, prom2_quirk=quirk) == go_encode(t, v, v2=quirk)


@FAST
@given(series(max_size=300), st.booleans())
def test_round_trip(tv, quirk):
    t, v = tv
    d = encode_xor(t, v, prom2_quirk=quirk)
    assert xor_num_samples(d) == len(t)
    assert_same(t, v, *decode_xor(d))
    assert_same(t, v, *decode_xor(memoryview(d)))
    assert_same(t, v, *decode_xor(np.frombuffer(d, dtype=np.uint8)))


@settings(max_examples=12, deadline=None)
@given(big_series(), st.booleans())
def test_round_trip_large(tv, quirk):
    t, v = tv
    d = encode_xor(t, v, prom2_quirk=quirk)
    assert xor_num_samples(d) == len(t)
    assert_same(t, v, *decode_xor(d))


@settings(max_examples=60, deadline=None)
@given(st.lists(series(min_size=0, max_size=150), min_size=0, max_size=12), st.booleans(), st.data())
def test_many_equals_single(chunks, quirk, data):
    t = np.concatenate([c[0] for c in chunks] + [np.zeros(0, np.int64)])
    v = np.concatenate([c[1] for c in chunks] + [np.zeros(0, np.float64)])
    bounds = np.cumsum([0] + [len(c[0]) for c in chunks])
    buf, offs = encode_xor_many(t, v, bounds, prom2_quirk=quirk)
    singles = [encode_xor(ct, cv, prom2_quirk=quirk) for ct, cv in chunks]
    assert isinstance(buf, bytes) and offs.dtype == np.int64 and len(offs) == len(chunks) + 1
    assert [buf[offs[i]:offs[i + 1]] for i in range(len(chunks))] == singles

    # decode from a buffer with gaps, in shuffled order, with one chunk twice
    order = data.draw(st.permutations(range(len(chunks)))) if chunks else []
    order = list(order) + list(order[:1])
    pieces, o, lengths = [b"junk"], [], []
    pos = 4
    for i in order:
        o.append(pos)
        lengths.append(len(singles[i]))
        pieces += [singles[i], b"\xff" * (i % 3)]
        pos += len(singles[i]) + i % 3
    blob = b"".join(pieces)
    for b in (blob, memoryview(blob), np.frombuffer(blob, dtype=np.uint8)):
        counts, t2, v2 = decode_xor_many(b, np.array(o, dtype=np.int64), np.array(lengths, dtype=np.int64))
        assert counts.dtype == np.int64 and list(counts) == [len(chunks[i][0]) for i in order]
        exp_t = [chunks[i][0] for i in order] + [np.zeros(0, np.int64)]
        exp_v = [chunks[i][1] for i in order] + [np.zeros(0, np.float64)]
        assert_same(np.concatenate(exp_t), np.concatenate(exp_v), t2, v2)


# --------------------------------------------------------------------------- edge cases


def test_empty_chunk():
    d = encode_xor(np.zeros(0, np.int64), np.zeros(0))
    assert d == b"\x00\x00" and encode_xor([], [], prom2_quirk=True) == b"\x00\x00"
    t, v = decode_xor(d)
    assert len(t) == len(v) == 0 and t.dtype == np.int64 and v.dtype == np.float64
    counts, t, v = decode_xor_many(b"", np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert len(counts) == len(t) == len(v) == 0
    buf, offs = encode_xor_many([], [], np.array([0]))
    assert buf == b"" and list(offs) == [0]


def test_special_values_bit_exact():
    vb = np.array(SPECIAL_BITS * 3, dtype=np.uint64)
    v = vb.view(np.float64)
    t = T0 + 15000 * np.arange(len(v))
    for quirk in (False, True):
        t2, v2 = decode_xor(encode_xor(t, v, prom2_quirk=quirk))
        np.testing.assert_array_equal(bits(v2), vb)


def test_sig64_written_as_zero():
    # delta 0x8000000000000001: lead 0, trail 0, 64 significant bits -> 6-bit field 0
    v = np.array([0, 0x8000000000000001, 0], dtype=np.uint64).view(np.float64)
    t = np.array([0, 1, 2])
    d = encode_xor(t, v)
    assert d == go_encode(t, v)
    assert_same(t, v, *decode_xor(d))


def test_reuse_without_window_decodes_as_64_bits():
    """A '10' control with no prior window (appender re-created on a non-empty chunk) = 64 bits."""
    b = _GoBStream(v2=False)
    for byte in _uvarint(((5 << 1) ^ 0) & M64):
        b.write_byte(byte)
    b.write_bits(0x3FF0000000000000, 64)  # v0 = 1.0
    b.write_byte(10)  # dt = 10
    b.write_bits(0b10, 2)  # reuse window: decoder lead = trail = 0 -> 64 bits
    b.write_bits(0x3FF0000000000000 ^ 0x4000000000000000, 64)  # v1 = 2.0
    b.write_bit(0)  # dod 0
    b.write_bits(0b10, 2)  # reuse again, still 64 bits
    b.write_bits(0x4000000000000000 ^ 0x4008000000000000, 64)  # v2 = 3.0
    b.stream[0:2] = (3).to_bytes(2, "big")
    t, v = decode_xor(bytes(b.stream))
    assert list(t) == [5, 15, 25] and list(v) == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("dod", DOD_EDGES + [-(2**62), 2**63 - 1, -(2**63)])
def test_dod_bucket_edges(dod):
    t = np.array([T0, T0 + 1000, T0 + 2000 + dod, T0 + 3000 + 2 * dod], dtype=object)
    t = np.array([(int(x) + 2**63) % 2**64 - 2**63 for x in t], dtype=np.int64)
    v = np.ones(4)
    for quirk in (False, True):
        d = encode_xor(t, v, prom2_quirk=quirk)
        assert d == go_encode(t, v, v2=quirk)
        assert_same(t, v, *decode_xor(d))


def test_input_normalisation():
    t = [T0, T0 + 15000, T0 + 30000]
    v = [1.0, 2.0, 2.5]
    ref = encode_xor(np.array(t), np.array(v))
    assert encode_xor(t, v) == ref
    assert encode_xor(np.array(t, dtype=np.uint64), np.array(v, np.float32)) == ref
    tt = np.zeros(6, np.int64)
    tt[::2] = t
    vv = np.zeros(6)
    vv[::2] = v
    assert encode_xor(tt[::2], vv[::2]) == ref  # non-contiguous views
    t2, v2 = decode_xor(bytearray(ref))
    assert list(t2) == t and list(v2) == v


def test_decode_many_into():
    cases = [golden_case(g[0]) for g in GOLDEN[:12]]
    t = np.concatenate([c[0] for c in cases])
    v = np.concatenate([c[1] for c in cases])
    buf, offs = encode_xor_many(t, v, np.cumsum([0] + [len(c[0]) for c in cases]))
    starts, lengths = offs[:-1], np.diff(offs)
    t_out = np.full(len(t) + 5, -1, dtype=np.int64)
    v_out = np.zeros(len(t) + 5)
    counts, total = decode_xor_many_into(buf, starts, lengths, t_out, v_out)
    assert total == len(t) and list(counts) == [len(c[0]) for c in cases]
    assert_same(t, v, t_out[:total], v_out[:total])
    assert (t_out[total:] == -1).all()  # nothing written past the samples
    with pytest.raises(ValueError):
        decode_xor_many_into(buf, starts, lengths, t_out[: len(t) - 1], v_out)
    with pytest.raises(TypeError):
        decode_xor_many_into(buf, starts, lengths, t_out.astype(np.int32), v_out)
    with pytest.raises(TypeError):
        decode_xor_many_into(buf, starts, lengths, t_out, v_out[::2])
    with pytest.raises(CorruptChunkError) as ei:
        decode_xor_many_into(buf, starts, lengths - (np.arange(len(lengths)) == 3), t_out, v_out)
    assert ei.value.chunk_index == 3


def test_non_native_inputs():
    t, v = golden_case("jit:counter:33")
    ref = encode_xor(t, v)
    assert encode_xor(t.astype(">i8"), v.astype(">f8")) == ref  # byte-swapped: converted
    assert encode_xor(list(t), list(v)) == ref
    with pytest.raises(ValueError):
        encode_xor(t.reshape(3, 11), v.reshape(3, 11))
    buf, offs = encode_xor_many(t.astype(">i8"), v, np.array([0, 10, 33], dtype=">i8"))
    assert buf[offs[0]:offs[1]] == encode_xor(t[:10], v[:10])
    counts, t2, v2 = decode_xor_many(buf, [int(offs[0]), int(offs[1])], np.diff(offs).astype(np.int32))
    assert list(counts) == [10, 23]
    assert_same(t, v, t2, v2)


def test_api_errors():
    with pytest.raises(ValueError):
        encode_xor(np.arange(MAX_SAMPLES + 1), np.zeros(MAX_SAMPLES + 1))
    with pytest.raises(ValueError):
        encode_xor(np.arange(3), np.zeros(2))
    t, v = np.arange(10), np.zeros(10)
    for bounds in ([0, 11], [5, 4], [-1, 3], [], [0, 5, 3]):
        with pytest.raises(ValueError):
            encode_xor_many(t, v, np.array(bounds, dtype=np.int64))
    with pytest.raises(ValueError):
        encode_xor_many(np.arange(70000), np.zeros(70000), np.array([0, 70000]))
    with pytest.raises(ValueError):
        decode_xor_many(b"\x00\x00", np.array([0, 0]), np.array([2]))
    buf, offs = encode_xor_many(np.arange(70000), np.zeros(70000), np.array([0, 65535, 70000]))
    assert list(decode_xor_many(buf, offs[:-1], np.diff(offs))[0]) == [65535, 4465]


# --------------------------------------------------------------------------- corruption


def _valid_chunks():
    out = []
    for name in ("reg:const:120", "jit:counter:120", "dods:special:100", "wild:bits:50", "reg:bits:1",
                 "dods:counter:6", "neg:bits:9"):
        t, v = golden_case(name)
        out.append(encode_xor(t, v))
        out.append(encode_xor(t, v, prom2_quirk=True))
    return out


def test_truncated_at_every_byte_raises():
    for d in _valid_chunks():
        valid_prefix = len(d) - 1 if d[-1] == 0 and encode_xor(*decode_xor(d)) == d[:-1] else len(d)
        for cut in range(valid_prefix):
            with pytest.raises(CorruptChunkError) as ei:
                decode_xor(d[:cut])
            assert 0 <= ei.value.offset <= cut
            # batched: the bad chunk sits between two good ones; its index and offset are reported
            blob = d + d[:cut] + d
            with pytest.raises(CorruptChunkError) as ei:
                decode_xor_many(blob, np.array([0, len(d), len(d) + cut]), np.array([len(d), cut, len(d)]))
            err = ei.value
            assert err.chunk_index == 1 and len(d) <= err.offset <= len(d) + cut
            assert "XOR chunk 1" in str(err) and isinstance(err, CorruptBlockError)


def test_error_names_sample_and_offset():
    t, v = golden_case("jit:counter:120")
    d = encode_xor(t, v)
    with pytest.raises(CorruptChunkError) as ei:
        decode_xor(d[:100])
    e = ei.value
    assert e.sample_index > 0 and e.chunk_offset == e.offset < 100
    assert "truncated at sample" in str(e) and f"at offset {e.offset}" in str(e)
    with pytest.raises(CorruptChunkError):
        xor_num_samples(b"\x01")


def test_malformed_inputs():
    cases = [
        b"",  # no header
        b"\x00",
        b"\x00\x01" + b"\xff" * 10,  # t0 varint longer than 10 bytes
        b"\x00\x01" + b"\xff" * 9 + b"\x02" + bytes(8),  # 10th varint byte > 1: overflow
        b"\xff\xff" + bytes(20),  # 65535 samples cannot fit in 22 bytes
    ]
    # lead 31 + 64 significant bits > 64: a window no writer produces
    b = _GoBStream(False)
    b.write_byte(0)
    b.write_bits(0, 64)
    b.write_byte(1)
    b.write_bits(0b11, 2)
    b.write_bits(31, 5)
    b.write_bits(0, 6)
    b.write_bits(M64, 64)
    b.stream[0:2] = b"\x00\x02"
    cases.append(bytes(b.stream))
    for d in cases:
        with pytest.raises(CorruptChunkError):
            decode_xor(d)
        with pytest.raises(CorruptChunkError) as ei:
            decode_xor_many(b"\x00\x00" + d, np.array([0, 2]), np.array([2, len(d)]))
        assert ei.value.chunk_index == 1
    # chunk ranges outside the buffer
    for off, ln in ((0, 5), (3, 0), (-1, 2), (2, -1)):
        with pytest.raises(CorruptChunkError):
            decode_xor_many(b"\x00\x00", np.array([off]), np.array([ln]))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 400))
def test_garbage_never_crashes(blob, n):
    for d in (blob, n.to_bytes(2, "big") + blob):
        try:
            t, v = decode_xor(d)
        except CorruptChunkError:
            continue
        assert len(t) == len(v) == xor_num_samples(d)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(range(14)), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=4))
def test_bit_flips_never_crash(which, flips):
    d = bytearray(_valid_chunks()[which])
    for pos, bit in flips:
        d[pos % len(d)] ^= 1 << bit
    try:
        t, v = decode_xor(bytes(d))
    except CorruptChunkError:
        return
    assert len(t) == xor_num_samples(bytes(d))


# --------------------------------------------------------------------------- threads


def test_threads_share_nothing():
    """Large batches release the GIL; concurrent calls must not interfere."""
    rng = np.random.default_rng(7)
    k, n = 200, 120
    t = T0 + np.cumsum(15000 + rng.integers(-50, 51, k * n))
    v = np.cumsum(rng.integers(0, 100, k * n)).astype(np.float64)
    bounds = np.arange(0, k * n + 1, n)
    assert k * n >= chunkenc._xor.GIL_RELEASE_SAMPLES
    buf, offs = encode_xor_many(t, v, bounds)
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                b2, o2 = encode_xor_many(t, v, bounds)
                results.append((b2 == buf, decode_xor_many(b2, o2[:-1], np.diff(o2))))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and len(results) == 15
    for same, (counts, t2, v2) in results:
        assert same and (counts == n).all()
        assert_same(t, v, t2, v2)


# --------------------------------------------------------------------------- output bounded by the input


def test_header_count_is_capped_by_what_the_bytes_can_hold():
    """A header claiming 65535 samples in 3 bytes of data is refused with a clear error before
    anything is allocated; the cap is exact: the densest encoding (delta of delta 0, value
    unchanged: 2 bits per sample) fits, one sample more than its length can hold does not."""
    from pythanos.tsdb.chunkenc import xor_max_samples

    d = b"\xff\xff" + b"\x00\x00\x00"
    for call in (lambda: decode_xor(d), lambda: decode_xor_many(b"\x00\x00" + d, np.array([0, 2]), np.array([2, 5]))):
        with pytest.raises(CorruptChunkError, match="header claims 65535 samples, more than the chunk can hold "
                                                     r"\(at most 0 in 5 bytes\)"):
            call()
    for n in (1, 2, 3, 7, 120, 4000, 65535):
        dense = encode_xor(np.arange(n, dtype=np.int64) * 15_000, np.zeros(n))
        most = xor_max_samples(len(dense))
        assert n <= most < n + 8  # tight: only the padding bits are slack
        assert decode_xor(dense)[0].size == n
        if most < 65535:
            with pytest.raises(CorruptChunkError, match=f"claims {most + 1} samples"):
                decode_xor((most + 1).to_bytes(2, "big") + dense[2:])


_OVERLAPPING_REFS = r"""
import resource
import numpy as np
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from pythanos.tsdb.chunkenc import decode_xor_many, encode_xor
from pythanos.tsdb.errors import CorruptChunkError
dense = encode_xor(np.arange(65535, dtype=np.int64) * 15_000, np.zeros(65535))  # honest: 16 KB
k = 100_000  # every range the same bytes: 6.5e9 samples, 105 GB of output
try:
    decode_xor_many(dense, np.zeros(k, np.int64), np.full(k, len(dense), np.int64))
except CorruptChunkError as e:
    print(e.chunk_index, e)
"""


def test_overlapping_chunk_ranges_cannot_multiply_the_output():
    """Each chunk plausible on its own, but 100,000 ranges over the same 16 KB: the sum of the
    counts is checked against what the whole buffer can hold (before: 105 GB were asked for).
    Run in a child process with a 4 GB address-space limit, so a regression fails cleanly."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", _OVERLAPPING_REFS], capture_output=True, text=True, timeout=120,
                       env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-1500:]
    assert p.stdout.startswith("1 ") and "more than the 16397 bytes they share can hold" in p.stdout, p.stdout
    # side by side, the same chunks are fine
    dense = encode_xor(np.arange(65535, dtype=np.int64) * 15_000, np.zeros(65535))
    counts, t, _ = decode_xor_many(dense * 3, np.array([0, len(dense), 2 * len(dense)]), np.full(3, len(dense)))
    assert counts.tolist() == [65535] * 3 and len(t) == 3 * 65535
