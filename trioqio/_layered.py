"""What a channel layered on a master forwards (QEMU ``io/channel-tls.c``, ``channel-websock.c``).

QEMU's TLS and websocket channels both hold a master channel and pass the Nagle and cork
hints straight down to it, both run their handshake on first use, and both report a
handshake through a QIOTask. :class:`LayeredChannel` is that shared part (with the start of
``receive_some``), so the two channels do not each carry a copy.

Differences from QEMU: none in behaviour; QEMU repeats the forwarding in each channel. The
handshake Task runs the async ``handshake()`` with :meth:`trioqio.Task.start_soon` (QEMU
steps it with main-loop watches and completes the task itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._abc import Channel

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LayeredChannel"]

#: ``receive_some``'s size when the caller gives none.
DEFAULT_RECEIVE_BYTES = 256 * 1024


class LayeredChannel(Channel):
    """A channel whose bytes travel on another channel, its master.

    Subclasses set ``_master`` and ``_handshake_done`` in their constructor and provide
    ``handshake()`` and ``_check_open()``.
    """

    _master: Channel
    _handshake_done: bool

    async def handshake(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _check_open(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    async def _handshake_then_self(self) -> Self:
        # handshake_task's work (Task.start_soon): the result is the channel itself.
        await self.handshake()
        return self

    @staticmethod
    def _receive_size(max_bytes: int | None) -> int:
        if max_bytes is None:
            return DEFAULT_RECEIVE_BYTES
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        return max_bytes

    async def _ready_to_receive(self) -> None:
        # The start of receive_some, inside its busy guard: open, handshake done (run on
        # first use, QEMU style), and a cancellation point either way.
        self._check_open()
        if not self._handshake_done:
            await self.handshake()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    @property
    def master(self) -> Channel:
        """The channel this one's bytes travel on (TLS records, websocket frames)."""
        return self._master

    def set_delay(self, enabled: bool) -> None:
        """Forward the Nagle hint to the master (QEMU: forwarded too).

        Args:
            enabled: False sets ``TCP_NODELAY``.

        Raises nothing: the master ignores a hint it cannot apply.

        Example::

            channel.set_delay(False)
        """
        self._master.set_delay(enabled)

    def set_cork(self, enabled: bool) -> None:
        """Forward the cork hint to the master (QEMU: forwarded too).

        Args:
            enabled: True to cork.

        Raises nothing: the master ignores a hint it cannot apply.

        Example::

            channel.set_cork(True)
        """
        self._master.set_cork(enabled)
