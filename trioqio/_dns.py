"""Name resolution (QEMU ``io/dns-resolver.c``: ``QIODNSResolver``).

QEMU's resolver turns one ``SocketAddress`` into a list of numeric ones: for ``inet`` it
calls ``getaddrinfo`` (passive, stream) and makes one numeric address per result; for
``unix``, ``vsock`` and ``fd`` it returns a single copy. ``lookup_async`` runs the same
lookup in a worker thread through a ``QIOTask``.

trioqio keeps both shapes: :func:`resolve_task` is the QEMU one (a :class:`Task` whose
worker thread calls :func:`socket.getaddrinfo`), and :func:`resolve` is the plain
``await``. ``resolve`` goes through :func:`trio.socket.getaddrinfo` rather than a Task,
because Trio's version answers numeric hosts without a thread, abandons the thread at
once when cancelled (a blocked ``getaddrinfo`` cannot be interrupted), and honours a
resolver installed with :func:`trio.socket.set_custom_hostname_resolver`.

Differences from QEMU: there is no resolver object (QEMU's is a process singleton with no
state); duplicate results are dropped; a failed lookup raises :class:`socket.gaierror`
(an ``OSError``) whose message names the host and port.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import trio

from ._address import InetAddress, SocketAddress, address_from_sockaddr, as_address
from ._task import CompletionCallback, Task

__all__ = ["resolve", "resolve_task"]

_FLAGS = socket.AI_PASSIVE

AddrInfo = tuple[Any, Any, int, str, Any]


def _convert(address: InetAddress, infos: Sequence[AddrInfo]) -> list[SocketAddress]:
    result: list[SocketAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        converted = address_from_sockaddr(int(family), sockaddr)
        if converted not in result:
            result.append(converted)
    if not result:
        raise socket.gaierror(
            socket.EAI_NONAME,
            f"address resolution failed for {address.host}:{address.port}: no IPv4 or IPv6 address",
        )
    return result


def _failed(address: InetAddress, exc: socket.gaierror) -> socket.gaierror:
    reason = exc.strerror or str(exc)
    error = socket.gaierror(
        exc.errno, f"address resolution failed for {address.host}:{address.port}: {reason}"
    )
    error.__cause__ = exc
    return error


def _lookup_blocking(address: SocketAddress) -> list[SocketAddress]:
    """Resolve in the calling thread (QEMU ``qio_dns_resolver_lookup_sync``)."""
    if not isinstance(address, InetAddress):
        return [address]
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=_FLAGS
        )
    except socket.gaierror as exc:
        raise _failed(address, exc) from exc
    return _convert(address, infos)


async def resolve(address: str | SocketAddress) -> list[SocketAddress]:
    """Resolve an address to the numeric addresses to listen on or connect to.

    A tcp address gives one numeric :class:`InetAddress` per ``getaddrinfo`` result
    (``AI_PASSIVE``, ``SOCK_STREAM``), in the system's order, duplicates dropped:
    ``127.0.0.1:0`` gives exactly one, ``localhost`` gives IPv4 and IPv6 where the
    machine has both. unix, fd and vsock addresses come back unchanged, as a list of one.

    This uses :func:`trio.socket.getaddrinfo`: numeric hosts need no thread, a
    cancellation stops waiting at once, and a custom hostname resolver installed in Trio
    is honoured. Use :func:`resolve_task` for the callback (QEMU) shape.

    QEMU: ``qio_dns_resolver_lookup_sync``.

    Args:
        address: an address value or its text form.

    Returns:
        The numeric addresses, at least one.

    Raises:
        AddressError: malformed address text.
        socket.gaierror: the name does not resolve; the message names host and port.

    Example::

        addrs = await trioqio.resolve("tcp:localhost:0")
    """
    addr = as_address(address)
    if not isinstance(addr, InetAddress):
        await trio.lowlevel.checkpoint()
        return [addr]
    try:
        infos = await trio.socket.getaddrinfo(
            addr.host, addr.port, type=socket.SOCK_STREAM, flags=_FLAGS
        )
    except socket.gaierror as exc:
        raise _failed(addr, exc) from exc
    return _convert(addr, infos)


def resolve_task(
    nursery: trio.Nursery,
    address: str | SocketAddress,
    on_complete: CompletionCallback[list[SocketAddress]] | None = None,
) -> Task[list[SocketAddress]]:
    """Resolve in a worker thread and report through a :class:`Task` (the QEMU shape).

    The worker calls :func:`socket.getaddrinfo` (same flags and result as
    :func:`resolve`); ``on_complete(task)`` then runs in the Trio thread, where
    ``task.result`` is the list of addresses, or ``task.propagate_error()`` raises the
    :class:`socket.gaierror`. Cancellation follows :meth:`trioqio.Task.run_in_thread`
    with ``abandon_on_cancel=True`` (``getaddrinfo`` cannot be interrupted): the
    completion sees :class:`trioqio.TaskCancelled`.

    QEMU: ``qio_dns_resolver_lookup_async`` + ``qio_dns_resolver_lookup_result``.

    Args:
        nursery: owns the worker.
        address: an address value or its text form (parsed at once).
        on_complete: called once in the Trio thread with the task.

    Returns:
        The running task; ``await task.wait()`` gives the addresses.

    Raises:
        AddressError: malformed address text (raised at once, before any thread).

    Example::

        def done(task: trioqio.Task[list[trioqio.SocketAddress]]) -> None:
            print(task.result)

        trioqio.resolve_task(nursery, "localhost:0", done)
    """
    addr = as_address(address)
    task: Task[list[SocketAddress]] = Task(
        source=addr, on_complete=on_complete, name=f"resolve {addr}"
    )
    task.run_in_thread(nursery, _lookup_blocking, addr, abandon_on_cancel=True)
    return task
