"""Accept rate: connect, 2-byte reply, close; the server and the load in separate processes."""

from __future__ import annotations

import functools

from _scenario import Measure, Scenario

from scenarios import _servers

SECONDS = 1.0
QUICK_SECONDS = 0.25


def _implementations(quick: bool) -> dict[str, Measure]:
    seconds = QUICK_SECONDS if quick else SECONDS
    return {
        kind: functools.partial(_servers.accept_round, kind, seconds) for kind in _servers.KINDS
    }


SCENARIOS = [
    Scenario(
        key="accept",
        title="Accept rate (connect, 2-byte reply, close)",
        unit="conn/s",
        reference="trio",
        implementations=_implementations,
        target=1.0,
        notes=(
            f"Server in its own process (CPU 0); load from a separate uvloop process (CPU 1), "
            f"{_servers.CONCURRENCY} clients looping for {SECONDS:g} s. `trioqio`: `NetListener` "
            "+ client func; `trio`: `trio.serve_tcp`; anyio: `create_tcp_listener().serve`; "
            "asyncio/uvloop: `asyncio.start_server`."
        ),
    )
]
