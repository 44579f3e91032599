"""Real QEMU 7.2 multifd migrations through trioqio.testing.FaultProxy (issue 19).

Two QEMU processes (``-M pc -m 256M -nodefaults -S``, guest RAM filled with random bytes,
multifd with 4 channels, ``max-bandwidth`` raised) migrate through the proxy, one proxy
port for every channel: the proxy's connection 0 is the main channel, 1-4 the multifd
channels. Without a fault the destination's RAM (``pmemsave``) equals the blob. With a cut
or a reset of one multifd connection midway the proxy reports the fault and the test ends
within a bounded time, whatever QEMU does; what QEMU reported is written to
``qemu-fault.json`` in the test's temporary directory (and printed).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from trioqio.testing import Fault, FaultProxy

from ._peers import free_port
from ._qemu import BLOB_ADDR, BLOB_SIZE, make_blob, prepare, qemu
from ._qmp import QmpError
from .conftest import need

CHANNELS = 4


@pytest.fixture
def qemu_path() -> str:
    return need("qemu-system-x86_64", "qemu-system-x86")


async def test_qemu_migration_through_proxy(qemu_path: str, tmp_path: Path) -> None:
    """No fault: both ends report completed and the destination's RAM is the blob."""
    blob = make_blob(tmp_path / "blob.bin")
    with trio.fail_after(120):
        async with (
            qemu(qemu_path, tmp_path, "dst", incoming=True) as dst,
            qemu(qemu_path, tmp_path, "src", blob=tmp_path / "blob.bin") as src,
        ):
            await prepare(dst, channels=CHANNELS, source=False)
            await prepare(src, channels=CHANNELS, source=True)
            port = free_port()
            await dst.qmp.command("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
            async with FaultProxy(f"tcp:127.0.0.1:{port}") as proxy:
                await src.qmp.command("migrate", uri=proxy.address)
                assert await src.qmp.wait_migration("completed", "failed") == "completed"
                assert await dst.qmp.wait_migration("completed", "failed") == "completed"
            info = await src.qmp.command("query-migrate")
            assert proxy.accepted == 1 + CHANNELS
            assert proxy.fired == []
            # Real pages moved, not zero-page flags.
            assert info["ram"]["normal-bytes"] >= BLOB_SIZE * 0.99, info["ram"]
            out = tmp_path / "dst-ram.bin"
            await dst.qmp.command("pmemsave", val=BLOB_ADDR, size=BLOB_SIZE, filename=str(out))
            assert out.read_bytes() == blob
            for vm in (src, dst):
                await vm.qmp.command("quit")
                with trio.fail_after(10):
                    await vm.process.wait()


async def _status(vm: Any, seconds: float) -> str:
    """The end's migration status via query-migrate, or why there was none in time."""
    with trio.move_on_after(seconds):
        try:
            info = await vm.qmp.command("query-migrate")
        except (QmpError, EOFError, trio.BrokenResourceError) as exc:
            return f"QMP error: {exc}"
        return str(info.get("status")) + (
            f" ({info['error-desc']})" if "error-desc" in info else ""
        )
    return f"QMP silent for {seconds:g} s"


@pytest.mark.parametrize("how", ["cut", "reset"])
async def test_qemu_multifd_connection_lost_midway(
    qemu_path: str, tmp_path: Path, how: str
) -> None:
    """One multifd connection (the proxy's connection 2) cut or reset after 16 MiB.

    The proxy must report the fault; the source should fail; the destination may hang
    (QEMU 7.2). The test records both ends and kills them by pid: it never hangs itself.
    """
    make_blob(tmp_path / "blob.bin")
    limit = 16 * 1024 * 1024
    fault = (
        Fault(cut_after=limit, connections={2})
        if how == "cut"
        else Fault(reset_after=limit, connections={2})
    )
    record: dict[str, Any] = {"fault": f"{how} of multifd connection after {limit} bytes"}
    start = time.monotonic()
    with trio.fail_after(120):
        async with (
            qemu(qemu_path, tmp_path, "dst", incoming=True) as dst,
            qemu(qemu_path, tmp_path, "src", blob=tmp_path / "blob.bin") as src,
        ):
            await prepare(dst, channels=CHANNELS, source=False)
            await prepare(src, channels=CHANNELS, source=True)
            port = free_port()
            await dst.qmp.command("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
            async with FaultProxy(f"tcp:127.0.0.1:{port}", to_target=fault) as proxy:
                await src.qmp.command("migrate", uri=proxy.address)
                t0 = time.monotonic()
                with trio.move_on_after(30):
                    record["source"] = await src.qmp.wait_migration(
                        "completed", "failed", "cancelled"
                    )
                    record["source_seconds"] = round(time.monotonic() - t0, 2)
                record.setdefault("source", "no end event within 30 s")
                record["source_query"] = await _status(src, 5)
                with trio.move_on_after(5):
                    record["destination"] = await dst.qmp.wait_migration(
                        "completed", "failed", "cancelled"
                    )
                record.setdefault("destination", "no end event within 5 s (hung)")
                record["destination_query"] = await _status(dst, 2)
                fired = list(proxy.fired)
        # Leaving the block SIGKILLs both by pid (SIGTERM is ignored by a hung destination).
    record["proxy_fired"] = fired
    record["test_seconds"] = round(time.monotonic() - start, 2)
    record["src_stderr"] = (tmp_path / "src.stderr.txt").read_text()[-500:]
    record["dst_stderr"] = (tmp_path / "dst.stderr.txt").read_text()[-500:]
    (tmp_path / "qemu-fault.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))
    assert fired == [(2, "to_target", how)]
    # The source cannot complete a migration whose pages were lost.
    assert record["source"] != "completed", record
