"""Cancellation at random points: Tasks, listener handlers, handshakes and migrations.

Hypothesis chooses what runs and where the cancellation lands (a number of scheduler
checkpoints, or a short real delay where the work is real I/O). The properties, checked
after every example (the autouse fixtures check them again per test):

- every Task completes exactly once, with the outcome its history allows;
- no worker thread outlives its abandon rule: a waited worker has finished when its
  nursery exits, an abandoned one finishes once released;
- no descriptor is left open (ResourceWarning is an error in this suite);
- a NetListener's counters add up: accepted == ended + finished + cut, no client is left
  after ``aclose`` (cancelled or not) and ``is_connected`` is False.
"""

from __future__ import annotations

import gc
import os
import ssl
import threading
import time
import uuid as uuid_module
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import trio
import trustme
from _scale import size
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import trioqio
from trioqio import HandshakeError, TaskCancelled
from trioqio.migration._destination import DestinationOptions, run_destination
from trioqio.migration._image import GeneratedImage
from trioqio.migration._protocol import ResultStatus
from trioqio.migration._source import SourceOptions, run_source

PROPERTY = settings(
    max_examples=size(full=200, ci=25),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
HOST = "localhost"


def _fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _busy_threads(ignore: set[int | None]) -> list[str]:
    # As tests/conftest.py: Trio's idle cached workers are named "Trio thread N".
    return [
        thread.name
        for thread in threading.enumerate()
        if thread is not threading.main_thread()
        and not thread.name.startswith("Trio thread ")
        and thread.ident not in ignore
    ]


@contextmanager
def no_leaks() -> Iterator[None]:
    """Per example: no descriptor opened inside is left open, no worker left running."""
    gc.collect()
    before = _fds()
    ignore = {thread.ident for thread in threading.enumerate()}
    yield
    deadline = time.monotonic() + 10
    while True:
        gc.collect()
        leaked = {fd for fd in _fds() - before if _still_open(fd)}
        busy = _busy_threads(ignore)
        if (not leaked and not busy) or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    assert not busy, f"worker threads still running: {busy}"
    assert not leaked, f"descriptors left open: {sorted(leaked)}"


def _still_open(fd: int) -> bool:
    try:
        os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False  # the listdir's own descriptor, closed meanwhile
    return True


# -- (a) Tasks ------------------------------------------------------------------------------

#: How a worker's gate is opened: before the cancel and awaited ("done"), before the cancel
#: without waiting ("race"), or only after the cancel ("held").
_TIMINGS = ("done", "race", "held")
_task_specs = st.lists(
    st.tuples(st.booleans(), st.booleans(), st.sampled_from(_TIMINGS)), min_size=1, max_size=8
)


@PROPERTY
@given(_task_specs, st.integers(0, 30), st.integers(0, 10))
async def test_tasks_cancelled_at_random_points(
    specs: list[tuple[bool, bool, str]], cancel_after: int, release_after: int
) -> None:
    """specs: (abandon_on_cancel, worker raises, timing) per task."""
    count = len(specs)
    gates = [threading.Event() for _ in specs]
    started = [threading.Event() for _ in specs]
    finished = [threading.Event() for _ in specs]
    completions = [0] * count
    completion_threads: set[int] = set()

    def worker(index: int) -> int:
        started[index].set()
        assert gates[index].wait(30), "a gate was never opened"
        finished[index].set()
        if specs[index][1]:
            raise ValueError(index)
        return index

    def make_callback(index: int) -> Callable[[trioqio.Task[int]], None]:
        def done(task: trioqio.Task[int]) -> None:
            completions[index] += 1
            completion_threads.add(threading.get_ident())

        return done

    tasks: list[trioqio.Task[int]] = []
    cancelled = trio.Event()
    with no_leaks():
        with trio.fail_after(30):
            async with trio.open_nursery() as outer:

                async def release_waited() -> None:
                    # A waited worker must be released for its nursery to exit at all.
                    await cancelled.wait()
                    for _ in range(release_after):
                        await trio.lowlevel.checkpoint()
                    for index, (abandon, _, timing) in enumerate(specs):
                        if timing == "held" and not abandon:
                            gates[index].set()

                outer.start_soon(release_waited)
                limiter = trio.CapacityLimiter(count)
                async with trio.open_nursery() as nursery:
                    for index, (abandon, _, timing) in enumerate(specs):
                        task: trioqio.Task[int] = trioqio.Task(
                            on_complete=make_callback(index), name=f"cancel-{index}"
                        )
                        tasks.append(task)
                        task.run_in_thread(
                            nursery, worker, index, limiter=limiter, abandon_on_cancel=abandon
                        )
                        if timing != "held":
                            gates[index].set()
                    for index, (_, _, timing) in enumerate(specs):
                        if timing == "done":
                            with pytest.raises(ValueError) if specs[index][1] else _nothing():
                                await tasks[index].wait()
                    for _ in range(cancel_after):
                        await trio.lowlevel.checkpoint()
                    nursery.cancel_scope.cancel()
                    cancelled.set()
                # The nursery has exited: every waited worker that started has finished
                # (a cancel that lands before the thread starts means it never runs).
                for index, (abandon, _, timing) in enumerate(specs):
                    if not abandon:
                        assert finished[index].is_set() or not started[index].is_set(), (
                            f"waited worker {index} still runs"
                        )
                    if abandon and timing == "held":
                        assert not finished[index].is_set()  # abandoned, still blocked
                        gates[index].set()  # released now: it must finish (no_leaks waits)
    # Every task completed exactly once, in the Trio thread, with a coherent outcome.
    assert completions == [1] * count
    assert completion_threads == {threading.get_ident()}
    for index, (task, (abandon, raises, timing)) in enumerate(zip(tasks, specs, strict=True)):
        assert task.done
        error = task.error
        if timing == "done":
            if raises:
                assert isinstance(error, ValueError)
            else:
                assert error is None
                assert task.result == index
        elif timing == "held":
            assert isinstance(error, TaskCancelled)
            # Abandoned only if its thread had started (a cancel can land before the
            # thread does: then nothing ran); never for a waited worker. no_leaks has
            # waited for every started worker, so started[index] is final here.
            assert error.abandoned == (abandon and started[index].is_set())
        else:  # a race: finished first, or cancelled
            assert error is None or isinstance(error, (ValueError, TaskCancelled))
        if isinstance(error, TaskCancelled) and not error.abandoned and started[index].is_set():
            # A waited worker's own outcome is kept under the cancellation.
            assert finished[index].is_set()
            if raises:
                assert isinstance(error.__cause__, ValueError)
            else:
                assert task.result == index
        event(f"task {timing}: {type(error).__name__ if error else 'result'}")
        with pytest.raises(type(error)) if error is not None else _nothing():
            await task.wait()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# -- (b) NetListener handlers and aclose ----------------------------------------------------

_MODES = ("return", "echo", "forever", "raise")


@PROPERTY
@given(
    st.lists(st.tuples(st.sampled_from(_MODES), st.booleans()), max_size=10),
    st.sampled_from([None, 2, 5]),
    st.sampled_from([0.0, 0.0005, 0.005, 0.05]),
    st.integers(0, 30),
    st.one_of(st.none(), st.integers(0, 20)),
    st.booleans(),
)
async def test_listener_cancelled_at_random_points(
    clients: list[tuple[str, bool]],
    max_clients: int | None,
    grace: float,
    close_after: int,
    cancel_close_after: int | None,
    cancel_handlers: bool,
) -> None:
    """clients: (handler mode, client sends EOF); aclose itself may be cancelled too."""
    entered = 0
    ended = 0
    errors: list[Exception] = []
    handler_scopes: list[trio.CancelScope] = []

    async def handler(channel: trioqio.SocketChannel) -> None:
        nonlocal entered, ended
        entered += 1
        try:
            data = await channel.receive_some(1)
            mode = _MODES[data[0]] if data else "return"
            if mode == "echo":
                await channel.send_all(data)
                while data := await channel.receive_some():
                    await channel.send_all(data)
            elif mode == "forever":
                with trio.CancelScope() as scope:
                    handler_scopes.append(scope)
                    await trio.sleep_forever()
            elif mode == "raise":
                raise ValueError("handler failed on purpose")
            else:
                await channel.send_all(b"ok")
        finally:
            ended += 1

    with no_leaks(), trio.fail_after(30):
        streams: list[trio.SocketStream] = []
        try:
            async with trioqio.NetListener(
                name="cancel", max_clients=max_clients, on_handler_error=errors.append
            ) as listener:
                await listener.open("tcp:127.0.0.1:0")
                [address] = listener.addresses
                assert isinstance(address, trioqio.InetAddress)
                listener.set_client_func(handler)
                for mode, eof in clients:
                    stream = await trio.open_tcp_stream(address.host, address.port)
                    streams.append(stream)
                    await stream.send_all(bytes([_MODES.index(mode)]))
                    if eof:
                        await stream.send_eof()
                for _ in range(close_after):
                    await trio.lowlevel.checkpoint()
                if cancel_handlers:
                    for scope in handler_scopes:
                        scope.cancel()
                before = listener.statistics()
                # A handler that returned may still be closing its channel: counted
                # as running until that is done.
                assert before.accepted - before.running <= ended <= before.accepted
                assert before.running == len(listener.clients)
                async with trio.open_nursery() as side:
                    with trio.CancelScope() as close_scope:
                        if cancel_close_after is not None:

                            async def cancel_close(after: int) -> None:
                                for _ in range(after):
                                    await trio.lowlevel.checkpoint()
                                close_scope.cancel()

                            side.start_soon(cancel_close, cancel_close_after)
                        await listener.aclose(grace=grace)
                report = listener.shutdown_report
                assert report is not None, "aclose ended without a report"
                after = listener.statistics()
                assert after.running == 0
                assert listener.clients == ()
                assert not listener.is_connected
                assert after.accepted == before.accepted == entered == ended
                # accepted == ended before the close + finished + cut
                assert report.finished + report.cut == before.running
                event(f"listener: aclose cancelled={close_scope.cancelled_caught}")
                event(f"listener: cut {min(report.cut, 3)}+, finished {min(report.finished, 3)}+")
                assert after.handler_errors == len(errors)
                assert all(isinstance(exc, ValueError) for exc in errors)
                with pytest.raises(trio.ClosedResourceError):
                    await listener.open("tcp:127.0.0.1:0")
        finally:
            for stream in streams:
                await stream.aclose()


# -- (c) TLS and websocket handshakes -------------------------------------------------------


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@PROPERTY
@given(
    st.sampled_from(["tls", "websocket"]),
    st.integers(0, 12) | st.integers(0, 80),
    st.lists(st.integers(1, 64), min_size=1, max_size=8),
)
async def test_handshakes_cancelled_at_random_points(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    kind: str,
    cancel_after: int,
    chunks: list[int],
) -> None:
    """Cancel the nursery owning both ends of a handshake after ``cancel_after`` checkpoints."""
    server_ctx, client_ctx = contexts
    completions: list[BaseException | None] = []

    def done(task: trioqio.Task[object]) -> None:
        completions.append(task.error)

    with no_leaks():
        a, b = trio.socket.socketpair()
        client_end, server_end = trioqio.SocketChannel(a), trioqio.SocketChannel(b)
        server: trioqio.TLSChannel | trioqio.WebsockChannel
        client_tls: trioqio.TLSChannel | None = None
        if kind == "tls":
            server = trioqio.TLSChannel.server(server_end, server_ctx, handshake_timeout=10)
            client_tls = trioqio.TLSChannel.client(client_end, client_ctx, hostname=HOST)
        else:
            server = trioqio.WebsockChannel.server(server_end, handshake_timeout=10)
        try:
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    task = server.handshake_task(nursery, done)  # type: ignore[arg-type]
                    if client_tls is not None:
                        nursery.start_soon(client_tls.handshake)
                    else:

                        async def send_request() -> None:
                            # The request in pieces, with checkpoints between them.
                            rest = UPGRADE
                            for n in chunks:
                                await client_end.send_all(rest[:n])
                                rest = rest[n:]
                                await trio.lowlevel.checkpoint()
                            await client_end.send_all(rest)

                        nursery.start_soon(send_request)
                    for _ in range(cancel_after):
                        await trio.lowlevel.checkpoint()
                    nursery.cancel_scope.cancel()
            assert task.done
            assert len(completions) == 1, f"completed {len(completions)} times"
            error = completions[0]
            event(f"{kind} handshake: {type(error).__name__ if error else 'done'}")
            assert error is None or isinstance(error, (TaskCancelled, HandshakeError))
            if error is None:
                assert server.handshake_done
                assert await task.wait() is server
            else:
                with pytest.raises(type(error)):
                    await task.wait()
        finally:
            await server.aclose()
            if client_tls is not None:
                await client_tls.aclose()
            await client_end.aclose()
    # Closed means closed, however the handshake ended.
    with pytest.raises(trio.ClosedResourceError):
        await server.send_all(b"x")


# -- (d) migrations ---------------------------------------------------------------------------


@settings(
    max_examples=size(full=60, ci=10),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.integers(1, 4),
    st.sampled_from([64 << 10, 256 << 10, (512 << 10) + 123]),
    st.floats(0, 0.15),
)
async def test_migration_cancelled_at_random_points(
    channels: int, image_size: int, cancel_at: float
) -> None:
    """Run source and destination in one process; cancel both at a random moment."""
    outcome: dict[str, object] = {}
    with no_leaks(), trio.move_on_after(cancel_at) as scope, trio.fail_after(30):
        async with trio.open_nursery() as nursery:

            async def destination(
                task_status: trio.TaskStatus[list[trioqio.SocketAddress]],
            ) -> None:
                options = DestinationOptions(address="tcp:127.0.0.1:0", backlog=channels)
                outcome["destination"] = await run_destination(options, task_status=task_status)

            addresses = await nursery.start(destination)
            outcome["source"] = await run_source(
                SourceOptions(
                    address=addresses[0],
                    image=GeneratedImage(size=image_size, seed=7),
                    channels=channels,
                    uuid=uuid_module.uuid4().bytes,
                    packet_pages=16,
                )
            )
    event(f"migration cancelled={scope.cancelled_caught}")
    if not scope.cancelled_caught:
        # It finished before the cancel: it must have finished right.
        source = outcome["source"]
        assert source.result.status is ResultStatus.MATCH  # type: ignore[attr-defined]
        assert source.transferred == image_size  # type: ignore[attr-defined]
