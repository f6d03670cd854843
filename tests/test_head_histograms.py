"""Native histograms in the head (pythanos.tsdb.head + the _histchunk kernel).

1. The same remote-write requests (integer and float histograms, bucket layouts growing, schema
   and zero-threshold changes, counter resets, gauges, custom buckets, stale markers) into a
   real Prometheus 3.9.1 and into our head: the blocks Prometheus cuts hold exactly our chunks
   (bytes, encodings, time ranges), ``promtool tsdb analyze`` of Prometheus 3.9.1 reads ours.
2. Append semantics: duplicates, out of order, invalid histograms, a series switching between
   floats and histograms, truncation.
3. Decoder: round trips of what the head encodes (hypothesis) and hostile bytes (never reads out
   of bounds: ValueError naming the bit).
"""
from __future__ import annotations

import time
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pythanos.tsdb.block import BlockReader
from pythanos.tsdb.head import (AT_COMMIT, DUP_OK, DUPLICATE, INVALID, OK, OUT_OF_ORDER, Head)
from pythanos.tsdb.histchunk import decode_histogram_chunk, histogram_columns

from blockdirs import blocks_by_time

H2 = 2 * 3600 * 1000
T0 = 1_700_000_000_000
STALE_NAN = np.array([0x7FF0000000000002], dtype=np.uint64).view(np.float64)[0]


def _spans_of(idx: list[int]) -> list[tuple[int, int]]:
    """Spans (offset, length) of sorted bucket indices."""
    spans: list[list[int]] = []
    prev = None
    for i in idx:
        if prev is not None and i == prev + 1:
            spans[-1][1] += 1
        else:
            spans.append([i if prev is None else i - prev - 1, 1])
        prev = i
    return [(a, b) for a, b in spans]


def make_hist(t: int, pos: dict[int, float], neg: dict[int, float], *, zc=0, schema=3, zt=0.001, is_float=False,
              hint=0, sum_=None, cv=()) -> SimpleNamespace:
    """A HistogramSample-like object from absolute bucket counts by index."""
    pi, ni = sorted(pos), sorted(neg)
    pa, na = [pos[i] for i in pi], [neg[i] for i in ni]
    if is_float:
        pb, nb = [float(x) for x in pa], [float(x) for x in na]
        count = float(sum(pa) + sum(na) + zc)
    else:
        pb = [int(x) - int(p) for x, p in zip(pa, [0] + pa[:-1])]
        nb = [int(x) - int(p) for x, p in zip(na, [0] + na[:-1])]
        count = int(sum(pa) + sum(na) + zc)
    return SimpleNamespace(timestamp=int(t), is_float=is_float, count=count, sum=float(count * 1.5 if sum_ is None else sum_),
                           schema=schema, zero_threshold=zt, zero_count=zc, positive_spans=_spans_of(pi),
                           positive_buckets=pb, negative_spans=_spans_of(ni), negative_buckets=nb, reset_hint=hint,
                           custom_values=list(cv))


def to_proto(h, msg) -> None:
    msg.timestamp = h.timestamp
    msg.sum = h.sum
    msg.schema = h.schema
    msg.zero_threshold = h.zero_threshold
    msg.reset_hint = h.reset_hint
    if h.is_float:
        msg.count_float = h.count
        msg.zero_count_float = h.zero_count
        msg.positive_counts.extend(h.positive_buckets)
        msg.negative_counts.extend(h.negative_buckets)
    else:
        msg.count_int = h.count
        msg.zero_count_int = h.zero_count
        msg.positive_deltas.extend(h.positive_buckets)
        msg.negative_deltas.extend(h.negative_buckets)
    for o, ln in h.positive_spans:
        msg.positive_spans.add(offset=o, length=ln)
    for o, ln in h.negative_spans:
        msg.negative_spans.add(offset=o, length=ln)
    msg.custom_values.extend(h.custom_values)


def gen_series(rng, kind: str, ts: np.ndarray) -> list:
    """Histogram samples of one series over ``ts``; ``kind`` picks what happens along the way."""
    out = []
    pos: dict[int, float] = {0: 1, 1: 2}
    neg: dict[int, float] = {-1: 1} if kind in ("int", "float", "reset") else {}
    schema, zt = (-53, 0.0) if kind.startswith("custom") else (12, 0.001) if kind.startswith("hires") else (3, 0.001)
    cv = [0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0]
    zc = 0
    is_float = kind in ("float", "gauge", "custom_float", "hires_float")
    for k, t in enumerate(ts.tolist()):
        # observations land in existing and sometimes new buckets (the layout grows: re-coding)
        for _ in range(int(rng.integers(0, 4))):
            hi = 6 if schema == -53 else 200 if schema == 12 else 12
            i = int(rng.integers(-2 if schema != -53 else 0, hi))
            (pos if i >= 0 or schema == -53 else neg)[i] = (pos if i >= 0 or schema == -53 else neg).get(i, 0) + 1
        if schema != -53:
            zc += int(rng.integers(0, 2))
        hint = 0
        if kind == "reset" and k % 97 == 50:
            pos = {0: 1}
            neg = {}
            zc = 0
        if kind == "reset" and k % 211 == 150:
            schema = 2 if schema == 3 else 3  # schema change: new chunk, unknown reset header
        if kind == "float" and k % 173 == 90:
            zt = 0.002 if zt == 0.001 else 0.001
        if kind in ("gauge", "gauge_int"):
            hint = 3
            if rng.random() < 0.3 and len(pos) > 1:
                pos.pop(max(pos))  # gauges may lose buckets
            pos = {i: max(v - rng.integers(0, 2), 0) if rng.random() < 0.2 else v for i, v in pos.items()}
        if kind == "custom" and k % 150 == 120:
            cv = cv[:-1] + [200.0]  # new bounds: a new chunk (counter reset)
        if kind == "custom_float" and k % 61 == 30:
            hint = 1  # explicit reset hint
        if is_float and kind != "gauge":
            pos = {i: v + (0.25 if rng.random() < 0.5 else 0) for i, v in pos.items()}
        if kind.startswith("custom"):
            pos = {i: v for i, v in pos.items() if i <= len(cv)}
        h = make_hist(t, dict(pos), dict(neg), zc=0 if schema == -53 else zc, schema=schema,
                      zt=0.0 if schema == -53 else zt, is_float=is_float, hint=hint,
                      cv=cv if schema == -53 else ())
        if rng.random() < 0.005:
            h.sum = float(STALE_NAN)
        out.append(h)
    return out


KINDS = ["int", "float", "reset", "gauge", "custom", "custom_float", "gauge_int", "hires", "hires_float"]


def _chunks_of(d):
    with BlockReader.open_dir(d) as br:
        meta = br.meta
        return (meta.min_time, meta.max_time, meta.stats.num_samples, meta.stats.num_chunks), {
            lbls: [(a, b, e, bytes(c)) for a, b, e, c in chunks] for lbls, _iv, chunks in br.series_chunks()}


def test_histogram_chunks_equal_a_real_prometheus_head(tmp_path, prometheus3_bin, prometheus_factory):
    """The same remote-write requests into a real Prometheus 3.9.1 and into our head: the blocks
    Prometheus cuts hold exactly our chunks (bytes, encodings, bounds), for every kind of change."""
    import cramjam

    from pythanos.remote.prompb import remote_pb2

    data_dir = tmp_path / "prom"
    prom = prometheus_factory(tsdb_path=data_dir, binary=prometheus3_bin,
                              extra_args=["--web.enable-remote-write-receiver", "--storage.tsdb.retention.time=100y"])
    rng = np.random.default_rng(7)
    start = (T0 // H2) * H2 + 1_234_567
    end = start + 6 * 3_600_000 + 600_000
    series = []
    for i in range(18):
        kind = KINDS[i % len(KINDS)]
        step = [15_000, 30_000, 5_000][i // len(KINDS)]
        t = np.arange(start + i * 41, end, step, dtype=np.int64)
        series.append(({"__name__": "hist", "i": str(i), "kind": kind}, t, gen_series(rng, kind, t)))
    # wide histograms (hundreds of buckets, large increments): chunks pass 2048 bytes before
    # 10 samples, where the minimum sample count holds the cut back
    for j in range(2):
        t = np.arange(start + 3 + j, end, [20_000, 2_000][j], dtype=np.int64)
        pos = {i: 0 for i in range(300)}
        hists = []
        for x in t.tolist():
            pos = {i: v + int(rng.integers(0, 2000)) for i, v in pos.items()}
            hists.append(make_hist(x, pos, {}, is_float=bool(j)))
        series.append(({"__name__": "wide", "j": str(j)}, t, hists))
    # series switching kinds every 10-minute request: floats <-> integer histograms, floats <->
    # float histograms, integer <-> float histograms (each switch cuts a chunk of the other encoding)
    mixed = []
    for j, (ka, kb) in enumerate([("f", "int"), ("f", "float"), ("int", "float")]):
        t = np.arange(start + 7 + j, end, 10_000, dtype=np.int64)
        mixed.append(({"__name__": "mixed", "j": str(j)}, t, ka, kb, gen_series(rng, "int", t),
                      gen_series(rng, "float", t), np.cumsum(rng.random(len(t)))))
    h = Head()
    refs, _ = h.get_or_create_labels([s for s, _, _ in series] + [m[0] for m in mixed])
    edges = list(range(start, end + 600_000, 600_000))
    for w, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        req = remote_pb2.WriteRequest()
        rr, hs = [], []
        fr, ft, fv = [], [], []
        for k, (lbls, t, hists) in enumerate(series):
            i0, i1 = np.searchsorted(t, [a, b])
            if i1 == i0:
                continue
            ts = req.timeseries.add()
            for n, val in sorted(lbls.items()):
                ts.labels.add(name=n, value=val)
            for x in hists[i0:i1]:
                to_proto(x, ts.histograms.add())
            rr += [refs[k]] * (i1 - i0)
            hs += hists[i0:i1]
        for k, (lbls, t, ka, kb, ih, fh, fl) in enumerate(mixed):
            i0, i1 = np.searchsorted(t, [a, b])
            kind = (ka, kb)[w % 2]
            ts = req.timeseries.add()
            for n, val in sorted(lbls.items()):
                ts.labels.add(name=n, value=val)
            ref = refs[len(series) + k]
            if kind == "f":
                for x, y in zip(t[i0:i1].tolist(), fl[i0:i1].tolist()):
                    ts.samples.add(timestamp=x, value=y)
                fr += [ref] * (i1 - i0)
                ft.append(t[i0:i1])
                fv.append(fl[i0:i1])
            else:
                for x in (ih if kind == "int" else fh)[i0:i1]:
                    to_proto(x, ts.histograms.add())
                rr += [ref] * (i1 - i0)
                hs += (ih if kind == "int" else fh)[i0:i1]
        if fr:
            assert (h.append(np.asarray(fr, dtype=np.int64), np.concatenate(ft), np.concatenate(fv)) == OK).all()
        body = bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
        r = urllib.request.Request(f"{prom.url}/api/v1/write", data=body, method="POST", headers={
            "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        with urllib.request.urlopen(r, timeout=30) as resp:
            assert resp.status in (200, 204)
        st_ = h.append_histograms(np.asarray(rr, dtype=np.int64), histogram_columns(hs))
        assert (st_ == OK).all(), (np.unique(st_), h.last_histogram_error)
    ours = tmp_path / "ours"
    ours.mkdir()
    ulids = h.compact(ours)
    assert len(ulids) == 2

    deadline = time.monotonic() + 120
    while len(blocks_by_time(data_dir)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    theirs = blocks_by_time(data_dir)
    assert len(theirs) == 2, "Prometheus did not compact its head"
    headers, encs, recoded = set(), set(), 0
    for mine, prom_block in zip(blocks_by_time(ours), theirs):
        m_meta, m_chunks = _chunks_of(mine)
        p_meta, p_chunks = _chunks_of(prom_block)
        assert m_meta == p_meta
        assert m_chunks.keys() == p_chunks.keys()
        for lbls in p_chunks:
            assert [c[:3] for c in m_chunks[lbls]] == [c[:3] for c in p_chunks[lbls]], lbls
            for j, (mc, pc) in enumerate(zip(m_chunks[lbls], p_chunks[lbls])):
                assert mc[3] == pc[3], (lbls, j)
        for cs in p_chunks.values():
            for _a, _b, e, c in cs:
                encs.add(e)
                if e != 1:
                    headers.add(c[2] & 0xC0)
        with open(mine / "meta.json") as f, open(prom_block / "meta.json") as g:
            import json
            mj, pj = json.load(f), json.load(g)
            assert mj["stats"] == pj["stats"]
    wide = [c for lb, cs in p_chunks.items() if dict(lb)["__name__"] == "wide" for c in cs]
    assert any(len(c[3]) > 2048 and int.from_bytes(c[3][:2], "big") == 10 for c in wide)
    mixed_encs = [e for lb, cs in p_chunks.items() if dict(lb)["__name__"] == "mixed" for _a, _b, e, _c in cs]
    assert len(set(mixed_encs)) == 3 and sum(x != y for x, y in zip(mixed_encs, mixed_encs[1:])) >= 3
    # the cases that matter were there: all encodings, every reset header
    assert encs == {1, 2, 3}
    # schema 12 was reduced to 8 (as Prometheus' receiver does); the chunk bytes are equal above
    hires = [c for lb, cs in p_chunks.items() if dict(lb).get("kind", "").startswith("hires") for c in cs]
    assert hires and {decode_histogram_chunk(c[3], c[2]).schema for c in hires} == {8}
    assert headers == {0x00, 0x40, 0x80, 0xC0}
    del recoded


def test_blocks_with_histograms_read_by_prometheus(tmp_path, prometheus3_bin, prometheus_factory, promtool_bin):
    """Blocks of ours with native histograms: a real Prometheus 3.9.1 opens them and answers with
    what we appended (count, sum, every bucket), instant and range queries; ``promtool tsdb
    analyze --extended`` passes (Debian's promtool 2.42: no promtool 3.x is installed)."""
    import json
    import subprocess
    import urllib.parse

    rng = np.random.default_rng(3)
    start = (T0 // H2) * H2
    h = Head()
    lbls = [{"__name__": "hh", "kind": k} for k in KINDS]
    refs, _ = h.get_or_create_labels(lbls)
    t = np.arange(start, start + 3 * H2, 15_000, dtype=np.int64)
    per = [gen_series(rng, k, t) for k in KINDS]
    for x in per:
        for s in x:
            if np.isnan(s.sum):
                s.sum = 1.0 * (s.count if not isinstance(s.count, float) else s.count)
    for i in range(len(t)):
        st_ = h.append_histograms(refs, histogram_columns([per[k][i] for k in range(len(KINDS))]))
        assert (st_ == OK).all(), h.last_histogram_error
    db = tmp_path / "db"
    db.mkdir()
    assert len(h.compact(db)) == 2
    for blk in blocks_by_time(db):
        r = subprocess.run([promtool_bin, "tsdb", "analyze", "--extended", str(db), blk.name], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0 and "Series: 9" in r.stdout, r.stderr
    prom = prometheus_factory(tsdb_path=db, binary=prometheus3_bin, extra_args=["--storage.tsdb.retention.time=100y"])
    tq = int(t[100])
    q = urllib.parse.urlencode({"query": "hh", "time": f"{tq / 1000:.3f}"})
    with urllib.request.urlopen(f"{prom.url}/api/v1/query?{q}", timeout=30) as resp:
        res = json.load(resp)["data"]["result"]
    got = {r["metric"]["kind"]: r["histogram"][1] for r in res}
    assert set(got) == set(KINDS)
    for k, kind in enumerate(KINDS):
        want = per[k][100]
        if want.schema > 8:  # stored at schema 8, as Prometheus' receiver reduces it
            from pythanos.tsdb.histchunk import _reduced
            want = _reduced(want, not want.is_float)
        assert float(got[kind]["count"]) == float(want.count), kind
        assert float(got[kind]["sum"]) == float(want.sum), kind
        absolute = []
        for b in (want.positive_buckets, want.negative_buckets):
            absolute += list(np.asarray(b, dtype=float) if want.is_float else np.cumsum(b).astype(float))
        if want.zero_count:
            absolute.append(float(want.zero_count))
        assert sorted(float(b[3]) for b in got[kind].get("buckets", [])) == sorted(x for x in absolute if x), kind
    # every sample of both blocks is there: (start - 1, start + 4h - 1] holds 960 per series
    q = urllib.parse.urlencode({"query": "count_over_time(hh[4h])", "time": f"{(start + 2 * H2 - 1) / 1000:.3f}"})
    with urllib.request.urlopen(f"{prom.url}/api/v1/query?{q}", timeout=30) as resp:
        res = json.load(resp)["data"]["result"]
    assert sorted((r["metric"]["kind"], r["value"][1]) for r in res) == sorted((k, str(2 * H2 // 15_000)) for k in KINDS)


def _one(h: Head, name="m") -> int:
    refs, _ = h.get_or_create_labels([{"__name__": name}])
    return int(refs[0])


def test_append_statuses():
    h = Head()
    r = _one(h)
    a = make_hist(T0, {0: 1}, {})
    b = make_hist(T0, {0: 2}, {})
    st_ = h.append_histograms([r, r, r], histogram_columns([a, a, b]))
    assert st_.tolist() == [OK, DUP_OK | AT_COMMIT, DUPLICATE | AT_COMMIT]  # both passed Append
    st_ = h.append_histograms([r, r], histogram_columns([make_hist(T0 - 1, {0: 1}, {}), b]))
    assert st_.tolist() == [OUT_OF_ORDER, DUPLICATE]
    bad = make_hist(T0 + 1, {0: 1}, {})
    bad.count = 5  # buckets hold 1
    st_ = h.append_histograms([r], histogram_columns([bad]))
    assert st_.tolist() == [INVALID] and "Count" in h.last_histogram_error
    for schema in (53, -5, -52):
        bad = make_hist(T0 + 1, {0: 1}, {}, schema=schema)
        assert h.append_histograms([r], histogram_columns([bad])).tolist() == [INVALID]
    assert "invalid schema" in h.last_histogram_error


def test_series_switching_between_floats_and_histograms():
    """As one Prometheus memSeries: each switch cuts a chunk of the other encoding, and either
    kind at or before the other's last time is refused."""
    h = Head()
    r = _one(h)
    assert (h.append([r, r], [T0, T0 + 1000], [1.0, 2.0]) == OK).all()
    st_ = h.append_histograms([r, r], histogram_columns([make_hist(T0 + 1000, {0: 1}, {}),
                                                         make_hist(T0 + 2000, {0: 1}, {})]))
    assert st_.tolist() == [DUPLICATE, OK]
    assert h.append([r, r], [T0 + 2000, T0 + 3000], [5.0, 6.0]).tolist() == [DUPLICATE, OK]
    assert h.append_histograms([r], histogram_columns([make_hist(T0 + 4000, {0: 2}, {})])).tolist() == [OK]
    lbls, hc = h.query()
    assert hc.encoding.tolist() == [1, 2, 1, 2]
    assert hc.mint.tolist() == [T0, T0 + 2000, T0 + 3000, T0 + 4000]
    assert hc.num_samples.tolist() == [2, 1, 1, 1]
    # the histogram after the float chunk starts with an unknown reset header (no previous appender)
    assert decode_histogram_chunk(hc.chunk(3), 2).header == "unknown"


def test_truncate_keeps_histogram_only_series():
    h = Head()
    r = _one(h)
    r2 = _one(h, "old")
    t = T0 + np.arange(0, 3 * H2, 60_000)
    assert (h.append([r2], [T0], [1.0]) == OK).all()
    cols = histogram_columns([make_hist(x, {0: k + 1}, {}) for k, x in enumerate(t.tolist())])
    assert (h.append_histograms(np.full(len(t), r), cols) == OK).all()
    removed = h.truncate(int(t[0]) + H2)
    assert removed.tolist() == [r2]
    lbls, hc = h.query()
    assert [dict(x)["__name__"] for x in lbls] == ["m"]
    assert hc.maxt[0] >= int(t[0]) + H2 > hc.mint[0]  # chunks wholly before the cut are gone, not the one across it
    assert (hc.encoding == 2).all() and hc.maxt[-1] == t[-1]


# --- decoder -------------------------------------------------------------------------------------

hist_st = st.lists(st.tuples(st.integers(1, 120_000), st.dictionaries(st.integers(-5, 40), st.integers(0, 50), max_size=12),
                             st.integers(0, 3), st.booleans()), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hist_st, st.booleans(), st.sampled_from([0, 3]))
def test_decoder_round_trips_what_the_head_encodes(steps, is_float, hint):
    """Whatever the head encodes (growing and shrinking layouts, resets, gauges), decoding its
    chunks gives back every appended sample: counts, sums, and each bucket's absolute count."""
    h = Head()
    r = _one(h)
    t = T0
    want = []
    for dt, buckets, zc, stale in steps:
        t += dt
        x = make_hist(t, {i: v for i, v in buckets.items() if i >= 0}, {i: v for i, v in buckets.items() if i < 0},
                      zc=zc, is_float=is_float, hint=hint)
        if stale:
            x.sum = float(STALE_NAN)
        want.append(x)
        assert h.append_histograms([r], histogram_columns([x])).tolist() == [OK]
    hc = h.select_histograms([r])
    got = []
    for j in range(len(hc.mint)):
        d = decode_histogram_chunk(hc.chunk(j), int(hc.encoding[j]))
        assert d.t[0] == hc.mint[j] and d.t[-1] == hc.maxt[j]
        for i in range(len(d)):
            got.append((d, i))
    assert len(got) == len(want)
    for (d, i), x in zip(got, want):
        assert d.t[i] == x.timestamp
        if np.isnan(x.sum) and np.float64(x.sum).view(np.uint64) == np.float64(STALE_NAN).view(np.uint64):
            assert d.stale[i]
            continue
        assert not d.stale[i]
        assert float(d.count[i]) == float(x.count) and float(d.zero_count[i]) == float(x.zero_count)
        assert d.sum[i] == x.sum
        # absolute counts by bucket index, zeros for buckets the chunk layout added
        for side, spans, n0, src in ((0, d.positive_spans, 0, x.positive_buckets),
                                     (1, d.negative_spans, d.npos, x.negative_buckets)):
            vals = d.buckets[i, n0:n0 + (d.npos if side == 0 else d.nneg)]
            abs_ = np.cumsum(vals) if not is_float else vals
            idx, cur = [], None
            for o, ln in spans:
                cur = o if cur is None else cur + o
                idx += list(range(cur, cur + ln))
                cur += ln
            mine = {i_: float(v) for i_, v in zip(idx, abs_) if v != 0}
            xs = x.positive_spans if side == 0 else x.negative_spans
            xb = np.cumsum(src) if not is_float else np.asarray(src, dtype=float)
            xi, cur = [], None
            for o, ln in xs:
                cur = o if cur is None else cur + o
                xi += list(range(cur, cur + ln))
                cur += ln
            theirs = {i_: float(v) for i_, v in zip(xi, xb) if v != 0}
            assert mine == theirs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=400), st.sampled_from([2, 3]))
def test_decoder_on_hostile_bytes(data, enc):
    """Random bytes: a decode or a ValueError naming the bit, never a crash or a huge allocation."""
    try:
        d = decode_histogram_chunk(data, enc)
    except ValueError as e:
        assert "histogram chunk" in str(e)
        return
    assert d.buckets.size <= max(len(data) * 8, 1) + d.npos + d.nneg


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_decoder_on_mutated_chunks(data):
    """Real chunks with bytes flipped or cut short."""
    h = Head()
    r = _one(h)
    xs = [make_hist(T0 + k * 1000, {0: k + 1, 3: k, 7 + k % 3: 1}, {-2: k}, zc=1, is_float=bool(k % 2 == 0) and False)
          for k in range(30)]
    h.append_histograms([r] * len(xs), histogram_columns(xs))
    c = bytearray(h.select_histograms([r]).chunk(0))
    for _ in range(data.draw(st.integers(1, 5))):
        i = data.draw(st.integers(0, len(c) - 1))
        c[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(c)))
    try:
        decode_histogram_chunk(bytes(c[:cut]), 2)
    except ValueError:
        pass


def test_decode_errors_name_the_place():
    with pytest.raises(ValueError, match="3-byte header"):
        decode_histogram_chunk(b"\x00", 2)
    with pytest.raises(ValueError, match="bit"):
        decode_histogram_chunk(b"\x00\x05\x00\xff", 2)
    with pytest.raises(ValueError, match="not a histogram encoding"):
        decode_histogram_chunk(b"\x00\x00\x00", 1)


def test_flush_cuts_through_histogram_chunks(tmp_path):
    """Thanos' receiver flush: the remainder block ends before the max time, cutting through the
    open histogram chunk; the block holds exactly the samples before it, each chunk decodable."""
    h = Head()
    r = _one(h)
    t = T0 + np.arange(0, H2 + 600_000, 15_000)
    xs = [make_hist(x, {0: k + 1, 2: k // 3}, {-1: k // 5}, zc=k // 7) for k, x in enumerate(t.tolist())]
    assert (h.append_histograms(np.full(len(t), r), histogram_columns(xs)) == OK).all()
    out = tmp_path / "flush"
    out.mkdir()
    ulids = h.flush(out)
    assert len(ulids) == 2
    seen = []
    for u in ulids:
        with BlockReader.open_dir(out / u) as br:
            for _lbls, _iv, chunks in br.series_chunks():
                for a, b, e, c in chunks:
                    d = decode_histogram_chunk(bytes(c), e)
                    assert d.t[0] == a and d.t[-1] == b
                    seen += d.t.tolist()
    assert seen == t[:-1].tolist()  # the sample at the max time stays in the head, as Thanos
    assert h.select_histograms([r]).maxt.tolist() == [int(t[-1])]


def test_wal_records_as_columns_and_replay():
    """WAL histogram records (walrecords.Histogram) become columns; replay skips what is already
    there and ignores the appendable window, as for floats."""
    from pythanos.tsdb import walrecords as wr

    h = Head()
    r = _one(h)
    xs = [make_hist(T0 + k * 1000, {0: k + 1}, {}, is_float=True) for k in range(5)]
    recs = [wr.Histogram(r, x.timestamp, x.reset_hint, x.schema, x.zero_threshold, x.zero_count, x.count, x.sum,
                         tuple(x.positive_spans), tuple(x.negative_spans), tuple(x.positive_buckets),
                         tuple(x.negative_buckets), None) for x in xs]
    body = wr.encode_histograms(wr.FLOAT_HISTOGRAM_SAMPLES, recs)
    back = wr.decode_histograms(body)
    st_ = h.replay_histograms([x.ref for x in back], histogram_columns(back, is_float=True))
    assert (st_ == OK).all()
    st_ = h.replay_histograms([x.ref for x in back[:2]], histogram_columns(back[:2], is_float=True))
    assert (st_ != OK).all()
    d = decode_histogram_chunk(h.select_histograms([r]).chunk(0), 3)
    assert d.t.tolist() == [x.timestamp for x in xs] and d.count.tolist() == [x.count for x in xs]
    assert h.histograms_appended == 0 and h.stats()["histogram_series"] == 1


def test_reads_with_out_of_order_floats_next_to_histograms():
    """Out-of-order floats merged into a series that also holds histogram chunks keep those
    chunks; series() gives the floats only."""
    h = Head(ooo_window=3_600_000)
    r = _one(h)
    assert (h.append([r, r], [T0, T0 + 10_000], [1.0, 2.0]) == OK).all()
    assert h.append_histograms([r], histogram_columns([make_hist(T0 + 20_000, {0: 1}, {})])).tolist() == [OK]
    from pythanos.tsdb.head import OOO_OK
    assert h.append([r], [T0 + 5_000], [9.0]).tolist() == [OOO_OK]
    lbls, hc = h.query()
    assert hc.encoding.tolist() == [1, 2] and hc.num_samples.tolist() == [3, 1]
    (_ls, t, v), = list(h.series())
    assert t.tolist() == [T0, T0 + 5_000, T0 + 10_000] and v.tolist() == [1.0, 9.0, 2.0]


def test_histogram_append_figures(capsys):
    """Figures (printed, not asserted): kernel append and decode rates, bytes per sample."""
    n_series, batches = 5_000, 20
    h = Head()
    refs, _ = h.get_or_create_labels([{"__name__": "h", "i": str(i)} for i in range(n_series)])
    t_cols = t_app = 0.0
    for b in range(batches):
        xs = [make_hist(T0 + b * 15_000, {i: 1 + b * (i % 3) for i in range(20)}, {}, zc=b) for _ in range(n_series)]
        t0 = time.perf_counter()
        cols = histogram_columns(xs)
        t1 = time.perf_counter()
        assert (h.append_histograms(refs, cols) == OK).all()
        t_app += time.perf_counter() - t1
        t_cols += t1 - t0
    n = n_series * batches
    t0 = time.perf_counter()
    _lbls, hc = h.query()
    for j in range(len(hc.mint)):
        decode_histogram_chunk(hc.chunk(j), int(hc.encoding[j]))
    t_dec = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\nhistograms (20 buckets): append {n / t_app:,.0f}/s ({t_app / n * 1e6:.2f} us each, one kernel call per "
              f"{n_series}), histogram_columns {n / t_cols:,.0f}/s, query+decode {n / t_dec:,.0f} samples/s, "
              f"{h.stats()['histogram_bytes'] / n:.1f} B/sample held")


def test_columns_of_mixed_batches_and_extreme_counts():
    """histogram_columns keeps each sample's words: integer counts up to 2^64-1, negative deltas,
    float bits, in one batch of both kinds."""
    a = make_hist(T0, {0: 3, 1: 1}, {-1: 2})
    b = make_hist(T0, {0: 0.5, 3: 2.25}, {}, is_float=True)
    big = make_hist(T0, {}, {}, zc=0)
    big.count = 2**64 - 1
    big.zero_count = 2**64 - 1
    c = histogram_columns([a, b, big])
    assert c.count.tolist() == [6, np.float64(b.count).view(np.uint64), 2**64 - 1]
    assert c.buckets[c.pbucket_off[0]:c.pbucket_off[1]].view(np.int64).tolist() == [3, -2]
    assert c.buckets[c.pbucket_off[1]:c.pbucket_off[2]].view(np.float64).tolist() == [0.5, 2.25]
    assert c.buckets[c.nbucket_off[0]:c.nbucket_off[1]].view(np.int64).tolist() == [2]
    assert c.spans[c.pspan_off[1]:c.pspan_off[2]].tolist() == [[0, 1], [2, 1]]
    assert c.is_float.tolist() == [0, 1, 0]


def test_out_of_order_histograms_kept_read_and_compacted(tmp_path):
    """With an out-of-order window late histograms are kept (OOO_OK), merged into reads as their
    own chunks, written to the out-of-order block of their window and then dropped."""
    from pythanos.tsdb.head import OOO_OK, TOO_OLD

    h = Head(ooo_window=H2)
    r, r2 = _one(h), _one(h, "late_only")
    t = T0 + np.arange(0, 3 * H2, 60_000)
    xs = [make_hist(x, {0: k + 1, 1: k}, {}) for k, x in enumerate(t.tolist())]
    assert (h.append_histograms(np.full(len(t), r), histogram_columns(xs)) == OK).all()
    late_t = int(t[-1]) - 1_800_000 + 1  # behind the series' last sample
    t2 = int(t[-1]) - 5_400_000  # a new series, before the appendable window
    late = [make_hist(late_t, {0: 1}, {}), make_hist(late_t, {0: 1}, {}), make_hist(t2, {0: 5}, {}, is_float=True),
            make_hist(int(t[-1]) - H2 - 1, {0: 1}, {})]
    st_ = h.append_histograms([r, r, r2, r], histogram_columns(late))
    assert st_.tolist() == [OOO_OK, DUP_OK | AT_COMMIT, OOO_OK, TOO_OLD]
    lbls, hc = h.query((), t2, late_t)
    got = {dict(lb)["__name__"]: [decode_histogram_chunk(hc.chunk(j), int(hc.encoding[j])).t.tolist()
                                  for j in range(hc.starts[i], hc.starts[i + 1])] for i, lb in enumerate(lbls)}
    assert [late_t] in got["m"] and got["late_only"] == [[t2]]
    out = tmp_path / "b"
    out.mkdir()
    ulids = h.compact(out)
    ooo_blocks = []
    for u in ulids:
        with BlockReader.open_dir(out / u) as br:
            if "from-out-of-order" in (br.meta.compaction.hints or []):
                ooo_blocks.append({lb: [(e, decode_histogram_chunk(bytes(c), e).t.tolist()) for _a, _b, e, c in cs]
                                   for lb, _iv, cs in br.series_chunks()})
    merged = {}
    for b in ooo_blocks:
        for lb, cs in b.items():
            merged.setdefault(dict(lb)["__name__"], []).extend(cs)
    assert merged == {"late_only": [(3, [t2])], "m": [(2, [late_t])]}
    assert h.stats()["histogram_ooo_samples"] == 0


def test_out_of_order_histograms_against_a_real_prometheus(tmp_path, prometheus3_bin, prometheus_factory):
    """The same remote-write requests with late histograms into Prometheus 3.9.1 with an
    out-of-order window and into our head: every histogram reads back the same (count, sum)."""
    import json
    import urllib.parse

    import cramjam

    from pythanos.remote.prompb import remote_pb2

    minute = 60_000
    window = 40 * minute
    prom = prometheus_factory(binary=prometheus3_bin, extra_args=["--web.enable-remote-write-receiver"],
                              config_yaml="global:\n  scrape_interval: 15s\nstorage:\n  tsdb:\n"
                                          f"    out_of_order_time_window: {window // 1000}s\n")
    h = Head(ooo_window=window)
    names = [{"__name__": "late_h", "i": str(i)} for i in range(6)]
    refs, _ = h.get_or_create_labels(names)
    rng = np.random.default_rng(4)
    now = int(time.time() * 1000) // minute * minute - 4 * 3_600_000
    from pythanos.tsdb.head import OOO_OK
    for k in range(90):
        req = remote_pb2.WriteRequest()
        rr, hs = [], []
        for i, lbls in enumerate(names):
            ts = [now + k * minute]
            if rng.random() < 0.3:
                ts.append(now + k * minute - int(rng.integers(1, 39)) * minute - int(rng.integers(1, 999)))
            s = req.timeseries.add()
            for n, val in sorted(lbls.items()):
                s.labels.add(name=n, value=val)
            for t in ts:
                x = make_hist(t, {j: int(rng.integers(0, 9)) + k for j in range(int(rng.integers(1, 6)))}, {},
                              is_float=i % 2 == 1)
                to_proto(x, s.histograms.add())
                rr.append(int(refs[i]))
                hs.append(x)
        body = bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
        r = urllib.request.Request(f"{prom.url}/api/v1/write", data=body, method="POST", headers={
            "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        with urllib.request.urlopen(r, timeout=30) as resp:
            assert resp.status in (200, 204)
        st_ = h.append_histograms(rr, histogram_columns(hs))
        assert np.isin(st_, [OK, OOO_OK]).all(), st_
    q = urllib.parse.urlencode({"query": "late_h[1d]", "time": f"{(now + 200 * minute) / 1000:.3f}"})
    with urllib.request.urlopen(f"{prom.url}/api/v1/query?{q}", timeout=60) as resp:
        body = json.loads(resp.read())
    theirs = {r["metric"]["i"]: [(round(float(a) * 1000), float(b["count"]), float(b["sum"]))
                                 for a, b in r["histograms"]] for r in body["data"]["result"]}
    lbls, hc = h.query()
    ours = {}
    for i, lb in enumerate(lbls):
        got = []
        for j in range(hc.starts[i], hc.starts[i + 1]):
            d = decode_histogram_chunk(hc.chunk(j), int(hc.encoding[j]))
            got += [(int(t), float(c), float(s)) for t, c, s in zip(d.t, d.count, d.sum)]
        ours[dict(lb)["i"]] = sorted(got)
    assert ours.keys() == theirs.keys() and len(ours) == 6
    for i in ours:
        assert ours[i] == theirs[i], i
    assert h.ooo_samples_appended > 20


def test_metrics_by_type():
    """prometheus_tsdb_head_samples_appended and the rejection counters carry type="histogram"."""
    from prometheus_client import CollectorRegistry, generate_latest

    from pythanos.tsdb.head import HeadCollector

    h = Head()
    r = _one(h)
    h.append_histograms([r, r], histogram_columns([make_hist(T0 + 1, {0: 1}, {}), make_hist(T0, {0: 1}, {})]))
    reg = CollectorRegistry()
    reg.register(HeadCollector(lambda: {"t": h}))
    text = generate_latest(reg).decode()
    assert 'prometheus_tsdb_head_samples_appended_total{tenant="t",type="histogram"} 1.0' in text
    assert 'prometheus_tsdb_out_of_order_samples_total{tenant="t",type="histogram"} 1.0' in text
    assert 'prometheus_tsdb_head_chunks{tenant="t"} 1.0' in text
