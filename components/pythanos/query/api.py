"""The querier's HTTP API v1: Prometheus' routes with Thanos' additions (``pkg/api/query/v1.go``).

Responses are written byte for byte as Thanos writes them: the envelope ``status, data,
errorType, error, warnings`` (empty fields left out), query data as ``resultType, result,
analysis`` (Thanos always writes its empty ``"analysis":{}``), numbers and timestamps as
Prometheus formats them (:mod:`pythanos.promql.format`), ``<>&`` escaped as jsoniter does.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional, Sequence

from aiohttp import web

from ..promql import Engine, PromQLError
from ..promql.engine import Planned
from ..promql.format import result_pieces
from ..web.statusapi import add_status_routes
from .params import (MAX_TIME_MS, MIN_TIME_MS, ApiError, first, now_ms, parse_bool, parse_duration, parse_limit,
                     parse_selector, parse_time)
from .proxy import Proxy, StoreFetchError
from .queryable import QueryOptions, SelectOnLoop, StoreQueryable

log = logging.getLogger(__name__)

__all__ = ["ApiConfig", "QueryAPI", "envelope"]

MAX_POINTS = 11000
#: A query whose selections brought at most this many bytes of Series frames is evaluated on the
#: event loop (a few ms of numpy); a bigger one in a worker thread.
INLINE_BYTES = 1 << 20
#: An answer of at most this many points is written on the event loop.
INLINE_POINTS = 50_000


def _points(result) -> int:
    if result.type == "matrix":
        return sum(len(s.t) for s in result.value)
    if result.type == "vector":
        return len(result.value)
    return 1


def _jstr(s: str) -> str:
    import json

    return json.dumps(s, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def envelope(data_json: Optional[str] = None, *, error: Optional[ApiError] = None,
             warnings: Sequence[str] = ()) -> str:
    parts = ['{"status":' + ('"error"' if error is not None else '"success"')]
    if data_json is not None:
        parts.append('"data":' + data_json)
    if error is not None:
        parts.append('"errorType":' + _jstr(error.error_type))
        parts.append('"error":' + _jstr(error.message))
    if warnings:
        parts.append('"warnings":[' + ",".join(_jstr(w) for w in warnings) + "]")
    return ",".join(parts) + "}"


def envelope_pieces(data: list, warnings: Sequence[str] = ()) -> list:
    """:func:`envelope` of a success whose data is already a list of bytes-like pieces."""
    tail = b"}"
    if warnings:
        tail = (',"warnings":[' + ",".join(_jstr(w) for w in warnings) + "]}").encode()
    return [b'{"status":"success","data":', *data, tail]


WRITE_SLICE = 1 << 20  # big answers go out in slices, each straight from the writer's buffer


async def _stream(request: web.Request, pieces: list) -> web.StreamResponse:
    """A 200 JSON answer made of pieces: small ones joined, big ones written slice by slice."""
    total = sum(len(p) for p in pieces)
    headers = {"Content-Type": "application/json"}
    if total <= WRITE_SLICE:
        return web.Response(body=b"".join(pieces), headers=headers)
    resp = web.StreamResponse(headers=headers)
    resp.content_length = total
    await resp.prepare(request)
    try:
        for p in pieces:
            mv = memoryview(p)
            for i in range(0, len(mv), WRITE_SLICE):
                await resp.write(mv[i:i + WRITE_SLICE])
        await resp.write_eof()
    except ConnectionResetError:  # the client went away mid-answer: nothing left to tell it
        log.debug("client closed the connection during the answer", extra={"path": request.path})
    return resp


def _json(value) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c").replace(
        ">", "\\u003e").replace("&", "\\u0026")


@dataclass
class ApiConfig:
    replica_labels: list[str] = field(default_factory=list)
    partial_response: bool = True
    auto_downsampling: bool = False
    timeout_s: float = 120.0
    max_concurrent: int = 20
    lookback_delta_ms: int = 300_000
    default_step_ms: int = 1000
    dedup_func: str = "penalty"
    metadata_range_ms: int = 0
    experimental_functions: bool = False  # --enable-feature=promql-experimental-functions
    dynamic_lookback_delta: bool = True  # Thanos' hidden --query.dynamic-lookback-delta (default true)
    exemplar_partial_response: bool = True  # Thanos' hidden --exemplar.partial-response (default true)
    rule_partial_response: bool = True  # Thanos' hidden --rule.partial-response (default true)


RESOLUTIONS_MS = (0, 300_000, 3_600_000)  # downsample.ResLevel0, 1, 2


def lookback_for_resolution(lookback_ms: int, max_source_resolution_ms: int, dynamic: bool = True) -> int:
    """Thanos' ``LookbackDeltaFactory`` (cmd/thanos/query.go): with the dynamic lookback delta, a query
    that may read 5m data looks back at least 5m and one that may read 1h data at least 1h; the
    resolution counts once it exceeds both the level below and the configured lookback delta."""
    resolutions = RESOLUTIONS_MS if dynamic else RESOLUTIONS_MS[:1]
    lds = []
    cur = lookback_ms
    for r in resolutions:
        if lookback_ms < r:
            cur = r
        lds.append(cur)
    for i in range(len(resolutions) - 1, 0, -1):
        if max(resolutions[i - 1], lookback_ms) < max_source_resolution_ms:
            return lds[i]
    return lds[0]


class QueryAPI:
    def __init__(self, proxy: Proxy, engine: Engine, config: ApiConfig, statuses: Callable[[], dict]) -> None:
        self.proxy = proxy
        self.engine = engine
        self.cfg = config
        self.statuses = statuses
        self.exemplars = None  # a pythanos.query.exemplars.ExemplarsProxy: /api/v1/query_exemplars
        self.rules = None  # a pythanos.query.rules.RulesProxy: /api/v1/rules, /api/v1/alerts
        self.gate = asyncio.Semaphore(max(1, config.max_concurrent))
        self.in_flight = 0  # queries holding a gate slot: until their work (a worker thread too) has ended
        # evaluation threads: a query keeps its gate slot while its thread runs, so there is always one free
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, config.max_concurrent),
                                                          thread_name_prefix="query-eval")

    def routes(self, app: web.Application, prefix: str = "") -> None:
        p = prefix.rstrip("/") + "/api/v1"
        for path, h in (("/query", self.query), ("/query_range", self.query_range), ("/series", self.series),
                        ("/labels", self.labels), ("/label/{name}/values", self.label_values)):
            app.router.add_route("GET", p + path, self._wrap(h))
            app.router.add_route("POST", p + path, self._wrap(h))
        app.router.add_get(p + "/stores", self._wrap(self.stores))
        if self.exemplars is not None:
            app.router.add_route("GET", p + "/query_exemplars", self._wrap(self.query_exemplars))
            app.router.add_route("POST", p + "/query_exemplars", self._wrap(self.query_exemplars))
        if self.rules is not None:
            app.router.add_get(p + "/rules", self._wrap(self.rules_handler))
            app.router.add_get(p + "/alerts", self._wrap(self.alerts_handler))
        add_status_routes(app, prefix, cors=False)  # the querier sets no CORS headers yet

    # -- plumbing --
    def _wrap(self, fn: Callable[[web.Request, dict], Awaitable[tuple["str | list", list]]]):
        async def handler(request: web.Request) -> web.Response:
            params = await _params(request)
            try:
                data, warnings = await fn(request, params)
                if isinstance(data, list):
                    return await _stream(request, envelope_pieces(data, warnings))
                body, status = envelope(data, warnings=warnings), 200
            except ApiError as e:
                body, status = envelope(error=e), e.status
            headers = {"Content-Type": "application/json"}
            if status != 200:
                headers["Cache-Control"] = "no-store"
            return web.Response(body=body.encode(), status=status, headers=headers)
        return handler

    def _options(self, params, *, instant: bool, step_ms: int = 0) -> QueryOptions:
        dedup = parse_bool(first(params, "dedup"), "dedup") if first(params, "dedup") else True
        replica = params.getall("replicaLabels[]", []) or list(self.cfg.replica_labels)
        partial = self.cfg.partial_response
        if first(params, "partial_response"):
            partial = parse_bool(first(params, "partial_response"), "partial_response")
        store_matchers = [parse_selector(s) for s in params.getall("storeMatch[]", [])] or None
        val = first(params, "max_source_resolution")
        res = 0
        if self.cfg.auto_downsampling or val == "auto":
            res = 0 if instant else step_ms // 5
        if val and val != "auto":
            try:
                res = parse_duration(val)
            except ApiError as e:
                raise ApiError("bad_data", f"'max_source_resolution' parameter: {e.message}") from None
        if res < 0:
            raise ApiError("bad_data", "negative 'max_source_resolution' is not accepted. Try a positive integer")
        engine = first(params, "engine")
        if engine and engine not in ("prometheus", "thanos"):
            raise ApiError("bad_data", f"'{engine}' bad engine")
        shard = None
        if first(params, "shard_info"):
            from ..storeapi.sharding import shard_info_from_json

            try:
                shard = shard_info_from_json(first(params, "shard_info"))
            except ValueError as e:
                raise ApiError("bad_data", f"could not unmarshal parameter shard_info: {e}") from None
        return QueryOptions(dedup=dedup, replica_labels=replica, partial=partial, store_matchers=store_matchers,
                            max_resolution_window=res, dedup_func=self.cfg.dedup_func, shard_info=shard)

    def _lookback(self, params, opts: QueryOptions) -> Optional[int]:
        """The request's ``lookback_delta`` when positive, else the lookback for the query's
        ``max_source_resolution`` (:func:`lookback_for_resolution`)."""
        val = first(params, "lookback_delta")
        ms = 0
        if val:
            try:
                ms = parse_duration(val)
            except ApiError as e:
                raise ApiError("bad_data", f"'lookback_delta' parameter: {e.message}") from None
        if ms > 0:
            return ms
        ld = lookback_for_resolution(self.cfg.lookback_delta_ms, opts.max_resolution_window,
                                     self.cfg.dynamic_lookback_delta)
        return ld if ld != self.cfg.lookback_delta_ms else None

    def _timeout(self, params) -> float:
        t = self.cfg.timeout_s
        val = first(params, "timeout")
        if val:
            t = min(t, parse_duration(val) / 1000.0) if t else parse_duration(val) / 1000.0
        return t

    async def _evaluate(self, planned: Planned, fallback: Callable[[], object], qa: StoreQueryable):
        """Select on the event loop, every selection at once; then evaluate a small query right
        here (a worker thread would cost more in hand-overs than the evaluation itself) and a
        big one in a worker thread, so the loop keeps serving. ``fallback`` runs the whole
        query in a worker thread when it needs a selection its plan does not cover.

        Timeouts stop the work, not only the wait: the fan-out's gRPC calls are cancelled with
        the wait, evaluation and decoding check the query's stop token (deadline and cancel
        flag) at every plan node and batch, and a worker thread that outlives the wait is told
        to stop and keeps its slot of the concurrency gate (``in_flight``) until it has."""
        stop = qa.stop
        await self.gate.acquire()
        self.in_flight += 1
        worker: Optional[concurrent.futures.Future] = None
        try:
            sels = planned.selections
            try:
                async with asyncio.timeout(stop.remaining()):
                    if len(sels) == 1:
                        _, m, mint, maxt, h = sels[0]
                        got = [await qa.fetch(m, mint, maxt, h)]
                    else:
                        got = await asyncio.gather(*(qa.fetch(m, mint, maxt, h) for _, m, mint, maxt, h in sels))
            except asyncio.TimeoutError:
                raise ApiError("timeout", "query timed out in query execution") from None
            except PromQLError as e:
                raise ApiError(e.error_type, str(e)) from None

            def selected() -> dict:
                return {k: qa.samples(g, mint, maxt, h) for (k, _, mint, maxt, h), g in zip(sels, got)}

            def evaluate():
                return planned.evaluate(selected)

            try:
                if sum(g.nbytes for g in got) <= INLINE_BYTES:
                    try:
                        return evaluate()
                    except SelectOnLoop:
                        fn = fallback
                else:
                    fn = evaluate
                worker = self.pool.submit(fn)
                try:
                    async with asyncio.timeout(stop.remaining()):
                        return await asyncio.wrap_future(worker)
                except asyncio.TimeoutError:
                    raise ApiError("timeout", "query timed out in query execution") from None
            except PromQLError as e:
                raise ApiError(e.error_type, str(e)) from None
            except StoreFetchError as e:
                raise ApiError("execution", str(e)) from None
        finally:
            if worker is not None and not worker.done():
                stop.cancel()  # nobody waits for it any more: it stops at its next check
                loop = asyncio.get_running_loop()

                def release(_f) -> None:
                    try:
                        loop.call_soon_threadsafe(self._release)
                    except RuntimeError:  # the loop is closed: the querier is gone
                        pass
                worker.add_done_callback(release)
            else:
                self._release()

    def _release(self) -> None:
        """A query's work has ended: its slot of the gate is free again."""
        self.in_flight -= 1
        self.gate.release()

    async def _query_data(self, result) -> list:
        """The query's data as bytes pieces; a big answer is written in a worker thread."""
        if _points(result) <= INLINE_POINTS:
            pieces = result_pieces(result)
        else:
            pieces = await asyncio.get_running_loop().run_in_executor(None, result_pieces, result)
        last = bytes(pieces[-1])
        assert last.endswith(b"}")
        return pieces[:-1] + [last[:-1] + b',"analysis":{}}']

    # -- handlers --
    async def query(self, request: web.Request, params) -> tuple[list, list]:
        ts = _time_param(params, "time", now_ms())
        timeout = self._timeout(params)
        opts = self._options(params, instant=True)
        lookback = self._lookback(params, opts)
        q = first(params, "query")
        expr = _check_parse(q, self.cfg.experimental_functions)
        qa = StoreQueryable(self.proxy, asyncio.get_running_loop(), opts, timeout=timeout)
        try:
            planned = self.engine.plan_instant(q, ts, qa, lookback_delta_ms=lookback, expr=expr, stop=qa.stop)
        except PromQLError as e:
            raise ApiError(e.error_type, str(e)) from None
        res = await self._evaluate(planned, lambda: self.engine.instant(q, ts, qa, lookback_delta_ms=lookback,
                                                                        stop=qa.stop), qa)
        return await self._query_data(res), _warnings(qa, res)

    async def query_range(self, request: web.Request, params) -> tuple[list, list]:
        start = _time_value(first(params, "start"))
        end = _time_value(first(params, "end"))
        if end < start:
            raise ApiError("bad_data", "end timestamp must not be before start time")
        sval = first(params, "step")
        if sval:
            try:
                step = parse_duration(sval)
            except ApiError as e:
                raise ApiError("bad_data", f"'step' parameter: {e.message}") from None
        else:
            step = max((end - start) // 1000 // 250, self.cfg.default_step_ms // 1000) * 1000
        if step <= 0:
            raise ApiError("bad_data", "zero or negative query resolution step widths are not accepted. "
                                       "Try a positive integer")
        if (end - start) // step > MAX_POINTS:
            raise ApiError("bad_data", "exceeded maximum resolution of 11,000 points per timeseries. "
                                       "Try decreasing the query resolution (?step=XX)")
        timeout = self._timeout(params)
        opts = self._options(params, instant=False, step_ms=step)
        lookback = self._lookback(params, opts)
        q = first(params, "query")
        expr = _check_parse(q, self.cfg.experimental_functions)
        qa = StoreQueryable(self.proxy, asyncio.get_running_loop(), opts, timeout=timeout)
        try:
            planned = self.engine.plan_range(q, start, end, step, qa, lookback_delta_ms=lookback, expr=expr,
                                             stop=qa.stop)
        except PromQLError as e:
            raise ApiError(e.error_type, str(e)) from None
        res = await self._evaluate(planned, lambda: self.engine.range(q, start, end, step, qa, lookback_delta_ms=lookback,
                                                                      stop=qa.stop), qa)
        return await self._query_data(res), _warnings(qa, res)

    def _meta_range(self, params) -> tuple[int, int]:
        """Thanos wraps these errors twice, so their text starts with the type: "bad_data: ..."."""
        try:
            return self._meta_range_inner(params)
        except ApiError as e:
            raise ApiError("bad_data", f"bad_data: {e.message}") from None

    def _meta_range_inner(self, params) -> tuple[int, int]:
        if self.cfg.metadata_range_ms:
            end_d = now_ms()
            start_d = end_d - self.cfg.metadata_range_ms
        else:
            start_d, end_d = MIN_TIME_MS, MAX_TIME_MS
        start = _time_param(params, "start", start_d)
        end = _time_param(params, "end", end_d)
        if end < start:
            raise ApiError("bad_data", "end timestamp must not be before start time")
        return start, end

    async def series(self, request: web.Request, params) -> tuple[str, list]:
        matches = params.getall("match[]", [])
        if not matches:
            raise ApiError("bad_data", "no match[] parameter provided")
        start, end = self._meta_range(params)
        sets = [parse_selector(m) for m in matches]
        opts = self._options(params, instant=True)
        limit = parse_limit(first(params, "limit"))
        replica = opts.replica_labels if opts.deduplicating else ()
        found: dict = {}
        warnings: list = []
        for ms in sets:
            try:
                got = await self.proxy.fetch(ms, start, end, replica_labels=replica, partial=opts.partial,
                                             skip_chunks=True, store_matchers=opts.store_matchers,
                                             timeout=self._timeout(params))
            except StoreFetchError as e:
                raise ApiError("execution", str(e)) from None
            warnings.extend(w for w in got.warnings if w not in warnings)
            drop = set(replica)
            for lbls in got.series:
                key = tuple(kv for kv in lbls if kv[0] not in drop) if drop else lbls
                found[key] = True
        out = sorted(found)
        if limit and len(out) > limit:
            out = out[:limit]
            warnings.append("results truncated due to limit")
        return "[" + ",".join(_json(dict(ls)) for ls in out) + "]", warnings

    async def labels(self, request: web.Request, params) -> tuple[str, list]:
        start, end = self._meta_range(params)
        return await self._label_call(None, params, start, end)

    async def label_values(self, request: web.Request, params) -> tuple[str, list]:
        name = request.match_info["name"]
        if not name:
            raise ApiError("bad_data", f'invalid label name: "{name}"')
        start, end = self._meta_range(params)
        return await self._label_call(name, params, start, end)

    async def _label_call(self, name: Optional[str], params, start: int, end: int) -> tuple[str, list]:
        partial = self.cfg.partial_response
        if first(params, "partial_response"):
            partial = parse_bool(first(params, "partial_response"), "partial_response")
        store_matchers = [parse_selector(s) for s in params.getall("storeMatch[]", [])] or None
        limit = parse_limit(first(params, "limit"))
        sets = [parse_selector(m) for m in params.getall("match[]", [])] or [[]]
        values: set = set()
        warnings: list = []
        for ms in sets:
            try:
                if name is None:
                    vals, ws = await self.proxy.label_names(ms, start, end, partial=partial,
                                                            store_matchers=store_matchers,
                                                            timeout=self._timeout(params))
                else:
                    vals, ws = await self.proxy.label_values(name, ms, start, end, partial=partial,
                                                             store_matchers=store_matchers,
                                                             timeout=self._timeout(params))
            except StoreFetchError as e:
                raise ApiError("execution", str(e)) from None
            values.update(vals)
            warnings.extend(w for w in ws if w not in warnings)
        out = sorted(values)
        if limit and len(out) > limit:
            out = out[:limit]
            warnings.append("results truncated due to limit")
        return _json(out), warnings

    async def query_exemplars(self, request: web.Request, params) -> tuple[str, list]:
        """Thanos' exemplars handler: ``start``/``end`` default to all time (no order check),
        anything failing downstream (a query that does not parse too) is "internal"."""
        from ..storeapi import exemplars as ex
        from .exemplars import FetchError

        start = _time_param(params, "start", MIN_TIME_MS)
        end = _time_param(params, "end", MAX_TIME_MS)
        try:
            data, warnings = await self.exemplars.fetch(first(params, "query") or "", start, end,
                                                        partial=self.cfg.exemplar_partial_response)
        except FetchError as e:
            raise ApiError("internal", f"retrieving exemplars: proxy Exemplars: {e}") from None
        return ex.to_json(ex.merge(data, self.cfg.replica_labels)), warnings

    async def rules_handler(self, request: web.Request, params) -> tuple[str, list]:
        """Thanos' rules handler: ``type`` alert|record (any case), ``match[]``, ``rule_name[]``,
        ``rule_group[]``, ``file[]``; a downstream failure (a bad ``match[]`` too) is "internal"."""
        from ..storeapi import rules as rl
        from .rules import FetchError, strategy

        typ_param = request.query.get("type", "")
        typ = rl.request_type(typ_param)
        if typ is None:
            raise ApiError("bad_data", f"invalid rules parameter type='{typ_param}'")
        req = rl.rules_pb2.RulesRequest(type=typ, partial_response_strategy=strategy(self.cfg.rule_partial_response),
                                        matcher_string=params.getall("match[]", []),
                                        rule_name=params.getall("rule_name[]", []),
                                        rule_group=params.getall("rule_group[]", []),
                                        file=params.getall("file[]", []))
        try:
            groups, warnings = await self.rules.fetch(req)
        except FetchError as e:
            raise ApiError("internal", f"error retrieving rules: proxy Rules: {e}") from None
        sets = []
        for s in req.matcher_string:
            try:
                sets.append(parse_selector(s))
            except ApiError as e:
                raise ApiError("internal", f"error retrieving rules: parser ParseMetricSelector: {e.message}") from None
        groups = rl.gather(groups, matcher_sets=sets, rule_names=list(req.rule_name), rule_groups=list(req.rule_group),
                           files=list(req.file), replica_labels=self.cfg.replica_labels)
        return rl.rules_json(groups), warnings

    async def alerts_handler(self, request: web.Request, params) -> tuple[str, list]:
        """Thanos' alerts handler: the alerts of every de-duplicated alerting rule."""
        from ..storeapi import rules as rl
        from .rules import FetchError, strategy

        req = rl.rules_pb2.RulesRequest(type=rl.ALERT,
                                        partial_response_strategy=strategy(self.cfg.rule_partial_response))
        try:
            groups, warnings = await self.rules.fetch(req)
        except FetchError as e:
            raise ApiError("internal", f"error retrieving rules: proxy Rules: {e}") from None
        return rl.alerts_json(rl.gather(groups, replica_labels=self.cfg.replica_labels)), warnings

    async def stores(self, request: web.Request, params) -> tuple[str, list]:
        return _json(self.statuses()), []


# Prometheus 3.9.1 parser/functions.go entries with Experimental: true, and the experimental
# aggregators; Thanos rejects them unless --enable-feature=promql-experimental-functions.
EXPERIMENTAL_FUNCS = frozenset({"first_over_time", "double_exponential_smoothing", "info", "mad_over_time",
                                "ts_of_first_over_time", "ts_of_max_over_time", "ts_of_min_over_time",
                                "ts_of_last_over_time", "sort_by_label", "sort_by_label_desc"})
EXPERIMENTAL_AGGRS = frozenset({"limitk", "limit_ratio"})


@functools.lru_cache(maxsize=512)
def _check_parse(q: str, experimental: bool = True):
    """The query's syntax tree, or the API's error: a parse error, or an experimental function
    that is not enabled. Trees are kept per query text (a dashboard asks the same queries again
    and again; nothing changes a tree once parsed); errors are not kept."""
    from ..promql import parse

    try:
        expr = parse(q)
    except PromQLError as e:
        raise ApiError("bad_data", str(e)) from None
    if experimental:
        return expr
    import promql_parser as pp

    def pos(name: str) -> str:
        m = re.search(r"\b" + re.escape(name) + r"\s*\(", q)
        off = m.start() if m else 0
        line = q.count("\n", 0, off) + 1
        return f"{line}:{off - (q.rfind(chr(10), 0, off) + 1) + 1}"

    def walk(n) -> None:
        if isinstance(n, pp.Call) and n.func.name in EXPERIMENTAL_FUNCS:
            raise ApiError("bad_data", f'{pos(n.func.name)}: parse error: function "{n.func.name}" is not enabled')
        if isinstance(n, pp.AggregateExpr) and str(n.op) in EXPERIMENTAL_AGGRS:
            op = str(n.op)
            raise ApiError("bad_data", f"{pos(op)}: parse error: {op}() is experimental and must be enabled with "
                                       "--enable-feature=promql-experimental-functions")
        for attr in ("args", "expr", "param", "lhs", "rhs"):
            child = getattr(n, attr, None)
            for c in (child if isinstance(child, (list, tuple)) else [child]):
                if c is not None and not isinstance(c, (str, int, float)):
                    walk(c)

    walk(expr)
    return expr


def _warnings(qa: StoreQueryable, res) -> list:
    out = list(qa.warnings)
    for w in list(getattr(res, "warnings", []) or []) + list(getattr(res, "infos", []) or []):
        if w not in out:
            out.append(w)
    return out


def _time_value(s: str) -> int:
    return parse_time(s)


def _time_param(params, name: str, default: int) -> int:
    val = first(params, name)
    if not val:
        return default
    try:
        return parse_time(val)
    except ApiError as e:
        raise ApiError("bad_data", f"Invalid time value for '{name}': {e.message}") from None


async def _params(request: web.Request):
    """URL query and form body together (Go's ``r.Form``: body values first)."""
    from multidict import MultiDict

    out: MultiDict = MultiDict()
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        body = await request.post()
        for k, v in body.items():
            out.add(k, v)
    for k, v in request.query.items():
        out.add(k, v)
    return out


def elapsed_ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
