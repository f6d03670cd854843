"""Object storage: Thanos objstore YAML, S3 (minio) and FILESYSTEM buckets.

``bucket_from_flags`` / ``bucket_from_config`` build a :class:`Bucket` from Thanos' objstore
YAML (``config.py``), with Thanos' ``thanos_objstore_*`` metrics when given a registry
(``metrics.py``: :func:`instrument` wraps any bucket); ``bucket.py`` holds the interface and its
semantics, ``filesystem.py`` and ``s3.py`` the implementations, ``retry.py`` the backoff policy.
The API is blocking: async callers run it in a thread pool.
"""
from .bucket import (
    Bucket,
    ObjectAttributes,
    ObjectNotFoundError,
    ObjstoreError,
    PrefixedBucket,
    is_obj_not_found,
)
from .config import bucket_from_config, bucket_from_flags
from .filesystem import FilesystemBucket
from .metrics import InstrumentedBucket, instrument
from .retry import RetryPolicy
from .s3 import S3Bucket, S3Config

__all__ = [
    "Bucket",
    "FilesystemBucket",
    "InstrumentedBucket",
    "ObjectAttributes",
    "ObjectNotFoundError",
    "ObjstoreError",
    "PrefixedBucket",
    "RetryPolicy",
    "S3Bucket",
    "S3Config",
    "bucket_from_config",
    "bucket_from_flags",
    "instrument",
    "is_obj_not_found",
]
