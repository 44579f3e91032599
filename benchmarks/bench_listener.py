"""Benchmark: NetListener against raw trio.serve_tcp, asyncio and uvloop, in one run.

Two measurements; every server runs in its own child process, pinned to CPU 0 where the
machine has two CPUs, and the load comes from another child process (a uvloop client,
pinned to CPU 1):

1. accept rate: a client connects, reads a 2-byte reply, and closes; ``CONCURRENCY``
   clients loop like that for ``SECONDS`` per round. Reported as connections per second.
2. idle memory: 2,000 connections held open; the server's RSS growth per connection
   (``/proc/PID/status`` VmRSS before and after), in KiB.

Servers: ``trioqio`` (NetListener + handler), ``trio`` (trio.serve_tcp + handler),
``asyncio`` (asyncio.start_server streams), ``uvloop`` (the same on uvloop).

Prints Markdown tables (median, range, ratio vs raw trio) and writes
``benchmarks/results/listener.json``.

Usage: ``python benchmarks/bench_listener.py [--rounds N] [--seconds S]``
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import _harness

SERVERS = ("trioqio", "trio", "asyncio", "uvloop")
CONCURRENCY = 16
IDLE = 2000


# -- server processes ---------------------------------------------------------------------


def _announce(port: int) -> None:
    print(port, flush=True)


def serve(kind: str, mode: str) -> None:
    """Run one server until stdin closes; print the port first."""
    idle = mode == "idle"
    if kind in ("trioqio", "trio"):
        import trio

        import trioqio

        async def handle_trio(stream: trio.abc.Stream) -> None:
            if idle:
                await stream.receive_some()
            else:
                await stream.send_all(b"ok")

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                if kind == "trio":
                    serve_tcp = functools.partial(trio.serve_tcp, host="127.0.0.1")
                    listeners = await nursery.start(serve_tcp, handle_trio, 0)
                    _announce(listeners[0].socket.getsockname()[1])
                    await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
                    nursery.cancel_scope.cancel()
                else:
                    async with trioqio.NetListener(name="bench") as listener:
                        await listener.open("tcp:127.0.0.1:0")
                        listener.set_client_func(handle_trio)
                        address = listener.addresses[0]
                        assert isinstance(address, trioqio.InetAddress)
                        _announce(address.port)
                        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)

        trio.run(main)
        return

    async def handle_asyncio(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if idle:
            await reader.read(1)
        else:
            writer.write(b"ok")
            await writer.drain()
        writer.close()

    async def amain() -> None:
        server = await asyncio.start_server(handle_asyncio, "127.0.0.1", 0, backlog=4096)
        _announce(server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()

    if kind == "uvloop":
        import uvloop

        uvloop.run(amain())
    else:
        asyncio.run(amain())


# -- load process -------------------------------------------------------------------------


def load(mode: str, port: int, amount: float) -> None:
    """Generate load with uvloop; print the result as JSON."""
    import uvloop

    async def accept_rate() -> None:
        done = 0
        deadline = time.perf_counter() + amount

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                await reader.readexactly(2)
                writer.close()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        print(json.dumps({"rate": done / (time.perf_counter() - start)}), flush=True)

    async def hold_idle() -> None:
        writers = []
        for _ in range(int(amount)):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
        print(json.dumps({"open": len(writers)}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for writer in writers:
            writer.close()

    uvloop.run(accept_rate() if mode == "accept" else hold_idle())


# -- driver ---------------------------------------------------------------------------------


def _pin(cpu: int) -> Any:
    if (os.cpu_count() or 1) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _spawn(*args: str, cpu: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_pin(cpu),  # affinity must be set in the child
    )


def _stop(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def accept_round(kind: str, seconds: float) -> float:
    server = _spawn("--serve", kind, "accept", cpu=0)
    assert server.stdout is not None
    port = server.stdout.readline().strip()
    client = _spawn("--load", "accept", port, str(seconds), cpu=1)
    assert client.stdout is not None
    result = json.loads(client.stdout.readline())
    _stop(client)
    _stop(server)
    return float(result["rate"])


def idle_round(kind: str) -> float:
    server = _spawn("--serve", kind, "idle", cpu=0)
    assert server.stdout is not None
    port = server.stdout.readline().strip()
    time.sleep(0.3)
    before = _rss_kib(server.pid)
    client = _spawn("--load", "idle", port, str(IDLE), cpu=1)
    assert client.stdout is not None
    json.loads(client.stdout.readline())
    time.sleep(1.0)  # let the server accept and start every handler
    after = _rss_kib(server.pid)
    _stop(client)
    _stop(server)
    return (after - before) / IDLE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=_harness.rounds_default(5, 2))
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    accept = _harness.run_interleaved(
        {kind: (lambda k=kind: accept_round(k, args.seconds)) for kind in SERVERS},
        rounds=args.rounds,
    )
    # Memory: lower is better; run_interleaved only needs numbers.
    memory = _harness.run_interleaved(
        {kind: (lambda k=kind: idle_round(k)) for kind in SERVERS},
        rounds=max(2, args.rounds // 2),
        warmup=0,
    )
    accept_summary = _harness.summarize(accept)
    memory_summary = _harness.summarize(memory)
    markdown = "\n\n".join(
        [
            _harness.table(
                "Accept rate (connect, 2-byte reply, close; uvloop load process)",
                accept_summary,
                unit="conn/s",
                baseline="trio",
            ),
            _harness.table(
                f"Memory per idle connection ({IDLE} held open; lower is better)",
                memory_summary,
                unit="KiB/conn",
                baseline="trio",
            ),
        ]
    )
    _harness.save(
        "listener",
        {
            "accept_rate": {"samples": accept, "summary": accept_summary},
            "idle_memory_kib": {"samples": memory, "summary": memory_summary},
            "concurrency": CONCURRENCY,
            "idle_connections": IDLE,
        },
        markdown,
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--load":
        load(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        main()
