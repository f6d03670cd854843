"""The in-memory head (``tsdb.head`` over the ``_head`` kernel): label blobs and sample batches as a
receiver hands them over (a remote-write decoder's output, or a WAL being replayed), with
truncation, out-of-order windows and reads in between.

The input is a program: the first byte picks the out-of-order window and chunk sizes, then each
op byte is followed by its operands: create series from raw blob bytes (malformed ones are fine:
ref 0 and a message naming the blob, nothing else), append or replay a batch (refs may be
unknown, times anything from near a base to the int64 extremes, values NaN / StaleNaN / inf),
truncate, read. Checked after each step: statuses are known codes, every series reads back
sorted unique times, the in-order samples are exactly those reported appended, and the index
agrees with the kernel."""
from __future__ import annotations

import struct

import numpy as np

from pythanos.tsdb.head import (AT_COMMIT, BAD_REF, DUP_OK, DUPLICATE, OK, OOO_OK, OUT_OF_BOUNDS, OUT_OF_ORDER,
                                TOO_OLD, Head)
from pythanos.tsdb.labels import Matcher

_KNOWN = {OK, DUP_OK, OUT_OF_ORDER, DUPLICATE, OUT_OF_BOUNDS, TOO_OLD, OOO_OK, BAD_REF,
          DUP_OK | AT_COMMIT, OUT_OF_ORDER | AT_COMMIT, DUPLICATE | AT_COMMIT, TOO_OLD | AT_COMMIT}
_VALUES = (0.0, 1.0, -0.0, float("nan"), float("inf"), -1.5,
           np.array([0x7FF0000000000002], np.uint64).view(np.float64)[0], 1e300)
_BASE = 1_700_000_000_000


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.d, self.i = data, 0

    def byte(self) -> int:
        if self.i >= len(self.d):
            raise EOFError
        self.i += 1
        return self.d[self.i - 1]

    def take(self, n: int) -> bytes:
        if self.i + n > len(self.d):
            raise EOFError
        self.i += n
        return self.d[self.i - n:self.i]

    def time(self) -> int:
        b = self.byte()
        if b & 0x80:  # a raw int64: the extremes
            return struct.unpack("<q", self.take(8))[0]
        return _BASE + struct.unpack("<h", self.take(2))[0] * 1000 * (1 + (b & 7))


def test_one_input(data: bytes) -> None:
    """Run the program in ``data``; only the documented outcomes may occur."""
    r = _Reader(data)
    try:
        cfg = r.byte()
    except EOFError:
        return
    h = Head(ooo_window=(0, 1, 60_000, 3_600_000)[cfg & 3], samples_per_chunk=(120, 4, 1, 240)[(cfg >> 2) & 3],
             chunk_range=(7_200_000, 4_000, 1)[((cfg >> 4) & 3) % 3], capacity=1 + (cfg >> 6), _hash_mask=0xF)
    appended: dict[int, dict[int, int]] = {}
    try:
        while True:
            op = r.byte() % 5
            if op == 0:
                blobs = [r.take(r.byte() % 24) for _ in range(r.byte() % 6)]
                buf = b"".join(blobs)
                offs = np.concatenate(([0], np.cumsum([len(b) for b in blobs]))).astype(np.int64)
                refs, created = h.get_or_create(buf, offs, strict=False)
                for b, ref in zip(blobs, refs.tolist()):
                    if ref:
                        assert h.lookup(b, [0, len(b)]).tolist() == [ref]
            elif op in (1, 2):
                k = r.byte() % 40
                rr = [r.byte() % 12 for _ in range(k)]
                tt = [r.time() for _ in range(k)]
                vv = [_VALUES[r.byte() % len(_VALUES)] for _ in range(k)]
                st = (h.append if op == 1 else h.replay)(rr, tt, vv)
                assert set(st.tolist()) <= _KNOWN, st
                for ref, t, v, s in zip(rr, tt, vv, st.tolist()):
                    if s == OK:
                        appended.setdefault(ref, {})[t] = np.float64(v).view(np.int64)
            elif op == 3:
                removed = h.truncate(r.time())
                for ref in removed.tolist():
                    appended.pop(ref, None)
            else:
                lbls, hc = h.query([Matcher.re("__name__", ".*")] if r.byte() & 1 else ())
                assert len(lbls) == len(hc.refs) and lbls == sorted(lbls)
            _check(h, appended)
    except EOFError:
        pass
    _check(h, appended)


def _check(h: Head, appended: dict[int, dict[int, int]]) -> None:
    refs = h.all_refs()
    assert len(refs) == h.num_series and h.alive(refs).all()
    for lbls, t, v in h.series():
        assert np.all(np.diff(t) > 0), lbls
    # in-order samples: what was reported appended and not truncated away (truncation works on
    # whole chunks, so only a suffix of each series is required)
    hc = h.select(refs)
    from pythanos.tsdb.chunkenc import decode_xor

    starts = hc.starts
    for i, ref in enumerate(refs.tolist()):
        ts, vs = [], []
        for j in range(int(starts[i]), int(starts[i + 1])):
            t, v = decode_xor(hc.chunk(j))
            ts += t.tolist()
            vs += v.view(np.int64).tolist()
        want = appended.get(ref, {})
        got = dict(zip(ts, vs))
        assert all(want.get(t) == x for t, x in got.items()), ref
        if ts:
            assert all(got.get(t) == x for t, x in want.items() if t >= ts[0]), ref
