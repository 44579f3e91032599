"""Channel wrappers that misbehave on purpose, for testing migrations (and other protocols).

QEMU tests its migration faults with special test binaries and QMP knobs; trioqio keeps
such hooks out of production options: these wrappers go where a channel goes
(``SourceOptions.wrap_channel`` / ``DestinationOptions.wrap_channel`` in
``trioqio.migration``, or any code that takes a channel).

* :class:`CorruptingChannel` flips one byte at a given offset of what is written through
  it, so a checksum must catch it;
* :class:`HoldingChannel` passes a given number of bytes, then stalls every further read
  and write until released (or forever): a peer that stopped mid-transfer, as SIGSTOP
  makes one.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from .._abc import Channel
from ._fakes import DelegatingChannel

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["CorruptingChannel", "HoldingChannel"]


class _Wrapper(DelegatingChannel):
    """A delegating channel that also passes the Nagle hint on (a migration sets it)."""

    def set_delay(self, enabled: bool) -> None:
        """Delegate to the inner channel (Nagle's algorithm on or off).

        Args:
            enabled: True to let the kernel delay small writes.

        Raises nothing of its own: the inner channel decides.

        Example::

            wrapped.set_delay(False)
        """
        self.inner.set_delay(enabled)


@typing.final
class CorruptingChannel(_Wrapper):
    """Wrap a channel so that the byte at ``offset`` of its written stream is flipped.

    Only that one byte changes (XOR ``0xFF``); everything else, reads included, passes
    through unchanged. On a migration multifd channel, the first 88 bytes are the init
    header and the first packet header, so an offset of 100 lands in the first page.

    Args:
        inner: the channel to wrap; closing the wrapper closes it.
        offset: the stream offset (from 0) of the byte to flip.

    Attributes:
        written: bytes written through the wrapper so far.
        corrupted: whether the byte has been flipped yet.

    Raises:
        ValueError: a negative offset.

    Example::

        def corrupt(channel: trioqio.abc.Channel, name: str) -> trioqio.abc.Channel:
            return CorruptingChannel(channel, offset=100)

        # SourceOptions(wrap_channel=corrupt, ...) flips a byte of every multifd channel
    """

    def __init__(self, inner: Channel, *, offset: int) -> None:
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        super().__init__(inner, "corrupting")
        self._offset = offset
        self.written: int = 0
        self.corrupted: bool = False

    def _damage(self, data: Buffer) -> memoryview | bytearray:
        view = memoryview(data).cast("B")
        start, self.written = self.written, self.written + len(view)
        if self.corrupted or not start <= self._offset < self.written:
            return view
        copy = bytearray(view)
        copy[self._offset - start] ^= 0xFF
        self.corrupted = True
        return copy

    async def send_all(self, data: Buffer) -> None:
        """Send ``data``, flipping the chosen byte if it falls inside it.

        Args:
            data: the bytes to send.

        Raises:
            trio.BrokenResourceError: the inner channel failed.
            trio.ClosedResourceError: the inner channel was closed.

        Example::

            await corrupting.send_all(b"x" * 200)  # byte 100 arrives as 0x87
        """
        await self.inner.send_all(self._damage(data))

    async def writev(self, buffers: Sequence[Buffer]) -> None:
        """Send ``buffers`` in one ``writev`` of the inner channel, flipping as ``send_all``.

        Args:
            buffers: the buffers to send, in order.

        Raises:
            trio.BrokenResourceError: the inner channel failed.
            trio.ClosedResourceError: the inner channel was closed.

        Example::

            await corrupting.writev([header, page])
        """
        await self.inner.writev([self._damage(buffer) for buffer in buffers])

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Receive from the inner channel unchanged.

        Args:
            max_bytes: the most bytes to return.

        Returns:
            The bytes; empty at end of file.

        Raises:
            trio.BrokenResourceError: the inner channel failed.
            trio.ClosedResourceError: the inner channel was closed.

        Example::

            data = await corrupting.receive_some(4096)
        """
        return await self.inner.receive_some(max_bytes)


@typing.final
class HoldingChannel(_Wrapper):
    """Wrap a channel so that, after ``after_bytes`` bytes in both directions, it stalls.

    Reads and writes pass through until their total reaches ``after_bytes``; from then
    on every read and write waits for ``release`` (forever when it is None), after calling
    ``on_hold`` once. A write that crosses the limit is passed whole first. To the peer
    the channel looks like a process that stopped (SIGSTOP) mid-transfer.

    Args:
        inner: the channel to wrap; closing the wrapper closes it.
        after_bytes: bytes to pass (sent plus received) before holding.
        on_hold: called once, in the Trio thread, when the hold begins.
        release: an event that ends the hold, or None to hold forever.

    Attributes:
        passed: bytes passed so far (sent plus received).
        holding: whether the hold has begun.

    Raises:
        ValueError: a negative ``after_bytes``.

    Example::

        held = HoldingChannel(channel, after_bytes=1 << 20, on_hold=lambda: print("held"))
    """

    def __init__(
        self,
        inner: Channel,
        *,
        after_bytes: int,
        on_hold: Callable[[], object] | None = None,
        release: trio.Event | None = None,
    ) -> None:
        if after_bytes < 0:
            raise ValueError(f"after_bytes must be >= 0, not {after_bytes}")
        super().__init__(inner, "holding")
        self._after = after_bytes
        self._on_hold = on_hold
        self._release = release
        self.passed: int = 0
        self.holding: bool = False

    async def _gate(self) -> None:
        if self.passed < self._after:
            return
        if not self.holding:
            self.holding = True
            if self._on_hold is not None:
                self._on_hold()
        if self._release is None:
            await trio.sleep_forever()
        else:
            await self._release.wait()

    async def send_all(self, data: Buffer) -> None:
        """Send ``data`` unless the hold has begun (then wait for the release first).

        Args:
            data: the bytes to send.

        Raises:
            trio.BrokenResourceError: the inner channel failed.
            trio.ClosedResourceError: the inner channel was closed.

        Example::

            await holding.send_all(b"data")  # waits for the release once held
        """
        await self._gate()
        view = memoryview(data).cast("B")
        await self.inner.send_all(view)
        self.passed += len(view)

    async def writev(self, buffers: Sequence[Buffer]) -> None:
        """Send ``buffers`` unless the hold has begun, as :meth:`send_all`.

        Args:
            buffers: the buffers to send, in order.

        Raises:
            trio.BrokenResourceError: the inner channel failed.
            trio.ClosedResourceError: the inner channel was closed.

        Example::

            await holding.writev([header, page])
        """
        await self._gate()
        await self.inner.writev(buffers)
        self.passed += sum(memoryview(buffer).nbytes for buffer in buffers)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Receive unless the hold has begun (then wait for the release first).

        Args:
            max_bytes: the most bytes to return.

        Returns:
            The bytes; empty at end of file.

        Raises:
            trio.BrokenResourceError: the inner channel failed.
            trio.ClosedResourceError: the inner channel was closed.

        Example::

            data = await holding.receive_some(4096)
        """
        await self._gate()
        data = await self.inner.receive_some(max_bytes)
        self.passed += len(data)
        return data
