"""Websocket server channel carrying a binary byte stream (QEMU ``io/channel-websock.c``).

QEMU's QIOChannelWebsock (server side only, used for VNC over websockets) reads the
HTTP upgrade request, answers 101 or an HTTP error, then carries the channel's bytes in
binary frames. trioqio keeps QEMU's request rules and replies (in the sans-IO
:mod:`trioqio._websock_proto`) and its frame policy, uses wsproto for control frames and
malformed input, and frames and parses data frames itself (:mod:`trioqio._websock_frames`:
header plus payload in one vectored write; payload unmasked in place).

Differences from QEMU: the handshake has a timeout (30 s by default) against slow
clients; the reply says ``Server: trioqio``; a failed handshake leaves the master open
(so the peer can read the error reply) until :meth:`WebsockChannel.aclose`; frames are
streamed (a message's payload is handed on as it arrives, never reassembled in memory),
so buffering is bounded by two master reads (512 KiB) whatever the peer sends;
:meth:`WebsockChannel.send_eof` sends a close frame (QEMU has no half-close); the
client's close frame ends reading only, and is answered on ``send_eof``/``aclose`` (QEMU
answers at once, cutting off what the application still sends); ``aclose`` lingers after a
refusal so the reply or close code reaches the client instead of a reset.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from . import _websock_proto as proto
from ._abc import Channel, ChannelFeature, Shutdown
from ._errors import HandshakeError
from ._task import CompletionCallback, Task
from ._trace import emit, enabled
from ._websock_frames import CLOSE_SEND_SECONDS, LINGER_SECONDS, WebsockFrames

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["WebsockChannel"]

#: Bytes asked of the master per read after the handshake.
_RECEIVE_SIZE = 256 * 1024


@typing.final
class WebsockChannel(WebsockFrames):
    """The server side of a websocket connection, as a byte stream of binary frames.

    Create it with :meth:`server`, run :meth:`handshake` (or :meth:`handshake_task`), then
    use it as any channel: each ``send_all``/``writev`` is one binary frame (FIN set,
    unmasked), and ``receive_some`` returns the payload bytes of the client's binary
    frames in order. Pings are answered. The client's close frame is end of file for
    reading only: this side may still send, and the close is answered on
    :meth:`send_eof` or :meth:`aclose`, so an echo loop returns every byte.

    QEMU: ``QIOChannelWebsock`` (``qio_channel_websock_new_server``).

    Args:
        master: the accepted channel the frames travel on; the websocket channel owns it.
        name: the channel's name for errors and traces.

    Attributes:
        features: the master's ``SHUTDOWN`` feature, nothing else.
        handshake_timeout: seconds the client has to send its request, or None.

    Example::

        async with trioqio.WebsockChannel.server(channel) as ws:
            await ws.handshake()
            while data := await ws.receive_some():  # b"" once the client closed
                await ws.send_all(data)  # one binary frame
            await ws.writev([b"bye, ", b"client"])  # one frame from two buffers
            await ws.send_eof()  # answers the client's close
    """

    def __init__(
        self, master: Channel, *, handshake_timeout: float | None = 30.0, name: str = ""
    ) -> None:
        """Prefer :meth:`server`; the arguments are its."""
        if not isinstance(master, trio.abc.Stream):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"master must be a trioqio channel, got {master!r}")
        if handshake_timeout is not None and not handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be positive or None: {handshake_timeout}")
        super().__init__(master, name=name)
        self.handshake_timeout = handshake_timeout

    @classmethod
    def server(
        cls, channel: Channel, *, handshake_timeout: float | None = 30.0, name: str = ""
    ) -> WebsockChannel:
        """Wrap ``channel`` as the server side of a websocket connection.

        QEMU: ``qio_channel_websock_new_server``.

        Args:
            channel: the accepted master channel (plain or TLS).
            handshake_timeout: seconds the client has to send its request; None for no
                limit (QEMU has none).
            name: the channel's name for errors and traces.

        Returns:
            The websocket channel (not yet handshaken).

        Raises:
            TypeError: ``channel`` is not a channel.
            ValueError: ``handshake_timeout`` is not positive.
        """
        ws = cls(channel, handshake_timeout=handshake_timeout, name=name)
        if enabled():
            emit("qio_channel_websock_new_server", ioc=ws, master=channel)
        return ws

    @property
    def handshake_done(self) -> bool:
        """True once a 101 reply was sent."""
        return self._handshake_done

    @property
    def protocol_requested(self) -> bool:
        """True when the client asked for (and got) the ``binary`` subprotocol."""
        return self._protocol

    # -- handshake --------------------------------------------------------------------

    async def handshake(self) -> None:
        """Read the upgrade request, send QEMU's reply, and fail if it was not a 101.

        The HTTP reply is always sent before an error is raised; a client that closes
        early or is too slow gets no reply. The master is left open either way.

        QEMU: ``qio_channel_websock_handshake`` (without the callback; see
        :meth:`handshake_task`).

        Raises:
            trioqio.HandshakeError: the request was refused (``.status`` is the HTTP
                status sent: 400, 403 or 404), the client closed first or timed out
                (``.status`` None), or the master failed.
            trio.ClosedResourceError: the channel was closed.

        Example::

            try:
                await ws.handshake()
            except trioqio.HandshakeError as exc:
                log.info("websocket refused (%s): %s", exc.status, exc)
        """
        await self._handshake()

    async def _handshake_once(self) -> None:
        outcome = await self._read_request()
        await self._master.send_all(outcome.reply)
        if enabled():
            emit("qio_channel_websock_handshake_reply", ioc=self, status=outcome.status)
        if not outcome.ok:
            self._must_linger = True  # the client may still be sending: see aclose
            raise HandshakeError(
                f"{self._channel_name()}: websocket handshake refused with "
                f"{outcome.status}: {outcome.error}",
                status=outcome.status,
            )
        self._protocol = outcome.protocol
        if outcome.leftover:
            self._decoder.receive_bytes(outcome.leftover)

    async def _read_request(self) -> proto.HandshakeOutcome:
        reader = proto.RequestReader()
        while True:
            data = await self._master.receive_some(reader.room)
            if not data:
                raise HandshakeError(f"{self._channel_name()}: {reader.eof_error()}")
            outcome = reader.feed(bytes(data))
            if outcome is not None:
                return outcome
            if enabled():
                emit("qio_channel_websock_handshake_pending", ioc=self, buffered=reader.buffered)

    def handshake_task(
        self,
        nursery: trio.Nursery,
        on_complete: CompletionCallback[WebsockChannel] | None = None,
    ) -> Task[WebsockChannel]:
        """Run the handshake in ``nursery`` and report it through a :class:`trioqio.Task`.

        The completion runs in the Trio thread exactly once: with the result ``self``, the
        :class:`HandshakeError`, or :class:`trioqio.TaskCancelled` (the cancellation
        policy of every ``*_task``, see :meth:`trioqio.Task.start_soon`).

        QEMU: ``qio_channel_websock_handshake(wioc, func, opaque, destroy)``.

        Args:
            nursery: owns the handshake.
            on_complete: ``on_complete(task)``, plain or async.

        Returns:
            The task.

        Raises nothing: a failed handshake is reported through the Task, and an exception
        from ``on_complete`` propagates into ``nursery``.

        Example::

            ws.handshake_task(nursery, lambda task: task.propagate_error())
        """
        task: Task[WebsockChannel] = Task(
            source=self, on_complete=on_complete, name="websock-handshake"
        )
        task.start_soon(nursery, self._handshake_then_self)
        return task

    # -- Trio stream methods ----------------------------------------------------------

    async def send_all(self, data: Buffer) -> None:
        """Send ``data`` as one binary frame (FIN set, unmasked).

        Args:
            data: the payload; an empty one sends nothing.

        Raises:
            trio.BrokenResourceError: the master failed.
            trio.ClosedResourceError: the channel was closed or a close frame was sent.
            trio.BusyResourceError: another task is sending.
        """
        await self.writev([data])

    async def writev(self, buffers: Sequence[Buffer]) -> None:
        """Send the buffers as one binary frame (QEMU: each ``writev`` is one frame).

        Args:
            buffers: the payload pieces.

        Raises:
            trio.BrokenResourceError: the master failed.
            trio.ClosedResourceError: the channel was closed or a close frame was sent.
        """
        with self._send_busy:
            self._check_open()
            if self._close_sent:
                raise trio.ClosedResourceError(f"{self._channel_name()}: close frame already sent")
            if not self._handshake_done:
                await self.handshake()
            await self._send_data(buffers)

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_busy:
            self._check_open()
            await self._master.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Send our close frame; later sends raise ClosedResourceError.

        Before the client closed: 1000, and the client is expected to answer with its
        own close frame, which ends reading. After it closed: its close frame echoed
        (QEMU's answer), then the master is shut down for writing.

        Raises:
            trio.BusyResourceError: another task is sending.
            trio.ClosedResourceError: the channel was closed.
            trio.BrokenResourceError: the master failed.
            trioqio.HandshakeError: the handshake had not run yet and failed now.
        """
        with self._send_busy:
            self._check_open()
            if not self._handshake_done:
                await self.handshake()
            if self._close_sent:
                await trio.lowlevel.checkpoint()
                return
            if self._peer_close is None:
                self._close_sent = True
                self._must_linger = True
                await self._send_frame(self._encoder.close(proto.CLOSE_NORMAL))
            else:
                await self._answer_close()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return payload bytes of the client's binary frames, in order.

        Fragmented messages arrive as one stream of bytes. Pings are answered with pongs;
        pongs are ignored; the client's close frame ends the stream (``b""``) but not
        sending: it is answered on :meth:`send_eof` or :meth:`aclose`. Frames QEMU
        refuses get a close frame with QEMU's code and raise.

        Args:
            max_bytes: the most bytes to return (default 256 KiB).

        Returns:
            At least one byte, or ``b""`` once the client closed.

        Raises:
            trioqio.WebsockProtocolError: a text frame (1003), an unmasked frame or an
                oversize control frame (1002), a fragmented non-binary frame (1008), or
                another framing error (wsproto's code).
            trio.BrokenResourceError: the master failed.
            trio.ClosedResourceError: the channel was closed.
        """
        max_bytes = self._receive_size(max_bytes)
        with self._receive_busy:
            await self._ready_to_receive()
            yielded = False
            while not self._pending and not self._eof:
                if await self._process_frames():
                    yielded = True
                    continue
                if self._pending or self._eof:
                    break
                yielded = True
                data = await self._master.receive_some(_RECEIVE_SIZE)
                if not data:
                    self._eof = True  # the client vanished without a close frame
                    break
                self._decoder.receive_bytes(bytes(data))
            if not yielded:
                await trio.lowlevel.cancel_shielded_checkpoint()
            if not self._pending:
                return b""
            if len(self._pending) <= max_bytes:
                data = bytes(self._pending)
                self._pending.clear()
            else:
                data = bytes(self._pending[:max_bytes])
                del self._pending[:max_bytes]
            return data

    async def aclose(self) -> None:
        """Send our close frame if not yet sent, linger if needed, close the master.

        Idempotent. The close frame gets 1 s. After a refusal (a 4xx reply, a 1002/1003/
        1008 close) or our own close frame, the master's sending side is shut down and the
        client's bytes are read and discarded until it closes, for at most 2 s and 1 MiB,
        so that unread bytes do not make the kernel reset the connection under the reply.

        QEMU: ``qio_channel_close`` on a websocket channel.

        Raises nothing of its own: the master's ``aclose`` errors, if any, propagate.

        Example::

            await ws.aclose()
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if not self._send_lock.locked():  # else a sender is mid-frame: close abruptly
                await self._close_gracefully()
        finally:
            await self._master.aclose()

    async def _close_gracefully(self) -> None:
        healthy = self._handshake_done and self._failure is None
        if healthy and not self._close_sent:
            with (
                trio.move_on_after(CLOSE_SEND_SECONDS),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await self._answer_close()
        if self._must_linger and self._peer_close is None:
            # Our close frame or refusal is on its way and the client may still be
            # sending: read until it closes so its bytes do not turn into a reset.
            with trio.move_on_after(LINGER_SECONDS):
                await self._linger()

    # -- QEMU extras --------------------------------------------------------------------

    async def shutdown(self, how: Shutdown = Shutdown.BOTH) -> None:
        """Shut down the master (QEMU: forwarded).

        Args:
            how: :class:`trioqio.Shutdown` READ, WRITE or BOTH.

        Raises:
            trioqio.UnsupportedFeature: the master lacks ``SHUTDOWN``.

        Example::

            await ws.shutdown()
        """
        self._require(ChannelFeature.SHUTDOWN, "data path shutdown")
        await self._master.shutdown(how)
