"""Operator metrics on ``/metrics`` (prometheus-client)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter("pythanos_operator_reconcile_total", "Reconciles that applied their objects.", ["kind"])
FAILURES = Counter("pythanos_operator_reconcile_failures_total", "Reconciles that failed, by reason.",
                   ["kind", "reason"])
DURATION = Histogram("pythanos_operator_reconcile_duration_seconds", "Time to render and apply one object.",
                     ["kind"])
DRIFTS = Counter("pythanos_operator_drift_repairs_total",
                 "Reconciles started because a child object was deleted or edited by hand.", ["kind"])
TLS_RESYNCS = Counter("pythanos_operator_tls_secret_resyncs_total",
                      "Reconciles started because a referenced gRPC TLS Secret changed (CA, appeared, vanished, "
                      "became valid or invalid).", ["kind"])
HASHRING_CHANGES = Counter("pythanos_operator_hashring_changes_total",
                           "Reconciles started because receiver pods changed a ThanosCluster's hashring.",
                           ["namespace", "name"])
HASHRING_ENDPOINTS = Gauge("pythanos_operator_hashring_endpoints",
                           "Endpoints in the receivers' hashring the operator last applied.", ["namespace", "name"])
RULE_FILES = Gauge("pythanos_operator_rule_files",
                   "Rule files in the rulers' ConfigMaps, as last applied (loaded), and those left out because "
                   "they do not load (invalid).", ["namespace", "name", "state"])
RULE_FILE_CHANGES = Counter("pythanos_operator_rule_file_changes_total",
                            "Reconciles started because a ThanosCluster's rule sources (ConfigMaps, PrometheusRules) "
                            "changed.", ["namespace", "name"])
READY = Gauge("pythanos_operator_resource_ready", "1 when the resource's Ready condition is True.",
              ["kind", "namespace", "name"])


def success(kind: str) -> None:
    RECONCILES.labels(kind).inc()


def failure(kind: str, reason: str) -> None:
    FAILURES.labels(kind, reason).inc()


def drift(kind: str) -> None:
    DRIFTS.labels(kind).inc()


def tls_resync(kind: str) -> None:
    TLS_RESYNCS.labels(kind).inc()


def hashring_change(namespace: str, name: str) -> None:
    HASHRING_CHANGES.labels(namespace, name).inc()


def hashring_applied(namespace: str, name: str, endpoints: int) -> None:
    HASHRING_ENDPOINTS.labels(namespace, name).set(endpoints)


def rule_files_applied(namespace: str, name: str, loaded: int, invalid: int) -> None:
    RULE_FILES.labels(namespace, name, "loaded").set(loaded)
    RULE_FILES.labels(namespace, name, "invalid").set(invalid)


def rule_file_change(namespace: str, name: str) -> None:
    RULE_FILE_CHANGES.labels(namespace, name).inc()


def observe(kind: str, seconds: float) -> None:
    DURATION.labels(kind).observe(seconds)


def set_ready(kind: str, namespace: str, name: str, ready: bool) -> None:
    READY.labels(kind, namespace, name).set(1 if ready else 0)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    start_http_server(port, addr=addr)
