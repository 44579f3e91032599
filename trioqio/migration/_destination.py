"""The migration destination (QEMU ``migration/socket.c`` incoming, ``migration/channel.c``,
``multifd_recv_new_channel``).

QEMU listens with a ``QIONetListener`` whose backlog is the multifd channel count. Each
accepted connection is upgraded to TLS when TLS is configured, then classified: a peekable
channel by its first four bytes (``"QEVM"`` is the main channel, ``0x11223344`` a multifd
channel); a TLS channel, which cannot peek, by order: the first is main. A multifd channel
sends a 64-byte init header whose id places it, so accept order does not matter; a wrong
magic, version or uuid, or a duplicate id, fails the migration. Connections arriving once
every channel is present are dropped with "Extra incoming migration connection".

trioqio's :func:`run_destination` is that, on :class:`trioqio.NetListener`, as a pump
around :class:`~trioqio.migration._session.DestinationSession`, which holds the rules (CONFIG
first, no second main channel, END next, which multifd channels may join). Each client
handler runs in its own cancel scope; the first failure anywhere is recorded as a
:class:`~trioqio.MigrationError` (with its ``channel`` and ``kind``), told to the source
on the main channel (an ``ERROR`` message naming the cause) by the main channel's handler
before it closes, and ends the run.

Deliberate differences from QEMU's accept path:

* **Classification by content over TLS too.** A TLS channel cannot peek, so its first four
  bytes are *read* and handed on with the rest of its hello or init header; the order of
  the handshakes does not matter.
* **Strays before a migration are ignored.** Until a main channel's hello has been
  accepted (the session has *begun*), a connection that closes, or whose first bytes are
  not a main-channel hello or a multifd init header, is logged in one line and dropped,
  and the destination keeps listening (a health check or a stray ``GET /`` no longer ends
  it; QEMU 7.2 fails its incoming migration). A TLS handshake failure is never ignored:
  it is a refused source.
* **Every name of ``--listen`` listens, or none.** A name that resolves to several
  addresses (``localhost``: ``::1`` and ``127.0.0.1``) must bind all of them; otherwise a
  source given the same name could reach another process on the address that did not bind.
* **Stalls fail.** :class:`~trioqio.migration._watch.Watch` fails the migration when a
  channel it waits on (the main channel's CONFIG and END, every announced multifd
  channel's init and packets) makes no progress for ``timeout`` seconds.
* **``--output`` is opened before listening**, so a path that cannot be written fails at
  once, not after a source connected.

Pages are verified as they arrive (``_verify.py``: 16 bytes of digest plus one bit per
page) and written with ``pwrite`` to ``--output`` when asked; no copy of the image is kept.
Memory per channel: the packet being received plus the one being hashed (two packets,
1 MiB with the default 128 pages of 4 KiB).

Also unlike QEMU: no postcopy-preempt channel (an extra connection is always dropped); the
destination sends a verdict back on the main channel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from .._abc import ChannelFeature
from .._channel_file import FileChannel, open_file
from .._channel_tls import TLSChannel
from .._dns import resolve
from .._errors import HandshakeError, MigrationError, UnexpectedEOF
from .._listener import NetListener
from . import _crc
from ._groups import first_error
from ._protocol import (
    MAIN_MAGIC,
    MULTIFD_INIT_SIZE,
    MULTIFD_MAGIC,
    PACKET_HEADER_SIZE,
    Checksum,
    Config,
    End,
    ErrorMessage,
    PacketFlags,
    PacketHeader,
    Result,
    ResultStatus,
)
from ._report import ChannelFigures, ChannelShare, Figures
from ._session import Closed, DestinationSession, Input
from ._verify import PageDigests, digest_runs_async
from ._watch import Watch

if TYPE_CHECKING:
    from .._abc import Channel
    from .._address import SocketAddress
    from .._channel_socket import SocketChannel

__all__ = ["DestinationOptions", "DestinationOutcome", "run_destination"]

logger = logging.getLogger("trioqio.migration")
_MULTIFD_MAGIC_BYTES = MULTIFD_MAGIC.to_bytes(4, "big")
#: How long the main channel's handler tries to deliver an ERROR before it closes.
_ERROR_GRACE = 1.0


@attrs.define(kw_only=True, eq=False)
class DestinationOptions:
    """How to run the destination.

    Attributes:
        address: where to listen (``tcp:HOST:PORT``, ``unix:PATH``, ``fd:N``); a name
            that resolves to several addresses must listen on every one.
        backlog: the listen backlog (the expected channel count, as QEMU sets it).
        tls: server context (must require client certificates), or None.
        acl: DN globs a client certificate must match (with ``tls``).
        output: write the image to this file (``pwrite``), or None. It is opened (created
            if need be, not yet truncated) before listening.
        on_progress: called with each verified packet's payload size (Trio thread).
        on_event: called with notices (extra and stray connections).
        on_config: called with the source's CONFIG when it arrives (the announced size).
        checksum: the digest the source must announce, or None to use the source's.
        channels: the multifd channel count the source must announce, or None.
        timeout: fail when a channel the destination waits on makes no progress for this
            many seconds (before a migration begins, nothing is waited on); None: never.
        figures: the live figures to update (the caller reads them even after a
            failure); None: private ones.
        wrap_channel: called as ``wrap_channel(channel, name)`` with every multifd channel
            once its init header is accepted; the channel it returns is read instead
            (e.g. the misbehaving wrappers of :mod:`trioqio.testing`).
    """

    address: str | SocketAddress
    backlog: int = 4
    tls: ssl.SSLContext | None = None
    acl: Sequence[str] | None = None
    output: str | os.PathLike[str] | None = None
    on_progress: Callable[[int], object] | None = None
    on_event: Callable[[str], object] | None = None
    on_config: Callable[[Config], object] | None = None
    checksum: Checksum | None = None
    channels: int | None = None
    timeout: float | None = 30.0
    figures: Figures | None = None
    wrap_channel: Callable[[Channel, str], Channel] | None = None


@attrs.frozen(kw_only=True)
class DestinationOutcome:
    """What the destination saw."""

    config: Config
    transferred: int
    seconds: float
    shares: tuple[ChannelShare, ...]
    checksum: bytes | None
    source_checksum: bytes | None
    status: ResultStatus


class _Stray(Exception):
    """A connection before any migration began that is not one of ours: log, drop."""


@attrs.define(eq=False)
class _Incoming:
    """The I/O around one DestinationSession: channels, digests, output, the first error."""

    options: DestinationOptions
    session: DestinationSession
    figures: Figures
    watch: Watch
    output: FileChannel | None = None
    accepted: int = 0
    main: Channel | None = None
    config_ready: trio.Event = attrs.field(factory=trio.Event)
    digests: PageDigests | None = None
    all_ended: trio.Event = attrs.field(factory=trio.Event)
    end: End | None = None
    status: ResultStatus | None = None
    checksum: bytes | None = None
    error: MigrationError | None = None
    finished: trio.Event = attrs.field(factory=trio.Event)
    main_done: trio.Event = attrs.field(factory=trio.Event)
    main_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    pending: list[Config | End | Result | ErrorMessage | Closed] = attrs.field(
        factory=list[Config | End | Result | ErrorMessage | Closed]
    )
    pages: int = 0

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            # A nursery inside a handler wraps the MigrationError in a group; report the
            # error itself, which names the channel and the field.
            found = first_error(exc)
            if not isinstance(found, MigrationError):
                # A bug: log its traceback, but end the migration rather than hang it.
                logger.error("migration destination: internal error", exc_info=found)
                found = MigrationError(f"internal error: {found!r}", kind="other")
            self.error = found
        self.main_scope.cancel()
        self.finished.set()

    def notice(self, text: str) -> None:
        # One line: to the caller's on_event (the command prints it), else to the log.
        if self.options.on_event is not None:
            self.options.on_event(text)
        else:
            logger.warning("%s", text)

    # -- per connection (QEMU socket_accept_incoming_migration) ---------------------------

    async def handle(self, sock: SocketChannel) -> None:
        number = self.accepted
        self.accepted += 1
        label = f"accepted #{number}"
        if self.finished.is_set() or (self.session.began and self.session.all_joined):
            self.notice(f"extra incoming migration connection ({label}); ignoring it")
            return  # the listener closes it
        channel: Channel = sock
        try:
            if self.options.tls is not None:
                tls = TLSChannel.server(
                    sock, self.options.tls, acl=self.options.acl, name="migration-tls-incoming"
                )
                channel = tls
                try:
                    await tls.handshake()
                except (HandshakeError, trio.BrokenResourceError, OSError) as exc:
                    # A source without a client certificate, one the CA did not sign, or
                    # a DN outside the ACL: a clear refusal, not a traceback.
                    text = str(exc).removeprefix("TLS handshake failed: ")
                    raise MigrationError(
                        f"channel {label}: TLS handshake failed: {text}",
                        channel=label,
                        kind="handshake",
                    ) from exc
                magic = await _read_magic(channel, label)
                prefix = magic
            else:
                magic = await _peek_magic(channel, label)
                prefix = b""
            if magic == MAIN_MAGIC:
                await self.run_main(channel, label, prefix)
            elif magic == _MULTIFD_MAGIC_BYTES:
                await self.run_multifd(channel, label, prefix)
            else:
                raise _Stray(f"its first bytes {magic!r} are no migration channel's magic")
        except _Stray as exc:
            self._stray(label, exc, str(exc))
        except (trio.BrokenResourceError, OSError) as exc:
            # A reset outside the packet loop (main channel, init header, peek): a named
            # MigrationError, not a bare transport error escaping run_destination.
            if not self.session.began:
                self._stray(label, exc, f"it broke: {exc}")
            else:
                self.fail(
                    MigrationError(
                        f"incomplete migration: channel {label} broke: {exc}",
                        channel=label,
                        kind="broken",
                    )
                )
        except Exception as exc:
            self.fail(exc)
        finally:
            if channel is not self.main:
                with contextlib.suppress(Exception):
                    await channel.aclose()

    def _stray(self, label: str, exc: BaseException, why: str) -> None:
        if self.session.began:
            self.fail(
                MigrationError(
                    f"channel {label}: field 'magic': {why}",
                    channel=label,
                    field="magic",
                    kind="protocol",
                )
            )
        else:
            self.notice(f"ignoring connection {label} before any migration began: {why}")

    # -- the main channel ------------------------------------------------------------------

    async def run_main(self, channel: Channel, label: str, prefix: bytes) -> None:
        hello = await channel.receive_exactly_or_eof(8 - len(prefix))
        if hello is None or len(prefix + hello) < 8:
            raise _Stray("it closed inside the main hello")
        if not self.session.began:
            try:
                self.session.open_main(prefix + hello, label=label)
            except MigrationError as exc:
                raise _Stray(str(exc)) from exc
        else:
            self.session.open_main(prefix + hello, label=label)  # raises: a second main
        self.main = channel
        try:
            with self.main_scope:
                try:
                    await self._dialogue(channel)
                except (trio.BrokenResourceError, OSError) as exc:
                    raise MigrationError(
                        f"incomplete migration: main channel ({label}) broke: {exc}",
                        channel="main",
                        kind="broken",
                    ) from exc
        except MigrationError as exc:
            self.fail(exc)
        try:
            await self.finished.wait()
            if self.error is not None and (self.session.state, "send", Input.ERROR) in (
                self.session.table
            ):
                # Tell the source why (best effort, as QEMU's return path would).
                data = self.session.send(ErrorMessage(text=str(self.error)))
                with trio.move_on_after(_ERROR_GRACE), contextlib.suppress(Exception):
                    await channel.send_all(data)
        finally:
            self.main_done.set()
            with contextlib.suppress(Exception):
                await channel.aclose()

    async def _messages(self, channel: Channel) -> Config | End | ErrorMessage | None:
        """Return the next message the source sent (None at a clean end)."""
        while not self.pending:
            self.pending.extend(self.session.receive(await channel.receive_some(4096)))
        event = self.pending.pop(0)
        if isinstance(event, Closed | Result):  # Closed: only legal once DONE
            return None
        return event

    async def _dialogue(self, channel: Channel) -> None:
        self.watch.arm("main", "the source's CONFIG")
        config = await self._messages(channel)
        if isinstance(config, ErrorMessage):
            raise MigrationError(f"source failed: {config.text}", channel="main", kind="remote")
        assert isinstance(config, Config)  # the session allows nothing else here
        self.watch.disarm("main")
        self._begin(config)
        message = await self._messages(channel)
        if isinstance(message, ErrorMessage):
            raise MigrationError(f"source failed: {message.text}", channel="main", kind="remote")
        assert isinstance(message, End)
        self.end = message
        self.watch.disarm("main")
        await self.all_ended.wait()
        digests = self.digests
        assert digests is not None
        if not digests.complete:
            self.status = ResultStatus.INCOMPLETE
            self.checksum = None
        else:
            self.checksum = digests.checksum()
            match = self.checksum == message.checksum
            self.status = ResultStatus.MATCH if match else ResultStatus.MISMATCH
        result = Result(
            status=self.status, pages=digests.received, checksum=self.checksum or bytes(32)
        )
        data = self.session.send(result)
        self.figures.end()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await channel.send_all(data)
        self.finished.set()

    def _begin(self, config: Config) -> None:
        self.figures.size, self.figures.channels_announced = config.size, config.channels
        self.figures.config = config
        self.figures.begin()
        for index in range(config.channels):
            self.figures.channel(index)
            self.watch.arm(f"multifd {index}", "its connection and init header")
        self.digests = PageDigests(
            size=config.size,
            page_size=config.page_size,
            unit_pages=config.packet_pages,
            algorithm=config.checksum,
        )
        if self.output is not None:
            try:
                os.ftruncate(self.output.fileno(), config.size)
            except OSError as exc:
                raise _output_error(self.options, exc) from exc
        if self.options.on_config is not None:
            self.options.on_config(config)
        self.config_ready.set()
        self._check_ended()

    def _check_ended(self) -> None:
        if self.session.all_ended:
            self.all_ended.set()
            if self.end is None:
                self.watch.arm("main", "the source's END")

    # -- multifd channels (QEMU multifd_recv_new_channel + the recv thread) -------------------

    async def run_multifd(self, channel: Channel, label: str, prefix: bytes) -> None:
        data = await channel.receive_exactly_or_eof(MULTIFD_INIT_SIZE - len(prefix))
        if data is None or len(prefix + data) < MULTIFD_INIT_SIZE:
            if not self.session.began:
                raise _Stray("it closed inside its multifd init header")
            raise MigrationError(
                f"channel {label}: closed inside its init header", channel=label, kind="broken"
            )
        await self.config_ready.wait()
        config, digests = self.session.config, self.digests
        assert config is not None
        assert digests is not None
        init = self.session.join_multifd(prefix + data, label=label)
        name = f"multifd {init.id}"
        self.watch.arm(name, "a packet")
        if self.options.wrap_channel is not None:
            channel = self.options.wrap_channel(channel, name)
        figures = self.figures.channel(init.id)
        # Packets are read straight into recycled buffers of the largest packet size: at
        # most three per channel exist (one being read, one queued, one being verified).
        packet_bytes = config.packet_pages * config.page_size
        free: list[bytearray] = []
        jobs_in, jobs_out = trio.open_memory_channel[tuple[int, memoryview, bytearray]](1)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._verify_loop, figures, jobs_out, name, free)
                async with jobs_in:
                    while True:
                        try:
                            raw = await channel.receive_exactly_or_eof(PACKET_HEADER_SIZE)
                            if raw is None:
                                raise MigrationError(
                                    f"incomplete migration: {name} closed before its END "
                                    f"packet ({figures.packets} packets received on it)",
                                    channel=name,
                                    kind="broken",
                                )
                            header = PacketHeader.parse(raw, channel=name, config=config)
                            if header.flags & PacketFlags.END:
                                break
                            buffer = free.pop() if free else bytearray(packet_bytes)
                            payload = memoryview(buffer)[: header.length]
                            await channel.receive_exactly_into(payload)
                        except (trio.BrokenResourceError, OSError) as exc:
                            raise MigrationError(
                                f"incomplete migration: {name} broke mid-transfer: {exc}",
                                channel=name,
                                kind="broken",
                            ) from exc
                        await jobs_in.send((header.first_page, payload, buffer))
        finally:
            if channel is not self.main:
                with contextlib.suppress(Exception):
                    await channel.aclose()
        self.watch.disarm(name)
        self.session.end_multifd(init.id)
        self._check_ended()

    async def _verify_loop(
        self,
        figures: ChannelFigures,
        jobs: trio.MemoryReceiveChannel[tuple[int, memoryview, bytearray]],
        name: str,
        free: list[bytearray],
    ) -> None:
        config, digests = self.session.config, self.digests
        assert config is not None
        assert digests is not None
        on_progress, touch = self.options.on_progress, self.watch.touch
        async with jobs:
            async for first, payload, buffer in jobs:
                pages = -(-len(payload) // config.page_size)
                unit = digests.unit_bytes
                digest = await digest_runs_async(payload, unit, config.checksum)
                digests.record(first, digest, name, pages)
                if self.output is not None:
                    try:
                        await self.output.pwrite(payload, first * config.page_size)
                    except OSError as exc:
                        raise _output_error(self.options, exc) from exc
                figures.bytes += len(payload)
                figures.packets += 1
                touch(name)
                self.pages += pages
                if on_progress is not None:
                    on_progress(len(payload))
                free.append(buffer)  # verified (and written): the receiver may reuse it


def _output_error(options: DestinationOptions, exc: OSError) -> MigrationError:
    path = os.fspath(options.output) if options.output is not None else "?"
    return MigrationError(f"--output {path!r}: {exc.strerror or exc}", field="output", kind="local")


async def _peek_magic(channel: Channel, label: str) -> bytes:
    """Peek four bytes without consuming them (QEMU ``migration_channel_read_peek``)."""
    if ChannelFeature.READ_MSG_PEEK not in channel.features:
        raise MigrationError(
            f"channel {label}: cannot classify a channel that cannot peek",
            channel=label,
            kind="local",
        )
    while True:
        data = await channel.peek(4)
        if not data:
            raise _Stray("it closed before its magic")
        if len(data) >= 4:
            return data[:4]
        await trio.sleep(0.001)  # a partial peek: QEMU sleeps 1 ms and retries


async def _read_magic(channel: Channel, label: str) -> bytes:
    """Read the first four bytes (a TLS channel cannot peek)."""
    try:
        data = await channel.receive_exactly_or_eof(4)
    except UnexpectedEOF as exc:
        raise _Stray("it closed before its magic") from exc
    if data is None:
        raise _Stray("it closed before its magic")
    return data


async def _open_output(options: DestinationOptions) -> FileChannel | None:
    if options.output is None:
        return None
    try:
        # Not truncated yet: CONFIG gives the size (ftruncate then).
        return await open_file(options.output, os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _output_error(options, exc) from exc


async def _listen(listener: NetListener, address: str | SocketAddress, backlog: int) -> None:
    """Listen on every address ``address`` resolves to, or fail naming those that did not."""
    wanted = await resolve(address)
    opened = await listener.open(address, backlog=backlog)
    if len(opened) >= len(wanted):
        return
    bound = [str(channel.local_address) for channel in opened]
    hosts = {getattr(a, "host", None) for a in listener.addresses}
    missing = [str(a) for a in wanted if getattr(a, "host", None) not in hosts]
    raise MigrationError(
        f"--listen {address}: resolves to {len(wanted)} addresses but only "
        f"{', '.join(bound)} could listen (not {', '.join(missing) or 'the others'}: "
        "another process may hold the port there); a source given this name could reach "
        "that other process: pick a free port or a numeric address",
        field="listen",
        kind="local",
    )


async def run_destination(
    options: DestinationOptions,
    *,
    task_status: trio.TaskStatus[list[SocketAddress]] = trio.TASK_STATUS_IGNORED,
) -> DestinationOutcome:
    """Listen, accept the main and multifd channels, receive and verify the image.

    QEMU: ``socket_start_incoming_migration`` + ``migration_ioc_process_incoming`` +
    ``multifd_recv_new_channel``.

    Args:
        options: where to listen and what to do with the pages.
        task_status: for ``nursery.start``: receives the listening addresses.

    Returns:
        The outcome; ``status`` says whether the checksums matched.

    Raises:
        trioqio.MigrationError: a channel failed, stalled or carried a bad field, or a
            local precondition failed; its ``channel``, ``field`` and ``kind`` say which
            and how. Raised before it listens when ``--output`` cannot be opened, when a
            name does not listen on every address, or when ``TRIOQIO_CRC32`` has a bad
            value (see ``_crc.py``).

    Example::

        options = DestinationOptions(address="tcp:localhost:0")
        addresses = await nursery.start(run_destination, options)
    """
    _crc.check_provider()
    figures = options.figures if options.figures is not None else Figures()
    incoming = _Incoming(
        options=options,
        session=DestinationSession(checksum=options.checksum, channels=options.channels),
        figures=figures,
        watch=Watch(timeout=options.timeout),
    )
    incoming.output = await _open_output(options)
    try:
        await _serve(incoming, task_status)
    except Exception as exc:
        # The listener's nursery wraps what was raised inside it in a group: report the
        # MigrationError itself (e.g. a name that did not listen on every address).
        found = first_error(exc)
        if isinstance(found, MigrationError) and found is not exc:
            raise found from None
        raise
    finally:
        figures.end()
        if incoming.output is not None:
            await incoming.output.aclose()
    if incoming.error is not None:
        raise incoming.error
    config = incoming.session.config
    assert config is not None
    assert incoming.status is not None
    return DestinationOutcome(
        config=config,
        transferred=figures.bytes,
        seconds=figures.seconds,
        shares=figures.shares,
        checksum=incoming.checksum,
        source_checksum=incoming.end.checksum if incoming.end is not None else None,
        status=incoming.status,
    )


async def _serve(incoming: _Incoming, task_status: trio.TaskStatus[list[SocketAddress]]) -> None:
    options = incoming.options
    async with NetListener(name="migration-socket-listener") as listener:
        await _listen(listener, options.address, options.backlog)
        listener.set_client_func(incoming.handle)
        task_status.started(listener.addresses)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch, incoming)
            await incoming.finished.wait()
            nursery.cancel_scope.cancel()
        listener.set_client_func(None)
        if incoming.main is not None:
            with trio.move_on_after(2 * _ERROR_GRACE):
                await incoming.main_done.wait()  # the main handler told the source


async def _watch(incoming: _Incoming) -> None:
    try:
        await incoming.watch.run()
    except MigrationError as exc:
        incoming.fail(exc)
