"""Task memory: 10,000 completed Tasks leave memory flat (issue 2).

The offload speed (``Task.run_in_thread`` + ``wait`` against bare ``trio.to_thread.run_sync``,
anyio, asyncio and uvloop) is the ``offload-seq`` / ``offload-8`` scenarios of
``benchmarks/compare.py``; this script keeps the figure the harness does not cover.

Run: ``python benchmarks/bench_task.py``.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from _harness import save

import trioqio


def memory_per_task(count: int = 10_000) -> dict[str, float]:
    async def batch() -> None:
        async with trio.open_nursery() as nursery:
            for index in range(count):
                task: trioqio.Task[int] = trioqio.Task(on_complete=lambda t: None)
                task.run_in_thread(nursery, abs, index, limiter=limiter)
        del task

    limiter = trio.CapacityLimiter(8)

    async def main() -> tuple[int, int, int]:
        await batch()  # warm caches (thread cache, interned code objects)
        gc.collect()
        tracemalloc.start()
        first = tracemalloc.get_traced_memory()[0]
        await batch()
        gc.collect()
        second = tracemalloc.get_traced_memory()[0]
        await batch()
        gc.collect()
        third = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return first, second, third

    first, second, third = trio.run(main)
    return {
        "tasks_per_batch": count,
        "growth_batch1_bytes": second - first,
        "growth_batch2_bytes": third - second,
        "retained_bytes_per_task": max(0, third - second) / count,
    }


def main() -> None:
    memory = memory_per_task()
    markdown = (
        "### Memory after completed Tasks\n\n"
        f"- batches of {memory['tasks_per_batch']:,} completed Tasks; traced growth over "
        f"the 2nd batch {memory['growth_batch1_bytes']:,} B, over the 3rd "
        f"{memory['growth_batch2_bytes']:,} B "
        f"({memory['retained_bytes_per_task']:.2f} B retained per Task)\n\n"
        "Offload speed: `offload-seq` and `offload-8` in [compare.md](compare.md)."
    )
    save("task", {"memory": memory}, markdown)


if __name__ == "__main__":
    main()
