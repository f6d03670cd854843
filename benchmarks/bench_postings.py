"""Index write / open / postings-for-matchers figures on a 100k-series index.

Series: 100 metric names x 1000 instances ('a-123:9100', prefixes a/b/c/d), job = 100 values
(10 instances each). Lookup: ``{job="job-7", instance=~"a.*"}`` through a FileSource.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "components"))

from pythanos.tsdb.index import IndexReader, IndexWriter, Matcher  # noqa: E402
from pythanos.tsdb.source import FileSource  # noqa: E402

N_NAMES = 100
N_INSTANCES = 1000


def _series():
    names = sorted(f"metric_{k:03d}_total" for k in range(N_NAMES))
    inst = sorted((f"{'abcd'[i % 4]}-{i}:9100", f"job-{i // 10}") for i in range(N_INSTANCES))
    ref = 8
    for n in names:
        for i, j in inst:
            yield [("__name__", n), ("instance", i), ("job", j)], [(1700000000000, 1700007199000, ref)]
            ref += 200


def _symbols():
    s = {"", "__name__", "instance", "job"}
    s.update(f"metric_{k:03d}_total" for k in range(N_NAMES))
    s.update(f"{'abcd'[i % 4]}-{i}:9100" for i in range(N_INSTANCES))
    s.update(f"job-{i // 10}" for i in range(N_INSTANCES))
    return s


def run() -> list[tuple[str, float, str]]:
    out = []
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "index")
        series = list(_series())
        t = time.perf_counter()
        w = IndexWriter(path, _symbols(), style="prom2")
        for labels, cms in series:
            w.add_series(labels, cms)
        w.close()
        dt = time.perf_counter() - t
        out.append(("index write, 100k series (prom2)", dt, "s"))
        out.append(("index size", os.path.getsize(path) / 1e6, "MB"))

        reps = 20
        t = time.perf_counter()
        for _ in range(reps):
            IndexReader(FileSource(path), block="bench", owns_source=True).close()
        out.append(("index open (header, TOC, symbols, postings offset table)",
                    (time.perf_counter() - t) / reps * 1e3, "ms"))

        r = IndexReader(FileSource(path), block="bench", owns_source=True)
        ms = [Matcher("=", "job", "job-7"), Matcher("=~", "instance", "a.*")]
        res = r.postings_for_matchers(ms)
        assert len(res) == 200, len(res)  # 2 of the job's 10 instances start with "a", x 100 names
        reps = 200
        t = time.perf_counter()
        for _ in range(reps):
            r.postings_for_matchers(ms)
        out.append(('postings_for_matchers {job="job-7", instance=~"a.*"} (200 of 100k)',
                    (time.perf_counter() - t) / reps * 1e6, "us/lookup"))

        ms2 = [Matcher("=", "__name__", "metric_042_total"), Matcher("!~", "instance", "b.*")]
        t = time.perf_counter()
        for _ in range(reps):
            res = r.postings_for_matchers(ms2)
        out.append(('postings_for_matchers {__name__="metric_042_total", instance!~"b.*"} (750)',
                    (time.perf_counter() - t) / reps * 1e6, "us/lookup"))

        refs = r.postings_for_matchers(ms)
        reps = 20
        t = time.perf_counter()
        for _ in range(reps):
            r.series_many(refs)
        out.append(("series_many, 200 series", (time.perf_counter() - t) / reps * 1e3, "ms"))
        r.close()
    return out


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name}: {value:.3f} {unit}")
