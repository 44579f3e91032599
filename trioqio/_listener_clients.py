"""The client side of :class:`~trioqio.NetListener` (QEMU ``io/net-listener.c``).

QEMU's ``qio_net_listener_channel_func`` accepts a client and calls the listener's
``io_func`` with a channel reference it drops when the callback returns; what the
callback does with it afterwards is its own business. :class:`ClientGroup` is what
happens to a client here once it is accepted: its handler runs in a task of the
listener's nursery inside its own :class:`trio.CancelScope`, the stream is closed when
the handler returns, the handler-error policy is applied (with a rate-limited log), and
the ``max_clients`` budget is kept. The listener's :meth:`~trioqio.NetListener.aclose`
uses it to cancel the handlers still running and wait for them.

The budget is a count of running handlers, not a semaphore the accept loops take before
they accept: a loop that held a slot while it waited on an idle socket would starve a
client waiting on another socket. The listener asks :attr:`ClientGroup.full` after each
start and pauses every accept loop while it is true; :attr:`ClientGroup.on_freed` tells
it when a handler ends, so it can serve a queued client or resume the loops.

Differences from QEMU: a handler that raises is logged (rate-limited) and counted, or
propagated, or passed to a callable (``on_handler_error``), instead of QEMU's callback
returning nothing to report; every client has a cancel scope the listener can cut.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import trio

from ._channel_socket import SocketChannel
from ._listener_util import RateLimitedLog
from ._trace import emit, enabled

__all__ = ["AnyClientHandler", "ClientGroup", "ClientHandler", "HandlerErrorPolicy"]

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

#: A handler for any stream the served listeners accept.
#:
#: That is a :class:`SocketChannel` from trioqio's own sockets, or the stream a
#: :class:`trio.abc.Listener` added with :meth:`~trioqio.NetListener.add_listener`
#: returns (a :class:`trio.SocketStream`, a :class:`trio.SSLStream`, ...).
#:
#: Example::
#:
#:     async def echo(stream: trio.abc.Stream) -> None:
#:         async for data in stream:
#:             await stream.send_all(data)
#:
#:     handler: trioqio.AnyClientHandler = echo
#:     listener.set_client_func(handler)
AnyClientHandler = Callable[[Any], Awaitable[object]]

#: What happens to an ``Exception`` a handler raises, or to a listener's ``accept()``
#: failing for good: ``"log"``, ``"raise"``, or a callable that receives it (the
#: ``on_handler_error`` and ``on_accept_error`` options of :class:`~trioqio.NetListener`).
#:
#: Example::
#:
#:     policy: trioqio.HandlerErrorPolicy = errors.append
#:     listener = trioqio.NetListener(on_handler_error=policy)
HandlerErrorPolicy = Literal["log", "raise"] | Callable[[Exception], object]

_LOG_INTERVAL = 5.0


class _Client:
    # A plain slotted class: one is made per accepted client, on the hot path.
    __slots__ = ("scope", "stream")

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.scope = trio.CancelScope()


def check_policy(what: str, policy: HandlerErrorPolicy) -> None:
    """Raise ``ValueError`` naming ``what`` unless ``policy`` is a known policy."""
    if not callable(policy) and policy not in ("log", "raise"):
        raise ValueError(f"{what} must be 'log', 'raise' or a callable, not {policy!r}")


class ClientGroup:
    """The clients one listener is serving (a task and a cancel scope each) or holding.

    Clients accepted while no handler is set, or while the budget is spent, wait in
    :attr:`pending`.

    Args:
        name: the listener's name (in log records and trace events).
        max_clients: how many handlers may run at once (``None``: no limit).
        on_handler_error: the listener's handler-error policy (see ``NetListener``).

    Raises:
        ValueError: ``max_clients`` < 1, or an unknown policy string.
    """

    __slots__ = (
        "_idle",
        "_max",
        "_name",
        "_on_error",
        "_running",
        "error_log",
        "errors",
        "on_freed",
        "pending",
        "started",
    )

    def __init__(
        self, name: str, max_clients: int | None, on_handler_error: HandlerErrorPolicy
    ) -> None:
        if max_clients is not None and (
            isinstance(max_clients, bool) or not isinstance(max_clients, int)  # pyright: ignore[reportUnnecessaryIsInstance]
        ):
            raise TypeError(f"max_clients must be an int or None, not {max_clients!r}")
        if max_clients is not None and max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, not {max_clients}")
        check_policy("on_handler_error", on_handler_error)
        self._name = name
        self._on_error = on_handler_error
        self._max = max_clients
        self._running: dict[_Client, None] = {}
        self._idle: trio.Event | None = None
        #: Called (synchronously) each time a handler ends while ``max_clients`` is set.
        self.on_freed: Callable[[], None] | None = None
        #: Handlers started so far.
        self.started = 0
        #: Handlers that raised an ``Exception``.
        self.errors = 0
        self.error_log = RateLimitedLog(logger, _LOG_INTERVAL)
        #: Accepted clients waiting for a handler, a free slot or ``wait_client``.
        self.pending: collections.deque[Any] = collections.deque()

    def __len__(self) -> int:
        return len(self._running)

    @property
    def full(self) -> bool:
        """True while ``max_clients`` handlers run: no client may start now."""
        return self._max is not None and len(self._running) >= self._max

    @property
    def streams(self) -> tuple[Any, ...]:
        """The streams whose handlers are running now."""
        return tuple(client.stream for client in self._running)

    async def keep(self, streams: list[Any], *, closing: bool) -> None:
        """Queue clients nobody took; close them instead when the listener is closing."""
        if not closing:
            self.pending.extend(streams)
            return
        with trio.CancelScope(shield=True):
            for stream in streams:
                await trio.aclose_forcefully(stream)

    async def close_pending(self) -> None:
        """Close every queued client."""
        while self.pending:
            await trio.aclose_forcefully(self.pending.popleft())

    def start(self, nursery: trio.Nursery, handler: AnyClientHandler, stream: Any) -> None:
        """Run ``handler(stream)`` in ``nursery`` in the client's own cancel scope."""
        record = _Client(stream)
        self._running[record] = None
        self.started += 1
        if enabled():
            emit("qio_net_listener_callback", listener=self._name, func=handler)
        nursery.start_soon(self._run, record, handler)

    async def _run(self, record: _Client, handler: AnyClientHandler) -> None:
        stream = record.stream
        try:
            with record.scope:
                try:
                    await handler(stream)
                except Exception as exc:
                    self._failed(exc, stream)
        finally:
            try:
                if type(stream) is SocketChannel:
                    # The task ends here: close at once, without the checkpoint (and, when
                    # cancelled, the Cancelled raised and caught) that aclose would cost.
                    stream._close_now()  # pyright: ignore[reportPrivateUsage]
                elif type(stream) is trio.SocketStream:
                    # The same for Trio's own: its aclose is this close plus a checkpoint
                    # (a third of a short connection's cost under aclose_forcefully).
                    stream.socket.close()
                else:
                    # Raises Cancelled again when the listener's nursery is cancelled
                    # from outside; the bookkeeping below must run all the same, or
                    # aclose would wait for this handler for ever.
                    await trio.aclose_forcefully(stream)
            finally:
                del self._running[record]
                if self._max is not None and self.on_freed is not None:
                    self.on_freed()
                if not self._running and self._idle is not None:
                    self._idle.set()

    def _failed(self, exc: Exception, stream: object) -> None:
        self.errors += 1
        policy = self._on_error
        if policy == "raise":
            raise exc
        if policy == "log":
            self.error_log.log(
                logging.ERROR,
                "listener %r: client handler failed on %r: %r",
                self._name,
                stream,
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
