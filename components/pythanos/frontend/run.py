"""``pythanos query-frontend``: range queries aligned, split, cached and retried in front of any
Prometheus-compatible query API; every other path passed through.

Range queries (``/api/v1/query_range``, GET or POST): parameters checked as the querier checks
them; ``--query-range.max-query-length`` enforced; start and end aligned to the step
(``--query-range.align-range-with-step``); ``@ start()``/``@ end()`` pinned; the range split at
``--query-range.split-interval`` (day-aligned, UTC) and the pieces asked for in parallel (at most
``--query-range.max-query-parallelism`` at once), each through the results cache when one is
configured; the answers merged into the querier's own JSON. A piece's 5xx or transport error is
retried (``--query-range.max-retries-per-request``, backoff from 200 ms to 2 s); a 4xx, or the last
5xx, is returned to the client as downstream wrote it. Requests with ``dedup=false``,
``storeMatch[]``, a ``Cache-Control: no-store`` header or answers with warnings are not cached.

With ``--query-frontend.vertical-shards`` above 1, a range piece or an instant query whose
series can be split (:mod:`.vertical`) is asked in that many shards (``shard_info``), whose
answers concatenate (instant vectors in Thanos' order).

Instant queries are retried (``--query.max-retries-per-request``); label names, label values
and series requests are split (``--labels.split-interval``, over ``--labels.default-time-range``
when they give no range), asked in parallel, merged as Thanos merges them and retried
(``--labels.max-retries-per-request``); with ``--labels.response-cache-config`` their pieces end
on the split grid and each complete one older than ``--labels.response-cache-max-freshness``
is cached whole, for its exact range. Anything else is proxied once. ``X-Forwarded-For`` and
the ``--query-frontend.forward-header`` headers are passed on.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Optional

import orjson

__all__ = ["FrontendConfig", "serve", "run"]

log = logging.getLogger(__name__)

MIN_BACKOFF_S, MAX_BACKOFF_S = 0.2, 2.0
RESOLUTIONS = (300_000, 3_600_000)  # the downsampled middleware's fallbacks: 5m, then 1h
_HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                "transfer-encoding", "upgrade", "content-length", "host", "accept-encoding", "content-encoding"}


@dataclass
class FrontendConfig:
    http_address: str = "0.0.0.0:10902"
    http_grace_period: float = 120.0
    http_config: str = ""
    disable_cors: bool = False
    downstream_url: str = "http://localhost:9090"
    align_range_with_step: bool = True
    request_downsampled: bool = True
    split_interval_ms: int = 24 * 3_600_000
    min_split_interval_ms: int = 0  # the dynamic split (split_interval_ms 0): see Frontend.split_interval
    max_split_interval_ms: int = 0
    horizontal_shards: int = 0
    vertical_shards: int = 0  # above 1: shardable range queries asked in that many series shards
    max_retries: int = 5
    instant_max_retries: int = 5
    labels_max_retries: int = 5
    labels_split_interval_ms: int = 24 * 3_600_000
    labels_default_range_ms: int = 24 * 3_600_000
    labels_partial_response: bool = True
    cache_compression: str = ""  # "" or "snappy"
    tripper: object = None  # a cacheconfig.TripperConfig (None: Go's http.Transport defaults)
    compress_responses: bool = False
    max_query_length_ms: int = 0
    max_query_parallelism: int = 14
    labels_max_query_parallelism: int = 14
    max_freshness_ms: int = 60_000
    partial_response: bool = True
    response_cache: object = None  # a ResponseCacheConfig, or None: no caching
    labels_response_cache: object = None  # the same for labels, label values and series
    labels_max_freshness_ms: int = 60_000
    forward_headers: list[str] = field(default_factory=list)
    log_queries_longer_than_s: float = 0.0
    tenant_header: str = "THANOS-TENANT"
    default_tenant: str = "default-tenant"


class Downstream:
    """The downstream query API over one keep-alive session."""

    def __init__(self, base: str, retries_histogram=None, tripper=None) -> None:
        from .cacheconfig import TripperConfig

        self.base = base.rstrip("/")
        self._session = None
        self.retries_histogram = retries_histogram
        self.tripper = tripper or TripperConfig()

    def session(self):
        import aiohttp

        if self._session is None:
            t = self.tripper
            ctx = t.ssl_context()
            conn = aiohttp.TCPConnector(limit=0, limit_per_host=t.max_conns_per_host,
                                        keepalive_timeout=t.idle_conn_timeout or None,
                                        ssl=ctx if ctx is not None else True)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.tls_handshake_timeout or None,
                                            sock_read=t.response_header_timeout or None)
            self._session = aiohttp.ClientSession(connector=conn, timeout=timeout, auto_decompress=True)
        return self._session

    def _server_name(self) -> dict:
        return {"server_hostname": self.tripper.server_name} if self.tripper.server_name else {}

    async def call(self, method: str, path: str, params: list, headers: dict, body: Optional[bytes] = None,
                   retries: int = 0, tripperware: str = "") -> tuple[int, dict, bytes]:
        """(status, headers, body); 5xx and transport errors retried ``retries`` times."""
        import aiohttp
        from urllib.parse import urlencode

        url = self.base + path
        attempt, backoff = 0, MIN_BACKOFF_S
        while True:
            try:
                if method == "POST" and body is None:
                    resp_cm = self.session().post(url, data=urlencode(params), headers={
                        **headers, "Content-Type": "application/x-www-form-urlencoded"}, **self._server_name())
                elif method in ("GET", "HEAD"):
                    resp_cm = self.session().request(method, url, params=params, headers=headers,
                                                     **self._server_name())
                else:
                    resp_cm = self.session().request(method, url, params=params, headers=headers, data=body,
                                                     **self._server_name())
                async with resp_cm as resp:
                    data = await resp.read()
                    status, rh = resp.status, {k: v for k, v in resp.headers.items()
                                               if k.lower() not in _HOP_HEADERS}
                if status < 500 or attempt >= retries:
                    self._observe(tripperware, attempt)
                    return status, rh, data
                why = f"status {status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                if attempt >= retries:
                    self._observe(tripperware, attempt)
                    return 502, {"Content-Type": "application/json"}, _error_json(
                        "unavailable", f"downstream {self.base} unreachable: {type(e).__name__}: {e}")
                why = f"{type(e).__name__}: {e}"
            attempt += 1
            log.warning("retrying downstream request", extra={"path": path, "attempt": attempt, "err": why})
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _observe(self, tripperware: str, attempts: int) -> None:
        if tripperware and self.retries_histogram is not None:
            self.retries_histogram.labels(tripperware).observe(attempts)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _error_json(error_type: str, message: str) -> bytes:
    return json.dumps({"status": "error", "errorType": error_type, "error": message}).encode()


class _Metrics:
    """Thanos' query frontend families (names, labels) that tell what the frontend did."""

    def __init__(self, registry, vertical_shards: int = 0) -> None:
        from prometheus_client import Counter, Histogram

        self.queries = Counter("thanos_query_frontend_queries", "Total queries passing through query frontend",
                               ["op"], registry=registry)
        for op in ("query_range", "query", "label_names", "label_values", "series"):
            self.queries.labels(op)
        self.split = Counter("thanos_frontend_split_queries", "Total number of underlying query requests after "
                             "the split by interval is applied", ["tripperware"], registry=registry)
        self.split.labels("query_range")
        self.split.labels("labels")
        self.downsampled = Counter("thanos_frontend_downsampled_extra_queries", "Total number of additional "
                                   "queries for downsampled data", ["tripperware"], registry=registry)
        self.downsampled.labels("query_range")
        self.retries = Histogram("cortex_query_frontend_retries", "Number of times a request is retried.",
                                 ["tripperware"], buckets=(0, 1, 2, 3, 4, 5), registry=registry)
        self.sharding = None
        if vertical_shards > 1:  # Thanos adds the middleware, and so the family, only then
            self.sharding = Counter("thanos_frontend_sharding_middleware_queries",
                                    "Total number of queries analyzed by the sharding middleware",
                                    ["shardable", "tripperware"], registry=registry)
            for shardable in ("true", "false"):
                for t in ("query_range", "query_instant"):
                    self.sharding.labels(shardable, t)
        self.gets = Counter("querier_cache_gets", "The total number of Get calls", ["cache", "tripperware"],
                            registry=registry)
        self.misses = Counter("querier_cache_misses", "The total number of Get calls that had no valid entry",
                              ["cache", "tripperware"], registry=registry)


class Frontend:
    def __init__(self, config: FrontendConfig, registry=None) -> None:
        self.cfg = config
        self.m = _Metrics(registry, config.vertical_shards)
        self.down = Downstream(config.downstream_url, self.m.retries, config.tripper)
        self.cache = None
        if config.response_cache is not None:
            from .cacheconfig import build_response_cache
            from .resultscache import ResultsCache

            backend = build_response_cache(config.response_cache, name="frontend-cache", registry=registry)
            self.cache = ResultsCache(backend, config.response_cache.ttl, config.max_freshness_ms,
                                      lambda: int(time.time() * 1000), config.cache_compression)
        self.labels_cache = None
        if config.labels_response_cache is not None:
            from .cacheconfig import build_response_cache
            from .resultscache import LabelsCache

            backend = build_response_cache(config.labels_response_cache, name="frontend-labels-cache",
                                           registry=registry)
            self.labels_cache = LabelsCache(backend, config.labels_response_cache.ttl, config.labels_max_freshness_ms,
                                            lambda: int(time.time() * 1000), config.cache_compression)

    def split_interval(self, start: int, end: int) -> int:
        """Thanos' ``dynamicIntervalFn``: the static interval when set; else the max interval for
        ranges of at least twice it, the range in ``horizontal_shards`` equal parts above the
        min interval, the min interval below it. The cache key is made from this very value."""
        c = self.cfg
        if c.split_interval_ms or not c.max_split_interval_ms:
            return c.split_interval_ms
        span = end - start
        if span // c.max_split_interval_ms >= 2:
            return c.max_split_interval_ms
        if span > c.min_split_interval_ms:
            return span // max(1, c.horizontal_shards)
        return c.min_split_interval_ms

    def _headers(self, request) -> dict:
        out = {}
        for name in self.cfg.forward_headers:
            v = request.headers.get(name)
            if v is not None:
                out[name] = v
        for name in ("Authorization", "Accept", self.cfg.tenant_header):
            v = request.headers.get(name)
            if v is not None:
                out.setdefault(name, v)
        peer = request.remote or ""
        xff = request.headers.get("X-Forwarded-For")
        out["X-Forwarded-For"] = f"{xff}, {peer}" if xff else peer
        return out

    def _response(self, status: int, headers: dict, body: bytes):
        from aiohttp import web

        h = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
        if not self.cfg.disable_cors:
            h["Access-Control-Allow-Origin"] = "*"
        resp = web.Response(status=status, body=body, headers=h)
        if self.cfg.compress_responses:  # gzip or deflate, as the client accepts (none: as is)
            resp.enable_compression()
        return resp

    def _api_error(self, e):
        """An :class:`~pythanos.query.params.ApiError` in Prometheus' error JSON."""
        return self._response(e.status, {"Content-Type": "application/json"}, _error_json(e.error_type, str(e)))

    async def _params(self, request) -> list:
        params = list(request.query.items())
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            params += list((await request.post()).items())
        return params

    # -- range queries ------------------------------------------------------------------------

    async def query_range(self, request):
        from ..query.params import ApiError, parse_duration, parse_time
        from .split import align, pin_at_modifiers, split_range

        started = time.monotonic()
        self.m.queries.labels("query_range").inc()
        params = await self._params(request)
        p = dict(params)
        try:
            start = parse_time(p.get("start", ""))  # errors worded as Thanos' frontend and querier
            end = parse_time(p.get("end", ""))
            if end < start:
                raise ApiError("bad_data", "end timestamp must not be before start time")
            step = parse_duration(p.get("step", ""))
            if step <= 0:
                raise ApiError("bad_data", "zero or negative query resolution step widths are not accepted. "
                                           "Try a positive integer")
            if (end - start) // step > 11000:
                raise ApiError("bad_data", "exceeded maximum resolution of 11,000 points per timeseries. "
                                           "Try decreasing the query resolution (?step=XX)")
            if self.cfg.max_query_length_ms and end - start > self.cfg.max_query_length_ms:
                from ..gofmt import model_duration

                raise ApiError("bad_data", f"the query time range exceeds the limit (query length: "
                                           f"{model_duration(end - start)}, limit: "
                                           f"{model_duration(self.cfg.max_query_length_ms)})")
        except ApiError as e:
            return self._api_error(e)
        if self.cfg.align_range_with_step:
            start, end = align(start, end, step)
        query = pin_at_modifiers(p.get("query", ""), start, end)
        if "partial_response" not in p:
            params.append(("partial_response", "true" if self.cfg.partial_response else "false"))
        rest = [(k, v) for k, v in params if k not in ("start", "end", "query")]
        headers = self._headers(request)
        cacheable = (self.cache is not None and p.get("dedup", "true").lower() not in ("false", "0", "f")
                     and not any(k == "storeMatch[]" for k, _ in params)
                     and "no-store" not in request.headers.get("Cache-Control", "").lower())
        errors: list = []
        gate = asyncio.Semaphore(self.cfg.max_query_parallelism)  # per query, as Thanos schedules its pieces
        auto = p.get("max_source_resolution", "") == "auto"
        base_res = step // 5 if auto else _resolution(p.get("max_source_resolution", ""))

        shards: list = [None]
        if self.m.sharding is not None and "shard_info" not in p:
            from .vertical import analyze, shard_param

            plan = analyze(query)
            self.m.sharding.labels("true" if plan else "false", "query_range").inc()
            if plan is not None:
                n = self.cfg.vertical_shards
                shards = [shard_param(plan, i, n) for i in range(n)]

        async def fetch(a: int, b: int, sub_rest: list):
            """One piece, from its shards' answers (series of different shards never share
            labels: their matrices concatenate)."""
            if len(shards) == 1:
                return await fetch_shard(a, b, sub_rest, None)
            parts = await asyncio.gather(*(fetch_shard(a, b, sub_rest, sh) for sh in shards))
            from .merge import merge_results
            from .resultscache import Piece

            warnings, infos, extra = _notes(parts)
            return Piece(a, b, merge_results(x.result for x in parts), warnings, infos,
                         cacheable=all(x.cacheable for x in parts), extra=extra)

        async def fetch_shard(a: int, b: int, sub_rest: list, shard: Optional[str]):
            from .resultscache import Piece, harmless

            sub = [("query", query), ("start", _seconds(a)), ("end", _seconds(b)), *sub_rest]
            if shard is not None:
                sub.append(("shard_info", shard))
            async with gate:
                status, h, body = await self.down.call("POST", "/api/v1/query_range", sub, headers,
                                                       retries=self.cfg.max_retries, tripperware="query_range")
            if status // 100 != 2:
                errors.append((status, h, body))
                raise _Failed()
            try:
                doc = orjson.loads(body)
                data = doc["data"]
                if data.get("resultType") != "matrix":
                    raise ValueError(f"resultType {data.get('resultType')!r}")
                result = data["result"] or []
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                errors.append((502, {"Content-Type": "application/json"},
                               _error_json("internal", f"unexpected downstream answer: {e}")))
                raise _Failed() from None
            warnings = list(doc.get("warnings") or [])
            no_store = "no-store" in h.get("Cache-Control", "").lower()
            return Piece(a, b, result, warnings, list(doc.get("infos") or []),
                         cacheable=not no_store and all(harmless(w) for w in warnings),
                         extra={k: v for k, v in data.items() if k not in ("resultType", "result")})

        async def run_range(s_: int, e_: int, res_param: Optional[str], res_ms: int) -> list:
            """Split, cache and ask: the pieces of ``[s_, e_]`` at ``max_source_resolution``
            ``res_param`` (None: the request's own)."""
            from .resultscache import cache_key

            sub_rest = rest if res_param is None else \
                [(k, v) for k, v in rest if k != "max_source_resolution"] + [("max_source_resolution", res_param)]
            interval = self.split_interval(s_, e_)
            pieces = split_range(s_, e_, step, interval)
            self.m.split.labels("query_range").inc(len(pieces))

            async def one(a: int, b: int):
                if not cacheable:
                    return await fetch(a, b, sub_rest)
                key = cache_key(tenant=request.headers.get(self.cfg.tenant_header, self.cfg.default_tenant),
                                query=query, step=step, split=interval, start=a,
                                max_source_resolution=res_ms, shard=p.get("shard_info", ""),
                                lookback_ms=_lookback(p.get("lookback_delta", "")), engine=p.get("engine", ""),
                                partial=p.get("partial_response", "true").lower() in ("true", "1", "t"),
                                replica_labels=[v for k, v in params if k == "replicaLabels[]"],
                                analyze=p.get("analyze", "").lower() in ("true", "1", "t"))
                self.m.gets.labels("frontend-cache", "query_range").inc()
                got = await self.cache.get(key, a, b, step, lambda x, y: fetch(x, y, sub_rest))
                if got.fetched:
                    self.m.misses.labels("frontend-cache", "query_range").inc()
                return got

            return list(await asyncio.gather(*(one(a, b) for a, b in pieces)))

        try:
            if auto and self.cfg.request_downsampled:
                got = await self._downsampled(run_range, start, end, step, base_res)
            else:
                got = await run_range(start, end, None, base_res)
        except _Failed:
            status, h, body = errors[0]
            return self._response(status, h, body)
        from .merge import encode_matrix, merge_results

        warnings, infos, extra = _notes(got)
        body = encode_matrix(merge_results(g.result for g in got), warnings, infos, extra)
        took = time.monotonic() - started
        slow = self.cfg.log_queries_longer_than_s
        if slow and (slow < 0 or took > slow):
            log.info("slow query detected", extra={"time_taken": f"{took:.3f}s", "query": query,
                                                   "start": start, "end": end, "step": step})
        from .resultscache import harmless

        h = {"Content-Type": "application/json"}
        if not all(harmless(w) for w in warnings):
            h["Cache-Control"] = "no-store"
        return self._response(200, h, body)

    async def _downsampled(self, run_range, start: int, end: int, step: int, res: int) -> list:
        """Thanos' downsampled middleware (``max_source_resolution=auto``): when the answer starts
        after ``start`` (raw data already deleted by retention), the missing prefix is asked again
        at 5m and then 1h resolution; every answer's pieces are returned, oldest data first."""
        from .merge import sample_ms

        answers: list[list] = []
        res_param: Optional[str] = None  # "auto" as sent
        s_, e_, i = start, end, 0
        while i < len(RESOLUTIONS):
            if answers:
                self.m.downsampled.labels("query_range").inc()
            got = await run_range(s_, e_, res_param, res)
            answers.append(got)
            while i < len(RESOLUTIONS):
                if res < RESOLUTIONS[i]:
                    res, res_param = RESOLUTIONS[i], _seconds(RESOLUTIONS[i])
                    break
                i += 1
            firsts = [sample_ms(pts[0][0]) for g in got for ser in g.result
                      for pts in (ser.get("values"), ser.get("histograms")) if pts]
            if not firsts:
                continue
            m = min(firsts)
            if m == s_:
                break
            e_ = m - step
            if s_ > e_:
                break

        def first_time(pieces: list) -> float:
            ts = [sample_ms(pts[0][0]) for g in pieces for ser in g.result
                  for pts in (ser.get("values"), ser.get("histograms")) if pts]
            return min(ts) if ts else float("inf")

        return [g for a in sorted(answers, key=first_time) for g in a]

    # -- instant queries -----------------------------------------------------------------------

    async def query_instant(self, request):
        """Passed through (with ``--query.max-retries-per-request`` retries), or, with vertical
        shards and a shardable query, asked in shards whose vectors merge as Thanos merges them."""
        tries = self.cfg.instant_max_retries
        if self.m.sharding is None:
            return await self.passthrough(request, tries, "query", "query_instant")
        from .vertical import analyze, instant_order, shard_param

        params = await self._params(request)
        p = dict(params)
        plan = None if "shard_info" in p else analyze(p.get("query", ""))
        self.m.sharding.labels("true" if plan else "false", "query_instant").inc()
        if plan is None:
            return await self.passthrough(request, tries, "query", "query_instant")
        self.m.queries.labels("query").inc()
        if "partial_response" not in p:
            params.append(("partial_response", "true" if self.cfg.partial_response else "false"))
        headers = self._headers(request)
        n = self.cfg.vertical_shards

        async def one(k: int):
            return await self.down.call("POST", "/api/v1/query", [*params, ("shard_info", shard_param(plan, k, n))],
                                        headers, retries=tries, tripperware="query_instant")

        answers = await asyncio.gather(*(one(k) for k in range(n)))
        for status, h, body in answers:
            if status // 100 != 2:
                return self._response(status, h, body)
        from .merge import encode_result, merge_results, merge_vectors

        try:
            docs = [orjson.loads(body) for _, _, body in answers]
            kind = docs[0]["data"]["resultType"]
            results = [d["data"]["result"] or [] for d in docs]
        except (ValueError, KeyError, TypeError) as e:
            return self._response(502, {"Content-Type": "application/json"},
                                  _error_json("internal", f"unexpected downstream answer: {e}"))
        if kind == "vector":
            merged = merge_vectors(results, instant_order(p.get("query", "")))
        elif kind == "matrix":
            merged = merge_results(results)
        else:  # a scalar or string is never split (not shardable): the first answer is the answer
            return self._response(*answers[0])
        warnings: list = []
        infos: list = []
        for d in docs:
            warnings += [w for w in d.get("warnings") or () if w not in warnings]
            infos += [i for i in d.get("infos") or () if i not in infos]
        extra = {k: v for k, v in docs[0]["data"].items() if k not in ("resultType", "result")}
        return self._response(200, {"Content-Type": "application/json"},
                              encode_result(kind, merged, warnings, infos, extra))

    # -- labels and series ---------------------------------------------------------------------

    async def labels(self, request, op: str):
        """Label names, label values and series: split into ``--labels.split-interval`` pieces
        from the start (Thanos splits these from the request's start, not at day boundaries),
        asked in parallel, merged as Thanos merges them (names and values sorted and unique;
        series unique by label set, sorted)."""
        from ..query.params import ApiError, parse_time

        self.m.queries.labels(op).inc()
        split = self.cfg.labels_split_interval_ms
        if split <= 0:
            return await self.passthrough(request, self.cfg.labels_max_retries, tripperware="labels")
        params = await self._params(request)
        p = dict(params)
        now = int(time.time() * 1000)
        try:
            if self.cfg.labels_default_range_ms:
                start = parse_time(p["start"]) if p.get("start") else now - self.cfg.labels_default_range_ms
                end = parse_time(p["end"]) if p.get("end") else now
            else:
                from ..query.params import MAX_TIME_MS, MIN_TIME_MS

                start = parse_time(p["start"]) if p.get("start") else MIN_TIME_MS
                end = parse_time(p["end"]) if p.get("end") else MAX_TIME_MS
            if end < start:
                raise ApiError("bad_data", "end timestamp must not be before start time")
        except ApiError as e:
            return self._api_error(e)
        if "partial_response" not in p:
            params.append(("partial_response", "true" if self.cfg.labels_partial_response else "false"))
        rest = [(k, v) for k, v in params if k not in ("start", "end")]
        headers = self._headers(request)
        cache = self.labels_cache
        if cache is not None and "no-store" in request.headers.get("Cache-Control", "").lower():
            cache = None
        if cache is not None and end > start:
            # with a cache, pieces end on the split grid (as range queries do) so that a sliding
            # dashboard range asks again only for its ends; the union over the pieces is the same
            # answer, the label APIs answering for every block or series a piece touches
            cuts = [start, *range((start // split + 1) * split, end, split), end]
            pieces = list(zip(cuts, cuts[1:]))
        elif end > start:
            pieces = [(a, min(a + split, end)) for a in range(start, end, split)]
        else:
            pieces = [(start, end)]
        self.m.split.labels("labels").inc(len(pieces))
        gate = asyncio.Semaphore(self.cfg.labels_max_query_parallelism)
        tenant = request.headers.get(self.cfg.tenant_header, self.cfg.default_tenant)

        async def ask(a: int, b: int):
            sub = [("start", _seconds(a)), ("end", _seconds(b)), *rest]
            async with gate:
                return await self.down.call("POST", request.rel_url.path, sub, headers,
                                            retries=self.cfg.labels_max_retries, tripperware="labels")

        async def one(a: int, b: int):
            if cache is None or not cache.cacheable(b):
                return await ask(a, b)
            from .resultscache import labels_cache_key

            key = labels_cache_key(tenant=tenant, path=request.rel_url.path, params=rest, start=a, end=b)
            self.m.gets.labels("frontend-cache", "labels").inc()
            body = await cache.get(key)
            if body is not None:
                return 200, {"Content-Type": "application/json"}, body
            self.m.misses.labels("frontend-cache", "labels").inc()
            status, h, body = await ask(a, b)
            if status == 200 and "no-store" not in h.get("Cache-Control", "").lower():
                try:
                    complete = not orjson.loads(body).get("warnings")
                except (ValueError, AttributeError):
                    complete = False
                if complete:
                    await cache.put(key, body)
            return status, h, body

        answers = await asyncio.gather(*(one(a, b) for a, b in pieces))
        for status, h, body in answers:
            if status // 100 != 2:
                return self._response(status, h, body)
        if len(answers) == 1:
            return self._response(*answers[0])
        warnings: list = []
        try:
            docs = [orjson.loads(body) for _, _, body in answers]
            for d in docs:
                warnings += [w for w in d.get("warnings") or () if w not in warnings]
            if op == "series":
                seen: dict = {}
                for d in docs:
                    for ser in d["data"] or ():
                        seen.setdefault(tuple(sorted(ser.items())), ser)
                data = [seen[k] for k in sorted(seen)]
            else:
                data = sorted({v for d in docs for v in d["data"] or ()})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return self._response(502, {"Content-Type": "application/json"},
                                  _error_json("internal", f"unexpected downstream answer: {e}"))
        from .merge import escape_html

        out = b'{"status":"success","data":' + orjson.dumps(data)
        if warnings:
            out += b',"warnings":' + orjson.dumps(warnings)
        body = escape_html(out + b"}")
        return self._response(200, {"Content-Type": "application/json"}, body)

    # -- everything else ----------------------------------------------------------------------

    async def passthrough(self, request, retries: int = 0, op: str = "", tripperware: str = ""):
        if op:
            self.m.queries.labels(op).inc()
        params = list(request.query.items())
        body = await request.read() if request.method not in ("GET", "HEAD") else None
        headers = self._headers(request)
        ct = request.headers.get("Content-Type")
        if ct:
            headers["Content-Type"] = ct
        status, h, data = await self.down.call(request.method, request.rel_url.path, params, headers,
                                               body=body, retries=retries, tripperware=tripperware)
        return self._response(status, h, data)

    def routes(self, app) -> None:
        r = app.router
        for m in ("GET", "POST"):
            r.add_route(m, "/api/v1/query_range", self.query_range)
            r.add_route(m, "/api/v1/query", self.query_instant)
            for path, op in (("/api/v1/labels", "label_names"), ("/api/v1/label/{name}/values", "label_values"),
                             ("/api/v1/series", "series")):
                r.add_route(m, path, lambda q, op=op: self.labels(q, op))
        r.add_route("*", "/{tail:.*}", self.passthrough)


def _notes(pieces) -> tuple[list, list, dict]:
    """The warnings and infos of answers put together (each once, in order) and their other
    ``data`` members (the first answer's win)."""
    warnings: list = []
    infos: list = []
    extra: dict = {}
    for x in pieces:
        warnings += [w for w in x.warnings if w not in warnings]
        infos += [i for i in x.infos if i not in infos]
        extra = {**x.extra, **extra}
    return warnings, infos, extra


class _Failed(Exception):
    """A piece failed; the downstream answer to return is in the handler's ``errors``."""


def _seconds(ms: int) -> str:
    sec, rem = divmod(ms, 1000)
    return str(sec) if not rem else f"{sec}.{rem:03d}"


def _resolution(v: str) -> int:
    from ..query.params import ApiError, parse_duration

    if not v or v == "auto":
        return 0
    try:
        return parse_duration(v)
    except ApiError:
        return 0


def _lookback(v: str) -> int:
    return _resolution(v)


async def serve(config: FrontendConfig, stop: Optional[asyncio.Event] = None) -> int:
    from ..server import Component

    srv = Component("query-frontend", http_address=config.http_address, http_grace_period=config.http_grace_period,
                    http_config=config.http_config, stop=stop)
    fe = Frontend(config, registry=srv.registry)
    fe.routes(srv.app)
    await srv.start_http()
    srv.set_ready(True)
    log.info("starting query frontend", extra={"http": config.http_address, "downstream": config.downstream_url,
                                              "cache": type(fe.cache.cache).__name__ if fe.cache else "none"})

    async def close() -> None:
        await fe.down.close()
        if fe.cache is not None:
            await fe.cache.cache.close()

    return await srv.run_tasks([asyncio.create_task(asyncio.Event().wait(), name="serve")], on_stop=close)


def run(config: FrontendConfig) -> int:
    from ..runtime import tune_gc

    tune_gc()
    return asyncio.run(serve(config))
