"""Peers that try to make trioqio buffer without bound (docs/limits.md), at scale.

Each scenario drives a real peer over loopback past one documented limit and checks that
trioqio refuses it with a clear error, or streams it, while the Python heap
(tracemalloc peak) stays under a fixed bound that does not grow with the peer's volume.
"""

from __future__ import annotations

import os
import ssl
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest
import trio
import trustme
from _scale import size

import trioqio
from trioqio.migration._protocol import MAIN_MAGIC, MAIN_VERSION, MessageType
from trioqio.migration._run import MigrateArgs, migrate

MIB = 1 << 20
#: Peak heap (trioqio and the in-process peer) allowed for one scenario, whatever the
#: peer sends: trioqio's own share is one 256 KiB receive buffer plus a frame or record.
PEAK_BOUND = 4 * MIB


@pytest.fixture
def heap() -> Iterator[list[int]]:
    """Trace allocations; yields a list the test reads the peak from."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    result: list[int] = []
    try:
        yield result
    finally:
        tracemalloc.stop()


def _peak() -> int:
    return tracemalloc.get_traced_memory()[1]


async def _socket_pair() -> tuple[trioqio.SocketChannel, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trioqio.SocketChannel(a), trio.SocketStream(b)


GOOD_REQUEST = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def _handshaken() -> tuple[trioqio.WebsockChannel, trio.SocketStream]:
    master, peer = await _socket_pair()
    server = trioqio.WebsockChannel.server(master, handshake_timeout=30)
    await peer.send_all(GOOD_REQUEST)
    await server.handshake()
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += await peer.receive_some(4096)
    assert b" 101 " in reply
    return server, peer


async def test_websocket_huge_frame_is_streamed_in_bounded_memory(heap: list[int]) -> None:
    # A frame announcing 2**62 bytes: trioqio never allocates by the announced length,
    # it hands the payload on as it arrives (receive buffer: 256 KiB).
    volume = size(full=512, ci=64) * MIB
    server, peer = await _handshaken()
    mask = b"\x01\x02\x03\x04"
    header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 62) + mask
    piece = 64 * 1024  # the peer's own buffers count in the peak too: keep them small
    chunk = bytes(x ^ mask[i % 4] for i, x in enumerate(b"\xab" * piece))  # masked 0xab
    tracemalloc.reset_peak()
    received = 0
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:

            async def flood() -> None:
                await peer.send_all(header)
                for _ in range(volume // piece):
                    await peer.send_all(chunk)

            nursery.start_soon(flood)
            while received < volume:
                data = await server.receive_some(65536)
                assert data == b"\xab" * len(data)
                received += len(data)
    heap.append(_peak())
    print(f"\n{volume // MIB} MiB received, tracemalloc peak {_peak() / MIB:.2f} MiB")
    assert received == volume
    assert _peak() < PEAK_BOUND, _peak()
    await peer.aclose()
    await server.aclose()


async def test_websocket_length_with_top_bit_is_refused() -> None:
    server, peer = await _handshaken()
    mask = b"\x01\x02\x03\x04"
    await peer.send_all(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 63) + mask)
    with trio.fail_after(30), pytest.raises(trioqio.WebsockProtocolError, match="framing error"):
        await server.receive_some(4096)
    await peer.aclose()
    await server.aclose()


async def test_websocket_endless_handshake_is_refused(heap: list[int]) -> None:
    # Headers that never end: refused at MAX_HANDSHAKE_BYTES (4 KiB), whatever follows.
    master, peer = await _socket_pair()
    server = trioqio.WebsockChannel.server(master, handshake_timeout=30)
    tracemalloc.reset_peak()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:

            async def flood() -> None:
                try:
                    await peer.send_all(b"GET / HTTP/1.1\r\n")
                    for _ in range(size(full=4096, ci=512)):
                        await peer.send_all(b"X-Filler: " + b"a" * 1000 + b"\r\n")
                except trio.BrokenResourceError:
                    pass  # refused: trioqio closed the connection

            nursery.start_soon(flood)
            with pytest.raises(trioqio.HandshakeError, match="4096 bytes"):
                await server.handshake()
            await server.aclose()
    print(f"\nhandshake flood refused, tracemalloc peak {_peak() / MIB:.2f} MiB")
    assert _peak() < PEAK_BOUND, _peak()
    await peer.aclose()


async def test_tls_record_flood_is_read_in_bounded_memory(heap: list[int]) -> None:
    # The peer writes a long TLS record stream and never reads; the reader takes small
    # pieces: the heap holds at most one 256 KiB ciphertext read plus one record.
    volume = size(full=512, ci=64) * MIB
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    a, b = trio.socket.socketpair()
    server = trioqio.TLSChannel.server(trioqio.SocketChannel(a), server_ctx)
    peer = trio.SSLStream(trio.SocketStream(b), client_ctx, server_hostname="localhost")
    received = 0
    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.do_handshake)
            await server.handshake()
            tracemalloc.reset_peak()

            async def flood() -> None:
                block = b"\xcd" * (64 * 1024)  # the peer's buffers count in the peak too
                for _ in range(volume // len(block)):
                    await peer.send_all(block)

            nursery.start_soon(flood)
            while received < volume:
                data = await server.receive_some(16384)
                received += len(data)
    heap.append(_peak())
    print(f"\n{volume // MIB} MiB received, tracemalloc peak {_peak() / MIB:.2f} MiB")
    assert received == volume
    assert _peak() < PEAK_BOUND, _peak()
    await trio.aclose_forcefully(peer)
    await trio.aclose_forcefully(server)


async def test_migration_peer_announcing_huge_message_is_refused(tmp_path: Path) -> None:
    # "Sources" that announce a 4 GiB message on the main channel: the destination
    # refuses the length before allocating anything for it, naming the field.
    errors: list[str] = []
    for attempt in range(size(full=50, ci=5)):
        path = tmp_path / f"m{attempt}.sock"
        with open(os.devnull, "w") as quiet, trio.fail_after(60):
            async with trio.open_nursery() as nursery:

                async def destination(path: Path = path, quiet: TextIO = quiet) -> None:
                    args = MigrateArgs(listen=f"unix:{path}", progress=False, stderr=quiet)
                    report = await migrate(args)
                    errors.append(str(report.error))

                nursery.start_soon(destination)
                while not path.exists():
                    await trio.sleep(0.01)
                stream = await trio.open_unix_socket(str(path))
                await stream.send_all(struct.pack(">4sI", MAIN_MAGIC, MAIN_VERSION))
                await stream.send_all(struct.pack(">B3xI", MessageType.ERROR, 0xFFFFFFFF))
                assert await stream.receive_some(4096) is not None  # closed, or an ERROR
                await stream.aclose()
    assert len(errors) == size(full=50, ci=5)
    print(f"\n{len(errors)} refused: {errors[0]}")
    for error in errors:
        assert "field 'length'" in error, error
        assert "at most 4096" in error, error
