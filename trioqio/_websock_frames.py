"""Sans-IO websocket framing, server side (QEMU ``io/channel-websock.c``).

QEMU's ``qio_channel_websock_decode_header`` and ``_decode_payload`` turn a client's
frames into payload bytes, refusing with a close code the frames its policy forbids, and
``qio_channel_websock_encode`` puts a header in front of what the server sends. This module
is both directions of RFC 6455 section 5 and nothing else: no channel, no Trio, no
sockets. :class:`FrameDecoder` takes bytes and hands out events (:class:`Data`,
:class:`Ping`, :class:`Pong`, :class:`Close`) or raises
:class:`~trioqio.WebsockProtocolError` with the close code to send;
:func:`frame_header`, :func:`encode_frame` and :func:`close_payload` build what goes the
other way. :class:`~trioqio.WebsockChannel` is the pump around it.

Differences from QEMU: the decoder is sans-IO (QEMU decodes inside its channel's read
path, 4 KiB of wire bytes at a time); the close frame's payload is checked (RFC 6455 7.4:
no 1-byte payload, no reserved or local-only code, a UTF-8 reason; QEMU looks only at the
opcode); the reserved bits must be clear (no extension is negotiated); continuation frames
may themselves be fragmented (QEMU refuses a non-final continuation frame); the lengths
must use their shortest encoding and a 64-bit length its top bit clear; unmasking works a
quarter of the bytes at a time through ``bytes.translate`` tables instead of a loop per
byte.

Theory of operation
===================

The decoder keeps the bytes of the latest :meth:`FrameDecoder.receive_data` call and a
position in them, and moves through three phases (:class:`_Phase`):

* ``HEADER``: the next bytes start a frame. :meth:`~FrameDecoder.next_event` decides
  from the first two bytes alone, in this order: QEMU's policy (:func:`check_frame_header`:
  1008 a fragmented non-binary frame, 1003 a text or unknown opcode, 1002 an unmasked
  frame or a control frame of 126 bytes or more), then the reserved bits (1002: no
  extension is ever negotiated), then, for a data frame, the message sequence (1002: a
  continuation with no message begun, or a new message inside a fragmented one). Then it
  waits until the extended length and the masking key are there (1002 for a length in a
  longer encoding than needed, or above 2**63 - 1). A control frame waits until its whole
  payload (at most 125 bytes) is there and becomes one event; a data frame moves to
  ``PAYLOAD``. Until the header is complete nothing is consumed, so a header cut by a
  read is parsed again from its start with the next bytes (a few bytes, rarely).
* ``PAYLOAD``: the bytes are a data frame's payload, ``_left`` of them still to come.
  Each call hands out what is there (at most the caller's ``limit``) as one :class:`Data`,
  unmasked with the frame's key at the phase ``_offset`` modulo 4, so a frame spanning
  many reads is never held whole: a caller that drains the decoder (``next_event`` until
  None) before feeding it again makes it hold at most one ``receive_data`` worth of
  bytes, plus the start of a header or control frame (under 140 bytes) carried over.
  This is the fast path a large binary frame takes: no per-frame work beyond the header,
  the payload sliced out of the received bytes with one copy (a memoryview slice), then
  unmasked in place; a read that ends inside a payload is consumed whole, so nothing but
  a header is ever carried over to the next read.
* ``CLOSED``: the client's close frame was decoded. Nothing after it is a frame (RFC
  6455 5.5.1: the close is the last frame a peer sends); later bytes are dropped.

``_in_message`` is independent of the phase: it says a fragmented message has begun (the
previous data frame had FIN clear), so the next data frame must be a continuation; it is
set from each data frame's FIN bit as its header is taken. Control frames may come
between the fragments and do not touch it.

A refusal latches: the decoder stays failed (``_error``), drops what it holds, and every
later :meth:`~FrameDecoder.next_event` raises the same error. The decoder never raises
anything else, for any input (the fuzz tests feed it garbage).

There is no await in here, so no checkpoint and no backpressure: the channel decides when
to read (only once the decoder is drained and the caller's ``max_bytes`` is not yet
reached) and when to answer a ping (see ``trioqio/_channel_websock.py``).
"""

from __future__ import annotations

import enum
import functools
import os
import struct
import typing
from typing import TYPE_CHECKING

import attrs

from ._errors import WebsockProtocolError

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "CLOSE_INVALID_DATA",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_UNSUPPORTED_DATA",
    "MAX_CONTROL_PAYLOAD",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Close",
    "Data",
    "Event",
    "FrameDecoder",
    "Ping",
    "Pong",
    "check_frame_header",
    "close_payload",
    "encode_frame",
    "frame_header",
    "unmask",
]

# Frame opcodes (RFC 6455 5.2).
OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
# Close codes (RFC 6455 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
#: Codes below 3000 a close frame may carry: the ones defined by RFC 6455 and the IANA
#: registry, without 1004 (reserved) and 1005, 1006, 1015 (never sent, only reported).
_PROTOCOL_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)
#: The most a control frame carries (RFC 6455 5.5); a close reason 2 bytes less.
MAX_CONTROL_PAYLOAD = 125

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


# -- events -------------------------------------------------------------------------------


@typing.final
@attrs.frozen
class Data:
    """Payload bytes of a data frame, in order; a frame may come as several.

    Attributes:
        payload: the unmasked bytes (may be empty only when ``message_end`` is set).
        message_end: True on the last bytes of a message (its final frame's last byte).
    """

    payload: bytes | bytearray
    message_end: bool


@typing.final
@attrs.frozen
class Ping:
    """A ping; the answer is a pong with the same payload.

    Attributes:
        payload: the unmasked application data (at most 125 bytes).
    """

    payload: bytes


@typing.final
@attrs.frozen
class Pong:
    """A pong (ignored by the channel: it sends no pings).

    Attributes:
        payload: the unmasked application data.
    """

    payload: bytes


@typing.final
@attrs.frozen
class Close:
    """The client's close frame, with its payload checked (RFC 6455 7.4).

    Attributes:
        code: the status code, or None for an empty payload (reported as 1005).
        reason: the UTF-8 reason (empty without one).
        payload: the raw payload, which the answering close frame echoes (QEMU).
    """

    code: int | None
    reason: str
    payload: bytes


Event: typing.TypeAlias = "Data | Ping | Pong | Close"


# -- encoding -----------------------------------------------------------------------------


def frame_header(opcode: int, length: int, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    """Return the header of a frame (RFC 6455 5.2), in its shortest length encoding.

    Args:
        opcode: the frame's opcode (0 continuation, 1 text, 2 binary, 8-10 control).
        length: the payload length in bytes.
        fin: whether this frame ends its message.
        mask: a client's 4-byte masking key (appended, and the MASK bit set); None for a
            server's unmasked frame.

    Returns:
        2, 4 or 10 bytes (6, 8 or 14 with a mask).

    Raises:
        ValueError: a control frame longer than 125 bytes, a length beyond 2**63 - 1, or
            a mask that is not 4 bytes.
    """
    first = opcode | 0x80 if fin else opcode
    second = 0x80 if mask is not None else 0
    if length <= MAX_CONTROL_PAYLOAD:
        header = _SHORT.pack(first, second | length)
    elif opcode & 0x8:
        raise ValueError(f"a control frame carries at most 125 bytes, not {length}")
    elif length < 65536:
        header = _MEDIUM.pack(first, second | 126, length)
    elif length < 1 << 63:
        header = _LONG.pack(first, second | 127, length)
    else:
        raise ValueError(f"frame payload too long: {length} bytes")
    if mask is None:
        return header
    if len(mask) != 4:
        raise ValueError(f"a masking key has 4 bytes, not {len(mask)}")
    return header + mask


def close_payload(code: int, reason: str = "") -> bytes:
    """Return a close frame's payload: the code, then the reason cut to fit 125 bytes.

    The reason is cut at a character boundary, so the payload stays valid UTF-8.

    Args:
        code: the status code.
        reason: why, for humans.

    Returns:
        2 to 125 bytes.
    """
    encoded = reason.encode("utf-8")
    if len(encoded) > MAX_CONTROL_PAYLOAD - 2:
        encoded = encoded[: MAX_CONTROL_PAYLOAD - 2].decode("utf-8", "ignore").encode("utf-8")
    return _U16.pack(code) + encoded


@functools.cache
def _xor_table(key_byte: int) -> bytes:
    return bytes(value ^ key_byte for value in range(256))


def unmask(data: bytearray, key: bytes, offset: int = 0) -> bytearray:
    """XOR ``data`` in place with the repeated 4-byte ``key`` (masking is its own inverse).

    Each quarter of the bytes (every fourth one) goes through one ``bytes.translate``
    table: three C passes per byte and no Python loop per byte.

    Args:
        data: the payload bytes; changed in place.
        key: the 4-byte masking key.
        offset: how many payload bytes of the same frame came before ``data`` (the key
            position to start at).

    Returns:
        ``data``.

    Example::

        unmask(bytearray(b"\\x01\\x02"), b"\\x01\\x02\\x03\\x04")  # bytearray(b"\\x00\\x00")
    """
    if data:
        for position in range(4):
            table = _xor_table(key[(offset + position) & 3])
            data[position::4] = data[position::4].translate(table)
    return data


def _unmasked(source: bytes, start: int, end: int, tables: tuple[bytes, ...]) -> bytearray:
    """Return ``source[start:end]`` unmasked; ``tables[i]`` unmasks the bytes at ``i`` mod 4."""
    chunk = bytearray(memoryview(source)[start:end])  # one copy, then unmasked in place
    for position in range(4):
        chunk[position::4] = chunk[position::4].translate(tables[position])
    return chunk


def encode_frame(
    opcode: int,
    payload: Buffer,
    *,
    fin: bool = True,
    client: bool = False,
    mask: bytes | None = None,
) -> list[bytes | bytearray | memoryview]:
    """Return a frame as buffers to send in order: header, then payload.

    A server's frame passes ``payload`` through uncopied; a client's gets a masking key
    (``mask``, or 4 random bytes as RFC 6455 5.3 asks) and a masked copy of the payload.

    Args:
        opcode: the frame's opcode.
        payload: the payload.
        fin: whether this frame ends its message.
        client: True to mask the frame (a client's frame).
        mask: the masking key to use (tests); only with ``client``.

    Returns:
        ``[header, payload]``.

    Raises:
        ValueError: see :func:`frame_header`; a ``mask`` without ``client``.

    Example::

        await channel.writev(encode_frame(0x2, b"data"))
    """
    view = payload if type(payload) is bytes else memoryview(payload).cast("B")
    if not client:
        if mask is not None:
            raise ValueError("only a client's frames are masked")
        return [frame_header(opcode, len(view), fin=fin), view]
    key = os.urandom(4) if mask is None else mask
    return [frame_header(opcode, len(view), fin=fin, mask=key), unmask(bytearray(view), key)]


# -- decoding -----------------------------------------------------------------------------


def check_frame_header(first: int, second: int) -> tuple[int, str] | None:
    """Apply QEMU's policy to a client frame's first two bytes.

    QEMU: ``qio_channel_websock_decode_header``.

    Args:
        first: byte 0 (FIN, RSV, opcode).
        second: byte 1 (MASK, 7-bit length).

    Returns:
        ``(close_code, reason)`` for a frame QEMU refuses, else None.

    Example::

        check_frame_header(0x81, 0x85)  # (1003, ...): a text frame
    """
    opcode = first & 0x0F
    if not first & 0x80 and opcode != OP_BINARY and opcode != OP_CONTINUATION:
        return CLOSE_POLICY_VIOLATION, "only binary websocket frames may be fragmented"
    if opcode not in (OP_CONTINUATION, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
        return (
            CLOSE_UNSUPPORTED_DATA,
            f"unsupported opcode {opcode:#x}: only binary, close, ping and pong frames",
        )
    if not second & 0x80:
        return CLOSE_PROTOCOL_ERROR, "client websocket frames must be masked"
    if opcode & 0x8 and (second & 0x7F) > MAX_CONTROL_PAYLOAD:
        return CLOSE_PROTOCOL_ERROR, "websocket control frame is too large"
    return None


def _check_close(payload: bytes) -> Close:
    """The client's close payload as an event, or the refusal RFC 6455 7.4 asks for."""
    if not payload:
        return Close(None, "", payload)
    if len(payload) == 1:
        raise WebsockProtocolError("close frame with a 1-byte payload", code=CLOSE_PROTOCOL_ERROR)
    code = _U16.unpack_from(payload)[0]
    if not (code in _PROTOCOL_CLOSE_CODES or 3000 <= code <= 4999):
        raise WebsockProtocolError(
            f"close frame with the invalid code {code}", code=CLOSE_PROTOCOL_ERROR
        )
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebsockProtocolError(
            "close frame reason is not UTF-8", code=CLOSE_INVALID_DATA
        ) from None
    return Close(code, reason, payload)


class _Phase(enum.Enum):
    # See "Theory of operation" above.
    HEADER = enum.auto()
    PAYLOAD = enum.auto()
    CLOSED = enum.auto()


class _Step(enum.Enum):
    # What ``_header`` returns when it took a header without an event to hand out (an
    # empty non-final frame): decode on.
    ON = enum.auto()


@typing.final
class FrameDecoder:
    """Turn a client's bytes into frame events, refusing what QEMU and RFC 6455 forbid.

    Feed bytes with :meth:`receive_data`, then call :meth:`next_event` until it returns
    None (more bytes needed). Drained that way, it never holds more than one feed's bytes
    plus the start of one frame (see the module's theory of operation).

    Example::

        decoder = FrameDecoder()
        decoder.receive_data(data)
        while (event := decoder.next_event()) is not None:
            ...
    """

    def __init__(self) -> None:
        self._phase = _Phase.HEADER
        self._data = b""  # the bytes being decoded, from ``_pos`` on
        self._pos = 0
        self._in_message = False  # see the theory of operation: independent of _phase
        self._error: WebsockProtocolError | None = None
        # The data frame whose payload is being read (``PAYLOAD``): bytes still to come,
        # how many came before (the key's phase), its FIN bit, and its unmasking tables.
        self._left = 0
        self._offset = 0
        self._fin = True
        self._tables: tuple[bytes, ...] = ()

    @property
    def buffered(self) -> int:
        """Bytes received and not yet decoded."""
        return len(self._data) - self._pos

    @property
    def in_message(self) -> bool:
        """True while a fragmented message has begun and not ended."""
        return self._in_message

    @property
    def closed(self) -> bool:
        """True once the client's close frame was decoded (later bytes are dropped)."""
        return self._phase is _Phase.CLOSED

    def receive_data(self, data: Buffer) -> None:
        """Add bytes the client sent.

        Args:
            data: the next bytes, any length.
        """
        if self._phase is _Phase.CLOSED or self._error is not None:
            return  # nothing after a close frame or a refusal is decoded
        new = data if type(data) is bytes else bytes(data)
        if self._pos < len(self._data):  # the start of a header or control frame
            self._data = self._data[self._pos :] + new
        else:
            self._data = new
        self._pos = 0

    def next_event(self, limit: int = 1 << 62) -> Event | None:
        """Return the next event, or None when more bytes are needed (or after a close).

        Args:
            limit: the most payload bytes one :class:`Data` may carry (at least 1).

        Returns:
            The event; None when the bytes so far end inside a header or control frame,
            or once the client's close frame was decoded.

        Raises:
            trioqio.WebsockProtocolError: the frame breaks a rule (``.code`` is the close
                code to send); the decoder stays failed and raises it again.
        """
        if self._error is not None:
            raise self._error
        try:
            while True:
                if self._phase is _Phase.PAYLOAD:
                    return self._payload(limit)
                if self._phase is _Phase.CLOSED:
                    return None
                event = self._header(limit)
                if event is not _Step.ON:
                    return event
        except WebsockProtocolError as exc:
            self._error = exc
            self._data = b""  # nothing after a refusal is decoded
            self._pos = 0
            raise

    def _payload(self, limit: int) -> Data | None:
        data = self._data
        pos = self._pos
        take = min(self._left, len(data) - pos, limit)
        if take <= 0:
            return None
        tables = self._tables
        phase = self._offset & 3
        if phase:
            tables = tables[phase:] + tables[:phase]
        chunk = _unmasked(data, pos, pos + take, tables)
        pos += take
        if pos == len(data):
            data = self._data = b""  # do not hold a large read past its last byte
            pos = 0
        self._pos = pos
        self._offset += take
        self._left -= take
        if self._left:
            return Data(chunk, False)
        self._phase = _Phase.HEADER
        return Data(chunk, self._fin)

    def _header(self, limit: int) -> Event | _Step | None:
        """Take one frame header: an event, None for more bytes, or ON to decode on."""
        data = self._data
        pos = self._pos
        have = len(data) - pos
        if have < 2:
            return None
        first = data[pos]
        second = data[pos + 1]
        verdict = check_frame_header(first, second)
        if verdict is not None:
            raise WebsockProtocolError(verdict[1], code=verdict[0])
        if first & 0x70:
            raise WebsockProtocolError(
                "websocket framing error: reserved bit set (no extension was negotiated)",
                code=CLOSE_PROTOCOL_ERROR,
            )
        opcode = first & 0x0F
        control = bool(opcode & 0x8)
        if not control and (opcode == OP_CONTINUATION) != self._in_message:
            raise WebsockProtocolError(
                "new message inside a fragmented one"
                if self._in_message
                else "continuation frame without a message",
                code=CLOSE_PROTOCOL_ERROR,
            )
        size = second & 0x7F
        if size < 126:
            start = pos + 6
        elif size == 126:
            if have < 4:
                return None
            size = _U16.unpack_from(data, pos + 2)[0]
            if size < 126:
                raise WebsockProtocolError(
                    f"websocket framing error: length {size} in 16 bits (7 suffice)",
                    code=CLOSE_PROTOCOL_ERROR,
                )
            start = pos + 8
        else:
            if have < 10:
                return None
            size = _U64.unpack_from(data, pos + 2)[0]
            if size >> 63:
                raise WebsockProtocolError(
                    "websocket framing error: 64-bit length with its top bit set",
                    code=CLOSE_PROTOCOL_ERROR,
                )
            if size < 65536:
                raise WebsockProtocolError(
                    f"websocket framing error: length {size} in 64 bits (16 suffice)",
                    code=CLOSE_PROTOCOL_ERROR,
                )
            start = pos + 14
        if len(data) < start:
            return None
        key = data[start - 4 : start]
        tables = (
            _xor_table(key[0]),
            _xor_table(key[1]),
            _xor_table(key[2]),
            _xor_table(key[3]),
        )
        if control:
            end = start + size
            if len(data) < end:
                return None
            payload = bytes(_unmasked(data, start, end, tables))
            self._consume(end)
            if opcode == OP_PING:
                return Ping(payload)
            if opcode == OP_PONG:
                return Pong(payload)
            event = _check_close(payload)
            self._phase = _Phase.CLOSED
            self._data = b""
            self._pos = 0
            return event
        fin = bool(first & 0x80)
        self._in_message = not fin
        self._consume(start)
        if not size:
            return Data(b"", True) if fin else _Step.ON
        self._phase = _Phase.PAYLOAD
        self._left = size
        self._offset = 0
        self._fin = fin
        self._tables = tables
        return self._payload(limit)  # None if none of the payload is here yet

    def _consume(self, end: int) -> None:
        if end == len(self._data):
            self._data = b""
            self._pos = 0
        else:
            self._pos = end
