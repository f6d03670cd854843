"""The range-query results cache: extents of complete answers per split piece, so that a later
query over an overlapping range asks downstream only for what is missing.

Thanos' lessons (#5075, #8641, #7831, #1651) shape it:

* an extent is stored only for a whole downstream answer whose warnings are all PromQL's own
  annotations (kept with it and served again with it); a store or partial-response warning, or
  ``Cache-Control: no-store``, keeps it out; it is trimmed to what is older than the max
  freshness; nothing partial, nothing with a gap, is ever stored;
* the key holds everything that changes the answer (see :func:`cache_key`), derived from the split
  actually made, and the piece's position on the step grid (``start % step``), which Thanos leaves
  out although a query off the grid answers other timestamps;
* a cached value is a JSON list of ``{"start", "end", "result"}`` (ms, inclusive), sorted and
  non-overlapping; a value that does not parse is treated as a miss, never as an answer.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional, Sequence

import orjson
import xxhash

from ..cache import Cache
from .merge import extract, merge_results

__all__ = ["Piece", "ResultsCache", "LabelsCache", "cache_key", "labels_cache_key", "harmless", "MIN_EXTENT_MS"]

log = logging.getLogger(__name__)

MIN_EXTENT_MS = 5 * 60_000  # Cortex's minCacheExtent: shorter extents are not used for longer requests
DECODED_MAX_BYTES = 8 << 20  # stored bytes whose decoded extents are kept in memory


@dataclass
class Piece:
    """A downstream answer for ``[start, end]``: the matrix, its warnings and infos; cacheable
    when its only warnings are PromQL's own annotations and downstream did not say no-store."""
    start: int
    end: int
    result: list
    warnings: list
    infos: list
    cacheable: bool = True
    extra: dict = field(default_factory=dict)  # data's other members (the querier's "analysis")
    fetched: int = 0  # how many downstream requests made it (0: all from the cache)


Fetch = Callable[[int, int], Awaitable[Piece]]


def harmless(warning: str) -> bool:
    """A PromQL annotation (the engine's info or warning about the query), as Thanos' querier
    classifies them: it answers the same every time, unlike a store's partial-response warning."""
    return warning.startswith(("PromQL info", "PromQL warning"))


def cache_key(*, tenant: str, query: str, step: int, split: int, start: int, max_source_resolution: int,
              shard: str, lookback_ms: int, engine: str, partial: bool, replica_labels: Sequence[str],
              analyze: bool) -> str:
    """Thanos v0.42's key fields (``fe:<tenant>:<query>:<step>:<split>:<start/split>:<resolution
    index>:<shard>:<lookback>:<engine>:<partial>:<replica labels>:<analyze>``) plus the grid
    offset ``start % step``."""
    res_idx = next((i for i, r in enumerate((3_600_000, 300_000, 0)) if max_source_resolution >= r), 2)
    bucket = start // split if split > 0 else 0
    return (f"fe:{tenant}:{query}:{step}:{split}:{bucket}:{res_idx}:{shard or '-'}:{lookback_ms}:{engine}:"
            f"{str(partial).lower()}:{','.join(sorted(replica_labels))}:{str(analyze).lower()}:{start % step}")


class _Entries:
    """Raw entries in a cache backend: snappy as ``--cache-compression-type`` says, and an outage
    or a failed write only a miss (logged), never an error of the request."""

    def __init__(self, cache: Cache, ttl: float, max_freshness_ms: int, clock_ms: Callable[[], int],
                 compression: str = "") -> None:
        self.cache, self.ttl, self.max_freshness_ms, self.clock_ms = cache, ttl, max_freshness_ms, clock_ms
        self.snappy = compression == "snappy"

    async def _get_raw(self, key: str) -> Optional[bytes]:
        try:
            return (await self.cache.get_multi([key])).get(key)
        except Exception as e:  # noqa: BLE001 - a cache outage is a miss, not an error
            log.warning("results cache get failed", extra={"err": f"{type(e).__name__}: {e}"})
            return None

    def _decompress(self, got: bytes) -> bytes:
        if not self.snappy:
            return got
        import cramjam

        return bytes(cramjam.snappy.decompress_raw(got))

    async def _set_raw(self, key: str, value: bytes) -> None:
        try:
            if self.snappy:
                import cramjam

                value = bytes(cramjam.snappy.compress_raw(value))
            await self.cache.set_multi({key: value}, self.ttl)
        except Exception as e:  # noqa: BLE001 - best effort
            log.warning("results cache set failed", extra={"err": f"{type(e).__name__}: {e}"})


def labels_cache_key(*, tenant: str, path: str, params: Sequence[tuple[str, str]], start: int, end: int) -> str:
    """A labels, label values or series piece: every parameter but the time range (matchers,
    limit, partial response...; sorted, hashed to keep the key short) and the piece's exact
    ``[start, end]``, so a cached answer is only ever served for the very range it answered."""
    digest = xxhash.xxh3_128_hexdigest(orjson.dumps(sorted(params)))
    return f"fe:{tenant}:{path}:{digest}:{start}:{end}"


class LabelsCache(_Entries):
    """Whole answers of labels, label values and series pieces: stored when the piece ended
    before the max freshness and the answer is complete (no warning, no ``no-store``)."""

    def cacheable(self, end: int) -> bool:
        return end <= self.clock_ms() - self.max_freshness_ms

    async def get(self, key: str) -> Optional[bytes]:
        got = await self._get_raw(key)
        if got is None:
            return None
        try:
            body = self._decompress(got)
            doc = orjson.loads(body)
            if isinstance(doc, dict) and doc.get("status") == "success" and isinstance(doc.get("data"), list):
                return body
        except Exception:  # noqa: BLE001 - written by something else: a miss
            pass
        log.warning("labels cache entry unreadable, asking downstream", extra={"key": key[:200]})
        return None

    async def put(self, key: str, body: bytes) -> None:
        await self._set_raw(key, body)


class ResultsCache(_Entries):
    """Answers pieces from ``cache`` and ``fetch``; ``max_freshness_ms`` bounds what is stored."""

    def __init__(self, cache: Cache, ttl: float, max_freshness_ms: int, clock_ms: Callable[[], int],
                 compression: str = "") -> None:
        super().__init__(cache, ttl, max_freshness_ms, clock_ms, compression)
        # decoded extents by the digest of their stored bytes: a dashboard reloading from the cache
        # decodes each entry once (decoding is most of a warm answer's cost); bounded by the stored
        # size of what it holds. Never changed in place: merge and extract build new lists.
        self._decoded: "OrderedDict[bytes, tuple[int, list]]" = OrderedDict()
        self._decoded_bytes = 0
        self.hits = self.misses = 0

    async def _extents(self, key: str) -> list[dict]:
        got = await self._get_raw(key)
        if got is None:
            return []
        digest = xxhash.xxh3_128_digest(got)
        hit = self._decoded.get(digest)
        if hit is not None:
            self._decoded.move_to_end(digest)
            return hit[1]
        try:
            got = self._decompress(got)
            ext = orjson.loads(got)
            ok = isinstance(ext, list) and all(isinstance(e, dict) and isinstance(e.get("start"), int)
                                                and isinstance(e.get("end"), int) and isinstance(e.get("result"), list)
                                                for e in ext)
        except Exception:  # noqa: BLE001 - not JSON, or not snappy (written before the flag changed)
            ok = False
        if not ok:
            log.warning("results cache entry unreadable, asking downstream", extra={"key": key[:200]})
            return []
        ext = sorted(ext, key=lambda e: e["start"])
        size = len(got)
        if size <= DECODED_MAX_BYTES // 4:
            self._decoded[digest] = (size, ext)
            self._decoded_bytes += size
            while self._decoded_bytes > DECODED_MAX_BYTES:
                _, (old_size, _) = self._decoded.popitem(last=False)
                self._decoded_bytes -= old_size
        return ext

    async def get(self, key: str, start: int, end: int, step: int, fetch: Fetch) -> Piece:
        """``[start, end]`` (on ``start``'s step grid) from cached extents and fetched gaps.

        The gaps are the ones Cortex's ``partition`` asks for, so that every value comes from the
        same downstream request as in Thanos' frontend (a querier's float results may differ in
        their last digits between two ranges that hold the same step): a gap before an extent
        runs up to and including its first step and wins there; the one after an extent starts
        at its last step, where the extent wins; an extent shorter than :data:`MIN_EXTENT_MS` is
        not used for a longer request (a few larger queries beat many slivers)."""
        extents = await self._extents(key)
        parts: list[tuple[int, list]] = []
        notes: list[tuple[list, list]] = []  # the PromQL annotations the cached answers came with
        extra: dict = {}
        gaps: list[tuple[int, int]] = []
        cur = start
        long_request = start != end and end - start > MIN_EXTENT_MS
        for e in extents:
            if e["end"] < cur or e["start"] > end:
                continue
            if long_request and e["end"] - e["start"] < MIN_EXTENT_MS:
                continue
            if cur < e["start"]:
                gaps.append((cur, e["start"]))
            lo = max(cur, e["start"])
            parts.append((lo, extract(e["result"], lo, min(end, e["end"]))))
            notes.append((e.get("warnings") or [], e.get("infos") or []))
            extra = {**(e.get("extra") or {}), **extra}
            cur = e["end"]
        if cur < end or (start == end and not parts):
            gaps.append((cur, end))
        if parts:
            self.hits += 1
        if gaps:
            self.misses += 1
        fetched = list(await asyncio.gather(*(fetch(a, b) for a, b in gaps)))
        warnings: list = []
        infos: list = []
        for w_, i_ in notes + [(p.warnings, p.infos) for p in fetched]:
            warnings += [w for w in w_ if w not in warnings]
            infos += [i for i in i_ if i not in infos]
        for p in fetched:
            parts.append((p.start, p.result))
            extra = {**p.extra, **extra}
        parts.sort(key=lambda x: x[0])
        merged = merge_results(r for _, r in parts)
        await self._store(key, extents, [p for p in fetched if p.cacheable], step)
        return Piece(start, end, merged, warnings, infos, cacheable=all(p.cacheable for p in fetched), extra=extra,
                     fetched=len(fetched))

    async def _store(self, key: str, extents: list[dict], fetched: list[Piece], step: int) -> None:
        limit = self.clock_ms() - self.max_freshness_ms
        new = []
        for p in fetched:
            end = min(p.end, p.start + (limit - p.start) // step * step) if limit >= p.start else p.start - step
            if end < p.start:  # all of it newer than the max freshness
                continue
            new.append({"start": p.start, "end": end, "result": extract(p.result, p.start, end),
                        "warnings": p.warnings, "infos": p.infos, "extra": p.extra})
        if not new:
            return
        merged: list[dict] = []
        for e in sorted(extents + new, key=lambda e: e["start"]):
            if merged and e["start"] <= merged[-1]["end"] + step:  # touching or overlapping: one extent
                last = merged[-1]
                if e["end"] > last["end"]:
                    last["result"] = merge_results([last["result"], extract(e["result"], last["end"] + step,
                                                                            e["end"])])
                    last["end"] = e["end"]
                    for k in ("warnings", "infos"):
                        last[k] = (last.get(k) or []) + [x for x in e.get(k) or () if x not in (last.get(k) or [])]
                continue
            merged.append(dict(e))
        await self._set_raw(key, orjson.dumps(merged))
