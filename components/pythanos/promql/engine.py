"""PromQL evaluation on numpy arrays (Prometheus 3.x semantics).

An instant vector is held for all evaluation steps at once: ``labels`` (one
sorted tuple of (name, value) per series), ``V`` (series x steps, float64) and
``P`` (series x steps, bool: a sample exists). A range query evaluates every
node once over the whole step grid; an instant query is the one-step case.
Range windows are ``(T - range, T]`` (left-open, 3.x) found with
``np.searchsorted`` per series; stale markers end a series at lookback time
and are dropped from range selections.
"""
from __future__ import annotations

import concurrent.futures as _cf
import threading
import time as _time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Optional, Protocol, Sequence

import numpy as np
import promql_parser as pp

from ..goregexp import compile_matcher
from ..tsdb.labels import Matcher
from .errors import ExecutionError, ParseError, QueryTimeoutError, TooManySamplesError
from .stop import StopToken, running
from .parse_errors import (invalid_utf8_literals, matcher_value, prometheus_parse_error, protect_regexes,
                           regex_parse_error)

__all__ = ["Engine", "Planned", "Queryable", "MemoryQueryable", "Result", "Sample", "Series", "SelectHints", "STALE_NAN",
           "is_stale_nan", "parse"]

STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
NAME = "__name__"


def is_stale_nan(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).view(np.uint64) == np.uint64(STALE_NAN_BITS)


@dataclass(frozen=True)
class SelectHints:
    """What the engine will do with a selection (Prometheus' ``storage.SelectHints``).

    A remote querier uses it to pick a downsampling resolution (``step``, ``range``), to push a
    function or grouping down, and to narrow the request to ``[start, end]``.  ``start``/``end``
    are the selection window in ms (the same as ``select``'s ``mint_ms``/``maxt_ms``), ``step``
    the evaluation step of the enclosing query or subquery (0 for instant queries), ``range``
    the matrix selector's range in ms (0 for an instant selector), ``func`` the nearest enclosing
    function or aggregation name ("" if a binary operator comes first), ``grouping``/``by`` the
    labels of the aggregation directly enclosing the selector.
    """

    start: int
    end: int
    step: int = 0
    range: int = 0
    func: str = ""
    grouping: tuple = ()
    by: bool = False


class Queryable(Protocol):
    def select(self, matchers: Sequence[Matcher], mint_ms: int, maxt_ms: int,
               hints: Optional[SelectHints] = None) -> list:
        """Series matching all matchers with samples in [mint_ms, maxt_ms]:
        a list of (labels: sorted tuple of (name, value), t: int64 ndarray, v: float64 ndarray).

        May block (a remote fan-out); the engine calls it from its own worker threads, several
        selectors of one query concurrently.  Samples outside [mint_ms, maxt_ms] are tolerated.
        A returned list may carry ``stale_free = True``: no value is a staleness marker (the
        engine then skips its per-series check)."""


class MemoryQueryable:
    """An in-memory Queryable: ``add(labels, t, v)``; samples are kept sorted by time."""

    def __init__(self):
        self._series: dict = {}

    def add(self, labels, t, v) -> None:
        key = tuple(sorted(dict(labels).items()))
        t = np.asarray(t, dtype=np.int64)
        v = np.asarray(v, dtype=np.float64)
        if key in self._series:
            t0, v0 = self._series[key]
            t = np.concatenate([t0, t])
            v = np.concatenate([v0, v])
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        if len(t) > 1:  # last write wins for equal timestamps
            keep = np.ones(len(t), bool)
            keep[:-1] = t[1:] != t[:-1]
            t, v = t[keep], v[keep]
        self._series[key] = (t, v)

    def clear(self) -> None:
        self._series.clear()

    def select(self, matchers: Sequence[Matcher], mint_ms: int, maxt_ms: int,
               hints: Optional[SelectHints] = None) -> list:
        """See :class:`Queryable`; ``hints`` are accepted and ignored."""
        out = []
        for labels, (t, v) in self._series.items():
            d = dict(labels)
            if all(m.matches(d.get(m.name, "")) for m in matchers):
                lo = np.searchsorted(t, mint_ms, "left")
                hi = np.searchsorted(t, maxt_ms, "right")
                if hi > lo:
                    out.append((labels, t[lo:hi], v[lo:hi]))
        return out


# ---------------------------------------------------------------- results

@dataclass
class Sample:
    labels: tuple
    t: int
    v: float


@dataclass
class Series:
    labels: tuple
    t: np.ndarray
    v: np.ndarray


@dataclass
class Result:
    """``type`` is vector/matrix/scalar/string; ``value`` a list of Sample, a list of Series,
    or (t_ms, value) for scalar and string."""

    type: str
    value: object
    warnings: list = field(default_factory=list)
    infos: list = field(default_factory=list)


# ---------------------------------------------------------------- internal values

class VS:
    """Instant vector over the step grid."""
    __slots__ = ("labels", "V", "P", "ordered")

    def __init__(self, labels, V, P, ordered=None):
        self.labels = labels
        self.V = V
        self.P = P
        self.ordered = ordered  # row order for instant results of sort*/topk

    @staticmethod
    def empty(S):
        return VS([], np.zeros((0, S)), np.zeros((0, S), bool))


class SC:
    __slots__ = ("v",)

    def __init__(self, v):
        self.v = v


class ST:
    __slots__ = ("s",)

    def __init__(self, s):
        self.s = s


class RangeArg:
    """A range vector per step: raw samples per series and each step's window [lo, hi) as (series x steps)
    index arrays into that series' samples."""
    __slots__ = ("series", "lo", "hi", "te", "range_ms", "node")

    def __init__(self, series, lo, hi, te, range_ms, node):
        self.series, self.lo, self.hi, self.te, self.range_ms, self.node = series, lo, hi, te, range_ms, node


def _ms(td: timedelta) -> int:
    return (td.days * 86400 + td.seconds) * 1000 + td.microseconds // 1000


class _DroppedName(str):
    """The key of a ``__name__`` that a function or operator dropped, kept until evaluation ends
    (Prometheus 3 delayed name removal, its ``DropName`` flag). It equals, hashes and sorts as
    "__name__", so ``by (__name__)`` and label_replace/label_join still see the name."""

    __slots__ = ()


_DROPPED = _DroppedName(NAME)


def _bounds_at_once(series: list, bounds: np.ndarray, both: np.ndarray) -> bool:
    """Every series' window bounds in one search (a dashboard's many small series): series k's
    timestamps are shifted into their own band ``(k * span, (k + 1) * span)`` so the
    concatenation is sorted, and each bound, shifted into the same band, finds its count there.
    False (nothing written) when the samples are too many to copy or the bands would overflow."""
    got = _concat_times(series)
    if got is None:
        return False
    allt, lens, starts = got
    if not len(allt):
        both[...] = 0
        return True
    found = _band_search(allt, lens, bounds)
    if found is None:
        return False
    found -= starts[:, None]
    both[...] = found
    return True


def _concat_times(series: list) -> Optional[tuple]:
    """``(timestamps, lengths, starts)``: every series' timestamps concatenated (int64), each
    series' length and where it starts; None when they are more than the one-search limit."""
    ts = [t for _, t, _ in series]
    lens = np.fromiter(map(len, ts), np.int64, len(ts))
    if int(lens.sum()) > _BOUNDS_AT_ONCE_SAMPLES:
        return None
    allt = np.concatenate(ts).astype(np.int64, copy=False) if ts else np.empty(0, np.int64)
    return allt, lens, np.cumsum(lens) - lens


def _latest_at_once(batch: list, te: np.ndarray, cut: np.ndarray, V: np.ndarray, P: np.ndarray,
                    T: Optional[np.ndarray], row: int) -> bool:
    """An instant selector's rows ``row...`` for a batch of many small series in a few array
    operations: each step's latest sample at or before ``te`` and after ``cut`` (not a staleness
    marker), as the per-series loop in ``vector_selector`` finds it. False (nothing written)
    when the batch is too big to copy or its bands would overflow."""
    got = _concat_times(batch)
    if got is None or not len(got[0]):
        return False
    allt, lens, starts = got
    found = _band_search(allt, lens, te)
    if found is None:
        return False
    ok = P[row:row + len(batch)]
    np.greater(found, starts[:, None], out=ok)  # a sample at or before the step in its own series
    found -= 1
    np.maximum(found, 0, out=found)  # where there is none, any index in range (masked out)
    tt = allt[found]
    vv = V[row:row + len(batch)]
    np.take(np.concatenate([v for _, _, v in batch]).astype(np.float64, copy=False), found, out=vv)
    ok &= tt > cut
    if np.isnan(vv).any():
        ok &= ~is_stale_nan(vv)
    if T is not None:
        T[row:row + len(batch)] = tt
    return True


def _band_search(allt: np.ndarray, lens: np.ndarray, bounds: np.ndarray) -> Optional[np.ndarray]:
    """``found[k, j]``: where ``bounds[j]`` goes (``"right"``) in the concatenation ``allt`` of
    every series' sorted timestamps, searched within series k only (``lens``: the series'
    lengths; at least one sample in all). None when the bands would overflow int64."""
    lo = min(int(allt.min()), int(bounds.min()))
    span = max(int(allt.max()), int(bounds.max())) - lo + 2
    if span * (len(lens) + 1) >= 1 << 62:
        return None
    band = np.arange(len(lens), dtype=np.int64) * span
    keys = allt - (lo - 1)
    keys += np.repeat(band, lens)
    bkeys = (bounds.astype(np.int64) - (lo - 1))[None, :] + band[:, None]
    return np.searchsorted(keys, bkeys.ravel(), "right").reshape(bkeys.shape)


_BOUNDS_AT_ONCE_SAMPLES = 1 << 20
_STALE_SCAN_BATCH = 1 << 16  # samples: up to this many, all series are scanned in one go


def _without_stale(found) -> list:
    """A selection's series without staleness markers (a range vector never holds them), and
    without the series left empty."""
    if getattr(found, "stale_free", False):
        return [x for x in found if len(x[1])]
    if not isinstance(found, list):
        found = list(found)
    if 1 < len(found) and sum(len(x[2]) for x in found) <= _STALE_SCAN_BATCH:
        # many small series (a dashboard's): one scan for markers over all of them; usually none
        allv = np.concatenate([np.asarray(x[2], dtype=np.float64) for x in found])
        if not (allv.view(np.uint64) == np.uint64(STALE_NAN_BITS)).any():
            return [x for x in found if len(x[1])]
    series = []
    for lab, t, v in found:
        st = is_stale_nan(v)
        if st.any():
            t, v = t[~st], v[~st]
        if len(t):
            series.append((lab, t, v))
    return series


def _drop_name(labels: tuple, delayed: bool = False) -> tuple:
    """Remove ``__name__`` now, or with delayed name removal mark it for removal at the end."""
    if delayed:
        return tuple((_DROPPED, v) if k == NAME else (k, v) for k, v in labels)
    return tuple(kv for kv in labels if kv[0] != NAME)


def _keep_name(labels: tuple) -> tuple:
    """Clear a pending removal: the result keeps its name (comparisons, label_replace of __name__)."""
    return tuple((NAME, v) if k == NAME else (k, v) for k, v in labels)


def _has_dropped(labels: tuple) -> bool:
    return any(type(k) is _DroppedName for k, _ in labels)


def _finish_names(val: "VS") -> "VS":
    """End of evaluation: names marked for removal go now; series that become equal merge (or clash)."""
    if not any(_has_dropped(l) for l in val.labels):
        return val
    val.labels = [_drop_name(l) if _has_dropped(l) else l for l in val.labels]
    return val


def _labels_str(labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


def parse(query: str):
    try:
        expr = pp.parse(query)
    except BaseException as e:  # ValueError, or a panic from the Rust side
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        msg = str(e).strip() or "invalid promql query"
        expr = _parse_go_regexes(query, msg)
        if expr is None:
            raise ParseError(prometheus_parse_error(query, msg)) from None
    _check_regexes(query, expr)
    return expr


def _parse_go_regexes(query: str, msg: str):
    """The syntax tree of a query promql-parser rejected only for a matcher regex that Go's
    syntax accepts (the Rust regex crate's differs): parsed again with the regexes as
    placeholders (see :func:`parse_errors.protect_regexes`), or None."""
    if not msg.startswith("illegal regex for "):
        return None
    try:
        compile_matcher(msg[len("illegal regex for "):])
    except ValueError:
        return None  # Go rejects it too: a parse error
    protected = protect_regexes(query)
    if protected is None:
        return None
    try:
        return pp.parse(protected)
    except BaseException as e:  # noqa: BLE001 - the first error is the one to report
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return None


def _check_regexes(query: str, expr) -> None:
    """Matcher regexes checked as Prometheus' parser checks them (Go's regexp syntax, which the
    Rust parser's regex crate does not share: ``a**`` or ``(?x)`` pass there)."""
    stack = [expr]
    while stack:
        n = stack.pop()
        if isinstance(n, pp.MatrixSelector):
            n = n.vector_selector
        if isinstance(n, pp.VectorSelector):
            ms = []
            for m in n.matchers.matchers:
                if str(m.op) in ("MatchOp.Re", "MatchOp.NotRe"):
                    v = matcher_value(m.value)
                    try:
                        ms.append(Matcher("=~", m.name, v))
                    except ValueError as e:
                        raise ParseError(regex_parse_error(query, v, str(e))) from None
                    if v is not m.value and not n.name and all(
                            mm.matches("") for mm in _matchers(n)):  # as the parser checks it
                        raise ParseError(prometheus_parse_error(
                            query, "vector selector must contain at least one non-empty matcher"))
        elif isinstance(n, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
            stack.append(n.expr)
        elif isinstance(n, pp.BinaryExpr):
            stack.extend((n.rhs, n.lhs))
        elif isinstance(n, pp.AggregateExpr):
            stack.append(n.expr)
            if n.param is not None:
                stack.append(n.param)
        elif isinstance(n, pp.Call):
            stack.extend(reversed(n.args))


_MATCH_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def _matchers(vs) -> list:
    out = []
    if vs.name:
        out.append(Matcher("=", NAME, vs.name))
    for m in vs.matchers.matchers:
        out.append(Matcher(_MATCH_OPS[str(m.op)], m.name, matcher_value(m.value)))
    return out


def _at_ms(at, ctx) -> Optional[int]:
    if at is None:
        return None
    t = at.type
    if t == pp.AtModifierType.Start:
        return ctx.start
    if t == pp.AtModifierType.End:
        return ctx.end
    try:
        d = at.at
        return _ms(d - _EPOCH)
    except BaseException:
        s = str(at).split()[-1]
        return int(round(float(s) * 1000))


# ---------------------------------------------------------------- window kernels

def _reduce_windows(ufunc, v, lo, hi, empty):
    """ufunc-reduce v[lo:hi] for every window; windows with lo >= hi get ``empty``."""
    S = len(lo)
    out = np.full(S, empty, dtype=np.float64)
    ok = hi > lo
    if not ok.any() or len(v) == 0:
        return out
    ext = np.append(v, 0.0)
    idx = np.empty(2 * int(ok.sum()), dtype=np.int64)
    idx[0::2] = lo[ok]
    idx[1::2] = hi[ok]
    r = ufunc.reduceat(ext, idx)
    out[ok] = r[0::2]
    return out


class _Ctx:
    __slots__ = ("q", "start", "end", "lookback", "stop", "max_samples", "warnings", "infos", "samples",
                 "sub_step", "step", "plan", "futures", "bad_utf8", "delayed")

    def __init__(self, q, start, end, lookback, stop: StopToken, max_samples, sub_step, step=0):
        self.q, self.start, self.end, self.lookback = q, start, end, lookback
        self.stop, self.max_samples, self.sub_step = stop, max_samples, sub_step
        self.step = step
        self.warnings, self.infos, self.samples = [], [], 0
        self.plan: dict = {}      # id(selector node) -> _Planned
        self.futures: dict = {}   # id(selector node) -> Future of a prefetched select
        self.bad_utf8: frozenset = frozenset()  # string literals Go would decode to invalid UTF-8
        self.delayed = False  # delayed __name__ removal (Engine.delayed_name_removal)

    @property
    def deadline(self) -> Optional[float]:
        return self.stop.deadline

    def check(self):
        self.stop.check()

    def remaining(self) -> Optional[float]:
        return self.stop.remaining()


class _Planned:
    """One selector's static selection (Prometheus' populateSeries): matchers, window and hints."""
    __slots__ = ("node", "matchers", "mint", "maxt", "hints")

    def __init__(self, node, matchers, mint, maxt, hints):
        self.node, self.matchers, self.mint, self.maxt, self.hints = node, matchers, mint, maxt, hints


def _static_te(n, s: int, e: int, ctx: _Ctx) -> tuple:
    """Bounds of a selector's or subquery's effective times when its parent is evaluated over [s, e]."""
    at = _at_ms(n.at, ctx)
    off = _ms(n.offset) if n.offset is not None else 0
    if at is not None:
        return at - off, at - off
    return s - off, e - off


def _path_func(path: list) -> str:
    """Nearest enclosing function or aggregation; a binary operator stops the search (extractFuncFromPath)."""
    for p in reversed(path):
        if isinstance(p, pp.AggregateExpr):
            return str(p.op)
        if isinstance(p, pp.Call):
            return p.func.name
        if isinstance(p, pp.BinaryExpr):
            return ""
    return ""


def _path_grouping(path: list) -> tuple:
    """(by, grouping) of an aggregation that directly encloses the selector (extractGroupsFromPath)."""
    if path and isinstance(path[-1], pp.AggregateExpr):
        mod = path[-1].modifier
        if mod is None:  # by = !Without: a plain sum(x) is "by ()"
            return True, ()
        return str(mod.type) != "AggModifierType.Without", tuple(mod.labels or ())
    return False, ()


def _plan(expr, ctx: _Ctx) -> dict:
    """Every selector of the query with its selection window and hints, keyed by ``id(node)``."""
    plan: dict = {}

    def visit(n, path, s, e, step):
        if isinstance(n, pp.ParenExpr):
            visit(n.expr, path + [n], s, e, step)
        elif isinstance(n, pp.VectorSelector):
            lo, hi = _static_te(n, s, e, ctx)
            mint, maxt = lo - ctx.lookback + 1, hi
            by, grouping = _path_grouping(path)
            h = SelectHints(mint, maxt, step, 0, _path_func(path), grouping, by)
            plan[id(n)] = _Planned(n, _matchers(n), mint, maxt, h)
        elif isinstance(n, pp.MatrixSelector):
            vs = n.vector_selector
            rng = _ms(n.range)
            lo, hi = _static_te(vs, s, e, ctx)
            mint, maxt = lo - rng + 1, hi
            h = SelectHints(mint, maxt, step, rng, _path_func(path), (), False)
            plan[id(n)] = _Planned(n, _matchers(vs), mint, maxt, h)
        elif isinstance(n, pp.SubqueryExpr):
            rng = _ms(n.range)
            sub = _ms(n.step) if n.step is not None else 0
            if sub <= 0:
                sub = ctx.sub_step
            lo, hi = _static_te(n, s, e, ctx)
            visit(n.expr, path + [n], lo - rng, hi, sub)
        elif isinstance(n, pp.UnaryExpr):
            visit(n.expr, path + [n], s, e, step)
        elif isinstance(n, pp.BinaryExpr):
            visit(n.lhs, path + [n], s, e, step)
            visit(n.rhs, path + [n], s, e, step)
        elif isinstance(n, pp.AggregateExpr):
            if n.param is not None:
                visit(n.param, path + [n], s, e, step)
            visit(n.expr, path + [n], s, e, step)
        elif isinstance(n, pp.Call):
            for a in n.args:
                visit(a, path + [n], s, e, step)

    visit(expr, [], ctx.start, ctx.end, ctx.step)
    return plan


# ---------------------------------------------------------------- engine

class Engine:
    """``Engine(lookback_delta_ms=300000, max_samples=50_000_000, timeout_s=120)``.

    ``delayed_name_removal`` is Prometheus' ``promql-delayed-name-removal`` feature (off by default in
    the server, on in its promqltest engine): functions and operators mark ``__name__`` for removal
    and it goes when evaluation ends, so ``by (__name__)`` and label functions can still use it.

    Before evaluating, all selectors of a query are selected concurrently on a small thread pool
    (``select_concurrency``), as Prometheus issues every ``Select`` before evaluation: a remote
    queryable then fans out once per selector in parallel instead of one selector after another.
    """

    def __init__(self, lookback_delta_ms: int = 300_000, max_samples: Optional[int] = 50_000_000,
                 timeout_s: Optional[float] = 120.0, default_subquery_step_ms: int = 60_000,
                 select_concurrency: int = 8, delayed_name_removal: bool = False):
        self.lookback_delta_ms = int(lookback_delta_ms)
        self.delayed_name_removal = bool(delayed_name_removal)
        self.max_samples = max_samples
        self.timeout_s = timeout_s
        self.default_subquery_step_ms = default_subquery_step_ms
        self.select_concurrency = max(1, int(select_concurrency))
        self._pool: Optional[_cf.ThreadPoolExecutor] = None
        self._pool_lock = threading.Lock()

    @staticmethod
    def parse_check(query: str) -> None:
        """Raise :class:`ParseError` (Prometheus' wording and position) if ``query`` does not parse."""
        parse(query)

    def close(self) -> None:
        """Stop the select thread pool (running selects finish)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _executor(self) -> _cf.ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = _cf.ThreadPoolExecutor(self.select_concurrency, thread_name_prefix="promql-select")
            return self._pool

    def _ctx(self, q, start, end, lookback_delta_ms, step=0, stop: Optional[StopToken] = None):
        """The query's context; ``stop`` is the caller's (its deadline wins), else one ending
        ``timeout_s`` from now."""
        if stop is None:
            stop = StopToken.after(self.timeout_s)
        elif stop.deadline is None and self.timeout_s:
            stop.deadline = _time.monotonic() + self.timeout_s
        lb = int(lookback_delta_ms) if lookback_delta_ms else self.lookback_delta_ms
        ctx = _Ctx(q, start, end, lb, stop, self.max_samples, self.default_subquery_step_ms, step)
        ctx.delayed = self.delayed_name_removal
        return ctx

    def _prepare(self, expr, ctx: _Ctx, query: str = "") -> None:
        """Plan every selector and start their selects concurrently.

        A lone selector on the in-memory queryable is selected inline (nothing to overlap, nothing
        that blocks); otherwise the pool lets the deadline interrupt a select that hangs."""
        ctx.bad_utf8 = invalid_utf8_literals(query)
        ctx.plan = _plan(expr, ctx)
        if not ctx.plan or (len(ctx.plan) == 1 and (ctx.deadline is None or type(ctx.q) is MemoryQueryable)):
            return
        pool = self._executor()
        for key, pl in ctx.plan.items():
            ctx.futures[key] = pool.submit(ctx.q.select, pl.matchers, pl.mint, pl.maxt, hints=pl.hints)

    @staticmethod
    def _finish(ctx: _Ctx) -> None:
        for f in ctx.futures.values():
            f.cancel()
        ctx.futures.clear()

    def instant(self, query: str, time_ms: int, queryable, lookback_delta_ms: Optional[int] = None,
                stop: Optional[StopToken] = None) -> Result:
        expr = parse(query)
        time_ms = int(time_ms)
        ctx = self._ctx(queryable, time_ms, time_ms, lookback_delta_ms, stop=stop)
        try:
            self._prepare(expr, ctx, query)
            with running(ctx.stop):
                return self._instant(expr, time_ms, ctx)
        finally:
            self._finish(ctx)

    # -- two phases: plan now, select elsewhere (an event loop), evaluate with what was selected --
    def plan_instant(self, query: str, time_ms: int, queryable, lookback_delta_ms: Optional[int] = None,
                     expr=None, stop: Optional[StopToken] = None) -> "Planned":
        """An instant query parsed (unless ``expr`` is its syntax tree already) and planned,
        nothing selected yet (see :class:`Planned`). ``stop``: the query's deadline and cancel
        flag, when the caller has one (see :meth:`_ctx`)."""
        expr = parse(query) if expr is None else expr
        time_ms = int(time_ms)
        ctx = self._ctx(queryable, time_ms, time_ms, lookback_delta_ms, stop=stop)
        ctx.bad_utf8 = invalid_utf8_literals(query)
        ctx.plan = _plan(expr, ctx)
        return Planned(ctx, lambda: self._instant(expr, time_ms, ctx))

    def plan_range(self, query: str, start_ms: int, end_ms: int, step_ms: int, queryable,
                   lookback_delta_ms: Optional[int] = None, expr=None,
                   stop: Optional[StopToken] = None) -> "Planned":
        """A range query parsed (unless ``expr`` is its syntax tree already), checked and
        planned, nothing selected yet (see :class:`Planned`; ``stop`` as for :meth:`plan_instant`)."""
        expr = parse(query) if expr is None else expr
        start_ms, end_ms, step_ms = int(start_ms), int(end_ms), int(step_ms)
        node = self._check_range(expr, start_ms, end_ms, step_ms)
        ctx = self._ctx(queryable, start_ms, end_ms, lookback_delta_ms, step_ms, stop=stop)
        ctx.bad_utf8 = invalid_utf8_literals(query)
        ctx.plan = _plan(expr, ctx)
        return Planned(ctx, lambda: self._range(node, start_ms, end_ms, step_ms, ctx))

    @staticmethod
    def _check_range(expr, start_ms: int, end_ms: int, step_ms: int):
        if step_ms <= 0:
            raise ParseError("zero or negative query resolution step widths are not accepted. Try a positive integer")
        if end_ms < start_ms:
            raise ParseError("end timestamp must not be before start time")
        node = _unparen(expr)
        rt = _value_type(node)
        if rt not in ("vector", "scalar"):
            raise ParseError(f"invalid expression type \"{'range vector' if rt == 'matrix' else rt}\" for range query, "
                             "must be Scalar or instant Vector")
        return node

    def _instant(self, expr, time_ms: int, ctx: _Ctx) -> Result:
        ts = np.array([time_ms], dtype=np.int64)
        ev = _Evaluator(ctx)
        node = _unparen(expr)
        if isinstance(node, (pp.MatrixSelector, pp.SubqueryExpr)):
            ra = ev.range_arg(node, ts)
            out = []
            sub = isinstance(node, pp.SubqueryExpr)
            # views, not copies: selections are the querier's own arrays (its decode pool keeps a
            # buffer from reuse while any view of it is alive)
            for (labels, t, v), lo, hi in zip(ra.series, ra.lo[:, 0].tolist(), ra.hi[:, 0].tolist()):
                if hi > lo:
                    if sub and _has_dropped(labels):  # a subquery over a name-dropping expression
                        labels = _drop_name(labels)
                    out.append(Series(labels, t[lo:hi], v[lo:hi]))
            out.sort(key=lambda s: s.labels)
            return Result("matrix", out, ctx.warnings, ctx.infos)
        val = ev.eval(node, ts)
        ctx.check()
        if isinstance(val, SC):
            return Result("scalar", (time_ms, float(val.v[0])), ctx.warnings, ctx.infos)
        if isinstance(val, ST):
            return Result("string", (time_ms, val.s), ctx.warnings, ctx.infos)
        _check_dupes(_finish_names(val))
        rows = val.ordered if val.ordered is not None else range(len(val.labels))
        out = [Sample(val.labels[i], time_ms, float(val.V[i, 0])) for i in rows if val.P[i, 0]]
        return Result("vector", out, ctx.warnings, ctx.infos)

    def range(self, query: str, start_ms: int, end_ms: int, step_ms: int, queryable,
              lookback_delta_ms: Optional[int] = None, stop: Optional[StopToken] = None) -> Result:
        expr = parse(query)
        start_ms, end_ms, step_ms = int(start_ms), int(end_ms), int(step_ms)
        node = self._check_range(expr, start_ms, end_ms, step_ms)
        ctx = self._ctx(queryable, start_ms, end_ms, lookback_delta_ms, step_ms, stop=stop)
        try:
            self._prepare(expr, ctx, query)
            with running(ctx.stop):
                return self._range(node, start_ms, end_ms, step_ms, ctx)
        finally:
            self._finish(ctx)

    @staticmethod
    def _range(node, start_ms: int, end_ms: int, step_ms: int, ctx: _Ctx) -> Result:
        ts = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        val = _Evaluator(ctx).eval(node, ts)
        ctx.check()
        if isinstance(val, SC):
            return Result("matrix", [Series((), ts.copy(), val.v.astype(np.float64))], ctx.warnings, ctx.infos)
        _check_dupes(_finish_names(val))
        out = []
        for i, labels in enumerate(val.labels):
            p = val.P[i]
            if p.any():
                out.append(Series(labels, ts[p], val.V[i][p]))
        out.sort(key=lambda s: s.labels)
        return Result("matrix", out, ctx.warnings, ctx.infos)


class Planned:
    """A query between its two phases: :attr:`selections` says what to select, :meth:`evaluate`
    evaluates with the caller's results for them.

    The querier selects on its event loop (one fan-out per selection, all at once) and, for a
    small query, evaluates right there: no worker thread, no hand-over of the GIL. A selection
    the plan does not cover (rare: a window the static plan could not bound) goes to
    ``queryable.select`` during evaluation, so :meth:`evaluate` must then run where that may
    block."""

    def __init__(self, ctx: _Ctx, run) -> None:
        self._ctx = ctx
        self._run = run

    @property
    def selections(self) -> list:
        """``(key, matchers, mint_ms, maxt_ms, hints)`` for every selector of the query."""
        return [(k, p.matchers, p.mint, p.maxt, p.hints) for k, p in self._ctx.plan.items()]

    @property
    def stop(self) -> StopToken:
        """The query's deadline and cancel flag."""
        return self._ctx.stop

    def cancel(self) -> None:
        """Stop an evaluation running elsewhere at its next check (it raises QueryCanceledError)."""
        self._ctx.stop.cancel()

    def evaluate(self, selected) -> Result:
        """Evaluate with ``selected[key]`` as the result of each selection (missing keys are
        selected through the queryable). ``selected`` may be a callable returning that dict: it
        then runs under the query's stop token too (the querier decodes there)."""
        ctx = self._ctx
        with running(ctx.stop):
            if callable(selected):
                selected = selected()
            for key, found in selected.items():
                f: _cf.Future = _cf.Future()
                f.set_result(found)
                ctx.futures[key] = f
            try:
                return self._run()
            finally:
                Engine._finish(ctx)


def _unparen(n):
    while isinstance(n, pp.ParenExpr):
        n = n.expr
    return n


def _value_type(n) -> str:
    n = _unparen(n)
    if isinstance(n, (pp.MatrixSelector, pp.SubqueryExpr)):
        return "matrix"
    if isinstance(n, pp.StringLiteral):
        return "string"
    if isinstance(n, pp.NumberLiteral):
        return "scalar"
    if isinstance(n, pp.VectorSelector) or isinstance(n, pp.AggregateExpr):
        return "vector"
    if isinstance(n, pp.UnaryExpr):
        return _value_type(n.expr)
    if isinstance(n, pp.Call):
        rt = str(n.func.return_type)
        return {"ValueType.Scalar": "scalar", "ValueType.Matrix": "matrix",
                "ValueType.String": "string"}.get(rt, "vector")
    if isinstance(n, pp.BinaryExpr):
        if _value_type(n.lhs) == "scalar" and _value_type(n.rhs) == "scalar":
            return "scalar"
        return "vector"
    return "vector"


def _check_dupes(val: VS, msg="vector cannot contain metrics with the same labelset"):
    """Merge rows with identical labels; overlapping samples at one step are an error."""
    seen = {}
    dup = False
    for i, l in enumerate(val.labels):
        if l in seen:
            dup = True
            seen[l].append(i)
        else:
            seen[l] = [i]
    if not dup:
        return val
    labels, Vs, Ps = [], [], []
    for l, rows in seen.items():
        if len(rows) == 1:
            labels.append(l); Vs.append(val.V[rows[0]]); Ps.append(val.P[rows[0]])
            continue
        P = val.P[rows]
        if (P.sum(axis=0) > 1).any():
            raise ExecutionError(msg)
        idx = np.argmax(P, axis=0)
        labels.append(l)
        Vs.append(val.V[rows][idx, np.arange(P.shape[1])])
        Ps.append(P.any(axis=0))
    S = val.V.shape[1]
    val.labels = labels
    val.V = np.array(Vs).reshape(len(labels), S)
    val.P = np.array(Ps, dtype=bool).reshape(len(labels), S)
    val.ordered = None
    return val


from . import functions as _fn  # noqa: E402  (functions need the types above)


class _Evaluator:
    def __init__(self, ctx: _Ctx):
        self.ctx = ctx
        self.delayed = ctx.delayed

    # ---- dispatch
    def eval(self, n, ts):
        self.ctx.check()
        n = _unparen(n)
        if isinstance(n, pp.NumberLiteral):
            return SC(np.full(len(ts), float(n.val)))
        if isinstance(n, pp.StringLiteral):
            return ST(n.val)
        if isinstance(n, pp.VectorSelector):
            return self.vector_selector(n, ts)
        if isinstance(n, (pp.MatrixSelector, pp.SubqueryExpr)):
            raise ExecutionError("range vector cannot be evaluated as an instant vector")
        if isinstance(n, pp.UnaryExpr):
            v = self.eval(n.expr, ts)
            if isinstance(v, SC):
                return SC(-v.v)
            return VS([_drop_name(l, self.delayed) for l in v.labels], -v.V, v.P)
        if isinstance(n, pp.BinaryExpr):
            return _fn.binary(self, n, ts)
        if isinstance(n, pp.AggregateExpr):
            return _fn.aggregate(self, n, ts)
        if isinstance(n, pp.Call):
            return _fn.call(self, n, ts)
        raise ExecutionError(f"unsupported expression {type(n).__name__}")

    def select(self, node, vs, mint: int, maxt: int, rng: int) -> list:
        """The selection for ``node`` (its vector selector ``vs``): its prefetched result when that
        covers [mint, maxt], else a fresh select."""
        ctx = self.ctx
        key = id(node)
        pl = ctx.plan.get(key)
        fut = ctx.futures.pop(key, None)
        if fut is not None and pl is not None and pl.mint <= mint and maxt <= pl.maxt:
            try:
                found = fut.result(timeout=ctx.remaining())
            except _cf.TimeoutError:
                raise QueryTimeoutError("query timed out in expression evaluation") from None
            ctx.check()
            return found
        if fut is not None:
            fut.cancel()
        if pl is not None:
            h = pl.hints
            hints = SelectHints(mint, maxt, h.step, rng, h.func, h.grouping, h.by)
        else:
            hints = SelectHints(mint, maxt, ctx.step, rng)
        found = ctx.q.select(_matchers(vs), mint, maxt, hints=hints)
        ctx.check()
        return found

    def count_samples(self, k):
        self.ctx.samples += int(k)
        if self.ctx.max_samples is not None and self.ctx.samples > self.ctx.max_samples:
            raise TooManySamplesError()

    # ---- selectors
    def _eff_times(self, n, ts):
        at = _at_ms(n.at, self.ctx)
        off = _ms(n.offset) if n.offset is not None else 0
        base = np.full(len(ts), at, dtype=np.int64) if at is not None else ts
        return base - off

    def vector_selector(self, n, ts, with_ts=False):
        te = self._eff_times(n, ts)
        lb = self.ctx.lookback
        S = len(ts)
        found = self.select(n, n, int(te.min()) - lb + 1, int(te.max()), 0)
        N = len(found)  # at most this many series come (a lazy selection skips empty ones)
        V = np.empty((N, S), dtype=np.float64)
        P = np.empty((N, S), dtype=bool)
        T = np.empty((N, S), dtype=np.int64) if with_ts else None
        cut = te - lb
        labels = []
        i = 0
        # one pass: a lazy selection decodes batch by batch while this reads it
        check = self.ctx.check
        batches = found.batches() if hasattr(found, "batches") else (found if isinstance(found, list) else list(found),)
        for batch in batches:
            check()
            if len(batch) >= 8 and _latest_at_once(batch, te, cut, V, P, T, i):
                labels.extend(lab for lab, _, _ in batch)
                i += len(batch)
                continue
            for lab, t, v in batch:
                if not i & 1023:
                    check()
                labels.append(lab)
                idx = np.searchsorted(t, te, "right")
                idx -= 1
                ok = P[i]
                np.greater_equal(idx, 0, out=ok)
                np.maximum(idx, 0, out=idx)
                tt = t[idx]
                np.take(v, idx, out=V[i])
                ok &= tt > cut
                if np.isnan(V[i]).any():  # stale markers are NaNs; the bit test only when there are any
                    ok &= ~is_stale_nan(V[i])
                if with_ts:
                    T[i] = tt
                i += 1
        if i < N:
            V, P = V[:i], P[:i]
            if with_ts:
                T = T[:i]
        keep = P.any(axis=1)
        labels = [lab for lab, k in zip(labels, keep) if k]
        if not keep.all():
            V, P = V[keep], P[keep]
            if with_ts:
                T = T[keep]
        self.count_samples(int(P.sum()))
        if with_ts:
            return VS(labels, V, P), T
        return VS(labels, V, P)

    def range_arg_parts(self, n, ts):
        """:meth:`range_arg` in parts of consecutive series, one per batch of a lazy selection,
        for callers that are done with a part before they take the next (range functions):
        then only one batch of samples is decoded at a time."""
        n = _unparen(n)
        found = None
        if isinstance(n, pp.MatrixSelector):
            vs = n.vector_selector
            rng = _ms(n.range)
            te = self._eff_times(vs, ts)
            found = self.select(n, vs, int(te.min()) - rng + 1, int(te.max()), rng)
        if found is None or not hasattr(found, "batches"):
            yield self.range_arg(n, ts) if found is None else self._range_bounds(_without_stale(found), te, rng, n)
            return
        it = found.batches()
        first = True
        while True:
            batch = next(it, None)
            if batch is None:
                if first:  # nothing selected: one empty part, as range_arg answers
                    yield self._range_bounds([], te, rng, n)
                return
            first = False
            self.ctx.check()
            ra = self._range_bounds(_without_stale(batch), te, rng, n)
            del batch
            yield ra
            del ra

    def range_arg(self, n, ts) -> RangeArg:
        n = _unparen(n)
        if isinstance(n, pp.MatrixSelector):
            vs = n.vector_selector
            rng = _ms(n.range)
            te = self._eff_times(vs, ts)
            found = self.select(n, vs, int(te.min()) - rng + 1, int(te.max()), rng)
            if hasattr(found, "batches"):
                series = [x for batch in found.batches() for x in _without_stale(batch)]
            else:
                series = _without_stale(found)
        elif isinstance(n, pp.SubqueryExpr):
            rng = _ms(n.range)
            step = _ms(n.step) if n.step is not None else self.ctx.sub_step
            if step <= 0:
                step = self.ctx.sub_step
            te = self._eff_times(n, ts)
            mint = int(te.min()) - rng
            first = step * (mint // step)
            if first <= mint:
                first += step
            inner_ts = np.arange(first, int(te.max()) + 1, step, dtype=np.int64)
            if len(inner_ts) == 0:
                series = []
            else:
                val = self.eval(n.expr, inner_ts)
                if isinstance(val, SC):
                    raise ExecutionError("subquery is only allowed on instant vector")
                _check_dupes(val)
                series = []
                for i, lab in enumerate(val.labels):
                    p = val.P[i]
                    if p.any():
                        series.append((lab, inner_ts[p], val.V[i][p]))
        else:
            raise ExecutionError("expected a range vector")
        return self._range_bounds(series, te, rng, n)

    def _range_bounds(self, series: list, te, rng: int, n) -> RangeArg:
        """Each step's window ``(te - rng, te]`` as index bounds into every series' samples
        (int32 when every series is shorter than 2^31 samples: half the memory)."""
        S = len(te)
        longest = max((len(t) for _, t, _ in series), default=0)
        both = np.empty((len(series), 2 * S), dtype=np.int32 if longest < 2**31 - 1 else np.int64)
        bounds = np.concatenate([te - rng, te])
        if len(series) < 8 or not _bounds_at_once(series, bounds, both):
            for k, (lab, t, v) in enumerate(series):
                both[k] = np.searchsorted(t, bounds, "right")
        los, his = both[:, :S], both[:, S:]
        self.count_samples(int(his.sum(dtype=np.int64)) - int(los.sum(dtype=np.int64)))
        return RangeArg(series, los, his, te, rng, n)
