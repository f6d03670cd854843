"""The ``Bucket`` interface (Thanos' ``objstore.Bucket``), its errors and the prefix wrapper.

The API is blocking; async callers run it in a thread pool (``loop.run_in_executor``).

Key semantics (the same for every implementation, checked by one test suite):

* Keys are ``/``-separated, relative to the bucket root, never start with ``/`` and never
  contain ``.`` or ``..`` segments or empty segments. A key ending with ``/`` names a
  "directory": it can be listed, passed to ``exists`` and ``delete``, but not read or written.
  ``delete("d/")`` removes a directory marker (S3) or an empty directory (SeaweedFS, the
  filesystem), never the objects below it; like Thanos' ``block.Delete``, callers do it best
  effort after deleting a block's objects, because filer-backed S3 servers (SeaweedFS) keep
  listing emptied "directories" as common prefixes for minutes otherwise. ``exists("d/")`` is
  true where the backend has such a marker or directory (S3 only for a marker object).
* ``iter(prefix)`` treats ``prefix`` as a directory (as Thanos does: ``"a/b"`` and ``"a/b/"``
  are the same and never match ``"a/bc"``). It yields full keys relative to the root, each
  once. Non-recursive listing yields the direct children: objects, and sub-"directories" with a
  trailing ``/``. Recursive listing yields objects only. A listing of a missing directory is
  empty, not an error. The order is not specified (as in Thanos): the filesystem yields
  sorted keys, but S3 servers differ (SeaweedFS lists directory by directory, and the SDK
  yields a page's objects before its common prefixes); sort if you need an order.
* ``get_range(key, offset, length)``: ``length=-1`` reads to the end; an ``offset`` at or past
  the end yields ``b""``; a ``length`` past the end is clipped. Negative offsets are errors.
* ``get``/``get_range``/``attributes``/``delete`` of a missing key raise
  :class:`ObjectNotFoundError` naming the bucket and key (``delete`` too, unlike S3's
  silent DeleteObject: callers doing best-effort deletes catch it with ``is_obj_not_found``).
"""
from __future__ import annotations

import abc
import datetime as _dt
import io
import os
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Union

UploadData = Union[bytes, bytearray, memoryview, BinaryIO, "os.PathLike[str]"]

DIR_DELIM = "/"


class ObjstoreError(Exception):
    """An object storage operation failed; the message names the bucket, operation and key."""

    def __init__(self, message: str, *, bucket: str = "", op: str = "", key: str = ""):
        super().__init__(message)
        self.bucket = bucket
        self.op = op
        self.key = key


class ObjectNotFoundError(ObjstoreError, KeyError):
    """The object does not exist (a ``KeyError``, so ``except KeyError`` works too)."""

    def __init__(self, bucket: str, key: str, op: str = ""):
        super().__init__(f"object not found: bucket {bucket!r} key {key!r}" + (f" ({op})" if op else ""),
                         bucket=bucket, op=op, key=key)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def is_obj_not_found(err: BaseException) -> bool:
    """True if ``err`` says the object does not exist (Thanos' ``IsObjNotFoundErr``)."""
    return isinstance(err, ObjectNotFoundError)


@dataclass(frozen=True)
class ObjectAttributes:
    size: int
    last_modified: _dt.datetime  # timezone-aware, UTC


def validate_key(key: str, *, allow_dir: bool = False) -> str:
    """Reject keys that cannot name an object the same way on every backend."""
    if not isinstance(key, str):
        raise TypeError(f"object key must be str, not {type(key).__name__}")
    if not key:
        raise ValueError("object key is empty")
    if key.startswith(DIR_DELIM):
        raise ValueError(f"object key {key!r} must not start with '/'")
    body = key[:-1] if key.endswith(DIR_DELIM) else key
    if key.endswith(DIR_DELIM) and not allow_dir:
        raise ValueError(f"object key {key!r} names a directory, not an object")
    for seg in body.split(DIR_DELIM):
        if seg in ("", ".", ".."):
            raise ValueError(f"object key {key!r} has an empty, '.' or '..' segment")
    if "\x00" in key:
        raise ValueError(f"object key {key!r} contains NUL")
    return key


def dir_prefix(prefix: str) -> str:
    """``"a/b"`` or ``"a/b/"`` -> ``"a/b/"``; ``""`` -> ``""`` (Thanos' Iter dir handling)."""
    if not prefix:
        return ""
    p = prefix.rstrip(DIR_DELIM)
    if not p:
        return ""
    validate_key(p)
    return p + DIR_DELIM


def check_range(offset: int, length: int) -> None:
    if offset < 0:
        raise ValueError(f"get_range: negative offset {offset}")
    if length < -1:
        raise ValueError(f"get_range: invalid length {length} (want >= 0, or -1 for 'to the end')")


class Bucket(abc.ABC):
    """Thanos' objstore.Bucket as a blocking Python API."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The bucket's name (S3: the bucket; filesystem: ``fs: <dir>``, as Thanos)."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object. Raises ObjectNotFoundError."""

    @abc.abstractmethod
    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (``-1``: to the end). Raises ObjectNotFoundError."""

    @abc.abstractmethod
    def upload(self, key: str, data: UploadData) -> None:
        """Create or replace the object; ``data`` is bytes, a binary file object or a path.

        Files and paths are streamed, never read into memory whole.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object (or a directory marker, for keys ending with '/'). Raises ObjectNotFoundError."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """True if the object exists (for keys ending with '/': see the module docstring)."""

    @abc.abstractmethod
    def iter(self, prefix: str = "", recursive: bool = False) -> Iterator[str]:
        """Keys under the directory ``prefix`` (see the module docstring)."""

    @abc.abstractmethod
    def attributes(self, key: str) -> ObjectAttributes:
        """Size and last modification time. Raises ObjectNotFoundError."""

    def close(self) -> None:
        """Release connections; the bucket is not used afterwards."""

    def __enter__(self) -> "Bucket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- upload sources -------------------------------------------------------------------------------

def is_path(data: object) -> bool:
    return isinstance(data, os.PathLike)


def as_stream(data: UploadData) -> tuple[BinaryIO, int, bool]:
    """(stream, length or -1, whether we opened it and must close it).

    ``str`` is refused: it is ambiguous between a path and content.
    """
    if isinstance(data, str):
        raise TypeError("upload data must be bytes, a binary file object or an os.PathLike path, not str")
    if isinstance(data, (bytes, bytearray, memoryview)):
        b = bytes(data) if not isinstance(data, bytes) else data
        return io.BytesIO(b), len(b), True
    if is_path(data):
        f = open(os.fspath(data), "rb")  # noqa: SIM115 - closed by the caller
        return f, os.fstat(f.fileno()).st_size, True
    if not callable(getattr(data, "read", None)):
        raise TypeError(f"upload data must be bytes, a binary file object or a path, not {type(data).__name__}")
    return data, remaining_length(data), False  # type: ignore[return-value]


def remaining_length(f: BinaryIO) -> int:
    """Bytes left in a seekable stream, or -1 if unknown."""
    try:
        if not f.seekable():
            return -1
        pos = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(pos)
        return end - pos
    except (AttributeError, OSError, ValueError):
        return -1


# --- prefix wrapper -------------------------------------------------------------------------------

class PrefixedBucket(Bucket):
    """Every key gets ``prefix/`` in front (Thanos' ``objstore.NewPrefixedBucket``, top-level ``prefix``)."""

    def __init__(self, bucket: Bucket, prefix: str):
        p = prefix.strip(DIR_DELIM)
        if not p:
            raise ValueError("PrefixedBucket: empty prefix (use the bucket itself)")
        validate_key(p)
        self._bkt = bucket
        self._prefix = p

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def inner(self) -> Bucket:
        return self._bkt

    @property
    def name(self) -> str:
        return self._bkt.name

    def _k(self, key: str) -> str:
        return f"{self._prefix}{DIR_DELIM}{key}"

    def get(self, key: str) -> bytes:
        validate_key(key)
        return self._bkt.get(self._k(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        validate_key(key)
        return self._bkt.get_range(self._k(key), offset, length)

    def upload(self, key: str, data: UploadData) -> None:
        validate_key(key)
        self._bkt.upload(self._k(key), data)

    def delete(self, key: str) -> None:
        validate_key(key, allow_dir=True)
        self._bkt.delete(self._k(key))

    def exists(self, key: str) -> bool:
        validate_key(key, allow_dir=True)
        return self._bkt.exists(self._k(key))

    def attributes(self, key: str) -> ObjectAttributes:
        validate_key(key)
        return self._bkt.attributes(self._k(key))

    def iter(self, prefix: str = "", recursive: bool = False) -> Iterator[str]:
        strip = self._prefix + DIR_DELIM
        for k in self._bkt.iter(self._k(dir_prefix(prefix)), recursive=recursive):
            yield k[len(strip):] if k.startswith(strip) else k

    def close(self) -> None:
        self._bkt.close()
