"""An in-memory channel (QEMU ``io/channel-buffer.c``).

QEMU's QIOChannelBuffer is a growable byte array with a cursor: writes go in, a seek
moves the cursor, reads come out, and nothing ever blocks. Migration uses it to build a
device-state blob before sending it.

Differences from QEMU, deliberate (QEMU's behaviour is a quirk in each case):

- :meth:`BufferChannel.seek` honours ``whence`` (QEMU ignores it and treats every offset
  as absolute).
- A write after a backwards seek overwrites at the cursor (QEMU appends at the end of the
  data whatever the cursor says).
- A write after seeking past the end zero-fills the gap between the old end and the
  cursor (QEMU's zero-fill writes at the start of the buffer instead).
- The data stays readable through :attr:`BufferChannel.data` after ``aclose`` (QEMU frees
  it), so a test or a caller can inspect what was written.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, final

import trio

from ._abc import ChannelFeature
from ._channel_memory import MemoryChannel

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["BufferChannel"]


@final
class BufferChannel(MemoryChannel):
    """A channel over an in-memory byte buffer with a cursor; it never blocks.

    Reading returns bytes from the cursor to the end of the data and moves the cursor;
    at the end it returns ``b""`` (end of file) at once instead of waiting, which is why
    Trio's stream conformance checks (which expect a receive on an empty stream to wait
    for the peer) do not apply: the buffer is its own peer. The usual pattern is
    write, :meth:`seek` back, read.

    ``send_eof`` forbids further writes; reading goes on. After ``aclose`` reads and
    writes raise :class:`trio.ClosedResourceError`, but :attr:`data` stays available.
    ``SEEKABLE`` is set, with
    :meth:`seek`, :meth:`pread` and :meth:`pwrite`.

    Differences from QEMU: ``seek`` honours ``whence``; a write after a backwards seek
    overwrites at the cursor instead of appending; a gap left by seeking past the end is
    zero-filled where it is (QEMU zero-fills the buffer's start).

    QEMU: ``QIOChannelBuffer`` (``qio_channel_buffer_new``).

    Args:
        initial: the starting contents; the cursor starts at 0.
        name: a name for errors and traces.

    Example::

        buffer = trioqio.BufferChannel()
        await buffer.send_all(b"device state")
        await buffer.seek(0)
        assert await buffer.receive_some() == b"device state"
    """

    def __init__(self, initial: Buffer = b"", *, name: str = "buffer") -> None:
        self._data = bytearray(initial)
        self._offset = 0
        self.name = name
        self.features = ChannelFeature.SEEKABLE

    @property
    def data(self) -> bytes:
        """A copy of the whole contents (not only what lies after the cursor)."""
        return bytes(self._data)

    @property
    def offset(self) -> int:
        """The cursor, where the next read or write happens."""
        return self._offset

    def __len__(self) -> int:
        return len(self._data)

    def _write_at(self, position: int, octets: memoryview) -> None:
        end = position + len(octets)
        if position > len(self._data):
            self._data.extend(bytes(position - len(self._data)))  # zero-fill the gap
        self._data[position:end] = octets

    # -- Trio stream API ----------------------------------------------------------------

    async def send_all(self, data: Buffer) -> None:
        """Write ``data`` at the cursor (overwriting, then extending) and move the cursor.

        Args:
            data: bytes-like.

        Raises:
            trio.ClosedResourceError: the channel was closed or ``send_eof`` was called.
        """
        await self._begin_send()
        with memoryview(data) as view, view.cast("B") as octets:
            self._write_at(self._offset, octets)
            self._offset += len(octets)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Read up to ``max_bytes`` from the cursor; ``b""`` at the end of the data.

        Args:
            max_bytes: the most bytes (default: everything left); must be >= 1.

        Returns:
            The bytes; the cursor moves past them.

        Raises:
            trio.ClosedResourceError: the channel was closed.
        """
        self._check_max_bytes(max_bytes)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        start = min(self._offset, len(self._data))
        end = len(self._data) if max_bytes is None else min(len(self._data), start + max_bytes)
        chunk = bytes(self._data[start:end])
        self._offset = max(self._offset, end)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return chunk

    # -- random access ------------------------------------------------------------------

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the cursor (QEMU ``qio_channel_io_seek``, but honouring ``whence``).

        Seeking past the end is allowed; a later write zero-fills the gap.

        Args:
            offset: where to, relative to ``whence``.
            whence: ``os.SEEK_SET``, ``os.SEEK_CUR`` or ``os.SEEK_END``.

        Returns:
            The new cursor position.

        Raises:
            ValueError: an unknown ``whence``, or a negative resulting position.
            trio.ClosedResourceError: the channel was closed.

        Example::

            await buffer.seek(-4, os.SEEK_END)
        """
        self._check_open()
        if whence == os.SEEK_SET:
            base = 0
        elif whence == os.SEEK_CUR:
            base = self._offset
        elif whence == os.SEEK_END:
            base = len(self._data)
        else:
            raise ValueError(f"{self.name}: unknown whence {whence!r}")
        position = base + offset
        if position < 0:
            raise ValueError(f"{self.name}: cannot seek to negative position {position}")
        self._offset = position
        await trio.lowlevel.checkpoint()
        return position

    async def pread(self, n: int, offset: int) -> bytes:
        """Read up to ``n`` bytes at ``offset`` without moving the cursor.

        Args:
            n: the most bytes.
            offset: the position; past the end gives ``b""``.

        Returns:
            The bytes.

        Raises:
            ValueError: a negative ``n`` or ``offset``.
            trio.ClosedResourceError: the channel was closed.

        Example::

            magic = await buffer.pread(4, 0)
        """
        self._check_open()
        if n < 0 or offset < 0:
            raise ValueError(f"{self.name}: negative size or offset ({n}, {offset})")
        await trio.lowlevel.checkpoint()
        return bytes(self._data[offset : offset + n])

    async def pwrite(self, data: Buffer, offset: int) -> int:
        """Write ``data`` at ``offset`` without moving the cursor (zero-filling any gap).

        Args:
            data: bytes-like.
            offset: the position.

        Returns:
            The number of bytes written.

        Raises:
            ValueError: a negative ``offset``.
            trio.ClosedResourceError: the channel was closed or ``send_eof`` was called.

        Example::

            await buffer.pwrite(b"HDR!", 0)
        """
        self._check_open()
        if self._eof_sent:
            raise trio.ClosedResourceError(f"{self.name}: cannot send after send_eof()")
        if offset < 0:
            raise ValueError(f"{self.name}: negative offset {offset}")
        with memoryview(data) as view, view.cast("B") as octets:
            self._write_at(offset, octets)
            count = len(octets)
        await trio.lowlevel.checkpoint()
        return count

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"offset={self._offset}"
        return f"<trioqio.BufferChannel {self.name!r} size={len(self._data)} {state}>"
