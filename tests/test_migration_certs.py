"""The throwaway TLS credentials `trioqio migrate --tls` makes, through either generator."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from trioqio.migration import _certs


def _handshake(directory: Path) -> str:
    """Do a real TLS handshake with the generated files; return the client's subject."""
    server, client = _certs.server_context(directory), _certs.client_context(directory)
    a, b = socket.socketpair()
    seen: list[object] = []
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server.wrap_socket(a, server_side=True) as tls:
                seen.append(tls.getpeercert())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(b, server_hostname="localhost") as tls:
            tls.do_handshake()
    finally:
        thread.join(10)
        a.close()
        b.close()
    assert not errors, errors
    peer = seen[0]
    assert isinstance(peer, dict)
    return str(peer["subject"])  # pyright: ignore[reportUnknownArgumentType]


GENERATORS: dict[str, Callable[[Path], None]] = {
    "cryptography": _certs._with_cryptography,  # pyright: ignore[reportPrivateUsage]
    "openssl": _certs._with_openssl,  # pyright: ignore[reportPrivateUsage]
}


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_generated_credentials_pass_strict_verification(tmp_path: Path, generator: str) -> None:
    """Both generators make certificates Python's default (3.13: X509-strict) checks accept."""
    if generator == "openssl" and shutil.which("openssl") is None:
        pytest.skip("no openssl command on this machine")
    if generator == "cryptography":
        pytest.importorskip("cryptography")
    GENERATORS[generator](tmp_path)
    assert "trioqio-migration-source" in _handshake(tmp_path)


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_private_keys_are_the_owners_alone_whatever_the_umask(
    tmp_path: Path, generator: str
) -> None:
    if generator == "openssl" and shutil.which("openssl") is None:
        pytest.skip("no openssl command on this machine")
    if generator == "cryptography":
        pytest.importorskip("cryptography")
    old = os.umask(0o022)  # the usual umask: new files 0o644
    try:
        GENERATORS[generator](tmp_path)
    finally:
        os.umask(old)
    keys = sorted(tmp_path.glob("*-key.pem"))
    assert {key.name for key in keys} >= {"server-key.pem", "client-key.pem"}
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key.name
