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

import math
from typing import TYPE_CHECKING, ClassVar

import trio

from ._abc import Channel
from ._errors import HandshakeError, receive_size
from ._trace import emit, enabled

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LayeredChannel"]

#: ``receive_some``'s size when the caller gives none.
DEFAULT_RECEIVE_BYTES = 256 * 1024


class LayeredChannel(Channel):
    """A channel whose bytes travel on another channel, its master.

    Subclasses set the attributes below in their constructor, provide ``_check_open()``
    and ``_handshake_once()`` (the protocol's own exchange), and define ``handshake()`` as
    ``await self._handshake()`` with their own docstring.

    The handshake-once owns ``_handshake_done`` and ``_handshake_lock``: like the
    ``done`` of trio's ``_Once``, ``_handshake_done`` records a fact ("the handshake
    succeeded") that stays true when the channel later breaks or closes, so it is not a
    state of the subclass's lifecycle but sits beside it. A failed handshake is handed to
    :meth:`_latch_failure`, which by default keeps it in ``_failure``; a subclass whose
    lifecycle is an enum overrides it to enter its broken state instead (TLS does).
    """

    _master: Channel
    _handshake_done: bool
    _handshake_lock: trio.Lock
    #: The latched failure, for subclasses that keep the default :meth:`_latch_failure`.
    _failure: BaseException | None
    handshake_timeout: float | None
    #: "TLS" or "websocket", for messages.
    _PROTOCOL: ClassVar[str]
    #: The QEMU trace events' prefix, and the name of the failure event's message field.
    _TRACE: ClassVar[str]
    _TRACE_FAIL_FIELD: ClassVar[str]

    async def handshake(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _check_open(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    async def _handshake_once(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    async def _handshake_failed(self) -> None:
        """What a failed handshake does to the master (TLS closes it; websocket keeps it)."""

    def _latch_failure(self, error: BaseException) -> None:
        """Remember ``error`` so every later operation raises the broken error."""
        self._failure = error

    def _label(self) -> str:
        return self._channel_name()

    async def _handshake(self) -> None:
        """Run ``_handshake_once`` exactly once, whoever calls and however often.

        Concurrent callers wait on the lock for the one handshake; a later caller finds
        it done (a checkpoint) or latched as failed (``_check_open`` raises the broken
        error). The timeout, a master that broke, and the protocol's own refusals all
        become one :class:`HandshakeError`, latched (:meth:`_latch_failure`) before it is
        raised.
        A closed channel raises ClosedResourceError as itself.
        """
        if self._handshake_done:
            await trio.lowlevel.checkpoint()
            return
        async with self._handshake_lock:
            if self._handshake_done:
                return
            self._check_open()
            if enabled():
                emit(f"{self._TRACE}_handshake_start", ioc=self)
            timeout = math.inf if self.handshake_timeout is None else self.handshake_timeout
            try:
                with trio.fail_after(timeout):
                    await self._handshake_once()
            except trio.TooSlowError as exc:
                error = HandshakeError(
                    f"{self._label()}: {self._PROTOCOL} handshake did not finish within "
                    f"{self.handshake_timeout} s"
                )
                error.__cause__ = exc
            except HandshakeError as exc:
                error = exc
            except trio.ClosedResourceError:
                raise
            except trio.BrokenResourceError as exc:
                error = HandshakeError(
                    f"{self._label()}: {self._PROTOCOL} handshake failed: connection broken ({exc})"
                )
                error.__cause__ = exc
            else:
                self._handshake_done = True
                if enabled():
                    emit(f"{self._TRACE}_handshake_complete", ioc=self)
                return
            self._latch_failure(error)
            if enabled():
                emit(
                    f"{self._TRACE}_handshake_fail",
                    ioc=self,
                    **{self._TRACE_FAIL_FIELD: str(error)},
                )
            await self._handshake_failed()
            raise error

    async def _handshake_then_self(self) -> Self:
        # handshake_task's work (Task.start_soon): the result is the channel itself.
        await self.handshake()
        return self

    @staticmethod
    def _receive_size(max_bytes: int | None) -> int:
        return receive_size(max_bytes, DEFAULT_RECEIVE_BYTES)

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
