"""The sidecar's Rules API (Thanos ``pkg/rules/prometheus.go``): the request's type passed on to
Prometheus' ``/api/v1/rules``, its groups sent one per frame with the external labels over each
rule's labels (Prometheus does not add them), every group's strategy Abort. A failure is the
call's error, coded from Prometheus' HTTP status as Thanos' client does."""
from __future__ import annotations

from typing import AsyncIterator, Callable

import grpc

from ..storeapi import rules as rl
from ..storeapi.pb import rules_pb2

__all__ = ["rules_server"]

#: Thanos' promclient statusToCode; anything else (no answer at all too) is Internal
_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
          503: grpc.StatusCode.UNAVAILABLE}


def rules_server(prom, external_labels: Callable[[], tuple]) -> grpc.GenericRpcHandler:
    """``prom``: a :class:`pythanos.sidecar.promclient.PromClient`."""

    async def serve(req: rules_pb2.RulesRequest) -> AsyncIterator[rules_pb2.RuleGroup]:
        from .promclient import PromClientError

        typ = {rl.ALERT: "alert", rl.RECORD: "record"}.get(req.type, "")
        try:
            data = await prom.rules(typ)
        except PromClientError as e:
            raise rl.RulesError(_CODES.get(e.status, grpc.StatusCode.INTERNAL), str(e)) from None
        try:
            groups = rl.groups_from_json(data)
        except (ValueError, TypeError, AttributeError) as e:
            raise rl.RulesError(grpc.StatusCode.INTERNAL, f"decoding Prometheus' rules: {e}") from None
        rl.extend_labels(groups, tuple(external_labels()))
        for g in groups:
            yield g

    return rl.handler(serve)
