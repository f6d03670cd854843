"""The cache library (components/pythanos/cache) against real memcached and Redis servers.

No timed assertions and no sleeps as synchronisation: writes are awaited with ``flush()``, and a
server coming back is waited for by polling a real round trip until a deadline.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
from prometheus_client import CollectorRegistry

from peers import REGISTRY, free_port, start_cache_server

from pythanos.cache import (DEFAULT_TTL, INDEX_CACHE_ITEMS, InMemoryCache, MemcachedCache, MemcachedConfig,
                            RedisCache, RedisConfig, build_cache, cache_from_config, format_size, jump_hash,
                            memcached_key, parse_cache_config, parse_size, pick_server)
from pythanos.cache.memcached import natsort_key
from pythanos.errors import ConfigError, UserError

MiB = 1024 * 1024
WHERE = "--index-cache.config"


def run(coro):
    return asyncio.run(coro)


def metric(reg: CollectorRegistry, metric_name: str, **labels) -> float:
    v = reg.get_sample_value(metric_name, labels)
    return 0.0 if v is None else v


async def eventually(check, what: str, deadline_s: float = 90.0):
    """Poll ``check()`` (async, truthy when done) until it holds; fail after the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > end:
            pytest.fail(f"not reached within {deadline_s}s: {what}")
        await asyncio.sleep(0.05)


BINARY = bytes(range(256)) + b"\r\nEND\r\n" + b"\x00" * 10


# --- sizes, keys, server selection --------------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("250MiB", 250 * MiB), ("125MiB", 125 * MiB), ("1GB", 1024 ** 3), ("1GiB", 1024 ** 3), ("512KiB", 512 * 1024),
    ("512KB", 512 * 1024), ("1MiB512KiB", MiB + 512 * 1024), ("1.5MiB", int(1.5 * MiB)), ("100B", 100),
    ("1024", 1024), (4096, 4096), ("0", 0),
])
def test_parse_size_like_thanos_model_bytes(text, want):
    assert parse_size(text, "f") == want


@pytest.mark.parametrize("text", ["1kB", "12XB", "MiB", "", "-1MiB", "1 MiB", True])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError, match=r"^f: "):
        parse_size(text, "f")


def test_format_size():
    assert format_size(250 * MiB) == "250MiB"
    assert format_size(1000) == "1000B"


def test_jump_hash_server_selection_matches_thanos():
    # pkg/cacheutil/memcached_server_selector_test.go TestMemcachedJumpHashSelector_PickServer
    servers = ["127.0.0.1:11211", "127.0.0.2:11211"]
    assert pick_server(servers, "test-1") == "127.0.0.1:11211"
    assert pick_server(servers, "test-2") == "127.0.0.2:11211"
    assert pick_server(["only:1"], "anything") == "only:1"
    # jump hash: growing from n to n+1 buckets moves only keys into the new bucket
    for key in range(2000):
        a, b = jump_hash(key * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF, 7), jump_hash(key * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF, 8)
        assert a == b or b == 7
    # Thanos' TestNatSort
    names = ["memcached-10.memcached.thanos.svc.cluster.local.", "memcached-1.memcached.thanos.svc.cluster.local.",
             "memcached-6.memcached.thanos.svc.cluster.local.", "memcached-3.memcached.thanos.svc.cluster.local.",
             "memcached-25.memcached.thanos.svc.cluster.local."]
    assert [n.split(".")[0] for n in sorted(names, key=natsort_key)] == [
        "memcached-1", "memcached-3", "memcached-6", "memcached-10", "memcached-25"]


def test_jump_hash_spreads_keys_evenly():
    servers = [f"10.0.0.{i}:11211" for i in range(1, 4)]
    counts = {s: 0 for s in servers}
    for i in range(30000):
        counts[pick_server(servers, f"P:01HXYZ:{i}")] += 1
    assert all(8000 < c < 12000 for c in counts.values()), counts


def test_memcached_keys_are_made_valid_deterministically():
    ok = "P:01HV8Y7Z3N2M4K5J6H7G8F9E0D:" + "a" * 40
    assert memcached_key(ok) == ok
    for bad in ["x" * 251, "with space", "tab\tkey", "ctl\x01", "ünïcode", ""]:
        k = memcached_key(bad)
        assert k == memcached_key(bad) and k != bad and len(k) <= 250 and k.isascii() and " " not in k
    assert memcached_key("x" * 251) != memcached_key("x" * 252)
    assert memcached_key("x" * 250) == "x" * 250


# --- configuration ------------------------------------------------------------------------------

def test_config_in_memory_defaults_and_case_insensitive_type():
    cfg = parse_cache_config("type: in-memory\n", WHERE, 250 * MiB)
    assert cfg.type == "IN-MEMORY"
    assert cfg.config.max_size == 250 * MiB and cfg.config.max_item_size == 125 * MiB
    assert cfg.ttl == DEFAULT_TTL == 24 * 3600 and cfg.enabled_items == ()
    cfg = parse_cache_config("type: IN-MEMORY\nconfig:\n  max_size: 1GB\n  max_item_size: 10MiB\n"
                             "enabled_items: [Postings, Series]\nttl: 5m\n", WHERE, 250 * MiB,
                             valid_items=INDEX_CACHE_ITEMS)
    assert cfg.config.max_size == 1024 ** 3 and cfg.config.max_item_size == 10 * MiB
    assert cfg.enabled_items == ("Postings", "Series") and cfg.ttl == 300
    # a smaller default size brings the default item size down with it
    assert parse_cache_config("type: IN-MEMORY", WHERE, 64 * MiB).config.max_item_size == 64 * MiB
    c = build_cache(cfg)
    assert isinstance(c.backend, InMemoryCache) and c.enabled("Postings") and not c.enabled("ExpandedPostings")
    assert build_cache(parse_cache_config("type: IN-MEMORY", WHERE, MiB)).enabled("anything")


def test_config_memcached_defaults_are_thanos():
    cfg = parse_cache_config("type: memcached\nconfig:\n  addresses: [a:11211, 'dns+memcached.svc:11211']\n",
                             WHERE, 250 * MiB)
    assert cfg.config == MemcachedConfig(addresses=("a:11211", "dns+memcached.svc:11211"))
    c = cfg.config
    assert (c.timeout, c.max_idle_connections, c.max_async_concurrency, c.max_async_buffer_size,
            c.max_get_multi_concurrency, c.max_get_multi_batch_size, c.max_item_size,
            c.dns_provider_update_interval, c.auto_discovery) == (0.5, 100, 20, 10000, 100, 0, MiB, 10.0, False)
    full = parse_cache_config("""
type: MEMCACHED
config:
  addresses: ["127.0.0.1:1"]
  timeout: 1s500ms
  max_idle_connections: 7
  max_async_concurrency: 3
  max_async_buffer_size: 9
  max_get_multi_concurrency: 0
  max_get_multi_batch_size: 64
  max_item_size: 16MiB
  dns_provider_update_interval: 30s
  auto_discovery: false
  set_async_circuit_breaker_config: {enabled: true, open_duration: 10s}
ttl: 12h
""", WHERE, 0)
    f = full.config
    assert (f.timeout, f.max_idle_connections, f.max_async_concurrency, f.max_async_buffer_size,
            f.max_get_multi_concurrency, f.max_get_multi_batch_size, f.max_item_size,
            f.dns_provider_update_interval) == (1.5, 7, 3, 9, 0, 64, 16 * MiB, 30.0)
    assert f.set_async_circuit_breaker_config.enabled and f.set_async_circuit_breaker_config.open_duration == 10
    assert full.ttl == 12 * 3600


def test_config_redis_defaults_are_thanos():
    c = parse_cache_config("type: REDIS\nconfig:\n  addr: localhost:6379\n", WHERE, 0).config
    assert isinstance(c, RedisConfig)
    assert (c.dial_timeout, c.read_timeout, c.write_timeout, c.pool_size, c.max_get_multi_concurrency,
            c.get_multi_batch_size, c.max_set_multi_concurrency, c.set_multi_batch_size, c.tls_enabled,
            c.max_async_buffer_size, c.max_async_concurrency, c.db) == (5, 3, 3, 100, 100, 100, 100, 100, False,
                                                                       10000, 20, 0)
    c = parse_cache_config("""
type: redis
config:
  addr: r:6380
  username: u
  password: p
  db: 2
  min_idle_conns: 5
  idle_timeout: 10m
  max_conn_age: 1h
  cache_size: 0
  master_name: ""
  tls_enabled: true
  tls_config: {ca_file: /ca.pem, insecure_skip_verify: true, min_version: "1.2"}
""", WHERE, 0).config
    assert (c.username, c.password, c.db, c.min_idle_conns, c.idle_timeout, c.max_conn_age) == ("u", "p", 2, 5, 600, 3600)
    assert c.tls_config.ca_file == "/ca.pem" and c.tls_config.min_version == "1.2"


@pytest.mark.parametrize("text,field", [
    ("type: FILESYSTEM\n", "type"),
    ("config: {}\n", "type"),
    ("type: IN-MEMORY\nconfg: {}\n", "confg"),
    ("type: IN-MEMORY\nconfig:\n  max_sise: 1GB\n", "config.max_sise"),
    ("type: IN-MEMORY\nconfig:\n  max_size: 1 gigabyte\n", "config.max_size"),
    ("type: IN-MEMORY\nconfig:\n  max_size: 1MiB\n  max_item_size: 2MiB\n", "config.max_item_size"),
    ("type: IN-MEMORY\nconfig: [1, 2]\n", "config"),
    ("type: IN-MEMORY\nttl: forever\n", "ttl"),
    ("type: IN-MEMORY\nenabled_items: [Postings, Chunks]\n", "enabled_items"),
    ("type: IN-MEMORY\nenabled_items: Postings\n", "enabled_items"),
    ("type: MEMCACHED\nconfig: {}\n", "config.addresses"),
    ("type: MEMCACHED\nconfig:\n  addresses: [nohost]\n", "config.addresses"),
    ("type: MEMCACHED\nconfig:\n  addresses: ['dnssrv+_memcache._tcp.svc']\n", "config.addresses"),
    ("type: MEMCACHED\nconfig:\n  addresses: [a:1]\n  auto_discovery: true\n", "config.auto_discovery"),
    ("type: MEMCACHED\nconfig:\n  addresses: [a:1]\n  timeout: 5 parsecs\n", "config.timeout"),
    ("type: MEMCACHED\nconfig:\n  addresses: [a:1]\n  max_idle_connections: many\n", "config.max_idle_connections"),
    ("type: MEMCACHED\nconfig:\n  addresses: [a:1]\n  max_async_concurrency: 0\n", "config.max_async_concurrency"),
    ("type: MEMCACHED\nconfig:\n  addresses: [a:1]\n  dns_provider_update_interval: 0s\n",
     "config.dns_provider_update_interval"),
    ("type: MEMCACHED\nconfig:\n  addresses: [a:1]\n  auto_discovery: maybe\n", "config.auto_discovery"),
    ("type: MEMCACHED\nconfig:\n  addresses: [a:1]\n  set_async_circuit_breaker_config: {enabled: true, "
     "failure_percent: 2}\n", "config.set_async_circuit_breaker_config.failure_percent"),
    ("type: MEMCACHED\nconfig:\n  addresses: [a:1]\n  set_async_circuit_breaker_config: {bogus: 1}\n",
     "config.set_async_circuit_breaker_config.bogus"),
    ("type: REDIS\nconfig: {}\n", "config.addr"),
    ("type: REDIS\nconfig:\n  addr: r:1\n  pasword: x\n", "config.pasword"),
    ("type: REDIS\nconfig:\n  addr: r:1\n  tls_enabled: true\n  tls_config: {cert_file: c.pem}\n", "config.tls_config"),
    ("type: REDIS\nconfig:\n  addr: r:1\n  tls_config: {min_version: '1.2', sni: x}\n", "config.tls_config.sni"),
    ("type: REDIS\nconfig:\n  addr: r:1\n  tls_enabled: true\n  tls_config: {min_version: '2.0'}\n",
     "config.tls_config.min_version"),
    ("type: [IN-MEMORY]\n", "type"),
    ("type: IN-MEMORY\n  bad: indentation\n", "invalid YAML"),
])
def test_config_errors_name_where_and_field(text, field):
    with pytest.raises(UserError) as e:
        cache_from_config(text, WHERE, 250 * MiB, valid_items=INDEX_CACHE_ITEMS)
    msg = str(e.value)
    assert msg.startswith(WHERE + ": ") and field in msg, msg
    assert isinstance(e.value, ConfigError)


def test_redis_password_never_in_repr_or_logs(caplog):
    secret = "s3cr3t-Pa55"
    port = free_port()  # nothing listens: every operation fails and is logged
    text = f"type: REDIS\nconfig:\n  addr: 127.0.0.1:{port}\n  password: {secret}\n  dial_timeout: 1s\n"
    cfg = parse_cache_config(text, WHERE, 0)
    configured = build_cache(cfg)
    for s in (repr(cfg), str(cfg), repr(cfg.config), repr(configured), str(configured.backend)):
        assert secret not in s, s
    assert "password=<secret>" in repr(cfg.config)   # set, and shown as such

    async def go():
        with caplog.at_level(logging.DEBUG, logger="pythanos.cache"):
            assert await configured.backend.get_multi(["a", "b"]) == {}
            await configured.backend.set_multi({"a": b"1"}, 60)
            await configured.backend.flush()
            await configured.close()
    run(go())
    assert caplog.records, "expected the failures to be logged"
    for r in caplog.records:
        assert secret not in r.getMessage() and secret not in repr(r.__dict__)
    assert configured.backend.failures


# --- in-memory ------------------------------------------------------------------------------------

def test_in_memory_round_trip_and_misses():
    reg = CollectorRegistry()

    async def go():
        c = InMemoryCache(MiB, MiB, name="t", registry=reg)
        assert await c.get_multi([]) == {}
        await c.set_multi({"a": b"1", "b": BINARY, "e": b""}, 0)
        assert await c.get_multi(["a", "b", "e", "missing"]) == {"a": b"1", "b": BINARY, "e": b""}
        await c.set_multi({"a": b"22"}, 0)  # replaced, size follows
        assert (await c.get_multi(["a"]))["a"] == b"22"
        assert c.size_bytes == (1 + 2) + (1 + len(BINARY)) + 1
        await c.close()
    run(go())
    assert metric(reg, "thanos_cache_inmemory_requests_total", name="t") == 5
    assert metric(reg, "thanos_cache_inmemory_hits_total", name="t") == 4
    assert metric(reg, "thanos_cache_inmemory_max_size_bytes", name="t") == MiB


def test_in_memory_lru_eviction_by_bytes_of_keys_and_values():
    reg = CollectorRegistry()
    c = InMemoryCache(100, 50, name="lru", registry=reg)

    async def go():
        # each entry: 2-byte key + 18-byte value = 20 bytes; five fit
        await c.set_multi({f"k{i}": bytes([i]) * 18 for i in range(5)}, 0)
        assert c.size_bytes == 100 and len(c) == 5
        await c.get_multi(["k0"])  # k0 becomes most recently used
        await c.set_multi({"k5": b"x" * 18}, 0)  # evicts k1, the least recently used
        got = await c.get_multi([f"k{i}" for i in range(6)])
        assert sorted(got) == ["k0", "k2", "k3", "k4", "k5"]
        await c.set_multi({"big": b"y" * 45}, 0)  # 48 bytes: evicts three of 20
        assert c.size_bytes <= 100
        assert sorted(await c.get_multi(["k0", "k2", "k3", "k4", "k5", "big"])) == ["big", "k4", "k5"]
    run(go())
    assert c.evicted == 4
    assert metric(reg, "thanos_cache_inmemory_items_evicted_total", name="lru") == 4
    assert metric(reg, "thanos_cache_inmemory_total_size_bytes", name="lru") == c.size_bytes


def test_in_memory_skips_items_above_max_item_size():
    reg = CollectorRegistry()
    c = InMemoryCache(1000, 100, name="big", registry=reg)

    async def go():
        await c.set_multi({"small": b"s" * 10, "huge": b"h" * 200, "edge": b"e" * 96}, 0)
        assert sorted(await c.get_multi(["small", "huge", "edge"])) == ["edge", "small"]
    run(go())
    assert c.overflowed == 1 and metric(reg, "thanos_cache_inmemory_items_overflowed_total", name="big") == 1
    with pytest.raises(ValueError, match="cannot be bigger"):
        InMemoryCache(10, 20)


def test_in_memory_ttl_with_a_clock():
    now = [1000.0]
    c = InMemoryCache(MiB, MiB, clock=lambda: now[0])

    async def go():
        await c.set_multi({"short": b"1"}, 10)
        await c.set_multi({"forever": b"2"}, 0)
        now[0] += 9.5
        assert sorted(await c.get_multi(["short", "forever"])) == ["forever", "short"]
        now[0] += 1
        assert await c.get_multi(["short", "forever"]) == {"forever": b"2"}
        assert len(c) == 1
    run(go())


def test_two_caches_share_a_registry():
    reg = CollectorRegistry()
    a, b = InMemoryCache(MiB, MiB, name="a", registry=reg), InMemoryCache(MiB, MiB, name="b", registry=reg)
    run(a.get_multi(["x"]))
    run(b.get_multi(["x", "y"]))
    assert metric(reg, "thanos_cache_inmemory_requests_total", name="a") == 1
    assert metric(reg, "thanos_cache_inmemory_requests_total", name="b") == 2


# --- memcached ------------------------------------------------------------------------------------

def mc(addresses, **kw) -> MemcachedConfig:
    return MemcachedConfig(addresses=tuple(addresses), **kw)


def test_memcached_round_trip_misses_and_odd_keys(memcached_server):
    reg = CollectorRegistry()

    async def go():
        c = MemcachedCache(mc([memcached_server.address]), name="rt", registry=reg)
        assert await c.get_multi([]) == {}
        items = {"rt:a": b"1", "rt:bin": BINARY, "rt:empty": b"", "rt:" + "long" * 100: b"L",
                 "rt:with space": b"S", "rt:ünï": b"U"}
        await c.set_multi(items, 3600)
        await c.flush()
        got = await c.get_multi(list(items) + ["rt:missing", "rt:a"])
        assert got == items
        await c.close()
        assert await c.get_multi(["rt:a"]) == {}  # closed: misses, no exception
    run(go())
    assert metric(reg, "thanos_cache_memcached_requests_total", name="rt") == 9
    assert metric(reg, "thanos_cache_memcached_hits_total", name="rt") == 6
    assert metric(reg, "thanos_memcached_operations_total", name="rt", operation="set") == 6
    assert metric(reg, "thanos_memcached_operation_failures_total", name="rt", operation="getmulti",
                  reason="timeout") == 0


def test_memcached_many_keys_in_batches(memcached_server):
    reg = CollectorRegistry()

    async def go():
        c = MemcachedCache(mc([memcached_server.address], max_get_multi_batch_size=100, max_get_multi_concurrency=4,
                              max_async_concurrency=8), name="batch", registry=reg)
        items = {f"batch:S:01HV:{i}": i.to_bytes(4, "big") * (i % 50 + 1) for i in range(2500)}
        await c.set_multi(items, 600)
        await c.flush()
        keys = list(items) + [f"batch:miss:{i}" for i in range(500)]
        got = await c.get_multi(keys)
        assert got == items
        await c.close()
    run(go())
    assert metric(reg, "thanos_memcached_operations_total", name="batch", operation="getmulti") == 30  # 3000 / 100


def test_memcached_skips_items_above_max_item_size(memcached_server):
    reg = CollectorRegistry()

    async def go():
        c = MemcachedCache(mc([memcached_server.address], max_item_size=1024), name="max", registry=reg)
        await c.set_multi({"max:ok": b"o" * 1024, "max:big": b"b" * 1025}, 60)
        await c.flush()
        assert sorted(await c.get_multi(["max:ok", "max:big"])) == ["max:ok"]
        await c.close()
        # max_item_size 0: no limit on our side; the server's -I (4 MiB) still refuses bigger ones
        c = MemcachedCache(mc([memcached_server.address], max_item_size=0), name="nolimit", registry=reg)
        await c.set_multi({"max:2m": b"2" * (2 * MiB), "max:5m": b"5" * (5 * MiB)}, 60)
        await c.flush()
        assert sorted(await c.get_multi(["max:2m", "max:5m"])) == ["max:2m"]
        assert c.failures == {("set", "server-error"): 1}
        await c.close()
    run(go())
    assert metric(reg, "thanos_memcached_operation_skipped_total", name="max", operation="set",
                  reason="max-item-size") == 1


def test_memcached_async_buffer_full_skips(memcached_server):
    async def go():
        c = MemcachedCache(mc([memcached_server.address], max_async_buffer_size=10, max_async_concurrency=1), name="buf")
        await c.set_multi({f"buf:{i}": b"v" for i in range(25)}, 60)  # no await in between: 10 queued
        assert c.skipped[("set", "async-buffer-full")] == 15
        await c.flush()
        assert len(await c.get_multi([f"buf:{i}" for i in range(25)])) == 10
        await c.close()
    run(go())


def test_memcached_keys_spread_over_servers_like_thanos(memcached_server, tmp_path):
    second = start_cache_server("memcached", memcached_server.args[0], tmp_path, REGISTRY)
    try:
        servers = [memcached_server.address, second.address]

        async def go():
            c = MemcachedCache(mc(servers), name="spread")
            assert c.servers == sorted(servers, key=natsort_key)
            items = {f"spread:P:{i}": str(i).encode() for i in range(400)}
            await c.set_multi(items, 600)
            await c.flush()
            assert await c.get_multi(list(items)) == items
            await c.close()
            # each key is on the server Thanos' selector picks, and only there
            singles = {s: MemcachedCache(mc([s]), name=f"single-{s}") for s in servers}
            on = {s: set(await singles[s].get_multi(list(items))) for s in servers}
            for s in servers:
                await singles[s].close()
            for k in items:
                assert k in on[pick_server(c.servers, k)]
                assert sum(k in on[s] for s in servers) == 1
            assert all(len(v) > 100 for v in on.values())
        run(go())
    finally:
        second.stop()


def test_memcached_down_gives_misses_and_recovers(memcached_server, tmp_path):
    server = start_cache_server("memcached", memcached_server.args[0], tmp_path, REGISTRY)
    reg = CollectorRegistry()
    try:
        async def go():
            c = MemcachedCache(mc([server.address], timeout=0.5, dns_provider_update_interval=0.2),
                               name="down", registry=reg)
            await c.set_multi({"down:a": b"1"}, 600)
            await c.flush()
            assert await c.get_multi(["down:a"]) == {"down:a": b"1"}

            await asyncio.to_thread(server.stop)
            assert await c.get_multi(["down:a", "down:b"]) == {}
            await c.set_multi({"down:c": b"3"}, 600)  # does not raise
            await c.flush()
            assert c.failures.get(("getmulti", "timeout"), 0) + c.failures.get(("getmulti", "network-error"), 0) >= 1
            assert sum(n for (op, _), n in c.failures.items() if op == "set") >= 1

            await asyncio.to_thread(server.start)

            async def round_trip():
                await c.set_multi({"down:back": b"yes"}, 600)
                await c.flush()
                return await c.get_multi(["down:back"]) == {"down:back": b"yes"}
            await eventually(round_trip, "memcached used again after it came back")
            await c.close()
        run(go())
        assert metric(reg, "thanos_memcached_operation_failures_total", name="down", operation="getmulti",
                      reason="timeout") + metric(reg, "thanos_memcached_operation_failures_total", name="down",
                                                 operation="getmulti", reason="network-error") >= 1
    finally:
        server.stop()


def test_memcached_nothing_listening_gives_misses():
    async def go():
        c = MemcachedCache(mc([f"127.0.0.1:{free_port()}"], timeout=0.2), name="none")
        assert await c.get_multi(["a", "b"]) == {}
        await c.set_multi({"a": b"1"}, 60)
        await c.flush()
        await c.close()
        assert c.failures
    run(go())


def test_memcached_close_runs_queued_writes(memcached_server):
    async def go():
        c = MemcachedCache(mc([memcached_server.address]), name="close")
        await c.set_multi({f"close:{i}": b"v" for i in range(50)}, 600)
        await c.close()  # no flush: close finishes the queue
        d = MemcachedCache(mc([memcached_server.address]), name="close2")
        assert len(await d.get_multi([f"close:{i}" for i in range(50)])) == 50
        await d.close()
    run(go())


def test_memcached_from_config_text(memcached_server):
    async def go():
        c = cache_from_config(f"type: Memcached\nconfig:\n  addresses: ['{memcached_server.address}']\n"
                              "  max_item_size: 2MiB\nttl: 1h\n", WHERE, 250 * MiB, registry=CollectorRegistry())
        assert isinstance(c.backend, MemcachedCache) and c.ttl == 3600
        await c.backend.set_multi({"cfg:k": b"v"}, c.ttl)
        await c.backend.flush()
        assert await c.backend.get_multi(["cfg:k"]) == {"cfg:k": b"v"}
        await c.close()
    run(go())


def test_memcached_dns_address(memcached_server):
    async def go():
        c = MemcachedCache(mc([f"dns+localhost:{memcached_server.port}"]), name="dns")
        await c.set_multi({"dns:k": b"v"}, 60)
        await c.flush()
        assert "127.0.0.1:%d" % memcached_server.port in c.servers
        assert await c.get_multi(["dns:k"]) == {"dns:k": b"v"}
        await c.close()
    if not any(ai[4][0] == "127.0.0.1" for ai in socket.getaddrinfo("localhost", 1)):
        pytest.skip("localhost does not resolve to 127.0.0.1 here")
    run(go())


# --- redis ----------------------------------------------------------------------------------------

def rc(server, **kw) -> RedisConfig:
    return RedisConfig(addr=server.address, **kw)


def raw_redis(server, db: int = 0):
    import redis

    return redis.Redis(host="127.0.0.1", port=server.port, db=db)


def test_redis_round_trip_misses_prefix_and_ttl(redis_server):
    reg = CollectorRegistry()

    async def go():
        c = RedisCache(rc(redis_server, prefix="pfx:"), name="rt", registry=reg)
        assert await c.get_multi([]) == {}
        items = {"a": b"1", "bin": BINARY, "empty": b"", "with space": b"S", "ünï": b"U", "x" * 400: b"L"}
        await c.set_multi(items, 100)
        await c.set_multi({"forever": b"F"}, 0)
        await c.flush()
        got = await c.get_multi(list(items) + ["missing", "forever", "a"])
        assert got == {**items, "forever": b"F"}
        await c.close()
    run(go())
    r = raw_redis(redis_server)
    assert r.get("pfx:a") == b"1" and r.get("a") is None
    assert 0 < r.ttl("pfx:a") <= 100
    assert r.ttl("pfx:forever") == -1
    assert metric(reg, "thanos_cache_redis_requests_total", name="rt") == 9
    assert metric(reg, "thanos_cache_redis_hits_total", name="rt") == 7
    assert metric(reg, "thanos_redis_operation_duration_seconds_count", name="rt", operation="getmulti") == 1


def test_redis_many_keys_in_batches_and_db(redis_server):
    async def go():
        c = RedisCache(rc(redis_server, db=3, get_multi_batch_size=64, set_multi_batch_size=50,
                          max_get_multi_concurrency=3), name="batch")
        items = {f"batch:S:{i}": i.to_bytes(4, "big") * (i % 40 + 1) for i in range(3000)}
        await c.set_multi(items, 600)
        await c.flush()
        got = await c.get_multi(list(items) + [f"batch:miss:{i}" for i in range(300)])
        assert got == items
        await c.close()
    run(go())
    assert raw_redis(redis_server, db=3).exists("batch:S:7") == 1
    assert raw_redis(redis_server, db=0).exists("batch:S:7") == 0


def test_redis_username_and_password(redis_server):
    raw = raw_redis(redis_server)
    raw.execute_command("ACL", "SETUSER", "cacheuser", "on", ">right-password", "~*", "+@all")
    try:
        async def go():
            ok = RedisCache(rc(redis_server, username="cacheuser", password="right-password"), name="auth")
            await ok.set_multi({"auth:k": b"v"}, 60)
            await ok.flush()
            assert await ok.get_multi(["auth:k"]) == {"auth:k": b"v"}
            await ok.close()
            bad = RedisCache(rc(redis_server, username="cacheuser", password="wrong-password"), name="auth-bad")
            assert await bad.get_multi(["auth:k"]) == {}
            await bad.close()
            assert bad.failures
        run(go())
    finally:
        raw.execute_command("ACL", "DELUSER", "cacheuser")


def test_redis_down_gives_misses_and_recovers(redis_server, tmp_path):
    server = start_cache_server("redis-server", redis_server.args[0], tmp_path, REGISTRY)
    try:
        async def go():
            c = RedisCache(rc(server, dial_timeout=1, read_timeout=1), name="down")
            await c.set_multi({"down:a": b"1"}, 600)
            await c.flush()
            assert await c.get_multi(["down:a"]) == {"down:a": b"1"}

            await asyncio.to_thread(server.stop)
            assert await c.get_multi(["down:a", "down:b"]) == {}
            await c.set_multi({"down:c": b"3"}, 600)  # does not raise
            await c.flush()
            assert any(op == "getmulti" for op, _ in c.failures) and any(op == "setmulti" for op, _ in c.failures)

            await asyncio.to_thread(server.start)

            async def round_trip():
                await c.set_multi({"down:back": b"yes"}, 600)
                await c.flush()
                return await c.get_multi(["down:back"]) == {"down:back": b"yes"}
            await eventually(round_trip, "redis used again after it came back")
            await c.close()
        run(go())
    finally:
        server.stop()


def test_redis_from_config_text(redis_server):
    async def go():
        c = cache_from_config(f"type: redis\nconfig:\n  addr: {redis_server.address}\n  db: 1\n", WHERE, 0)
        assert isinstance(c.backend, RedisCache) and c.ttl == DEFAULT_TTL
        await c.backend.set_multi({"cfg:k": b"v"}, c.ttl)
        await c.backend.flush()
        assert await c.backend.get_multi(["cfg:k"]) == {"cfg:k": b"v"}
        await c.close()
    run(go())
    assert 0 < raw_redis(redis_server, db=1).ttl("cfg:k") <= DEFAULT_TTL
