"""Differential PromQL test: a real Prometheus 3.9.1 and our querier, same queries on the same data.

Topology (all real processes on 127.0.0.1, stopped by pid at the end of the module):

* a TSDB directory with three 2h-aligned blocks written by **our** block writer: 6 h of
  deterministic data (seeded numpy RNG) from 2024-02-29 20:00 UTC to 2024-03-01 02:00 UTC
  (a leap day and a month boundary, for the date functions): counters with resets, a counter
  starting mid-way, float gauges with negative values, NaNs and infinities, values near the float
  limit, classic histograms (``_bucket``/``_sum``/``_count``) and a badly formed one, jittered
  scrape timestamps, a gauge exactly on the minute (window and lookback edges), gaps, series that
  end with and without a stale marker, a series that goes stale and comes back, UTF-8 label
  values, several jobs and instances (112 series, ~160k samples);
* Prometheus 3.9.1 on that directory (``external_labels: {cluster: diff}``, no scrape jobs,
  ``--enable-feature=promql-experimental-functions``, 2h blocks only so it never compacts);
* our ``pythanos sidecar`` in front of it, and over that sidecar both our ``pythanos query`` and
  a real ``thanos query`` v0.42.4 (both with ``--query.replica-label=replica`` and
  ``--enable-feature=promql-experimental-functions``).

Every query (~280) is asked of both as instant queries at several times and, where its type
allows, as range queries (60 s, 15 s and an unaligned 45 s step): ~2,500 requests to each, sent
8 at a time once per module; each query is then its own test. The answers must agree: both succeed or
both fail with the same ``errorType``; the same ``resultType``; the same series (our answers
carry ``cluster="diff"`` from the sidecar's external labels: it is dropped before comparing);
the same timestamps; values equal within 1e-6 relative (NaN equals NaN, infinities by sign).
For ``sort``/``sort_desc``/``sort_by_label``/ungrouped ``topk``/``bottomk`` instant answers the
order must agree too (NaNs, which have no defined order among themselves, compare as a set at
the end).

Our querier must give the Thanos querier's answer to every query, and Prometheus' answer
wherever Thanos gives it. Thanos differs from Prometheus on purpose for the counter functions
(rate/increase/irate/resets): its querier reads raw chunks as running totals
(``ApplyCounterResetsIterator``, thanos-io/thanos#3644), which moves extrapolation to zero and
makes ``resets()`` 0; there we must match Thanos, and the test checks that these are the only
queries where the two references part.

A query where our engine disagrees stays in the list, marked ``xfail(strict=True)`` with the
difference written out: the list documents the known bugs.
"""
from __future__ import annotations

import json
import math
import re
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest

from peers import REGISTRY, free_ports, http_get, start_thanos_query
from pythanos.tsdb.block import aligned_ranges, write_blocks

READY = 120.0
REL = 1e-6
#: queries whose answers must equal Thanos' exactly, not within REL
EXACT_RE = re.compile(r"^(rate|increase|delta|irate|idelta)\([a-z_]+(\{[^}]*\})?\[[0-9a-z]+\]\)$")

S = 1_709_236_800_000  # 2024-02-29T20:00:00Z, 2h-aligned
H = 3_600_000
M = 60_000
END = S + 6 * H  # 2024-03-01T02:00:00Z; every sample is < END
STEP = 15_000
STALE_NAN = np.array([0x7FF0000000000002], dtype=np.uint64).view(np.float64)[0]

# Instant evaluation times (ms).
TIMES = [
    S + H + 3 * M + 17_500,   # 21:03:17.5
    S + 2 * H,                # 22:00, a block boundary
    S + 3 * H + 5 * M,        # 23:05, just after batch_progress went stale
    S + 4 * H,                # 2024-03-01T00:00, month boundary
    S + 5 * H + 59 * M,       # 01:59
    END + 3 * M,              # 3 minutes after the data: lookback still sees the last samples
]
# Range queries: (start, end, step) in ms.
RANGES = [
    (S + 2 * H + 30 * M, S + 3 * H + 30 * M, 60_000),
    (S + 5 * H + 30 * M, END + 10 * M, 15_000),
    (S + H + 7_300, S + 2 * H + 7_300, 45_000),
]


def fmt(ms: int) -> str:
    return f"{ms / 1000:.3f}"


# --- data -----------------------------------------------------------------------------------------

def _ts(rng, n: int, start: int, step: int = STEP, jitter: int = 400) -> np.ndarray:
    """n scrape timestamps from start, every step ms, each jittered by up to +-jitter ms."""
    base = start + np.arange(n, dtype=np.int64) * step
    if jitter:
        base = base + rng.integers(-jitter, jitter + 1, size=n)
    return base


def _full_ts(rng, step: int = STEP, jitter: int = 400) -> np.ndarray:
    off = int(rng.integers(1_000, step - 1_000))
    n = (6 * H - off - jitter - 1) // step + 1
    return _ts(rng, n, S + off, step, jitter)


def _counter(rng, n: int, lam: float, n_resets: int, start_value: float = 0.0, floats: bool = False) -> np.ndarray:
    inc = rng.exponential(lam, size=n) if floats else rng.poisson(lam, size=n).astype(np.float64)
    v = np.empty(n)
    acc = start_value
    resets = set(rng.choice(np.arange(20, n - 20), size=n_resets, replace=False).tolist()) if n_resets else set()
    for i in range(n):
        acc = inc[i] if i in resets else acc + inc[i]
        v[i] = acc
    return v


def build_data(seed: int = 20240229) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    data: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def add(labels: dict, t, v) -> None:
        key = tuple(sorted(labels.items()))
        assert key not in data
        data[key] = (np.asarray(t, dtype=np.int64), np.asarray(v, dtype=np.float64))

    jobs = {"api": ["10.0.0.1:8080", "10.0.0.2:8080"], "web": ["10.0.1.1:80", "10.0.1.2:80"],
            "batch": ["10.0.2.1:9100"]}
    versions = {"api": "1.4.2", "web": "2.0.0-rc.1", "batch": "0.9"}
    for job, insts in jobs.items():
        for inst in insts:
            t = _full_ts(rng)
            add({"__name__": "up", "job": job, "instance": inst},
                t, (rng.random(len(t)) > 0.03).astype(np.float64))
            add({"__name__": "build_info", "job": job, "instance": inst, "version": versions[job]},
                t, np.ones(len(t)))
            for method in ("GET", "POST"):
                for code in ("200", "500"):
                    t = _full_ts(rng)
                    lam = (40.0 if code == "200" else 2.0) * (2.0 if method == "GET" else 1.0)
                    add({"__name__": "http_requests_total", "job": job, "instance": inst, "method": method,
                         "code": code},
                        t, _counter(rng, len(t), lam + rng.random(), int(rng.integers(0, 3)),
                                    start_value=float(rng.integers(0, 100_000))))
            for mode in ("user", "system", "idle"):
                t = _full_ts(rng)
                add({"__name__": "cpu_seconds_total", "job": job, "instance": inst, "mode": mode},
                    t, _counter(rng, len(t), {"user": 3.1, "system": 0.7, "idle": 11.0}[mode], 0,
                                start_value=float(rng.random() * 1e4), floats=True))

    # Classic histograms: cumulative buckets, _sum, _count; one instance restarts (counter reset).
    bounds = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
    for job, inst in (("api", "10.0.0.1:8080"), ("api", "10.0.0.2:8080"), ("web", "10.0.1.1:80"),
                      ("web", "10.0.1.2:80")):
        t = _full_ts(rng)
        n = len(t)
        counts = np.zeros((n, len(bounds) + 1))
        sums = np.zeros(n)
        reset_at = n // 2 if inst == "10.0.1.2:80" else -1
        acc_c, acc_s = np.zeros(len(bounds) + 1), 0.0
        scale = 0.2 if job == "api" else 0.6
        for i in range(n):
            if i == reset_at:
                acc_c, acc_s = np.zeros(len(bounds) + 1), 0.0
            obs = rng.lognormal(np.log(scale), 0.9, size=int(rng.poisson(25)))
            acc_c = acc_c + np.array([np.sum(obs <= b) for b in bounds] + [len(obs)])
            acc_s += float(obs.sum())
            counts[i], sums[i] = acc_c, acc_s
        for j, le in enumerate([*(repr(b) if b != 1.0 else "1.0" for b in bounds), "+Inf"]):
            add({"__name__": "request_duration_seconds_bucket", "job": job, "instance": inst, "le": le},
                t, counts[:, j])
        add({"__name__": "request_duration_seconds_sum", "job": job, "instance": inst}, t, sums)
        add({"__name__": "request_duration_seconds_count", "job": job, "instance": inst}, t, counts[:, -1])

    # Gauges with negative values, a few NaNs, UTF-8 label values.
    cities = ["Zürich", "東京", "São Paulo", "Kraków", "Ørsted", "☃ snow", "Reykjavík", "Москва"]
    for i, loc in enumerate(cities):
        t = _full_ts(rng)
        v = np.cumsum(rng.normal(0, 0.4, size=len(t))) + rng.normal(0, 8)
        if i in (1, 4):
            v[rng.choice(len(t), size=6, replace=False)] = np.nan
        add({"__name__": "temperature_celsius", "job": "sensors", "instance": f"sensor-{i}", "location": loc}, t, v)

    # Queue lengths: integer-valued gauges, one with a 20-minute gap (longer than the lookback), one with a
    # 4-minute gap (shorter), one without gaps.
    for inst, gap in (("q1", (2 * H + 40 * M, 3 * H)), ("q2", (4 * H + 10 * M, 4 * H + 14 * M)), ("q3", None)):
        t = _full_ts(rng)
        v = np.maximum(0, np.round(np.cumsum(rng.normal(0, 2, size=len(t))) + 20))
        if gap:
            keep = (t < S + gap[0]) | (t >= S + gap[1])
            t, v = t[keep], v[keep]
        add({"__name__": "queue_length", "job": "worker", "instance": inst}, t, v)

    # Exactly periodic 60s gauge (no jitter): samples land on window and lookback boundaries.
    t = S + np.arange(0, 6 * H, 60_000, dtype=np.int64)
    add({"__name__": "slow_gauge", "job": "slow", "instance": "s1"}, t, np.sin(np.arange(len(t)) / 7.0) * 100)

    # A batch job that ends at S+3h with a stale marker.
    t = _ts(rng, (3 * H - 5_000) // STEP, S + 5_000)
    v = np.cumsum(rng.poisson(7, size=len(t))).astype(np.float64)
    t = np.append(t, t[-1] + STEP)
    v = np.append(v, STALE_NAN)
    add({"__name__": "batch_progress", "job": "batch", "instance": "10.0.2.1:9100"}, t, v)
    # One that just stops at S+4h (no stale marker: visible for the lookback after its last sample).
    t = _ts(rng, (4 * H - 3_000) // STEP, S + 3_000)
    add({"__name__": "batch_last_success", "job": "batch", "instance": "10.0.2.1:9100"},
        t, (S / 1000 + np.arange(len(t)) * 15.0).astype(np.float64))
    # A series that goes stale at S+2h30m and comes back at S+2h40m.
    t = _full_ts(rng)
    v = rng.normal(50, 10, size=len(t))
    gone = (t >= S + 2 * H + 30 * M) & (t < S + 2 * H + 40 * M)
    first_gone = int(np.argmax(gone))
    v[first_gone] = STALE_NAN
    keep = ~gone
    keep[first_gone] = True
    add({"__name__": "flappy", "job": "flap", "instance": "f1"}, t[keep], v[keep])
    # A counter that starts at S+1h30m (rate's zero clamp) with float increments.
    t = _ts(rng, (4 * H + 20 * M) // STEP, S + H + 30 * M + 2_000)
    add({"__name__": "late_counter_total", "job": "late", "instance": "l1"}, t,
        _counter(rng, len(t), 1.7, 1, start_value=3.0, floats=True))
    # Huge values: sums overflow, averages must not.
    for i in range(3):
        t = _full_ts(rng)
        add({"__name__": "huge_gauge", "job": "huge", "instance": f"h{i}"}, t,
            1e308 * (0.5 + 0.5 * rng.random(len(t))) * (1 if i < 2 else -1))
    # Gauges with many NaNs (a quarter of the samples) and, in one, infinities.
    for i in range(4):
        t = _full_ts(rng)
        v = rng.normal(0, 10, size=len(t))
        v[rng.random(len(t)) < 0.25] = np.nan
        if i == 3:
            v[rng.random(len(t)) < 0.1] = np.inf
            v[rng.random(len(t)) < 0.1] = -np.inf
        add({"__name__": "nan_gauge", "job": "nan", "instance": f"n{i}"}, t, v)
    # A badly formed classic histogram: non-monotonic bucket counts, two spellings of one bound
    # ("1" and "1.0", coalesced), "1e3", an unparsable bound; a second group without "+Inf".
    t = _full_ts(rng)
    for group, les in (("bad", ["0.1", "1", "1.0", "1e3", "abc", "+Inf"]), ("noinf", ["0.5", "2"])):
        for le in les:
            v = np.abs(np.cumsum(rng.normal(0, 3, size=len(t)))) + 10 * (les.index(le) + 1)
            add({"__name__": "broken_bucket", "job": "broken", "group": group, "le": le}, t, v)
    return data


# --- queries --------------------------------------------------------------------------------------

@dataclass
class Case:
    query: str
    instant: bool = True
    range: bool = True
    ordered: bool = False  # instant vector order must match
    times: list[int] | None = None  # instant times instead of TIMES
    ranges: list[tuple[int, int, int]] | None = None
    params: dict = field(default_factory=dict)
    xfail: str = ""

    @property
    def id(self) -> str:
        extra = [urllib.parse.urlencode(self.params)] if self.params else []
        if self.times:
            extra.append("at " + ",".join(f"S+{(t - S) / 1000:.3f}s" for t in self.times))
        return " ".join([self.query, *extra])


T3 = S + 3 * H


def _edge_times() -> dict[str, list[int]]:
    """Times around batch_last_success's last sample + the 5m lookback (3.x: a left-open window)."""
    data = build_data()
    key = (("__name__", "batch_last_success"), ("instance", "10.0.2.1:9100"), ("job", "batch"))
    last = int(data[key][0][-1])
    return {"last_success": [last + 5 * M - 1, last + 5 * M, last + 5 * M + 1, last + 1]}


EDGE = _edge_times()
# slow_gauge has samples exactly on every minute: windows and lookbacks start and end on samples.
SLOW_EDGES = [S + 2 * H, S + 2 * H + 30_000, S + 2 * H + 59_999, S + 6 * H - 60_000 + 5 * M,
              S + 6 * H - 60_000 + 5 * M - 1]

RATE = "rate(http_requests_total[5m])"
B = "request_duration_seconds_bucket"

CASES: list[Case] = [
    # selectors, lookback, staleness, offset, @
    Case("http_requests_total"),
    Case('http_requests_total{job="api", code=~"5.."}'),
    Case('temperature_celsius{location!~"Z.*|S.*"}'),
    Case('temperature_celsius{location="東京"}'),
    Case('{__name__=~"queue_length|slow_gauge", instance=~"q.|s1"}'),
    Case("queue_length"),
    Case("batch_progress"),
    Case("batch_last_success"),
    Case("batch_last_success", times=EDGE["last_success"], range=False),
    Case("flappy"),
    Case("slow_gauge", times=SLOW_EDGES),
    Case("queue_length", params={"lookback_delta": "1m"}),
    Case("http_requests_total offset 10m"),
    Case("temperature_celsius offset -5m"),
    Case(f"http_requests_total @ {fmt(T3)}"),
    Case(f"queue_length @ {fmt(S + 2 * H + 50 * M)} offset 5m"),
    Case("rate(http_requests_total[5m] @ end())"),
    Case("slow_gauge @ start()"),
    Case("temperature_celsius[2m]", range=False),
    Case("batch_progress[1m]", range=False, times=[T3 + 10_000, T3 + 40_000, T3 - 30_000]),
    Case("slow_gauge[3m]", range=False, times=SLOW_EDGES),
    # rate family
    Case(RATE),
    Case("rate(http_requests_total[1m])"),
    Case("increase(http_requests_total[1h])"),
    Case("rate(late_counter_total[10m])"),
    Case("increase(late_counter_total[30m])"),
    Case("rate(cpu_seconds_total[5m])"),
    Case("increase(request_duration_seconds_count[10m])"),
    Case("rate(slow_gauge[2m])", times=SLOW_EDGES),
    Case("rate(batch_progress[5m])"),
    Case("delta(temperature_celsius[10m])"),
    Case("delta(queue_length[30m])"),
    Case("irate(http_requests_total[1m])"),
    Case("irate(request_duration_seconds_count[2m])"),
    Case("idelta(queue_length[2m])"),
    Case("deriv(temperature_celsius[15m])"),
    Case("deriv(queue_length[30m])"),
    Case("predict_linear(queue_length[30m], 600)"),
    Case("predict_linear(cpu_seconds_total[10m], 3600)"),
    Case("double_exponential_smoothing(temperature_celsius[20m], 0.3, 0.7)"),
    Case("double_exponential_smoothing(queue_length[10m], 0.5, 0.1)"),
    # *_over_time
    Case("avg_over_time(temperature_celsius[10m])"),
    Case("min_over_time(temperature_celsius[10m])"),
    Case("max_over_time(temperature_celsius[10m])"),
    Case("sum_over_time(queue_length[10m])"),
    Case("count_over_time(queue_length[10m])"),
    Case("count_over_time(slow_gauge[1m])", times=SLOW_EDGES),
    Case("quantile_over_time(0.9, temperature_celsius[30m])"),
    Case("quantile_over_time(0.5, queue_length[30m])"),
    Case("quantile_over_time(1.5, queue_length[5m])"),
    Case("stddev_over_time(temperature_celsius[20m])"),
    Case("stdvar_over_time(queue_length[20m])"),
    Case("last_over_time(batch_progress[1h])"),
    Case("present_over_time(batch_last_success[10m])"),
    Case("mad_over_time(temperature_celsius[30m])"),
    Case("first_over_time(queue_length[10m])"),
    Case("changes(queue_length[30m])"),
    Case("resets(http_requests_total[1h])"),
    Case("absent_over_time(batch_progress[10m])"),
    Case('absent_over_time(nonexistent{job="x", instance=~"y"}[5m])'),
    Case("avg_over_time(huge_gauge[5m])"),
    # histogram_quantile on classic buckets
    Case(f"histogram_quantile(0.9, rate({B}[5m]))"),
    Case(f"histogram_quantile(0.5, sum by (le) (rate({B}[10m])))"),
    Case(f"histogram_quantile(0.99, sum by (job, le) (increase({B}[30m])))"),
    Case(f"histogram_quantile(0, sum by (le) (rate({B}[5m])))"),
    Case(f"histogram_quantile(1, sum by (le) (rate({B}[5m])))"),
    Case(f"histogram_quantile(-0.5, sum by (le) (rate({B}[5m])))"),
    Case(f"histogram_quantile(1.5, sum by (le) (rate({B}[5m])))"),
    Case(f"histogram_quantile(0.5, {B})"),
    Case(f'histogram_quantile(0.9, rate({B}{{le!="+Inf"}}[5m]))'),
    # histogram_fraction on classic buckets (Prometheus 3: BucketFraction)
    Case(f"histogram_fraction(0, 0.3, rate({B}[5m]))"),
    Case(f"histogram_fraction(0.1, 0.7, sum by (le) (rate({B}[10m])))"),
    Case(f"histogram_fraction(-1, 0.25, sum by (job, le) (increase({B}[30m])))"),
    Case(f"histogram_fraction(0.5, 0.5, {B})"),
    Case(f"histogram_fraction(0.2, 1e9, {B})"),
    Case(f'histogram_fraction(0, 0.5, rate({B}{{le!="+Inf"}}[5m]))'),
    Case(f'histogram_fraction(0, scalar(up{{job="api"}}) / 2, {B})'),
    Case("rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])"),
    # label functions
    Case('label_replace(http_requests_total, "status_class", "${1}xx", "code", "(.)..")'),
    Case('label_replace(temperature_celsius, "loc", "city: $1", "location", "(.*)")'),
    Case('label_replace(up, "job", "", "job", ".*")'),
    Case('label_replace(up, "instance", "", "instance", ".*")'),
    Case('label_join(up, "addr", "/", "job", "instance")'),
    Case('label_join(temperature_celsius, "loc2", ",", "location", "location")'),
    # math
    Case("abs(temperature_celsius)"),
    Case("ceil(temperature_celsius)"),
    Case("floor(temperature_celsius)"),
    Case("round(temperature_celsius)"),
    Case("round(temperature_celsius, 0.25)"),
    Case("sqrt(temperature_celsius)"),
    Case("exp(temperature_celsius / 2)"),
    Case("ln(temperature_celsius)"),
    Case("log2(queue_length)"),
    Case("log10(cpu_seconds_total)"),
    Case("clamp(temperature_celsius, -5, 5)"),
    Case("clamp(temperature_celsius, 5, -5)"),
    Case("clamp_min(temperature_celsius, 0)"),
    Case("clamp_max(queue_length, 20)"),
    Case("sgn(temperature_celsius)"),
    Case("sin(slow_gauge) + cos(slow_gauge)"),
    Case("temperature_celsius atan2 10"),
    # timestamps and time
    Case("timestamp(http_requests_total)"),
    Case("timestamp(temperature_celsius offset 3m)"),
    Case("timestamp(sum(up))"),
    Case("time() - timestamp(queue_length)"),
    Case("time()"),
    Case("hour()"),
    Case("minute()"),
    Case("day_of_week()"),
    Case("day_of_month()"),
    Case("day_of_year()"),
    Case("days_in_month()"),
    Case("month()"),
    Case("year()"),
    Case("hour(timestamp(slow_gauge))"),
    Case("days_in_month(vector(1709251200))"),
    Case("day_of_month(batch_last_success)"),
    # absent
    Case("absent(nonexistent)"),
    Case('absent(nonexistent{job="a", instance=~".*"})'),
    Case("absent(up)"),
    Case("absent(sum(nonexistent))"),
    Case('absent(batch_progress{job="batch"})'),
    # sorting and top/bottom
    Case("sort(temperature_celsius)", ordered=True),
    Case(f"sort_desc({RATE})", ordered=True),
    Case('sort_by_label(up, "instance")', ordered=True),
    Case(f"topk(3, {RATE})", ordered=True),
    Case("bottomk(2, temperature_celsius)", ordered=True),
    Case("topk(3, temperature_celsius)", ordered=True),
    Case(f"topk by (job) (1, {RATE})"),
    Case("bottomk by (mode) (2, rate(cpu_seconds_total[5m]))"),
    # aggregations
    Case(f"sum({RATE})"),
    Case(f"sum by (job) ({RATE})"),
    Case(f"sum without (instance, method) ({RATE})"),
    Case(f"avg by (job, code) ({RATE})"),
    Case("min by (job) (temperature_celsius)"),
    Case("max(temperature_celsius)"),
    Case("avg(temperature_celsius)"),
    Case("sum(temperature_celsius)"),
    Case("count by (code) (http_requests_total)"),
    Case('count_values("value", up)'),
    Case('count_values("v", round(temperature_celsius))'),
    Case("group by (job) (up)"),
    Case(f"stddev by (job) ({RATE})"),
    Case("stdvar(queue_length)"),
    Case(f"quantile(0.9, {RATE})"),
    Case("quantile by (job) (0.25, rate(cpu_seconds_total[5m]))"),
    Case("sum by (job) (http_requests_total)"),
    Case("sum(huge_gauge)"),
    Case("avg(huge_gauge)"),
    # binary operators
    Case("http_requests_total / 1000"),
    Case("2 ^ (queue_length / 10)"),
    Case("queue_length % 7"),
    Case("-temperature_celsius"),
    Case(f"{RATE} / ignoring(code) group_left sum without (code) ({RATE})"),
    Case(f"{RATE} * on(job, instance) group_left(version) build_info"),
    Case(f"build_info * on(job, instance) group_right(version) {RATE}"),
    Case("rate(cpu_seconds_total[5m]) / on(job, instance) group_left sum by (job, instance) "
         "(rate(cpu_seconds_total[5m]))"),
    Case("up == 1"),
    Case("up != bool 1"),
    Case("temperature_celsius > 0"),
    Case("temperature_celsius > bool 0"),
    Case("temperature_celsius == temperature_celsius"),
    Case("queue_length >= 15 <= 40"),
    Case("1 > bool 2"),
    Case("time() > bool 1709250000"),
    Case(f"up and on(job) ({RATE} > 3)"),
    Case('http_requests_total{code="200"} or http_requests_total{code="500"}'),
    Case("temperature_celsius unless temperature_celsius < 0"),
    Case('queue_length unless on(instance) queue_length{instance="q1"}'),
    Case("queue_length > 25 or vector(-1)"),
    Case("scalar(sum(up))"),
    Case("scalar(up)"),
    Case("vector(scalar(slow_gauge))"),
    Case("sum(up) * scalar(count(build_info))"),
    Case("2 * 3 + time() / 1e9"),
    Case("up + on(job) http_requests_total"),
    Case("up * ignoring(version) build_info"),
    # subqueries
    Case(f"max_over_time({RATE}[30m:1m])"),
    Case("avg_over_time(temperature_celsius[1h:5m])"),
    Case("rate(sum(http_requests_total)[10m:])"),
    Case("min_over_time(deriv(queue_length[10m])[20m:2m] offset 5m)"),
    Case("sum_over_time(up[7m:90s])"),
    Case(f"last_over_time(temperature_celsius[5m:1m] @ {fmt(S + 4 * H + 30 * M)})"),
    Case("count_over_time(flappy[10m:30s])"),
    # NaN and infinities
    Case("nan_gauge"),
    Case("sort(nan_gauge)", ordered=True),
    Case("sort_desc(nan_gauge)", ordered=True),
    Case("topk(2, nan_gauge)", ordered=True),
    Case("bottomk(2, nan_gauge)", ordered=True),
    Case("max(nan_gauge)"),
    Case("min(nan_gauge)"),
    Case("avg(nan_gauge)"),
    Case("sum(nan_gauge)"),
    Case("stddev(nan_gauge)"),
    Case("quantile(0.5, nan_gauge)"),
    Case('count_values("v", nan_gauge > 1000 or nan_gauge != nan_gauge or nan_gauge < -1000)'),
    Case("max_over_time(nan_gauge[2m])"),
    Case("min_over_time(nan_gauge[2m])"),
    Case("avg_over_time(nan_gauge[2m])"),
    Case("sum_over_time(nan_gauge[2m])"),
    Case("stddev_over_time(nan_gauge[2m])"),
    Case("quantile_over_time(0.3, nan_gauge[3m])"),
    Case("mad_over_time(nan_gauge[5m])"),
    Case("changes(nan_gauge[5m])"),
    Case("resets(nan_gauge[5m])"),
    Case("deriv(nan_gauge[5m])"),
    Case("rate(nan_gauge[5m])"),
    Case("delta(nan_gauge[5m])"),
    Case("idelta(nan_gauge[1m])"),
    Case("increase(nan_gauge[5m])"),
    Case("irate(nan_gauge[1m])"),
    Case("stdvar_over_time(nan_gauge[2m])"),
    Case("stddev by (job) (nan_gauge)"),
    Case("quantile(NaN, up)"),
    Case("quantile_over_time(NaN, queue_length[5m])"),
    Case(f"histogram_quantile(NaN, sum by (le) (rate({B}[5m])))"),
    Case('label_replace(up, "a", "b", "job", "(")'),
    Case("last_over_time(slow_gauge[5m:1m])", times=SLOW_EDGES),
    Case("clamp(nan_gauge, -1, 1)"),
    Case("sgn(nan_gauge)"),
    Case("round(nan_gauge)"),
    Case("nan_gauge > 0"),
    Case("nan_gauge == bool nan_gauge"),
    Case("sum_over_time(huge_gauge[5m])"),
    Case("stddev_over_time(huge_gauge[5m])"),
    Case("stdvar(huge_gauge)"),
    # broken classic histograms
    Case("histogram_quantile(0.5, broken_bucket)"),
    Case("histogram_quantile(0.95, broken_bucket)"),
    Case("histogram_quantile(0.01, broken_bucket)"),
    # arithmetic corner cases
    Case("temperature_celsius % 3"),
    Case("temperature_celsius % -3"),
    Case("temperature_celsius ^ 0.5"),
    Case("queue_length / 0"),
    Case("-queue_length / 0"),
    Case("(queue_length - queue_length) / 0"),
    Case("0 < temperature_celsius"),
    Case("5 > bool temperature_celsius"),
    Case("temperature_celsius atan2 ignoring(location) temperature_celsius"),
    Case("NaN"),
    Case("-Inf"),
    Case("0x1F + 1e3 - 1.5e-3"),
    Case("scalar(nonexistent)"),
    Case("scalar(up) == bool NaN"),
    Case('count_values("v", ceil(temperature_celsius))'),
    Case('count_values("válue", up)'),
    # labels and names
    Case('label_replace(up, "foo", "$1", "instance", "10")'),
    Case('label_replace(up, "foo", "${1}0$2", "instance", "(10)\\.(.*)")'),
    Case('label_replace(up, "__name__", "renamed_$1", "job", "(.*)")'),
    Case('label_join(up, "__name__", "_", "job", "job")'),
    Case('sort_by_label_desc(temperature_celsius, "location")', ordered=True),
    Case('sum by (location) (temperature_celsius)'),
    Case('sum by (__name__) ({__name__=~"up|build_info"})'),
    Case('sum without (job) ({__name__=~"up|build_info"})'),
    Case('up or build_info'),
    Case('up and ignoring(version) build_info'),
    Case('queue_length unless on() vector(1)'),
    Case('vector(1) and on() absent(nonexistent)'),
    Case("up * on(job) group_left build_info"),
    Case("timestamp(rate(http_requests_total[5m]))"),
    Case(f"{RATE} > bool 5"),
    Case('absent(nonexistent{job="a", job="b"})'),
    Case('absent_over_time(batch_progress{job="batch"}[10m])'),
    # aggregation parameters
    Case("topk(0, up)"),
    Case("topk(scalar(count(up)) - 3, temperature_celsius)"),
    Case("limitk(10, up)"),
    Case("limit_ratio(1, up)"),
    Case("quantile(1.5, temperature_celsius)"),
    Case("quantile(-1, temperature_celsius)"),
    Case("stddev(cpu_seconds_total)"),
    Case("count(nonexistent)"),
    # experimental: timestamps of extremes
    Case("ts_of_max_over_time(temperature_celsius[10m])"),
    Case("ts_of_min_over_time(queue_length[10m])"),
    Case("ts_of_last_over_time(batch_last_success[10m])"),
    # more subqueries, @ and offset
    Case(f"sum(rate(http_requests_total[5m] @ {fmt(S + 3 * H)}))"),
    Case("max_over_time(temperature_celsius[10m:1m] offset 1h)"),
    Case("rate(http_requests_total[5m])[10m:1m]", range=False),
    Case(f"deriv(queue_length[30m:7s] @ {fmt(S + 2 * H + 45 * M)})"),
    Case("count_over_time(flappy[10m])"),
    Case("last_over_time(flappy[5m])"),
    # date functions on odd arguments
    Case("year(vector(-1))"),
    Case("month(vector(1e10))"),
    Case("hour(vector(NaN))"),
    Case("day_of_week(vector(Inf))"),
]


def case_param(c: Case):
    marks = [pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
    return pytest.param(c, id=c.id, marks=marks)


# --- topology -------------------------------------------------------------------------------------

def get(url: str, path: str, params: dict) -> tuple[int, dict]:
    code, body = http_get(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=60)
    try:
        return code, json.loads(body)
    except ValueError:
        return code, {"status": "error", "errorType": f"non-JSON answer {code}", "error": body[:300].decode()}


def requests_of(c: Case) -> list[tuple[str, dict]]:
    out = []
    if c.instant:
        out += [("/api/v1/query", {"query": c.query, "time": fmt(t), **c.params}) for t in (c.times or TIMES)]
    if c.range:
        out += [("/api/v1/query_range", {"query": c.query, "start": fmt(a), "end": fmt(b), "step": f"{st / 1000:g}",
                                         **c.params}) for a, b, st in (c.ranges or RANGES)]
    return out


class Topology:
    def __init__(self, base):
        self.base = base
        self.procs = []

    def start(self, name, args):
        p = REGISTRY.start(name, args, self.base / name, session=True)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture(scope="module")
def answers(tmp_path_factory, prometheus3_bin, pythanos_bin, thanos_bin):
    base = tmp_path_factory.mktemp("query-diff")
    db = base / "tsdb"
    data = build_data()
    metas = write_blocks(db, ((dict(k), t, v) for k, (t, v) in sorted(data.items())), aligned_ranges(S, END))
    assert len(metas) == 3
    topo = Topology(base)
    try:
        pp, sg, sh, qh, qg = free_ports(5)
        cfg = base / "prometheus.yml"
        cfg.write_text("global:\n  external_labels:\n    cluster: diff\n")
        prom = topo.start("prometheus3", [
            prometheus3_bin, f"--config.file={cfg}", f"--storage.tsdb.path={db}",
            f"--web.listen-address=127.0.0.1:{pp}", "--storage.tsdb.retention.time=100y",
            "--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h",
            "--enable-feature=promql-experimental-functions"])
        prom.url = f"http://127.0.0.1:{pp}"
        prom.wait_http_ready("/-/ready", READY)
        sidecar = topo.start("sidecar", [
            pythanos_bin, "sidecar", f"--prometheus.url={prom.url}", f"--grpc-address=127.0.0.1:{sg}",
            f"--http-address=127.0.0.1:{sh}", "--grpc-grace-period=1s", "--http-grace-period=1s"])
        sidecar.url = f"http://127.0.0.1:{sh}"
        sidecar.wait_http_ready("/-/ready", READY)
        query = topo.start("query", [
            pythanos_bin, "query", f"--endpoint=127.0.0.1:{sg}", f"--http-address=127.0.0.1:{qh}",
            f"--grpc-address=127.0.0.1:{qg}", "--query.replica-label=replica",
            "--enable-feature=promql-experimental-functions"])
        query.url = f"http://127.0.0.1:{qh}"
        query.wait_http_ready("/-/ready", READY)

        def healthy() -> bool:
            code, doc = get(query.url, "/api/v1/stores", {})
            stores = [s for g in doc["data"].values() for s in g] if code == 200 else []
            return any(s["name"] == f"127.0.0.1:{sg}" and not s.get("lastError") for s in stores)
        query.wait_ready(healthy, READY, what="the sidecar healthy in /api/v1/stores")
        thanos = start_thanos_query(thanos_bin, [f"127.0.0.1:{sg}"], base / "thanos-query",
                                    ["--enable-feature=promql-experimental-functions"], ready_timeout=READY)
        topo.procs.append(thanos)
        # Prometheus has loaded the blocks.
        code, doc = get(prom.url, "/api/v1/query", {"query": "count(up)", "time": fmt(S + H)})
        assert code == 200 and doc["data"]["result"][0]["value"][1] == "5", doc

        jobs = [(c.id, path, params) for c in CASES for path, params in requests_of(c)]
        with ThreadPoolExecutor(8) as pool:
            want = list(pool.map(lambda j: get(prom.url, j[1], j[2]), jobs))
            got = list(pool.map(lambda j: get(query.url, j[1], j[2]), jobs))
            ref = list(pool.map(lambda j: get(thanos.url, j[1], j[2]), jobs))
        out: dict[str, list] = {}
        for (cid, path, params), w, g, r in zip(jobs, want, got, ref):
            out.setdefault(cid, []).append((path, params, w, g, r))
        yield out
    finally:
        topo.stop()


# --- comparison -----------------------------------------------------------------------------------

def close(a: str, b: str, rel: float = REL) -> bool:
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= rel * max(abs(x), abs(y))


def key_of(metric: dict, ours: bool) -> str:
    """``ours`` here means "came through a querier": the sidecar's external label is dropped."""
    m = dict(metric)
    if ours and m.get("cluster") == "diff":
        del m["cluster"]
    return json.dumps(m, sort_keys=True, ensure_ascii=False)


def compare(what: str, want: dict, got: dict, ordered: bool, ref: str = "prometheus", rel: float = REL) -> list[str]:
    """Differences between a reference answer (want; Prometheus' unless ``ref`` is "thanos", whose
    metrics carry the external label like ours) and ours (got), as readable lines."""
    w_strip = ref != "prometheus"
    if want.get("status") != "success" or got.get("status") != "success":
        if want.get("status") == got.get("status") == "error" and want.get("errorType") == got.get("errorType"):
            return []
        return [f"{what}: {ref} {want.get('status')} {want.get('errorType', '')} {want.get('error', '')!r}"
                f" vs ours {got.get('status')} {got.get('errorType', '')} {got.get('error', '')!r}"]
    wd, gd = want["data"], got["data"]
    if wd["resultType"] != gd["resultType"]:
        return [f"{what}: resultType {ref} {wd['resultType']} vs ours {gd['resultType']}"]
    rt = wd["resultType"]
    if rt in ("scalar", "string"):
        (wt, wv), (gt, gv) = wd["result"], gd["result"]
        ok = wt == gt and (wv == gv if rt == "string" else close(wv, gv, rel))
        return [] if ok else [f"{what}: {ref} {wd['result']} vs ours {gd['result']}"]
    field_ = "value" if rt == "vector" else "values"
    wmap: dict[str, list] = {}
    gmap: dict[str, list] = {}
    diffs = []
    for rows, mp, ours in ((wd["result"], wmap, None), (gd["result"], gmap, True)):
        for r in rows:
            k = key_of(r["metric"], w_strip if ours is None else ours)
            if k in mp:
                diffs.append(f"{what}: {'ours' if ours else ref} has {k} twice")
            mp[k] = [r[field_]] if rt == "vector" else r[field_]
    only_w, only_g = sorted(set(wmap) - set(gmap)), sorted(set(gmap) - set(wmap))
    if only_w:
        diffs.append(f"{what}: only {ref} has {[(k, wmap[k][:3]) for k in only_w][:6]}")
    if only_g:
        diffs.append(f"{what}: only ours has {[(k, gmap[k][:3]) for k in only_g][:6]}")
    for k in sorted(set(wmap) & set(gmap)):
        wp, gp = wmap[k], gmap[k]
        if [p[0] for p in wp] != [p[0] for p in gp]:
            wt, gt = [p[0] for p in wp], [p[0] for p in gp]
            diffs.append(f"{what}: {k} timestamps: only {ref} {sorted(set(wt) - set(gt))[:5]}, "
                         f"only ours {sorted(set(gt) - set(wt))[:5]} ({len(wt)} vs {len(gt)})")
            continue
        bad = [(t, wv, gv) for (t, wv), (_, gv) in zip(wp, gp) if not close(wv, gv, rel)]
        if bad:
            diffs.append(f"{what}: {k} values (t, {ref}, ours): {bad[:4]}"
                         + (f" and {len(bad) - 4} more" if len(bad) > 4 else ""))
    if ordered and rt == "vector" and not diffs:
        def order(rows, ours):
            """Keys of the non-NaN samples in order, keys of the NaN ones (no order among themselves),
            and whether every NaN comes after every number."""
            nan = [math.isnan(float(r["value"][1])) for r in rows]
            keys = [key_of(r["metric"], ours) for r in rows]
            nan_last = nan == sorted(nan)
            return [k for k, n in zip(keys, nan) if not n], sorted(k for k, n in zip(keys, nan) if n), nan_last
        w, g = order(wd["result"], w_strip), order(gd["result"], True)
        if w != g:
            diffs.append(f"{what}: order {ref} {[key_of(r['metric'], w_strip) for r in wd['result']]} "
                         f"vs ours {[key_of(r['metric'], True) for r in gd['result']]}")
    return diffs


COUNTER_FUNCS_RE = re.compile(r"\b(rate|increase|irate|resets)\s*\(")


@pytest.mark.parametrize("case", [case_param(c) for c in CASES])
def test_same_answer_as_prometheus3(answers, case: Case):
    """Ours equals Thanos' querier everywhere; where ours differs from Prometheus, Thanos differs
    too and the query uses one of Thanos' counter functions (see the module doc)."""
    results = answers[case.id]
    assert results, case.id
    diffs = []
    for path, params, (wcode, want), (gcode, got), (rcode, ref) in results:
        what = (f"{path.rsplit('/', 1)[1]} " + " ".join(f"{k}={v}" for k, v in params.items() if k != "query"))
        # the range-vector rate functions alone are bit-for-bit Thanos' (Prometheus' order of
        # operations); aggregations are not yet (Prometheus sums with Kahan compensation)
        exact = EXACT_RE.match(case.query) is not None
        diffs += compare(what, ref, got, case.ordered, ref="thanos", rel=0.0 if exact else REL)
        vs_prom = compare(what, want, got, case.ordered)
        if vs_prom and not COUNTER_FUNCS_RE.search(case.query):
            diffs += vs_prom
    assert not diffs, f"{case.query}:\n" + "\n".join(diffs)


def test_data_covers_the_features():
    """The data set has what the queries rely on: stale markers, NaNs, resets, gaps, UTF-8."""
    data = build_data()
    assert 80 <= len(data) <= 200, len(data)
    vals = np.concatenate([v for _, v in data.values()])
    assert np.sum(vals.view(np.uint64) == np.uint64(0x7FF0000000000002)) == 2
    assert np.any(np.isinf(vals))
    assert np.sum(np.isnan(vals)) > 10 and np.any(vals < 0)
    names = {dict(k)["__name__"] for k in data}
    assert {"http_requests_total", "request_duration_seconds_bucket", "temperature_celsius"} <= names
    assert any(not dict(k)["location"].isascii() for k in data if "location" in dict(k))
    assert len(CASES) >= 80 and len({c.id for c in CASES}) == len(CASES)


def test_compare_sees_differences():
    """The comparison is not vacuous: values, series, order and errors are all told apart."""
    def vec(*rows):
        return {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": m, "value": [1.5, v]} for m, v in rows]}}
    a, b, n = {"i": "a"}, {"i": "b"}, {"i": "n"}
    ours = [dict(m, cluster="diff") for m in (a, b, n)]
    assert compare("", vec((a, "1"), (b, "2")), vec((ours[0], "1.0000001"), (ours[1], "2")), True) == []
    assert compare("", vec((a, "1")), vec((ours[0], "1.00001")), False)
    assert compare("", vec((a, "NaN")), vec((ours[0], "NaN")), False) == []
    assert compare("", vec((a, "NaN")), vec((ours[0], "0")), False)
    assert compare("", vec((a, "+Inf")), vec((ours[0], "-Inf")), False)
    assert compare("", vec((a, "1")), vec((ours[0], "1"), (ours[1], "2")), False)
    assert compare("", vec((a, "1")), vec(({"i": "a", "cluster": "other"}, "1")), False)
    assert compare("", vec((a, "1"), (b, "2")), vec((ours[1], "2"), (ours[0], "1")), False) == []
    assert compare("", vec((a, "1"), (b, "2")), vec((ours[1], "2"), (ours[0], "1")), True)
    assert compare("", vec((a, "1"), (b, "NaN"), (n, "NaN")), vec((ours[0], "1"), (ours[2], "NaN"), (ours[1], "NaN")),
                   True) == []
    assert compare("", vec((a, "1"), (b, "NaN")), vec((ours[1], "NaN"), (ours[0], "1")), True)
    err = {"status": "error", "errorType": "execution", "error": "x"}
    assert compare("", err, dict(err, error="y"), False) == []
    assert compare("", err, vec(), False) and compare("", vec(), err, False)
    def mat(m, values):
        return {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": m, "values": values}]}}
    full = mat(a, [[1, "1"], [2, "2"]])
    assert compare("", full, mat(ours[0], [[1, "1"], [2, "2.0000000001"]]), False) == []
    assert compare("", full, mat(ours[0], [[1, "1"]]), False)
    assert compare("", full, vec((a, "1")), False)


# --- regexes: our RE2-based matchers and label_replace against a real Prometheus 3.9.1 -----------

RX_VALUES = ["", "a", "A", "b", "ab", "aB", "abc", "x\ny", "x\n", "\n", "k", "K", "\u212a", "s", "S", "\u017f",
             "σ", "Σ", "ς", "1", "\u0663", "é", "É", "a.b", "a-b", "a_b", "[x]", "*(", "foo-bar", "production",
             "PRODUCTION", "x" * 48, "x" * 48 + "y", "a" * 40 + "!", "a b", "\t", "😀", "prod\nuction"]
RX_VALID = [
    "a", "a|b", "", ".*", ".+", "a.*", ".*b", "A", "(?i)a", "(?i)k", "(?i)s", "(?i)σ", "x.y", "x.", "(?-s:x.y)",
    "(?m)x$", "(?m)^y", "[[:alpha:]]+", "[[:^alpha:]]", r"\d", r"\w+", r"\pL+", r"\p{Greek}+", r"\PL", "[^a]",
    "[a-c]+", "a?b?c?", r"\.", r"a\.b", r"\[x\]", "(x|x)*y", "(a+)+", "(a|aa)*!", "x{2,}", "x{48}", "foo-.*|.*bar",
    "prod.*", "(?i)PROD.*", ".*((?i)DUC).*", "a(?i)b|c", r"\x41", r"\x{1F600}", "(?s).", "(?U)a+", "😀", "é|É",
    r"\S+", r"\s", r"[\t ]", "(?i)[k-m]", r"a\b", r"\Bb", "^a$", "a$|b", "(?:)", "()", "a{0}", "(?P<n>a)b|()",
    "(?<n>a)(?P<m>b)?", r"[\d.]+", "[]a]", "[^]a]+", r"\*\(", "(?i)É", r"\W", r"[^\n]+", "a*?", "(?:a|b)+",
    # Go's syntax that promql-parser's Rust regex crate rejects
    r"\Q*(\E", r"(?)a", r"\141", r"a\Q.b", r"(?i)\Qa.B\E",
]
RX_INVALID = ["(a", "a)", "[a", "a**", "a{1001}", "(?x)a", "a(?=b)", "[z-a]", "*", "x{2}{3}", "(?P<é>a)",
              "a{2,1}", r"\pX", "[[:foo:]]", "(?i", r"\C", r"\8", r"a\1"]
RX_TEMPLATES = ["<$1>", "$0|${n}|$m", "$1x${1}x", "$$1"]


def _promql_raw(s: str) -> str:
    """``s`` as a PromQL double-quoted string (backtick strings with a backslash trip promql-parser)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="module")
def rx_prometheus(tmp_path_factory, prometheus3_bin):
    """Prometheus 3.9.1 on a block (written by our writer) of one series per value in RX_VALUES
    (``rx{v=<value>, i=<index>}``; the empty value is a series without ``v``)."""
    base = tmp_path_factory.mktemp("regex-diff")
    db = base / "tsdb"
    series = [({"__name__": "rx", "i": f"{k:02d}", **({"v": v} if v else {})},
               np.array([S + M], dtype=np.int64), np.array([float(k)])) for k, v in enumerate(RX_VALUES)]
    metas = write_blocks(db, sorted(series, key=lambda s: sorted(s[0].items())), [(S, S + 2 * H)])
    topo = Topology(base)
    try:
        (port,) = free_ports(1)
        cfg = base / "prometheus.yml"
        cfg.write_text("global: {}\n")
        prom = topo.start("prometheus3-regex", [
            prometheus3_bin, f"--config.file={cfg}", f"--storage.tsdb.path={db}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=100y",
            "--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h"])
        prom.url = f"http://127.0.0.1:{port}"
        prom.wait_http_ready("/-/ready", READY)
        code, doc = get(prom.url, "/api/v1/query", {"query": "count(rx)", "time": fmt(S + 2 * M)})
        assert code == 200 and doc["data"]["result"][0]["value"][1] == str(len(RX_VALUES)), doc
        yield prom, db / metas[0].ulid, series
    finally:
        topo.stop()


def test_regex_semantics_match_prometheus3(rx_prometheus):
    """Label matchers (our Matcher, our index's postings as the store gateway uses them, our
    engine), label_replace and the errors for invalid regexes agree with a real Prometheus 3.9.1
    on the same data: anchoring, ``.`` matching a newline, flags, classes, Unicode, empty matches."""
    from pythanos.promql import Engine, MemoryQueryable, ParseError
    from pythanos.tsdb.block import BlockReader
    from pythanos.tsdb.labels import Matcher

    prom, block_dir, series = rx_prometheus
    t = fmt(S + 2 * M)
    mem = MemoryQueryable()
    for labels, ts, vs in series:
        mem.add(labels, ts, vs)
    eng = Engine()
    block = BlockReader.open_dir(block_dir)
    ids = {int(ref): dict(block.index.series(ref)[0])["i"] for ref in block.index.all_postings()}
    value_of = {f"{k:02d}": v for k, v in enumerate(RX_VALUES)}

    def prom_query(q: str) -> dict:
        return get(prom.url, "/api/v1/query", {"query": q, "time": t})[1]

    mismatches = []
    for rx in RX_VALID:
        for op in ("=~", "!~"):
            q = f"rx{{v{op}{_promql_raw(rx)}}}"
            doc = prom_query(q)
            assert doc["status"] == "success", (q, doc)
            want = sorted(r["metric"]["i"] for r in doc["data"]["result"])
            m = Matcher(op, "v", rx)
            by_matcher = sorted(i for i, v in value_of.items() if m.matches(v))
            refs = block.index.postings_for_matchers([Matcher("=", "__name__", "rx"), m])
            by_index = sorted(ids[int(r)] for r in refs)
            by_engine = sorted(dict(s.labels)["i"] for s in eng.instant(q, S + 2 * M, mem).value)
            if not want == by_matcher == by_index == by_engine:
                mismatches.append((q, want, by_matcher, by_index, by_engine))
        for tpl in RX_TEMPLATES:
            q = f'label_replace(rx, "o", {_promql_raw(tpl)}, "v", {_promql_raw(rx)})'
            doc = prom_query(q)
            try:
                res = eng.instant(q, S + 2 * M, mem).value
            except Exception as e:  # noqa: BLE001 - the message is what is compared
                if doc.get("error") != str(e):  # "a\Q.b" is fine alone, not as ^(?s:a\Q.b)$
                    mismatches.append((q, doc, str(e)))
                continue
            assert doc["status"] == "success", (q, doc)
            want = sorted((r["metric"]["i"], r["metric"].get("o")) for r in doc["data"]["result"])
            got = sorted((dict(s.labels)["i"], dict(s.labels).get("o")) for s in res)
            if want != got:
                mismatches.append((q, [w for w in want if w not in got], [g for g in got if g not in want]))
    for rx in RX_INVALID:
        q = f"rx{{v=~{_promql_raw(rx)}}}"
        doc = prom_query(q)
        assert doc["status"] == "error" and doc["errorType"] == "bad_data", (q, doc)
        want = doc["error"].removeprefix('invalid parameter "query": ')
        try:
            Engine.parse_check(q)
            got = "accepted"
        except ParseError as e:
            got = str(e)
        with pytest.raises(ValueError) as ei:
            Matcher("=~", "v", rx)
        if got != want or not want.endswith(str(ei.value)):
            mismatches.append((q, want, got, str(ei.value)))
        q = f'label_replace(rx, "o", "$1", "v", {_promql_raw(rx)})'
        doc = prom_query(q)
        assert doc["status"] == "error" and doc["errorType"] == "execution", (q, doc)
        try:
            eng.instant(q, S + 2 * M, mem)
            got = "accepted"
        except Exception as e:  # noqa: BLE001 - the message is what is compared
            got = str(e)
        if got != doc["error"]:
            mismatches.append((q, doc["error"], got))
    assert mismatches == []
