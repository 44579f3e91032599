"""Shared test fixtures: leak checks that make a leaked fd or thread fail the test."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator

import pytest

# The stress suite (tests/stress/) runs only through `nox -s stress` / `stress_ci`, which
# set TRIOQIO_STRESS; a plain `pytest` run stays quick.
collect_ignore = [] if os.environ.get("TRIOQIO_STRESS") else ["stress"]


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True)
def no_fd_leak() -> Iterator[None]:
    """Fail a test that leaves a file descriptor open that it did not find."""
    gc.collect()
    before = _open_fds()
    yield
    gc.collect()
    leaked = set()
    for fd in _open_fds() - before:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (e.g. the listdir's own fd)
        leaked.add((fd, target))
    assert not leaked, f"test leaked file descriptors: {sorted(leaked)}"


def _busy_threads(ignore: set[int]) -> list[threading.Thread]:
    # Trio's thread cache keeps idle workers named "Trio thread N"; a worker running a job
    # carries the job's name instead. Anything else that is new is a thread we started.
    main = threading.main_thread()
    return [
        thread
        for thread in threading.enumerate()
        if thread is not main
        and not thread.name.startswith("Trio thread ")
        and thread.ident not in ignore
    ]


@pytest.fixture(autouse=True)
def no_threads_left() -> Iterator[None]:
    """Fail a test that leaves a worker thread running (abandoned ones included)."""
    ignore = {thread.ident for thread in _busy_threads(set()) if thread.ident is not None}
    yield
    deadline = time.monotonic() + 10
    while (busy := _busy_threads(ignore)) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not busy, f"test left threads running: {[thread.name for thread in busy]}"
