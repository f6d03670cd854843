"""The operator in real pods (issue 12, section 2), on kind or the local cluster (conftest.py): installed with
``kubectl apply --server-side -k manifests/`` (a kustomize overlay in a temporary directory swaps in the images
the backend has), ``manifests/examples`` applied next to an S3 pod, then the course through the cluster,
conflicting external labels, the lifecycle of the objects and their Argo CD health.

The tests share one install and one namespace (module fixtures) and run in file order: the later lifecycle
tests change what the earlier ones looked at (scale, restart, image tag, and finally deletion of the
ThanosCluster). ``test_operator_helm.py`` repeats the install with the Helm chart.

What the examples deploy, and so what the querier must answer: PrometheusHA eu1 with 1 replica and us1 with
2, each Prometheus scraping itself, so ``up`` has 3 series (eu1; us1 twice, replica label
``replica=<pod>``), 2 once de-duplicated.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest

from course import (EXAMPLES, MANAGED, OPERATOR_NS, Course, Install, argo_health, condition, kubectl_get_table,
                    until, vector)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

HOUR_MS = 3_600_000
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def install(e2e_cluster, tmp_path_factory):
    t0 = time.monotonic()
    inst = Install(e2e_cluster, "kustomize", tmp_path_factory.mktemp("kustomize"))
    inst.install()
    TIMINGS["install operator (kustomize)"] = time.monotonic() - t0
    yield inst
    t0 = time.monotonic()
    inst.uninstall()
    print(f"\nuninstall (kustomize): {time.monotonic() - t0:.0f}s")


@pytest.fixture(scope="module")
def course(e2e_cluster, install, tmp_path_factory):
    t0 = time.monotonic()
    c = Course(e2e_cluster, f"e2e-op-{uuid.uuid4().hex[:6]}", tmp_path_factory.mktemp("course"))
    c.deploy()
    c.record_health(c.crs())   # right after the apply: what Argo CD sees first
    c.ready_objects = c.wait_ready()
    TIMINGS["examples ready"] = time.monotonic() - t0
    yield c
    t0 = time.monotonic()
    c.teardown()
    print(f"\nnamespace teardown: {time.monotonic() - t0:.0f}s")
    print("timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in TIMINGS.items()))


# --- 1. install ------------------------------------------------------------------------------------

def test_install_and_examples_become_ready(course):
    rows = kubectl_get_table(course.kc, course.namespace, "tc,pha")
    by_name = {r["NAME"].split("/", 1)[1]: r for r in rows}
    assert set(by_name) == set(EXAMPLES), rows
    for name, row in by_name.items():
        assert row["READY"] == "True" and row["REASON"] == "AllPodsReady", row
    assert by_name["demo"]["MEMBERS"] == "2", by_name["demo"]
    assert (by_name["eu1"]["REPLICAS"], by_name["eu1"]["AVAILABLE"]) == ("1", "1"), by_name["eu1"]
    assert (by_name["us1"]["REPLICAS"], by_name["us1"]["AVAILABLE"]) == ("2", "2"), by_name["us1"]
    # the compactor is a singleton; the operator runs from the image given
    compact = course.kc.json("get", "statefulset", "thanos-compact-demo", namespace=course.namespace)
    assert compact["spec"]["replicas"] == 1
    op = course.kc.json("get", "deployment", "pythanos-operator", namespace=OPERATOR_NS)
    assert op["spec"]["template"]["spec"]["containers"][0]["image"] == course.e2e.images["operator"]


# --- 2. the course through the cluster -------------------------------------------------------------

def test_querier_deduplicates_the_us1_pair(course):
    def check():
        raw = vector(course.query('count by (cluster) (up{job="prometheus"})', dedup=False), "cluster")
        dedup = vector(course.query('count by (cluster) (up{job="prometheus"})', dedup=True), "cluster")
        assert raw == {"eu1": 1, "us1": 2} and dedup == {"eu1": 1, "us1": 1}, f"raw {raw}, dedup {dedup}"
        series = course.query('up{job="prometheus"}', dedup=False)
        assert len(series) == 3 and len(course.query('up{job="prometheus"}')) == 2, series
        replicas = sorted(r["metric"].get("replica", "") for r in series)
        assert replicas == ["prometheus-eu1-0", "prometheus-us1-0", "prometheus-us1-1"], replicas
    until(check, 300, "the querier to see eu1 once and us1 as a de-duplicated pair")


def test_blocks_go_sidecar_bucket_compactor_store(course, tmp_path):
    """Five consecutive 2h blocks (``pythanos tools bench-blocks``' generator) of 1.5 days ago appear in eu1's
    TSDB directory; its sidecar uploads them to the S3 pod; the compactor compacts the four that fill one 8h
    range; the store gateway loads the result; once eu1's Prometheus has lost those series (its pod replaced:
    a new, empty TSDB), the querier still answers for that time range, from the bucket only, with the
    generated values."""
    from pythanos.tools import benchblocks as bb

    now_ms = int(time.time() * 1000)
    start = (now_ms - 36 * HOUR_MS) // (8 * HOUR_MS) * (8 * HOUR_MS)
    profile = bb.Profile("e2e-5x2h", (2 * HOUR_MS,) * 5, 1, 5, "five 2h blocks, 5 series")
    blocks = bb.plan(profile, start + 10 * HOUR_MS - 1)
    assert (blocks[-1].min_time, blocks[0].max_time) == (start, start + 10 * HOUR_MS)
    labels, seed = bb.series_labels(profile), 7
    keys = bb.series_keys(labels, {})
    out = tmp_path / "blocks"
    ulids = {}
    for b in blocks:
        ulids[b.min_time] = bb.write_block(str(out), profile, b, ext_labels={}, seed=seed, labels=labels,
                                           keys=keys)["ulid"]
    first_four = {ulids[start + i * 2 * HOUR_MS] for i in range(4)}
    pod = "prometheus-eu1-0"
    course.put_blocks(pod, "thanos-sidecar", out, "/prometheus")
    t = {"put": time.monotonic()}

    # the sidecar ships them (oldest first) with eu1's external labels
    until(lambda: _assert_ge(course.metrics(pod).get("thanos_shipper_uploads_total", 0), 5, "uploads"),
          180, "eu1's sidecar to upload the 5 blocks")
    t["uploaded"] = time.monotonic()

    # the compactor compacts the four that fill [start, start+8h) into one block
    def compacted() -> dict:
        body = json.loads(course.pod_get("thanos-compact-demo-0", 10902, "/api/v1/blocks"))
        metas = body["data"]["blocks"]
        ours = {m["ulid"]: m for m in metas}
        missing = set(ulids.values()) - set(ours)
        assert not missing, f"uploaded blocks not in the bucket listing yet: {missing}"
        for u in ulids.values():
            th = ours[u]["thanos"]
            assert th["source"] == "sidecar" and th["labels"] == {"cluster": "eu1", "replica": pod}, ours[u]
        out = [m for m in metas if m["minTime"] == start and m["maxTime"] == start + 8 * HOUR_MS]
        assert out, f"no compacted [start, start+8h) block yet; blocks: " \
                    f"{[(m['ulid'], m['minTime'], m['maxTime'], m['compaction']['level']) for m in metas]}"
        m = out[0]
        assert m["compaction"]["level"] >= 2 and set(m["compaction"]["sources"]) == first_four, m
        assert m["thanos"]["labels"] == {"cluster": "eu1"}, m   # replica label removed (deduplication)
        return m
    block = until(compacted, 300, "the compactor to compact the four uploaded blocks of one 8h range", 3)
    t["compacted"] = time.monotonic()
    cm = course.metrics("thanos-compact-demo-0")
    assert cm["thanos_compact_halted"] == 0, cm.get("thanos_compact_halted")
    assert cm.get("thanos_compact_group_compactions_total", 0) >= 1

    # the store gateway loads the compacted block
    def loaded() -> None:
        body = json.loads(course.pod_get("thanos-store-demo-0", 10902, "/api/v1/blocks"))
        have = {m["ulid"] for m in body["data"]["blocks"]}
        assert block["ulid"] in have, f"store gateway has {sorted(have)}"
    until(loaded, 180, "the store gateway to load the compacted block")
    t["store loaded"] = time.monotonic()

    # eu1's Prometheus forgets those series: its pod is replaced, and the new one starts on an empty TSDB (eu1
    # has no storage: an emptyDir; the operator renders no admin API to delete series with). From now on only
    # the bucket holds that time range.
    at_ms = start + 5 * HOUR_MS
    sel = '{__name__=~"continuous_app_metric.*"}'
    uid = course.kc.json("get", "pod", pod, namespace=course.namespace)["metadata"]["uid"]
    course.kc("delete", "pod", pod, "--wait=false", namespace=course.namespace)

    def forgotten() -> None:
        p = course.kc.json("get", "pod", pod, namespace=course.namespace)
        assert p["metadata"]["uid"] != uid, "still the old pod"
        assert course.prometheus_query(pod, sel, at=at_ms / 1000) == []
    until(forgotten, 600, "a new eu1 pod whose Prometheus no longer has those series")
    want = {f"{s['__name__']}": bb.value_at(profile, blocks, s, at_ms, ext_labels={}, seed=seed) for s in labels}

    def from_bucket() -> None:
        res = course.query(sel.replace("}", ', cluster="eu1"}'), at=at_ms / 1000)
        got = {r["metric"]["__name__"]: float(r["value"][1]) for r in res}
        assert got == want, f"querier answered {got}, generated {want}"
        assert all("replica" not in r["metric"] for r in res), res
    until(from_bucket, 120, "the querier to answer from the bucket for a range Prometheus no longer has")
    t["queried"] = time.monotonic()
    print("\nblocks: " + ", ".join(f"{k} +{v - t['put']:.0f}s" for k, v in t.items()))
    assert course.metrics("thanos-compact-demo-0")["thanos_compact_halted"] == 0


def _assert_ge(value: float, floor: float, what: str) -> float:
    assert value >= floor, f"{what}: {value} < {floor}"
    return value


# --- 3. conflicting external labels ----------------------------------------------------------------

EU1_AGAIN = """
apiVersion: pythanos.io/v1alpha1
kind: PrometheusHA
metadata: {name: eu1-again}
spec:
  thanosClusterRef: {name: demo}
  replicas: 1
  externalLabels: {cluster: eu1}
  replicaExternalLabelName: replica
  scrapeConfigs:
  - job_name: prometheus
    static_configs: [{targets: ["127.0.0.1:9090"]}]
"""


def test_conflicting_external_labels(course):
    ns, kc = course.namespace, course.kc
    kc.apply(EU1_AGAIN, namespace=ns)

    def conflicted() -> dict:
        o = course.cr("prometheusha", "eu1-again")
        c = condition(o)
        assert c.get("status") == "False" and c.get("reason") == "ExternalLabelsConflict", c
        assert (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"], o.get("status")
        assert course.events("eu1-again", "ExternalLabelsConflict"), "no ExternalLabelsConflict Event yet"
        return o
    o = until(conflicted, 120, "eu1-again to get ExternalLabelsConflict and an Event")
    assert "eu1" in condition(o)["message"], condition(o)
    ev = course.events("eu1-again", "ExternalLabelsConflict")[0]
    assert ev["type"] == "Warning" and ev["involvedObject"]["kind"] == "PrometheusHA", ev
    assert argo_health(o)[0] == "Degraded", argo_health(o)

    # nothing of it is deployed, and the querier does not look for it
    left = kc("get", "statefulsets,configmaps,services,poddisruptionbudgets,pods", "-l",
              "pythanos.io/prometheusha=eu1-again", "-o", "name", namespace=ns).stdout.split()
    assert left == [], left
    for kind in ("statefulset", "configmap", "service"):
        name = "prometheus-eu1-again" + ("-config" if kind == "configmap" else "")
        assert kc("get", kind, name, namespace=ns, check=False).returncode != 0, f"{kind} {name} exists"
    sd = kc.json("get", "configmap", "thanos-query-demo-endpoints", namespace=ns)["data"]["endpoints.yaml"]
    assert "eu1-again" not in sd and "prometheus-eu1." in sd, sd
    # the first owner of the labels is untouched
    assert condition(course.cr("prometheusha", "eu1"))["status"] == "True"

    kc("delete", "prometheusha", "eu1-again", "--timeout=60s", namespace=ns, timeout=90)
    course.wait_ready(timeout=300)


# --- 5. Argo CD health (the shipped Lua) -----------------------------------------------------------

def test_argocd_health_progressing_then_healthy(course):
    for key, seen in course.health.items():
        assert seen[0] == "Progressing" and seen[-1] == "Healthy", f"{key}: {seen}"
        assert "Degraded" not in seen, f"{key}: {seen}"
    assert set(course.health) >= {"ThanosCluster/demo", "PrometheusHA/eu1", "PrometheusHA/us1"}, course.health
    for o in course.crs():
        assert argo_health(o)[0] == "Healthy", (o["metadata"]["name"], argo_health(o))


# --- 4. lifecycle ----------------------------------------------------------------------------------

def test_scale_us1_to_three_and_back(course):
    kc, ns = course.kc, course.namespace
    kc("scale", "prometheusha/us1", "--replicas=3", namespace=ns)
    course.wait_ready(timeout=600)
    assert course.cr("prometheusha", "us1")["status"]["availableReplicas"] == 3

    def three() -> None:
        raw = vector(course.query('count by (replica) (up{cluster="us1"})', dedup=False), "replica")
        assert set(raw) == {"prometheus-us1-0", "prometheus-us1-1", "prometheus-us1-2"}, raw
        assert vector(course.query('count by (cluster) (up{cluster="us1"})'), "cluster") == {"us1": 1}
    until(three, 300, "the querier to query the third us1 replica")

    kc("scale", "prometheusha/us1", "--replicas=2", namespace=ns)
    course.wait_ready(timeout=600)

    def two() -> None:
        raw = vector(course.query('count by (replica) (up{cluster="us1"})', dedup=False), "replica")
        assert set(raw) == {"prometheus-us1-0", "prometheus-us1-1"}, raw
    until(two, 300, "the querier to stop querying the removed replica")


def test_deleted_pod_comes_back_and_is_queried_again(course):
    kc, ns = course.kc, course.namespace
    q = 'process_start_time_seconds{cluster="us1", replica="prometheus-us1-0"}'
    before = until(lambda: vector(course.query(q, dedup=False), "replica")["prometheus-us1-0"], 120,
                   "us1-0's start time through the querier")
    uid = kc.json("get", "pod", "prometheus-us1-0", namespace=ns)["metadata"]["uid"]
    kc("delete", "pod", "prometheus-us1-0", "--wait=false", namespace=ns)

    def back() -> None:
        p = kc.json("get", "pod", "prometheus-us1-0", namespace=ns)
        assert p["metadata"]["uid"] != uid, "still the old pod"
        started = vector(course.query(q, dedup=False), "replica").get("prometheus-us1-0")
        assert started is not None and started > before, f"start time through the querier: {started} (was {before})"
    until(back, 600, "a new prometheus-us1-0 to be queried through the querier")
    course.wait_ready(timeout=300)


def test_operator_restart_updates_nothing(course, install):
    kc = course.kc
    course.wait_ready(timeout=300)
    before = course.versions()
    old = install.operator_pod()
    kc("delete", "pod", old["metadata"]["name"], "--wait=false", namespace=OPERATOR_NS)

    def resumed() -> dict:
        pod = install.operator_pod()
        assert pod["metadata"]["uid"] != old["metadata"]["uid"], "old operator pod still there"
        log = kc("logs", pod["metadata"]["name"], namespace=OPERATOR_NS).stdout
        n = log.count("Resuming is processed: 1 succeeded")
        assert n >= len(EXAMPLES), f"{n} objects resumed so far:\n{log[-3000:]}"
        return pod
    until(resumed, 300, "the new operator to resume all custom resources", 2)
    after = course.versions()
    changed = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
    assert not changed, f"objects updated by a mere operator restart (resourceVersion before, after): {changed}"
    assert set(after) == set(before)


def test_component_image_tag_change_rolls_pods(course, install):
    kc, ns, e2e = course.kc, course.namespace, course.e2e
    new = e2e.retag_image(e2e.images["component"], "e2e-retag")
    before = {p["metadata"]["uid"] for p in course.pods(MANAGED)}
    install.install(component_image=new)

    def rolled() -> None:
        pods = course.pods(MANAGED)
        images = {(p["metadata"]["name"], c["name"]): c["image"] for p in pods for c in p["spec"]["containers"]
                  if c["name"] != "prometheus"}
        old = {k: v for k, v in images.items() if v != new}
        assert not old, f"containers still on the old image: {old}"
        assert not before & {p["metadata"]["uid"] for p in pods}, "some pods were not replaced"
        names = sorted(p["metadata"]["name"] for p in pods)
        assert len(names) == 6, names   # querier, store, compactor, eu1 x1, us1 x2
        notready = [p["metadata"]["name"] for p in pods
                    if not all(s.get("ready") for s in p["status"].get("containerStatuses") or [{}])]
        assert not notready, f"not ready: {notready}"
    until(rolled, 900, f"every component pod to run {new}", 3)
    course.wait_ready(timeout=300)
    until(lambda: _assert_eq(vector(course.query('count by (cluster) (up{job="prometheus"})'), "cluster"),
                             {"eu1": 1, "us1": 1}), 300, "the rolled querier to answer")


def _assert_eq(got, want):
    assert got == want, f"{got} != {want}"
    return got


def test_deleting_the_thanoscluster_collects_what_it_owns(course):
    kc, ns = course.kc, course.namespace
    tc = course.cr("thanoscluster", "demo")
    uid = tc["metadata"]["uid"]
    kinds = "configmaps,services,statefulsets,deployments,poddisruptionbudgets"
    owned = [(o["kind"], o["metadata"]["name"]) for o in kc.json("get", kinds, namespace=ns)["items"]
             if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]
    assert {("Deployment", "thanos-query-demo"), ("StatefulSet", "thanos-store-demo"),
            ("StatefulSet", "thanos-compact-demo"), ("ConfigMap", "thanos-query-demo-endpoints"),
            ("Service", "thanos-query-demo")} <= set(owned), owned
    tc_pods = "app.kubernetes.io/name in (thanos-query,thanos-store,thanos-compact)"
    assert course.pods(tc_pods)
    kc("delete", "thanoscluster", "demo", "--wait=false", namespace=ns)

    def collected() -> None:
        left = [f"{k}/{n}" for k, n in owned if kc("get", k, n, namespace=ns, check=False).returncode == 0]
        assert not left, f"still there: {left}"
        # and what those owned in turn (ReplicaSets, Pods), terminating ones included
        more = kc("get", "replicasets,pods", "-l", tc_pods, "-o", "name", namespace=ns).stdout.split()
        assert not more, f"still there: {more}"
    until(collected, 300, "the garbage collector to remove everything the ThanosCluster owned", 2)

    # its members say so, and keep their Prometheus running
    def orphaned() -> None:
        for name in ("eu1", "us1"):
            c = condition(course.cr("prometheusha", name))
            assert c.get("reason") == "ThanosClusterNotFound", (name, c)
    until(orphaned, 120, "the PrometheusHAs to report ThanosClusterNotFound")
    assert kc("get", "statefulset", "prometheus-us1", namespace=ns, check=False).returncode == 0
    for o in course.crs():
        assert argo_health(o)[0] == "Degraded", (o["metadata"]["name"], argo_health(o))
