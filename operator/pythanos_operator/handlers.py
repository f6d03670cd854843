"""kopf handlers: wiring only. Render (pure) -> apply (server-side apply, prune) -> status.

* PrometheusHA / ThanosCluster: one idempotent reconcile on resume/create/update. A PrometheusHA change also
  re-reconciles its ThanosCluster (endpoints, replica labels) and the other members (external-label conflicts
  may have cleared); a ThanosCluster change re-reconciles its members (object storage comes from it).
* Every child we manage (StatefulSet, Deployment, Service, ConfigMap, PodDisruptionBudget; selected by our
  managed-by label, owner found by its controller owner reference) is watched: a child deleted, or edited so
  that it no longer carries what the owner renders (:mod:`drift`: a scaled StatefulSet, a changed flag, an
  edited ConfigMap), re-runs the owner's reconcile at once, as prometheus-operator does. Our own applies cause
  no storm: their events show the rendered content (no drift), and re-applying unchanged objects is a
  no-op that does not bump ``resourceVersion`` (so it makes no event at all).
* StatefulSets/Deployments we manage: every other watch event refreshes the owner's ``status`` (Available,
  Ready), so status is level-triggered by the workloads without a per-object timer (a timer would put a
  finalizer on every custom resource, which wedges deletion when the operator is gone — e.g. under Argo CD
  app deletion).
* kopf indexes hold all PrometheusHAs, ThanosClusters and our workloads, so cross-object rules need no lists.
* Receiver pods (our labels, ``app.kubernetes.io/name=thanos-receive``; list/watch, never get) are indexed by
  ThanosCluster with their name, Ready condition and deletion mark: the input of the hashring ConfigMap the
  ThanosCluster's render writes (ready, wanted pods by ordinal, their stable DNS names under
  ``PYTHANOS_CLUSTER_DOMAIN``, default ``cluster.local``). A pod event that changes a cluster's ring re-runs
  that cluster's reconcile; others cost nothing. The ring's state is the ``Hashring`` condition
  (``HashringEmpty``, ``HashringBelowReplicationFactor``, ``ReplicationFactorTooHigh``: Warning Events).
  kopf does not retry event handlers: the resync thread below also re-applies any ring that is not the one
  last applied (a failed apply), every ``PYTHANOS_OPERATOR_SECRET_RESYNC`` seconds.
* The rulers' rule sources (:mod:`rulefiles`): ConfigMaps (all, as kopf indexes them: name, labels, a
  digest of each ``.yaml``/``.yml`` key) and PrometheusRules (``monitoring.coreos.com/v1``, indexed the same
  way, when their CRD exists as the operator starts). An event that changes the digest of a ThanosCluster's
  selected sources re-runs its reconcile, which reads the selected objects whole, checks each file with the
  ruler's loader (one that does not load is left out: condition ``RuleFiles``/``RuleFileInvalid`` and a
  Warning Event naming the object, key and message) and writes the rulers' ConfigMaps; the pods reload in
  place. Without the CRD nothing is watched and nothing complains; a CRD installed later is noticed by the
  resync thread below, which then lists the PrometheusRules of the namespaces with rulers every interval
  (kopf follows new CRDs only with scanning on, which needs cluster-wide CRD permissions).
* gRPC TLS Secrets (``grpcTLS``) are read by name at each reconcile (keys present and PEM; the CA's digest
  goes on the pods that read it) and re-read every ``PYTHANOS_OPERATOR_SECRET_RESYNC`` seconds (default 60;
  0 turns it off) by one operator thread (:mod:`tlswatch`): the operator may not watch Secrets, and a Secret
  created, broken or given a new CA must still reach its objects. The thread follows kopf's peering (it does
  nothing while a peer with a higher priority is alive).

Invalid references never crash anything: a missing ThanosCluster (``ThanosClusterNotFound``), object-storage
Secret (``ObjectStorageSecretMissing``), gRPC TLS Secret (``TLSSecretNotFound``; one lacking a key or with a
non-PEM value: ``TLSSecretInvalid``) or scrape-config object, an external-label clash
(``ExternalLabelsConflict``), TLS sidecars under plaintext queriers (``GRPCTLSMismatch``), a ``remoteWrite``
PrometheusHA without a cluster or under one without receivers (``ReceiverNotEnabled``) or an API error
(``ReconcileFailed``) becomes ``Ready=False`` with that reason, a Warning Event, no workload change, and (for
the object's own handler, when waiting can fix it) a kopf retry after ``PYTHANOS_OPERATOR_RETRY_DELAY``
seconds (default 30).

No handler writes ``spec``; no finalizer is added (children are garbage-collected through owner references).
"""
from __future__ import annotations

import contextvars
import copy
import datetime
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import kopf

from . import drift as drift_
from . import metrics
from . import render
from . import rulefiles
from . import status as st
from .kube import ApiError, Kube
from .spec import (GROUP, GRPCTLS, PHA_KIND, PHA_PLURAL, TC_KIND, TC_PLURAL, VERSION, Defaults, check_tls_secret,
                   name_of, namespace_of, pha_spec, tc_spec)
from .tlswatch import KopfHandles, SecretWatch, Seen, outranked

MANAGED = {"app.kubernetes.io/managed-by": render.MANAGED_BY}
PHA_CHILD_KINDS = ("StatefulSet", "PodDisruptionBudget", "Service", "ConfigMap")
TC_CHILD_KINDS = ("Deployment", "StatefulSet", "PodDisruptionBudget", "Service", "ConfigMap")
WORKLOAD_KINDS = ("StatefulSet", "Deployment")
RECEIVE_PODS = {**MANAGED, "app.kubernetes.io/name": render.RECEIVE_NAME}
PR_GROUP, PR_VERSION, PR_PLURAL = "monitoring.coreos.com", "v1", "prometheusrules"   # prometheus-operator's
RULE_CHECK = rulefiles.CachedCheck()   # one for the process: the verdicts on rule files seen before


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy({k: v for k, v in dict(body).items()})


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------- startup

def defaults_from_env() -> Defaults:
    d = Defaults()
    return Defaults(
        component_image=os.environ.get("PYTHANOS_COMPONENT_IMAGE") or d.component_image,
        prometheus_image_repo=os.environ.get("PYTHANOS_PROMETHEUS_IMAGE_REPO") or d.prometheus_image_repo,
        image_pull_policy=os.environ.get("PYTHANOS_IMAGE_PULL_POLICY") or d.image_pull_policy,
        cluster_domain=os.environ.get("PYTHANOS_CLUSTER_DOMAIN", d.cluster_domain),
    )


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    # Our own annotation prefix for kopf's bookkeeping; events only for warnings and failures.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="pythanos.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="pythanos.io", key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = int(os.environ.get("PYTHANOS_OPERATOR_WORKERS", "4"))
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    # Least privilege: no cluster-wide scanning of CRDs/namespaces (CRDs are installed before the operator).
    settings.scanning.disabled = os.environ.get("PYTHANOS_OPERATOR_SCANNING", "0") != "1"
    if getattr(memo, "kube", None) is None:
        memo.kube = Kube.from_environment()
    memo.defaults = defaults_from_env()
    memo.retry_delay = float(os.environ.get("PYTHANOS_OPERATOR_RETRY_DELAY", "30"))
    if getattr(memo, "peering", None):
        for obj in peering_objects(memo.peering, getattr(memo, "namespaces", None) or []):
            memo.kube.apply_any(obj)   # idempotent; kopf then finds it when peering starts
    # Set here, before kopf copies the memo for each object: every handler shares this one.
    memo.secret_watch = SecretWatch()
    memo.hashrings = {}   # (namespace, cluster) -> the hashrings file content last applied
    memo.rule_digests = {}   # (namespace, cluster) -> digest of the rulers' rule sources last applied
    memo.rule_builds = {}    # (namespace, cluster) -> (sources digest, rulefiles.RuleFiles) last built
    memo.polled_rules = {}   # namespace -> its PrometheusRules (slim), when kopf does not watch them
    # set by main() (:func:`watch_prometheus_rules`); else PrometheusRules are read by the resync thread
    memo.prometheus_rules_watched = bool(getattr(memo, "prometheus_rules_watched", False))
    interval = float(os.environ.get("PYTHANOS_OPERATOR_SECRET_RESYNC", "60"))
    if interval > 0:
        peering = None if settings.peering.standalone else (
            settings.peering.name, settings.peering.clusterwide, int(settings.peering.priority))
        threading.Thread(target=_secret_resync, args=(memo, interval, peering, logging.getLogger(__name__)),
                         name="tls-secret-resync", daemon=True).start()
    logger.info("pythanos-operator started (component image %s)", memo.defaults.component_image)


def watch_prometheus_rules(kube: Kube, namespaces: list[str], scanning: bool, logger: logging.Logger) -> bool:
    """Register kopf's PrometheusRule index and event handler when kopf can watch them: the CRD is served
    (or kopf follows CRDs: scanning on) and the operator may list them where it works. Called before kopf
    starts (kopf takes its handlers as it starts). Otherwise kopf never hears of PrometheusRules: without the
    CRD it would only warn, but a watch it may not list (RBAC older than the operator) stops kopf, as does the
    CRD's deletion while watched (the operator then restarts without it: a Deployment brings it back). Not
    watched, PrometheusRules are read by the resync thread (:func:`_resync_prometheus_rules`) once the CRD
    is there. Returns whether kopf watches them."""
    try:
        usable = (scanning or kube.served("PrometheusRule")) and all(
            kube.may_list("PrometheusRule", ns) for ns in (namespaces or [None]))
    except Exception as e:  # noqa: BLE001  (unknown now: the resync thread looks again)
        logger.warning("PrometheusRules: API discovery failed (%s); they are read every resync interval", e)
        usable = False
    if usable:
        kopf.index(PR_GROUP, PR_VERSION, PR_PLURAL)(prometheus_rule_idx)
        kopf.on.event(PR_GROUP, PR_VERSION, PR_PLURAL)(prometheus_rule_event)
        logger.info("PrometheusRules (monitoring.coreos.com/v1) are watched: rulers get their files too")
    else:
        logger.info("PrometheusRules (monitoring.coreos.com/v1) not watched (no CRD, or no permission to list "
                    "them): rulers get rule files from ConfigMaps, and from PrometheusRules read every resync "
                    "interval once there are some to read")
    return usable


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    watch = getattr(memo, "secret_watch", None)
    if watch is not None:
        watch.stopped.set()


def peering_objects(name: str, namespaces: list[str]) -> list[dict[str, Any]]:
    if not namespaces:
        return [{"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}]
    return [{"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": name, "namespace": ns}}
            for ns in namespaces]


@kopf.on.probe(id="kube")
def probe_kube(memo: kopf.Memo, **_: Any) -> bool:
    return getattr(memo, "kube", None) is not None


# ---------------------------------------------------------------------------------------------- indexes

@kopf.index(GROUP, VERSION, PHA_PLURAL)
def pha_idx(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, name): _plain(body)}


@kopf.index(GROUP, VERSION, TC_PLURAL)
def tc_idx(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, name): _plain(body)}


@kopf.index("apps", "v1", "statefulsets", labels=MANAGED)
def sts_idx(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, "StatefulSet", name): {"kind": "StatefulSet", "metadata": _plain(body["metadata"]),
                                               "spec": {"replicas": body.get("spec", {}).get("replicas", 1)},
                                               "status": _plain(body.get("status") or {})}}


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
def deploy_idx(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, "Deployment", name): {"kind": "Deployment", "metadata": _plain(body["metadata"]),
                                              "spec": {"replicas": body.get("spec", {}).get("replicas", 1)},
                                              "status": _plain(body.get("status") or {})}}


@kopf.index("v1", "pods", labels=RECEIVE_PODS)
def receive_pod_idx(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    """Receiver pods by (namespace, ThanosCluster): name, readiness and deletion only (the hashring's input)."""
    return {(namespace, (body.get("metadata", {}).get("labels") or {}).get(render.LABEL_TC)): _slim_pod(body)}


@kopf.index("v1", "configmaps")
def rule_cm_idx(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    """ConfigMaps by namespace, slim: name, labels and the digest of each rule-file key (a ruler's input;
    the contents stay in the API server and are read when a digest changes)."""
    if (body.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/managed-by") == render.MANAGED_BY:
        return {}
    return {namespace: rulefiles.slim_config_map(body)}


def prometheus_rule_idx(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    """PrometheusRules by namespace, slim (name, uid, labels, digest of the groups); registered with kopf by
    :func:`watch_prometheus_rules` only (without it, handlers get no such index)."""
    return {namespace: rulefiles.slim_prometheus_rule(body)}


def _slim_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    md = body.get("metadata") or {}
    ready = [dict(c) for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"]
    return {"metadata": {"name": md.get("name"), "namespace": md.get("namespace"),
                         "labels": {render.LABEL_TC: (md.get("labels") or {}).get(render.LABEL_TC)},
                         "deletionTimestamp": md.get("deletionTimestamp")},
            "status": {"conditions": ready}}


def _more(kwargs: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """The indexes a handler gets besides the four every one names: receiver pods, ConfigMaps,
    PrometheusRules (in :meth:`Ctx.build`'s order)."""
    return kwargs.get("receive_pod_idx"), kwargs.get("rule_cm_idx"), kwargs.get("prometheus_rule_idx")


def _values(index: Any) -> list[dict[str, Any]]:
    out = []
    for _key, store in (index or {}).items():
        out.extend(store)
    return out


# ---------------------------------------------------------------------------------------------- context

_locks: dict[tuple[str, str, str], threading.RLock] = {}
_locks_guard = threading.Lock()


def _lock(kind: str, ns: str, name: str) -> threading.RLock:
    """One object's lock: held by its whole reconcile and by its status writes (re-entrant: a reconcile
    writes status). It only ever guards that object, so holding it never waits for another one's."""
    with _locks_guard:
        return _locks.setdefault((kind, ns, name), threading.RLock())



def _by_name(objs: Iterable[Mapping[str, Any]], overrides: Mapping[tuple[str, str], Any],
             namespace: str) -> list[dict[str, Any]]:
    """``objs`` by name (a later one wins), then the namespace's ``overrides`` (the object of the event being
    handled as it is now; None: deleted); sorted by name."""
    out = {(v.get("metadata") or {}).get("name"): v for v in objs}
    for (ns, name), v in overrides.items():
        if ns == namespace:
            if v is None:
                out.pop(name, None)
            else:
                out[name] = v
    return [out[k] for k in sorted(out)]

@dataclass
class Ctx:
    kube: Kube
    defaults: Defaults
    phas: list[dict[str, Any]]
    tcs: list[dict[str, Any]]
    workload_indexes: tuple[Any, ...]   # kopf's live indexes: read at status time, never a stale snapshot
    logger: logging.Logger
    retry_delay: float = 30.0
    first_attempt: bool = True   # kopf's retry == 0: a retry re-reports an unchanged failure without an Event
    done: set = field(default_factory=set)
    secret_watch: SecretWatch = field(default_factory=SecretWatch)
    pod_index: Any = None        # kopf's live index of receiver pods
    pod_overrides: dict = field(default_factory=dict)   # (ns, name) -> the event's own pod (None: deleted)
    hashrings: dict = field(default_factory=dict)       # (ns, cluster) -> hashrings file last applied
    cm_index: Any = None         # kopf's live index of ConfigMaps (slim: labels, rule-file keys' digests)
    cm_overrides: dict = field(default_factory=dict)    # (ns, name) -> the event's own ConfigMap (None: deleted)
    rule_digests: dict = field(default_factory=dict)    # (ns, cluster) -> rule sources' digest last applied
    pr_index: Any = None         # kopf's live index of PrometheusRules (slim; empty without the CRD)
    pr_overrides: dict = field(default_factory=dict)    # (ns, name) -> the event's own PrometheusRule (None: deleted)
    polled_rules: dict = field(default_factory=dict)    # ns -> PrometheusRules read by the resync thread
    rule_builds: dict = field(default_factory=dict)     # (ns, cluster) -> (sources digest, RuleFiles) last built

    @classmethod
    def build(cls, memo: Any, logger: logging.Logger, pha_idx: Any, tc_idx: Any, sts_idx: Any,
              deploy_idx: Any, pod_idx: Any = None, cm_idx: Any = None, pr_idx: Any = None) -> "Ctx":
        watch = getattr(memo, "secret_watch", None) or SecretWatch()
        if watch.kopf is None:   # for reconciles the resync thread starts: kopf's indexes and Event poster
            watch.kopf = KopfHandles((pha_idx, tc_idx, sts_idx, deploy_idx, pod_idx, cm_idx, pr_idx),
                                     contextvars.copy_context())

        def shared(attr: str) -> dict:   # the memo's dict (kept across handlers), or a fresh one
            d = getattr(memo, attr, None)
            return d if d is not None else {}
        return cls(memo.kube, memo.defaults, _values(pha_idx), _values(tc_idx), (sts_idx, deploy_idx), logger,
                   getattr(memo, "retry_delay", 30.0), secret_watch=watch, pod_index=pod_idx,
                   hashrings=shared("hashrings"), cm_index=cm_idx, rule_digests=shared("rule_digests"),
                   pr_index=pr_idx, polled_rules=shared("polled_rules"), rule_builds=shared("rule_builds"))

    def receive_pods(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        """The cluster's receiver pods: kopf's index, with the pod of the event being handled as it is now."""
        pods = {}
        for v in (self.pod_index or {}).get((namespace, cluster)) or ():
            pods[(namespace, (v.get("metadata") or {}).get("name"))] = v
        for (ns, name), v in self.pod_overrides.items():
            if ns != namespace:
                continue
            if v is None:
                pods.pop((ns, name), None)
            elif ((v.get("metadata") or {}).get("labels") or {}).get(render.LABEL_TC) == cluster:
                pods[(ns, name)] = v
        return [pods[k] for k in sorted(pods)]

    def config_maps(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's ConfigMaps (slim): kopf's index, with the one of the event being handled as it is now."""
        return _by_name((self.cm_index or {}).get(namespace) or (), self.cm_overrides, namespace)

    def prometheus_rules(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's PrometheusRules (slim): kopf's index (or what the resync thread read when kopf does
        not watch them), with the one of the event being handled as it is now."""
        return _by_name([*(self.polled_rules.get(namespace) or ()), *((self.pr_index or {}).get(namespace) or ())],
                        self.pr_overrides, namespace)

    def rule_sources_digest(self, tc: Mapping[str, Any]) -> str:
        ns = namespace_of(tc)
        return rulefiles.sources_digest(tc, self.config_maps(ns), self.prometheus_rules(ns))

    def rule_files(self, tc: Mapping[str, Any]) -> tuple[str, rulefiles.RuleFiles]:
        """(digest of the sources, the rulers' files): the last build while the sources' digest (from the
        indexes) is unchanged, else a new one from the selected objects read whole from the API server."""
        ns, name = namespace_of(tc), name_of(tc)
        digest = self.rule_sources_digest(tc)
        cached = self.rule_builds.get((ns, name))
        if cached is not None and cached[0] == digest:
            return cached
        cms = [self.kube.get("ConfigMap", ns, name_of(c))
               for c in rulefiles.selected_config_maps(tc, self.config_maps(ns))]
        prs = [self.kube.get("PrometheusRule", ns, name_of(p))
               for p in rulefiles.selected_prometheus_rules(tc, self.prometheus_rules(ns))]
        cms, prs = [c for c in cms if c], [p for p in prs if p]
        built = rulefiles.build(tc, cms, prs, check=RULE_CHECK)
        digest = rulefiles.sources_digest(tc, [rulefiles.slim_config_map(c) for c in cms],
                                          [rulefiles.slim_prometheus_rule(p) for p in prs])
        self.rule_builds[(ns, name)] = (digest, built)
        return digest, built

    def workload(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        for idx in self.workload_indexes:
            store = (idx or {}).get((namespace, kind, name))
            for v in store or ():
                return v
        return None

    def with_current(self, kind: str, body: Mapping[str, Any]) -> None:
        """Make the handler's own (freshest) body the one the indexes hold."""
        lst = self.phas if kind == PHA_KIND else self.tcs
        key = (namespace_of(body), name_of(body))
        lst[:] = [b for b in lst if (namespace_of(b), name_of(b)) != key] + [_plain(body)]

    def cluster_of(self, pha: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The PrometheusHA's ThanosCluster. One it names that the index does not hold (yet) is looked up in
        the API server: kopf's index follows its own watch stream, so a cluster created a moment before its
        members (one ``kubectl apply`` of both) is often not in it when the members' handlers run."""
        tc = render.cluster_for(pha, self.tcs)
        name = pha_spec(pha).cluster_name
        if tc is None and name:
            live = self.kube.get(TC_KIND, namespace_of(pha), name)
            if live is not None and not live["metadata"].get("deletionTimestamp"):
                self.with_current(TC_KIND, live)
                tc = render.cluster_for(pha, self.tcs)
        return tc

    def live(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The object as the API server has it now (and so in this snapshot too), or None when it is gone,
        being deleted, or replaced by a new object of the same name (then it leaves the snapshot). kopf's
        index, and the snapshot of it a handler took when it started, can hold a ThanosCluster deleted
        meanwhile: a reconcile working from it would re-create children the garbage collector is removing
        and overwrite its members' ThanosClusterNotFound."""
        obj = self.kube.get(kind, namespace_of(body), name_of(body))
        md = (obj or {}).get("metadata") or {}
        if obj is None or md.get("deletionTimestamp") or md.get("uid") != (body.get("metadata") or {}).get("uid"):
            lst = self.phas if kind == PHA_KIND else self.tcs
            key = (namespace_of(body), name_of(body))
            lst[:] = [b for b in lst if (namespace_of(b), name_of(b)) != key]
            return None
        self.with_current(kind, obj)
        return obj

    def conflicts(self) -> dict[tuple[str, str], str]:
        return render.external_label_conflicts(self.phas, self.tcs)

    def accepted_members(self, tc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        bad = self.conflicts()
        return [m for m in render.members_of(tc, self.phas, self.tcs)
                if (namespace_of(m), name_of(m)) not in bad]


# ---------------------------------------------------------------------------------------------- status

def _expected_workloads(objs: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objs if o["kind"] in WORKLOAD_KINDS]


def status_extras(ctx: Ctx, kind: str, body: Mapping[str, Any], avail: st.Availability) -> dict[str, Any]:
    """The kind-specific status fields next to the conditions (printer columns, scale subresource)."""
    if kind == PHA_KIND:
        tc = render.cluster_for(body, ctx.tcs)
        sel = {"app.kubernetes.io/name": "prometheus", render.LABEL_PHA: name_of(body)}
        return {"replicas": avail.replicas, "readyReplicas": avail.ready, "availableReplicas": avail.ready,
                "selector": ",".join(f"{k}={v}" for k, v in sel.items()),
                "thanosCluster": name_of(tc) if tc is not None else None}
    members = ctx.accepted_members(body)
    out: dict[str, Any] = {"members": len(members), "replicaLabels": render.replica_labels(body, members, "querier")}
    r = tc_spec(body).receiver
    out["hashringEndpoints"] = len(render.hashring_endpoints(body, ctx.receive_pods(namespace_of(body), name_of(body)),
                                                             ctx.defaults)) if r.enabled else None
    return out


def _hashring_members(ctx: Ctx, tc: Mapping[str, Any]) -> list[int]:
    return render.hashring_members(tc, ctx.receive_pods(namespace_of(tc), name_of(tc)))


def hashring_cond(ctx: Ctx, tc: Mapping[str, Any]) -> st.Cond | None:
    """The Hashring condition of a ThanosCluster with receivers (None without)."""
    r = tc_spec(tc).receiver
    if not r.enabled:
        return None
    return st.hashring_condition(r.replicas, r.replication_factor, len(_hashring_members(ctx, tc)))


def rule_files_cond(ctx: Ctx, tc: Mapping[str, Any]) -> st.Cond | None:
    """The RuleFiles condition of a ThanosCluster with rulers, from its last build of their files (None
    without rulers, or when no build is known yet)."""
    built = ctx.rule_builds.get((namespace_of(tc), name_of(tc))) if tc_spec(tc).ruler.enabled else None
    if built is None:
        return None
    rf = built[1]
    if rf.problems:
        return st.Cond("False", st.RULE_FILE_INVALID, rulefiles.summary(rf))
    return st.Cond("True", st.RULE_FILES_LOADED, rulefiles.summary(rf))


def _warn_on_change(ctx: Ctx, kind: str, body: Mapping[str, Any], prev: list, ctype: str,
                    new: st.Cond | None, same: Any) -> bool:
    """A Warning Event when an optional condition turns False, or stays False for another reason
    (``same``: what of the condition counts as "the same"); whether it was posted."""
    old = st.cond_of(prev, ctype)
    if new is None or new.status == "True" or (old is not None and same(old) == same(new)):
        return False
    ctx.logger.warning("%s %s/%s: %s: %s", kind, namespace_of(body), name_of(body), new.reason, new.message)
    kopf.warn(body, reason=new.reason, message=new.message)
    return True


def _warn_rule_sources(ctx: Ctx, tc: Mapping[str, Any]) -> None:
    """The same news on each object whose file was left out (``kubectl describe`` of a ConfigMap or
    PrometheusRule shows it, as prometheus-operator's Event on a rejected PrometheusRule does)."""
    built = ctx.rule_builds.get((namespace_of(tc), name_of(tc)))
    for p in built[1].problems if built is not None else ():
        if (p.ref.get("metadata") or {}).get("uid"):
            kopf.warn(p.ref, reason=st.RULE_FILE_INVALID,
                      message=f"left out of the rule files of ThanosCluster {name_of(tc)}: {p}")


def _newest(indexed: Mapping[str, Any] | None, applied: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The workload as the index holds it, unless the apply just made a newer generation than the index has
    seen yet (its watch event is still on the way): then the apply's answer (a scaled StatefulSet must not
    count as ready with its old number of replicas)."""
    if applied is None or indexed is None:
        return indexed or applied
    gen = lambda w: int((w.get("metadata") or {}).get("generation") or 0)  # noqa: E731
    return applied if gen(applied) > gen(indexed) else indexed


def write_status(ctx: Ctx, kind: str, body: Mapping[str, Any], reconciled: st.Cond | None,
                 expected: list[tuple[str, str]], applied: Iterable[Mapping[str, Any]] = ()) -> bool:
    """Recompute Available/Ready (and Reconciled when given) and patch ``status``; returns whether the
    Reconciled condition changed (callers post an Event for a new failure). ``applied``: the workloads as
    this reconcile's apply returned them."""
    ns, name = namespace_of(body), name_of(body)
    with _lock(kind, ns, name):
        live = ctx.kube.get(kind, ns, name)
        if live is None or live["metadata"].get("deletionTimestamp"):
            return False
        if live["metadata"].get("uid") != (body.get("metadata") or {}).get("uid"):
            return False   # a newer object of the same name: its own handler reports
        prev_status = live.get("status") or {}
        prev = prev_status.get("conditions") or []
        old_rec = st.cond_of(prev, st.RECONCILED)
        if reconciled is not None:
            generation = (body.get("metadata") or {}).get("generation")
        else:
            reconciled = old_rec or st.Cond("Unknown", "Pending", "not reconciled yet")
            generation = prev_status.get("observedGeneration")
        fresh = {(w.get("kind"), (w.get("metadata") or {}).get("name")): w for w in applied}
        live_wl = [w for w in (_newest(ctx.workload(ns, k, n), fresh.get((k, n))) for k, n in expected)
                   if w is not None]
        avail = st.availability(expected, live_wl)
        hashring = hashring_cond(ctx, live) if kind == TC_KIND and reconciled.status == "True" else None
        ready = st.ready_from(reconciled, avail.cond, hashring)
        new_conds = {st.READY: ready, st.RECONCILED: reconciled, st.AVAILABLE: avail.cond}
        if hashring is not None:
            new_conds[st.HASHRING] = hashring
        elif kind == TC_KIND and tc_spec(live).receiver.enabled:   # not reconciled: keep what was known
            old_h = st.cond_of(prev, st.HASHRING)
            if old_h is not None:
                new_conds[st.HASHRING] = old_h
        rules = rule_files_cond(ctx, live) if kind == TC_KIND else None
        if rules is None and kind == TC_KIND and tc_spec(live).ruler.enabled:   # no build yet: keep what was known
            rules = st.cond_of(prev, st.RULE_FILES)
        if rules is not None:
            new_conds[st.RULE_FILES] = rules
        conds = st.merge_conditions(prev, generation, new_conds, _now())
        new = {"conditions": conds, **status_extras(ctx, kind, body, avail)}
        if generation is not None:
            new["observedGeneration"] = int(generation)
        if all(prev_status.get(k) == v for k, v in new.items()):
            return False
        ctx.kube.patch_status(kind, ns, name, new)
        metrics.set_ready(kind, ns, name, ready.status == "True")
        _warn_on_change(ctx, kind, body, prev, st.HASHRING, hashring, lambda c: (c.status, c.reason))
        if _warn_on_change(ctx, kind, body, prev, st.RULE_FILES, rules,
                           lambda c: (c.status, c.reason, c.message.partition("; left out")[2])):
            _warn_rule_sources(ctx, live)
        return old_rec != reconciled


def _report_failure(ctx: Ctx, kind: str, body: Mapping[str, Any], cond: st.Cond, expected: list, own: bool) -> None:
    changed = write_status(ctx, kind, body, cond, expected)
    ctx.logger.warning("%s %s/%s: %s: %s", kind, namespace_of(body), name_of(body), cond.reason, cond.message)
    metrics.failure(kind, cond.reason)
    if (own and ctx.first_attempt) or changed:
        kopf.warn(body, reason=cond.reason, message=cond.message)


# ---------------------------------------------------------------------------------------------- reconcile

def _secret_missing(ctx: Ctx, ns: str, ref: Any) -> bool:
    return ref is not None and not ctx.kube.exists("Secret", ns, ref.name)


def _tls_usable(ctx: Ctx, kind: str, body: Mapping[str, Any], tls: GRPCTLS | None, expected: list,
                own: bool, what: str) -> tuple[bool, str | None]:
    """Check the object's gRPC TLS Secret (read by name; only key names and the CA's digest are kept) and
    remember what was seen for the resync thread. Returns (usable, CA digest); an unusable Secret is
    reported (``TLSSecretNotFound`` / ``TLSSecretInvalid``, workloads left unchanged) and, for the
    object's own handler, retried by kopf."""
    ns, name = namespace_of(body), name_of(body)
    if tls is None:
        ctx.secret_watch.forget(kind, ns, name)
        return True, None
    check = check_tls_secret(ctx.kube.get("Secret", ns, tls.secret_name), tls)
    ctx.secret_watch.record(kind, ns, name, str((body.get("metadata") or {}).get("uid") or ""), tls,
                            check.state, check.ca_sha256)
    if check.ok:
        return True, check.ca_sha256
    reason = st.TLS_SECRET_INVALID if check.found else st.TLS_SECRET_NOT_FOUND
    cond = st.Cond("False", reason, f"gRPC TLS ({what}): {check.problem} in namespace {ns}; "
                                    "workloads left unchanged")
    _report_failure(ctx, kind, body, cond, expected, own)
    if own:
        raise kopf.TemporaryError(cond.message, delay=ctx.retry_delay)
    return False, None


def _going_away(ctx: Ctx, kind: str, body: Mapping[str, Any], e: ApiError) -> bool:
    """The object or its namespace is being deleted: nothing to report (and nowhere to report it)."""
    if e.status == 403 and "being terminated" in str(e):
        return True
    return e.status == 404 and ctx.kube.get(kind, namespace_of(body), name_of(body)) is None


def _guarded(kind: str, fn: Any) -> Any:
    """Any unexpected error of a reconcile becomes Reconciled=False/ReconcileFailed + an Event (and a kopf
    retry for the object's own handler): an error is a value on the object, never an operator crash.

    One reconcile of an object at a time (its lock), and each one starts by reading what it depends on from
    the API server (:meth:`Ctx.live`): a reconcile that started from a stale view (a member's handler still
    re-reconciling its peers when their ThanosCluster is deleted) cannot finish after, and overwrite, the
    one that saw the deletion."""
    def run(ctx: Ctx, body: Mapping[str, Any], own: bool) -> None:
        with _lock(kind, namespace_of(body), name_of(body)):
            _run(ctx, body, own)

    def _run(ctx: Ctx, body: Mapping[str, Any], own: bool) -> None:
        try:
            fn(ctx, body, own)
        except kopf.TemporaryError:
            raise
        except Exception as e:  # noqa: BLE001
            if isinstance(e, ApiError) and _going_away(ctx, kind, body, e):
                ctx.logger.info("%s %s/%s is going away: %s", kind, namespace_of(body), name_of(body), e)
                return
            ctx.logger.exception("reconcile of %s %s/%s failed", kind, namespace_of(body), name_of(body))
            cond = st.Cond("False", st.RECONCILE_FAILED, f"{type(e).__name__}: {e}")
            try:
                _report_failure(ctx, kind, body, cond, [], own)
            except Exception:  # noqa: BLE001  (the API server itself may be what fails)
                pass
            if own:
                raise kopf.TemporaryError(cond.message, delay=ctx.retry_delay) from e
    run.__name__ = fn.__name__
    return run


def _reconcile_pha(ctx: Ctx, pha: Mapping[str, Any], own: bool) -> None:
    ns, name = namespace_of(pha), name_of(pha)
    if ("PHA", ns, name) in ctx.done:
        return
    ctx.done.add(("PHA", ns, name))
    t0 = time.monotonic()
    live = ctx.live(PHA_KIND, pha)
    if live is None:   # deleted since this body was read
        return
    pha = live
    s = pha_spec(pha)
    tc = ctx.cluster_of(pha)
    if tc is not None:   # as it is now (None: gone since the index saw it; then look again)
        tc = ctx.live(TC_KIND, tc) or ctx.cluster_of(pha)
    expected = _expected_workloads(render.render_prometheus_ha(pha, tc, ctx.defaults))

    if s.cluster_name and tc is None:
        cond = st.Cond("False", st.THANOS_CLUSTER_NOT_FOUND,
                       f"ThanosCluster {ns}/{s.cluster_name} (spec.thanosClusterRef) not found; workload left "
                       "unchanged until it exists")
        _report_failure(ctx, PHA_KIND, pha, cond, expected, own)
        if own:
            raise kopf.TemporaryError(cond.message, delay=ctx.retry_delay)
        return

    refused = remote_write_refusal(pha, tc)
    if refused is not None:   # fixed by a change of this object or of a ThanosCluster (whose handler re-runs ours)
        _report_failure(ctx, PHA_KIND, pha, refused, expected, own)
        return

    other = ctx.conflicts().get((ns, name))
    if other is not None:
        labels = ",".join(f"{k}={v!r}" for k, v in sorted(s.external_labels.items()))
        cluster = name_of(tc) if tc is not None else s.cluster_name
        cond = st.Cond("False", st.EXTERNAL_LABELS_CONFLICT,
                       f"external labels {{{labels}}} equal those of PrometheusHA {ns}/{other} (ThanosCluster "
                       f"{cluster}); workload left unchanged until the labels are unique")
        _report_failure(ctx, PHA_KIND, pha, cond, expected, own)
        return

    mismatch = render.grpc_tls_mismatch(pha, tc)
    if mismatch is not None:   # fixed by a spec change (this object's or the cluster's): no retry needed
        ctx.secret_watch.forget(PHA_KIND, ns, name)
        cond = st.Cond("False", st.GRPC_TLS_MISMATCH, f"{mismatch}; workload left unchanged")
        _report_failure(ctx, PHA_KIND, pha, cond, expected, own)
        return

    ref = render.pha_objstore(s, tc)
    if _secret_missing(ctx, ns, ref):
        cond = st.Cond("False", st.OBJECT_STORAGE_SECRET_MISSING,
                       f"object storage Secret {ns}/{ref.name} not found (key {ref.key}); workload left unchanged")
        _report_failure(ctx, PHA_KIND, pha, cond, expected, own)
        if own:
            raise kopf.TemporaryError(cond.message, delay=ctx.retry_delay)
        return
    tls = render.pha_grpc_tls(s, tc)
    usable, ca_sha256 = _tls_usable(ctx, PHA_KIND, pha, tls, expected, own,
                                    "spec.sidecar.grpcTLS" if s.grpc_tls is not None
                                    else f"spec.grpcTLS of ThanosCluster {name_of(tc) if tc else ''}")
    if not usable:
        return
    cref = s.scrape_config_ref
    if cref is not None and not ctx.kube.exists(cref.kind, ns, cref.name):
        cond = st.Cond("False", st.RECONCILE_FAILED, f"scrape config {cref.kind} {ns}/{cref.name} not found")
        _report_failure(ctx, PHA_KIND, pha, cond, expected, own)
        if own:
            raise kopf.TemporaryError(cond.message, delay=ctx.retry_delay)
        return
    objs = render.render_prometheus_ha(pha, tc, ctx.defaults, ca_sha256=ca_sha256)
    _apply(ctx, PHA_KIND, pha, objs, PHA_CHILD_KINDS,
           f"{render.LABEL_PHA}={name},app.kubernetes.io/managed-by={render.MANAGED_BY}", expected, own)
    metrics.observe(PHA_KIND, time.monotonic() - t0)


def remote_write_refusal(pha: Mapping[str, Any], tc: Mapping[str, Any] | None) -> st.Cond | None:
    """Why a PrometheusHA with ``remoteWrite`` cannot be rendered (no ThanosCluster, or one without
    receivers), or None. Its workload is left as it was: a Prometheus writing to a Service that does not
    exist would only queue up samples."""
    if pha_spec(pha).remote_write is None:
        return None
    if tc is None:
        return st.Cond("False", st.THANOS_CLUSTER_NOT_FOUND,
                       "spec.remoteWrite sends to the receivers of this PrometheusHA's ThanosCluster, and it has "
                       "none (spec.thanosClusterRef, or a ThanosCluster's prometheusHASelector); workload left "
                       "unchanged")
    if not tc_spec(tc).receiver.enabled:
        return st.Cond("False", st.RECEIVER_NOT_ENABLED,
                       f"spec.remoteWrite: ThanosCluster {name_of(tc)} runs no receivers (spec.receiver.enabled is "
                       "false); workload left unchanged")
    return None


def _reconcile_tc(ctx: Ctx, tc: Mapping[str, Any], own: bool) -> None:
    ns, name = namespace_of(tc), name_of(tc)
    if ("TC", ns, name) in ctx.done:
        return
    ctx.done.add(("TC", ns, name))
    t0 = time.monotonic()
    live = ctx.live(TC_KIND, tc)
    if live is None:   # deleted since this body was read: its children are the garbage collector's
        return
    tc = live
    s = tc_spec(tc)
    members = ctx.accepted_members(tc)
    expected = _expected_workloads(render.render_thanos_cluster(tc, members, ctx.defaults))
    if _secret_missing(ctx, ns, s.objstore):
        cond = st.Cond("False", st.OBJECT_STORAGE_SECRET_MISSING,
                       f"object storage Secret {ns}/{s.objstore.name} not found (key {s.objstore.key}); "
                       "workloads left unchanged")
        _report_failure(ctx, TC_KIND, tc, cond, expected, own)
        if own:
            raise kopf.TemporaryError(cond.message, delay=ctx.retry_delay)
        return
    usable, ca_sha256 = _tls_usable(ctx, TC_KIND, tc, s.grpc_tls, expected, own, "spec.grpcTLS")
    if not usable:
        return
    digest, rules = ctx.rule_files(tc) if s.ruler.enabled else (None, None)
    objs = render.render_thanos_cluster(tc, members, ctx.defaults, ca_sha256=ca_sha256,
                                        receive_pods=ctx.receive_pods(ns, name),
                                        rule_shards=rules.shards if rules is not None else ())
    ctx.rule_digests.pop((ns, name), None)
    ring = next((o["data"][render.HASHRING_KEY] for o in objs if o["kind"] == "ConfigMap"
                 and o["metadata"]["name"] == render.tc_names(name)["hashring"]), None)
    ctx.hashrings.pop((ns, name), None)   # unknown until this apply has succeeded
    applied = _apply(ctx, TC_KIND, tc, objs, TC_CHILD_KINDS,
                     f"{render.LABEL_TC}={name},!{render.LABEL_PHA},app.kubernetes.io/managed-by={render.MANAGED_BY}",
                     expected, own)
    if applied and rules is not None:
        ctx.rule_digests[(ns, name)] = digest
        metrics.rule_files_applied(ns, name, rules.files, len(rules.problems))
    if applied and ring is not None:
        ctx.hashrings[(ns, name)] = ring
        metrics.hashring_applied(ns, name, sum(len(h["endpoints"]) for h in json.loads(ring)))
    metrics.observe(TC_KIND, time.monotonic() - t0)


reconcile_pha = _guarded(PHA_KIND, _reconcile_pha)
reconcile_tc = _guarded(TC_KIND, _reconcile_tc)


def _apply(ctx: Ctx, kind: str, owner: Mapping[str, Any], objs: list[dict[str, Any]], child_kinds: Iterable[str],
           selector: str, expected: list, own: bool) -> bool:
    """Apply and prune, then write status; whether everything was applied."""
    ns = namespace_of(owner)
    applied = []
    try:
        for o in objs:
            live, recreated = ctx.kube.apply_recreating(o)
            if o["kind"] in WORKLOAD_KINDS and live:
                applied.append(live)
            if recreated:
                ctx.logger.info("recreated %s %s/%s (immutable fields changed; pods orphaned and re-adopted)",
                                o["kind"], ns, o["metadata"]["name"])
        gone = ctx.kube.prune(child_kinds, ns, selector, (owner.get("metadata") or {}).get("uid"),
                              {(o["kind"], o["metadata"]["name"]) for o in objs})
        for k, n in gone:
            ctx.logger.info("pruned %s %s/%s", k, ns, n)
    except ApiError as e:
        if _going_away(ctx, kind, owner, e):
            ctx.logger.info("%s %s/%s is going away: %s", kind, ns, name_of(owner), e)
            return False
        cond = st.Cond("False", st.RECONCILE_FAILED, str(e))
        _report_failure(ctx, kind, owner, cond, expected, own)
        if own:
            raise kopf.TemporaryError(str(e), delay=ctx.retry_delay)
        return False
    ctx.logger.info("%s %s/%s: applied %d objects", kind, ns, name_of(owner), len(objs))
    write_status(ctx, kind, owner, st.Cond("True", st.RECONCILE_SUCCEEDED,
                                           f"applied {len(objs)} objects"), expected, applied)
    metrics.success(kind)
    return True


def _others(ctx: Ctx, fn: Any, bodies: Iterable[Mapping[str, Any]]) -> None:
    """Re-reconcile related objects; their failures are reported on them, never raised here."""
    for b in bodies:
        try:
            fn(ctx, b, own=False)
        except Exception as e:   # noqa: BLE001  (an error value on the other object, not a crash here)
            ctx.logger.warning("reconcile of %s/%s failed: %s", namespace_of(b), name_of(b), e)


def _peers_and_cluster(ctx: Ctx, pha: Mapping[str, Any], cluster_key: tuple[str, str] | None) -> None:
    if cluster_key is None:
        return
    ns, cname = cluster_key
    peers = [p for p in ctx.phas if render.cluster_key(p, ctx.tcs) == cluster_key
             and (namespace_of(p), name_of(p)) != (namespace_of(pha), name_of(pha))]
    _others(ctx, reconcile_pha, sorted(peers, key=name_of))
    _others(ctx, reconcile_tc, [t for t in ctx.tcs if (namespace_of(t), name_of(t)) == (ns, cname)])


@kopf.on.resume(GROUP, VERSION, PHA_PLURAL)
@kopf.on.create(GROUP, VERSION, PHA_PLURAL)
@kopf.on.update(GROUP, VERSION, PHA_PLURAL)
def pha_reconcile(body: kopf.Body, old: Any, retry: int, memo: kopf.Memo, logger: logging.Logger,
                  pha_idx: kopf.Index, tc_idx: kopf.Index, sts_idx: kopf.Index, deploy_idx: kopf.Index,
                  **_: Any) -> None:
    ctx = Ctx.build(memo, logger, pha_idx, tc_idx, sts_idx, deploy_idx, *_more(_))
    ctx.first_attempt = retry == 0
    ctx.with_current(PHA_KIND, body)
    keys = {render.cluster_key(body, ctx.tcs)}
    if old:   # it may have left a cluster (reference or labels changed): that one re-renders too
        before = _plain(body)
        before["spec"] = copy.deepcopy(dict(old.get("spec") or {}))
        before["metadata"]["labels"] = dict((old.get("metadata") or {}).get("labels") or {})
        keys.add(render.cluster_key(before, ctx.tcs))
    try:
        reconcile_pha(ctx, body, own=True)
    finally:
        for key in sorted(k for k in keys if k):
            _peers_and_cluster(ctx, body, key)


@kopf.on.resume(GROUP, VERSION, TC_PLURAL)
@kopf.on.create(GROUP, VERSION, TC_PLURAL)
@kopf.on.update(GROUP, VERSION, TC_PLURAL)
def tc_reconcile(body: kopf.Body, retry: int, memo: kopf.Memo, logger: logging.Logger, pha_idx: kopf.Index,
                 tc_idx: kopf.Index, sts_idx: kopf.Index, deploy_idx: kopf.Index, **_: Any) -> None:
    ctx = Ctx.build(memo, logger, pha_idx, tc_idx, sts_idx, deploy_idx, *_more(_))
    ctx.first_attempt = retry == 0
    ctx.with_current(TC_KIND, body)
    try:
        reconcile_tc(ctx, body, own=True)
    finally:
        _others(ctx, reconcile_pha, render.members_of(body, ctx.phas, ctx.tcs))


@kopf.on.event(GROUP, VERSION, PHA_PLURAL)
def pha_deleted(type: str, body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, pha_idx: kopf.Index,
                tc_idx: kopf.Index, sts_idx: kopf.Index, deploy_idx: kopf.Index, **_: Any) -> None:
    if type != "DELETED":
        return
    ctx = Ctx.build(memo, logger, pha_idx, tc_idx, sts_idx, deploy_idx, *_more(_))
    key = (namespace_of(body), name_of(body))
    ctx.secret_watch.forget(PHA_KIND, *key)
    ctx.phas = [p for p in ctx.phas if (namespace_of(p), name_of(p)) != key]
    _peers_and_cluster(ctx, body, render.cluster_key(body, ctx.tcs))


@kopf.on.event(GROUP, VERSION, TC_PLURAL)
def tc_deleted(type: str, body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, pha_idx: kopf.Index,
               tc_idx: kopf.Index, sts_idx: kopf.Index, deploy_idx: kopf.Index, **_: Any) -> None:
    if type != "DELETED":
        return
    ctx = Ctx.build(memo, logger, pha_idx, tc_idx, sts_idx, deploy_idx, *_more(_))
    key = (namespace_of(body), name_of(body))
    ctx.secret_watch.forget(TC_KIND, *key)
    ctx.tcs = [t for t in ctx.tcs if (namespace_of(t), name_of(t)) != key]
    ctx.rule_builds.pop(key, None)
    ctx.rule_digests.pop(key, None)
    former = [p for p in ctx.phas if render.cluster_key(p, [*ctx.tcs, _plain(body)]) == key]
    _others(ctx, reconcile_pha, former)


def _rendered(ctx: Ctx, owner_kind: str, owner: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What the owner's reconcile would apply (the same inputs: its cluster, the accepted members, the CA
    digest its last reconcile read)."""
    ca = ctx.secret_watch.ca_sha256(owner_kind, namespace_of(owner), name_of(owner))
    if owner_kind == PHA_KIND:
        return render.render_prometheus_ha(owner, ctx.cluster_of(owner), ctx.defaults, ca_sha256=ca)
    rules = ctx.rule_files(owner)[1] if tc_spec(owner).ruler.enabled else None
    return render.render_thanos_cluster(owner, ctx.accepted_members(owner), ctx.defaults, ca_sha256=ca,
                                        receive_pods=ctx.receive_pods(namespace_of(owner), name_of(owner)),
                                        rule_shards=rules.shards if rules is not None else ())


def _child_event(kind: str, event_type: str | None, body: kopf.Body, memo: kopf.Memo, logger: logging.Logger,
                 pha_idx: Any, tc_idx: Any, sts_idx: Any, deploy_idx: Any, pod_idx: Any = None,
                 cm_idx: Any = None, pr_idx: Any = None) -> None:
    """One watch event of a child we manage: repair drift (re-run the owner's reconcile), else refresh the
    owner's status from its workloads."""
    md = body.get("metadata") or {}
    ref = drift_.controller_of(body)
    if ref is None:
        return
    owner_kind, owner_name, owner_uid = ref
    ns, name = md.get("namespace"), md.get("name")
    ctx = Ctx.build(memo, logger, pha_idx, tc_idx, sts_idx, deploy_idx, pod_idx, cm_idx, pr_idx)
    owners = ctx.phas if owner_kind == PHA_KIND else ctx.tcs
    owner = next((o for o in owners if (namespace_of(o), name_of(o)) == (ns, owner_name)), None)
    if owner is None or (owner.get("metadata") or {}).get("uid") != owner_uid:
        return   # an owner we do not know (yet), or a child of a former object of that name
    if (owner.get("metadata") or {}).get("deletionTimestamp"):
        return
    try:
        objs = _rendered(ctx, owner_kind, owner)
        want = next((o for o in objs if (o["kind"], o["metadata"]["name"]) == (kind, name)), None)
        why = None
        if want is not None and _applies(ctx, owner_kind, owner):   # not rendered (any more): prune's business
            why = "deleted" if event_type == "DELETED" else drift_.drift(want, _plain(body))
        if why:
            _repair(ctx, owner_kind, ns, owner_name, owner_uid, f"{kind} {ns}/{name}: {why}")
            return
        if kind in WORKLOAD_KINDS:
            write_status(ctx, owner_kind, owner, None, _expected_workloads(objs))
    except ApiError as e:
        logger.warning("%s %s/%s event: %s", kind, ns, name, e)


def _applies(ctx: Ctx, owner_kind: str, owner: Mapping[str, Any]) -> bool:
    """False where the owner's reconcile leaves its workload unchanged on purpose (a PrometheusHA whose
    external labels clash, whose named ThanosCluster is missing, or whose TLS sidecars the cluster's
    queriers would dial in plaintext): no drift to repair there."""
    if owner_kind != PHA_KIND:
        return True
    if (namespace_of(owner), name_of(owner)) in ctx.conflicts():
        return False
    tc = ctx.cluster_of(owner)
    if pha_spec(owner).cluster_name and tc is None:
        return False
    if remote_write_refusal(owner, tc) is not None:
        return False
    return render.grpc_tls_mismatch(owner, tc) is None


def _repair(ctx: Ctx, owner_kind: str, ns: str, owner_name: str, owner_uid: str, what: str) -> None:
    """Re-run the owner's reconcile for a drifted child; the owner as the API server has it now (a child's
    deletion may be the garbage collector at work after the owner is gone)."""
    live = ctx.kube.get(owner_kind, ns, owner_name)
    if live is None or live["metadata"].get("uid") != owner_uid or live["metadata"].get("deletionTimestamp"):
        return
    ctx.logger.info("drift: %s; reconciling %s %s/%s", what, owner_kind, ns, owner_name)
    metrics.drift(owner_kind)
    ctx.with_current(owner_kind, live)
    (reconcile_pha if owner_kind == PHA_KIND else reconcile_tc)(ctx, live, own=False)


CHILD_PLURALS = {"statefulsets": "StatefulSet", "deployments": "Deployment", "services": "Service",
                 "configmaps": "ConfigMap", "poddisruptionbudgets": "PodDisruptionBudget"}


@kopf.on.event("apps", "v1", "statefulsets", labels=MANAGED)
@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("v1", "services", labels=MANAGED)
@kopf.on.event("v1", "configmaps", labels=MANAGED)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
def child_event(type: str | None, body: kopf.Body, resource: kopf.Resource, memo: kopf.Memo,
                logger: logging.Logger, pha_idx: kopf.Index, tc_idx: kopf.Index, sts_idx: kopf.Index,
                deploy_idx: kopf.Index, **_: Any) -> None:
    _child_event(CHILD_PLURALS[resource.plural], type, body, memo, logger, pha_idx, tc_idx, sts_idx, deploy_idx,
                 *_more(_))


# ---------------------------------------------------------------------------------------------- receiver pods

@kopf.on.event("v1", "pods", labels=RECEIVE_PODS)
def receive_pod_event(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: logging.Logger,
                      pha_idx: kopf.Index, tc_idx: kopf.Index, sts_idx: kopf.Index, deploy_idx: kopf.Index,
                      receive_pod_idx: kopf.Index, **_: Any) -> None:
    """A receiver pod changed (created, became ready or unready, is being deleted, is gone): when that
    changes its ThanosCluster's hashring, re-run the cluster's reconcile, which renders the hashring
    ConfigMap from the ready pods (as thanos-receive-controller keeps the file from the StatefulSets) and
    the Hashring condition. Other pod events (most are) change nothing and cost no API call."""
    md = body.get("metadata") or {}
    ns, cluster = md.get("namespace"), (md.get("labels") or {}).get(render.LABEL_TC)
    if not ns or not cluster:
        return
    ctx = Ctx.build(memo, logger, pha_idx, tc_idx, sts_idx, deploy_idx,
                    *_more({**_, "receive_pod_idx": receive_pod_idx}))
    ctx.pod_overrides[(ns, md.get("name"))] = None if type == "DELETED" else _slim_pod(body)
    tc = next((t for t in ctx.tcs if (namespace_of(t), name_of(t)) == (ns, cluster)), None)
    if tc is None or (tc.get("metadata") or {}).get("deletionTimestamp") or not tc_spec(tc).receiver.enabled:
        return
    ring = render.hashrings_json(render.hashring_endpoints(tc, ctx.receive_pods(ns, cluster), ctx.defaults))
    if ctx.hashrings.get((ns, cluster)) == ring:
        return
    logger.info("receiver pod %s/%s (%s): hashring of ThanosCluster %s changes; reconciling", ns, md.get("name"),
                type or "resumed", cluster)
    metrics.hashring_change(ns, cluster)
    try:
        reconcile_tc(ctx, tc, own=False)
    except ApiError as e:
        logger.warning("ThanosCluster %s/%s after a receiver pod event: %s", ns, cluster, e)


# ---------------------------------------------------------------------------------------------- rule sources

@kopf.on.event("v1", "configmaps")
def rule_config_map_event(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: logging.Logger,
                          pha_idx: kopf.Index, tc_idx: kopf.Index, sts_idx: kopf.Index, deploy_idx: kopf.Index,
                          rule_cm_idx: kopf.Index, **_: Any) -> None:
    """A ConfigMap changed (created, edited, relabelled, deleted): when that changes the rule files of a
    ThanosCluster's rulers in its namespace (one it names or selects, now or before), re-run the cluster's
    reconcile, which rewrites the rulers' ConfigMaps (the pods' reloaders take it from there; nothing rolls).
    Other ConfigMaps cost no API call."""
    md = body.get("metadata") or {}
    ns = md.get("namespace")
    if not ns or (md.get("labels") or {}).get("app.kubernetes.io/managed-by") == render.MANAGED_BY:
        return
    if not _has_rulers(tc_idx, ns):
        return
    ctx = Ctx.build(memo, logger, pha_idx, tc_idx, sts_idx, deploy_idx, *_more({**_, "rule_cm_idx": rule_cm_idx}))
    ctx.cm_overrides[(ns, md.get("name"))] = None if type == "DELETED" else rulefiles.slim_config_map(body)
    rule_sources_changed(ctx, ns, f"ConfigMap {ns}/{md.get('name')} ({type or 'resumed'})")


def prometheus_rule_event(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: logging.Logger,
                          pha_idx: kopf.Index, tc_idx: kopf.Index, sts_idx: kopf.Index, deploy_idx: kopf.Index,
                          prometheus_rule_idx: kopf.Index, **_: Any) -> None:
    """A PrometheusRule changed: as a ConfigMap (above). Registered by :func:`watch_prometheus_rules`."""
    md = body.get("metadata") or {}
    ns = md.get("namespace")
    if not ns or not _has_rulers(tc_idx, ns):
        return
    ctx = Ctx.build(memo, logger, pha_idx, tc_idx, sts_idx, deploy_idx,
                    *_more({**_, "prometheus_rule_idx": prometheus_rule_idx}))
    ctx.pr_overrides[(ns, md.get("name"))] = None if type == "DELETED" else rulefiles.slim_prometheus_rule(body)
    rule_sources_changed(ctx, ns, f"PrometheusRule {ns}/{md.get('name')} ({type or 'resumed'})")


def rule_sources_changed(ctx: Ctx, ns: str, what: str) -> None:
    """Re-run the reconcile of each ThanosCluster of the namespace with rulers whose rule sources are no
    longer the ones last applied."""
    for tc in [t for t in ctx.tcs if namespace_of(t) == ns]:
        if (tc.get("metadata") or {}).get("deletionTimestamp") or not tc_spec(tc).ruler.enabled:
            continue
        if ctx.rule_digests.get((ns, name_of(tc))) == ctx.rule_sources_digest(tc):
            continue
        ctx.logger.info("%s: rule files of ThanosCluster %s change; reconciling", what, name_of(tc))
        metrics.rule_file_change(ns, name_of(tc))
        try:
            reconcile_tc(ctx, tc, own=False)
        except ApiError as e:
            ctx.logger.warning("ThanosCluster %s/%s after %s: %s", ns, name_of(tc), what, e)


def _has_rulers(tc_idx: Any, namespace: str) -> bool:
    """Whether any ThanosCluster of the namespace has rulers (most ConfigMap events stop here)."""
    return any(namespace_of(t) == namespace and tc_spec(t).ruler.enabled for t in _values(tc_idx))


def _list_prometheus_rules(memo: Any, ns: str, logger: logging.Logger) -> list[dict[str, Any]]:
    """The namespace's PrometheusRules (slim); none, said once, where the operator may not list them."""
    try:
        return [rulefiles.slim_prometheus_rule(p) for p in memo.kube.list("PrometheusRule", ns, "")]
    except ApiError as e:
        if e.status != 403:
            raise
        told = getattr(memo, "told_forbidden", None)
        if told is None:
            told = memo.told_forbidden = set()
        if ns not in told:
            told.add(ns)
            logger.warning("PrometheusRules in %s not read: %s (the operator's RBAC needs list on "
                           "prometheusrules.monitoring.coreos.com)", ns, e)
        return []


def _resync_prometheus_rules(memo: Any, handles: KopfHandles, peering: tuple[str, bool, int] | None,
                             logger: logging.Logger) -> None:
    """PrometheusRules when kopf does not watch them (their CRD came after the operator started; kopf
    follows CRDs only with scanning on, which needs cluster-wide CRD permissions): every resync interval,
    while some ThanosCluster has rulers, one API discovery request and, with the CRD there, one list per
    namespace with rulers; a namespace whose PrometheusRules changed is handled as a watch event would be.
    A removed CRD takes its PrometheusRules' files away the same way."""
    if getattr(memo, "prometheus_rules_watched", True):
        return
    ctx = Ctx.build(memo, logger, *handles.indexes)
    namespaces = sorted({namespace_of(t) for t in ctx.tcs if tc_spec(t).ruler.enabled})
    served = bool(namespaces) and memo.kube.served("PrometheusRule")
    if served and not getattr(memo, "told_prometheus_rules", False):
        memo.told_prometheus_rules = True
        logger.info("PrometheusRule CRD installed after the operator started: PrometheusRules are read every "
                    "resync interval (restart the operator to watch them)")
    for ns in sorted(set(namespaces) | set(memo.polled_rules)):
        if peering is not None and _outranked(memo.kube, peering, ns):
            continue
        now = _list_prometheus_rules(memo, ns, logger) if served and ns in namespaces else []
        if (memo.polled_rules.get(ns) or []) == now:
            continue
        if now:
            memo.polled_rules[ns] = now
        else:
            memo.polled_rules.pop(ns, None)
        rule_sources_changed(Ctx.build(memo, logger, *handles.indexes), ns, "PrometheusRules read")


# ---------------------------------------------------------------------------------------------- TLS Secret resync

def _secret_resync(memo: Any, interval: float, peering: tuple[str, bool, int] | None,
                   logger: logging.Logger) -> None:
    """The operator's one thread of its own: every ``interval`` seconds, re-run the reconcile of each object
    whose gRPC TLS Secret changed in a way that matters (:meth:`SecretWatch.changed`). kopf's pause does not
    reach a thread of ours, so it applies kopf's peering rule itself (read from the peering object): what a
    peer with a higher priority is alive to do is left to it."""
    watch: SecretWatch = memo.secret_watch
    told: set[tuple[str, str, str, str]] = set()   # changes left to a peer, logged once each
    while not watch.stopped.wait(interval):
        try:
            handles = watch.kopf
            if handles is None:   # no handler ran yet, so nothing is recorded
                continue
            for seen in watch.changed(lambda ns, name: memo.kube.get("Secret", ns, name)):
                if peering is not None and _outranked(memo.kube, peering, seen.namespace):
                    if (seen.kind, seen.namespace, seen.name, seen.state) not in told:
                        told.add((seen.kind, seen.namespace, seen.name, seen.state))
                        logger.info("gRPC TLS Secret %s/%s changed; %s %s/%s left to a peer with a higher "
                                    "priority", seen.namespace, seen.tls.secret_name, seen.kind, seen.namespace,
                                    seen.name)
                    continue
                handles.context.copy().run(_resync_one, memo, handles, seen, logger)
            handles.context.copy().run(_resync_hashrings, memo, handles, peering, logger)
            handles.context.copy().run(_resync_prometheus_rules, memo, handles, peering, logger)
        except Exception:  # noqa: BLE001  (an API server hiccup: the next round tries again)
            logger.exception("TLS Secret resync failed")


def stale_hashrings(ctx: Ctx) -> list[dict[str, Any]]:
    """ThanosClusters with receivers whose hashring, as the pods are now, is not the one last applied (none
    applied since the operator started, or the apply after a pod event failed)."""
    out = []
    for tc in ctx.tcs:
        ns, name = namespace_of(tc), name_of(tc)
        if not tc_spec(tc).receiver.enabled or (tc.get("metadata") or {}).get("deletionTimestamp"):
            continue
        ring = render.hashrings_json(render.hashring_endpoints(tc, ctx.receive_pods(ns, name), ctx.defaults))
        if ctx.hashrings.get((ns, name)) != ring:
            out.append(tc)
    return out


def _resync_hashrings(memo: Any, handles: KopfHandles, peering: tuple[str, bool, int] | None,
                      logger: logging.Logger) -> None:
    """The level-triggered side of the pod handler: pod events are not retried by kopf, so a ring whose
    apply failed (an API error, an admission webhook) is re-applied here, every resync interval, without
    waiting for the next pod event."""
    for tc in stale_hashrings(Ctx.build(memo, logger, *handles.indexes)):
        if peering is not None and _outranked(memo.kube, peering, namespace_of(tc)):
            continue
        ctx = Ctx.build(memo, logger, *handles.indexes)
        logger.info("hashring of ThanosCluster %s/%s not applied yet; reconciling", namespace_of(tc), name_of(tc))
        reconcile_tc(ctx, tc, own=False)


def _outranked(kube: Kube, peering: tuple[str, bool, int], namespace: str) -> bool:
    name, clusterwide, priority = peering
    obj = kube.get_peering(name, None if clusterwide else namespace)
    return outranked(obj, priority, datetime.datetime.now(datetime.timezone.utc))


def _resync_one(memo: Any, handles: KopfHandles, seen: Seen, logger: logging.Logger) -> None:
    ctx = Ctx.build(memo, logger, *handles.indexes)
    live = ctx.kube.get(seen.kind, seen.namespace, seen.name)
    md = (live or {}).get("metadata") or {}
    if live is None or md.get("uid") != seen.uid or md.get("deletionTimestamp"):
        ctx.secret_watch.forget(seen.kind, seen.namespace, seen.name)   # gone: nothing to keep up to date
        return
    logger.info("gRPC TLS Secret %s/%s changed; reconciling %s %s/%s", seen.namespace, seen.tls.secret_name,
                seen.kind, seen.namespace, seen.name)
    metrics.tls_resync(seen.kind)
    ctx.with_current(seen.kind, live)
    (reconcile_pha if seen.kind == PHA_KIND else reconcile_tc)(ctx, live, own=False)
