"""Creating, binding and listening sockets (QEMU ``util/qemu-sockets.c``).

QEMU's ``socket_listen`` creates a socket for one address, sets ``SO_REUSEADDR``, binds,
and calls ``listen(fd, num)``; ``unix_listen_saddr`` first unlinks whatever is at the
path; ``socket_get_fd`` hands back an inherited descriptor. This module does the same for
one *numeric* address (the listener resolves first), plus systemd socket activation
(``LISTEN_FDS``/``LISTEN_PID``, the ``sd_listen_fds`` protocol).

Differences from QEMU:

- Stale UNIX sockets: QEMU unlinks any file at the path before binding. trioqio only
  replaces a *stale socket*: a socket file whose listener is gone (connecting to it gives
  ``ECONNREFUSED``). A regular file, a directory, or a socket a live process listens on
  is left alone and reported as an error.
- A path longer than ``sun_path`` allows raises :class:`trioqio.AddressError` naming the
  length and the limit (QEMU reports "UNIX socket path ... is too long").
- IPv6 sockets set ``IPV6_V6ONLY`` so an IPv4 and an IPv6 socket can share one port.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

import trio

from ._address import FdAddress, InetAddress, SocketAddress, UnixAddress, VsockAddress
from ._errors import AddressError
from ._trace import emit, enabled

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_UNIX_MODE",
    "UNIX_PATH_MAX",
    "adopt_listening_fd",
    "listen_all",
    "listen_socket",
    "systemd_listen_fds",
    "unix_sockaddr",
]

#: ``listen()`` backlog used when none is given: the kernel clamps it to somaxconn.
DEFAULT_BACKLOG = 4096
#: Bytes available for a UNIX socket path, including the terminating NUL (Linux).
UNIX_PATH_MAX = 108
#: How often a port-0 open retries when the shared port is taken on another family.
PORT_ATTEMPTS = 8
#: First descriptor systemd passes (``SD_LISTEN_FDS_START``).
SD_LISTEN_FDS_START = 3
#: Permission bits of a UNIX socket file when none are given: owner only.
DEFAULT_UNIX_MODE = 0o600


def unix_sockaddr(address: UnixAddress) -> str | bytes:
    """Return what ``bind``/``connect`` take for ``address``, checking its length.

    Args:
        address: a named or abstract UNIX address.

    Returns:
        The path (str) or, for ``@name``, the abstract form ``b"\\0name"``.

    Raises:
        AddressError: the path is empty or longer than the system allows.
    """
    if not address.path:
        raise AddressError("an unnamed UNIX address cannot be bound or connected to")
    if address.abstract:
        raw = b"\0" + address.path[1:].encode("utf-8", "surrogateescape")
        limit = UNIX_PATH_MAX
    else:
        raw = os.fsencode(address.path)
        limit = UNIX_PATH_MAX - 1  # room for the NUL
    if len(raw) > limit:
        raise AddressError(
            f"UNIX socket path {address.path!r} is {len(raw)} bytes, longer than the "
            f"system's limit of {limit}"
        )
    return raw if address.abstract else address.path


def _fail(address: SocketAddress, exc: OSError, detail: str = "") -> OSError:
    reason = detail or exc.strerror or str(exc)
    error = OSError(exc.errno, f"cannot listen on {address}: {reason}")
    error.__cause__ = exc
    return error


def _remove_stale_unix_socket(address: UnixAddress, path: str) -> None:
    """Unlink ``path`` if it is a socket nobody listens on; refuse anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise FileExistsError(
            errno.EEXIST,
            f"cannot listen on {address}: the path exists and is not a socket "
            "(trioqio only replaces stale socket files)",
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        code = probe.connect_ex(path)
    finally:
        probe.close()
    if code == errno.ECONNREFUSED:
        # A socket file without a listener: left behind by a process that died.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    if code in (0, errno.EAGAIN, errno.EINPROGRESS):
        raise OSError(
            errno.EADDRINUSE,
            f"cannot listen on {address}: another process is listening on that socket",
        )
    if code == errno.ENOENT:
        return  # removed meanwhile
    raise OSError(code, f"cannot listen on {address}: {os.strerror(code)}")


def _check_mode(mode: int) -> None:
    if not 0 <= mode <= 0o777:
        raise ValueError(f"UNIX socket mode {mode:#o} is not a permission mask (0 .. 0o777)")


def _bind_unix(sock: socket.socket, path: str, mode: int) -> None:
    """Bind ``sock`` at ``path`` so the file is never more permissive than ``mode``.

    Linux creates the socket file with the socket inode's mode minus the umask, so the
    inode gets ``mode`` first (``fchmod`` before ``bind``): the file appears with at most
    ``mode``. Bits the umask removed are put back with a ``chmod`` that does not follow
    symlinks (through an ``O_PATH`` descriptor), still before ``listen()``, so no client
    can connect before the final mode is in place.
    """
    os.fchmod(sock.fileno(), mode)
    sock.bind(path)
    if stat.S_IMODE(os.lstat(path).st_mode) == mode:
        return
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(errno.EEXIST, f"{path!r} was replaced while binding")
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def _inet_sockaddr(address: InetAddress) -> tuple[int, tuple[object, ...]]:
    try:
        infos = socket.getaddrinfo(
            address.host,
            address.port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV | socket.AI_PASSIVE,
        )
    except socket.gaierror as exc:
        raise AddressError(
            f"cannot listen on {address}: {address.host!r} is not a numeric address "
            "(resolve it first)"
        ) from exc
    family, _type, _proto, _canon, sockaddr = infos[0]
    return int(family), tuple(sockaddr)


def listen_socket(
    address: SocketAddress, backlog: int = DEFAULT_BACKLOG, *, mode: int = DEFAULT_UNIX_MODE
) -> trio.socket.SocketType:
    """Create a listening stream socket for one numeric address.

    TCP: ``SO_REUSEADDR``, ``IPV6_V6ONLY`` on IPv6, bind, listen. UNIX: a stale socket
    file is replaced (see the module notes), abstract ``@name`` supported. vsock where
    the kernel supports it. ``fd:N`` adopts the inherited socket (see
    :func:`adopt_listening_fd`).

    QEMU: ``socket_listen`` (``inet_listen_saddr``, ``unix_listen_saddr``,
    ``vsock_listen_saddr``, ``socket_get_fd``).

    Args:
        address: a numeric address (``InetAddress`` hosts must be numeric).
        backlog: passed to ``listen()``.
        mode: permission bits of a UNIX socket file (default ``0o600``, owner only);
            set race-free before ``listen()`` (never wider than ``mode``, whatever
            the umask). Ignored for other families and abstract ``@name`` sockets.

    Returns:
        The listening Trio socket; the caller owns it.

    Raises:
        ValueError: ``mode`` is not within ``0 .. 0o777``.
        AddressError: a non-numeric host, or a UNIX path that is too long.
        FileExistsError: a UNIX path exists and is not a socket.
        OSError: the system refused (``EADDRINUSE``, ``EACCES``, ``EAFNOSUPPORT``, ...);
            ``errno`` is kept and the message names the address.
    """
    _check_mode(mode)
    if isinstance(address, FdAddress):
        return adopt_listening_fd(address.fd)
    family: int
    target: object
    if isinstance(address, InetAddress):
        family, target = _inet_sockaddr(address)
    elif isinstance(address, UnixAddress):
        family, target = socket.AF_UNIX, unix_sockaddr(address)
    else:
        family = getattr(socket, "AF_VSOCK", -1)
        if family < 0:
            raise OSError(errno.EAFNOSUPPORT, f"cannot listen on {address}: no vsock support")
        target = (address.cid, address.port)
    if enabled():
        emit("qio_channel_socket_listen_sync", addr=str(address), num=backlog)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if enabled():
            emit("qio_channel_socket_listen_fail", addr=str(address))
        detail = "vsock is not supported here" if isinstance(address, VsockAddress) else ""
        raise _fail(address, exc, detail) from exc
    try:
        if family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if isinstance(address, UnixAddress) and not address.abstract:
            _remove_stale_unix_socket(address, address.path)
            _bind_unix(sock, address.path, mode)
        else:
            sock.bind(target)  # pyright: ignore[reportArgumentType]  # a sockaddr for this family
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if enabled():
            emit("qio_channel_socket_listen_fail", addr=str(address))
        if str(address) in str(exc):
            raise
        raise _fail(address, exc) from exc
    except BaseException:
        sock.close()
        raise
    if enabled():
        emit("qio_channel_socket_listen_complete", addr=str(address), fd=sock.fileno())
    return trio.socket.from_stdlib_socket(sock)


def adopt_listening_fd(fd: int) -> trio.socket.SocketType:
    """Wrap an inherited, already listening stream socket descriptor.

    On success the returned socket owns ``fd``; on failure ``fd`` is left open and
    untouched, still the caller's.

    Args:
        fd: the descriptor number.

    Returns:
        A Trio socket for it.

    Raises:
        OSError: ``fd`` is not open (``EBADF``), not a socket (``ENOTSOCK``), not a
            stream socket or not listening (``EINVAL``); the message names ``fd:N``.
    """
    try:
        sock = trio.socket.socket(fileno=fd)
    except OSError as exc:
        reason = {
            errno.EBADF: "not an open descriptor",
            errno.ENOTSOCK: "not a socket",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise OSError(exc.errno, f"cannot adopt fd:{fd}: {reason}") from exc
    try:
        if sock.type != socket.SOCK_STREAM:
            raise OSError(errno.EINVAL, f"cannot adopt fd:{fd}: not a stream socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise OSError(errno.EINVAL, f"cannot adopt fd:{fd}: the socket is not listening")
    except BaseException:
        sock.detach()
        raise
    return sock


def systemd_listen_fds(*, unset_environment: bool = True) -> list[int]:
    """Return the descriptors systemd passed by socket activation.

    Follows ``sd_listen_fds``: when ``LISTEN_PID`` is this process and ``LISTEN_FDS``
    is ``N``, descriptors 3 .. 3+N-1 are this process's listening sockets; they are set
    close-on-exec. Otherwise the list is empty.

    Args:
        unset_environment: remove ``LISTEN_PID``, ``LISTEN_FDS`` and ``LISTEN_FDNAMES``
            so child processes do not adopt them too (systemd's advice).

    Returns:
        The descriptor numbers, possibly none.

    Raises:
        AddressError: ``LISTEN_FDS`` or ``LISTEN_PID`` is set but not a number.

    Example::

        fds = trioqio.systemd_listen_fds()
    """
    pid_text = os.environ.get("LISTEN_PID")
    count_text = os.environ.get("LISTEN_FDS")
    try:
        if pid_text is None or count_text is None:
            return []
        if not pid_text.strip().isdecimal() or not count_text.strip().isdecimal():
            raise AddressError(
                f"bad systemd environment LISTEN_PID={pid_text!r} LISTEN_FDS={count_text!r}"
            )
        if int(pid_text) != os.getpid():
            return []
        fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count_text)))
        for fd in fds:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)
        return fds
    finally:
        if unset_environment:
            for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                os.environ.pop(name, None)


def listen_all(
    addresses: list[SocketAddress], backlog: int, *, mode: int = DEFAULT_UNIX_MODE
) -> list[trio.socket.SocketType]:
    """Listen on every address; port-0 TCP sockets of one call share their port."""
    share = len(addresses) > 1 and all(
        isinstance(a, InetAddress) and a.port == 0 for a in addresses
    )
    attempts = PORT_ATTEMPTS if share else 1
    first_error: OSError | None = None
    for attempt in range(attempts):
        socks: list[trio.socket.SocketType] = []
        first_error = None
        port = 0
        retry = False
        try:
            for address in addresses:
                target = address
                if share and port:
                    assert isinstance(address, InetAddress)
                    target = InetAddress(address.host, port)
                try:
                    sock = listen_socket(target, backlog, mode=mode)
                except OSError as exc:
                    if port and exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                        retry = True
                        break
                    first_error = first_error or exc
                    continue
                socks.append(sock)
                if share and not port:
                    port = int(sock.getsockname()[1])
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        if retry:
            for sock in socks:
                sock.close()
            continue
        if socks:
            return socks
        break
    assert first_error is not None
    raise first_error
