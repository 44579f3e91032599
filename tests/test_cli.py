"""The ``trioqio`` command: migrate, serve and task-demo, run as real subprocesses."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from trioqio._cli import main
from trioqio.abc import Channel
from trioqio.migration._report import format_bytes, parse_size
from trioqio.testing import CorruptingChannel


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trioqio", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_migrate_default_text_report_no_bar_when_piped() -> None:
    done = _run("migrate", "--size", "4MiB")
    assert done.returncode == 0, done.stderr
    assert "checksums match" in done.stdout
    assert "multifd 3:" in done.stdout
    assert "ETA" not in done.stderr  # stderr is a pipe: no progress bar


@pytest.mark.parametrize("algorithm", ["blake2b", "sha256", "crc32"])
def test_migrate_checksum_option(algorithm: str) -> None:
    done = _run("migrate", "--size", "2MiB", "--json", "--checksum", algorithm)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["checksum"] == algorithm
    assert report["verdict"] == "match"


def test_migrate_unknown_checksum_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["migrate", "--checksum", "md5"])
    assert raised.value.code == 2
    assert "--checksum" in capsys.readouterr().err


def test_migrate_json_and_trace() -> None:
    done = _run("migrate", "--size", "2MiB", "--channels", "4", "--json", "--trace")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["verdict"] == "match"
    assert report["bytes"] == 2 << 20
    assert [c["id"] for c in report["channels"]] == [0, 1, 2, 3]
    assert abs(sum(c["share"] for c in report["channels"]) - 1) < 0.01
    assert report["trace"]["completion_threads"] == [report["trace"]["trio_thread"]]
    workers = [line for line in done.stderr.splitlines() if "worker     running" in line]
    completions = [line for line in done.stderr.splitlines() if "completion running" in line]
    assert len(workers) == 5  # main + 4 multifd connects
    assert len(completions) == 5
    assert len({line.split("=")[1].split()[0] for line in completions}) == 1


def test_migrate_image_and_output(tmp_path: Path) -> None:
    image = tmp_path / "ram.img"
    image.write_bytes(bytes(range(256)) * 4000 + b"tail")
    output = tmp_path / "copy.img"
    done = _run("migrate", "--image", str(image), "--output", str(output), "--unix")
    assert done.returncode == 0, done.stderr
    assert output.read_bytes() == image.read_bytes()


def test_migrate_corruption_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    def corrupt(channel: Channel, name: str) -> Channel:
        return CorruptingChannel(channel, offset=1000)  # each channel's first page

    assert main(["migrate", "--size", "1MiB", "--no-progress"], wrap_channel=corrupt) == 1
    captured = capsys.readouterr()
    assert "CHECKSUM MISMATCH" in captured.out
    assert "trioqio migrate: mismatch" in captured.err


@pytest.mark.parametrize("flag", ["--test-corrupt-page", "--test-hold-after-pages"])
def test_migrate_has_no_test_flags(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["migrate", flag, "0"])
    assert raised.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_migrate_refused_connection_is_a_clean_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        done = _run("migrate", "--connect", f"tcp:127.0.0.1:{port}", "--size", "1MiB")
    assert done.returncode == 1
    assert "cannot connect" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_size_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["migrate", "--size", "lots"])
    assert info.value.code == 2
    assert "not a size" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "value"),
    [("512MiB", 512 << 20), ("1GiB", 1 << 30), ("4G", 4 * 10**9), ("100", 100), ("1.5KiB", 1536)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value
    assert format_bytes(1 << 30) == "1.00 GiB"


def test_task_demo_completions_in_one_thread() -> None:
    done = _run("task-demo")
    assert done.returncode == 0, done.stderr
    workers = {line.split("= ")[1] for line in done.stdout.splitlines() if "Worker" in line}
    callbacks = {line.split("= ")[1] for line in done.stdout.splitlines() if "Callback" in line}
    assert len(workers) == 4
    assert len(callbacks) == 1
    assert not workers & callbacks


def test_serve_echoes_on_several_addresses(tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "trioqio", "serve", "tcp:127.0.0.1:0", f"unix:{path}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("echo on "), line
        tcp = next(a for a in line.split()[2:] if a.startswith("tcp:"))
        port = int(tcp.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"hello tcp")
            assert client.recv(100) == b"hello tcp"
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(str(path))
            client.sendall(b"hello unix")
            assert client.recv(100) == b"hello unix"
    finally:
        process.terminate()
        process.communicate(timeout=10)


# -- serve: start-up errors are one line, client failures one log line each (issue 18) ------


def _serve_fails(*args: str, code: int = 1) -> str:
    """Run ``trioqio serve ARGS``; it must fail at once in one line; return that line."""
    done = _run("serve", *args, timeout=30)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert "echo on" not in done.stderr
    if code == 1:
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("trioqio serve: ")
    return done.stderr


def test_serve_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _serve_fails(f"tcp:127.0.0.1:{port}")
    assert f"cannot listen on tcp:127.0.0.1:{port}: Address already in use" in line


@pytest.mark.parametrize(
    ("address", "expect"),
    [
        ("tcp:127.0.0.1:bad", "port 'bad' is not a number"),
        ("nonsense", "address 'nonsense' has no ':'"),
        ("tcp:192.0.2.1:4444", "cannot listen on tcp:192.0.2.1:4444"),  # not ours (TEST-NET-1)
        ("tcp:no-such-host.invalid:4444", "address resolution failed for no-such-host.invalid"),
        ("fd:999", "fd:999"),
    ],
)
def test_serve_bad_address(address: str, expect: str) -> None:
    assert expect in _serve_fails(address)


def test_serve_unix_path_problems(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("keep me")
    assert "the path exists and is not a socket" in _serve_fails(f"unix:{regular}")
    assert regular.read_text() == "keep me"
    long = tmp_path / ("x" * (108 - len(str(tmp_path))))
    assert "longer than the system's limit of 107" in _serve_fails(f"unix:{long}")
    live = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(live))
        server.listen()
        assert "another process is listening on that socket" in _serve_fails(f"unix:{live}")
    assert live.exists()  # not taken over


def test_serve_removes_what_it_opened_when_a_later_address_fails(tmp_path: Path) -> None:
    first = tmp_path / "first.sock"
    _serve_fails(f"unix:{first}", "tcp:127.0.0.1:bad")
    assert list(tmp_path.iterdir()) == []


def test_serve_tls_dir_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    line = _serve_fails("--tls", "--tls-dir", str(missing), "tcp:127.0.0.1:0")
    assert f"--tls-dir '{missing}' does not exist" in line
    assert "lacks" not in line
    assert "--make-tls-dir" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _serve_fails("--tls", "--tls-dir", str(empty), "tcp:127.0.0.1:0")
    assert "lacks ca-cert.pem, server-cert.pem, server-key.pem" in line
    for name in ("ca-cert.pem", "server-cert.pem", "server-key.pem"):
        (empty / name).write_text("garbage\n")
    assert "not a PEM CA certificate" in _serve_fails("--tls", "--tls-dir", str(empty), "fd:0")
    usage = _serve_fails("--tls-dir", str(empty), "tcp:127.0.0.1:0", code=2)
    assert "--tls-dir needs --tls" in usage


def test_serve_websocket_without_wsproto() -> None:
    """The websocket channel frames with its own codec: no wsproto needed at run time."""
    hide = "import sys; sys.modules['wsproto'] = None\n"  # as if never installed
    code = hide + "from trioqio._cli import main; sys.exit(main(sys.argv[1:]))"
    server = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--websocket", "tcp:127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        assert line.startswith("echo on tcp:127.0.0.1:"), line
        port = int(line.split()[2].rsplit(":", 1)[1])
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Protocol: binary\r\nSec-WebSocket-Key: " + key.encode()
                + b"\r\n\r\n"
            )  # fmt: skip
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = client.recv(4096)
                assert chunk, reply
                reply += chunk
            head, _, rest = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 "), head
            # One masked binary frame "hi"; the echo comes back as an unmasked frame.
            mask = b"\x01\x02\x03\x04"
            client.sendall(b"\x82\x82" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hi")))
            echo = rest
            while len(echo) < 4:
                chunk = client.recv(4096)
                assert chunk, echo
                echo += chunk
            assert echo[:4] == b"\x82\x02hi"
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    assert server.returncode == 143


class _Serve:
    """``trioqio serve ARGS tcp:127.0.0.1:0``, its port, and its log lines as they come."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trioqio", "serve", *args, "tcp:127.0.0.1:0"],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        self.lines: list[str] = []
        try:
            while not (line := self.next_line()).startswith("echo on "):
                assert line, self.lines  # the process ended before serving
        except BaseException:
            self.stop()
            raise
        self.port = int(line.split()[-1].rsplit(":", 1)[1])

    def next_line(self) -> str:
        assert self.process.stderr is not None
        line = self.process.stderr.readline()  # the process ends within the test's timeout
        self.lines.append(line)
        return line

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        assert self.process.stderr is not None
        with self.process.stderr:  # not communicate(): it would skip what readline buffered
            rest = self.process.stderr.read()
        self.process.wait(timeout=30)
        return "".join(self.lines) + rest


def _reset(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(data)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_serve_client_failures_are_one_line_each() -> None:
    serve = _Serve("--websocket")
    try:
        _reset(serve.port, b"GET / HTTP/1.1\r\n")  # reset during the handshake
        first = serve.next_line()
        with socket.create_connection(("127.0.0.1", serve.port), timeout=10) as client:
            client.sendall(b"hello\r\n\r\n")  # no HTTP request: refused
            assert client.recv(100).startswith(b"HTTP/1.1 400 Bad Request")
        second = serve.next_line()
        text_frame = _websocket_client(serve.port, text=True)
        third = serve.next_line()
        assert _websocket_client(serve.port, text=False) == b"echo me"
    finally:
        log = serve.stop()
    assert "Traceback" not in log
    assert first.startswith("trioqio serve: client 1"), first  # (its address, if still known)
    assert "reset" in first.lower() or "closed" in first.lower(), first
    assert second.startswith("trioqio serve: client 2 (tcp:127.0.0.1:"), second
    assert "handshake refused with 400" in second, second
    assert text_frame == 1003
    assert "unsupported opcode 0x1" in third, third
    assert "1003" in third, third
    assert serve.process.returncode == 130
    assert log.splitlines()[-1] == "trioqio serve: interrupted by SIGINT"
    assert len(log.splitlines()) == 5, log  # echo on, three failures, interrupted


def test_serve_verbose_logs_tracebacks_and_connections() -> None:
    serve = _Serve("--websocket", "--verbose")
    try:
        assert _websocket_client(serve.port, text=True) == 1003
        while "unsupported opcode" not in serve.next_line():
            pass
    finally:
        log = serve.stop()
    assert "Traceback" in log  # at DEBUG, the failure's traceback follows its line
    assert "connected" in log


def test_serve_tls_refuses_plain_text_in_one_line(tmp_path: Path) -> None:
    serve = _Serve("--tls")
    try:
        with socket.create_connection(("127.0.0.1", serve.port), timeout=10) as client:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):
                client.recv(100)
        while "client 1" not in (line := serve.next_line()):
            pass
    finally:
        log = serve.stop()
    assert "TLS handshake failed" in line, line
    assert "Traceback" not in log


def _websocket_client(port: int, *, text: bool) -> bytes | int:
    """One websocket round trip with wsproto: the echoed bytes, or the close code."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Request,
        TextMessage,
    )

    ws = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(ws.send(Request(host="localhost", target="/")))
        received = b""
        while True:
            data = client.recv(65536)
            ws.receive_data(data or None)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    message: TextMessage | BytesMessage = (
                        TextMessage("echo me") if text else BytesMessage(b"echo me")
                    )
                    client.sendall(ws.send(message))
                elif isinstance(event, BytesMessage):
                    received += bytes(event.data)
                    if received == b"echo me":
                        return received
                elif isinstance(event, CloseConnection):
                    return event.code
            if not data:
                raise AssertionError("closed without a close frame")
