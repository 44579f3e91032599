"""Websocket binary messages per second, server receiving and server sending (issue 8).

The implementation under test is the websocket *server* (``trioqio.WebsockChannel`` is a
server-side channel, like QEMU's): it listens on 127.0.0.1, a client process connects,
upgrades, and then either

* ``recv``: the client sends COUNT masked binary messages of SIZE bytes (pre-built frames,
  written in ~256 KiB batches) and the server reads them all; or
* ``send``: the server sends COUNT binary messages of SIZE bytes, the client reads the
  bytes of COUNT frames and answers with one 1-byte message, which the server awaits.

The client is the same small blocking-socket program for every server (this file run as
``python websocket.py client ...``), in its own process, so every server gets the same
peer and its own core. The server's clock runs from the end of the upgrade to the last
message received (``recv``) or the client's answer (``send``). Implementations:

* ``trioqio``: ``WebsockChannel.server(SocketChannel(sock))``; it is a byte stream (QEMU's
  model), so the receive side counts payload bytes rather than message objects;
* ``trio``: trio-websocket (``wrap_server_stream``), ``get_message``/``send_message``;
* ``asyncio``/``uvloop``: the ``websockets`` library's asyncio server (``recv``/``send``),
  compression and keepalive pings off, on each loop;
* ``anyio-trio``/``anyio-asyncio``: unavailable (anyio has no websocket library).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    from _scenario import Measure, Scenario
except ImportError:  # imported from elsewhere than benchmarks/, or run as the client
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _scenario import Measure, Scenario

KIB = 1024
MIB = 1 << 20
#: (label, message size, messages in a full run, messages in a quick run)
SIZES = (("4k", 4 * KIB, 40_000, 6_000), ("1m", MIB, 320, 48))
TIMEOUT = 120.0
REQUEST = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
NO_ANYIO = "anyio has no websocket library"


# -- the client (its own process) ---------------------------------------------------------------


def _masked_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One FIN frame (binary by default) from a client: a fixed non-zero masking key."""
    key = b"\x37\xfa\x21\x3d"
    size = len(payload)
    first = 0x80 | opcode
    if size < 126:
        header = bytes([first, 0x80 | size])
    elif size < 65536:
        header = bytes([first, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([first, 0x80 | 127]) + size.to_bytes(8, "big")
    repeated = (key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        size, "big"
    )
    return header + key + masked


def _server_header(size: int) -> int:
    return 2 if size < 126 else 4 if size < 65536 else 10


def client(port: int, direction: str, size: int, count: int) -> None:
    """Connect, upgrade, then send or read ``count`` messages of ``size`` bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(REQUEST)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                raise SystemExit("server closed during the upgrade")
            reply += chunk
        if not reply.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"upgrade refused: {reply[:80]!r}")
        extra = reply[reply.index(b"\r\n\r\n") + 4 :]
        if direction == "recv":
            frame = _masked_frame(b"\x5a" * size)
            per_batch = max(1, (256 * KIB) // len(frame))
            batch = frame * per_batch
            left = count
            while left >= per_batch:
                sock.sendall(batch)
                left -= per_batch
            if left:
                sock.sendall(frame * left)
        else:
            expected = count * (size + _server_header(size)) - len(extra)
            buffer = bytearray(MIB)
            while expected > 0:
                got = sock.recv_into(buffer)
                if not got:
                    raise SystemExit(f"server closed with {expected} bytes missing")
                expected -= got
            sock.sendall(_masked_frame(b"k"))
        # The server closes now: answer its close frame with ours, read to EOF, leave.
        try:
            if sock.recv(65536):
                sock.sendall(_masked_frame(b"\x03\xe8", opcode=0x8))
                while sock.recv(65536):
                    pass
        except OSError:  # a server that closes without waiting for our close frame
            pass


def _spawn_client(port: int, direction: str, size: int, count: int) -> subprocess.Popen[bytes]:
    args = [sys.executable, __file__, "client", str(port), direction, str(size), str(count)]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL)


def _reap(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"websocket client exited {process.returncode}")


# -- servers ------------------------------------------------------------------------------------


def trioqio_rate(direction: str, size: int, count: int) -> float:
    """trioqio WebsockChannel server; messages/s."""
    import trio

    import trioqio

    async def main() -> float:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        process = _spawn_client(listener.socket.getsockname()[1], direction, size, count)
        try:
            stream = await listener.accept()
            await listener.aclose()
            ws = trioqio.WebsockChannel.server(trioqio.SocketChannel(stream.socket))
            try:
                await ws.handshake()
                start = time.perf_counter()
                if direction == "recv":
                    total, got = size * count, 0
                    while got < total:
                        data = await ws.receive_some()
                        if not data:
                            raise RuntimeError(f"EOF after {got} of {total} bytes")
                        got += len(data)
                else:
                    message = b"\x5a" * size
                    for _ in range(count):
                        await ws.send_all(message)
                    if await ws.receive_some() != b"k":
                        raise RuntimeError("client's answer missing")
                elapsed = time.perf_counter() - start
            finally:
                await ws.aclose()
        finally:
            await trio.to_thread.run_sync(_reap, process)
        return count / elapsed

    return trio.run(main)


def trio_websocket_rate(direction: str, size: int, count: int) -> float:
    """trio-websocket server connection; messages/s."""
    import trio
    import trio_websocket

    async def main() -> float:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        process = _spawn_client(listener.socket.getsockname()[1], direction, size, count)
        try:
            stream = await listener.accept()
            await listener.aclose()
            async with trio.open_nursery() as nursery:
                request = await trio_websocket.wrap_server_stream(
                    nursery, stream, max_message_size=size + 1
                )
                conn = await request.accept()
                start = time.perf_counter()
                if direction == "recv":
                    for _ in range(count):
                        if len(await conn.get_message()) != size:
                            raise RuntimeError("short message")
                else:
                    message = b"\x5a" * size
                    for _ in range(count):
                        await conn.send_message(message)
                    if await conn.get_message() != b"k":
                        raise RuntimeError("client's answer missing")
                elapsed = time.perf_counter() - start
                with trio.move_on_after(5):
                    await conn.aclose()
                await stream.aclose()
                nursery.cancel_scope.cancel()
        finally:
            await trio.to_thread.run_sync(_reap, process)
        return count / elapsed

    return trio.run(main)


async def _websockets_main(direction: str, size: int, count: int) -> float:
    import asyncio

    from websockets.asyncio.server import ServerConnection, serve

    loop = asyncio.get_running_loop()
    result: asyncio.Future[float] = loop.create_future()

    async def handler(conn: ServerConnection) -> None:
        try:
            start = time.perf_counter()
            if direction == "recv":
                for _ in range(count):
                    if len(await conn.recv()) != size:
                        raise RuntimeError("short message")
            else:
                message = b"\x5a" * size
                for _ in range(count):
                    await conn.send(message)
                if await conn.recv() != b"k":
                    raise RuntimeError("client's answer missing")
            result.set_result(count / (time.perf_counter() - start))
        except BaseException as exc:
            result.set_exception(exc)
            raise

    async with serve(
        handler, "127.0.0.1", 0, max_size=size + 1, compression=None, ping_interval=None
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        process = _spawn_client(port, direction, size, count)
        try:
            return await result
        finally:
            server.close()
            await server.wait_closed()
            await loop.run_in_executor(None, _reap, process)


def websockets_rate(direction: str, size: int, count: int, *, uvloop: bool) -> float:
    """The websockets library's asyncio server, on asyncio or uvloop; messages/s."""
    if uvloop:
        import uvloop as uv

        return uv.run(_websockets_main(direction, size, count))
    import asyncio

    return asyncio.run(_websockets_main(direction, size, count))


# -- scenarios ------------------------------------------------------------------------------


def _implementations(direction: str, size: int, full: int, quick_count: int) -> Callable[
    [bool], dict[str, Measure]
]:  # fmt: skip
    def build(quick: bool) -> dict[str, Measure]:
        count = quick_count if quick else full
        return {
            "trioqio": lambda: trioqio_rate(direction, size, count),
            "trio": lambda: trio_websocket_rate(direction, size, count),
            "asyncio": lambda: websockets_rate(direction, size, count, uvloop=False),
            "uvloop": lambda: websockets_rate(direction, size, count, uvloop=True),
        }

    return build


def _no_anyio() -> dict[str, str]:
    return {"anyio-trio": NO_ANYIO, "anyio-asyncio": NO_ANYIO}


def _scenarios() -> list[Scenario]:
    scenarios: list[Scenario] = []
    for direction, verb in (("recv", "receives"), ("send", "sends")):
        for label, size, full, quick in SIZES:
            human = "4 KiB" if size < MIB else "1 MiB"
            scenarios.append(
                Scenario(
                    key=f"websocket-{direction}-{label}",
                    title=f"Websocket server {verb} {full:,} binary {human} messages",
                    unit="msg/s",
                    reference="trio",
                    implementations=_implementations(direction, size, full, quick),
                    unavailable=_no_anyio,
                    notes=(
                        "server under test on 127.0.0.1, the same blocking client in a separate "
                        "process; trio = trio-websocket, asyncio/uvloop = websockets library"
                    ),
                )
            )
    return scenarios


SCENARIOS: list[Scenario] = _scenarios()


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "client":
    os.environ.pop("PYTHONSTARTUP", None)
    client(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
