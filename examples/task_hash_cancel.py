"""Hash a large file in a Task's thread, with progress, and stop it within one chunk of a timeout.

Nothing can interrupt a function running in a thread, but the function can ask:
``trio.from_thread.check_cancelled()`` raises :class:`trio.Cancelled` in the worker thread
once the Task's nursery is cancelled. A hash that asks before each chunk therefore stops
within one chunk of the cancellation; with ``abandon_on_cancel=False`` (the default) the
Task waits for it, and the completion sees ``trioqio.TaskCancelled`` with nothing left
running. The same worker reports progress through its ``report`` keyword.

Run: ``python examples/task_hash_cancel.py`` (``TRIOQIO_EXAMPLE_QUICK=1`` for a small file).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable

import trio

import trioqio

QUICK = bool(os.environ.get("TRIOQIO_EXAMPLE_QUICK"))
CHUNK = 1 << 20  # 1 MiB: how far the worker may run past a cancellation
SIZE = (32 if QUICK else 512) * CHUNK


def hash_file(path: str, hashed: list[int], *, report: Callable[[int], None]) -> str:
    """Worker thread: SHA-256 of ``path``, a chunk at a time, asking to stop before each."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            trio.from_thread.check_cancelled()  # raises trio.Cancelled once cancelled
            digest.update(chunk)
            hashed[0] += len(chunk)  # read by the Trio thread (one int: atomic)
            report(hashed[0])
    return digest.hexdigest()


def show_progress() -> Callable[[int], None]:
    """An ``on_progress`` that prints each quarter of the file once (in the Trio thread)."""
    printed = [0]

    def on_progress(done_bytes: int) -> None:
        quarter = done_bytes * 4 // SIZE
        if quarter > printed[0]:
            printed[0] = quarter
            print(f"  {quarter * 25:3d}% ({done_bytes // CHUNK} MiB)")

    return on_progress


def on_complete(task: trioqio.Task[str]) -> None:
    if isinstance(task.error, trioqio.TaskCancelled):
        print(f"  {task.name}: cancelled (thread abandoned: {task.error.abandoned})")
    else:
        print(f"  {task.name}: sha256 {task.result[:16]}...")


async def hash_with_timeout(path: str, timeout: float | None) -> tuple[int, int]:
    """Hash ``path``; cancel after ``timeout`` s. Returns (bytes at the cancel, at the end)."""
    hashed = [0]
    at_cancel = -1
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            name = "full hash" if timeout is None else f"hash, {timeout * 1000:.0f} ms timeout"
            task = trioqio.Task(on_complete=on_complete, name=name, on_progress=show_progress())
            task.run_in_thread(nursery, hash_file, path, hashed)
            if timeout is not None:
                await trio.sleep(timeout)
                at_cancel = hashed[0]
                scope.cancel()
    return at_cancel, hashed[0]


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="trioqio-hash-") as directory:
        path = os.path.join(directory, "large.bin")
        with open(path, "wb") as file:
            block = os.urandom(CHUNK)
            for _ in range(SIZE // CHUNK):
                file.write(block)
        print(f"hashing {SIZE // CHUNK} MiB in 1 MiB chunks")
        start = time.perf_counter()
        await hash_with_timeout(path, None)
        elapsed = time.perf_counter() - start
        # Again, cancelled a quarter of the way through.
        at_cancel, stopped_at = await hash_with_timeout(path, elapsed / 4)
        if stopped_at == SIZE:
            print("  (this machine finished before the timeout)")
            return
        print(
            f"cancelled at {at_cancel // CHUNK} MiB, the worker stopped at "
            f"{stopped_at // CHUNK} MiB: within one chunk"
        )
        assert stopped_at - at_cancel <= CHUNK, (at_cancel, stopped_at)


if __name__ == "__main__":
    trio.run(main)
