"""Websocket data frames on the wire, without wsproto (QEMU ``io/channel-websock.c``).

QEMU's ``qio_channel_websock_encode`` writes a frame header in front of the payload and
``qio_channel_websock_decode_payload`` unmasks a client's payload in place. These are those
two steps: :func:`frame_header` and :func:`encode_frame` build the bytes wsproto's
``FrameProtocol`` would send for the same frame (tests compare them byte for byte), and
:func:`unmask` XORs a payload with its masking key in place.

Differences from QEMU: a server's payload is never copied (the header and the payload go
out as two buffers of one vectored write), and unmasking works a quarter of the bytes at a
time through ``bytes.translate`` tables instead of a loop per byte.
"""

from __future__ import annotations

import functools
import os
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["encode_frame", "frame_header", "unmask"]

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def frame_header(opcode: int, length: int, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    """Return the header of a frame (RFC 6455 5.2): the bytes wsproto would put first.

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

    Example::

        frame_header(0x2, 4096)  # b"\x82~\x10\x00"
    """
    first = opcode | 0x80 if fin else opcode
    second = 0x80 if mask is not None else 0
    if length < 126:
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

        unmask(bytearray(b"\x01\x02"), b"\x01\x02\x03\x04")  # bytearray(b"\x00\x00")
    """
    if data:
        for position in range(4):
            table = _xor_table(key[(offset + position) & 3])
            data[position::4] = data[position::4].translate(table)
    return data


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
    The bytes are the ones wsproto's ``FrameProtocol`` produces for the same frame
    (without extensions).

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
