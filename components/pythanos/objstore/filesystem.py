"""FILESYSTEM bucket: object ``k`` is the file ``<directory>/k`` (Thanos' ``providers/filesystem``).

Choices, so that listings look exactly like S3's:

* Directories exist only because files are in them. ``iter`` never lists a directory that has
  no file anywhere below it (S3 has no empty "directories"; Thanos' own filesystem bucket
  skips only directories that are immediately empty). ``delete`` removes parent directories
  that became empty, up to (not including) the root, as Thanos does.
* ``upload`` writes a temporary file ``.pythanos-tmp-*`` next to the target and renames it
  into place, so readers see the old or the new object, never a partial one. Temporary files
  are never listed and never count as content. No fsync (Thanos does none either).
* ``exists("k")`` is true for regular files, ``exists("d/")`` for directories; ``get`` of a
  directory is "not found". ``delete("d/")`` removes ``d`` if no file is below it.
* The root directory need not exist; it is created by the first upload.
"""
from __future__ import annotations

import datetime as _dt
import errno
import os
import shutil
import tempfile
from typing import Iterator

from .bucket import (
    DIR_DELIM,
    Bucket,
    ObjectAttributes,
    ObjectNotFoundError,
    ObjstoreError,
    UploadData,
    as_stream,
    check_range,
    dir_prefix,
    validate_key,
)

TMP_PREFIX = ".pythanos-tmp-"
_COPY_BUF = 1 << 20


class FilesystemBucket(Bucket):
    def __init__(self, directory: str | os.PathLike[str]):
        d = os.fspath(directory)
        if not d:
            raise ValueError("FilesystemBucket: empty directory")
        self._root = os.path.abspath(d)

    @property
    def name(self) -> str:
        return f"fs: {self._root}"

    @property
    def directory(self) -> str:
        return self._root

    def _path(self, key: str) -> str:
        return os.path.join(self._root, *key.split(DIR_DELIM))

    def _not_found(self, key: str, op: str) -> ObjectNotFoundError:
        return ObjectNotFoundError(self.name, key, op)

    def _err(self, op: str, key: str, e: BaseException) -> ObjstoreError:
        return ObjstoreError(f"{op} {key!r} in bucket {self.name!r}: {e}", bucket=self.name, op=op, key=key)

    def _open(self, key: str, op: str):
        validate_key(key)
        try:
            return open(self._path(key), "rb")  # noqa: SIM115
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._not_found(key, op) from None
        except OSError as e:
            raise self._err(op, key, e) from e

    def get(self, key: str) -> bytes:
        with self._open(key, "get") as f:
            return f.read()

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        check_range(offset, length)
        with self._open(key, "get_range") as f:
            if offset:
                f.seek(offset)
            return f.read() if length == -1 else f.read(length)

    def upload(self, key: str, data: UploadData) -> None:
        validate_key(key)
        target = self._path(key)
        parent = os.path.dirname(target)
        stream, _, owned = as_stream(data)
        tmp = None
        try:
            try:
                os.makedirs(parent, exist_ok=True)
            except (FileExistsError, NotADirectoryError) as e:
                raise self._err("upload", key, f"a parent of the key is an object: {e}") from e
            if os.path.isdir(target):
                raise self._err("upload", key, "the key is a directory (it has objects below it)")
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=parent)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(stream, out, _COPY_BUF)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
            tmp = None
        except ObjstoreError:
            raise
        except OSError as e:
            raise self._err("upload", key, e) from e
        finally:
            if owned:
                stream.close()
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def delete(self, key: str) -> None:
        validate_key(key, allow_dir=True)
        path = self._path(key.rstrip(DIR_DELIM))
        if key.endswith(DIR_DELIM):  # a "directory marker": remove the directory if it holds no files
            if not os.path.isdir(path):
                raise self._not_found(key, "delete")
            if not self._has_files(path):
                shutil.rmtree(path, ignore_errors=True)
                self._remove_empty_parents(path)
            return
        try:
            if os.path.isdir(path):
                raise self._not_found(key, "delete")
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(key, "delete") from None
        except OSError as e:
            raise self._err("delete", key, e) from e
        self._remove_empty_parents(path)

    def _remove_empty_parents(self, path: str) -> None:
        d = os.path.dirname(path)
        while d != self._root and d.startswith(self._root + os.sep):
            try:
                os.rmdir(d)  # only succeeds when empty
            except OSError:
                break
            d = os.path.dirname(d)

    def exists(self, key: str) -> bool:
        validate_key(key, allow_dir=True)
        path = self._path(key.rstrip(DIR_DELIM))
        return os.path.isdir(path) if key.endswith(DIR_DELIM) else os.path.isfile(path)

    def attributes(self, key: str) -> ObjectAttributes:
        validate_key(key)
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(key, "attributes") from None
        except OSError as e:
            raise self._err("attributes", key, e) from e
        if not os.path.isfile(self._path(key)):
            raise self._not_found(key, "attributes")
        return ObjectAttributes(st.st_size, _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc))

    def iter(self, prefix: str = "", recursive: bool = False) -> Iterator[str]:
        base = dir_prefix(prefix)
        path = self._path(base.rstrip(DIR_DELIM)) if base else self._root
        return self._iter(path, base, recursive)

    def _entries(self, path: str) -> list[tuple[str, bool]]:
        """Sorted (name, is_dir) of a directory, ``name`` with '/' for directories; [] if missing."""
        try:
            with os.scandir(path) as it:
                raw = list(it)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return []
            raise ObjstoreError(f"iter {path!r} in bucket {self.name!r}: {e}", bucket=self.name, op="iter") from e
        out = []
        for e in raw:
            if e.name.startswith(TMP_PREFIX):
                continue
            if e.is_dir(follow_symlinks=True):
                out.append((e.name + DIR_DELIM, True))
            elif e.is_file(follow_symlinks=True):
                out.append((e.name, False))
        out.sort()
        return out

    def _has_files(self, path: str) -> bool:
        for name, is_dir in self._entries(path):
            if not is_dir or self._has_files(os.path.join(path, name[:-1])):
                return True
        return False

    def _iter(self, path: str, base: str, recursive: bool) -> Iterator[str]:
        for name, is_dir in self._entries(path):
            if not is_dir:
                yield base + name
                continue
            sub = os.path.join(path, name[:-1])
            if recursive:
                yield from self._iter(sub, base + name, True)
            elif self._has_files(sub):
                yield base + name
