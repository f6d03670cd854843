import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from pythanos.storeapi.pb import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SeriesRequestHints(_message.Message):
    __slots__ = ("block_matchers", "enable_query_stats")
    BLOCK_MATCHERS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_QUERY_STATS_FIELD_NUMBER: _ClassVar[int]
    block_matchers: _containers.RepeatedCompositeFieldContainer[_types_pb2.LabelMatcher]
    enable_query_stats: bool
    def __init__(self, block_matchers: _Optional[_Iterable[_Union[_types_pb2.LabelMatcher, _Mapping]]] = ..., enable_query_stats: _Optional[bool] = ...) -> None: ...

class SeriesResponseHints(_message.Message):
    __slots__ = ("queried_blocks", "query_stats")
    QUERIED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    QUERY_STATS_FIELD_NUMBER: _ClassVar[int]
    queried_blocks: _containers.RepeatedCompositeFieldContainer[Block]
    query_stats: QueryStats
    def __init__(self, queried_blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ..., query_stats: _Optional[_Union[QueryStats, _Mapping]] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class LabelNamesRequestHints(_message.Message):
    __slots__ = ("block_matchers",)
    BLOCK_MATCHERS_FIELD_NUMBER: _ClassVar[int]
    block_matchers: _containers.RepeatedCompositeFieldContainer[_types_pb2.LabelMatcher]
    def __init__(self, block_matchers: _Optional[_Iterable[_Union[_types_pb2.LabelMatcher, _Mapping]]] = ...) -> None: ...

class LabelNamesResponseHints(_message.Message):
    __slots__ = ("queried_blocks",)
    QUERIED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    queried_blocks: _containers.RepeatedCompositeFieldContainer[Block]
    def __init__(self, queried_blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ...) -> None: ...

class LabelValuesRequestHints(_message.Message):
    __slots__ = ("block_matchers",)
    BLOCK_MATCHERS_FIELD_NUMBER: _ClassVar[int]
    block_matchers: _containers.RepeatedCompositeFieldContainer[_types_pb2.LabelMatcher]
    def __init__(self, block_matchers: _Optional[_Iterable[_Union[_types_pb2.LabelMatcher, _Mapping]]] = ...) -> None: ...

class LabelValuesResponseHints(_message.Message):
    __slots__ = ("queried_blocks",)
    QUERIED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    queried_blocks: _containers.RepeatedCompositeFieldContainer[Block]
    def __init__(self, queried_blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ...) -> None: ...

class QueryStats(_message.Message):
    __slots__ = ("blocks_queried", "merged_series_count", "merged_chunks_count", "postings_touched", "postings_touched_size_sum", "postings_to_fetch", "postings_fetched", "postings_fetched_size_sum", "postings_fetch_count", "series_touched", "series_touched_size_sum", "series_fetched", "series_fetched_size_sum", "series_fetch_count", "chunks_touched", "chunks_touched_size_sum", "chunks_fetched", "chunks_fetched_size_sum", "chunks_fetch_count", "data_downloaded_size_sum", "get_all_duration", "merge_duration")
    BLOCKS_QUERIED_FIELD_NUMBER: _ClassVar[int]
    MERGED_SERIES_COUNT_FIELD_NUMBER: _ClassVar[int]
    MERGED_CHUNKS_COUNT_FIELD_NUMBER: _ClassVar[int]
    POSTINGS_TOUCHED_FIELD_NUMBER: _ClassVar[int]
    POSTINGS_TOUCHED_SIZE_SUM_FIELD_NUMBER: _ClassVar[int]
    POSTINGS_TO_FETCH_FIELD_NUMBER: _ClassVar[int]
    POSTINGS_FETCHED_FIELD_NUMBER: _ClassVar[int]
    POSTINGS_FETCHED_SIZE_SUM_FIELD_NUMBER: _ClassVar[int]
    POSTINGS_FETCH_COUNT_FIELD_NUMBER: _ClassVar[int]
    SERIES_TOUCHED_FIELD_NUMBER: _ClassVar[int]
    SERIES_TOUCHED_SIZE_SUM_FIELD_NUMBER: _ClassVar[int]
    SERIES_FETCHED_FIELD_NUMBER: _ClassVar[int]
    SERIES_FETCHED_SIZE_SUM_FIELD_NUMBER: _ClassVar[int]
    SERIES_FETCH_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_TOUCHED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_TOUCHED_SIZE_SUM_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FETCHED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FETCHED_SIZE_SUM_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FETCH_COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_DOWNLOADED_SIZE_SUM_FIELD_NUMBER: _ClassVar[int]
    GET_ALL_DURATION_FIELD_NUMBER: _ClassVar[int]
    MERGE_DURATION_FIELD_NUMBER: _ClassVar[int]
    blocks_queried: int
    merged_series_count: int
    merged_chunks_count: int
    postings_touched: int
    postings_touched_size_sum: int
    postings_to_fetch: int
    postings_fetched: int
    postings_fetched_size_sum: int
    postings_fetch_count: int
    series_touched: int
    series_touched_size_sum: int
    series_fetched: int
    series_fetched_size_sum: int
    series_fetch_count: int
    chunks_touched: int
    chunks_touched_size_sum: int
    chunks_fetched: int
    chunks_fetched_size_sum: int
    chunks_fetch_count: int
    data_downloaded_size_sum: int
    get_all_duration: _duration_pb2.Duration
    merge_duration: _duration_pb2.Duration
    def __init__(self, blocks_queried: _Optional[int] = ..., merged_series_count: _Optional[int] = ..., merged_chunks_count: _Optional[int] = ..., postings_touched: _Optional[int] = ..., postings_touched_size_sum: _Optional[int] = ..., postings_to_fetch: _Optional[int] = ..., postings_fetched: _Optional[int] = ..., postings_fetched_size_sum: _Optional[int] = ..., postings_fetch_count: _Optional[int] = ..., series_touched: _Optional[int] = ..., series_touched_size_sum: _Optional[int] = ..., series_fetched: _Optional[int] = ..., series_fetched_size_sum: _Optional[int] = ..., series_fetch_count: _Optional[int] = ..., chunks_touched: _Optional[int] = ..., chunks_touched_size_sum: _Optional[int] = ..., chunks_fetched: _Optional[int] = ..., chunks_fetched_size_sum: _Optional[int] = ..., chunks_fetch_count: _Optional[int] = ..., data_downloaded_size_sum: _Optional[int] = ..., get_all_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., merge_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
