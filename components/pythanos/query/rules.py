"""The querier's rules fan-out (Thanos ``pkg/rules/proxy.go``) and its ``/api/v1/rules`` and
``/api/v1/alerts`` (``pkg/api/query/v1.go``, ``pkg/rules/rules.go``).

Every active endpoint whose Info offers the Rules API is asked at once with the same request.
Under partial response (Thanos' hidden ``--rule.partial-response``, default on) an endpoint that
fails becomes a warning; without, the call fails. The querier's own Rules API passes on what
its endpoints sent, so a querier above gathers through it. The HTTP answers apply ``match[]``,
``rule_name[]``, ``rule_group[]`` and ``file[]``, merge groups and de-duplicate rules by the
querier's replica labels (:func:`pythanos.storeapi.rules.gather`). As in Thanos v0.42, the
``dedup`` and ``partial_response`` parameters of the query API are not read here: replica labels
always apply, and the flag decides partial response.
"""
from __future__ import annotations

import asyncio
import grpc

from ..storeapi import rules as rl
from ..storeapi.pb import rules_pb2
from ..storeapi.pb.types_pb2 import ABORT, WARN
from ..storeapi.client import StoreAPIError
from .exemplars import FetchError
from .proxy import rpc_text

__all__ = ["RulesProxy", "FetchError"]


class RulesProxy:
    def __init__(self, endpoints, *, timeout: float = 0.0) -> None:
        self.endpoints = endpoints
        self.timeout = timeout or None

    def stores(self) -> list:
        return [ep for ep in self.endpoints.active() if ep.info is not None and ep.info.rules]

    async def fetch(self, req: rules_pb2.RulesRequest) -> tuple[list[rules_pb2.RuleGroup], list[str]]:
        """(the groups every endpoint sent, in endpoint order; warnings); raises :class:`FetchError`."""
        eps = self.stores()
        results = await asyncio.gather(*(ep.client.rules(req, timeout=self.timeout) for ep in eps),
                                       return_exceptions=True)
        groups: list[rules_pb2.RuleGroup] = []
        warnings: list[str] = []
        for ep, got in zip(eps, results):
            if isinstance(got, BaseException):
                if not isinstance(got, Exception):
                    raise got
                # grpc-go reports a stream's failure at its first Recv ("receiving"); only a call
                # that found no connection fails at its start ("fetching")
                down = isinstance(got, StoreAPIError) and got.code == grpc.StatusCode.UNAVAILABLE
                text = rpc_text(got) if isinstance(got, StoreAPIError) else str(got)
                msg = f"{'fetching' if down else 'receiving'} rules from rules client {ep.address}: {text}"
                if req.partial_response_strategy == ABORT:
                    raise FetchError(msg, getattr(got, "code", None))
                warnings.append(msg)
                continue
            for frame in got:
                if frame.WhichOneof("result") == "warning":
                    warnings.append(frame.warning)
                elif frame.HasField("group"):
                    groups.append(frame.group)
        return groups, warnings

    def handler(self) -> grpc.GenericRpcHandler:
        """The querier's own Rules API (warnings first, then the groups as sent)."""

        async def serve(req: rules_pb2.RulesRequest):
            try:
                groups, warnings = await self.fetch(req)
            except FetchError as e:
                raise rl.RulesError(e.code or grpc.StatusCode.UNKNOWN, str(e)) from None
            for w in warnings:
                yield w
            for g in groups:
                yield g

        return rl.handler(serve)


def strategy(partial: bool) -> int:
    return WARN if partial else ABORT
