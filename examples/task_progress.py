"""Progress from a worker thread: hash a file-sized buffer and watch it advance.

The worker calls ``report(fraction)`` as often as it likes; ``report`` never blocks, and
the Trio side sees the newest value (intermediate ones are coalesced when it is slower).

Run it: ``python examples/task_progress.py``
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import trio

import trioqio

SIZE = 8 << 20 if os.environ.get("TRIOQIO_EXAMPLE_QUICK") else 256 << 20
CHUNK = 1 << 20


def hash_buffer(data: bytes, *, report: Callable[[float], None]) -> str:
    digest = hashlib.blake2b()
    view = memoryview(data)
    for offset in range(0, len(view), CHUNK):
        digest.update(view[offset : offset + CHUNK])
        report((offset + CHUNK) / len(view))
    return digest.hexdigest()


async def main() -> None:
    data = os.urandom(SIZE)
    seen: list[float] = []

    def on_progress(fraction: float) -> None:
        seen.append(fraction)
        print(f"\rhashed {min(fraction, 1.0):6.1%}", end="", flush=True)

    digest = await trioqio.run_in_thread(hash_buffer, data, on_progress=on_progress)
    print(f"\nblake2b {digest[:16]}... after {len(seen)} progress updates")
    assert seen[-1] >= 1.0, "the last value reported is always delivered"


if __name__ == "__main__":
    trio.run(main)
