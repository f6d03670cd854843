"""The querier's endpoint set (Thanos ``pkg/query/endpointset.go``).

Every ``interval`` (Thanos: 5 s) each discovered address is asked for Info (``thanos.info.Info``,
falling back to ``thanos.Store/Info``; timeout 5 s). An endpoint that answers is *active*: queries
fan out to it. One that fails is dropped from the active set at once (a strict one stays) and is
re-added when it answers again; its status (with the last error) stays on the stores page until it
has been unhealthy for ``unhealthy_timeout`` (Thanos' ``--store.unhealthy-timeout``, 5 m).
Addresses no longer discovered are closed and forgotten, and one whose TLS settings changed (an
endpoint SD config reload) is reconnected with the new ones.

As in Thanos, a strict endpoint is always queried, healthy or not, even before it has ever
answered (then as a store of unknown labels over all time: its failures become partial-response
warnings, or the query's error without partial response), and never forgotten. ``lastCheck`` on
the stores page is the time of the last check that succeeded (Thanos' ``LastCheck``).

An endpoint group (:mod:`.discovery`) is one endpoint here, named ``thanos:///<address>``: one
client whose channel spreads its calls over the members (Info and Series alike), healthy while
any member answers. When the group's members as looked up change, its channel is made again.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..storeapi import StoreClient
from ..storeapi.client import group_channel_options
from ..storeapi.types import MAX_TIME, MIN_TIME, StoreInfo
from ..tlsconfig import ClientTLS
from .discovery import Discovery, GroupDial, Target

log = logging.getLogger(__name__)

__all__ = ["Endpoint", "EndpointSet"]


@dataclass
class Endpoint:
    address: str
    client: StoreClient
    strict: bool = False
    info: Optional[StoreInfo] = None
    last_check: Optional[_dt.datetime] = None
    last_error: Optional[str] = None
    unhealthy_since: Optional[float] = None
    active: bool = False
    tls: Optional[ClientTLS] = None  # the settings its client dials with
    group: Optional[GroupDial] = None  # how a group's channel is made (None: one address)
    members: tuple[str, ...] = ()  # a group's addresses as last looked up

    @property
    def component_type(self) -> str:
        return (self.info.component_type if self.info else "") or ""

    def label_sets(self) -> list[tuple]:
        return self.info.effective_label_sets() if self.info else []

    def time_range(self) -> tuple[int, int]:
        if self.info is None:
            return MIN_TIME, MAX_TIME
        return self.info.min_time, self.info.max_time

    def status(self) -> dict:
        mint, maxt = self.time_range()
        return {
            "name": self.address,
            "lastCheck": _rfc3339(self.last_check),
            "lastError": self.last_error,
            "labelSets": [dict(ls) for ls in self.label_sets()],
            "minTime": mint,
            "maxTime": maxt,
        }


def _rfc3339(t: Optional[_dt.datetime]) -> Optional[str]:
    if t is None:
        return None
    s = t.astimezone(_dt.timezone.utc).isoformat(timespec="microseconds")
    return s.replace("+00:00", "Z")


def make_client(name: str, target: Target) -> StoreClient:
    """The client of one endpoint: its address, or a group's channel over its members."""
    if target.group is None:
        return StoreClient(name, tls=target.tls)
    return StoreClient(name, tls=target.tls, target=target.group.target, members=target.members,
                       options=group_channel_options(target.group.service_config, target.group.balanced))


@dataclass
class EndpointSet:
    discovery: Discovery
    interval: float = 5.0
    info_timeout: float = 5.0
    unhealthy_timeout: float = 300.0
    client_factory: Callable[[str, Target], StoreClient] = make_client
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    _task: Optional[asyncio.Task] = None
    _updated: Optional[asyncio.Event] = None

    async def start(self) -> None:
        """First update at once (so a querier started with live endpoints answers right away)."""
        self._updated = asyncio.Event()
        await self.update()
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.update()
            except Exception as e:  # noqa: BLE001 - never let the refresh loop die
                log.error("endpoint set update failed", extra={"err": repr(e)})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for ep in self.endpoints.values():
            await ep.client.close()
        self.endpoints.clear()

    async def update(self) -> None:
        now = time.monotonic()
        wanted = await self.discovery.addresses(now)
        for addr in list(self.endpoints):
            if addr not in wanted:
                ep = self.endpoints.pop(addr)
                log.info("removing endpoint: no longer discovered", extra={"address": addr})
                await ep.client.close()
        for addr, target in wanted.items():
            ep = self.endpoints.get(addr)
            if ep is not None and (ep.tls != target.tls or ep.group != target.group):
                what = "TLS settings" if ep.tls != target.tls else "service config"
                log.info(f"endpoint {what} changed; reconnecting", extra={"address": addr})
                del self.endpoints[addr]
                await ep.client.close()
                ep = None
            if ep is None:
                self.endpoints[addr] = Endpoint(addr, self.client_factory(addr, target), strict=target.strict,
                                                tls=target.tls, group=target.group, members=target.members)
            else:
                ep.strict = target.strict
                if ep.group is not None and ep.group.balanced and ep.members != target.members:
                    log.info("endpoint group members changed; dialling again so gRPC resolves them anew",
                             extra={"address": addr, "was": ",".join(ep.members), "now": ",".join(target.members)})
                    ep.members = target.members
                    ep.client.set_members(target.members)
        await asyncio.gather(*(self._check(ep, now) for ep in list(self.endpoints.values())))
        for addr, ep in list(self.endpoints.items()):
            if (not ep.strict and ep.unhealthy_since is not None
                    and now - ep.unhealthy_since >= self.unhealthy_timeout):
                log.info("removing endpoint: unhealthy for too long", extra={"address": addr, "err": ep.last_error})
                self.endpoints.pop(addr)
                await ep.client.close()
        if self._updated is not None:
            self._updated.set()

    async def _check(self, ep: Endpoint, now: float) -> None:
        try:
            info = await ep.client.info(timeout=self.info_timeout)
        except Exception as e:  # noqa: BLE001 - any failure makes the endpoint unhealthy
            msg = str(e) or type(e).__name__
            if ep.active and ep.last_error is None and not ep.strict:
                log.warning("endpoint is unhealthy, dropping it from queries",
                            extra={"address": ep.address, "err": msg})
            elif ep.active and ep.last_error is None:
                log.warning("strict endpoint is unhealthy; it stays in queries",
                            extra={"address": ep.address, "err": msg})
            elif msg != ep.last_error:  # Thanos logs every failed check; we log each new reason once
                log.warning("update of endpoint failed", extra={"address": ep.address, "err": msg})
            ep.last_error = msg
            ep.active = ep.strict
            if ep.unhealthy_since is None:
                ep.unhealthy_since = now
        else:
            if not ep.active or ep.last_error is not None:
                log.info("adding new endpoint to query endpoint set",
                         extra={"address": ep.address, "extLset": _fmt_sets(info.effective_label_sets())})
            ep.info, ep.last_error, ep.unhealthy_since, ep.active = info, None, None, True
            ep.last_check = _dt.datetime.now(_dt.timezone.utc)

    def active(self) -> list[Endpoint]:
        return [ep for ep in self.endpoints.values() if ep.active]

    def statuses(self) -> dict[str, list[dict]]:
        """``/api/v1/stores``: by component type; endpoints of unknown type are left out, as Thanos."""
        out: dict[str, list[dict]] = {}
        for ep in sorted(self.endpoints.values(), key=lambda e: e.address):
            if not ep.component_type:
                continue
            out.setdefault(ep.component_type, []).append(ep.status())
        return out


def _fmt_sets(sets) -> str:
    return ",".join("{" + ",".join(f'{n}="{v}"' for n, v in ls) + "}" for ls in sets)
