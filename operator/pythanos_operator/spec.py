"""Typed, defaulted views of the custom resources' ``spec`` (the one place that knows field names).

The CRD schema applies the same defaults on the server; they are repeated here so the render functions
are total on un-defaulted input (unit tests, dry runs) and so a field rename touches one file.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping

GROUP = "pythanos.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PHA_KIND, PHA_PLURAL = "PrometheusHA", "prometheushas"
TC_KIND, TC_PLURAL = "ThanosCluster", "thanosclusters"

DEFAULT_REPLICA_LABEL = "replica"
DEFAULT_OBJSTORE_KEY = "objstore.yml"
DEFAULT_PROMETHEUS_VERSION = "v3.9.1"
DEFAULT_PROMETHEUS_IMAGE_REPO = "quay.io/prometheus/prometheus"
DEFAULT_RECEIVE_REPLICA_LABEL = "receive_replica"
DEFAULT_RULE_REPLICA_LABEL = "rule_replica"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
# kubernetes.io/tls Secret keys (cert-manager adds ca.crt)
DEFAULT_TLS_CERT_KEY, DEFAULT_TLS_KEY_KEY, DEFAULT_TLS_CA_KEY = "tls.crt", "tls.key", "ca.crt"


@dataclass(frozen=True)
class Defaults:
    """Operator-wide defaults (from the operator's flags/env, not from the CRs)."""
    component_image: str = "pythanos:0.1.0"
    prometheus_image_repo: str = DEFAULT_PROMETHEUS_IMAGE_REPO
    image_pull_policy: str = "IfNotPresent"
    # Receivers name themselves and each other by their pods' full DNS names (--receive.local-endpoint must
    # equal the hashring entry byte for byte), the one place that needs the cluster domain.
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


def _get(d: Mapping[str, Any] | None, *path: str, default: Any = None) -> Any:
    cur: Any = d
    for p in path:
        if not isinstance(cur, Mapping) or p not in cur or cur[p] is None:
            return default
        cur = cur[p]
    return cur


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def name_of(obj: Mapping[str, Any]) -> str:
    return meta(obj)["name"]


def namespace_of(obj: Mapping[str, Any]) -> str:
    return meta(obj).get("namespace") or "default"


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str = DEFAULT_OBJSTORE_KEY


def _secret_key_ref(d: Mapping[str, Any] | None, default_key: str = DEFAULT_OBJSTORE_KEY) -> SecretKeyRef | None:
    """Accepts ``{secretKeyRef: {name, key}}``, ``{secretRef: {name, key}}`` or ``{name, key}``."""
    if not isinstance(d, Mapping):
        return None
    ref = d.get("secretKeyRef") or d.get("secretRef") or (d if "name" in d else None)
    if not isinstance(ref, Mapping) or not ref.get("name"):
        return None
    return SecretKeyRef(name=ref["name"], key=ref.get("key") or default_key)


@dataclass(frozen=True)
class GRPCTLS:
    """gRPC TLS from one Secret (``ThanosCluster.spec.grpcTLS``, ``PrometheusHA.spec.sidecar.grpcTLS``).

    The same files serve both ends: a server presents ``cert``/``key`` and, with ``client_auth``, verifies
    clients against ``ca``; a querier presents ``cert``/``key`` when asked and verifies servers against ``ca``.
    """
    secret_name: str
    cert_key: str = DEFAULT_TLS_CERT_KEY
    key_key: str = DEFAULT_TLS_KEY_KEY
    ca_key: str = DEFAULT_TLS_CA_KEY
    server_name: str | None = None   # what queriers verify server certificates against (client side only)
    client_auth: bool = True         # servers require a client certificate signed by the CA (mutual TLS)


def _grpc_tls(d: Any) -> GRPCTLS | None:
    if not isinstance(d, Mapping) or not d.get("secretName"):
        return None
    return GRPCTLS(secret_name=str(d["secretName"]),
                   cert_key=str(d.get("certKey") or DEFAULT_TLS_CERT_KEY),
                   key_key=str(d.get("keyKey") or DEFAULT_TLS_KEY_KEY),
                   ca_key=str(d.get("caKey") or DEFAULT_TLS_CA_KEY),
                   server_name=str(d["serverName"]) if d.get("serverName") else None,
                   client_auth=bool(d.get("clientAuth", True)))


@dataclass(frozen=True)
class TLSSecretCheck:
    """What a gRPC TLS Secret offers: usable or not (and why), and the SHA-256 of its CA.

    ``state`` is what the operator remembers between reads: it changes when the Secret appears, vanishes,
    becomes (in)valid or gets another CA, the changes that need a reconcile. A new certificate or key alone
    does not change it: Thanos reloads those from the mounted files (pkg/tls: on every handshake when their
    modification time moved) but reads the CA once at start.
    """
    found: bool
    problem: str | None       # None: usable
    ca_sha256: str | None     # hex digest of the CA bytes when usable

    @property
    def ok(self) -> bool:
        return self.found and self.problem is None

    @property
    def state(self) -> str:
        if not self.found:
            return "missing"
        return f"ca:{self.ca_sha256}" if self.problem is None else f"invalid:{self.problem}"


_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


def check_tls_secret(secret: Mapping[str, Any] | None, tls: GRPCTLS) -> TLSSecretCheck:
    """Check a Secret (as the API server returns it, or None when absent) against a gRPC TLS reference:
    each key present with PEM of the right kind. Only this function sees the values; it returns no
    value, only the CA's digest."""
    if secret is None:
        return TLSSecretCheck(False, f"Secret {tls.secret_name} not found", None)
    data = secret.get("data") or {}
    values: dict[str, bytes] = {}
    for role, key in (("certificate", tls.cert_key), ("private key", tls.key_key), ("CA", tls.ca_key)):
        raw = data.get(key)
        if not raw:
            have = ", ".join(sorted(data)) or "none"
            return TLSSecretCheck(True, f"Secret {tls.secret_name} has no key {key} (the {role}; keys: {have})",
                                  None)
        try:
            values[key] = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return TLSSecretCheck(True, f"key {key} of Secret {tls.secret_name} is not base64", None)
    key_pem = values[tls.key_key]
    for key, ok, what in ((tls.cert_key, _PEM_CERT in values[tls.cert_key], "a PEM certificate"),
                          (tls.key_key, b"-----BEGIN " in key_pem and b"PRIVATE KEY-----" in key_pem,
                           "a PEM private key"),
                          (tls.ca_key, _PEM_CERT in values[tls.ca_key], "PEM CA certificates")):
        if not ok:
            return TLSSecretCheck(True, f"key {key} of Secret {tls.secret_name} is not {what}", None)
    return TLSSecretCheck(True, None, hashlib.sha256(values[tls.ca_key]).hexdigest())


@dataclass(frozen=True)
class ConfigRef:
    kind: str  # "Secret" | "ConfigMap"
    name: str
    key: str


@dataclass(frozen=True)
class RemoteWrite:
    """``PrometheusHA.spec.remoteWrite``: Prometheus remote-writes to its ThanosCluster's receivers instead of
    running a sidecar; ``tenant`` goes into the receivers' tenant header (None: their default tenant)."""
    tenant: str | None = None


def _remote_write(d: Any) -> RemoteWrite | None:
    if not isinstance(d, Mapping):
        return None
    return RemoteWrite(tenant=str(d["tenant"]) if d.get("tenant") else None)


@dataclass(frozen=True)
class PHASpec:
    name: str
    namespace: str
    replicas: int
    version: str
    image: str | None
    external_labels: dict[str, str]
    replica_label: str
    scrape_interval: str
    evaluation_interval: str
    scrape_configs: list[Any]
    scrape_config_ref: ConfigRef | None
    retention: str
    storage: dict[str, Any] | None   # a PVC spec (volumeClaimTemplate.spec) or None: emptyDir
    resources: dict[str, Any]
    sidecar_image: str | None
    log_level: str
    sidecar_log_level: str
    sidecar_resources: dict[str, Any]
    objstore_from_cluster: bool
    objstore: SecretKeyRef | None
    cluster_name: str | None
    cluster_selector_labels: dict[str, str] = field(default_factory=dict)
    grpc_tls: GRPCTLS | None = None   # the sidecar's own; absent: its ThanosCluster's (render.pha_grpc_tls)
    remote_write: RemoteWrite | None = None   # remote-write to its ThanosCluster's receivers (no sidecar)


def pha_spec(pha: Mapping[str, Any]) -> PHASpec:
    s = pha.get("spec") or {}
    sc = s.get("sidecar") or {}
    os_ = sc.get("objectStorage") or {}
    sref = _secret_key_ref(os_)
    from_cluster = bool(os_.get("fromCluster", sref is None))
    cfg_ref = None
    cfrom = s.get("scrapeConfigFrom") or _get(s, "scrapeConfig", "from") or {}
    if isinstance(cfrom, Mapping):
        if cfrom.get("secretKeyRef"):
            r = cfrom["secretKeyRef"]
            cfg_ref = ConfigRef("Secret", r["name"], r.get("key") or "scrape-configs.yaml")
        elif cfrom.get("configMapKeyRef"):
            r = cfrom["configMapKeyRef"]
            cfg_ref = ConfigRef("ConfigMap", r["name"], r.get("key") or "scrape-configs.yaml")
    scrape = s.get("scrapeConfigs")
    if scrape is None:
        scrape = _get(s, "scrapeConfig", "scrapeConfigs", default=[])
    storage = s.get("storage")
    pvc = None
    if isinstance(storage, Mapping):
        pvc = storage.get("volumeClaimTemplate", {}).get("spec") if storage.get("volumeClaimTemplate") else None
        if pvc is None:
            pvc = {"accessModes": ["ReadWriteOnce"],
                   "resources": {"requests": {"storage": str(storage.get("size") or "10Gi")}}}
            if storage.get("storageClassName"):
                pvc["storageClassName"] = storage["storageClassName"]
    cref = s.get("thanosCluster") or s.get("thanosClusterRef") or s.get("clusterRef")
    cluster_name = cref.get("name") if isinstance(cref, Mapping) else (cref if isinstance(cref, str) else None)
    return PHASpec(
        name=name_of(pha), namespace=namespace_of(pha),
        replicas=int(s.get("replicas", 2)),
        version=str(s.get("version") or DEFAULT_PROMETHEUS_VERSION),
        image=s.get("image"),
        external_labels={str(k): str(v) for k, v in (s.get("externalLabels") or {}).items()},
        replica_label=s.get("replicaExternalLabelName") or DEFAULT_REPLICA_LABEL,
        scrape_interval=s.get("scrapeInterval") or "15s",
        evaluation_interval=s.get("evaluationInterval") or "15s",
        scrape_configs=list(scrape or []),
        scrape_config_ref=cfg_ref,
        retention=s.get("retention") or "24h",
        storage=dict(pvc) if pvc else None,
        resources=dict(s.get("resources") or {}),
        sidecar_image=sc.get("image"),
        log_level=s.get("logLevel") or "info",
        sidecar_log_level=sc.get("logLevel") or "info",
        sidecar_resources=dict(sc.get("resources") or {}),
        objstore_from_cluster=from_cluster,
        objstore=sref,
        cluster_name=cluster_name,
        grpc_tls=_grpc_tls(sc.get("grpcTLS")),
        remote_write=_remote_write(s.get("remoteWrite")),
    )


@dataclass(frozen=True)
class ReceiverSpec:
    """``ThanosCluster.spec.receiver`` with the CRD's defaults."""
    enabled: bool = False
    replicas: int = 1
    replication_factor: int = 1
    tenant_label: str = "tenant_id"
    replica_label: str = DEFAULT_RECEIVE_REPLICA_LABEL
    external_labels: dict[str, str] = field(default_factory=dict)
    algorithm: str = "hashmod"
    retention: str | None = None
    storage: Any = None
    resources: dict[str, Any] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)


def receiver_spec(d: Mapping[str, Any] | None) -> ReceiverSpec:
    d = d or {}
    return ReceiverSpec(
        enabled=bool(d.get("enabled", False)),
        replicas=int(d.get("replicas", 1)),
        replication_factor=int(d.get("replicationFactor", 1)),
        tenant_label=str(d.get("tenantLabelName") or "tenant_id"),
        replica_label=str(d.get("replicaExternalLabelName") or DEFAULT_RECEIVE_REPLICA_LABEL),
        external_labels={str(k): str(v) for k, v in (d.get("externalLabels") or {}).items()},
        algorithm=str(d.get("hashringsAlgorithm") or "hashmod"),
        retention=str(d["retention"]) if d.get("retention") else None,
        storage=d.get("storage"),
        resources=dict(d.get("resources") or {}),
        extra_args=[str(a) for a in d.get("extraArgs") or []],
    )


@dataclass(frozen=True)
class RulerSpec:
    """``ThanosCluster.spec.ruler`` with the CRD's defaults. Rule files: the ConfigMaps named in
    ``rule_config_maps`` and those ``rule_selector`` selects, in the cluster's namespace."""
    enabled: bool = False
    replicas: int = 1
    evaluation_interval: str = "1m"
    alertmanagers: list[str] = field(default_factory=list)
    rule_config_maps: list[str] = field(default_factory=list)
    rule_selector: dict[str, Any] | None = None
    replica_label: str = DEFAULT_RULE_REPLICA_LABEL
    external_labels: dict[str, str] = field(default_factory=dict)
    retention: str | None = None
    storage: Any = None
    resources: dict[str, Any] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)


def ruler_spec(d: Mapping[str, Any] | None) -> RulerSpec:
    d = d or {}
    sel = d.get("ruleSelector")
    return RulerSpec(
        enabled=bool(d.get("enabled", False)),
        replicas=int(d.get("replicas", 1)),
        evaluation_interval=str(d.get("evaluationInterval") or "1m"),
        alertmanagers=[str(u) for u in d.get("alertmanagers") or []],
        rule_config_maps=[str(n) for n in d.get("ruleConfigMaps") or []],
        rule_selector=dict(sel) if isinstance(sel, Mapping) else None,
        replica_label=str(d.get("replicaExternalLabelName") or DEFAULT_RULE_REPLICA_LABEL),
        external_labels={str(k): str(v) for k, v in (d.get("externalLabels") or {}).items()},
        retention=str(d["retention"]) if d.get("retention") else None,
        storage=d.get("storage"),
        resources=dict(d.get("resources") or {}),
        extra_args=[str(a) for a in d.get("extraArgs") or []],
    )


FRONTEND_CACHE_TYPES = ("IN-MEMORY", "MEMCACHED", "REDIS", "NONE")


@dataclass(frozen=True)
class FrontendCacheSpec:
    """``ThanosCluster.spec.queryFrontend.cache``: the response cache of range queries and of label
    and series requests. ``config_ref``: a Secret key holding Thanos' whole cache configuration
    (credentials, TLS, tuning), used as is; otherwise built from ``type`` and the fields below."""
    type: str = "IN-MEMORY"
    max_size: str = "256MB"          # IN-MEMORY
    addresses: tuple[str, ...] = ()  # MEMCACHED: host:port or dnssrv+...; REDIS: the first is addr
    validity: str | None = None      # expiry of an entry (IN-MEMORY validity; MEMCACHED/REDIS expiration)
    config_ref: SecretKeyRef | None = None


@dataclass(frozen=True)
class QueryFrontendSpec:
    """``ThanosCluster.spec.queryFrontend`` with the CRD's defaults: ``pythanos query-frontend`` in
    front of the cluster's queriers."""
    enabled: bool = False
    replicas: int = 1
    split_interval: str = "24h"
    max_retries: int = 5
    max_query_parallelism: int = 14
    log_queries_longer_than: str | None = None
    compress_responses: bool = True
    cache: FrontendCacheSpec = field(default_factory=FrontendCacheSpec)
    resources: dict[str, Any] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)


def query_frontend_spec(d: Mapping[str, Any] | None) -> QueryFrontendSpec:
    d = d or {}
    c = d.get("cache") or {}
    return QueryFrontendSpec(
        enabled=bool(d.get("enabled", False)),
        replicas=int(d.get("replicas", 1)),
        split_interval=str(d.get("splitInterval") or "24h"),
        max_retries=int(d.get("maxRetriesPerRequest", 5)),
        max_query_parallelism=int(d.get("maxQueryParallelism", 14)),
        log_queries_longer_than=str(d["logQueriesLongerThan"]) if d.get("logQueriesLongerThan") else None,
        compress_responses=bool(d.get("compressResponses", True)),
        cache=FrontendCacheSpec(
            type=str(c.get("type") or "IN-MEMORY").upper(),
            max_size=str(c.get("maxSize") or "256MB"),
            addresses=tuple(str(a) for a in c.get("addresses") or ()),
            validity=str(c["validity"]) if c.get("validity") else None,
            config_ref=_secret_key_ref(c.get("configFrom"), "config.yaml")),
        resources=dict(d.get("resources") or {}),
        extra_args=[str(a) for a in d.get("extraArgs") or []],
    )


@dataclass(frozen=True)
class TCSpec:
    name: str
    namespace: str
    image: str | None
    log_level: str
    objstore: SecretKeyRef | None
    member_selector: dict[str, Any] | None
    querier: dict[str, Any]
    store: dict[str, Any]
    compactor: dict[str, Any]
    grpc_tls: GRPCTLS | None = None
    receiver: ReceiverSpec = field(default_factory=ReceiverSpec)
    ruler: RulerSpec = field(default_factory=RulerSpec)
    query_frontend: QueryFrontendSpec = field(default_factory=QueryFrontendSpec)


def tc_spec(tc: Mapping[str, Any]) -> TCSpec:
    s = tc.get("spec") or {}
    sel = s.get("prometheusHASelector") or s.get("memberSelector") or s.get("selector")
    return TCSpec(
        name=name_of(tc), namespace=namespace_of(tc),
        image=s.get("image"),
        log_level=s.get("logLevel") or "info",
        objstore=_secret_key_ref(s.get("objectStorage")),
        member_selector=dict(sel) if isinstance(sel, Mapping) else None,
        querier=dict(s.get("querier") or s.get("query") or {}),
        store=dict(s.get("storeGateway") or s.get("store") or {}),
        compactor=dict(s.get("compactor") or s.get("compact") or {}),
        grpc_tls=_grpc_tls(s.get("grpcTLS")),
        receiver=receiver_spec(s.get("receiver") or s.get("receive")),
        ruler=ruler_spec(s.get("ruler")),
        query_frontend=query_frontend_spec(s.get("queryFrontend")),
    )


def labels_match(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels + matchExpressions) against a label map; None/{} matches nothing."""
    if not selector:
        return False
    ml = selector.get("matchLabels") or {}
    me = selector.get("matchExpressions") or []
    if not ml and not me:
        return False
    for k, v in ml.items():
        if labels.get(k) != v:
            return False
    for e in me:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True
