"""NullChannel: QEMU's tests/unit/test-io-channel-null.c.

QEMU's test also checks watches (a G_IO_IN watch fires at once with exactly the asked
condition). trioqio has no watches: every NullChannel call returns at once, which
``test_never_waits`` checks instead. Trio's pair-based stream checks do not apply: what
is written can never be read back; ``trioqio.testing.check_standalone_channel`` runs the
rest of Trio's contract on it as a sink (``test_standalone_conformance``).
"""

from __future__ import annotations

import pytest
import trio

import trioqio
from trioqio.testing import check_standalone_channel


async def make_null() -> trioqio.NullChannel:
    return trioqio.NullChannel()


async def test_standalone_conformance() -> None:
    await check_standalone_channel(make_null, loopback=False)


async def test_null_io() -> None:
    channel = trioqio.NullChannel()
    await channel.send_all(b"Hello World")  # QEMU: write of 11 returns 11
    assert channel.bytes_discarded == 11
    assert await channel.receive_some(1024) == b""  # QEMU: read returns 0
    await channel.aclose()
    with pytest.raises(trio.ClosedResourceError, match="channel is closed"):
        await channel.send_all(b"Hello World")
    with pytest.raises(trio.ClosedResourceError, match="channel is closed"):
        await channel.receive_some(1024)


async def test_never_waits() -> None:
    async with trioqio.NullChannel() as channel:
        with trio.fail_after(5):  # a hang guard, not a timing assertion
            await channel.wait_send_all_might_not_block()
            await channel.writev([b"a" * 1000, memoryview(b"b" * 24)])
            assert await channel.receive_exactly_or_eof(100) is None
        assert channel.bytes_discarded == 1024


async def test_receive_exactly_is_unexpected_eof() -> None:
    async with trioqio.NullChannel(name="sink") as channel:
        with pytest.raises(trioqio.UnexpectedEOF, match="sink: end of file before any of 4"):
            await channel.receive_exactly(4)


async def test_seek_returns_zero_and_no_seekable_feature() -> None:
    async with trioqio.NullChannel() as channel:
        assert await channel.seek(100) == 0
        assert trioqio.ChannelFeature.SEEKABLE not in channel.features
        with pytest.raises(trioqio.UnsupportedFeature, match="FD_PASS"):
            await channel.send_with_fds(b"x", [0])


async def test_send_eof_then_close_twice() -> None:
    channel = trioqio.NullChannel()
    await channel.send_eof()
    await channel.send_eof()
    with pytest.raises(trio.ClosedResourceError, match="send_eof"):
        await channel.send_all(b"x")
    assert await channel.receive_some() == b""
    await channel.aclose()
    await channel.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await channel.send_eof()
    with pytest.raises(trio.ClosedResourceError):
        await channel.wait_send_all_might_not_block()
    with pytest.raises(trio.ClosedResourceError):
        await channel.seek(0)


async def test_cancelled_send_discards_nothing() -> None:
    async with trioqio.NullChannel() as channel:
        with trio.CancelScope() as scope:
            scope.cancel()
            await channel.send_all(b"x")
        assert channel.bytes_discarded == 0


async def test_receive_some_rejects_zero() -> None:
    async with trioqio.NullChannel() as channel:
        with pytest.raises(ValueError):
            await channel.receive_some(0)


async def test_receive_some_rejects_a_non_integer() -> None:
    # Found by check_standalone_channel: 1.5 used to return b"".
    async with trioqio.NullChannel() as channel:
        with pytest.raises(TypeError, match="integer"):
            await channel.receive_some(1.5)  # type: ignore[arg-type]  # bad input under test


async def test_cancelled_send_eof_has_no_effect() -> None:
    # Found by check_standalone_channel: it used to forbid writes and then raise Cancelled.
    async with trioqio.NullChannel() as channel:
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await channel.send_eof()
        await channel.send_all(b"x")
        assert channel.bytes_discarded == 1
