"""Pure render functions: custom resources in, Kubernetes objects out (no I/O, no clock, no globals).

* :func:`render_prometheus_ha` — a PrometheusHA (and the ThanosCluster it belongs to, or ``None``) to its
  config ConfigMap, headless governing Service, StatefulSet (Prometheus + the pythanos sidecar, after an init
  container that writes the expanded config once: ``pythanos sidecar --reloader.once``) and, for more than one
  replica, a PodDisruptionBudget.
* :func:`render_thanos_cluster` — a ThanosCluster and its member PrometheusHAs to the querier (endpoint SD
  ConfigMap, Deployment, Service), the receivers when enabled (hashring ConfigMap, headless and remote-write
  Services, StatefulSet, PodDisruptionBudget), the store gateway (StatefulSet per shard/time partition,
  headless Service), the rulers when enabled (rule-file ConfigMaps, headless Service, StatefulSet with a
  config reloader, PodDisruptionBudget) and the singleton compactor (StatefulSet, Service). The receiver
  pods as the API server has them and the rulers' files (:mod:`rulefiles`, from the ConfigMaps and
  PrometheusRules the section names or selects) are inputs like the others: the pods' readiness makes the
  hashring (:func:`hashring_endpoints`), the files fill the rulers' ConfigMaps, mounted whole and reloaded
  in place (a changed file rolls nothing).
  A member with ``remoteWrite`` renders without a sidecar and sends to the receivers.
* :func:`external_label_conflicts` / :func:`cluster_for` / :func:`members_of` / :func:`grpc_tls_mismatch` —
  the cross-object rules.

gRPC TLS (``grpcTLS``): the Secret is mounted read-only at ``/etc/thanos/grpc-tls`` into every container that
serves or dials gRPC (sidecars, queriers, store gateways; not the compactor, Prometheus or the init
container); servers get ``--grpc-server-tls-*``, queriers also ``--grpc-client-tls-*``. Probes are HTTP and
stay as they are. The renders take the CA's SHA-256 (``ca_sha256``, read by the apply step) and put it on
the pod template of every pod that reads the CA (queriers always, servers with client auth), because
Thanos reads the CA once at start while it reloads certificate and key from the files by itself: a new CA
rolls those pods, a renewed certificate rolls nothing.

Every object carries explicit labels (never the owner's: Argo CD's tracking label must not spread to
children) and, when the owner has a ``uid``, a controller owner reference, so the apply step only applies.
DNS names use the short ``<svc>.<ns>.svc`` form: nothing here assumes the cluster domain.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Iterable, Mapping, Sequence

import yaml

from .spec import (API_VERSION, GRPCTLS, Defaults, FrontendCacheSpec, PHASpec, ReceiverSpec, RulerSpec, labels_match,
                   meta, name_of, namespace_of, pha_spec, tc_spec)

MANAGED_BY = "pythanos-operator"
PART_OF = "pythanos"
LABEL_PHA = "pythanos.io/prometheusha"
LABEL_TC = "pythanos.io/thanoscluster"
GRPC_PORT, HTTP_PORT, PROM_PORT = 10901, 10902, 9090
REMOTE_WRITE_PORT = 19291

CONFIG_DIR = "/etc/prometheus/config"
CONFIG_OUT_DIR = "/etc/prometheus/config_out"
CONFIG_TEMPLATE_KEY = "prometheus.yaml.tmpl"
SCRAPE_DIR = "/etc/prometheus/scrape"
OBJSTORE_DIR = "/etc/thanos/objstore"
SD_DIR = "/etc/thanos/sd"
SD_KEY = "endpoints.yaml"
GRPC_TLS_DIR = "/etc/thanos/grpc-tls"
GRPC_TLS_VOLUME = "grpc-tls"
ANNOTATION_GRPC_TLS_CA = "pythanos.io/grpc-tls-ca-sha256"
ANNOTATION_CONFIG = "pythanos.io/config-sha256"
HASHRING_DIR = "/etc/thanos/hashring"
HASHRING_KEY = "hashrings.json"
HASHRING_NAME = "default"
RECEIVE_DATA_DIR = "/var/thanos/receive"
TENANT_HEADER = "THANOS-TENANT"   # thanos receive --receive.tenant-header default
RECEIVE_NAME = "thanos-receive"
RULE_NAME = "thanos-rule"
RULE_DATA_DIR = "/var/thanos/rule"
RULE_DIR = "/etc/thanos/rules"
RULE_FILE_SUFFIXES = (".yaml", ".yml")
RULE_RELOADER_NAME = "config-reloader"
RELOADER_PORT = 8081
FRONTEND_NAME = "thanos-query-frontend"
FRONTEND_CACHE_DIR = "/etc/thanos/frontend-cache"
RELOADER_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}

POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}


# ---------------------------------------------------------------------------------------------- helpers

def _detached(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain JSON data with no shared sub-objects (callers may mutate; YAML dumps need no anchors)."""
    return json.loads(json.dumps(objs))


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any] | None:
    m = meta(owner)
    if not m.get("uid"):
        return None
    return {"apiVersion": owner.get("apiVersion") or API_VERSION, "kind": owner["kind"], "name": m["name"],
            "uid": m["uid"], "controller": True, "blockOwnerDeletion": True}


def _labels(name: str, component: str, owner_label: str, owner_name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        owner_label: owner_name,
    }


def _selector(labels: Mapping[str, str], owner_label: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": labels["app.kubernetes.io/name"], owner_label: labels[owner_label]}


def _obj(api_version: str, kind: str, name: str, namespace: str, labels: Mapping[str, str],
         owner: Mapping[str, Any], **body: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    ref = owner_reference(owner)
    if ref:
        md["ownerReferences"] = [ref]
    return {"apiVersion": api_version, "kind": kind, "metadata": md, **body}


def _soft_anti_affinity(selector: Mapping[str, str]) -> dict[str, Any]:
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100,
        "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": dict(selector)}}}]}}


def _http_probe(path: str, port: str, period: int = 10, failure: int = 3) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "failureThreshold": failure,
            "timeoutSeconds": 3}


def _env_pod() -> list[dict[str, Any]]:
    return [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]


def _tls_volume(tls: GRPCTLS) -> dict[str, Any]:
    return {"name": GRPC_TLS_VOLUME, "secret": {"secretName": tls.secret_name}}


def _tls_mount() -> dict[str, Any]:
    return {"name": GRPC_TLS_VOLUME, "mountPath": GRPC_TLS_DIR, "readOnly": True}


def grpc_server_tls_args(tls: GRPCTLS) -> list[str]:
    """A gRPC server with the Secret's certificate; with client auth, clients must present one the CA signed."""
    args = [f"--grpc-server-tls-cert={GRPC_TLS_DIR}/{tls.cert_key}",
            f"--grpc-server-tls-key={GRPC_TLS_DIR}/{tls.key_key}"]
    if tls.client_auth:
        args.append(f"--grpc-server-tls-client-ca={GRPC_TLS_DIR}/{tls.ca_key}")
    return args


def grpc_client_tls_args(tls: GRPCTLS) -> list[str]:
    """A querier dialling every endpoint with TLS: servers verified against the CA (and ``serverName``); the
    certificate is always offered (a server asks for it only when it wants one, so members with or without
    client auth both work)."""
    args = ["--grpc-client-tls-secure",
            f"--grpc-client-tls-cert={GRPC_TLS_DIR}/{tls.cert_key}",
            f"--grpc-client-tls-key={GRPC_TLS_DIR}/{tls.key_key}",
            f"--grpc-client-tls-ca={GRPC_TLS_DIR}/{tls.ca_key}"]
    if tls.server_name:
        args.append(f"--grpc-client-server-name={tls.server_name}")
    return args


def _pod_metadata(labels: Mapping[str, str], ca_sha256: str | None) -> dict[str, Any]:
    """Pod template metadata; the CA digest (when the pod reads the CA) makes a new CA roll the pods."""
    md: dict[str, Any] = {"labels": dict(labels)}
    if ca_sha256:
        md["annotations"] = {ANNOTATION_GRPC_TLS_CA: ca_sha256}
    return md


def dns_srv(service: str, namespace: str, port_name: str = "grpc") -> str:
    """Thanos DNS-SRV discovery of every pod behind a headless Service (cluster-domain agnostic)."""
    return f"dnssrv+_{port_name}._tcp.{service}.{namespace}.svc"


def _thanos_container(name: str, image: str, pull: str, args: list[str], resources: Mapping[str, Any],
                      mounts: list[dict[str, Any]], ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name, "image": image, "imagePullPolicy": pull, "args": args,
        "env": _env_pod(), "ports": ports,
        "livenessProbe": _http_probe("/-/healthy", "http", 30, 4),
        "readinessProbe": _http_probe("/-/ready", "http", 5, 20),
        "resources": dict(resources), "securityContext": dict(CONTAINER_SECURITY),
        # read-only root filesystem: Python's tempfiles go to an emptyDir
        "volumeMounts": [*mounts, {"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


# ---------------------------------------------------------------------------------------------- PrometheusHA

def pha_names(name: str) -> dict[str, str]:
    base = f"prometheus-{name}"
    return {"statefulset": base, "service": base, "config": f"{base}-config", "pdb": base}


def prometheus_config(s: PHASpec, cluster: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Prometheus config template; ``$(POD_NAME)`` is expanded per pod by the sidecar's reloader (the init
    container's run of it). With ``remoteWrite`` and a ThanosCluster, one ``remote_write`` to its receivers:
    Prometheus sends every series with the external labels (replica label included), as a sidecar's blocks
    carry them."""
    ext = dict(sorted(s.external_labels.items()))
    ext[s.replica_label] = "$(POD_NAME)"
    cfg: dict[str, Any] = {
        "global": {"scrape_interval": s.scrape_interval, "evaluation_interval": s.evaluation_interval,
                   "external_labels": ext},
        "alerting": {"alert_relabel_configs": [{"action": "labeldrop", "regex": s.replica_label}]},
    }
    if s.remote_write is not None and cluster is not None:
        rw: dict[str, Any] = {"name": tc_names(name_of(cluster))["receive"],
                              "url": remote_write_url(name_of(cluster), namespace_of(cluster))}
        if s.remote_write.tenant:
            rw["headers"] = {TENANT_HEADER: s.remote_write.tenant}
        cfg["remote_write"] = [rw]
    if s.scrape_config_ref is not None:
        cfg["scrape_config_files"] = [f"{SCRAPE_DIR}/{s.scrape_config_ref.key}"]
    cfg["scrape_configs"] = list(s.scrape_configs)
    return cfg


def remote_write_url(cluster_name: str, namespace: str) -> str:
    """The receivers' remote-write endpoint behind their ClusterIP Service (any ready receiver routes)."""
    return f"http://{tc_names(cluster_name)['receive_write']}.{namespace}.svc:{REMOTE_WRITE_PORT}/api/v1/receive"


def pha_objstore(s: PHASpec, cluster: Mapping[str, Any] | None):
    """The object-storage Secret reference the sidecar uploads with (None: no upload; with ``remoteWrite``
    the receivers upload)."""
    if s.remote_write is not None:
        return None
    if s.objstore is not None and not s.objstore_from_cluster:
        return s.objstore
    if s.objstore_from_cluster and cluster is not None:
        return tc_spec(cluster).objstore
    return s.objstore


def pha_grpc_tls(s: PHASpec, cluster: Mapping[str, Any] | None) -> GRPCTLS | None:
    """The sidecars' gRPC TLS: their own ``sidecar.grpcTLS``, else their ThanosCluster's (whose queriers dial
    them), else none (also with ``remoteWrite``: no sidecar, no gRPC)."""
    if s.remote_write is not None:
        return None
    if s.grpc_tls is not None:
        return s.grpc_tls
    return tc_spec(cluster).grpc_tls if cluster is not None else None


def render_prometheus_ha(pha: Mapping[str, Any], cluster: Mapping[str, Any] | None,
                         defaults: Defaults = Defaults(), ca_sha256: str | None = None) -> list[dict[str, Any]]:
    """``ca_sha256``: the digest of the sidecars' TLS CA (None: not known here, no roll annotation)."""
    s = pha_spec(pha)
    names = pha_names(s.name)
    ns = s.namespace
    labels = _labels("prometheus", "prometheus", LABEL_PHA, s.name)
    if cluster is not None:
        labels[LABEL_TC] = name_of(cluster)
    sel = _selector(labels, LABEL_PHA)
    objstore = pha_objstore(s, cluster)
    image = s.image or f"{defaults.prometheus_image_repo}:{s.version}"
    sidecar_image = s.sidecar_image or defaults.component_image
    pull = defaults.image_pull_policy

    rw = s.remote_write is not None
    template = yaml.safe_dump(prometheus_config(s, cluster), sort_keys=False, default_flow_style=False)
    config = _obj("v1", "ConfigMap", names["config"], ns, labels, pha, data={CONFIG_TEMPLATE_KEY: template})

    svc_ports = [{"name": "web", "port": PROM_PORT, "targetPort": "web"}]
    if not rw:
        svc_ports += [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"},
                      {"name": "http", "port": HTTP_PORT, "targetPort": "http"}]
    service = _obj("v1", "Service", names["service"], ns, labels, pha, spec={
        "clusterIP": "None",
        "selector": dict(sel),
        "ports": svc_ports,
    })

    prom_args = [
        f"--config.file={CONFIG_OUT_DIR}/prometheus.yaml",
        "--storage.tsdb.path=/prometheus",
        f"--storage.tsdb.retention.time={s.retention}",
    ]
    if rw:
        # No reloader: a new config template rolls the pods (the config-sha256 annotation); scrape config
        # files from scrapeConfigFrom are re-read by Prometheus itself when they change.
        prom_args += [f"--web.listen-address=:{PROM_PORT}", f"--log.level={s.log_level}"]
        if s.scrape_config_ref is not None:
            prom_args.append("--enable-feature=auto-reload-config")
    else:
        prom_args += [
            # The sidecar uploads 2h blocks: local compaction off (min = max block duration), as Thanos requires.
            "--storage.tsdb.min-block-duration=2h",
            "--storage.tsdb.max-block-duration=2h",
            f"--web.listen-address=:{PROM_PORT}",
            f"--log.level={s.log_level}",
            "--web.enable-lifecycle",   # the sidecar's reloader POSTs /-/reload; no admin API (nothing needs it)
        ]
    data_mount = {"name": "data", "mountPath": "/prometheus"}
    prom_mounts = [data_mount, {"name": "config-out", "mountPath": CONFIG_OUT_DIR, "readOnly": True}]
    if s.scrape_config_ref is not None:
        prom_mounts.append({"name": "scrape-configs", "mountPath": SCRAPE_DIR, "readOnly": True})
    prometheus = {
        # The image's own entrypoint (no shell): the init container wrote the expanded config before it starts.
        "name": "prometheus", "image": image, "imagePullPolicy": pull,
        "args": prom_args,
        "ports": [{"name": "web", "containerPort": PROM_PORT}],
        "livenessProbe": _http_probe("/-/healthy", "web", 15, 6),
        "readinessProbe": _http_probe("/-/ready", "web", 5, 60),
        "resources": dict(s.resources), "securityContext": dict(CONTAINER_SECURITY),
        "volumeMounts": prom_mounts, "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    reloader_args = [f"--reloader.config-file={CONFIG_DIR}/{CONFIG_TEMPLATE_KEY}",
                     f"--reloader.config-envsubst-file={CONFIG_OUT_DIR}/prometheus.yaml"]
    # The sidecar's reloader once, before Prometheus starts: $(POD_NAME) expanded into config_out.
    init_config = {
        "name": "init-config", "image": sidecar_image, "imagePullPolicy": pull,
        "args": ["sidecar", f"--log.level={s.sidecar_log_level}", *reloader_args, "--reloader.once"],
        "env": _env_pod(),
        "resources": dict(s.sidecar_resources), "securityContext": dict(CONTAINER_SECURITY),
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "config-out", "mountPath": CONFIG_OUT_DIR},
                         {"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    sc_args = [
        "sidecar",
        f"--log.level={s.sidecar_log_level}",
        f"--prometheus.url=http://localhost:{PROM_PORT}",
        f"--grpc-address=0.0.0.0:{GRPC_PORT}",
        f"--http-address=0.0.0.0:{HTTP_PORT}",
        "--tsdb.path=/prometheus",
        *reloader_args,
    ]
    sc_mounts = [data_mount, {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                 {"name": "config-out", "mountPath": CONFIG_OUT_DIR}]
    if s.scrape_config_ref is not None:
        sc_args.append(f"--reloader.rule-dir={SCRAPE_DIR}")
        sc_mounts.append({"name": "scrape-configs", "mountPath": SCRAPE_DIR, "readOnly": True})
    if objstore is not None:
        sc_args.append(f"--objstore.config-file={OBJSTORE_DIR}/{objstore.key}")
        sc_mounts.append({"name": "objstore", "mountPath": OBJSTORE_DIR, "readOnly": True})
    tls = pha_grpc_tls(s, cluster)
    if tls is not None:
        sc_args += grpc_server_tls_args(tls)
        sc_mounts.append(_tls_mount())
    sidecar = _thanos_container("thanos-sidecar", sidecar_image, pull, sc_args, s.sidecar_resources, sc_mounts,
                                [{"name": "grpc", "containerPort": GRPC_PORT},
                                 {"name": "http", "containerPort": HTTP_PORT}])

    containers = [prometheus] if rw else [prometheus, sidecar]
    pod_md = _pod_metadata(labels, ca_sha256 if tls is not None and tls.client_auth else None)
    if rw:
        pod_md.setdefault("annotations", {})[ANNOTATION_CONFIG] = hashlib.sha256(template.encode()).hexdigest()
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": names["config"]}},
        {"name": "config-out", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if s.scrape_config_ref is not None:
        r = s.scrape_config_ref
        volumes.append({"name": "scrape-configs", "secret": {"secretName": r.name}} if r.kind == "Secret"
                       else {"name": "scrape-configs", "configMap": {"name": r.name}})
    if objstore is not None:
        volumes.append({"name": "objstore", "secret": {"secretName": objstore.name}})
    if tls is not None:
        volumes.append(_tls_volume(tls))
    sts_spec: dict[str, Any] = {
        "replicas": s.replicas,
        "serviceName": names["service"],
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": dict(sel)},
        "template": {
            "metadata": pod_md,
            "spec": {
                "securityContext": dict(POD_SECURITY),
                "affinity": _soft_anti_affinity(sel),
                "terminationGracePeriodSeconds": 120,
                "initContainers": [init_config],
                "containers": containers,
                "volumes": volumes,
            },
        },
    }
    if s.storage:
        sts_spec["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": dict(s.storage)}]
    else:
        volumes.append({"name": "data", "emptyDir": {}})
    sts = _obj("apps/v1", "StatefulSet", names["statefulset"], ns, labels, pha, spec=sts_spec)

    out = [config, service, sts]
    if s.replicas > 1:
        out.append(_obj("policy/v1", "PodDisruptionBudget", names["pdb"], ns, labels, pha, spec={
            "maxUnavailable": 1, "selector": {"matchLabels": dict(sel)}}))
    return _detached(out)


# ---------------------------------------------------------------------------------------------- ThanosCluster

def tc_names(name: str) -> dict[str, str]:
    return {"query": f"thanos-query-{name}", "query_sd": f"thanos-query-{name}-endpoints",
            "store": f"thanos-store-{name}", "compact": f"thanos-compact-{name}",
            # the receivers' StatefulSet and its headless governing Service (pod DNS names, DNS SRV) share a name
            "receive": f"{RECEIVE_NAME}-{name}", "receive_write": f"{RECEIVE_NAME}-{name}-write",
            "hashring": f"{RECEIVE_NAME}-{name}-hashring",
            # the rulers' StatefulSet and headless Service (DNS SRV for the queriers)
            "rule": f"{RULE_NAME}-{name}",
            # the query frontend's Deployment and Service (what Grafana points at)
            "query_frontend": f"{FRONTEND_NAME}-{name}"}


def replica_labels(tc: Mapping[str, Any], members: Sequence[Mapping[str, Any]], section: str) -> list[str]:
    """Every member's replica label name plus the section's extras, sorted and unique."""
    s = tc_spec(tc)
    if section == "querier":
        extra = s.querier.get("extraReplicaLabels") or []
    else:
        extra = (s.compactor.get("deduplication") or {}).get("extraReplicaLabels") or []
    found = {pha_spec(m).replica_label for m in members} | {str(x) for x in extra}
    if s.receiver.enabled:   # each receiver stamps its pod name on what it ingests (replicated RF times)
        found.add(s.receiver.replica_label)
    if s.ruler.enabled:   # ruler replicas evaluate the same rules: their series and rules differ by it only
        found.add(s.ruler.replica_label)
    return sorted(found)


def query_endpoints(tc: Mapping[str, Any], members: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    s = tc_spec(tc)
    # members that remote-write have no sidecar: their series are in the receivers
    eps = [{"address": dns_srv(pha_names(name_of(m))["service"], namespace_of(m))}
           for m in sorted(members, key=name_of) if pha_spec(m).remote_write is None]
    if int(s.store.get("replicas", 1)) > 0 and s.objstore is not None:
        eps.append({"address": dns_srv(tc_names(s.name)["store"], s.namespace)})
    if s.receiver.enabled and s.receiver.replicas > 0:
        eps.append({"address": dns_srv(tc_names(s.name)["receive"], s.namespace)})
    if s.ruler.enabled and s.ruler.replicas > 0:   # rules and alerts (Rules API) and recorded series
        eps.append({"address": dns_srv(tc_names(s.name)["rule"], s.namespace)})
    for e in s.querier.get("extraEndpoints") or []:
        eps.append({"address": e} if isinstance(e, str) else dict(e))
    return eps


# ---------------------------------------------------------------------------------------------- receiver hashring

def pod_ready(pod: Mapping[str, Any]) -> bool:
    """A pod counts for the hashring when its Ready condition is True and it is not being deleted."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def receive_endpoint(pod_name: str, cluster_name: str, namespace: str, cluster_domain: str) -> str:
    """A receiver's hashring entry, also its ``--receive.local-endpoint``: the pod's stable DNS name under
    the headless Service, gRPC port."""
    host = f"{pod_name}.{tc_names(cluster_name)['receive']}.{namespace}.svc"
    return f"{host}.{cluster_domain}:{GRPC_PORT}" if cluster_domain else f"{host}:{GRPC_PORT}"


def hashring_members(tc: Mapping[str, Any], receive_pods: Iterable[Mapping[str, Any]]) -> list[int]:
    """Ordinals of the cluster's receiver pods that are ready and wanted (ordinal < replicas), ascending.
    Pods are matched by namespace, cluster label and the StatefulSet's ``<name>-<ordinal>`` names, so
    whatever order the watch delivered them in, the result is the same."""
    s = tc_spec(tc)
    pat = re.compile(re.escape(tc_names(s.name)["receive"]) + r"-(0|[1-9][0-9]*)")
    found = set()
    for p in receive_pods:
        md = p.get("metadata") or {}
        m = pat.fullmatch(str(md.get("name") or ""))
        if (m is None or (md.get("namespace") or s.namespace) != s.namespace
                or (md.get("labels") or {}).get(LABEL_TC) != s.name):
            continue
        if int(m.group(1)) < s.receiver.replicas and pod_ready(p):
            found.add(int(m.group(1)))
    return sorted(found)


def hashring_endpoints(tc: Mapping[str, Any], receive_pods: Iterable[Mapping[str, Any]],
                       defaults: Defaults = Defaults()) -> list[str]:
    """The hashring's endpoints: the ready receivers, by ordinal. With fewer of them than the replication
    factor, every wanted replica is listed, ready or not: ketama cannot build a shorter ring (Thanos'
    receivers exit on such a file), and with hashmod a shorter ring refuses every write ("insufficient
    nodes") where the full one still reaches the quorum on the receivers that are up (replication
    factor 3, one of 3 away: 2 of 3 copies). With hashmod and no receiver ready, the ring is empty (each
    receiver becomes ready without being in it, and is added once it is)."""
    s = tc_spec(tc)
    r = s.receiver
    ordinals = hashring_members(tc, receive_pods)
    if len(ordinals) < r.replication_factor and (ordinals or r.algorithm == "ketama"):
        ordinals = list(range(r.replicas))
    sts = tc_names(s.name)["receive"]
    return [receive_endpoint(f"{sts}-{i}", s.name, s.namespace, defaults.cluster_domain) for i in ordinals]


def hashrings_json(endpoints: Sequence[str]) -> str:
    """Thanos' hashrings file (a JSON list of hashrings): one ring for every tenant. Stable bytes for the
    same endpoints, so an unchanged ring never rewrites the ConfigMap."""
    return json.dumps([{"hashring": HASHRING_NAME, "endpoints": list(endpoints)}], indent=2) + "\n"


def _receiver_objects(tc: Mapping[str, Any], defaults: Defaults, image: str, ca_sha256: str | None,
                      receive_pods: Iterable[Mapping[str, Any]], objstore_args: list[str],
                      objstore_mounts: list[dict[str, Any]], objstore_vols: list[dict[str, Any]]) -> list[dict]:
    """The receivers: hashring ConfigMap, headless governing Service, remote-write/gRPC Service, StatefulSet
    (one PVC each) and, above one replica, a PodDisruptionBudget."""
    s = tc_spec(tc)
    r: ReceiverSpec = s.receiver
    ns, names = s.namespace, tc_names(s.name)
    pull = defaults.image_pull_policy
    rl = _labels(RECEIVE_NAME, "database-write-hashring", LABEL_TC, s.name)
    rsel = _selector(rl, LABEL_TC)
    out: list[dict[str, Any]] = []
    out.append(_obj("v1", "ConfigMap", names["hashring"], ns, rl, tc, data={
        HASHRING_KEY: hashrings_json(hashring_endpoints(tc, receive_pods, defaults))}))
    out.append(_obj("v1", "Service", names["receive"], ns, rl, tc, spec={
        # every pod's DNS name resolves whether it is ready or not: a receiver leaving the ring is still
        # reachable by its peers until the new ring reaches them
        "clusterIP": "None", "publishNotReadyAddresses": True, "selector": dict(rsel),
        "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"},
                  {"name": "http", "port": HTTP_PORT, "targetPort": "http"},
                  {"name": "remote-write", "port": REMOTE_WRITE_PORT, "targetPort": "remote-write"}]}))
    out.append(_obj("v1", "Service", names["receive_write"], ns, rl, tc, spec={
        "selector": dict(rsel),
        "ports": [{"name": "remote-write", "port": REMOTE_WRITE_PORT, "targetPort": "remote-write"},
                  {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"}]}))
    domain = f".{defaults.cluster_domain}" if defaults.cluster_domain else ""
    args = ["receive", f"--log.level={s.log_level}", f"--grpc-address=0.0.0.0:{GRPC_PORT}",
            f"--http-address=0.0.0.0:{HTTP_PORT}", f"--remote-write.address=0.0.0.0:{REMOTE_WRITE_PORT}",
            f"--tsdb.path={RECEIVE_DATA_DIR}",
            f"--label={r.replica_label}=\"$(POD_NAME)\""]
    args += [f"--label={k}={json.dumps(v)}" for k, v in sorted(r.external_labels.items())]
    args += [f"--receive.local-endpoint=$(POD_NAME).{names['receive']}.{ns}.svc{domain}:{GRPC_PORT}",
             f"--receive.hashrings-file={HASHRING_DIR}/{HASHRING_KEY}",
             f"--receive.hashrings-algorithm={r.algorithm}",
             f"--receive.replication-factor={r.replication_factor}",
             f"--receive.tenant-label-name={r.tenant_label}"]
    if r.retention:
        args.append(f"--tsdb.retention={r.retention}")
    args += objstore_args
    tls = s.grpc_tls
    if tls is not None:   # served to queriers and peers; peers dialled like a querier dials its endpoints
        args += grpc_server_tls_args(tls)
        args += ["--remote-write.client-tls-secure",
                 f"--remote-write.client-tls-cert={GRPC_TLS_DIR}/{tls.cert_key}",
                 f"--remote-write.client-tls-key={GRPC_TLS_DIR}/{tls.key_key}",
                 f"--remote-write.client-tls-ca={GRPC_TLS_DIR}/{tls.ca_key}"]
        if tls.server_name:
            args.append(f"--remote-write.client-server-name={tls.server_name}")
    args += r.extra_args
    mounts = [{"name": "data", "mountPath": RECEIVE_DATA_DIR},
              {"name": "hashring", "mountPath": HASHRING_DIR, "readOnly": True}, *objstore_mounts]
    vols = [{"name": "hashring", "configMap": {"name": names["hashring"]}}, *objstore_vols,
            {"name": "tmp", "emptyDir": {}}]
    if tls is not None:
        mounts.append(_tls_mount())
        vols.append(_tls_volume(tls))
    c = _thanos_container(RECEIVE_NAME, image, pull, args, r.resources, mounts,
                          [{"name": "grpc", "containerPort": GRPC_PORT}, {"name": "http", "containerPort": HTTP_PORT},
                           {"name": "remote-write", "containerPort": REMOTE_WRITE_PORT}])
    out.append(_obj("apps/v1", "StatefulSet", names["receive"], ns, rl, tc, spec={
        "replicas": r.replicas,
        "serviceName": names["receive"],
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": dict(rsel)},
        "template": {"metadata": _pod_metadata(rl, ca_sha256 if tls is not None else None), "spec": {
            "securityContext": dict(POD_SECURITY), "affinity": _soft_anti_affinity(rsel),
            # the head is flushed into a block and shipped on shutdown
            "terminationGracePeriodSeconds": 900, "containers": [c], "volumes": vols}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": _pvc_spec(r.storage, "10Gi")}],
    }))
    if r.replicas > 1:
        out.append(_obj("policy/v1", "PodDisruptionBudget", names["receive"], ns, rl, tc, spec={
            "maxUnavailable": 1, "selector": {"matchLabels": dict(rsel)}}))
    return out


# ---------------------------------------------------------------------------------------------- ruler

def rule_config_map_names(cluster_name: str, shards: int) -> list[str]:
    """The operator's ConfigMaps holding the rulers' files: ``<rule StatefulSet>-rulefiles-<n>``."""
    return [f"{tc_names(cluster_name)['rule']}-rulefiles-{i}" for i in range(max(1, shards))]


def _reloader_container(image: str, pull: str, log_level: str) -> dict[str, Any]:
    """The ruler pod's config reloader: watches the rules directory (the kubelet updates the mounted
    ConfigMaps in place) and POSTs the ruler's ``/-/reload`` when a file changes."""
    return {
        "name": RULE_RELOADER_NAME, "image": image, "imagePullPolicy": pull,
        "args": ["config-reloader", f"--log.level={log_level}",
                 f"--reload-url=http://127.0.0.1:{HTTP_PORT}/-/reload", f"--watched-dir={RULE_DIR}",
                 f"--listen-address=:{RELOADER_PORT}"],
        "ports": [{"name": "reloader-web", "containerPort": RELOADER_PORT}],
        "livenessProbe": _http_probe("/-/healthy", "reloader-web", 30, 4),
        "readinessProbe": _http_probe("/-/ready", "reloader-web", 5, 20),
        "resources": {k: dict(v) for k, v in RELOADER_RESOURCES.items()},
        "securityContext": dict(CONTAINER_SECURITY),
        "volumeMounts": [{"name": "rules", "mountPath": RULE_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _ruler_objects(tc: Mapping[str, Any], defaults: Defaults, image: str, ca_sha256: str | None,
                   rule_shards: Sequence[Mapping[str, str]], objstore_args: list[str],
                   objstore_mounts: list[dict[str, Any]], objstore_vols: list[dict[str, Any]]) -> list[dict]:
    """The rulers: their rule-file ConfigMaps (one per shard, always one), headless Service (StatefulSet's,
    DNS SRV for the queriers), StatefulSet (a PVC each for the TSDB, shipped to the bucket when there is one;
    the ruler and its config reloader) and, above one replica, a PodDisruptionBudget. They query the cluster's
    queriers and send to ``alertmanagers``; the queriers get them as endpoints.

    The ConfigMaps are mounted whole, flat under the rules directory (a projected volume without ``items``),
    so the kubelet updates the files in place and the reloader has the ruler re-read them: the pod template
    depends on the number of shards only, never on the files. The ``--rule-file`` globs ``*.yaml``/``*.yml``
    match the top-level ``<key> -> ..data/<key>`` links of such a volume and nothing else in it (``..data``,
    the timestamped directory)."""
    s = tc_spec(tc)
    r: RulerSpec = s.ruler
    ns, names = s.namespace, tc_names(s.name)
    pull = defaults.image_pull_policy
    rl = _labels(RULE_NAME, "rule-evaluation-engine", LABEL_TC, s.name)
    rsel = _selector(rl, LABEL_TC)
    shards = list(rule_shards) or [{}]
    cm_names = rule_config_map_names(s.name, len(shards))
    out: list[dict[str, Any]] = [_obj("v1", "ConfigMap", n, ns, rl, tc, data=dict(sorted(d.items())))
                                 for n, d in zip(cm_names, shards)]
    out.append(_obj("v1", "Service", names["rule"], ns, rl, tc, spec={
        "clusterIP": "None", "selector": dict(rsel),
        "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"},
                  {"name": "http", "port": HTTP_PORT, "targetPort": "http"}]}))
    args = ["rule", f"--log.level={s.log_level}", f"--grpc-address=0.0.0.0:{GRPC_PORT}",
            f"--http-address=0.0.0.0:{HTTP_PORT}", f"--data-dir={RULE_DATA_DIR}",
            f"--label={r.replica_label}=\"$(POD_NAME)\""]
    args += [f"--label={k}={json.dumps(v)}" for k, v in sorted(r.external_labels.items())]
    args += [f"--rule-file={RULE_DIR}/*{suffix}" for suffix in RULE_FILE_SUFFIXES]
    args += [f"--query={names['query']}.{ns}.svc:{HTTP_PORT}", f"--eval-interval={r.evaluation_interval}"]
    args += [f"--alertmanagers.url={u}" for u in r.alertmanagers]
    if r.retention:
        args.append(f"--tsdb.retention={r.retention}")
    args += objstore_args
    tls = s.grpc_tls
    if tls is not None:
        args += grpc_server_tls_args(tls)
    args += r.extra_args
    rules_vol = {"name": "rules", "projected": {"sources": [{"configMap": {"name": n}} for n in cm_names]}}
    mounts = [{"name": "data", "mountPath": RULE_DATA_DIR}, {"name": "rules", "mountPath": RULE_DIR, "readOnly": True},
              *objstore_mounts]
    vols = [rules_vol, *objstore_vols, {"name": "tmp", "emptyDir": {}}]
    if tls is not None:
        mounts.append(_tls_mount())
        vols.append(_tls_volume(tls))
    c = _thanos_container(RULE_NAME, image, pull, args, r.resources, mounts,
                          [{"name": "grpc", "containerPort": GRPC_PORT}, {"name": "http", "containerPort": HTTP_PORT}])
    md = _pod_metadata(rl, ca_sha256 if tls is not None and tls.client_auth else None)
    out.append(_obj("apps/v1", "StatefulSet", names["rule"], ns, rl, tc, spec={
        "replicas": r.replicas,
        "serviceName": names["rule"],
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": dict(rsel)},
        "template": {"metadata": md, "spec": {
            "securityContext": dict(POD_SECURITY), "affinity": _soft_anti_affinity(rsel),
            "terminationGracePeriodSeconds": 120,
            "containers": [c, _reloader_container(image, pull, s.log_level)], "volumes": vols}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": _pvc_spec(r.storage, "10Gi")}],
    }))
    if r.replicas > 1:
        out.append(_obj("policy/v1", "PodDisruptionBudget", names["rule"], ns, rl, tc, spec={
            "maxUnavailable": 1, "selector": {"matchLabels": dict(rsel)}}))
    return out


def frontend_cache_config(c: FrontendCacheSpec) -> str | None:
    """Thanos' response cache configuration for ``cache`` as one line of YAML (None: no cache, or
    the configuration is a mounted Secret key). The same serves range queries and labels."""
    if c.type == "NONE" or c.config_ref is not None:
        return None
    if c.type == "IN-MEMORY":
        cfg: dict[str, Any] = {"max_size": c.max_size, **({"validity": c.validity} if c.validity else {})}
    elif c.type == "MEMCACHED":
        cfg = {"addresses": list(c.addresses)}
    else:
        cfg = {"addr": c.addresses[0] if c.addresses else ""}
    if c.type != "IN-MEMORY" and c.validity:
        cfg["expiration"] = c.validity
    return yaml.safe_dump({"type": c.type, "config": cfg}, default_flow_style=True, width=10_000).strip()


def _query_frontend_objects(tc: Mapping[str, Any], defaults: Defaults, image: str) -> list[dict[str, Any]]:
    """The query frontend: Deployment and Service in front of the querier Service, the cache given
    (inline, or a Secret key mounted and read by ``-file`` flags) for range queries and labels."""
    s = tc_spec(tc)
    f = s.query_frontend
    ns, names = s.namespace, tc_names(s.name)
    fl = _labels(FRONTEND_NAME, "query-cache", LABEL_TC, s.name)
    fsel = _selector(fl, LABEL_TC)
    args = ["query-frontend", f"--log.level={s.log_level}", f"--http-address=0.0.0.0:{HTTP_PORT}",
            f"--query-frontend.downstream-url=http://{names['query']}.{ns}.svc:{HTTP_PORT}",
            f"--query-range.split-interval={f.split_interval}",
            f"--query-range.max-retries-per-request={f.max_retries}",
            f"--query-range.max-query-parallelism={f.max_query_parallelism}",
            f"--labels.max-retries-per-request={f.max_retries}"]
    mounts: list[dict[str, Any]] = []
    vols: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    inline = frontend_cache_config(f.cache)
    if inline is not None:
        args += [f"--query-range.response-cache-config={inline}", f"--labels.response-cache-config={inline}"]
    elif f.cache.config_ref is not None:
        path = f"{FRONTEND_CACHE_DIR}/{f.cache.config_ref.key}"
        args += [f"--query-range.response-cache-config-file={path}", f"--labels.response-cache-config-file={path}"]
        mounts.append({"name": "cache-config", "mountPath": FRONTEND_CACHE_DIR, "readOnly": True})
        vols.append({"name": "cache-config", "secret": {"secretName": f.cache.config_ref.name}})
    if f.compress_responses:
        args.append("--query-frontend.compress-responses")
    if f.log_queries_longer_than:
        args.append(f"--query-frontend.log-queries-longer-than={f.log_queries_longer_than}")
    args += f.extra_args
    c = _thanos_container(FRONTEND_NAME, image, defaults.image_pull_policy, args, f.resources, mounts,
                          [{"name": "http", "containerPort": HTTP_PORT}])
    out = [_obj("apps/v1", "Deployment", names["query_frontend"], ns, fl, tc, spec={
        "replicas": f.replicas,
        "selector": {"matchLabels": dict(fsel)},
        "template": {"metadata": {"labels": dict(fl)}, "spec": {
            "securityContext": dict(POD_SECURITY), "affinity": _soft_anti_affinity(fsel),
            "terminationGracePeriodSeconds": 120, "containers": [c], "volumes": vols}},
    }), _obj("v1", "Service", names["query_frontend"], ns, fl, tc, spec={
        "selector": dict(fsel), "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http"}]})]
    if f.replicas > 1:
        out.append(_obj("policy/v1", "PodDisruptionBudget", names["query_frontend"], ns, fl, tc, spec={
            "maxUnavailable": 1, "selector": {"matchLabels": dict(fsel)}}))
    return out


def render_thanos_cluster(tc: Mapping[str, Any], members: Sequence[Mapping[str, Any]],
                          defaults: Defaults = Defaults(), ca_sha256: str | None = None,
                          receive_pods: Iterable[Mapping[str, Any]] = (),
                          rule_shards: Sequence[Mapping[str, str]] = ()) -> list[dict[str, Any]]:
    """``ca_sha256``: the digest of the cluster's gRPC TLS CA (None: not known here, no roll annotation);
    ``receive_pods``: the receiver pods as the API server has them (their readiness makes the hashring);
    ``rule_shards``: the rulers' rule files, file name -> content, one mapping per ConfigMap
    (:func:`pythanos_operator.rulefiles.build`; none: one empty ConfigMap)."""
    s = tc_spec(tc)
    ns, names = s.namespace, tc_names(s.name)
    image = s.image or defaults.component_image
    pull = defaults.image_pull_policy
    out: list[dict[str, Any]] = []
    objstore_args: list[str] = []
    objstore_mounts: list[dict[str, Any]] = []
    objstore_vols: list[dict[str, Any]] = []
    if s.objstore is not None:
        objstore_args = [f"--objstore.config-file={OBJSTORE_DIR}/{s.objstore.key}"]
        objstore_mounts = [{"name": "objstore", "mountPath": OBJSTORE_DIR, "readOnly": True}]
        objstore_vols = [{"name": "objstore", "secret": {"secretName": s.objstore.name}}]
    tls = s.grpc_tls
    tls_mounts = [_tls_mount()] if tls is not None else []
    tls_vols = [_tls_volume(tls)] if tls is not None else []
    server_tls_args = grpc_server_tls_args(tls) if tls is not None else []
    ports = [{"name": "grpc", "containerPort": GRPC_PORT}, {"name": "http", "containerPort": HTTP_PORT}]
    svc_ports = [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"},
                 {"name": "http", "port": HTTP_PORT, "targetPort": "http"}]

    # -- querier
    q = s.querier
    ql = _labels("thanos-query", "query-layer", LABEL_TC, s.name)
    qsel = _selector(ql, LABEL_TC)
    sd = {"endpoints": query_endpoints(tc, members)}
    out.append(_obj("v1", "ConfigMap", names["query_sd"], ns, ql, tc,
                    data={SD_KEY: yaml.safe_dump(sd, sort_keys=False, default_flow_style=False)}))
    q_args = ["query", f"--log.level={s.log_level}", f"--grpc-address=0.0.0.0:{GRPC_PORT}", f"--http-address=0.0.0.0:{HTTP_PORT}",
              f"--endpoint.sd-config-file={SD_DIR}/{SD_KEY}",
              f"--endpoint.sd-config-reload-interval={q.get('endpointReloadInterval', '30s')}"]
    q_args += [f"--query.replica-label={lbl}" for lbl in replica_labels(tc, members, "querier")]
    if tls is not None:
        q_args += [*server_tls_args, *grpc_client_tls_args(tls)]
    q_args += [str(a) for a in q.get("extraArgs") or []]
    qc = _thanos_container("thanos-query", image, pull, q_args, q.get("resources") or {},
                           [{"name": "endpoints", "mountPath": SD_DIR, "readOnly": True}, *tls_mounts], ports)
    out.append(_obj("apps/v1", "Deployment", names["query"], ns, ql, tc, spec={
        "replicas": int(q.get("replicas", 1)),
        "selector": {"matchLabels": dict(qsel)},
        "template": {"metadata": _pod_metadata(ql, ca_sha256 if tls is not None else None), "spec": {
            "securityContext": dict(POD_SECURITY), "affinity": _soft_anti_affinity(qsel),
            "terminationGracePeriodSeconds": 120, "containers": [qc],
            "volumes": [{"name": "endpoints", "configMap": {"name": names["query_sd"]}},
                        {"name": "tmp", "emptyDir": {}}, *tls_vols]}},
    }))
    out.append(_obj("v1", "Service", names["query"], ns, ql, tc, spec={"selector": dict(qsel), "ports": svc_ports}))
    if int(q.get("replicas", 1)) > 1:
        out.append(_obj("policy/v1", "PodDisruptionBudget", names["query"], ns, ql, tc, spec={
            "maxUnavailable": 1, "selector": {"matchLabels": dict(qsel)}}))

    if s.query_frontend.enabled:
        out += _query_frontend_objects(tc, defaults, image)
    if s.receiver.enabled:
        out += _receiver_objects(tc, defaults, image, ca_sha256, receive_pods, objstore_args, objstore_mounts,
                                 objstore_vols)
    if s.ruler.enabled:
        out += _ruler_objects(tc, defaults, image, ca_sha256, rule_shards, objstore_args, objstore_mounts,
                              objstore_vols)

    if s.objstore is None:
        return _detached(out)   # store gateway and compactor need a bucket

    # -- store gateway: one StatefulSet per (time partition, hash shard), one headless Service for discovery
    st = s.store
    sl = _labels("thanos-store", "object-store-gateway", LABEL_TC, s.name)
    ssel = _selector(sl, LABEL_TC)
    shards = max(1, int(st.get("shards", 1)))
    partitions = list(st.get("timePartitions") or [{}])
    out.append(_obj("v1", "Service", names["store"], ns, sl, tc, spec={
        "clusterIP": "None", "selector": dict(ssel), "ports": svc_ports}))
    for pi, part in enumerate(partitions):
        for si in range(shards):
            suffix = (f"-t{pi}" if len(partitions) > 1 else "") + (f"-{si}" if shards > 1 else "")
            name = names["store"] + suffix
            lbl = dict(sl)
            plbl = {"pythanos.io/store-shard": str(si), "pythanos.io/store-partition": str(pi)}
            lbl.update(plbl)
            args = ["store", f"--log.level={s.log_level}", f"--grpc-address=0.0.0.0:{GRPC_PORT}", f"--http-address=0.0.0.0:{HTTP_PORT}",
                    "--data-dir=/var/thanos/store", *objstore_args]
            if st.get("ignoreDeletionMarksDelay"):
                args.append(f"--ignore-deletion-marks-delay={st['ignoreDeletionMarksDelay']}")
            if part.get("minTime"):
                args.append(f"--min-time={part['minTime']}")
            if part.get("maxTime"):
                args.append(f"--max-time={part['maxTime']}")
            if shards > 1:
                relabel = [{"action": "hashmod", "source_labels": ["__block_id"], "target_label": "shard",
                            "modulus": shards},
                           {"action": "keep", "source_labels": ["shard"], "regex": str(si)}]
                args.append("--selector.relabel-config=" + yaml.safe_dump(relabel, default_flow_style=True,
                                                                            width=10_000).strip())
            args += server_tls_args
            args += [str(a) for a in st.get("extraArgs") or []]
            c = _thanos_container("thanos-store", image, pull, args, st.get("resources") or {},
                                  [{"name": "data", "mountPath": "/var/thanos/store"}, *objstore_mounts, *tls_mounts],
                                  ports)
            psel = {**ssel, **plbl}
            vols = [*objstore_vols, {"name": "tmp", "emptyDir": {}}, *tls_vols]
            sts_spec: dict[str, Any] = {
                "replicas": int(st.get("replicas", 1)),
                "serviceName": names["store"],
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": psel},
                "template": {"metadata": _pod_metadata(lbl, ca_sha256 if tls is not None and tls.client_auth
                                                       else None), "spec": {
                    "securityContext": dict(POD_SECURITY), "affinity": _soft_anti_affinity(psel),
                    "terminationGracePeriodSeconds": 120, "containers": [c], "volumes": vols}},
            }
            if st.get("storage"):   # a cache of index headers: emptyDir unless asked for
                sts_spec["volumeClaimTemplates"] = [{"metadata": {"name": "data"},
                                                     "spec": _pvc_spec(st.get("storage"), "10Gi")}]
            else:
                vols.append({"name": "data", "emptyDir": {}})
            out.append(_obj("apps/v1", "StatefulSet", name, ns, lbl, tc, spec=sts_spec))

    # -- compactor: a singleton per bucket (replicas capped at 1), with a PVC
    cp = s.compactor
    cl = _labels("thanos-compact", "database-compactor", LABEL_TC, s.name)
    csel = _selector(cl, LABEL_TC)
    ret = cp.get("retention") or {}
    c_args = ["compact", f"--log.level={s.log_level}", "--wait", f"--http-address=0.0.0.0:{HTTP_PORT}", "--data-dir=/var/thanos/compact",
              *objstore_args,
              f"--retention.resolution-raw={ret.get('raw', '0d')}",
              f"--retention.resolution-5m={ret.get('fiveMinutes', ret.get('5m', '0d'))}",
              f"--retention.resolution-1h={ret.get('oneHour', ret.get('1h', '0d'))}",
              "--compact.concurrency=1", "--delete-delay=48h"]
    if (cp.get("downsampling") or {}).get("enabled", True) is False:
        c_args.append("--downsampling.disable")
    dedup = cp.get("deduplication") or {}
    if dedup.get("enabled", True):
        labels = replica_labels(tc, members, "compactor")
        c_args += [f"--deduplication.replica-label={lbl}" for lbl in labels]
        # penalty deduplication without a replica label is a start-up error of the compactor (as in Thanos):
        # a cluster created before its members (or with none) gets the function once there is a label.
        if labels and dedup.get("func", "penalty"):
            c_args.append(f"--deduplication.func={dedup.get('func', 'penalty')}")
    c_args += [str(a) for a in cp.get("extraArgs") or []]
    cc = _thanos_container("thanos-compact", image, pull, c_args, cp.get("resources") or {},
                           [{"name": "data", "mountPath": "/var/thanos/compact"}, *objstore_mounts],
                           [{"name": "http", "containerPort": HTTP_PORT}])
    out.append(_obj("v1", "Service", names["compact"], ns, cl, tc, spec={
        "selector": dict(csel), "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http"}]}))
    out.append(_obj("apps/v1", "StatefulSet", names["compact"], ns, cl, tc, spec={
        "replicas": min(1, max(0, int(cp.get("replicas", 1)))),
        "serviceName": names["compact"],
        "selector": {"matchLabels": dict(csel)},
        "template": {"metadata": {"labels": dict(cl)}, "spec": {
            "securityContext": dict(POD_SECURITY), "terminationGracePeriodSeconds": 120,
            "containers": [cc], "volumes": [*objstore_vols, {"name": "tmp", "emptyDir": {}}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": _pvc_spec(cp.get("storage"), "10Gi")}],
    }))
    return _detached(out)


def _pvc_spec(storage: Any, default_size: str) -> dict[str, Any]:
    if isinstance(storage, Mapping) and isinstance(storage.get("volumeClaimTemplate"), Mapping):
        return dict(storage["volumeClaimTemplate"].get("spec") or {})
    size = storage.get("size") if isinstance(storage, Mapping) else None
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": size or default_size}}}
    if isinstance(storage, Mapping) and storage.get("storageClassName"):
        spec["storageClassName"] = storage["storageClassName"]
    return spec


# ---------------------------------------------------------------------------------------------- cross-object rules

def cluster_for(pha: Mapping[str, Any], clusters: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The ThanosCluster a PrometheusHA belongs to: its explicit reference, else the first (by name) whose
    member selector matches its labels; same namespace only."""
    s = pha_spec(pha)
    same_ns = sorted((c for c in clusters if namespace_of(c) == s.namespace), key=name_of)
    if s.cluster_name:
        return next((c for c in same_ns if name_of(c) == s.cluster_name), None)
    labels = meta(pha).get("labels") or {}
    return next((c for c in same_ns if labels_match(tc_spec(c).member_selector, labels)), None)


def cluster_key(pha: Mapping[str, Any], clusters: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(namespace, cluster name) of the cluster a PrometheusHA belongs to, including a named cluster that
    does not exist (yet): PrometheusHAs naming the same cluster share one label space."""
    c = cluster_for(pha, clusters)
    if c is not None:
        return namespace_of(c), name_of(c)
    s = pha_spec(pha)
    return (s.namespace, s.cluster_name) if s.cluster_name else None


def members_of(tc: Mapping[str, Any], phas: Iterable[Mapping[str, Any]],
               clusters: Iterable[Mapping[str, Any]] = ()) -> list[Mapping[str, Any]]:
    cl = list(clusters) or [tc]
    if not any(name_of(c) == name_of(tc) and namespace_of(c) == namespace_of(tc) for c in cl):
        cl.append(tc)
    key = (namespace_of(tc), name_of(tc))
    return sorted((p for p in phas if cluster_key(p, cl) == key), key=name_of)


def grpc_tls_mismatch(pha: Mapping[str, Any], cluster: Mapping[str, Any] | None) -> str | None:
    """Why the cluster's queriers could not talk to this member's sidecars, when the operator can tell.

    Only one way round can happen: sidecars with a ``sidecar.grpcTLS`` of their own serve TLS while the
    cluster has no ``grpcTLS`` (its queriers dial in plaintext). The other way is impossible by design: a
    member without its own setting inherits the cluster's. Whether two Secrets' CAs trust each other's
    certificates is not checked (that needs the certificates parsed)."""
    s = pha_spec(pha)
    if cluster is None or s.grpc_tls is None or tc_spec(cluster).grpc_tls is not None:
        return None
    return (f"the sidecars serve gRPC with TLS (spec.sidecar.grpcTLS, Secret {s.grpc_tls.secret_name}) but "
            f"ThanosCluster {name_of(cluster)} has no spec.grpcTLS, so its queriers dial them in plaintext and "
            "fail; set grpcTLS on the ThanosCluster (its members inherit it) or remove the sidecar's")


def _age_key(pha: Mapping[str, Any]) -> tuple[str, str]:
    # RFC 3339 UTC timestamps sort lexically; a missing one (not yet created) sorts last.
    return (meta(pha).get("creationTimestamp") or "9999", name_of(pha))


def external_label_conflicts(phas: Iterable[Mapping[str, Any]],
                             clusters: Iterable[Mapping[str, Any]] = ()) -> dict[tuple[str, str], str]:
    """Members of one ThanosCluster whose external label set (the replica label is never part of it)
    equals an earlier member's: ``{(namespace, name): name of the earlier one}``. The earliest
    (creationTimestamp, then name) keeps its labels; every later one conflicts."""
    clusters = list(clusters)
    seen: dict[tuple[Any, frozenset], Mapping[str, Any]] = {}
    out: dict[tuple[str, str], str] = {}
    for p in sorted(phas, key=_age_key):
        key = cluster_key(p, clusters)
        if key is None:
            continue
        s = pha_spec(p)
        labelset = frozenset((k, v) for k, v in s.external_labels.items() if k != s.replica_label)
        first = seen.setdefault((key, labelset), p)
        if first is not p:
            out[(namespace_of(p), name_of(p))] = name_of(first)
    return out
