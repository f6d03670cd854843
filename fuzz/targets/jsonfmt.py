"""The query API's JSON writer (``promql.format.result_json``: the C kernel ``_jsonfmt``) on what a
query result can hold when its data came from stores and blocks: any label strings, any int64
timestamps, any float64 bits (NaN payloads, infinities, subnormals, -0).

Checked against the Python reference writer of the same module (``_metric``, ``_points``,
``format_timestamp``, ``format_float``: Prometheus' ``jsonutil``), and the output must be JSON.
Nothing is a fine error here: the writer's inputs are valid by construction."""
from __future__ import annotations

import json

import atheris
import numpy as np

from pythanos.promql.engine import Result, Sample, Series
from pythanos.promql.format import _metric, _points, format_float, format_timestamp, result_json


def _labels(fdp: atheris.FuzzedDataProvider) -> tuple:
    names = sorted({fdp.ConsumeUnicodeNoSurrogates(6) for _ in range(fdp.ConsumeIntInRange(0, 3))})
    return tuple((n, fdp.ConsumeUnicodeNoSurrogates(12)) for n in names)


def _arrays(fdp: atheris.FuzzedDataProvider, n: int) -> tuple[np.ndarray, np.ndarray]:
    raw = fdp.ConsumeBytes(16 * n)
    n = len(raw) // 16
    t = np.frombuffer(raw[:8 * n], dtype=np.int64).copy()
    if fdp.ConsumeBool():  # step-grid-like times, as most results have
        t = np.clip(t, -(10 ** 15), 10 ** 15)
    return t, np.frombuffer(raw[8 * n:16 * n], dtype=np.float64).copy()


def _reference(res: Result) -> str:
    if res.type == "vector":
        body = ",".join(f'{{"metric":{_metric(s.labels)},"value":[{format_timestamp(s.t)},"{format_float(s.v)}"]}}'
                        for s in res.value)
    else:
        body = ",".join(f'{{"metric":{_metric(s.labels)},"values":[{_points(s.t.tolist(), s.v.tolist(), {})}]}}'
                        for s in res.value)
    return f'{{"resultType":"{res.type}","result":[{body}]}}'


def test_one_input(data: bytes) -> None:
    """A vector or a matrix built from ``data``, written by the kernel and by the reference."""
    fdp = atheris.FuzzedDataProvider(data)
    vector = fdp.ConsumeBool()
    items: list = []
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        labels = _labels(fdp)
        t, v = _arrays(fdp, 1 if vector else fdp.ConsumeIntInRange(0, 8))
        if vector:
            if len(t):
                items.append(Sample(labels, int(t[0]), float(v[0])))
        else:
            items.append(Series(labels, t, v))
    res = Result("vector" if vector else "matrix", items)
    got = result_json(res)
    want = _reference(res)
    assert got == want, (got, want)
    json.loads(got)
