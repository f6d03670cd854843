"""The querier's web UI (``pythanos.web``) in a real headless Chromium, driven over the DevTools protocol.

Behind the UI is a querier HTTP API in front of real Prometheus servers that scrape themselves every
second (``up``, ``prometheus_*``), with the UI under an external prefix (``/thanos``) so every URL it
builds must carry it. Two backends (``querier`` fixture):

* ``proxy``: a stand-in querier (aiohttp app mounting ``add_ui_routes`` and forwarding ``/api/v1/*`` to one
  Prometheus, with a fixed ``/api/v1/stores`` document holding a healthy sidecar and a broken store);
* ``query``: the real chain, two Prometheus HA replicas (external labels ``cluster=eu1``, ``replica=0|1``)
  -> two ``pythanos sidecar`` -> ``pythanos query --query.replica-label=replica --web.external-prefix=/thanos``.

The test types into the query box as a person would (key events, mouse clicks) and reads the DOM back:

* ``/`` redirects to ``/graph`` keeping URL state; autocomplete offers metric names while typing (and
  functions; label names inside a selector) and Enter takes one;
* Execute draws a real plot (the series' colour is on the canvas), a legend entry per series, a tooltip
  on hover; the table tab lists the series with their value;
* the dedup / partial-response toggles are sent (``dedup=false``, ``partial_response=true``, seen in the
  browser's own network log) and kept in the URL; with the real querier, dedup off shows both replicas;
* a bad expression shows Prometheus' ``bad_data`` error; a ``/graph?g0.expr=...`` link opens and runs;
* the stores page lists every endpoint with its label sets, time range and health;
* no JavaScript exception, console error or failed asset load on any page.

Screenshots (graph tab with a hover tooltip, stores page) are written to the test's tmp dir, checked to be
real PNGs, and their paths printed.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from browser import VIEWPORT, assert_png, report_screenshot, run
from peers import free_port, free_ports, http_get, missing
from pythanos.web import add_ui_routes

PREFIX = "/thanos"
PROM_CONFIG = """\
global:
  scrape_interval: 1s
  external_labels:
    cluster: eu1
    replica: '{replica}'
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:{port}']
    relabel_configs:
      - target_label: instance
        replacement: prometheus
"""
SERIES_BLUE = (0x1F, 0x77, 0xB4)  # the first colour of the plot's palette
HEAD_SERIES = 'prometheus_tsdb_head_series{%sinstance="prometheus", job="prometheus"%s}'


# ------------------------------------------------------------------------------- the API behind the UI

def start_prometheus(prometheus_factory, replica: str = "0"):
    """A real Prometheus scraping itself every second. The factory picks the port, so the config naming
    it is written after the start and loaded with SIGHUP; returns once its own samples are in."""
    prom = prometheus_factory(config_yaml=PROM_CONFIG.format(port=1, replica=replica), name=f"prometheus-{replica}")
    Path(prom.extra["config_file"]).write_text(PROM_CONFIG.format(port=prom.port, replica=replica))
    os.kill(prom.pid, signal.SIGHUP)
    prom.wait_ready(lambda: json.loads(http_get(prom.url + "/api/v1/query?query=up%3D%3D1")[1])["data"]["result"],
                    60, what="Prometheus scraping itself")
    # the graph test draws the last minute of prometheus_tsdb_head_series: a line needs several
    # samples (one sample is a dot of a few pixels)
    enough = "/api/v1/query?query=" + urllib.parse.quote("count_over_time(prometheus_tsdb_head_series[1m]) >= 5")
    prom.wait_ready(lambda: json.loads(http_get(prom.url + enough)[1])["data"]["result"], 60,
                    what="five scrapes of Prometheus itself")
    return prom


def _rfc3339(t: float) -> str:
    """As Go writes time.Time into JSON (nanoseconds), as Thanos' /api/v1/stores has it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


@dataclass
class Backend:
    kind: str  # "proxy" or "query"
    url: str  # the UI's base URL, prefix included
    proms: list = field(default_factory=list)
    sidecars: list = field(default_factory=list)  # (Process, gRPC address) with the real querier

    def series(self, dedup: bool) -> list[str]:
        """The legend / table names of ``prometheus_tsdb_head_series`` with dedup on or off."""
        if self.kind == "proxy":  # Prometheus' own API: no external labels
            return [HEAD_SERIES % ("", "")]
        if dedup:
            return [HEAD_SERIES % ('cluster="eu1", ', "")]
        return [HEAD_SERIES % ('cluster="eu1", ', f', replica="{r}"') for r in ("0", "1")]

    def wait_scraped(self, seconds: int) -> None:
        """Until every Prometheus has ``seconds`` of its own samples (for a graph worth a screenshot)."""
        q = urllib.parse.quote(f"count_over_time(up[{seconds * 2}s]) >= {seconds}")
        for p in self.proms:
            p.wait_ready(lambda: json.loads(http_get(f"{p.url}/api/v1/query?query={q}")[1])["data"]["result"],
                         seconds * 3, what=f"{seconds}s of samples")


class ProxyQuerier:
    """A stand-in querier HTTP API on 127.0.0.1: the UI under ``prefix``, ``/api/v1/*`` forwarded to a
    real Prometheus (dropping Thanos' ``dedup`` / ``partial_response``), ``/api/v1/stores`` a fixed document."""

    def __init__(self, prom_url: str, prefix: str, stores: dict):
        self.prom_url, self.prefix, self.stores = prom_url, prefix, stores
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{prefix}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _forward(self, request: web.Request) -> web.Response:
        params = {k: v for k, v in request.query.items() if k not in ("dedup", "partial_response")}
        async with self.session.request(request.method, f"{self.prom_url}/api/v1/{request.match_info['tail']}",
                                        params=params, data=await request.read() or None,
                                        headers={"Content-Type": request.content_type}) as r:
            return web.Response(status=r.status, body=await r.read(), content_type="application/json")

    async def _stores(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": self.stores})

    async def _start(self) -> None:
        self.session = aiohttp.ClientSession()
        app = web.Application()
        add_ui_routes(app, self.prefix)
        app.router.add_get(self.prefix + "/api/v1/stores", self._stores)
        app.router.add_route("*", self.prefix + "/api/v1/{tail:.*}", self._forward)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.session.close()

    def start(self) -> "ProxyQuerier":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def query_command_exists(pythanos_bin: str) -> bool:
    return subprocess.run([pythanos_bin, "query", "--help"], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(params=["proxy", "query"])
def querier(request, prometheus_factory):
    if request.param == "proxy":
        prom = start_prometheus(prometheus_factory)
        now_ms = int(time.time() * 1000)
        stores = {
            "sidecar": [{"name": "127.0.0.1:10901", "lastCheck": _rfc3339(time.time() - 2), "lastError": None,
                         "labelSets": [{"cluster": "eu1", "replica": "0"}],
                         "minTime": now_ms - 3600_000, "maxTime": 9223372036854775807}],
            "store": [{"name": "127.0.0.1:10905", "lastCheck": _rfc3339(time.time() - 5),
                       "lastError": "rpc error: code = Unavailable desc = connection refused",
                       "labelSets": [], "minTime": -9223372036854775808, "maxTime": 9223372036854775807}],
        }
        q = ProxyQuerier(prom.url, PREFIX, stores).start()
        yield Backend("proxy", q.url, [prom])
        q.stop()
        return

    pythanos_bin = request.getfixturevalue("pythanos_bin")
    if not query_command_exists(pythanos_bin):
        missing("the `pythanos query` command (components/pythanos/query)")
    pythanos_factory = request.getfixturevalue("pythanos_factory")
    proms, endpoints, sidecars = [], [], []
    for replica in ("0", "1"):
        prom = start_prometheus(prometheus_factory, replica)
        g, h = free_ports(2)
        sidecar = pythanos_factory(["sidecar", f"--prometheus.url={prom.url}", f"--grpc-address=127.0.0.1:{g}",
                          f"--http-address=127.0.0.1:{h}", "--prometheus.get_config_interval=1s"],
                         ready_url=f"http://127.0.0.1:{h}/-/ready", name=f"sidecar-{replica}", ready_timeout=120)
        proms.append(prom)
        endpoints.append(f"127.0.0.1:{g}")
        sidecars.append((sidecar, f"127.0.0.1:{g}"))
    g, h = free_ports(2)
    q = pythanos_factory(["query", f"--http-address=127.0.0.1:{h}", f"--grpc-address=127.0.0.1:{g}",
                          "--query.replica-label=replica", f"--web.external-prefix={PREFIX}",
                          *[f"--endpoint={e}" for e in endpoints]], name="query")
    base = f"http://127.0.0.1:{h}"

    def all_healthy() -> bool:
        for root in (base + PREFIX, base):  # the API under the prefix, or at / as Thanos serves it
            code, body = http_get(root + "/api/v1/stores", timeout=2)
            if code == 200:
                up = {s["name"] for group in json.loads(body)["data"].values() for s in group if not s.get("lastError")}
                return all(e in up for e in endpoints)
        return False

    q.wait_ready(all_healthy, 60, what="both sidecars healthy in /api/v1/stores")
    yield Backend("query", base + PREFIX, proms, sidecars)


# ------------------------------------------------------------------------------------- the browser
# (Chromium, its tabs and screenshot checks: tests/browser.py)

def set_expr(text: str) -> str:
    return f"(() => {{ const e = document.querySelector('#expr'); e.value = {json.dumps(text)}; }})()"


ROWS = ("[...document.querySelectorAll('.store-group')].flatMap(g => [...g.querySelectorAll('tbody tr')]"
        ".map(tr => [g.dataset.type, ...[...tr.querySelectorAll('td')].map(td => td.innerText.trim())]))")
LEGEND = "[...document.querySelectorAll('#legend li')].map(li => li.textContent)"
SUGGESTIONS = ("!document.querySelector('#suggest').hidden && [...document.querySelectorAll('#suggest li')]"
               ".map(li => li.dataset.value + ' ' + li.querySelector('.kind').textContent)")


# --------------------------------------------------------------------------------------------- tests

def test_graph_page_autocomplete_plot_table_and_toggles(querier, chromium, tmp_path, request, capsys):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            page = await chromium.page(session)

            # / redirects to /graph keeping URL state, under the external prefix. (A 1m range: these
            # Prometheus servers have only seconds of samples, fewer than one step of a 1h range.)
            await page.goto(querier.url + "/?g0.range_input=1m")
            await page.wait_for(f"location.pathname === {json.dumps(PREFIX + '/graph')}", what="redirect to graph")
            assert await page.eval("document.querySelector('#range').value") == "1m"
            assert await page.eval("document.querySelector('link[rel=stylesheet]').sheet.cssRules.length") > 10

            # autocomplete: typing offers metric names; Enter takes the first one
            await page.click("#expr")
            await page.type("prometheus_tsdb_head_ser")
            offered = await page.wait_for(SUGGESTIONS, what="suggestions")
            shots = [await page.screenshot(tmp_path / "autocomplete.png")]
            assert offered[0] == "prometheus_tsdb_head_series metric", offered
            assert all("prometheus_tsdb_head_ser" in o and o.endswith(" metric") for o in offered), offered
            await page.key("Enter")
            assert await page.eval("document.querySelector('#expr').value") == "prometheus_tsdb_head_series"
            assert await page.eval("document.querySelector('#suggest').hidden")

            # functions are offered too (taken with their parenthesis), and only label names in a selector
            await page.eval(set_expr(""))
            await page.type("sum(rat")
            offered = await page.wait_for(SUGGESTIONS, what="function suggestions")
            assert "rate function" in offered, offered
            await page.key("ArrowDown")
            await page.key("ArrowUp")
            await page.key("Tab")
            assert await page.eval("document.querySelector('#expr').value") == "sum(rate("
            await page.eval(set_expr("up{"))
            await page.type("jo")
            offered = await page.wait_for(SUGGESTIONS, what="label suggestions")
            assert offered[0] == "job label" and all(o.endswith(" label") for o in offered), offered
            await page.key("Escape")
            assert await page.eval("document.querySelector('#suggest').hidden")

            # graph tab (the default): Execute draws one line per series
            await page.eval(set_expr(""))
            await page.type("prometheus_tsdb_head_series")
            await page.key("Escape")
            n = len(page.api_calls)
            await page.click("#execute")
            await page.wait_for("/Result series: 1\\b/.test(document.querySelector('#stats').textContent)",
                                what="graph result")
            assert await page.eval(LEGEND) == querier.series(dedup=True)
            blue = await page.eval(
                "(() => { const c = document.querySelector('#canvas'); const d = c.getContext('2d')"
                ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
                f" for (let i = 0; i < d.length; i += 4) if (d[i] === {SERIES_BLUE[0]} && d[i+1] === {SERIES_BLUE[1]}"
                f" && d[i+2] === {SERIES_BLUE[2]}) n++; return n; }})()")
            assert blue > 30, f"the series line is not on the canvas ({blue} pixels of its colour)"
            params = await page.api_call_after(n, "query_range")
            assert params["query"] == "prometheus_tsdb_head_series", params
            assert params["dedup"] == "true" and params["partial_response"] == "false", params
            assert float(params["end"]) - float(params["start"]) == pytest.approx(60, abs=1)

            # hover over the line's last sample: tooltip with the series and its value
            point = await page.eval(
                "(() => { const r = document.querySelector('#canvas').getBoundingClientRect();"
                " const s = plot.series[0]; const p = s.points[s.points.length - 1];"
                " return [r.x + plot.geo.x(p[0]), r.y + plot.geo.y(p[1]), p[1]]; })()")
            await page.hover(point[0] - 1, point[1])
            tip = await page.wait_for("!document.querySelector('#tooltip').hidden && "
                                      "document.querySelector('#tooltip').innerText", what="tooltip")
            assert "prometheus_tsdb_head_series" in tip and f"Value: {point[2]:g}" in tip, tip

            # table tab: the series with its current value; URL state follows
            n = len(page.api_calls)
            await page.click("#tab-table")
            await page.wait_for("document.querySelectorAll('#table tbody td.series').length === 1", what="table")
            row = await page.eval("[...document.querySelectorAll('#table tbody td')].map(td => td.textContent)")
            assert row[0] == querier.series(dedup=True)[0] and float(row[1]) > 0, row
            assert (await page.api_call_after(n, "query"))["query"] == "prometheus_tsdb_head_series"
            assert "g0.tab=1" in await page.eval("location.search")

            # dedup off: sent, kept in the URL, and (with HA replicas behind a real querier) both replicas show
            n = len(page.api_calls)
            await page.click("#dedup")
            want = querier.series(dedup=False)
            await page.wait_for(f"document.querySelectorAll('#table tbody td.series').length === {len(want)} && "
                                "/g0.dedup=0/.test(location.search)", what="table without dedup")
            assert await page.eval("[...document.querySelectorAll('#table td.series')].map(td => td.textContent)"
                                   ) == want
            shots.append(await page.screenshot(tmp_path / "table.png"))
            params = await page.api_call_after(n, "query")
            assert params["dedup"] == "false" and params["partial_response"] == "false", params
            # partial response on: sent and kept in the URL
            n = len(page.api_calls)
            await page.click("#partial")
            await page.wait_for("/g0.partial_response=1/.test(location.search)", what="partial response in URL")
            await page.wait_for("!!document.querySelector('#table tbody td.series')", what="table")
            params = await page.api_call_after(n, "query")
            assert params["dedup"] == "false" and params["partial_response"] == "true", params

            # a bad expression: Prometheus' error, shown as such
            await page.eval(set_expr(""))
            await page.click("#expr")
            await page.type("sum(up")
            await page.key("Escape")
            await page.key("Enter")
            err = await page.wait_for("!document.querySelector('#error').hidden && "
                                      "document.querySelector('#error').textContent", what="error")
            assert "bad_data" in err and "parse error" in err, err

            # a link with URL state opens and runs its query, on the graph tab
            querier.wait_scraped(20)  # for a graph worth a look in the screenshot
            expr = "sum by (handler) (prometheus_http_requests_total)"
            link = querier.url + "/graph?" + urllib.parse.urlencode({
                "g0.expr": expr, "g0.tab": "0", "g0.range_input": "30s", "g0.dedup": "1", "g0.partial_response": "0"})
            n = len(page.api_calls)
            await page.goto(link)
            await page.wait_for("document.querySelectorAll('#legend li').length >= 3", what="graph from link")
            assert await page.eval("document.querySelector('#expr').value") == expr
            assert await page.eval("document.querySelector('#range').value") == "30s"
            assert await page.eval("document.querySelector('#dedup').checked") is True
            params = await page.api_call_after(n, "query_range")
            assert (params["query"], params["dedup"], params["partial_response"]) == (expr, "true", "false"), params
            assert float(params["end"]) - float(params["start"]) == pytest.approx(30, abs=1)
            assert '{handler="/metrics"}' in await page.eval(LEGEND)  # (scrapes: in either backend)
            # hover the highest line for the screenshot
            point = await page.eval(
                "(() => { const r = document.querySelector('#canvas').getBoundingClientRect();"
                " const s = plot.series.reduce((a, b) => a.points.at(-1)[1] > b.points.at(-1)[1] ? a : b);"
                " const p = s.points[Math.floor(s.points.length * 0.7)];"
                " return [r.x + plot.geo.x(p[0]), r.y + plot.geo.y(p[1])]; })()")
            await page.hover(point[0], point[1])
            await page.wait_for("!document.querySelector('#tooltip').hidden", what="tooltip")

            shots.append(await page.screenshot(tmp_path / "graph.png"))
            assert page.errors == [], page.errors
            return shots

    for shot in run(scenario()):
        assert_png(shot, VIEWPORT)
        report_screenshot(request, capsys, shot)


def test_stores_page_lists_endpoints_with_labels_times_and_health(querier, chromium, tmp_path, request, capsys):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            page = await chromium.page(session)
            await page.goto(querier.url + "/stores")
            await page.wait_for("document.querySelectorAll('#stores tbody tr').length >= 2", what="store rows")
            rows = await page.eval(ROWS)
            year = time.strftime("%Y-", time.gmtime())
            up = [r for r in rows if r[2] == "UP"]
            assert up and all(r[0] == "sidecar" for r in up), rows
            for kind, name, status, labels, min_t, max_t, checked, error in up:
                assert name.startswith("127.0.0.1:"), name
                assert 'cluster="eu1"' in labels and 'replica="' in labels, labels
                assert min_t.startswith(year) and max_t == "+∞", (min_t, max_t)
                assert checked.endswith("ago") or checked == "just now", checked
                assert error == ""
            if querier.kind == "proxy":
                assert [r[0] for r in rows] == ["sidecar", "store"], rows
                assert rows[1][1:] == ["127.0.0.1:10905", "DOWN", "none", "-∞", "+∞", rows[1][6],
                                       "rpc error: code = Unavailable desc = connection refused"], rows
            else:  # the two HA replicas' sidecars; then one goes away and is shown down, with the querier's error
                assert sorted(r[3] for r in up) == ['cluster="eu1"\nreplica="0"', 'cluster="eu1"\nreplica="1"'], rows
                sidecar, address = querier.sidecars[1]
                sidecar.stop()
                deadline = time.monotonic() + 60
                while not await page.eval(f"[...document.querySelectorAll('tr.down')].some(tr => "
                                          f"tr.dataset.name === {json.dumps(address)})"):
                    assert time.monotonic() < deadline, f"{address} not shown down: {await page.eval(ROWS)}"
                    await page.click("#refresh")
                    await asyncio.sleep(1)
                down = [r for r in await page.eval(ROWS) if r[1] == address][0]
                assert down[2] == "DOWN" and down[7], down
            assert await page.eval("document.querySelector('.navlink').getAttribute('href')") == PREFIX + "/graph"
            shot = await page.screenshot(tmp_path / "stores.png")
            assert page.errors == [], page.errors
            return shot

    shot = run(scenario())
    assert_png(shot, (VIEWPORT[0], 300))
    report_screenshot(request, capsys, shot)


# ----------------------------------------------------------------------- the routes, without a browser

@pytest.mark.parametrize("prefix, base", [("", ""), ("/thanos", "/thanos"), ("thanos/", "/thanos"), ("/", "")])
def test_routes_under_prefix(prefix, base):
    """Pages, redirect and assets under the (normalized) prefix; the prefix reaches the page as a JS
    string and in every asset link; nothing outside the static dir is served."""
    from aiohttp.test_utils import TestClient, TestServer

    async def go():
        app = web.Application()
        add_ui_routes(app, prefix)
        async with TestClient(TestServer(app)) as c:
            r = await c.get(base + "/?g0.expr=up", allow_redirects=False)
            assert r.status == 302 and r.headers["Location"] == base + "/graph?g0.expr=up"
            if base:
                r = await c.get(base, allow_redirects=False)
                assert r.status == 302 and r.headers["Location"] == base + "/graph"
            for page, script in (("/graph", "graph.js"), ("/stores", "stores.js")):
                r = await c.get(base + page)
                text = await r.text()
                assert r.status == 200 and r.content_type == "text/html", (page, r.status)
                assert f"window.PATH_PREFIX = {json.dumps(base)};" in text
                assert f'src="{base}/static/{script}"' in text and f'href="{base}/static/app.css"' in text
                assert "{{" not in text
            for asset, ctype in (("app.css", "text/css"), ("common.js", "javascript"), ("graph.js", "javascript"),
                                 ("stores.js", "javascript"), ("favicon.svg", "image/svg+xml")):
                r = await c.get(f"{base}/static/{asset}")
                assert r.status == 200 and ctype in r.content_type, (asset, r.status, r.content_type)
            r = await c.get(base + "/static/../__init__.py")
            assert r.status in (403, 404)
            r = await c.get(base + "/static/%2e%2e/__init__.py")
            assert r.status in (403, 404)

    asyncio.run(go())


def test_prefix_cannot_break_out_of_the_page():
    from pythanos.web import render_page

    text = render_page("graph.html", '/a"</script><script>alert(1)</script>')
    assert "</script><script>alert(1)" not in text
    assert 'href="/a&quot;&lt;/script&gt;' in text
