"""Blocks in object storage as a whole bucket sees them (Thanos ``pkg/block``): discovery of
block metas and the filters every bucket reader applies (store gateway, compactor, bucket tools).
"""
from .fetcher import (
    BLOCK_ID_LABEL,
    ConsistencyDelayFilter,
    DeduplicateFilter,
    FetchResult,
    IgnoreDeletionMarkFilter,
    LabelShardFilter,
    MetaFetcher,
    ReplicaLabelRemover,
    TimePartitionFilter,
)

__all__ = ["BLOCK_ID_LABEL", "ConsistencyDelayFilter", "DeduplicateFilter", "FetchResult",
           "IgnoreDeletionMarkFilter", "LabelShardFilter", "MetaFetcher", "ReplicaLabelRemover",
           "TimePartitionFilter"]
