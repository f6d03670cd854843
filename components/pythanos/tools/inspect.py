"""``pythanos tools bucket inspect``: every block of a bucket as one row of a table (Thanos'
``tools bucket inspect``, same columns, same text).

Columns: ULID, FROM, UNTIL (``minTime``/``maxTime`` truncated to seconds, RFC3339 in the local
zone), RANGE (Go duration), UNTIL-DOWN (how much longer the block must grow before the compactor
downsamples it: 40h for raw, 10d for 5m blocks, ``-`` for 1h blocks; negative once exceeded),
#SERIES, #SAMPLES, #CHUNKS (English digit grouping), COMP-LEVEL, COMP-FAILED, LABELS
(``k=v`` sorted by name, joined by ``,``), RESOLUTION (Go duration), SOURCE.

``--selector k="v"`` keeps blocks whose external labels hold every given pair. Rows are sorted
by the ``--sort-by`` columns (default FROM, UNTIL), each compared as a time, else a duration,
else an integer (commas ignored), else a string, ties broken by ULID. ``--output`` is ``table``
(tablewriter's layout), ``csv`` or ``tsv`` (Go's ``encoding/csv``).
"""
from __future__ import annotations

import datetime as _dt
import functools
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Optional, Sequence, TextIO

from ..errors import UserError
from ..tsdb.meta import BlockMeta
from .. import gofmt

log = logging.getLogger(__name__)

COLUMNS = ("ULID", "FROM", "UNTIL", "RANGE", "UNTIL-DOWN", "#SERIES", "#SAMPLES", "#CHUNKS", "COMP-LEVEL",
           "COMP-FAILED", "LABELS", "RESOLUTION", "SOURCE")
OUTPUTS = ("table", "tsv", "csv")
DEFAULT_SORT = ("FROM", "UNTIL")

RES_RAW, RES_5M, RES_1H = 0, 5 * 60 * 1000, 60 * 60 * 1000
# Thanos' ResLevel1DownsampleRange / ResLevel2DownsampleRange: a block is downsampled once it spans these
DOWNSAMPLE_RANGE = {RES_RAW: 40 * 3600 * 1000, RES_5M: 10 * 24 * 3600 * 1000}


@dataclass
class InspectConfig:
    selector: list[tuple[str, str]] = field(default_factory=list)
    sort_by: list[str] = field(default_factory=lambda: list(DEFAULT_SORT))
    output: str = "table"
    timeout_s: float = 300.0


# ------------------------------------------------------------------------------------------- flags

def parse_selector(items: Sequence[str], flag: str = "--selector") -> list[tuple[str, str]]:
    """``name="value"`` items (Thanos' ``parseFlagLabels``: the value is a Go-quoted string)."""
    out = []
    for item in items or ():
        name, sep, quoted = item.partition("=")
        if not sep:
            raise UserError(f'{flag}: unrecognized label {item!r}: want name="value"')
        if not name or not _valid_utf8(name):
            raise UserError(f"{flag}: unsupported format for label {item}: empty or invalid label name")
        try:
            value = gofmt.unquote(quoted)
        except gofmt.UnquoteError:
            raise UserError(f'{flag}: label value of {item!r} is not a quoted string (want {name}="value")') from None
        out.append((name, value))
    return sorted(out)


def _valid_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def parse_sort_by(items: Sequence[str] | None, flag: str = "--sort-by") -> list[str]:
    cols = list(items) if items else list(DEFAULT_SORT)
    for c in cols:
        if c not in COLUMNS:
            raise UserError(f"{flag}: unknown column {c!r}, want one of {','.join(COLUMNS)}")
    return cols


# -------------------------------------------------------------------------------------------- rows

def until_next_downsampling(meta: BlockMeta) -> Optional[int]:
    """Milliseconds the block still has to grow before it is downsampled; None for 1h blocks (or
    an unknown resolution)."""
    want = DOWNSAMPLE_RANGE.get(meta.resolution)
    if want is None:
        return None
    return want - (meta.max_time - meta.min_time)


def row(meta: BlockMeta) -> list[str]:
    until = until_next_downsampling(meta)
    th = meta.thanos
    labels = meta.labels
    return [
        meta.ulid,
        gofmt.unix_ms_rfc3339(meta.min_time),
        gofmt.unix_ms_rfc3339(meta.max_time),
        gofmt.duration_ms(meta.max_time - meta.min_time),
        "-" if until is None else gofmt.duration_ms(until),
        gofmt.thousands(meta.stats.num_series),
        gofmt.thousands(meta.stats.num_samples),
        gofmt.thousands(meta.stats.num_chunks),
        gofmt.thousands(meta.compaction.level),
        "true" if meta.compaction.failed else "false",
        ",".join(f"{k}={labels[k]}" for k in sorted(labels)),
        gofmt.duration_ms(meta.resolution),
        th.source if th else "",
    ]


def matches(meta: BlockMeta, selector: Sequence[tuple[str, str]]) -> bool:
    labels = meta.labels
    return all(k in labels and labels[k] == v for k, v in selector)


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$")
_GO_DUR = re.compile(r"^[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$")
_DUR_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DUR_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10 ** 9, "m": 60 * 10 ** 9,
                "h": 3600 * 10 ** 9}


def _as_time(s: str):
    if not _RFC3339.match(s):
        return None
    try:
        return _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def _as_duration(s: str):
    if s in ("0", "+0", "-0"):
        return 0
    if not _GO_DUR.match(s):
        return None
    neg = s.startswith("-")
    total = 0.0
    for num, unit in _DUR_PART.findall(s):
        total += float(num) * _DUR_UNIT_NS[unit]
    return -total if neg else total


def _as_uint(s: str):
    t = s.replace(",", "")
    return int(t) if t.isascii() and t.isdigit() else None


def _less(a: str, b: str) -> bool:
    """Thanos' cell comparison: as times, else durations, else unsigned integers, else strings."""
    ta, tb = _as_time(a), _as_time(b)
    if ta is not None and tb is not None:
        return ta < tb
    da, db = _as_duration(a), _as_duration(b)
    if da is not None and db is not None:
        return da < db
    ia, ib = _as_uint(a), _as_uint(b)
    if ia is not None and ib is not None:
        return ia < ib
    return a < b


def sort_rows(rows: list[list[str]], sort_by: Sequence[str]) -> list[list[str]]:
    idx = [COLUMNS.index(c) for c in sort_by]

    def cmp(x: list[str], y: list[str]) -> int:
        for i in idx:
            if x[i] == y[i]:
                continue
            return -1 if _less(x[i], y[i]) else 1
        if _less(x[0], y[0]):
            return -1
        return 1 if _less(y[0], x[0]) else 0

    return sorted(rows, key=functools.cmp_to_key(cmp))


def render(metas: Sequence[BlockMeta], cfg: InspectConfig) -> str:
    rows = sort_rows([row(m) for m in metas if matches(m, cfg.selector)], cfg.sort_by)
    if cfg.output == "table":
        return gofmt.table(COLUMNS, rows)
    sep = "\t" if cfg.output == "tsv" else ","
    return "".join(gofmt.csv_line(r, sep) for r in [list(COLUMNS), *rows])


# ---------------------------------------------------------------------------------------------- run

def fetch_metas(bucket, timeout_s: float, filters=()) -> dict[str, BlockMeta]:
    """Every complete block's meta (Thanos' MetaFetcher); a bucket or read error, or running past
    ``timeout_s``, raises. Blocks with a missing or corrupted meta.json are left out (logged)."""
    from ..block import MetaFetcher
    from ..objstore import ObjstoreError

    fetcher = MetaFetcher(bucket, filters=filters)
    box: dict = {}

    def work() -> None:
        try:
            box["res"] = fetcher.fetch()
        except BaseException as e:  # noqa: BLE001  (handed to the caller's thread)
            box["err"] = e

    t = threading.Thread(target=work, name="meta-fetch", daemon=True)
    t.start()
    t.join(timeout_s if timeout_s > 0 else None)
    if t.is_alive():
        raise UserError(f"--timeout: reading block metadata took longer than {gofmt.duration(int(timeout_s * 1e9))}")
    fetcher.close()
    if "err" in box:
        raise box["err"]
    res = box["res"]
    if res.failed:
        u, why = sorted(res.failed.items())[0]
        raise ObjstoreError(f"incomplete view: {len(res.failed)} block metas could not be read; "
                            f"first: {u}: {why}")
    log.info("successfully synchronized block metadata",
             extra={"returned": len(res.metas), "partial": len(res.partial), "corrupted": len(res.corrupted)})
    return res.metas


def inspect(bucket, cfg: InspectConfig, out: TextIO) -> int:
    try:
        metas = fetch_metas(bucket, cfg.timeout_s)
        out.write(render(list(metas.values()), cfg))
        out.flush()
        return 0
    finally:
        bucket.close()
