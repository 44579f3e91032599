"""Descriptor passing on a socket channel (QEMU ``io/channel-socket.c``, ``SCM_RIGHTS``).

QEMU's ``qio_channel_socket_writev``/``readv`` attach and collect ``SCM_RIGHTS`` control
messages when file descriptors travel with the data. :class:`FdPassingSocket` is that part
of :class:`~trioqio.SocketChannel`: :meth:`~FdPassingSocket.send_with_fds` and
:meth:`~FdPassingSocket.receive_with_fds`, built on the control-message helpers in
``_socket_io.py``.

Differences from QEMU: received descriptors are always close-on-exec; a control message
truncated because the peer sent more descriptors than asked for is an error (the
descriptors that did arrive are closed) instead of being dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ._abc import ChannelFeature
from ._socket_io import (
    MAX_FDS,
    RECVMSG_FLAGS,
    byte_view,
    received_fds,
    rights_message,
    rights_space,
    translate_errors,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

from ._socket_base import SocketChannelBase

__all__ = ["FdPassingSocket"]


class FdPassingSocket(SocketChannelBase):
    """A socket channel that can pass file descriptors (the methods; UNIX sockets only)."""

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
