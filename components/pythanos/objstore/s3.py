"""S3 bucket on the ``minio`` SDK (Thanos' ``providers/s3``, which uses minio-go).

Every documented Thanos S3 key is accepted (see :class:`S3Config`). How each is honoured:

==========================  ======================================================================
key                         effect here
==========================  ======================================================================
bucket, endpoint            required; endpoint is ``host[:port]`` without scheme
region                      passed to the client (empty: discovered with GetBucketLocation)
insecure                    plain HTTP
access_key, secret_key,     static credentials; both or neither. Neither: the chain Thanos uses
session_token               (AWS env, MinIO env, ~/.aws/credentials, mc config, IAM)
aws_sdk_auth                AWS env, ~/.aws config and IAM (EC2/ECS/web identity) credentials
sts_endpoint                custom endpoint of the IAM/STS credential provider
bucket_lookup_type          auto | virtual-hosted | path
disable_dualstack           disables the dual-stack AWS endpoint (only matters for AWS)
list_objects_version        "" or "v2": ListObjectsV2; "v1": ListObjects
put_user_metadata           sent as ``x-amz-meta-*`` on every upload
part_size                   multipart part size (min 5 MiB); uploads above it are multipart
disable_multipart           one PUT per object (up to 5 GiB)
sse_config                  SSE-S3, SSE-KMS (kms_key_id, kms_encryption_context), SSE-C
                            (encryption_key = path of a file holding the 32-byte key; HTTPS only)
max_retries                 attempts per operation (0: default 10, as minio-go); see retry.py
trace.enable                HTTP traces logged at debug level
http_config                 response_header_timeout -> read timeout; max_conns_per_host (> 0:
                            a blocking pool of that size); max_idle_conns_per_host -> pool
                            size; insecure_skip_verify and tls_config.{ca_file, cert_file,
                            key_file, server_name, insecure_skip_verify} -> TLS settings.
                            No-ops (no urllib3 equivalent): idle_conn_timeout,
                            tls_handshake_timeout, expect_continue_timeout, max_idle_conns,
                            disable_compression. Connect timeout is fixed at 30 s (Go's dialer).
signature_version2          no-op with a warning: minio-py signs with V4 only
send_content_md5            no-op: minio-py always protects payloads (x-amz-content-sha256
                            over HTTP, Content-MD5 over HTTPS)
==========================  ======================================================================

Multipart uploads send one part at a time, so memory use is bounded by ``part_size``.
``access_key``, ``secret_key`` and ``session_token`` show as ``<secret>`` in reprs (and so in logs).
"""
from __future__ import annotations

import http.client
import io
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterator, TypeVar

import urllib3
from urllib3.exceptions import (
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError

from ..redact import SECRET, redacted, secret_field
from .bucket import (
    Bucket,
    ObjectAttributes,
    ObjectNotFoundError,
    ObjstoreError,
    UploadData,
    check_range,
    dir_prefix,
    is_path,
    remaining_length,
    validate_key,
)
from .retry import RetryPolicy, call_with_retry

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
DEFAULT_PART_SIZE = 64 * 1024 * 1024
DEFAULT_MAX_ATTEMPTS = 10
_SPOOL_MEMORY = 8 * 1024 * 1024
_THROTTLING = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
               "RequestThrottled", "ProvisionedThroughputExceededException", "RequestTimeout",
               "InternalError", "ServiceUnavailable", "XMinioServerNotInitialized"}


@dataclass
class TLSConfig:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    insecure_skip_verify: bool = False


@dataclass
class HTTPConfig:
    """Thanos' exthttp.HTTPConfig; durations in seconds."""
    idle_conn_timeout: float = 90.0
    response_header_timeout: float = 120.0
    insecure_skip_verify: bool = False
    tls_handshake_timeout: float = 10.0
    expect_continue_timeout: float = 1.0
    max_idle_conns: int = 100
    max_idle_conns_per_host: int = 100
    max_conns_per_host: int = 0
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    disable_compression: bool = False


@dataclass
class SSEConfig:
    type: str = ""  # SSE-KMS | SSE-C | SSE-S3
    kms_key_id: str = ""
    kms_encryption_context: dict[str, str] = field(default_factory=dict)
    encryption_key: str = ""


@redacted
@dataclass
class S3Config:
    bucket: str = ""
    endpoint: str = ""
    region: str = ""
    disable_dualstack: bool = False
    aws_sdk_auth: bool = False
    access_key: str = secret_field()
    insecure: bool = False
    signature_version2: bool = False
    secret_key: str = secret_field()
    session_token: str = secret_field()
    put_user_metadata: dict[str, str] = field(default_factory=dict)
    http_config: HTTPConfig = field(default_factory=HTTPConfig)
    trace_enable: bool = False
    list_objects_version: str = ""
    bucket_lookup_type: str = "auto"
    send_content_md5: bool = True
    disable_multipart: bool = False
    part_size: int = DEFAULT_PART_SIZE
    sse_config: SSEConfig = field(default_factory=SSEConfig)
    sts_endpoint: str = ""
    max_retries: int = 0

    def validate(self) -> list[tuple[str, str]]:
        """Problems as (key path, message); empty when valid."""
        errs: list[tuple[str, str]] = []
        if not self.bucket:
            errs.append(("bucket", "required"))
        if not self.endpoint:
            errs.append(("endpoint", "required"))
        elif "://" in self.endpoint or "/" in self.endpoint:
            errs.append(("endpoint", f"want host[:port] without scheme or path, got {self.endpoint!r}"))
        if self.access_key and not self.secret_key:
            errs.append(("secret_key", "required when access_key is set"))
        if self.secret_key and not self.access_key:
            errs.append(("access_key", "required when secret_key is set"))
        if self.aws_sdk_auth and self.access_key:
            errs.append(("aws_sdk_auth", "cannot be combined with access_key/secret_key"))
        if self.list_objects_version not in ("", "v1", "v2"):
            errs.append(("list_objects_version", f'want "v1" or "v2", got {self.list_objects_version!r}'))
        if self.bucket_lookup_type not in ("auto", "virtual-hosted", "path"):
            errs.append(("bucket_lookup_type",
                         f'want "auto", "virtual-hosted" or "path", got {self.bucket_lookup_type!r}'))
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            errs.append(("part_size", f"must be between {MIN_PART_SIZE} and {MAX_PART_SIZE}, got {self.part_size}"))
        if self.max_retries < 0:
            errs.append(("max_retries", f"must not be negative, got {self.max_retries}"))
        sse = self.sse_config
        if sse.type not in ("", "SSE-KMS", "SSE-C", "SSE-S3"):
            errs.append(("sse_config.type", f'want "SSE-KMS", "SSE-C" or "SSE-S3", got {sse.type!r}'))
        if sse.type == "SSE-KMS" and not sse.kms_key_id:
            errs.append(("sse_config.kms_key_id", "required when sse_config.type is SSE-KMS"))
        if sse.type == "SSE-C":
            if not sse.encryption_key:
                errs.append(("sse_config.encryption_key", "required when sse_config.type is SSE-C"))
            if self.insecure:
                errs.append(("sse_config.type", "SSE-C needs HTTPS (insecure: false)"))
        for k, v in (("response_header_timeout", self.http_config.response_header_timeout),):
            if v < 0:
                errs.append((f"http_config.{k}", "must not be negative"))
        return errs


class _TraceLog(io.TextIOBase):
    """minio's trace stream, sent to the debug log line by line. minio redacts the Authorization header's
    credential and signature itself; the session token and the SSE-C key headers are ours to redact."""

    _SECRET_HEADERS = ("x-amz-security-token:", "x-amz-server-side-encryption-customer-key:",
                       "x-amz-copy-source-server-side-encryption-customer-key:")

    def write(self, s: str) -> int:
        for line in s.splitlines():
            if line.strip():
                if line.lower().startswith(self._SECRET_HEADERS):
                    line = line.split(":", 1)[0] + ": " + SECRET
                log.debug("s3 trace", extra={"line": line})
        return len(s)


def _pool(cfg: S3Config) -> urllib3.PoolManager:
    hc = cfg.http_config
    skip_verify = hc.insecure_skip_verify or hc.tls_config.insecure_skip_verify
    kw: dict[str, Any] = {
        "timeout": urllib3.Timeout(connect=30.0, read=hc.response_header_timeout or None),
        "retries": False,  # retries are ours (retry.py), never urllib3's hidden ones
        "maxsize": hc.max_conns_per_host if hc.max_conns_per_host > 0 else max(1, hc.max_idle_conns_per_host),
        "block": hc.max_conns_per_host > 0,
    }
    if not cfg.insecure:
        kw["cert_reqs"] = "CERT_NONE" if skip_verify else "CERT_REQUIRED"
        if not skip_verify:
            ca = hc.tls_config.ca_file or os.environ.get("SSL_CERT_FILE")
            if not ca:
                try:
                    import certifi

                    ca = certifi.where()
                except ImportError:  # pragma: no cover
                    ca = None
            if ca:
                kw["ca_certs"] = ca
        if hc.tls_config.cert_file:
            kw["cert_file"] = hc.tls_config.cert_file
        if hc.tls_config.key_file:
            kw["key_file"] = hc.tls_config.key_file
        if hc.tls_config.server_name:
            kw["server_hostname"] = hc.tls_config.server_name
        if skip_verify:
            kw["assert_hostname"] = False
    return urllib3.PoolManager(**kw)


def _credentials(cfg: S3Config):
    from minio import credentials as c

    if cfg.access_key:
        return c.StaticProvider(cfg.access_key, cfg.secret_key, cfg.session_token or None)
    iam = c.IamAwsProvider(custom_endpoint=cfg.sts_endpoint or None)
    if cfg.aws_sdk_auth:
        return c.ChainedProvider([c.EnvAWSProvider(), c.AWSConfigProvider(), iam])
    return c.ChainedProvider([c.EnvAWSProvider(), c.EnvMinioProvider(), c.AWSConfigProvider(),
                              c.MinioClientConfigProvider(), iam])


def _sse(cfg: S3Config):
    from minio.sse import SseCustomerKey, SseKMS, SseS3

    t = cfg.sse_config.type
    if t == "SSE-S3":
        return SseS3()
    if t == "SSE-KMS":
        return SseKMS(cfg.sse_config.kms_key_id, dict(cfg.sse_config.kms_encryption_context))
    if t == "SSE-C":
        with open(cfg.sse_config.encryption_key, "rb") as f:
            return SseCustomerKey(f.read())
    return None


def is_transient(e: BaseException) -> bool:
    """Connection errors, timeouts, HTTP 5xx and throttling are retried; nothing else."""
    from minio.error import InvalidResponseError, S3Error, ServerError

    if isinstance(e, ObjstoreError):
        return False
    if isinstance(e, S3Error):
        status = getattr(e.response, "status", 0) or 0
        return status >= 500 or status == 429 or e.code in _THROTTLING
    if isinstance(e, ServerError):
        return e.status_code >= 500 or e.status_code == 429
    if isinstance(e, InvalidResponseError):
        code = getattr(e, "_code", 0) or 0
        return code >= 500 or code == 429
    if isinstance(e, SSLError):
        return False
    if isinstance(e, MaxRetryError):
        return e.reason is None or is_transient(e.reason)
    return isinstance(e, (NewConnectionError, Urllib3TimeoutError, ProtocolError, ConnectionError, TimeoutError,
                          http.client.HTTPException))


def _code(e: BaseException) -> str | None:
    return getattr(e, "code", None)


class S3Bucket(Bucket):
    def __init__(self, cfg: S3Config):
        from minio import Minio

        errs = cfg.validate()
        if errs:
            raise ValueError("; ".join(f"{k}: {m}" for k, m in errs))
        self._cfg = cfg
        self._endpoint = cfg.endpoint
        self._bucket = cfg.bucket
        self._policy = RetryPolicy(max_attempts=cfg.max_retries or DEFAULT_MAX_ATTEMPTS)
        self._client = Minio(cfg.endpoint, secure=not cfg.insecure, region=cfg.region or None,
                             http_client=_pool(cfg), credentials=_credentials(cfg))
        if cfg.bucket_lookup_type == "virtual-hosted":
            self._client.enable_virtual_style_endpoint()
        elif cfg.bucket_lookup_type == "path":
            self._client.disable_virtual_style_endpoint()
        if cfg.disable_dualstack:
            self._client.disable_dualstack_endpoint()
        if cfg.trace_enable:
            self._client.trace_on(_TraceLog())
        if cfg.signature_version2:
            log.warning("signature_version2 is not supported by the minio SDK; signing with V4",
                        extra={"bucket": cfg.bucket, "endpoint": cfg.endpoint})
        self._sse = _sse(cfg)
        from minio.sse import SseCustomerKey

        self._ssec = self._sse if isinstance(self._sse, SseCustomerKey) else None
        self._metadata = dict(cfg.put_user_metadata) or None

    @property
    def name(self) -> str:
        return self._bucket

    @property
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def config(self) -> S3Config:
        return self._cfg

    # --- plumbing ---------------------------------------------------------------------------

    def _call(self, op: str, key: str, fn: Callable[[], T], policy: RetryPolicy | None = None) -> T:
        try:
            return call_with_retry(fn, policy=policy or self._policy, is_transient=is_transient, op=op,
                                   bucket=self._bucket, key=key, endpoint=self._endpoint)
        except ObjstoreError:
            raise
        except Exception as e:
            if _code(e) == "NoSuchKey":
                raise ObjectNotFoundError(self._bucket, key, op) from None
            raise self._wrap(op, key, e) from e

    def _wrap(self, op: str, key: str, e: BaseException) -> ObjstoreError:
        notes = "; ".join(getattr(e, "__notes__", []))
        what = f"{type(e).__name__}: {e}"
        if _code(e) == "NoSuchBucket":
            what = f"bucket does not exist ({what})"
        msg = (f"s3 {op} failed: bucket={self._bucket} endpoint={self._endpoint} key={key!r}: {what}"
               + (f" ({notes})" if notes else ""))
        return ObjstoreError(msg, bucket=self._bucket, op=op, key=key)

    def _read(self, key: str, offset: int, length: int) -> bytes:
        resp = self._client.get_object(self._bucket, key, offset=offset, length=length, ssec=self._ssec)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    # --- API ----------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        validate_key(key)
        return self._call("get", key, lambda: self._read(key, 0, 0))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        validate_key(key)
        check_range(offset, length)
        if length == 0:
            self.attributes(key)  # not-found check
            return b""

        def fn() -> bytes:
            try:
                return self._read(key, offset, 0 if length == -1 else length)
            except Exception as e:
                if _code(e) != "InvalidRange":
                    raise
            # offset at or past the end: S3 says 416, the filesystem says b"" -- we say b"".
            st = self._client.stat_object(self._bucket, key, ssec=self._ssec)
            if offset >= (st.size or 0):
                return b""
            raise ObjstoreError(f"s3 get_range: unexpected InvalidRange for offset {offset} of {st.size} bytes",
                                bucket=self._bucket, op="get_range", key=key)

        return self._call("get_range", key, fn)

    def attributes(self, key: str) -> ObjectAttributes:
        validate_key(key)
        st = self._call("attributes", key, lambda: self._client.stat_object(self._bucket, key, ssec=self._ssec))
        return ObjectAttributes(int(st.size or 0), st.last_modified)

    def exists(self, key: str) -> bool:
        validate_key(key, allow_dir=True)
        try:
            self._call("exists", key, lambda: self._client.stat_object(self._bucket, key, ssec=self._ssec))
        except ObjectNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        validate_key(key, allow_dir=True)
        # S3's DeleteObject succeeds for missing keys; our contract (like the filesystem) says "not found".
        self._call("delete", key, lambda: self._client.stat_object(self._bucket, key, ssec=self._ssec))
        self._call("delete", key, lambda: self._client.remove_object(self._bucket, key))

    def upload(self, key: str, data: UploadData) -> None:
        validate_key(key)
        if isinstance(data, str):
            raise TypeError("upload data must be bytes, a binary file object or an os.PathLike path, not str")
        spool = None
        if isinstance(data, (bytes, bytearray, memoryview)):
            payload = bytes(data)

            def opener() -> tuple[BinaryIO, int, bool]:
                return io.BytesIO(payload), len(payload), True
        elif is_path(data):
            path = os.fspath(data)  # type: ignore[arg-type]

            def opener() -> tuple[BinaryIO, int, bool]:
                f = open(path, "rb")  # noqa: SIM115
                return f, os.fstat(f.fileno()).st_size, True
        else:
            if not callable(getattr(data, "read", None)):
                raise TypeError(f"upload data must be bytes, a binary file object or a path, "
                                f"not {type(data).__name__}")
            stream: BinaryIO = data  # type: ignore[assignment]
            length = remaining_length(stream)
            if length < 0:  # not seekable: spool (memory up to 8 MiB, then disk) so retries can rewind
                spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)
                shutil.copyfileobj(stream, spool, 1 << 20)
                spool.seek(0)
                stream, length = spool, remaining_length(spool)
            start = stream.tell()

            def opener() -> tuple[BinaryIO, int, bool]:
                stream.seek(start)
                return stream, length, False

        def put() -> None:
            f, size, owned = opener()
            try:
                part = self._cfg.part_size
                if self._cfg.disable_multipart:
                    part = min(MAX_PART_SIZE, max(MIN_PART_SIZE, size))
                self._client.put_object(self._bucket, key, f, size, metadata=self._metadata, sse=self._sse,
                                        part_size=part, num_parallel_uploads=1)
            finally:
                if owned:
                    f.close()

        try:
            self._call("upload", key, put)
        finally:
            if spool is not None:
                spool.close()

    def iter(self, prefix: str = "", recursive: bool = False) -> Iterator[str]:
        base = dir_prefix(prefix)
        # Servers differ in listing order (SeaweedFS lists directory by directory, and a page's
        # common prefixes come after its objects), so a listing restarted after a transient error
        # starts over and skips what was already yielded, instead of using start-after.
        seen: set[str] = set()
        attempt = 0
        while True:
            attempt += 1
            try:
                objs = self._client.list_objects(self._bucket, prefix=base or None, recursive=recursive,
                                                 use_api_v1=self._cfg.list_objects_version == "v1")
                for o in objs:
                    name = o.object_name
                    if name is None or name == base or name in seen:  # S3 may list the "directory" itself
                        continue
                    seen.add(name)
                    attempt = 0
                    yield name
                return
            except GeneratorExit:
                raise
            except Exception as e:
                if attempt < self._policy.max_attempts and is_transient(e):
                    backoff = self._policy.delay(attempt)
                    log.warning("object storage operation failed, retrying",
                                extra={"bucket": self._bucket, "endpoint": self._endpoint, "op": "iter",
                                       "key": base, "attempt": attempt, "max_attempts": self._policy.max_attempts,
                                       "backoff": f"{backoff:.3f}s", "err": f"{type(e).__name__}: {e}"})
                    time.sleep(backoff)
                    continue
                if attempt > 1:
                    e.add_note(f"gave up after {attempt} attempts")
                raise self._wrap("iter", base, e) from e

    def close(self) -> None:
        http = getattr(self._client, "_http", None)
        if http is not None:
            http.clear()
