"""The sidecar's Exemplars API (Thanos ``pkg/exemplars/prometheus.go``): the query passed on to
Prometheus' ``/api/v1/query_exemplars``, its answer with the external labels over each series'
labels (Prometheus does not add them). A failure is the call's error, as Thanos returns it."""
from __future__ import annotations

from typing import AsyncIterator, Callable

import grpc

from ..storeapi import exemplars as ex
from ..storeapi.pb import exemplars_pb2

__all__ = ["exemplars_server"]


def _ms(t) -> int:
    """API seconds (a number, or a string) to ms, rounded as Prometheus parses them."""
    return int(round(float(t) * 1000))


def exemplars_server(prom, external_labels: Callable[[], tuple]) -> grpc.GenericRpcHandler:
    """``prom``: a :class:`pythanos.sidecar.promclient.PromClient`."""

    async def serve(req: exemplars_pb2.ExemplarsRequest) -> AsyncIterator[exemplars_pb2.ExemplarData]:
        from .promclient import PromClientError

        try:
            data = await prom.query_exemplars(req.query, req.start, req.end)
        except PromClientError as e:
            raise ex.ExemplarsError(grpc.StatusCode.UNKNOWN, str(e)) from None
        ext = dict(external_labels())
        for d in data:
            series = dict(d.get("seriesLabels") or {})
            series.update(ext)
            yield ex.data_pb(tuple(sorted(series.items())),
                             ((tuple(sorted((e.get("labels") or {}).items())), float(e["value"]), _ms(e["timestamp"]))
                              for e in d.get("exemplars") or ()))

    return ex.handler(serve)
