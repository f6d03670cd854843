"""The sidecar's Prometheus HTTP client against a real Prometheus 2.42 on pre-generated blocks."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peers import free_port
from pythanos.sidecar.promclient import (
    MIN_INT64,
    PromClient,
    PromClientError,
    format_timestamp,
    matchers_to_selector,
    parse_lowest_timestamp,
)
from pythanos.tsdb.labels import Matcher
from pythanos.tsdb.meta import read_meta

PROM_CONFIG = """\
global:
  scrape_interval: 15s
  external_labels:
    cluster: eu1
    replica: "0"
"""


def bench_blocks(out: Path, profile: str = "continuous-30d-tiny", max_time: str = "2h") -> list:
    """Blocks from our bench-blocks tool (thanosbench profiles), metas sorted by minTime."""
    subprocess.run([sys.executable, "-m", "pythanos.cli", "tools", "bench-blocks", "--profile", profile,
                    "--max-time", max_time, f"--output.dir={out}", "--log.level=warn"], check=True)
    return sorted((read_meta(d) for d in out.iterdir() if d.is_dir()), key=lambda m: m.min_time)


def run(coro):
    return asyncio.run(coro)


def test_pure_helpers():
    assert format_timestamp(1_700_000_000_123) == "1700000000.123"
    assert format_timestamp(1_700_000_000_000) == "1700000000"
    assert format_timestamp(-1500) == "-1.500"
    assert matchers_to_selector([Matcher.eq("a", 'x"y'), Matcher.re("b", "c.*")]) == '{a="x\\"y",b=~"c.*"}'
    text = ("# HELP prometheus_tsdb_lowest_timestamp_seconds x\n"
            "# TYPE prometheus_tsdb_lowest_timestamp_seconds gauge\n"
            "prometheus_tsdb_lowest_timestamp_seconds_other 5\n"
            "prometheus_tsdb_lowest_timestamp_seconds 1.7e+09\n")
    assert parse_lowest_timestamp(text) == 1_700_000_000_000
    assert parse_lowest_timestamp("prometheus_tsdb_lowest_timestamp_seconds 9.223372036854776e+15\n") == MIN_INT64
    with pytest.raises(ValueError, match="did not contain"):
        parse_lowest_timestamp("up 1\n")


def test_promclient_real_prometheus(prometheus_factory, tmp_path):
    tsdb = tmp_path / "tsdb"
    tsdb.mkdir()
    metas = bench_blocks(tsdb)
    p = prometheus_factory(tsdb_path=tsdb, config_yaml=PROM_CONFIG,
                           extra_args=["--storage.tsdb.retention.time=1y",
                                       "--storage.tsdb.min-block-duration=2h",
                                       "--storage.tsdb.max-block-duration=2h"])

    async def main():
        async with PromClient(p.url) as c:
            assert await c.ready() and await c.healthy()
            assert await c.external_labels() == {"cluster": "eu1", "replica": "0"}
            bi = await c.build_info()
            assert bi["version"].startswith("2.42") and await c.version() == bi["version"]
            flags = await c.flags()
            assert flags["storage.tsdb.min-block-duration"] == "2h" == flags["storage.tsdb.max-block-duration"]
            # min time: the oldest block's minTime, as Thanos reads it from /metrics
            assert await c.lowest_timestamp() == metas[0].min_time

            first, last = metas[0], metas[-1]
            assert await c.label_names() == ["__blockgen_target__", "__name__"]
            assert await c.label_names([Matcher.eq("__name__", "continuous_app_metric0")],
                                       first.min_time, last.max_time) == ["__blockgen_target__", "__name__"]
            vals = await c.label_values("__name__", [Matcher.eq("__blockgen_target__", "1")])
            assert vals == [f"continuous_app_metric{i}" for i in range(5)]
            assert await c.label_values("__name__", [Matcher.re("__name__", ".*[34]")]) == [
                "continuous_app_metric3", "continuous_app_metric4"]
            assert await c.label_values("__name__", [Matcher.eq("__blockgen_target__", "1"),
                                                     Matcher.nre("__name__", ".*[34]"),
                                                     Matcher.ne("__name__", "continuous_app_metric0")]) == [
                "continuous_app_metric1", "continuous_app_metric2"]
            # a time range before every block has no labels
            assert await c.label_names([], first.min_time - 10 * 86400_000, first.min_time - 86400_000) == []
            assert await c.label_values("nope") == []
            series = await c.series([Matcher.eq("__name__", "continuous_app_metric2")])
            assert series == [{"__name__": "continuous_app_metric2", "__blockgen_target__": "1"}]
            # a selector Prometheus rejects: its bad_data error, with the URL
            with pytest.raises(PromClientError, match=r"HTTP 400: bad_data: .*non-empty matcher") as ei:
                await c.label_values("__name__", [Matcher.eq("a", "")])
            assert p.url in str(ei.value) and ei.value.status == 400
            # no --web.enable-lifecycle: reload fails with Thanos' hint
            with pytest.raises(PromClientError, match="--web.enable-lifecycle") as ei:
                await c.reload()
            assert ei.value.status == 403

    run(main())


def test_promclient_fresh_and_unreachable(prometheus_factory):
    p = prometheus_factory(config_yaml="global:\n  scrape_interval: 15s\n", extra_args=["--web.enable-lifecycle"])

    async def main():
        async with PromClient(p.url) as c:
            # no external labels, no block yet: MinInt64 (Thanos' LowestTimestamp)
            assert await c.external_labels() == {}
            assert await c.lowest_timestamp() == MIN_INT64
            await c.reload()  # lifecycle enabled: 200

        url = f"http://127.0.0.1:{free_port()}"  # leased to this test: nothing listens there
        t0 = time.monotonic()
        async with PromClient(url, timeout=2) as c:
            assert not await c.ready()
            with pytest.raises(PromClientError) as ei:
                await c.external_labels()
            assert f"{url}/api/v1/status/config" in str(ei.value) and ei.value.status == 0
        assert time.monotonic() - t0 < 4

    run(main())
