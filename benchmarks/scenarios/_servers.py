"""TCP servers and load generators in child processes (accept rate, idle-connection memory).

Every server runs in its own child process, pinned to CPU 0 where the machine has two or
more CPUs; the load comes from another child process (a uvloop client, pinned to CPU 1),
so the server's event loop is the only thing measured and the client is the same for all.

Servers (``KINDS``): ``trioqio`` (NetListener + client func), ``trio`` (``trio.serve_tcp``),
``anyio-trio`` / ``anyio-asyncio`` (``anyio.create_tcp_listener`` + ``serve``), ``asyncio``
(``asyncio.start_server`` streams) and ``uvloop`` (the same on uvloop). Over Trio's own
listeners (``TRIO_LISTENER_KINDS``, each serving the ``trio.SocketListener`` objects of
``trio.open_tcp_listeners(0, host="127.0.0.1")``): ``trioqio-trio-listener``
(``NetListener.add_listener`` + client func), ``trioqio-serve`` (``nursery.start(trioqio.serve,
handler, *listeners)``) and ``trio-serve-listeners`` (``trio.serve_listeners``). In
``accept`` mode a handler sends ``b"ok"`` and returns (the server closes the stream); in
``idle`` mode it waits for EOF.

Used by ``scenarios/accept.py`` and ``bench_listener.py``; this file is also the child's
entry point: ``python _servers.py --serve KIND MODE`` / ``--load MODE PORT AMOUNT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

KINDS = ("trioqio", "trio", "anyio-trio", "anyio-asyncio", "asyncio", "uvloop")
TRIO_LISTENER_KINDS = ("trioqio-trio-listener", "trioqio-serve", "trio-serve-listeners")
CONCURRENCY = 16


# -- server processes ---------------------------------------------------------------------


def _announce(port: int) -> None:
    print(port, flush=True)


def _serve_trio(kind: str, idle: bool) -> None:
    import trio

    import trioqio

    async def handle(stream: trio.abc.Stream) -> None:
        if idle:
            await stream.receive_some()
        else:
            await stream.send_all(b"ok")

    async def until_stdin_closes() -> None:
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)

    async def main() -> None:
        if kind == "trioqio":
            async with trioqio.NetListener(name="bench") as listener:
                await listener.open("tcp:127.0.0.1:0")
                listener.set_client_func(handle)
                address = listener.addresses[0]
                assert isinstance(address, trioqio.InetAddress)
                _announce(address.port)
                await until_stdin_closes()
        elif kind == "trio":
            async with trio.open_nursery() as nursery:
                serve_tcp = functools.partial(trio.serve_tcp, host="127.0.0.1")
                listeners = await nursery.start(serve_tcp, handle, 0)
                _announce(listeners[0].socket.getsockname()[1])
                await until_stdin_closes()
                nursery.cancel_scope.cancel()
        else:
            await serve_trio_listeners()

    async def serve_trio_listeners() -> None:
        # The same kind of listener for every one of these kinds: Trio's own.
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        if kind == "trioqio-trio-listener":
            async with trioqio.NetListener(name="bench") as listener:
                for tcp in listeners:
                    listener.add_listener(tcp)
                listener.set_client_func(handle)
                _announce(port)
                await until_stdin_closes()
            return
        async with trio.open_nursery() as nursery:
            if kind == "trioqio-serve":
                await nursery.start(
                    functools.partial(trioqio.serve, name="bench"), handle, *listeners
                )
            elif kind == "trio-serve-listeners":
                await nursery.start(trio.serve_listeners, handle, listeners)
            else:
                raise ValueError(f"unknown Trio server kind {kind!r}")
            _announce(port)
            await until_stdin_closes()
            nursery.cancel_scope.cancel()

    trio.run(main)


def _serve_anyio(backend: str, idle: bool) -> None:
    import anyio
    import anyio.abc
    import anyio.to_thread

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            if idle:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    await stream.receive()
            else:
                await stream.send(b"ok")

    async def main() -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        async with listener, anyio.create_task_group() as group:
            _announce(listener.extra(anyio.abc.SocketAttribute.local_port))
            group.start_soon(listener.serve, handle)
            await anyio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            group.cancel_scope.cancel()

    anyio.run(main, backend=backend)


def _serve_asyncio(use_uvloop: bool, idle: bool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if idle:
            await reader.read(1)
        else:
            writer.write(b"ok")
            await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        _announce(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def serve(kind: str, mode: str) -> None:
    """Run one server until stdin closes; print the port first."""
    idle = mode == "idle"
    if kind in ("trioqio", "trio", *TRIO_LISTENER_KINDS):
        _serve_trio(kind, idle)
    elif kind.startswith("anyio-"):
        _serve_anyio(kind.removeprefix("anyio-"), idle)
    elif kind in ("asyncio", "uvloop"):
        _serve_asyncio(kind == "uvloop", idle)
    else:
        raise ValueError(f"unknown server kind {kind!r}")


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
                if await reader.readexactly(2) != b"ok":
                    raise RuntimeError("wrong reply")
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


# -- driver side ----------------------------------------------------------------------------


def _pin(cpu: int) -> Callable[[], None] | None:
    if (os.cpu_count() or 1) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def spawn(*args: str, cpu: int) -> subprocess.Popen[str]:
    """Start this file as a child process with ``args``, pinned to ``cpu``."""
    # The repository root, so the child imports this checkout's trioqio even uninstalled;
    # no empty entry (that would put the current directory on the child's sys.path).
    paths = [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_pin(cpu),  # affinity must be set in the child
    )


def stop(process: subprocess.Popen[str]) -> None:
    """Close the child's stdin (its signal to finish) and reap it."""
    assert process.stdin is not None
    process.stdin.close()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait()
        raise RuntimeError(f"child {process.args!r} exited with {process.returncode}")
    return line.strip()


def rss_kib(pid: int) -> int:
    """The resident set size of ``pid`` in KiB (``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def accept_round(kind: str, seconds: float) -> float:
    """Connections per second a ``kind`` server accepts, answers and closes."""
    server = spawn("--serve", kind, "accept", cpu=0)
    try:
        port = _first_line(server)
        client = spawn("--load", "accept", port, str(seconds), cpu=1)
        try:
            result = json.loads(_first_line(client))
        finally:
            stop(client)
    finally:
        stop(server)
    return float(result["rate"])


def idle_round(kind: str, connections: int) -> float:
    """The server's RSS growth per idle connection in KiB, ``connections`` held open."""
    server = spawn("--serve", kind, "idle", cpu=0)
    try:
        port = _first_line(server)
        time.sleep(0.3)
        before = rss_kib(server.pid)
        client = spawn("--load", "idle", port, str(connections), cpu=1)
        try:
            json.loads(_first_line(client))
            time.sleep(1.0)  # let the server accept and start every handler
            after = rss_kib(server.pid)
        finally:
            stop(client)
    finally:
        stop(server)
    return (after - before) / connections


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "--load":
        load(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        raise SystemExit(f"usage: {sys.argv[0]} --serve KIND MODE | --load MODE PORT AMOUNT")
