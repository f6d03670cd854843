"""PromQL errors carrying Prometheus' API ``errorType`` (``web/api/v1/api.go``)."""
from __future__ import annotations

__all__ = ["PromQLError", "ParseError", "ExecutionError", "QueryTimeoutError", "QueryCanceledError",
           "TooManySamplesError"]


class PromQLError(Exception):
    """Base class; ``error_type`` is the ``errorType`` of the HTTP API, ``status`` its default HTTP code."""

    error_type = "internal"
    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ParseError(PromQLError):
    """A query that does not parse or type-check: ``bad_data`` (400)."""

    error_type = "bad_data"
    status = 400


class ExecutionError(PromQLError):
    """A runtime error (many-to-many matching, duplicate label sets, ...): ``execution`` (422)."""

    error_type = "execution"
    status = 422


class TooManySamplesError(ExecutionError):
    def __init__(self, message: str = "query processing would load too many samples into memory in query execution"):
        super().__init__(message)


class QueryTimeoutError(PromQLError):
    error_type = "timeout"
    status = 503


class QueryCanceledError(PromQLError):
    error_type = "canceled"
    status = 499
