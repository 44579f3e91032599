"""NetListener and listening sockets under bad input: resets, silence, clashes, bad paths."""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from _listener_helpers import (
    connect,
    fd_count,
    read_reply,
    reply_ok,
    reset_connect,
    wait_until,
)

import trioqio
from trioqio import InetAddress, NetListener, UnixAddress

# -- misbehaving clients ----------------------------------------------------------------------


async def test_connect_reset_client_does_not_disturb_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(channel: trioqio.SocketChannel) -> None:
        await channel.receive_some()
        await channel.send_all(b"ok")

    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(handler)
        address = listener.addresses[0]
        assert isinstance(address, InetAddress)
        await trio.to_thread.run_sync(reset_connect, address)
        stream = await connect(address)
        async with stream:
            await stream.send_all(b"hi")
            assert await stream.receive_some() == b"ok"


async def test_silent_client_does_not_block_others_and_is_cut_at_close() -> None:
    async def handler(channel: trioqio.SocketChannel) -> None:
        data = await channel.receive_some()
        await channel.send_all(data)

    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(handler)
        silent = await connect(listener.addresses[0])
        for _ in range(5):
            stream = await connect(listener.addresses[0])
            async with stream:
                await stream.send_all(b"e")
                assert await stream.receive_some() == b"e"
        await wait_until(lambda: len(listener.clients) == 1)  # the echo handlers finish
        report = await listener.aclose()
        assert report == trioqio.ShutdownReport(finished=0, cut=1)
        async with silent:
            assert await silent.receive_some() == b""


async def _receive_ok(address: trioqio.SocketAddress) -> bytes:
    stream = await connect(address)
    async with stream:
        return await stream.receive_some()


async def test_a_thousand_connect_reset_cycles(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(channel: trioqio.SocketChannel) -> None:
        await channel.send_all(b"ok")
        await channel.receive_some()  # the reset shows up here as a handler error

    caplog.set_level(logging.DEBUG, logger="trioqio.listener")

    def pound(address: InetAddress) -> None:
        for _ in range(1000):
            reset_connect(address)

    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0", backlog=1024)
        listener.set_client_func(handler)
        address = listener.addresses[0]
        assert isinstance(address, InetAddress)
        assert await _receive_ok(address) == b"ok"  # warm up lazily created state
        await trio.testing.wait_all_tasks_blocked()
        baseline = fd_count()
        await trio.to_thread.run_sync(pound, address)
        assert await _receive_ok(address) == b"ok"  # serving goes on
        await wait_until(lambda: not listener.clients)
        assert fd_count() == baseline
        stats = listener.statistics()
        assert stats.running == 0
        assert stats.accepted >= 2
        # Every reset the handler saw was counted, and all but a few log records dropped.
        assert stats.log_suppressed >= stats.handler_errors - 3
    records = [r for r in caplog.records if r.name == "trioqio.listener"]
    assert len(records) <= 3  # no flood, whatever the resets turned into


# -- listening errors ---------------------------------------------------------------------------


async def test_port_already_in_use_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        async with NetListener() as listener:
            with pytest.raises(OSError, match=rf"cannot listen on tcp:127\.0\.0\.1:{port}") as info:
                await listener.open(f"tcp:127.0.0.1:{port}")
            assert info.value.errno == errno.EADDRINUSE
            assert not listener.is_connected


async def test_unix_path_that_is_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("precious")
    async with NetListener() as listener:
        with pytest.raises(FileExistsError, match="exists and is not a socket") as info:
            await listener.open(f"unix:{path}")
        assert str(path) in str(info.value)
    assert path.read_text() == "precious"


async def test_unix_path_too_long(tmp_path: Path) -> None:
    path = "/tmp/" + "x" * 200
    async with NetListener() as listener:
        with pytest.raises(trioqio.AddressError, match=r"is 205 bytes, longer than .* 107"):
            await listener.open(f"unix:{path}")
        with pytest.raises(trioqio.AddressError, match="longer than"):
            await listener.open(UnixAddress("@" + "y" * 120))
    assert not os.path.exists(path)


async def test_stale_unix_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.listen()
    dead.close()  # the process "died": its socket file stays behind
    assert path.is_socket()
    async with NetListener() as listener:
        await listener.open(f"unix:{path}")
        listener.set_client_func(reply_ok)
        assert await read_reply(listener.addresses[0]) == b"ok"
    assert not path.exists()


async def test_live_unix_listener_is_not_stolen(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen()
        async with NetListener() as listener:
            with pytest.raises(OSError, match="another process is listening") as info:
                await listener.open(f"unix:{path}")
            assert info.value.errno == errno.EADDRINUSE
        # The live listener still owns its path and accepts.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
            accepted, _ = live.accept()
            accepted.close()


async def test_unix_path_in_missing_directory(tmp_path: Path) -> None:
    async with NetListener() as listener:
        with pytest.raises(FileNotFoundError, match="cannot listen on unix:"):
            await listener.open(f"unix:{tmp_path}/no/such/dir/s.sock")


async def test_unresolvable_name() -> None:
    async with NetListener() as listener:
        with pytest.raises(socket.gaierror, match=r"nosuch\.invalid"):
            await listener.open("tcp:nosuch.invalid:0")


async def test_fd_address_that_is_not_a_socket() -> None:
    read_fd, write_fd = os.pipe()
    try:
        async with NetListener() as listener:
            with pytest.raises(OSError, match=f"cannot adopt fd:{read_fd}: not a socket"):
                await listener.open(f"fd:{read_fd}")
        os.fstat(read_fd)  # still the caller's, still open
    finally:
        os.close(read_fd)
        os.close(write_fd)


async def test_fd_address_not_listening_or_closed() -> None:
    left, right = socket.socketpair()
    with left, right:
        async with NetListener() as listener:
            with pytest.raises(OSError, match="not listening"):
                await listener.open(f"fd:{left.fileno()}")
            left.send(b"x")  # still open: the caller kept it
            assert right.recv(1) == b"x"
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    async with NetListener() as listener:
        with pytest.raises(OSError, match=f"cannot adopt fd:{fd}: not an open descriptor"):
            await listener.open(f"fd:{fd}")


async def test_vsock_listens_or_says_why() -> None:
    async with NetListener() as listener:
        try:
            await listener.open("vsock:4294967295:0")
        except OSError as exc:
            message = str(exc)
        else:
            message = str(listener.addresses[0])
        assert message.startswith("cannot listen on vsock:4294967295:0") or (
            message.startswith("vsock:4294967295:")
        )


async def test_add_rejects_non_listening_and_wrong_types() -> None:
    left, right = trio.socket.socketpair()
    channel = trioqio.SocketChannel(left)
    async with NetListener() as listener:
        with pytest.raises(ValueError, match="not listening"):
            listener.add(channel)
        with pytest.raises(TypeError, match="SocketChannel"):
            listener.add(left)  # type: ignore[arg-type]  # wrong type on purpose
    await channel.aclose()
    right.close()


async def test_misuse_gives_clear_errors() -> None:
    listener = NetListener()
    with pytest.raises(RuntimeError, match="enter the listener first"):
        await listener.open("tcp:127.0.0.1:0")
    with pytest.raises(RuntimeError, match="enter the listener first"):
        listener.set_client_func(reply_ok)
    with pytest.raises(ValueError, match="max_clients"):
        NetListener(max_clients=0)
    with pytest.raises(ValueError, match="on_handler_error"):
        NetListener(on_handler_error="ignore")  # type: ignore[arg-type]  # on purpose
    async with NetListener() as entered:
        with pytest.raises(TypeError, match="handler must be"):
            entered.set_client_func(42)  # type: ignore[arg-type]  # on purpose
        with pytest.raises(ValueError, match="grace"):
            await entered.aclose(grace=-1)
        await entered.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await entered.open("tcp:127.0.0.1:0")
    with pytest.raises(RuntimeError, match="entered only once"):
        async with entered:
            pass


# -- add_listener, serve ------------------------------------------------------------------------


async def test_add_listener_rejects_what_is_not_a_listener_naming_it() -> None:
    left, right = trio.socket.socketpair()
    stream = trio.SocketStream(left)
    connected = trioqio.SocketChannel(right)
    async with NetListener() as listener:
        with pytest.raises(TypeError, match=r"needs a trio\.abc\.Listener, not int \(42\)"):
            listener.add_listener(42)  # type: ignore[arg-type]  # wrong type on purpose
        with pytest.raises(TypeError, match=r"trio\.abc\.Listener, not SocketStream \(<trio"):
            listener.add_listener(stream)  # type: ignore[arg-type]  # wrong type on purpose
        # A SocketChannel is adopted as by add(), which wants it listening.
        with pytest.raises(
            ValueError, match=r"add\(\) needs a listening channel; .* not listening"
        ):
            listener.add_listener(connected)  # not listening
        assert listener.listeners == []
        assert not listener.is_connected
    # Nothing was adopted: both ends are still the caller's, and open.
    await connected.send_all(b"x")
    assert await stream.receive_some() == b"x"
    await stream.aclose()
    await connected.aclose()


async def test_add_listener_twice_is_an_error() -> None:
    (tcp,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with NetListener() as listener:
        listener.add_listener(tcp)
        with pytest.raises(ValueError, match="served already"):
            listener.add_listener(tcp)
        (channel,) = await listener.open("tcp:127.0.0.1:0")
        with pytest.raises(ValueError, match="served already"):
            listener.add_listener(channel)  # adopted as by add()
        (own,) = [source for source in listener.listeners if source is not tcp]
        with pytest.raises(ValueError, match="served already"):
            listener.add_listener(own)
        assert len(listener.listeners) == 2
        listener.set_client_func(reply_ok)
        for address in listener.addresses:
            assert await read_reply(address) == b"ok"


async def test_add_listener_after_close_is_closed_resource_error() -> None:
    (tcp,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with NetListener() as listener:
        pass
    with pytest.raises(trio.ClosedResourceError, match=r"add_listener: .* is closed"):
        listener.add_listener(tcp)
    assert listener.listeners == []
    await tcp.aclose()
    unentered = NetListener()
    (tcp,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with pytest.raises(RuntimeError, match="enter the listener first"):
        unentered.add_listener(tcp)
    await tcp.aclose()


async def test_serve_needs_an_address_and_closes_given_listeners_when_it_fails() -> None:
    with pytest.raises(ValueError, match="at least one address or listener"):
        await trioqio.serve(reply_ok)
    (tcp,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with pytest.raises(ValueError, match="max_clients"):
        await trioqio.serve(reply_ok, tcp, max_clients=0)
    assert tcp.socket.fileno() == -1  # given to serve, so closed by it
    (tcp,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    # A start-up failure is raised as itself, as trio.serve_tcp raises it.
    with pytest.raises(socket.gaierror, match=r"nosuch\.invalid"):
        await trioqio.serve(reply_ok, "tcp:nosuch.invalid:0", tcp)
    assert tcp.socket.fileno() == -1  # an earlier address failed: closed all the same
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        with pytest.raises(OSError, match="Address already in use"):
            await trioqio.serve(reply_ok, f"tcp:127.0.0.1:{busy.getsockname()[1]}")
    finally:
        busy.close()


async def test_a_second_wrapper_of_a_served_socket_is_refused_and_it_keeps_serving() -> None:
    async with NetListener() as listener:
        (channel,) = await listener.open("tcp:127.0.0.1:0")
        with pytest.raises(ValueError, match="served already"):
            listener.add_listener(trioqio.SocketChannelListener(channel))
        wrapped = trio.SSLListener(
            trioqio.SocketChannelListener(channel), ssl.create_default_context()
        )
        with pytest.raises(ValueError, match="served already"):
            listener.add_listener(wrapped)
        listener.set_client_func(reply_ok)
        assert await read_reply(listener.addresses[0]) == b"ok"
        assert listener.statistics().failed_listeners == 0


class _BrokenListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose accept fails with ``exc`` (a listener that broke for good)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.accept_calls = 0
        self.closed = False

    async def accept(self) -> trio.abc.Stream:
        self.accept_calls += 1
        await trio.lowlevel.checkpoint()
        raise self.exc

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


_BROKEN = [
    pytest.param(lambda: RuntimeError("listener broke"), id="RuntimeError"),
    pytest.param(lambda: OSError(errno.EINVAL, "Invalid argument"), id="EINVAL"),
]


@pytest.mark.parametrize("make_error", _BROKEN)
async def test_broken_foreign_listener_is_closed_counted_and_logged_others_serve(
    make_error: Callable[[], Exception], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="trioqio.listener")
    error = make_error()
    broken = _BrokenListener(error)
    async with NetListener(name="mixed") as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.add_listener(broken)
        listener.set_client_func(reply_ok)
        await wait_until(lambda: listener.statistics().failed_listeners == 1)
        assert broken.closed
        assert broken.accept_calls == 1  # not retried
        stats = listener.statistics()
        assert stats.accept_errors == 0  # counted as a failed listener, not a retry
        for _ in range(3):
            assert await read_reply(listener.addresses[0]) == b"ok"  # the socket serves on
        assert listener.statistics().accepted == 3
        assert listener.listeners[1] is broken  # still listed, closed
        # Pausing and resuming does not revive it.
        listener.set_client_func(None)
        listener.set_client_func(reply_ok)
        assert await read_reply(listener.addresses[0]) == b"ok"
        assert broken.accept_calls == 1
    (record,) = [r for r in caplog.records if r.name == "trioqio.listener"]
    message = record.getMessage()
    assert "listener 'mixed'" in message
    assert "stopped: accept failed" in message
    assert repr(error) in message
    assert record.exc_info is not None
    assert record.exc_info[1] is error


async def test_broken_foreign_listener_raise_policy_propagates() -> None:
    broken = _BrokenListener(RuntimeError("listener broke"))
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="listener broke")):
        async with NetListener(on_accept_error="raise") as listener:
            (channel,) = await listener.open("tcp:127.0.0.1:0")
            listener.add_listener(broken)
            listener.set_client_func(reply_ok)
            await trio.sleep_forever()  # until the error tears the listener down
    assert broken.closed
    with pytest.raises(trio.ClosedResourceError):
        await channel.accept()  # the listener's own socket is closed too


async def test_broken_foreign_listener_callable_policy_receives_the_error() -> None:
    errors: list[Exception] = []
    broken = _BrokenListener(OSError(errno.EINVAL, "Invalid argument"))
    async with NetListener(on_accept_error=errors.append) as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.add_listener(broken)
        listener.set_client_func(reply_ok)
        await wait_until(lambda: listener.statistics().failed_listeners == 1)
        assert errors == [broken.exc]
        assert broken.closed
        assert await read_reply(listener.addresses[0]) == b"ok"
    with pytest.raises(ValueError, match="on_accept_error"):
        NetListener(on_accept_error="ignore")  # type: ignore[arg-type]  # on purpose
