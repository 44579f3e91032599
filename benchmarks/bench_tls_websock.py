"""TLS and websocket channels against their peers, measured in the same run.

- TLS bulk throughput: ``TLSChannel`` over ``SocketChannel`` vs ``trio.SSLStream`` over
  ``trio.SocketStream``, both on a UNIX socket pair, one direction, 256 KiB writes.
- TLS handshakes per second (client + server in one Trio run, sequential).
- Websocket binary throughput, server receiving and server sending, with 1 MiB and 4 KiB
  messages: ``WebsockChannel`` vs a trio-websocket server connection. The client side is
  the same minimal raw-socket client for both (pre-built masked frames), so the ratio
  compares the servers.

Run: ``python benchmarks/bench_tls_websock.py`` (``TRIOQIO_BENCH_QUICK=1`` for a smoke run).
"""

from __future__ import annotations

import ssl
import sys
import time
from pathlib import Path
from typing import Any

import trio
import trio_websocket
import trustme
from wsproto.frame_protocol import FrameProtocol

sys.path.insert(0, str(Path(__file__).parent))
from _harness import rounds_default, run_interleaved, save, summarize, table

import trioqio

ROUNDS = rounds_default(5, 1)
TLS_BYTES = rounds_default(96, 16) * 1024 * 1024
TLS_CHUNK = 256 * 1024
HANDSHAKES = rounds_default(60, 10)
WS_BYTES = rounds_default(64, 8) * 1024 * 1024

CA = trustme.CA()
SERVER_CTX = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
CA.issue_cert("bench.example").configure_cert(SERVER_CTX)
CLIENT_CTX = ssl.create_default_context()
CA.configure_trust(CLIENT_CTX)

KEY_REQUEST = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


# -- TLS --------------------------------------------------------------------------------


async def _tls_pair_trioqio() -> tuple[Any, Any]:
    a, b = trio.socket.socketpair()
    client = trioqio.TLSChannel.client(
        trioqio.SocketChannel(a), CLIENT_CTX, hostname="bench.example"
    )
    server = trioqio.TLSChannel.server(trioqio.SocketChannel(b), SERVER_CTX)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.handshake)
        nursery.start_soon(server.handshake)
    return client, server


async def _tls_pair_trio() -> tuple[Any, Any]:
    a, b = trio.socket.socketpair()
    client = trio.SSLStream(trio.SocketStream(a), CLIENT_CTX, server_hostname="bench.example")
    server = trio.SSLStream(trio.SocketStream(b), SERVER_CTX, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    return client, server


def tls_bulk(make: Any) -> float:
    payload = b"\xa5" * TLS_CHUNK

    async def main() -> float:
        client, server = await make()

        async def writer() -> None:
            for _ in range(TLS_BYTES // TLS_CHUNK):
                await client.send_all(payload)

        async def reader() -> None:
            got = 0
            while got < TLS_BYTES:
                got += len(await server.receive_some(TLS_CHUNK))

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(reader)
        elapsed = time.perf_counter() - start
        await client.aclose()
        await server.aclose()
        return TLS_BYTES / elapsed / 1e6

    return trio.run(main)


def tls_handshakes(make: Any) -> float:
    async def main() -> float:
        start = time.perf_counter()
        for _ in range(HANDSHAKES):
            client, server = await make()
            await client.aclose()
            await server.aclose()
        return HANDSHAKES / (time.perf_counter() - start)

    return trio.run(main)


# -- websocket ----------------------------------------------------------------------------


async def _read_reply(sock: trio.SocketStream) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await sock.receive_some(4096)


async def _serve_trioqio(sock: Any, direction: str, size: int, total: int) -> None:
    ws = trioqio.WebsockChannel.server(trioqio.SocketChannel(sock))
    await ws.handshake()
    if direction == "receive":
        got = 0
        while got < total:
            got += len(await ws.receive_some())
    else:
        message = b"\x5a" * size
        for _ in range(total // size):
            await ws.send_all(message)
    await ws.aclose()


async def _serve_trio_websocket(sock: Any, direction: str, size: int, total: int) -> None:
    async with trio.open_nursery() as nursery:
        stream = trio.SocketStream(sock)
        request = await trio_websocket.wrap_server_stream(
            nursery, stream, max_message_size=size + 1
        )
        conn = await request.accept()
        if direction == "receive":
            got = 0
            while got < total:
                got += len(await conn.get_message())
        else:
            message = b"\x5a" * size
            for _ in range(total // size):
                await conn.send_message(message)
        await stream.aclose()
        nursery.cancel_scope.cancel()


def websocket(serve: Any, direction: str, size: int) -> float:
    total = WS_BYTES if size > 65536 else WS_BYTES // 4
    total -= total % size
    frame = bytes(FrameProtocol(client=True, extensions=[]).send_data(b"\x5a" * size))
    server_header = 2 if size < 126 else 4 if size < 65536 else 10

    async def client(sock: trio.SocketStream) -> None:
        await sock.send_all(KEY_REQUEST)
        await _read_reply(sock)
        if direction == "receive":
            # Send pre-built masked frames, batched so the client costs little.
            batch = frame * max(1, (256 * 1024) // len(frame))
            per_batch = len(batch) // len(frame)
            count = total // size
            while count >= per_batch:
                await sock.send_all(batch)
                count -= per_batch
            if count:
                await sock.send_all(frame * count)
        else:
            expected = (total // size) * (size + server_header)
            got = 0
            while got < expected:
                got += len(await sock.receive_some(1 << 20))

    async def main() -> float:
        a, b = trio.socket.socketpair()
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client, trio.SocketStream(a))
            nursery.start_soon(serve, b, direction, size, total)
        elapsed = time.perf_counter() - start
        return total / elapsed / 1e6

    return trio.run(main)


def main() -> None:
    sections: list[str] = []
    payload: dict[str, Any] = {}

    bulk = summarize(
        run_interleaved(
            {
                "trioqio TLSChannel": lambda: tls_bulk(_tls_pair_trioqio),
                "trio.SSLStream": lambda: tls_bulk(_tls_pair_trio),
            },
            rounds=ROUNDS,
        )
    )
    sections.append(table("TLS bulk throughput", bulk, unit="MB/s", baseline="trio.SSLStream"))
    payload["tls_bulk_MBps"] = bulk

    shakes = summarize(
        run_interleaved(
            {
                "trioqio TLSChannel": lambda: tls_handshakes(_tls_pair_trioqio),
                "trio.SSLStream": lambda: tls_handshakes(_tls_pair_trio),
            },
            rounds=ROUNDS,
        )
    )
    sections.append(
        table("TLS handshakes (client+server pairs)", shakes, unit="/s", baseline="trio.SSLStream")
    )
    payload["tls_handshakes_per_s"] = shakes

    for direction in ("receive", "send"):
        for size, label in ((1024 * 1024, "1 MiB"), (4096, "4 KiB")):
            result = summarize(
                run_interleaved(
                    {
                        "trioqio WebsockChannel": (
                            lambda d=direction, s=size: websocket(_serve_trioqio, d, s)
                        ),
                        "trio-websocket": (
                            lambda d=direction, s=size: websocket(_serve_trio_websocket, d, s)
                        ),
                    },
                    rounds=ROUNDS,
                )
            )
            title = f"Websocket server {direction}s, {label} binary messages"
            sections.append(table(title, result, unit="MB/s", baseline="trio-websocket"))
            payload[f"ws_{direction}_{label.replace(' ', '')}_MBps"] = result

    save("tls_websock", payload, "\n\n".join(sections))


if __name__ == "__main__":
    main()
