"""Helpers for :mod:`trioqio._listener`: its report values, rate-limited logging, backoff.

QEMU has no counterpart: ``io/net-listener.c`` ignores accept failures and leaves the
watch armed, so an exhausted descriptor table makes it spin. These helpers give the
listener a bounded log rate and an exponential pause instead.
"""

from __future__ import annotations

import errno
import logging
import math
import typing

import attrs
import trio

__all__ = [
    "CAPACITY_ERRNOS",
    "Backoff",
    "ListenerStatistics",
    "RateLimitedLog",
    "ShutdownReport",
]

#: accept() failures that mean "out of descriptors or memory": wait, then retry.
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class RateLimitedLog:
    """Log at most one record per ``interval`` seconds (Trio clock); count the rest.

    The next record that gets through says how many were suppressed since the last one.
    """

    __slots__ = ("_interval", "_logger", "_next", "suppressed")

    def __init__(self, logger: logging.Logger, interval: float) -> None:
        self._logger = logger
        self._interval = interval
        self._next = -math.inf
        self.suppressed = 0

    def log(
        self, level: int, message: str, *args: object, exc_info: BaseException | None = None
    ) -> bool:
        """Log unless one was logged less than ``interval`` ago; return True if logged."""
        now = trio.current_time()
        if now < self._next:
            self.suppressed += 1
            return False
        if self.suppressed:
            message = f"{message} ({self.suppressed} similar messages suppressed)"
        self._logger.log(level, message, *args, exc_info=exc_info)
        self._next = now + self._interval
        self.suppressed = 0
        return True


class Backoff:
    """Exponential pause between accept retries: ``first`` doubling up to ``limit``."""

    __slots__ = ("current", "first", "limit")

    def __init__(self, first: float = 0.01, limit: float = 0.5) -> None:
        self.first = first
        self.limit = limit
        #: The last pause taken, 0 when none since the last :meth:`reset`.
        self.current = 0.0

    def reset(self) -> None:
        """Start again from ``first`` (after a successful accept)."""
        self.current = 0.0

    async def wait(self) -> float:
        """Sleep for the next delay and return it."""
        self.current = min(self.limit, self.current * 2 if self.current else self.first)
        await trio.sleep(self.current)
        return self.current


@typing.final
@attrs.frozen(kw_only=True)
class ShutdownReport:
    """What :meth:`NetListener.aclose` did to the handlers that were running.

    Attributes:
        finished: handlers that returned (or failed) within the grace period.
        cut: handlers cancelled when the grace period ran out.

    Example::

        report = await listener.aclose(grace=5)
        print(report.finished, "finished,", report.cut, "cut")
    """

    finished: int
    cut: int


@typing.final
@attrs.frozen(kw_only=True)
class ListenerStatistics:
    """Counters of one listener (see :meth:`NetListener.statistics`).

    Attributes:
        accepted: clients accepted so far, from every listener, those taken by
            :meth:`~NetListener.wait_client` included.
        running: handlers running now.
        pending: accepted clients waiting for a handler, a free ``max_clients`` slot or
            ``wait_client``.
        handler_errors: handlers that raised.
        accept_errors: accept failures (descriptor exhaustion, routine per-connection
            errors) backed off and retried.
        failed_listeners: listeners closed because their ``accept()`` failed for good.
        log_suppressed: log records dropped by rate limiting.

    Example::

        stats = listener.statistics()
        print(f"{stats.accepted} accepted, {stats.running} running")
    """

    accepted: int
    running: int
    pending: int
    handler_errors: int
    accept_errors: int
    failed_listeners: int
    log_suppressed: int
