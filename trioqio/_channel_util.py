"""Pick a channel kind for a bare file descriptor (QEMU ``io/channel-util.c``).

QEMU's ``qio_channel_new_fd`` looks at the fd with ``fstat`` and wraps a socket in a
QIOChannelSocket and anything else in a QIOChannelFile. trioqio does the same; on failure
the caller keeps the fd, as in QEMU.
"""

from __future__ import annotations

import os
import stat

from ._abc import Channel
from ._channel_file import FileChannel

__all__ = ["channel_from_fd"]


def channel_from_fd(fd: int, *, name: str | None = None) -> Channel:
    """Wrap ``fd`` in the channel kind that fits it (QEMU ``qio_channel_new_fd``).

    A socket becomes a :class:`trioqio.SocketChannel`; a pipe, FIFO, device or regular file
    a :class:`trioqio.FileChannel`. On success the channel owns ``fd``; on failure the
    caller still does.

    Args:
        fd: an open descriptor.
        name: a name for errors and traces.

    Returns:
        The channel.

    Raises:
        OSError: ``fd`` is not open (``EBADF``).
        IsADirectoryError: ``fd`` is a directory.
        ValueError: ``fd`` is a socket that is not a stream socket.

    Example::

        channel = trioqio.channel_from_fd(int(os.environ["LISTEN_FD"]))
    """
    mode = os.fstat(fd).st_mode
    if stat.S_ISSOCK(mode):
        # Imported here: the socket module is the larger one and only needed for sockets.
        from ._channel_socket import SocketChannel

        return SocketChannel.from_fd(fd, name=name or "")
    return FileChannel(fd, name=name)
