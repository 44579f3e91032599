"""Unwrapping Trio's exception groups to the error a migration reports.

Trio nurseries raise ``ExceptionGroup``s (strict groups); a migration reports one error,
the first :class:`~trioqio.MigrationError` inside, because that one names the channel and
the field. QEMU has no counterpart: its threads record the first ``Error`` by hand
(``multifd_recv_terminate_threads``).
"""

from __future__ import annotations

from typing import cast

from .._errors import MigrationError

__all__ = ["first_error", "leaves"]


def leaves(exc: BaseException) -> list[BaseException]:
    """Return the non-group exceptions inside ``exc`` (``[exc]`` when it is no group)."""
    # Exception groups (builtin on 3.11+, the backport on 3.10) hold ``exceptions``.
    inner: object = getattr(exc, "exceptions", None)
    if not isinstance(inner, tuple):
        return [exc]
    members = cast("tuple[BaseException, ...]", inner)
    return [leaf for member in members for leaf in leaves(member)]


def first_error(exc: BaseException) -> BaseException:
    """Return the first MigrationError inside ``exc``, else its first leaf exception."""
    found = leaves(exc)
    for leaf in found:
        if isinstance(leaf, MigrationError):
            return leaf
    return found[0]
