"""The ruler's view of the data: instant queries against the ``--query`` HTTP API servers.

As Thanos' ruler (``cmd/thanos/rule.go`` ``queryFuncCreator``, ``pkg/promclient``): the
endpoints are tried in a fresh random order per query and the first answer wins; every query
asks for ``dedup=true`` and ``partial_response`` from the group's strategy (``WARN`` -> true,
``ABORT`` -> false). Non-PromQL warnings under either strategy are counted in
``thanos_rule_evaluation_with_warnings_total{strategy}`` and logged; when no endpoint answers,
the error is Thanos' ``no query API server reachable``. Unlike Thanos, when one answered with an
error (a store down under ``partial_response_strategy: abort``), the evaluation's error is that
answer (``query API server <url> answered 422 execution: ...``, naming the store), not Thanos'
text, which would send whoever reads the rule's ``lastError`` to look for a querier outage.

``dns+``/``dnssrv+`` addresses are resolved with :mod:`pythanos.dnsresolve` every
``resolve_interval_s`` (a failed lookup keeps the last answer), when a query needs them (Thanos
resolves on a timer); counted in Thanos' ``thanos_rule_query_apis_dns_*`` families.

Two faces: :meth:`QueryClient.query` (a coroutine, for rule evaluation) and
:meth:`QueryClient.query_blocking` (for the templates' ``query`` function, called from a worker
thread while the event loop runs).
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence
from urllib.parse import urlencode

import aiohttp
import numpy as np

from ..dnsresolve import resolve, split_dns_prefix
from ..httpsession import SessionClient

log = logging.getLogger(__name__)

__all__ = ["QueryClient", "QueryError", "Sample", "RangeSeries", "format_rfc3339nano", "NO_SERVER"]

#: Thanos' error when every endpoint failed
NO_SERVER = "no query API server reachable"

#: (labels, value) of one instant-vector element
Sample = tuple[dict[str, str], float]


@dataclass
class RangeSeries:
    """One series of a range query (used to restore ``for`` state without a local TSDB)."""

    labels: dict[str, str]
    t_ms: np.ndarray  # int64
    v: np.ndarray  # float64


class QueryError(Exception):
    """A failed query; ``str()`` is Thanos' text. ``answer``: what a server that answered with an
    error said, shortly (its status, error type and error)."""

    def __init__(self, text: str, answer: str = "") -> None:
        super().__init__(text)
        self.answer = answer or text


def _answer(status: int, body: str) -> str:
    """A non-2xx answer as ``<status> <errorType>: <error>`` when it is Prometheus' error JSON."""
    try:
        m = json.loads(body)
        if isinstance(m, dict) and isinstance(m.get("error"), str):
            return f"{status} {m.get('errorType') or 'error'}: {m['error']}"
    except ValueError:
        pass
    return f"{status}: {body[:1000]}"


def format_rfc3339nano(t_ns: int) -> str:
    """Go's ``time.Format(time.RFC3339Nano)`` of a UTC instant (ns): fraction without trailing zeros."""
    sec, ns = divmod(int(t_ns), 10**9)
    base = _dt.datetime.fromtimestamp(sec, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if ns:
        base += "." + f"{ns:09d}".rstrip("0")
    return base + "Z"


def _is_promql_annotation(w: str) -> bool:
    # Thanos' extannotations.IsPromQLAnnotation: the engine's own info/warning annotations
    return w.startswith("PromQL info") or w.startswith("PromQL warning")


def _parse_value(s) -> float:
    return float(s)  # "NaN", "+Inf", "-Inf" parse as Go's model.SampleValue does


class QueryClient(SessionClient):
    """Instant (and, for ``for`` restore, range) queries against Thanos/Prometheus query APIs.

    ``addresses``: ``host:port``, ``dns+host:port``, ``dnssrv+name`` or a full ``http(s)://``
    base URL (a path prefix is kept). ``extra_addresses`` (optional) is called on each query for
    addresses found otherwise (``--query.sd-files``).
    """

    def __init__(self, addresses: Sequence[str], *, http_method: str = "POST", registry=None,
                 session: Optional[aiohttp.ClientSession] = None, scheme: str = "http",
                 timeout_s: Optional[float] = None, do_not_add_thanos_params: bool = False,
                 resolve_interval_s: float = 30.0, dns_server: str = "",
                 extra_addresses: Optional[Callable[[], Sequence[str]]] = None,
                 warnings_counter=None) -> None:
        super().__init__(session)
        if http_method.upper() not in ("GET", "POST"):
            raise ValueError(f"--query.http-method: {http_method!r} is neither GET nor POST")
        self.addresses = list(addresses)
        self.http_method = http_method.upper()
        self.scheme = scheme
        self.timeout_s = timeout_s
        self.do_not_add_thanos_params = do_not_add_thanos_params
        self.resolve_interval_s = resolve_interval_s
        self.dns_server = dns_server
        self.extra_addresses = extra_addresses
        self._dns: dict[str, tuple[float, list[str]]] = {}
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.warnings = warnings_counter
        if self.warnings is None and registry is not None:
            from prometheus_client import Counter

            self.warnings = Counter(
                "thanos_rule_evaluation_with_warnings", "The total number of rule evaluation that were successful "
                "but had non PromQL warnings which can indicate partial error.", ["strategy"], registry=registry)
        if self.warnings is not None:
            for s in ("abort", "warn"):
                self.warnings.labels(strategy=s)
        self.dns_lookups = self.dns_failures = self.dns_results = None
        if registry is not None:   # Thanos' query-API dns.Provider, under its prefix
            from prometheus_client import Counter, Gauge

            self.dns_lookups = Counter("thanos_rule_query_apis_dns_lookups_total",
                                       "The number of DNS lookups resolutions attempts", registry=registry)
            self.dns_failures = Counter("thanos_rule_query_apis_dns_failures_total",
                                        "The number of DNS lookup failures", registry=registry)
            self.dns_results = Gauge("thanos_rule_query_apis_dns_provider_results",
                                     "The number of resolved endpoints for each configured address", ["addr"],
                                     registry=registry)

    # -- endpoints ---------------------------------------------------------------------------

    def _base(self, addr: str) -> str:
        return addr.rstrip("/") if "://" in addr else f"{self.scheme}://{addr}"

    async def endpoints(self) -> list[str]:
        """Base URLs to try, de-duplicated as Thanos' RemoveDuplicateQueryEndpoints does."""
        out: list[str] = []
        addrs = list(self.addresses)
        if self.extra_addresses is not None:
            addrs += list(self.extra_addresses())
        now = time.monotonic()
        for a in addrs:
            prefix, rest = split_dns_prefix(a)
            if not prefix:
                found = [a]
            else:
                cached = self._dns.get(a)
                if cached is None or now - cached[0] >= self.resolve_interval_s:
                    if self.dns_lookups is not None:
                        self.dns_lookups.inc()
                    try:
                        self._dns[a] = (now, await resolve(prefix, rest, self.dns_server))
                    except Exception as e:  # noqa: BLE001 - keep the last good answer, as Thanos' provider
                        if self.dns_failures is not None:
                            self.dns_failures.inc()
                        log.error("failed to resolve query API address", extra={"address": a, "err": str(e)})
                        if cached is None:
                            self._dns[a] = (now, [])
                found = self._dns[a][1]
            if self.dns_results is not None:
                self.dns_results.labels(a).set(len(found))
            for f in found:
                u = self._base(f)
                if u in out:
                    log.warning("duplicate query address is provided", extra={"addr": u})
                    continue
                out.append(u)
        return out

    # -- requests ----------------------------------------------------------------------------

    async def _request(self, base: str, path: str, params: list[tuple[str, str]], method: str = "") -> dict:
        body = urlencode(params)
        url = base + path
        kw: dict = {}
        if self.timeout_s:
            kw["timeout"] = aiohttp.ClientTimeout(total=self.timeout_s)
        sess = self._get_session()
        # identity: a small answer over a local link costs both sides more gzipped than plain
        if (method or self.http_method) == "POST":
            req = sess.post(url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded",
                                                     "Accept-Encoding": "identity"}, **kw)
        else:
            req = sess.get(url + "?" + body, headers={"Accept-Encoding": "identity"}, **kw)
        async with req as resp:
            raw = await resp.read()
            if resp.status // 100 != 2:
                text = raw.decode('utf-8', 'replace')
                raise QueryError(f"expected 2xx response, got {resp.status}. Body: {text}",
                                 answer=_answer(resp.status, text))
        try:
            return json.loads(raw)
        except ValueError as e:
            raise QueryError(f"unmarshal query response: {e}") from None

    def _thanos_params(self, strategy: str, always: bool = False) -> list[tuple[str, str]]:
        if self.do_not_add_thanos_params and not always:
            return []
        pr = {"WARN": "true", "ABORT": "false"}.get(strategy.upper())
        if pr is None:
            raise ValueError(f"unknown partial response strategy {strategy!r}")
        return [("dedup", "true"), ("explain", "false"), ("analyze", "false"), ("engine", ""),
                ("partial_response", pr)]

    async def query(self, expr: str, t_ns: int, strategy: str = "ABORT") -> list[Sample]:
        """Instant query at ``t_ns`` (unix ns, sent with Go's RFC3339Nano precision): the vector (a
        scalar becomes one element without labels)."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()  # for query_blocking from template worker threads
        params = [("query", expr), ("time", format_rfc3339nano(t_ns))] + self._thanos_params(strategy)
        eps = await self.endpoints()
        answered = ""
        for i in random.sample(range(len(eps)), len(eps)):
            try:
                m = await self._request(eps[i], "/api/v1/query", params)
                vec = self._vector(m)
            except QueryError as e:
                log.error("query failed", extra={"err": str(e), "query": expr})
                answered = f"query API server {eps[i]} answered {e.answer}"
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                log.error("query failed", extra={"err": str(e) or type(e).__name__, "query": expr})
                continue
            warns = [w for w in (m.get("warnings") or []) if not _is_promql_annotation(w)]
            if warns:
                if self.warnings is not None:
                    self.warnings.labels(strategy=strategy.lower()).inc()
                log.warning("query returned warnings", extra={"warnings": ", ".join(warns), "query": expr})
            return vec
        # Thanos says "no query API server reachable" either way; when a server did answer, its
        # error (a failed store under partial_response_strategy abort, say) is what went wrong
        raise QueryError(answered or NO_SERVER)

    @staticmethod
    def _vector(m: dict) -> list[Sample]:
        data = m.get("data") or {}
        rtype = data.get("resultType")
        if rtype == "vector":
            # a native histogram element has no "value": Thanos' promclient then reads the float 0
            return [(dict(e.get("metric") or {}), _parse_value(e["value"][1]) if "value" in e else 0.0)
                    for e in data.get("result") or []]
        if rtype == "scalar":
            return [({}, _parse_value(data["result"][1]))]
        if m.get("warnings") is not None:
            raise QueryError(f"error: {m.get('error', '')}, type: {m.get('errorType', '')}, "
                             f"warning: {', '.join(m['warnings'])}")
        if m.get("error"):
            raise QueryError(f"error: {m['error']}, type: {m.get('errorType', '')}")
        raise QueryError(f"received status code: 200, unknown response type: '\"{rtype or ''}\"'")

    def query_blocking(self, expr: str, t_ms: int, strategy: str = "ABORT",
                       timeout_s: Optional[float] = 120.0) -> list[Sample]:
        """:meth:`query` from another thread (templates' ``query``); needs :attr:`loop` set or a
        running loop recorded by an earlier :meth:`query`."""
        loop = self.loop
        if loop is None:
            raise RuntimeError("QueryClient.query_blocking: no event loop (call bind_loop first)")
        fut = asyncio.run_coroutine_threadsafe(self.query(expr, int(t_ms) * 10**6, strategy), loop)
        return fut.result(timeout_s)

    def bind_loop(self, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        """Remember the event loop :meth:`query_blocking` submits to."""
        self.loop = loop or asyncio.get_running_loop()

    async def query_range(self, expr: str, start_ms: int, end_ms: int, step_s: int,
                          strategy: str = "WARN") -> list[RangeSeries]:
        """Range query, as Thanos' stateless ruler reads ``ALERTS_FOR_STATE`` back (its default
        strategy value sends ``partial_response=true``); no answer: an empty list, as Thanos."""
        params = [("query", expr), ("start", _fmt_seconds(start_ms)), ("end", _fmt_seconds(end_ms)),
                  ("step", str(int(step_s)))] + self._thanos_params(strategy, always=True)  # Thanos' restore querier
        eps = await self.endpoints()
        for i in random.sample(range(len(eps)), len(eps)):
            try:
                m = await self._request(eps[i], "/api/v1/query_range", params, "GET")  # promclient: always GET
            except (QueryError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                log.error("range query failed", extra={"err": str(e) or type(e).__name__, "query": expr})
                continue
            data = m.get("data") or {}
            if data.get("resultType") != "matrix":
                log.error("range query failed", extra={"err": m.get("error", "not a matrix"), "query": expr})
                continue
            out = []
            for s in data.get("result") or []:
                vals = s.get("values") or []
                t = np.array([round(float(p[0]) * 1000) for p in vals], dtype=np.int64)
                v = np.array([_parse_value(p[1]) for p in vals], dtype=np.float64)
                out.append(RangeSeries(dict(s.get("metric") or {}), t, v))
            return out
        return []

    def for_state_reader(self, step_s: int = 1, ignored_labels: Sequence[str] = ()):
        """A ``for_state_reader`` for the manager without a local TSDB (stateless ruler, Thanos
        #5219): ``ALERTS_FOR_STATE`` read back by a range query over ``[mint, maxt]`` at
        ``--query.default-step``, ``--restore-ignored-label`` names removed from what is found."""
        async def read(matchers: dict[str, str], mint_ms: int, maxt_ms: int):
            expr = "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in matchers.items()) + "}"
            out = []
            for s in await self.query_range(expr, mint_ms, maxt_ms, step_s):
                if not len(s.t_ms):
                    continue
                lb = {k: v for k, v in s.labels.items() if k not in ignored_labels}
                out.append((lb, int(s.t_ms[-1]), float(s.v[-1])))
            return out
        return read


def _fmt_seconds(t_ms: int) -> str:
    # Thanos' promclient formatTime: seconds with up to millisecond precision
    sec, ms = divmod(int(t_ms), 1000)
    return f"{sec}.{ms:03d}".rstrip("0").rstrip(".") if ms else str(sec)
