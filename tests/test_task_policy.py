"""The cancellation policy of every ``*_task`` operation, row by row (docs/task.md's table).

One parametrised test runs each operation through each row of the table: the owner's
cancel scope is cancelled before the work starts, while it runs, or while the completion
runs, for ``abandon_on_cancel`` False and True where the operation has the choice
(``connect_task`` and ``resolve_task`` always abandon; async work is always waited for).
It checks the four columns: what the completion sees, whether its awaits are cancelled,
what ``wait()`` raises, and whether a thread may still be running.

Threads are real and gated with ``threading.Event``; ``connect_task`` connects a real TCP
socket on loopback and the handshakes are real TLS (trustme) and real HTTP upgrades. Each
test ends with every worker thread finished.
"""

from __future__ import annotations

import socket as stdlib_socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trustme

import trioqio
from trioqio import TaskCancelled, TaskError

HOST = "trioqio.example"
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: binary\r\n\r\n"
)


@attrs.frozen
class Row:
    """One row of docs/task.md's table: what each column must show."""

    error: str  # what the completion sees: "cancelled" or "outcome" (the work's own)
    abandoned: bool  # TaskCancelled.abandoned, when it is a TaskCancelled
    kept: bool  # a waited-for thread's value stays in task.result
    awaits_cancelled: bool  # an async completion's awaits raise trio.Cancelled
    thread_may_run: bool  # a worker thread may still be running during the completion


#: (when, abandon_on_cancel) -> the row; async work follows the abandon_on_cancel=False rows.
TABLE = {
    ("before", False): Row("cancelled", False, False, True, False),
    ("before", True): Row("cancelled", False, False, True, False),
    ("running", False): Row("cancelled", False, True, True, False),
    ("running", True): Row("cancelled", True, False, True, True),
    ("completing", False): Row("outcome", False, True, True, False),
    ("completing", True): Row("outcome", False, True, True, False),
}


class Gate:
    """A worker's start and release, across threads (threading.Event) or tasks."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def gated(*args: Any) -> Any:
            self.started.set()
            try:
                assert self.release.wait(10), "the test never released the worker"
                return fn(*args)
            finally:
                self.finished.set()

        return gated

    async def until_started(self) -> None:
        while not self.started.is_set():
            await trio.sleep(0.001)
        await trio.testing.wait_all_tasks_blocked()

    async def end(self) -> None:
        """Release the worker and wait for its thread to finish (if it ever started)."""
        self.release.set()
        if self.started.is_set():
            with trio.fail_after(10):
                while not self.finished.is_set():
                    await trio.sleep(0.001)


class Operation:
    """How the test drives one ``*_task`` operation; subclasses fill in the work."""

    threaded = True
    fixed_abandon: bool | None = None  # the operation's own abandon_on_cancel, if fixed

    def __init__(self, gate: Gate, abandon: bool) -> None:
        self.gate = gate
        self.abandon = abandon

    def start(self, nursery: trio.Nursery, on_complete: Any) -> trioqio.Task[Any]:
        raise NotImplementedError

    async def until_running(self) -> None:
        await self.gate.until_started()

    def release(self, nursery: trio.Nursery) -> None:
        self.gate.release.set()

    def check_value(self, value: object) -> None:
        assert value == 42

    async def cleanup(self, task: trioqio.Task[Any]) -> None:
        await self.gate.end()


class TaskRunInThread(Operation):
    def start(self, nursery: trio.Nursery, on_complete: Any) -> trioqio.Task[Any]:
        task: trioqio.Task[Any] = trioqio.Task(on_complete=on_complete, name="policy")
        task.run_in_thread(nursery, self.gate.wrap(lambda: 42), abandon_on_cancel=self.abandon)
        return task


class ResolveTask(Operation):
    fixed_abandon = True

    def __init__(self, gate: Gate, abandon: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(gate, abandon)
        from trioqio import _dns

        monkeypatch.setattr(_dns, "_lookup_blocking", gate.wrap(_dns._lookup_blocking))

    def start(self, nursery: trio.Nursery, on_complete: Any) -> trioqio.Task[Any]:
        return trioqio.resolve_task(nursery, "127.0.0.1:7", on_complete)

    def check_value(self, value: object) -> None:
        assert value == [trioqio.InetAddress("127.0.0.1", 7)]


class ConnectTask(Operation):
    fixed_abandon = True

    def __init__(self, gate: Gate, abandon: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(gate, abandon)
        from trioqio import _connect

        # The worker thread blocks before its real connect() to the loopback listener.
        monkeypatch.setattr(_connect, "_connected_socket", gate.wrap(_connect._connected_socket))
        self.listener = stdlib_socket.create_server(("127.0.0.1", 0), backlog=8)

    def start(self, nursery: trio.Nursery, on_complete: Any) -> trioqio.Task[Any]:
        port = self.listener.getsockname()[1]
        return trioqio.connect_task(nursery, f"tcp:127.0.0.1:{port}", on_complete, name="pol")

    def check_value(self, value: object) -> None:
        assert isinstance(value, trioqio.SocketChannel)
        assert value.name == "pol"

    async def cleanup(self, task: trioqio.Task[Any]) -> None:
        await super().cleanup(task)  # a late socket is closed by connect_task itself
        try:
            channel = task.result
        except TaskError:
            pass
        else:
            await channel.aclose()
        self.listener.close()


class TaskStartSoon(Operation):
    threaded = False

    def __init__(self, gate: Gate, abandon: bool) -> None:
        super().__init__(gate, abandon)
        self.released = trio.Event()

    def start(self, nursery: trio.Nursery, on_complete: Any) -> trioqio.Task[Any]:
        async def work() -> int:
            self.gate.started.set()
            try:
                await self.released.wait()
                return 42
            finally:
                self.gate.finished.set()

        task: trioqio.Task[Any] = trioqio.Task(on_complete=on_complete, name="policy")
        task.start_soon(nursery, work)
        return task

    def release(self, nursery: trio.Nursery) -> None:
        self.released.set()


class Handshake(Operation):
    """A real handshake over a socket pair; the peer stays silent until released."""

    threaded = False
    server: trioqio.TLSChannel | trioqio.WebsockChannel
    peer: trioqio.abc.Channel

    async def open(self, ca: trustme.CA) -> None:
        a, b = trio.socket.socketpair()
        self.peer_end, self.server_end = trioqio.SocketChannel(a), trioqio.SocketChannel(b)

    def check_value(self, value: object) -> None:
        assert value is self.server

    async def until_running(self) -> None:
        await trio.testing.wait_all_tasks_blocked()  # reading from its silent peer

    def start(self, nursery: trio.Nursery, on_complete: Any) -> trioqio.Task[Any]:
        return self.server.handshake_task(nursery, on_complete)

    async def cleanup(self, task: trioqio.Task[Any]) -> None:
        await self.server.aclose()
        await self.peer.aclose()


class TLSHandshake(Handshake):
    async def open(self, ca: trustme.CA) -> None:
        await super().open(ca)
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(HOST).configure_cert(server_ctx)
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        self.server = trioqio.TLSChannel.server(self.server_end, server_ctx)
        self.tls_peer = trioqio.TLSChannel.client(self.peer_end, client_ctx, hostname=HOST)
        self.peer = self.tls_peer

    def release(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.tls_peer.handshake)


class WebsockHandshake(Handshake):
    async def open(self, ca: trustme.CA) -> None:
        await super().open(ca)
        self.server = trioqio.WebsockChannel.server(self.server_end)
        self.peer = self.peer_end

    def release(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.peer.send_all, UPGRADE)


OPERATIONS: dict[str, type[Operation]] = {
    "Task.run_in_thread": TaskRunInThread,
    "resolve_task": ResolveTask,
    "connect_task": ConnectTask,
    "Task.start_soon": TaskStartSoon,
    "TLSChannel.handshake_task": TLSHandshake,
    "WebsockChannel.handshake_task": WebsockHandshake,
}


def _cases() -> list[Any]:
    cases = []
    for name, cls in OPERATIONS.items():
        if not cls.threaded:
            choices = [False]  # async work is waited for: the abandon_on_cancel=False rows
        elif cls.fixed_abandon is not None:
            choices = [cls.fixed_abandon]
        else:
            choices = [False, True]
        for when in ("before", "running", "completing"):
            for abandon in choices:
                cases.append(pytest.param(name, when, abandon, id=f"{name}-{when}-{abandon}"))
    return cases


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def operation(
    name: str, abandon: bool, monkeypatch: pytest.MonkeyPatch, ca: trustme.CA
) -> AsyncIterator[Operation]:
    cls = OPERATIONS[name]
    gate = Gate()
    op: Operation
    if cls in (ResolveTask, ConnectTask):
        op = cls(gate, abandon, monkeypatch)
    else:
        op = cls(gate, abandon)
    if isinstance(op, Handshake):
        await op.open(ca)
    yield op


@attrs.define
class Seen:
    """What the completion saw, and when."""

    calls: int = 0
    error: BaseException | None = None
    result: object = None
    thread_running: bool = False
    await_cancelled: bool = False
    completing: trio.Event = attrs.Factory(trio.Event)


@pytest.mark.parametrize(("name", "when", "abandon"), _cases())
async def test_policy_row(
    name: str, when: str, abandon: bool, monkeypatch: pytest.MonkeyPatch, ca: trustme.CA
) -> None:
    row = TABLE[(when, abandon)]
    seen = Seen()
    async with operation(name, abandon, monkeypatch, ca) as op:

        async def on_complete(task: trioqio.Task[Any]) -> None:
            seen.calls += 1
            seen.error = task.error
            gate = op.gate
            seen.thread_running = gate.started.is_set() and not gate.finished.is_set()
            try:
                seen.result = task.result
            except TaskError:
                seen.result = None
            seen.completing.set()
            try:
                if when == "completing":
                    await trio.sleep_forever()
                await trio.lowlevel.checkpoint()
            except trio.Cancelled:
                seen.await_cancelled = True
                raise

        task: trioqio.Task[Any] | None = None
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    if when == "before":
                        scope.cancel()  # before the work's child task ever runs
                    task = op.start(nursery, on_complete)
                    if when == "running":
                        await op.until_running()
                        scope.cancel()
                        if not abandon:
                            op.release(nursery)  # a waited-for worker must end by itself
                    elif when == "completing":
                        op.release(nursery)
                        await seen.completing.wait()
                        scope.cancel()
            assert scope.cancelled_caught
            assert task is not None
            # Column 1: what the completion sees (exactly once, in this thread).
            assert seen.calls == 1
            if row.error == "cancelled":
                assert isinstance(seen.error, TaskCancelled)
                assert seen.error.abandoned is row.abandoned
            else:
                assert seen.error is None
                op.check_value(seen.result)
            if when == "before":
                assert not op.gate.started.is_set()  # the work never ran
            elif row.kept and op.threaded:
                op.check_value(seen.result)  # the waited-for thread's value is kept
            # Column 2: its awaits are cancelled.
            assert seen.await_cancelled is row.awaits_cancelled
            # Column 3: what wait() raises, from a waiter that is not cancelled.
            assert task.done
            if row.error == "cancelled":
                with pytest.raises(TaskCancelled):
                    await task.wait()
            else:
                op.check_value(await task.wait())
            # Column 4: whether a thread may still be running.
            assert seen.thread_running is (row.thread_may_run and op.threaded)
            if not op.threaded:
                assert trio.testing.active_thread_count() == 0
        finally:
            if task is not None:
                await op.cleanup(task)
            else:
                await op.gate.end()


@pytest.mark.parametrize("abandon", [False, True])
@pytest.mark.parametrize("when", ["before", "running"])
async def test_one_shot_follows_the_policy(when: str, abandon: bool) -> None:
    """The one-shot raises the caller's Cancelled in each row; threads per column 4."""
    row = TABLE[(when, abandon)]
    gate = Gate()
    still_running: list[bool] = []
    with trio.CancelScope() as scope:
        if when == "before":
            scope.cancel()

        async def cancel_when_running() -> None:
            await gate.until_started()
            scope.cancel()
            if not abandon:
                gate.release.set()

        async with trio.open_nursery() as nursery:
            if when == "running":
                nursery.start_soon(cancel_when_running)
            try:
                await trioqio.run_in_thread(gate.wrap(lambda: 42), abandon_on_cancel=abandon)
            finally:
                still_running.append(gate.started.is_set() and not gate.finished.is_set())
            pytest.fail("run_in_thread returned although its caller was cancelled")
    assert scope.cancelled_caught
    assert still_running == [row.thread_may_run]
    assert gate.started.is_set() is (when == "running")
    await gate.end()
