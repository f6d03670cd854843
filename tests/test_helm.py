"""The Helm chart (charts/pythanos-operator): `helm lint`, `helm template`, and the same install as manifests/.

helm is built from the Go module proxy by scripts/peers.sh (fixture ``helm_bin``). "The same install" means:
for default values, `helm template --include-crds` yields the objects of `kubectl kustomize manifests/` (less
the Namespace, which Helm's --create-namespace owns), equal after dropping labels, annotations and the
namespace; the chart's CRDs are byte copies of crds/ (the one source).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml


ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "pythanos-operator"
NS = "pythanos-system"


def _run(*argv: str) -> str:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(argv)} exited {r.returncode}:\n{r.stderr}{r.stdout}"
    return r.stdout


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def _key(o: dict) -> tuple[str, str, str]:
    return o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", "")


def _substance(o: dict) -> dict:
    o = yaml.safe_load(yaml.safe_dump(o))
    md = o["metadata"]
    for k in ("labels", "annotations", "namespace"):
        md.pop(k, None)
    tmpl = (o.get("spec") or {}).get("template")
    if isinstance(tmpl, dict) and isinstance(tmpl.get("metadata"), dict):
        tmpl["metadata"].pop("labels", None)
        tmpl["metadata"].pop("annotations", None)
        if not tmpl["metadata"]:
            tmpl.pop("metadata")
    return o


def template(helm: str, *extra: str) -> list[dict]:
    return _docs(_run(helm, "template", "pythanos-operator", str(CHART), "--namespace", NS, "--include-crds", *extra))


def test_helm_lint(helm_bin):
    out = _run(helm_bin, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out


def test_chart_crds_are_the_crds_dir():
    """charts/pythanos-operator/crds/*.pythanos.io.yaml are symlinks to crds/ (helm follows them)."""
    for src in sorted((ROOT / "crds").glob("*.yaml")):
        copy = CHART / "crds" / src.name
        assert copy.exists() and copy.read_bytes() == src.read_bytes(), (
            f"{copy} differs from {src}: it should be a symlink to ../../../crds/{src.name}")


def test_helm_template_equals_manifests_install(helm_bin, kubectl_bin):
    chart = {_key(o): o for o in template(helm_bin)}
    kust = {_key(o): o for o in _docs(_run(kubectl_bin, "kustomize", str(ROOT / "manifests")))}
    kust = {k: v for k, v in kust.items() if k[0] != "Namespace"}
    assert sorted(chart) == sorted(kust)
    for k in kust:
        assert _substance(chart[k]) == _substance(kust[k]), k
    # namespaced objects land in the release namespace
    for k, o in chart.items():
        if k[0] in ("Deployment", "Service", "ServiceAccount"):
            assert o["metadata"]["namespace"] == NS


def test_helm_values_images_and_namespaces(helm_bin):
    objs = template(helm_bin, "--set", "image.repository=reg.example/op", "--set", "image.tag=1.2.3",
                    "--set", "componentImage.repository=reg.example/pythanos", "--set", "componentImage.tag=9",
                    "--set", "watchNamespaces={team-a,team-b}", "--set", "replicas=2")
    by = {_key(o): o for o in objs}
    dep = by[("Deployment", "pythanos-operator", NS)]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "reg.example/op:1.2.3" and dep["spec"]["replicas"] == 2
    assert {"name": "PYTHANOS_COMPONENT_IMAGE", "value": "reg.example/pythanos:9"} in c["env"]
    assert "--namespace=team-a" in c["args"] and "--namespace=team-b" in c["args"]
    # namespaced RBAC and peering instead of cluster-wide ones
    kinds = {k[0] for k in by}
    assert "ClusterRole" not in kinds
    for ns in ("team-a", "team-b"):
        assert ("Role", "pythanos-operator", ns) in by and ("RoleBinding", "pythanos-operator", ns) in by


def test_helm_output_is_accepted_by_the_api_server(helm_bin, kubectl, pythanos_crds):
    """Server-side dry run of the rendered chart (schema validation of every object by a real API server)."""
    text = _run(helm_bin, "template", "pythanos-operator", str(CHART), "--namespace", "default")
    r = kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=text, namespace="default")
    assert "serverside-applied (server dry run)" in r.stdout
