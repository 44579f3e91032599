"""The migration destination (QEMU ``migration/socket.c`` incoming, ``migration/channel.c``,
``multifd_recv_new_channel``).

QEMU listens with a ``QIONetListener`` whose backlog is the multifd channel count. Each
accepted connection is upgraded to TLS when TLS is configured, then classified: a peekable
channel by its first four bytes (``"QEVM"`` is the main channel, ``0x11223344`` a multifd
channel); a TLS channel, which cannot peek, by order: the first is main. A multifd channel
sends a 64-byte init header whose id places it, so accept order does not matter; a wrong
magic, version or uuid, or a duplicate id, fails the migration. Connections arriving once
every channel is present are dropped with "Extra incoming migration connection".

trioqio's :func:`run_destination` is that, on :class:`trioqio.NetListener`: each client
handler runs in its own cancel scope; the first failure anywhere is recorded, told to the
source on the main channel (an ``ERROR`` message), and ends the run.

**Ordering guarantee over TLS.** The source opens multifd connections only after the main
channel's TLS handshake has completed and its config has been written (``_source.py``), so
the first connection the destination accepts is the main one. trioqio checks it anyway:
the main channel's first bytes must be ``"QEVM"`` and a multifd channel's init header must
carry the multifd magic, so a misordered peer fails with a named field rather than being
misread.

Pages are verified as they arrive (``_verify.py``: 16 bytes of digest plus one bit per
page) and written with ``pwrite`` to ``--output`` when asked; no copy of the image is kept.
Memory per channel: the packet being received plus the one being hashed (two packets,
1 MiB with the default 128 pages of 4 KiB).

Differences from QEMU: no postcopy-preempt channel (an extra connection is always
dropped); the destination sends a verdict back on the main channel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from .._abc import ChannelFeature
from .._channel_file import FileChannel, open_file
from .._channel_tls import TLSChannel
from .._errors import HandshakeError, MigrationError, UnexpectedEOF
from .._listener import NetListener
from . import _crc
from ._groups import first_error
from ._protocol import (
    MAIN_MAGIC,
    MESSAGE_HEADER_SIZE,
    MULTIFD_INIT_SIZE,
    MULTIFD_MAGIC,
    PACKET_HEADER_SIZE,
    Checksum,
    Config,
    End,
    ErrorMessage,
    MultiFDInit,
    PacketFlags,
    PacketHeader,
    Result,
    ResultStatus,
    encode_message,
    parse_main_hello,
    parse_message,
    parse_message_header,
)
from ._report import ChannelShare
from ._verify import PageDigests, digest_runs_async

if TYPE_CHECKING:
    from .._abc import Channel
    from .._address import SocketAddress
    from .._channel_socket import SocketChannel

__all__ = ["DestinationOptions", "DestinationOutcome", "run_destination"]

logger = logging.getLogger("trioqio.migration")
_MULTIFD_MAGIC_BYTES = MULTIFD_MAGIC.to_bytes(4, "big")


@attrs.define(kw_only=True, eq=False)
class DestinationOptions:
    """How to run the destination.

    Attributes:
        address: where to listen (``tcp:HOST:PORT``, ``unix:PATH``, ``fd:N``).
        backlog: the listen backlog (the expected channel count, as QEMU sets it).
        tls: server context (must require client certificates), or None.
        acl: DN globs a client certificate must match (with ``tls``).
        output: write the image to this file (``pwrite``), or None.
        on_progress: called with each verified packet's payload size (Trio thread).
        on_event: called with notices (extra connections, test hooks).
        hold_after_pages: test hook: stop receiving after this many pages.
        checksum: the digest the source must announce, or None to use the source's.
    """

    address: str | SocketAddress
    backlog: int = 4
    tls: ssl.SSLContext | None = None
    acl: Sequence[str] | None = None
    output: str | os.PathLike[str] | None = None
    on_progress: Callable[[int], object] | None = None
    on_event: Callable[[str], object] | None = None
    hold_after_pages: int | None = None
    checksum: Checksum | None = None


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


@attrs.define(eq=False)
class _Receiver:
    id: int
    bytes: int = 0
    packets: int = 0


@attrs.define(eq=False)
class _Incoming:
    options: DestinationOptions
    accepted: int = 0
    main_claimed: bool = False
    main: Channel | None = None
    config: Config | None = None
    config_ready: trio.Event = attrs.field(factory=trio.Event)
    digests: PageDigests | None = None
    output: FileChannel | None = None
    receivers: dict[int, _Receiver] = attrs.field(factory=dict[int, _Receiver])
    ended: int = 0
    all_ended: trio.Event = attrs.field(factory=trio.Event)
    end: End | None = None
    status: ResultStatus | None = None
    checksum: bytes | None = None
    error: BaseException | None = None
    finished: trio.Event = attrs.field(factory=trio.Event)
    start: float | None = None
    pages: int = 0

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            # A nursery inside a handler wraps the MigrationError in a group; report the
            # error itself, which names the channel and the field.
            self.error = first_error(exc)
        self.finished.set()

    def notice(self, text: str) -> None:
        logger.warning("%s", text)
        if self.options.on_event is not None:
            self.options.on_event(text)

    def all_present(self) -> bool:
        config = self.config
        return (
            self.main is not None and config is not None and len(self.receivers) == config.channels
        )

    # -- per connection (QEMU socket_accept_incoming_migration) ---------------------------

    async def handle(self, sock: SocketChannel) -> None:
        number = self.accepted
        self.accepted += 1
        label = f"accepted #{number}"
        if self.all_present() or self.finished.is_set():
            self.notice(f"extra incoming migration connection ({label}); ignoring it")
            return  # the listener closes it
        if self.start is None:
            self.start = time.monotonic()
        channel: Channel = sock
        try:
            is_main: bool | None = None
            if self.options.tls is not None:
                # Not peekable after the upgrade: QEMU's rule, the first channel is main.
                is_main = not self.main_claimed
                self.main_claimed = True
                tls = TLSChannel.server(
                    sock, self.options.tls, acl=self.options.acl, name="migration-tls-incoming"
                )
                channel = tls
                try:
                    await tls.handshake()
                except (HandshakeError, trio.BrokenResourceError, OSError) as exc:
                    # A source without a client certificate, one the CA did not sign, or
                    # a DN outside the ACL: a clear refusal, not a traceback.
                    raise MigrationError(f"channel {label}: TLS handshake failed: {exc}") from exc
            else:
                magic = await _peek_magic(channel, label)
                if magic == MAIN_MAGIC:
                    is_main = True
                elif magic == _MULTIFD_MAGIC_BYTES:
                    is_main = False
                else:
                    raise MigrationError(
                        f"channel {label}: field 'magic': unknown channel magic {magic!r}"
                    )
            if is_main:
                await self.run_main(channel, label)
            else:
                await self.run_multifd(channel, label)
        except (trio.BrokenResourceError, OSError) as exc:
            # A reset outside the packet loop (main channel, init header, peek): a named
            # MigrationError, not a bare transport error escaping run_destination.
            self.fail(MigrationError(f"incomplete migration: channel {label} broke: {exc}"))
        except Exception as exc:
            self.fail(exc)
        finally:
            with contextlib.suppress(Exception):
                await channel.aclose()

    # -- the main channel ------------------------------------------------------------------

    async def run_main(self, channel: Channel, label: str) -> None:
        if self.main is not None:
            raise MigrationError(f"channel {label}: field 'magic': a second main channel")
        self.main = channel
        try:
            parse_main_hello(await channel.receive_exactly(8), channel=label)
            message = await _read_message(channel, "main")
        except UnexpectedEOF as exc:
            raise MigrationError(f"main channel: closed before its config: {exc}") from exc
        if not isinstance(message, Config):
            raise MigrationError("channel main: field 'type': expected CONFIG first")
        wanted = self.options.checksum
        if wanted is not None and message.checksum is not wanted:
            error = MigrationError(
                f"channel main: field 'checksum': the source uses {message.checksum.label}, "
                f"this destination was told to expect {wanted.label}"
            )
            with trio.move_on_after(1), contextlib.suppress(Exception):
                await channel.send_all(encode_message(ErrorMessage(text=str(error))))
            raise error
        self.config = message
        self.digests = PageDigests(
            size=message.size,
            page_size=message.page_size,
            unit_pages=message.packet_pages,
            algorithm=message.checksum,
        )
        if self.options.output is not None:
            self.output = await open_file(
                self.options.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644
            )
            os.ftruncate(self.output.fileno(), message.size)
        self.config_ready.set()
        if message.channels == 0 or message.size == 0:
            self.all_ended.set()
        try:
            end = await _read_message(channel, "main", eof_ok=True)
        except (trio.BrokenResourceError, OSError) as exc:
            raise MigrationError(
                f"incomplete migration: main channel broke before the source's END: {exc}"
            ) from exc
        if end is None:
            raise MigrationError(
                "incomplete migration: the source closed the main channel before END "
                f"({self.pages} of {message.num_pages} pages received)"
            )
        if isinstance(end, ErrorMessage):
            raise MigrationError(f"source failed: {end.text}")
        if not isinstance(end, End):
            raise MigrationError("channel main: field 'type': expected END")
        self.end = end
        await self.all_ended.wait()
        assert self.digests is not None
        if not self.digests.complete:
            self.status = ResultStatus.INCOMPLETE
            self.checksum = None
        else:
            self.checksum = self.digests.checksum()
            match = self.checksum == end.checksum
            self.status = ResultStatus.MATCH if match else ResultStatus.MISMATCH
        result = Result(
            status=self.status, pages=self.digests.received, checksum=self.checksum or bytes(32)
        )
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await channel.send_all(encode_message(result))
        self.finished.set()

    # -- multifd channels (QEMU multifd_recv_new_channel + the recv thread) -------------------

    async def run_multifd(self, channel: Channel, label: str) -> None:
        try:
            data = await channel.receive_exactly(MULTIFD_INIT_SIZE)
        except UnexpectedEOF as exc:
            raise MigrationError(f"channel {label}: closed inside its init header") from exc
        await self.config_ready.wait()
        config = self.config
        assert config is not None
        init = MultiFDInit.parse(
            data, channel=label, expected_uuid=config.uuid, channels=config.channels
        )
        if init.id in self.receivers:
            raise MigrationError(
                f"channel {label}: field 'id': received id {init.id} already set up"
            )
        receiver = self.receivers[init.id] = _Receiver(id=init.id)
        name = f"multifd {init.id}"
        # Packets are read straight into recycled buffers of the largest packet size: at
        # most three per channel exist (one being read, one queued, one being verified).
        packet_bytes = config.packet_pages * config.page_size
        free: list[bytearray] = []
        jobs_in, jobs_out = trio.open_memory_channel[tuple[int, memoryview, bytearray]](1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._verify_loop, receiver, jobs_out, name, free)
            async with jobs_in:
                while True:
                    try:
                        raw = await channel.receive_exactly_or_eof(PACKET_HEADER_SIZE)
                        if raw is None:
                            raise MigrationError(
                                f"incomplete migration: {name} closed before its END packet "
                                f"({receiver.packets} packets received on it)"
                            )
                        header = PacketHeader.parse(raw, channel=name, config=config)
                        if header.flags & PacketFlags.END:
                            break
                        buffer = free.pop() if free else bytearray(packet_bytes)
                        payload = memoryview(buffer)[: header.length]
                        await channel.receive_exactly_into(payload)
                    except (trio.BrokenResourceError, OSError) as exc:
                        raise MigrationError(
                            f"incomplete migration: {name} broke mid-transfer: {exc}"
                        ) from exc
                    await jobs_in.send((header.first_page, payload, buffer))
        self.ended += 1
        if self.ended == config.channels:
            self.all_ended.set()

    async def _verify_loop(
        self,
        receiver: _Receiver,
        jobs: trio.MemoryReceiveChannel[tuple[int, memoryview, bytearray]],
        name: str,
        free: list[bytearray],
    ) -> None:
        config, digests = self.config, self.digests
        assert config is not None
        assert digests is not None
        async with jobs:
            async for first, payload, buffer in jobs:
                pages = -(-len(payload) // config.page_size)
                unit = digests.unit_bytes
                digest = await digest_runs_async(payload, unit, config.checksum)
                digests.record(first, digest, name, pages)
                if self.output is not None:
                    await self.output.pwrite(payload, first * config.page_size)
                receiver.bytes += len(payload)
                receiver.packets += 1
                self.pages += pages
                if self.options.on_progress is not None:
                    self.options.on_progress(len(payload))
                free.append(buffer)  # verified (and written): the receiver may reuse it
                hold = self.options.hold_after_pages
                if hold is not None and self.pages >= hold:
                    self.notice("test hook: holding the destination")
                    await trio.sleep_forever()


async def _peek_magic(channel: Channel, label: str) -> bytes:
    """Peek four bytes without consuming them (QEMU ``migration_channel_read_peek``)."""
    if ChannelFeature.READ_MSG_PEEK not in channel.features:
        raise MigrationError(f"channel {label}: cannot classify a channel that cannot peek")
    while True:
        data = await channel.peek(4)
        if not data:
            raise MigrationError(f"channel {label}: field 'magic': closed before its magic")
        if len(data) >= 4:
            return data[:4]
        await trio.sleep(0.001)  # a partial peek: QEMU sleeps 1 ms and retries


async def _read_message(
    channel: Channel, label: str, *, eof_ok: bool = False
) -> Config | End | Result | ErrorMessage | None:
    header = await channel.receive_exactly_or_eof(MESSAGE_HEADER_SIZE)
    if header is None:
        if eof_ok:
            return None
        raise MigrationError(f"channel {label}: closed before a message")
    kind, length = parse_message_header(header, channel=label)
    return parse_message(kind, await channel.receive_exactly(length), channel=label)


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
        trioqio.MigrationError: a channel failed or carried a bad field; the message
            names the channel and the field. Also raised before it listens when
            ``TRIOQIO_CRC32`` has a bad value (see ``_crc.py``).

    Example::

        options = DestinationOptions(address="tcp:localhost:0")
        addresses = await nursery.start(run_destination, options)
    """
    _crc.check_provider()
    incoming = _Incoming(options=options)
    try:
        async with NetListener(name="migration-socket-listener") as listener:
            await listener.open(options.address, backlog=options.backlog)
            listener.set_client_func(incoming.handle)
            task_status.started(listener.addresses)
            await incoming.finished.wait()
            if incoming.error is not None and incoming.main is not None:
                # Tell the source why (best effort, as QEMU's return path would).
                with trio.move_on_after(1), contextlib.suppress(Exception):
                    await incoming.main.send_all(
                        encode_message(ErrorMessage(text=str(incoming.error)))
                    )
            listener.set_client_func(None)
    finally:
        if incoming.output is not None:
            await incoming.output.aclose()
    if incoming.error is not None:
        raise incoming.error
    config = incoming.config
    assert config is not None
    assert incoming.status is not None
    seconds = time.monotonic() - (incoming.start or time.monotonic())
    shares = tuple(
        ChannelShare(id=r.id, bytes=r.bytes, packets=r.packets)
        for r in sorted(incoming.receivers.values(), key=lambda r: r.id)
    )
    return DestinationOutcome(
        config=config,
        transferred=sum(share.bytes for share in shares),
        seconds=seconds,
        shares=shares,
        checksum=incoming.checksum,
        source_checksum=incoming.end.checksum if incoming.end is not None else None,
        status=incoming.status,
    )
