"""Task: a worker in a thread whose completion runs in the Trio thread (QEMU ``io/task.c``).

QEMU's QIOTask runs ``worker(task, opaque)`` in a detached thread, then attaches an idle
GSource to a GMainContext so that ``func(task, opaque)`` runs in the main-loop thread. In
trioqio the "main context" is a nursery: :meth:`Task.run_in_thread` starts a child task of
that nursery which runs the worker through :func:`trio.to_thread.run_sync` and then the
completion, both owned by the nursery and so by its cancel scope.

Differences from QEMU, deliberate:

- The worker is a plain function; its return value is the result and an exception it
  raises is the error (QEMU's worker calls ``qio_task_set_error``/``set_result_pointer``).
- There are no destroy notifies and no refcounts: after the completion the task drops its
  references to the worker, its arguments and the callbacks, so closures are freed as soon
  as the caller drops the task (QEMU's "datafree" ordering, in Python's terms).
- Cancellation exists: QEMU never cancels a worker. Here the owning nursery can be
  cancelled, and the completion still runs exactly once, seeing :class:`TaskCancelled`.
- Workers can report progress to the Trio side (``on_progress``); no peer offers this.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import types
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, cast

import trio

from ._errors import TaskCancelled, TaskError
from ._trace import emit, enabled

__all__ = ["Task", "run_in_thread"]

T = TypeVar("T")

CompletionCallback = Callable[["Task[Any]"], object]
ProgressCallback = Callable[[Any], object]


class _NoResult:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<no result>"


_NO_RESULT: Any = _NoResult()


_ASYNC_CODE = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _check_worker(worker: object) -> None:
    if (
        type(worker) is types.FunctionType
        and not worker.__code__.co_flags & _ASYNC_CODE
        and not hasattr(worker, "_is_coroutine_marker")  # inspect.markcoroutinefunction
    ):
        return  # the common case, a plain def, without inspect's general unwrapping
    if not callable(worker):
        raise TypeError(f"worker must be callable, got {type(worker).__name__} {worker!r}")
    if inspect.iscoroutinefunction(worker) or inspect.isasyncgenfunction(worker):
        raise TypeError(
            f"worker {worker!r} is an async function; a Task runs a plain (blocking) function "
            "in a thread. Await async work in the Trio thread instead"
        )
    if inspect.iscoroutine(worker):  # pragma: no cover - coroutines are not callable
        raise TypeError(f"worker {worker!r} is a coroutine object, not a function")


def _check_limiter(limiter: object) -> None:
    if limiter is None or isinstance(limiter, trio.CapacityLimiter):
        return
    if not (hasattr(limiter, "acquire_on_behalf_of") and hasattr(limiter, "release_on_behalf_of")):
        raise TypeError(
            f"limiter must be a trio.CapacityLimiter (or have acquire_on_behalf_of/"
            f"release_on_behalf_of), got {type(limiter).__name__}"
        )


class _PromptLimiter:
    """A CapacityLimiter seen by ``trio.to_thread.run_sync`` without the extra scheduler pass.

    ``CapacityLimiter.acquire_on_behalf_of`` ends with a schedule point even when a token
    is free. A Task's child has just been started by the scheduler, so that pass only
    delays the thread; with a free token this takes it at once (``to_thread`` has already
    checked for cancellation, and it parks waiting for the thread right after), and with
    none it waits in the limiter's own queue, so fairness and the bound are Trio's.
    """

    __slots__ = ("_limiter",)

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self._limiter = limiter

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        try:
            self._limiter.acquire_on_behalf_of_nowait(borrower)
        except trio.WouldBlock:
            await self._limiter.acquire_on_behalf_of(borrower)

    def release_on_behalf_of(self, borrower: object) -> None:
        self._limiter.release_on_behalf_of(borrower)


def _prompt(limiter: object) -> Any:
    if limiter is None:
        return _PromptLimiter(trio.to_thread.current_default_thread_limiter())
    if isinstance(limiter, trio.CapacityLimiter):
        return _PromptLimiter(limiter)
    return limiter  # a duck-typed limiter keeps its own acquire


def _thread_name(name: str | None) -> str:
    # What a Task's worker thread is called while it runs (ps, py-spy, tracebacks).
    return "trioqio task" if name is None else f"trioqio task {name}"


async def _cancelled_now() -> bool:
    # Trio has no public "am I cancelled" query: checkpoint_if_cancelled raises Cancelled
    # when the task is, and otherwise returns without yielding. The Cancelled is dropped
    # here; the caller lets the cancellation surface at its next checkpoint.
    try:
        await trio.lowlevel.checkpoint_if_cancelled()
    except trio.Cancelled:
        return True
    return False


class Task(Generic[T]):
    """An operation whose completion callback runs in the Trio thread, exactly once.

    A Task either runs a blocking worker in a thread (:meth:`run_in_thread`) or is
    completed directly by async code that finished without a thread (:meth:`complete`,
    :meth:`acomplete`), as QEMU's TLS and websocket handshakes do.

    QEMU: ``QIOTask`` (``qio_task_new``).

    Args:
        source: the object the operation works on (QEMU's source object), for the callback.
        on_complete: ``on_complete(task)``, a plain or async function, called in the Trio
            thread when the task completes. It reads :attr:`result` or calls
            :meth:`propagate_error`. If it raises, the exception propagates to whoever ran
            the completion: the owning nursery for :meth:`run_in_thread` (Trio's usual
            rule: an error in a child crashes the nursery), or the caller of
            :meth:`complete`. The task is marked done and waiters are woken regardless.
        name: a label for traces and ``repr``.
        on_progress: ``on_progress(value)``, plain or async, called in the Trio thread
            with values the worker reports (see :meth:`run_in_thread`).

    Example::

        def done(task: trioqio.Task[int]) -> None:
            print("sum is", task.result)

        async with trio.open_nursery() as nursery:
            task = trioqio.Task(on_complete=done, name="sum")
            task.run_in_thread(nursery, sum, [1, 2, 3])
    """

    __slots__ = (
        "__weakref__",
        "_completing",
        "_done",
        "_done_event",
        "_error",
        "_first_error",
        "_name",
        "_on_complete",
        "_on_progress",
        "_progress_deliver",
        "_progress_finished",
        "_progress_lock",
        "_progress_value",
        "_result",
        "_source",
        "_started",
    )

    def __init__(
        self,
        source: object = None,
        on_complete: CompletionCallback | None = None,
        *,
        name: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        if on_complete is not None and not callable(on_complete):
            raise TypeError(f"on_complete must be callable or None, got {on_complete!r}")
        if on_progress is not None and (
            not callable(on_progress) or inspect.iscoroutinefunction(on_progress)
        ):
            raise TypeError(
                f"on_progress must be a plain (non-async) callable or None, got {on_progress!r}"
            )
        self._source = source
        self._on_complete = on_complete
        self._on_progress = on_progress
        self._name = name
        self._error: BaseException | None = None
        self._first_error: BaseException | None = None
        self._result: Any = _NO_RESULT
        self._started = False
        self._completing = False
        self._done = False
        self._done_event: trio.Event | None = None
        self._progress_lock: threading.Lock | None = None
        self._progress_value: Any = _NO_RESULT
        self._progress_deliver: Callable[[], None] | None = None
        self._progress_finished = False
        if enabled():
            emit("qio_task_new", task=self._label(), source=source)

    # -- properties -------------------------------------------------------------------

    @property
    def source(self) -> object:
        """The source object given at construction (QEMU ``qio_task_get_source``)."""
        return self._source

    @property
    def name(self) -> str | None:
        """The task's name, or None."""
        return self._name

    @property
    def done(self) -> bool:
        """True once the completion has run (or is running)."""
        return self._completing

    @property
    def error(self) -> BaseException | None:
        """The stored error, or None (cleared by :meth:`propagate_error`)."""
        return self._error

    @property
    def result(self) -> T:
        """The result the worker returned or :meth:`set_result` stored.

        QEMU: ``qio_task_get_result_pointer``.

        Raises:
            trioqio.TaskError: there is no result (not finished yet, or it failed).
        """
        if self._result is _NO_RESULT:
            state = "failed" if self._first_error is not None else "has not finished"
            raise TaskError(f"{self._label()} has no result: it {state}")
        return cast(T, self._result)

    def _label(self) -> str:
        return f"Task {self._name!r}" if self._name else f"Task at {id(self):#x}"

    def __repr__(self) -> str:
        state = "done" if self._completing else ("running" if self._started else "new")
        return f"<trioqio.Task name={self._name!r} {state}>"

    # -- QEMU's result and error API ---------------------------------------------------

    def set_error(self, error: BaseException | None) -> None:
        """Record an error; the first one wins, later ones are dropped.

        QEMU: ``qio_task_set_error`` (``error_propagate`` semantics).

        Args:
            error: the exception to store; None is ignored.

        Raises:
            TypeError: ``error`` is not an exception.

        Example::

            task.set_error(OSError("connect failed"))
        """
        if error is None:
            return
        if not isinstance(error, BaseException):  # pyright: ignore[reportUnnecessaryIsInstance]  # runtime guard for untyped callers
            raise TypeError(f"set_error needs an exception, got {type(error).__name__}")
        if self._first_error is None:
            self._first_error = error
            self._error = error

    def propagate_error(self) -> None:
        """Raise the stored error (the very object that was set) and clear it.

        A second call returns normally, as QEMU's returns false.

        QEMU: ``qio_task_propagate_error``.

        Raises:
            BaseException: the stored error, if any.

        Example::

            def done(task):
                try:
                    task.propagate_error()
                except OSError as exc:
                    print("failed:", exc)
        """
        error = self._error
        if error is not None:
            self._error = None
            raise error

    def set_result(self, value: T) -> None:
        """Store the result (QEMU ``qio_task_set_result_pointer``); a later call replaces it.

        Args:
            value: the result.

        Raises nothing: storing is allowed in any state; the completion reads the last
        value stored.

        Example::

            task.set_result(channel)
        """
        self._result = value

    # -- completion -------------------------------------------------------------------

    def _begin_completion(self) -> None:
        if self._completing:
            raise RuntimeError(f"{self._label()} was already completed; a Task completes once")
        self._completing = True
        if enabled():
            emit("qio_task_complete", task=self._label(), error=self._first_error)

    def _finish_completion(self) -> None:
        self._done = True
        # Drop what the caller handed us, so closures are freed with the task (datafree).
        self._on_complete = None
        self._on_progress = None
        if self._done_event is not None:
            self._done_event.set()

    def complete(self) -> None:
        """Run the completion now, for work that finished without a thread.

        QEMU: ``qio_task_complete``.

        Raises:
            RuntimeError: the task was already completed, or is running in a thread.
            TypeError: ``on_complete`` is an async function (use :meth:`acomplete`).

        Example::

            task = trioqio.Task(source=channel, on_complete=done)
            task.set_result(channel)
            task.complete()
        """
        callback = self._on_complete
        if callback is not None and inspect.iscoroutinefunction(callback):
            raise TypeError(f"{self._label()} has an async on_complete: use await task.acomplete()")
        if self._started:
            raise RuntimeError(f"{self._label()} runs in a thread; it completes by itself")
        self._begin_completion()
        try:
            if callback is not None:
                callback(self)
        finally:
            self._finish_completion()

    async def acomplete(self) -> None:
        """Run the completion now, awaiting an async ``on_complete``.

        Raises:
            RuntimeError: the task was already completed, or is running in a thread.

        Example::

            task.set_error(exc)
            await task.acomplete()
        """
        if self._started:
            raise RuntimeError(f"{self._label()} runs in a thread; it completes by itself")
        await self._acomplete()

    async def _acomplete(self) -> None:
        self._begin_completion()
        callback = self._on_complete
        try:
            if callback is not None:
                outcome = callback(self)
                if outcome is not None and inspect.isawaitable(outcome):
                    await cast(Awaitable[object], outcome)
        finally:
            self._finish_completion()

    async def wait(self) -> T:
        """Wait for the completion to have run, then return the result or raise the error.

        Any number of Trio tasks may wait at once. The error raised is the first one set,
        even if the completion already consumed it with :meth:`propagate_error`.

        QEMU: ``qio_task_wait_thread`` (which runs the completion in the caller; here the
        completion runs in the owning nursery and ``wait`` only waits for it).

        Returns:
            The result.

        Raises:
            BaseException: the task's error (the worker's own exception, unwrapped, or
                :class:`trioqio.TaskCancelled`).

        Example::

            task.run_in_thread(nursery, socket.getaddrinfo, "localhost", 80)
            infos = await task.wait()
        """
        if self._done:
            await trio.lowlevel.checkpoint()
        else:
            if self._done_event is None:
                self._done_event = trio.Event()
            await self._done_event.wait()
        if self._first_error is not None:
            raise self._first_error
        return cast(T, self._result)

    # -- threads ----------------------------------------------------------------------

    def run_in_thread(
        self,
        nursery: trio.Nursery,
        worker: Callable[..., T],
        *args: object,
        limiter: trio.CapacityLimiter | None = None,
        abandon_on_cancel: bool = False,
    ) -> None:
        """Run ``worker(*args)`` in a thread; complete in the Trio thread. Returns at once.

        A child task of ``nursery`` runs the worker through
        :func:`trio.to_thread.run_sync`. Its return value becomes the result and an
        exception it raises becomes the error; then the completion runs in the Trio
        thread, exactly once.

        Progress: when the task has ``on_progress``, the worker is called with an extra
        keyword argument ``report``, a function it may call from its thread with any
        value. ``report`` never blocks the worker; values reach ``on_progress`` in the
        Trio thread in order, coalesced to the latest one when the Trio side is slower,
        and the last value reported is always delivered before the completion.

        Cancellation: if the nursery is cancelled before the worker finishes, the
        completion still runs exactly once, with the error
        :class:`trioqio.TaskCancelled`. With ``abandon_on_cancel=True`` the Trio side
        stops waiting at once; the thread finishes in the background and its outcome is
        dropped (the limiter token is held until it does). With ``False`` the worker is
        waited for; the completion then sees ``TaskCancelled`` (``abandoned=False``) as
        the error, with :attr:`result` holding the value the worker returned, or the
        worker's own exception as the ``TaskCancelled``'s ``__cause__``. In both modes
        the cancellation itself continues to propagate after the completion.

        An async ``on_complete`` that runs because of cancellation runs inside the
        cancelled scope: its own awaits raise :class:`trio.Cancelled` (shield them if
        they must finish).

        QEMU: ``qio_task_run_in_thread`` (with a nursery for the GMainContext).

        Args:
            nursery: owns the child task; cancelling it cancels the task.
            worker: a plain (blocking) function.
            *args: positional arguments for the worker.
            limiter: a :class:`trio.CapacityLimiter` bounding concurrent workers
                (default: Trio's global thread limiter).
            abandon_on_cancel: stop waiting for the worker when cancelled.

        Raises:
            TypeError: ``worker`` is not callable or is async, ``limiter`` is not a
                limiter, or ``nursery`` is not a nursery.
            RuntimeError: the task already ran or completed.

        Example::

            async with trio.open_nursery() as nursery:
                task = trioqio.Task(on_complete=lambda t: print(t.result))
                task.run_in_thread(nursery, time.sleep, 0.1)
        """
        if not isinstance(nursery, trio.Nursery):  # pyright: ignore[reportUnnecessaryIsInstance]  # runtime guard for untyped callers
            raise TypeError(f"run_in_thread needs a trio.Nursery, got {type(nursery).__name__}")
        self._prepare(worker, limiter)
        nursery.start_soon(
            self._execute,
            worker,
            args,
            limiter,
            abandon_on_cancel,
            name=self._name or "trioqio.Task",
        )

    def _prepare(self, worker: object, limiter: object) -> None:
        _check_worker(worker)
        _check_limiter(limiter)
        if self._started or self._completing:
            raise RuntimeError(f"{self._label()} already ran; create a new Task for new work")
        self._started = True
        if enabled():
            emit("qio_task_thread_start", task=self._label(), worker=worker)

    async def _execute(
        self,
        worker: Callable[..., T],
        args: tuple[object, ...],
        limiter: trio.CapacityLimiter | None,
        abandon_on_cancel: bool,
    ) -> None:
        """Run the worker, then the completion.

        The worker's own error becomes the task's error and is not raised here; only a
        cancellation (after the completion ran) and exceptions from the callbacks are.
        """
        tracing = enabled()
        on_progress = self._on_progress
        thread_name = _thread_name(self._name)

        def in_thread() -> T:
            if tracing:
                emit("qio_task_thread_run", task=self._label())
            try:
                if on_progress is not None:
                    return worker(*args, report=reporter)
                return worker(*args)
            finally:
                if tracing:
                    emit("qio_task_thread_exit", task=self._label())

        if on_progress is not None:
            reporter = self._make_reporter(trio.lowlevel.current_trio_token(), on_progress)
        # Nothing to wrap (no trace events, no report keyword): the worker itself runs in
        # the thread, one Python frame less on the way there and back.
        plain = not tracing and on_progress is None
        sync_fn: Callable[..., T] = worker if plain else in_thread
        cancelled: trio.Cancelled | None = None
        try:
            try:
                value = await trio.to_thread.run_sync(
                    sync_fn,
                    *(args if plain else ()),
                    thread_name=thread_name,
                    limiter=_prompt(limiter),
                    abandon_on_cancel=abandon_on_cancel,
                )
            finally:
                self._flush_progress()
        except trio.Cancelled as exc:
            cancelled = exc
            # Without abandon_on_cancel, Cancelled means the worker never started: no
            # thread was abandoned, so say so (``abandoned`` promises "may still run").
            self.set_error(
                TaskCancelled(f"{self._label()} was cancelled", abandoned=abandon_on_cancel)
            )
        except BaseException as exc:
            if not abandon_on_cancel and await _cancelled_now():
                error = TaskCancelled(f"{self._label()} was cancelled", abandoned=False)
                error.__cause__ = exc
                self.set_error(error)
            else:
                self.set_error(exc)
        else:
            self._result = value
            # Cancelled while the worker was waited for? (No yield when not.)
            if not abandon_on_cancel and await _cancelled_now():
                self.set_error(TaskCancelled(f"{self._label()} was cancelled", abandoned=False))
        if tracing:
            emit("qio_task_thread_result", task=self._label(), error=self._first_error)
        await self._acomplete()
        if cancelled is not None:
            raise cancelled
        if isinstance(self._first_error, TaskCancelled):
            # The worker was waited for; let the cancellation that caused it surface now.
            await trio.lowlevel.checkpoint()

    # -- progress ---------------------------------------------------------------------

    # Progress values travel through TrioToken.run_sync_soon(idempotent=True): the worker
    # stores the latest value under a lock and queues one delivery; deliveries queued while
    # one is pending collapse into it, so a slow Trio side sees the newest value only.

    def _make_reporter(
        self, token: trio.lowlevel.TrioToken, on_progress: ProgressCallback
    ) -> Callable[[object], None]:
        lock = self._progress_lock = threading.Lock()

        def report(value: object) -> None:
            with lock:
                self._progress_value = value
            # RunFinishedError: an abandoned worker outliving the run; nobody is listening.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(deliver, idempotent=True)

        def deliver() -> None:
            if self._progress_finished:
                return
            with lock:
                value, self._progress_value = self._progress_value, _NO_RESULT
            if value is _NO_RESULT:
                return
            try:
                on_progress(value)
            except BaseException as exc:  # must not escape into Trio's run loop
                self.set_error(exc)

        self._progress_deliver = deliver
        return report

    def _flush_progress(self) -> None:
        """Deliver the last reported value (if any) and stop further deliveries."""
        deliver = self._progress_deliver
        if deliver is not None:
            deliver()
        self._progress_finished = True
        self._progress_deliver = None


async def run_in_thread(
    worker: Callable[..., T],
    *args: object,
    limiter: trio.CapacityLimiter | None = None,
    abandon_on_cancel: bool = False,
    on_progress: ProgressCallback | None = None,
    name: str | None = None,
) -> T:
    """Run ``worker(*args)`` as a one-shot :class:`Task` in a thread and return its result.

    The Task runs in the calling Trio task (no nursery needed); options mean what they
    mean for :meth:`Task.run_in_thread`.

    Args:
        worker: a plain (blocking) function.
        *args: its positional arguments.
        limiter: bounds concurrent workers.
        abandon_on_cancel: stop waiting for the worker when cancelled.
        on_progress: receives values the worker passes to its ``report`` keyword.
        name: the task's name in traces.

    Returns:
        What the worker returned.

    Raises:
        BaseException: what the worker raised, unwrapped.
        trio.Cancelled: the caller was cancelled (the Task's completion saw
            :class:`trioqio.TaskCancelled`).

    Example::

        digest = await trioqio.run_in_thread(hashlib.sha256, data)
    """
    if on_progress is None and not enabled():
        return await _run_untraced(worker, args, limiter, abandon_on_cancel, name)
    task: Task[T] = Task(name=name, on_progress=on_progress)
    task._prepare(worker, limiter)  # pyright: ignore[reportPrivateUsage]
    await task._execute(worker, args, limiter, abandon_on_cancel)  # pyright: ignore[reportPrivateUsage]
    # No wait(): the completion already ran in this very Trio task, and to_thread
    # already was a checkpoint, so another one would only cost a scheduler pass.
    error = task._first_error  # pyright: ignore[reportPrivateUsage]
    if error is not None:
        raise error
    return cast(T, task._result)  # pyright: ignore[reportPrivateUsage]


async def _run_untraced(
    worker: Callable[..., T],
    args: tuple[object, ...],
    limiter: trio.CapacityLimiter | None,
    abandon_on_cancel: bool,
    name: str | None,
) -> T:
    """The one-shot Task when nothing can observe the Task object itself.

    Without ``on_progress`` and with tracing off, nobody sees the Task a one-shot call
    makes (it has no ``on_complete``), so this does exactly what its :meth:`Task._execute`
    would have done in the same order, minus the object: the same argument checks, the
    same thread name and limiter, and the same outcome for every cancellation case.
    """
    _check_worker(worker)
    _check_limiter(limiter)
    try:
        value = await trio.to_thread.run_sync(
            worker,
            *args,
            thread_name=_thread_name(name),
            limiter=_prompt(limiter),
            abandon_on_cancel=abandon_on_cancel,
        )
    except trio.Cancelled:
        raise
    except BaseException:
        if not abandon_on_cancel:
            # Cancelled while the worker ran (and was waited for): the cancellation
            # wins, as with a Task, and the worker's error is its context.
            await trio.lowlevel.checkpoint_if_cancelled()
        raise
    if not abandon_on_cancel:
        await trio.lowlevel.checkpoint_if_cancelled()
    return value
