"""Prometheus remote write 1.0 sender: what the stateless ruler (``--remote-write.config``) does with
the samples it would otherwise store.

Configuration: Prometheus' ``remote_write:`` section (``url``, ``name``, ``remote_timeout`` 30s,
``headers``, ``basic_auth`` (``password`` or ``password_file``), ``bearer_token[_file]``,
``write_relabel_configs``); queue tuning keys (``queue_config``, ``metadata_config``,
``send_exemplars``, ...) are accepted and left to our defaults; authentication kinds we do not
have (``oauth2``, ``sigv4``, ``azuread``, ``google_iam``, ``tls_config``, ``proxy_url``) are
refused by name.

Wire (``storage/remote/client.go``): ``POST`` of a snappy block of ``prometheus.WriteRequest``,
``Content-Encoding: snappy``, ``Content-Type: application/x-protobuf``,
``X-Prometheus-Remote-Write-Version: 0.1.0``. A 5xx, 429 or connection error is retried with
backoff (30 ms doubling to 5 s) until it succeeds; another 4xx drops the batch. Samples wait in a
WAL on disk (``walqueue.py``: an outage of up to 4 h and a crash lose nothing); each endpoint has
its own position in it and its own sender task, so one endpoint down never holds up evaluation
or the others. Metrics: Prometheus'
``prometheus_remote_storage_samples_total`` / ``..._samples_failed_total`` /
``..._samples_retried_total`` / ``..._samples_dropped_total`` ``{remote_name, url}``.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

import aiohttp
import yaml

from ..errors import ConfigError

if TYPE_CHECKING:
    from .walqueue import WALQueue

__all__ = ["RemoteWriteConfig", "parse_remote_write_config", "RemoteWriter"]

log = logging.getLogger(__name__)

_TUNING = {"queue_config", "metadata_config", "send_exemplars", "send_native_histograms", "follow_redirects",
           "enable_http2", "round_robin_dns", "protobuf_message", "no_proxy", "proxy_from_environment",
           "proxy_connect_header", "http_headers"}
_UNSUPPORTED = {"oauth2", "sigv4", "azuread", "google_iam", "tls_config", "proxy_url", "authorization"}
_KNOWN = {"url", "name", "remote_timeout", "headers", "basic_auth", "bearer_token", "bearer_token_file",
          "write_relabel_configs"} | _TUNING | _UNSUPPORTED
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.03, 5.0
MAX_BATCH = 2000


@dataclass
class RemoteWriteConfig:
    url: str
    name: str = ""
    timeout_s: float = 30.0
    headers: dict[str, str] = field(default_factory=dict)
    username: str = ""
    password: str = ""
    password_file: str = ""
    bearer_token: str = ""
    bearer_token_file: str = ""
    relabel: list = field(default_factory=list)
    key: str = ""  # the queue's name: ``name``, or a hash of the entry (as Prometheus names queues)

    def auth_headers(self) -> dict[str, str]:
        """Authorization for one request (files read at each send, as Prometheus' client does)."""
        from ..httpsession import auth_headers

        return auth_headers(self.username, self.password, self.password_file, self.bearer_token,
                            self.bearer_token_file)


def parse_remote_write_config(text: str, where: str) -> list[RemoteWriteConfig]:
    """The ``remote_write`` list of ``text``; errors name ``where`` and the entry."""
    from ..flags import parse_duration
    from ..relabel import parse_relabel_config

    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: parsing YAML: {e}") from None
    if not isinstance(doc, dict) or set(doc) - {"remote_write"}:
        extra = sorted(set(doc) - {"remote_write"}) if isinstance(doc, dict) else []
        raise ConfigError(f"{where}: want a mapping with a remote_write list" +
                          (f" (unknown fields: {', '.join(extra)})" if extra else ""))
    out = []
    for i, e in enumerate(doc.get("remote_write") or []):
        at = f"{where}: remote_write[{i}]"
        if not isinstance(e, dict):
            raise ConfigError(f"{at}: want a mapping")
        unknown = sorted(set(e) - _KNOWN)
        if unknown:
            raise ConfigError(f"{at}: field {unknown[0]} not found in type config.RemoteWriteConfig")
        bad = sorted(set(e) & _UNSUPPORTED)
        if bad:
            raise ConfigError(f"{at}: {bad[0]}: not supported by pythanos")
        url = str(e.get("url") or "")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{at}: url: want an http(s) URL, got {url!r}")
        try:
            timeout = parse_duration(str(e.get("remote_timeout", "30s")), f"{at}: remote_timeout")
        except Exception as err:  # noqa: BLE001 - UserError with the place
            raise ConfigError(str(err)) from None
        ba = e.get("basic_auth") or {}
        if not isinstance(ba, dict):
            raise ConfigError(f"{at}: basic_auth: want a mapping")
        relabel = parse_relabel_config(yaml.safe_dump(e.get("write_relabel_configs") or []),
                                       f"{at}: write_relabel_configs")
        name = str(e.get("name") or "")
        key = name or hashlib.sha256(json.dumps(e, sort_keys=True, default=str).encode()).hexdigest()[:6]
        if name and any(o.name == name for o in out):
            raise ConfigError(f"{at}: found multiple remote write configs with job name {name!r}")
        if any(o.key == key for o in out):
            raise ConfigError(f"{at}: duplicate remote write configs are not allowed, found duplicate for URL: {url}")
        out.append(RemoteWriteConfig(
            url=url, name=name, key=key, timeout_s=timeout,
            headers={str(k): str(v) for k, v in (e.get("headers") or {}).items()},
            username=str(ba.get("username") or ""), password=str(ba.get("password") or ""),
            password_file=str(ba.get("password_file") or ""), bearer_token=str(e.get("bearer_token") or ""),
            bearer_token_file=str(e.get("bearer_token_file") or ""), relabel=relabel))
    if not out:
        raise ConfigError(f"{where}: no remote_write endpoint configured")
    return out


def encode_write_request(samples: Sequence[tuple[tuple[tuple[str, str], ...], int, float]]) -> bytes:
    """A snappy block of ``prometheus.WriteRequest``: samples of the same series in one TimeSeries."""
    import cramjam

    from .prompb.remote_pb2 import WriteRequest

    req = WriteRequest()
    by_series: dict = {}
    for labels, t, v in samples:
        ts = by_series.get(labels)
        if ts is None:
            ts = by_series[labels] = req.timeseries.add()
            for n, val in labels:
                ts.labels.add(name=n, value=val)
        ts.samples.add(value=v, timestamp=t)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


class _Metrics:
    def __init__(self, registry) -> None:
        from prometheus_client import Counter

        names = ["remote_name", "url"]
        self.sent = Counter("prometheus_remote_storage_samples", "Total number of samples sent to remote storage.",
                            names, registry=registry)
        self.failed = Counter("prometheus_remote_storage_samples_failed", "Total number of samples which failed "
                              "on send to remote storage, non-recoverable errors.", names, registry=registry)
        self.retried = Counter("prometheus_remote_storage_samples_retried", "Total number of samples which "
                               "failed on send to remote storage but were retried because the send error was "
                               "recoverable.", names, registry=registry)
        self.dropped = Counter("prometheus_remote_storage_samples_dropped", "Total number of samples which were "
                               "dropped from the queue because it was full.", names, registry=registry)


class _Endpoint:
    def __init__(self, cfg: RemoteWriteConfig, queue: "WALQueue", metrics: _Metrics,
                 external: dict[str, str]) -> None:
        self.cfg = cfg
        self.queue = queue
        self.external = external
        self.more = asyncio.Event()
        self.m = [c.labels(cfg.name, cfg.url) for c in (metrics.sent, metrics.failed, metrics.retried,
                                                          metrics.dropped)]

    def _labels(self, labels: tuple) -> Optional[tuple]:
        """The series as this endpoint sends it (None: relabelled away)."""
        from ..relabel import apply

        if self.external:  # as Prometheus' queue: external labels under the series' own, then relabelling
            d = dict(self.external)
            d.update(labels)
            labels = tuple(sorted(d.items()))
        if self.cfg.relabel:
            got = apply(labels, self.cfg.relabel)
            if not got:
                return None
            labels = tuple(sorted(got.items()))
        return labels

    async def run(self, session: aiohttp.ClientSession) -> None:
        key = self.cfg.key
        while True:
            self.more.clear()
            batch = self.queue.read(key)
            if batch is None:
                await self.more.wait()
                continue
            names = [self._labels(l) for l in batch.series]
            samples = [(names[i], t, v) for i, t, v in zip(batch.index.tolist(), batch.ts.tolist(),
                                                          batch.vs.tolist()) if names[i] is not None]
            for k in range(0, len(samples), MAX_BATCH):
                await self._send(session, samples[k:k + MAX_BATCH])
            self.queue.commit(key, batch.end)

    async def _send(self, session: aiohttp.ClientSession, batch: list) -> None:
        body = encode_write_request(batch)
        backoff = MIN_BACKOFF_S
        sent, failed, retried, _ = self.m
        while True:
            headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                       "User-Agent": "pythanos", "X-Prometheus-Remote-Write-Version": "0.1.0",
                       **self.cfg.headers}
            try:
                headers.update(self.cfg.auth_headers())
                async with session.post(self.cfg.url, data=body, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s)) as resp:
                    if resp.status // 100 == 2:
                        sent.inc(len(batch))
                        return
                    text = (await resp.read())[:256].decode("utf-8", "replace")
                    if resp.status // 100 != 5 and resp.status != 429:
                        failed.inc(len(batch))
                        log.error("non-recoverable error", extra={"url": self.cfg.url, "status": resp.status,
                                                                  "err": text, "count": len(batch)})
                        return
                    why = f"server returned HTTP status {resp.status}: {text}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                why = f"{type(e).__name__}: {e}"
            except Exception as e:  # noqa: BLE001 - never let the sender die silently: say it, retry
                log.exception("remote write sender failed", extra={"url": self.cfg.url})
                why = f"{type(e).__name__}: {e}"
            retried.inc(len(batch))
            log.warning("failed to send batch, retrying", extra={"url": self.cfg.url, "err": why})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)


class RemoteWriter:
    """``append(samples)`` logs (label pairs, ts ms, value) to the queue's WAL in ``directory``
    and returns at once; ``start()`` / ``stop()`` run one sender per endpoint in the current event
    loop, each reading the WAL from its own acknowledged position. ``external_labels`` are added
    to every series that lacks them (Prometheus' global ``external_labels``)."""

    def __init__(self, configs: Sequence[RemoteWriteConfig], directory: str, *, registry=None,
                 compression: Optional[str] = "snappy", external_labels: Optional[dict[str, str]] = None,
                 **queue_kw: Any) -> None:
        from .walqueue import WALQueue

        m = _Metrics(registry)
        dropped = {c.key: m.dropped.labels(c.name, c.url) for c in configs}

        self.queue = WALQueue(directory, [c.key for c in configs], compression=compression,
                              on_dropped=lambda reader, n: dropped[reader].inc(n), **queue_kw)
        self.endpoints = [_Endpoint(c, self.queue, m, dict(external_labels or {})) for c in configs]
        self._tasks: list[asyncio.Task] = []
        self._session: Optional[aiohttp.ClientSession] = None

    @classmethod
    def from_config(cls, text: str, where: str, directory: str, **kw: Any) -> "RemoteWriter":
        return cls(parse_remote_write_config(text, where), directory, **kw)

    async def append(self, samples: list) -> None:
        if self.queue.append(samples):
            for e in self.endpoints:
                e.more.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(e.run(self._session), name=f"remote-write {e.cfg.url}")
                       for e in self.endpoints]

    async def stop(self) -> None:
        """Senders stop where they are: what they had not delivered stays in the WAL for the next
        start."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.queue.close()
