"""The query frontend's response cache configuration (Thanos' ``pkg/queryfrontend/config.go``)::

    type: IN-MEMORY | MEMCACHED | REDIS   # case-insensitive
    config:
      # IN-MEMORY: max_size ("1GB"), max_size_items, validity (0: until evicted)
      # MEMCACHED / REDIS: the client's keys (as for the store's index cache) and expiration (24h)

IN-MEMORY is always bounded here: with neither ``max_size`` nor ``max_size_items`` it holds at
most :data:`DEFAULT_MAX_SIZE` bytes (Cortex's FIFO cache would be off, which nobody asking for a
cache means). Errors name the flag and the field.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import yaml

from ..cache import Cache, InMemoryCache, MemcachedCache, RedisCache
from ..cache.config import _Fields, _memcached, _redis  # the client keys are the index cache's
from ..errors import ConfigError

__all__ = ["ResponseCacheConfig", "parse_response_cache_config", "build_response_cache", "DEFAULT_MAX_SIZE",
           "TripperConfig", "parse_tripper_config"]

DEFAULT_MAX_SIZE = 100 << 20
DEFAULT_EXPIRATION = 24 * 3600.0
TYPES = ("IN-MEMORY", "MEMCACHED", "REDIS")


@dataclass(frozen=True)
class ResponseCacheConfig:
    type: str
    backend: object  # (max_size, max_items) for IN-MEMORY, else the client's config
    ttl: float  # seconds; 0: no expiry (IN-MEMORY without validity)


def parse_response_cache_config(text: str, where: str) -> Optional[ResponseCacheConfig]:
    """None when ``text`` is empty (no caching, as Thanos)."""
    if not (text or "").strip():
        return None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: parsing config YAML file: {e}") from None
    top = _Fields(doc, where, "")
    top.check_known(("type", "config"), "the response cache configuration")
    raw = top.str("type")
    typ = raw.strip().upper()
    if typ not in TYPES:
        raise top.err("type", f"response cache with type {raw!r} is not supported (want one of {', '.join(TYPES)})")
    sub = top.sub("config")
    if typ == "IN-MEMORY":
        sub.check_known(("max_size", "max_size_items", "validity"), "IN-MEMORY")
        size = sub.size("max_size", 0)
        items = sub.int("max_size_items", 0)
        if not size and not items:
            size = DEFAULT_MAX_SIZE
        return ResponseCacheConfig(typ, (size, items), sub.duration("validity", 0.0))
    ttl = sub.duration("expiration", 0.0) or DEFAULT_EXPIRATION
    client = _Fields({k: v for k, v in sub.doc.items() if k != "expiration"}, where, "config")
    return ResponseCacheConfig(typ, _memcached(client) if typ == "MEMCACHED" else _redis(client), ttl)


def build_response_cache(cfg: ResponseCacheConfig, *, name: str, registry=None) -> Cache:
    if cfg.type == "IN-MEMORY":
        size, items = cfg.backend  # type: ignore[misc]
        size = size or DEFAULT_MAX_SIZE  # max_size_items alone: the byte bound still holds
        return InMemoryCache(size, size, name=name, registry=registry, max_items=items or None)
    if cfg.type == "MEMCACHED":
        return MemcachedCache(cfg.backend, name=name, registry=registry)  # type: ignore[arg-type]
    return RedisCache(cfg.backend, name=name, registry=registry)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TripperConfig:
    """``--query-frontend.downstream-tripper-config``: Thanos' ``DownstreamTripperConfig``. The
    idle and per-host limits map onto aiohttp's connector; ``max_idle_conns`` and
    ``expect_continue_timeout`` have no counterpart there (accepted, no effect)."""
    idle_conn_timeout: float = 90.0
    response_header_timeout: float = 0.0  # 0: none
    tls_handshake_timeout: float = 10.0
    max_conns_per_host: int = 0  # 0: no limit
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    insecure_skip_verify: bool = False

    def ssl_context(self):
        """The TLS client context for an https downstream (None: aiohttp's default)."""
        from ..httpsession import client_ssl_context

        return client_ssl_context(self.ca_file, self.cert_file, self.key_file, self.insecure_skip_verify)


def parse_tripper_config(text: str, where: str) -> TripperConfig:
    """An empty text gives the defaults."""
    if not (text or "").strip():
        return TripperConfig()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: parsing downstream tripper config YAML file: {e}") from None
    f = _Fields(doc, where, "")
    f.check_known(("idle_conn_timeout", "response_header_timeout", "tls_handshake_timeout", "expect_continue_timeout",
                   "max_idle_conns", "max_idle_conns_per_host", "max_conns_per_host", "tls_config"),
                  "the downstream tripper configuration")
    t = f.sub("tls_config")
    t.check_known(("ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify"), "tls_config")
    if t.str("key_file") and not t.str("cert_file"):
        raise t.err("cert_file", "client key file specified without client cert file")
    d = TripperConfig()
    return TripperConfig(
        idle_conn_timeout=f.duration("idle_conn_timeout", d.idle_conn_timeout),
        response_header_timeout=f.duration("response_header_timeout", d.response_header_timeout),
        tls_handshake_timeout=f.duration("tls_handshake_timeout", d.tls_handshake_timeout),
        max_conns_per_host=f.int("max_conns_per_host", 0),
        ca_file=t.str("ca_file"), cert_file=t.str("cert_file"), key_file=t.str("key_file"),
        server_name=t.str("server_name"), insecure_skip_verify=t.bool("insecure_skip_verify", False))
