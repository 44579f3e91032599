"""What the never-blocking in-memory channels share (QEMU ``io/channel-buffer.c``, ``-null.c``).

QEMU's buffer and null channels each re-implement "closed?" checks and an always-ready
watch. trioqio's :class:`BufferChannel` and :class:`NullChannel` share them here: the
closed and send-EOF state, the argument checks of ``receive_some``, and the Trio stream
methods that are the same for any channel whose calls never wait.
"""

from __future__ import annotations

import trio

from ._abc import Channel

__all__ = ["MemoryChannel"]


class MemoryChannel(Channel):
    """A channel whose every call returns at once (no peer, nothing to wait for)."""

    _closed: bool = False
    _eof_sent: bool = False

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: channel is closed")

    async def _begin_send(self) -> None:
        """The checks before a write: cancellation first (a cancelled write has no effect)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        if self._eof_sent:
            raise trio.ClosedResourceError(f"{self.name}: cannot send after send_eof()")

    @staticmethod
    def _check_max_bytes(max_bytes: int | None) -> None:
        if max_bytes is not None and not isinstance(max_bytes, int):  # pyright: ignore[reportUnnecessaryIsInstance]  # untyped callers
            raise TypeError(f"max_bytes must be an integer, got {max_bytes!r}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")

    async def wait_send_all_might_not_block(self) -> None:
        """Return at once: writing to memory never blocks.

        Raises:
            trio.ClosedResourceError: the channel was closed.

        Example::

            await channel.wait_send_all_might_not_block()  # returns at once
        """
        self._check_open()
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        """Forbid further writes; reading goes on. Again is a no-op.

        Raises:
            trio.ClosedResourceError: the channel was closed.

        Example::

            await channel.send_eof()
            await channel.send_all(b"x")  # trio.ClosedResourceError
        """
        await trio.lowlevel.checkpoint_if_cancelled()  # cancelled: no effect, as Trio asks
        self._check_open()
        self._eof_sent = True
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def aclose(self) -> None:
        """Close the channel; reads and writes then raise ``ClosedResourceError``. Idempotent.

        Raises nothing: closing twice is a no-op.

        Example::

            await channel.aclose()
            await channel.aclose()  # no-op
        """
        self._closed = True
        await trio.lowlevel.checkpoint()
