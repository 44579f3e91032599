"""Benchmark: SocketChannel against raw Trio, asyncio streams and uvloop, in one run.

Three measurements, each over loopback TCP, with interleaved rounds after a warm-up:

1. bulk: SIZE bytes (default 256 MiB, ``--full`` for 1 GiB) in 256 KiB writes, reader
   draining with 256 KiB reads: ``SocketChannel`` vs ``trio.SocketStream`` vs asyncio
   streams vs asyncio streams on uvloop.
2. writev: the same volume as QEMU's data-test messages (250 buffers of 4,194 bytes)
   sent with ``SocketChannel.writev`` vs ``send_all`` of the buffers joined beforehand
   (the best case for send_all) and joined per message (what a caller would have to do).
3. echo: 1 KiB round trips over 10 concurrent connections, ``SocketChannel`` vs
   ``trio.SocketStream`` (the same generic stream code drives both).

Prints a Markdown table (median, min..max, ratio vs the peer) and writes
``benchmarks/results/channel_socket.json``.

Usage: ``python benchmarks/bench_channel_socket.py [--full] [--rounds N] [--profile]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trio

import trioqio
import trioqio.testing

try:
    import uvloop
except ImportError:  # pragma: no cover - optional peer
    uvloop = None

CHUNK = 256 * 1024
ECHO_SIZE = 1024
ECHO_CONNECTIONS = 10
MiB = 1024 * 1024


# -- trio side ----------------------------------------------------------------------------


Pair = tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]


async def _trio_pair(kind: str) -> Pair:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    try:
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


async def _drain(stream: trio.abc.ReceiveStream, total: int) -> None:
    got = 0
    while got < total:
        data = await stream.receive_some(CHUNK)
        if not data:
            raise RuntimeError("early EOF")
        got += len(data)


def bulk_trio(kind: str, size: int) -> float:
    payload = memoryview(b"\xa5" * CHUNK)

    async def main() -> float:
        client, server = await _trio_pair(kind)
        async with client, server:
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, server, size)
                for _ in range(size // CHUNK):
                    await client.send_all(payload)
            return time.perf_counter() - start

    return trio.run(main)


def writev_trio(mode: str, size: int) -> float:
    buffers = trioqio.testing.data_test_buffers()
    joined = b"".join(buffers)
    messages = max(1, size // len(joined))

    async def main() -> float:
        client, server = await _trio_pair("trioqio")
        assert isinstance(client, trioqio.SocketChannel)
        async with client, server:
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, server, messages * len(joined))
                for _ in range(messages):
                    if mode == "writev":
                        await client.writev(buffers)
                    elif mode == "send_all joined":
                        await client.send_all(joined)
                    else:
                        await client.send_all(b"".join(buffers))
            return time.perf_counter() - start

    return trio.run(main)


def echo_trio(kind: str, round_trips: int) -> float:
    message = b"e" * ECHO_SIZE

    async def serve(stream: trio.abc.HalfCloseableStream) -> None:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)

    async def client_loop(stream: trio.abc.HalfCloseableStream, count: int) -> None:
        for _ in range(count):
            await stream.send_all(message)
            got = 0
            while got < ECHO_SIZE:
                got += len(await stream.receive_some(65536))
        await stream.send_eof()

    async def main() -> float:
        pairs = [await _trio_pair(kind) for _ in range(ECHO_CONNECTIONS)]
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
        return elapsed

    return trio.run(main)


# -- asyncio side ---------------------------------------------------------------------


def bulk_asyncio(kind: str, size: int) -> float:
    payload = b"\xa5" * CHUNK

    async def main() -> float:
        done = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got = 0
            while got < size:
                data = await reader.read(CHUNK)
                if not data:
                    break
                got += len(data)
            writer.close()
            done.set_result(got)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.perf_counter()
        for _ in range(size // CHUNK):
            writer.write(payload)
            await writer.drain()
        await done
        elapsed = time.perf_counter() - start
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        del reader
        return elapsed

    if kind == "uvloop":
        assert uvloop is not None
        return uvloop.run(main())
    return asyncio.run(main())


# -- harness --------------------------------------------------------------------------


def measure(
    cases: dict[str, Callable[[], float]], rounds: int, work: float
) -> dict[str, dict[str, float]]:
    """Run every case once to warm up, then ``rounds`` interleaved rounds."""
    for run in cases.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():
            samples[name].append(work / run())
    return {
        name: {"median": statistics.median(v), "min": min(v), "max": max(v)}
        for name, v in samples.items()
    }


def table(title: str, unit: str, stats: dict[str, dict[str, float]], baseline: str) -> list[str]:
    base = stats[baseline]["median"]
    lines = [
        f"### {title}",
        "",
        f"| implementation | median {unit} | range | ratio vs {baseline} |",
        "|---|---:|---:|---:|",
    ]
    for name, s in stats.items():
        lines.append(
            f"| {name} | {s['median']:,.1f} | {s['min']:,.1f} .. {s['max']:,.1f} "
            f"| {s['median'] / base:.3f}x |"
        )
    return [*lines, ""]


def profile_echo(round_trips: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    echo_trio("trioqio", round_trips)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="send 1 GiB per bulk run")
    parser.add_argument("--size-mib", type=int, default=None, help="bulk size in MiB")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--echo", type=int, default=20000, help="echo round trips per run")
    parser.add_argument("--profile", action="store_true", help="profile the trioqio echo")
    args = parser.parse_args(argv)
    quick = os.environ.get("TRIOQIO_EXAMPLE_QUICK") == "1"
    size_mib = args.size_mib or (1024 if args.full else (16 if quick else 256))
    size = size_mib * MiB
    rounds = 1 if quick else args.rounds
    echo = 2000 if quick else args.echo
    if args.profile:
        profile_echo(echo)
        return 0

    bulk_cases: dict[str, Callable[[], float]] = {
        "trioqio.SocketChannel": lambda: bulk_trio("trioqio", size),
        "trio.SocketStream": lambda: bulk_trio("trio", size),
        "asyncio streams": lambda: bulk_asyncio("asyncio", size),
    }
    if uvloop is not None:
        bulk_cases["uvloop streams"] = lambda: bulk_asyncio("uvloop", size)
    bulk = measure(bulk_cases, rounds, size / MiB)

    writev_cases: dict[str, Callable[[], float]] = {
        "writev (250 x 4194)": lambda: writev_trio("writev", size),
        "send_all joined": lambda: writev_trio("send_all joined", size),
        "join + send_all": lambda: writev_trio("join + send_all", size),
    }
    message_bytes = trioqio.testing.DATA_CHUNKS * trioqio.testing.DATA_CHUNK_SIZE
    writev_mib = max(1, size // message_bytes) * message_bytes / MiB
    writev = measure(writev_cases, rounds, writev_mib)

    echo_cases: dict[str, Callable[[], float]] = {
        "trioqio.SocketChannel": lambda: echo_trio("trioqio", echo),
        "trio.SocketStream": lambda: echo_trio("trio", echo),
    }
    echo_stats = measure(echo_cases, rounds, echo)

    lines = [
        f"## SocketChannel benchmark (Python {sys.version.split()[0]}, trio {trio.__version__}, "
        f"{size_mib} MiB bulk, {rounds} rounds)",
        "",
        *table(f"Bulk {size_mib} MiB in 256 KiB writes", "MiB/s", bulk, "trio.SocketStream"),
        *table("writev vs send_all", "MiB/s", writev, "send_all joined"),
        *table(
            f"Echo 1 KiB x {ECHO_CONNECTIONS} connections",
            "round trips/s",
            echo_stats,
            "trio.SocketStream",
        ),
    ]
    print("\n".join(lines))
    out = Path(__file__).parent / "results" / "channel_socket.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "size_mib": size_mib,
                "rounds": rounds,
                "bulk_mib_s": bulk,
                "writev_mib_s": writev,
                "echo_round_trips_s": echo_stats,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
