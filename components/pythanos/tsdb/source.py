"""Byte sources: one abstraction so block readers work on local files and on object storage.

A ``ByteSource`` has a ``size()`` and ranged ``read(offset, length)``; a read
past the end raises ``CorruptBlockError`` naming the file. Implementations:

* ``FileSource(path)``: ``os.pread`` on an open file descriptor (0-byte files fine);
* ``BucketSource(bucket, key, name_for_errors)``: ranged GETs through any object
  with ``get_range(key, offset, length) -> bytes`` and ``attributes(key).size``,
  with an optional read-ahead window;
* ``BytesSource(data)``: in-memory, for tests.
"""
from __future__ import annotations

import os
import threading
from typing import Protocol, runtime_checkable

from .errors import CorruptBlockError

__all__ = ["ByteSource", "FileSource", "BucketSource", "BytesSource"]


@runtime_checkable
class ByteSource(Protocol):
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...


def _check_range(offset: int, length: int, size: int, block: str, file: str) -> None:
    if offset < 0 or length < 0:
        raise CorruptBlockError(block, file, offset, f"invalid read of {length} bytes")
    if offset + length > size:
        raise CorruptBlockError(block, file, offset,
                                f"read of {length} bytes past the end of the file (size {size})")


class BytesSource:
    """An in-memory byte source."""

    def __init__(self, data: bytes, name: str = "", block: str = "") -> None:
        self._data = bytes(data)
        self.name = name
        self.block = block

    def size(self) -> int:
        return len(self._data)

    def read(self, offset: int, length: int) -> bytes:
        _check_range(offset, length, len(self._data), self.block, self.name)
        return self._data[offset:offset + length]

    def close(self) -> None:
        pass

    def __enter__(self) -> "BytesSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FileSource:
    """A local file read with ``os.pread`` (thread-safe, no mmap: a 0-byte or truncated file is an error, not SIGBUS).

    ``block`` defaults to the name of the file's directory, ``name`` to its base name.
    """

    def __init__(self, path: str | os.PathLike, block: str | None = None, name: str | None = None) -> None:
        self.path = os.fspath(path)
        self.name = os.path.basename(self.path) if name is None else name
        self.block = os.path.basename(os.path.dirname(os.path.abspath(self.path))) if block is None else block
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            self._size = os.fstat(self._fd).st_size
        except BaseException:
            os.close(self._fd)
            raise

    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        _check_range(offset, length, self._size, self.block, self.name)
        if length == 0:
            return b""
        if self._fd < 0:
            raise ValueError(f"{self.path}: source is closed")
        data = os.pread(self._fd, length, offset)
        if len(data) < length:  # the file shrank under us
            parts = [data]
            got = len(data)
            while got < length:
                more = os.pread(self._fd, length - got, offset + got)
                if not more:
                    raise CorruptBlockError(self.block, self.name, offset + got,
                                            f"file truncated while reading {length} bytes")
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "FileSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


class BucketSource:
    """An object in a bucket read with ranged GETs.

    ``bucket`` needs ``get_range(key, offset, length) -> bytes`` and
    ``attributes(key).size``. ``readahead`` > 0 makes every read fetch at least that
    many bytes (clipped to the object) and keep the last window, so small reads
    close together (series entries) cost one request.
    """

    def __init__(self, bucket, key: str, name_for_errors: str | None = None, *,
                 block: str = "", readahead: int = 0, size: int | None = None) -> None:
        self.bucket = bucket
        self.key = key
        self.name = key if name_for_errors is None else name_for_errors
        self.block = block
        self.readahead = readahead
        self._size = size
        self._lock = threading.Lock()
        self._win_off = 0
        self._win = b""
        self.requests = 0  # number of get_range calls made, for tests and metrics
        self.bytes_fetched = 0

    def size(self) -> int:
        if self._size is None:
            self._size = int(self.bucket.attributes(self.key).size)
        return self._size

    def _get(self, offset: int, length: int) -> bytes:
        self.requests += 1
        data = self.bucket.get_range(self.key, offset, length)
        self.bytes_fetched += len(data)
        if len(data) != length:
            raise CorruptBlockError(self.block, self.name, offset + len(data),
                                    f"ranged read returned {len(data)} of {length} bytes")
        return bytes(data)

    def read(self, offset: int, length: int) -> bytes:
        size = self.size()
        _check_range(offset, length, size, self.block, self.name)
        if length == 0:
            return b""
        if self.readahead <= 0:
            return self._get(offset, length)
        with self._lock:
            w0, win = self._win_off, self._win
        if w0 <= offset and offset + length <= w0 + len(win):
            return win[offset - w0:offset - w0 + length]
        if length >= self.readahead:
            return self._get(offset, length)
        n = min(self.readahead, size - offset)
        data = self._get(offset, n)
        with self._lock:
            self._win_off, self._win = offset, data
        return data[:length]

    def close(self) -> None:
        self._win = b""

    def __enter__(self) -> "BucketSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
