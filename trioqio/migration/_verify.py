"""The image checksum both ends compute (QEMU has none; its nearest kin is ``multifd`` packet
sequence checks and the optional ``x-ignore-shared`` comparisons in tests).

Pages arrive at the destination in any order, over any channel, and the destination must
not keep a copy of the image. So the checksum is a two-level hash over every byte:

1. the image is cut into *units* of ``unit_pages`` consecutive pages (the migration uses
   one packet, 128 pages: the source always sends whole, aligned packets) and each unit gets
   a 16-byte digest (:func:`digest_runs`, run in a worker thread);
2. the digests are stored at their unit's index in one ``bytearray``
   (:meth:`PageDigests.record`, in the Trio thread), with one bit per unit saying it came;
3. at the end the image checksum is the 32-byte BLAKE2b of the geometry, the algorithm and
   all unit digests in order (:meth:`PageDigests.checksum`).

The unit digest is a :class:`~trioqio.migration._protocol.Checksum` the source picks and
announces in CONFIG: ``blake2b`` (16-byte BLAKE2b), ``sha256`` (SHA-256 cut to 16 bytes;
SHA-NI makes it about twice as fast as BLAKE2b where the CPU has it) or ``crc32`` (zlib's
CRC-32, padded to 16 bytes: an error-detecting code, several times faster still, no
protection against a deliberate forgery; computed by zlib-ng when installed, see
``_crc.py``). Whatever the choice, every byte is hashed on both ends.

Why a unit is a whole packet and not one page: ``hashlib`` and ``zlib`` release the GIL
while they hash a large buffer, but each call must take it back, and a thread that wants the
GIL back while the Trio thread is busy can wait up to the switch interval (5 ms). One call
per 512 KiB packet takes the GIL back 128 times less often than one call per page, which is
what lets the hashing threads and the I/O thread overlap.

**Memory per unit: 16 bytes of digest plus one bit**, so a 4 GiB image in 512 KiB units
needs 128 KiB (16.1 MiB with one-page units) whatever the order of arrival. A unit
delivered twice, a misaligned run, or a unit missing at the end is reported by page index.

Differences from QEMU: QEMU trusts the transport and checks nothing end to end.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from .._errors import MigrationError
from . import _crc
from ._protocol import Checksum

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "PAGE_DIGEST_SIZE",
    "PageDigests",
    "digest_pages",
    "digest_runs",
    "digest_unit",
    "digest_views",
]

#: Bytes of digest kept per unit.
PAGE_DIGEST_SIZE = 16
_PERSON = b"trioqio-migrate"
_CRC_PAD = bytes(PAGE_DIGEST_SIZE - 4)


def digest_unit(data: Buffer, algorithm: Checksum = Checksum.BLAKE2B) -> bytes:
    """Return the 16-byte digest of one unit (one call: the GIL is released while it hashes).

    Args:
        data: the unit's bytes.
        algorithm: which digest.

    Returns:
        16 bytes.

    Example::

        digest_unit(b"page", Checksum.SHA256)
    """
    if algorithm is Checksum.BLAKE2B:
        return hashlib.blake2b(data, digest_size=PAGE_DIGEST_SIZE).digest()
    if algorithm is Checksum.SHA256:
        return hashlib.sha256(data).digest()[:PAGE_DIGEST_SIZE]
    return _crc.crc32(data, 0).to_bytes(4, "big") + _CRC_PAD


def digest_pages(pages: Sequence[Buffer], algorithm: Checksum = Checksum.BLAKE2B) -> bytes:
    """Return the concatenated 16-byte digests of ``pages`` (one unit per page).

    Safe to call from a worker thread (it touches nothing shared).

    Args:
        pages: the page contents, in order.
        algorithm: which digest.

    Returns:
        ``16 * len(pages)`` bytes.

    Example::

        digests = await trio.to_thread.run_sync(digest_pages, pages)
    """
    return b"".join(digest_unit(page, algorithm) for page in pages)


def digest_views(views: Sequence[Buffer], algorithm: Checksum = Checksum.BLAKE2B) -> bytes:
    """Return the 16-byte digest of one unit given as several buffers, never joining them.

    The same value as :func:`digest_unit` of their concatenation: the CRC is chained
    (``crc32(view, crc)``), a hash object is fed view by view. Safe to call from a
    worker thread (it touches nothing shared).

    Args:
        views: the unit's bytes, in order (for a generated packet: its page views).
        algorithm: which digest.

    Returns:
        16 bytes.

    Example::

        digest_views([page0, page1], Checksum.CRC32) == digest_unit(page0 + page1, Checksum.CRC32)
    """
    if algorithm is Checksum.CRC32:
        crc = 0
        crc32 = _crc.crc32
        for view in views:
            crc = crc32(view, crc)
        return crc.to_bytes(4, "big") + _CRC_PAD
    hasher = (
        hashlib.blake2b(digest_size=PAGE_DIGEST_SIZE)
        if algorithm is Checksum.BLAKE2B
        else hashlib.sha256()
    )
    for view in views:
        hasher.update(view)
    return hasher.digest()[:PAGE_DIGEST_SIZE]


#: Below this many bytes per call a CRC32 runs in the Trio thread: the stdlib's crc32 does
#: about 4 GB/s here (zlib-ng's over 50), so a 512 KiB packet costs at most ~0.13 ms, less
#: than a thread round trip.
INLINE_CRC32_BYTES = 4 << 20


async def digest_runs_async(data: Buffer, unit_bytes: int, algorithm: Checksum) -> bytes:
    """Like :func:`digest_runs`, off the Trio thread unless it is a cheap CRC32.

    Cryptographic digests run in a worker thread (hashlib releases the GIL); a CRC32 of at
    most :data:`INLINE_CRC32_BYTES` runs inline after a checkpoint, which keeps the
    cancellation point and saves the thread hand-off.

    Args:
        data: a contiguous run of whole units.
        unit_bytes: bytes per unit.
        algorithm: which digest.

    Returns:
        16 bytes per unit.

    Example::

        digests = await digest_runs_async(payload, 128 * 4096, Checksum.CRC32)
    """
    if algorithm is Checksum.CRC32 and len(memoryview(data)) <= INLINE_CRC32_BYTES:
        await trio.lowlevel.checkpoint()
        return digest_runs(data, unit_bytes, algorithm)
    return await trio.to_thread.run_sync(digest_runs, data, unit_bytes, algorithm)


def digest_runs(data: Buffer, unit_bytes: int, algorithm: Checksum = Checksum.BLAKE2B) -> bytes:
    """Return the digests of ``data`` cut into ``unit_bytes`` pieces (the last may be short).

    With ``unit_bytes`` the packet size this is one hash call per packet. Safe to call from
    a worker thread (it touches nothing shared).

    Args:
        data: a contiguous run of whole units.
        unit_bytes: bytes per unit.
        algorithm: which digest.

    Returns:
        16 bytes per unit.

    Example::

        digests = await trio.to_thread.run_sync(digest_runs, payload, 128 * 4096)
    """
    view = memoryview(data)
    if len(view) <= unit_bytes:
        return digest_unit(view, algorithm)
    return b"".join(
        digest_unit(view[offset : offset + unit_bytes], algorithm)
        for offset in range(0, len(view), unit_bytes)
    )


def split_pages(data: Buffer, page_size: int) -> list[memoryview]:
    """Cut a run of pages received as one buffer into page views (no copy)."""
    view = memoryview(data)
    return [view[offset : offset + page_size] for offset in range(0, len(view), page_size)]


@attrs.define(eq=False)
class PageDigests:
    """Unit digests stored in image order, whatever order the units arrive in.

    Args:
        size: image size in bytes.
        page_size: bytes per page.
        unit_pages: pages per digest (the migration uses its packet size).
        algorithm: the digest each unit gets (recorded in the final checksum).

    Example::

        digests = PageDigests(size=config.size, page_size=config.page_size, unit_pages=128)
        unit = 128 * config.page_size
        digests.record(first, await trio.to_thread.run_sync(digest_runs, data, unit), "multifd 0")
        if digests.complete:
            print(digests.checksum().hex())
    """

    size: int
    page_size: int
    unit_pages: int = 1
    algorithm: Checksum = Checksum.BLAKE2B
    _digests: bytearray = attrs.field(init=False)
    _seen: bytearray = attrs.field(init=False)
    received: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if self.unit_pages <= 0:
            raise ValueError(f"unit_pages must be positive, got {self.unit_pages}")
        self._digests = bytearray(self.num_units * PAGE_DIGEST_SIZE)
        self._seen = bytearray(-(-self.num_units // 8))

    @property
    def num_pages(self) -> int:
        """Pages in the image."""
        return -(-self.size // self.page_size)

    @property
    def num_units(self) -> int:
        """Digests in the image (units of ``unit_pages`` pages; the last may be short)."""
        return -(-self.num_pages // self.unit_pages)

    @property
    def unit_bytes(self) -> int:
        """Bytes per unit (the last unit may be shorter)."""
        return self.unit_pages * self.page_size

    @property
    def complete(self) -> bool:
        """True once every page has been recorded."""
        return self.received == self.num_pages

    @property
    def memory(self) -> int:
        """Bytes this object holds for the digests (16 per unit plus one bit)."""
        return len(self._digests) + len(self._seen)

    def _pages_of(self, unit: int) -> str:
        first = unit * self.unit_pages
        last = min(first + self.unit_pages, self.num_pages) - 1
        return f"page {first}" if first == last else f"pages {first}..{last}"

    def record(self, first: int, digests: bytes, channel: str, pages: int | None = None) -> None:
        """Store the digests of the units starting at page ``first``.

        Args:
            first: index of the first page; a multiple of ``unit_pages``.
            digests: from :func:`digest_runs` (or :func:`digest_pages` for one-page units).
            channel: how to name the channel in errors.
            pages: the pages the digests cover, when the caller knows it (checked against
                the units: a run must cover whole units).

        Raises:
            trioqio.MigrationError: the run is outside the image, not aligned to units, does
                not cover whole units, or was received before.
        """
        count, remainder = divmod(len(digests), PAGE_DIGEST_SIZE)
        unit_pages = self.unit_pages
        first_unit, misaligned = divmod(first, unit_pages)
        if remainder or first < 0 or first_unit + count > self.num_units:
            last = first + count * unit_pages - 1
            raise MigrationError(
                f"channel {channel}: field 'first_page': pages {first}..{last} "
                f"outside the image's {self.num_pages} pages",
                channel=channel,
                field="first_page",
                kind="protocol",
            )
        if misaligned:
            raise MigrationError(
                f"channel {channel}: field 'first_page': page {first} does not start a run of "
                f"{unit_pages} pages",
                channel=channel,
                field="first_page",
                kind="protocol",
            )
        covered = min(first + count * unit_pages, self.num_pages) - first
        if pages is not None and pages != covered:
            raise MigrationError(
                f"channel {channel}: field 'num_pages': {pages} pages from page {first}, "
                f"expected {covered} (whole runs of {unit_pages})",
                channel=channel,
                field="num_pages",
                kind="protocol",
            )
        seen = self._seen
        for unit in range(first_unit, first_unit + count):
            byte, bit = unit >> 3, 1 << (unit & 7)
            if seen[byte] & bit:
                raise MigrationError(
                    f"channel {channel}: field 'first_page': {self._pages_of(unit)} received twice",
                    channel=channel,
                    field="first_page",
                    kind="protocol",
                )
            seen[byte] |= bit
        start = first_unit * PAGE_DIGEST_SIZE
        self._digests[start : start + len(digests)] = digests
        self.received += covered

    def first_missing(self) -> int | None:
        """Return the lowest page index not yet recorded, or None if complete."""
        for byte_index, byte in enumerate(self._seen):
            if byte != 0xFF:
                for bit in range(8):
                    unit = byte_index * 8 + bit
                    if unit >= self.num_units:
                        return None
                    if not byte & (1 << bit):
                        return unit * self.unit_pages
        return None

    def checksum(self) -> bytes:
        """Return the 32-byte image checksum.

        It covers the geometry, the unit size, the algorithm and every unit digest.

        Raises:
            trioqio.MigrationError: pages are missing (names the first one).
        """
        missing = self.first_missing()
        if missing is not None:
            raise MigrationError(
                f"image incomplete: {self.num_pages - self.received} of {self.num_pages} "
                f"pages missing (first: page {missing})",
                kind="broken",
            )
        final = hashlib.blake2b(digest_size=32, person=_PERSON)
        final.update(
            struct.pack(">QIIB", self.size, self.page_size, self.unit_pages, self.algorithm)
        )
        final.update(self._digests)
        return final.digest()
