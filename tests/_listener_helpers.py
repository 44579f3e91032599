"""Helpers shared by the NetListener test modules (real loopback clients)."""

from __future__ import annotations

import os
import socket
import struct

import trio

import trioqio
from trioqio import InetAddress, UnixAddress


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


async def read_reply(address: trioqio.SocketAddress) -> bytes:
    """Connect, read until EOF, close; return what was received."""
    stream = await connect(address)
    async with stream:
        chunks: list[bytes] = []
        while chunk := await stream.receive_some():
            chunks.append(chunk)
    return b"".join(chunks)
