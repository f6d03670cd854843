"""The TSDB's exemplar buffer (``pythanos.tsdb.exemplars``) through ``TSDB.append_exemplars``: the
bound, eviction of the oldest, Prometheus' validation rules, restore from the WAL, and nothing kept
or logged with ``max_exemplars`` 0. (Compatibility with Thanos' receiver is tested against a real
one in ``test_receive_exemplars.py``.)"""
from __future__ import annotations

import numpy as np

from pythanos.tsdb import exemplars as ex
from pythanos.tsdb import wal, walrecords as wr
from pythanos.tsdb.db import TSDB
from pythanos.tsdb.head import blob_from_labels, blobs_from_labels
from pythanos.tsdb.labels import Matcher

ALL = [[Matcher("=~", "__name__", ".+")]]


def _append(db: TSDB, series: list[int], traces: list[str], ts: list[int], vs=None) -> np.ndarray:
    buf, off = blobs_from_labels([{"__name__": "m", "s": str(i)} for i in range(4)])
    return db.append_exemplars(buf, off, series, [blob_from_labels({"trace_id": t}) for t in traces],
                               vs if vs is not None else [1.0] * len(ts), ts)


def _open(path, cap: int) -> TSDB:
    db = TSDB.open(path, max_exemplars=cap)
    buf, off = blobs_from_labels([{"__name__": "m", "s": str(i)} for i in range(4)])
    db.append(buf, off, [0, 1, 2, 3], [1, 1, 1, 1], [0.0] * 4)
    return db


def _stored(db: TSDB) -> list[tuple[str, str, int]]:
    return [(dict(s.series_labels)["s"], dict(lbls)["trace_id"], int(t))
            for s in db.exemplars.select(-(1 << 62), 1 << 62, ALL) for lbls, t in zip(s.labels, s.timestamps)]


def test_bound_evicts_the_oldest_and_series_leave_the_index(tmp_path):
    db = _open(tmp_path / "db", 4)
    rng = np.random.default_rng(1)
    t = 100
    for _ in range(50):
        k = int(rng.integers(1, 4))
        series = rng.integers(0, 4, size=k).tolist()
        _append(db, series, [f"x{t + i}" for i in range(k)], [t + i for i in range(k)])
        t += k
        assert len(db.exemplars) <= 4
    assert len(db.exemplars) == 4
    got = _stored(db)
    # the four newest, whichever series they belong to; series without one are gone from the index
    assert sorted(x[2] for x in got) == list(range(t - 4, t))
    assert db.exemplars.num_series == len({x[0] for x in got})
    db.close()


def test_validation_and_wal_restore(tmp_path):
    db = _open(tmp_path / "db", 10)
    st = _append(db, [0, 1], ["a", "b"], [1000, 1000])
    assert st.tolist() == [ex.ADDED, ex.ADDED]
    st = _append(db, [0, 0, 1, 2, 2], ["a", "c", "b", "é" * 120, "é" * 121], [1000, 999, 1000, 5, 6], [1.0, 1, 0.5, 1, 1])
    # same as newest: duplicate; older: out of order; same time, smaller value: out of order;
    # 128 runes (name + value) taken, 129 refused
    assert st.tolist() == [ex.DUPLICATE, ex.OUT_OF_ORDER, ex.OUT_OF_ORDER, ex.ADDED, ex.LABEL_LENGTH]
    before = _stored(db)
    assert len(before) == 3
    db.close()
    db = TSDB.open(tmp_path / "db", max_exemplars=10)
    assert _stored(db) == before
    db.close()
    db = TSDB.open(tmp_path / "db", max_exemplars=2)  # a smaller buffer keeps the newest
    assert _stored(db) == before[-2:]
    db.close()


def test_max_exemplars_0_neither_keeps_nor_logs(tmp_path):
    db = _open(tmp_path / "db", 0)
    st = _append(db, [0], ["a"], [1000])
    assert st.tolist() == [ex.DISABLED]
    assert _stored(db) == []
    db.close()
    kinds = {r[0] for r in wal.read_records(str(tmp_path / "db" / "wal"))}
    assert wr.SAMPLES in kinds and wr.EXEMPLARS not in kinds
