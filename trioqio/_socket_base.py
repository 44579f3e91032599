"""Socket channel state: features, addresses, socket options (QEMU ``io/channel-socket.c``).

QEMU's ``qio_channel_socket_set_fd`` records the socket's family and addresses and decides
what the channel can do (descriptor passing on UNIX sockets, listening); ``set_delay`` and
``set_cork`` are plain ``setsockopt`` calls. :class:`SocketChannelBase` holds that part of
:class:`~trioqio.SocketChannel`: the constructor, the address and peer-credential
properties, the open/busy checks every operation makes, and the socket-option hints.

Differences from QEMU: a connected TCP socket starts with ``TCP_NODELAY`` (and
``TCP_NOTSENT_LOWAT``) as :class:`trio.SocketStream` does; there is no unopened state.
"""

from __future__ import annotations

import contextlib
import os
import socket as _stdlib_socket
import struct
from typing import TYPE_CHECKING

import trio

from ._abc import Channel, ChannelFeature
from ._address import SocketAddress, address_from_sockaddr
from ._conflict import Busy
from ._errors import UnsupportedFeature
from ._trace import emit, enabled

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["SocketChannelBase"]

_TCP_FAMILIES = (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6)
_NOTSENT_LOWAT: int | None = getattr(_stdlib_socket, "TCP_NOTSENT_LOWAT", None)


def _features(unix: bool, listening: bool) -> ChannelFeature:
    features = ChannelFeature.SHUTDOWN
    if unix:
        features |= ChannelFeature.FD_PASS
    if listening:
        return features | ChannelFeature.LISTEN
    return features | ChannelFeature.READ_MSG_PEEK


# Computed once: combining flags costs about a microsecond per operation, per client.
_FEATURES = {
    (unix, listening): _features(unix, listening)
    for unix in (False, True)
    for listening in (False, True)
}


class SocketChannelBase(Channel):
    """A stream socket wrapped as a channel: state, addresses and options (see SocketChannel)."""

    def __init__(self, sock: trio.socket.SocketType, *, name: str = "") -> None:
        if not isinstance(sock, trio.socket.SocketType):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"SocketChannel needs a Trio socket, not {type(sock).__name__}")
        if sock.type != _stdlib_socket.SOCK_STREAM:
            raise ValueError(f"SocketChannel needs a SOCK_STREAM socket, not {sock.type!r}")
        self._sock = sock
        self._setup(name, sock.family, listening=self._is_listening())

    @classmethod
    def _from_accepted(cls, sock: trio.socket.SocketType, family: int, *, name: str = "") -> Self:
        # For accept(): the kernel hands back a connected SOCK_STREAM socket of the
        # listener's family, so the type check, the family lookup and the
        # SO_ACCEPTCONN probe of __init__ would only repeat what is known.
        channel = cls.__new__(cls)
        channel._sock = sock
        channel._setup(name, family, listening=False)
        return channel

    def _setup(self, name: str, family: int, *, listening: bool) -> None:
        sock = self._sock
        self.name = name
        label = self._channel_name()
        self._send_guard = Busy(f"sending on socket channel {label!r}")
        self._receive_guard = Busy(f"receiving on socket channel {label!r}")
        self._closed = False
        self._unlink_path: str | None = None
        self._family = family
        self.features = _FEATURES[family == _stdlib_socket.AF_UNIX, listening]
        if listening:
            self._remember_path()
        elif family in _TCP_FAMILIES:
            # Trio's SocketStream defaults: no Nagle delay, a small unsent backlog.
            with contextlib.suppress(OSError):
                sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
            if _NOTSENT_LOWAT is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _NOTSENT_LOWAT, 2**14)
        if enabled():
            emit("qio_channel_socket_new", channel=self._channel_name(), fd=sock.fileno())

    def _is_listening(self) -> bool:
        try:
            return bool(
                self._sock.getsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_ACCEPTCONN)
            )
        except OSError:
            return False

    def _remember_path(self) -> None:
        if self._family != _stdlib_socket.AF_UNIX:
            return
        with contextlib.suppress(OSError):
            name = self._sock.getsockname()
            if isinstance(name, bytes):
                name = os.fsdecode(name)
            if isinstance(name, str) and name and not name.startswith("\0"):
                self._unlink_path = name

    # -- properties ----------------------------------------------------------------------

    @property
    def socket(self) -> trio.socket.SocketType:
        """The wrapped Trio socket (owned by the channel)."""
        return self._sock

    @property
    def local_address(self) -> SocketAddress:
        """The address the socket is bound to (QEMU ``get_local_address``).

        Raises:
            trio.ClosedResourceError: the channel is closed.
        """
        self._check_open()
        return address_from_sockaddr(self._family, self._sock.getsockname())

    @property
    def remote_address(self) -> SocketAddress:
        """The peer's address (QEMU ``get_remote_address``).

        Raises:
            trio.ClosedResourceError: the channel is closed.
            OSError: the socket is not connected (``ENOTCONN``), e.g. a listening one.
        """
        self._check_open()
        return address_from_sockaddr(self._family, self._sock.getpeername())

    @property
    def peer_pid(self) -> int:
        """The peer process's pid, from ``SO_PEERCRED`` (UNIX sockets only).

        QEMU: ``qio_channel_get_peerpid``.

        Raises:
            trioqio.UnsupportedFeature: not a UNIX socket.
            trio.ClosedResourceError: the channel is closed.
        """
        if self._family != _stdlib_socket.AF_UNIX or not hasattr(_stdlib_socket, "SO_PEERCRED"):
            raise UnsupportedFeature(
                "PEER_PID", self._channel_name(), "peer pid needs a UNIX socket"
            )
        self._check_open()
        raw = self._sock.getsockopt(
            _stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_PEERCRED, struct.calcsize("3i")
        )
        pid, _uid, _gid = struct.unpack("3i", raw)
        return int(pid)

    # -- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> int:
        fd = self._sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError(f"socket channel {self._channel_name()!r} is closed")
        return fd

    def set_delay(self, enabled: bool) -> None:
        """Turn Nagle's algorithm on or off (a hint; ignored off TCP).

        QEMU: ``qio_channel_set_delay``.

        Args:
            enabled: False sets ``TCP_NODELAY`` (send small writes at once).

        Raises nothing: a socket that refuses the option keeps its setting.

        Example::

            channel.set_delay(False)
        """
        if self._family in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
            with contextlib.suppress(OSError):
                self._sock.setsockopt(
                    _stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, int(not enabled)
                )

    def set_cork(self, enabled: bool) -> None:
        """Hold back partial frames with ``TCP_CORK`` (a hint; ignored off Linux TCP).

        QEMU: ``qio_channel_set_cork``.

        Args:
            enabled: True to cork, False to uncork (which flushes).

        Raises nothing: a socket that refuses the option keeps its setting.

        Example::

            channel.set_cork(True)
        """
        cork = getattr(_stdlib_socket, "TCP_CORK", None)
        if cork is not None and self._family in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
            with contextlib.suppress(OSError):
                self._sock.setsockopt(_stdlib_socket.IPPROTO_TCP, cork, int(enabled))
