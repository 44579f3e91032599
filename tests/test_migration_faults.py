"""Regression tests: migrations through trioqio.testing.FaultProxy fail with MigrationError.

Found by tests/stress/test_faults.py: a reset on the main channel escaped run_destination as
a bare trio.BrokenResourceError, and a multifd reset racing the destination's ERROR message
escaped run_source as an exception group.
"""

from __future__ import annotations

import uuid as uuid_module
from typing import Any

import pytest
import trio

from trioqio import MigrationError
from trioqio.migration._destination import DestinationOptions, run_destination
from trioqio.migration._image import GeneratedImage
from trioqio.migration._source import SourceOptions, run_source
from trioqio.testing import Fault, FaultProxy

MIB = 1 << 20


async def _through(fault: Fault) -> tuple[Any, Any]:
    found: dict[str, Any] = {}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:

            async def destination(task_status: trio.TaskStatus[Any]) -> None:
                options = DestinationOptions(address="tcp:127.0.0.1:0", backlog=4)
                try:
                    found["destination"] = await run_destination(options, task_status=task_status)
                except MigrationError as exc:
                    found["destination"] = exc

            addresses = await nursery.start(destination)
            async with FaultProxy(addresses[0], to_target=fault) as proxy:
                options = SourceOptions(
                    address=proxy.address,
                    image=GeneratedImage(size=4 * MIB, seed=3),
                    channels=4,
                    uuid=uuid_module.uuid4().bytes,
                    packet_pages=16,
                )
                try:
                    found["source"] = await run_source(options)
                except MigrationError as exc:
                    found["source"] = exc
    return found["source"], found["destination"]


async def test_main_channel_reset_is_a_migration_error_on_both_ends() -> None:
    source, destination = await _through(Fault(reset_after=20, connections={0}))
    assert isinstance(source, MigrationError), source
    assert isinstance(destination, MigrationError), destination
    assert (destination.kind, destination.channel) == ("broken", "main")
    assert "incomplete migration: main channel (accepted #0) broke" in str(destination)


@pytest.mark.parametrize("attempt", range(5))
async def test_multifd_reset_is_one_migration_error(attempt: int) -> None:
    source, destination = await _through(Fault(reset_after=MIB // 2 + 99, connections={2}))
    assert type(source) is MigrationError, source
    assert isinstance(destination, MigrationError), destination


def test_cli_destination_reports_a_main_channel_reset() -> None:
    """``migrate --listen``: a source resetting its main channel is a report, not a traceback."""
    import socket
    import struct
    import subprocess
    import sys

    from trioqio.migration._protocol import pack_main_hello

    destination = subprocess.Popen(
        [sys.executable, "-m", "trioqio", "migrate", "--no-progress", "--listen",
         "tcp:127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert destination.stderr is not None
        line = destination.stderr.readline()
        assert line.startswith("listening on "), line
        host, port = line.split()[2].removeprefix("tcp:").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(pack_main_hello() + b"\x00\x01")  # mid-config
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        out, err = destination.communicate(timeout=30)
    finally:
        if destination.poll() is None:
            destination.kill()
            destination.communicate()
    assert destination.returncode == 1, err
    assert "Traceback" not in err, err
    assert "main channel (accepted #0) broke" in err + out, err + out
