"""Accept rate: connect, 2-byte reply, close; the server and the load in separate processes.

``accept``: trioqio's own sockets (``NetListener.open``) against ``trio.serve_tcp`` and the
other peers. ``accept-trio-listener``: the same work over Trio's own listeners
(``trio.open_tcp_listeners``), served by ``NetListener.add_listener`` and by
``trioqio.serve`` against ``trio.serve_listeners`` (issue 14).
"""

from __future__ import annotations

import functools

from _scenario import Measure, Scenario

from scenarios import _servers

SECONDS = 1.0
QUICK_SECONDS = 0.25

_LAYOUT = (
    f"Server in its own process (CPU 0); load from a separate uvloop process (CPU 1), "
    f"{_servers.CONCURRENCY} clients looping for {SECONDS:g} s; the handler sends "
    '`b"ok"` and returns.'
)

#: Row name in the ``accept-trio-listener`` table -> server kind in ``_servers``.
_TRIO_LISTENER_ROWS = {
    "trioqio": "trioqio-trio-listener",
    "trioqio (serve)": "trioqio-serve",
    "trio": "trio-serve-listeners",
}


def _implementations(quick: bool) -> dict[str, Measure]:
    seconds = QUICK_SECONDS if quick else SECONDS
    return {
        kind: functools.partial(_servers.accept_round, kind, seconds) for kind in _servers.KINDS
    }


def _trio_listener_implementations(quick: bool) -> dict[str, Measure]:
    seconds = QUICK_SECONDS if quick else SECONDS
    return {
        row: functools.partial(_servers.accept_round, kind, seconds)
        for row, kind in _TRIO_LISTENER_ROWS.items()
    }


SCENARIOS = [
    Scenario(
        key="accept",
        title="Accept rate (connect, 2-byte reply, close)",
        unit="conn/s",
        reference="trio",
        implementations=_implementations,
        target=1.5,
        notes=(
            f"{_LAYOUT} `trioqio`: `NetListener.open` + client func (its own sockets, "
            "accepted through `SocketChannelListener`; target 1.5x, issue 14); `trio`: "
            "`trio.serve_tcp`; anyio: `create_tcp_listener().serve`; asyncio/uvloop: "
            "`asyncio.start_server`."
        ),
    ),
    Scenario(
        key="accept-trio-listener",
        title="Accept rate over trio.SocketListener (connect, 2-byte reply, close)",
        unit="conn/s",
        reference="trio",
        implementations=_trio_listener_implementations,
        target=0.95,
        notes=(
            f"{_LAYOUT} Every row serves the `trio.SocketListener` of "
            '`trio.open_tcp_listeners(0, host="127.0.0.1")`; the handler gets a '
            "`trio.SocketStream`. `trioqio`: `NetListener.add_listener` + client func "
            "(target 0.95x, issue 14); `trioqio (serve)`: `nursery.start(trioqio.serve, "
            "handler, *listeners)`; `trio`: `trio.serve_listeners(handler, listeners)`."
        ),
    ),
]
