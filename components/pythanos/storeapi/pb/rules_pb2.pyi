import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from pythanos.storeapi.pb import labels_pb2 as _labels_pb2
from pythanos.storeapi.pb import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AlertState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN_STATE: _ClassVar[AlertState]
    INACTIVE: _ClassVar[AlertState]
    PENDING: _ClassVar[AlertState]
    FIRING: _ClassVar[AlertState]
UNKNOWN_STATE: AlertState
INACTIVE: AlertState
PENDING: AlertState
FIRING: AlertState

class RulesRequest(_message.Message):
    __slots__ = ("type", "partial_response_strategy", "matcher_string", "rule_name", "rule_group", "file")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ALL: _ClassVar[RulesRequest.Type]
        ALERT: _ClassVar[RulesRequest.Type]
        RECORD: _ClassVar[RulesRequest.Type]
    ALL: RulesRequest.Type
    ALERT: RulesRequest.Type
    RECORD: RulesRequest.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_RESPONSE_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MATCHER_STRING_FIELD_NUMBER: _ClassVar[int]
    RULE_NAME_FIELD_NUMBER: _ClassVar[int]
    RULE_GROUP_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    type: RulesRequest.Type
    partial_response_strategy: _types_pb2.PartialResponseStrategy
    matcher_string: _containers.RepeatedScalarFieldContainer[str]
    rule_name: _containers.RepeatedScalarFieldContainer[str]
    rule_group: _containers.RepeatedScalarFieldContainer[str]
    file: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type: _Optional[_Union[RulesRequest.Type, str]] = ..., partial_response_strategy: _Optional[_Union[_types_pb2.PartialResponseStrategy, str]] = ..., matcher_string: _Optional[_Iterable[str]] = ..., rule_name: _Optional[_Iterable[str]] = ..., rule_group: _Optional[_Iterable[str]] = ..., file: _Optional[_Iterable[str]] = ...) -> None: ...

class RulesResponse(_message.Message):
    __slots__ = ("group", "warning")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    group: RuleGroup
    warning: str
    def __init__(self, group: _Optional[_Union[RuleGroup, _Mapping]] = ..., warning: _Optional[str] = ...) -> None: ...

class RuleGroups(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[RuleGroup]
    def __init__(self, groups: _Optional[_Iterable[_Union[RuleGroup, _Mapping]]] = ...) -> None: ...

class RuleGroup(_message.Message):
    __slots__ = ("name", "file", "rules", "interval", "evaluation_duration_seconds", "last_evaluation", "limit", "PartialResponseStrategy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_EVALUATION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PARTIALRESPONSESTRATEGY_FIELD_NUMBER: _ClassVar[int]
    name: str
    file: str
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    interval: float
    evaluation_duration_seconds: float
    last_evaluation: _timestamp_pb2.Timestamp
    limit: int
    PartialResponseStrategy: _types_pb2.PartialResponseStrategy
    def __init__(self, name: _Optional[str] = ..., file: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., interval: _Optional[float] = ..., evaluation_duration_seconds: _Optional[float] = ..., last_evaluation: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ..., PartialResponseStrategy: _Optional[_Union[_types_pb2.PartialResponseStrategy, str]] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ("recording", "alert")
    RECORDING_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    recording: RecordingRule
    alert: Alert
    def __init__(self, recording: _Optional[_Union[RecordingRule, _Mapping]] = ..., alert: _Optional[_Union[Alert, _Mapping]] = ...) -> None: ...

class AlertInstance(_message.Message):
    __slots__ = ("labels", "annotations", "state", "active_at", "value", "PartialResponseStrategy")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PARTIALRESPONSESTRATEGY_FIELD_NUMBER: _ClassVar[int]
    labels: _labels_pb2.ZLabelSet
    annotations: _labels_pb2.ZLabelSet
    state: AlertState
    active_at: _timestamp_pb2.Timestamp
    value: str
    PartialResponseStrategy: _types_pb2.PartialResponseStrategy
    def __init__(self, labels: _Optional[_Union[_labels_pb2.ZLabelSet, _Mapping]] = ..., annotations: _Optional[_Union[_labels_pb2.ZLabelSet, _Mapping]] = ..., state: _Optional[_Union[AlertState, str]] = ..., active_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., value: _Optional[str] = ..., PartialResponseStrategy: _Optional[_Union[_types_pb2.PartialResponseStrategy, str]] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("state", "name", "query", "duration_seconds", "labels", "annotations", "alerts", "health", "last_error", "evaluation_duration_seconds", "last_evaluation", "keep_firing_for_seconds")
    STATE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_EVALUATION_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIRING_FOR_SECONDS_FIELD_NUMBER: _ClassVar[int]
    state: AlertState
    name: str
    query: str
    duration_seconds: float
    labels: _labels_pb2.ZLabelSet
    annotations: _labels_pb2.ZLabelSet
    alerts: _containers.RepeatedCompositeFieldContainer[AlertInstance]
    health: str
    last_error: str
    evaluation_duration_seconds: float
    last_evaluation: _timestamp_pb2.Timestamp
    keep_firing_for_seconds: float
    def __init__(self, state: _Optional[_Union[AlertState, str]] = ..., name: _Optional[str] = ..., query: _Optional[str] = ..., duration_seconds: _Optional[float] = ..., labels: _Optional[_Union[_labels_pb2.ZLabelSet, _Mapping]] = ..., annotations: _Optional[_Union[_labels_pb2.ZLabelSet, _Mapping]] = ..., alerts: _Optional[_Iterable[_Union[AlertInstance, _Mapping]]] = ..., health: _Optional[str] = ..., last_error: _Optional[str] = ..., evaluation_duration_seconds: _Optional[float] = ..., last_evaluation: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., keep_firing_for_seconds: _Optional[float] = ...) -> None: ...

class RecordingRule(_message.Message):
    __slots__ = ("name", "query", "labels", "health", "last_error", "evaluation_duration_seconds", "last_evaluation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_EVALUATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    query: str
    labels: _labels_pb2.ZLabelSet
    health: str
    last_error: str
    evaluation_duration_seconds: float
    last_evaluation: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., query: _Optional[str] = ..., labels: _Optional[_Union[_labels_pb2.ZLabelSet, _Mapping]] = ..., health: _Optional[str] = ..., last_error: _Optional[str] = ..., evaluation_duration_seconds: _Optional[float] = ..., last_evaluation: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
