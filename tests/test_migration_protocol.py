"""Tests for the sans-IO migration protocol, the image generator and the verifier."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
import trio

from trioqio import MigrationError
from trioqio.migration._image import SPAN, GeneratedImage, page_offset
from trioqio.migration._protocol import (
    MAIN_MAGIC,
    MULTIFD_INIT_SIZE,
    MULTIFD_MAGIC,
    PACKET_HEADER_SIZE,
    Checksum,
    Config,
    End,
    ErrorMessage,
    ImageKind,
    MessageType,
    MultiFDInit,
    PacketFlags,
    PacketHeader,
    Result,
    ResultStatus,
    encode_message,
    pack_main_hello,
    parse_main_hello,
    parse_message,
    parse_message_header,
)
from trioqio.migration._verify import (
    PAGE_DIGEST_SIZE,
    PageDigests,
    digest_pages,
    digest_runs,
    digest_runs_async,
)

UUID = bytes(range(16))
OTHER_UUID = bytes(range(1, 17))
CONFIG = Config(uuid=UUID, size=10 * 4096 + 100, page_size=4096, channels=4, packet_pages=4)


# -- multifd init header --------------------------------------------------------------


def test_init_header_layout_matches_qemu() -> None:
    data = MultiFDInit(uuid=UUID, id=3).pack()
    assert len(data) == MULTIFD_INIT_SIZE == 64
    assert data[:4] == bytes.fromhex("11223344")
    assert data[4:8] == bytes.fromhex("00000001")
    assert data[8:24] == UUID
    assert data[24] == 3
    assert data[25:] == bytes(39)
    parsed = MultiFDInit.parse(data, channel="c", expected_uuid=UUID, channels=4)
    assert parsed == MultiFDInit(uuid=UUID, id=3)


def _init(magic: int = MULTIFD_MAGIC, version: int = 1, uuid: bytes = UUID, id: int = 0) -> bytes:
    return struct.pack(">II16sB7x32x", magic, version, uuid, id)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (_init(magic=0x11223345), "magic"),
        (_init(magic=0x5145564D), "magic"),
        (_init(version=2), "version"),
        (_init(version=0), "version"),
        (_init(uuid=OTHER_UUID), "uuid"),
        (_init(id=4), "id"),
        (_init(id=255), "id"),
        (_init()[:63], "length"),
        (_init() + b"x", "length"),
    ],
)
def test_init_header_bad_field(data: bytes, field: str) -> None:
    with pytest.raises(MigrationError, match=rf"channel accepted #7: field '{field}'"):
        MultiFDInit.parse(data, channel="accepted #7", expected_uuid=UUID, channels=4)


def test_init_header_uuid_error_shows_both_uuids() -> None:
    with pytest.raises(MigrationError) as info:
        MultiFDInit.parse(_init(uuid=OTHER_UUID), channel="x", expected_uuid=UUID)
    assert "01020304-" in str(info.value)
    assert "00010203-" in str(info.value)


def test_init_header_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        MultiFDInit(uuid=b"short", id=0)
    with pytest.raises(ValueError, match="channel id"):
        MultiFDInit(uuid=UUID, id=256)


# -- page packets ---------------------------------------------------------------------


def test_packet_header_roundtrip() -> None:
    header = PacketHeader(first_page=4, num_pages=4, length=4 * 4096)
    data = header.pack()
    assert len(data) == PACKET_HEADER_SIZE
    assert data[:4] == b"MFPK"
    assert PacketHeader.parse(data, channel="c", config=CONFIG) == header
    # The last run ends on the short page.
    last = PacketHeader(first_page=8, num_pages=3, length=2 * 4096 + 100)
    assert PacketHeader.parse(last.pack(), channel="c", config=CONFIG) == last
    end = PacketHeader(first_page=0, num_pages=0, length=0, flags=PacketFlags.END)
    assert PacketHeader.parse(end.pack(), channel="c", config=CONFIG) == end


def _packet(
    magic: int = 0x4D46504B,
    flags: int = 0,
    reserved: int = 0,
    first: int = 0,
    count: int = 1,
    length: int = 4096,
) -> bytes:
    return struct.pack(">IHHQII", magic, flags, reserved, first, count, length)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (_packet(magic=0x11223344), "magic"),
        (_packet(flags=2), "flags"),
        (_packet(reserved=1), "reserved"),
        (_packet(count=0, length=0), "num_pages"),
        (_packet(count=5, length=5 * 4096), "num_pages"),
        (_packet(first=11), "first_page"),
        (_packet(first=10, count=2, length=4096 + 100), "first_page"),
        (_packet(first=2**64 - 1), "first_page"),
        (_packet(length=4095), "length"),
        (_packet(length=2**32 - 1), "length"),
        (_packet(first=10, count=1, length=4096), "length"),
        (_packet(flags=1, count=1), "num_pages"),
        (_packet()[:20], "length"),
    ],
)
def test_packet_header_bad_field(data: bytes, field: str) -> None:
    with pytest.raises(MigrationError, match=rf"channel multifd 2: field '{field}'"):
        PacketHeader.parse(data, channel="multifd 2", config=CONFIG)


# -- main channel ----------------------------------------------------------------------


def test_main_hello() -> None:
    data = pack_main_hello()
    assert data[:4] == MAIN_MAGIC == b"QEVM"
    parse_main_hello(data, channel="main")
    with pytest.raises(MigrationError, match="channel main: field 'magic'"):
        parse_main_hello(b"QEVX" + data[4:], channel="main")
    with pytest.raises(MigrationError, match="channel main: field 'version'"):
        parse_main_hello(b"QEVM\0\0\0\2", channel="main")
    with pytest.raises(MigrationError, match="channel main: field 'length'"):
        parse_main_hello(b"QEVM", channel="main")


@pytest.mark.parametrize(
    "message",
    [
        CONFIG,
        Config(uuid=UUID, size=0, page_size=512, channels=1, packet_pages=1, kind=ImageKind.FILE),
        End(pages=11, checksum=bytes(range(32))),
        Result(status=ResultStatus.MISMATCH, pages=3, checksum=bytes(32)),
        ErrorMessage(text="destination: disk full \N{SNOWMAN}"),
    ],
)
def test_message_roundtrip(message: Config | End | Result | ErrorMessage) -> None:
    data = encode_message(message)
    kind, length = parse_message_header(data[:8], channel="main")
    assert length == len(data) - 8
    assert parse_message(kind, data[8:], channel="main") == message


@pytest.mark.parametrize(
    ("header", "field"),
    [
        (struct.pack(">B3xI", 9, 0), "type"),
        (struct.pack(">B3xI", 0, 0), "type"),
        (struct.pack(">B3xI", MessageType.CONFIG, 2**32 - 1), "length"),
        (struct.pack(">B3xI", MessageType.END, 39), "length"),
        (struct.pack(">B3xI", MessageType.ERROR, 4097), "length"),
        (b"\1\0\0", "length"),
    ],
)
def test_message_header_bad_field(header: bytes, field: str) -> None:
    with pytest.raises(MigrationError, match=rf"channel main: field '{field}'"):
        parse_message_header(header, channel="main")


def _config_payload(**changes: int) -> bytes:
    values = {
        "size": 4096,
        "page_size": 4096,
        "channels": 4,
        "packet_pages": 128,
        "seed": 1,
        "kind": 0,
        "checksum": 0,
    }
    values.update(changes)
    return struct.pack(
        ">16sQIIIQBB6x",
        UUID,
        values["size"],
        values["page_size"],
        values["channels"],
        values["packet_pages"],
        values["seed"],
        values["kind"],
        values["checksum"],
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"page_size": 100}, "page_size"),
        ({"page_size": 2**21}, "page_size"),
        ({"channels": 0}, "channels"),
        ({"channels": 257}, "channels"),
        ({"packet_pages": 0}, "packet_pages"),
        ({"packet_pages": 1025}, "packet_pages"),
        ({"packet_pages": 1024, "page_size": 2**20}, "packet_pages"),
        ({"size": 2**63}, "size"),
        ({"kind": 7}, "kind"),
        ({"checksum": 9}, "checksum"),
    ],
)
def test_config_bad_field(changes: dict[str, int], field: str) -> None:
    with pytest.raises(MigrationError, match=rf"channel main: field '{field}'"):
        parse_message(MessageType.CONFIG, _config_payload(**changes), channel="main")


def test_result_bad_status() -> None:
    payload = struct.pack(">BQ32s", 9, 0, bytes(32))
    with pytest.raises(MigrationError, match="field 'status'"):
        parse_message(MessageType.RESULT, payload, channel="main")


def test_config_geometry() -> None:
    assert CONFIG.num_pages == 11
    assert CONFIG.packet_bytes == 4 * 4096
    assert CONFIG.run_length(8, 3) == 2 * 4096 + 100
    assert Config(uuid=UUID, size=0, page_size=4096, channels=1, packet_pages=1).num_pages == 0


# -- image -----------------------------------------------------------------------------


async def test_generated_image_is_deterministic_and_distinct() -> None:
    image = GeneratedImage(size=64 * 4096 + 10, seed=7)
    again = GeneratedImage(size=64 * 4096 + 10, seed=7)
    other = GeneratedImage(size=64 * 4096 + 10, seed=8)
    pages = await image.read_pages(0, 65)
    assert [bytes(p) for p in pages] == [bytes(p) for p in await again.read_pages(0, 65)]
    assert bytes(pages[0]) != bytes(other.page(0))
    assert len({bytes(p) for p in pages}) == 65
    assert [len(p) for p in pages] == [4096] * 64 + [10]
    with pytest.raises(IndexError):
        image.page(65)


def test_page_offsets_are_distinct_for_the_first_span_pages() -> None:
    offsets = {page_offset(index) for index in range(SPAN)}
    assert len(offsets) == SPAN


# -- verifier --------------------------------------------------------------------------


def test_checksum_independent_of_arrival_order() -> None:
    image = GeneratedImage(size=CONFIG.size, seed=3)
    pages = image.pages(0, CONFIG.num_pages)
    forward = PageDigests(size=CONFIG.size, page_size=4096)
    forward.record(0, digest_pages(pages), "a")
    backward = PageDigests(size=CONFIG.size, page_size=4096)
    for index in reversed(range(CONFIG.num_pages)):
        assert not backward.complete
        backward.record(index, digest_pages([pages[index]]), "b")
    assert forward.complete
    assert backward.complete
    assert forward.checksum() == backward.checksum()
    assert forward.memory == CONFIG.num_pages * PAGE_DIGEST_SIZE + 2


def test_checksum_detects_corruption_and_misplacement() -> None:
    image = GeneratedImage(size=8 * 4096, seed=3)
    pages = [bytes(p) for p in image.pages(0, 8)]
    good = PageDigests(size=8 * 4096, page_size=4096)
    good.record(0, digest_pages(pages), "a")
    corrupt = bytearray(pages[5])
    corrupt[100] ^= 1
    bad = PageDigests(size=8 * 4096, page_size=4096)
    bad.record(0, digest_pages([*pages[:5], bytes(corrupt), *pages[6:]]), "a")
    assert bad.checksum() != good.checksum()
    swapped = PageDigests(size=8 * 4096, page_size=4096)
    swapped.record(0, digest_pages([pages[1], pages[0], *pages[2:]]), "a")
    assert swapped.checksum() != good.checksum()
    assert (
        good.checksum()
        == hashlib.blake2b(
            struct.pack(">QIIB", 8 * 4096, 4096, 1, 0) + digest_pages(pages),
            digest_size=32,
            person=b"trioqio-migrate",
        ).digest()
    )


def test_verifier_rejects_duplicates_missing_and_out_of_range() -> None:
    digests = PageDigests(size=10 * 4096, page_size=4096)
    one = digest_pages([os.urandom(4096)])
    digests.record(3, one, "multifd 1")
    with pytest.raises(MigrationError, match="channel multifd 1: field 'first_page': page 3"):
        digests.record(3, one, "multifd 1")
    with pytest.raises(MigrationError, match="field 'first_page'"):
        digests.record(10, one, "multifd 1")
    with pytest.raises(MigrationError, match=r"9 of 10 pages missing \(first: page 0\)"):
        digests.checksum()
    assert digests.first_missing() == 0


@pytest.mark.parametrize("algorithm", list(Checksum))
def test_packet_units_detect_corruption_with_every_algorithm(algorithm: Checksum) -> None:
    image = GeneratedImage(size=10 * 4096 + 100, seed=5)
    unit = 4 * 4096

    def record(data: bytes) -> bytes:
        digests = PageDigests(size=image.size, page_size=4096, unit_pages=4, algorithm=algorithm)
        for first in reversed(range(0, 11, 4)):  # any order
            run = data[first * 4096 : (first + 4) * 4096]
            digests.record(first, digest_runs(run, unit, algorithm), "m", -(-len(run) // 4096))
        return digests.checksum()

    data = image.run(0, 11)
    assert len(data) == image.size
    corrupt = bytearray(data)
    corrupt[9 * 4096 + 7] ^= 0x10
    assert record(data) == record(data)
    assert record(bytes(corrupt)) != record(data)
    one_page = PageDigests(size=image.size, page_size=4096, algorithm=algorithm)
    one_page.record(0, digest_pages(image.pages(0, 11), algorithm), "m")
    assert one_page.checksum() != record(data)  # the unit size is part of the checksum


def test_packet_units_reject_misaligned_short_and_duplicate_runs() -> None:
    digests = PageDigests(size=10 * 4096, page_size=4096, unit_pages=4)
    one = digest_runs(os.urandom(4 * 4096), 4 * 4096)
    with pytest.raises(MigrationError, match="field 'first_page': page 2 does not start"):
        digests.record(2, one, "multifd 0", 4)
    with pytest.raises(MigrationError, match="field 'num_pages': 3 pages from page 4"):
        digests.record(4, one, "multifd 0", 3)
    digests.record(4, one, "multifd 0", 4)
    with pytest.raises(MigrationError, match=r"field 'first_page': pages 4..7 received twice"):
        digests.record(4, one, "multifd 0", 4)
    digests.record(8, one, "multifd 0", 2)  # the last unit is short
    assert digests.received == 6
    assert digests.first_missing() == 0
    assert digests.memory == 3 * PAGE_DIGEST_SIZE + 1


def test_checksum_names() -> None:
    assert Checksum.from_name("SHA256") is Checksum.SHA256
    assert [c.label for c in Checksum] == ["blake2b", "sha256", "crc32"]
    with pytest.raises(ValueError, match="unknown checksum 'md5'"):
        Checksum.from_name("md5")
    config = Config(uuid=UUID, size=1, page_size=512, channels=1, packet_pages=1,
                    checksum=Checksum.CRC32)  # fmt: skip
    data = encode_message(config)
    assert parse_message(MessageType.CONFIG, data[8:], channel="main") == config


@pytest.mark.parametrize("algorithm", list(Checksum))
async def test_digest_runs_async_matches_and_is_a_cancellation_point(
    algorithm: Checksum,
) -> None:
    """CRC32 runs inline, the others in a thread; same digests, and both can be cancelled."""
    payload = os.urandom(3 * 4096 + 17)
    assert await digest_runs_async(payload, 4096, algorithm) == digest_runs(
        payload, 4096, algorithm
    )
    with trio.CancelScope() as scope:
        scope.cancel()
        await digest_runs_async(payload, 4096, algorithm)
        raise AssertionError("not a cancellation point")  # pragma: no cover
    assert scope.cancelled_caught
