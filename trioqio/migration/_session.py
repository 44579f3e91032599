"""The migration session's rules, sans-IO: both ends' state machines (QEMU
``migration/migration.c``'s ``MigrationStatus``, ``migration_ioc_process_incoming``).

Theory of operation
-------------------

A migration has one *main channel* and N *multifd channels*. The multifd channels carry
page packets, whose framing ``_protocol.py`` checks packet by packet; the *session* is
what the main channel says and in which order, plus which channels may join. Its rules
live here, in two small state machines, one per end, driven by a transition table in the
manner of h11's ``_state.py``: every input (a message sent or received, the channel's
end) is looked up under the current state; an input the table does not list is a
:class:`~trioqio.MigrationError` that names the end, the state and the input. No byte
moves here: ``send(message)`` returns the bytes to write, ``receive(data)`` takes the
bytes that arrived (``b""`` for EOF) and returns the messages they completed. The I/O
code in ``_source.py`` and ``_destination.py`` is a pump around these objects.

The source::

    IDLE --send CONFIG (after the hello)--> TRANSFERRING --send END--> ENDED
    ENDED --receive RESULT--> DONE
    TRANSFERRING, ENDED --receive ERROR / send ERROR--> FAILED

The destination::

    IDLE --main hello on a new channel--> AWAIT_CONFIG --receive CONFIG--> TRANSFERRING
    TRANSFERRING --receive END--> ENDED --send RESULT (every multifd channel ended)--> DONE
    AWAIT_CONFIG, TRANSFERRING, ENDED --receive ERROR / send ERROR--> FAILED

Three destination rules that QEMU keeps implicitly in its coroutine's order are explicit
here, each with its own test: **CONFIG first** (no END or RESULT before the geometry is
known), **no second main channel** (a hello in any state but IDLE), and **END next** (after
CONFIG only END or ERROR). Multifd channels may join while TRANSFERRING or ENDED (a channel's
handler can run after the main channel's END arrived) and only with the config's uuid, an
id below its channel count, and an id not seen before; the verdict can be sent only once
every multifd channel has sent its END packet.

After FAILED or DONE, bytes that still arrive are dropped: the pump is closing the channel.

Differences from QEMU: QEMU's main channel carries a device-state stream, not these four
messages, and QEMU has no session object: its rules are the order of its code.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from .._errors import MigrationError
from ._protocol import (
    MESSAGE_HEADER_SIZE,
    Checksum,
    Config,
    End,
    ErrorMessage,
    Message,
    MessageType,
    MultiFDInit,
    Result,
    encode_message,
    pack_main_hello,
    parse_main_hello,
    parse_message,
    parse_message_header,
)

__all__ = ["Closed", "DestinationSession", "Input", "SourceSession", "State"]


class State(enum.Enum):
    """Where a session is (both ends use these names)."""

    IDLE = "IDLE"
    AWAIT_CONFIG = "AWAIT_CONFIG"
    TRANSFERRING = "TRANSFERRING"
    ENDED = "ENDED"
    DONE = "DONE"
    FAILED = "FAILED"


class Input(enum.Enum):
    """What can happen to a session: a message (either direction) or the channel's end."""

    HELLO = "main hello"
    CONFIG = "CONFIG"
    END = "END"
    RESULT = "RESULT"
    ERROR = "ERROR"
    CLOSED = "EOF"


_SEND, _RECEIVE = "send", "receive"


@attrs.frozen
class Closed:
    """The main channel ended (``receive(b"")``) where the state allows it."""


_S, _I = State, Input

#: (state, direction, input) -> next state. Anything not listed is a protocol error.
SOURCE_TRANSITIONS: Final[dict[tuple[State, str, Input], State]] = {
    (_S.IDLE, _SEND, _I.CONFIG): _S.TRANSFERRING,
    (_S.TRANSFERRING, _SEND, _I.END): _S.ENDED,
    (_S.TRANSFERRING, _SEND, _I.ERROR): _S.FAILED,
    (_S.TRANSFERRING, _RECEIVE, _I.ERROR): _S.FAILED,
    (_S.ENDED, _SEND, _I.ERROR): _S.FAILED,
    (_S.ENDED, _RECEIVE, _I.RESULT): _S.DONE,
    (_S.ENDED, _RECEIVE, _I.ERROR): _S.FAILED,
    (_S.DONE, _RECEIVE, _I.CLOSED): _S.DONE,
}

DESTINATION_TRANSITIONS: Final[dict[tuple[State, str, Input], State]] = {
    (_S.IDLE, _RECEIVE, _I.HELLO): _S.AWAIT_CONFIG,
    (_S.AWAIT_CONFIG, _RECEIVE, _I.CONFIG): _S.TRANSFERRING,
    (_S.AWAIT_CONFIG, _RECEIVE, _I.ERROR): _S.FAILED,
    (_S.AWAIT_CONFIG, _SEND, _I.ERROR): _S.FAILED,
    (_S.TRANSFERRING, _RECEIVE, _I.END): _S.ENDED,
    (_S.TRANSFERRING, _RECEIVE, _I.ERROR): _S.FAILED,
    (_S.TRANSFERRING, _SEND, _I.ERROR): _S.FAILED,
    (_S.ENDED, _RECEIVE, _I.ERROR): _S.FAILED,
    (_S.ENDED, _SEND, _I.RESULT): _S.DONE,
    (_S.ENDED, _SEND, _I.ERROR): _S.FAILED,
    (_S.DONE, _RECEIVE, _I.CLOSED): _S.DONE,
}

#: Why an input is refused, where a plain "not allowed" would not say enough.
_REASONS: Final[dict[tuple[str, State, str, Input], tuple[str, str]]] = {
    # (role, state, direction, input): (field, reason)
    **{
        ("destination", state, _RECEIVE, _I.HELLO): ("magic", "a second main channel")
        for state in State
        if state is not State.IDLE
    },
    ("destination", _S.AWAIT_CONFIG, _RECEIVE, _I.END): ("type", "expected CONFIG first"),
    ("destination", _S.AWAIT_CONFIG, _RECEIVE, _I.RESULT): ("type", "expected CONFIG first"),
    ("destination", _S.TRANSFERRING, _RECEIVE, _I.CONFIG): ("type", "expected END next"),
    ("destination", _S.TRANSFERRING, _RECEIVE, _I.RESULT): ("type", "expected END next"),
    ("source", _S.TRANSFERRING, _RECEIVE, _I.RESULT): ("type", "a RESULT before the END"),
}

_INPUTS: Final = {
    MessageType.CONFIG: _I.CONFIG,
    MessageType.END: _I.END,
    MessageType.RESULT: _I.RESULT,
    MessageType.ERROR: _I.ERROR,
}


def _input_of(message: Message) -> Input:
    if isinstance(message, Config):
        return _I.CONFIG
    if isinstance(message, End):
        return _I.END
    if isinstance(message, Result):
        return _I.RESULT
    return _I.ERROR


@attrs.define(eq=False)
class _Machine:
    """The table walk both ends share, and the main channel's receive buffer."""

    role: str
    table: dict[tuple[State, str, Input], State]
    state: State = State.IDLE
    _buffer: bytearray = attrs.field(factory=bytearray)

    def _step(self, direction: str, what: Input, channel: str = "main") -> None:
        key = (self.state, direction, what)
        following = self.table.get(key)
        if following is None:
            raise self._refusal(direction, what, channel)
        self.state = following

    def _refusal(self, direction: str, what: Input, channel: str) -> MigrationError:
        state = self.state.name
        if what is _I.CLOSED:
            return MigrationError(
                f"channel {channel}: closed in state {state}: {self._closed_reason()}",
                channel=channel,
                kind="broken",
                state=state,
            )
        field, reason = _REASONS.get(
            (self.role, self.state, direction, what), ("type", "not allowed")
        )
        verb = "received" if direction == _RECEIVE else "cannot send"
        return MigrationError(
            f"channel {channel}: field {field!r}: {verb} {what.value} in the {self.role}'s "
            f"state {state}: {reason}",
            channel=channel,
            field=field,
            kind="protocol",
            state=state,
        )

    def _closed_reason(self) -> str:
        return "the peer closed the main channel"

    @property
    def finished(self) -> bool:
        """True once DONE or FAILED: nothing more is sent or received."""
        return self.state in (State.DONE, State.FAILED)

    def _send(self, message: Message) -> bytes:
        self._step(_SEND, _input_of(message))
        return encode_message(message)

    def receive(self, data: bytes | bytearray) -> list[Message | Closed]:
        """Take bytes from the main channel; return the messages (and end) they complete.

        Args:
            data: what arrived; ``b""`` is the channel's end.

        Returns:
            Complete messages in order, then :class:`Closed` when ``data`` was the end.

        Raises:
            trioqio.MigrationError: a malformed header or payload (``kind="protocol"``),
                a message the state forbids (``kind="protocol"``, naming state and
                message), or an end before the dialogue is over (``kind="broken"``).
        """
        if self.finished:
            # The pump is closing the channel: late bytes do not matter.
            if not data and self.state is State.DONE:
                self._step(_RECEIVE, _I.CLOSED)
                return [Closed()]
            return []
        events: list[Message | Closed] = []
        self._buffer += data
        while len(self._buffer) >= MESSAGE_HEADER_SIZE and not self.finished:
            kind, length = parse_message_header(
                bytes(self._buffer[:MESSAGE_HEADER_SIZE]), channel="main"
            )
            # The state is checked on the header, before the payload arrives or is
            # decoded: an illegal message is named as such, even when its payload would
            # not parse either.
            if (self.state, _RECEIVE, _INPUTS[kind]) not in self.table:
                raise self._refusal(_RECEIVE, _INPUTS[kind], "main")
            end = MESSAGE_HEADER_SIZE + length
            if len(self._buffer) < end:
                break
            message = parse_message(
                kind, bytes(self._buffer[MESSAGE_HEADER_SIZE:end]), channel="main"
            )
            del self._buffer[:end]
            self._accept(message)
            self._step(_RECEIVE, _INPUTS[kind])
            events.append(message)
        if not data:
            if self.state is State.FAILED:
                return events
            if self._buffer:
                raise MigrationError(
                    f"channel main: closed inside a message in state {self.state.name}",
                    channel="main",
                    kind="broken",
                    state=self.state.name,
                )
            self._step(_RECEIVE, _I.CLOSED)
            events.append(Closed())
        return events

    def _accept(self, message: Message) -> None:
        """Check a received message beyond the table (the destination checks CONFIG)."""


@attrs.define(eq=False)
class SourceSession(_Machine):
    """The source's side of the main-channel dialogue.

    Example::

        session = SourceSession()
        await main.send_all(session.send(config))  # the hello and CONFIG
        ...
        await main.send_all(session.send(End(pages=n, checksum=digest)))
        for event in session.receive(await main.receive_some()):
            ...  # Result, or ErrorMessage
    """

    role: str = "source"
    table: dict[tuple[State, str, Input], State] = attrs.field(factory=lambda: SOURCE_TRANSITIONS)

    def send(self, message: Message) -> bytes:
        """Return the bytes for ``message``; CONFIG comes with the main hello in front.

        Raises:
            trioqio.MigrationError: the state does not allow sending it.
        """
        data = self._send(message)
        return pack_main_hello() + data if isinstance(message, Config) else data

    def _closed_reason(self) -> str:
        return "the destination closed the connection before its verdict"


@attrs.define(eq=False)
class DestinationSession(_Machine):
    """The destination's side: the main-channel dialogue and which channels may join.

    Attributes:
        checksum: the digest CONFIG must announce, or None to take the source's.
        channels: the multifd channel count CONFIG must announce, or None.
        config: the source's CONFIG once received.

    Example::

        session = DestinationSession()
        session.open_main(await channel.receive_exactly(8), label="accepted #0")
        for message in session.receive(await channel.receive_some()):
            ...
    """

    role: str = "destination"
    table: dict[tuple[State, str, Input], State] = attrs.field(
        factory=lambda: DESTINATION_TRANSITIONS
    )
    checksum: Checksum | None = None
    channels: int | None = None
    config: Config | None = None
    _joined: set[int] = attrs.field(factory=set[int])
    _ended: set[int] = attrs.field(factory=set[int])

    @property
    def began(self) -> bool:
        """True once a main channel's hello was accepted: a migration is under way."""
        return self.state is not State.IDLE

    def open_main(self, hello: bytes, *, label: str) -> None:
        """Take a new main channel's first 8 bytes (``"QEVM"`` and the version).

        Raises:
            trioqio.MigrationError: a bad hello (``kind="protocol"``, field ``magic`` or
                ``version``), or a second main channel (field ``magic``).
        """
        parse_main_hello(hello, channel=label)
        self._step(_RECEIVE, _I.HELLO, channel=label)

    def _accept(self, message: Message) -> None:
        if not isinstance(message, Config):
            return
        if self.checksum is not None and message.checksum is not self.checksum:
            raise MigrationError(
                f"channel main: field 'checksum': the source uses {message.checksum.label}, "
                f"this destination was told to expect {self.checksum.label}",
                channel="main",
                field="checksum",
                kind="mismatch",
            )
        if self.channels is not None and message.channels != self.channels:
            raise MigrationError(
                f"channel main: field 'channels': the source opens {message.channels} "
                f"multifd channel(s), this destination expects {self.channels} "
                "(--channels must match on both ends)",
                channel="main",
                field="channels",
                kind="mismatch",
            )
        self.config = message

    def join_multifd(self, init: bytes, *, label: str) -> MultiFDInit:
        """Take a multifd channel's 64-byte init header; return it (its id places it).

        Raises:
            trioqio.MigrationError: ``kind="protocol"``: no CONFIG yet, a bad field
                (``magic``, ``version``, ``uuid``, ``id``), or an id already set up.
        """
        config = self.config
        if config is None or self.state not in (State.TRANSFERRING, State.ENDED):
            raise MigrationError(
                f"channel {label}: a multifd channel in the destination's state "
                f"{self.state.name}: expected CONFIG first",
                channel=label,
                field="type",
                kind="protocol",
                state=self.state.name,
            )
        header = MultiFDInit.parse(
            init, channel=label, expected_uuid=config.uuid, channels=config.channels
        )
        if header.id in self._joined:
            raise MigrationError(
                f"channel {label}: field 'id': received id {header.id} already set up",
                channel=label,
                field="id",
                kind="protocol",
            )
        self._joined.add(header.id)
        return header

    def end_multifd(self, channel_id: int) -> None:
        """Record that multifd channel ``channel_id`` sent its END packet."""
        if channel_id not in self._joined or channel_id in self._ended:
            raise MigrationError(
                f"channel multifd {channel_id}: an END packet from a channel that has not "
                "joined or already ended",
                channel=f"multifd {channel_id}",
                field="flags",
                kind="protocol",
            )
        self._ended.add(channel_id)

    @property
    def all_joined(self) -> bool:
        """True once every multifd channel CONFIG announced has joined."""
        return self.config is not None and len(self._joined) == self.config.channels

    @property
    def all_ended(self) -> bool:
        """True once every multifd channel CONFIG announced has sent its END packet."""
        return self.config is not None and len(self._ended) == self.config.channels

    def send(self, message: Result | ErrorMessage) -> bytes:
        """Return the bytes for the verdict (RESULT) or an ERROR.

        Raises:
            trioqio.MigrationError: the state does not allow it, or RESULT before every
                multifd channel ended.
        """
        if isinstance(message, Result) and self.state is State.ENDED and not self.all_ended:
            raise MigrationError(
                "channel main: cannot send RESULT before every multifd channel ended",
                channel="main",
                field="type",
                kind="protocol",
                state=self.state.name,
            )
        return self._send(message)

    def _closed_reason(self) -> str:
        if self.state is State.AWAIT_CONFIG:
            return "the source closed the main channel before its config"
        return "incomplete migration: the source closed the main channel before END"
