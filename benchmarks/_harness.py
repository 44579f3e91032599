"""Shared benchmark harness: warm-up, interleaved rounds, medians and ranges, Markdown + JSON.

Every benchmark script measures trioqio and its peers in the same process run, round by
round in turn (so drift on a shared 2-core VM hits all of them alike), and reports ratios.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def rounds_default(full: int, quick: int) -> int:
    """Return ``quick`` under TRIOQIO_BENCH_QUICK=1 (used by CI smoke runs), else ``full``."""
    return quick if os.environ.get("TRIOQIO_BENCH_QUICK") else full


def run_interleaved(
    cases: dict[str, Callable[[], float]], *, rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run each case once per round, the order rotated each round; each call returns a number.

    The same loop as ``compare.py`` (one place for warm-up and rotation).
    """
    from compare import run_measures

    outcome = run_measures(cases, rounds=rounds, warmup=warmup > 0)
    if outcome.failed:
        raise RuntimeError(f"benchmark cases failed: {outcome.failed}")
    return outcome.samples


def summarize(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    from compare import summarize as one

    return {name: one(values) for name, values in samples.items()}


def table(
    title: str,
    summary: dict[str, dict[str, float]],
    *,
    unit: str,
    baseline: str,
    scale: float = 1.0,
) -> str:
    base = summary[baseline]["median"]
    lines = [
        f"### {title}",
        "",
        f"| implementation | median {unit} | range | vs {baseline} |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, stats in summary.items():
        lines.append(
            f"| {name} | {stats['median'] * scale:,.1f} | "
            f"{stats['min'] * scale:,.1f} .. {stats['max'] * scale:,.1f} | "
            f"{stats['median'] / base:.2f}x |"
        )
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    import trio

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "trio": trio.__version__,
        "cpus": os.cpu_count(),
    }


def save(topic: str, payload: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    payload = {"environment": environment(), **payload}
    (RESULTS / f"{topic}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / f"{topic}.md").write_text(markdown + "\n")
    print(markdown)
