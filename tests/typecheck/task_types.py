"""What the type checkers must say about the Task API (checked by mypy and pyright only).

Each ``# type: ignore[code]`` line must be an error: mypy --strict warns about an unused
ignore, and pyright (``reportUnnecessaryTypeIgnoreComment`` below) does too. The
``assert_type`` lines pin what is inferred.
"""

# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

from collections.abc import Callable

import trio
from typing_extensions import assert_type

import trioqio


def on_int(task: trioqio.Task[int]) -> None:
    print(task.result)


def count(path: str, *, report: Callable[[int], None]) -> int:
    report(len(path))
    return len(path)


def show(value: int) -> None:
    print(value)


async def typed(nursery: trio.Nursery) -> None:
    # on_complete binds the result type: no annotation needed.
    task = trioqio.Task(on_complete=on_int)
    assert_type(task, trioqio.Task[int])
    assert_type(await task.wait(), int)
    task.run_in_thread(nursery, sum, [1, 2, 3])
    task.run_in_thread(nursery, len, "abc")
    task.run_in_thread(nursery, sum, "not a list")  # type: ignore[arg-type]
    task.run_in_thread(nursery, str, 1)  # type: ignore[arg-type]

    # A worker taking ``report`` (the overload for progress).
    progress = trioqio.Task(on_complete=on_int, on_progress=show)
    progress.run_in_thread(nursery, count, "path")
    progress.run_in_thread(nursery, count, 3)  # type: ignore[arg-type]

    # The one-shot: the result type is the worker's; report needs on_progress.
    assert_type(await trioqio.run_in_thread(sum, [1, 2]), int)
    assert_type(await trioqio.run_in_thread(count, "p", on_progress=show), int)
    await trioqio.run_in_thread(sum, "not a list")  # type: ignore[arg-type]
    await trioqio.run_in_thread(count, "p")  # type: ignore[arg-type]
    # (With on_progress the one-shot's worker arguments are not checked: see _task.py.)

    # Async work.
    async def fetch(n: int) -> bytes:
        return b"x" * n

    header: trioqio.Task[bytes] = trioqio.Task()
    header.start_soon(nursery, fetch, 4)
    header.start_soon(nursery, fetch, "4")  # type: ignore[arg-type]

    # The *_task operations bind their result types too.
    connected = trioqio.connect_task(nursery, "tcp:localhost:1")
    assert_type(connected, trioqio.Task[trioqio.SocketChannel])
    trioqio.connect_task(nursery, "tcp:localhost:1", on_int)  # type: ignore[arg-type]
    resolved = trioqio.resolve_task(nursery, "localhost:0")
    assert_type(await resolved.wait(), list[trioqio.SocketAddress])

    # The callback aliases are importable and generic.
    callback: trioqio.CompletionCallback[int] = on_int
    progress_callback: trioqio.ProgressCallback = show
    print(callback, progress_callback)
