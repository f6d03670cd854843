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

import math
import time as _time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import promql_parser as pp

from ..tsdb.labels import Matcher
from .errors import ExecutionError, ParseError, PromQLError, QueryTimeoutError, TooManySamplesError
from .format import format_float

__all__ = ["Engine", "Queryable", "MemoryQueryable", "Result", "Sample", "Series", "STALE_NAN",
           "is_stale_nan", "parse"]

STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
NAME = "__name__"


def is_stale_nan(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).view(np.uint64) == np.uint64(STALE_NAN_BITS)


class Queryable(Protocol):
    def select(self, matchers: Sequence[Matcher], mint_ms: int, maxt_ms: int) -> list:
        """Series matching all matchers with samples in [mint_ms, maxt_ms]:
        a list of (labels: sorted tuple of (name, value), t: int64 ndarray, v: float64 ndarray)."""


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

    def select(self, matchers, mint_ms, maxt_ms):
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
    """A range vector per step: raw samples per series and each step's window [lo, hi)."""
    __slots__ = ("series", "lo", "hi", "te", "range_ms", "node")

    def __init__(self, series, lo, hi, te, range_ms, node):
        self.series, self.lo, self.hi, self.te, self.range_ms, self.node = series, lo, hi, te, range_ms, node


def _ms(td: timedelta) -> int:
    return (td.days * 86400 + td.seconds) * 1000 + td.microseconds // 1000


def _drop_name(labels: tuple) -> tuple:
    return tuple(kv for kv in labels if kv[0] != NAME)


def _labels_str(labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


def parse(query: str):
    try:
        return pp.parse(query)
    except BaseException as e:  # ValueError, or a panic from the Rust side
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        msg = str(e).strip() or "invalid promql query"
        raise ParseError(f"1:1: parse error: {msg}") from None


_MATCH_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def _matchers(vs) -> list:
    out = []
    if vs.name:
        out.append(Matcher("=", NAME, vs.name))
    for m in vs.matchers.matchers:
        out.append(Matcher(_MATCH_OPS[str(m.op)], m.name, m.value))
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

def _windows(t, te, range_ms):
    lo = np.searchsorted(t, te - range_ms, "right")
    hi = np.searchsorted(t, te, "right")
    return lo, hi


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


def _kahan_windows(v, lo, hi):
    """Sum over windows; falls back to exact per-window sums when non-finite values are present."""
    return _reduce_windows(np.add, v, lo, hi, 0.0)


class _Ctx:
    __slots__ = ("q", "start", "end", "lookback", "deadline", "max_samples", "warnings", "infos", "samples",
                 "sub_step")

    def __init__(self, q, start, end, lookback, deadline, max_samples, sub_step):
        self.q, self.start, self.end, self.lookback = q, start, end, lookback
        self.deadline, self.max_samples, self.sub_step = deadline, max_samples, sub_step
        self.warnings, self.infos, self.samples = [], [], 0

    def check(self):
        if self.deadline is not None and _time.monotonic() > self.deadline:
            raise QueryTimeoutError("query timed out in expression evaluation")


# ---------------------------------------------------------------- engine

class Engine:
    """``Engine(lookback_delta_ms=300000, max_samples=50_000_000, timeout_s=120)``."""

    def __init__(self, lookback_delta_ms: int = 300_000, max_samples: int = 50_000_000,
                 timeout_s: Optional[float] = 120.0, default_subquery_step_ms: int = 60_000):
        self.lookback_delta_ms = int(lookback_delta_ms)
        self.max_samples = max_samples
        self.timeout_s = timeout_s
        self.default_subquery_step_ms = default_subquery_step_ms

    def _ctx(self, q, start, end, lookback_delta_ms):
        dl = _time.monotonic() + self.timeout_s if self.timeout_s else None
        lb = int(lookback_delta_ms) if lookback_delta_ms else self.lookback_delta_ms
        return _Ctx(q, start, end, lb, dl, self.max_samples, self.default_subquery_step_ms)

    def instant(self, query: str, time_ms: int, queryable, lookback_delta_ms: Optional[int] = None) -> Result:
        expr = parse(query)
        time_ms = int(time_ms)
        ctx = self._ctx(queryable, time_ms, time_ms, lookback_delta_ms)
        ts = np.array([time_ms], dtype=np.int64)
        ev = _Evaluator(ctx)
        node = _unparen(expr)
        if isinstance(node, (pp.MatrixSelector, pp.SubqueryExpr)):
            ra = ev.range_arg(node, ts)
            out = []
            for k, (labels, t, v) in enumerate(ra.series):
                lo, hi = ra.lo[k][0], ra.hi[k][0]
                if hi > lo:
                    out.append(Series(labels, t[lo:hi].copy(), v[lo:hi].copy()))
            out.sort(key=lambda s: s.labels)
            return Result("matrix", out, ctx.warnings, ctx.infos)
        val = ev.eval(node, ts)
        if isinstance(val, SC):
            return Result("scalar", (time_ms, float(val.v[0])), ctx.warnings, ctx.infos)
        if isinstance(val, ST):
            return Result("string", (time_ms, val.s), ctx.warnings, ctx.infos)
        _check_dupes(val)
        rows = val.ordered if val.ordered is not None else range(len(val.labels))
        out = [Sample(val.labels[i], time_ms, float(val.V[i, 0])) for i in rows if val.P[i, 0]]
        return Result("vector", out, ctx.warnings, ctx.infos)

    def range(self, query: str, start_ms: int, end_ms: int, step_ms: int, queryable,
              lookback_delta_ms: Optional[int] = None) -> Result:
        expr = parse(query)
        start_ms, end_ms, step_ms = int(start_ms), int(end_ms), int(step_ms)
        if step_ms <= 0:
            raise ParseError("zero or negative query resolution step widths are not accepted. Try a positive integer")
        if end_ms < start_ms:
            raise ParseError("end timestamp must not be before start time")
        node = _unparen(expr)
        rt = _value_type(node)
        if rt not in ("vector", "scalar"):
            raise ParseError(f"invalid expression type \"{'range vector' if rt == 'matrix' else rt}\" for range query, "
                             "must be Scalar or instant Vector")
        ctx = self._ctx(queryable, start_ms, end_ms, lookback_delta_ms)
        ts = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        val = _Evaluator(ctx).eval(node, ts)
        if isinstance(val, SC):
            return Result("matrix", [Series((), ts.copy(), val.v.astype(np.float64))], ctx.warnings, ctx.infos)
        _check_dupes(val)
        out = []
        for i, labels in enumerate(val.labels):
            p = val.P[i]
            if p.any():
                out.append(Series(labels, ts[p], val.V[i][p]))
        out.sort(key=lambda s: s.labels)
        return Result("matrix", out, ctx.warnings, ctx.infos)


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
        return {"ValueType.Scalar": "scalar", "ValueType.Matrix": "matrix", "ValueType.String": "string"}.get(rt, "vector")
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
        V = np.where(P, val.V[rows], 0.0)
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
            return VS([_drop_name(l) for l in v.labels], -v.V, v.P)
        if isinstance(n, pp.BinaryExpr):
            return _fn.binary(self, n, ts)
        if isinstance(n, pp.AggregateExpr):
            return _fn.aggregate(self, n, ts)
        if isinstance(n, pp.Call):
            return _fn.call(self, n, ts)
        raise ExecutionError(f"unsupported expression {type(n).__name__}")

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
        found = self.ctx.q.select(_matchers(n), int(te.min()) - lb + 1, int(te.max()))
        labels, Vs, Ps, Ts = [], [], [], []
        for lab, t, v in found:
            idx = np.searchsorted(t, te, "right") - 1
            ok = idx >= 0
            ic = np.where(ok, idx, 0)
            tt = t[ic]
            vv = v[ic]
            ok &= tt > te - lb
            ok &= ~is_stale_nan(vv)
            if ok.any():
                labels.append(lab)
                Vs.append(vv)
                Ps.append(ok)
                Ts.append(tt)
        self.count_samples(sum(int(p.sum()) for p in Ps))
        V = np.array(Vs, dtype=np.float64).reshape(len(labels), S)
        P = np.array(Ps, dtype=bool).reshape(len(labels), S)
        if with_ts:
            T = np.array(Ts, dtype=np.int64).reshape(len(labels), S)
            return VS(labels, V, P), T
        return VS(labels, V, P)

    def range_arg(self, n, ts) -> RangeArg:
        n = _unparen(n)
        if isinstance(n, pp.MatrixSelector):
            vs = n.vector_selector
            rng = _ms(n.range)
            te = self._eff_times(vs, ts)
            found = self.ctx.q.select(_matchers(vs), int(te.min()) - rng + 1, int(te.max()))
            series = []
            for lab, t, v in found:
                st = is_stale_nan(v)
                if st.any():
                    t, v = t[~st], v[~st]
                if len(t):
                    series.append((lab, t, v))
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
        los, his = [], []
        total = 0
        for lab, t, v in series:
            lo, hi = _windows(t, te, rng)
            los.append(lo)
            his.append(hi)
            total += int((hi - lo).sum())
        self.count_samples(total)
        return RangeArg(series, los, his, te, rng, n)
