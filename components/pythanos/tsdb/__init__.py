"""Prometheus TSDB block format: XOR chunks, index, chunk segment files, tombstones, meta.json,
ULIDs, and whole-block writer/reader (see ``block.py`` for the writer/reader API)."""
from .block import (
    BlockReader,
    BlockWriter,
    aligned_ranges,
    cut_fixed,
    cut_head,
    norm_labels,
    range_end,
    write_blocks,
)
from .chunkenc import ENCODING_XOR, decode_xor, decode_xor_many, encode_xor, encode_xor_many
from .chunks import ChunkReader, ChunkWriter, chunk_ref, segment_name, split_ref
from .errors import CorruptBlockError, CorruptChunkError, CorruptIndexError
from .index import ChunkMeta, IndexReader, IndexWriter
from .labels import Matcher
from .meta import (
    BlockDesc,
    BlockMeta,
    BlockStats,
    Compaction,
    DeletionMark,
    InvalidMetaError,
    NoCompactMark,
    NoDownsampleMark,
    ThanosFile,
    ThanosMeta,
    read_marker,
    read_meta,
    write_marker,
    write_meta,
)
from .source import BucketSource, ByteSource, BytesSource, FileSource
from .ulid import ULIDError

__all__ = [
    "BlockDesc", "BlockMeta", "BlockReader", "BlockStats", "BlockWriter", "BucketSource", "ByteSource",
    "BytesSource", "ChunkMeta", "ChunkReader", "ChunkWriter", "Compaction", "CorruptBlockError",
    "CorruptChunkError", "CorruptIndexError", "DeletionMark", "ENCODING_XOR", "FileSource", "IndexReader",
    "IndexWriter", "InvalidMetaError", "Matcher", "NoCompactMark", "NoDownsampleMark", "ThanosFile",
    "ThanosMeta", "ULIDError", "aligned_ranges", "chunk_ref", "cut_fixed", "cut_head", "decode_xor",
    "decode_xor_many", "encode_xor", "encode_xor_many", "norm_labels", "range_end", "read_marker",
    "read_meta", "segment_name", "split_ref", "write_blocks", "write_marker", "write_meta",
]
