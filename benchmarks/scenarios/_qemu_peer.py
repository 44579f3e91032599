"""Real QEMU 7.2 as the ``migrate-N`` peer: two processes, multifd, the same bytes (issue 19).

The source's guest RAM holds ``size`` random bytes (the generic loader writes a blob at
reset, so the migration thread sends real pages, not zero-page flags); the destination
waits with ``-incoming defer``, with ``-mem-prealloc`` for the main row (without it, on
this kind of VM the destination spends most of its CPU zeroing never-touched guest RAM) and
without it for the second. Both ends: ``multifd`` on, ``multifd-channels`` N; the source's
``max-bandwidth`` is raised from QEMU 7.2's default cap of 128 MiB/s. The rate is
``ram.transferred`` over the migration's own time (``total-time`` less ``setup-time``).

Both processes are killed by pid and reaped however the measure ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MIB = 1 << 20
QEMU_INSTALL = "apt-get update && apt-get install -y qemu-system-x86"
TIMEOUT = 120.0
_BLOBS: dict[int, Path] = {}
_SCRATCH = tempfile.TemporaryDirectory(prefix="trioqio-bench-qemu-")


def qemu_binary() -> str | None:
    """``qemu-system-x86_64`` or None."""
    return shutil.which("qemu-system-x86_64")


def _blob(size: int) -> Path:
    # One random blob per size for the whole run: generating 1 GiB costs seconds.
    if size not in _BLOBS:
        path = Path(_SCRATCH.name) / f"blob-{size}.bin"
        with path.open("wb") as out:
            for _ in range(0, size, 64 * MIB):
                out.write(os.urandom(min(64 * MIB, size - out.tell())))
        _BLOBS[size] = path
    return _BLOBS[size]


def qmp(path: Path) -> Callable[..., Any]:
    """A blocking QMP session on the monitor socket ``path``: ``command(name, **args)``."""
    sock = socket.socket(socket.AF_UNIX)
    deadline = time.monotonic() + 60
    while True:
        try:
            sock.connect(str(path))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    reader = sock.makefile("rb")

    def command(name: str, **args: Any) -> Any:
        sock.sendall(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        while True:
            line = reader.readline()
            if not line:
                raise RuntimeError(f"QMP {name}: QEMU closed the monitor")
            reply = json.loads(line)
            if "error" in reply:
                raise RuntimeError(f"QMP {name}: {reply['error']}")
            if "return" in reply:
                return reply["return"]

    json.loads(reader.readline())  # greeting
    command("qmp_capabilities")
    return command


def migrate_multifd(
    dst: Callable[..., Any], src: Callable[..., Any], port: int, channels: int, timeout: float
) -> dict[str, Any]:
    """Migrate ``src`` to ``dst`` (QMP sessions) over loopback ``port`` with multifd.

    Both ends get ``multifd`` and ``multifd-channels``; the source's ``max-bandwidth`` is
    raised from QEMU 7.2's 128 MiB/s default. Returns the source's last ``query-migrate``
    (status ``completed`` or ``failed``).

    Raises:
        RuntimeError: it did not end within ``timeout`` seconds.
    """
    caps = [{"capability": "multifd", "state": True}]
    for end in (dst, src):
        end("migrate-set-capabilities", capabilities=caps)
        end("migrate-set-parameters", **{"multifd-channels": channels})
    src("migrate-set-parameters", **{"max-bandwidth": 100_000_000_000})
    dst("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
    src("migrate", uri=f"tcp:127.0.0.1:{port}")
    deadline = time.monotonic() + timeout
    while (info := src("query-migrate"))["status"] not in ("completed", "failed"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"QEMU migration did not finish in {timeout:g} s")
        time.sleep(0.01)
    return dict(info)


@contextlib.contextmanager
def _qemu(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def qemu_rate(channels: int, size: int, *, prealloc: bool) -> float:
    """One QEMU 7.2 multifd migration of ``size`` random bytes; MiB/s.

    QEMU's own clock times it (``total-time`` less ``setup-time``). Once in a while 7.2
    reports the two equal (seen once in about 50 runs, with 2 channels and a preallocated
    destination), which leaves no time to divide by: that migration is run again, once.
    """
    for _ in range(2):
        rate = _qemu_migration(channels, size, prealloc=prealloc)
        if rate is not None:
            return rate
    raise RuntimeError("QEMU reported total-time equal to setup-time twice in a row")


def _qemu_migration(channels: int, size: int, *, prealloc: bool) -> float | None:
    binary = qemu_binary()
    if binary is None:
        raise RuntimeError(f"qemu-system-x86_64 is not installed ({QEMU_INSTALL})")
    blob = _blob(size)
    ram = size // MIB + 4
    work = Path(tempfile.mkdtemp(prefix="q-", dir=_SCRATCH.name))
    base = [binary, "-M", "pc", "-m", f"{ram}M", "-nodefaults", "-display", "none", "-S",
            "-accel", "tcg"]  # fmt: skip
    dst_argv = [*base, "-incoming", "defer", "-qmp", f"unix:{work / 'd'},server=on,wait=off"]
    if prealloc:
        dst_argv.append("-mem-prealloc")
    src_argv = [*base, "-device", f"loader,file={blob},addr=0x100000,force-raw=on",
                "-qmp", f"unix:{work / 's'},server=on,wait=off"]  # fmt: skip
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with _qemu(dst_argv), _qemu(src_argv):
        dst, src = qmp(work / "d"), qmp(work / "s")
        info = migrate_multifd(dst, src, port, channels, TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        if info["status"] != "completed":
            raise RuntimeError(f"QEMU migration failed: {info.get('error-desc')}")
        while dst("query-migrate").get("status") not in ("completed", "failed"):
            if time.monotonic() > deadline:
                raise RuntimeError("QEMU destination did not finish in time")
            time.sleep(0.01)
        normal = info["ram"]["normal-bytes"]
        if normal < size * 0.98:
            raise RuntimeError(f"QEMU sent {normal} bytes of pages, expected about {size}")
        for end in (src, dst):
            with contextlib.suppress(RuntimeError, OSError):
                end("quit")
    seconds = (info["total-time"] - info.get("setup-time", 0)) / 1000
    if seconds <= 0:
        return None
    return float(info["ram"]["transferred"]) / seconds / MIB


def qemu_missing() -> dict[str, str]:
    """Why the QEMU rows are missing, if they are."""
    if qemu_binary() is None:
        reason = f"qemu-system-x86_64 not installed; install it with `{QEMU_INSTALL}`"
        return {"QEMU 7.2 (dst -mem-prealloc)": reason, "QEMU 7.2": reason}
    return {}
