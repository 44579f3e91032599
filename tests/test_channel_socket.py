"""Tests for SocketChannel: QEMU's tests/unit/test-io-channel-socket.c, ported, plus Trio's
stream conformance checks and the bad-input rules of issue 4."""

from __future__ import annotations

import array
import errno
import os
import socket as stdlib_socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

import trioqio
from trioqio import ChannelFeature, Shutdown, SocketChannel
from trioqio.testing import check_channel, run_data_test

# -- protocol support (QEMU socket_check_protocol_support) ----------------------------


def _loopback_works(family: int, host: str) -> bool:
    try:
        with stdlib_socket.socket(family, stdlib_socket.SOCK_STREAM) as srv:
            srv.bind((host, 0))
            srv.listen(1)
            with stdlib_socket.create_connection(srv.getsockname()[:2], timeout=5):
                client, _ = srv.accept()
                client.close()
    except OSError:
        return False
    return True


HAVE_IPV6 = _loopback_works(stdlib_socket.AF_INET6, "::1")
needs_ipv6 = pytest.mark.skipif(not HAVE_IPV6, reason="::1 cannot listen and connect here")


async def listening_socket(kind: str, tmp_path: Path) -> tuple[trio.socket.SocketType, str]:
    """A raw listening trio socket and the address text to connect to it."""
    if kind == "unix":
        path = str(tmp_path / "test-io-channel-socket.sock")
        sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen(1)
        return sock, f"unix:{path}"
    family, host = (
        (stdlib_socket.AF_INET, "127.0.0.1") if kind == "ipv4" else (stdlib_socket.AF_INET6, "::1")
    )
    sock = trio.socket.socket(family, stdlib_socket.SOCK_STREAM)
    await sock.bind((host, 0))
    sock.listen(1)
    port = sock.getsockname()[1]
    return sock, str(trioqio.InetAddress(host, port))


def small_buffers(*channels: SocketChannel) -> None:
    for channel in channels:
        channel.socket.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 64 * 1024)
        channel.socket.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 64 * 1024)


async def setup(
    kind: str, tmp_path: Path, *, use_task: bool
) -> tuple[SocketChannel, SocketChannel, SocketChannel]:
    """QEMU's setup_sync / setup_async: (listener, src, dst)."""
    raw, address = await listening_socket(kind, tmp_path)
    srv = SocketChannel(raw, name="srv")
    assert ChannelFeature.LISTEN in srv.features
    if use_task:
        async with trio.open_nursery() as nursery:
            task = trioqio.connect_task(nursery, address, name="src")
        src = await task.wait()
    else:
        src = await trioqio.connect(address, name="src")
    src.set_delay(False)
    dst = await srv.accept()
    small_buffers(src, dst)
    return srv, src, dst


KINDS = [
    pytest.param("ipv4", id="ipv4"),
    pytest.param("ipv6", id="ipv6", marks=needs_ipv6),
    pytest.param("unix", id="unix"),
]


@pytest.mark.parametrize("use_task", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("kind", KINDS)
async def test_io_channel(kind: str, use_task: bool, tmp_path: Path) -> None:
    """/io/channel/socket/{ipv4,ipv6,unix}-{sync,async}: two rounds of the data test."""
    path = tmp_path / "test-io-channel-socket.sock"
    for round_no in (1, 2):
        srv, src, dst = await setup(kind, tmp_path, use_task=use_task)
        for channel in (src, dst):
            assert ChannelFeature.SHUTDOWN in channel.features
            assert (ChannelFeature.FD_PASS in channel.features) == (kind == "unix")
            assert ChannelFeature.READ_MSG_PEEK in channel.features
        if kind == "unix":
            assert path.exists()
        # Round 1 writes with writev (QEMU blocking), round 2 one buffer at a time.
        await run_data_test(src, dst, writev=round_no == 1)
        await run_data_test(dst, src, writev=round_no == 2)
        if kind == "unix":
            assert path.exists()
        await src.aclose()
        await dst.aclose()
        if kind == "unix":
            assert path.exists()  # only the listening socket owns the path
        await srv.aclose()
        assert not path.exists()
        await srv.aclose()  # closing twice is a no-op
        assert not path.exists()


async def test_ipv4_fd() -> None:
    """/io/channel/socket/ipv4-fd: a channel from a raw bound (not listening) fd."""
    raw = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM)
    raw.bind(("127.0.0.1", 0))
    channel = SocketChannel.from_fd(raw.detach())
    assert isinstance(channel, SocketChannel)
    assert channel.features == ChannelFeature.SHUTDOWN | ChannelFeature.READ_MSG_PEEK
    assert channel.local_address.host == "127.0.0.1"  # type: ignore[union-attr]  # an InetAddress here
    await channel.aclose()


async def test_unix_fd_pass(tmp_path: Path) -> None:
    """/io/channel/socket/unix-fd-pass: 3 fds of one file arrive distinct, same description."""
    srv, src, dst = await setup("unix", tmp_path, use_task=False)
    testfd = os.open(tmp_path / "fd-pass.txt", os.O_RDWR | os.O_CREAT, 0o600)
    received: list[int] = []
    try:
        assert ChannelFeature.FD_PASS in src.features
        assert ChannelFeature.FD_PASS in dst.features
        message = b"Hello World\0"
        await src.send_with_fds(message, [testfd, testfd, testfd])
        data, received = await dst.receive_with_fds(len(message))
        assert data == message
        assert len(received) == 3
        assert testfd not in received
        assert len(set(received)) == 3
        for fd in received:
            assert not os.get_inheritable(fd)  # close-on-exec
            assert os.get_blocking(fd)
        os.write(received[0], message)
        os.lseek(testfd, 0, os.SEEK_SET)
        assert os.read(testfd, len(message)) == message
    finally:
        for fd in [testfd, *received]:
            os.close(fd)
        for channel in (src, dst, srv):
            await channel.aclose()


async def test_unix_listen_cleanup(tmp_path: Path) -> None:
    """/io/channel/socket/unix-listen-cleanup: a bound, not listening socket keeps its path."""
    path = tmp_path / "test-io-channel-socket.sock"
    raw = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    await raw.bind(str(path))
    channel = SocketChannel(raw)
    assert ChannelFeature.LISTEN not in channel.features
    assert channel.local_address == trioqio.UnixAddress(str(path))
    assert stat.S_ISSOCK(path.stat().st_mode)
    await channel.aclose()
    assert path.exists()


async def test_abstract_listening_socket_closes_cleanly() -> None:
    raw = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    await raw.bind(f"\0trioqio-test-{os.getpid()}")
    raw.listen(1)
    channel = SocketChannel(raw)
    assert channel.local_address == trioqio.UnixAddress(f"@trioqio-test-{os.getpid()}")
    await channel.aclose()


# -- Trio's stream conformance --------------------------------------------------------


async def fill_stream(channel: SocketChannel) -> None:
    """Send until the socket buffers are full (then the stream is clogged)."""

    async def sender() -> None:
        while True:
            await channel.send_all(b"x" * 10000)

    async def stopper(nursery: trio.Nursery) -> None:
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        nursery.start_soon(stopper, nursery)


PairMaker = Callable[[], Awaitable[tuple[SocketChannel, SocketChannel]]]


async def unix_pair() -> tuple[SocketChannel, SocketChannel]:
    a, b = trio.socket.socketpair()
    return SocketChannel(a), SocketChannel(b)


async def tcp_pair() -> tuple[SocketChannel, SocketChannel]:
    raw = trio.socket.socket()
    await raw.bind(("127.0.0.1", 0))
    raw.listen(1)
    async with SocketChannel(raw) as srv:
        client = await trioqio.connect(f"tcp:127.0.0.1:{raw.getsockname()[1]}")
        server = await srv.accept()
    return client, server


@pytest.mark.parametrize("maker", [unix_pair, tcp_pair], ids=["unix", "tcp"])
async def test_conformance(maker: PairMaker) -> None:
    async def clogged() -> tuple[SocketChannel, SocketChannel]:
        left, right = await maker()
        await fill_stream(left)
        await fill_stream(right)
        return left, right

    await check_channel(maker, clogged)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SocketChannel, SocketChannel]]:
    left, right = await unix_pair()
    async with left, right:
        yield left, right


@pytest.fixture
async def tcp() -> AsyncIterator[tuple[SocketChannel, SocketChannel]]:
    left, right = await tcp_pair()
    async with left, right:
        yield left, right


# -- extras: peek, shutdown, options, addresses ----------------------------------------


async def test_peek_does_not_consume(pair: tuple[SocketChannel, SocketChannel]) -> None:
    a, b = pair
    await a.send_all(b"QEVM rest")
    assert await b.peek(4) == b"QEVM"
    assert await b.receive_exactly(9) == b"QEVM rest"
    await a.send_eof()
    assert await b.peek(4) == b""


async def test_shutdown_read_wakes_a_blocked_reader(
    pair: tuple[SocketChannel, SocketChannel],
) -> None:
    a, b = pair
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await b.receive_some(10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await b.shutdown(Shutdown.READ)
    assert got == [b""]
    await a.shutdown(Shutdown.WRITE)
    with pytest.raises(trio.ClosedResourceError, match="after sending EOF"):
        await a.send_all(b"x")


async def test_shutdown_both_and_bad_value(pair: tuple[SocketChannel, SocketChannel]) -> None:
    a, b = pair
    with pytest.raises(ValueError, match="not a Shutdown value"):
        await a.shutdown(7)  # type: ignore[arg-type]  # deliberately wrong
    await a.shutdown(Shutdown.BOTH)
    assert await b.receive_some(10) == b""


async def test_set_delay_and_cork(tcp: tuple[SocketChannel, SocketChannel]) -> None:
    a, _ = tcp
    sock = a.socket
    assert sock.getsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY)  # Trio default
    a.set_delay(True)
    assert not sock.getsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY)
    a.set_delay(False)
    assert sock.getsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY)
    a.set_cork(True)
    assert sock.getsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_CORK)
    a.set_cork(False)
    assert not sock.getsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_CORK)


async def test_hints_are_ignored_on_unix(pair: tuple[SocketChannel, SocketChannel]) -> None:
    a, b = pair
    a.set_delay(False)
    a.set_cork(True)
    await a.send_all(b"ok")
    assert await b.receive_exactly(2) == b"ok"


async def test_addresses_and_peer_pid(
    tcp: tuple[SocketChannel, SocketChannel], pair: tuple[SocketChannel, SocketChannel]
) -> None:
    client, server = tcp
    assert client.remote_address == server.local_address
    assert server.remote_address == client.local_address
    assert isinstance(client.local_address, trioqio.InetAddress)
    assert client.local_address.host == "127.0.0.1"
    with pytest.raises(trioqio.UnsupportedFeature, match="peer pid"):
        _ = client.peer_pid
    assert pair[0].peer_pid == os.getpid()


async def test_remote_address_of_listening_socket(tmp_path: Path) -> None:
    raw, _ = await listening_socket("ipv4", tmp_path)
    async with SocketChannel(raw) as srv:
        with pytest.raises(OSError) as info:
            _ = srv.remote_address
        assert info.value.errno == errno.ENOTCONN
        with pytest.raises(trioqio.UnsupportedFeature, match="peek"):
            await srv.peek(1)


async def test_writev_more_buffers_than_iov_max(pair: tuple[SocketChannel, SocketChannel]) -> None:
    a, b = pair
    buffers = [bytes([i % 256]) * 7 for i in range(3000)]
    buffers.insert(5, b"")  # empty buffers are skipped
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.writev, buffers)
        assert await b.receive_exactly(3000 * 7) == b"".join(buffers)


async def test_send_all_accepts_any_buffer(pair: tuple[SocketChannel, SocketChannel]) -> None:
    a, b = pair
    words = memoryview(array.array("i", [1, 2, 3]))
    await a.send_all(words)
    await a.send_all(b"")
    await a.writev([])
    assert await b.receive_exactly(words.nbytes) == words.tobytes()


async def test_receive_exactly_or_eof(pair: tuple[SocketChannel, SocketChannel]) -> None:
    a, b = pair
    assert await b.receive_exactly_or_eof(0) == b""
    await a.send_all(b"abc")
    await a.send_all(b"def")
    assert await b.receive_exactly_or_eof(6) == b"abcdef"
    await a.send_eof()
    assert await b.receive_exactly_or_eof(6) is None
    with pytest.raises(ValueError, match="negative"):
        await b.receive_exactly_or_eof(-1)


async def test_trace_events(tmp_path: Path) -> None:
    events: list[trioqio.trace.TraceEvent] = []
    with trioqio.trace.subscribed(events.append):
        srv, src, dst = await setup("ipv4", tmp_path, use_task=False)
        for channel in (src, dst, srv):
            await channel.aclose()
    names = [event.name for event in events]
    for name in (
        "qio_channel_socket_new",
        "qio_channel_socket_connect_sync",
        "qio_channel_socket_connect_complete",
        "qio_channel_socket_accept",
        "qio_channel_socket_accept_complete",
    ):
        assert name in names


# -- bad input ----------------------------------------------------------------------------


async def test_receive_exactly_reports_partial_eof(
    pair: tuple[SocketChannel, SocketChannel],
) -> None:
    a, b = pair
    await a.send_all(b"12345")
    await a.send_eof()
    with pytest.raises(trioqio.UnexpectedEOF, match="after 5 of 10 bytes") as info:
        await b.receive_exactly(10)
    assert (info.value.expected, info.value.received) == (10, 5)
    assert isinstance(info.value, trio.BrokenResourceError)


async def test_receive_exactly_eof_before_any_byte(
    pair: tuple[SocketChannel, SocketChannel],
) -> None:
    a, b = pair
    await a.send_eof()
    with pytest.raises(trioqio.UnexpectedEOF, match="before any of 4 bytes"):
        await b.receive_exactly(4)


async def test_fds_over_tcp_are_refused_before_any_byte(
    tcp: tuple[SocketChannel, SocketChannel], tmp_path: Path
) -> None:
    a, b = tcp
    assert ChannelFeature.FD_PASS not in a.features
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with pytest.raises(trioqio.UnsupportedFeature, match="FD_PASS") as info:
            await a.send_with_fds(b"payload", [fd])
        assert info.value.feature == "FD_PASS"
        with pytest.raises(trioqio.UnsupportedFeature):
            await b.receive_with_fds(10)
    finally:
        os.close(fd)
    await a.send_eof()
    assert await b.receive_some(100) == b""  # nothing left the socket


async def test_too_many_fds_is_an_error_before_any_byte(
    pair: tuple[SocketChannel, SocketChannel],
) -> None:
    a, b = pair
    with pytest.raises(ValueError, match="only 16 file descriptors can be sent, got 17"):
        await a.send_with_fds(b"x", [0] * 17)
    with pytest.raises(ValueError, match="at least one byte"):
        await a.send_with_fds(b"", [0])
    with pytest.raises(ValueError, match="not a file descriptor"):
        await a.send_with_fds(b"x", [-1])
    with pytest.raises(ValueError, match="max_fds"):
        await b.receive_with_fds(10, max_fds=17)
    with pytest.raises(ValueError, match="max_bytes"):
        await b.receive_with_fds(0)
    await a.send_eof()
    assert await b.receive_some(100) == b""


async def test_send_with_fds_large_payload_and_no_fds(
    pair: tuple[SocketChannel, SocketChannel], tmp_path: Path
) -> None:
    a, b = pair
    small_buffers(a, b)
    payload = bytes(range(256)) * 2048  # larger than the socket buffers
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    received: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send_with_fds, payload, [fd])
            first, received = await b.receive_with_fds(len(payload))
            rest = await b.receive_exactly(len(payload) - len(first))
        assert first + rest == payload
        assert len(received) == 1
        await a.send_with_fds(b"plain", [])
        assert await b.receive_with_fds(10) == (b"plain", [])
        await a.send_eof()
        assert await b.receive_with_fds(10) == (b"", [])
    finally:
        for each in [fd, *received]:
            os.close(each)


async def test_truncated_control_data_closes_the_fds(
    pair: tuple[SocketChannel, SocketChannel], tmp_path: Path
) -> None:
    a, b = pair
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await a.send_with_fds(b"four", [fd] * 4)
        # Only room for 2: the kernel truncates the control data; what arrived is closed
        # (the autouse leak check proves it).
        with pytest.raises(trio.BrokenResourceError, match="more than 2 file descriptors"):
            await b.receive_with_fds(10, max_fds=2)
    finally:
        os.close(fd)


async def test_peer_reset_mid_writev_is_broken_resource(
    tcp: tuple[SocketChannel, SocketChannel],
) -> None:
    a, b = tcp
    small_buffers(a, b)
    buffers = trioqio.testing.data_test_buffers() * 4

    async def reset_peer() -> None:
        await trio.testing.wait_all_tasks_blocked()
        # SO_LINGER 0: close sends RST instead of FIN.
        b.socket.setsockopt(
            stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, bytes(array.array("i", [1, 0]))
        )
        await b.aclose()

    with pytest.RaisesGroup(pytest.RaisesExc(trio.BrokenResourceError, match="unable to write")):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reset_peer)
            await a.writev(buffers)


async def test_receive_after_peer_reset_is_broken(
    tcp: tuple[SocketChannel, SocketChannel],
) -> None:
    a, b = tcp
    await a.send_all(b"unread")  # unread data makes close send RST
    assert await b.peek(6) == b"unread"  # it has arrived, and stays unread
    await b.aclose()

    async def use_it() -> None:
        for _ in range(3):
            await a.send_all(b"x" * 65536)
            await a.receive_some(10)

    with pytest.raises(trio.BrokenResourceError):
        await use_it()


async def test_closed_channel(pair: tuple[SocketChannel, SocketChannel]) -> None:
    a, _ = pair
    await a.aclose()
    await a.aclose()  # closing twice is a no-op
    for operation in (
        a.send_all(b"x"),
        a.writev([b"x"]),
        a.receive_some(1),
        a.receive_exactly(3),
        a.peek(1),
        a.send_eof(),
        a.wait_send_all_might_not_block(),
        a.shutdown(),
        a.send_with_fds(b"x", [0]),
        a.receive_with_fds(1),
    ):
        with pytest.raises(trio.ClosedResourceError):
            await operation
    with pytest.raises(trio.ClosedResourceError):
        _ = a.local_address


async def test_close_wakes_a_blocked_reader(pair: tuple[SocketChannel, SocketChannel]) -> None:
    _, b = pair
    with pytest.RaisesGroup(trio.ClosedResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.receive_some, 10)
            await trio.testing.wait_all_tasks_blocked()
            await b.aclose()


async def test_concurrent_receivers_are_busy(pair: tuple[SocketChannel, SocketChannel]) -> None:
    a, b = pair
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.receive_some, 10)
            nursery.start_soon(b.receive_exactly, 10)
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.peek, 10)
            nursery.start_soon(b.receive_with_fds, 10)
    await a.send_eof()


async def test_busy_messages_name_the_channel() -> None:
    # The guards word the refusal once it happens, with the channel's name (or class).
    a, b = trio.socket.socketpair()
    async with SocketChannel(a, name="left") as left, SocketChannel(b) as right:
        receiving = "^another task is already receiving on socket channel 'left'$"
        with pytest.RaisesGroup(pytest.RaisesExc(trio.BusyResourceError, match=receiving)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(left.receive_some, 10)
                nursery.start_soon(left.receive_some, 10)
        await fill_stream(right)
        sending = "^another task is already sending on socket channel 'SocketChannel'$"
        with pytest.RaisesGroup(pytest.RaisesExc(trio.BusyResourceError, match=sending)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(right.send_all, b"x")
                nursery.start_soon(right.send_eof)


async def test_concurrent_senders_are_busy(pair: tuple[SocketChannel, SocketChannel]) -> None:
    a, _ = pair
    await fill_stream(a)
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.writev, [b"x"])
            nursery.start_soon(a.send_with_fds, b"y", [0])


async def test_constructor_bad_input() -> None:
    with stdlib_socket.socket() as plain, pytest.raises(TypeError, match="needs a Trio socket"):
        SocketChannel(plain)  # type: ignore[arg-type]  # deliberately wrong
    dgram = trio.socket.socket(type=stdlib_socket.SOCK_DGRAM)
    with pytest.raises(ValueError, match="SOCK_STREAM"):
        SocketChannel(dgram)
    dgram.close()  # the caller still owned it


async def test_from_fd_bad_input_leaves_fd_with_caller() -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(OSError) as info:
            SocketChannel.from_fd(read_end)
        assert info.value.errno == errno.ENOTSOCK
        os.fstat(read_end)  # still open
    finally:
        os.close(read_end)
        os.close(write_end)
    dgram = stdlib_socket.socket(type=stdlib_socket.SOCK_DGRAM)
    with pytest.raises(ValueError, match="SOCK_STREAM"):
        SocketChannel.from_fd(dgram.fileno())
    dgram.close()  # still ours: from_fd did not close it
    with pytest.raises(ValueError, match="non-negative"):
        SocketChannel.from_fd(-1)


async def test_accept_bad_input(pair: tuple[SocketChannel, SocketChannel], tmp_path: Path) -> None:
    a, _ = pair
    with pytest.raises(trioqio.UnsupportedFeature, match="LISTEN"):
        await a.accept()
    raw, _ = await listening_socket("ipv4", tmp_path)
    srv = SocketChannel(raw)
    await srv.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await srv.accept()


async def test_accept_becomes_listen_after_late_listen() -> None:
    raw = trio.socket.socket()
    await raw.bind(("127.0.0.1", 0))
    async with SocketChannel(raw) as srv:
        assert ChannelFeature.LISTEN not in srv.features
        raw.listen(1)
        client = await trioqio.connect(f"tcp:127.0.0.1:{raw.getsockname()[1]}")
        async with client, await srv.accept():
            assert ChannelFeature.LISTEN in srv.features
            assert ChannelFeature.READ_MSG_PEEK not in srv.features


class _FlakyAccept:
    """Wraps a listening trio socket so its accept fails with chosen errnos first.

    A real kernel produces ECONNABORTED/EMFILE only under conditions a unit test cannot
    arrange reliably, so this is the one place a fake stands in."""

    def __init__(self, sock: trio.socket.SocketType, errnos: list[int]) -> None:
        self.sock = sock
        self.errnos = errnos

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)

    async def accept(self) -> tuple[trio.socket.SocketType, object]:
        if self.errnos:
            await trio.lowlevel.checkpoint()
            code = self.errnos.pop(0)
            raise OSError(code, os.strerror(code))
        return await self.sock.accept()


@pytest.mark.parametrize(
    ("errnos", "raised"),
    [
        ([errno.ECONNABORTED, errno.EPROTO, errno.EPERM], None),
        ([errno.EMFILE], errno.EMFILE),
        ([errno.ENOBUFS], errno.ENOBUFS),
    ],
)
async def test_accept_retries_routine_errors_only(
    errnos: list[int], raised: int | None, tmp_path: Path
) -> None:
    raw, address = await listening_socket("ipv4", tmp_path)
    async with SocketChannel(raw) as srv:
        srv._sock = _FlakyAccept(raw, errnos)  # type: ignore[assignment]  # see _FlakyAccept
        async with await trioqio.connect(address) as client:
            if raised is None:
                async with await srv.accept() as accepted:
                    assert accepted.remote_address == client.local_address
            else:
                with pytest.raises(OSError) as info:
                    await srv.accept()
                assert info.value.errno == raised
                async with await srv.accept():  # the listener keeps working afterwards
                    pass


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_accepted_channel_matches_the_public_constructor(kind: str, tmp_path: Path) -> None:
    # accept() builds its client without the SO_ACCEPTCONN probe; the result must be the
    # channel SocketChannel(sock) would have made.
    if kind == "tcp":
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.1", 0))
    else:
        sock = trio.socket.socket(stdlib_socket.AF_UNIX)
        await sock.bind(str(tmp_path / "s"))
    sock.listen(1)
    async with SocketChannel(sock, name="srv") as srv:
        peer = trio.socket.socket(sock.family)
        with peer:
            await peer.connect(sock.getsockname())
            async with await srv.accept() as accepted:
                if kind == "tcp":  # before the reference sets it again on the same socket
                    opt = accepted.socket.getsockopt(
                        stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY
                    )
                    assert opt
                    lowat = getattr(stdlib_socket, "TCP_NOTSENT_LOWAT", None)
                    if lowat is not None:  # Linux, macOS: Trio's small unsent backlog
                        assert accepted.socket.getsockopt(stdlib_socket.IPPROTO_TCP, lowat) == 2**14
                reference = SocketChannel(accepted.socket, name="srv")
                assert accepted.name == "srv"
                assert accepted.features == reference.features
                assert ChannelFeature.LISTEN not in accepted.features
                assert accepted.local_address == reference.local_address
                assert accepted.remote_address == reference.remote_address
                await peer.send(b"hi")
                assert await accepted.peek(2) == b"hi"
                await accepted.aclose()
        if kind == "unix":  # only the listening channel unlinks the path
            assert (tmp_path / "s").exists()
