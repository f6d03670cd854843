"""``pythanos config-reloader``: the sidecar's reloader (:mod:`pythanos.sidecar.reloader`) on its own,
POSTing ``--reload-url`` when a watched directory's content changes.

Why it exists: a ruler (ours or Thanos') reads its rule files at start and on ``POST /-/reload``, but
never watches them. The operator mounts the rulers' rule files from a ConfigMap, which the kubelet
updates in place (a new ``..data`` directory swapped in by one rename); this process notices within a
second and reloads the ruler, so a changed rule never restarts the pod. Metrics are named as
prometheus-operator's reloader names them (``reloader_*``, no prefix).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

__all__ = ["ReloaderConfig", "run", "serve"]


@dataclass
class ReloaderConfig:
    reload_url: str = "http://127.0.0.1:9090/-/reload"
    watched_dirs: list[str] = field(default_factory=list)
    config_file: str = ""
    config_envsubst_file: str = ""
    watch_interval: float = 180.0
    retry_interval: float = 5.0
    listen_address: str = ":8080"


class ReloadError(Exception):
    """The reload URL did not answer 200."""


def _poster(url: str):
    """``POST url``; anything but 200 raises with the status and the start of the body."""
    import aiohttp

    session: list = []

    async def post() -> None:
        if not session:
            session.append(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)))
        try:
            async with session[0].post(url) as resp:
                if resp.status != 200:
                    body = (await resp.read())[:256].decode(errors="replace").strip()
                    raise ReloadError(f"POST {url}: {resp.status} {body}".rstrip())
        except aiohttp.ClientError as e:
            raise ReloadError(f"POST {url}: {e}") from None

    async def close() -> None:
        if session:
            await session.pop().close()

    return post, close


async def serve(config: ReloaderConfig, stop: asyncio.Event | None = None) -> int:
    from ..server import Component
    from ..sidecar.reloader import Reloader

    srv = Component("config-reloader", http_address=config.listen_address, stop=stop)
    post, close = _poster(config.reload_url)
    reloader = Reloader(post, config_file=config.config_file or None,
                        config_envsubst_file=config.config_envsubst_file or None, rule_dirs=config.watched_dirs,
                        watch_interval=config.watch_interval, retry_interval=config.retry_interval,
                        registry=srv.registry, metric_prefix="")
    await srv.start_http()
    srv.set_ready(True)
    log.info("watching", extra={"dirs": ",".join(config.watched_dirs), "cfg": config.config_file,
                                "reload_url": config.reload_url})
    return await srv.run_tasks([asyncio.create_task(reloader.run(), name="reloader")], on_stop=close)


def run(config: ReloaderConfig) -> int:
    return asyncio.run(serve(config))
