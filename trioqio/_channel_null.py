"""A channel that discards writes and reads end of file (QEMU ``io/channel-null.c``).

QEMU's QIOChannelNull is ``/dev/null`` as a channel: writes report the full size, reads
report end of file, and after a close both fail with "Channel is closed". It is used for
migration's "write to nowhere" paths and in tests.

Differences from QEMU: there are no watches (a Trio task never needs to wait on this
channel: every call returns at once), and the errors after close are
:class:`trio.ClosedResourceError`, as for every Trio stream.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, final

import trio

from ._channel_memory import MemoryChannel

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["NullChannel"]


@final
class NullChannel(MemoryChannel):
    """A channel whose writes vanish and whose reads give end of file at once.

    After :meth:`aclose` both raise :class:`trio.ClosedResourceError` ("channel is
    closed"). ``send_eof`` forbids further writes, like any half-close. Trio's stream
    conformance checks do not apply (nothing written can be read back); the tests check
    QEMU's null-channel behaviour directly.

    QEMU: ``QIOChannelNull`` (``qio_channel_null_new``).

    Args:
        name: a name for errors and traces.

    Example::

        sink = trioqio.NullChannel()
        await sink.send_all(b"discarded")
        assert await sink.receive_some() == b""
    """

    def __init__(self, *, name: str = "null") -> None:
        self.name = name
        #: How many bytes were written and discarded (useful for counting output).
        self.bytes_discarded: int = 0

    async def send_all(self, data: Buffer) -> None:
        """Discard ``data``.

        Args:
            data: bytes-like.

        Raises:
            trio.ClosedResourceError: the channel was closed or ``send_eof`` was called.
        """
        await self._begin_send()
        with memoryview(data) as view:
            self.bytes_discarded += view.nbytes
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return ``b""`` (end of file).

        Args:
            max_bytes: ignored, but must be >= 1 when given.

        Returns:
            ``b""``.

        Raises:
            trio.ClosedResourceError: the channel was closed.
        """
        self._check_max_bytes(max_bytes)
        self._check_open()
        await trio.lowlevel.checkpoint()
        return b""

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Return 0, as QEMU's null channel does, whatever the arguments.

        Args:
            offset: ignored.
            whence: ignored.

        Returns:
            0.

        Raises:
            trio.ClosedResourceError: the channel was closed.

        Example::

            assert await trioqio.NullChannel().seek(100) == 0
        """
        self._check_open()
        await trio.lowlevel.checkpoint()
        return 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<trioqio.NullChannel {self.name!r} {state}>"
