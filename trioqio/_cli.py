"""The ``trioqio`` command (QEMU has none; its nearest kin are ``qemu-system -incoming``,
QMP ``migrate`` and the ``tests/unit/test-io-*`` programs).

Subcommands:

* ``trioqio migrate``: a live-migration-shaped transfer, both ends in one process by
  default (``trioqio.migration``);
* ``trioqio serve ADDR...``: an echo service on several addresses at once
  (:class:`trioqio.NetListener`), optionally TLS or websocket;
* ``trioqio task-demo``: the seed note's experiment: four Task workers in four threads,
  their completions in the Trio thread.

Exit statuses and signals (api.md section 7) have one owner, :class:`_Command`; the
subcommands only do their work. It runs a subcommand's coroutine in ``trio.run`` with
``trio.open_signal_receiver(SIGINT, SIGTERM)`` open, so neither signal ever becomes a
``KeyboardInterrupt`` (which a nursery would wrap in a group that ``except
KeyboardInterrupt`` never matches) nor kills the process before it cleans up: a signal
cancels the coroutine, whose ``with``/``finally`` blocks then remove its temporary
directories and close its listeners (which unlinks their UNIX socket paths), and the
command prints the report up to that point (``migrate``), one "interrupted" line, and
exits 130 (SIGINT) or 143 (SIGTERM). Before ``trio.run`` opens the receiver and after
it closes it, a handler only records a signal. An exception, bare or inside exception
groups, whose every leaf is an :data:`_EXPECTED` error is one line on stderr and exit
status 1; anything else is a bug and keeps its traceback. argparse exits 2 on bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import signal
import ssl
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import attrs
import trio

from ._errors import QIOError
from .migration._groups import leaves
from .migration._protocol import DEFAULT_CHECKSUM, Checksum
from .migration._report import one_line, parse_size

if TYPE_CHECKING:
    from ._abc import Channel as _Channel
    from ._channel_socket import SocketChannel

    ChannelWrapper = Callable[[_Channel, str], _Channel]

__all__ = ["main"]

#: The signals every command answers, and the exit status each ends it with (128 + N).
_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class _Failure(Exception):
    """A failure the command explains in one line, with exit status 1."""


#: What a command explains in one line (exit status 1); anything else is a bug.
_EXPECTED = (OSError, QIOError, _Failure)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_STATUSES = (
    "exit status: 0 success; 1 a failure, explained in one line; 2 bad usage; 130 "
    "interrupted by SIGINT (Ctrl-C) and 143 by SIGTERM, after one 'interrupted' line "
    "(migrate: after its report up to then), with temporary files and UNIX socket paths "
    "removed. Guide: docs/cli.md."
)


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="trioqio",
        description="QEMU's io/ subsystem on Trio: demos and tools.",
        epilog=_STATUSES,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    migrate = commands.add_parser(
        "migrate",
        help="migrate a RAM image over a main channel plus N multifd channels",
        description=(
            "Run a live-migration-shaped transfer: a destination listener and a source "
            "that sends a RAM image over one main channel plus N parallel multifd "
            "channels. Both ends run in this process on loopback unless --listen or "
            "--connect picks one end. Exit status 0 only when the checksums match. "
            "The crc32 digest is computed by zlib-ng when it is installed (pip install "
            "trioqio[speedups]: the same values, over ten times faster); the environment "
            "variable TRIOQIO_CRC32=auto|zlib|zlib-ng picks one."
        ),
        epilog=(
            "The destination (--listen) takes --channels (must then match the source's), "
            "--checksum, --output, --timeout, --tls, --tls-dir, --tls-acl, --json and "
            "--progress; the image's geometry (--size, --image, --seed, --page-size, "
            "--packet-pages) is the source's, announced to the destination. Across two "
            "processes --tls needs --tls-dir on both ends (make one with --make-tls-dir). "
            + _STATUSES
        ),
    )
    ends = migrate.add_mutually_exclusive_group()
    ends.add_argument("--listen", metavar="ADDR", help="run only the destination, on ADDR")
    ends.add_argument("--connect", metavar="ADDR", help="run only the source, to ADDR")
    ends.add_argument(
        "--make-tls-dir",
        metavar="DIR",
        help="write a CA, server and client certificates (valid one year) into DIR for "
        "--tls-dir, then exit; --tls-hostname adds a name to the server certificate",
    )
    migrate.add_argument(
        "--channels",
        type=_positive,
        default=None,
        help="multifd channels (source: 4; --listen: if given, the source's must match)",
    )
    migrate.add_argument(
        "--size", type=_size, default=256 << 20, help="image size, e.g. 512MiB, 1GiB (256MiB)"
    )
    migrate.add_argument("--seed", type=int, default=0, help="seed of the generated image (0)")
    migrate.add_argument("--image", metavar="FILE", help="send FILE instead of generated pages")
    migrate.add_argument(
        "--output", metavar="FILE", help="destination writes the image here (checked first)"
    )
    migrate.add_argument("--page-size", type=_size, default=4096, help="bytes per page (4096)")
    migrate.add_argument(
        "--packet-pages", type=_positive, default=128, help="pages per packet (128)"
    )
    migrate.add_argument(
        "--checksum",
        choices=[c.label for c in Checksum],
        help=f"per-packet digest both ends compute over every byte (default: "
        f"{DEFAULT_CHECKSUM.label}; with --listen: whatever the source announces, and a "
        "different one fails the migration)",
    )
    migrate.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="fail when a channel makes no progress (no connect, handshake, packet or "
        "verdict) for this long; 0: wait forever (30)",
    )
    migrate.add_argument("--unix", action="store_true", help="in-process run over a UNIX socket")
    migrate.add_argument("--tls", action="store_true", help="TLS on every channel")
    migrate.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="x509 credentials (ca-cert.pem, server-cert.pem, server-key.pem, "
        "client-cert.pem, client-key.pem; see --make-tls-dir); required with --tls and "
        "--listen or --connect; in one process the default is a throwaway CA made now",
    )
    migrate.add_argument(
        "--tls-hostname",
        help="name the server certificate must carry (source); with --make-tls-dir: a "
        "name to put in it",
    )
    migrate.add_argument(
        "--tls-acl",
        metavar="GLOB",
        action="append",
        help="with --listen --tls: a DN glob the source's client certificate must match "
        "(repeatable; e.g. 'O=Example,CN=src*'; '*' admits any certificate the CA signed); "
        "default: the throwaway client's DN 'O=trioqio,CN=trioqio-migration-source*'",
    )
    migrate.add_argument(
        "--trace", action="store_true", help="print which thread ran each worker and completion"
    )
    migrate.add_argument("--json", action="store_true", help="print the report as JSON")
    bar = migrate.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="draw the progress bar on stderr (default: when stdout and stderr are terminals)",
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never draw it")

    serve = commands.add_parser(
        "serve",
        help="echo service on one or more addresses",
        description=(
            "Echo every byte back, on every ADDR at once (tcp:HOST:PORT, unix:PATH, fd:N), "
            "until SIGINT or SIGTERM. Every address, the TLS credentials and the websocket "
            "extra are checked before serving: a problem is one line and exit status 1. "
            "Each client failure (a reset, a refused handshake) is one log line."
        ),
        epilog=_STATUSES,
    )
    serve.add_argument("addresses", nargs="+", metavar="ADDR")
    serve.add_argument(
        "--tls", action="store_true", help="TLS on every client (a throwaway CA unless --tls-dir)"
    )
    serve.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="with --tls: ca-cert.pem, server-cert.pem and server-key.pem (as written by "
        "trioqio migrate --make-tls-dir); clients may present a certificate the CA signed",
    )
    serve.add_argument(
        "--websocket",
        action="store_true",
        help="websocket handshake first, then binary frames (needs pip install "
        "'trioqio[websocket]')",
    )
    serve.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log every client's connect and close, and a traceback with each client failure",
    )

    demo = commands.add_parser(
        "task-demo",
        help="the seed experiment: Task workers in threads, completions in the Trio thread",
        description=(
            "Start Task workers in worker threads, held together so each runs in its own "
            "thread, and print which thread ran each worker and each completion callback "
            "(all of them in the Trio thread). Exit status 1 if a completion ran elsewhere."
        ),
        epilog=_STATUSES,
    )
    demo.add_argument("--workers", type=_positive, default=4, help="workers to start (4)")
    return parser, {"migrate": migrate, "serve": serve, "task-demo": demo}


def main(argv: Sequence[str] | None = None, *, wrap_channel: ChannelWrapper | None = None) -> int:
    """Run the ``trioqio`` command; return its exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        wrap_channel: for tests, from Python only: ``migrate`` wraps every multifd
            channel with it (e.g. a :mod:`trioqio.testing` wrapper).

    Returns:
        0 on success (for ``migrate``: only when the checksums match), 1 on a failure
        (explained in one line on stderr), 130 after SIGINT, 143 after SIGTERM.

    Raises:
        SystemExit: bad usage (status 2, from argparse).

    Example::

        raise SystemExit(main(["migrate", "--size", "64MiB"]))
    """
    parser, commands = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "tls_dir", None) and not args.tls:
        commands[args.command].error("--tls-dir needs --tls")
    if args.command == "migrate":
        if args.make_tls_dir is not None:
            return _Command("migrate").run(lambda: _make_tls_dir(args))
        if args.tls and (args.listen or args.connect) and not args.tls_dir:
            commands["migrate"].error(
                "--tls with --listen or --connect needs --tls-dir on both ends "
                "(each end would otherwise make its own throwaway CA, which the other "
                "cannot trust); make one with: trioqio migrate --make-tls-dir DIR"
            )
        return _migrate(args, wrap_channel)
    if args.command == "serve":
        return _Command("serve").run(lambda: _serve(args))
    return _Command("task-demo").run(lambda: _task_demo(args.workers))


# -- signals and exit statuses -----------------------------------------------------------


@attrs.define(eq=False)
class _Command:
    """Runs one subcommand's coroutine; owns its signals and maps its end to a status.

    Attributes:
        name: the subcommand, for the one-line messages (``trioqio NAME: ...``).
        received: the signal that interrupted the run, or None.
        finished: the coroutine returned (a signal after that changes nothing).
    """

    name: str
    received: int | None = None
    finished: bool = False

    def run(
        self,
        body: Callable[[], Awaitable[int]],
        on_interrupt: Callable[[str], object] | None = None,
    ) -> int:
        """Run ``body()`` to its exit status, or to the signal's.

        Args:
            body: the subcommand; it returns its exit status and prints its own output.
            on_interrupt: called with "interrupted by SIGINT" (or SIGTERM) when a signal
                stopped ``body``, before the one "interrupted" line (``migrate`` prints
                its report up to then).

        Returns:
            ``body``'s status; 1 after an expected error; 130 or 143 after a signal.
        """
        # Signals belong to the main thread; called from another (a test), run unguarded.
        guarded = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, self._record) for sig in _SIGNALS} if guarded else {}
        try:
            try:
                status = trio.run(self._main, body, guarded)
            except BaseException as exc:  # re-raised by _explain unless expected
                status = self._explain(exc)
            if self.received is None:
                return status
            reason = f"interrupted by {signal.Signals(self.received).name}"
            _erase_echo()
            if on_interrupt is not None and not self.finished:
                try:
                    on_interrupt(reason)
                except BrokenPipeError:
                    _silence_stdout()
            self._say(reason)
            return _SIGNALS[signal.Signals(self.received)]
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        # Outside the signal receiver (before trio.run opens it, after it closes it).
        if self.received is None and not self.finished:
            self.received = signum

    async def _main(self, body: Callable[[], Awaitable[int]], guarded: bool) -> int:
        receiver: contextlib.AbstractContextManager[AsyncIterator[int] | None] = (
            trio.open_signal_receiver(*_SIGNALS) if guarded else contextlib.nullcontext()
        )
        status = 1
        with receiver as signals:
            if self.received is not None:
                return status  # it came before the receiver: do not start at all
            work = trio.CancelScope()
            async with trio.open_nursery() as nursery:
                if signals is not None:
                    nursery.start_soon(self._watch, signals, work)
                with work:
                    status = await body()
                    self.finished = True
                nursery.cancel_scope.cancel()  # stop watching
        return status

    async def _watch(self, signals: AsyncIterator[int], work: trio.CancelScope) -> None:
        async for signum in signals:
            if not self.finished and self.received is None:
                self.received = signum
                work.cancel()  # the body cleans up; a second signal is ignored meanwhile
                return

    def _explain(self, exc: BaseException) -> int:
        found = [leaf for leaf in leaves(exc) if not isinstance(leaf, trio.Cancelled)]
        if not all(isinstance(leaf, _EXPECTED) for leaf in found):
            raise exc  # a bug: keep its traceback
        if not found and self.received is None:
            raise exc  # cancelled, yet not by a signal: a bug too
        if any(isinstance(leaf, BrokenPipeError) for leaf in found):
            _silence_stdout()
            found = [_Failure("output closed early (broken pipe)")]
        if found and self.received is None:
            self._say(one_line(found[0]))
        return 1

    def _say(self, text: str) -> None:
        with contextlib.suppress(OSError):
            sys.stdout.flush()
        print(f"trioqio {self.name}: {text}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    # stdout's reader went away (``| head``): write nowhere from now on, at exit too.
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _erase_echo() -> None:
    """Wipe the ``^C`` a terminal echoed where the cursor is (a line of its own by then)."""
    with contextlib.suppress(OSError, ValueError):
        if sys.stderr.isatty():
            sys.stderr.write("\r  \r" if os.environ.get("TERM") == "dumb" else "\r\x1b[K")
            sys.stderr.flush()


# -- migrate -----------------------------------------------------------------------------


_TLS_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem",
              "client-key.pem", "ca-key.pem")  # fmt: skip
#: What the openssl fallback of make_credentials leaves beside them.
_TLS_SCRAPS = ("server.ext", "client.ext", "server.csr", "client.csr", "ca-cert.srl")


def _prepare_tls_dir(directory: Path) -> bool:
    """Refuse a directory holding credentials; make it; return whether it was new."""
    taken = [name for name in _TLS_FILES if (directory / name).exists()]
    if taken:
        raise _Failure(f"{directory} already holds {', '.join(taken)}; not overwriting")
    created = not directory.exists()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return created


def _unmake_tls_dir(directory: Path, created: bool) -> None:
    if created:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
        return
    for name in _TLS_FILES + _TLS_SCRAPS:
        with contextlib.suppress(OSError):
            (directory / name).unlink()


async def _make_tls_dir(args: argparse.Namespace) -> int:
    import functools

    from ._errors import MigrationError
    from .migration._certs import CLIENT_ACL, make_credentials

    directory = Path(args.make_tls_dir)
    hostnames = [args.tls_hostname] if args.tls_hostname else []
    try:
        created = await trio.to_thread.run_sync(_prepare_tls_dir, directory)
    except OSError as exc:
        raise _Failure(f"--make-tls-dir {directory}: {one_line(exc)}") from exc
    try:
        make = functools.partial(make_credentials, directory, hostnames=hostnames, days=365)
        await trio.to_thread.run_sync(make)
        await trio.lowlevel.checkpoint()  # a signal during the thread lands here
    except BaseException as exc:
        # Failed or interrupted half-way: leave no partial set of keys behind.
        _unmake_tls_dir(directory, created)
        if isinstance(exc, (OSError, MigrationError)):
            raise _Failure(f"--make-tls-dir {directory}: {one_line(exc)}") from exc
        raise
    print(
        f"wrote ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem and "
        f"client-key.pem to {directory} (client DN {CLIENT_ACL[0].rstrip('*')}, which the "
        f"default --tls-acl admits); copy the directory to both hosts and pass "
        f"--tls --tls-dir {directory} on both ends"
    )
    return 0


def _migrate(args: argparse.Namespace, wrap_channel: ChannelWrapper | None = None) -> int:
    from .migration._report import Figures, MigrationReport
    from .migration._run import MigrateArgs, interrupted_report, migrate

    options = MigrateArgs(
        listen=args.listen,
        connect=args.connect,
        channels=args.channels,
        size=args.size,
        page_size=args.page_size,
        packet_pages=args.packet_pages,
        seed=args.seed,
        image=args.image,
        output=args.output,
        tls=args.tls,
        tls_dir=args.tls_dir,
        tls_hostname=args.tls_hostname,
        tls_acl=tuple(args.tls_acl) if args.tls_acl else None,
        trace=args.trace,
        progress=args.progress,
        unix=args.unix,
        checksum=Checksum.from_name(args.checksum) if args.checksum else None,
        timeout=args.timeout or None,
        wrap_channel=wrap_channel,
        figures=Figures(),
    )

    def show(report: MigrationReport) -> None:
        print(report.to_json() if args.json else report.to_text(), flush=True)

    async def body() -> int:
        report = await migrate(options)
        show(report)
        if not report.ok:
            print(f"trioqio migrate: {report.error or report.verdict}", file=sys.stderr)
        return 0 if report.ok else 1

    return _Command("migrate").run(body, lambda reason: show(interrupted_report(options, reason)))


# -- serve -------------------------------------------------------------------------------

#: What one client's failure may be: one log line, the service goes on.
_CLIENT_ERRORS = (OSError, QIOError, trio.BrokenResourceError)

_log = logging.getLogger("trioqio.serve")


def _serve_tls(args: argparse.Namespace, scratch: Callable[[], Path]) -> ssl.SSLContext:
    """Load the server credentials, naming the directory or file at fault."""
    if args.tls_dir:
        directory = Path(args.tls_dir)
        if not directory.is_dir():
            problem = "is not a directory" if directory.exists() else "does not exist"
            raise _Failure(
                f"--tls-dir {args.tls_dir!r} {problem} (make one with: trioqio migrate "
                f"--make-tls-dir {args.tls_dir})"
            )
        files = ("ca-cert.pem", "server-cert.pem", "server-key.pem")
        missing = [name for name in files if not (directory / name).is_file()]
        if missing:
            raise _Failure(f"--tls-dir {args.tls_dir!r} lacks {', '.join(missing)}")
    else:
        from .migration._certs import make_credentials

        directory = make_credentials(scratch())
        print(f"TLS: throwaway CA {directory / 'ca-cert.pem'} (removed on exit)", file=sys.stderr)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_verify_locations(directory / "ca-cert.pem")
    except ssl.SSLError as exc:
        raise _Failure(f"--tls-dir: {directory / 'ca-cert.pem'}: not a PEM CA certificate "
                       f"({exc.reason or exc})") from None  # fmt: skip
    try:
        context.load_cert_chain(directory / "server-cert.pem", directory / "server-key.pem")
    except ssl.SSLError as exc:
        raise _Failure(
            f"--tls-dir: {directory / 'server-cert.pem'} and server-key.pem are not a PEM "
            f"certificate and its key ({exc.reason or exc})"
        ) from None
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _client_name(number: int, sock: SocketChannel) -> str:
    with contextlib.suppress(OSError, QIOError):
        remote = str(sock.remote_address)
        if remote != "unix:":
            return f"client {number} ({remote})"
        return f"client {number} (on {sock.local_address})"
    return f"client {number}"


@contextlib.contextmanager
def _logging(verbose: bool) -> Generator[None, None, None]:
    """Send trioqio's log records to stderr while ``serve`` runs, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("trioqio serve: %(message)s"))
    package = logging.getLogger("trioqio")
    levels = package.level, _log.level
    package.addHandler(handler)
    package.setLevel(logging.INFO)  # the listener's own warnings (accept errors, bugs)
    _log.setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(levels[0])
        _log.setLevel(levels[1])


async def _serve(args: argparse.Namespace) -> int:
    from ._channel_tls import TLSChannel
    from ._channel_websock import WebsockChannel
    from ._listener import NetListener

    with contextlib.ExitStack() as stack, _logging(args.verbose):

        def scratch() -> Path:
            # Removed on every way out: the throwaway CA's private keys live here.
            return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trioqio-serve-")))

        context = _serve_tls(args, scratch) if args.tls else None
        numbers = itertools.count(1)

        async def echo(sock: SocketChannel) -> None:
            who = _client_name(next(numbers), sock)
            channel: _Channel = sock
            try:
                if context is not None:
                    channel = tls = TLSChannel.server(sock, context, relaxed_eof=True)
                    await tls.handshake()
                if args.websocket:
                    channel = ws = WebsockChannel.server(channel)
                    await ws.handshake()
                _log.debug("%s: connected", who)
                while data := await channel.receive_some():
                    await channel.send_all(data)
                _log.debug("%s: closed", who)
            except _CLIENT_ERRORS as exc:
                _log.warning(
                    "%s: %s", who, one_line(exc), exc_info=_log.isEnabledFor(logging.DEBUG)
                )
            finally:
                with contextlib.suppress(*_CLIENT_ERRORS):
                    await channel.aclose()

        async with NetListener(name="trioqio-serve") as listener:
            for address in args.addresses:
                await listener.open(address)
            listener.set_client_func(echo)
            print(
                "echo on " + " ".join(str(a) for a in listener.addresses),
                file=sys.stderr,
                flush=True,
            )
            await trio.sleep_forever()
    return 0  # pragma: no cover - only a signal ends it


# -- task-demo ---------------------------------------------------------------------------


async def _task_demo(workers: int) -> int:
    from ._task import Task

    gate = threading.Barrier(workers, timeout=5)
    output = threading.Lock()
    trio_thread = threading.get_ident()

    def worker(index: int) -> int:
        ident = threading.get_ident()
        with output:  # one line at a time: the four workers print at once
            print(f"Worker {index} running in the thread id = {ident}", flush=True)
        with contextlib.suppress(threading.BrokenBarrierError):
            gate.wait()  # all workers alive at once: four distinct threads
        return ident

    completions: list[int] = []

    def callback(task: Task[int]) -> None:
        task.propagate_error()
        ident = threading.get_ident()
        completions.append(ident)
        print(f"Callback for {task.name} running in the thread id = {ident}", flush=True)

    async def release_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            gate.abort()  # cancelled (a signal): workers stop waiting for each other now

    async with trio.open_nursery() as outer:
        outer.start_soon(release_on_cancel)
        async with trio.open_nursery() as nursery:
            tasks = [Task[int](on_complete=callback, name=f"worker {i}") for i in range(workers)]
            for index, task in enumerate(tasks):
                task.run_in_thread(nursery, worker, index)
        outer.cancel_scope.cancel()
    threads = {task.result for task in tasks}
    print(
        f"{len(threads)} worker thread(s); completions in {len(set(completions))} thread(s); "
        f"the Trio thread is {trio_thread}"
        + (" (every completion ran there)" if set(completions) == {trio_thread} else ""),
        flush=True,
    )
    return 0 if set(completions) == {trio_thread} else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
