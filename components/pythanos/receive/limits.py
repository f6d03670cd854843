"""The receiver's limits file (``--receive.limits-config[-file]``, Thanos ``pkg/receive/limiter_config.go``).

::

    write:
      global:  {max_concurrency, meta_monitoring_url, meta_monitoring_limit_query, meta_monitoring_http_client}
      default: {request: {size_bytes_limit, series_limit, samples_limit}, head_series_limit}
      tenants: {<tenant>: {request: {...}, head_series_limit}}

0 means unlimited; a limit missing in ``default`` is unlimited, one missing for a tenant is the
default's. Request limits answer 413 with Thanos' texts. Unknown keys are an error (Thanos parses
strictly). Head-series limits are enforced from the receiver's own head (Thanos asks a
meta-monitoring Prometheus every 15 s and limits nothing while that is down): exact, and never off.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

import yaml

from ..errors import ConfigError

__all__ = ["RequestLimits", "Limits", "parse_limits", "UNLIMITED", "ConfigError"]

DEFAULT_LIMIT_QUERY = "sum(prometheus_tsdb_head_series) by (tenant)"


@dataclass(frozen=True)
class RequestLimits:
    """Per-request limits; 0 = unlimited."""

    size_bytes: int = 0
    series: int = 0
    samples: int = 0


@dataclass(frozen=True)
class Limits:
    default: RequestLimits = RequestLimits()
    tenants: dict[str, RequestLimits] = field(default_factory=dict)
    default_head_series: int = 0
    tenant_head_series: dict[str, int] = field(default_factory=dict)
    max_concurrency: int = 0
    meta_monitoring_url: str = ""
    meta_monitoring_query: str = DEFAULT_LIMIT_QUERY

    def request(self, tenant: str) -> RequestLimits:
        return self.tenants.get(tenant, self.default)

    def head_series(self, tenant: str) -> int:
        return self.tenant_head_series.get(tenant, self.default_head_series)


UNLIMITED = Limits()

_REQUEST_KEYS = {"size_bytes_limit": "size_bytes", "series_limit": "series", "samples_limit": "samples"}


def _mapping(v: Any, where: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ConfigError(f"{where}: want a mapping, got {type(v).__name__}")
    return v


def _keys(d: dict, allowed: set[str], where: str) -> None:
    for k in d:
        if k not in allowed:
            raise ConfigError(f"{where}: parsing config YAML file: field {k} not found (known: "
                              f"{', '.join(sorted(allowed))})")


def _int(v: Any, where: str, *, unsigned: bool = False) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{where}: want an integer, got {v!r}")
    if unsigned and v < 0:
        raise ConfigError(f"{where}: want a non-negative integer, got {v}")
    return v


def _request(v: Any, where: str, base: Optional[RequestLimits]) -> Optional[RequestLimits]:
    """The ``request`` block overlaid on ``base`` (None: the block is absent)."""
    if v is None:
        return base
    d = _mapping(v, where)
    _keys(d, set(_REQUEST_KEYS), where)
    values = dict(size_bytes=0, series=0, samples=0) if base is None else dict(
        size_bytes=base.size_bytes, series=base.series, samples=base.samples)
    for k, attr in _REQUEST_KEYS.items():
        if d.get(k) is not None:
            values[attr] = _int(d[k], f"{where}.{k}")
    return RequestLimits(**values)


def parse_limits(text: str, where: str) -> Limits:
    """The limits file's text (errors name ``where`` and the field)."""
    if not text.strip():
        return UNLIMITED
    try:
        root = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: parsing config YAML file: {e}") from None
    root = _mapping(root, where)
    _keys(root, {"write"}, where)
    write = _mapping(root.get("write"), f"{where}: write")
    _keys(write, {"global", "default", "tenants"}, f"{where}: write")
    glob = _mapping(write.get("global"), f"{where}: write.global")
    _keys(glob, {"max_concurrency", "meta_monitoring_url", "meta_monitoring_http_client",
                 "meta_monitoring_limit_query"}, f"{where}: write.global")
    url = glob.get("meta_monitoring_url") or ""
    if url:
        parts = urlsplit(str(url))
        if not parts.scheme or not parts.netloc:
            raise ConfigError(f"{where}: write.global.meta_monitoring_url: {url} is not a valid meta-monitoring URL "
                              f"(scheme: {parts.scheme},host: {parts.netloc})")
    default = _mapping(write.get("default"), f"{where}: write.default")
    _keys(default, {"request", "head_series_limit"}, f"{where}: write.default")
    default_req = _request(default.get("request"), f"{where}: write.default.request", None) or RequestLimits()
    default_head = _int(default.get("head_series_limit") or 0, f"{where}: write.default.head_series_limit",
                        unsigned=True)
    tenants: dict[str, RequestLimits] = {}
    tenant_head: dict[str, int] = {}
    for tenant, conf in _mapping(write.get("tenants"), f"{where}: write.tenants").items():
        w = f"{where}: write.tenants.{tenant}"
        conf = _mapping(conf, w)
        _keys(conf, {"request", "head_series_limit"}, w)
        req = _request(conf.get("request"), f"{w}.request", default_req)
        if req is not None and conf.get("request") is not None:
            tenants[str(tenant)] = req
        if conf.get("head_series_limit") is not None:
            tenant_head[str(tenant)] = _int(conf["head_series_limit"], f"{w}.head_series_limit", unsigned=True)
    return Limits(default=default_req, tenants=tenants, default_head_series=default_head,
                  tenant_head_series=tenant_head,
                  max_concurrency=_int(glob.get("max_concurrency") or 0, f"{where}: write.global.max_concurrency"),
                  meta_monitoring_url=str(url),
                  meta_monitoring_query=str(glob.get("meta_monitoring_limit_query") or DEFAULT_LIMIT_QUERY))
