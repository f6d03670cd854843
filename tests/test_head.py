"""The in-memory TSDB head (pythanos.tsdb.head + the _head kernel).

1. Append semantics as Prometheus v3.9.1's head appender: each status, mixed good and bad
   samples in one batch, equal duplicates ignored, the Append/Commit split inside one batch,
   NaN and stale-marker bit patterns, the appendable window of a fresh head.
2. Chunks: cut where ``block.cut_head`` cuts (positive times, small values) and where a
   reference of v3.9.1's appendPreprocessor cuts (float computeChunkEndTime, 1005-byte cap),
   with bytes equal to ``encode_xor`` of the same samples.
3. Series lookup by label blob: many blobs per call, forced hash collisions, table growth, bad
   blobs and offsets rejected with their index.
4. Selection with matchers, label names/values, truncation and garbage collection.
5. Blocks cut from the head: ``promtool tsdb analyze``, our BlockReader and a real Prometheus
   3.9.1 serving them all see exactly the appended samples.
6. Kernel robustness (hypothesis): bad refs, NaNs, random bytes as blobs, a large batch.
7. Figures (printed, not asserted): append throughput and memory per series / sample.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pythanos.tsdb.block import BlockReader, cut_head, range_end
from pythanos.tsdb.chunkenc import decode_xor, encode_xor
from pythanos.tsdb.head import (AT_COMMIT, BAD_REF, DUP_OK, DUPLICATE, OK, OOO_OK, OUT_OF_BOUNDS, OUT_OF_ORDER,
                                TOO_OLD, Head, blob_from_labels, blobs_from_labels, labels_from_blob, status_error)
from pythanos.tsdb.labels import Matcher

from blockdirs import blocks_by_time

H2 = 2 * 3600 * 1000
T0 = 1_700_000_000_000
STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]


def one_series(h: Head, **labels) -> int:
    refs, _ = h.get_or_create_labels([labels or {"__name__": "m"}])
    return int(refs[0])


def head_samples(h: Head, ref: int) -> tuple[np.ndarray, np.ndarray]:
    hc = h.select([ref])
    ts, vs = [], []
    for j in range(len(hc.mint)):
        t, v = decode_xor(hc.chunk(j))
        ts.append(t)
        vs.append(v)
    if not ts:
        return np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(ts), np.concatenate(vs)


# --- 1. append semantics -----------------------------------------------------------------------------

def test_blob_roundtrip_and_order():
    b = blob_from_labels({"job": "a", "__name__": "up", "é": "✓"})
    assert labels_from_blob(b) == (("__name__", "up"), ("job", "a"), ("é", "✓"))
    assert b == blob_from_labels([("é", "✓"), ("__name__", "up"), ("job", "a")])
    buf, offs = blobs_from_labels([{"a": "1"}, {}])
    assert offs.tolist() == [0, len(blob_from_labels({"a": "1"})), len(buf)]


def test_append_status_each_case():
    h = Head()
    r = one_series(h)
    assert h.append([r], [T0], [1.0]).tolist() == [OK]
    assert h.min_time == h.max_time == T0
    st = h.append([r, r, r, r, r, 999, -1], [T0, T0, T0 - 1, T0 + 10, T0 - 2 * H2, T0 + 20, T0 + 20],
                  [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert st.tolist() == [DUP_OK, DUPLICATE, OUT_OF_ORDER, OK, OUT_OF_BOUNDS, BAD_REF, BAD_REF]
    assert [status_error(s) for s in st.tolist()] == [
        None, "duplicate sample for timestamp", "out of order sample", None, "out of bounds",
        "unknown series ref", "unknown series ref"]
    t, v = head_samples(h, r)
    assert t.tolist() == [T0, T0 + 10] and v.tolist() == [1.0, 4.0]
    assert h.max_time == T0 + 10 and h.samples_appended == 2


def test_bad_samples_never_stop_good_ones():
    h = Head()
    refs, _ = h.get_or_create_labels([{"s": str(i)} for i in range(3)])
    rng = np.random.default_rng(5)
    n = 3000
    sr = rng.integers(0, 3, n)
    ts = T0 + rng.integers(0, 100_000, n)  # plenty out of order and duplicates
    vs = rng.integers(0, 3, n).astype(float)
    st = h.append(refs[sr], ts, vs)
    # replay the batch as Prometheus' appender: Append against the state before, Commit in order
    last = {}
    for i in range(n):
        s, t, v = int(sr[i]), int(ts[i]), float(vs[i])
        if s not in last or t > last[s][0]:
            want = OK
            last[s] = (t, v)
        elif t == last[s][0]:
            want = DUP_OK if v == last[s][1] else DUPLICATE
        else:
            want = OUT_OF_ORDER
        # before the batch every series was empty: Append accepts all, so errors are Commit's
        if want not in (OK,):
            want |= AT_COMMIT
        assert st[i] == want, i
    for s in range(3):
        t, _ = head_samples(h, int(refs[s]))
        assert np.all(np.diff(t) > 0)
        assert len(t) == int(((sr == s) & (st == OK)).sum())


def test_append_then_commit_split_within_a_batch():
    h = Head()
    r = one_series(h)
    h.append([r], [T0], [1.0])
    # Append-time rejections (against T0) carry no flag; Commit-time ones do
    st = h.append([r] * 6, [T0 + 10, T0 + 5, T0 + 10, T0 + 10, T0 - 5, T0], [2.0, 1.0, 2.0, 3.0, 1.0, 1.0])
    assert st.tolist() == [OK, OUT_OF_ORDER | AT_COMMIT, DUP_OK | AT_COMMIT, DUPLICATE | AT_COMMIT,
                           OUT_OF_ORDER, OUT_OF_ORDER | AT_COMMIT]
    assert [status_error(s) for s in st.tolist()] == [None, None, None, None, "out of order sample", None]


def test_nan_and_stale_marker_bits():
    h = Head()
    r = one_series(h)
    nan2 = np.array([0x7FF8000000000001], dtype=np.uint64).view(np.float64)[0]
    st = h.append([r] * 5, [T0, T0, T0 + 1, T0 + 1, T0 + 1], [math.nan, math.nan, STALE_NAN, STALE_NAN, nan2])
    # equal bits are an equal duplicate (NaN included), other NaN bits a duplicate with another value
    assert st.tolist() == [OK, DUP_OK | AT_COMMIT, OK, DUP_OK | AT_COMMIT, DUPLICATE | AT_COMMIT]
    _, v = head_samples(h, r)
    assert v.view(np.uint64).tolist() == [np.array([math.nan]).view(np.uint64)[0], STALE_NAN_BITS]


def test_appendable_window_of_a_fresh_head():
    h = Head()
    r = one_series(h)
    # the first sample starts the head: the window reaches half a chunk range behind it
    st = h.append([r, r, r], [T0, T0 - H2 // 2, T0 - H2 // 2 - 1], [1, 2, 3])
    assert st.tolist() == [OK, OUT_OF_ORDER | AT_COMMIT, OUT_OF_BOUNDS]
    r2 = one_series(h, x="2")
    st = h.append([r2, r2], [T0 - H2 // 2 - 1, T0 - H2 // 2], [1, 2])
    assert st.tolist() == [OUT_OF_BOUNDS, OK]
    assert h.min_time == T0 - H2 // 2 and h.appendable_min_valid_time() == T0 - H2 // 2


# --- 2. chunk cutting ----------------------------------------------------------------------------------

def prom391_bounds(t: np.ndarray, v: np.ndarray, spc: int = 120, chunk_range: int = H2) -> list[int]:
    """Chunk bounds by Prometheus v3.9.1's appendPreprocessor, sample by sample (test reference)."""
    bounds = [0]
    a = 0
    next_at = range_end(int(t[0]), chunk_range)
    for i in range(1, len(t)):
        n = i - a
        ti = int(t[i])
        if len(encode_xor(t[a:i], v[a:i])) > 1024 - 19:
            cut = True
        else:
            if n == spc // 4:
                start, cur = int(t[a]), int(t[i - 1])
                q = float(next_at - start) / (float(cur - start + 1) * 4.0)
                if q > 1:
                    next_at = int(float(start) + float(next_at - start) / math.floor(q))
            cut = ti >= next_at or n >= spc * 2
        if cut:
            bounds.append(i)
            a = i
            next_at = range_end(ti, chunk_range)
    bounds.append(len(t))
    return bounds


def feed_in_batches(h: Head, data: dict, rng) -> None:
    """Append all series' samples in global time order (as scrapes arrive), interleaved, in
    batches of random size."""
    r = np.concatenate([np.full(len(t), ref) for ref, (t, _) in data.items()])
    t = np.concatenate([t for t, _ in data.values()])
    v = np.concatenate([v for _, v in data.values()])
    order = np.argsort(t, kind="stable")
    r, t, v = r[order], t[order], v[order]
    i = 0
    while i < len(t):
        k = int(rng.integers(1, 5000))
        st = h.append(r[i:i + k], t[i:i + k], v[i:i + k])
        assert (st == OK).all()
        i += k


def test_chunks_cut_as_cut_head_with_equal_bytes():
    rng = np.random.default_rng(7)
    h = Head()
    refs, _ = h.get_or_create_labels([{"s": str(i)} for i in range(60)])
    data = {}
    for r in refs.tolist():
        n = int(rng.integers(1, 2500))
        step = int(rng.choice([1, 10, 1000, 15_000, 60_000, 600_000]))
        jitter = rng.integers(0, min(step, 4000), n) * int(rng.integers(0, 2))
        t = T0 + int(rng.integers(0, H2)) + np.cumsum(step + jitter)
        v = rng.integers(0, 4, n).astype(float)  # compressible: chunks stay under the 1005-byte cap
        data[r] = (t, v)
    feed_in_batches(h, data, rng)
    hc = h.select(refs)
    starts = hc.starts
    for i, r in enumerate(refs.tolist()):
        t, v = data[r]
        b = cut_head(t, 120, H2)
        assert hc.counts[i] == len(b) - 1, r
        for j in range(len(b) - 1):
            c = starts[i] + j
            assert hc.chunk(c) == encode_xor(t[b[j]:b[j + 1]], v[b[j]:b[j + 1]])
            assert (hc.mint[c], hc.maxt[c]) == (t[b[j]], t[b[j + 1] - 1])


def test_chunks_cut_as_prometheus_3_9_1():
    """Negative times (float computeChunkEndTime truncates toward zero) and incompressible
    values (the 1005-byte cap), which cut_head (2.42's rules) does not model."""
    rng = np.random.default_rng(8)
    h = Head()
    refs, _ = h.get_or_create_labels([{"s": str(i)} for i in range(30)])
    data = {}
    for k, r in enumerate(refs.tolist()):
        n = int(rng.integers(1, 1500))
        step = int(rng.choice([1, 1000, 15_000, 100_000]))
        t = int(rng.integers(-10 ** 13, 10 ** 13)) + np.cumsum(rng.integers(1, step + 1, n))
        v = rng.random(n) * 10.0 ** rng.integers(-5, 10) if k % 2 else rng.integers(0, 9, n).astype(float)
        data[r] = (t, v)
    feed_in_batches(h, data, rng)
    hc = h.select(refs)
    starts = hc.starts
    for i, r in enumerate(refs.tolist()):
        t, v = data[r]
        b = prom391_bounds(t, v)
        assert hc.counts[i] == len(b) - 1, r
        for j in range(len(b) - 1):
            assert hc.chunk(starts[i] + j) == encode_xor(t[b[j]:b[j + 1]], v[b[j]:b[j + 1]])
        assert max(len(hc.chunk(starts[i] + j)) for j in range(len(b) - 1)) <= 1024 + 19


# --- 3. lookups --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", [None, 0x7, 0])
def test_lookup_many_blobs_collisions_and_growth(mask):
    n = 3000 if mask is not None else 50_000
    h = Head(capacity=1, _hash_mask=mask)
    sets = [{"__name__": "m", "i": str(i), "pad": "x" * (i % 17)} for i in range(n)]
    buf, offs = blobs_from_labels(sets)
    assert (h.lookup(buf, offs) == 0).all()
    refs, created = h.get_or_create(buf, offs)
    assert created.all() and refs.tolist() == list(range(1, n + 1))
    assert (h.lookup(buf, offs) == refs).all()
    again, created = h.get_or_create(buf, offs)
    assert (again == refs).all() and not created.any()
    # a batch mixing known and new blobs, with a duplicate new one
    more = [sets[5], {"new": "1"}, sets[7], {"new": "1"}]
    r2, c2 = h.get_or_create(*blobs_from_labels(more))
    assert r2.tolist() == [6, n + 1, 8, n + 1] and c2.tolist() == [False, True, False, False]
    assert h.num_series == n + 1
    assert h.labels([3, n + 1, 10 ** 9]) == [labels_from_blob(blob_from_labels(sets[2])), (("new", "1"),), ()]


def test_bad_blobs_and_offsets_are_rejected_with_their_index():
    h = Head()
    good = blob_from_labels({"a": "1"})
    cases = {
        b"\x02\x01b\x011\x01a\x011": "label names not sorted",
        b"\x02\x01a\x011\x01a\x012": "duplicate label name",
        b"\x01\x05a": "label name runs past the blob",
        b"\x01\x01a\x09": "label value runs past the blob",
        good + b"\x00": "trailing bytes",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01": "bad label count",
        b"\x01\x01a\x02\xc3\x28": "label value is not valid UTF-8",
        b"\x01\x03\xed\xa0\x80\x00": "label name is not valid UTF-8",  # a surrogate
        b"\x01\x01a\x02\xc0\x80": "label value is not valid UTF-8",  # overlong
    }
    for blob, why in cases.items():
        buf = good + blob
        with pytest.raises(ValueError, match=f"label blob 1: {why}"):
            h.get_or_create(buf, [0, len(good), len(buf)])
    for offs in ([0, 5, 3], [0, 100], [-1, 2]):
        with pytest.raises(ValueError, match="offsets"):
            h.lookup(good, offs)
    assert h.num_series <= 1  # at most the good blob of the first call


def test_a_bad_blob_does_not_stop_the_others():
    h = Head()
    good1, good2 = blob_from_labels({"a": "1"}), blob_from_labels({"a": "2"})
    bad = b"\x02\x01b\x011\x01a\x011"
    buf = good1 + bad + good2
    offs = [0, len(good1), len(good1) + len(bad), len(buf)]
    with pytest.raises(ValueError, match="label blob 1: label names not sorted at byte 5"):
        h.get_or_create(buf, offs)
    assert h.postings([Matcher.re("a", ".+")]).tolist() == [1, 2]  # created and indexed
    refs, created = h.get_or_create(buf, offs, strict=False)
    assert refs.tolist() == [1, 0, 2] and not created.any()


def test_create_with_refs_for_wal_replay():
    h = Head()
    sets = [{"s": "a"}, {"s": "b"}, {"s": "a"}, {"s": "c"}, {"s": "d"}]
    buf, offs = blobs_from_labels(sets)
    refs, status = h.create_with_refs(buf, offs, [7, 1_000_000_000_000, 9, 7, 0])
    # "a" again under ref 9: the existing ref 7 comes back (the caller maps 9 -> 7); ref 7 for
    # "c" is taken; ref 0 is not a ref
    assert status.tolist() == [1, 1, 0, 2, 2]
    assert refs.tolist() == [7, 1_000_000_000_000, 7, 7, 0]
    assert h.labels([7, 1_000_000_000_000]) == [(("s", "a"),), (("s", "b"),)]
    r, c = h.get_or_create_labels([{"s": "c"}])
    assert r.tolist() == [1_000_000_000_001] and c.all()  # above every ref seen
    assert h.append([1_000_000_000_000], [T0], [1.0]).tolist() == [OK]
    assert h.postings([Matcher.eq("s", "b")]).tolist() == [1_000_000_000_000]


def test_replay_skips_the_window_but_not_min_valid_time():
    h = Head()
    refs, _ = h.get_or_create_labels([{"s": "a"}, {"s": "b"}])
    h.set_min_valid_time(T0)
    # WAL order: b runs 3h ahead of a; appends would refuse a's samples, replay takes them
    st = h.replay([refs[1], refs[0], refs[0], refs[0], refs[1]],
                  [T0 + 3 * H2, T0 + 10, T0 + 5, T0 - 1, T0 + 3 * H2],
                  [1.0, 2.0, 3.0, 4.0, 1.0])
    assert st.tolist() == [OK, OK, OUT_OF_ORDER | AT_COMMIT, OUT_OF_BOUNDS, DUP_OK | AT_COMMIT]
    assert (h.min_time, h.max_time) == (T0 + 10, T0 + 3 * H2)
    assert h.append([refs[0]], [T0 + 20], [5.0]).tolist() == [OUT_OF_BOUNDS]
    lo, hi = h.time_range([refs[0], refs[1], 77])
    assert lo.tolist() == [T0 + 10, T0 + 3 * H2, 2 ** 63 - 1] and hi.tolist() == [T0 + 10, T0 + 3 * H2, -2 ** 63]


# --- 4. selection, truncation ---------------------------------------------------------------------------

def build_head(n_series: int = 40, n_samples: int = 200, step: int = 60_000) -> tuple[Head, list, np.ndarray]:
    h = Head()
    sets = [{"__name__": ["a", "b"][i % 2], "i": str(i), "mod3": str(i % 3)} | ({"opt": "x"} if i % 4 == 0 else {})
            for i in range(n_series)]
    refs, _ = h.get_or_create_labels(sets)
    t = T0 + np.arange(n_samples, dtype=np.int64) * step
    st = h.append(np.repeat(refs, n_samples), np.tile(t, n_series), np.tile(np.arange(n_samples, dtype=float), n_series))
    # one series at a time gives each its samples in order
    assert (st == OK).all()
    return h, sets, refs


def test_select_with_matchers_and_label_apis():
    h, sets, refs = build_head()

    def want(pred):
        return [int(refs[i]) for i, s in enumerate(sets) if pred(s)]

    M = Matcher
    assert h.postings([M.eq("__name__", "a")]).tolist() == want(lambda s: s["__name__"] == "a")
    assert h.postings([M.eq("__name__", "a"), M.ne("mod3", "0")]).tolist() == want(
        lambda s: s["__name__"] == "a" and s["mod3"] != "0")
    assert h.postings([M.re("i", "1.*")]).tolist() == want(lambda s: s["i"].startswith("1"))
    assert h.postings([M.nre("i", "1.*|2")]).tolist() == want(lambda s: not (s["i"].startswith("1") or s["i"] == "2"))
    assert h.postings([M.eq("opt", "")]).tolist() == want(lambda s: "opt" not in s)
    assert h.postings([M.re("opt", ".+")]).tolist() == want(lambda s: "opt" in s)
    assert h.postings([M.ne("opt", "x")]).tolist() == want(lambda s: "opt" not in s)
    assert h.postings([M.eq("nope", "1")]).tolist() == []
    assert h.postings([M.re("i", "(")]) is not None if False else True
    assert h.label_names() == ["__name__", "i", "mod3", "opt"]
    assert h.label_values("mod3") == ["0", "1", "2"]
    assert h.label_values("__name__", [M.eq("opt", "x")]) == ["a"]
    assert h.label_names([M.eq("__name__", "b")]) == ["__name__", "i", "mod3"]
    # time bounds are closed and cut at chunk granularity by select, at sample granularity by series
    got = list(h.series([M.eq("i", "3")], T0 + 60_000, T0 + 120_000))
    assert len(got) == 1 and got[0][1].tolist() == [T0 + 60_000, T0 + 120_000]
    assert got[0][0] == (("__name__", "b"), ("i", "3"), ("mod3", "0"))
    hc = h.select(refs[:2], T0 + 10 ** 9, T0 + 2 * 10 ** 9)
    assert hc.counts.tolist() == [0, 0] and hc.data == b""


def test_truncate_and_gc():
    h = Head()
    refs, _ = h.get_or_create_labels([{"s": "old"}, {"s": "both"}, {"s": "new"}, {"s": "empty"}])
    step = 60_000
    B = (T0 // H2) * H2
    t_old = B + np.arange(120) * step  # one whole aligned 2h window
    st = h.append(np.repeat(refs[:2], 120), np.tile(t_old, 2), np.ones(240))
    assert (st == OK).all()
    t_new = B + H2 + np.arange(60) * step
    st = h.append(np.repeat(refs[1:3], 60), np.tile(t_new, 2), np.full(120, 2.0))
    assert (st == OK).all()
    chunks_before = h.stats()["chunks"]
    assert h.compactable() is False  # spans 3h - 1min
    h.append([refs[2]], [B + 3 * 3_600_000 + 1], [3.0])
    assert h.compactable() and h.next_block_range() == (B, B + H2)
    removed = h.truncate(B + H2)
    # "old" and "empty" are gone; "both" keeps only its chunks at or after mint
    assert removed.tolist() == [1, 4] and h.num_series == 2
    assert h.alive([1, 2, 3, 4, 99]).tolist() == [False, True, True, False, False]
    assert h.lookup(*blobs_from_labels([{"s": "old"}, {"s": "both"}, {"s": "empty"}])).tolist() == [0, 2, 0]
    assert h.postings([Matcher.re("s", ".*")]).tolist() == [2, 3]
    assert h.label_values("s") == ["both", "new"]
    t, v = head_samples(h, int(refs[1]))
    assert t.tolist() == t_new.tolist() and (v == 2.0).all()
    assert h.stats()["chunks"] < chunks_before
    assert h.min_time == B + H2 and not h.compactable()
    # a removed series that comes back gets a new ref
    r, c = h.get_or_create_labels([{"s": "old"}])
    assert r.tolist() == [5] and c.all()
    assert h.append(r, [B + 3 * 3_600_000 + 2], [1.0]).tolist() == [OK]
    assert h.append(r, [B + H2 - 1], [1.0]).tolist() == [OUT_OF_BOUNDS]
    # data left intact after compaction of the chunk store
    for ref, want_n in ((2, 60), (3, 61), (5, 1)):
        assert len(head_samples(h, ref)[0]) == want_n
    assert len(h.truncate(0)) == 0
    assert h.truncate(B + 10 * H2).tolist() == [2, 3, 5] and h.num_series == 0 and h.stats()["chunks"] == 0
    assert h.label_names() == []


def test_query_in_label_order_and_metrics():
    from prometheus_client import CollectorRegistry

    from pythanos.tsdb.head import HeadCollector

    h, sets, refs = build_head(n_series=12, n_samples=300)
    lbls, hc = h.query([Matcher.re("i", "1.*|3")], T0, T0 + 200 * 60_000)
    assert lbls == sorted(lbls) and len(lbls) == 4 and all(("i", "3") in ls or ("i", "10") in ls or ("i", "11") in ls
                                                          or ("i", "1") in ls for ls in lbls)
    assert h.labels(hc.refs) == lbls
    for i in range(len(lbls)):
        for j in range(hc.starts[i], hc.starts[i + 1]):
            t, _ = decode_xor(hc.chunk(j))
            assert (t[0], t[-1]) == (hc.mint[j], hc.maxt[j])
        ts = np.concatenate([decode_xor(hc.chunk(j))[0] for j in range(hc.starts[i], hc.starts[i + 1])])
        # whole chunks: from the first sample to past the range's end, nothing missing between
        assert ts[0] == T0 and ts[-1] >= T0 + 200 * 60_000 and np.all(np.diff(ts) == 60_000)
    r = one_series(h, x="y")
    end = T0 + 299 * 60_000
    st = h.append([r, r, r, r], [end, end, end - 1, T0 - 10 * H2], [1.0, 2.0, 1.0, 1.0])
    assert st.tolist() == [OK, DUPLICATE | AT_COMMIT, OUT_OF_ORDER | AT_COMMIT, OUT_OF_BOUNDS]
    reg = CollectorRegistry()
    reg.register(HeadCollector(lambda: {"t1": h}))

    def val(name, **kw):
        return reg.get_sample_value(name, {"tenant": "t1", **kw})

    assert val("prometheus_tsdb_head_series") == 13
    assert val("prometheus_tsdb_head_samples_appended_total", type="float") == 12 * 300 + 1
    assert val("prometheus_tsdb_out_of_order_samples_total", type="float") == 1
    assert val("prometheus_tsdb_out_of_bound_samples_total", type="float") == 1
    assert val("prometheus_tsdb_head_chunks") == h.stats()["chunks"] + 13
    assert val("prometheus_tsdb_head_series_created_total") == 13
    assert val("prometheus_tsdb_head_max_time") == T0 + 299 * 60_000


# --- 5. blocks --------------------------------------------------------------------------------------------

def go_float(x: float) -> str:
    from decimal import Decimal

    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x != 0 and (abs(x) < 1e-6 or abs(x) >= 1e21):
        return repr(float(x))
    s = format(Decimal(repr(float(x))), "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def test_blocks_from_the_head_in_promtool_prometheus_and_our_reader(tmp_path, promtool_bin, prometheus3_bin,
                                                                    prometheus_factory):
    rng = np.random.default_rng(11)
    h = Head()
    step = 15_000
    start = (T0 // H2) * H2 + 3_600_000 + 7_000
    n = 1500  # 6.25h of 15s samples
    grid_t = start + np.arange(n, dtype=np.int64) * step
    sets, data = [], {}
    for i in range(30):
        lbls = {"__name__": "grid", "i": str(i), "z": ["a", "é✓", 'q"b\\'][i % 3]}
        v = np.round(rng.normal(0, 10 ** (i % 7), n), i % 5)
        r = rng.random(n)
        v[r < 0.03] = np.nan
        v[(r >= 0.03) & (r < 0.05)] = np.inf
        v[(r >= 0.05) & (r < 0.06)] = -0.0
        v[(r >= 0.06) & (r < 0.08)] = STALE_NAN
        sets.append(lbls)
        data[i] = (grid_t, v)
    for i in range(30, 60):  # irregular series, some ending early
        m = int(rng.integers(1, n))
        t = start + np.sort(rng.choice(n * step, m, replace=False)).astype(np.int64)
        sets.append({"__name__": "irr", "i": str(i)})
        data[i] = (t, rng.random(m) * 1e6)
    refs, _ = h.get_or_create_labels(sets)
    # feed in time order, 20 minutes at a time, as a receiver would
    edges = np.arange(start, start + n * step + 1_200_000, 1_200_000)
    db = tmp_path / "db"
    db.mkdir()
    ulids = []
    for a, b in zip(edges[:-1], edges[1:]):
        rr, tt, vv = [], [], []
        for i, (t, v) in data.items():
            i0, i1 = np.searchsorted(t, [a, b])
            rr.append(np.full(i1 - i0, refs[i]))
            tt.append(t[i0:i1])
            vv.append(v[i0:i1])
        st = h.append(np.concatenate(rr), np.concatenate(tt), np.concatenate(vv))
        assert (st == OK).all()
        ulids += h.compact(db)
    # the rest of the head into one last block, as at shutdown
    mint, maxt = h.next_block_range()
    last = h.write_block(db, mint, h.max_time + 1)
    assert last
    ulids.append(last)
    assert len(ulids) >= 3 and sorted(ulids) == sorted(p.name for p in db.iterdir())
    merged: dict = {}
    for u in ulids:
        res = subprocess.run([promtool_bin, "tsdb", "analyze", str(db), u], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        with BlockReader.open_dir(db / u) as br:
            meta = br.meta
            assert meta.compaction.level == 1
            for lbls, t, v in br.series():
                assert t.min() >= meta.min_time and t.max() < meta.max_time
                pt, pv = merged.get(lbls, (np.zeros(0, np.int64), np.zeros(0)))
                merged[lbls] = (np.concatenate([pt, t]), np.concatenate([pv, v]))
    assert len(merged) == 60
    for i, lbls in enumerate(sets):
        key = tuple(sorted(lbls.items()))
        t, v = merged[key]
        assert np.array_equal(t, data[i][0]) and np.array_equal(v.view(np.uint64), data[i][1].view(np.uint64)), key
    # a real Prometheus 3.9.1 serves the blocks with the same samples
    prom = prometheus_factory(tsdb_path=db, binary=prometheus3_bin, extra_args=["--storage.tsdb.retention.time=100y"])
    q = urllib.parse.urlencode({"query": 'grid{i=~".+"}', "start": f"{start / 1000:.3f}",
                                "end": f"{grid_t[-1] / 1000:.3f}", "step": f"{step // 1000}"})
    with urllib.request.urlopen(f"{prom.url}/api/v1/query_range?{q}", timeout=60) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    got = {tuple(sorted(r["metric"].items())): r["values"] for r in body["data"]["result"]}
    assert len(got) == 30
    for i in range(30):
        t, v = data[i]
        keep = v.view(np.uint64) != STALE_NAN_BITS
        want = [[int(ti) / 1000, go_float(vi)] for ti, vi in zip(t[keep].tolist(), v[keep].tolist())]
        assert [[float(a), b] for a, b in got[tuple(sorted(sets[i].items()))]] == want, i
    q = urllib.parse.urlencode({"query": "count_over_time(irr[1y])", "time": f"{(start + n * step) / 1000:.3f}"})
    with urllib.request.urlopen(f"{prom.url}/api/v1/query?{q}", timeout=60) as resp:
        body = json.loads(resp.read())
    counts = {r["metric"]["i"]: int(r["value"][1]) for r in body["data"]["result"]}
    assert counts == {str(i): len(data[i][0]) for i in range(30, 60)}


def test_head_chunks_equal_a_real_prometheus_head(tmp_path, prometheus3_bin, prometheus_factory):
    """The same remote-write requests into a real Prometheus 3.9.1 and into our head: the blocks
    Prometheus cuts from its head hold exactly our chunks (bytes, bounds, time ranges)."""
    import cramjam

    from pythanos.remote.prompb import remote_pb2

    data_dir = tmp_path / "prom"
    prom = prometheus_factory(tsdb_path=data_dir, binary=prometheus3_bin,
                              extra_args=["--web.enable-remote-write-receiver", "--storage.tsdb.retention.time=100y"])
    rng = np.random.default_rng(21)
    start = (T0 // H2) * H2 + 1_234_567
    end = start + 6 * 3_600_000 + 600_000
    series = []
    for i in range(24):
        step = [15_000, 10_000, 60_000, 1_000][i % 4]
        t = np.arange(start + i * 37, end, step, dtype=np.int64)
        if i % 3 == 1:
            t = t + rng.integers(-step // 4, step // 4, len(t))  # scrape jitter
        if i % 6 == 5:
            t = np.sort(rng.choice(np.arange(start, end, 997), 2000, replace=False))  # irregular
        kind = (i // 4) % 4
        if kind == 0:
            v = np.cumsum(rng.poisson(3, len(t))).astype(float)
        elif kind == 1:
            v = rng.random(len(t)) * 1e3  # incompressible: the 1005-byte cut
        elif kind == 2:
            v = np.round(rng.normal(20, 2, len(t)), 1)
        else:
            v = np.full(len(t), 1.0)
        v[rng.random(len(t)) < 0.01] = STALE_NAN
        series.append(({"__name__": "rw", "i": str(i), "k": str(kind)}, t, v))
    # a rate that jumps after the estimate at 30 samples: cut at 2 x 120 samples
    t = np.concatenate([start + np.arange(40) * 60_000, start + 40 * 60_000 + np.arange(1, 20_000) * 500])
    series.append(({"__name__": "rw", "i": "burst"}, t, np.arange(len(t), dtype=float)))
    h = Head()
    refs, _ = h.get_or_create_labels([s for s, _, _ in series])
    edges = list(range(start, end + 600_000, 600_000))
    for a, b in zip(edges[:-1], edges[1:]):
        req = remote_pb2.WriteRequest()
        rr, tt, vv = [], [], []
        for k, (lbls, t, v) in enumerate(series):
            i0, i1 = np.searchsorted(t, [a, b])
            if i1 == i0:
                continue
            ts = req.timeseries.add()
            for n, val in sorted(lbls.items()):
                ts.labels.add(name=n, value=val)
            for x, y in zip(t[i0:i1].tolist(), v[i0:i1].tolist()):
                ts.samples.add(timestamp=x, value=y)
            rr.append(np.full(i1 - i0, refs[k]))
            tt.append(t[i0:i1])
            vv.append(v[i0:i1])
        body = bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
        r = urllib.request.Request(f"{prom.url}/api/v1/write", data=body, method="POST", headers={
            "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        with urllib.request.urlopen(r, timeout=30) as resp:
            assert resp.status in (200, 204)
        st = h.append(np.concatenate(rr), np.concatenate(tt), np.concatenate(vv))
        assert (st == OK).all()
    ours = tmp_path / "ours"
    ours.mkdir()
    ulids = h.compact(ours)
    assert len(ulids) == 2

    deadline = time.monotonic() + 120
    while len(blocks_by_time(data_dir)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    theirs = blocks_by_time(data_dir)
    assert len(theirs) == 2, "Prometheus did not compact its head"

    def chunks_of(d):
        with BlockReader.open_dir(d) as br:
            meta = br.meta
            return (meta.min_time, meta.max_time, meta.stats.num_samples, meta.stats.num_chunks), {
                lbls: [(a, b, e, bytes(c)) for a, b, e, c in chunks] for lbls, _iv, chunks in br.series_chunks()}

    sizes, counts = [], []
    for mine, prom_block in zip(blocks_by_time(ours), theirs):
        m_meta, m_chunks = chunks_of(mine)
        p_meta, p_chunks = chunks_of(prom_block)
        assert m_meta == p_meta
        assert m_chunks.keys() == p_chunks.keys()
        for lbls in p_chunks:
            assert m_chunks[lbls] == p_chunks[lbls], lbls
        sizes += [len(c[3]) for cs in p_chunks.values() for c in cs]
        counts += [int.from_bytes(c[3][:2], "big") for cs in p_chunks.values() for c in cs]
    # the cases that matter were there: chunks cut by size, by the 2x cap, and short ones
    assert max(sizes) > 1005 - 19 and max(counts) == 240 and min(counts) < 30


def test_flush_as_thanos_receiver(tmp_path):
    h, sets, refs = build_head(n_series=4, n_samples=200, step=60_000)  # T0 .. T0 + 199 min
    hi = T0 + 199 * 60_000
    aligned = hi - hi % H2
    ulids = h.flush(tmp_path)
    assert len(ulids) == 2
    ranges = []
    for u in ulids:
        with BlockReader.open_dir(tmp_path / u) as br:
            ranges.append((br.meta.min_time, br.meta.max_time))
            n = sum(len(t) for _, t, _ in br.series())
            assert n == br.meta.stats.num_samples
    # after the first truncation the head starts at its first sample left (gc's actual mint)
    first_left = T0 + -(-(aligned - T0) // 60_000) * 60_000
    assert ranges == [(T0, aligned), (first_left, hi)]
    # the samples at the max time stay in the head
    left = list(h.series())
    assert len(left) == 4 and all(t.tolist()[-1] == hi for _, t, _ in left)
    one = Head()
    r = one_series(one)
    one.append([r], [T0], [1.0])
    (u,) = one.flush(tmp_path / "one")
    with BlockReader.open_dir(tmp_path / "one" / u) as br:
        assert (br.meta.min_time, br.meta.max_time) == (T0, T0 + 1)
    assert Head().flush(tmp_path) == []


def test_write_block_off_chunk_boundaries_reencodes_edges(tmp_path):
    h, sets, refs = build_head(n_series=5, n_samples=300, step=60_000)
    mint, maxt = T0 + 37 * 60_000 + 1, T0 + 250 * 60_000 + 5
    u = h.write_block(tmp_path, mint, maxt)
    with BlockReader.open_dir(tmp_path / u) as br:
        assert (br.meta.min_time, br.meta.max_time) == (mint, maxt)
        got = {lbls: t for lbls, t, _ in br.series()}
    want_t = T0 + np.arange(38, 251) * 60_000
    assert len(got) == 5 and all(np.array_equal(t, want_t) for t in got.values())
    assert h.write_block(tmp_path, T0 - 10 * H2, T0 - 9 * H2) is None


# --- 5b. out-of-order window ------------------------------------------------------------------------------

MIN = 60_000


def test_ooo_statuses_and_merged_reads():
    h = Head(ooo_window=90 * MIN)
    r = one_series(h)
    assert h.append([r], [T0 + 120 * MIN], [1.0]).tolist() == [OK]
    st = h.append([r] * 8, [T0 + 130 * MIN, T0 + 110 * MIN, T0 + 110 * MIN, T0 + 110 * MIN, T0 + 130 * MIN,
                            T0 + 40 * MIN, T0 + 31 * MIN, T0 + 29 * MIN],
                  [2.0, 3.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    # 110 is behind the series: out of order, inside the window; once held, the same time again
    # is dropped silently; 130 again with another value is a duplicate; 40 and 31 are before the
    # appendable window (max - 1h) but inside the out-of-order one (max at batch start - 90m =
    # T0 + 30m); 29 is too old
    assert st.tolist() == [OK, OOO_OK, DUP_OK | AT_COMMIT, DUPLICATE | AT_COMMIT, DUPLICATE | AT_COMMIT, OOO_OK,
                           OOO_OK, TOO_OLD]
    assert status_error(TOO_OLD) == "too old sample" and status_error(OOO_OK) is None
    assert (h.min_ooo_time, h.max_ooo_time) == (T0 + 31 * MIN, T0 + 110 * MIN)
    assert h.max_time == T0 + 130 * MIN and h.min_time == T0 + 120 * MIN  # in-order only
    # a fresh series may start out of order
    r2 = one_series(h, x="2")
    assert h.append([r2], [T0 + 60 * MIN], [9.0]).tolist() == [OOO_OK]
    got = {lbls: (t.tolist(), v.tolist()) for lbls, t, v in h.series()}
    assert got == {(("__name__", "m"),): ([T0 + m * MIN for m in (31, 40, 110, 120, 130)], [7.0, 6.0, 3.0, 1.0, 2.0]),
                   (("x", "2"),): ([T0 + 60 * MIN], [9.0])}
    lbls, hc = h.query([Matcher.eq("__name__", "m")], T0 + 100 * MIN, T0 + 115 * MIN)
    t, v = decode_xor(hc.chunk(0))
    assert T0 + 110 * MIN in t.tolist()
    # a tie between an in-order and an out-of-order sample: the in-order one is read
    h2 = Head(ooo_window=H2)
    r = one_series(h2)
    h2.append([r, r], [T0, T0 + 10], [1.0, 2.0])
    h2.append([r, r], [T0 + 5, T0 + 20], [3.0, 4.0])
    assert h2.append([r], [T0 + 10], [5.0]).tolist() == [OOO_OK]
    (_, t, v), = h2.series()
    assert t.tolist() == [T0, T0 + 5, T0 + 10, T0 + 20] and v.tolist() == [1.0, 3.0, 2.0, 4.0]


def test_ooo_blocks_as_prometheus_cuts_them(tmp_path, promtool_bin):
    h = Head(ooo_window=2 * H2)
    refs, _ = h.get_or_create_labels([{"s": str(i)} for i in range(6)])
    B = (T0 // H2) * H2
    rng = np.random.default_rng(3)
    want: dict[int, dict[int, float]] = {int(r): {} for r in refs}
    for k in range(0, 6 * 60):  # 6h, a sample a minute, late ones mixed in
        t = B + k * MIN
        rr = [int(r) for r in refs]
        tt = [t] * 6
        if k > 200 and k % 7 == 0:
            rr.append(int(refs[k % 6]))
            tt.append(t - int(rng.integers(2, 200)) * MIN - 1)  # late, between existing samples
        vv = rng.random(len(tt)).tolist()
        st = h.append(rr, tt, vv)
        for ref, ti, vi, si in zip(rr, tt, vv, st.tolist()):
            if si in (OK, OOO_OK):
                want[ref].setdefault(ti, vi)
            else:
                assert si in (TOO_OLD, DUP_OK | AT_COMMIT, DUPLICATE | AT_COMMIT), si
    assert h.ooo_samples_appended > 10
    ooo_series = {r for r in want if any((t - B) % MIN for t in want[r])}
    ulids = h.compact(tmp_path)
    assert h.max_ooo_time == MIN_T and h.stats()["ooo_samples"] == 0
    metas = {}
    merged: dict = {}
    for u in ulids:
        res = subprocess.run([promtool_bin, "tsdb", "analyze", str(tmp_path), u], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        with BlockReader.open_dir(tmp_path / u) as br:
            metas[u] = br.meta
            for lbls, t, v in br.series():
                d = merged.setdefault(lbls, {})
                for ti, vi in zip(t.tolist(), v.tolist()):
                    d.setdefault(ti, vi)
    ooo_blocks = [m for m in metas.values() if m.compaction.hints == ["from-out-of-order"]]
    assert ooo_blocks and len(ooo_blocks) < len(metas)
    assert all(m.min_time % H2 == 0 and m.max_time - m.min_time == H2 for m in ooo_blocks)
    # blocks plus what stays in the head hold every accepted sample
    for lbls, t, v in h.series():
        d = merged.setdefault(lbls, {})
        for ti, vi in zip(t.tolist(), v.tolist()):
            d.setdefault(ti, vi)
    for r in want:
        (lbls,) = h.labels([r]) or [()]
        assert merged[lbls] == dict(sorted(want[r].items())), r
    assert ooo_series


MIN_T = -(1 << 63)


def test_ooo_against_a_real_prometheus(tmp_path, prometheus3_bin, prometheus_factory):
    """The same remote-write requests, late samples included, into Prometheus 3.9.1 with an
    out-of-order window and into our head: every sample reads back the same."""
    import cramjam

    from pythanos.remote.prompb import remote_pb2

    window = 40 * MIN
    prom = prometheus_factory(binary=prometheus3_bin, extra_args=["--web.enable-remote-write-receiver"],
                              config_yaml="global:\n  scrape_interval: 15s\nstorage:\n  tsdb:\n"
                                          f"    out_of_order_time_window: {window // 1000}s\n")
    h = Head(ooo_window=window)
    names = [{"__name__": "late", "i": str(i)} for i in range(8)]
    refs, _ = h.get_or_create_labels(names)
    rng = np.random.default_rng(9)
    now = int(time.time() * 1000) // MIN * MIN - 4 * 3_600_000
    inorder: dict = {}
    for k in range(120):
        req = remote_pb2.WriteRequest()
        rr, tt, vv = [], [], []
        for i, lbls in enumerate(names):
            ts = [now + k * MIN]
            if rng.random() < 0.3:
                ts.append(now + k * MIN - int(rng.integers(1, 39)) * MIN - int(rng.integers(1, 999)))
            if rng.random() < 0.05 and k > 1:
                # the time of an older in-order sample: accepted out of order by both (which of
                # two values Prometheus reads back then depends on its chunk layout, so the same)
                ts.append(now + (k - 2) * MIN)
            s = req.timeseries.add()
            for n, val in sorted(lbls.items()):
                s.labels.add(name=n, value=val)
            for t in ts:
                x = inorder.get((i, t), float(rng.integers(0, 100)))
                if t == now + k * MIN:
                    inorder[(i, t)] = x
                s.samples.add(timestamp=t, value=x)
                rr.append(int(refs[i]))
                tt.append(t)
                vv.append(x)
        body = bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
        r = urllib.request.Request(f"{prom.url}/api/v1/write", data=body, method="POST", headers={
            "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        with urllib.request.urlopen(r, timeout=30) as resp:  # (a too-old sample would fail the whole request)
            assert resp.status in (200, 204)
        st = h.append(rr, tt, vv)
        assert not (st == TOO_OLD).any()
    # the last sample's time again with another value: both refuse it
    req = remote_pb2.WriteRequest()
    s = req.timeseries.add()
    for n, val in sorted(names[0].items()):
        s.labels.add(name=n, value=val)
    s.samples.add(timestamp=now + 119 * MIN, value=-1.0)
    body = bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
    r = urllib.request.Request(f"{prom.url}/api/v1/write", data=body, method="POST", headers={
        "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": "0.1.0"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(r, timeout=30)
    assert e.value.code == 400 and "duplicate sample for timestamp" in e.value.read().decode()
    assert h.append([refs[0]], [now + 119 * MIN], [-1.0]).tolist() == [DUPLICATE]
    q = urllib.parse.urlencode({"query": "late[1d]", "time": f"{(now + 200 * MIN) / 1000:.3f}"})
    with urllib.request.urlopen(f"{prom.url}/api/v1/query?{q}", timeout=60) as resp:
        body = json.loads(resp.read())
    theirs = {r["metric"]["i"]: [(round(float(a) * 1000), float(b)) for a, b in r["values"]]
              for r in body["data"]["result"]}
    ours = {dict(lbls)["i"]: list(zip(t.tolist(), v.tolist())) for lbls, t, v in h.series()}
    assert ours.keys() == theirs.keys() and len(ours) == 8
    for i in ours:
        assert ours[i] == theirs[i], i
    assert h.ooo_samples_appended > 20


# --- 6. kernel robustness ----------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(-3, 8), st.integers(-2 ** 63, 2 ** 63 - 1),
                          st.floats(allow_nan=True, allow_infinity=True)), max_size=200),
       st.lists(st.binary(max_size=40), max_size=20))
def test_kernel_takes_any_refs_times_values_and_bytes(samples, blobs):
    h = Head(capacity=2, _hash_mask=0x3)
    h.get_or_create_labels([{"a": str(i)} for i in range(5)])
    if samples:
        r, t, v = (list(x) for x in zip(*samples))
        st_ = h.append(r, t, v)
        assert set(st_.tolist()) <= {OK, DUP_OK, OUT_OF_ORDER, DUPLICATE, OUT_OF_BOUNDS, BAD_REF,
                                     OUT_OF_ORDER | AT_COMMIT, DUPLICATE | AT_COMMIT, DUP_OK | AT_COMMIT}
        assert ((np.asarray(r) < 1) | (np.asarray(r) > 5) <= (st_ == BAD_REF)).all()
        for ref in range(1, 6):
            tt, vv = head_samples(h, ref)
            ok = (np.asarray(r) == ref) & (st_ == OK)
            assert np.array_equal(tt, np.asarray(t, dtype=np.int64)[ok])
            assert np.array_equal(vv.view(np.uint64), np.asarray(v, dtype=np.float64)[ok].view(np.uint64))
    buf = b"".join(blobs)
    offs = np.concatenate(([0], np.cumsum([len(b) for b in blobs]))).astype(np.int64)
    try:
        refs, _ = h.get_or_create(buf, offs)
        assert (h.lookup(buf, offs) == refs).all()
        for b, ref in zip(blobs, refs.tolist()):
            assert h.labels([ref]) == [labels_from_blob(b)]
    except ValueError as e:
        assert "label blob" in str(e)
    m = 2 ** 63 - 1
    h.truncate(m)  # only series with a sample at the largest time may stay
    for ref in h.all_refs().tolist():
        assert head_samples(h, ref)[0].tolist() == [m]


def model_appendable(has, maxt, vlast, t, vb, minvalid, window, head_maxt):
    if t >= minvalid:
        if not has or t > maxt:
            return OK
        if t == maxt:
            return DUP_OK if vlast == vb else DUPLICATE
    if window > 0:
        return OOO_OK if t >= head_maxt - window else TOO_OLD
    return OUT_OF_BOUNDS if t < minvalid else OUT_OF_ORDER


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([0, 1, 50, 10_000]),
       st.lists(st.lists(st.tuples(st.integers(1, 3), st.integers(-20_000, 20_000), st.integers(0, 2)), max_size=30),
                max_size=6))
def test_kernel_matches_a_model_of_prometheus_appender(window, batches):
    """Statuses and the samples read back equal a sample-by-sample model of headAppender
    (Append against the state before the batch, Commit in order, out-of-order window)."""
    h = Head(ooo_window=window, chunk_range=4_000, samples_per_chunk=4)  # tiny chunks: many cuts
    refs, _ = h.get_or_create_labels([{"a": str(i)} for i in range(3)])
    state = {int(r): [False, 0, 0] for r in refs}  # has, maxt, value bits
    inorder = {int(r): {} for r in refs}
    ooo = {int(r): {} for r in refs}
    hmin, hmax = None, None
    for batch in batches:
        if not batch:
            continue
        rr = [int(refs[r - 1]) for r, _, _ in batch]
        tt = [t for _, t, _ in batch]
        vv = [float(v) for _, _, v in batch]
        if hmin is None:
            hmin = hmax = tt[0]
        minvalid = hmax - 2_000
        if h._min_valid_time > minvalid:
            minvalid = h._min_valid_time
        head_maxt = hmax
        pre = {r: list(x) for r, x in state.items()}
        want = []
        for r, t, v in zip(rr, tt, vv):
            vb = np.float64(v).view(np.uint64)
            if window == 0 and t < minvalid:
                want.append(OUT_OF_BOUNDS)
                continue
            a = model_appendable(*pre[r], t, vb, minvalid, window, head_maxt)
            if a not in (OK, DUP_OK, OOO_OK):
                want.append(a)
                continue
            c = model_appendable(*state[r], t, vb, minvalid, window, head_maxt)
            if c == OOO_OK:
                if t in ooo[r]:
                    want.append((DUP_OK if ooo[r][t] == v else DUPLICATE) | AT_COMMIT)
                else:
                    ooo[r][t] = v
                    want.append(OOO_OK)
            elif c != OK:
                want.append(DUP_OK if (c == DUP_OK and a == DUP_OK) else c | AT_COMMIT)
            else:
                state[r] = [True, t, vb]
                inorder[r][t] = v
                hmin, hmax = min(hmin, t), max(hmax, t)
                want.append(OK)
        assert h.append(rr, tt, vv).tolist() == want
        assert (h.min_time, h.max_time) == (hmin, hmax)
    got = {dict(lbls)["a"]: (t.tolist(), v.tolist()) for lbls, t, v in h.series()}
    for i, r in enumerate(refs.tolist()):
        merged = {**ooo[r], **inorder[r]}  # in-order wins a tie
        if merged:
            ts = sorted(merged)
            assert got[str(i)] == (ts, [merged[t] for t in ts])
        else:
            assert str(i) not in got


def test_reads_alongside_creation_appends_and_truncation():
    import threading

    h = Head()
    stop = threading.Event()
    errors: list = []

    def reader():
        try:
            while not stop.is_set():
                refs = h.postings([Matcher.re("g", "1|3"), Matcher.nre("i", "9.*")])
                lbls, hc = h.query([Matcher.eq("g", "2")], T0, T0 + 10 ** 9)
                assert len(lbls) == len(hc.refs)
                h.label_values("i", [Matcher.eq("g", "1")])
                assert np.all(np.diff(refs) > 0)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    step = 60_000
    try:
        for k in range(300):
            refs, _ = h.get_or_create_labels([{"g": str(j % 4), "i": str(k * 10 + j)} for j in range(10)] +
                                             [{"g": str(j % 4), "i": f"p{j}"} for j in range(10)])
            st = h.append(refs, np.full(len(refs), T0 + k * step), np.ones(len(refs)))
            assert (st == OK).all()
            if k % 100 == 99:
                h.truncate(T0 + (k - 30) * step)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    # the last truncation (at sample 269) kept the 10 steady series and those created since
    assert h.num_series == 10 + 31 * 10
    got = {dict(lbls)["i"]: t for lbls, t, _ in h.series([Matcher.re("i", "p.*")])}
    assert sorted(got) == [f"p{j}" for j in range(10)]
    for t in got.values():  # whole chunks stay: at least everything since the truncation point
        assert t[-1] == T0 + 299 * step and t[0] <= T0 + 269 * step and np.all(np.diff(t) == step)


def test_large_batch_and_wrong_argument_shapes():
    h = Head()
    refs, _ = h.get_or_create_labels([{"i": str(i)} for i in range(1000)])
    n = 2_000_000
    r = np.tile(refs, n // 1000)
    t = np.repeat(T0 + np.arange(n // 1000, dtype=np.int64) * 1000, 1000)
    st = h.append(r, t, np.random.default_rng(0).random(n))
    assert (st == OK).all() and h.samples_appended == n
    with pytest.raises(ValueError):
        h._k.append(r[:3], t[:2], np.zeros(3), np.empty(3, np.uint8), 0)
    with pytest.raises(TypeError):
        h._k.append(r[:3], t[:3], np.zeros(3), b"abc", 0)  # status must be writable
    with pytest.raises(ValueError):
        h._k.lookup(b"", np.zeros(0, np.int64), np.zeros(0, np.int64))  # offsets need k+1 entries


# --- 7. figures -------------------------------------------------------------------------------------------

def test_throughput_and_memory_figures(capsys):
    """Prints samples/s and bytes per series/sample; asserts only correctness."""
    n_series = int(os.environ.get("HEAD_BENCH_SERIES", "100000"))
    h = Head()
    sets = [{"__name__": "bench_metric", "instance": f"host-{i % 500}", "job": "node", "id": str(i)}
            for i in range(n_series)]
    buf, offs = blobs_from_labels(sets)
    t_create = time.perf_counter()
    refs, _ = h.get_or_create(buf, offs)
    t_create = time.perf_counter() - t_create
    t_lookup = time.perf_counter()
    assert (h.lookup(buf, offs) == refs).all()
    t_lookup = time.perf_counter() - t_lookup
    rng = np.random.default_rng(1)
    n_rounds = int(os.environ.get("HEAD_BENCH_ROUNDS", "240"))
    # node-exporter-like values: half counters (small integer increments), a quarter gauges
    # with few distinct values, a quarter constant
    kind = np.arange(n_series) % 4
    val = np.zeros(n_series)
    t_app = 0.0
    for k in range(n_rounds):  # 100k series x 1 sample per batch
        ts = np.full(n_series, T0 + k * 15_000, dtype=np.int64)
        val = np.where(kind < 2, val + rng.poisson(2, n_series) * 1024,
                       np.where(kind == 2, rng.integers(0, 8, n_series).astype(float), 1.0))
        vs = val
        t1 = time.perf_counter()
        st = h.append(refs, ts, vs)
        t_app += time.perf_counter() - t1
        assert not st.any()
    s = h.stats()
    held = sum(v for k, v in s.items() if k.endswith("_bytes") and k != "chunk_data_bytes")
    samples = n_series * n_rounds
    # 1k series x 100 samples per batch
    h2 = Head()
    r2, _ = h2.get_or_create_labels([{"j": str(i)} for i in range(1000)])
    t_b = 0.0
    for k in range(50):
        ts = np.repeat(T0 + (k * 100 + np.arange(100, dtype=np.int64)) * 15_000, 1000).reshape(100, 1000).T.ravel()
        rr = np.repeat(r2, 100)
        t1 = time.perf_counter()
        st = h2.append(rr, ts, np.ones(len(rr)))
        t_b += time.perf_counter() - t1
        assert not st.any()
    with capsys.disabled():
        print(f"\nhead: create {n_series} series {n_series / t_create:,.0f}/s, lookup {n_series / t_lookup:,.0f}/s; "
              f"append {n_series}x1/batch {samples / t_app:,.0f} samples/s; "
              f"1000x100/batch {50 * 100_000 / t_b:,.0f} samples/s")
        print(f"head memory after {n_rounds} samples/series: kernel {held / n_series:.0f} B/series incl. chunks; "
              f"chunk data {s['chunk_data_bytes'] / samples:.2f} B/sample; "
              f"open chunks {s['open_chunk_bytes'] / n_series:.0f} B/series; stats {s}")
