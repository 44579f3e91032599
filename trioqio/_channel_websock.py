"""Websocket server channel carrying a binary byte stream (QEMU ``io/channel-websock.c``).

QEMU's QIOChannelWebsock (server side only, used for VNC over websockets) reads the
HTTP upgrade request, answers 101 or an HTTP error, then carries the channel's bytes in
binary frames. :class:`WebsockChannel` is that channel: a pump around two sans-IO cores,
:mod:`trioqio._websock_proto` (QEMU's request rules and replies) and
:mod:`trioqio._websock_frames` (the frame decoder, QEMU's frame policy and the encoder).

Differences from QEMU: the handshake has a timeout (30 s by default) against slow
clients; the reply says ``Server: trioqio``; a failed handshake leaves the master open
(so the peer can read the error reply) until :meth:`WebsockChannel.aclose`; frames are
streamed (a message's payload is handed on as it arrives, never reassembled in memory),
so buffering is bounded by two master reads (512 KiB) whatever the peer sends;
:meth:`WebsockChannel.send_eof` sends a close frame (QEMU has no half-close); the
client's close frame ends reading only, and is answered on ``send_eof``/``aclose`` (QEMU
answers at once, cutting off what the application still sends); ``aclose`` lingers after a
refusal so the reply or close code reaches the client instead of a reset.

Theory of operation
===================

**Lifecycle.** :class:`_State` is the close handshake plus the two ways a channel ends
badly, one value at a time::

    OPEN --send_eof()/aclose()--> CLOSE_SENT --client's close--> CLOSE_DONE
    OPEN --client's close--> CLOSE_RECEIVED --send_eof()/aclose()--> CLOSE_DONE
    OPEN/CLOSE_SENT --refused request or frame--> REFUSED   (our 4xx or close went out)
    OPEN/CLOSE_* --master broke, handshake failed without a reply--> BROKEN
    any --aclose()--> CLOSED

``OPEN`` covers the time before the handshake too: whether the 101 went out is the layered
base's handshake-once latch (``_handshake_done``), kept apart because it stays true through
every later state (``handshake_done`` still says so after a refusal or a close), as trio's
``SSLStream`` keeps its handshake ``_Once`` apart from its ``_State``. ``REFUSED`` and
``BROKEN`` hold their exception in ``_failure`` and make every call raise
``BrokenResourceError`` from it; they differ in what ``aclose`` does: after a refusal the
client is probably still sending, so it lingers (below); after a broken master there is
no one to linger for. ``_master_eof`` is independent of all this: the master ended
without a close frame (the client vanished or shut down its sending side), which ends
reading but not sending, and makes lingering pointless.

**Receiving** (``receive_some``) is the pump: bytes from the master go into the
:class:`~trioqio._websock_frames.FrameDecoder`; its :class:`Data` events go to
``_pending`` (payload decoded and not yet returned, at most ``max_bytes`` of it: the
decoder is asked for no more, and keeps the rest of the read undecoded); a ping is
answered, a pong dropped, the client's close ends reading. The master is read only when
nothing is pending, so the channel holds at most one master read undecoded plus
``max_bytes`` decoded. ``_pending`` lives on the channel, not in the call, because a ping's
answer is an await: a cancellation there must not lose payload already decoded (a later
call with a smaller ``max_bytes`` takes it in pieces). The call is a checkpoint either
way: it starts with ``checkpoint_if_cancelled`` and then either awaited (a master read, a
pong sent) or ends with ``cancel_shielded_checkpoint``.

**Sending**: each ``send_all``/``writev`` is one frame sent under ``_send_lock``, which
also serialises pongs and close frames with it (the receive side sends those). A ping
that arrives while a frame is being sent is not sent in the middle of it: it is left in
``_pong`` for the sender, which sends it right after its frame, before releasing the lock
(a newer ping replaces an older unsent one, as in QEMU). Backpressure is the master's:
``send_all`` returns once the frame is written.

**Closing**: our close frame goes out on ``send_eof``, on ``aclose``, or with a refusal's
code; the client's close (``CLOSE_RECEIVED``) is answered by echoing its payload, then the
master's sending side is shut down. ``aclose`` then lingers when the client may still be
sending (``CLOSE_SENT`` or ``REFUSED``, master not at EOF): it shuts the master's sending
side and reads and discards for at most :data:`LINGER_SECONDS` and :data:`LINGER_BYTES`,
because closing a socket with unread input makes the kernel send a reset, which can
overtake the reply or close frame still in flight (browsers report 1006 instead of the
code).
"""

from __future__ import annotations

import contextlib
import enum
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from . import _websock_frames as frames
from . import _websock_proto as proto
from ._abc import Channel, ChannelFeature, Shutdown
from ._conflict import Busy as _Busy
from ._errors import HandshakeError, WebsockProtocolError
from ._layered import LayeredChannel
from ._task import CompletionCallback, Task
from ._trace import emit, enabled
from ._websock_frames import OP_BINARY, Close, Data, Ping, frame_header

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["WebsockChannel"]

#: Bytes asked of the master per read after the handshake.
_RECEIVE_SIZE = 256 * 1024
#: Lingering close: after a refusal (a 4xx reply, a 1002/1003/1007/1008 close frame) or
#: our own close frame, :meth:`WebsockChannel.aclose` shuts the master's sending side and
#: reads and discards the client's bytes for at most this long and this much.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
#: How long sending our close frame may take in ``aclose`` or after a refused frame.
CLOSE_SEND_SECONDS = 1.0
#: A frame this small is joined with its header and sent with one ``send_all``: the copy
#: costs less than a vectored write, and a TLS master then sends one record.
_JOIN_LIMIT = 16 * 1024


class _State(enum.Enum):
    # See "Theory of operation" above.
    OPEN = enum.auto()
    CLOSE_SENT = enum.auto()
    CLOSE_RECEIVED = enum.auto()
    CLOSE_DONE = enum.auto()
    REFUSED = enum.auto()
    BROKEN = enum.auto()
    CLOSED = enum.auto()


@typing.final
class WebsockChannel(LayeredChannel):
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
        handshake_timeout: seconds the client has to send its request, or None.
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

    _PROTOCOL = "websocket"
    _TRACE = "qio_channel_websock"
    _TRACE_FAIL_FIELD = "msg"

    def __init__(
        self, master: Channel, *, handshake_timeout: float | None = 30.0, name: str = ""
    ) -> None:
        """Prefer :meth:`server`; the arguments are its."""
        if not isinstance(master, trio.abc.Stream):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"master must be a trioqio channel, got {master!r}")
        if handshake_timeout is not None and not handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be positive or None: {handshake_timeout}")
        self._master = master
        self.name = name
        self.features: ChannelFeature = master.features & ChannelFeature.SHUTDOWN
        self.handshake_timeout = handshake_timeout
        self._state = _State.OPEN
        self._failure: BaseException | None = None  # the error of REFUSED and BROKEN
        self._master_eof = False  # independent of _state: see the theory of operation
        self._handshake_done = False  # the layered base's handshake-once latch
        self._handshake_lock = trio.Lock()
        self._send_lock = trio.Lock()
        self._send_busy = _Busy("sending on this websocket channel")
        self._receive_busy = _Busy("receiving on this websocket channel")
        self._decoder = frames.FrameDecoder()
        self._pending: list[bytes | bytearray | memoryview] = []  # decoded, not yet returned
        self._pending_size = 0
        self._peer_close = b""  # the client's close payload, which our close echoes
        self._pong: bytes | None = None  # a pong waiting for the sender (see Sending)
        self._protocol = False

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

    def _check_open(self) -> None:
        state = self._state
        if state is _State.CLOSED:
            raise trio.ClosedResourceError(f"{self._channel_name()} is closed")
        if state is _State.REFUSED or state is _State.BROKEN:
            raise trio.BrokenResourceError(
                f"{self._channel_name()} is broken: {self._failure}"
            ) from self._failure

    def _break(self, error: BaseException) -> None:
        """Latch a failure of the master (a refusal or a close keeps its own state)."""
        if self._state is not _State.CLOSED and self._state is not _State.REFUSED:
            self._state = _State.BROKEN
            self._failure = self._failure or error

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
            trio.BrokenResourceError: the channel broke earlier.

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
            self._state = _State.REFUSED  # the client may still be sending: aclose lingers
            raise HandshakeError(
                f"{self._channel_name()}: websocket handshake refused with "
                f"{outcome.status}: {outcome.error}",
                status=outcome.status,
            )
        self._protocol = outcome.protocol
        if outcome.leftover:
            self._decoder.receive_data(outcome.leftover)

    async def _handshake_failed(self) -> None:
        # The base latched _failure. A refusal set REFUSED where its reply went out; a
        # timeout, an early EOF or a broken master sent nothing.
        if self._state is _State.OPEN:
            self._state = _State.BROKEN

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

    # -- sending ----------------------------------------------------------------------

    async def send_all(self, data: Buffer) -> None:
        """Send ``data`` as one binary frame (FIN set, unmasked); an empty one sends nothing.

        Args:
            data: the payload.

        Raises:
            trio.BrokenResourceError: the master failed or the channel broke.
            trio.ClosedResourceError: the channel was closed or a close frame was sent.
            trio.BusyResourceError: another task is sending.
            trioqio.HandshakeError: the handshake had not run yet and failed now.
        """
        await self.writev([data])

    async def writev(self, buffers: Sequence[Buffer]) -> None:
        """Send the buffers as one binary frame (QEMU: each ``writev`` is one frame).

        Args:
            buffers: the payload pieces.

        Raises:
            trio.BrokenResourceError: the master failed or the channel broke.
            trio.ClosedResourceError: the channel was closed or a close frame was sent.
            trio.BusyResourceError: another task is sending.
            trioqio.HandshakeError: the handshake had not run yet and failed now.
        """
        with self._send_busy:
            state = self._state
            if state is not _State.OPEN and state is not _State.CLOSE_RECEIVED:
                self._check_open()
                # Our close frame went out: no data frame may follow (RFC 6455 5.5.1).
                raise trio.ClosedResourceError(f"{self._channel_name()}: close frame already sent")
            if not self._handshake_done:
                await self.handshake()
            views: list[bytes | memoryview] = [
                item if type(item) is bytes else memoryview(item).cast("B") for item in buffers
            ]
            length = sum(map(len, views))
            if not length:
                await trio.lowlevel.checkpoint()
                return
            if enabled():
                emit("qio_channel_websock_encode", ioc=self, op=frames.OP_BINARY, payloadlen=length)
            header = frame_header(OP_BINARY, length)
            if length <= _JOIN_LIMIT:
                await self._send_frame(b"".join([header, *views]))
            else:
                await self._send_frame(header, *views)

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_busy:
            self._check_open()
            await self._master.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Send our close frame; later sends raise ClosedResourceError.

        Before the client closed: 1000, and the client is expected to answer with its
        own close frame, which ends reading. After it closed: its close frame echoed
        (QEMU's answer), then the master is shut down for writing. Idempotent.

        Raises:
            trio.BusyResourceError: another task is sending.
            trio.ClosedResourceError: the channel was closed.
            trio.BrokenResourceError: the master failed or the channel broke.
            trioqio.HandshakeError: the handshake had not run yet and failed now.
        """
        with self._send_busy:
            self._check_open()
            if not self._handshake_done:
                await self.handshake()
            if self._state is _State.OPEN:
                self._state = _State.CLOSE_SENT
                await self._send_close(frames.close_payload(frames.CLOSE_NORMAL))
            elif self._state is _State.CLOSE_RECEIVED:
                self._state = _State.CLOSE_DONE
                await self._answer_close()
            else:
                await trio.lowlevel.checkpoint()

    async def _send_frame(self, *parts: bytes | bytearray | memoryview) -> None:
        """Send one frame (one buffer, or several with the master's ``writev``) and any
        pong that came due meanwhile, under the send lock."""
        lock = self._send_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()  # the master's send is this path's checkpoint
        try:
            try:
                if len(parts) == 1:
                    await self._master.send_all(parts[0])
                else:
                    await self._master.writev(parts)
                while self._pong is not None:  # a ping arrived while we were sending
                    pong, self._pong = self._pong, None
                    await self._master.send_all(
                        frames.frame_header(frames.OP_PONG, len(pong)) + pong
                    )
            except trio.BrokenResourceError as exc:
                self._break(exc)
                raise
        finally:
            lock.release()

    async def _send_close(self, payload: bytes) -> None:
        """Send a close frame with ``payload``; the caller has set the state."""
        if enabled():
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            emit("qio_channel_websock_close", ioc=self, code=code)
        with contextlib.suppress(trio.BrokenResourceError):  # the peer is gone
            await self._send_frame(frames.frame_header(frames.OP_CLOSE, len(payload)) + payload)

    async def _answer_close(self) -> None:
        """Echo the client's close (QEMU's reply), then shut the master's sending side."""
        await self._send_close(
            self._peer_close or frames.close_payload(frames.CLOSE_NORMAL, "peer requested close")
        )
        # The close handshake is complete: QEMU shuts the master down here.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._master.send_eof()

    # -- receiving --------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return payload bytes of the client's binary frames, in order.

        Fragmented messages arrive as one stream of bytes. Pings are answered with pongs;
        pongs are ignored; the client's close frame ends the stream (``b""``) but not
        sending: it is answered on :meth:`send_eof` or :meth:`aclose`. Frames QEMU or
        RFC 6455 refuse get a close frame with the refusal's code and raise.

        Args:
            max_bytes: the most bytes to return (default 256 KiB).

        Returns:
            At least one byte, or ``b""`` once the client closed.

        Raises:
            trioqio.WebsockProtocolError: a text frame or another unsupported opcode
                (1003); a fragmented non-binary frame (1008); an unmasked frame, an
                oversize control frame, a reserved bit, a length in a longer encoding
                than needed, a frame out of the message sequence, or an invalid close
                frame (1002); a close reason that is not UTF-8 (1007).
            trio.BrokenResourceError: the master failed or the channel broke.
            trio.ClosedResourceError: the channel was closed.
            trio.BusyResourceError: another task is receiving.
            trioqio.HandshakeError: the handshake had not run yet and failed now.
        """
        max_bytes = self._receive_size(max_bytes)
        with self._receive_busy:
            await self._ready_to_receive()
            decoder = self._decoder
            awaited = False
            while self._pending_size < max_bytes:
                try:
                    event = decoder.next_event(max_bytes - self._pending_size)
                except WebsockProtocolError as exc:
                    await self._refuse(exc)
                if event is None:
                    if self._pending or self._master_eof:
                        break
                    if self._state is not _State.OPEN and self._state is not _State.CLOSE_SENT:
                        self._check_open()  # broken or closed meanwhile: raise
                        break  # the client's close was read: end of file
                    awaited = True
                    data = await self._master.receive_some(_RECEIVE_SIZE)
                    if not data:
                        self._master_eof = True  # the client vanished without a close frame
                        break
                    decoder.receive_data(data)
                elif type(event) is Data:
                    if event.payload:
                        self._pending.append(event.payload)
                        self._pending_size += len(event.payload)
                elif type(event) is Ping:
                    awaited = await self._answer_ping(event.payload) or awaited
                elif type(event) is Close:
                    self._peer_closed(event)
                    break
                # a Pong: ignored (this side sends no pings)
            if not awaited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return self._take(max_bytes)

    def _take(self, max_bytes: int) -> bytes:
        """Return up to ``max_bytes`` of the pending payload, in one join."""
        pending = self._pending
        if self._pending_size <= max_bytes:
            data = b"".join(pending)
            pending.clear()
            self._pending_size = 0
            return data
        # Only after a cancelled call that decoded more than this call's max_bytes. The
        # rest stays as a memoryview (never empty), so small reads cost what they return.
        first = pending[0]
        if len(first) > max_bytes:
            view = memoryview(first)
            pending[0] = view[max_bytes:]
            self._pending_size -= max_bytes
            return bytes(view[:max_bytes])
        head = b"".join(pending)
        pending[:] = [memoryview(head)[max_bytes:]]
        self._pending_size -= max_bytes
        return head[:max_bytes]

    def _peer_closed(self, event: frames.Close) -> None:
        # End of file for our receive side only: data this side is still sending goes out
        # first (RFC 6455 5.5.1), and the close frame that answers this one goes out on
        # send_eof() or aclose().
        if enabled():
            emit("qio_channel_websock_close", ioc=self, peer_code=event.code)
        self._peer_close = event.payload
        if self._state is _State.OPEN:
            self._state = _State.CLOSE_RECEIVED
        elif self._state is _State.CLOSE_SENT:
            self._state = _State.CLOSE_DONE

    async def _answer_ping(self, payload: bytes) -> bool:
        """Answer a ping, or leave the pong to the sender; return True if it awaited."""
        if self._state is not _State.OPEN:
            return False  # our close frame went out: nothing follows it
        if self._send_lock.locked():
            self._pong = payload  # the sender sends it; a newer ping replaces an older one
            return False
        with contextlib.suppress(trio.BrokenResourceError):
            await self._send_frame(frames.frame_header(frames.OP_PONG, len(payload)) + payload)
        return True

    async def _refuse(self, exc: WebsockProtocolError) -> typing.NoReturn:
        """Latch a refused frame, send the close with its code (if ours is not out), raise."""
        error = WebsockProtocolError(
            f"{self._channel_name()}: {exc} (sent close {exc.code})", code=exc.code
        )
        previous = self._state
        self._state = _State.REFUSED
        self._failure = error
        if previous is _State.OPEN:
            with trio.move_on_after(CLOSE_SEND_SECONDS):
                await self._send_close(frames.close_payload(exc.code, str(exc)))
        raise error

    # -- closing ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Send our close frame if not yet sent, linger if needed, close the master.

        Idempotent. The close frame gets 1 s. After a refusal (a 4xx reply, a 1002/1003/
        1007/1008 close) or our own close frame, the master's sending side is shut down
        and the client's bytes are read and discarded until it closes, for at most 2 s
        and 1 MiB, so that unread bytes do not make the kernel reset the connection
        under the reply. A cancellation cuts that short; the master is closed either way.

        QEMU: ``qio_channel_close`` on a websocket channel.

        Raises nothing of its own: the master's ``aclose`` errors, if any, propagate.

        Example::

            with trio.move_on_after(0.5):  # a shorter linger than 2 s
                await ws.aclose()
        """
        previous = self._state
        if previous is _State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        self._state = _State.CLOSED
        try:
            if not self._send_lock.locked():  # else a sender is mid-frame: close abruptly
                await self._close_gracefully(previous)
        finally:
            await self._master.aclose()

    async def _close_gracefully(self, previous: _State) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            with trio.move_on_after(CLOSE_SEND_SECONDS):
                if previous is _State.OPEN and self._handshake_done:
                    previous = _State.CLOSE_SENT
                    await self._send_close(frames.close_payload(frames.CLOSE_NORMAL))
                elif previous is _State.CLOSE_RECEIVED:
                    await self._answer_close()
        if (previous is _State.CLOSE_SENT or previous is _State.REFUSED) and not self._master_eof:
            with trio.move_on_after(LINGER_SECONDS):
                await self._linger()

    async def _linger(self) -> None:
        """Shut the master's sending side, then read and discard until the client closes.

        Bounded by :data:`LINGER_SECONDS` (the caller's deadline) and :data:`LINGER_BYTES`.
        """
        with contextlib.suppress(
            trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError
        ):
            await self._master.send_eof()
            left = LINGER_BYTES
            while left > 0:
                data = await self._master.receive_some(min(left, 64 * 1024))
                if not data:
                    return
                left -= len(data)

    # -- QEMU extras --------------------------------------------------------------------

    async def shutdown(self, how: Shutdown = Shutdown.BOTH) -> None:
        # QEMU forwards it to the master; so does trioqio, unchanged.
        self._require(ChannelFeature.SHUTDOWN, "data path shutdown")
        await self._master.shutdown(how)
