"""Series sharding (StoreAPI ``SeriesRequest.shard_info``): a store answers only the series whose
hash falls to the requested shard, so that a query split into shards by a frontend asks each
store for a part of the series (Thanos' ``storepb.ShardMatcher``, the same hash, so that shards
of ours and of Thanos' stores agree).

The hash is xxHash64 over ``name 0xff value 0xff`` of the series' labels as the store answers
them (external labels merged, ``without_replica_labels`` removed: replicas of a series stay in one
shard and de-duplicate), taking the listed labels (``by``) or all but them; the series belongs to
shard ``hash % total_shards``.
"""
from __future__ import annotations

import json
from typing import Optional

import xxhash

from .pb import rpc_pb2

__all__ = ["ShardMatcher", "shard_info_from_json"]


class ShardMatcher:
    def __init__(self, index: int, total: int, by: bool, labels) -> None:
        self.index, self.total, self.by = int(index), int(total), bool(by)
        self.labels = frozenset(labels)

    @classmethod
    def from_pb(cls, info: Optional[rpc_pb2.ShardInfo]) -> Optional["ShardMatcher"]:
        """None when the request is not sharded (no shard_info, or fewer than one shard)."""
        if info is None or info.total_shards < 1:
            return None
        return cls(info.shard_index, info.total_shards, info.by, info.labels)

    def matches(self, labels) -> bool:
        """``labels``: the series' final (name, value) pairs, sorted."""
        sel, by = self.labels, self.by
        buf = bytearray()
        for n, v in labels:
            if (n in sel) == by:
                buf += n.encode()
                buf += b"\xff"
                buf += v.encode()
                buf += b"\xff"
        return xxhash.xxh64_intdigest(bytes(buf)) % self.total == self.index


def shard_info_from_json(text: str) -> rpc_pb2.ShardInfo:
    """The ``shard_info`` HTTP parameter (Go's JSON of ``storepb.ShardInfo``); ValueError names
    what is wrong."""
    try:
        d = json.loads(text)
    except ValueError as e:
        raise ValueError(str(e)) from None
    if not isinstance(d, dict):
        raise ValueError("json: cannot unmarshal into Go value of type storepb.ShardInfo")
    out = rpc_pb2.ShardInfo()
    for key, kind in (("shard_index", int), ("total_shards", int), ("by", bool), ("labels", list)):
        v = d.get(key)
        if v is None:
            continue
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"json: cannot unmarshal {type(v).__name__} into Go struct field "
                             f"ShardInfo.{key} of type int64")
        if kind is bool and not isinstance(v, bool):
            raise ValueError(f"json: cannot unmarshal {type(v).__name__} into Go struct field ShardInfo.{key} of type bool")
        if kind is list and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise ValueError(f"json: cannot unmarshal into Go struct field ShardInfo.{key} of type []string")
        if key == "labels":
            out.labels.extend(v)
        else:
            setattr(out, key, v)
    if out.total_shards > 0 and not 0 <= out.shard_index < out.total_shards:
        raise ValueError(f"shard_index {out.shard_index} is not below total_shards {out.total_shards}")
    return out
