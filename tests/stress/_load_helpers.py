"""Helpers for the load and listener stress modules: resource probes and raw loopback clients."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import struct
import threading
from collections.abc import Callable, Generator

import attrs
import pytest
import trio

import trioqio


def fd_count() -> int:
    """How many descriptors this process has open now."""
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    """How many kernel threads this process has now (/proc/self/task)."""
    return len(os.listdir("/proc/self/task"))


def busy_thread_count() -> int:
    """Python threads other than the main one and Trio's idle cache ("Trio thread N")."""
    return sum(
        1
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and not thread.name.startswith("Trio thread ")
    )


def rss_kib() -> int:
    """Resident set size of this process in KiB (VmRSS in /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def somaxconn() -> int:
    """The kernel's cap on a listen() backlog."""
    try:
        with open("/proc/sys/net/core/somaxconn") as file:
            return int(file.read())
    except OSError:
        return 128


@attrs.frozen
class Resources:
    """A snapshot of what the process holds (see :func:`snapshot`)."""

    fds: int
    tasks: int
    busy_threads: int
    rss_kib: int


def snapshot() -> Resources:
    """Take a :class:`Resources` snapshot now."""
    return Resources(fd_count(), task_count(), busy_thread_count(), rss_kib())


@contextlib.contextmanager
def nofile_at_least(needed: int) -> Generator[int, None, None]:
    """Raise RLIMIT_NOFILE's soft limit to ``needed`` (within the hard limit); restore it after.

    Skips the test when the hard limit is too low. Yields the soft limit in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        yield soft
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} descriptors; RLIMIT_NOFILE hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield needed
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def tcp_connect(address: trioqio.SocketAddress) -> trio.SocketStream:
    """Connect a plain Trio stream to a numeric TCP listener address (no resolver thread)."""
    assert isinstance(address, trioqio.InetAddress)
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((address.host, address.port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


def abort(stream: trio.SocketStream) -> None:
    """Arrange for closing ``stream`` to send a reset (SO_LINGER 0) instead of a FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def wait_until(predicate: Callable[[], bool], *, poll: float = 0.01) -> None:
    """Poll ``predicate()`` until true; the caller bounds the wait with ``trio.fail_after``."""
    while not predicate():
        await trio.sleep(poll)
