"""Blocks against the real tools: promtool 2.42 and Prometheus 2.42.

1. promtool backfills OpenMetrics text; our reader equals ``promtool tsdb dump`` and the input.
2. A running Prometheus (5 s blocks) scrapes a test target; our reader equals the dump of its
   blocks, stale markers keep their exact bit pattern.
3. Blocks we write (prom3 and prom2 style): ``promtool tsdb analyze`` accepts them,
   ``promtool tsdb dump`` equals what we wrote, and a Prometheus started on them answers
   ``/api/v1/query_range`` with exactly our data (values compared as Prometheus' strings).
4. Byte parity: promtool's and Prometheus' blocks re-written by our prom2 writer from the
   samples we read are byte-identical (index, chunks, tombstones; meta.json up to the ULID).

Note: OpenMetrics text cannot carry NaN payloads, so promtool stores every NaN as Go's
``math.NaN()`` (0x7ff8000000000001) and cannot backfill stale markers; the input comparison
therefore treats NaNs as equal by value, while the scrape test checks stale-marker bits.
"""
from __future__ import annotations

import http.server
import json
import math
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from pythanos.tsdb import ulid as _ulid
from pythanos.tsdb.block import BlockReader, BlockWriter, aligned_ranges, write_blocks

from openmetrics_gen import STALE_NAN, STALE_NAN_BITS, parse_dump, random_series, same_samples, to_openmetrics

H2 = 2 * 3600 * 1000


def block_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and _ulid.is_ulid(p.name))


def read_all(dirs) -> tuple[dict, dict]:
    """(merged samples over all blocks, {block dir: samples of that block})."""
    merged: dict = {}
    per: dict = {}
    by_time = []
    for d in dirs:
        with BlockReader.open_dir(d) as r:
            per[d] = {l: (t, v) for l, t, v in r.series()}
            by_time.append((r.meta.min_time, d))
    # ULIDs made in the same millisecond sort by their random part, so name order is not time order.
    for _, d in sorted(by_time):
        for l, (t, v) in per[d].items():
            pt, pv = merged.get(l, (np.empty(0, np.int64), np.empty(0)))
            merged[l] = (np.concatenate([pt, t]), np.concatenate([pv, v]))
    return merged, per


def promtool_dump(promtool: str, dirs, work: Path) -> dict:
    """``promtool tsdb dump`` of exactly these blocks (copied into a fresh dir with ``wal/``)."""
    db = work / f"dumpdb-{time.monotonic_ns()}"
    (db / "wal").mkdir(parents=True)
    for d in dirs:
        shutil.copytree(d, db / d.name)
    out = subprocess.run([promtool, "tsdb", "dump", str(db)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return parse_dump(out.stdout)


def assert_parity(src_dirs, per: dict, work: Path, **writer_kw) -> int:
    """Re-write each block with our prom2 writer; compare files byte for byte. Returns #files."""
    out = work / f"rewrite-{time.monotonic_ns()}"
    n = 0
    for d in src_dirs:
        with BlockReader.open_dir(d) as r:
            meta = r.meta
        w = BlockWriter(out, style="prom2", min_time=meta.min_time, max_time=meta.max_time, **writer_kw)
        for l, (t, v) in per[d].items():
            w.add_series(l, t, v)
        ours = w.write()
        mine = out / ours.ulid
        theirs_files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
        assert sorted(str(p.relative_to(mine)) for p in mine.rglob("*") if p.is_file()) == theirs_files
        for f in theirs_files:
            a, b = (d / f).read_bytes(), (mine / f).read_bytes()
            if f == "meta.json":
                a, b = a.replace(d.name.encode(), b"ULID"), b.replace(ours.ulid.encode(), b"ULID")
            assert a == b, f"{d.name}/{f}: {len(a)} bytes vs ours {len(b)} bytes"
            n += 1
    return n


# --- 1. promtool backfill ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def promtool_blocks(tmp_path_factory, promtool_bin):
    work = tmp_path_factory.mktemp("promtool-om")
    rng = np.random.default_rng(2024)
    data = random_series(rng, n_series=60, max_samples=500)
    om = work / "input.om"
    om.write_text(to_openmetrics(data), encoding="utf-8")
    out = work / "blocks"
    res = subprocess.run([promtool_bin, "tsdb", "create-blocks-from", "openmetrics", str(om), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr + res.stdout
    return work, data, block_dirs(out)


def test_promtool_backfill_read_matches_dump_and_input(promtool_blocks, promtool_bin):
    work, data, dirs = promtool_blocks
    assert len(dirs) >= 3  # several 2h windows plus the huge gaps
    merged, per = read_all(dirs)
    dump = promtool_dump(promtool_bin, dirs, work)
    assert same_samples(merged, dump, nan_exact=False) == []
    assert same_samples(data, merged, nan_exact=False) == []
    # NaN from text is Go's math.NaN(); -0 keeps its sign
    nan_bits = {int(b) for _, v in merged.values() for b in v.view(np.uint64)[np.isnan(v)]}
    assert nan_bits == {0x7FF8000000000001}
    assert any((v.view(np.uint64) == 0x8000000000000000).any() for _, v in merged.values())
    for d in dirs:  # promtool's meta: minTime = first sample, maxTime = last + 1, inside one 2h window
        with BlockReader.open_dir(d) as r:
            m = r.meta
        assert m.min_time // H2 == (m.max_time - 1) // H2
        assert m.min_time == min(int(t[0]) for t, _ in per[d].values())
        assert m.max_time == max(int(t[-1]) for t, _ in per[d].values()) + 1


def test_promtool_blocks_byte_parity(promtool_blocks, tmp_path):
    _, _, dirs = promtool_blocks
    _, per = read_all(dirs)
    n = assert_parity(dirs, per, tmp_path)
    assert n == 4 * len(dirs)


# --- 2. a running Prometheus cutting 5 s blocks ----------------------------------------------------

class Target:
    """A scrape target whose series change over time (so that Prometheus writes stale markers)."""

    def __init__(self):
        self.n = 0
        handler = self._handler()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def body(self) -> str:
        self.n += 1
        n = self.n
        lines = ["# TYPE t_counter counter"]
        for i in range(5):
            lines.append(f't_counter{{i="{i}",u="ü✓"}} {n * (i + 1)}')
        lines.append("# TYPE t_gauge gauge")
        lines.append(f't_gauge{{kind="sin"}} {math.sin(n / 3):.17g}')
        lines.append(f't_gauge{{kind="special"}} {["NaN", "+Inf", "-Inf", "-0", "1e-300"][n % 5]}')
        if (n // 4) % 2 == 0:  # appears and disappears: stale markers
            lines.append(f't_gauge{{kind="flappy"}} {n}')
        return "\n".join(lines) + "\n"

    def _handler(self):
        target = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                data = target.body().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        return H

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_prometheus_head_blocks(prometheus_factory, promtool_bin, tmp_path):
    target = Target()
    try:
        data_dir = tmp_path / "prom"
        cfg = (f"global:\n  scrape_interval: 100ms\n  scrape_timeout: 90ms\nscrape_configs:\n"
               f"  - job_name: t\n    static_configs:\n      - targets: ['127.0.0.1:{target.port}']\n")
        prom = prometheus_factory(tsdb_path=data_dir, config_yaml=cfg,
                                  extra_args=["--storage.tsdb.min-block-duration=5s",
                                              "--storage.tsdb.max-block-duration=5s",
                                              "--storage.tsdb.retention.time=100y"])
        deadline = time.monotonic() + 90
        while len(block_dirs(data_dir)) < 3 and time.monotonic() < deadline:
            assert prom.alive(), prom.log(50)
            time.sleep(1)
        dirs = block_dirs(data_dir)
        assert len(dirs) >= 3, prom.log(50)
        dirs = dirs[:3]
        prom.stop()
    finally:
        target.close()
    merged, per = read_all(dirs)
    assert any(l == (("__name__", "t_counter"), ("i", "0"), ("instance", f"127.0.0.1:{target.port}"),
                     ("job", "t"), ("u", "ü✓")) for l in merged)
    # 100 ms scrapes into 5 s blocks: chunks pass the 30-sample re-estimation of the head
    assert max(len(t) for bs in per.values() for t, _ in bs.values()) > 30
    dump = promtool_dump(promtool_bin, dirs, tmp_path)
    assert same_samples(merged, dump, nan_exact=False) == []
    bits = {int(b) for _, v in merged.values() for b in v.view(np.uint64)[np.isnan(v)]}
    assert STALE_NAN_BITS in bits  # the flappy series and up/scrape_* at shutdown
    assert assert_parity(dirs, per, tmp_path, chunk_range=5_000, head_chunk_range=5_000) == 4 * len(dirs)


# --- 3. our blocks in promtool and Prometheus -------------------------------------------------------

def go_float(x: float) -> str:
    """Prometheus' JSON sample value (``jsonutil.MarshalFloat``): shortest digits, 'e' format
    when 0 < |x| < 1e-6 or |x| >= 1e21, else 'f'."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x != 0 and (abs(x) < 1e-6 or abs(x) >= 1e21):
        return repr(float(x))  # Python's repr uses Go's exponent form in these ranges
    s = format(Decimal(repr(float(x))), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def grid_series(rng, n_series: int, start: int, n_samples: int, step: int) -> dict:
    out = {}
    t = start + np.arange(n_samples, dtype=np.int64) * step
    for i in range(n_series):
        v = np.round(rng.normal(0, 10 ** (i % 7), n_samples), i % 5)
        r = rng.random(n_samples)
        v[r < 0.03] = np.nan
        v[(r >= 0.03) & (r < 0.05)] = np.inf
        v[(r >= 0.05) & (r < 0.06)] = -np.inf
        v[(r >= 0.06) & (r < 0.07)] = -0.0
        v[(r >= 0.07) & (r < 0.09)] = STALE_NAN
        v[(r >= 0.09) & (r < 0.1)] = 1e-300 if i % 2 else 1.5e21
        labels = {"__name__": "grid", "i": str(i), "z": ["a", "é✓", 'q"b\\'][i % 3]}
        out[tuple(sorted(labels.items()))] = (t, v)
    return out


@pytest.mark.parametrize("style", ["prom3", "prom2"])
def test_our_blocks_in_promtool_and_prometheus(style, tmp_path, promtool_bin, prometheus_factory):
    rng = np.random.default_rng(99 if style == "prom3" else 100)
    step = 15_000
    start = (1_700_000_000_000 // H2) * H2 + 3_600_000 + 7_000
    grid = grid_series(rng, 12, start, 1300, step)  # ~5.4h: 4 aligned 2h blocks
    irregular = random_series(rng, n_series=40, with_stale=True, max_samples=700,
                              start=start, metric_names=("irr_a", "irr_b"))
    data = {**grid, **irregular}
    mint = min(int(t[0]) for t, _ in data.values())
    maxt = max(int(t[-1]) for t, _ in data.values()) + 1
    db = tmp_path / "db"
    metas = write_blocks(db, ((dict(l), t, v) for l, (t, v) in data.items()), aligned_ranges(mint, maxt),
                         style=style)
    dirs = block_dirs(db)
    assert len(dirs) == len(metas) >= 4
    for d in dirs:
        res = subprocess.run([promtool_bin, "tsdb", "analyze", str(db), d.name], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        assert f"Block ID: {d.name}" in res.stdout
    dump = promtool_dump(promtool_bin, dirs, tmp_path)
    assert same_samples(data, dump, nan_exact=False) == []
    merged, _ = read_all(dirs)
    assert same_samples(data, merged) == []  # bit-exact through our reader, stale markers included

    prom = prometheus_factory(tsdb_path=db, extra_args=["--storage.tsdb.retention.time=100y"])
    t0, t1 = start, start + 1299 * step
    q = urllib.parse.urlencode({"query": 'grid{i=~".+"}', "start": f"{t0 / 1000:.3f}", "end": f"{t1 / 1000:.3f}",
                                "step": f"{step // 1000}"})
    with urllib.request.urlopen(f"{prom.url}/api/v1/query_range?{q}", timeout=60) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    got = {tuple(sorted(r["metric"].items())): r["values"] for r in body["data"]["result"]}
    assert len(got) == len(grid)
    for lbls, (t, v) in grid.items():
        keep = v.view(np.uint64) != STALE_NAN_BITS  # a stale marker ends the series at that step
        want = [[int(ti) / 1000, go_float(vi)] for ti, vi in zip(t[keep].tolist(), v[keep].tolist())]
        have = [[float(ts), val] for ts, val in got[lbls]]
        assert have == want, lbls
