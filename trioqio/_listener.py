"""NetListener: one nursery serving many listeners (QEMU ``io/net-listener.c``).

QEMU's ``QIONetListener`` holds a list of listening ``QIOChannelSocket``s, watches each
for G_IO_IN in a GMainContext and calls one callback per accepted client with a borrowed
reference. trioqio's :class:`NetListener` is an async context manager that owns a
nursery: one accept loop per listener and one task per client, each in its own cancel
scope. What it serves is any :class:`trio.abc.Listener`: its own listening sockets
(:class:`~trioqio.SocketChannelListener`, made by :meth:`~NetListener.open`,
:meth:`~NetListener.add` and :meth:`~NetListener.open_systemd`) and whatever
:meth:`~NetListener.add_listener` is given (``trio.open_tcp_listeners``, a
:class:`trio.SSLListener`, an in-memory listener, a user's own).

Lifecycle (``_State``): NEW until entered; OPEN while the block runs; CLOSING from the
first :meth:`~NetListener.aclose` (or the end of the block) until every handler ended;
CLOSED after. Accept loops run only in OPEN, with a handler set and the ``max_clients``
budget not spent (``_listener_accept.py`` has the theory of operation).

Differences from QEMU:

- Leaving the ``async with`` block (or :meth:`NetListener.aclose`) stops accepting,
  cancels running handlers and closes every listener; nothing outlives the block.
- The handler is ``async def handler(stream)``; the stream is closed when it returns.
  There is no ``notify``/``data`` pair: closures replace them.
- Port 0 gives every socket of one :meth:`~NetListener.open` the same port.
- A handler that raises is logged (rate-limited) and counted instead of passing
  silently; ``on_handler_error`` chooses.
- Accept failures from exhausted descriptors back off exponentially instead of firing
  the watch again at once; ``max_clients`` pauses accepting on every listener (QEMU's NBD
  server does this by hand by unsetting the client func).
- :meth:`~NetListener.wait_client` never drops a client: one accepted at the same time as
  the winner is queued for the next ``wait_client`` or the handler.
"""

from __future__ import annotations

import contextlib
import enum
import math
import sys
import types
import typing
from typing import Any, NoReturn

import trio

from ._abc import ChannelFeature
from ._address import SocketAddress, address_from_sockaddr
from ._channel_socket import SocketChannel, SocketChannelListener
from ._dns import resolve
from ._errors import AddressError
from ._listener_accept import Acceptor, Source
from ._listener_clients import (
    AnyClientHandler,
    ClientGroup,
    ClientHandler,
    HandlerErrorPolicy,
    check_policy,
)
from ._listener_util import ListenerStatistics, ShutdownReport
from ._socket_util import (
    DEFAULT_BACKLOG,
    DEFAULT_UNIX_MODE,
    adopt_listening_fd,
    listen_all,
    systemd_listen_fds,
)

if typing.TYPE_CHECKING:
    from typing_extensions import Self

if sys.version_info < (3, 11):  # pragma: no cover - trio requires the backport there
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "AnyClientHandler",
    "ClientHandler",
    "HandlerErrorPolicy",
    "ListenerStatistics",
    "NetListener",
    "ShutdownReport",
    "serve",
]


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


def _bound_address(listener: trio.abc.Listener[Any]) -> SocketAddress | None:
    # Where a Trio listener listens, for ``addresses``; None when it cannot be told.
    if isinstance(listener, trio.SSLListener):
        return _bound_address(listener.transport_listener)  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
    if isinstance(listener, SocketChannelListener):
        return listener.channel.local_address
    if isinstance(listener, trio.SocketListener):
        sock = listener.socket
        try:
            return address_from_sockaddr(sock.family, sock.getsockname())
        except (OSError, AddressError):
            return None
    return None


@typing.final
class NetListener:
    """Serve several listeners at once, each client in its own cancel scope.

    The listener is an async context manager owning a nursery. Inside it, :meth:`open`
    (or :meth:`add`, :meth:`open_systemd`) creates listening sockets,
    :meth:`add_listener` adds any :class:`trio.abc.Listener`, and :meth:`set_client_func`
    starts one accept loop per listener; every accepted client runs
    ``await handler(stream)`` in a task of the listener's nursery, in its own
    :class:`trio.CancelScope`. The stream is closed when the handler returns. Leaving the
    block cancels everything and closes every listener.

    QEMU: ``QIONetListener`` (``qio_net_listener_new`` + ``set_name``).

    Args:
        name: names the listening channels (QEMU ``qio_net_listener_set_name``).
        max_clients: at most this many handlers run at once (``None``: no limit). It is
            one budget across every listener: while it is spent, no listener accepts
            (clients wait in their backlogs, they are not refused); a freed slot serves
            the next client from any listener, and an idle listener never holds one.
            A client another listener returned in the very moment the budget filled is
            not refused either: it waits, accepted, for the next free slot (so at most
            one per other listener, counted in ``statistics().pending``).
        on_handler_error: what happens when a handler raises an ``Exception``:
            ``"log"`` (default: logged at ERROR, rate-limited, counted; other clients go
            on), ``"raise"`` (it propagates and tears the listener down, Trio's usual
            rule), or a callable that receives the exception (if it raises, that
            propagates).
        on_accept_error: what happens when a listener's ``accept()`` fails with an error
            that is not retried (anything but exhausted descriptors or memory and the
            routine per-connection errors, which back off and retry): ``"log"``
            (default: that listener is closed, the error logged with its traceback and
            counted in ``failed_listeners``; the others go on serving), ``"raise"`` (it
            propagates, as in :func:`trio.serve_listeners`), or a callable that receives
            it (that listener is closed).

    Raises:
        ValueError: ``max_clients`` < 1, or an unknown policy string.
        TypeError: ``max_clients`` is not an int.

    .. warning::
        An exception leaving the ``async with`` block, whether the body raised it or a
        handler did under ``on_handler_error="raise"``, arrives wrapped in an
        :class:`ExceptionGroup`, as from every Trio nursery. Catch it with
        ``except* OSError`` (Python 3.11+) or ``exceptiongroup.catch``.

    Example::

        async def echo(channel: trioqio.SocketChannel) -> None:
            async for data in channel:
                await channel.send_all(data)

        async with trioqio.NetListener(name="echo") as listener:
            await listener.open("tcp:localhost:0")
            listener.set_client_func(echo)
            await trio.sleep_forever()
    """

    def __init__(
        self,
        *,
        name: str = "",
        max_clients: int | None = None,
        on_handler_error: HandlerErrorPolicy = "log",
        on_accept_error: HandlerErrorPolicy = "log",
    ) -> None:
        check_policy("on_accept_error", on_accept_error)
        self._clients = ClientGroup(name, max_clients, on_handler_error)
        self._clients.on_freed = self._slot_freed
        self._acceptor = Acceptor(name, on_accept_error)
        self._pending = self._clients.pending
        self._name = name
        self._state = _State.NEW
        self._manager: contextlib.AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._sources: list[Source] = []
        self._handler: AnyClientHandler | None = None
        self._connected = False
        self._waiting = False
        self._draining = trio.Event()
        self._closed = trio.Event()
        self._report: ShutdownReport | None = None

    # -- context manager -----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:
            raise RuntimeError(f"{self!r} can be entered only once")
        manager = trio.open_nursery()
        self._nursery = await manager.__aenter__()
        self._manager = manager
        self._state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> bool:
        assert self._manager is not None
        try:
            with trio.CancelScope(shield=True):
                await self.aclose()
        finally:
            self._nursery = None
            suppressed = await self._manager.__aexit__(exc_type, exc, tb)
        return bool(suppressed)

    # -- properties ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The listener's name (given to its listening channels)."""
        return self._name

    @property
    def is_connected(self) -> bool:
        """True once a listener was added, False after :meth:`disconnect` (QEMU semantics)."""
        return self._connected

    @property
    def listeners(self) -> list[trio.abc.Listener[Any]]:
        """Every listener served, in the order added, closed ones included.

        trioqio's own sockets appear as :class:`~trioqio.SocketChannelListener`\\ s.
        """
        return [source.listener for source in self._sources]

    @property
    def addresses(self) -> list[SocketAddress]:
        """The bound addresses, in the order added, of every listener whose address is known.

        That is every socket of trioqio's own, and :class:`trio.SocketListener`\\ s and
        :class:`trio.SSLListener`\\ s over them; other listeners have no entry.
        """
        return [source.address for source in self._sources if source.address is not None]

    @property
    def channels(self) -> list[SocketChannel]:
        """The listening channels (QEMU ``qio_net_listener_sioc``), closed ones included."""
        return [
            source.listener.channel
            for source in self._sources
            if isinstance(source.listener, SocketChannelListener)
        ]

    @property
    def clients(self) -> tuple[Any, ...]:
        """The streams whose handlers are running now."""
        return self._clients.streams

    @property
    def draining(self) -> trio.Event:
        """Set when :meth:`aclose` begins, so handlers can finish their work and return.

        Example::

            async def handler(stream: trio.abc.Stream) -> None:
                while not listener.draining.is_set():
                    await serve_one_request(stream)
        """
        return self._draining

    @property
    def shutdown_report(self) -> ShutdownReport | None:
        """What :meth:`aclose` reported, or None before it ran."""
        return self._report

    def statistics(self) -> ListenerStatistics:
        """Return the listener's counters.

        Returns:
            A :class:`ListenerStatistics` snapshot taken now.

        Raises nothing: it works before, during and after :meth:`aclose`.

        Example::

            assert listener.statistics().handler_errors == 0
        """
        clients, acceptor = self._clients, self._acceptor
        return ListenerStatistics(
            accepted=acceptor.accepted,
            running=len(clients),
            pending=len(self._pending),
            handler_errors=clients.errors,
            accept_errors=acceptor.errors,
            failed_listeners=acceptor.failed,
            log_suppressed=clients.error_log.suppressed + acceptor.log.suppressed,
        )

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<NetListener {self._name!r} {state} listeners={len(self._sources)}>"

    def _require_open(self, what: str) -> trio.Nursery:
        if self._state is _State.CLOSING or self._state is _State.CLOSED:
            raise trio.ClosedResourceError(f"{what}: {self!r} is closed")
        if self._nursery is None:
            raise RuntimeError(f"{what}: enter the listener first (async with NetListener())")
        return self._nursery

    # -- listeners -----------------------------------------------------------------------

    async def open(
        self,
        address: str | SocketAddress,
        *,
        backlog: int = DEFAULT_BACKLOG,
        mode: int = DEFAULT_UNIX_MODE,
    ) -> list[SocketChannel]:
        """Resolve ``address`` and listen on every result; succeed if any one listens.

        With port 0 every socket of this call gets the same port: the first binds an
        ephemeral port and the others bind that port; if it is taken on another family
        the whole attempt is retried with a new port (a few times, then each socket
        keeps what it could get). May be called several times.

        QEMU: ``qio_net_listener_open_sync``.

        Args:
            address: ``tcp:HOST:PORT``, ``unix:PATH``, ``fd:N``, ``vsock:CID:PORT`` or a value.
            backlog: the ``listen()`` backlog (QEMU's ``num``).
            mode: permission bits of a ``unix:PATH`` socket file (default ``0o600``:
                only this user may connect). The file never has more bits than
                ``mode`` and has exactly ``mode`` before anyone can connect. Ignored for
                other addresses and abstract ``unix:@name`` sockets.

        Returns:
            The new listening channels.

        Raises:
            ValueError: ``mode`` is not within ``0 .. 0o777``.
            AddressError: malformed address, or a UNIX path that is too long.
            socket.gaierror: the name does not resolve.
            OSError: no socket could listen (the first error, e.g. ``EADDRINUSE``).
            RuntimeError: the listener was not entered.
            trio.ClosedResourceError: the listener is closed.

        Example::

            channels = await listener.open("tcp:localhost:0", backlog=16)
        """
        self._require_open("open")
        resolved = await resolve(address)
        self._require_open("open")
        socks = listen_all(resolved, backlog, mode=mode)
        channels = [SocketChannel(sock, name=self._name) for sock in socks]
        for channel in channels:
            self.add(channel)
        return channels

    async def open_systemd(self, *, unset_environment: bool = True) -> list[SocketChannel]:
        """Adopt the listening sockets systemd passed (``LISTEN_FDS``/``LISTEN_PID``).

        Args:
            unset_environment: remove the ``LISTEN_*`` variables afterwards.

        Returns:
            The adopted channels (none when the process was not socket-activated).

        Raises:
            OSError: a passed descriptor is not a listening stream socket.

        Example::

            if not await listener.open_systemd():
                await listener.open("tcp:localhost:8000")
        """
        self._require_open("open_systemd")
        await trio.lowlevel.checkpoint()
        channels = [
            SocketChannel(adopt_listening_fd(fd), name=self._name)
            for fd in systemd_listen_fds(unset_environment=unset_environment)
        ]
        for channel in channels:
            self.add(channel)
        return channels

    def add(self, channel: SocketChannel) -> None:
        """Adopt an already listening channel; the listener closes it when it closes.

        If a client func is set, accepting on it starts at once.

        QEMU: ``qio_net_listener_add``.

        Args:
            channel: a listening :class:`SocketChannel`.

        Raises:
            TypeError: not a :class:`SocketChannel`.
            ValueError: the channel is not listening, or is served already.
            trio.ClosedResourceError: the listener is closed.

        Example::

            listener.add(trioqio.SocketChannel.from_fd(3))
        """
        self._require_open("add")
        if not isinstance(channel, SocketChannel):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"add() needs a SocketChannel, not {type(channel).__name__}")
        if ChannelFeature.LISTEN not in channel.features:
            raise ValueError(f"add() needs a listening channel; {channel!r} is not listening")
        if channel in self.channels:
            raise ValueError(f"add(): {channel!r} is served already")
        if not channel.name:
            channel.name = self._name
        self._add_source(SocketChannelListener(channel), channel.local_address)

    def add_listener(self, listener: trio.abc.Listener[Any] | SocketChannel) -> None:
        """Serve any Trio listener beside the others; the listener closes it when it closes.

        Clients it accepts get the same handler, ``max_clients`` budget, error policies,
        statistics, pause/resume, :meth:`wait_client`, drain and close as the listener's
        own sockets. The handler receives the stream ``listener.accept()`` returned,
        unchanged (a :class:`trio.SocketStream`, a :class:`trio.SSLStream`, ...). A
        listening :class:`SocketChannel` is adopted as by :meth:`add`.

        Its ``accept()`` should be cancel-safe, as Trio's are: pausing (no handler, the
        budget spent, :meth:`wait_client`, closing) cancels a blocked accept.

        Args:
            listener: a :class:`trio.abc.Listener`.

        Raises:
            TypeError: ``listener`` is not a :class:`trio.abc.Listener`.
            ValueError: it is served already.
            trio.ClosedResourceError: the listener is closed.
            RuntimeError: the listener was not entered.

        Example::

            for tcp in await trio.open_tcp_listeners(0, host="127.0.0.1"):
                listener.add_listener(tcp)
        """
        self._require_open("add_listener")
        if isinstance(listener, SocketChannel):
            self.add(listener)
            return
        if not isinstance(listener, trio.abc.Listener):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(
                f"add_listener() needs a trio.abc.Listener, not {type(listener).__name__}"
                f" ({listener!r})"
            )
        if self._serves(listener):
            raise ValueError(f"add_listener(): {listener!r} is served already")
        self._add_source(listener, _bound_address(listener))

    def _serves(self, listener: trio.abc.Listener[Any]) -> bool:
        # Two accept loops on one socket would make the second fail (BusyResourceError)
        # and close the socket both share, so a second wrapper of a served listener or
        # channel (through SSLListener layers too) counts as served.
        served = {id(source.listener) for source in self._sources}
        served.update(id(channel) for channel in self.channels)
        inner: object = listener
        while inner is not None:
            if id(inner) in served:
                return True
            if isinstance(inner, SocketChannelListener):
                inner = inner.channel
            elif isinstance(inner, trio.SSLListener):
                ssl_listener: trio.SSLListener[Any] = inner  # pyright: ignore[reportUnknownVariableType]
                inner = ssl_listener.transport_listener
            else:
                inner = None
        return False

    def _add_source(self, listener: trio.abc.Listener[Any], address: SocketAddress | None) -> None:
        self._sources.append(Source.of(listener, address))
        self._connected = True
        self._sync_watch("add")

    # -- accepting -----------------------------------------------------------------------

    def set_client_func(self, handler: AnyClientHandler | None) -> None:
        """Start, pause, or change what serves each client.

        A handler starts one accept loop per listener; ``None`` stops them, and clients
        wait in the kernel backlog until a handler is set again. Setting the handler that
        is already set does nothing. Replacing a handler never drops an accepted client:
        running handlers go on, and one accepted while the change happens is served by
        the new handler.

        QEMU: ``qio_net_listener_set_client_func``.

        Args:
            handler: ``async def handler(stream)``, or None to pause.

        Raises:
            TypeError: ``handler`` is not callable.
            RuntimeError: a handler is set before the listener was entered.
            trio.ClosedResourceError: a handler is set after the listener closed.

        Example::

            listener.set_client_func(None)     # pause
            listener.set_client_func(handle)   # resume
        """
        if handler is self._handler:
            return
        if handler is not None:
            if not callable(handler):
                raise TypeError(f"handler must be an async function or None, not {handler!r}")
            self._require_open("set_client_func")
        self._acceptor.unwatch(self._sources, self._handler, "set_client_func")
        self._handler = handler
        self._serve_pending()
        self._sync_watch("set_client_func")

    def _accepting(self) -> bool:
        # Whether accept loops should run: a handler, room in the budget, and open.
        return (
            self._handler is not None
            and self._state is _State.OPEN
            and not self._clients.full
            and self._nursery is not None
        )

    def _sync_watch(self, why: str) -> None:
        nursery = self._nursery
        if self._accepting():
            assert nursery is not None
            self._acceptor.watch(nursery, self._sources, self._dispatch, self._handler, why)
        else:
            self._acceptor.unwatch(self._sources, self._handler, why)

    def _serve_pending(self) -> None:
        # Start queued clients while a handler is set and the budget has room.
        handler, nursery, clients = self._handler, self._nursery, self._clients
        if handler is None or nursery is None or self._state is not _State.OPEN:
            return
        while self._pending and not clients.full:
            clients.start(nursery, handler, self._pending.popleft())

    def _dispatch(self, client: Any) -> None:
        handler, nursery, clients = self._handler, self._nursery, self._clients
        if handler is None or nursery is None or self._state is not _State.OPEN or clients.full:
            # Paused, closing, or a client that came in on a second listener in the same
            # moment the budget was spent: it waits for the handler or a free slot.
            self._pending.append(client)
            return
        clients.start(nursery, handler, client)
        if clients.full:
            self._acceptor.unwatch(self._sources, handler, "max_clients")

    def _slot_freed(self) -> None:
        if self._handler is None or self._state is not _State.OPEN:
            return
        self._serve_pending()
        if not self._clients.full:
            self._sync_watch("max_clients")

    async def wait_client(self) -> Any:
        """Wait for the next client on any listener and return it to the caller.

        The client func is paused meanwhile and restored afterwards. The returned stream
        is the caller's: it stays open after the listener closes. A client accepted at
        the same moment on another listener is not dropped (unlike QEMU): it is queued
        for the next ``wait_client`` or the restored handler. ``max_clients`` does not
        apply: the client is not served by a handler.

        QEMU: ``qio_net_listener_wait_client``.

        Returns:
            The client's stream: a :class:`SocketChannel` from the listener's own
            sockets, whatever ``accept()`` returned from one added with
            :meth:`add_listener`.

        Raises:
            trio.ClosedResourceError: no listener is open (never opened or disconnected).
            trio.BusyResourceError: another task is in ``wait_client``.

        Example::

            channel = await listener.wait_client()
        """
        if self._pending:
            await trio.lowlevel.checkpoint()
            return self._pending.popleft()
        sources = [source for source in self._sources if not source.closed]
        if not sources:
            raise trio.ClosedResourceError(f"wait_client: {self!r} has no open socket or listener")
        if self._waiting:
            raise trio.BusyResourceError("another task is already in wait_client")
        self._waiting = True
        saved = self._handler
        if saved is not None:
            self._acceptor.unwatch(self._sources, saved, "wait_client")
            self._handler = None
        got: list[Any] = []
        try:
            await self._acceptor.accept_first(sources, got)
        finally:
            self._waiting = False
            closing = self._state is not _State.OPEN
            # A client accepted here but not returned is queued, never dropped; after
            # the listener closed there is nobody to queue it for.
            await self._clients.keep(got[1:], closing=closing)
            if saved is not None and self._handler is None and not closing:
                self.set_client_func(saved)
        if not got:
            raise trio.ClosedResourceError(f"wait_client: {self!r} was closed")
        return got[0]

    # -- closing -------------------------------------------------------------------------

    async def disconnect(self) -> None:
        """Stop accepting and close every listener; leave handlers running.

        A UNIX socket's path is unlinked. The listeners stay listed in :attr:`listeners`,
        :attr:`channels` and :attr:`addresses`; :attr:`is_connected` becomes False. A
        later :meth:`add`, :meth:`add_listener` or :meth:`open` connects the listener
        again.

        QEMU: ``qio_net_listener_disconnect``.

        Raises nothing: the listeners are closed forcefully, and a listener already
        disconnected is left as it is.

        Example::

            await listener.disconnect()
            assert not listener.is_connected
        """
        if self._connected:
            self._acceptor.unwatch(self._sources, self._handler, "disconnect")
            await self._acceptor.close(self._sources)
            self._connected = False
        await trio.lowlevel.checkpoint()

    async def aclose(self, grace: float = 0.0) -> ShutdownReport:
        """Disconnect, give running handlers ``grace`` seconds, then cancel the rest.

        :attr:`draining` is set first, so handlers that watch it can finish their
        current unit of work and return. Idempotent: a later call (or one made while the
        first is running) returns the first call's report. However it ends (even
        cancelled), the listener is closed and no handler is left running.

        Args:
            grace: seconds handlers may keep running (``math.inf``: wait for all).

        Returns:
            How many handlers finished and how many were cut (also in
            :attr:`shutdown_report`).

        Raises:
            ValueError: ``grace`` is negative or NaN.

        Example::

            report = await listener.aclose(grace=2.0)
        """
        if self._state is _State.CLOSING:
            await self._closed.wait()
        if self._report is not None:
            await trio.lowlevel.checkpoint()
            return self._report
        if math.isnan(grace) or grace < 0:
            raise ValueError(f"grace must be >= 0, not {grace!r}")
        self._state = _State.CLOSING
        self._draining.set()
        clients = self._clients
        running = len(clients)
        try:
            with trio.CancelScope(shield=True):
                await self.disconnect()
                await clients.close_pending()
            if grace > 0 and clients:
                with trio.move_on_after(grace):
                    await clients.wait_idle()
        finally:
            cut = clients.cancel_all()
            with trio.CancelScope(shield=True):
                await clients.wait_idle()
            self._report = ShutdownReport(finished=running - cut, cut=cut)
            self._state = _State.CLOSED
            self._closed.set()
        return self._report


async def serve(
    handler: AnyClientHandler,
    *addresses: str | SocketAddress | trio.abc.Listener[Any],
    backlog: int = DEFAULT_BACKLOG,
    name: str = "",
    max_clients: int | None = None,
    on_handler_error: HandlerErrorPolicy = "log",
    on_accept_error: HandlerErrorPolicy = "log",
    task_status: trio.TaskStatus[NetListener] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``handler`` on every address (or listener) until cancelled.

    Opens a :class:`NetListener` with the given options, listens on each address (as
    :meth:`NetListener.open`) or serves each :class:`trio.abc.Listener` given (as
    :meth:`NetListener.add_listener`), sets the handler and hands the listener to
    ``task_status.started``: Trio's :func:`trio.serve_tcp` shape. The listeners given
    are the listener's from the call on; they are closed when it ends, even when an
    earlier address fails. :meth:`trio.Nursery.start` passes no keyword arguments, so
    give options with :func:`functools.partial`.

    Args:
        handler: ``async def handler(stream)``, for every client.
        *addresses: ``tcp:HOST:PORT``, ``unix:PATH``, ``fd:N``, address values, or Trio
            listeners; at least one.
        backlog: the ``listen()`` backlog of the sockets opened.
        name: the listener's name.
        max_clients: see :class:`NetListener`.
        on_handler_error: see :class:`NetListener`.
        on_accept_error: see :class:`NetListener`.
        task_status: from :meth:`trio.Nursery.start`; receives the listener.

    Raises:
        ValueError: no address given, or a bad option.
        OSError: an address could not be listened on (as :meth:`NetListener.open`),
            raised as itself, not in an exception group. Once serving, an error (a
            handler's under ``on_handler_error="raise"``) leaves in an
            :class:`ExceptionGroup`, as from any nursery.

    Example::

        listener = await nursery.start(trioqio.serve, echo, "tcp:127.0.0.1:0")
        print("serving on", listener.addresses)
        capped = functools.partial(trioqio.serve, max_clients=8)
        await nursery.start(capped, echo, "unix:/run/echo.sock")
    """
    if not addresses:
        raise ValueError("serve() needs at least one address or listener")
    owned = [a for a in addresses if isinstance(a, trio.abc.Listener)]
    started = False
    try:
        async with NetListener(
            name=name,
            max_clients=max_clients,
            on_handler_error=on_handler_error,
            on_accept_error=on_accept_error,
        ) as listener:
            for address in addresses:
                if isinstance(address, trio.abc.Listener):
                    listener.add_listener(address)
                    owned.remove(address)
                else:
                    await listener.open(address, backlog=backlog)
            listener.set_client_func(handler)
            task_status.started(listener)
            started = True
            await trio.sleep_forever()
        # Nothing cancels the listener's own nursery, so the block ends only by raising.
        raise AssertionError("unreachable")  # pragma: no cover
    except BaseExceptionGroup as group:
        # A start-up failure (a busy port, a name that does not resolve) is raised as
        # itself, as trio.serve_tcp raises it; once serving, Trio's rule holds.
        if not started and len(group.exceptions) == 1:
            (only,) = group.exceptions
            if isinstance(only, Exception) and not isinstance(only, BaseExceptionGroup):
                raise only from None
        raise
    finally:
        with trio.CancelScope(shield=True):
            for leftover in owned:
                await trio.aclose_forcefully(leftover)
