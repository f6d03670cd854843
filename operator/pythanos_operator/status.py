"""Pure status math: workloads' status -> Available; Reconciled + Available -> Ready; conditions list.

Conditions are ``metav1.Condition`` shaped (type/status/reason/message/lastTransitionTime/observedGeneration),
one list keyed by type. ``lastTransitionTime`` is kept while a condition's status does not change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

READY, RECONCILED, AVAILABLE = "Ready", "Reconciled", "Available"
HASHRING = "Hashring"   # ThanosClusters with receivers only
RULE_FILES = "RuleFiles"   # ThanosClusters with rulers only

# Reasons
RECONCILE_SUCCEEDED = "ReconcileSucceeded"
RECONCILE_FAILED = "ReconcileFailed"
EXTERNAL_LABELS_CONFLICT = "ExternalLabelsConflict"
OBJECT_STORAGE_SECRET_MISSING = "ObjectStorageSecretMissing"
THANOS_CLUSTER_NOT_FOUND = "ThanosClusterNotFound"
TLS_SECRET_NOT_FOUND = "TLSSecretNotFound"     # the grpcTLS Secret does not exist
TLS_SECRET_INVALID = "TLSSecretInvalid"        # it lacks a key, or a key is not PEM of the right kind
GRPC_TLS_MISMATCH = "GRPCTLSMismatch"          # TLS sidecars under a plaintext querier
ALL_PODS_READY = "AllPodsReady"
NO_POD_READY = "NoPodReady"
SOME_PODS_NOT_READY = "SomePodsNotReady"
WORKLOAD_NOT_FOUND = "WorkloadNotFound"
SCALED_TO_ZERO = "ScaledToZero"
# the receivers' hashring (condition Hashring)
HASHRING_READY = "HashringReady"
HASHRING_EMPTY = "HashringEmpty"                                     # no receiver is ready yet
HASHRING_BELOW_REPLICATION_FACTOR = "HashringBelowReplicationFactor"   # fewer ready receivers than copies
REPLICATION_FACTOR_TOO_HIGH = "ReplicationFactorTooHigh"             # more copies than receivers
RECEIVER_NOT_ENABLED = "ReceiverNotEnabled"   # a PrometheusHA remote-writes to a cluster without receivers
# the rulers' rule files (condition RuleFiles)
RULE_FILES_LOADED = "RuleFilesLoaded"   # every selected file is in the rulers' ConfigMaps
RULE_FILE_INVALID = "RuleFileInvalid"   # some did not load and were left out (the message names them)


@dataclass(frozen=True)
class Cond:
    status: str   # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Availability:
    cond: Cond
    replicas: int
    ready: int


def _ready_count(w: Mapping[str, Any]) -> int:
    st = w.get("status") or {}
    if w.get("kind") == "Deployment":
        return int(st.get("availableReplicas") or 0)
    return int(st.get("readyReplicas") or 0)


def availability(expected: Sequence[tuple[str, str]], live: Iterable[Mapping[str, Any]]) -> Availability:
    """``expected``: (kind, name) of the workloads the render produced; ``live``: their objects as read."""
    by_key = {(w.get("kind"), (w.get("metadata") or {}).get("name")): w for w in live}
    total = ready = 0
    missing, parts = [], []
    for kind, name in expected:
        w = by_key.get((kind, name))
        if w is None:
            missing.append(f"{kind} {name} not found")
            continue
        want = int((w.get("spec") or {}).get("replicas", 1))
        got = min(_ready_count(w), want)
        total += want
        ready += got
        if got < want:
            parts.append(f"{kind} {name}: {got}/{want} ready")
    if not expected:
        return Availability(Cond("False", WORKLOAD_NOT_FOUND, "no workload rendered"), 0, 0)
    if missing:
        return Availability(Cond("False", WORKLOAD_NOT_FOUND, "; ".join(missing + parts)), total, ready)
    if total == 0:
        return Availability(Cond("True", SCALED_TO_ZERO, "all workloads are scaled to zero"), 0, 0)
    if ready == total:
        return Availability(Cond("True", ALL_PODS_READY, f"{ready}/{total} pods ready"), total, ready)
    if ready == 0:
        return Availability(Cond("False", NO_POD_READY, "; ".join(parts)), total, ready)
    return Availability(Cond("False", SOME_PODS_NOT_READY, "; ".join(parts)), total, ready)


def hashring_condition(replicas: int, replication_factor: int, in_ring: int) -> Cond:
    """The receivers' hashring from what the spec asks and how many receivers are in the ring (ready).
    Thanos writes each series to ``replication_factor`` receivers and succeeds once a quorum of them
    (``rf // 2 + 1``) has it."""
    quorum = replication_factor // 2 + 1
    if replicas == 0:
        return Cond("True", SCALED_TO_ZERO, "receivers scaled to zero: no remote write is accepted")
    if replication_factor > replicas:
        return Cond("False", REPLICATION_FACTOR_TOO_HIGH,
                    f"spec.receiver.replicationFactor {replication_factor} is larger than spec.receiver.replicas "
                    f"{replicas}: a series cannot be written {replication_factor} times (quorum {quorum})")
    if in_ring == 0:
        return Cond("False", HASHRING_EMPTY,
                    f"no receiver is ready yet: the hashring has no endpoints (0/{replicas}), remote writes fail")
    if in_ring < replication_factor:
        return Cond("False", HASHRING_BELOW_REPLICATION_FACTOR,
                    f"{in_ring}/{replicas} receivers ready, fewer than the replication factor {replication_factor}: "
                    f"series get fewer copies" + ("" if in_ring >= quorum else
                                                  f" and writes fail (quorum {quorum})"))
    return Cond("True", HASHRING_READY, f"{in_ring}/{replicas} receivers in the hashring")


def ready_from(reconciled: Cond, available: Cond, hashring: Cond | None = None) -> Cond:
    """The summary: a failed reconcile wins, then a replication factor no receiver set can hold, then
    availability, then the hashring."""
    if reconciled.status != "True":
        return Cond("False", reconciled.reason, reconciled.message)
    if hashring is not None and hashring.reason == REPLICATION_FACTOR_TOO_HIGH:
        return Cond("False", hashring.reason, hashring.message)
    if available.status != "True":
        return Cond("False", available.reason, available.message)
    if hashring is not None and hashring.status != "True":
        return Cond("False", hashring.reason, hashring.message)
    return Cond("True", available.reason, available.message)


OPTIONAL = (HASHRING, RULE_FILES)   # conditions that exist only while they apply: absent from ``new``, they go


def merge_conditions(previous: Iterable[Mapping[str, Any]] | None, generation: int | None,
                     new: Mapping[str, Cond], now: str) -> list[dict[str, Any]]:
    prev = {c.get("type"): c for c in previous or []}
    out = []
    for ctype in (READY, RECONCILED, AVAILABLE, *OPTIONAL):
        c = new.get(ctype)
        if c is None:
            if ctype in prev and ctype not in OPTIONAL:
                out.append(dict(prev[ctype]))
            continue
        old = prev.get(ctype)
        ltt = old.get("lastTransitionTime") if old and old.get("status") == c.status else None
        d = {"type": ctype, "status": c.status, "reason": c.reason, "message": c.message[:32768],
             "lastTransitionTime": ltt or now}
        if generation is not None:
            d["observedGeneration"] = int(generation)
        out.append(d)
    return out


def cond_of(conditions: Iterable[Mapping[str, Any]] | None, ctype: str) -> Cond | None:
    for c in conditions or []:
        if c.get("type") == ctype:
            return Cond(c.get("status", "Unknown"), c.get("reason", ""), c.get("message", ""))
    return None
