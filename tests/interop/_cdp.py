"""A headless Chromium driven through the DevTools protocol (just what the tests use)."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from ._peers import peer_process

# How Chromium must start on these machines (closed network, root, no screen).
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--remote-allow-origins=*", "--window-size=800,600",
]  # fmt: skip


@attrs.define(eq=False)
class Page:
    """One page target over its DevTools websocket."""

    ws: WebSocketConnection
    ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events in between are dropped)."""
        ident = next(self.ids)
        await self.ws.send_message(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            reply = json.loads(await self.ws.get_message())
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply["result"])

    async def evaluate(self, expression: str) -> Any:
        """Evaluate ``expression`` in the page, awaiting a promise; raise on a JS exception."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        """Write a PNG of the page to ``path``."""
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


async def _http_get_json(port: int, target: str) -> Any:
    """GET a DevTools JSON endpoint (Chromium keeps the connection open: read by length)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        await stream.send_all(request.encode())
        raw = bytearray()
        while b"\r\n\r\n" not in raw:
            chunk = await stream.receive_some()
            if not chunk:
                return []
            raw += chunk
        head, _, body = bytes(raw).partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = await stream.receive_some()
            if not chunk:
                return []
            body += chunk
    # Right after start-up Chromium may answer nothing useful yet: the caller asks again.
    return json.loads(body) if head.startswith(b"HTTP/1.1 200") and body else []


@contextlib.asynccontextmanager
async def chromium(
    binary: str,
    url: str,
    profile: Path,
    *,
    env: dict[str, str],
    ready: str = "true",
    warm_up: tuple[str, ...] = (),
) -> AsyncIterator[Page]:
    """Start headless Chromium with a fresh profile, load ``url``, yield its page.

    The page counts as loaded once the JavaScript expression ``ready`` is true there.
    ``warm_up`` pages are loaded first, each until the load completes (an error page too).
    """
    profile.mkdir(parents=True, exist_ok=True)
    argv = [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
    async with peer_process(
        argv, stderr=profile.parent / "chromium-stderr.txt", stdin=False, stdout=False, env=env
    ):
        port_file = profile / "DevToolsActivePort"
        with trio.fail_after(60):
            while not port_file.exists() or not port_file.read_text().strip():
                await trio.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            while True:
                pages = [t for t in await _http_get_json(port, "/json/list") if t["type"] == "page"]
                if pages:
                    break
                await trio.sleep(0.05)
        async with open_websocket_url(
            pages[0]["webSocketDebuggerUrl"], max_message_size=64 * 1024 * 1024
        ) as ws:
            page = Page(ws=ws)
            for first in warm_up:
                await page.call("Page.navigate", url=first)
                with trio.fail_after(60):
                    # An error page (the server's 400) has another address: wait for any.
                    loaded = "location.href !== 'about:blank' && document.readyState === 'complete'"
                    while not await page.evaluate(loaded):
                        await trio.sleep(0.05)
            await page.call("Page.navigate", url=url)
            with trio.fail_after(60):
                while not await page.evaluate(f"location.href === {json.dumps(url)} && {ready}"):
                    await trio.sleep(0.05)
            yield page


def nss_trust(home: Path, certutil: str, ca: Path) -> None:
    """Make an NSS database in ``home`` (Chromium's on Linux) that trusts ``ca``."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run([certutil, "-d", f"sql:{db}", "-N", "--empty-password"], check=True)
    subprocess.run(
        [certutil, "-d", f"sql:{db}", "-A", "-t", "C,,", "-n", "trioqio-interop", "-i", str(ca)],
        check=True,
    )
