"""A small QMP client (QEMU's JSON machine protocol) over a UNIX socket, for the tests.

One command at a time; events that arrive meanwhile are kept in :attr:`Qmp.events`.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import trio


class QmpError(Exception):
    """QEMU answered a command with an error."""


@attrs.define(eq=False)
class Qmp:
    """A connected QMP session (after the greeting and ``qmp_capabilities``)."""

    stream: trio.SocketStream
    events: list[dict[str, Any]] = attrs.field(factory=list)
    _buffer: bytearray = attrs.field(factory=bytearray)
    _arrived: trio.Event = attrs.field(factory=trio.Event)

    @classmethod
    async def connect(cls, path: str, *, seconds: float = 30.0) -> Qmp:
        """Connect once QEMU listens on ``path``, and negotiate capabilities."""
        with trio.fail_after(seconds):
            while True:
                try:
                    stream = await trio.open_unix_socket(path)
                    break
                except OSError:
                    await trio.sleep(0.05)
        qmp = cls(stream)
        greeting = await qmp._message()
        if "QMP" not in greeting:
            raise QmpError(f"not a QMP greeting: {greeting}")
        await qmp.command("qmp_capabilities")
        return qmp

    async def _message(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError("QMP: QEMU closed the monitor")
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return dict(json.loads(line))

    async def command(self, name: str, **arguments: Any) -> Any:
        """Run ``name`` and return its ``return`` value; raise :class:`QmpError` on error."""
        message: dict[str, Any] = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        await self.stream.send_all(json.dumps(message).encode() + b"\n")
        while True:
            reply = await self._message()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise QmpError(f"{name}: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")

    async def wait_event(self, name: str, **data: Any) -> dict[str, Any]:
        """Return the first event ``name`` whose data holds ``data`` (kept or new)."""

        def matches(event: dict[str, Any]) -> bool:
            fields = event.get("data", {})
            return event["event"] == name and all(fields.get(k) == v for k, v in data.items())

        while True:
            for event in self.events:
                if matches(event):
                    return event
            self.events.append(await self._message())

    async def wait_migration(self, *states: str) -> str:
        """Wait for a ``MIGRATION`` event whose status is one of ``states``; return it."""
        while True:
            for event in self.events:
                if event["event"] == "MIGRATION" and event["data"]["status"] in states:
                    return str(event["data"]["status"])
            self.events.append(await self._message())

    async def aclose(self) -> None:
        """Close the monitor connection."""
        await self.stream.aclose()
