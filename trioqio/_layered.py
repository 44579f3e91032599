"""What a channel layered on a master forwards (QEMU ``io/channel-tls.c``, ``channel-websock.c``).

QEMU's TLS and websocket channels both hold a master channel and pass the Nagle and cork
hints straight down to it. :class:`LayeredChannel` is that shared part, so the two
channels do not each carry a copy.

Differences from QEMU: none in behaviour; QEMU repeats the forwarding in each channel.
"""

from __future__ import annotations

from ._abc import Channel

__all__ = ["LayeredChannel"]


class LayeredChannel(Channel):
    """A channel whose bytes travel on another channel, its master.

    Subclasses set ``_master`` in their constructor.
    """

    _master: Channel

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
