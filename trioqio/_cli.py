"""The ``trioqio`` command (QEMU has none; its nearest kin are ``qemu-system -incoming``,
QMP ``migrate`` and the ``tests/unit/test-io-*`` programs).

Subcommands:

* ``trioqio migrate``: a live-migration-shaped transfer, both ends in one process by
  default (``trioqio.migration``);
* ``trioqio serve ADDR...``: an echo service on several addresses at once
  (:class:`trioqio.NetListener`), optionally TLS or websocket;
* ``trioqio task-demo``: the seed note's experiment: four Task workers in four threads,
  their completions in the Trio thread.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from .migration._protocol import DEFAULT_CHECKSUM, Checksum
from .migration._report import parse_size

if TYPE_CHECKING:
    from ._abc import Channel as _Channel

    ChannelWrapper = Callable[[_Channel, str], _Channel]

__all__ = ["main"]


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioqio", description="QEMU's io/ subsystem on Trio: demos and tools."
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
            "processes --tls needs --tls-dir on both ends (make one with --make-tls-dir)."
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
    bar.add_argument("--progress", dest="progress", action="store_true", default=None)
    bar.add_argument("--no-progress", dest="progress", action="store_false")

    serve = commands.add_parser(
        "serve",
        help="echo service on one or more addresses",
        description="Echo every byte back, on every ADDR at once (tcp:, unix:, fd:).",
    )
    serve.add_argument("addresses", nargs="+", metavar="ADDR")
    serve.add_argument("--tls", action="store_true", help="TLS (throwaway CA unless --tls-dir)")
    serve.add_argument("--tls-dir", metavar="DIR", help="x509 credentials directory")
    serve.add_argument("--websocket", action="store_true", help="websocket handshake first")

    demo = commands.add_parser(
        "task-demo",
        help="the seed experiment: Task workers in threads, completions in the Trio thread",
    )
    demo.add_argument("--workers", type=_positive, default=4, help="workers to start (4)")
    return parser


def main(argv: Sequence[str] | None = None, *, wrap_channel: ChannelWrapper | None = None) -> int:
    """Run the ``trioqio`` command; return its exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        wrap_channel: for tests, from Python only: ``migrate`` wraps every multifd
            channel with it (e.g. a :mod:`trioqio.testing` wrapper).

    Returns:
        0 on success (for ``migrate``: only when the checksums match).

    Example::

        raise SystemExit(main(["migrate", "--size", "64MiB"]))
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "migrate":
        if args.make_tls_dir is not None:
            return _make_tls_dir(args)
        if args.tls and (args.listen or args.connect) and not args.tls_dir:
            parser.error(
                "migrate: --tls with --listen or --connect needs --tls-dir on both ends "
                "(each end would otherwise make its own throwaway CA, which the other "
                "cannot trust); make one with: trioqio migrate --make-tls-dir DIR"
            )
        return _migrate(args, wrap_channel)
    if args.command == "serve":
        return _serve(args)
    return trio.run(_task_demo, args.workers)


def _make_tls_dir(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ._errors import MigrationError
    from .migration._certs import CLIENT_ACL, make_credentials

    directory = Path(args.make_tls_dir)
    names = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem",
             "client-key.pem", "ca-key.pem")  # fmt: skip
    taken = [name for name in names if (directory / name).exists()]
    if taken:
        print(
            f"trioqio migrate: {directory} already holds {', '.join(taken)}; not overwriting",
            file=sys.stderr,
        )
        return 1
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        hostnames = [args.tls_hostname] if args.tls_hostname else []
        make_credentials(directory, hostnames=hostnames, days=365)
    except (OSError, MigrationError) as exc:
        print(f"trioqio migrate: --make-tls-dir {directory}: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem and "
        f"client-key.pem to {directory} (client DN {CLIENT_ACL[0].rstrip('*')}, which the "
        f"default --tls-acl admits); copy the directory to both hosts and pass "
        f"--tls --tls-dir {directory} on both ends"
    )
    return 0


def _migrate(args: argparse.Namespace, wrap_channel: ChannelWrapper | None = None) -> int:
    from .migration._run import MigrateArgs, migrate

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
    )
    try:
        report = trio.run(migrate, options)
    except KeyboardInterrupt:
        print("trioqio migrate: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(report.to_json())
    else:
        print(report.to_text())
    if not report.ok:
        print(f"trioqio migrate: {report.error or report.verdict}", file=sys.stderr)
    return 0 if report.ok else 1


# -- serve -------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    try:
        trio.run(_serve_main, args)
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as exc:
        print(f"trioqio serve: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve_main(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from ._abc import Channel
    from ._channel_socket import SocketChannel
    from ._listener import NetListener

    context = None
    with tempfile.TemporaryDirectory(prefix="trioqio-serve-") as scratch:
        if args.tls:
            from .migration._certs import make_credentials, server_context

            directory = Path(args.tls_dir) if args.tls_dir else make_credentials(Path(scratch))
            context = server_context(directory)
            context.verify_mode = __import__("ssl").CERT_OPTIONAL
            print(f"TLS credentials in {directory}", file=sys.stderr)

        async def echo(sock: SocketChannel) -> None:
            channel: Channel = sock
            if context is not None:
                from ._channel_tls import TLSChannel

                tls = TLSChannel.server(channel, context, relaxed_eof=True)
                await tls.handshake()
                channel = tls
            if args.websocket:
                from ._channel_websock import WebsockChannel

                ws = WebsockChannel.server(channel)
                await ws.handshake()
                channel = ws
            try:
                while data := await channel.receive_some():
                    await channel.send_all(data)
            finally:
                await channel.aclose()

        async with NetListener(name="trioqio-serve") as listener:
            for address in args.addresses:
                await listener.open(address)
            listener.set_client_func(echo)
            print("echo on " + " ".join(str(a) for a in listener.addresses), file=sys.stderr)
            sys.stderr.flush()
            await trio.sleep_forever()


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

    async with trio.open_nursery() as nursery:
        tasks = [Task[int](on_complete=callback, name=f"worker {i}") for i in range(workers)]
        for index, task in enumerate(tasks):
            task.run_in_thread(nursery, worker, index)
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
