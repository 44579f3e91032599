"""NetListener and listening sockets under bad input: resets, silence, clashes, bad paths."""

from __future__ import annotations

import errno
import logging
import os
import socket
from pathlib import Path

import pytest
import trio
import trio.testing
from _listener_helpers import connect, fd_count, read_reply, reply_ok, reset_connect

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
        while len(listener.clients) > 1:  # the echo handlers are finishing
            await trio.sleep(0.01)
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
        while listener.clients:
            await trio.sleep(0.01)
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
