"""Stress sizes: full figures under ``nox -s stress``, bounded ones in CI (``stress_ci``)."""

from __future__ import annotations

import os

#: "full" (``nox -s stress``) or "ci" (``nox -s stress_ci``, run by the README's command).
SCALE = os.environ.get("TRIOQIO_STRESS", "full")


def size(full: int, ci: int) -> int:
    """Return the full-scale figure, or the bounded one when TRIOQIO_STRESS=ci."""
    return ci if SCALE == "ci" else full
