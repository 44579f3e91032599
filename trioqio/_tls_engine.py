"""The TLS engine under TLSChannel (QEMU ``crypto/tlssession.c``, ``io/channel-tls.c``).

QEMU's ``QCryptoTLSSession`` wraps a GnuTLS session whose push/pull callbacks move
ciphertext over the master channel, and checks the peer's credentials (DN against an
authz ACL) once the handshake completes. :class:`TLSEngine` is that layer for Python: an
:class:`ssl.SSLObject` over two :class:`ssl.MemoryBIO` buffers, pumped through the master
with ``_flush`` (ciphertext out, in order) and ``_fill`` (ciphertext in), the handshake
loop with the ACL check, the decrypting read loop, and close_notify production.
:class:`~trioqio.TLSChannel` builds the public channel on it.

Differences from QEMU: OpenSSL (through :mod:`ssl`) instead of GnuTLS; received data is
coalesced across records up to ``max_bytes``; a reset while reading counts as a missing
close_notify (a "ragged" EOF), which relaxed EOF accepts.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING

import trio

from ._abc import Channel, ChannelFeature, Shutdown
from ._conflict import Busy as _Busy
from ._errors import HandshakeError, UnexpectedEOF
from ._layered import LayeredChannel
from ._tls_acl import TLSAcl, certificate_dn
from ._trace import emit, enabled

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["TLSEngine"]

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


class TLSEngine(LayeredChannel):
    """The SSLObject/MemoryBIO session pumped over a master channel (the state and plumbing).

    Not a channel on its own: :class:`~trioqio.TLSChannel` adds the stream methods.
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
        hostname: str | None,
        acl: TLSAcl | Iterable[str] | None,
        name: str,
    ) -> None:
        self._master = master
        self._server_side = server_side
        self._hostname = hostname
        self._acl = None if acl is None else TLSAcl.coerce(acl)
        self.name = name
        self.features = master.features & ChannelFeature.SHUTDOWN
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
        self._send_busy = _Busy("sending on this TLS channel")
        self._receive_busy = _Busy("receiving on this TLS channel")
        self._handshake_done = False
        self._failure: BaseException | None = None  # latched: handshake or protocol error
        self._closed = False
        self._sent_close = False
        self._eof = False
        self._master_eof = False
        self._shutdown = Shutdown(0)
        self._plain = bytearray()  # plaintext drained from OpenSSL by bye()
        self._peer_dn: str | None = None
        self._received = False  # any plaintext read since the handshake (see _ragged_eof)

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
        if self._closed:
            raise trio.ClosedResourceError(f"{self._label()} is closed")
        if self._failure is not None:
            raise trio.BrokenResourceError(
                f"{self._label()} is broken: {self._failure}"
            ) from self._failure

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
                    self._failure = self._failure or exc
                    raise
                except trio.Cancelled:
                    # Part of a record may be gone: the session cannot continue.
                    self._failure = self._failure or trio.BrokenResourceError("send cancelled")
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
                self._failure = exc
                raise trio.BrokenResourceError(
                    f"{self._label()}: TLS write failed: {_describe(exc)}"
                ) from exc
            await self._flush()

    # How a read works, and why each branch is there.
    #
    # OpenSSL owns the session; it never touches the network. Ciphertext reaches it only
    # through ``_incoming`` (written by ``_fill`` from the master) and leaves it only
    # through ``_outgoing`` (drained by ``_flush``, under ``_send_lock`` so records leave
    # in the order OpenSSL made them, whoever triggered them). ``self._ssl.read`` is
    # therefore synchronous: it returns plaintext already decryptable, raises
    # SSLWantReadError when it needs more ciphertext, SSLZeroReturnError at the peer's
    # close_notify, or a ragged-EOF error once ``_fill`` wrote EOF into ``_incoming``.
    #
    # The loop gathers plaintext up to ``max_bytes`` without waiting once it holds any
    # (a stream returns what it has); it only awaits the master when it has nothing. A
    # read can also make OpenSSL *produce* records (a KeyUpdate answer, an alert after
    # EOF): those are flushed before waiting for more input, or at the end, best effort
    # when we already hold data or EOF so a master that can no longer send does not cost
    # the caller bytes it has.
    #
    # Checkpoints: every Trio stream method must be a checkpoint whether or not it
    # blocked. ``yielded`` records whether an await in this call already was one
    # (``_fill`` or ``_flush``); if none happened (the whole answer came from OpenSSL's
    # buffers) the call ends with a cancel-shielded checkpoint: a yield to the scheduler
    # that cannot raise Cancelled, since bytes already taken out of OpenSSL would be lost
    # if it did.
    #
    # EOF: a clean close_notify sets ``_eof``; a ragged one is end of file only when the
    # caller relaxed it or shut reading down (QEMU), else it latches ``_failure`` and
    # raises UnexpectedEOF, whose hint depends on whether data ever arrived
    # (``_ragged_eof``). A ragged EOF behind data is reported on the next call.

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
                    if relaxed or Shutdown.READ in self._shutdown:
                        self._eof = True
                        chunk = b""
                    else:
                        self._failure = exc
                        raise self._ragged_eof() from exc
                else:
                    self._failure = exc
                    raise trio.BrokenResourceError(
                        f"{self._label()}: TLS read failed: {_describe(exc)}"
                    ) from exc
            if not chunk:
                if not got:
                    self._eof = True
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
            await self._flush(best_effort=bool(chunks) or self._eof)
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
