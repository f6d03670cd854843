"""The receiver's Exemplars API (Thanos ``pkg/exemplars/multitsdb.go`` and ``tsdb.go``): every
tenant's exemplar buffer, series labels with the tenant's external labels (tenant label included)
over them. As Thanos: a query that does not parse is Internal; a tenant whose external labels
contradict every selector is skipped; a selector left with no matchers once those on external
labels are dropped makes the call fail (Aborted, naming the tenant, around InvalidArgument)."""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

import grpc

from ..storeapi import exemplars as ex
from ..storeapi.pb import exemplars_pb2

__all__ = ["exemplars_server"]

_NO_MATCHERS = "no matchers specified (excluding external labels)"


def _with_ext(labels, ext: dict[str, str]) -> tuple:
    d = dict(labels)
    d.update(ext)
    return tuple(sorted(d.items()))


def exemplars_server(tenants) -> grpc.GenericRpcHandler:
    """The gRPC handler over ``tenants`` (:class:`pythanos.receive.tenants.Tenants`)."""

    async def serve(req: exemplars_pb2.ExemplarsRequest) -> AsyncIterator[exemplars_pb2.ExemplarData]:
        from ..promql import PromQLError

        try:
            sets = ex.selectors(req.query)
        except PromQLError as e:
            raise ex.ExemplarsError(grpc.StatusCode.INTERNAL, str(e)) from None
        loop = asyncio.get_running_loop()
        for t in sorted(tenants.all(), key=lambda t: t.name):
            ext = dict(t.ext_labels)
            ok, rest = ex.match_external(sets, ext)
            if not ok:
                continue
            if not rest:
                raise ex.ExemplarsError(grpc.StatusCode.ABORTED, f"get exemplars for tenant {t.name}: rpc error: "
                                                                 f"code = InvalidArgument desc = {_NO_MATCHERS}")
            found = await loop.run_in_executor(tenants.executor, t.db.exemplars.select, req.start, req.end, rest)
            for s in found:
                yield ex.data_pb(_with_ext(s.series_labels, ext),
                                 zip(s.labels, s.values.tolist(), s.timestamps.tolist()))

    return ex.handler(serve)
