"""The migration source (QEMU ``migration/socket.c`` outgoing, ``migration/multifd.c`` send).

QEMU's source connects the main channel with ``qio_channel_socket_connect_async``, upgrades
it to TLS with ``qio_channel_tls_handshake`` when asked, then ``multifd_send_setup`` starts
N more ``connect_async`` calls in parallel and waits on the ``channels_created`` semaphore
until each has connected *or failed*. Every multifd send thread writes the 64-byte init
header and then page packets with ``writev``; a shared job queue feeds them.

trioqio does the same with :func:`trioqio.connect_task` (the blocking connect runs in a
worker thread, the completion in the Trio thread), :meth:`TLSChannel.handshake_task`, one
sender *task* per channel instead of a thread, and one shared iterator of page runs as the
queue (the senders all run in the Trio thread, so taking the next run needs no lock and no
wake-up), so a faster channel simply takes more runs.

Differences from QEMU: the whole image is sent once (no dirty-page iterations); the main
channel carries a small config/end/result dialogue (``_protocol.py``) instead of device
state; the source waits for the destination's verdict and reports it.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import attrs
import trio

from .._channel_socket import SocketChannel
from .._channel_tls import TLSChannel
from .._connect import connect_task
from .._errors import MigrationError
from .._task import Task
from . import _crc
from ._groups import first_error
from ._protocol import (
    DEFAULT_CHECKSUM,
    MESSAGE_HEADER_SIZE,
    Checksum,
    Config,
    End,
    ErrorMessage,
    MultiFDInit,
    PacketFlags,
    PacketHeader,
    Result,
    encode_message,
    pack_main_hello,
    parse_message,
    parse_message_header,
)
from ._report import ChannelShare
from ._verify import PageDigests, digest_runs_async, digest_views

if TYPE_CHECKING:
    from .._abc import Channel
    from .._address import SocketAddress
    from ._image import Image

__all__ = ["SourceOptions", "SourceOutcome", "run_source"]


@attrs.define(kw_only=True, eq=False)
class SourceOptions:
    """How to run the source.

    Attributes:
        address: where the destination listens.
        image: the pages to send.
        channels: number of multifd channels.
        uuid: the VM's 16-byte uuid.
        packet_pages: pages per packet.
        tls: client context, or None for plain channels.
        tls_hostname: the name the destination's certificate must carry.
        on_progress: called with each packet's payload size (Trio thread).
        on_event: called with trace lines (``--trace``).
        corrupt_page: test hook: flip one byte of this page on the wire.
        hold_after_pages: test hook: stop sending (and wait forever) after this many pages.
        checksum: the digest both ends compute per packet (announced in CONFIG).
    """

    address: str | SocketAddress
    image: Image
    channels: int = 4
    uuid: bytes
    packet_pages: int = 128
    tls: ssl.SSLContext | None = None
    tls_hostname: str | None = None
    on_progress: Callable[[int], object] | None = None
    on_event: Callable[[str], object] | None = None
    corrupt_page: int | None = None
    hold_after_pages: int | None = None
    checksum: Checksum = DEFAULT_CHECKSUM


@attrs.frozen(kw_only=True)
class SourceOutcome:
    """What the source saw: bytes, time, shares, both checksums."""

    transferred: int
    seconds: float
    shares: tuple[ChannelShare, ...]
    checksum: bytes
    result: Result


@attrs.define(eq=False)
class _Sender:
    """One multifd channel on the source side."""

    id: int
    channel: Channel | None = None
    bytes: int = 0
    packets: int = 0


@attrs.define(eq=False)
class _Run:
    options: SourceOptions
    config: Config
    digests: PageDigests
    senders: list[_Sender]
    main: Channel | None = None
    error: BaseException | None = None
    cancel: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    result: Result | None = None
    pages_sent: int = 0

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            if self.options.tls is not None and "destination went away" in str(exc):
                # TLS 1.3 checks the client certificate after the client's side of the
                # handshake is done: a refused source only sees the connection drop.
                exc = MigrationError(
                    f"{exc} (a TLS destination drops the connection like this when it "
                    "refuses the source's client certificate: not signed by its CA, or a DN "
                    "outside its --tls-acl)"
                )
            self.error = exc
        self.cancel.cancel()

    def event(self, text: str) -> None:
        if self.options.on_event is not None:
            self.options.on_event(text)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _connect_main(run: _Run, nursery: trio.Nursery) -> Channel:
    options = run.options

    def connected(task: Task[SocketChannel]) -> None:
        run.event(f"completion of connect main (task {task.name})")

    task = connect_task(nursery, options.address, connected, name="migration-socket-outgoing")
    try:
        channel: Channel = await task.wait()
    except OSError as exc:
        raise MigrationError(f"main channel: cannot connect to {options.address}: {exc}") from exc
    except trio.Cancelled:
        # Cancelled after the connect succeeded: nobody else owns the channel, close it.
        # (task.result raises TaskError when the connect failed: nothing to close then.)
        with trio.CancelScope(shield=True), contextlib.suppress(Exception):
            if task.done:
                await trio.aclose_forcefully(task.result)
        raise
    if options.tls is not None:
        tls = TLSChannel.client(
            channel, options.tls, hostname=options.tls_hostname, name="migration-tls-outgoing"
        )
        try:
            await tls.handshake_task(nursery).wait()
        except Exception as exc:
            await tls.aclose()
            raise MigrationError(f"main channel: TLS handshake failed: {exc}") from exc
        channel = tls
    channel.set_delay(False)
    return channel


async def _create_channels(run: _Run, nursery: trio.Nursery) -> None:
    """Connect every multifd channel in parallel; wait until each connected or failed."""
    options = run.options
    created = trio.Semaphore(0)  # QEMU's channels_created
    failures: list[str] = []

    def finished(sender: _Sender, channel: Channel) -> None:
        channel.set_delay(False)  # TCP_NODELAY, as multifd_channel_connect does
        sender.channel = channel
        created.release()

    def tls_done(sender: _Sender, task: Task[TLSChannel]) -> None:
        run.event(f"completion of TLS handshake multifd {sender.id}")
        if task.error is not None:
            failures.append(f"multifd {sender.id}: TLS handshake failed: {_describe(task.error)}")
            created.release()
            return
        finished(sender, task.result)

    def connected(sender: _Sender, task: Task[SocketChannel]) -> None:
        run.event(f"completion of connect multifd {sender.id}")
        if task.error is not None:
            failures.append(
                f"multifd {sender.id}: cannot connect to {options.address}: {_describe(task.error)}"
            )
            created.release()
            return
        channel = task.result
        if options.tls is None:
            finished(sender, channel)
            return
        tls = TLSChannel.client(
            channel, options.tls, hostname=options.tls_hostname, name="multifd-tls-outgoing"
        )
        sender.channel = tls  # owned from here, so a failure still closes it
        tls.handshake_task(nursery, functools.partial(tls_done, sender))

    for sender in run.senders:
        connect_task(
            nursery,
            options.address,
            functools.partial(connected, sender),
            name=f"multifdsend_{sender.id}",
        )
    for _ in run.senders:
        await created.acquire()
    if failures:
        raise MigrationError("; ".join(failures))


def _damaged(
    run: _Run, first: int, count: int, views: list[bytes | memoryview]
) -> list[bytes | memoryview]:
    """Test hook: flip one byte of ``corrupt_page`` on the wire (the digest keeps the truth)."""
    corrupt = run.options.corrupt_page
    if corrupt is None or not first <= corrupt < first + count:
        return views
    page_size = run.config.page_size
    whole = bytearray(b"".join(views))
    whole[(corrupt - first) * page_size] ^= 0xFF
    return [memoryview(whole)]


async def _send_inline(run: _Run, channel: Channel, first: int, count: int) -> tuple[int, bytes]:
    """Send one packet whose digest is cheap (CRC32): chained over the page views, inline.

    No per-packet task: the CRC of 512 KiB takes about as long as a thread hand-off, so it
    runs in the Trio thread before the ``writev`` of the header and every page view (no
    join on a socket; TLS encrypts records, so it gets the pages joined into one write).
    ``writev`` is the cancellation point.
    """
    views = list(await run.options.image.read_views(first, count))
    length = sum(map(len, views))  # read_views gives byte buffers: len() counts bytes
    digest = digest_views(views, run.config.checksum)
    header = PacketHeader(first_page=first, num_pages=count, length=length)
    wire = _damaged(run, first, count, views)
    if len(wire) > 1 and not isinstance(channel, SocketChannel):
        wire = [b"".join(wire)]
    await channel.writev([header.pack(), *wire])  # errors: see _send
    return length, digest


async def _send_threaded(
    run: _Run, channel: Channel, first: int, count: int, name: str
) -> tuple[int, bytes]:
    """Send one packet whose digest is costly: hashed in a worker thread during the write.

    The packet is one joined buffer, so the worker makes one hash call with the GIL
    released throughout (see ``_verify.py``).
    """
    config = run.config
    payload = await run.options.image.read_run(first, count)
    length = len(memoryview(payload))
    header = PacketHeader(first_page=first, num_pages=count, length=length)
    digests: list[bytes] = []

    async def digest() -> None:
        digests.append(await digest_runs_async(payload, run.digests.unit_bytes, config.checksum))

    async with trio.open_nursery() as packet:
        packet.start_soon(digest)  # hashing overlaps the write
        try:
            wire = _damaged(run, first, count, [memoryview(payload)])
            await channel.writev([header.pack(), *wire])
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            # Named here, inside the nursery, which would wrap the bare error in a group.
            raise MigrationError(f"{name}: destination went away: {_describe(exc)}") from exc
    return length, digests[0]


def _runs(config: Config) -> Iterator[tuple[int, int]]:
    """The image's page runs ``(first, count)`` in order: whole packets, the last one short."""
    for first in range(0, config.num_pages, config.packet_pages):
        yield first, min(config.packet_pages, config.num_pages - first)


async def _send(run: _Run, sender: _Sender, queue: Iterator[tuple[int, int]]) -> None:
    options, config = run.options, run.config
    channel = sender.channel
    assert channel is not None
    name = f"multifd {sender.id}"
    inline = config.checksum is Checksum.CRC32
    try:
        await channel.send_all(MultiFDInit(uuid=config.uuid, id=sender.id).pack())
        for first, count in queue:  # shared with the other senders
            if inline:
                length, digest = await _send_inline(run, channel, first, count)
            else:
                length, digest = await _send_threaded(run, channel, first, count, name)
            run.digests.record(first, digest, name, count)
            sender.bytes += length
            sender.packets += 1
            run.pages_sent += count
            if options.on_progress is not None:
                options.on_progress(length)
            hold = options.hold_after_pages
            if hold is not None and run.pages_sent >= hold:
                run.event("test hook: holding the source")
                await trio.sleep_forever()
        end = PacketHeader(first_page=0, num_pages=0, length=0, flags=PacketFlags.END)
        await channel.send_all(end.pack())
        await channel.send_eof()  # TLS: close_notify (QEMU qio_channel_tls_bye)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise MigrationError(f"{name}: destination went away: {_describe(exc)}") from exc


async def _read_main(run: _Run, main: Channel) -> None:
    """Read the destination's messages: RESULT at the end, or ERROR at any time."""
    try:
        header = await main.receive_exactly_or_eof(MESSAGE_HEADER_SIZE)
        if header is None:
            raise MigrationError(
                "main channel: the destination closed the connection before its verdict"
            )
        kind, length = parse_message_header(header, channel="main")
        message = parse_message(kind, await main.receive_exactly(length), channel="main")
    except (trio.BrokenResourceError, OSError) as exc:
        raise MigrationError(f"main channel: destination went away: {_describe(exc)}") from exc
    if isinstance(message, ErrorMessage):
        raise MigrationError(f"destination failed: {message.text}")
    if not isinstance(message, Result):
        raise MigrationError(f"main channel: field 'type': unexpected {kind.name} message")
    run.result = message


async def run_source(options: SourceOptions) -> SourceOutcome:
    """Connect to a destination and migrate ``options.image`` to it.

    QEMU: ``socket_start_outgoing_migration`` + ``multifd_send_setup`` + the send threads.

    Args:
        options: what and where.

    Returns:
        The outcome, including the destination's verdict.

    Raises:
        trioqio.MigrationError: a connection, handshake or send failed, or the destination
            reported an error; the message says which channel and why. Also raised before
            anything connects when ``TRIOQIO_CRC32`` has a bad value (see ``_crc.py``).

    Example::

        outcome = await run_source(SourceOptions(address="tcp:localhost:4444",
                                                 image=GeneratedImage(size=1 << 20, seed=1),
                                                 uuid=os.urandom(16)))
    """
    _crc.check_provider()
    image = options.image
    config = Config(
        uuid=options.uuid,
        size=image.size,
        page_size=image.page_size,
        channels=options.channels,
        packet_pages=options.packet_pages,
        seed=image.seed,
        kind=image.kind,
        checksum=options.checksum,
    )
    run = _Run(
        options=options,
        config=config,
        digests=PageDigests(
            size=config.size,
            page_size=config.page_size,
            unit_pages=config.packet_pages,
            algorithm=config.checksum,
        ),
        senders=[_Sender(id=index) for index in range(options.channels)],
    )
    start = time.monotonic()
    try:
        with run.cancel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_main_flow, run, nursery)
    except Exception as exc:
        # A sender's error that raced run.cancel: the group held a Cancelled too, so it
        # passed _main_flow's handler; the scope stripped the Cancelled. Report it.
        run.fail(_first_error(exc))
    finally:
        # Shielded and forceful: when the migration is cancelled, every channel must still
        # be closed (an unshielded aclose would raise Cancelled and skip the rest), and no
        # close may wait on a peer (aclose_forcefully skips TLS's close_notify).
        with trio.CancelScope(shield=True):
            channels = [sender.channel for sender in run.senders]
            for channel in [*channels, run.main]:
                if channel is not None:
                    with contextlib.suppress(Exception):
                        await trio.aclose_forcefully(channel)
    if run.error is not None:
        raise run.error
    assert run.result is not None
    return SourceOutcome(
        transferred=sum(sender.bytes for sender in run.senders),
        seconds=time.monotonic() - start,
        shares=tuple(
            ChannelShare(id=sender.id, bytes=sender.bytes, packets=sender.packets)
            for sender in run.senders
        ),
        checksum=run.digests.checksum(),
        result=run.result,
    )


async def _guard(run: _Run, fn: Callable[..., object], *args: object) -> None:
    try:
        await fn(*args)  # type: ignore[misc]  # every guarded function is async
    except Exception as exc:
        run.fail(exc)


async def _main_flow(run: _Run, nursery: trio.Nursery) -> None:
    try:
        run.main = main = await _connect_main(run, nursery)
        await main.writev([pack_main_hello(), encode_message(run.config)])
        verdict = trio.Event()

        async def read_main() -> None:
            await _read_main(run, main)
            verdict.set()

        nursery.start_soon(_guard, run, read_main)
        await _create_channels(run, nursery)
        queue = _runs(run.config)
        async with trio.open_nursery() as senders:
            for sender in run.senders:
                senders.start_soon(_send, run, sender, queue)
        end = End(pages=run.pages_sent, checksum=run.digests.checksum())
        await main.send_all(encode_message(end))
        await verdict.wait()
    except Exception as exc:
        run.fail(_first_error(exc))


def _first_error(exc: BaseException) -> BaseException:
    """Unwrap exception groups to the first MigrationError (or the first error)."""
    exc = first_error(exc)
    if isinstance(exc, (trio.BrokenResourceError, OSError)):
        return MigrationError(f"main channel: destination went away: {_describe(exc)}")
    return exc
