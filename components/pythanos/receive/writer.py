"""Append a decoded remote-write request (or the part of it this receiver owns) to a tenant's TSDB.

As Thanos' ``pkg/receive/writer.go``: appending is per sample, never all-or-nothing. A series with bad
labels and a bad sample are counted and skipped; everything else is stored; then one error per kind
is reported with Thanos' texts (``add 3 samples: out of order sample``), and any of them makes the
answer a conflict (409). Unlike Thanos, unsorted labels are sorted and stored (the decoder sorts them,
as Prometheus 3 does), not refused. Everything here works on whole arrays.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..remote import write as rw
from ..tsdb import head as hd

__all__ = ["LocalWrite", "write_local", "gather_ranges", "LABEL_ERRORS"]

# Thanos' texts for label-set errors (labelpb), and Prometheus' for what Thanos has no name for.
LABEL_ERRORS = {
    rw.STATUS_DUPLICATE_LABEL: "label set contains duplicate label names",
    rw.STATUS_EMPTY_LABEL_NAME: "label set contains a label with empty name or value",
}

_SAMPLE_ERRORS = (
    (hd.OUT_OF_ORDER, hd.ERR_OUT_OF_ORDER),
    (hd.DUPLICATE, hd.ERR_DUPLICATE),
    (hd.OUT_OF_BOUNDS, hd.ERR_OUT_OF_BOUNDS),
    (hd.TOO_OLD, hd.ERR_TOO_OLD),
)


@dataclass
class LocalWrite:
    """What one local append did: samples stored and the errors, in Thanos' words."""

    samples_written: int = 0
    histograms_written: int = 0
    exemplars_written: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def conflict(self) -> bool:
        return bool(self.errors)


def gather_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Indices ``[s0, e0) + [s1, e1) + ...`` in one array (no Python loop)."""
    lens = (ends - starts).astype(np.int64)
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = starts.astype(np.int64) - np.concatenate(([0], np.cumsum(lens)[:-1]))
    return np.repeat(shift, lens) + np.arange(total, dtype=np.int64)


def _select(d: rw.DecodedWrite, pos: Optional[np.ndarray]):
    """(blob buffer, blob offsets, per-sample series index, ts, vs) of the series at ``pos`` (None: all)."""
    boff = d.blob_offsets
    soff = d.sample_offsets
    if pos is None:
        return d.blobs, boff, d.sample_series, d.sample_ts, d.sample_values
    bidx = gather_ranges(boff[pos], boff[pos + 1])
    blobs = np.frombuffer(d.blobs, dtype=np.uint8)[bidx].tobytes()
    blens = boff[pos + 1] - boff[pos]
    new_boff = np.concatenate(([0], np.cumsum(blens))).astype(np.int64)
    sidx = gather_ranges(soff[pos], soff[pos + 1])
    counts = soff[pos + 1] - soff[pos]
    series = np.repeat(np.arange(len(pos), dtype=np.int64), counts)
    return blobs, new_boff, series, d.sample_ts[sidx], d.sample_values[sidx]


def _histograms(db, d: rw.DecodedWrite, mine: Optional[np.ndarray], res: "LocalWrite") -> Optional[tuple]:
    """Native histograms of the chosen, valid series (the rare path). Returns (series index,
    accepted) per histogram in request order, for the exemplar rule below, or None."""
    if not int(d.n_histograms.sum()):
        return None
    hs = d.histograms()
    if mine is not None:
        hs = [h for h in hs if mine[h.series]]
    st = np.asarray(db.append_histograms(d.blobs, d.blob_offsets, hs))
    res.histograms_written = int(np.isin(st, (hd.OK, hd.DUP_OK, hd.OOO_OK)).sum())
    _count_errors(st, res, "samples")
    return np.array([h.series for h in hs], dtype=np.int64), _accepted(st)


def _accepted(st: np.ndarray) -> np.ndarray:
    return ((st & hd.AT_COMMIT) != 0) | np.isin(st, (hd.OK, hd.DUP_OK, hd.OOO_OK))


def _exemplars(db, d: rw.DecodedWrite, mine: Optional[np.ndarray], existed: np.ndarray,
               last_ok: np.ndarray, has_last: np.ndarray, res: "LocalWrite") -> None:
    """Exemplars of the chosen series, under Thanos' writer rule: a series' exemplars are appended
    only while it has a ref after its samples, i.e. its last sample (or histogram) was accepted,
    or, with none, the series already existed; the others are dropped without an error. Refused
    ones are counted with Prometheus' texts (a duplicate of the stored newest is ignored)."""
    from ..tsdb import exemplars as ex_mod

    ex = d.exemplars()
    if not len(ex.series):
        return
    eligible = np.where(has_last, last_ok, existed)
    if mine is not None:
        eligible &= mine
    idx = np.flatnonzero(eligible[ex.series])
    if not len(idx):
        return
    st = np.asarray(db.append_exemplars(d.blobs, d.blob_offsets, ex.series[idx],
                                        [ex.labels[i] for i in idx.tolist()], ex.values[idx], ex.timestamps[idx]))
    # a duplicate of the stored newest counts as written, as Prometheus' RW 2.0 handler counts it (no error)
    res.exemplars_written = int(np.isin(st, (ex_mod.ADDED, ex_mod.DUPLICATE)).sum())
    for code, text in ((ex_mod.OUT_OF_ORDER, ex_mod.ERR_OUT_OF_ORDER), (ex_mod.LABEL_LENGTH, ex_mod.ERR_LABEL_LENGTH)):
        n = int((st == code).sum())
        if n:
            res.errors.append(f"add {n} exemplars: {text}")


def write_local(db, d: rw.DecodedWrite, positions: Optional[np.ndarray] = None, *,
                too_far_in_future_ms: int = 0, now_ms: Optional[int] = None, exemplars: bool = False) -> LocalWrite:
    """Append the series of ``d`` at ``positions`` (None: all) to ``db``; see the module docstring.
    Native histograms are stored (head, WAL, blocks); exemplars only with ``exemplars``
    (``--tsdb.max-exemplars`` > 0, as Thanos): the TSDB's exemplar buffer and WAL."""
    res = LocalWrite()
    status = d.status if positions is None else d.status[positions]
    bad = status != rw.STATUS_OK
    if bad.any():
        idx = np.flatnonzero(bad)
        for code in np.unique(status[idx]).tolist():
            n = int((status == code).sum())
            text = LABEL_ERRORS.get(code)
            if text is None:  # name the first such series, as Prometheus does
                first = int(idx[status[idx] == code][0])
                text = d.series_error(first if positions is None else int(positions[first]))
            res.errors.append(f"add {n} series: {text}")
        keep = np.flatnonzero(~bad)
        positions = keep if positions is None else positions[keep]
    if positions is not None and len(positions) == 0:
        return res
    mine = None
    if positions is not None:
        mine = np.zeros(d.n_series, dtype=bool)
        mine[positions] = True
    want_ex = exemplars and bool(int(d.n_exemplars.sum()))
    blobs, boff, series, ts, vs = _select(d, positions)
    statuses = np.zeros(0, dtype=np.uint8)
    future = None
    if len(ts):
        if too_far_in_future_ms > 0:
            limit = (now_ms if now_ms is not None else int(time.time() * 1000)) + too_far_in_future_ms
            future = ts > limit
            if not future.any():
                future = None
        keep = None if future is None else ~future
        got = db.append(blobs, boff, series[keep] if keep is not None else series,
                        ts[keep] if keep is not None else ts, vs[keep] if keep is not None else vs).status
        if keep is None:
            statuses = got
        else:  # a sample too far in the future is refused (Thanos: out of bounds)
            statuses = np.full(len(ts), hd.OUT_OF_BOUNDS, dtype=np.uint8)
            statuses[keep] = got
        # a sample flagged AT_COMMIT passed Append and lost only to an earlier sample of the same batch:
        # Prometheus and Thanos report it as accepted (and drop it); so do we
        res.samples_written = int(np.isin(got, (hd.OK, hd.DUP_OK, hd.OOO_OK)).sum())
        _count_errors(got, res, "samples", int(future.sum()) if future is not None else 0)
    hist = _histograms(db, d, mine, res)
    if want_ex:
        # per series (request index): whether its last sample/histogram was accepted
        has_last = np.zeros(d.n_series, dtype=bool)
        last_ok = np.zeros(d.n_series, dtype=bool)
        if len(ts):
            sel = np.arange(d.n_series) if positions is None else positions
            ends = d.sample_offsets[sel + 1] - d.sample_offsets[sel]
            cum = np.cumsum(ends)
            with_s = ends > 0
            has_last[sel[with_s]] = True
            last_ok[sel[with_s]] = _accepted(statuses[cum[with_s] - 1])
        if hist is not None and len(hist[0]):
            hser, hok = hist
            has_last[hser] = True
            last_ok[hser] = hok  # fancy assignment: the last histogram of a series wins
        # a series without samples here keeps its exemplars if it exists (Thanos: GetRef finds it;
        # here also when an entry of this request created it, whichever came first)
        existed = db.head.lookup(d.blobs, d.blob_offsets) != 0
        _exemplars(db, d, mine, existed, last_ok, has_last, res)
    return res


def _count_errors(statuses: np.ndarray, res: LocalWrite, what: str, out_of_bounds: int = 0) -> None:
    """One Thanos text per refused kind (``add 2 samples: out of order sample``); an AT_COMMIT
    sample is accepted (see above), a histogram failing validation is named as Prometheus names it."""
    counts = {code: int((statuses == code).sum()) for code, _ in _SAMPLE_ERRORS}
    counts[hd.OUT_OF_BOUNDS] += out_of_bounds
    for code, text in _SAMPLE_ERRORS:
        if counts[code]:
            res.errors.append(f"add {counts[code]} {what}: {text}")
    invalid = getattr(hd, "INVALID", None)
    if invalid is not None and int((statuses == invalid).sum()):
        res.errors.append(f"add {int((statuses == invalid).sum())} {what}: invalid histogram")
