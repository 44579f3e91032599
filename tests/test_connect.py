"""Tests for trioqio.connect and trioqio.connect_task (QEMU connect_sync / connect_async)."""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

import trioqio
from trioqio import ChannelFeature, SocketChannel


def _ipv6_works() -> bool:
    try:
        with stdlib_socket.socket(stdlib_socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_works(), reason="::1 cannot be bound here")


async def tcp_listener(host: str = "127.0.0.1") -> tuple[SocketChannel, int]:
    family = stdlib_socket.AF_INET6 if ":" in host else stdlib_socket.AF_INET
    raw = trio.socket.socket(family)
    await raw.bind((host, 0))
    raw.listen(8)
    return SocketChannel(raw, name="srv"), raw.getsockname()[1]


async def unix_listener(name: str, backlog: int = 8) -> SocketChannel:
    raw = trio.socket.socket(stdlib_socket.AF_UNIX)
    await raw.bind(name)
    raw.listen(backlog)
    return SocketChannel(raw, name="srv")


async def echo_once(srv: SocketChannel, client: SocketChannel) -> None:
    async with await srv.accept() as server:
        await client.send_all(b"ping")
        assert await server.receive_exactly(4) == b"ping"


# -- connect --------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6), "localhost"])
async def test_connect_tcp(host: str) -> None:
    listen_host = "127.0.0.1" if host == "localhost" else host
    srv, port = await tcp_listener(listen_host)
    async with srv:
        # "localhost" may resolve to ::1 first: happy eyeballs falls back to 127.0.0.1.
        client = await trioqio.connect(trioqio.InetAddress(host, port), name="c")
        async with client:
            assert client.name == "c"
            assert isinstance(client.remote_address, trioqio.InetAddress)
            assert client.remote_address.port == port
            assert ChannelFeature.READ_MSG_PEEK in client.features
            await echo_once(srv, client)


async def test_connect_unix_path(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    async with await unix_listener(path) as srv, await trioqio.connect(f"unix:{path}") as client:
        assert client.remote_address == trioqio.UnixAddress(path)
        assert ChannelFeature.FD_PASS in client.features
        await echo_once(srv, client)


async def test_connect_unix_abstract() -> None:
    name = f"trioqio-connect-{os.getpid()}"
    srv = await unix_listener("\0" + name)
    async with srv, await trioqio.connect(f"unix:@{name}") as client:
        assert client.remote_address == trioqio.UnixAddress("@" + name)
        await echo_once(srv, client)


async def test_connect_fd() -> None:
    srv, port = await tcp_listener()
    raw = stdlib_socket.create_connection(("127.0.0.1", port))
    async with srv, await trioqio.connect(f"fd:{raw.detach()}") as client:
        await echo_once(srv, client)


async def test_connect_refused_names_the_address(tmp_path: Path) -> None:
    path = tmp_path / "nobody.sock"
    with pytest.raises(OSError, match=r"nobody\.sock") as info:
        await trioqio.connect(trioqio.UnixAddress(str(path)))
    assert info.value.errno == errno.ENOENT
    srv, port = await tcp_listener()
    await srv.aclose()  # the port is free now: nobody listens
    with pytest.raises(OSError, match=str(port)):
        await trioqio.connect(f"tcp:127.0.0.1:{port}")


async def test_connect_vsock_fails_clearly() -> None:
    # No vsock transport here (nor a listener on CID 1): a clear OSError, no leak.
    with pytest.raises(OSError, match="vsock"):
        await trioqio.connect("vsock:1:9999")


async def test_connect_bad_input() -> None:
    with pytest.raises(trioqio.AddressError, match="port"):
        await trioqio.connect("tcp:localhost:99999")
    with pytest.raises(TypeError):
        await trioqio.connect(1234)  # type: ignore[arg-type]  # deliberately wrong
    with pytest.raises(ValueError, match="unnamed"):
        await trioqio.connect(trioqio.UnixAddress(""))
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(OSError) as info:
            await trioqio.connect(trioqio.FdAddress(read_end))
        assert info.value.errno == errno.ENOTSOCK
    finally:
        os.close(read_end)
        os.close(write_end)


# -- connect_task ---------------------------------------------------------------------


@pytest.mark.usefixtures("no_threads_left")
@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_connect_task_threads(kind: str, tmp_path: Path) -> None:
    """The connect runs in a worker thread, the completion in the Trio thread."""
    if kind == "tcp":
        srv, port = await tcp_listener()
        address = f"tcp:127.0.0.1:{port}"
    else:
        path = str(tmp_path / "s.sock")
        srv = await unix_listener(path)
        address = f"unix:{path}"
    trio_thread = threading.get_ident()
    seen: list[tuple[str, int]] = []
    results: list[SocketChannel] = []

    def done(task: trioqio.Task[SocketChannel]) -> None:
        seen.append(("complete", threading.get_ident()))
        task.propagate_error()
        results.append(task.result)

    events: list[trioqio.trace.TraceEvent] = []
    with trioqio.trace.subscribed(events.append):
        async with trio.open_nursery() as nursery:
            task = trioqio.connect_task(nursery, address, done, name="mig")
            assert isinstance(task, trioqio.Task)
    assert seen == [("complete", trio_thread)]
    workers = [e.thread_id for e in events if e.name == "qio_task_thread_run"]
    assert workers
    assert trio_thread not in workers
    # QEMU's shape (shared/reference/qemu-trace): one Task per connect, whose worker thread
    # resolves and connects; the result and the completion come back to the Trio thread.
    assert [e.fields["task"] for e in events if e.name == "qio_task_new"] == ["Task 'mig'"]
    thread_of = {e.name: e.thread_id for e in events}
    assert list(thread_of) == [
        "qio_task_new",
        "qio_channel_socket_connect_async",
        "qio_task_thread_start",
        "qio_task_thread_run",
        "qio_channel_socket_connect_sync",
        "qio_channel_socket_connect_complete",
        "qio_task_thread_exit",
        "qio_channel_socket_new",  # the socket becomes a channel in the Trio thread
        "qio_task_thread_result",
        "qio_task_complete",
    ]
    in_worker = {"qio_task_thread_run", "qio_channel_socket_connect_sync"}
    in_worker |= {"qio_channel_socket_connect_complete", "qio_task_thread_exit"}
    assert {name for name, thread in thread_of.items() if thread != trio_thread} == in_worker
    client = results[0]
    assert await task.wait() is client
    assert client.name == "mig"
    async with srv, client:
        await echo_once(srv, client)


async def test_connect_task_async_callback_and_fd() -> None:
    srv, port = await tcp_listener()
    raw = stdlib_socket.create_connection(("127.0.0.1", port))
    got: list[SocketChannel] = []

    async def done(task: trioqio.Task[SocketChannel]) -> None:
        await trio.lowlevel.checkpoint()
        got.append(task.result)

    async with trio.open_nursery() as nursery:
        trioqio.connect_task(nursery, trioqio.FdAddress(raw.detach()), done)
    async with srv, got[0] as client:
        await echo_once(srv, client)


async def test_connect_task_failure(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def done(task: trioqio.Task[SocketChannel]) -> None:
        try:
            task.propagate_error()
        except OSError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        task = trioqio.connect_task(nursery, f"unix:{tmp_path / 'none.sock'}", done)
    assert len(errors) == 1
    assert isinstance(errors[0], OSError)
    assert errors[0].errno == errno.ENOENT
    assert "none.sock" in str(errors[0])
    with pytest.raises(OSError, match=r"none\.sock"):
        await task.wait()


async def test_connect_task_bad_address_raises_at_once() -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(trioqio.AddressError):
            trioqio.connect_task(nursery, "tcp:nohost", None)
    assert trio.testing.active_thread_count() == 0


@pytest.mark.usefixtures("no_threads_left")
async def test_connect_task_cancelled_does_not_leak_the_socket(tmp_path: Path) -> None:
    """Cancel while the worker blocks in connect(); its late socket is closed, not leaked.

    A UNIX listener with a full backlog makes a blocking connect() wait for real."""
    path = str(tmp_path / "full.sock")
    srv = await unix_listener(path, backlog=0)
    fillers: list[stdlib_socket.socket] = []
    try:
        # Fill the backlog with non-blocking connects until one would block.
        while True:
            filler = stdlib_socket.socket(stdlib_socket.AF_UNIX)
            filler.setblocking(False)
            fillers.append(filler)
            try:
                filler.connect(path)
            except BlockingIOError:
                break
        outcomes: list[BaseException | None] = []

        def done(task: trioqio.Task[SocketChannel]) -> None:
            outcomes.append(task.error)

        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                task = trioqio.connect_task(nursery, f"unix:{path}", done)
                # Wait until the worker thread is stuck in connect().
                while trio.testing.active_thread_count() == 0:
                    await trio.sleep(0)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
        assert len(outcomes) == 1
        assert isinstance(outcomes[0], trioqio.TaskCancelled)
        assert outcomes[0].abandoned
        with pytest.raises(trioqio.TaskCancelled):
            await task.wait()
        # Drain the backlog: the abandoned worker's connect() now succeeds, and the
        # handoff closes its socket (no_threads_left waits for it; the fd check proves it).
        accepted: list[SocketChannel] = []
        with trio.fail_after(10):
            while trio.testing.active_thread_count():
                with trio.move_on_after(0.05):
                    accepted.append(await srv.accept())
        for channel in accepted:
            await channel.aclose()
    finally:
        for filler in fillers:
            filler.close()
        await srv.aclose()
