"""Benchmark: ``SocketChannel.writev`` against ``send_all`` over loopback TCP, in one run.

The same volume as QEMU's data-test messages (250 buffers of 4,194 bytes) sent with
``SocketChannel.writev`` vs ``send_all`` of the buffers joined beforehand (the best case
for send_all) and joined per message (what a caller would have to do), the reader draining
in 256 KiB reads.

Bulk throughput and 1 KiB echo against raw Trio, anyio, asyncio and uvloop are the
``bulk-tcp`` and ``echo`` scenarios of ``benchmarks/compare.py``.

Prints a Markdown table (median, range, ratio vs ``send_all joined``) and writes
``benchmarks/results/channel_socket.json`` / ``channel_socket.md``.

Usage: ``python benchmarks/bench_channel_socket.py [--size-mib N] [--rounds N]``
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parent))
import _harness
from scenarios._tcp import MiB, drain, trio_pair

import trioqio
import trioqio.testing

MODES = ("writev (250 x 4194)", "send_all joined", "join + send_all")


def writev_rate(mode: str, size: int) -> float:
    """MiB/s of about ``size`` bytes of data-test messages sent the ``mode`` way."""
    buffers = trioqio.testing.data_test_buffers()
    joined = b"".join(buffers)
    messages = max(1, size // len(joined))

    async def main() -> float:
        client, server = await trio_pair("trioqio")
        assert isinstance(client, trioqio.SocketChannel)
        async with client, server:
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, server, messages * len(joined))
                for _ in range(messages):
                    if mode == MODES[0]:
                        await client.writev(buffers)
                    elif mode == MODES[1]:
                        await client.send_all(joined)
                    else:
                        await client.send_all(b"".join(buffers))
            return messages * len(joined) / MiB / (time.perf_counter() - start)

    return trio.run(main)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=_harness.rounds_default(1024, 16))
    parser.add_argument("--rounds", type=int, default=_harness.rounds_default(5, 1))
    args = parser.parse_args(argv)
    size = args.size_mib * MiB
    samples = _harness.run_interleaved(
        {mode: functools.partial(writev_rate, mode, size) for mode in MODES}, rounds=args.rounds
    )
    summary = _harness.summarize(samples)
    markdown = "\n\n".join(
        [
            _harness.table(
                f"writev vs send_all ({args.size_mib} MiB of 250 x 4194 B messages)",
                summary,
                unit="MiB/s",
                baseline="send_all joined",
            ),
            "Bulk and echo against the peers: `bulk-tcp` and `echo` in [compare.md](compare.md).",
        ]
    )
    _harness.save(
        "channel_socket",
        {"size_mib": args.size_mib, "rounds": args.rounds, "writev_mib_s": summary},
        markdown,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
