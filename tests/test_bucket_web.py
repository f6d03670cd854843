"""The bucket web UI and its API (``pythanos.web.blocks``), against a real ``thanos tools bucket web``.

The bucket is a FILESYSTEM bucket of real blocks (``BlockWriter``) in three label sets:

* ``cluster=eu1, replica=0``: two consecutive raw 2h blocks, and a 5m and a 1h block made from them;
* ``cluster=us1``: two raw blocks that overlap (neither compacted from the other);
* ``cluster=eu2``: two raw blocks and the level-2 block compacted from them (``tools bucket web`` shows
  only the latter: Thanos' deduplicate filter).

Checked:

* ``GET /api/v1/blocks`` of our server equals the real ``thanos tools bucket web`` one on the same bucket
  (the blocks as a set of meta.json objects, label, err, the envelope; not refreshedAt);
* ``POST /api/v1/blocks/mark``: refusals answer exactly as Thanos' (status, errorType, error), with
  admin operations on and off; markers written by ours and by Thanos have the same shape, and a real
  ``thanos tools bucket ls --exclude-delete`` no longer lists the blocks marked for deletion;
* beyond Thanos: ``minTime`` / ``maxTime`` / ``limit``, bad parameters as ``bad_data`` naming them,
  strict ULIDs, unknown blocks refused; the background view keeps the last good list on errors and
  timeouts and says why in ``err``;
* the page in a real headless Chromium: one row per label set, one span per block, a 5m block's
  details, overlapping blocks highlighted, marking from the page, admin buttons hidden when disabled,
  a screenshot;
* ``pythanos compact --wait`` and ``pythanos store`` serve it (global and loaded views).
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from browser import VIEWPORT, assert_png, report_screenshot, run
from peers import REGISTRY, free_port, http_get
from pythanos.block import FetchResult
from pythanos.objstore.config import bucket_from_config
from pythanos.tsdb import ulid as _ulid
from pythanos.tsdb.block import BlockWriter
from pythanos.tsdb.meta import BlockDesc, Compaction
from pythanos.web import add_ui_routes
from pythanos.web.blocks import (ZERO_TIME, BlocksSnapshot, BlocksView, LiveView, add_blocks_routes,
                                 bucket_web_fetcher, parse_ulid)

T0 = 1735689600000  # 2025-01-01T00:00:00Z
H = 3600_000
PREFIX = "/thanos"


# ------------------------------------------------------------------------------------------ the bucket

def write_block(root: Path, labels: dict, mint: int, maxt: int, *, resolution: int = 0, parents=()) -> dict:
    """A real block straight into the bucket directory; returns its meta.json object."""
    uid = _ulid.new(int(time.time() * 1000))
    compaction = None
    if parents:
        compaction = Compaction(level=2, sources=sorted(s for p in parents for s in p["compaction"]["sources"]),
                                parents=[BlockDesc(p["ulid"], p["minTime"], p["maxTime"]) for p in parents])
    w = BlockWriter(root, thanos={"labels": labels, "source": "compactor" if parents else "sidecar",
                                  "resolution": resolution},
                    min_time=mint, max_time=maxt, block_ulid=uid, compaction=compaction)
    t = np.arange(mint, maxt, max(resolution, 60_000), dtype=np.int64)
    for job in ("a", "b"):
        w.add_series({"__name__": "up", "job": job}, t, np.ones(len(t)))
    return w.write().to_obj()


class Bucket:
    def __init__(self, root: Path, config: Path, blocks: dict[str, dict]):
        self.root, self.config, self.blocks = root, config, blocks  # blocks: name -> meta.json object

    def ulid(self, name: str) -> str:
        return self.blocks[name]["ulid"]

    def open(self):
        return bucket_from_config(self.config.read_text(), str(self.config))


@pytest.fixture
def bucket(tmp_path) -> Bucket:
    root = tmp_path / "bucket"
    root.mkdir()
    eu1, us1, eu2 = {"cluster": "eu1", "replica": "0"}, {"cluster": "us1"}, {"cluster": "eu2"}
    b: dict[str, dict] = {}
    b["a1"] = write_block(root, eu1, T0, T0 + 2 * H)
    b["a2"] = write_block(root, eu1, T0 + 2 * H, T0 + 4 * H)
    b["a5m"] = write_block(root, eu1, T0, T0 + 4 * H, resolution=300_000, parents=(b["a1"], b["a2"]))
    b["a1h"] = write_block(root, eu1, T0, T0 + 4 * H, resolution=3_600_000, parents=(b["a1"], b["a2"]))
    b["b1"] = write_block(root, us1, T0, T0 + 2 * H)
    b["b2"] = write_block(root, us1, T0 + H, T0 + 3 * H)  # overlaps b1
    b["c1"] = write_block(root, eu2, T0, T0 + 2 * H)
    b["c2"] = write_block(root, eu2, T0 + 2 * H, T0 + 4 * H)
    b["c12"] = write_block(root, eu2, T0, T0 + 4 * H, parents=(b["c1"], b["c2"]))  # c1, c2 hidden by dedup
    cfg = tmp_path / "bucket.yml"
    cfg.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {root}\n")
    return Bucket(root, cfg, b)


SHOWN = ["a1", "a2", "a5m", "a1h", "b1", "b2", "c12"]  # what tools bucket web shows of the bucket


# ----------------------------------------------------------------------------------------- servers

class Server:
    """Our block viewer on 127.0.0.1 in a thread of its own (its own event loop, as a component's).
    ``mount(app)`` is a coroutine function that adds routes and returns the views to run."""

    def __init__(self, mount):
        self.mount = mount
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.views: list[BlocksView] = []

    async def _start(self) -> None:
        app = web.Application()
        self.views = await self.mount(app)
        for v in self.views:
            await v.refresh_now()  # served from the first request on
            v.start()
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        for v in self.views:
            await v.stop()
            v.fetcher.close()
        await self.runner.cleanup()

    def __enter__(self) -> "Server":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def ours(bucket: Bucket, **kw) -> Server:
    async def mount(app):
        view = BlocksView(bucket_web_fetcher(bucket.open()), refresh=1800, timeout=60)
        add_blocks_routes(app, view, **kw)
        return [view]
    return Server(mount)


def start_thanos_web(thanos_bin: str, bucket: Bucket, work: Path, *extra: str):
    port = free_port()
    p = REGISTRY.start("thanos-bucket-web", [thanos_bin, "tools", "bucket", "web", f"--objstore.config-file="
                                             f"{bucket.config}", f"--http-address=127.0.0.1:{port}", *extra], work)
    p.url = f"http://127.0.0.1:{port}"

    def refreshed() -> bool:
        code, body = http_get(p.url + "/api/v1/blocks", timeout=2)
        return code == 200 and json.loads(body)["data"]["refreshedAt"] != ZERO_TIME

    p.wait_ready(refreshed, 60, what="the first refresh of the block list")
    return p


def get_json(url: str) -> tuple[int, dict]:
    code, body = http_get(url, timeout=10)
    return code, json.loads(body)


def post_form(url: str, fields: dict) -> tuple[int, dict | None]:
    """(status, the JSON answer or None when there is no body)."""
    req = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            code, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        code, body = e.code, e.read()
    return code, json.loads(body) if body else None


def canonical(blocks: list[dict]) -> set[str]:
    return {json.dumps(b, sort_keys=True) for b in blocks}


# ------------------------------------------------------------------------------- against real Thanos

def test_api_equals_thanos_tools_bucket_web(bucket, thanos_bin, tmp_path):
    thanos = start_thanos_web(thanos_bin, bucket, tmp_path / "thanos", "--label=cluster")
    readonly = start_thanos_web(thanos_bin, bucket, tmp_path / "thanos-ro", "--disable-admin-operations")
    try:
        with ours(bucket, label="cluster") as mine, ours(bucket, disable_admin=True) as mine_ro:
            # the block list
            code_t, theirs = get_json(thanos.url + "/api/v1/blocks")
            code_o, body = get_json(mine.url + "/api/v1/blocks")
            assert code_t == code_o == 200
            assert body.keys() == theirs.keys() == {"status", "data"} and body["status"] == theirs["status"]
            assert body["data"].keys() == theirs["data"].keys() == {"label", "blocks", "refreshedAt", "err"}
            assert canonical(body["data"]["blocks"]) == canonical(theirs["data"]["blocks"])
            assert {b["ulid"] for b in body["data"]["blocks"]} == {bucket.ulid(n) for n in SHOWN}
            assert body["data"]["label"] == theirs["data"]["label"] == "cluster"
            assert body["data"]["err"] is None and theirs["data"]["err"] is None
            assert body["data"]["refreshedAt"].endswith("Z") and body["data"]["refreshedAt"] != ZERO_TIME
            # the metas are the bucket's meta.json objects, field for field
            want = {bucket.ulid(n): bucket.blocks[n] for n in SHOWN}
            for b in body["data"]["blocks"]:
                assert b == json.loads((bucket.root / b["ulid"] / "meta.json").read_text()) == want[b["ulid"]]

            # refusals: the same status, type and message as Thanos, in the same order of checks
            a1 = bucket.ulid("a1")
            refusals = [{}, {"id": a1}, {"action": "DELETION"}, {"id": "01ABC", "action": "DELETION"},
                        {"id": "8" + a1[1:], "action": "DELETION"}, {"id": a1, "action": "DELETE"},
                        {"id": a1, "action": "deletion"}, {"id": "", "action": "", "detail": "x"}]
            for fields in refusals:
                got = post_form(mine.url + "/api/v1/blocks/mark", fields)
                assert got == post_form(thanos.url + "/api/v1/blocks/mark", fields), fields
                assert got[0] == 400 and got[1]["errorType"] == "bad_data", got
            for fields in ({"id": a1, "action": "DELETION"}, {}):
                got = post_form(mine_ro.url + "/api/v1/blocks/mark", fields)
                assert got == post_form(readonly.url + "/api/v1/blocks/mark", fields)
                assert got == (400, {"status": "error", "errorType": "bad_data",
                                     "error": "Admin operations are disabled"}), got

            # markers: ours and Thanos' alike; a lower-case ULID is the block's (Go's parser accepts it)
            marks = {"a1": mine, "b2": thanos}
            for name, srv in marks.items():
                uid = bucket.ulid(name)
                assert post_form(srv.url + "/api/v1/blocks/mark", {"id": uid.lower(), "action": "DELETION",
                                                                   "detail": f"by {name}"}) == \
                    (204, None)
                assert post_form(srv.url + "/api/v1/blocks/mark", {"id": uid, "action": "NO_COMPACTION",
                                                                   "detail": f"nc {name}"}) == \
                    (204, None)
                # marking again leaves the marker (and succeeds), as Thanos
                assert post_form(srv.url + "/api/v1/blocks/mark", {"id": uid, "action": "DELETION"}) == (204, None)
            dm = {n: json.loads((bucket.root / bucket.ulid(n) / "deletion-mark.json").read_text()) for n in marks}
            nc = {n: json.loads((bucket.root / bucket.ulid(n) / "no-compact-mark.json").read_text()) for n in marks}
            assert dm["a1"].keys() == dm["b2"].keys() and nc["a1"].keys() == nc["b2"].keys()
            for n in marks:
                assert dm[n]["id"] == nc[n]["id"] == bucket.ulid(n)
                assert dm[n]["details"] == f"by {n}" and dm[n]["version"] == 1
                assert abs(dm[n]["deletion_time"] - time.time()) < 600
                assert (nc[n]["reason"], nc[n]["details"], nc[n]["version"]) == ("manual", f"nc {n}", 1)
            listed = subprocess.run([thanos_bin, "tools", "bucket", "ls", f"--objstore.config-file={bucket.config}",
                                     "--exclude-delete"], capture_output=True, text=True, timeout=120)
            assert listed.returncode == 0, listed.stderr
            assert set(listed.stdout.split()) == {bucket.ulid(n) for n in SHOWN + ["c1", "c2"]} - \
                {bucket.ulid("a1"), bucket.ulid("b2")}, listed.stdout

            # beyond Thanos: a ULID outside Crockford's alphabet and a block that is not there are refused
            bad = "0" * 25 + "U"
            assert post_form(mine.url + "/api/v1/blocks/mark", {"id": bad, "action": "DELETION"}) == (400, {
                "status": "error", "errorType": "bad_data",
                "error": f'ULID "{bad}" is not valid: ulid: bad data characters when unmarshaling'})
            ghost = _ulid.new()
            code, err = post_form(mine.url + "/api/v1/blocks/mark", {"id": ghost, "action": "NO_COMPACTION"})
            assert code == 400 and ghost in err["error"] and "not found" in err["error"], err
            assert not (bucket.root / ghost).exists()
    finally:
        thanos.stop()
        readonly.stop()


# --------------------------------------------------------------------------- the API without peers

class FakeFetcher:
    """A fetcher whose next answers the test sets: a FetchResult, an exception, or a wait on an event."""

    def __init__(self, bucket=None):
        self.bucket = bucket
        self.next: list = []
        self.calls = 0

    def fetch(self):
        self.calls += 1
        step = self.next.pop(0)
        if isinstance(step, threading.Event):
            step.wait(30)
            return FetchResult()
        if isinstance(step, BaseException):
            raise step
        return step

    def close(self) -> None:
        pass


def test_view_keeps_last_good_list_and_reports_errors(bucket):
    metas = {m.ulid: m for m in bucket_web_fetcher(bucket.open()).fetch().metas.values()}

    async def go():
        f = FakeFetcher()
        view = BlocksView(f, timeout=0.5)
        assert view.snapshot().refreshed_at is None and view.snapshot().metas == ()
        f.next.append(FetchResult(metas=dict(metas)))
        snap = await view.refresh_now()
        assert snap.err is None and {m.ulid for m in snap.metas} == set(metas) and snap.refreshed_at
        # a bucket error: the previous list stays, the error is reported
        f.next.append(OSError("bucket unreachable"))
        snap = await view.refresh_now()
        assert snap.err == "bucket unreachable" and {m.ulid for m in snap.metas} == set(metas)
        # some metas unreadable: the rest is new, those keep their previous meta, err says so
        gone = sorted(metas)[0]
        part = {u: m for u, m in metas.items() if u != gone}
        f.next.append(FetchResult(metas=part, failed={gone: "read timeout"}))
        snap = await view.refresh_now()
        assert {m.ulid for m in snap.metas} == set(metas)
        assert snap.err.startswith("incomplete view") and gone in snap.err and "read timeout" in snap.err
        # a fetch slower than the timeout: reported; the next refresh waits for it instead of starting another
        release = threading.Event()
        f.next.append(release)
        snap = await view.refresh_now()
        assert "timed out" in snap.err and {m.ulid for m in snap.metas} == set(metas) and f.calls == 4
        release.set()
        snap = await view.refresh_now()
        assert f.calls == 4 and snap.err is None and snap.metas == ()  # the slow fetch's (empty) answer
        # background loop: refreshes until stopped
        f.next.extend([FetchResult(metas=dict(metas))] * 10_000)
        view.refresh = 0.01
        view.start()
        deadline = time.monotonic() + 30
        while view.refreshes < 8:
            assert time.monotonic() < deadline, f"only {view.refreshes} refreshes"
            await asyncio.sleep(0.01)
        await view.stop()
        assert view.snapshot().err is None and len(view.snapshot().metas) == len(metas)

    asyncio.run(go())


def test_api_parameters_errors_views_and_routes(bucket):
    from aiohttp.test_utils import TestClient, TestServer

    bkt = bucket.open()
    fetcher = bucket_web_fetcher(bkt)
    metas = list(fetcher.fetch().metas.values())
    view = BlocksView(None)
    view.set(metas)
    loaded = LiveView(lambda: [m for m in metas if m.thanos.labels.get("cluster") == "us1"])

    async def go():
        app = web.Application()
        add_ui_routes(app, PREFIX)  # a querier's UI on the same app: its / and static dir are left alone
        add_blocks_routes(app, view, prefix=PREFIX + "/", loaded=loaded, bucket=bkt, label="cluster",
                          component="store")
        ro = web.Application()
        add_blocks_routes(ro, view, redirect_root=True, disable_admin=True)
        async with TestClient(TestServer(app)) as c, TestClient(TestServer(ro)) as r:
            async def blocks(client, base="", **params):
                resp = await client.get(base + "/api/v1/blocks", params=params)
                return resp.status, await resp.json()

            code, body = await blocks(c, PREFIX)
            ids = [b["ulid"] for b in body["data"]["blocks"]]
            assert code == 200 and set(ids) == {bucket.ulid(n) for n in SHOWN} and "total" not in body["data"]
            order = sorted(body["data"]["blocks"], key=lambda b: (b["minTime"], b["ulid"]))
            assert body["data"]["blocks"] == order
            # time window: blocks overlapping [minTime, maxTime] (a block ends before its maxTime)
            code, body = await blocks(c, PREFIX, minTime=T0 + 3 * H, maxTime=T0 + 5 * H)
            assert {b["ulid"] for b in body["data"]["blocks"]} == {bucket.ulid(n) for n in
                                                                  ("a2", "a5m", "a1h", "c12")}
            code, body = await blocks(c, PREFIX, minTime=T0 + 4 * H)
            assert body["data"]["blocks"] == []
            code, body = await blocks(c, PREFIX, maxTime=T0)
            assert {b["minTime"] for b in body["data"]["blocks"]} == {T0}
            code, body = await blocks(c, PREFIX, limit=2)
            assert [b["ulid"] for b in body["data"]["blocks"]] == ids[:2] and body["data"]["total"] == len(SHOWN)
            code, body = await blocks(c, PREFIX, limit=0, minTime=T0 + 2 * H)  # a1 and b1 end at T0+2h
            assert len(body["data"]["blocks"]) == body["data"]["total"] == len(SHOWN) - 2
            # bad parameters: Prometheus' error JSON naming the parameter
            for params, name in (({"minTime": "yesterday"}, "minTime"), ({"maxTime": "1.5"}, "maxTime"),
                                 ({"limit": "-1"}, "limit"), ({"limit": "ten"}, "limit"),
                                 ({"minTime": T0 + H, "maxTime": T0}, "maxTime")):
                code, body = await blocks(c, PREFIX, **params)
                assert code == 400 and body["status"] == "error" and body["errorType"] == "bad_data", body
                assert f'"{name}"' in body["error"], body
            # the second view; an unknown view is the global one (as Thanos)
            code, body = await blocks(c, PREFIX, view="loaded")
            assert {b["thanos"]["labels"]["cluster"] for b in body["data"]["blocks"]} == {"us1"}
            assert body["data"]["err"] is None and body["data"]["refreshedAt"] != ZERO_TIME
            assert len((await blocks(c, PREFIX, view="other"))[1]["data"]["blocks"]) == len(SHOWN)
            code, body = await blocks(r, view="loaded")
            assert len(body["data"]["blocks"]) == len(SHOWN)
            # CORS as Thanos' (on unless disabled)
            resp = await c.get(PREFIX + "/api/v1/blocks")
            assert resp.headers["Access-Control-Allow-Origin"] == "*"

            # pages: prefix and configuration reach the page; /loaded only with a second view
            for path, which in (("/blocks", "global"), ("/loaded", "loaded")):
                resp = await c.get(PREFIX + path)
                text = await resp.text()
                assert resp.status == 200 and resp.content_type == "text/html"
                assert f"window.PATH_PREFIX = {json.dumps(PREFIX)};" in text and "{{" not in text
                assert f'"view": "{which}"' in text and '"adminDisabled": false' in text
                assert f'src="{PREFIX}/static/blocks.js"' in text and "pythanos <span>store</span>" in text
            resp = await r.get("/blocks")
            assert '"adminDisabled": true' in await resp.text() and '"views": ["global"]' in await resp.text()
            assert (await r.get("/loaded")).status == 404
            for asset in ("blocks.js", "blocks.css", "common.js", "app.css"):
                assert (await c.get(f"{PREFIX}/static/{asset}")).status == 200
                assert (await r.get(f"/static/{asset}")).status == 200
            # / -> /blocks only when asked for (the querier's / stays /graph)
            resp = await r.get("/?find-overlapping=1", allow_redirects=False)
            assert resp.status == 302 and resp.headers["Location"] == "/blocks?find-overlapping=1"
            resp = await c.get(PREFIX + "/", allow_redirects=False)
            assert resp.status == 302 and resp.headers["Location"] == PREFIX + "/graph"
            # marking: GET is not allowed; a view without a bucket cannot mark
            assert (await c.get(PREFIX + "/api/v1/blocks/mark")).status == 405
            nob = web.Application()
            add_blocks_routes(nob, view)
            async with TestClient(TestServer(nob)) as n:
                resp = await n.post("/api/v1/blocks/mark", data={"id": bucket.ulid("a1"), "action": "DELETION"})
                assert resp.status == 500 and (await resp.json())["errorType"] == "internal"
            # a multipart form and the URL's fields count too (Go's FormValue)
            resp = await c.post(PREFIX + "/api/v1/blocks/mark?action=NO_COMPACTION",
                                data=aiohttp.FormData({"id": bucket.ulid("c12"), "detail": "multipart"},
                                                    default_to_multipart=True))
            assert resp.status == 204, await resp.text()
            nc = json.loads((bucket.root / bucket.ulid("c12") / "no-compact-mark.json").read_text())
            assert (nc["reason"], nc["details"]) == ("manual", "multipart")

    asyncio.run(go())
    fetcher.close()


def test_parse_ulid_and_snapshot_objects():
    u = _ulid.new()
    assert parse_ulid(u.lower()) == u
    for bad, msg in (("", "size"), ("0" * 27, "size"), ("é" * 26, "size"), ("é" * 13, "characters"), ("8" + "0" * 25, "overflow"),
                     ("0" * 25 + "I", "characters"), ("0" * 25 + "-", "characters")):
        with pytest.raises(ValueError, match=msg):
            parse_ulid(bad)
    snap = BlocksSnapshot([{"ulid": "B", "minTime": 5}, {"ulid": "A", "minTime": 5}, {"ulid": "C", "minTime": 1}])
    assert [o["ulid"] for o in snap.objects()] == ["C", "A", "B"] and snap.objects() is snap.objects()


# ------------------------------------------------------------------------------------ the page

BLOCKS = "[...document.querySelectorAll('#pools .block')].map(b => b.dataset.ulid)"
POOLS = "[...document.querySelectorAll('#pools .bv-pool')].map(p => p.dataset.title)"
DETAIL = "(f) => document.querySelector(`#details [data-field=\"${f}\"]`)?.innerText"


def test_page_in_chromium(bucket, chromium, tmp_path, request, capsys):
    bkt = bucket.open()

    async def mount(app):
        view = BlocksView(bucket_web_fetcher(bkt), refresh=1800, timeout=60)
        add_blocks_routes(app, view, prefix=PREFIX, label="cluster", component="compact", redirect_root=True)
        add_blocks_routes(app, view, prefix="/ro", disable_admin=True)
        return [view]

    async def scenario(url: str):
        async with aiohttp.ClientSession() as session:
            page = await chromium.page(session)
            await page.goto(url + PREFIX + "/")  # redirects to /blocks
            await page.wait_for(f"location.pathname === {json.dumps(PREFIX + '/blocks')}", what="redirect")
            drawn = await page.wait_for(f"(() => {{ const b = {BLOCKS}; return b.length === {len(SHOWN)} && b; }})()",
                                        what="the block spans")
            assert sorted(drawn) == sorted(bucket.ulid(n) for n in SHOWN)
            assert await page.eval(POOLS) == ["eu1", "eu2", "us1"]  # one row per label set, titled by --label
            # one axis for all rows: the same time sits at the same x in every row
            lefts = await page.eval("Object.fromEntries([...document.querySelectorAll('#pools .block')]"
                                    ".map(b => [b.dataset.ulid, Math.round(b.getBoundingClientRect().left)]))")
            assert lefts[bucket.ulid("a1")] == lefts[bucket.ulid("b1")] == lefts[bucket.ulid("c12")]
            assert lefts[bucket.ulid("a2")] > lefts[bucket.ulid("b2")] > lefts[bucket.ulid("b1")]
            # resolutions and levels stacked in lanes, drawn in distinct colours
            lanes = await page.eval("[...document.querySelectorAll('.bv-pool[data-title=eu1] .bv-lane')]"
                                    ".map(l => l.dataset.key)")
            assert lanes == ["0/1", "300000/2", "3600000/2"], lanes
            colours = await page.eval("[0, 300000, 3600000].map(r => getComputedStyle("
                                      "document.querySelector(`.block.res-${r}`)).backgroundColor)")
            assert len(set(colours)) == 3, colours

            # a 5m block's details
            five = bucket.ulid("a5m")
            await page.click(f'.block[data-ulid="{five}"]')
            await page.wait_for(f"document.querySelector('#detail-ulid')?.textContent === {json.dumps(five)}",
                                what="the details panel")
            field = f"({DETAIL})"
            assert await page.eval(f"{field}('resolution')") == "Resolution: 5m (300000 ms)"
            assert await page.eval(f"{field}('level')") == "Level: 2"
            assert await page.eval(f"{field}('source')") == "Source: compactor"
            assert await page.eval(f"{field}('start-time')") == "Start time: 2025-01-01 00:00:00 UTC"
            assert await page.eval(f"{field}('duration')") == "Duration: 4h"
            meta = bucket.blocks["a5m"]
            assert await page.eval(f"{field}('series')") == f"Series: {meta['stats']['numSeries']}"
            assert (await page.eval(f"{field}('total-size')")).startswith("Total size: ")
            sources = await page.eval(f"{field}('sources')")
            assert bucket.ulid("a1") in sources and bucket.ulid("a2") in sources
            assert 'cluster="eu1"' in await page.eval(f"{field}('labels')")
            downloaded = await page.eval("fetch(document.querySelector('#download').href).then(r => r.json())")
            assert downloaded == meta

            # find overlapping blocks: exactly the two raw us1 blocks, kept in the URL
            await page.click("#find-overlapping")
            hot = await page.wait_for("(() => { const o = [...document.querySelectorAll('#grid.find-overlapping "
                                      ".block.overlap')].map(b => b.dataset.ulid); return o.length && o; })()",
                                      what="highlighted overlaps")
            assert sorted(hot) == sorted([bucket.ulid("b1"), bucket.ulid("b2")])
            assert "find-overlapping=1" in await page.eval("location.search")
            shot = await page.screenshot(tmp_path / "blocks.png")

            # filter by compaction level, then search by ULID
            await page.click("#compaction-level")
            await page.eval("document.querySelector('#compaction-level').select()")
            await page.type("2")
            await page.click("#filter-compaction")
            want = sorted(bucket.ulid(n) for n in ("a5m", "a1h", "c12"))
            await page.wait_for(f"JSON.stringify({BLOCKS}.sort()) === {json.dumps(json.dumps(want, separators=(',', ':')))}",
                                what="level-2 blocks only")
            assert "compaction-level=2" in await page.eval("location.search")
            await page.click("#filter-compaction")
            await page.click("#search")
            await page.type(bucket.ulid("b2")[-8:].lower())
            await page.click("#search-button")
            await page.wait_for(f"JSON.stringify({BLOCKS}) === {json.dumps(json.dumps([bucket.ulid('b2')]))}",
                                what="search result")
            assert await page.eval(POOLS) == ["us1"]

            # mark from the page: no compaction for b2, with a reason
            await page.click(f'.block[data-ulid="{bucket.ulid("b2")}"]')
            await page.wait_for(f"document.querySelector('#detail-ulid')?.textContent === "
                                f"{json.dumps(bucket.ulid('b2'))}", what="b2's details")
            await page.click("#mark-no-compaction")
            await page.wait_for("document.querySelector('#mark-dialog').open", what="the mark dialog")
            await page.type("overlaps b1")
            await page.click("#mark-submit")
            result = await page.wait_for("!document.querySelector('#mark-result').hidden && "
                                         "document.querySelector('#mark-result').textContent", what="mark result")
            assert "marked for no compaction" in result, result
            marker = json.loads((bucket.root / bucket.ulid("b2") / "no-compact-mark.json").read_text())
            assert (marker["reason"], marker["details"]) == ("manual", "overlaps b1")

            # admin operations disabled: no mark buttons; rows titled by their label sets (no --label)
            await page.goto(url + "/ro/blocks?find-overlapping=1")
            await page.wait_for(f"{BLOCKS}.length === {len(SHOWN)}", what="the read-only page")
            assert await page.eval(POOLS) == ['{cluster="eu1", replica="0"}', '{cluster="eu2"}', '{cluster="us1"}']
            assert await page.eval("document.querySelector('#find-overlapping').checked") is True
            await page.click(f'.block[data-ulid="{bucket.ulid("c12")}"]')
            await page.wait_for("!!document.querySelector('#download')", what="details without admin")
            assert await page.eval("document.querySelectorAll('#mark-deletion, #mark-no-compaction').length") == 0
            assert page.errors == [], page.errors
            return shot

    with Server(mount) as srv:
        shot = run(scenario(srv.url))
    assert_png(shot, VIEWPORT)
    report_screenshot(request, capsys, shot)


# ------------------------------------------------------------------------- mounted by the components

def test_compactor_and_store_serve_the_block_viewer(bucket, pythanos_factory, tmp_path):
    """``pythanos compact --wait``: /blocks the whole bucket, /loaded the compactor's own (filtered)
    view; ``pythanos store``: its loaded blocks; both pages served, / redirected to /blocks."""
    h = free_port()
    base = f"http://127.0.0.1:{h}"
    comp = pythanos_factory(["compact", "--wait", "--wait-interval=1h", "--downsampling.disable",
                             f"--objstore.config-file={bucket.config}", f"--data-dir={tmp_path / 'compact'}",
                             f"--http-address=127.0.0.1:{h}"], ready_url=base + "/-/ready", name="compact")

    def ulids(url: str) -> set[str]:
        code, body = get_json(url)
        return {b["ulid"] for b in body["data"]["blocks"]} if code == 200 else set()

    everything = {bucket.ulid(n) for n in bucket.blocks}
    comp.wait_ready(lambda: ulids(base + "/api/v1/blocks") == everything, 60, what="the global view of every block")
    # the compactor's view: fresh sidecar blocks wait for the consistency delay; compactor-made ones do not
    made = {bucket.ulid(n) for n in ("a5m", "a1h", "c12")}
    comp.wait_ready(lambda: ulids(base + "/api/v1/blocks?view=loaded") == made, 60,
                    what="the compactor's view in view=loaded")
    for path in ("/blocks", "/loaded"):
        code, text = http_get(base + path)
        assert code == 200 and b'"component": "compact"' in text and b'"views": ["global", "loaded"]' in text
    with urllib.request.urlopen(base + "/") as r:  # redirected
        assert r.url == base + "/blocks"

    g, h = free_port(), free_port()
    store = pythanos_factory(["store", f"--objstore.config-file={bucket.config}", f"--data-dir={tmp_path / 'store'}",
                              f"--http-address=127.0.0.1:{h}", f"--grpc-address=127.0.0.1:{g}"],
                             ready_url=f"http://127.0.0.1:{h}/-/ready", name="store")
    base = f"http://127.0.0.1:{h}"
    shown = {bucket.ulid(n) for n in SHOWN}
    assert ulids(base + "/api/v1/blocks?view=loaded") == ulids(base + "/api/v1/blocks") == shown
    code, text = http_get(base + "/loaded")
    assert code == 200 and b'"component": "store"' in text
    assert post_form(base + "/api/v1/blocks/mark", {"id": bucket.ulid("b1"), "action": "NO_COMPACTION"}) == \
        (204, None)
    assert (bucket.root / bucket.ulid("b1") / "no-compact-mark.json").exists()
    comp.stop()
    store.stop()


def test_tools_bucket_web_command_serves_what_thanos_serves(bucket, thanos_bin, pythanos_factory, tmp_path):
    """``pythanos tools bucket web`` (the command, with Thanos' flags) answers as ``thanos tools
    bucket web`` on the same bucket, under a route prefix, and serves the page."""
    thanos = start_thanos_web(thanos_bin, bucket, tmp_path / "thanos", "--label=cluster")
    port = free_port()
    url = f"http://127.0.0.1:{port}/ui"
    p = pythanos_factory(["tools", "bucket", "web", f"--objstore.config-file={bucket.config}",
                          f"--http-address=127.0.0.1:{port}", "--label=cluster", "--web.route-prefix=/ui",
                          "--refresh=30m", "--timeout=1m"], ready_url=f"http://127.0.0.1:{port}/-/ready",
                         name="bucket-web")
    try:
        p.wait_ready(lambda: get_json(url + "/api/v1/blocks")[1]["data"]["refreshedAt"] != ZERO_TIME, 60,
                     "first refresh")
        _, mine = get_json(url + "/api/v1/blocks")
        _, theirs = get_json(thanos.url + "/api/v1/blocks")
        assert canonical(mine["data"]["blocks"]) == canonical(theirs["data"]["blocks"])
        assert mine["data"]["label"] == theirs["data"]["label"] == "cluster"
        assert http_get(url + "/blocks")[0] == 200
    finally:
        thanos.stop()
