"""The migration session state machines (``trioqio/migration/_session.py``), with bytes alone.

Every (state, direction, input) the public API can express is tried on both ends: the
legal ones must land in the state the transition table names, the illegal ones must raise
a MigrationError naming the state and the message. The destination's three rules (CONFIG
first, no second main channel, END next) each have their own test, at the byte level and
through the real destination over sockets, so removing one from the table fails a test.
"""

from __future__ import annotations

import itertools
import uuid as uuid_module
from collections.abc import Callable

import pytest
import trio

import trioqio
from trioqio import MigrationError
from trioqio.migration._destination import DestinationOptions, run_destination
from trioqio.migration._protocol import (
    Checksum,
    Config,
    End,
    ErrorMessage,
    Message,
    MultiFDInit,
    PacketFlags,
    PacketHeader,
    Result,
    ResultStatus,
    encode_message,
    pack_main_hello,
)
from trioqio.migration._session import (
    DESTINATION_TRANSITIONS,
    SOURCE_TRANSITIONS,
    Closed,
    DestinationSession,
    Input,
    SourceSession,
    State,
)

UUID = uuid_module.uuid4().bytes
CONFIG = Config(uuid=UUID, size=1 << 20, page_size=4096, channels=2, packet_pages=16)
END = End(pages=256, checksum=bytes(32))
RESULT = Result(status=ResultStatus.MATCH, pages=256, checksum=bytes(32))
ERROR = ErrorMessage(text="boom")
MESSAGES: dict[Input, Message] = {
    Input.CONFIG: CONFIG,
    Input.END: END,
    Input.RESULT: RESULT,
    Input.ERROR: ERROR,
}


# -- driving each end to each state, with bytes ----------------------------------------------


def _source_in(state: State) -> SourceSession:
    session = SourceSession()
    if state is State.IDLE:
        return session
    session.send(CONFIG)
    if state is State.FAILED:
        session.receive(encode_message(ERROR))
    elif state in (State.ENDED, State.DONE):
        session.send(END)
        if state is State.DONE:
            session.receive(encode_message(RESULT))
    assert session.state is state
    return session


def _destination_in(state: State) -> DestinationSession:
    session = DestinationSession()
    if state is State.IDLE:
        return session
    session.open_main(pack_main_hello(), label="accepted #0")
    if state is State.FAILED:
        session.receive(encode_message(ERROR))
    elif state is not State.AWAIT_CONFIG:
        session.receive(encode_message(CONFIG))
        if state in (State.ENDED, State.DONE):
            session.receive(encode_message(END))
            for channel_id in range(CONFIG.channels):
                session.join_multifd(MultiFDInit(uuid=UUID, id=channel_id).pack(), label="m")
                session.end_multifd(channel_id)
            if state is State.DONE:
                session.send(RESULT)
    assert session.state is state
    return session


def _source_cases() -> list[tuple[State, str, Input]]:
    cases: list[tuple[State, str, Input]] = []
    for state in State:
        if state is State.AWAIT_CONFIG:
            continue  # the source never waits for a CONFIG
        for what in (Input.CONFIG, Input.END, Input.ERROR):
            cases.append((state, "send", what))
        for what in (Input.CONFIG, Input.END, Input.RESULT, Input.ERROR, Input.CLOSED):
            cases.append((state, "receive", what))
    return cases


def _destination_cases() -> list[tuple[State, str, Input]]:
    cases = []
    for state in State:
        for what in (Input.RESULT, Input.ERROR):
            cases.append((state, "send", what))
        for what in (Input.HELLO, Input.CONFIG, Input.END, Input.RESULT, Input.ERROR, Input.CLOSED):
            cases.append((state, "receive", what))
    return cases


def _apply(session: SourceSession | DestinationSession, direction: str, what: Input) -> object:
    if direction == "send":
        message = MESSAGES[what]
        if isinstance(session, DestinationSession):
            assert isinstance(message, Result | ErrorMessage)
            return session.send(message)
        return session.send(message)
    if what is Input.HELLO:
        assert isinstance(session, DestinationSession)
        session.open_main(pack_main_hello(), label="accepted #9")
        return None
    if what is Input.CLOSED:
        return session.receive(b"")
    return session.receive(encode_message(MESSAGES[what]))


def _check(
    session: SourceSession | DestinationSession,
    table: dict[tuple[State, str, Input], State],
    state: State,
    direction: str,
    what: Input,
) -> None:
    expected = table.get((state, direction, what))
    if direction == "receive" and what is not Input.HELLO and state in (State.DONE, State.FAILED):
        # Documented: once finished, the pump is closing the channel and late bytes are
        # dropped; only DONE's clean end is an event.
        events = _apply(session, direction, what)
        assert events == ([Closed()] if expected is State.DONE else [])
        assert session.state is state
        return
    if expected is None:
        with pytest.raises(MigrationError) as raised:
            _apply(session, direction, what)
        error = raised.value
        assert error.state == state.name, error
        assert state.name in str(error)
        if what is Input.CLOSED:
            assert error.kind == "broken"
        else:
            assert error.kind == "protocol"
            assert what.value in str(error)  # names the message
        assert session.state is state  # a refused input changes nothing
        return
    result = _apply(session, direction, what)
    assert session.state is expected
    if direction == "send":
        assert isinstance(result, bytes)
    elif what is Input.CLOSED:
        assert result == [Closed()]
    elif what is not Input.HELLO:
        assert result == [MESSAGES[what]]


@pytest.mark.parametrize(("state", "direction", "what"), _source_cases())
def test_source_transition(state: State, direction: str, what: Input) -> None:
    _check(_source_in(state), SOURCE_TRANSITIONS, state, direction, what)


@pytest.mark.parametrize(("state", "direction", "what"), _destination_cases())
def test_destination_transition(state: State, direction: str, what: Input) -> None:
    _check(_destination_in(state), DESTINATION_TRANSITIONS, state, direction, what)


def test_every_table_entry_is_tried() -> None:
    tried_source = set(_source_cases())
    tried_destination = set(_destination_cases())
    assert set(SOURCE_TRANSITIONS) <= tried_source
    assert set(DESTINATION_TRANSITIONS) <= tried_destination


# -- the destination's three rules, at the byte level ------------------------------------------


def test_rule_config_first() -> None:
    session = _destination_in(State.AWAIT_CONFIG)
    with pytest.raises(MigrationError, match="expected CONFIG first") as raised:
        session.receive(encode_message(END))
    assert (raised.value.field, raised.value.state) == ("type", "AWAIT_CONFIG")


def test_rule_no_second_main_channel() -> None:
    for state in (State.AWAIT_CONFIG, State.TRANSFERRING, State.ENDED):
        session = _destination_in(state)
        with pytest.raises(MigrationError, match="a second main channel") as raised:
            session.open_main(pack_main_hello(), label="accepted #5")
        assert (raised.value.channel, raised.value.field) == ("accepted #5", "magic")


def test_rule_end_next() -> None:
    session = _destination_in(State.TRANSFERRING)
    with pytest.raises(MigrationError, match="expected END next") as raised:
        session.receive(encode_message(CONFIG))
    assert raised.value.state == "TRANSFERRING"


# -- bytes: partial, joined, malformed -------------------------------------------------------------


def test_messages_split_at_every_byte_and_joined() -> None:
    data = encode_message(CONFIG) + encode_message(END)
    session = _destination_in(State.AWAIT_CONFIG)
    events: list[object] = []
    for index in range(len(data)):
        events += session.receive(data[index : index + 1])
    assert events == [CONFIG, END]
    joined = _destination_in(State.AWAIT_CONFIG)
    assert joined.receive(data) == [CONFIG, END]
    assert joined.state is State.ENDED


def test_eof_inside_a_message_is_broken() -> None:
    session = _destination_in(State.AWAIT_CONFIG)
    assert session.receive(encode_message(CONFIG)[:10]) == []
    with pytest.raises(MigrationError, match="closed inside a message") as raised:
        session.receive(b"")
    assert raised.value.kind == "broken"


def test_illegal_message_is_named_before_its_payload_is_parsed() -> None:
    session = _source_in(State.TRANSFERRING)
    bogus = encode_message(RESULT)[:8] + bytes([9]) + encode_message(RESULT)[9:]  # bad status
    with pytest.raises(MigrationError, match="a RESULT before the END"):
        session.receive(bogus)


def test_illegal_message_is_refused_on_its_header_alone() -> None:
    session = _destination_in(State.AWAIT_CONFIG)
    with pytest.raises(MigrationError, match="expected CONFIG first"):
        session.receive(encode_message(END)[:8])  # the header only


def test_source_eof_before_verdict_says_so() -> None:
    session = _source_in(State.ENDED)
    with pytest.raises(MigrationError, match="closed the connection before its verdict") as raised:
        session.receive(b"")
    assert (raised.value.kind, raised.value.channel) == ("broken", "main")


def test_source_sends_the_hello_with_config() -> None:
    assert SourceSession().send(CONFIG) == pack_main_hello() + encode_message(CONFIG)


@pytest.mark.parametrize(
    ("hello", "field"),
    [(b"QEVX" + pack_main_hello()[4:], "magic"), (b"QEVM\x00\x00\x00\x07", "version")],
)
def test_bad_hello(hello: bytes, field: str) -> None:
    session = DestinationSession()
    with pytest.raises(MigrationError) as raised:
        session.open_main(hello, label="accepted #0")
    assert (raised.value.field, raised.value.kind) == (field, "protocol")
    assert not session.began


# -- what CONFIG must announce, and which multifd channels may join ------------------------------


def test_checksum_mismatch() -> None:
    session = DestinationSession(checksum=Checksum.SHA256)
    session.open_main(pack_main_hello(), label="a")
    with pytest.raises(MigrationError, match="told to expect sha256") as raised:
        session.receive(encode_message(CONFIG))
    assert (raised.value.kind, raised.value.field) == ("mismatch", "checksum")
    assert session.state is State.AWAIT_CONFIG


def test_channel_count_mismatch() -> None:
    session = DestinationSession(channels=4)
    session.open_main(pack_main_hello(), label="a")
    with pytest.raises(MigrationError, match="--channels must match") as raised:
        session.receive(encode_message(CONFIG))
    assert (raised.value.kind, raised.value.field) == ("mismatch", "channels")


def test_matching_channel_count_is_accepted() -> None:
    session = DestinationSession(channels=2)
    session.open_main(pack_main_hello(), label="a")
    assert session.receive(encode_message(CONFIG)) == [CONFIG]


def test_multifd_before_config() -> None:
    session = _destination_in(State.AWAIT_CONFIG)
    with pytest.raises(MigrationError, match="expected CONFIG first"):
        session.join_multifd(MultiFDInit(uuid=UUID, id=0).pack(), label="accepted #1")


@pytest.mark.parametrize(
    ("init", "field"),
    [
        (MultiFDInit(uuid=bytes(16), id=0).pack(), "uuid"),
        (MultiFDInit(uuid=UUID, id=2).pack(), "id"),
    ],
)
def test_multifd_bad_init(init: bytes, field: str) -> None:
    session = _destination_in(State.TRANSFERRING)
    with pytest.raises(MigrationError) as raised:
        session.join_multifd(init, label="accepted #1")
    assert (raised.value.field, raised.value.channel) == (field, "accepted #1")


def test_multifd_duplicate_id_and_late_join() -> None:
    session = _destination_in(State.TRANSFERRING)
    session.join_multifd(MultiFDInit(uuid=UUID, id=1).pack(), label="accepted #1")
    with pytest.raises(MigrationError, match="already set up"):
        session.join_multifd(MultiFDInit(uuid=UUID, id=1).pack(), label="accepted #2")
    session.receive(encode_message(END))  # a channel may still join after END
    assert session.join_multifd(MultiFDInit(uuid=UUID, id=0).pack(), label="accepted #3").id == 0
    assert session.all_joined


def test_verdict_waits_for_every_multifd_end() -> None:
    session = _destination_in(State.TRANSFERRING)
    session.receive(encode_message(END))
    session.join_multifd(MultiFDInit(uuid=UUID, id=0).pack(), label="a")
    session.end_multifd(0)
    with pytest.raises(MigrationError, match="before every multifd channel ended"):
        session.send(RESULT)
    with pytest.raises(MigrationError, match="already ended"):
        session.end_multifd(0)
    with pytest.raises(MigrationError, match="has not joined"):
        session.end_multifd(1)
    session.join_multifd(MultiFDInit(uuid=UUID, id=1).pack(), label="b")
    session.end_multifd(1)
    assert session.send(RESULT) == encode_message(RESULT)
    assert session.state is State.DONE


# -- the three rules through the real destination, over sockets ---------------------------------


async def _against_destination(
    script: Callable[[trioqio.abc.Channel, str], object],
) -> tuple[MigrationError, bytes]:
    errors: list[MigrationError] = []
    told = b""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def destination(task_status: trio.TaskStatus[object]) -> None:
                try:
                    await run_destination(
                        DestinationOptions(address="tcp:127.0.0.1:0", backlog=2),
                        task_status=task_status,
                    )
                except MigrationError as exc:
                    errors.append(exc)

            addresses = await nursery.start(destination)
            address = str(addresses[0])
            main = await trioqio.connect(address)
            try:
                await script(main, address)  # type: ignore[misc]
                while chunk := await main.receive_some():
                    told += chunk
            except trio.BrokenResourceError:
                pass
            finally:
                await main.aclose()
    assert len(errors) == 1
    return errors[0], told


async def test_destination_enforces_config_first() -> None:
    async def script(main: trioqio.abc.Channel, _address: str) -> None:
        await main.send_all(pack_main_hello() + encode_message(END))

    error, told = await _against_destination(script)
    assert "expected CONFIG first" in str(error)
    assert b"expected CONFIG first" in told  # the source is told why (ERROR)


async def test_destination_enforces_end_next() -> None:
    async def script(main: trioqio.abc.Channel, _address: str) -> None:
        await main.send_all(pack_main_hello() + encode_message(CONFIG) + encode_message(CONFIG))

    error, told = await _against_destination(script)
    assert "expected END next" in str(error)
    assert b"expected END next" in told


async def test_destination_refuses_a_second_main_channel() -> None:
    async def script(main: trioqio.abc.Channel, address: str) -> None:
        await main.send_all(pack_main_hello() + encode_message(CONFIG))
        async with await trioqio.connect(address) as second:
            await second.send_all(pack_main_hello())
            await second.receive_some()  # closed by the destination

    error, told = await _against_destination(script)
    assert "a second main channel" in str(error)
    assert b"a second main channel" in told


async def test_end_packet_then_verdict_over_sockets() -> None:
    """A complete (empty-paged) dialogue: the legal path through the pump."""
    config = Config(uuid=UUID, size=0, page_size=4096, channels=1, packet_pages=16)

    async def script(main: trioqio.abc.Channel, address: str) -> None:
        session = SourceSession()
        await main.send_all(session.send(config))
        async with await trioqio.connect(address) as multifd:
            end = PacketHeader(first_page=0, num_pages=0, length=0, flags=PacketFlags.END)
            await multifd.send_all(MultiFDInit(uuid=UUID, id=0).pack() + end.pack())
            await main.send_all(session.send(End(pages=0, checksum=bytes(32))))
            events: list[object] = []
            while not events:
                events = list(session.receive(await main.receive_some()))
            assert isinstance(events[0], Result)
            assert session.state is State.DONE

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(
                run_destination, DestinationOptions(address="tcp:127.0.0.1:0", backlog=1)
            )
            address = str(addresses[0])
            async with await trioqio.connect(address) as main:
                await script(main, address)


def test_cases_cover_every_state() -> None:
    states = {state for state, _, _ in itertools.chain(_source_cases(), _destination_cases())}
    assert states == set(State)


# -- rules found by nox -s mutation (docs/reliability.md, "Mutation testing") ----------------

ErrorData = tuple[str, str | None, str | None, str, str | None]


def _data(error: MigrationError) -> ErrorData:
    """Everything a MigrationError tells its reader (the CLI's report prints all of it)."""
    return (str(error), error.channel, error.field, error.kind, error.state)


def _refused(call: Callable[[], object]) -> ErrorData:
    with pytest.raises(MigrationError) as info:
        call()
    return _data(info.value)


def test_refusals_name_the_message_the_role_and_the_state() -> None:
    source = SourceSession()
    assert _refused(lambda: source.send(END)) == (
        "channel main: field 'type': cannot send END in the source's state IDLE: not allowed",
        "main",
        "type",
        "protocol",
        "IDLE",
    )
    source = _source_in(State.TRANSFERRING)
    assert _refused(lambda: source.receive(encode_message(CONFIG))) == (
        "channel main: field 'type': received CONFIG in the source's state TRANSFERRING: "
        "not allowed",
        "main",
        "type",
        "protocol",
        "TRANSFERRING",
    )


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda: _source_in(State.TRANSFERRING),
            "the destination closed the connection before its verdict",
        ),
        (
            lambda: _destination_in(State.AWAIT_CONFIG),
            "the source closed the main channel before its config",
        ),
        (
            lambda: _destination_in(State.TRANSFERRING),
            "incomplete migration: the source closed the main channel before END",
        ),
    ],
)
def test_an_early_end_says_who_closed_and_when(
    make: Callable[[], SourceSession | DestinationSession], reason: str
) -> None:
    session = make()
    state = session.state.name
    assert _refused(lambda: session.receive(b"")) == (
        f"channel main: closed in state {state}: {reason}",
        "main",
        None,
        "broken",
        state,
    )


def test_an_end_inside_a_message_is_broken_not_closed() -> None:
    session = _destination_in(State.TRANSFERRING)
    assert session.receive(encode_message(END)[:-1]) == []
    assert _refused(lambda: session.receive(b"")) == (
        "channel main: closed inside a message in state TRANSFERRING",
        "main",
        None,
        "broken",
        "TRANSFERRING",
    )


def test_malformed_main_channel_bytes_name_the_main_channel() -> None:
    bad_type = bytearray(encode_message(END))
    bad_type[0] = 99
    session = _destination_in(State.TRANSFERRING)
    assert _refused(lambda: session.receive(bytes(bad_type)))[1:4] == ("main", "type", "protocol")
    bad_status = bytearray(encode_message(RESULT))
    bad_status[8] = 99
    source = _source_in(State.ENDED)
    assert _refused(lambda: source.receive(bytes(bad_status)))[1:4] == (
        "main",
        "status",
        "protocol",
    )


def test_a_bad_hello_names_the_channel_it_came_on() -> None:
    session = DestinationSession()
    assert _refused(lambda: session.open_main(b"XEVM\x00\x00\x00\x03", label="accepted #4"))[
        1:4
    ] == ("accepted #4", "magic", "protocol")


def test_config_mismatches_name_the_field_and_the_fix() -> None:
    other = Checksum.SHA256 if CONFIG.checksum is not Checksum.SHA256 else Checksum.CRC32
    session = _destination_in(State.AWAIT_CONFIG)
    session.checksum = other
    assert _refused(lambda: session.receive(encode_message(CONFIG))) == (
        f"channel main: field 'checksum': the source uses {CONFIG.checksum.label}, "
        f"this destination was told to expect {other.label}",
        "main",
        "checksum",
        "mismatch",
        None,
    )
    session = _destination_in(State.AWAIT_CONFIG)
    session.channels = CONFIG.channels + 1
    assert _refused(lambda: session.receive(encode_message(CONFIG))) == (
        f"channel main: field 'channels': the source opens {CONFIG.channels} multifd "
        f"channel(s), this destination expects {CONFIG.channels + 1} "
        "(--channels must match on both ends)",
        "main",
        "channels",
        "mismatch",
        None,
    )


def test_multifd_refusals_carry_their_channel_field_and_state() -> None:
    init = MultiFDInit(uuid=UUID, id=0).pack()
    failed = _destination_in(State.TRANSFERRING)
    failed.receive(encode_message(ERROR))
    assert failed.config is not None  # the CONFIG was received, yet the session failed
    assert _refused(lambda: failed.join_multifd(init, label="accepted #2")) == (
        "channel accepted #2: a multifd channel in the destination's state FAILED: "
        "expected CONFIG first",
        "accepted #2",
        "type",
        "protocol",
        "FAILED",
    )
    session = _destination_in(State.TRANSFERRING)
    session.join_multifd(init, label="accepted #1")
    assert _refused(lambda: session.join_multifd(init, label="accepted #3")) == (
        "channel accepted #3: field 'id': received id 0 already set up",
        "accepted #3",
        "id",
        "protocol",
        None,
    )
    assert _refused(lambda: session.end_multifd(1)) == (
        "channel multifd 1: an END packet from a channel that has not joined or already ended",
        "multifd 1",
        "flags",
        "protocol",
        None,
    )
    session.receive(encode_message(END))
    assert _refused(lambda: session.send(RESULT)) == (
        "channel main: cannot send RESULT before every multifd channel ended",
        "main",
        "type",
        "protocol",
        "ENDED",
    )
