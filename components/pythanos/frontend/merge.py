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

__all__ = ["merge_results", "extract", "encode_matrix", "sample_ms"]

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


def _escape(s: str) -> str:
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def encode_matrix(result: Sequence[dict], warnings: Optional[Sequence[str]] = None,
                  infos: Optional[Sequence[str]] = None, extra: Optional[dict] = None) -> bytes:
    """The success envelope of a matrix answer; ``extra``: data's other members, after result
    (the querier's ``"analysis"``)."""
    body = json.dumps(list(result), ensure_ascii=False, separators=(",", ":"))
    out = '{"status":"success","data":{"resultType":"matrix","result":' + body
    for k, v in (extra or {}).items():
        out += "," + json.dumps(k) + ":" + json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    out += "}"
    if warnings:
        out += ',"warnings":' + json.dumps(list(warnings), ensure_ascii=False, separators=(",", ":"))
    if infos:
        out += ',"infos":' + json.dumps(list(infos), ensure_ascii=False, separators=(",", ":"))
    return _escape(out + "}").encode()
