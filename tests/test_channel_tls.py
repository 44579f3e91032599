"""TLSChannel: QEMU's tests/unit/test-io-channel-tls.c and the failure cases around it."""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import trioqio
from trioqio._tls_acl import TLSAcl, certificate_dn
from trioqio.testing import check_channel, run_data_test

HOST = "qemu.org"
ACL = ["C=UK,CN=qemu*"]


# -- certificates ---------------------------------------------------------------------


def _client_cert(ca: trustme.CA, country: str, common_name: str) -> tuple[bytes, bytes]:
    """Issue a client certificate with subject ``C=<country>, CN=<cn>`` (trustme has no C=)."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        # Python 3.13 verifies with VERIFY_X509_STRICT: key identifiers are required.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()  # type: ignore[arg-type]  # an EC CA key
            ),
            False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]  # an EC CA key
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *, require_client: bool = True, **issue: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST, **issue).configure_cert(ctx)
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(ctx)
    return ctx


def client_context(
    ca: trustme.CA, tmp_path: Any = None, *, dn: tuple[str, str] | None = ("UK", "qemu")
) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if dn is not None:
        cert_pem, key_pem = _client_cert(ca, *dn)
        with trustme.Blob(cert_pem).tempfile() as cert, trustme.Blob(key_pem).tempfile() as key:
            ctx.load_cert_chain(cert, key)
    return ctx


async def socket_pair() -> tuple[trioqio.SocketChannel, trioqio.SocketChannel]:
    a, b = trio.socket.socketpair()
    return trioqio.SocketChannel(a), trioqio.SocketChannel(b)


async def tls_pair(
    ca: trustme.CA,
    *,
    server_ctx: ssl.SSLContext | None = None,
    client_ctx: ssl.SSLContext | None = None,
    hostname: str = HOST,
    acl: list[str] | None = ACL,
    handshake: bool = True,
    **kwargs: Any,
) -> tuple[trioqio.TLSChannel, trioqio.TLSChannel]:
    a, b = await socket_pair()
    client = trioqio.TLSChannel.client(
        a, client_ctx or client_context(ca), hostname=hostname, **kwargs
    )
    server = trioqio.TLSChannel.server(b, server_ctx or server_context(ca), acl=acl, **kwargs)
    if handshake:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.handshake)
            nursery.start_soon(server.handshake)
    return client, server


@pytest.fixture
async def pair(ca: trustme.CA) -> AsyncIterator[tuple[trioqio.TLSChannel, trioqio.TLSChannel]]:
    client, server = await tls_pair(ca)
    yield client, server
    await client.aclose()
    await server.aclose()


async def expect_failed_handshakes(
    client: trioqio.TLSChannel, server: trioqio.TLSChannel
) -> tuple[BaseException | None, BaseException | None]:
    """Run both handshakes; return each side's error (None if it succeeded)."""
    errors: dict[str, BaseException | None] = {"client": None, "server": None}

    async def run(side: str, tls: trioqio.TLSChannel) -> None:
        try:
            await tls.handshake()
        except trioqio.HandshakeError as exc:
            errors[side] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "client", client)
            nursery.start_soon(run, "server", server)
    return errors["client"], errors["server"]


# -- QEMU /qio/channel/tls/basic ------------------------------------------------------


async def test_basic_handshake_then_data_both_ways(
    pair: tuple[trioqio.TLSChannel, trioqio.TLSChannel],
) -> None:
    client, server = pair
    assert client.handshake_done
    assert server.handshake_done
    assert server.peer_dn == "C=UK,CN=qemu"
    assert client.peer_dn is not None
    await run_data_test(client, server)
    await run_data_test(server, client, writev=False)


async def test_handshake_tasks_complete_once_in_trio_thread(ca: trustme.CA) -> None:
    client, server = await tls_pair(ca, handshake=False)
    trio_thread = threading.get_ident()
    calls: list[tuple[str, int, object]] = []

    def on_complete(task: trioqio.Task[trioqio.TLSChannel]) -> None:
        task.propagate_error()
        calls.append((str(task.name), threading.get_ident(), task.result))

    async with trio.open_nursery() as nursery:
        ctask = client.handshake_task(nursery, on_complete)
        stask = server.handshake_task(nursery, on_complete)
    assert ctask.done
    assert stask.done
    assert sorted(calls, key=lambda c: id(c[2])) == sorted(
        [("tls-handshake", trio_thread, client), ("tls-handshake", trio_thread, server)],
        key=lambda c: id(c[2]),
    )
    assert await ctask.wait() is client
    assert ctask.source is client
    await run_data_test(client, server)
    await client.aclose()
    await server.aclose()


async def test_handshake_task_reports_failure_and_cancellation(ca: trustme.CA) -> None:
    client, server = await tls_pair(ca, hostname="wrong.example", handshake=False)
    seen: list[BaseException | None] = []

    async def on_complete(task: trioqio.Task[trioqio.TLSChannel]) -> None:
        await trio.lowlevel.checkpoint()
        seen.append(task.error)

    async with trio.open_nursery() as nursery:
        ctask = client.handshake_task(nursery, on_complete)
        stask = server.handshake_task(nursery, on_complete)
    assert len(seen) == 2
    assert isinstance(ctask.error, trioqio.HandshakeError)
    assert isinstance(stask.error, trioqio.HandshakeError)
    with pytest.raises(trioqio.HandshakeError, match="Hostname mismatch"):
        await ctask.wait()

    # Cancelled before the (stalled) peer answers: completion runs once, TaskCancelled.
    a, b = await socket_pair()
    stalled = trioqio.TLSChannel.server(b, server_context(ca))
    cancelled: list[BaseException | None] = []
    async with trio.open_nursery() as nursery:
        task = stalled.handshake_task(nursery, lambda t: cancelled.append(t.error))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert len(cancelled) == 1
    assert isinstance(cancelled[0], trioqio.TaskCancelled)
    assert task.done
    await stalled.aclose()
    await a.aclose()
    await client.aclose()
    await server.aclose()


async def test_check_channel_conformance(ca: trustme.CA) -> None:
    client_ctx = client_context(ca)
    server_ctx = server_context(ca)

    async def make() -> tuple[trioqio.TLSChannel, trioqio.TLSChannel]:
        return await tls_pair(ca, client_ctx=client_ctx, server_ctx=server_ctx)

    await check_channel(make)


# -- failures -------------------------------------------------------------------------


async def test_wrong_hostname(ca: trustme.CA) -> None:
    client, server = await tls_pair(ca, hostname="wrong.example", handshake=False)
    cerr, serr = await expect_failed_handshakes(client, server)
    assert isinstance(cerr, trioqio.HandshakeError)
    assert "Hostname mismatch" in str(cerr)
    assert serr is not None  # the server hears the client's alert, or EOF
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"x")
    await client.aclose()
    await client.aclose()  # idempotent
    await server.aclose()


async def test_untrusted_ca(ca: trustme.CA) -> None:
    other = trustme.CA()
    client, server = await tls_pair(
        ca, server_ctx=server_context(other, require_client=False), acl=None, handshake=False
    )
    cerr, _ = await expect_failed_handshakes(client, server)
    assert isinstance(cerr, trioqio.HandshakeError)
    assert "unable to get local issuer certificate" in str(cerr)
    await client.aclose()
    await server.aclose()


async def test_expired_certificate(ca: trustme.CA) -> None:
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)
    ctx = server_context(
        ca, require_client=False, not_before=past - datetime.timedelta(days=1), not_after=past
    )
    client, server = await tls_pair(ca, server_ctx=ctx, acl=None, handshake=False)
    cerr, _ = await expect_failed_handshakes(client, server)
    assert isinstance(cerr, trioqio.HandshakeError)
    assert "expired" in str(cerr)
    await client.aclose()
    await server.aclose()


async def test_client_without_certificate_where_required(ca: trustme.CA) -> None:
    client, server = await tls_pair(
        ca, client_ctx=client_context(ca, dn=None), acl=None, handshake=False
    )
    cerr, serr = await expect_failed_handshakes(client, server)
    assert isinstance(serr, trioqio.HandshakeError)
    assert "certificate" in str(serr)
    if cerr is None:
        # TLS 1.3: the client finishes first and learns of the refusal on its next read.
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()
    await client.aclose()
    await server.aclose()


async def test_acl_deny_names_the_dn(ca: trustme.CA) -> None:
    client, server = await tls_pair(
        ca, client_ctx=client_context(ca, dn=("UK", "mallory")), handshake=False
    )
    cerr, serr = await expect_failed_handshakes(client, server)
    assert isinstance(serr, trioqio.HandshakeError)
    assert "'C=UK,CN=mallory' is not allowed by the ACL" in str(serr)
    assert server.peer_dn == "C=UK,CN=mallory"
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()
    if cerr is None:
        # The server tore the connection down: the client sees no clean end of file, and
        # is told it may have been refused, not to relax the EOF check (issue 16).
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.receive_some()
        if isinstance(info.value, trioqio.UnexpectedEOF):
            assert "right after the handshake" in str(info.value)
            assert "may have refused this client" in str(info.value)
            assert "relaxed_eof" not in str(info.value)
    await client.aclose()
    await server.aclose()


async def test_ragged_eof_before_any_data_suggests_a_refusal(
    pair: tuple[trioqio.TLSChannel, trioqio.TLSChannel],
) -> None:
    client, server = pair
    await server.master.aclose()  # no close_notify, nothing sent: a refusal's shape
    with pytest.raises(trioqio.UnexpectedEOF, match="may have refused this client") as info:
        await client.receive_some()
    assert "relaxed_eof" not in str(info.value)


@pytest.mark.parametrize(
    ("dn", "allowed"),
    [(("UK", "qemu"), True), (("UK", "qemu-client7"), True), (("US", "qemu"), False)],
)
async def test_acl_glob(ca: trustme.CA, dn: tuple[str, str], allowed: bool) -> None:
    client, server = await tls_pair(ca, client_ctx=client_context(ca, dn=dn), handshake=False)
    _, serr = await expect_failed_handshakes(client, server)
    assert (serr is None) == allowed
    await client.aclose()
    await server.aclose()


async def test_acl_without_client_verification_denies(ca: trustme.CA) -> None:
    client, server = await tls_pair(
        ca, server_ctx=server_context(ca, require_client=False), handshake=False
    )
    _, serr = await expect_failed_handshakes(client, server)
    assert isinstance(serr, trioqio.HandshakeError)
    assert "requires a verified client certificate" in str(serr)
    await client.aclose()
    await server.aclose()


async def test_garbage_instead_of_client_hello(ca: trustme.CA) -> None:
    a, b = await socket_pair()
    server = trioqio.TLSChannel.server(b, server_context(ca))
    await a.send_all(b"GET / HTTP/1.1\r\nHost: qemu.org\r\n\r\n")
    with pytest.raises(trioqio.HandshakeError, match="TLS handshake failed"):
        await server.handshake()
    assert await a.receive_some(1024) is not None  # an alert or EOF; no hang
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()
    await server.aclose()
    await a.aclose()


def _client_hello() -> bytes:
    ctx = ssl.create_default_context()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


@pytest.mark.parametrize("sent", ["nothing", "half a ClientHello"])
async def test_peer_stalling_mid_handshake_times_out(
    ca: trustme.CA, autojump_clock: trio.testing.MockClock, sent: str
) -> None:
    a, b = await socket_pair()
    server = trioqio.TLSChannel.server(b, server_context(ca), handshake_timeout=5)
    if sent != "nothing":
        hello = _client_hello()
        await a.send_all(hello[: len(hello) // 2])
    start = trio.current_time()
    with pytest.raises(trioqio.HandshakeError, match="did not finish within 5"):
        await server.handshake()
    assert trio.current_time() - start == pytest.approx(5)
    assert await a.receive_some(10) == b""  # master closed on failure
    await server.aclose()
    await a.aclose()


def test_handshake_timeout_must_be_positive(ca: trustme.CA) -> None:
    a, b = trio.socket.socketpair()
    with a, b, pytest.raises(ValueError, match="handshake_timeout"):
        trioqio.TLSChannel.server(trioqio.SocketChannel(b), server_context(ca), handshake_timeout=0)


# -- end of file ----------------------------------------------------------------------


async def test_peer_closing_without_close_notify_is_an_error(
    pair: tuple[trioqio.TLSChannel, trioqio.TLSChannel],
) -> None:
    client, server = pair
    await server.send_all(b"last words")
    await server.master.aclose()  # no close_notify
    assert await client.receive_exactly(10) == b"last words"
    with pytest.raises(trioqio.UnexpectedEOF, match="without a TLS close_notify"):
        await client.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()


async def test_relaxed_eof_per_read(pair: tuple[trioqio.TLSChannel, trioqio.TLSChannel]) -> None:
    client, server = pair
    await server.send_all(b"last words")
    await server.master.aclose()
    assert await client.receive_exactly(10) == b"last words"
    assert await client.receive_some(relaxed_eof=True) == b""
    assert await client.receive_some() == b""


async def test_relaxed_eof_constructor(ca: trustme.CA) -> None:
    client, server = await tls_pair(ca, relaxed_eof=True)
    await server.master.aclose()
    assert await client.receive_some() == b""
    await client.aclose()
    await server.aclose()


async def test_bye_gives_peer_clean_eof_and_keeps_reading(
    pair: tuple[trioqio.TLSChannel, trioqio.TLSChannel],
) -> None:
    client, server = pair
    await client.send_all(b"request")
    await client.bye()
    await client.bye()  # idempotent
    assert await server.receive_exactly(7) == b"request"
    assert await server.receive_some() == b""
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"more")
    await server.send_all(b"reply after bye")
    assert await client.receive_exactly(15) == b"reply after bye"
    await server.bye()
    assert await client.receive_some() == b""


async def test_bye_with_unread_data_pending(
    pair: tuple[trioqio.TLSChannel, trioqio.TLSChannel],
) -> None:
    client, server = pair
    await server.send_all(b"a" * 100_000)
    await trio.testing.wait_all_tasks_blocked()
    assert len(await client.receive_some(10)) == 10  # the rest is buffered inside the client
    await client.bye()
    assert await server.receive_some() == b""
    assert await client.receive_exactly(99_990) == b"a" * 99_990
    await server.bye()
    assert await client.receive_some() == b""


async def test_aclose_sends_close_notify(
    pair: tuple[trioqio.TLSChannel, trioqio.TLSChannel],
) -> None:
    client, server = pair
    await client.aclose()
    assert await server.receive_some() == b""
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some()


# -- lifecycle: OPEN, BROKEN, CLOSED, and the flags beside them -------------------------


async def test_broken_then_closed(pair: tuple[trioqio.TLSChannel, trioqio.TLSChannel]) -> None:
    client, server = pair
    await server.master.aclose()  # no close_notify: the client's session breaks on read
    with pytest.raises(trioqio.UnexpectedEOF):
        await client.receive_some()
    for broken_call in (client.send_all(b"x"), client.bye(), client.receive_some()):
        with pytest.raises(trio.BrokenResourceError, match="is broken"):
            await broken_call
    await client.aclose()  # a broken session sends no close_notify; the master closes
    master = client.master
    assert isinstance(master, trioqio.SocketChannel)
    assert master.socket.fileno() == -1
    # CLOSED wins over BROKEN, and the handshake stays done (a fact, not a state).
    for closed_call in (client.send_all(b"x"), client.bye(), client.receive_some()):
        with pytest.raises(trio.ClosedResourceError, match="is closed"):
            await closed_call
    assert client.handshake_done
    await client.handshake()  # done once: a no-op, even now
    await client.aclose()  # idempotent


async def test_eof_directions_are_independent(
    pair: tuple[trioqio.TLSChannel, trioqio.TLSChannel],
) -> None:
    client, server = pair
    await server.bye()  # the server's EOF first ...
    assert await client.receive_some() == b""
    await client.send_all(b"still sending")  # ... the client's direction is untouched
    assert await server.receive_exactly(13) == b"still sending"
    await client.bye()
    assert await server.receive_some() == b""
    assert await client.receive_some() == b""  # a remembered EOF, again


async def drain(channel: trioqio.TLSChannel) -> None:
    while await channel.receive_some():
        pass


async def test_close_notify_is_not_sent_mid_send(ca: trustme.CA) -> None:
    # aclose() while a sender holds the send lock (blocked on a full master) must not add
    # a record behind a half-sent one: the close is abrupt, and the sender is told.
    client, server = await tls_pair(ca)
    errors: list[BaseException] = []

    async def send_forever() -> None:
        try:
            while True:
                await client.send_all(b"x" * 65536)
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_forever)
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        await client.aclose()
        # A close_notify queued behind the sender would wait out aclose's 0.5 s for the
        # send lock; the abrupt close takes no time at all.
        assert trio.current_time() - started < 0.4
    assert errors
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"x")
    # The server sees the stream cut off (no close_notify), not a clean end of file.
    with pytest.raises(trioqio.UnexpectedEOF):
        await drain(server)
    await server.aclose()


async def test_concurrent_calls_are_busy(
    pair: tuple[trioqio.TLSChannel, trioqio.TLSChannel],
) -> None:
    client, server = pair
    with pytest.RaisesGroup(
        pytest.RaisesExc(
            trio.BusyResourceError, match="^another task is already receiving on this TLS channel$"
        )
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some)
            nursery.start_soon(client.receive_some)
    await server.send_all(b"x")  # the first reader, cancelled with the nursery, lost nothing
    assert await client.receive_some() == b"x"


# -- features, forwarding, ACL helpers ------------------------------------------------


async def test_features_copy_shutdown_only(
    pair: tuple[trioqio.TLSChannel, trioqio.TLSChannel],
) -> None:
    client, server = pair
    assert trioqio.ChannelFeature.SHUTDOWN in client.master.features
    assert client.features == trioqio.ChannelFeature.SHUTDOWN
    with pytest.raises(trioqio.UnsupportedFeature, match="READ_MSG_PEEK"):
        await client.peek(1)
    with pytest.raises(trioqio.UnsupportedFeature, match="FD_PASS"):
        await client.send_with_fds(b"x", [0])
    client.set_delay(False)
    client.set_cork(False)
    await server.shutdown(trioqio.Shutdown.READ)
    await client.master.aclose()
    # After a read shutdown a missing close_notify counts as end of file (QEMU).
    assert await server.receive_some() == b""


async def test_receive_some_checks_max_bytes(
    pair: tuple[trioqio.TLSChannel, trioqio.TLSChannel],
) -> None:
    client, _ = pair
    with pytest.raises(ValueError, match="max_bytes"):
        await client.receive_some(0)


def test_master_must_be_a_stream(ca: trustme.CA) -> None:
    bogus: Callable[..., Any] = trioqio.TLSChannel.client
    with pytest.raises(TypeError, match="master must be"):
        bogus(object(), client_context(ca, dn=None), hostname=HOST)


def test_certificate_dn_layout_and_escaping() -> None:
    cert = {
        "subject": (
            (("countryName", "UK"),),
            (("organizationName", "Acme, Inc"),),
            (("commonName", "qemu"), ("userId", "7")),
            (("1.2.3.4", " x"),),
        )
    }
    assert certificate_dn(cert) == "C=UK,O=Acme\\, Inc,CN=qemu+UID=7,1.2.3.4=\\ x"
    assert certificate_dn({}) == ""


def test_tls_acl_rules() -> None:
    acl = TLSAcl(["C=UK,CN=qemu*"], deny=["*CN=qemu-bad"])
    assert acl.allows("C=UK,CN=qemu")
    assert not acl.allows("C=UK,CN=qemu-bad")
    assert not acl.allows("C=FR,CN=qemu")
    assert not TLSAcl([]).allows("C=UK,CN=qemu")  # default deny
    assert TLSAcl.coerce(acl) is acl
    assert TLSAcl.coerce(["a"]) == TLSAcl(("a",))
    with pytest.raises(TypeError, match="single string"):
        TLSAcl.coerce("C=UK,CN=qemu*")
    with pytest.raises(TypeError, match="strings"):
        TLSAcl.coerce([1])  # type: ignore[list-item]  # the error under test
