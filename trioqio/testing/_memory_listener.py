"""An in-memory :class:`trio.abc.Listener`, for testing servers without kernel sockets.

QEMU has no counterpart: its listener tests (``tests/unit/test-io-channel-socket.c``)
always use real sockets. Trio tests ``serve_listeners`` with an in-memory listener whose
``accept`` hands out one end of a stream pair; :class:`MemoryListener` is that listener
made public, with a backlog, a way to make accepts fail (descriptor exhaustion, a broken
listener) and counters, so that a :class:`~trioqio.NetListener`'s dispatch, budget, pauses,
drain and error policies can be tested under ``autojump_clock`` with no sleeps.
"""

from __future__ import annotations

import collections
import math
import typing

import trio
import trio.testing

__all__ = ["MemoryListener", "MemoryStream"]

#: One end of the stream pair a :class:`MemoryListener` connection makes.
#:
#: Example::
#:
#:     memory = trioqio.testing.MemoryListener()
#:     client: trioqio.testing.MemoryStream = await memory.connect()
MemoryStream: typing.TypeAlias = (
    "trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]"
)


@typing.final
class MemoryListener(trio.abc.Listener["MemoryStream"]):
    """A listener whose clients are in-memory stream pairs.

    :meth:`connect` makes a pair (:func:`trio.testing.memory_stream_pair`), queues the
    server end in the backlog and returns the client end; :meth:`accept` returns the
    next server end. Like a kernel listener, connecting succeeds before anyone accepts,
    and blocks while the backlog is full. ``accept`` is cancel-safe: a cancelled accept
    leaves its client in the backlog.

    Args:
        backlog: how many connections may wait for ``accept`` (default: no limit).

    Attributes:
        accepted: server ends returned by :meth:`accept` so far.
        accept_calls: calls of :meth:`accept` so far, failed ones included.

    Raises:
        ValueError: ``backlog`` is below 1.

    Example::

        listener = trioqio.testing.MemoryListener()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, echo, [listener])
            client = await listener.connect()
            await client.send_all(b"hi")
            assert await client.receive_some() == b"hi"
            nursery.cancel_scope.cancel()
    """

    def __init__(self, *, backlog: float = math.inf) -> None:
        if not backlog >= 1:
            raise ValueError(f"backlog must be at least 1, not {backlog!r}")
        send, receive = trio.open_memory_channel["MemoryStream"](backlog)
        self._send = send
        self._receive = receive
        self._failures: collections.deque[BaseException] = collections.deque()
        self._closed = False
        self.accepted: int = 0
        self.accept_calls: int = 0

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran."""
        return self._closed

    @property
    def waiting(self) -> int:
        """Connections in the backlog, not yet accepted."""
        return self._receive.statistics().current_buffer_used

    def fail_next(self, exc: BaseException, *, times: int = 1) -> None:
        """Make the next ``times`` calls of :meth:`accept` raise ``exc``.

        Args:
            exc: what to raise, e.g. ``OSError(errno.EMFILE, "Too many open files")``.
            times: how many accepts fail (each raises the same object).

        Raises:
            ValueError: ``times`` is below 1.

        Example::

            memory = trioqio.testing.MemoryListener()
            memory.fail_next(OSError(errno.EMFILE, os.strerror(errno.EMFILE)), times=3)
        """
        if times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        self._failures.extend([exc] * times)

    async def connect(self) -> MemoryStream:
        """Connect a client; return its end once the server end is in the backlog.

        Returns:
            The client end of a new stream pair.

        Raises:
            ConnectionRefusedError: the listener is closed.

        Example::

            memory = trioqio.testing.MemoryListener()
            client = await memory.connect()
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise ConnectionRefusedError("the MemoryListener is closed")
        client, server = trio.testing.memory_stream_pair()
        try:
            await self._send.send(server)
        except trio.ClosedResourceError:
            raise ConnectionRefusedError("the MemoryListener is closed") from None
        except BaseException:
            await trio.aclose_forcefully(server)
            raise
        return client

    async def accept(self) -> MemoryStream:
        """Return the next connection's server end, or raise the next queued failure.

        Returns:
            The server end of the next connection in the backlog.

        Raises:
            trio.ClosedResourceError: the listener is closed.
            BaseException: one queued with :meth:`fail_next`.

        Example::

            memory = trioqio.testing.MemoryListener()
            client = await memory.connect()
            server = await memory.accept()
        """
        self.accept_calls += 1
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("the MemoryListener is closed")
        if self._failures:
            await trio.lowlevel.checkpoint()
            raise self._failures.popleft()
        try:
            server = await self._receive.receive()
        except (trio.ClosedResourceError, trio.EndOfChannel):
            raise trio.ClosedResourceError("the MemoryListener is closed") from None
        self.accepted += 1
        return server

    async def aclose(self) -> None:
        """Close the listener; connections still in the backlog are closed (refused).

        Raises nothing: closing twice is a no-op.

        Example::

            memory = trioqio.testing.MemoryListener()
            await memory.aclose()
            assert memory.closed
        """
        if not self._closed:
            self._closed = True
            self._send.close()
            while True:
                try:
                    server = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                await trio.aclose_forcefully(server)
            self._receive.close()
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"waiting={self.waiting}"
        return f"<MemoryListener {state} accepted={self.accepted}>"
