"""One NetListener serving TCP (IPv4 and IPv6 where available) and a UNIX socket at once.

Run: ``python examples/echo_listener.py`` — it starts an echo listener, talks to it over
every address it bound, prints what came back, and closes with a grace period.
Set ``TRIOQIO_EXAMPLE_SERVE=1`` to keep serving until Ctrl+C instead.
"""

from __future__ import annotations

import os
import tempfile

import trio

import trioqio


async def echo(channel: trioqio.SocketChannel) -> None:
    """Send back everything the client sends, until it closes."""
    async for data in channel:
        await channel.send_all(data)


async def talk_to(address: trioqio.SocketAddress) -> bytes:
    """Be a client: connect, send a line, read it back."""
    async with await trioqio.connect(address) as channel:
        await channel.send_all(b"hello over " + str(address).encode())
        await channel.send_eof()
        reply = b""
        async for data in channel:
            reply += data
        return reply


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "echo.sock")
        async with trioqio.NetListener(name="echo") as listener:
            await listener.open("tcp:127.0.0.1:0")
            try:
                await listener.open("tcp:[::1]:0")
            except OSError as exc:
                print("no IPv6 loopback here:", exc)
            await listener.open(f"unix:{path}")
            listener.set_client_func(echo)
            for address in listener.addresses:
                print(f"listening on {address}")
            if os.environ.get("TRIOQIO_EXAMPLE_SERVE"):
                await trio.sleep_forever()
            for address in listener.addresses:
                print("reply:", (await talk_to(address)).decode())
            report = await listener.aclose(grace=1.0)
            print(f"closed: {report.finished} handlers finished, {report.cut} cut")
            print("statistics:", listener.statistics())


if __name__ == "__main__":
    trio.run(main)
