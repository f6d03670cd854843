"""Range-query answers taken apart and put together (the frontend's ``MergeResponse`` and the
results cache's ``Extract``), in the querier's own JSON form.

Work is per series, never per sample (slices found by bisection, lists joined in C). An answer
is the parsed ``data.result`` of a matrix: ``[{"metric": {...}, "values": [[t, "v"],
...]}, ...]`` (``histograms`` kept alongside where present). Pieces of one range are disjoint in
time and given oldest first; a series' samples are concatenated, a sample at or before the last
one already taken is dropped (overlapping pieces), and series come out sorted by their labels as
Prometheus sorts a matrix. Encoding escapes ``<``, ``>`` and ``&`` as the querier does.
"""
from __future__ import annotations

import bisect
import json
from typing import Iterable, Optional, Sequence

import orjson

__all__ = ["merge_results", "merge_vectors", "extract", "encode_matrix", "encode_result", "escape_html", "sample_ms"]

_POINT_KINDS = ("values", "histograms")


def sample_ms(t: float) -> int:
    """A JSON timestamp (float seconds) as milliseconds."""
    return int(round(t * 1000))


def _ms(point: list) -> int:
    return sample_ms(point[0])


def _key(series: dict) -> tuple:
    return tuple(sorted((series.get("metric") or {}).items()))


def merge_results(pieces: Iterable[Sequence[dict]]) -> list[dict]:
    """One matrix from time-ordered pieces of it."""
    out: dict[tuple, dict] = {}
    last: dict[tuple, int] = {}
    for piece in pieces:
        for s in piece:
            k = _key(s)
            have = out.get(k)
            if have is None:
                have = out[k] = {"metric": s.get("metric") or {}}
            lo = last.get(k)
            for kind in _POINT_KINDS:
                pts = s.get(kind)
                if not pts:
                    continue
                if lo is not None and sample_ms(pts[0][0]) <= lo:  # overlaps what is there: cut (bisect)
                    pts = pts[bisect.bisect_right(pts, lo, key=_ms):]
                if pts:
                    have.setdefault(kind, []).extend(pts)
            ends = [sample_ms(have[kind][-1][0]) for kind in _POINT_KINDS if have.get(kind)]
            if ends:
                last[k] = max(ends)
    return [out[k] for k in sorted(out) if any(out[k].get(kind) for kind in _POINT_KINDS)]


def _go_label_string(metric: dict) -> str:
    """Prometheus' ``labels.Labels.String()`` (names sorted bytewise, values quoted), the key
    Thanos' frontend orders merged instant vectors by."""
    return "{" + ", ".join(f"{k}={json.dumps(metric[k], ensure_ascii=False)}" for k in sorted(metric)) + "}"


def _sample_value(s: dict) -> float:
    v = s.get("value")
    return float(v[1]) if v else 0.0


def merge_vectors(parts: Iterable[Sequence[dict]], order: str) -> list[dict]:
    """One instant vector from the vectors of its shards, as Thanos' frontend merges them: one
    sample per label set (the newest), then ``order``: "merge" keeps the shards' order (``topk``
    and the like at the root), "asc"/"desc" sorts by value (``sort``/``sort_desc``), "labels" by
    the label string."""
    out: dict[str, dict] = {}
    for part in parts:
        for s in part:
            key = _go_label_string(s.get("metric") or {})
            have = out.get(key)
            if have is None or _sample_ts(have) < _sample_ts(s):
                out[key] = s
    if order == "merge":
        return list(out.values())
    if order in ("asc", "desc"):
        return sorted(out.values(), key=_sample_value, reverse=order == "desc")
    return [out[k] for k in sorted(out)]


def _sample_ts(s: dict) -> float:
    pt = s.get("value") or s.get("histogram")
    return float(pt[0]) if pt else 0.0


def extract(result: Sequence[dict], start: int, end: int) -> list[dict]:
    """The samples of ``result`` within ``[start, end]`` (ms); series left empty are dropped."""
    out = []
    for s in result:
        got: dict = {"metric": s.get("metric") or {}}
        for kind in _POINT_KINDS:
            pts = s.get(kind) or []
            if pts and (sample_ms(pts[0][0]) < start or sample_ms(pts[-1][0]) > end):  # cut by bisection
                pts = pts[bisect.bisect_left(pts, start, key=_ms):bisect.bisect_right(pts, end, key=_ms)]
            if pts:
                got[kind] = pts
        if len(got) > 1:
            out.append(got)
    return out


def encode_matrix(result: Sequence[dict], warnings: Optional[Sequence[str]] = None,
                  infos: Optional[Sequence[str]] = None, extra: Optional[dict] = None) -> bytes:
    """The success envelope of a matrix answer; ``extra``: data's other members, after result
    (the querier's ``"analysis"``). orjson writes what ``json.dumps(ensure_ascii=False)`` writes
    (same escapes, same shortest floats), several times faster."""
    return encode_result("matrix", result, warnings, infos, extra)


def encode_result(result_type: str, result: Sequence[dict], warnings: Optional[Sequence[str]] = None,
                  infos: Optional[Sequence[str]] = None, extra: Optional[dict] = None) -> bytes:
    """The success envelope of a ``result_type`` (matrix or vector) answer."""
    parts = [b'{"status":"success","data":{"resultType":', orjson.dumps(result_type), b',"result":',
             orjson.dumps(list(result))]
    for k, v in (extra or {}).items():
        parts += [b",", orjson.dumps(k), b":", orjson.dumps(v)]
    parts.append(b"}")
    if warnings:
        parts += [b',"warnings":', orjson.dumps(list(warnings))]
    if infos:
        parts += [b',"infos":', orjson.dumps(list(infos))]
    parts.append(b"}")
    return escape_html(b"".join(parts))


def escape_html(body: bytes) -> bytes:
    """``<``, ``>`` and ``&`` as the querier writes them (only strings can hold them)."""
    return body.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
