"""Errors raised by the TSDB readers. Each names the block, file and offset where things went wrong."""
from __future__ import annotations


class CorruptBlockError(Exception):
    """A block file is malformed: names the block, the file, the absolute offset and what is wrong."""

    def __init__(self, block: str = "", file: str = "", offset: int = 0, what: str = "") -> None:
        self.block = block
        self.file = file
        self.offset = offset
        self.what = what
        super().__init__(block, file, offset, what)

    def __str__(self) -> str:
        return f"corrupt block {self.block}: {self.file} at offset {self.offset}: {self.what}"

    def __reduce__(self):
        return (self.__class__, (self.block, self.file, self.offset, self.what))


class CorruptChunkError(CorruptBlockError):
    """A chunk segment file or a chunk inside it is malformed."""


class CorruptIndexError(CorruptBlockError):
    """The index file is malformed."""
