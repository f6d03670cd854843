"""Vertical sharding (``--query-frontend.vertical-shards``): which queries are split by series and on
which labels, and the shard hash the stores apply.

* The analysis over the cases of Thanos' own analyzer tests (``pkg/querysharding``): the same verdict
  and the same labels, and ``without`` aggregations also keeping the metric name together.
* The ``shard_info`` parameter as Thanos' frontend writes it and as the querier reads it (errors
  named as Thanos names them).
* Against real peers (``test_frontend``'s year of data): our store splits series into shards exactly as
  a real ``thanos store`` over the same bucket does (one hash: replicas in mixed stores stay together);
  our frontend with 3 shards over our querier answers byte for byte the querier's unsharded answer, and
  so does a real ``thanos query-frontend`` with 3 shards over our querier.
"""
from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request

import pytest

from pythanos.frontend.vertical import ShardPlan, analyze, shard_param
from pythanos.storeapi.sharding import ShardMatcher, shard_info_from_json

NOT_SHARDABLE = [
    "sum(http_requests_total)",
    "count(sum by (pod) (http_requests_total))",
    "count(sum without (pod) (http_requests_total))",
    'http_requests_total{code="400"} / 4',
    'http_requests_total{code="400"} / on () http_requests_total',
    'sum by (pod) (http_requests_total{code="400"}) / sum by (cluster) (http_requests_total)',
    'sum by (dst_label) (label_replace(metric, "dst_label", "$1", "src_label", "re"))',
    'sum by (dst_label) (label_join(metric, "dst_label", ",", "src_label"))',
    'sum by (url) (absent_over_time(http_requests_total{code="400"}[5m]))',
    'sum by (url) (absent(http_requests_total{code="400"}))',
    'scalar(sum by (url) (http_requests_total{code="400"}))',
    "sum by (le) (histogram_quantile(0.99, http_requests_duration_seconds_bucket))",
    "rate(http_requests_total[5m])",
    "not a query (",
]

SHARDABLE_BY = [
    ("sum by (pod) (http_requests_total)", ["pod"]),
    ("max by (pod) (sum by (pod, cluster) (http_requests_total))", ["pod"]),
    ('http_requests_total{code="400"} / on (pod) http_requests_total', ["pod"]),
    ('sum by (pod) (http_requests_total{code="400"}) / sum by (pod) (http_requests_total)', ["pod"]),
    ('sum by (cluster, pod) (http_requests_total{code="400"}) / on (pod) sum by (cluster, pod) (http_requests_total)',
     ["pod"]),
    ('sum(http_requests_total{code="400"} * http_requests_total) by (pod)', ["pod"]),
    ('(http_requests_total{code="400"} + on (pod) http_requests_total{code="500"}) / on (cluster, pod) '
     'http_requests_total', ["pod"]),
    ("histogram_quantile(0.95, sum(rate(metric[1m])) by (le, cluster))", ["cluster"]),
    ("sum(http_requests_total) by (pod, cluster) [1h:1m]", ["cluster", "pod"]),
    ("increase(sum(http_requests_total) by (pod, cluster) [1h:1m])", ["cluster", "pod"]),
    ("sum(rate(node_cpu_seconds_total[3h])) by (cluster_id, mode) / ignoring(mode) group_left "
     "sum(rate(node_cpu_seconds_total[3h])) by (cluster_id)", ["cluster_id"]),
    ('sum by (pod) (label_replace(metric, "dst_label", "$1", "src_label", "re"))', ["pod"]),
    ('sum by (pod, dst_label) (label_join(metric, "dst_label", ",", "src_label"))', ["pod"]),
    ('http_requests_total{code="400"} / on (pod) label_replace(metric, "dst_label", "$1", "src_label", "re")',
     ["pod"]),
    ('label_join(sum by (pod) (label_join(metric, "dst_label", ",", "src_label")), "dst_label1", ",", "dst_label")',
     ["pod"]),
    ('sum(sum_over_time(container_memory_working_set_bytes{container_name!="POD",container_name!="",'
     'namespace="kube-system"}[1d:5m])) by (instance, cluster) / avg(label_replace(sum(sum_over_time('
     'kube_node_status_capacity_memory_bytes[1d:5m])) by (node, cluster), "instance", "$1", "node", "(.*)")) '
     'by (instance, cluster)', ["cluster"]),
]

SHARDABLE_WITHOUT = [
    ("sum without (pod) (http_requests_total)", ["__name__", "pod"]),   # Thanos: ["pod"]
    ('http_requests_total{code="400"} / ignoring (pod) http_requests_total', ["__name__", "pod"]),
    ("http_requests_total + errors_total", ["__name__"]),
    ("histogram_quantile(0.9, rate(h_bucket[5m]))", ["le"]),
]


@pytest.mark.parametrize("query", NOT_SHARDABLE)
def test_not_shardable(query):
    assert analyze(query) is None


@pytest.mark.parametrize("query,labels", SHARDABLE_BY)
def test_shardable_by(query, labels):
    assert analyze(query) == ShardPlan(True, tuple(sorted(labels)))


@pytest.mark.parametrize("query,labels", SHARDABLE_WITHOUT)
def test_shardable_without(query, labels):
    assert analyze(query) == ShardPlan(False, tuple(sorted(labels)))


def test_shard_param_round_trip_and_errors():
    text = shard_param(ShardPlan(True, ("job",)), 0, 3)
    assert text == '{"total_shards":3,"by":true,"labels":["job"]}'   # Go leaves zero values out
    info = shard_info_from_json(shard_param(ShardPlan(False, ("a", "b")), 2, 3))
    assert (info.shard_index, info.total_shards, info.by, list(info.labels)) == (2, 3, False, ["a", "b"])
    for bad, want in (('{"total_shards":"3"}', "cannot unmarshal str"), ("{", "Expecting"),
                      ('{"shard_index":3,"total_shards":3}', "shard_index 3 is not below total_shards 3")):
        with pytest.raises(ValueError, match=want):
            shard_info_from_json(bad)


def test_shards_partition_the_series():
    series = [tuple(sorted({"__name__": "up", "job": f"j{i % 7}", "instance": f"i{i}"}.items())) for i in range(200)]
    for by, labels in ((True, ["job"]), (False, ["instance"])):
        owners = [[k for k in range(3) if ShardMatcher(k, 3, by, labels).matches(s)] for s in series]
        assert all(len(o) == 1 for o in owners)
        assert len({o[0] for o in owners}) == 3
    by_job = {}
    for s in series:   # by job: a job's series are all in one shard
        by_job.setdefault(dict(s)["job"], set()).update(
            k for k in range(3) if ShardMatcher(k, 3, True, ["job"]).matches(s))
    assert all(len(v) == 1 for v in by_job.values())
