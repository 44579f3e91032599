"""WebsockChannel against real client libraries: the close behaviours of issue 16.

Two servers: a trioqio echo server in this process, and a ``trioqio serve --websocket``
subprocess. Two clients, both blocking and run in threads: the ``websockets`` package's
sync client and wsproto driving a plain socket. What is checked is what browsers and
websocat saw go wrong: a close right behind data must not cut the echo, and a refusal
(a 1008 close frame, a 400 reply) must reach the client instead of a connection reset.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

import pytest
import trio

import trioqio

websockets_sync = pytest.importorskip("websockets.sync.client")
websockets_exceptions = pytest.importorskip("websockets.exceptions")
wsproto = pytest.importorskip("wsproto")
from wsproto import ConnectionType, WSConnection  # noqa: E402
from wsproto.events import (  # noqa: E402
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    Request,
    TextMessage,
)

T = TypeVar("T")
MIB = 1024 * 1024
REPEATS = 30
#: A request the server refuses with 400 (no Upgrade header), and bytes behind it that
#: the server never reads as part of the request.
BAD_REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 200_000


def payload(size: int = MIB) -> bytes:
    return hashlib.shake_256(b"issue 16").digest(size)


# -- the clients (blocking; each run in a thread against a server) ----------------------


def websockets_send_then_close(port: int, data: bytes) -> tuple[bytes, int | None]:
    """Send ``data`` as one message and close at once; return what came back and the code."""
    with websockets_sync.connect(
        f"ws://127.0.0.1:{port}/", subprotocols=["binary"], max_size=None, open_timeout=20
    ) as conn:
        received = bytearray()

        def read() -> None:
            with contextlib.suppress(websockets_exceptions.ConnectionClosed):
                for message in conn:
                    assert isinstance(message, bytes)
                    received.extend(message)

        reader = threading.Thread(target=read)
        reader.start()
        conn.send(data)
        conn.close()
        reader.join(30)
        rcvd = conn.protocol.close_rcvd
        assert rcvd is not None, "no close frame from the server"
        return bytes(received), rcvd.code


def websockets_fragmented_text(port: int) -> int | None:
    """Send the text message ``['ab', 'cd']`` in two frames; return the close code read."""
    with websockets_sync.connect(
        f"ws://127.0.0.1:{port}/", subprotocols=["binary"], open_timeout=20
    ) as conn:
        try:
            conn.send(["ab", "cd"])  # raises here if the close frame overtook the 2nd frame
            conn.recv(timeout=20)
        except websockets_exceptions.ConnectionClosed as exc:
            return None if exc.rcvd is None else exc.rcvd.code
        pytest.fail("the server accepted a fragmented text message")


def _wsproto_connect(port: int) -> tuple[socket.socket, WSConnection]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    conn = WSConnection(ConnectionType.CLIENT)
    sock.sendall(conn.send(Request(host="127.0.0.1", target="/", subprotocols=["binary"])))
    return sock, conn


def _wsproto_events(sock: socket.socket, conn: WSConnection) -> Iterator[object]:
    while True:
        chunk = sock.recv(262144)  # a reset raises ConnectionResetError: the bug
        conn.receive_data(chunk or None)
        yield from conn.events()
        if not chunk:
            return


def wsproto_send_then_close(port: int, data: bytes) -> tuple[bytes, int | None]:
    """Send ``data`` and a close frame in one write; return what came back and the code."""
    sock, conn = _wsproto_connect(port)
    received = bytearray()
    code = None
    sender: threading.Thread | None = None
    with sock:
        for event in _wsproto_events(sock, conn):
            if isinstance(event, AcceptConnection):
                out = conn.send(BytesMessage(data=data)) + conn.send(CloseConnection(code=1000))
                sender = threading.Thread(target=sock.sendall, args=(out,))
                sender.start()
            elif isinstance(event, BytesMessage):
                received += event.data
            elif isinstance(event, CloseConnection) and code is None:
                code = event.code  # the first: wsproto reports the EOF after it as 1006
    assert sender is not None
    sender.join(30)
    return bytes(received), code


def wsproto_fragmented_text(port: int) -> int | None:
    """Send ``['ab', 'cd']`` as two text frames in two writes; return the close code read."""
    sock, conn = _wsproto_connect(port)
    code = None
    with sock:
        for event in _wsproto_events(sock, conn):
            if isinstance(event, AcceptConnection):
                sock.sendall(conn.send(TextMessage(data="ab", message_finished=False)))
                sock.sendall(conn.send(TextMessage(data="cd", message_finished=True)))
            elif isinstance(event, CloseConnection) and code is None:
                code = event.code
                if conn.state.name == "REMOTE_CLOSING":
                    sock.sendall(conn.send(event.response()))
            elif isinstance(event, RejectConnection):  # pragma: no cover - a failure
                pytest.fail(f"handshake refused: {event!r}")
    return code


def bad_request_reply(port: int) -> bytes:
    """Send a refused request with bytes behind it; return the whole reply up to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(BAD_REQUEST)
        reply = b""
        while chunk := sock.recv(65536):  # a reset raises ConnectionResetError: the bug
            reply += chunk
        return reply


# -- the servers ------------------------------------------------------------------------


async def handle(sock: trio.socket.SocketType) -> None:
    async with trioqio.WebsockChannel.server(trioqio.SocketChannel(sock)) as ws:
        with contextlib.suppress(trioqio.HandshakeError, trioqio.WebsockProtocolError):
            await ws.handshake()
            while data := await ws.receive_some():
                await ws.send_all(data)


async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Echo over websocket to every client on 127.0.0.1, each in its own task."""
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener, trio.open_nursery() as nursery:
        task_status.started(listener.socket.getsockname()[1])
        while True:
            sock, _ = await listener.socket.accept()
            nursery.start_soon(handle, sock)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve)
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def cli_port() -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "trioqio", "serve", "--websocket", "tcp:127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("echo on "), line
        yield int(line.split()[2].rsplit(":", 1)[1])
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
    assert "Traceback" not in errors, errors


async def in_thread(function: Callable[..., T], *args: object) -> T:
    with trio.fail_after(60):
        return await trio.to_thread.run_sync(function, *args)


# -- in process -------------------------------------------------------------------------


@pytest.mark.parametrize("client", [websockets_send_then_close, wsproto_send_then_close])
async def test_close_right_behind_data_gets_every_byte_back(
    port: int, client: Callable[[int, bytes], tuple[bytes, int | None]]
) -> None:
    data = payload()
    received, code = await in_thread(client, port, data)
    assert len(received) == len(data)
    assert received == data
    assert code == 1000


@pytest.mark.parametrize("client", [websockets_fragmented_text, wsproto_fragmented_text])
async def test_fragmented_text_refusal_code_arrives_every_time(
    port: int, client: Callable[[int], int | None]
) -> None:
    # QEMU refuses a fragmented non-binary frame with 1008 (policy violation).
    codes = [await in_thread(client, port) for _ in range(REPEATS)]
    assert codes == [1008] * REPEATS


async def test_refused_handshake_reply_arrives_without_a_reset(port: int) -> None:
    for _ in range(5):
        reply = await in_thread(bad_request_reply, port)
        assert isinstance(reply, bytes)
        assert reply.startswith(b"HTTP/1.1 400 "), reply[:100]


# -- through ``trioqio serve --websocket`` ------------------------------------------------


@pytest.mark.parametrize("client", [websockets_send_then_close, wsproto_send_then_close])
def test_cli_close_right_behind_data_gets_every_byte_back(
    cli_port: int, client: Callable[[int, bytes], tuple[bytes, int | None]]
) -> None:
    data = payload()
    received, code = client(cli_port, data)
    assert received == data
    assert code == 1000


@pytest.mark.parametrize("client", [websockets_fragmented_text, wsproto_fragmented_text])
def test_cli_fragmented_text_refusal_code_arrives_every_time(
    cli_port: int, client: Callable[[int], int | None]
) -> None:
    assert [client(cli_port) for _ in range(REPEATS)] == [1008] * REPEATS


def test_cli_refused_handshake_reply_arrives_without_a_reset(cli_port: int) -> None:
    for _ in range(5):
        assert bad_request_reply(cli_port).startswith(b"HTTP/1.1 400 ")
