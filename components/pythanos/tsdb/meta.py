"""``meta.json`` of a block (Prometheus ``BlockMeta`` + optional Thanos section) and marker files.

Bytes written:

* without a ``thanos`` section: exactly Prometheus' ``json.MarshalIndent(meta, "", "\\t")``: tab
  indent, Go field order, ``omitempty`` rules, **no trailing newline** (``to_json()``);
* with one: Thanos' ``json.Encoder`` + ``SetIndent("", "\\t")``: the Prometheus fields, then
  ``"thanos"`` (fields in Thanos' struct order) and a trailing newline.

Strings are escaped as Go does (``<``, ``>``, ``&``, U+2028, U+2029 as ``\\uXXXX``; other
non-ASCII kept as UTF-8). ``from_json`` ignores unknown keys and rejects a meta ``version``
other than 1 (and a Thanos-section version other than 0/1) with :class:`InvalidMetaError`
naming the block and file.

Markers (``deletion-mark.json``, ``no-compact-mark.json``, ``no-downsample-mark.json``) are
compact ``json.Marshal`` output, as Thanos writes them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import CorruptBlockError

META_FILENAME = "meta.json"
META_VERSION1 = 1
DELETION_MARK_FILENAME = "deletion-mark.json"
NO_COMPACT_MARK_FILENAME = "no-compact-mark.json"
NO_DOWNSAMPLE_MARK_FILENAME = "no-downsample-mark.json"
UPLOAD_TIME_ZERO = "0001-01-01T00:00:00Z"


class InvalidMetaError(CorruptBlockError):
    """meta.json (or a marker) cannot be used: not JSON, wrong version, missing fields."""


def go_json(obj: Any, indent: str | None = None) -> str:
    """JSON as Go's encoding/json writes it (HTML-safe escaping, no spaces when compact)."""
    if indent is None:
        s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    else:
        s = json.dumps(obj, ensure_ascii=False, indent=indent, separators=(",", ": "))
    # These characters can only occur inside strings, so a global replace is exact.
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _str_map(obj: Any, what: str) -> dict[str, str]:
    """A JSON object of strings (Go's ``map[string]string``): anything else is a ValueError."""
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
        raise ValueError(f"{what} must be an object of strings")
    return dict(obj)


@dataclass
class BlockStats:
    num_samples: int = 0
    num_series: int = 0
    num_chunks: int = 0
    num_tombstones: int = 0
    num_float_samples: int = 0
    num_histogram_samples: int = 0

    def to_obj(self) -> dict:
        d: dict[str, int] = {}
        for key, val in (("numSamples", self.num_samples), ("numFloatSamples", self.num_float_samples),
                         ("numHistogramSamples", self.num_histogram_samples), ("numSeries", self.num_series),
                         ("numChunks", self.num_chunks), ("numTombstones", self.num_tombstones)):
            if val:
                d[key] = int(val)
        return d

    @classmethod
    def from_obj(cls, d: dict) -> "BlockStats":
        d = d or {}
        return cls(num_samples=int(d.get("numSamples", 0)), num_series=int(d.get("numSeries", 0)),
                   num_chunks=int(d.get("numChunks", 0)), num_tombstones=int(d.get("numTombstones", 0)),
                   num_float_samples=int(d.get("numFloatSamples", 0)),
                   num_histogram_samples=int(d.get("numHistogramSamples", 0)))


@dataclass
class BlockDesc:
    ulid: str
    min_time: int
    max_time: int

    def to_obj(self) -> dict:
        return {"ulid": self.ulid, "minTime": int(self.min_time), "maxTime": int(self.max_time)}


@dataclass
class Compaction:
    level: int = 1
    sources: list[str] = field(default_factory=list)
    deletable: bool = False
    parents: list[BlockDesc] = field(default_factory=list)
    failed: bool = False
    hints: list[str] = field(default_factory=list)

    def to_obj(self) -> dict:
        d: dict[str, Any] = {"level": int(self.level)}
        if self.sources:
            d["sources"] = list(self.sources)
        if self.deletable:
            d["deletable"] = True
        if self.parents:
            d["parents"] = [p.to_obj() for p in self.parents]
        if self.failed:
            d["failed"] = True
        if self.hints:
            d["hints"] = list(self.hints)
        return d

    @classmethod
    def from_obj(cls, d: dict) -> "Compaction":
        d = d or {}
        return cls(level=int(d.get("level", 0)), sources=list(d.get("sources") or []),
                   deletable=bool(d.get("deletable", False)),
                   parents=[BlockDesc(p.get("ulid", ""), int(p.get("minTime", 0)), int(p.get("maxTime", 0)))
                            for p in d.get("parents") or []],
                   failed=bool(d.get("failed", False)), hints=list(d.get("hints") or []))


@dataclass
class ThanosFile:
    rel_path: str
    size_bytes: int = 0
    hash: dict | None = None  # {"hashFunc": "SHA256", "value": hex}

    def to_obj(self) -> dict:
        d: dict[str, Any] = {"rel_path": self.rel_path}
        if self.size_bytes:
            d["size_bytes"] = int(self.size_bytes)
        if self.hash:
            d["hash"] = self.hash
        return d


@dataclass
class ThanosMeta:
    """The ``thanos`` section (Thanos ``metadata.Thanos``)."""

    labels: dict[str, str] = field(default_factory=dict)
    downsample_resolution: int = 0
    source: str = ""
    segment_files: list[str] = field(default_factory=list)
    files: list[ThanosFile] = field(default_factory=list)
    rewrites: list | None = None
    index_stats: dict = field(default_factory=dict)  # series_max_size, chunk_max_size
    extensions: Any = None
    upload_time: str | None = None  # RFC3339Nano; written as Go's zero time when None
    version: int = 0

    def to_obj(self) -> dict:
        d: dict[str, Any] = {}
        if self.version:
            d["version"] = int(self.version)
        d["labels"] = dict(sorted(self.labels.items()))
        d["downsample"] = {"resolution": int(self.downsample_resolution)}
        d["source"] = self.source
        if self.segment_files:
            d["segment_files"] = list(self.segment_files)
        if self.files:
            d["files"] = [f.to_obj() for f in sorted(self.files, key=lambda f: f.rel_path)]
        if self.rewrites:
            d["rewrites"] = self.rewrites
        d["index_stats"] = {k: int(v) for k, v in (("series_max_size", self.index_stats.get("series_max_size", 0)),
                                                   ("chunk_max_size", self.index_stats.get("chunk_max_size", 0)))
                            if v}
        if self.extensions is not None:
            d["extensions"] = self.extensions
        d["upload_time"] = self.upload_time or UPLOAD_TIME_ZERO
        return d

    @classmethod
    def from_obj(cls, d: dict) -> "ThanosMeta":
        d = d or {}
        return cls(labels=_str_map(d.get("labels") or {}, "thanos.labels"),
                   downsample_resolution=int((d.get("downsample") or {}).get("resolution", 0)),
                   source=d.get("source", "") or "", segment_files=list(d.get("segment_files") or []),
                   files=[ThanosFile(f.get("rel_path", ""), int(f.get("size_bytes", 0) or 0), f.get("hash"))
                          for f in d.get("files") or []],
                   rewrites=d.get("rewrites"), index_stats=dict(d.get("index_stats") or {}),
                   extensions=d.get("extensions"),
                   upload_time=None if d.get("upload_time") in (None, UPLOAD_TIME_ZERO) else d.get("upload_time"),
                   version=int(d.get("version", 0) or 0))


@dataclass
class BlockMeta:
    ulid: str
    min_time: int
    max_time: int  # exclusive
    stats: BlockStats = field(default_factory=BlockStats)
    compaction: Compaction = field(default_factory=Compaction)
    version: int = META_VERSION1
    thanos: ThanosMeta | None = None

    def to_obj(self) -> dict:
        d: dict[str, Any] = {"ulid": self.ulid, "minTime": int(self.min_time), "maxTime": int(self.max_time),
                             "stats": self.stats.to_obj(), "compaction": self.compaction.to_obj(),
                             "version": int(self.version)}
        if self.thanos is not None:
            d["thanos"] = self.thanos.to_obj()
        return d

    def to_json(self) -> bytes:
        """Prometheus' exact bytes without a thanos section; Thanos' (trailing newline) with one."""
        s = go_json(self.to_obj(), indent="\t")
        if self.thanos is not None:
            s += "\n"
        return s.encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str, *, block: str = "", file: str = META_FILENAME) -> "BlockMeta":
        try:
            d = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested too deep
            raise InvalidMetaError(block, file, getattr(e, "pos", 0) or 0, f"not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise InvalidMetaError(block, file, 0, "not a JSON object")
        v = d.get("version")
        if v != META_VERSION1:
            raise InvalidMetaError(block, file, 0, f"unexpected meta file version {v!r} (want 1)")
        try:
            th = d.get("thanos")
            meta = cls(ulid=str(d["ulid"]), min_time=int(d["minTime"]), max_time=int(d["maxTime"]),
                       stats=BlockStats.from_obj(d.get("stats")), compaction=Compaction.from_obj(d.get("compaction")),
                       version=v, thanos=ThanosMeta.from_obj(th) if isinstance(th, dict) else None)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:  # int(1e999): OverflowError
            raise InvalidMetaError(block, file, 0, f"malformed meta: {type(e).__name__}: {e}") from None
        if meta.thanos is not None and meta.thanos.version not in (0, 1):
            raise InvalidMetaError(block, file, 0, f"unexpected thanos meta version {meta.thanos.version}")
        return meta

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.thanos.labels) if self.thanos else {}

    @property
    def resolution(self) -> int:
        return self.thanos.downsample_resolution if self.thanos else 0


def write_meta(block_dir: str | os.PathLike, meta: BlockMeta) -> int:
    """Write ``meta.json`` through ``meta.json.tmp`` + rename (as Prometheus); returns its size."""
    data = meta.to_json()
    path = os.path.join(os.fspath(block_dir), META_FILENAME)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    return len(data)


def read_meta(block_dir: str | os.PathLike) -> BlockMeta:
    d = os.fspath(block_dir)
    block = os.path.basename(os.path.normpath(d))
    try:
        with open(os.path.join(d, META_FILENAME), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InvalidMetaError(block, META_FILENAME, 0, "meta.json not found") from None
    return BlockMeta.from_json(data, block=block)


# --- markers ----------------------------------------------------------------------------------------

@dataclass
class DeletionMark:
    id: str
    deletion_time: int  # unix seconds
    details: str = ""
    version: int = 1

    filename = DELETION_MARK_FILENAME

    def to_obj(self) -> dict:
        d: dict[str, Any] = {"id": self.id, "version": self.version}
        if self.details:
            d["details"] = self.details
        d["deletion_time"] = int(self.deletion_time)
        return d

    @classmethod
    def from_obj(cls, d: dict) -> "DeletionMark":
        return cls(id=d["id"], deletion_time=int(d["deletion_time"]), details=d.get("details", ""),
                   version=d["version"])


@dataclass
class NoCompactMark:
    id: str
    no_compact_time: int
    reason: str = "manual"
    details: str = ""
    version: int = 1

    filename = NO_COMPACT_MARK_FILENAME

    def to_obj(self) -> dict:
        d: dict[str, Any] = {"id": self.id, "version": self.version}
        if self.details:
            d["details"] = self.details
        d["no_compact_time"] = int(self.no_compact_time)
        d["reason"] = self.reason
        return d

    @classmethod
    def from_obj(cls, d: dict) -> "NoCompactMark":
        return cls(id=d["id"], no_compact_time=int(d["no_compact_time"]), reason=d.get("reason", ""),
                   details=d.get("details", ""), version=d["version"])


@dataclass
class NoDownsampleMark:
    id: str
    no_downsample_time: int
    reason: str = "manual"
    details: str = ""
    version: int = 1

    filename = NO_DOWNSAMPLE_MARK_FILENAME

    def to_obj(self) -> dict:
        d: dict[str, Any] = {"id": self.id, "version": self.version}
        if self.details:
            d["details"] = self.details
        d["no_downsample_time"] = int(self.no_downsample_time)
        d["reason"] = self.reason
        return d

    @classmethod
    def from_obj(cls, d: dict) -> "NoDownsampleMark":
        return cls(id=d["id"], no_downsample_time=int(d["no_downsample_time"]), reason=d.get("reason", ""),
                   details=d.get("details", ""), version=d["version"])


_MARKERS = {m.filename: m for m in (DeletionMark, NoCompactMark, NoDownsampleMark)}


def marker_to_json(mark) -> bytes:
    return go_json(mark.to_obj()).encode("utf-8")


def marker_from_json(filename: str, data: bytes | str, *, block: str = ""):
    """Parse a marker by its file name; version must be 1 (Thanos ignores others as partial)."""
    cls = _MARKERS.get(os.path.basename(filename))
    if cls is None:
        raise ValueError(f"unknown marker file {filename!r}")
    try:
        d = json.loads(data)
        if d.get("version") != 1:
            raise InvalidMetaError(block, filename, 0, f"unexpected marker version {d.get('version')!r} (want 1)")
        return cls.from_obj(d)
    except InvalidMetaError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as e:
        raise InvalidMetaError(block, filename, 0, f"malformed marker: {type(e).__name__}: {e}") from None


def write_marker(block_dir: str | os.PathLike, mark) -> None:
    path = os.path.join(os.fspath(block_dir), mark.filename)
    with open(path + ".tmp", "wb") as f:
        f.write(marker_to_json(mark))
    os.replace(path + ".tmp", path)


def read_marker(block_dir: str | os.PathLike, filename: str):
    d = os.fspath(block_dir)
    with open(os.path.join(d, filename), "rb") as f:
        return marker_from_json(filename, f.read(), block=os.path.basename(os.path.normpath(d)))
