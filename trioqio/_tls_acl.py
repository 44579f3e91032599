"""Distinguished-name ACLs for TLS clients (QEMU ``authz/list.c`` as used by ``io/channel-tls.c``).

QEMU's TLS server may name a ``QAuthZList`` object: an ordered list of allow/deny rules
matched (exactly or as ``fnmatch`` globs) against the client certificate's distinguished
name, with a default policy. QEMU's tests use a default of *deny* plus one allow rule with
the glob ``C=UK,CN=qemu*``.

trioqio keeps that shape in :class:`TLSAcl`: ``allow`` globs, optional ``deny`` globs
checked first, default deny. The DN string has QEMU's (GnuTLS's) layout: the certificate's
relative distinguished names **in certificate order** (usually country first), each as
``SHORTNAME=value``, joined by ``,``; several attributes of one RDN are joined by ``+``;
special characters in values are escaped with a backslash as in RFC 4514. So a certificate
issued for ``C=UK, O=Example, CN=qemu`` has the DN ``C=UK,O=Example,CN=qemu``.

Differences from QEMU: the rule list is a value, not a QOM object named by id; a pattern
is always a glob (a plain string without ``*?[`` is an exact match anyway).
"""

from __future__ import annotations

import fnmatch
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

__all__ = ["TLSAcl", "certificate_dn"]

# Python's ssl module names attributes by their OpenSSL long names; GnuTLS (and so QEMU)
# prints the RFC 4514 short names.
_SHORT_NAMES: Mapping[str, str] = {
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "commonName": "CN",
    "emailAddress": "EMAIL",
    "domainComponent": "DC",
    "userId": "UID",
    "streetAddress": "STREET",
    "serialNumber": "serialNumber",
    "title": "title",
    "givenName": "givenName",
    "surname": "surname",
}


def _patterns(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


_ESCAPED = frozenset(',+"\\<>;=')


def _escape(value: str) -> str:
    out = "".join("\\" + ch if ch in _ESCAPED else ch for ch in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def certificate_dn(cert: Mapping[str, Any]) -> str:
    """Return the subject DN of a certificate in QEMU's layout (``C=UK,CN=qemu``).

    Args:
        cert: the dict :meth:`ssl.SSLObject.getpeercert` returns.

    Returns:
        The DN string; ``""`` when the certificate has no subject.

    Example::

        certificate_dn({"subject": ((("countryName", "UK"),), (("commonName", "qemu"),))})
        # 'C=UK,CN=qemu'
    """
    subject: Sequence[Sequence[tuple[str, str]]] = cert.get("subject", ())
    rdns: list[str] = []
    for rdn in subject:
        parts = [f"{_SHORT_NAMES.get(name, name)}={_escape(value)}" for name, value in rdn]
        rdns.append("+".join(parts))
    return ",".join(rdns)


@typing.final
@attrs.frozen
class TLSAcl:
    """An allow list of DN globs with default deny (QEMU ``QAuthZList``, format glob).

    Deny patterns are checked first; then any matching allow pattern admits the client;
    otherwise the client is refused. Matching is case-sensitive :func:`fnmatch.fnmatchcase`
    on the DN string :func:`certificate_dn` builds.

    QEMU: ``authz-list`` with ``policy=deny`` and ``format=glob`` rules.

    Attributes:
        allow: globs that admit a client.
        deny: globs that refuse a client even if an allow glob matches.

    Example::

        acl = trioqio.TLSAcl(["C=UK,CN=qemu*"])
        acl.allows("C=UK,CN=qemu-client")  # True
    """

    allow: tuple[str, ...] = attrs.field(converter=_patterns)
    deny: tuple[str, ...] = attrs.field(default=(), converter=_patterns, kw_only=True)

    @classmethod
    def coerce(cls, acl: TLSAcl | Iterable[str]) -> TLSAcl:
        """Return ``acl`` as a :class:`TLSAcl` (a plain iterable of strings is an allow list).

        Args:
            acl: a :class:`TLSAcl` or an iterable of allow globs.

        Returns:
            The ACL.

        Raises:
            TypeError: ``acl`` is a single string (a common slip) or holds a non-string.

        Example::

            TLSAcl.coerce(["CN=*"])
        """
        if isinstance(acl, TLSAcl):
            return acl
        if isinstance(acl, str):
            raise TypeError("acl must be a list of DN globs, not a single string")
        patterns = tuple(acl)
        for pattern in patterns:
            if not isinstance(pattern, str):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise TypeError(f"acl patterns must be strings, got {pattern!r}")
        return cls(patterns)

    def allows(self, dn: str) -> bool:
        """Return True when ``dn`` is admitted.

        Args:
            dn: a DN string in QEMU's layout.

        Returns:
            True if no deny glob and some allow glob matches.

        Raises nothing.

        Example::

            TLSAcl(["C=UK,CN=qemu*"]).allows("C=UK,CN=evil")  # False
        """
        if any(fnmatch.fnmatchcase(dn, pattern) for pattern in self.deny):
            return False
        return any(fnmatch.fnmatchcase(dn, pattern) for pattern in self.allow)
