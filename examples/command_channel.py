"""Talk to child processes through command channels (QEMU ``qio_channel_command_new_spawn``).

QEMU's "exec:" migration runs a command and streams the VM state into its stdin (or reads
an incoming state from its stdout). This example shows the three plumbing modes:

1. "rw": feed ``sort`` some lines, half-close (``send_eof``) so it sees end of file, read
   its answer;
2. "rw" with a writer and a reader at once: 1 MB through ``cat``, which would deadlock if
   done one after the other (the pipes hold far less than that);
3. "w" and "r": QEMU's fifo test, one command writes into a FIFO, another reads from it;
4. a child that ignores end of file: closing the channel escalates to SIGTERM.

Run: ``python examples/command_channel.py``
"""

from __future__ import annotations

import hashlib
import os
import signal
import tempfile

import trio

import trioqio


async def receive_all(channel: trioqio.abc.Channel) -> bytes:
    chunks: list[bytes | bytearray] = []
    while chunk := await channel.receive_some():
        chunks.append(chunk)
    return b"".join(chunks)


async def sort_lines() -> None:
    async with await trioqio.open_command(["sort"]) as sorter:
        await sorter.send_all(b"pear\napple\nfig\n")
        await sorter.send_eof()  # closes sort's stdin: now it can answer
        print("sorted:", (await receive_all(sorter)).decode().split())
    print("sort exited with", sorter.returncode)


async def echo_through_cat() -> None:
    payload = os.urandom(1_000_000)
    async with await trioqio.open_command(["cat"]) as cat:
        received: list[bytes] = []

        async def reader() -> None:
            received.append(await cat.receive_exactly(len(payload)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await cat.send_all(payload)  # the writer runs while the reader drains
    same = hashlib.sha256(received[0]).digest() == hashlib.sha256(payload).digest()
    print(f"cat echoed {len(received[0])} bytes, identical: {same}")


async def through_a_fifo() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "stream.fifo")
        os.mkfifo(fifo)
        writer = await trioqio.open_command(["sh", "-c", 'exec cat > "$0"', fifo], "w")
        reader = await trioqio.open_command(["sh", "-c", 'exec cat < "$0"', fifo], "r")
        async with writer, reader:
            await writer.send_all(b"through the fifo\n")
            await writer.send_eof()
            print("fifo delivered:", await receive_all(reader))


async def stubborn_child() -> None:
    # `sleep` never reads its stdin, so closing the pipe does not end it; after
    # close_timeout the channel sends SIGTERM (and SIGKILL if that is ignored too).
    channel = await trioqio.open_command(["sleep", "600"], "w", close_timeout=0.2)
    await channel.aclose()
    print("sleep was terminated:", channel.returncode == -signal.SIGTERM)


async def main() -> None:
    await sort_lines()
    await echo_through_cat()
    await through_a_fifo()
    await stubborn_child()


if __name__ == "__main__":
    trio.run(main)
