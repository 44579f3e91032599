"""Test a NetListener server in memory, on a virtual clock: no sockets, no real sleeps.

``trioqio.testing.MemoryListener`` is an in-memory ``trio.abc.Listener``: ``connect()``
queues the server end of a stream pair and returns the client end, ``fail_next()`` makes
accepts fail, ``waiting`` counts the backlog. Served with ``NetListener.add_listener``, it
exercises the real dispatch, ``max_clients`` budget, accept-error policy and drain. With
pytest-trio, put these functions in a test module as they are: the ``autojump_clock``
fixture runs each on a clock that jumps ahead whenever every task is blocked, so a
30-second idle timeout takes no time. Run directly, this script gives each the same
clock (``trio.testing.MockClock(autojump_threshold=0)``) and says which passed.

Run: ``python examples/listener_testing.py``.
"""

from __future__ import annotations

import errno
import os

import trio
import trio.testing

import trioqio
import trioqio.testing

IDLE = 30.0


async def echo(stream: trio.abc.Stream) -> None:
    """The server under test: echo, and drop a client that is quiet for ``IDLE`` seconds."""
    with trio.CancelScope(deadline=trio.current_time() + IDLE) as scope:
        async for data in stream:
            scope.deadline = trio.current_time() + IDLE
            await stream.send_all(data)


async def test_echo_then_idle_timeout(autojump_clock: trio.testing.MockClock) -> None:
    memory = trioqio.testing.MemoryListener()
    async with trioqio.NetListener(name="test") as listener:
        listener.add_listener(memory)
        listener.set_client_func(echo)
        async with await memory.connect() as client:
            await client.send_all(b"ping")
            assert await client.receive_some() == b"ping"
            quiet_since = trio.current_time()
            assert await client.receive_some() == b""  # the server hung up ...
            assert trio.current_time() - quiet_since == IDLE  # ... after IDLE virtual s
    assert listener.statistics().accepted == 1


async def test_max_clients_holds_the_rest_in_the_backlog(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = trioqio.testing.MemoryListener()
    async with trioqio.NetListener(name="test", max_clients=1) as listener:
        listener.add_listener(memory)
        listener.set_client_func(echo)
        first = await memory.connect()
        second = await memory.connect()
        await trio.testing.wait_all_tasks_blocked()
        assert listener.statistics().running == 1
        assert memory.waiting == 1  # not refused: it waits, unaccepted
        await first.aclose()  # frees the slot ...
        await trio.testing.wait_all_tasks_blocked()
        assert memory.waiting == 0  # ... and the waiting client is served
        await second.send_all(b"hello")
        assert await second.receive_some() == b"hello"
        await second.aclose()


async def test_out_of_descriptors_backs_off(autojump_clock: trio.testing.MockClock) -> None:
    memory = trioqio.testing.MemoryListener()
    memory.fail_next(OSError(errno.EMFILE, os.strerror(errno.EMFILE)), times=3)
    async with trioqio.NetListener(name="test") as listener:
        listener.add_listener(memory)
        listener.set_client_func(echo)
        async with await memory.connect() as client:
            await client.send_all(b"still here")
            assert await client.receive_some() == b"still here"
        stats = listener.statistics()
        assert stats.accept_errors == 3  # retried, logged once (rate-limited) ...
        assert stats.log_suppressed == 2  # ... and the other two records suppressed
        assert stats.failed_listeners == 0


async def test_a_broken_listener_is_closed_and_the_others_go_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broken, healthy = trioqio.testing.MemoryListener(), trioqio.testing.MemoryListener()
    broken.fail_next(RuntimeError("the listener broke"))
    errors: list[Exception] = []
    async with trioqio.NetListener(name="test", on_accept_error=errors.append) as listener:
        listener.add_listener(broken)
        listener.add_listener(healthy)
        listener.set_client_func(echo)
        await trio.testing.wait_all_tasks_blocked()
        assert broken.closed
        assert [str(exc) for exc in errors] == ["the listener broke"]
        async with await healthy.connect() as client:
            await client.send_all(b"ok?")
            assert await client.receive_some() == b"ok?"
    assert listener.statistics().failed_listeners == 1


async def test_drain_lets_a_request_finish(autojump_clock: trio.testing.MockClock) -> None:
    async def slow_echo(stream: trio.abc.Stream) -> None:
        request = await stream.receive_some()
        await trio.sleep(5)  # work in flight when the drain begins
        await stream.send_all(request)

    memory = trioqio.testing.MemoryListener()
    async with trioqio.NetListener(name="test") as listener:
        listener.add_listener(memory)
        listener.set_client_func(slow_echo)
        async with await memory.connect() as client:
            await client.send_all(b"work")
            await trio.testing.wait_all_tasks_blocked()
            report = await listener.aclose(grace=10)
            assert await client.receive_some() == b"work"
        assert (report.finished, report.cut) == (1, 0)


TESTS = [
    test_echo_then_idle_timeout,
    test_max_clients_holds_the_rest_in_the_backlog,
    test_out_of_descriptors_backs_off,
    test_a_broken_listener_is_closed_and_the_others_go_on,
    test_drain_lets_a_request_finish,
]

if __name__ == "__main__":
    for test in TESTS:
        clock = trio.testing.MockClock(autojump_threshold=0)  # what autojump_clock gives
        trio.run(test, clock, clock=clock)
        print("passed:", test.__name__)
