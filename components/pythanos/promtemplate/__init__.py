"""Go's ``text/template`` and Prometheus 3.9.1's template functions, for alert labels and annotations.

The ruler renders each alert's label and annotation templates exactly as Prometheus'
``rules/alerting.go`` does, so alerts sent to Alertmanager and shown in the APIs carry the same
text as a real Prometheus or Thanos ruler would give them:

* :func:`expand_alert` - one template for one alert sample: the ``$labels``/``$externalLabels``/
  ``$externalURL``/``$value`` preamble, the template named ``__alert_<alertname>``, Prometheus'
  functions (``humanize``, ``query``, ...), and on failure the text Prometheus puts in its place,
  ``<error expanding template: error executing template __alert_X: template: ...>``.
* :func:`parse` - the syntax check rule files get (``promtool check rules``); raises
  :class:`TemplateError`.

Parsed templates are cached by their text: a ruler expands the same few templates at every
evaluation.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Union

from . import values as V
from .exec import ExecError, Template
from .funcs import FUNC_NAMES, prometheus_funcs
from .parse import ParseError, parse as _parse_trees

__all__ = ["TemplateError", "parse", "expand", "expand_alert", "PREAMBLE", "QueryFn"]

# what rules/alerting.go puts before every label and annotation template
PREAMBLE = ("{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}"
            "{{$externalURL := .ExternalURL}}{{$value := .Value}}")

QueryFn = Callable[[str, int], "list[tuple[dict[str, str], float]]"]


class TemplateError(ValueError):
    """A template that does not parse or execute. ``str()`` is Prometheus' text
    (``error parsing template NAME: template: NAME:1: ...``); ``go_error`` is Go's own error text
    (what ``promtool check rules`` prints after ``annotation "k": ``)."""

    def __init__(self, message: str, go_error: str) -> None:
        super().__init__(message)
        self.go_error = go_error


@functools.lru_cache(maxsize=4096)
def _compiled(text: str, name: str) -> Union[Template, ParseError]:
    try:
        return Template(name, _parse_trees(name, text, FUNC_NAMES))
    except ParseError as e:
        return e
    except RecursionError:
        return ParseError(f"template: {name}:1: max expression depth exceeded")


def parse(text: str, name: str) -> None:
    """Parse ``text`` as the template ``name`` with Prometheus' function names, as rule-file
    validation does (callers prepend :data:`PREAMBLE` for alert templates, as rulefmt does)."""
    t = _compiled(text, name)
    if isinstance(t, ParseError):
        raise TemplateError(f"error parsing template {name}: {t}", str(t))


def expand(text: str, name: str, data: Any, *, timestamp_ms: int, external_url: Optional[str] = "",
           query: Optional[QueryFn] = None) -> str:
    """Prometheus' ``Expander.Expand`` (text mode, ``missingkey=zero``); raises :class:`TemplateError`
    with Prometheus' message. ``external_url`` is the URL the ``externalURL``/``pathPrefix``
    functions give; None is no URL (they fail, as in ``thanos rule``)."""
    t = _compiled(text, name)
    if isinstance(t, ParseError):
        raise TemplateError(f"error parsing template {name}: {t}", str(t))
    try:
        return t.execute(data, prometheus_funcs(timestamp_ms, external_url, query))
    except ExecError as e:
        raise TemplateError(f"error executing template {name}: {e}", str(e)) from None
    except RecursionError:
        msg = f"template: {name}: exceeded maximum template depth"
        raise TemplateError(f"error executing template {name}: {msg}", msg) from None


def alert_data(labels: Mapping[str, str], external_labels: Mapping[str, str], external_url: str,
               value: float) -> V.GoStruct:
    """``template.AlertTemplateData``: what ``.`` is in an alert template."""
    return V.GoStruct(V.STRUCT_ALERT, {
        "Labels": V.GoMap(dict(labels)),
        "ExternalLabels": V.GoMap(dict(external_labels)),
        "ExternalURL": external_url,
        "Value": float(value),
    }, ("Value",))


_SAME: Any = object()


def expand_alert(text: str, *, name: str, labels: Mapping[str, str], external_labels: Mapping[str, str],
                 external_url: str, value: float, timestamp_ms: int,
                 query: Optional[QueryFn] = None, template_url: Optional[str] = _SAME) -> str:
    """One label or annotation of the alert rule ``name`` (its alertname) for one sample, as
    Prometheus renders it: the result, or ``<error expanding template: ...>`` in its place.

    ``external_url`` is ``$externalURL``. ``query(expr, ts_ms)`` runs the template's ``query`` calls
    (blocking) and returns the vector as ``[(labels, value), ...]``; None makes ``query`` fail as it
    would with no query engine. ``template_url`` is the URL of the ``externalURL``/``pathPrefix``
    functions, by default ``external_url`` (Prometheus); ``thanos rule`` gives its rule manager
    none, so there they fail: pass None to render as Thanos does.
    """
    data = alert_data(labels, external_labels, external_url, value)
    try:
        return expand(PREAMBLE + text, "__alert_" + name, data, timestamp_ms=timestamp_ms,
                      external_url=external_url if template_url is _SAME else template_url, query=query)
    except TemplateError as e:
        return f"<error expanding template: {e}>"
