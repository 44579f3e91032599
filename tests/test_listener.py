"""NetListener: QEMU's QIONetListener rules (reference §2, §4.9) adapted to Trio."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from _listener_helpers import (
    LocalhostResolver,
    connect,
    has_ipv6_loopback,
    read_all,
    read_reply,
    reply_ok,
    system_localhost_families,
    wait_backlogged,
    wait_until,
)

import trioqio
from trioqio import ChannelFeature, InetAddress, NetListener, UnixAddress

needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) here")


@pytest.fixture
def events() -> Iterator[list[trioqio.trace.TraceEvent]]:
    seen: list[trioqio.trace.TraceEvent] = []
    with trioqio.trace.subscribed(seen.append):
        yield seen


def _names(events: list[trioqio.trace.TraceEvent], prefix: str) -> list[str]:
    return [e.name for e in events if e.name.startswith(prefix)]


# -- open, addresses, serving ---------------------------------------------------------------


async def test_open_localhost_port_zero() -> None:
    async with NetListener(name="mig") as listener:
        assert not listener.is_connected
        channels = await listener.open("tcp:localhost:0", backlog=4)
        assert len(channels) >= 1
        assert listener.is_connected
        assert listener.name == "mig"
        assert listener.channels == channels
        for channel, address in zip(channels, listener.addresses, strict=True):
            assert isinstance(channel, trioqio.SocketChannel)
            assert ChannelFeature.LISTEN in channel.features
            assert channel.name == "mig"
            assert isinstance(address, InetAddress)
            assert address.port != 0
            assert channel.local_address == address
        # One port for every socket of a port-0 open.
        assert len({a.port for a in listener.addresses if isinstance(a, InetAddress)}) == 1


async def test_each_client_calls_the_handler_once_with_its_channel() -> None:
    seen: list[tuple[trioqio.SocketChannel, trioqio.SocketAddress]] = []

    async def handler(channel: trioqio.SocketChannel) -> None:
        seen.append((channel, channel.remote_address))
        await channel.send_all(b"ok")

    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(handler)
        for _ in range(3):
            assert await read_reply(listener.addresses[0]) == b"ok"
        assert listener.statistics().accepted == 3
    assert len(seen) == 3
    assert len({id(c) for c, _ in seen}) == 3
    for client, remote in seen:
        assert isinstance(remote, InetAddress)
        assert remote.host == "127.0.0.1"
        # The listener closed each client channel when its handler returned.
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"x")


async def test_handler_channel_closed_after_handler_returns() -> None:
    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(reply_ok)
        stream = await connect(listener.addresses[0])
        async with stream:
            assert await stream.receive_some() == b"ok"
            assert await stream.receive_some() == b""  # EOF: the server side closed


async def test_two_hundred_clients_at_once_all_served() -> None:
    async def handler(channel: trioqio.SocketChannel) -> None:
        data = await channel.receive_exactly(4)
        await channel.send_all(data[::-1])

    results: list[bytes] = []

    async def client(address: trioqio.SocketAddress, index: int) -> None:
        stream = await connect(address)
        async with stream:
            await stream.send_all(b"%04d" % index)
            results.append(await stream.receive_some())

    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0", backlog=256)
        listener.set_client_func(handler)
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(client, listener.addresses[0], i)
        assert listener.statistics().accepted == 200
    assert sorted(results) == sorted((b"%04d" % i)[::-1] for i in range(200))


@needs_ipv6
async def test_ipv6_listener() -> None:
    async with NetListener() as listener:
        (channel,) = await listener.open("tcp:[::1]:0")
        assert channel.local_address == listener.addresses[0]
        listener.set_client_func(reply_ok)
        assert await read_reply(listener.addresses[0]) == b"ok"


class _DualResolver(trio.abc.HostnameResolver):
    """Maps 'dual.test' to both loopbacks so one open binds IPv4 and IPv6."""

    async def getaddrinfo(  # type: ignore[override]  # simplified signature for the test
        self, host: bytes | None, port: object, *args: object, **kwargs: object
    ) -> list[tuple[int, int, int, str, tuple[object, ...]]]:
        number = int(port) if isinstance(port, (int, str, bytes)) else 0
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", number)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", number, 0, 0)),
        ]

    async def getnameinfo(self, *args: object) -> tuple[str, str]:  # never called
        raise NotImplementedError


@needs_ipv6
async def test_port_zero_open_shares_one_port_across_families() -> None:
    old = trio.socket.set_custom_hostname_resolver(_DualResolver())
    try:
        async with NetListener() as listener:
            channels = await listener.open("tcp:dual.test:0")
            listener.set_client_func(reply_ok)
            hosts = [a.host for a in listener.addresses if isinstance(a, InetAddress)]
            ports = {a.port for a in listener.addresses if isinstance(a, InetAddress)}
            assert len(channels) == 2
            assert hosts == ["127.0.0.1", "::1"]
            assert len(ports) == 1
            for address in listener.addresses:
                assert await read_reply(address) == b"ok"
    finally:
        trio.socket.set_custom_hostname_resolver(old)


async def test_port_taken_on_another_socket_retries_then_keeps_what_listens(
    events: list[trioqio.trace.TraceEvent],
) -> None:
    # Two port-0 addresses on the same IPv4 host: the second can never get the first's
    # port, so every attempt is retried and the last one keeps the first socket.
    from trioqio._socket_util import PORT_ATTEMPTS, listen_all

    socks = listen_all([InetAddress("127.0.0.1", 0), InetAddress("127.0.0.1", 0)], 4)
    try:
        assert len(socks) == 1
        assert len(_names(events, "qio_channel_socket_listen_fail")) == PORT_ATTEMPTS
    finally:
        for sock in socks:
            sock.close()


async def test_open_several_times_and_on_unix(tmp_path: Path) -> None:
    path = tmp_path / "l.sock"
    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        await listener.open(f"unix:{path}")
        await listener.open(UnixAddress(f"@trioqio-test-{os.getpid()}"))
        assert listener.addresses[1:] == [
            UnixAddress(str(path)),
            UnixAddress(f"@trioqio-test-{os.getpid()}"),
        ]
        listener.set_client_func(reply_ok)
        for address in listener.addresses:
            assert await read_reply(address) == b"ok"
        assert path.exists()
    assert not path.exists()  # closing a listening UNIX socket unlinks its path


async def test_add_adopts_a_listening_channel() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen()
    channel = trioqio.SocketChannel(sock)
    async with NetListener(name="adopted") as listener:
        listener.set_client_func(reply_ok)
        listener.add(channel)  # accepting starts at once: a handler is already set
        assert channel.name == "adopted"
        assert listener.is_connected
        assert await read_reply(listener.addresses[0]) == b"ok"
    with pytest.raises(trio.ClosedResourceError):
        await channel.accept()


async def test_fd_address_adopts_an_inherited_socket() -> None:
    raw = socket.create_server(("127.0.0.1", 0))
    fd = raw.detach()
    async with NetListener() as listener:
        (channel,) = await listener.open(f"fd:{fd}")
        assert channel.socket.fileno() == fd
        listener.set_client_func(reply_ok)
        assert await read_reply(listener.addresses[0]) == b"ok"
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)  # the listener owned and closed it


# -- set_client_func ------------------------------------------------------------------------


async def test_pause_queues_clients_in_the_backlog_and_resume_serves_them() -> None:
    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(reply_ok)
        assert await read_reply(listener.addresses[0]) == b"ok"
        listener.set_client_func(None)
        streams = [await connect(listener.addresses[0]) for _ in range(3)]
        # The clients wait in the kernel's backlog; an accept loop still blocked on the
        # socket would be woken now, so once every task is blocked, nobody accepted.
        await wait_backlogged(
            listener.channels[0].socket, unless=lambda: listener.statistics().accepted > 1
        )
        await trio.testing.wait_all_tasks_blocked()
        assert listener.statistics().accepted == 1  # nothing accepted while paused
        listener.set_client_func(reply_ok)
        for stream in streams:
            async with stream:
                assert await stream.receive_some() == b"ok"
        assert listener.statistics().accepted == 4


async def test_setting_the_same_handler_is_a_no_op(
    events: list[trioqio.trace.TraceEvent],
) -> None:
    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(reply_ok)
        before = _names(events, "qio_net_listener_")
        listener.set_client_func(reply_ok)
        assert _names(events, "qio_net_listener_") == before
        assert before == ["qio_net_listener_watch"]


async def test_replacing_the_handler_unwatches_then_watches(
    events: list[trioqio.trace.TraceEvent],
) -> None:
    async def other(channel: trioqio.SocketChannel) -> None:
        await channel.send_all(b"other")

    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(reply_ok)
        listener.set_client_func(other)
        assert _names(events, "qio_net_listener_") == [
            "qio_net_listener_watch",
            "qio_net_listener_unwatch",
            "qio_net_listener_watch",
        ]
        assert await read_reply(listener.addresses[0]) == b"other"
        assert _names(events, "qio_net_listener_callback") == ["qio_net_listener_callback"]


async def test_swapping_handlers_under_load_never_drops_a_client() -> None:
    served: list[str] = []

    def make(tag: str) -> trioqio.ClientHandler:
        async def handler(channel: trioqio.SocketChannel) -> None:
            served.append(tag)
            await channel.send_all(tag.encode())

        return handler

    handlers = [make("a"), make("b"), None, make("c")]
    replies: list[bytes] = []

    async def client(address: trioqio.SocketAddress) -> None:
        replies.append(await read_reply(address))

    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0", backlog=512)
        listener.set_client_func(handlers[0])
        async with trio.open_nursery() as nursery:
            for i in range(300):
                nursery.start_soon(client, listener.addresses[0])
                listener.set_client_func(handlers[i % 4])
                if i % 7 == 0:
                    await trio.sleep(0)
            listener.set_client_func(handlers[0])
    assert len(replies) == 300
    assert all(reply in (b"a", b"b", b"c") for reply in replies)
    assert len(served) == 300


async def test_running_handler_survives_replacement_and_pause() -> None:
    release = trio.Event()
    finished: list[str] = []

    async def slow(channel: trioqio.SocketChannel) -> None:
        await release.wait()
        await channel.send_all(b"slow")
        finished.append("slow")

    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(slow)
        stream = await connect(listener.addresses[0])
        await trio.testing.wait_all_tasks_blocked()
        assert len(listener.clients) == 1
        listener.set_client_func(None)
        listener.set_client_func(reply_ok)
        assert await read_reply(listener.addresses[0]) == b"ok"
        release.set()
        async with stream:
            assert await stream.receive_some() == b"slow"
    assert finished == ["slow"]


# -- wait_client ----------------------------------------------------------------------------


async def test_wait_client_returns_the_first_client_and_restores_the_handler(
    events: list[trioqio.trace.TraceEvent],
) -> None:
    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(reply_ok)
        got: list[trioqio.SocketChannel] = []

        async def waiter() -> None:
            got.append(await listener.wait_client())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            stream = await connect(listener.addresses[0])
        (client,) = got
        assert _names(events, "qio_net_listener_")[:2] == [
            "qio_net_listener_watch",
            "qio_net_listener_unwatch",
        ]
        assert _names(events, "qio_net_listener_")[-1] == "qio_net_listener_watch"
        assert listener.statistics().accepted == 1  # wait_client clients count too
        assert await read_reply(listener.addresses[0]) == b"ok"  # handler restored
    # The caller owns the client: it outlives the listener.
    async with client, stream:
        await client.send_all(b"mine")
        assert await stream.receive_some() == b"mine"


async def test_wait_client_across_sockets_drops_nothing(tmp_path: Path) -> None:
    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        await listener.open(f"unix:{tmp_path}/w.sock")
        streams = [await connect(address) for address in listener.addresses]
        await wait_backlogged(*(channel.socket for channel in listener.channels))
        first = await listener.wait_client()
        second = await listener.wait_client()
        async with first, second:
            families = {first.socket.family, second.socket.family}
            assert families == {socket.AF_INET, socket.AF_UNIX}
        for stream in streams:
            await stream.aclose()


async def test_wait_client_needs_an_open_socket() -> None:
    async with NetListener() as listener:
        with pytest.raises(trio.ClosedResourceError, match="no open socket"):
            await listener.wait_client()
        await listener.open("tcp:127.0.0.1:0")
        await listener.disconnect()
        with pytest.raises(trio.ClosedResourceError, match="no open socket"):
            await listener.wait_client()


async def test_wait_client_is_for_one_task_at_a_time() -> None:
    async with NetListener() as listener, trio.open_nursery() as nursery:
        await listener.open("tcp:127.0.0.1:0")
        nursery.start_soon(listener.wait_client)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await listener.wait_client()
        nursery.cancel_scope.cancel()


# -- disconnect, aclose, leaving --------------------------------------------------------------


async def test_disconnect_closes_sockets_unlinks_and_leaves_handlers(tmp_path: Path) -> None:
    path = tmp_path / "d.sock"
    release = trio.Event()

    async def handler(channel: trioqio.SocketChannel) -> None:
        await release.wait()
        await channel.send_all(b"still here")

    async with NetListener() as listener:
        channels = await listener.open(f"unix:{path}")
        listener.set_client_func(handler)
        stream = await connect(listener.addresses[0])
        await trio.testing.wait_all_tasks_blocked()
        await listener.disconnect()
        assert not listener.is_connected
        assert not path.exists()
        assert listener.channels == channels  # QEMU: nsioc unchanged
        assert len(listener.clients) == 1
        release.set()
        async with stream:
            assert await stream.receive_some() == b"still here"
        await listener.disconnect()  # a second disconnect is a no-op
        # A later open connects the listener again.
        await listener.open("tcp:127.0.0.1:0")
        assert listener.is_connected
        assert await read_reply(listener.addresses[-1]) == b"still here"


#: A reply larger than the socket buffers hold: sending it takes the client reading.
BIG_REPLY = 1 << 20


async def test_aclose_grace_lets_a_mid_request_handler_finish_and_cuts_a_slow_one() -> None:
    grace = 2.0
    work = trio.Event()  # let go only once aclose is waiting out the grace period
    mid_request: list[bytes] = []
    cut: list[bytes] = []

    async def handler(channel: trioqio.SocketChannel) -> None:
        tag = await channel.receive_exactly(1)
        mid_request.append(tag)
        try:
            await work.wait()
            if tag == b"s":
                await trio.sleep(grace * 30)  # this request needs far more than the grace
            await channel.send_all(b"r" * BIG_REPLY)
        except trio.Cancelled:
            cut.append(tag)
            raise

    reports: list[trioqio.ShutdownReport] = []
    took: list[float] = []

    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(handler)
        fast = await connect(listener.addresses[0])
        slow = await connect(listener.addresses[0])
        async with fast, slow:
            await fast.send_all(b"f")
            await slow.send_all(b"s")
            await wait_until(lambda: len(mid_request) == 2)

            async def close() -> None:
                began = trio.current_time()
                reports.append(await listener.aclose(grace=grace))
                took.append(trio.current_time() - began)

            with trio.fail_after(grace + 10):
                async with trio.open_nursery() as nursery:
                    assert not listener.draining.is_set()
                    nursery.start_soon(close)
                    await listener.draining.wait()
                    assert listener.shutdown_report is None
                    await trio.testing.wait_all_tasks_blocked()
                    # aclose has disconnected and is waiting out the grace period; both
                    # handlers are still in the middle of their requests.
                    assert not listener.is_connected
                    assert len(listener.clients) == 2
                    assert not cut
                    work.set()
                    assert await read_all(fast) == b"r" * BIG_REPLY  # all of it, then EOF
            assert await read_all(slow) == b""
        (report,) = reports
        assert report == trioqio.ShutdownReport(finished=1, cut=1)
        assert listener.shutdown_report is report
        assert await listener.aclose(grace=5) is report  # idempotent
        assert not listener.clients
    assert cut == [b"s"]
    assert took[0] >= grace  # the slow one had its whole grace period


async def test_aclose_grace_ends_when_the_last_handler_returns() -> None:
    started = trio.Event()
    listener = NetListener()

    async def handler(channel: trioqio.SocketChannel) -> None:
        request = await channel.receive_exactly(4)
        started.set()
        await listener.draining.wait()  # asked to drain: finish the request and return
        await trio.sleep(0.2)  # which takes a while, but far less than the grace
        await channel.send_all(b"done " + request)

    async with listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(handler)
        stream = await connect(listener.addresses[0])
        async with stream:
            await stream.send_all(b"req1")
            with trio.fail_after(5):
                await started.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert not listener.draining.is_set()
            assert len(listener.clients) == 1
            began = trio.current_time()
            with trio.fail_after(10):  # far less than the grace: it ends with the handler
                report = await listener.aclose(grace=600)
            assert trio.current_time() - began >= 0.2
            assert listener.draining.is_set()
            assert report == trioqio.ShutdownReport(finished=1, cut=0)
            assert await read_all(stream) == b"done req1"


async def test_leaving_the_block_cancels_handlers_and_closes_their_channels() -> None:
    cancelled: list[bool] = []
    channels: list[trioqio.SocketChannel] = []

    async def handler(channel: trioqio.SocketChannel) -> None:
        channels.append(channel)
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise

    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(handler)
        streams = [await connect(listener.addresses[0]) for _ in range(2)]
        await wait_until(lambda: len(listener.clients) == 2)
    assert cancelled == [True, True]
    assert listener.shutdown_report == trioqio.ShutdownReport(finished=0, cut=2)
    for channel in channels:
        with pytest.raises(trio.ClosedResourceError):
            await channel.send_all(b"x")
    for stream in streams:
        async with stream:
            assert await stream.receive_some() == b""


async def test_aclose_cancelled_during_grace_still_closes_everything() -> None:
    async def forever(channel: trioqio.SocketChannel) -> None:
        await trio.sleep_forever()

    async with NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(forever)
        stream = await connect(listener.addresses[0])
        await wait_until(lambda: len(listener.clients) == 1)
        with trio.move_on_after(0.05):
            await listener.aclose(grace=math.inf)
        assert not listener.clients
        assert listener.shutdown_report == trioqio.ShutdownReport(finished=0, cut=1)
        await stream.aclose()


# -- handler errors -------------------------------------------------------------------------


async def test_handler_error_is_logged_counted_and_others_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(channel: trioqio.SocketChannel) -> None:
        if await channel.receive_some(1) == b"x":
            raise ValueError("bad client")
        await channel.send_all(b"ok")

    caplog.set_level(logging.ERROR, logger="trioqio.listener")
    async with NetListener(name="errs") as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(handler)
        for _ in range(20):
            bad = await connect(listener.addresses[0])
            async with bad:
                await bad.send_all(b"x")
                assert await bad.receive_some() == b""  # its channel was closed
        good = await connect(listener.addresses[0])
        async with good:
            await good.send_all(b"g")
            assert await good.receive_some() == b"ok"
        stats = listener.statistics()
    assert stats.handler_errors == 20
    records = [r for r in caplog.records if r.name == "trioqio.listener"]
    assert 1 <= len(records) <= 2  # rate-limited
    assert "bad client" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert stats.log_suppressed == 20 - len(records)


async def test_handler_error_raise_policy_propagates() -> None:
    async def handler(channel: trioqio.SocketChannel) -> None:
        raise ValueError("boom")

    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="boom")):
        async with NetListener(on_handler_error="raise") as listener:
            await listener.open("tcp:127.0.0.1:0")
            listener.set_client_func(handler)
            stream = await connect(listener.addresses[0])
            async with stream:
                await trio.sleep_forever()


async def test_handler_error_callable_receives_the_error() -> None:
    errors: list[Exception] = []

    async def handler(channel: trioqio.SocketChannel) -> None:
        raise KeyError("k")

    async with NetListener(on_handler_error=errors.append) as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(handler)
        assert await read_reply(listener.addresses[0]) == b""
        assert await read_reply(listener.addresses[0]) == b""
        assert listener.statistics().handler_errors == 2
    assert [type(e) for e in errors] == [KeyError, KeyError]


# -- max_clients ------------------------------------------------------------------------------


async def test_max_clients_pauses_accepting_and_serves_everyone() -> None:
    running = 0
    peak = 0
    release = trio.Event()

    async def handler(channel: trioqio.SocketChannel) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        await channel.send_all(b"ok")
        running -= 1

    replies: list[bytes] = []

    async def client(address: trioqio.SocketAddress) -> None:
        replies.append(await read_reply(address))

    async with NetListener(max_clients=2) as listener:
        await listener.open("tcp:127.0.0.1:0")
        await listener.open("tcp:127.0.0.1:0")  # two sockets share the limit
        listener.set_client_func(handler)
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(client, listener.addresses[i % 2])
            await wait_until(lambda: len(listener.clients) == 2)
            await trio.testing.wait_all_tasks_blocked(0.05)
            stats = listener.statistics()
            # The rest wait in the backlog; one the second socket returned in the moment
            # the budget filled may wait accepted (tests/test_listener_memory.py pins it).
            assert stats.running == 2
            assert stats.accepted - stats.pending == 2
            assert stats.pending <= 1
            release.set()
    assert peak == 2
    assert replies == [b"ok"] * 8


# -- max_clients: one budget across every socket (issue 14) -----------------------------------
#
# The old accept loops each took a max_clients slot before blocking in accept, so an idle
# socket could hold the slot a client on another socket was waiting for. Trio starts the
# loops in a random order, so each test repeats its scenario ROUNDS times: the old code
# starves a client in about half the rounds, the fixed code in none.

ROUNDS = 20


class _Gated:
    """A handler that records each client's 2-byte tag and holds it until released."""

    def __init__(self) -> None:
        self.started: list[bytes] = []
        self.kinds: dict[bytes, type] = {}
        self._gates: dict[bytes, trio.Event] = {}

    def _gate(self, tag: bytes) -> trio.Event:
        return self._gates.setdefault(tag, trio.Event())

    async def __call__(self, stream: trio.abc.Stream) -> None:
        tag = b""
        while len(tag) < 2:
            chunk = await stream.receive_some(2 - len(tag))
            assert chunk, "client left before sending its tag"
            tag += chunk
        self.started.append(tag)
        self.kinds[tag] = type(stream)
        await self._gate(tag).wait()
        await stream.send_all(b"bye " + tag)

    def release(self, tag: bytes) -> None:
        self._gate(tag).set()

    async def wait_started(self, count: int) -> None:
        await wait_until(lambda: len(self.started) >= count)


def _accepted_over(listener: NetListener, count: int) -> Callable[[], bool]:
    return lambda: listener.statistics().accepted > count


async def _client(
    stack: contextlib.AsyncExitStack, address: trioqio.SocketAddress, tag: bytes
) -> trio.SocketStream:
    stream = await connect(address)
    stack.push_async_callback(trio.aclose_forcefully, stream)
    await stream.send_all(tag)
    return stream


async def _bye(stream: trio.SocketStream, tag: bytes) -> None:
    with trio.fail_after(5):
        assert await read_all(stream) == b"bye " + tag


async def _assert_served(
    listener: NetListener, handler: _Gated, tags: list[bytes], *, running: int
) -> None:
    # Every task is blocked, so no accept is about to happen: exactly these clients were
    # accepted and served, ``running`` of them still are, and none waits accepted.
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(handler.started) == sorted(tags)
    stats = listener.statistics()
    assert (stats.accepted, stats.running, stats.pending) == (len(tags), running, 0)


async def test_max_clients_freed_slot_serves_a_client_waiting_on_another_socket(
    tmp_path: Path,
) -> None:
    for round_ in range(ROUNDS):
        handler = _Gated()
        async with NetListener(max_clients=2) as listener, contextlib.AsyncExitStack() as stack:
            (tcp,) = await listener.open("tcp:127.0.0.1:0")
            (unix,) = await listener.open(f"unix:{tmp_path}/r{round_}.sock")
            listener.set_client_func(handler)
            c1 = await _client(stack, tcp.local_address, b"c1")
            c2 = await _client(stack, unix.local_address, b"c2")
            await handler.wait_started(2)
            c3 = await _client(stack, unix.local_address, b"c3")
            # c3 is in the UNIX socket's backlog (unless it was wrongly accepted).
            await wait_backlogged(unix.socket, unless=_accepted_over(listener, 2))
            await _assert_served(listener, handler, [b"c1", b"c2"], running=2)  # c3 waits
            handler.release(b"c1")
            await _bye(c1, b"c1")
            await handler.wait_started(3)  # the freed slot serves c3, within 5 s
            assert handler.started[2] == b"c3"
            await _assert_served(listener, handler, [b"c1", b"c2", b"c3"], running=2)
            handler.release(b"c2")
            handler.release(b"c3")
            await _bye(c2, b"c2")
            await _bye(c3, b"c3")


async def test_max_clients_one_serves_a_first_client_on_the_second_socket(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        async with NetListener(max_clients=1) as listener:
            await listener.open("tcp:127.0.0.1:0")
            await listener.open(f"unix:{tmp_path}/r{round_}.sock")
            listener.set_client_func(reply_ok)
            tcp, unix = listener.addresses
            with trio.fail_after(5):
                assert await read_reply(unix) == b"ok"
                assert await read_reply(tcp) == b"ok"
            assert listener.statistics().accepted == 2


_LOCALHOST_ORDERS = {"ipv6-first": ("::1", "127.0.0.1"), "ipv4-first": ("127.0.0.1", "::1")}


@pytest.fixture(params=["system", *_LOCALHOST_ORDERS])
def localhost_order(request: pytest.FixtureRequest) -> tuple[str, ...] | None:
    """How a stand-in resolver orders ``localhost``; None: the system gives both families."""
    if request.param == "system":
        families = system_localhost_families()
        if families != {socket.AF_INET, socket.AF_INET6}:
            names = sorted(family.name for family in families)
            pytest.skip(f"localhost resolves to {names} only here; the other params stand in")
        return None
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback (::1) here")
    return _LOCALHOST_ORDERS[request.param]


async def test_max_clients_one_on_localhost_serves_either_family_first(
    localhost_order: tuple[str, ...] | None,
) -> None:
    if localhost_order is not None:
        # The resolver is this run's (a RunVar): nothing to restore.
        trio.socket.set_custom_hostname_resolver(LocalhostResolver(localhost_order))
    for round_ in range(ROUNDS):
        async with NetListener(max_clients=1) as listener:
            await listener.open("tcp:localhost:0")
            by_host = {a.host: a for a in listener.addresses if isinstance(a, InetAddress)}
            assert sorted(by_host) == ["127.0.0.1", "::1"]
            listener.set_client_func(reply_ok)
            order = ["127.0.0.1", "::1"] if round_ % 2 == 0 else ["::1", "127.0.0.1"]
            for host in order:
                with trio.fail_after(5):
                    assert await read_reply(by_host[host]) == b"ok", host
            assert listener.statistics().accepted == 2


async def test_max_clients_is_one_budget_over_own_sockets_and_trio_listeners() -> None:
    for round_ in range(ROUNDS):
        handler = _Gated()
        (trio_tcp,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with NetListener(max_clients=1) as listener, contextlib.AsyncExitStack() as stack:
            (own,) = await listener.open("tcp:127.0.0.1:0")
            listener.add_listener(trio_tcp)
            listener.set_client_func(handler)
            own_address, trio_address = listener.addresses
            sockets = {own_address: own.socket, trio_address: trio_tcp.socket}
            first, second = (own_address, trio_address)[:: 1 if round_ % 2 == 0 else -1]
            c1 = await _client(stack, first, b"c1")
            await handler.wait_started(1)
            c2 = await _client(stack, second, b"c2")
            await wait_backlogged(sockets[second], unless=_accepted_over(listener, 1))
            await _assert_served(listener, handler, [b"c1"], running=1)  # budget spent
            handler.release(b"c1")
            await _bye(c1, b"c1")
            await handler.wait_started(2)
            handler.release(b"c2")
            await _bye(c2, b"c2")
        kinds = {b"c1": handler.kinds[b"c1"], b"c2": handler.kinds[b"c2"]}
        own_tag, trio_tag = (b"c1", b"c2") if first == own_address else (b"c2", b"c1")
        assert kinds == {own_tag: trioqio.SocketChannel, trio_tag: trio.SocketStream}


# -- Trio listeners: add_listener, serve ---------------------------------------------------------


async def test_add_listener_serves_a_trio_socket_listener_and_hands_over_its_stream() -> None:
    seen: list[Any] = []

    async def handler(stream: trio.SocketStream) -> None:
        seen.append(stream)
        await stream.send_all(b"ok")

    (tcp,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = tcp.socket.getsockname()[1]
    async with NetListener() as listener:
        listener.add_listener(tcp)
        assert listener.is_connected
        assert listener.listeners == [tcp]
        assert listener.addresses == [InetAddress("127.0.0.1", port)]
        assert listener.channels == []
        listener.set_client_func(handler)
        assert await read_reply(listener.addresses[0]) == b"ok"
        assert listener.statistics().accepted == 1
        (stream,) = seen
        assert type(stream) is trio.SocketStream  # unchanged, not wrapped
        assert stream.socket.fileno() == -1  # closed when its handler returned
    assert tcp.socket.fileno() == -1  # leaving the block closed the Trio listener
    with pytest.raises(trio.ClosedResourceError):
        await tcp.accept()


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a trustme certificate for trioqio.test, and a client trusting it."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("trioqio.test").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_add_listener_serves_a_trio_ssl_listener_over_a_real_handshake(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server_context, client_context = tls_contexts
    seen: list[Any] = []

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        seen.append(stream)
        request = await stream.receive_some()  # the handshake happens here
        await stream.send_all(b"tls " + request)

    caplog.set_level(logging.ERROR, logger="trioqio.listener")
    (tcp,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    tls = trio.SSLListener(tcp, server_context)
    port = tcp.socket.getsockname()[1]
    async with NetListener() as listener:
        listener.add_listener(tls)
        assert listener.listeners == [tls]
        assert listener.addresses == [InetAddress("127.0.0.1", port)]
        listener.set_client_func(handler)
        transport = await trio.open_tcp_stream("127.0.0.1", port)
        client = trio.SSLStream(transport, client_context, server_hostname="trioqio.test")
        try:
            with trio.fail_after(10):
                await client.do_handshake()  # verifies the server's certificate
                await client.send_all(b"hello")
                reply = b""
                while len(reply) < len(b"tls hello"):
                    reply += await client.receive_some()
            assert reply == b"tls hello"
            peer = client.getpeercert()
            assert peer is not None
            assert peer["subjectAltName"] == (("DNS", "trioqio.test"),)
        finally:
            await trio.aclose_forcefully(client)
        (stream,) = seen
        assert type(stream) is trio.SSLStream
        assert type(stream.transport_stream) is trio.SocketStream
        # A client that speaks no TLS fails in its handler, not in accept: the listener
        # goes on serving.
        plain = await connect(listener.addresses[0])
        async with plain:
            await plain.send_all(b"GET / HTTP/1.0\r\n\r\n")
            await read_all(plain)  # an alert, perhaps, then EOF: the server gave up on it
        await wait_until(lambda: listener.statistics().handler_errors == 1)
        assert listener.statistics().failed_listeners == 0
        assert len(seen) == 2
    assert tcp.socket.fileno() == -1


async def test_serve_opens_addresses_and_serves_trio_listeners_until_cancelled() -> None:
    kinds: list[type] = []

    async def handler(stream: trio.abc.Stream) -> None:
        kinds.append(type(stream))
        await stream.send_all(b"ok")

    (tcp,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trioqio.serve, name="svc", max_clients=1)
        listener = await nursery.start(serve, handler, "tcp:127.0.0.1:0", tcp)
        assert isinstance(listener, NetListener)
        assert listener.name == "svc"
        own, theirs = listener.listeners
        assert isinstance(own, trioqio.SocketChannelListener)
        assert theirs is tcp
        assert len(listener.addresses) == 2
        for address in listener.addresses:
            with trio.fail_after(5):
                assert await read_reply(address) == b"ok"
        nursery.cancel_scope.cancel()
    assert kinds == [trioqio.SocketChannel, trio.SocketStream]
    assert listener.shutdown_report == trioqio.ShutdownReport(finished=0, cut=0)
    assert tcp.socket.fileno() == -1
    with pytest.raises(trio.ClosedResourceError):
        await own.accept()


# -- systemd ----------------------------------------------------------------------------------


async def test_open_systemd_without_activation_adopts_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.setenv("LISTEN_PID", "1")
    async with NetListener() as listener:
        assert await listener.open_systemd() == []
        assert not listener.is_connected
    assert "LISTEN_PID" not in os.environ


def test_systemd_listen_fds_follows_the_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "2")
    assert trioqio.systemd_listen_fds() == []  # meant for another process
    assert "LISTEN_FDS" not in os.environ
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "0")
    assert trioqio.systemd_listen_fds(unset_environment=False) == []
    assert os.environ["LISTEN_FDS"] == "0"
    monkeypatch.setenv("LISTEN_FDS", "two")
    with pytest.raises(trioqio.AddressError, match="LISTEN_FDS='two'"):
        trioqio.systemd_listen_fds()


async def test_addresses_name_a_trioqio_socket_served_under_an_ssl_listener() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen()
    channel = trioqio.SocketChannel(sock)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    async with NetListener() as listener:
        listener.add_listener(trio.SSLListener(trioqio.SocketChannelListener(channel), context))
        assert listener.addresses == [channel.local_address]
    with pytest.raises(trio.ClosedResourceError):  # leaving the block closed it
        await channel.accept()


async def test_open_refuses_a_listener_closed_while_the_address_resolves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import trioqio._listener as listener_module
    from trioqio._dns import resolve as real_resolve

    resolving = trio.Event()
    release = trio.Event()

    async def slow_resolve(address: Any) -> Any:
        resolving.set()
        await release.wait()
        return await real_resolve(address)

    monkeypatch.setattr(listener_module, "resolve", slow_resolve)
    errors: list[BaseException] = []

    async def opener(listener: NetListener) -> None:
        try:
            await listener.open("tcp:127.0.0.1:0")
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    async with NetListener(name="r") as listener, trio.open_nursery() as nursery:
        nursery.start_soon(opener, listener)
        await resolving.wait()
        await listener.aclose()
        release.set()
    assert len(errors) == 1
    assert str(errors[0]).startswith("open: ")
    assert "is closed" in str(errors[0])
    assert listener.channels == []


async def test_an_accept_failure_is_logged_with_the_address_it_listens_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    from trioqio._channel_socket import SocketChannel

    caplog.set_level(logging.ERROR, logger="trioqio.listener")
    calls: list[int] = []
    retried = trio.Event()

    async def failing_accept(self: SocketChannel) -> SocketChannel:
        calls.append(1)
        if len(calls) == 1:
            await trio.lowlevel.checkpoint()
            raise OSError(errno.ECONNABORTED, "aborted")
        retried.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    monkeypatch.setattr(SocketChannel, "accept", failing_accept)
    async with NetListener(name="w") as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(lambda stream: trio.lowlevel.checkpoint())
        with trio.fail_after(10):
            await retried.wait()
        where = str(listener.addresses[0])
        messages = [r.getMessage() for r in caplog.records if r.name == "trioqio.listener"]
        assert messages == [f"listener 'w' on {where}: accept failed; retrying: ECONNABORTED"]
        assert "127.0.0.1" in where  # the address, not the listener's repr
