"""NetListener's logic on in-memory listeners, under ``autojump_clock`` (no kernel sockets).

trio tests ``serve_listeners`` this way: the listener under test serves
:class:`trioqio.testing.MemoryListener`\\ s, clients are in-memory stream pairs, time is
virtual, and "nothing happened" is proven with ``wait_all_tasks_blocked`` instead of a
sleep. Real-socket behaviour (ports, UNIX paths, IPv6, the starvation regressions over
TCP and UNIX) is in ``test_listener.py``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import trioqio
from trioqio import NetListener
from trioqio.testing import MemoryListener, MemoryStream


class Recorder:
    """A handler that records each stream, replies b"ok", then waits for its gate."""

    def __init__(self) -> None:
        self.streams: list[Any] = []
        self.gates: list[trio.Event] = []
        self.running = 0
        self.peak = 0
        self.done = 0

    async def __call__(self, stream: Any) -> None:
        gate = trio.Event()
        self.streams.append(stream)
        self.gates.append(gate)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await stream.send_all(b"ok")
            await gate.wait()
        finally:
            self.running -= 1
            self.done += 1

    def release(self, index: int) -> None:
        self.gates[index].set()

    def release_all(self) -> None:
        for gate in self.gates:
            gate.set()


async def reply(client: MemoryStream) -> bytes:
    """Read what the server sent until it closed its end."""
    chunks = [bytes(chunk) async for chunk in client]
    return b"".join(chunks)


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[Any], Awaitable[object]] | None, memory: MemoryListener, **options: Any
) -> AsyncIterator[NetListener]:
    """An entered NetListener serving ``memory`` with ``handler``."""
    async with NetListener(**options) as listener:
        listener.add_listener(memory)
        listener.set_client_func(handler)
        yield listener


# -- dispatch --------------------------------------------------------------------------------


async def test_each_client_gets_the_stream_accept_returned_and_it_is_closed_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[Any] = []

    async def handler(stream: Any) -> None:
        seen.append(stream)
        await stream.send_all(b"ok")

    memory = MemoryListener()
    async with NetListener(name="mem") as listener:
        listener.add_listener(memory)
        assert listener.listeners == [memory]
        assert listener.addresses == []  # an in-memory listener has no socket address
        assert listener.channels == []
        assert listener.is_connected
        listener.set_client_func(handler)
        for _ in range(3):
            client = await memory.connect()
            assert await reply(client) == b"ok"
            await client.aclose()
        assert listener.statistics().accepted == 3
    assert len(seen) == 3
    assert all(isinstance(stream, trio.StapledStream) for stream in seen)
    for stream in seen:
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"x")
    assert memory.closed  # leaving the block closed the listener it served


async def test_leaving_the_block_closes_every_listener_and_cancels_handlers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = MemoryListener(), MemoryListener()
    handler = Recorder()
    async with NetListener() as listener:
        listener.add_listener(first)
        listener.add_listener(second)
        listener.set_client_func(handler)
        client = await first.connect()
        await settle()
        assert handler.running == 1
    assert handler.running == 0
    assert handler.done == 1
    assert first.closed
    assert second.closed
    assert await reply(client) == b"ok"  # then EOF: the handler's stream was closed
    await client.aclose()
    with pytest.raises(ConnectionRefusedError):
        await second.connect()


# -- the max_clients budget ------------------------------------------------------------------


async def test_budget_is_one_across_listeners_and_an_idle_listener_holds_no_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listeners = [MemoryListener() for _ in range(3)]
    handler = Recorder()
    async with NetListener(max_clients=2) as listener:
        for memory in listeners:
            listener.add_listener(memory)
        listener.set_client_func(handler)
        # Three idle listeners: each accept loop waits and holds nothing.
        c1 = await listeners[0].connect()
        c2 = await listeners[1].connect()
        await settle()
        assert handler.running == 2
        c3 = await listeners[2].connect()
        await settle()
        # The budget is spent: every loop is paused, c3 waits unaccepted in its backlog.
        assert handler.running == 2
        assert listeners[2].waiting == 1
        assert listener.statistics().pending == 0
        handler.release(0)
        await settle()
        # The freed slot went to the client on the third listener.
        assert handler.running == 2
        assert listeners[2].waiting == 0
        assert handler.streams[2] is not None
        handler.release_all()
        for client in (c1, c2, c3):
            assert await reply(client) == b"ok"
            await client.aclose()
    assert handler.peak == 2
    assert listener.statistics().accepted == 3


@pytest.mark.parametrize("busy_first", [0, 1])
async def test_max_clients_one_serves_a_client_on_either_listener(
    busy_first: int, autojump_clock: trio.testing.MockClock
) -> None:
    # The "nothing running at all" case: the first client arrives on whichever
    # listener, and must not wait behind a loop blocked on the other one.
    listeners = [MemoryListener(), MemoryListener()]
    handler = Recorder()
    async with NetListener(max_clients=1) as listener:
        for memory in listeners:
            listener.add_listener(memory)
        listener.set_client_func(handler)
        await settle()
        client = await listeners[busy_first].connect()
        await settle()
        assert handler.running == 1
        handler.release_all()
        assert await reply(client) == b"ok"
        await client.aclose()


async def test_clients_arriving_together_on_two_listeners_wait_for_the_one_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = MemoryListener(), MemoryListener()
    handler = Recorder()
    async with NetListener(max_clients=1) as listener:
        listener.add_listener(first)
        listener.add_listener(second)
        clients = [await first.connect(), await second.connect(), await first.connect()]
        listener.set_client_func(handler)
        await settle()
        assert handler.running == 1
        stats = listener.statistics()
        # At most one client another listener returned in the moment the budget filled
        # waits accepted; everyone else is still in a backlog.
        assert stats.pending <= 1
        assert stats.accepted - stats.pending == 1
        assert first.waiting + second.waiting + stats.pending == 2
        for index in range(3):
            handler.release(index)
            await settle()
            assert handler.running == (1 if index < 2 else 0)
        for client in clients:
            assert await reply(client) == b"ok"
            await client.aclose()
    assert handler.peak == 1
    assert handler.done == 3


async def test_a_blocked_accept_is_cancelled_when_the_budget_fills(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = MemoryListener(), MemoryListener()
    handler = Recorder()
    async with NetListener(max_clients=1) as listener:
        listener.add_listener(first)
        listener.add_listener(second)
        listener.set_client_func(handler)
        await settle()
        client = await first.connect()
        await settle()
        calls = second.accept_calls
        # A client on the paused listener stays in its backlog, not in the listener.
        waiting = await second.connect()
        await settle()
        assert second.accept_calls == calls
        assert second.waiting == 1
        handler.release(0)
        await settle()
        assert second.waiting == 0
        assert handler.running == 1
        handler.release_all()
        for c in (client, waiting):
            assert await reply(c) == b"ok"
            await c.aclose()


async def test_budget_counts_handlers_not_clients_served_by_wait_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    handler = Recorder()
    async with serving(handler, memory, max_clients=1) as listener:
        c1 = await memory.connect()
        await settle()
        assert handler.running == 1
        # The budget is spent, yet wait_client takes the next client for its caller.
        c2 = await memory.connect()
        own = await listener.wait_client()
        assert handler.running == 1
        await own.send_all(b"mine")
        await own.aclose()
        assert await c2.receive_some() == b"mine"
        await c2.aclose()
        handler.release_all()
        assert await reply(c1) == b"ok"
        await c1.aclose()
        assert listener.statistics().accepted == 2


# -- pause, resume, handler swap -------------------------------------------------------------


async def test_pause_leaves_clients_in_the_backlog_and_resume_serves_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    handler = Recorder()
    async with serving(handler, memory) as listener:
        listener.set_client_func(None)
        clients = [await memory.connect() for _ in range(3)]
        await settle()
        assert memory.waiting == 3
        assert listener.statistics().accepted == 0
        listener.set_client_func(handler)
        await settle()
        assert handler.running == 3
        handler.release_all()
        for client in clients:
            assert await reply(client) == b"ok"
            await client.aclose()


async def test_swapping_handlers_keeps_running_ones_and_serves_new_clients_with_the_new(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    old, new = Recorder(), Recorder()
    async with serving(old, memory) as listener:
        c1 = await memory.connect()
        await settle()
        listener.set_client_func(new)
        c2 = await memory.connect()
        await settle()
        assert old.running == 1
        assert new.running == 1
        old.release_all()
        new.release_all()
        for client in (c1, c2):
            assert await reply(client) == b"ok"
            await client.aclose()


async def test_swapping_handlers_while_the_budget_is_spent_resumes_with_the_new_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    old, new = Recorder(), Recorder()
    async with serving(old, memory, max_clients=1) as listener:
        c1 = await memory.connect()
        c2 = await memory.connect()
        await settle()
        listener.set_client_func(new)  # must not start a loop past the spent budget
        await settle()
        assert old.running == 1
        assert new.running == 0
        assert memory.waiting == 1  # no loop was started past the spent budget
        assert listener.statistics().pending == 0
        old.release_all()
        await settle()
        assert new.running == 1
        new.release_all()
        for client in (c1, c2):
            assert await reply(client) == b"ok"
            await client.aclose()


async def test_pausing_while_the_budget_is_spent_stays_paused_when_a_slot_frees(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    handler = Recorder()
    async with serving(handler, memory, max_clients=1) as listener:
        c1 = await memory.connect()
        await settle()
        listener.set_client_func(None)
        c2 = await memory.connect()
        handler.release(0)
        await settle()
        assert handler.running == 0
        assert memory.waiting == 1  # paused: the freed slot does not resume accepting
        listener.set_client_func(handler)
        await settle()
        assert handler.running == 1
        handler.release_all()
        for client in (c1, c2):
            assert await reply(client) == b"ok"
            await client.aclose()


# -- wait_client -----------------------------------------------------------------------------


async def test_wait_client_takes_the_next_client_from_any_listener_and_restores_the_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = MemoryListener(), MemoryListener()
    handler = Recorder()
    async with NetListener() as listener:
        listener.add_listener(first)
        listener.add_listener(second)
        listener.set_client_func(handler)
        async with trio.open_nursery() as nursery:
            got: list[Any] = []

            async def wait() -> None:
                got.append(await listener.wait_client())

            nursery.start_soon(wait)
            await settle()
            client = await second.connect()
        assert handler.running == 0  # the handler was paused
        (stream,) = got
        await stream.send_all(b"caller's")
        assert await client.receive_some() == b"caller's"
        later = await first.connect()
        await settle()
        assert handler.running == 1  # restored
        handler.release_all()
        assert await reply(later) == b"ok"
        await later.aclose()
        assert listener.statistics().accepted == 2
    # The stream wait_client returned belongs to the caller: still open after the block.
    await stream.send_all(b"still open")
    assert await client.receive_some() == b"still open"
    await stream.aclose()
    await client.aclose()


async def test_wait_client_queues_a_second_client_accepted_in_the_same_moment(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = MemoryListener(), MemoryListener()
    async with NetListener() as listener:
        listener.add_listener(first)
        listener.add_listener(second)
        c1, c2 = await first.connect(), await second.connect()
        got = await listener.wait_client()
        stats = listener.statistics()
        assert stats.accepted - stats.pending == 1
        # The other client is either queued or still in its backlog; never dropped.
        queued = await listener.wait_client()
        assert queued is not got
        await got.aclose()
        await queued.aclose()
        for client in (c1, c2):
            assert await client.receive_some() == b""
            await client.aclose()


async def test_wait_client_raises_when_every_listener_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    async with NetListener() as listener:
        with pytest.raises(trio.ClosedResourceError, match="no open socket or listener"):
            await listener.wait_client()
        listener.add_listener(memory)
        async with trio.open_nursery() as nursery:

            async def wait() -> None:
                with pytest.raises(trio.ClosedResourceError, match="was closed"):
                    await listener.wait_client()

            nursery.start_soon(wait)
            await settle()
            await memory.aclose()  # closed behind the listener's back
        with pytest.raises(trio.ClosedResourceError, match="no open socket or listener"):
            await listener.wait_client()


# -- drain: aclose(grace) --------------------------------------------------------------------


async def test_grace_lets_a_handler_that_needs_less_finish_and_cuts_one_that_needs_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    finished: list[float] = []

    async def handler(stream: Any) -> None:
        needs = float((await stream.receive_some()).decode())
        await trio.sleep(needs)
        await stream.send_all(b"done")
        finished.append(needs)

    async with serving(handler, memory) as listener:
        quick, slow = await memory.connect(), await memory.connect()
        await quick.send_all(b"1")
        await slow.send_all(b"10")
        await settle()
        assert len(listener.clients) == 2
        start = trio.current_time()
        report = await listener.aclose(grace=5)
        assert trio.current_time() - start == pytest.approx(5)
        assert report == trioqio.ShutdownReport(finished=1, cut=1)
        assert listener.shutdown_report is report
        assert finished == [1.0]
        assert await reply(quick) == b"done"
        assert await reply(slow) == b""
        for client in (quick, slow):
            await client.aclose()


async def test_grace_ends_as_soon_as_the_last_handler_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()

    async def handler(stream: Any) -> None:
        await trio.sleep(2)

    async with serving(handler, memory) as listener:
        client = await memory.connect()
        await settle()
        start = trio.current_time()
        report = await listener.aclose(grace=math.inf)
        assert trio.current_time() - start == pytest.approx(2)
        assert report == trioqio.ShutdownReport(finished=1, cut=0)
        await client.aclose()


async def test_no_grace_cuts_every_running_handler_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()

    async def handler(stream: Any) -> None:
        await trio.sleep(1)

    async with serving(handler, memory) as listener:
        clients = [await memory.connect() for _ in range(3)]
        await settle()
        start = trio.current_time()
        report = await listener.aclose()
        assert trio.current_time() == start
        assert report == trioqio.ShutdownReport(finished=0, cut=3)
        for client in clients:
            await client.aclose()


async def test_draining_is_set_when_aclose_begins_so_handlers_can_finish_their_unit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    units: list[int] = []

    async def handler(stream: Any) -> None:
        # Serve one-second units of work until the listener drains.
        unit = 0
        while not listener.draining.is_set():
            await trio.sleep(1)
            unit += 1
        units.append(unit)

    async with serving(handler, memory) as listener:
        client = await memory.connect()
        await trio.sleep(2.5)
        assert not listener.draining.is_set()
        report = await listener.aclose(grace=10)
        assert listener.draining.is_set()
        assert report == trioqio.ShutdownReport(finished=1, cut=0)
        assert units == [3]  # the unit in progress was finished, no new one begun
        await client.aclose()


async def test_aclose_closes_clients_queued_for_a_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    handler = Recorder()
    async with serving(None, memory) as listener:
        queued = await memory.connect()
        listener.set_client_func(handler)
        listener.set_client_func(None)
        await settle()
    assert await queued.receive_some() in (b"", b"ok")
    await queued.aclose()
    assert listener.statistics().pending == 0


async def test_concurrent_aclose_calls_return_the_one_report(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()

    async def handler(stream: Any) -> None:
        await trio.sleep(3)

    reports: list[trioqio.ShutdownReport] = []
    async with serving(handler, memory) as listener:
        client = await memory.connect()
        await settle()

        async def close() -> None:
            reports.append(await listener.aclose(grace=10))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close)
            nursery.start_soon(close)
        await client.aclose()
    assert reports[0] is reports[1]
    assert reports[0] == trioqio.ShutdownReport(finished=1, cut=0)


async def test_cancelled_from_outside_with_a_handler_on_a_trio_stream_still_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Closing a foreign stream re-raises the outer Cancelled; the handler's bookkeeping
    # must still run, or the listener's close waits for it for ever.
    memory = MemoryListener()
    handler = Recorder()
    with trio.move_on_after(10) as outer:
        async with serving(handler, memory) as listener:
            client = await memory.connect()
            await settle()
            assert handler.running == 1
            outer.cancel()
            await trio.sleep_forever()
    assert outer.cancelled_caught
    assert trio.current_time() < 10  # not the move_on_after deadline: closed at once
    assert handler.running == 0
    assert len(listener.clients) == 0
    assert memory.closed
    await client.aclose()


async def test_serve_cancelled_with_a_handler_running_ends_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    handler = Recorder()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(trioqio.serve, handler, memory)
            client = await memory.connect()
            await settle()
            assert handler.running == 1
            nursery.cancel_scope.cancel()
    assert handler.running == 0
    await client.aclose()


async def test_raise_policy_with_another_handler_on_a_trio_stream_raises_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    waiting = Recorder()

    async def handler(stream: Any) -> None:
        if await stream.receive_some() == b"fail":
            raise ValueError("fatal")
        await waiting(stream)

    with trio.fail_after(5), pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="fatal")):
        async with serving(handler, memory, on_handler_error="raise"):
            calm, failing = await memory.connect(), await memory.connect()
            try:
                await calm.send_all(b"wait")
                await settle()
                await failing.send_all(b"fail")
                await trio.sleep_forever()
            finally:
                await calm.aclose()
                await failing.aclose()


# -- handler errors --------------------------------------------------------------------------


async def test_handler_error_is_logged_counted_and_others_served(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    memory = MemoryListener()

    async def handler(stream: Any) -> None:
        if (await stream.receive_some()) == b"bad":
            raise ValueError("bad request")
        await stream.send_all(b"ok")

    with caplog.at_level(logging.ERROR, logger="trioqio.listener"):
        async with serving(handler, memory, name="errs") as listener:
            for payload in (b"bad", b"good", b"bad", b"good"):
                client = await memory.connect()
                await client.send_all(payload)
                assert await reply(client) == (b"ok" if payload == b"good" else b"")
                await client.aclose()
            stats = listener.statistics()
    assert stats.handler_errors == 2
    assert stats.log_suppressed == 1  # the second error fell within the log interval
    records = [r for r in caplog.records if "client handler failed" in r.getMessage()]
    assert len(records) == 1
    assert "bad request" in records[0].getMessage()


async def test_handler_error_raise_policy_tears_the_listener_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()

    async def handler(stream: Any) -> None:
        raise ValueError("fatal")

    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="fatal")):
        async with serving(handler, memory, on_handler_error="raise"):
            client = await memory.connect()
            try:
                await trio.sleep_forever()
            finally:
                await client.aclose()
    assert memory.closed


async def test_handler_error_callable_receives_each_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    errors: list[Exception] = []

    async def handler(stream: Any) -> None:
        raise KeyError("k")

    async with serving(handler, memory, on_handler_error=errors.append) as listener:
        for _ in range(2):
            client = await memory.connect()
            assert await reply(client) == b""
            await client.aclose()
    assert [type(e) for e in errors] == [KeyError, KeyError]
    assert listener.statistics().handler_errors == 2


# -- accept errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
async def test_exhausted_descriptors_back_off_exponentially_and_recover(
    code: int, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    memory = MemoryListener()
    memory.fail_next(OSError(code, os.strerror(code)), times=6)
    handler = Recorder()
    with caplog.at_level(logging.ERROR, logger="trioqio.listener"):
        async with NetListener(name="fds") as listener:
            listener.add_listener(memory)
            client = await memory.connect()  # waits in the backlog while accept fails
            start = trio.current_time()
            listener.set_client_func(handler)
            while handler.running == 0:
                await trio.sleep(0.001)
            # 10 ms doubling: 0.01 + 0.02 + 0.04 + 0.08 + 0.16 + 0.32.
            assert trio.current_time() - start == pytest.approx(0.63, abs=0.002)
            stats = listener.statistics()
            assert stats.accept_errors == 6
            assert stats.failed_listeners == 0
            handler.release_all()
            assert await reply(client) == b"ok"
            await client.aclose()
    records = [r for r in caplog.records if "pausing accept" in r.getMessage()]
    assert len(records) == 1  # one record per 5 s; the rest counted
    assert stats.log_suppressed == 5


async def test_backoff_is_capped_and_resets_after_a_success(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    memory.fail_next(OSError(errno.EMFILE, "Too many open files"), times=10)
    handler = Recorder()
    async with serving(handler, memory):
        client = await memory.connect()
        start = trio.current_time()
        while handler.running == 0:
            await trio.sleep(0.001)
        # 0.01 .. 0.32, then capped at 0.5: 0.63 + 4 * 0.5.
        assert trio.current_time() - start == pytest.approx(2.63, abs=0.002)
        # The loop is blocked in its next accept; the one after that fails once.
        memory.fail_next(OSError(errno.EMFILE, "Too many open files"))
        calls = memory.accept_calls
        second = await memory.connect()
        await settle()
        assert handler.running == 2
        assert memory.accept_calls == calls + 1  # failed, now backing off
        start = trio.current_time()
        while memory.accept_calls < calls + 2:
            await trio.sleep(0.001)
        # The success reset the backoff: 10 ms again, not the 0.5 s cap.
        assert trio.current_time() - start == pytest.approx(0.01, abs=0.0015)
        handler.release_all()
        for c in (client, second):
            assert await reply(c) == b"ok"
            await c.aclose()


async def test_routine_per_connection_errors_are_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    memory.fail_next(ConnectionAbortedError(errno.ECONNABORTED, "aborted"))
    handler = Recorder()
    async with serving(handler, memory) as listener:
        client = await memory.connect()
        await trio.sleep(1)
        assert handler.running == 1
        assert listener.statistics().accept_errors == 1
        handler.release_all()
        assert await reply(client) == b"ok"
        await client.aclose()


BrokenCase = Callable[[], BaseException]


@pytest.mark.parametrize(
    "error",
    [lambda: RuntimeError("listener bug"), lambda: OSError(errno.EINVAL, "Invalid argument")],
    ids=["exception", "oserror"],
)
async def test_a_broken_listener_is_closed_logged_and_counted_while_others_serve(
    error: BrokenCase, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    broken, healthy = MemoryListener(), MemoryListener()
    broken.fail_next(error())
    handler = Recorder()
    with caplog.at_level(logging.ERROR, logger="trioqio.listener"):
        async with NetListener(name="two") as listener:
            listener.add_listener(broken)
            listener.add_listener(healthy)
            listener.set_client_func(handler)
            await settle()
            assert broken.closed
            assert listener.statistics().failed_listeners == 1
            with pytest.raises(ConnectionRefusedError):
                await broken.connect()
            client = await healthy.connect()
            await settle()
            assert handler.running == 1
            handler.release_all()
            assert await reply(client) == b"ok"
            await client.aclose()
    (record,) = [r for r in caplog.records if "stopped: accept failed" in r.getMessage()]
    assert record.exc_info is not None
    assert "MemoryListener" in record.getMessage()


async def test_a_broken_listener_under_the_raise_policy_propagates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broken = MemoryListener()
    broken.fail_next(RuntimeError("listener bug"))
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="listener bug")):
        async with serving(Recorder(), broken, on_accept_error="raise"):
            await trio.sleep_forever()
    assert broken.closed


async def test_a_broken_listener_goes_to_a_callable_policy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broken = MemoryListener()
    broken.fail_next(RuntimeError("listener bug"))
    seen: list[Exception] = []
    async with serving(Recorder(), broken, on_accept_error=seen.append):
        await settle()
        assert broken.closed
    assert [str(e) for e in seen] == ["listener bug"]


async def test_a_listener_closed_behind_our_back_stops_quietly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory, other = MemoryListener(), MemoryListener()
    async with NetListener() as listener:
        listener.add_listener(memory)
        listener.add_listener(other)
        listener.set_client_func(Recorder())
        await settle()
        await memory.aclose()
        await settle()
        stats = listener.statistics()
        assert stats.failed_listeners == 0
        assert stats.accept_errors == 0
        assert listener.is_connected


# -- add_listener, serve ---------------------------------------------------------------------


async def test_add_listener_checks_what_it_is_given(autojump_clock: trio.testing.MockClock) -> None:
    memory = MemoryListener()
    listener = NetListener()
    with pytest.raises(RuntimeError, match="enter the listener first"):
        listener.add_listener(memory)
    async with listener:
        with pytest.raises(TypeError, match=r"needs a trio.abc.Listener, not int"):
            listener.add_listener(3)  # type: ignore[arg-type]  # the error under test
        stream, _ = trio.testing.memory_stream_pair()
        with pytest.raises(TypeError, match="not StapledStream"):
            listener.add_listener(stream)  # type: ignore[arg-type]  # the error under test
        listener.add_listener(memory)
        with pytest.raises(ValueError, match="served already"):
            listener.add_listener(memory)
        assert listener.listeners == [memory]
    with pytest.raises(trio.ClosedResourceError, match="is closed"):
        listener.add_listener(MemoryListener())
    with pytest.raises(trio.ClosedResourceError, match="is closed"):
        listener.set_client_func(Recorder())


async def test_add_listener_while_serving_starts_accepting_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler = Recorder()
    async with NetListener() as listener:
        listener.set_client_func(handler)
        memory = MemoryListener()
        listener.add_listener(memory)
        client = await memory.connect()
        await settle()
        assert handler.running == 1
        handler.release_all()
        assert await reply(client) == b"ok"
        await client.aclose()


async def test_disconnect_closes_trio_listeners_and_leaves_handlers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    handler = Recorder()
    async with serving(handler, memory) as listener:
        client = await memory.connect()
        await settle()
        await listener.disconnect()
        assert memory.closed
        assert not listener.is_connected
        assert handler.running == 1
        again = MemoryListener()
        listener.add_listener(again)  # connects the listener again
        assert listener.is_connected
        assert listener.listeners == [memory, again]
        handler.release_all()
        assert await reply(client) == b"ok"
        await client.aclose()


async def test_serve_hands_back_the_listener_and_runs_until_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    handler = Recorder()
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(trioqio.serve, handler, memory)
        assert isinstance(listener, NetListener)
        assert listener.listeners == [memory]
        client = await memory.connect()
        await settle()
        assert handler.running == 1
        handler.release_all()
        assert await reply(client) == b"ok"
        await client.aclose()
        nursery.cancel_scope.cancel()
    assert memory.closed


async def test_serve_passes_the_listener_options(autojump_clock: trio.testing.MockClock) -> None:
    first, second = MemoryListener(), MemoryListener()
    handler = Recorder()
    async with trio.open_nursery() as nursery:
        # nursery.start passes no keywords: options go through functools.partial.
        serve = functools.partial(trioqio.serve, name="served", max_clients=1)
        listener = await nursery.start(serve, handler, first, second)
        assert listener.name == "served"
        c1, c2 = await first.connect(), await second.connect()
        await settle()
        assert handler.running == 1
        handler.release_all()
        await settle()
        handler.release_all()
        for client in (c1, c2):
            assert await reply(client) == b"ok"
            await client.aclose()
        nursery.cancel_scope.cancel()
    assert handler.peak == 1


async def test_serve_needs_an_address_and_closes_given_listeners_when_one_fails(
    tmp_path: os.PathLike[str], autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(ValueError, match="at least one address"):
        await trioqio.serve(Recorder())
    before, after = MemoryListener(), MemoryListener()
    missing = f"unix:{os.fspath(tmp_path)}/no/such/dir/sock"
    async with trio.open_nursery() as nursery:
        with pytest.RaisesGroup(OSError, allow_unwrapped=True, flatten_subgroups=True):
            await nursery.start(trioqio.serve, Recorder(), before, missing, after)
    assert before.closed
    assert after.closed


# -- the in-memory listener itself -----------------------------------------------------------


async def test_memory_listener_backlog_blocks_connect_when_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener(backlog=1)
    first = await memory.connect()
    with trio.move_on_after(1) as blocked:
        await memory.connect()
    assert blocked.cancelled_caught
    server = await memory.accept()
    second = await memory.connect()
    for resource in (first, server, second):
        await resource.aclose()
    await memory.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await memory.accept()


async def test_memory_listener_cancelled_accept_keeps_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    with trio.move_on_after(1):
        await memory.accept()
    client = await memory.connect()
    server = await memory.accept()
    await client.send_all(b"x")
    assert await server.receive_some() == b"x"
    for resource in (client, server, memory):
        await resource.aclose()


def test_memory_listener_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="backlog"):
        MemoryListener(backlog=0)
    with pytest.raises(ValueError, match="times"):
        MemoryListener().fail_next(OSError(), times=0)


# -- rules found by nox -s mutation (docs/reliability.md, "Mutation testing") ----------------


async def test_serve_raises_a_start_up_failure_as_itself(
    tmp_path: os.PathLike[str], autojump_clock: trio.testing.MockClock
) -> None:
    missing = f"unix:{os.fspath(tmp_path)}/no/such/dir/sock"
    with pytest.raises(OSError):  # not an ExceptionGroup (which is no OSError)
        await trioqio.serve(Recorder(), missing)
    with pytest.raises(ValueError, match=r"^serve\(\) needs at least one address or listener$"):
        await trioqio.serve(Recorder())


async def _serve_until_it_raises(memory: MemoryListener, **options: Any) -> BaseException:
    """Run serve() on ``memory`` with ``options`` and one client; return what it raised."""

    async def failing(stream: Any) -> None:
        raise KeyError("handler")

    caught: list[BaseException] = []

    async def run() -> None:
        try:
            await trioqio.serve(failing, memory, **options)
        except Exception as exc:
            caught.append(exc)

    clients: list[MemoryStream] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await settle()
        if not memory.closed:  # a listener whose accept broke is closed at once
            clients.append(await memory.connect())
            await settle()
        nursery.cancel_scope.cancel()  # a serve() that did not raise is stopped here
    for client in clients:
        await client.aclose()
    assert len(caught) == 1, "serve() kept serving"
    return caught[0]


async def test_serve_passes_the_error_policies_and_raises_errors_while_serving_in_a_group(
    autojump_clock: trio.testing.MockClock,
) -> None:
    raised = await _serve_until_it_raises(MemoryListener(), on_handler_error="raise")
    assert pytest.RaisesGroup(KeyError).matches(raised)
    broken = MemoryListener()
    broken.fail_next(RuntimeError("accept bug"))
    raised = await _serve_until_it_raises(broken, on_accept_error="raise")
    assert pytest.RaisesGroup(RuntimeError).matches(raised)


async def test_serve_names_its_listener_as_netlistener_does(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(trioqio.serve, Recorder(), memory)
        assert listener.name == NetListener().name == ""
        nursery.cancel_scope.cancel()


async def test_wait_client_retries_a_failed_accept_and_refuses_a_second_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    memory.fail_next(OSError(errno.EMFILE, "Too many open files"))
    async with NetListener() as listener:
        listener.add_listener(memory)
        client = await memory.connect()
        async with trio.open_nursery() as nursery:
            got: list[Any] = []

            async def wait() -> None:
                got.append(await listener.wait_client())

            nursery.start_soon(wait)
            await settle()
            with pytest.raises(trio.BusyResourceError, match=r"^another task is already in wait"):
                await listener.wait_client()
        (stream,) = got
        assert listener.statistics().accept_errors == 1
        await stream.send_all(b"x")
        assert await client.receive_some() == b"x"
        await stream.aclose()
        await client.aclose()


async def test_repr_says_whether_the_listener_serves_anything(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with NetListener(name="r") as listener:
        assert listener.is_connected is False
        assert repr(listener) == "<NetListener 'r' disconnected listeners=0>"
        listener.add_listener(MemoryListener())
        assert repr(listener) == "<NetListener 'r' connected listeners=1>"
        await listener.disconnect()
        assert listener.is_connected is False
        assert repr(listener) == "<NetListener 'r' disconnected listeners=1>"


async def test_accept_failures_are_logged_and_traced_with_their_listener_and_errno(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[trioqio.trace.TraceEvent] = []
    with caplog.at_level(logging.ERROR, logger="trioqio.listener"):
        for error in (
            OSError(errno.EMFILE, "Too many open files"),
            ConnectionAbortedError(errno.ECONNABORTED, "aborted"),
        ):
            memory, handler = MemoryListener(), Recorder()
            memory.fail_next(error)
            with trioqio.trace.subscribed(events.append):
                async with serving(handler, memory, name="bo"):
                    client = await memory.connect()
                    while handler.running == 0:
                        await trio.sleep(0.001)
                    handler.release_all()
                    assert await reply(client) == b"ok"
                    await client.aclose()
            await trio.sleep(10)  # past the log's rate limit: the next record is written
    messages = [r.getMessage() for r in caplog.records if r.name == "trioqio.listener"]
    assert len(messages) == 2
    assert messages[0].startswith("listener 'bo' on <MemoryListener ")
    assert messages[0].endswith(": out of descriptors or memory; pausing accept: EMFILE")
    assert messages[1].startswith("listener 'bo' on <MemoryListener ")
    assert messages[1].endswith(": accept failed; retrying: ECONNABORTED")
    backoffs = [e.fields for e in events if e.name == "qio_net_listener_accept_backoff"]
    assert backoffs == [
        {"listener": "bo", "errno": errno.EMFILE},
        {"listener": "bo", "errno": errno.ECONNABORTED},
    ]


async def test_broken_listeners_and_failed_handlers_are_logged_with_what_failed(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    first, second, healthy = MemoryListener(), MemoryListener(), MemoryListener()
    error = RuntimeError("listener bug")
    first.fail_next(error)
    second.fail_next(error)
    streams: list[Any] = []

    async def handler(stream: Any) -> None:
        streams.append(stream)
        raise ValueError("bad request")

    with caplog.at_level(logging.ERROR, logger="trioqio.listener"):
        async with serving(handler, first, name="logs") as listener:
            listener.add_listener(second)
            listener.add_listener(healthy)
            client = await healthy.connect()
            await settle()
            assert listener.statistics().failed_listeners == 2
            assert await reply(client) == b""
            await client.aclose()
    messages = [r.getMessage() for r in caplog.records if r.name == "trioqio.listener"]
    (stream,) = streams
    assert sorted(messages) == sorted(
        [
            f"listener 'logs': {first!r} stopped: accept failed: {error!r}",
            f"listener 'logs': {second!r} stopped: accept failed: {error!r}",
            f"listener 'logs': client handler failed on {stream!r}: ValueError('bad request')",
        ]
    )


async def test_accept_loops_are_watched_and_unwatched_with_their_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[trioqio.trace.TraceEvent] = []
    memory = MemoryListener()
    handler = Recorder()
    with trioqio.trace.subscribed(events.append):
        async with serving(handler, memory, name="w", max_clients=1) as listener:
            client = await memory.connect()
            await settle()  # the budget is spent: the loop stops
            handler.release_all()
            assert await reply(client) == b"ok"
            await client.aclose()
            await settle()  # the slot is free: the loop runs again
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listener.wait_client)
                await settle()
                nursery.cancel_scope.cancel()
    callbacks = [e.fields for e in events if e.name == "qio_net_listener_callback"]
    assert callbacks == [{"listener": "w", "func": handler}]
    seen = [
        (e.name.removeprefix("qio_net_listener_"), e.fields["extra"], e.fields["func"])
        for e in events
        if e.name in ("qio_net_listener_watch", "qio_net_listener_unwatch")
        and e.fields["listener"] == "w"
    ]
    assert seen[:5] == [
        ("watch", "set_client_func", handler),
        ("unwatch", "max_clients", handler),
        ("watch", "max_clients", handler),
        ("unwatch", "wait_client", handler),
        ("watch", "set_client_func", handler),  # wait_client restored the handler
    ]


async def test_calls_on_a_closed_listener_name_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with NetListener(name="gone") as listener:
        pass
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "open": functools.partial(listener.open, "tcp:127.0.0.1:0"),
        "add": functools.partial(_call_async, listener.add, MemoryListener()),
        "set_client_func": functools.partial(_call_async, listener.set_client_func, Recorder()),
        "add_listener": functools.partial(_call_async, listener.add_listener, MemoryListener()),
        "open_systemd": listener.open_systemd,
    }
    for name, call in calls.items():
        with pytest.raises(trio.ClosedResourceError, match=f"^{name}: <NetListener 'gone'"):
            await call()


async def _call_async(function: Callable[..., object], *args: object) -> object:
    return function(*args)


async def test_wait_client_can_be_called_again_once_it_returned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    async with NetListener() as listener:
        listener.add_listener(memory)
        for _ in range(2):
            client = await memory.connect()
            stream = await listener.wait_client()
            await stream.aclose()
            assert await client.receive_some() == b""
            await client.aclose()


async def test_add_names_what_it_was_given(autojump_clock: trio.testing.MockClock) -> None:
    async with NetListener() as listener:
        with pytest.raises(TypeError, match=r"^add\(\) needs a SocketChannel, not int$"):
            listener.add(3)  # type: ignore[arg-type]


async def test_open_names_its_sockets_after_the_listener_and_applies_the_mode(
    tmp_path: os.PathLike[str],
) -> None:
    path = f"{os.fspath(tmp_path)}/sock"
    async with NetListener(name="named") as listener:
        (channel,) = await listener.open(f"unix:{path}", mode=0o640)
        assert channel.name == "named"
        assert os.stat(path).st_mode & 0o777 == 0o640


async def test_wait_client_does_not_restore_over_a_handler_set_while_it_waited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    first, second = Recorder(), Recorder()
    async with serving(first, memory) as listener:
        async with trio.open_nursery() as nursery:
            got: list[Any] = []

            async def wait() -> None:
                got.append(await listener.wait_client())

            nursery.start_soon(wait)
            await settle()
            listener.set_client_func(second)  # the caller's choice, made while waiting
            await settle()
            taken = await memory.connect()  # the oldest accept, wait_client's, takes it
        later = await memory.connect()
        await settle()
        assert (first.running, second.running) == (0, 1)
        second.release_all()
        assert await reply(later) == b"ok"
        for resource in (later, taken, *got):
            await resource.aclose()


async def test_a_short_grace_lets_a_quick_handler_finish_and_no_clients_need_no_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()

    async def quick(stream: Any) -> None:
        await trio.sleep(0.2)

    async with NetListener() as listener:
        listener.add_listener(memory)
        listener.set_client_func(quick)
        client = await memory.connect()
        await settle()
        report = await listener.aclose(grace=0.5)
    assert (report.finished, report.cut) == (1, 0)
    await client.aclose()
    async with NetListener() as idle:
        start = trio.current_time()
        await idle.aclose(grace=5)
        assert trio.current_time() == start  # nothing to wait for


def test_bad_options_name_the_option() -> None:
    with pytest.raises(TypeError, match=r"^max_clients must be an int or None, not True$"):
        NetListener(max_clients=True)
    with pytest.raises(ValueError, match=r"^on_accept_error must be 'log', 'raise' or a callable"):
        NetListener(on_accept_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^on_handler_error must be 'log', 'raise' or a callable"):
        NetListener(on_handler_error="ignore")  # type: ignore[arg-type]


async def test_pausing_adding_and_disconnecting_are_traced_with_their_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[trioqio.trace.TraceEvent] = []
    handler = Recorder()
    with trioqio.trace.subscribed(events.append):
        async with serving(handler, MemoryListener(), name="p") as listener:
            listener.set_client_func(None)
            listener.set_client_func(handler)
            listener.add_listener(MemoryListener())
            await listener.disconnect()
    seen = [
        (e.name.removeprefix("qio_net_listener_"), e.fields["extra"], e.fields["func"])
        for e in events
        if e.name in ("qio_net_listener_watch", "qio_net_listener_unwatch")
        and e.fields["listener"] == "p"
    ]
    assert seen == [
        ("watch", "set_client_func", handler),
        ("unwatch", "set_client_func", handler),
        ("watch", "set_client_func", handler),
        ("watch", "add", handler),
        ("unwatch", "disconnect", handler),
        ("unwatch", "disconnect", handler),
    ]


async def test_a_listener_closed_under_a_running_loop_counts_as_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    async with serving(Recorder(), memory) as listener:
        await settle()
        await memory.aclose()  # behind the listener's back, while its accept loop runs
        await settle()
        with pytest.raises(trio.ClosedResourceError, match="no open socket or listener"):
            await listener.wait_client()


async def test_aclose_from_an_already_cancelled_scope_still_closes_and_reports(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryListener()
    recorder = Recorder()
    async with serving(recorder, memory) as listener:
        client = await memory.connect()
        await settle()
        assert recorder.running == 1
        reports: list[trioqio.ShutdownReport] = []
        with trio.CancelScope() as scope:
            scope.cancel()
            reports.append(await listener.aclose())  # disconnect, close_pending shielded
        assert not scope.cancelled_caught
        assert reports == [trioqio.ShutdownReport(finished=0, cut=1)]
        assert memory.closed
        assert not listener.is_connected
        await client.aclose()


class _StartUpAbort(BaseException):
    """A BaseException that is not an Exception (as KeyboardInterrupt is)."""


async def test_serve_keeps_a_start_up_group_or_base_exception_in_its_group(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    import sys

    import trioqio._listener as listener_module

    failures: list[BaseException] = []

    async def failing_resolve(address: Any) -> Any:
        await trio.lowlevel.checkpoint()
        raise failures.pop()

    monkeypatch.setattr(listener_module, "resolve", failing_resolve)
    failures.append(_StartUpAbort("abort"))
    with pytest.RaisesGroup(_StartUpAbort):  # only an Exception is raised as itself
        await trioqio.serve(Recorder(), "tcp:127.0.0.1:0")
    if sys.version_info >= (3, 11):
        import builtins

        failures.append(builtins.ExceptionGroup("inner", [KeyError("k")]))
    else:  # pragma: no cover - Python 3.10 gets the group from Trio's backport
        from exceptiongroup import ExceptionGroup as Group

        failures.append(Group("inner", [KeyError("k")]))
    with pytest.RaisesGroup(pytest.RaisesGroup(KeyError)):  # a group stays nested
        await trioqio.serve(Recorder(), "tcp:127.0.0.1:0")


async def test_a_second_client_wait_client_queued_is_closed_by_aclose(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = MemoryListener(), MemoryListener()
    async with NetListener(name="q") as listener:
        listener.add_listener(first)
        listener.add_listener(second)
        clients = [await first.connect(), await second.connect()]
        got = await listener.wait_client()  # both accepts complete; one is queued
        report = await listener.aclose()
        assert report == trioqio.ShutdownReport(finished=0, cut=0)
        # the returned stream is the caller's; the queued one was closed by aclose()
        await got.aclose()
        for client in clients:
            with trio.fail_after(1):
                assert await client.receive_some(1) == b""
            await client.aclose()
