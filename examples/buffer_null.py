"""Buffer and null channels (QEMU ``QIOChannelBuffer``, ``QIOChannelNull``).

QEMU's migration builds a device's state in a buffer channel, then sends the blob; the
null channel measures how much a writer would produce without keeping it. Neither ever
waits.

Run: ``python examples/buffer_null.py``
"""

from __future__ import annotations

import struct

import trio

import trioqio


async def save_device_state(channel: trioqio.abc.Channel) -> None:
    """Any writer that takes a channel: here, a tiny device-state format."""
    await channel.writev([b"DEV1", struct.pack(">I", 3), b"abc"])


async def buffer_blob() -> None:
    buffer = trioqio.BufferChannel(name="device-state")  # QEMU qio_channel_buffer_new
    await save_device_state(buffer)
    print(f"{len(buffer.data)} bytes built, cursor at {buffer.offset}")
    await buffer.seek(0)  # QEMU qio_channel_io_seek
    magic = await buffer.receive_exactly(4)
    (length,) = struct.unpack(">I", await buffer.receive_exactly(4))
    print("parsed:", magic, await buffer.receive_exactly(length))
    print("at the end:", await buffer.receive_some())  # b"": end of file, never waits
    await buffer.pwrite(b"DEV2", 0)  # overwrite in place (QEMU would append)
    await buffer.aclose()
    print("data after close:", buffer.data)


async def null_sink() -> None:
    sink = trioqio.NullChannel()  # QEMU qio_channel_null_new
    await save_device_state(sink)
    print(
        f"null channel discarded {sink.bytes_discarded} bytes; reads give",
        await sink.receive_some(),
    )
    await sink.aclose()
    try:
        await sink.send_all(b"x")
    except trio.ClosedResourceError as exc:
        print("after close:", exc)


async def main() -> None:
    await buffer_blob()
    await null_sink()


if __name__ == "__main__":
    trio.run(main)
