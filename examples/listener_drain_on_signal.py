"""Drain a NetListener gracefully on SIGINT (Ctrl+C): finish in-flight requests, then stop.

The server answers one request per message after some work. On SIGINT it calls
``listener.aclose(grace=GRACE)``: accepting stops at once, ``listener.draining`` is set,
clients waiting between requests are let go at once, requests in flight get ``GRACE``
seconds to finish, and whatever still runs after that is cancelled. The report says how
many handlers finished and how many were cut.

Run: ``python examples/listener_drain_on_signal.py`` serves on 127.0.0.1:8765 until Ctrl+C
(try ``nc 127.0.0.1 8765``). With ``TRIOQIO_EXAMPLE_QUICK=1`` it listens on a free port,
starts three clients (one mid-request, one idle, one whose request outlasts the grace
period), sends itself SIGINT and shows the drain.
"""

from __future__ import annotations

import os
import signal

import trio

import trioqio

QUICK = bool(os.environ.get("TRIOQIO_EXAMPLE_QUICK"))
GRACE = 0.5 if QUICK else 10.0
WORK = 0.2  # seconds one ordinary request takes
SLOW_WORK = 60.0  # a request that outlasts the grace period


async def next_request(stream: trio.abc.ReceiveStream, draining: trio.Event) -> bytes:
    """Wait for the client's next request; b"" once it closes or the listener drains."""
    request = b""
    async with trio.open_nursery() as nursery:

        async def stop_when_draining() -> None:
            await draining.wait()
            nursery.cancel_scope.cancel()  # a cancelled receive loses no data

        nursery.start_soon(stop_when_draining)
        request = bytes(await stream.receive_some())
        nursery.cancel_scope.cancel()
    return request


async def serve_client(listener: trioqio.NetListener, stream: trio.abc.Stream) -> None:
    """Answer requests until the client leaves or the listener drains."""
    while request := await next_request(stream, listener.draining):
        # A request in flight is finished even when draining began meanwhile (up to
        # the grace period): the client gets its answer.
        print(f"server: working on {request!r}")
        await trio.sleep(SLOW_WORK if request.startswith(b"slow") else WORK)
        await stream.send_all(b"done: " + request)
        print(f"server: answered {request!r}")
    print("server: client let go" + (" (draining)" if listener.draining.is_set() else ""))


async def client(address: trioqio.SocketAddress, request: bytes | None) -> None:
    """Connect; send ``request`` (None: stay idle); print the answer, if any, and the end."""
    async with await trioqio.connect(address) as channel:
        if request is not None:
            await channel.send_all(request)
        async for answer in channel:
            print(f"client {request!r}: got {answer!r}")
        print(f"client {request!r}: server closed the connection")


async def demo(address: trioqio.SocketAddress, listener: trioqio.NetListener) -> None:
    """Quick mode: put three clients in place, then send ourselves SIGINT."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client, address, None)
        nursery.start_soon(client, address, b"slow request")
        nursery.start_soon(client, address, b"request 1")
        while listener.statistics().running < 3:
            await trio.sleep(0.01)
        await trio.sleep(WORK / 2)  # "request 1" is now half done
        print("demo: sending SIGINT to myself")
        os.kill(os.getpid(), signal.SIGINT)


async def main() -> None:
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trioqio.NetListener(name="drain") as listener:
            await listener.open("tcp:127.0.0.1:0" if QUICK else "tcp:127.0.0.1:8765")
            listener.set_client_func(lambda stream: serve_client(listener, stream))
            print("listening on", listener.addresses[0], "- Ctrl+C drains")
            async with trio.open_nursery() as nursery:
                if QUICK:
                    nursery.start_soon(demo, listener.addresses[0], listener)
                async for signum in signals:
                    print(f"{signal.Signals(signum).name}: draining for up to {GRACE} s")
                    break
                report = await listener.aclose(grace=GRACE)
            print(f"closed: {report.finished} handlers finished, {report.cut} cut")
            print("statistics:", listener.statistics())


if __name__ == "__main__":
    trio.run(main)
