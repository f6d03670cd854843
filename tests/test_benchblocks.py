"""``pythanos tools bench-blocks``: the thanosbench-like planner, generator, CLI, and a real Prometheus
serving the generated blocks."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse

import numpy as np
import pytest

from peers import http_get
from pythanos.errors import UserError
from pythanos.tools import benchblocks as bb

H = 3_600_000
D = 24 * H
MAXT_2019 = 1571356800000  # 2019-10-18T00:00:00Z, thanosbench's LTS benchmark max-time


# --------------------------------------------------------------------------------------------- plan

def test_plan_continuous_365d_tiny():
    blocks = bb.plan("continuous-365d-tiny", MAXT_2019)
    assert len(blocks) == 13
    ranges = [b.max_time - b.min_time for b in blocks]
    assert ranges == [2 * H, 2 * H, 2 * H, 8 * H] + [176 * H] * 4 + [67 * D] * 5
    # maxt rounded *up* to the next 2h boundary (thanosbench's rangeForTimestamp), even when aligned.
    assert blocks[0].max_time == MAXT_2019 + 2 * H
    for newer, older in zip(blocks, blocks[1:]):
        assert older.max_time == newer.min_time  # touching, never overlapping
    for b in blocks:
        assert b.min_time % (2 * H) == 0 and b.max_time % (2 * H) == 0
    assert blocks[0].max_time - blocks[-1].min_time == 8758 * H
    assert [tuple(b) for b in blocks][:2] == [(MAXT_2019, MAXT_2019 + 2 * H), (MAXT_2019 - 2 * H, MAXT_2019)]


def test_plan_alignment_and_other_profiles():
    assert bb.plan("continuous-30d-tiny", MAXT_2019 + 1)[0].max_time == MAXT_2019 + 2 * H
    assert bb.plan("continuous-30d-tiny", MAXT_2019 - 1)[0].max_time == MAXT_2019
    p30 = bb.plan("continuous-30d-tiny", MAXT_2019)
    assert len(p30) == 9 and p30[0].max_time - p30[-1].min_time == 720 * H
    p1w = bb.plan("continuous-1w-small", MAXT_2019)
    assert [b.max_time - b.min_time for b in p1w] == [2 * H] * 3 + [8 * H] * 2 + [48 * H] * 3 + [2 * H]
    assert bb.PROFILES["continuous-1w-small"].num_series == 10_000
    pb = bb.plan("bench-10k-1d", MAXT_2019)
    assert len(pb) == 12 and pb[0].max_time - pb[-1].min_time == D


def test_series_labels():
    ls = bb.series_labels("continuous-365d-tiny")
    assert ls == [{"__blockgen_target__": "1", "__name__": f"continuous_app_metric{i}"} for i in range(5)]
    big = bb.series_labels("continuous-1w-small")
    assert len(big) == 10_000 and len({tuple(sorted(x.items())) for x in big}) == 10_000
    assert {x["__blockgen_target__"] for x in big} == {str(i) for i in range(1, 101)}


# -------------------------------------------------------------------------------------------- flags

def test_parse_labels():
    assert bb.parse_labels(['cluster="eu1"', 'replica="a,b",env="x \\"y\\""']) == {
        "cluster": "eu1", "replica": "a,b", "env": 'x "y"'}
    assert bb.parse_labels([]) == {}
    with pytest.raises(UserError, match=r"^--labels: expected name=\"value\", got 'cluster=eu1'$"):
        bb.parse_labels(["cluster=eu1"])
    with pytest.raises(UserError, match="^--labels: "):
        bb.parse_labels(['9x="a"'])
    with pytest.raises(UserError, match="^--labels: label 'a' given twice"):
        bb.parse_labels(['a="1"', 'a="2"'])


def test_parse_max_time():
    now = 1_700_000_000_000
    assert bb.parse_max_time("6h", now_ms=now) == now + 6 * H  # Thanos' TimeOrDurationValue: now plus
    assert bb.parse_max_time("-6h", now_ms=now) == now - 6 * H
    assert bb.parse_max_time("-1h30m", now_ms=now) == now - 90 * 60_000
    assert bb.parse_max_time("0s", now_ms=now) == now
    assert bb.parse_max_time("0", now_ms=now) == now
    assert bb.parse_max_time("2019-10-18T00:00:00Z") == MAXT_2019
    assert bb.parse_max_time("2019-10-18T02:00:00.5+02:00") == MAXT_2019 + 500
    for bad in ("6x", "", "yesterday", "2019-10-18", "h"):
        with pytest.raises(UserError, match="^--max-time: "):
            bb.parse_max_time(bad)


def test_unknown_profile_names_flag():
    with pytest.raises(UserError, match=r'^--profile: unknown profile "x", known: .*continuous-365d-tiny'):
        bb.get_profile("x")


# ---------------------------------------------------------------------------------------- generate

def _one_block(profile, block, **kw):
    batches = list(bb.generate(profile, block.min_time, block.max_time, **kw))
    return (sum((b.labels for b in batches), []), batches[0].timestamps,
            np.concatenate([b.values for b in batches]))


def test_generation_shape():
    b = bb.plan("continuous-365d-tiny", MAXT_2019)[3]  # the 8h block
    labels, ts, vals = _one_block("continuous-365d-tiny", b, ext_labels={"cluster": "eu1"}, seed=7)
    assert len(labels) == 5 and vals.shape == (5, 8 * 240)
    assert ts[0] == b.min_time and np.all(np.diff(ts) == 15_000) and ts[-1] == b.max_time - 15_000
    for row in vals:
        runs = row.reshape(8, 240)
        assert np.all(runs == runs[:, :1])               # constant for 240 samples (1h) ...
        steps = np.diff(runs[:, 0])
        assert np.all(steps != 0)                        # ... then steps
        v0 = row[0]
        assert 10_000_000 <= v0 < 200_000_001           # first value uniform in [10M, 200M+1)
        assert np.all(np.abs(runs[1:, 0] - v0) <= 15_000_000)  # offset in +-15M around it
    assert len({row[0] for row in vals}) == 5


def test_generation_deterministic_and_batching_invariant():
    b = bb.plan("continuous-1w-small", MAXT_2019)[0]
    kw = dict(ext_labels={"cluster": "eu1"}, seed=3)
    l1, _, v1 = _one_block("continuous-1w-small", b, **kw)
    l2, _, v2 = _one_block("continuous-1w-small", b, batch_samples=100_000, **kw)
    assert l1 == l2 and np.array_equal(v1, v2)
    _, _, v3 = _one_block("continuous-1w-small", b, ext_labels={"cluster": "eu1"}, seed=4)
    _, _, v4 = _one_block("continuous-1w-small", b, ext_labels={"cluster": "eu2"}, seed=3)
    assert not np.array_equal(v1, v3) and not np.array_equal(v1, v4)
    # value_at agrees with the block generator.
    blocks = bb.plan("continuous-1w-small", MAXT_2019)
    i = 1234
    assert bb.value_at("continuous-1w-small", blocks, l1[i], int(b.min_time + 300 * 15_000), **kw) == v1[i, 300]
    assert bb.value_at("continuous-1w-small", blocks, l1[i], int(b.min_time + 1), **kw) is None


def test_generation_bounded_memory():
    b = bb.plan("continuous-1w-small", MAXT_2019)[5]  # 48h block, 10k series, 115M samples
    assert b.max_time - b.min_time == 48 * H
    gen = bb.generate("continuous-1w-small", b.min_time, b.max_time, batch_samples=2_000_000)
    first = next(gen)
    assert first.values.shape == (173, 48 * 240) and first.values.size <= 2_000_000
    gen.close()


# ------------------------------------------------------------------------------------ CLI and peers

@pytest.fixture(scope="module")
def generated(tmp_path_factory, pythanos_bin):
    """The README's command, run once: continuous-365d-tiny up to 6h from now (as the course runs it)."""
    exe = pythanos_bin
    out = tmp_path_factory.mktemp("benchblocks") / "blocks"
    now = int(time.time() * 1000)
    proc = subprocess.run([exe, "tools", "bench-blocks", "--profile", "continuous-365d-tiny",
                           "--labels", 'cluster="eu1"', "--max-time", "6h", "--output.dir", str(out)],
                          capture_output=True, text=True, timeout=600)
    after = int(time.time() * 1000)
    assert proc.returncode == 0, proc.stderr
    return {"dir": out, "stderr": proc.stderr, "now": (now, after)}


def _metas(d):
    from pythanos.tsdb.meta import BlockMeta

    return sorted((BlockMeta.from_json((d / n / "meta.json").read_bytes(), block=n) for n in os.listdir(d)),
                  key=lambda m: -m.max_time)


def test_cli_writes_planned_blocks(generated):
    d = generated["dir"]
    names = sorted(os.listdir(d))
    assert len(names) == 13, names
    metas = _metas(d)
    now0, now1 = generated["now"]
    plans = [bb.plan("continuous-365d-tiny", t + 6 * H) for t in (now0, now1)]
    got = [(m.min_time, m.max_time) for m in metas]
    assert got in [[tuple(b) for b in p] for p in plans]
    for m in metas:
        assert m.ulid in names and (d / m.ulid / "index").is_file() and (d / m.ulid / "chunks").is_dir()
        assert m.compaction.level == 1 and m.version == 1
        assert m.thanos.labels == {"cluster": "eu1"} and m.thanos.source == "blockgen"
        assert m.thanos.downsample_resolution == 0
        assert m.stats.num_series == 5
        assert m.stats.num_samples == 5 * (m.max_time - m.min_time) // 15_000
        assert m.stats.num_chunks == -(-m.stats.num_samples // 120)  # 120-sample chunks
    raw = json.loads((d / metas[0].ulid / "meta.json").read_text())
    assert raw["thanos"]["source"] == "blockgen" and raw["compaction"]["level"] == 1
    logs = generated["stderr"]
    assert logs.count('msg="wrote block"') == 13 and "bench-blocks done" in logs


def test_cli_user_errors(tmp_path, pythanos_bin):
    exe = pythanos_bin
    base = [exe, "tools", "bench-blocks", "--output.dir", str(tmp_path / "x")]
    p = subprocess.run(base + ["--profile", "continuous-30d-tiny", "--labels", "cluster=eu1"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "--labels: expected name=\\\"value\\\", got 'cluster=eu1'" in p.stderr, p.stderr
    p = subprocess.run(base + ["--profile", "nope"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "--profile: unknown profile" in p.stderr, p.stderr
    p = subprocess.run(base + ["--profile", "help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "continuous-365d-tiny" in p.stdout


def _query(url, path, **params):
    status, body = http_get(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=30)
    assert status == 200, body[:500]
    doc = json.loads(body)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def test_prometheus_serves_generated_blocks(generated, prometheus_factory, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(generated["dir"], data)  # Prometheus may compact them: keep the fixture's copy intact
    metas = _metas(generated["dir"])
    blocks = [bb.BlockPlan(m.min_time, m.max_time) for m in metas]
    prom = prometheus_factory(tsdb_path=data, extra_args=["--storage.tsdb.retention.time=100y"])
    series0 = {"__blockgen_target__": "1", "__name__": "continuous_app_metric0"}

    newest = blocks[0]
    t_last = (newest.max_time - 15_000) / 1000
    assert _query(prom.url, "/api/v1/query", query="count(continuous_app_metric0)", time=t_last)[0]["value"][1] == "1"
    res = _query(prom.url, "/api/v1/query", query='count({__name__=~"continuous_app_metric.*"})', time=t_last)
    assert res[0]["value"][1] == "5"
    res = _query(prom.url, "/api/v1/query", query="continuous_app_metric3", time=t_last)
    assert res[0]["metric"] == {"__blockgen_target__": "1", "__name__": "continuous_app_metric3"}

    def check_range(start_ms, end_ms, series=series0):
        res = _query(prom.url, "/api/v1/query_range", query=series["__name__"], start=start_ms / 1000,
                     end=end_ms / 1000, step=15)
        assert len(res) == 1
        got = [(int(round(float(t) * 1000)), float(v)) for t, v in res[0]["values"]]
        want = [(t, bb.value_at("continuous-365d-tiny", blocks, series, t, ext_labels={"cluster": "eu1"}, seed=1))
                for t in range(start_ms, end_ms + 1, 15_000)]
        assert got == want
        return got

    got = check_range(newest.min_time, newest.max_time - 15_000)  # the whole newest 2h block
    assert len(got) == 480 and len({v for _, v in got}) == 2
    oldest = blocks[-1]
    got = check_range(oldest.min_time, oldest.min_time + 3 * H)  # an old 67d block
    assert len({v for _, v in got}) == 4
    # Across the boundary between the 8h block and the newest 176h block.
    check_range(blocks[4].max_time - H, blocks[4].max_time + H,
                series={"__blockgen_target__": "1", "__name__": "continuous_app_metric4"})


def test_promtool_analyze_generated_block(generated, promtool_bin):
    metas = _metas(generated["dir"])
    m = metas[-1]  # a 67d block: 5 x 385 920 samples
    p = subprocess.run([promtool_bin, "tsdb", "analyze", str(generated["dir"]), m.ulid],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"Block ID: {m.ulid}" in p.stdout
    assert "Series: 5" in p.stdout
    assert "continuous_app_metric" in p.stdout
