"""TLS handshakes per second: ``TLSChannel`` against ``trio.SSLStream``, in the same run.

Client and server of each pair in one Trio run on a UNIX socket pair, handshakes one after
another (trustme certificates, default contexts). Reported only, no target.

TLS bulk throughput and websocket messages against the peers are the ``tls`` and
``websocket-*`` scenarios of ``benchmarks/compare.py``.

Run: ``python benchmarks/bench_tls_handshake.py`` (``TRIOQIO_BENCH_QUICK=1`` for a smoke run).
"""

from __future__ import annotations

import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trustme

sys.path.insert(0, str(Path(__file__).parent))
from _harness import rounds_default, run_interleaved, save, summarize, table

import trioqio

ROUNDS = rounds_default(5, 1)
HANDSHAKES = rounds_default(300, 20)

CA = trustme.CA()
SERVER_CTX = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
CA.issue_cert("bench.example").configure_cert(SERVER_CTX)
CLIENT_CTX = ssl.create_default_context()
CA.configure_trust(CLIENT_CTX)

Pair = Callable[[], Awaitable[tuple[Any, Any]]]


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


def tls_handshakes(make: Pair) -> float:
    """Client+server handshake pairs per second."""

    async def main() -> float:
        start = time.perf_counter()
        for _ in range(HANDSHAKES):
            client, server = await make()
            await client.aclose()
            await server.aclose()
        return HANDSHAKES / (time.perf_counter() - start)

    return trio.run(main)


def main() -> None:
    shakes = summarize(
        run_interleaved(
            {
                "trioqio TLSChannel": lambda: tls_handshakes(_tls_pair_trioqio),
                "trio.SSLStream": lambda: tls_handshakes(_tls_pair_trio),
            },
            rounds=ROUNDS,
        )
    )
    markdown = "\n\n".join(
        [
            table(
                f"TLS handshakes ({HANDSHAKES} client+server pairs per run, {ROUNDS} rounds)",
                shakes,
                unit="/s",
                baseline="trio.SSLStream",
            ),
            "TLS bulk and websocket messages: `tls` and `websocket-*` in [compare.md](compare.md).",
        ]
    )
    save("tls_handshake", {"tls_handshakes_per_s": shakes}, markdown)


if __name__ == "__main__":
    main()
