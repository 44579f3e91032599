"""Loopback TCP stream pairs and the echo/bulk workloads, one per implementation.

Shared by ``scenarios/echo.py``, ``scenarios/bulk_tcp.py`` and ``bench_channel_socket.py``
(writev). Every implementation does the same work: both ends in one event loop, the same
message and chunk sizes, byte counts checked.

- ``trioqio``: ``trioqio.connect`` + ``SocketChannel`` on the accepted socket.
- ``trio``: ``trio.open_tcp_stream`` + ``trio.SocketStream``.
- ``anyio-trio`` / ``anyio-asyncio``: ``anyio.connect_tcp`` + a ``create_tcp_listener`` accept.
- ``asyncio`` / ``uvloop``: ``asyncio.open_connection`` + ``asyncio.start_server`` streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import trio
import uvloop

import trioqio

CHUNK = 256 * 1024
ECHO_SIZE = 1024
ECHO_CONNECTIONS = 10
MiB = 1024 * 1024

TrioPair = tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]


# -- running one coroutine function under each implementation's loop ---------------------


def run(impl: str, main: Callable[[], Awaitable[float]]) -> float:
    """Run ``main`` under the event loop of ``impl``."""
    if impl in ("trioqio", "trio"):
        return trio.run(main)
    if impl == "anyio-trio":
        return anyio.run(main, backend="trio")
    if impl == "anyio-asyncio":
        return anyio.run(main, backend="asyncio")
    if impl == "asyncio":
        return asyncio.run(main())  # type: ignore[arg-type]
    if impl == "uvloop":
        return uvloop.run(main())  # type: ignore[arg-type]
    raise ValueError(f"unknown implementation {impl!r}")


# -- trio family ------------------------------------------------------------------------------


async def trio_pair(kind: str) -> TrioPair:
    """A connected (client, server) pair of trioqio ``SocketChannel`` or ``trio.SocketStream``."""
    listener = trio.socket.socket()
    try:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        if kind == "trioqio":
            client: trio.abc.HalfCloseableStream = await trioqio.connect(f"tcp:127.0.0.1:{port}")
            sock, _ = await listener.accept()
            server: trio.abc.HalfCloseableStream = trioqio.SocketChannel(sock)
        else:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            sock, _ = await listener.accept()
            server = trio.SocketStream(sock)
    finally:
        listener.close()
    return client, server


async def drain(stream: trio.abc.ReceiveStream, total: int) -> None:
    """Receive exactly ``total`` bytes in CHUNK reads."""
    got = 0
    while got < total:
        data = await stream.receive_some(CHUNK)
        if not data:
            raise RuntimeError(f"early EOF after {got} of {total} bytes")
        got += len(data)


async def _trio_echo(kind: str, round_trips: int) -> float:
    message = b"e" * ECHO_SIZE

    async def serve(stream: trio.abc.HalfCloseableStream) -> None:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)

    async def client_loop(stream: trio.abc.HalfCloseableStream, count: int) -> None:
        for _ in range(count):
            await stream.send_all(message)
            got = 0
            while got < ECHO_SIZE:
                data = await stream.receive_some(65536)
                if not data:
                    raise RuntimeError("early EOF")
                got += len(data)
        await stream.send_eof()

    pairs = [await trio_pair(kind) for _ in range(ECHO_CONNECTIONS)]
    per = round_trips // ECHO_CONNECTIONS
    try:
        async with trio.open_nursery() as servers:
            for _, server in pairs:
                servers.start_soon(serve, server)
            start = time.perf_counter()
            async with trio.open_nursery() as clients:
                for client, _ in pairs:
                    clients.start_soon(client_loop, client, per)
            elapsed = time.perf_counter() - start
    finally:
        for client, server in pairs:
            await client.aclose()
            await server.aclose()
    return per * ECHO_CONNECTIONS / elapsed


async def _trio_bulk(kind: str, size: int) -> float:
    payload = b"\xa5" * CHUNK
    client, server = await trio_pair(kind)
    async with client, server:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, server, size)
            for _ in range(size // CHUNK):
                await client.send_all(payload)
        return size / MiB / (time.perf_counter() - start)


# -- anyio ------------------------------------------------------------------------------------

AnyioPair = tuple[anyio.abc.SocketStream, anyio.abc.SocketStream]


async def _anyio_pair() -> AnyioPair:
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with multi:
        listener: Any = multi.listeners[0]
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        client = await anyio.connect_tcp("127.0.0.1", port)
        server = await listener.accept()
    return client, server


async def _anyio_receive(stream: anyio.abc.SocketStream, total: int, chunk: int) -> None:
    got = 0
    while got < total:
        got += len(await stream.receive(chunk))  # EndOfStream on early EOF


async def _anyio_echo(round_trips: int) -> float:
    message = b"e" * ECHO_SIZE

    async def serve(stream: anyio.abc.SocketStream) -> None:
        try:
            while True:
                await stream.send(await stream.receive(65536))
        except anyio.EndOfStream:
            pass

    async def client_loop(stream: anyio.abc.SocketStream, count: int) -> None:
        for _ in range(count):
            await stream.send(message)
            await _anyio_receive(stream, ECHO_SIZE, 65536)
        await stream.send_eof()

    pairs = [await _anyio_pair() for _ in range(ECHO_CONNECTIONS)]
    per = round_trips // ECHO_CONNECTIONS
    try:
        async with anyio.create_task_group() as servers:
            for _, server in pairs:
                servers.start_soon(serve, server)
            start = time.perf_counter()
            async with anyio.create_task_group() as clients:
                for client, _ in pairs:
                    clients.start_soon(client_loop, client, per)
            elapsed = time.perf_counter() - start
    finally:
        for client, server in pairs:
            await client.aclose()
            await server.aclose()
    return per * ECHO_CONNECTIONS / elapsed


async def _anyio_bulk(size: int) -> float:
    payload = b"\xa5" * CHUNK
    client, server = await _anyio_pair()
    async with client, server:
        start = time.perf_counter()
        async with anyio.create_task_group() as group:
            group.start_soon(_anyio_receive, server, size, CHUNK)
            for _ in range(size // CHUNK):
                await client.send(payload)
        return size / MiB / (time.perf_counter() - start)


# -- asyncio / uvloop -------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _asyncio_read(reader: asyncio.StreamReader, total: int, chunk: int) -> None:
    got = 0
    while got < total:
        data = await reader.read(chunk)
        if not data:
            raise RuntimeError(f"early EOF after {got} of {total} bytes")
        got += len(data)


async def _asyncio_echo(round_trips: int) -> float:
    message = b"e" * ECHO_SIZE
    per = round_trips // ECHO_CONNECTIONS
    handlers: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def client_loop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(per):
            writer.write(message)
            await writer.drain()
            await _asyncio_read(reader, ECHO_SIZE, 65536)
        writer.write_eof()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pairs = [await asyncio.open_connection("127.0.0.1", port) for _ in range(ECHO_CONNECTIONS)]
    try:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(r, w) for r, w in pairs))
        elapsed = time.perf_counter() - start
        await asyncio.gather(*handlers)
    finally:
        for _, writer in pairs:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
    return per * ECHO_CONNECTIONS / elapsed


async def _asyncio_bulk(size: int) -> float:
    payload = b"\xa5" * CHUNK
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _asyncio_read(reader, size, CHUNK)
            done.set_result(None)
        except Exception as exc:
            done.set_exception(exc)
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        start = time.perf_counter()
        for _ in range(size // CHUNK):
            writer.write(payload)
            await writer.drain()
        await done
        elapsed = time.perf_counter() - start
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    return size / MiB / elapsed


# -- the measures -----------------------------------------------------------------------------

IMPLEMENTATIONS = ("trioqio", "trio", "anyio-trio", "anyio-asyncio", "asyncio", "uvloop")


def echo(impl: str, round_trips: int) -> float:
    """Echo round trips per second of ECHO_SIZE messages over ECHO_CONNECTIONS connections."""
    if impl in ("trioqio", "trio"):
        return run(impl, lambda: _trio_echo(impl, round_trips))
    if impl.startswith("anyio"):
        return run(impl, lambda: _anyio_echo(round_trips))
    return run(impl, lambda: _asyncio_echo(round_trips))


def bulk(impl: str, size: int) -> float:
    """MiB/s of ``size`` bytes sent in CHUNK writes and drained in CHUNK reads."""
    if impl in ("trioqio", "trio"):
        return run(impl, lambda: _trio_bulk(impl, size))
    if impl.startswith("anyio"):
        return run(impl, lambda: _anyio_bulk(size))
    return run(impl, lambda: _asyncio_bulk(size))
