"""The querier's exemplars fan-out (Thanos ``pkg/exemplars/proxy.go``).

The query's selectors are matched against each endpoint that advertises the Exemplars API in its
Info (``exemplars`` set): an endpoint whose label sets contradict a selector is not asked for it;
matchers on its external labels are left out of what it is asked (a querier below keeps them,
it routes on them). Each endpoint gets one query, its selectors joined by ``+``, all at once.
With partial response (Thanos' hidden ``--exemplar.partial-response``, default on) an endpoint
that fails becomes a warning; without, the call fails. The answers are merged by
:func:`pythanos.storeapi.exemplars.merge` in the HTTP handler.
"""
from __future__ import annotations

import asyncio
from typing import Optional

import grpc

from ..storeapi import exemplars as ex
from ..storeapi.pb import exemplars_pb2
from ..storeapi.pb.types_pb2 import ABORT, WARN
from .proxy import label_sets_match

__all__ = ["ExemplarsProxy", "FetchError"]


class FetchError(Exception):
    """A fan-out failed (Thanos' text; the API answers 500 "retrieving exemplars: ..." or "error
    retrieving rules: ...")."""

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None) -> None:
        super().__init__(message)
        self.code = code


class ExemplarsProxy:
    def __init__(self, endpoints, *, selector_labels: dict[str, str] | None = None, timeout: float = 0.0) -> None:
        self.endpoints = endpoints
        self.selector_labels = dict(selector_labels or {})
        self.timeout = timeout or None

    def stores(self) -> list:
        return [ep for ep in self.endpoints.active() if ep.info is not None and ep.info.exemplars is not None]

    async def fetch(self, query: str, start: int, end: int, partial: bool = True
                    ) -> tuple[list[exemplars_pb2.ExemplarData], list[str]]:
        """(what the endpoints sent, warnings); raises :class:`FetchError`."""
        from ..promql import PromQLError

        try:
            sets = ex.selectors(query)
        except PromQLError as e:
            raise FetchError(str(e)) from None
        matched, sets = ex.match_external(sets, self.selector_labels)
        if not matched:
            return [], []
        if not sets:
            raise FetchError("rpc error: code = InvalidArgument desc = no matchers specified (excluding external "
                             "labels)", grpc.StatusCode.INVALID_ARGUMENT)
        calls = []
        for ep in self.stores():
            lsets = ep.label_sets()
            ext_names = {n for ls in lsets for n, v in ls if v}
            keeps_ext = ep.component_type == "query"
            parts = []
            for ms in sets:
                if not label_sets_match(ms, lsets):
                    continue
                kept = [str(m) for m in ms if keeps_ext or m.name not in ext_names]
                parts.append("{" + ", ".join(kept) + "}")
            if not parts:
                continue
            req = exemplars_pb2.ExemplarsRequest(query="+".join(parts), start=start, end=end,
                                                 partial_response_strategy=WARN if partial else ABORT)
            calls.append((ep, req))
        results = await asyncio.gather(*(ep.client.exemplars(req, timeout=self.timeout) for ep, req in calls),
                                       return_exceptions=True)
        data: list[exemplars_pb2.ExemplarData] = []
        warnings: list[str] = []
        for (ep, _), got in zip(calls, results):
            if isinstance(got, BaseException):
                if not isinstance(got, Exception):
                    raise got
                msg = f"fetching exemplars from exemplars client {ep.address}: {got}"
                if not partial:
                    raise FetchError(msg)
                warnings.append(msg)
                continue
            for frame in got:
                if frame.WhichOneof("result") == "warning":
                    warnings.append(frame.warning)
                elif frame.HasField("data"):
                    data.append(frame.data)
        return data, warnings

    def handler(self) -> grpc.GenericRpcHandler:
        """The querier's own Exemplars API (Thanos serves its proxy: what the endpoints sent, in
        arrival order, not de-duplicated; warnings as warning frames), for a querier above."""

        async def serve(req: exemplars_pb2.ExemplarsRequest):
            try:
                data, warnings = await self.fetch(req.query, req.start, req.end,
                                                  partial=req.partial_response_strategy == WARN)
            except FetchError as e:
                raise ex.ExemplarsError(e.code or grpc.StatusCode.UNKNOWN, str(e)) from None
            for w in warnings:
                yield w
            for d in data:
                yield d

        return ex.handler(serve)
