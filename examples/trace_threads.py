"""Watch where a Task's steps run: trace events carry the thread id (tutorial step 3).

The events are named after QEMU's ``io/trace-events``. ``qio_task_thread_run`` and
``qio_task_thread_exit`` happen in the worker thread; the others in the Trio thread.

Run: ``python examples/trace_threads.py``
"""

from __future__ import annotations

import threading

import trio

import trioqio

TRIO_THREAD = threading.get_ident()  # trio.run runs in the thread that imports us


def show(event: trioqio.trace.TraceEvent) -> None:
    where = "Trio thread" if event.thread_id == TRIO_THREAD else "worker thread"
    print(f"{event.name:24} thread {event.thread_id} ({where})")


async def main() -> None:
    with trioqio.trace.subscribed(show):
        total = await trioqio.run_in_thread(sum, [1, 2, 3])
    print("result:", total)


if __name__ == "__main__":
    trio.run(main)
