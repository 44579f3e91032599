"""NetListener: one nursery serving many listening sockets (QEMU ``io/net-listener.c``).

QEMU's ``QIONetListener`` holds a list of listening ``QIOChannelSocket``s, watches each
for G_IO_IN in a GMainContext and calls one callback per accepted client with a borrowed
reference. trioqio's :class:`NetListener` is an async context manager that owns a
nursery: one accept loop per socket and one task per client, each in its own cancel
scope.

Differences from QEMU:

- Leaving the ``async with`` block (or :meth:`NetListener.aclose`) stops accepting,
  cancels running handlers and closes every socket; nothing outlives the block.
- The handler is ``async def handler(channel)``; the channel is closed when it returns.
  There is no ``notify``/``data`` pair: closures replace them.
- Port 0 gives every socket of one :meth:`~NetListener.open` the same port.
- A handler that raises is logged (rate-limited) and counted instead of passing
  silently; ``on_handler_error`` chooses.
- Accept failures from exhausted descriptors back off exponentially instead of firing
  the watch again at once; ``max_clients`` pauses accepting (QEMU's NBD server does this
  by hand by unsetting the client func).
- :meth:`~NetListener.wait_client` never drops a client: one accepted at the same time as
  the winner is queued for the next ``wait_client`` or the handler.
"""

from __future__ import annotations

import contextlib
import math
import types
import typing

import trio

from ._abc import ChannelFeature
from ._address import SocketAddress
from ._channel_socket import SocketChannel
from ._dns import resolve
from ._listener_accept import Acceptor, Source
from ._listener_clients import ClientGroup, ClientHandler, HandlerErrorPolicy
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

__all__ = ["ClientHandler", "ListenerStatistics", "NetListener", "ShutdownReport"]


@typing.final
class NetListener:
    """Listen on several sockets and serve each client in its own cancel scope.

    The listener is an async context manager owning a nursery. Inside it, :meth:`open`
    (or :meth:`add`) creates listening sockets and :meth:`set_client_func` starts one
    accept loop per socket; every accepted client runs ``await handler(channel)`` in a
    task of the listener's nursery, in its own :class:`trio.CancelScope`. The channel is
    closed when the handler returns. Leaving the block cancels everything and closes
    every socket.

    QEMU: ``QIONetListener`` (``qio_net_listener_new`` + ``set_name``).

    Args:
        name: names the listening channels (QEMU ``qio_net_listener_set_name``).
        max_clients: pause accepting while this many handlers run (``None``: no limit).
            Clients are not refused; they wait in the backlog.
        on_handler_error: what happens when a handler raises an ``Exception``:
            ``"log"`` (default: logged at ERROR, rate-limited, counted; other clients go
            on), ``"raise"`` (it propagates and tears the listener down, Trio's usual
            rule), or a callable that receives the exception (if it raises, that
            propagates).

    Raises:
        ValueError: ``max_clients`` < 1, or an unknown policy string.

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
    ) -> None:
        self._clients = ClientGroup(name, max_clients, on_handler_error)
        self._acceptor = Acceptor(name, self._clients.slots)
        self._pending = self._clients.pending
        self._name = name
        self._manager: contextlib.AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._sources: list[Source] = []
        self._handler: ClientHandler | None = None
        self._connected = False
        self._waiting = False
        self._closing = False
        self._report: ShutdownReport | None = None

    # -- context manager -----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._manager is not None or self._closing:
            raise RuntimeError(f"{self!r} can be entered only once")
        manager = trio.open_nursery()
        self._nursery = await manager.__aenter__()
        self._manager = manager
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
        """True once a socket was added, False after :meth:`disconnect` (QEMU semantics)."""
        return self._connected

    @property
    def addresses(self) -> list[SocketAddress]:
        """The bound addresses of every socket, in the order they were added."""
        return [source.address for source in self._sources]

    @property
    def channels(self) -> list[SocketChannel]:
        """The listening channels (QEMU ``qio_net_listener_sioc``), closed ones included."""
        return [source.channel for source in self._sources]

    @property
    def clients(self) -> tuple[SocketChannel, ...]:
        """The channels whose handlers are running now."""
        return self._clients.channels

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
            accepted=clients.accepted,
            running=len(clients),
            pending=len(self._pending),
            handler_errors=clients.errors,
            accept_errors=acceptor.errors,
            log_suppressed=clients.error_log.suppressed + acceptor.log.suppressed,
        )

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<NetListener {self._name!r} {state} sockets={len(self._sources)}>"

    def _require_open(self, what: str) -> trio.Nursery:
        if self._closing:
            raise trio.ClosedResourceError(f"{what}: {self!r} is closed")
        if self._nursery is None:
            raise RuntimeError(f"{what}: enter the listener first (async with NetListener())")
        return self._nursery

    # -- sockets -------------------------------------------------------------------------

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
            ValueError: the channel is not listening.

        Example::

            listener.add(trioqio.SocketChannel.from_fd(3))
        """
        self._require_open("add")
        if not isinstance(channel, SocketChannel):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"add() needs a SocketChannel, not {type(channel).__name__}")
        if ChannelFeature.LISTEN not in channel.features:
            raise ValueError(f"add() needs a listening channel; {channel!r} is not listening")
        if not channel.name:
            channel.name = self._name
        source = Source(channel, channel.local_address)
        self._sources.append(source)
        self._connected = True
        if self._handler is not None:
            self._watch([source], "add")

    # -- accepting -----------------------------------------------------------------------

    def set_client_func(self, handler: ClientHandler | None) -> None:
        """Start, pause, or change what serves each client.

        A handler starts one accept loop per socket; ``None`` stops them, and clients
        wait in the kernel backlog until a handler is set again. Setting the handler that
        is already set does nothing. Replacing a handler never drops an accepted client:
        running handlers go on, and one accepted while the change happens is served by
        the new handler.

        QEMU: ``qio_net_listener_set_client_func``.

        Args:
            handler: ``async def handler(channel)``, or None to pause.

        Raises:
            TypeError: ``handler`` is not callable.
            RuntimeError: a handler is set before the listener was entered.

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
        self._unwatch("set_client_func")
        self._handler = handler
        if handler is None:
            return
        while self._pending and self._handler is handler:
            self._dispatch(self._pending.popleft(), False)
        self._watch(self._sources, "set_client_func")

    def _watch(self, sources: list[Source], why: str) -> None:
        if self._nursery is not None and not self._closing:
            self._acceptor.watch(self._nursery, sources, self._dispatch, self._handler, why)

    def _unwatch(self, why: str) -> None:
        self._acceptor.unwatch(self._sources, self._handler, why)

    def _dispatch(self, client: SocketChannel, slot: bool) -> None:
        handler = self._handler
        nursery = self._nursery
        if handler is None or nursery is None or self._closing:
            self._clients.hold(client, slot)
            return
        self._clients.start(nursery, handler, client, slot)

    async def wait_client(self) -> SocketChannel:
        """Wait for the next client on any socket and return it to the caller.

        The client func is paused meanwhile and restored afterwards. The returned channel
        is the caller's: it stays open after the listener closes. A client accepted at
        the same moment on another socket is not dropped (unlike QEMU): it is queued for
        the next ``wait_client`` or the restored handler.

        QEMU: ``qio_net_listener_wait_client``.

        Returns:
            The client's channel.

        Raises:
            trio.ClosedResourceError: no socket is open (never opened or disconnected).
            trio.BusyResourceError: another task is in ``wait_client``.

        Example::

            channel = await listener.wait_client()
        """
        if self._pending:
            await trio.lowlevel.checkpoint()
            return self._pending.popleft()
        sources = [source for source in self._sources if not source.closed]
        if not sources:
            raise trio.ClosedResourceError(f"wait_client: {self!r} has no open socket")
        if self._waiting:
            raise trio.BusyResourceError("another task is already in wait_client")
        self._waiting = True
        saved = self._handler
        if saved is not None:
            self._unwatch("wait_client")
            self._handler = None
        got: list[SocketChannel] = []
        try:
            await self._acceptor.accept_first(sources, got)
        finally:
            self._waiting = False
            # A client accepted here but not returned is queued, never dropped; after
            # the listener closed there is nobody to queue it for.
            await self._clients.keep(got[1:], closing=self._closing)
            if saved is not None and self._handler is None and not self._closing:
                self.set_client_func(saved)
        if not got:
            raise trio.ClosedResourceError(f"wait_client: {self!r} was closed")
        return got[0]

    # -- closing -------------------------------------------------------------------------

    async def disconnect(self) -> None:
        """Stop accepting and close every listening socket; leave handlers running.

        A UNIX socket's path is unlinked. The sockets stay listed in :attr:`channels`
        and :attr:`addresses`; :attr:`is_connected` becomes False. A later :meth:`add`
        or :meth:`open` connects the listener again.

        QEMU: ``qio_net_listener_disconnect``.

        Raises nothing: the sockets are closed forcefully, and a listener already
        disconnected is left as it is.

        Example::

            await listener.disconnect()
            assert not listener.is_connected
        """
        if self._connected:
            self._unwatch("disconnect")
            await self._acceptor.close(self._sources)
            self._connected = False
        await trio.lowlevel.checkpoint()

    async def aclose(self, grace: float = 0.0) -> ShutdownReport:
        """Disconnect, give running handlers ``grace`` seconds, then cancel the rest.

        Idempotent: a second call returns the first call's report. However it ends
        (even cancelled), the listener is closed and no handler is left running.

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
        if self._report is not None:
            await trio.lowlevel.checkpoint()
            return self._report
        if math.isnan(grace) or grace < 0:
            raise ValueError(f"grace must be >= 0, not {grace!r}")
        self._closing = True
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
        return self._report
