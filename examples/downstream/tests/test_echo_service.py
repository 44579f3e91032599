"""The echo service's tests, written with trioqio's pytest plugin fixtures."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable

import echo_service
import pytest
import trio
import trio.testing

import trioqio
from pytest_trioqio import TLSPair
from trioqio.testing import Fault, FaultProxy, MemoryListener, conformance_tests


async def read_line(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data


async def test_echo_over_a_real_socket(net_listener: trioqio.NetListener) -> None:
    net_listener.set_client_func(echo_service.handle)
    async with await trioqio.connect(net_listener.addresses[0]) as channel:
        await channel.send_all(b"hello\n")
        assert await read_line(channel) == b"hello\n"


@pytest.mark.net_listener("tcp:127.0.0.1:0", max_clients=1)
async def test_one_client_at_a_time(net_listener: trioqio.NetListener) -> None:
    net_listener.set_client_func(echo_service.handle)
    address = net_listener.addresses[0]
    async with await trioqio.connect(address) as first, await trioqio.connect(address) as second:
        await first.send_all(b"one\n")
        assert await read_line(first) == b"one\n"
        await second.send_all(b"two\n")
        await trio.testing.wait_all_tasks_blocked()
        assert net_listener.statistics().running == 1  # the second waits for the slot
        await first.send_eof()
        assert await read_line(second) == b"two\n"


async def test_shouting_in_memory_with_virtual_time(
    memory_listener: MemoryListener, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        serve = functools.partial(echo_service.serve, shout=True)
        await nursery.start(serve, memory_listener)
        client = await memory_listener.connect()
        await client.send_all(b"quiet\n")
        assert await read_line(client) == b"QUIET\n"
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_a_line_too_long_ends_the_connection(
    memory_listener: MemoryListener,
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(echo_service.serve, memory_listener)
        client = await memory_listener.connect()
        await client.send_all(b"x" * (echo_service.MAX_LINE + 1))
        assert await read_line(client) == b"error: line too long\n"
        assert await client.receive_some() == b""
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_a_cut_connection_leaves_the_service_serving(
    net_listener: trioqio.NetListener, fault_proxy: Callable[..., Awaitable[FaultProxy]]
) -> None:
    net_listener.set_client_func(echo_service.handle)
    proxy = await fault_proxy(net_listener.addresses[0], to_target=Fault(cut_after=3))
    async with await trioqio.connect(proxy.address) as channel:
        await channel.send_all(b"abcdef\n")
        assert await channel.receive_some() == b""  # cut before a whole line arrived
    async with await trioqio.connect(net_listener.addresses[0]) as direct:
        await direct.send_all(b"still here\n")
        assert await read_line(direct) == b"still here\n"


async def test_echo_over_tls(net_listener: trioqio.NetListener, tls_pair: TLSPair) -> None:
    async def tls_echo(channel: trioqio.SocketChannel) -> None:
        tls = trioqio.TLSChannel.server(channel, tls_pair.server_context)
        async with tls:
            await echo_service.handle(tls)

    net_listener.set_client_func(tls_echo)
    channel = await trioqio.connect(net_listener.addresses[0])
    tls = trioqio.TLSChannel.client(channel, tls_pair.client_context, hostname=tls_pair.hostname)
    async with tls:
        await tls.send_all(b"secret\n")
        assert await read_line(tls) == b"secret\n"
    assert isinstance(tls_pair.server_context, ssl.SSLContext)


async def socket_channels() -> tuple[trioqio.SocketChannel, trioqio.SocketChannel]:
    a, b = trio.socket.socketpair()
    return trioqio.SocketChannel(a), trioqio.SocketChannel(b)


# The stream kind the service runs on, checked against Trio's stream contract and QEMU's
# data test in one line.
TestSocketChannelConformance = conformance_tests(socket_channels)
