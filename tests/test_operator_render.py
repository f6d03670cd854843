"""Golden tests of the operator's pure render functions (CR in, manifests out; no cluster).

The input is the tutorial's example (manifests/examples: eu1 with one replica, us1 with two, ThanosCluster
``demo``). ``make golden`` rewrites tests/golden/operator/*.yaml;
review the diff by eye.
"""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from pythanos_operator import drift, render, status as st  # noqa: E402
from pythanos_operator.spec import Defaults  # noqa: E402

EXAMPLES = ROOT / "manifests" / "examples"
GOLDEN = ROOT / "tests" / "golden" / "operator"
CRDS = ROOT / "crds"
NS = "monitoring"
DEFAULTS = Defaults(component_image="pythanos:0.1.0")


def _example(name: str, uid: str, created: str) -> dict:
    obj = yaml.safe_load((EXAMPLES / name).read_text())
    obj["metadata"].update(namespace=NS, uid=uid, creationTimestamp=created, generation=1)
    return obj


@pytest.fixture
def tc():
    return _example("thanoscluster.yaml", "00000000-0000-0000-0000-00000000000c", "2026-01-01T00:00:00Z")


@pytest.fixture
def eu1():
    return _example("prometheusha-eu1.yaml", "00000000-0000-0000-0000-0000000000e1", "2026-01-01T00:00:01Z")


@pytest.fixture
def us1():
    return _example("prometheusha-us1.yaml", "00000000-0000-0000-0000-0000000000a1", "2026-01-01T00:00:02Z")


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def dump(objs: list[dict]) -> str:
    """YAML for golden files: multi-line strings (configs) as literal blocks."""
    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def _golden(name: str, objs: list[dict]) -> None:
    text = dump(objs)
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":  # only `make golden` sets it: a test run never writes one
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if not path.exists():
        pytest.fail(f"golden file {path} missing: `make golden` writes it; review it before committing")
    assert text == path.read_text(), f"render output differs from {path}; `make golden` regenerates it"


def _by(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [(o["kind"], o["metadata"]["name"]) for o in objs])
    return found[0]


def _container(obj: dict, name: str) -> dict:
    return next(c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == name)


# ---------------------------------------------------------------------------------------------- goldens

def test_golden_prometheusha_eu1(eu1, tc):
    _golden("prometheusha-eu1", render.render_prometheus_ha(eu1, tc, DEFAULTS))


def test_golden_prometheusha_us1(us1, tc):
    _golden("prometheusha-us1", render.render_prometheus_ha(us1, tc, DEFAULTS))


def test_golden_thanoscluster(tc, eu1, us1):
    _golden("thanoscluster-demo", render.render_thanos_cluster(tc, [us1, eu1], DEFAULTS))


def test_golden_prometheusha_standalone(eu1):
    """No ThanosCluster: no upload flag, no cluster label."""
    pha = copy.deepcopy(eu1)
    del pha["spec"]["thanosClusterRef"]
    _golden("prometheusha-eu1-standalone", render.render_prometheus_ha(pha, None, DEFAULTS))


# ---------------------------------------------------------------------------------------------- flags

def test_replica_label_is_pod_name_through_reloader(us1, tc):
    objs = render.render_prometheus_ha(us1, tc, DEFAULTS)
    cfg = yaml.safe_load(_by(objs, "ConfigMap")["data"]["prometheus.yaml.tmpl"])
    assert cfg["global"]["external_labels"] == {"cluster": "us1", "replica": "$(POD_NAME)"}
    assert cfg["scrape_configs"][0]["job_name"] == "prometheus"
    sts = _by(objs, "StatefulSet", "prometheus-us1")
    assert sts["spec"]["replicas"] == 2
    side = _container(sts, "thanos-sidecar")
    assert side["args"][0] == "sidecar"
    assert "--reloader.config-file=/etc/prometheus/config/prometheus.yaml.tmpl" in side["args"]
    assert "--reloader.config-envsubst-file=/etc/prometheus/config_out/prometheus.yaml" in side["args"]
    assert "--grpc-address=0.0.0.0:10901" in side["args"] and "--http-address=0.0.0.0:10902" in side["args"]
    assert "--objstore.config-file=/etc/thanos/objstore/objstore.yml" in side["args"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in side["env"]
    prom = _container(sts, "prometheus")
    assert "--config.file=/etc/prometheus/config_out/prometheus.yaml" in prom["args"]
    assert prom["image"] == "quay.io/prometheus/prometheus:v3.9.1"
    # anti-affinity spreads the replicas; a PDB keeps one up
    assert sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    pdb = _by(objs, "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": sts["spec"]["selector"]}


def test_prometheus_starts_from_its_image_after_an_init_container_writes_the_config(us1, tc):
    """No shell loop waiting for the sidecar: an init container (the sidecar's reloader, once) writes the
    expanded config, then Prometheus starts from its image's entrypoint. No admin API: nothing needs it."""
    sts = _by(render.render_prometheus_ha(us1, tc, DEFAULTS), "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    prom, side = _container(sts, "prometheus"), _container(sts, "thanos-sidecar")
    assert "command" not in prom
    assert "--web.enable-admin-api" not in prom["args"] and "--web.enable-lifecycle" in prom["args"]
    [init] = pod["initContainers"]
    assert init["image"] == side["image"] and "command" not in init
    assert init["args"][0] == "sidecar" and init["args"][-1] == "--reloader.once"
    reloader = [a for a in side["args"] if a.startswith("--reloader.config")]
    assert reloader and [a for a in init["args"] if a.startswith("--reloader.config")] == reloader
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in init["env"]
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert mounts["config-out"] == "/etc/prometheus/config_out" and mounts["config"] == "/etc/prometheus/config"
    assert "--config.file=/etc/prometheus/config_out/prometheus.yaml" in prom["args"]
    assert init["securityContext"] == side["securityContext"]
    for c in [*pod["initContainers"], *pod["containers"]]:
        assert not any("/bin/sh" in str(x) for x in (c.get("command") or []) + c["args"]), c


def test_single_replica_has_no_pdb(eu1, tc):
    kinds = [o["kind"] for o in render.render_prometheus_ha(eu1, tc, DEFAULTS)]
    assert "PodDisruptionBudget" not in kinds
    assert sorted(kinds) == ["ConfigMap", "Service", "StatefulSet"]


def test_headless_service_has_grpc_port_for_dnssrv(eu1, tc):
    objs = render.render_prometheus_ha(eu1, tc, DEFAULTS)
    svc = _by(objs, "Service")
    assert svc["spec"]["clusterIP"] == "None"
    assert {"name": "grpc", "port": 10901, "targetPort": "grpc"} in svc["spec"]["ports"]
    assert _by(objs, "StatefulSet")["spec"]["serviceName"] == svc["metadata"]["name"]


def test_querier_endpoints_and_replica_labels(tc, eu1, us1):
    us1["spec"]["replicaExternalLabelName"] = "prometheus_replica"
    objs = render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS)
    sd = yaml.safe_load(_by(objs, "ConfigMap", "thanos-query-demo-endpoints")["data"]["endpoints.yaml"])
    assert sd == {"endpoints": [
        {"address": "dnssrv+_grpc._tcp.prometheus-eu1.monitoring.svc"},
        {"address": "dnssrv+_grpc._tcp.prometheus-us1.monitoring.svc"},
        {"address": "dnssrv+_grpc._tcp.thanos-store-demo.monitoring.svc"},
    ]}
    q = _container(_by(objs, "Deployment", "thanos-query-demo"), "thanos-query")
    assert q["args"][0] == "query"
    assert "--endpoint.sd-config-file=/etc/thanos/sd/endpoints.yaml" in q["args"]
    assert [a for a in q["args"] if a.startswith("--query.replica-label=")] == [
        "--query.replica-label=prometheus_replica", "--query.replica-label=replica"]
    assert not [a for a in q["args"] if a.startswith("--endpoint=")], "endpoints come from the SD file only"
    c = _container(_by(objs, "StatefulSet", "thanos-compact-demo"), "thanos-compact")
    assert [a for a in c["args"] if a.startswith("--deduplication.replica-label=")] == [
        "--deduplication.replica-label=prometheus_replica", "--deduplication.replica-label=replica"]


def test_extra_replica_labels_and_endpoints(tc, eu1):
    tc["spec"]["querier"].update(extraReplicaLabels=["rule_replica"], extraEndpoints=["thanos-sidecar.other:10901"])
    tc["spec"]["compactor"]["deduplication"] = {"extraReplicaLabels": ["receive_replica"]}
    objs = render.render_thanos_cluster(tc, [eu1], DEFAULTS)
    q = _container(_by(objs, "Deployment"), "thanos-query")
    assert "--query.replica-label=rule_replica" in q["args"]
    sd = yaml.safe_load(_by(objs, "ConfigMap")["data"]["endpoints.yaml"])
    assert {"address": "thanos-sidecar.other:10901"} in sd["endpoints"]
    c = _container(_by(objs, "StatefulSet", "thanos-compact-demo"), "thanos-compact")
    assert "--deduplication.replica-label=receive_replica" in c["args"]
    assert "--deduplication.replica-label=rule_replica" not in c["args"]


def test_compactor_without_members_starts(tc, eu1):
    """A ThanosCluster applied before its PrometheusHAs renders first with no member: no replica label, so
    no --deduplication.func (penalty without a replica label stops the compactor at start-up)."""
    def args(members):
        return _container(_by(render.render_thanos_cluster(tc, members, DEFAULTS), "StatefulSet",
                              "thanos-compact-demo"), "thanos-compact")["args"]
    assert not [a for a in args([]) if a.startswith("--deduplication.")]
    assert {"--deduplication.replica-label=replica", "--deduplication.func=penalty"} <= set(args([eu1]))
    tc["spec"]["compactor"]["deduplication"] = {"extraReplicaLabels": ["receive_replica"]}
    assert {"--deduplication.replica-label=receive_replica", "--deduplication.func=penalty"} <= set(args([]))


def test_compactor_is_a_singleton_with_a_pvc(tc, eu1, us1):
    for asked in (1, 3):   # the schema caps it at 1; render caps too
        tc["spec"]["compactor"]["replicas"] = asked
        sts = _by(render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS), "StatefulSet", "thanos-compact-demo")
        assert sts["spec"]["replicas"] == 1
        assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
        args = _container(sts, "thanos-compact")["args"]
        assert args[0] == "compact" and "--wait" in args
        assert "--retention.resolution-raw=30d" in args and "--retention.resolution-1h=1y" in args
    tc["spec"]["compactor"]["replicas"] = 0
    sts = _by(render.render_thanos_cluster(tc, [eu1], DEFAULTS), "StatefulSet", "thanos-compact-demo")
    assert sts["spec"]["replicas"] == 0


def test_store_gateway_shards(tc, eu1):
    tc["spec"]["storeGateway"] = {"replicas": 1, "shards": 3}
    objs = render.render_thanos_cluster(tc, [eu1], DEFAULTS)
    stores = [o for o in objs if o["kind"] == "StatefulSet" and o["metadata"]["name"].startswith("thanos-store")]
    assert [o["metadata"]["name"] for o in stores] == [f"thanos-store-demo-{i}" for i in range(3)]
    for i, o in enumerate(stores):
        args = _container(o, "thanos-store")["args"]
        relabel = next(a for a in args if a.startswith("--selector.relabel-config="))
        rules = yaml.safe_load(relabel.split("=", 1)[1])
        assert rules[0]["modulus"] == 3 and rules[1] == {"action": "keep", "source_labels": ["shard"], "regex": str(i)}
        assert o["spec"]["serviceName"] == "thanos-store-demo"
    # one headless Service finds every shard
    assert _by(objs, "Service", "thanos-store-demo")["spec"]["clusterIP"] == "None"


def test_no_cluster_domain_anywhere(tc, eu1, us1):
    text = yaml.safe_dump_all(render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS)
                              + render.render_prometheus_ha(us1, tc, DEFAULTS))
    assert "cluster.local" not in text


def test_children_have_explicit_labels_and_owner_refs(tc, eu1):
    # Argo CD's tracking label (and any other label of the CR) never reaches a child.
    for owner in (tc, eu1):
        owner["metadata"]["labels"] = {"argocd.argoproj.io/instance": "demo-app",
                                       "app.kubernetes.io/instance": "demo-app", "team": "x"}
    objs = render.render_thanos_cluster(tc, [eu1], DEFAULTS) + render.render_prometheus_ha(eu1, tc, DEFAULTS)
    for o in objs:
        md = o["metadata"]
        assert md["namespace"] == NS
        owner = eu1 if md["name"].startswith("prometheus-") else tc
        assert md["ownerReferences"] == [{
            "apiVersion": "pythanos.io/v1alpha1", "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        assert md["labels"]["app.kubernetes.io/managed-by"] == "pythanos-operator"
        for bad in ("argocd.argoproj.io/instance", "app.kubernetes.io/instance", "team"):
            assert bad not in md["labels"]
            if o["kind"] in ("StatefulSet", "Deployment"):
                assert bad not in o["spec"]["template"]["metadata"]["labels"]
        if o["kind"] in ("StatefulSet", "Deployment"):
            sel = o["spec"]["selector"]["matchLabels"]
            assert sel.items() <= o["spec"]["template"]["metadata"]["labels"].items()


def test_no_owner_reference_without_uid(eu1):
    del eu1["metadata"]["uid"]
    assert all("ownerReferences" not in o["metadata"] for o in render.render_prometheus_ha(eu1, None, DEFAULTS))


def test_scrape_config_from_secret_is_mounted_not_read(eu1, tc):
    eu1["spec"]["scrapeConfigFrom"] = {"secretKeyRef": {"name": "extra-scrapes", "key": "scrape.yaml"}}
    objs = render.render_prometheus_ha(eu1, tc, DEFAULTS)
    cfg = yaml.safe_load(_by(objs, "ConfigMap")["data"]["prometheus.yaml.tmpl"])
    assert cfg["scrape_config_files"] == ["/etc/prometheus/scrape/scrape.yaml"]
    sts = _by(objs, "StatefulSet")
    assert {"name": "scrape-configs", "secret": {"secretName": "extra-scrapes"}} in sts["spec"]["template"]["spec"]["volumes"]
    assert "--reloader.rule-dir=/etc/prometheus/scrape" in _container(sts, "thanos-sidecar")["args"]


def test_sidecar_object_storage_override(eu1, tc):
    eu1["spec"]["sidecar"] = {"objectStorage": {"secretKeyRef": {"name": "own-bucket", "key": "b.yml"}}}
    sts = _by(render.render_prometheus_ha(eu1, tc, DEFAULTS), "StatefulSet")
    assert "--objstore.config-file=/etc/thanos/objstore/b.yml" in _container(sts, "thanos-sidecar")["args"]
    assert {"name": "objstore", "secret": {"secretName": "own-bucket"}} in sts["spec"]["template"]["spec"]["volumes"]


# ---------------------------------------------------------------------------------------------- CRD defaults agree

def _schema_defaults(value, schema):
    """Apply ``default:`` of a structural schema the way the API server does (objects only)."""
    if schema.get("type") == "object" and isinstance(value, dict):
        for k, sub in (schema.get("properties") or {}).items():
            if k not in value and "default" in sub:
                value[k] = copy.deepcopy(sub["default"])
            if k in value:
                value[k] = _schema_defaults(value[k], sub)
    if schema.get("type") == "array" and isinstance(value, list) and "items" in schema:
        value = [_schema_defaults(v, schema["items"]) for v in value]
    return value


def _defaulted(obj: dict) -> dict:
    crd = yaml.safe_load((CRDS / f"{ {'PrometheusHA': 'prometheushas', 'ThanosCluster': 'thanosclusters'}[obj['kind']] }.pythanos.io.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    out = copy.deepcopy(obj)
    out["spec"] = _schema_defaults(out["spec"], schema)
    return out


def test_render_is_the_same_on_server_defaulted_input(tc, eu1, us1):
    """spec.py's fallbacks equal the CRD's defaults: what the server stores renders like the example."""
    assert render.render_thanos_cluster(_defaulted(tc), [_defaulted(eu1), _defaulted(us1)], DEFAULTS) == \
        render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS)
    for p in (eu1, us1):
        assert render.render_prometheus_ha(_defaulted(p), _defaulted(tc), DEFAULTS) == \
            render.render_prometheus_ha(p, tc, DEFAULTS)


# ---------------------------------------------------------------------------------------------- cross-object rules

def test_membership_by_reference_and_selector(tc, eu1, us1):
    assert render.cluster_for(eu1, [tc]) is tc
    sel_pha = copy.deepcopy(us1)
    del sel_pha["spec"]["thanosClusterRef"]
    assert render.cluster_for(sel_pha, [tc]) is None
    tc["spec"]["prometheusHASelector"] = {"matchLabels": {"thanos": "demo"}}
    sel_pha["metadata"]["labels"] = {"thanos": "demo"}
    assert render.cluster_for(sel_pha, [tc]) is tc
    other_ns = copy.deepcopy(sel_pha)
    other_ns["metadata"]["namespace"] = "elsewhere"
    assert render.cluster_for(other_ns, [tc]) is None
    assert [m["metadata"]["name"] for m in render.members_of(tc, [us1, eu1, other_ns], [tc])] == ["eu1", "us1"]


def test_external_label_conflict_later_one_loses(tc, eu1, us1):
    assert render.external_label_conflicts([eu1, us1], [tc]) == {}
    dup = copy.deepcopy(us1)
    dup["metadata"].update(name="us1-copy", uid="x", creationTimestamp="2026-01-02T00:00:00Z")
    # same labels, a different replica label name: still the same stream
    dup["spec"]["replicaExternalLabelName"] = "prometheus_replica"
    assert render.external_label_conflicts([dup, eu1, us1], [tc]) == {(NS, "us1-copy"): "us1"}
    # the earlier keeps running whatever the order of the index
    assert render.external_label_conflicts([us1, dup], [tc]) == {(NS, "us1-copy"): "us1"}
    # different clusters: no conflict
    dup["spec"]["thanosClusterRef"] = {"name": "other"}
    assert render.external_label_conflicts([dup, eu1, us1], [tc]) == {}
    # no cluster at all: nothing to compare with
    del dup["spec"]["thanosClusterRef"]
    assert render.external_label_conflicts([dup, us1], [tc]) == {}


def test_conflict_ties_break_by_name(tc, eu1):
    a, b = copy.deepcopy(eu1), copy.deepcopy(eu1)
    a["metadata"]["name"], b["metadata"]["name"] = "b-later", "a-first"
    assert render.external_label_conflicts([a, b], [tc]) == {(NS, "b-later"): "a-first"}


# ---------------------------------------------------------------------------------------------- status math

def _wl(kind, name, replicas, ready):
    key = "availableReplicas" if kind == "Deployment" else "readyReplicas"
    return {"kind": kind, "metadata": {"name": name}, "spec": {"replicas": replicas}, "status": {key: ready}}


def test_status_counts_a_just_applied_workload_generation():
    """The reconcile writes status right after its apply, when kopf's index may still hold the workload's
    previous generation: a StatefulSet scaled 2 -> 3 must not be reported ready with its old 2/2."""
    from pythanos_operator.handlers import _newest

    def sts(gen, replicas, ready):
        return {"kind": "StatefulSet", "metadata": {"name": "prometheus-us1", "generation": gen},
                "spec": {"replicas": replicas}, "status": {"readyReplicas": ready}}
    indexed, applied = sts(3, 2, 2), sts(4, 3, 2)
    assert _newest(indexed, applied) is applied
    assert st.availability([("StatefulSet", "prometheus-us1")], [_newest(indexed, applied)]).cond.reason \
        == "SomePodsNotReady"
    later = sts(4, 3, 3)   # the index caught up (and has newer status than the apply's answer)
    assert _newest(later, applied) is later
    assert _newest(None, applied) is applied and _newest(indexed, None) is indexed


def test_availability_reasons():
    exp = [("StatefulSet", "a"), ("Deployment", "b")]
    assert st.availability(exp, []).cond.reason == st.WORKLOAD_NOT_FOUND
    assert st.availability(exp, [_wl("StatefulSet", "a", 2, 0), _wl("Deployment", "b", 1, 0)]).cond == \
        st.Cond("False", st.NO_POD_READY, "StatefulSet a: 0/2 ready; Deployment b: 0/1 ready")
    a = st.availability(exp, [_wl("StatefulSet", "a", 2, 1), _wl("Deployment", "b", 1, 1)])
    assert (a.cond.status, a.cond.reason, a.replicas, a.ready) == ("False", st.SOME_PODS_NOT_READY, 3, 2)
    a = st.availability(exp, [_wl("StatefulSet", "a", 2, 2), _wl("Deployment", "b", 1, 1)])
    assert (a.cond.status, a.cond.reason) == ("True", st.ALL_PODS_READY)


def test_ready_summary_and_transition_times():
    ok = st.Cond("True", st.RECONCILE_SUCCEEDED)
    assert st.ready_from(st.Cond("False", st.EXTERNAL_LABELS_CONFLICT, "x"), st.Cond("True", st.ALL_PODS_READY)) == \
        st.Cond("False", st.EXTERNAL_LABELS_CONFLICT, "x")
    assert st.ready_from(ok, st.Cond("False", st.SOME_PODS_NOT_READY, "y")).reason == st.SOME_PODS_NOT_READY
    first = st.merge_conditions([], 1, {st.READY: st.Cond("False", st.NO_POD_READY), st.RECONCILED: ok,
                                        st.AVAILABLE: st.Cond("False", st.NO_POD_READY)}, "T1")
    assert [c["type"] for c in first] == ["Ready", "Reconciled", "Available"]
    second = st.merge_conditions(first, 2, {st.READY: st.Cond("True", st.ALL_PODS_READY), st.RECONCILED: ok,
                                            st.AVAILABLE: st.Cond("True", st.ALL_PODS_READY)}, "T2")
    assert [c["lastTransitionTime"] for c in second] == ["T2", "T1", "T2"]
    assert all(c["observedGeneration"] == 2 for c in second)


def test_every_mount_has_a_volume(tc, eu1, us1):
    us1["spec"]["storage"] = {"size": "5Gi"}
    tc["spec"]["storeGateway"] = {"shards": 2, "storage": {"size": "2Gi"}}
    objs = render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS) + render.render_prometheus_ha(us1, tc, DEFAULTS) \
        + render.render_prometheus_ha(eu1, tc, DEFAULTS)
    for o in objs:
        if o["kind"] not in ("StatefulSet", "Deployment"):
            continue
        pod = o["spec"]["template"]["spec"]
        vols = [v["name"] for v in pod.get("volumes", [])] + \
            [v["metadata"]["name"] for v in o["spec"].get("volumeClaimTemplates", [])]
        assert len(vols) == len(set(vols)), (o["metadata"]["name"], vols)
        for c in pod["containers"]:
            for m in c["volumeMounts"]:
                assert m["name"] in vols, (o["metadata"]["name"], c["name"], m["name"])


# ---------------------------------------------------------------------------------------------- drift

def _as_served(obj: dict) -> dict:
    """A rendered object as the API server returns it: defaults filled in, bookkeeping and status added."""
    live = copy.deepcopy(obj)
    live["metadata"].update(uid="u", resourceVersion="7", generation=3, managedFields=[{"manager": "x"}],
                            creationTimestamp="2026-01-01T00:00:00Z")
    live["status"] = {"replicas": 1}
    if obj["kind"] == "StatefulSet":
        spec = live["spec"]
        spec.update(revisionHistoryLimit=10, updateStrategy={"type": "RollingUpdate"})
        pod = spec["template"]["spec"]
        pod.update(dnsPolicy="ClusterFirst", restartPolicy="Always", schedulerName="default-scheduler")
        for c in pod["containers"]:
            c["terminationMessagePath"] = "/dev/termination-log"
            for port in c.get("ports") or []:
                port["protocol"] = "TCP"
            for e in c.get("env") or []:
                if "valueFrom" in e:
                    e["valueFrom"]["fieldRef"]["apiVersion"] = "v1"
        pod["containers"].reverse()   # associative lists match by name, in any order
        pod["containers"].append({"name": "istio-proxy", "image": "x"})   # another manager's container
    return live


def test_drift_ignores_defaults_and_status_and_finds_hand_edits(eu1, tc):
    objs = render.render_prometheus_ha(eu1, tc, DEFAULTS)
    for o in objs:
        assert drift.drift(o, _as_served(o)) is None, o["kind"]
    sts = _by(objs, "StatefulSet")
    scaled = _as_served(sts)
    scaled["spec"]["replicas"] = 3
    assert drift.drift(sts, scaled) == "spec.replicas"
    flag = _as_served(sts)
    args = _container(flag, "prometheus")["args"]
    args[args.index("--log.level=info")] = "--log.level=debug"
    assert drift.drift(sts, flag) == f"spec.template.spec.containers[prometheus].args[{args.index('--log.level=debug')}]"
    extra = _as_served(sts)
    _container(extra, "thanos-sidecar")["args"].append("--shipper.upload-compacted")   # atomic list: whole
    assert drift.drift(sts, extra) == "spec.template.spec.containers[thanos-sidecar].args"
    gone = _as_served(sts)
    gone["spec"]["template"]["spec"]["containers"] = [c for c in gone["spec"]["template"]["spec"]["containers"]
                                                      if c["name"] != "thanos-sidecar"]
    assert drift.drift(sts, gone) == "spec.template.spec.containers[thanos-sidecar]"
    relabeled = _as_served(sts)
    del relabeled["metadata"]["labels"]["app.kubernetes.io/part-of"]
    assert drift.drift(sts, relabeled) == "metadata.labels.app.kubernetes.io/part-of"
    cm = _by(objs, "ConfigMap")
    edited = _as_served(cm)
    edited["data"]["prometheus.yaml.tmpl"] += "# by hand\n"
    assert drift.drift(cm, edited) == "data.prometheus.yaml.tmpl"
    assert drift.controller_of(sts) == ("PrometheusHA", "eu1", eu1["metadata"]["uid"])
    assert drift.controller_of({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                                  "name": "x", "uid": "u", "controller": True}]}}) is None


# ---------------------------------------------------------------------------------------------- real binaries

def _all_containers(tc, eu1, us1, init: bool = False):
    """Every container rendered (and, with ``init``, every init container: ours only, never Thanos')."""
    tc["spec"]["storeGateway"] = {"shards": 2, "timePartitions": [{"maxTime": "-2w"}, {"minTime": "-2w"}]}
    us1["spec"]["scrapeConfigFrom"] = {"configMapKeyRef": {"name": "more", "key": "scrape.yaml"}}
    objs = render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS) + render.render_prometheus_ha(us1, tc, DEFAULTS)
    for o in objs:
        if o["kind"] in ("StatefulSet", "Deployment"):
            pod = o["spec"]["template"]["spec"]
            yield from ((o["metadata"]["name"], c) for c in (pod.get("initContainers") or []) if init)
            yield from ((o["metadata"]["name"], c) for c in pod["containers"])


def test_rendered_thanos_flags_parse_with_real_thanos(tc, eu1, us1, thanos_bin):
    """Every Thanos component flag the operator renders is one real Thanos (v0.42) accepts."""
    import subprocess
    seen = set()
    for obj, c in _all_containers(tc, eu1, us1):
        if c["name"] == "prometheus":
            continue
        seen.add(c["args"][0])
        r = subprocess.run([thanos_bin, *c["args"], "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{obj}/{c['name']}: thanos rejects {c['args']}:\n{r.stderr[-2000:]}"
    assert seen == {"sidecar", "query", "store", "compact"}


def test_rendered_prometheus_flags_and_config(tc, eu1, us1, prometheus3_bin, promtool_bin, tmp_path):
    import subprocess
    # the config template, expanded as the reloader does, is a valid Prometheus config (promtool 2.42 predates
    # scrape_config_files, which scrapeConfigFrom needs: Prometheus >= 2.43, the default image is 3.x)
    for pha in (eu1, us1):
        text = _by(render.render_prometheus_ha(pha, tc, DEFAULTS), "ConfigMap")["data"]["prometheus.yaml.tmpl"]
        cfg = tmp_path / f"{pha['metadata']['name']}.yaml"
        cfg.write_text(text.replace("$(POD_NAME)", f"prometheus-{pha['metadata']['name']}-0"))
        r = subprocess.run([promtool_bin, "check", "config", str(cfg)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
    prom = next(c for _, c in _all_containers(tc, eu1, us1) if c["name"] == "prometheus")
    r = subprocess.run([prometheus3_bin, *prom["args"], "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]


def test_rendered_component_flags_parse_with_pythanos(tc, eu1, us1, tmp_path):
    """The component image runs ``pythanos <component>``: every flag rendered for a component we
    ship must parse with our own CLI."""
    from pythanos.cli import build_parser

    ours = {"sidecar", "query", "store", "compact"}
    seen = set()
    for obj, c in _all_containers(tc, eu1, us1, init=True):
        if c["name"] == "prometheus" or c["args"][0] not in ours:
            continue
        seen.add(c["args"][0])
        if c["name"] == "init-config":   # a pythanos-only flag (Thanos has no one-shot reloader)
            assert build_parser().parse_args(c["args"]).reloader_once
        try:
            args = build_parser().parse_args(c["args"])
        except SystemExit as e:
            pytest.fail(f"{obj}/{c['name']}: pythanos rejects {c['args']} (exit {e.code})")
        assert args.component == c["args"][0]
        if args.component == "compact":  # the whole config builds (replica labels, retention checks)
            from pythanos.compact.flags import config_from_args

            # the pod's secret mount is not here: the same flags with a local bucket file
            (tmp_path / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path}\n")
            args.objstore_config_file = str(tmp_path / "objstore.yml")
            cfg = config_from_args(args)
            assert cfg.wait and cfg.replica_labels and cfg.vertical, cfg
        if args.component == "store" and args.relabel_config:  # the sharding config parses too
            from pythanos.relabel import SELECTOR_ACTIONS, parse_relabel_config

            assert parse_relabel_config(args.relabel_config, "--selector.relabel-config", actions=SELECTOR_ACTIONS)
    assert seen == ours
