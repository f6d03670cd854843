"""``pythanos tools bench-blocks``: thanosbench-like TSDB block generation (``thanosbench block plan | gen``).

The facts follow thanosbench (``pkg/blockgen/profiles.go``, ``pkg/seriesgen/seriesgen.go``):

* a profile is a list of block ranges, newest first, planned backwards from ``max-time`` aligned *up* to a
  2h boundary (``rangeForTimestamp``: ``(t // 2h) * 2h + 2h``); each block ends where the newer one starts,
  so blocks touch and never overlap;
* every series is a gauge scraped every 15 s; its first value is uniform in [10 000 000, 200 000 001), the
  first hour of a block carries that value, then every hour (240 samples) an offset uniform in
  ±15 000 000 is redrawn, so the value is constant for 240 samples and then steps;
* series are ``{__blockgen_target__="<1..targets>", __name__="continuous_app_metric<i>"}``; the external
  labels go to ``meta.json``'s ``thanos.labels`` (as in thanosbench they are not series labels, but they
  feed the per-series seed);
* blocks are compaction level 1, ``thanos.source = "blockgen"``, downsample resolution 0.

Where we differ on purpose: thanosbench plans ``mint = maxt - range + 1`` and emits samples up to and
including ``maxt``, so its block bounds drift by 1 ms per block off the 2h grid. We plan half-open
``[maxt - range, maxt)`` (Prometheus' convention) so every block boundary sits on the 2h grid, samples sit
on the 15 s grid from ``mint``, and none is at or beyond ``maxTime``. The per-block offsets are seeded by
(seed, series labels, external labels, block mint) rather than repeating identically in every block.

Generation is vectorised: a counter-based hash (splitmix64 over uint64 arrays) gives each (series, hour)
its uniform draw, so values are a pure function of (seed, series, block, sample index) whatever the
batching, and a block is produced in batches of series with bounded memory.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from ..errors import UserError
from ..flags import parse_time_or_duration

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
BLOCK_ALIGN_MS = 2 * HOUR_MS

# seriesgen.Characteristics of thanosbench's continuous profiles.
SCRAPE_INTERVAL_MS = 15_000
CHANGE_INTERVAL_MS = HOUR_MS
VALUE_MIN = 10_000_000.0
VALUE_MAX = 200_000_000.0
JITTER = 30_000_000.0

TARGET_LABEL = "__blockgen_target__"
METRIC_FORMAT = "continuous_app_metric{}"
SOURCE = "blockgen"

# Samples (series x samples) held in memory at once while generating one block.
DEFAULT_BATCH_SAMPLES = 4_000_000


@dataclass(frozen=True)
class Profile:
    name: str
    ranges: tuple[int, ...]  # block ranges in ms, newest first
    targets: int
    metrics: int
    help: str = ""
    scrape_interval: int = SCRAPE_INTERVAL_MS
    change_interval: int = CHANGE_INTERVAL_MS

    @property
    def num_series(self) -> int:
        return self.targets * self.metrics

    @property
    def span(self) -> int:
        return sum(self.ranges)


def _h(n: float) -> int:
    return int(n * HOUR_MS)


_WEEK = (_h(2), _h(2), _h(2), _h(8), _h(8), _h(48), _h(48), _h(48), _h(2))

PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("continuous-365d-tiny",
            (_h(2), _h(2), _h(2), _h(8)) + (_h(176),) * 4 + (67 * DAY_MS,) * 5, 1, 5,
            "1 year in 13 blocks (2h,2h,2h,8h,4x176h,5x67d), 5 series"),
    Profile("continuous-30d-tiny",
            (_h(2), _h(2), _h(2), _h(8)) + (_h(176),) * 4 + (_h(2),), 1, 5,
            "30 days in 9 blocks (2h,2h,2h,8h,4x176h,2h), 5 series"),
    Profile("continuous-1w-small", _WEEK, 100, 100,
            "1 week in 9 blocks (2h,2h,2h,8h,8h,3x48h,2h), 10k series (100 targets x 100 metrics)"),
    Profile("continuous-1w-1series-10000apps", _WEEK, 10_000, 1,
            "1 week in 9 blocks, 10k series (10000 targets x 1 metric)"),
    Profile("bench-10k-1d", (_h(2),) * 12, 100, 100,
            "pythanos benchmark: 1 day in 12 2h blocks, 10k series (100 targets x 100 metrics)"),
    Profile("bench-10k-1d-1metric", (_h(2),) * 12, 10_000, 1,
            "pythanos benchmark: 1 day in 12 2h blocks, 10k series of one metric (10000 targets x 1 metric)"),
    Profile("bench-10k-2h", (_h(2),), 100, 100,
            "pythanos benchmark: one 2h block, 10k series (100 targets x 100 metrics)"),
    Profile("bench-10k-14d", (_h(48),) * 7, 100, 100,
            "pythanos benchmark: 2 weeks in seven 48h blocks, 10k series (100 targets x 100 metrics) at 60 s",
            scrape_interval=60_000),
    Profile("bench-100k-20h", (_h(2),) * 10, 1000, 100,
            "pythanos benchmark: 20 h in ten 2h blocks of 100k series (1000 targets x 100 metrics) at 60 s, "
            "1M series in all", scrape_interval=60_000),
)}


@dataclass
class BenchBlocksConfig:
    profile: str
    labels: dict[str, str] = field(default_factory=dict)
    max_time: int = 0  # ms, not yet aligned
    output_dir: str = ""
    seed: int = 1


# --------------------------------------------------------------------------------------------- flags

_LABEL_RE = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*$')


def _unescape(s: str) -> str:
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), s)


def parse_labels(items: Sequence[str] | None, flag: str = "--labels") -> dict[str, str]:
    """``['cluster="eu1"', 'replica="a"']`` (also comma-separated in one item) -> dict.

    Like Thanos' ``--labels``/external labels: ``name="value"``, value double-quoted.
    """
    out: dict[str, str] = {}
    for item in items or []:
        for part in _split_label_list(item):
            m = _LABEL_RE.match(part)
            if not m:
                raise UserError(f'{flag}: expected name="value", got {part!r}')
            name, value = m.group(1), _unescape(m.group(2))
            if name in out:
                raise UserError(f"{flag}: label {name!r} given twice")
            out[name] = value
    return out


def _split_label_list(item: str) -> list[str]:
    """Split ``a="x",b="y"`` on commas outside quotes."""
    parts, cur, quoted, esc = [], [], False, False
    for c in item:
        if esc:
            cur.append(c)
            esc = False
        elif c == "\\":
            cur.append(c)
            esc = True
        elif c == '"':
            cur.append(c)
            quoted = not quoted
        elif c == "," and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()] or [item]


def parse_max_time(text: str, flag: str = "--max-time", now_ms: int | None = None) -> int:
    """RFC3339 time, or a duration relative to now -> unix ms.

    As Thanos' ``TimeOrDurationValue`` (which thanosbench uses; :func:`pythanos.flags.parse_time_or_duration`):
    ``6h`` is now plus 6h and ``-6h`` now minus 6h; the course's ``--max-time=6h`` thereby generates
    data up to the present and a little beyond. Not aligned yet: :func:`plan` rounds it up to the
    next 2h boundary like thanosbench.
    """
    return parse_time_or_duration(text, flag).timestamp_ms(now_ms)


def get_profile(name: str, flag: str = "--profile") -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UserError(f'{flag}: unknown profile "{name}", known: {", ".join(sorted(PROFILES))}') from None


def profiles_help() -> str:
    w = max(len(n) for n in PROFILES)
    return "\n".join(f"{p.name:<{w}}  {p.help}" for p in sorted(PROFILES.values(), key=lambda p: p.name))


# ------------------------------------------------------------------------------------------ planning

def align_max_time(t: int, width: int = BLOCK_ALIGN_MS) -> int:
    """thanosbench's ``rangeForTimestamp``: the 2h boundary strictly after ``t`` (Go division truncates)."""
    q = abs(t) // width
    q = q if t >= 0 else -q
    return q * width + width


@dataclass(frozen=True)
class BlockPlan:
    min_time: int  # inclusive
    max_time: int  # exclusive

    def __iter__(self):  # so a plan unpacks as (mint, maxt)
        return iter((self.min_time, self.max_time))

    @property
    def num_samples_per_series(self) -> int:
        return -(-(self.max_time - self.min_time) // SCRAPE_INTERVAL_MS)


def plan(profile: Profile | str, max_time: int) -> list[BlockPlan]:
    """Block ranges, newest first: ``[(mint, maxt), ...]`` half-open, touching, 2h-aligned."""
    p = get_profile(profile) if isinstance(profile, str) else profile
    maxt = align_max_time(max_time)
    out = []
    for r in p.ranges:
        out.append(BlockPlan(maxt - r, maxt))
        maxt -= r
    return out


# ---------------------------------------------------------------------------------------- generation

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> _U64(30))) * _M1
    z = (z ^ (z >> _U64(27))) * _M2
    return z ^ (z >> _U64(31))


def _uniform(z: np.ndarray) -> np.ndarray:
    """uint64 -> float64 uniform in [0, 1) from the top 53 bits."""
    return (z >> _U64(11)).astype(np.float64) * (1.0 / (1 << 53))


def series_labels(profile: Profile | str) -> list[dict[str, str]]:
    """The profile's series, sorted by labels (``__blockgen_target__`` sorts before ``__name__``)."""
    p = get_profile(profile) if isinstance(profile, str) else profile
    out = [{TARGET_LABEL: str(t), "__name__": METRIC_FORMAT.format(i)}
           for t in range(1, p.targets + 1) for i in range(p.metrics)]
    out.sort(key=lambda ls: (ls[TARGET_LABEL], ls["__name__"]))
    return out


def series_keys(labels: Sequence[dict[str, str]], ext_labels: dict[str, str] | None = None) -> np.ndarray:
    """A stable 64-bit key per series from its labels plus the external labels (as thanosbench hashes both)."""
    ext = b"".join(k.encode() + b"\xff" + v.encode() + b"\xff" for k, v in sorted((ext_labels or {}).items()))
    keys = np.empty(len(labels), dtype=np.uint64)
    for i, ls in enumerate(labels):
        b = b"".join(k.encode() + b"\xff" + v.encode() + b"\xff" for k, v in sorted(ls.items())) + ext
        keys[i] = int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "little")
    return keys


def block_timestamps(mint: int, maxt: int, interval: int = SCRAPE_INTERVAL_MS) -> np.ndarray:
    """Sample timestamps of one block: ``mint, mint+15s, ...`` strictly below ``maxt``."""
    return np.arange(mint, maxt, interval, dtype=np.int64)


def base_values(keys: np.ndarray, seed: int) -> np.ndarray:
    """Each series' first value, uniform in [VALUE_MIN, VALUE_MAX + 1) (thanosbench: min + U*((max-min)+1))."""
    s = _U64(seed & _MASK64)
    u = _uniform(_mix(_mix(np.asarray(keys, dtype=np.uint64) ^ s)))
    return VALUE_MIN + u * ((VALUE_MAX - VALUE_MIN) + 1)


def generate_values(keys: np.ndarray, mint: int, n: int, seed: int, *, interval: int = SCRAPE_INTERVAL_MS,
                    change_interval: int = CHANGE_INTERVAL_MS) -> np.ndarray:
    """Values ``(len(keys), n)`` for the first ``n`` samples of the block starting at ``mint``.

    Sample ``k`` belongs to run ``k // (change_interval // interval)`` (240 for 15 s / 1h); run 0 has offset 0,
    each later run an offset ``(U - 0.5) * JITTER`` drawn from (seed, series, mint, run).
    """
    keys = np.asarray(keys, dtype=np.uint64)
    per_run = max(1, change_interval // interval)
    n_runs = max(1, -(-n // per_run))
    v0 = base_values(keys, seed)
    block_salt = _mix(np.array([(seed & _MASK64) ^ 0x5DEECE66D], dtype=np.uint64))[0] ^ \
        _mix(np.array([mint & _MASK64], dtype=np.uint64))[0]
    skey = _mix(keys ^ block_salt)                                         # (S,)
    runs = np.arange(n_runs, dtype=np.uint64) * _GOLDEN                    # (R,)
    mods = (_uniform(_mix(skey[:, None] + runs[None, :])) - 0.5) * JITTER  # (S, R)
    mods[:, 0] = 0.0
    # Run r covers samples [r*per_run, (r+1)*per_run): broadcast each run's value over its samples.
    vals = (v0[:, None] + mods)                                            # (S, R)
    out = np.repeat(vals, per_run, axis=1)
    return out[:, :n] if out.shape[1] != n else out


@dataclass
class SeriesBatch:
    labels: list[dict[str, str]]  # one per row of values
    timestamps: np.ndarray        # int64 (n,), shared by all series of the batch
    values: np.ndarray            # float64 (len(labels), n)

    @property
    def num_samples(self) -> int:
        return int(self.values.size)


def generate(profile: Profile | str, mint: int, maxt: int, *, ext_labels: dict[str, str] | None = None,
             seed: int = 1, batch_samples: int = DEFAULT_BATCH_SAMPLES,
             labels: Sequence[dict[str, str]] | None = None,
             keys: np.ndarray | None = None) -> Iterator[SeriesBatch]:
    """Yield the block ``[mint, maxt)`` of ``profile`` in batches of series, at most ~``batch_samples`` each.

    Batching does not change the data: values depend on (seed, series, mint, sample index) only.
    """
    p = get_profile(profile) if isinstance(profile, str) else profile
    if labels is None:
        labels = series_labels(p)
    if keys is None:
        keys = series_keys(labels, ext_labels)
    ts = block_timestamps(mint, maxt, p.scrape_interval)
    n = len(ts)
    if n == 0:
        return
    per_batch = max(1, batch_samples // n)
    for lo in range(0, len(labels), per_batch):
        hi = min(len(labels), lo + per_batch)
        yield SeriesBatch(list(labels[lo:hi]), ts,
                          generate_values(keys[lo:hi], mint, n, seed, interval=p.scrape_interval,
                                          change_interval=p.change_interval))


def value_at(profile: Profile | str, blocks: Sequence[BlockPlan], series: dict[str, str], t: int, *,
             ext_labels: dict[str, str] | None = None, seed: int = 1) -> float | None:
    """The generated value of ``series`` at sample timestamp ``t`` (None when no sample is there)."""
    p = get_profile(profile) if isinstance(profile, str) else profile
    for b in blocks:
        if b.min_time <= t < b.max_time:
            k, rem = divmod(t - b.min_time, p.scrape_interval)
            if rem:
                return None
            keys = series_keys([series], ext_labels)
            return float(generate_values(keys, b.min_time, int(k) + 1, seed, interval=p.scrape_interval,
                                         change_interval=p.change_interval)[0, -1])
    return None


# ------------------------------------------------------------------------------------------- writing

def _thanos_meta(ext_labels: dict[str, str]):
    from ..tsdb.meta import ThanosMeta

    return ThanosMeta(labels=dict(ext_labels), downsample_resolution=0, source=SOURCE, version=1)


def write_block(output_dir: str, profile: Profile, block: BlockPlan, *, ext_labels: dict[str, str], seed: int,
                labels: Sequence[dict[str, str]], keys: np.ndarray,
                batch_samples: int = DEFAULT_BATCH_SAMPLES) -> dict:
    """Generate and write one block; returns ``{"ulid", "series", "samples", "chunks", "gen_s", "write_s", "meta"}``.

    ``gen_s`` is the time spent generating (and handing series to the writer), ``write_s`` the writer's
    encode + index + flush. The writer buffers one block (it needs every series before it can write the
    index), so peak memory is about 8 bytes per sample of the largest block: the timestamps array is shared
    by all series of a block and the values are views into the generator's batches.
    """
    from ..tsdb.block import BlockWriter

    t0 = time.perf_counter()
    w = BlockWriter(output_dir, style="prom3", thanos=_thanos_meta(ext_labels), min_time=block.min_time,
                    max_time=block.max_time, samples_per_chunk=120)
    n_series = n_samples = 0
    for batch in generate(profile, block.min_time, block.max_time, ext_labels=ext_labels, seed=seed,
                          batch_samples=batch_samples, labels=labels, keys=keys):
        for ls, row in zip(batch.labels, batch.values):
            w.add_series(ls, batch.timestamps, row)
        n_series += len(batch.labels)
        n_samples += batch.num_samples
    t1 = time.perf_counter()
    meta = w.write()
    t2 = time.perf_counter()
    if meta is None:  # cannot happen for a non-empty range, but never report a block that is not there
        raise RuntimeError(f"block [{block.min_time}, {block.max_time}) had no samples")
    return {"ulid": meta.ulid, "series": meta.stats.num_series, "samples": meta.stats.num_samples,
            "chunks": meta.stats.num_chunks, "gen_s": t1 - t0, "write_s": t2 - t1, "meta": meta}


def run(cfg: BenchBlocksConfig) -> int:
    if cfg.profile == "help":
        print(profiles_help())
        return 0
    p = get_profile(cfg.profile)
    if not cfg.output_dir:
        raise UserError("--output.dir: required")
    os.makedirs(cfg.output_dir, exist_ok=True)
    blocks = plan(p, cfg.max_time)
    labels = series_labels(p)
    keys = series_keys(labels, cfg.labels)
    log.info("planned blocks", extra={"profile": p.name, "blocks": len(blocks), "series": p.num_series,
                                      "mint": blocks[-1].min_time, "maxt": blocks[0].max_time,
                                      "dir": cfg.output_dir})
    t0 = time.perf_counter()
    total_samples = total_chunks = 0
    for b in blocks:
        res = write_block(cfg.output_dir, p, b, ext_labels=cfg.labels, seed=cfg.seed, labels=labels, keys=keys)
        total_samples += res["samples"]
        total_chunks += res.get("chunks", 0)
        log.info("wrote block", extra={"ulid": res["ulid"], "mint": b.min_time, "maxt": b.max_time,
                                       "series": res["series"], "samples": res["samples"],
                                       "duration": f"{res['gen_s'] + res['write_s']:.3f}s"})
    elapsed = time.perf_counter() - t0
    log.info("bench-blocks done", extra={"profile": p.name, "blocks": len(blocks), "samples": total_samples,
                                         "chunks": total_chunks, "duration": f"{elapsed:.3f}s",
                                         "samples_per_second": int(total_samples / elapsed) if elapsed else 0})
    return 0
