"""The stateless ruler's remote-write queue on disk (``pythanos.remote.walqueue``): batches come
back in order per reader, positions survive a reopen without a close (as after kill -9), disk is
given back once every reader has passed a segment, and data past the age bound is dropped and
counted. The end-to-end proof with a real Prometheus is in test_rule.py."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from pythanos.remote.walqueue import POSITIONS, WALQueue
from pythanos.tsdb import wal as walmod


def batch(n: int, t0: int, name: str = "m") -> list:
    return [((("__name__", name), ("i", str(i % 3))), t0 + i, float(i)) for i in range(n)]


def drain(q: WALQueue, reader: str, commit: bool = True) -> list:
    out = []
    while (b := q.read(reader)) is not None:
        out += [(b.series[i], t, v) for i, t, v in zip(b.index.tolist(), b.ts.tolist(), b.vs.tolist())]
        if not commit:
            break
        q.commit(reader, b.end)
    return out


def test_each_reader_gets_every_batch_in_order(tmp_path):
    q = WALQueue(tmp_path / "wal", ["a", "b"])
    sent = batch(5, 1000) + batch(4, 2000, "n")
    assert q.append(sent[:5]) == 5 and q.append(sent[5:]) == 4 and q.append([]) == 0
    assert drain(q, "a") == sent
    assert q.read("a") is None
    assert drain(q, "b") == sent
    more = batch(2, 3000)
    q.append(more)
    assert drain(q, "a") == more
    q.close()


def test_positions_survive_a_crash_and_resend_only_the_unacknowledged(tmp_path):
    d = tmp_path / "wal"
    q = WALQueue(d, ["a"])
    q.append(batch(3, 1000))
    q.append(batch(3, 2000))
    b = q.read("a")
    q.commit("a", b.end)  # the first batch acknowledged, the second not
    del q  # no close: the process died
    q2 = WALQueue(d, ["a", "new"])
    assert drain(q2, "a") == batch(3, 2000)
    assert drain(q2, "new") == []  # a new endpoint starts now, as Prometheus' queue does
    q2.append(batch(1, 3000))
    assert drain(q2, "new") == batch(1, 3000)
    q2.close()


def test_unreadable_positions_resend_everything_rather_than_lose_it(tmp_path):
    d = tmp_path / "wal"
    q = WALQueue(d, ["a"])
    q.append(batch(3, 1000))
    drain(q, "a")
    q.close()
    (d / POSITIONS).write_text("{not json")
    q = WALQueue(d, ["a"])
    assert drain(q, "a") == batch(3, 1000)
    q.close()


def test_segments_are_deleted_once_every_reader_passed_them(tmp_path):
    d = tmp_path / "wal"
    q = WALQueue(d, ["a", "b"], rotate_bytes=64 << 10)
    for k in range(40):
        q.append(batch(300, k * 1000))
    assert drain(q, "a") and q.read("a") is None
    assert walmod.list_segments(d) == [0]  # b has read nothing: nothing is given back
    drain(q, "b")
    # both passed the whole active segment and it is past rotate_bytes: cut and given back
    assert walmod.list_segments(d) == [1]
    assert q.pos == {"a": (1, 0), "b": (1, 0)}
    q.append(batch(2, 99_000))
    assert drain(q, "b") == batch(2, 99_000)
    q.close()


def test_reopen_after_rotation_resumes_across_segments(tmp_path):
    d = tmp_path / "wal"
    q = WALQueue(d, ["a"])
    q.append(batch(2, 1000))
    q.close()
    q = WALQueue(d, ["a"])  # a new segment after each open, as Prometheus
    q.append(batch(2, 2000))
    assert walmod.list_segments(d) == [0, 1]
    assert drain(q, "a") == batch(2, 1000) + batch(2, 2000)
    assert walmod.list_segments(d) == [1]
    q.close()


def test_segments_past_the_age_bound_are_dropped_and_counted(tmp_path):
    d = tmp_path / "wal"
    dropped = []
    q = WALQueue(d, ["a", "b"], on_dropped=lambda reader, n: dropped.append((reader, n)))
    q.append(batch(7, 1000))
    drain(q, "a")
    q.close()
    old = time.time() - 5 * 3600
    os.utime(walmod.segment_name(d, 0), (old, old))
    q = WALQueue(d, ["a", "b"], on_dropped=lambda reader, n: dropped.append((reader, n)))
    assert dropped == [("b", 7)]  # a had sent them all
    assert walmod.list_segments(d) == [1]
    q.append(batch(1, 5000))
    assert drain(q, "b") == batch(1, 5000)
    q.close()


def test_a_damaged_segment_is_named_and_skipped(tmp_path, caplog):
    d = tmp_path / "wal"
    q = WALQueue(d, ["a"], compression=None)
    q.append(batch(3, 1000))
    q.close()
    q = WALQueue(d, ["a"], compression=None)
    q.append(batch(2, 2000))
    path = walmod.segment_name(d, 0)
    data = bytearray(open(path, "rb").read())
    data[20] ^= 0xFF
    open(path, "wb").write(bytes(data))
    assert drain(q, "a") == batch(2, 2000)
    assert any(path in str(r.__dict__.get("segment", "")) and "fragment checksum mismatch" in r.err
               for r in caplog.records if r.levelname == "ERROR")
    q.close()


def test_many_series_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(3)
    q = WALQueue(tmp_path / "wal", ["a"])
    sent = [((("__name__", "x"), ("s", str(int(k)))), int(t), float(v))
            for k, t, v in zip(rng.integers(0, 500, 5000), rng.integers(0, 1 << 40, 5000), rng.standard_normal(5000))]
    sent.append(((("__name__", "x"), ("s", "nan")), 1, float("nan")))
    q.append(sent)
    got = drain(q, "a")
    assert [g[:2] for g in got] == [s[:2] for s in sent]
    assert np.array_equal(np.array([g[2] for g in got]).view(np.uint64), np.array([s[2] for s in sent]).view(np.uint64))
    q.close()
