from google.protobuf import any_pb2 as _any_pb2
from pythanos.storeapi.pb import labels_pb2 as _labels_pb2
from pythanos.storeapi.pb import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StoreType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[StoreType]
    QUERY: _ClassVar[StoreType]
    RULE: _ClassVar[StoreType]
    SIDECAR: _ClassVar[StoreType]
    STORE: _ClassVar[StoreType]
    RECEIVE: _ClassVar[StoreType]
    DEBUG: _ClassVar[StoreType]

class Aggr(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RAW: _ClassVar[Aggr]
    COUNT: _ClassVar[Aggr]
    SUM: _ClassVar[Aggr]
    MIN: _ClassVar[Aggr]
    MAX: _ClassVar[Aggr]
    COUNTER: _ClassVar[Aggr]
UNKNOWN: StoreType
QUERY: StoreType
RULE: StoreType
SIDECAR: StoreType
STORE: StoreType
RECEIVE: StoreType
DEBUG: StoreType
RAW: Aggr
COUNT: Aggr
SUM: Aggr
MIN: Aggr
MAX: Aggr
COUNTER: Aggr

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("labels", "min_time", "max_time", "storeType", "label_sets")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MIN_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_TIME_FIELD_NUMBER: _ClassVar[int]
    STORETYPE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SETS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[_labels_pb2.Label]
    min_time: int
    max_time: int
    storeType: StoreType
    label_sets: _containers.RepeatedCompositeFieldContainer[_labels_pb2.ZLabelSet]
    def __init__(self, labels: _Optional[_Iterable[_Union[_labels_pb2.Label, _Mapping]]] = ..., min_time: _Optional[int] = ..., max_time: _Optional[int] = ..., storeType: _Optional[_Union[StoreType, str]] = ..., label_sets: _Optional[_Iterable[_Union[_labels_pb2.ZLabelSet, _Mapping]]] = ...) -> None: ...

class SeriesRequest(_message.Message):
    __slots__ = ("min_time", "max_time", "matchers", "max_resolution_window", "aggregates", "partial_response_disabled", "partial_response_strategy", "skip_chunks", "hints", "step", "range", "query_hints", "shard_info", "without_replica_labels", "limit", "response_batch_size")
    MIN_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_TIME_FIELD_NUMBER: _ClassVar[int]
    MATCHERS_FIELD_NUMBER: _ClassVar[int]
    MAX_RESOLUTION_WINDOW_FIELD_NUMBER: _ClassVar[int]
    AGGREGATES_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_RESPONSE_DISABLED_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_RESPONSE_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SKIP_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    QUERY_HINTS_FIELD_NUMBER: _ClassVar[int]
    SHARD_INFO_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_REPLICA_LABELS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    min_time: int
    max_time: int
    matchers: _containers.RepeatedCompositeFieldContainer[_types_pb2.LabelMatcher]
    max_resolution_window: int
    aggregates: _containers.RepeatedScalarFieldContainer[Aggr]
    partial_response_disabled: bool
    partial_response_strategy: _types_pb2.PartialResponseStrategy
    skip_chunks: bool
    hints: _any_pb2.Any
    step: int
    range: int
    query_hints: QueryHints
    shard_info: ShardInfo
    without_replica_labels: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    response_batch_size: int
    def __init__(self, min_time: _Optional[int] = ..., max_time: _Optional[int] = ..., matchers: _Optional[_Iterable[_Union[_types_pb2.LabelMatcher, _Mapping]]] = ..., max_resolution_window: _Optional[int] = ..., aggregates: _Optional[_Iterable[_Union[Aggr, str]]] = ..., partial_response_disabled: _Optional[bool] = ..., partial_response_strategy: _Optional[_Union[_types_pb2.PartialResponseStrategy, str]] = ..., skip_chunks: _Optional[bool] = ..., hints: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., step: _Optional[int] = ..., range: _Optional[int] = ..., query_hints: _Optional[_Union[QueryHints, _Mapping]] = ..., shard_info: _Optional[_Union[ShardInfo, _Mapping]] = ..., without_replica_labels: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ..., response_batch_size: _Optional[int] = ...) -> None: ...

class QueryHints(_message.Message):
    __slots__ = ("step_millis", "func", "grouping", "range", "projection_labels", "projection_include", "series_hash_label_name")
    STEP_MILLIS_FIELD_NUMBER: _ClassVar[int]
    FUNC_FIELD_NUMBER: _ClassVar[int]
    GROUPING_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_LABELS_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_INCLUDE_FIELD_NUMBER: _ClassVar[int]
    SERIES_HASH_LABEL_NAME_FIELD_NUMBER: _ClassVar[int]
    step_millis: int
    func: Func
    grouping: Grouping
    range: Range
    projection_labels: _containers.RepeatedScalarFieldContainer[str]
    projection_include: bool
    series_hash_label_name: str
    def __init__(self, step_millis: _Optional[int] = ..., func: _Optional[_Union[Func, _Mapping]] = ..., grouping: _Optional[_Union[Grouping, _Mapping]] = ..., range: _Optional[_Union[Range, _Mapping]] = ..., projection_labels: _Optional[_Iterable[str]] = ..., projection_include: _Optional[bool] = ..., series_hash_label_name: _Optional[str] = ...) -> None: ...

class ShardInfo(_message.Message):
    __slots__ = ("shard_index", "total_shards", "by", "labels")
    SHARD_INDEX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SHARDS_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    shard_index: int
    total_shards: int
    by: bool
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, shard_index: _Optional[int] = ..., total_shards: _Optional[int] = ..., by: _Optional[bool] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class Func(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Grouping(_message.Message):
    __slots__ = ("by", "labels")
    BY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    by: bool
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, by: _Optional[bool] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class Range(_message.Message):
    __slots__ = ("millis",)
    MILLIS_FIELD_NUMBER: _ClassVar[int]
    millis: int
    def __init__(self, millis: _Optional[int] = ...) -> None: ...

class SeriesResponse(_message.Message):
    __slots__ = ("series", "warning", "hints", "batch")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    series: _types_pb2.Series
    warning: str
    hints: _any_pb2.Any
    batch: _types_pb2.SeriesBatch
    def __init__(self, series: _Optional[_Union[_types_pb2.Series, _Mapping]] = ..., warning: _Optional[str] = ..., hints: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., batch: _Optional[_Union[_types_pb2.SeriesBatch, _Mapping]] = ...) -> None: ...

class LabelNamesRequest(_message.Message):
    __slots__ = ("partial_response_disabled", "partial_response_strategy", "start", "end", "hints", "matchers", "without_replica_labels", "limit")
    PARTIAL_RESPONSE_DISABLED_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_RESPONSE_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    MATCHERS_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_REPLICA_LABELS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    partial_response_disabled: bool
    partial_response_strategy: _types_pb2.PartialResponseStrategy
    start: int
    end: int
    hints: _any_pb2.Any
    matchers: _containers.RepeatedCompositeFieldContainer[_types_pb2.LabelMatcher]
    without_replica_labels: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    def __init__(self, partial_response_disabled: _Optional[bool] = ..., partial_response_strategy: _Optional[_Union[_types_pb2.PartialResponseStrategy, str]] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., hints: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., matchers: _Optional[_Iterable[_Union[_types_pb2.LabelMatcher, _Mapping]]] = ..., without_replica_labels: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ...) -> None: ...

class LabelNamesResponse(_message.Message):
    __slots__ = ("names", "warnings", "hints")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    hints: _any_pb2.Any
    def __init__(self, names: _Optional[_Iterable[str]] = ..., warnings: _Optional[_Iterable[str]] = ..., hints: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...

class LabelValuesRequest(_message.Message):
    __slots__ = ("label", "partial_response_disabled", "partial_response_strategy", "start", "end", "hints", "matchers", "without_replica_labels", "limit")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_RESPONSE_DISABLED_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_RESPONSE_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    MATCHERS_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_REPLICA_LABELS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    label: str
    partial_response_disabled: bool
    partial_response_strategy: _types_pb2.PartialResponseStrategy
    start: int
    end: int
    hints: _any_pb2.Any
    matchers: _containers.RepeatedCompositeFieldContainer[_types_pb2.LabelMatcher]
    without_replica_labels: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    def __init__(self, label: _Optional[str] = ..., partial_response_disabled: _Optional[bool] = ..., partial_response_strategy: _Optional[_Union[_types_pb2.PartialResponseStrategy, str]] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., hints: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., matchers: _Optional[_Iterable[_Union[_types_pb2.LabelMatcher, _Mapping]]] = ..., without_replica_labels: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ...) -> None: ...

class LabelValuesResponse(_message.Message):
    __slots__ = ("values", "warnings", "hints")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    hints: _any_pb2.Any
    def __init__(self, values: _Optional[_Iterable[str]] = ..., warnings: _Optional[_Iterable[str]] = ..., hints: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...
