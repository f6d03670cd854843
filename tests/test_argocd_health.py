"""The Argo CD Lua health check (manifests/argocd) run by a real Lua interpreter.

Argo CD runs health scripts in gopher-lua (Lua 5.1 semantics, standard libraries off), with the object as
the global ``obj``; the script returns ``{status, message}``. Here the script runs in Lua 5.1 through
``lupa`` (PyPI), with the same objects the operator writes.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from peers import missing

ROOT = Path(__file__).resolve().parents[1]
ARGO = ROOT / "manifests" / "argocd"
SCRIPT = (ARGO / "health.lua").read_text()



@pytest.fixture(scope="module")
def lua_runtime():
    """Lua 5.1 (gopher-lua's dialect) from lupa; missing lupa fails under CI=true, skips elsewhere."""
    try:
        from lupa.lua51 import LuaRuntime
    except ImportError:
        try:
            from lupa import LuaRuntime
        except ImportError:
            missing("lupa (PyPI package; `pip install -e .[test]` installs it)")
    return LuaRuntime


def _to_lua(lua, value):
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def health(obj: dict, runtime) -> tuple[str, str]:
    # Argo CD loads only a safe subset of libraries; ipairs/tostring (base library) are available there.
    lua = runtime(unpack_returned_tuples=True, register_eval=False)
    lua.globals().obj = _to_lua(lua, obj)
    hs = lua.execute(SCRIPT)
    return hs["status"], hs["message"]


def _obj(kind="PrometheusHA", generation=2, observed=2, ready=None):
    o = {"apiVersion": "pythanos.io/v1alpha1", "kind": kind,
         "metadata": {"name": "us1", "namespace": "monitoring", "generation": generation}, "spec": {}}
    if observed is not None or ready is not None:
        o["status"] = {}
        if observed is not None:
            o["status"]["observedGeneration"] = observed
        if ready is not None:
            status, reason, message = ready
            o["status"]["conditions"] = [
                {"type": "Reconciled", "status": "True", "reason": "ReconcileSucceeded", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Ready", "status": status, "reason": reason, "message": message,
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    return o


@pytest.mark.parametrize("kind", ["PrometheusHA", "ThanosCluster"])
@pytest.mark.parametrize("obj_args,expected", [
    (dict(observed=None), ("Progressing", "Waiting for the pythanos operator")),
    (dict(observed=1, ready=("True", "AllPodsReady", "2/2 pods ready")),
     ("Progressing", "Waiting for the operator to observe generation 2")),
    (dict(ready=("True", "AllPodsReady", "2/2 pods ready")), ("Healthy", "2/2 pods ready")),
    (dict(ready=("False", "SomePodsNotReady", "StatefulSet prometheus-us1: 1/2 ready")),
     ("Progressing", "StatefulSet prometheus-us1: 1/2 ready")),
    (dict(ready=("False", "NoPodReady", "")), ("Progressing", "NoPodReady")),
    (dict(ready=("Unknown", "Pending", "not reconciled yet")), ("Progressing", "not reconciled yet")),
    (dict(ready=("False", "ExternalLabelsConflict", "external labels equal those of monitoring/eu1")),
     ("Degraded", "external labels equal those of monitoring/eu1")),
    (dict(ready=("False", "ObjectStorageSecretMissing", "Secret monitoring/thanos-objstore not found")),
     ("Degraded", "Secret monitoring/thanos-objstore not found")),
    (dict(ready=("False", "ReconcileFailed", "")), ("Degraded", "ReconcileFailed")),
    (dict(ready=("False", "ThanosClusterNotFound", "ThanosCluster monitoring/demo not found")),
     ("Degraded", "ThanosCluster monitoring/demo not found")),
    (dict(observed=2), ("Progressing", "Waiting for the pythanos operator")),
    # receivers: a ring catching up with ready pods is on its way; a replication factor above the replicas,
    # or a remote-writing member of a cluster without receivers, needs a spec change
    (dict(ready=("False", "HashringEmpty", "no receiver is ready yet")), ("Progressing", "no receiver is ready yet")),
    (dict(ready=("False", "HashringBelowReplicationFactor", "1/3 receivers ready")),
     ("Progressing", "1/3 receivers ready")),
    (dict(ready=("False", "ReplicationFactorTooHigh", "spec.receiver.replicationFactor 3")),
     ("Degraded", "spec.receiver.replicationFactor 3")),
    (dict(ready=("False", "ReceiverNotEnabled", "ThanosCluster demo runs no receivers")),
     ("Degraded", "ThanosCluster demo runs no receivers")),
])
def test_health(kind, obj_args, expected, lua_runtime):
    assert health(_obj(kind=kind, **obj_args), lua_runtime) == expected


def test_no_generation_yet(lua_runtime):
    o = _obj(ready=("True", "AllPodsReady", "ok"))
    del o["metadata"]["generation"]
    assert health(o, lua_runtime) == ("Healthy", "ok")


def test_argocd_cm_snippet_carries_the_script_for_both_kinds():
    cm = yaml.safe_load((ARGO / "argocd-cm.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    keys = {f"resource.customizations.health.pythanos.io_{k}" for k in ("PrometheusHA", "ThanosCluster")}
    assert set(cm["data"]) == keys
    for k in keys:
        assert cm["data"][k] == SCRIPT


def test_script_uses_no_library_argo_disables():
    # Argo CD enables the standard libraries only with resource.customizations.useOpenLibs.
    import re
    code = "\n".join(line.split("--", 1)[0] for line in SCRIPT.splitlines())
    for lib in ("os", "io", "string", "table", "require", "debug"):
        assert not re.search(rf"\b{lib}\s*[.(]", code), lib
