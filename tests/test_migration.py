"""Migrations end to end: in one process and in two, plain and TLS, TCP and UNIX, and failures."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid as uuid_module
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trioqio
from trioqio import MigrationError
from trioqio.migration._certs import make_credentials
from trioqio.migration._destination import DestinationOptions, DestinationOutcome, run_destination
from trioqio.migration._image import GeneratedImage
from trioqio.migration._protocol import (
    Checksum,
    Config,
    MultiFDInit,
    ResultStatus,
    encode_message,
    pack_main_hello,
)
from trioqio.migration._run import MigrateArgs, migrate
from trioqio.migration._source import SourceOptions, SourceOutcome, run_source
from trioqio.testing import CorruptingChannel, HoldingChannel

MIB = 1 << 20
UUID = uuid_module.uuid4().bytes


async def _in_process(
    address: str, channels: int, size: int = 2 * MIB, **source: Any
) -> tuple[SourceOutcome, DestinationOutcome]:
    async with trio.open_nursery() as nursery:
        options = DestinationOptions(address=address, backlog=channels)
        result: dict[str, DestinationOutcome] = {}

        async def destination(task_status: trio.TaskStatus[list[trioqio.SocketAddress]]) -> None:
            result["destination"] = await run_destination(options, task_status=task_status)

        addresses = await nursery.start(destination)
        image = GeneratedImage(size=size, seed=5)
        outcome = await run_source(
            SourceOptions(
                address=addresses[0],
                image=image,
                channels=channels,
                uuid=UUID,
                packet_pages=16,
                **source,
            )
        )
    return outcome, result["destination"]


@pytest.mark.parametrize("channels", [1, 4, 8])
async def test_in_process_tcp(channels: int) -> None:
    source, destination = await _in_process("tcp:127.0.0.1:0", channels)
    assert source.result.status is ResultStatus.MATCH
    assert source.transferred == 2 * MIB
    assert len(source.shares) == channels
    assert sum(share.bytes for share in source.shares) == 2 * MIB
    assert destination.checksum == source.checksum


async def test_in_process_unix(tmp_path: Path) -> None:
    source, _ = await _in_process(f"unix:{tmp_path}/m.sock", 4, size=MIB + 123)
    assert source.result.status is ResultStatus.MATCH
    assert source.transferred == MIB + 123


def _corrupt(channel: trioqio.abc.Channel, name: str) -> trioqio.abc.Channel:
    # 64-byte init header + 24-byte packet header: offset 1000 is in the channel's first
    # page (every channel: which ones carry a packet is up to the shared queue).
    return CorruptingChannel(channel, offset=1000)


async def test_corrupted_page_is_detected() -> None:
    source, destination = await _in_process("tcp:127.0.0.1:0", 4, wrap_channel=_corrupt)
    assert source.result.status is ResultStatus.MISMATCH
    assert destination.status is ResultStatus.MISMATCH
    assert source.result.checksum != source.checksum


@pytest.mark.parametrize("algorithm", list(Checksum))
async def test_every_checksum_matches_and_detects_corruption(algorithm: Checksum) -> None:
    good, destination = await _in_process("tcp:127.0.0.1:0", 2, checksum=algorithm)
    assert good.result.status is ResultStatus.MATCH
    assert destination.config.checksum is algorithm
    bad, _ = await _in_process("tcp:127.0.0.1:0", 2, checksum=algorithm, wrap_channel=_corrupt)
    assert bad.result.status is ResultStatus.MISMATCH
    assert good.checksum == bad.checksum  # the source hashed what it meant to send


async def test_destination_rejects_another_checksum() -> None:
    async with trio.open_nursery() as nursery:
        options = DestinationOptions(address="tcp:127.0.0.1:0", checksum=Checksum.SHA256)
        errors: list[BaseException] = []

        async def destination(task_status: trio.TaskStatus[list[trioqio.SocketAddress]]) -> None:
            try:
                await run_destination(options, task_status=task_status)
            except MigrationError as exc:
                errors.append(exc)

        addresses = await nursery.start(destination)
        source = SourceOptions(
            address=addresses[0],
            image=GeneratedImage(size=MIB, seed=1),
            channels=2,
            uuid=UUID,
            checksum=Checksum.CRC32,
        )
        with pytest.raises(MigrationError, match="field 'checksum': the source uses crc32"):
            await run_source(source)
    assert len(errors) == 1
    assert "this destination was told to expect sha256" in str(errors[0])


@pytest.mark.parametrize("unix", [False, True])
async def test_migrate_tls(unix: bool) -> None:
    report = await migrate(MigrateArgs(size=2 * MIB, channels=4, tls=True, unix=unix))
    assert report.ok, report.error
    assert report.tls
    assert report.source_checksum == report.destination_checksum


async def test_migrate_trace_shows_threads() -> None:
    report = await migrate(MigrateArgs(size=MIB, channels=4, trace=True, progress=False))
    assert report.ok
    assert report.trace is not None
    # Every completion ran in the Trio thread; the connects ran in worker threads.
    assert report.trace["completion_threads"] == [report.trace["trio_thread"]]
    assert report.trace["trio_thread"] not in report.trace["worker_threads"]


# -- bad peers: a hand-made source ---------------------------------------------------------


async def _fake_source(inits: list[bytes], expect: str) -> None:
    config = Config(uuid=UUID, size=MIB, page_size=4096, channels=2, packet_pages=16)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            options = DestinationOptions(address="tcp:127.0.0.1:0", backlog=2)
            errors: list[BaseException] = []

            async def destination(
                task_status: trio.TaskStatus[list[trioqio.SocketAddress]],
            ) -> None:
                try:
                    await run_destination(options, task_status=task_status)
                except MigrationError as exc:
                    errors.append(exc)

            addresses = await nursery.start(destination)
            main = await trioqio.connect(addresses[0])
            channels = []
            try:
                await main.send_all(pack_main_hello() + encode_message(config))
                for init in inits:
                    channel = await trioqio.connect(addresses[0])
                    channels.append(channel)
                    await channel.send_all(init)
                # The destination tells the source why on the main channel, then closes.
                told = await main.receive_some()
                assert expect.encode() in told
            finally:
                for channel in channels:
                    await channel.aclose()
                await main.aclose()
    assert len(errors) == 1
    assert expect in str(errors[0])


def _raw_init(magic: int = 0x11223344, version: int = 1, uuid: bytes = UUID, id: int = 0) -> bytes:
    import struct

    return struct.pack(">II16sB7x32x", magic, version, uuid, id)


@pytest.mark.parametrize(
    ("init", "expect"),
    [
        (_raw_init(version=2), "field 'version'"),
        (_raw_init(uuid=bytes(16)), "field 'uuid'"),
        (_raw_init(id=2), "field 'id'"),
        (b"GET / HTTP/1.1\r\n" + bytes(48), "field 'magic'"),
    ],
)
async def test_bad_init_header_fails_naming_channel_and_field(init: bytes, expect: str) -> None:
    await _fake_source([init], f"channel accepted #1: {expect}")


async def test_duplicate_id_fails() -> None:
    init = MultiFDInit(uuid=UUID, id=1).pack()
    await _fake_source([init, init], "field 'id': received id 1 already set up")


async def test_multifd_closing_before_end_is_one_named_error() -> None:
    """A channel that ends early fails the migration with the MigrationError itself.

    The error is raised inside a nursery in the destination, so it first arrives wrapped in
    an exception group; the destination must report the error, not the group (the command
    line once printed a traceback instead of its INCOMPLETE report).
    """
    config = Config(uuid=UUID, size=MIB, page_size=4096, channels=1, packet_pages=16)
    errors: list[BaseException] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            options = DestinationOptions(address="tcp:127.0.0.1:0", backlog=1)

            async def destination(
                task_status: trio.TaskStatus[list[trioqio.SocketAddress]],
            ) -> None:
                try:
                    await run_destination(options, task_status=task_status)
                except MigrationError as exc:
                    errors.append(exc)

            addresses = await nursery.start(destination)
            main = await trioqio.connect(addresses[0])
            try:
                await main.send_all(pack_main_hello() + encode_message(config))
                multifd = await trioqio.connect(addresses[0])
                await multifd.send_all(MultiFDInit(uuid=UUID, id=0).pack())
                await multifd.aclose()  # no packets, no END
                told = await main.receive_some()
                assert b"closed before its END packet" in told
            finally:
                await main.aclose()
    assert len(errors) == 1
    assert type(errors[0]) is MigrationError
    assert "incomplete migration: multifd 0 closed before its END packet" in str(errors[0])


async def test_extra_connection_is_closed_with_a_notice() -> None:
    notices: list[str] = []
    config = Config(uuid=UUID, size=0, page_size=4096, channels=1, packet_pages=16)
    async with trio.open_nursery() as nursery:
        options = DestinationOptions(address="tcp:127.0.0.1:0", backlog=1, on_event=notices.append)
        addresses = await nursery.start(run_destination, options)
        address = addresses[0]
        main = await trioqio.connect(address)
        one = await trioqio.connect(address)
        try:
            await main.send_all(pack_main_hello() + encode_message(config))
            await one.send_all(MultiFDInit(uuid=UUID, id=0).pack())
            while not notices:
                extra = await trioqio.connect(address)
                try:
                    assert await extra.receive_some() == b""  # closed by the destination
                finally:
                    await extra.aclose()
        finally:
            await one.aclose()
            await main.aclose()
            nursery.cancel_scope.cancel()
    assert "extra incoming migration connection" in notices[0]


# -- two processes ---------------------------------------------------------------------------


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trioqio", "migrate", "--no-progress", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _listen(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = _start(*args)
    assert process.stderr is not None
    line = process.stderr.readline()
    assert line.startswith("listening on "), line
    return process, line.split()[2]


@pytest.mark.parametrize(
    ("channels", "listen", "tls"),
    [(1, "tcp:127.0.0.1:0", False), (4, "unix", False), (8, "tcp:127.0.0.1:0", True)],
)
def test_two_processes(tmp_path: Path, channels: int, listen: str, tls: bool) -> None:
    address = f"unix:{tmp_path}/m.sock" if listen == "unix" else listen
    extra = ["--tls", "--tls-dir", str(make_credentials(tmp_path))] if tls else []
    destination, bound = _listen("--listen", address, "--channels", str(channels), *extra)
    source = _start("--connect", bound, "--channels", str(channels), "--size", "3MiB", *extra)
    out, err = source.communicate(timeout=30)
    dest_out, dest_err = destination.communicate(timeout=30)
    assert source.returncode == 0, err
    assert destination.returncode == 0, dest_err
    assert "checksums match" in out
    assert "checksums match" in dest_out
    assert f"multifd {channels - 1}:" in dest_out


#: Runs ``trioqio migrate`` with a trioqio.testing wrapper on every multifd channel:
#: ``python -c CHILD hold|corrupt AMOUNT ARGS...`` (no test flag in the command itself).
CHILD = """
import sys
from trioqio._cli import main
from trioqio.testing import CorruptingChannel, HoldingChannel
mode, amount = sys.argv[1], int(sys.argv[2])
def wrap(channel, name):
    if mode == "hold":
        def held():
            print(f"holding {name}", file=sys.stderr, flush=True)
        return HoldingChannel(channel, after_bytes=amount, on_hold=held)
    return CorruptingChannel(channel, offset=amount)  # every channel: any may carry a page
sys.exit(main(["migrate", "--no-progress", *sys.argv[3:]], wrap_channel=wrap))
"""


def _child(mode: str, amount: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(amount), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _mid_transfer(hold: str) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """Start both ends; the one named by ``hold`` stops after 1 MiB on each channel."""
    if hold == "d":
        destination = _child("hold", MIB, "--listen", "tcp:127.0.0.1:0")
        assert destination.stderr is not None
        line = destination.stderr.readline()
        assert line.startswith("listening on "), line
        source = _start("--connect", line.split()[2], "--size", "64MiB")
    else:
        destination, bound = _listen("--listen", "tcp:127.0.0.1:0")
        source = _child("hold", MIB, "--connect", bound, "--size", "64MiB")
    held = destination if hold == "d" else source
    assert held.stderr is not None
    for line in held.stderr:
        if line.startswith("holding multifd"):
            break
    return destination, source


def test_destination_killed_mid_transfer() -> None:
    destination, source = _mid_transfer("d")
    destination.send_signal(signal.SIGKILL)
    destination.communicate(timeout=10)
    out, err = source.communicate(timeout=10)  # within seconds, no hang
    assert source.returncode == 1
    assert "destination went away" in err or "destination closed" in err, err
    assert "INCOMPLETE" in out
    moved = int(out.split()[2].split(".")[0])  # "migration source: 4.00 MiB of ..."
    assert moved > 0, out  # the report keeps what moved before the failure


def test_source_killed_mid_transfer() -> None:
    destination, source = _mid_transfer("s")
    source.send_signal(signal.SIGKILL)
    source.communicate(timeout=10)
    out, err = destination.communicate(timeout=10)
    assert destination.returncode == 1
    assert "incomplete migration" in err, err
    assert "INCOMPLETE" in out
    assert "of 64.00 MiB" in out, out  # the announced size, not the default
    assert "multifd 3:" in out, out


def test_two_process_corruption_exits_nonzero() -> None:
    destination, bound = _listen("--listen", "tcp:127.0.0.1:0")
    source = _child("corrupt", 1000, "--connect", bound, "--size", "1MiB", "--json")
    out, err = source.communicate(timeout=30)
    destination.communicate(timeout=30)
    assert source.returncode == 1, err
    assert destination.returncode == 1
    assert '"verdict": "mismatch"' in out


def test_two_processes_checksum_mismatch_is_named() -> None:
    destination, bound = _listen("--listen", "tcp:127.0.0.1:0", "--checksum", "sha256")
    source = _start("--connect", bound, "--size", "1MiB", "--checksum", "blake2b")
    out, err = source.communicate(timeout=30)
    dest_out, dest_err = destination.communicate(timeout=30)
    assert source.returncode == 1
    assert destination.returncode == 1
    assert "field 'checksum'" in err + out
    assert "field 'checksum'" in dest_err + dest_out


# -- issue 17: nothing hangs, nothing goes astray, reports keep what moved ------------------------


def _stderr_until(process: subprocess.Popen[str], text: str) -> str:
    assert process.stderr is not None
    seen = ""
    for line in process.stderr:
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never appeared in: {seen}")


def _reaped(*processes: subprocess.Popen[str]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_stopped_destination_times_out_naming_the_channel() -> None:
    """A SIGSTOPped destination: the source fails after --timeout, naming a stalled channel."""
    destination, bound = _listen("--listen", "tcp:127.0.0.1:0")
    try:
        destination.send_signal(signal.SIGSTOP)
        source = _start("--connect", bound, "--size", "1GiB", "--timeout", "1", "--json")
        out, err = source.communicate(timeout=30)
        destination.send_signal(signal.SIGCONT)
        _, dest_err = destination.communicate(timeout=30)
    finally:
        destination.send_signal(signal.SIGCONT)
        _reaped(destination)
    assert source.returncode == 1, err
    assert "no progress for 1 s" in err, err
    report = json.loads(out)
    assert report["error_kind"] == "timeout"
    assert report["error_channel"].startswith(("main", "multifd "))
    assert destination.returncode == 1
    assert "source failed" in dest_err or "incomplete migration" in dest_err, dest_err


def test_stalled_source_times_out_on_both_ends() -> None:
    """A source that stops mid-transfer: the destination fails after --timeout and says why."""
    destination, bound = _listen("--listen", "tcp:127.0.0.1:0", "--timeout", "1")
    source = _child("hold", MIB, "--connect", bound, "--size", "64MiB", "--json")
    try:
        dest_out, dest_err = destination.communicate(timeout=30)
        out, err = source.communicate(timeout=30)
    finally:
        _reaped(destination, source)
    assert destination.returncode == 1
    assert "no progress for 1 s while waiting for a packet" in dest_err, dest_err
    assert "INCOMPLETE" in dest_out
    assert source.returncode == 1
    assert "destination failed: channel multifd" in err, err
    report = json.loads(out)
    assert report["error_kind"] == "remote"
    assert report["bytes"] > 0  # what moved before the stall


def test_silent_peer_times_out() -> None:
    """A peer that accepts and never answers (``nc -l``): the source fails, it does not hang."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        port = server.getsockname()[1]
        source = _start("--connect", f"tcp:127.0.0.1:{port}", "--size", "256MiB", "--timeout", "1")
        accepted = []
        try:
            server.settimeout(10)
            accepted.append(server.accept()[0])  # the main channel; never read
            _, err = source.communicate(timeout=30)
        finally:
            for connection in accepted:
                connection.close()
            _reaped(source)
    assert source.returncode == 1
    assert "no progress for 1 s" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_unwritable_output_fails_before_listening(tmp_path: Path) -> None:
    output = tmp_path / "missing" / "copy.img"
    done = subprocess.run(
        [sys.executable, "-m", "trioqio", "migrate", "--listen", "tcp:127.0.0.1:0",
         "--output", str(output), "--json"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert "listening on" not in done.stderr
    assert f"--output '{output}': No such file or directory" in done.stderr
    report = json.loads(done.stdout)
    assert (report["error_kind"], report["error_field"]) == ("local", "output")


async def test_output_failure_mid_transfer_is_sent_to_the_source(tmp_path: Path) -> None:
    """A destination-side failure reaches the source as ERROR, with its cause."""
    from trioqio._channel_file import FileChannel

    async def broken_pwrite(self: FileChannel, data: object, offset: int) -> None:
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FileChannel, "pwrite", broken_pwrite)
        report = await migrate(
            MigrateArgs(size=2 * MIB, output=str(tmp_path / "copy.img"), progress=False)
        )
    assert not report.ok
    assert report.error is not None
    assert "No space left on device" in report.error, report.error
    assert report.error_kind == "remote"


def test_channel_count_mismatch_fails_both_ends() -> None:
    destination, bound = _listen("--listen", "tcp:127.0.0.1:0", "--channels", "4")
    source = _start("--connect", bound, "--channels", "2", "--size", "1MiB")
    _, err = source.communicate(timeout=30)
    _, dest_err = destination.communicate(timeout=30)
    assert (source.returncode, destination.returncode) == (1, 1)
    for text in (err, dest_err):
        assert "the source opens 2 multifd channel(s), this destination expects 4" in text
        assert "--channels must match" in text


def test_stray_connections_before_a_migration_are_ignored() -> None:
    destination, bound = _listen("--listen", "tcp:127.0.0.1:0")
    host, port = bound.removeprefix("tcp:").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port))):
            pass  # a health check: connect, close
        with socket.create_connection((host, int(port))) as stray:
            stray.sendall(b"GET / HTTP/1.1\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):  # dropped unread: a reset
                assert stray.recv(100) == b""  # dropped
        source = _start("--connect", bound, "--size", "2MiB")
        _, err = source.communicate(timeout=30)
        dest_out, dest_err = destination.communicate(timeout=30)
    finally:
        _reaped(destination)
    assert source.returncode == 0, err
    assert destination.returncode == 0, dest_err
    assert "checksums match" in dest_out
    ignored = [line for line in dest_err.splitlines() if "ignoring connection" in line]
    assert len(ignored) == 2, dest_err  # one line each
    assert "before any migration began" in ignored[1]
    assert "b'GET '" in ignored[1]


async def test_listen_name_must_bind_every_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """``localhost`` giving ::1 and 127.0.0.1, with [::1]:P held elsewhere: a clear error."""
    import socket as socket_module

    held = socket_module.socket(socket_module.AF_INET6)
    try:
        held.bind(("::1", 0))
    except OSError:
        held.close()
        pytest.skip("no IPv6 loopback on this machine")
    with held:
        held.listen()
        port = held.getsockname()[1]

        class BothFamilies(trio.abc.HostnameResolver):
            async def getaddrinfo(
                self,
                host: bytes | None,
                port: bytes | str | int | None,
                family: int = 0,
                type: int = 0,
                proto: int = 0,
                flags: int = 0,
            ) -> list[Any]:
                stream = socket_module.SOCK_STREAM
                return [
                    (socket_module.AF_INET6, stream, 6, "", ("::1", port, 0, 0)),
                    (socket_module.AF_INET, stream, 6, "", ("127.0.0.1", port)),
                ]

            async def getnameinfo(
                self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
            ) -> tuple[str, str]:
                raise NotImplementedError

        previous = trio.socket.set_custom_hostname_resolver(BothFamilies())
        try:
            with pytest.raises(MigrationError) as raised:
                await run_destination(DestinationOptions(address=f"tcp:twohomes:{port}"))
        finally:
            trio.socket.set_custom_hostname_resolver(previous)
    assert (raised.value.kind, raised.value.field) == ("local", "listen")
    assert "::1" in str(raised.value)
    assert "127.0.0.1" in str(raised.value)


async def test_report_has_the_same_json_keys_in_every_case() -> None:
    good = await migrate(MigrateArgs(size=MIB, progress=False))
    refused = await migrate(MigrateArgs(connect="tcp:127.0.0.1:1", size=MIB, progress=False))
    assert good.ok
    assert not refused.ok
    assert refused.error_kind == "connect"
    assert set(good.as_dict()) == set(refused.as_dict())
    assert refused.as_dict()["bytes"] == 0  # refused at once: nothing moved


def test_destination_bar_uses_the_announced_size_and_the_transfer_start() -> None:
    import io

    from trioqio.migration._report import Progress

    stream = io.StringIO()
    progress = Progress(total=0, label="received", stream=stream, enabled=True)
    progress.begin(4 * MIB)
    progress.add(MIB)
    drawn = stream.getvalue()
    assert " 25.0% " in drawn, drawn
    assert "ETA" in drawn
    assert "ETA -" not in drawn  # never a negative ETA
    assert "100.0%" not in drawn


def test_tls_across_processes_needs_tls_dir() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trioqio", "migrate", "--listen", "tcp:127.0.0.1:0", "--tls"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--tls with --listen or --connect needs --tls-dir" in done.stderr
    assert "--make-tls-dir" in done.stderr


def test_make_tls_dir_then_two_processes_over_tls(tmp_path: Path) -> None:
    directory = tmp_path / "creds"
    made = subprocess.run(
        [sys.executable, "-m", "trioqio", "migrate", "--make-tls-dir", str(directory)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    for name in ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem",
                 "client-key.pem"):  # fmt: skip
        assert (directory / name).is_file()
    again = subprocess.run(
        [sys.executable, "-m", "trioqio", "migrate", "--make-tls-dir", str(directory)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 1
    assert "not overwriting" in again.stderr
    extra = ["--tls", "--tls-dir", str(directory)]
    destination, bound = _listen("--listen", "tcp:127.0.0.1:0", *extra)
    source = _start("--connect", bound, "--size", "2MiB", *extra)
    out, err = source.communicate(timeout=30)
    _, dest_err = destination.communicate(timeout=30)
    assert (source.returncode, destination.returncode) == (0, 0), err + dest_err
    assert "checksums match" in out


def test_help_says_which_options_the_destination_takes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trioqio", "migrate", "--help"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    text = " ".join(done.stdout.split())
    assert "The destination (--listen) takes --channels" in text
    assert "--timeout SECONDS" in text
    assert "--test-" not in text


# -- the trioqio.testing wrappers that replaced the test hooks -------------------------------------


async def _pair() -> tuple[trioqio.SocketChannel, trioqio.SocketChannel]:
    a, b = trio.socket.socketpair()
    return trioqio.SocketChannel(a), trioqio.SocketChannel(b)


async def test_corrupting_channel_flips_one_byte_at_its_offset() -> None:
    left, right = await _pair()
    async with left, right:
        corrupt = CorruptingChannel(left, offset=5)
        await corrupt.send_all(b"abc")
        await corrupt.writev([b"de", b"fgh"])
        await corrupt.send_all(b"ij")
        assert await right.receive_exactly(10) == b"abcde" + bytes([ord("f") ^ 0xFF]) + b"ghij"
        assert corrupt.corrupted
        assert corrupt.written == 10
    with pytest.raises(ValueError, match="offset"):
        CorruptingChannel(left, offset=-1)


async def test_holding_channel_stalls_after_its_bytes_until_released() -> None:
    left, right = await _pair()
    release = trio.Event()
    held: list[bool] = []
    async with left, right:
        holding = HoldingChannel(
            left, after_bytes=4, on_hold=lambda: held.append(True), release=release
        )
        await holding.send_all(b"abcd")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holding.send_all, b"ef")
            await trio.testing.wait_all_tasks_blocked()
            assert held == [True]
            assert holding.holding
            release.set()
        assert await right.receive_exactly(6) == b"abcdef"
        await right.send_all(b"xy")
        assert await holding.receive_some(10) == b"xy"  # released: reads pass again


async def test_no_tls_handshake_reply_times_out_naming_the_main_channel(tmp_path: Path) -> None:
    from trioqio.migration._certs import client_context

    client = client_context(make_credentials(tmp_path))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    held: list[trio.SocketStream] = []
    try:
        async with trio.open_nursery() as nursery:

            async def accept_and_stay_silent() -> None:
                held.append(await listeners[0].accept())

            nursery.start_soon(accept_and_stay_silent)
            options = SourceOptions(
                address=f"tcp:127.0.0.1:{port}",
                image=GeneratedImage(size=MIB, seed=1),
                uuid=UUID,
                tls=client,
                tls_hostname="localhost",
                timeout=0.5,
            )
            with trio.fail_after(10), pytest.raises(MigrationError) as raised:
                await run_source(options)
    finally:
        for stream in held:
            await stream.aclose()
        for listener in listeners:
            await listener.aclose()
    assert (raised.value.kind, raised.value.channel) == ("timeout", "main")
    assert "while waiting for the TLS handshake" in str(raised.value)


def _with_hosts(tmp_path: Path, hosts: str, *args: str) -> subprocess.Popen[str]:
    """``trioqio migrate ARGS`` in a mount namespace of its own whose /etc/hosts is HOSTS.

    The real resolver (getaddrinfo through nsswitch), not a stand-in: the namespace shares
    this machine's network, so the test's own sockets on ::1 and 127.0.0.1 meet the child's.
    """
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /etc/hosts")
    table = tmp_path / "hosts"
    table.write_text(hosts)
    command = [sys.executable, "-m", "trioqio", "migrate", "--no-progress", *args]
    script = f'mount --bind "{table}" /etc/hosts && exec "$@"'
    return subprocess.Popen(
        ["unshare", "--mount", "--", "sh", "-c", script, "sh", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_DUAL_HOSTS = "::1 dual.test\n127.0.0.1 dual.test\n"


def test_listen_name_with_two_addresses_resolved_for_real(tmp_path: Path) -> None:
    """A name /etc/hosts maps to ::1 and 127.0.0.1: both listen, on one port, and serve."""
    destination = _with_hosts(tmp_path, _DUAL_HOSTS, "--listen", "tcp:dual.test:0")
    try:
        assert destination.stderr is not None
        line = destination.stderr.readline()
        if "mount" in line or "unshare" in line:
            pytest.skip(f"no private mount namespace here: {line.strip()}")
        assert line.startswith("listening on "), line
        bound = line.split()[2:]
        port = bound[0].rsplit(":", 1)[1]
        assert sorted(bound) == [f"tcp:127.0.0.1:{port}", f"tcp:[::1]:{port}"], line
        source = _start("--connect", f"tcp:[::1]:{port}", "--size", "1MiB")
        out, err = source.communicate(timeout=30)
        dest_out, dest_err = destination.communicate(timeout=30)
    finally:
        _reaped(destination)
    assert source.returncode == 0, err
    assert destination.returncode == 0, dest_err
    assert "checksums match" in out
    assert "checksums match" in dest_out


def test_listen_name_refused_when_one_address_is_held_resolved_for_real(tmp_path: Path) -> None:
    """[::1]:P held by another socket: the destination names both addresses and exits 1."""
    with socket.socket(socket.AF_INET6) as held:
        try:
            held.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback on this machine")
        held.listen()
        port = held.getsockname()[1]
        destination = _with_hosts(tmp_path, _DUAL_HOSTS, "--listen", f"tcp:dual.test:{port}")
        out, err = destination.communicate(timeout=30)
    if "mount:" in err or "unshare:" in err:
        pytest.skip(f"no private mount namespace here: {err.strip()}")
    assert destination.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"trioqio migrate: --listen tcp:dual.test:{port}: resolves to 2 ")
    assert f"only tcp:127.0.0.1:{port} could listen" in last
    assert f"not tcp:[::1]:{port}" in last
    assert "listening on" not in err  # it never served
    assert "verdict: FAILED" in out
