"""Socket channels (QEMU ``QIOChannelSocket``): connect, connect as a Task, accept, adopt.

1. ``await trioqio.connect()`` (QEMU ``qio_channel_socket_connect_sync``, but the Trio
   thread never blocks), ``writev`` of a header and pages, ``receive_exactly``;
2. four ``trioqio.connect_task()`` calls at once, the shape of QEMU's multifd setup
   (``qio_channel_socket_connect_async``): workers resolve and connect in threads, each
   completion runs in the Trio thread and hands its channel to a sender task;
3. a listening ``SocketChannel`` and ``accept()`` (QEMU ``qio_channel_socket_accept``),
   ``SocketChannel.from_fd`` (QEMU ``qio_channel_socket_new_fd``), addresses, peer pid.

Run: ``python examples/socket_connect.py``
"""

from __future__ import annotations

import os
import tempfile

import trio

import trioqio

PAGE = 4096


async def sink(channel: trioqio.SocketChannel) -> None:
    """The server side: read a 4-byte page count, then the pages, answer with a total."""
    count = int.from_bytes(await channel.receive_exactly(4), "big")
    total = 0
    for _ in range(count):
        total += sum(await channel.receive_exactly(PAGE))
    await channel.send_all(total.to_bytes(8, "big"))


async def send_pages(channel: trioqio.SocketChannel, count: int) -> int:
    channel.set_delay(False)  # QEMU qio_channel_set_delay(ioc, false): TCP_NODELAY
    pages = [bytes([n]) * PAGE for n in range(count)]
    await channel.writev([count.to_bytes(4, "big"), *pages])  # one sendmsg, no joined copy
    return int.from_bytes(await channel.receive_exactly(8), "big")


async def connect_sync_shape(address: trioqio.SocketAddress) -> None:
    async with await trioqio.connect(address, name="migration-socket-outgoing") as channel:
        print(f"{channel.local_address} -> {channel.remote_address}")
        print("server summed", await send_pages(channel, 3))


async def connect_async_shape(address: trioqio.SocketAddress) -> None:
    async with trio.open_nursery() as nursery:

        def connected(task: trioqio.Task[trioqio.SocketChannel]) -> None:
            task.propagate_error()  # an OSError naming the address, on failure
            nursery.start_soon(use, task.name, task.result)  # the channel is ours now

        async def use(name: str | None, channel: trioqio.SocketChannel) -> None:
            async with channel:
                print(f"{name}: server summed {await send_pages(channel, 2)}")

        for n in range(4):  # multifd: N connects in parallel
            trioqio.connect_task(nursery, address, connected, name=f"multifd {n}")


async def accept_and_adopt() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.sock")
        raw = trio.socket.socket(trio.socket.AF_UNIX)
        await raw.bind(path)
        raw.listen(1)
        async with trioqio.SocketChannel(raw, name="listening") as listening:
            print("listening features:", listening.features)
            client = await trioqio.connect(f"unix:{path}")
            async with client, await listening.accept() as server:
                print("peer pid is ours:", server.peer_pid == os.getpid())
        print("UNIX path unlinked on close:", not os.path.exists(path))
    a, b = trio.socket.socketpair()
    b.close()
    async with trioqio.SocketChannel.from_fd(a.detach(), name="inherited") as adopted:
        print("adopted:", adopted)


async def main() -> None:
    async with trioqio.NetListener(name="sink") as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(sink)
        await connect_sync_shape(listener.addresses[0])
        await connect_async_shape(listener.addresses[0])
    await accept_and_adopt()


if __name__ == "__main__":
    trio.run(main)
