"""The "one task per direction" guard every trioqio stream keeps (QEMU ``io/channel.c``).

QEMU asserts that at most one coroutine waits per direction (``qio_channel_yield``); Trio's
streams promise a :class:`trio.BusyResourceError` to a second concurrent sender or
receiver instead. :class:`Busy` is that promise, shared by the socket, TLS and websocket
channels.
"""

from __future__ import annotations

import trio

__all__ = ["Busy"]


class Busy:
    """A minimal conflict detector: a second concurrent caller gets BusyResourceError.

    The message is built once, here, so entering the guard on a hot path costs two
    attribute reads.

    Args:
        what: completes "another task is already ...", e.g. ``"sending on this channel"``.
    """

    __slots__ = ("_held", "_message")

    def __init__(self, what: str) -> None:
        self._message = f"another task is already {what}"
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self._message)
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False
