"""Server-side proofs of crds/: a real kube-apiserver installs, defaults, validates (CEL) and prints them."""
from __future__ import annotations

import json
import textwrap

import pytest

from kube import CRD_NAMES, KubectlError

GROUP, VERSION = "pythanos.io", "v1alpha1"


def pha_yaml(name: str, spec: str) -> str:
    return f"apiVersion: {GROUP}/{VERSION}\nkind: PrometheusHA\nmetadata:\n  name: {name}\nspec:\n" + \
        textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n"


def tc_yaml(name: str, spec: str) -> str:
    return f"apiVersion: {GROUP}/{VERSION}\nkind: ThanosCluster\nmetadata:\n  name: {name}\nspec:\n" + \
        textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n"


MINIMAL_TC = "objectStorage:\n  secretKeyRef:\n    name: thanos-objstore\n"


def rejected(kubectl, yaml_text: str, namespace: str) -> str:
    """Apply, expect the server to refuse; return kubectl's stderr."""
    r = kubectl("apply", "-f", "-", input=yaml_text, namespace=namespace, check=False)
    assert r.returncode != 0, f"the API server accepted:\n{yaml_text}\n{r.stdout}"
    assert "is invalid" in r.stderr, r.stderr
    return r.stderr


def test_crds_install_and_become_established(kubectl, pythanos_crds):
    for name in CRD_NAMES:
        crd = kubectl.json("get", "crd", name)
        conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conds.get("Established") == "True" and conds.get("NamesAccepted") == "True", conds
        v = crd["spec"]["versions"][0]
        assert (v["name"], v["served"], v["storage"]) == (VERSION, True, True)
        assert "status" in v["subresources"]
        assert "pythanos" in crd["spec"]["names"]["categories"]
    short = {kubectl.json("get", "crd", n)["spec"]["names"]["kind"]: kubectl.json("get", "crd", n)["spec"]["names"]["shortNames"]
             for n in CRD_NAMES}
    assert short == {"PrometheusHA": ["pha"], "ThanosCluster": ["tc"]}
    # Discovery knows the short names and the category.
    res = kubectl("api-resources", f"--api-group={GROUP}", "-o", "wide").stdout
    assert "pha" in res and "tc" in res and "pythanos" in res, res


def test_minimal_prometheusha_gets_schema_defaults(kubectl, pythanos_crds, namespace):
    kubectl("apply", "-f", "-", namespace=namespace,
            input=pha_yaml("eu1", "externalLabels:\n  cluster: eu1\n"))
    spec = kubectl.json("get", "prometheusha", "eu1", namespace=namespace)["spec"]
    assert spec == {
        "externalLabels": {"cluster": "eu1"},
        "replicas": 2,
        "version": "v3.9.1",
        "replicaExternalLabelName": "replica",
        "scrapeInterval": "15s",
        "evaluationInterval": "15s",
        "scrapeConfigs": [],
        "retention": "24h",
        "logLevel": "info",
        "sidecar": {"logLevel": "info"},
    }


def test_prometheusha_nested_defaults(kubectl, pythanos_crds, namespace):
    kubectl("apply", "-f", "-", namespace=namespace, input=pha_yaml("us1", """
        replicas: 3
        externalLabels: {cluster: us1, region: us}
        replicaExternalLabelName: prometheus_replica
        thanosClusterRef: {name: main}
        scrapeConfigs:
        - job_name: prometheus
          static_configs:
          - targets: ['127.0.0.1:9090']
        scrapeConfigFrom:
          configMapKeyRef: {name: extra-scrape}
        storage: {}
        resources: {requests: {cpu: 100m, memory: 1Gi}, limits: {memory: 2Gi}}
        sidecar:
          objectStorage:
            secretKeyRef: {name: objstore}
        """))
    spec = kubectl.json("get", "pha", "us1", namespace=namespace)["spec"]
    assert spec["replicas"] == 3
    assert spec["scrapeConfigs"] == [{"job_name": "prometheus", "static_configs": [{"targets": ["127.0.0.1:9090"]}]}]
    assert spec["scrapeConfigFrom"] == {"configMapKeyRef": {"name": "extra-scrape", "key": "scrape-configs.yaml"}}
    assert spec["storage"] == {"size": "10Gi"}
    assert spec["sidecar"] == {"logLevel": "info", "objectStorage": {"secretKeyRef": {"name": "objstore", "key": "objstore.yml"}}}
    assert spec["thanosClusterRef"] == {"name": "main"}
    assert spec["resources"] == {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}


def test_minimal_thanoscluster_gets_schema_defaults(kubectl, pythanos_crds, namespace):
    kubectl("apply", "-f", "-", namespace=namespace, input=tc_yaml("main", MINIMAL_TC))
    spec = kubectl.json("get", "thanoscluster", "main", namespace=namespace)["spec"]
    assert spec == {
        "logLevel": "info",
        "objectStorage": {"secretKeyRef": {"name": "thanos-objstore", "key": "objstore.yml"}},
        "querier": {"replicas": 1, "extraReplicaLabels": [], "extraEndpoints": []},
        "storeGateway": {"replicas": 1, "shards": 1, "timePartitions": []},
        "compactor": {
            "replicas": 1,
            "retention": {"raw": "0d", "fiveMinutes": "0d", "oneHour": "0d"},
            "downsampling": {"enabled": True},
            "deduplication": {"enabled": True, "func": "penalty", "extraReplicaLabels": []},
        },
        "ruler": {"enabled": False, "replicas": 1, "evaluationInterval": "1m", "alertmanagers": [],
                  "ruleConfigMaps": [], "replicaExternalLabelName": "rule_replica"},
        "receiver": {"enabled": False, "replicas": 1, "replicationFactor": 1, "tenantLabelName": "tenant_id",
                     "replicaExternalLabelName": "receive_replica", "hashringsAlgorithm": "hashmod"},
        "queryFrontend": {"enabled": False, "replicas": 1, "splitInterval": "24h", "maxRetriesPerRequest": 5,
                          "maxQueryParallelism": 14, "compressResponses": True,
                          "cache": {"type": "IN-MEMORY", "maxSize": "256MB"}},
    }


def test_thanoscluster_keeps_component_settings(kubectl, pythanos_crds, namespace):
    kubectl("apply", "-f", "-", namespace=namespace, input=tc_yaml("main", MINIMAL_TC + """\
querier:
  replicas: 2
  extraReplicaLabels: [rule_replica]
  extraEndpoints: ['dnssrv+_grpc._tcp.thanos-sidecar.other.svc']
  extraArgs: ['--query.auto-downsampling']
storeGateway:
  shards: 3
  ignoreDeletionMarksDelay: 24h
  timePartitions: [{maxTime: -2w}, {minTime: -2w}]
compactor:
  retention: {raw: 30d}
  downsampling: {enabled: false}
  deduplication: {func: '', extraReplicaLabels: [receive_replica]}
  storage: {size: 50Gi, storageClassName: fast}
ruler: {enabled: true}
"""))
    spec = kubectl.json("get", "tc", "main", namespace=namespace)["spec"]
    assert spec["querier"] == {"replicas": 2, "extraReplicaLabels": ["rule_replica"],
                               "extraEndpoints": ["dnssrv+_grpc._tcp.thanos-sidecar.other.svc"],
                               "extraArgs": ["--query.auto-downsampling"]}
    assert spec["storeGateway"] == {"replicas": 1, "shards": 3, "ignoreDeletionMarksDelay": "24h",
                                    "timePartitions": [{"maxTime": "-2w"}, {"minTime": "-2w"}]}
    assert spec["compactor"]["retention"] == {"raw": "30d", "fiveMinutes": "0d", "oneHour": "0d"}
    assert spec["compactor"]["downsampling"] == {"enabled": False}
    assert spec["compactor"]["deduplication"] == {"enabled": True, "func": "", "extraReplicaLabels": ["receive_replica"]}
    assert spec["compactor"]["storage"] == {"size": "50Gi", "storageClassName": "fast"}
    assert spec["ruler"]["enabled"] is True and spec["ruler"]["evaluationInterval"] == "1m"


def test_tutorial_layout_applies_in_one_go(kubectl, pythanos_crds, namespace):
    """The tutorial's shape: eu1 with one replica, us1 with two, one ThanosCluster selecting both."""
    docs = "---\n".join([
        tc_yaml("global", MINIMAL_TC + "prometheusHASelector:\n  matchLabels:\n    pythanos.io/cluster: global\n"),
        pha_yaml("eu1", "replicas: 1\nexternalLabels: {cluster: eu1}\nthanosClusterRef: {name: global}\n"),
        pha_yaml("us1", "replicas: 2\nexternalLabels: {cluster: us1}\nthanosClusterRef: {name: global}\n"),
    ])
    out = kubectl("apply", "-f", "-", input=docs, namespace=namespace).stdout
    assert "thanoscluster.pythanos.io/global created" in out and "prometheusha.pythanos.io/us1 created" in out, out
    items = kubectl.json("get", "pha", namespace=namespace)["items"]
    assert {i["metadata"]["name"]: i["spec"]["replicas"] for i in items} == {"eu1": 1, "us1": 2}


# --- CEL and schema rejections -----------------------------------------------------------------------

@pytest.mark.parametrize("label", ["replica", "prometheus_replica"])
def test_replica_label_as_external_label_is_rejected(kubectl, pythanos_crds, namespace, label):
    spec = f"externalLabels: {{cluster: eu1, {label}: '0'}}\n"
    if label != "replica":
        spec += f"replicaExternalLabelName: {label}\n"
    err = rejected(kubectl, pha_yaml("bad", spec), namespace)
    assert f"externalLabels must not contain the replica label {label}" in err, err
    assert "spec.externalLabels" in err and "Forbidden" in err, err


def test_empty_external_labels_are_rejected(kubectl, pythanos_crds, namespace):
    err = rejected(kubectl, pha_yaml("bad", "externalLabels: {}\n"), namespace)
    assert "externalLabels must not be empty" in err, err


def test_missing_external_labels_are_rejected(kubectl, pythanos_crds, namespace):
    err = rejected(kubectl, pha_yaml("bad", "replicas: 2\n"), namespace)
    assert "spec.externalLabels: Required value" in err, err


def test_external_label_keys_must_be_label_names(kubectl, pythanos_crds, namespace):
    err = rejected(kubectl, pha_yaml("bad", "externalLabels: {__name__: x}\n"), namespace)
    assert "externalLabels keys must be Prometheus label names" in err, err
    err = rejected(kubectl, pha_yaml("bad", "externalLabels: {cluster: eu1}\nreplicaExternalLabelName: 'my-replica'\n"),
                   namespace)
    assert "spec.replicaExternalLabelName" in err, err


def test_compactor_is_a_singleton(kubectl, pythanos_crds, namespace):
    err = rejected(kubectl, tc_yaml("bad", MINIMAL_TC + "compactor:\n  replicas: 2\n"), namespace)
    assert "spec.compactor.replicas: Invalid value: 2: spec.compactor.replicas in body should be less than or equal to 1" \
        in err, err
    kubectl("apply", "-f", "-", namespace=namespace, input=tc_yaml("paused", MINIMAL_TC + "compactor:\n  replicas: 0\n"))


def test_object_storage_is_immutable(kubectl, pythanos_crds, namespace):
    kubectl("apply", "-f", "-", namespace=namespace, input=tc_yaml("main", MINIMAL_TC))
    err = rejected(kubectl, tc_yaml("main", "objectStorage:\n  secretKeyRef:\n    name: another-bucket\n"), namespace)
    assert "objectStorage is immutable; create a new ThanosCluster" in err, err


def test_scrape_config_from_needs_exactly_one_ref(kubectl, pythanos_crds, namespace):
    both = "externalLabels: {cluster: eu1}\nscrapeConfigFrom:\n  configMapKeyRef: {name: a}\n  secretKeyRef: {name: b}\n"
    err = rejected(kubectl, pha_yaml("bad", both), namespace)
    assert "scrapeConfigFrom needs exactly one of configMapKeyRef and secretKeyRef" in err, err


def test_grpc_tls_gets_schema_defaults(kubectl, pythanos_crds, namespace):
    """``spec.grpcTLS`` (ThanosCluster) and ``spec.sidecar.grpcTLS`` (PrometheusHA): a Secret name is all it takes;
    the key names are those of a kubernetes.io/tls Secret (plus cert-manager's ca.crt), mutual TLS by default."""
    kubectl("apply", "-f", "-", namespace=namespace, input=tc_yaml("main", MINIMAL_TC + "grpcTLS: {secretName: grpc}\n"))
    assert kubectl.json("get", "tc", "main", namespace=namespace)["spec"]["grpcTLS"] == {
        "secretName": "grpc", "certKey": "tls.crt", "keyKey": "tls.key", "caKey": "ca.crt", "clientAuth": True}
    kubectl("apply", "-f", "-", namespace=namespace, input=tc_yaml("custom", MINIMAL_TC + """\
grpcTLS: {secretName: grpc, certKey: cert.pem, keyKey: key.pem, caKey: cert.pem, serverName: thanos.example.svc,
          clientAuth: false}
"""))
    assert kubectl.json("get", "tc", "custom", namespace=namespace)["spec"]["grpcTLS"] == {
        "secretName": "grpc", "certKey": "cert.pem", "keyKey": "key.pem", "caKey": "cert.pem",
        "serverName": "thanos.example.svc", "clientAuth": False}
    kubectl("apply", "-f", "-", namespace=namespace,
            input=pha_yaml("eu1", "externalLabels: {cluster: eu1}\nsidecar:\n  grpcTLS: {secretName: eu1-grpc}\n"))
    assert kubectl.json("get", "pha", "eu1", namespace=namespace)["spec"]["sidecar"] == {
        "logLevel": "info", "grpcTLS": {"secretName": "eu1-grpc", "certKey": "tls.crt", "keyKey": "tls.key",
                                        "caKey": "ca.crt", "clientAuth": True}}


def test_grpc_tls_is_validated(kubectl, pythanos_crds, namespace):
    err = rejected(kubectl, tc_yaml("bad", MINIMAL_TC + "grpcTLS: {certKey: tls.crt}\n"), namespace)
    assert "spec.grpcTLS.secretName: Required value" in err, err
    err = rejected(kubectl, tc_yaml("bad", MINIMAL_TC + "grpcTLS: {secretName: grpc, keyKey: tls.crt}\n"), namespace)
    assert "spec.grpcTLS.keyKey: Invalid value" in err and \
        "keyKey must differ from certKey and caKey (the private key is a file of its own)" in err, err
    err = rejected(kubectl, tc_yaml("bad", MINIMAL_TC + "grpcTLS: {secretName: grpc, caKey: tls.key}\n"), namespace)
    assert "keyKey must differ from certKey and caKey" in err, err
    err = rejected(kubectl, tc_yaml("bad", MINIMAL_TC + "grpcTLS: {secretName: grpc, certKey: 'a/b'}\n"), namespace)
    assert "spec.grpcTLS.certKey" in err, err
    err = rejected(kubectl, tc_yaml("bad", MINIMAL_TC + "grpcTLS: {secretName: Grpc_TLS}\n"), namespace)
    assert "spec.grpcTLS.secretName" in err, err
    err = rejected(kubectl, tc_yaml("bad", MINIMAL_TC + "grpcTLS: {secretName: grpc, serverName: 'https://x'}\n"),
                   namespace)
    assert "spec.grpcTLS.serverName" in err, err
    err = rejected(kubectl, pha_yaml("bad", "externalLabels: {cluster: eu1}\n"
                                            "sidecar:\n  grpcTLS: {secretName: s, keyKey: ca.crt}\n"), namespace)
    assert "spec.sidecar.grpcTLS.keyKey: Invalid value" in err and "keyKey must differ" in err, err
    # a sidecar only serves: the name queriers verify belongs to the ThanosCluster
    r = kubectl("apply", "-f", "-", namespace=namespace, check=False,
                input=pha_yaml("typo", "externalLabels: {cluster: eu1}\n"
                                       "sidecar:\n  grpcTLS: {secretName: s, serverName: x.svc}\n"))
    assert r.returncode != 0 and 'unknown field "spec.sidecar.grpcTLS.serverName"' in r.stderr, r.stderr


def test_out_of_range_and_unknown_fields_are_rejected(kubectl, pythanos_crds, namespace):
    err = rejected(kubectl, pha_yaml("bad", "externalLabels: {cluster: eu1}\nreplicas: 0\n"), namespace)
    assert "spec.replicas" in err and "greater than or equal to 1" in err, err
    err = rejected(kubectl, tc_yaml("bad", MINIMAL_TC + "compactor:\n  deduplication:\n    func: chain\n"), namespace)
    assert "spec.compactor.deduplication.func: Unsupported value" in err, err
    err = rejected(kubectl, pha_yaml("bad", "externalLabels: {cluster: eu1}\nretention: 2 days\n"), namespace)
    assert "spec.retention" in err, err
    r = kubectl("apply", "-f", "-", namespace=namespace, check=False,
                input=pha_yaml("typo", "externalLabels: {cluster: eu1}\nreplica: 3\n"))
    assert r.returncode != 0 and 'unknown field "spec.replica"' in r.stderr, r.stderr


# --- subresources and printing ---------------------------------------------------------------------

def ready_status(generation: int, reason: str = "Reconciled", status: str = "True") -> dict:
    t = "2026-01-01T00:00:00Z"
    return {"observedGeneration": generation, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2,
            "selector": "app.kubernetes.io/instance=eu1",
            "conditions": [
                {"type": "Ready", "status": status, "reason": reason, "message": "", "lastTransitionTime": t,
                 "observedGeneration": generation},
                {"type": "Reconciled", "status": "True", "reason": "Reconciled", "message": "ok",
                 "lastTransitionTime": t, "observedGeneration": generation},
            ]}


def test_status_subresource_keeps_spec_and_status_apart(kubectl, kube_client, pythanos_crds, namespace):
    from kubernetes import client

    co = client.CustomObjectsApi(kube_client)
    kubectl("apply", "-f", "-", namespace=namespace, input=pha_yaml("eu1", "externalLabels: {cluster: eu1}\n"))
    before = co.get_namespaced_custom_object(GROUP, VERSION, namespace, "prometheushas", "eu1")
    gen = before["metadata"]["generation"]

    # A status patch that also tries to change spec: /status ignores the spec part.
    patched = co.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "prometheushas", "eu1",
        {"spec": {"replicas": 7}, "status": ready_status(gen)})
    assert patched["spec"] == before["spec"]
    assert patched["metadata"]["generation"] == gen
    assert patched["status"]["conditions"][0]["type"] == "Ready"

    # The main endpoint ignores status.
    co.patch_namespaced_custom_object(GROUP, VERSION, namespace, "prometheushas", "eu1",
                                      {"status": {"observedGeneration": 99}})
    assert co.get_namespaced_custom_object(GROUP, VERSION, namespace, "prometheushas", "eu1")["status"][
        "observedGeneration"] == gen

    # conditions are a list-map keyed by type: a server-side apply of one condition by another field
    # manager merges by type instead of replacing the list.
    t = "2026-01-01T00:00:00Z"
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PrometheusHA", "metadata": {"name": "eu1"},
            "status": {"conditions": [{"type": "Available", "status": "False", "reason": "NoPodReady",
                                       "message": "0/2 ready", "lastTransitionTime": t}]}}
    co.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "prometheushas", "eu1", body,
                                             field_manager="another-writer", force=True,
                                             _content_type="application/apply-patch+yaml")
    status = co.get_namespaced_custom_object(GROUP, VERSION, namespace, "prometheushas", "eu1")["status"]
    assert sorted(c["type"] for c in status["conditions"]) == ["Available", "Ready", "Reconciled"]

    # A spec change bumps generation; a status-only change never does.
    kubectl("patch", "pha", "eu1", "--type=merge", "-p", '{"spec":{"replicas":3}}', namespace=namespace)
    assert co.get_namespaced_custom_object(GROUP, VERSION, namespace, "prometheushas", "eu1")["metadata"][
        "generation"] == gen + 1


def test_invalid_status_is_rejected(kube_client, kubectl, pythanos_crds, namespace):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    co = client.CustomObjectsApi(kube_client)
    kubectl("apply", "-f", "-", namespace=namespace, input=tc_yaml("main", MINIMAL_TC))
    bad = {"status": {"conditions": [{"type": "Ready", "status": "Degraded", "reason": "x", "message": "",
                                      "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
    with pytest.raises(ApiException) as e:
        co.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "thanosclusters", "main", bad)
    assert e.value.status == 422 and "Unsupported value" in e.value.body


def test_status_keeps_kopf_bookkeeping(kube_client, kubectl, pythanos_crds, namespace):
    from kubernetes import client

    co = client.CustomObjectsApi(kube_client)
    kubectl("apply", "-f", "-", namespace=namespace, input=tc_yaml("main", MINIMAL_TC))
    co.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "thanosclusters", "main",
                                             {"status": {"kopf": {"progress": {"h": {"retries": 1}}}, "junk": 1}})
    status = co.get_namespaced_custom_object(GROUP, VERSION, namespace, "thanosclusters", "main")["status"]
    assert status == {"kopf": {"progress": {"h": {"retries": 1}}}}  # unknown `junk` pruned


def test_printer_columns(kubectl, kube_client, pythanos_crds, namespace):
    from kubernetes import client

    co = client.CustomObjectsApi(kube_client)
    kubectl("apply", "-f", "-", namespace=namespace,
            input=pha_yaml("eu1", "externalLabels: {cluster: eu1}\n") + "---\n" + tc_yaml("main", MINIMAL_TC))
    gen = kubectl.json("get", "pha", "eu1", namespace=namespace)["metadata"]["generation"]
    co.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "prometheushas", "eu1",
                                             {"status": ready_status(gen, "SomePodsNotReady", "False")})
    co.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "thanosclusters", "main",
                                             {"status": {"members": 1, "conditions": ready_status(1)["conditions"]}})

    lines = kubectl("get", "pha", namespace=namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "REASON", "REPLICAS", "AVAILABLE", "AGE"], lines
    assert lines[1].split()[:5] == ["eu1", "False", "SomePodsNotReady", "2", "2"], lines
    wide = kubectl("get", "pha", "-o", "wide", namespace=namespace).stdout.splitlines()
    assert wide[0].split()[-1] == "OBSERVED" and wide[1].split()[-1] == str(gen), wide

    lines = kubectl("get", "tc", namespace=namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "REASON", "MEMBERS", "REPLICAS", "AGE"], lines
    assert lines[1].split()[:5] == ["main", "True", "Reconciled", "1", "1"], lines

    # The category lists both kinds.
    out = kubectl("get", "pythanos", namespace=namespace).stdout
    assert "prometheusha.pythanos.io/eu1" in out and "thanoscluster.pythanos.io/main" in out, out


def test_scale_subresource(kubectl, kube_client, pythanos_crds, namespace):
    kubectl("apply", "-f", "-", namespace=namespace, input=pha_yaml("eu1", "externalLabels: {cluster: eu1}\n"))
    kubectl("scale", "pha", "eu1", "--replicas=3", namespace=namespace)
    assert kubectl.json("get", "pha", "eu1", namespace=namespace)["spec"]["replicas"] == 3
    r = kubectl("scale", "pha", "eu1", "--replicas=11", namespace=namespace, check=False)
    assert r.returncode != 0 and "less than or equal to 10" in r.stderr, r.stderr
    scale = json.loads(kubectl("get", "--raw",
                               f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/prometheushas/eu1/scale").stdout)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3


def test_kubectl_error_type(kubectl, pythanos_crds, namespace):
    with pytest.raises(KubectlError) as e:
        kubectl("apply", "-f", "-", input=pha_yaml("bad", "externalLabels: {}\n"), namespace=namespace)
    assert "externalLabels must not be empty" in e.value.stderr


def test_children_of_a_custom_resource_are_garbage_collected(kube_controller_manager, kubectl, pythanos_crds,
                                                             namespace):
    """What the operator relies on: objects owned (ownerReferences) by a ThanosCluster go when it goes."""
    import time

    kubectl("apply", "-f", "-", namespace=namespace, input=tc_yaml("main", MINIMAL_TC))
    uid = kubectl.json("get", "tc", "main", namespace=namespace)["metadata"]["uid"]
    child = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "thanos-query-main-endpoints",
             "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "ThanosCluster", "name": "main",
                                  "uid": uid, "controller": True, "blockOwnerDeletion": True}]}}
    kubectl("apply", "-f", "-", input=json.dumps(child), namespace=namespace)
    kubectl("delete", "tc", "main", "--wait=false", namespace=namespace)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r = kubectl("get", "configmap", child["metadata"]["name"], namespace=namespace, check=False)
        if r.returncode != 0 and "NotFound" in r.stderr:
            return
        time.sleep(0.5)
    pytest.fail("the garbage collector did not delete the ConfigMap owned by the deleted ThanosCluster")
