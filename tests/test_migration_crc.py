"""The CRC-32 provider of the ``crc32`` page digest: zlib-ng when installed, else the stdlib.

Both must give ``zlib.crc32``'s values (the two ends of a migration may use different ones).
``TRIOQIO_CRC32`` picks one: ``auto`` falls back to the stdlib when zlib-ng is missing or
fails its known-answer check (the report then names the stdlib); a bad value, or zlib-ng
asked for by name and missing or wrong, is a clear error that fails the migration before
anything listens or connects.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import types
import zlib
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from trioqio import MigrationError
from trioqio.migration import _crc
from trioqio.migration._destination import DestinationOptions, run_destination
from trioqio.migration._image import GeneratedImage
from trioqio.migration._protocol import Checksum
from trioqio.migration._source import SourceOptions, run_source
from trioqio.migration._verify import digest_runs, digest_unit, digest_views

zlib_ng = pytest.importorskip(
    "zlib_ng.zlib_ng", reason="the speedups extra (zlib-ng) is installed by every nox session"
)


def test_auto_picks_zlib_ng_when_installed() -> None:
    crc32, provider = _crc.load_crc32("auto")
    assert crc32 is zlib_ng.crc32
    assert provider == f"zlib-ng {zlib_ng.ZLIBNG_RUNTIME_VERSION}"


def test_zlib_choice_is_the_stdlib_even_with_zlib_ng_installed() -> None:
    crc32, provider = _crc.load_crc32("zlib")
    assert crc32 is zlib.crc32
    assert provider == f"zlib {zlib.ZLIB_RUNTIME_VERSION}"


def test_auto_falls_back_to_the_stdlib_without_zlib_ng(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zlib_ng", None)  # makes the import fail
    crc32, provider = _crc.load_crc32("auto")
    assert crc32 is zlib.crc32
    assert provider.startswith("zlib ")


def test_asking_for_a_missing_zlib_ng_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zlib_ng", None)
    with pytest.raises(ValueError, match=r"TRIOQIO_CRC32=zlib-ng.*pip install trioqio\[speedups\]"):
        _crc.load_crc32("zlib-ng")


def _broken_zlib_ng(monkeypatch: pytest.MonkeyPatch, crc32: object) -> None:
    # A fake: no real build computes a wrong CRC, and the check must still refuse one.
    package = types.ModuleType("zlib_ng")
    module = types.ModuleType("zlib_ng.zlib_ng")
    module.crc32 = crc32  # type: ignore[attr-defined]
    module.ZLIBNG_RUNTIME_VERSION = "9.9.9"  # type: ignore[attr-defined]
    package.zlib_ng = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "zlib_ng", package)
    monkeypatch.setitem(sys.modules, "zlib_ng.zlib_ng", module)


def _off_by_one(data: object, value: int = 0) -> int:
    return zlib.crc32(data, value) ^ 1  # type: ignore[arg-type]


def _wrong_when_chained(data: object, value: int = 0) -> int:
    return zlib.crc32(data) if value else zlib.crc32(data, value)  # type: ignore[arg-type]


def _raises(data: object, value: int = 0) -> int:
    raise SystemError("broken build")


@pytest.mark.parametrize("broken", [_off_by_one, _wrong_when_chained, _raises])
def test_a_wrong_zlib_ng_is_never_used(monkeypatch: pytest.MonkeyPatch, broken: object) -> None:
    _broken_zlib_ng(monkeypatch, broken)
    crc32, provider = _crc.load_crc32("auto")
    assert crc32 is zlib.crc32
    assert provider.startswith("zlib ")
    with pytest.raises(ValueError, match=r"zlib-ng 9\.9\.9 computes a wrong CRC-32"):
        _crc.load_crc32("zlib-ng")


@pytest.mark.parametrize("choice", ["", "ZLIB", "zlibng", "crc32c", "auto "])
def test_a_bad_choice_names_the_variable_and_the_choices(choice: str) -> None:
    with pytest.raises(ValueError, match=r"TRIOQIO_CRC32=.*expected one of auto, zlib, zlib-ng"):
        _crc.load_crc32(choice)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=20_000), start=st.integers(0, 2**32 - 1))
def test_zlib_ng_gives_the_stdlib_values(data: bytes, start: int) -> None:
    assert zlib_ng.crc32(data, start) == zlib.crc32(data, start)
    view = memoryview(bytearray(data))[1:]  # an unaligned, writable view
    assert zlib_ng.crc32(view, start) == zlib.crc32(view, start)


def test_zlib_ng_gives_the_stdlib_values_on_large_and_chained_buffers() -> None:
    data = os.urandom((4 << 20) + 3)  # above every SIMD block and GIL-release threshold
    assert zlib_ng.crc32(data) == zlib.crc32(data)
    crc = 0
    for offset in range(0, len(data), 4096):
        crc = zlib_ng.crc32(data[offset : offset + 4096], crc)
    assert crc == zlib.crc32(data)


@pytest.mark.parametrize("provider", [zlib.crc32, "zlib-ng"])
def test_digests_are_the_same_whichever_provider(
    monkeypatch: pytest.MonkeyPatch, provider: object
) -> None:
    data = os.urandom(128 * 4096 + 5)
    expected = zlib.crc32(data).to_bytes(4, "big") + bytes(12)
    monkeypatch.setattr(_crc, "crc32", zlib_ng.crc32 if provider == "zlib-ng" else provider)
    assert digest_unit(data, Checksum.CRC32) == expected
    views = [memoryview(data)[offset : offset + 4096] for offset in range(0, len(data), 4096)]
    assert digest_views(views, Checksum.CRC32) == expected
    assert digest_runs(data, len(data), Checksum.CRC32) == expected


async def test_the_provider_migrates_and_checks_pass_without_a_problem() -> None:
    assert _crc.PROBLEM is None
    _crc.check_provider()
    async with trio.open_nursery() as nursery:
        addresses: Any = await nursery.start(
            run_destination, DestinationOptions(address="tcp:127.0.0.1:0")
        )
        outcome = await run_source(
            SourceOptions(
                address=addresses[0],
                image=GeneratedImage(size=1 << 20, seed=3),
                uuid=bytes(16),
                channels=2,
            )
        )
    assert outcome.result.checksum == outcome.checksum


async def test_a_problem_fails_the_destination_before_it_listens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as busy:  # listening first would fail on this address instead
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        options = DestinationOptions(address=f"tcp:127.0.0.1:{busy.getsockname()[1]}")
        monkeypatch.setattr(_crc, "PROBLEM", "TRIOQIO_CRC32='bogus': expected one of ...")
        with pytest.raises(MigrationError, match="TRIOQIO_CRC32='bogus'"):
            await run_destination(options)


async def test_a_problem_fails_the_source_before_it_connects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as unused:  # nothing listens here: connecting would fail otherwise
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        monkeypatch.setattr(_crc, "PROBLEM", "TRIOQIO_CRC32='x': expected one of ...")
        options = SourceOptions(
            address=f"tcp:127.0.0.1:{port}",
            image=GeneratedImage(size=4096, seed=1),
            uuid=bytes(16),
        )
        with pytest.raises(MigrationError, match="TRIOQIO_CRC32='x'"):
            await run_source(options)


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trioqio", "migrate", "--no-progress", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def test_ends_with_different_providers_agree_and_report_theirs() -> None:
    destination = _cli({"TRIOQIO_CRC32": "zlib"}, "--listen", "tcp:127.0.0.1:0")
    assert destination.stderr is not None
    line = destination.stderr.readline()
    assert line.startswith("listening on "), line
    source = _cli({"TRIOQIO_CRC32": "zlib-ng"}, "--connect", line.split()[2], "--size", "3MiB")
    out, err = source.communicate(timeout=30)
    dest_out, dest_err = destination.communicate(timeout=30)
    assert source.returncode == 0, err
    assert destination.returncode == 0, dest_err
    sent, received = json.loads(out), json.loads(dest_out)
    assert sent["verdict"] == received["verdict"] == "match"
    assert sent["crc32_provider"].startswith("zlib-ng ")
    assert received["crc32_provider"] == f"zlib {zlib.ZLIB_RUNTIME_VERSION}"


def test_a_bad_variable_is_a_clear_failure_not_a_traceback() -> None:
    process = _cli({"TRIOQIO_CRC32": "fast"}, "--size", "1MiB")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "Traceback" not in err
    assert json.loads(out)["error"].startswith("TRIOQIO_CRC32='fast': expected one of")


def test_a_busy_listen_address_is_a_clear_failure_not_a_traceback() -> None:
    # Found while adding the variable: nursery.start's error reached the user as a group.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = _cli({}, "--listen", f"tcp:127.0.0.1:{port}")
        out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "Traceback" not in err
    assert "Address already in use" in json.loads(out)["error"]
