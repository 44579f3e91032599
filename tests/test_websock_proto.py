"""The sans-IO websocket handshake rules (QEMU io/channel-websock.c), tested on bytes."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trioqio._websock_proto import (
    MAX_HANDSHAKE_BYTES,
    RequestReader,
    accept_key,
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
