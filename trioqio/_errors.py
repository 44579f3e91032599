"""trioqio's error tree (QEMU: ``Error **errp`` becomes an exception).

Every error trioqio raises on its own account derives from :class:`QIOError` and also from
the closest builtin or Trio error, so ``except ValueError`` or
``except trio.BrokenResourceError`` keep working. Exceptions raised by user code (a Task's
worker, a client handler) pass through unwrapped.
"""

from __future__ import annotations

import operator

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
    "WebsockProtocolError",
    "receive_size",
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

    Raised by :func:`trioqio.parse_address`, :func:`trioqio.as_address` and the address
    constructors when a field is missing, out of range or of the wrong type.

    Example::

        trioqio.parse_address("tcp:host:99999")  # AddressError: port 99999 out of range
    """


class UnexpectedEOF(QIOError, trio.BrokenResourceError):
    """The peer closed the stream before the requested bytes arrived (QEMU ``read_all``).

    Raised by :meth:`trioqio.abc.Channel.receive_exactly` (and
    ``receive_exactly_or_eof`` after a partial read) when end of file comes early, and
    by a TLS channel whose peer closed without a TLS close-notify.

    Attributes:
        expected: how many bytes were asked for.
        received: how many arrived before end-of-file.

    Example::

        try:
            header = await channel.receive_exactly(16)
        except trioqio.UnexpectedEOF as exc:
            print(f"short read: {exc.received} of {exc.expected} bytes")
    """

    def __init__(self, message: str, *, expected: int = 0, received: int = 0) -> None:
        super().__init__(message)
        self.expected = expected
        self.received = received


class UnsupportedFeature(QIOError, NotImplementedError):
    """A channel lacks the feature an operation needs (QEMU ``qio_channel_has_feature``).

    Raised when a channel is asked for something its kind cannot do: passing file
    descriptors over TCP, seeking a pipe, writing to a command opened read-only.

    Attributes:
        feature: the missing feature's name (e.g. ``"FD_PASS"``).
        channel: the channel's name.

    Example::

        try:
            await channel.send_with_fds(b"x", [fd])
        except trioqio.UnsupportedFeature as exc:
            print(exc.channel, "cannot do", exc.feature)
    """

    def __init__(self, feature: str, channel: str, detail: str = "") -> None:
        message = f"channel {channel!r} does not support {feature}"
        if detail:
            message = f"{message}: {detail}"
        super().__init__(message)
        self.feature = feature
        self.channel = channel
        self._detail = detail

    def __reduce__(
        self,
    ) -> tuple[type[UnsupportedFeature], tuple[str, str, str], dict[str, object]]:
        # Pickles rebuild from the constructor's arguments, not from the message alone.
        return type(self), (self.feature, self.channel, self._detail), self.__dict__


class TaskError(QIOError, RuntimeError):
    """A :class:`trioqio.Task` was used in a way its state does not allow.

    Raised for example by ``task.result`` when the task has no result.

    Example::

        task: trioqio.Task[int] = trioqio.Task(source=None)
        try:
            print(task.result)
        except trioqio.TaskError:
            print("no result yet")
    """


class TaskCancelled(TaskError):
    """The Task's worker was cancelled before it finished (the error its completion sees).

    Raised by :meth:`trioqio.Task.wait` (and stored as :attr:`trioqio.Task.error`) when
    the nursery running the worker was cancelled first.

    Attributes:
        abandoned: True when the worker thread was abandoned and may still be running
            (``abandon_on_cancel=True``); False when the worker was waited for.

    Example::

        def on_complete(task: trioqio.Task[int]) -> None:
            if isinstance(task.error, trioqio.TaskCancelled):
                print("cancelled; thread abandoned:", task.error.abandoned)
    """

    def __init__(self, message: str = "task cancelled", *, abandoned: bool = False) -> None:
        super().__init__(message)
        self.abandoned = abandoned


class HandshakeError(QIOError):
    """A TLS or websocket handshake failed.

    Raised by :meth:`trioqio.TLSChannel.handshake` and
    :meth:`trioqio.WebsockChannel.handshake` (and reported by their ``handshake_task``)
    when the peer's certificate, name or request is refused or the handshake breaks off.

    Attributes:
        status: the HTTP status sent to the peer (websocket), or None.

    Example::

        try:
            await tls.handshake()
        except trioqio.HandshakeError as exc:
            print("refused:", exc)
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WebsockProtocolError(QIOError, trio.BrokenResourceError):
    """The client broke QEMU's websocket rules; a close frame with :attr:`code` was sent.

    Raised by :meth:`trioqio.WebsockChannel.receive_some` when a client frame breaks
    the framing rules; the channel is broken afterwards.

    Attributes:
        code: the close code sent (1002 protocol error, 1003 unsupported data such as a
            text frame, 1008 policy: a fragmented non-binary frame).

    Example::

        try:
            data = await ws.receive_some()
        except trioqio.WebsockProtocolError as exc:
            print("closed with", exc.code)
    """

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


class MigrationError(QIOError):
    """A migration failed; the message names the channel and the field at fault.

    Raised by ``trioqio migrate`` (source and destination) when a channel cannot be
    opened, a packet is malformed or the peer reports an error; the command prints it
    and exits with status 1.

    Example:
        .. code-block:: console

            $ trioqio migrate --connect tcp:127.0.0.1:1
            ...
              verdict: FAILED
            trioqio migrate: main channel: cannot connect to tcp:127.0.0.1:1: ...
            $ echo $?
            1

    Attributes:
        channel: the channel at fault (``"main"``, ``"multifd 2"``, ``"accepted #3"``), or
            None when the failure is not one channel's.
        field: the wire field or option at fault (``"magic"``, ``"type"``, ``"channels"``,
            ``"output"``...), or None.
        kind: what happened, for code that routes on it (never parse the message):
            ``"protocol"`` (a malformed field or a message the state forbids),
            ``"mismatch"`` (the two ends disagree: checksum, channel count),
            ``"connect"``, ``"handshake"``, ``"broken"`` (a channel broke or closed
            early: the migration is incomplete), ``"timeout"`` (no progress),
            ``"remote"`` (the peer reported an ERROR), ``"local"`` (a local file or
            precondition), or ``"other"``.
        state: the session state when a protocol rule was broken, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        channel: str | None = None,
        field: str | None = None,
        kind: str = "other",
        state: str | None = None,
    ) -> None:
        super().__init__(message)
        self.channel = channel
        self.field = field
        self.kind = kind
        self.state = state


def receive_size(max_bytes: int | None, default: int) -> int:
    """``receive_some``'s ``max_bytes`` checked as every stream checks it (Trio's rules).

    Args:
        max_bytes: the caller's value; None means ``default``.
        default: the channel's own read size.

    Returns:
        The size to read.

    Raises:
        TypeError: ``max_bytes`` is not an integer.
        ValueError: ``max_bytes`` is less than 1.
    """
    if max_bytes is None:
        return default
    if type(max_bytes) is not int:
        max_bytes = operator.index(max_bytes)  # TypeError for 1.5, as Trio's streams
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    return max_bytes
