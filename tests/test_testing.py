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
    check_standalone_channel,
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


# -- check_standalone_channel -------------------------------------------------------------


class _Loopback(trioqio.abc.Channel):
    """An unbounded in-memory FIFO loopback (reads at the end give b""), breakable on demand.

    ``flaw`` names one deliberate contract violation; "" is a correct channel.
    """

    def __init__(self, flaw: str = "") -> None:
        self.flaw = flaw
        self.pending = bytearray()
        self.chunks: list[Buffer] = []  # "keeps_reference" stores the caller's buffers
        self.closed = False
        self.eof = False

    def _check(self) -> None:
        if self.closed and self.flaw != "usable_after_close":
            raise trio.ClosedResourceError("closed")

    async def send_all(self, data: Buffer) -> None:
        if self.flaw != "send_not_a_checkpoint":
            await trio.lowlevel.checkpoint_if_cancelled()
        self._check()
        if self.eof and self.flaw != "send_after_eof":
            raise trio.ClosedResourceError("send_eof was called")
        octets = memoryview(data).cast("B")
        if self.flaw == "keeps_reference":
            self.chunks.append(octets)
        elif self.flaw == "corrupts_large" and len(octets) > 1000:
            self.pending += bytes(octets[:-1]) + b"?"
        elif self.flaw == "empty_send_is_eof" and not octets:
            self.eof = True
        else:
            self.pending += octets
        if self.flaw != "send_not_a_checkpoint":
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        self._check()
        if self.flaw == "wait_blocks":
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.flaw != "no_max_bytes_check":
            if max_bytes is not None and not isinstance(max_bytes, int):
                raise TypeError("max_bytes")
            if max_bytes is not None and max_bytes < 1:
                raise ValueError("max_bytes")
        if self.flaw == "loses_on_cancel":  # consumes, then notices the cancellation
            self._check()
            data = bytes(self.pending[: max_bytes or len(self.pending)])
            del self.pending[: len(data)]
            await trio.lowlevel.checkpoint()
            return data
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check()
        for chunk in self.chunks:
            self.pending += chunk
        self.chunks.clear()
        size = len(self.pending) if max_bytes is None else max_bytes
        if self.flaw == "ignores_max_bytes":
            size = len(self.pending)
        data = bytes(self.pending[:size])
        del self.pending[:size]
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    async def send_eof(self) -> None:
        if self.flaw != "send_eof_cancel_effect":
            await trio.lowlevel.checkpoint_if_cancelled()
        self._check()
        self.eof = True
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if self.closed and self.flaw == "close_not_idempotent":
            raise trio.ClosedResourceError("closed twice")
        if self.flaw == "cancelled_close_stays_open":
            await trio.lowlevel.checkpoint()
        self.closed = True
        await trio.lowlevel.checkpoint()


async def make_loopback() -> _Loopback:
    return _Loopback()


async def make_null() -> trioqio.NullChannel:
    return trioqio.NullChannel()


async def test_check_standalone_channel_passes_a_correct_loopback() -> None:
    await check_standalone_channel(make_loopback, loopback=True)


@pytest.mark.parametrize(
    ("flaw", "message"),
    [
        ("usable_after_close", "after aclose: expected ClosedResourceError"),
        ("close_not_idempotent", "close check: unexpected ClosedResourceError"),
        ("cancelled_close_stays_open", "after a cancelled aclose"),
        ("no_max_bytes_check", r"receive_some\(0\): expected ValueError"),
        ("ignores_max_bytes", "returned"),
        ("corrupts_large", r"differs from data written at \d+"),
        ("keeps_reference", "differs from data written"),
        ("empty_send_is_eof", "data check: unexpected ClosedResourceError"),
        ("send_after_eof", "send_all after send_eof: expected ClosedResourceError"),
        ("send_not_a_checkpoint", "did not yield"),
        ("send_eof_cancel_effect", "cancelled send_eof took effect"),
        ("loses_on_cancel", "a cancelled receive_some lost data"),
        ("wait_blocks", "waited although it should return at once"),
    ],
)
async def test_check_standalone_channel_rejects_a_broken_loopback(flaw: str, message: str) -> None:
    async def make() -> _Loopback:
        return _Loopback(flaw)

    with pytest.raises(AssertionError, match=message):
        await check_standalone_channel(make, loopback=True)


async def test_check_standalone_channel_rejects_a_loopback_posing_as_a_sink() -> None:
    with pytest.raises(AssertionError, match="sink: expected end of file"):
        await check_standalone_channel(make_loopback, loopback=False)


async def test_check_standalone_channel_rejects_a_sink_posing_as_a_loopback() -> None:
    with pytest.raises(AssertionError, match="end of file after 0 of"):
        await check_standalone_channel(make_null, loopback=True)


async def test_check_standalone_channel_rejects_blocking_claims_of_a_non_blocking_kind() -> None:
    # A receive on the empty loopback returns b"" instead of waiting for the writer.
    with pytest.raises(AssertionError, match="end of file after 0 of"):
        await check_standalone_channel(make_loopback, loopback=True, receive_blocks=True)


async def test_check_standalone_channel_rejects_a_kind_that_never_clogs() -> None:
    with pytest.raises(AssertionError, match="bytes were sent with nobody reading"):
        await check_standalone_channel(make_null, loopback=False, send_blocks=True)


async def test_check_standalone_channel_rejects_a_sink_whose_reads_wait() -> None:
    class _WaitingSink(trioqio.abc.Channel):
        closed = False

        async def _step(self) -> None:
            if self.closed:
                raise trio.ClosedResourceError("closed")
            await trio.lowlevel.checkpoint()

        async def send_all(self, data: Buffer) -> None:
            await self._step()

        async def wait_send_all_might_not_block(self) -> None:
            await self._step()

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            if max_bytes is not None and not isinstance(max_bytes, int):
                raise TypeError("max_bytes")
            if max_bytes is not None and max_bytes < 1:
                raise ValueError("max_bytes")
            await self._step()
            await trio.sleep_forever()

        async def send_eof(self) -> None:
            await self._step()

        async def aclose(self) -> None:
            self.closed = True
            await trio.lowlevel.checkpoint()

    async def make() -> _WaitingSink:
        return _WaitingSink()

    with pytest.raises(AssertionError, match="waited although"):
        await check_standalone_channel(make, loopback=False)


async def test_check_standalone_channel_rejects_a_cat_without_busy_detection() -> None:
    """A wrapper that queues a second sender behind a lock instead of raising Busy."""

    class _Queueing(trioqio.abc.Channel):
        def __init__(self, inner: trioqio.CommandChannel) -> None:
            self.inner = inner
            self.lock = trio.Lock()

        async def send_all(self, data: Buffer) -> None:
            async with self.lock:
                await self.inner.send_all(data)

        async def wait_send_all_might_not_block(self) -> None:
            await self.inner.wait_send_all_might_not_block()

        async def send_eof(self) -> None:
            await self.inner.send_eof()

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            return await self.inner.receive_some(max_bytes)

        async def aclose(self) -> None:
            await self.inner.aclose()

    async def make() -> _Queueing:
        return _Queueing(await trioqio.open_command(["cat"]))

    with pytest.raises(AssertionError, match="send_all while another task's send_all is stuck"):
        await check_standalone_channel(make, loopback=True, receive_blocks=True, send_blocks=True)


async def test_check_standalone_channel_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sink"):
        await check_standalone_channel(make_null, loopback=False, receive_blocks=True)
