"""Security: UNIX socket file modes, ``migrate --tls`` client certificates and DN ACL."""

from __future__ import annotations

import errno
import os
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trustme

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


async def test_mode_ignored_for_tcp_and_abstract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # an abstract name must not become a file here
    name = f"trioqio-sec-{os.getpid()}"

    async def reply(channel: trioqio.SocketChannel) -> None:
        await channel.send_all(b"ok")

    async with trioqio.NetListener() as listener:
        (tcp,) = await listener.open("tcp:127.0.0.1:0", mode=0o666)
        (abstract,) = await listener.open(f"unix:@{name}", mode=0o600)
        assert tcp.local_address == listener.addresses[0]
        assert abstract.local_address == trioqio.UnixAddress(f"@{name}")
        listener.set_client_func(reply)
        for address in listener.addresses:
            async with await trioqio.connect(address) as client:
                assert await client.receive_exactly(2) == b"ok"
    assert list(tmp_path.iterdir()) == []


async def test_unix_socket_file_has_its_mode_from_the_moment_bind_creates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With umask 0 a socket file would appear 0o777 unless the inode got its mode before
    # bind (fchmod); then a chmod afterwards would be needed, leaving a window in which
    # anyone could connect. The mode must be right without that repair.
    repairs: list[str] = []
    real_chmod = os.chmod

    def chmod(path: object, mode: int, **kwargs: object) -> None:
        repairs.append(str(path))
        real_chmod(path, mode, **kwargs)  # type: ignore[arg-type]  # passing through

    monkeypatch.setattr(os, "chmod", chmod)
    old = os.umask(0)
    try:
        sock = listen_socket(trioqio.UnixAddress(str(tmp_path / "m.sock")), mode=0o600)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE((tmp_path / "m.sock").lstat().st_mode) == 0o600
        assert repairs == []  # bind created the file with 0o600 already
    finally:
        sock.close()


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


# -- migrate --tls: client certificates and the DN ACL ------------------------------------


def _credentials(directory: Path, ca: trustme.CA, organization: str) -> Path:
    directory.mkdir()
    ca.cert_pem.write_to_path(directory / "ca-cert.pem")
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.cert_chain_pems[0].write_to_path(directory / "server-cert.pem")
    server.private_key_pem.write_to_path(directory / "server-key.pem")
    client = ca.issue_cert("source.example", common_name="src", organization_name=organization)
    client.cert_chain_pems[0].write_to_path(directory / "client-cert.pem")
    client.private_key_pem.write_to_path(directory / "client-key.pem")
    return directory


def _migrate(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trioqio", "migrate", "--no-progress", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _destination(tls_dir: Path, *acl: str) -> tuple[subprocess.Popen[str], str]:
    extra = [arg for glob in acl for arg in ("--tls-acl", glob)]
    # TCP: two-process TLS over a UNIX socket fails intermittently (reported separately).
    process = _migrate("--listen", "tcp:127.0.0.1:0", "--tls", "--tls-dir", str(tls_dir), *extra)
    assert process.stderr is not None
    line = process.stderr.readline()
    assert line.startswith("listening on "), line
    return process, line.split()[2]


@pytest.mark.parametrize(("organization", "allowed"), [("Good", True), ("Evil", False)])
def test_migrate_tls_acl(tmp_path: Path, organization: str, allowed: bool) -> None:
    ca = trustme.CA()
    good = _credentials(tmp_path / "good", ca, "Good")
    source_dir = _credentials(tmp_path / "source", ca, organization)
    destination, address = _destination(good, "O=Good,*")
    source = _migrate("--connect", address, "--tls", "--tls-dir", str(source_dir), "--size", "1MiB")
    out, err = source.communicate(timeout=30)
    _dest_out, dest_err = destination.communicate(timeout=30)
    if allowed:  # the control: the same setup admits a DN the ACL names
        assert (source.returncode, destination.returncode) == (0, 0), err + dest_err
        assert "checksums match" in out
        return
    assert source.returncode == 1
    assert destination.returncode == 1
    assert "Traceback" not in err + dest_err
    assert "TLS handshake failed" in dest_err
    assert "'O=Evil," in dest_err
    assert "is not allowed by the ACL" in dest_err
    assert "refuses the source's client certificate" in err


def test_migrate_tls_default_acl_refuses_other_dn(tmp_path: Path) -> None:
    # Without --tls-acl the destination still checks the DN (the throwaway client's).
    ca = trustme.CA()
    directory = _credentials(tmp_path / "creds", ca, "Good")
    destination, address = _destination(directory)
    source = _migrate("--connect", address, "--tls", "--tls-dir", str(directory), "--size", "1MiB")
    _, _err = source.communicate(timeout=30)
    _, dest_err = destination.communicate(timeout=30)
    assert (source.returncode, destination.returncode) == (1, 1)
    assert "is not allowed by the ACL" in dest_err, dest_err


def _connect_without_certificate(path: str, ca: trustme.CA) -> str:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    host, _, port = path.removeprefix("tcp:").rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        try:
            tls.recv(1)  # TLS 1.3: the server's verdict arrives after our Finished
        except ssl.SSLError as exc:
            return str(exc)
        except OSError as exc:
            return f"closed: {exc}"
    return "no error"


def test_migrate_tls_refuses_source_without_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    directory = _credentials(tmp_path / "creds", ca, "Good")
    destination, address = _destination(directory, "*")
    seen = _connect_without_certificate(address, ca)
    _, dest_err = destination.communicate(timeout=30)
    assert "CERTIFICATE_REQUIRED" in seen.upper(), seen
    assert destination.returncode == 1
    assert "Traceback" not in dest_err
    assert "TLS handshake failed" in dest_err
    assert "certificate" in dest_err.lower(), dest_err
