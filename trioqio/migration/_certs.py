"""Throwaway TLS credentials for ``trioqio migrate --tls`` (QEMU ``tls-creds-x509`` dirs).

QEMU reads x509 credentials from a directory holding ``ca-cert.pem``, ``server-cert.pem``,
``server-key.pem``, ``client-cert.pem`` and ``client-key.pem``. ``--tls-dir`` takes such a
directory; without it, this module makes a fresh CA, a server certificate (``localhost``,
``127.0.0.1``, ``::1``) and a client certificate (DN ``O=trioqio,CN=trioqio-migration-source``)
in a temporary directory, with the ``cryptography`` package when it is installed, else the
``openssl`` command. Neither is a runtime dependency of trioqio: when both are missing the
error says so.

Differences from QEMU: QEMU never generates credentials.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .._errors import MigrationError

__all__ = ["CLIENT_ACL", "client_context", "make_credentials", "server_context"]

#: The DN glob the destination requires of the source's certificate.
CLIENT_ACL = ("O=trioqio,CN=trioqio-migration-source*",)
_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem")


def make_credentials(directory: Path, *, hostnames: Sequence[str] = (), days: int = 1) -> Path:
    """Write a CA plus server and client certificates into ``directory``; return it.

    The server certificate names ``localhost``, ``127.0.0.1``, ``::1`` and ``hostnames``
    (names or IP addresses); the client's DN, ``O=trioqio,CN=trioqio-migration-source``,
    is the one the destination's default ACL admits.

    Args:
        directory: where the five files (plus the CA's key) go.
        hostnames: more names the server certificate carries (e.g. the destination's
            host name, for a source on another machine).
        days: how long the certificates are valid.

    Raises:
        trioqio.MigrationError: neither ``cryptography`` nor ``openssl`` is available.
    """
    try:
        import cryptography  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        if shutil.which("openssl") is None:
            raise MigrationError(
                "--tls needs certificates: install the 'cryptography' package or the "
                "'openssl' command, or pass --tls-dir with ca-cert.pem, server-cert.pem, "
                "server-key.pem, client-cert.pem and client-key.pem",
                field="tls_dir",
                kind="local",
            ) from None
        _with_openssl(directory, hostnames, days)
    else:
        _with_cryptography(directory, hostnames, days)
    return directory


def _names(hostnames: Sequence[str]) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    return names + [name for name in hostnames if name not in names]


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _with_cryptography(directory: Path, names: Sequence[str] = (), days: int = 1) -> None:
    names = _names(names)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trioqio"),
                x509.NameAttribute(NameOID.COMMON_NAME, common),
            ]
        )

    def write_key(key: ec.EllipticCurvePrivateKey, file: str) -> None:
        # Private keys are the owner's alone from the moment they exist (0o600, whatever
        # the umask or the directory's own mode).
        fd = os.open(directory / file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("trioqio throwaway migration CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca-cert.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role, common, usage in (
        ("server", "localhost", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", "trioqio-migration-source", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            # Python 3.13's default contexts verify with VERIFY_X509_STRICT, which needs
            # both key identifiers on a CA-issued certificate.
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if role == "server":
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address(name))
                        if _is_ip(name)
                        else x509.DNSName(name)
                        for name in names
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        (directory / f"{role}-cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, f"{role}-key.pem")


def _with_openssl(directory: Path, names: Sequence[str] = (), days: int = 1) -> None:
    names = _names(names)

    def run(*args: str) -> None:
        # umask 0o077: the keys openssl writes are the owner's alone from the start.
        subprocess.run(
            ["openssl", *args], cwd=directory, check=True, capture_output=True, umask=0o077
        )

    (directory / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "subjectAltName="
        + ",".join(f"IP:{name}" if _is_ip(name) else f"DNS:{name}" for name in names)
        + "\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    (directory / "client.ext").write_text(
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run(
        "req", "-x509", *ec, "-keyout", "ca-key.pem", "-out", "ca-cert.pem", "-days", str(days),
        "-subj", "/O=trioqio/CN=trioqio throwaway migration CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    for role, common in (("server", "localhost"), ("client", "trioqio-migration-source")):
        run(
            "req", "-new", *ec, "-keyout", f"{role}-key.pem", "-out", f"{role}.csr",
            "-subj", f"/O=trioqio/CN={common}",
        )  # fmt: skip
        run(
            "x509", "-req", "-in", f"{role}.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-out", f"{role}-cert.pem", "-days", str(days),
            "-extfile", f"{role}.ext",
        )  # fmt: skip


def _check(directory: Path) -> None:
    missing = [file for file in _FILES if not (directory / file).is_file()]
    if missing:
        raise MigrationError(
            f"--tls-dir {str(directory)!r} lacks {', '.join(missing)}",
            field="tls_dir",
            kind="local",
        )


def server_context(directory: Path) -> ssl.SSLContext:
    """Return the destination's context: its certificate, client certificates required."""
    _check(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=directory / "ca-cert.pem")
    context.load_cert_chain(directory / "server-cert.pem", directory / "server-key.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(directory: Path) -> ssl.SSLContext:
    """Return the source's context: its certificate, the server verified against the CA."""
    _check(directory)
    context = ssl.create_default_context(cafile=directory / "ca-cert.pem")
    context.load_cert_chain(directory / "client-cert.pem", directory / "client-key.pem")
    return context
