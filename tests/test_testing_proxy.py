"""trioqio.testing.FaultProxy: every fault really happens, per direction and per connection."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import trio

from trioqio.testing import Fault, FaultProxy

DATA = os.urandom(300_000)


async def _echo_server(
    nursery: trio.Nursery, received: list[bytearray] | None = None, echo: bool = True
) -> str:
    """A plain trio echo server on loopback; returns its address string."""
    listeners = await nursery.start(trio.serve_tcp, _make_handler(received, echo), 0)
    host, port = listeners[0].socket.getsockname()[:2]
    return f"tcp:{host}:{port}"


def _make_handler(received: list[bytearray] | None, echo: bool):  # type: ignore[no-untyped-def]
    async def handler(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        if received is not None:
            received.append(buffer)
        try:
            while data := await stream.receive_some(65536):
                buffer += data
                if echo:
                    await stream.send_all(data)
        except trio.BrokenResourceError:
            buffer += b"<reset>"
        finally:
            await stream.aclose()

    return handler


async def _connect(proxy: FaultProxy) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", proxy.port)


async def _read_all(stream: trio.SocketStream) -> tuple[bytes, str]:
    """Read until EOF or reset; return the bytes and "eof" or "reset"."""
    data = bytearray()
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        return bytes(data), "reset" if isinstance(cause, ConnectionResetError) else repr(cause)
    return bytes(data), "eof"


async def _exchange(stream: trio.SocketStream, payload: bytes) -> tuple[bytes, str]:
    """Send ``payload`` then EOF while reading; return the bytes read and how it ended.

    A reset is reported to whichever call comes first (the kernel clears the error once
    reported), so a reset seen by the sender counts too.
    """
    reset_on_send = False
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            nonlocal reset_on_send
            try:
                await stream.send_all(payload)
                await stream.send_eof()
            except trio.BrokenResourceError as exc:
                reset_on_send = isinstance(exc.__cause__, ConnectionResetError)

        nursery.start_soon(send)
        got, how = await _read_all(stream)
    return got, "reset" if reset_on_send else how


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, list[bytearray]]]:
    received: list[bytearray] = []
    async with trio.open_nursery() as nursery:
        yield await _echo_server(nursery, received), received
        nursery.cancel_scope.cancel()


async def test_no_fault_forwards_every_byte_both_ways(echo: tuple[str, list[bytearray]]) -> None:
    async with FaultProxy(echo[0]) as proxy:
        assert proxy.address == f"tcp:127.0.0.1:{proxy.port}"
        async with await _connect(proxy) as stream:
            with trio.fail_after(20):
                got, how = await _exchange(stream, DATA)
    assert (got, how) == (DATA, "eof")
    assert proxy.forwarded == {"to_target": len(DATA), "to_client": len(DATA)}
    assert proxy.fired == []


async def test_delay_holds_every_chunk(echo: tuple[str, list[bytearray]]) -> None:
    async with (
        FaultProxy(echo[0], to_target=Fault(delay=0.3)) as proxy,
        await _connect(proxy) as stream,
    ):
        with trio.fail_after(20):
            for _ in range(3):
                sent = trio.current_time()
                await stream.send_all(b"ping")
                assert await stream.receive_some(100) == b"ping"
                assert trio.current_time() - sent >= 0.3  # a lower bound: never flaky


async def test_throttle_paces_to_the_rate(echo: tuple[str, list[bytearray]]) -> None:
    rate = 400_000.0
    fault = Fault(rate=rate)
    async with FaultProxy(echo[0], to_client=fault) as proxy, await _connect(proxy) as stream:
        start = trio.current_time()
        with trio.fail_after(30):
            got, _ = await _exchange(stream, DATA)
        elapsed = trio.current_time() - start
    assert got == DATA
    # The first piece (rate/20 bytes) goes at once; the rest no faster than the rate.
    assert elapsed >= (len(DATA) - rate / 20) / rate


@pytest.mark.parametrize("direction", ["to_target", "to_client"])
async def test_cut_after_n_bytes_is_a_clean_eof_on_both_sides(
    echo: tuple[str, list[bytearray]], direction: str
) -> None:
    fault = Fault(cut_after=12_345)
    async with (
        FaultProxy(echo[0], **{direction: fault}) as proxy,  # type: ignore[arg-type]
        await _connect(proxy) as stream,
    ):
        with trio.fail_after(20):
            got, how = await _exchange(stream, DATA)
    assert how == "eof"
    server = bytes(echo[1][0])
    assert not server.endswith(b"<reset>")
    if direction == "to_target":
        assert server == DATA[:12_345]
        assert DATA[:12_345].startswith(got)  # echoes forwarded before the cut, no more
    else:
        assert got == DATA[:12_345]
        assert DATA.startswith(server)
    assert proxy.fired == [(0, direction, "cut")]
    assert proxy.forwarded[direction] == 12_345


@pytest.mark.parametrize("direction", ["to_target", "to_client"])
async def test_reset_after_n_bytes_is_a_reset_on_both_sides(
    echo: tuple[str, list[bytearray]], direction: str
) -> None:
    fault = Fault(reset_after=50_000)
    async with (
        FaultProxy(echo[0], **{direction: fault}) as proxy,  # type: ignore[arg-type]
        await _connect(proxy) as stream,
    ):
        with trio.fail_after(20):
            got, how = await _exchange(stream, DATA)
        with trio.fail_after(20):
            while not echo[1] or not echo[1][0].endswith(b"<reset>"):
                await trio.sleep(0.01)  # the server's handler sees the reset too
    assert how == "reset"
    assert proxy.fired == [(0, direction, "reset")]
    assert proxy.forwarded[direction] == 50_000
    assert len(got) <= 50_000
    assert DATA.startswith(got)
    server = bytes(echo[1][0]).removesuffix(b"<reset>")
    assert DATA.startswith(server)
    if direction == "to_target":
        assert server == DATA[:50_000]  # the bytes forwarded before the reset arrived


async def test_fault_applies_only_to_the_chosen_connection(
    echo: tuple[str, list[bytearray]],
) -> None:
    fault = Fault(cut_after=1000, connections={1})
    async with FaultProxy(echo[0], to_client=fault) as proxy:
        results = []
        for _ in range(3):
            async with await _connect(proxy) as stream:
                with trio.fail_after(20):
                    results.append(await _exchange(stream, DATA[:100_000]))
    assert results[0] == (DATA[:100_000], "eof")
    assert results[1] == (DATA[:1000], "eof")
    assert results[2] == (DATA[:100_000], "eof")
    assert proxy.accepted == 3
    assert [index for index, _, _ in proxy.fired] == [1]


async def test_other_connections_keep_working_after_a_reset(
    echo: tuple[str, list[bytearray]],
) -> None:
    async with (
        FaultProxy(echo[0], fault=Fault(reset_after=10, connections={0})) as proxy,
        await _connect(proxy) as first,
        await _connect(proxy) as second,
    ):
        with trio.fail_after(20):
            assert (await _exchange(first, DATA))[1] == "reset"
            assert await _exchange(second, DATA) == (DATA, "eof")


async def test_unreachable_target_closes_the_client() -> None:
    async with trio.open_nursery() as nursery:
        address = await _echo_server(nursery)
        nursery.cancel_scope.cancel()
    async with FaultProxy(address) as proxy, await _connect(proxy) as stream:
        with trio.fail_after(20):
            got, _ = await _read_all(stream)
    assert got == b""


async def test_exit_stops_active_connections_and_closes_everything(
    echo: tuple[str, list[bytearray]],
) -> None:
    async with await trio.open_tcp_stream(*_split(echo[0])) as direct:
        await direct.send_all(b"x")  # the target stays up
        async with FaultProxy(echo[0], fault=Fault(delay=100)) as proxy:
            stream = await _connect(proxy)
            await stream.send_all(b"held for 100 s")
            while proxy.accepted == 0:
                await trio.sleep(0.01)
        try:
            with trio.fail_after(20):
                got, _ = await _read_all(stream)  # closed at exit (FIN or RST), not held
        finally:
            await stream.aclose()
        assert got == b""
        assert await direct.receive_some(10) == b"x"


def _split(address: str) -> tuple[str, int]:
    host, port = address.removeprefix("tcp:").rsplit(":", 1)
    return host, int(port)


async def test_unix_target(tmp_path: object) -> None:
    path = f"{tmp_path}/echo.sock"
    listener = trio.socket.socket(trio.socket.AF_UNIX)
    await listener.bind(path)
    listener.listen()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            trio.serve_listeners, _make_handler(None, True), [trio.SocketListener(listener)]
        )
        async with (
            FaultProxy(f"unix:{path}", to_client=Fault(cut_after=7)) as proxy,
            await _connect(proxy) as stream,
        ):
            with trio.fail_after(20):
                assert await _exchange(stream, b"hello unix") == (b"hello u", "eof")
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"delay": -1}, "delay must be >= 0"),
        ({"rate": 0}, "rate must be > 0"),
        ({"cut_after": 1, "reset_after": 1}, "choose one"),
    ],
)
def test_bad_fault_is_a_clear_error(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Fault(**kwargs)  # type: ignore[arg-type]


def test_bad_target_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="tcp: or unix: only"):
        FaultProxy("fd:3")
