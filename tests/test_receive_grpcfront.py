"""Our receiver's gRPC port with real peers on both of its paths (``pythanos.server.grpcfront``).

A real Thanos v0.42.4 router with its defaults (``--receive.grpc-compression=snappy``) forwards
into our receiver, in plaintext and over mutual TLS; a real ``thanos query`` and our querier
read the same series through the front (StoreAPI connections are spliced to grpcio). With TLS,
clients without a trusted certificate and plaintext clients get nothing."""
from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

import pytest

from peers import REGISTRY, http_get, start_thanos_query
from ports import free_ports
import test_tls_grpc
from test_receive import post, poll, start_receiver, stored, v1
from test_tls_grpc import client_flags, info_error, our_query, server_flags

certs = test_tls_grpc.certs  # the fixture of test certificates (CA, server, client)


def thanos_router(thanos_bin: str, work: Path, endpoint: str, *extra: str):
    """A real router-only ``thanos receive`` sending everything to ``endpoint`` (its defaults:
    snappy-compressed forwards)."""
    g, h, w, c = free_ports(4)
    ring = work / "router-ring.json"
    ring.write_text(json.dumps([{"endpoints": [endpoint]}]))
    p = REGISTRY.start("thanos-router", [
        thanos_bin, "receive", f"--tsdb.path={work / 'router'}", f"--grpc-address=127.0.0.1:{g}",
        f"--http-address=127.0.0.1:{h}", f"--remote-write.address=127.0.0.1:{w}",
        f"--receive.hashrings-file={ring}", f"--receive.capnproto-address=127.0.0.1:{c}",
        '--label=receive="router"', *extra], work)
    p.url = f"http://127.0.0.1:{h}"
    p.extra["rw"] = f"http://127.0.0.1:{w}/api/v1/receive"
    p.wait_http_ready("/-/ready", 120)
    return p


def instant(url: str, expr: str, t: float) -> list:
    code, body = http_get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{t:.3f}"}),
                          timeout=30)
    doc = json.loads(body)
    assert code == 200 and doc["status"] == "success", (code, doc)
    return doc["data"]["result"]


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "mtls"])
def test_thanos_router_default_snappy_into_our_receiver_and_queriers_read_through_the_front(
        tls, certs, pythanos_bin, thanos_bin, tmp_path):
    rcv = start_receiver(pythanos_bin, tmp_path / "ours", *(server_flags(certs) if tls else ()),
                         "--grpc-grace-period=1s")
    addr = rcv.extra["grpc"]
    router = tq = oq = None
    try:
        rcv.wait_http_ready("/-/ready", 120)
        client_tls = ["--remote-write.client-tls-secure", f"--remote-write.client-tls-ca={certs.ca_crt}",
                      f"--remote-write.client-tls-cert={certs.client_crt}",
                      f"--remote-write.client-tls-key={certs.client_key}"] if tls else []
        router = thanos_router(thanos_bin, tmp_path, addr, *client_tls)
        now = int(time.time() * 1000)
        for k in range(3):  # several forwards on the router's one connection
            body = v1([([("__name__", "routed"), ("i", str(i))], [(now + k * 1000, float(k * 10 + i))])
                       for i in range(50)])
            code, text, _ = post(router.extra["rw"], body)
            assert code == 200, text
        assert "grpc-compression=none" not in " ".join(router.args)
        q_flags = client_flags(certs) if tls else []
        tq = start_thanos_query(thanos_bin, [addr], tmp_path / "tq", q_flags, ready_timeout=90)
        oq = our_query(pythanos_bin, tmp_path, "our-query", f"--endpoint={addr}", *q_flags)
        t = now / 1000 + 2.5  # after the third round
        for url in (tq.url, oq.url):
            poll(lambda url=url: ((got := instant(url, "count(routed)", t)) and got[0]["value"][1] == "50", got), 60,
                 f"50 routed series through {url}")
            assert instant(url, 'routed{i="7"}', t)[0]["value"][1] == "27"
        if tls:
            # the front holds security: no client certificate, an untrusted one, or plaintext: nothing
            assert info_error(addr, ca_file=certs.ca_crt, cert_file=certs.client_crt,
                              key_file=certs.client_key) is None
            assert info_error(addr, ca_file=certs.ca_crt) is not None
            assert info_error(addr, ca_file=certs.ca_crt, cert_file=certs.other_client_crt,
                              key_file=certs.other_client_key) is not None
            with pytest.raises(Exception, match="UNAVAILABLE"):
                stored(addr)
        else:
            assert len(stored(addr, (("__name__", "=", "routed"),))) == 50
    finally:
        for p in (oq, tq, router):
            if p is not None:
                p.stop()
        rcv.stop()


def test_max_connection_age_on_connections_the_front_serves(pythanos_bin, thanos_bin, tmp_path):
    """``--grpc-server-max-connection-age`` holds for the router's RemoteWrite connection (served
    by the front, not grpcio): GOAWAY after the age, a real Thanos router reconnects, and no
    write is lost or refused meanwhile."""
    rcv = start_receiver(pythanos_bin, tmp_path / "ours", "--grpc-server-max-connection-age=1s", "--log.level=debug")
    router = None
    try:
        rcv.wait_http_ready("/-/ready", 120)
        router = thanos_router(thanos_bin, tmp_path, rcv.extra["grpc"])
        now = int(time.time() * 1000)
        deadline = time.monotonic() + 90
        k = 0
        while rcv.log(5000).count("reason=\"max connection age\"") < 2:  # two GOAWAYs: a reconnect in between
            assert time.monotonic() < deadline, "no two GOAWAYs for the connection age within 90s"
            body = v1([([("__name__", "aged"), ("i", str(i))], [(now + k, float(k))]) for i in range(10)])
            code, text, _ = post(router.extra["rw"], body)
            assert code == 200, (k, text)
            k += 1
        got = stored(rcv.extra["grpc"], (("__name__", "=", "aged"),))
        assert len(got) == 10 and all(len(v) == k for v in got.values()), (k, {s: len(v) for s, v in got.items()})
    finally:
        if router is not None:
            router.stop()
        rcv.stop()
