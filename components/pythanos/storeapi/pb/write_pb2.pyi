from pythanos.storeapi.pb import prompb_pb2 as _prompb_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WriteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("timeseries", "tenant", "replica")
    TIMESERIES_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    timeseries: _containers.RepeatedCompositeFieldContainer[_prompb_pb2.TimeSeries]
    tenant: str
    replica: int
    def __init__(self, timeseries: _Optional[_Iterable[_Union[_prompb_pb2.TimeSeries, _Mapping]]] = ..., tenant: _Optional[str] = ..., replica: _Optional[int] = ...) -> None: ...
