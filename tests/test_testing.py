"""Tests for the public trioqio.testing helpers: they pass good channels, catch bad ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

import trioqio
from trioqio import ChannelFeature, SocketChannel
from trioqio.testing import (
    DATA_CHUNK_SIZE,
    DATA_CHUNKS,
    StallingChannel,
    check_channel,
    check_one_way_channel,
    data_test_buffers,
    run_data_test,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer


async def socket_pair() -> tuple[SocketChannel, SocketChannel]:
    a, b = trio.socket.socketpair()
    return SocketChannel(a), SocketChannel(b)


class _Corrupting(trioqio.abc.Channel):
    """A deliberately wrong channel: flips one byte of everything it sends."""

    def __init__(self, inner: SocketChannel) -> None:
        self.inner = inner

    async def send_all(self, data: Buffer) -> None:
        chunk = bytearray(memoryview(data).cast("B"))
        if chunk:
            chunk[len(chunk) // 2] ^= 0xFF
        await self.inner.send_all(chunk)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_data_test_buffers_shape() -> None:
    buffers = data_test_buffers()
    assert len(buffers) == DATA_CHUNKS == 250
    assert {len(b) for b in buffers} == {DATA_CHUNK_SIZE}
    assert sum(map(len, buffers)) == 1_048_500
    assert buffers[7] == bytes([7]) * DATA_CHUNK_SIZE


async def test_check_channel_passes_socket_channels() -> None:
    await check_channel(socket_pair)
    await check_channel(socket_pair, half_closeable=False)


async def test_check_one_way_channel_passes_socket_channels() -> None:
    await check_one_way_channel(socket_pair)


async def test_check_channel_catches_a_corrupting_channel() -> None:
    async def bad_pair() -> tuple[_Corrupting, _Corrupting]:
        a, b = await socket_pair()
        return _Corrupting(a), _Corrupting(b)

    with pytest.RaisesGroup(AssertionError, flatten_subgroups=True):
        await check_channel(bad_pair)


@pytest.mark.parametrize("concurrent", [True, False])
async def test_run_data_test_catches_corruption(concurrent: bool) -> None:
    a, b = await socket_pair()
    async with a, b:
        if not concurrent:  # the whole payload must fit before anyone reads
            a.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, 4 * 1024 * 1024)
            b.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4 * 1024 * 1024)
        with pytest.raises(AssertionError, match="chunk 0 differs"):
            await run_data_test(_Corrupting(a), b, concurrent=concurrent, writev=False)


async def test_run_data_test_sequential_on_big_buffers() -> None:
    a, b = await socket_pair()
    async with a, b:
        a.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, 4 * 1024 * 1024)
        b.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4 * 1024 * 1024)
        await run_data_test(a, b, concurrent=False)


# -- StallingChannel ----------------------------------------------------------------------


async def test_stalling_channel_stalls_and_cuts() -> None:
    a, b = await socket_pair()
    slow_a = StallingChannel(a, stall_reads=2, stall_writes=1, max_read=1000, max_write=333)
    slow_b = StallingChannel(b, stall_reads=1, stall_writes=0, max_read=777)
    async with slow_a, slow_b:
        assert slow_a.features == ChannelFeature.SHUTDOWN
        await run_data_test(slow_a, slow_b)
        await run_data_test(slow_b, slow_a, writev=False)
        assert (slow_a.stalled_reads, slow_a.stalled_writes) == (2, 1)
        assert (slow_b.stalled_reads, slow_b.stalled_writes) == (1, 0)
        await slow_b.send_all(b"abc")
        assert await slow_a.receive_some() == b"abc"
        with pytest.raises(trioqio.UnsupportedFeature):
            await slow_a.peek(1)
        await slow_a.shutdown(trioqio.Shutdown.WRITE)
        assert await slow_b.receive_some(10) == b""


async def test_stalling_channel_stall_is_observable() -> None:
    """A stalled write does not complete until every other task is blocked."""
    a, b = await socket_pair()
    order: list[str] = []
    async with StallingChannel(a, stall_writes=1) as slow, b:

        async def writer() -> None:
            await slow.send_all(b"x")
            order.append("written")

        async def busy() -> None:
            for _ in range(5):
                await trio.sleep(0)
            order.append("busy done")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(busy)
        assert order == ["busy done", "written"]
        assert await b.receive_some(1) == b"x"


async def test_stalling_channel_conforms() -> None:
    async def pair() -> tuple[StallingChannel, StallingChannel]:
        a, b = await socket_pair()
        return StallingChannel(a, max_write=1000, max_read=999), StallingChannel(b)

    await check_channel(pair)


async def test_stalling_channel_bad_input() -> None:
    a, b = await socket_pair()
    async with a, b:
        with pytest.raises(ValueError, match="stall counts"):
            StallingChannel(a, stall_reads=-1)
        with pytest.raises(ValueError, match="max_read"):
            StallingChannel(a, max_read=0)
