"""TLS over any channel (QEMU ``io/channel-tls.c``, ``crypto/tlssession.c``).

QEMU's QIOChannelTLS drives a GnuTLS session whose push/pull callbacks read and write a
master channel; its handshake is a QIOTask stepped by G_IO_IN/G_IO_OUT watches, and after
``COMPLETE`` it checks the peer's credentials (hostname, DN against an authz ACL).

trioqio drives :class:`ssl.SSLObject` over two :class:`ssl.MemoryBIO` buffers and the
master channel, the same way :class:`trio.SSLStream` does. Owning the engine (rather than
wrapping ``trio.SSLStream``) gives what QEMU has and Trio lacks: :meth:`TLSChannel.bye`
sends close_notify while the channel stays readable (a real half-close, so the channel
is a :class:`trio.abc.HalfCloseableStream`), relaxed EOF per read, a handshake timeout,
and received data is coalesced across TLS records up to ``max_bytes``.

Differences from QEMU: the handshake is an ``async def`` (and a Task through
:meth:`TLSChannel.handshake_task`) with a timeout, 30 s by default; a failed handshake
closes the master; the ACL is a :class:`TLSAcl` value; credentials are an
:class:`ssl.SSLContext`; TLS 1.2 renegotiation is not supported (TLS 1.3 has none).
"""

from __future__ import annotations

import contextlib
import ssl
import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING

import trio

from ._abc import Channel, ChannelFeature, Shutdown
from ._task import CompletionCallback, Task
from ._tls_acl import TLSAcl
from ._tls_engine import TLSEngine
from ._trace import emit, enabled

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["TLSChannel"]

#: Default ``max_bytes`` for :meth:`TLSChannel.receive_some`.


@typing.final
class TLSChannel(TLSEngine):
    """A TLS session over another channel (client or server side).

    Create one with :meth:`client` or :meth:`server`, then :meth:`handshake` (or let the
    first read or write do it). The TLS channel owns its master: closing it closes the
    master, and a failed handshake closes the master too.

    QEMU: ``QIOChannelTLS`` (``qio_channel_tls_new_client`` / ``_new_server``).

    Args:
        master: the channel the TLS records travel on; the TLS channel owns it.
        ssl_context: credentials and policy.
        server_side: True for the server end.
        hostname: the name the server certificate must carry (client side).
        acl: who may connect (server side); see :meth:`server`.
        name: the channel's name for errors and traces.

    Attributes:
        features: the master's ``SHUTDOWN`` feature, nothing else (no FD_PASS, no peek).
        handshake_timeout: seconds the handshake may take, or None for no limit.
        relaxed_eof: default for :meth:`receive_some`'s ``relaxed_eof``.

    Example::

        tls = trioqio.TLSChannel.client(sock_channel, ctx, hostname="qemu.org")
        await tls.handshake()
        await tls.send_all(b"hello")
        await tls.bye()
        await tls.aclose()
    """

    def __init__(
        self,
        master: Channel,
        ssl_context: ssl.SSLContext,
        *,
        server_side: bool,
        hostname: str | None = None,
        acl: TLSAcl | Iterable[str] | None = None,
        relaxed_eof: bool = False,
        handshake_timeout: float | None = 30.0,
        name: str = "",
    ) -> None:
        """Prefer :meth:`client` and :meth:`server`; the arguments are theirs."""
        if not isinstance(master, trio.abc.Stream):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"master must be a trioqio channel, got {master!r}")
        if handshake_timeout is not None and not handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be positive or None: {handshake_timeout}")
        super().__init__(
            master,
            ssl_context,
            server_side=server_side,
            hostname=hostname,
            acl=acl,
            name=name,
        )
        self.relaxed_eof = relaxed_eof
        self.handshake_timeout = handshake_timeout

    # -- construction -----------------------------------------------------------------

    @classmethod
    def client(
        cls,
        channel: Channel,
        ssl_context: ssl.SSLContext,
        *,
        hostname: str | None,
        relaxed_eof: bool = False,
        handshake_timeout: float | None = 30.0,
        name: str = "",
    ) -> TLSChannel:
        """Wrap ``channel`` as the client side of a TLS session.

        The server certificate is verified as ``ssl_context`` says
        (:func:`ssl.create_default_context` verifies the chain and the hostname).

        QEMU: ``qio_channel_tls_new_client``.

        Args:
            channel: the master channel, already connected.
            ssl_context: client credentials and policy.
            hostname: the name the server certificate must carry (SNI too); None only
                with a context whose ``check_hostname`` is False.
            relaxed_eof: treat a peer closing without close_notify as end of file.
            handshake_timeout: seconds the handshake may take; None for no limit.
            name: the channel's name for errors and traces.

        Returns:
            The TLS channel (not yet handshaken).

        Raises:
            TypeError: ``channel`` is not a channel, or the ACL is malformed.
            ValueError: ``handshake_timeout`` is not positive.

        Example::

            tls = trioqio.TLSChannel.client(channel, ctx, hostname="qemu.org")
        """
        tls = cls(
            channel,
            ssl_context,
            server_side=False,
            hostname=hostname,
            relaxed_eof=relaxed_eof,
            handshake_timeout=handshake_timeout,
            name=name,
        )
        if enabled():
            emit("qio_channel_tls_new_client", ioc=tls, master=channel, hostname=hostname)
        return tls

    @classmethod
    def server(
        cls,
        channel: Channel,
        ssl_context: ssl.SSLContext,
        *,
        acl: TLSAcl | Iterable[str] | None = None,
        relaxed_eof: bool = False,
        handshake_timeout: float | None = 30.0,
        name: str = "",
    ) -> TLSChannel:
        """Wrap ``channel`` as the server side of a TLS session.

        With ``acl``, the client must present a certificate (the context must verify it:
        ``verify_mode`` ``CERT_REQUIRED`` or ``CERT_OPTIONAL``) whose subject DN
        (``C=UK,CN=qemu`` layout, see :class:`TLSAcl`) the ACL allows; otherwise the
        handshake fails with :class:`HandshakeError` naming the DN. No ACL admits any client
        the context accepts.

        QEMU: ``qio_channel_tls_new_server`` with an authz list name.

        Args:
            channel: the master channel, already accepted.
            ssl_context: server credentials and policy.
            acl: a :class:`TLSAcl` or a list of allow globs (default deny).
            relaxed_eof: treat a peer closing without close_notify as end of file.
            handshake_timeout: seconds the handshake may take; None for no limit.
            name: the channel's name for errors and traces.

        Returns:
            The TLS channel (not yet handshaken).

        Raises:
            TypeError: ``channel`` is not a channel, or the ACL is malformed.
            ValueError: ``handshake_timeout`` is not positive.

        Example::

            tls = trioqio.TLSChannel.server(channel, ctx, acl=["C=UK,CN=qemu*"])
        """
        tls = cls(
            channel,
            ssl_context,
            server_side=True,
            acl=acl,
            relaxed_eof=relaxed_eof,
            handshake_timeout=handshake_timeout,
            name=name,
        )
        if enabled():
            emit("qio_channel_tls_new_server", ioc=tls, master=channel, acl=tls._acl)
        return tls

    # -- properties -------------------------------------------------------------------

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The :class:`ssl.SSLObject` (cipher, version, peer certificate).

        QEMU: ``qio_channel_tls_get_session``.
        """
        return self._ssl

    @property
    def peer_dn(self) -> str | None:
        """The verified peer certificate's subject DN after the handshake, else None."""
        return self._peer_dn

    @property
    def handshake_done(self) -> bool:
        """True once the handshake (and the ACL check) succeeded."""
        return self._handshake_done

    # -- handshake --------------------------------------------------------------------

    async def handshake(self) -> None:
        """Run the TLS handshake and the peer checks; a no-op once done.

        Concurrent callers wait for the one handshake. On failure the master is closed and
        every later operation raises :class:`trio.BrokenResourceError`.

        QEMU: ``qio_channel_tls_handshake`` (without the callback; see :meth:`handshake_task`).

        Raises:
            trioqio.HandshakeError: the TLS handshake failed (the message says why: a
                certificate error, a protocol error, the peer closing, the timeout, or
                the ACL refusing the DN, which the message names).
            trio.ClosedResourceError: the channel was closed.

        Example::

            await tls.handshake()
        """
        await self._handshake()

    async def _handshake_failed(self) -> None:
        await trio.aclose_forcefully(self._master)

    def handshake_task(
        self,
        nursery: trio.Nursery,
        on_complete: CompletionCallback[TLSChannel] | None = None,
    ) -> Task[TLSChannel]:
        """Start the handshake in ``nursery`` and report it through a :class:`trioqio.Task`.

        The completion runs in the Trio thread exactly once: with the result ``self`` on
        success, with the :class:`HandshakeError` on failure, or with
        :class:`trioqio.TaskCancelled` if ``nursery`` is cancelled first (the cancellation
        policy of every ``*_task``, see :meth:`trioqio.Task.start_soon`: the completion
        is not shielded, so an async one's awaits raise :class:`trio.Cancelled` then).

        QEMU: ``qio_channel_tls_handshake(tioc, func, opaque, destroy, context)``.

        Args:
            nursery: owns the handshake.
            on_complete: ``on_complete(task)``, plain or async.

        Returns:
            The task (``await task.wait()`` gives the channel or raises).

        Raises nothing: a failed handshake is reported through the Task, and an exception
        from ``on_complete`` propagates into ``nursery``.

        Example::

            def done(task: trioqio.Task[trioqio.TLSChannel]) -> None:
                task.propagate_error()
                print("secure:", task.result)

            tls.handshake_task(nursery, done)
        """
        task: Task[TLSChannel] = Task(source=self, on_complete=on_complete, name="tls-handshake")
        task.start_soon(nursery, self._handshake_then_self)
        return task

    # -- Trio stream methods ----------------------------------------------------------

    async def send_all(self, data: Buffer) -> None:
        """Encrypt and send all of ``data`` (QEMU ``qio_channel_writev`` on a TLS channel).

        Handshakes first if needed.

        Args:
            data: the bytes to send.

        Raises:
            trio.BrokenResourceError: the session or the master failed.
            trio.ClosedResourceError: the channel was closed, or :meth:`bye` was called.
            trio.BusyResourceError: another task is sending.

        Example::

            await tls.send_all(b"payload")
        """
        with self._send_busy:
            self._check_open()
            if self._sent_close:
                raise trio.ClosedResourceError(f"{self._label()}: cannot send after bye()")
            await self.handshake()
            await self._write(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the master could take more data. See Trio's ``SendStream``.

        Raises:
            trio.BusyResourceError: another task is sending.
            trio.ClosedResourceError: the channel was closed.
            trio.BrokenResourceError: the session or the master failed.

        Example::

            await tls.wait_send_all_might_not_block()
        """
        with self._send_busy:
            self._check_open()
            async with self._send_lock:
                await self._master.wait_send_all_might_not_block()

    async def receive_some(
        self, max_bytes: int | None = None, *, relaxed_eof: bool | None = None
    ) -> bytes:
        """Receive and decrypt up to ``max_bytes`` (QEMU ``qio_channel_readv`` on TLS).

        Handshakes first if needed. A peer that closes the connection without sending
        close_notify may have truncated the stream; that is an error unless relaxed EOF is
        on (here, in the constructor, or after :meth:`shutdown` of the read side), as QEMU's
        ``QIO_CHANNEL_READ_FLAG_RELAXED_EOF``.

        Args:
            max_bytes: the most bytes to return (default 256 KiB).
            relaxed_eof: override the channel's :attr:`relaxed_eof` for this read.

        Returns:
            At least one byte, or ``b""`` at a clean end of file (close_notify received).

        Raises:
            trioqio.UnexpectedEOF: the peer closed without close_notify (not relaxed).
            trio.BrokenResourceError: a TLS protocol error or a broken master.
            trio.ClosedResourceError: the channel was closed.
            trio.BusyResourceError: another task is receiving.

        Example::

            data = await tls.receive_some(65536, relaxed_eof=True)
        """
        max_bytes = self._receive_size(max_bytes)
        with self._receive_busy:
            await self._ready_to_receive()
            if self._plain:
                data = bytes(self._plain[:max_bytes])
                del self._plain[:max_bytes]
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            if self._eof:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return b""
            relaxed = self.relaxed_eof if relaxed_eof is None else relaxed_eof
            return await self._read(max_bytes, relaxed)

    async def bye(self) -> None:
        """Send close_notify; the channel stays readable (QEMU ``qio_channel_tls_bye``).

        The peer then sees a clean end of file. Later sends raise
        :class:`trio.ClosedResourceError`. Calling it again does nothing. This is also
        :meth:`send_eof`.

        Raises:
            trio.BrokenResourceError: the session or the master failed.
            trio.ClosedResourceError: the channel was closed.
            trio.BusyResourceError: another task is sending.

        Example::

            await tls.bye()
            rest = await tls.receive_some()  # the peer may still send
        """
        with self._send_busy:
            self._check_open()
            if self._sent_close:
                await trio.lowlevel.checkpoint()
                return
            await self.handshake()
            if enabled():
                emit("qio_channel_tls_bye_start", ioc=self)
            self._produce_close_notify()
            self._sent_close = True
            try:
                await self._flush()
            except trio.BrokenResourceError:
                if enabled():
                    emit("qio_channel_tls_bye_fail", ioc=self)
                raise
            if enabled():
                emit("qio_channel_tls_bye_complete", ioc=self)

    async def send_eof(self) -> None:
        """Send close_notify (the same as :meth:`bye`).

        Raises:
            trio.BrokenResourceError: the session or the master failed.
            trio.ClosedResourceError: the channel was closed.
            trio.BusyResourceError: another task is sending.

        Example::

            await tls.send_eof()
        """
        await self.bye()

    async def aclose(self) -> None:
        """Close the session and the master; idempotent.

        Sends close_notify first when the session is healthy and nobody is sending (like
        :class:`trio.SSLStream`); if that cannot be done at once the close is abrupt.

        QEMU: ``qio_channel_close`` on a TLS channel.

        Raises nothing of its own: a close_notify that cannot be sent makes the close
        abrupt; the master's ``aclose`` errors, if any, propagate.

        Example::

            await tls.aclose()
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if (
                self._handshake_done
                and not self._sent_close
                and self._failure is None
                and not self._send_lock.locked()
            ):
                self._sent_close = True
                self._produce_close_notify()
                with trio.move_on_after(0.5) as scope:
                    scope.shield = True
                    with contextlib.suppress(trio.ClosedResourceError):
                        await self._flush(best_effort=True)
        finally:
            await self._master.aclose()

    # -- QEMU extras --------------------------------------------------------------------

    async def shutdown(self, how: Shutdown = Shutdown.BOTH) -> None:
        """Shut down the master in one or both directions (no close_notify).

        After a READ shutdown, a missing close_notify counts as end of file (QEMU).

        QEMU: ``qio_channel_shutdown`` on a TLS channel.

        Args:
            how: :class:`trioqio.Shutdown` READ, WRITE or BOTH.

        Raises:
            trioqio.UnsupportedFeature: the master lacks ``SHUTDOWN``.

        Example::

            await tls.shutdown(trioqio.Shutdown.BOTH)
        """
        self._require(ChannelFeature.SHUTDOWN, "data path shutdown")
        self._shutdown |= how
        await self._master.shutdown(how)
