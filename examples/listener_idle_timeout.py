"""Drop clients that go quiet: per-client idle timeouts in a NetListener handler.

Two ways, one listener each (both started with ``nursery.start(trioqio.serve, ...)``):

- ``echo_per_receive``: ``trio.move_on_after(IDLE)`` around each receive. A client that
  sends nothing for ``IDLE`` seconds is told so and dropped.
- ``echo_with_deadline``: one cancel scope around the whole conversation whose deadline is
  pushed forward on each receive. It also bounds a client that stops *reading*: a
  ``send_all`` blocked on a full socket buffer is cut by the same deadline.

Each handler runs in its own cancel scope under the listener, so a timeout ends that
client alone.

Run: ``python examples/listener_idle_timeout.py`` (it runs a chatty client and a quiet one
against each listener and exits).
"""

from __future__ import annotations

import os

import trio

import trioqio

IDLE = 0.3 if os.environ.get("TRIOQIO_EXAMPLE_QUICK") else 2.0


async def echo_per_receive(stream: trio.abc.Stream) -> None:
    """Echo; drop the client once a receive waited ``IDLE`` seconds."""
    while True:
        data = None
        with trio.move_on_after(IDLE):
            data = await stream.receive_some()
        if data is None:  # the receive timed out
            await stream.send_all(b"idle for too long, bye")
            return
        if not data:
            return
        await stream.send_all(data)


async def echo_with_deadline(stream: trio.abc.Stream) -> None:
    """Echo; drop the client when ``IDLE`` seconds pass without a message from it."""
    with trio.CancelScope(deadline=trio.current_time() + IDLE) as scope:
        async for data in stream:
            scope.deadline = trio.current_time() + IDLE  # it spoke: push the deadline
            await stream.send_all(data)
    if scope.cancelled_caught:
        print("  server: idle deadline passed, client dropped")


async def client(address: trioqio.SocketAddress, messages: int) -> None:
    """Send ``messages`` messages (well within ``IDLE``), then go quiet until dropped."""
    async with await trioqio.connect(address) as channel:
        quiet_since = trio.current_time()
        for n in range(messages):
            if n:
                await trio.sleep(IDLE / 3)
            await channel.send_all(f"message {n}".encode())
            quiet_since = trio.current_time()
            print(f"  client: echo {(await channel.receive_some()).decode()!r}")
        async for data in channel:
            print(f"  client: {data.decode()!r}")
        waited = trio.current_time() - quiet_since
        print(f"  client: dropped after {waited:.1f} s of silence (IDLE is {IDLE} s)")


async def main() -> None:
    async with trio.open_nursery() as nursery:
        for handler in (echo_per_receive, echo_with_deadline):
            print(f"{handler.__name__}:")
            listener = await nursery.start(trioqio.serve, handler, "tcp:127.0.0.1:0")
            await client(listener.addresses[0], messages=3)
            report = await listener.aclose()
            print(f"  closed: {report.finished} finished, {report.cut} cut")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
