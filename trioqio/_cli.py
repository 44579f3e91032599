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
from collections.abc import Sequence

import trio

from .migration._protocol import DEFAULT_CHECKSUM, Checksum
from .migration._report import parse_size

__all__ = ["main"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
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
    )
    ends = migrate.add_mutually_exclusive_group()
    ends.add_argument("--listen", metavar="ADDR", help="run only the destination, on ADDR")
    ends.add_argument("--connect", metavar="ADDR", help="run only the source, to ADDR")
    migrate.add_argument("--channels", type=_positive, default=4, help="multifd channels (4)")
    migrate.add_argument(
        "--size", type=_size, default=256 << 20, help="image size, e.g. 512MiB, 1GiB (256MiB)"
    )
    migrate.add_argument("--seed", type=int, default=0, help="seed of the generated image (0)")
    migrate.add_argument("--image", metavar="FILE", help="send FILE instead of generated pages")
    migrate.add_argument("--output", metavar="FILE", help="destination writes the image here")
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
    migrate.add_argument("--unix", action="store_true", help="in-process run over a UNIX socket")
    migrate.add_argument("--tls", action="store_true", help="TLS on every channel")
    migrate.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="x509 credentials (ca-cert.pem, server-cert.pem, server-key.pem, "
        "client-cert.pem, client-key.pem); default: a throwaway CA made now",
    )
    migrate.add_argument("--tls-hostname", help="name the server certificate must carry")
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
    # Test hooks (hidden): damage a page on the wire; stop after N pages.
    migrate.add_argument("--test-corrupt-page", type=int, help=argparse.SUPPRESS)
    migrate.add_argument("--test-hold-after-pages", type=int, help=argparse.SUPPRESS)

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trioqio`` command; return its exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        0 on success (for ``migrate``: only when the checksums match).

    Example::

        raise SystemExit(main(["migrate", "--size", "64MiB"]))
    """
    args = _parser().parse_args(argv)
    if args.command == "migrate":
        return _migrate(args)
    if args.command == "serve":
        return _serve(args)
    return trio.run(_task_demo, args.workers)


def _migrate(args: argparse.Namespace) -> int:
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
        corrupt_page=args.test_corrupt_page,
        hold_after_pages=args.test_hold_after_pages,
        checksum=Checksum.from_name(args.checksum) if args.checksum else None,
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
