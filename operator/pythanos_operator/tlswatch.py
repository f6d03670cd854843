"""gRPC TLS Secrets the custom resources reference, re-read by name (the operator may ``get`` Secrets, never
``list`` or ``watch`` them, so it cannot be told when one changes).

Each reconcile of an object with gRPC TLS records what it saw of its Secret (:attr:`TLSSecretCheck.state`:
missing, invalid and why, or the CA's digest). Every resync interval the operator reads each recorded Secret
once and re-runs the reconcile of every object whose Secret now checks differently: a Secret created after
its ThanosCluster clears ``TLSSecretNotFound``, one that loses a key gets ``TLSSecretInvalid``, and a new CA
rolls the pods that read it. A renewed certificate or key alone changes nothing here: Thanos reloads those
from the mounted files by itself.

Pure bookkeeping (no I/O, no kopf); the thread that drives it lives in :mod:`handlers`.
"""
from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .spec import GRPCTLS, check_tls_secret


@dataclass(frozen=True)
class Seen:
    """One object's gRPC TLS Secret as its last reconcile saw it."""
    kind: str
    namespace: str
    name: str
    uid: str
    tls: GRPCTLS
    state: str
    ca_sha256: str | None


@dataclass
class KopfHandles:
    """What a reconcile outside a kopf handler needs from kopf: its live indexes (PrometheusHAs,
    ThanosClusters, StatefulSets, Deployments) and a context carrying its Event poster."""
    indexes: tuple[Any, ...]
    context: Any   # contextvars.Context


class SecretWatch:
    """Thread-safe record of the gRPC TLS Secrets objects reference; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, str], Seen] = {}
        self.kopf: KopfHandles | None = None
        self.stopped = threading.Event()

    def record(self, kind: str, namespace: str, name: str, uid: str, tls: GRPCTLS, state: str,
               ca_sha256: str | None) -> None:
        with self._lock:
            self._seen[(kind, namespace, name)] = Seen(kind, namespace, name, uid, tls, state, ca_sha256)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._seen.pop((kind, namespace, name), None)

    def ca_sha256(self, kind: str, namespace: str, name: str) -> str | None:
        """The CA digest the object's pods were last rendered with (None: no TLS, or not usable)."""
        with self._lock:
            seen = self._seen.get((kind, namespace, name))
        return seen.ca_sha256 if seen is not None else None

    def changed(self, read: Callable[[str, str], Mapping[str, Any] | None]) -> list[Seen]:
        """Objects whose Secret now checks differently from what their last reconcile saw.
        ``read(namespace, name)`` returns the Secret or None; each Secret is read once."""
        with self._lock:
            seen = list(self._seen.values())
        secrets: dict[tuple[str, str], Mapping[str, Any] | None] = {}
        out = []
        for s in seen:
            key = (s.namespace, s.tls.secret_name)
            if key not in secrets:
                secrets[key] = read(*key)
            if check_tls_secret(secrets[key], s.tls).state != s.state:
                out.append(s)
        return out


def outranked(peering: Mapping[str, Any] | None, priority: int, now: datetime.datetime) -> bool:
    """kopf's peering rule, for work kopf does not schedule: an operator pauses while a live peer (last seen
    within its lifetime) has a higher priority. A missing peering object pauses it too, as it does kopf."""
    if peering is None:
        return True
    for info in (peering.get("status") or {}).values():
        if not isinstance(info, Mapping) or int(info.get("priority", 0)) <= priority:
            continue
        try:
            seen = datetime.datetime.fromisoformat(str(info.get("lastseen")))
        except ValueError:
            return True   # unreadable: assume alive, like a fresh peer
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=datetime.timezone.utc)
        if seen + datetime.timedelta(seconds=int(info.get("lifetime", 60))) > now:
            return True
    return False
