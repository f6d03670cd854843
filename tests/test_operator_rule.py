"""The operator deploys the ruler (ThanosCluster.spec.ruler): renders, rule files, flags, in-place reloads.

* Renders (no cluster): the golden of a ThanosCluster with rulers; rule files from ConfigMaps named or
  selected by label and from PrometheusRules selected by the same label selector, in the cluster's namespace
  only (ConfigMaps: their ``.yaml``/``.yml`` keys), written into the operator's own ConfigMaps
  (``thanos-rule-<tc>-rulefiles-<n>``) which the pods mount whole; a changed, added or removed file changes
  those ConfigMaps and never the pod template; more files than one ConfigMap should hold go into more of them
  (only then does the pod spec change); a file the ruler's loader refuses is left out and named; the config
  reloader container's command line is one ``pythanos config-reloader`` accepts.
* The rendered command line is accepted by a real ``thanos rule`` (v0.42) and parsed by ours; the
  rendered ruler, ours and Thanos', started on the files as the kubelet lays out the mounted ConfigMaps,
  loads every selected group (the rules directory's globs match them and nothing else such a volume holds);
  with our config reloader beside it (the pod's second container), it takes edited, added and removed files
  through ``/-/reload`` without a restart.
* Against a real API server with the operator running under the install's RBAC: ConfigMap edits, selection
  and deletion reach the rulers' ConfigMap and never the StatefulSet; a file that does not load gives the
  RuleFiles condition and Warning Events; prometheus-operator's real PrometheusRule CRD installed after the
  operator started, PrometheusRules reaching the rulers (read by the resync thread, and watched by an operator
  started after the CRD), and the CRD's removal taking their files away.
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
from pythanos_operator import render, rulefiles  # noqa: E402
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
BAD = """groups:
  - name: broken
    rules:
      - record: job:up:sum
        expr: sum by (job) (up
"""
STS, CM0 = "thanos-rule-demo", "thanos-rule-demo-rulefiles-0"


def with_ruler(tc: dict, **over) -> dict:
    tc = copy.deepcopy(tc)
    tc["spec"]["ruler"] = {**RULER, **over}
    return tc


def cm(name: str, data: dict, labels: dict | None = None, ns: str = NS) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "data": data}


def prule(name: str, groups: list, labels: dict | None = None, ns: str = NS, uid: str = "") -> dict:
    md = {"name": name, "namespace": ns, "labels": labels or {}, **({"uid": uid} if uid else {})}
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": md,
            "spec": {"groups": groups}}


CMS = [
    cm("base-rules", {"a.yaml": GROUP_A, "README.md": "not a rule file"}),          # named
    cm("team-rules", {"b.yml": GROUP_B}, {"pythanos.io/rules": "demo"}),             # selected
    cm("other-team", {"c.yaml": GROUP_A}, {"pythanos.io/rules": "other"}),           # not selected
    cm("team-rules-elsewhere", {"d.yaml": GROUP_A}, {"pythanos.io/rules": "demo"}, ns="other"),
]
NODE_GROUPS = [{"name": "node", "interval": "1m", "rules": [
    {"record": "instance:up:count", "expr": "count by (instance) (up)"},
    {"alert": "One", "expr": 1, "for": "5m", "labels": {"severity": "info"}}]}]   # an int expr, as the CRD allows
PRS = [
    prule("node-rules", NODE_GROUPS, {"pythanos.io/rules": "demo"}, uid="5f0c7a52-0000-4000-8000-000000000001"),
    prule("unselected", NODE_GROUPS, {"pythanos.io/rules": "other"}),
    prule("node-rules", NODE_GROUPS, {"pythanos.io/rules": "demo"}, ns="other"),
]
PR_FILE = f"{NS}-node-rules-5f0c7a52-0000-4000-8000-000000000001.yaml"


def rendered(t: dict, cms=CMS, prs=(), **kw) -> list[dict]:
    return render.render_thanos_cluster(t, [], DEFAULTS, rule_shards=rulefiles.build(t, cms, prs).shards, **kw)


def data_of(objs: list[dict]) -> dict[str, str]:
    """Every rule file of the rulers' ConfigMaps (checked to be disjoint)."""
    out: dict[str, str] = {}
    for o in objs:
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(STS + "-rulefiles-"):
            assert not set(out) & set(o["data"])
            out.update(o["data"])
    return out


def template(objs: list[dict]) -> dict:
    return _by(objs, "StatefulSet", STS)["spec"]["template"]


def test_golden_thanoscluster_with_rulers(tc, eu1, us1):
    t = with_ruler(tc)
    _golden("thanoscluster-demo-rule", render.render_thanos_cluster(
        t, [us1, eu1], DEFAULTS, rule_shards=rulefiles.build(t, CMS, PRS).shards))


def test_without_ruler_nothing_changes(tc, eu1, us1):
    off = copy.deepcopy(tc)
    off["spec"]["ruler"] = {"enabled": False, "replicas": 3, "ruleConfigMaps": ["base-rules"]}
    assert render.render_thanos_cluster(off, [us1, eu1], DEFAULTS, rule_shards=[{"x.yaml": GROUP_A}]) == \
        render.render_thanos_cluster(tc, [us1, eu1], DEFAULTS)


def test_rule_files_named_or_selected_into_the_operators_config_map(tc):
    t = with_ruler(tc)
    assert [render.name_of(c) for c in rulefiles.selected_config_maps(t, CMS)] == ["base-rules", "team-rules"]
    objs = rendered(t)
    assert data_of(objs) == {"base-rules-a.yaml": GROUP_A, "team-rules-b.yml": GROUP_B}
    gen = _by(objs, "ConfigMap", CM0)
    assert gen["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "pythanos-operator"
    assert gen["metadata"]["ownerReferences"][0]["kind"] == "ThanosCluster"
    # mounted whole (no items): the kubelet updates the files in place
    vol = next(v for v in template(objs)["spec"]["volumes"] if v["name"] == "rules")
    assert vol == {"name": "rules", "projected": {"sources": [{"configMap": {"name": CM0}}]}}
    assert "annotations" not in template(objs)["metadata"]
    # nothing selected: the ConfigMap is there, empty, and the pod spec is the same
    none = rendered(with_ruler(tc, ruleConfigMaps=[], ruleSelector=None))
    assert _by(none, "ConfigMap", CM0)["data"] == {}
    assert template(none) == template(objs)
    # one of ours is never a source, whatever the selector says
    ours = cm("thanos-rule-demo-rulefiles-0", {"x.yaml": GROUP_A},
              {"app.kubernetes.io/managed-by": "pythanos-operator"})
    assert "thanos-rule-demo-rulefiles-0-x.yaml" not in data_of(rendered(
        with_ruler(tc, ruleSelector={"matchLabels": {"app.kubernetes.io/managed-by": "pythanos-operator"}}),
        [*CMS, ours]))


def test_prometheus_rules_selected_by_the_same_selector(tc):
    """PrometheusRules in the cluster's namespace that ``ruleSelector`` selects: one file each, named as
    prometheus-operator names it (namespace, name, uid), holding ``spec.groups``; an integer ``expr`` (the
    CRD allows one) becomes a string; the file loads with the ruler's loader."""
    t = with_ruler(tc)
    files = data_of(rendered(t, prs=PRS))
    assert sorted(files) == ["base-rules-a.yaml", PR_FILE, "team-rules-b.yml"]
    import yaml

    doc = yaml.safe_load(files[PR_FILE])
    assert doc["groups"][0]["name"] == "node" and doc["groups"][0]["rules"][1]["expr"] == "1"
    assert doc["groups"][0]["rules"][0] == NODE_GROUPS[0]["rules"][0]
    from pythanos.rule.rulefile import parse_rules

    [g] = parse_rules(files[PR_FILE], PR_FILE)
    assert (g.name, g.interval_s, [r.name for r in g.rules]) == ("node", 60.0, ["instance:up:count", "One"])
    # no selector: no PrometheusRule (ruleConfigMaps names ConfigMaps only)
    assert sorted(data_of(rendered(with_ruler(tc, ruleSelector=None), prs=PRS))) == ["base-rules-a.yaml"]


def test_a_changed_rule_file_changes_the_config_map_not_the_pod_template(tc):
    """The rulers reload in place: an edited, added or removed file (ConfigMap key or PrometheusRule)
    changes the rulers' ConfigMap and nothing of the StatefulSet."""
    t = with_ruler(tc)
    base = rendered(t, prs=PRS[:1])
    edited = copy.deepcopy(CMS)
    edited[1]["data"]["b.yml"] = GROUP_B.replace("vector(1)", "vector(2)")
    added = [*copy.deepcopy(CMS), cm("more-rules", {"e.yaml": GROUP_A}, {"pythanos.io/rules": "demo"})]
    pr_edited = copy.deepcopy(PRS[:1])
    pr_edited[0]["spec"]["groups"][0]["interval"] = "2m"
    variants = {"edited": rendered(t, edited, PRS[:1]), "added": rendered(t, added, PRS[:1]),
                "removed": rendered(t, CMS[:1], PRS[:1]), "pr-edited": rendered(t, CMS, pr_edited),
                "pr-removed": rendered(t, CMS, [])}
    for what, objs in variants.items():
        assert data_of(objs) != data_of(base), what
        assert _by(objs, "StatefulSet", STS) == _by(base, "StatefulSet", STS), what
    unselected = copy.deepcopy(CMS)
    unselected[2]["data"]["c.yaml"] = "groups: []\n"
    not_rules = copy.deepcopy(CMS)
    not_rules[0]["data"]["README.md"] = "changed"
    assert rendered(t, unselected, PRS[:1]) == rendered(t, not_rules, PRS[:1]) == base


def test_rule_files_beyond_one_config_map_are_sharded(tc):
    """At most 512 KiB of files a ConfigMap (the API server takes 1 MiB), files by name; the pod mounts every
    shard, and only a change in their number changes the pod template."""
    t = with_ruler(tc, ruleConfigMaps=[], ruleSelector={"matchLabels": {"pythanos.io/rules": "big"}})
    rec = "".join(f"      - record: r{i}:sum\n        expr: sum(up{{job=\"{'x' * 60}{i}\"}})\n" for i in range(1000))
    big = f"groups:\n  - name: big\n    rules:\n{rec}"
    assert 110_000 < len(big) < 130_000   # four to a ConfigMap
    sources = [cm(f"big-{i}", {"rules.yaml": big.replace("name: big", f"name: big{i}")}, {"pythanos.io/rules": "big"})
               for i in range(5)]
    objs = rendered(t, sources)
    shards = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(STS + "-rulefiles-")]
    assert [o["metadata"]["name"] for o in shards] == [f"{STS}-rulefiles-{i}" for i in range(2)]
    for o in shards:
        assert sum(len(k.encode()) + len(v.encode()) for k, v in o["data"].items()) <= rulefiles.MAX_SHARD_BYTES
    assert sorted(data_of(objs)) == [f"big-{i}-rules.yaml" for i in range(5)]
    assert list(shards[0]["data"]) == [f"big-{i}-rules.yaml" for i in range(4)]
    vol = next(v for v in template(objs)["spec"]["volumes"] if v["name"] == "rules")
    assert vol["projected"]["sources"] == [{"configMap": {"name": f"{STS}-rulefiles-{i}"}} for i in range(2)]
    # another file that still fits: the same pod template; one more shard: a new one
    more = rendered(t, [*sources, cm("extra", {"rules.yaml": GROUP_A}, {"pythanos.io/rules": "big"})])
    assert len(data_of(more)) == 6 and template(more) == template(objs)
    assert template(rendered(t, sources[:2])) != template(objs)


def test_rule_files_that_do_not_load_are_left_out_and_named(tc):
    """Checked with the ruler's own loader: a bad ConfigMap key and a bad PrometheusRule are left out (the
    others stay), each problem naming its object, key and the loader's message."""
    t = with_ruler(tc)
    cms = [*CMS, cm("broken", {"x.yaml": BAD, "ok.yaml": GROUP_A}, {"pythanos.io/rules": "demo"})]
    bad_pr = prule("bad-pr", [{"name": "g", "rules": [{"record": "x", "expr": "up", "for": "5m"}]}],
                   {"pythanos.io/rules": "demo"}, uid="u-1")
    rf = rulefiles.build(t, cms, [*PRS, bad_pr])
    assert sorted(rf.shards[0]) == ["base-rules-a.yaml", "broken-ok.yaml", PR_FILE, "team-rules-b.yml"]
    assert [p.source for p in rf.problems] == ["ConfigMap broken, key x.yaml", "PrometheusRule bad-pr"]
    assert str(rf.problems[0]) == ('ConfigMap broken, key x.yaml: 5:15: group "broken", rule 1, "job:up:sum": '
                                   'could not parse expression: 1:17: parse error: unclosed left parenthesis')
    assert "field 'for' is invalid in recording rule" in str(rf.problems[1]) or "invalid field 'for'" in str(
        rf.problems[1]), str(rf.problems[1])
    assert rf.problems[1].ref["metadata"] == {"name": "bad-pr", "namespace": NS, "uid": "u-1"}
    assert (rf.files, rf.config_maps, rf.prometheus_rules) == (4, 3, 2)
    assert rulefiles.summary(rf).startswith("4 rule files from 3 ConfigMaps and 2 PrometheusRules in 1 ConfigMap; "
                                            "left out (2): ConfigMap broken, key x.yaml: 5:15:")
    # experimental functions load when the rulers are run with them
    exp = cm("exp", {"e.yaml": GROUP_A.replace("sum by (job) (up)", "sort_by_label(up, \"job\")")},
             {"pythanos.io/rules": "demo"})
    assert [p.source for p in rulefiles.build(t, [exp], []).problems] == ["ConfigMap exp, key e.yaml"]
    t_exp = with_ruler(tc, extraArgs=["--enable-feature=promql-experimental-functions"])
    assert rulefiles.build(t_exp, [exp], []).problems == ()


def test_a_change_rechecks_the_changed_file_only(tc):
    """The operator's checker remembers verdicts by content: after one file changes, a new build runs the
    loader on that file alone (it parses every expression, so a large rule set is not re-parsed each time)."""
    seen: list[str] = []

    def counting(content: str, source: str, experimental: bool):
        seen.append(source)
        return rulefiles.load_check(content, source, experimental)

    check = rulefiles.CachedCheck(counting)
    t = with_ruler(tc)
    first = rulefiles.build(t, CMS, PRS, check=check)
    assert sorted(seen) == ["ConfigMap base-rules, key a.yaml", "ConfigMap team-rules, key b.yml",
                            "PrometheusRule node-rules"]
    edited = copy.deepcopy(CMS)
    edited[1]["data"]["b.yml"] = BAD
    seen.clear()
    second = rulefiles.build(t, edited, PRS, check=check)
    assert seen == ["ConfigMap team-rules, key b.yml"]
    assert [p.source for p in second.problems] == ["ConfigMap team-rules, key b.yml"] and not first.problems
    seen.clear()
    assert rulefiles.build(t, edited, PRS, check=check) == second and seen == []


def test_rule_file_names_and_sizes_a_config_map_cannot_hold(tc):
    """A file name that is no valid ConfigMap key (too long) and a file larger than a shard are left out and
    named; so is a second file of one name."""
    t = with_ruler(tc, ruleConfigMaps=[], ruleSelector={"matchLabels": {"r": "x"}})
    long_key = "k" * 250 + ".yaml"
    huge = "groups: []\n" + "#" * rulefiles.MAX_SHARD_BYTES
    rf = rulefiles.build(t, [cm("a", {long_key: GROUP_A, "huge.yaml": huge, "ok.yaml": GROUP_A}, {"r": "x"})], [])
    assert sorted(rf.shards[0]) == ["a-ok.yaml"]
    assert [str(p) for p in rf.problems] == [
        f"ConfigMap a, key huge.yaml: {len(huge) + len('a-huge.yaml')} bytes, more than the 524288 a rule file "
        "may have",
        f"ConfigMap a, key {long_key}: file name 'a-{long_key}' is not a valid ConfigMap key (at most 253 "
        "characters of [-._a-zA-Z0-9])"]
    twice = [rulefiles.RuleFile("x.yaml", GROUP_A, "one"), rulefiles.RuleFile("x.yaml", GROUP_B, "two")]
    ok, problems = rulefiles.admit(twice, False)
    assert [f.source for f in ok] == ["one"] and [str(p) for p in problems] == ["two: file name x.yaml is taken by one"]


def test_the_reloader_container(tc):
    """Same image as the ruler, the ruler's reload endpoint on localhost, the rules directory watched, its own
    port for metrics and probes, the same locked-down securityContext, small resources."""
    t = with_ruler(tc)
    spec = template(rendered(t))["spec"]
    ruler, reloader = spec["containers"]
    assert reloader["name"] == "config-reloader" and reloader["image"] == ruler["image"] == "pythanos:0.1.0"
    assert reloader["args"] == ["config-reloader", "--log.level=info", "--reload-url=http://127.0.0.1:10902/-/reload",
                                f"--watched-dir={render.RULE_DIR}", "--listen-address=:8081"]
    assert reloader["ports"] == [{"name": "reloader-web", "containerPort": 8081}]
    assert reloader["securityContext"] == ruler["securityContext"] == render.CONTAINER_SECURITY
    assert {"name": "rules", "mountPath": render.RULE_DIR, "readOnly": True} in reloader["volumeMounts"]
    assert reloader["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "reloader-web"}
    assert reloader["resources"]["requests"] == {"cpu": "10m", "memory": "64Mi"}
    assert "--rule-file=/etc/thanos/rules/*.yaml" in ruler["args"]
    from pythanos.cli import build_parser
    from pythanos.configreloader.flags import config_from_args

    cfg = config_from_args(build_parser().parse_args(reloader["args"]))
    assert (cfg.reload_url, cfg.watched_dirs, cfg.listen_address) == (
        "http://127.0.0.1:10902/-/reload", [render.RULE_DIR], ":8081")


def test_queriers_and_compactor_know_the_rulers(tc, us1):
    t = with_ruler(tc)
    objs = render.render_thanos_cluster(t, [us1], DEFAULTS, rule_shards=rulefiles.build(t, CMS, []).shards)
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


def kubelet_volume(root: Path, files: dict[str, str]) -> Path:
    """A directory as the kubelet lays out a ConfigMap (or projected) volume: the files in a timestamped
    directory, ``..data`` pointing at it, and a top-level ``<key> -> ..data/<key>`` link per key (nothing
    but those links may be taken for a rule file)."""
    data = root / "..2026_12_03_00_00_00.000000001"
    data.mkdir(parents=True)
    (root / "..data").symlink_to(data.name)
    for key, text in files.items():
        (data / key).write_text(text)
        (root / key).symlink_to(f"..data/{key}")
    return root


def _ruler_args(t: dict, rules: Path, tmp_path: Path) -> list[str]:
    """The rendered ruler's command line, pointed at local paths (no listen addresses: the caller's)."""
    args = [a.replace("$(POD_NAME)", "thanos-rule-demo-0") for a in
            _container(_by(rendered(t), "StatefulSet", "thanos-rule-demo"), "thanos-rule")["args"]]
    local = {"--data-dir": str(tmp_path / "data"), "--objstore.config-file": str(tmp_path / "objstore.yml")}
    (tmp_path / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path / 'bucket'}\n")
    args = [f"{a.split('=', 1)[0]}={local[a.split('=', 1)[0]]}" if a.split("=", 1)[0] in local else a
            for a in args]
    return [a.replace(render.RULE_DIR, str(rules)) for a in args
            if not a.startswith(("--grpc-address", "--http-address"))]


def _start_ruler(impl: str, binary: str, args: list[str], work: Path) -> Process:
    def launch(ports: list[int]) -> Process:
        h, g = ports
        p = REGISTRY.start(f"{impl}-rule", [binary, *args, f"--http-address=127.0.0.1:{h}",
                                            f"--grpc-address=127.0.0.1:{g}"], work)
        p.url = f"http://127.0.0.1:{h}"
        return p

    return start_on_free_ports(2, launch, lambda p: p.wait_http_ready("/-/ready", 120))


def _groups(p: Process) -> list[tuple[str, str, list[str]]]:
    from peers import http_get

    code, body = http_get(p.url + "/api/v1/rules")
    assert code == 200, body
    return sorted((g["name"], Path(g["file"]).name, [r["name"] for r in g["rules"]])
                  for g in json.loads(body)["data"]["groups"])


@pytest.mark.parametrize("impl", ["pythanos", "thanos"])
def test_rendered_ruler_loads_the_selected_files(impl, request, tc, tmp_path):
    binary = request.getfixturevalue("pythanos_bin" if impl == "pythanos" else "thanos_bin")
    t = with_ruler(tc)
    rules = kubelet_volume(tmp_path / "rules", data_of(rendered(t)))
    p = _start_ruler(impl, binary, _ruler_args(t, rules, tmp_path), tmp_path)
    try:
        assert _groups(p) == [("a", "base-rules-a.yaml", ["job:up:sum"]), ("b", "team-rules-b.yml", ["AlwaysFiring"])]
    finally:
        p.stop()


@pytest.mark.parametrize("impl", ["pythanos", "thanos"])
def test_the_ruler_pod_reloads_changed_files_in_place(impl, request, tc, tmp_path, pythanos_factory):
    """The rendered pod's two containers as processes: the ruler (ours, or a real ``thanos rule``) and our
    config reloader with the rendered flags, on a rules directory that changes as the kubelet changes a
    mounted ConfigMap (``..data`` swapped in one rename): an edited, an added and a removed file reach the
    ruler's /api/v1/rules through ``POST /-/reload``, and the ruler is the same process throughout."""
    from configmap_volume import write_configmap_volume
    from peers import listening

    binary = request.getfixturevalue("pythanos_bin" if impl == "pythanos" else "thanos_bin")
    t = with_ruler(tc)
    files = data_of(rendered(t))
    rules = write_configmap_volume(tmp_path / "rules", files)
    ruler = _start_ruler(impl, binary, _ruler_args(t, rules, tmp_path), tmp_path)
    try:
        pid = ruler.pid
        assert [g[0] for g in _groups(ruler)] == ["a", "b"]
        spec = template(rendered(t))["spec"]
        args = [a.replace(render.RULE_DIR, str(rules)) for a in _container({"spec": {"template": {"spec": spec}}},
                                                                             "config-reloader")["args"]]
        args = [f"--reload-url={ruler.url}/-/reload" if a.startswith("--reload-url=") else
                "--listen-address=127.0.0.1:0" if a.startswith("--listen-address=") else a for a in args]
        reloader = pythanos_factory(args, name="config-reloader")
        reloader.url = "http://" + listening(reloader, want=("http",))["http"]

        def now(want: list, what: str) -> None:
            ruler.wait_ready(lambda: _groups(ruler) == want, 60, what=f"{what} (now {_groups(ruler)})")

        edited = {**files, "base-rules-a.yaml": GROUP_A.replace("name: a", "name: a2")}
        write_configmap_volume(rules, edited)
        now([("a2", "base-rules-a.yaml", ["job:up:sum"]), ("b", "team-rules-b.yml", ["AlwaysFiring"])], "edited")
        added = {**edited, "more-c.yaml": GROUP_A.replace("name: a", "name: c")}
        write_configmap_volume(rules, added)
        now([("a2", "base-rules-a.yaml", ["job:up:sum"]), ("b", "team-rules-b.yml", ["AlwaysFiring"]),
             ("c", "more-c.yaml", ["job:up:sum"])], "added")
        write_configmap_volume(rules, {k: v for k, v in added.items() if k != "team-rules-b.yml"})
        now([("a2", "base-rules-a.yaml", ["job:up:sum"]), ("c", "more-c.yaml", ["job:up:sum"])], "removed")
        assert ruler.alive() and ruler.pid == pid and reloader.alive()
    finally:
        ruler.stop()


# ---------------------------------------------------------------------------------------------- real API server

import yaml  # noqa: E402

import test_operator as _operator_tests  # noqa: E402
from test_crds import MINIMAL_TC, rejected, tc_yaml  # noqa: E402
from test_operator import (EXAMPLES, apply_examples, args_of, cond, events_for, kget, start_operator,  # noqa: E402
                           stop_operator, wait_cond, wait_for)

# the running operator (under the install's RBAC) of test_operator, as fixtures of this module
installed, operator_kubeconfig = _operator_tests.installed, _operator_tests.operator_kubeconfig
operator, op_log = _operator_tests.operator, _operator_tests.op_log

PR_CRD = Path(__file__).resolve().parent / "crds" / "monitoring.coreos.com_prometheusrules.yaml"
PR_CRD_NAME = "prometheusrules.monitoring.coreos.com"


def ruler_cluster(**over) -> str:
    t = yaml.safe_load((EXAMPLES / "thanoscluster.yaml").read_text())
    t["spec"]["ruler"] = {"enabled": True, "ruleConfigMaps": ["base-rules"],
                          "ruleSelector": {"matchLabels": {"pythanos.io/rules": "demo"}}, **over}
    return yaml.safe_dump(t)


def rule_files(kubectl, ns: str) -> dict | None:
    """The files in the rulers' ConfigMap as the API server has it (None: not there)."""
    c = kget(kubectl, "configmap", CM0, ns)
    return None if c is None else c.get("data") or {}


def pod_template(kubectl, ns: str) -> tuple[dict, int]:
    """The rulers' pod template and the StatefulSet's generation (any spec change bumps it)."""
    sts = kget(kubectl, "statefulset", STS, ns)
    return sts["spec"]["template"], sts["metadata"]["generation"]


def apply_cm(kubectl, ns: str, c: dict) -> None:
    kubectl("apply", "-f", "-", input=json.dumps({**c, "metadata": {**c["metadata"], "namespace": ns}}), namespace=ns)


def warnings(kubectl, ns: str, name: str, reason: str) -> list[dict]:
    return [e for e in events_for(kubectl, ns, name) if e["reason"] == reason and e["type"] == "Warning"]


def test_rulers_follow_their_rule_config_maps(kubectl, namespace, op_log):
    """The rulers appear with the cluster, the queriers get them; a selected ConfigMap edited, newly selected,
    relabelled away or deleted rewrites the rulers' ConfigMap at once (no change of the ThanosCluster) and
    never their pod template (the pods reload in place); a file that does not load is left out, named in the
    RuleFiles condition and in Warning Events on the ThanosCluster and on its ConfigMap."""
    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml")
    for c in CMS[:3]:
        apply_cm(kubectl, ns, c)
    kubectl("apply", "--server-side", "-f", "-", input=ruler_cluster(), namespace=ns)
    want = {"base-rules-a.yaml": GROUP_A, "team-rules-b.yml": GROUP_B}
    wait_for(lambda: rule_files(kubectl, ns) == want, what=f"the rulers' files (now {rule_files(kubectl, ns)})")
    sts = wait_for(lambda: kget(kubectl, "statefulset", STS, ns), what="rulers")
    args = args_of(sts, "thanos-rule")
    assert args[0] == "rule" and f"--query=thanos-query-demo.{ns}.svc:10902" in args
    assert args_of(sts, "config-reloader")[0] == "config-reloader"
    vol = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "rules")
    assert vol["projected"]["sources"] == [{"configMap": {"name": CM0}}]
    assert kget(kubectl, "service", STS, ns)["spec"]["clusterIP"] == "None"
    sd = yaml.safe_load(kget(kubectl, "configmap", "thanos-query-demo-endpoints", ns)["data"]["endpoints.yaml"])
    assert {"address": f"dnssrv+_grpc._tcp.thanos-rule-demo.{ns}.svc"} in sd["endpoints"]
    c = cond(wait_cond(kubectl, "thanoscluster", "demo", ns, "RuleFiles", "True", "RuleFilesLoaded"), "RuleFiles")
    assert c["message"] == "2 rule files from 2 ConfigMaps and 0 PrometheusRules in 1 ConfigMap"
    before = pod_template(kubectl, ns)

    def follows(files: dict, what: str) -> None:
        wait_for(lambda: rule_files(kubectl, ns) == files, what=f"{what} (now {sorted(rule_files(kubectl, ns))})")
        assert pod_template(kubectl, ns) == before, what

    # an edited file
    edited = GROUP_B.replace("vector(1)", "vector(2)")
    kubectl("patch", "configmap", "team-rules", "--type=merge", "-p", json.dumps({"data": {"b.yml": edited}}),
            namespace=ns)
    follows({"base-rules-a.yaml": GROUP_A, "team-rules-b.yml": edited}, "an edited file")
    # a new selected ConfigMap joins; one relabelled away leaves; a deleted named one leaves
    kubectl("label", "configmap", "other-team", "pythanos.io/rules=demo", "--overwrite", namespace=ns)
    follows({"base-rules-a.yaml": GROUP_A, "other-team-c.yaml": GROUP_A, "team-rules-b.yml": edited},
            "a newly selected ConfigMap")
    kubectl("label", "configmap", "team-rules", "pythanos.io/rules=gone", "--overwrite", namespace=ns)
    follows({"base-rules-a.yaml": GROUP_A, "other-team-c.yaml": GROUP_A}, "a ConfigMap no longer selected")
    kubectl("delete", "configmap", "base-rules", namespace=ns)
    follows({"other-team-c.yaml": GROUP_A}, "a deleted ConfigMap")

    # a file that does not load: left out, named in the condition and in Events; fixed: back
    apply_cm(kubectl, ns, cm("broken", {"x.yaml": BAD, "ok.yaml": GROUP_B}, {"pythanos.io/rules": "demo"}))
    follows({"broken-ok.yaml": GROUP_B, "other-team-c.yaml": GROUP_A}, "the loadable file of a broken ConfigMap")
    c = cond(wait_cond(kubectl, "thanoscluster", "demo", ns, "RuleFiles", "False", "RuleFileInvalid"), "RuleFiles")
    assert ('left out (1): ConfigMap broken, key x.yaml: 5:15: group "broken", rule 1, "job:up:sum": could not '
            'parse expression: 1:17: parse error: unclosed left parenthesis') in c["message"], c
    for obj in ("demo", "broken"):
        wait_for(lambda: [e for e in warnings(kubectl, ns, obj, "RuleFileInvalid")
                          if "ConfigMap broken, key x.yaml: 5:15:" in e["message"]], what=f"a Warning Event on {obj}")
    kubectl("patch", "configmap", "broken", "--type=merge", "-p", json.dumps({"data": {"x.yaml": GROUP_A}}),
            namespace=ns)
    follows({"broken-ok.yaml": GROUP_B, "broken-x.yaml": GROUP_A, "other-team-c.yaml": GROUP_A}, "a fixed file")
    wait_cond(kubectl, "thanoscluster", "demo", ns, "RuleFiles", "True", "RuleFilesLoaded")

    # rulers off: pruned, their ConfigMap too; the condition goes
    kubectl("patch", "thanoscluster", "demo", "--type=merge", "-p", json.dumps({"spec": {"ruler": {"enabled": False}}}),
            namespace=ns)
    wait_for(lambda: kget(kubectl, "statefulset", STS, ns) is None and rule_files(kubectl, ns) is None,
             what="rulers and their ConfigMap pruned")
    wait_for(lambda: not cond(kget(kubectl, "thanoscluster", "demo", ns), "RuleFiles"), what="RuleFiles gone")


@pytest.fixture
def prometheus_rule_crd(kubectl):
    """prometheus-operator's PrometheusRule CRD (its real schema), installed by the test when it wants it;
    removed afterwards (the API server is the session's)."""
    def install() -> None:
        kubectl("apply", "--server-side", "-f", str(PR_CRD))
        kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PR_CRD_NAME}")
    yield install
    kubectl("delete", "crd", PR_CRD_NAME, "--ignore-not-found", "--wait=true", timeout=180)


def apply_prule(kubectl, ns: str, name: str, groups: list, labels: dict | None = None) -> dict:
    pr = prule(name, groups, labels or {"pythanos.io/rules": "demo"}, ns)
    kubectl("apply", "-f", "-", namespace=ns, input=json.dumps(pr))
    return kget(kubectl, "prometheusrule", name, ns)


def test_prometheus_rules_reach_the_rulers(kubectl, namespace, op_log, prometheus_rule_crd, operator_kubeconfig,
                                           tmp_path):
    """The operator runs without the PrometheusRule CRD; installed later, it is noticed (PrometheusRules are
    then read every resync interval): a selected PrometheusRule's groups reach the rulers' ConfigMap, follow
    its edits, leave with it; one the ruler's loader refuses (a recording rule with ``for``: the CRD's schema
    allows it) is left out with the RuleFiles condition and Events. An operator started with the CRD there
    watches them (a kopf watch event does it). The CRD removed, their files go; no operator died."""
    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml")
    kubectl("apply", "--server-side", "-f", "-", input=ruler_cluster(ruleConfigMaps=[]), namespace=ns)
    wait_for(lambda: rule_files(kubectl, ns) == {}, what="the rulers' empty ConfigMap")
    before = pod_template(kubectl, ns)
    assert "PrometheusRules (monitoring.coreos.com/v1) not watched" in op_log.output()

    prometheus_rule_crd()
    pr = apply_prule(kubectl, ns, "node-rules", NODE_GROUPS)
    fname = f"{ns}-node-rules-{pr['metadata']['uid']}.yaml"
    files = wait_for(lambda: rule_files(kubectl, ns) or None, what="the PrometheusRule's file")
    assert list(files) == [fname]
    assert yaml.safe_load(files[fname]) == {"groups": [{**NODE_GROUPS[0], "rules": [
        NODE_GROUPS[0]["rules"][0], {**NODE_GROUPS[0]["rules"][1], "expr": "1"}]}]}
    assert "PrometheusRule CRD installed after the operator started" in op_log.output()
    assert pod_template(kubectl, ns) == before
    # an edit follows; a PrometheusRule elsewhere or not selected does not count
    apply_prule(kubectl, ns, "unselected", NODE_GROUPS, {"pythanos.io/rules": "other"})
    edited = [{**NODE_GROUPS[0], "interval": "2m"}]
    apply_prule(kubectl, ns, "node-rules", edited)
    wait_for(lambda: yaml.safe_load((rule_files(kubectl, ns) or {}).get(fname, "{}")).get("groups", [{}])[0].get(
        "interval") == "2m", what="an edited PrometheusRule")
    assert list(rule_files(kubectl, ns)) == [fname] and pod_template(kubectl, ns) == before

    # refused by the ruler's loader, accepted by the CRD: left out and named
    bad = apply_prule(kubectl, ns, "bad-rules",
                      [{"name": "g", "rules": [{"record": "x:y", "expr": "up", "for": "5m"}]}])
    c = cond(wait_cond(kubectl, "thanoscluster", "demo", ns, "RuleFiles", "False", "RuleFileInvalid"), "RuleFiles")
    assert "left out (1): PrometheusRule bad-rules: " in c["message"] and "for" in c["message"], c
    assert list(rule_files(kubectl, ns)) == [fname]
    e = wait_for(lambda: warnings(kubectl, ns, "bad-rules", "RuleFileInvalid"),
                 what="an Event on the PrometheusRule")[0]
    assert e["involvedObject"]["uid"] == bad["metadata"]["uid"] and e["involvedObject"]["kind"] == "PrometheusRule"
    kubectl("delete", "prometheusrule", "bad-rules", namespace=ns)
    wait_cond(kubectl, "thanoscluster", "demo", ns, "RuleFiles", "True", "RuleFilesLoaded")

    # an operator started with the CRD there watches PrometheusRules: its own watch event re-renders
    second = start_operator(operator_kubeconfig, tmp_path, f"--namespace={ns}", "--standalone", name="with-crd")
    try:
        wait_for(lambda: f"ThanosCluster {ns}/demo: applied" in second.output(), what="the second operator's resume")
        assert "PrometheusRules (monitoring.coreos.com/v1) are watched" in second.output()
        apply_prule(kubectl, ns, "node-rules", NODE_GROUPS)
        wait_for(lambda: f"PrometheusRule {ns}/node-rules (MODIFIED): rule files of ThanosCluster demo change"
                 in second.output(), what=f"the watch event in the second operator:\n{second.output()[-3000:]}")
        kubectl("delete", "prometheusrule", "node-rules", namespace=ns)
        wait_for(lambda: rule_files(kubectl, ns) == {}, what="a deleted PrometheusRule's file gone")
        assert second.alive() and "Traceback" not in second.output(), second.output()[-4000:]
    finally:
        stop_operator(second)   # it would stop with the CRD's removal below (kopf's watch of it fails)

    apply_prule(kubectl, ns, "node-rules", NODE_GROUPS)
    wait_for(lambda: len(rule_files(kubectl, ns) or {}) == 1, what="a PrometheusRule's file again")
    kubectl("delete", "crd", PR_CRD_NAME, "--wait=true", timeout=180)
    wait_for(lambda: rule_files(kubectl, ns) == {}, what="PrometheusRules' files gone with their CRD")
    assert pod_template(kubectl, ns) == before


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
    wait_for(lambda: list(rule_files(kubectl, ns) or {}) == ["rules-demo-prometheus.yaml"],
             what=f"rulers with the example's rule file (now {rule_files(kubectl, ns)})")
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
