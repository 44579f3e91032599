"""1 KiB echo round trips over 10 loopback TCP connections, both ends in one event loop."""

from __future__ import annotations

import functools

from _scenario import Measure, Scenario

from scenarios import _tcp

ROUND_TRIPS = 20_000
QUICK_ROUND_TRIPS = 4_000


def _implementations(quick: bool) -> dict[str, Measure]:
    count = QUICK_ROUND_TRIPS if quick else ROUND_TRIPS
    return {impl: functools.partial(_tcp.echo, impl, count) for impl in _tcp.IMPLEMENTATIONS}


SCENARIOS = [
    Scenario(
        key="echo",
        title="1 KiB echo round trips, 10 connections",
        unit="round trips/s",
        reference="trio",
        implementations=_implementations,
        target=1.25,
        notes=(
            f"{ROUND_TRIPS:,} round trips per run, split over {_tcp.ECHO_CONNECTIONS} "
            "connections; client and echo server in the same event loop. `trioqio`: "
            "`SocketChannel`; `trio`: `trio.SocketStream`; anyio: `connect_tcp` streams; "
            "asyncio/uvloop: `asyncio` streams."
        ),
    )
]
