"""The reloader against a real Prometheus (``--web.enable-lifecycle``), plus retry behaviour on a flaky endpoint."""
from __future__ import annotations

import asyncio
import gzip
import json
import time
import urllib.request

import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from pythanos.sidecar.promclient import PromClient
from pythanos.sidecar.reloader import EnvExpansionError, Reloader, expand_env

P = "thanos_sidecar_"


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]


def _prom_config(url: str) -> dict:
    return yaml.safe_load(_get_json(url + "/api/v1/status/config")["yaml"])


async def _eventually(check, timeout: float = 10.0, what: str = ""):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = await asyncio.get_running_loop().run_in_executor(None, check)
            if last:
                return last
        except Exception as e:  # noqa: BLE001
            last = e
        await asyncio.sleep(0.2)
    pytest.fail(f"not within {timeout}s: {what} (last: {last!r})")


def test_expand_env_rules():
    env = {"A": "x", "B_2": "y"}
    out, _ = expand_env(b"$(A)-$(B_2)-$A-${A}-$(A", env)
    assert out == b"x-y-$A-${A}-$(A"  # only $(VAR) is expanded, as Thanos/Kubernetes
    with pytest.raises(EnvExpansionError, match=r'unset environment variables "NOPE", "NOPE2"') as ei:
        expand_env(b"$(A) $(NOPE) $(NOPE2)", env, "in.yml")
    assert ei.value.names == ["NOPE", "NOPE2"]


def _config(pod: str = "$(POD_NAME)", extra: str = "", rule_dir=None) -> str:
    s = f"global:\n  scrape_interval: 15s\n  external_labels:\n    cluster: eu1\n    pod: {pod}\n{extra}"
    if rule_dir:
        s += f"rule_files:\n  - {rule_dir}/*.yml\n"
    return s


def test_reloader_real_prometheus(prometheus_factory, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    p = prometheus_factory(config_yaml=_config("initial"), extra_args=["--web.enable-lifecycle"])
    out = p.extra["config_file"]  # the file Prometheus loads = our envsubst output
    src = tmp_path / "prometheus.yml.in"
    src.write_text(_config(rule_dir=rules))
    reg = CollectorRegistry()
    env = {"POD_NAME": "pod-a"}

    async def main():
        async with PromClient(p.url) as prom:
            rl = Reloader(prom.reload, config_file=str(src), config_envsubst_file=str(out), rule_dirs=[str(rules)],
                          environ=env, registry=reg, poll_interval=0.2, retry_interval=1.0)
            task = asyncio.create_task(rl.run())
            try:
                # initial apply: $(POD_NAME) expanded, Prometheus reloaded
                await _eventually(lambda: _prom_config(p.url)["global"]["external_labels"]["pod"] == "pod-a",
                                  what="initial config applied")
                assert "$(" not in out.read_text()
                assert reg.get_sample_value(P + "reloader_reloads_total") >= 1
                assert reg.get_sample_value(P + "reloader_last_reload_successful") == 1
                assert reg.get_sample_value(P + "reloader_info", {"method": "http"}) == 1

                # change the input file: visible in Prometheus within seconds
                t0 = time.monotonic()
                src.write_text(_config(extra="  scrape_timeout: 7s\n", rule_dir=rules))
                await _eventually(lambda: _prom_config(p.url)["global"].get("scrape_timeout") == "7s",
                                  what="changed config applied")
                assert time.monotonic() - t0 < 5
                assert reg.get_sample_value(P + "reloader_config_apply_operations_total") >= 1

                # a new rule file in a watched rule dir is picked up
                (rules / "r.yml").write_text(
                    "groups:\n  - name: g1\n    rules:\n      - record: job:up:sum\n        expr: sum(up)\n")
                await _eventually(lambda: [g["name"] for g in _get_json(p.url + "/api/v1/rules")["groups"]] == ["g1"],
                                  what="rule file loaded")

                # gzipped input (detected by its magic bytes)
                gz = _config(pod="$(POD_NAME)-gz", rule_dir=rules).encode()
                src.write_bytes(gzip.compress(gz))
                await _eventually(lambda: _prom_config(p.url)["global"]["external_labels"]["pod"] == "pod-a-gz",
                                  what="gzipped config applied")

                # an unset variable: reported (metric, log), nothing written, Prometheus keeps its config
                before = out.read_bytes()
                fails = reg.get_sample_value(P + "reloader_config_apply_operations_failed_total")
                src.write_text(_config(pod="$(UNSET_VARIABLE_X)", rule_dir=rules))
                await _eventually(lambda: reg.get_sample_value(
                    P + "reloader_config_environment_variable_expansion_errors") == 1, what="expansion error")
                assert reg.get_sample_value(P + "reloader_config_apply_operations_failed_total") == fails + 1
                assert isinstance(rl.last_error, EnvExpansionError) and "UNSET_VARIABLE_X" in str(rl.last_error)
                assert out.read_bytes() == before and not out.with_name(out.name + ".tmp").exists()
                assert _prom_config(p.url)["global"]["external_labels"]["pod"] == "pod-a-gz"
                # not retried in a hot loop: the file did not change again, so further polls apply nothing
                polls = rl.polls
                await _eventually(lambda: rl.polls >= polls + 3, what="three more polls of the unchanged file")
                assert reg.get_sample_value(P + "reloader_config_apply_operations_failed_total") == fails + 1

                # fixed again (the variable is set and the file touched: the next change is applied)
                env["UNSET_VARIABLE_X"] = "back"
                src.write_text(_config(pod="$(UNSET_VARIABLE_X)", rule_dir=rules) + "# fixed\n")
                await _eventually(lambda: _prom_config(p.url)["global"]["external_labels"]["pod"] == "back",
                                  what="recovered")
                assert reg.get_sample_value(P + "reloader_reloads_failed_total") == 0
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    asyncio.run(main())


def test_initial_unset_variable_is_fatal_and_writes_nothing(tmp_path):
    src = tmp_path / "in.yml"
    out = tmp_path / "out.yml"
    src.write_text("a: $(NOT_SET_ANYWHERE)\n")
    calls = []

    async def reload():
        calls.append(1)

    async def main():
        rl = Reloader(reload, config_file=str(src), config_envsubst_file=str(out), environ={})
        with pytest.raises(EnvExpansionError, match=f'{src}: .*"NOT_SET_ANYWHERE"'):
            await asyncio.wait_for(rl.run(), 5)

    asyncio.run(main())
    assert not out.exists() and calls == []


def test_reload_retries_with_backoff_until_success(tmp_path):
    src = tmp_path / "in.yml"
    src.write_text("x: 1\n")
    statuses = [500, 503, 500, 200]
    seen = []

    async def handler(request):
        seen.append(time.monotonic())
        return web.Response(status=statuses[min(len(seen) - 1, len(statuses) - 1)], text="nope")

    async def main():
        app = web.Application()
        app.router.add_post("/-/reload", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        reg = CollectorRegistry()
        try:
            async with PromClient(f"http://127.0.0.1:{port}") as prom:
                rl = Reloader(prom.reload, config_file=str(src), registry=reg, retry_interval=0.4, retry_initial=0.1)
                assert await rl.apply() is True
                assert len(seen) == 4
                gaps = [b - a for a, b in zip(seen, seen[1:])]
                assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.35  # 0.1, 0.2, 0.4 (capped)
                assert reg.get_sample_value(P + "reloader_reloads_total") == 4
                assert reg.get_sample_value(P + "reloader_reloads_failed_total") == 3
                assert reg.get_sample_value(P + "reloader_last_reload_successful") == 1
                assert await rl.apply() is False  # nothing changed: no reload

                # a reload that keeps failing gives up at the deadline and is forced next time
                statuses[:] = [500]
                seen.clear()
                src.write_text("x: 2\n")
                assert await rl.apply(deadline=time.monotonic() + 0.5) is False
                assert "--web.enable-lifecycle" in str(rl.last_error) and "HTTP 500" in str(rl.last_error)
                assert reg.get_sample_value(P + "reloader_last_reload_successful") == 0
                statuses[:] = [200]
                assert await rl.apply() is True  # forced although the file did not change since
        finally:
            await runner.cleanup()

    asyncio.run(main())
