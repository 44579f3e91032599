"""Every QIOTask operation in its trioqio form: results, errors, waiting, cancellation.

1. a worker's return value and a worker's exception reach the completion in the Trio
   thread (QEMU ``qio_task_get_result_pointer`` / ``qio_task_propagate_error``);
2. ``await task.wait()`` instead of a callback (QEMU ``qio_task_wait_thread``);
3. a task completed without a thread, the way QEMU's TLS and websocket handshakes
   complete theirs (``qio_task_set_error`` / ``qio_task_complete``);
4. cancellation: the completion still runs exactly once, with ``TaskCancelled``.

Run: ``python examples/task_lifecycle.py``
"""

from __future__ import annotations

import threading

import trio

import trioqio


def parse_port(text: str) -> int:
    """A blocking worker: its return value is the result, its exception the error."""
    return int(text)


def report(task: trioqio.Task[int]) -> None:
    """The completion: runs in the Trio thread, once, after the worker."""
    try:
        task.propagate_error()  # QEMU qio_task_propagate_error: raises the worker's error
    except ValueError as exc:
        print(f"{task.name}: failed with {exc!r}")
    else:
        print(f"{task.name}: result {task.result} (source {task.source!r})")


async def results_and_errors() -> None:
    async with trio.open_nursery() as nursery:  # the nursery owns both worker threads
        for text in ("5900", "vnc"):
            task = trioqio.Task(source=text, on_complete=report, name=f"parse {text!r}")
            task.run_in_thread(nursery, parse_port, text)


async def waiting() -> None:
    async with trio.open_nursery() as nursery:
        task: trioqio.Task[int] = trioqio.Task(name="wait")
        task.run_in_thread(nursery, parse_port, "4444")
        print("wait() returned", await task.wait())  # QEMU qio_task_wait_thread
    # The one-shot form needs no nursery of your own:
    print("run_in_thread() returned", await trioqio.run_in_thread(parse_port, "22"))


async def without_a_thread() -> None:
    # A handshake-like operation finishes in async code and completes its task itself.
    task: trioqio.Task[str] = trioqio.Task(on_complete=lambda t: print("completed:", t.error))
    await trio.sleep(0)  # ... protocol steps would run here ...
    task.set_error(ConnectionError("peer went away"))  # QEMU qio_task_set_error
    task.set_error(TimeoutError("later error"))  # ignored: the first error wins
    task.complete()  # QEMU qio_task_complete: runs on_complete now


async def cancellation() -> None:
    release = threading.Event()

    def stuck() -> str:
        release.wait(5)  # a blocking call that nothing can interrupt
        return "finished late"

    def completed(task: trioqio.Task[str]) -> None:
        error = task.error
        assert isinstance(error, trioqio.TaskCancelled)
        print(f"completion ran once with TaskCancelled(abandoned={error.abandoned})")

    with trio.move_on_after(0.05):
        async with trio.open_nursery() as nursery:
            task = trioqio.Task(on_complete=completed, name="stuck")
            task.run_in_thread(nursery, stuck, abandon_on_cancel=True)
    release.set()  # let the abandoned thread end by itself


async def main() -> None:
    await results_and_errors()
    await waiting()
    await without_a_thread()
    await cancellation()


if __name__ == "__main__":
    trio.run(main)
