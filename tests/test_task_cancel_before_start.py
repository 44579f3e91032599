"""Regression from tests/stress/test_cancellation.py: a Task cancelled before its worker ran."""

from __future__ import annotations

import pytest
import trio

import trioqio
from trioqio import TaskCancelled


@pytest.mark.parametrize("abandon", [False, True])
async def test_cancelled_before_the_worker_starts(abandon: bool) -> None:
    ran: list[int] = []
    errors: list[BaseException | None] = []
    task: trioqio.Task[None] = trioqio.Task(on_complete=lambda t: errors.append(t.error))
    async with trio.open_nursery() as nursery:
        task.run_in_thread(nursery, ran.append, 1, abandon_on_cancel=abandon)
        nursery.cancel_scope.cancel()  # before the child task ever runs
    assert ran == []  # the worker never ran
    [error] = errors
    assert isinstance(error, TaskCancelled)
    # "abandoned" means a thread may still be running; without abandon_on_cancel none can.
    assert error.abandoned is abandon
