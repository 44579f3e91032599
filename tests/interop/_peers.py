"""Helpers for driving peer programs from Trio tests: processes, ports, output."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import trio


def free_port() -> int:
    """A loopback port free a moment ago (for peers that cannot listen on port 0 and say so)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def peer_process(
    argv: Sequence[str], *, stderr: Path, stdin: bool = True, stdout: bool = True, **kwargs: Any
) -> AsyncIterator[trio.Process]:
    """Start ``argv`` with pipes; on exit close the pipes and SIGKILL it if it still runs."""
    with stderr.open("wb") as err:
        proc = await trio.lowlevel.open_process(
            list(argv),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=err,
            **kwargs,  # env, cwd: passed through
        )
    try:
        yield proc
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    await pipe.aclose()


async def read_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    """Read ``n`` bytes from a process pipe (fewer only at end of file)."""
    out = bytearray()
    while len(out) < n:
        chunk = await stream.receive_some(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """Read a process pipe to its end."""
    out = bytearray()
    while chunk := await stream.receive_some():
        out += chunk
    return bytes(out)


async def connect_retry(address: str, *, seconds: float = 10.0) -> object:
    """``trioqio.connect`` until a peer that was just started listens."""
    import trioqio

    with trio.fail_after(seconds):
        while True:
            try:
                return await trioqio.connect(address)
            except OSError:
                await trio.sleep(0.05)
