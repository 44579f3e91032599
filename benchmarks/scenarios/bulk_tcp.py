"""Bulk TCP throughput over loopback: 256 KiB writes, the reader draining in 256 KiB reads."""

from __future__ import annotations

import functools

from _scenario import Measure, Scenario

from scenarios import _tcp

SIZE = 1024 * _tcp.MiB
QUICK_SIZE = 64 * _tcp.MiB


def _implementations(quick: bool) -> dict[str, Measure]:
    size = QUICK_SIZE if quick else SIZE
    return {impl: functools.partial(_tcp.bulk, impl, size) for impl in _tcp.IMPLEMENTATIONS}


SCENARIOS = [
    Scenario(
        key="bulk-tcp",
        title="Bulk TCP throughput, one connection",
        unit="MiB/s",
        reference="trio",
        implementations=_implementations,
        notes=(
            f"{SIZE // _tcp.MiB} MiB per run in {_tcp.CHUNK // 1024} KiB writes, drained in "
            f"{_tcp.CHUNK // 1024} KiB reads; sender and receiver in the same event loop. "
            "`trioqio`: `SocketChannel`; `trio`: `trio.SocketStream`; anyio: `connect_tcp` "
            "streams; asyncio/uvloop: `asyncio` streams."
        ),
    )
]
