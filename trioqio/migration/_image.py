"""The RAM image a migration sends (QEMU ``migration/ram.c``, much simplified).

QEMU migrates a guest's RAM: it walks the dirty bitmap and hands pages to the multifd send
threads. trioqio's demo has no guest, so the image is either

* :class:`GeneratedImage`: ``size`` bytes of deterministic pseudo-random pages from a
  seed, produced as they are sent and never held whole in memory, or
* :class:`FileImage`: a file read page run by page run through :class:`trioqio.FileChannel`
  (``pread``).

How pages are generated, and why it is fast: one random block of
``SPAN + page_size`` bytes (1 MiB + one page) is drawn from ``random.Random(seed)`` once per
run. Page ``i`` is the slice of that block starting at byte ``(i * 0x9E3779B1) mod SPAN``.
Because the multiplier is odd and ``SPAN`` a power of two, the first ``SPAN`` (2**20) pages
start at distinct offsets, so every page of an image up to 4 GiB (with 4 KiB pages) differs
from every other one: a page delivered to the wrong index changes the checksum. A page is
a ``memoryview`` into the block (no copy); the source asks for a whole packet with
:meth:`GeneratedImage.read_views` (the page views, their offsets stepped arithmetically),
chains the CRC over them and writes them with one ``writev`` (header plus one iovec per
page): no byte is copied in user space. :meth:`GeneratedImage.read_run` joins the pages
into one buffer instead (one ``memcpy`` of 512 KiB), for the digests that run in a worker
thread and want one large call.

Differences from QEMU: no dirty tracking and no iterations; each page is sent once.
"""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

from .._errors import MigrationError
from ._protocol import ImageKind

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from .._channel_file import FileChannel

__all__ = ["SPAN", "FileImage", "GeneratedImage", "Image", "page_offset"]

#: Distinct start offsets in the random block (a power of two).
SPAN = 1 << 20
_MULTIPLIER = 0x9E3779B1  # odd, so i -> i * M mod 2**20 is a bijection


def page_offset(index: int) -> int:
    """Return where page ``index`` starts in the random block."""
    return (index * _MULTIPLIER) & (SPAN - 1)


class Image(Protocol):
    """What the source needs from an image."""

    @property
    def size(self) -> int: ...

    @property
    def page_size(self) -> int: ...

    @property
    def seed(self) -> int: ...

    @property
    def kind(self) -> ImageKind: ...

    async def read_pages(self, first: int, count: int) -> Sequence[memoryview]:
        """Return pages ``first .. first + count - 1`` (the last page may be short)."""
        ...

    async def read_run(self, first: int, count: int) -> Buffer:
        """Return pages ``first .. first + count - 1`` as one contiguous buffer."""
        ...

    async def read_views(self, first: int, count: int) -> Sequence[bytes | memoryview]:
        """Return the same bytes as :meth:`read_run`, as buffers to send in order (no copy
        where the image can avoid one); each is flat bytes, so ``len()`` counts bytes."""
        ...

    async def aclose(self) -> None:
        """Release what the image holds."""
        ...


@attrs.define(eq=False)
class GeneratedImage:
    """Deterministic pseudo-random pages from a seed, produced on demand.

    Memory: one random block of 1 MiB plus one page, whatever ``size`` is.

    Args:
        size: image size in bytes.
        seed: the generator's seed; the same seed gives the same image everywhere.
        page_size: bytes per page.

    Example::

        image = GeneratedImage(size=1 << 30, seed=42, page_size=4096)
        pages = await image.read_pages(0, 128)
    """

    size: int
    seed: int
    page_size: int = 4096
    _block: memoryview = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"image size must not be negative, got {self.size}")
        if self.page_size <= 0:
            raise ValueError(f"page size must be positive, got {self.page_size}")
        self._block = memoryview(random.Random(self.seed).randbytes(SPAN + self.page_size))

    @property
    def kind(self) -> ImageKind:
        """:attr:`ImageKind.GENERATED`."""
        return ImageKind.GENERATED

    def page(self, index: int) -> memoryview:
        """Return page ``index`` (a read-only view into the random block).

        Args:
            index: the page number.

        Returns:
            ``page_size`` bytes, fewer for the image's last page.
        """
        start = index * self.page_size
        length = min(self.page_size, self.size - start)
        if length <= 0:
            raise IndexError(f"page {index} is outside an image of {self.size} bytes")
        offset = page_offset(index)
        return self._block[offset : offset + length]

    def pages(self, first: int, count: int) -> list[memoryview]:
        """Return ``count`` pages starting at ``first`` (views, no copy).

        The same views as ``[self.page(i) for i in range(first, first + count)]``; the
        offsets are stepped arithmetically (``+ multiplier`` then a mask) instead of one
        :meth:`page` call per page.

        Raises:
            IndexError: a page is outside the image.
        """
        if count <= 0:
            return []
        page_size = self.page_size
        end = first + count
        last_length = self.size - (end - 1) * page_size
        if first < 0 or last_length <= 0:
            raise IndexError(
                f"pages {first}..{end - 1} are not all inside an image of {self.size} bytes"
            )
        block = self._block
        starts = map((SPAN - 1).__and__, range(first * _MULTIPLIER, end * _MULTIPLIER, _MULTIPLIER))
        views = [block[start : start + page_size] for start in starts]
        if last_length < page_size:
            views[-1] = views[-1][:last_length]
        return views

    async def read_pages(self, first: int, count: int) -> Sequence[memoryview]:
        """Return pages as :meth:`pages` does (no I/O; here for the :class:`Image` shape)."""
        return self.pages(first, count)

    def run(self, first: int, count: int) -> bytes:
        """Return ``count`` pages starting at ``first`` as one buffer (a copy)."""
        return b"".join(self.pages(first, count))

    async def read_run(self, first: int, count: int) -> Buffer:
        """Return pages as :meth:`run` does: one copy, so a worker thread hashes a packet in
        one call (the GIL released throughout) and it is written with two iovecs."""
        return self.run(first, count)

    async def read_views(self, first: int, count: int) -> Sequence[bytes | memoryview]:
        """Return the page views as :meth:`pages` does (no copy: one iovec per page)."""
        return self.pages(first, count)

    async def aclose(self) -> None:
        """Nothing to release; present for the :class:`Image` shape."""


@attrs.define(eq=False)
class FileImage:
    """A file's content as the image, read with ``pread`` through a :class:`FileChannel`.

    Memory: the pages of the packet being read (one packet per sending channel).

    Example::

        image = await FileImage.open("/var/tmp/ram.img", page_size=4096)
        try:
            pages = await image.read_pages(0, 128)
        finally:
            await image.aclose()
    """

    channel: FileChannel
    size: int
    page_size: int = 4096

    @property
    def seed(self) -> int:
        """0: a file image has no seed."""
        return 0

    @property
    def kind(self) -> ImageKind:
        """:attr:`ImageKind.FILE`."""
        return ImageKind.FILE

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, page_size: int = 4096) -> FileImage:
        """Open ``path`` read-only and size it.

        Args:
            path: a regular file.
            page_size: bytes per page.

        Returns:
            The image.

        Raises:
            OSError: the file cannot be opened.
            trioqio.MigrationError: it is not a regular file.
        """
        from .._channel_file import open_file

        channel = await open_file(path, os.O_RDONLY)
        try:
            status = os.fstat(channel.fileno())
            size = status.st_size
            if not stat.S_ISREG(status.st_mode):
                raise MigrationError(
                    f"--image {os.fspath(path)!r} is not a regular file",
                    field="image",
                    kind="local",
                )
        except BaseException:
            await channel.aclose()
            raise
        return cls(channel=channel, size=size, page_size=page_size)

    async def read_pages(self, first: int, count: int) -> Sequence[memoryview]:
        """Read ``count`` pages from ``first`` with one ``pread``.

        Raises:
            trioqio.MigrationError: the file shrank under us.
        """
        view = memoryview(await self.read_run(first, count))
        return [
            view[offset : offset + self.page_size] for offset in range(0, len(view), self.page_size)
        ]

    async def read_run(self, first: int, count: int) -> Buffer:
        """Read ``count`` pages from ``first`` with one ``pread``, as one buffer.

        Raises:
            trioqio.MigrationError: the file shrank under us.
        """
        return await self._pread_run(first, count)

    async def _pread_run(self, first: int, count: int) -> bytes:
        start = first * self.page_size
        length = min(self.size, (first + count) * self.page_size) - start
        data = await self.channel.pread(length, start)
        if len(data) != length:
            raise MigrationError(
                f"image file {self.channel.name}: read {len(data)} of {length} bytes at "
                f"offset {start} (did the file shrink?)",
                field="image",
                kind="local",
            )
        return data

    async def read_views(self, first: int, count: int) -> Sequence[bytes | memoryview]:
        """Return :meth:`read_run`'s buffer as the only item (one ``pread``, no further copy).

        Raises:
            trioqio.MigrationError: the file shrank under us.
        """
        return [await self._pread_run(first, count)]

    async def aclose(self) -> None:
        """Close the file."""
        await self.channel.aclose()
