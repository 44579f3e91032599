"""The seed note's experiment: four workers in four threads, completions in one thread.

QEMU's live migration starts four multifd streams with ``qio_task_run_in_thread``; the
note printed the thread id in each worker and in each completion callback and saw four
different worker threads but a single completion thread, the main-loop thread. Here the
"main loop" is Trio's run loop: every completion prints the Trio thread's id.

Run it: ``python examples/task_threads.py``
"""

from __future__ import annotations

import threading
import time

import trio

import trioqio


def connect_stream(stream: int, barrier: threading.Barrier) -> str:
    """Stand-in for the blocking connect a migration stream does in its worker."""
    print(f"Worker   of stream {stream} running in the thread id = {threading.get_ident()}")
    barrier.wait()  # all four are in their own thread at the same time
    time.sleep(0.01 * stream)
    return f"stream {stream} connected"


def on_complete(task: trioqio.Task[str]) -> None:
    print(f"Callback of {task.name} running in the thread id = {threading.get_ident()}")


async def main() -> None:
    print(f"Trio run loop thread id = {threading.get_ident()}")
    barrier = threading.Barrier(4)
    tasks: list[trioqio.Task[str]] = []
    async with trio.open_nursery() as nursery:
        for stream in range(4):
            task: trioqio.Task[str] = trioqio.Task(on_complete=on_complete, name=f"stream {stream}")
            task.run_in_thread(nursery, connect_stream, stream, barrier)
            tasks.append(task)
    results = [task.result for task in tasks]
    print("results:", results)


if __name__ == "__main__":
    trio.run(main)
