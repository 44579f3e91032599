"""File channels (QEMU ``QIOChannelFile``): a regular file, a pipe pair, an inherited fd.

1. ``open_file`` (QEMU ``qio_channel_file_new_path``): vectored write, seek, exact read,
   positioned ``pread``/``pwrite`` (the ``SEEKABLE`` feature); a regular file cannot be
   polled, so each read or write runs in a worker thread;
2. a pipe pair (QEMU ``qio_channel_file_new_fd``): non-blocking, no thread; ``send_eof``
   closes the write end so the reader sees end of file;
3. ``FileChannel.from_fd(fd, dup=True)`` (QEMU ``new_dupfd``) and ``channel_from_fd``
   (QEMU ``qio_channel_new_fd``, which picks the socket or file kind).

Run: ``python examples/file_channel.py``
"""

from __future__ import annotations

import os
import tempfile

import trio

import trioqio


async def regular_file(path: str) -> None:
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC  # O_CLOEXEC is always added
    async with await trioqio.open_file(path, flags, 0o600) as file:
        print(file, "features:", file.features)
        await file.writev([b"header--", b"payload-", b"trailer-"])
        await file.seek(0)
        print("read back:", await file.receive_exactly(8))
        await file.pwrite(b"PAYLOAD-", 8)  # positioned: the cursor does not move
        print("pread:", await file.pread(8, 8), "cursor still reads", await file.receive_some(8))


async def pipe_pair() -> None:
    read_fd, write_fd = os.pipe()
    async with trioqio.FileChannel(read_fd) as reader, trioqio.FileChannel(write_fd) as writer:
        print(writer, reader)
        await writer.send_all(b"through a pipe")
        await writer.send_eof()  # closes the write end: the reader gets EOF after the data
        print("pipe:", await reader.receive_exactly(14), await reader.receive_some())
        try:
            await reader.send_all(b"x")
        except trioqio.UnsupportedFeature as exc:
            print("read end:", exc)


async def inherited(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        async with trioqio.FileChannel.from_fd(fd, dup=True) as copy:  # our fd stays ours
            print("dup'd channel reads", await copy.receive_some(6))
    finally:
        os.close(fd)
    a, b = trio.socket.socketpair()
    b.close()
    async with trioqio.channel_from_fd(a.detach()) as channel:
        print("channel_from_fd on a socket gives", type(channel).__name__)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "state.bin")
        await regular_file(path)
        await pipe_pair()
        await inherited(path)


if __name__ == "__main__":
    trio.run(main)
