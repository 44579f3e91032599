"""Helpers shared by the TLS and websocket channels (QEMU ``io/channel-tls.c``, ``-websock.c``).

QEMU runs both handshakes as QIOTasks stepped by main-loop watches; here a handshake is an
``async def`` and :func:`start_handshake_task` gives it QEMU's Task shape: run it in a
nursery and complete the Task exactly once, in the Trio thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._errors import TaskCancelled
from ._task import Task

__all__ = ["start_handshake_task"]


def start_handshake_task(
    source: object,
    name: str,
    handshake: Callable[[], Awaitable[None]],
    nursery: trio.Nursery,
    on_complete: Callable[[Task[Any]], Any] | None,
) -> Task[Any]:
    """Run ``handshake`` in ``nursery`` and complete a Task once, in the Trio thread."""
    task: Task[Any] = Task(source=source, on_complete=on_complete, name=name)

    async def run() -> None:
        try:
            await handshake()
        except trio.Cancelled:
            task.set_error(TaskCancelled(f"{name} cancelled"))
            with trio.CancelScope(shield=True):
                await task.acomplete()
            raise
        except Exception as exc:
            task.set_error(exc)
        else:
            task.set_result(source)
        await task.acomplete()

    nursery.start_soon(run, name=f"trioqio {name}")
    return task
