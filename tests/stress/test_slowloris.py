"""Slowloris on the TLS and websocket handshakes behind a NetListener with ``max_clients``.

N clients take every slot: half drip their handshake a byte at a time, half send nothing.
The handshake timeout (short here) must fail each of them with a HandshakeError and close
its connection, which frees its slot; well-behaved clients waiting in the backlog then
complete their handshake and exchange data. Real clock, real sockets, real TLS (trustme);
the only time bound is a generous "no hang" limit.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
import trustme
from _scale import size
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

import trioqio

SLOTS = size(full=200, ci=8)
GOOD_CLIENTS = size(full=20, ci=2)
HANDSHAKE_TIMEOUT = 1.5
DRIP = 0.25  # seconds between the bytes a dripping client sends
PAYLOAD = 64 * 1024
HOST = "localhost"
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _client_hello(context: ssl.SSLContext) -> bytes:
    """A real TLS ClientHello, for a client that sends it too slowly."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    engine = context.wrap_bio(incoming, outgoing, server_hostname=HOST)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the ServerHello
        engine.do_handshake()
    return outgoing.read()


class Tally:
    """What the server's handlers saw."""

    def __init__(self) -> None:
        self.timeouts = 0
        self.other_errors: list[BaseException] = []
        self.served = 0
        self.bytes_echoed = 0


async def _echo(channel: trioqio.abc.Channel, tally: Tally) -> None:
    while data := await channel.receive_some(65536):
        await channel.send_all(data)
        tally.bytes_echoed += len(data)
    tally.served += 1


async def _loris(address: trioqio.InetAddress, drip: bytes | None) -> None:
    """Connect and drip ``drip`` a byte at a time (or stay silent) until the server hangs up."""
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        with trio.move_on_after(60):
            try:
                if drip is None:
                    while await stream.receive_some(4096):
                        pass  # a websocket server may reply 408-ish bytes; wait for EOF
                    return
                for byte in drip:
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(DRIP)
                while await stream.receive_some(4096):
                    pass
            except trio.BrokenResourceError:
                pass  # the server closed (reset) the connection: exactly what we want


async def _run_scenario(
    make_handler: Callable[[Tally], Callable[[trioqio.SocketChannel], Awaitable[None]]],
    drip: bytes,
    good_client: Callable[[trioqio.InetAddress, bytes], Awaitable[bytes]],
) -> Tally:
    tally = Tally()
    payloads = [os.urandom(PAYLOAD) for _ in range(GOOD_CLIENTS)]
    with trio.fail_after(90):
        async with trioqio.NetListener(name="slowloris", max_clients=SLOTS) as listener:
            await listener.open("tcp:127.0.0.1:0")
            [address] = listener.addresses
            assert isinstance(address, trioqio.InetAddress)
            listener.set_client_func(make_handler(tally))
            async with trio.open_nursery() as nursery:
                for index in range(SLOTS):
                    nursery.start_soon(_loris, address, drip if index % 2 else None)
                while listener.statistics().running < SLOTS:
                    await trio.sleep(0.01)  # every slot is taken by a loris
                echoed: list[bytes] = [b""] * GOOD_CLIENTS

                async def good(index: int) -> None:
                    echoed[index] = await good_client(address, payloads[index])

                for index in range(GOOD_CLIENTS):
                    nursery.start_soon(good, index)
            stats = listener.statistics()
            report = await listener.aclose()
    assert echoed == payloads, "a well-behaved client did not get its bytes back"
    assert tally.other_errors == []
    assert tally.timeouts == SLOTS, "every loris must fail its handshake by the timeout"
    assert tally.served == GOOD_CLIENTS
    assert tally.bytes_echoed == GOOD_CLIENTS * PAYLOAD
    assert stats.accepted == SLOTS + GOOD_CLIENTS
    assert stats.handler_errors == 0
    assert (report.finished, report.cut) == (0, 0)  # nothing was still running
    assert listener.clients == ()
    return tally


async def test_slowloris_tls_handshake(ca: trustme.CA) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    def make_handler(tally: Tally) -> Callable[[trioqio.SocketChannel], Awaitable[None]]:
        async def handler(channel: trioqio.SocketChannel) -> None:
            tls = trioqio.TLSChannel.server(
                channel, server_ctx, handshake_timeout=HANDSHAKE_TIMEOUT
            )
            try:
                await tls.handshake()
            except trioqio.HandshakeError as exc:
                if "did not finish within" in str(exc):
                    tally.timeouts += 1
                else:
                    tally.other_errors.append(exc)
                return
            try:
                await _echo(tls, tally)
            finally:
                await tls.aclose()

        return handler

    async def good_client(address: trioqio.InetAddress, payload: bytes) -> bytes:
        channel = await trioqio.connect(address)
        tls = trioqio.TLSChannel.client(channel, client_ctx, hostname=HOST)
        try:
            await tls.handshake()
            received = bytearray()
            async with trio.open_nursery() as nursery:

                async def send() -> None:
                    await tls.send_all(payload)
                    await tls.bye()

                nursery.start_soon(send)
                while data := await tls.receive_some(65536):
                    received += data
            return bytes(received)
        finally:
            await tls.aclose()

    await _run_scenario(make_handler, _client_hello(client_ctx), good_client)


async def test_slowloris_websocket_handshake() -> None:
    def make_handler(tally: Tally) -> Callable[[trioqio.SocketChannel], Awaitable[None]]:
        async def handler(channel: trioqio.SocketChannel) -> None:
            ws = trioqio.WebsockChannel.server(channel, handshake_timeout=HANDSHAKE_TIMEOUT)
            try:
                await ws.handshake()
            except trioqio.HandshakeError as exc:
                if "did not finish within" in str(exc) and exc.status is None:
                    tally.timeouts += 1
                else:
                    tally.other_errors.append(exc)
                await ws.aclose()
                return
            try:
                await _echo(ws, tally)
            finally:
                await ws.aclose()

        return handler

    async def good_client(address: trioqio.InetAddress, payload: bytes) -> bytes:
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            conn = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(conn.send(Request(host="127.0.0.1", target="/")))
            received = bytearray()
            accepted = False
            sent = False
            while len(received) < len(payload):
                data = await stream.receive_some(65536)
                assert data, "the server closed before echoing everything"
                conn.receive_data(data)
                for event in conn.events():
                    if isinstance(event, AcceptConnection):
                        accepted = True
                    elif isinstance(event, BytesMessage):
                        received += event.data
                if accepted and not sent:
                    await stream.send_all(conn.send(BytesMessage(data=payload)))
                    sent = True
            await stream.send_all(conn.send(CloseConnection(code=1000)))
            while await stream.receive_some(65536):
                pass  # the server's close frame, then EOF
            return bytes(received)

    await _run_scenario(make_handler, UPGRADE, good_client)
