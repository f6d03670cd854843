"""Secrets stay out of reprs (and so out of logs, tracebacks and error messages that format a config).

A config dataclass marks its secret fields with :func:`secret_field` and is decorated with
:func:`redacted`: its ``repr``/``str`` then shows ``<secret>`` for a set secret (``''`` for an unset one,
so "was my key read at all?" stays answerable), every other field as the dataclass would.
"""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["SECRET", "secret_field", "redacted"]

SECRET = "<secret>"
_MARK = "pythanos.secret"

T = TypeVar("T")


def secret_field(default: Any = "", **kw: Any) -> Any:
    """A dataclass field whose value never appears in the class' repr."""
    return dataclasses.field(default=default, metadata={_MARK: True}, **kw)


def redacted(cls: type[T]) -> type[T]:
    """Class decorator (applied above ``@dataclass``): a repr that shows ``<secret>`` for secret fields."""
    fields = [f for f in dataclasses.fields(cls) if f.repr]

    def __repr__(self) -> str:
        parts = []
        for f in fields:
            v = getattr(self, f.name)
            parts.append(f"{f.name}={SECRET!s}" if f.metadata.get(_MARK) and v else f"{f.name}={v!r}")
        return f"{type(self).__qualname__}({', '.join(parts)})"

    cls.__repr__ = __repr__  # type: ignore[method-assign]
    cls.__str__ = __repr__  # type: ignore[method-assign]
    return cls
