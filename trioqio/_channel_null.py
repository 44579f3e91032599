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

from ._abc import Channel

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["NullChannel"]


@final
class NullChannel(Channel):
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
        self._closed = False
        self._eof_sent = False
        #: How many bytes were written and discarded (useful for counting output).
        self.bytes_discarded = 0

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: channel is closed")

    async def send_all(self, data: Buffer) -> None:
        """Discard ``data``.

        Args:
            data: bytes-like.

        Raises:
            trio.ClosedResourceError: the channel was closed or ``send_eof`` was called.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        if self._eof_sent:
            raise trio.ClosedResourceError(f"{self.name}: cannot send after send_eof()")
        with memoryview(data) as view:
            self.bytes_discarded += view.nbytes
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        """Return at once.

        Raises:
            trio.ClosedResourceError: the channel was closed.
        """
        self._check_open()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return ``b""`` (end of file).

        Args:
            max_bytes: ignored, but must be >= 1 when given.

        Returns:
            ``b""``.

        Raises:
            trio.ClosedResourceError: the channel was closed.
        """
        if max_bytes is not None and not isinstance(max_bytes, int):  # pyright: ignore[reportUnnecessaryIsInstance]  # untyped callers
            raise TypeError(f"max_bytes must be an integer, got {max_bytes!r}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self._check_open()
        await trio.lowlevel.checkpoint()
        return b""

    async def send_eof(self) -> None:
        """Forbid further writes. Again is a no-op.

        Raises:
            trio.ClosedResourceError: the channel was closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()  # cancelled: no effect, as Trio asks
        self._check_open()
        self._eof_sent = True
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def aclose(self) -> None:
        """Close the channel; idempotent."""
        self._closed = True
        await trio.lowlevel.checkpoint()

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
