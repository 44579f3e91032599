"""A small echo service: one line in, the same line back, upper-cased on request.

The service is a handler for :class:`trioqio.NetListener` plus a ``serve`` function in
Trio's ``serve_tcp`` shape, so its tests can run it on a real socket (``net_listener``),
in memory (``memory_listener``), behind a faulty network (``fault_proxy``) or over TLS
(``tls_pair``).
"""

from __future__ import annotations

import functools

import trio

import trioqio

#: The longest line the service accepts; a longer one ends the connection.
MAX_LINE = 4096


async def handle(stream: trio.abc.Stream, *, shout: bool = False) -> None:
    """Echo each newline-terminated line back (upper-cased with ``shout``) until EOF."""
    buffer = bytearray()
    async for data in stream:
        buffer += data
        while (end := buffer.find(b"\n")) >= 0:
            line, buffer = bytes(buffer[: end + 1]), buffer[end + 1 :]
            await stream.send_all(line.upper() if shout else line)
        if len(buffer) > MAX_LINE:
            await stream.send_all(b"error: line too long\n")
            return


async def serve(
    *addresses: str, shout: bool = False, task_status: trio.TaskStatus[trioqio.NetListener]
) -> None:
    """Serve the echo on every address until cancelled; hand back the listener."""
    handler = functools.partial(handle, shout=shout)
    serving = functools.partial(trioqio.serve, name="echo", max_clients=64)
    await serving(handler, *addresses, task_status=task_status)
