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

The main channel's dialogue (CONFIG, END, then RESULT or ERROR) is
:class:`~trioqio.migration._session.SourceSession`'s: this module only moves its bytes.
Every failure is a :class:`~trioqio.MigrationError` built where it is detected, with its
``channel`` and ``kind``; a channel that breaks (``kind="broken"``) gives the main channel
a second to deliver the destination's ERROR, which names the cause, before the run ends.
:class:`~trioqio.migration._watch.Watch` fails a channel that makes no progress for
``timeout`` seconds. The caller's :class:`~trioqio.migration._report.Figures` hold what
moved, success or failure.

Differences from QEMU: the whole image is sent once (no dirty-page iterations); the main
channel carries a small config/end/result dialogue (``_protocol.py``) instead of device
state; the source waits for the destination's verdict and reports it.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
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
    Checksum,
    Config,
    End,
    ErrorMessage,
    MultiFDInit,
    PacketFlags,
    PacketHeader,
    Result,
)
from ._report import ChannelFigures, ChannelShare, Figures
from ._session import Input, SourceSession
from ._verify import PageDigests, digest_runs_async, digest_views
from ._watch import Watch

if TYPE_CHECKING:
    from .._abc import Channel
    from .._address import SocketAddress
    from ._image import Image

__all__ = ["DEFAULT_TIMEOUT", "SourceOptions", "SourceOutcome", "run_source"]

#: Seconds without progress on a channel the migration is waiting on (``--timeout``).
DEFAULT_TIMEOUT = 30.0
#: How long a broken channel waits for the destination's ERROR, which names the cause.
_ERROR_GRACE = 1.0


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
        checksum: the digest both ends compute per packet (announced in CONFIG).
        timeout: fail when a channel the source waits on (a connect, a handshake, a
            packet write, the verdict) makes no progress for this many seconds; None:
            wait forever.
        figures: the live figures to update (the caller reads them even after a
            failure); None: private ones.
        wrap_channel: called as ``wrap_channel(channel, name)`` with every multifd channel
            once it is connected (and TLS is up); the channel it returns is used instead
            (e.g. the misbehaving wrappers of :mod:`trioqio.testing`).
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
    checksum: Checksum = DEFAULT_CHECKSUM
    timeout: float | None = DEFAULT_TIMEOUT
    figures: Figures | None = None
    wrap_channel: Callable[[Channel, str], Channel] | None = None


@attrs.frozen(kw_only=True)
class SourceOutcome:
    """What the source saw: bytes, time, shares, both checksums."""

    transferred: int
    seconds: float
    shares: tuple[ChannelShare, ...]
    checksum: bytes
    result: Result


@attrs.define(eq=False)
class _Run:
    """One migration's I/O context: the protocol state is ``session``'s, the counts ``figures``'."""

    options: SourceOptions
    config: Config
    digests: PageDigests
    figures: Figures
    watch: Watch
    session: SourceSession = attrs.field(factory=SourceSession)
    channels: dict[int, Channel] = attrs.field(factory=dict[int, "Channel"])
    main: Channel | None = None
    error: MigrationError | None = None
    cancel: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    transfer: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    result: Result | None = None
    pages_sent: int = 0

    def fail(self, exc: BaseException) -> None:
        error = _as_migration_error(exc)
        current = self.error
        if current is None or (error.kind == "remote" and current.kind in _WAITS_FOR_CAUSE):
            # The destination's ERROR names the cause; a broken pipe only its symptom.
            self.error = current = error
        if (
            current.kind in _WAITS_FOR_CAUSE
            and error.channel != "main"  # the main channel itself can tell no more
            and not self.session.finished
        ):
            # Stop sending, but give the main channel a moment to deliver that ERROR.
            self.transfer.cancel()
            self.cancel.deadline = min(self.cancel.deadline, trio.current_time() + _ERROR_GRACE)
        else:
            self.cancel.cancel()

    def event(self, text: str) -> None:
        if self.options.on_event is not None:
            self.options.on_event(text)


#: Errors after which the destination may still say why on the main channel.
_WAITS_FOR_CAUSE = ("broken", "connect", "handshake")


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _as_migration_error(exc: BaseException) -> MigrationError:
    found = first_error(exc)
    if isinstance(found, MigrationError):
        return found
    if isinstance(found, (trio.BrokenResourceError, trio.ClosedResourceError, OSError)):
        return MigrationError(
            f"main channel: destination went away: {_describe(found)}",
            channel="main",
            kind="broken",
        )
    raise exc  # a bug: keep its traceback


def _handshake_error(name: str, exc: BaseException) -> MigrationError:
    return MigrationError(
        f"{name}: TLS handshake failed: {_inner_text(exc)}", channel=name, kind="handshake"
    )


def _inner_text(exc: BaseException) -> str:
    """The error's text without a leading "TLS handshake failed: " (it would say it twice)."""
    return _describe(exc).removeprefix("TLS handshake failed: ")


async def _connect_main(run: _Run, nursery: trio.Nursery) -> Channel:
    options = run.options

    def connected(task: Task[SocketChannel]) -> None:
        run.event(f"completion of connect main (task {task.name})")

    run.watch.arm("main", "its connection")
    task = connect_task(nursery, options.address, connected, name="migration-socket-outgoing")
    try:
        channel: Channel = await task.wait()
    except OSError as exc:
        raise MigrationError(
            f"main channel: cannot connect to {options.address}: {exc}",
            channel="main",
            kind="connect",
        ) from exc
    except trio.Cancelled:
        # Cancelled after the connect succeeded: nobody else owns the channel, close it.
        # (task.result raises TaskError when the connect failed: nothing to close then.)
        with trio.CancelScope(shield=True), contextlib.suppress(Exception):
            if task.done:
                await trio.aclose_forcefully(task.result)
        raise
    if options.tls is not None:
        run.watch.arm("main", "the TLS handshake")
        tls = TLSChannel.client(
            channel, options.tls, hostname=options.tls_hostname, name="migration-tls-outgoing"
        )
        try:
            await tls.handshake_task(nursery).wait()
        except BaseException as exc:
            # Failed, or cancelled (a timeout, the run failing): nobody else owns it yet.
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await trio.aclose_forcefully(tls)
            if isinstance(exc, Exception):
                raise _handshake_error("main channel", exc) from exc
            raise
        channel = tls
    channel.set_delay(False)
    return channel


async def _create_channels(run: _Run, nursery: trio.Nursery) -> None:
    """Connect every multifd channel in parallel; wait until each connected or failed."""
    options = run.options
    created = trio.Semaphore(0)  # QEMU's channels_created
    failures: list[MigrationError] = []

    def finished(index: int, channel: Channel) -> None:
        channel.set_delay(False)  # TCP_NODELAY, as multifd_channel_connect does
        name = f"multifd {index}"
        if options.wrap_channel is not None:
            channel = options.wrap_channel(channel, name)
        run.channels[index] = channel
        run.watch.touch(name)
        created.release()

    def tls_done(index: int, task: Task[TLSChannel]) -> None:
        run.event(f"completion of TLS handshake multifd {index}")
        if task.error is not None:
            failures.append(_handshake_error(f"multifd {index}", task.error))
            created.release()
            return
        finished(index, task.result)

    def connected(index: int, task: Task[SocketChannel]) -> None:
        run.event(f"completion of connect multifd {index}")
        name = f"multifd {index}"
        if task.error is not None:
            failures.append(
                MigrationError(
                    f"{name}: cannot connect to {options.address}: {_describe(task.error)}",
                    channel=name,
                    kind="connect",
                )
            )
            created.release()
            return
        channel = task.result
        if options.tls is None:
            finished(index, channel)
            return
        run.watch.arm(name, "the TLS handshake")
        tls = TLSChannel.client(
            channel, options.tls, hostname=options.tls_hostname, name="multifd-tls-outgoing"
        )
        run.channels[index] = tls  # owned from here, so a failure still closes it
        tls.handshake_task(nursery, functools.partial(tls_done, index))

    for index in range(options.channels):
        run.watch.arm(f"multifd {index}", "its connection")
        connect_task(
            nursery,
            options.address,
            functools.partial(connected, index),
            name=f"multifdsend_{index}",
        )
    for _ in range(options.channels):
        await created.acquire()
    if failures:
        error = failures[0]
        if len(failures) > 1:
            error = MigrationError(
                "; ".join(map(str, failures)), channel=error.channel, kind=error.kind
            )
        raise error


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
    wire: list[bytes | memoryview] = views
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
            await channel.writev([header.pack(), memoryview(payload)])
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            # Named here, inside the nursery, which would wrap the bare error in a group.
            raise _went_away(name, exc) from exc
    return length, digests[0]


def _went_away(name: str, exc: BaseException) -> MigrationError:
    return MigrationError(
        f"{name}: destination went away: {_describe(exc)}", channel=name, kind="broken"
    )


def _runs(config: Config) -> Iterator[tuple[int, int]]:
    """The image's page runs ``(first, count)`` in order: whole packets, the last one short."""
    for first in range(0, config.num_pages, config.packet_pages):
        yield first, min(config.packet_pages, config.num_pages - first)


async def _send(run: _Run, index: int, queue: Iterator[tuple[int, int]]) -> None:
    options, config = run.options, run.config
    channel = run.channels[index]
    name = f"multifd {index}"
    figures: ChannelFigures = run.figures.channel(index)
    touch = functools.partial(run.watch.touch, name)
    inline = config.checksum is Checksum.CRC32
    run.watch.arm(name, "its init header to be written")
    try:
        await channel.send_all(MultiFDInit(uuid=config.uuid, id=index).pack())
        run.watch.arm(name, "a packet to be written")
        for first, count in queue:  # shared with the other senders
            if inline:
                length, digest = await _send_inline(run, channel, first, count)
            else:
                length, digest = await _send_threaded(run, channel, first, count, name)
            touch()
            run.digests.record(first, digest, name, count)
            figures.bytes += length
            figures.packets += 1
            run.pages_sent += count
            if options.on_progress is not None:
                options.on_progress(length)
        end = PacketHeader(first_page=0, num_pages=0, length=0, flags=PacketFlags.END)
        await channel.send_all(end.pack())
        await channel.send_eof()  # TLS: close_notify (QEMU qio_channel_tls_bye)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise _went_away(name, exc) from exc
    run.watch.disarm(name)


async def _read_main(run: _Run, main: Channel, verdict: trio.Event) -> None:
    """Read the destination's messages: RESULT at the end, or ERROR at any time."""
    while True:
        try:
            data = await main.receive_some(4096)
        except (trio.BrokenResourceError, OSError) as exc:
            raise MigrationError(
                f"main channel: destination went away: {_describe(exc)}",
                channel="main",
                kind="broken",
            ) from exc
        for event in run.session.receive(data):
            if isinstance(event, ErrorMessage):
                raise MigrationError(
                    f"destination failed: {event.text}", channel="main", kind="remote"
                )
            if isinstance(event, Result):
                run.result = event
                run.watch.disarm("main")
                verdict.set()
                return


async def run_source(options: SourceOptions) -> SourceOutcome:
    """Connect to a destination and migrate ``options.image`` to it.

    QEMU: ``socket_start_outgoing_migration`` + ``multifd_send_setup`` + the send threads.

    Args:
        options: what and where.

    Returns:
        The outcome, including the destination's verdict.

    Raises:
        trioqio.MigrationError: a connection, handshake or send failed, a channel stalled,
            or the destination reported an error; its ``channel`` and ``kind`` say which
            and how, its message says why. Also raised before anything connects when
            ``TRIOQIO_CRC32`` has a bad value (see ``_crc.py``).

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
    figures = options.figures if options.figures is not None else Figures()
    figures.size, figures.channels_announced = config.size, config.channels
    figures.config = config
    for index in range(config.channels):
        figures.channel(index)
    run = _Run(
        options=options,
        config=config,
        digests=PageDigests(
            size=config.size,
            page_size=config.page_size,
            unit_pages=config.packet_pages,
            algorithm=config.checksum,
        ),
        figures=figures,
        watch=Watch(timeout=options.timeout),
    )
    figures.begin()
    try:
        with run.cancel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_guard, run, run.watch.run)
                nursery.start_soon(_main_flow, run, nursery)
    except Exception as exc:
        # A sender's error that raced run.cancel: the group held a Cancelled too, so it
        # passed _main_flow's handler; the scope stripped the Cancelled. Report it.
        run.fail(exc)
    finally:
        figures.end()
        # Shielded and forceful: when the migration is cancelled, every channel must still
        # be closed (an unshielded aclose would raise Cancelled and skip the rest), and no
        # close may wait on a peer (aclose_forcefully skips TLS's close_notify).
        with trio.CancelScope(shield=True):
            if run.error is not None and run.main is not None:
                await _tell_destination(run, run.main, run.error)
            for channel in [*run.channels.values(), run.main]:
                if channel is not None:
                    with contextlib.suppress(Exception):
                        await trio.aclose_forcefully(channel)
    if run.error is not None:
        raise _with_tls_hint(run, run.error)
    if run.result is None:  # cancelled from outside: Cancelled propagated above
        raise MigrationError("the source ended without a verdict", kind="other")
    return SourceOutcome(
        transferred=figures.bytes,
        seconds=figures.seconds,
        shares=figures.shares,
        checksum=run.digests.checksum(),
        result=run.result,
    )


async def _tell_destination(run: _Run, main: Channel, error: MigrationError) -> None:
    """Best effort: tell the destination why the source stops (its report names it)."""
    if error.kind == "remote" or (run.session.state, "send", Input.ERROR) not in run.session.table:
        return
    data = run.session.send(ErrorMessage(text=str(error)))
    with trio.move_on_after(_ERROR_GRACE), contextlib.suppress(Exception):
        await main.send_all(data)


def _with_tls_hint(run: _Run, error: MigrationError) -> MigrationError:
    if run.options.tls is None or error.kind != "broken" or run.figures.bytes:
        return error
    # TLS 1.3 checks the client certificate after the client's side of the handshake is
    # done: a refused source only sees the connection drop, before any page moved.
    return MigrationError(
        f"{error} (a TLS destination drops the connection like this when it refuses the "
        "source's client certificate: not signed by its CA, or a DN outside its --tls-acl)",
        channel=error.channel,
        field=error.field,
        kind=error.kind,
    )


async def _guard(run: _Run, fn: Callable[..., object], *args: object) -> None:
    try:
        await fn(*args)  # type: ignore[misc]  # every guarded function is async
    except Exception as exc:
        run.fail(exc)


async def _main_flow(run: _Run, nursery: trio.Nursery) -> None:
    try:
        with run.transfer:
            run.main = main = await _connect_main(run, nursery)
            await main.send_all(run.session.send(run.config))
            run.watch.disarm("main")  # idle while the pages move
            verdict = trio.Event()
            nursery.start_soon(_guard, run, _read_main, run, main, verdict)
            await _create_channels(run, nursery)
            queue = _runs(run.config)
            async with trio.open_nursery() as senders:
                for index in range(run.config.channels):
                    senders.start_soon(_send, run, index, queue)
            end = End(pages=run.pages_sent, checksum=run.digests.checksum())
            run.watch.arm("main", "the destination's verdict")
            await main.send_all(run.session.send(end))
            await verdict.wait()
        if run.result is not None:
            nursery.cancel_scope.cancel()  # the verdict is in: stop the watchdog
    except Exception as exc:
        run.fail(exc)
