"""Progress bar and final report of ``trioqio migrate`` (QEMU ``hmp_info_migrate``).

QEMU reports progress through ``query-migrate`` (transferred bytes, throughput, remaining,
per-channel statistics in newer versions). trioqio prints a one-line progress bar on stderr
when both stderr and stdout are terminals, fitted to the terminal's width and ending in a
line that states the result, and, at the end, a text or JSON report.

Differences from QEMU: no monitor; the report is printed once, when the run ends.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import ssl
import sys
import threading
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
    "one_line",
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


def one_line(exc: BaseException) -> str:
    """Return an error as the one line a command prints: no ``[Errno N]``, no newlines.

    An ``OSError`` gives its ``strerror`` (with its ``filename`` first, if any); an error
    without a message gives its cause's, else its type's name.
    """
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ssl.SSLError):
        text = exc.strerror if exc.filename is None else f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc)
    if not text.strip() and exc.__cause__ is not None:
        return one_line(exc.__cause__)
    return " ".join(text.split()) or type(exc).__name__


def format_bytes(count: float) -> str:
    """Return ``count`` bytes as ``1.50 GiB``-style text."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1024
    return f"{count:.2f} GiB"  # pragma: no cover - the loop always returns


#: Columns the bar leaves free at the right: the last one, and two for an echoed ``^C``.
_MARGIN = 3


@attrs.define(eq=False)
class Progress:
    """A one-line progress bar: bytes, rate and ETA, redrawn in place on a terminal.

    It is drawn on ``stream`` (stderr) only when that stream and stdout are both
    terminals, unless ``enabled`` says otherwise: with stdout redirected the run is being
    scripted, and with stderr redirected the bar would garble a log. Every redraw fits the
    terminal's current width (asked each time, so a resized window is followed): fields
    are dropped, least useful first, until the line fits, and the line is cleared to its
    end, so a shorter line leaves nothing of a longer one. :meth:`write` prints a line
    above the bar; :meth:`close` replaces the bar with a final line stating the result.

    Example::

        progress = Progress(total=size, label="sent")
        progress.add(65536)
        progress.close("checksums match")
    """

    total: int
    label: str = "migrated"
    stream: TextIO | None = None
    enabled: bool | None = None
    #: The width to fit; None: the terminal's width at each redraw.
    columns: int | None = None
    done: int = 0
    _start: float = attrs.field(factory=time.monotonic)
    _last: float = 0.0
    _drawn: int = 0  # length of the line on screen; 0: none
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def __attrs_post_init__(self) -> None:
        if self.stream is None:
            self.stream = sys.stderr
        if self.enabled is None:
            self.enabled = _isatty(self.stream) and _isatty(sys.stdout)

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
                with self._lock:
                    self._show(self.render(self._width(), now))

    def write(self, text: str) -> None:
        """Print ``text`` (one or more whole lines) above the bar; any thread may call it."""
        assert self.stream is not None
        with self._lock:
            shown = self._drawn
            if shown:
                self._show("")
            self.stream.write(text if text.endswith("\n") else text + "\n")
            if shown:
                self._show(self.render(self._width(), time.monotonic()))
            else:
                self.stream.flush()

    def render(self, width: int, now: float | None = None) -> str:
        """Return the bar's line for a terminal ``width`` columns wide.

        The line is at most ``width - 3`` characters: a character in the last column
        makes some terminals wrap, and the terminal's own ``^C`` echo after the line must
        fit too, or the line it wrapped could not be redrawn. To fit, the bar first
        shrinks, then goes, then the total, the ETA and the rate go, in that order.
        """
        elapsed = max((time.monotonic() if now is None else now) - self._start, 1e-9)
        rate = self.done / elapsed
        fraction = min(self.done / self.total, 1.0) if self.total else 0.0
        left = max(self.total - self.done, 0)
        eta = f"ETA {left / rate:.1f}s" if rate > 0 and self.total else "ETA ?"
        done = format_bytes(self.done)
        counts: tuple[list[str], ...] = (
            [f"{done} of {format_bytes(self.total)}", f"{format_bytes(rate)}/s", eta],
            [done, f"{format_bytes(rate)}/s", eta],
            [done, f"{format_bytes(rate)}/s"],
            [done],
            [],
        )
        usable = max(width - _MARGIN, 1)
        percent = f"{fraction * 100:5.1f}%"
        for parts in counts:
            text = " ".join([percent, *parts])
            room = usable - len(self.label) - len(text) - 4  # two spaces, two brackets
            if room >= 6:
                cells = min(room, 50)
                filled = int(cells * fraction)
                return f"{self.label} [{'#' * filled}{'.' * (cells - filled)}] {text}"
        for parts in counts:
            line = " ".join([self.label, percent, *parts])
            if len(line) <= usable:
                return line
        return f"{self.label} {percent}"[:usable]

    def summary(self, result: str, width: int, seconds: float | None = None) -> str:
        """Return the final line: what moved, how fast, and ``result``, within ``width``.

        ``seconds`` is the run's duration as the report states it (default: since the
        bar began), so that the two agree.
        """
        if seconds is None:
            seconds = time.monotonic() - self._start
        seconds = max(seconds, 1e-9)
        done = format_bytes(self.done)
        rate = f"{format_bytes(self.done / seconds)}/s"
        total = f" of {format_bytes(self.total)}" if self.total != self.done else ""
        usable = max(width - _MARGIN, 1)
        for line in (
            f"{self.label} {done}{total} in {seconds:.2f} s ({rate}): {result}",
            f"{self.label} {done}{total} in {seconds:.2f} s: {result}",
            f"{self.label} {done}: {result}",
        ):
            if len(line) <= usable:
                return line
        return f"{self.label}: {result}"[:usable]

    def close(self, result: str | None = None, *, seconds: float | None = None) -> None:
        """Replace the bar (if one was drawn) with a final line stating ``result``.

        Args:
            result: the outcome, e.g. ``"checksums match"`` or ``"interrupted"``; None
                ends the bar's line as it is.
            seconds: the duration the report states (default: since the bar began).
        """
        assert self.stream is not None
        with self._lock:
            if not self._drawn:
                return
            if result is not None:
                self._show(self.summary(result, self._width(), seconds))
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0

    def _width(self) -> int:
        if self.columns is not None:
            return self.columns
        try:
            assert self.stream is not None
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return shutil.get_terminal_size().columns

    def _show(self, line: str) -> None:
        # Back to the line's start, the new text, then clear what is left of the old one:
        # an escape where the terminal understands it, spaces on a dumb one.
        assert self.stream is not None
        if os.environ.get("TERM") == "dumb":
            self.stream.write("\r" + line.ljust(self._drawn) + "\r" + line)
        else:
            self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self._drawn = len(line)


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        return False


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
            stalled mid-way), ``"interrupted"`` (SIGINT or SIGTERM; ``error_kind`` is
            ``"interrupted"`` too) or ``"failed"`` (refused, or failed before pages moved).
        error: what went wrong (the one-line message), or None.
        error_kind: :attr:`trioqio.MigrationError.kind` of the failure, ``"interrupted"``
            (a signal stopped the run), or None.
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
    def verdict_text(self) -> str:
        """The verdict as the text report and the progress bar's last line state it."""
        return {
            "match": "checksums match",
            "mismatch": "CHECKSUM MISMATCH",
            "incomplete": "INCOMPLETE migration",
            "interrupted": "INTERRUPTED",
        }.get(self.verdict, "FAILED")

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
        lines.append(f"  verdict: {self.verdict_text}")
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)
