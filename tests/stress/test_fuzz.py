"""Hostile input: fuzz the migration wire format, address strings and websocket frame lengths.

Every malformed input must end in the documented error naming the field or part at fault
(:class:`trioqio.MigrationError`, :class:`trioqio.AddressError`, or for a websocket a
:class:`trio.BrokenResourceError`), never another exception, a hang, or an allocation sized
by a length the peer announced (measured with tracemalloc).
"""

from __future__ import annotations

import re
import struct
import tracemalloc
import uuid as uuid_module

import pytest
import trio
from _scale import size
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

import trioqio
from trioqio import AddressError, MigrationError
from trioqio.migration import _protocol as proto
from trioqio.migration._protocol import (
    MESSAGE_HEADER_SIZE,
    MULTIFD_INIT_SIZE,
    PACKET_HEADER_SIZE,
    Config,
    MessageType,
    MultiFDInit,
    PacketFlags,
    PacketHeader,
    parse_main_hello,
    parse_message,
    parse_message_header,
)

EXAMPLES = size(full=2000, ci=300)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

UUID = uuid_module.UUID(int=0x1234).bytes
CONFIG = Config(uuid=UUID, size=(1 << 20) + 123, page_size=4096, channels=4, packet_pages=128)
_FIELD = re.compile(r"^channel fuzz: field '(\w+)': ")
U32 = st.integers(0, 0xFFFFFFFF)
U64 = st.integers(0, (1 << 64) - 1)


def _field(exc: MigrationError) -> str:
    match = _FIELD.match(str(exc))
    assert match is not None, f"error does not name the channel and field: {exc}"
    event(f"refused: field {match.group(1)}")
    return match.group(1)


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for index, value in edits:
        out[index % len(out)] = value
    return bytes(out)


_edits = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6)


# -- multifd init header --------------------------------------------------------------------


_init_headers = st.one_of(
    st.binary(max_size=2 * MULTIFD_INIT_SIZE),
    st.builds(
        lambda magic, version, uuid, cid: struct.pack(">II16sB7x32x", magic, version, uuid, cid),
        st.sampled_from([proto.MULTIFD_MAGIC, 0, 0x44332211]) | U32,
        st.sampled_from([proto.MULTIFD_VERSION, 0, 2]) | U32,
        st.sampled_from([UUID, bytes(16)]) | st.binary(min_size=16, max_size=16),
        st.integers(0, 255),
    ),
    st.builds(_mutate, st.just(MultiFDInit(uuid=UUID, id=1).pack()), _edits),
)


@FUZZ
@given(_init_headers, st.sampled_from([None, 1, 4, 256]))
@example(MultiFDInit(uuid=UUID, id=3).pack(), 4)
@example(MultiFDInit(uuid=UUID, id=4).pack(), 4)
def test_fuzz_multifd_init(data: bytes, channels: int | None) -> None:
    refused: MigrationError | None = None
    try:
        header = MultiFDInit.parse(data, channel="fuzz", expected_uuid=UUID, channels=channels)
    except MigrationError as exc:
        refused = exc
    if refused is not None:
        assert _field(refused) in {"length", "magic", "version", "uuid", "id"}
        return
    # Accepted: the fields must be those of a well-formed header for this VM (the 39
    # padding bytes are ignored, as QEMU ignores MultiFDInit_t's unused fields).
    assert data[:25] == MultiFDInit(uuid=UUID, id=header.id).pack()[:25]
    assert channels is None or header.id < channels


# -- page packet headers ------------------------------------------------------------------------


_packet_headers = st.one_of(
    st.binary(max_size=2 * PACKET_HEADER_SIZE),
    st.builds(
        lambda magic, flags, reserved, first, count, length: struct.pack(
            ">IHHQII", magic, flags, reserved, first, count, length
        ),
        st.sampled_from([proto.PACKET_MAGIC]) | U32,
        st.sampled_from([0, 1]) | st.integers(0, 0xFFFF),
        st.just(0) | st.integers(0, 0xFFFF),
        st.integers(0, CONFIG.num_pages + 2) | U64,
        st.integers(0, 130) | U32,
        st.sampled_from([0, 4096, 128 * 4096, 0xFFFFFFFF]) | U32,
    ),
    st.builds(
        _mutate,
        st.just(PacketHeader(first_page=0, num_pages=128, length=128 * 4096).pack()),
        _edits,
    ),
)


@FUZZ
@given(_packet_headers)
@example(struct.pack(">IHHQII", proto.PACKET_MAGIC, 0, 0, 0, 1, 0xFFFFFFFF))  # 4 GiB payload
@example(struct.pack(">IHHQII", proto.PACKET_MAGIC, 0, 0, (1 << 64) - 1, 128, 128 * 4096))
@example(struct.pack(">IHHQII", proto.PACKET_MAGIC, 0, 0, 256, 1, 123))  # the short last page
def test_fuzz_packet_header(data: bytes) -> None:
    refused: MigrationError | None = None
    try:
        header = PacketHeader.parse(data, channel="fuzz", config=CONFIG)
    except MigrationError as exc:
        refused = exc
    if refused is not None:
        assert _field(refused) in {
            "length",
            "magic",
            "flags",
            "reserved",
            "first_page",
            "num_pages",
        }
        return
    # Accepted: the length it lets the caller allocate is bounded by the packet size and
    # matches the pages, which lie inside the image.
    assert header.length <= CONFIG.packet_bytes
    if header.flags & PacketFlags.END:
        assert (header.first_page, header.num_pages, header.length) == (0, 0, 0)
    else:
        assert 1 <= header.num_pages <= CONFIG.packet_pages
        assert header.first_page + header.num_pages <= CONFIG.num_pages
        assert header.length == CONFIG.run_length(header.first_page, header.num_pages)


# -- main channel ---------------------------------------------------------------------------------


def _message_bytes(kind: int, length: int, payload: bytes) -> bytes:
    return struct.pack(">B3xI", kind, length) + payload


_valid_messages = st.sampled_from(
    [
        proto.encode_message(CONFIG),
        proto.encode_message(proto.End(pages=257, checksum=bytes(32))),
        proto.encode_message(
            proto.Result(status=proto.ResultStatus.MATCH, pages=257, checksum=bytes(32))
        ),
        proto.encode_message(proto.ErrorMessage(text="boom")),
    ]
)
_config_payloads = st.builds(
    lambda uuid, total, page, channels, pages, seed, kind, checksum: struct.pack(
        ">16sQIIIQBB6x", uuid, total, page, channels, pages, seed, kind, checksum
    ),
    st.binary(min_size=16, max_size=16),
    st.sampled_from([0, 1 << 20, (1 << 63) - 1, 1 << 63]) | U64,
    st.sampled_from([511, 512, 4096, 1 << 20, (1 << 20) + 1]) | U32,
    st.integers(0, 300) | U32,
    st.integers(0, 2000) | U32,
    U64,
    st.integers(0, 3) | st.integers(0, 255),
    st.integers(0, 3) | st.integers(0, 255),
)
_messages = st.one_of(
    st.binary(max_size=64),
    st.builds(_mutate, _valid_messages, _edits),
    st.builds(
        lambda kind, length, payload: _message_bytes(kind, length, payload),
        st.integers(0, 6) | st.integers(0, 255),
        st.sampled_from([0, 40, 48, 56, 4096, 4097, 0xFFFFFFFF]) | U32,
        st.binary(max_size=80),
    ),
    _config_payloads.map(lambda p: _message_bytes(MessageType.CONFIG, len(p), p)),
)


@FUZZ
@given(_messages)
@example(_message_bytes(MessageType.ERROR, 0xFFFFFFFF, b""))  # a 4 GiB error text
@example(_message_bytes(MessageType.ERROR, 3, b"\xff\xfe\xfd"))  # not UTF-8
def test_fuzz_main_channel_message(data: bytes) -> None:
    """Parse as the destination does: header, bound, then exactly that many payload bytes."""
    refused: MigrationError | None = None
    try:
        kind, length = parse_message_header(data[:MESSAGE_HEADER_SIZE], channel="fuzz")
    except MigrationError as exc:
        refused = exc
    if refused is not None:
        assert _field(refused) in {"length", "type"}
        return
    assert length <= max(proto.MAX_ERROR_TEXT, 64)  # bounded before anyone allocates it
    payload = data[MESSAGE_HEADER_SIZE:]
    assume(len(payload) >= length)  # a short payload is the reader's EOF, not the parser's
    refused = None
    try:
        message = parse_message(kind, payload[:length], channel="fuzz")
    except MigrationError as exc:
        refused = exc
    if refused is not None:
        fields = {"kind", "checksum", "status", "uuid", "size", "page_size", "channels"}
        assert _field(refused) in fields | {"packet_pages"}
        return
    assert isinstance(message, (Config, proto.End, proto.Result, proto.ErrorMessage))
    assert proto.encode_message(message)  # what was accepted can be sent again


@FUZZ
@given(st.binary(max_size=16) | st.builds(_mutate, st.just(proto.pack_main_hello()), _edits))
def test_fuzz_main_hello(data: bytes) -> None:
    refused: MigrationError | None = None
    try:
        parse_main_hello(data, channel="fuzz")
    except MigrationError as exc:
        refused = exc
    if refused is not None:
        assert _field(refused) in {"length", "magic", "version"}
        return
    assert data == proto.pack_main_hello()


def test_hostile_lengths_allocate_nothing_sized_by_the_peer() -> None:
    """Headers announcing 4 GiB payloads are refused with O(1) allocation."""
    hostile_packets = [
        struct.pack(">IHHQII", proto.PACKET_MAGIC, 0, 0, first, count, 0xFFFFFFFF)
        for first in (0, 200, (1 << 64) - 1)
        for count in (1, 128, 0xFFFFFFFF)
    ]
    hostile_messages = [_message_bytes(kind, 0xFFFFFFFF, b"") for kind in (1, 2, 3, 4, 5, 255)] + [
        _message_bytes(4, 4097, b"")
    ]
    rounds = size(full=2000, ci=200)
    tracemalloc.start()
    try:
        for _ in range(rounds):
            for data in hostile_packets:
                with pytest.raises(MigrationError):
                    PacketHeader.parse(data, channel="fuzz", config=CONFIG)
            for data in hostile_messages:
                with pytest.raises(MigrationError):
                    parse_message_header(data, channel="fuzz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Each refusal builds an error message; nothing scales with the 4 GiB announced.
    assert peak < 256 * 1024, f"parsing hostile headers peaked at {peak} bytes"


# -- address strings ---------------------------------------------------------------------

_address_parts = st.sampled_from(
    [
        "tcp:",
        "unix:",
        "fd:",
        "vsock:",
        "[",
        "]",
        ":",
        "::1",
        "@",
        "/",
        "localhost",
        "127.0.0.1",
        "65535",
        "65536",
        "0",
        "-1",
        "\0",
        " ",
        "\u0661",
        "99999999999999999999",
        "x" * 200,
    ]
)
_addresses = st.one_of(
    st.text(max_size=60),
    st.lists(_address_parts | st.text(max_size=5), max_size=8).map("".join),
)


@settings(max_examples=size(full=3000, ci=500), deadline=None)
@given(_addresses)
@example("tcp:[::1:80")
@example("vsock:4294967296:1")
@example("fd:\u0661")
@example("unix:\0")
@example("tcp:" + "9" * 5000 + ":" + "9" * 5000)
def test_fuzz_parse_address(text: str) -> None:
    refused: AddressError | None = None
    try:
        address = trioqio.parse_address(text)
    except AddressError as exc:
        refused = exc
    if refused is not None:
        message = str(refused)
        assert message
        assert "\n" not in message
        assert isinstance(refused, ValueError)
        return
    # Accepted: the text form parses back to the same value.
    assert trioqio.parse_address(str(address)) == address


# -- websocket frames with hostile lengths -----------------------------------------------


_ws_headers = st.builds(
    lambda first, mask, length_form, length: (
        bytes([first, (0x80 if mask else 0) | length_form])
        + (struct.pack("!H", length & 0xFFFF) if length_form == 126 else b"")
        + (struct.pack("!Q", length) if length_form == 127 else b"")
        + (b"\x01\x02\x03\x04" if mask else b"")
    ),
    st.sampled_from([0x82, 0x02, 0x80, 0x00, 0x88, 0x89, 0x8A]) | st.integers(0, 255),
    st.booleans().filter(lambda _: True) | st.just(True),
    st.sampled_from([126, 127]) | st.integers(0, 127),
    st.sampled_from([(1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 32, 65535]) | U64,
)


KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@settings(
    max_examples=size(full=300, ci=40),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(_ws_headers, min_size=1, max_size=3), st.binary(max_size=3000))
async def test_fuzz_websocket_hostile_frame_lengths(headers: list[bytes], body: bytes) -> None:
    """Frames announcing up to 2**64 bytes: data, EOF or BrokenResourceError, O(received) memory."""
    a, b = trio.socket.socketpair()
    client, server_end = trioqio.SocketChannel(a), trioqio.SocketChannel(b)
    ws = trioqio.WebsockChannel.server(server_end, handshake_timeout=5)
    wire = b"".join(headers) + body
    received = 0
    try:
        with trio.fail_after(20):
            await client.send_all(UPGRADE)
            await ws.handshake()
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += await client.receive_some(4096)
            assert reply.startswith(b"HTTP/1.1 101 ")
            tracemalloc.start()
            async with trio.open_nursery() as nursery:

                async def feed() -> None:
                    try:
                        await client.send_all(wire)
                        await client.send_eof()
                    except trio.BrokenResourceError:
                        pass  # the server refused a frame and closed first

                async def drain() -> None:
                    # Read the server's close frame (if any) so its send never blocks.
                    try:
                        while await client.receive_some(65536):
                            pass
                    except trio.BrokenResourceError:
                        pass

                nursery.start_soon(feed)
                nursery.start_soon(drain)
                try:
                    while data := await ws.receive_some(4096):
                        received += len(data)
                except trio.BrokenResourceError:
                    pass  # WebsockProtocolError or UnexpectedEOF: both are this type
                await ws.aclose()
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await ws.aclose()
        await client.aclose()
    event(f"peak under {(peak >> 16) + 1} x 64 KiB")
    assert received <= len(wire)  # never more than was sent (later headers may be payload)
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes for {len(wire)} bytes on the wire"
