"""Soak: resources over time under a long run, sampled so the curves can be plotted.

Two runs, each in a fresh ``trio.run`` in this process:

1. **Listener.** A ``NetListener`` (``tcp:127.0.0.1:0``, a handler that greets and drains)
   serves ``CYCLES`` connect/close cycles (20,000; 2,000 under ``TRIOQIO_BENCH_QUICK=1``)
   from 16 client workers in the same process, one cycle in four closed with a reset
   (SO_LINGER 0), as in the stress suite's connect/close test (``tests/stress/test_load.py``).
   Every ``EVERY`` cycles the load pauses until no handler is running, the garbage is
   collected, and the process's open fds (``/proc/self/fd``), kernel threads
   (``/proc/self/task``), RSS (``VmRSS``) and ``tracemalloc`` traced memory are sampled.
   Server and clients share the process, so a sample counts both ends; at a pause every
   client socket is closed, so what is left is the listener's.
2. **Task.** ``TASKS`` Tasks (100,000; 10,000 quick) complete through
   ``Task.run_in_thread`` (limiter 8) in batches; the same four figures after each batch.

A flat curve is the claim: nothing grows with the number of connections or Tasks served.
Both runs sample first after a warm-up (caches and containers reach their size), with
tracemalloc already on, so a container that grew during the warm-up is in the baseline.
The samples go into a preallocated array: keeping them allocates nothing traced.

Writes ``benchmarks/results/soak.json`` and ``soak.md`` (first and last sample, largest drift
from the first) and draws ``docs/perf/soak.svg`` (``plot.render_soak``).

Usage: ``python benchmarks/bench_soak.py [--cycles N] [--tasks N]``
"""

from __future__ import annotations

import argparse
import array
import gc
import os
import socket
import struct
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _harness  # noqa: E402

import trioqio  # noqa: E402

QUICK = bool(os.environ.get("TRIOQIO_BENCH_QUICK"))
CYCLES = 2_000 if QUICK else 20_000
EVERY = 500
TASKS = 10_000 if QUICK else 100_000
WORKERS = 16
WARM_UP_CYCLES = 400
LIMITER = 8

METRICS = ("fds", "threads", "rss_kib", "traced_bytes")
FIELDS = ("done", *METRICS)


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


class _Samples:
    """Samples kept in a preallocated array, so that keeping them allocates nothing traced."""

    def __init__(self, count: int) -> None:
        self._values = array.array("q", bytes(8 * len(FIELDS) * count))
        self._next = 0

    def take(self, done: int) -> None:
        gc.collect()
        row = self._next * len(FIELDS)
        self._values[row] = done
        self._values[row + 1] = len(os.listdir("/proc/self/fd"))
        self._values[row + 2] = len(os.listdir("/proc/self/task"))
        self._values[row + 3] = _rss_kib()
        self._values[row + 4] = tracemalloc.get_traced_memory()[0]
        self._next += 1

    def rows(self) -> list[dict[str, int]]:
        values = self._values.tolist()
        return [
            dict(zip(FIELDS, values[row : row + len(FIELDS)], strict=True))
            for row in range(0, self._next * len(FIELDS), len(FIELDS))
        ]


# -- 1: listener connect/close cycles -------------------------------------------------------


async def _greet_then_drain(channel: trioqio.SocketChannel) -> None:
    try:
        await channel.send_all(b"ok")
        while await channel.receive_some():
            pass
    except trio.BrokenResourceError:
        pass  # a client that reset (one in four does)


async def _connect(address: trioqio.InetAddress) -> trio.SocketStream:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        await sock.connect((address.host, address.port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _cycles(address: trioqio.InetAddress, first: int, count: int) -> None:
    """Cycles ``first .. first+count-1``: connect, read the greeting (or reset), close."""

    async def worker(start: int) -> None:
        for number in range(first + start, first + count, WORKERS):
            stream = await _connect(address)
            try:
                if number % 4 == 3:  # close with a reset, without reading
                    linger = struct.pack("ii", 1, 0)
                    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    continue
                greeting = b""
                while len(greeting) < 2:
                    chunk = await stream.receive_some()
                    if not chunk:
                        raise RuntimeError(f"cycle {number}: end of file before the greeting")
                    greeting += chunk
            finally:
                await stream.aclose()

    async with trio.open_nursery() as nursery:
        for start in range(WORKERS):
            nursery.start_soon(worker, start)


async def _quiet(listener: trioqio.NetListener) -> None:
    with trio.fail_after(30):
        while listener.statistics().running:
            await trio.sleep(0.005)


async def _soak_listener(cycles: int) -> dict[str, Any]:
    async with trioqio.NetListener(name="soak") as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(_greet_then_drain)
        address = listener.addresses[0]
        assert isinstance(address, trioqio.InetAddress)
        samples = _Samples(2 + -(-cycles // EVERY))
        tracemalloc.start()  # before the warm-up: its allocations are the baseline
        try:
            await _cycles(address, 0, WARM_UP_CYCLES)
            await _quiet(listener)
            samples.take(0)
            started = time.monotonic()
            for first in range(0, cycles, EVERY):
                await _cycles(address, first, min(EVERY, cycles - first))
                await _quiet(listener)
                samples.take(first + min(EVERY, cycles - first))
            elapsed = time.monotonic() - started
        finally:
            tracemalloc.stop()
        stats = listener.statistics()
    if stats.handler_errors or stats.accept_errors:
        raise RuntimeError(f"listener errors: {stats}")
    return {
        "cycles": cycles,
        "every": EVERY,
        "workers": WORKERS,
        "reset_every": 4,
        "seconds": round(elapsed, 2),
        "accepted": stats.accepted,
        "samples": samples.rows(),
    }


# -- 2: completed Tasks ----------------------------------------------------------------------


async def _soak_tasks(tasks: int) -> dict[str, Any]:
    batch = max(1, tasks // 20)
    limiter = trio.CapacityLimiter(LIMITER)

    async def run_batch(size: int) -> None:
        async with trio.open_nursery() as nursery:
            for index in range(size):
                task: trioqio.Task[int] = trioqio.Task(on_complete=lambda t: None)
                task.run_in_thread(nursery, abs, index, limiter=limiter)

    samples = _Samples(2 + -(-tasks // batch))
    tracemalloc.start()  # before the warm-up: its allocations are the baseline
    try:
        await run_batch(batch)  # warm-up: Trio's thread cache, containers at their size
        samples.take(0)
        started = time.monotonic()
        for first in range(0, tasks, batch):
            size = min(batch, tasks - first)
            await run_batch(size)
            samples.take(first + size)
        elapsed = time.monotonic() - started
    finally:
        tracemalloc.stop()
    return {
        "tasks": tasks,
        "every": batch,
        "limiter": LIMITER,
        "seconds": round(elapsed, 2),
        "samples": samples.rows(),
    }


# -- report ----------------------------------------------------------------------------------

_LABELS = {
    "fds": "open fds",
    "threads": "threads",
    "rss_kib": "RSS",
    "traced_bytes": "traced memory",
}
_UNITS = {"rss_kib": " KiB", "traced_bytes": " B"}


def _drift(samples: list[dict[str, int]], metric: str) -> int:
    base = samples[0][metric]
    return max((s[metric] - base for s in samples), key=abs)


def _rows(run: dict[str, Any], what: str) -> list[str]:
    samples = run["samples"]
    lines = []
    for metric in METRICS:
        unit = _UNITS.get(metric, "")
        drift = _drift(samples, metric)
        lines.append(
            f"| {what} | {_LABELS[metric]} | {samples[0][metric]:,}{unit} "
            f"| {samples[-1][metric]:,}{unit} | {drift:+,}{unit} |"
        )
    return lines


def markdown(listener: dict[str, Any], tasks: dict[str, Any]) -> str:
    head = [
        "### Resources over a long run",
        "",
        f"- listener: {listener['cycles']:,} connect/close cycles (one in four reset), "
        f"sampled every {listener['every']:,}, in {listener['seconds']:.1f} s",
        f"- Task: {tasks['tasks']:,} completed Tasks (`run_in_thread`, limiter "
        f"{tasks['limiter']}), sampled every {tasks['every']:,}, in {tasks['seconds']:.1f} s",
        "",
        "| run | figure | first sample | last sample | largest drift from the first |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    return "\n".join(head + _rows(listener, "listener") + _rows(tasks, "Task"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=CYCLES)
    parser.add_argument("--tasks", type=int, default=TASKS)
    args = parser.parse_args()
    listener = trio.run(_soak_listener, args.cycles)
    tasks = trio.run(_soak_tasks, args.tasks)
    _harness.save(
        "soak", {"quick": QUICK, "listener": listener, "tasks": tasks}, markdown(listener, tasks)
    )
    import plot

    payload = {"listener": listener, "tasks": tasks}
    print(plot.render_soak(payload, plot.DEFAULT_OUT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
