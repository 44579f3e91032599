"""Errors leave a NetListener's block inside an ExceptionGroup; catch them by type.

A NetListener is a nursery, so whatever leaves its ``async with`` block (an error the
body raised, a handler's error under ``on_handler_error="raise"``, an accept error under
``on_accept_error="raise"``) arrives wrapped in an ``ExceptionGroup``, as from every Trio
nursery. This script makes two: an address already in use (``OSError`` from ``open``)
and a handler that raises under ``"raise"``, and catches each by type with
``ExceptionGroup.split``, which runs on every supported Python (``except* OSError`` is the
Python 3.11+ spelling of the same thing; on 3.10 ``ExceptionGroup`` comes from the
``exceptiongroup`` backport, which Trio depends on there).

Run: ``python examples/listener_errors.py`` (prints what it caught and exits).
"""

from __future__ import annotations

import sys

import trio

import trioqio

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup  # installed with trio on Python 3.10


class BadRequest(Exception):
    """What the handler below raises for a request it does not understand."""


async def strict(stream: trio.abc.Stream) -> None:
    """Refuse everything: raise on the first request."""
    request = await stream.receive_some()
    raise BadRequest(f"cannot handle {request!r}")


async def listen_twice(port: int) -> None:
    async with trioqio.NetListener(name="second") as listener:
        await listener.open(f"tcp:127.0.0.1:{port}")  # raises OSError(EADDRINUSE)


async def taken_address() -> None:
    print("an address already in use:")
    async with trioqio.NetListener(name="first") as first:
        await first.open("tcp:127.0.0.1:0")
        address = first.addresses[0]
        assert isinstance(address, trioqio.InetAddress)
        try:
            await listen_twice(address.port)
        except ExceptionGroup as group:  # 3.11+: `except* OSError as group:`
            oserrors, rest = group.split(OSError)
            if rest is not None:
                raise rest from None  # not ours: let it go on
            assert oserrors is not None
            for exc in oserrors.exceptions:
                print(f"  caught {type(exc).__name__}: {exc}")


async def raising_handler() -> None:
    print('a handler error under on_handler_error="raise":')
    try:
        async with trioqio.NetListener(name="strict", on_handler_error="raise") as listener:
            await listener.open("tcp:127.0.0.1:0")
            listener.set_client_func(strict)
            async with await trioqio.connect(listener.addresses[0]) as client:
                await client.send_all(b"hello?")
                await trio.sleep_forever()  # the handler's error tears the block down
    except ExceptionGroup as group:  # 3.11+: `except* BadRequest as group:`
        bad, rest = group.split(BadRequest)
        if rest is not None:
            raise rest from None
        assert bad is not None
        for exc in bad.exceptions:
            print(f"  caught {type(exc).__name__}: {exc}")
        print(f"  the group: {group!r}")


async def main() -> None:
    await taken_address()
    await raising_handler()


if __name__ == "__main__":
    trio.run(main)
