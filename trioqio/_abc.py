"""The channel base class (QEMU ``include/io/channel.h``, ``io/channel.c``).

QEMU's QIOChannel is a GObject with a vtable (``io_readv``, ``io_writev``, ``io_close``,
...) and a layer of helpers on top (``read_all``, ``writev_all``, ...). trioqio's
:class:`Channel` is a :class:`trio.abc.HalfCloseableStream`, so every channel works where
Trio expects a stream, and the QEMU helpers become async methods with default
implementations that a kind overrides where it has something better (``writev`` through
``sendmsg``, ``peek`` through ``MSG_PEEK``).

Differences from QEMU: there is no blocking/non-blocking mode (every method is an
``async def`` that waits), no watches (a Trio task awaiting the channel replaces them), and
no ``ERR_BLOCK`` return value.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ._errors import UnexpectedEOF, UnsupportedFeature

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["Channel", "ChannelFeature", "Shutdown"]


class ChannelFeature(enum.Flag):
    """What a channel can do (QEMU ``QIOChannelFeature``; same order, as bits).

    Example::

        if trioqio.ChannelFeature.FD_PASS in channel.features:
            await channel.send_with_fds(b"x", [fd])
    """

    #: No optional feature.
    NONE = 0
    #: File descriptors can be sent and received (UNIX sockets; ``send_with_fds``).
    FD_PASS = 1 << 0
    #: Each direction can be shut down on its own (:meth:`Channel.shutdown`).
    SHUTDOWN = 1 << 1
    #: A listening socket (QEMU's channel accepts clients).
    LISTEN = 1 << 2
    #: Zero-copy writes (QEMU ``MSG_ZEROCOPY``); never set by trioqio, kept for parity.
    WRITE_ZERO_COPY = 1 << 3
    #: Input can be peeked at without consuming it (:meth:`Channel.peek`).
    READ_MSG_PEEK = 1 << 4
    #: The channel has a position, so ``seek``, ``pread`` and ``pwrite`` work.
    SEEKABLE = 1 << 5
    #: Reads and writes may run at the same time (QEMU asks it of a TLS session before
    #: the handshake); trioqio's channels already allow one sender and one receiver.
    CONCURRENT_IO = 1 << 6


class Shutdown(enum.IntFlag):
    """Which direction :meth:`Channel.shutdown` closes (QEMU ``QIOChannelShutdown``).

    Example::

        await channel.shutdown(trioqio.Shutdown.WRITE)
    """

    #: Stop receiving (``SHUT_RD``).
    READ = 1
    #: Stop sending; the peer reads end of file (``SHUT_WR``).
    WRITE = 2
    #: Both directions (``SHUT_RDWR``).
    BOTH = 3


class Channel(trio.abc.HalfCloseableStream):
    """A bidirectional byte stream with QEMU's channel extras.

    Subclasses implement Trio's stream methods (``send_all``, ``wait_send_all_might_not_block``,
    ``receive_some``, ``send_eof``, ``aclose``) and set :attr:`features`; the extras below
    have generic implementations built on them.

    QEMU: ``QIOChannel``.

    Example::

        class MyChannel(trioqio.abc.Channel):
            ...  # implement Trio's HalfCloseableStream methods
    """

    #: What this channel supports; subclasses set it per instance or per class.
    features: ChannelFeature = ChannelFeature.NONE

    #: A human-readable name used in errors and trace events (QEMU ``qio_channel_set_name``).
    name: str = ""

    # -- helpers shared by subclasses -------------------------------------------------

    def _channel_name(self) -> str:
        return self.name or type(self).__name__

    def _short_read(self, received: int, expected: int) -> UnexpectedEOF:
        """The error for an end of file after ``received`` of ``expected`` bytes."""
        return UnexpectedEOF(
            f"{self._channel_name()}: unexpected end of file after {received} of {expected} bytes",
            expected=expected,
            received=received,
        )

    def _require(self, feature: ChannelFeature, detail: str = "") -> None:
        if feature not in self.features:
            raise UnsupportedFeature(str(feature.name), self._channel_name(), detail)

    # -- QEMU helpers -------------------------------------------------------------------

    async def writev(self, buffers: Sequence[Buffer]) -> None:
        """Send every buffer, in order, all of it (QEMU ``qio_channel_writev_all``).

        The generic version sends the buffers one after another; kinds with vectored
        I/O (sockets) override it to avoid copies.

        Args:
            buffers: bytes-like objects to send.

        Raises:
            trio.BrokenResourceError: the peer went away.
            trio.ClosedResourceError: the channel was closed.

        Example::

            await channel.writev([header, payload])
        """
        for buffer in buffers:
            view = memoryview(buffer)
            if len(view):
                await self.send_all(view)
        if not buffers:
            await trio.lowlevel.checkpoint()

    async def receive_exactly(self, n: int) -> bytes:
        """Receive exactly ``n`` bytes (QEMU ``qio_channel_read_all``).

        Args:
            n: how many bytes; 0 returns ``b""``.

        Returns:
            The bytes.

        Raises:
            trioqio.UnexpectedEOF: the peer closed the stream first; the message says how
                many bytes had arrived.

        Example::

            header = await channel.receive_exactly(64)
        """
        data = await self.receive_exactly_or_eof(n)
        if data is None:
            raise UnexpectedEOF(
                f"{self._channel_name()}: end of file before any of {n} bytes arrived",
                expected=n,
                received=0,
            )
        return data

    async def receive_exactly_or_eof(self, n: int) -> bytes | None:
        """Receive exactly ``n`` bytes, or None on a clean end of file (QEMU ``read_all_eof``).

        Args:
            n: how many bytes.

        Returns:
            The bytes, or None if the peer closed the stream before sending any of them.

        Raises:
            trioqio.UnexpectedEOF: the peer closed the stream after part of them.
            ValueError: ``n`` is negative.

        Example::

            while (page := await channel.receive_exactly_or_eof(4096)) is not None:
                ...
        """
        if n < 0:
            raise ValueError(f"cannot receive a negative number of bytes ({n})")
        if n == 0:
            await trio.lowlevel.checkpoint()
            return b""
        first = await self.receive_some(n)
        if not first:
            return None
        if len(first) == n:
            return bytes(first)
        buffer = bytearray(first)
        while len(buffer) < n:
            chunk = await self.receive_some(n - len(buffer))
            if not chunk:
                raise self._short_read(len(buffer), n)
            buffer += chunk
        return bytes(buffer)

    async def receive_exactly_into(self, buffer: Buffer) -> None:
        """Fill ``buffer`` with exactly ``len(buffer)`` bytes (QEMU ``read_all``, own iovec).

        :meth:`receive_exactly` returns new ``bytes``; this variant reuses the caller's
        buffer, so a receiver that handles fixed-size records (migration packets) can
        recycle one allocation. The generic version copies from :meth:`receive_some`;
        socket channels read straight into ``buffer``.

        Cancellation: a cancel before any byte arrived consumes nothing. A cancel after
        part arrived leaves those bytes at the start of ``buffer`` and the stream after
        them (nothing is read twice), as with :meth:`receive_exactly`, whose partial bytes
        are dropped with the cancel.

        Args:
            buffer: a writable bytes-like object; an empty one returns after a checkpoint.

        Raises:
            TypeError: ``buffer`` is read-only (nothing is consumed).
            trioqio.UnexpectedEOF: the peer closed the stream before ``buffer`` was full;
                the message says how many bytes had arrived.

        Example::

            packet = bytearray(512 * 1024)
            await channel.receive_exactly_into(memoryview(packet)[:length])
        """
        with memoryview(buffer) as raw, raw.cast("B") as view:
            if view.readonly:
                raise TypeError(f"cannot receive into a read-only {type(buffer).__name__}")
            total = len(view)
            got = 0
            if not total:
                await trio.lowlevel.checkpoint()
            while got < total:
                chunk = await self.receive_some(total - got)
                if not chunk:
                    raise self._short_read(got, total)
                view[got : got + len(chunk)] = chunk
                got += len(chunk)

    async def peek(self, max_bytes: int) -> bytes:
        """Return up to ``max_bytes`` of pending input without consuming it (``MSG_PEEK``).

        Args:
            max_bytes: the most bytes to return.

        Returns:
            At least one byte, or ``b""`` at end of file.

        Raises:
            trioqio.UnsupportedFeature: the channel lacks ``READ_MSG_PEEK``.

        Example::

            magic = await channel.peek(4)
        """
        self._require(ChannelFeature.READ_MSG_PEEK)
        raise NotImplementedError  # pragma: no cover - kinds with the feature override

    async def send_with_fds(self, data: Buffer, fds: Sequence[int]) -> None:
        """Send ``data`` with file descriptors attached (QEMU ``writev_full_all`` with fds).

        Args:
            data: at least one byte to carry the descriptors.
            fds: descriptors to pass; the caller keeps its own copies.

        Raises:
            trioqio.UnsupportedFeature: the channel lacks ``FD_PASS``.

        Example::

            await channel.send_with_fds(b"x", [fd])
        """
        self._require(ChannelFeature.FD_PASS, "file descriptor passing")
        raise NotImplementedError  # pragma: no cover - kinds with the feature override

    async def receive_with_fds(self, max_bytes: int, max_fds: int = 16) -> tuple[bytes, list[int]]:
        """Receive data and any file descriptors sent with it.

        Args:
            max_bytes: the most bytes to return.
            max_fds: the most descriptors to accept.

        Returns:
            ``(data, fds)``; the caller owns (and must close) the descriptors.

        Raises:
            trioqio.UnsupportedFeature: the channel lacks ``FD_PASS``.

        Example::

            data, fds = await channel.receive_with_fds(1024)
        """
        self._require(ChannelFeature.FD_PASS, "file descriptor passing")
        raise NotImplementedError  # pragma: no cover - kinds with the feature override

    async def shutdown(self, how: Shutdown = Shutdown.BOTH) -> None:
        """Shut down one or both directions (QEMU ``qio_channel_shutdown``).

        Args:
            how: :class:`Shutdown` READ, WRITE or BOTH.

        Raises:
            trioqio.UnsupportedFeature: the channel lacks ``SHUTDOWN``.

        Example::

            await channel.shutdown(trioqio.Shutdown.READ)
        """
        self._require(ChannelFeature.SHUTDOWN, "data path shutdown")
        raise NotImplementedError  # pragma: no cover - kinds with the feature override

    def set_delay(self, enabled: bool) -> None:
        """Enable or disable Nagle's algorithm; a hint, ignored by kinds without it.

        Args:
            enabled: False sets ``TCP_NODELAY``.

        Raises nothing: kinds without the option ignore the hint.

        Example::

            channel.set_delay(False)
        """

    def set_cork(self, enabled: bool) -> None:
        """Hold back partial frames (``TCP_CORK``); a hint, ignored by kinds without it.

        Args:
            enabled: True to cork.

        Raises nothing: kinds without the option ignore the hint.

        Example::

            channel.set_cork(True)
        """
