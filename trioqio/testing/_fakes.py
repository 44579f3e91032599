"""Fakes for testing code built on channels (QEMU ``tests/unit/io-channel-helpers.c`` style).

QEMU's 2026 websock test wraps its socket in a "stall" channel that answers one read and
one write with ``QIO_CHANNEL_ERR_BLOCK`` before doing the real work, to prove the code
above it copes with a channel that is not always ready. :class:`StallingChannel` is that
wrapper for Trio: selected reads and writes park until every other task is blocked (the
moment a real "would block" would have been resolved by the peer), and reads and writes
can be cut short to force the partial-I/O paths.
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING

import trio
import trio.testing

from .._abc import Channel, ChannelFeature, Shutdown

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["DelegatingChannel", "StallingChannel"]


class DelegatingChannel(Channel):
    """Delegates to ``inner``; the test wrappers change ``send_all``/``receive_some``.

    Shared by :class:`StallingChannel` and the migration wrappers (``_migration.py``).
    """

    def __init__(self, inner: Channel, label: str) -> None:
        self.inner = inner
        self.name: str = f"{label}({inner.name or type(inner).__name__})"
        # Peek and descriptor passing would bypass the wrapper's view of the stream.
        self.features: ChannelFeature = inner.features & ChannelFeature.SHUTDOWN

    async def wait_send_all_might_not_block(self) -> None:
        """Delegate to the inner channel.

        Raises:
            trio.BrokenResourceError: the inner channel failed.
            trio.ClosedResourceError: the inner channel was closed.

        Example::

            await wrapped.wait_send_all_might_not_block()
        """
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Delegate to the inner channel (TLS: close_notify).

        Raises:
            trio.BrokenResourceError: the inner channel failed.
            trio.ClosedResourceError: the inner channel was closed.

        Example::

            await wrapped.send_eof()
        """
        await self.inner.send_eof()

    async def shutdown(self, how: Shutdown = Shutdown.BOTH) -> None:
        """Delegate to the inner channel (``UnsupportedFeature`` if it lacks SHUTDOWN).

        Args:
            how: the direction(s) to shut down.

        Raises:
            trioqio.UnsupportedFeature: the inner channel lacks ``SHUTDOWN``.
            trio.ClosedResourceError: the inner channel was closed.

        Example::

            await wrapped.shutdown(trioqio.Shutdown.WRITE)
        """
        self._require(ChannelFeature.SHUTDOWN, "data path shutdown")
        await self.inner.shutdown(how)

    async def aclose(self) -> None:
        """Close the inner channel.

        Raises nothing of its own: the inner channel's ``aclose`` decides.

        Example::

            await wrapped.aclose()
        """
        await self.inner.aclose()


@typing.final
class StallingChannel(DelegatingChannel):
    """Wrap a channel so that some reads and writes stall once and all may be short.

    A stall waits for :func:`trio.testing.wait_all_tasks_blocked` before the operation
    proceeds, so the code under test sees a channel that is not ready at once. With
    ``max_read`` a ``receive_some`` returns at most that many bytes; with ``max_write``
    ``send_all`` passes the data on in pieces of that size, yielding between them.

    Only ``SHUTDOWN`` is passed through from the inner channel's features (peek and
    descriptor passing would bypass the stalls).

    Args:
        inner: the channel to wrap; closing the wrapper closes it.
        stall_reads: how many of the first ``receive_some`` calls stall.
        stall_writes: how many of the first ``send_all`` calls stall.
        max_read: cap per ``receive_some`` (None: no cap).
        max_write: piece size for ``send_all`` (None: one piece).

    Attributes:
        stalled_reads: how many reads have stalled so far.
        stalled_writes: how many writes have stalled so far.

    Raises:
        ValueError: a negative count or a cap below 1.

    Example::

        a, b = trio.socket.socketpair()
        left, right = trioqio.SocketChannel(a), trioqio.SocketChannel(b)
        slow = trioqio.testing.StallingChannel(left, stall_reads=1, max_write=100)
        await trioqio.testing.run_data_test(slow, right)
    """

    def __init__(
        self,
        inner: Channel,
        *,
        stall_reads: int = 1,
        stall_writes: int = 1,
        max_read: int | None = None,
        max_write: int | None = None,
    ) -> None:
        if stall_reads < 0 or stall_writes < 0:
            raise ValueError("stall counts must be >= 0")
        if (max_read is not None and max_read < 1) or (max_write is not None and max_write < 1):
            raise ValueError("max_read and max_write must be >= 1 (or None)")
        super().__init__(inner, "stalling")
        self._stall_reads = stall_reads
        self._stall_writes = stall_writes
        self._max_read = max_read
        self._max_write = max_write
        self.stalled_reads: int = 0
        self.stalled_writes: int = 0
        self._sending = False

    async def send_all(self, data: Buffer) -> None:
        """Send ``data`` through the inner channel, stalling and cutting as configured.

        Args:
            data: the bytes to send.

        Raises:
            trio.BusyResourceError: another task is sending.
            trio.BrokenResourceError: the inner channel failed.
            trio.ClosedResourceError: the inner channel was closed.

        Example::

            await slow.send_all(b"x" * 1000)  # ten sends of 100 bytes with max_write=100
        """
        if self._sending:
            raise trio.BusyResourceError(f"another task is sending on {self.name}")
        self._sending = True
        try:
            if self.stalled_writes < self._stall_writes:
                self.stalled_writes += 1
                await trio.testing.wait_all_tasks_blocked()
            view = memoryview(data).cast("B")
            step = self._max_write or max(len(view), 1)
            if not view:
                await self.inner.send_all(view)
            for offset in range(0, len(view), step):
                await self.inner.send_all(view[offset : offset + step])
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Receive through the inner channel, stalling and capping as configured.

        Args:
            max_bytes: the most bytes to return (further capped by ``max_read``).

        Returns:
            The bytes; empty at end of file.

        Raises:
            trio.BrokenResourceError: the inner channel failed.
            trio.ClosedResourceError: the inner channel was closed.

        Example::

            data = await slow.receive_some(4096)  # at most max_read bytes
        """
        if self.stalled_reads < self._stall_reads:
            self.stalled_reads += 1
            await trio.testing.wait_all_tasks_blocked()
        if self._max_read is not None:
            max_bytes = self._max_read if max_bytes is None else min(max_bytes, self._max_read)
        return await self.inner.receive_some(max_bytes)
