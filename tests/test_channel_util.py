"""channel_from_fd (QEMU ``qio_channel_new_fd``): the kind follows what the fd is.

QEMU's /io/channel/file/fd test checks that a regular file's fd becomes a file channel;
the rest covers the other kinds and bad fds (which stay the caller's).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

import trioqio


async def test_regular_file_becomes_file_channel(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    channel = trioqio.channel_from_fd(fd)
    async with channel:
        assert type(channel) is trioqio.FileChannel
        assert trioqio.ChannelFeature.SEEKABLE in channel.features
        await channel.send_all(b"abc")
    assert os.path.getsize(tmp_path / "f") == 3


async def test_pipe_becomes_file_channel() -> None:
    read_fd, write_fd = os.pipe()
    reader = trioqio.channel_from_fd(read_fd, name="in")
    writer = trioqio.channel_from_fd(write_fd)
    async with reader, writer:
        assert type(reader) is trioqio.FileChannel
        assert reader.name == "in"
        await writer.send_all(b"ping")
        assert await reader.receive_exactly(4) == b"ping"


async def test_socket_becomes_socket_channel() -> None:
    left, right = socket.socketpair()
    a = trioqio.channel_from_fd(left.detach())
    b = trioqio.channel_from_fd(right.detach())
    async with a, b:
        assert type(a) is trioqio.SocketChannel
        assert trioqio.ChannelFeature.SHUTDOWN in a.features
        await a.send_all(b"ping")
        assert await b.receive_exactly(4) == b"ping"
        await a.send_eof()  # a real half-close, which a FileChannel could not do
        assert await b.receive_some() == b""


async def test_closed_fd_is_an_error() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    os.close(write_fd)
    with pytest.raises(OSError):
        trioqio.channel_from_fd(read_fd)


async def test_directory_is_refused_and_stays_ours(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(IsADirectoryError):
            trioqio.channel_from_fd(fd)
        os.fstat(fd)  # still open: the caller keeps the fd on failure
    finally:
        os.close(fd)


async def test_datagram_socket_is_refused_and_stays_ours() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        with pytest.raises(ValueError):
            trioqio.channel_from_fd(sock.fileno())
        os.fstat(sock.fileno())
