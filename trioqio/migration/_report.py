"""Progress bar and final report of ``trioqio migrate`` (QEMU ``hmp_info_migrate``).

QEMU reports progress through ``query-migrate`` (transferred bytes, throughput, remaining,
per-channel statistics in newer versions). trioqio prints a one-line progress bar on a
terminal (stderr only, and only when it is a TTY) and, at the end, a text or JSON report.

Differences from QEMU: no monitor; the report is printed once, when the run ends.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

import attrs

if TYPE_CHECKING:
    from ._protocol import Config

__all__ = [
    "ChannelFigures",
    "ChannelShare",
    "Figures",
    "MigrationReport",
    "Progress",
    "format_bytes",
    "parse_size",
]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1 << 30,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1 << 40,
}


def parse_size(text: str) -> int:
    """Parse ``512MiB``, ``1GiB``, ``4G``, ``100000`` into bytes.

    Args:
        text: a number with an optional unit (``KiB``/``MiB``/``GiB``/``TiB`` are powers
            of 1024, ``K``/``M``/``G``/``T`` with or without ``B`` powers of 1000).

    Returns:
        The size in bytes.

    Raises:
        ValueError: the text is not a size.
    """
    stripped = text.strip()
    index = len(stripped)
    while index and not stripped[index - 1].isdigit():
        index -= 1
    number, unit = stripped[:index], stripped[index:].strip().lower()
    if not number or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r} (try 256MiB, 1GiB or a number of bytes)")
    try:
        value = float(number) if "." in number else int(number)
    except ValueError:
        raise ValueError(f"not a size: {text!r}") from None
    return int(value * _UNITS[unit])


def format_bytes(count: float) -> str:
    """Return ``count`` bytes as ``1.50 GiB``-style text."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1024
    return f"{count:.2f} GiB"  # pragma: no cover - the loop always returns


@attrs.define(eq=False)
class Progress:
    """A progress bar on stderr: bytes, rate and ETA; silent unless stderr is a terminal.

    Example::

        progress = Progress(total=size, label="sent")
        progress.add(65536)
        progress.close()
    """

    total: int
    label: str = "migrated"
    stream: TextIO | None = None
    enabled: bool | None = None
    done: int = 0
    _start: float = attrs.field(factory=time.monotonic)
    _last: float = 0.0
    _drawn: bool = False

    def __attrs_post_init__(self) -> None:
        if self.stream is None:
            self.stream = sys.stderr
        if self.enabled is None:
            self.enabled = sys.stderr.isatty() if self.stream is None else self.stream.isatty()

    def begin(self, total: int) -> None:
        """Start the bar over for a transfer of ``total`` bytes beginning now.

        The destination calls it when CONFIG announces the size, so its percentage, rate
        and ETA are the transfer's, not the time it spent listening.
        """
        self.total = total
        self.done = 0
        self._start = time.monotonic()
        self._last = 0.0

    def add(self, count: int) -> None:
        """Count ``count`` more bytes; redraw at most ten times a second."""
        self.done += count
        if self.enabled:
            now = time.monotonic()
            if now - self._last >= 0.1 or self.done >= self.total:
                self._last = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        assert self.stream is not None
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        fraction = min(self.done / self.total, 1.0) if self.total else 0.0
        width = 30
        filled = int(width * fraction)
        left = max(self.total - self.done, 0)
        eta = left / rate if rate > 0 and self.total else float("inf")
        eta_text = f"{eta:5.1f}s" if eta != float("inf") else "  ?  "
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{fraction * 100:5.1f}% {format_bytes(self.done)} "
            f"{format_bytes(rate)}/s ETA {eta_text}  "
        )
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line (if one was drawn)."""
        if self._drawn and self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


@attrs.frozen(kw_only=True)
class ChannelShare:
    """How much one multifd channel carried."""

    id: int
    bytes: int
    packets: int


@attrs.define(eq=False)
class ChannelFigures:
    """One multifd channel's live counters (updated per packet)."""

    id: int
    bytes: int = 0
    packets: int = 0


@attrs.define(eq=False)
class Figures:
    """One end's live figures: what was announced and what moved, up to now.

    The caller owns it and passes it in the options, so a failed migration's report still
    has everything that moved before the failure (QEMU: ``MigrationStats``).

    Attributes:
        size: the image size the source announced (CONFIG), or None before it.
        channels_announced: the multifd channel count announced, or None before it.
        config: the whole CONFIG (uuid, checksum...), or None before it.
        start: ``time.monotonic()`` when the transfer began (the source: its first
            connect; the destination: CONFIG), or None.
        stop: when it ended (success or failure), or None while it runs.
        channels: per-channel counters by id.

    Example::

        figures = Figures()
        try:
            await run_source(SourceOptions(..., figures=figures))
        finally:
            print(figures.bytes, "bytes in", figures.seconds, "s")
    """

    size: int | None = None
    channels_announced: int | None = None
    config: Config | None = None
    start: float | None = None
    stop: float | None = None
    channels: dict[int, ChannelFigures] = attrs.field(factory=dict[int, ChannelFigures])

    def channel(self, channel_id: int) -> ChannelFigures:
        """Return (creating it at zero) the counters of channel ``channel_id``."""
        found = self.channels.get(channel_id)
        if found is None:
            found = self.channels[channel_id] = ChannelFigures(id=channel_id)
        return found

    def begin(self) -> None:
        """Mark the transfer's start (once)."""
        if self.start is None:
            self.start = time.monotonic()

    def end(self) -> None:
        """Mark the transfer's end (once)."""
        if self.start is not None and self.stop is None:
            self.stop = time.monotonic()

    @property
    def bytes(self) -> int:
        """Page bytes moved on every channel."""
        return sum(channel.bytes for channel in self.channels.values())

    @property
    def seconds(self) -> float:
        """From the start to the end (or to now while it runs); 0 before the start."""
        if self.start is None:
            return 0.0
        return (self.stop if self.stop is not None else time.monotonic()) - self.start

    @property
    def shares(self) -> tuple[ChannelShare, ...]:
        """Per-channel shares, by id."""
        return tuple(
            ChannelShare(id=c.id, bytes=c.bytes, packets=c.packets)
            for c in sorted(self.channels.values(), key=lambda c: c.id)
        )


@attrs.frozen(kw_only=True)
class MigrationReport:
    """What ``trioqio migrate`` prints at the end (text or ``--json``).

    Attributes:
        role: ``"migrate"`` (both ends), ``"source"`` or ``"destination"``.
        size: the image size the source announced, or None when no CONFIG arrived.
        bytes: page bytes moved, up to the end or the failure.
        seconds: the source: from its first connect to the verdict (or the failure); the
            destination: from CONFIG to the verdict (or the failure).
        channels: per-channel shares, up to the end or the failure.
        source_checksum: hex, or None when unknown.
        destination_checksum: hex, or None when unknown.
        verdict: ``"match"``, ``"mismatch"``, ``"incomplete"`` (a channel broke or
            stalled mid-way) or ``"failed"`` (refused, or failed before pages moved).
        error: what went wrong (the one-line message), or None.
        error_kind: :attr:`trioqio.MigrationError.kind` of the failure, or None.
        error_channel: the channel at fault, or None.
        error_field: the field or option at fault, or None.
        uuid: the VM uuid (text form).
        tls: whether the channels were TLS.
        checksum: the per-packet digest both ends computed (``"blake2b"``, ``"sha256"``,
            ``"crc32"``), or None when unknown.
        crc32_provider: the library that computed the CRC-32 in this process (e.g.
            ``"zlib-ng 2.3.3"``), when the digest is ``crc32``; None otherwise.
        trace: the thread summary when ``--trace`` was given.
    """

    role: str
    size: int | None
    bytes: int
    seconds: float
    channels: tuple[ChannelShare, ...] = ()
    source_checksum: str | None = None
    destination_checksum: str | None = None
    verdict: str = "failed"
    error: str | None = None
    error_kind: str | None = None
    error_channel: str | None = None
    error_field: str | None = None
    uuid: str = ""
    tls: bool = False
    checksum: str | None = None
    crc32_provider: str | None = None
    trace: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True only when both checksums are known and equal."""
        return self.verdict == "match"

    @property
    def throughput(self) -> float:
        """Bytes per second."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready values."""
        total = sum(share.bytes for share in self.channels) or 1
        return {
            "role": self.role,
            "ok": self.ok,
            "verdict": self.verdict,
            "error": self.error,
            "error_kind": self.error_kind,
            "error_channel": self.error_channel,
            "error_field": self.error_field,
            "uuid": self.uuid,
            "tls": self.tls,
            "checksum": self.checksum,
            "crc32_provider": self.crc32_provider,
            "size": self.size,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 6),
            "throughput_bytes_per_second": round(self.throughput),
            "channels": [
                {
                    "id": share.id,
                    "bytes": share.bytes,
                    "packets": share.packets,
                    "share": round(share.bytes / total, 4),
                }
                for share in self.channels
            ],
            "source_checksum": self.source_checksum,
            "destination_checksum": self.destination_checksum,
            "trace": self.trace,
        }

    def to_json(self) -> str:
        """Return :meth:`as_dict` as JSON."""
        return json.dumps(self.as_dict(), indent=2)

    def to_text(self) -> str:
        """Return a human-readable report."""
        lines = [
            f"migration {self.role}: {format_bytes(self.bytes)} of "
            f"{format_bytes(self.size) if self.size is not None else '? (no CONFIG)'} "
            f"in {self.seconds:.2f} s ({format_bytes(self.throughput)}/s)"
            + (" over TLS" if self.tls else ""),
        ]
        total = sum(share.bytes for share in self.channels) or 1
        for share in self.channels:
            lines.append(
                f"  multifd {share.id}: {format_bytes(share.bytes)} "
                f"({share.bytes / total * 100:.1f}%, {share.packets} packets)"
            )
        if self.checksum:
            computed = f" ({self.crc32_provider})" if self.crc32_provider else ""
            lines.append(f"  page digest:          {self.checksum} per packet{computed}")
        lines.append(f"  source checksum:      {self.source_checksum or '-'}")
        lines.append(f"  destination checksum: {self.destination_checksum or '-'}")
        verdict = {
            "match": "checksums match",
            "mismatch": "CHECKSUM MISMATCH",
            "incomplete": "INCOMPLETE migration",
        }.get(self.verdict, "FAILED")
        lines.append(f"  verdict: {verdict}")
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)
