"""BufferChannel: QEMU's tests/unit/test-io-channel-buffer.c plus the quirks it fixes.

Why Trio's pair-based stream checks do not apply: a buffer is one object that is its own
peer, and a receive on it never waits: at the end of the data it returns ``b""`` (end of
file) at once, where Trio's checks expect a receive on an empty stream to block until the
peer sends. ``trioqio.testing.check_standalone_channel`` runs the rest of Trio's contract on
it (``test_standalone_conformance``); the other tests check the file-like semantics (write,
seek, read) directly.
"""

from __future__ import annotations

import os

import pytest
import trio

import trioqio
from trioqio.testing import (
    DATA_CHUNK_SIZE,
    DATA_CHUNKS,
    check_standalone_channel,
    data_test_buffers,
)

# -- QEMU /io/channel/buf -------------------------------------------------------------


@pytest.mark.parametrize("writev", [True, False], ids=["writev", "send_all"])
async def test_buf_data(writev: bool) -> None:
    buffers = data_test_buffers()
    buf = trioqio.BufferChannel()
    async with buf:
        if writev:
            await buf.writev(buffers)
        else:
            for buffer in buffers:
                await buf.send_all(buffer)
        assert await buf.seek(0) == 0
        data = await buf.receive_exactly(DATA_CHUNKS * DATA_CHUNK_SIZE)
        assert data == b"".join(buffers)
        assert await buf.receive_some() == b""
    assert buf.data == b"".join(buffers)


# -- stream behaviour -----------------------------------------------------------------


async def make_buffer() -> trioqio.BufferChannel:
    return trioqio.BufferChannel()


async def test_standalone_conformance() -> None:
    await check_standalone_channel(make_buffer, loopback=True, rewind=lambda buf: buf.seek(0))


async def test_standalone_conformance_with_initial_contents() -> None:
    async def make() -> trioqio.BufferChannel:
        buf = trioqio.BufferChannel(b"old contents, overwritten")
        await buf.seek(0, os.SEEK_END)
        return buf

    await check_standalone_channel(make, loopback=True, rewind=lambda buf: buf.seek(25))


async def test_empty_read_is_eof_not_a_wait() -> None:
    async with trioqio.BufferChannel() as buf:
        with trio.fail_after(5):  # a hang guard, not a timing assertion
            assert await buf.receive_some(10) == b""
        assert await buf.receive_exactly_or_eof(10) is None


async def test_initial_contents_and_partial_reads() -> None:
    async with trioqio.BufferChannel(b"hello world") as buf:
        assert trioqio.ChannelFeature.SEEKABLE in buf.features
        assert await buf.receive_some(5) == b"hello"
        assert buf.offset == 5
        assert await buf.receive_some() == b" world"
        assert await buf.receive_some() == b""


async def test_short_data_reports_bytes() -> None:
    async with trioqio.BufferChannel(b"x" * 7) as buf:
        with pytest.raises(trioqio.UnexpectedEOF, match="after 7 of 20 bytes") as info:
            await buf.receive_exactly(20)
        assert info.value.received == 7


async def test_data_is_a_copy() -> None:
    source = bytearray(b"abc")
    async with trioqio.BufferChannel(source) as buf:
        source[0] = ord("z")
        snapshot = buf.data
        await buf.send_all(b"XY")
        assert snapshot == b"abc"
        assert buf.data == b"XYc"
        assert len(buf) == 3


# -- QEMU quirks, fixed -----------------------------------------------------------------


async def test_seek_honours_whence() -> None:
    async with trioqio.BufferChannel(b"0123456789") as buf:
        assert await buf.seek(4) == 4
        assert await buf.seek(2, os.SEEK_CUR) == 6
        assert await buf.receive_some(1) == b"6"
        assert await buf.seek(-3, os.SEEK_END) == 7
        assert await buf.receive_some() == b"789"
        assert await buf.seek(-1, os.SEEK_CUR) == 9


async def test_write_after_backwards_seek_overwrites() -> None:
    async with trioqio.BufferChannel() as buf:
        await buf.send_all(b"abcdef")
        await buf.seek(2)
        await buf.send_all(b"XY")
        assert buf.data == b"abXYef"  # QEMU would give b"abcdefXY"
        assert buf.offset == 4
        await buf.send_all(b"1234")  # overwrites the tail, then extends
        assert buf.data == b"abXY1234"


async def test_gap_after_seek_past_end_is_zero_filled_in_place() -> None:
    async with trioqio.BufferChannel(b"abc") as buf:
        assert await buf.seek(6) == 6
        assert buf.data == b"abc"  # seeking alone writes nothing
        await buf.send_all(b"Z")
        assert buf.data == b"abc\0\0\0Z"  # QEMU zero-fills from the start instead
        await buf.seek(0)
        assert await buf.receive_some() == b"abc\0\0\0Z"


async def test_read_after_seek_past_end_is_eof() -> None:
    async with trioqio.BufferChannel(b"abc") as buf:
        await buf.seek(10)
        assert await buf.receive_some() == b""
        assert buf.offset == 10


async def test_bad_seeks() -> None:
    async with trioqio.BufferChannel(b"abc") as buf:
        with pytest.raises(ValueError, match="negative position -1"):
            await buf.seek(-4, os.SEEK_END)
        with pytest.raises(ValueError, match="whence"):
            await buf.seek(0, 42)
        assert buf.offset == 0


# -- pread/pwrite ---------------------------------------------------------------------


async def test_pread_pwrite_leave_cursor() -> None:
    async with trioqio.BufferChannel(b"0123456789") as buf:
        await buf.seek(3)
        assert await buf.pread(4, 5) == b"5678"
        assert await buf.pread(4, 100) == b""
        assert await buf.pwrite(b"AB", 8) == 2
        assert await buf.pwrite(b"!", 12) == 1
        assert buf.data == b"01234567AB\0\0!"
        assert buf.offset == 3
        with pytest.raises(ValueError):
            await buf.pread(1, -1)
        with pytest.raises(ValueError):
            await buf.pwrite(b"x", -1)


# -- half-close, close, cancellation ---------------------------------------------------


async def test_send_eof_stops_writes_only() -> None:
    async with trioqio.BufferChannel() as buf:
        await buf.send_all(b"abc")
        await buf.send_eof()
        await buf.send_eof()
        with pytest.raises(trio.ClosedResourceError, match="send_eof"):
            await buf.send_all(b"d")
        with pytest.raises(trio.ClosedResourceError, match="send_eof"):
            await buf.pwrite(b"d", 0)
        await buf.seek(0)
        assert await buf.receive_some() == b"abc"


async def test_close_twice_and_use_after_close() -> None:
    buf = trioqio.BufferChannel(b"kept")
    await buf.aclose()
    await buf.aclose()
    for call in (buf.send_all(b"x"), buf.receive_some(1), buf.seek(0), buf.send_eof()):
        with pytest.raises(trio.ClosedResourceError, match="closed"):
            await call
    with pytest.raises(trio.ClosedResourceError):
        await buf.wait_send_all_might_not_block()
    assert buf.data == b"kept"


async def test_cancelled_send_writes_nothing() -> None:
    async with trioqio.BufferChannel() as buf:
        with trio.CancelScope() as scope:
            scope.cancel()
            await buf.send_all(b"never")
        assert buf.data == b""
        with trio.CancelScope() as scope:
            scope.cancel()
            await buf.receive_some()
        await buf.send_all(b"ok")
        assert buf.data == b"ok"


async def test_receive_some_rejects_zero() -> None:
    async with trioqio.BufferChannel(b"abc") as buf:
        with pytest.raises(ValueError):
            await buf.receive_some(0)


async def test_receive_some_rejects_a_non_integer() -> None:
    # Found by check_standalone_channel: on an empty buffer 1.5 used to return b"".
    async with trioqio.BufferChannel() as buf:
        with pytest.raises(TypeError, match="integer"):
            await buf.receive_some(1.5)  # type: ignore[arg-type]  # bad input under test


async def test_cancelled_send_eof_has_no_effect() -> None:
    # Found by check_standalone_channel: it used to forbid writes and then raise Cancelled.
    async with trioqio.BufferChannel() as buf:
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await buf.send_eof()
        await buf.send_all(b"still writable")
        assert buf.data == b"still writable"
