"""``pythanos query-frontend`` in front of real queriers: a year of the course's data
(``continuous-365d-tiny``) in a FILESYSTEM bucket served by our store, our querier and a real
``thanos query`` over it.

* Range queries split by day answer byte for byte what the querier answers for the whole range.
* The results cache serves what it holds with the querier stopped, and never serves a range it
  does not hold completely (the missing part fails, as the querier is gone: no gap is filled
  with nothing, thanos-io/thanos#5075).
* Downstream 4xx pass through unchanged and are not retried; our parameter errors read as the
  querier's.
* The split and pure pieces (alignment, ``@ start()``, merging) against hand-computed cases.
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from peers import REGISTRY, free_ports, start_thanos_query
from pythanos.frontend.merge import merge_results
from pythanos.frontend.split import align, pin_at_modifiers, split_range

DAY = 86_400_000


# --- pure pieces -----------------------------------------------------------------------------------

def test_split_by_day_asks_every_step_once():
    step = 300_000
    start, end = align(3 * DAY - 7 * step + 11, 6 * DAY + 13 * step + 5, step)
    pieces = split_range(start, end, step, DAY)
    assert pieces[0][0] == start and pieces[-1][1] == end
    asked = [t for a, b in pieces for t in range(a, b + 1, step)]
    assert asked == list(range(start, end + 1, step))
    assert all((b + step) % DAY == 0 for _, b in pieces[:-1])  # cut at midnight UTC
    assert split_range(start, start, step, DAY) == [(start, start)]


def test_split_off_grid_step_keeps_the_grid():
    step = 7 * 60_000
    pieces = split_range(1_000, 3 * DAY, step, DAY)
    asked = [t for a, b in pieces for t in range(a, b + 1, step)]
    assert asked == list(range(1_000, 3 * DAY + 1, step))


def test_at_modifiers_pinned_outside_strings():
    q = 'sum(rate(x{a="@ start()"}[5m] @ start())) + y @end( ) # @ end()'
    assert pin_at_modifiers(q, 1_500, 2_000_000) == \
        'sum(rate(x{a="@ start()"}[5m] @ 1.5)) + y @ 2000 # @ end()'


def test_merge_pieces_in_label_order():
    a = [{"metric": {"b": "2"}, "values": [[1, "1"], [2, "2"]]}, {"metric": {"a": "1"}, "values": [[1, "5"]]}]
    b = [{"metric": {"a": "1"}, "values": [[1, "9"], [3, "6"]]}]
    assert merge_results([a, b]) == [{"metric": {"a": "1"}, "values": [[1, "5"], [3, "6"]]},
                                     {"metric": {"b": "2"}, "values": [[1, "1"], [2, "2"]]}]


def test_snappy_cached_values_are_snappy_blocks():
    import asyncio

    import cramjam

    from pythanos.cache import InMemoryCache
    from pythanos.frontend.resultscache import Piece, ResultsCache

    step = 60_000
    res = [{"metric": {"a": "1"}, "values": [[t / 1000, "1"] for t in range(0, 3_600_000 + 1, step)]}]

    async def fetch(a, b):
        return Piece(a, b, res, [], [])

    async def main():
        mem = InMemoryCache(1 << 20, 1 << 20)
        rc = ResultsCache(mem, 0, 60_000, lambda: 10 * DAY, compression="snappy")
        await rc.get("k", 0, 3_600_000, step, fetch)
        stored = (await mem.get_multi(["k"]))["k"]
        assert not stored.startswith(b"[")
        assert json.loads(bytes(cramjam.snappy.decompress_raw(stored)))[0]["result"] == res

    asyncio.run(main())


# --- against real queriers ---------------------------------------------------------------------------

def _get(url: str, params: dict, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url + "?" + urllib.parse.urlencode(params), headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


IN_MEMORY = "{type: IN-MEMORY, config: {max_size: 64MB}}"


def _metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in r.read().decode().splitlines() if line and not line.startswith("#")}


def start_frontend(pythanos_bin: str, downstream: str, work: Path, *extra: str, cache: str = IN_MEMORY):
    work.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    p = REGISTRY.start("pythanos-query-frontend", [
        pythanos_bin, "query-frontend", f"--http-address=127.0.0.1:{port}",
        f"--query-frontend.downstream-url={downstream}", f"--query-range.response-cache-config={cache}", *extra],
        work)
    p.url = f"http://127.0.0.1:{port}"
    p.wait_http_ready("/-/ready", 60)
    return p


@pytest.fixture(scope="module")
def stack(tmp_path_factory, pythanos_bin, thanos_bin):
    from test_rules_api import start_our_query
    from test_store import fs_yaml, start_store

    work = tmp_path_factory.mktemp("frontend")
    bucket = work / "bucket"
    subprocess.run([pythanos_bin, "tools", "bench-blocks", "--profile", "continuous-365d-tiny", "--labels",
                    'cluster="eu1"', "--max-time", "6h", "--output.dir", str(bucket)],
                   check=True, capture_output=True, timeout=600)
    started = []
    try:
        store = start_store(pythanos_bin, "pythanos-store", fs_yaml(bucket), work / "store")
        started.append(store)
        ours = start_our_query(pythanos_bin, [store.extra["grpc"]], work / "query")
        started.append(ours)
        theirs = start_thanos_query(thanos_bin, [store.extra["grpc"]], work / "tq")
        started.append(theirs)
        now = int(time.time()) // 300 * 300
        yield dict(work=work, store=store, ours=ours, theirs=theirs, now=now)
    finally:
        for p in reversed(started):
            p.stop()


QUERIES = ["sum(rate(continuous_app_metric0[5m]))", "continuous_app_metric1", "max by (__name__) ({cluster=\"eu1\"})",
           "count_over_time(continuous_app_metric0[1h] @ end())", 'absent(nonexistent{job="x"})']


def _values(body: bytes) -> dict:
    return {(json.dumps(s["metric"], sort_keys=True), v[0]): v[1]
            for s in json.loads(body)["data"]["result"] for v in s.get("values", ())}


@pytest.mark.parametrize("downstream", ["ours", "theirs"])
def test_split_answers_are_the_queriers_own(stack, pythanos_bin, downstream, tmp_path):
    """The frontend's answer holds exactly the querier's answers for the day pieces it asked for
    (a step's float may differ in its last bits between a day's query and a week's, in Thanos'
    querier as in ours), and where those equal the whole range's answer it is that answer, byte
    for byte from our querier (JSON-equal from Thanos', whose number printing differs)."""
    q = stack[downstream]
    fe = start_frontend(pythanos_bin, q.url, tmp_path / "fe")
    try:
        now = stack["now"]
        for query in QUERIES:
            start, end, step = now - 5 * 86400 + 600, now - 86400 - 900, 300
            params = {"query": query, "start": start, "end": end, "step": step}
            direct = _get(q.url + "/api/v1/query_range", params)
            assert direct[0] == 200, direct
            pinned = pin_at_modifiers(query, start * 1000, end * 1000)
            pieces: dict = {}
            for a, b in split_range(start * 1000, end * 1000, step * 1000, DAY):
                got = _get(q.url + "/api/v1/query_range", {"query": pinned, "start": a / 1000, "end": b / 1000,
                                                           "step": step})
                assert got[0] == 200, got
                pieces.update(_values(got[2]))
            for attempt in ("cold", "cached"):
                got = _get(fe.url + "/api/v1/query_range", params)
                assert got[0] == 200, (query, got[2][:300])
                assert _values(got[2]) == pieces, (query, attempt)
                assert _values(got[2]).keys() == _values(direct[2]).keys(), (query, attempt)
                if pieces != _values(direct[2]):
                    continue
                if downstream == "ours":
                    assert got[2] == direct[2], (query, attempt)
                else:
                    assert json.loads(got[2]) == json.loads(direct[2]), (query, attempt)
    finally:
        fe.stop()


@pytest.mark.parametrize("backend", ["IN-MEMORY", "MEMCACHED", "REDIS"])
def test_cache_serves_what_it_holds_and_never_fills_a_gap(stack, pythanos_bin, tmp_path, backend, request):
    """With each backend (real memcached and Redis servers): what the cache holds is answered with
    the querier stopped; a range it holds only in part fails rather than coming back with a gap."""
    from test_rules_api import start_our_query

    cache = IN_MEMORY
    if backend == "MEMCACHED":
        cache = f"{{type: MEMCACHED, config: {{addresses: [{request.getfixturevalue('memcached_server').address}]}}}}"
    elif backend == "REDIS":
        cache = f"{{type: REDIS, config: {{addr: {request.getfixturevalue('redis_server').address}}}}}"
    tenant = {"THANOS-TENANT": f"t-{time.monotonic_ns()}"}  # keys of its own in a shared server
    q = start_our_query(pythanos_bin, [stack["store"].extra["grpc"]], tmp_path / "q")
    fe = start_frontend(pythanos_bin, q.url, tmp_path / "fe", "--query-range.max-retries-per-request=0", cache=cache)
    try:
        now = stack["now"]
        held = {"query": "sum(rate(continuous_app_metric0[5m]))", "start": now - 4 * 86400, "end": now - 2 * 86400,
                "step": 300}
        first = _get(fe.url + "/api/v1/query_range", held, tenant)
        assert first[0] == 200 and json.loads(first[2])["data"]["result"]
        q.stop()
        inside = dict(held, start=now - 3 * 86400, end=now - 2 * 86400 - 3600)
        before = _metrics(fe.url)
        got = _get(fe.url + "/api/v1/query_range", inside, tenant)
        after = _metrics(fe.url)
        assert got[0] == 200
        miss = 'querier_cache_misses_total{cache="frontend-cache",tripperware="query_range"}'
        gets = 'querier_cache_gets_total{cache="frontend-cache",tripperware="query_range"}'
        assert after[miss] == before[miss] and after[gets] == before[gets] + 2  # two day pieces, both cached
        held_values = _values(first[2])
        want = {k: v for k, v in held_values.items() if inside["start"] <= k[1] <= inside["end"]}
        assert want and _values(got[2]) == want
        wider = dict(held, start=now - 5 * 86400)
        got = _get(fe.url + "/api/v1/query_range", wider, tenant)
        assert got[0] == 502 and b"unreachable" in got[2], got
        fresh = dict(held, end=now)  # nothing newer than now - 1m was ever stored
        assert _get(fe.url + "/api/v1/query_range", fresh, tenant)[0] == 502
        no_store = _get(fe.url + "/api/v1/query_range", held, {**tenant, "Cache-Control": "no-store"})
        assert no_store[0] == 502  # the cache is not consulted
    finally:
        fe.stop()
        q.stop()


def test_a_range_sliding_by_a_step_is_held_whole(stack, pythanos_bin, tmp_path):
    """A dashboard range that moves on by one step: the new step is fetched once and added to what the
    cache holds (too short for an entry of its own, it is kept as part of the longer one), so the moved
    range is then answered from the cache alone, with the querier stopped."""
    from test_rules_api import start_our_query

    q = start_our_query(pythanos_bin, [stack["store"].extra["grpc"]], tmp_path / "q")
    fe = start_frontend(pythanos_bin, q.url, tmp_path / "fe", "--query-range.max-retries-per-request=0")
    try:
        day = (stack["now"] // 86400 - 2) * 86400
        first = {"query": "sum(rate(continuous_app_metric0[5m]))", "start": day + 3600, "end": day + 7200, "step": 60}
        moved = dict(first, start=first["start"] + 60, end=first["end"] + 60)
        assert _get(fe.url + "/api/v1/query_range", first)[0] == 200
        want = _get(fe.url + "/api/v1/query_range", moved)
        assert want[0] == 200 and json.loads(want[2])["data"]["result"]
        q.stop()
        again = _get(fe.url + "/api/v1/query_range", moved)
        assert again[0] == 200 and again[2] == want[2]
    finally:
        fe.stop()
        q.stop()


def test_errors_as_the_querier_writes_them(stack, pythanos_bin, tmp_path):
    q = stack["ours"]
    fe = start_frontend(pythanos_bin, q.url, tmp_path / "fe")
    try:
        now = stack["now"]
        base = {"query": "sum(", "start": now - 3600, "end": now, "step": 60}
        direct = _get(q.url + "/api/v1/query_range", base)
        got = _get(fe.url + "/api/v1/query_range", base)
        assert got[0] == direct[0] == 400 and got[2] == direct[2]
        for bad in ({"start": "x"}, {"end": now - 7200}, {"step": "0"}, {"step": "1", "start": now - 86400}):
            p = dict(base, query="up", **bad)
            d, g = _get(q.url + "/api/v1/query_range", p), _get(fe.url + "/api/v1/query_range", p)
            assert g[0] == d[0] == 400, bad
            assert json.loads(g[2])["error"] == json.loads(d[2])["error"], bad
        # everything else is passed through: the querier's own answer
        for path, params in (("/api/v1/query", {"query": "continuous_app_metric0", "time": now - 86400}),
                             ("/api/v1/labels", {}), ("/api/v1/status/buildinfo", {})):
            d, g = _get(q.url + path, params), _get(fe.url + path, params)
            assert g[0] == d[0] == 200 and json.loads(g[2])["data"] == json.loads(d[2])["data"], path
    finally:
        fe.stop()


def test_downsampled_prefix_asked_again_as_thanos_frontend(downsampled_bucket, pythanos_bin, thanos_bin, tmp_path):
    """max_source_resolution=auto over a bucket whose raw blocks before a cutoff are gone (retention):
    the querier's answer starts late, so the missing prefix is asked again at 5m, exactly as a real
    ``thanos query-frontend`` in front of the same querier does."""
    import shutil

    from test_rules_api import start_our_query
    from test_store import fs_yaml, start_store

    bucket = tmp_path / "bucket"
    shutil.copytree(downsampled_bucket, bucket)
    metas = {p.parent: json.loads(p.read_text()) for p in bucket.glob("*/meta.json")}
    end = max(m["maxTime"] for m in metas.values())
    cutoff = end - 60 * DAY
    dropped = [d for d, m in metas.items() if m["thanos"]["downsample"]["resolution"] == 0 and m["maxTime"] < cutoff]
    assert dropped
    for d in dropped:
        shutil.rmtree(d)
    started = []
    try:
        store = start_store(pythanos_bin, "pythanos-store", fs_yaml(bucket), tmp_path / "store",
                            ["--ignore-deletion-marks-delay=0s"])
        started.append(store)
        q = start_our_query(pythanos_bin, [store.extra["grpc"]], tmp_path / "q")
        started.append(q)
        ours = start_frontend(pythanos_bin, q.url, tmp_path / "fe")
        started.append(ours)
        (port,) = free_ports(1)
        theirs = REGISTRY.start("thanos-query-frontend", [
            thanos_bin, "query-frontend", f"--http-address=127.0.0.1:{port}",
            f"--query-frontend.downstream-url={q.url}", f"--query-range.response-cache-config={IN_MEMORY}"],
            tmp_path / "tfe")
        theirs.url = f"http://127.0.0.1:{port}"
        theirs.wait_http_ready("/-/ready", 60)
        started.append(theirs)
        first_raw = min(m["minTime"] for m in metas.values()
                        if m["thanos"]["downsample"]["resolution"] == 0 and m["maxTime"] >= cutoff)
        params = {"query": "sum(continuous_app_metric0)", "start": (first_raw - 20 * DAY) // 1000,
                  "end": (first_raw + 10 * DAY) // 1000, "step": 300, "max_source_resolution": "auto"}
        direct = json.loads(_get(q.url + "/api/v1/query_range", params)[2])["data"]["result"]
        assert direct and direct[0]["values"][0][0] * 1000 >= first_raw - 300_000  # raw only: starts late
        for attempt in ("cold", "cached"):
            got = _get(ours.url + "/api/v1/query_range", params)
            want = _get(theirs.url + "/api/v1/query_range", params)
            assert got[0] == want[0] == 200, (got[2][:300], want[2][:300])
            assert json.loads(got[2])["data"]["result"] == json.loads(want[2])["data"]["result"], attempt
            values = json.loads(got[2])["data"]["result"][0]["values"]
            assert values[0][0] < params["start"] + DAY // 1000  # the prefix came back, from 5m data
        assert _metrics(ours.url)['thanos_frontend_downsampled_extra_queries_total{tripperware="query_range"}'] >= 1
    finally:
        for p in reversed(started):
            p.stop()


GENERATED = [
    ("sum(rate(continuous_app_metric0[5m]))", 300), ("rate(continuous_app_metric1[10m] offset 1h)", 600),
    ("max_over_time(continuous_app_metric0[30m:5m])", 900), ("continuous_app_metric1 @ start()", 1800),
    ("avg by (__name__) (continuous_app_metric0 offset -30m)", 300), ("count(continuous_app_metric0 > 100)", 3600),
    ("sum(increase(continuous_app_metric0[1h] @ end()))", 1200), ("absent(continuous_app_metric0)", 7200),
]


def test_answers_equal_a_real_thanos_frontend(stack, pythanos_bin, thanos_bin, tmp_path):
    """The same sequence of range queries (steps, day crossings, offsets, @, subqueries; a first
    call, the same again, then an overlapping wider range) through our frontend and a real
    ``thanos query-frontend`` v0.42 over the same querier: the same answers every time."""
    q = stack["ours"]
    ours = start_frontend(pythanos_bin, q.url, tmp_path / "fe")
    (port,) = free_ports(1)
    theirs = REGISTRY.start("thanos-query-frontend", [
        thanos_bin, "query-frontend", f"--http-address=127.0.0.1:{port}", f"--query-frontend.downstream-url={q.url}",
        f"--query-range.response-cache-config={IN_MEMORY}"], tmp_path / "tfe")
    theirs.url = f"http://127.0.0.1:{port}"
    try:
        theirs.wait_http_ready("/-/ready", 60)
        now = stack["now"]
        for query, step in GENERATED:
            held = {"query": query, "start": now - 4 * 86400 + 77, "end": now - 2 * 86400 - 31, "step": step}
            wider = dict(held, start=now - 6 * 86400 + 123, end=now - 86400 + 19)
            for what, params in (("first", held), ("cached", held), ("partly cached", wider)):
                got = _get(ours.url + "/api/v1/query_range", params)
                want = _get(theirs.url + "/api/v1/query_range", params)
                assert got[0] == want[0] == 200, (query, what, got[2][:300], want[2][:300])
                g, w = json.loads(got[2]), json.loads(want[2])
                assert g["data"]["result"] == w["data"]["result"], (query, what)
                assert g.get("warnings") == w.get("warnings"), (query, what)
    finally:
        ours.stop()
        theirs.stop()


def test_cache_server_stopped_midway_costs_only_hits(stack, pythanos_bin, memcached_server, tmp_path):
    """memcached stopped under a running frontend: answers keep coming (from the querier), equal to
    the cached ones; once it is back, it is used again."""
    q = stack["ours"]
    cache = f"{{type: MEMCACHED, config: {{addresses: [{memcached_server.address}], timeout: 200ms}}}}"
    fe = start_frontend(pythanos_bin, q.url, tmp_path / "fe", cache=cache)
    tenant = {"THANOS-TENANT": f"t-{time.monotonic_ns()}"}
    try:
        now = stack["now"]
        params = {"query": "sum(rate(continuous_app_metric0[5m]))", "start": now - 3 * 86400, "end": now - 86400,
                  "step": 600}
        first = _get(fe.url + "/api/v1/query_range", params, tenant)
        assert first[0] == 200
        memcached_server.stop()
        try:
            during = _get(fe.url + "/api/v1/query_range", params, tenant)
            assert during[0] == 200 and _values(during[2]) == _values(first[2])
        finally:
            memcached_server.start()
        miss = 'querier_cache_misses_total{cache="frontend-cache",tripperware="query_range"}'
        m0 = _metrics(fe.url)[miss]
        again = _get(fe.url + "/api/v1/query_range", params, tenant)  # the entries are gone with the server
        assert again[0] == 200 and _values(again[2]) == _values(first[2])
        assert _metrics(fe.url)[miss] > m0

        def all_hits() -> bool:  # the entries are written back asynchronously: ask until one call misses nothing
            before = _metrics(fe.url)[miss]
            got = _get(fe.url + "/api/v1/query_range", params, tenant)
            assert got[0] == 200 and _values(got[2]) == _values(first[2])
            return _metrics(fe.url)[miss] == before

        deadline = time.monotonic() + 60
        while not all_hits():
            assert time.monotonic() < deadline, "memcached not used again after it came back"
    finally:
        fe.stop()


def test_labels_and_series_split_and_merged_as_thanos_frontend(stack, pythanos_bin, thanos_bin, tmp_path):
    """Label names, values and series over several days, split into day pieces and merged: the same
    data as the querier's own answer for the whole range and as a real thanos query-frontend's;
    without start and end, the last --labels.default-time-range (24h) as in Thanos."""
    q = stack["ours"]
    ours = start_frontend(pythanos_bin, q.url, tmp_path / "fe")
    (port,) = free_ports(1)
    theirs = REGISTRY.start("thanos-query-frontend", [
        thanos_bin, "query-frontend", f"--http-address=127.0.0.1:{port}", f"--query-frontend.downstream-url={q.url}"],
        tmp_path / "tfe")
    theirs.url = f"http://127.0.0.1:{port}"
    try:
        theirs.wait_http_ready("/-/ready", 60)
        now = stack["now"]
        rng = {"start": now - 5 * 86400 + 17, "end": now - 86400}
        cases = [("/api/v1/labels", rng), ("/api/v1/label/__name__/values", rng),
                 ("/api/v1/series", dict(rng, **{"match[]": '{__name__=~"continuous_app_metric[01]"}'})),
                 ("/api/v1/label/__name__/values", {}), ("/api/v1/series", {"match[]": "continuous_app_metric0"})]
        split0 = _metrics(ours.url)['thanos_frontend_split_queries_total{tripperware="labels"}']
        for path, params in cases:
            got = _get(ours.url + path, params)
            want = _get(theirs.url + path, params)
            assert got[0] == want[0] == 200, (path, got[2][:300])
            g, w = json.loads(got[2])["data"], json.loads(want[2])["data"]
            assert g == w and g, (path, params)
            if params:
                direct = json.loads(_get(q.url + path, params)[2])["data"]
                key = (lambda x: json.dumps(x, sort_keys=True)) if path.endswith("series") else str
                assert sorted(g, key=key) == sorted(direct, key=key), path
        assert _metrics(ours.url)['thanos_frontend_split_queries_total{tripperware="labels"}'] >= split0 + 3 * 4
    finally:
        ours.stop()
        theirs.stop()


@pytest.mark.parametrize("backend", ["IN-MEMORY", "REDIS"])
def test_labels_cache_serves_the_pieces_it_holds(stack, pythanos_bin, tmp_path, backend, request):
    """--labels.response-cache-config: label names, values and series pieces are cached whole,
    each for its exact range on the split grid. With the querier stopped, the same requests are
    answered as before; one whose pieces are not all held (another matcher, a range reaching
    into the last minute, an edge off the cached grid) fails rather than coming back short."""
    from test_rules_api import start_our_query

    cache = IN_MEMORY
    if backend == "REDIS":
        cache = f"{{type: REDIS, config: {{addr: {request.getfixturevalue('redis_server').address}}}}}"
    tenant = {"THANOS-TENANT": f"t-{time.monotonic_ns()}"}
    q = start_our_query(pythanos_bin, [stack["store"].extra["grpc"]], tmp_path / "q")
    fe = start_frontend(pythanos_bin, q.url, tmp_path / "fe", "--labels.max-retries-per-request=0",
                        f"--labels.response-cache-config={cache}")
    try:
        now = stack["now"]
        rng = {"start": now - 4 * 86400 + 17, "end": now - 2 * 86400}
        cases = [("/api/v1/labels", rng), ("/api/v1/label/__name__/values", rng),
                 ("/api/v1/series", dict(rng, **{"match[]": '{__name__=~"continuous_app_metric[01]"}'}))]
        first = {}
        for path, params in cases:
            got = _get(fe.url + path, params, tenant)
            direct = _get(q.url + path, params)
            assert got[0] == direct[0] == 200, got
            g, d = json.loads(got[2])["data"], json.loads(direct[2])["data"]
            key = (lambda x: json.dumps(x, sort_keys=True)) if path.endswith("series") else str
            assert g and sorted(g, key=key) == sorted(d, key=key), path
            first[path] = got[2]
        q.stop()
        gets = 'querier_cache_gets_total{cache="frontend-cache",tripperware="labels"}'
        miss = 'querier_cache_misses_total{cache="frontend-cache",tripperware="labels"}'
        before = _metrics(fe.url)
        for path, params in cases:
            got = _get(fe.url + path, params, tenant)
            assert got[0] == 200 and got[2] == first[path], path
        after = _metrics(fe.url)
        assert after[miss] == before[miss] and after[gets] >= before[gets] + 3 * 3
        other = dict(cases[2][1], **{"match[]": "continuous_app_metric0"})
        assert _get(fe.url + "/api/v1/series", other, tenant)[0] == 502
        assert _get(fe.url + "/api/v1/labels", dict(rng, end=now), tenant)[0] == 502   # fresh: never stored
        assert _get(fe.url + "/api/v1/labels", dict(rng, start=rng["start"] + 60), tenant)[0] == 502
        assert _get(fe.url + "/api/v1/labels", rng, {**tenant, "Cache-Control": "no-store"})[0] == 502
    finally:
        fe.stop()
        q.stop()


SHARDED = ['sum by (__blockgen_target__) ({__name__=~"continuous_app_metric[0-4]"})',
           'max by (__name__) ({__name__=~"continuous_app_metric.*", __blockgen_target__=~"[1-5]"})',
           "sum by (__blockgen_target__) (rate(continuous_app_metric3[5m]))",
           "continuous_app_metric1 - ignoring(__name__) continuous_app_metric2"]


@pytest.fixture(scope="module")
def shard_stack(tmp_path_factory, pythanos_bin):
    """Our store and querier over one 2h block of 10k series (100 targets x 100 metrics) that
    ended an hour ago: enough series for shards to hold different ones."""
    from test_rules_api import start_our_query
    from test_store import fs_yaml, metas, start_store

    work = tmp_path_factory.mktemp("shards")
    subprocess.run([pythanos_bin, "tools", "bench-blocks", "--profile", "bench-10k-2h", "--labels", 'cluster="eu1"',
                    "--max-time=-3h", "--output.dir", str(work / "bucket")], check=True, capture_output=True,
                   timeout=600)
    (meta,) = metas(work / "bucket").values()
    store = start_store(pythanos_bin, "pythanos-store", fs_yaml(work / "bucket"), work / "store")
    try:
        q = start_our_query(pythanos_bin, [store.extra["grpc"]], work / "query")
        try:
            yield dict(ours=q, start=meta["minTime"] // 1000 + 600, end=meta["maxTime"] // 1000 - 600)
        finally:
            q.stop()
    finally:
        store.stop()


def test_querier_answers_one_shard_per_shard_info(shard_stack):
    """shard_info on our querier's range API: the stores answer that shard's series only; the shards
    partition the unsharded answer; a shard_info that does not parse is bad_data naming it."""
    from pythanos.frontend.vertical import analyze, shard_param

    q = shard_stack["ours"]
    base = {"start": shard_stack["start"], "end": shard_stack["end"], "step": 300}
    for query in SHARDED:
        whole = _values(_get(q.url + "/api/v1/query_range", dict(base, query=query))[2])
        plan = analyze(query)
        parts = [_values(_get(q.url + "/api/v1/query_range", dict(base, query=query,
                                                                  shard_info=shard_param(plan, k, 3)))[2])
                 for k in range(3)]
        assert len(whole) > 1000 and sum(len(x) for x in parts) == len(whole), query
        assert {k: v for x in parts for k, v in x.items()} == whole, query
        assert all(len(x) < len(whole) // 2 for x in parts), query   # really split
    bad = _get(q.url + "/api/v1/query_range", dict(base, query=SHARDED[0], shard_info="{nope"))
    assert bad[0] == 400 and json.loads(bad[2])["errorType"] == "bad_data"
    assert json.loads(bad[2])["error"].startswith("could not unmarshal parameter shard_info")


@pytest.mark.parametrize("frontend", ["ours", "theirs"])
def test_vertical_shards_answer_the_unsharded_answer(shard_stack, pythanos_bin, thanos_bin, tmp_path, frontend):
    """--query-frontend.vertical-shards=3, ours and a real thanos query-frontend, over our querier: each
    shardable range query is asked in three shards and answers exactly the querier's unsharded answer (byte
    for byte from ours), cold and from the cache; instant queries the same samples (in Thanos' order: by
    labels, or by value under sort_desc); a query that cannot be sharded passes as it is."""
    q = shard_stack["ours"]
    if frontend == "ours":
        fe = start_frontend(pythanos_bin, q.url, tmp_path / "fe", "--query-frontend.vertical-shards=3")
    else:
        (port,) = free_ports(1)
        fe = REGISTRY.start("thanos-query-frontend", [
            thanos_bin, "query-frontend", f"--http-address=127.0.0.1:{port}", f"--query-frontend.downstream-url={q.url}",
            "--query-frontend.vertical-shards=3", f"--query-range.response-cache-config={IN_MEMORY}"], tmp_path / "tfe")
        fe.url = f"http://127.0.0.1:{port}"
        fe.wait_http_ready("/-/ready", 60)
    try:
        for query in SHARDED + ["sum(continuous_app_metric0)"]:
            params = {"query": query, "start": shard_stack["start"], "end": shard_stack["end"], "step": 120}
            direct = _get(q.url + "/api/v1/query_range", params)
            assert direct[0] == 200 and json.loads(direct[2])["data"]["result"], direct
            for attempt in ("cold", "cached"):
                got = _get(fe.url + "/api/v1/query_range", params)
                assert got[0] == 200, got
                if frontend == "ours" and _values(got[2]) == _values(direct[2]):
                    assert got[2] == direct[2], (query, attempt)
                assert _values(got[2]) == _values(direct[2]), (query, attempt)
        at = {"time": shard_stack["end"]}
        for query in SHARDED + ["sort_desc(sum by (__blockgen_target__) (continuous_app_metric0))"]:
            direct = _get(q.url + "/api/v1/query", dict(at, query=query))
            got = _get(fe.url + "/api/v1/query", dict(at, query=query))
            assert direct[0] == got[0] == 200, got
            d, g = json.loads(direct[2])["data"], json.loads(got[2])["data"]
            key = lambda r: json.dumps(r["metric"], sort_keys=True)   # noqa: E731
            assert d["resultType"] == g["resultType"] == "vector" and len(d["result"]) > 2, query
            assert {key(r): r["value"] for r in g["result"]} == {key(r): r["value"] for r in d["result"]}, query
            if query.startswith("sort_desc"):
                values = [float(r["value"][1]) for r in g["result"]]
                assert values == sorted(values, reverse=True)
        m = _metrics(fe.url)
        family = "thanos_frontend_sharding_middleware_queries_total"
        assert m[f'{family}{{shardable="true",tripperware="query_range"}}'] == 2 * len(SHARDED)
        assert m[f'{family}{{shardable="false",tripperware="query_range"}}'] == 2
        assert m[f'{family}{{shardable="true",tripperware="query_instant"}}'] == len(SHARDED) + 1
    finally:
        fe.stop()


def test_compressed_responses_and_snappy_cached_values(stack, pythanos_bin, tmp_path):
    """--query-frontend.compress-responses gzips for a client that accepts it (and only then);
    --cache-compression-type=snappy stores snappy blocks in the cache, served again as the same
    answer with the querier stopped."""
    import gzip

    from test_rules_api import start_our_query

    q = start_our_query(pythanos_bin, [stack["store"].extra["grpc"]], tmp_path / "q")
    fe = start_frontend(pythanos_bin, q.url, tmp_path / "fe", "--query-frontend.compress-responses",
                        "--cache-compression-type=snappy", "--query-range.max-retries-per-request=0")
    try:
        now = stack["now"]
        params = {"query": "sum(rate(continuous_app_metric0[5m]))", "start": now - 3 * 86400, "end": now - 86400,
                  "step": 600}
        plain = _get(fe.url + "/api/v1/query_range", params)
        assert plain[0] == 200 and "Content-Encoding" not in plain[1]
        zipped = _get(fe.url + "/api/v1/query_range", params, {"Accept-Encoding": "gzip"})
        assert zipped[0] == 200 and zipped[1].get("Content-Encoding") == "gzip"
        assert gzip.decompress(zipped[2]) == plain[2]
        q.stop()
        cached = _get(fe.url + "/api/v1/query_range", params)
        assert cached[0] == 200 and cached[2] == plain[2]
    finally:
        fe.stop()
        q.stop()


def test_dynamic_split_as_thanos_frontend(stack, pythanos_bin, thanos_bin, tmp_path):
    """--query-range.split-interval=0 with min/max split intervals and horizontal shards: ranges
    long, middling and short are cut into as many pieces as a real thanos query-frontend cuts them
    (its split counter and ours move alike) and answered alike, cached or not."""
    q = stack["ours"]
    dyn = ["--query-range.split-interval=0", "--query-range.min-split-interval=1h",
           "--query-range.max-split-interval=1d", "--query-range.horizontal-shards=4"]
    ours = start_frontend(pythanos_bin, q.url, tmp_path / "fe", *dyn)
    (port,) = free_ports(1)
    theirs = REGISTRY.start("thanos-query-frontend", [
        thanos_bin, "query-frontend", f"--http-address=127.0.0.1:{port}", f"--query-frontend.downstream-url={q.url}",
        f"--query-range.response-cache-config={IN_MEMORY}", *dyn], tmp_path / "tfe")
    theirs.url = f"http://127.0.0.1:{port}"
    split = 'thanos_frontend_split_queries_total{tripperware="query_range"}'
    try:
        theirs.wait_http_ready("/-/ready", 60)
        now = stack["now"]
        for span in (3 * 86400 + 5400, 12 * 3600 + 600, 1800):
            params = {"query": "sum(rate(continuous_app_metric0[5m]))", "start": now - 86400 - span,
                      "end": now - 86400, "step": 300}
            for attempt in ("first", "cached"):
                before = (_metrics(ours.url)[split], _metrics(theirs.url)[split])
                got = _get(ours.url + "/api/v1/query_range", params)
                want = _get(theirs.url + "/api/v1/query_range", params)
                assert got[0] == want[0] == 200
                assert json.loads(got[2])["data"]["result"] == json.loads(want[2])["data"]["result"], (span, attempt)
                after = (_metrics(ours.url)[split], _metrics(theirs.url)[split])
                assert after[0] - before[0] == after[1] - before[1] >= 1, (span, attempt, before, after)
    finally:
        ours.stop()
        theirs.stop()


def test_https_downstream_with_the_tripper_config(stack, pythanos_bin, tmp_path):
    """A querier serving HTTPS only (--http.config): reached with the tripper config's tls_config
    (CA, server name) and refused, with the reason, without it."""
    import ssl

    from tlsfiles import make_pki

    pki = make_pki(tmp_path / "pki", "querier.test")
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {pki.dir / 'tls.crt'}\n  key_file: {pki.dir / 'tls.key'}\n")
    h, g = free_ports(2)
    (tmp_path / "q").mkdir()
    q = REGISTRY.start("query", [pythanos_bin, "query", f"--http-address=127.0.0.1:{h}",
                                 f"--grpc-address=127.0.0.1:{g}", f"--endpoint={stack['store'].extra['grpc']}",
                                 f"--http.config={web}"], tmp_path / "q")
    https = f"https://127.0.0.1:{h}"
    ctx = ssl.create_default_context(cafile=str(pki.dir / "ca.crt"))
    ctx.check_hostname = False

    def ready() -> bool:
        try:
            with urllib.request.urlopen(https + "/api/v1/stores", timeout=5, context=ctx) as r:
                return any(not s.get("lastError") for grp in json.loads(r.read())["data"].values() for s in grp)
        except OSError:
            return False

    q.wait_ready(ready, 60, what="the HTTPS querier with its store")
    tripper = f"{{tls_config: {{ca_file: {pki.dir / 'ca.crt'}, server_name: querier.test}}, max_conns_per_host: 4}}"
    ok = start_frontend(pythanos_bin, https, tmp_path / "ok", f"--query-frontend.downstream-tripper-config={tripper}",
                        "--query-range.max-retries-per-request=0")
    bad = start_frontend(pythanos_bin, https, tmp_path / "bad", "--query-range.max-retries-per-request=0")
    try:
        now = stack["now"]
        params = {"query": "continuous_app_metric0", "start": now - 2 * 86400, "end": now - 86400, "step": 3600}
        got = _get(ok.url + "/api/v1/query_range", params)
        assert got[0] == 200 and json.loads(got[2])["data"]["result"]
        refused = _get(bad.url + "/api/v1/query_range", params)
        assert refused[0] == 502 and b"certificate" in refused[2].lower(), refused
    finally:
        ok.stop()
        bad.stop()
        q.stop()
