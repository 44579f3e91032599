"""The "one task per direction" guard every trioqio stream keeps (QEMU ``io/channel.c``).

QEMU asserts that at most one coroutine waits per direction (``qio_channel_yield``); Trio's
streams promise a :class:`trio.BusyResourceError` to a second concurrent sender or
receiver instead. :class:`Busy` is that promise, shared by the socket, file, command, TLS
and websocket channels, so all of them word the refusal the same way.
"""

from __future__ import annotations

import trio

__all__ = ["Busy"]


class Busy:
    """A minimal conflict detector: a second concurrent caller gets BusyResourceError.

    Entering and leaving the guard costs two attribute reads and a store. The message is
    put together only when a conflict is raised: a server makes two guards per accepted
    client, and formatting both messages up front cost more than the guards themselves.

    Args:
        what: completes "another task is already ...", e.g. ``"sending on socket
            channel"``.
        name: the channel's name, quoted at the end of the message; None when ``what``
            says it all (``"sending on this TLS channel"``).
    """

    __slots__ = ("_held", "_name", "_what")

    def __init__(self, what: str, name: str | None = None) -> None:
        self._what = what
        self._name = name
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self.message())
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False

    def message(self) -> str:
        """The refusal, e.g. ``another task is already sending on socket channel 'x'``."""
        if self._name is None:
            return f"another task is already {self._what}"
        return f"another task is already {self._what} {self._name!r}"
