"""Channel conformance checks: Trio's stream checks and QEMU's data test.

QEMU: ``tests/unit/io-channel-helpers.c`` (the 250 x 4194-byte data test). Trio:
``trio.testing.check_half_closeable_stream`` and friends. Third-party channel kinds can
reuse both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio
import trio.testing

from .._abc import Channel

__all__ = [
    "DATA_CHUNKS",
    "DATA_CHUNK_SIZE",
    "check_channel",
    "check_one_way_channel",
    "conformance_tests",
    "data_test_buffers",
    "run_data_test",
]

#: How many chunks QEMU's data test sends, 250 (see :func:`data_test_buffers`).
#:
#: Example::
#:
#:     assert len(trioqio.testing.data_test_buffers()) == trioqio.testing.DATA_CHUNKS
DATA_CHUNKS = 250
#: How many bytes each data-test chunk holds, 4194; chunk *i* is filled with the byte *i*.
#:
#: Example::
#:
#:     total = trioqio.testing.DATA_CHUNKS * trioqio.testing.DATA_CHUNK_SIZE  # 1,048,500
DATA_CHUNK_SIZE = 4194

S = TypeVar("S", bound=trio.abc.Stream)
R = TypeVar("R", bound=trio.abc.ReceiveStream)
W = TypeVar("W", bound=trio.abc.SendStream)


async def check_channel(
    stream_maker: Callable[[], Awaitable[tuple[S, S]]],
    clogged_stream_maker: Callable[[], Awaitable[tuple[S, S]]] | None = None,
    *,
    half_closeable: bool = True,
) -> None:
    """Run Trio's conformance checks on a two-way channel kind.

    Args:
        stream_maker: an async function returning a fresh connected ``(a, b)`` pair.
        clogged_stream_maker: like ``stream_maker`` but with both directions clogged
            (``send_all`` blocks until the other side reads); enables the extra checks.
        half_closeable: run ``check_half_closeable_stream`` (``send_eof``) rather than
            ``check_two_way_stream``.

    Raises:
        AssertionError: the channel does not behave like a Trio stream.

    Example::

        async def make_pair() -> tuple[trioqio.SocketChannel, trioqio.SocketChannel]:
            a, b = trio.socket.socketpair()
            return trioqio.SocketChannel(a), trioqio.SocketChannel(b)

        await trioqio.testing.check_channel(make_pair)
    """
    if half_closeable:
        await trio.testing.check_half_closeable_stream(
            stream_maker,  # type: ignore[arg-type]  # Trio's checker is typed for HalfCloseableStream pairs
            clogged_stream_maker,  # type: ignore[arg-type]  # same
        )
    else:
        await trio.testing.check_two_way_stream(stream_maker, clogged_stream_maker)


async def check_one_way_channel(
    stream_maker: Callable[[], Awaitable[tuple[W, R]]],
    clogged_stream_maker: Callable[[], Awaitable[tuple[W, R]]] | None = None,
) -> None:
    """Run Trio's one-way stream checks on a (sender, receiver) channel pair.

    Args:
        stream_maker: an async function returning a fresh ``(send_side, receive_side)``.
        clogged_stream_maker: the same with a clogged pipe, enabling extra checks.

    Raises:
        AssertionError: the pair does not behave like Trio streams.

    Example::

        async def make_pipe_pair() -> tuple[trioqio.FileChannel, trioqio.FileChannel]:
            read_fd, write_fd = os.pipe()
            return trioqio.FileChannel(write_fd), trioqio.FileChannel(read_fd)

        await trioqio.testing.check_one_way_channel(make_pipe_pair)
    """
    await trio.testing.check_one_way_stream(stream_maker, clogged_stream_maker)


def data_test_buffers() -> list[bytes]:
    """Return QEMU's data test payload: 250 buffers of 4194 bytes, buffer *i* filled with *i*.

    Returns:
        The 250 buffers (1,048,500 bytes in all).

    Raises nothing.

    Example::

        assert sum(map(len, trioqio.testing.data_test_buffers())) == 1_048_500
    """
    return [bytes([index % 256]) * DATA_CHUNK_SIZE for index in range(DATA_CHUNKS)]


async def run_data_test(
    src: Channel,
    dst: Channel,
    *,
    concurrent: bool = True,
    writev: bool = True,
) -> None:
    """Run QEMU's data test: write the payload to ``src``, read it from ``dst``, compare.

    With ``concurrent=True`` (QEMU ``run_threads``) the writer and the reader run at the
    same time, which a channel whose buffer is smaller than the payload needs; with False
    (QEMU ``run_writer`` then ``run_reader``) the whole payload is written first, for
    buffer and file channels. ``src`` and ``dst`` may be the same channel (a command
    channel running ``cat``).

    Args:
        src: the channel written to.
        dst: the channel read from.
        concurrent: run writer and reader concurrently.
        writev: write with one ``writev`` of the 250 buffers (QEMU ``writev_all``);
            False sends them one ``send_all`` at a time.

    Raises:
        AssertionError: what arrived differs from what was sent (the message names the
            first differing chunk).

    Example::

        await trioqio.testing.run_data_test(client, server)
    """
    buffers = data_test_buffers()
    total = DATA_CHUNKS * DATA_CHUNK_SIZE
    received: list[bytes] = []

    async def writer() -> None:
        if writev:
            await src.writev(buffers)
        else:
            for buffer in buffers:
                await src.send_all(buffer)

    async def reader() -> None:
        received.append(await dst.receive_exactly(total))

    if concurrent:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(reader)
    else:
        await writer()
        await reader()
    data = received[0]
    for index in range(DATA_CHUNKS):
        chunk = data[index * DATA_CHUNK_SIZE : (index + 1) * DATA_CHUNK_SIZE]
        # A raise, not an assert: pytest rewrites this module's asserts (trioqio ships a
        # pytest plugin), and under CI=true it would diff megabytes on a failure.
        if chunk != buffers[index]:
            raise AssertionError(f"data test: chunk {index} differs")


async def _stream_data_test(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
    # QEMU's data test for a plain Trio stream: send_all per buffer, receive_some until
    # everything arrived.
    buffers = data_test_buffers()
    total = DATA_CHUNKS * DATA_CHUNK_SIZE
    received = bytearray()

    async def writer() -> None:
        for buffer in buffers:
            await src.send_all(buffer)

    async def reader() -> None:
        while len(received) < total:
            chunk = await dst.receive_some()
            assert chunk, f"data test: end of file after {len(received)} of {total} bytes"
            received.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        nursery.start_soon(reader)
    data = bytes(received)
    for index, buffer in enumerate(buffers):
        if data[index * DATA_CHUNK_SIZE : (index + 1) * DATA_CHUNK_SIZE] != buffer:
            raise AssertionError(f"data test: chunk {index} differs")


def conformance_tests(
    stream_maker: Callable[[], Awaitable[tuple[S, S]]],
    clogged_stream_maker: Callable[[], Awaitable[tuple[S, S]]] | None = None,
    *,
    half_closeable: bool = True,
) -> type:
    """Return a pytest test class that checks a stream kind: one line in a test module.

    The class has two Trio tests: ``test_trio_stream_contract`` runs :func:`check_channel`
    (Trio's half-closeable or two-way stream checks) and ``test_qemu_data_test`` sends QEMU's
    data test payload (250 buffers of 4194 bytes, buffer *i* filled with *i*) from one end
    to the other: with :func:`run_data_test` when both ends are trioqio channels, with
    ``send_all``/``receive_some`` for any other :class:`trio.abc.Stream`. Assign it to a
    name starting with ``Test`` so pytest collects it. Needs pytest and pytest-trio
    (``pip install 'trioqio[testing]'``).

    Args:
        stream_maker: an async function returning a fresh connected ``(a, b)`` pair.
        clogged_stream_maker: the same with both directions clogged (extra checks).
        half_closeable: the kind supports ``send_eof`` (Trio's half-closeable checks);
            False runs the two-way checks.

    Returns:
        A test class.

    Raises:
        ImportError: pytest is not installed.

    Example::

        async def socket_pair() -> tuple[trioqio.SocketChannel, trioqio.SocketChannel]:
            a, b = trio.socket.socketpair()
            return trioqio.SocketChannel(a), trioqio.SocketChannel(b)

        TestSocketChannel = trioqio.testing.conformance_tests(socket_pair)
    """
    import pytest

    class ConformanceTests:
        @pytest.mark.trio
        async def test_trio_stream_contract(self) -> None:
            await check_channel(stream_maker, clogged_stream_maker, half_closeable=half_closeable)

        @pytest.mark.trio
        async def test_qemu_data_test(self) -> None:
            a, b = await stream_maker()
            async with a, b:
                if isinstance(a, Channel) and isinstance(b, Channel):
                    await run_data_test(a, b)
                else:
                    await _stream_data_test(a, b)

    ConformanceTests.__qualname__ = ConformanceTests.__name__ = (
        f"ConformanceTests[{getattr(stream_maker, '__name__', 'streams')}]"
    )
    return ConformanceTests
