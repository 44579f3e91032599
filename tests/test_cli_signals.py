"""The ``trioqio`` command under SIGINT and SIGTERM, and its progress bar on a terminal.

Real processes: each run gets its own empty ``TMPDIR`` so "nothing left behind" is checked
by listing it. Waits are for observable lines (``listening on``, ``holding multifd``,
``echo on``) with deadlines, never a sleep.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import signal
import socket
import ssl
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import trio

from trioqio._cli import _Command
from trioqio.migration._report import Progress

MIB = 1 << 20
SIGNALS = [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]
IDS = ["SIGINT", "SIGTERM"]

#: ``python -c CHILD AFTER ARGS...``: ``trioqio ARGS`` with every multifd channel held
#: (trioqio.testing.HoldingChannel) after AFTER bytes, printing "holding NAME" then.
CHILD = """
import sys
from trioqio._cli import main
from trioqio.testing import HoldingChannel
def wrap(channel, name):
    def held():
        print(f"holding {name}", file=sys.stderr, flush=True)
    return HoldingChannel(channel, after_bytes=int(sys.argv[1]), on_hold=held)
sys.exit(main(sys.argv[2:], wrap_channel=wrap))
"""


class _Lines:
    """A process's text stream, read by a thread, waited on with a deadline."""

    def __init__(self, pipe: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._ended = False
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe: IO[str]) -> None:
        with pipe:
            for line in pipe:
                self._queue.put(line)
        self._queue.put(None)

    def until(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError(f"{text!r} not seen within {timeout} s: {self.seen}") from None
            if line is None:
                self._ended = True
                raise AssertionError(f"{text!r} never appeared: {self.seen}")
            self.seen.append(line)
            if text in line:
                return line

    def rest(self) -> str:
        """Everything, once the process has exited (the pipe's end ends the thread)."""
        while not self._ended:
            line = self._queue.get(timeout=30)
            if line is None:
                self._ended = True
            else:
                self.seen.append(line)
        self._thread.join(timeout=30)
        return "".join(self.seen)


class _Run:
    """One ``trioqio`` process with its stdout and stderr read by threads."""

    def __init__(self, argv: list[str], tmp: Path) -> None:
        env = {**os.environ, "TMPDIR": str(tmp)}
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.out = _Lines(self.process.stdout)
        self.err = _Lines(self.process.stderr)

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        status = self.process.wait(timeout=timeout)
        return status, self.out.rest(), self.err.rest()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.finish()


@pytest.fixture
def runs() -> Iterator[list[_Run]]:
    started: list[_Run] = []
    yield started
    for run in started:
        run.kill()


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    """The processes' TMPDIR: empty, and it must be empty again when they are gone."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    return directory


def _trioqio(runs: list[_Run], tmp: Path, *args: str) -> _Run:
    run = _Run([sys.executable, "-m", "trioqio", *args], tmp)
    runs.append(run)
    return run


def _held(runs: list[_Run], tmp: Path, *args: str, after: int = MIB) -> _Run:
    run = _Run([sys.executable, "-c", CHILD, str(after), *args], tmp)
    runs.append(run)
    return run


def _interrupted(err: str, name: str, command: str = "migrate") -> None:
    """The run ended with one "interrupted" line, last, and no traceback."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert lines[-1] == f"trioqio {command}: interrupted by {name}", err
    assert sum("interrupted" in line for line in lines) == 1, err


# -- migrate -------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "status", "name"), SIGNALS, ids=IDS)
def test_idle_destination(runs: list[_Run], tmp: Path, sig: int, status: int, name: str) -> None:
    path = tmp / "m.sock"
    destination = _trioqio(runs, tmp, "migrate", "--listen", f"unix:{path}", "--json")
    destination.err.until("listening on")
    assert path.exists()
    destination.process.send_signal(sig)
    code, out, err = destination.finish()
    assert code == status
    _interrupted(err, name)
    report = json.loads(out)
    assert (report["verdict"], report["error_kind"]) == ("interrupted", "interrupted")
    assert report["error"] == f"interrupted by {name}"
    assert report["bytes"] == 0
    assert list(tmp.iterdir()) == []  # the socket path too


@pytest.mark.parametrize(("sig", "status", "name"), SIGNALS, ids=IDS)
def test_source_mid_transfer(runs: list[_Run], tmp: Path, sig: int, status: int, name: str) -> None:
    destination = _trioqio(runs, tmp, "migrate", "--no-progress", "--listen", "tcp:127.0.0.1:0")
    address = destination.err.until("listening on").split()[2]
    source = _held(runs, tmp, "migrate", "--connect", address, "--size", "64MiB", "--json")
    source.err.until("holding multifd")
    source.process.send_signal(sig)
    code, out, err = source.finish()
    assert code == status
    _interrupted(err, name)
    report = json.loads(out)
    assert report["verdict"] == "interrupted"
    assert report["size"] == 64 * MIB
    assert report["bytes"] > 0  # what moved before the signal
    assert len(report["channels"]) == 4
    # The destination sees its source go away: one line, status 1.
    dest_code, dest_out, dest_err = destination.finish()
    assert dest_code == 1
    assert "INCOMPLETE" in dest_out
    assert "Traceback" not in dest_err
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize(("sig", "status", "name"), SIGNALS, ids=IDS)
def test_destination_mid_transfer(
    runs: list[_Run], tmp: Path, sig: int, status: int, name: str
) -> None:
    path = tmp / "m.sock"
    destination = _held(runs, tmp, "migrate", "--listen", f"unix:{path}")
    address = destination.err.until("listening on").split()[2]
    source = _trioqio(runs, tmp, "migrate", "--connect", address, "--size", "64MiB")
    destination.err.until("holding multifd")
    destination.process.send_signal(sig)
    code, out, err = destination.finish()
    assert code == status
    _interrupted(err, name)
    assert "verdict: INTERRUPTED" in out
    assert "of 64.00 MiB" in out  # the announced size, up to the interruption
    assert f"error: interrupted by {name}" in out
    source_code, source_out, source_err = source.finish()
    assert source_code == 1
    assert "INCOMPLETE" in source_out
    assert "Traceback" not in source_err
    assert len(source_err.strip().splitlines()) == 1, source_err
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize(("sig", "status", "name"), SIGNALS, ids=IDS)
def test_in_process_tls_unix(runs: list[_Run], tmp: Path, sig: int, status: int, name: str) -> None:
    """Both ends in one process: the throwaway CA (private keys) and the socket directory go."""
    both = _held(runs, tmp, "migrate", "--tls", "--unix", "--size", "64MiB", "--json")
    both.err.until("holding multifd")
    assert len(list(tmp.iterdir())) == 2  # trioqio-migrate-* (the CA), trioqio-* (the socket)
    both.process.send_signal(sig)
    code, out, err = both.finish()
    assert code == status
    _interrupted(err, name)
    report = json.loads(out)
    assert (report["role"], report["verdict"], report["tls"]) == ("migrate", "interrupted", True)
    assert report["bytes"] > 0
    assert list(tmp.iterdir()) == []


def test_make_tls_dir_failure_is_one_line(tmp: Path) -> None:
    blocker = tmp / "file"
    blocker.write_text("not a directory")
    done = subprocess.run(
        [sys.executable, "-m", "trioqio", "migrate", "--make-tls-dir", str(blocker / "creds")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith(f"trioqio migrate: --make-tls-dir {blocker / 'creds'}: ")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert [path.name for path in tmp.iterdir()] == ["file"]


# -- serve ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "status", "name"), SIGNALS, ids=IDS)
def test_serve_with_clients(runs: list[_Run], tmp: Path, sig: int, status: int, name: str) -> None:
    path = tmp / "echo.sock"
    serve = _trioqio(runs, tmp, "serve", "--tls", f"unix:{path}", "tcp:127.0.0.1:0")
    ca = serve.err.until("throwaway CA").split()[3]
    line = serve.err.until("echo on")
    port = int(line.split()[-1].rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=ca)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as talking,
        socket.socket(socket.AF_UNIX) as silent,
    ):
        talking.sendall(b"hello")
        assert talking.recv(100) == b"hello"
        silent.settimeout(10)
        silent.connect(str(path))  # connected, handshake never started
        serve.process.send_signal(sig)
        code, _, err = serve.finish()
        with contextlib.suppress(OSError):  # closed (or reset) by the server, not left open
            assert talking.recv(100) == b""
        assert silent.recv(100) == b""
    assert code == status
    _interrupted(err, name, "serve")
    assert list(tmp.iterdir()) == []  # the socket path and the throwaway CA


# -- task-demo -----------------------------------------------------------------------------


def test_task_demo_interrupted_while_workers_wait(runs: list[_Run], tmp: Path) -> None:
    """41 workers: the 41st never gets a thread, so the others wait for it (5 s at most)."""
    demo = _trioqio(runs, tmp, "task-demo", "--workers", "41")
    demo.out.until("running in the thread id")  # a worker is waiting at the barrier
    signalled = time.monotonic()
    demo.process.send_signal(signal.SIGINT)
    code, out, err = demo.finish()
    assert code == 130
    assert time.monotonic() - signalled < 4  # released at once, not at the barrier's timeout
    _interrupted(err, "SIGINT", "task-demo")
    assert "worker thread(s)" not in out


# -- the one owner of signals and statuses, in process ---------------------------------------


def test_signal_cancels_the_body_and_gives_its_status(capsys: pytest.CaptureFixture[str]) -> None:
    cleaned: list[bool] = []
    reasons: list[str] = []

    async def body() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await trio.sleep_forever()
        finally:
            cleaned.append(True)
        return 0  # pragma: no cover - cancelled

    before = signal.getsignal(signal.SIGTERM)
    assert _Command("demo").run(body, reasons.append) == 143
    assert cleaned == [True]
    assert reasons == ["interrupted by SIGTERM"]
    assert capsys.readouterr().err == "trioqio demo: interrupted by SIGTERM\n"
    assert signal.getsignal(signal.SIGTERM) is before  # restored


def test_a_signal_before_the_receiver_stops_the_command_from_starting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started: list[bool] = []

    async def body() -> int:
        started.append(True)  # pragma: no cover - must not run
        return 0  # pragma: no cover

    command = _Command("demo")
    command._record(signal.SIGINT, None)
    assert command.run(body) == 130
    assert started == []
    assert capsys.readouterr().err == "trioqio demo: interrupted by SIGINT\n"


def test_expected_errors_in_groups_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    async def body() -> int:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise OSError(98, "cannot listen on tcp:127.0.0.1:1: Address already in use")
        return 0  # pragma: no cover

    assert _Command("demo").run(body) == 1
    err = capsys.readouterr().err
    assert err == "trioqio demo: cannot listen on tcp:127.0.0.1:1: Address already in use\n"


def test_a_bug_keeps_its_traceback() -> None:
    async def body() -> int:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise RuntimeError("a bug")
        return 0  # pragma: no cover

    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="a bug"), flatten_subgroups=True):
        _Command("demo").run(body)


def test_a_bug_in_a_real_process_prints_its_traceback(tmp: Path) -> None:
    code = """
import sys
from trioqio._cli import main
def wrap(channel, name):
    raise RuntimeError("a genuine bug")
sys.exit(main(["migrate", "--size", "1MiB"], wrap_channel=wrap))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={**os.environ, "TMPDIR": str(tmp)},
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert "RuntimeError: a genuine bug" in done.stderr
    assert list(tmp.iterdir()) == []


# -- the progress bar on a terminal ----------------------------------------------------------


@contextlib.contextmanager
def _terminal(columns: int) -> Iterator[tuple[int, int]]:
    """A pseudo-terminal ``columns`` wide: (controller, the child's end)."""
    controller, child = os.openpty()
    try:
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        yield controller, child
    finally:
        os.close(controller)
        with contextlib.suppress(OSError):
            os.close(child)


def _drain(controller: int, process: subprocess.Popen[bytes], until: bytes = b"") -> bytes:
    """Read the terminal until ``until`` shows (or, with b"", until the process is gone)."""
    seen = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: every writer is gone
            return seen
        seen += chunk
        if until and until in seen:
            return seen
    raise AssertionError(f"terminal output so far: {seen!r}")


def _on_terminal(columns: int, *args: str, stdout_too: bool = True) -> tuple[int, str, bytes]:
    with _terminal(columns) as (controller, child):
        process = subprocess.Popen(
            [sys.executable, "-m", "trioqio", *args],
            stdin=child, stderr=child, stdout=child if stdout_too else subprocess.PIPE,
            env={**os.environ, "TERM": "xterm"},
        )  # fmt: skip
        os.close(child)
        screen = _drain(controller, process)
        piped = process.stdout.read() if process.stdout is not None else b""
        if process.stdout is not None:
            process.stdout.close()
        return process.wait(timeout=30), screen.decode(), piped


def _redraws(screen: str) -> list[str]:
    """Each line the bar drew: the text after a carriage return, up to its clear."""
    return [part for part in screen.split("\r") if part.endswith("\x1b[K")]


@pytest.mark.parametrize("columns", [40, 200])
def test_bar_fits_the_terminal_and_ends_with_the_result(columns: int) -> None:
    code, screen, _ = _on_terminal(columns, "migrate", "--size", "8MiB", "--channels", "2")
    assert code == 0, screen
    drawn = _redraws(screen)
    assert len(drawn) >= 2, screen  # the first packet's redraw, 100%, the final line
    for line in drawn:
        text = line.removesuffix("\x1b[K")
        assert len(text) <= columns - 3, (columns, text)
        assert "\n" not in text
    assert "100.0%" in drawn[-2]
    final = drawn[-1].removesuffix("\x1b[K")
    assert final.startswith("migrating 8.00 MiB"), final
    assert final.endswith(": checksums match"), final
    if columns == 200:
        assert "MiB/s" in drawn[-2]
        assert "8.00 MiB of 8.00 MiB" in drawn[-2]
    assert "verdict: checksums match" in screen  # the report follows on its own line


def test_bar_is_off_when_stdout_is_not_a_terminal() -> None:
    code, screen, piped = _on_terminal(80, "migrate", "--size", "4MiB", stdout_too=False)
    assert code == 0, screen
    assert "\r" not in screen.replace("\r\n", "\n")
    assert "%" not in screen
    assert b"checksums match" in piped


def test_interrupted_bar_says_so() -> None:
    with _terminal(60) as (controller, child):
        process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(MIB), "migrate", "--size", "64MiB"],
            stdin=child, stdout=child, stderr=child, env={**os.environ, "TERM": "xterm"},
        )  # fmt: skip
        os.close(child)
        screen = _drain(controller, process, until=b"holding multifd")
        process.send_signal(signal.SIGINT)
        screen += _drain(controller, process)
        code = process.wait(timeout=30)
    text = screen.decode()
    assert code == 130, text
    final = _redraws(text)[-1].removesuffix("\x1b[K")
    assert final.startswith("migrating "), final
    assert final.endswith(": interrupted"), final
    assert "trioqio migrate: interrupted by SIGINT" in text


@pytest.mark.parametrize("columns", [40, 41, 57, 80, 120, 200])
@pytest.mark.parametrize("done", [0, 1, 5 * MIB, 999 * MIB, 1 << 40])
def test_render_fits_every_width(columns: int, done: int) -> None:
    progress = Progress(total=1 << 40, label="received", enabled=True, columns=columns)
    progress.done = done
    line = progress.render(columns, now=time.monotonic() + 1)
    assert len(line) <= columns - 3
    assert line.startswith("received ")
    assert "%" in line
    summary = progress.summary("INCOMPLETE migration", columns)
    assert len(summary) <= columns - 3
    assert summary.endswith("INCOMPLETE migration")


def test_bar_clears_a_longer_line_and_writes_notes_above_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    stream = io.StringIO()
    progress = Progress(total=100 * MIB, label="received", stream=stream, enabled=True)
    progress.columns = 200
    progress.add(MIB)
    progress.columns = 40  # the window shrank: a shorter line
    progress.add(99 * MIB)
    progress.write("note: something")
    progress.close("checksums match")
    drawn = stream.getvalue()
    assert drawn.count("\x1b[K") == 5  # every line the bar draws clears its rest
    assert "\r\x1b[Knote: something\n" in drawn  # the bar is wiped before the note
    assert drawn.endswith(": checksums match\x1b[K\n")
    monkeypatch.setenv("TERM", "dumb")  # no escapes: spaces cover the longer line
    dumb = io.StringIO()
    progress = Progress(total=100, label="x", stream=dumb, enabled=True, columns=200)
    progress.add(1)
    first = dumb.getvalue().split("\r")[-1]
    progress.close("done")
    parts = dumb.getvalue().split("\r")
    assert "\x1b" not in dumb.getvalue()
    final = parts[-1].removesuffix("\n")
    assert final.endswith(": done")
    assert len(final) < len(first)
    assert parts[-2] == final.ljust(len(first))  # the longer line is overwritten by spaces
