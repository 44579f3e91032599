"""Trace points declared once: ``trioqio.trace.EVENTS`` against the code and a live run.

Three checks, none depending on test order or on ``-k``:

* the declaration follows QEMU's ``io/trace-events`` (names and order);
* every ``emit(...)`` call in ``trioqio/**/*.py`` (found by walking the AST, f-string names
  expanded over the classes that set ``_TRACE``) names a declared event and passes exactly
  its declared fields, and every declared event has a call site;
* every declared event is emitted by a test here: each ``test_drive_*`` runs one path with
  tracing on and asserts the events :data:`DRIVEN` lists for it; the union of those lists
  must be the whole declaration (``test_every_declared_event_is_driven``).

The drivers subscribe only inside their own test, so the rest of the suite keeps running
with tracing off (the code paths users get by default).
"""

from __future__ import annotations

import ast
import errno
import os
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trioqio
from trioqio import trace
from trioqio.testing import MemoryListener

PACKAGE = Path(trioqio.__file__).resolve().parent

# QEMU's io/trace-events, names only, in the file's order (QEMU 10.x).
QEMU_EVENTS: tuple[str, ...] = tuple(
    """
qio_task_new qio_task_complete qio_task_thread_start qio_task_thread_run
qio_task_thread_exit qio_task_thread_result qio_task_thread_source_attach
qio_task_thread_source_cancel
qio_channel_null_new
qio_channel_socket_new qio_channel_socket_new_fd qio_channel_socket_connect_sync
qio_channel_socket_connect_async qio_channel_socket_connect_fail
qio_channel_socket_connect_complete qio_channel_socket_listen_sync
qio_channel_socket_listen_async qio_channel_socket_listen_fail
qio_channel_socket_listen_complete qio_channel_socket_dgram_sync
qio_channel_socket_dgram_async qio_channel_socket_dgram_fail
qio_channel_socket_dgram_complete qio_channel_socket_accept qio_channel_socket_accept_fail
qio_channel_socket_accept_complete
qio_channel_file_new_fd qio_channel_file_new_path
qio_channel_tls_new_client qio_channel_tls_new_server qio_channel_tls_handshake_start
qio_channel_tls_handshake_pending qio_channel_tls_handshake_fail
qio_channel_tls_handshake_complete qio_channel_tls_handshake_cancel qio_channel_tls_bye_start
qio_channel_tls_bye_pending qio_channel_tls_bye_fail qio_channel_tls_bye_complete
qio_channel_tls_bye_cancel qio_channel_tls_credentials_allow qio_channel_tls_credentials_deny
qio_channel_websock_new_server qio_channel_websock_handshake_start
qio_channel_websock_handshake_pending qio_channel_websock_handshake_reply
qio_channel_websock_handshake_fail qio_channel_websock_handshake_complete
qio_channel_websock_http_greeting qio_channel_websock_http_request
qio_channel_websock_header_partial_decode qio_channel_websock_header_full_decode
qio_channel_websock_payload_decode qio_channel_websock_encode qio_channel_websock_close
qio_channel_command_new_pid qio_channel_command_new_spawn qio_channel_command_abort
qio_channel_command_wait
qio_net_listener_watch qio_net_listener_unwatch qio_net_listener_callback
""".split()  # noqa: SIM905  # laid out like the QEMU file
)
# trioqio's own events (no QEMU counterpart), each after the QEMU event it follows.
OWN_EVENTS = {"qio_net_listener_accept_backoff": "qio_net_listener_callback"}
# Events whose call sites each pass some of the declared fields, not all (the declaration
# says which): the sent and the received close frame carry different codes.
PARTIAL_FIELDS = {"qio_channel_websock_close"}


# -- the declaration --------------------------------------------------------------------


def test_events_follow_qemu_order() -> None:
    names = list(trace.EVENTS)
    assert len(names) == len(set(names))
    qemu = [name for name in names if name not in OWN_EVENTS]
    assert set(qemu) <= set(QEMU_EVENTS), set(qemu) - set(QEMU_EVENTS)
    assert qemu == sorted(qemu, key=QEMU_EVENTS.index)
    for own, after in OWN_EVENTS.items():
        assert names.index(own) == names.index(after) + 1


def test_events_is_read_only_and_typed() -> None:
    with pytest.raises(TypeError):
        trace.EVENTS["qio_made_up"] = ()  # type: ignore[index]  # read-only on purpose
    for name, fields in trace.EVENTS.items():
        assert isinstance(fields, tuple), name
        assert len(fields) == len(set(fields)), name
        assert all(field.isidentifier() for field in fields), name


def test_emit_refuses_undeclared_names_and_fields() -> None:
    assert not trace.enabled()
    trace.emit("qio_made_up")  # nobody listens: emit returns before looking (free when off)
    seen: list[trace.TraceEvent] = []
    with trace.subscribed(seen.append):
        with pytest.raises(ValueError, match="'qio_made_up' is not declared"):
            trace.emit("qio_made_up", task="t")
        with pytest.raises(ValueError, match=r"no field bogus \(.*declares task, source\)"):
            trace.emit("qio_task_new", task="t", bogus=1)
        trace.emit("qio_task_new", task="t", source=None)
        trace.emit("qio_task_new", task="t")  # a declared field may be left out
    assert [(e.name, dict(e.fields)) for e in seen] == [
        ("qio_task_new", {"task": "t", "source": None}),
        ("qio_task_new", {"task": "t"}),
    ]


# -- the call sites ---------------------------------------------------------------------


def _trace_families() -> list[dict[str, str]]:
    """The string class attributes of every class in the package that sets ``_TRACE``."""
    families: list[dict[str, str]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            values: dict[str, str] = {}
            for item in node.body:
                target, value = None, None
                if isinstance(item, ast.Assign) and len(item.targets) == 1:
                    target, value = item.targets[0], item.value
                elif isinstance(item, ast.AnnAssign):
                    target, value = item.target, item.value
                if (
                    isinstance(target, ast.Name)
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                ):
                    values[target.id] = value.value
            if "_TRACE" in values:
                families.append(values)
    return families


def _resolve(node: ast.expr, family: dict[str, str] | None, where: str) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if (
        family is not None
        and isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in {"self", "cls"}
        and node.attr in family
    ):
        return family[node.attr]
    if isinstance(node, ast.JoinedStr) and family is not None:
        parts: list[str] = []
        for value in node.values:
            inner = value.value if isinstance(value, ast.FormattedValue) else value
            parts.append(_resolve(inner, family, where))
        return "".join(parts)
    raise AssertionError(
        f"{where}: trace event name or field {ast.unparse(node)!r} is neither a literal nor "
        "a string class attribute of a class setting _TRACE; the test cannot check it"
    )


def _emit_calls() -> Iterator[tuple[str, ast.Call]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in {"_trace.py", "trace.py"}:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name == "emit":
                    yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", node


def _expand(where: str, call: ast.Call) -> list[tuple[str, set[str]]]:
    """Every (event name, field names) that one emit call can produce."""
    assert len(call.args) == 1, f"{where}: emit takes the name, then keyword fields"
    dynamic = isinstance(call.args[0], ast.JoinedStr)
    dynamic = dynamic or any(keyword.arg is None for keyword in call.keywords)
    out: list[tuple[str, set[str]]] = []
    for family in _trace_families() if dynamic else [None]:
        name = _resolve(call.args[0], family, where)
        fields: set[str] = set()
        for keyword in call.keywords:
            if keyword.arg is not None:
                fields.add(keyword.arg)
                continue
            assert isinstance(keyword.value, ast.Dict), f"{where}: ** of a dict literal only"
            for key in keyword.value.keys:
                assert key is not None, f"{where}: no ** inside the ** dict"
                fields.add(_resolve(key, family, where))
        out.append((name, fields))
    return out


def test_every_emit_call_is_declared_with_its_fields() -> None:
    emitted: set[str] = set()
    problems: list[str] = []
    calls = list(_emit_calls())
    assert len(calls) > 40  # the walk found the package's trace points
    for where, call in calls:
        for name, fields in _expand(where, call):
            emitted.add(name)
            declared = trace.EVENTS.get(name)
            if declared is None:
                problems.append(f"{where}: {name} is not declared in trioqio.trace.EVENTS")
            elif name in PARTIAL_FIELDS:
                if not fields <= set(declared):
                    problems.append(f"{where}: {name} passes {sorted(fields)}, not {declared}")
            elif fields != set(declared):
                problems.append(f"{where}: {name} passes {sorted(fields)}, declared {declared}")
    assert not problems, "\n".join(problems)
    assert set(trace.EVENTS) - emitted == set(), "declared, but no call site emits it"


def test_the_walk_sees_a_wrong_call() -> None:
    # The checker itself: an undeclared name, a wrong field and a non-literal name fail.
    tree = ast.parse(
        "emit('qio_made_up', ioc=1)\nemit('qio_task_new', task=1, extra=2)\nemit(name)\n"
    )
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    expanded = [_expand("x", call) for call in calls[:2]]
    assert expanded == [[("qio_made_up", {"ioc"})], [("qio_task_new", {"task", "extra"})]]
    with pytest.raises(AssertionError, match="neither a literal"):
        _expand("x", calls[2])


# -- every declared event, emitted --------------------------------------------------------

# Each driver below runs one path with tracing on and asserts these events were emitted.
DRIVEN: dict[str, set[str]] = {
    "test_drive_task_in_a_thread": {
        "qio_task_new",
        "qio_task_thread_start",
        "qio_task_thread_run",
        "qio_task_thread_exit",
        "qio_task_thread_result",
        "qio_task_complete",
    },
    "test_drive_listener_and_connect": {
        "qio_channel_socket_new",
        "qio_channel_socket_listen_sync",
        "qio_channel_socket_listen_complete",
        "qio_channel_socket_connect_sync",
        "qio_channel_socket_connect_complete",
        "qio_channel_socket_accept",
        "qio_channel_socket_accept_complete",
        "qio_net_listener_watch",
        "qio_net_listener_callback",
        "qio_net_listener_unwatch",
    },
    "test_drive_socket_failures": {
        "qio_channel_socket_new_fd",
        "qio_channel_socket_connect_async",
        "qio_channel_socket_connect_fail",
        "qio_channel_socket_listen_fail",
        "qio_channel_socket_accept_fail",
    },
    "test_drive_listener_backoff": {"qio_net_listener_accept_backoff"},
    "test_drive_file": {"qio_channel_file_new_fd", "qio_channel_file_new_path"},
    "test_drive_command": {
        "qio_channel_command_new_spawn",
        "qio_channel_command_new_pid",
        "qio_channel_command_abort",
        "qio_channel_command_wait",
    },
    "test_drive_tls": {
        "qio_channel_tls_new_client",
        "qio_channel_tls_new_server",
        "qio_channel_tls_handshake_start",
        "qio_channel_tls_handshake_complete",
        "qio_channel_tls_credentials_allow",
        "qio_channel_tls_bye_start",
        "qio_channel_tls_bye_complete",
        "qio_channel_tls_bye_fail",
    },
    "test_drive_tls_refused": {
        "qio_channel_tls_credentials_deny",
        "qio_channel_tls_handshake_fail",
    },
    "test_drive_websocket": {
        "qio_channel_websock_new_server",
        "qio_channel_websock_handshake_start",
        "qio_channel_websock_handshake_pending",
        "qio_channel_websock_handshake_reply",
        "qio_channel_websock_handshake_complete",
        "qio_channel_websock_encode",
        "qio_channel_websock_close",
    },
    "test_drive_websocket_refused": {
        "qio_channel_websock_handshake_reply",
        "qio_channel_websock_handshake_fail",
    },
}


def test_every_declared_event_is_driven() -> None:
    drivers = {name for name in globals() if name.startswith("test_drive_")}
    assert drivers == set(DRIVEN)
    driven = {name for names in DRIVEN.values() for name in names}
    assert set(trace.EVENTS) - driven == set(), "declared, but no driver emits it"
    assert driven - set(trace.EVENTS) == set()


@pytest.fixture
def traced(request: pytest.FixtureRequest) -> Iterator[list[trace.TraceEvent]]:
    """Events emitted during the test; afterwards, the test's DRIVEN entry must be among them."""
    seen: list[trace.TraceEvent] = []
    with trace.subscribed(seen.append):
        yield seen
    names = {event.name for event in seen}
    missing = DRIVEN[request.node.originalname] - names
    assert not missing, f"not emitted: {sorted(missing)}"
    for event in seen:
        assert set(event.fields) <= set(trace.EVENTS[event.name]), event


def _fields(events: list[trace.TraceEvent], name: str) -> list[dict[str, Any]]:
    return [dict(e.fields) for e in events if e.name == name]


async def test_drive_task_in_a_thread(traced: list[trace.TraceEvent]) -> None:
    async with trio.open_nursery() as nursery:
        task: trioqio.Task[int] = trioqio.Task(name="sum")
        task.run_in_thread(nursery, sum, [1, 2])
    assert await task.wait() == 3
    assert _fields(traced, "qio_task_complete") == [{"task": "Task 'sum'", "error": None}]


async def _echo_close(channel: trioqio.SocketChannel) -> None:
    await channel.send_all(b"hi")
    await channel.aclose()


async def test_drive_listener_and_connect(traced: list[trace.TraceEvent]) -> None:
    async with trioqio.NetListener(name="traced") as listener:
        await listener.open("tcp:127.0.0.1:0", backlog=2)
        listener.set_client_func(_echo_close)
        async with await trioqio.connect(listener.addresses[0]) as client:
            assert await client.receive_exactly(2) == b"hi"
    assert _fields(traced, "qio_channel_socket_listen_sync")[0]["num"] == 2


async def test_drive_socket_failures(
    traced: list[trace.TraceEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A port nobody listens on: bind one, note it, close it.
    probe = trio.socket.socket()
    await probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(OSError):
        await trioqio.connect(f"tcp:127.0.0.1:{port}")
    async with trio.open_nursery() as nursery:
        task = trioqio.connect_task(nursery, f"tcp:127.0.0.1:{port}", lambda _task: None)
    with pytest.raises(OSError):
        await task.wait()
    failures = [errno.ECONNABORTED]
    async with trioqio.NetListener() as listener:
        await listener.open("tcp:127.0.0.1:0")
        async with trioqio.NetListener() as second:
            with pytest.raises(OSError):  # the port is taken
                await second.open(listener.addresses[0])
        raw = trio.socket.socket()
        await raw.bind(("127.0.0.1", 0))
        raw.listen(1)
        async with trioqio.SocketChannel.from_fd(os.dup(raw.fileno())) as adopted:
            raw.close()
            accept = adopted.socket.accept

            async def flaky() -> Any:
                # A kernel gives ECONNABORTED only when a client resets mid-accept, which
                # a test cannot time; this stands in for it once, then accepts for real.
                if failures:
                    await trio.lowlevel.checkpoint()
                    raise OSError(failures.pop(), "aborted")
                return await accept()

            monkeypatch.setattr(adopted.socket, "accept", flaky)
            async with (
                await trioqio.connect(adopted.local_address),
                await adopted.accept(),
            ):
                pass
    assert not failures


async def test_drive_listener_backoff(
    traced: list[trace.TraceEvent], autojump_clock: trio.testing.MockClock
) -> None:
    memory = MemoryListener()
    memory.fail_next(OSError(errno.EMFILE, "Too many open files"))
    served = trio.Event()

    async def handler(stream: trio.abc.Stream) -> None:
        await stream.aclose()
        served.set()

    async with trioqio.NetListener(name="fds") as listener:
        listener.add_listener(memory)
        listener.set_client_func(handler)
        client = await memory.connect()
        await served.wait()
        await client.aclose()
    assert _fields(traced, "qio_net_listener_accept_backoff") == [
        {"listener": "fds", "errno": errno.EMFILE}
    ]


async def test_drive_file(traced: list[trace.TraceEvent], tmp_path: Path) -> None:
    async with await trioqio.open_file(tmp_path / "f", os.O_WRONLY | os.O_CREAT) as channel:
        await channel.send_all(b"x")
    assert stat.S_ISREG(os.stat(tmp_path / "f").st_mode)


async def test_drive_command(traced: list[trace.TraceEvent]) -> None:
    channel = await trioqio.open_command(["sleep", "1000"], "r", close_timeout=0)
    await channel.aclose()
    assert channel.returncode is not None


def _tls_contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("qemu.org").configure_cert(server)
    server.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    ca.issue_cert("client.qemu.org", common_name="qemu").configure_cert(client)
    return server, client


async def _tls_pair(acl: list[str]) -> tuple[trioqio.TLSChannel, trioqio.TLSChannel]:
    server_ctx, client_ctx = _tls_contexts(trustme.CA())
    a, b = trio.socket.socketpair()
    client = trioqio.TLSChannel.client(trioqio.SocketChannel(a), client_ctx, hostname="qemu.org")
    server = trioqio.TLSChannel.server(trioqio.SocketChannel(b), server_ctx, acl=acl)
    return client, server


async def _handshakes(client: trioqio.TLSChannel, server: trioqio.TLSChannel) -> list[str]:
    failed: list[str] = []

    async def run(tls: trioqio.TLSChannel, side: str) -> None:
        try:
            await tls.handshake()
        except trioqio.HandshakeError:
            failed.append(side)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, client, "client")
            nursery.start_soon(run, server, "server")
    return failed


async def test_drive_tls(traced: list[trace.TraceEvent]) -> None:
    client, server = await _tls_pair(acl=["*CN=qemu"])
    try:
        assert await _handshakes(client, server) == []
        await client.bye()
        await client.master.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await server.bye()  # the peer is gone: close_notify cannot be sent
    finally:
        await client.aclose()
        await server.aclose()
    assert _fields(traced, "qio_channel_tls_credentials_allow")[0]["dn"].endswith("CN=qemu")


async def test_drive_tls_refused(traced: list[trace.TraceEvent]) -> None:
    client, server = await _tls_pair(acl=["CN=nobody"])
    try:
        assert "server" in await _handshakes(client, server)
    finally:
        await client.aclose()
        await server.aclose()


WEBSOCKET_REQUEST = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


async def _reply(client: trioqio.SocketChannel) -> bytes:
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = await client.receive_some(1024)
        assert chunk, reply
        reply += chunk
    return reply


async def test_drive_websocket(traced: list[trace.TraceEvent]) -> None:
    a, b = trio.socket.socketpair()
    async with trioqio.SocketChannel(a) as client:
        ws = trioqio.WebsockChannel.server(trioqio.SocketChannel(b))
        async with ws:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ws.handshake)
                await client.send_all(WEBSOCKET_REQUEST)  # one line short: pending
                await trio.testing.wait_all_tasks_blocked()
                await client.send_all(b"\r\n")
                assert (await _reply(client)).startswith(b"HTTP/1.1 101 ")
            await ws.send_all(b"x")
            await client.send_all(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # masked close 1000
            assert await ws.receive_some() == b""
    closes = _fields(traced, "qio_channel_websock_close")
    assert {"ioc": ws, "peer_code": 1000} in closes
    assert any("code" in fields for fields in closes)  # aclose answered with its own


async def test_drive_websocket_refused(traced: list[trace.TraceEvent]) -> None:
    a, b = trio.socket.socketpair()
    async with trioqio.SocketChannel(a) as client:
        ws = trioqio.WebsockChannel.server(trioqio.SocketChannel(b))
        async with trio.open_nursery() as nursery:

            async def refused() -> None:
                with pytest.raises(trioqio.HandshakeError):
                    await ws.handshake()

            nursery.start_soon(refused)
            await client.send_all(b"POST / HTTP/1.1\r\nx: y\r\n\r\n")
            assert not (await _reply(client)).startswith(b"HTTP/1.1 101 ")
    await ws.aclose()
    assert _fields(traced, "qio_channel_websock_handshake_reply")[0]["status"] != 101


# -- the docs' event table ----------------------------------------------------------------


def test_docs_event_table_is_written_from_the_declaration() -> None:
    # docs/conf.py writes docs/_generated/trace-events.md from EVENTS at every build, and
    # docs/api/trace.md includes it; run that one function (importing conf.py would build).
    docs = Path(__file__).resolve().parents[1] / "docs"  # the checkout, not the install
    assert "_generated/trace-events.md" in (docs / "api" / "trace.md").read_text()
    source = (docs / "conf.py").read_text()
    (function,) = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef) and node.name == "trace_events_table"
    ]
    namespace: dict[str, Any] = {"trioqio": trioqio}
    exec(compile(ast.Module([function], []), "docs/conf.py", "exec"), namespace)
    table: str = namespace["trace_events_table"]()
    rows = [line.split("|")[1].strip(" `") for line in table.splitlines() if "| `qio_" in line]
    emitted = rows[: len(trace.EVENTS)]
    assert emitted == list(trace.EVENTS)
    for name, fields in trace.EVENTS.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
        assert row.split("|")[2].strip() == (", ".join(f"`{f}`" for f in fields) or "none")
    assert set(rows[len(trace.EVENTS) :]).isdisjoint(trace.EVENTS)  # the not-emitted list
