"""Trace events named after QEMU's ``io/trace-events``.

QEMU declares every trace point of its ``io/`` subsystem once, in ``io/trace-events``,
compiles them into the binary (``trace_qio_task_new(...)``) and lets a backend (log,
ftrace, dtrace) collect them. trioqio declares its events once too, in :data:`EVENTS`
(same names, same order as QEMU's file), and emits them as :class:`TraceEvent` values. By
default they go to the ``trioqio`` logger at DEBUG; :func:`subscribe` adds a callback that
sees every event as it happens, whatever the logging level.

Differences from QEMU: events carry the emitting thread's id (QEMU's log backend prints
the pid only), and named fields instead of a printf format. QEMU's build refuses a trace
call that its file does not declare; here :func:`emit` refuses it with ``ValueError``,
and ``tests/test_trace_events.py`` walks every ``emit`` call in the package and drives
every declared event.
"""

from __future__ import annotations

import logging
import threading
import time
import types
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from typing import Any, Final, NoReturn

import attrs

__all__ = ["EVENTS", "TraceEvent", "emit", "enabled", "subscribe", "subscribed"]


@attrs.frozen
class _Declared:
    """One trace point: its name, fields, and a line for the docs' event table."""

    name: str
    fields: tuple[str, ...]
    source: str  # the QEMU file of its section in io/trace-events
    what: str
    qemu: bool = True  # False: trioqio's own, with no QEMU counterpart


# QEMU's io/trace-events, in its order, with the events trioqio emits. trioqio's own events
# (qemu=False) sit at the end of their section. A name here is a promise: tests/test_trace_events.py
# drives each one. QEMU events with no trioqio counterpart are listed (with the reason)
# by docs/conf.py from _NOT_EMITTED.
_DECLARATIONS: Final = (
    # io/task.c
    _Declared("qio_task_new", ("task", "source"), "task.c", "a Task is created"),
    _Declared("qio_task_complete", ("task", "error"), "task.c", "the completion is about to run"),
    _Declared(
        "qio_task_thread_start", ("task", "worker"), "task.c", "a worker thread is requested"
    ),
    _Declared("qio_task_thread_run", ("task",), "task.c", "the worker starts (worker thread)"),
    _Declared("qio_task_thread_exit", ("task",), "task.c", "the worker ended (worker thread)"),
    _Declared(
        "qio_task_thread_result",
        ("task", "error"),
        "task.c",
        "the worker's outcome reached the Trio thread",
    ),
    # io/channel-socket.c
    _Declared("qio_channel_socket_new", ("channel", "fd"), "channel-socket.c", "a socket channel"),
    _Declared(
        "qio_channel_socket_new_fd",
        ("channel", "fd"),
        "channel-socket.c",
        "a socket channel adopts an fd (``from_fd``)",
    ),
    _Declared(
        "qio_channel_socket_connect_sync",
        ("channel", "address"),
        "channel-socket.c",
        "a connect attempt to one address starts",
    ),
    _Declared(
        "qio_channel_socket_connect_async",
        ("channel", "address"),
        "channel-socket.c",
        "``connect_task`` starts its worker",
    ),
    _Declared(
        "qio_channel_socket_connect_fail",
        ("channel", "address"),
        "channel-socket.c",
        "a connect attempt failed",
    ),
    _Declared(
        "qio_channel_socket_connect_complete",
        ("channel", "fd"),
        "channel-socket.c",
        "connected",
    ),
    _Declared(
        "qio_channel_socket_listen_sync",
        ("addr", "num"),
        "channel-socket.c",
        "listening on one address starts (``num``: the backlog)",
    ),
    _Declared("qio_channel_socket_listen_fail", ("addr",), "channel-socket.c", "listening failed"),
    _Declared(
        "qio_channel_socket_listen_complete",
        ("addr", "fd"),
        "channel-socket.c",
        "listening",
    ),
    _Declared("qio_channel_socket_accept", ("channel",), "channel-socket.c", "an accept starts"),
    _Declared(
        "qio_channel_socket_accept_fail", ("channel",), "channel-socket.c", "an accept failed"
    ),
    _Declared(
        "qio_channel_socket_accept_complete",
        ("channel", "fd"),
        "channel-socket.c",
        "a client was accepted",
    ),
    # io/channel-file.c
    _Declared(
        "qio_channel_file_new_fd", ("ioc", "fd"), "channel-file.c", "a file channel adopts an fd"
    ),
    _Declared(
        "qio_channel_file_new_path",
        ("ioc", "path", "flags", "mode", "fd"),
        "channel-file.c",
        "``open_file`` opened a path",
    ),
    # io/channel-tls.c
    _Declared(
        "qio_channel_tls_new_client",
        ("ioc", "master", "hostname"),
        "channel-tls.c",
        "``TLSChannel.client``",
    ),
    _Declared(
        "qio_channel_tls_new_server",
        ("ioc", "master", "acl"),
        "channel-tls.c",
        "``TLSChannel.server``",
    ),
    _Declared("qio_channel_tls_handshake_start", ("ioc",), "channel-tls.c", "the handshake starts"),
    _Declared(
        "qio_channel_tls_handshake_fail",
        ("ioc", "error"),
        "channel-tls.c",
        "the handshake failed (``error``: the message)",
    ),
    _Declared(
        "qio_channel_tls_handshake_complete", ("ioc",), "channel-tls.c", "the handshake finished"
    ),
    _Declared("qio_channel_tls_bye_start", ("ioc",), "channel-tls.c", "``bye()`` starts"),
    _Declared(
        "qio_channel_tls_bye_fail", ("ioc",), "channel-tls.c", "close_notify could not be sent"
    ),
    _Declared("qio_channel_tls_bye_complete", ("ioc",), "channel-tls.c", "close_notify sent"),
    _Declared(
        "qio_channel_tls_credentials_allow",
        ("ioc", "dn"),
        "channel-tls.c",
        "the peer's certificate passed the ACL",
    ),
    _Declared(
        "qio_channel_tls_credentials_deny",
        ("ioc", "dn"),
        "channel-tls.c",
        "the ACL refused the peer (``dn`` None: no certificate)",
    ),
    # io/channel-websock.c
    _Declared(
        "qio_channel_websock_new_server",
        ("ioc", "master"),
        "channel-websock.c",
        "``WebsockChannel.server``",
    ),
    _Declared(
        "qio_channel_websock_handshake_start", ("ioc",), "channel-websock.c", "the handshake starts"
    ),
    _Declared(
        "qio_channel_websock_handshake_pending",
        ("ioc", "buffered"),
        "channel-websock.c",
        "the request is incomplete; waiting for more bytes",
    ),
    _Declared(
        "qio_channel_websock_handshake_reply",
        ("ioc", "status"),
        "channel-websock.c",
        "the HTTP reply is sent (``status``: 101 or the refusal's)",
    ),
    _Declared(
        "qio_channel_websock_handshake_fail",
        ("ioc", "msg"),
        "channel-websock.c",
        "the handshake failed",
    ),
    _Declared(
        "qio_channel_websock_handshake_complete",
        ("ioc",),
        "channel-websock.c",
        "the handshake finished",
    ),
    _Declared(
        "qio_channel_websock_encode",
        ("ioc", "op", "payloadlen"),
        "channel-websock.c",
        "a frame is encoded",
    ),
    _Declared(
        "qio_channel_websock_close",
        ("ioc", "code", "peer_code"),
        "channel-websock.c",
        "a close frame is sent (``code``) or received (``peer_code``); each emission "
        "carries one of the two",
    ),
    # io/channel-command.c
    _Declared(
        "qio_channel_command_new_pid",
        ("ioc", "writefd", "readfd", "pid"),
        "channel-command.c",
        "a command channel wraps the child",
    ),
    _Declared(
        "qio_channel_command_new_spawn",
        ("binary", "flags"),
        "channel-command.c",
        "``open_command`` spawns the child",
    ),
    _Declared(
        "qio_channel_command_abort",
        ("ioc", "pid"),
        "channel-command.c",
        "the child is terminated (SIGTERM, then SIGKILL)",
    ),
    _Declared(
        "qio_channel_command_wait",
        ("ioc", "pid", "ret", "status"),
        "channel-command.c",
        "the child was reaped",
    ),
    # io/net-listener.c
    _Declared(
        "qio_net_listener_watch",
        ("listener", "func", "extra"),
        "net-listener.c",
        "an accept loop starts (``extra``: why)",
    ),
    _Declared(
        "qio_net_listener_unwatch",
        ("listener", "func", "extra"),
        "net-listener.c",
        "an accept loop stops (``extra``: why)",
    ),
    _Declared(
        "qio_net_listener_callback",
        ("listener", "func"),
        "net-listener.c",
        "a client is handed to the handler",
    ),
    _Declared(
        "qio_net_listener_accept_backoff",
        ("listener", "errno"),
        "net-listener.c",
        "accept failed with a retried errno (EMFILE, ...); backing off",
        qemu=False,
    ),
)

#: Every trace event trioqio can emit, declared once (QEMU declares its own once, in
#: ``io/trace-events``): the event's name mapped to its field names, in QEMU's order.
#: :func:`emit` refuses a name that is not here, or a field its entry does not list.
#: Read-only.
#:
#: Example::
#:
#:     fields = trioqio.trace.EVENTS["qio_task_complete"]  # ("task", "error")
#:     for name, fields in trioqio.trace.EVENTS.items():
#:         print(name, ", ".join(fields))
EVENTS: Final[Mapping[str, tuple[str, ...]]] = types.MappingProxyType(
    {event.name: event.fields for event in _DECLARATIONS}
)
_FIELD_SETS: Final[dict[str, frozenset[str]]] = {
    event.name: frozenset(event.fields) for event in _DECLARATIONS
}

# QEMU trace points with no trioqio event, and why (the docs' event table lists them).
_NOT_EMITTED: Final = (
    ("qio_task_thread_source_attach", "no GSource: the completion runs in the owner's task"),
    ("qio_task_thread_source_cancel", "no GSource: the completion runs in the owner's task"),
    ("qio_channel_null_new", "a NullChannel has nothing to trace"),
    ("qio_channel_socket_listen_async", "``NetListener.open`` never blocks the Trio thread"),
    ("qio_channel_socket_dgram_*", "channels are byte streams; no datagram sockets"),
    ("qio_channel_tls_handshake_pending", "the ssl module retries internally; no GSource"),
    ("qio_channel_tls_handshake_cancel", "cancellation is Trio's; the Task reports it"),
    ("qio_channel_tls_bye_pending", "the ssl module retries internally; no GSource"),
    ("qio_channel_tls_bye_cancel", "cancellation is Trio's"),
    ("qio_channel_websock_http_greeting", "``handshake_pending`` and ``_reply`` carry it"),
    ("qio_channel_websock_http_request", "``handshake_reply`` carries the outcome"),
    (
        "qio_channel_websock_header_partial_decode",
        "the sans-IO FrameDecoder (_websock_frames.py) decodes frames, untraced",
    ),
    (
        "qio_channel_websock_header_full_decode",
        "the sans-IO FrameDecoder (_websock_frames.py) decodes frames, untraced",
    ),
    (
        "qio_channel_websock_payload_decode",
        "the sans-IO FrameDecoder (_websock_frames.py) decodes frames, untraced",
    ),
)

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
    break the operation being traced. Only events declared in :data:`EVENTS` can be
    emitted, with the fields declared there (an event may leave a declared field out).

    Args:
        name: the QEMU trace point's name, a key of :data:`EVENTS`.
        **fields: event-specific values, named as :data:`EVENTS` lists them.

    Raises:
        ValueError: ``name`` is not declared, or a field is not declared for it, while
            tracing is on (with nobody listening, emit returns before looking). A failing
            subscriber is logged, not propagated.

    Example::

        trioqio.trace.emit("qio_task_new", task="mine", source=None)
    """
    subscribers = _subscribers
    log = logger.isEnabledFor(logging.DEBUG)
    if not subscribers and not log:
        return
    # Checked once someone listens, so tracing off costs nothing more; the tests check
    # every call site with tracing on and by reading the code (tests/test_trace_events.py).
    declared = _FIELD_SETS.get(name)
    if declared is None or not fields.keys() <= declared:
        _refuse(name, fields)
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


def _refuse(name: str, fields: Mapping[str, object]) -> NoReturn:
    if name not in EVENTS:
        raise ValueError(f"trace event {name!r} is not declared in trioqio.trace.EVENTS")
    extra = sorted(set(fields) - _FIELD_SETS[name])
    raise ValueError(
        f"trace event {name!r} has no field {', '.join(extra)} "
        f"(trioqio.trace.EVENTS declares {', '.join(EVENTS[name]) or 'none'})"
    )


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

        events: list[trioqio.trace.TraceEvent] = []
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
