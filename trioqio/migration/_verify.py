"""The image checksum both ends compute (QEMU has none; its nearest kin is ``multifd`` packet
sequence checks and the optional ``x-ignore-shared`` comparisons in tests).

Pages arrive at the destination in any order, over any channel, and the destination must
not keep a copy of the image. So the checksum is a two-level hash:

1. each page gets a 16-byte BLAKE2b digest (:func:`digest_pages`, run in a worker thread:
   ``hashlib`` releases the GIL for buffers over 2 KiB, so channels hash in parallel);
2. the digests are stored at their page's index in one ``bytearray``
   (:meth:`PageDigests.record`, in the Trio thread), with one bit per page saying it came;
3. at the end the image checksum is the 32-byte BLAKE2b of the geometry and all page
   digests in page order (:meth:`PageDigests.checksum`).

The source computes the same thing from the pages it sends. **Memory per page: 16 bytes of
digest plus one bit**, so a 4 GiB image of 4 KiB pages needs 16.1 MiB whatever the order of
arrival. A page delivered twice, or a page missing at the end, is reported by index.

Differences from QEMU: QEMU trusts the transport and checks nothing end to end.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from .._errors import MigrationError

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["PAGE_DIGEST_SIZE", "PageDigests", "digest_pages"]

#: Bytes of digest kept per page.
PAGE_DIGEST_SIZE = 16
_PERSON = b"trioqio-migrate"


def digest_pages(pages: Sequence[Buffer]) -> bytes:
    """Return the concatenated 16-byte BLAKE2b digests of ``pages``.

    Safe to call from a worker thread (it touches nothing shared).

    Args:
        pages: the page contents, in order.

    Returns:
        ``16 * len(pages)`` bytes.

    Example::

        digests = await trio.to_thread.run_sync(digest_pages, pages)
    """
    blake2b = hashlib.blake2b
    return b"".join(blake2b(page, digest_size=PAGE_DIGEST_SIZE).digest() for page in pages)


def split_pages(data: Buffer, page_size: int) -> list[memoryview]:
    """Cut a run of pages received as one buffer into page views (no copy)."""
    view = memoryview(data)
    return [view[offset : offset + page_size] for offset in range(0, len(view), page_size)]


@attrs.define(eq=False)
class PageDigests:
    """Per-page digests stored in page order, whatever order the pages arrive in.

    Args:
        size: image size in bytes.
        page_size: bytes per page.

    Example::

        digests = PageDigests(size=config.size, page_size=config.page_size)
        digests.record(first, await trio.to_thread.run_sync(digest_pages, pages), "multifd 0")
        if digests.complete:
            print(digests.checksum().hex())
    """

    size: int
    page_size: int
    _digests: bytearray = attrs.field(init=False)
    _seen: bytearray = attrs.field(init=False)
    received: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._digests = bytearray(self.num_pages * PAGE_DIGEST_SIZE)
        self._seen = bytearray(-(-self.num_pages // 8))

    @property
    def num_pages(self) -> int:
        """Pages in the image."""
        return -(-self.size // self.page_size)

    @property
    def complete(self) -> bool:
        """True once every page has been recorded."""
        return self.received == self.num_pages

    @property
    def memory(self) -> int:
        """Bytes this object holds for the pages (16 per page plus one bit)."""
        return len(self._digests) + len(self._seen)

    def record(self, first: int, digests: bytes, channel: str) -> None:
        """Store the digests of pages ``first ..`` (as many as ``digests`` holds).

        Args:
            first: index of the first page.
            digests: from :func:`digest_pages`.
            channel: how to name the channel in errors.

        Raises:
            trioqio.MigrationError: a page is outside the image or was received before.
        """
        count, remainder = divmod(len(digests), PAGE_DIGEST_SIZE)
        if remainder or first < 0 or first + count > self.num_pages:
            raise MigrationError(
                f"channel {channel}: field 'first_page': pages {first}..{first + count - 1} "
                f"outside the image's {self.num_pages} pages"
            )
        seen = self._seen
        for index in range(first, first + count):
            byte, bit = index >> 3, 1 << (index & 7)
            if seen[byte] & bit:
                raise MigrationError(
                    f"channel {channel}: field 'first_page': page {index} received twice"
                )
            seen[byte] |= bit
        start = first * PAGE_DIGEST_SIZE
        self._digests[start : start + len(digests)] = digests
        self.received += count

    def first_missing(self) -> int | None:
        """Return the lowest page index not yet recorded, or None if complete."""
        for byte_index, byte in enumerate(self._seen):
            if byte != 0xFF:
                for bit in range(8):
                    index = byte_index * 8 + bit
                    if index >= self.num_pages:
                        return None
                    if not byte & (1 << bit):
                        return index
        return None

    def checksum(self) -> bytes:
        """Return the 32-byte image checksum.

        Raises:
            trioqio.MigrationError: pages are missing (names the first one).
        """
        missing = self.first_missing()
        if missing is not None:
            raise MigrationError(
                f"image incomplete: {self.num_pages - self.received} of {self.num_pages} "
                f"pages missing (first: page {missing})"
            )
        final = hashlib.blake2b(digest_size=32, person=_PERSON)
        final.update(struct.pack(">QI", self.size, self.page_size))
        final.update(self._digests)
        return final.digest()
