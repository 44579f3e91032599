"""Addresses and the DNS resolver (QEMU ``SocketAddress``, ``QIODNSResolver``).

1. the text forms QEMU's ``socket_parse`` accepts, as frozen address values;
2. ``await trioqio.resolve()``: QEMU ``qio_dns_resolver_lookup_sync``, without blocking;
3. ``trioqio.resolve_task()``: QEMU ``qio_dns_resolver_lookup_async`` + ``lookup_result``,
   a worker thread whose completion runs in the Trio thread;
4. bad input: a clear ``AddressError`` naming the part, before any thread starts.

Only ``localhost`` and numeric addresses are resolved (no network needed).
Run: ``python examples/resolve_addresses.py``
"""

from __future__ import annotations

import threading

import trio

import trioqio


def parse_forms() -> None:
    for text in ("tcp:localhost:5900", "[::1]:4444", "unix:/run/qemu.sock", "fd:3", "vsock:2:1"):
        address = trioqio.parse_address(text)
        print(f"{text:22} -> {address!r:45} str: {address}")


async def resolve_now() -> None:
    for text in ("tcp:127.0.0.1:0", "tcp:localhost:5900", "unix:/run/qemu.sock"):
        print(f"resolve({text!r}) = {await trioqio.resolve(text)}")


async def resolve_as_a_task() -> None:
    trio_thread = threading.get_ident()

    def done(task: trioqio.Task[list[trioqio.SocketAddress]]) -> None:
        task.propagate_error()  # a socket.gaierror naming host and port, on failure
        in_trio = threading.get_ident() == trio_thread
        print(f"{task.name}: {task.result} (completion in the Trio thread: {in_trio})")

    async with trio.open_nursery() as nursery:  # owns the worker thread
        trioqio.resolve_task(nursery, "localhost:4444", done)


def bad_input() -> None:
    for text in ("tcp:localhost:99999", "tcp:::1:80", "unix:"):
        try:
            trioqio.parse_address(text)
        except trioqio.AddressError as exc:
            print(f"{text!r}: {exc}")


async def main() -> None:
    parse_forms()
    await resolve_now()
    await resolve_as_a_task()
    bad_input()


if __name__ == "__main__":
    trio.run(main)
