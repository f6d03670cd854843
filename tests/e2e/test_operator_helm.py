"""The same install with the Helm chart (charts/pythanos-operator, ``helm install`` with the backend's images),
``manifests/examples`` next to an S3 pod: every condition Ready, ``kubectl get tc,pha`` says so, and the
querier de-duplicates the us1 pair. The full course runs on the kustomize install (test_operator.py)."""
from __future__ import annotations

import time
import uuid

import pytest

from course import EXAMPLES, OPERATOR_NS, Course, Install, kubectl_get_table, until, vector

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def helm_course(e2e_cluster, helm_bin, tmp_path_factory):
    t0 = time.monotonic()
    inst = Install(e2e_cluster, "helm", tmp_path_factory.mktemp("helm"), helm=helm_bin)
    inst.install()
    c = Course(e2e_cluster, f"e2e-helm-{uuid.uuid4().hex[:6]}", tmp_path_factory.mktemp("helm-course"))
    try:
        c.deploy()
        c.wait_ready()
        print(f"\nhelm install + examples ready: {time.monotonic() - t0:.0f}s")
        yield c
    finally:
        t0 = time.monotonic()
        c.teardown()
        inst.uninstall()
        print(f"\nhelm teardown: {time.monotonic() - t0:.0f}s")


def test_helm_install_examples_become_ready(helm_course):
    kc = helm_course.kc
    rel = kc.json("get", "deployment", "pythanos-operator", namespace=OPERATOR_NS)
    assert rel["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "Helm", rel["metadata"]["labels"]
    assert rel["spec"]["template"]["spec"]["containers"][0]["image"] == helm_course.e2e.images["operator"]
    rows = kubectl_get_table(kc, helm_course.namespace, "tc,pha")
    assert {r["NAME"].split("/", 1)[1] for r in rows} == set(EXAMPLES), rows
    assert all(r["READY"] == "True" for r in rows), rows

    def dedup() -> None:
        raw = vector(helm_course.query('count by (cluster) (up{job="prometheus"})', dedup=False), "cluster")
        ded = vector(helm_course.query('count by (cluster) (up{job="prometheus"})'), "cluster")
        assert raw == {"eu1": 1, "us1": 2} and ded == {"eu1": 1, "us1": 1}, f"raw {raw}, dedup {ded}"
    until(dedup, 300, "the querier to de-duplicate the us1 pair")
