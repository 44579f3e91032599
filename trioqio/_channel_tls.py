"""TLS over any channel (QEMU ``io/channel-tls.c``, ``crypto/tlssession.c``).

QEMU's QIOChannelTLS drives a GnuTLS session (``QCryptoTLSSession``) whose push/pull
callbacks read and write a master channel; its handshake is a QIOTask stepped by
G_IO_IN/G_IO_OUT watches, and after ``COMPLETE`` it checks the peer's credentials
(hostname, DN against an authz ACL).

trioqio drives :class:`ssl.SSLObject` over two :class:`ssl.MemoryBIO` buffers and the
master channel, the same way :class:`trio.SSLStream` does. Owning the engine (rather than
wrapping ``trio.SSLStream``) gives what QEMU has and Trio lacks: :meth:`TLSChannel.bye`
sends close_notify while the channel stays readable (a real half-close, so the channel
is a :class:`trio.abc.HalfCloseableStream`), relaxed EOF per read, a handshake timeout,
and received data is coalesced across TLS records up to ``max_bytes``.

Differences from QEMU: OpenSSL (through :mod:`ssl`) instead of GnuTLS; the handshake is an
``async def`` (and a Task through :meth:`TLSChannel.handshake_task`) with a timeout, 30 s
by default; a failed handshake closes the master; the ACL is a :class:`TLSAcl` value;
credentials are an :class:`ssl.SSLContext`; TLS 1.2 renegotiation is not supported (TLS
1.3 has none); a reset while reading counts as a missing close_notify (a "ragged" EOF),
which relaxed EOF accepts.
"""

# Theory of operation.
#
# The pump. OpenSSL owns the session and never touches the network. Ciphertext reaches it
# only through ``_incoming``, written by ``_fill`` from one master read, and leaves it
# only through ``_outgoing``, drained by ``_flush``. Every SSLObject call is therefore
# synchronous and never interleaves with another task's; the awaits are all in
# ``_fill``/``_flush``, between SSLObject calls.
#
# Ordering. Records must reach the wire in the order OpenSSL made them, whoever made
# them: the writer (``_write``), the reader (a KeyUpdate reply, an alert), ``bye()``.
# ``_flush`` drains ``_outgoing`` under ``_send_lock``, a FIFO lock, and a task that finds
# records pending queues for it at once, so no later record can overtake. Reading needs
# no such lock: only the one task allowed to receive (``_receive_busy``) calls ``_fill``,
# and the handshake (also a reader) runs before any receive can start, under
# ``_handshake_lock``. A send cancelled half-way leaves a partial record on the wire; the
# session is then BROKEN, as Trio's SSLStream treats it.
#
# State. ``_state`` (``_State``) says what the session may still do: OPEN, BROKEN (with
# the cause in ``_error``) or CLOSED. Beside it sit facts that combine freely with it
# and with each other, so they are flags: ``_handshake_done`` (the handshake-once's
# latch, shared with the websocket channel in ``_layered.py``), ``_eof_sent`` (our
# close_notify is out; sending is over), ``_eof_received`` (the peer's close_notify, or a
# ragged EOF the caller accepted; reads return ``b""``), ``_master_eof`` (the master is at
# end of file: no more ciphertext can come, and ``_incoming`` refuses writes) and
# ``_read_shut`` (after ``shutdown(READ)`` a missing close_notify is end of file, as in
# QEMU). Both EOF directions are independent because TLS close is a half-close: either
# side may send close_notify first and keep reading.
#
# Handshake. The first read, write or ``bye()`` runs ``handshake()`` (QEMU style): the
# handshake-once in ``_layered.py`` runs ``_handshake_once`` under the timeout, maps every
# failure to one HandshakeError and latches it through ``_latch_failure`` (BROKEN here),
# then ``_handshake_failed`` closes the master. A server's ACL check runs after OpenSSL
# finished, so a refused client sees a completed handshake and then a close without
# close_notify; ``_ragged_eof`` words that case for it.
#
# Close. ``bye()`` writes close_notify and leaves the channel readable. ``aclose()`` sends
# close_notify too when the session is healthy and no send holds the lock (a sender may
# be mid-record), shielded and within 0.5 s, then closes the master whatever happened:
# like trio's SSLStream, a graceful close must never keep a resource open.

from __future__ import annotations

import contextlib
import enum
import ssl
import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING

import trio

from ._abc import Channel, ChannelFeature, Shutdown
from ._conflict import Busy
from ._errors import HandshakeError, UnexpectedEOF
from ._layered import LayeredChannel
from ._task import CompletionCallback, Task
from ._tls_acl import TLSAcl, certificate_dn
from ._trace import emit, enabled

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["TLSChannel"]

#: Bytes asked of the master per read.
_RECEIVE_SIZE = 256 * 1024
#: Plaintext encrypted per step of ``send_all`` (bounds the ciphertext held in memory).
_WRITE_CHUNK = 256 * 1024


def _is_ragged_eof(exc: BaseException) -> bool:
    # OpenSSL 3 reports a TCP close without close_notify as UNEXPECTED_EOF_WHILE_READING;
    # older versions as SSLEOFError or SSLSyscallError.
    return isinstance(exc, (ssl.SSLEOFError, ssl.SSLSyscallError)) or (
        "UNEXPECTED_EOF_WHILE_READING" in str(exc)
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc) or type(exc).__name__


class _State(enum.Enum):
    """What the session may still do (trio's ``SSLStream`` keeps the same three).

    OPEN → BROKEN on the first failure that leaves the session unusable (see
    :meth:`TLSChannel._break`); OPEN or BROKEN → CLOSED in ``aclose()``, which nothing
    leaves. The handshake is not a state here: ``_handshake_done`` (owned by the
    handshake-once in ``_layered.py``) stays true after the channel breaks or closes.
    """

    #: Usable: sends and reads go ahead (handshaking first if ``_handshake_done`` is False).
    OPEN = "open"
    #: A handshake failure, a TLS protocol error, a ragged EOF not accepted, or a send that
    #: left part of a record unsent; ``_error`` says which. Every operation raises
    #: BrokenResourceError; ``aclose()`` still closes the master.
    BROKEN = "broken"
    #: ``aclose()`` ran; every operation raises ClosedResourceError.
    CLOSED = "closed"


@typing.final
class TLSChannel(LayeredChannel):
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

    _PROTOCOL = "TLS"
    _TRACE = "qio_channel_tls"
    _TRACE_FAIL_FIELD = "error"

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
        self._master = master
        self._server_side = server_side
        self._hostname = hostname
        self._acl = None if acl is None else TLSAcl.coerce(acl)
        self.name = name
        self.features: ChannelFeature = master.features & ChannelFeature.SHUTDOWN
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = ssl_context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=None if server_side else hostname,
        )
        self._send_lock = trio.Lock()  # FIFO: ciphertext leaves in the order it was made
        self._handshake_lock = trio.Lock()
        self._send_busy = Busy("sending on this TLS channel")
        self._receive_busy = Busy("receiving on this TLS channel")
        self._handshake_done = False  # the handshake-once's latch (see _layered.py)
        self._state = _State.OPEN
        self._error: BaseException | None = None  # what broke the session (BROKEN only)
        # Four facts that move independently of the state and of each other, so they are
        # flags rather than more states: our close_notify may go out before or after the
        # peer's arrives (a TLS half-close goes both ways), the master may end without a
        # close_notify (truncation, or the handshake cut short), and a READ shutdown may
        # come at any time.
        self._eof_sent = False  # our close_notify is written (bye / send_eof / aclose)
        self._eof_received = False  # the peer's close_notify came, or an accepted ragged EOF
        self._master_eof = False  # the master returned end of file: no more ciphertext
        self._read_shut = False  # shutdown(READ): a missing close_notify is EOF (QEMU)
        self._plain = bytearray()  # plaintext drained from OpenSSL by bye()
        self._peer_dn: str | None = None
        self._received = False  # any plaintext read since the handshake (see _ragged_eof)
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
            if self._eof_sent:
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
            if self._eof_received:
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
            if self._eof_sent:
                await trio.lowlevel.checkpoint()
                return
            await self.handshake()
            if enabled():
                emit("qio_channel_tls_bye_start", ioc=self)
            self._produce_close_notify()
            self._eof_sent = True
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
        if self._state is _State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        # Only a healthy, handshaken session with no send in progress can add a record:
        # a sender holding the lock may be mid-record, and a broken one has no session.
        graceful = (
            self._state is _State.OPEN
            and self._handshake_done
            and not self._eof_sent
            and not self._send_lock.locked()
        )
        self._state = _State.CLOSED
        try:
            if graceful:
                self._eof_sent = True
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
        if Shutdown.READ in Shutdown(how):
            self._read_shut = True
        await self._master.shutdown(how)

    # -- the engine: handshake, peer checks, record pumping ----------------------------

    async def _handshake_once(self) -> None:
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                if self._master_eof:
                    raise HandshakeError(
                        f"{self._label()}: peer closed the connection during the TLS handshake"
                    ) from None
                await self._fill()
                continue
            except (ssl.SSLError, ssl.CertificateError) as exc:
                # Let the peer see our alert before the master is closed.
                with trio.move_on_after(1.0):
                    await self._flush(best_effort=True)
                raise HandshakeError(
                    f"{self._label()}: TLS handshake failed: {_describe(exc)}"
                ) from exc
            break
        await self._flush()
        self._check_peer()

    def _check_peer(self) -> None:
        cert = self._ssl.getpeercert()
        if cert:
            self._peer_dn = certificate_dn(cert)
        if self._acl is None:
            return
        if not cert:
            if enabled():
                emit("qio_channel_tls_credentials_deny", ioc=self, dn=None)
            raise HandshakeError(
                f"{self._label()}: the ACL requires a verified client certificate and the "
                "client presented none (does the server context use CERT_REQUIRED?)"
            )
        dn = self._peer_dn or ""
        if not self._acl.allows(dn):
            if enabled():
                emit("qio_channel_tls_credentials_deny", ioc=self, dn=dn)
            raise HandshakeError(f"{self._label()}: TLS client {dn!r} is not allowed by the ACL")
        if enabled():
            emit("qio_channel_tls_credentials_allow", ioc=self, dn=dn)

    # -- plumbing ---------------------------------------------------------------------

    def _label(self) -> str:
        role = "server" if self._server_side else "client"
        return f"{self._channel_name()} ({role})"

    def _check_open(self) -> None:
        if self._state is _State.OPEN:
            return
        if self._state is _State.CLOSED:
            raise trio.ClosedResourceError(f"{self._label()} is closed")
        raise trio.BrokenResourceError(f"{self._label()} is broken: {self._error}") from self._error

    def _break(self, error: BaseException) -> None:
        """Enter BROKEN because of ``error``; the first failure is the one reported.

        A closed channel stays CLOSED: a close_notify that fails to leave during
        ``aclose()`` must not turn ClosedResourceError into BrokenResourceError.
        """
        if self._state is _State.OPEN:
            self._state = _State.BROKEN
            self._error = error

    def _latch_failure(self, error: BaseException) -> None:
        # The handshake-once's failure (see LayeredChannel).
        self._break(error)

    async def _flush(self, *, best_effort: bool = False) -> None:
        """Send whatever ciphertext OpenSSL produced, in order.

        With ``best_effort``, a master that cannot send any more (the peer went away)
        drops the records instead of breaking the session: used for alerts and
        housekeeping records the reader produced.
        """
        if not self._outgoing.pending:
            return
        async with self._send_lock:
            while data := self._outgoing.read():
                try:
                    await self._master.send_all(data)
                except trio.BrokenResourceError as exc:
                    if best_effort:
                        return
                    self._break(exc)
                    raise
                except trio.Cancelled:
                    # Part of a record may be gone: the session cannot continue.
                    self._break(trio.BrokenResourceError("send cancelled"))
                    raise

    async def _fill(self) -> None:
        """Read ciphertext from the master into OpenSSL's input."""
        try:
            data = await self._master.receive_some(_RECEIVE_SIZE)
        except trio.BrokenResourceError as exc:
            # A peer that closes with our data unread resets the connection: for TLS that
            # is the same event as a close without close_notify (a "ragged" EOF).
            if not isinstance(exc.__cause__, ConnectionResetError):
                raise
            data = b""
        if data:
            self._incoming.write(data)
        else:
            self._master_eof = True
            self._incoming.write_eof()

    async def _write(self, data: Buffer) -> None:
        """Encrypt and send ``data`` in chunks; an empty one is a checkpoint only."""
        view = memoryview(data).cast("B")
        if not view:
            await trio.lowlevel.checkpoint()
            return
        for start in range(0, len(view), _WRITE_CHUNK):
            try:
                self._ssl.write(view[start : start + _WRITE_CHUNK])
            except ssl.SSLError as exc:
                self._break(exc)
                raise trio.BrokenResourceError(
                    f"{self._label()}: TLS write failed: {_describe(exc)}"
                ) from exc
            await self._flush()

    # The read path, and why each checkpoint is where it is.
    #
    # ``self._ssl.read`` is synchronous (see the theory of operation at the top): it
    # returns plaintext OpenSSL can already decrypt, raises SSLWantReadError when it needs
    # more ciphertext, SSLZeroReturnError at the peer's close_notify, or a ragged-EOF
    # error once ``_fill`` wrote EOF into ``_incoming``. The loop gathers plaintext up to
    # ``max_bytes`` without waiting once it holds any (a stream returns what it has) and
    # stops as soon as neither BIO nor OpenSSL holds more, sparing a WantRead round trip;
    # it awaits the master only while it holds nothing.
    #
    # Trio's rule: every stream call is a checkpoint, blocked or not, i.e. both a point
    # where cancellation is delivered and a point where other tasks get to run. A read
    # may deliver Cancelled only while it has taken nothing out of OpenSSL, since
    # plaintext OpenSSL handed over cannot be put back. So:
    #
    # 1. Cancellation point, on entry (``receive_some``, before this method): the
    #    handshake if one is due (a full checkpoint), else ``checkpoint_if_cancelled``.
    #    Nothing has been consumed yet, so raising there loses nothing.
    # 2. ``_flush`` before ``_fill`` (a KeyUpdate reply OpenSSL produced while reading):
    #    runs only while ``got == 0``. A cancellation there loses no plaintext, but may
    #    leave part of a record unsent, which breaks the session (``_flush`` says so).
    # 3. ``_fill``: the master's ``receive_some``, a checkpoint of its own. Reached only
    #    while ``got == 0`` (the loop leaves instead of waiting once it holds data), and a
    #    cancelled receive consumes nothing from the master, so Cancelled costs nothing.
    # 4. The final ``_flush`` of housekeeping records (a KeyUpdate reply, an alert after
    #    EOF) may run while ``chunks`` holds plaintext. It is best effort then, so a master
    #    that can no longer send does not cost the caller those bytes; a cancellation in
    #    it breaks the session (a record may be half sent), after which the bytes held
    #    would be unusable anyway.
    # 5. ``yielded`` records whether 2, 3 or 4 ran (each one both yields and can deliver
    #    cancellation). If none did, the whole answer came from buffers and the call ends
    #    with ``cancel_shielded_checkpoint``: the scheduling point Trio requires, which
    #    cannot raise Cancelled and lose the bytes in hand. ``receive_some`` ends its own
    #    buffered answers (``_plain``, a remembered EOF) the same way.
    #
    # EOF: a clean close_notify sets ``_eof_received``; a ragged one is end of file only
    # when the caller relaxed it or shut reading down (QEMU), else it breaks the session
    # and raises UnexpectedEOF, whose hint depends on whether data ever arrived
    # (``_ragged_eof``). A ragged EOF behind data is reported on the next call: the data
    # goes out now.

    async def _read(self, max_bytes: int, relaxed: bool) -> bytes:
        chunks: list[bytes] = []
        got = 0
        yielded = False
        while got < max_bytes:
            try:
                chunk = self._ssl.read(max_bytes - got)
            except ssl.SSLWantReadError:
                if got:
                    break  # return what we have rather than wait for more
                if self._outgoing.pending:  # e.g. a KeyUpdate reply
                    await self._flush()
                yielded = True
                await self._fill()
                continue
            except ssl.SSLZeroReturnError:
                chunk = b""
            except ssl.SSLError as exc:
                if _is_ragged_eof(exc):
                    if got:
                        break  # report the data now, the EOF on the next call
                    if relaxed or self._read_shut:
                        self._eof_received = True
                        chunk = b""
                    else:
                        self._break(exc)
                        raise self._ragged_eof() from exc
                else:
                    self._break(exc)
                    raise trio.BrokenResourceError(
                        f"{self._label()}: TLS read failed: {_describe(exc)}"
                    ) from exc
            if not chunk:
                if not got:
                    self._eof_received = True
                break
            chunks.append(chunk)
            got += len(chunk)
            self._received = True
            if not self._incoming.pending and not self._ssl.pending():
                break
        if self._outgoing.pending:
            # Housekeeping records (a KeyUpdate reply, an alert after EOF). A master that
            # can no longer send must not cost the reader the data it already has.
            yielded = True
            await self._flush(best_effort=bool(chunks) or self._eof_received)
        if not yielded:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _ragged_eof(self) -> UnexpectedEOF:
        # A peer that closes before sending anything has most likely refused us (a TLS
        # server's ACL check runs after the handshake, then it just hangs up, as QEMU
        # does): relaxed EOF would turn that refusal into a clean, empty end of file, so
        # it is only suggested once data has arrived.
        if not self._received:
            return UnexpectedEOF(
                f"{self._label()}: peer closed the connection without a TLS close_notify "
                "right after the handshake; it may have refused this client (for example "
                "the server's ACL)"
            )
        return UnexpectedEOF(
            f"{self._label()}: peer closed the connection without a TLS close_notify (the "
            "data may be truncated); pass relaxed_eof=True to accept this as end of file"
        )

    def _produce_close_notify(self) -> None:
        # Python's unwrap() calls SSL_shutdown a second time, which reads: any unread
        # record would make it fail. Move pending plaintext and ciphertext aside first.
        while pending := self._ssl.pending():
            try:
                self._plain += self._ssl.read(pending)
            except ssl.SSLError:
                break
        stash = b"" if self._master_eof else self._incoming.read()
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            pass  # close_notify is written; the peer's reply is not awaited
        except ssl.SSLError:
            pass  # e.g. data after the peer's close_notify; ours is written regardless
        if stash:
            self._incoming.write(stash)
