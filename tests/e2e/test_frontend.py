"""The query frontend in real pods (issue 16, section 3), on kind or the local cluster (conftest.py): the
operator installed as in test_operator.py, then ``manifests/examples-frontend`` (the tutorial's ThanosCluster
demo and PrometheusHAs eu1/us1, plus a query frontend with an in-memory cache in front of the querier).

* every condition Ready, the frontend's Deployment available and counted in the cluster's Available;
* a range query through the frontend's Service answers what the querier's Service answers for it, and a
  second time from the cache (the frontend pod's ``querier_cache_*`` counters: gets up, misses not);
* label values through the frontend equal the querier's.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest

from course import EXAMPLES, QUERY_SVC, Course, until, write_examples_overlay

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

FE = "thanos-query-frontend-demo"


@pytest.fixture(scope="module")
def course(e2e_cluster, install, tmp_path_factory):
    c = Course(e2e_cluster, f"e2e-fe-{uuid.uuid4().hex[:6]}", tmp_path_factory.mktemp("frontend"))
    c.deploy_s3(claims=("data-thanos-compact-demo-0",))
    overlay = write_examples_overlay(c.work / "examples-frontend", c.namespace, examples="examples-frontend")
    c.kc("apply", "--server-side", "-k", str(overlay), namespace=c.namespace, timeout=120)
    c.wait_ready(names=EXAMPLES, timeout=900)
    yield c
    c.teardown()


def fe_pod(course: Course) -> str:
    pods = course.pods("app.kubernetes.io/name=thanos-query-frontend")
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]["metadata"]["name"]


def test_frontend_deployment_is_part_of_the_cluster(course):
    d = course.kc.json("get", "deployment", FE, namespace=course.namespace)
    assert d["status"].get("availableReplicas") == 1, d["status"]
    assert d["metadata"]["ownerReferences"][0]["name"] == "demo"
    args = d["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--query-frontend.downstream-url=http://{QUERY_SVC}.{course.namespace}.svc:10902" in args


def test_range_query_through_the_frontend_is_the_queriers_answer_and_cached(course):
    params: dict = {}

    def answers() -> tuple[dict, dict]:
        # a range that ended 2 minutes ago (older than the max freshness, 1m: cacheable), over which
        # both clusters' Prometheus have scraped: until they have, moved forward on every attempt
        end = (int(time.time()) - 120) // 60 * 60
        params.update(query="sum by (cluster) (up)", start=end - 1800, end=end, step=60)
        fe = json.loads(course.service_get(FE, "http", "/api/v1/query_range", params))
        q = json.loads(course.service_get(QUERY_SVC, "http", "/api/v1/query_range", params))
        assert fe["status"] == q["status"] == "success", (fe, q)
        assert {r["metric"].get("cluster") for r in q["data"]["result"]} == {"eu1", "us1"}, q
        # an answer with a store's warning is not cached (nor should it be): wait for every store to answer
        assert not q.get("warnings") and not fe.get("warnings"), (q.get("warnings"), fe.get("warnings"))
        return fe, q

    fe, q = until(answers, 600, "both clusters' series through the querier")
    assert fe == q
    pod = fe_pod(course)
    before = course.metrics(pod)
    again = json.loads(course.service_get(FE, "http", "/api/v1/query_range", params))
    after = course.metrics(pod)
    assert again == q
    gets = 'querier_cache_gets_total{cache="frontend-cache",tripperware="query_range"}'
    misses = 'querier_cache_misses_total{cache="frontend-cache",tripperware="query_range"}'
    assert after[gets] > before[gets] and after[misses] == before[misses], (
        {k: v for k, v in after.items() if "cache" in k}, {k: v for k, v in before.items() if "cache" in k})


def test_label_values_through_the_frontend(course):
    params = {"start": int(time.time()) - 3600, "end": int(time.time())}
    fe = json.loads(course.service_get(FE, "http", "/api/v1/label/cluster/values", params))
    q = json.loads(course.service_get(QUERY_SVC, "http", "/api/v1/label/cluster/values", params))
    assert fe["status"] == "success" and fe["data"] == q["data"] and {"eu1", "us1"} <= set(fe["data"])
