"""``/api/v1/status/flags`` text of each kind of flag, as kingpin prints it (the comparison with a
real thanos rule is in test_rule.py), and the status routes on every component Thanos serves them
on."""
from __future__ import annotations

import json

from pythanos.cli import build_parser
from pythanos.web.statusapi import flags_map


def sub(component: str, *path: str):
    p = build_parser(component)
    for word in (component, *path):
        p = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction").choices[word]
    return p


def test_store_flags_kinds():
    argv = ["store", "--objstore.config=type: FILESYSTEM", "--consistency-delay=90m", "--sync-block-duration", "15m",
            "--selector.relabel-config=[]", "--web.disable", "--min-time=-2w"]
    m = flags_map(sub("store"), argv)
    assert m["objstore.config"] == "<REDACTED>"
    assert m["consistency-delay"] == "1h30m"  # model.Duration, re-printed
    assert m["sync-block-duration"] == "15m0s"  # time.Duration, given as a separate word
    assert m["web.disable"] == "true"
    assert m["min-time"] == "-2w"
    assert m["max-time"] == "9999-12-31T23:59:59Z"
    assert "log.level" not in m and "help" not in m


def test_repeated_and_negated_flags():
    m = flags_map(sub("query"), ["query", "--endpoint=a:1", "--endpoint", "b:2", "--query.replica-label=r",
                                 "--no-query.partial-response"])
    assert m["endpoint"] == "a:1,b:2"
    assert m["query.replica-label"] == "r"
    assert m["query.partial-response"] == "false"
    assert flags_map(sub("query"), ["query"])["endpoint"] == ""


def test_querier_flags_as_thanos_query(pythanos_factory, thanos_bin, tmp_path):
    """Our querier and a real thanos query started alike print every flag both have alike."""
    from peers import http_get, start_thanos_query
    from ports import free_port

    def flags(url: str) -> dict:
        code, body = http_get(url + "/api/v1/status/flags")
        assert code == 200, body
        return json.loads(body)["data"]

    ports = [free_port(), free_port()]
    ours = pythanos_factory(["query", f"--http-address=127.0.0.1:{ports[0]}", f"--grpc-address=127.0.0.1:{ports[1]}",
                             "--query.replica-label=replica", "--query.replica-label=rule_replica",
                             "--query.timeout=90s", "--query.max-concurrent=7", "--store.sd-interval=5m"],
                            ready_url=f"http://127.0.0.1:{ports[0]}/-/ready", name="pythanos-query")
    theirs = start_thanos_query(thanos_bin, [], tmp_path / "tq", extra=[
        "--query.replica-label=rule_replica", "--query.timeout=90s", "--query.max-concurrent=7",
        "--store.sd-interval=5m"])
    try:
        o, t = flags(f"http://127.0.0.1:{ports[0]}"), flags(theirs.url)
    finally:
        theirs.stop()
    both = set(o) & set(t)
    assert len(both) >= 45
    assert {k: o[k] for k in both if o[k] != t[k]}.keys() == {"http-address", "grpc-address"}
    assert o["query.replica-label"] == "replica,rule_replica" and o["query.timeout"] == "1m30s"


def test_store_and_compact_blocks_routes_carry_the_status_routes():
    from aiohttp import web

    from pythanos.web.blocks import add_blocks_routes

    app = web.Application()
    add_blocks_routes(app, view=None, prefix="/pre")
    paths = {r.resource.canonical for r in app.router.routes() if "/status/" in r.resource.canonical}
    assert paths == {f"/pre/api/v1/status/{w}" for w in ("flags", "runtimeinfo", "buildinfo")}
