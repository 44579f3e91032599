"""Helpers shared by the NetListener test modules (real loopback clients)."""

from __future__ import annotations

import os
import select
import socket
import struct
from collections.abc import Callable
from typing import Any, Protocol

import trio

import trioqio
from trioqio import InetAddress, UnixAddress


class HasFileno(Protocol):
    """A socket, or anything else with a descriptor."""

    def fileno(self) -> int: ...


def has_ipv6_loopback() -> bool:
    """True when this machine can listen on ::1."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def connect(address: trioqio.SocketAddress) -> trio.SocketStream:
    """Open a plain Trio stream to a listener address (the client side of a test)."""
    if isinstance(address, InetAddress):
        return await trio.open_tcp_stream(address.host, address.port)
    assert isinstance(address, UnixAddress)
    path = "\0" + address.path[1:] if address.abstract else address.path
    return await trio.open_unix_socket(path)


def reset_connect(address: InetAddress) -> None:
    """Connect and close at once with SO_LINGER 0: the server sees a reset."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.connect((address.host, address.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def fd_count() -> int:
    """How many descriptors this process has open now."""
    return len(os.listdir("/proc/self/fd"))


async def reply_ok(channel: trioqio.SocketChannel) -> None:
    """A handler that sends b"ok" and returns."""
    await channel.send_all(b"ok")


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    """Read until EOF; return what was received."""
    chunks: list[bytes | bytearray] = []
    while chunk := await stream.receive_some():
        chunks.append(chunk)
    return b"".join(chunks)


async def read_reply(address: trioqio.SocketAddress) -> bytes:
    """Connect, read until EOF, close; return what was received."""
    stream = await connect(address)
    async with stream:
        return await read_all(stream)


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Poll ``predicate()`` until it is true; fail the test after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def _readable(fds: list[int]) -> bool:
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return len(poller.poll(0)) == len(fds)


async def wait_backlogged(
    *socks: HasFileno, unless: Callable[[], bool] | None = None, timeout: float = 5.0
) -> None:
    """Wait until every listening socket has a connection waiting in its kernel backlog.

    Then a task blocked in ``accept`` on one of them would be woken at the next I/O poll,
    so a following :func:`trio.testing.wait_all_tasks_blocked` proves that nobody
    accepts: the kernel event has happened and nobody took it. ``unless`` ends the wait
    early (say, on an accept that should not have happened, so that the caller's
    assertions report it rather than a timeout).
    """
    fds = [sock.fileno() for sock in socks]
    await wait_until(lambda: _readable(fds) or (unless is not None and unless()), timeout=timeout)


class LocalhostResolver(trio.abc.HostnameResolver):
    """Resolve ``localhost`` to both loopbacks, in the given order; other names as usual.

    Many hosts (this one included) map ``localhost`` to 127.0.0.1 alone; a dual-stack host
    gives ``::1`` and ``127.0.0.1``, and the order decides which accept loop starts first.
    """

    def __init__(self, hosts: tuple[str, ...]) -> None:
        self._hosts = hosts

    async def getaddrinfo(
        self, host: bytes | None, port: bytes | str | int | None, *args: Any, **kwargs: Any
    ) -> list[tuple[Any, ...]]:
        if host != b"localhost":
            infos = await trio.to_thread.run_sync(
                lambda: socket.getaddrinfo(host, port, *args, **kwargs)  # passed through
            )
            return list(infos)
        number = int(port or 0)
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (h, number, 0, 0))
            if ":" in h
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (h, number))
            for h in self._hosts
        ]

    async def getnameinfo(self, *args: object) -> tuple[str, str]:
        raise NotImplementedError


def system_localhost_families() -> set[socket.AddressFamily]:
    """The address families the system resolver gives for ``localhost`` (passive, TCP)."""
    try:
        infos = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return set()
    return {info[0] for info in infos}
