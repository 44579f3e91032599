"""Tests for trioqio.Task (QEMU tests/unit/test-io-task.c, ported, plus Trio's rules)."""

from __future__ import annotations

import functools
import gc
import inspect
import logging
import threading
import weakref
from typing import Any

import pytest
import trio
import trio.testing

import trioqio
from trioqio import Task, TaskCancelled, TaskError


class Dummy:
    """QEMU's "qemu-dummy" object: a source the task refers to."""


class Record:
    """What a completion callback saw (QEMU's ``struct TestTaskData``)."""

    def __init__(self) -> None:
        self.source: object = None
        self.error: BaseException | None = None
        self.calls = 0
        self.thread: int | None = None
        self.result: object = None

    def callback(self, task: Task[Any]) -> None:
        self.calls += 1
        self.source = task.source
        self.thread = threading.get_ident()
        try:
            task.propagate_error()
        except BaseException as exc:
            self.error = exc
        else:
            try:
                self.result = task.result
            except TaskError:
                self.result = None


# -- QEMU's test-io-task.c ---------------------------------------------------------------


def test_complete() -> None:
    """/crypto/task/complete: the callback sees the source and no error."""
    obj = Dummy()
    record = Record()
    task: Task[None] = Task(obj, record.callback)
    assert task.source is obj
    assert not task.done
    task.complete()
    assert task.done
    assert record.calls == 1
    assert record.source is obj
    assert record.error is None


def test_datafree() -> None:
    """/crypto/task/datafree: after completion the task lets go of the callback's data.

    QEMU runs the destroy notify after the callback; in Python the equivalent is that the
    task drops its reference to the callback (and so to its closure) once completed.
    """

    class Opaque:
        pass

    opaque = Opaque()
    freed = weakref.ref(opaque)
    seen: list[object] = []

    def make_callback(data: Opaque) -> Any:
        def callback(task: Task[Any]) -> None:
            seen.append(data)

        return callback

    task: Task[None] = Task(Dummy(), make_callback(opaque))
    del opaque
    gc.collect()
    assert freed() is not None  # the task holds the callback, hence the data
    task.complete()
    seen.clear()
    gc.collect()
    assert freed() is None  # ... and released it after completing


def test_failure() -> None:
    """/crypto/task/failure: the callback receives the very error object that was set."""
    obj = Dummy()
    record = Record()
    task: Task[None] = Task(obj, record.callback)
    error = OSError("Some error")
    task.set_error(error)
    task.complete()
    assert record.error is error
    assert record.source is obj


async def test_thread_complete() -> None:
    """/crypto/task/thread_complete: worker in another thread, completion in Trio's."""
    obj = Dummy()
    record = Record()
    worker_thread: list[int] = []

    def worker() -> str:
        worker_thread.append(threading.get_ident())
        return "done"

    async with trio.open_nursery() as nursery:
        task: Task[str] = Task(obj, record.callback)
        task.run_in_thread(nursery, worker)
    assert record.calls == 1
    assert record.source is obj
    assert record.error is None
    assert record.result == "done"
    assert worker_thread[0] != threading.get_ident()
    assert record.thread == threading.get_ident()


async def test_thread_failure() -> None:
    """/crypto/task/thread_failure: a worker's error reaches the completion in Trio's thread."""
    record = Record()
    worker_thread: list[int] = []

    def worker() -> None:
        worker_thread.append(threading.get_ident())
        raise OSError("Testing fail")

    async with trio.open_nursery() as nursery:
        Task(Dummy(), record.callback).run_in_thread(nursery, worker)
    assert isinstance(record.error, OSError)
    assert str(record.error) == "Testing fail"
    assert worker_thread[0] != threading.get_ident()
    assert record.thread == threading.get_ident()


# -- result and error rules --------------------------------------------------------------


def test_set_error_first_wins_and_propagate_clears() -> None:
    task: Task[None] = Task()
    first, second = ValueError("first"), ValueError("second")
    task.set_error(first)
    task.set_error(second)
    task.set_error(None)
    assert task.error is first
    with pytest.raises(ValueError, match="first") as info:
        task.propagate_error()
    assert info.value is first
    assert task.error is None
    task.propagate_error()  # second call: nothing to raise


def test_set_error_rejects_non_exceptions() -> None:
    with pytest.raises(TypeError, match="needs an exception"):
        Task().set_error("oops")  # type: ignore[arg-type]


def test_result_without_value_is_a_task_error() -> None:
    task: Task[int] = Task(name="nothing")
    with pytest.raises(TaskError, match="'nothing' has no result: it has not finished"):
        _ = task.result
    task.set_error(OSError())
    with pytest.raises(TaskError, match="it failed"):
        _ = task.result
    task.set_result(5)
    assert task.result == 5


def test_complete_twice_is_an_error() -> None:
    record = Record()
    task: Task[None] = Task(None, record.callback)
    task.complete()
    with pytest.raises(RuntimeError, match="already completed"):
        task.complete()
    assert record.calls == 1


async def test_async_completion_needs_acomplete() -> None:
    calls: list[Task[Any]] = []

    async def on_complete(task: Task[Any]) -> None:
        await trio.lowlevel.checkpoint()
        calls.append(task)

    task: Task[int] = Task(on_complete=on_complete)
    with pytest.raises(TypeError, match="acomplete"):
        task.complete()
    assert not task.done
    task.set_result(3)
    await task.acomplete()
    assert calls == [task]
    assert await task.wait() == 3
    with pytest.raises(RuntimeError, match="already completed"):
        await task.acomplete()


async def test_async_on_complete_in_thread_task() -> None:
    seen: list[int] = []

    async def on_complete(task: Task[int]) -> None:
        await trio.sleep(0)
        seen.append(task.result)

    async with trio.open_nursery() as nursery:
        task: Task[int] = Task(on_complete=on_complete)
        task.run_in_thread(nursery, int, "7")
        assert await task.wait() == 7
        assert seen == [7]  # wait() returns only after the completion ran


def test_name_repr_and_properties() -> None:
    task: Task[None] = Task(name="resolve")
    assert task.name == "resolve"
    assert "resolve" in repr(task)
    assert "new" in repr(task)
    assert Task().name is None


# -- waiting -----------------------------------------------------------------------------


async def test_wait_from_several_tasks() -> None:
    gate = threading.Event()
    results: list[int] = []

    async def waiter(task: Task[int]) -> None:
        results.append(await task.wait())

    async with trio.open_nursery() as nursery:
        task: Task[int] = Task()
        task.run_in_thread(nursery, lambda: gate.wait() and 42)
        for _ in range(5):
            nursery.start_soon(waiter, task)
        await trio.testing.wait_all_tasks_blocked()
        assert results == []
        gate.set()
    assert results == [42] * 5
    assert await task.wait() == 42  # already done: returns at once


async def test_wait_raises_first_error_even_after_propagate() -> None:
    error = KeyError("k")
    consumed: list[BaseException] = []

    def on_complete(task: Task[None]) -> None:
        try:
            task.propagate_error()
        except KeyError as exc:
            consumed.append(exc)

    def worker() -> None:
        raise error

    async with trio.open_nursery() as nursery:
        task: Task[None] = Task(on_complete=on_complete)
        task.run_in_thread(nursery, worker)
    assert consumed == [error]
    with pytest.raises(KeyError) as info:
        await task.wait()
    assert info.value is error


async def test_worker_raising_base_exception_is_the_error() -> None:
    class Stop(BaseException):
        pass

    def worker() -> None:
        raise Stop("halt")

    record = Record()
    async with trio.open_nursery() as nursery:  # the nursery does not see it
        task: Task[None] = Task(on_complete=record.callback)
        task.run_in_thread(nursery, worker)
    assert isinstance(record.error, Stop)
    with pytest.raises(Stop):
        await task.wait()


async def test_limiter_bounds_concurrent_workers() -> None:
    limiter = trio.CapacityLimiter(4)
    lock = threading.Lock()
    running = 0
    peak = 0
    completions = 0

    def worker(index: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            threading.Event().wait(0.0005)
            return index
        finally:
            with lock:
                running -= 1

    def on_complete(task: Task[int]) -> None:
        nonlocal completions
        completions += 1

    tasks: list[Task[int]] = []
    async with trio.open_nursery() as nursery:
        for index in range(1000):
            task: Task[int] = Task(on_complete=on_complete)
            task.run_in_thread(nursery, worker, index, limiter=limiter)
            tasks.append(task)
    assert completions == 1000
    assert peak <= 4
    assert peak >= 2  # the limiter, not luck, is what bounded it
    assert [task.result for task in tasks] == list(range(1000))


class _StepCounter(trio.abc.Instrument):
    """Counts the scheduler steps of Trio tasks with a given name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == self.name:
            self.steps += 1


@pytest.mark.parametrize("shared", [False, True])
async def test_free_limiter_token_starts_the_thread_in_the_first_step(shared: bool) -> None:
    # The child starts the thread in its first step and finishes in its second: taking a
    # free token costs no scheduler pass of its own (CapacityLimiter's checkpoint would).
    counter = _StepCounter("counted")
    trio.lowlevel.add_instrument(counter)
    try:
        async with trio.open_nursery() as nursery:
            task: Task[int] = Task(name="counted")
            limiter = trio.CapacityLimiter(1) if shared else None
            task.run_in_thread(nursery, abs, -3, limiter=limiter)
            assert await task.wait() == 3
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert counter.steps == 2


async def test_full_limiter_queues_fairly_and_cancels_cleanly() -> None:
    limiter = trio.CapacityLimiter(1)
    release = threading.Event()
    order: list[int] = []
    records = [Record() for _ in range(3)]
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            first: Task[bool] = Task(on_complete=records[0].callback)
            first.run_in_thread(nursery, release.wait, limiter=limiter)
            await trio.testing.wait_all_tasks_blocked()
            for index in (1, 2):
                task: Task[None] = Task(on_complete=records[index].callback)
                task.run_in_thread(nursery, order.append, index, limiter=limiter)
                await trio.testing.wait_all_tasks_blocked()
            assert limiter.statistics().tasks_waiting == 2
            release.set()
            await first.wait()
            while len(order) < 2:
                await trio.sleep(0.001)
            scope.cancel()
    assert order == [1, 2]  # first come, first served, as Trio's limiter does
    assert [record.calls for record in records] == [1, 1, 1]
    assert limiter.borrowed_tokens == 0
    # Cancelled while queued: completes with TaskCancelled, the token never taken.
    async with trio.open_nursery() as nursery:
        blocker: Task[bool] = Task()
        gate = threading.Event()
        blocker.run_in_thread(nursery, gate.wait, limiter=limiter)
        await trio.testing.wait_all_tasks_blocked()
        queued = Record()
        with trio.CancelScope() as inner:
            async with trio.open_nursery() as inner_nursery:
                waiting: Task[None] = Task(on_complete=queued.callback)
                waiting.run_in_thread(inner_nursery, order.append, 3, limiter=limiter)
                await trio.testing.wait_all_tasks_blocked()
                inner.cancel()
        gate.set()
    assert queued.calls == 1
    assert isinstance(queued.error, TaskCancelled)
    assert order == [1, 2]
    assert limiter.borrowed_tokens == 0


async def test_completed_tasks_are_not_retained() -> None:
    refs: list[weakref.ref[Task[int]]] = []
    async with trio.open_nursery() as nursery:
        for index in range(200):
            task: Task[int] = Task(on_complete=lambda t: None)
            task.run_in_thread(nursery, abs, index)
            refs.append(weakref.ref(task))
        del task
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []


# -- on_complete raising ---------------------------------------------------------------


async def test_on_complete_raising_propagates_to_the_nursery() -> None:
    def on_complete(task: Task[int]) -> None:
        raise ZeroDivisionError("in completion")

    task: Task[int] = Task(on_complete=on_complete)
    with pytest.RaisesGroup(pytest.RaisesExc(ZeroDivisionError, match="in completion")):
        async with trio.open_nursery() as nursery:
            task.run_in_thread(nursery, abs, -3)
    assert task.done
    assert await task.wait() == 3  # the task's own outcome is intact


async def test_on_complete_reraising_task_error_propagates() -> None:
    def worker() -> None:
        raise OSError("worker failed")

    def on_complete(task: Task[None]) -> None:
        task.propagate_error()  # not handled: a completion that raises

    with pytest.RaisesGroup(pytest.RaisesExc(OSError, match="worker failed")):
        async with trio.open_nursery() as nursery:
            Task(on_complete=on_complete).run_in_thread(nursery, worker)


def test_complete_raising_propagates_to_caller() -> None:
    def on_complete(task: Task[None]) -> None:
        raise LookupError("boom")

    task: Task[None] = Task(on_complete=on_complete)
    with pytest.raises(LookupError):
        task.complete()
    assert task.done
    with pytest.raises(RuntimeError):
        task.complete()


# -- cancellation ------------------------------------------------------------------------


async def test_cancel_abandon_returns_at_once_and_drops_late_outcome() -> None:
    gate = threading.Event()
    finished = threading.Event()
    record = Record()

    def worker() -> int:
        gate.wait()
        finished.set()
        raise RuntimeError("late error nobody should see")

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            task: Task[int] = Task(on_complete=record.callback)
            task.run_in_thread(nursery, worker, abandon_on_cancel=True)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    # The Trio side is back while the worker is still blocked.
    assert scope.cancelled_caught
    assert not finished.is_set()
    assert record.calls == 1
    assert isinstance(record.error, TaskCancelled)
    assert record.error.abandoned
    gate.set()
    assert finished.wait(10)
    await trio.sleep(0.01)
    assert record.calls == 1  # the late outcome changed nothing
    with pytest.raises(TaskCancelled):
        await task.wait()


async def test_cancel_without_abandon_waits_for_worker() -> None:
    gate = threading.Event()
    record = Record()
    worker_done = threading.Event()

    def worker() -> str:
        gate.wait()
        worker_done.set()
        return "finished anyway"

    async def release_later() -> None:
        await trio.testing.wait_all_tasks_blocked()
        assert not worker_done.is_set()
        gate.set()

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            task: Task[str] = Task(on_complete=record.callback)
            task.run_in_thread(nursery, worker)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            with trio.CancelScope(shield=True):
                await release_later()
    assert worker_done.is_set()  # the nursery waited for the worker
    assert scope.cancelled_caught
    assert record.calls == 1
    assert isinstance(record.error, TaskCancelled)
    assert not record.error.abandoned
    assert task.result == "finished anyway"  # the worker's value is kept


async def test_cancel_without_abandon_keeps_worker_error_as_cause() -> None:
    gate = threading.Event()
    record = Record()

    def worker() -> None:
        gate.wait()
        raise ValueError("worker's own")

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            Task(on_complete=record.callback).run_in_thread(nursery, worker)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            gate.set()
    assert isinstance(record.error, TaskCancelled)
    assert isinstance(record.error.__cause__, ValueError)


@pytest.mark.parametrize("abandon", [False, True])
async def test_cancel_before_worker_starts(abandon: bool) -> None:
    record = Record()
    ran = threading.Event()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            scope.cancel()  # before the child task ever runs
            task: Task[None] = Task(on_complete=record.callback)
            task.run_in_thread(nursery, ran.set, abandon_on_cancel=abandon)
    assert record.calls == 1
    assert isinstance(record.error, TaskCancelled)
    assert not ran.is_set()
    # "abandoned" promises a thread may still run; cancelled before its thread started,
    # none can, whatever abandon_on_cancel says. (Found by tests/stress/test_cancellation.py.)
    assert record.error.abandoned is False


async def test_one_shot_helper() -> None:
    assert await trioqio.run_in_thread(sum, [1, 2, 3]) == 6
    error = OSError("nope")

    def fail() -> None:
        raise error

    with pytest.raises(OSError) as info:
        await trioqio.run_in_thread(fail)
    assert info.value is error

    gate = threading.Event()
    with trio.move_on_after(0.01) as scope:
        await trioqio.run_in_thread(gate.wait, abandon_on_cancel=True)
    assert scope.cancelled_caught
    gate.set()


@pytest.fixture(params=["untraced", "traced"])
def one_shot_path(request: pytest.FixtureRequest) -> Any:
    """Run a test with tracing off (the lean one-shot path) and on (the Task path)."""
    if request.param == "untraced":
        yield []
        return
    events: list[str] = []
    with trioqio.trace.subscribed(lambda event: events.append(event.name)):
        yield events


async def _cancel_one_shot_while_running(outcome: int | BaseException) -> None:
    started, gate, finished = threading.Event(), threading.Event(), threading.Event()

    def worker() -> int:
        started.set()
        gate.wait()
        finished.set()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    with trio.CancelScope() as scope:

        async def cancel_when_started() -> None:
            await trio.to_thread.run_sync(started.wait)
            scope.cancel()
            gate.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_when_started)
            await trioqio.run_in_thread(worker)
            pytest.fail("run_in_thread returned although its scope was cancelled")
    assert scope.cancelled_caught
    assert finished.is_set()


async def test_one_shot_paths_agree_on_every_outcome(one_shot_path: list[str]) -> None:
    assert await trioqio.run_in_thread(sum, [1, 2]) == 3
    error = KeyError("k")

    def fail() -> None:
        raise error

    with pytest.raises(KeyError) as info:
        await trioqio.run_in_thread(fail)
    assert info.value is error
    with pytest.raises(TypeError, match="is an async function"):
        # The types let an async worker through (its result would be a coroutine).
        _ = await trioqio.run_in_thread(trio.sleep, 0)
    with pytest.raises(TypeError, match="limiter must be"):
        await trioqio.run_in_thread(abs, 1, limiter=3)  # type: ignore[call-overload]

    # Cancelled while a waited-for worker runs: the worker finishes, then Cancelled wins,
    # whether the worker returned or raised.
    await _cancel_one_shot_while_running(5)
    await _cancel_one_shot_while_running(error)

    # Cancelled before it starts: no thread runs.
    ran = threading.Event()
    with trio.CancelScope() as scope:
        scope.cancel()
        await trioqio.run_in_thread(ran.set)
    assert scope.cancelled_caught
    assert not ran.is_set()
    if one_shot_path:
        assert "qio_task_complete" in one_shot_path  # the traced run went through a Task


async def test_worker_threads_are_named_after_the_task(one_shot_path: list[str]) -> None:
    def thread_name() -> str:
        return threading.current_thread().name

    assert await trioqio.run_in_thread(thread_name, name="probe") == "trioqio task probe"
    assert await trioqio.run_in_thread(thread_name) == "trioqio task"
    async with trio.open_nursery() as nursery:
        task: Task[str] = Task(name="probe")
        task.run_in_thread(nursery, thread_name)
        assert await task.wait() == "trioqio task probe"


# -- progress ----------------------------------------------------------------------------


async def test_progress_values_arrive_in_order_and_last_is_delivered() -> None:
    seen: list[tuple[int, int]] = []

    def on_progress(value: int) -> None:
        seen.append((value, threading.get_ident()))

    def worker(count: int, *, report: Any) -> str:
        for index in range(count):
            report(index)
        return "ok"

    async with trio.open_nursery() as nursery:
        task: Task[str] = Task(on_progress=on_progress)
        task.run_in_thread(nursery, worker, 500)
    values = [value for value, _ in seen]
    assert values == sorted(values)
    assert values[-1] == 499
    assert {thread for _, thread in seen} == {threading.get_ident()}


async def test_progress_is_coalesced_when_trio_is_slower() -> None:
    seen: list[int] = []
    reported = threading.Event()
    proceed = threading.Event()

    def worker(*, report: Any) -> None:
        for index in range(100):
            report(index)
        reported.set()
        proceed.wait()

    async with trio.open_nursery() as nursery:
        task: Task[None] = Task(on_progress=seen.append)
        task.run_in_thread(nursery, worker)
        await trio.testing.wait_all_tasks_blocked()
        # Block the Trio thread while the worker reports 100 values without blocking.
        assert reported.wait(10)
        await trio.sleep(0)
        await trio.sleep(0)
        assert seen == [99]  # one delivery, with the newest value
        proceed.set()
    assert seen == [99]


async def test_progress_callback_error_becomes_task_error() -> None:
    def on_progress(value: int) -> None:
        raise ArithmeticError(f"bad progress {value}")

    def worker(*, report: Any) -> int:
        report(1)
        return 5

    async with trio.open_nursery() as nursery:
        task: Task[int] = Task(on_progress=on_progress)
        task.run_in_thread(nursery, worker)
    with pytest.raises(ArithmeticError, match="bad progress 1"):
        await task.wait()


async def test_progress_reports_after_abandon_are_dropped() -> None:
    seen: list[int] = []
    gate = threading.Event()
    done = threading.Event()

    def worker(*, report: Any) -> None:
        gate.wait()
        report(1)
        done.set()

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            Task[None](on_progress=seen.append).run_in_thread(
                nursery, worker, abandon_on_cancel=True
            )
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    gate.set()
    assert done.wait(10)
    await trio.sleep(0.01)
    assert seen == []


def test_async_progress_callback_rejected() -> None:
    async def on_progress(value: object) -> None:
        pass

    with pytest.raises(TypeError, match="non-async"):
        Task(on_progress=on_progress)


# -- trace events ------------------------------------------------------------------------


async def test_trace_events_carry_thread_ids() -> None:
    events: list[trioqio.trace.TraceEvent] = []
    with trioqio.trace.subscribed(events.append):
        async with trio.open_nursery() as nursery:
            task: Task[int] = Task(name="traced")
            task.run_in_thread(nursery, abs, -1)
    names = [event.name for event in events]
    assert names == [
        "qio_task_new",
        "qio_task_thread_start",
        "qio_task_thread_run",
        "qio_task_thread_exit",
        "qio_task_thread_result",
        "qio_task_complete",
    ]
    main = threading.get_ident()
    by_name = {event.name: event for event in events}
    assert by_name["qio_task_thread_run"].thread_id != main
    assert by_name["qio_task_thread_exit"].thread_id != main
    assert by_name["qio_task_complete"].thread_id == main
    assert by_name["qio_task_new"].fields["task"] == "Task 'traced'"


async def test_trace_events_go_to_logging_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="trioqio"):
        await trioqio.run_in_thread(abs, -1)
    messages = [record.getMessage() for record in caplog.records if record.name == "trioqio"]
    assert any(message.startswith("qio_task_complete") for message in messages)


def test_failing_subscriber_does_not_break_the_task(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: trioqio.trace.TraceEvent) -> None:
        raise RuntimeError("subscriber bug")

    record = Record()
    unsubscribe = trioqio.trace.subscribe(broken)
    try:
        Task(on_complete=record.callback).complete()
    finally:
        unsubscribe()
        unsubscribe()
    assert record.calls == 1
    assert "subscriber bug" in caplog.text


# -- bad input ---------------------------------------------------------------------------


async def test_bad_input_is_rejected_before_any_thread_starts() -> None:
    async def async_worker() -> None:
        pass

    async with trio.open_nursery() as nursery:
        task: Task[Any] = Task()
        with pytest.raises(TypeError, match="must be callable"):
            task.run_in_thread(nursery, 42)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="is an async function"):
            task.run_in_thread(nursery, async_worker)

        async def async_gen() -> Any:
            yield

        # Async callables in other shapes: an async generator function, a partial of an
        # async function, and (3.12+) a plain def marked as a coroutine function.
        async_shapes: list[Any] = [async_gen, functools.partial(async_worker)]
        if hasattr(inspect, "markcoroutinefunction"):
            async_shapes.append(inspect.markcoroutinefunction(lambda: None))
        for shape in async_shapes:
            with pytest.raises(TypeError, match="is an async function"):
                task.run_in_thread(nursery, shape)
        with pytest.raises(TypeError, match=r"limiter must be a trio\.CapacityLimiter"):
            task.run_in_thread(nursery, abs, 1, limiter=4)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=r"needs a trio\.Nursery"):
            task.run_in_thread(None, abs, 1)  # type: ignore[call-overload]
        assert trio.testing.active_thread_count() == 0
        task.run_in_thread(nursery, abs, -2)
        with pytest.raises(RuntimeError, match="already ran"):
            task.run_in_thread(nursery, abs, -2)
    assert task.result == 2

    completed: Task[int] = Task()
    completed.complete()
    async with trio.open_nursery() as nursery:
        with pytest.raises(RuntimeError, match="already ran"):
            completed.run_in_thread(nursery, abs, 1)
    with pytest.raises(TypeError, match="on_complete must be callable"):
        Task(on_complete=5)  # type: ignore[arg-type]


async def test_complete_on_running_thread_task_is_an_error() -> None:
    gate = threading.Event()
    async with trio.open_nursery() as nursery:
        task: Task[bool] = Task()
        task.run_in_thread(nursery, gate.wait)
        with pytest.raises(RuntimeError, match="completes by itself"):
            task.complete()
        with pytest.raises(RuntimeError, match="completes by itself"):
            await task.acomplete()
        gate.set()


# -- the public names --------------------------------------------------------------------


def test_public_names_report_the_trioqio_module() -> None:
    """Tracebacks, reprs and pickles name ``trioqio.X``, not the private module (enums aside)."""
    import enum
    import pickle
    import types

    checked = 0
    for name in trioqio.__all__:
        obj = getattr(trioqio, name)
        if isinstance(obj, types.GenericAlias) or not isinstance(obj, type | types.FunctionType):
            continue
        if isinstance(obj, type) and issubclass(obj, enum.Enum):
            assert obj.__module__ == "trioqio._abc"  # autodoc reads its members' comments there
            continue
        assert obj.__module__ == "trioqio", name
        assert pickle.loads(pickle.dumps(obj)) is obj
        checked += 1
    assert checked > 35
    error = trioqio.UnsupportedFeature("FD_PASS", "tcp", "no fds here")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.feature, copy.channel) == (str(error), "FD_PASS", "tcp")
    eof = pickle.loads(pickle.dumps(trioqio.UnexpectedEOF("short", expected=4, received=1)))
    assert (type(eof).__module__, eof.expected, eof.received) == ("trioqio", 4, 1)
    assert repr(Task(name="x")) == "<trioqio.Task name='x' new>"


def test_callback_aliases_are_exported() -> None:
    # mypy allows subscripting a type alias in annotations only; this checks run time.
    assert trioqio.CompletionCallback[int] is not None  # type: ignore[misc]
    assert trioqio.ProgressCallback is not None
    assert {"CompletionCallback", "ProgressCallback"} <= set(trioqio.__all__)


# -- states and start_soon ---------------------------------------------------------------


async def test_states_seen_from_outside_and_from_the_completion() -> None:
    gate = threading.Event()
    seen: list[tuple[bool, str]] = []

    def on_complete(task: Task[int]) -> None:
        seen.append((task.done, repr(task)))

    async with trio.open_nursery() as nursery:
        task = Task(on_complete=on_complete, name="s")
        assert (task.done, repr(task)) == (False, "<trioqio.Task name='s' new>")
        task.run_in_thread(nursery, lambda: gate.wait() and 1)
        assert repr(task) == "<trioqio.Task name='s' running>"
        gate.set()
    # Inside the completion the task is completing, not done; after it, done.
    assert seen == [(False, "<trioqio.Task name='s' completing>")]
    assert (task.done, repr(task)) == (True, "<trioqio.Task name='s' done>")


async def test_start_soon_runs_async_work_once() -> None:
    record = Record()

    async def work(value: int) -> int:
        await trio.lowlevel.checkpoint()
        return value * 2

    async with trio.open_nursery() as nursery:
        task: Task[int] = Task(on_complete=record.callback, name="async")
        task.start_soon(nursery, work, 21)
        with pytest.raises(RuntimeError, match="already ran"):
            task.start_soon(nursery, work, 1)
        with pytest.raises(RuntimeError, match="completes by itself"):
            task.complete()
    assert (record.calls, record.result, record.thread) == (1, 42, threading.get_ident())
    assert await task.wait() == 42

    async def fail() -> None:
        await trio.lowlevel.checkpoint()
        raise KeyError("async")

    async with trio.open_nursery() as nursery:
        failing: Task[None] = Task()
        failing.start_soon(nursery, fail)
    with pytest.raises(KeyError, match="async"):
        await failing.wait()
    async with trio.open_nursery() as nursery:
        with pytest.raises(TypeError, match="must be callable"):
            Task().start_soon(nursery, 5)  # type: ignore[arg-type]
        not_async: Task[int] = Task()
        not_async.start_soon(nursery, lambda: 5)  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="not an async function"):
        await not_async.wait()


async def test_cooperative_cancellation_stops_the_worker_within_one_check() -> None:
    """trio.from_thread.check_cancelled() in a waited-for worker: it stops, nothing left."""
    chunks: list[int] = []
    at_cancel: list[int] = []
    record = Record()

    def worker() -> int:
        for index in range(10_000):
            trio.from_thread.check_cancelled()
            chunks.append(index)
            threading.Event().wait(0.001)
        return -1

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            Task(on_complete=record.callback).run_in_thread(nursery, worker)
            while len(chunks) < 3:
                await trio.sleep(0.001)
            at_cancel.append(len(chunks))
            scope.cancel()
    assert isinstance(record.error, TaskCancelled)
    assert not record.error.abandoned
    assert len(chunks) - at_cancel[0] <= 1
    assert trio.testing.active_thread_count() == 0


# -- rules found by nox -s mutation (docs/reliability.md, "Mutation testing") --------------


async def test_trace_events_name_the_task_and_carry_their_fields() -> None:
    events: list[trioqio.trace.TraceEvent] = []
    source = Dummy()
    error = OSError("boom")

    def fail() -> None:
        raise error

    async def work() -> int:
        return 1

    with trioqio.trace.subscribed(events.append):
        async with trio.open_nursery() as nursery:
            task: Task[None] = Task(source, name="t")
            task.run_in_thread(nursery, fail)
            # Async work traces new and complete only (no thread events).
            async_task: Task[int] = Task(name="a")
            async_task.start_soon(nursery, work)
    label = "Task 't'"
    fields = {event.name: event.fields for event in events if event.fields.get("task") == label}
    assert fields == {
        "qio_task_new": {"task": label, "source": source},
        "qio_task_thread_start": {"task": label, "worker": fail},
        "qio_task_thread_run": {"task": label},
        "qio_task_thread_exit": {"task": label},
        "qio_task_thread_result": {"task": label, "error": error},
        "qio_task_complete": {"task": label, "error": error},
    }
    names = [event.name for event in events if event.fields.get("task") == "Task 'a'"]
    assert names == ["qio_task_new", "qio_task_complete"]
    assert async_task.result == 1


async def test_complete_and_acomplete_emit_the_completion_event() -> None:
    events: list[trioqio.trace.TraceEvent] = []

    async def done(task: Task[None]) -> None:
        await trio.lowlevel.checkpoint()

    with trioqio.trace.subscribed(events.append):
        Task[None](name="sync").complete()
        await Task(on_complete=done, name="async").acomplete()
    completed = [event.fields["task"] for event in events if event.name == "qio_task_complete"]
    assert completed == ["Task 'sync'", "Task 'async'"]


def test_an_unnamed_task_is_labelled_by_its_address() -> None:
    task: Task[int] = Task()
    with pytest.raises(TaskError) as info:
        _ = task.result
    assert str(info.value) == f"Task at {id(task):#x} has no result: it has not finished"


async def test_a_failed_thread_task_has_no_result() -> None:
    def fail() -> int:
        raise ValueError("no")

    async with trio.open_nursery() as nursery:
        task: Task[int] = Task(name="f")
        task.run_in_thread(nursery, fail)
    with pytest.raises(TaskError, match=r"^Task 'f' has no result: it failed$"):
        _ = task.result


async def test_refusals_name_the_type_they_were_given() -> None:
    async def coroutine_function() -> None:
        await trio.lowlevel.checkpoint()

    with pytest.raises(TypeError, match=r"got int$"):
        Task[None]().set_error(3)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        with pytest.raises(TypeError, match=r"^worker must be callable, got int 3$"):
            Task[None]().run_in_thread(nursery, 3)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=r"in a thread\. Use task\.start_soon for async work$"):
            Task[None]().run_in_thread(nursery, coroutine_function)  # type: ignore[arg-type, call-arg]
        with pytest.raises(TypeError, match=r"release_on_behalf_of\), got str$"):
            Task[int]().run_in_thread(nursery, abs, 1, limiter="x")  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=r"^async_fn must be callable, got int 3$"):
            Task[None]().start_soon(nursery, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^a Task needs a trio\.Nursery, got str$"):
        Task[int]().run_in_thread("nursery", abs, 1)  # type: ignore[call-overload]


class _DuckLimiter:
    """A limiter that is not a trio.CapacityLimiter: only the two methods to_thread calls."""

    def __init__(self) -> None:
        self.inner = trio.CapacityLimiter(1)
        self.calls: list[str] = []

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        self.calls.append("acquire")
        await self.inner.acquire_on_behalf_of(borrower)

    def release_on_behalf_of(self, borrower: object) -> None:
        self.calls.append("release")
        self.inner.release_on_behalf_of(borrower)


class _HalfLimiter:
    async def acquire_on_behalf_of(self, borrower: object) -> None:
        raise AssertionError("never called")


async def test_a_duck_typed_limiter_is_used_and_a_half_one_refused() -> None:
    limiter = _DuckLimiter()
    async with trio.open_nursery() as nursery:
        task: Task[int] = Task()
        task.run_in_thread(nursery, abs, -4, limiter=limiter)  # type: ignore[call-overload]
    assert await task.wait() == 4
    assert limiter.calls == ["acquire", "release"]
    assert await trioqio.run_in_thread(abs, -5, limiter=limiter) == 5  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="limiter must be"):
        await trioqio.run_in_thread(abs, 1, limiter=_HalfLimiter())  # type: ignore[call-overload]


async def test_on_complete_may_return_a_value_that_is_not_awaitable() -> None:
    async with trio.open_nursery() as nursery:
        task: Task[int] = Task(on_complete=lambda task: 42)
        task.run_in_thread(nursery, abs, -1)
    assert await task.wait() == 1
    other: Task[None] = Task(on_complete=lambda task: "not awaited")
    await other.acomplete()
    assert other.done


async def test_the_driving_trio_task_is_named_after_the_task() -> None:
    names: list[str] = []

    def record(task: Task[int]) -> None:
        names.append(trio.lowlevel.current_task().name)

    async with trio.open_nursery() as nursery:
        Task(on_complete=record).run_in_thread(nursery, abs, 1)
        Task(on_complete=record, name="probe").run_in_thread(nursery, abs, 1)
    assert sorted(names) == ["probe", "trioqio.Task"]


async def test_task_cancelled_names_the_task() -> None:
    record = Record()
    with trio.CancelScope() as scope:
        scope.cancel()
        async with trio.open_nursery() as nursery:
            Task(on_complete=record.callback, name="c").run_in_thread(nursery, abs, 1)
    assert isinstance(record.error, TaskCancelled)
    assert str(record.error) == "Task 'c' was cancelled"


@pytest.mark.parametrize("abandon", [None, True])
async def test_the_one_shot_waits_for_its_worker_unless_told_to_abandon(
    one_shot_path: list[str], abandon: bool | None
) -> None:
    gate = threading.Event()
    started = trio.Event()
    order: list[str] = []

    def worker() -> int:
        trio.from_thread.run_sync(started.set)
        gate.wait()
        order.append("worker returned")
        return 1

    async def caller(scope: trio.CancelScope) -> None:
        with scope:
            if abandon is None:
                await trioqio.run_in_thread(worker)
            else:
                await trioqio.run_in_thread(worker, abandon_on_cancel=abandon)
        order.append("caller cancelled")

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, scope)
        await started.wait()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        order.append("released")
        gate.set()
    if abandon:
        while len(order) < 3:  # the abandoned thread finishes by itself
            await trio.to_thread.run_sync(gate.wait)
            await trio.sleep(0.001)
        assert order[:2] == ["caller cancelled", "released"]
    else:
        assert order == ["released", "worker returned", "caller cancelled"]


async def test_the_one_shot_delivers_progress_and_traces_under_its_name() -> None:
    seen: list[int] = []
    events: list[trioqio.trace.TraceEvent] = []

    def worker(*, report: Any) -> int:
        report(7)
        return 8

    assert await trioqio.run_in_thread(worker, on_progress=seen.append) == 8
    assert seen == [7]
    with trioqio.trace.subscribed(events.append):
        assert await trioqio.run_in_thread(abs, -2, name="probe") == 2
    names = [event.name for event in events if event.fields.get("task") == "Task 'probe'"]
    assert names[:2] == ["qio_task_new", "qio_task_thread_start"]
    assert "qio_task_thread_result" in names


def test_a_report_after_the_run_ended_is_dropped_quietly() -> None:
    gate = threading.Event()
    finished = threading.Event()
    raised: list[BaseException] = []
    seen: list[int] = []

    def worker(*, report: Any) -> None:
        gate.wait()
        try:
            report(1)  # trio.run has returned: nobody is listening
        except BaseException as exc:
            raised.append(exc)
        finally:
            finished.set()

    async def main() -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                Task[None](on_progress=seen.append).run_in_thread(
                    nursery, worker, abandon_on_cancel=True
                )
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

    trio.run(main)
    gate.set()
    assert finished.wait(10)
    assert raised == []
    assert seen == []
