"""Raw Trio reference for the migrate scenarios: N plain ``trio.SocketStream`` connections.

Run as two processes, like ``trioqio migrate --listen/--connect``:

* ``python _migrate_raw.py listen N``: accept N connections on 127.0.0.1 (a free port,
  printed as the first stdout line), read each to EOF, answer each with its byte count
  (8 bytes, big endian), exit;
* ``python _migrate_raw.py connect PORT N SIZE``: open N connections, send SIZE bytes
  spread over them (one fixed 512 KiB buffer, the migrate packet size, sent repeatedly;
  no checksum, no page generation), half-close, wait for every count, check the total,
  print the rate in bytes/s. The clock starts before the connects and stops once every
  count arrived, so the figure covers the same window the migrate source reports.
"""

from __future__ import annotations

import sys
import time

import trio

PACKET = 128 * 4096


async def _listen(channels: int) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=channels)
    port = listeners[0].socket.getsockname()[1]
    print(port, flush=True)
    async with trio.open_nursery() as nursery:
        for _ in range(channels):
            stream = await listeners[0].accept()
            nursery.start_soon(_drain, stream)
    await listeners[0].aclose()


async def _drain(stream: trio.SocketStream) -> None:
    async with stream:
        count = 0
        while data := await stream.receive_some(PACKET):
            count += len(data)
        await stream.send_all(count.to_bytes(8, "big"))


async def _connect(port: int, channels: int, size: int) -> float:
    payload = b"\xa5" * PACKET
    shares = [size // channels + (1 if i < size % channels else 0) for i in range(channels)]
    counts: list[int] = []

    async def one(share: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            view = memoryview(payload)
            while share > 0:
                step = min(share, PACKET)
                await stream.send_all(view[:step])
                share -= step
            await stream.send_eof()
            reply = b""
            while len(reply) < 8:
                chunk = await stream.receive_some(8 - len(reply))
                if not chunk:
                    raise RuntimeError("receiver closed before its count")
                reply += chunk
            counts.append(int.from_bytes(reply, "big"))

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for share in shares:
            nursery.start_soon(one, share)
    elapsed = time.perf_counter() - start
    if sum(counts) != size:
        raise RuntimeError(f"receiver counted {sum(counts)} bytes, expected {size}")
    return size / elapsed


def main(argv: list[str]) -> int:
    if argv[0] == "listen":
        trio.run(_listen, int(argv[1]))
        return 0
    if argv[0] == "connect":
        rate = trio.run(_connect, int(argv[1]), int(argv[2]), int(argv[3]))
        print(rate, flush=True)
        return 0
    raise SystemExit(f"usage: {sys.argv[0]} listen N | connect PORT N SIZE")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
