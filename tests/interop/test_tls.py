"""TLSChannel against OpenSSL and GnuTLS, both ways (issue 19).

The peers are the command-line tools people test TLS servers with: ``openssl s_client``
/ ``s_server`` (OpenSSL 3) and ``gnutls-cli`` / ``gnutls-serv`` (GnuTLS 3.7; QEMU's own
TLS library). Every case checks the bytes, who sent close_notify (the peer's message log
or the channel's clean end of file), and that a refusal ends both sides promptly.

What the peers do at the end, which the cases below follow: ``s_client`` answers a
close_notify with its own, so one connection shows both directions; ``gnutls-cli`` sends
close_notify when its input ends but closes without one when the server sends first, so it
gets one case per direction; ``gnutls-serv --echo`` echoes text lines, not binary.
"""

from __future__ import annotations

import base64
import os
import ssl
from pathlib import Path

import pytest
import trio

import trioqio

from ._certs import Credentials
from ._peers import connect_retry, free_port, peer_process, read_exactly, read_to_eof
from .conftest import need

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
GNUTLS_PRIORITY = {"1.2": "NORMAL:-VERS-ALL:+VERS-TLS1.2", "1.3": "NORMAL:-VERS-ALL:+VERS-TLS1.3"}
OPENSSL_FLAG = {"1.2": "-tls1_2", "1.3": "-tls1_3"}
ACL = ["C=UK,O=trioqio-interop,CN=qemu-*"]
PAYLOAD = 256 * 1024
DEADLINE = 30.0

pytestmark = pytest.mark.usefixtures("peer_tool")


def _server_context(creds: Credentials, version: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(creds.ca))
    ctx.load_cert_chain(creds.server_cert, creds.server_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    return ctx


def _client_context(creds: Credentials, version: str, *, cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(creds.ca))
    if cert:
        ctx.load_cert_chain(creds.admitted_cert, creds.admitted_key)
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    return ctx


def _client_argv(
    tool: str, creds: Credentials, version: str, port: int, tmp: Path, *, refused: bool = False
) -> list[str]:
    cert, key = (
        (creds.refused_cert, creds.refused_key)
        if refused
        else (creds.admitted_cert, creds.admitted_key)
    )
    if tool == "openssl":
        return [
            need("openssl", "openssl"), "s_client", "-connect", f"127.0.0.1:{port}",
            "-CAfile", str(creds.ca), "-cert", str(cert), "-key", str(key),
            "-verify_return_error", "-servername", "localhost", "-quiet", "-nocommands",
            "-msg", "-msgfile", str(tmp / "msg.txt"), OPENSSL_FLAG[version],
        ]  # fmt: skip
    return [
        need("gnutls-cli", "gnutls-bin"), "--x509cafile", str(creds.ca),
        "--x509certfile", str(cert), "--x509keyfile", str(key), "-p", str(port),
        "--priority", GNUTLS_PRIORITY[version], "--logfile", str(tmp / "log.txt"), "localhost",
    ]  # fmt: skip


async def _write_until_broken(stdin: trio.abc.SendStream) -> None:
    """Keep writing a line to a peer's input until the peer has exited."""
    for _ in range(250):
        await stdin.send_all(b"x\n")
        await trio.sleep(0.02)


@pytest.mark.parametrize(
    ("tool", "version", "closer"),
    [
        ("openssl", "1.2", "trioqio"),
        ("openssl", "1.3", "trioqio"),
        ("gnutls", "1.2", "trioqio"),
        ("gnutls", "1.3", "trioqio"),
        ("gnutls", "1.2", "peer"),
        ("gnutls", "1.3", "peer"),
    ],
)
async def test_peer_client_against_tlschannel_server(
    creds: Credentials, tmp_path: Path, tool: str, version: str, closer: str
) -> None:
    """s_client / gnutls-cli with an admitted client certificate: echo, then close_notify."""
    data = os.urandom(PAYLOAD)
    async with trioqio.NetListener(name="interop-tls") as listener:
        await listener.open("tcp:127.0.0.1:0")
        port = listener.addresses[0].port  # type: ignore[union-attr]
        argv = _client_argv(tool, creds, version, port, tmp_path)
        with trio.fail_after(DEADLINE):
            async with peer_process(argv, stderr=tmp_path / "stderr.txt") as proc:
                assert proc.stdin is not None
                assert proc.stdout is not None
                sock = await listener.wait_client()
                tls = trioqio.TLSChannel.server(sock, _server_context(creds, version), acl=ACL)
                try:
                    await tls.handshake()
                    assert tls.peer_dn == Credentials.ADMITTED_DN
                    assert tls.ssl_object.version() == f"TLSv{version}"
                    echoed = b""

                    async def read_echo() -> None:
                        nonlocal echoed
                        assert proc.stdout is not None
                        echoed = await read_exactly(proc.stdout, len(data))

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(proc.stdin.send_all, data)
                        nursery.start_soon(read_echo)
                        got = await tls.receive_exactly(len(data))
                        await tls.send_all(got)
                    assert got == data, "bytes from the peer"
                    assert echoed == data, "bytes back to the peer"
                    if closer == "trioqio":
                        await tls.bye()
                        if tool == "openssl":
                            # s_client answers close_notify with its own: a clean end of file.
                            assert await tls.receive_some() == b""
                    else:
                        await proc.stdin.aclose()  # gnutls-cli: input ended, so it says bye
                        assert await tls.receive_some() == b""
                finally:
                    await tls.aclose()
                assert await read_to_eof(proc.stdout) == b"", "nothing after the echo"
                assert await proc.wait() == 0
    if tool == "openssl":
        log = (tmp_path / "msg.txt").read_text()
        assert "<<< TLS 1." in log
        assert "warning close_notify" in log
        alerts = [line for line in log.splitlines() if "close_notify" in line]
        assert any(line.startswith("<<<") for line in alerts), alerts  # received
        assert any(line.startswith(">>>") for line in alerts), alerts  # sent
    elif closer == "trioqio":
        assert "Peer has closed the GnuTLS connection" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("tool", ["openssl", "gnutls"])
async def test_acl_refuses_other_dn(
    creds: Credentials, tmp_path: Path, tool: str, version: str
) -> None:
    """A client certificate from the same CA with a DN the ACL does not admit: refused.

    The server's error names the DN; the peer learns of it (an alert or the closed
    connection) and exits with an error within the deadline.
    """
    async with trioqio.NetListener(name="interop-tls") as listener:
        await listener.open("tcp:127.0.0.1:0")
        port = listener.addresses[0].port  # type: ignore[union-attr]
        argv = _client_argv(tool, creds, version, port, tmp_path, refused=True)
        with trio.fail_after(DEADLINE):
            async with peer_process(argv, stderr=tmp_path / "stderr.txt") as proc:
                assert proc.stdin is not None
                assert proc.stdout is not None
                sock = await listener.wait_client()
                tls = trioqio.TLSChannel.server(sock, _server_context(creds, version), acl=ACL)
                with pytest.raises(trioqio.HandshakeError, match=Credentials.REFUSED_DN):
                    await tls.handshake()
                await tls.aclose()
                # TLS 1.3 clients finish their side of the handshake first; a write then
                # meets the closed connection.
                with pytest.raises(trio.BrokenResourceError):
                    await _write_until_broken(proc.stdin)
                assert await read_to_eof(proc.stdout) == b""
                assert await proc.wait() != 0


def _server_argv(tool: str, creds: Credentials, version: str, port: int, tmp: Path) -> list[str]:
    if tool == "openssl":
        return [
            need("openssl", "openssl"), "s_server", "-accept", f"127.0.0.1:{port}",
            "-naccept", "1", "-cert", str(creds.server_cert), "-key", str(creds.server_key),
            "-CAfile", str(creds.ca), "-Verify", "1", "-verify_return_error", "-quiet",
            "-msg", "-msgfile", str(tmp / "msg.txt"), OPENSSL_FLAG[version],
        ]  # fmt: skip
    return [
        need("gnutls-serv", "gnutls-bin"), "--echo", "-p", str(port), "--x509cafile",
        str(creds.ca), "--x509certfile", str(creds.server_cert), "--x509keyfile",
        str(creds.server_key), "--require-client-cert", "--verify-client-cert",
        "--priority", GNUTLS_PRIORITY[version],
    ]  # fmt: skip


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("tool", ["openssl", "gnutls"])
async def test_tlschannel_client_against_peer_server(
    creds: Credentials, tmp_path: Path, tool: str, version: str
) -> None:
    """TLSChannel.client with a client certificate against s_server / gnutls-serv."""
    port = free_port()
    argv = _server_argv(tool, creds, version, port, tmp_path)
    with trio.fail_after(DEADLINE):
        async with peer_process(argv, stderr=tmp_path / "stderr.txt") as proc:
            assert proc.stdin is not None
            assert proc.stdout is not None
            sock = await connect_retry(f"tcp:127.0.0.1:{port}")
            tls = trioqio.TLSChannel.client(
                sock,  # type: ignore[arg-type]
                _client_context(creds, version),
                hostname="localhost",
            )
            try:
                await tls.handshake()
                assert tls.ssl_object.version() == f"TLSv{version}"
                if tool == "openssl":
                    # s_server prints what it receives and sends what it reads: binary both ways.
                    data, reply = os.urandom(PAYLOAD), os.urandom(PAYLOAD)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(tls.send_all, data)
                        assert await read_exactly(proc.stdout, len(data)) == data
                    await proc.stdin.send_all(reply)
                    assert await tls.receive_exactly(len(reply)) == reply
                else:
                    # gnutls-serv --echo answers each text line (one record per line).
                    lines = base64.encodebytes(os.urandom(48 * 1024)).splitlines(keepends=True)
                    for line in lines:
                        await tls.send_all(line)
                        assert await tls.receive_exactly(len(line)) == line
                await tls.bye()
                # The server answers close_notify with its own: a clean end of file.
                assert await tls.receive_some() == b""
            finally:
                await tls.aclose()
            if tool == "openssl":
                assert await proc.wait() == 0
    if tool == "openssl":
        alerts = [
            line
            for line in (tmp_path / "msg.txt").read_text().splitlines()
            if "close_notify" in line
        ]
        assert any(line.startswith("<<<") for line in alerts), alerts
        assert any(line.startswith(">>>") for line in alerts), alerts


@pytest.mark.parametrize("tool", ["openssl", "gnutls"])
async def test_tlschannel_client_refuses_wrong_hostname(
    creds: Credentials, tmp_path: Path, tool: str
) -> None:
    """The server's certificate does not name the host asked for: both ends fail cleanly."""
    port = free_port()
    argv = _server_argv(tool, creds, "1.3", port, tmp_path)
    with trio.fail_after(DEADLINE):
        async with peer_process(argv, stderr=tmp_path / "stderr.txt") as proc:
            assert proc.stdout is not None
            sock = await connect_retry(f"tcp:127.0.0.1:{port}")
            tls = trioqio.TLSChannel.client(
                sock,  # type: ignore[arg-type]
                _client_context(creds, "1.3"),
                hostname="wrong.example",
            )
            with pytest.raises(trioqio.HandshakeError, match=r"wrong\.example"):
                await tls.handshake()
            await tls.aclose()
            if tool == "openssl":
                # -naccept 1: the one connection failed, so s_server exits.
                await proc.wait()
                assert "alert" in (tmp_path / "stderr.txt").read_text().lower()
            else:
                # gnutls-serv keeps serving; its log names the failed handshake.
                with trio.move_on_after(5):
                    while "Error in handshake" not in (tmp_path / "stderr.txt").read_text():
                        await trio.sleep(0.05)
                err = (tmp_path / "stderr.txt").read_text()
                out: bytes | bytearray = b""
                with trio.move_on_after(0.5):
                    out = await proc.stdout.receive_some()
                assert "handshake" in (err + out.decode(errors="replace")).lower()
