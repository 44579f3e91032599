"""TLS bulk throughput over loopback TCP (issue 8): trioqio ``TLSChannel`` and its peers.

One process, one event loop: a client connects to a server on 127.0.0.1, both ends do the
TLS handshake (trustme CA, the same two ``ssl.SSLContext`` objects for everyone, so the same
protocol version and cipher), then the client writes ``TOTAL`` bytes in 256 KiB writes
(OpenSSL cuts them into full 16 KiB records for every implementation) while the server reads
up to 256 KiB at a time until it has them all. The clock covers the transfer only (not the
connect, handshake or close). Implementations:

* ``trioqio``: ``TLSChannel.client``/``.server`` over ``SocketChannel`` (``trioqio.connect``
  is not used: the accepted socket comes from ``trio.open_tcp_listeners``, as for trio);
* ``trio``: ``trio.SSLStream`` over ``trio.SocketStream``;
* ``anyio-trio``/``anyio-asyncio``: ``anyio.streams.tls.TLSStream`` on each backend;
* ``asyncio``/``uvloop``: ``asyncio.start_server``/``open_connection`` with ``ssl=``,
  ``writer.write`` + ``drain`` and ``reader.read``, on the stdlib loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import trio
import trustme
from anyio.streams.tls import TLSStream

import trioqio

try:
    from _scenario import Measure, Scenario
except ImportError:  # imported from elsewhere than benchmarks/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _scenario import Measure, Scenario

MIB = 1 << 20
CHUNK = 256 * 1024
FULL_TOTAL = 256 * MIB
QUICK_TOTAL = 24 * MIB
HOSTNAME = "bench.example"

_contexts: tuple[ssl.SSLContext, ssl.SSLContext] | None = None


def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Return (server, client) contexts from one throwaway trustme CA, made once."""
    global _contexts
    if _contexts is None:
        ca = trustme.CA()
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(HOSTNAME).configure_cert(server)
        client = ssl.create_default_context()
        ca.configure_trust(client)
        _contexts = (server, client)
    return _contexts


def _total(quick: bool) -> int:
    return QUICK_TOTAL if quick else FULL_TOTAL


# -- Trio-based: trioqio and trio share the driver ----------------------------------------

Send = Callable[[bytes], Awaitable[None]]
Receive = Callable[[int], Awaitable[Any]]


async def _trio_transfer(send: Send, receive: Receive, total: int) -> float:
    payload = b"\xa5" * CHUNK

    async def writer() -> None:
        for _ in range(total // CHUNK):
            await send(payload)

    async def reader() -> None:
        got = 0
        while got < total:
            data = await receive(CHUNK)
            if not data:
                raise RuntimeError(f"EOF after {got} of {total} bytes")
            got += len(data)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        nursery.start_soon(reader)
    return total / (time.perf_counter() - start) / MIB


async def _tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return client, server


async def _trioqio_main(total: int) -> float:
    server_ctx, client_ctx = contexts()
    a, b = await _tcp_pair()
    client = trioqio.TLSChannel.client(trioqio.SocketChannel(a.socket), client_ctx,
                                       hostname=HOSTNAME)  # fmt: skip
    server = trioqio.TLSChannel.server(trioqio.SocketChannel(b.socket), server_ctx)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.handshake)
            nursery.start_soon(server.handshake)
        return await _trio_transfer(client.send_all, server.receive_some, total)
    finally:
        await client.aclose()
        await server.aclose()


async def _trio_main(total: int) -> float:
    server_ctx, client_ctx = contexts()
    a, b = await _tcp_pair()
    client = trio.SSLStream(a, client_ctx, server_hostname=HOSTNAME)
    server = trio.SSLStream(b, server_ctx, server_side=True)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.do_handshake)
            nursery.start_soon(server.do_handshake)
        return await _trio_transfer(client.send_all, server.receive_some, total)
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)


def trioqio_rate(total: int) -> float:
    """TLSChannel over SocketChannel; MiB/s."""
    return trio.run(_trioqio_main, total)


def trio_rate(total: int) -> float:
    """trio.SSLStream over trio.SocketStream; MiB/s."""
    return trio.run(_trio_main, total)


# -- anyio -----------------------------------------------------------------------------------


async def _anyio_main(total: int) -> float:
    server_ctx, client_ctx = contexts()
    listener = (await anyio.create_tcp_listener(local_host="127.0.0.1")).listeners[0]
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    raw_client = await anyio.connect_tcp("127.0.0.1", port)
    raw_server = await listener.accept()  # type: ignore[attr-defined]  # SocketListener has it
    await listener.aclose()
    streams: dict[str, TLSStream] = {}

    async def wrap(side: str, raw: Any, ctx: ssl.SSLContext) -> None:
        streams[side] = await TLSStream.wrap(
            raw, server_side=side == "server", hostname=None if side == "server" else HOSTNAME,
            ssl_context=ctx, standard_compatible=False,
        )  # fmt: skip

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(wrap, "client", raw_client, client_ctx)
            group.start_soon(wrap, "server", raw_server, server_ctx)
        client, server = streams["client"], streams["server"]
        payload = b"\xa5" * CHUNK

        async def writer() -> None:
            for _ in range(total // CHUNK):
                await client.send(payload)

        async def reader() -> None:
            got = 0
            while got < total:
                got += len(await server.receive(CHUNK))

        start = time.perf_counter()
        async with anyio.create_task_group() as group:
            group.start_soon(writer)
            group.start_soon(reader)
        return total / (time.perf_counter() - start) / MIB
    finally:
        for stream in (*streams.values(), raw_client, raw_server):
            await anyio.aclose_forcefully(stream)


def anyio_rate(total: int, backend: str) -> float:
    """anyio TLSStream on ``backend``; MiB/s."""
    return anyio.run(_anyio_main, total, backend=backend)


# -- asyncio / uvloop ----------------------------------------------------------------------


async def _asyncio_main(total: int) -> float:
    server_ctx, client_ctx = contexts()
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    _, client_writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_ctx, server_hostname=HOSTNAME
    )
    server_reader, server_writer = await accepted
    try:
        payload = b"\xa5" * CHUNK

        async def writer() -> None:
            for _ in range(total // CHUNK):
                client_writer.write(payload)
                await client_writer.drain()

        async def reader() -> None:
            got = 0
            while got < total:
                data = await server_reader.read(CHUNK)
                if not data:
                    raise RuntimeError(f"EOF after {got} of {total} bytes")
                got += len(data)

        start = time.perf_counter()
        await asyncio.gather(writer(), reader())
        return total / (time.perf_counter() - start) / MIB
    finally:
        for w in (client_writer, server_writer):
            w.transport.abort()
        server.close()
        await server.wait_closed()


def asyncio_rate(total: int) -> float:
    """asyncio streams with ssl=; MiB/s."""
    return asyncio.run(_asyncio_main(total))


def uvloop_rate(total: int) -> float:
    """The asyncio code under uvloop; MiB/s."""
    import uvloop

    return uvloop.run(_asyncio_main(total))


def _implementations(quick: bool) -> dict[str, Measure]:
    total = _total(quick)
    return {
        "trioqio": lambda: trioqio_rate(total),
        "trio": lambda: trio_rate(total),
        "anyio-trio": lambda: anyio_rate(total, "trio"),
        "anyio-asyncio": lambda: anyio_rate(total, "asyncio"),
        "asyncio": lambda: asyncio_rate(total),
        "uvloop": lambda: uvloop_rate(total),
    }


SCENARIOS: list[Scenario] = [
    Scenario(
        key="tls",
        title="TLS bulk throughput, 256 MiB in 256 KiB writes, loopback TCP",
        unit="MiB/s",
        reference="trio",
        implementations=_implementations,
        notes=(
            "one process, client writes and server reads concurrently; same trustme contexts "
            "(TLS 1.3) and 16 KiB records for all; clock covers the transfer, not the handshake"
        ),
    )
]
