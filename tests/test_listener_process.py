"""NetListener in a child process: descriptor exhaustion (RLIMIT_NOFILE) and systemd activation."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import trio
from _listener_helpers import connect

import trioqio

CHILD = r"""
import json, logging, os, resource, sys, time
import trio, trioqio

mode = sys.argv[1]
records = []


class Count(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())


logging.getLogger("trioqio.listener").addHandler(Count())
logging.getLogger("trioqio.listener").propagate = False

if mode == "systemd":
    # Put the passed sockets where systemd would: descriptors 3 and 4.
    import fcntl
    high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 100) for fd in sys.argv[2:4]]
    for fd in sys.argv[2:4]:
        os.close(int(fd))
    for target, fd in zip((3, 4), high):
        os.dup2(fd, target)
        os.close(fd)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDS"] = "2"


async def handler(channel):
    await channel.receive_some()
    await channel.send_all(b"ok")


async def main():
    async with trioqio.NetListener(name="child") as listener:
        if mode == "systemd":
            await listener.open_systemd()
        else:
            await listener.open("tcp:127.0.0.1:0", backlog=512)
        listener.set_client_func(handler)
        if mode == "rlimit":
            highest = max(int(name) for name in os.listdir("/proc/self/fd"))
            soft = highest + 12
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        print(json.dumps({"addresses": [str(a) for a in listener.addresses],
                          "env_left": [k for k in os.environ if k.startswith("LISTEN_")]}),
              flush=True)
        start = time.monotonic()
        # Answer each line on stdin with the counters so far; run until the parent closes it.
        while await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True):
            stats = listener.statistics()
            print(json.dumps({"accepted": stats.accepted, "accept_errors": stats.accept_errors}),
                  flush=True)
        stats = listener.statistics()
        print(json.dumps({"accepted": stats.accepted, "accept_errors": stats.accept_errors,
                          "records": records, "seconds": time.monotonic() - start}),
              flush=True)


trio.run(main)
"""


async def _start_child(
    tmp_path: Path, *args: str, pass_fds: tuple[int, ...] = ()
) -> tuple[trio.Process, trio.abc.ReceiveStream, dict[str, object]]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    process = await trio.lowlevel.open_process(
        [sys.executable, str(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=pass_fds,
    )
    assert process.stdout is not None
    first = await _read_line(process.stdout)
    return process, process.stdout, json.loads(first)


_buffers: dict[int, bytes] = {}


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes:
    buffer = _buffers.pop(id(stream), b"")
    while b"\n" not in buffer:
        chunk = await stream.receive_some()
        assert chunk, f"child exited early; got {buffer!r}"
        buffer += chunk
    line, _, rest = buffer.partition(b"\n")
    _buffers[id(stream)] = rest
    return line


async def child_statistics(process: trio.Process, stdout: trio.abc.ReceiveStream) -> dict[str, int]:
    """Ask a child started by :func:`_start_child` for its listener's counters so far."""
    assert process.stdin is not None
    await process.stdin.send_all(b"stats\n")
    stats: dict[str, int] = json.loads(await _read_line(stdout))
    return stats


async def wait_for_accept_errors(
    process: trio.Process, stdout: trio.abc.ReceiveStream, *, more_than: int = 0
) -> int:
    """Poll the child until it has backed off from more than ``more_than`` failed accepts."""
    with trio.fail_after(10):
        while (errors := (await child_statistics(process, stdout))["accept_errors"]) <= more_than:
            await trio.sleep(0.01)
    return errors


async def _finish(process: trio.Process, stdout: trio.abc.ReceiveStream) -> dict[str, object]:
    assert process.stdin is not None
    await process.stdin.aclose()
    report: dict[str, object] = json.loads(await _read_line(stdout))
    _buffers.pop(id(stdout), None)
    assert await process.wait() == 0
    await stdout.aclose()
    return report


async def test_exhausted_descriptors_back_off_log_bounded_and_recover(tmp_path: Path) -> None:
    process, stdout, hello = await _start_child(tmp_path, "rlimit")
    address = trioqio.parse_address(str(hello["addresses"][0]))  # type: ignore[index]  # JSON
    clients = 60
    streams: list[trio.SocketStream] = []
    try:
        # A burst: far more clients than the child has descriptors for.
        for _ in range(clients):
            streams.append(await connect(address))
        await wait_for_accept_errors(process, stdout)  # it ran out of descriptors
        for stream in streams:
            await stream.send_all(b"x")
            assert await stream.receive_some() == b"ok"
            await stream.aclose()
    finally:
        for stream in streams:
            await stream.aclose()
        report = await _finish(process, stdout)
    assert report["accepted"] == clients
    accept_errors = report["accept_errors"]
    assert isinstance(accept_errors, int)
    assert accept_errors > 0  # it really ran out
    records = report["records"]
    assert isinstance(records, list)
    seconds = report["seconds"]
    assert isinstance(seconds, float)
    assert records, "exhaustion must be logged"
    assert len(records) <= 2 + seconds / 5  # one record per 5 s at most
    assert "out of descriptors" in str(records[0])
    # Backoff, not a busy loop: retries are bounded by the pause schedule.
    assert accept_errors <= 10 + seconds * 100


async def test_systemd_socket_activation(tmp_path: Path) -> None:
    tcp = socket.create_server(("127.0.0.1", 0))
    unix_path = tmp_path / "activated.sock"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(unix_path))
    unix.listen()
    with tcp, unix:
        fds = (tcp.fileno(), unix.fileno())
        process, stdout, hello = await _start_child(
            tmp_path, "systemd", *map(str, fds), pass_fds=fds
        )
    try:
        assert hello["env_left"] == []
        addresses = [trioqio.parse_address(str(a)) for a in hello["addresses"]]  # type: ignore[attr-defined]  # JSON
        assert addresses[1] == trioqio.UnixAddress(str(unix_path))
        for address in addresses:
            stream = await connect(address)
            async with stream:
                await stream.send_all(b"x")
                assert await stream.receive_some() == b"ok"
    finally:
        report = await _finish(process, stdout)
    assert report["accepted"] == 2
    assert not os.path.exists(unix_path)  # the adopting listener cleaned up its path
