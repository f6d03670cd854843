"""The operator deploys the query frontend (ThanosCluster.spec.queryFrontend): renders, flags, API server.

* Renders (no cluster): the golden of the tutorial's cluster with a frontend of two replicas over memcached;
  the other cache forms (IN-MEMORY, REDIS, a Secret's configuration mounted, none) as flags; without the
  section nothing else changes; its Deployment counts in the cluster's Available condition.
* The rendered command line is accepted by a real ``thanos query-frontend`` (v0.42) and by ours, and both,
  started with it (their listen address and downstream URL pointed here), answer the querier's own answer.
* Against a real API server: the section's schema defaults and CEL rules; the operator running under the
  install's RBAC renders the Deployment, Service and PodDisruptionBudget, and their removal with the section.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from peers import REGISTRY, free_ports, start_thanos_query  # noqa: E402
from pythanos_operator import render  # noqa: E402
import test_operator_render as _render_tests  # noqa: E402
from test_operator_render import DEFAULTS, NS, _by, _container, _golden  # noqa: E402

tc, eu1, us1 = _render_tests.tc, _render_tests.eu1, _render_tests.us1   # the example objects, as fixtures

FE = "thanos-query-frontend-demo"
FC = "thanos-query-frontend"   # its container
MEMCACHED = {"type": "MEMCACHED", "addresses": ["dns+memcached.monitoring.svc:11211"],
             "validity": "12h"}


def with_frontend(tc: dict, **over) -> dict:
    tc = copy.deepcopy(tc)
    tc["spec"]["queryFrontend"] = {"enabled": True, **over}
    return tc


def fe_args(tc: dict, **over) -> list[str]:
    objs = render.render_thanos_cluster(with_frontend(tc, **over), [], DEFAULTS)
    return _container(_by(objs, "Deployment", FE), FC)["args"]


def test_golden_thanoscluster_with_query_frontend(tc, eu1, us1):
    t = with_frontend(tc, replicas=2, cache=MEMCACHED, logQueriesLongerThan="10s",
                      extraArgs=["--query-frontend.forward-header=X-Scope-OrgID"])
    _golden("thanoscluster-demo-frontend", render.render_thanos_cluster(t, [eu1, us1], DEFAULTS))


def test_without_query_frontend_nothing_changes(tc, eu1, us1):
    plain = render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS)
    with_fe = render.render_thanos_cluster(with_frontend(tc), [eu1, us1], DEFAULTS)
    names = {(o["kind"], o["metadata"]["name"]) for o in with_fe} - {(o["kind"], o["metadata"]["name"]) for o in plain}
    assert names == {("Deployment", FE), ("Service", FE)}
    assert [o for o in with_fe if o["metadata"]["name"] != FE] == plain
    off = render.render_thanos_cluster(with_frontend(tc, enabled=False), [eu1, us1], DEFAULTS)
    assert off == plain


def test_frontend_sits_in_front_of_the_querier_service(tc):
    objs = render.render_thanos_cluster(with_frontend(tc, replicas=3), [], DEFAULTS)
    d = _by(objs, "Deployment", FE)
    args = _container(d, FC)["args"]
    assert args[0] == "query-frontend"
    assert f"--query-frontend.downstream-url=http://thanos-query-demo.{NS}.svc:10902" in args
    assert "--query-range.split-interval=24h" in args and "--query-frontend.compress-responses" in args
    svc = _by(objs, "Service", FE)
    sel = d["spec"]["selector"]["matchLabels"]
    assert all(d["spec"]["template"]["metadata"]["labels"][k] == v for k, v in sel.items())
    assert svc["spec"]["selector"] == sel and svc["spec"]["ports"] == [{"name": "http", "port": 10902,
                                                                         "targetPort": "http"}]
    q = _by(objs, "Deployment", "thanos-query-demo")
    qsel = q["spec"]["selector"]["matchLabels"]
    assert not all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in qsel.items()), \
        "the querier's selector must not pick the frontend's pods"
    assert _by(objs, "PodDisruptionBudget", FE)["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("cache, want", [
    ({}, "{config: {max_size: 256MB}, type: IN-MEMORY}"),
    ({"type": "IN-MEMORY", "maxSize": "1GB", "validity": "1h"}, "{config: {max_size: 1GB, validity: 1h}, type: IN-MEMORY}"),
    ({"type": "REDIS", "addresses": ["redis.cache.svc:6379"]}, "{config: {addr: 'redis.cache.svc:6379'}, type: REDIS}"),
    (MEMCACHED, "{config: {addresses: ['dns+memcached.monitoring.svc:11211'], expiration: 12h}, "
                "type: MEMCACHED}"),
])
def test_cache_forms_as_flags(tc, cache, want):
    args = fe_args(tc, cache=cache)
    assert f"--query-range.response-cache-config={want}" in args
    assert f"--labels.response-cache-config={want}" in args


def test_cache_from_a_secret_is_mounted_and_read_from_the_file(tc):
    objs = render.render_thanos_cluster(with_frontend(tc, cache={"configFrom": {"secretKeyRef": {
        "name": "fe-cache", "key": "cache.yaml"}}}), [], DEFAULTS)
    d = _by(objs, "Deployment", FE)
    c = _container(d, FC)
    path = f"{render.FRONTEND_CACHE_DIR}/cache.yaml"
    assert f"--query-range.response-cache-config-file={path}" in c["args"]
    assert f"--labels.response-cache-config-file={path}" in c["args"]
    assert not any(a.startswith("--query-range.response-cache-config=") for a in c["args"])
    assert {"name": "cache-config", "mountPath": render.FRONTEND_CACHE_DIR, "readOnly": True} in c["volumeMounts"]
    assert {"name": "cache-config", "secret": {"secretName": "fe-cache"}} in d["spec"]["template"]["spec"]["volumes"]


def test_no_cache(tc):
    assert not any("cache-config" in a for a in fe_args(tc, cache={"type": "NONE"}))


def test_frontend_counts_in_the_clusters_availability(tc):
    """The cluster's Available condition (and so Ready and Argo CD's health) waits for the frontend's pods
    and names its Deployment while they are not ready."""
    from pythanos_operator import status as st
    from pythanos_operator.handlers import _expected_workloads
    from test_operator_render import _wl

    objs = render.render_thanos_cluster(with_frontend(tc, replicas=2), [], DEFAULTS)
    expected = _expected_workloads(objs)
    assert ("Deployment", FE) in expected
    live = [_wl(k, n, 2 if n == FE else 1, 1) for k, n in expected]
    a = st.availability(expected, live)
    assert (a.cond.status, a.cond.reason) == ("False", st.SOME_PODS_NOT_READY)
    assert a.cond.message == f"Deployment {FE}: 1/2 ready"
    live = [_wl(k, n, 2 if n == FE else 1, 2 if n == FE else 1) for k, n in expected]
    assert st.availability(expected, live).cond.status == "True"


# ---------------------------------------------------------------------------------------------- the command line

def _local(args: list[str], port: int, downstream: str) -> list[str]:
    """The rendered command line with its listen address and downstream URL pointed here."""
    out = []
    for a in args:
        if a.startswith("--http-address="):
            a = f"--http-address=127.0.0.1:{port}"
        elif a.startswith("--query-frontend.downstream-url="):
            a = f"--query-frontend.downstream-url={downstream}"
        out.append(a)
    return out


def test_rendered_flags_parse_with_pythanos(tc):
    from pythanos.cli import build_parser
    from pythanos.frontend.flags import config_from_args

    for cache in ({}, MEMCACHED, {"type": "REDIS", "addresses": ["127.0.0.1:6379"]}, {"type": "NONE"}):
        ns = build_parser().parse_args(fe_args(tc, cache=cache, logQueriesLongerThan="5s", maxQueryParallelism=4))
        cfg = config_from_args(ns)
        assert cfg.downstream_url == f"http://thanos-query-demo.{NS}.svc:10902"
        assert cfg.split_interval_ms == 86_400_000 and cfg.max_query_parallelism == 4
        assert cfg.log_queries_longer_than_s == 5.0 and cfg.compress_responses
        kind = cache.get("type", "IN-MEMORY")
        for c in (cfg.response_cache, cfg.labels_response_cache):
            assert (c is None) if kind == "NONE" else (c.type == kind)


def test_rendered_flags_accepted_by_real_thanos(tc, thanos_bin):
    for cache in ({}, MEMCACHED, {"type": "REDIS", "addresses": ["127.0.0.1:6379"]}):
        args = fe_args(tc, cache=cache, logQueriesLongerThan="5s")
        r = subprocess.run([thanos_bin, *args, "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"thanos rejects {args}:\n{r.stderr[-2000:]}"
    bad = subprocess.run([thanos_bin, *fe_args(tc), "--query-range.no-such-flag", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0   # the check is real: an unknown flag fails


@pytest.mark.parametrize("impl", ["pythanos", "thanos"])
def test_rendered_frontend_answers_the_queriers_answer(impl, request, tc, thanos_bin, tmp_path):
    """Ours and Thanos', each started with the rendered command line (IN-MEMORY cache), in front of a real
    thanos query: a range query over two days answers the querier's own data, twice (the second from the
    cache)."""
    binary = request.getfixturevalue("pythanos_bin" if impl == "pythanos" else "thanos_bin")
    q = start_thanos_query(thanos_bin, [], tmp_path / "q")
    (port,) = free_ports(1)
    fe = REGISTRY.start(f"{impl}-query-frontend", [binary, *_local(fe_args(tc), port, q.url)], tmp_path / "fe")
    fe.url = f"http://127.0.0.1:{port}"
    try:
        fe.wait_http_ready("/-/ready", 60)
        params = urllib.parse.urlencode({"query": 'label_replace(vector(time()), "a", "b", "", "")',
                                         "start": 1_699_999_200, "end": 1_699_999_200 + 2 * 86400, "step": 3600})

        def get(base: str) -> dict:
            with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=60) as r:
                return json.loads(r.read())

        direct = get(q.url)
        assert direct["status"] == "success" and len(direct["data"]["result"][0]["values"]) == 49
        for _ in range(2):   # Thanos' frontend writes its own "analysis" member: the results are compared
            got = get(f"http://127.0.0.1:{port}")
            assert got["status"] == "success" and got["data"]["result"] == direct["data"]["result"]
    finally:
        fe.stop()
        q.stop()


# ---------------------------------------------------------------------------------------------- real API server

import yaml  # noqa: E402

import test_operator as _operator_tests  # noqa: E402
from test_crds import MINIMAL_TC, rejected, tc_yaml  # noqa: E402
from test_operator import EXAMPLES, apply_examples, args_of, kget, wait_for  # noqa: E402

installed, operator_kubeconfig = _operator_tests.installed, _operator_tests.operator_kubeconfig
operator, op_log = _operator_tests.operator, _operator_tests.op_log


def test_query_frontend_fields_are_validated_by_the_api_server(kubectl, pythanos_crds, namespace):
    kubectl("apply", "-f", "-", namespace=namespace, input=tc_yaml("ok", MINIMAL_TC + """\
queryFrontend:
  enabled: true
"""))
    spec = kubectl.json("get", "thanoscluster", "ok", namespace=namespace)["spec"]["queryFrontend"]
    assert spec == {"enabled": True, "replicas": 1, "splitInterval": "24h", "maxRetriesPerRequest": 5,
                    "maxQueryParallelism": 14, "compressResponses": True,
                    "cache": {"type": "IN-MEMORY", "maxSize": "256MB"}}
    err = rejected(kubectl, tc_yaml("bad", MINIMAL_TC + """\
queryFrontend:
  enabled: true
  cache: {type: MEMCACHED}
"""), namespace)
    assert "cache.addresses is required for a MEMCACHED or REDIS cache" in err
    err = rejected(kubectl, tc_yaml("bad2", MINIMAL_TC + """\
queryFrontend:
  splitInterval: "0"
"""), namespace)
    assert "splitInterval must not be 0 with a cache" in err
    err = rejected(kubectl, tc_yaml("bad3", MINIMAL_TC + """\
queryFrontend:
  cache: {type: FILESYSTEM}
"""), namespace)
    assert "FILESYSTEM" in err and "supported values" in err
    kubectl("apply", "-f", "-", namespace=namespace, input=tc_yaml("ok2", MINIMAL_TC + """\
queryFrontend:
  splitInterval: "0"
  cache: {type: NONE}
"""))


def test_operator_renders_and_removes_the_frontend(kubectl, namespace, op_log):
    ns = namespace
    apply_examples(kubectl, ns, "objstore-secret.yaml")
    t = yaml.safe_load((EXAMPLES / "thanoscluster.yaml").read_text())
    t["spec"]["queryFrontend"] = {"enabled": True, "replicas": 2,
                                  "cache": {"type": "REDIS", "addresses": ["redis.cache.svc:6379"]}}
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(t), namespace=ns)
    d = wait_for(lambda: kget(kubectl, "deployment", FE, ns), what="the frontend's Deployment")
    args = args_of(d, FC)
    assert args[0] == "query-frontend" and f"--query-frontend.downstream-url=http://thanos-query-demo.{ns}.svc:10902" \
        in args
    assert "--query-range.response-cache-config={config: {addr: 'redis.cache.svc:6379'}, type: REDIS}" in args
    assert d["spec"]["replicas"] == 2 and d["metadata"]["ownerReferences"][0]["kind"] == "ThanosCluster"
    assert kget(kubectl, "service", FE, ns)["spec"]["ports"][0]["port"] == 10902
    assert kget(kubectl, "poddisruptionbudget", FE, ns)["spec"]["maxUnavailable"] == 1
    t["spec"]["queryFrontend"]["enabled"] = False
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(t), namespace=ns)
    wait_for(lambda: kget(kubectl, "deployment", FE, ns) is None and kget(kubectl, "service", FE, ns) is None,
             what="the frontend's objects gone with the section")
