"""The select interface a remote querier implements: hints, concurrent selects, the query deadline."""
import threading
import time

import numpy as np
import pytest

from pythanos.promql import Engine, MemoryQueryable, ParseError, QueryTimeoutError, SelectHints

M = 60_000


class Recording(MemoryQueryable):
    """Records every select's window and hints; optionally sleeps to stand in for a remote fan-out."""

    def __init__(self, delay_s: float = 0.0):
        super().__init__()
        self.delay_s = delay_s
        self.calls: list = []
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def select(self, matchers, mint_ms, maxt_ms, hints=None):
        with self.lock:
            self.calls.append((tuple((m.name, m.value) for m in matchers), mint_ms, maxt_ms, hints))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            return super().select(matchers, mint_ms, maxt_ms, hints)
        finally:
            with self.lock:
                self.active -= 1


def _data(q):
    t = np.arange(0, 3600_000, 15_000, dtype=np.int64)
    for job in ("a", "b"):
        q.add({"__name__": "x", "job": job}, t, t / 1000.0)
        q.add({"__name__": "y", "job": job}, t, t / 500.0)
    return q


def _hints(q, name):
    return [h for (ms, _, _, h) in q.calls if ("__name__", name) in ms]


def test_hints_for_range_function_in_aggregation():
    q = _data(Recording())
    Engine().range("sum by (job) (rate(x[5m]))", 600_000, 1200_000, 30_000, q)
    [h] = _hints(q, "x")
    assert h == SelectHints(start=600_000 - 300_000 + 1, end=1200_000, step=30_000, range=300_000, func="rate",
                            grouping=(), by=False)
    assert q.calls[0][1:3] == (h.start, h.end)


def test_hints_grouping_only_for_directly_enclosing_aggregation():
    q = _data(Recording())
    Engine().instant("sum by (job) (x) + topk without (job) (3, y offset 1m)", 1200_000, q)
    [hx] = _hints(q, "x")
    [hy] = _hints(q, "y")
    assert (hx.func, hx.grouping, hx.by, hx.range, hx.step) == ("sum", ("job",), True, 0, 0)
    assert (hx.start, hx.end) == (1200_000 - 300_000 + 1, 1200_000)
    assert (hy.func, hy.grouping, hy.by) == ("topk", ("job",), False)
    assert (hy.start, hy.end) == (1200_000 - M - 300_000 + 1, 1200_000 - M)


def test_hints_binary_operator_stops_function_search():
    q = _data(Recording())
    Engine().instant("abs(x - y)", 1200_000, q)
    assert [h.func for h in _hints(q, "x")] == [""]
    assert [h.func for h in _hints(q, "y")] == [""]
    q.calls.clear()
    Engine().instant("count(-x)", 1200_000, q)
    [h] = _hints(q, "x")
    assert (h.func, h.by, h.grouping) == ("count", False, ())  # the unary minus sits between


def test_hints_plain_aggregation_is_by_nothing():
    q = _data(Recording())
    Engine().instant("sum(x)", 1200_000, q)
    [h] = _hints(q, "x")
    assert (h.func, h.by, h.grouping) == ("sum", True, ())


def test_hints_inside_subquery_use_subquery_step_and_window():
    q = _data(Recording())
    Engine().instant("max_over_time(rate(x[5m])[30m:1m])", 3000_000, q)
    [h] = _hints(q, "x")
    assert (h.func, h.range, h.step) == ("rate", 300_000, M)
    # inner steps cover (T-30m, T], each a 5m window
    assert h.start <= 3000_000 - 30 * M - 300_000 + 1 + M and h.end == 3000_000


def test_several_slow_selects_run_concurrently():
    q = _data(Recording(delay_s=0.4))
    e = Engine()
    res = e.range("sum(rate(x[5m])) + sum(rate(y[5m])) + count(x) + count(y)", 600_000, 1200_000, 60_000, q)
    assert len(q.calls) == 4 and q.max_active >= 2  # two selects were in flight at once
    ref = Engine().range("sum(rate(x[5m])) + sum(rate(y[5m])) + count(x) + count(y)", 600_000, 1200_000, 60_000,
                         _data(MemoryQueryable()))
    assert [(s.labels, s.t.tolist(), s.v.tolist()) for s in res.value] == \
           [(s.labels, s.t.tolist(), s.v.tolist()) for s in ref.value]


@pytest.mark.parametrize("query", ["x", "sum(x) + sum(y)"])
def test_deadline_interrupts_a_hanging_select(query):
    q = _data(Recording(delay_s=3.0))
    e = Engine(timeout_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(QueryTimeoutError) as ei:
        e.instant(query, 1200_000, q)
    assert time.monotonic() - t0 < 1.5
    assert str(ei.value) == "query timed out in expression evaluation" and ei.value.error_type == "timeout"


def test_deadline_checked_during_evaluation():
    # in-memory selects are inline and instant; the deadline is checked as nodes are evaluated
    q = _data(MemoryQueryable())
    with pytest.raises(QueryTimeoutError):
        Engine(timeout_s=1e-9).range("sum(rate(x[5m])) / count(y)", 0, 3600_000, 15_000, q)


def test_parse_check():
    Engine.parse_check("sum(rate(x[5m]))")
    with pytest.raises(ParseError) as ei:
        Engine.parse_check("sum(x")
    assert ei.value.error_type == "bad_data"
