"""The migration wire format, sans-IO (QEMU ``migration/multifd.c``, ``migration/savevm.c``).

Three kinds of bytes travel between a migration source and destination:

* the **multifd init header**: 64 bytes, big-endian ``>II16sB7x32x`` (magic ``0x11223344``,
  version 1, the VM's 16-byte uuid, the channel id), the first thing on every multifd
  channel, exactly as QEMU's ``MultiFDInit_t``;
* **page packets** on the multifd channels: a 24-byte header (magic ``"MFPK"``, flags,
  first page index, page count, payload length) followed by the pages, one after another;
  a packet with the ``END`` flag and no pages closes the channel's stream;
* **main-channel messages**: the channel opens with the ``"QEVM"`` magic and a version
  (QEMU's ``QEMU_VM_FILE_MAGIC``), then carries typed messages (``CONFIG``, ``END``,
  ``RESULT``, ``ERROR``), each an 8-byte header (type, reserved, payload length) plus a
  payload whose length the type fixes or bounds.

Nothing here touches a socket: every function takes and returns bytes, and every check
happens before the caller allocates a buffer for the payload, so a hostile length field
cannot make the receiver allocate more than the negotiated packet size.

Differences from QEMU: the page packet is simpler than ``MultiFDPacket_t`` (no ramblock
name, no per-page offsets: a packet carries a run of consecutive pages) and the main channel
carries a tiny message set of our own instead of QEMU's device-state stream.
"""

from __future__ import annotations

import enum
import struct
import uuid as uuid_module

import attrs

from .._errors import MigrationError

__all__ = [
    "MAIN_MAGIC",
    "MAIN_VERSION",
    "MAX_PACKET_PAGES",
    "MAX_PAGE_SIZE",
    "MULTIFD_INIT_SIZE",
    "MULTIFD_MAGIC",
    "MULTIFD_VERSION",
    "PACKET_HEADER_SIZE",
    "PACKET_MAGIC",
    "DEFAULT_CHECKSUM",
    "Checksum",
    "Config",
    "End",
    "ErrorMessage",
    "MessageType",
    "MultiFDInit",
    "PacketFlags",
    "PacketHeader",
    "Result",
    "ResultStatus",
    "encode_message",
    "pack_main_hello",
    "parse_main_hello",
    "parse_message",
    "parse_message_header",
]

#: QEMU_VM_FILE_MAGIC: the first four bytes of the main channel.
MAIN_MAGIC = b"QEVM"
#: Version of this main-channel protocol (sent after the magic).
MAIN_VERSION = 1
MAIN_HELLO = struct.Struct(">4sI")

#: MULTIFD_MAGIC and MULTIFD_VERSION from QEMU's migration/multifd.h.
MULTIFD_MAGIC = 0x11223344
MULTIFD_VERSION = 1
_MULTIFD_INIT = struct.Struct(">II16sB7x32x")
MULTIFD_INIT_SIZE = _MULTIFD_INIT.size  # 64
MAX_CHANNELS = 255  # the id is one byte

#: ``"MFPK"``: the first four bytes of every page packet.
PACKET_MAGIC = 0x4D46504B
_PACKET_HEADER = struct.Struct(">IHHQII")
PACKET_HEADER_SIZE = _PACKET_HEADER.size  # 24
#: Upper bounds a receiver enforces whatever the config says.
MAX_PAGE_SIZE = 1 << 20
MAX_PACKET_PAGES = 1024
MAX_PACKET_BYTES = 16 << 20

_MESSAGE_HEADER = struct.Struct(">B3xI")
MESSAGE_HEADER_SIZE = _MESSAGE_HEADER.size  # 8
_CONFIG = struct.Struct(">16sQIIIQBB6x")
_END = struct.Struct(">Q32s")
_RESULT = struct.Struct(">BQ32s")
MAX_ERROR_TEXT = 4096
DIGEST_SIZE = 32


def _fail(channel: str, field: str, problem: str) -> MigrationError:
    return MigrationError(
        f"channel {channel}: field {field!r}: {problem}",
        channel=channel,
        field=field,
        kind="protocol",
    )


# -- multifd init header ---------------------------------------------------------------


@attrs.frozen(kw_only=True)
class MultiFDInit:
    """The 64-byte header opening a multifd channel (QEMU ``MultiFDInit_t``).

    Attributes:
        uuid: the VM's 16-byte uuid; the destination rejects any other.
        id: the channel's number, 0 to N-1; it places the channel, so accept order does
            not matter.

    Example::

        header = MultiFDInit(uuid=vm_uuid, id=2).pack()
        MultiFDInit.parse(header, channel="multifd 2", expected_uuid=vm_uuid)
    """

    uuid: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))
    id: int = attrs.field(validator=attrs.validators.instance_of(int))

    def __attrs_post_init__(self) -> None:
        if len(self.uuid) != 16:
            raise ValueError(f"uuid must be 16 bytes, got {len(self.uuid)}")
        if not 0 <= self.id <= MAX_CHANNELS:
            raise ValueError(f"channel id must be 0..{MAX_CHANNELS}, got {self.id}")

    def pack(self) -> bytes:
        """Return the 64 bytes QEMU's source writes first on a multifd channel.

        Returns:
            The packed header.
        """
        return _MULTIFD_INIT.pack(MULTIFD_MAGIC, MULTIFD_VERSION, self.uuid, self.id)

    @classmethod
    def parse(
        cls,
        data: bytes,
        *,
        channel: str,
        expected_uuid: bytes | None = None,
        channels: int | None = None,
    ) -> MultiFDInit:
        """Parse and check a multifd init header (QEMU ``multifd_recv_initial_packet``).

        Args:
            data: exactly 64 bytes.
            channel: how to name the channel in errors (e.g. ``"accepted #3"``).
            expected_uuid: the uuid the header must carry, or None to accept any.
            channels: the channel count; an id at or above it is rejected.

        Returns:
            The header.

        Raises:
            trioqio.MigrationError: naming the channel and the field (``length``,
                ``magic``, ``version``, ``uuid``, ``id``).
        """
        if len(data) != MULTIFD_INIT_SIZE:
            raise _fail(channel, "length", f"init header is {len(data)} bytes, expected 64")
        magic, version, uuid, channel_id = _MULTIFD_INIT.unpack(data)
        if magic != MULTIFD_MAGIC:
            raise _fail(channel, "magic", f"received {magic:#x}, expected {MULTIFD_MAGIC:#x}")
        if version != MULTIFD_VERSION:
            raise _fail(channel, "version", f"received {version}, expected {MULTIFD_VERSION}")
        if expected_uuid is not None and uuid != expected_uuid:
            raise _fail(
                channel,
                "uuid",
                f"received {uuid_module.UUID(bytes=uuid)}, "
                f"expected {uuid_module.UUID(bytes=expected_uuid)}",
            )
        if channels is not None and channel_id >= channels:
            raise _fail(channel, "id", f"received {channel_id}, expected 0..{channels - 1}")
        return cls(uuid=uuid, id=channel_id)


# -- page packets -----------------------------------------------------------------------


class PacketFlags(enum.IntFlag):
    """Flags of a page packet.

    Example::

        PacketHeader(flags=PacketFlags.END, first_page=0, num_pages=0, length=0)
    """

    NONE = 0
    #: The last packet on this channel; it carries no pages.
    END = 1


@attrs.frozen(kw_only=True)
class PacketHeader:
    """The header in front of every run of pages on a multifd channel.

    Attributes:
        flags: :class:`PacketFlags`.
        first_page: index of the first page carried.
        num_pages: how many consecutive pages follow.
        length: payload bytes that follow the header (``num_pages`` pages; the image's
            last page may be short).

    Example::

        header = PacketHeader(first_page=128, num_pages=128, length=128 * 4096)
        await channel.writev([header.pack(), *pages])
    """

    first_page: int
    num_pages: int
    length: int
    flags: PacketFlags = PacketFlags.NONE

    def pack(self) -> bytes:
        """Return the 24-byte header.

        Returns:
            The packed header.
        """
        return _PACKET_HEADER.pack(
            PACKET_MAGIC, int(self.flags), 0, self.first_page, self.num_pages, self.length
        )

    @classmethod
    def parse(cls, data: bytes, *, channel: str, config: Config) -> PacketHeader:
        """Parse a packet header and check it against the migration's geometry.

        Every bound is checked here, before the caller allocates the payload: the pages
        must lie inside the image, the count must not exceed the negotiated packet size,
        and the length must be exactly what those pages take.

        Args:
            data: exactly :data:`PACKET_HEADER_SIZE` bytes.
            channel: how to name the channel in errors.
            config: the migration's geometry.

        Returns:
            The header.

        Raises:
            trioqio.MigrationError: naming the channel and the field (``length``,
                ``magic``, ``flags``, ``reserved``, ``first_page``, ``num_pages``).
        """
        if len(data) != PACKET_HEADER_SIZE:
            raise _fail(channel, "length", f"packet header is {len(data)} bytes, expected 24")
        magic, flags, reserved, first, count, length = _PACKET_HEADER.unpack(data)
        if magic != PACKET_MAGIC:
            raise _fail(channel, "magic", f"packet magic {magic:#x}, expected {PACKET_MAGIC:#x}")
        if flags & ~int(PacketFlags.END):
            raise _fail(channel, "flags", f"unknown packet flags {flags:#x}")
        if reserved:
            raise _fail(channel, "reserved", f"must be zero, received {reserved:#x}")
        header = cls(first_page=first, num_pages=count, length=length, flags=PacketFlags(flags))
        if flags & PacketFlags.END:
            if count or length or first:
                raise _fail(channel, "num_pages", "an END packet must carry no pages")
            return header
        if count == 0 or count > config.packet_pages:
            raise _fail(channel, "num_pages", f"{count} pages, expected 1..{config.packet_pages}")
        if first >= config.num_pages or first + count > config.num_pages:
            raise _fail(
                channel,
                "first_page",
                f"pages {first}..{first + count - 1} outside the image's {config.num_pages} pages",
            )
        expected = config.run_length(first, count)
        if length != expected:
            raise _fail(channel, "length", f"{length} payload bytes, expected {expected}")
        return header


# -- main channel -------------------------------------------------------------------------


def pack_main_hello() -> bytes:
    """Return the bytes that open the main channel: ``"QEVM"`` and the version.

    Returns:
        8 bytes.
    """
    return MAIN_HELLO.pack(MAIN_MAGIC, MAIN_VERSION)


def parse_main_hello(data: bytes, *, channel: str) -> None:
    """Check the main channel's opening bytes.

    Args:
        data: exactly 8 bytes.
        channel: how to name the channel in errors.

    Raises:
        trioqio.MigrationError: naming the channel and the field (``magic``, ``version``).
    """
    if len(data) != MAIN_HELLO.size:
        raise _fail(channel, "length", f"main hello is {len(data)} bytes, expected 8")
    magic, version = MAIN_HELLO.unpack(data)
    if magic != MAIN_MAGIC:
        raise _fail(channel, "magic", f"received {magic!r}, expected {MAIN_MAGIC!r}")
    if version != MAIN_VERSION:
        raise _fail(channel, "version", f"received {version}, expected {MAIN_VERSION}")


class MessageType(enum.IntEnum):
    """Main-channel message types.

    Example::

        kind, length = parse_message_header(data, channel="main")
    """

    CONFIG = 1
    END = 2
    RESULT = 3
    ERROR = 4


class ImageKind(enum.IntEnum):
    """Where the source's pages come from (carried in :class:`Config`)."""

    GENERATED = 0
    FILE = 1


class Checksum(enum.IntEnum):
    """The digest both ends compute over every byte of the image (carried in :class:`Config`).

    The source chooses; the destination uses what the CONFIG message names, or rejects it
    when it was told to expect another one. See ``_verify.py`` for what each costs.

    Example::

        Checksum.from_name("sha256")
    """

    BLAKE2B = 0
    SHA256 = 1
    CRC32 = 2

    @property
    def label(self) -> str:
        """The name the command line uses (``"blake2b"``, ``"sha256"``, ``"crc32"``)."""
        return self.name.lower()

    @classmethod
    def from_name(cls, name: str) -> Checksum:
        """Return the algorithm called ``name`` (case-insensitive).

        Raises:
            ValueError: no such algorithm; the message lists the known ones.
        """
        try:
            return cls[name.upper()]
        except KeyError:
            known = ", ".join(member.label for member in cls)
            raise ValueError(f"unknown checksum {name!r} (known: {known})") from None


#: The checksum a source uses unless told otherwise (see ``_verify.py`` for the choice).
DEFAULT_CHECKSUM = Checksum.CRC32


def _check_config(
    uuid: bytes, size: int, page_size: int, channels: int, packet_pages: int, *, channel: str
) -> None:
    if len(uuid) != 16:
        raise _fail(channel, "uuid", f"must be 16 bytes, got {len(uuid)}")
    if not 0 <= size < 1 << 63:
        raise _fail(channel, "size", f"{size} out of range")
    if not 512 <= page_size <= MAX_PAGE_SIZE:
        raise _fail(channel, "page_size", f"{page_size}, expected 512..{MAX_PAGE_SIZE}")
    if not 1 <= channels <= MAX_CHANNELS + 1:
        raise _fail(channel, "channels", f"{channels}, expected 1..{MAX_CHANNELS + 1}")
    if not 1 <= packet_pages <= MAX_PACKET_PAGES:
        raise _fail(channel, "packet_pages", f"{packet_pages}, expected 1..{MAX_PACKET_PAGES}")
    if packet_pages * page_size > MAX_PACKET_BYTES:
        raise _fail(channel, "packet_pages", "packets would exceed 16 MiB")


@attrs.frozen(kw_only=True)
class Config:
    """What the source tells the destination before any page moves (main channel).

    Attributes:
        uuid: the VM's uuid; every multifd init header must carry it.
        size: image size in bytes.
        page_size: bytes per page (the last page may be shorter).
        channels: number of multifd channels the source opens.
        packet_pages: the most pages one packet carries.
        seed: the generator's seed (informational; 0 for a file image).
        kind: :class:`ImageKind`.
        checksum: the :class:`Checksum` both ends compute, one digest per packet.

    Example::

        config = Config(uuid=os.urandom(16), size=1 << 20, page_size=4096, channels=4,
                        packet_pages=128, seed=1)
    """

    uuid: bytes
    size: int
    page_size: int
    channels: int
    packet_pages: int
    seed: int = 0
    kind: ImageKind = ImageKind.GENERATED
    checksum: Checksum = DEFAULT_CHECKSUM

    def __attrs_post_init__(self) -> None:
        _check_config(
            self.uuid,
            self.size,
            self.page_size,
            self.channels,
            self.packet_pages,
            channel="config",
        )

    @property
    def num_pages(self) -> int:
        """Pages in the image (the last one may be short)."""
        return -(-self.size // self.page_size)

    @property
    def packet_bytes(self) -> int:
        """The most payload bytes a packet carries."""
        return self.packet_pages * self.page_size

    def run_length(self, first: int, count: int) -> int:
        """Bytes taken by ``count`` pages starting at page ``first``."""
        return min(self.size, (first + count) * self.page_size) - first * self.page_size

    def pack(self) -> bytes:
        """Return the CONFIG payload."""
        return _CONFIG.pack(
            self.uuid,
            self.size,
            self.page_size,
            self.channels,
            self.packet_pages,
            self.seed,
            int(self.kind),
            int(self.checksum),
        )


@attrs.frozen(kw_only=True)
class End:
    """Source to destination: every page is sent; here is the image's checksum.

    Attributes:
        pages: pages the source sent.
        checksum: the 32-byte image checksum (see ``_verify.py``).
    """

    pages: int
    checksum: bytes


class ResultStatus(enum.IntEnum):
    """The destination's verdict."""

    MATCH = 0
    MISMATCH = 1
    INCOMPLETE = 2


@attrs.frozen(kw_only=True)
class Result:
    """Destination to source: the verdict, the pages received and the checksum computed.

    Attributes:
        status: :class:`ResultStatus`.
        pages: pages the destination received and verified.
        checksum: the destination's 32-byte checksum.
    """

    status: ResultStatus
    pages: int
    checksum: bytes


@attrs.frozen(kw_only=True)
class ErrorMessage:
    """Either side: the migration failed; ``text`` says why (UTF-8, at most 4096 bytes)."""

    text: str


Message = Config | End | Result | ErrorMessage


def encode_message(message: Message) -> bytes:
    """Return a main-channel message: the 8-byte header and the payload.

    Args:
        message: the message.

    Returns:
        The bytes to send.

    Example::

        await main.send_all(encode_message(End(pages=n, checksum=digest)))
    """
    if isinstance(message, Config):
        kind, payload = MessageType.CONFIG, message.pack()
    elif isinstance(message, End):
        kind, payload = MessageType.END, _END.pack(message.pages, message.checksum)
    elif isinstance(message, Result):
        kind = MessageType.RESULT
        payload = _RESULT.pack(int(message.status), message.pages, message.checksum)
    else:
        kind = MessageType.ERROR
        payload = message.text.encode("utf-8", "replace")[:MAX_ERROR_TEXT]
    return _MESSAGE_HEADER.pack(int(kind), len(payload)) + payload


_FIXED_LENGTHS = {
    MessageType.CONFIG: _CONFIG.size,
    MessageType.END: _END.size,
    MessageType.RESULT: _RESULT.size,
}


def parse_message_header(data: bytes, *, channel: str) -> tuple[MessageType, int]:
    """Parse a main-channel message header and bound its payload length.

    Args:
        data: exactly 8 bytes.
        channel: how to name the channel in errors.

    Returns:
        ``(type, payload_length)``; the length is safe to allocate.

    Raises:
        trioqio.MigrationError: naming the channel and the field (``type``, ``length``).
    """
    if len(data) != MESSAGE_HEADER_SIZE:
        raise _fail(channel, "length", f"message header is {len(data)} bytes, expected 8")
    raw_kind, length = _MESSAGE_HEADER.unpack(data)
    try:
        kind = MessageType(raw_kind)
    except ValueError:
        raise _fail(channel, "type", f"unknown message type {raw_kind}") from None
    if kind is MessageType.ERROR:
        if length > MAX_ERROR_TEXT:
            raise _fail(channel, "length", f"{length} bytes, at most {MAX_ERROR_TEXT}")
    elif length != _FIXED_LENGTHS[kind]:
        raise _fail(
            channel,
            "length",
            f"{kind.name} payload {length} bytes, expected {_FIXED_LENGTHS[kind]}",
        )
    return kind, length


def parse_message(kind: MessageType, payload: bytes, *, channel: str) -> Message:
    """Decode a main-channel message payload.

    Args:
        kind: from :func:`parse_message_header`.
        payload: exactly the length it returned.
        channel: how to name the channel in errors.

    Returns:
        The message.

    Raises:
        trioqio.MigrationError: naming the channel and the field at fault.
    """
    if kind is MessageType.CONFIG:
        (uuid, size, page_size, channels, packet_pages, seed, image_kind, checksum) = (
            _CONFIG.unpack(payload)
        )
        try:
            kind_value = ImageKind(image_kind)
        except ValueError:
            raise _fail(channel, "kind", f"unknown image kind {image_kind}") from None
        try:
            checksum_value = Checksum(checksum)
        except ValueError:
            known = ", ".join(f"{m.value} ({m.label})" for m in Checksum)
            raise _fail(
                channel, "checksum", f"unknown checksum algorithm {checksum} (known: {known})"
            ) from None
        _check_config(uuid, size, page_size, channels, packet_pages, channel=channel)
        return Config(
            uuid=uuid,
            size=size,
            page_size=page_size,
            channels=channels,
            packet_pages=packet_pages,
            seed=seed,
            kind=kind_value,
            checksum=checksum_value,
        )
    if kind is MessageType.END:
        pages, checksum = _END.unpack(payload)
        return End(pages=pages, checksum=checksum)
    if kind is MessageType.RESULT:
        status, pages, checksum = _RESULT.unpack(payload)
        try:
            status_value = ResultStatus(status)
        except ValueError:
            raise _fail(channel, "status", f"unknown result status {status}") from None
        return Result(status=status_value, pages=pages, checksum=checksum)
    return ErrorMessage(text=payload.decode("utf-8", "replace"))
