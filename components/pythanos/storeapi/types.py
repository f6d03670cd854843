"""Python-side values of the StoreAPI and their conversion to and from the wire messages.

* Labels are a tuple of ``(name, value)`` pairs sorted by name (:data:`Labels`); ordering
  series by these tuples is Prometheus' ``labels.Compare`` order (code-point order of str
  equals byte order of UTF-8).
* :class:`Chunk` is one ``thanos.AggrChunk``: ``(min_time, max_time, encoding, data)`` for raw
  data, with ``encoding`` in **Thanos numbering** (XOR=0, HISTOGRAM=1, FLOAT_HISTOGRAM=2 =
  Prometheus' chunkenc byte minus one), plus ``aggregates`` for downsampled chunks.
* Matchers are :class:`pythanos.tsdb.labels.Matcher` (Prometheus regex semantics).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple, Optional, Sequence, Union

from google.protobuf import any_pb2

from ..tsdb.encoding import encode_uvarint
from ..tsdb.labels import MATCH_EQUAL, MATCH_NOT_EQUAL, MATCH_NOT_REGEXP, MATCH_REGEXP, Matcher
from .pb import info_pb2, labels_pb2, rpc_pb2, types_pb2

__all__ = [
    "Labels", "LabelsLike", "Chunk", "Series", "SeriesWarning", "LabelsResult", "StoreInfo",
    "SeriesRequest", "LabelNamesRequest", "LabelValuesRequest",
    "XOR", "HISTOGRAM", "FLOAT_HISTOGRAM", "AGGR_RAW", "AGGR_COUNT", "AGGR_SUM", "AGGR_MIN", "AGGR_MAX",
    "AGGR_COUNTER", "PARTIAL_RESPONSE_WARN", "PARTIAL_RESPONSE_ABORT", "MIN_TIME", "MAX_TIME",
    "COMPONENT_TYPES", "norm_labels", "labels_to_pb", "labels_from_pb", "matcher_to_pb", "matcher_from_pb",
    "matchers_from_pb", "BadMatcherError", "chunk_to_pb", "chunk_from_pb", "series_to_pb", "series_from_pb",
    "prom_to_thanos_encoding", "thanos_to_prom_encoding", "RawSeries", "SeriesFrames", "uvarint", "pb_bytes_field",
    "labels_to_bytes", "LabelEncoder", "series_payload",
]

Labels = tuple  # tuple[tuple[str, str], ...], sorted by name, names unique
LabelsLike = Union[Mapping[str, str], Iterable[tuple[str, str]]]

# Chunk encodings on the gRPC wire (thanos.Chunk.Encoding).
XOR = types_pb2.Chunk.XOR  # 0
HISTOGRAM = types_pb2.Chunk.HISTOGRAM  # 1
FLOAT_HISTOGRAM = types_pb2.Chunk.FLOAT_HISTOGRAM  # 2

# thanos.Aggr
AGGR_RAW, AGGR_COUNT, AGGR_SUM, AGGR_MIN, AGGR_MAX, AGGR_COUNTER = 0, 1, 2, 3, 4, 5
_AGGR_FIELDS = {AGGR_COUNT: "count", AGGR_SUM: "sum", AGGR_MIN: "min", AGGR_MAX: "max", AGGR_COUNTER: "counter"}

PARTIAL_RESPONSE_WARN = types_pb2.WARN
PARTIAL_RESPONSE_ABORT = types_pb2.ABORT

# "unknown" time bounds, as Thanos reports them (math.MinInt64 / math.MaxInt64).
MIN_TIME = -(1 << 63)
MAX_TIME = (1 << 63) - 1

# InfoResponse.ComponentType -> the old Store.Info StoreType.
COMPONENT_TYPES = {
    "query": rpc_pb2.QUERY, "rule": rpc_pb2.RULE, "sidecar": rpc_pb2.SIDECAR, "store": rpc_pb2.STORE,
    "receive": rpc_pb2.RECEIVE, "debug": rpc_pb2.DEBUG,
}
_STORE_TYPE_NAMES = {v: k for k, v in COMPONENT_TYPES.items()}


def prom_to_thanos_encoding(prom_encoding: int) -> int:
    """Prometheus chunkenc byte (XOR=1) -> Thanos wire encoding (XOR=0)."""
    return prom_encoding - 1


def thanos_to_prom_encoding(thanos_encoding: int) -> int:
    return thanos_encoding + 1


# --- labels ------------------------------------------------------------------------------------

def norm_labels(labels: LabelsLike) -> Labels:
    """Sorted tuple of (name, value) pairs; empty values are dropped (Prometheus: absent label)."""
    items = labels.items() if isinstance(labels, Mapping) else labels
    return tuple(sorted((str(n), str(v)) for n, v in items if v != ""))


def labels_to_pb(labels: Labels) -> list:
    Label = labels_pb2.Label
    return [Label(name=n, value=v) for n, v in labels]


def labels_from_pb(pb_labels) -> Labels:
    return tuple((l.name, l.value) for l in pb_labels)


# --- matchers ----------------------------------------------------------------------------------

_TO_PB = {MATCH_EQUAL: types_pb2.LabelMatcher.EQ, MATCH_NOT_EQUAL: types_pb2.LabelMatcher.NEQ,
          MATCH_REGEXP: types_pb2.LabelMatcher.RE, MATCH_NOT_REGEXP: types_pb2.LabelMatcher.NRE}
_FROM_PB = {v: k for k, v in _TO_PB.items()}


class BadMatcherError(ValueError):
    """A matcher from the wire is invalid; the message names the matcher."""


def matcher_to_pb(m: Matcher) -> types_pb2.LabelMatcher:
    return types_pb2.LabelMatcher(type=_TO_PB[m.type], name=m.name, value=m.value)


def matcher_from_pb(pm) -> Matcher:
    op = _FROM_PB.get(pm.type)
    shown = f'{pm.name}{op or "?"}"{pm.value}"'
    if op is None:
        raise BadMatcherError(f"matcher {shown}: unknown matcher type {pm.type}")
    try:
        return Matcher(op, pm.name, pm.value)
    except ValueError as e:
        raise BadMatcherError(f"bad matcher {shown}: {e}") from None


def matchers_from_pb(pms) -> list[Matcher]:
    return [matcher_from_pb(pm) for pm in pms]


# --- chunks and series -------------------------------------------------------------------------

class Chunk(NamedTuple):
    """One ``thanos.AggrChunk``. ``encoding``/``data`` are the raw chunk (Thanos numbering; data
    without the encoding byte). Downsampled chunks carry ``aggregates``: ``{AGGR_COUNT: (encoding,
    data), ...}`` and may have ``data == b""`` (no raw chunk)."""

    min_time: int
    max_time: int
    encoding: int
    data: bytes
    aggregates: Optional[Mapping[int, tuple[int, bytes]]] = None


class Series(NamedTuple):
    labels: Labels
    chunks: Sequence[Chunk] = ()


class RawSeries(NamedTuple):
    """A series whose chunks are already on the wire: the fast path of :class:`Series`.

    ``labels`` are the store's labels (as for :class:`Series`; the server base merges external
    labels and removes replica labels as usual), ``chunks`` the serialized ``chunks`` fields of
    a ``thanos.Series`` message: for every ``AggrChunk``, the tag byte ``0x12``, the varint
    length and the ``AggrChunk`` bytes, concatenated (what ``Series(chunks=...)`` would add to
    ``SerializeToString()``). The base emits ``labels`` + ``chunks`` as the ``Series`` bytes
    without parsing them. ``wire``, when not empty, is the whole ``thanos.Series`` message with
    exactly these labels (the transcoder writes it): the base sends it as it is when it keeps the
    labels unchanged."""

    labels: Labels
    chunks: bytes = b""
    wire: bytes = b""


class SeriesFrames(NamedTuple):
    """SeriesResponse frames a store serialized itself: ``count`` series with their final labels
    (external labels merged, replica labels removed), in order, batched as the request's
    ``response_batch_size`` asks and within its ``limit``. The base sends them as they are and
    checks only the order against what came before, by ``first`` and ``last`` (the labels of the
    first and last series). The fast path for answers of many series (the store gateway's)."""

    frames: list
    count: int
    first: Labels
    last: Labels


class SeriesWarning(str):
    """A partial-response warning in a Series stream (a ``warning`` frame)."""


def chunk_to_pb(c) -> types_pb2.AggrChunk:
    if isinstance(c, types_pb2.AggrChunk):  # pass-through
        return c
    mint, maxt, enc, data = c[0], c[1], c[2], c[3]
    aggrs = c[4] if len(c) > 4 else None
    ac = types_pb2.AggrChunk(min_time=mint, max_time=maxt)
    if data or not aggrs:
        ac.raw.type = enc
        ac.raw.data = bytes(data)
    if aggrs:
        for a, (aenc, adata) in aggrs.items():
            ch = getattr(ac, _AGGR_FIELDS[a])
            ch.type = aenc
            ch.data = bytes(adata)
    return ac


def chunk_from_pb(ac) -> Chunk:
    aggrs = None
    for a, name in _AGGR_FIELDS.items():
        if ac.HasField(name):
            ch = getattr(ac, name)
            if aggrs is None:
                aggrs = {}
            aggrs[a] = (ch.type, ch.data)
    if ac.HasField("raw"):
        return Chunk(ac.min_time, ac.max_time, ac.raw.type, ac.raw.data, aggrs)
    return Chunk(ac.min_time, ac.max_time, XOR, b"", aggrs)


def series_to_pb(labels: Labels, chunks: Iterable = ()) -> types_pb2.Series:
    return types_pb2.Series(labels=labels_to_pb(labels), chunks=[chunk_to_pb(c) for c in chunks])


def series_from_pb(s) -> Series:
    return Series(labels_from_pb(s.labels), [chunk_from_pb(c) for c in s.chunks])


# --- protobuf wire writing (the Series fast path) ----------------------------------------------

_VARINT1 = tuple(bytes((i,)) for i in range(0x80))


def uvarint(n: int) -> bytes:
    """Protobuf varint of ``n``; a negative ``n`` is written as its 64-bit two's complement
    (10 bytes), as protobuf writes a negative ``int64``/``int32``/enum."""
    if 0 <= n < 0x80:
        return _VARINT1[n]
    if 0 < n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    return encode_uvarint(n & 0xFFFFFFFFFFFFFFFF)  # protobuf writes negative int64 as 10 bytes


def pb_bytes_field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: ``tag`` (already the key byte(s)), varint length, payload."""
    n = len(payload)
    return tag + (_VARINT1[n] if n < 0x80 else uvarint(n)) + payload


class LabelEncoder:
    """``thanos.Series`` ``labels`` fields (``0x0a`` len ``Label{name=1, value=2}``) with the
    bytes of each pair cached: label pairs repeat across the series of one answer."""

    __slots__ = ("cache",)

    def __init__(self) -> None:
        self.cache: dict = {}

    def __call__(self, labels: Labels) -> bytes:
        cache = self.cache
        get = cache.get
        out = []
        for pair in labels:
            b = get(pair)
            if b is None:
                n, v = pair
                inner = (pb_bytes_field(b"\x0a", n.encode()) if n else b"") + (
                    pb_bytes_field(b"\x12", v.encode()) if v else b"")
                b = cache[pair] = pb_bytes_field(b"\x0a", inner)
                if len(cache) > 100_000:
                    cache.clear()
                    cache[pair] = b
            out.append(b)
        return b"".join(out)


def labels_to_bytes(labels: Labels) -> bytes:
    return LabelEncoder()(labels)


def series_payload(labels_bytes: bytes, s, skip_chunks: bool = False) -> bytes:
    """``thanos.Series`` bytes for a :class:`RawSeries` / :class:`Series` / ``(labels, chunks)``
    whose labels are already encoded (the complete set)."""
    if skip_chunks:
        return labels_bytes
    if isinstance(s, RawSeries):
        return labels_bytes + s.chunks
    chunks = s.chunks if isinstance(s, Series) else s[1]
    if not chunks:
        return labels_bytes
    return labels_bytes + b"".join([pb_bytes_field(b"\x12", chunk_to_pb(c).SerializeToString()) for c in chunks])


# --- requests as the store sees them -----------------------------------------------------------

@dataclass
class SeriesRequest:
    """A Series call after the server base has parsed it.

    ``matchers`` are the request's matchers **without** those on external labels (which the
    base already checked). ``raw`` is the wire request for anything else (``query_hints``,
    ``shard_info``, ``step``...). The store may ignore ``without_replica_labels`` and ``limit``:
    the base applies both."""

    matchers: list[Matcher]
    min_time: int
    max_time: int
    skip_chunks: bool = False
    max_resolution_window: int = 0
    aggregates: list[int] = field(default_factory=list)
    partial_response_strategy: int = PARTIAL_RESPONSE_WARN
    without_replica_labels: list[str] = field(default_factory=list)
    limit: int = 0
    hints: Optional[any_pb2.Any] = None
    external_labels: Labels = ()
    raw: Optional[rpc_pb2.SeriesRequest] = None
    #: a :class:`~.sharding.ShardMatcher` when the request is sharded: the base drops the other
    #: shards' series; a store that yields :class:`SeriesFrames` must drop them itself
    shard: Optional[object] = None

    @property
    def abort_on_error(self) -> bool:
        return self.partial_response_strategy == PARTIAL_RESPONSE_ABORT or bool(
            self.raw is not None and self.raw.partial_response_disabled)


@dataclass
class LabelNamesRequest:
    matchers: list[Matcher]
    start: int
    end: int
    limit: int = 0
    without_replica_labels: list[str] = field(default_factory=list)
    hints: Optional[any_pb2.Any] = None
    external_labels: Labels = ()
    raw: Optional[rpc_pb2.LabelNamesRequest] = None


@dataclass
class LabelValuesRequest:
    label: str
    matchers: list[Matcher]
    start: int
    end: int
    limit: int = 0
    without_replica_labels: list[str] = field(default_factory=list)
    hints: Optional[any_pb2.Any] = None
    external_labels: Labels = ()
    raw: Optional[rpc_pb2.LabelValuesRequest] = None


@dataclass
class LabelsResult:
    """What LabelNames / LabelValues return: values plus partial-response warnings."""

    values: list[str]
    warnings: list[str] = field(default_factory=list)
    hints: Optional[any_pb2.Any] = None


@dataclass
class StoreInfo:
    """What a store reports about itself (both Info APIs are built from it).

    ``label_sets`` defaults to ``[external_labels]`` (none when those are empty), as the sidecar
    reports. ``min_time``/``max_time`` are milliseconds; :data:`MIN_TIME`/:data:`MAX_TIME` when
    unknown or open-ended (a live head)."""

    min_time: int = MIN_TIME
    max_time: int = MAX_TIME
    external_labels: Labels = ()
    component_type: str = "store"
    label_sets: Optional[list[Labels]] = None
    supports_sharding: bool = False
    supports_without_replica_labels: bool = True
    tsdb_infos: Optional[list[tuple[Labels, int, int]]] = None  # (labels, min_time, max_time)
    # set: the endpoint serves the Exemplars API, (min_time, max_time) as its Info says (a Thanos
    # receiver says (0, 0)); the querier asks only such endpoints for exemplars
    exemplars: Optional[tuple[int, int]] = None
    # the endpoint serves the Rules API (Info's ``rules`` set); the querier gathers rules from such
    rules: bool = False
    # the endpoint serves the Store API (Info's ``store`` set); a stateless ruler serves only rules
    store: bool = True

    def __post_init__(self) -> None:
        self.external_labels = norm_labels(self.external_labels)
        if self.label_sets is not None:
            self.label_sets = [norm_labels(ls) for ls in self.label_sets]

    def effective_label_sets(self) -> list[Labels]:
        if self.label_sets is not None:
            return [ls for ls in self.label_sets if ls]
        return [self.external_labels] if self.external_labels else []

    # -- wire --
    def to_info_pb(self) -> info_pb2.InfoResponse:
        resp = info_pb2.InfoResponse(ComponentType=self.component_type)
        for ls in self.effective_label_sets():
            resp.label_sets.add().labels.extend(labels_to_pb(ls))
        if not self.store:
            if self.rules:
                resp.rules.SetInParent()
            return resp
        st = resp.store
        st.min_time, st.max_time = self.min_time, self.max_time
        st.supports_sharding = self.supports_sharding
        st.supports_without_replica_labels = self.supports_without_replica_labels
        for ls, mint, maxt in self.tsdb_infos or ():
            ti = st.tsdb_infos.add(min_time=mint, max_time=maxt)
            ti.labels.SetInParent()  # non-nullable in Thanos: always present
            ti.labels.labels.extend(labels_to_pb(norm_labels(ls)))
        if self.exemplars is not None:
            resp.exemplars.min_time, resp.exemplars.max_time = self.exemplars
            resp.exemplars.SetInParent()
        if self.rules:
            resp.rules.SetInParent()
        return resp

    def to_store_info_pb(self) -> rpc_pb2.InfoResponse:
        sets = self.effective_label_sets()
        resp = rpc_pb2.InfoResponse(min_time=self.min_time, max_time=self.max_time,
                                    storeType=COMPONENT_TYPES.get(self.component_type, rpc_pb2.UNKNOWN))
        if sets:
            resp.labels.extend(labels_to_pb(sets[0]))
        for ls in sets:
            resp.label_sets.add().labels.extend(labels_to_pb(ls))
        return resp

    @classmethod
    def from_info_pb(cls, resp) -> "StoreInfo":
        sets = [labels_from_pb(ls.labels) for ls in resp.label_sets]
        if resp.HasField("store"):
            st = resp.store
            return cls(min_time=st.min_time, max_time=st.max_time,
                       external_labels=sets[0] if sets else (), component_type=resp.ComponentType,
                       label_sets=sets, supports_sharding=st.supports_sharding,
                       supports_without_replica_labels=st.supports_without_replica_labels,
                       tsdb_infos=[(labels_from_pb(t.labels.labels), t.min_time, t.max_time)
                                   for t in st.tsdb_infos],
                       exemplars=((resp.exemplars.min_time, resp.exemplars.max_time)
                                  if resp.HasField("exemplars") else None),
                       rules=resp.HasField("rules"))
        if resp.HasField("rules"):  # rules only (a stateless ruler): kept for rules, never asked for series
            return cls(external_labels=sets[0] if sets else (), component_type=resp.ComponentType, label_sets=sets,
                       rules=True, store=False)
        raise ValueError(f"endpoint ({resp.ComponentType or 'unknown component'}) serves neither the Store API "
                         "nor the Rules API")

    @classmethod
    def from_store_info_pb(cls, resp) -> "StoreInfo":
        sets = [labels_from_pb(ls.labels) for ls in resp.label_sets]
        if not sets and len(resp.labels):
            sets = [labels_from_pb(resp.labels)]
        return cls(min_time=resp.min_time, max_time=resp.max_time, external_labels=sets[0] if sets else (),
                   component_type=_STORE_TYPE_NAMES.get(resp.storeType, "unknown-store-api"), label_sets=sets,
                   supports_without_replica_labels=False)
