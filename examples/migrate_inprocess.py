"""Migrate a generated RAM image over 4 multifd channels, both ends in this process.

The destination listens on loopback (QEMU ``socket_start_incoming_migration``); the source
connects the main channel, then four multifd channels in parallel through
``trioqio.connect_task`` (QEMU ``multifd_send_setup``), and sends the pages; the
destination verifies them as they arrive and both ends compare checksums.
"""

from __future__ import annotations

import os
import uuid

import trio

from trioqio.migration._destination import DestinationOptions, run_destination
from trioqio.migration._image import GeneratedImage
from trioqio.migration._protocol import ResultStatus
from trioqio.migration._source import SourceOptions, run_source

SIZE = (8 if os.environ.get("TRIOQIO_EXAMPLE_QUICK") else 64) << 20


async def main() -> int:
    async with trio.open_nursery() as nursery:
        options = DestinationOptions(address="tcp:127.0.0.1:0", backlog=4)
        addresses = await nursery.start(run_destination, options)
        outcome = await run_source(
            SourceOptions(
                address=addresses[0],
                image=GeneratedImage(size=SIZE, seed=42),
                channels=4,
                uuid=uuid.uuid4().bytes,
            )
        )
    for share in outcome.shares:
        print(f"multifd {share.id}: {share.bytes >> 20} MiB in {share.packets} packets")
    print(
        f"{outcome.transferred >> 20} MiB in {outcome.seconds:.2f} s; verdict:",
        outcome.result.status.name,
    )
    return 0 if outcome.result.status is ResultStatus.MATCH else 1


if __name__ == "__main__":
    raise SystemExit(trio.run(main))
