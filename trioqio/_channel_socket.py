"""The socket channel (QEMU ``io/channel-socket.c``).

:class:`SocketChannel` wraps a connected or listening Trio socket, as QEMU's
``QIOChannelSocket`` wraps a descriptor. What ``qio_channel_socket_set_fd`` does, the
constructor does: record the family, decide the features (descriptor passing on UNIX
sockets, listening, peeking), and for TCP set Trio's ``SocketStream`` options. The stream
methods go straight to the non-blocking descriptor (``os.write``/``os.writev``/``os.read``/
``os.readv``) and park in ``trio.lowlevel.wait_readable``/``wait_writable`` only when the
kernel says "would block", which is what QEMU's ``readv``/``writev`` plus a watch do; those
loops, and the ``SCM_RIGHTS`` packing that descriptor passing uses, live in
``_socket_io.py``. ``MSG_PEEK`` and descriptor passing go through Trio's
``recv``/``recvmsg``/``sendmsg``.

State: a channel is open until :meth:`SocketChannel.aclose` (``_closed``, and the socket's
``fileno()`` turning -1, which every operation checks); the sending direction's EOF is the
Trio socket's own ``did_shutdown_SHUT_WR``. One sender and one receiver may run at once;
each direction has a ``Busy`` guard (``_conflict.py``). :meth:`SocketChannel.shutdown`
takes no guard: QEMU's migration calls it from another task to wake a blocked reader.

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
import struct
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ._abc import Channel, ChannelFeature, Shutdown
from ._address import SocketAddress, address_from_sockaddr
from ._conflict import Busy
from ._errors import UnsupportedFeature, receive_size
from ._socket_io import (
    CLOSED_ERRNOS,
    DEFAULT_RECEIVE_SIZE,
    MAX_FDS,
    RECVMSG_FLAGS,
    ROUTINE_ACCEPT_ERRNOS,
    byte_view,
    receive_exactly_into_fd,
    receive_fd,
    receive_into_fd,
    received_fds,
    rights_message,
    rights_space,
    send_all_fd,
    translate_errors,
    writev_fd,
    writev_items,
)
from ._trace import emit, enabled

if TYPE_CHECKING:
    from typing_extensions import Buffer, Self

__all__ = ["MAX_FDS", "SocketChannel", "SocketChannelListener"]

_TCP_FAMILIES = (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6)
_NOTSENT_LOWAT: int | None = getattr(_stdlib_socket, "TCP_NOTSENT_LOWAT", None)


def _features(unix: bool, listening: bool) -> ChannelFeature:
    features = ChannelFeature.SHUTDOWN
    if unix:
        features |= ChannelFeature.FD_PASS
    if listening:
        return features | ChannelFeature.LISTEN
    return features | ChannelFeature.READ_MSG_PEEK


# Computed once: combining flags costs about a microsecond per operation, per client.
_FEATURES = {
    (unix, listening): _features(unix, listening)
    for unix in (False, True)
    for listening in (False, True)
}


_SHUT = {
    Shutdown.READ: _stdlib_socket.SHUT_RD,
    Shutdown.WRITE: _stdlib_socket.SHUT_WR,
    Shutdown.BOTH: _stdlib_socket.SHUT_RDWR,
}


@typing.final
class SocketChannel(Channel):
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

    def __init__(self, sock: trio.socket.SocketType, *, name: str = "") -> None:
        if not isinstance(sock, trio.socket.SocketType):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"SocketChannel needs a Trio socket, not {type(sock).__name__}")
        if sock.type != _stdlib_socket.SOCK_STREAM:
            raise ValueError(f"SocketChannel needs a SOCK_STREAM socket, not {sock.type!r}")
        self._sock = sock
        self._setup(name, sock.family, listening=self._is_listening())

    @classmethod
    def _from_accepted(cls, sock: trio.socket.SocketType, family: int, *, name: str = "") -> Self:
        # For accept(): the kernel hands back a connected SOCK_STREAM socket of the
        # listener's family, so the type check, the family lookup and the
        # SO_ACCEPTCONN probe of __init__ would only repeat what is known.
        channel = cls.__new__(cls)
        channel._sock = sock
        channel._setup(name, family, listening=False)
        return channel

    def _setup(self, name: str, family: int, *, listening: bool) -> None:
        # Runs once per accepted client, so it avoids work a client may never need: the
        # guards format their message only if a conflict happens, and the feature set
        # comes from a table.
        sock = self._sock
        self.name = name
        label = name or "SocketChannel"
        self._send_guard = Busy("sending on socket channel", label)
        self._receive_guard = Busy("receiving on socket channel", label)
        self._closed = False
        self._unlink_path: str | None = None
        self._family = family
        self.features: ChannelFeature = _FEATURES[family == _stdlib_socket.AF_UNIX, listening]
        if listening:
            self._remember_path()
        elif family in _TCP_FAMILIES:
            # Trio's SocketStream defaults: no Nagle delay, a small unsent backlog. A
            # socket that refuses either option keeps working without it.
            try:  # noqa: SIM105 - per client: suppress() would cost an object and two calls
                sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
            except OSError:
                pass
            if _NOTSENT_LOWAT is not None:
                try:  # noqa: SIM105 - as above
                    sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _NOTSENT_LOWAT, 2**14)
                except OSError:
                    pass
        if enabled():
            emit("qio_channel_socket_new", channel=label, fd=sock.fileno())

    def _is_listening(self) -> bool:
        try:
            return bool(
                self._sock.getsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_ACCEPTCONN)
            )
        except OSError:
            return False

    def _remember_path(self) -> None:
        if self._family != _stdlib_socket.AF_UNIX:
            return
        with contextlib.suppress(OSError):
            name = self._sock.getsockname()
            if isinstance(name, bytes):
                name = os.fsdecode(name)
            if isinstance(name, str) and name and not name.startswith("\0"):
                self._unlink_path = name

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

    # -- properties ----------------------------------------------------------------------

    @property
    def socket(self) -> trio.socket.SocketType:
        """The wrapped Trio socket (owned by the channel)."""
        return self._sock

    @property
    def local_address(self) -> SocketAddress:
        """The address the socket is bound to (QEMU ``get_local_address``).

        Raises:
            trio.ClosedResourceError: the channel is closed.
        """
        self._check_open()
        return address_from_sockaddr(self._family, self._sock.getsockname())

    @property
    def remote_address(self) -> SocketAddress:
        """The peer's address (QEMU ``get_remote_address``).

        Raises:
            trio.ClosedResourceError: the channel is closed.
            OSError: the socket is not connected (``ENOTCONN``), e.g. a listening one.
        """
        self._check_open()
        return address_from_sockaddr(self._family, self._sock.getpeername())

    @property
    def peer_pid(self) -> int:
        """The peer process's pid, from ``SO_PEERCRED`` (UNIX sockets only).

        QEMU: ``qio_channel_get_peerpid``.

        Raises:
            trioqio.UnsupportedFeature: not a UNIX socket.
            trio.ClosedResourceError: the channel is closed.
        """
        if self._family != _stdlib_socket.AF_UNIX or not hasattr(_stdlib_socket, "SO_PEERCRED"):
            raise UnsupportedFeature(
                "PEER_PID", self._channel_name(), "peer pid needs a UNIX socket"
            )
        self._check_open()
        raw = self._sock.getsockopt(
            _stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_PEERCRED, struct.calcsize("3i")
        )
        pid, _uid, _gid = struct.unpack("3i", raw)
        return int(pid)

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

    # -- descriptor passing (SCM_RIGHTS) ---------------------------------------------

    async def send_with_fds(self, data: Buffer, fds: Sequence[int]) -> None:
        """Send ``data`` with file descriptors attached (``SCM_RIGHTS``, UNIX only).

        The descriptors travel with the first part of ``data``; the rest follows as
        ordinary bytes. Everything is checked before any byte leaves.

        QEMU: ``qio_channel_writev_full_all`` with fds.

        Args:
            data: at least one byte to carry the descriptors.
            fds: up to 16 open descriptors; the caller keeps (and closes) its own.

        Raises:
            trioqio.UnsupportedFeature: not a UNIX socket (nothing was sent).
            ValueError: more than 16 descriptors, a bad descriptor number, or empty
                ``data`` with descriptors (nothing was sent).
            trio.BusyResourceError: another task is sending.
            trio.BrokenResourceError: the peer went away.

        Example::

            await channel.send_with_fds(b"x", [fd])
        """
        self._require(ChannelFeature.FD_PASS, "file descriptor passing needs a UNIX socket")
        fd_list = list(fds)
        if len(fd_list) > MAX_FDS:
            raise ValueError(f"only {MAX_FDS} file descriptors can be sent, got {len(fd_list)}")
        for fd in fd_list:
            if not isinstance(fd, int) or isinstance(fd, bool) or fd < 0:  # pyright: ignore[reportUnnecessaryIsInstance]
                raise ValueError(f"not a file descriptor: {fd!r}")
        view = byte_view(data)
        if not fd_list:
            await self.send_all(view)
            return
        if not len(view):
            raise ValueError("at least one byte of data is needed to carry file descriptors")
        with self._send_guard:
            self._check_open()
            if self._sock.did_shutdown_SHUT_WR:
                raise trio.ClosedResourceError("cannot send after sending EOF")
            with translate_errors("write to"):
                sent = await self._sock.sendmsg([view], rights_message(fd_list))
        if sent < len(view):
            await self.send_all(view[sent:])

    async def receive_with_fds(
        self, max_bytes: int, max_fds: int = MAX_FDS
    ) -> tuple[bytes, list[int]]:
        """Receive data and the file descriptors sent with it (UNIX only).

        Received descriptors are close-on-exec and blocking (QEMU's default). If anything
        goes wrong after descriptors arrived they are closed before the error is raised,
        so none leak.

        QEMU: ``qio_channel_readv_full`` with fds.

        Args:
            max_bytes: the most bytes to return.
            max_fds: the most descriptors to accept (1..16).

        Returns:
            ``(data, fds)``; the caller owns the descriptors. ``(b"", [])`` at end of file.

        Raises:
            trioqio.UnsupportedFeature: not a UNIX socket.
            ValueError: ``max_bytes`` < 1 or ``max_fds`` outside 1..16.
            trio.BrokenResourceError: the connection broke, or the peer sent more
                descriptors than ``max_fds`` (those that arrived were closed).
            trio.BusyResourceError: another task is receiving.

        Example::

            data, fds = await channel.receive_with_fds(1024)
        """
        self._require(ChannelFeature.FD_PASS, "file descriptor passing needs a UNIX socket")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes}")
        if not 1 <= max_fds <= MAX_FDS:
            raise ValueError(f"max_fds must be in 1..{MAX_FDS}, not {max_fds}")
        with self._receive_guard:
            self._check_open()
            with translate_errors("read from"):
                data, ancdata, msg_flags, _ = await self._sock.recvmsg(
                    max_bytes, rights_space(max_fds), RECVMSG_FLAGS
                )
        return data, received_fds(ancdata, msg_flags, max_fds, self._channel_name())

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

    # -- the open check and the socket-option hints -------------------------------------

    def _check_open(self) -> int:
        fd = self._sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError(f"socket channel {self._channel_name()!r} is closed")
        return fd

    def set_delay(self, enabled: bool) -> None:
        """Turn Nagle's algorithm on or off (a hint; ignored off TCP).

        QEMU: ``qio_channel_set_delay``.

        Args:
            enabled: False sets ``TCP_NODELAY`` (send small writes at once).

        Raises nothing: a socket that refuses the option keeps its setting.

        Example::

            channel.set_delay(False)
        """
        if self._family in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
            with contextlib.suppress(OSError):
                self._sock.setsockopt(
                    _stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, int(not enabled)
                )

    def set_cork(self, enabled: bool) -> None:
        """Hold back partial frames with ``TCP_CORK`` (a hint; ignored off Linux TCP).

        QEMU: ``qio_channel_set_cork``.

        Args:
            enabled: True to cork, False to uncork (which flushes).

        Raises nothing: a socket that refuses the option keeps its setting.

        Example::

            channel.set_cork(True)
        """
        cork = getattr(_stdlib_socket, "TCP_CORK", None)
        if cork is not None and self._family in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
            with contextlib.suppress(OSError):
                self._sock.setsockopt(_stdlib_socket.IPPROTO_TCP, cork, int(enabled))

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
        self.channel: SocketChannel = channel

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
