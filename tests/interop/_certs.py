"""Test credentials as PEM files, for peers that read files (openssl, gnutls, NSS).

trustme cannot put ``C=`` in a subject, and the ACL cases need DNs in QEMU's layout
(``C=UK,O=...,CN=...``), so this builds the CA and leaf certificates with cryptography.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@attrs.frozen(kw_only=True)
class Credentials:
    """Paths of one CA, one server certificate and two client certificates."""

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    admitted_cert: Path
    admitted_key: Path
    refused_cert: Path
    refused_key: Path

    #: The DNs of the two client certificates, in QEMU's (GnuTLS's) layout.
    ADMITTED_DN = "C=UK,O=trioqio-interop,CN=qemu-admitted"
    REFUSED_DN = "C=UK,O=trioqio-interop,CN=mallory"


def _name(country: str | None, org: str, common: str) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COUNTRY_NAME, country)] if country else []
    parts += [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, common),
    ]
    return x509.Name(parts)


def make_credentials(directory: Path) -> Credentials:
    """Write a CA, a server certificate (localhost, 127.0.0.1) and two client certificates."""
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("UK", "trioqio-interop", "trioqio interop CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
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
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca-cert.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(stem: str, subject: x509.Name, usage: x509.ObjectIdentifier) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            names: list[x509.GeneralName] = [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path, key_path = directory / f"{stem}-cert.pem", directory / f"{stem}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path

    server = leaf(
        "server", _name(None, "trioqio-interop", "localhost"), ExtendedKeyUsageOID.SERVER_AUTH
    )
    admitted = leaf(
        "admitted", _name("UK", "trioqio-interop", "qemu-admitted"), ExtendedKeyUsageOID.CLIENT_AUTH
    )
    refused = leaf(
        "refused", _name("UK", "trioqio-interop", "mallory"), ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return Credentials(
        directory=directory,
        ca=directory / "ca-cert.pem",
        server_cert=server[0],
        server_key=server[1],
        admitted_cert=admitted[0],
        admitted_key=admitted[1],
        refused_cert=refused[0],
        refused_key=refused[1],
    )
