"""The stall watchdog of ``trioqio migrate --timeout`` (QEMU has none: see below).

Each end *arms* a channel when it starts waiting on it (a connect, a handshake, an init
header, the next packet, the verdict), *touches* it whenever it makes progress, and
*disarms* it when nothing more is expected from it for now (the main channel while pages
move, a multifd channel after its END). :meth:`Watch.run` fails the migration with a
``MigrationError(kind="timeout")`` naming the first armed channel that made no progress
for ``timeout`` seconds, and what it was waiting for.

A touch is one dict store and one ``time.monotonic()`` per packet (half a MiB), so the
data path does not notice it.

Differences from QEMU: QEMU's migration has no such timeout; a stopped peer leaves it
blocked until the TCP keep-alive (if any) gives up, and a destination that never gets its
last multifd channel waits forever (``multifd_recv_sync_main``).
"""

from __future__ import annotations

import time

import attrs
import trio

from .._errors import MigrationError

__all__ = ["Watch"]


@attrs.define(eq=False)
class Watch:
    """Armed channels and when each last made progress.

    Attributes:
        timeout: seconds without progress that fail the migration; None: never.

    Example::

        watch = Watch(timeout=30)
        watch.arm("multifd 0", "its connection")
        nursery.start_soon(watch.run)
        ...
        watch.touch("multifd 0")
    """

    timeout: float | None
    _last: dict[str, float] = attrs.field(factory=dict[str, float])
    _waiting_for: dict[str, str] = attrs.field(factory=dict[str, str])

    def arm(self, name: str, waiting_for: str) -> None:
        """Start (or restart) watching ``name``, which now waits for ``waiting_for``."""
        self._last[name] = time.monotonic()
        self._waiting_for[name] = waiting_for

    def touch(self, name: str) -> None:
        """``name`` made progress (does nothing unless it is armed)."""
        if name in self._last:
            self._last[name] = time.monotonic()

    def disarm(self, name: str) -> None:
        """Stop watching ``name``."""
        self._last.pop(name, None)
        self._waiting_for.pop(name, None)

    def stalled(self, now: float | None = None) -> str | None:
        """Return the first armed channel idle for ``timeout`` seconds, or None."""
        if self.timeout is None:
            return None
        now = time.monotonic() if now is None else now
        for name, last in self._last.items():
            if now - last >= self.timeout:
                return name
        return None

    async def run(self) -> None:
        """Return never; raise when an armed channel stalls.

        Raises:
            trioqio.MigrationError: ``kind="timeout"``, ``channel`` the stalled channel.
        """
        if self.timeout is None:
            await trio.sleep_forever()
            return
        period = min(max(self.timeout / 10, 0.01), 1.0)
        while True:
            await trio.sleep(period)
            name = self.stalled()
            if name is not None:
                raise MigrationError(
                    f"channel {name}: no progress for {self.timeout:g} s while waiting for "
                    f"{self._waiting_for[name]} (the peer stalled or stopped; see --timeout)",
                    channel=name,
                    kind="timeout",
                )
