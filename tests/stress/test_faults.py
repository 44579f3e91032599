"""Faults: migrations through trioqio.testing.FaultProxy, peer resets on every channel kind,
and SIGKILL of either migration end.

Every fault either completes with matching checksums or fails with a clear MigrationError
(a BrokenResourceError, or a documented EOF, for a bare channel), never hangs: each
scenario runs under a generous ``trio.fail_after`` or ``communicate(timeout=...)``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid as uuid_module
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from _scale import size

import trioqio
from trioqio import MigrationError
from trioqio.migration._destination import DestinationOptions, run_destination
from trioqio.migration._image import GeneratedImage
from trioqio.migration._protocol import ResultStatus
from trioqio.migration._source import SourceOptions, SourceOutcome, run_source
from trioqio.testing import Fault, FaultProxy

MIB = 1 << 20
IMAGE = size(full=1024, ci=24) * MIB
CHANNELS = 4
NO_HANG = 120  # seconds: a generous bound, never a speed assertion


def _usage() -> str:
    """Open fds, threads and resident memory, for the figures the tests print."""
    import threading

    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    fds = len(os.listdir("/proc/self/fd"))
    return f"fds {fds}, threads {threading.active_count()}, rss {rss / MIB:.0f} MiB"


async def _migrate_through(**proxy: Any) -> tuple[Any, Any, FaultProxy]:
    """Run a migration whose every connection goes through a FaultProxy.

    Returns (source outcome or MigrationError, destination outcome or MigrationError, proxy).
    """
    found: dict[str, Any] = {}
    with trio.fail_after(NO_HANG):
        async with trio.open_nursery() as nursery:
            options = DestinationOptions(address="tcp:127.0.0.1:0", backlog=CHANNELS)

            async def destination(task_status: trio.TaskStatus[Any]) -> None:
                try:
                    found["destination"] = await run_destination(options, task_status=task_status)
                except MigrationError as exc:
                    found["destination"] = exc

            addresses = await nursery.start(destination)
            async with FaultProxy(addresses[0], **proxy) as fault_proxy:
                source = SourceOptions(
                    address=fault_proxy.address,
                    image=GeneratedImage(size=IMAGE, seed=11),
                    channels=CHANNELS,
                    uuid=uuid_module.uuid4().bytes,
                    packet_pages=64,
                )
                try:
                    found["source"] = await run_source(source)
                except MigrationError as exc:
                    found["source"] = exc
    return found["source"], found["destination"], fault_proxy


@pytest.mark.parametrize(
    "proxy",
    [
        pytest.param({"fault": Fault(delay=0.005)}, id="delay-5ms-both-ways"),
        pytest.param({"to_target": Fault(rate=size(full=64, ci=16) * MIB)}, id="throttle"),
        pytest.param(
            {"to_target": Fault(delay=0.002, rate=size(full=64, ci=16) * MIB, connections={2})},
            id="one-slow-multifd",
        ),
    ],
)
async def test_migration_through_slow_proxy_matches(proxy: dict[str, Fault]) -> None:
    start, before = time.monotonic(), _usage()
    source, destination, fault_proxy = await _migrate_through(**proxy)
    assert isinstance(source, SourceOutcome), source
    assert source.result.status is ResultStatus.MATCH
    assert source.transferred == IMAGE
    assert destination.checksum == source.checksum
    assert fault_proxy.accepted == 1 + CHANNELS
    assert fault_proxy.forwarded["to_target"] > IMAGE
    seconds = time.monotonic() - start
    print(f"{IMAGE / MIB:.0f} MiB through {proxy}: match in {seconds:.2f} s; "
          f"before: {before}; after: {_usage()}")  # fmt: skip


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        pytest.param(Fault(cut_after=20, connections={0}), "cut", id="cut-main"),
        pytest.param(Fault(reset_after=20, connections={0}), "reset", id="reset-main"),
        pytest.param(Fault(cut_after=MIB + 5000, connections={2}), "cut", id="cut-multifd"),
        pytest.param(Fault(reset_after=MIB + 5000, connections={2}), "reset", id="reset-multifd"),
    ],
)
async def test_migration_cut_or_reset_fails_clearly(fault: Fault, kind: str) -> None:
    start, before = time.monotonic(), _usage()
    source, destination, fault_proxy = await _migrate_through(to_target=fault)
    seconds = time.monotonic() - start
    assert fault_proxy.fired == [(min(fault.connections or {0}), "to_target", kind)]
    assert isinstance(source, MigrationError), source
    assert isinstance(destination, MigrationError), destination
    for error in (source, destination):
        text = str(error)
        assert "channel" in text or "multifd" in text, text  # names where it happened
    print(f"{kind} on connection {set(fault.connections or ())} after {fault.limit} bytes: "
          f"both ends failed in {seconds:.2f} s; source: {source}; destination: {destination}; "
          f"before: {before}; after: {_usage()}")  # fmt: skip


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault(delay=0.002, rate=size(full=64, ci=16) * MIB), id="slow"),
        pytest.param(Fault(reset_after=MIB + 5000, connections={1}), id="reset-multifd"),
    ],
)
async def test_two_processes_through_the_proxy(fault: Fault) -> None:
    """``migrate --listen`` and ``--connect`` with the proxy between: match, or exit 1."""
    destination = _start("--listen", "tcp:127.0.0.1:0")
    try:
        assert destination.stderr is not None
        line = destination.stderr.readline()
        assert line.startswith("listening on "), line
        async with FaultProxy(line.split()[2], to_target=fault) as proxy:
            with trio.fail_after(NO_HANG):
                source = await trio.run_process(
                    [sys.executable, "-m", "trioqio", "migrate", "--no-progress",
                     "--connect", proxy.address, "--size", f"{IMAGE // MIB}MiB"],
                    capture_stdout=True, capture_stderr=True, check=False,
                )  # fmt: skip
        out, err = await trio.to_thread.run_sync(lambda: destination.communicate(timeout=30))
    finally:
        if destination.poll() is None:
            destination.kill()
            destination.communicate()
    if fault.reset_after is None:
        assert source.returncode == 0, source.stderr
        assert destination.returncode == 0, err
        assert b"checksums match" in source.stdout
        assert "checksums match" in out
    else:
        assert source.returncode == 1
        assert destination.returncode == 1
        assert b"Traceback" not in source.stderr
        assert "Traceback" not in err
        assert b"multifd" in source.stderr + source.stdout
        # Whichever it saw first: the reset multifd channel, or the source's main channel
        # closing after the source failed.
        assert "incomplete migration" in err, err
    print(f"two processes, {fault}: source exit {source.returncode}, "
          f"destination exit {destination.returncode}")  # fmt: skip


# -- a peer reset mid-transfer on every channel kind ------------------------------------------

PATTERN = bytes(range(256)) * 256  # 64 KiB
STREAM = size(full=64, ci=8) * MIB  # what the undisturbed connection receives and verifies


async def _expect_broken(awaitable: Callable[[], Awaitable[object]]) -> BaseException:
    with pytest.raises(trio.BrokenResourceError) as info:
        with trio.fail_after(NO_HANG):
            await awaitable()
    return info.value


async def _stream_until_broken(channel: trio.abc.SendStream, errors: list[BaseException]) -> None:
    try:
        while True:
            await channel.send_all(PATTERN)
    except trio.BrokenResourceError as exc:
        errors.append(exc)


async def _receive_verified(channel: trio.abc.ReceiveStream, total: int) -> None:
    got = 0
    while got < total:
        chunk = await channel.receive_some(65536)
        assert chunk, "EOF before the end"
        offset = got % len(PATTERN)
        expected = (PATTERN[offset:] + PATTERN)[: len(chunk)]
        assert (
            chunk == expected[: len(chunk)]
            or bytes(chunk) == (PATTERN * 3)[offset : offset + len(chunk)]
        )
        got += len(chunk)


async def _receive_forever(channel: trio.abc.ReceiveStream) -> None:
    while await channel.receive_some(65536):
        pass
    raise AssertionError("clean EOF where a reset was expected")


def _ca_contexts() -> tuple[Any, Any]:
    import ssl

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


WEBSOCK_REQUEST = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class _FrameReader(trio.abc.ReceiveStream):
    """Reads a server's unmasked websocket binary frames as a byte stream (test-side peer)."""

    def __init__(self, channel: trioqio.SocketChannel, pending: bytes) -> None:
        self.channel = channel
        self.buffer = bytearray(pending)
        self.payload_left = 0

    async def _need(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = await self.channel.receive_some(65536)
            if not chunk:
                raise AssertionError("EOF inside a websocket frame")
            self.buffer += chunk
        head, self.buffer = bytes(self.buffer[:count]), self.buffer[count:]
        return head

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while self.payload_left == 0:
            first, second = await self._need(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(await self._need(2), "big")
            elif length == 127:
                length = int.from_bytes(await self._need(8), "big")
            assert first & 0x0F == 0x2, f"not a binary frame: {first:#x}"
            self.payload_left = length
        if not self.buffer:
            chunk = await self.channel.receive_some(65536)
            if not chunk:
                raise AssertionError("EOF inside a websocket frame")
            self.buffer += chunk
        take = min(self.payload_left, len(self.buffer), max_bytes or 65536)
        data, self.buffer = bytes(self.buffer[:take]), self.buffer[take:]
        self.payload_left -= take
        return data

    async def aclose(self) -> None:
        await self.channel.aclose()


@pytest.mark.parametrize("kind", ["tcp", "tls", "websocket"])
async def test_peer_reset_mid_transfer_network(kind: str) -> None:
    """The server streams to two clients; the proxy resets the first mid-stream.

    The server's channel for the first client and the first client's channel both fail
    with BrokenResourceError; the second client receives and verifies its whole stream.
    """
    server_ctx, client_ctx = _ca_contexts() if kind == "tls" else (None, None)
    errors: list[BaseException] = []

    async def handler(sock: trioqio.SocketChannel) -> None:
        channel: Any = sock
        if kind == "tls":
            assert server_ctx is not None
            channel = trioqio.TLSChannel.server(sock, server_ctx)
            await channel.handshake()
        elif kind == "websocket":
            channel = trioqio.WebsockChannel.server(sock)
            await channel.handshake()
        try:
            await _stream_until_broken(channel, errors)
        finally:
            await channel.aclose()

    async def open_client(address: str) -> trio.abc.ReceiveStream:
        sock = await trioqio.connect(address)
        if kind == "tls":
            assert client_ctx is not None
            tls = trioqio.TLSChannel.client(sock, client_ctx, hostname="localhost")
            await tls.handshake()
            return tls
        if kind == "websocket":
            await sock.send_all(WEBSOCK_REQUEST)
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += await sock.receive_some(4096)
            head, _, rest = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            return _FrameReader(sock, rest)
        return sock

    fault = Fault(reset_after=3 * MIB + 77, connections={0})
    error: BaseException = AssertionError("the victim was not reset")
    with trio.fail_after(NO_HANG):
        async with trioqio.NetListener(name="reset") as listener:
            await listener.open("tcp:127.0.0.1:0")
            listener.set_client_func(handler)
            async with FaultProxy(listener.addresses[0], to_client=fault) as proxy:
                victim = await open_client(proxy.address)
                try:
                    bystander = await open_client(proxy.address)
                    try:
                        error = await _expect_broken(lambda: _receive_forever(victim))
                        await _receive_verified(bystander, STREAM)
                    finally:
                        await bystander.aclose()
                finally:
                    await victim.aclose()
                with trio.fail_after(NO_HANG):
                    while len(errors) < 2:  # the bystander's handler breaks on its close
                        await trio.sleep(0.01)
            assert proxy.fired == [(0, "to_client", "reset")]
    assert all(isinstance(exc, trio.BrokenResourceError) for exc in errors), errors
    if kind == "tls":
        # TLSChannel documents a reset as a close without close_notify (a ragged EOF).
        assert isinstance(error, trioqio.UnexpectedEOF), error
    else:
        assert isinstance(error.__cause__, ConnectionResetError), error.__cause__
    print(f"{kind}: victim {error!r} (cause {error.__cause__!r}); server {errors[0]!r}")


async def test_peer_reset_mid_transfer_unix(tmp_path: Path) -> None:
    """A UNIX peer closing with unread data resets the stream: the writer sees it."""
    errors: list[BaseException] = []

    async def handler(channel: trioqio.SocketChannel) -> None:
        async with channel:
            await _stream_until_broken(channel, errors)

    with trio.fail_after(NO_HANG):
        async with trioqio.NetListener(name="reset-unix") as listener:
            await listener.open(f"unix:{tmp_path}/s.sock")
            listener.set_client_func(handler)
            victim = await trioqio.connect(listener.addresses[0])
            async with await trioqio.connect(listener.addresses[0]) as bystander:
                assert await victim.receive_some(1000)
                await victim.aclose()  # unread data pending: the server's writes fail
                while not errors:
                    await trio.sleep(0.01)
                await _receive_verified(bystander, STREAM)
    assert isinstance(errors[0], trio.BrokenResourceError), errors
    print(f"unix: server {errors[0]!r} (cause {errors[0].__cause__!r})")


async def test_pipe_reader_gone_is_broken_writer_gone_is_eof() -> None:
    """FileChannel on a pipe: EPIPE for the writer, a documented EOF for the reader."""
    with trio.fail_after(NO_HANG):
        read_fd, write_fd = os.pipe()
        writer = trioqio.FileChannel(write_fd)
        reader = trioqio.FileChannel(read_fd)
        other_read, other_write = os.pipe()
        other_writer, other_reader = (
            trioqio.FileChannel(other_write),
            trioqio.FileChannel(other_read),
        )
        async with writer, other_writer, other_reader:
            async with reader:
                await writer.send_all(b"x" * 1000)
                assert await reader.receive_some(1000)
            # The reader closed mid-transfer: the writer's next write fails.
            error = await _expect_broken(lambda: _stream_forever(writer))
            assert isinstance(error.__cause__, BrokenPipeError), error.__cause__
            # Nothing else disturbed: the other pipe carries a verified stream.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_stream, other_writer, STREAM)
                await _receive_verified(other_reader, STREAM)
    # The other direction: the writer goes away, the reader sees EOF (b"").
    read_fd, write_fd = os.pipe()
    async with trioqio.FileChannel(read_fd) as reader:
        async with trioqio.FileChannel(write_fd) as writer:
            await writer.send_all(b"last")
        assert await reader.receive_some(100) == b"last"
        assert await reader.receive_some(100) == b""


async def _stream_forever(channel: trio.abc.SendStream) -> None:
    while True:
        await channel.send_all(PATTERN)


async def _send_stream(channel: trio.abc.SendStream, total: int) -> None:
    for _ in range(total // len(PATTERN)):
        await channel.send_all(PATTERN)


async def test_command_child_killed_mid_transfer() -> None:
    """CommandChannel: a killed child breaks writes and ends reads; another child is fine."""
    with trio.fail_after(NO_HANG):
        victim = await trioqio.open_command(["cat"])
        bystander = await trioqio.open_command(["cat"])
        async with victim, bystander:
            await victim.send_all(b"hello")
            assert await victim.receive_some(100) == b"hello"
            os.kill(victim.pid, signal.SIGKILL)
            error = await _expect_broken(lambda: _stream_forever(victim))
            assert isinstance(error.__cause__, BrokenPipeError), error.__cause__
            assert await victim.receive_some(100) == b""  # the documented EOF
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_stream, bystander, STREAM)
                await _receive_verified(bystander, STREAM)
        assert victim.returncode == -signal.SIGKILL


# -- SIGKILL of either migration end -------------------------------------------------------------

KILL_SIZE = f"{size(full=2048, ci=256)}MiB"
KILL_AFTER_PAGES = str(size(full=65536, ci=8192))  # 256 MiB / 32 MiB in


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trioqio", "migrate", "--no-progress", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


#: ``python -c HOLDING BYTES ARGS...``: ``trioqio migrate`` whose every multifd channel
#: stops after BYTES (trioqio.testing.HoldingChannel; the command has no test flags).
HOLDING = """
import sys
from trioqio._cli import main
from trioqio.testing import HoldingChannel
after = int(sys.argv[1])
def wrap(channel, name):
    def held():
        print(f"holding {name}", file=sys.stderr, flush=True)
    return HoldingChannel(channel, after_bytes=after, on_hold=held)
sys.exit(main(["migrate", "--no-progress", *sys.argv[2:]], wrap_channel=wrap))
"""


def _held(*args: str) -> subprocess.Popen[str]:
    # The old --test-hold-after-pages counted pages over all 4 channels; this, bytes per channel.
    per_channel = str(int(KILL_AFTER_PAGES) * 4096 // 4)
    return subprocess.Popen(
        [sys.executable, "-c", HOLDING, per_channel, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _mid_transfer(hold: str) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    listen = ("--listen", "tcp:127.0.0.1:0")
    destination = _held(*listen) if hold == "d" else _start(*listen)
    assert destination.stderr is not None
    line = destination.stderr.readline()
    assert line.startswith("listening on "), line
    connect = ("--connect", line.split()[2], "--size", KILL_SIZE)
    source = _held(*connect) if hold == "s" else _start(*connect)
    held = destination if hold == "d" else source
    assert held.stderr is not None
    for line in held.stderr:
        if line.startswith("holding multifd"):
            break
    return destination, source


@pytest.mark.parametrize("killed", ["destination", "source"])
def test_sigkill_either_end_gives_the_other_a_clear_error(killed: str) -> None:
    destination, source = _mid_transfer(killed[0])
    victim, survivor = (destination, source) if killed == "destination" else (source, destination)
    try:
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=10)
        start = time.monotonic()
        out, err = survivor.communicate(timeout=10)  # a clear error within 10 s, no hang
        seconds = time.monotonic() - start
    finally:
        for process in (destination, source):
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert survivor.returncode == 1
    if killed == "destination":
        assert "destination went away" in err or "destination closed" in err, err
    else:
        assert "incomplete migration" in err, err
        assert "INCOMPLETE" in out
    print(f"{killed} killed after {KILL_AFTER_PAGES} pages: survivor exit 1 in {seconds:.2f} s")
