"""``trioqio migrate`` end to end: one or both ends, progress, trace, report.

QEMU runs the source and destination as two ``qemu-system-*`` processes driven by QMP
(``migrate-incoming``, ``migrate``). ``trioqio migrate`` runs both in one process over
loopback by default, or one end with ``--listen``/``--connect``.

``--trace`` shows the seed experiment: every connect runs its blocking work in a worker
thread (the ``qio_task_thread_run`` trace event, printed with that thread's id) and its
completion in the Trio thread (printed by the completion callback itself), so the log
shows N distinct worker thread ids and one completion thread id.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import sys
import tempfile
import threading
import time
import uuid as uuid_module
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs
import trio

from .. import trace
from .._errors import MigrationError
from . import _crc
from ._certs import CLIENT_ACL, client_context, make_credentials, server_context
from ._destination import DestinationOptions, DestinationOutcome, run_destination
from ._groups import first_error, leaves
from ._image import FileImage, GeneratedImage, Image
from ._protocol import DEFAULT_CHECKSUM, Checksum, ResultStatus
from ._report import Figures, MigrationReport, Progress, one_line
from ._source import DEFAULT_TIMEOUT, SourceOptions, SourceOutcome, run_source

if TYPE_CHECKING:
    from .._abc import Channel

__all__ = ["MigrateArgs", "interrupted_report", "migrate"]


@attrs.define(kw_only=True)
class MigrateArgs:
    """The options of ``trioqio migrate`` (see ``trioqio migrate --help``)."""

    listen: str | None = None
    connect: str | None = None
    #: None: 4 on the source; on the destination, whatever the source announces.
    channels: int | None = None
    size: int = 256 << 20
    page_size: int = 4096
    packet_pages: int = 128
    seed: int = 0
    image: str | None = None
    output: str | None = None
    tls: bool = False
    tls_dir: str | None = None
    tls_hostname: str | None = None
    #: DN globs the source's certificate must match; None: the throwaway client's DN.
    tls_acl: tuple[str, ...] | None = None
    trace: bool = False
    progress: bool | None = None
    unix: bool = False
    stderr: TextIO | None = None
    #: The per-packet digest; None: the default on the source, the source's on --listen.
    checksum: Checksum | None = None
    #: Seconds without progress on a channel that fail the migration; None: never.
    timeout: float | None = DEFAULT_TIMEOUT
    #: Wraps every multifd channel (both ends): for tests (``trioqio.testing`` wrappers).
    wrap_channel: Callable[[Channel, str], Channel] | None = None
    #: In-process runs only: wraps the destination's multifd channels instead.
    wrap_destination_channel: Callable[[Channel, str], Channel] | None = None
    #: The live figures (bytes, seconds, per channel); None: :func:`migrate` makes them.
    #: :func:`interrupted_report` reads them after the run was cancelled.
    figures: Figures | None = None


@attrs.define(eq=False)
class _Tracer:
    """Prints the seed experiment's log: which thread ran each worker and each completion."""

    write: Callable[[str], None]
    workers: set[int] = attrs.field(factory=set[int])
    completions: set[int] = attrs.field(factory=set[int])
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def on_trace(self, event: trace.TraceEvent) -> None:
        if event.name == "qio_task_thread_run":
            with self.lock:
                self.workers.add(event.thread_id)
                self.write(
                    f"trace: worker     running in thread id = {event.thread_id} "
                    f"({event.fields.get('task')})"
                )

    def on_event(self, text: str) -> None:
        if text.startswith("completion"):
            ident = threading.get_ident()
            with self.lock:
                self.completions.add(ident)
                self.write(f"trace: completion running in thread id = {ident} ({text})")
        else:
            self.write(f"note: {text}")

    def summary(self) -> dict[str, Any]:
        return {
            "worker_threads": sorted(self.workers),
            "completion_threads": sorted(self.completions),
            "trio_thread": threading.get_ident(),
        }


def _checksum(args: MigrateArgs) -> Checksum:
    # Not ``args.checksum or ...``: Checksum.BLAKE2B is 0, and so falsy.
    return DEFAULT_CHECKSUM if args.checksum is None else args.checksum


def _notes(write: Callable[[str], None]) -> Callable[[str], None]:
    def note(text: str) -> None:
        if not text.startswith("completion"):
            write(f"note: {text}")

    return note


async def _load_image(args: MigrateArgs) -> Image:
    if args.image is not None:
        return await FileImage.open(args.image, page_size=args.page_size)
    return GeneratedImage(size=args.size, seed=args.seed, page_size=args.page_size)


def _tls_contexts(
    args: MigrateArgs, scratch: Callable[[], Path]
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    if not args.tls_dir:
        directory = make_credentials(scratch())
    else:
        directory = Path(args.tls_dir)
        if not directory.is_dir():
            problem = "is not a directory" if directory.exists() else "does not exist"
            raise MigrationError(
                f"--tls-dir {args.tls_dir!r} {problem} (make one with: trioqio migrate "
                f"--make-tls-dir {args.tls_dir})",
                field="tls_dir",
                kind="local",
            )
    try:
        return server_context(directory), client_context(directory)
    except ssl.SSLError as exc:
        raise MigrationError(
            f"--tls-dir {str(directory)!r}: cannot load its certificates or keys: "
            f"{exc.reason or exc}",
            field="tls_dir",
            kind="local",
        ) from exc


def _acl(args: MigrateArgs) -> tuple[str, ...] | None:
    # With --tls the destination always checks the source's DN: --tls-acl, else the DN of
    # the client certificate make_credentials issues (so --tls-dir needs --tls-acl
    # unless its client certificate carries that DN; --tls-acl '*' admits any).
    if not args.tls:
        return None
    return args.tls_acl if args.tls_acl else CLIENT_ACL


def _hostname(address: str, args: MigrateArgs) -> str:
    if args.tls_hostname:
        return args.tls_hostname
    if address.startswith(("unix:", "fd:")):
        return "localhost"
    from .._address import InetAddress, parse_address

    parsed = parse_address(address)
    return parsed.host if isinstance(parsed, InetAddress) else "localhost"


#: Error kinds after which the image is partly moved rather than refused.
_INCOMPLETE_KINDS = ("broken", "timeout")


def _failed(role: str, figures: Figures, exc: BaseException, args: MigrateArgs) -> MigrationReport:
    """The report of a failed run: everything that moved up to the failure, and why."""
    text = one_line(exc)
    kind = exc.kind if isinstance(exc, MigrationError) else "local"
    figures.end()
    config = figures.config
    return MigrationReport(
        role=role,
        size=figures.size,
        bytes=figures.bytes,
        seconds=figures.seconds,
        channels=figures.shares,
        verdict="incomplete" if kind in _INCOMPLETE_KINDS else "failed",
        error=text,
        error_kind=kind,
        error_channel=exc.channel if isinstance(exc, MigrationError) else None,
        error_field=exc.field if isinstance(exc, MigrationError) else None,
        tls=args.tls,
        uuid=str(uuid_module.UUID(bytes=config.uuid)) if config is not None else "",
        checksum=config.checksum.label if config is not None else None,
        crc32_provider=_crc32_provider(config.checksum) if config is not None else None,
    )


def _verdict(status: ResultStatus) -> str:
    return {
        ResultStatus.MATCH: "match",
        ResultStatus.MISMATCH: "mismatch",
        ResultStatus.INCOMPLETE: "incomplete",
    }[status]


def _crc32_provider(checksum: Checksum) -> str | None:
    return _crc.PROVIDER if checksum is Checksum.CRC32 else None


def _source_report(role: str, out: SourceOutcome, vm: bytes, args: MigrateArgs) -> MigrationReport:
    return MigrationReport(
        role=role,
        size=args.size,
        bytes=out.transferred,
        seconds=out.seconds,
        channels=out.shares,
        source_checksum=out.checksum.hex(),
        destination_checksum=(
            out.result.checksum.hex() if out.result.status is not ResultStatus.INCOMPLETE else None
        ),
        verdict=_verdict(out.result.status),
        uuid=str(uuid_module.UUID(bytes=vm)),
        tls=args.tls,
        checksum=_checksum(args).label,
        crc32_provider=_crc32_provider(_checksum(args)),
    )


def _destination_report(out: DestinationOutcome, args: MigrateArgs) -> MigrationReport:
    return MigrationReport(
        role="destination",
        size=out.config.size,
        bytes=out.transferred,
        seconds=out.seconds,
        channels=out.shares,
        source_checksum=out.source_checksum.hex() if out.source_checksum else None,
        destination_checksum=out.checksum.hex() if out.checksum else None,
        verdict=_verdict(out.status),
        uuid=str(uuid_module.UUID(bytes=out.config.uuid)),
        tls=args.tls,
        checksum=out.config.checksum.label,
        crc32_provider=_crc32_provider(out.config.checksum),
    )


def _role(args: MigrateArgs) -> str:
    return "source" if args.connect else "destination" if args.listen else "migrate"


async def migrate(args: MigrateArgs) -> MigrationReport:
    """Run ``trioqio migrate`` as ``args`` says and return the report (never raises it).

    Cancelled (the command's SIGINT or SIGTERM), it removes its temporary files, ends
    the progress bar with "interrupted" and lets :class:`trio.Cancelled` through; then
    :func:`interrupted_report` gives the report up to that point.

    Args:
        args: the command's options.

    Returns:
        The report; ``report.ok`` is True only when the checksums match.
    """
    stream = args.stderr or sys.stderr
    if args.figures is None:
        args.figures = Figures()
    figures = args.figures
    label = {"source": "migrating", "destination": "received"}.get(_role(args), "migrating")
    progress = Progress(total=0, label=label, stream=stream, enabled=args.progress)
    tracer = _Tracer(progress.write) if args.trace else None
    on_event = tracer.on_event if tracer is not None else _notes(progress.write)
    unsubscribe = trace.subscribe(tracer.on_trace) if tracer is not None else None
    result = seconds = None
    try:
        with contextlib.ExitStack() as stack:

            def scratch() -> Path:
                # Made only when needed (the throwaway CA), so that a run killed with
                # SIGKILL, which no clean-up survives, usually leaves nothing behind.
                made = tempfile.TemporaryDirectory(prefix="trioqio-migrate-")
                return Path(stack.enter_context(made))

            report = await _migrate(args, scratch, on_event, progress)
        result, seconds = report.verdict_text, report.seconds
    finally:
        if unsubscribe is not None:
            unsubscribe()
        if result is None and trio.current_effective_deadline() == float("-inf"):
            # Cancelled: the command got a signal; interrupted_report will use these.
            figures.end()
            result, seconds = "interrupted", figures.seconds
        progress.close(result, seconds=seconds)
    if tracer is not None:
        summary = tracer.summary()
        stream.write(
            f"trace: {len(summary['worker_threads'])} worker thread(s) ran the connects; "
            f"completions ran in {len(summary['completion_threads'])} thread(s) "
            f"(the Trio thread is {summary['trio_thread']})\n"
        )
        report = attrs.evolve(report, trace=summary)
    return report


def interrupted_report(args: MigrateArgs, reason: str) -> MigrationReport:
    """Return the report of a run that ``reason`` (e.g. "interrupted by SIGINT") stopped.

    Args:
        args: the options :func:`migrate` ran with (it left the live figures in them).
        reason: the report's ``error``.

    Returns:
        What moved up to the interruption; verdict and ``error_kind`` ``"interrupted"``.
    """
    figures = args.figures if args.figures is not None else Figures()
    report = _failed(_role(args), figures, MigrationError(reason, kind="interrupted"), args)
    return attrs.evolve(report, verdict="interrupted")


async def _migrate(
    args: MigrateArgs,
    scratch: Callable[[], Path],
    on_event: Callable[[str], object],
    progress: Progress,
) -> MigrationReport:
    role = _role(args)
    assert args.figures is not None
    figures = args.figures
    try:
        server_tls = client_tls = None
        if args.tls:
            server_tls, client_tls = _tls_contexts(args, scratch)
        if role == "destination":
            assert args.listen is not None
            options = DestinationOptions(
                address=args.listen, backlog=args.channels or 4, tls=server_tls,
                acl=_acl(args), output=args.output, on_progress=progress.add,
                on_event=on_event, on_config=lambda config: progress.begin(config.size),
                checksum=args.checksum, channels=args.channels, timeout=args.timeout,
                figures=figures, wrap_channel=args.wrap_channel,
            )  # fmt: skip

            holder = _Holder()
            async with trio.open_nursery() as nursery:
                addresses: list[Any] = await nursery.start(holder.run, options)
                progress.write(f"listening on {' '.join(str(a) for a in addresses)}")
            return _destination_report(holder.unwrap(), args)
        image = await _load_image(args)
        args.size = image.size
        vm = uuid_module.uuid4().bytes
        progress.begin(image.size)
        try:
            if role == "source":
                assert args.connect is not None
                source = SourceOptions(
                    address=args.connect, image=image, channels=args.channels or 4, uuid=vm,
                    packet_pages=args.packet_pages, tls=client_tls,
                    tls_hostname=_hostname(args.connect, args) if args.tls else None,
                    on_progress=progress.add, on_event=on_event, checksum=_checksum(args),
                    timeout=args.timeout, figures=figures, wrap_channel=args.wrap_channel,
                )  # fmt: skip
                outcome = await run_source(source)
                return _source_report("source", outcome, vm, args)
            return await _both(args, image, vm, server_tls, client_tls, progress, on_event, figures)
        finally:
            await image.aclose()
    except _EXPECTED as exc:
        return _failed(role, figures, exc, args)
    except Exception as exc:
        # A nursery wraps what nursery.start raised (e.g. the listening address is in use)
        # in a group: report it like the bare error, unless the group also holds a bug.
        found = leaves(exc)
        if found == [exc] or not all(isinstance(leaf, _EXPECTED) for leaf in found):
            raise
        return _failed(role, figures, first_error(exc), args)


#: The errors ``trioqio migrate`` reports (anything else is a bug and keeps its traceback).
_EXPECTED = (MigrationError, OSError, ValueError)


@attrs.define(eq=False)
class _Holder:
    """Runs the destination as a child task and keeps its outcome or its error."""

    outcome: DestinationOutcome | None = None
    error: Exception | None = None
    started: bool = False

    async def run(
        self,
        options: DestinationOptions,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        holder = self

        class _Status:
            def started(self, value: Any = None) -> None:
                holder.started = True
                task_status.started(value)

        try:
            self.outcome = await run_destination(options, task_status=_Status())
        except (MigrationError, OSError) as exc:
            if not self.started:
                raise  # reaches nursery.start's caller (e.g. address in use)
            self.error = exc

    def unwrap(self) -> DestinationOutcome:
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome


async def _both(
    args: MigrateArgs,
    image: Image,
    vm: bytes,
    server_tls: ssl.SSLContext | None,
    client_tls: ssl.SSLContext | None,
    progress: Progress,
    on_event: Callable[[str], object],
    figures: Figures,
) -> MigrationReport:
    if args.unix:
        listen = f"unix:{tempfile.mkdtemp(prefix='trioqio-')}/migrate.sock"
    else:
        listen = "tcp:127.0.0.1:0"
    destination = DestinationOptions(
        address=listen, backlog=args.channels or 4, tls=server_tls, acl=_acl(args),
        output=args.output, on_event=on_event, timeout=args.timeout,
        wrap_channel=args.wrap_destination_channel,
    )  # fmt: skip
    start = time.monotonic()
    source_error: MigrationError | None = None
    holder = _Holder()
    outcome: SourceOutcome | None = None
    try:
        async with trio.open_nursery() as nursery:
            addresses: list[Any] = await nursery.start(holder.run, destination)
            address = str(addresses[0])
            source = SourceOptions(
                address=address, image=image, channels=args.channels or 4, uuid=vm,
                packet_pages=args.packet_pages, tls=client_tls,
                tls_hostname=_hostname(address, args) if args.tls else None,
                on_progress=progress.add, on_event=on_event, checksum=_checksum(args),
                timeout=args.timeout, figures=figures, wrap_channel=args.wrap_channel,
            )  # fmt: skip
            try:
                outcome = await run_source(source)
            except MigrationError as exc:
                source_error = exc
                nursery.cancel_scope.cancel()
    finally:
        if args.unix:
            shutil.rmtree(os.path.dirname(listen.removeprefix("unix:")), ignore_errors=True)
    dest = holder.outcome
    if source_error is not None or outcome is None:
        # Both ends' view of one failure: the destination's names the cause when the
        # source only saw its symptom (a broken channel).
        error = source_error or MigrationError("the source did not finish")
        if isinstance(holder.error, MigrationError) and error.kind in ("broken", "other"):
            error = holder.error
        raise error
    report = _source_report("migrate", outcome, vm, args)
    if dest is not None:
        report = attrs.evolve(
            report,
            destination_checksum=dest.checksum.hex() if dest.checksum else None,
            verdict=_verdict(dest.status),
            seconds=time.monotonic() - start,
        )
    return report
