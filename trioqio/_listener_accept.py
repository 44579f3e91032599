"""The accept side of :class:`~trioqio.NetListener` (QEMU ``io/net-listener.c``).

QEMU's listener adds a G_IO_IN watch per listening socket (``qio_net_listener_watch``),
removes them to pause (``qio_net_listener_unwatch``), and runs a nested main loop over all
of them for ``qio_net_listener_wait_client``. :class:`Acceptor` holds that part here, over
any :class:`trio.abc.Listener` (trioqio's own sockets are
:class:`~trioqio.SocketChannelListener`\\ s): one accept loop per watched listener, each in
its own cancel scope, that accepts and hands the client to the listener's dispatch
function; the failure policy for accepts; and the race over every listener that
``wait_client`` runs.

Theory of operation. An accept loop runs for a listener exactly while the
:class:`~trioqio.NetListener` wants clients from it: a handler is set, the ``max_clients``
budget has room, and the listener is open. Pausing for any of these reasons cancels the
loop's scope, which cancels a blocked ``accept()``; Trio's accepts are cancel-safe (a
client is either returned or left in the backlog), and one that was returned in the same
moment as the cancellation reaches the dispatch function before the loop sees the
cancellation, so it is queued, never lost. A loop holds nothing while it waits, so an idle
listener cannot keep a client on another one waiting.

Accept failures:

- ``trio.ClosedResourceError``: the listener was closed (by us or behind our back); its
  loop ends and the listener counts as closed.
- ``OSError`` for exhausted descriptors or memory (``EMFILE``, ``ENFILE``, ``ENOBUFS``,
  ``ENOMEM``) or a routine per-connection failure (``ECONNABORTED``, ``EPROTO``, ...):
  counted, logged (rate-limited), then retried after an exponential pause.
- Any other ``Exception``: that listener is broken. With the ``"log"`` policy it is
  logged with its traceback, counted, closed, and the other listeners go on serving; with
  ``"raise"`` the error propagates (Trio's :func:`trio.serve_listeners` rule); a callable
  receives it and the listener is closed.

Differences from QEMU: accept failures back off exponentially instead of firing the watch
again at once, and are counted and logged (rate-limited); a listener whose accept fails
for good is closed instead of being polled forever; the ``wait_client`` race keeps every
client it accepted (QEMU drops one accepted on a second socket at the same moment).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ._address import SocketAddress
from ._channel_socket import SocketChannelListener
from ._listener_clients import HandlerErrorPolicy
from ._listener_util import CAPACITY_ERRNOS, Backoff, RateLimitedLog
from ._socket_io import ROUTINE_ACCEPT_ERRNOS
from ._trace import emit, enabled

__all__ = ["Acceptor", "Dispatch", "Source"]

logger = logging.getLogger("trioqio.listener")

#: Receives an accepted client.
Dispatch = Callable[[Any], None]

_LOG_INTERVAL = 5.0
_RETRIED_ERRNOS = CAPACITY_ERRNOS | ROUTINE_ACCEPT_ERRNOS


@attrs.define(eq=False)
class Source:
    """One listener served by a NetListener; ``scope`` is its running accept loop's.

    ``accept`` is the listener's accept method, or for trioqio's own sockets the channel's
    (the same call, one frame shorter on the hot path).
    """

    listener: trio.abc.Listener[Any]
    accept: Callable[[], Awaitable[Any]]
    address: SocketAddress | None
    scope: trio.CancelScope | None = None
    closed: bool = False

    @classmethod
    def of(cls, listener: trio.abc.Listener[Any], address: SocketAddress | None) -> Source:
        """Describe ``listener``, bound at ``address`` when known."""
        if type(listener) is SocketChannelListener:
            return cls(listener, listener.channel.accept, address)
        return cls(listener, listener.accept, address)


class Acceptor:
    """The accept loops of one listener and their failure policy.

    Args:
        name: the listener's name (in log records and trace events).
        on_accept_error: what a failure that is not retried does (see the module).
    """

    __slots__ = ("_name", "_on_error", "accepted", "errors", "failed", "log")

    def __init__(self, name: str, on_accept_error: HandlerErrorPolicy) -> None:
        self._name = name
        self._on_error = on_accept_error
        #: Clients accepted so far (by the loops and by ``wait_client``).
        self.accepted = 0
        #: Accept failures backed off and retried so far.
        self.errors = 0
        #: Listeners closed because their accept failed for good.
        self.failed = 0
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
                await trio.aclose_forcefully(source.listener)

    async def _loop(self, source: Source, scope: trio.CancelScope, dispatch: Dispatch) -> None:
        # The hot path of a busy listener: one accept, one dispatch, nothing else per
        # client (failures go through _retry, shared with wait_client's race).
        backoff = Backoff()
        accept = source.accept
        with scope:
            while True:
                try:
                    client = await accept()
                except trio.ClosedResourceError:
                    source.closed = True
                    return
                except Exception as exc:
                    if await self._retry(source, exc, backoff):
                        continue
                    return
                if backoff.current:
                    backoff.reset()
                self.accepted += 1
                dispatch(client)

    async def _accept(self, source: Source, backoff: Backoff) -> Any:
        # One client from ``source``, or None once it is closed (or broken and closed).
        while True:
            try:
                client = await source.accept()
            except trio.ClosedResourceError:
                source.closed = True
                return None
            except Exception as exc:
                if await self._retry(source, exc, backoff):
                    continue
                return None
            backoff.reset()
            self.accepted += 1
            return client

    async def _retry(self, source: Source, exc: Exception, backoff: Backoff) -> bool:
        # True after backing off from a failure worth retrying; False once the listener
        # is broken (closed, and the policy applied).
        if isinstance(exc, OSError) and exc.errno in _RETRIED_ERRNOS:
            self._backing_off(source, exc)
            await backoff.wait()
            return True
        await self._broken(source, exc)
        return False

    def _backing_off(self, source: Source, exc: OSError) -> None:
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
            self._where(source),
            what,
            errno.errorcode.get(exc.errno or 0, exc.errno),
        )

    async def _broken(self, source: Source, exc: Exception) -> None:
        # The listener cannot accept any more: close it, then apply the policy.
        self.failed += 1
        source.closed = True
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(source.listener)
        policy = self._on_error
        if policy == "raise":
            raise exc
        if policy == "log":
            logger.error(
                "listener %r: %s stopped: accept failed: %r",
                self._name,
                self._where(source),
                exc,
                exc_info=exc,
            )
            return
        assert callable(policy)
        policy(exc)

    @staticmethod
    def _where(source: Source) -> str:
        return str(source.address) if source.address is not None else repr(source.listener)

    async def accept_first(self, sources: list[Source], got: list[Any]) -> None:
        """Accept on every source at once until one client arrives; append to ``got``.

        More than one client may land in ``got`` when two listeners accept in the same
        moment; the caller must keep (or close) every one. Returns with ``got`` empty
        when every listener was closed.
        """
        async with trio.open_nursery() as race:
            for source in sources:
                race.start_soon(self._accept_one, source, got, race.cancel_scope)

    async def _accept_one(self, source: Source, got: list[Any], done: trio.CancelScope) -> None:
        client = await self._accept(source, Backoff())
        if client is not None:
            got.append(client)
            done.cancel()
