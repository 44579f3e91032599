"""Task: work whose completion runs in the Trio thread, exactly once (QEMU ``io/task.c``).

QEMU's QIOTask runs ``worker(task, opaque)`` in a detached thread, then attaches an idle
GSource to a GMainContext so that ``func(task, opaque)`` runs in the main-loop thread. In
trioqio the "main context" is a nursery: :meth:`Task.run_in_thread` starts a child task of
that nursery which runs the worker through :func:`trio.to_thread.run_sync` and then the
completion, both owned by the nursery and so by its cancel scope.

Theory of operation
-------------------

Every operation that ends in a Task (``Task.run_in_thread``, ``Task.start_soon``, the
one-shot :func:`run_in_thread`, ``connect_task``, ``resolve_task`` and the TLS and
websocket ``handshake_task``) goes through one driver, in three layers:

- A *work* says how the work runs and whether it has started: :class:`ThreadWork` runs a
  blocking function through ``trio.to_thread.run_sync`` (it is also the limiter that
  ``to_thread`` sees, so it knows the moment the thread gets its token); :class:`AsyncWork`
  awaits an async function in the driving Trio task. ``connect_task`` subclasses
  ``ThreadWork`` to turn the connected socket into a channel in the Trio thread.
- :func:`_run` is the cancellation policy, written once: it runs a work and says how it
  ended, as ``(value, error, cancelled)``. docs/task.md has it as a table, and
  tests/test_task_policy.py checks every row for every ``*_task`` operation.
- :meth:`Task._drive` records that ending on the Task and runs the completion. The
  one-shot :func:`run_in_thread` needs no Task object when nothing can observe one (no
  tracing, no progress): it calls :func:`_run` and returns or raises what it says.

A Task's lifecycle is :class:`_State`: NEW, then RUNNING once a work is scheduled
(:meth:`Task.run_in_thread`, :meth:`Task.start_soon`), COMPLETING while ``on_complete``
runs, DONE once it returned or raised. :meth:`Task.complete` goes from NEW straight to
COMPLETING. ``done``, ``repr`` and every guard read the state.

The policy, in words: the owner's cancellation wins. If the owner (the nursery, or the
caller of the one-shot) is cancelled before the work ends, the Task ends with
:class:`TaskCancelled` and the cancellation propagates after the completion. Before the
work starts, nothing runs. A thread that is waited for (``abandon_on_cancel=False``)
keeps its value in ``result`` or its error as the ``TaskCancelled``'s ``__cause__``; an
abandoned one (``True``) may still be running, which ``TaskCancelled.abandoned`` says.
The completion always runs in the owner's (possibly cancelled) scope, never shielded, so
an async completion's awaits raise :class:`trio.Cancelled` like any other code there.

Differences from QEMU, deliberate:

- The worker is a plain function; its return value is the result and an exception it
  raises is the error (QEMU's worker calls ``qio_task_set_error``/``set_result_pointer``).
- There are no destroy notifies and no refcounts: after the completion the task drops its
  references to the callbacks, so closures are freed as soon as the caller drops the task
  (QEMU's "datafree" ordering, in Python's terms).
- Cancellation exists: QEMU never cancels a worker. Here the owning nursery can be
  cancelled, and the completion still runs exactly once, seeing :class:`TaskCancelled`.
- Workers can report progress to the Trio side (``on_progress``); no peer offers this.
- A Task can run async work too (:meth:`Task.start_soon`), which is how the TLS and
  websocket handshakes complete theirs (QEMU steps them with main-loop watches).
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import threading
import types
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast, overload

import trio

from ._errors import TaskCancelled, TaskError
from ._trace import emit, enabled

if TYPE_CHECKING:
    # Type checkers only: trio needs no typing_extensions at run time on any Python we
    # support, and trioqio's run-time dependencies are trio and attrs (trio does the same).
    from typing_extensions import TypeVarTuple, Unpack

    Ts = TypeVarTuple("Ts")

__all__ = ["CompletionCallback", "ProgressCallback", "Task", "run_in_thread"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

if TYPE_CHECKING:

    class ReportingWorker(Protocol[Unpack[Ts], T_co]):
        """A worker that takes the ``report`` keyword (see :meth:`Task.run_in_thread`)."""

        def __call__(self, *args: Unpack[Ts], report: Callable[[Any], None]) -> T_co: ...


class _NoResult:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<no result>"


_NO_RESULT: Any = _NoResult()


class _State(enum.Enum):
    """Where a Task is in its life (the model is trio ``_ssl.py``'s ``_State``)."""

    NEW = "new"  # created; no work scheduled and no completion run
    RUNNING = "running"  # a work is scheduled or running; the Task completes by itself
    COMPLETING = "completing"  # on_complete is running: the outcome is final
    DONE = "done"  # on_complete returned or raised; waiters are woken


# The same members as module globals for the per-call paths: on Python 3.11 reading an
# Enum member as a class attribute costs about five times a global (and a Task reads or
# writes its state six times in a run).
_NEW, _RUNNING, _COMPLETING, _DONE = _State


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
            "in a thread. Use task.start_soon for async work"
        )


def _check_limiter(limiter: object) -> bool:
    """Refuse what is not a limiter; True for Trio's own (None: the default one)."""
    if limiter is None or isinstance(limiter, trio.CapacityLimiter):
        return True
    if not (hasattr(limiter, "acquire_on_behalf_of") and hasattr(limiter, "release_on_behalf_of")):
        raise TypeError(
            f"limiter must be a trio.CapacityLimiter (or have acquire_on_behalf_of/"
            f"release_on_behalf_of), got {type(limiter).__name__}"
        )
    return False


def _thread_name(name: str | None) -> str:
    # What a Task's worker thread is called while it runs (ps, py-spy, tracebacks).
    return "trioqio task" if name is None else f"trioqio task {name}"


# -- works: how the work runs, and whether it started -------------------------------------


class ThreadWork:
    """A blocking function run by ``trio.to_thread.run_sync``, and the limiter it sees.

    Being the limiter tells the policy whether the thread started: ``to_thread`` takes a
    token just before it starts the thread, with no checkpoint in between, so a
    cancellation that arrives while ``started`` is False means no thread ever ran.

    Taking the token also skips ``CapacityLimiter.acquire_on_behalf_of``'s schedule
    point when a token is free (``to_thread`` has already checked for cancellation, and
    it parks waiting for the thread right after); with none free it waits in the
    limiter's own queue, so fairness and the bound are Trio's. That is what makes the
    one-shot :func:`run_in_thread` a little faster than bare ``to_thread``.
    """

    __slots__ = ("args", "fn", "limiter", "prompt", "started", "thread_name")

    def __init__(
        self, fn: Callable[..., object], args: tuple[object, ...], limiter: Any, name: str | None
    ) -> None:
        _check_worker(fn)
        self.prompt = _check_limiter(limiter)  # a trio.CapacityLimiter: take a free token now
        self.fn = fn
        self.args = args
        self.limiter = limiter
        self.thread_name = _thread_name(name)
        self.started = False

    def run(self, abandon_on_cancel: bool) -> Awaitable[Any]:
        """Run the function in a thread (Trio's rules for ``abandon_on_cancel``).

        A plain method returning ``to_thread``'s coroutine, not an ``async def``: the
        driver awaits that coroutine itself, one frame less each way.
        """
        if self.limiter is None:
            self.limiter = trio.to_thread.current_default_thread_limiter()
        gate: Any = self
        return trio.to_thread.run_sync(
            self.fn,
            *self.args,
            thread_name=self.thread_name,
            limiter=gate,
            abandon_on_cancel=abandon_on_cancel,
        )

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """``to_thread``'s limiter protocol: take a token, promptly when one is free."""
        limiter = self.limiter
        if self.prompt:
            try:
                limiter.acquire_on_behalf_of_nowait(borrower)
            except trio.WouldBlock:
                await limiter.acquire_on_behalf_of(borrower)
        else:
            await limiter.acquire_on_behalf_of(borrower)
        self.started = True

    def release_on_behalf_of(self, borrower: object) -> None:
        """``to_thread``'s limiter protocol: give the token back."""
        self.limiter.release_on_behalf_of(borrower)


class AsyncWork:
    """An async function awaited in the driving Trio task (no thread)."""

    __slots__ = ("afn", "args", "started")

    def __init__(self, afn: Callable[..., Awaitable[object]], args: tuple[object, ...]) -> None:
        if not callable(afn):
            raise TypeError(f"async_fn must be callable, got {type(afn).__name__} {afn!r}")
        self.afn = afn
        self.args = args
        self.started = False

    async def run(self, abandon_on_cancel: bool) -> Any:
        """Await the function; cancelled before it starts, it is never called."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self.started = True
        awaitable = self.afn(*self.args)
        if not inspect.isawaitable(awaitable):
            raise TypeError(f"{self.afn!r} is not an async function (it returned {awaitable!r})")
        return await awaitable


Work = ThreadWork | AsyncWork


# -- the cancellation policy (docs/task.md: "Cancellation") ------------------------------


async def _run(
    work: Work, abandon_on_cancel: bool
) -> tuple[Any, BaseException | None, trio.Cancelled | None]:
    """Run ``work``; say how it ended as ``(value, error, cancelled)``.

    ``cancelled`` is the owner's cancellation, to raise once the ending is recorded; when
    it is set the operation ended cancelled, whatever else is set:

    - before the work started (``work.started`` is False): nothing ran;
    - while it ran, waited for (``abandon_on_cancel=False``, and always for async work):
      ``value`` or ``error`` is what the work returned or raised, unless it stopped on
      the cancellation itself (``trio.from_thread.check_cancelled()``, an await);
    - while it ran, abandoned (``abandon_on_cancel=True``): the thread may still run, and
      whatever it ends with is dropped (by ``to_thread``).

    Without ``cancelled``, exactly one of ``value`` and ``error`` is meaningful.
    """
    value = _NO_RESULT
    error: BaseException | None = None
    try:
        value = await work.run(abandon_on_cancel)
    except trio.Cancelled as exc:
        return _NO_RESULT, None, exc
    except BaseException as exc:
        error = exc
    if abandon_on_cancel:
        return value, error, None
    # Waited for: was the owner cancelled meanwhile? Trio has no public "am I cancelled"
    # query; checkpoint_if_cancelled raises Cancelled if so, and otherwise returns without
    # yielding. The Cancelled is kept for the caller to raise once it recorded the ending.
    try:
        await trio.lowlevel.checkpoint_if_cancelled()
    except trio.Cancelled as exc:
        return value, error, exc
    return value, error, None


# -- progress ----------------------------------------------------------------------------


class _Progress:
    """Carries a worker's ``report(value)`` calls to ``on_progress`` in the Trio thread.

    Values travel through ``TrioToken.run_sync_soon(idempotent=True)``: the worker stores
    the latest value under a lock and queues one delivery; deliveries queued while one is
    pending collapse into it, so a slow Trio side sees the newest value only.
    """

    __slots__ = ("_callback", "_finished", "_lock", "_on_error", "_token", "_value")

    def __init__(
        self, callback: ProgressCallback, on_error: Callable[[BaseException], None]
    ) -> None:
        self._callback = callback
        self._on_error = on_error
        self._token = trio.lowlevel.current_trio_token()
        self._lock = threading.Lock()
        self._value: Any = _NO_RESULT
        self._finished = False

    def report(self, value: object) -> None:
        """Worker thread: never blocks; the value replaces one not yet delivered."""
        with self._lock:
            self._value = value
        # RunFinishedError: an abandoned worker outliving the run; nobody is listening.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._deliver, idempotent=True)

    def _deliver(self) -> None:
        if self._finished:
            return
        with self._lock:
            value, self._value = self._value, _NO_RESULT
        if value is _NO_RESULT:
            return
        try:
            self._callback(value)
        except BaseException as exc:  # must not escape into Trio's run loop
            self._on_error(exc)

    def finish(self) -> None:
        """Trio thread: deliver the last value reported, if any, and stop delivering."""
        self._deliver()
        self._finished = True


# -- the Task ----------------------------------------------------------------------------


class Task(Generic[T]):
    """An operation whose completion callback runs in the Trio thread, exactly once.

    A Task either runs a blocking worker in a thread (:meth:`run_in_thread`), awaits async
    work (:meth:`start_soon`), or is completed directly by code that finished by itself
    (:meth:`complete`, :meth:`acomplete`). The ``*_task`` functions of trioqio
    (:func:`trioqio.connect_task`, :func:`trioqio.resolve_task`, the handshakes) return
    one, and all of them follow the same cancellation policy (see :meth:`run_in_thread`
    and the table in the guide).

    QEMU: ``QIOTask`` (``qio_task_new``).

    Args:
        source: the object the operation works on (QEMU's source object), for the callback.
        on_complete: ``on_complete(task)``, a plain or async function, called in the Trio
            thread when the task completes; its parameter's type fixes the task's result
            type. It reads :attr:`result` or calls :meth:`propagate_error`. If it raises,
            the exception propagates to whoever ran the completion: the owning nursery
            for :meth:`run_in_thread` and :meth:`start_soon` (Trio's usual rule: an error
            in a child crashes the nursery), or the caller of :meth:`complete`. The task
            is marked done and waiters are woken regardless.
        name: a label for traces, thread names and ``repr``.
        on_progress: ``on_progress(value)``, a plain (not async) function, called in the
            Trio thread with values the worker reports (see :meth:`run_in_thread`).

    Example::

        def done(task: trioqio.Task[int]) -> None:
            print("sum is", task.result)

        async with trio.open_nursery() as nursery:
            task = trioqio.Task(on_complete=done, name="sum")
            task.run_in_thread(nursery, sum, [1, 2, 3])
    """

    __slots__ = (
        "__weakref__",
        "_done_event",
        "_error",
        "_first_error",
        "_name",
        "_on_complete",
        "_on_progress",
        "_result",
        "_source",
        "_state",
    )

    def __init__(
        self,
        source: object = None,
        on_complete: CompletionCallback[T] | None = None,
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
        self._state = _NEW
        self._error: BaseException | None = None
        self._first_error: BaseException | None = None
        self._result: Any = _NO_RESULT
        self._done_event: trio.Event | None = None
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
        """True once the completion has run (returned or raised); ``wait()`` then returns."""
        return self._state is _DONE

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
        return f"<trioqio.Task name={self._name!r} {self._state.value}>"

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

            def done(task: trioqio.Task[int]) -> None:
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

    def _check_completable(self) -> None:
        # complete() and acomplete() finish a Task that runs no work of its own.
        if self._state is _RUNNING:
            raise RuntimeError(f"{self._label()} is running its work; it completes by itself")
        if self._state is not _NEW:
            raise RuntimeError(f"{self._label()} was already completed; a Task completes once")

    def _completing(self, tracing: bool) -> CompletionCallback[T] | None:
        self._state = _COMPLETING
        if tracing:
            emit("qio_task_complete", task=self._label(), error=self._first_error)
        return self._on_complete

    def _finish_completion(self) -> None:
        self._state = _DONE
        # Drop what the caller handed us, so closures are freed with the task (datafree).
        self._on_complete = None
        self._on_progress = None
        if self._done_event is not None:
            self._done_event.set()

    def complete(self) -> None:
        """Run the completion now, for work that finished without a thread.

        QEMU: ``qio_task_complete``.

        Raises:
            RuntimeError: the task was already completed, or is running its work.
            TypeError: ``on_complete`` is an async function (use :meth:`acomplete`).

        Example::

            task = trioqio.Task(source=channel, on_complete=done)
            task.set_result(channel)
            task.complete()
        """
        if self._on_complete is not None and inspect.iscoroutinefunction(self._on_complete):
            raise TypeError(f"{self._label()} has an async on_complete: use await task.acomplete()")
        self._check_completable()
        callback = self._completing(enabled())
        try:
            if callback is not None:
                callback(self)
        finally:
            self._finish_completion()

    async def acomplete(self) -> None:
        """Run the completion now, awaiting an async ``on_complete``.

        Raises:
            RuntimeError: the task was already completed, or is running its work.

        Example::

            task.set_error(exc)
            await task.acomplete()
        """
        self._check_completable()
        await self._run_completion(enabled())

    async def _run_completion(self, tracing: bool) -> None:
        callback = self._completing(tracing)
        try:
            if callback is not None:
                outcome = callback(self)
                if outcome is not None and inspect.isawaitable(outcome):
                    await outcome
        finally:
            self._finish_completion()

    def _unwrap(self) -> T:
        if self._first_error is not None:
            raise self._first_error
        return cast(T, self._result)

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
        if self._state is _DONE:
            await trio.lowlevel.checkpoint()
        else:
            if self._done_event is None:
                self._done_event = trio.Event()
            await self._done_event.wait()
        return self._unwrap()

    # -- running work: the one driver -------------------------------------------------

    @overload
    def run_in_thread(
        self,
        nursery: trio.Nursery,
        worker: Callable[[Unpack[Ts]], T],
        *args: Unpack[Ts],
        limiter: trio.CapacityLimiter | None = None,
        abandon_on_cancel: bool = False,
    ) -> None: ...

    @overload
    def run_in_thread(
        self,
        nursery: trio.Nursery,
        worker: ReportingWorker[Unpack[Ts], T],
        *args: Unpack[Ts],
        limiter: trio.CapacityLimiter | None = None,
        abandon_on_cancel: bool = False,
    ) -> None: ...

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
        :class:`trioqio.TaskCancelled`, and the cancellation continues to propagate
        after it. Cancelled before the thread started, nothing runs. With
        ``abandon_on_cancel=True`` the Trio side stops waiting at once; the thread
        finishes in the background and its outcome is dropped (the limiter token is held
        until it does; ``TaskCancelled.abandoned`` is True). With ``False`` the worker is
        waited for, and :attr:`result` keeps the value it returned, or the
        ``TaskCancelled``'s ``__cause__`` is the exception it raised. A long worker can
        stop early by calling :func:`trio.from_thread.check_cancelled` now and then: it
        raises :class:`trio.Cancelled` in the thread once the nursery is cancelled.

        The completion runs in the nursery's scope, never shielded: once that is
        cancelled, an async ``on_complete``'s awaits raise :class:`trio.Cancelled`
        (shield them if they must finish).

        QEMU: ``qio_task_run_in_thread`` (with a nursery for the GMainContext).

        Args:
            nursery: owns the child task; cancelling it cancels the task.
            worker: a plain (blocking) function; with ``on_progress`` it also takes the
                ``report`` keyword.
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
                task: trioqio.Task[None] = trioqio.Task(on_complete=print)
                task.run_in_thread(nursery, time.sleep, 0.1)
        """
        self._start(nursery, ThreadWork(worker, args, limiter, self._name), abandon_on_cancel)

    def start_soon(
        self,
        nursery: trio.Nursery,
        async_fn: Callable[[Unpack[Ts]], Awaitable[T]],
        *args: Unpack[Ts],
    ) -> None:
        """Run ``await async_fn(*args)`` in a child task of ``nursery``; then complete.

        The async counterpart of :meth:`run_in_thread`, for work that needs no thread
        (the TLS and websocket ``handshake_task`` are built on it): what ``async_fn``
        returns becomes the result and an exception it raises becomes the error; then the
        completion runs exactly once. Cancellation follows the same policy, with the work
        always "waited for" (it stops at its next await, so nothing is left running and
        ``TaskCancelled.abandoned`` is False). Returns at once.

        QEMU: none (QEMU steps async work with main-loop watches and calls
        ``qio_task_complete`` itself).

        Args:
            nursery: owns the child task; cancelling it cancels the task.
            async_fn: an async function.
            *args: its positional arguments.

        Raises:
            TypeError: ``async_fn`` is not callable, or ``nursery`` is not a nursery.
            RuntimeError: the task already ran or completed.

        Example::

            async def fetch(channel: trioqio.abc.Channel) -> bytes:
                return await channel.receive_exactly(4)

            header: trioqio.Task[bytes] = trioqio.Task(name="header")
            header.start_soon(nursery, fetch, channel)
            print(await header.wait())
        """
        self._start(nursery, AsyncWork(async_fn, args), False)

    def _begin(self, work: Work) -> None:
        if self._state is not _NEW:
            raise RuntimeError(f"{self._label()} already ran; create a new Task for new work")
        self._state = _RUNNING
        if isinstance(work, ThreadWork) and enabled():
            emit("qio_task_thread_start", task=self._label(), worker=work.fn)

    def _start(self, nursery: trio.Nursery, work: Work, abandon_on_cancel: bool) -> None:
        """Schedule ``work`` in ``nursery`` (every ``*_task`` operation comes through here)."""
        if not isinstance(nursery, trio.Nursery):  # pyright: ignore[reportUnnecessaryIsInstance]  # runtime guard for untyped callers
            raise TypeError(f"a Task needs a trio.Nursery, got {type(nursery).__name__}")
        self._begin(work)
        nursery.start_soon(self._drive, work, abandon_on_cancel, name=self._name or "trioqio.Task")

    def _in_thread(self, work: ThreadWork, tracing: bool) -> _Progress | None:
        """Wrap a thread work's function for trace events and ``report``, when needed."""
        on_progress = self._on_progress
        if not tracing and on_progress is None:
            return None  # the worker itself runs in the thread, one frame less each way
        progress = None if on_progress is None else _Progress(on_progress, self.set_error)
        worker, args, label = work.fn, work.args, self._label()

        def in_thread() -> object:
            if tracing:
                emit("qio_task_thread_run", task=label)
            try:
                if progress is not None:
                    return worker(*args, report=progress.report)
                return worker(*args)
            finally:
                if tracing:
                    emit("qio_task_thread_exit", task=label)

        work.fn, work.args = in_thread, ()
        return progress

    async def _drive(self, work: Work, abandon_on_cancel: bool) -> None:
        """Run ``work`` under the policy, record how it ended, then run the completion.

        The work's own error becomes the task's error and is not raised here; only the
        owner's cancellation (after the completion ran) and the callbacks' errors are.
        """
        tracing = enabled()
        progress = self._in_thread(work, tracing) if isinstance(work, ThreadWork) else None
        value, error, cancelled = await _run(work, abandon_on_cancel)
        if progress is not None:
            progress.finish()
        if value is not _NO_RESULT:
            self._result = value
        if cancelled is not None:
            stop = TaskCancelled(
                f"{self._label()} was cancelled", abandoned=abandon_on_cancel and work.started
            )
            if error is not None:
                stop.__cause__ = error  # a waited-for worker's own error
            self.set_error(stop)
        elif error is not None:
            self.set_error(error)
        if tracing and isinstance(work, ThreadWork):  # async work traces new and complete only
            emit("qio_task_thread_result", task=self._label(), error=self._first_error)
        await self._run_completion(tracing)
        if cancelled is not None:
            raise cancelled


#: The type of ``Task(on_complete=...)``, a plain or async ``on_complete(task)``.
#:
#: Its parameter's type is the task's result type, so a typed callback is all a type
#: checker needs to know what ``task.result`` and ``await task.wait()`` give.
#:
#: Example::
#:
#:     def done(task: trioqio.Task[int]) -> None:
#:         print(task.result + 1)
#:
#:     callback: trioqio.CompletionCallback[int] = done
CompletionCallback = Callable[[Task[T]], object]

#: What ``Task(on_progress=...)`` and ``run_in_thread(on_progress=...)`` take.
#:
#: ``on_progress(value)`` is a plain function (an async one is refused with
#: :class:`TypeError`): it runs in the Trio thread like a ``run_sync_soon`` callback, so
#: it may set events or ``send_nowait`` on a memory channel but cannot await.
#:
#: Example::
#:
#:     def show(done_bytes: int) -> None:
#:         print(f"{done_bytes:,} bytes hashed")
#:
#:     callback: trioqio.ProgressCallback = show
ProgressCallback = Callable[[Any], object]


@overload
async def run_in_thread(
    worker: Callable[[Unpack[Ts]], T],
    *args: Unpack[Ts],
    limiter: trio.CapacityLimiter | None = None,
    abandon_on_cancel: bool = False,
    on_progress: None = None,
    name: str | None = None,
) -> T: ...


@overload
async def run_in_thread(
    # Not ReportingWorker[*Ts, T]: mypy cannot infer T through a callback protocol with a
    # TypeVarTuple (it says Never), so with on_progress the worker's arguments go unchecked.
    worker: Callable[..., T],
    *args: object,
    limiter: trio.CapacityLimiter | None = None,
    abandon_on_cancel: bool = False,
    on_progress: ProgressCallback,
    name: str | None = None,
) -> T: ...


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
    mean for :meth:`Task.run_in_thread`, and so does cancellation, except that it is the
    caller that is cancelled: this raises :class:`trio.Cancelled` (after a waited-for
    worker finished; the worker's own exception, if any, is its ``__context__``).

    Args:
        worker: a plain (blocking) function; with ``on_progress`` it also takes the
            ``report`` keyword.
        *args: its positional arguments.
        limiter: bounds concurrent workers.
        abandon_on_cancel: stop waiting for the worker when cancelled.
        on_progress: receives values the worker passes to its ``report`` keyword.
        name: the task's name in traces and the thread's name.

    Returns:
        What the worker returned.

    Raises:
        BaseException: what the worker raised, unwrapped.
        trio.Cancelled: the caller was cancelled before the worker finished.

    Example::

        digest = await trioqio.run_in_thread(hashlib.sha256, data)
    """
    if on_progress is None and not enabled():
        # Nobody can observe a Task object (no on_complete, no trace, no progress): the
        # same work and policy without one.
        value, error, cancelled = await _run(
            ThreadWork(worker, args, limiter, name), abandon_on_cancel
        )
        if cancelled is not None:
            raise cancelled
        if error is not None:
            raise error
        return cast(T, value)
    task: Task[T] = Task(name=name, on_progress=on_progress)
    work = ThreadWork(worker, args, limiter, name)
    task._begin(work)  # pyright: ignore[reportPrivateUsage]
    # Driven in this very Trio task; it raises the caller's cancellation itself.
    await task._drive(work, abandon_on_cancel)  # pyright: ignore[reportPrivateUsage]
    return task._unwrap()  # pyright: ignore[reportPrivateUsage]
