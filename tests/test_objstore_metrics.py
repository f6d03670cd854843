"""Thanos' ``thanos_objstore_bucket_*`` metrics (objstore's ``WrapWithMetrics``) on our buckets.

Against the real S3 server (SeaweedFS) and the filesystem: every operation counted, bytes fetched
and transferred, not-found never a failure, an S3 server that went away counted as failures; and
the families our store, compactor and bucket web expose are the ones the real Thanos v0.42
components expose over the same bucket: names, types, help, label names, operation values and
histogram bounds.
"""
from __future__ import annotations

import io
import os
import re
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from peers import REGISTRY, free_ports, http_get, start_seaweedfs
from pythanos.objstore import (FilesystemBucket, ObjectNotFoundError, ObjstoreError, bucket_from_config,
                               instrument)
from pythanos.objstore.metrics import DURATION_BUCKETS, OPERATIONS, TRANSFERRED_BUCKETS

P = "thanos_objstore_bucket_"


def scrape(text: str) -> dict[tuple, float]:
    """``(sample name, bucket, operation[, le])`` -> value for the objstore samples of an exposition."""
    out: dict[tuple, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith(P):
                key = (s.name, s.labels.get("bucket"), s.labels.get("operation"))
                if "le" in s.labels:
                    key += (float(s.labels["le"]),)
                out[key] = s.value
    return out


def ours(reg: CollectorRegistry) -> dict[tuple, float]:
    return scrape(generate_latest(reg).decode())


@pytest.fixture(params=["filesystem", "s3"])
def raw_bucket(request, tmp_path):
    if request.param == "filesystem":
        b = FilesystemBucket(tmp_path / "bkt")
    else:
        b = bucket_from_config(request.getfixturevalue("s3_bucket").objstore_yaml, "test")
    yield b
    b.close()


def test_every_operation_counted_with_its_bytes(raw_bucket, tmp_path):
    reg = CollectorRegistry()
    b = instrument(raw_bucket, reg)
    name = raw_bucket.name
    payload = os.urandom(100_000)
    src = tmp_path / "src"
    src.write_bytes(b"f" * 5000)
    before = time.time()
    b.upload("d/obj", payload)
    b.upload("d/file", src)
    b.upload("d/stream", io.BytesIO(b"s" * 777))
    assert b.get("d/obj") == payload
    assert b.get_range("d/obj", 10, 1000) == payload[10:1010]
    assert b.get_range("d/obj", 99_990, -1) == payload[99_990:]
    assert b.attributes("d/obj").size == 100_000
    assert b.exists("d/obj") and not b.exists("d/none")
    assert sorted(b.iter("d")) == ["d/file", "d/obj", "d/stream"]
    keys = b.iter("d", recursive=True)
    next(keys)
    keys.close()  # a caller that stops early: timed, not a failure
    for call in (lambda: b.get("d/none"), lambda: b.get_range("d/none", 0, 1), lambda: b.attributes("d/none"),
                 lambda: b.delete("d/none")):
        with pytest.raises(ObjectNotFoundError):
            call()
    b.delete("d/stream")

    m = ours(reg)
    ops = {op: m[(P + "operations_total", name, op)] for op in OPERATIONS}
    assert ops == {"upload": 3, "get": 2, "get_range": 3, "attributes": 2, "exists": 2, "iter": 2, "delete": 2}
    assert {op: m[(P + "operation_failures_total", name, op)] for op in OPERATIONS} == dict.fromkeys(OPERATIONS, 0)
    # Thanos: get/get_range time their errors too; exists/attributes/delete only successes
    durations = {op: m[(P + "operation_duration_seconds_count", name, op)] for op in OPERATIONS}
    assert durations == {"upload": 3, "get": 2, "get_range": 3, "attributes": 1, "exists": 2, "iter": 2, "delete": 1}
    assert m[(P + "operation_fetched_bytes_total", name, "get")] == 100_000
    assert m[(P + "operation_fetched_bytes_total", name, "get_range")] == 1010
    assert m[(P + "operation_fetched_bytes_total", name, "upload")] == 0  # as Thanos: uploads fetch nothing
    xfer = P + "operation_transferred_bytes"
    assert (m[(xfer + "_count", name, "get")], m[(xfer + "_sum", name, "get")]) == (1, 100_000)
    assert (m[(xfer + "_count", name, "get_range")], m[(xfer + "_sum", name, "get_range")]) == (2, 1010)
    assert (m[(xfer + "_count", name, "upload")], m[(xfer + "_sum", name, "upload")]) == (3, 100_000 + 5000 + 777)
    assert m[(xfer + "_bucket", name, "get", 65536.0)] == 0 and m[(xfer + "_bucket", name, "get", 131072.0)] == 1
    assert m[(xfer + "_bucket", name, "get_range", 32768.0)] == 2
    assert before <= m[(P + "last_successful_upload_time", name, None)] <= time.time()


def test_not_found_is_no_failure_and_errors_are(tmp_path):
    """Filesystem errors that are not not-found count as failures (a key below an object)."""
    reg = CollectorRegistry()
    b = instrument(FilesystemBucket(tmp_path), reg)
    b.upload("a", b"x")
    with pytest.raises(ObjstoreError):
        b.upload("a/b", b"y")
    with pytest.raises(ObjectNotFoundError):
        b.get("missing")
    m = ours(reg)
    assert m[(P + "operation_failures_total", b.name, "upload")] == 1
    assert m[(P + "operation_failures_total", b.name, "get")] == 0
    assert m[(P + "operations_total", b.name, "upload")] == 2


def test_prefix_keeps_the_bucket_name_and_wrappers_share_series(tmp_path):
    reg = CollectorRegistry()
    yml = f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path}\nprefix: tenant/a\n"
    b = bucket_from_config(yml, "test", registry=reg)
    assert instrument(b, reg) is b  # wrapping twice on one registry counts once
    b.upload("k", b"abc")
    assert (tmp_path / "tenant" / "a" / "k").read_bytes() == b"abc"
    again = bucket_from_config(yml, "test", registry=reg)  # same bucket, same registry: no duplicate error
    again.get("k")
    m = ours(reg)
    name = f"fs: {tmp_path}"
    assert m[(P + "operations_total", name, "upload")] == 1 and m[(P + "operations_total", name, "get")] == 1
    assert {k[1] for k in m} == {name}


def test_failures_counted_when_the_s3_server_is_stopped(tmp_path):
    """A SeaweedFS of this test alone, stopped under the bucket: every operation fails and counts."""
    (tmp_path / "s3").mkdir()
    server = start_seaweedfs(tmp_path / "s3", REGISTRY, session=False)
    try:
        server.client().make_bucket("gone")
        yml = (f"type: S3\nconfig:\n  bucket: gone\n  endpoint: {server.endpoint}\n  access_key: {server.access_key}\n"
               f"  secret_key: {server.secret_key}\n  insecure: true\n  max_retries: 1\n")
        reg = CollectorRegistry()
        b = bucket_from_config(yml, "test", registry=reg)
        b.upload("k", b"v" * 10)
        with pytest.raises(ObjectNotFoundError):
            b.get("none")
        assert ours(reg)[(P + "operation_failures_total", "gone", "get")] == 0
    finally:
        server.process.stop()
    calls = {"get": lambda: b.get("k"), "get_range": lambda: b.get_range("k", 1, 2), "exists": lambda: b.exists("k"),
             "attributes": lambda: b.attributes("k"), "iter": lambda: list(b.iter("")),
             "upload": lambda: b.upload("k2", b"w"), "delete": lambda: b.delete("k")}
    for op, call in calls.items():
        with pytest.raises(ObjstoreError) as ei:
            call()
        assert not isinstance(ei.value, ObjectNotFoundError), op
    b.close()
    m = ours(reg)
    assert {op: m[(P + "operation_failures_total", "gone", op)] for op in OPERATIONS} == dict.fromkeys(OPERATIONS, 1)
    durations = {op: m[(P + "operation_duration_seconds_count", "gone", op)] for op in OPERATIONS}
    # timed: get (a not-found, a failure), get_range, iter, upload (both); not exists/attributes/delete
    assert durations == {"get": 2, "get_range": 1, "iter": 1, "upload": 2, "exists": 0, "attributes": 0, "delete": 0}


# --- compatibility with a real Thanos ----------------------------------------------------------------

_TYPE = re.compile(r"^# (TYPE|HELP) (" + P + r"\S*) (.*)$", re.M)


def shape(text: str) -> dict:
    """What must agree with Thanos: each family's TYPE and HELP, each sample name's label names, the
    operation values per sample name and the histogram bounds; not values or the bucket's name."""
    out: dict = {f"{kind} {name}": rest for kind, name, rest in _TYPE.findall(text)}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if not s.name.startswith(P):
                continue
            out.setdefault(f"labels {s.name}", set()).add(frozenset(s.labels))
            if "operation" in s.labels:
                out.setdefault(f"operations {s.name}", set()).add(s.labels["operation"])
            if "le" in s.labels:
                out.setdefault(f"le {s.name}", set()).add(float(s.labels["le"]))
            out.setdefault("buckets", set()).add(s.labels["bucket"])
    return out


def _metrics(url: str) -> str:
    status, body = http_get(url + "/metrics")
    assert status == 200
    return body.decode()


COMPONENTS = {  # command line after the binary; each lists the bucket when it starts
    "store": lambda work, grpc: ["store", f"--data-dir={work / 'data'}", f"--grpc-address=127.0.0.1:{grpc}"],
    "compact": lambda work, grpc: ["compact", "--wait", f"--data-dir={work / 'data'}"],
    "bucket-web": lambda work, grpc: ["tools", "bucket", "web"],
}


@pytest.mark.parametrize("component,kind", [("store", "filesystem"), ("store", "s3"), ("compact", "filesystem"),
                                            ("bucket-web", "s3")])
def test_component_exposes_the_families_thanos_does(component, kind, request, tmp_path, thanos_bin, pythanos_bin):
    if kind == "filesystem":
        (tmp_path / "bkt").mkdir()
        objstore, name = f"{{type: FILESYSTEM, config: {{directory: {tmp_path / 'bkt'}}}}}", f"fs: {tmp_path / 'bkt'}"
    else:
        s3 = request.getfixturevalue("s3_bucket")
        objstore, name = s3.objstore_yaml, s3.name
    procs = []
    try:
        for binary, who in ((thanos_bin, "thanos"), (pythanos_bin, "pythanos")):
            http, grpc = free_ports(2)
            work = tmp_path / who
            args = [binary, *COMPONENTS[component](work, grpc), f"--objstore.config={objstore}",
                    f"--http-address=127.0.0.1:{http}"]
            p = REGISTRY.start(f"{who}-{component}", args, work)
            p.url = f"http://127.0.0.1:{http}"
            procs.append(p)
        for p in procs:
            p.wait_ready(lambda p=p: scrape(_metrics(p.url)).get((P + "operations_total", name, "iter"), 0) >= 1,
                         120, "a bucket listing counted")
        theirs, mine = (shape(_metrics(p.url)) for p in procs)
        assert mine == theirs
        assert theirs["buckets"] == {name}
        assert theirs[f"le {P}operation_duration_seconds_bucket"] == {*DURATION_BUCKETS, float("inf")}
        assert theirs[f"le {P}operation_transferred_bytes_bucket"] == {*TRANSFERRED_BUCKETS, float("inf")}
        assert theirs[f"operations {P}operations_total"] == set(OPERATIONS)
    finally:
        for p in procs:
            p.stop()
