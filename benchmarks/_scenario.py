"""The shared shape of one side-by-side benchmark scenario (issue 8).

A scenario module in ``benchmarks/scenarios/`` exports ``SCENARIOS: list[Scenario]``;
``benchmarks/compare.py`` discovers them, runs every implementation's ``Measure`` in
interleaved rounds (warm-up, rotated order, median, range, ratio vs ``reference``) and
writes ``benchmarks/results/compare.md`` / ``compare.json``.

Rules for a ``Measure``: self-contained (starts its own event loop and processes, cleans
everything up), loopback only, the same work for every implementation, one call ~0.3-2 s
(``quick=True``: ~0.1-0.3 s), returns a rate where higher is better.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Measure = Callable[[], float]  # one complete measurement -> rate (higher is better)

#: Implementation names, in the order tables list them.
IMPLEMENTATION_ORDER = (
    "trioqio",
    "trio",
    "anyio-trio",
    "anyio-asyncio",
    "asyncio",
    "uvloop",
    "iperf3",
)


def _no_unavailable() -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Scenario:
    """One figure measured for several implementations in the same run."""

    key: str  # "echo", "migrate-4ch", ... (unique, used in file names)
    title: str  # "1 KiB echo round trips, 10 connections"
    unit: str  # "round trips/s", "MiB/s", "conn/s", "calls/s", "msg/s"
    reference: str  # implementation name the ratios are taken against
    implementations: Callable[[bool], dict[str, Measure]]  # quick -> {impl name: measure}
    target: float | None = None  # trioqio / reference must be >= target (None: reported only)
    unavailable: Callable[[], dict[str, str]] = field(default=_no_unavailable)  # impl -> reason
    notes: str = ""  # one line shown under the table (what is measured, how)
    # GiB of payload one measure call moves (quick -> GiB): with it, compare.py reports each
    # implementation's CPU-seconds per GiB (user + system of the harness and every child
    # process it reaped during the call, so both ends of a two-process run, start-up included).
    gib_per_call: Callable[[bool], float] | None = None
