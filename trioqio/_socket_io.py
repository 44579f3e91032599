"""Non-blocking socket I/O loops for :class:`~trioqio.SocketChannel` (QEMU ``io/channel-socket.c``).

QEMU's ``qio_channel_socket_readv``/``writev`` call ``recvmsg``/``sendmsg`` once and
return ``QIO_CHANNEL_ERR_BLOCK`` on ``EAGAIN``; the ``*_all`` helpers in
``io/channel.c`` then wait on a watch and loop. These functions are those loops for Trio:
try the system call first, park in :func:`trio.lowlevel.wait_readable` /
:func:`~trio.lowlevel.wait_writable` only when it would block, and keep Trio's checkpoint
rules (a cancellable point before, a scheduling point after a call that did not wait).
They also build and take apart ``SCM_RIGHTS`` control messages with QEMU's rules.

Differences from QEMU: the loops run on the descriptor with ``os.write``/``os.writev``/
``os.read``/``os.readv`` (the same system calls ``send``/``sendmsg``/``recv`` make on a
stream socket without flags) and translate errors to Trio's stream errors.
"""

from __future__ import annotations

import array
import contextlib
import errno
import os
import socket as _stdlib_socket
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "CLOSED_ERRNOS",
    "DEFAULT_RECEIVE_SIZE",
    "MAX_FDS",
    "RECVMSG_FLAGS",
    "ROUTINE_ACCEPT_ERRNOS",
    "byte_view",
    "receive_exactly_into_fd",
    "receive_fd",
    "receive_into_fd",
    "received_fds",
    "rights_message",
    "rights_space",
    "send_all_fd",
    "translate_errors",
    "writev_fd",
    "writev_items",
]

#: The most descriptors one message may carry (QEMU ``SOCKET_MAX_FDS``).
MAX_FDS = 16
#: What ``receive_some()`` asks for when not told (as Trio's SocketStream).
DEFAULT_RECEIVE_SIZE = 65536
#: ``recvmsg`` flags for descriptor passing: received fds are close-on-exec at once.
RECVMSG_FLAGS = getattr(_stdlib_socket, "MSG_CMSG_CLOEXEC", 0)

# writev(2) refuses more than IOV_MAX (1024 on Linux) buffers in one call.
_IOV_MAX = min(getattr(os, "IOV_MAX", 1024), 1024)
_INT_SIZE = array.array("i").itemsize

#: errnos meaning "this descriptor is no longer ours".
CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})
#: accept() failures about one connection, retried silently (as trio.SocketListener).
ROUTINE_ACCEPT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ENOSR",
        "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT",
        "ETIMEDOUT",
        "ECONNRESET",
    )
    if hasattr(errno, name)
)

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_wait_readable = trio.lowlevel.wait_readable
_wait_writable = trio.lowlevel.wait_writable


def stream_error(exc: OSError, what: str) -> Exception:
    """Translate a socket ``OSError`` into Trio's closed/broken stream errors."""
    if exc.errno in CLOSED_ERRNOS:
        return trio.ClosedResourceError("the socket channel was already closed")
    return trio.BrokenResourceError(f"unable to {what} socket: {exc}")


@contextlib.contextmanager
def translate_errors(what: str) -> Generator[None, None, None]:
    """Raise :func:`stream_error` for an ``OSError`` inside the block."""
    try:
        yield
    except OSError as exc:
        raise stream_error(exc, what) from exc


def byte_view(data: Buffer) -> memoryview:
    """A flat unsigned-byte view of any buffer (so ``len()`` counts bytes)."""
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


async def send_all_fd(fd: int, view: memoryview) -> None:
    """Write all of ``view`` to the non-blocking descriptor ``fd``."""
    await _checkpoint_if_cancelled()
    total = len(view)
    sent = 0
    waited = False
    while sent < total:
        try:
            sent += os.write(fd, view[sent:] if sent else view)
        except BlockingIOError:
            waited = True
            await _wait_writable(fd)
        except OSError as exc:
            raise stream_error(exc, "write to") from exc
    if not waited:
        await _cancel_shielded_checkpoint()


def writev_items(buffers: Sequence[Buffer]) -> list[bytes | memoryview]:
    """The buffers as ``writev`` items whose ``len()`` counts bytes.

    ``bytes`` and flat byte memoryviews (the common cases: pages, page views) pass through
    untouched; building a memoryview per buffer would cost more than the system call
    saves for small pages.
    """
    return [
        item
        if type(item) is bytes
        or (type(item) is memoryview and item.itemsize == 1 and item.ndim == 1)
        else byte_view(item)
        for item in buffers
    ]


async def writev_fd(fd: int, views: list[bytes | memoryview]) -> None:
    """Write every buffer, in order, with ``writev(2)``; ``views`` is consumed.

    A partial write drops the buffers written whole and trims the one written in part
    (a memoryview slice), so no payload byte is copied. Empty buffers are harmless.
    """
    await _checkpoint_if_cancelled()
    waited = False
    start = 0
    count = len(views)
    remaining = sum(map(len, views))  # writev_items made len() count bytes
    # Pass about twice as many buffers as the last call took: os.writev acquires every
    # buffer it is given, and a socket takes far less than 250 pages per call.
    batch = _IOV_MAX
    while start < count:
        try:
            sent = os.writev(fd, views[start : start + batch])
        except BlockingIOError:
            waited = True
            await _wait_writable(fd)
            continue
        except OSError as exc:
            raise stream_error(exc, "write to") from exc
        remaining -= sent
        if not remaining:
            break  # all written: no need to walk the buffers
        first = start
        while start < count and sent >= len(views[start]):
            sent -= len(views[start])
            start += 1
        batch = min(_IOV_MAX, max(16, 2 * (start - first + 1)))
        if sent:
            views[start] = memoryview(views[start])[sent:]
    if not waited:
        await _cancel_shielded_checkpoint()


async def receive_fd(fd: int, max_bytes: int) -> bytes:
    """Read up to ``max_bytes`` (at least one, or ``b""`` at EOF) from ``fd``."""
    await _checkpoint_if_cancelled()
    try:
        data = os.read(fd, max_bytes)
    except BlockingIOError:
        pass
    except OSError as exc:
        raise stream_error(exc, "read from") from exc
    else:
        await _cancel_shielded_checkpoint()
        return data
    while True:
        await _wait_readable(fd)
        try:
            return os.read(fd, max_bytes)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise stream_error(exc, "read from") from exc


async def receive_into_fd(fd: int, view: memoryview) -> int:
    """Read into ``view``; return the count (0 at EOF). Waits for readability first.

    Used after a short read, when the socket is most likely drained already.
    """
    while True:
        await _wait_readable(fd)
        try:
            return os.readv(fd, [view])
        except BlockingIOError:
            pass
        except OSError as exc:
            raise stream_error(exc, "read from") from exc


async def receive_exactly_into_fd(fd: int, view: memoryview) -> int:
    """Fill ``view`` from ``fd`` with ``readv``; return ``len(view)``, or less only at EOF.

    Tries the read first and parks in ``wait_readable`` only on "would block". Cancellation
    points: the check on entry (nothing read yet) and each wait (the bytes read so far are
    in ``view``; nothing is read twice or dropped by the wait itself).
    """
    await _checkpoint_if_cancelled()
    total = len(view)
    got = 0
    waited = False
    while got < total:
        try:
            count = os.readv(fd, [view[got:] if got else view])
        except BlockingIOError:
            waited = True
            await _wait_readable(fd)
            continue
        except OSError as exc:
            raise stream_error(exc, "read from") from exc
        if not count:
            break
        got += count
    if not waited:
        await _cancel_shielded_checkpoint()
    return got


# -- SCM_RIGHTS ------------------------------------------------------------------------


def rights_message(fds: Sequence[int]) -> list[tuple[int, int, Any]]:
    """The ``sendmsg`` control data carrying ``fds``."""
    return [(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SCM_RIGHTS, array.array("i", fds))]


def rights_space(max_fds: int) -> int:
    """The ``recvmsg`` control buffer size for up to ``max_fds`` descriptors."""
    return _stdlib_socket.CMSG_SPACE(max_fds * _INT_SIZE)


def received_fds(
    ancdata: list[tuple[int, int, bytes]], msg_flags: int, max_fds: int, channel: str
) -> list[int]:
    """Take the descriptors out of ``recvmsg`` control data, QEMU's way.

    They are made close-on-exec and blocking. If the control data was truncated (the
    peer sent more than ``max_fds``) or anything else fails, every descriptor that did
    arrive is closed before the error is raised.

    Raises:
        trio.BrokenResourceError: the control data was truncated.
    """
    fds: list[int] = []
    try:
        for level, kind, payload in ancdata:
            if level == _stdlib_socket.SOL_SOCKET and kind == _stdlib_socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % _INT_SIZE
                fds.extend(array.array("i", payload[:usable]))
        if msg_flags & _stdlib_socket.MSG_CTRUNC:
            raise trio.BrokenResourceError(
                f"{channel}: the peer sent more than {max_fds} file descriptors; "
                f"the {len(fds)} that arrived were closed"
            )
        for fd in fds:
            os.set_inheritable(fd, False)
            os.set_blocking(fd, True)
    except BaseException:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    return fds
