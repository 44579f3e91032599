"""The QIOChannel base API on trioqio channels (QEMU ``include/io/channel.h``).

Every trioqio channel is a ``trioqio.abc.Channel``, i.e. a ``trio.abc.HalfCloseableStream``
with QEMU's extras. This script shows them on a UNIX socket pair and a buffer channel:

1. features (QEMU ``qio_channel_has_feature``);
2. vectored and exact I/O (``qio_channel_writev_all``, ``read_all``, ``read_all_eof``);
3. peek (``QIO_CHANNEL_READ_FLAG_MSG_PEEK``);
4. shutdown from another task waking a blocked reader (``qio_channel_shutdown``);
5. a feature the channel lacks raises ``trioqio.UnsupportedFeature``;
6. a channel of your own gets the extras for free by subclassing ``trioqio.abc.Channel``.

Run: ``python examples/channel_basics.py``
"""

from __future__ import annotations

import trio
import trio.testing

import trioqio
from trioqio import ChannelFeature, Shutdown


async def features_and_io() -> None:
    a, b = trio.socket.socketpair()  # AF_UNIX stream sockets
    left = trioqio.SocketChannel(a, name="left")
    right = trioqio.SocketChannel(b, name="right")
    async with left, right:
        print("features:", left.features)  # FD_PASS | SHUTDOWN | READ_MSG_PEEK
        assert ChannelFeature.FD_PASS in left.features

        left.set_delay(False)  # hints; a no-op where they mean nothing
        left.set_cork(False)
        await left.writev([b"QEVM", b"\x00\x00\x00\x03", b"payload"])  # one sendmsg
        print("peeked:", await right.peek(4))  # still in the socket
        print("magic:", await right.receive_exactly(4))
        print("version:", int.from_bytes(await right.receive_exactly(4), "big"))
        print("rest:", await right.receive_exactly(7))

        await left.send_eof()  # half-close: right sees a clean end of file
        print("at a clean EOF:", await right.receive_exactly_or_eof(16))


async def shutdown_wakes_a_reader() -> None:
    a, b = trio.socket.socketpair()
    async with trioqio.SocketChannel(a) as _silent_peer, trioqio.SocketChannel(b) as right:

        async def reader() -> None:
            print("blocked reader woke up with", await right.receive_some())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            await right.shutdown(Shutdown.READ)  # any task, any time


async def missing_feature() -> None:
    buffer = trioqio.BufferChannel(b"state")
    try:
        await buffer.peek(1)
    except trioqio.UnsupportedFeature as exc:
        print("buffer channel:", exc)


class UpperChannel(trioqio.abc.Channel):
    """A channel of your own: wrap any Trio stream, upper-case what it sends."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner
        self.name = "upper"

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(bytes(data).upper())

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def own_channel() -> None:
    a, b = trio.socket.socketpair()
    async with UpperChannel(trioqio.SocketChannel(a)) as upper, trioqio.SocketChannel(b) as peer:
        await upper.writev([b"writev ", b"and ", b"receive_exactly ", b"come free"])
        print(await peer.receive_exactly(36))


async def main() -> None:
    await features_and_io()
    await shutdown_wakes_a_reader()
    await missing_feature()
    await own_channel()


if __name__ == "__main__":
    trio.run(main)
