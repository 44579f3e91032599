"""Trio's stream contract for channels without a second endpoint.

QEMU has no counterpart: ``tests/unit/test-io-channel-buffer.c``, ``-null.c`` and
``-command.c`` each check one kind by hand. Trio's generic checks
(``trio/testing/_check_streams.py``) need a connected *pair*; a buffer, ``/dev/null`` or a
single ``cat`` child has one object that is its own peer (or has none). This module runs
every part of Trio's contract that needs no second endpoint, so those kinds, and third-party
ones like them, get the same conformance check as socket pairs.
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar, cast

import trio
import trio.testing

__all__ = ["check_standalone_channel"]

StreamT = TypeVar("StreamT", bound=trio.abc.Stream)
T = TypeVar("T")

#: How much a send-blocking kind may accept with nobody reading before the check gives up.
_CLOG_LIMIT = 64 * 1024 * 1024
_CLOG_CHUNK = b"\xa5" * 65536


async def check_standalone_channel(
    channel_maker: Callable[[], Awaitable[StreamT]],
    *,
    loopback: bool,
    rewind: Callable[[StreamT], Awaitable[object]] | None = None,
    receive_blocks: bool = False,
    send_blocks: bool = False,
) -> None:
    """Check a channel kind that has no pair of endpoints against Trio's stream contract.

    ``trio.testing.check_one_way_stream``, ``check_two_way_stream`` and
    ``check_half_closeable_stream`` (wrapped by :func:`check_channel`) send on one stream
    and watch the *other* one: that the peer sees the data, that closing the receiver breaks
    the sender, that a blocked sender wakes when the peer reads. A loopback kind (a buffer
    read back after a seek, a child running ``cat``) is its own peer and a sink (a null
    channel) has none, so those pair checks have nothing to run on. This function runs the
    rest of the contract they verify, each part on a fresh channel:

    - ``receive_some``: 0 or a negative ``max_bytes`` raises ``ValueError``, a non-integer
      ``TypeError``; ``None`` or no argument is allowed; at most ``max_bytes`` come back.
    - ``send_all`` accepts ``bytes``, ``bytearray``, ``memoryview`` (also a slice) and
      ``b""``, which has no special meaning; every call is a checkpoint.
    - loopback: what was written comes back intact and in order (a 1 MiB write included,
      read back in random-sized pieces), also after the caller reuses its ``bytearray``;
      sink: every write succeeds and every read gives ``b""`` (end of file) at once.
    - half-closeable kinds: ``send_eof`` is a checkpoint and may be repeated; ``send_all``
      after it raises ``ClosedResourceError``; a loopback reads what came before, then
      ``b""``.
    - ``aclose``: on a never-used channel, twice, in ``async with``, and in a cancelled
      scope it closes; afterwards ``send_all`` (even of ``b""``),
      ``wait_send_all_might_not_block``, ``receive_some`` and ``send_eof`` raise
      ``ClosedResourceError``.
    - cancellation: in a cancelled scope every method raises ``Cancelled``; a cancelled
      ``receive_some`` loses no data and a cancelled ``send_eof`` has no effect (Trio's rule
      for everything but ``send_all`` and ``aclose``).
    - ``wait_send_all_might_not_block`` is a checkpoint and returns at once on an idle
      channel (alongside a blocked ``receive_some`` when ``receive_blocks``), and always
      when not ``send_blocks``.
    - ``receive_blocks``: a receive with nothing to read waits until data is written, a
      second concurrent receive raises ``BusyResourceError``, and ``aclose`` wakes a blocked
      receive with ``ClosedResourceError``. Otherwise every receive returns at once.
    - ``send_blocks``: while a ``send_all`` is stuck (nobody reads), another ``send_all``,
      ``wait_send_all_might_not_block`` or ``send_eof`` raises ``BusyResourceError``, and
      ``aclose`` wakes the stuck ``send_all`` with ``ClosedResourceError``.

    Not checked, because it needs a peer or a reproducible clogged state: a closed peer
    breaking the sender, the full-duplex transfer, and ``wait_send_all_might_not_block``
    waiting while clogged (a child process drains its pipe on its own schedule; Trio also
    allows that method to return early).

    A call that should return at once but waits fails the check instead of hanging it (the
    check uses :func:`trio.testing.wait_all_tasks_blocked`, no clock).

    Args:
        channel_maker: an async function returning a fresh, open channel.
        loopback: True if data written comes back from ``receive_some`` (a buffer, ``cat``);
            False for a sink whose writes vanish and whose reads give end of file.
        rewind: for a loopback read through a cursor (a buffer): an async function that
            moves it back to where writing started (``lambda b: b.seek(0)``); it is called
            between writing and reading.
        receive_blocks: a receive with nothing to read waits for data (a pipe) rather than
            returning ``b""``.
        send_blocks: ``send_all`` waits while nothing reads (a pipe with a bounded buffer).

    Raises:
        AssertionError: the channel breaks the contract; the message names the check.
        ValueError: contradictory arguments (a sink with ``rewind`` or ``receive_blocks``).

    Example::

        async def make_buffer() -> trioqio.BufferChannel:
            return trioqio.BufferChannel()

        await trioqio.testing.check_standalone_channel(
            make_buffer, loopback=True, rewind=lambda buffer: buffer.seek(0)
        )
    """
    if not loopback and (rewind is not None or receive_blocks):
        raise ValueError("a sink (loopback=False) takes neither rewind nor receive_blocks")
    # The checks only pass the maker's own channels to rewind, so widening its type is safe.
    any_rewind = cast("Callable[[trio.abc.Stream], Awaitable[object]] | None", rewind)
    kind = _Kind(channel_maker, loopback, any_rewind, receive_blocks, send_blocks)
    for check in (
        _check_close,
        _check_max_bytes,
        _check_data,
        _check_half_close,
        _check_cancellation,
        _check_wait_send_all_might_not_block,
        _check_blocking_receive,
        _check_blocking_send,
    ):
        try:
            await check(kind)
        except Exception as exc:  # an ExceptionGroup from a check's nursery is one too
            leaf = _assertion_in(exc)
            if leaf is exc:
                raise
            if leaf is not None:  # a failure inside a nursery: report it as itself
                raise leaf from exc
            name = check.__name__.removeprefix("_check_")
            raise AssertionError(f"{name} check: unexpected {exc!r}") from exc


def _assertion_in(exc: BaseException) -> AssertionError | None:
    """``exc`` if it is an AssertionError, else the first one inside an exception group."""
    if isinstance(exc, AssertionError):
        return exc
    # Named by attribute: BaseExceptionGroup is not a builtin on Python 3.10.
    children = cast("tuple[BaseException, ...]", getattr(exc, "exceptions", ()))
    for child in children:
        if (leaf := _assertion_in(child)) is not None:
            return leaf
    return None


class _Kind:
    """The arguments, plus helpers that run a call and judge how it ended."""

    def __init__(
        self,
        maker: Callable[[], Awaitable[trio.abc.Stream]],
        loopback: bool,
        rewind: Callable[[trio.abc.Stream], Awaitable[object]] | None,
        receive_blocks: bool,
        send_blocks: bool,
    ) -> None:
        self.maker = maker
        self.loopback = loopback
        self.rewind = rewind
        self.receive_blocks = receive_blocks
        self.send_blocks = send_blocks

    @asynccontextmanager
    async def fresh(self) -> AsyncGenerator[trio.abc.Stream, None]:
        channel = await self.maker()
        assert isinstance(channel, trio.abc.Stream), f"{channel!r} is not a trio.abc.Stream"
        try:
            yield channel
        finally:
            await trio.aclose_forcefully(channel)


@contextmanager
def _raises(expected: type[BaseException], what: str) -> Generator[None, None, None]:
    try:
        yield
    except expected:
        return
    except AssertionError:
        raise
    except Exception as exc:
        raise AssertionError(f"{what}: expected {expected.__name__}, got {exc!r}") from exc
    raise AssertionError(f"{what}: expected {expected.__name__}, nothing was raised")


async def _promptly(what: str, afn: Callable[[], Awaitable[T]]) -> T:
    """Run ``afn()``; fail (rather than hang) if it waits while every task is blocked.

    An exception from ``afn`` is re-raised as itself, not inside an exception group.
    """
    results: list[T] = []
    errors: list[Exception] = []

    async def run() -> None:
        try:
            results.append(await afn())
        except Exception as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        if not (results or errors):
            nursery.cancel_scope.cancel()
    if errors:
        raise errors[0]
    if not results:
        raise AssertionError(f"{what}: waited although it should return at once")
    return results[0]


async def _send(channel: trio.abc.SendStream, data: bytes | bytearray | memoryview) -> None:
    with trio.testing.assert_checkpoints():
        await channel.send_all(data)


async def _receive(channel: trio.abc.ReceiveStream, max_bytes: int | None) -> bytes:
    with trio.testing.assert_checkpoints():
        chunk = await channel.receive_some(max_bytes)
    assert isinstance(chunk, (bytes, bytearray)), f"receive_some returned {type(chunk)}"
    if max_bytes is not None:
        assert len(chunk) <= max_bytes, f"receive_some({max_bytes}) returned {len(chunk)} bytes"
    return bytes(chunk)


async def _read_back(channel: trio.abc.Stream, size: int, seed: int) -> bytes:
    """Read exactly ``size`` bytes in random-sized pieces; end of file first fails."""
    pick = random.Random(seed)
    got = bytearray()
    while len(got) < size:
        chunk = await _receive(channel, pick.randint(1, 1 << 14))
        assert chunk, f"loopback: end of file after {len(got)} of {size} bytes written"
        got += chunk
    return bytes(got)


async def _expect_eof(kind: _Kind, channel: trio.abc.Stream, what: str) -> None:
    """The next reads give ``b""``; at once unless the kind waits for a child to finish."""
    for max_bytes in (None, 1, 65536):
        if kind.receive_blocks:
            chunk = await _receive(channel, max_bytes)
        else:
            chunk = await _promptly(
                f"{what}: receive_some", functools.partial(_receive, channel, max_bytes)
            )
        assert chunk == b"", f"{what}: expected end of file, got {chunk[:20]!r}"


async def _expect_closed(channel: trio.abc.Stream, what: str) -> None:
    for name, call in (
        ("send_all", lambda: channel.send_all(b"x")),
        ("send_all(b'')", lambda: channel.send_all(b"")),
        ("wait_send_all_might_not_block", channel.wait_send_all_might_not_block),
        ("receive_some", lambda: channel.receive_some(10)),
    ):
        with _raises(trio.ClosedResourceError, f"{name} {what}"):
            await _promptly(f"{name} {what}", call)
    if isinstance(channel, trio.abc.HalfCloseableStream):
        with _raises(trio.ClosedResourceError, f"send_eof {what}"):
            await _promptly(f"send_eof {what}", channel.send_eof)


# -- the checks -----------------------------------------------------------------------------


async def _check_close(kind: _Kind) -> None:
    async with kind.fresh() as channel:  # never used
        with trio.testing.assert_checkpoints():
            await channel.aclose()
        for _ in range(2):  # idempotent
            with trio.testing.assert_checkpoints():
                await channel.aclose()
        await _expect_closed(channel, "after aclose")
    async with kind.fresh() as channel:
        async with channel:
            await _send(channel, b"x")
        await _expect_closed(channel, "after leaving 'async with'")
    async with kind.fresh() as channel:
        with trio.CancelScope() as scope:
            scope.cancel()
            await channel.aclose()
        await _expect_closed(channel, "after a cancelled aclose")


async def _check_max_bytes(kind: _Kind) -> None:
    async with kind.fresh() as channel:
        for bad in (0, -1):
            with _raises(ValueError, f"receive_some({bad})"):
                await _promptly(
                    f"receive_some({bad})", functools.partial(channel.receive_some, bad)
                )
        with _raises(TypeError, "receive_some(1.5)"):
            await _promptly("receive_some(1.5)", lambda: channel.receive_some(1.5))  # type: ignore[arg-type]  # bad input under test


def _payload() -> list[bytes | bytearray | memoryview]:
    big = random.Random(0).randbytes((1 << 20) + 7)
    return [
        b"",
        b"x",
        bytearray(b"yz"),
        memoryview(b"__123__")[2:5],
        b"",
        memoryview(bytearray(b"456")),
        big,
        b"end",
    ]


async def _check_data(kind: _Kind) -> None:
    async with kind.fresh() as channel:
        pieces = _payload()
        expected = b"".join(bytes(piece) for piece in pieces)

        async def write() -> None:
            for piece in pieces:
                if kind.send_blocks:
                    await _send(channel, piece)
                else:
                    await _promptly(
                        f"send_all of {len(piece)} bytes", functools.partial(_send, channel, piece)
                    )
                if isinstance(piece, bytearray):
                    piece[:] = b"\0" * len(piece)  # the caller may reuse its buffer now

        if not kind.loopback:
            await write()
            await _expect_eof(kind, channel, "sink")
            return
        received: list[bytes] = []
        if kind.rewind is None and kind.receive_blocks:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                received.append(await _read_back(channel, len(expected), 1))
        else:
            await write()
            if kind.rewind is not None:
                await kind.rewind(channel)
            received.append(await _read_back(channel, len(expected), 1))
        if received[0] != expected:
            at = next(
                i for i, (a, b) in enumerate(zip(received[0], expected, strict=False)) if a != b
            )
            raise AssertionError(f"loopback: data read back differs from data written at {at}")
        if kind.receive_blocks:
            # Nothing left to read: a receive waits, and gets the next write.
            async with trio.open_nursery() as nursery:
                got: list[bytes] = []

                async def receive_one() -> None:
                    got.append(await _receive(channel, 10))

                nursery.start_soon(receive_one)
                await trio.testing.wait_all_tasks_blocked()
                assert not got, f"receive_some on a drained loopback returned {got[0]!r}"
                await _send(channel, b"!")
            assert got == [b"!"], f"a waiting receive_some got {got!r} instead of b'!'"
        else:
            await _expect_eof(kind, channel, "end of the data")


async def _check_half_close(kind: _Kind) -> None:
    async with kind.fresh() as channel:
        if not isinstance(channel, trio.abc.HalfCloseableStream):
            return
        await _send(channel, b"x")
        for _ in range(2):  # repeating is allowed
            with trio.testing.assert_checkpoints():
                await channel.send_eof()
        with _raises(trio.ClosedResourceError, "send_all after send_eof"):
            await _promptly("send_all after send_eof", lambda: channel.send_all(b"y"))
        if kind.loopback:
            if kind.rewind is not None:
                await kind.rewind(channel)
            got = await _read_back(channel, 1, 2)
            assert got == b"x", f"after send_eof: read {got!r} instead of b'x'"
        await _expect_eof(kind, channel, "after send_eof")


async def _check_cancellation(kind: _Kind) -> None:
    async with kind.fresh() as channel:
        if kind.loopback:
            await _send(channel, b"abc")
            if kind.rewind is not None:
                await kind.rewind(channel)
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("receive_some", lambda: channel.receive_some(10)),
            ("wait_send_all_might_not_block", channel.wait_send_all_might_not_block),
        ]
        if isinstance(channel, trio.abc.HalfCloseableStream):
            calls.append(("send_eof", channel.send_eof))
        calls.append(("send_all", lambda: channel.send_all(b"x")))  # may have an effect: last
        for name, call in calls:
            with trio.CancelScope() as scope:
                scope.cancel()
                with _raises(trio.Cancelled, f"{name} in a cancelled scope"):
                    await call()
            if name == "receive_some" and kind.loopback:
                try:
                    got = await _read_back(channel, 3, 3)
                except AssertionError as exc:
                    raise AssertionError(f"a cancelled receive_some lost data: {exc}") from exc
                assert got == b"abc", f"a cancelled receive_some lost data: then read {got!r}"
            if name == "send_eof":
                try:  # no effect: sending still works
                    await _send(channel, b"")
                except trio.ClosedResourceError as exc:
                    raise AssertionError("a cancelled send_eof took effect") from exc


async def _check_wait_send_all_might_not_block(kind: _Kind) -> None:
    async with kind.fresh() as channel:

        async def wait() -> None:
            with trio.testing.assert_checkpoints():
                await channel.wait_send_all_might_not_block()

        await _promptly("wait_send_all_might_not_block on an idle channel", wait)
        if kind.receive_blocks:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(channel.receive_some, 1)
                await trio.testing.wait_all_tasks_blocked()
                await _promptly("wait_send_all_might_not_block beside a blocked receive", wait)
                nursery.cancel_scope.cancel()
        if not kind.send_blocks:
            await _send(channel, b"w" * (1 << 20))
            await _promptly("wait_send_all_might_not_block after a large write", wait)


async def _check_blocking_receive(kind: _Kind) -> None:
    if not kind.receive_blocks:
        return
    async with kind.fresh() as channel, trio.open_nursery() as nursery:
        nursery.start_soon(channel.receive_some, 1)
        await trio.testing.wait_all_tasks_blocked()
        with _raises(trio.BusyResourceError, "a second concurrent receive_some"):
            await _promptly("a second receive_some", lambda: channel.receive_some(1))
        nursery.cancel_scope.cancel()
    async with kind.fresh() as channel:

        async def receive_expecting_closed() -> None:
            with _raises(trio.ClosedResourceError, "receive_some blocked during aclose"):
                await channel.receive_some(10)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive_expecting_closed)
            await trio.testing.wait_all_tasks_blocked()
            await trio.aclose_forcefully(channel)


async def _clog_forever(channel: trio.abc.SendStream) -> None:
    for _ in range(_CLOG_LIMIT // len(_CLOG_CHUNK)):
        await channel.send_all(_CLOG_CHUNK)
    raise AssertionError(f"send_blocks=True, but {_CLOG_LIMIT} bytes were sent with nobody reading")


async def _check_blocking_send(kind: _Kind) -> None:
    if not kind.send_blocks:
        return
    others: list[tuple[str, Callable[[trio.abc.Stream], Awaitable[object]]]] = [
        ("send_all", lambda channel: channel.send_all(b"x")),
        ("wait_send_all_might_not_block", lambda channel: channel.wait_send_all_might_not_block()),
    ]
    for name, call in [*others, ("send_eof", _send_eof)]:
        async with kind.fresh() as channel:
            if name == "send_eof" and not isinstance(channel, trio.abc.HalfCloseableStream):
                continue
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_clog_forever, channel)
                await trio.testing.wait_all_tasks_blocked()
                what = f"{name} while another task's send_all is stuck"
                with _raises(trio.BusyResourceError, what):
                    await _promptly(what, lambda: call(channel))  # noqa: B023  # awaited here
                nursery.cancel_scope.cancel()
    async with kind.fresh() as channel:

        async def send_expecting_closed() -> None:
            with _raises(trio.ClosedResourceError, "send_all stuck during aclose"):
                await _clog_forever(channel)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_expecting_closed)
            await trio.testing.wait_all_tasks_blocked()
            await trio.aclose_forcefully(channel)


async def _send_eof(channel: trio.abc.Stream) -> None:
    assert isinstance(channel, trio.abc.HalfCloseableStream)
    await channel.send_eof()
