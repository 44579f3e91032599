"""Task offload cost: trioqio.Task vs bare trio.to_thread.run_sync, asyncio and uvloop.

Figures (issue 2): ``Task.run_in_thread`` + ``wait``, sequential and with 8 in flight, at
least 0.9x the calls per second of bare ``trio.to_thread.run_sync``; 10,000 completed
Tasks leave memory flat.

Run: ``python benchmarks/bench_task.py`` (``TRIOQIO_BENCH_QUICK=1`` for a short run).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from _harness import rounds_default, run_interleaved, save, summarize, table

import trioqio

CALLS = 5000


def noop() -> None:
    return None


def trio_rate(make: Callable[[int], Callable[[], Awaitable[None]]], inflight: int) -> float:
    async def main() -> float:
        per_task = CALLS // inflight
        body = make(per_task)
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(inflight):
                nursery.start_soon(body)
        return per_task * inflight / (time.perf_counter() - start)

    return trio.run(main)


def bare_trio(count: int) -> Callable[[], Awaitable[None]]:
    async def body() -> None:
        for _ in range(count):
            await trio.to_thread.run_sync(noop)

    return body


def trioqio_task(count: int) -> Callable[[], Awaitable[None]]:
    async def body() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                task: trioqio.Task[None] = trioqio.Task()
                task.run_in_thread(nursery, noop)
                await task.wait()

    return body


def trioqio_oneshot(count: int) -> Callable[[], Awaitable[None]]:
    async def body() -> None:
        for _ in range(count):
            await trioqio.run_in_thread(noop)

    return body


def asyncio_rate(inflight: int, *, uvloop: bool) -> float:
    async def main() -> float:
        per_task = CALLS // inflight

        async def body() -> None:
            for _ in range(per_task):
                await asyncio.to_thread(noop)

        start = time.perf_counter()
        await asyncio.gather(*(body() for _ in range(inflight)))
        return per_task * inflight / (time.perf_counter() - start)

    if uvloop:
        import uvloop as uv

        return uv.run(main())
    return asyncio.run(main())


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
    rounds = rounds_default(9, 2)
    cases = {
        "trio.to_thread.run_sync": lambda: trio_rate(bare_trio, 1),
        "trioqio Task.run_in_thread+wait": lambda: trio_rate(trioqio_task, 1),
        "trioqio.run_in_thread": lambda: trio_rate(trioqio_oneshot, 1),
        "asyncio.to_thread": lambda: asyncio_rate(1, uvloop=False),
        "asyncio.to_thread (uvloop)": lambda: asyncio_rate(1, uvloop=True),
    }
    cases8 = {
        "trio.to_thread.run_sync": lambda: trio_rate(bare_trio, 8),
        "trioqio Task.run_in_thread+wait": lambda: trio_rate(trioqio_task, 8),
        "trioqio.run_in_thread": lambda: trio_rate(trioqio_oneshot, 8),
        "asyncio.to_thread": lambda: asyncio_rate(8, uvloop=False),
        "asyncio.to_thread (uvloop)": lambda: asyncio_rate(8, uvloop=True),
    }
    sequential = summarize(run_interleaved(cases, rounds=rounds))
    parallel = summarize(run_interleaved(cases8, rounds=rounds))
    memory = memory_per_task()
    markdown = "\n\n".join(
        [
            table(
                f"Thread offload, sequential ({CALLS} no-op calls, {rounds} rounds)",
                sequential,
                unit="calls/s",
                baseline="trio.to_thread.run_sync",
            ),
            table(
                f"Thread offload, 8 in flight ({CALLS} no-op calls, {rounds} rounds)",
                parallel,
                unit="calls/s",
                baseline="trio.to_thread.run_sync",
            ),
            "### Memory after completed Tasks\n\n"
            f"- batches of {memory['tasks_per_batch']:,} completed Tasks; traced growth over "
            f"the 2nd batch {memory['growth_batch1_bytes']:,} B, over the 3rd "
            f"{memory['growth_batch2_bytes']:,} B "
            f"({memory['retained_bytes_per_task']:.2f} B retained per Task)",
        ]
    )
    save("task", {"sequential": sequential, "inflight8": parallel, "memory": memory}, markdown)


if __name__ == "__main__":
    main()
