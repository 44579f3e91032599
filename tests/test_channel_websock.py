"""WebsockChannel: QEMU's tests/unit/test-io-channel-websock.c, frame rules, interoperability."""

from __future__ import annotations

import array
import hashlib
import os
import struct
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Request,
)
from wsproto.frame_protocol import FrameDecoder, FrameProtocol, Opcode

import trioqio
from trioqio.abc import Channel

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GOOD = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\nSec-WebSocket-Version: 13\r\n"
)


async def socket_pair() -> tuple[trioqio.SocketChannel, trioqio.SocketChannel]:
    a, b = trio.socket.socketpair()
    return trioqio.SocketChannel(a), trioqio.SocketChannel(b)


class StallChannel(Channel):
    """QEMU's QIOChannelStall: the first read and/or write waits until released.

    A fake is needed here: a real socket cannot be made to block a read that has data.
    """

    def __init__(self, master: Channel, *, read: bool, write: bool) -> None:
        self.master = master
        self.read_gate = trio.Event() if read else None
        self.write_gate = trio.Event() if write else None
        self.stalled: list[str] = []

    async def send_all(self, data: Any) -> None:
        if self.write_gate is not None and not self.write_gate.is_set():
            self.stalled.append("write")
            await self.write_gate.wait()
        await self.master.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.master.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.read_gate is not None and not self.read_gate.is_set():
            self.stalled.append("read")
            await self.read_gate.wait()
        return bytes(await self.master.receive_some(max_bytes))

    async def send_eof(self) -> None:
        await self.master.send_eof()

    async def aclose(self) -> None:
        await self.master.aclose()


async def read_reply(client: trioqio.SocketChannel) -> bytes:
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = await client.receive_some(1023)
        assert chunk, f"EOF before the end of the reply: {reply!r}"
        reply += chunk
    return reply


async def handshake_with(
    request: bytes, **kwargs: Any
) -> tuple[trioqio.HandshakeError | None, bytes, trioqio.WebsockChannel, trioqio.SocketChannel]:
    client, server_end = await socket_pair()
    ws = trioqio.WebsockChannel.server(server_end, **kwargs)
    error: list[trioqio.HandshakeError] = []

    async def run() -> None:
        try:
            await ws.handshake()
        except trioqio.HandshakeError as exc:
            error.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await client.send_all(request)
            reply = await read_reply(client)
    return (error[0] if error else None), reply, ws, client


@pytest.fixture
async def ws_pair() -> AsyncIterator[tuple[trioqio.WebsockChannel, trioqio.SocketChannel]]:
    error, reply, ws, client = await handshake_with(GOOD + b"\r\n")
    assert error is None, error
    assert reply.startswith(b"HTTP/1.1 101 ")
    yield ws, client
    await client.aclose()
    await ws.aclose()


# -- QEMU's seven tests -------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"stats\r\nx\r\n\r\n", id="no-space"),
        pytest.param(b"GET\r\nx\r\n\r\n", id="method-only"),
        pytest.param(b"GET /\r\nx\r\n\r\n", id="no-version"),
        pytest.param(b"POST / HTTP/1.1\r\nx: y\r\n\r\n", id="bad-method"),
        pytest.param(b"GET / HTTP/1.0\r\nx: y\r\n\r\n", id="bad-version"),
    ],
)
async def test_qemu_bad_request(request_bytes: bytes) -> None:
    error, reply, ws, client = await handshake_with(request_bytes)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert isinstance(error, trioqio.HandshakeError)
    assert error.status == 400
    with pytest.raises(trio.BrokenResourceError):
        await ws.receive_some()
    await client.aclose()
    await ws.aclose()


@pytest.mark.parametrize("stall", ["read", "write"])
async def test_qemu_stalled(stall: str) -> None:
    client, server_end = await socket_pair()
    stalling = StallChannel(server_end, read=stall == "read", write=stall == "write")
    ws = trioqio.WebsockChannel.server(stalling)
    errors: list[trioqio.HandshakeError] = []

    async def run() -> None:
        with pytest.raises(trioqio.HandshakeError) as info:
            await ws.handshake()
        errors.append(info.value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await client.send_all(b"stats\r\nx\r\n\r\n")
        await trio.testing.wait_all_tasks_blocked()
        assert stalling.stalled == [stall]  # the handshake is waiting, not failing
        assert not errors
        gate = stalling.read_gate if stalling.read_gate is not None else stalling.write_gate
        assert gate is not None
        gate.set()
        reply = await read_reply(client)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert errors[0].status == 400
    await client.aclose()
    await ws.aclose()


# -- the handshake beyond QEMU's tests ------------------------------------------------------


async def test_success_and_protocol_echo() -> None:
    error, reply, ws, client = await handshake_with(GOOD + b"\r\n")
    assert error is None
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in reply
    assert b"Sec-WebSocket-Protocol" not in reply
    assert not ws.protocol_requested
    await client.aclose()
    await ws.aclose()
    error, reply, ws, client = await handshake_with(
        GOOD + b"Sec-WebSocket-Protocol: binary\r\n\r\n"
    )
    assert error is None
    assert b"Sec-WebSocket-Protocol: binary\r\n" in reply
    assert ws.protocol_requested
    await client.aclose()
    await ws.aclose()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (GOOD.replace(b"GET / ", b"GET /other ") + b"\r\n", 404),
        (GOOD.replace(b"Version: 13", b"Version: 8") + b"\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"x" * 5000, 403),
    ],
    ids=["404", "400", "403"],
)
async def test_error_statuses(request_bytes: bytes, status: int) -> None:
    error, reply, ws, client = await handshake_with(request_bytes)
    assert reply.startswith(f"HTTP/1.1 {status} ".encode())
    assert isinstance(error, trioqio.HandshakeError)
    assert error.status == status
    await client.aclose()
    await ws.aclose()


async def test_client_closing_before_end_of_request_gets_no_reply() -> None:
    client, server_end = await socket_pair()
    ws = trioqio.WebsockChannel.server(server_end)
    await client.send_all(b"GET / HTTP/1.1\r\n")
    await client.send_eof()
    with pytest.raises(trioqio.HandshakeError, match="before connection closed") as info:
        await ws.handshake()
    assert info.value.status is None
    await ws.aclose()
    assert await client.receive_some(100) == b""  # no reply, only the close
    await client.aclose()


async def test_slowloris_times_out(autojump_clock: trio.testing.MockClock) -> None:
    client, server_end = await socket_pair()
    ws = trioqio.WebsockChannel.server(server_end, handshake_timeout=5)
    await client.send_all(GOOD[:20])
    with pytest.raises(trioqio.HandshakeError, match="within 5") as info:
        await ws.handshake()
    assert info.value.status is None
    await client.aclose()
    await ws.aclose()


async def test_handshake_task_once_in_trio_thread() -> None:
    client, server_end = await socket_pair()
    ws = trioqio.WebsockChannel.server(server_end)
    seen: list[tuple[int, object]] = []

    def done(task: trioqio.Task[trioqio.WebsockChannel]) -> None:
        task.propagate_error()
        seen.append((threading.get_ident(), task.result))

    async with trio.open_nursery() as nursery:
        task = ws.handshake_task(nursery, done)
        await client.send_all(GOOD + b"\r\n")
    assert seen == [(threading.get_ident(), ws)]
    assert task.name == "websock-handshake"
    assert (await read_reply(client)).startswith(b"HTTP/1.1 101")
    await client.aclose()
    await ws.aclose()


async def test_handshake_task_failure_reports_status() -> None:
    client, server_end = await socket_pair()
    ws = trioqio.WebsockChannel.server(server_end)
    async with trio.open_nursery() as nursery:
        task = ws.handshake_task(nursery)
        await client.send_all(b"GET /nope HTTP/1.1\r\nx: y\r\n\r\n")
    assert isinstance(task.error, trioqio.HandshakeError)
    assert task.error.status == 404
    await client.aclose()
    await ws.aclose()


# -- frames -------------------------------------------------------------------------------


def masked(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """A client frame built by hand (wsproto refuses to build the invalid ones)."""
    first = (0x80 if fin else 0) | opcode
    key = b"\x01\x02\x03\x04"
    n = len(payload)
    if n < 126:
        header = bytes([first, (0x80 if mask else 0) | n])
    elif n < 65536:
        header = bytes([first, (0x80 if mask else 0) | 126]) + struct.pack("!H", n)
    else:
        header = bytes([first, (0x80 if mask else 0) | 127]) + struct.pack("!Q", n)
    if not mask:
        return header + payload
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + body


async def read_frames(client: trioqio.SocketChannel, count: int) -> list[tuple[Opcode, bytes]]:
    decoder = FrameDecoder(client=True, extensions=[])
    frames: list[tuple[Opcode, bytes]] = []
    partial = b""
    opcode: Opcode | None = None  # a long frame arrives in chunks; the first has its opcode
    while len(frames) < count:
        data = await client.receive_some(65536)
        assert data, "EOF before the expected frames"
        decoder.receive_bytes(data)
        while (frame := decoder.process_buffer()) is not None:
            partial += bytes(frame.payload)  # type: ignore[arg-type]  # FrameDecoder: bytes
            opcode = frame.opcode if opcode is None else opcode
            if frame.frame_finished:
                frames.append((opcode, partial))
                partial, opcode = b"", None
    return frames


async def test_each_write_is_one_unmasked_final_binary_frame(
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel],
) -> None:
    ws, client = ws_pair
    await ws.send_all(b"hello")
    assert await client.receive_exactly(7) == b"\x82\x05hello"
    await ws.writev([b"ab", b"", b"cd"])
    assert await client.receive_exactly(6) == b"\x82\x04abcd"
    await ws.send_all(b"x" * 70000)
    assert await client.receive_exactly(10) == b"\x82\x7f" + struct.pack("!Q", 70000)
    assert await client.receive_exactly(70000) == b"x" * 70000
    await ws.send_all(b"")  # nothing on the wire
    await ws.send_all(b"z")
    assert await client.receive_exactly(3) == b"\x82\x01z"


@pytest.mark.parametrize("size", [10, 16 * 1024, 300_000])  # joined, or a vectored write
async def test_writev_pieces_make_one_frame_a_wsproto_client_decodes(
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel], size: int
) -> None:
    ws, client = ws_pair
    pieces: list[bytes | bytearray | memoryview] = [
        b"a" * (size // 2),
        bytearray(b"b" * 3),
        memoryview(b"c" * (size - size // 2)),
    ]
    words = array.array("H", [0x0102, 0x0304])  # not a byte format: its raw bytes go
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.writev, [*pieces, words])
        frames = await read_frames(client, 1)
    assert frames == [(Opcode.BINARY, b"".join(pieces) + words.tobytes())]


async def test_client_binary_frames_and_fragments(
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel],
) -> None:
    ws, client = ws_pair
    await client.send_all(masked(Opcode.BINARY, b"one"))
    assert await ws.receive_some() == b"one"
    await client.send_all(
        masked(Opcode.BINARY, b"frag", fin=False)
        + masked(Opcode.PING, b"mid")
        + masked(Opcode.CONTINUATION, b"ment", fin=False)
        + masked(Opcode.CONTINUATION, b"ed")
        + masked(Opcode.BINARY, b"")
        + masked(Opcode.PONG, b"ignored")
        + masked(Opcode.BINARY, b"!")
    )
    assert await ws.receive_exactly(11) == b"fragmented!"
    assert await read_frames(client, 1) == [(Opcode.PONG, b"mid")]


async def test_ping_gets_pong(
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel],
) -> None:
    ws, client = ws_pair
    await client.send_all(masked(Opcode.PING, b"are you there") + masked(Opcode.BINARY, b"d"))
    assert await ws.receive_some() == b"d"
    assert await read_frames(client, 1) == [(Opcode.PONG, b"are you there")]


@pytest.mark.parametrize("payload", [struct.pack("!H", 1001) + b"going", b""])
async def test_peer_close_is_eof_we_send_on_then_echo_it(
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel], payload: bytes
) -> None:
    ws, client = ws_pair
    # Data and the close in one batch: the data is read, the close ends reading only.
    await client.send_all(masked(Opcode.BINARY, b"last") + masked(Opcode.CLOSE, payload))
    assert await ws.receive_some() == b"last"
    assert await ws.receive_some() == b""
    assert await ws.receive_some() == b""
    await ws.send_all(b"echo of last")  # still allowed: RFC 6455 5.5.1
    assert await read_frames(client, 1) == [(Opcode.BINARY, b"echo of last")]
    await ws.send_eof()
    expected = payload or struct.pack("!H", 1000) + b"peer requested close"
    assert await read_frames(client, 1) == [(Opcode.CLOSE, expected)]
    assert await client.receive_some(10) == b""  # the master was shut down for writing
    with pytest.raises(trio.ClosedResourceError):
        await ws.send_all(b"late")


async def test_aclose_answers_a_peer_close(
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel],
) -> None:
    ws, client = ws_pair
    await client.send_all(masked(Opcode.CLOSE, struct.pack("!H", 1001)))
    assert await ws.receive_some() == b""
    await ws.aclose()
    assert await read_frames(client, 1) == [(Opcode.CLOSE, struct.pack("!H", 1001))]
    assert await client.receive_some(10) == b""


async def test_aclose_sends_close_and_lingers_until_the_client_closes(
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel],
) -> None:
    ws, client = ws_pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.aclose)
        assert await read_frames(client, 1) == [(Opcode.CLOSE, struct.pack("!H", 1000))]
        await client.send_all(b"x" * 100_000)  # unread bytes: a reset without lingering
        assert await client.receive_some(10) == b""  # our side shut down writing
        await client.send_eof()
    await client.aclose()


async def test_lingering_is_bounded(
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import trioqio._channel_websock as module

    monkeypatch.setattr(module, "LINGER_SECONDS", 0.2)
    ws, client = ws_pair
    with trio.fail_after(5):
        await ws.aclose()  # the client never closes: aclose gives up after the linger
    assert await read_frames(client, 1) == [(Opcode.CLOSE, struct.pack("!H", 1000))]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(masked(Opcode.TEXT, b"text"), 1003, id="text"),
        pytest.param(masked(Opcode.BINARY, b"bare", mask=False), 1002, id="unmasked"),
        pytest.param(masked(Opcode.PING, b"p" * 126), 1002, id="oversize-control"),
        pytest.param(masked(Opcode.TEXT, b"te", fin=False), 1008, id="fragmented-text"),
        pytest.param(masked(0x3, b"??"), 1003, id="reserved-opcode"),
        pytest.param(masked(Opcode.CONTINUATION, b"orphan"), 1002, id="orphan-continuation"),
        pytest.param(
            masked(Opcode.BINARY, b"a", fin=False) + masked(Opcode.BINARY, b"b"),
            1002,
            id="message-inside-message",
        ),
        pytest.param(bytes([0xC2, 0x80]) + b"\0\0\0\0", 1002, id="rsv-bit"),
        # Lengths in a longer encoding than needed, and a 64-bit length with its top bit.
        pytest.param(b"\x82\xfe\x00\x05" + b"\0" * 9, 1002, id="long-16-bit-length"),
        pytest.param(b"\x82\xff" + struct.pack("!Q", 200) + b"\0" * 204, 1002, id="long-64"),
        pytest.param(b"\x82\xff" + struct.pack("!Q", 1 << 63) + b"\0" * 8, 1002, id="msb"),
        pytest.param(
            masked(Opcode.BINARY, b"", fin=False) + masked(Opcode.BINARY, b""),
            1002,
            id="empty-message-inside-message",
        ),
        # The close frame's payload (RFC 6455 7.4).
        pytest.param(masked(Opcode.CLOSE, b"\x03"), 1002, id="close-1-byte"),
        pytest.param(masked(Opcode.CLOSE, struct.pack("!H", 1005)), 1002, id="close-1005"),
        pytest.param(masked(Opcode.CLOSE, struct.pack("!H", 999)), 1002, id="close-999"),
        pytest.param(masked(Opcode.CLOSE, b"\x03\xe8\xff"), 1007, id="close-reason-not-utf8"),
    ],
)
async def test_refused_frames_get_qemu_close_codes(
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel], frame: bytes, code: int
) -> None:
    ws, client = ws_pair
    await client.send_all(frame)

    async def read_until_error() -> None:
        while True:
            await ws.receive_some()

    with pytest.raises(trioqio.WebsockProtocolError) as info:
        await read_until_error()
    assert info.value.code == code
    assert isinstance(info.value, trio.BrokenResourceError)
    [(opcode, payload)] = await read_frames(client, 1)
    assert opcode == Opcode.CLOSE
    assert struct.unpack("!H", payload[:2])[0] == code
    with pytest.raises(trio.BrokenResourceError):
        await ws.receive_some()


async def stalled_pair() -> tuple[trioqio.WebsockChannel, trioqio.SocketChannel, StallChannel]:
    """A handshaken channel whose master's writes can be stalled (set ``write_gate``)."""
    client, server_end = await socket_pair()
    stalling = StallChannel(server_end, read=False, write=False)
    ws = trioqio.WebsockChannel.server(stalling)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.handshake)
        await client.send_all(GOOD + b"\r\n")
        assert (await read_reply(client)).startswith(b"HTTP/1.1 101 ")
    return ws, client, stalling


async def test_pong_due_during_a_send_follows_that_frame() -> None:
    ws, client, stalling = await stalled_pair()
    stalling.write_gate = trio.Event()
    async with client, ws, trio.open_nursery() as nursery:
        nursery.start_soon(ws.send_all, b"data")
        await trio.testing.wait_all_tasks_blocked()
        assert stalling.stalled == ["write"]  # the sender holds the send lock, mid-frame
        await client.send_all(
            masked(Opcode.PING, b"old") + masked(Opcode.PING, b"new") + masked(Opcode.BINARY, b"x")
        )
        assert await ws.receive_some() == b"x"  # did not wait for the sender
        stalling.write_gate.set()
        # The frame first, then the pong for the newest ping only (QEMU: one pending pong).
        assert await read_frames(client, 2) == [(Opcode.BINARY, b"data"), (Opcode.PONG, b"new")]


async def test_cancelled_receive_keeps_the_payload_it_decoded() -> None:
    ws, client, stalling = await stalled_pair()
    stalling.write_gate = trio.Event()
    async with client, ws:
        await client.send_all(
            masked(Opcode.BINARY, b"ke", fin=False)
            + masked(Opcode.CONTINUATION, b"ep going")
            + masked(Opcode.PING, b"p")
            + masked(Opcode.BINARY, b"!")
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            assert stalling.stalled == ["write"]  # stuck answering the ping, payload decoded
            nursery.cancel_scope.cancel()
        stalling.write_gate.set()
        # What the cancelled call decoded comes first, in smaller reads than it asked for.
        assert await ws.receive_some(3) == b"kee"  # across the two decoded chunks
        assert await ws.receive_some(2) == b"p "  # from the rest of the second
        assert await ws.receive_some() == b"going!"  # and what was still undecoded


async def _refuse_text(ws: trioqio.WebsockChannel, client: trioqio.SocketChannel) -> None:
    await client.send_all(masked(Opcode.TEXT, b"no"))
    with pytest.raises(trioqio.WebsockProtocolError):
        await ws.receive_some()


async def _send_eof(ws: trioqio.WebsockChannel, client: trioqio.SocketChannel) -> None:
    await ws.send_eof()


async def _client_closes(ws: trioqio.WebsockChannel, client: trioqio.SocketChannel) -> None:
    await client.send_all(masked(Opcode.CLOSE, struct.pack("!H", 1000)))
    assert await ws.receive_some() == b""


async def _client_shuts_down_tcp(ws: trioqio.WebsockChannel, client: trioqio.SocketChannel) -> None:
    await client.send_eof()  # no close frame: the master's end of file
    assert await ws.receive_some() == b""


async def _nothing(ws: trioqio.WebsockChannel, client: trioqio.SocketChannel) -> None:
    pass


@pytest.mark.parametrize(
    ("before", "lingers"),
    [
        pytest.param(_nothing, True, id="open: our close goes out, then we linger"),
        pytest.param(_send_eof, True, id="close sent"),
        pytest.param(_refuse_text, True, id="refused"),
        pytest.param(_client_closes, False, id="close received: answered, nothing to wait for"),
        pytest.param(_client_shuts_down_tcp, False, id="master at EOF"),
    ],
)
async def test_aclose_lingers_only_while_the_client_may_still_send(
    autojump_clock: trio.testing.MockClock,
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel],
    before: Any,
    lingers: bool,
) -> None:
    import trioqio._channel_websock as module

    ws, client = ws_pair
    await before(ws, client)
    start = trio.current_time()
    await ws.aclose()  # the client never closes its socket during this
    waited = trio.current_time() - start
    assert waited == (pytest.approx(module.LINGER_SECONDS) if lingers else 0)
    assert ws.handshake_done  # a fact about the past: true after a refusal and a close


async def test_aclose_does_not_linger_after_a_handshake_without_reply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server_end = await socket_pair()
    ws = trioqio.WebsockChannel.server(server_end, handshake_timeout=5)
    await client.send_all(GOOD[:20])
    with pytest.raises(trioqio.HandshakeError, match="within 5"):
        await ws.handshake()
    with pytest.raises(trio.BrokenResourceError, match="within 5"):
        await ws.send_all(b"x")
    start = trio.current_time()
    await ws.aclose()
    assert trio.current_time() == start  # no reply went out: no one to linger for
    assert not ws.handshake_done
    await client.aclose()


async def test_a_broken_master_breaks_both_directions(
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel],
) -> None:
    ws, client = ws_pair
    await client.aclose()

    async def send_until_it_fails() -> None:
        for _ in range(100):  # the first sends may still fit in the socket buffer
            await ws.send_all(b"x" * 65536)

    with pytest.raises(trio.BrokenResourceError):
        await send_until_it_fails()
    with pytest.raises(trio.BrokenResourceError, match="is broken"):
        await ws.receive_some()
    with pytest.raises(trio.BrokenResourceError, match="is broken"):
        await ws.send_eof()


async def test_buffering_is_bounded(
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel],
) -> None:
    ws, client = ws_pair
    size = 4 * 1024 * 1024
    payload = os.urandom(size)
    frame = FrameProtocol(client=True, extensions=[]).send_data(payload)
    high_water = 0
    received = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, frame)
        while received < size:
            received += len(await ws.receive_some(1000))
            held = ws._pending_size + ws._decoder.buffered
            high_water = max(high_water, held)
    assert received == size
    assert high_water <= 2 * 256 * 1024 + 14


async def test_send_eof_sends_close_and_reads_on(
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel],
) -> None:
    ws, client = ws_pair
    await ws.send_eof()
    await ws.send_eof()
    assert await read_frames(client, 1) == [(Opcode.CLOSE, struct.pack("!H", 1000))]
    with pytest.raises(trio.ClosedResourceError):
        await ws.send_all(b"x")
    await client.send_all(masked(Opcode.BINARY, b"still here") + masked(Opcode.CLOSE, b""))
    assert await ws.receive_exactly(10) == b"still here"
    assert await ws.receive_some() == b""


async def test_features_and_forwarding(
    ws_pair: tuple[trioqio.WebsockChannel, trioqio.SocketChannel],
) -> None:
    ws, client = ws_pair
    assert ws.features == trioqio.ChannelFeature.SHUTDOWN
    with pytest.raises(trioqio.UnsupportedFeature):
        await ws.peek(1)
    ws.set_delay(False)
    ws.set_cork(False)
    await ws.shutdown(trioqio.Shutdown.WRITE)
    assert await client.receive_some(10) == b""
    with pytest.raises(ValueError, match="max_bytes"):
        await ws.receive_some(0)


def test_constructor_checks() -> None:
    a, b = trio.socket.socketpair()
    with a, b:
        with pytest.raises(ValueError, match="handshake_timeout"):
            trioqio.WebsockChannel.server(trioqio.SocketChannel(b), handshake_timeout=-1)
        with pytest.raises(TypeError, match="master must be"):
            trioqio.WebsockChannel.server(object())  # type: ignore[arg-type]  # under test


# -- interoperability: real third-party clients, 10 MiB each way ----------------------------

TOTAL = 10 * 1024 * 1024
MESSAGE = 1024 * 1024


async def echo_server(
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept one client on 127.0.0.1, handshake, echo every byte until the client closes."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    try:
        task_status.started(listener.socket.getsockname()[1])
        sock, _ = await listener.socket.accept()
    finally:
        await listener.aclose()
    async with trioqio.WebsockChannel.server(trioqio.SocketChannel(sock)) as ws:
        await ws.handshake()
        while data := await ws.receive_some():
            await ws.send_all(data)


def blob() -> bytes:
    return hashlib.shake_256(b"trioqio").digest(TOTAL)


async def test_interop_trio_websocket_client() -> None:
    data = blob()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(echo_server)
        url = f"ws://127.0.0.1:{port}/"
        async with trio_websocket.open_websocket_url(
            url, subprotocols=["binary"], max_message_size=TOTAL
        ) as conn:
            assert conn.subprotocol == "binary"
            received = bytearray()

            async def sender() -> None:
                for start in range(0, TOTAL, MESSAGE):
                    await conn.send_message(data[start : start + MESSAGE])

            nursery.start_soon(sender)
            while len(received) < TOTAL:
                message = await conn.get_message()
                assert isinstance(message, bytes)
                received += message
            assert received == data


async def test_interop_wsproto_client_over_raw_socket() -> None:
    data = blob()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(echo_server)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            conn = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(conn.send(Request(host="127.0.0.1", target="/")))
            received = bytearray()
            accepted = False
            sent = False
            closed = False
            while not closed:
                chunk = await stream.receive_some(262144)
                assert chunk, "server closed before the close handshake"
                conn.receive_data(chunk)
                for event in conn.events():
                    if isinstance(event, AcceptConnection):
                        accepted = True
                    elif isinstance(event, BytesMessage):
                        received += event.data
                    elif isinstance(event, Message):
                        pytest.fail(f"unexpected message {event!r}")
                    elif isinstance(event, CloseConnection):
                        closed = True
                if accepted and not sent:
                    sent = True

                    async def send_all_messages() -> None:
                        for start in range(0, TOTAL, MESSAGE):
                            await stream.send_all(
                                conn.send(BytesMessage(data=data[start : start + MESSAGE]))
                            )

                    nursery.start_soon(send_all_messages)
                if len(received) == TOTAL and conn.state.name == "OPEN":
                    await stream.send_all(conn.send(CloseConnection(code=1000)))
            assert received == data


# -- fuzz at the socket level: 101 or 4xx, never an escape, never a hang ------------------

_requests = st.one_of(
    st.binary(min_size=1, max_size=300).map(lambda b: b + b"\r\n\r\n"),
    st.sampled_from([GOOD + b"\r\n", GOOD + b"Sec-WebSocket-Protocol: x\r\n\r\n"]),
    st.binary(min_size=4097, max_size=4500).filter(lambda b: b"\r\n\r\n" not in b[:4096]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_requests)
async def test_fuzz_handshake_over_sockets(request_bytes: bytes) -> None:
    client, server_end = await socket_pair()
    ws = trioqio.WebsockChannel.server(server_end, handshake_timeout=5)
    statuses: list[int | None] = []

    def done(task: trioqio.Task[trioqio.WebsockChannel]) -> None:
        error = task.error
        statuses.append(
            101
            if error is None
            else error.status
            if isinstance(error, trioqio.HandshakeError)
            else -1
        )

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            ws.handshake_task(nursery, done)
            nursery.start_soon(client.send_all, request_bytes)
            reply = await read_reply(client)
    status = int(reply[9:12])
    assert statuses == [status]
    assert status in (101, 400, 403, 404)
    await client.aclose()
    await ws.aclose()


# -- fuzz the frame decoder: any split, any fragmenting, pings between fragments ------------

_SIZES = st.one_of(
    st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]), st.integers(0, 3000)
)
_messages = st.lists(
    st.lists(st.tuples(_SIZES, st.booleans()), min_size=1, max_size=4),  # (size, ping after)
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messages, st.lists(st.integers(1, 70000), min_size=1, max_size=8))
async def test_fuzz_fragmented_messages_in_pieces(
    messages: list[list[tuple[int, bool]]], cuts: list[int]
) -> None:
    encoder = FrameProtocol(client=True, extensions=[])  # random masking keys
    wire = bytearray()
    payload = bytearray()
    pings: list[bytes] = []
    for fragments in messages:
        for index, (size, ping) in enumerate(fragments):
            data = os.urandom(size)
            payload += data
            wire += encoder.send_data(data, fin=index == len(fragments) - 1)
            if ping:
                pings.append(b"p%d" % len(pings))
                wire += encoder.ping(pings[-1])
    pieces = []
    start = 0
    for cut in sorted({min(c, len(wire)) for c in cuts} | {len(wire)}):
        pieces.append(bytes(wire[start:cut]))
        start = cut
    error, reply, ws, client = await handshake_with(GOOD + b"\r\n")
    assert error is None, reply

    async def send() -> None:
        for piece in pieces:
            if piece:
                await client.send_all(piece)

    got = bytearray()
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                while len(got) < len(payload):
                    got += await ws.receive_some(50_000)
                nursery.start_soon(ws.receive_some)  # pings after the last data frame
                pongs = await read_frames(client, len(pings))
                nursery.cancel_scope.cancel()
    finally:
        await client.aclose()
        await ws.aclose()
    assert got == payload
    assert pongs == [(Opcode.PONG, p) for p in pings]
