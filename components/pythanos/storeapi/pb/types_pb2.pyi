from pythanos.storeapi.pb import labels_pb2 as _labels_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PartialResponseStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WARN: _ClassVar[PartialResponseStrategy]
    ABORT: _ClassVar[PartialResponseStrategy]
WARN: PartialResponseStrategy
ABORT: PartialResponseStrategy

class Chunk(_message.Message):
    __slots__ = ("type", "data", "hash")
    class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        XOR: _ClassVar[Chunk.Encoding]
        HISTOGRAM: _ClassVar[Chunk.Encoding]
        FLOAT_HISTOGRAM: _ClassVar[Chunk.Encoding]
    XOR: Chunk.Encoding
    HISTOGRAM: Chunk.Encoding
    FLOAT_HISTOGRAM: Chunk.Encoding
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    type: Chunk.Encoding
    data: bytes
    hash: int
    def __init__(self, type: _Optional[_Union[Chunk.Encoding, str]] = ..., data: _Optional[bytes] = ..., hash: _Optional[int] = ...) -> None: ...

class Series(_message.Message):
    __slots__ = ("labels", "chunks")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[_labels_pb2.Label]
    chunks: _containers.RepeatedCompositeFieldContainer[AggrChunk]
    def __init__(self, labels: _Optional[_Iterable[_Union[_labels_pb2.Label, _Mapping]]] = ..., chunks: _Optional[_Iterable[_Union[AggrChunk, _Mapping]]] = ...) -> None: ...

class SeriesBatch(_message.Message):
    __slots__ = ("series",)
    SERIES_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[Series]
    def __init__(self, series: _Optional[_Iterable[_Union[Series, _Mapping]]] = ...) -> None: ...

class AggrChunk(_message.Message):
    __slots__ = ("min_time", "max_time", "raw", "count", "sum", "min", "max", "counter")
    MIN_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_TIME_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    min_time: int
    max_time: int
    raw: Chunk
    count: Chunk
    sum: Chunk
    min: Chunk
    max: Chunk
    counter: Chunk
    def __init__(self, min_time: _Optional[int] = ..., max_time: _Optional[int] = ..., raw: _Optional[_Union[Chunk, _Mapping]] = ..., count: _Optional[_Union[Chunk, _Mapping]] = ..., sum: _Optional[_Union[Chunk, _Mapping]] = ..., min: _Optional[_Union[Chunk, _Mapping]] = ..., max: _Optional[_Union[Chunk, _Mapping]] = ..., counter: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...

class LabelMatcher(_message.Message):
    __slots__ = ("type", "name", "value")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EQ: _ClassVar[LabelMatcher.Type]
        NEQ: _ClassVar[LabelMatcher.Type]
        RE: _ClassVar[LabelMatcher.Type]
        NRE: _ClassVar[LabelMatcher.Type]
    EQ: LabelMatcher.Type
    NEQ: LabelMatcher.Type
    RE: LabelMatcher.Type
    NRE: LabelMatcher.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: LabelMatcher.Type
    name: str
    value: str
    def __init__(self, type: _Optional[_Union[LabelMatcher.Type, str]] = ..., name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
