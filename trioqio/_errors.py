"""trioqio's error tree (QEMU: ``Error **errp`` becomes an exception).

Every error trioqio raises on its own account derives from :class:`QIOError` and also from
the closest builtin or Trio error, so ``except ValueError`` or
``except trio.BrokenResourceError`` keep working. Exceptions raised by user code (a Task's
worker, a client handler) pass through unwrapped.
"""

from __future__ import annotations

import trio

__all__ = [
    "AddressError",
    "HandshakeError",
    "MigrationError",
    "QIOError",
    "TaskCancelled",
    "TaskError",
    "UnexpectedEOF",
    "UnsupportedFeature",
]


class QIOError(Exception):
    """Base of every error trioqio raises on its own account.

    Example::

        try:
            await channel.receive_exactly(64)
        except trioqio.QIOError as exc:
            print("trioqio said:", exc)
    """


class AddressError(QIOError, ValueError):
    """An address string or value is malformed; the message names the bad part.

    Example::

        trioqio.parse_address("tcp:host:99999")  # AddressError: port 99999 out of range
    """


class UnexpectedEOF(QIOError, trio.BrokenResourceError):
    """The peer closed the stream before the requested bytes arrived (QEMU ``read_all``).

    Attributes:
        expected: how many bytes were asked for.
        received: how many arrived before end-of-file.
    """

    def __init__(self, message: str, *, expected: int = 0, received: int = 0) -> None:
        super().__init__(message)
        self.expected = expected
        self.received = received


class UnsupportedFeature(QIOError, NotImplementedError):
    """A channel lacks the feature an operation needs (QEMU ``qio_channel_has_feature``).

    Attributes:
        feature: the missing feature's name (e.g. ``"FD_PASS"``).
        channel: the channel's name.
    """

    def __init__(self, feature: str, channel: str, detail: str = "") -> None:
        message = f"channel {channel!r} does not support {feature}"
        if detail:
            message = f"{message}: {detail}"
        super().__init__(message)
        self.feature = feature
        self.channel = channel


class TaskError(QIOError, RuntimeError):
    """A :class:`trioqio.Task` was used in a way its state does not allow.

    Raised for example by ``task.result`` when the task has no result.
    """


class TaskCancelled(TaskError):
    """The Task's worker was cancelled before it finished (the error its completion sees).

    Attributes:
        abandoned: True when the worker thread was abandoned and may still be running
            (``abandon_on_cancel=True``); False when the worker was waited for.
    """

    def __init__(self, message: str = "task cancelled", *, abandoned: bool = False) -> None:
        super().__init__(message)
        self.abandoned = abandoned


class HandshakeError(QIOError):
    """A TLS or websocket handshake failed.

    Attributes:
        status: the HTTP status sent to the peer (websocket), or None.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MigrationError(QIOError):
    """A migration failed; the message names the channel and the field at fault."""
