"""Benchmark: FileChannel against trio.open_file and raw FdStream, in one run.

Three measurements, each with a warm-up and interleaved rounds:

1. file write: SIZE bytes (default 128 MiB) in 256 KiB writes to a fresh file in a temp
   directory, ``FileChannel.send_all`` vs ``trio.open_file(..., "wb", buffering=0).write``
   (both run each write in a worker thread);
2. file read: one such file read back in 256 KiB reads, ``FileChannel.receive_some`` vs
   the async file's ``read``;
3. pipe: SIZE bytes through a pipe, writer and reader concurrently, ``FileChannel`` vs
   ``trio.lowlevel.FdStream`` (which FileChannel wraps for pipes).

Prints Markdown tables (median, min..max, ratio vs the peer) and writes
``benchmarks/results/channel_file.json``.

Usage: ``python benchmarks/bench_channel_file.py [--size-mib N] [--rounds N]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parent))
import _harness

import trioqio

CHUNK = 256 * 1024
MiB = 1024 * 1024


def _timed(afn: Callable[[], object], size: int) -> float:
    start = time.perf_counter()
    trio.run(afn)  # type: ignore[arg-type]
    return size / MiB / (time.perf_counter() - start)


def file_cases(directory: str, size: int) -> dict[str, dict[str, Callable[[], float]]]:
    block = os.urandom(CHUNK)
    count = size // CHUNK
    ours = os.path.join(directory, "channel.bin")
    theirs = os.path.join(directory, "trio.bin")

    async def channel_write() -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        async with await trioqio.open_file(ours, flags) as channel:
            for _ in range(count):
                await channel.send_all(block)

    async def trio_write() -> None:
        async with await trio.open_file(theirs, "wb", buffering=0) as file:
            for _ in range(count):
                await file.write(block)

    async def channel_read() -> None:
        async with await trioqio.open_file(ours, os.O_RDONLY) as channel:
            while await channel.receive_some(CHUNK):
                pass

    async def trio_read() -> None:
        async with await trio.open_file(ours, "rb", buffering=0) as file:
            while await file.read(CHUNK):
                pass

    return {
        "write": {
            "FileChannel": lambda: _timed(channel_write, size),
            "trio.open_file": lambda: _timed(trio_write, size),
        },
        "read": {
            "FileChannel": lambda: _timed(channel_read, size),
            "trio.open_file": lambda: _timed(trio_read, size),
        },
    }


def pipe_cases(size: int) -> dict[str, Callable[[], float]]:
    block = os.urandom(CHUNK)
    count = size // CHUNK

    async def run(make: Callable[[int], trio.abc.Stream]) -> None:
        read_fd, write_fd = os.pipe()
        writer, reader = make(write_fd), make(read_fd)

        async def write() -> None:
            async with writer:
                for _ in range(count):
                    await writer.send_all(block)

        async def read() -> None:
            async with reader:
                while await reader.receive_some(CHUNK):
                    pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            nursery.start_soon(read)

    async def channel() -> None:
        await run(trioqio.FileChannel)

    async def fdstream() -> None:
        await run(trio.lowlevel.FdStream)

    return {
        "FileChannel": lambda: _timed(channel, size),
        "trio FdStream": lambda: _timed(fdstream, size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=_harness.rounds_default(128, 8))
    parser.add_argument("--rounds", type=int, default=_harness.rounds_default(9, 2))
    args = parser.parse_args()
    size = args.size_mib * MiB
    sections: list[str] = []
    payload: dict[str, object] = {"size_bytes": size, "chunk_bytes": CHUNK, "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as directory:
        cases = file_cases(directory, size)
        # Writes first (each to its own file), then reads (both of one file written
        # beforehand), so no read round competes with a write round's dirty pages.
        samples = {
            kind: _harness.run_interleaved(cases[kind], rounds=args.rounds)
            for kind in ("write", "read")
        }
    for kind in ("write", "read"):
        summary = _harness.summarize(samples[kind])
        payload[f"file_{kind}"] = summary
        sections.append(
            _harness.table(
                f"regular file {kind}, {args.size_mib} MiB in 256 KiB calls",
                summary,
                unit="MiB/s",
                baseline="trio.open_file",
            )
        )
    pipe_summary = _harness.summarize(
        _harness.run_interleaved(pipe_cases(size), rounds=args.rounds)
    )
    payload["pipe"] = pipe_summary
    sections.append(
        _harness.table(
            f"pipe, {args.size_mib} MiB, writer and reader concurrently",
            pipe_summary,
            unit="MiB/s",
            baseline="trio FdStream",
        )
    )
    _harness.save("channel_file", payload, "\n\n".join(sections))


if __name__ == "__main__":
    main()
