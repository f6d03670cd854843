"""The operator deploys the ruler (ThanosCluster.spec.ruler): renders, rule-file selection and flags.

* Renders (no cluster): the golden of a ThanosCluster with rulers; rule ConfigMaps named or selected by
  label in the cluster's namespace, only their ``.yaml``/``.yml`` keys, flat under the rules directory; a
  change of any file changes the pod template (rulers load their files at start); the queriers get the
  rulers as endpoints and de-duplicate on their replica label, as does the compactor.
* The rendered command line is accepted by a real ``thanos rule`` (v0.42) and parsed by ours; the
  rendered ruler, ours and Thanos', started on the files as the projected volume lays them out, loads
  every selected group (the rules directory's globs match them and nothing else a ConfigMap volume holds).
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from peers import REGISTRY, Process, start_on_free_ports  # noqa: E402
from pythanos_operator import render  # noqa: E402
import test_operator_render as _render_tests  # noqa: E402
from test_operator_render import DEFAULTS, NS, _by, _container, _golden  # noqa: E402

tc, eu1, us1 = _render_tests.tc, _render_tests.eu1, _render_tests.us1   # the example objects, as fixtures

RULER = {"enabled": True, "replicas": 2, "evaluationInterval": "30s", "retention": "2d",
         "alertmanagers": ["http://alertmanager.monitoring.svc:9093"], "ruleConfigMaps": ["base-rules"],
         "ruleSelector": {"matchLabels": {"pythanos.io/rules": "demo"}}, "externalLabels": {"team": "obs"},
         "storage": {"size": "5Gi"}}

GROUP_A = """groups:
  - name: a
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
"""
GROUP_B = """groups:
  - name: b
    partial_response_strategy: warn
    rules:
      - alert: AlwaysFiring
        expr: vector(1)
        labels: {severity: page}
"""


def with_ruler(tc: dict, **over) -> dict:
    tc = copy.deepcopy(tc)
    tc["spec"]["ruler"] = {**RULER, **over}
    return tc


def cm(name: str, data: dict, labels: dict | None = None, ns: str = NS) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "data": data}


CMS = [
    cm("base-rules", {"a.yaml": GROUP_A, "README.md": "not a rule file"}),          # named
    cm("team-rules", {"b.yml": GROUP_B}, {"pythanos.io/rules": "demo"}),             # selected
    cm("other-team", {"c.yaml": GROUP_A}, {"pythanos.io/rules": "other"}),           # not selected
    cm("team-rules-elsewhere", {"d.yaml": GROUP_A}, {"pythanos.io/rules": "demo"}, ns="other"),
]


def rendered(t: dict, cms=CMS, **kw) -> list[dict]:
    return render.render_thanos_cluster(t, [], DEFAULTS, config_maps=cms, **kw)


def test_golden_thanoscluster_with_rulers(tc, eu1, us1):
    _golden("thanoscluster-demo-rule", render.render_thanos_cluster(with_ruler(tc), [us1, eu1], DEFAULTS,
                                                                     config_maps=CMS))


def test_without_ruler_nothing_changes(tc, eu1, us1):
    off = copy.deepcopy(tc)
    off["spec"]["ruler"] = {"enabled": False, "replicas": 3, "ruleConfigMaps": ["base-rules"]}
    assert render.render_thanos_cluster(off, [us1, eu1], DEFAULTS, config_maps=CMS) == \
        render.render_thanos_cluster(tc, [us1, eu1], DEFAULTS)


def test_rule_files_named_or_selected_flat_and_yaml_only(tc):
    t = with_ruler(tc)
    assert [render.name_of(c) for c in render.rule_config_maps(t, CMS)] == ["base-rules", "team-rules"]
    sts = _by(rendered(t), "StatefulSet", "thanos-rule-demo")
    vol = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "rules")
    assert vol["projected"]["sources"] == [
        {"configMap": {"name": "base-rules", "items": [{"key": "a.yaml", "path": "base-rules-a.yaml"}]}},
        {"configMap": {"name": "team-rules", "items": [{"key": "b.yml", "path": "team-rules-b.yml"}]}}]
    # nothing selected: an empty directory, the ruler starts with no rules
    none = _by(rendered(with_ruler(tc, ruleConfigMaps=[], ruleSelector=None)), "StatefulSet", "thanos-rule-demo")
    assert {"name": "rules", "emptyDir": {}} in none["spec"]["template"]["spec"]["volumes"]


def test_a_changed_rule_file_rolls_the_rulers(tc):
    t = with_ruler(tc)

    def annotation(cms) -> str:
        sts = _by(rendered(t, cms), "StatefulSet", "thanos-rule-demo")
        return sts["spec"]["template"]["metadata"]["annotations"][render.ANNOTATION_RULES]

    base = annotation(CMS)
    changed = copy.deepcopy(CMS)
    changed[1]["data"]["b.yml"] = GROUP_B.replace("vector(1)", "vector(2)")
    unselected = copy.deepcopy(CMS)
    unselected[2]["data"]["c.yaml"] = "groups: []\n"
    not_rules = copy.deepcopy(CMS)
    not_rules[0]["data"]["README.md"] = "changed"
    assert annotation(changed) != base
    assert annotation(unselected) == annotation(not_rules) == base
    assert annotation(CMS[:1]) != base   # a ConfigMap no longer there


def test_queriers_and_compactor_know_the_rulers(tc, us1):
    objs = render.render_thanos_cluster(with_ruler(tc), [us1], DEFAULTS, config_maps=CMS)
    import yaml

    sd = yaml.safe_load(_by(objs, "ConfigMap", "thanos-query-demo-endpoints")["data"]["endpoints.yaml"])
    assert {"address": f"dnssrv+_grpc._tcp.thanos-rule-demo.{NS}.svc"} in sd["endpoints"]
    q = _container(_by(objs, "Deployment", "thanos-query-demo"), "thanos-query")
    assert "--query.replica-label=rule_replica" in q["args"]
    c = _container(_by(objs, "StatefulSet", "thanos-compact-demo"), "thanos-compact")
    assert "--deduplication.replica-label=rule_replica" in c["args"]
    assert _by(objs, "PodDisruptionBudget", "thanos-rule-demo")["spec"]["maxUnavailable"] == 1
    assert _by(objs, "Service", "thanos-rule-demo")["spec"]["clusterIP"] == "None"


def _rule_container(tc, tls: bool = True, **over) -> dict:
    t = with_ruler(tc, **over)
    if tls:
        t["spec"]["grpcTLS"] = {"secretName": "tls", "serverName": "thanos-grpc.monitoring.svc"}
    t["spec"]["ruler"]["extraArgs"] = ["--for-grace-period=5m"]
    return _container(_by(rendered(t, ca_sha256="00" * 32), "StatefulSet", "thanos-rule-demo"), "thanos-rule")


def test_rendered_rule_flags_accepted_by_real_thanos(tc, thanos_bin):
    """Every rendered flag is one a real ``thanos rule`` v0.42 accepts (kingpin parses the whole command
    line before printing --help)."""
    args = _rule_container(tc)["args"]
    r = subprocess.run([thanos_bin, *args, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"thanos rejects {args}:\n{r.stderr[-2000:]}"
    bad = subprocess.run([thanos_bin, *args, "--rule.no-such-flag", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0   # the check is real: an unknown flag fails


def test_rendered_rule_flags_parse_with_pythanos(tc):
    from pythanos.cli import build_parser

    args = [a.replace("$(POD_NAME)", "thanos-rule-demo-1") for a in _rule_container(tc)["args"]]
    ns = build_parser().parse_args(args)
    assert ns.component == "rule"
    from pythanos.flags import parse_label_flags

    assert parse_label_flags(ns.labels) == {"rule_replica": "thanos-rule-demo-1", "team": "obs"}
    assert ns.rule_files == [f"{render.RULE_DIR}/*.yaml", f"{render.RULE_DIR}/*.yml"]
    assert ns.eval_interval == 30.0 and ns.alertmanagers_urls == ["http://alertmanager.monitoring.svc:9093"]
    # the whole configuration is built by the rendered ruler's own start (test below)


def _materialise(root: Path, t: dict) -> Path:
    """The rules directory as the kubelet lays out the projected volume: the files behind ``..data``,
    top-level symlinks to them, and the timestamped directory (nothing there may be taken for a rule file)."""
    sts = _by(rendered(t), "StatefulSet", "thanos-rule-demo")
    vol = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "rules")
    data = root / "..2026_12_03_00_00_00.000000001"
    data.mkdir(parents=True)
    (root / "..data").symlink_to(data.name)
    by_name = {render.name_of(c): c for c in CMS}
    for src in vol["projected"]["sources"]:
        for item in src["configMap"]["items"]:
            (data / item["path"]).write_text(by_name[src["configMap"]["name"]]["data"][item["key"]])
            (root / item["path"]).symlink_to(f"..data/{item['path']}")
    return root


@pytest.mark.parametrize("impl", ["pythanos", "thanos"])
def test_rendered_ruler_loads_the_selected_files(impl, request, tc, tmp_path):
    binary = request.getfixturevalue("pythanos_bin" if impl == "pythanos" else "thanos_bin")
    t = with_ruler(tc)
    rules = _materialise(tmp_path / "rules", t)
    args = [a.replace("$(POD_NAME)", "thanos-rule-demo-0") for a in
            _container(_by(rendered(t), "StatefulSet", "thanos-rule-demo"), "thanos-rule")["args"]]
    local = {"--data-dir": str(tmp_path / "data"), "--objstore.config-file": str(tmp_path / "objstore.yml")}
    (tmp_path / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path / 'bucket'}\n")
    args = [f"{a.split('=', 1)[0]}={local[a.split('=', 1)[0]]}" if a.split("=", 1)[0] in local else a
            for a in args]
    args = [a.replace(render.RULE_DIR, str(rules)) for a in args
            if not a.startswith(("--grpc-address", "--http-address"))]

    def launch(ports: list[int]) -> Process:
        h, g = ports
        p = REGISTRY.start(f"{impl}-rule", [binary, *args, f"--http-address=127.0.0.1:{h}",
                                            f"--grpc-address=127.0.0.1:{g}"], tmp_path)
        p.url = f"http://127.0.0.1:{h}"
        return p

    p = start_on_free_ports(2, launch, lambda p: p.wait_http_ready("/-/ready", 120))
    try:
        from peers import http_get

        code, body = http_get(p.url + "/api/v1/rules")
        assert code == 200, body
        groups = json.loads(body)["data"]["groups"]
        assert sorted((g["name"], Path(g["file"]).name, [r["name"] for r in g["rules"]]) for g in groups) == [
            ("a", "base-rules-a.yaml", ["job:up:sum"]), ("b", "team-rules-b.yml", ["AlwaysFiring"])]
    finally:
        p.stop()


# ---------------------------------------------------------------------------------------------- real API server

import yaml  # noqa: E402

import test_operator as _operator_tests  # noqa: E402
from test_crds import MINIMAL_TC, rejected, tc_yaml  # noqa: E402
from test_operator import EXAMPLES, apply_examples, args_of, kget, wait_for  # noqa: E402

# the running operator (under the install's RBAC) of test_operator, as fixtures of this module
installed, operator_kubeconfig = _operator_tests.installed, _operator_tests.operator_kubeconfig
operator, op_log = _operator_tests.operator, _operator_tests.op_log


def ruler_cluster(**over) -> str:
    t = yaml.safe_load((EXAMPLES / "thanoscluster.yaml").read_text())
    t["spec"]["ruler"] = {"enabled": True, "ruleConfigMaps": ["base-rules"],
                          "ruleSelector": {"matchLabels": {"pythanos.io/rules": "demo"}}, **over}
    return yaml.safe_dump(t)


def sources(kubectl, ns: str) -> list | None:
    sts = kget(kubectl, "statefulset", "thanos-rule-demo", ns)
    if sts is None:
        return None
    vol = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "rules")
    return [(s["configMap"]["name"], [i["path"] for i in s["configMap"]["items"]])
            for s in (vol.get("projected") or {}).get("sources") or []]


def digest(kubectl, ns: str) -> str:
    sts = kget(kubectl, "statefulset", "thanos-rule-demo", ns)
    return sts["spec"]["template"]["metadata"]["annotations"][render.ANNOTATION_RULES]


def test_rulers_follow_their_rule_config_maps(kubectl, namespace, op_log):
    """The rulers appear with the cluster, the queriers get them; a selected ConfigMap created, edited,
    relabelled away or deleted re-renders the rulers at once (no change of the ThanosCluster)."""
    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml")
    for c in CMS[:3]:
        kubectl("apply", "-f", "-", input=json.dumps({**c, "metadata": {**c["metadata"], "namespace": ns}}),
                namespace=ns)
    kubectl("apply", "--server-side", "-f", "-", input=ruler_cluster(), namespace=ns)
    want = [("base-rules", ["base-rules-a.yaml"]), ("team-rules", ["team-rules-b.yml"])]
    wait_for(lambda: sources(kubectl, ns) == want, what=f"rulers with both ConfigMaps (now {sources(kubectl, ns)})")
    sts = kget(kubectl, "statefulset", "thanos-rule-demo", ns)
    args = args_of(sts, "thanos-rule")
    assert args[0] == "rule" and f"--query=thanos-query-demo.{ns}.svc:10902" in args
    assert kget(kubectl, "service", "thanos-rule-demo", ns)["spec"]["clusterIP"] == "None"
    sd = yaml.safe_load(kget(kubectl, "configmap", "thanos-query-demo-endpoints", ns)["data"]["endpoints.yaml"])
    assert {"address": f"dnssrv+_grpc._tcp.thanos-rule-demo.{ns}.svc"} in sd["endpoints"]

    # an edited file: same layout, a new digest (the rulers roll)
    before = digest(kubectl, ns)
    kubectl("patch", "configmap", "team-rules", "--type=merge", "-p",
            json.dumps({"data": {"b.yml": GROUP_B.replace("vector(1)", "vector(2)")}}), namespace=ns)
    wait_for(lambda: digest(kubectl, ns) != before, what="digest after an edit")
    # a new selected ConfigMap joins; one relabelled away leaves; a deleted named one leaves
    kubectl("label", "configmap", "other-team", "pythanos.io/rules=demo", "--overwrite", namespace=ns)
    wait_for(lambda: [n for n, _ in sources(kubectl, ns) or []] == ["base-rules", "other-team", "team-rules"],
             what="a newly selected ConfigMap")
    kubectl("label", "configmap", "team-rules", "pythanos.io/rules=gone", "--overwrite", namespace=ns)
    wait_for(lambda: [n for n, _ in sources(kubectl, ns) or []] == ["base-rules", "other-team"],
             what="a ConfigMap no longer selected")
    kubectl("delete", "configmap", "base-rules", namespace=ns)
    wait_for(lambda: [n for n, _ in sources(kubectl, ns) or []] == ["other-team"], what="a deleted ConfigMap")
    # rulers off: pruned
    kubectl("patch", "thanoscluster", "demo", "--type=merge", "-p", json.dumps({"spec": {"ruler": {"enabled": False}}}),
            namespace=ns)
    wait_for(lambda: kget(kubectl, "statefulset", "thanos-rule-demo", ns) is None, what="rulers pruned")


def test_ruler_fields_are_validated_by_the_api_server(kubectl, pythanos_crds, namespace):
    kubectl("apply", "-f", "-", namespace=namespace, input=tc_yaml("ok", MINIMAL_TC + """\
ruler:
  enabled: true
  ruleSelector: {matchLabels: {team: a}}
"""))
    spec = kubectl.json("get", "thanoscluster", "ok", namespace=namespace)["spec"]["ruler"]
    assert spec["replicaExternalLabelName"] == "rule_replica" and spec["evaluationInterval"] == "1m"
    err = rejected(kubectl, tc_yaml("bad", MINIMAL_TC + """\
ruler:
  enabled: true
  externalLabels: {rule_replica: x}
"""), namespace)
    assert "externalLabels must not contain the replica label rule_replica" in err
    err = rejected(kubectl, tc_yaml("bad2", MINIMAL_TC + """\
ruler:
  ruleSelector: {matchExpressions: [{key: a, operator: Sometimes}]}
"""), namespace)
    assert "Sometimes" in err


def test_rule_example_applies_and_renders(kubectl, namespace, op_log, thanos_bin, tmp_path):
    """manifests/examples-rule (the tutorial plus rulers and a labelled rule ConfigMap), applied as its README
    says, renders: two rulers with the ConfigMap's file, the queriers over them de-duplicating on
    rule_replica; the example's rule file passes a real ``thanos tools rules-check`` and our loader."""
    ns = namespace
    kubectl("apply", "--server-side", "-k", str(ROOT / "manifests" / "examples-rule"), namespace=ns)
    wait_for(lambda: sources(kubectl, ns) == [("rules-demo", ["rules-demo-prometheus.yaml"])],
             what=f"rulers with the example's rule file (now {sources(kubectl, ns)})")
    assert kget(kubectl, "statefulset", "thanos-rule-demo", ns)["spec"]["replicas"] == 2
    q = args_of(kget(kubectl, "deployment", "thanos-query-demo", ns), "thanos-query")
    wait_for(lambda: "--query.replica-label=rule_replica" in args_of(
        kget(kubectl, "deployment", "thanos-query-demo", ns), "thanos-query"), what=f"querier replica label ({q})")
    text = yaml.safe_load((ROOT / "manifests" / "examples-rule" / "rules-demo.yaml").read_text())["data"][
        "prometheus.yaml"]
    f = tmp_path / "rules-demo-prometheus.yaml"
    f.write_text(text)
    r = subprocess.run([thanos_bin, "tools", "rules-check", f"--rules={f}"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    from pythanos.rule.rulefile import load_files

    groups = load_files([str(f)])
    assert [(g.name, g.partial_response_strategy, [x.name for x in g.rules]) for g in groups] == [
        ("prometheus", "ABORT", ["job:up:sum", "PrometheusTargetDown"]), ("watchdog", "WARN", ["Watchdog"])]
