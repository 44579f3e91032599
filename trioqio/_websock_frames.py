"""The websocket frame layer under WebsockChannel (QEMU ``io/channel-websock.c``).

QEMU's ``qio_channel_websock_decode_header``/``decode_payload`` and ``encode`` turn the
master's bytes into binary payload and back, answer pings, echo close frames, and refuse
frames its rules forbid with a close code. :class:`WebsockFrames` holds that layer: the
wsproto decoder and encoder, the frame-sequence checks, pong and close sending, and the
protocol-error path. :class:`~trioqio.WebsockChannel` builds the handshake and the
stream methods on it.

Differences from QEMU: wsproto builds control frames and parses control frames and
malformed ones; data frames are framed by :mod:`trioqio._websock_encode` and sent with the
master's ``writev`` so a payload is never copied, and well-formed client data frames are
parsed here with their payload unmasked in place (three C passes per byte, no per-frame
Python of wsproto's); payload is streamed as it arrives (never a whole message in
memory); a pong due while another task sends waits for that send instead of interleaving
with it; the client's close frame is answered when the application closes, not as it is
read.
"""

from __future__ import annotations

import contextlib
import struct
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from . import _websock_proto as proto
from ._abc import Channel, ChannelFeature
from ._conflict import Busy as _Busy
from ._errors import WebsockProtocolError
from ._layered import LayeredChannel
from ._trace import emit, enabled
from ._websock_encode import frame_header, unmask

if TYPE_CHECKING:
    from typing_extensions import Buffer
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

__all__ = ["WebsockFrames"]

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
#: Lingering close: after a refusal (a 4xx reply, a 1002/1003/1008 close frame) or our own
#: close frame, :meth:`WebsockChannel.aclose` shuts the master's sending side and reads
#: and discards the client's bytes for at most this long and this much before closing, so
#: that the kernel does not answer unread bytes with a reset that destroys the reply.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
#: How long sending our close frame may take in ``aclose``/``_protocol_error``.
CLOSE_SEND_SECONDS = 1.0
#: A frame this small is joined with its header and sent with one ``send_all``: the copy
#: costs less than a vectored write, and a TLS master then sends one record.
_JOIN_LIMIT = 16 * 1024


def _codec() -> tuple[FrameDecoder, FrameProtocol, type[Exception]]:
    # wsproto is the optional extra ``trioqio[websocket]``: import it only when needed.
    try:
        from wsproto.frame_protocol import FrameDecoder, FrameProtocol, ParseFailed
    except ImportError as exc:  # pragma: no cover - the extra is installed in tests
        raise ImportError("WebsockChannel needs wsproto: pip install 'trioqio[websocket]'") from exc
    return FrameDecoder(client=False, extensions=[]), FrameProtocol(False, []), ParseFailed


class WebsockFrames(LayeredChannel):
    """Binary frames over a master channel: the state and plumbing of a websocket channel.

    Not a channel on its own: :class:`~trioqio.WebsockChannel` adds the handshake and the
    stream methods.
    """

    _PROTOCOL = "websocket"
    _TRACE = "qio_channel_websock"
    _TRACE_FAIL_FIELD = "msg"

    def __init__(self, master: Channel, *, name: str) -> None:
        self._master = master
        self.name = name
        self.features = master.features & ChannelFeature.SHUTDOWN
        self._decoder, self._encoder, self._parse_failed = _codec()
        self._send_lock = trio.Lock()
        self._handshake_lock = trio.Lock()
        self._send_busy = _Busy("sending on this websocket channel")
        self._receive_busy = _Busy("receiving on this websocket channel")
        self._handshake_done = False
        self._failure: BaseException | None = None
        self._closed = False
        self._close_sent = False
        self._eof = False
        # The payload of the client's close frame once one arrived: end of file for our
        # receive side only; our close frame (echoing it) goes out on send_eof()/aclose().
        self._peer_close: bytes | None = None
        self._must_linger = False  # a refusal or our close frame went out: linger in aclose
        self._in_message = False  # a fragmented binary message is in progress
        self._frame_open = False  # wsproto handed on part of a frame; more is coming
        self._pending = bytearray()  # decoded payload not yet returned
        # A data frame read by the fast path (:meth:`_fast_data`): payload bytes still to
        # come, its masking key, how many payload bytes came before, and its FIN bit.
        self._fast_left = 0
        self._fast_key = b""
        self._fast_offset = 0
        self._fast_fin = True
        self._pong: bytes | None = None  # a pong waiting for the send lock
        self._protocol = False

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"{self._channel_name()} is closed")
        if self._failure is not None:
            raise trio.BrokenResourceError(
                f"{self._channel_name()} is broken: {self._failure}"
            ) from self._failure

    async def _send_data(self, buffers: Sequence[Buffer]) -> None:
        """Send the buffers as one binary frame (FIN set, unmasked); nothing if empty.

        wsproto's ``FrameProtocol`` is bypassed: the only state its ``send_data`` keeps is
        the opcode of an unfinished fragmented message, and every frame sent here ends
        its message, so that state stays "no message in progress" either way.
        """
        views: list[bytes | memoryview] = [
            item if type(item) is bytes else memoryview(item).cast("B") for item in buffers
        ]
        length = sum(map(len, views))
        if not length:
            await trio.lowlevel.checkpoint()
            return
        if enabled():
            emit("qio_channel_websock_encode", ioc=self, op=proto.OP_BINARY, payloadlen=length)
        header = frame_header(proto.OP_BINARY, length)
        if length <= _JOIN_LIMIT:
            await self._send_frame(b"".join([header, *views]))
        else:
            await self._send_frame(header, *views)

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
            except trio.BrokenResourceError as exc:
                self._failure = self._failure or exc
                raise
            if self._pong is not None:  # a ping arrived while we were sending
                pong, self._pong = self._pong, None
                await self._master.send_all(self._encoder.pong(pong))
        finally:
            lock.release()

    async def _send_close(self, code: int, reason: str = "", payload: bytes | None = None) -> None:
        if self._close_sent:
            return
        self._close_sent = True
        self._must_linger = True
        if enabled():
            emit("qio_channel_websock_close", ioc=self, code=code)
        frame = (
            self._encoder.close(code, reason)
            if payload is None
            else bytes([0x80 | proto.OP_CLOSE, len(payload)]) + payload
        )
        with contextlib.suppress(trio.BrokenResourceError):  # the peer is gone
            await self._send_frame(frame)

    async def _protocol_error(self, code: int, reason: str) -> typing.NoReturn:
        error = WebsockProtocolError(
            f"{self._channel_name()}: {reason} (sent close {code})", code=code
        )
        self._failure = error
        with trio.move_on_after(CLOSE_SEND_SECONDS):
            await self._send_close(code, reason)
        raise error

    async def _sequence_error(self, continuation: bool) -> typing.NoReturn:
        """Refuse a data frame that does not fit the message sequence (RFC 6455 5.4)."""
        await self._protocol_error(
            proto.CLOSE_PROTOCOL_ERROR,
            "continuation frame without a message"
            if continuation
            else "new message inside a fragmented one",
        )

    # How frames are read.
    #
    # Bytes from the master go into wsproto's decoder buffer, and ``_process_frames``
    # turns what is buffered into payload in ``_pending`` until it runs out of whole
    # headers. At a frame boundary (wsproto has no header in progress) it looks at the
    # first two bytes itself: QEMU's policy (``check_frame_header``) first, then, for a
    # plain data frame, the sequence check and the fast path, which takes the header off
    # the buffer and records the frame in ``_fast_*``; its payload is then moved out and
    # unmasked as it arrives, across as many master reads as it spans, ``_fast_offset``
    # keeping the mask phase. Anything else (control frames, a malformed header) goes to
    # wsproto, whose data chunks pass the same sequence check on a frame's first chunk
    # (``_frame_open`` says a frame is part-way through).
    #
    # Two bits describe the message sequence and are independent of everything else:
    # ``_in_message`` (a fragmented message has begun: the next data frame must be a
    # continuation) and ``_frame_open``. Two more are the halves of the close handshake,
    # also independent: ``_close_sent`` (our close frame went out: no more sending) and
    # ``_peer_close`` (the client's close arrived: end of file for reading, with the
    # payload our answer echoes). ``_eof`` is end of file for reading by either a close
    # frame or the master's EOF. A refusal latches ``_failure`` and sends the close with
    # the refusal's code; ``aclose`` then lingers (see LINGER_SECONDS).
    #
    # It returns True when it awaited (a ping answered), so the caller knows it already
    # checkpointed; a refusal raises.

    async def _process_frames(self) -> bool:
        """Decode buffered frames; return True if it had to await (a pong or a close)."""
        decoder = self._decoder
        while True:
            if self._fast_left:
                if not self._fast_payload():
                    return False
                continue
            buffer = decoder.buffer
            if decoder.header is None and len(buffer) - buffer.bytes_used >= 2:
                start = buffer.bytes_used
                first = buffer.buffer[start]
                verdict = proto.check_frame_header(first, buffer.buffer[start + 1])
                if verdict is not None:
                    await self._protocol_error(*verdict)
                if not first & 0x78:  # a data frame (QEMU's check: binary), no RSV bit
                    continuation = first & 0x0F == proto.OP_CONTINUATION
                    if self._in_message != continuation:  # inline: once per data frame
                        await self._sequence_error(continuation)
                    ready = self._fast_header(first)
                    if ready is None:
                        return False  # wait for the rest of the header
                    if ready:
                        continue
            frame = None  # for the checkers: _protocol_error raises
            try:
                frame = decoder.process_buffer()
            except self._parse_failed as exc:
                code = int(getattr(exc, "code", proto.CLOSE_PROTOCOL_ERROR))
                await self._protocol_error(code, f"websocket framing error: {exc}")
            if frame is None:
                return False
            opcode = frame.opcode
            payload = frame.payload
            assert isinstance(payload, (bytes, bytearray))  # a FrameDecoder never decodes text
            if opcode == proto.OP_BINARY or opcode == proto.OP_CONTINUATION:
                if not self._frame_open:  # the first chunk of a frame: check the sequence
                    continuation = opcode == proto.OP_CONTINUATION
                    if self._in_message != continuation:
                        await self._sequence_error(continuation)
                self._frame_open = not frame.frame_finished
                if frame.frame_finished:
                    self._in_message = not frame.message_finished
                self._pending += payload
                continue
            if opcode == proto.OP_PING:
                await self._answer_ping(bytes(payload))
                return True
            if opcode == proto.OP_CLOSE:
                if enabled():
                    peer_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    emit("qio_channel_websock_close", ioc=self, peer_code=peer_code)
                # End of file for our receive side only: data this side is still
                # sending goes out first (RFC 6455 5.5.1), and the close frame that answers
                # this one goes out on send_eof() or aclose(). Bytes after it are ignored.
                self._peer_close = bytes(payload)
                self._eof = True
                return False
            # Opcode.PONG: ignored.

    # -- the data-frame fast path ------------------------------------------------------
    #
    # wsproto's decoder costs tens of microseconds of Python per frame and copies each
    # payload several times; a well-formed data frame (binary or continuation, no RSV
    # bit, the shortest length encoding) is read here instead, from the same buffer,
    # while wsproto's decoder is between frames. Every other frame (control frames, and
    # the malformed ones, which wsproto refuses with its error) goes through wsproto.

    def _fast_header(self, first: int) -> bool | None:
        """Take a data frame's header off the buffer if it is plain and complete.

        Returns None if the header is incomplete, False to leave the frame to wsproto.
        """
        buffer = self._decoder.buffer
        data = buffer.buffer
        start = buffer.bytes_used
        size = data[start + 1] & 0x7F
        if size == 126:
            end = start + 8
            if len(data) < end:
                return None
            size = _U16.unpack_from(data, start + 2)[0]
            if size < 126:
                return False
        elif size == 127:
            end = start + 14
            if len(data) < end:
                return None
            size = _U64.unpack_from(data, start + 2)[0]
            if size < 65536 or size >> 63:
                return False
        else:
            end = start + 6
            if len(data) < end:
                return None
        self._fast_key = bytes(data[end - 4 : end])
        del data[start:end]
        self._fast_left = size
        self._fast_offset = 0
        self._fast_fin = bool(first & 0x80)
        if not size:
            self._in_message = not self._fast_fin
        return True

    def _fast_payload(self) -> bool:
        """Move buffered payload of the fast-path frame to ``_pending``; False if none."""
        buffer = self._decoder.buffer
        data = buffer.buffer
        start = buffer.bytes_used
        take = min(self._fast_left, len(data) - start)
        if take <= 0:
            return False
        chunk = data[start : start + take]
        del data[start : start + take]
        unmask(chunk, self._fast_key, self._fast_offset)
        self._fast_offset += take
        self._fast_left -= take
        if self._pending:
            self._pending += chunk
        else:
            self._pending = chunk
        if not self._fast_left:
            self._in_message = not self._fast_fin
        return True

    async def _answer_close(self) -> None:
        """Send our close frame: the client's close echoed, else 1000 (QEMU's reply)."""
        peer = self._peer_close
        if peer:
            await self._send_close(0, payload=peer)
        else:
            await self._send_close(
                proto.CLOSE_NORMAL, "" if peer is None else "peer requested close"
            )
        if peer is not None:
            # The close handshake is complete: QEMU shuts the master down here.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._master.send_eof()

    async def _linger(self) -> None:
        """Shut the master's sending side, then read and discard until the client closes.

        Bounded by :data:`LINGER_SECONDS` (the caller's deadline) and :data:`LINGER_BYTES`.
        Closing a socket with unread bytes makes the kernel send a reset, which can
        overtake the reply or close frame still in flight; the client sees 1006 or
        "connection reset" instead of our code.
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

    async def _answer_ping(self, payload: bytes) -> None:
        if self._close_sent:
            return
        if self._send_lock.locked():
            self._pong = payload  # the sender sends it; a newer ping replaces an older one
            await trio.lowlevel.checkpoint()
            return
        with contextlib.suppress(trio.BrokenResourceError):
            await self._send_frame(self._encoder.pong(payload))
