"""The operator's only I/O against the API server: server-side apply, prune, get, status patch.

A thin REST layer over the official client's ``ApiClient`` (no discovery round trips, plain dicts in and out).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

FIELD_MANAGER = "pythanos-operator"

# kind -> (API prefix, plural)
KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "Service": ("/api/v1", "services"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "PrometheusHA": ("/apis/pythanos.io/v1alpha1", "prometheushas"),
    "ThanosCluster": ("/apis/pythanos.io/v1alpha1", "thanosclusters"),
    "PrometheusRule": ("/apis/monitoring.coreos.com/v1", "prometheusrules"),   # prometheus-operator's, optional
}


class ApiError(Exception):
    def __init__(self, status: int, reason: str, body: str):
        self.status, self.reason, self.body = status, reason, body
        msg = body
        try:
            msg = json.loads(body).get("message") or body
        except Exception:
            pass
        super().__init__(f"{status} {reason}: {msg}")


@dataclass
class Kube:
    api: Any   # kubernetes.client.ApiClient

    @classmethod
    def from_environment(cls) -> "Kube":
        import kubernetes
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        return cls(kubernetes.client.ApiClient())

    def _path(self, kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        prefix, plural = KINDS[kind]
        p = f"{prefix}/namespaces/{namespace}/{plural}"
        if name:
            p += f"/{name}"
        if sub:
            p += f"/{sub}"
        return p

    def _raw(self, method: str, path: str, query: list | None, headers: dict, body: Any) -> tuple[int, str, bytes]:
        """(status, reason, body) of one request; works with both generations of the official client."""
        from kubernetes.client.exceptions import ApiException
        api = self.api
        try:
            if hasattr(api, "param_serialize"):   # kubernetes >= 35 (new OpenAPI generator)
                m, url, hdrs, b, post = api.param_serialize(method=method, resource_path=path, query_params=query or [],
                                                           header_params=headers, body=body,
                                                           auth_settings=["BearerToken"])
                resp = api.call_api(m, url, header_params=hdrs, body=b, post_params=post, _request_timeout=30)
                data = resp.read()
                return resp.status, resp.reason or "", data or b""
            resp = api.call_api(path, method, query_params=query or [], header_params=headers, body=body,
                                auth_settings=["BearerToken"], _preload_content=False, _request_timeout=30)
            r = resp[0] if isinstance(resp, tuple) else resp
            return r.status, r.reason or "", r.data or b""
        except ApiException as e:
            data = e.body if isinstance(e.body, (bytes, str)) else b""
            return e.status or 0, e.reason or "", data.encode() if isinstance(data, str) else data

    def _call(self, method: str, path: str, body: Any = None, query: list | None = None,
              content_type: str | None = None, accept: str = "application/json") -> Any:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        status, reason, data = self._raw(method, path, query, headers, body)
        if status >= 400 or status == 0:
            raise ApiError(status, reason, data.decode(errors="replace"))
        return json.loads(data) if data else None

    def apply(self, obj: Mapping[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply as ``pythanos-operator``, taking over conflicting fields (we own our children)."""
        md = obj["metadata"]
        q = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        if dry_run:
            q.append(("dryRun", "All"))
        return self._call("PATCH", self._path(obj["kind"], md["namespace"], md["name"]), body=dict(obj), query=q,
                          content_type="application/apply-patch+yaml")

    def apply_any(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of a kopf peering object (cluster-scoped or namespaced)."""
        md = obj["metadata"]
        plural = {"ClusterKopfPeering": "clusterkopfpeerings", "KopfPeering": "kopfpeerings"}[obj["kind"]]
        ns = f"/namespaces/{md['namespace']}" if md.get("namespace") else ""
        return self._call("PATCH", f"/apis/kopf.dev/v1{ns}/{plural}/{md['name']}", body=dict(obj),
                          query=[("fieldManager", FIELD_MANAGER)], content_type="application/apply-patch+yaml")

    def get_peering(self, name: str, namespace: str | None) -> dict[str, Any] | None:
        """The kopf peering object: a ClusterKopfPeering (``namespace`` None) or a namespace's KopfPeering."""
        path = (f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{name}" if namespace
                else f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}")
        try:
            return self._call("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def apply_recreating(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Apply; a StatefulSet whose immutable fields changed (volumeClaimTemplates, serviceName, selector,
        podManagementPolicy) is deleted with ``propagationPolicy=Orphan`` and applied again: its pods and PVCs
        stay and the new StatefulSet adopts them. Returns (object, recreated)."""
        try:
            return self.apply(obj), False
        except ApiError as e:
            if not (obj["kind"] == "StatefulSet" and e.status == 422 and "Forbidden" in str(e)):
                raise
        md = obj["metadata"]
        self._call("DELETE", self._path("StatefulSet", md["namespace"], md["name"]),
                   body={"propagationPolicy": "Orphan"})
        deadline = time.monotonic() + 30
        while self.get("StatefulSet", md["namespace"], md["name"]) is not None:
            if time.monotonic() > deadline:
                raise ApiError(409, "Conflict", f"StatefulSet {md['namespace']}/{md['name']} still being deleted")
            time.sleep(0.2)
        return self.apply(obj), True

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", self._path(kind, namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        items = self._call("GET", self._path(kind, namespace), query=[("labelSelector", selector)])["items"]
        for it in items:   # list items carry no kind
            it.setdefault("kind", kind)
        return items

    def served(self, kind: str) -> bool:
        """Whether the API server serves ``kind`` (API discovery: a custom resource whose CRD is installed)."""
        prefix, plural = KINDS[kind]
        try:
            found = self._call("GET", prefix) or {}
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return any(r.get("name") == plural for r in found.get("resources") or [])

    def may_list(self, kind: str, namespace: str | None) -> bool:
        """Whether a list of ``kind`` (in ``namespace``, or cluster-wide) is allowed: one list of one item."""
        prefix, plural = KINDS[kind]
        path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
        try:
            self._call("GET", path, query=[("limit", "1")])
        except ApiError as e:
            if e.status == 403:
                return False
            raise
        return True

    def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            self._call("DELETE", self._path(kind, namespace, name), body={"propagationPolicy": "Background"})
        except ApiError as e:
            if e.status != 404:
                raise

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", self._path(kind, namespace, name, "status"), body={"status": dict(status)},
                          content_type="application/merge-patch+json")

    def prune(self, kinds: Iterable[str], namespace: str, selector: str, owner_uid: str | None,
              keep: set[tuple[str, str]]) -> list[tuple[str, str]]:
        """Delete our children (selected by label and owned by ``owner_uid``) that the render no longer has."""
        gone = []
        for kind in kinds:
            for it in self.list(kind, namespace, selector):
                md = it["metadata"]
                owners = {o.get("uid") for o in md.get("ownerReferences") or []}
                if owner_uid and owner_uid not in owners:
                    continue
                if (kind, md["name"]) not in keep:
                    self.delete(kind, namespace, md["name"])
                    gone.append((kind, md["name"]))
        return gone

    def exists(self, kind: str, namespace: str, name: str) -> bool:
        """Metadata-only GET (PartialObjectMetadata): an object-storage Secret's data is never read (a gRPC
        TLS Secret is, by :meth:`get`: its keys are checked and its CA hashed)."""
        try:
            self._call("GET", self._path(kind, namespace, name),
                       accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json")
            return True
        except ApiError as e:
            if e.status == 404:
                return False
            raise
