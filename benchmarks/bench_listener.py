"""Benchmark: memory per idle connection, NetListener against raw Trio, anyio, asyncio, uvloop.

Every server runs in its own child process (pinned to CPU 0 on a 2+-CPU machine); a uvloop
load process (CPU 1) opens ``IDLE`` connections and holds them; the figure is the server's
RSS growth per connection (``/proc/PID/status`` VmRSS before and after), in KiB, lower is
better. The servers and the load process live in ``benchmarks/scenarios/_servers.py``.

The accept rate is the ``accept`` scenario of ``benchmarks/compare.py``.

Prints a Markdown table (median, range, ratio vs raw trio) and writes
``benchmarks/results/listener.json`` / ``listener.md``.

Usage: ``python benchmarks/bench_listener.py [--rounds N]``
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _harness
from scenarios import _servers

IDLE = 2000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=_harness.rounds_default(3, 1))
    args = parser.parse_args()

    # Memory: lower is better; run_interleaved only needs numbers.
    memory = _harness.run_interleaved(
        {kind: functools.partial(_servers.idle_round, kind, IDLE) for kind in _servers.KINDS},
        rounds=args.rounds,
        warmup=0,
    )
    summary = _harness.summarize(memory)
    markdown = "\n\n".join(
        [
            _harness.table(
                f"Memory per idle connection ({IDLE} held open; lower is better)",
                summary,
                unit="KiB/conn",
                baseline="trio",
            ),
            "Accept rate: the `accept` scenario in [compare.md](compare.md).",
        ]
    )
    _harness.save(
        "listener",
        {"idle_memory_kib": {"samples": memory, "summary": summary}, "idle_connections": IDLE},
        markdown,
    )


if __name__ == "__main__":
    main()
