"""The operator deploys the receiver (issue 14 §5): renders, hashring, flags, and the real API server.

* Renders (no cluster): goldens of a ThanosCluster with receivers and of a PrometheusHA that remote-writes;
  the hashring file from pod readiness (only ready, wanted pods; ordered by ordinal whatever the input
  order; parsed by our ``parse_hashrings``); flags parsed by our CLI and accepted by a real ``thanos
  receive`` (v0.42); the remote-writing Prometheus' config checked by a real Prometheus 3.9.1.
* Against a real kube-apiserver with the operator running under its own RBAC: the objects appear with
  owner references; the hashring ConfigMap follows Pod objects created and marked (un)ready by the test
  (no kubelet here); conditions and Events; server-side validation of the new fields.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from peers import REGISTRY, Process, start_on_free_ports  # noqa: E402
from configmap_volume import write_configmap_volume  # noqa: E402
from pythanos.receive.hashring import InsufficientNodesError, new_multi_hashring, parse_hashrings  # noqa: E402
from pythanos_operator import render, status as st  # noqa: E402
from pythanos_operator.spec import Defaults  # noqa: E402
import test_operator_render as _render_tests  # noqa: E402
from test_operator_render import DEFAULTS, NS, _by, _container, _defaulted, _golden  # noqa: E402

tc, eu1, us1 = _render_tests.tc, _render_tests.eu1, _render_tests.us1   # the example objects, as fixtures

RECEIVER = {"enabled": True, "replicas": 3, "replicationFactor": 2, "retention": "6h",
            "storage": {"size": "20Gi"}}


def with_receiver(tc: dict, **over) -> dict:
    tc = copy.deepcopy(tc)
    tc["spec"]["receiver"] = {**RECEIVER, **over}
    return tc


def remote_writing(pha: dict, tenant: str | None = "team-eu") -> dict:
    pha = copy.deepcopy(pha)
    pha["spec"]["remoteWrite"] = {"tenant": tenant} if tenant else {}
    return pha


def pod(name: str, ready: bool | None, ns: str = NS, cluster: str = "demo", deleting: bool = False) -> dict:
    md = {"name": name, "namespace": ns, "labels": {render.LABEL_TC: cluster}}
    if deleting:
        md["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    conds = [] if ready is None else [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": md, "status": {"conditions": conds}}


def ring_of(objs: list[dict]) -> list[str]:
    cm = _by(objs, "ConfigMap", "thanos-receive-demo-hashring")
    [h] = parse_hashrings(cm["data"]["hashrings.json"], source="hashrings.json")
    assert h.hashring == "default" and h.tenants == ()
    return [e.address for e in h.endpoints]


def ep(i: int, ns: str = NS) -> str:
    return f"thanos-receive-demo-{i}.thanos-receive-demo.{ns}.svc.cluster.local:10901"


# ---------------------------------------------------------------------------------------------- goldens

PODS = [pod("thanos-receive-demo-2", True), pod("thanos-receive-demo-0", True), pod("thanos-receive-demo-1", False)]


def test_golden_thanoscluster_with_receivers(tc, eu1, us1):
    _golden("thanoscluster-demo-receive",
            render.render_thanos_cluster(with_receiver(tc), [us1, remote_writing(eu1)], DEFAULTS, receive_pods=PODS))


def test_golden_prometheusha_remote_write(eu1, tc):
    _golden("prometheusha-eu1-remote-write",
            render.render_prometheus_ha(remote_writing(eu1), with_receiver(tc), DEFAULTS))


def test_without_receiver_nothing_changes(tc, eu1, us1):
    """A disabled receiver section renders exactly what it rendered before (the demo golden)."""
    off = copy.deepcopy(tc)
    off["spec"]["receiver"] = {"enabled": False, "replicas": 3}
    assert render.render_thanos_cluster(off, [us1, eu1], DEFAULTS, receive_pods=PODS) == \
        render.render_thanos_cluster(tc, [us1, eu1], DEFAULTS)


# ---------------------------------------------------------------------------------------------- hashring

def test_hashring_is_the_ready_wanted_pods_in_ordinal_order(tc):
    t = with_receiver(tc, replicas=12)
    pods = [pod(f"thanos-receive-demo-{i}", True) for i in (10, 2, 11, 0, 1)] + [
        pod("thanos-receive-demo-3", False),                  # not ready
        pod("thanos-receive-demo-4", None),                   # no condition yet
        pod("thanos-receive-demo-5", True, deleting=True),    # going away
        pod("thanos-receive-demo-12", True),                  # beyond replicas (scaling down)
        pod("thanos-receive-demo-6", True, cluster="other"),  # another cluster's label
        pod("thanos-receive-demo-7", True, ns="elsewhere"),   # another namespace
        pod("thanos-receive-demo-x", True), pod("thanos-receive-demo-08", True),
        pod("thanos-store-demo-9", True)]
    want = [ep(i) for i in (0, 1, 2, 10, 11)]
    assert ring_of(render.render_thanos_cluster(t, [], DEFAULTS, receive_pods=pods)) == want
    # the same bytes whatever order the watch delivered the pods in
    texts = {render.render_thanos_cluster(t, [], DEFAULTS, receive_pods=p)[0]["data"]["endpoints.yaml"] + json.dumps(
        _by(render.render_thanos_cluster(t, [], DEFAULTS, receive_pods=p), "ConfigMap",
            "thanos-receive-demo-hashring")["data"]) for p in (pods, pods[::-1], sorted(pods, key=str))}
    assert len(texts) == 1
    # no pod ready: a ring with no endpoints (a Thanos receiver refuses a file with no hashring at all)
    assert ring_of(render.render_thanos_cluster(t, [], DEFAULTS, receive_pods=[])) == []
    assert parse_hashrings(render.hashrings_json([])) and render.hashrings_json([]).endswith("\n")


def test_local_endpoint_is_the_hashring_entry_of_its_pod(tc):
    """--receive.local-endpoint, as the kubelet expands $(POD_NAME), equals the pod's hashring entry, so each
    receiver finds itself in the ring; the cluster domain is the operator's (PYTHANOS_CLUSTER_DOMAIN)."""
    t = with_receiver(tc, replicationFactor=1)
    for d in (DEFAULTS, Defaults(component_image="pythanos:0.1.0", cluster_domain="k8s.example")):
        objs = render.render_thanos_cluster(t, [], d, receive_pods=[pod("thanos-receive-demo-1", True)])
        args = _container(_by(objs, "StatefulSet", "thanos-receive-demo"), "thanos-receive")["args"]
        [local] = [a.split("=", 1)[1] for a in args if a.startswith("--receive.local-endpoint=")]
        assert ring_of(objs) == [local.replace("$(POD_NAME)", "thanos-receive-demo-1")]
        assert ring_of(objs)[0].endswith(f".svc.{d.cluster_domain}:10901")


def test_ketama_ring_never_has_fewer_endpoints_than_the_replication_factor(tc):
    """Ketama cannot build a ring smaller than the replication factor (a Thanos receiver exits on such a
    file): with fewer ready pods, every wanted replica is listed and the ring builds."""
    t = with_receiver(tc, hashringsAlgorithm="ketama", replicas=3, replicationFactor=3)
    objs = render.render_thanos_cluster(t, [], DEFAULTS, receive_pods=[pod("thanos-receive-demo-1", True)])
    assert ring_of(objs) == [ep(0), ep(1), ep(2)]
    configs = parse_hashrings(_by(objs, "ConfigMap", "thanos-receive-demo-hashring")["data"]["hashrings.json"])
    new_multi_hashring(configs, "ketama", 3)   # builds
    ready = [pod(f"thanos-receive-demo-{i}", True) for i in range(3)]
    assert ring_of(render.render_thanos_cluster(t, [], DEFAULTS, receive_pods=ready)) == [ep(0), ep(1), ep(2)]


def test_hashmod_ring_below_the_replication_factor_keeps_the_wanted_replicas(tc):
    """Replication factor 3 over 3 receivers, one of them away (deleted, restarting, rolling): a hashmod
    ring of the 2 ready ones would refuse every write ("insufficient nodes" for the third copy, as Thanos'
    GetN), while the ring of all 3 still puts 2 of every series' 3 copies on receivers that are up, the
    write quorum. The ring shrinks to the ready pods only while they are at least the replication factor."""
    t = with_receiver(tc, replicas=3, replicationFactor=3)
    two = [pod("thanos-receive-demo-0", True), pod("thanos-receive-demo-1", True),
           pod("thanos-receive-demo-2", True, deleting=True)]
    objs = render.render_thanos_cluster(t, [], DEFAULTS, receive_pods=two)
    assert ring_of(objs) == [ep(0), ep(1), ep(2)]
    configs = parse_hashrings(_by(objs, "ConfigMap", "thanos-receive-demo-hashring")["data"]["hashrings.json"])
    hashes = np.arange(1000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    _, where = new_multi_hashring(configs, "hashmod", 3).route("default-tenant", hashes, 3)
    up = np.isin(where, [0, 1]).sum(axis=1)
    assert (up >= 3 // 2 + 1).all(), up.min()
    # what a ring of the ready ones alone does: no third copy for any series
    short = parse_hashrings(render.hashrings_json([ep(0), ep(1)]))
    with pytest.raises(InsufficientNodesError):
        new_multi_hashring(short, "hashmod", 3).route("default-tenant", hashes, 3)
    # enough ready receivers for every copy: the ring is the ready ones
    t2 = with_receiver(tc, replicas=3, replicationFactor=2)
    assert ring_of(render.render_thanos_cluster(t2, [], DEFAULTS, receive_pods=two)) == [ep(0), ep(1)]
    assert ring_of(render.render_thanos_cluster(t2, [], DEFAULTS, receive_pods=two[:1])) == [ep(0), ep(1), ep(2)]


# ---------------------------------------------------------------------------------------------- objects

def test_receiver_objects(tc, eu1, us1):
    t = with_receiver(tc, externalLabels={"region": "eu"}, replicationFactor=3)
    t["spec"]["grpcTLS"] = {"secretName": "tls", "serverName": "thanos-grpc.monitoring.svc"}
    objs = render.render_thanos_cluster(t, [us1, remote_writing(eu1)], DEFAULTS, ca_sha256="ab" * 32)
    sts = _by(objs, "StatefulSet", "thanos-receive-demo")
    assert sts["spec"]["serviceName"] == "thanos-receive-demo" and sts["spec"]["replicas"] == 3
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "20Gi"
    c = _container(sts, "thanos-receive")
    args = c["args"]
    for a in ('--label=receive_replica="$(POD_NAME)"', '--label=region="eu"', "--tsdb.path=/var/thanos/receive",
              "--receive.replication-factor=3", "--receive.hashrings-file=/etc/thanos/hashring/hashrings.json",
              "--objstore.config-file=/etc/thanos/objstore/objstore.yml", "--tsdb.retention=6h",
              "--remote-write.address=0.0.0.0:19291", "--grpc-server-tls-client-ca=/etc/thanos/grpc-tls/ca.crt",
              "--remote-write.client-tls-secure", "--remote-write.client-server-name=thanos-grpc.monitoring.svc"):
        assert a in args, a
    assert c["readinessProbe"]["httpGet"]["path"] == "/-/ready" and c["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": 10901, "http": 10902, "remote-write": 19291}
    assert sts["spec"]["template"]["metadata"]["annotations"] == {render.ANNOTATION_GRPC_TLS_CA: "ab" * 32}
    headless = _by(objs, "Service", "thanos-receive-demo")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    write = _by(objs, "Service", "thanos-receive-demo-write")
    assert {p["name"]: p["port"] for p in write["spec"]["ports"]} == {"remote-write": 19291, "grpc": 10901}
    assert _by(objs, "PodDisruptionBudget", "thanos-receive-demo")["spec"]["maxUnavailable"] == 1
    for o in objs:
        if o["metadata"]["name"].startswith("thanos-receive-demo"):
            assert o["metadata"]["ownerReferences"][0]["kind"] == "ThanosCluster"
    # queriers: the receivers by DNS SRV, no sidecar of the remote-writing member; dedup on both replica labels
    sd = yaml.safe_load(_by(objs, "ConfigMap", "thanos-query-demo-endpoints")["data"]["endpoints.yaml"])
    assert [e["address"] for e in sd["endpoints"]] == [
        "dnssrv+_grpc._tcp.prometheus-us1.monitoring.svc", "dnssrv+_grpc._tcp.thanos-store-demo.monitoring.svc",
        "dnssrv+_grpc._tcp.thanos-receive-demo.monitoring.svc"]
    q = _container(_by(objs, "Deployment", "thanos-query-demo"), "thanos-query")["args"]
    assert "--query.replica-label=receive_replica" in q and "--query.replica-label=replica" in q
    comp = _container(_by(objs, "StatefulSet", "thanos-compact-demo"), "thanos-compact")["args"]
    assert "--deduplication.replica-label=receive_replica" in comp
    # one replica: no PDB; scaled to zero: no querier endpoint
    assert not [o for o in render.render_thanos_cluster(with_receiver(tc, replicas=1), [], DEFAULTS)
                if o["kind"] == "PodDisruptionBudget" and "receive" in o["metadata"]["name"]]
    sd0 = _by(render.render_thanos_cluster(with_receiver(tc, replicas=0), [], DEFAULTS), "ConfigMap",
              "thanos-query-demo-endpoints")["data"]["endpoints.yaml"]
    assert "thanos-receive" not in sd0


def test_remote_writing_prometheusha_has_no_sidecar(eu1, tc):
    t = with_receiver(tc)
    objs = render.render_prometheus_ha(remote_writing(eu1), t, DEFAULTS)
    sts = _by(objs, "StatefulSet")
    pod_spec = sts["spec"]["template"]["spec"]
    assert [c["name"] for c in pod_spec["containers"]] == ["prometheus"]
    assert [c["name"] for c in pod_spec["initContainers"]] == ["init-config"]   # $(POD_NAME) still expanded
    assert not [v for v in pod_spec["volumes"] if v["name"] in ("objstore", "grpc-tls")]
    cfg = yaml.safe_load(_by(objs, "ConfigMap")["data"]["prometheus.yaml.tmpl"])
    assert cfg["remote_write"] == [{"name": "thanos-receive-demo",
                                    "url": "http://thanos-receive-demo-write.monitoring.svc:19291/api/v1/receive",
                                    "headers": {"THANOS-TENANT": "team-eu"}}]
    assert cfg["global"]["external_labels"] == {"cluster": "eu1", "replica": "$(POD_NAME)"}
    assert [p["name"] for p in _by(objs, "Service")["spec"]["ports"]] == ["web"]
    # a new template rolls the pods (no reloader without a sidecar)
    ann = sts["spec"]["template"]["metadata"]["annotations"][render.ANNOTATION_CONFIG]
    other = copy.deepcopy(remote_writing(eu1))
    other["spec"]["scrapeInterval"] = "30s"
    assert _by(render.render_prometheus_ha(other, t, DEFAULTS), "StatefulSet")["spec"]["template"]["metadata"][
        "annotations"][render.ANNOTATION_CONFIG] != ann
    no_tenant = yaml.safe_load(_by(render.render_prometheus_ha(remote_writing(eu1, None), t, DEFAULTS), "ConfigMap")
                               ["data"]["prometheus.yaml.tmpl"])
    assert "headers" not in no_tenant["remote_write"][0]


def test_remote_write_refusals(eu1, tc):
    from pythanos_operator.handlers import remote_write_refusal

    rw = remote_writing(eu1)
    assert remote_write_refusal(eu1, tc) is None
    assert remote_write_refusal(rw, None).reason == st.THANOS_CLUSTER_NOT_FOUND
    c = remote_write_refusal(rw, tc)
    assert c.reason == st.RECEIVER_NOT_ENABLED and "spec.receiver.enabled" in c.message
    assert remote_write_refusal(rw, with_receiver(tc)) is None


def test_render_is_the_same_on_server_defaulted_input_with_receivers(tc, eu1, us1):
    t, rw = with_receiver(tc), remote_writing(eu1)
    assert render.render_thanos_cluster(_defaulted(t), [_defaulted(rw), _defaulted(us1)], DEFAULTS, receive_pods=PODS) \
        == render.render_thanos_cluster(t, [rw, us1], DEFAULTS, receive_pods=PODS)
    assert render.render_prometheus_ha(_defaulted(rw), _defaulted(t), DEFAULTS) == \
        render.render_prometheus_ha(rw, t, DEFAULTS)
    minimal = copy.deepcopy(tc)
    minimal["spec"]["receiver"] = {"enabled": True}
    assert render.render_thanos_cluster(_defaulted(minimal), [], DEFAULTS) == \
        render.render_thanos_cluster(minimal, [], DEFAULTS)


# ---------------------------------------------------------------------------------------------- status math

def test_hashring_condition():
    assert st.hashring_condition(3, 2, 3) == st.Cond("True", st.HASHRING_READY, "3/3 receivers in the hashring")
    assert st.hashring_condition(3, 2, 0).reason == st.HASHRING_EMPTY
    c = st.hashring_condition(3, 3, 1)
    assert (c.status, c.reason) == ("False", st.HASHRING_BELOW_REPLICATION_FACTOR) and "quorum 2" in c.message
    assert "writes fail" not in st.hashring_condition(3, 3, 2).message
    assert st.hashring_condition(0, 1, 0) == st.Cond("True", st.SCALED_TO_ZERO,
                                                      "receivers scaled to zero: no remote write is accepted")
    c = st.hashring_condition(1, 3, 1)
    assert c.reason == st.REPLICATION_FACTOR_TOO_HIGH and "spec.receiver.replicationFactor 3" in c.message
    ok, avail_no = st.Cond("True", st.RECONCILE_SUCCEEDED), st.Cond("False", st.NO_POD_READY, "0/3")
    # a replication factor no receiver set can hold comes before availability; an empty ring after it
    assert st.ready_from(ok, avail_no, c).reason == st.REPLICATION_FACTOR_TOO_HIGH
    assert st.ready_from(ok, avail_no, st.hashring_condition(3, 2, 0)).reason == st.NO_POD_READY
    assert st.ready_from(ok, st.Cond("True", st.ALL_PODS_READY), st.hashring_condition(3, 2, 0)).reason == \
        st.HASHRING_EMPTY
    # the Hashring condition goes away with the receivers
    first = st.merge_conditions([], 1, {st.READY: ok, st.RECONCILED: ok, st.AVAILABLE: ok,
                                        st.HASHRING: st.hashring_condition(3, 2, 0)}, "T1")
    assert [x["type"] for x in first] == ["Ready", "Reconciled", "Available", "Hashring"]
    assert [x["type"] for x in st.merge_conditions(first, 2, {st.READY: ok}, "T2")] == \
        ["Ready", "Reconciled", "Available"]


# ---------------------------------------------------------------------------------------------- real binaries

def _receive_container(tc, **over) -> dict:
    t = with_receiver(tc, externalLabels={"region": "eu-1"}, hashringsAlgorithm="ketama", **over)
    t["spec"]["grpcTLS"] = {"secretName": "tls", "serverName": "thanos-grpc.monitoring.svc"}
    t["spec"]["receiver"]["extraArgs"] = ["--receive.forward.async-workers=10"]
    objs = render.render_thanos_cluster(t, [], DEFAULTS, ca_sha256="00" * 32, receive_pods=PODS)
    return _container(_by(objs, "StatefulSet", "thanos-receive-demo"), "thanos-receive")


def test_rendered_receive_flags_accepted_by_real_thanos(tc, thanos_bin):
    """Every flag rendered for the receivers is one real Thanos v0.42 ``receive`` accepts (as for the other
    components: kingpin parses the whole command line before printing --help)."""
    args = _receive_container(tc)["args"]
    r = subprocess.run([thanos_bin, *args, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"thanos rejects {args}:\n{r.stderr[-2000:]}"
    bad = subprocess.run([thanos_bin, *args, "--receive.no-such-flag", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0   # the check is real: an unknown flag fails


def test_rendered_receive_flags_parse_with_pythanos(tc, tmp_path):
    """The component image runs ``pythanos receive``: the rendered flags parse with our CLI and build the
    receiver's config (the pod's mounts replaced by local files)."""
    from pythanos.cli import build_parser

    c = _receive_container(tc, retention="2d")
    args = [a.replace("$(POD_NAME)", "thanos-receive-demo-0") for a in c["args"]]
    ns = build_parser().parse_args(args)
    assert ns.component == "receive" and ns.replication_factor == 2 and ns.hashrings_algorithm == "ketama"
    assert ns.local_endpoint == ep(0)
    ring = _by(render.render_thanos_cluster(with_receiver(tc), [], DEFAULTS, receive_pods=PODS), "ConfigMap",
               "thanos-receive-demo-hashring")["data"]["hashrings.json"]
    (tmp_path / "hashrings.json").write_text(ring)
    (tmp_path / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path / 'bucket'}\n")
    from tlsfiles import make_pki

    pki = make_pki(tmp_path / "tls", "thanos-grpc.monitoring.svc")
    assert ns.grpc_server_tls_cert == "/etc/thanos/grpc-tls/tls.crt"
    # the pod's mounts replaced by local files; the config is built in a process of its own (the
    # gRPC TLS flags put grpcio's TLS policy in force, once per process, before grpc loads)
    local = {"--receive.hashrings-file": tmp_path / "hashrings.json", "--objstore.config-file": tmp_path / "objstore.yml",
             "--tsdb.path": tmp_path / "data", "--grpc-server-tls-cert": pki.dir / "tls.crt",
             "--grpc-server-tls-key": pki.dir / "tls.key", "--grpc-server-tls-client-ca": pki.dir / "ca.crt",
             "--remote-write.client-tls-cert": pki.dir / "tls.crt", "--remote-write.client-tls-key": pki.dir / "tls.key",
             "--remote-write.client-tls-ca": pki.dir / "ca.crt"}
    args = [f"{a.split('=', 1)[0]}={local[a.split('=', 1)[0]]}" if a.split("=", 1)[0] in local else a for a in args]
    code = ("import json, sys\n"
            "from pythanos.cli import build_parser\n"
            "from pythanos.receive.flags import config_from_args\n"
            "cfg = config_from_args(build_parser('receive').parse_args(json.loads(sys.argv[1])))\n"
            "print(json.dumps({'labels': dict(cfg.labels), 'retention': cfg.retention,\n"
            "                  'local_endpoint': cfg.local_endpoint, 'tenant_label': cfg.tenant_label,\n"
            "                  'tls': cfg.grpc_tls is not None, 'peer_tls': cfg.rw_client_tls.enabled,\n"
            "                  'peer_server_name': cfg.rw_client_tls.server_name}))\n")
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    cfg = json.loads(run.stdout)
    assert cfg["labels"]["receive_replica"] == "thanos-receive-demo-0" and cfg["labels"]["region"] == "eu-1"
    assert cfg["retention"] == 2 * 86400 and cfg["tls"]
    # peers are dialled over TLS, as the querier dials them (the receiver used to ignore these flags)
    assert cfg["peer_tls"] and cfg["peer_server_name"] == "thanos-grpc.monitoring.svc"
    assert cfg["local_endpoint"] == ep(0) and cfg["tenant_label"] == "tenant_id"


def test_remote_writing_prometheus_config_is_valid(eu1, tc, prometheus3_bin, promtool_bin, tmp_path):
    for pha in (remote_writing(eu1), remote_writing(eu1, None)):
        objs = render.render_prometheus_ha(pha, with_receiver(tc), DEFAULTS)
        text = _by(objs, "ConfigMap")["data"]["prometheus.yaml.tmpl"].replace("$(POD_NAME)", "prometheus-eu1-0")
        cfg = tmp_path / "prometheus.yaml"
        cfg.write_text(text)
        r = subprocess.run([promtool_bin, "check", "config", str(cfg)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        args = _container(_by(objs, "StatefulSet"), "prometheus")["args"]
        r = subprocess.run([prometheus3_bin, *args, "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-2000:]


# ---------------------------------------------------------------------------------------------- real API server

import test_operator as _operator_tests  # noqa: E402
from test_crds import MINIMAL_TC, pha_yaml, rejected, tc_yaml  # noqa: E402
from test_operator import (EXAMPLES, apply_examples, args_of, cond, events_for, kget,  # noqa: E402
                           wait_cond, wait_for)

# the running operator (under the install's RBAC) of test_operator, as fixtures of this module
installed, operator_kubeconfig = _operator_tests.installed, _operator_tests.operator_kubeconfig
operator, op_log = _operator_tests.operator, _operator_tests.op_log


def receiver_cluster(**over) -> str:
    t = yaml.safe_load((EXAMPLES / "thanoscluster.yaml").read_text())
    t["spec"]["receiver"] = {"enabled": True, "replicas": 3, "replicationFactor": 2, **over}
    return yaml.safe_dump(t)


def make_pod(kubectl, ns: str, sts: dict, i: int, node: str | None = None) -> None:
    """A Pod as the StatefulSet controller would create it (its template's labels, its name); ``node``
    binds it, so that a delete is graceful and leaves it terminating (no kubelet finishes it)."""
    spec: dict = {"containers": [{"name": "thanos-receive", "image": "pythanos:test"}]}
    if node:
        spec["nodeName"] = node
    p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"thanos-receive-demo-{i}",
                                                         "labels": sts["spec"]["template"]["metadata"]["labels"]},
         "spec": spec}
    kubectl("apply", "-f", "-", input=json.dumps(p), namespace=ns)


def set_ready(kubectl, ns: str, i: int, ready: bool) -> None:
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    kubectl("patch", "pod", f"thanos-receive-demo-{i}", "--subresource=status", "--type=merge", "-p",
            json.dumps({"status": status}), namespace=ns)


def ring(kubectl, ns: str) -> list[str] | None:
    cm = kget(kubectl, "configmap", "thanos-receive-demo-hashring", ns)
    if cm is None:
        return None
    rings = parse_hashrings(cm["data"]["hashrings.json"], source="ConfigMap thanos-receive-demo-hashring")
    if len(rings) != 1:
        return None  # not the operator's ring (a hand edit the test made, about to be repaired)
    [h] = rings
    return [e.address for e in h.endpoints]


def wait_ring(kubectl, ns: str, ordinals: list[int]) -> None:
    want = [ep(i, ns) for i in ordinals]
    wait_for(lambda: ring(kubectl, ns) == want, what=f"hashring {ordinals} (now {ring(kubectl, ns)})")


def warning(kubectl, ns: str, name: str, reason: str) -> list[dict]:
    return wait_for(lambda: [e for e in events_for(kubectl, ns, name) if e["reason"] == reason
                             and e["type"] == "Warning"], what=f"{reason} event on {name}")


def test_receivers_rendered_and_hashring_follows_pod_readiness(kubectl, namespace, op_log):
    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml")
    kubectl("apply", "--server-side", "-f", "-", input=receiver_cluster(), namespace=ns)
    tc = wait_for(lambda: kget(kubectl, "thanoscluster", "demo", ns), what="tc")
    sts = wait_for(lambda: kget(kubectl, "statefulset", "thanos-receive-demo", ns), what="receiver sts")
    owned = {"apiVersion": "pythanos.io/v1alpha1", "kind": "ThanosCluster", "name": "demo",
             "uid": tc["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    for kind, name in (("statefulset", "thanos-receive-demo"), ("service", "thanos-receive-demo"),
                       ("service", "thanos-receive-demo-write"), ("configmap", "thanos-receive-demo-hashring"),
                       ("pdb", "thanos-receive-demo")):
        o = wait_for(lambda: kget(kubectl, kind, name, ns), what=f"{kind} {name}")
        assert o["metadata"]["ownerReferences"] == [owned], (kind, name)
    args = args_of(sts, "thanos-receive")
    assert args[0] == "receive" and "--receive.replication-factor=2" in args
    assert f"--receive.local-endpoint=$(POD_NAME).thanos-receive-demo.{ns}.svc.cluster.local:10901" in args
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    sd = yaml.safe_load(kget(kubectl, "configmap", "thanos-query-demo-endpoints", ns)["data"]["endpoints.yaml"])
    assert {"address": f"dnssrv+_grpc._tcp.thanos-receive-demo.{ns}.svc"} in sd["endpoints"]

    # no pod yet: an empty ring, reported
    assert ring(kubectl, ns) == []
    t = wait_cond(kubectl, "thanoscluster", "demo", ns, "Hashring", "False", "HashringEmpty")
    assert t["status"]["hashringEndpoints"] == 0
    warning(kubectl, ns, "demo", "HashringEmpty")

    for i in range(3):
        make_pod(kubectl, ns, sts, i, node="node-a" if i == 1 else None)
    set_ready(kubectl, ns, 2, True)
    set_ready(kubectl, ns, 0, True)
    wait_ring(kubectl, ns, [0, 2])
    t = wait_cond(kubectl, "thanoscluster", "demo", ns, "Hashring", "True", "HashringReady")
    assert t["status"]["hashringEndpoints"] == 2 and "2/3" in cond(t, "Hashring")["message"]
    set_ready(kubectl, ns, 1, True)
    wait_ring(kubectl, ns, [0, 1, 2])
    want = f'pythanos_operator_hashring_endpoints{{name="demo",namespace="{ns}"}} 3.0'
    wait_for(lambda: want in op_log.get(op_log.metrics_port, "/metrics")[1], what=want)
    changes = [ln for ln in op_log.get(op_log.metrics_port, "/metrics")[1].splitlines()
               if ln.startswith("pythanos_operator_hashring_changes_total{") and f'namespace="{ns}"' in ln]
    assert changes and float(changes[0].split()[-1]) >= 1, changes   # readiness changes may coalesce
    set_ready(kubectl, ns, 2, False)
    wait_ring(kubectl, ns, [0, 1])
    set_ready(kubectl, ns, 2, True)
    wait_ring(kubectl, ns, [0, 1, 2])
    # a bound pod deleted gracefully stays, terminating: it leaves the ring at once
    kubectl("delete", "pod", "thanos-receive-demo-1", "--wait=false", namespace=ns)
    assert kget(kubectl, "pod", "thanos-receive-demo-1", ns)["metadata"].get("deletionTimestamp")
    wait_ring(kubectl, ns, [0, 2])
    # fewer ready than copies of each series: every wanted replica stays listed (a hashmod ring shorter
    # than the replication factor would refuse every write)
    set_ready(kubectl, ns, 2, False)
    wait_ring(kubectl, ns, [0, 1, 2])
    t = wait_cond(kubectl, "thanoscluster", "demo", ns, "Hashring", "False", "HashringBelowReplicationFactor")
    assert "1/3 receivers ready, fewer than the replication factor 2" in cond(t, "Hashring")["message"]
    warning(kubectl, ns, "demo", "HashringBelowReplicationFactor")
    kubectl("delete", "pod", "thanos-receive-demo-0", namespace=ns)
    wait_ring(kubectl, ns, [])
    kubectl("delete", "pod", "thanos-receive-demo-1", "--grace-period=0", "--force", namespace=ns)

    # a hand-edited ring is drift: repaired from the pods
    set_ready(kubectl, ns, 2, True)
    wait_ring(kubectl, ns, [0, 1, 2])
    cm = kget(kubectl, "configmap", "thanos-receive-demo-hashring", ns)
    kubectl("patch", "configmap", "thanos-receive-demo-hashring", "--type=merge", "-p",
            json.dumps({"data": {"hashrings.json": "[]"}}), namespace=ns)
    wait_ring(kubectl, ns, [0, 1, 2])
    assert kget(kubectl, "configmap", "thanos-receive-demo-hashring", ns)["data"] == cm["data"]

    # fewer receivers than copies of each series: refused by nobody, reported on the cluster
    kubectl("patch", "thanoscluster", "demo", "--type=merge", "-p",
            json.dumps({"spec": {"receiver": {"replicas": 1}}}), namespace=ns)
    t = wait_cond(kubectl, "thanoscluster", "demo", ns, "Ready", "False", "ReplicationFactorTooHigh")
    assert "spec.receiver.replicationFactor 2 is larger than spec.receiver.replicas 1" in cond(t, "Ready")["message"]
    assert cond(t, "Reconciled")["status"] == "True"
    warning(kubectl, ns, "demo", "ReplicationFactorTooHigh")
    wait_ring(kubectl, ns, [])   # pod 2 is beyond the one replica wanted
    wait_for(lambda: kget(kubectl, "statefulset", "thanos-receive-demo", ns)["spec"]["replicas"] == 1,
             what="receivers scaled to 1")
    wait_for(lambda: kget(kubectl, "pdb", "thanos-receive-demo", ns) is None, what="receiver pdb pruned")

    # receivers off: their objects pruned, the condition gone
    kubectl("patch", "thanoscluster", "demo", "--type=merge", "-p",
            json.dumps({"spec": {"receiver": {"enabled": False}}}), namespace=ns)
    for kind, name in (("statefulset", "thanos-receive-demo"), ("configmap", "thanos-receive-demo-hashring"),
                       ("service", "thanos-receive-demo"), ("service", "thanos-receive-demo-write")):
        wait_for(lambda: kget(kubectl, kind, name, ns) is None, what=f"{kind} {name} pruned")
    t = wait_for(lambda: (lambda o: o if not cond(o, "Hashring") else None)(kget(kubectl, "thanoscluster", "demo", ns)),
                 what="Hashring condition removed")
    assert "hashringEndpoints" not in t["status"]


def test_prometheusha_remote_writes_to_the_receivers(kubectl, namespace, op_log):
    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml", "thanoscluster.yaml")
    pha = yaml.safe_load((EXAMPLES / "prometheusha-eu1.yaml").read_text())
    pha["spec"]["remoteWrite"] = {"tenant": "team-eu"}
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(pha), namespace=ns)
    o = wait_cond(kubectl, "prometheusha", "eu1", ns, "Ready", "False", "ReceiverNotEnabled")
    assert "ThanosCluster demo runs no receivers" in cond(o, "Reconciled")["message"]
    warning(kubectl, ns, "eu1", "ReceiverNotEnabled")
    assert kget(kubectl, "statefulset", "prometheus-eu1", ns) is None

    # the cluster gets receivers: its handler re-renders the member
    kubectl("apply", "--server-side", "-f", "-", input=receiver_cluster(), namespace=ns)
    wait_cond(kubectl, "prometheusha", "eu1", ns, "Reconciled", "True")
    sts = wait_for(lambda: kget(kubectl, "statefulset", "prometheus-eu1", ns), what="prometheus sts")
    assert [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]] == ["prometheus"]
    cfg = yaml.safe_load(kget(kubectl, "configmap", "prometheus-eu1-config", ns)["data"]["prometheus.yaml.tmpl"])
    assert cfg["remote_write"] == [{"name": "thanos-receive-demo",
                                    "url": f"http://thanos-receive-demo-write.{ns}.svc:19291/api/v1/receive",
                                    "headers": {"THANOS-TENANT": "team-eu"}}]
    assert cfg["global"]["external_labels"] == {"cluster": "eu1", "replica": "$(POD_NAME)"}

    def sd():
        d = yaml.safe_load(kget(kubectl, "configmap", "thanos-query-demo-endpoints", ns)["data"]["endpoints.yaml"])
        return [e["address"] for e in d["endpoints"]]
    wait_for(lambda: f"dnssrv+_grpc._tcp.thanos-receive-demo.{ns}.svc" in sd(), what="receivers in the querier SD")
    assert not any("prometheus-eu1" in a for a in sd())
    wait_for(lambda: (kget(kubectl, "thanoscluster", "demo", ns).get("status") or {}).get("replicaLabels")
             == ["receive_replica", "replica"], what="replica labels of members and receivers")
    assert kget(kubectl, "thanoscluster", "demo", ns)["status"]["members"] == 1


def test_receiver_fields_are_validated_by_the_api_server(kubectl, pythanos_crds, namespace):
    ns = namespace
    for rf in (0, 6):
        err = rejected(kubectl, tc_yaml("rf", MINIMAL_TC + f"receiver: {{enabled: true, replicationFactor: {rf}}}\n"), ns)
        assert "spec.receiver.replicationFactor" in err, err
    err = rejected(kubectl, tc_yaml("rf", MINIMAL_TC + "receiver: {replicationFactor: two}\n"), ns)
    assert "spec.receiver.replicationFactor" in err, err
    err = rejected(kubectl, tc_yaml("alg", MINIMAL_TC + "receiver: {hashringsAlgorithm: ring}\n"), ns)
    assert "spec.receiver.hashringsAlgorithm" in err, err
    err = rejected(kubectl, tc_yaml("lbl", MINIMAL_TC + "receiver: {externalLabels: {receive_replica: x}}\n"), ns)
    assert "spec.receiver.externalLabels" in err and "must not contain the replica label receive_replica" in err, err
    err = rejected(kubectl, tc_yaml("key", MINIMAL_TC + "receiver: {externalLabels: {__x: 'v'}}\n"), ns)
    assert "Prometheus label names" in err, err
    kubectl("apply", "-f", "-", namespace=ns, input=tc_yaml("ok", MINIMAL_TC + "receiver: {enabled: true}\n"))
    assert kubectl.json("get", "tc", "ok", namespace=ns)["spec"]["receiver"] == {
        "enabled": True, "replicas": 1, "replicationFactor": 1, "tenantLabelName": "tenant_id",
        "replicaExternalLabelName": "receive_replica", "hashringsAlgorithm": "hashmod"}

    err = rejected(kubectl, pha_yaml("rw", """
        externalLabels: {cluster: a}
        remoteWrite: {tenant: t}
        sidecar: {objectStorage: {secretKeyRef: {name: b}}}
    """), ns)
    assert "spec.remoteWrite" in err and "remoteWrite runs no sidecar" in err, err
    err = rejected(kubectl, pha_yaml("rw", "externalLabels: {cluster: a}\nremoteWrite: {tenant: a/b}\n"), ns)
    assert "spec.remoteWrite.tenant" in err, err
    kubectl("apply", "-f", "-", namespace=ns, input=pha_yaml("rw", "externalLabels: {cluster: a}\nremoteWrite: {}\n"))
    assert kubectl.json("get", "pha", "rw", namespace=ns)["spec"]["remoteWrite"] == {}


# ---------------------------------------------------------------------------------------------- rendered receivers run

def _configmap_volume(d: Path, key: str, text: str) -> Path:
    """``key`` alone in a kubelet-style ConfigMap volume at ``d``; its path."""
    return write_configmap_volume(d, {key: text}) / key


POD0 = "thanos-receive-demo-0"


def ring_for(t: dict, pods: list[dict]) -> str:
    return _by(render.render_thanos_cluster(t, [], DEFAULTS, receive_pods=pods), "ConfigMap",
               "thanos-receive-demo-hashring")["data"]["hashrings.json"]


def start_rendered_receiver(binary: str, impl: str, t: dict, work: Path, ring_pods: list[dict]) -> Process:
    """The receiver container's command line as rendered for ``t``, run here as pod 0: the listen addresses and
    the mounted paths replaced by local ones, ``$(POD_NAME)`` expanded as the kubelet does, the hashring file
    laid out as the ConfigMap volume (``work/hashring``)."""
    sts = _by(render.render_thanos_cluster(t, [], DEFAULTS), "StatefulSet", "thanos-receive-demo")
    rendered = _container(sts, "thanos-receive")["args"]
    ring_file = _configmap_volume(work / "hashring", "hashrings.json", ring_for(t, ring_pods))
    (work / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {work / 'bucket'}\n")

    def launch(ports: list[int]) -> Process:
        rw, grpc_port, http_port, capn = ports
        local = {"--grpc-address": f"127.0.0.1:{grpc_port}", "--http-address": f"127.0.0.1:{http_port}",
                 "--remote-write.address": f"127.0.0.1:{rw}", "--tsdb.path": str(work / "data"),
                 "--receive.hashrings-file": str(ring_file), "--objstore.config-file": str(work / "objstore.yml")}
        args = []
        for a in rendered:
            k = a.split("=", 1)[0]
            args.append((f"{k}={local[k]}" if k in local else a).replace("$(POD_NAME)", POD0))
        assert sum(a.split("=", 1)[0] in local for a in args) == len(local), args
        if impl == "thanos":
            args.append(f"--receive.capnproto-address=127.0.0.1:{capn}")
        p = REGISTRY.start(f"{impl}-receive", [binary, *args], work)
        p.url, p.port = f"http://127.0.0.1:{http_port}", http_port
        p.extra.update(rw=f"http://127.0.0.1:{rw}/api/v1/receive", grpc=f"127.0.0.1:{grpc_port}")
        return p

    return start_on_free_ports(4, launch, lambda p: p.wait_http_ready("/-/ready", 120))


@pytest.mark.parametrize("impl", ["pythanos", "thanos"])
def test_rendered_receiver_runs_on_the_operators_hashring(impl, request, tc, tmp_path):
    """The rendered command line run by ``pythanos receive`` and by a real ``thanos receive`` v0.42.4, on the
    hashring file the operator writes, laid out as a ConfigMap volume. With no receiver ready yet the ring has
    no endpoints: the receiver must still become ready (the operator adds only ready pods, so a receiver that
    waited to be in the ring never would), and it refuses writes. Then the ring the operator writes once its pod
    is ready: picked up from the swapped volume, writes land, with the receiver's external labels."""
    from test_receive import post, stored, v1

    binary = request.getfixturevalue("pythanos_bin" if impl == "pythanos" else "thanos_bin")
    t = with_receiver(tc, replicas=1, replicationFactor=1)
    p = start_rendered_receiver(binary, impl, t, tmp_path, [])
    try:
        now = int(time.time() * 1000)
        body = v1([([("__name__", "rendered_up"), ("job", "x")], [(now, 1.0)])])
        code, text, _ = post(p.extra["rw"], body, tenant="team-eu")
        assert code != 200, "a receiver in no hashring accepted a write"
        _configmap_volume(tmp_path / "hashring", "hashrings.json", ring_for(t, [pod(POD0, True)]))

        def accepted():
            return post(p.extra["rw"], body, tenant="team-eu")[0] == 200
        wait_for(accepted, timeout=90, what=f"{impl} accepts writes once the ring lists its pod")
        got = wait_for(lambda: stored(p.extra["grpc"], (("__name__", "=", "rendered_up"),)), 60, "stored")
        [labels] = got
        assert dict(labels) == {"__name__": "rendered_up", "job": "x", "receive_replica": POD0,
                                "tenant_id": "team-eu"}, labels
    finally:
        p.stop()


def test_rendered_prometheus_remote_writes_into_the_rendered_receiver(eu1, tc, pythanos_bin, prometheus3_bin,
                                                                      tmp_path):
    """A remote-writing PrometheusHA's pod, run here: its init container's command (pythanos' reloader once,
    POD_NAME in the environment) expands the rendered config, a real Prometheus 3.9.1 runs with the rendered
    flags and sends to the rendered receiver (its Service address replaced by the local one). The series
    arrive under the tenant of the header with the PrometheusHA's external labels (replica = its pod name)
    and the receiver's replica label: what the cluster's queriers deduplicate on."""
    from test_receive import stored

    t = with_receiver(tc, replicas=1, replicationFactor=1)
    recv = start_rendered_receiver(pythanos_bin, "pythanos", t, tmp_path / "receiver", [pod(POD0, True)])
    prom = None
    try:
        objs = render.render_prometheus_ha(remote_writing(eu1), t, DEFAULTS)
        template = _by(objs, "ConfigMap")["data"]["prometheus.yaml.tmpl"]
        url = "http://thanos-receive-demo-write.monitoring.svc:19291/api/v1/receive"
        assert url in template
        work = tmp_path / "prometheus"
        (work / "config").mkdir(parents=True)
        (work / "config_out").mkdir()
        (work / "config" / "prometheus.yaml.tmpl").write_text(template.replace(url, recv.extra["rw"]))
        sts = _by(objs, "StatefulSet")
        init = sts["spec"]["template"]["spec"]["initContainers"][0]
        init_args = [a.replace(render.CONFIG_DIR, str(work / "config")).replace(render.CONFIG_OUT_DIR,
                                                                                  str(work / "config_out"))
                     for a in init["args"]]
        r = subprocess.run([pythanos_bin, *init_args], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "POD_NAME": "prometheus-eu1-0"})
        assert r.returncode == 0, r.stdout + r.stderr

        def launch(ports: list[int]) -> Process:
            local = {"--config.file": str(work / "config_out" / "prometheus.yaml"),
                     "--storage.tsdb.path": str(work / "data"), "--web.listen-address": f"127.0.0.1:{ports[0]}"}
            args = [f"{a.split('=', 1)[0]}={local[a.split('=', 1)[0]]}" if a.split("=", 1)[0] in local else a
                    for a in _container(sts, "prometheus")["args"]]
            p = REGISTRY.start("prometheus", [prometheus3_bin, *args], work)
            p.url, p.port = f"http://127.0.0.1:{ports[0]}", ports[0]
            return p

        prom = start_on_free_ports(1, launch, lambda p: p.wait_http_ready("/-/ready", 120))
        got = wait_for(lambda: stored(recv.extra["grpc"], (("__name__", "=", "up"),)), 120, "up remote-written")
        [labels] = got
        assert dict(labels) == {"__name__": "up", "job": "prometheus", "instance": "127.0.0.1:9090",
                                "cluster": "eu1", "replica": "prometheus-eu1-0", "tenant_id": "team-eu",
                                "receive_replica": POD0}, labels
    finally:
        if prom is not None:
            prom.stop()
        recv.stop()


def test_a_starting_operator_keeps_the_hashring(kubectl, namespace, operator_kubeconfig, tmp_path, op_log):
    """A (re)starting operator renders the ring from a complete view of the pods (kopf fills its indexes before
    any handler runs): its resume reconcile rewrites nothing, so receivers never see a ring emptied for a
    moment (a Thanos receiver flushes its head on every ring change)."""
    from test_operator import start_operator, stop_operator

    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml")
    kubectl("apply", "--server-side", "-f", "-", input=receiver_cluster(replicas=2, replicationFactor=1),
            namespace=ns)
    sts = wait_for(lambda: kget(kubectl, "statefulset", "thanos-receive-demo", ns), what="receiver sts")
    for i in range(2):
        make_pod(kubectl, ns, sts, i)
        set_ready(kubectl, ns, i, True)
    wait_ring(kubectl, ns, [0, 1])
    wait_cond(kubectl, "thanoscluster", "demo", ns, "Hashring", "True", "HashringReady")
    before = kget(kubectl, "configmap", "thanos-receive-demo-hashring", ns)["metadata"]["resourceVersion"]
    second = start_operator(operator_kubeconfig, tmp_path, "--standalone", f"--namespace={ns}", name="second")
    try:
        wait_for(lambda: f"ThanosCluster {ns}/demo: applied" in second.output(), 60, "the second operator's resume")
        assert kget(kubectl, "configmap", "thanos-receive-demo-hashring", ns)["metadata"]["resourceVersion"] == before
        assert ring(kubectl, ns) == [ep(0, ns), ep(1, ns)]
        # and it follows pods too
        set_ready(kubectl, ns, 0, False)
        wait_ring(kubectl, ns, [1])
        wait_for(lambda: f"receiver pod {ns}/thanos-receive-demo-0" in second.output(), 30, "second saw the pod")
    finally:
        stop_operator(second)


def test_receive_example_applies_and_renders(kubectl, namespace, op_log):
    """manifests/examples-receive (the tutorial plus receivers and a remote-writing PrometheusHA), applied
    as its README says, renders: receivers, rw1 without a sidecar, the queriers over sidecars, store gateway
    and receivers."""
    ns = namespace
    kubectl("apply", "--server-side", "-k", str(ROOT / "manifests" / "examples-receive"), namespace=ns)
    for name in ("eu1", "us1", "rw1"):
        wait_cond(kubectl, "prometheusha", name, ns, "Reconciled", "True")
    # the cluster's status follows its members' reconciles
    t = wait_for(lambda: (lambda o: o if (o.get("status") or {}).get("members") == 3 else None)(
        kget(kubectl, "thanoscluster", "demo", ns)), what="3 members")
    assert cond(t, "Reconciled")["status"] == "True"
    assert t["status"]["replicaLabels"] == ["receive_replica", "replica"]
    assert cond(t, "Hashring")["reason"] == "HashringEmpty"
    assert kget(kubectl, "statefulset", "thanos-receive-demo", ns)["spec"]["replicas"] == 3
    rw1 = kget(kubectl, "statefulset", "prometheus-rw1", ns)
    assert [c["name"] for c in rw1["spec"]["template"]["spec"]["containers"]] == ["prometheus"]
    sd = yaml.safe_load(kget(kubectl, "configmap", "thanos-query-demo-endpoints", ns)["data"]["endpoints.yaml"])
    assert [e["address"] for e in sd["endpoints"]] == [f"dnssrv+_grpc._tcp.{s}.{ns}.svc" for s in (
        "prometheus-eu1", "prometheus-us1", "thanos-store-demo", "thanos-receive-demo")]


def _deny_hashring_updates(ns: str) -> str:
    """A ValidatingAdmissionPolicy (and binding) refusing every write of the hashring ConfigMap in ``ns``."""
    name = f"deny-hashring-{ns}"
    return yaml.safe_dump_all([
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                          "operations": ["CREATE", "UPDATE"],
                                                          "resources": ["configmaps"]}]},
                  "validations": [{"expression": "object.metadata.name != 'thanos-receive-demo-hashring'",
                                   "message": "hashring writes blocked by the test"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name},
         "spec": {"policyName": name, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}}},
    ])


def test_a_failed_hashring_apply_is_retried_without_another_pod_event(kubectl, namespace, op_log):
    """kopf does not retry event handlers: a ring whose apply failed (here an admission policy refuses the
    ConfigMap write) is reported and re-applied by the operator's resync once writes go through again, with
    no further pod event."""
    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml")
    kubectl("apply", "--server-side", "-f", "-", input=receiver_cluster(replicas=2, replicationFactor=1), namespace=ns)
    sts = wait_for(lambda: kget(kubectl, "statefulset", "thanos-receive-demo", ns), what="receiver sts")
    for i in range(2):
        make_pod(kubectl, ns, sts, i)
    set_ready(kubectl, ns, 0, True)
    wait_ring(kubectl, ns, [0])
    policy = _deny_hashring_updates(ns)
    try:
        kubectl("apply", "-f", "-", input=policy)

        def refused() -> bool:   # the policy is in force (it takes a moment): a server-side dry run is refused
            r = kubectl("label", "configmap", "thanos-receive-demo-hashring", "probe=1", "--dry-run=server",
                        namespace=ns, check=False)
            return r.returncode != 0 and "hashring writes blocked by the test" in r.stderr
        wait_for(refused, what="the admission policy in force")
        set_ready(kubectl, ns, 1, True)
        t = wait_cond(kubectl, "thanoscluster", "demo", ns, "Reconciled", "False", "ReconcileFailed")
        assert "hashring writes blocked by the test" in cond(t, "Reconciled")["message"]
        assert ring(kubectl, ns) == [ep(0, ns)]
    finally:
        kubectl("delete", "-f", "-", "--ignore-not-found", input=policy)
    wait_ring(kubectl, ns, [0, 1])
    wait_cond(kubectl, "thanoscluster", "demo", ns, "Reconciled", "True")
    assert f"hashring of ThanosCluster {ns}/demo not applied yet; reconciling" in op_log.output()


def test_install_passes_the_cluster_domain(helm_bin, kubectl_bin):
    """PYTHANOS_CLUSTER_DOMAIN reaches the operator from both installs (chart value ``clusterDomain``)."""
    def env(text: str) -> dict:
        [dep] = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "Deployment"]
        return {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    chart = str(ROOT / "charts" / "pythanos-operator")
    helm = lambda *a: subprocess.run([helm_bin, "template", "x", chart, *a], capture_output=True, text=True,  # noqa: E731
                                     timeout=120, check=True).stdout
    assert env(helm())["PYTHANOS_CLUSTER_DOMAIN"] == "cluster.local"
    assert env(helm("--set", "clusterDomain=k8s.example"))["PYTHANOS_CLUSTER_DOMAIN"] == "k8s.example"
    kust = subprocess.run([kubectl_bin, "kustomize", str(ROOT / "manifests")], capture_output=True, text=True,
                          timeout=120, check=True).stdout
    assert env(kust)["PYTHANOS_CLUSTER_DOMAIN"] == "cluster.local"



def test_cluster_domain_from_the_environment(monkeypatch):
    from pythanos_operator.handlers import defaults_from_env

    monkeypatch.setenv("PYTHANOS_CLUSTER_DOMAIN", "k8s.example")
    assert defaults_from_env().cluster_domain == "k8s.example"
    monkeypatch.delenv("PYTHANOS_CLUSTER_DOMAIN")
    assert defaults_from_env().cluster_domain == "cluster.local"
