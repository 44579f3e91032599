"""The migration's copy-free paths give the bytes and digests of the reference definitions.

The reference: page ``i`` is :meth:`GeneratedImage.page` (one ``page_offset`` per page), a
packet is the pages joined, its digest :func:`digest_unit` of the joined bytes. The fast
paths: :meth:`GeneratedImage.pages` / ``read_views`` step the offsets arithmetically, the
source writes the views with one ``writev`` and chains the CRC over them
(:func:`digest_views`), and the destination reads into recycled buffers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trioqio.migration._image import FileImage, GeneratedImage
from trioqio.migration._protocol import Checksum
from trioqio.migration._verify import digest_runs, digest_unit, digest_views

# Odd sizes: a short last page of 1 byte, of page_size - 1 bytes, a whole last page, pages
# that are not a power of two, and an image smaller than one page.
GEOMETRIES = [
    (130 * 4096 + 1, 4096),
    (257 * 4096 - 1, 4096),
    (64 * 4096, 4096),
    (77 * 1000 + 333, 1000),
    (100, 4096),
]


def _reference_pages(image: GeneratedImage, first: int, count: int) -> list[bytes]:
    return [bytes(image.page(index)) for index in range(first, first + count)]


@pytest.mark.parametrize(("size", "page_size"), GEOMETRIES)
async def test_views_equal_the_per_page_definition(size: int, page_size: int) -> None:
    image = GeneratedImage(size=size, seed=11, page_size=page_size)
    num_pages = -(-size // page_size)
    for packet in (1, 16, 128):
        for first in range(0, num_pages, packet):
            count = min(packet, num_pages - first)
            expected = _reference_pages(image, first, count)
            views = await image.read_views(first, count)
            assert [bytes(view) for view in views] == expected
            assert bytes(await image.read_run(first, count)) == b"".join(expected)
    assert sum(len(view) for view in image.pages(0, num_pages)) == size


@pytest.mark.parametrize("algorithm", list(Checksum))
@pytest.mark.parametrize(("size", "page_size"), GEOMETRIES)
async def test_chained_digest_equals_the_joined_digest(
    size: int, page_size: int, algorithm: Checksum
) -> None:
    image = GeneratedImage(size=size, seed=3, page_size=page_size)
    num_pages = -(-size // page_size)
    packet = 16
    for first in range(0, num_pages, packet):
        count = min(packet, num_pages - first)
        joined = b"".join(_reference_pages(image, first, count))
        views = await image.read_views(first, count)
        assert digest_views(views, algorithm) == digest_unit(joined, algorithm)
        assert digest_views(views, algorithm) == digest_runs(joined, packet * page_size, algorithm)


def test_digest_views_of_nothing_is_the_digest_of_nothing() -> None:
    for algorithm in Checksum:
        assert digest_views([], algorithm) == digest_unit(b"", algorithm)
        assert digest_views([b"", b"ab", b"", b"c"], algorithm) == digest_unit(b"abc", algorithm)


def test_pages_outside_the_image_are_refused() -> None:
    image = GeneratedImage(size=10 * 4096 + 5, seed=1)
    assert image.pages(0, 0) == []
    assert len(image.pages(10, 1)[0]) == 5
    for first, count in [(10, 2), (11, 1), (-1, 2)]:
        with pytest.raises(IndexError, match="not all inside an image of 40965 bytes"):
            image.pages(first, count)


async def test_file_image_views_are_its_run(tmp_path: Path) -> None:
    path = tmp_path / "image.bin"
    data = bytes(range(256)) * 40 + b"tail"
    path.write_bytes(data)
    image = await FileImage.open(path, page_size=1024)
    try:
        views = await image.read_views(8, 3)
        assert b"".join(bytes(view) for view in views) == data[8 * 1024 :]
        assert b"".join(bytes(view) for view in views) == bytes(await image.read_run(8, 3))
    finally:
        await image.aclose()
