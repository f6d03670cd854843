"""PromQL engine on numpy: ``Engine().instant(query, t_ms, queryable)`` / ``.range(query, start, end, step, queryable)``.

Parsing uses the ``promql-parser`` package; evaluation is vectorised across series and steps.
"""
from .engine import (STALE_NAN, Engine, MemoryQueryable, Queryable, Result, Sample, SelectHints, Series,
                     is_stale_nan, parse)
from .errors import (ExecutionError, ParseError, PromQLError, QueryCanceledError, QueryTimeoutError,
                     TooManySamplesError)
from .format import format_float, format_scalar_float, format_timestamp, response_json, result_json

__all__ = ["Engine", "Queryable", "MemoryQueryable", "Result", "Sample", "Series", "SelectHints", "STALE_NAN",
           "is_stale_nan", "parse", "PromQLError", "ParseError", "ExecutionError", "QueryTimeoutError", "QueryCanceledError",
           "TooManySamplesError", "format_float", "format_scalar_float", "format_timestamp", "result_json",
           "response_json"]
