"""Trace events named after QEMU's ``io/trace-events``.

QEMU compiles trace points into the binary (``trace_qio_task_new(...)``) and lets a backend
(log, ftrace, dtrace) collect them. trioqio emits the same names as :class:`TraceEvent`
values. By default they go to the ``trioqio`` logger at DEBUG; :func:`subscribe` adds a
callback that sees every event as it happens, whatever the logging level.

Differences from QEMU: events carry the emitting thread's id (QEMU's log backend prints
the pid only), and a field mapping instead of a printf format.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs

__all__ = ["TraceEvent", "emit", "enabled", "subscribe", "subscribed"]

logger = logging.getLogger("trioqio")

TraceCallback = Callable[["TraceEvent"], object]

# Copy-on-write tuple: readers in worker threads never see a half-updated list.
_subscribers: tuple[TraceCallback, ...] = ()
_lock = threading.Lock()


@attrs.frozen(kw_only=True)
class TraceEvent:
    """One trace event.

    Attributes:
        name: the QEMU trace point's name, e.g. ``"qio_task_complete"``.
        thread_id: ``threading.get_ident()`` of the thread that emitted it.
        thread_name: that thread's name.
        time: ``time.monotonic()`` when it was emitted.
        fields: event-specific values (``task``, ``listener``, ``channel``, ...).

    Example::

        def show(event: trioqio.trace.TraceEvent) -> None:
            print(event.name, event.thread_id, dict(event.fields))
    """

    name: str
    thread_id: int
    thread_name: str
    time: float
    fields: Mapping[str, Any]

    def __str__(self) -> str:
        values = " ".join(f"{key}={value!r}" for key, value in self.fields.items())
        return f"{self.name} thread={self.thread_id} {values}".rstrip()


def enabled() -> bool:
    """Return True when an event emitted now would reach anyone.

    Hot paths call this first so that building an event costs nothing when nobody listens.

    Returns:
        True if a subscriber exists or the ``trioqio`` logger is enabled for DEBUG.

    Raises nothing.

    Example::

        if trioqio.trace.enabled():
            ...
    """
    return bool(_subscribers) or logger.isEnabledFor(logging.DEBUG)


def emit(name: str, **fields: Any) -> None:
    """Emit the trace event ``name`` from the current thread.

    Subscribers run synchronously in the emitting thread, which may be a worker thread;
    an exception a subscriber raises is logged and otherwise ignored, so tracing can never
    break the operation being traced.

    Args:
        name: the QEMU trace point's name.
        **fields: event-specific values.

    Raises nothing: a failing subscriber is logged, not propagated.

    Example::

        trioqio.trace.emit("my_event", answer=42)
    """
    subscribers = _subscribers
    log = logger.isEnabledFor(logging.DEBUG)
    if not subscribers and not log:
        return
    thread = threading.current_thread()
    event = TraceEvent(
        name=name,
        thread_id=threading.get_ident(),
        thread_name=thread.name,
        time=time.monotonic(),
        fields=fields,
    )
    if log:
        logger.debug("%s", event)
    for callback in subscribers:
        try:
            callback(event)
        except Exception:
            logger.exception("trace subscriber %r failed on %s", callback, name)


def subscribe(callback: TraceCallback) -> Callable[[], None]:
    """Call ``callback(event)`` for every trace event until unsubscribed.

    The callback runs in the thread that emitted the event (the Trio thread, or a Task's
    worker thread), so it must be thread-safe and quick.

    Args:
        callback: receives each :class:`TraceEvent`.

    Returns:
        A function that removes the subscription (calling it twice is harmless).

    Raises nothing.

    Example::

        events = []
        unsubscribe = trioqio.trace.subscribe(events.append)
        ...
        unsubscribe()
    """
    global _subscribers
    with _lock:
        _subscribers = (*_subscribers, callback)

    def unsubscribe() -> None:
        global _subscribers
        with _lock:
            remaining = list(_subscribers)
            if callback in remaining:
                remaining.remove(callback)
            _subscribers = tuple(remaining)

    return unsubscribe


@contextmanager
def subscribed(callback: TraceCallback) -> Generator[None, None, None]:
    """Subscribe ``callback`` for the duration of a ``with`` block.

    Args:
        callback: receives each :class:`TraceEvent`.

    Yields:
        Nothing; the subscription ends with the block.

    Raises nothing of its own: an exception from the block propagates after the
    subscription ends.

    Example::

        with trioqio.trace.subscribed(print):
            await trioqio.run_in_thread(sum, [1, 2])
    """
    unsubscribe = subscribe(callback)
    try:
        yield
    finally:
        unsubscribe()
