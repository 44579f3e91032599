"""Connecting socket channels (QEMU ``qio_channel_socket_connect_sync``/``_async``).

QEMU connects a ``QIOChannelSocket`` either in the calling thread (``connect_sync``, which
blocks in ``getaddrinfo`` and ``connect``) or in a worker thread through a ``QIOTask``
(``connect_async``) whose callback then runs in the main loop. trioqio offers both shapes:
:func:`connect` is an ``async def`` that never blocks the Trio thread, and
:func:`connect_task` keeps QEMU's shape: a :class:`~trioqio.Task` whose worker does the
blocking resolve and connect, and whose completion runs in the Trio thread.

As in QEMU, one :func:`connect_task` is one Task whose worker thread resolves and connects
(``qio_channel_socket_connect_sync`` and ``_complete`` are traced there); the Trio thread
then wraps the socket in a :class:`SocketChannel` and runs the completion.

Differences from QEMU: :func:`connect` uses happy eyeballs for TCP (as
:func:`trio.open_tcp_stream` does) instead of trying the resolved addresses one after
another; :func:`connect_task` keeps QEMU's in-order tries. A cancelled
:func:`connect_task` stops waiting for the worker at once, and a socket the worker
connects after that is closed rather than leaked. The Task's source is the address (QEMU's
is the channel, which exists before its socket there). There is no ``WRITE_ZERO_COPY``.
"""

from __future__ import annotations

import socket as _stdlib_socket
import threading
from typing import Any

import trio

from ._address import FdAddress, InetAddress, SocketAddress, UnixAddress, as_address
from ._channel_socket import SocketChannel
from ._task import CompletionCallback, Task, ThreadWork
from ._trace import emit, enabled

__all__ = ["connect", "connect_task"]


def _unix_sockaddr(address: UnixAddress) -> str:
    if not address.path:
        raise ValueError(f"cannot connect to the unnamed UNIX address {str(address)!r}")
    # Linux abstract namespace: "@name" is spelled "\0name" to the kernel.
    return "\0" + address.path[1:] if address.abstract else address.path


def _family_and_sockaddr(address: SocketAddress) -> tuple[int, str | tuple[int, int]]:
    if isinstance(address, UnixAddress):
        return _stdlib_socket.AF_UNIX, _unix_sockaddr(address)
    family = getattr(_stdlib_socket, "AF_VSOCK", None)
    if family is None:
        raise OSError(f"vsock is not available on this system (address {str(address)!r})")
    assert not isinstance(address, (InetAddress, FdAddress))
    return family, (address.cid, address.port)


def _with_address(exc: OSError, address: SocketAddress) -> OSError:
    error = OSError(exc.errno, f"could not connect to {str(address)!r}: {exc.strerror or exc}")
    error.__cause__ = exc
    return error


async def connect(address: str | SocketAddress, *, name: str = "") -> SocketChannel:
    """Connect to ``address`` and return the connected channel.

    TCP tries every resolved address with happy eyeballs (like
    :func:`trio.open_tcp_stream`); UNIX paths may be Linux abstract names (``@name``);
    ``fd:N`` adopts an inherited socket; ``vsock:CID:PORT`` connects over virtio-vsock.

    QEMU: ``qio_channel_socket_connect_sync`` (which blocks; this does not).

    Args:
        address: a text form (``tcp:HOST:PORT``, ``unix:PATH``, ``fd:N``,
            ``vsock:CID:PORT``) or an address value.
        name: the channel's name.

    Returns:
        The connected :class:`SocketChannel`.

    Raises:
        trioqio.AddressError: malformed address text.
        OSError: resolving or connecting failed (the message names the address); for
            ``fd:N``, ``N`` is not a socket.

    Example::

        channel = await trioqio.connect("tcp:localhost:4444")
    """
    addr = as_address(address)
    if enabled():
        emit("qio_channel_socket_connect_sync", channel=name, address=str(addr))
    try:
        channel = await _connect(addr, name)
    except BaseException:
        if enabled():
            emit("qio_channel_socket_connect_fail", channel=name, address=str(addr))
        raise
    if enabled():
        emit("qio_channel_socket_connect_complete", channel=name, fd=channel.socket.fileno())
    return channel


async def _connect(addr: SocketAddress, name: str) -> SocketChannel:
    if isinstance(addr, InetAddress):
        stream = await trio.open_tcp_stream(addr.host, addr.port)
        return SocketChannel(stream.socket, name=name)
    if isinstance(addr, FdAddress):
        await trio.lowlevel.checkpoint()
        return SocketChannel.from_fd(addr.fd, name=name)
    family, sockaddr = _family_and_sockaddr(addr)
    sock = trio.socket.socket(family, _stdlib_socket.SOCK_STREAM)
    try:
        await sock.connect(sockaddr)
        return SocketChannel(sock, name=name)
    except OSError as exc:
        sock.close()
        raise _with_address(exc, addr) from None
    except BaseException:
        sock.close()
        raise


# -- connect_task: QEMU's shape ----------------------------------------------------------


class _Handoff:
    """Hands the worker's socket to the Trio thread, or closes it if nobody will take it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._sock: _stdlib_socket.socket | None = None

    def deliver(self, sock: _stdlib_socket.socket) -> bool:
        """Worker thread: park the socket; False (and closed) if the Trio side gave up."""
        with self._lock:
            if not self._abandoned:
                self._sock = sock
                return True
        sock.close()
        return False

    def take(self) -> _stdlib_socket.socket | None:
        with self._lock:
            sock, self._sock = self._sock, None
            return sock

    def abandon(self) -> None:
        """Trio thread: refuse future deliveries and close one already made."""
        with self._lock:
            self._abandoned = True
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _blocking_connect(addr: SocketAddress, name: str, handoff: _Handoff) -> None:
    """Worker thread: resolve and connect like QEMU's ``socket_connect`` (in order)."""
    tracing = enabled()
    if tracing:
        emit("qio_channel_socket_connect_sync", channel=name, address=str(addr))
    try:
        sock = _connected_socket(addr)
    except BaseException:
        if tracing:
            emit("qio_channel_socket_connect_fail", channel=name, address=str(addr))
        raise
    if tracing:
        emit("qio_channel_socket_connect_complete", channel=name, fd=sock.fileno())
    handoff.deliver(sock)


def _connected_socket(addr: SocketAddress) -> _stdlib_socket.socket:
    if isinstance(addr, FdAddress):
        sock = _stdlib_socket.socket(fileno=addr.fd)
        if sock.type != _stdlib_socket.SOCK_STREAM:
            sock.detach()
            raise ValueError(f"fd {addr.fd} is not a stream socket")
        return sock
    candidates: list[tuple[int, str | tuple[Any, ...]]]
    if isinstance(addr, InetAddress):
        candidates = [
            (int(family), sockaddr)
            for family, _type, _proto, _canon, sockaddr in _stdlib_socket.getaddrinfo(
                addr.host, addr.port, type=_stdlib_socket.SOCK_STREAM
            )
        ]
    else:
        candidates = [_family_and_sockaddr(addr)]
    errors: list[OSError] = []
    for family, sockaddr in candidates:
        sock = _stdlib_socket.socket(family, _stdlib_socket.SOCK_STREAM)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise _with_address(errors[-1], addr) if errors else OSError(f"{addr} resolved to nothing")


class _ConnectWork(ThreadWork):
    """connect_task's work: resolve and connect in a thread, wrap in the Trio thread."""

    __slots__ = ("_channel_name", "_handoff")

    def __init__(
        self, addr: SocketAddress, name: str, limiter: trio.CapacityLimiter | None, task_name: str
    ) -> None:
        self._handoff = _Handoff()
        self._channel_name = name
        super().__init__(_blocking_connect, (addr, name, self._handoff), limiter, task_name)

    async def run(self, abandon_on_cancel: bool) -> SocketChannel:
        try:
            await super().run(abandon_on_cancel)
        except BaseException:
            self._handoff.abandon()  # a socket the thread connects later is closed
            raise
        sock = self._handoff.take()
        assert sock is not None
        try:
            return SocketChannel(trio.socket.from_stdlib_socket(sock), name=self._channel_name)
        except BaseException:
            sock.close()
            raise


def connect_task(
    nursery: trio.Nursery,
    address: str | SocketAddress,
    on_complete: CompletionCallback[SocketChannel] | None = None,
    *,
    name: str = "",
    limiter: trio.CapacityLimiter | None = None,
) -> Task[SocketChannel]:
    """Connect in a worker thread; complete in the Trio thread (QEMU's ``connect_async``).

    Returns at once. A child task of ``nursery`` runs one :class:`trioqio.Task` whose
    worker thread does the blocking resolve and connect (trying the resolved addresses in
    order, as QEMU does); then ``on_complete(task)`` runs in the Trio thread, exactly
    once, and reads ``task.result`` (the channel, now the callback's to own) or calls
    ``task.propagate_error()``.

    Cancellation follows :meth:`trioqio.Task.run_in_thread` with
    ``abandon_on_cancel=True``: if ``nursery`` is cancelled first, the completion sees
    :class:`trioqio.TaskCancelled`; a thread already started is abandoned, and a socket
    it connects afterwards is closed, never leaked.

    QEMU: ``qio_channel_socket_connect_async``.

    Args:
        nursery: owns the work; cancelling it cancels the connect.
        address: a text form or address value (checked now, before anything starts).
        on_complete: plain or async ``on_complete(task)``; may be None (then use
            ``await task.wait()``).
        name: the channel's (and the task's) name.
        limiter: bounds concurrent worker threads (default: Trio's).

    Returns:
        The :class:`trioqio.Task`; ``await task.wait()`` gives the channel or raises.

    Raises:
        trioqio.AddressError: malformed address text (raised here, nothing started).
        TypeError: ``address`` is neither text nor an address value.

    Example::

        async def serve(channel: trioqio.SocketChannel) -> None:
            async with channel:
                await channel.send_all(b"hello")

        def connected(task: trioqio.Task[trioqio.SocketChannel]) -> None:
            task.propagate_error()
            nursery.start_soon(serve, task.result)

        trioqio.connect_task(nursery, "tcp:localhost:4444", connected)
    """
    addr = as_address(address)
    task_name = name or "connect"
    task: Task[SocketChannel] = Task(source=addr, on_complete=on_complete, name=task_name)
    if enabled():
        emit("qio_channel_socket_connect_async", channel=name, address=str(addr))
    work = _ConnectWork(addr, name, limiter, task_name)
    # The driver's own entry point, as Task.run_in_thread uses it, with a work that wraps
    # the socket in the Trio thread.
    task._start(nursery, work, abandon_on_cancel=True)  # pyright: ignore[reportPrivateUsage]
    return task
