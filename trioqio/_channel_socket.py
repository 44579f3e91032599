"""The socket channel (QEMU ``io/channel-socket.c``).

:class:`SocketChannel` wraps a connected or listening Trio socket. The stream methods go
straight to the non-blocking descriptor (``os.write``/``os.writev``/``os.read``/
``os.readv``) and park in ``trio.lowlevel.wait_readable``/``wait_writable`` only when the
kernel says "would block", which is what QEMU's ``readv``/``writev`` plus a watch do.
Descriptor passing and ``MSG_PEEK`` go through Trio's ``recvmsg``/``sendmsg``/``recv``; the
loops themselves live in ``_socket_io.py``.

Differences from QEMU: there is no unopened state (a channel always owns a socket; connect
with :func:`trioqio.connect`), no zero-copy send (``WRITE_ZERO_COPY`` is never set), no
blocking mode, and a connected TCP channel starts with ``TCP_NODELAY`` (and
``TCP_NOTSENT_LOWAT``) as :class:`trio.SocketStream` does. Received descriptors keep the
blocking mode QEMU gives them (blocking) and are always close-on-exec. A control message
truncated because the peer sent more descriptors than asked for is an error here (QEMU
keeps what fit and drops the rest silently); the descriptors that did arrive are closed.
"""

from __future__ import annotations

import contextlib
import os
import socket as _stdlib_socket
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ._abc import ChannelFeature, Shutdown
from ._errors import receive_size
from ._socket_io import (
    CLOSED_ERRNOS,
    DEFAULT_RECEIVE_SIZE,
    MAX_FDS,
    ROUTINE_ACCEPT_ERRNOS,
    byte_view,
    receive_exactly_into_fd,
    receive_fd,
    receive_into_fd,
    send_all_fd,
    translate_errors,
    writev_fd,
    writev_items,
)
from ._trace import emit, enabled

if TYPE_CHECKING:
    from typing_extensions import Buffer

from ._socket_fds import FdPassingSocket

__all__ = ["MAX_FDS", "SocketChannel", "SocketChannelListener"]

_SHUT = {
    Shutdown.READ: _stdlib_socket.SHUT_RD,
    Shutdown.WRITE: _stdlib_socket.SHUT_WR,
    Shutdown.BOTH: _stdlib_socket.SHUT_RDWR,
}


@typing.final
class SocketChannel(FdPassingSocket):
    """A channel over a stream socket: TCP (IPv4, IPv6), UNIX, or vsock.

    The channel adopts ``sock``: closing the channel closes it. Features: ``SHUTDOWN``
    always; ``FD_PASS`` on UNIX sockets; ``LISTEN`` when the socket is listening (then
    :meth:`accept` works, and closing unlinks a UNIX socket's path); ``READ_MSG_PEEK``
    when it is not listening.

    Like :class:`trio.SocketStream`, two tasks sending at once (or receiving at once)
    raise :class:`trio.BusyResourceError`; one sender and one receiver may run
    concurrently, and :meth:`shutdown` may be called from any task at any time (QEMU's
    migration uses that to wake blocked readers).

    QEMU: ``QIOChannelSocket`` (``qio_channel_socket_new``).

    Args:
        sock: a ``SOCK_STREAM`` Trio socket, connected or listening.
        name: the channel's name, used in errors and trace events.

    Raises:
        TypeError: ``sock`` is not a Trio socket.
        ValueError: ``sock`` is not a stream socket.

    Example::

        a, b = trio.socket.socketpair()
        left, right = trioqio.SocketChannel(a), trioqio.SocketChannel(b)
        await left.send_all(b"hi")
        assert await right.receive_exactly(2) == b"hi"
    """

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_fd(cls, fd: int, *, name: str = "") -> SocketChannel:
        """Adopt an already open stream socket descriptor.

        On success the channel owns ``fd``; on failure the caller still owns it (QEMU
        semantics), so it is never closed behind the caller's back.

        QEMU: ``qio_channel_socket_new_fd``.

        Args:
            fd: a connected or listening ``SOCK_STREAM`` socket.
            name: the channel's name.

        Returns:
            The channel.

        Raises:
            OSError: ``fd`` is not an open socket (``ENOTSOCK``, ``EBADF``).
            ValueError: ``fd`` is negative or not a stream socket.

        Example::

            channel = trioqio.SocketChannel.from_fd(3)
        """
        if not isinstance(fd, int) or isinstance(fd, bool) or fd < 0:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ValueError(f"from_fd needs a non-negative descriptor number, not {fd!r}")
        sock = trio.socket.socket(fileno=fd)
        try:
            channel = cls(sock, name=name)
        except BaseException:
            sock.detach()  # the caller keeps ownership of fd
            raise
        if enabled():
            emit("qio_channel_socket_new_fd", channel=channel._channel_name(), fd=fd)
        return channel

    # -- Trio stream methods ----------------------------------------------------------

    async def send_all(self, data: Buffer) -> None:
        """Send all of ``data`` (QEMU ``qio_channel_write_all``).

        Args:
            data: a bytes-like object.

        Raises:
            trio.BusyResourceError: another task is sending.
            trio.BrokenResourceError: the peer went away.
            trio.ClosedResourceError: the channel is closed, or after :meth:`send_eof`.

        Example::

            await channel.send_all(b"ping")
        """
        with self._send_guard:
            fd = self._check_open()
            if self._sock.did_shutdown_SHUT_WR:
                raise trio.ClosedResourceError("cannot send after sending EOF")
            with byte_view(data) as view:
                await send_all_fd(fd, view)

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the socket can accept more data.

        Raises:
            trio.BusyResourceError: another task is sending.
            trio.ClosedResourceError: the channel is closed.

        Example::

            await channel.wait_send_all_might_not_block()
        """
        with self._send_guard:
            fd = self._check_open()
            await trio.lowlevel.wait_writable(fd)

    async def send_eof(self) -> None:
        """Shut down the sending direction; idempotent (Trio ``send_eof``).

        Raises:
            trio.BusyResourceError: another task is sending.
            trio.ClosedResourceError: the channel is closed.

        Example::

            await channel.send_eof()
        """
        with self._send_guard:
            await trio.lowlevel.checkpoint()
            self._check_open()
            if self._sock.did_shutdown_SHUT_WR:
                return
            with translate_errors("shut down"):
                self._sock.shutdown(_stdlib_socket.SHUT_WR)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive up to ``max_bytes``; ``b""`` at end of file (QEMU ``qio_channel_read``).

        Args:
            max_bytes: the most bytes to return (default 64 KiB).

        Returns:
            At least one byte, or ``b""`` once the peer has sent EOF.

        Raises:
            ValueError: ``max_bytes`` is less than 1.
            trio.BusyResourceError: another task is receiving.
            trio.BrokenResourceError: the connection broke (e.g. reset).
            trio.ClosedResourceError: the channel is closed.

        Example::

            data = await channel.receive_some(4096)
        """
        if max_bytes is None:  # the hot path's common case, without the call
            max_bytes = DEFAULT_RECEIVE_SIZE
        else:
            max_bytes = receive_size(max_bytes, DEFAULT_RECEIVE_SIZE)
        with self._receive_guard:
            return await receive_fd(self._check_open(), max_bytes)

    async def aclose(self) -> None:
        """Close the channel; idempotent.

        A listening UNIX socket's path is unlinked first (QEMU ``socket_listen_cleanup``);
        only listening sockets do this, so a merely bound socket leaves its path alone.

        QEMU: ``qio_channel_close``.

        Raises nothing: a failed unlink is ignored and closing twice is a no-op.

        Example::

            await channel.aclose()
        """
        self._close_now()
        await trio.lowlevel.checkpoint()

    def _close_now(self) -> None:
        # aclose without its checkpoint: for a Trio task about to end anyway (the
        # listener's client teardown), where a checkpoint would only cost a pass.
        if not self._closed:
            self._closed = True
            if self._unlink_path is not None and ChannelFeature.LISTEN in self.features:
                with contextlib.suppress(OSError):
                    os.unlink(self._unlink_path)
            self._sock.close()

    # -- QEMU extras -------------------------------------------------------------------

    async def writev(self, buffers: Sequence[Buffer]) -> None:
        """Send every buffer in order with ``writev(2)``, never joining them (QEMU ``writev_all``).

        A partial write advances through the list of views; no payload byte is copied in
        user space.

        Args:
            buffers: bytes-like objects.

        Raises:
            trio.BusyResourceError: another task is sending.
            trio.BrokenResourceError: the peer went away (e.g. reset mid-write).
            trio.ClosedResourceError: the channel is closed, or after :meth:`send_eof`.

        Example::

            await channel.writev([header, page1, page2])
        """
        with self._send_guard:
            fd = self._check_open()
            if self._sock.did_shutdown_SHUT_WR:
                raise trio.ClosedResourceError("cannot send after sending EOF")
            await writev_fd(fd, writev_items(buffers))

    async def receive_exactly_or_eof(self, n: int) -> bytes | None:
        """Receive exactly ``n`` bytes, or None on a clean end of file (QEMU ``read_all_eof``).

        Reads straight into one preallocated buffer.

        Args:
            n: how many bytes.

        Returns:
            The bytes, or None if the peer closed before sending any of them.

        Raises:
            ValueError: ``n`` is negative.
            trioqio.UnexpectedEOF: the peer closed after part of them; the message says
                how many arrived.
            trio.BusyResourceError: another task is receiving.

        Example::

            header = await channel.receive_exactly_or_eof(64)
        """
        if n < 0:
            raise ValueError(f"cannot receive a negative number of bytes ({n})")
        if n == 0:
            await trio.lowlevel.checkpoint()
            return b""
        first = await self.receive_some(n)
        if len(first) == n:
            return first
        if not first:
            return None
        buffer = bytearray(n)
        got = len(first)
        buffer[:got] = first
        with self._receive_guard, memoryview(buffer) as view:
            while got < n:
                count = await receive_into_fd(self._check_open(), view[got:])
                if not count:
                    raise self._short_read(got, n)
                got += count
        return bytes(buffer)

    async def receive_exactly_into(self, buffer: Buffer) -> None:
        """Fill ``buffer`` with exactly ``len(buffer)`` bytes, read straight into it.

        ``readv(2)`` writes into ``buffer`` itself: no intermediate object and no copy.
        Cancellation points: on entry (nothing consumed) and while waiting for more input
        (the bytes read so far stay at the start of ``buffer``; none is read twice).

        QEMU: ``qio_channel_readv_all`` with the caller's iovec.

        Args:
            buffer: a writable bytes-like object.

        Raises:
            TypeError: ``buffer`` is read-only (nothing is consumed).
            trioqio.UnexpectedEOF: the peer closed before ``buffer`` was full; the message
                says how many bytes arrived.
            trio.BusyResourceError: another task is receiving.
            trio.BrokenResourceError: the connection broke (e.g. reset).
            trio.ClosedResourceError: the channel is closed.

        Example::

            packet = bytearray(512 * 1024)
            await channel.receive_exactly_into(memoryview(packet)[:length])
        """
        with self._receive_guard, byte_view(buffer) as view:
            if view.readonly:
                raise TypeError(f"cannot receive into a read-only {type(buffer).__name__}")
            got = await receive_exactly_into_fd(self._check_open(), view)
            if got < len(view):
                raise self._short_read(got, len(view))

    async def peek(self, max_bytes: int) -> bytes:
        """Return up to ``max_bytes`` of pending input without consuming it (``MSG_PEEK``).

        Waits until at least one byte (or EOF) is there.

        QEMU: ``qio_channel_readv_full`` with ``QIO_CHANNEL_READ_FLAG_MSG_PEEK``.

        Args:
            max_bytes: the most bytes to return.

        Returns:
            At least one byte, or ``b""`` at end of file.

        Raises:
            ValueError: ``max_bytes`` is less than 1.
            trioqio.UnsupportedFeature: a listening socket.
            trio.BusyResourceError: another task is receiving.

        Example::

            magic = await channel.peek(4)
        """
        self._require(ChannelFeature.READ_MSG_PEEK, "peek read")
        max_bytes = receive_size(max_bytes, max_bytes)
        with self._receive_guard:
            self._check_open()
            with translate_errors("peek at"):
                return await self._sock.recv(max_bytes, _stdlib_socket.MSG_PEEK)

    async def shutdown(self, how: Shutdown = Shutdown.BOTH) -> None:
        """Shut down reading, writing or both (QEMU ``qio_channel_shutdown``).

        Safe to call while other tasks read or write: a reader blocked in
        :meth:`receive_some` wakes with EOF after ``Shutdown.READ``/``BOTH``.

        Args:
            how: :class:`trioqio.Shutdown` READ, WRITE or BOTH.

        Raises:
            ValueError: ``how`` is not a Shutdown value.
            trio.ClosedResourceError: the channel is closed.
            trio.BrokenResourceError: the socket is not connected.

        Example::

            await channel.shutdown(trioqio.Shutdown.BOTH)
        """
        try:
            mode = _SHUT[Shutdown(how)]
        except (ValueError, KeyError):
            raise ValueError(f"not a Shutdown value: {how!r}") from None
        self._check_open()
        with translate_errors("shut down"):
            self._sock.shutdown(mode)
        await trio.lowlevel.checkpoint()

    # -- listening -----------------------------------------------------------------------

    async def accept(self) -> SocketChannel:
        """Accept one client (QEMU ``qio_channel_socket_accept``).

        Routine per-connection failures (``ECONNABORTED``, ``EPROTO``, ``EPERM``, ...) are
        retried silently, as :class:`trio.SocketListener` does; resource exhaustion
        (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``) is raised for the caller to
        handle.

        Returns:
            The client's channel, named after this one.

        Raises:
            trioqio.UnsupportedFeature: the socket is not listening.
            trio.ClosedResourceError: the channel is closed.
            trio.BusyResourceError: another task is accepting.
            OSError: any other accept failure.

        Example::

            client = await listening_channel.accept()
        """
        self._check_open()
        if ChannelFeature.LISTEN not in self.features:
            if self._is_listening():
                self.features |= ChannelFeature.LISTEN
                self.features &= ~ChannelFeature.READ_MSG_PEEK
                self._remember_path()
            self._require(ChannelFeature.LISTEN, "accept needs a listening socket")
        while True:
            if enabled():
                emit("qio_channel_socket_accept", channel=self._channel_name())
            try:
                sock, _ = await self._sock.accept()
            except OSError as exc:
                if enabled():
                    emit("qio_channel_socket_accept_fail", channel=self._channel_name())
                if exc.errno in CLOSED_ERRNOS:
                    raise trio.ClosedResourceError("the listening channel was closed") from None
                if exc.errno not in ROUTINE_ACCEPT_ERRNOS:
                    raise
                continue
            client = SocketChannel._from_accepted(sock, self._family, name=self.name)
            if enabled():
                emit(
                    "qio_channel_socket_accept_complete",
                    channel=self._channel_name(),
                    fd=sock.fileno(),
                )
            return client

    def __repr__(self) -> str:
        return f"<SocketChannel {self._channel_name()!r} fd={self._sock.fileno()}>"


@typing.final
class SocketChannelListener(trio.abc.Listener[SocketChannel]):
    """A listening :class:`SocketChannel` as a :class:`trio.abc.Listener`.

    :meth:`accept` returns each client as a :class:`SocketChannel`; closing the listener
    closes the channel (and unlinks a UNIX socket's path). This is what
    :meth:`trioqio.NetListener.open` and :meth:`~trioqio.NetListener.add` serve, so a
    listener of trioqio's own sockets fits anywhere Trio takes a listener
    (:func:`trio.serve_listeners`, :class:`trio.SSLListener`, ...).

    QEMU: a listening ``QIOChannelSocket`` (``qio_channel_socket_listen_sync`` +
    ``qio_channel_socket_accept``).

    Args:
        channel: a listening channel; the listener owns it from now on.

    Raises:
        TypeError: ``channel`` is not a :class:`SocketChannel`.
        ValueError: ``channel`` is not listening.

    Example::

        sock = trio.socket.socket()
        await sock.bind(("127.0.0.1", 0))
        sock.listen()
        listener = trioqio.SocketChannelListener(trioqio.SocketChannel(sock))
        assert isinstance(listener, trio.abc.Listener)
        await listener.aclose()
    """

    __slots__ = ("channel",)

    def __init__(self, channel: SocketChannel) -> None:
        if not isinstance(channel, SocketChannel):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(
                f"SocketChannelListener needs a SocketChannel, not {type(channel).__name__}"
            )
        if ChannelFeature.LISTEN not in channel.features:
            raise ValueError(f"{channel!r} is not listening")
        #: The listening channel.
        self.channel = channel

    async def accept(self) -> SocketChannel:
        """Accept one client (QEMU ``qio_channel_socket_accept``).

        Returns:
            The client's channel, named after the listening one.

        Raises:
            trio.ClosedResourceError: the listener is closed.
            trio.BusyResourceError: another task is accepting.
            OSError: resource exhaustion (``EMFILE``, ...) or another accept failure;
                routine per-connection failures are retried (see
                :meth:`SocketChannel.accept`).

        Example::

            client = await socket_listener.accept()
        """
        return await self.channel.accept()

    async def aclose(self) -> None:
        """Close the listening channel (a UNIX socket's path is unlinked).

        Raises nothing: closing twice is a no-op.

        Example::

            await socket_listener.aclose()
        """
        await self.channel.aclose()

    def __repr__(self) -> str:
        return f"<SocketChannelListener {self.channel!r}>"
