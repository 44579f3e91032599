"""The accept side of :class:`~trioqio.NetListener` (QEMU ``io/net-listener.c``).

QEMU's listener adds a G_IO_IN watch per listening socket (``qio_net_listener_watch``),
removes them to pause (``qio_net_listener_unwatch``), and runs a nested main loop over all
of them for ``qio_net_listener_wait_client``. :class:`Acceptor` holds that part here: one
accept loop per watched socket, each in its own cancel scope, that takes a
``max_clients`` slot, accepts and hands the client to the listener's dispatch function;
the exponential backoff and rate-limited log for failed accepts; and the race over every
socket that ``wait_client`` runs.

Differences from QEMU: accept failures from exhausted descriptors back off exponentially
instead of firing the watch again at once, and are counted and logged (rate-limited); the
``wait_client`` race keeps every client it accepted (QEMU drops one accepted on a second
socket at the same moment).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

import attrs
import trio

from ._address import SocketAddress
from ._channel_socket import SocketChannel
from ._listener_util import CAPACITY_ERRNOS, Backoff, RateLimitedLog
from ._trace import emit, enabled

__all__ = ["Acceptor", "Dispatch", "Source"]

logger = logging.getLogger("trioqio.listener")

#: Receives an accepted client and whether a ``max_clients`` slot was taken for it.
Dispatch = Callable[[SocketChannel, bool], None]

_LOG_INTERVAL = 5.0


@attrs.define(eq=False)
class Source:
    """One listening socket of a listener; ``scope`` is its running accept loop's."""

    channel: SocketChannel
    address: SocketAddress
    scope: trio.CancelScope | None = None
    closed: bool = False


class Acceptor:
    """The accept loops of one listener and their failure policy.

    Args:
        name: the listener's name (in log records and trace events).
        slots: taken before each accept when ``max_clients`` is set; the dispatch
            function (or the client it starts) gives it back.
    """

    __slots__ = ("_name", "_slots", "errors", "log")

    def __init__(self, name: str, slots: trio.Semaphore | None) -> None:
        self._name = name
        self._slots = slots
        #: Accept failures backed off so far.
        self.errors = 0
        self.log = RateLimitedLog(logger, _LOG_INTERVAL)

    def watch(
        self,
        nursery: trio.Nursery,
        sources: list[Source],
        dispatch: Dispatch,
        func: object,
        why: str,
    ) -> None:
        """Start an accept loop in ``nursery`` for each open source that has none."""
        for source in sources:
            if source.closed or source.scope is not None:
                continue
            source.scope = trio.CancelScope()
            nursery.start_soon(self._loop, source, source.scope, dispatch)
            if enabled():
                emit("qio_net_listener_watch", listener=self._name, func=func, extra=why)

    def unwatch(self, sources: list[Source], func: object, why: str) -> None:
        """Cancel every running accept loop."""
        for source in sources:
            if source.scope is not None:
                source.scope.cancel()
                source.scope = None
                if enabled():
                    emit("qio_net_listener_unwatch", listener=self._name, func=func, extra=why)

    async def close(self, sources: list[Source]) -> None:
        """Close every open source (its accept loop must be cancelled first)."""
        for source in sources:
            if not source.closed:
                source.closed = True
                await trio.aclose_forcefully(source.channel)

    async def _loop(self, source: Source, scope: trio.CancelScope, dispatch: Dispatch) -> None:
        slots = self._slots
        backoff = Backoff()
        with scope:
            while True:
                if slots is not None:
                    await slots.acquire()
                try:
                    client = await source.channel.accept()
                except trio.ClosedResourceError:
                    if slots is not None:
                        slots.release()
                    return
                except OSError as exc:
                    if slots is not None:
                        slots.release()
                    self._failed(source, exc)
                    await backoff.wait()
                    continue
                except BaseException:
                    if slots is not None:
                        slots.release()
                    raise
                backoff.reset()
                dispatch(client, slots is not None)

    def _failed(self, source: Source, exc: OSError) -> None:
        self.errors += 1
        if exc.errno in CAPACITY_ERRNOS:
            what = "out of descriptors or memory; pausing accept"
        else:
            what = "accept failed; retrying"
        if enabled():
            emit("qio_net_listener_accept_backoff", listener=self._name, errno=exc.errno)
        self.log.log(
            logging.ERROR,
            "listener %r on %s: %s: %s",
            self._name,
            source.address,
            what,
            errno.errorcode.get(exc.errno or 0, exc.errno),
        )

    async def accept_first(self, sources: list[Source], got: list[SocketChannel]) -> None:
        """Accept on every source at once until one client arrives; append to ``got``.

        More than one client may land in ``got`` when two sockets accept in the same
        moment; the caller must keep (or close) every one. Returns with ``got`` empty
        when every socket was closed.
        """
        async with trio.open_nursery() as race:
            for source in sources:
                race.start_soon(self._accept_one, source, got, race.cancel_scope)

    async def _accept_one(
        self, source: Source, got: list[SocketChannel], done: trio.CancelScope
    ) -> None:
        backoff = Backoff()
        while True:
            try:
                client = await source.channel.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                self._failed(source, exc)
                await backoff.wait()
                continue
            got.append(client)
            done.cancel()
            return
