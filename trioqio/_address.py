"""Socket addresses (QEMU ``util/qemu-sockets.c``: ``SocketAddress``, ``inet_parse``).

QEMU describes where to listen or connect with a QAPI ``SocketAddress`` union (``inet``,
``unix``, ``fd``, ``vsock``) and parses the legacy text forms (``tcp:host:port``,
``unix:/path``, ``fd:name``, ``vsock:cid:port``) with ``socket_parse``. trioqio keeps the
four kinds as frozen attrs values and the same text forms; ``str()`` gives the text back.

Differences from QEMU: ports are numbers only (no service names), an ``fd:`` address
names a descriptor number rather than a monitor fd name, ``inet`` options such as
``ipv4=on``, ``to=`` port ranges and ``keep-alive`` are not part of the address, and the
constructors validate, so a malformed value cannot exist.
"""

from __future__ import annotations

import os
import socket
import typing
from typing import TypeAlias

import attrs

from ._errors import AddressError

__all__ = [
    "FdAddress",
    "InetAddress",
    "SocketAddress",
    "UnixAddress",
    "VsockAddress",
    "address_from_sockaddr",
    "as_address",
    "parse_address",
]

_MAX_PORT = 65535
_MAX_U32 = 0xFFFFFFFF
_MAX_DIGITS = 32  # longer than any port, cid or fd, even zero-padded
_SCHEMES = ("tcp", "unix", "fd", "vsock")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    # bool is an int subclass; a port of True is a bug, not a port.
    if not isinstance(value, int) or isinstance(value, bool):
        raise AddressError(f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise AddressError(f"{name} {value} out of range {low}..{high}")


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise AddressError(f"{name} must be a str, not {type(value).__name__}")


def _validate_host(_instance: object, _attribute: object, value: str) -> None:
    _check_str("host", value)
    if not value:
        raise AddressError("empty host")
    bad = next((ch for ch in value if ch.isspace() or ch in "[]/\0"), None)
    if bad is not None:
        raise AddressError(f"host {value!r} contains the invalid character {bad!r}")


def _validate_port(_instance: object, _attribute: object, value: int) -> None:
    _check_int("port", value, 0, _MAX_PORT)


def _validate_path(_instance: object, _attribute: object, value: str) -> None:
    _check_str("path", value)
    if "\0" in value:
        raise AddressError(f"path {value!r} contains a NUL character")
    if value == "@":
        raise AddressError("abstract socket name after '@' is empty")


def _validate_fd(_instance: object, _attribute: object, value: int) -> None:
    _check_int("fd", value, 0, 2**31 - 1)


def _validate_cid(_instance: object, _attribute: object, value: int) -> None:
    _check_int("vsock cid", value, 0, _MAX_U32)


def _validate_vsock_port(_instance: object, _attribute: object, value: int) -> None:
    _check_int("vsock port", value, 0, _MAX_U32)


@typing.final
@attrs.frozen
class InetAddress:
    """A TCP address: a host name or numeric IPv4/IPv6 address and a port.

    ``str()`` gives ``tcp:HOST:PORT``, with IPv6 hosts in brackets.

    QEMU: ``InetSocketAddress`` (``SOCKET_ADDRESS_TYPE_INET``).

    Attributes:
        host: a name (``"localhost"``) or numeric address (``"::1"``, no brackets).
        port: 0..65535; 0 asks the system for a free port when listening.

    Raises:
        AddressError: an empty host, or a port that is not an int in 0..65535.

    Example::

        addr = trioqio.InetAddress("::1", 4444)
        assert str(addr) == "tcp:[::1]:4444"
    """

    host: str = attrs.field(validator=_validate_host)
    port: int = attrs.field(validator=_validate_port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


@typing.final
@attrs.frozen
class UnixAddress:
    """A UNIX domain socket address: a filesystem path, or ``@name`` (Linux abstract).

    ``str()`` gives ``unix:PATH``. The empty path is the unnamed address a connected
    client socket usually has; it can be reported but not listened on.

    QEMU: ``UnixSocketAddress`` (``abstract=true`` is spelled with a leading ``@``).

    Attributes:
        path: the socket's path, ``"@name"`` for the abstract namespace, or ``""``.

    Raises:
        AddressError: the path contains NUL, or is ``"@"`` alone.

    Example::

        assert str(trioqio.UnixAddress("@qemu-mig")) == "unix:@qemu-mig"
    """

    path: str = attrs.field(validator=_validate_path)

    @property
    def abstract(self) -> bool:
        """True for a Linux abstract-namespace name (``@name``)."""
        return self.path.startswith("@")

    def __str__(self) -> str:
        return f"unix:{self.path}"


@typing.final
@attrs.frozen
class FdAddress:
    """An already open socket, inherited by descriptor number.

    QEMU: ``SOCKET_ADDRESS_TYPE_FD`` (QEMU also accepts monitor fd names; trioqio takes
    numbers only).

    Attributes:
        fd: a descriptor number, ``>= 0``.

    Raises:
        AddressError: a negative or non-integer fd.

    Example::

        assert str(trioqio.FdAddress(3)) == "fd:3"
    """

    fd: int = attrs.field(validator=_validate_fd)

    def __str__(self) -> str:
        return f"fd:{self.fd}"


@typing.final
@attrs.frozen
class VsockAddress:
    """A virtio-vsock address: context id and port.

    QEMU: ``VsockSocketAddress``.

    Attributes:
        cid: context id (2 is the host, ``VMADDR_CID_ANY`` is 0xFFFFFFFF).
        port: 0..0xFFFFFFFF.

    Raises:
        AddressError: a cid or port outside the 32-bit range.

    Example::

        assert str(trioqio.VsockAddress(2, 1234)) == "vsock:2:1234"
    """

    cid: int = attrs.field(validator=_validate_cid)
    port: int = attrs.field(validator=_validate_vsock_port)

    def __str__(self) -> str:
        return f"vsock:{self.cid}:{self.port}"


#: Any of the four address kinds (QEMU's QAPI ``SocketAddress`` union).
#:
#: Functions that take an address accept this union (or its text form through
#: :func:`as_address`); ``isinstance`` on a member class tells the kinds apart.
#:
#: Example::
#:
#:     def describe(addr: trioqio.SocketAddress) -> str:
#:         if isinstance(addr, trioqio.InetAddress):
#:             return f"TCP port {addr.port}"
#:         return str(addr)
SocketAddress: TypeAlias = InetAddress | UnixAddress | FdAddress | VsockAddress
_ADDRESS_TYPES = (InetAddress, UnixAddress, FdAddress, VsockAddress)


def _parse_number(what: str, text: str, whole: str) -> int:
    if not text:
        raise AddressError(f"empty {what} in address {whole!r}")
    if not text.isdecimal() or not text.isascii():
        raise AddressError(f"{what} {text!r} is not a number in address {whole!r}")
    if len(text) > _MAX_DIGITS:
        # int() refuses over 4300 digits with a plain ValueError; no valid number is this long.
        raise AddressError(f"{what} {text[:20]}... ({len(text)} digits) out of range in address")
    return int(text)


def _parse_inet(rest: str, whole: str) -> InetAddress:
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise AddressError(f"missing ']' after the IPv6 host in address {whole!r}")
        host = rest[1:close]
        after = rest[close + 1 :]
        if not after.startswith(":"):
            raise AddressError(f"missing ':PORT' after ']' in address {whole!r}")
        port_text = after[1:]
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise AddressError(f"missing ':PORT' in address {whole!r}")
        if ":" in host:
            raise AddressError(f"IPv6 host {host!r} must be in brackets in address {whole!r}")
    if not host:
        raise AddressError(f"empty host in address {whole!r}")
    port = _parse_number("port", port_text, whole)
    if port > _MAX_PORT:
        raise AddressError(f"port {port} out of range 0..{_MAX_PORT} in address {whole!r}")
    try:
        return InetAddress(host, port)
    except AddressError as exc:
        raise AddressError(f"{exc} in address {whole!r}") from None


def parse_address(text: str) -> SocketAddress:
    """Parse the text form of an address.

    Accepted forms: ``tcp:HOST:PORT``, ``tcp:[IPV6]:PORT``, bare ``HOST:PORT`` or
    ``[IPV6]:PORT`` (meaning tcp), ``unix:PATH``, ``unix:@NAME`` (Linux abstract),
    ``fd:N``, ``vsock:CID:PORT``.

    QEMU: ``socket_parse`` / ``inet_parse``.

    Args:
        text: the address text.

    Returns:
        An :class:`InetAddress`, :class:`UnixAddress`, :class:`FdAddress` or
        :class:`VsockAddress`.

    Raises:
        AddressError: the message names the bad part (empty host, port not a number or
            out of range, unknown scheme, empty path, ...).

    Example::

        assert trioqio.parse_address("localhost:80") == trioqio.InetAddress("localhost", 80)
    """
    if not isinstance(text, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise AddressError(f"address must be a str, not {type(text).__name__}")
    if not text:
        raise AddressError("empty address")
    scheme, sep, rest = text.partition(":")
    if not sep:
        raise AddressError(f"address {text!r} has no ':' (expected SCHEME:... or HOST:PORT)")
    if scheme == "tcp":
        return _parse_inet(rest, text)
    if scheme == "unix":
        if not rest:
            raise AddressError(f"empty path in address {text!r}")
        try:
            return UnixAddress(rest)
        except AddressError as exc:
            raise AddressError(f"{exc} in address {text!r}") from None
    if scheme == "fd":
        return FdAddress(_parse_number("fd", rest, text))
    if scheme == "vsock":
        cid_text, sep, port_text = rest.partition(":")
        if not sep:
            raise AddressError(f"missing ':PORT' in vsock address {text!r}")
        cid = _parse_number("vsock cid", cid_text, text)
        port = _parse_number("vsock port", port_text, text)
        try:
            return VsockAddress(cid, port)
        except AddressError as exc:
            raise AddressError(f"{exc} in address {text!r}") from None
    if text.startswith("["):
        return _parse_inet(text, text)
    if rest.count(":") >= 1:
        # "foo:bar:1" cannot be HOST:PORT (the host would need brackets).
        raise AddressError(
            f"unknown scheme {scheme!r} in address {text!r} (expected one of {_SCHEMES})"
        )
    if scheme.isalpha() and rest[:1] in ("/", "@"):
        raise AddressError(
            f"unknown scheme {scheme!r} in address {text!r} (expected one of {_SCHEMES})"
        )
    return _parse_inet(text, text)


def as_address(address: str | SocketAddress) -> SocketAddress:
    """Return ``address`` as an address value, parsing it if it is text.

    Args:
        address: a text form (see :func:`parse_address`) or an address value.

    Returns:
        The address value.

    Raises:
        AddressError: malformed text.
        TypeError: neither a str nor an address value.

    Example::

        assert trioqio.as_address("fd:3") == trioqio.FdAddress(3)
    """
    if isinstance(address, str):
        return parse_address(address)
    if isinstance(address, _ADDRESS_TYPES):  # pyright: ignore[reportUnnecessaryIsInstance]
        return address
    raise TypeError(f"expected an address or its text form, not {type(address).__name__}")


def address_from_sockaddr(family: int, sockaddr: object) -> SocketAddress:
    """Convert what ``getsockname()``/``getpeername()`` returned into an address value.

    IPv6 hosts lose a ``%scope`` suffix unless the scope id is non-zero (link-local);
    Linux abstract names (``b"\\0name"``) become ``@name``; an unnamed UNIX socket
    becomes ``UnixAddress("")``.

    QEMU: ``socket_sockaddr_to_address``.

    Args:
        family: the socket's family (``socket.AF_INET``, ``AF_INET6``, ``AF_UNIX``,
            ``AF_VSOCK``).
        sockaddr: the value the socket module returned.

    Returns:
        The address value.

    Raises:
        AddressError: an unsupported family or a value of the wrong shape.

    Example::

        addr = trioqio.address_from_sockaddr(sock.family, sock.getsockname())
    """
    try:
        if family == socket.AF_INET:
            host, port = typing.cast("tuple[str, int]", sockaddr)
            return InetAddress(host, port)
        if family == socket.AF_INET6:
            host, port, _flow, scope = typing.cast("tuple[str, int, int, int]", sockaddr)
            base, _, _ = host.partition("%")
            if not scope:
                host = base
            elif "%" not in host:
                host = f"{base}%{scope}"
            return InetAddress(host, port)
        if family == socket.AF_UNIX:
            if isinstance(sockaddr, bytes):
                if sockaddr.startswith(b"\0"):
                    name = sockaddr[1:].decode("utf-8", "surrogateescape")
                    return UnixAddress(f"@{name}") if name else UnixAddress("")
                return UnixAddress(os.fsdecode(sockaddr))
            if isinstance(sockaddr, str):
                if sockaddr.startswith("\0"):
                    return UnixAddress(f"@{sockaddr[1:]}") if sockaddr[1:] else UnixAddress("")
                return UnixAddress(sockaddr)
            raise AddressError(f"unexpected AF_UNIX socket address {sockaddr!r}")
        if family == getattr(socket, "AF_VSOCK", -1):
            cid, port = typing.cast("tuple[int, int]", sockaddr)
            return VsockAddress(cid, port)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, AddressError):
            raise
        raise AddressError(f"unexpected socket address {sockaddr!r} for family {family}") from exc
    raise AddressError(f"unsupported address family {family}")
