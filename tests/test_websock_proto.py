"""The sans-IO websocket handshake rules (QEMU io/channel-websock.c), tested on bytes."""

from __future__ import annotations

import os
import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trioqio._websock_encode import encode_frame, frame_header, unmask
from trioqio._websock_proto import (
    MAX_HANDSHAKE_BYTES,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RequestReader,
    accept_key,
    check_frame_header,
    process_request,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key
GOOD_HEADERS = [
    ("Host", "127.0.0.1"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


def request(
    headers: list[tuple[str, str]] | None = None, greeting: str = "GET / HTTP/1.1"
) -> bytes:
    lines = [greeting] + [f"{k}: {v}" for k, v in (GOOD_HEADERS if headers is None else headers)]
    return "\r\n".join(lines).encode("latin-1")


def without(name: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in GOOD_HEADERS if k != name]


def replaced(name: str, value: str) -> list[tuple[str, str]]:
    return [(k, value if k == name else v) for k, v in GOOD_HEADERS]


def test_accept_key_rfc_sample() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_success_reply() -> None:
    outcome = process_request(request(), now=0)
    assert outcome.ok
    assert outcome.error is None
    assert outcome.reply == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Server: trioqio\r\n"
        b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    )
    assert not outcome.protocol


def test_protocol_echoed_only_when_asked() -> None:
    asked = process_request(request([*GOOD_HEADERS, ("Sec-WebSocket-Protocol", "chat, binary")]))
    assert asked.ok
    assert asked.protocol
    assert b"\r\nSec-WebSocket-Protocol: binary\r\n\r\n" in asked.reply
    assert b"Sec-WebSocket-Protocol" not in process_request(request()).reply


def test_error_reply_template() -> None:
    outcome = process_request(request(greeting="POST / HTTP/1.1"), now=0)
    assert outcome.reply == (
        b"HTTP/1.1 400 Bad Request\r\n"
        b"Server: trioqio\r\n"
        b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
        b"Connection: close\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"\r\n"
    )
    not_found = process_request(request(greeting="GET /x HTTP/1.1"), now=0)
    assert not_found.reply.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"Sec-WebSocket-Version" not in not_found.reply
    assert not_found.reply.endswith(b"Connection: close\r\n\r\n")


# QEMU's five bad-request cases (the request bytes before the final blank line).
@pytest.mark.parametrize(
    ("head", "error"),
    [
        (b"stats\r\nx", "Missing HTTP path delimiter"),  # no-space
        (b"GET\r\nx", "Missing HTTP path delimiter"),  # method-only
        (b"GET /\r\nx", "Missing HTTP version delimiter"),  # no-version
        (b"POST / HTTP/1.1\r\nx: y", "Unsupported HTTP method"),  # bad-method
        (b"GET / HTTP/1.0\r\nx: y", "Unsupported HTTP version"),  # bad-version
    ],
)
def test_qemu_bad_requests(head: bytes, error: str) -> None:
    outcome = process_request(head)
    assert outcome.reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert outcome.status == 400
    assert outcome.error is not None
    assert error in outcome.error


@pytest.mark.parametrize(
    ("head", "status", "error"),
    [
        (request(greeting="GET /vnc HTTP/1.1"), 404, "Unexpected HTTP path"),
        (request(greeting="GET / HTTP/1.1 "), 400, "Unsupported HTTP version"),
        (b"GET / HTTP/1.1", 400, "Missing HTTP header delimiter"),
        (request([*GOOD_HEADERS, ("x", "y")])[:-1] + b"\r\nbroken", 400, "Malformed HTTP header"),
        (request([(f"x{i}", "y") for i in range(33)]), 400, "Too many HTTP headers"),
        (request(without("Sec-WebSocket-Version")), 400, "Missing websocket version header"),
        (request(without("Sec-WebSocket-Key")), 400, "Missing websocket key header"),
        (request(without("Host")), 400, "Missing websocket host header"),
        (request(without("Connection")), 400, "Missing websocket connection header"),
        (request(without("Upgrade")), 400, "Missing websocket upgrade header"),
        (
            request([*GOOD_HEADERS, ("Sec-WebSocket-Protocol", "chat")]),
            400,
            "No 'binary' protocol",
        ),
        (request(replaced("Sec-WebSocket-Version", "8")), 400, "Version '8' is not supported"),
        (request(replaced("Sec-WebSocket-Key", "short")), 400, "Key length 5"),
        (request(replaced("Connection", "keep-alive")), 400, "No connection upgrade"),
        (request(replaced("Upgrade", "h2c")), 400, "Incorrect upgrade method"),
    ],
)
def test_every_rule(head: bytes, status: int, error: str) -> None:
    outcome = process_request(head)
    assert outcome.status == status
    assert outcome.error is not None
    assert error in outcome.error


def test_order_first_failure_wins() -> None:
    # Bad path and bad version: the path is checked first (404), as in QEMU.
    assert process_request(request(greeting="GET /x HTTP/1.0")).status == 404
    # Missing key and bad version value: missing headers are checked first.
    outcome = process_request(request(replaced("Sec-WebSocket-Version", "8")[:-1]))
    assert outcome.error is not None
    assert "Missing websocket version header" in outcome.error


def test_header_parsing_details() -> None:
    headers = [
        ("HOST", "x"),
        ("upgrade", "WebSocket"),
        ("Connection", "keep-alive ,  upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Version", "8"),  # the first one wins
    ]
    assert process_request(request(headers)).ok
    assert process_request(request([(f"x{i}", "y") for i in range(27)] + GOOD_HEADERS)).ok


def test_reader_waits_then_completes_with_leftover() -> None:
    reader = RequestReader()
    data = request() + b"\r\n\r\n" + b"\x82\x80"
    assert reader.feed(data[:10]) is None
    assert reader.room == MAX_HANDSHAKE_BYTES - 10
    outcome = reader.feed(data[10:])
    assert outcome is not None
    assert outcome.ok
    assert outcome.leftover == b"\x82\x80"


def test_reader_terminator_split_across_feeds() -> None:
    reader = RequestReader()
    data = request() + b"\r\n\r\n"
    assert reader.feed(data[:-2]) is None
    outcome = reader.feed(data[-2:])
    assert outcome is not None
    assert outcome.ok


def test_reader_403_without_end_in_4096_bytes() -> None:
    reader = RequestReader()
    assert reader.feed(b"GET / HTTP/1.1\r\n" + b"x" * 4000) is None
    outcome = reader.feed(b"y" * 200)
    assert outcome is not None
    assert outcome.status == 403
    assert outcome.reply.startswith(b"HTTP/1.1 403 Request Entity Too Large\r\n")
    assert "4096" in str(outcome.error)
    assert "closed" in RequestReader.eof_error()


def test_reader_terminator_exactly_at_the_limit() -> None:
    head = request([*GOOD_HEADERS, ("x", "")])
    pad = MAX_HANDSHAKE_BYTES - len(head) - 4
    data = head + b"y" * pad + b"\r\n\r\n"
    assert len(data) == MAX_HANDSHAKE_BYTES
    outcome = RequestReader().feed(data)
    assert outcome is not None
    assert outcome.ok
    too_long = RequestReader().feed(head + b"y" * (pad + 1) + b"\r\n\r\n")
    assert too_long is not None
    assert too_long.status == 403


@pytest.mark.parametrize(
    ("first", "second", "code"),
    [
        (0x82, 0x85, None),  # masked binary
        (0x02, 0x85, None),  # fragmented binary
        (0x00, 0x85, None),  # fragmented continuation
        (0x80, 0x85, None),  # final continuation
        (0x89, 0xFD, None),  # ping with 125 bytes
        (0x81, 0x85, 1003),  # text
        (0x83, 0x85, 1003),  # reserved opcode
        (0x01, 0x85, 1008),  # fragmented text
        (0x09, 0x80, 1008),  # fragmented ping
        (0x82, 0x05, 1002),  # unmasked
        (0x89, 0xFE, 1002),  # ping with a 16-bit length
        (0x88, 0xFF, 1002),  # close with a 64-bit length
        (0x81, 0x05, 1003),  # unmasked text: the opcode is checked first (QEMU's order)
    ],
)
def test_frame_policy(first: int, second: int, code: int | None) -> None:
    verdict = check_frame_header(first, second)
    assert (verdict[0] if verdict else None) == code


# -- fuzz: every input ends in a 101 or a 4xx reply, never an exception -----------------

_STATUS_LINE = re.compile(rb"^HTTP/1\.1 (101|400|403|404) [A-Za-z ]+\r\n")

_header_line = st.one_of(
    st.sampled_from([f"{k}: {v}" for k, v in GOOD_HEADERS]),
    st.sampled_from(
        [
            "Sec-WebSocket-Protocol: binary",
            "Sec-WebSocket-Protocol: chat",
            "Connection: close",
            "Upgrade: h2c",
            "Sec-WebSocket-Version: 8",
            "nocolon",
            ": empty",
            "",
        ]
    ),
    st.text(st.characters(codec="latin-1"), max_size=40),
)
_structured = st.builds(
    lambda greeting, lines: "\r\n".join([greeting, *lines]).encode("latin-1"),
    st.one_of(
        st.sampled_from(["GET / HTTP/1.1", "GET /x HTTP/1.1", "POST / HTTP/1.1", "GET", ""]),
        st.text(st.characters(codec="latin-1"), max_size=30),
    ),
    st.lists(_header_line, max_size=40),
)


def _check(outcome_reply: bytes, status: int) -> None:
    match = _STATUS_LINE.match(outcome_reply)
    assert match is not None, outcome_reply[:80]
    assert int(match.group(1)) == status
    assert outcome_reply.endswith(b"\r\n\r\n")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_structured, st.binary(max_size=600)))
def test_fuzz_process_request(head: bytes) -> None:
    outcome = process_request(head)
    _check(outcome.reply, outcome.status)
    assert (outcome.error is None) == (outcome.status == 101)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_structured, st.binary(max_size=2000)), min_size=1, max_size=6))
def test_fuzz_reader_in_pieces(pieces: list[bytes]) -> None:
    reader = RequestReader()
    outcome = None
    for piece in [*pieces, b"\r\n\r\n"]:
        if not piece:
            continue
        outcome = reader.feed(piece)
        if outcome is not None:
            break
    if outcome is None:
        assert reader.buffered < MAX_HANDSHAKE_BYTES
        return
    _check(outcome.reply, outcome.status)


# -- the data-frame encoder against wsproto's (trioqio._websock_encode) ---------------------

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70001]
MASK = b"\x9e\x01\x7f\xc4"


def fixed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """wsproto draws client masking keys from os.urandom: make them MASK to compare bytes."""

    def urandom(n: int) -> bytes:
        return MASK[:n]

    monkeypatch.setattr(os, "urandom", urandom)


def joined(parts: list[bytes | bytearray | memoryview]) -> bytes:
    return b"".join(parts)


def decoded(data: bytes, *, client: bool) -> list[tuple[int, bytes | str, bool]]:
    """What a wsproto peer receiving ``data`` makes of it: (opcode, payload, message end)."""
    from wsproto.frame_protocol import FrameProtocol

    peer = FrameProtocol(client, [])
    peer.receive_bytes(data)
    return [
        (int(f.opcode), f.payload, f.message_finished)  # type: ignore[misc]  # data frames only
        for f in peer.received_frames()
    ]


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_encoder_matches_wsproto(
    monkeypatch: pytest.MonkeyPatch, client: bool, size: int, text: bool
) -> None:
    from wsproto.frame_protocol import FrameProtocol

    fixed_key(monkeypatch)
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    if text:
        payload = b"\xc3\xa9" * (size // 2) + b"a" * (size % 2)
    want = FrameProtocol(client, []).send_data(payload.decode() if text else payload)
    ours = joined(encode_frame(OP_TEXT if text else OP_BINARY, payload, client=client))
    assert ours == want
    assert len(ours) - size == (2 if size < 126 else 4 if size < 65536 else 10) + 4 * client
    expected: bytes | str = payload.decode() if text else payload
    assert decoded(ours, client=not client) == [(OP_TEXT if text else OP_BINARY, expected, True)]


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_encoder_fragments_match_wsproto(
    monkeypatch: pytest.MonkeyPatch, client: bool, text: bool
) -> None:
    from wsproto.frame_protocol import FrameProtocol

    fixed_key(monkeypatch)
    pieces = [b"first", b"", b"x" * 65536, b"last"]
    reference = FrameProtocol(client, [])
    want = b"".join(
        reference.send_data(p.decode() if text else p, fin=i == len(pieces) - 1)
        for i, p in enumerate(pieces)
    )
    first = OP_TEXT if text else OP_BINARY
    ours = b"".join(
        joined(
            encode_frame(
                first if i == 0 else OP_CONTINUATION, p, fin=i == len(pieces) - 1, client=client
            )
        )
        for i, p in enumerate(pieces)
    )
    assert ours == want
    frames = decoded(ours, client=not client)
    assert [f[2] for f in frames] == [False, False, False, True]
    whole = b"".join(pieces)
    got = [f[1] for f in frames]
    assert (b"".join(got) if not text else "".join(got)) == (  # type: ignore[arg-type]  # by text
        whole.decode() if text else whole
    )


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_encoder_control_frames_match_wsproto(
    monkeypatch: pytest.MonkeyPatch, client: bool
) -> None:
    from wsproto.frame_protocol import FrameProtocol

    fixed_key(monkeypatch)
    reference = FrameProtocol(client, [])
    assert joined(encode_frame(OP_PING, b"p" * 125, client=client)) == reference.ping(b"p" * 125)
    assert joined(encode_frame(OP_PONG, b"", client=client)) == reference.pong(b"")
    close = struct.pack("!H", 1000) + b"bye"
    assert joined(encode_frame(OP_CLOSE, close, client=client)) == reference.close(1000, "bye")


def test_encoder_inputs_and_errors() -> None:
    big = bytearray(b"\x01\x02" * 40000)
    parts = encode_frame(OP_BINARY, memoryview(big))
    assert parts[0] == b"\x82\x7f" + struct.pack("!Q", 80000)
    assert isinstance(parts[1], memoryview)
    assert parts[1].obj is big  # not copied
    parts = encode_frame(OP_BINARY, big, client=True, mask=MASK)
    assert big == b"\x01\x02" * 40000  # the caller's buffer is not masked in place
    assert unmask(bytearray(parts[1]), MASK) == big
    with pytest.raises(ValueError, match="at most 125"):
        frame_header(OP_PING, 126)
    with pytest.raises(ValueError, match="too long"):
        frame_header(OP_BINARY, 1 << 63)
    with pytest.raises(ValueError, match="4 bytes"):
        frame_header(OP_BINARY, 1, mask=b"abc")
    with pytest.raises(ValueError, match="only a client"):
        encode_frame(OP_BINARY, b"x", mask=MASK)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=3000),
    st.binary(min_size=4, max_size=4),
    st.lists(st.integers(min_value=0, max_value=3000), max_size=4),
)
def test_unmask_in_pieces_equals_whole(data: bytes, key: bytes, cuts: list[int]) -> None:
    from wsproto.frame_protocol import XorMaskerSimple

    want = XorMaskerSimple(key).process(bytearray(data))
    assert unmask(bytearray(data), key) == want
    got = bytearray()
    start = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        got += unmask(bytearray(data[start:cut]), key, start)
        start = cut
    assert got == want
