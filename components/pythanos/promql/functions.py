"""Binary operators, aggregations and functions over the step grid (see engine.py for the value types)."""
from __future__ import annotations

import math
import re

import numpy as np
import promql_parser as pp

from .engine import (NAME, SC, ST, VS, RangeArg, _check_dupes, _drop_name, _has_dropped, _keep_name, _labels_str,
                     _reduce_windows,
                     _unparen)
from . import _topk as _topk_c

from . import _rate as _rate_c  # rate/increase/delta; None selects the numpy path (the tests' reference)
from ..goregexp import compile_anchored
from .errors import ExecutionError
from .stop import checkpoint
from .format import format_scalar_float

_np_err = dict(divide="ignore", invalid="ignore", over="ignore")

# ================================================================ binary operators

_ARITH = {"+", "-", "*", "/", "%", "^", "atan2"}
_CMP = {"==", "!=", ">", "<", ">=", "<="}
_SET = {"and", "or", "unless"}


def _op(op, a, b):
    with np.errstate(**_np_err):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        if op == "%":
            return np.fmod(a, b)
        if op == "^":
            return np.power(a, b)
        if op == "atan2":
            return np.arctan2(a, b)
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op == ">":
            return a > b
        if op == "<":
            return a < b
        if op == ">=":
            return a >= b
        if op == "<=":
            return a <= b
    raise ExecutionError(f"unsupported binary operator {op!r}")


def _sigf(on, names):
    names = set(names or ())
    if on:
        return lambda l: tuple(kv for kv in l if kv[0] in names)
    return lambda l: tuple(kv for kv in l if kv[0] != NAME and kv[0] not in names)


def binary(ev, n, ts):
    op = str(n.op)
    mod = n.modifier
    return_bool = bool(mod and mod.return_bool)
    lhs = ev.eval(n.lhs, ts)
    rhs = ev.eval(n.rhs, ts)
    if isinstance(lhs, SC) and isinstance(rhs, SC):
        r = _op(op, lhs.v, rhs.v)
        if op in _CMP:
            r = r.astype(np.float64)
        return SC(np.asarray(r, dtype=np.float64))
    if isinstance(lhs, ST) or isinstance(rhs, ST):
        raise ExecutionError("binary expression must contain only scalar and instant vector types")
    if isinstance(lhs, VS) and isinstance(rhs, VS):
        if op in _SET:
            return _set_op(op, lhs, rhs, mod)
        return _vector_binop(op, lhs, rhs, mod, return_bool, ev.delayed)
    # vector <op> scalar
    if isinstance(lhs, VS):
        vec, sc, swap = lhs, rhs.v[None, :], False
    else:
        vec, sc, swap = rhs, lhs.v[None, :], True
    a, b = (sc, vec.V) if swap else (vec.V, sc)
    r = _op(op, a, b)
    if op in _CMP:
        if return_bool:
            return _check_dupes(VS([_drop_name(l, ev.delayed) for l in vec.labels], r.astype(np.float64),
                                   vec.P.copy()))
        return VS(list(vec.labels), vec.V, vec.P & r)
    return _check_dupes(VS([_drop_name(l, ev.delayed) for l in vec.labels], r, vec.P.copy()))


def _card(mod):
    if mod is None or mod.card is None:
        return "one-to-one"
    c = str(mod.card)
    return {"VectorMatchCardinality.ManyToOne": "many-to-one", "VectorMatchCardinality.OneToMany": "one-to-many",
            "VectorMatchCardinality.ManyToMany": "many-to-many"}.get(c, "one-to-one")


def _matching(mod):
    if mod is None or mod.matching is None:
        return False, []
    m = mod.matching
    return m.type == pp.LabelModifierType.Include, list(m.labels)


def _set_op(op, lhs, rhs, mod):
    on, names = _matching(mod)
    sigf = _sigf(on, names)
    S = lhs.V.shape[1]

    def any_by_sig(vs):
        d = {}
        for i, l in enumerate(vs.labels):
            s = sigf(l)
            if s in d:
                d[s] = d[s] | vs.P[i]
            else:
                d[s] = vs.P[i].copy()
        return d

    none = np.zeros(S, bool)
    if op == "and":
        R = any_by_sig(rhs)
        P = np.array([lhs.P[i] & R.get(sigf(l), none) for i, l in enumerate(lhs.labels)], bool).reshape(-1, S)
        return VS(list(lhs.labels), lhs.V, P)
    if op == "unless":
        R = any_by_sig(rhs)
        P = np.array([lhs.P[i] & ~R.get(sigf(l), none) for i, l in enumerate(lhs.labels)], bool).reshape(-1, S)
        return VS(list(lhs.labels), lhs.V, P)
    L = any_by_sig(lhs)
    P = np.array([rhs.P[i] & ~L.get(sigf(l), none) for i, l in enumerate(rhs.labels)], bool).reshape(-1, S)
    return _check_dupes(VS(list(lhs.labels) + list(rhs.labels), np.vstack([lhs.V, rhs.V]), np.vstack([lhs.P, P])))


def _vector_binop(op, lhs, rhs, mod, return_bool, delayed=False):
    card = _card(mod)
    on, names = _matching(mod)
    include = list(mod.group_labels or []) if mod is not None and card in ("many-to-one", "one-to-many") else []
    sigf = _sigf(on, names)
    S = lhs.V.shape[1]
    many, one = (rhs, lhs) if card == "one-to-many" else (lhs, rhs)
    many_any = many.P.any(axis=0) if len(many.labels) else np.zeros(S, bool)
    # the "one" side: at most one series per signature and step
    groups = {}
    for i, l in enumerate(one.labels):
        groups.setdefault(sigf(l), []).append(i)
    for sig, rows in groups.items():
        if len(rows) > 1:
            P = one.P[rows] & many_any
            bad = np.nonzero(P.sum(axis=0) > 1)[0]
            if len(bad):
                st = bad[0]
                present = [r for r in rows if one.P[r, st]]
                side = "left" if card == "one-to-many" else "right"
                ml = tuple(kv for kv in one.labels[present[-1]] if (kv[0] in names if on else kv[0] != NAME and kv[0] not in names))
                raise ExecutionError(
                    f"found duplicate series for the match group {_labels_str(ml)} on the {side} hand-side of the "
                    f"operation: [{_labels_str(one.labels[present[1]])}, {_labels_str(one.labels[present[0]])}]"
                    ";many-to-many matching not allowed: matching labels must be unique on one side")
    li, ri = [], []
    for i, l in enumerate(many.labels):
        for r in groups.get(sigf(l), ()):
            li.append(i)
            ri.append(r)
    if not li:
        return VS.empty(S)
    li = np.array(li)
    ri = np.array(ri)
    MV, OV = many.V[li], one.V[ri]
    P = many.P[li] & one.P[ri]
    a, b = (OV, MV) if card == "one-to-many" else (MV, OV)
    r = _op(op, a, b)
    Pm = P
    is_cmp = op in _CMP
    if is_cmp and not return_bool:
        V = a
        P = P & r
    elif is_cmp:
        V = r.astype(np.float64)
    else:
        V = r
    keep = set(names)
    out_labels = []
    for k in range(len(li)):
        ml = many.labels[li[k]]
        if op in _ARITH:  # vector/vector arithmetic drops the name at once, delayed removal or not
            ml = _drop_name(ml)
        elif return_bool:
            ml = _drop_name(ml, delayed)
        elif delayed:  # a filtering comparison's result keeps its name (DropName = false)
            ml = _keep_name(ml)
        if card == "one-to-one":
            if on:
                ml = tuple(kv for kv in ml if kv[0] in keep)
            else:
                ml = tuple(kv for kv in ml if kv[0] not in keep)
        if include:
            d = dict(ml)
            od = dict(one.labels[ri[k]])
            for nm in include:
                if od.get(nm, ""):
                    d[nm] = od[nm]
                else:
                    d.pop(nm, None)
            ml = tuple(sorted(d.items()))
        out_labels.append(ml)
    # cardinality checks on kept samples
    if card == "one-to-one":
        bysig = {}
        for k in range(len(li)):
            bysig.setdefault(sigf(many.labels[li[k]]), []).append(k)
        for rows in bysig.values():
            if len(rows) > 1 and (Pm[rows].sum(axis=0) > 1).any():
                raise ExecutionError("multiple matches for labels: many-to-one matching must be explicit "
                                     "(group_left/group_right)")
    else:
        byout = {}
        for k in range(len(li)):
            byout.setdefault((sigf(many.labels[li[k]]), out_labels[k]), []).append(k)
        for rows in byout.values():
            if len(rows) > 1 and (P[rows].sum(axis=0) > 1).any():
                raise ExecutionError("multiple matches for labels: grouping labels must ensure unique matches")
    return _check_dupes(VS(out_labels, np.asarray(V, dtype=np.float64), P))


# ================================================================ aggregations

def _group_keys(labels, mod):
    if mod is None:
        return [()] * len(labels)
    names = set(mod.labels)
    if mod.type == pp.AggModifierType.By:
        return [tuple(kv for kv in l if kv[0] in names) for l in labels]
    return [tuple(kv for kv in l if kv[0] not in names and kv[0] != NAME) for l in labels]


def _groups(keys):
    gid = {}
    ids = np.empty(len(keys), dtype=np.int64)
    order = []
    for i, k in enumerate(keys):
        g = gid.get(k)
        if g is None:
            g = gid[k] = len(order)
            order.append(k)
        ids[i] = g
    return ids, order


_ZERO_START = np.zeros(1, np.intp)


def _seg_reduce(ufunc, M, ids, G):
    """Reduce rows of M per group id (rows reordered by group), returning (G, S)."""
    if G == 1 and len(ids):  # one group (sum(...) without by): already in order, nothing to reorder
        return ufunc.reduceat(M, _ZERO_START, axis=0), ids[:1]
    order = np.argsort(ids, kind="stable")
    sids = ids[order]
    starts = np.r_[0, np.nonzero(np.diff(sids))[0] + 1]
    r = ufunc.reduceat(M[order], starts, axis=0)
    out_ids = sids[starts]
    return r, out_ids


def _kahan_seg_sum(Vz, ids, G):
    """Sum of rows per group; Neumaier-compensated (iterating over the k-th member of every group) only for
    the groups where plain summation could lose digits (cancellation, i.e. sum|v| >> |sum v|)."""
    plain, gids = _seg_reduce(np.add, Vz, ids, G)
    with np.errstate(**_np_err):
        absum, _ = _seg_reduce(np.add, np.abs(Vz), ids, G)
        need = (absum > 0) & ~(np.abs(plain) * 1e4 > absum)
    if not need.any():
        return plain, gids
    bad_groups = gids[need.any(axis=1)]
    sel = np.isin(ids, bad_groups)
    comp, cg = _kahan_seg_sum_full(Vz[sel], ids[sel])
    pos = np.searchsorted(gids, cg)
    plain[pos] = comp
    return plain, gids


def _kahan_seg_sum_full(Vz, ids):
    S = Vz.shape[1]
    order = np.argsort(ids, kind="stable")
    sids = ids[order]
    starts = np.r_[0, np.nonzero(np.diff(sids))[0] + 1]
    sizes = np.diff(np.r_[starts, len(sids)])
    gids = sids[starts]
    s = np.zeros((len(starts), S))
    c = np.zeros((len(starts), S))
    with np.errstate(**_np_err):
        for k in range(int(sizes.max()) if len(sizes) else 0):
            live = np.nonzero(sizes > k)[0]
            x = Vz[order[starts[live] + k]]
            cur = s[live]
            t = cur + x
            big = np.abs(cur) >= np.abs(x)
            c[live] += np.where(big, (cur - t) + x, (x - t) + cur)
            s[live] = t
        out = s + np.where(np.isinf(s), 0.0, c)
    return out, gids


def _welford_seg(V, P, ids):
    """Per group and step, the sum of squared deviations exactly as Prometheus' stddev/stdvar aggregation
    builds it: the group's present samples in input order, the first sets mean = f and M2 = 0 (NaN if f is
    NaN or +-Inf), each further one count += 1, delta = f - mean, mean += delta / count,
    M2 += delta * (f - mean). The first step is the same update from count = mean = M2 = 0 (it gives
    mean = f and f * 0, NaN for +-Inf and NaN). Vectorised over groups and steps: the loop is over a
    series' position in its group (groups sorted by size, so the groups still running are a prefix), a
    series without a sample at a step leaves that step unchanged. Rows come out in group-id order (as
    _seg_reduce's)."""
    S = V.shape[1]
    order = np.argsort(ids, kind="stable")
    sids = ids[order]
    starts = np.r_[0, np.nonzero(np.diff(sids))[0] + 1]
    sizes = np.diff(np.r_[starts, len(sids)])
    Gn = len(starts)
    by_size = np.argsort(-sizes, kind="stable")
    st = starts[by_size]
    kmax = int(sizes.max()) if Gn else 0
    live = np.searchsorted(-sizes[by_size], -np.arange(kmax), "left")
    cnt = np.zeros((Gn, S))
    mean = np.zeros((Gn, S))
    m2 = np.zeros((Gn, S))
    with np.errstate(**_np_err):
        for k in range(kmax):
            L = int(live[k])
            rows = order[st[:L] + k]
            x, p = V[rows], P[rows]
            c, m, q = cnt[:L], mean[:L], m2[:L]
            c += p
            delta = x - m
            m_new = m + delta / c
            q_new = q + delta * (x - m_new)
            np.copyto(m, m_new, where=p)
            np.copyto(q, q_new, where=p)
    out = np.empty_like(m2)
    out[by_size] = m2
    return out


def aggregate(ev, n, ts):
    op = str(n.op)
    S = len(ts)
    param = None
    if n.param is not None:
        param = ev.eval(n.param, ts)
    vec = ev.eval(n.expr, ts)
    if not isinstance(vec, VS):
        raise ExecutionError(f"expected instant vector in aggregation {op}")
    keys = _group_keys(vec.labels, n.modifier)
    if op in ("topk", "bottomk", "limitk", "limit_ratio"):
        return _topk(op, vec, keys, param, S)
    if op == "count_values":
        return _count_values(vec, keys, param.s, S)
    if op == "quantile":
        return _quantile_agg(vec, keys, param.v, S)
    N = len(vec.labels)
    if N == 0:
        return VS.empty(S)
    ids, order = _groups(keys)
    if ev.delayed:
        order = _group_drop_flags(order, ids, vec.labels)
    G = len(order)
    # steps are independent: big vectors are aggregated a block of steps at a time, so the
    # temporaries stay at a few MB instead of several copies of the whole (series x steps) input
    block = max(1, _AGG_BLOCK_CELLS // N)
    if S <= block:
        out, present, gids = _agg_steps(op, vec.V, vec.P, ids, G)
    else:
        parts = []
        for a in range(0, S, block):
            checkpoint()
            parts.append(_agg_steps(op, vec.V[:, a:a + block], vec.P[:, a:a + block], ids, G))
        gids = parts[0][2]
        out = np.concatenate([p[0] for p in parts], axis=1)
        present = np.concatenate([p[1] for p in parts], axis=1)
    labels = [order[g] for g in gids]
    return VS(labels, out, present)


_AGG_BLOCK_CELLS = 1 << 21


def _agg_steps(op, V, P, ids, G):
    """(values, present, group ids in row order) of sum/count/group/avg/min/max/stddev/stdvar
    over the columns given."""
    Vz = np.where(P, V, 0.0)
    cnt, gids = _seg_reduce(np.add, P.astype(np.float64), ids, G)
    present = cnt > 0
    with np.errstate(**_np_err):
        if op == "sum":
            out, _ = _kahan_seg_sum(Vz, ids, G)
        elif op == "count":
            out = cnt
        elif op == "group":
            out = np.ones_like(cnt)
        elif op == "avg":
            s, _ = _kahan_seg_sum(Vz, ids, G)
            out = s / cnt
            bad = np.isinf(out)
            if bad.any():
                fin, _ = _seg_reduce(np.add, np.where(P, np.isinf(V), False).astype(np.float64), ids, G)
                cnt_by_gid = np.zeros((G, V.shape[1]))
                cnt_by_gid[gids] = cnt
                alt, _ = _seg_reduce(np.add, np.where(P, V / cnt_by_gid[ids], 0.0), ids, G)
                fix = bad & (fin == 0)
                out = np.where(fix, alt, out)
        elif op in ("min", "max"):
            Vn = np.where(P, V, np.nan)
            out, _ = _seg_reduce(np.fmin if op == "min" else np.fmax, Vn, ids, G)
        elif op in ("stddev", "stdvar"):
            out = _welford_seg(V, P, ids) / cnt
            if op == "stddev":
                out = np.sqrt(out)
        else:
            raise ExecutionError(f"unsupported aggregation {op!r}")
    return np.asarray(out, dtype=np.float64), present, gids


def _group_drop_flags(order, ids, labels):
    """Delayed name removal: a group kept by ``by (__name__)`` loses its name at the end if any member's
    name was marked for removal (Prometheus' groupedAggregation.dropName)."""
    out = list(order)
    for g, key in enumerate(order):
        if any(k == NAME for k, _ in key):
            members = np.nonzero(ids == g)[0]
            flagged = any(_has_dropped(labels[i]) for i in members)
            out[g] = _drop_name(key, True) if flagged else _keep_name(key)
    return out


def _topk(op, vec, keys, param, S):
    N = len(vec.labels)
    kv = param.v if isinstance(param, SC) else None
    if kv is None:
        raise ExecutionError(f"expected scalar parameter for {op}")
    if np.isnan(kv).any():
        raise ExecutionError("Ratio value is NaN" if op == "limit_ratio" else "Parameter value is NaN")
    if op == "limit_ratio":
        return _limit_ratio(vec, keys, kv, S)
    if N == 0:
        return VS.empty(S)
    k = np.where(kv >= 9.2e18, 9.2e18, kv).astype(np.int64)
    ids, order = _groups(keys)
    if op != "limitk":
        newP, ordered = _topk_select(op, vec.V, vec.P, ids, len(order), k)
        return VS(list(vec.labels), vec.V, newP, ordered)
    newP = np.zeros_like(vec.P)
    ordered = []
    for g in range(len(order)):
        rows = np.nonzero(ids == g)[0]
        P = vec.P[rows]
        rank = np.cumsum(P, axis=0) - 1
        sel = P & (rank < k[None, :])
        newP[rows] = sel
        ordered.extend(rows[sel[:, 0]].tolist() if S == 1 else [])
    return VS(list(vec.labels), vec.V, newP, ordered if S == 1 else None)


_U64 = (1 << 64) - 1
_XP1, _XP2, _XP3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
_XP4, _XP5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5


def _rotl64(x, r):
    return ((x << r) | (x >> (64 - r))) & _U64


def _xxh64_round(acc, lane):
    return (_rotl64((acc + lane * _XP2) & _U64, 31) * _XP1) & _U64


def _xxh64(data: bytes, seed: int = 0) -> int:
    """XXH64 of ``data`` (the hash behind Prometheus' ``labels.Labels.Hash``)."""
    n = len(data)
    i = 0
    if n >= 32:
        v1, v2, v3, v4 = (seed + _XP1 + _XP2) & _U64, (seed + _XP2) & _U64, seed, (seed - _XP1) & _U64
        while i + 32 <= n:
            a, b, c, d = (int.from_bytes(data[j:j + 8], "little") for j in range(i, i + 32, 8))
            v1, v2, v3, v4 = _xxh64_round(v1, a), _xxh64_round(v2, b), _xxh64_round(v3, c), _xxh64_round(v4, d)
            i += 32
        h = (_rotl64(v1, 1) + _rotl64(v2, 7) + _rotl64(v3, 12) + _rotl64(v4, 18)) & _U64
        for v in (v1, v2, v3, v4):
            h = ((h ^ _xxh64_round(0, v)) * _XP1 + _XP4) & _U64
    else:
        h = (seed + _XP5) & _U64
    h = (h + n) & _U64
    while i + 8 <= n:
        h ^= _xxh64_round(0, int.from_bytes(data[i:i + 8], "little"))
        h = (_rotl64(h, 27) * _XP1 + _XP4) & _U64
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(data[i:i + 4], "little") * _XP1) & _U64
        h = (_rotl64(h, 23) * _XP2 + _XP3) & _U64
        i += 4
    while i < n:
        h ^= (data[i] * _XP5) & _U64
        h = (_rotl64(h, 11) * _XP1) & _U64
        i += 1
    h ^= h >> 33
    h = (h * _XP2) & _U64
    h ^= h >> 29
    h = (h * _XP3) & _U64
    h ^= h >> 32
    return h


def _go_label_size(n: int) -> bytes:
    return bytes((n,)) if n < 255 else bytes((255, n & 0xFF, (n >> 8) & 0xFF, (n >> 16) & 0xFF))


def _labels_hash(labels) -> int:
    """Prometheus' ``labels.Labels.Hash()`` (default stringlabels build): XXH64 of the labels sorted by name,
    each name and value as a length (one byte, or 255 and three little-endian bytes) and its UTF-8 bytes."""
    buf = bytearray()
    for k, v in sorted(labels, key=lambda kv: str(kv[0])):
        kb, vb = str(k).encode("utf-8", "surrogateescape"), str(v).encode("utf-8", "surrogateescape")
        buf += _go_label_size(len(kb)) + kb + _go_label_size(len(vb)) + vb
    return _xxh64(bytes(buf))


def _ratio_offsets(labels) -> np.ndarray:
    """HashRatioSampler.SampleOffset of every series: float64(hash) / float64(MaxUint64)."""
    h = np.fromiter((_labels_hash(l) for l in labels), dtype=np.uint64, count=len(labels))
    return h.astype(np.float64) / float(_U64)


def _go_heap_push(heap: list, item, less) -> None:
    """container/heap.Push: append, then sift up."""
    heap.append(item)
    j = len(heap) - 1
    while j > 0:
        i = (j - 1) // 2
        if i == j or not less(heap[j], heap[i]):
            break
        heap[i], heap[j] = heap[j], heap[i]
        j = i


def _limit_ratio(vec, keys, r, S):
    """limit_ratio(r, v): per step, the series whose label-hash offset in [0, 1) is below r (r >= 0) or at
    least 1 + r (r < 0), r capped to [-1, 1]; no output at a step where r is 0. Instant results keep
    Prometheus' order: groups by first appearance, each group's series as its vectorByValueHeap holds them."""
    N = len(vec.labels)
    if N == 0 or not np.any(r != 0):
        return VS.empty(S)
    rr = np.clip(r, -1.0, 1.0)
    off = _ratio_offsets(vec.labels)[:, None]
    take = np.where(rr >= 0, off < rr, off >= 1.0 + rr)
    newP = vec.P & take & (r != 0)[None, :]
    if S != 1:
        return VS(list(vec.labels), vec.V, newP)
    ids, order = _groups(keys)
    heaps = [[] for _ in order]
    V = vec.V[:, 0]

    def less(i, j):  # vectorByValueHeap.Less
        return math.isnan(V[i]) or V[i] < V[j]

    for i in np.nonzero(newP[:, 0])[0].tolist():
        _go_heap_push(heaps[ids[i]], i, less)
    seen = []
    for g in dict.fromkeys(ids[vec.P[:, 0]].tolist()):
        seen.extend(heaps[g])
    return VS(list(vec.labels), vec.V, newP, seen)


def _topk_select(op, V, P, ids, G, k):
    """topk/bottomk as Prometheus picks them: per step and group, Go's container/heap walk over the
    series in input order (ties at the k-th place are cut by the heap's shape, not by series order),
    in the C kernel :mod:`pythanos.promql._topk`. Returns the kept mask (series x steps) and, for a
    single step, the kept rows in Prometheus' output order (groups by first appearance, each group's
    heap sorted with Go's ``sort.Sort(sort.Reverse(heap))``), else None."""
    N, S = V.shape
    V = np.ascontiguousarray(V, dtype=np.float64)
    P8 = np.ascontiguousarray(P, dtype=bool).view(np.uint8)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    k = np.ascontiguousarray(np.broadcast_to(k, (S,)), dtype=np.int64)
    sel = np.zeros((N, S), np.uint8)
    out = np.empty(N, np.int64)
    n = _topk_c.select(V, P8, ids, G, k, op == "bottomk", sel, out, N)
    return sel.view(bool), (out[:n].tolist() if S == 1 else None)


def _count_values(vec, keys, label, S):
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label or "") and not label:
        raise ExecutionError(f"invalid label name {label!r}")
    rows, cols = np.nonzero(vec.P)  # row-major: output series in order of first appearance
    if not len(rows):
        return VS.empty(S)
    # a value is its text: every NaN is "NaN", 0 and -0 differ, other doubles print apart
    bits = vec.V[rows, cols].view(np.uint64).copy()
    bits[np.isnan(vec.V[rows, cols])] = np.float64(np.nan).view(np.uint64)
    vals, vid = np.unique(bits, return_inverse=True)
    ids, order = _groups(keys)
    pair = ids[rows] * len(vals) + vid
    upair, first, pinv = np.unique(pair, return_index=True, return_inverse=True)
    texts = [format_scalar_float(float(x)) for x in vals.view(np.float64)]
    key_index: dict = {}
    pair_key = np.empty(len(upair), np.int64)
    for i in np.argsort(first, kind="stable").tolist():  # (group, value) pairs as they first appear
        d = dict(order[int(upair[i]) // len(vals)])
        d[label] = texts[int(upair[i]) % len(vals)]
        pair_key[i] = key_index.setdefault(tuple(sorted(d.items())), len(key_index))
    labels = list(key_index)
    V = np.bincount(pair_key[pinv] * S + cols, minlength=len(labels) * S).astype(np.float64).reshape(len(labels), S)
    return VS(labels, V, V > 0)


def _quantile_agg(vec, keys, qv, S):
    """``quantile``: per group, every step at once (members as columns, sorted with NaNs first)."""
    ids, order = _groups(keys)
    G = len(order)
    V = np.zeros((G, S))
    P = np.zeros((G, S), bool)
    for g in range(G):
        rows = np.nonzero(ids == g)[0]
        M, Pm = vec.V[rows].T, vec.P[rows].T  # steps x members
        W = np.where(Pm, M, np.inf)
        nn = (np.isnan(W) & Pm).sum(axis=1)
        W.sort(axis=1)  # present values ascending, then +Inf padding, then NaNs (counted apart)
        V[g] = _quantile_rows(qv, W, Pm.sum(axis=1), nn)
        P[g] = Pm.any(axis=1)
    return VS(list(order), V, P)


# ================================================================ functions

def _scalar_arg(ev, node, ts):
    v = ev.eval(node, ts)
    if isinstance(v, SC):
        return v.v
    raise ExecutionError("expected scalar argument")


def _math(vec, f, delayed=False):
    with np.errstate(**_np_err):
        V = f(vec.V)
    return _check_dupes(VS([_drop_name(l, delayed) for l in vec.labels], np.asarray(V, dtype=np.float64),
                           vec.P.copy()))


_MATH = {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "exp": np.exp, "ln": np.log, "log2": np.log2,
    "log10": np.log10, "sqrt": np.sqrt, "sgn": np.sign,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "asinh": np.arcsinh, "acosh": np.arccosh,
    "atanh": np.arctanh, "deg": np.degrees, "rad": np.radians,
}


# Go's time.Unix(sec, 0) works on absolute seconds sec + _GO_UNIX_TO_ABS as a uint64, so a sec below
# -_GO_UNIX_TO_ABS wraps around to sec + 2**64 (unixToInternal + internalToAbsolute of Go's time package).
_GO_UNIX_TO_ABS = 62135596800 + (292277022400 * 3652425 // 10000 + 306) * 86400
_WRAP_DAYS, _WRAP_REM = divmod(1 << 64, 86400)
_I64_MIN = np.int64(-(1 << 63))


def _go_int64(f):
    """Go's int64(f) on amd64 (CVTTSD2SQ): truncation; NaN, +-Inf and out-of-range give math.MinInt64."""
    f = np.asarray(f, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = (f >= -9.223372036854775808e18) & (f < 9.223372036854775808e18)
    return np.where(ok, f, -9.223372036854775808e18).astype(np.int64)


def _datetime_parts(sec):
    """Broken-down UTC time of float seconds as Prometheus computes it: ``time.Unix(int64(f), 0).UTC()``
    (NaN/Inf become math.MinInt64 seconds, which Go's calendar wraps to 2**63 s: 292277026596-12-04 15:30)."""
    s = _go_int64(sec)
    wrap = s < -_GO_UNIX_TO_ABS
    days = np.floor_divide(s, 86400)
    sod = s - days * 86400
    if wrap.any():
        sw = s[wrap] + _WRAP_REM  # (s + 2**64) // 86400 without leaving int64
        days[wrap] = _WRAP_DAYS + np.floor_divide(sw, 86400)
        sod[wrap] = np.mod(sw, 86400)
    d64 = days.astype("datetime64[D]")
    Y = d64.astype("datetime64[Y]")
    M = d64.astype("datetime64[M]")
    year = Y.astype(np.int64) + 1970
    month = M.astype(np.int64) % 12 + 1
    dom = (d64 - M.astype("datetime64[D]")).astype(np.int64) + 1
    doy = (d64 - Y.astype("datetime64[D]")).astype(np.int64) + 1
    dow = (days + 4) % 7
    next_m = (M + 1).astype("datetime64[D]")
    dim = (next_m - M.astype("datetime64[D]")).astype(np.int64)
    ok = np.ones(np.shape(s), bool)
    return ok, dict(year=year, month=month, day_of_month=dom, day_of_year=doy, day_of_week=dow,
                    days_in_month=dim, hour=sod // 3600, minute=(sod % 3600) // 60)


_RANGE_FUNCS = {"rate", "increase", "delta", "irate", "idelta", "avg_over_time", "sum_over_time", "count_over_time",
                "min_over_time", "max_over_time", "last_over_time", "first_over_time", "present_over_time",
                "stddev_over_time", "stdvar_over_time", "quantile_over_time", "mad_over_time", "changes", "resets",
                "deriv", "predict_linear", "double_exponential_smoothing", "absent_over_time", "ts_of_last_over_time",
                "ts_of_first_over_time", "ts_of_max_over_time", "ts_of_min_over_time"}


def call(ev, n, ts):
    name = n.func.name
    args = list(n.args)
    S = len(ts)
    if name in _RANGE_FUNCS:
        mi = 1 if name == "quantile_over_time" else 0
        extra = [_scalar_arg(ev, a, ts) for i, a in enumerate(args) if i != mi]
        if name == "absent_over_time":
            ra = ev.range_arg(args[mi], ts)
            anyp = (ra.hi > ra.lo).any(axis=0) if len(ra.series) else np.zeros(S, bool)
            labels = _absent_labels(args[0])
            return VS([labels], np.ones((1, S)), ~anyp[None, :])
        parts = [_range_func(name, ra, extra, ts, ev.delayed) for ra in ev.range_arg_parts(args[mi], ts)]
        if len(parts) == 1:
            return parts[0]
        # series of one part never clash with another's before names are dropped; after, they may
        return _check_dupes(VS([lab for p in parts for lab in p.labels], np.concatenate([p.V for p in parts]),
                               np.concatenate([p.P for p in parts])))
    if name == "time":
        return SC(ts / 1000.0)
    if name == "pi":
        return SC(np.full(S, math.pi))
    if name == "vector":
        v = _scalar_arg(ev, args[0], ts)
        return VS([()], v[None, :].astype(np.float64), np.ones((1, S), bool))
    if name == "scalar":
        vec = ev.eval(args[0], ts)
        cnt = vec.P.sum(axis=0)
        idx = np.argmax(vec.P, axis=0) if len(vec.labels) else np.zeros(S, int)
        val = vec.V[idx, np.arange(S)] if len(vec.labels) else np.full(S, np.nan)
        return SC(np.where(cnt == 1, val, np.nan))
    if name in ("year", "month", "day_of_month", "day_of_year", "day_of_week", "days_in_month", "hour", "minute"):
        if args:
            vec = ev.eval(args[0], ts)
        else:
            vec = VS([()], (ts / 1000.0)[None, :], np.ones((1, S), bool))
        ok, parts = _datetime_parts(vec.V)
        V = np.where(ok, parts[name].astype(np.float64), np.nan)
        return _check_dupes(VS([_drop_name(l, ev.delayed) for l in vec.labels], V, vec.P.copy()))
    if name == "timestamp":
        a = _unparen(args[0])
        if isinstance(a, pp.VectorSelector):
            vec, T = ev.vector_selector(a, ts, with_ts=True)
            return _check_dupes(VS([_drop_name(l, ev.delayed) for l in vec.labels], T / 1000.0, vec.P))
        vec = ev.eval(a, ts)
        return _check_dupes(VS([_drop_name(l, ev.delayed) for l in vec.labels],
                               np.broadcast_to(ts / 1000.0, vec.V.shape).copy(), vec.P))
    if name in _MATH:
        return _math(ev.eval(args[0], ts), _MATH[name], ev.delayed)
    if name == "round":
        vec = ev.eval(args[0], ts)
        to = _scalar_arg(ev, args[1], ts) if len(args) > 1 else np.ones(S)
        inv = 1.0 / to
        return _math(vec, lambda V: np.floor(V * inv + 0.5) / inv, ev.delayed)
    if name in ("clamp", "clamp_min", "clamp_max"):
        vec = ev.eval(args[0], ts)
        if name == "clamp":
            lo, hi = _scalar_arg(ev, args[1], ts), _scalar_arg(ev, args[2], ts)
            out = _math(vec, lambda V: np.maximum(lo, np.minimum(hi, V)), ev.delayed)
            out.P = out.P & ~(lo > hi)[None, :]
            return out
        b = _scalar_arg(ev, args[1], ts)
        if name == "clamp_min":
            return _math(vec, lambda V: np.maximum(b, V), ev.delayed)
        return _math(vec, lambda V: np.minimum(b, V), ev.delayed)
    if name in ("sort", "sort_desc"):
        vec = ev.eval(args[0], ts)
        if S == 1:
            rows = [i for i in range(len(vec.labels)) if vec.P[i, 0]]
            vals = vec.V[rows, 0]
            nan = np.isnan(vals)
            key = np.where(nan, 0, vals if name == "sort" else -vals)
            o = np.lexsort((key, nan))
            vec.ordered = [rows[i] for i in o]
        return vec
    if name in ("sort_by_label", "sort_by_label_desc"):
        vec = ev.eval(args[0], ts)
        names = [ev.eval(a, ts).s for a in args[1:]]
        if S == 1:
            rows = [i for i in range(len(vec.labels)) if vec.P[i, 0]]
            import functools

            def cmp(a, b):
                da, db = dict(vec.labels[a]), dict(vec.labels[b])
                for nm in names:
                    x, y = da.get(nm, ""), db.get(nm, "")
                    c = _natural_cmp(x, y)
                    if c:
                        return c
                la, lb = vec.labels[a], vec.labels[b]
                return (la > lb) - (la < lb)
            rows.sort(key=functools.cmp_to_key(cmp), reverse=(name == "sort_by_label_desc"))
            vec.ordered = rows
        return vec
    if name == "label_replace":
        vec = ev.eval(args[0], ts)
        dst, repl, src, rx = (ev.eval(a, ts).s for a in args[1:5])
        try:
            creg = compile_anchored(rx)  # Go's regexp on RE2: linear time
        except ValueError:
            raise ExecutionError(f"invalid regular expression in label_replace(): {rx}")
        if not dst or dst in ev.ctx.bad_utf8:  # 3.x: any non-empty valid UTF-8 name
            raise ExecutionError(f"invalid destination label name in label_replace(): {dst}")
        out = []
        got = creg.replace_many(repl, [dict(l).get(src, "") for l in vec.labels])
        for l, res in zip(vec.labels, got):
            d = dict(_keep_name(l) if dst == NAME else l)  # writing __name__ cancels a pending removal
            if res is not None:
                if res:
                    d[dst] = res
                else:
                    d.pop(dst, None)
            out.append(tuple(sorted(d.items())))
        return _check_dupes(VS(out, vec.V, vec.P))
    if name == "label_join":
        vec = ev.eval(args[0], ts)
        strs = [ev.eval(a, ts).s for a in args[1:]]
        dst, sep, srcs = strs[0], strs[1], strs[2:]
        for src in srcs:
            if src in ev.ctx.bad_utf8:
                raise ExecutionError(f"invalid source label name in label_join(): {src}")
        if not dst or dst in ev.ctx.bad_utf8:
            raise ExecutionError(f"invalid destination label name in label_join(): {dst}")
        out = []
        for l in vec.labels:
            d = dict(_keep_name(l) if dst == NAME else l)
            v = sep.join(d.get(s, "") for s in srcs)
            if v:
                d[dst] = v
            else:
                d.pop(dst, None)
            out.append(tuple(sorted(d.items())))
        return _check_dupes(VS(out, vec.V, vec.P))
    if name == "absent":
        vec = ev.eval(args[0], ts)
        anyp = vec.P.any(axis=0) if len(vec.labels) else np.zeros(S, bool)
        return VS([_absent_labels(args[0])], np.ones((1, S)), ~anyp[None, :])
    if name == "histogram_quantile":
        q = _scalar_arg(ev, args[0], ts)
        return _histogram_quantile(q, ev.eval(args[1], ts), S, ev)
    if name == "histogram_fraction":
        lower, upper = _scalar_arg(ev, args[0], ts), _scalar_arg(ev, args[1], ts)
        return _histogram_fraction(lower, upper, ev.eval(args[2], ts), S, ev)
    if name in ("histogram_count", "histogram_sum", "histogram_avg", "histogram_stddev", "histogram_stdvar"):
        ev.eval(args[-1], ts)
        return VS.empty(S)  # only native histograms have these; float samples are ignored
    if name == "info":
        return ev.eval(args[0], ts)
    raise ExecutionError(f"function {name!r} is not supported")


def _natural_cmp(a, b):
    def key(s):
        return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.findall(r"\d+|\D+", s)]
    ka, kb = key(a), key(b)
    return (ka > kb) - (ka < kb)


def _absent_labels(node):
    node = _unparen(node)
    if isinstance(node, pp.MatrixSelector):
        node = node.vector_selector
    if not isinstance(node, pp.VectorSelector):
        return ()
    seen = {}
    dup = set()
    for m in node.matchers.matchers:
        if m.name == NAME:
            continue
        if m.name in seen:
            dup.add(m.name)
        if str(m.op) == "MatchOp.Equal":
            seen.setdefault(m.name, m.value)
        else:
            seen.setdefault(m.name, None)
            dup.add(m.name)
    return tuple(sorted((k, v) for k, v in seen.items() if k not in dup and v is not None))


# ---------------------------------------------------------------- range functions

def _gather(t, v, lo, hi):
    """Concatenate the windows: (segment ids, values, timestamps, counts)."""
    cnt = np.maximum(hi - lo, 0)
    total = int(cnt.sum())
    seg = np.repeat(np.arange(len(lo)), cnt)
    starts = np.cumsum(cnt) - cnt
    pos = np.arange(total) - np.repeat(starts, cnt) + np.repeat(lo, cnt)
    return seg, v[pos], t[pos], cnt


def _kahan_windows(t, v, lo, hi):
    """Neumaier-compensated window sums, vectorised over windows (loop over the position in the window)."""
    cnt = np.maximum(hi - lo, 0)
    S = len(lo)
    s = np.zeros(S)
    c = np.zeros(S)
    with np.errstate(**_np_err):
        for k in range(int(cnt.max()) if S else 0):
            live = np.nonzero(cnt > k)[0]
            x = v[lo[live] + k]
            cur = s[live]
            tt = cur + x
            big = np.abs(cur) >= np.abs(x)
            c[live] += np.where(big, (cur - tt) + x, (x - tt) + cur)
            s[live] = tt
        return s + np.where(np.isinf(s), 0.0, c)


_BATCHED = {"rate", "increase", "delta", "irate", "idelta", "count_over_time", "last_over_time",
            "present_over_time", "changes", "resets", "stddev_over_time", "stdvar_over_time"}


def _kahan_inc(inc, s, c):
    """Prometheus' kahanSumInc on arrays: (s + inc, the Neumaier compensation c updated; 0 once s is +-Inf)."""
    t = s + inc
    big = np.abs(s) >= np.abs(inc)
    c = c + np.where(big, (s - t) + inc, (inc - t) + s)
    c[np.isinf(t)] = 0.0
    return t, c


def _variance_windows(V, lo, cnt):
    """Population variance of every window V[lo:lo+cnt] as Prometheus' stddev/stdvar_over_time compute it:
    Welford's update with Kahan-compensated mean and M2, samples in order. Vectorised over the windows (the
    windows sorted by length, so the ones still running at position k are a prefix); NaN for empty windows."""
    W = len(lo)
    order = np.argsort(-cnt, kind="stable")
    slo = lo[order]
    scnt = cnt[order]
    kmax = int(scnt[0]) if W else 0
    # live[k]: how many windows hold more than k samples
    live = np.searchsorted(-scnt, -np.arange(kmax), "left") if kmax else np.zeros(0, np.int64)
    mean = np.zeros(W)
    c_mean = np.zeros(W)
    aux = np.zeros(W)
    c_aux = np.zeros(W)
    for k in range(kmax):
        m = int(live[k])
        x = V[slo[:m] + k]
        count = float(k + 1)
        delta = x - (mean[:m] + c_mean[:m])
        mean[:m], c_mean[:m] = _kahan_inc(delta / count, mean[:m], c_mean[:m])
        aux[:m], c_aux[:m] = _kahan_inc(delta * (x - (mean[:m] + c_mean[:m])), aux[:m], c_aux[:m])
    out = np.empty(W)
    out[order] = (aux + c_aux) / scnt
    return out


_CHUNK_SAMPLES = 1 << 16  # samples per batch: bounds the concatenated copies to a few tens of MB


def _series_chunks(lens: np.ndarray, limit: int = _CHUNK_SAMPLES):
    """Consecutive (a, b) series ranges holding about ``limit`` samples each (at least one series)."""
    N = len(lens)
    cum = np.cumsum(lens)
    a = 0
    while a < N:
        checkpoint()
        base = cum[a - 1] if a else 0
        b = int(np.searchsorted(cum, base + limit, "right"))
        b = max(b, a + 1)
        yield a, min(b, N)
        a = b


def _range_func_batched(name, ra: RangeArg, ts, delayed=False, extra=()):
    """All series at once: samples concatenated, windows as global (series x steps) index arrays.

    Series are taken in batches of about ``_CHUNK_SAMPLES`` samples, so a day of 10k series never
    becomes one multi-GB copy; within a batch there is no per-series or per-sample Python loop.
    """
    S = len(ts)
    N = len(ra.series)
    if N == 0:
        return VS.empty(S)
    lens_all = np.fromiter((len(t) for _, t, _ in ra.series), dtype=np.int64, count=N)
    out = np.empty((N, S), dtype=np.float64)
    ok = np.empty((N, S), dtype=bool)
    te = ra.te[None, :]
    for a, b in _series_chunks(lens_all):
        _batched_chunk(name, ra, a, b, lens_all[a:b], te, out[a:b], ok[a:b], extra, ts)
    keep = ok.any(axis=1)
    labels = [lab if name == "last_over_time" else _drop_name(lab, delayed)
              for (lab, _, _), k in zip(ra.series, keep) if k]
    if keep.all():
        return _check_dupes(VS(labels, out, ok))
    return _check_dupes(VS(labels, out[keep], ok[keep]))


def _go_seconds(ms: int) -> float:
    """Go's ``Duration.Seconds()`` of a millisecond duration: whole seconds plus the rest, as Go adds them."""
    sec, rest = divmod(int(ms), 1000)
    if ms < 0 and rest:  # Go truncates toward zero
        sec, rest = sec + 1, rest - 1000
    return float(sec) + float(rest * 1_000_000) / 1e9


_RATE_KINDS = {"rate": 0, "increase": 1, "delta": 2}


def _batched_chunk(name, ra: RangeArg, a, b, lens, te, out, ok_out, extra=(), ts=None):
    chunk = ra.series[a:b]
    off = np.cumsum(lens) - lens
    T = np.concatenate([t for _, t, _ in chunk]) if b - a > 1 else chunk[0][1]
    V = np.concatenate([v for _, _, v in chunk]) if b - a > 1 else chunk[0][2]
    kind = _RATE_KINDS.get(name)
    if kind is not None and _rate_c is not None:
        # the kernel does the numpy path's arithmetic below, in its order: the same bits
        _rate_c.extrapolated(np.ascontiguousarray(T, np.int64), np.ascontiguousarray(V, np.float64),
                             np.ascontiguousarray(off, np.int64), np.ascontiguousarray(lens, np.int64),
                             np.ascontiguousarray(ra.lo[a:b], np.int64), np.ascontiguousarray(ra.hi[a:b], np.int64),
                             np.ascontiguousarray(te.reshape(-1), np.int64), int(ra.range_ms), kind,
                             _go_seconds(ra.range_ms), out, ok_out.view(np.uint8))
        return
    LO = np.asarray(ra.lo[a:b]) + off[:, None]
    HI = np.asarray(ra.hi[a:b]) + off[:, None]
    cnt = HI - LO
    ilo = np.minimum(LO, len(T) - 1)
    ilast = np.maximum(HI - 1, 0)
    starts = np.zeros(len(T), bool)
    starts[off[lens > 0]] = True
    with np.errstate(**_np_err):
        if name in ("rate", "increase", "delta"):
            # Prometheus' extrapolatedRate, in ms (the ratios do not need seconds), in place
            ok = cnt >= 2
            first = V[ilo]
            result = V[ilast]
            result -= first
            if name != "delta":
                # counter resets: the windows' corrections from the reset points only
                drop = V[1:] < V[:-1]
                drop[off[1:][lens[1:] > 0] - 1] = False  # series boundaries are not resets
                rpos = np.flatnonzero(drop)
                if len(rpos):
                    # each window adds the values before its resets one by one, in time order, as
                    # Prometheus does (a cumulative sum would round differently): one numpy step per
                    # reset rank, over the windows that have that many
                    rv = V[rpos]  # the value before the reset: finite or +Inf (a drop from -Inf or NaN is none)
                    ib = np.searchsorted(rpos, ilo, "left")
                    k = np.searchsorted(rpos, ilast, "left") - ib
                    flat, fb, fk = result.reshape(-1), ib.reshape(-1), k.reshape(-1)
                    act = np.flatnonzero(fk > 0)
                    j = 0
                    while act.size:
                        flat[act] += rv[fb[act] + j]
                        j += 1
                        act = act[fk[act] > j]
                    result = flat.reshape(result.shape)  # (a view already; said so for the reader)
            # in seconds and in Prometheus' order of operations: the answer is bit-for-bit its own
            ft, lt = T[ilo], T[ilast]
            dstart = (ft - (te - ra.range_ms)).astype(np.float64)
            dstart /= 1000.0
            dend = (te - lt).astype(np.float64)
            dend /= 1000.0
            sampled = (lt - ft).astype(np.float64)
            sampled /= 1000.0
            avg = sampled / np.maximum(cnt - 1, 1)
            half = avg / 2
            thr = avg * 1.1
            np.copyto(dstart, half, where=dstart >= thr)
            if name != "delta":
                dz = first / result
                dz *= sampled
                np.copyto(dstart, dz, where=(result > 0) & (first >= 0) & (dz < dstart))
            np.copyto(dend, half, where=dend >= thr)
            factor = sampled + dstart
            factor += dend
            factor /= sampled
            if name == "rate":
                factor /= _go_seconds(ra.range_ms)
            res = result
            res *= factor
        elif name in ("irate", "idelta"):
            ok = cnt >= 2
            iprev = np.maximum(HI - 2, 0)
            last, prev = V[ilast], V[iprev]
            if name == "irate":
                dt = (T[ilast] - T[iprev]) / 1000.0
                res = np.where(last < prev, last, last - prev) / dt
                ok &= dt > 0
            else:
                res = last - prev
        elif name in ("sum_over_time", "avg_over_time"):
            ok = cnt > 0
            res = _prefix_window_sums(V, LO, HI)
            if name == "avg_over_time":
                res /= np.maximum(cnt, 1)
        elif name in ("deriv", "predict_linear"):
            ok = cnt >= 2
            res = _linear_regression_windows(name, T, V, LO, HI, ilo, ilast, starts, ts, extra)
        elif name in ("stddev_over_time", "stdvar_over_time"):
            ok = cnt > 0
            res = _variance_windows(V, LO.ravel(), cnt.ravel()).reshape(cnt.shape)
            if name == "stddev_over_time":
                res = np.sqrt(res)
        elif name == "count_over_time":
            ok, res = cnt > 0, cnt
        elif name == "present_over_time":
            ok, res = cnt > 0, 1.0
        elif name == "last_over_time":
            ok, res = cnt > 0, V[ilast]
        else:  # changes, resets
            d = np.zeros(len(V))
            if name == "changes":
                d[1:] = ~((V[1:] == V[:-1]) | (np.isnan(V[1:]) & np.isnan(V[:-1])))
            else:
                d[1:] = V[1:] < V[:-1]
            d[starts] = 0
            cs = np.cumsum(d, out=d)
            ok, res = cnt > 0, cs[ilast] - cs[ilo]
    out[...] = res
    ok_out[...] = ok


_WINDOW_CELLS = 1 << 22  # steps x window cells materialised at once for order statistics


def _ts_of_extreme(is_max: bool, t, v, lo, cnt) -> np.ndarray:
    """ts_of_max/min_over_time: the time of the window's last sample equal to its largest
    (smallest) non-NaN value, in seconds; of its last sample when all are NaN. (Prometheus walks
    the window keeping f >= best, or f <= best, and replaces a NaN best with anything.)"""
    out = np.full(len(cnt), np.nan)
    for a, b in _step_chunks(cnt):
        c = cnt[a:b]
        w = max(int(c.max()), 1)
        j = np.arange(w)[None, :]
        inside = j < c[:, None]
        idx = np.minimum(lo[a:b, None] + j, len(v) - 1)
        W = np.where(inside, v[idx], np.nan)
        best = (np.fmax if is_max else np.fmin).reduce(W, axis=1)  # NaN only when all are
        hit = inside & (W == best[:, None])
        last = np.where(np.isnan(best), c - 1, w - 1 - np.argmax(hit[:, ::-1], axis=1))
        live = c > 0
        out[a:b][live] = t[lo[a:b][live] + last[live]] / 1000.0
    return out


def _double_exponential_smoothing(v, lo, cnt, ok, sf, tf) -> np.ndarray:
    """Holt's linear smoothing of every window at once: the recurrence runs over the position in
    the window, each step's window advancing together (same operations, same order as
    Prometheus' per-window loop)."""
    out = np.full(len(cnt), np.nan)
    # Prometheus checks the factors at every step with samples, the smoothing factor first
    bad_sf, bad_tf = ~((sf > 0) & (sf < 1)), ~((tf > 0) & (tf < 1))
    bad = np.nonzero((cnt > 0) & (bad_sf | bad_tf))[0]
    if len(bad):
        c = bad[0]
        if bad_sf[c]:
            raise ExecutionError(f"invalid smoothing factor. Expected: 0 < sf < 1, got: {float(sf[c]):f}")
        raise ExecutionError(f"invalid trend factor. Expected: 0 < tf < 1, got: {float(tf[c]):f}")
    live_steps = np.nonzero(ok)[0]
    if not len(live_steps):
        return out
    a, b = sf[live_steps], tf[live_steps]
    L, n = lo[live_steps], cnt[live_steps]
    s0 = np.zeros(len(live_steps))
    s1 = v[L].astype(np.float64)
    tr = v[L + 1] - v[L]
    for i in range(1, int(n.max())):
        go = i < n
        x = a * v[np.where(go, L + i, L)]
        if i > 1:
            tr = np.where(go, b * (s1 - s0) + (1 - b) * tr, tr)
        y = (1 - a) * (s1 + tr)
        s0, s1 = np.where(go, s1, s0), np.where(go, x + y, s1)
    out[live_steps] = s1
    return out


def _step_chunks(cnt: np.ndarray, limit: int = _WINDOW_CELLS):
    """Consecutive step ranges whose (steps x longest window) matrix stays under ``limit`` cells."""
    S = len(cnt)
    a = 0
    while a < S:
        checkpoint()
        b = a + 1
        widest = int(cnt[a])
        while b < S and max(widest, int(cnt[b])) * (b + 1 - a) <= limit:
            widest = max(widest, int(cnt[b]))
            b += 1
        yield a, b
        a = b


def _sorted_windows(v, lo, cnt):
    """Each step's window as a sorted row (non-NaN ascending, then +Inf padding, then NaNs); the window
    sizes and NaN counts per row. Prometheus sorts NaNs first; _quantile_rows accounts for that."""
    w = max(int(cnt.max()) if len(cnt) else 0, 1)
    j = np.arange(w)[None, :]
    inside = j < cnt[:, None]
    idx = np.minimum(lo[:, None] + j, len(v) - 1)
    W = np.where(inside, v[idx], np.inf)
    nn = (np.isnan(W) & inside).sum(axis=1)
    W.sort(axis=1)
    return W, cnt, nn


def _quantile_rows(q, W, n, nn):
    """Prometheus' quantile (values sorted with NaNs first) of every row of ``W`` at once."""
    out = np.full(len(n), np.nan)
    has = n > 0
    with np.errstate(**_np_err):
        rank = q * (n - 1)
        fl = np.floor(rank)
        lo = np.maximum(0, fl).astype(np.int64)
        hi = np.minimum(n - 1, lo + 1)
        wgt = rank - fl

        def at(p):  # logical position p: NaN if p < nn, else the (p - nn)-th non-NaN value
            src = np.clip(p - nn, 0, W.shape[1] - 1)
            val = W[np.arange(len(p)), src]
            return np.where(p < nn, np.nan, val)

        r = at(np.where(has, lo, 0)) * (1 - wgt) + at(np.where(has, hi, 0)) * wgt
    r = np.where(q < 0, -np.inf, np.where(q > 1, np.inf, r))
    r = np.where(np.isnan(q), np.nan, r)
    out[has] = r[has]
    return out


def _prefix_window_sums(V, LO, HI):
    """Window sums from compensated prefix sums: the prefix ``P = cumsum(V)`` plus the exact rounding
    error of every step (TwoSum, cumsum adds in order), so ``P[hi] - P[lo]`` keeps what plain prefix
    differences lose; Kahan-class accuracy in O(samples + windows). Finite, non-overflowing input only."""
    P = np.empty(len(V) + 1)
    P[0] = 0.0
    np.cumsum(V, out=P[1:])
    a, s_ = P[:-1], P[1:]
    bb = s_ - a
    err = (a - (s_ - bb)) + (V - bb)
    C = np.empty(len(V) + 1)
    C[0] = 0.0
    np.cumsum(err, out=C[1:])
    out = P[HI] - P[LO]
    dc = C[HI] - C[LO]
    out += dc
    # Where the prefix magnitude could swamp a window of small values (values spanning many orders of
    # magnitude), the bound of what the prefixes lose exceeds an ulp of the window: sum those windows
    # exactly as Prometheus does (Neumaier, in order).
    eps = np.finfo(np.float64).eps
    A = np.empty(len(V) + 1)
    A[0] = 0.0
    np.cumsum(np.abs(V), out=A[1:])
    bound = (eps * eps * len(V) * 4) * A[-1] + (2 * eps) * np.abs(dc)
    bad = bound > (eps / 4) * (A[HI] - A[LO])
    bad &= HI > LO
    if bad.any():
        out[bad] = _kahan_windows(None, V, LO[bad], HI[bad])
    return out


def _linear_regression_windows(name, T, V, LO, HI, ilo, ilast, starts, ts, extra):
    """deriv / predict_linear of every window from compensated prefix sums (Prometheus'
    ``linearRegression``: least squares with x in seconds from the window's first sample, or
    from the evaluation time ``ts`` for predict_linear, also under @; a window whose values are
    all equal has slope 0).

    The sums of x, x^2 and x*y are taken from one origin for the whole batch and moved to each
    window's own origin algebraically (``sum (x-b)^2 = sum x^2 - 2b sum x + n b^2``); with x in
    seconds within a query's range that costs about 1e-12 relative, against the 1e-16 of
    Prometheus' Kahan sums, in O(samples + windows) instead of O(window length) per step.
    Finite values only (see :func:`_prefix_safe`)."""
    t0 = int(T.min()) if len(T) else 0
    X = (T - t0) / 1000.0
    n = (HI - LO).astype(np.float64)
    sx = _prefix_window_sums(X, LO, HI)
    sy = _prefix_window_sums(V, LO, HI)
    sxy = _prefix_window_sums(X * V, LO, HI)
    sxx = _prefix_window_sums(X * X, LO, HI)
    base = (T[ilo] - t0) / 1000.0 if name == "deriv" else (ts[None, :] - t0) / 1000.0
    nz = np.maximum(n, 1.0)
    sumx = sx - n * base
    sumx2 = sxx - 2 * base * sx + n * base * base
    sumxy = sxy - base * sy
    cov = sumxy - sumx * sy / nz
    varx = sumx2 - sumx * sumx / nz
    slope = cov / varx
    intercept = sy / nz - slope * sumx / nz
    # all values of the window equal to its first: no change between neighbours inside it
    d = np.zeros(len(V))
    d[1:] = V[1:] != V[:-1]
    d[starts] = 0
    cs = np.cumsum(d, out=d)
    const = cs[ilast] == cs[ilo]
    first = V[ilo]
    slope = np.where(const, 0.0, slope)
    if name == "deriv":
        return slope
    intercept = np.where(const, first, intercept)
    return slope * extra[0] + intercept


def _prefix_safe(ra: RangeArg, scale: float = 1.0) -> bool:
    """Prefix sums are exact enough only for finite values whose running sums cannot overflow."""
    total = 0
    peak = 0.0
    for _, _, v in ra.series:
        if len(v):
            if not np.isfinite(v).all():
                return False
            peak = max(peak, float(np.abs(v).max()))
            total += len(v)
    return peak * scale * max(total, 1) < 1e306


def _range_func(name, ra: RangeArg, extra, ts, delayed=False):
    if name in _BATCHED or (name in ("sum_over_time", "avg_over_time") and _prefix_safe(ra)):
        return _range_func_batched(name, ra, ts, delayed)
    # x*y with x up to the query's span in seconds (1e10 covers three centuries)
    if name in ("deriv", "predict_linear") and _prefix_safe(ra, 1e10):
        return _range_func_batched(name, ra, ts, delayed, extra)
    S = len(ts)
    labels, Vs, Ps = [], [], []
    keep_name = name in ("last_over_time", "first_over_time")
    rng_s = ra.range_ms / 1000.0
    te = ra.te
    for k, (lab, t, v) in enumerate(ra.series):
        if not k & 255:
            checkpoint()
        lo, hi = ra.lo[k], ra.hi[k]
        cnt = hi - lo
        nonempty = cnt > 0
        if not nonempty.any():
            continue
        ilo = np.minimum(lo, len(t) - 1)
        ilast = np.maximum(hi - 1, 0)
        with np.errstate(**_np_err):
            if name in ("rate", "increase", "delta"):
                ok = cnt >= 2
                first, last = v[ilo], v[ilast]
                ft, lt = t[ilo], t[ilast]
                result = last - first
                if name != "delta":
                    c = np.zeros(len(v))
                    c[1:] = np.where(v[1:] < v[:-1], v[:-1], 0.0)
                    cs = np.cumsum(c)
                    result = result + (cs[ilast] - cs[ilo])
                dstart = (ft - (te - ra.range_ms)) / 1000.0
                dend = (te - lt) / 1000.0
                sampled = (lt - ft) / 1000.0
                avg = sampled / np.maximum(cnt - 1, 1)
                thr = avg * 1.1
                dstart = np.where(dstart >= thr, avg / 2, dstart)
                if name != "delta":
                    dz = np.where((result > 0) & (first >= 0), sampled * (first / result), dstart)
                    dstart = np.minimum(dstart, np.where(np.isnan(dz), dstart, dz))
                dend = np.where(dend >= thr, avg / 2, dend)
                factor = (sampled + dstart + dend) / sampled
                if name == "rate":
                    factor = factor / rng_s
                out = result * factor
            elif name in ("irate", "idelta"):
                ok = cnt >= 2
                iprev = np.maximum(hi - 2, 0)
                last, prev = v[ilast], v[iprev]
                if name == "irate":
                    dt = (t[ilast] - t[iprev]) / 1000.0
                    out = np.where(last < prev, last, last - prev) / dt
                    ok &= dt > 0
                else:
                    out = last - prev
            elif name == "sum_over_time":
                ok, out = nonempty, _kahan_windows(t, v, lo, hi)
            elif name == "count_over_time":
                ok, out = nonempty, cnt.astype(np.float64)
            elif name == "present_over_time":
                ok, out = nonempty, np.ones(S)
            elif name == "avg_over_time":
                s = _kahan_windows(t, v, lo, hi)
                out = s / cnt
                ok = nonempty
                bad = np.isinf(out) & nonempty
                if bad.any():
                    seg, gv, _, _ = _gather(t, v, lo, hi)
                    alt = np.bincount(seg, weights=gv / cnt[seg], minlength=S)
                    hasinf = np.bincount(seg, weights=np.isinf(gv).astype(float), minlength=S) > 0
                    out = np.where(bad & ~hasinf, alt, out)
            elif name == "min_over_time":
                ok, out = nonempty, _reduce_windows(np.fmin, v, lo, hi, np.nan)
            elif name == "max_over_time":
                ok, out = nonempty, _reduce_windows(np.fmax, v, lo, hi, np.nan)
            elif name == "last_over_time":
                ok, out = nonempty, v[ilast]
            elif name == "first_over_time":
                ok, out = nonempty, v[ilo]
            elif name == "ts_of_last_over_time":
                ok, out = nonempty, t[ilast] / 1000.0
            elif name == "ts_of_first_over_time":
                ok, out = nonempty, t[ilo] / 1000.0
            elif name in ("changes", "resets"):
                d = np.zeros(len(v))
                if name == "changes":
                    d[1:] = ~((v[1:] == v[:-1]) | (np.isnan(v[1:]) & np.isnan(v[:-1])))
                else:
                    d[1:] = v[1:] < v[:-1]
                cs = np.cumsum(d)
                ok, out = nonempty, cs[ilast] - cs[ilo]
            elif name in ("deriv", "predict_linear"):
                seg, gv, gt, _ = _gather(t, v, lo, hi)
                ok = cnt >= 2
                base = t[ilo] if name == "deriv" else ts
                x = (gt - base[seg]) / 1000.0
                c = np.maximum(cnt, 1).astype(np.float64)
                sx = np.bincount(seg, weights=x, minlength=S)
                sy = np.bincount(seg, weights=gv, minlength=S)
                sxy = np.bincount(seg, weights=x * gv, minlength=S)
                sx2 = np.bincount(seg, weights=x * x, minlength=S)
                vmin = _reduce_windows(np.minimum, v, lo, hi, np.nan)
                vmax = _reduce_windows(np.maximum, v, lo, hi, np.nan)
                const = (vmin == vmax)
                cov = sxy - sx * sy / c
                varx = sx2 - sx * sx / c
                slope = cov / varx
                intercept = sy / c - slope * sx / c
                first = v[ilo]
                slope = np.where(const, np.where(np.isinf(first), np.nan, 0.0), slope)
                intercept = np.where(const, np.where(np.isinf(first), np.nan, first), intercept)
                out = slope if name == "deriv" else slope * extra[0] + intercept
            elif name in ("quantile_over_time", "mad_over_time"):
                out = np.full(S, np.nan)
                q = extra[0] if name == "quantile_over_time" else None
                for a, b in _step_chunks(cnt):
                    W, n_, nn = _sorted_windows(v, lo[a:b], cnt[a:b])
                    if name == "quantile_over_time":
                        out[a:b] = _quantile_rows(q[a:b], W, n_, nn)
                    else:
                        med = _quantile_rows(np.full(b - a, 0.5), W, n_, nn)
                        # deviations of the non-NaN values; NaN inputs and NaN deviations count as NaNs
                        real = np.arange(W.shape[1])[None, :] < (n_ - nn)[:, None]
                        with np.errstate(**_np_err):
                            D = np.where(real, np.abs(W - med[:, None]), np.inf)
                        dn = np.isnan(D)
                        D[dn] = np.inf
                        D.sort(axis=1)
                        out[a:b] = _quantile_rows(np.full(b - a, 0.5), D, n_, nn + dn.sum(axis=1))
                ok = nonempty
            elif name in ("ts_of_max_over_time", "ts_of_min_over_time"):
                ok, out = nonempty, _ts_of_extreme(name == "ts_of_max_over_time", t, v, lo, cnt)
            elif name == "double_exponential_smoothing":
                ok = cnt >= 2
                out = _double_exponential_smoothing(v, lo, cnt, ok, extra[0], extra[1])
            else:
                raise ExecutionError(f"function {name!r} is not supported")
        labels.append(lab if keep_name else _drop_name(lab, delayed))
        Vs.append(np.asarray(out, dtype=np.float64))
        Ps.append(ok)
    V = np.array(Vs, dtype=np.float64).reshape(len(labels), S)
    P = np.array(Ps, dtype=bool).reshape(len(labels), S)
    return _check_dupes(VS(labels, V, P))


# ---------------------------------------------------------------- histogram_quantile (classic buckets)

def _parse_le(s):
    try:
        return float(s.replace("_", "")) if s.strip() == s else None
    except ValueError:
        return None


def _histogram_quantile(q, vec, S, ev):
    return _per_classic_histogram(vec, S, ev, lambda les, C, P: _bucket_quantile_steps(q, les, C, P))


def _histogram_fraction(lower, upper, vec, S, ev):
    return _per_classic_histogram(vec, S, ev, lambda les, C, P: _bucket_fraction_steps(lower, upper, les, C, P))


def _per_classic_histogram(vec, S, ev, fn):
    """``fn(les, counts, presence) -> (values, presence)`` for each classic histogram in ``vec``,
    one output series each (labels without ``le``)."""
    labels, Vs, Ps = [], [], []
    for key, les, rows in _classic_histograms(vec, ev):
        out, anyp = fn(les, vec.V[rows], vec.P[rows])
        labels.append(key)
        Vs.append(out)
        Ps.append(anyp)
    V = np.array(Vs).reshape(len(labels), S)
    P = np.array(Ps, dtype=bool).reshape(len(labels), S)
    return _check_dupes(VS(labels, V, P))


def _coalesced_buckets(les, C, P):
    """(steps with any bucket, distinct bounds, their summed counts, their presence): buckets of
    equal bound added together at each step (rows are sorted, so equal bounds are adjacent)."""
    U, first = np.unique(les, return_index=True)
    Cd = np.add.reduceat(np.where(P, C, 0.0), first, axis=0)
    Pd = np.logical_or.reduceat(P, first, axis=0)
    return P.any(axis=0), U, Cd, Pd


def _bucket_fraction_steps(lower, upper, les, C, P):
    """Prometheus' ``BucketFraction`` of one bucket set at every step at once (``les`` ascending,
    ``C``/``P`` buckets x steps, ``lower``/``upper`` per step): among the buckets present at a
    step, the last must be +Inf and equal bounds are added together (counts are not made
    monotonic); the ranks of ``lower`` and ``upper`` are interpolated linearly inside their
    buckets (the first bucket starts at 0, or at -Inf when its bound is <= 0, where nothing is
    interpolated), and the fraction is their difference over the total. One numpy step per
    bucket, as Go's loop per bucket."""
    S = C.shape[1]
    anyp, U, Cd, Pd = _coalesced_buckets(les, C, P)
    K = len(U)
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), (S,))
    upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), (S,))
    with np.errstate(**_np_err):
        count = Cd[K - 1]
        valid = Pd[K - 1] & (U[K - 1] == np.inf)
        f = Pd.argmax(axis=0)  # the first bucket present at each step
        prev_bound = np.where(U[f] <= 0, -np.inf, 0.0)
        rank = np.zeros(S)
        lo_rank, hi_rank = np.zeros(S), np.zeros(S)
        lo_set, hi_set = np.zeros(S, bool), np.zeros(S, bool)
        for k in range(K):
            act = Pd[k] & ~(lo_set & hi_set)
            lb, ub, bc = prev_bound, U[k], Cd[k]
            m = act & ~lo_set & (lb >= lower)
            lo_rank, lo_set = np.where(m, rank, lo_rank), lo_set | m
            m = act & ~hi_set & (lb >= upper)
            hi_rank, hi_set = np.where(m, rank, hi_rank), hi_set | m
            act &= ~(lo_set & hi_set)
            infinite = lb == -np.inf
            m = act & ~lo_set & (lb < lower) & (ub > lower)
            lo_rank = np.where(m, np.where(infinite, bc, rank + (bc - rank) * (lower - lb) / (ub - lb)), lo_rank)
            lo_set |= m
            m = act & ~hi_set & (lb < upper) & (ub > upper)
            hi_rank = np.where(m, np.where(infinite, bc, rank + (bc - rank) * (upper - lb) / (ub - lb)), hi_rank)
            hi_set |= m
            act &= ~(lo_set & hi_set)
            rank = np.where(act, bc, rank)
            prev_bound = np.where(Pd[k], ub, prev_bound)
        lo_rank = np.where(~lo_set | (lo_rank > count), count, lo_rank)
        hi_rank = np.where(~hi_set | (hi_rank > count), count, hi_rank)
        r = (hi_rank - lo_rank) / count
        r = np.where(lower >= upper, 0.0, r)
        r = np.where((count == 0) | np.isnan(lower) | np.isnan(upper) | ~valid, np.nan, r)
    return np.where(anyp, r, np.nan), anyp


def _classic_histograms(vec, ev):
    """``(labels, les ascending, rows)`` per classic histogram in ``vec``. Buckets are grouped by
    their labels without ``le`` (the metric name too: two histograms that differ only by name are
    two groups, whose results then collide once the name is dropped); a malformed ``le`` is
    warned about and its series left out, as Prometheus' ``resetHistograms``."""
    groups = {}
    for i, l in enumerate(vec.labels):
        le = None
        rest = []
        name = None
        for kv in l:
            if kv[0] == "le":
                le = kv[1]
            elif kv[0] != NAME:
                rest.append(kv)
            elif ev.delayed:
                rest.append(_drop_name((kv,), True)[0])
            else:
                name = kv[1]
        if le is None:
            continue
        f = _parse_le(le)
        if f is None:
            ev.ctx.warnings.append(f'PromQL warning: bucket label "le" is missing or has a malformed value of "{le}"')
            continue
        groups.setdefault((tuple(rest), name), []).append((f, i))
    for (key, _), items in groups.items():
        items.sort(key=lambda x: x[0])
        yield key, np.array([x[0] for x in items]), np.array([x[1] for x in items])


def _bucket_quantile_steps(q, les, C, P):
    """Prometheus' ``bucketQuantile`` of one bucket set at every step at once: ``les`` ascending
    (one per row), ``C``/``P`` (buckets x steps) counts and presence, ``q`` per step. At each step
    only the buckets present count: the highest must be +Inf, equal bounds are added together, at
    least two bounds must remain, NaN counts are ignored by the running maximum that makes the
    counts monotonic, and the quantile is interpolated linearly inside the bucket where the rank
    falls (the lowest bucket from 0 unless its bound is <= 0; above the last finite bound, that
    bound). Returns (values, steps with any bucket)."""
    S = C.shape[1]
    anyp, U, Cd, Pd = _coalesced_buckets(les, C, P)
    K = len(U)
    with np.errstate(**_np_err):
        cum = np.maximum.accumulate(np.where(Pd & ~np.isnan(Cd), Cd, -np.inf), axis=0)
        kk = np.arange(K)[:, None]
        prev_incl = np.maximum.accumulate(np.where(Pd, kk, -1), axis=0)  # last present bound <= k
        prev = np.vstack([np.full((1, S), -1), prev_incl[:-1]])  # last present bound < k
        valid = Pd[K - 1] & (U[K - 1] == np.inf) & (Pd.sum(axis=0) >= 2)
        total = cum[K - 1]
        valid &= total != 0
        rank = q * total
        cand = Pd & (cum >= rank[None, :]) & (kk < K - 1)
        b = np.where(cand.any(axis=0), cand.argmax(axis=0), K - 1)
        cols = np.arange(S)
        pb = prev[b, cols]
        end = U[b]
        cnt = cum[b, cols]
        start = np.where(pb >= 0, U[np.maximum(pb, 0)], 0.0)
        below = np.where(pb >= 0, cum[np.maximum(pb, 0), cols], 0.0)
        r = start + (end - start) * ((rank - below) / (cnt - below))
        r = np.where((pb < 0) & (end <= 0), end, r)  # lowest bucket with a bound <= 0: that bound
        second_last = U[np.maximum(prev[K - 1], 0)]
        r = np.where(b == K - 1, second_last, r)  # rank above every finite bucket
        r = np.where(valid, r, np.nan)
        r = np.where(q < 0, -np.inf, np.where(q > 1, np.inf, r))
        r = np.where(np.isnan(q), np.nan, r)
    return np.where(anyp, r, np.nan), anyp
