"""Index format v2: encodings, byte sources, writer (prom2/prom3), ranged-read reader, matchers, corruption."""
from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peers import missing
from pythanos.tsdb.encoding import (Decbuf, VarintError, crc32c, decode_uvarint, decode_varint,
                                    encode_uvarint, encode_varint)
from pythanos.tsdb.errors import CorruptBlockError, CorruptChunkError, CorruptIndexError
from pythanos.tsdb.index import ChunkMeta, IndexReader, IndexWriter, IndexWriterError, Matcher
from pythanos.tsdb.source import BucketSource, BytesSource, FileSource

T0 = 1700000000000
EX_SYMBOLS = ["", "200", "500", "__name__", "a", "code", "get", "http_requests_total", "loc", "method", "temp"]
EX_SERIES = [
    ([("__name__", "http_requests_total"), ("code", "200"), ("method", "get")], [(T0, T0 + 45000, 8)]),
    ([("__name__", "http_requests_total"), ("code", "500"), ("method", "get")], [(T0, T0 + 45000, 40)]),
    ([("__name__", "temp"), ("loc", "a")], [(T0, T0 + 45000, 72)]),
]


def write(series, symbols=None, style="prom2") -> bytes:
    b = io.BytesIO()
    if symbols is None:
        symbols = {""} if style == "prom2" else set()
        for labels, _ in series:
            for n, v in labels:
                symbols.add(n)
                symbols.add(v)
    w = IndexWriter(b, symbols, style=style)
    for labels, cms in series:
        w.add_series(labels, cms)
    w.close()
    return b.getvalue()


def reader(data: bytes) -> IndexReader:
    return IndexReader(BytesSource(data), block="01TESTBLOCK", file="index")


# --------------------------------------------------------------------------- errors / encoding

def test_error_str_and_hierarchy():
    e = CorruptIndexError("01B", "index", 42, "bad")
    assert str(e) == "corrupt block 01B: index at offset 42: bad"
    assert (e.block, e.file, e.offset, e.what) == ("01B", "index", 42, "bad")
    assert isinstance(e, CorruptBlockError) and issubclass(CorruptChunkError, CorruptBlockError)


@pytest.mark.parametrize("n,hexed", [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02"),
                                     ((1 << 64) - 1, "ffffffffffffffffff01")])
def test_uvarint_vectors(n, hexed):
    assert encode_uvarint(n).hex() == hexed
    assert decode_uvarint(bytes.fromhex(hexed)) == (n, len(hexed) // 2)


@pytest.mark.parametrize("n,hexed", [(0, "00"), (-1, "01"), (1, "02"), (-64, "7f"), (64, "8001"),
                                     (T0, "80a0abfef962"), (-(1 << 63), "ffffffffffffffffff01")])
def test_varint_vectors(n, hexed):
    assert encode_varint(n).hex() == hexed
    assert decode_varint(bytes.fromhex(hexed)) == (n, len(hexed) // 2)


@given(st.integers(-(1 << 63), (1 << 63) - 1))
@settings(max_examples=200, deadline=None)
def test_varint_roundtrip(n):
    assert decode_varint(encode_varint(n))[0] == n
    if n >= 0:
        assert decode_uvarint(encode_uvarint(n))[0] == n


def test_varint_errors():
    with pytest.raises(VarintError):
        decode_uvarint(b"\x80\x80")
    with pytest.raises(VarintError):
        decode_uvarint(b"\xff" * 10 + b"\x01")
    with pytest.raises(VarintError):
        decode_uvarint(b"\xff" * 9 + b"\x02")
    d = Decbuf(b"\x00\x80", base=100, block="B", file="index", err=CorruptIndexError, pos=1)
    with pytest.raises(CorruptIndexError) as ei:
        d.uvarint()
    assert ei.value.offset == 101 and ei.value.file == "index" and ei.value.block == "B"
    d = Decbuf(b"\x00\x01", base=7)
    with pytest.raises(CorruptBlockError) as ei:
        d.be32()
    assert ei.value.offset == 7
    with pytest.raises(CorruptBlockError):
        Decbuf(b"\x05ab").uvarint_str()


def test_crc32c():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(memoryview(b"123456789")) == 0xE3069283
    assert crc32c(bytearray(b"123456789")) == 0xE3069283


# --------------------------------------------------------------------------- sources

class FakeBucket:
    def __init__(self, objs):
        self.objs = objs
        self.calls = []

    def get_range(self, key, offset, length):
        self.calls.append((offset, length))
        return self.objs[key][offset:offset + length]

    def attributes(self, key):
        class A:
            size = len(self.objs[key])
        return A()


def test_sources(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    with FileSource(p) as fs:
        assert fs.size() == 0 and fs.read(0, 0) == b""
        with pytest.raises(CorruptBlockError) as ei:
            fs.read(0, 1)
        assert ei.value.file == "empty"
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")
    with FileSource(p, block="B") as fs:
        assert fs.read(3, 4) == b"3456"
        with pytest.raises(CorruptBlockError) as ei:
            fs.read(8, 3)
        assert (ei.value.block, ei.value.file, ei.value.offset) == ("B", "f", 8)
    bs = BytesSource(b"0123456789", name="x")
    assert bs.read(9, 1) == b"9"
    with pytest.raises(CorruptBlockError):
        bs.read(-1, 2)
    fb = FakeBucket({"k": b"0123456789"})
    src = BucketSource(fb, "k", "blk/index", readahead=4)
    assert src.size() == 10 and src.read(0, 2) == b"01" and src.read(2, 2) == b"23"
    assert len(fb.calls) == 1
    assert src.read(8, 2) == b"89"
    with pytest.raises(CorruptBlockError) as ei:
        src.read(9, 2)
    assert ei.value.file == "blk/index"
    fb.objs["k"] = b"012"  # object shrank: short ranged read
    with pytest.raises(CorruptBlockError):
        BucketSource(fb, "k", "blk/index", size=10).read(0, 10)


# --------------------------------------------------------------------------- verified example (§3.9)

def test_verified_example_prom2_bytes():
    data = write(EX_SERIES, EX_SYMBOLS)
    assert data[:5].hex() == "baaad70002"
    sym = data[5:82]
    assert sym[:8].hex() == "000000450000000b"
    assert sym[-4:].hex() == "0d05ea7b"
    assert data[82:0x60] == b"\x00" * (0x60 - 82)
    assert data[0x60:0x60 + 24].hex() == "12030307050109060180a0abfef962c8df0208" + "136117fd" + "00"
    toc = struct.unpack(">6Q", data[-52:-4])
    assert toc == (5, 82, 181, 400, 272, 449)
    assert struct.unpack(">I", data[-4:])[0] == crc32c(data[-52:-4])
    r = reader(data)
    assert r.symbols() == EX_SYMBOLS
    assert r.all_postings().tolist() == [6, 8, 10]
    assert r.postings("__name__", "http_requests_total").tolist() == [6, 8]
    assert r.postings("code", "404").tolist() == [] and r.postings("nope", "x").tolist() == []
    assert r.label_names() == ["__name__", "code", "loc", "method"]
    assert r.label_values("__name__") == ["http_requests_total", "temp"]
    assert r.label_values("nope") == []
    assert r.series(6) == (EX_SERIES[0][0], [ChunkMeta(T0, T0 + 45000, 8)])
    assert [s[0] for s in r.series_many([10, 6, 8, 6])] == [EX_SERIES[i][0] for i in (2, 0, 1, 0)]


def test_prom3_layout():
    data = write(EX_SERIES, EX_SYMBOLS[1:], style="prom3")
    r = reader(data)
    t = r.toc
    assert t.label_indices == t.postings and t.label_indices_table == t.postings_table
    assert t.symbols == 5
    assert len(r.all_postings()) == 3
    for ref, (labels, cms) in zip(r.all_postings(), EX_SERIES):
        assert r.series(ref) == (labels, [ChunkMeta(*c) for c in cms])
    # prom2 and prom3 differ only by the legacy structures: same postings and series
    r2 = reader(write(EX_SERIES, EX_SYMBOLS[1:], style="prom2"))
    assert r2.all_postings().tolist() == r.all_postings().tolist()


def test_collecting_writer_and_file(tmp_path):
    p = tmp_path / "index"
    w = IndexWriter(p)  # symbols collected, "" added for prom2
    for labels, cms in EX_SERIES:
        w.add_series(labels, cms)
    w.close()
    assert p.read_bytes() == write(EX_SERIES, EX_SYMBOLS)
    with IndexReader.open(p) as r:
        assert r.file == "index" and r.block == tmp_path.name
        assert r.postings_for_matchers([Matcher("=", "method", "get")]).tolist() == [6, 8]


def test_promtool_parity(tmp_path):
    """Blocks written by promtool 2.42: our reader reads them and our prom2 writer reproduces the index bytes."""
    promtool = shutil.which("promtool") or missing("promtool (Debian package prometheus)")
    rnd = random.Random(7)
    lines = []
    for m in range(3):
        lines.append(f"# TYPE metric_{m} gauge")
        for s in range(rnd.randint(1, 30)):
            lbl = {"job": f"j{rnd.randint(0, 5)}", "instance": f"host-{s}:9100"}
            if rnd.random() < 0.3:
                lbl["zone"] = rnd.choice(["eu-€", "üs", "ap"])
            body = ",".join(f'{k}="{v}"' for k, v in sorted(lbl.items()))
            n = rnd.choice([1, 5, 250])
            t = 1700000000
            for _ in range(n):
                t += rnd.randint(1, 20)
                lines.append(f"metric_{m}{{{body}}} {rnd.random()} {t}")
    # the input must be sorted by metric family then series only for uniqueness; duplicates removed
    seen, out = set(), []
    for ln in lines:
        key = ln.rsplit(" ", 1)[0].rsplit(" ", 1)[0] + ln.rsplit(" ", 1)[1]
        if ln.startswith("#") or key not in seen:
            seen.add(key)
            out.append(ln)
    (tmp_path / "in.om").write_text("\n".join(out) + "\n# EOF\n")
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(tmp_path / "in.om"),
                    str(tmp_path / "out")], check=True, capture_output=True, timeout=60)
    indexes = [os.path.join(tmp_path, "out", d, "index") for d in os.listdir(tmp_path / "out")]
    assert indexes
    for p in indexes:
        orig = open(p, "rb").read()
        with IndexReader.open(p) as r:
            refs = r.all_postings()
            series = r.series_many(refs)
            assert any(len(c) > 1 for _, c in series)
            assert [s[0] for s in series] == sorted(s[0] for s in series)
            assert write(series, r.symbols()) == orig
            # matchers agree with brute force on the real block
            for ms in ([Matcher("=~", "job", "j[0-2]")], [Matcher("!=", "zone", "ap")],
                       [Matcher("=", "zone", "")], [Matcher("=~", "instance", "host-1.*"), Matcher("!~", "job", "j1")]):
                got = r.postings_for_matchers(ms).tolist()
                want = [int(ref) for ref, (labels, _) in zip(refs, series) if brute(labels, ms)]
                assert got == want, ms
    # promtool 2.42 reads our prom3-style index (no legacy label indices, no "" symbol) identically
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "out", copy)
    for d in (tmp_path / "out", copy):
        (d / "wal").mkdir(exist_ok=True)
    for p in indexes:
        p2 = str(copy / os.path.relpath(p, tmp_path / "out"))
        with IndexReader.open(p) as r:
            series = r.series_many(r.all_postings())
            syms = [s for s in r.symbols() if s]
        with open(p2, "wb") as f:
            f.write(write(series, syms, style="prom3"))

    def dump(d):
        return subprocess.run([promtool, "tsdb", "dump", str(d)], check=True, capture_output=True, timeout=60).stdout

    d1 = dump(tmp_path / "out")
    assert d1.count(b"\n") > 100 and dump(copy) == d1


# --------------------------------------------------------------------------- writer constraints

@pytest.mark.parametrize("series,msg", [
    ([([("a", "2")], []), ([("a", "1")], [])], "out of order"),
    ([([("a", "1")], []), ([("a", "1")], [])], "out of order"),
    ([([("b", "1"), ("a", "1")], [])], "sorted"),
    ([([("a", "1"), ("a", "2")], [])], "duplicate"),
    ([([("a", "")], [])], "empty value"),
    ([([("", "x")], [])], "empty label name"),
    ([([("a", "1")], [(10, 5, 8)])], "maxt"),
    ([([("a", "1")], [(1, 5, 8), (5, 7, 9)])], "overlaps"),
    ([([("a", "1")], [(1, 5, 9), (6, 7, 8)])], "chunk ref"),
    ([([("a", "1")], [(1, 5, 9)]), ([("a", "2")], [(1, 5, 8)])], "chunk ref"),
    ([([("a", "1"), ("zzz", "q")], [])], "not in the symbol table"),
])
def test_writer_constraints(series, msg):
    w = IndexWriter(io.BytesIO(), ["a", "b", "1", "2", "x", ""])
    with pytest.raises(IndexWriterError, match=msg):
        for labels, cms in series:
            w.add_series(labels, cms)
    with pytest.raises(ValueError):
        IndexWriter(io.BytesIO(), [], style="prom4")


def test_writer_accepts_edge_cases():
    series = [([("a", "1")], []),  # no chunks
              ([("a", "1"), ("b", "2")], [(-5, -5, 8), (-4, 2**40, 8), (2**40 + 1, 2**62, 2**40)])]
    r = reader(write(series))
    got = r.series_many(r.all_postings())
    assert got == [(l, [ChunkMeta(*c) for c in cms]) for l, cms in series]


# --------------------------------------------------------------------------- round trip (hypothesis)

label_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6)
label_sets = st.dictionaries(label_text, label_text, min_size=1, max_size=4).map(lambda d: sorted(d.items()))


@st.composite
def indexes(draw):
    sets = draw(st.lists(label_sets, min_size=0, max_size=25, unique_by=lambda l: tuple(l)))
    sets.sort()
    ref = draw(st.integers(0, 2**40))
    series = []
    for labels in sets:
        cms = []
        t = draw(st.integers(-(2**50), 2**50))
        for _ in range(draw(st.integers(0, 4))):
            mint = t + draw(st.integers(1, 2**33))
            maxt = mint + draw(st.integers(0, 2**33))
            ref += draw(st.integers(0, 2**20))
            cms.append((mint, maxt, ref))
            t = maxt
        series.append((labels, cms))
    return series, draw(st.sampled_from(["prom2", "prom3"]))


def brute(labels, matchers):
    d = dict(labels)
    return all(m.matches(d.get(m.name, "")) for m in matchers)


@given(indexes(), st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_roundtrip(case, data):
    series, style = case
    blob = write(series, style=style)
    r = reader(blob)
    refs = r.all_postings()
    assert len(refs) == len(series)
    got = r.series_many(refs)
    assert got == [(l, [ChunkMeta(*c) for c in cms]) for l, cms in series]
    assert [r.series(x) for x in refs[:3]] == got[:3]
    names = sorted({n for l, _ in series for n, _ in l})
    assert r.label_names() == names
    for n in names:
        vals = sorted({v for l, _ in series for ln, v in l if ln == n})
        assert r.label_values(n) == vals
        for v in vals[:3]:
            want = [int(x) for x, (l, _) in zip(refs, series) if (n, v) in l]
            assert r.postings(n, v).tolist() == want
    # random matchers against brute force
    if names:
        values = sorted({v for l, _ in series for _, v in l})
        ms = []
        for _ in range(data.draw(st.integers(1, 3))):
            t = data.draw(st.sampled_from(["=", "!=", "=~", "!~"]))
            n = data.draw(st.sampled_from(names + ["absent"]))
            if t in ("=", "!="):
                v = data.draw(st.sampled_from(values + [""]))
            else:
                v = data.draw(st.sampled_from([".*", ".+", "", "|" + values[0].replace("|", "")]
                                              + [f"{c}.*" for c in "abcAé"]))
                try:
                    Matcher(t, n, v)
                except ValueError:
                    v = ".*"
            ms.append(Matcher(t, n, v))
        want = [int(x) for x, (l, _) in zip(refs, series) if brute(l, ms)]
        assert r.postings_for_matchers(ms).tolist() == want, ms


# --------------------------------------------------------------------------- matchers

MS = [
    ([("__name__", "up"), ("instance", "a:1"), ("job", "api")], []),
    ([("__name__", "up"), ("instance", "b:1"), ("job", "api")], []),
    ([("__name__", "up"), ("instance", "c:1"), ("job", "db")], []),
    ([("__name__", "up"), ("job", "db")], []),
    ([("__name__", "x\ny"), ("foo", "bar")], []),
]


@pytest.mark.parametrize("matchers,want", [
    ([("=", "__name__", "up")], [0, 1, 2, 3]),
    ([("=", "job", "api")], [0, 1]),
    ([("=", "job", "nope")], []),
    ([("=", "nope", "x")], []),
    ([("=", "instance", "")], [3, 4]),
    ([("=", "nope", "")], [0, 1, 2, 3, 4]),
    ([("!=", "job", "api")], [2, 3, 4]),
    ([("!=", "instance", "")], [0, 1, 2]),
    ([("!=", "nope", "x")], [0, 1, 2, 3, 4]),
    ([("!=", "nope", "")], []),
    ([("=~", "instance", "a.*")], [0]),
    ([("=~", "instance", "a")], []),               # fully anchored
    ([("=~", "instance", "(a|b):1")], [0, 1]),
    ([("=~", "instance", "|a:1")], [0, 3, 4]),     # matches empty: also series without the label
    ([("=~", "instance", ".*")], [0, 1, 2, 3, 4]),
    ([("=~", "instance", ".+")], [0, 1, 2]),
    ([("=~", "job", "API|db")], [2, 3]),
    ([("=~", "job", "(?i)API")], [0, 1]),
    ([("=~", "__name__", "x.y")], [4]),            # . matches newline
    ([("!~", "job", "api|db")], [4]),
    ([("!~", "instance", ".+")], [3, 4]),
    ([("!~", "instance", "")], [0, 1, 2]),
    ([("!~", "job", "a.*")], [2, 3, 4]),
    ([("=", "__name__", "up"), ("=~", "instance", "a.*|c.*")], [0, 2]),
    ([("=", "__name__", "up"), ("!=", "job", "db"), ("=~", "instance", ".+")], [0, 1]),
    ([("=", "job", "db"), ("=", "instance", "")], [3]),
    ([("=", "job", "db"), ("=", "job", "api")], []),
    ([("=", "", "")], [0, 1, 2, 3, 4]),
    ([("=", "", "x")], []),
    ([], []),
])
def test_matchers(matchers, want):
    r = reader(write(MS))
    refs = r.all_postings()
    ms = [Matcher(*m) for m in matchers]
    assert r.postings_for_matchers(ms).tolist() == [int(refs[i]) for i in want]
    if ms:
        assert [i for i, (l, _) in enumerate(MS) if brute(l, ms)] == want


def test_matcher_validation():
    with pytest.raises(ValueError):
        Matcher("==", "a", "b")
    with pytest.raises(ValueError):
        Matcher("=~", "a", "(")
    assert str(Matcher("!~", "a", 'x"y')) == 'a!~"x\\"y"'


# --------------------------------------------------------------------------- ranged reads

def test_ranged_reads_through_bucket():
    series = [([("i", f"{k:03d}"), ("j", str(k % 7))], [(k, k, k * 10)]) for k in range(300)]
    blob = write(series)
    fb = FakeBucket({"b/index": blob})
    r = IndexReader(BucketSource(fb, "b/index", "index"), block="b")
    fb.calls.clear()
    r.postings("j", "3")
    assert len(fb.calls) == 1 and fb.calls[0][1] < 1000
    fb.calls.clear()
    assert r.postings_for_matchers([Matcher("=~", "i", "0.*")]).size == 100
    assert len(fb.calls) == 1  # adjacent lists coalesced
    fb.calls.clear()
    ref = int(r.all_postings()[5])
    fb.calls.clear()
    assert r.series(ref)[0] == series[5][0]
    assert len(fb.calls) == 1 and fb.calls[0][1] <= 512
    fb.calls.clear()
    got = r.series_many(r.postings("j", "0"))
    assert [g[0] for g in got] == [s[0] for s in series if s[0][1][1] == "0"]
    assert len(fb.calls) <= 3


def test_big_series_entry_extends_window():
    cms = [(k * 10, k * 10 + 5, k) for k in range(500)]
    series = [([("a", "1")], cms), ([("a", "2")], cms[:1] and [(0, 1, 600)])]
    r = reader(write(series))
    got = r.series_many(r.all_postings())
    assert got[0][1] == [ChunkMeta(*c) for c in cms]
    assert r.series(r.all_postings()[0])[1][-1] == ChunkMeta(*cms[-1])


# --------------------------------------------------------------------------- corruption

def corrupt_ok(blob: bytes, deep: bool = True):
    """Open and fully read ``blob``; any failure must be a CorruptIndexError naming the file."""
    try:
        r = reader(blob)
        if deep:
            refs = r.all_postings()
            r.series_many(refs)
            for n in r.label_names():
                for v in r.label_values(n):
                    r.postings(n, v)
            r.postings_for_matchers([Matcher("=~", "__name__", ".+"), Matcher("!=", "code", "200")])
    except CorruptIndexError as e:
        assert e.file == "index" and e.block == "01TESTBLOCK"
        assert 0 <= e.offset <= len(blob) + 16
        assert str(e).startswith("corrupt block 01TESTBLOCK: index at offset ")
        return e
    return None


def test_truncated_at_every_length():
    blob = write(EX_SERIES, EX_SYMBOLS)
    for n in range(len(blob)):
        assert corrupt_ok(blob[:n]) is not None, n


def test_bad_header():
    blob = write(EX_SERIES, EX_SYMBOLS)
    e = corrupt_ok(b"\x00" + blob[1:])
    assert e.offset == 0 and "magic" in e.what
    for v in (0, 1, 4, 255):
        e = corrupt_ok(blob[:4] + bytes([v]) + blob[5:])
        assert e.offset == 4 and f"version {v}" in e.what
    r = reader(blob[:4] + b"\x03" + blob[5:])  # v3 reads like v2
    assert r.version == 3 and r.all_postings().tolist() == [6, 8, 10]


@pytest.mark.parametrize("where,what", [
    (lambda toc: len_blob() - 10, "TOC"),
    (lambda toc: toc[0] + 12, "symbol table"),
    (lambda toc: toc[5] + 12, "postings offset table"),
    (lambda toc: toc[4] + 9, "postings list"),
    (lambda toc: 0x60 + 5, "series ref 6"),
])
def test_crc_mismatch_in_each_section(where, what):
    blob = bytearray(write(EX_SERIES, EX_SYMBOLS))
    toc = struct.unpack(">6Q", blob[-52:-4])
    at = where(toc)
    blob[at] ^= 0x01
    e = corrupt_ok(bytes(blob))
    assert e is not None and what in e.what and "CRC32C mismatch" in e.what


def len_blob():
    return len(write(EX_SERIES, EX_SYMBOLS))


def test_series_ref_out_of_range():
    r = reader(write(EX_SERIES, EX_SYMBOLS))
    for ref in (0, 1, 5, 7, 10**6, 2**32):
        with pytest.raises(CorruptIndexError) as ei:
            r.series(ref)
        if ref not in (7,):
            assert ei.value.offset == ref * 16 and "series ref" in ei.value.what
    with pytest.raises(CorruptIndexError):
        r.series_many([6, 10**6])


def test_bad_toc_offsets_and_tables():
    blob = bytearray(write(EX_SERIES, EX_SYMBOLS))
    toc = list(struct.unpack(">6Q", blob[-52:-4]))

    def with_toc(t):
        b = bytearray(blob)
        tb = struct.pack(">6Q", *t)
        b[-52:-4] = tb
        b[-4:] = struct.pack(">I", crc32c(tb))
        return bytes(b)

    for i, v in [(0, 2**40), (5, 2**40), (5, 3), (0, 0), (5, toc[4]), (0, toc[1])]:
        t = list(toc)
        t[i] = v
        assert corrupt_ok(with_toc(t)) is not None, (i, v)
    # a bogus label-index table is tolerated (nobody reads it)
    t = list(toc)
    t[2] = t[3] = 0
    r = reader(with_toc(t))
    assert r.postings("code", "500").tolist() == [8]


def test_random_corruption_never_escapes():
    blob = write([(l, c) for l, c in EX_SERIES], EX_SYMBOLS)
    rnd = random.Random(1)
    failures = 0
    for _ in range(400):
        b = bytearray(blob)
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        if corrupt_ok(bytes(b)) is not None:
            failures += 1
    assert failures > 300


def test_postings_offset_table_with_bad_entry():
    """Re-sign a postings offset table whose entry points past the end: error, not IndexError."""
    blob = bytearray(write(EX_SERIES, EX_SYMBOLS))
    toc = struct.unpack(">6Q", blob[-52:-4])
    pt = toc[5]
    n = struct.unpack(">I", blob[pt:pt + 4])[0]
    body = bytearray(blob[pt + 4:pt + 4 + n])
    # first entry: 02 00 00 <uvarint offset>; replace its offset with a huge one
    assert body[4:7] == b"\x02\x00\x00"
    old_len = 1 if body[7] < 0x80 else 2
    body[7:7 + old_len] = encode_uvarint(2**40)
    newsec = struct.pack(">I", len(body)) + body + struct.pack(">I", crc32c(bytes(body)))
    b = bytes(blob[:pt]) + newsec + bytes(blob[-52:])
    e = corrupt_ok(b)
    assert e is not None and "postings offset table" in e.what


def _resign_postings(blob: bytes, off: int, refs: list[int]) -> bytes:
    b = bytearray(blob)
    body = struct.pack(">I", len(refs)) + np.asarray(refs, ">u4").tobytes()
    assert struct.unpack(">I", b[off:off + 4])[0] == len(body)
    b[off + 4:off + 4 + len(body)] = body
    b[off + 4 + len(body):off + 8 + len(body)] = struct.pack(">I", crc32c(body))
    return bytes(b)


def test_unsorted_postings_detected():
    blob = write(EX_SERIES, EX_SYMBOLS)
    r = reader(blob)
    off, _ = r.postings_range("__name__", "http_requests_total")
    bad = reader(_resign_postings(blob, off, [8, 6]))
    with pytest.raises(CorruptIndexError) as ei:
        bad.postings("__name__", "http_requests_total")
    assert ei.value.offset == off + 8
    with pytest.raises(CorruptIndexError, match="not strictly increasing"):
        bad.postings_for_matchers([Matcher("=~", "__name__", ".+")])
    # a list that points at refs which are not series entries
    off, _ = r.postings_range("code", "200")
    bad = reader(_resign_postings(blob, off, [7]))
    refs = bad.postings_for_matchers([Matcher("=", "code", "200")])
    with pytest.raises(CorruptIndexError):
        bad.series_many(refs)


def test_empty_index():
    for style in ("prom2", "prom3"):
        r = reader(write([], style=style))
        assert r.all_postings().tolist() == [] and r.label_names() == []
        assert r.postings_for_matchers([Matcher("=", "a", "")]).tolist() == []
        assert r.series_many([]) == []


# --------------------------------------------------------------------------- linear-time regexes

def _run_bounded(code: str) -> str:
    """``code`` in a fresh interpreter, which must finish: a backtracking engine would not (2^40
    steps holding the GIL), RE2 takes microseconds. The timeout only keeps a regression from
    hanging the suite; nothing is timed."""
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_pathological_regex_matchers_run_in_linear_time():
    out = _run_bounded(r'''
import io
from pythanos.tsdb.index import IndexReader, IndexWriter, Matcher
from pythanos.tsdb.source import BytesSource

x, a = "x" * 48, "a" * 48 + "!"
print(Matcher("=~", "l", "(x|x)*y").matches(x), Matcher("!~", "l", "(x|x)*y").matches(x),
      Matcher("=~", "l", "(a+)+").matches(a), Matcher("=~", "l", "(a|aa)*!").matches(a),
      Matcher("=~", "l", "(x+x+)+").matches(x))
# the store gateway's path: postings of the values a regex matches
series = [([("__name__", "m"), ("l", v)], [(0, 1, 8 * i)]) for i, v in enumerate(sorted((x, a, "xy", "y")))]
b = io.BytesIO()
w = IndexWriter(b, {""} | {s for l, _ in series for kv in l for s in kv}, style="prom2")
for l, cms in series:
    w.add_series(l, cms)
w.close()
r = IndexReader(BytesSource(b.getvalue()), block="01TESTBLOCK", file="index")
print(len(r.postings_for_matchers([Matcher("=~", "l", "(x|x)*y")])),
      len(r.postings_for_matchers([Matcher("=", "__name__", "m"), Matcher("!~", "l", "(x|x)*y|(a+)+")])))
''')
    assert out.splitlines() == ["False True False True True", "2 2"]
