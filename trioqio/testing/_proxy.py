"""A fault-injecting TCP proxy for tests: latency, throttling, clean cuts and resets.

QEMU has no such helper in ``io/``; its migration tests inject faults with ``netem`` or a
``tests/qtest`` helper that kills a process. This module gives trioqio's tests (and
users' tests of code built on trioqio) a loopback man-in-the-middle instead: it listens on
``127.0.0.1:0``, connects each accepted client to a target, and forwards bytes in both
directions, each direction through its own :class:`Fault`.

Everything runs in Trio tasks owned by the proxy's nursery; leaving ``async with`` stops
the listener and every forwarding connection and closes every socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import socket
import struct
import termios
import typing
from collections.abc import Collection
from types import TracebackType
from typing import Any

import attrs
import trio

from .._address import InetAddress, SocketAddress, UnixAddress, as_address

__all__ = ["Fault", "FaultProxy"]

#: How long a cut connection keeps discarding its peers' bytes after sending EOF, so
#: that the final close is a FIN rather than a reset caused by unread data.
_CUT_LINGER = 1.0
#: How long a reset waits for the bytes already forwarded to reach the peer.
_RESET_DRAIN = 2.0


def _connections(value: Collection[int] | None) -> frozenset[int] | None:
    return None if value is None else frozenset(value)


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, (int, float)) or value < 0):
        raise ValueError(f"Fault.{attribute.name} must be >= 0, got {value!r}")


@typing.final
@attrs.frozen(kw_only=True)
class Fault:
    """What :class:`FaultProxy` does to the bytes flowing in one direction.

    Faults combine: a chunk is first held for ``delay``, then paced to ``rate``; once
    ``cut_after`` (or ``reset_after``) bytes have been forwarded in this direction, the
    proxy ends the connection on both sides.

    Attributes:
        delay: seconds added to every chunk between the proxy reading it and forwarding
            it (latency; chunks stay in order and pipeline, so throughput is kept).
        rate: bytes per second at most, or None for no limit.
        cut_after: forward exactly this many bytes, then close both sides cleanly: each
            peer sees end-of-file (a FIN), never a reset.
        reset_after: forward exactly this many bytes, wait until they left the proxy,
            then close both sides with ``SO_LINGER`` 0: each peer sees
            ``ECONNRESET`` (a RST).
        connections: the 0-based accept indexes this fault applies to (``{1}``: only the
            second connection, e.g. a migration's first multifd channel); None: all.

    Raises:
        ValueError: a negative figure, a zero rate, or both ``cut_after`` and
            ``reset_after``.

    Example::

        slow = Fault(delay=0.05, rate=1 << 20)
        cut_second = Fault(cut_after=4096, connections={1})
    """

    delay: float = attrs.field(default=0.0, validator=_non_negative)
    rate: float | None = attrs.field(default=None, validator=_non_negative)
    cut_after: int | None = attrs.field(default=None, validator=_non_negative)
    reset_after: int | None = attrs.field(default=None, validator=_non_negative)
    connections: frozenset[int] | None = attrs.field(default=None, converter=_connections)

    def __attrs_post_init__(self) -> None:
        if self.rate == 0:
            raise ValueError("Fault.rate must be > 0 (None means unlimited)")
        if self.cut_after is not None and self.reset_after is not None:
            raise ValueError("Fault: choose one of cut_after and reset_after")

    def applies_to(self, index: int) -> bool:
        """Return True when this fault applies to the ``index``-th accepted connection.

        Args:
            index: the connection's 0-based accept index.

        Returns:
            True if :attr:`connections` is None or holds ``index``.

        Raises nothing.

        Example::

            assert Fault(cut_after=10, connections={1}).applies_to(1)
            assert not Fault(cut_after=10, connections={1}).applies_to(0)
        """
        return self.connections is None or index in self.connections

    @property
    def limit(self) -> int | None:
        """The byte count after which the connection ends, or None."""
        return self.cut_after if self.cut_after is not None else self.reset_after


_NO_FAULT = Fault()
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@attrs.define(eq=False)
class _Connection:
    index: int
    client: trio.SocketStream
    server: trio.SocketStream
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    ending: str = "eof"
    eofs: int = 0

    def end(self, how: str) -> None:
        if self.ending == "eof":
            self.ending = how
        self.scope.cancel()


async def _open_target(target: SocketAddress) -> trio.SocketStream:
    if isinstance(target, InetAddress):
        return await trio.open_tcp_stream(target.host, target.port)
    if isinstance(target, UnixAddress):
        path = "\0" + target.path[1:] if target.abstract else target.path
        return await trio.open_unix_socket(path)
    raise ValueError(f"FaultProxy: cannot forward to {target} (tcp: or unix: only)")


def _unsent(stream: trio.SocketStream) -> int:
    """Bytes still in the socket's send queue (Linux ``SIOCOUTQ``), or 0 if unknown."""
    try:
        raw = fcntl.ioctl(stream.socket.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


@typing.final
class FaultProxy:
    """A loopback TCP proxy that injects faults into the connections it forwards.

    Listens on ``127.0.0.1`` (an ephemeral port) and forwards every accepted connection to
    ``target``, bytes from the client to the target through ``to_target`` and bytes back
    through ``to_client``. ``fault`` sets both directions at once.

    Not a QEMU API: QEMU's tests use ``netem``; this works without privileges or
    kernel modules, and its faults are exact (a cut happens after exactly N bytes).

    Args:
        target: where to forward (``"tcp:HOST:PORT"``, ``"unix:PATH"`` or an address).
        fault: the fault for both directions (overridden by the two below).
        to_target: the fault for bytes the client sends.
        to_client: the fault for bytes the target sends.
        chunk_size: the largest read, and so the unit of ``delay``.
        buffer_chunks: chunks held in flight per direction (bounds memory under delay).

    Attributes:
        address: where clients connect, as ``"tcp:127.0.0.1:PORT"`` (set on entry).
        accepted: connections accepted so far.
        forwarded: bytes forwarded so far, per direction (``"to_target"``, ``"to_client"``).
        fired: one ``(connection index, direction, "cut" | "reset")`` per fault that fired.

    Raises:
        ValueError: a target that is not a TCP or UNIX address.

    Example::

        async with FaultProxy("tcp:127.0.0.1:4444", to_target=Fault(cut_after=1000)) as proxy:
            channel = await trioqio.connect(proxy.address)
    """

    def __init__(
        self,
        target: str | SocketAddress,
        *,
        fault: Fault | None = None,
        to_target: Fault | None = None,
        to_client: Fault | None = None,
        chunk_size: int = 65536,
        buffer_chunks: int = 16,
    ) -> None:
        self.target: SocketAddress = as_address(target)
        if not isinstance(self.target, (InetAddress, UnixAddress)):
            raise ValueError(f"FaultProxy: cannot forward to {self.target} (tcp: or unix: only)")
        if chunk_size < 1 or buffer_chunks < 1:
            raise ValueError("FaultProxy: chunk_size and buffer_chunks must be >= 1")
        self.to_target: Fault = to_target or fault or _NO_FAULT
        self.to_client: Fault = to_client or fault or _NO_FAULT
        self.chunk_size = chunk_size
        self.buffer_chunks = buffer_chunks
        self.address: str = ""
        self.accepted: int = 0
        self.forwarded: dict[str, int] = {"to_target": 0, "to_client": 0}
        self.fired: list[tuple[int, str, str]] = []
        self._stack = contextlib.AsyncExitStack()
        self._nursery: trio.Nursery | None = None

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        return int(self.address.rsplit(":", 1)[1])

    async def __aenter__(self) -> FaultProxy:
        if self._nursery is not None:
            raise RuntimeError("FaultProxy: already entered")
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        listener = listeners[0]
        try:
            host, port = listener.socket.getsockname()[:2]
            self.address = f"tcp:{host}:{port}"
            self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        except BaseException:
            await listener.aclose()
            raise
        self._nursery.start_soon(self._accept_loop, listener)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        return await self._stack.__aexit__(exc_type, exc, traceback)

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        async with listener:
            while True:
                client = await listener.accept()
                index = self.accepted
                self.accepted += 1
                assert self._nursery is not None
                self._nursery.start_soon(self._handle, index, client)

    async def _handle(self, index: int, client: trio.SocketStream) -> None:
        async with client:
            try:
                server = await _open_target(self.target)
            except OSError:
                return  # the client sees the connection close: the target is not there
            async with server:
                conn = _Connection(index=index, client=client, server=server)
                with conn.scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, conn, "to_target", self.to_target)
                        nursery.start_soon(self._pump, conn, "to_client", self.to_client)
                await self._finish(conn)

    async def _finish(self, conn: _Connection) -> None:
        streams = (conn.client, conn.server)
        if conn.ending == "reset":
            with trio.move_on_after(_RESET_DRAIN):
                # Polls the kernel's send queue: there is no event to wait for.
                while any(_unsent(stream) for stream in streams):  # noqa: ASYNC110
                    await trio.sleep(0.005)
            linger = struct.pack("ii", 1, 0)
            for stream in streams:
                with contextlib.suppress(OSError):
                    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        elif conn.ending == "cut":
            for stream in streams:
                with contextlib.suppress(*_BROKEN):
                    await stream.send_eof()
            with trio.move_on_after(_CUT_LINGER):
                async with trio.open_nursery() as nursery:
                    for stream in streams:
                        nursery.start_soon(_discard, stream)

    async def _pump(self, conn: _Connection, direction: str, fault: Fault) -> None:
        if not fault.applies_to(conn.index):
            fault = _NO_FAULT
        source, sink = (
            (conn.client, conn.server) if direction == "to_target" else (conn.server, conn.client)
        )
        send, receive = trio.open_memory_channel[tuple[float, bytes]](self.buffer_chunks)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, conn, source, send)
            try:
                await self._write(conn, direction, fault, sink, receive)
            except _BROKEN:
                conn.end("error")

    async def _read(
        self,
        conn: _Connection,
        source: trio.SocketStream,
        send: trio.MemorySendChannel[tuple[float, bytes]],
    ) -> None:
        async with send:
            try:
                while data := await source.receive_some(self.chunk_size):
                    await send.send((trio.current_time(), data))
            except _BROKEN:
                conn.end("error")

    async def _write(
        self,
        conn: _Connection,
        direction: str,
        fault: Fault,
        sink: trio.SocketStream,
        receive: trio.MemoryReceiveChannel[tuple[float, bytes]],
    ) -> None:
        limit = fault.limit
        done = 0
        paced_since: float | None = None
        paced = 0
        piece = self.chunk_size
        if fault.rate is not None:
            piece = max(1, min(piece, math.floor(fault.rate / 20)))
        async with receive:
            async for stamp, data in receive:
                if fault.delay:
                    await trio.sleep_until(stamp + fault.delay)
                if limit is not None and done + len(data) >= limit:
                    data = data[: limit - done]
                view = memoryview(data)
                for start in range(0, len(view), piece):
                    part = view[start : start + piece]
                    if fault.rate is not None:
                        if paced_since is None:
                            paced_since = trio.current_time()
                        await trio.sleep_until(paced_since + paced / fault.rate)
                        paced += len(part)
                    await sink.send_all(part)
                    done += len(part)
                    self.forwarded[direction] += len(part)
                if limit is not None and done >= limit:
                    how = "cut" if fault.cut_after is not None else "reset"
                    self.fired.append((conn.index, direction, how))
                    conn.end(how)
                    return
        # End-of-file from the source: pass it on (half-close), end when both have.
        with contextlib.suppress(*_BROKEN):
            await sink.send_eof()
        conn.eofs += 1
        if conn.eofs == 2:
            conn.scope.cancel()


async def _discard(stream: trio.SocketStream) -> None:
    with contextlib.suppress(*_BROKEN):
        while await stream.receive_some(65536):
            pass
