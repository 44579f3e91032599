"""``receive_exactly_into``: filling the caller's buffer, across short reads, EOF and cancels."""

from __future__ import annotations

import array
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

import trioqio
from trioqio import SocketChannel


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SocketChannel, SocketChannel]]:
    a, b = trio.socket.socketpair()
    async with SocketChannel(a) as left, SocketChannel(b) as right:
        yield left, right


async def test_fills_the_buffer_across_short_reads(
    pair: tuple[SocketChannel, SocketChannel],
) -> None:
    a, b = pair
    data = bytes(range(256)) * 1024  # 256 KiB, more than one socket buffer's worth
    buffer = bytearray(len(data) + 10)
    view = memoryview(buffer)[: len(data)]

    async def send_in_pieces() -> None:
        for start in range(0, len(data), 10000):
            await a.send_all(data[start : start + 10000])
            await trio.testing.wait_all_tasks_blocked()  # the reader parks: a short read

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_in_pieces)
        await b.receive_exactly_into(view)
    assert buffer[: len(data)] == data
    assert buffer[len(data) :] == bytes(10)  # nothing written past the view


async def test_empty_buffer_is_a_checkpoint(pair: tuple[SocketChannel, SocketChannel]) -> None:
    _, b = pair
    with trio.CancelScope() as scope:
        scope.cancel()
        await b.receive_exactly_into(bytearray())
    assert scope.cancelled_caught


async def test_any_writable_buffer_counts_bytes(
    pair: tuple[SocketChannel, SocketChannel],
) -> None:
    a, b = pair
    target = array.array("I", [0, 0])  # itemsize 4: 8 bytes, not 2
    await a.send_all(b"\x01\x00\x00\x00\x02\x00\x00\x00")
    await b.receive_exactly_into(target)
    assert list(target) == [1, 2]


async def test_eof_reports_how_many_arrived(pair: tuple[SocketChannel, SocketChannel]) -> None:
    a, b = pair
    await a.send_all(b"12345")
    await a.send_eof()
    buffer = bytearray(10)
    with pytest.raises(trioqio.UnexpectedEOF, match="after 5 of 10 bytes") as info:
        await b.receive_exactly_into(buffer)
    assert (info.value.expected, info.value.received) == (10, 5)
    assert buffer[:5] == b"12345"
    with pytest.raises(trioqio.UnexpectedEOF, match="after 0 of 3 bytes"):
        await b.receive_exactly_into(bytearray(3))


async def test_read_only_buffer_is_refused(pair: tuple[SocketChannel, SocketChannel]) -> None:
    a, b = pair
    await a.send_all(b"abc")
    with pytest.raises(TypeError, match="read-only bytes"):
        await b.receive_exactly_into(b"xyz")  # read-only
    assert await b.receive_some() == b"abc"  # nothing consumed


async def test_cancel_before_any_byte_consumes_nothing(
    pair: tuple[SocketChannel, SocketChannel],
) -> None:
    a, b = pair
    buffer = bytearray(4)
    with trio.move_on_after(0.01) as scope:
        await b.receive_exactly_into(buffer)
    assert scope.cancelled_caught
    await a.send_all(b"wxyz")
    await b.receive_exactly_into(buffer)
    assert buffer == b"wxyz"


async def test_cancel_after_part_neither_loses_nor_repeats_bytes(
    pair: tuple[SocketChannel, SocketChannel],
) -> None:
    a, b = pair
    buffer = bytearray(10)
    await a.send_all(b"abc")
    with trio.CancelScope() as scope:

        async def cancel_when_parked() -> None:
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_when_parked)
            await b.receive_exactly_into(buffer)
    assert scope.cancelled_caught
    assert buffer[:3] == b"abc"  # what arrived is in the caller's buffer
    await a.send_all(b"defghij")
    rest = bytearray(7)
    await b.receive_exactly_into(rest)
    assert rest == b"defghij"  # the stream goes on after them: nothing read twice


async def test_busy_and_closed(pair: tuple[SocketChannel, SocketChannel]) -> None:
    a, b = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.receive_exactly_into, bytearray(1))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await b.receive_exactly_into(bytearray(1))
        await a.send_all(b"x")
    await b.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await b.receive_exactly_into(bytearray(1))


# -- the generic version (Channel base class), on a channel kind without an override -------


async def test_generic_version_fills_and_reports_eof() -> None:
    async with trioqio.BufferChannel(b"0123456789") as channel:
        buffer = bytearray(6)
        await channel.receive_exactly_into(memoryview(buffer)[:4])
        assert buffer == b"0123\x00\x00"
        target = array.array("H", [0, 0])
        await channel.receive_exactly_into(target)
        assert target.tobytes() == b"4567"
        await channel.receive_exactly_into(bytearray())
        with pytest.raises(TypeError, match="read-only bytes"):
            await channel.receive_exactly_into(b"xy")  # read-only
        assert channel.offset == 8  # nothing consumed
        with pytest.raises(trioqio.UnexpectedEOF, match="after 2 of 6 bytes") as info:
            await channel.receive_exactly_into(buffer)
        assert info.value.received == 2
        assert buffer[:2] == b"89"
