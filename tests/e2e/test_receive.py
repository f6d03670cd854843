"""Receivers in real pods (issue 14, section 5), on kind or the local cluster (conftest.py): the operator
installed as in test_operator.py, a ThanosCluster with two receivers (replication factor 2, the S3 pod as
bucket) and a PrometheusHA of two replicas that remote-writes into them instead of running a sidecar.

In file order (the later tests change what the earlier ones looked at):

* every condition Ready, the hashring ConfigMap listing both receiver pods, and every receiver having
  loaded that ring;
* the querier answering over what Prometheus remote-wrote: ``up`` of each Prometheus, once per receiver
  holding a copy (2 x 2 series), one series once de-duplicated on both replica labels; the build info
  is the one the Prometheus pods report themselves;
* a receiver pod deleted (2 replicas, replication factor 2): the ring keeps both pods (one ready is fewer
  than the replication factor: a hashmod ring of one would refuse every write, "insufficient nodes"), the
  Hashring condition says the ring is below the replication factor, the deleted receiver's head arrives in
  the bucket as a block (flushed and shipped on shutdown), and when it is back nothing Prometheus sent in
  between is lost (its failed-samples counter stays flat; its series have no gap over the receivers' copies);
* scaled 2 -> 3: the ConfigMap lists three pods, every receiver loads it, the third receives series;
* a receiver pod deleted with 3 replicas: the ring shrinks to the 2 ready pods (still the replication
  factor) and grows back to 3 when it returns; again nothing is lost.

With replication factor 2 the write quorum is 2 (``rf // 2 + 1``): while a receiver holding one of a
series' copies is away, that write misses its quorum, the receivers answer 5xx and Prometheus retries;
what is asserted is that the samples arrive once the ring is whole again (or, with 3 replicas, once the
shrunk ring reached the receivers), not that every write succeeds during the outage.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Callable

import pytest

from course import Course, condition, until, vector

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

TC, PHA = "demo", "rw"
RECEIVE = f"thanos-receive-{TC}"
HASHRING_CM = f"{RECEIVE}-hashring"
SCRAPE_S = 5
TIMINGS: dict[str, float] = {}

OBJECTS = f"""
apiVersion: pythanos.io/v1alpha1
kind: ThanosCluster
metadata: {{name: {TC}}}
spec:
  objectStorage: {{secretKeyRef: {{name: thanos-objstore, key: objstore.yml}}}}
  querier: {{replicas: 1}}
  storeGateway: {{replicas: 0}}
  compactor: {{replicas: 0}}
  receiver:
    enabled: true
    replicas: 2
    replicationFactor: 2
    storage: {{size: 1Gi}}
---
apiVersion: pythanos.io/v1alpha1
kind: PrometheusHA
metadata: {{name: {PHA}}}
spec:
  thanosClusterRef: {{name: {TC}}}
  replicas: 2
  remoteWrite: {{}}
  externalLabels: {{cluster: {PHA}}}
  replicaExternalLabelName: replica
  scrapeInterval: {SCRAPE_S}s
  scrapeConfigs:
  - job_name: prometheus
    static_configs: [{{targets: ["127.0.0.1:9090"]}}]
"""


@pytest.fixture(scope="module")
def course(e2e_cluster, install, tmp_path_factory):
    t0 = time.monotonic()
    c = Course(e2e_cluster, f"e2e-rcv-{uuid.uuid4().hex[:6]}", tmp_path_factory.mktemp("receive"))
    c.deploy_s3(claims=tuple(f"data-{RECEIVE}-{i}" for i in range(3)))
    c.objstore_secret()
    c.kc.apply(OBJECTS, namespace=c.namespace)
    c.wait_ready(names=(TC, PHA), timeout=900)
    TIMINGS["ready"] = time.monotonic() - t0
    yield c
    c.teardown()
    print("\nreceive timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in TIMINGS.items()))


def endpoint(course: Course, i: int) -> str:
    return f"{RECEIVE}-{i}.{RECEIVE}.{course.namespace}.svc.cluster.local:10901"


def ring(course: Course) -> list[str]:
    """The endpoints of the one hashring in the operator's ConfigMap."""
    cm = course.kc.json("get", "configmap", HASHRING_CM, namespace=course.namespace)
    [h] = json.loads(cm["data"]["hashrings.json"])
    return h["endpoints"]


def loaded_ring_sizes(course: Course, n: int) -> dict[str, float]:
    """Each receiver pod's ``thanos_receive_hashring_nodes`` (the ring it has loaded from its mounted file)."""
    return {f"{RECEIVE}-{i}": course.metrics(f"{RECEIVE}-{i}").get('thanos_receive_hashring_nodes{name="default"}')
            for i in range(n)}


def wait_ring(course: Course, ordinals: list[int], replicas: int, timeout: float, loaded: bool = True) -> None:
    """The ConfigMap lists exactly these pods (in ordinal order) and, with ``loaded``, every one of the
    ``replicas`` receivers runs with a ring of that size."""
    want = [endpoint(course, i) for i in ordinals]

    def check() -> None:
        got = ring(course)
        assert got == want, f"hashring {got}, want {want}"
        if loaded:
            sizes = loaded_ring_sizes(course, replicas)
            assert all(v == len(want) for v in sizes.values()), f"rings loaded by the receivers: {sizes}"
    until(check, timeout, f"the hashring {ordinals} (loaded by every receiver: {loaded})", interval=1.0)


def prometheus_pods() -> list[str]:
    return [f"prometheus-{PHA}-{i}" for i in range(2)]


def failed_samples(course: Course) -> dict[str, float]:
    """``prometheus_remote_storage_samples_failed_total`` of each Prometheus (samples it gave up on)."""
    return {p: course.metrics(p, 9090).get("prometheus_remote_storage_samples_failed_total", 0.0)
            for p in prometheus_pods()}


# --- 1. ready ------------------------------------------------------------------------------------

def test_ready_and_hashring_lists_both_receivers(course):
    tc = course.cr("thanoscluster", TC)
    assert condition(tc, "Hashring").get("reason") == "HashringReady", condition(tc, "Hashring")
    assert tc["status"]["hashringEndpoints"] == 2, tc["status"]
    wait_ring(course, [0, 1], 2, 180)
    # the remote-writing Prometheus runs alone in its pod (no sidecar), sending to the receivers' Service
    sts = course.kc.json("get", "statefulset", f"prometheus-{PHA}", namespace=course.namespace)
    assert [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]] == ["prometheus"]
    for pod in prometheus_pods():
        cfg = json.loads(course.pod_get(pod, 9090, "/api/v1/status/config"))["data"]["yaml"]
        assert f"http://{RECEIVE}-write.{course.namespace}.svc:19291/api/v1/receive" in cfg, cfg


# --- 2. the querier over remote-written series ----------------------------------------------------

def test_querier_answers_over_remote_written_series(course):
    q = f'up{{cluster="{PHA}", job="prometheus"}}'

    def raw() -> list[dict]:
        res = course.query(q, dedup=False)
        got = sorted((r["metric"].get("replica"), r["metric"].get("receive_replica")) for r in res)
        want = sorted((p, f"{RECEIVE}-{i}") for p in prometheus_pods() for i in range(2))
        assert got == want, f"(replica, receive_replica) of {q}: {got}, want {want}"
        return res
    res = until(raw, 300, "both Prometheus' up, a copy in each receiver")
    for r in res:
        assert r["metric"].get("tenant_id") == "default-tenant" and r["value"][1] == "1", r
    ded = course.query(q)
    assert len(ded) == 1 and set(ded[0]["metric"]) == {"__name__", "cluster", "instance", "job", "tenant_id"}, ded

    # what the querier says each Prometheus is, is what that Prometheus says itself
    for pod in prometheus_pods():
        [own] = course.prometheus_query(pod, "prometheus_build_info")
        got = course.query(f'prometheus_build_info{{cluster="{PHA}", replica="{pod}"}}')
        assert len(got) == 1, got
        for k in ("version", "revision", "goversion"):
            assert got[0]["metric"][k] == own["metric"][k], (k, got[0]["metric"], own["metric"])
    assert vector(course.query(f'count by (cluster) (prometheus_build_info{{cluster="{PHA}"}})'), "cluster") \
        == {PHA: 1.0}


# --- 3. a receiver pod goes away and comes back ---------------------------------------------------

def delete_receiver(course: Course, ordinal: int, replicas: int, ring_while_away: list[int],
                    while_away: Callable[[], None] | None = None) -> tuple[float, float]:
    """Delete a receiver pod; ``while_away`` (polled) and the ring while it is away, the ring after it is
    back; no sample lost around it. Returns (deleted at, back at), wall-clock seconds."""
    kc, ns = course.kc, course.namespace
    gone = f"{RECEIVE}-{ordinal}"
    failed_before = failed_samples(course)
    uid = kc.json("get", "pod", gone, namespace=ns)["metadata"]["uid"]
    t_delete = time.time()
    kc("delete", "pod", gone, "--wait=false", namespace=ns)
    if while_away is not None:
        until(while_away, 60, f"the operator to see {gone} going away", interval=0.5)
    wait_ring(course, ring_while_away, replicas, 60, loaded=False)

    def back() -> None:
        p = kc.json("get", "pod", gone, namespace=ns)
        assert p["metadata"]["uid"] != uid, "still the old pod"
    until(back, 600, f"a new {gone}")
    wait_ring(course, list(range(replicas)), replicas, 300)
    course.wait_ready(names=(TC, PHA), timeout=300)
    t_back = time.time()

    # nothing Prometheus sent meanwhile was dropped: its retries reached the receivers, so each Prometheus'
    # `up`, over every receiver's copy, has no gap around the outage
    window = int(t_back - t_delete) + 60

    def no_gap() -> None:
        for pod in prometheus_pods():
            res = course.query(f'up{{cluster="{PHA}", replica="{pod}"}}[{window}s]', dedup=False,
                               at=t_back + SCRAPE_S)
            ts = sorted({float(t) for r in res for t, _ in r["values"]})
            assert ts and ts[0] < t_delete - SCRAPE_S and ts[-1] >= t_back, \
                f"{pod}: samples from {ts[0] if ts else None} to {ts[-1] if ts else None}, " \
                f"outage {t_delete:.0f}..{t_back:.0f}"
            gaps = [b - a for a, b in zip(ts, ts[1:])]
            assert max(gaps) < 2.5 * SCRAPE_S, f"{pod}: largest gap {max(gaps):.1f}s in {len(ts)} samples"
    until(no_gap, 300, "the samples of the outage to arrive (Prometheus' retries)", interval=3.0)
    assert failed_samples(course) == failed_before
    return t_delete, t_back


def test_deleted_receiver_ships_its_head_and_rejoins(course):
    gone = f"{RECEIVE}-0"
    before_blocks = set(course.bucket_metas())

    def below_rf() -> None:
        c = condition(course.cr("thanoscluster", TC), "Hashring")
        assert c.get("reason") == "HashringBelowReplicationFactor" and "1/2 receivers ready" in c["message"], c
    # one of two ready: the ring keeps both (a ring of one could take no second copy)
    t_delete, t_back = delete_receiver(course, 0, 2, [0, 1], while_away=below_rf)

    # on its way out the deleted receiver flushed its head into a block and shipped it
    def shipped() -> dict:
        new = {u: m for u, m in course.bucket_metas().items() if u not in before_blocks}
        mine = [m for m in new.values() if m["thanos"]["labels"].get("receive_replica") == gone]
        assert mine, f"no block of {gone} in the bucket; new blocks: {[m['thanos'] for m in new.values()]}"
        return mine[0]
    meta = until(shipped, 300, f"{gone}'s head as a block in the bucket", interval=3.0)
    assert meta["thanos"]["source"] == "receive", meta["thanos"]
    assert meta["thanos"]["labels"].get("tenant_id") == "default-tenant", meta["thanos"]
    assert meta["stats"]["numSamples"] > 0 and meta["maxTime"] <= t_back * 1000, meta


# --- 4. scale 2 -> 3 ------------------------------------------------------------------------------

def test_scale_receivers_to_three(course):
    kc, ns = course.kc, course.namespace
    kc("patch", "thanoscluster", TC, "--type=merge", "-p", json.dumps({"spec": {"receiver": {"replicas": 3}}}),
       namespace=ns)
    course.wait_ready(names=(TC, PHA), timeout=600)
    wait_ring(course, [0, 1, 2], 3, 300)
    assert course.cr("thanoscluster", TC)["status"]["hashringEndpoints"] == 3

    # the third receiver takes its share of the writes
    def third_has_series() -> None:
        got = {r["metric"].get("receive_replica") for r in course.query(
            f'{{cluster="{PHA}", __name__=~"prometheus_.*"}}', dedup=False)}
        assert f"{RECEIVE}-2" in got, f"receive_replica values: {got}"
    until(third_has_series, 300, "series written to the third receiver")


def test_deleted_receiver_of_three_leaves_the_ring_and_rejoins(course):
    """With 3 receivers and 2 copies, the 2 left take every copy: the ring shrinks to them at once (the pod
    is terminating) and grows back when the new pod is ready."""
    delete_receiver(course, 2, 3, [0, 1])
