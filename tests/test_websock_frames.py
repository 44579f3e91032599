"""The sans-IO websocket framing (trioqio._websock_frames), tested on bytes alone.

Every rule of the decoder (RFC 6455 section 5 and QEMU's frame policy) on frames built by
hand; the decoder against wsproto's public encoder (``wsproto.connection.Connection``),
with the bytes cut anywhere; random garbage, which must end in a
:class:`trioqio.WebsockProtocolError` with the code a small independent oracle predicts,
never in another exception; and the encoder against the bytes wsproto sends.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong
from wsproto.frame_protocol import FrameProtocol, XorMaskerSimple

import trioqio
from trioqio import _websock_frames as frames
from trioqio._websock_frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    Data,
    Event,
    FrameDecoder,
    check_frame_header,
    close_payload,
    encode_frame,
    frame_header,
    unmask,
)

KEY = b"\x01\x02\x03\x04"


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask: bool = True,
    rsv: int = 0,
    length: bytes | None = None,
    key: bytes = KEY,
) -> bytes:
    """A client frame built by hand; ``length`` replaces the length field (bad encodings)."""
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    bit = 0x80 if mask else 0
    size = len(payload)
    if length is not None:
        header = bytes([first, bit | length[0]]) + length[1:]
    elif size < 126:
        header = bytes([first, bit | size])
    elif size < 65536:
        header = bytes([first, bit | 126]) + struct.pack("!H", size)
    else:
        header = bytes([first, bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return header + payload
    return header + key + bytes(unmask(bytearray(payload), key))


def decode(
    pieces: Iterable[bytes | bytearray | memoryview], *, limit: int = 1 << 62
) -> list[Event]:
    """Feed the pieces in order and collect every event."""
    decoder = FrameDecoder()
    events: list[Event] = []
    for piece in pieces:
        decoder.receive_data(piece)
        while (event := decoder.next_event(limit)) is not None:
            events.append(event)
    return events


def messages(events: Sequence[Event]) -> list[object]:
    """Data events joined into messages (bytes); control events kept as they are."""
    out: list[object] = []
    current = bytearray()
    for event in events:
        if isinstance(event, Data):
            current += event.payload
            if event.message_end:
                out.append(bytes(current))
                current = bytearray()
        else:
            out.append(event)
    assert not current, "payload after the last message end"
    return out


def refusal(wire: bytes) -> trioqio.WebsockProtocolError:
    with pytest.raises(trioqio.WebsockProtocolError) as info:
        decode([wire])
    return info.value


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def refused_code(pieces: Iterable[bytes]) -> int | None:
    """The close code the decoder refuses ``pieces`` with, or None if it does not."""
    try:
        events = decode(pieces)
    except trioqio.WebsockProtocolError as exc:
        return exc.code
    assert all(isinstance(e, (Data, frames.Ping, frames.Pong, Close)) for e in events)
    return None


# -- QEMU's policy on the first two bytes ------------------------------------------------


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


# -- every rule, one frame at a time -------------------------------------------------------

_16 = struct.pack("!H", 5)


@pytest.mark.parametrize(
    ("wire", "code", "words"),
    [
        pytest.param(frame(OP_TEXT, b"text"), 1003, "unsupported opcode 0x1", id="text"),
        *(
            pytest.param(frame(op, b"??"), 1003, f"unsupported opcode {op:#x}", id=f"op-{op:#x}")
            for op in (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)
        ),
        pytest.param(frame(OP_TEXT, b"te", fin=False), 1008, "fragmented", id="fragmented-text"),
        pytest.param(frame(OP_PING, b"p", fin=False), 1008, "fragmented", id="fragmented-ping"),
        pytest.param(frame(OP_CLOSE, b"", fin=False), 1008, "fragmented", id="fragmented-close"),
        pytest.param(frame(OP_BINARY, b"bare", mask=False), 1002, "masked", id="unmasked"),
        pytest.param(frame(OP_PING, b"p" * 126), 1002, "too large", id="ping-126"),
        pytest.param(frame(OP_PONG, b"p" * 70000), 1002, "too large", id="pong-64-bit"),
        *(
            pytest.param(frame(OP_BINARY, b"r", rsv=rsv), 1002, "reserved bit", id=f"rsv-{rsv}")
            for rsv in (1, 2, 4, 7)
        ),
        pytest.param(frame(OP_PING, b"", rsv=4), 1002, "reserved bit", id="rsv-on-ping"),
        pytest.param(
            frame(OP_CONTINUATION, b"orphan"), 1002, "without a message", id="orphan-continuation"
        ),
        pytest.param(
            frame(OP_CONTINUATION, b"", fin=False), 1002, "without a message", id="orphan-empty"
        ),
        pytest.param(
            frame(OP_BINARY, b"a", fin=False) + frame(OP_BINARY, b"b"),
            1002,
            "inside a fragmented",
            id="message-inside-message",
        ),
        pytest.param(
            frame(OP_BINARY, b"", fin=False) + frame(OP_PING) + frame(OP_BINARY, b""),
            1002,
            "inside a fragmented",
            id="message-inside-message-across-a-ping",
        ),
        pytest.param(
            frame(OP_BINARY, b"abcde", length=b"\x7e" + _16), 1002, "16 bits", id="long-16"
        ),
        pytest.param(
            frame(OP_BINARY, b"x" * 200, length=b"\x7f" + struct.pack("!Q", 200)),
            1002,
            "64 bits",
            id="long-64",
        ),
        pytest.param(
            frame(OP_BINARY, b"", length=b"\x7f" + struct.pack("!Q", 65535)),
            1002,
            "64 bits",
            id="long-64-just-below",
        ),
        pytest.param(
            frame(OP_BINARY, b"", length=b"\x7f" + struct.pack("!Q", 1 << 63)),
            1002,
            "top bit",
            id="msb",
        ),
        pytest.param(frame(OP_CLOSE, b"\x03"), 1002, "1-byte", id="close-1-byte"),
        pytest.param(
            frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007, "UTF-8", id="close-reason"
        ),
        pytest.param(
            frame(OP_CLOSE, struct.pack("!H", 1000) + "é".encode()[:1]),
            1007,
            "UTF-8",
            id="close-reason-cut",
        ),
        *(
            pytest.param(
                frame(OP_CLOSE, struct.pack("!H", code)), 1002, f"code {code}", id=f"close-{code}"
            )
            for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535)
        ),
    ],
)
def test_refusals(wire: bytes, code: int, words: str) -> None:
    error = refusal(wire)
    assert error.code == code
    assert words in str(error)
    assert isinstance(error, trioqio.WebsockProtocolError)


@pytest.mark.parametrize(
    "wire",
    [
        frame(OP_TEXT, b"text"),
        frame(OP_BINARY, b"bare", mask=False),
        frame(OP_BINARY, b"r" * 200, rsv=1),
        frame(OP_CONTINUATION, b"x" * 70000),
    ],
    ids=["text", "unmasked", "rsv", "orphan"],
)
def test_header_refusals_need_only_two_bytes(wire: bytes) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(wire[:1])
    assert decoder.next_event() is None
    decoder.receive_data(wire[1:2])
    with pytest.raises(trioqio.WebsockProtocolError):
        decoder.next_event()


def test_a_refusal_latches() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(frame(OP_TEXT, b"no"))
    with pytest.raises(trioqio.WebsockProtocolError) as first:
        decoder.next_event()
    decoder.receive_data(frame(OP_BINARY, b"fine"))  # ignored: the decoder failed
    with pytest.raises(trioqio.WebsockProtocolError) as again:
        decoder.next_event()
    assert again.value is first.value
    assert decoder.buffered == 0


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
)
def test_close_codes_accepted(code: int) -> None:
    payload = close_payload(code, "naïve")
    assert decode([frame(OP_CLOSE, payload)]) == [Close(code, "naïve", payload)]


def test_close_without_payload_and_after_close() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(frame(OP_BINARY, b"last") + frame(OP_CLOSE) + frame(OP_TEXT, b"x"))
    assert decoder.next_event() == Data(b"last", True)
    assert not decoder.closed
    assert decoder.next_event() == Close(None, "", b"")
    assert decoder.closed
    assert decoder.next_event() is None  # the text frame behind it is not decoded at all
    decoder.receive_data(b"\xff\xff garbage")
    assert decoder.next_event() is None
    assert decoder.buffered == 0


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70001])
def test_length_encodings(size: int) -> None:
    payload = os.urandom(size)
    wire = frame(OP_BINARY, payload)
    assert len(wire) - size == (6 if size < 126 else 8 if size < 65536 else 14)
    assert messages(decode([wire])) == [payload]
    assert messages(decode([bytes([b]) for b in wire[:20]] + [wire[20:]])) == [payload]


def test_control_frames_between_fragments() -> None:
    wire = (
        frame(OP_BINARY, b"frag", fin=False)
        + frame(OP_PING, b"mid")
        + frame(OP_CONTINUATION, b"", fin=False)  # empty: no event
        + frame(OP_PONG, b"ignored")
        + frame(OP_CONTINUATION, b"ment", fin=False)
        + frame(OP_CONTINUATION, b"ed")
        + frame(OP_BINARY, b"")  # an empty message: one empty Data that ends it
        + frame(OP_PING, b"p" * 125)
    )
    events = decode([wire])
    assert events == [
        Data(b"frag", False),
        frames.Ping(b"mid"),
        frames.Pong(b"ignored"),
        Data(b"ment", False),
        Data(b"ed", True),
        Data(b"", True),
        frames.Ping(b"p" * 125),
    ]


def test_in_message_follows_the_fin_bits() -> None:
    decoder = FrameDecoder()
    assert not decoder.in_message
    decoder.receive_data(frame(OP_BINARY, b"a", fin=False))
    decoder.next_event()
    assert decoder.in_message
    decoder.receive_data(frame(OP_PING))
    decoder.next_event()
    assert decoder.in_message
    decoder.receive_data(frame(OP_CONTINUATION, b"b"))
    decoder.next_event()
    assert not decoder.in_message


def test_payload_is_streamed_as_it_arrives() -> None:
    payload = os.urandom(300_000)
    wire = frame(OP_BINARY, payload, key=b"\x9e\x01\x7f\xc4")
    decoder = FrameDecoder()
    got = bytearray()
    ends = []
    for piece in split(wire, range(1, len(wire), 7001)):
        decoder.receive_data(piece)
        while (event := decoder.next_event()) is not None:
            assert isinstance(event, Data)
            got += event.payload
            ends.append(event.message_end)
        assert decoder.buffered < 14  # at most the start of a header is kept
    assert got == payload
    assert ends[-1]
    assert not any(ends[:-1])


def test_limit_caps_each_data_event() -> None:
    payload = os.urandom(10_000)
    decoder = FrameDecoder()
    decoder.receive_data(frame(OP_BINARY, payload) + frame(OP_BINARY, b"next"))
    sizes = []
    while (event := decoder.next_event(999)) is not None:
        assert isinstance(event, Data)
        sizes.append(len(event.payload))
    assert sizes == [999] * 10 + [10, 4]
    assert decoder.buffered == 0


@pytest.mark.parametrize("opcode", [OP_PING, OP_CLOSE])
def test_control_frame_waits_for_its_whole_payload(opcode: int) -> None:
    payload = close_payload(1000, "x" * 100) if opcode == OP_CLOSE else b"p" * 100
    wire = frame(opcode, payload)
    decoder = FrameDecoder()
    for index, byte in enumerate(wire):
        decoder.receive_data(bytes([byte]))
        event = decoder.next_event()
        if index < len(wire) - 1:
            assert event is None
            assert decoder.buffered == index + 1
    assert event is not None
    assert event.payload == payload


def test_receive_data_accepts_any_buffer() -> None:
    wire = frame(OP_BINARY, b"view")
    assert messages(decode([memoryview(bytearray(wire))])) == [b"view"]


# -- against wsproto's public encoder ----------------------------------------------------------

_SIZES = st.one_of(
    st.integers(0, 3000), st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000])
)
_control = st.one_of(
    st.builds(Ping, payload=st.binary(max_size=125)),
    st.builds(Pong, payload=st.binary(max_size=125)),
)
_message = st.tuples(
    st.lists(_SIZES, min_size=1, max_size=4),  # the fragments' sizes
    st.lists(_control, max_size=2),  # control frames after the first fragment
)
_close = st.one_of(
    st.none(),
    st.builds(
        CloseConnection,
        code=st.sampled_from([1000, 1001, 1003, 1008, 1011, 3000, 4999]),
        reason=st.text(max_size=30),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_message, max_size=5),
    _close,
    st.lists(st.integers(0, 300_000), max_size=12),
    st.sampled_from([1 << 62, 1, 4096]),
)
def test_fuzz_against_wsproto_encoder(
    plan: list[tuple[list[int], list[Ping | Pong]]],
    close: CloseConnection | None,
    cuts: list[int],
    limit: int,
) -> None:
    client = Connection(ConnectionType.CLIENT)  # random masking keys, as a real client
    wire = bytearray()
    want: list[object] = []
    controls: list[object] = []
    for sizes, between in plan:
        message = bytearray()
        for index, size in enumerate(sizes):
            data = os.urandom(size)
            message += data
            last = index == len(sizes) - 1
            wire += client.send(BytesMessage(data=data, message_finished=last))
            if index == 0:
                for control in between:
                    wire += client.send(control)
                    controls.append(
                        frames.Ping(control.payload)
                        if isinstance(control, Ping)
                        else frames.Pong(control.payload)
                    )
        want.append(bytes(message))
    if close is not None:
        wire += client.send(close)
        payload = close_payload(close.code, close.reason or "")
        controls.append(Close(close.code, close.reason or "", payload))
        wire += frame(OP_TEXT, b"after the close: never decoded")
    events = decode(split(bytes(wire), cuts), limit=limit)
    assert all(len(e.payload) <= limit for e in events if isinstance(e, Data))
    got = messages(events)
    assert [m for m in got if isinstance(m, bytes)] == want
    assert [m for m in got if not isinstance(m, bytes)] == controls


# -- garbage: a WebsockProtocolError with the predicted code, nothing else -------------------


def oracle(wire: bytes) -> int | None:
    """The close code the first frame of ``wire`` earns, if its header alone decides it.

    Written from RFC 6455 and QEMU's rules independently of the decoder: None when the
    first frame is acceptable (or too short to tell).
    """
    if len(wire) < 2:
        return None
    first, second = wire[0], wire[1]
    fin, rsv, opcode = first >> 7, (first >> 4) & 7, first & 0xF
    masked, short = second >> 7, second & 0x7F
    if not fin and opcode not in (0, 2):
        return 1008
    if opcode not in (0, 2, 8, 9, 10):
        return 1003
    if not masked:
        return 1002
    if opcode >= 8 and short > 125:
        return 1002
    if rsv or opcode == 0:  # reserved bits; a continuation cannot start a stream
        return 1002
    if short == 126 and len(wire) >= 4 and struct.unpack_from("!H", wire, 2)[0] < 126:
        return 1002
    if short == 127 and len(wire) >= 10:
        size = struct.unpack_from("!Q", wire, 2)[0]
        if size < 65536 or size >> 63:
            return 1002
    return None


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=4))
def test_fuzz_garbage_refused_with_the_right_code(garbage: bytes, cuts: list[int]) -> None:
    code = refused_code(split(garbage, cuts))
    expected = oracle(garbage)
    if expected is None:  # the first frame passes: a later one may still be refused
        assert code in (None, 1002, 1003, 1007, 1008)
    else:
        assert code == expected


@settings(max_examples=500, deadline=None)
@given(
    st.binary(min_size=1, max_size=200),
    st.integers(0, 13),
    st.integers(0, 255),
)
def test_fuzz_one_corrupt_header_byte(payload: bytes, position: int, value: int) -> None:
    # A valid binary frame with one header byte replaced: refused with the oracle's code,
    # or still valid (then it decodes to some payload without raising anything else).
    wire = bytearray(frame(OP_BINARY, payload))
    assume(position < len(wire) - len(payload))
    wire[position] = value
    code = refused_code([bytes(wire)])
    expected = oracle(bytes(wire))
    if expected is None:  # the bytes after a changed length may make any later frame
        assert code in (None, 1002, 1003, 1007, 1008)
    else:
        assert code == expected


# -- the encoder against the bytes wsproto sends -------------------------------------------

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70001]
MASK = b"\x9e\x01\x7f\xc4"


def fixed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """wsproto draws client masking keys from os.urandom: make them MASK to compare bytes."""

    def urandom(n: int) -> bytes:
        return MASK[:n]

    monkeypatch.setattr(os, "urandom", urandom)


def joined(parts: list[bytes | bytearray | memoryview]) -> bytes:
    return b"".join(parts)


def wsproto_decoded(data: bytes, *, client: bool) -> list[tuple[int, bytes | str, bool]]:
    """What a wsproto peer receiving ``data`` makes of it: (opcode, payload, message end)."""
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
    fixed_key(monkeypatch)
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    if text:
        payload = b"\xc3\xa9" * (size // 2) + b"a" * (size % 2)
    want = FrameProtocol(client, []).send_data(payload.decode() if text else payload)
    ours = joined(encode_frame(OP_TEXT if text else OP_BINARY, payload, client=client))
    assert ours == want
    assert len(ours) - size == (2 if size < 126 else 4 if size < 65536 else 10) + 4 * client
    expected: bytes | str = payload.decode() if text else payload
    assert wsproto_decoded(ours, client=not client) == [
        (OP_TEXT if text else OP_BINARY, expected, True)
    ]
    if client and not text:  # and our decoder reads our client frames back
        assert messages(decode([ours])) == [payload]


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_encoder_fragments_match_wsproto(
    monkeypatch: pytest.MonkeyPatch, client: bool, text: bool
) -> None:
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
    decoded = wsproto_decoded(ours, client=not client)
    assert [f[2] for f in decoded] == [False, False, False, True]
    whole = b"".join(pieces)
    got = [f[1] for f in decoded]
    assert (b"".join(got) if not text else "".join(got)) == (  # type: ignore[arg-type]  # by text
        whole.decode() if text else whole
    )


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_encoder_control_frames_match_wsproto(
    monkeypatch: pytest.MonkeyPatch, client: bool
) -> None:
    fixed_key(monkeypatch)
    reference = FrameProtocol(client, [])
    assert joined(encode_frame(OP_PING, b"p" * 125, client=client)) == reference.ping(b"p" * 125)
    assert joined(encode_frame(OP_PONG, b"", client=client)) == reference.pong(b"")
    close = close_payload(1000, "bye")
    assert joined(encode_frame(OP_CLOSE, close, client=client)) == reference.close(1000, "bye")
    long_reason = "é" * 100  # 200 bytes: cut to fit, at a character boundary
    assert joined(encode_frame(OP_CLOSE, close_payload(1001, long_reason), client=client)) == (
        reference.close(1001, long_reason)
    )


def test_close_payload() -> None:
    assert close_payload(1000) == b"\x03\xe8"
    assert close_payload(4000, "x" * 200) == b"\x0f\xa0" + b"x" * 123
    cut = close_payload(1000, "ab" + "é" * 100)
    assert len(cut) == 124  # 2 + 'ab' + 60 two-byte characters: a 61st would not fit
    assert cut[2:].decode() == "ab" + "é" * 60
    assert len(close_payload(1000, "a" + "é" * 100)) == 125  # 61 fit exactly


def test_encoder_inputs_and_errors() -> None:
    big = bytearray(b"\x01\x02" * 40000)
    parts = encode_frame(OP_BINARY, memoryview(big))
    assert parts[0] == b"\x82\x7f" + struct.pack("!Q", 80000)
    assert isinstance(parts[1], memoryview)
    assert parts[1].obj is big  # not copied
    parts = encode_frame(OP_BINARY, big, client=True, mask=MASK)
    assert big == b"\x01\x02" * 40000  # the caller's buffer is not masked in place
    assert unmask(bytearray(parts[1]), MASK) == big
    assert frame_header(OP_BINARY, 4096) == b"\x82\x7e\x10\x00"
    assert frame_header(OP_BINARY, 5, fin=False, mask=MASK) == b"\x02\x85" + MASK
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
    want = XorMaskerSimple(key).process(bytearray(data))
    assert unmask(bytearray(data), key) == want
    got = bytearray()
    start = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        got += unmask(bytearray(data[start:cut]), key, start)
        start = cut
    assert got == want
    # The decoder unmasks with the same key across arbitrary cuts of one frame.
    wire = frame(OP_BINARY, data, key=key)
    assert messages(decode(split(wire, [c + 6 for c in cuts]))) == [data]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x03", "close frame with a 1-byte payload"),
        (struct.pack("!H", 1000) + b"\xff", "close frame reason is not UTF-8"),
        (struct.pack("!H", 2000), "close frame with the invalid code 2000"),
    ],
    ids=["1-byte", "reason", "code"],
)
def test_close_refusal_messages_are_exact(payload: bytes, message: str) -> None:
    # The whole message, not words of it: a log reader matches these texts.
    assert str(refusal(frame(OP_CLOSE, payload))) == message


def test_client_frame_without_a_key_gets_a_random_one() -> None:
    # RFC 6455 5.3: a client frame with no key given is masked with 4 fresh random bytes;
    # the decoder unmasks it back to the payload.
    header, body = encode_frame(OP_BINARY, b"payload", client=True)
    assert len(header) == 2 + 4
    assert messages(decode([bytes(header) + bytes(body)])) == [b"payload"]


@pytest.mark.parametrize("size", [123, 124, 127])
def test_close_payload_cuts_a_reason_just_over_the_limit(size: int) -> None:
    # 2 bytes of code + at most 123 of reason: a control frame's 125-byte limit.
    assert close_payload(1000, "r" * size) == struct.pack("!H", 1000) + b"r" * 123
