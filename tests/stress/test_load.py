"""Load on one NetListener: many concurrent echo clients, and connect/close cycles without leaks.

Sizes (full / ci): 1,000 / 100 concurrent clients exchanging 1 MiB / 256 KiB each, and
20,000 / 2,000 connect/close cycles. Clients are plain Trio sockets in this process, on
127.0.0.1, so the listener and its clients share one Trio run (2 cores: a child process
would not be faster, the echo costs the same either way).
"""

from __future__ import annotations

import gc
import random
import time
import tracemalloc

import trio
from _load_helpers import (
    abort,
    nofile_at_least,
    snapshot,
    somaxconn,
    tcp_connect,
    wait_until,
)
from _scale import size

import trioqio

CLIENTS = size(full=1000, ci=100)
PAYLOAD = size(full=1 << 20, ci=256 << 10)
CHUNK = 64 << 10

CYCLES = size(full=20_000, ci=2_000)
WORKERS = 16
WARM_UP = 400
#: Traced memory a run of CYCLES may leave behind: Trio's and the listener's containers
#: keep the capacity they grew to, and a few counters grow; one leaked object per cycle
#: (>= 28 bytes each) already exceeds it at both sizes; 9.6 KB were measured.
TRACED_SLACK = 48 << 10
#: RSS slack: malloc arenas and freed-but-kept pages after tens of thousands of sockets.
RSS_SLACK_KIB = 16 << 10


async def _echo(channel: trioqio.SocketChannel) -> None:
    while data := await channel.receive_some(CHUNK):
        await channel.send_all(data)


async def test_concurrent_clients_echo_every_byte() -> None:
    """Every client sends its own pseudo-random payload and gets exactly it back."""
    # One random block; client i sends the slice starting at its own offset, so each
    # payload is distinct and a byte delivered to the wrong client cannot match.
    block = random.Random(1000).randbytes(2 * PAYLOAD)
    step = PAYLOAD // CLIENTS
    verified = 0
    connected = 0
    go = trio.Event()
    started = time.monotonic()

    async def send(stream: trio.SocketStream, data: memoryview) -> None:
        for start in range(0, len(data), CHUNK):
            await stream.send_all(data[start : start + CHUNK])
        await stream.send_eof()

    async def client(index: int, address: trioqio.SocketAddress) -> None:
        nonlocal verified, connected
        expected = memoryview(block)[index * step : index * step + PAYLOAD]
        stream = await tcp_connect(address)
        async with stream:
            connected += 1
            await go.wait()
            got = 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, stream, expected)
                while chunk := await stream.receive_some(CHUNK):
                    end = got + len(chunk)
                    assert end <= PAYLOAD, f"client {index}: echo longer than the payload"
                    assert expected[got:end] == chunk, f"client {index}: bytes differ at {got}"
                    got = end
            assert got == PAYLOAD, f"client {index}: echo stopped at {got} of {PAYLOAD}"
            verified += got

    with nofile_at_least(2 * CLIENTS + 256), trio.fail_after(size(full=600, ci=120)):
        async with trioqio.NetListener(name="load") as listener:
            await listener.open("tcp:127.0.0.1:0", backlog=min(somaxconn(), 4096))
            listener.set_client_func(_echo)
            address = listener.addresses[0]
            async with trio.open_nursery() as nursery:
                for index in range(CLIENTS):
                    nursery.start_soon(client, index, address)
                # Every handler runs at once before any byte moves: truly concurrent.
                await wait_until(lambda: listener.statistics().running == CLIENTS)
                assert connected == CLIENTS
                go.set()
            stats = listener.statistics()
            elapsed = time.monotonic() - started
        print(
            f"\n{CLIENTS} clients x {PAYLOAD} bytes echoed, "
            f"{verified} bytes verified, {elapsed:.1f} s"
        )
        assert verified == CLIENTS * PAYLOAD
        assert stats.accepted == CLIENTS
        assert stats.handler_errors == 0
        assert stats.accept_errors == 0
        assert stats.running == 0


async def _greet_then_drain(channel: trioqio.SocketChannel) -> None:
    try:
        await channel.send_all(b"ok")
        while await channel.receive_some():
            pass
    except trio.BrokenResourceError:
        pass  # a client that reset (one in four does)


async def _cycles(address: trioqio.SocketAddress, count: int) -> None:
    async def worker(first: int) -> None:
        for number in range(first, count, WORKERS):
            stream = await tcp_connect(address)
            try:
                if number % 4 == 3:
                    abort(stream)  # close with a reset, without reading
                    continue
                greeting = b""
                while len(greeting) < 2:
                    chunk = await stream.receive_some()
                    assert chunk, f"cycle {number}: EOF before the greeting"
                    greeting += chunk
                assert greeting == b"ok"
            finally:
                await stream.aclose()

    async with trio.open_nursery() as nursery:
        for first in range(WORKERS):
            nursery.start_soon(worker, first)


async def test_connect_close_cycles_leave_nothing_behind() -> None:
    """After CYCLES connect/close cycles, fds, threads and memory are back to the baseline."""
    with trio.fail_after(size(full=300, ci=60)):
        async with trioqio.NetListener(name="cycles") as listener:
            await listener.open("tcp:127.0.0.1:0")
            listener.set_client_func(_greet_then_drain)
            address = listener.addresses[0]
            await _cycles(address, WARM_UP)  # caches and containers reach their size

            await wait_until(lambda: listener.statistics().running == 0)
            gc.collect()
            before = snapshot()
            tracemalloc.start()
            try:
                traced_before = tracemalloc.get_traced_memory()[0]
                started = time.monotonic()
                await _cycles(address, CYCLES)
                elapsed = time.monotonic() - started
                await wait_until(lambda: listener.statistics().running == 0)
                gc.collect()
                traced_after = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            after = snapshot()
            stats = listener.statistics()
            grown = traced_after - traced_before
        print(
            f"\n{CYCLES} cycles in {elapsed:.1f} s: fds {before.fds}->{after.fds}, "
            f"threads {before.tasks}->{after.tasks}, "
            f"RSS {before.rss_kib}->{after.rss_kib} KiB, traced memory +{grown} bytes"
        )
        assert stats.accepted == WARM_UP + CYCLES
        assert stats.handler_errors == 0
        assert stats.accept_errors == 0
        assert after.fds == before.fds
        assert after.busy_threads == before.busy_threads
        assert after.tasks <= before.tasks  # Trio's idle workers may only have retired
        assert grown <= TRACED_SLACK, f"{grown} bytes still allocated after {CYCLES} cycles"
        assert after.rss_kib - before.rss_kib <= RSS_SLACK_KIB
