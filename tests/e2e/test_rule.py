"""Rulers in real pods (issue 15, section 4), on kind or the local cluster (conftest.py): the operator installed
as in test_operator.py, then ``manifests/examples-rule`` (the tutorial's ThanosCluster demo and PrometheusHAs
eu1/us1, plus two rulers that evaluate the rule files of every ConfigMap labelled ``pythanos.io/rules=demo``).

In file order (the later tests change the rule ConfigMap the earlier ones looked at):

* every condition Ready and ``RuleFiles`` loaded; the querier gathers both rulers' rules over the Rules API
  and shows each group once (de-duplicated on ``rule_replica``), the Watchdog alert firing, the recorded
  ``job:up:sum`` and the ``ALERTS`` series, each of which the rulers wrote into their own TSDBs;
* the ConfigMap edited (a group added): the new group reaches the rulers in place, through the operator's
  generated ConfigMap, the kubelet's update of the volume and the pods' config-reloader, with the same pods
  (same UIDs, no container restarted) and the StatefulSet's template untouched; its recording rule's
  series arrives through the querier;
* a key that does not load added: the ``RuleFiles`` condition names it and the loader's message, a Warning
  Event says so on the ConfigMap, and the rulers keep evaluating every other group.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest
import yaml

from course import COMPACT_CLAIM, EXAMPLES, QUERY_SVC, Course, condition, until, vector, write_examples_overlay

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

RULE = "thanos-rule-demo"
RULE_CM = "rules-demo"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def course(e2e_cluster, install, tmp_path_factory):
    t0 = time.monotonic()
    c = Course(e2e_cluster, f"e2e-rule-{uuid.uuid4().hex[:6]}", tmp_path_factory.mktemp("rule"))
    c.deploy_s3(claims=(COMPACT_CLAIM, f"data-{RULE}-0", f"data-{RULE}-1"))
    overlay = write_examples_overlay(c.work / "examples-rule", c.namespace, examples="examples-rule")
    c.kc("apply", "--server-side", "-k", str(overlay), namespace=c.namespace, timeout=120)
    c.wait_ready(names=EXAMPLES, timeout=900)
    TIMINGS["ready"] = time.monotonic() - t0
    yield c
    c.teardown()
    print("\nrule timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in TIMINGS.items()))


def querier_json(course: Course, path: str, params: dict | None = None) -> dict:
    body = json.loads(course.service_get(QUERY_SVC, "http", path, params))
    assert body.get("status") == "success", body
    return body["data"]


def groups(course: Course) -> dict[str, list[str]]:
    """The querier's /api/v1/rules: group name -> the names of its rules, sorted."""
    data = querier_json(course, "/api/v1/rules")
    out: dict[str, list[str]] = {}
    for g in data["groups"]:
        assert g["name"] not in out, f"group {g['name']} twice: not de-duplicated"
        out[g["name"]] = sorted(r["name"] for r in g["rules"])   # merged groups' rules come sorted, as Thanos'
    return out


def ruler_pods(course: Course) -> dict[str, tuple[str, int]]:
    """Ruler pod name -> (UID, restarts summed over its containers)."""
    return {p["metadata"]["name"]: (p["metadata"]["uid"],
                                    sum(s.get("restartCount", 0) for s in p["status"].get("containerStatuses", [])))
            for p in course.pods("app.kubernetes.io/name=thanos-rule")}


def rule_cm_data(course: Course) -> dict[str, str]:
    return course.kc.json("get", "configmap", RULE_CM, namespace=course.namespace)["data"]


def put_rule_cm(course: Course, data: dict[str, str]) -> None:
    course.kc.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": RULE_CM, "labels": {"pythanos.io/rules": "demo"}}, "data": data}), namespace=course.namespace)


# --- 1. ready: rules, alerts and recorded series through the querier ------------------------------

def test_rulers_ready_and_querier_shows_their_rules_alerts_and_series(course):
    tc = course.cr("thanoscluster", "demo")
    rf = condition(tc, "RuleFiles")
    assert rf.get("status") == "True" and rf.get("reason") == "RuleFilesLoaded", rf
    assert len(ruler_pods(course)) == 2

    def rules_gathered() -> dict:
        got = groups(course)
        assert got == {"prometheus": ["PrometheusTargetDown", "job:up:sum"], "watchdog": ["Watchdog"]}, got
        return got
    until(rules_gathered, 300, "both rulers' groups through the querier")

    def watchdog_firing() -> None:
        alerts = querier_json(course, "/api/v1/alerts")["alerts"]
        firing = [a for a in alerts if a["labels"].get("alertname") == "Watchdog" and a["state"] == "firing"]
        assert len(firing) == 1, alerts    # one per ruler, de-duplicated on rule_replica
    until(watchdog_firing, 300, "Watchdog firing in the querier's /api/v1/alerts")

    # what the rulers recorded, from their own TSDBs over the StoreAPI: one series per job once de-duplicated,
    # one per ruler without
    def recorded() -> None:
        want = vector(course.query("sum by (job) (up)"), "job")
        assert want and vector(course.query("job:up:sum"), "job") == want, (course.query("job:up:sum"), want)
        raw = {r["metric"].get("rule_replica") for r in course.query("job:up:sum", dedup=False)}
        assert raw == {f"{RULE}-0", f"{RULE}-1"}, raw
        assert len(course.query('ALERTS{alertname="Watchdog", alertstate="firing"}')) == 1
    until(recorded, 300, "job:up:sum and ALERTS written by both rulers")


# --- 2. an edited ConfigMap reaches the rulers in place ------------------------------------------

def test_edited_rule_config_map_reloads_rulers_without_restart(course):
    pods_before = ruler_pods(course)
    sts = course.kc.json("get", "statefulset", RULE, namespace=course.namespace)
    data = rule_cm_data(course)
    data["added.yaml"] = ("groups:\n  - name: added\n    rules:\n      - record: e2e:added:one\n"
                          "        expr: vector(1)\n")
    t0 = time.monotonic()
    put_rule_cm(course, data)

    def added() -> None:
        got = groups(course)
        assert got.get("added") == ["e2e:added:one"], got
    until(added, 420, "the added group on the rulers (operator -> ConfigMap -> kubelet -> config-reloader)")
    TIMINGS["edit to reload"] = time.monotonic() - t0
    until(lambda: _recorded_twice(course, "e2e:added:one"), 300, "e2e:added:one from both rulers")

    assert ruler_pods(course) == pods_before, "the rulers were restarted or replaced"
    after = course.kc.json("get", "statefulset", RULE, namespace=course.namespace)
    assert after["metadata"]["generation"] == sts["metadata"]["generation"]
    assert after["spec"]["template"] == sts["spec"]["template"]
    reloads = {p: course.metrics(p, 8081).get("reloader_reloads_total", 0.0) for p in pods_before}
    assert all(v >= 1 for v in reloads.values()), reloads


def _recorded_twice(course: Course, name: str) -> None:
    got = {r["metric"].get("rule_replica") for r in course.query(name, dedup=False)}
    assert got == {f"{RULE}-0", f"{RULE}-1"}, got


# --- 3. a file that does not load ----------------------------------------------------------------

def test_bad_rule_file_named_in_condition_and_event_others_kept(course):
    data = rule_cm_data(course)
    data["broken.yaml"] = "groups:\n  - name: broken\n    rules:\n      - record: broken\n        expr: sum(\n"
    put_rule_cm(course, data)

    def invalid() -> dict:
        c = condition(course.cr("thanoscluster", "demo"), "RuleFiles")
        assert c.get("status") == "False" and c.get("reason") == "RuleFileInvalid", c
        assert "ConfigMap rules-demo, key broken.yaml" in c["message"], c
        return c
    until(invalid, 180, "RuleFiles naming the broken key")
    def event() -> None:
        assert course.events(RULE_CM, "RuleFileInvalid"), "no RuleFileInvalid Event on the ConfigMap yet"
    until(event, 120, "a Warning Event on the ConfigMap")
    # the rulers keep everything else
    got = groups(course)
    assert set(got) == {"prometheus", "watchdog", "added"}, got
    assert len(course.query('ALERTS{alertname="Watchdog", alertstate="firing"}')) == 1
