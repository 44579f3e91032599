"""Migrations end to end: in one process and in two, plain and TLS, TCP and UNIX, and failures."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid as uuid_module
from pathlib import Path

import pytest
import trio

import trioqio
from trioqio import MigrationError
from trioqio.migration._certs import make_credentials
from trioqio.migration._destination import DestinationOptions, run_destination
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
from trioqio.migration._source import SourceOptions, run_source

MIB = 1 << 20
UUID = uuid_module.uuid4().bytes


async def _in_process(address: str, channels: int, size: int = 2 * MIB, **source: object):
    async with trio.open_nursery() as nursery:
        options = DestinationOptions(address=address, backlog=channels)
        result: dict[str, object] = {}

        async def destination(task_status: trio.TaskStatus[object]) -> None:
            result["destination"] = await run_destination(options, task_status=task_status)

        addresses = await nursery.start(destination)
        image = GeneratedImage(size=size, seed=5)
        outcome = await run_source(
            SourceOptions(
                address=addresses[0],  # type: ignore[index]
                image=image,
                channels=channels,
                uuid=UUID,
                packet_pages=16,
                **source,  # type: ignore[arg-type]
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
    assert destination.checksum == source.checksum  # type: ignore[attr-defined]


async def test_in_process_unix(tmp_path: Path) -> None:
    source, _ = await _in_process(f"unix:{tmp_path}/m.sock", 4, size=MIB + 123)
    assert source.result.status is ResultStatus.MATCH
    assert source.transferred == MIB + 123


async def test_corrupted_page_is_detected() -> None:
    source, destination = await _in_process("tcp:127.0.0.1:0", 4, corrupt_page=77)
    assert source.result.status is ResultStatus.MISMATCH
    assert destination.status is ResultStatus.MISMATCH  # type: ignore[attr-defined]
    assert source.result.checksum != source.checksum


@pytest.mark.parametrize("algorithm", list(Checksum))
async def test_every_checksum_matches_and_detects_corruption(algorithm: Checksum) -> None:
    good, destination = await _in_process("tcp:127.0.0.1:0", 2, checksum=algorithm)
    assert good.result.status is ResultStatus.MATCH
    assert destination.config.checksum is algorithm  # type: ignore[attr-defined]
    bad, _ = await _in_process("tcp:127.0.0.1:0", 2, checksum=algorithm, corrupt_page=300)
    assert bad.result.status is ResultStatus.MISMATCH
    assert good.checksum == bad.checksum  # the source hashed what it meant to send


async def test_destination_rejects_another_checksum() -> None:
    async with trio.open_nursery() as nursery:
        options = DestinationOptions(address="tcp:127.0.0.1:0", checksum=Checksum.SHA256)
        errors: list[BaseException] = []

        async def destination(task_status: trio.TaskStatus[object]) -> None:
            try:
                await run_destination(options, task_status=task_status)
            except MigrationError as exc:
                errors.append(exc)

        addresses = await nursery.start(destination)
        source = SourceOptions(
            address=addresses[0],  # type: ignore[index]
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

            async def destination(task_status: trio.TaskStatus[object]) -> None:
                try:
                    await run_destination(options, task_status=task_status)
                except MigrationError as exc:
                    errors.append(exc)

            addresses = await nursery.start(destination)
            main = await trioqio.connect(addresses[0])  # type: ignore[index]
            channels = []
            try:
                await main.send_all(pack_main_hello() + encode_message(config))
                for init in inits:
                    channel = await trioqio.connect(addresses[0])  # type: ignore[index]
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


def _raw_init(magic: int = 0x11223344, version: int = 1, uuid: bytes = UUID, id: int = 0):
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

            async def destination(task_status: trio.TaskStatus[object]) -> None:
                try:
                    await run_destination(options, task_status=task_status)
                except MigrationError as exc:
                    errors.append(exc)

            addresses = await nursery.start(destination)
            main = await trioqio.connect(addresses[0])  # type: ignore[index]
            try:
                await main.send_all(pack_main_hello() + encode_message(config))
                multifd = await trioqio.connect(addresses[0])  # type: ignore[index]
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


def _mid_transfer(hold: str) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    holder = ["--test-hold-after-pages", "64"]
    destination, bound = _listen("--listen", "tcp:127.0.0.1:0", *(holder if hold == "d" else []))
    source = _start("--connect", bound, "--size", "64MiB", *(holder if hold == "s" else []))
    held = destination if hold == "d" else source
    assert held.stderr is not None
    for line in held.stderr:
        if "test hook: holding" in line:
            break
    return destination, source


def test_destination_killed_mid_transfer() -> None:
    destination, source = _mid_transfer("d")
    destination.send_signal(signal.SIGKILL)
    destination.communicate(timeout=10)
    _, err = source.communicate(timeout=10)  # within seconds, no hang
    assert source.returncode == 1
    assert "destination went away" in err or "destination closed" in err, err


def test_source_killed_mid_transfer() -> None:
    destination, source = _mid_transfer("s")
    source.send_signal(signal.SIGKILL)
    source.communicate(timeout=10)
    out, err = destination.communicate(timeout=10)
    assert destination.returncode == 1
    assert "incomplete migration" in err, err
    assert "INCOMPLETE" in out


def test_two_process_corruption_exits_nonzero() -> None:
    destination, bound = _listen("--listen", "tcp:127.0.0.1:0")
    source = _start("--connect", bound, "--size", "1MiB", "--test-corrupt-page", "3", "--json")
    out, _ = source.communicate(timeout=30)
    destination.communicate(timeout=30)
    assert source.returncode == 1
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
