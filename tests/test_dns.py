"""resolve and resolve_task (QEMU QIODNSResolver, reference §3.6 and §4.9)."""

from __future__ import annotations

import socket
import threading
from typing import Literal

import pytest
import trio

import trioqio
from trioqio import FdAddress, InetAddress, UnixAddress, VsockAddress


def _system_families(host: str) -> set[int]:
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return set()
    return {int(info[0]) for info in infos}


async def test_numeric_v4_gives_exactly_one() -> None:
    assert await trioqio.resolve("127.0.0.1:0") == [InetAddress("127.0.0.1", 0)]
    assert await trioqio.resolve(InetAddress("127.0.0.1", 7)) == [InetAddress("127.0.0.1", 7)]


async def test_numeric_v6_gives_exactly_one() -> None:
    assert await trioqio.resolve("tcp:[::1]:5") == [InetAddress("::1", 5)]


async def test_localhost_matches_the_system() -> None:
    result = await trioqio.resolve("tcp:localhost:80")
    assert result
    assert all(isinstance(a, InetAddress) and a.port == 80 for a in result)
    hosts = {a.host for a in result if isinstance(a, InetAddress)}
    assert len(hosts) == len(result)  # duplicates dropped
    expected = _system_families("localhost")
    got = {socket.AF_INET6 if ":" in h else socket.AF_INET for h in hosts}
    assert got == expected


@pytest.mark.skipif(
    _system_families("localhost") != {socket.AF_INET, socket.AF_INET6},
    reason="this machine's resolver maps localhost to one family only",
)
async def test_localhost_gives_both_families_where_the_machine_has_both() -> None:
    hosts = {a.host for a in await trioqio.resolve("localhost:0") if isinstance(a, InetAddress)}
    assert "127.0.0.1" in hosts
    assert "::1" in hosts


@pytest.mark.parametrize(
    "address", [UnixAddress("/tmp/x.sock"), UnixAddress("@abs"), FdAddress(3), VsockAddress(2, 9)]
)
async def test_non_inet_addresses_come_back_alone(address: trioqio.SocketAddress) -> None:
    assert await trioqio.resolve(address) == [address]
    assert await trioqio.resolve(str(address)) == [address]


async def test_unresolvable_name_names_host_and_port() -> None:
    with pytest.raises(socket.gaierror, match=r"address resolution failed for nosuch\.invalid:7"):
        await trioqio.resolve("tcp:nosuch.invalid:7")


async def test_bad_text_is_an_address_error() -> None:
    with pytest.raises(trioqio.AddressError, match="port 'x' is not a number"):
        await trioqio.resolve("tcp:localhost:x")


class _TwoFamilies(trio.abc.HostnameResolver):
    """A resolver that maps one made-up name to both loopbacks (no sockets involved)."""

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[
        # trio.abc.HostnameResolver's own return type
        tuple[Literal[socket.AddressFamily.AF_INET], socket.SocketKind, int, str, tuple[str, int]]
        | tuple[
            Literal[socket.AddressFamily.AF_INET6],
            socket.SocketKind,
            int,
            str,
            tuple[str, int, int, int] | tuple[int, bytes],
        ]
    ]:
        assert host == b"dual.test"
        assert flags & socket.AI_PASSIVE
        port_number = int(port) if port is not None else 0
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port_number)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port_number, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port_number)),
        ]

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        raise NotImplementedError


async def test_resolve_honours_trios_custom_resolver() -> None:
    old = trio.socket.set_custom_hostname_resolver(_TwoFamilies())
    try:
        result = await trioqio.resolve("dual.test:9")
    finally:
        trio.socket.set_custom_hostname_resolver(old)
    assert result == [InetAddress("127.0.0.1", 9), InetAddress("::1", 9)]


async def test_resolve_task_completes_in_the_trio_thread(no_threads_left: None) -> None:
    trio_thread = threading.get_ident()
    seen: list[tuple[int, list[trioqio.SocketAddress]]] = []

    def done(task: trioqio.Task[list[trioqio.SocketAddress]]) -> None:
        seen.append((threading.get_ident(), task.result))

    async with trio.open_nursery() as nursery:
        task = trioqio.resolve_task(nursery, "127.0.0.1:4", done)
        assert isinstance(task, trioqio.Task)
    assert seen == [(trio_thread, [InetAddress("127.0.0.1", 4)])]
    assert await task.wait() == [InetAddress("127.0.0.1", 4)]
    assert task.source == InetAddress("127.0.0.1", 4)


async def test_resolve_task_agrees_with_resolve(no_threads_left: None) -> None:
    async with trio.open_nursery() as nursery:
        task = trioqio.resolve_task(nursery, "localhost:0")
    assert await task.wait() == await trioqio.resolve("localhost:0")


async def test_resolve_task_error_reaches_the_completion(no_threads_left: None) -> None:
    errors: list[BaseException] = []

    def done(task: trioqio.Task[list[trioqio.SocketAddress]]) -> None:
        try:
            task.propagate_error()
        except socket.gaierror as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        trioqio.resolve_task(nursery, "nosuch.invalid:1", done)
    assert len(errors) == 1
    assert "address resolution failed for nosuch.invalid:1" in str(errors[0])


async def test_resolve_task_non_inet_needs_no_lookup(no_threads_left: None) -> None:
    async with trio.open_nursery() as nursery:
        task = trioqio.resolve_task(nursery, "unix:@x")
    assert await task.wait() == [UnixAddress("@x")]


def test_resolve_task_rejects_bad_text_before_any_thread() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with pytest.raises(trioqio.AddressError, match="empty host"):
                trioqio.resolve_task(nursery, "tcp::1")
        assert trio.testing.active_thread_count() == 0

    trio.run(main)


async def test_resolve_task_cancelled_sees_task_cancelled(no_threads_left: None) -> None:
    outcomes: list[BaseException | None] = []
    gate = threading.Event()

    def done(task: trioqio.Task[list[trioqio.SocketAddress]]) -> None:
        outcomes.append(task.error)

    # A real lookup that blocks until the test lets it go: a custom resolver would run in
    # the Trio thread, so block the worker through socket.getaddrinfo's own hook instead.
    original = socket.getaddrinfo

    def slow_getaddrinfo(*args: object, **kwargs: object) -> object:
        gate.wait(5)
        return original(*args, **kwargs)  # type: ignore[arg-type]  # passthrough

    socket.getaddrinfo = slow_getaddrinfo  # type: ignore[assignment]  # restored below
    try:
        with trio.move_on_after(0.05):
            async with trio.open_nursery() as nursery:
                trioqio.resolve_task(nursery, "localhost:1", done)
    finally:
        gate.set()
        socket.getaddrinfo = original
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], trioqio.TaskCancelled)
