"""receive/rewrite.py on decoded requests: what the end-to-end tests (test_receive_tls_tenancy.py,
against a real thanos receive) cannot isolate — the cache across requests gives exactly what a cold
pass gives, routing hashes are those of the new tenant and labels, forwarded frames carry the
new labels, RW 2.0 and unsorted input included."""
from __future__ import annotations

import numpy as np
import pytest

from pythanos.receive.hashring import series_hash
from pythanos.receive.rewrite import SPLIT_INVALID, SplitTenantError, rewrite
from pythanos.relabel import parse_relabel_config
from pythanos.remote import write as rw
from test_receive import v1, v2

RULES = parse_relabel_config("""
- {source_labels: [job], regex: drop, action: drop}
- {source_labels: [__name__], regex: wipe, target_label: __name__, replacement: ""}
- {action: labeldrop, regex: zz|instance}
- {source_labels: [__name__], regex: "a|c", target_label: env, replacement: prod}
""", "test")

SERIES = [
    ([("__name__", "a"), ("job", "x"), ("team", "t1"), ("instance", "h:1")], [(1, 1.0)]),
    ([("__name__", "b"), ("job", "drop")], [(1, 2.0), (2, 3.0)]),
    ([("team", "t2"), ("__name__", "c")], [(1, 1.0)]),  # unsorted as sent
    ([("__name__", "wipe"), ("zz", "1")], [(1, 1.0)]),
    ([("__name__", "a"), ("job", "x"), ("team", "t1"), ("instance", "h:1")], [(2, 1.0)]),
    ([("__name__", "d")], [(3, 4.0)]),
]


@pytest.mark.parametrize("encode,decode", [(v1, rw.decode_v1), (v2, rw.decode_v2)])
def test_relabel_and_split(encode, decode):
    d = decode(encode(SERIES), "hdr")
    cache: dict = {}
    cold, groups = rewrite(d, "hdr", relabel=RULES, split_label="team")
    for _ in range(2):  # the second pass is served from the cache
        warm, warm_groups = rewrite(d, "hdr", relabel=RULES, split_label="team", cache=cache)
        assert warm.blobs == cold.blobs and np.array_equal(warm.blob_offsets, cold.blob_offsets)
        assert np.array_equal(warm.hashes, cold.hashes) and np.array_equal(warm.status, cold.status)
        assert [(t, p.tolist()) for t, p in warm_groups] == [(t, p.tolist()) for t, p in groups]
    assert {t: p.tolist() for t, p in groups} == {"t1": [0, 4], "t2": [2], "hdr": [3, 5]}  # 1 dropped
    assert cold.labels(0) == [("__name__", "a"), ("env", "prod"), ("job", "x")]
    assert cold.labels(2) == [("__name__", "c"), ("env", "prod")]
    assert cold.labels(3) == [] and cold.status[3] == rw.STATUS_EMPTY_LABEL_NAME  # Thanos: a 409, not a drop
    assert cold.labels(5) == d.labels(5) and cold.hashes[5] == d.hashes[5]  # untouched
    for i, t in ((0, "t1"), (2, "t2")):
        assert cold.hashes[i] == series_hash(t, cold.labels(i))
    # forwarded frames carry the new labels
    sent = rw.decode_v1(rw.timeseries_frames(cold, groups[0][1]), "t1")
    assert [sent.labels(i) for i in range(sent.n_series)] == [cold.labels(0), cold.labels(4)]
    assert sent.sample_ts.tolist() == [1, 2] and np.array_equal(sent.hashes, cold.hashes[[0, 4]])


def test_split_only_leaves_other_series_alone_and_refuses_bad_tenants():
    d = rw.decode_v1(v1(SERIES), "hdr")
    out, groups = rewrite(d, "hdr", split_label="team")
    assert {t: p.tolist() for t, p in groups} == {"t1": [0, 4], "hdr": [1, 3, 5], "t2": [2]}
    for i in (1, 3, 5):
        assert out.blob(i) == d.blob(i) and out.hashes[i] == d.hashes[i]
    assert out.labels(0) == [("__name__", "a"), ("instance", "h:1"), ("job", "x")]
    bad = rw.decode_v1(v1([([("__name__", "a"), ("team", "a/b")], [(1, 1.0)])]), "hdr")
    with pytest.raises(SplitTenantError, match=SPLIT_INVALID):
        rewrite(bad, "hdr", split_label="team", cache={})
