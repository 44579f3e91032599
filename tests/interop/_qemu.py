"""Real QEMU 7.2 processes for the migration cases (../shared notes: qemu-real.md).

A source holds random bytes in guest RAM (the generic loader writes the blob at reset, so
the migration thread sends real pages, not zero-page flags); the destination waits with
``-incoming defer``. Both are driven over QMP and killed by pid at the end, never left
running (QEMU 7.2's destination can hang in ``multifd_recv_sync_main`` after a lost
multifd connection and then ignore SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import attrs
import trio

from ._peers import peer_process
from ._qmp import Qmp

BLOB_ADDR = 0x100000
RAM_MIB = 256
#: The blob ends about 2 MiB short of the RAM (the loader must fit below its end).
BLOB_SIZE = (RAM_MIB - 4) * 1024 * 1024


def make_blob(path: Path, size: int = BLOB_SIZE) -> bytes:
    """Write ``size`` random bytes to ``path`` and return them."""
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@attrs.define(eq=False)
class Qemu:
    """One running QEMU with its QMP session."""

    name: str
    process: trio.Process
    qmp: Qmp
    stderr: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.asynccontextmanager
async def qemu(
    binary: str,
    workdir: Path,
    name: str,
    *,
    blob: Path | None = None,
    incoming: bool = False,
    prealloc: bool = False,
    extra: Sequence[str] = (),
) -> AsyncIterator[Qemu]:
    """Start a paused ``-M pc`` QEMU with ``RAM_MIB`` of RAM; SIGKILL it by pid on exit."""
    monitor = workdir / f"{name}.qmp"
    argv = [
        binary, "-M", "pc", "-m", f"{RAM_MIB}M", "-nodefaults", "-display", "none", "-S",
        "-accel", "tcg", "-name", f"{name},debug-threads=on",
        "-qmp", f"unix:{monitor},server=on,wait=off",
    ]  # fmt: skip
    if blob is not None:
        argv += ["-device", f"loader,file={blob},addr={BLOB_ADDR:#x},force-raw=on"]
    if incoming:
        argv += ["-incoming", "defer"]
    if prealloc:
        argv += ["-mem-prealloc"]
    argv += list(extra)
    stderr = workdir / f"{name}.stderr.txt"
    async with peer_process(argv, stderr=stderr, stdin=False, stdout=False) as proc:
        qmp = await Qmp.connect(str(monitor))
        try:
            yield Qemu(name=name, process=proc, qmp=qmp, stderr=stderr)
        finally:
            await qmp.aclose()


async def prepare(vm: Qemu, *, channels: int, source: bool) -> None:
    """Turn on events and multifd (both ends) and lift the 128 MiB/s default cap (source)."""
    await vm.qmp.command(
        "migrate-set-capabilities",
        capabilities=[
            {"capability": "events", "state": True},
            {"capability": "multifd", "state": True},
        ],
    )
    await vm.qmp.command("migrate-set-parameters", **{"multifd-channels": channels})
    if source:
        await vm.qmp.command("migrate-set-parameters", **{"max-bandwidth": 100_000_000_000})
