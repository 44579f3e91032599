"""The client side of :class:`~trioqio.NetListener` (QEMU ``io/net-listener.c``).

QEMU's ``qio_net_listener_channel_func`` accepts a client and calls the listener's
``io_func`` with a channel reference it drops when the callback returns; what the
callback does with it afterwards is its own business. :class:`ClientGroup` is what
happens to a client here once it is accepted: its handler runs in a task of the
listener's nursery inside its own :class:`trio.CancelScope`, the channel is closed when
the handler returns, the handler-error policy is applied (with a rate-limited log), and
the ``max_clients`` slots are given back. The listener's :meth:`~trioqio.NetListener.aclose`
uses it to cancel the handlers still running and wait for them.

Differences from QEMU: a handler that raises is logged (rate-limited) and counted, or
propagated, or passed to a callable (``on_handler_error``), instead of QEMU's callback
returning nothing to report; every client has a cancel scope the listener can cut.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

import trio

from ._channel_socket import SocketChannel
from ._listener_util import RateLimitedLog
from ._trace import emit, enabled

__all__ = ["ClientGroup", "ClientHandler", "HandlerErrorPolicy"]

logger = logging.getLogger("trioqio.listener")

#: What serves one accepted client, an ``async def handler(channel)``.
#:
#: The listener runs each call in its own cancel scope under the listener's nursery and
#: closes the channel when the handler returns, raises or is cancelled; the return value
#: is ignored. QEMU: ``QIONetListenerClientFunc`` (without ``opaque`` and ``notify``: a
#: closure carries the state).
#:
#: Example::
#:
#:     async def echo(channel: trioqio.SocketChannel) -> None:
#:         while data := await channel.receive_some():
#:             await channel.send_all(data)
#:
#:     handler: trioqio.ClientHandler = echo
#:     listener.set_client_func(handler)
ClientHandler = Callable[[SocketChannel], Awaitable[object]]
HandlerErrorPolicy = Literal["log", "raise"] | Callable[[Exception], object]

_LOG_INTERVAL = 5.0


class _Client:
    # A plain slotted class: one is made per accepted client, on the hot path.
    __slots__ = ("channel", "scope")

    def __init__(self, channel: SocketChannel) -> None:
        self.channel = channel
        self.scope = trio.CancelScope()


class ClientGroup:
    """The clients one listener is serving (a task and a cancel scope each) or holding.

    Clients accepted while no handler is set wait in :attr:`pending`.

    Args:
        name: the listener's name (in log records and trace events).
        max_clients: how many handlers may run at once (``None``: no limit); the
            listener's accept loops take a slot from :attr:`slots` before accepting.
        on_handler_error: the listener's handler-error policy (see ``NetListener``).

    Raises:
        ValueError: ``max_clients`` < 1, or an unknown policy string.
    """

    __slots__ = (
        "_idle",
        "_name",
        "_on_error",
        "_running",
        "accepted",
        "error_log",
        "errors",
        "pending",
        "slots",
    )

    def __init__(
        self, name: str, max_clients: int | None, on_handler_error: HandlerErrorPolicy
    ) -> None:
        if max_clients is not None and max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, not {max_clients}")
        if not callable(on_handler_error) and on_handler_error not in ("log", "raise"):
            raise ValueError(
                f"on_handler_error must be 'log', 'raise' or a callable, not {on_handler_error!r}"
            )
        self._name = name
        self._on_error = on_handler_error
        self._running: dict[_Client, None] = {}
        self._idle: trio.Event | None = None
        #: Held by each running handler when ``max_clients`` is set.
        self.slots = trio.Semaphore(max_clients) if max_clients is not None else None
        #: Clients handed to a handler so far.
        self.accepted = 0
        #: Handlers that raised an ``Exception``.
        self.errors = 0
        self.error_log = RateLimitedLog(logger, _LOG_INTERVAL)
        #: Accepted clients waiting for a handler or ``wait_client``.
        self.pending: collections.deque[SocketChannel] = collections.deque()

    def __len__(self) -> int:
        return len(self._running)

    @property
    def channels(self) -> tuple[SocketChannel, ...]:
        """The channels whose handlers are running now."""
        return tuple(client.channel for client in self._running)

    def hold(self, channel: SocketChannel, slot: bool) -> None:
        """Queue a client in :attr:`pending`, giving back the slot taken for it."""
        if slot and self.slots is not None:
            self.slots.release()
        self.pending.append(channel)

    async def keep(self, channels: list[SocketChannel], *, closing: bool) -> None:
        """Queue clients nobody took; close them instead when the listener is closing."""
        if not closing:
            self.pending.extend(channels)
            return
        with trio.CancelScope(shield=True):
            for channel in channels:
                await trio.aclose_forcefully(channel)

    async def close_pending(self) -> None:
        """Close every queued client."""
        while self.pending:
            await trio.aclose_forcefully(self.pending.popleft())

    def start(
        self, nursery: trio.Nursery, handler: ClientHandler, channel: SocketChannel, slot: bool
    ) -> None:
        """Run ``handler(channel)`` in ``nursery`` in the client's own cancel scope.

        ``slot`` says the caller took one of :attr:`slots` for this client; it is given
        back when the handler ends.
        """
        record = _Client(channel)
        self._running[record] = None
        self.accepted += 1
        if enabled():
            emit("qio_net_listener_callback", listener=self._name, func=handler)
        nursery.start_soon(self._run, record, handler, slot)

    async def _run(self, record: _Client, handler: ClientHandler, slot: bool) -> None:
        channel = record.channel
        try:
            with record.scope:
                try:
                    await handler(channel)
                except Exception as exc:
                    self._failed(exc, channel)
        finally:
            # The task ends here: close at once, without the checkpoint (and, when
            # cancelled, the Cancelled raised and caught) that aclose would cost.
            channel._close_now()  # pyright: ignore[reportPrivateUsage]
            del self._running[record]
            if slot and self.slots is not None:
                self.slots.release()
            if not self._running and self._idle is not None:
                self._idle.set()

    def _failed(self, exc: Exception, channel: SocketChannel) -> None:
        self.errors += 1
        policy = self._on_error
        if policy == "raise":
            raise exc
        if policy == "log":
            self.error_log.log(
                logging.ERROR,
                "listener %r: client handler failed on %r: %r",
                self._name,
                channel,
                exc,
                exc_info=exc,
            )
            return
        assert callable(policy)
        policy(exc)

    def cancel_all(self) -> int:
        """Cancel every running handler; return how many there were."""
        for client in self._running:
            client.scope.cancel()
        return len(self._running)

    async def wait_idle(self) -> None:
        """Wait until no handler is running."""
        while self._running:
            self._idle = trio.Event()
            await self._idle.wait()
