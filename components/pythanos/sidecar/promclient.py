"""The sidecar's HTTP client for the Prometheus it sits beside (Thanos ``pkg/promclient``).

What Thanos asks Prometheus, and how (verified in Thanos' sources, ``pkg/promclient/promclient.go``,
``cmd/thanos/sidecar.go``):

* external labels: ``GET /api/v1/status/config``, YAML in ``data.yaml``, map
  ``global.external_labels`` (:meth:`PromClient.external_labels`);
* version: ``GET /api/v1/status/buildinfo`` ``data.version``; 404/405 means a Prometheus older
  than 2.14 and reads as version ``"0"`` (:meth:`PromClient.version`);
* min time: ``GET /metrics``, gauge ``prometheus_tsdb_lowest_timestamp_seconds`` x 1000; the value
  MaxInt64 (no data yet) becomes MinInt64 (:meth:`PromClient.lowest_timestamp`);
* flags: ``GET /api/v1/status/flags`` (:meth:`PromClient.flags`);
* label names/values with matchers and a time range: ``/api/v1/labels`` and
  ``/api/v1/label/<name>/values`` with ``match[]``, ``start``, ``end``;
* readiness ``GET /-/ready``; reload ``POST /-/reload`` (needs ``--web.enable-lifecycle``).

Every error is a :class:`PromClientError` naming the URL and the status/body or cause.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any, Sequence
from urllib.parse import quote

import aiohttp
import yaml

from ..httpsession import SessionClient
from ..tsdb.labels import Matcher

log = logging.getLogger(__name__)

__all__ = ["PromClient", "PromClientError", "MIN_INT64", "MAX_INT64", "matchers_to_selector",
           "format_timestamp", "parse_lowest_timestamp"]

MIN_INT64 = -(1 << 63)
MAX_INT64 = (1 << 63) - 1
LOWEST_TIMESTAMP_METRIC = "prometheus_tsdb_lowest_timestamp_seconds"


class PromClientError(Exception):
    """A request to Prometheus failed; ``status`` is 0 when no HTTP response came back."""

    def __init__(self, message: str, *, url: str, status: int = 0, body: str = ""):
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = body


def matchers_to_selector(matchers: Sequence[Matcher]) -> str:
    """``{a="b",c=~"d"}`` for a ``match[]`` parameter."""
    return "{" + ",".join(str(m) for m in matchers) + "}"


def format_timestamp(ms: int) -> str:
    """A ms timestamp as the API's float seconds (exact: up to 3 decimals)."""
    ms = int(ms)
    sign = "-" if ms < 0 else ""
    s, frac = divmod(abs(ms), 1000)
    return f"{sign}{s}.{frac:03d}" if frac else f"{sign}{s}"


def parse_lowest_timestamp(metrics_text: str) -> int:
    """The min time from Prometheus' ``/metrics`` text, as Thanos' ``LowestTimestamp`` computes it."""
    for line in metrics_text.splitlines():
        if not line.startswith(LOWEST_TIMESTAMP_METRIC):
            continue
        rest = line[len(LOWEST_TIMESTAMP_METRIC):]
        if rest and rest[0] not in " {":
            continue  # another metric with this prefix
        if rest.startswith("{"):
            rest = rest[rest.index("}") + 1:]
        fields = rest.split()
        if not fields:
            continue
        val = 1000 * float(fields[0])
        # No block yet: the gauge holds MaxInt64 (as a float); Thanos advertises MinInt64 then,
        # so a querier never prunes this Prometheus away.
        if math.isnan(val) or val >= float(MAX_INT64):
            return MIN_INT64
        return int(val)
    raise ValueError(f"metric families did not contain {LOWEST_TIMESTAMP_METRIC!r}")


class PromClient(SessionClient):
    """Async client of one Prometheus at ``url`` (e.g. ``http://localhost:9090``)."""

    def __init__(self, url: str, *, session: aiohttp.ClientSession | None = None, timeout: float = 30.0,
                 connect_timeout: float = 5.0, user_agent: str = "pythanos"):
        self.url = url.rstrip("/")
        super().__init__(session)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.user_agent = user_agent

    # ------------------------------------------------------------------------------ plumbing

    async def _request(self, method: str, path: str, *, params: Any = None, data: Any = None,
                       ok: Sequence[int] = (200,), timeout: float | None = None) -> tuple[int, bytes]:
        url = self.url + path
        t = timeout if timeout is not None else self.timeout
        try:
            async with self._get_session().request(
                    method, url, params=params, data=data, headers={"User-Agent": self.user_agent},
                    timeout=aiohttp.ClientTimeout(total=t, connect=min(self.connect_timeout, t))) as resp:
                body = await resp.read()
                if resp.status not in ok:
                    text = body.decode("utf-8", "replace").strip()
                    raise PromClientError(f"{method} {url}: HTTP {resp.status}: {text[:500]}", url=url,
                                          status=resp.status, body=text)
                return resp.status, body
        except PromClientError:
            raise
        except asyncio.TimeoutError:
            raise PromClientError(f"{method} {url}: timed out after {t}s", url=url) from None
        except aiohttp.ClientError as e:
            raise PromClientError(f"{method} {url}: {type(e).__name__}: {e}", url=url) from e

    async def _api(self, method: str, path: str, *, params: Any = None, data: Any = None) -> Any:
        """``data`` of a Prometheus API envelope; errors carry ``errorType``/``error``."""
        url = self.url + path
        status, body = await self._request(method, path, params=params, data=data,
                                           ok=(200, 400, 422, 503, 500, 404, 499))
        try:
            env = json.loads(body)
        except ValueError:
            raise PromClientError(f"{method} {url}: HTTP {status}: not JSON: "
                                  f"{body[:200].decode('utf-8', 'replace')}", url=url, status=status,
                                  body=body.decode("utf-8", "replace")) from None
        if status != 200 or env.get("status") != "success":
            err = f"{env.get('errorType', '')}: {env.get('error', '')}" if isinstance(env, dict) else str(env)
            raise PromClientError(f"{method} {url}: HTTP {status}: {err}", url=url, status=status, body=err)
        return env.get("data")

    # ------------------------------------------------------------------------------ API

    async def ready(self) -> bool:
        """``GET /-/ready`` answers 200 (False on any error, never raises)."""
        try:
            await self._request("GET", "/-/ready", timeout=min(self.timeout, 5.0))
            return True
        except PromClientError:
            return False

    async def healthy(self) -> bool:
        try:
            await self._request("GET", "/-/healthy", timeout=min(self.timeout, 5.0))
            return True
        except PromClientError:
            return False

    async def config(self) -> str:
        """The loaded configuration YAML (``/api/v1/status/config`` ``data.yaml``)."""
        data = await self._api("GET", "/api/v1/status/config")
        return str((data or {}).get("yaml", ""))

    async def external_labels(self) -> dict[str, str]:
        """``global.external_labels`` of the loaded configuration ({} when none)."""
        text = await self.config()
        try:
            cfg = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise PromClientError(f"{self.url}/api/v1/status/config: cannot parse the config YAML: {e}",
                                  url=self.url + "/api/v1/status/config") from None
        ext = ((cfg.get("global") or {}).get("external_labels") or {}) if isinstance(cfg, dict) else {}
        return {str(k): "" if v is None else str(v) for k, v in ext.items()}

    async def build_info(self) -> dict[str, str]:
        return dict(await self._api("GET", "/api/v1/status/buildinfo") or {})

    async def version(self) -> str:
        """Prometheus' version; ``"0"`` when buildinfo is 404/405 (older than 2.14), as Thanos."""
        try:
            return str((await self.build_info()).get("version", ""))
        except PromClientError as e:
            if e.status in (404, 405):
                return "0"
            raise

    async def flags(self) -> dict[str, str]:
        return dict(await self._api("GET", "/api/v1/status/flags") or {})

    async def lowest_timestamp(self) -> int:
        """Min time in ms from ``prometheus_tsdb_lowest_timestamp_seconds`` (MinInt64 when no data)."""
        _, body = await self._request("GET", "/metrics")
        try:
            return parse_lowest_timestamp(body.decode("utf-8", "replace"))
        except ValueError as e:
            raise PromClientError(f"GET {self.url}/metrics: {e}", url=self.url + "/metrics") from None

    def _range_params(self, matchers: Sequence[Matcher], start_ms: int | None, end_ms: int | None,
                      limit: int | None = None) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = []
        if matchers:
            params.append(("match[]", matchers_to_selector(matchers)))
        if start_ms is not None:
            params.append(("start", format_timestamp(start_ms)))
        if end_ms is not None:
            params.append(("end", format_timestamp(end_ms)))
        if limit:
            params.append(("limit", str(int(limit))))
        return params

    async def label_names(self, matchers: Sequence[Matcher] = (), start_ms: int | None = None,
                          end_ms: int | None = None, limit: int | None = None) -> list[str]:
        data = await self._api("POST", "/api/v1/labels", data=self._range_params(matchers, start_ms, end_ms, limit))
        return list(data or [])

    async def label_values(self, name: str, matchers: Sequence[Matcher] = (), start_ms: int | None = None,
                           end_ms: int | None = None, limit: int | None = None) -> list[str]:
        path = "/api/v1/label/" + quote(name, safe="") + "/values"
        data = await self._api("GET", path, params=self._range_params(matchers, start_ms, end_ms, limit))
        return list(data or [])

    async def series(self, matchers: Sequence[Matcher], start_ms: int | None = None, end_ms: int | None = None,
                     limit: int | None = None) -> list[dict[str, str]]:
        """``/api/v1/series`` (the sidecar's skip_chunks path)."""
        data = await self._api("POST", "/api/v1/series", data=self._range_params(matchers, start_ms, end_ms, limit))
        return list(data or [])

    async def query(self, expr: str, time_s: float | str | None = None) -> Any:
        """``/api/v1/query`` data (resultType + result)."""
        params = [("query", expr)]
        if time_s is not None:
            params.append(("time", str(time_s)))
        return await self._api("POST", "/api/v1/query", data=params)

    async def query_exemplars(self, query: str, start_ms: int, end_ms: int) -> list:
        """``/api/v1/query_exemplars`` data (what the sidecar's Exemplars API passes on)."""
        params = [("query", query), ("start", format_timestamp(start_ms)), ("end", format_timestamp(end_ms))]
        return list(await self._api("GET", "/api/v1/query_exemplars", params=params) or [])

    async def rules(self, typ: str = "") -> Any:
        """``/api/v1/rules`` data (what the sidecar's Rules API passes on); ``typ``: alert|record|""."""
        return await self._api("GET", "/api/v1/rules", params=[("type", typ)] if typ else None)

    async def reload(self) -> None:
        """``POST /-/reload``; anything but 200 is an error (the message hints at --web.enable-lifecycle)."""
        try:
            await self._request("POST", "/-/reload")
        except PromClientError as e:
            if e.status:
                raise PromClientError(f"{e}; have you set `--web.enable-lifecycle` Prometheus flag?",
                                      url=e.url, status=e.status, body=e.body) from None
            raise
