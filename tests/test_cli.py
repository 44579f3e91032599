"""The ``trioqio`` command: migrate, serve and task-demo, run as real subprocesses."""

from __future__ import annotations

import json
import socket
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
