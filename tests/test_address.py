"""Addresses: parse_address, str() round trips, validation, address_from_sockaddr."""

from __future__ import annotations

import socket

import attrs
import pytest

import trioqio
from trioqio import FdAddress, InetAddress, UnixAddress, VsockAddress

GOOD = [
    ("tcp:127.0.0.1:0", InetAddress("127.0.0.1", 0), "tcp:127.0.0.1:0"),
    ("tcp:localhost:5900", InetAddress("localhost", 5900), "tcp:localhost:5900"),
    ("tcp:[::1]:65535", InetAddress("::1", 65535), "tcp:[::1]:65535"),
    ("tcp:[fe80::1%lo]:1", InetAddress("fe80::1%lo", 1), "tcp:[fe80::1%lo]:1"),
    ("localhost:80", InetAddress("localhost", 80), "tcp:localhost:80"),
    ("[::1]:4444", InetAddress("::1", 4444), "tcp:[::1]:4444"),
    ("unix:/tmp/qemu.sock", UnixAddress("/tmp/qemu.sock"), "unix:/tmp/qemu.sock"),
    ("unix:rel/path:with:colons", UnixAddress("rel/path:with:colons"), None),
    ("unix:@abstract", UnixAddress("@abstract"), "unix:@abstract"),
    ("fd:3", FdAddress(3), "fd:3"),
    ("vsock:2:1234", VsockAddress(2, 1234), "vsock:2:1234"),
    ("vsock:4294967295:4294967295", VsockAddress(0xFFFFFFFF, 0xFFFFFFFF), None),
]


@pytest.mark.parametrize(("text", "value", "canonical"), GOOD)
def test_parse_and_round_trip(
    text: str, value: trioqio.SocketAddress, canonical: str | None
) -> None:
    parsed = trioqio.parse_address(text)
    assert parsed == value
    assert str(parsed) == (canonical or text)
    assert trioqio.parse_address(str(parsed)) == parsed


BAD = [
    ("", "empty address"),
    ("tcp::80", "empty host"),
    ("[]:80", "empty host"),
    ("tcp:host:99999", "port 99999 out of range"),
    ("tcp:host:65536", "port 65536 out of range"),
    ("tcp:host:http", "port 'http' is not a number"),
    ("tcp:host:-1", "port '-1' is not a number"),
    ("tcp:host:", "empty port"),
    ("tcp:host", "missing ':PORT'"),
    ("host", "has no ':'"),
    ("tcp:[::1]", "missing ':PORT' after ']'"),
    ("tcp:[::1:80", "missing ']'"),
    ("tcp:::1:80", "must be in brackets"),
    ("tcp:bad host:80", "invalid character"),
    ("ftp:host:21", "unknown scheme 'ftp'"),
    ("http:/x", "unknown scheme 'http'"),
    ("unix:", "empty path"),
    ("unix:@", "abstract socket name after '@' is empty"),
    ("unix:/a\0b", "NUL"),
    ("fd:", "empty fd"),
    ("fd:x", "fd 'x' is not a number"),
    ("fd:-3", "fd '-3' is not a number"),
    ("vsock:2", "missing ':PORT'"),
    ("vsock:x:1", "vsock cid 'x' is not a number"),
    ("vsock:2:4294967296", "vsock port 4294967296 out of range"),
    ("hostname:", "empty port"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_parse_errors_name_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(trioqio.AddressError, match=message.replace("[", r"\[").replace("]", r"\]")):
        trioqio.parse_address(text)


def test_address_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="unknown scheme"):
        trioqio.parse_address("bogus:a:b")


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: InetAddress("", 1), "empty host"),
        (lambda: InetAddress("h", -1), "port -1 out of range"),
        (lambda: InetAddress("h", 70000), "port 70000 out of range"),
        (lambda: InetAddress("h", True), "port must be an integer"),
        # The run-time checks of what the types already refuse:
        (lambda: InetAddress("h", "80"), "port must be an integer"),  # type: ignore[arg-type]
        (lambda: InetAddress(b"h", 80), "host must be a str"),  # type: ignore[arg-type]
        (lambda: InetAddress("[::1]", 80), "invalid character"),
        (lambda: UnixAddress("a\0b"), "NUL"),
        (lambda: UnixAddress("@"), "empty"),
        (lambda: UnixAddress(3), "path must be a str"),  # type: ignore[arg-type]
        (lambda: FdAddress(-1), "fd -1 out of range"),
        (lambda: VsockAddress(-1, 1), "vsock cid -1 out of range"),
        (lambda: VsockAddress(1, 2**32), "vsock port 4294967296 out of range"),
    ],
)
def test_constructors_validate(factory: object, message: str) -> None:
    assert callable(factory)
    with pytest.raises(trioqio.AddressError, match=message.replace("[", r"\[")):
        factory()


def test_values_are_frozen_and_hashable() -> None:
    addr = InetAddress("::1", 5)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        addr.port = 6  # type: ignore[misc]  # the point of the test
    assert len({addr, InetAddress("::1", 5), UnixAddress("/x"), UnixAddress("/x")}) == 2
    assert UnixAddress("@x").abstract
    assert not UnixAddress("/x").abstract


def test_as_address_accepts_both_forms() -> None:
    value = UnixAddress("/run/x.sock")
    assert trioqio.as_address(value) is value
    assert trioqio.as_address("unix:/run/x.sock") == value
    with pytest.raises(TypeError, match="int"):
        trioqio.as_address(3)  # type: ignore[arg-type]  # wrong type on purpose
    with pytest.raises(trioqio.AddressError):
        trioqio.as_address("tcp:x")


def test_socket_address_alias_covers_all_kinds() -> None:
    for value in (InetAddress("a", 1), UnixAddress("/a"), FdAddress(1), VsockAddress(1, 1)):
        assert isinstance(value, trioqio.SocketAddress)


def test_from_sockaddr_inet_families() -> None:
    assert trioqio.address_from_sockaddr(socket.AF_INET, ("127.0.0.1", 80)) == InetAddress(
        "127.0.0.1", 80
    )
    assert trioqio.address_from_sockaddr(socket.AF_INET6, ("::1", 81, 0, 0)) == InetAddress(
        "::1", 81
    )
    # The scope is dropped when zero, kept (or added) when needed.
    assert trioqio.address_from_sockaddr(socket.AF_INET6, ("fe80::1%2", 82, 0, 0)) == InetAddress(
        "fe80::1", 82
    )
    assert trioqio.address_from_sockaddr(socket.AF_INET6, ("fe80::1%lo", 83, 0, 1)) == InetAddress(
        "fe80::1%lo", 83
    )
    assert trioqio.address_from_sockaddr(socket.AF_INET6, ("fe80::1", 84, 0, 3)) == InetAddress(
        "fe80::1%3", 84
    )


def test_from_sockaddr_unix_forms() -> None:
    assert trioqio.address_from_sockaddr(socket.AF_UNIX, "/tmp/s") == UnixAddress("/tmp/s")
    assert trioqio.address_from_sockaddr(socket.AF_UNIX, b"/tmp/s") == UnixAddress("/tmp/s")
    assert trioqio.address_from_sockaddr(socket.AF_UNIX, b"\0name") == UnixAddress("@name")
    assert trioqio.address_from_sockaddr(socket.AF_UNIX, "\0name") == UnixAddress("@name")
    assert trioqio.address_from_sockaddr(socket.AF_UNIX, "") == UnixAddress("")
    assert trioqio.address_from_sockaddr(socket.AF_UNIX, b"") == UnixAddress("")
    assert str(UnixAddress("")) == "unix:"


def test_from_sockaddr_real_sockets(tmp_path: object) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(b"\0trioqio-test-abstract")
        assert trioqio.address_from_sockaddr(
            listener.family, listener.getsockname()
        ) == UnixAddress("@trioqio-test-abstract")
    left, right = socket.socketpair()
    with left, right:
        assert trioqio.address_from_sockaddr(left.family, left.getsockname()) == UnixAddress("")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        addr = trioqio.address_from_sockaddr(sock.family, sock.getsockname())
        assert isinstance(addr, InetAddress)
        assert addr.host == "127.0.0.1"
        assert addr.port == sock.getsockname()[1]


def test_from_sockaddr_vsock() -> None:
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        pytest.skip("socket.AF_VSOCK is not defined on this platform")
    assert trioqio.address_from_sockaddr(family, (2, 1234)) == VsockAddress(2, 1234)


def test_from_sockaddr_errors() -> None:
    with pytest.raises(trioqio.AddressError, match="unsupported address family"):
        trioqio.address_from_sockaddr(socket.AF_PACKET, ("lo", 0))
    with pytest.raises(trioqio.AddressError, match="unexpected socket address"):
        trioqio.address_from_sockaddr(socket.AF_INET, ("127.0.0.1",))
    with pytest.raises(trioqio.AddressError, match="unexpected AF_UNIX"):
        trioqio.address_from_sockaddr(socket.AF_UNIX, 42)
