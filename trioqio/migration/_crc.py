"""The CRC-32 behind the ``crc32`` page digest: zlib-ng's when installed, else the stdlib's.

Both compute the same function (the CRC-32 of zlib, gzip and PNG), so the two ends of a
migration may use different ones. What differs is speed: the stdlib's ``zlib.crc32`` is
the table-driven code of the system zlib (about 4 GB/s on this project's machines), while
``zlib_ng.zlib_ng.crc32`` uses carry-less multiplication (PCLMULQDQ / VPCLMULQDQ) where the
CPU has it, over ten times faster. A migration checksums every byte on both ends, so with
the stdlib's CRC the checksum costs about as much CPU as the transfer itself.

``pip install trioqio[speedups]`` installs zlib-ng; nothing else changes. The environment
variable ``TRIOQIO_CRC32`` picks one explicitly:

* ``auto`` (or unset): zlib-ng when it can be imported, else the stdlib;
* ``zlib``: the stdlib, even when zlib-ng is installed (to compare the two);
* ``zlib-ng``: zlib-ng, and every migration fails with a clear error when it is missing.

The variable is read once, at import. A bad value does not break ``import trioqio``: it is
kept in :data:`PROBLEM`, and :func:`check_provider` (called when a migration starts) raises
it as a :class:`~trioqio.MigrationError`.

Differences from QEMU: QEMU checksums nothing end to end, so it has no counterpart.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from .._errors import MigrationError

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["CRC32_ENV", "PROBLEM", "PROVIDER", "check_provider", "crc32", "load_crc32"]

#: The environment variable that picks the CRC-32 provider.
CRC32_ENV = "TRIOQIO_CRC32"
_CHOICES = ("auto", "zlib", "zlib-ng")
_STDLIB = f"zlib {zlib.ZLIB_RUNTIME_VERSION}"

Crc32 = Callable[["Buffer", int], int]


def load_crc32(choice: str) -> tuple[Crc32, str]:
    """Return the CRC-32 function for ``choice`` and a name for reports.

    Args:
        choice: ``"auto"``, ``"zlib"`` or ``"zlib-ng"`` (see the module docstring).

    Returns:
        ``(crc32, provider)``: a function with ``zlib.crc32``'s signature and values, and
        its library and version, e.g. ``"zlib-ng 2.3.3"``.

    Raises:
        ValueError: ``choice`` is not one of the three, or is ``"zlib-ng"`` and zlib-ng
            cannot be imported (the message says how to install it) or fails the
            known-answer check (``auto`` then falls back to the stdlib).

    Example::

        crc32, provider = load_crc32("auto")
        assert crc32(b"page", 0) == zlib.crc32(b"page")
    """
    if choice not in _CHOICES:
        raise ValueError(
            f"{CRC32_ENV}={choice!r}: expected one of {', '.join(_CHOICES)} "
            "(auto picks zlib-ng when installed)"
        )
    if choice != "zlib":
        try:
            from zlib_ng import zlib_ng
        except ImportError as exc:
            if choice == "zlib-ng":
                raise ValueError(
                    f"{CRC32_ENV}=zlib-ng, but zlib-ng cannot be imported ({exc}); "
                    "install it with `pip install trioqio[speedups]`"
                ) from exc
        else:
            # Its stub leaves the data parameter untyped; the signature is zlib.crc32's.
            accelerated = cast("Crc32", zlib_ng.crc32)  # pyright: ignore[reportUnknownMemberType]
            provider = f"zlib-ng {zlib_ng.ZLIBNG_RUNTIME_VERSION}"
            if _answers_correctly(accelerated):
                return accelerated, provider
            if choice == "zlib-ng":
                raise ValueError(
                    f"{CRC32_ENV}=zlib-ng, but {provider} computes a wrong CRC-32 "
                    f"(CRC-32 of {_CHECK_INPUT!r} is not {_CHECK_VALUE:#010x}); "
                    "reinstall zlib-ng or use TRIOQIO_CRC32=zlib"
                )
    return zlib.crc32, _STDLIB


# The CRC-32 catalogue's check value, plus a chained call over an unaligned 4 KiB + 3 byte
# buffer (the SIMD paths' block sizes): a broken build must not reach a migration.
_CHECK_INPUT = b"123456789"
_CHECK_VALUE = 0xCBF43926
_CHECK_BLOCK = bytes(range(256)) * 16 + b"end"


def _answers_correctly(crc32: Crc32) -> bool:
    unaligned = memoryview(_CHECK_BLOCK)[1:]
    try:
        check = crc32(_CHECK_INPUT, 0)
        chained = crc32(unaligned, 0x1234)
    except Exception:  # a broken extension may raise anything; it is then not used
        return False
    return check == _CHECK_VALUE and chained == zlib.crc32(unaligned, 0x1234)


def _from_environment() -> tuple[Crc32, str, str | None]:
    try:
        function, provider = load_crc32(os.environ.get(CRC32_ENV, "auto") or "auto")
    except ValueError as exc:
        return zlib.crc32, _STDLIB, str(exc)
    return function, provider, None


_CHOSEN = _from_environment()
#: The CRC-32 function the page digests call (``zlib.crc32``'s signature and values).
crc32: Crc32 = _CHOSEN[0]
#: The library and version behind :data:`crc32` (e.g. ``"zlib-ng 2.3.3"``, ``"zlib 1.2.13"``).
PROVIDER: str = _CHOSEN[1]
#: Why ``TRIOQIO_CRC32`` could not be honoured, or None.
PROBLEM: str | None = _CHOSEN[2]


def check_provider() -> None:
    """Raise the problem ``TRIOQIO_CRC32`` had at import, if any (called when a migration starts).

    Raises:
        trioqio.MigrationError: ``TRIOQIO_CRC32`` has a bad value, or asks for zlib-ng where
            it is not installed.

    Example::

        check_provider()  # before the first digest
    """
    if PROBLEM is not None:
        raise MigrationError(PROBLEM, field="TRIOQIO_CRC32", kind="local")
