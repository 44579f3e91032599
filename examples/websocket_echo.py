"""A websocket echo service a browser can talk to (QEMU's VNC-over-websocket channel shape).

Each client accepted by ``trioqio.NetListener`` is wrapped in a ``WebsockChannel``: the
upgrade request is checked with QEMU's rules (``GET /``, version 13, ...), then every
binary frame's bytes are echoed back as binary frames.

Run: ``python examples/websocket_echo.py`` and paste into a browser console::

    ws = new WebSocket("ws://127.0.0.1:8765/", ["binary"]);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (e) => console.log(new TextDecoder().decode(e.data));
    ws.onopen = () => ws.send(new TextEncoder().encode("hello"));

(Text frames are refused with close code 1003, as in QEMU: send bytes, not strings.)
With ``TRIOQIO_EXAMPLE_QUICK=1`` it listens on a free port, runs a short self-test client
(trio-websocket) and exits.
"""

from __future__ import annotations

import os

import trio
import trio_websocket

import trioqio

QUICK = bool(os.environ.get("TRIOQIO_EXAMPLE_QUICK"))


async def serve_client(channel: trioqio.SocketChannel) -> None:
    async with trioqio.WebsockChannel.server(channel, handshake_timeout=10) as ws:
        try:
            await ws.handshake()
        except trioqio.HandshakeError as exc:
            print(f"server: refused ({exc.status}): {exc}")
            return
        try:
            while data := await ws.receive_some():
                await ws.send_all(data)
        except trioqio.WebsockProtocolError as exc:
            print("server: client broke the rules:", exc)


async def self_test(address: trioqio.InetAddress) -> None:
    url = f"ws://{address.host}:{address.port}/"
    async with trio_websocket.open_websocket_url(url, subprotocols=["binary"]) as conn:
        for text in ("hello", "from", "trioqio"):
            await conn.send_message(text.encode())
            reply = await conn.get_message()
            assert reply == text.encode(), reply
            print("client: echoed", reply)


async def main() -> None:
    async with trioqio.NetListener(name="websocket-echo") as listener:
        await listener.open("tcp:127.0.0.1:0" if QUICK else "tcp:127.0.0.1:8765")
        listener.set_client_func(serve_client)
        address = listener.addresses[0]
        assert isinstance(address, trioqio.InetAddress)
        print(f"server: ws://{address.host}:{address.port}/")
        if QUICK:
            await self_test(address)
            listener.set_client_func(None)
        else:
            await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main)
