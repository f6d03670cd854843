"""gRPC TLS in the operator's pure renders (``ThanosCluster.spec.grpcTLS``, ``PrometheusHA.spec.sidecar.grpcTLS``),
the Secret check, the resync bookkeeping, and the rendered flags run by real Thanos (v0.42) over mutual TLS.

Without ``grpcTLS`` nothing changes: the golden files of tests/test_operator_render.py stay byte-identical, and
here the renders with and without a CA digest are equal.
"""
from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from pythanos_operator import render  # noqa: E402
from pythanos_operator.spec import GRPCTLS, check_tls_secret  # noqa: E402
from pythanos_operator.tlswatch import SecretWatch, outranked  # noqa: E402
from test_operator_render import DEFAULTS, NS, _by, _container, _defaulted  # noqa: E402
from test_operator_render import eu1, tc, us1  # noqa: E402,F401  (its example objects, as fixtures)

TLS = {"secretName": "thanos-grpc-tls", "serverName": "thanos-grpc.monitoring.svc"}
D = "/etc/thanos/grpc-tls"
SERVER = [f"--grpc-server-tls-cert={D}/tls.crt", f"--grpc-server-tls-key={D}/tls.key",
          f"--grpc-server-tls-client-ca={D}/ca.crt"]
CLIENT = ["--grpc-client-tls-secure", f"--grpc-client-tls-cert={D}/tls.crt", f"--grpc-client-tls-key={D}/tls.key",
          f"--grpc-client-tls-ca={D}/ca.crt", "--grpc-client-server-name=thanos-grpc.monitoring.svc"]
MOUNT = {"name": "grpc-tls", "mountPath": D, "readOnly": True}
VOLUME = {"name": "grpc-tls", "secret": {"secretName": "thanos-grpc-tls"}}
CA = "ab" * 32
ANNOTATION = {"pythanos.io/grpc-tls-ca-sha256": CA}


def _pod(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def _workloads(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] in ("StatefulSet", "Deployment")]


# ---------------------------------------------------------------------------------------------- nothing changes

def test_without_grpc_tls_a_ca_digest_changes_nothing(tc, eu1, us1):
    """The goldens pin the render without grpcTLS; a CA digest handed in without TLS adds nothing."""
    assert render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS, ca_sha256=CA) == \
        render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS)
    for p in (eu1, us1):
        for cluster in (tc, None):
            assert render.render_prometheus_ha(p, cluster, DEFAULTS, ca_sha256=CA) == \
                render.render_prometheus_ha(p, cluster, DEFAULTS)
    text = yaml.safe_dump_all(render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS)
                              + render.render_prometheus_ha(us1, tc, DEFAULTS))
    assert "tls" not in text and "grpc-tls" not in text


# ---------------------------------------------------------------------------------------------- ThanosCluster

def test_thanoscluster_flags_mounts_volumes_exactly(tc, eu1, us1):
    tc["spec"]["grpcTLS"] = dict(TLS)
    plain = render.render_thanos_cluster(_without_tls(tc), [eu1, us1], DEFAULTS)
    objs = render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS, ca_sha256=CA)

    q = _by(objs, "Deployment", "thanos-query-demo")
    qc, qplain = _container(q, "thanos-query"), _container(_by(plain, "Deployment"), "thanos-query")
    assert qc["args"] == qplain["args"] + SERVER + CLIENT
    assert qc["volumeMounts"] == [{"name": "endpoints", "mountPath": "/etc/thanos/sd", "readOnly": True}, MOUNT,
                                  {"name": "tmp", "mountPath": "/tmp"}]
    assert _pod(q)["volumes"] == _pod(_by(plain, "Deployment"))["volumes"] + [VOLUME]
    assert q["spec"]["template"]["metadata"] == {"labels": _by(plain, "Deployment")["spec"]["template"]["metadata"]
                                                 ["labels"], "annotations": ANNOTATION}

    s = _by(objs, "StatefulSet", "thanos-store-demo")
    splain = _by(plain, "StatefulSet", "thanos-store-demo")
    assert _container(s, "thanos-store")["args"] == _container(splain, "thanos-store")["args"] + SERVER
    assert _container(s, "thanos-store")["volumeMounts"] == [
        {"name": "data", "mountPath": "/var/thanos/store"},
        {"name": "objstore", "mountPath": "/etc/thanos/objstore", "readOnly": True}, MOUNT,
        {"name": "tmp", "mountPath": "/tmp"}]
    assert _pod(s)["volumes"] == [{"name": "objstore", "secret": {"secretName": "thanos-objstore"}},
                                  {"name": "tmp", "emptyDir": {}}, VOLUME, {"name": "data", "emptyDir": {}}]
    assert s["spec"]["template"]["metadata"]["annotations"] == ANNOTATION

    # the compactor speaks no gRPC: untouched; so are Services, ConfigMaps, PDBs
    assert _by(objs, "StatefulSet", "thanos-compact-demo") == _by(plain, "StatefulSet", "thanos-compact-demo")
    assert [o for o in objs if o["kind"] not in ("Deployment", "StatefulSet")] == \
        [o for o in plain if o["kind"] not in ("Deployment", "StatefulSet")]
    # probes stay HTTP
    for w in _workloads(objs):
        for c in _pod(w)["containers"]:
            for probe in ("livenessProbe", "readinessProbe"):
                assert set(c[probe]) - {"periodSeconds", "failureThreshold", "timeoutSeconds"} == {"httpGet"}, c[probe]
                assert c[probe]["httpGet"]["port"] == "http"


def test_every_store_shard_gets_tls(tc, eu1):
    tc["spec"]["grpcTLS"] = dict(TLS)
    tc["spec"]["storeGateway"] = {"shards": 2, "timePartitions": [{"maxTime": "-2w"}, {"minTime": "-2w"}],
                                  "extraArgs": ["--store.grpc.series-max-concurrency=5"]}
    objs = render.render_thanos_cluster(tc, [eu1], DEFAULTS, ca_sha256=CA)
    stores = [o for o in objs if o["metadata"]["name"].startswith("thanos-store-demo-")]
    assert len(stores) == 4
    for o in stores:
        args = _container(o, "thanos-store")["args"]
        assert args[-4:] == [*SERVER, "--store.grpc.series-max-concurrency=5"], "extraArgs stay last"
        assert VOLUME in _pod(o)["volumes"] and MOUNT in _container(o, "thanos-store")["volumeMounts"]


def test_client_auth_off_custom_keys_no_server_name(tc, eu1):
    tc["spec"]["grpcTLS"] = {"secretName": "own", "certKey": "cert.pem", "keyKey": "key.pem", "caKey": "chain.pem",
                             "clientAuth": False}
    objs = render.render_thanos_cluster(tc, [eu1], DEFAULTS, ca_sha256=CA)
    q = _container(_by(objs, "Deployment"), "thanos-query")
    server = [f"--grpc-server-tls-cert={D}/cert.pem", f"--grpc-server-tls-key={D}/key.pem"]
    client = ["--grpc-client-tls-secure", f"--grpc-client-tls-cert={D}/cert.pem",
              f"--grpc-client-tls-key={D}/key.pem", f"--grpc-client-tls-ca={D}/chain.pem"]
    assert [a for a in q["args"] if "tls" in a or "server-name" in a] == server + client
    store = _by(objs, "StatefulSet", "thanos-store-demo")
    assert [a for a in _container(store, "thanos-store")["args"] if "tls" in a] == server
    assert {"name": "grpc-tls", "secret": {"secretName": "own"}} in _pod(store)["volumes"]
    # without client auth a server never reads the CA: a new CA rolls only the querier (a client of the CA)
    assert "annotations" not in store["spec"]["template"]["metadata"]
    assert _by(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"] == ANNOTATION


def test_the_ca_digest_alone_rolls_pods(tc, eu1, us1):
    """Only the CA's digest reaches the pod templates: a renewed certificate (same CA) renders the same
    objects (no roll: Thanos reloads certificate and key from the files), another CA changes exactly the
    template annotation of the pods that read it."""
    tc["spec"]["grpcTLS"] = dict(TLS)
    a = render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS, ca_sha256=CA)
    b = render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS, ca_sha256="cd" * 32)
    assert len(a) == len(b)
    changed = [(x["kind"], x["metadata"]["name"]) for x, y in zip(a, b) if x != y]
    assert changed == [("Deployment", "thanos-query-demo"), ("StatefulSet", "thanos-store-demo")]
    for x, y in zip(a, b):
        if x != y:
            x["spec"]["template"]["metadata"].pop("annotations")
            y["spec"]["template"]["metadata"].pop("annotations")
            assert x == y
    for pha in (eu1, us1):
        sa = render.render_prometheus_ha(pha, tc, DEFAULTS, ca_sha256=CA)
        sb = render.render_prometheus_ha(pha, tc, DEFAULTS, ca_sha256="cd" * 32)
        assert [o["kind"] for o, p in zip(sa, sb) if o != p] == ["StatefulSet"]


# ---------------------------------------------------------------------------------------------- PrometheusHA

def test_member_sidecars_inherit_the_cluster_tls(tc, us1):
    tc["spec"]["grpcTLS"] = dict(TLS)
    plain = render.render_prometheus_ha(us1, _without_tls(tc), DEFAULTS)
    objs = render.render_prometheus_ha(us1, tc, DEFAULTS, ca_sha256=CA)
    sts, sts_plain = _by(objs, "StatefulSet"), _by(plain, "StatefulSet")
    side, side_plain = _container(sts, "thanos-sidecar"), _container(sts_plain, "thanos-sidecar")
    assert side["args"] == side_plain["args"] + SERVER, "a server only: no client flags, no server name"
    assert side["volumeMounts"] == side_plain["volumeMounts"][:-1] + [MOUNT, side_plain["volumeMounts"][-1]]
    assert _pod(sts)["volumes"] == _pod(sts_plain)["volumes"][:-1] + [VOLUME, _pod(sts_plain)["volumes"][-1]]
    assert sts["spec"]["template"]["metadata"] == {**sts_plain["spec"]["template"]["metadata"],
                                                   "annotations": ANNOTATION}
    # Prometheus and the init container neither serve nor dial gRPC
    assert _container(sts, "prometheus") == _container(sts_plain, "prometheus")
    assert _pod(sts)["initContainers"] == _pod(sts_plain)["initContainers"]
    assert [o for o in objs if o["kind"] != "StatefulSet"] == [o for o in plain if o["kind"] != "StatefulSet"]


def test_sidecar_tls_of_its_own(tc, eu1):
    tc["spec"]["grpcTLS"] = dict(TLS)
    eu1["spec"]["sidecar"] = {"grpcTLS": {"secretName": "eu1-grpc", "clientAuth": False}}
    sts = _by(render.render_prometheus_ha(eu1, tc, DEFAULTS, ca_sha256=CA), "StatefulSet")
    assert [a for a in _container(sts, "thanos-sidecar")["args"] if "tls" in a] == [
        f"--grpc-server-tls-cert={D}/tls.crt", f"--grpc-server-tls-key={D}/tls.key"]
    assert {"name": "grpc-tls", "secret": {"secretName": "eu1-grpc"}} in _pod(sts)["volumes"]
    assert "annotations" not in sts["spec"]["template"]["metadata"], "no client auth: the CA is not read"
    # standalone (no cluster): its own TLS still applies; no cluster, no TLS: none
    del eu1["spec"]["thanosClusterRef"]
    assert "--grpc-server-tls-cert=/etc/thanos/grpc-tls/tls.crt" in \
        _container(_by(render.render_prometheus_ha(eu1, None, DEFAULTS), "StatefulSet"), "thanos-sidecar")["args"]
    del eu1["spec"]["sidecar"]
    assert not [a for a in _container(_by(render.render_prometheus_ha(eu1, None, DEFAULTS), "StatefulSet"),
                                      "thanos-sidecar")["args"] if "tls" in a]


def test_tls_sidecars_under_a_plaintext_querier_are_a_mismatch(tc, eu1):
    assert render.grpc_tls_mismatch(eu1, tc) is None
    eu1["spec"]["sidecar"] = {"grpcTLS": {"secretName": "eu1-grpc"}}
    why = render.grpc_tls_mismatch(eu1, tc)
    assert why and "eu1-grpc" in why and "ThanosCluster demo has no spec.grpcTLS" in why
    assert render.grpc_tls_mismatch(eu1, None) is None, "standalone: queried by others, nothing to compare"
    tc["spec"]["grpcTLS"] = dict(TLS)
    assert render.grpc_tls_mismatch(eu1, tc) is None
    del eu1["spec"]["sidecar"]
    assert render.grpc_tls_mismatch(eu1, tc) is None, "inherits: the other way round cannot happen"


def test_render_is_the_same_on_server_defaulted_input(tc, eu1):
    """spec.py's fallbacks for grpcTLS equal the CRD's defaults."""
    tc["spec"]["grpcTLS"] = {"secretName": "thanos-grpc-tls"}
    eu1["spec"]["sidecar"] = {"grpcTLS": {"secretName": "eu1-grpc"}}
    assert _defaulted(tc)["spec"]["grpcTLS"] == {"secretName": "thanos-grpc-tls", "certKey": "tls.crt",
                                                 "keyKey": "tls.key", "caKey": "ca.crt", "clientAuth": True}
    assert render.render_thanos_cluster(_defaulted(tc), [_defaulted(eu1)], DEFAULTS, ca_sha256=CA) == \
        render.render_thanos_cluster(tc, [eu1], DEFAULTS, ca_sha256=CA)
    assert render.render_prometheus_ha(_defaulted(eu1), _defaulted(tc), DEFAULTS, ca_sha256=CA) == \
        render.render_prometheus_ha(eu1, tc, DEFAULTS, ca_sha256=CA)


def _without_tls(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    out["spec"].pop("grpcTLS", None)
    return out


# ---------------------------------------------------------------------------------------------- the Secret check

CERT = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n"


def _secret(**data: bytes) -> dict:
    return {"kind": "Secret", "metadata": {"name": "s"},
            "data": {k.replace("_", "."): base64.b64encode(v).decode() for k, v in data.items()}}


def test_tls_secret_check():
    tls = GRPCTLS("s")
    ok = check_tls_secret(_secret(tls_crt=CERT, tls_key=KEY, ca_crt=CERT + CERT), tls)
    assert ok.ok and ok.ca_sha256 == hashlib.sha256(CERT + CERT).hexdigest() and ok.state == f"ca:{ok.ca_sha256}"
    missing = check_tls_secret(None, tls)
    assert (missing.found, missing.ok, missing.state) == (False, False, "missing")
    no_ca = check_tls_secret(_secret(tls_crt=CERT, tls_key=KEY), tls)
    assert no_ca.found and not no_ca.ok
    assert no_ca.problem == "Secret s has no key ca.crt (the CA; keys: tls.crt, tls.key)"
    assert check_tls_secret({"data": None}, tls).problem == "Secret s has no key tls.crt (the certificate; keys: none)"
    assert check_tls_secret(_secret(tls_crt=CERT, tls_key=CERT, ca_crt=CERT), tls).problem == \
        "key tls.key of Secret s is not a PEM private key"
    assert check_tls_secret(_secret(tls_crt=b"DER\x00", tls_key=KEY, ca_crt=CERT), tls).problem == \
        "key tls.crt of Secret s is not a PEM certificate"
    bad = _secret(tls_crt=CERT, tls_key=KEY, ca_crt=CERT)
    bad["data"]["ca.crt"] = "%%%"
    assert check_tls_secret(bad, tls).problem == "key ca.crt of Secret s is not base64"
    # other key names
    custom = GRPCTLS("s", cert_key="c", key_key="k", ca_key="c")
    assert check_tls_secret(_secret(c=CERT, k=KEY), custom).ok
    # a renewed certificate and key (same CA) is the same state; another CA is not
    renewed = check_tls_secret(_secret(tls_crt=CERT + b"\n", tls_key=KEY + b"\n", ca_crt=CERT + CERT), tls)
    assert renewed.state == ok.state
    assert check_tls_secret(_secret(tls_crt=CERT, tls_key=KEY, ca_crt=CERT), tls).state != ok.state


def test_secret_check_never_carries_the_values():
    tls = GRPCTLS("s")
    check = check_tls_secret(_secret(tls_crt=CERT, tls_key=KEY, ca_crt=CERT), tls)
    text = repr(check) + json.dumps(check.__dict__)
    assert "PRIVATE" not in text and base64.b64encode(KEY).decode() not in text


# ---------------------------------------------------------------------------------------------- resync bookkeeping

def test_secret_watch_reports_what_changed():
    w = SecretWatch()
    good = _secret(tls_crt=CERT, tls_key=KEY, ca_crt=CERT)
    tls = GRPCTLS("s")
    first = check_tls_secret(good, tls)
    w.record("ThanosCluster", NS, "demo", "u1", tls, first.state, first.ca_sha256)
    w.record("PrometheusHA", NS, "eu1", "u2", tls, first.state, first.ca_sha256)
    reads: list = []

    def read(store):
        def f(ns, name):
            reads.append((ns, name))
            return store
        return f
    assert w.changed(read(good)) == [] and reads == [(NS, "s")], "one read per Secret"
    renewed = _secret(tls_crt=CERT + b"\n", tls_key=KEY + b"\n", ca_crt=CERT)
    assert w.changed(read(renewed)) == []
    assert [s.name for s in w.changed(read(_secret(tls_crt=CERT, tls_key=KEY, ca_crt=CERT + CERT)))] == ["demo", "eu1"]
    assert [s.name for s in w.changed(read(None))] == ["demo", "eu1"]
    assert w.ca_sha256("ThanosCluster", NS, "demo") == first.ca_sha256
    w.forget("ThanosCluster", NS, "demo")
    assert w.ca_sha256("ThanosCluster", NS, "demo") is None
    assert [s.name for s in w.changed(read(None))] == ["eu1"]


def test_peering_rule_of_the_resync_thread():
    now = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)

    def peer(prio: int, seen_ago: int, lifetime: int = 60) -> dict:
        return {"priority": prio, "lifetime": lifetime,
                "lastseen": (now - datetime.timedelta(seconds=seen_ago)).isoformat()}
    assert outranked(None, 10, now), "no peering object: kopf pauses too"
    assert not outranked({"status": {"me": peer(10, 0)}}, 10, now)
    assert not outranked({"status": {"me": peer(10, 0), "low": peer(5, 0)}}, 10, now)
    assert outranked({"status": {"me": peer(10, 0), "high": peer(20, 5)}}, 10, now)
    assert not outranked({"status": {"me": peer(10, 0), "dead": peer(20, 61)}}, 10, now)


# ---------------------------------------------------------------------------------------------- real Thanos

def test_rendered_tls_flags_parse_with_real_thanos(tc, eu1, us1, thanos_bin):
    import subprocess
    tc["spec"]["grpcTLS"] = dict(TLS)
    objs = render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS, ca_sha256=CA) + \
        render.render_prometheus_ha(us1, tc, DEFAULTS, ca_sha256=CA)
    seen = set()
    for o in _workloads(objs):
        for c in _pod(o)["containers"]:
            if c["name"] == "prometheus":
                continue
            if any("tls" in a for a in c["args"]):
                seen.add(c["args"][0])
            r = subprocess.run([thanos_bin, *c["args"], "--help"], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, f"{c['name']}: thanos rejects {c['args']}:\n{r.stderr[-2000:]}"
    assert seen == {"sidecar", "query", "store"}


def test_rendered_tls_flags_parse_with_pythanos(tc, eu1, us1):
    """The component image runs ``pythanos <component>``: the TLS flags rendered for sidecar, querier and
    store gateway are ours too, with the files where the mount puts them."""
    from pythanos.cli import build_parser

    tc["spec"]["grpcTLS"] = dict(TLS)
    objs = render.render_thanos_cluster(tc, [eu1, us1], DEFAULTS, ca_sha256=CA) + \
        render.render_prometheus_ha(us1, tc, DEFAULTS, ca_sha256=CA)
    seen = set()
    for o in _workloads(objs):
        for c in _pod(o)["containers"]:
            if c["name"] == "prometheus" or not any("tls" in a for a in c["args"]):
                continue
            try:
                args = build_parser().parse_args(c["args"])
            except SystemExit as e:
                pytest.fail(f"{c['name']}: pythanos rejects {c['args']} (exit {e.code})")
            seen.add(args.component)
            assert (args.grpc_server_tls_cert, args.grpc_server_tls_key, args.grpc_server_tls_client_ca) == \
                (f"{D}/tls.crt", f"{D}/tls.key", f"{D}/ca.crt")
            if args.component == "query":
                assert args.grpc_client_tls_secure and args.grpc_client_server_name == "thanos-grpc.monitoring.svc"
                assert (args.grpc_client_tls_cert, args.grpc_client_tls_key, args.grpc_client_tls_ca) == \
                    (f"{D}/tls.crt", f"{D}/tls.key", f"{D}/ca.crt")
    assert seen == {"sidecar", "query", "store"}


def _localise(args: list[str], tls_dir: Path, work: Path, grpc: int, http: int) -> list[str]:
    """Rendered container args with the pod's paths and ports moved to this machine."""
    out = []
    for a in args:
        a = a.replace(render.GRPC_TLS_DIR, str(tls_dir))
        a = a.replace("0.0.0.0:10901", f"127.0.0.1:{grpc}").replace("0.0.0.0:10902", f"127.0.0.1:{http}")
        a = a.replace(render.OBJSTORE_DIR, str(work)).replace(render.SD_DIR, str(work))
        a = a.replace("/var/thanos/store", str(work / "store"))
        out.append(a)
    return out


@pytest.mark.parametrize("impl", ["thanos", "pythanos"])
def test_rendered_mutual_tls_between_querier_and_store(impl, tc, eu1, request, tmp_path):
    """The querier and store gateway exactly as rendered (paths and ports moved here), the Secret's files as
    the pod would see them, run by real Thanos v0.42 and by our own component image's CLI: the querier
    reaches the store over mutual TLS, verifying the certificate against ``serverName`` though it dials an
    IP address; a querier that offers no client certificate is refused."""
    from peers import REGISTRY, free_ports, http_get
    from tlsfiles import make_pki

    binary = request.getfixturevalue(f"{impl}_bin")
    pki = make_pki(tmp_path / "pki", "thanos-grpc.monitoring.svc")
    tc["spec"]["grpcTLS"] = dict(TLS)
    objs = render.render_thanos_cluster(tc, [eu1], DEFAULTS, ca_sha256=CA)
    (tmp_path / "bucket").mkdir()
    (tmp_path / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path / 'bucket'}\n")
    (tmp_path / "store").mkdir()
    sg, sh, qg, qh, qg2, qh2 = free_ports(6)
    store_args = _localise(_container(_by(objs, "StatefulSet", "thanos-store-demo"), "thanos-store")["args"],
                           pki.dir, tmp_path, sg, sh)
    # one worker process is enough here (ours would start one per CPU)
    one = ["--query.workers=1"] if impl == "pythanos" else []
    q_rendered = _container(_by(objs, "Deployment"), "thanos-query")["args"]
    assert "--grpc-client-server-name=thanos-grpc.monitoring.svc" in q_rendered
    (tmp_path / "endpoints.yaml").write_text(yaml.safe_dump({"endpoints": [{"address": f"127.0.0.1:{sg}"}]}))

    def stores(port: int) -> list[dict]:
        code, body = http_get(f"http://127.0.0.1:{port}/api/v1/stores", timeout=2)
        assert code == 200
        return [s for group in json.loads(body)["data"].values() for s in group]

    store = REGISTRY.start(f"{impl}-store", [binary, *store_args], tmp_path / "store-logs")
    try:
        store.wait_ready(lambda: http_get(f"http://127.0.0.1:{sh}/-/ready", timeout=2)[0] == 200, 90, "store ready")
        query = REGISTRY.start(f"{impl}-query", [binary, *_localise(q_rendered, pki.dir, tmp_path, qg, qh), *one],
                               tmp_path / "query-logs")
        try:
            query.wait_ready(lambda: any(s["name"] == f"127.0.0.1:{sg}" and not s.get("lastError")
                                         for s in stores(qh)), 90, "the store healthy in the querier over mTLS")
        finally:
            query.stop()

        # no client certificate: the store (client auth on) refuses the handshake
        anon = [a for a in _localise(q_rendered, pki.dir, tmp_path, qg2, qh2)
                if not a.startswith(("--grpc-client-tls-cert=", "--grpc-client-tls-key="))]
        query = REGISTRY.start(f"{impl}-query-anon", [binary, *anon, *one], tmp_path / "anon-logs")
        try:
            # Thanos lists no endpoint it never reached: the refused handshake is in the querier's log
            refused = {"thanos": "tls: certificate required",
                       "pythanos": "closed the connection during the TLS handshake"}
            query.wait_ready(lambda: refused[impl] in query.log(400), 90,
                             "the store refusing a querier without a client certificate")
            assert not any(not s.get("lastError") for s in stores(qh2))
        finally:
            query.stop()
    finally:
        store.stop()
