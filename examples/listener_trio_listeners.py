"""One NetListener serving its own sockets, Trio's TCP listeners and a TLS listener at once.

``listener.open`` is the QEMU form (trioqio's own sockets; handlers get a
``SocketChannel``); ``listener.add_listener`` serves any ``trio.abc.Listener`` beside them
(``trio.open_tcp_listeners`` gives ``trio.SocketStream`` clients, a ``trio.SSLListener``
gives ``trio.SSLStream`` clients). Every client gets the same handler, the same
``max_clients`` budget and the same statistics. The second half does the same with
``await nursery.start(trioqio.serve, ...)``, Trio's ``serve_tcp`` shape. Throwaway
certificates come from ``trustme``; everything runs on loopback.

Run: ``python examples/listener_trio_listeners.py`` (it talks to every listener and exits).
"""

from __future__ import annotations

import functools
import ssl

import trio
import trustme

import trioqio


async def echo(stream: trio.abc.Stream) -> None:
    """Send back everything the client sends, whatever kind of stream it came on."""
    print(f"  server: a {type(stream).__name__}")
    async for data in stream:
        await stream.send_all(data)


async def talk(stream: trio.abc.Stream, label: str) -> None:
    """Be a client: send a line, read the echo back, close."""
    message = f"hello over {label}".encode()
    async with stream:
        await stream.send_all(message)
        reply = b""
        while len(reply) < len(message):
            reply += await stream.receive_some()
    print(f"  client: {reply.decode()!r}")


def port_of(listener: trio.SocketListener) -> int:
    """The port a Trio socket listener is bound to."""
    port: int = listener.socket.getsockname()[1]
    return port


async def add_listener_form(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    print("add_listener:")
    async with trioqio.NetListener(name="mixed", max_clients=8) as listener:
        # The QEMU form: trioqio's own socket (handlers get a SocketChannel).
        await listener.open("tcp:127.0.0.1:0")
        # Trio's listeners, served beside it.
        tcp = await trio.open_tcp_listeners(0, host="127.0.0.1")
        for trio_listener in tcp:
            listener.add_listener(trio_listener)
        tls_transport = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        listener.add_listener(trio.SSLListener(tls_transport, server_ctx))
        listener.set_client_func(echo)

        for served in listener.listeners:
            print("  serving", type(served).__name__)
        own = listener.addresses[0]
        assert isinstance(own, trioqio.InetAddress)

        await talk(await trioqio.connect(own), "a trioqio socket")
        await talk(await trio.open_tcp_stream("127.0.0.1", port_of(tcp[0])), "trio TCP")
        tls = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1",
            port_of(tls_transport),
            ssl_context=client_ctx,
        )
        await talk(tls, "trio.SSLListener")

        report = await listener.aclose(grace=1.0)
        print(f"  closed: {report.finished} finished, {report.cut} cut")
        print("  accepted:", listener.statistics().accepted)


async def serve_form() -> None:
    print("trioqio.serve:")
    trio_tcp = await trio.open_tcp_listeners(0, host="127.0.0.1")
    # nursery.start passes no keyword arguments: give serve's options with partial.
    serve = functools.partial(trioqio.serve, name="served", max_clients=8)
    async with trio.open_nursery() as nursery:
        # Addresses and Trio listeners mix; serve owns the listeners from here on.
        listener = await nursery.start(serve, echo, "tcp:127.0.0.1:0", *trio_tcp)
        for address in listener.addresses:
            print("  listening on", address)
            assert isinstance(address, trioqio.InetAddress)
            await talk(await trio.open_tcp_stream(address.host, address.port), str(address))
        # serve runs until cancelled; drain first, then cancel it (cancelling alone
        # closes everything too, cutting the handlers still running).
        report = await listener.aclose(grace=1.0)
        nursery.cancel_scope.cancel()
    print(f"  closed: {report.finished} finished, {report.cut} cut")
    print("  accepted:", listener.statistics().accepted)


async def main() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    await add_listener_form(server_ctx, client_ctx)
    await serve_form()


if __name__ == "__main__":
    trio.run(main)
