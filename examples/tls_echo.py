"""A TLS echo service with client certificates and a DN ACL, like a QEMU migration target.

The server listens on loopback with ``trioqio.NetListener``, wraps each client in a server
``TLSChannel`` that requires a client certificate whose DN matches ``CN=qemu*``, runs the
handshake as a Task (QEMU's ``qio_channel_tls_handshake`` shape), and echoes until the
client says ``bye()``. Throwaway certificates come from ``trustme``.

Run: ``python examples/tls_echo.py`` (it runs a short self-test client and exits).
"""

from __future__ import annotations

import ssl

import trio
import trustme

import trioqio


async def serve_client(channel: trioqio.SocketChannel, ctx: ssl.SSLContext) -> None:
    tls = trioqio.TLSChannel.server(channel, ctx, acl=["*CN=qemu*"], name="echo-tls-incoming")
    async with tls:
        async with trio.open_nursery() as nursery:
            task = tls.handshake_task(nursery)
        try:
            await task.wait()
        except trioqio.HandshakeError as exc:
            print("server: refused:", exc)
            return
        print("server: client", tls.peer_dn, "admitted over", tls.ssl_object.version())
        while data := await tls.receive_some():
            await tls.send_all(data)
        await tls.bye()


async def main() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_ctx)

    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    ca.issue_cert("client@example", common_name="qemu-client").configure_cert(client_ctx)

    async with trioqio.NetListener(name="tls-echo") as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(lambda channel: serve_client(channel, server_ctx))
        address = listener.addresses[0]
        print("server: listening on", address)

        plain = await trioqio.connect(address)
        async with trioqio.TLSChannel.client(plain, client_ctx, hostname="localhost") as tls:
            await tls.handshake()
            message = b"hello over TLS " * 1000
            await tls.send_all(message)
            await tls.bye()  # close_notify: the server sees a clean end of file
            echoed = await tls.receive_exactly(len(message))
            assert echoed == message
            assert await tls.receive_some() == b""
            print(f"client: {len(echoed)} bytes echoed, clean close")
        listener.set_client_func(None)


if __name__ == "__main__":
    trio.run(main)
