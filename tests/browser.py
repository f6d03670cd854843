"""Headless Chromium driven over the DevTools protocol, shared by the web UI tests.

``chromium_bin`` finds Debian's ``chromium`` (missing: a failure under CI=true, else a skip); the
``chromium`` fixture starts one headless browser per test; :class:`Page` is one tab: evaluate
JavaScript, poll the DOM until a condition holds, click and type as a person would, screenshots.
"""
from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import urllib.parse
from pathlib import Path

import aiohttp
import pytest

from peers import REGISTRY, find_binary, missing

VIEWPORT = (1280, 900)


@pytest.fixture(scope="session")
def chromium_bin() -> str:
    """Debian's ``chromium`` (scripts/system-peers.sh installs it)."""
    return (find_binary("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
            or missing("chromium (Debian package chromium; scripts/system-peers.sh)"))


class Page:
    """One Chromium tab over the DevTools protocol (aiohttp websocket client)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.errors: list[str] = []  # uncaught exceptions and console.error calls
        self.api_calls: list[tuple[str, dict]] = []  # ("query_range", {params}) as the page sent them
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self.pending.pop(data["id"], None)
                if fut and not fut.done():
                    fut.set_result(data)
            elif data.get("method") == "Network.requestWillBeSent":
                url = urllib.parse.urlsplit(data["params"]["request"]["url"])
                if "/api/v1/" in url.path:
                    self.api_calls.append((url.path.split("/api/v1/", 1)[1], dict(urllib.parse.parse_qsl(url.query))))
            elif data.get("method") == "Runtime.exceptionThrown":
                d = data["params"]["exceptionDetails"]
                self.errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif data.get("method") == "Runtime.consoleAPICalled" and data["params"]["type"] == "error":
                self.errors.append("console.error: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in data["params"]["args"]))
            elif data.get("method") == "Log.entryAdded" and data["params"]["entry"]["level"] == "error":
                entry = data["params"]["entry"]
                if entry.get("source") == "network" and "/api/v1/" in entry.get("url", ""):
                    continue  # an API error answer (a bad query): the page shows it, checked by the test
                self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}")

    async def send(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params or {}})
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def eval(self, expr: str):
        r = await self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expr: str, timeout: float = 20, what: str = ""):
        """Polls a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.eval(expr)
            if value:
                return value
            if time.monotonic() > deadline:
                body = await self.eval("document.querySelector('main') && document.querySelector('main').innerText")
                raise AssertionError(f"timed out waiting for {what or expr}; page text:\n{body}\n"
                                     f"JS errors: {self.errors}")
            await asyncio.sleep(0.1)

    async def api_call_after(self, n: int, path: str, timeout: float = 20) -> dict:
        """The parameters of the first ``/api/v1/{path}`` request the page sent after its ``n``-th API request."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p, params in self.api_calls[n:]:
                if p == path:
                    return params
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {path} request after #{n}: {self.api_calls}")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for(f"location.href.startsWith({json.dumps(url.split('?')[0].rsplit('/', 1)[0])}) && "
                            "document.readyState === 'complete'", what=f"load of {url}")

    async def center(self, selector: str) -> tuple[float, float]:
        box = await self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                              " if (!e) return null; const r = e.getBoundingClientRect();"
                              " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        assert box, f"no element {selector}"
        return box[0], box[1]

    async def click(self, selector: str) -> None:
        x, y = await self.center(selector)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent",
                            {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    async def hover(self, x: float, y: float) -> None:
        await self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})

    async def type(self, text: str) -> None:
        for ch in text:  # one input event per character, like typing
            await self.send("Input.insertText", {"text": ch})

    async def key(self, key: str) -> None:
        codes = {"Enter": 13, "Escape": 27, "ArrowDown": 40, "ArrowUp": 38, "Tab": 9, "Backspace": 8}
        ev = {"key": key, "code": key, "windowsVirtualKeyCode": codes[key]}
        await self.send("Input.dispatchKeyEvent", {"type": "rawKeyDown", **ev})
        await self.send("Input.dispatchKeyEvent", {"type": "keyUp", **ev})

    async def screenshot(self, path: Path) -> Path:
        r = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(r["data"]))
        return path


class Chromium:
    """Headless Chromium on a DevTools port chosen by itself (read from DevToolsActivePort)."""

    def __init__(self, binary: str, work: Path):
        profile = work / "profile"
        self.proc = REGISTRY.start("chromium", [
            binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
            "--disable-background-networking", "--disable-component-update", "--hide-scrollbars",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "about:blank"], work)
        port_file = profile / "DevToolsActivePort"
        self.proc.wait_ready(lambda: port_file.exists() and port_file.read_text().count("\n") >= 1, 60,
                             what="DevToolsActivePort")
        self.port = int(port_file.read_text().split()[0])

    async def page(self, session: aiohttp.ClientSession) -> Page:
        async with session.get(f"http://127.0.0.1:{self.port}/json/list") as r:
            targets = await r.json()
        target = next(t for t in targets if t["type"] == "page")
        ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        for domain in ("Page", "Runtime", "Log", "Network"):
            await page.send(f"{domain}.enable")
        await page.send("Emulation.setDeviceMetricsOverride",
                        {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False})
        return page

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture
def chromium(chromium_bin, tmp_path_factory):
    browser = Chromium(chromium_bin, tmp_path_factory.mktemp("chromium"))
    yield browser
    browser.stop()


def assert_png(path: Path, min_size: tuple[int, int] = (800, 600)) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= min_size[0] and height >= min_size[1], (width, height)
    assert len(data) > 20_000, f"{path}: {len(data)} bytes, a blank page?"
    return width, height


def report_screenshot(request, capsys, path: Path) -> None:
    """The screenshot's path in the test's output (and in its report's user properties)."""
    request.node.user_properties.append(("screenshot", str(path)))
    with capsys.disabled():
        print(f"\n{request.node.nodeid}: screenshot {path}")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 240))
