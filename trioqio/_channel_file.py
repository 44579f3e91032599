"""File channels: pipes, FIFOs, devices and regular files (QEMU ``io/channel-file.c``).

QEMU's QIOChannelFile wraps one fd and calls ``readv``/``writev`` on it, blocking or not.
trioqio splits the fd kinds by what the kernel can wait for:

- pipes, FIFOs, character devices and sockets can be non-blocking and polled, so they go
  through :class:`trio.lowlevel.FdStream` (``wait_readable``/``wait_writable``);
- regular files and block devices are always "ready" to poll and block in ``read`` anyway,
  so they go through :func:`trio.to_thread.run_sync`, one call per chunk.

Differences from QEMU, deliberate:

- ``SEEKABLE`` (with :meth:`FileChannel.seek`, ``pread``, ``pwrite``) is set for regular
  files and block devices only; QEMU also sets it for character devices whose ``lseek``
  happens to succeed (``/dev/null``), which a non-blocking stream cannot honour.
- A one-way fd (opened read-only or write-only) raises :class:`trioqio.UnsupportedFeature`
  for the missing direction instead of QEMU's ``EBADF`` "Unable to write to file".
- ``send_eof`` exists (Trio's half-close): on a write-only pipe it closes the fd, so the
  reader sees end of file; on anything else it just refuses further writes.
- Opening a path runs ``open(2)`` in a worker thread (a FIFO's open blocks until its peer
  opens it); cancelling abandons the thread, which closes the fd it eventually gets.
"""

from __future__ import annotations

import errno
import operator
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, final

import trio

from ._abc import Channel, ChannelFeature
from ._conflict import Busy
from ._errors import UnsupportedFeature
from ._file_io import access_mode, open_abandonable, pwrite_all, read_fd, write_all_fd
from ._trace import emit, enabled

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["FileChannel", "open_file"]

T = TypeVar("T")

# One thread call moves at most this much, so a huge send_all stays cancellable between
# chunks (a chunk in a thread cannot be interrupted).
_THREAD_CHUNK = 1 << 20
_DEFAULT_RECEIVE_SIZE = 65536


@final
class FileChannel(Channel):
    """A channel over a file descriptor: a pipe, FIFO, device or regular file.

    Pipes, FIFOs and character devices are used non-blocking through
    :class:`trio.lowlevel.FdStream`; regular files and block devices through worker threads,
    with :meth:`seek`, :meth:`pread` and :meth:`pwrite` (``ChannelFeature.SEEKABLE``).

    Half-close: :meth:`send_eof` on a write-only pipe or FIFO closes the fd, so the reader
    sees end of file. On a read-write fd or a regular file it only forbids further writes
    (``send_all`` then raises :class:`trio.ClosedResourceError`); reading goes on. On a
    read-only fd it does nothing.

    One-way fds: the direction the fd was not opened for raises
    :class:`trioqio.UnsupportedFeature` (feature ``"READ"`` or ``"WRITE"``). Use
    :func:`trioqio.testing.check_one_way_channel` on a ``(write_end, read_end)`` pair.

    .. warning::
        For pipes, FIFOs and devices the channel sets ``O_NONBLOCK``, which belongs to the
        open file description: every other fd sharing it (a ``dup``, a parent's copy of an
        inherited stdin) sees it until the channel closes and restores the old mode.

    QEMU: ``QIOChannelFile`` (``qio_channel_file_new_fd``).

    Args:
        fd: the descriptor; the channel owns it from now on and closes it in :meth:`aclose`.
        name: a name for errors and traces (default ``"file-fd-N"``).

    Raises:
        IsADirectoryError: ``fd`` refers to a directory (the fd stays the caller's).
        OSError: ``fd`` is not an open descriptor (the same).

    Example::

        read_fd, write_fd = os.pipe()
        reader, writer = trioqio.FileChannel(read_fd), trioqio.FileChannel(write_fd)
        await writer.send_all(b"hello")
    """

    def __init__(self, fd: int, *, name: str | None = None) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, f"fd {fd} is a directory, not a file")
        access = access_mode(fd)
        self.name: str = name if name is not None else f"file-fd-{fd}"
        self._readable = access in (os.O_RDONLY, os.O_RDWR)
        self._writable = access in (os.O_WRONLY, os.O_RDWR)
        self._threaded = stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)
        self._closed = False
        self._eof_sent = False
        # One task per direction, worded as every trioqio channel words it.
        self._send_guard = Busy("sending on file channel", self.name)
        self._receive_guard = Busy("receiving on file channel", self.name)
        # Threaded mode: the fd (closed once no thread uses it) and the thread count.
        self._fd = fd
        self._in_flight = 0
        self._idle = trio.Event()
        self._stream: trio.lowlevel.FdStream | None = None
        features = ChannelFeature.NONE
        if self._threaded:
            try:
                os.lseek(fd, 0, os.SEEK_CUR)
            except OSError:
                pass
            else:
                features |= ChannelFeature.SEEKABLE
        else:
            self._stream = trio.lowlevel.FdStream(fd)
        self.features = features
        if enabled():
            emit("qio_channel_file_new_fd", ioc=self.name, fd=fd)

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def from_fd(cls, fd: int, *, dup: bool = False, name: str | None = None) -> FileChannel:
        """Wrap an existing descriptor (QEMU ``qio_channel_file_new_fd`` / ``new_dupfd``).

        Args:
            fd: the descriptor.
            dup: False (default): the channel takes ownership of ``fd``. True: the channel
                works on a close-on-exec duplicate and ``fd`` stays the caller's.
            name: a name for errors and traces.

        Returns:
            The channel.

        Raises:
            OSError: ``fd`` is not open ("could not dup fd N" with ``dup=True``).
            IsADirectoryError: ``fd`` is a directory.

        Example::

            channel = trioqio.FileChannel.from_fd(sys.stdout.fileno(), dup=True)
        """
        if not dup:
            return cls(fd, name=name)
        try:
            copy = os.dup(fd)  # os.dup makes the copy non-inheritable (close-on-exec)
        except OSError as exc:
            raise OSError(exc.errno, f"could not dup fd {fd}: {exc.strerror}") from exc
        try:
            return cls(copy, name=name if name is not None else f"file-fd-{copy}")
        except BaseException:
            os.close(copy)
            raise

    # -- properties ---------------------------------------------------------------------

    @property
    def readable(self) -> bool:
        """True when the fd was opened for reading."""
        return self._readable

    @property
    def writable(self) -> bool:
        """True when the fd was opened for writing."""
        return self._writable

    def fileno(self) -> int:
        """Return the underlying descriptor (-1 once closed).

        Returns:
            The fd; the channel still owns it.

        Raises nothing: a closed channel answers -1.

        Example::

            os.fstat(channel.fileno())
        """
        if self._closed:
            return -1
        return self._stream.fileno() if self._stream is not None else self._fd

    # -- Trio stream API ----------------------------------------------------------------

    def _check_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: channel is closed")
        if not self._writable:
            raise UnsupportedFeature("WRITE", self.name, "the fd was opened read-only")
        if self._eof_sent:
            raise trio.ClosedResourceError(f"{self.name}: cannot send after send_eof()")

    async def send_all(self, data: Buffer) -> None:
        """Write all of ``data`` (QEMU ``qio_channel_write_all``).

        Args:
            data: bytes-like.

        Raises:
            trio.ClosedResourceError: the channel was closed, or ``send_eof`` was called.
            trio.BrokenResourceError: the reader went away (``EPIPE``) or writing failed.
            trio.BusyResourceError: another task is sending.
            trioqio.UnsupportedFeature: the fd is read-only.
        """
        with self._send_guard:
            self._check_send()
            with memoryview(data) as view, view.cast("B") as octets:
                if self._stream is not None:
                    await self._stream.send_all(octets)
                    return
                if not len(octets):
                    await trio.lowlevel.checkpoint()
                for start in range(0, len(octets), _THREAD_CHUNK):
                    chunk = octets[start : start + _THREAD_CHUNK]
                    await self._in_thread(write_all_fd, self._fd, chunk, "write to file")

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until a write could proceed (a regular file is always ready).

        Raises:
            trio.ClosedResourceError: the channel was closed.
            trio.BusyResourceError: another task is sending.
            trioqio.UnsupportedFeature: the fd is read-only.

        Example::

            await channel.wait_send_all_might_not_block()
        """
        with self._send_guard:
            self._check_send()
            if self._stream is not None:
                await self._stream.wait_send_all_might_not_block()
            else:
                await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Read up to ``max_bytes``; ``b""`` at end of file.

        Args:
            max_bytes: the most bytes to return (default 64 KiB); must be >= 1.

        Returns:
            The bytes read.

        Raises:
            trio.ClosedResourceError: the channel was closed.
            trio.BusyResourceError: another task is receiving.
            trioqio.UnsupportedFeature: the fd is write-only.
            TypeError: ``max_bytes`` is not an integer.
            ValueError: ``max_bytes`` is less than 1.
            OSError: the read failed.

        Example::

            async with await trioqio.open_file("/etc/hostname", os.O_RDONLY) as channel:
                data = await channel.receive_some(4096)
        """
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)  # TypeError for 1.5, as Trio's streams
            if max_bytes < 1:
                raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        with self._receive_guard:
            if self._closed:
                raise trio.ClosedResourceError(f"{self.name}: channel is closed")
            if not self._readable:
                raise UnsupportedFeature("READ", self.name, "the fd was opened write-only")
            if self._stream is not None:
                return await self._stream.receive_some(max_bytes)
            size = max_bytes if max_bytes is not None else _DEFAULT_RECEIVE_SIZE
            return await self._in_thread(read_fd, self._fd, size, "read from file")

    async def send_eof(self) -> None:
        """End the sending direction (see the class docstring for what that means per kind).

        Calling it again is a no-op.

        Raises:
            trio.ClosedResourceError: the channel was closed.
            trio.BusyResourceError: another task is sending.

        Example::

            await channel.send_all(b"last record")
            await channel.send_eof()
        """
        with self._send_guard:
            if self._closed:
                raise trio.ClosedResourceError(f"{self.name}: channel is closed")
            if self._writable and not self._eof_sent:
                self._eof_sent = True
                if self._stream is not None and not self._readable:
                    # The only way to tell a pipe's reader "no more" is to close our end.
                    self._stream.close()
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Close the channel and its fd; idempotent (QEMU ``qio_channel_close``).

        A task blocked in this channel gets :class:`trio.ClosedResourceError`. In threaded
        mode the fd is closed once the worker thread using it returns, so it is never
        closed under a running ``read``/``write``.

        Raises:
            OSError: closing the fd failed (it is closed anyway).

        Example::

            await channel.aclose()
            await channel.aclose()  # no-op
        """
        if not self._closed:
            self._closed = True
            if self._stream is not None:
                self._stream.close()
            elif self._in_flight == 0:
                self._close_fd()
            else:
                # A worker thread still uses the fd; the last one to return closes it.
                with trio.CancelScope(shield=True):
                    await self._idle.wait()
        await trio.lowlevel.checkpoint()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    # -- random access (SEEKABLE) -------------------------------------------------------

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the file offset (QEMU ``qio_channel_io_seek``).

        Args:
            offset: where to, relative to ``whence``.
            whence: ``os.SEEK_SET``, ``os.SEEK_CUR`` or ``os.SEEK_END``.

        Returns:
            The new offset from the start of the file.

        Raises:
            trioqio.UnsupportedFeature: the channel is not ``SEEKABLE`` (a pipe, a device).
            OSError: ``lseek`` failed (e.g. a negative resulting offset).
            trio.ClosedResourceError: the channel was closed.

        Example::

            await channel.seek(0)
        """
        self._require(ChannelFeature.SEEKABLE, "seek needs a regular file")
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: channel is closed")
        return await self._in_thread(os.lseek, self._fd, offset, whence)

    async def pread(self, n: int, offset: int) -> bytes:
        """Read up to ``n`` bytes at ``offset`` without moving the file offset (QEMU ``pread``).

        Args:
            n: the most bytes to read.
            offset: the position in the file.

        Returns:
            The bytes (fewer than ``n`` near the end, ``b""`` past it).

        Raises:
            trioqio.UnsupportedFeature: the channel is not ``SEEKABLE``, or is write-only.
            trio.ClosedResourceError: the channel was closed.

        Example::

            header = await channel.pread(512, 0)
        """
        self._require(ChannelFeature.SEEKABLE, "pread needs a regular file")
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: channel is closed")
        if not self._readable:
            raise UnsupportedFeature("READ", self.name, "the fd was opened write-only")
        return await self._in_thread(os.pread, self._fd, n, offset)

    async def pwrite(self, data: Buffer, offset: int) -> int:
        """Write all of ``data`` at ``offset`` without moving the file offset (QEMU ``pwrite``).

        Args:
            data: bytes-like.
            offset: the position in the file.

        Returns:
            The number of bytes written (all of them).

        Raises:
            trioqio.UnsupportedFeature: the channel is not ``SEEKABLE``, or is read-only.
            trio.ClosedResourceError: the channel was closed or ``send_eof`` was called.

        Example::

            await channel.pwrite(b"\\0" * 512, 4096)
        """
        self._require(ChannelFeature.SEEKABLE, "pwrite needs a regular file")
        self._check_send()
        with memoryview(data) as view, view.cast("B") as octets:
            return await self._in_thread(pwrite_all, self._fd, octets, offset)

    # -- threads ------------------------------------------------------------------------

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        # Not abandonable: the fd must stay open while a thread uses it, and a regular
        # file's read or write returns promptly.
        self._in_flight += 1
        try:
            result = await trio.to_thread.run_sync(fn, *args)
        finally:
            self._in_flight -= 1
            if self._closed and self._in_flight == 0:
                self._close_fd()
                self._idle.set()
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: channel was closed during the call")
        return result

    def __repr__(self) -> str:
        kind = "threaded" if self._threaded else "stream"
        state = "closed" if self._closed else f"fd={self.fileno()}"
        return f"<trioqio.FileChannel {self.name!r} {kind} {state}>"


async def open_file(
    path: str | os.PathLike[str],
    flags: int,
    mode: int = 0o600,
    *,
    name: str | None = None,
) -> FileChannel:
    """Open ``path`` as a channel (QEMU ``qio_channel_file_new_path``).

    ``O_CLOEXEC`` is always added. ``mode`` applies whenever the open creates the file
    (``O_CREAT``), whatever the access mode (QEMU's ``file/rdwr`` test), filtered by the
    umask as usual. ``open(2)`` runs in a worker thread, because opening a FIFO blocks until
    its other end is opened; cancelling stops waiting at once, and the abandoned thread
    closes the fd if the open later succeeds.

    Args:
        path: the file.
        flags: ``os.O_*`` flags, e.g. ``os.O_WRONLY | os.O_CREAT | os.O_TRUNC``.
        mode: permission bits for a created file.
        name: a name for errors and traces (default ``"file:<path>"``).

    Returns:
        The channel, owning the new fd.

    Raises:
        OSError: the open failed (``FileNotFoundError``, ``PermissionError``, ...), with
            the path in the message.

    Example::

        channel = await trioqio.open_file("/tmp/x", os.O_RDWR | os.O_CREAT, 0o644)
    """
    path = os.fspath(path)
    flags |= os.O_CLOEXEC
    fd = await open_abandonable(path, flags, mode)
    try:
        channel = FileChannel(fd, name=name if name is not None else f"file:{path}")
    except BaseException:
        os.close(fd)
        raise
    if enabled():
        emit(
            "qio_channel_file_new_path", ioc=channel.name, path=path, flags=flags, mode=mode, fd=fd
        )
    return channel
