"""Security: UNIX socket file modes, ``migrate --tls`` client certificates and DN ACL."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import trioqio
from trioqio._socket_util import listen_socket

NOBODY = 65534


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory any user may traverse (pytest's tmp_path is owner-only)."""
    directory = Path(tempfile.mkdtemp(prefix="trioqio-sec-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()


@pytest.mark.parametrize("mode", [0o600, 0o660, 0o666, 0o700, 0o777, 0o640, 0o000])
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
async def test_unix_socket_mode(tmp_path: Path, mode: int, umask: int) -> None:
    path = tmp_path / "s.sock"
    old = os.umask(umask)
    try:
        async with trioqio.NetListener() as listener:
            await listener.open(f"unix:{path}", mode=mode)
            assert stat.S_IMODE(path.lstat().st_mode) == mode
            assert stat.S_ISSOCK(path.lstat().st_mode)
    finally:
        os.umask(old)


async def test_unix_socket_default_mode_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    old = os.umask(0)  # the default does not depend on a permissive umask
    try:
        async with trioqio.NetListener() as listener:
            await listener.open(f"unix:{path}")
            assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    finally:
        os.umask(old)


async def test_socket_util_mode_and_bad_mode(tmp_path: Path) -> None:
    sock = listen_socket(trioqio.UnixAddress(str(tmp_path / "a.sock")), mode=0o604)
    try:
        assert stat.S_IMODE((tmp_path / "a.sock").lstat().st_mode) == 0o604
    finally:
        sock.close()
    for bad in (-1, 0o1000, 0o4755):
        with pytest.raises(ValueError, match="not a permission mask"):
            listen_socket(trioqio.UnixAddress(str(tmp_path / "b.sock")), mode=bad)
    assert not (tmp_path / "b.sock").exists()


async def test_mode_ignored_for_tcp_and_abstract() -> None:
    async with trioqio.NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0", mode=0o666)
        await listener.open(f"unix:@trioqio-sec-{os.getpid()}", mode=0o600)


_CONNECT_AS_NOBODY = """
import os, socket, sys
os.setgroups([])
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[2]))
assert os.geteuid() != 0
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(exc.errno)
else:
    print(0)
finally:
    s.close()
"""


def _connect_as_nobody(path: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-I", "-c", _CONNECT_AS_NOBODY, str(path), str(NOBODY)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return int(done.stdout)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to 'nobody' needs root (os.setuid)")
@pytest.mark.parametrize(("mode", "expected"), [(0o600, errno.EACCES), (0o666, 0)])
async def test_other_user_cannot_connect(public_dir: Path, mode: int, expected: int) -> None:
    # Root ignores file permissions, so the client is a child process running as nobody;
    # 0o666 is the control showing the same child does connect when allowed to.
    path = public_dir / "s.sock"
    async with trioqio.NetListener() as listener:
        await listener.open(f"unix:{path}", mode=mode)
        assert await trio.to_thread.run_sync(_connect_as_nobody, path) == expected


async def test_owner_can_connect_to_default_mode(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with listen_socket(trioqio.UnixAddress(str(path))), socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
